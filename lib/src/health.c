/*
 * health.c - dependency checks rolled up into one actuator-style report (see
 * deta/health.h).
 *
 * Design. Checks live in an array in registration order, which is also the order
 * of the report's "components". A mutex guards only the array: a report copies
 * it under the lock and runs the checks without it, so a slow dependency (a
 * Kafka ping waits up to a second) never blocks a registration, and concurrent
 * probes do not queue behind each other. Names are copied; opaque pointers are
 * the caller's.
 *
 * deta_health_required_up() is the same roll-up cut short: required checks
 * only, ending at the first DOWN one. The consumer loop asks it (through the
 * service's cache) whether a transient failure is an outage or the message's
 * own problem.
 *
 * Roll-up: any required check DOWN makes the service DOWN (503); otherwise any
 * optional check DOWN makes it DEGRADED (200); otherwise UP (200). A DOWN
 * component always carries details.error, with a generic text when the check
 * wrote none. If registering a check ever runs out of memory the report says
 * DOWN rather than silently reporting UP without that check.
 */
#include "deta/health.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DETAIL_SIZE 512

typedef struct check {
    char *name;
    bool required;
    deta_health_check_fn fn;
    void *opaque;
} check_t;

struct deta_health {
    pthread_mutex_t lock;
    check_t *checks;
    size_t n, cap;
    bool lost_check; /* a registration failed for lack of memory */
};

deta_health_t *deta_health_new(void) {
    deta_health_t *h = calloc(1, sizeof *h);
    if (h)
        pthread_mutex_init(&h->lock, NULL);
    return h;
}

void deta_health_free(deta_health_t *h) {
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++)
        free(h->checks[i].name);
    free(h->checks);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

static bool grow_locked(deta_health_t *h) {
    if (h->n < h->cap)
        return true;
    size_t cap = h->cap ? h->cap * 2 : 4;
    check_t *checks = realloc(h->checks, cap * sizeof *checks);
    if (!checks)
        return false;
    h->checks = checks;
    h->cap = cap;
    return true;
}

void deta_health_add(deta_health_t *h, const char *name, bool required, deta_health_check_fn fn,
                     void *opaque) {
    if (!h || !name || !fn)
        return;
    char *copy = strdup(name);
    pthread_mutex_lock(&h->lock);
    if (copy && grow_locked(h)) {
        h->checks[h->n++] = (check_t){copy, required, fn, opaque};
    } else {
        free(copy);
        h->lost_check = true;
    }
    pthread_mutex_unlock(&h->lock);
}

/* Copies the checks (names stay owned by h, which outlives the report). */
static check_t *snapshot(deta_health_t *h, size_t *n, bool *lost_check) {
    pthread_mutex_lock(&h->lock);
    *n = h->n;
    *lost_check = h->lost_check;
    check_t *copy = malloc((h->n ? h->n : 1) * sizeof *copy);
    if (copy && h->n)
        memcpy(copy, h->checks, h->n * sizeof *copy);
    pthread_mutex_unlock(&h->lock);
    return copy;
}

/* {"status":"UP"} or {"status":"DOWN","details":{"error":"..."}} */
static json_t *run_check(const check_t *c, bool *up) {
    char detail[DETAIL_SIZE] = "";
    *up = c->fn(c->opaque, detail, sizeof detail);
    if (*up)
        return json_pack("{s:s}", "status", "UP");
    detail[sizeof detail - 1] = '\0';
    return json_pack("{s:s,s:{s:s}}", "status", "DOWN", "details", "error",
                     *detail ? detail : "check failed");
}

static json_t *internal_failure(int *http_status, const char *why) {
    *http_status = 503;
    return json_pack("{s:s,s:{s:{s:s,s:{s:s}}}}", "status", "DOWN", "components", "health",
                     "status", "DOWN", "details", "error", why);
}

json_t *deta_health_report(deta_health_t *h, int *http_status) {
    int ignored;
    if (!http_status)
        http_status = &ignored;
    if (!h)
        return internal_failure(http_status, "no health registry");
    size_t n;
    bool lost_check;
    check_t *checks = snapshot(h, &n, &lost_check);
    if (!checks || lost_check) {
        free(checks);
        return internal_failure(http_status, "out of memory registering health checks");
    }
    json_t *components = json_object();
    bool required_down = false, optional_down = false;
    for (size_t i = 0; i < n && components; i++) {
        bool up;
        json_object_set_new(components, checks[i].name, run_check(&checks[i], &up));
        if (!up && checks[i].required)
            required_down = true;
        else if (!up)
            optional_down = true;
    }
    free(checks);
    const char *status = required_down ? "DOWN" : optional_down ? "DEGRADED" : "UP";
    *http_status = required_down ? 503 : 200;
    json_t *report = json_pack("{s:s,s:o}", "status", status, "components", components);
    if (!report) /* json_pack's "o" consumes components even on failure */
        return internal_failure(http_status, "out of memory building the report");
    return report;
}

bool deta_health_required_up(deta_health_t *h, char *detail, size_t detailsize) {
    if (detail && detailsize)
        detail[0] = '\0';
    if (!h)
        return false;
    size_t n;
    bool lost_check;
    check_t *checks = snapshot(h, &n, &lost_check);
    bool up = checks && !lost_check;
    if (!up && detail && detailsize)
        snprintf(detail, detailsize, "health: out of memory registering health checks");
    for (size_t i = 0; i < n && up; i++) {
        if (!checks[i].required)
            continue;
        char why[DETAIL_SIZE] = "";
        up = checks[i].fn(checks[i].opaque, why, sizeof why);
        why[sizeof why - 1] = '\0';
        if (!up && detail && detailsize)
            snprintf(detail, detailsize, "%s: %s", checks[i].name, *why ? why : "check failed");
    }
    free(checks);
    return up;
}

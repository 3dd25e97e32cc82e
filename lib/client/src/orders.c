/*
 * orders.c - placing, reading and waiting for an order (deta/client_orders.h).
 *
 * The statuses are tables and the predicates plain lookups in them. The calls
 * build the service's URL (deta_client_url) and make one JSON request on the
 * caller's handle; the wait reads the status until it matches or its time is
 * up, sleeping poll_ms between reads, and never fails on a missing order or a
 * missing answer: both are "not yet", the deadline decides.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deta/client_orders.h"
#include "deta/states.h"

const char *const deta_order_end_states[DETA_ORDER_END_STATES] = {
    DETA_STATE_DELIVERED, DETA_STATE_INVENTORY_REJECTED, DETA_STATE_PAYMENT_FAILED,
    DETA_STATE_CANCELLED};

static const char *const HAPPY_PATH[] = {
    DETA_STATE_CREATED,           DETA_STATE_INVENTORY_RESERVED, DETA_STATE_PAYMENT_AUTHORIZED,
    DETA_STATE_DELIVERY_WAITING,  DETA_STATE_DELIVERY_ASSIGNED,  DETA_STATE_PICKED_UP,
    DETA_STATE_DELIVERED};
#define HAPPY_STEPS (sizeof HAPPY_PATH / sizeof *HAPPY_PATH)

/* Index of status in the happy path, or -1. */
static int happy_step(const char *status) {
    for (size_t i = 0; status && i < HAPPY_STEPS; i++)
        if (strcmp(status, HAPPY_PATH[i]) == 0)
            return (int)i;
    return -1;
}

bool deta_order_is_end_state(const char *status) {
    for (size_t i = 0; status && i < DETA_ORDER_END_STATES; i++)
        if (strcmp(status, deta_order_end_states[i]) == 0)
            return true;
    return false;
}

bool deta_order_is_failed(const char *status) {
    /* by name: CANCELLED is an end state off the happy path, but no failure */
    return status && (strcmp(status, DETA_STATE_INVENTORY_REJECTED) == 0 ||
                      strcmp(status, DETA_STATE_PAYMENT_FAILED) == 0);
}

bool deta_order_reached(const char *status, const char *step) {
    int at = happy_step(status), want = happy_step(step);
    return at >= 0 && want >= 0 && at >= want;
}

/* A JSON call to base + path; out of memory is said like a request that failed. */
static int call(deta_client_t *c, const char *method, const char *base, const char *path,
                const char *body, deta_client_resp_t *out, char *errstr, size_t errsize) {
    char *url = deta_client_url(base, path);
    if (!url) {
        memset(out, 0, sizeof *out);
        out->body = "";
        snprintf(errstr, errsize, "out of memory");
        return -1;
    }
    int rc = deta_client_json(c, method, url, body, out, errstr, errsize);
    free(url);
    return rc;
}

int deta_order_place(deta_client_t *c, const char *order_url, const char *body,
                     deta_client_resp_t *out, char *errstr, size_t errsize) {
    return call(c, "POST", order_url, "/api/orders", body, out, errstr, errsize);
}

bool deta_order_id_of(const json_t *answer, char *id, size_t size) {
    const char *v = json_string_value(json_object_get(answer, "orderId"));
    if (!v || strlen(v) >= size)
        return false;
    memcpy(id, v, strlen(v) + 1);
    return true;
}

int deta_order_read(deta_client_t *c, const char *query_url, const char *id,
                    deta_client_resp_t *out, char *errstr, size_t errsize) {
    char path[160];
    snprintf(path, sizeof path, "/api/orders/%s", id);
    return call(c, "GET", query_url, path, NULL, out, errstr, errsize);
}

void deta_order_status(deta_client_t *c, const char *query_url, const char *id, char *status,
                       size_t size) {
    deta_client_resp_t r;
    char err[256];
    status[0] = '\0';
    if (deta_order_read(c, query_url, id, &r, err, sizeof err) == 0 && r.status == 200) {
        const char *s = json_string_value(json_object_get(r.json, "status"));
        snprintf(status, size, "%s", s ? s : "");
    }
    deta_client_resp_clear(&r);
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool matches(const char *status, const char *want) {
    return want ? strcmp(status, want) == 0 : deta_order_is_end_state(status);
}

bool deta_order_await(deta_client_t *c, const char *query_url, const char *id, const char *want,
                      long timeout_ms, long poll_ms, char *status, size_t size) {
    long long deadline = now_ms() + timeout_ms;
    for (;;) {
        deta_order_status(c, query_url, id, status, size);
        if (matches(status, want))
            return true;
        if (now_ms() > deadline)
            return false;
        sleep_ms(poll_ms);
    }
}

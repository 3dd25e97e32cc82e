/*
 * retry.c - creating and cancelling orders with bounded retries
 * (deta/client_retry.h).
 *
 * The pure parts (backoff, keys, outcomes, header lookup) come first; then one
 * attempt loop that both calls share: make the request, classify the answer,
 * stop on a final outcome, else sleep the backoff unless the attempts or the
 * deadline are used up. The loop never sleeps past the deadline, and an
 * attempt's own timeout is cut to what is left of it.
 */
/* strncasecmp, getrandom: the build defines _GNU_SOURCE */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "deta/client_retry.h"

/* ---- settings and backoff ---------------------------------------------------------- */

deta_retry_policy_t deta_retry_policy_default(void) {
    return (deta_retry_policy_t){.max_attempts = 8,
                                 .first_backoff_ms = 100,
                                 .max_backoff_ms = 2000,
                                 .deadline_ms = 30000,
                                 .request_timeout_ms = 10000,
                                 .connect_timeout_ms = 3000};
}

long deta_retry_backoff_ms(const deta_retry_policy_t *p, int attempt, uint64_t random) {
    if (attempt < 2 || p->first_backoff_ms <= 0)
        return 0;
    long cap = p->max_backoff_ms > 0 ? p->max_backoff_ms : p->first_backoff_ms;
    long pause = p->first_backoff_ms;
    for (int i = 2; i < attempt && pause < cap; i++)
        pause *= 2; /* stops doubling at the cap: no overflow however many attempts */
    if (pause > cap)
        pause = cap;
    /* jitter: keep between half and all of it */
    long half = pause / 2;
    return pause - (half > 0 ? (long)(random % (uint64_t)(half + 1)) : 0);
}

/* ---- keys ----------------------------------------------------------------------------- */

void deta_idempotency_key_format(const uint8_t bytes[16], char out[DETA_KEY_UUID_LEN + 1]) {
    static const char hex[] = "0123456789abcdef";
    uint8_t b[16];
    memcpy(b, bytes, sizeof b);
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* variant 10 */
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 0x0f];
    }
    *o = '\0';
}

static bool random_bytes(void *buf, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom((char *)buf + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        got += (size_t)r;
    }
    return true;
}

bool deta_idempotency_key_new(char out[DETA_KEY_UUID_LEN + 1]) {
    uint8_t b[16];
    if (!random_bytes(b, sizeof b))
        return false;
    deta_idempotency_key_format(b, out);
    return true;
}

bool deta_idempotency_key_valid(const char *key) {
    if (!key)
        return false;
    size_t n = 0;
    for (; key[n]; n++)
        if ((unsigned char)key[n] < '!' || (unsigned char)key[n] > '~')
            return false;
    return n >= 1 && n <= DETA_IDEMPOTENCY_KEY_MAX;
}

/* ---- outcomes ----------------------------------------------------------------------------- */

const char *deta_outcome_name(deta_outcome_t o) {
    static const char *const names[DETA_OUTCOME_COUNT] = {
        "created", "replayed", "requested", "cancelled", "refused",
        "not found", "key reused", "invalid", "transient"};
    return (unsigned)o < DETA_OUTCOME_COUNT ? names[o] : "?";
}

/* What both calls share: no answer, 408, 429 and 5xx are worth another try. */
static bool transient(bool got_answer, long status) {
    return !got_answer || status == 408 || status == 429 || status >= 500 || status < 100;
}

deta_outcome_t deta_outcome_of_create(bool got_answer, long status) {
    if (transient(got_answer, status))
        return DETA_OUTCOME_TRANSIENT;
    switch (status) {
    case 201: return DETA_OUTCOME_CREATED;
    case 200: return DETA_OUTCOME_REPLAYED;
    case 404: return DETA_OUTCOME_NOT_FOUND;
    case 422: return DETA_OUTCOME_KEY_REUSED;
    default: return DETA_OUTCOME_INVALID;
    }
}

deta_outcome_t deta_outcome_of_cancel(bool got_answer, long status) {
    if (transient(got_answer, status))
        return DETA_OUTCOME_TRANSIENT;
    switch (status) {
    case 202: return DETA_OUTCOME_REQUESTED;
    case 200: return DETA_OUTCOME_CANCELLED;
    case 409: return DETA_OUTCOME_REFUSED;
    case 404: return DETA_OUTCOME_NOT_FOUND;
    default: return DETA_OUTCOME_INVALID;
    }
}

bool deta_outcome_final(deta_outcome_t o) { return o != DETA_OUTCOME_TRANSIENT; }

bool deta_client_header(const char *headers, const char *name, char *out, size_t size) {
    size_t nlen = strlen(name);
    bool found = false;
    for (const char *line = headers; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len > nlen && strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1, *e = line + len;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            while (e > v && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
                e--;
            snprintf(out, size, "%.*s", (int)(e - v), v);
            found = true;
        }
        line = end ? end + 1 : line + len;
    }
    return found;
}

/* ---- the attempt loop --------------------------------------------------------------------- */

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static void pause_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

typedef deta_outcome_t (*classify_fn)(bool got_answer, long status);

typedef struct call {
    const char *url, *body;
    const char *const *headers;
    classify_fn classify;
} call_t;

/* One attempt on c (or a fresh handle of at most timeout_ms); fills out's
 * status, JSON, replay flag and error. */
static deta_outcome_t attempt(const deta_retry_policy_t *p, deta_client_t *c, const call_t *call,
                              long timeout_ms, deta_call_result_t *out) {
    deta_client_t *own = c ? NULL : deta_client_new(timeout_ms, p->connect_timeout_ms);
    deta_client_req_t req = {.method = "POST", .url = call->url, .body = call->body,
                             .headers = call->headers, .keep_headers = true};
    deta_client_resp_t r = {.body = ""};
    int rc = -1;
    if (c || own)
        rc = deta_client_request(c ? c : own, &req, &r, out->error, sizeof out->error);
    else
        snprintf(out->error, sizeof out->error, "out of memory");
    bool got = rc == 0;
    deta_outcome_t o = call->classify(got, r.status);
    if (got && o != DETA_OUTCOME_CREATED && o != DETA_OUTCOME_REPLAYED &&
        o != DETA_OUTCOME_REQUESTED && o != DETA_OUTCOME_CANCELLED)
        deta_client_resp_describe(&r, out->error, sizeof out->error); /* reads r.json */
    else if (got)
        out->error[0] = '\0';
    json_decref(out->json);
    out->json = r.json; /* the caller's now */
    r.json = NULL;
    out->status = got ? r.status : 0;
    out->last_millis = r.millis;
    char v[16];
    out->replay_header = got && deta_client_header(r.headers, "Idempotent-Replayed", v, sizeof v) &&
                         strcasecmp(v, "true") == 0;
    deta_client_resp_clear(&r);
    deta_client_free(own);
    return o;
}

static deta_outcome_t run_call(const deta_retry_policy_t *policy, deta_client_t *c,
                               const call_t *call, deta_call_result_t *out) {
    deta_retry_policy_t def = deta_retry_policy_default();
    const deta_retry_policy_t *p = policy ? policy : &def;
    memset(out, 0, sizeof *out);
    double start = now_ms(), deadline = start + (double)p->deadline_ms;
    deta_outcome_t o = DETA_OUTCOME_TRANSIENT;
    for (int n = 1;; n++) {
        long left = (long)(deadline - now_ms());
        long timeout = p->request_timeout_ms;
        if (left > 0 && (timeout <= 0 || left < timeout))
            timeout = left; /* a fresh handle's attempt ends with the deadline */
        out->attempts = n;
        o = attempt(p, c, call, timeout, out);
        out->millis = now_ms() - start;
        if (deta_outcome_final(o) || (p->max_attempts > 0 && n >= p->max_attempts))
            break;
        uint64_t rnd = 0;
        random_bytes(&rnd, sizeof rnd); /* a failure leaves 0: no jitter, still bounded */
        long wait = deta_retry_backoff_ms(p, n + 1, rnd);
        if (now_ms() + (double)wait >= deadline)
            break;
        pause_ms(wait);
    }
    return out->outcome = o;
}

deta_outcome_t deta_order_create(const deta_retry_policy_t *p, deta_client_t *c,
                                 const char *order_url, const char *body, const char *key,
                                 deta_call_result_t *out) {
    char *url = deta_client_url(order_url, "/api/orders");
    char key_line[DETA_IDEMPOTENCY_KEY_MAX + 32];
    snprintf(key_line, sizeof key_line, "Idempotency-Key: %s", key);
    const char *const headers[] = {"Accept: application/json", "Content-Type: application/json",
                                   "Expect:", key_line, NULL};
    call_t call = {url, body, headers, deta_outcome_of_create};
    if (!url) {
        memset(out, 0, sizeof *out);
        snprintf(out->error, sizeof out->error, "out of memory");
        return out->outcome = DETA_OUTCOME_TRANSIENT;
    }
    deta_outcome_t o = run_call(p, c, &call, out);
    free(url);
    return o;
}

deta_outcome_t deta_order_cancel(const deta_retry_policy_t *p, deta_client_t *c,
                                 const char *order_url, const char *order_id, const char *reason,
                                 deta_call_result_t *out) {
    char path[160];
    snprintf(path, sizeof path, "/api/orders/%s/cancel", order_id);
    char *url = deta_client_url(order_url, path);
    json_t *j = reason ? json_pack("{s:s}", "reason", reason) : NULL;
    /* Without a reason the body is empty (Content-Length: 0), which the contract
     * allows; it is still labelled JSON, so no rule about bodies can refuse it. */
    char *body = j ? json_dumps(j, JSON_COMPACT) : strdup("");
    json_decref(j);
    const char *const headers[] = {"Accept: application/json", "Content-Type: application/json",
                                   NULL};
    call_t call = {url, body, headers, deta_outcome_of_cancel};
    deta_outcome_t o;
    if (!url || !body) {
        memset(out, 0, sizeof *out);
        snprintf(out->error, sizeof out->error, "out of memory");
        o = out->outcome = DETA_OUTCOME_TRANSIENT;
    } else {
        o = run_call(p, c, &call, out);
    }
    free(body);
    free(url);
    return o;
}

void deta_call_result_clear(deta_call_result_t *out) {
    json_decref(out->json);
    out->json = NULL;
}

/*
 * poller.c - when did each order's saga end, as the query-api shows it?
 *
 * The cheapest question the query-api answers about many orders at once is its
 * list filtered by customer: GET /api/orders?customerId=<id>&limit=200, one
 * indexed query. So the generator gives each window of consecutive orders (at
 * most 200, about 100 ms of sending) a customer id of its own, and the poller
 * asks once per open window per cycle, instead of once per order. The load
 * this adds is (open windows) x (cycles per second) list requests, whatever
 * the rate: a few dozen small requests per second when sagas are fast. When
 * sagas are slow, windows pile up; the requests are then capped at
 * poll_budget per second (by default 5 per order offered, within 20..100),
 * shared round-robin among the open windows, so that the measurement never
 * adds much load to a slow or overloaded system: each window is then asked
 * every (open windows / budget) seconds instead of every cycle.
 *
 * An order has ended when its status is DELIVERY_ASSIGNED or a later state of
 * the happy path (PICKED_UP, DELIVERED: the delivery may move on before the
 * next poll), or a failure end (INVENTORY_REJECTED, PAYMENT_FAILED), as
 * deta/client_orders.h names them for every client. Its saga
 * instant is when the answer that first showed it arrived: never earlier than
 * the truth, and later by at most one cycle (poll_ms; longer when the budget
 * stretches the rounds) plus one list request. scripts/bench.sh compares it
 * with the instant the read model applied delivery.assigned.
 * The request goes over one deta_client_t handle, whose connection and answer
 * buffer serve every poll; its body is parsed only after the answer's instant
 * is taken, so the parse never counts in a request's time.
 * A window is closed when each of its orders is decided (refused, dropped, or
 * ended); the poller stops when every window is closed or at the deadline.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/client_orders.h"
#include "deta/states.h"
#include "loadgen.h"

typedef struct poller {
    lg_run_t *run;
    deta_client_t *client; /* one keep-alive connection, the answer's buffer kept */
    size_t nwindows;
    size_t first_open; /* windows before it are closed */
    size_t resume_at;  /* where the next pass starts, when the budget cut the last one */
} poller_t;

static lg_end_t end_of(const char *status) {
    if (deta_order_reached(status, DETA_STATE_DELIVERY_ASSIGNED))
        return END_ASSIGNED;
    if (deta_order_is_failed(status))
        return END_FAILED;
    return END_NONE;
}

static size_t window_first(const poller_t *p, size_t w) { return w * p->run->per_window; }

static size_t window_end(const poller_t *p, size_t w) {
    size_t end = (w + 1) * p->run->per_window;
    return end < p->run->n ? end : p->run->n;
}

static bool accepted(const lg_order_t *o) {
    return atomic_load_explicit(&o->state, memory_order_acquire) == ORDER_ACCEPTED;
}

static bool order_decided(const lg_order_t *o) {
    int state = atomic_load_explicit(&o->state, memory_order_acquire);
    if (state == ORDER_REFUSED || state == ORDER_DROPPED)
        return true;
    return state == ORDER_ACCEPTED && o->end != END_NONE;
}

static bool window_closed(const poller_t *p, size_t w) {
    for (size_t i = window_first(p, w); i < window_end(p, w); i++)
        if (!order_decided(&p->run->orders[i]))
            return false;
    return true;
}

/* Worth a request: some order of the window was accepted and has not ended. */
static bool window_waits(const poller_t *p, size_t w) {
    for (size_t i = window_first(p, w); i < window_end(p, w); i++) {
        const lg_order_t *o = &p->run->orders[i];
        if (accepted(o) && o->end == END_NONE)
            return true;
    }
    return false;
}

static bool window_started(const poller_t *p, size_t w) {
    return atomic_load(&p->run->orders[window_first(p, w)].state) != ORDER_PENDING;
}

static void note_end(poller_t *p, size_t w, const char *id, const char *status, int64_t seen) {
    lg_end_t end = end_of(status);
    if (end == END_NONE)
        return;
    for (size_t i = window_first(p, w); i < window_end(p, w); i++) {
        lg_order_t *o = &p->run->orders[i];
        if (!accepted(o) || o->end != END_NONE || strcmp(o->order_id, id) != 0)
            continue;
        o->end = end;
        o->saga_us = seen;
        snprintf(o->end_status, sizeof o->end_status, "%s", status);
        atomic_fetch_add(end == END_ASSIGNED ? &p->run->ended_ok : &p->run->ended_failed, 1);
        return;
    }
}

static void read_items(poller_t *p, size_t w, const char *answer, int64_t seen) {
    json_t *root = json_loads(answer, 0, NULL);
    json_t *items = json_object_get(root, "items");
    size_t k;
    json_t *item;
    json_array_foreach(items, k, item) {
        const char *id = json_string_value(json_object_get(item, "orderId"));
        const char *status = json_string_value(json_object_get(item, "status"));
        if (id && status)
            note_end(p, w, id, status, seen);
    }
    if (!items)
        atomic_fetch_add(&p->run->poll_errors, 1);
    json_decref(root);
}

static void poll_window(poller_t *p, size_t w) {
    char customer[128], url[768];
    lg_customer_id(p->run, window_first(p, w), customer, sizeof customer);
    snprintf(url, sizeof url, "%s/api/orders?customerId=%s&limit=%d", p->run->query_url, customer,
             LG_WINDOW_MAX);
    deta_client_req_t req = {.method = "GET", .url = url, .raw = true};
    deta_client_resp_t r;
    char err[256];
    int64_t asked = lg_now_us();
    int rc = deta_client_request(p->client, &req, &r, err, sizeof err);
    int64_t seen = lg_now_us();
    atomic_fetch_add(&p->run->poll_requests, 1);
    atomic_fetch_add(&p->run->poll_us_total, seen - asked);
    if (rc != 0 || r.status != 200 || r.body_len == 0) {
        atomic_fetch_add(&p->run->poll_errors, 1);
        return;
    }
    read_items(p, w, r.body, seen);
}

/* The last window whose first order was handed to the sender. */
static size_t last_started(const poller_t *p) {
    size_t w = p->first_open;
    while (w + 1 < p->nwindows && window_started(p, w + 1))
        w++;
    return w;
}

/* One pass over the open windows that have started, at most `budget` requests,
 * resuming where the last pass stopped; false when every window is closed. */
static bool poll_cycle(poller_t *p, size_t budget) {
    while (p->first_open < p->nwindows && window_closed(p, p->first_open))
        p->first_open++;
    if (p->first_open == p->nwindows)
        return false;
    if (!window_started(p, p->first_open))
        return true;
    size_t first = p->first_open, last = last_started(p), span = last - first + 1;
    size_t start = p->resume_at >= first && p->resume_at <= last ? p->resume_at : first;
    for (size_t k = 0; k < span && budget > 0; k++) {
        size_t w = first + (start - first + k) % span;
        if (!window_waits(p, w))
            continue;
        poll_window(p, w);
        budget--;
        p->resume_at = w + 1;
    }
    return true;
}

static void poll_until_done(poller_t *p) {
    lg_run_t *r = p->run;
    double per_cycle = r->poll_budget * r->poll_ms / 1000.0;
    size_t budget = per_cycle < 1 ? 1 : (size_t)per_cycle;
    while (lg_now_us() < r->deadline_us) {
        int64_t cycle_start = lg_now_us();
        if (!poll_cycle(p, budget))
            return;
        int64_t next = cycle_start + (int64_t)r->poll_ms * 1000;
        int64_t now = lg_now_us();
        if (next > now)
            lg_sleep_us(next - now);
    }
}

void *lg_poller_main(void *arg) {
    poller_t p = {.run = arg};
    p.nwindows = (p.run->n + p.run->per_window - 1) / p.run->per_window;
    p.client = deta_client_new(p.run->timeout_ms, 0);
    /* A read of the read model: READER_TOKEN (or OPERATOR_TOKEN) when reads are closed. */
    if (p.client && !deta_client_set_token(p.client, deta_client_env_token(false))) {
        deta_client_free(p.client);
        p.client = NULL;
    }
    if (p.client) {
        poll_until_done(&p);
        deta_client_free(p.client);
    } else {
        fprintf(stderr, "loadgen: cannot set up curl for the poller\n");
    }
    atomic_store(&p.run->poller_done, true);
    return NULL;
}

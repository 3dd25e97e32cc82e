/*
 * loadgen.h - the parts of the open-loop load generator (bench/loadgen.c).
 *
 * One run offers orders at a fixed rate for a fixed time and follows each order
 * to the end of its saga. Three threads share one array of orders:
 *   - the sender (sender.c) POSTs order i at its intended instant
 *     start + i / rate, whatever the answers to earlier ones, over a bounded
 *     pool of keep-alive connections (curl multi). Requests that find every
 *     connection busy wait in curl's queue, and that wait counts: every latency
 *     is measured from the intended instant, never from the moment a request
 *     could be sent, so a slow system cannot hide its queue (no coordinated
 *     omission);
 *   - the poller (poller.c) asks the query-api which orders of a window have
 *     reached an end state, one list request per window of consecutive orders
 *     (each window has its own customer id), and notes when it first saw each;
 *   - the main thread (loadgen.c) draws the progress line and, once both are
 *     done, writes the per-order CSV and the summary.
 * Each order's fields are written by one thread only: the sender writes the
 * intake fields and then publishes them with a release store of `state`; the
 * poller reads them only after an acquire load shows ORDER_ACCEPTED, and alone
 * writes the saga fields. The main thread reads everything after joining both.
 */
#ifndef BENCH_LOADGEN_H
#define BENCH_LOADGEN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LG_ID_MAX 36        /* a UUID's text */
#define LG_STATUS_MAX 24    /* the longest read-model status, with room */
#define LG_WINDOW_MAX 200   /* the query-api's largest page: one list request per window */

typedef enum lg_state {
    ORDER_PENDING = 0, /* not sent yet */
    ORDER_SENT,        /* handed to curl; no answer yet */
    ORDER_ACCEPTED,    /* 201 with an orderId */
    ORDER_REFUSED,     /* any other answer, or none (error, timeout, aborted at the deadline) */
    ORDER_DROPPED,     /* never sent: the generator's own queue was full */
} lg_state_t;

typedef enum lg_end {
    END_NONE = 0,
    END_ASSIGNED, /* DELIVERY_ASSIGNED or a later state of the happy path */
    END_FAILED,   /* INVENTORY_REJECTED or PAYMENT_FAILED */
} lg_end_t;

typedef struct lg_order {
    int64_t intended_us; /* every instant is CLOCK_REALTIME in microseconds */
    int64_t sent_us;     /* handed to curl (0: never) */
    int64_t answered_us; /* answer received (0: none) */
    int64_t saga_us;     /* first seen in an end state by the poller (0: never) */
    atomic_int state;    /* lg_state_t */
    int http_status;     /* the answer's status, or -(curl error code) */
    int end;             /* lg_end_t, poller only */
    char order_id[LG_ID_MAX + 1];
    char end_status[LG_STATUS_MAX + 1];
} lg_order_t;

typedef struct lg_run {
    /* settings, fixed before the threads start */
    const char *order_url;
    const char *query_url;
    const char *prefix; /* customer ids are <prefix>-<window> */
    double rate;        /* orders per second offered */
    double duration_s;
    double drain_s;     /* after the last intended send, how long sagas may take */
    int connections;
    int poll_ms;
    double poll_budget;  /* list requests per second, at most */
    int max_outstanding; /* requests handed to curl and not answered, at most */
    size_t per_window;   /* consecutive orders sharing a customer id */
    long timeout_ms;     /* per request */
    size_t n;
    lg_order_t *orders;
    int64_t start_us; /* intended instant of order 0 */
    int64_t deadline_us; /* start + duration + drain: nothing is waited for after it */

    /* progress, for the display and the summary */
    atomic_size_t sent, accepted, refused, dropped, ended_ok, ended_failed;
    atomic_size_t poll_requests, poll_errors;
    atomic_llong poll_us_total; /* time spent in list requests */
    atomic_size_t max_in_flight;
    atomic_bool sender_done;
    atomic_bool poller_done;
} lg_run_t;

int64_t lg_now_us(void);
void lg_sleep_us(int64_t us);
/* Customer id of order i: <prefix>-<window>. */
void lg_customer_id(const lg_run_t *r, size_t i, char *buf, size_t size);

/* Thread bodies; arg is the lg_run_t. */
void *lg_sender_main(void *arg);
void *lg_poller_main(void *arg);

/* stats.c: nearest-rank percentiles of v[0..n) (sorted in place). */
typedef struct lg_dist {
    size_t n;
    double p50, p95, p99, max, mean; /* milliseconds */
} lg_dist_t;
lg_dist_t lg_dist_of(double *v, size_t n);

#endif

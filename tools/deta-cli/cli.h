/*
 * cli.h - the internal interface of deta-cli, one section per file.
 *
 * deta-cli is a client of the running system and nothing more: every command is
 * a handful of HTTP calls to order-service (the write side), query-api (the read
 * model) and inventory-service (stock). One header for the whole tool, grouped by
 * the file that implements each part, keeps the pieces visible at a glance:
 *
 *   main.c      argument dispatch, usage, service URLs (env, then flags), the
 *               HTTP handle every command uses (lib/client: deta/client.h)
 *   commands.c  create, get, list, watch, cancel
 *   mix.c       the demo's deterministic (seeded) mix of orders; no I/O
 *   stock.c     the inventory's stock levels, parsed and compared
 *   progress.c  the single updating progress line on stderr
 *   demo.c      the demo driver: place orders concurrently, wait for end states
 *   report.c    latency statistics, timestamps and the demo's final report
 *
 * Exit status everywhere: 0 success, 1 failure (a service unreachable or saying
 * no, an order that never finished), 2 usage (bad arguments, missing settings);
 * and 3 for a cancel that order-service refused (409: too late).
 */
#ifndef DETA_CLI_H
#define DETA_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deta/client.h"
#include "deta/client_orders.h"
#include "deta/client_retry.h"
#include "deta/money.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2, CLI_REFUSED = 3 };

/* ---- main.c ---------------------------------------------------------------- */

/* Where the services answer: from ORDER_SERVICE_URL, QUERY_API_URL and
 * INVENTORY_SERVICE_URL (what stack.env holds), overridden by flags. */
typedef struct cli_ctx {
    const char *order_url;
    const char *query_url;
    const char *inventory_url;
} cli_ctx_t;

/* Long options every command accepts (values CLI_OPT_*), and their handling. */
enum { CLI_OPT_ORDER_URL = 1000, CLI_OPT_QUERY_URL, CLI_OPT_INVENTORY_URL, CLI_OPT_HELP };
#define CLI_URL_OPTIONS                                                                            \
    {"order-url", 1, NULL, CLI_OPT_ORDER_URL}, {"query-url", 1, NULL, CLI_OPT_QUERY_URL},          \
        {"inventory-url", 1, NULL, CLI_OPT_INVENTORY_URL}, {                                       \
        "help", 0, NULL, CLI_OPT_HELP                                                              \
    }
/* True when opt was one of CLI_URL_OPTIONS other than help (and is now applied). */
bool cli_take_url_option(cli_ctx_t *ctx, int opt, const char *arg);
/* The URL, or NULL after saying which variable or flag is missing. */
const char *cli_need_url(const char *url, const char *var, const char *flag);
/* Prints "deta-cli: <message>" on stderr; returns status. */
int cli_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A whole number in [min, max] from text, or false. */
bool cli_parse_long(const char *s, long min, long max, long *out);
/* A keep-alive HTTP handle for one thread: 10 s per request, 5 s to connect.
 * NULL when out of memory. */
deta_client_t *cli_client_new(void);
/* How create, cancel and the demo retry order-service: the library's default
 * policy (8 attempts, backoff 100 ms to 2 s, 30 s in all), with the same
 * per-request timeouts as cli_client_new. */
deta_retry_policy_t cli_retry_policy(void);

/* ---- commands.c -------------------------------------------------------------- */

int cli_cmd_create(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_get(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_list(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_watch(cli_ctx_t *ctx, int argc, char **argv);
int cli_cmd_cancel(cli_ctx_t *ctx, int argc, char **argv);
/* The list of events in GET /api/orders/{id}/events's answer
 * ({"orderId", "events": [...]}); NULL when there is none. */
const json_t *cli_timeline_events(const json_t *timeline);
/* "sku-1:2:9.99" -> item, quantity, unit price; false with a reason. */
bool cli_parse_item(const char *spec, char *item_id, size_t idsize, long *quantity,
                    deta_money_t *unit_price, char *why, size_t whysize);

/* ---- mix.c ------------------------------------------------------------------- */

typedef enum mix_kind {
    MIX_ORDINARY,          /* 1-3 catalog items: expected DELIVERED */
    MIX_LIMITED,           /* sku-limited, 25 in stock: DELIVERED until it runs out */
    MIX_DECLINED_CUSTOMER, /* customer decline-<n>: PAYMENT_FAILED, stock released */
    MIX_DECLINED_AMOUNT,   /* above the gateway's amount limit: PAYMENT_FAILED */
    MIX_KINDS
} mix_kind_t;

#define MIX_MAX_LINES 3
#define MIX_LIMITED_SKU "sku-limited"
#define MIX_LIMITED_STOCK 25

typedef struct mix_line {
    char item_id[16];
    int quantity;
    deta_money_t unit_price;
} mix_line_t;

typedef struct mix_order {
    mix_kind_t kind;
    char customer[32];
    int nlines;
    mix_line_t lines[MIX_MAX_LINES];
} mix_order_t;

/* n orders, the same for the same seed and n. */
void mix_plan(uint64_t seed, size_t n, mix_order_t *out);
/* The POST /api/orders body; malloc'd. */
char *mix_order_body(const mix_order_t *o);
const char *mix_kind_name(mix_kind_t kind);
/* What the kind should end as (the limited kind: DELIVERED or INVENTORY_REJECTED). */
const char *mix_kind_expectation(mix_kind_t kind);

/* ---- stock.c ----------------------------------------------------------------- */

typedef struct stock_row {
    char item_id[64];
    long available, held, sold;
} stock_row_t;

typedef struct stock {
    stock_row_t *rows;
    size_t n;
} stock_t;

/* GET /api/inventory into *out (a list of rows, or {"items": [...]}). */
bool stock_fetch(deta_client_t *h, const char *inventory_url, stock_t *out, char *errstr,
                 size_t errsize);
bool stock_from_json(const json_t *j, stock_t *out, char *errstr, size_t errsize);
const stock_row_t *stock_find(const stock_t *s, const char *item_id);
void stock_clear(stock_t *s);

/* ---- progress.c -------------------------------------------------------------- */

/* A line on stderr redrawn in place (on a terminal; elsewhere a line every few
 * seconds): "label [#####.....] done/total  extra". */
void progress_draw(const char *label, size_t done, size_t total, const char *extra);
/* Ends the line (the last state stays visible). */
void progress_end(void);

/* ---- report.c ---------------------------------------------------------------- */

typedef struct lat_stats {
    size_t n;
    double p50, p95, p99, max;
} lat_stats_t;

/* Nearest-rank percentiles of v[0..n) (sorted in place). */
lat_stats_t lat_stats_of(double *v, size_t n);
/* "p50 3.1 ms  p95 ..." or "no samples". */
void lat_stats_format(const lat_stats_t *s, char *buf, size_t size);

/* ---- demo.c ------------------------------------------------------------------ */

/* When the demo cancels an order (none for most). */
typedef enum demo_cancel_at {
    CANCEL_NONE,
    CANCEL_AT_CREATED,  /* right after the 201 */
    CANCEL_AT_PAID,     /* once the read model shows PAYMENT_AUTHORIZED or later */
    CANCEL_AT_ASSIGNED, /* once it shows DELIVERY_ASSIGNED or later */
    CANCEL_MOMENTS
} demo_cancel_at_t;

typedef struct demo_order {
    mix_order_t plan;
    char key[40];         /* its Idempotency-Key, the same on every retry */
    bool replayed;        /* answered as a replay (a retry after a lost answer) */
    int attempts;         /* POSTs it took */
    demo_cancel_at_t cancel_at;
    bool cancel_sent;
    deta_outcome_t cancel_outcome; /* the cancel's answer (valid when cancel_sent) */
    char cancel_seen[32];  /* the status the demo saw when it sent the cancel */
    char refunded[24];     /* refundedAmount in the read model ("" while none) */
    char total[24];        /* totalAmount in the read model */
    bool paid_seen;        /* the read model showed a paymentId */
    long http_status;     /* answer to the POST; 0 when none came */
    char error[160];      /* why it was not accepted */
    double intake_ms;     /* POST round trip, for 201s */
    char id[40];          /* orderId, when accepted */
    int64_t created_ms;   /* createdAt */
    char status[32];      /* last status seen in the read model ("" before) */
    bool done;            /* reached an end state */
    int64_t assigned_ms;  /* delivery.assigned occurredAt, or -1 */
    int64_t delivered_ms; /* delivery.delivered occurredAt, or -1 */
} demo_order_t;

typedef struct demo_run {
    cli_ctx_t *ctx;
    size_t norders;
    size_t ncancels; /* --cancels: orders the demo cancels, spread over the moments */
    int concurrency;
    uint64_t seed;
    int wait_seconds;
    demo_order_t *orders;
    stock_t before, after;
    double intake_seconds; /* first POST sent to last answer */
    double settle_seconds; /* first POST sent to last end state seen */
    bool timed_out;
} demo_run_t;

int cli_cmd_demo(cli_ctx_t *ctx, int argc, char **argv);
/* Which orders the demo cancels, and when: ncancels of norders, spread evenly,
 * the moments taken in turn (plain, for the tests). */
demo_cancel_at_t demo_cancel_moment(size_t index, size_t norders, size_t ncancels);
const char *demo_cancel_moment_name(demo_cancel_at_t at);

/* Prints the report of a finished run; returns CLI_OK when every number adds up. */
int report_print(const demo_run_t *run);

#endif

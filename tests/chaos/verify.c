/*
 * verify.c - after the faults: wait for the system to settle, then check it.
 *
 * A snapshot reads, with plain libpq, everything the run left in every
 * database: its orders (order_db, by the run's customer names), their
 * reservations and the stock of its items (inventory_db), payments
 * (delivery_eta), deliveries (delivery_db), the read model (delivery_query) and
 * unpublished outbox rows (the four services' databases). Orders are kept
 * sorted by id, and every other row finds its order by binary search.
 *
 * An order is finished when it reached one of the end states everywhere:
 *   rejected        reservation REJECTED, view INVENTORY_REJECTED;
 *   payment failed  reservation RELEASED, payment DECLINED, view PAYMENT_FAILED;
 *   delivered       reservation SOLD, payment AUTHORIZED, delivery DELIVERED,
 *                   view DELIVERED;
 * and none of its outbox rows waits. (DELIVERED rather than "assigned": the
 * stack's delivery clock runs 600x, so a delivery completes within seconds, and
 * the ticker's steps are then checked too.) Snapshots are taken every few
 * seconds until all are finished or CHAOS_CONVERGE_S passed, with a progress
 * line saying where the unfinished ones are.
 *
 * Then every invariant is checked, on the last snapshot and on the topics:
 *   - every order answered 201 exists; no customer (plan index) has two orders;
 *     each order's total is what was asked;
 *   - exactly one reservation per order; one payment per reserved order and none
 *     for a rejected one; one delivery per authorized order and none otherwise;
 *     the reservation, payment and delivery agree with each other (SOLD with
 *     AUTHORIZED, RELEASED with DECLINED, amounts equal to the order's total, the
 *     delivery's payment id the payment's) and with the gateway's rules
 *     (decline-* customers declined; others under the limit authorized, when the
 *     stack runs with the default decline settings);
 *   - stock per item: initial = available + held + sold, nothing held, sold =
 *     the units of SOLD reservations;
 *   - drivers: each one's active_deliveries equals its deliveries not yet
 *     delivered (a booking lost or counted twice would leak capacity; the chaos
 *     stack is its own, so every delivery in it belongs to a chaos run);
 *   - each reservation holds the order's units item by item;
 *   - the read model equals the write side for every order (status, customer,
 *     total, currency, creation instant, correlation id, reservation, payment,
 *     delivery, driver and its name, delivery instant and the final ETA, which
 *     is that instant, failure reason), and its timeline (order_events) holds
 *     each distinct event of the order once;
 *   - on the raw topics, one distinct event of each kind the order's path has
 *     (an event re-published after a crash has the same id and counts once;
 *     two ids would mean the order was processed twice), carrying the ids the
 *     databases hold, and the delivery steps in order on their partition;
 *   - no dead letter on any dlq. topic for the run's orders;
 *   - at most one delivery.waiting per order, before its delivery.assigned, and
 *     no order left waiting for a driver (the chaos fleet is small on purpose);
 *   - the gateway's own count (its ledger, PAYMENT_GATEWAY_LEDGER): exactly one
 *     charge for every order with a payment, whose answer is the payment's
 *     status, and none for any other order (a rejected one, or one declined
 *     uncharged because its hold had expired).
 *
 * Issue #14 (keys and cancels). CANCELLED is an end state: a cancelled order is
 * finished once its stock is released, its delivery undone, its charge refunded
 * and the read model says so. Invariants, each named like the others:
 *   - every key the load issued has exactly one order (idempotency_keys), the
 *     one of its plan index, and every intended order exists;
 *   - read model CANCELLED iff order_db orders.cancel_status CANCELLED, and
 *     refundedAmount equal to the refund;
 *   - a cancelled order keeps no stock (reservation RELEASED with reason
 *     ORDER_CANCELLED, CANCELLED, REJECTED or UNFULFILLABLE) and has no
 *     delivery under way (none, or CANCELLED; not in waiting_orders; in
 *     cancelled_orders when it had been paid);
 *   - refunds: one for each cancelled paid order, of its whole charge, none
 *     elsewhere; the gateway's ledger has at most one "refund" line per order,
 *     matching the refunds row;
 *   - a refused cancel's order ended DELIVERED or in a failure; on the topics
 *     one cancel request per asked cancel and exactly one verdict;
 *   - stock conservation needs nothing new: a cancel's release moves units
 *     back to available, and sold is compared with the SOLD reservations only.
 * The cancellation's rows are read apart from the rest (load_cancellation): a
 * stack without those tables still converges, and that is one violation.
 */
#include <libpq-fe.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaos.h"
#include "deta/client_retry.h"
#include "deta/states.h"
#include "deta/topics.h"
#include "testsupport.h"

#define POLL_MS 3000
#define MAX_FAILED_SNAPSHOTS 10 /* in a row: the databases are up by now, so it is a bug */
#define PROGRESS_EVERY_S 10.0
#define KAFKA_SCAN_MS 120000
#define TXT 48 /* room for an id, a status, an amount, an instant */

typedef struct seen_event {
    char id[40];
    char type[32];
    int64_t offset;
    char ref[40]; /* reservationId, paymentId or deliveryId of the payload */
} seen_event_t;

#define LINES_TXT 256 /* "item:units,item:units,..." */

typedef struct order_row {
    char id[40];
    long idx; /* plan index from the customer id; -1 when it does not parse */
    bool decline;
    char customer[96];
    char total[TXT], currency[TXT], created[TXT], correlation[TXT];
    char lines[LINES_TXT];     /* the order's units per item (order_items) */
    char res_lines[LINES_TXT]; /* the reservation's (reservation_items) */
    int nres;
    char res_id[TXT], res_status[TXT], res_total[TXT], res_reason[TXT];
    int npay;
    char pay_id[TXT], pay_status[TXT], pay_reason[TXT], pay_amount[TXT];
    int ndel;
    char del_id[TXT], del_status[TXT], del_payment[TXT], del_driver[TXT], del_at[TXT],
        del_driver_name[TXT];
    int nview;
    char v_status[TXT], v_total[TXT], v_customer[96], v_res[TXT], v_pay[TXT], v_del[TXT],
        v_driver[TXT], v_at[TXT], v_failure[TXT], v_currency[TXT], v_created[TXT],
        v_correlation[TXT], v_eta[TXT], v_driver_name[TXT];
    long v_timeline; /* rows of query-api's order_events */
    int charges;           /* lines of the gateway's ledger under the order's key */
    char charge_status[TXT]; /* the first one's status */
    /* the cancellation (issue #14): read apart from the rest, so that a stack
     * without its tables still converges and says so once */
    int ncancel;
    char cancel_status[TXT]; /* order_db orders.cancel_status: REQUESTED, CANCELLED, REFUSED */
    int nref;
    char ref_amount[TXT];    /* delivery_eta refunds.amount */
    int ledger_refunds;      /* "refund <orderId> ..." lines of the gateway's ledger */
    char ledger_refund_amount[TXT];
    int ncancelled_rec;      /* delivery_db cancelled_orders rows */
    char cancelled_rec_stage[TXT];
    int nwaiting;            /* delivery_db waiting_orders rows */
    int nview_cancel;
    char v_refunded[TXT];    /* order_view.refunded_amount */
    int nkey;
    char key[TXT];           /* order_db idempotency_keys.idempotency_key */
    int unsent;
    seen_event_t *events;
    int nevents, capevents;
} order_row_t;

typedef struct item_row {
    bool found;
    long available, held, sold;
    long units_sold, units_held; /* from the reservations */
} item_row_t;

typedef struct snapshot {
    order_row_t *orders;
    size_t n;
    bool cancel_readable; /* the cancellation's tables answered */
    item_row_t items[CHAOS_ITEMS];
    char *ids; /* "{id,id,...}": the orders as a Postgres array literal */
} snapshot_t;

/* ---- Postgres ---- */

static PGconn *db_open(const char *dbname) {
    char conninfo[128];
    snprintf(conninfo, sizeof conninfo, "dbname=%s connect_timeout=5", dbname);
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "chaos: cannot connect to %s: %s", dbname, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Runs a query on a fresh connection to dbname; NULL (said) on failure. */
static PGresult *db_query(const char *dbname, const char *sql, int n, const char *const *params) {
    PGconn *c = db_open(dbname);
    if (!c)
        return NULL;
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "chaos: %s: %s", dbname, PQerrorMessage(c));
        PQclear(r);
        r = NULL;
    }
    PQfinish(c);
    return r;
}

static void cell(char *dst, size_t size, const PGresult *r, int row, int col) {
    snprintf(dst, size, "%s", PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col));
}

/* ---- the snapshot ---- */

#define MS_UTC(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS')"

static int by_id(const void *a, const void *b) {
    return strcmp(((const order_row_t *)a)->id, ((const order_row_t *)b)->id);
}

static order_row_t *find_order(const snapshot_t *s, const char *id) {
    order_row_t key;
    snprintf(key.id, sizeof key.id, "%s", id);
    return bsearch(&key, s->orders, s->n, sizeof *s->orders, by_id);
}

static void snapshot_free(snapshot_t *s) {
    for (size_t i = 0; i < s->n; i++)
        free(s->orders[i].events);
    free(s->orders);
    free(s->ids);
    memset(s, 0, sizeof *s);
}

/* The plan index of a customer id "[decline-]chaos-<tag>-<n>". */
static long plan_index(const chaos_run_t *run, const char *customer, bool *decline) {
    char prefix[64];
    *decline = strncmp(customer, "decline-", 8) == 0;
    snprintf(prefix, sizeof prefix, "chaos-%s-", run->tag);
    const char *rest = customer + (*decline ? 8 : 0);
    if (strncmp(rest, prefix, strlen(prefix)) != 0)
        return -1;
    char *end;
    long i = strtol(rest + strlen(prefix), &end, 10);
    return *end || i < 0 || i >= run->s.orders ? -1 : i;
}

static bool load_orders(const chaos_run_t *run, snapshot_t *s) {
    char plain[64], decline[64];
    snprintf(plain, sizeof plain, "chaos-%s-%%", run->tag);
    snprintf(decline, sizeof decline, "decline-chaos-%s-%%", run->tag);
    const char *params[] = {plain, decline};
    PGresult *r = db_query("order_db",
                           "SELECT order_id::text, customer_id, total_amount::text, currency, "
                           MS_UTC("created_at") ", correlation_id::text FROM orders"
                           " WHERE customer_id LIKE $1 OR customer_id LIKE $2",
                           2, params);
    if (!r)
        return false;
    s->n = (size_t)PQntuples(r);
    s->orders = calloc(s->n ? s->n : 1, sizeof *s->orders);
    s->ids = malloc(s->n * 40 + 3);
    if (!s->orders || !s->ids) {
        PQclear(r);
        return false;
    }
    for (size_t i = 0; i < s->n; i++) {
        order_row_t *o = &s->orders[i];
        cell(o->id, sizeof o->id, r, (int)i, 0);
        cell(o->customer, sizeof o->customer, r, (int)i, 1);
        cell(o->total, sizeof o->total, r, (int)i, 2);
        cell(o->currency, TXT, r, (int)i, 3);
        cell(o->created, TXT, r, (int)i, 4);
        cell(o->correlation, TXT, r, (int)i, 5);
        o->idx = plan_index(run, o->customer, &o->decline);
    }
    PQclear(r);
    qsort(s->orders, s->n, sizeof *s->orders, by_id);
    char *p = s->ids;
    *p++ = '{';
    for (size_t i = 0; i < s->n; i++)
        p += sprintf(p, "%s%s", i ? "," : "", s->orders[i].id);
    strcpy(p, "}");
    return true;
}

/* A query whose first column is the order id and whose other columns fill the
 * order's fields in turn; count_at is the order's counter of such rows (only the
 * first row fills the fields, the count shows duplicates). */
typedef struct column_field {
    size_t at, size;
} column_field_t;
#define FIELD(member) {offsetof(order_row_t, member), sizeof((order_row_t *)0)->member}
#define MAX_FIELDS 14

typedef struct per_order_query {
    const char *db, *sql;
    size_t count_at;
    column_field_t fields[MAX_FIELDS];
    int nfields;
} per_order_query_t;

static bool load_per_order(snapshot_t *s, const per_order_query_t *q) {
    const char *params[] = {s->ids};
    PGresult *r = db_query(q->db, q->sql, 1, params);
    if (!r)
        return false;
    for (int i = 0; i < PQntuples(r); i++) {
        order_row_t *o = find_order(s, PQgetvalue(r, i, 0));
        if (!o || (*(int *)((char *)o + q->count_at))++)
            continue;
        for (int f = 0; f < q->nfields; f++)
            cell((char *)o + q->fields[f].at, q->fields[f].size, r, i, f + 1);
    }
    PQclear(r);
    return true;
}

static const per_order_query_t RESERVATIONS = {
    "inventory_db",
    "SELECT order_id, reservation_id::text, status, total_amount::text,"
    " reason FROM reservations WHERE order_id = ANY($1::text[])",
    offsetof(order_row_t, nres),
    {FIELD(res_id), FIELD(res_status), FIELD(res_total), FIELD(res_reason)},
    4};

static const per_order_query_t PAYMENTS = {
    "delivery_eta",
    "SELECT order_id::text, payment_id::text, status, reason,"
    " amount::text FROM payments WHERE order_id = ANY($1::uuid[])",
    offsetof(order_row_t, npay),
    {FIELD(pay_id), FIELD(pay_status), FIELD(pay_reason), FIELD(pay_amount)},
    4};

static const per_order_query_t DELIVERIES = {
    "delivery_db",
    "SELECT x.order_id::text, x.delivery_id::text, x.status, x.payment_id,"
    " x.driver_id, " MS_UTC("x.delivered_at") ", d.name"
    " FROM deliveries x JOIN drivers d ON d.driver_id = x.driver_id"
    " WHERE x.order_id = ANY($1::uuid[])",
    offsetof(order_row_t, ndel),
    {FIELD(del_id), FIELD(del_status), FIELD(del_payment), FIELD(del_driver), FIELD(del_at),
     FIELD(del_driver_name)},
    6};

static const per_order_query_t VIEW = {
    "delivery_query",
    "SELECT order_id::text, status, total_amount::text, customer_id,"
    " reservation_id, payment_id, delivery_id, driver_id, "
    MS_UTC("delivered_at") ", failure_reason, currency, "
    MS_UTC("created_at") ", correlation_id, "
    MS_UTC("estimated_delivery_at") ", driver_name"
    " FROM order_view WHERE order_id = ANY($1::uuid[])",
    offsetof(order_row_t, nview),
    {FIELD(v_status), FIELD(v_total), FIELD(v_customer), FIELD(v_res), FIELD(v_pay),
     FIELD(v_del), FIELD(v_driver), FIELD(v_at), FIELD(v_failure), FIELD(v_currency),
     FIELD(v_created), FIELD(v_correlation), FIELD(v_eta), FIELD(v_driver_name)},
    14};

static bool load_view(snapshot_t *s) {
    if (!load_per_order(s, &VIEW))
        return false;
    const char *params[] = {s->ids};
    PGresult *r = db_query("delivery_query",
                           "SELECT order_id::text, count(*) FROM order_events"
                           " WHERE order_id = ANY($1::uuid[]) GROUP BY 1",
                           1, params);
    if (!r)
        return false;
    for (int i = 0; i < PQntuples(r); i++) {
        order_row_t *o = find_order(s, PQgetvalue(r, i, 0));
        if (o)
            o->v_timeline = atol(PQgetvalue(r, i, 1));
    }
    PQclear(r);
    return true;
}

/* Appends "item:units" rows (order id, item, units; sorted by order id) to
 * each order's lines text (at offset field of order_row_t). */
static void take_lines(snapshot_t *s, const PGresult *r, size_t field) {
    for (int i = 0; i < PQntuples(r); i++) {
        order_row_t *o = find_order(s, PQgetvalue(r, i, 0));
        if (!o)
            continue;
        char *text = (char *)o + field;
        size_t len = strlen(text);
        snprintf(text + len, LINES_TXT - len, "%s%s:%s", len ? "," : "", PQgetvalue(r, i, 1),
                 PQgetvalue(r, i, 2));
    }
}

static bool load_lines(snapshot_t *s) {
    const char *params[] = {s->ids};
    PGresult *r = db_query("order_db",
                           "SELECT order_id::text, item_id, sum(quantity) FROM order_items"
                           " WHERE order_id = ANY($1::uuid[])"
                           " GROUP BY 1, 2 ORDER BY order_id, item_id COLLATE \"C\"",
                           1, params);
    if (!r)
        return false;
    take_lines(s, r, offsetof(order_row_t, lines));
    PQclear(r);
    r = db_query("inventory_db",
                 "SELECT order_id, item_id, quantity FROM reservation_items"
                 " WHERE order_id = ANY($1::text[]) ORDER BY order_id, item_id COLLATE \"C\"",
                 1, params);
    if (!r)
        return false;
    take_lines(s, r, offsetof(order_row_t, res_lines));
    PQclear(r);
    return true;
}

/* Outbox rows not out yet. The relays keep no mark on the rows: each reads
 * its database's outbox from the WAL and confirms its slot's stream past what
 * went out (lib/src/outbox_relay.c). So a database whose slot has not passed
 * the WAL flushed as of the previous snapshot (the relay confirms up to a
 * second late when idle) counts every row of the run's orders in its outbox
 * as unsent; once it has, none. */
static bool load_unsent(snapshot_t *s) {
    static const char *const dbs[] = {"order_db", "inventory_db", "delivery_eta", "delivery_db"};
    static char targets[4][32]; /* each database's flushed WAL at the previous snapshot */
    const char *params[] = {s->ids};
    for (size_t d = 0; d < sizeof dbs / sizeof *dbs; d++) {
        PGresult *r = db_query(dbs[d],
                               "SELECT pg_current_wal_flush_lsn()::text, (SELECT"
                               " confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name ="
                               " 'deta_outbox_' || current_database()) >= $1::pg_lsn",
                               1, (const char *const[]){targets[d][0] ? targets[d] : "0/0"});
        if (!r)
            return false;
        bool out = targets[d][0] && strcmp(PQgetvalue(r, 0, 1), "t") == 0;
        snprintf(targets[d], sizeof targets[d], "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
        if (out)
            continue;
        r = db_query(dbs[d], "SELECT msg_key FROM outbox WHERE msg_key = ANY($1::text[])", 1,
                     params);
        if (!r)
            return false;
        for (int i = 0; i < PQntuples(r); i++) {
            order_row_t *o = find_order(s, PQgetvalue(r, i, 0));
            if (o)
                o->unsent++;
        }
        PQclear(r);
    }
    return true;
}

static int item_index(const chaos_run_t *run, const char *id) {
    for (int i = 0; i < CHAOS_ITEMS; i++)
        if (strcmp(run->items[i].id, id) == 0)
            return i;
    return -1;
}

static bool load_stock(const chaos_run_t *run, snapshot_t *s) {
    char like[64];
    snprintf(like, sizeof like, "chaos-%s-%%", run->tag);
    const char *params[] = {like};
    PGresult *r = db_query("inventory_db",
                           "SELECT item_id, available, held, sold FROM stock WHERE item_id LIKE $1",
                           1, params);
    if (!r)
        return false;
    for (int i = 0; i < PQntuples(r); i++) {
        int k = item_index(run, PQgetvalue(r, i, 0));
        if (k < 0)
            continue;
        s->items[k].found = true;
        s->items[k].available = atol(PQgetvalue(r, i, 1));
        s->items[k].held = atol(PQgetvalue(r, i, 2));
        s->items[k].sold = atol(PQgetvalue(r, i, 3));
    }
    PQclear(r);
    r = db_query("inventory_db",
                 "SELECT ri.item_id, r.status, sum(ri.quantity)::bigint FROM reservation_items ri"
                 " JOIN reservations r ON r.order_id = ri.order_id WHERE ri.item_id LIKE $1"
                 " GROUP BY 1, 2",
                 1, params);
    if (!r)
        return false;
    for (int i = 0; i < PQntuples(r); i++) {
        int k = item_index(run, PQgetvalue(r, i, 0));
        const char *status = PQgetvalue(r, i, 1);
        long units = atol(PQgetvalue(r, i, 2));
        if (k >= 0 && strcmp(status, "SOLD") == 0)
            s->items[k].units_sold += units;
        else if (k >= 0 && strcmp(status, "HELD") == 0)
            s->items[k].units_held += units;
    }
    PQclear(r);
    return true;
}

/* The cancellation's rows (issue #14's tables and columns). Where the code
 * names them differently, these queries are the one place to change. */
static const per_order_query_t CANCEL_STATUS = {
    "order_db",
    "SELECT order_id::text, cancel_status FROM orders"
    " WHERE order_id = ANY($1::uuid[]) AND cancel_status IS NOT NULL",
    offsetof(order_row_t, ncancel), {FIELD(cancel_status)}, 1};

static const per_order_query_t REFUNDS = {
    "delivery_eta",
    "SELECT order_id::text, amount::text FROM refunds WHERE order_id = ANY($1::uuid[])",
    offsetof(order_row_t, nref), {FIELD(ref_amount)}, 1};

static const per_order_query_t CANCELLED_ORDERS = {
    "delivery_db",
    "SELECT order_id::text, stage FROM cancelled_orders WHERE order_id = ANY($1::uuid[])",
    offsetof(order_row_t, ncancelled_rec), {FIELD(cancelled_rec_stage)}, 1};

static const per_order_query_t WAITING = {
    "delivery_db",
    "SELECT order_id::text, order_id::text FROM waiting_orders WHERE order_id = ANY($1::uuid[])",
    offsetof(order_row_t, nwaiting), {FIELD(cancelled_rec_stage)}, 0};

static const per_order_query_t VIEW_CANCEL = {
    "delivery_query",
    "SELECT order_id::text, refunded_amount::text FROM order_view"
    " WHERE order_id = ANY($1::uuid[])",
    offsetof(order_row_t, nview_cancel), {FIELD(v_refunded)}, 1};

static const per_order_query_t KEYS = {
    "order_db",
    "SELECT order_id::text, idempotency_key FROM idempotency_keys"
    " WHERE order_id = ANY($1::uuid[])",
    offsetof(order_row_t, nkey), {FIELD(key)}, 1};

static bool load_cancellation(snapshot_t *s) {
    return load_per_order(s, &CANCEL_STATUS) && load_per_order(s, &REFUNDS) &&
           load_per_order(s, &CANCELLED_ORDERS) && load_per_order(s, &WAITING) &&
           load_per_order(s, &VIEW_CANCEL) && load_per_order(s, &KEYS);
}

static bool snapshot_load(const chaos_run_t *run, snapshot_t *s) {
    memset(s, 0, sizeof *s);
    if (load_orders(run, s) && load_per_order(s, &RESERVATIONS) &&
        load_per_order(s, &PAYMENTS) && load_per_order(s, &DELIVERIES) && load_view(s) &&
        load_unsent(s) && load_stock(run, s) && load_lines(s)) {
        s->cancel_readable = load_cancellation(s);
        return true;
    }
    snapshot_free(s);
    return false;
}

/* ---- end states ---- */

static bool is(const char *a, const char *b) { return strcmp(a, b) == 0; }

static bool cancelled(const order_row_t *o) { return is(o->cancel_status, "CANCELLED"); }

static bool active_delivery(const order_row_t *o) {
    return o->ndel == 1 && (is(o->del_status, "ASSIGNED") || is(o->del_status, "PICKED_UP"));
}

/* Where a cancelled order stands: NULL when every compensation is done. */
static const char *cancelled_stage(const order_row_t *o) {
    if (is(o->res_status, "HELD") || is(o->res_status, "SOLD"))
        return "cancelled, stock not released yet";
    if (active_delivery(o) || o->nwaiting)
        return "cancelled, delivery not undone yet";
    if (o->npay == 1 && is(o->pay_status, "AUTHORIZED") && o->nref == 0)
        return "cancelled, not refunded yet";
    if (!is(o->v_status, DETA_STATE_CANCELLED))
        return "cancelled, read model behind";
    if (o->nref == 1 && !is(o->v_refunded, o->ref_amount))
        return "refunded, read model behind";
    return NULL;
}

/* Where an order stands: NULL when finished, else a short phrase. */
static const char *pending_stage(const order_row_t *o) {
    if (o->nres == 0)
        return "no reservation yet";
    if (is(o->cancel_status, "REQUESTED"))
        return "cancel asked, no verdict yet";
    if (cancelled(o)) {
        const char *st = cancelled_stage(o);
        return st ? st : o->unsent ? "outbox rows unpublished" : NULL;
    }
    if (is(o->res_status, "HELD"))
        return o->npay ? "paid, stock still held" : "reserved, no payment yet";
    if (is(o->res_status, "REJECTED")) {
        if (!is(o->v_status, DETA_STATE_INVENTORY_REJECTED))
            return "rejected, read model behind";
    } else if (o->npay == 0) {
        return "stock settled without a payment";
    } else if (is(o->pay_status, "DECLINED")) {
        if (!is(o->v_status, DETA_STATE_PAYMENT_FAILED))
            return "payment failed, read model behind";
    } else if (o->ndel == 0) {
        return "authorized, no delivery yet";
    } else if (!is(o->del_status, "DELIVERED")) {
        return "delivery under way";
    } else if (!is(o->v_status, DETA_STATE_DELIVERED)) {
        return "delivered, read model behind";
    }
    return o->unsent ? "outbox rows unpublished" : NULL;
}

#define MAX_STAGES 16

typedef struct stage_count {
    const char *stage;
    long n;
} stage_count_t;

/* How many orders are unfinished; the stages they are at in counts. */
static size_t count_pending(const snapshot_t *s, stage_count_t *counts, int *ncounts) {
    size_t pending = 0;
    *ncounts = 0;
    for (size_t i = 0; i < s->n; i++) {
        const char *st = pending_stage(&s->orders[i]);
        if (!st)
            continue;
        pending++;
        int k = 0;
        while (k < *ncounts && counts[k].stage != st)
            k++;
        if (k == *ncounts && *ncounts < MAX_STAGES)
            counts[(*ncounts)++] = (stage_count_t){st, 0};
        if (k < *ncounts)
            counts[k].n++;
    }
    return pending;
}

static void print_progress(const snapshot_t *s, double waited) {
    stage_count_t counts[MAX_STAGES];
    int nc;
    size_t pending = count_pending(s, counts, &nc);
    printf("chaos: converging (%.0f s): %zu/%zu orders finished", waited, s->n - pending, s->n);
    for (int k = 0; k < nc; k++)
        printf("%s %ld %s", k ? "," : ";", counts[k].n, counts[k].stage);
    printf("\n");
}

/* Snapshots until every order is finished or the patience ran out; the last
 * one stays in *s. Returns the seconds waited. */
static double converge(const chaos_run_t *run, snapshot_t *s) {
    double t0 = chaos_now(), last_print = 0;
    stage_count_t counts[MAX_STAGES];
    int nc, failed = 0;
    for (;;) {
        double waited = chaos_now() - t0;
        bool loaded = snapshot_load(run, s);
        failed = loaded ? 0 : failed + 1;
        if (failed == MAX_FAILED_SNAPSHOTS) {
            chaos_violation("databases unreadable", "%d snapshots in a row failed", failed);
            return waited;
        }
        if (loaded && count_pending(s, counts, &nc) == 0) {
            print_progress(s, waited);
            return waited;
        }
        if (waited >= (double)run->s.converge_s) {
            if (loaded)
                print_progress(s, waited);
            else
                chaos_violation("databases unreadable", "no snapshot after %.0f s", waited);
            return waited;
        }
        if (loaded && waited - last_print >= PROGRESS_EVERY_S) {
            print_progress(s, waited);
            last_print = waited;
        }
        if (loaded)
            snapshot_free(s);
        chaos_sleep_ms(POLL_MS);
    }
}

/* ---- checks on the databases ---- */

static void money_text(long cents, char *out, size_t size) {
    snprintf(out, size, "%ld.%02ld", cents / 100, cents % 100);
}

static void check_client_view(const chaos_run_t *run, const snapshot_t *s) {
    long *orders_of = calloc((size_t)run->s.orders, sizeof *orders_of);
    if (!orders_of)
        return;
    for (size_t i = 0; i < s->n; i++) {
        const order_row_t *o = &s->orders[i];
        if (o->idx < 0) {
            chaos_violation("order of an unknown customer", "order %s customer %s", o->id,
                            o->customer);
            continue;
        }
        if (++orders_of[o->idx] == 2)
            chaos_violation("order created twice", "customer %s has several orders", o->customer);
        char want[32];
        money_text(run->orders[o->idx].total_cents, want, sizeof want);
        if (!is(o->total, want))
            chaos_violation("order total wrong", "order %s: %s, asked %s", o->id, o->total, want);
    }
    long unanswered = 0;
    for (size_t i = 0; i < s->n; i++)
        unanswered += s->orders[i].idx >= 0 && run->orders[s->orders[i].idx].placed !=
                                                    PLACED_ACCEPTED;
    printf("chaos: %ld of them exist without a 201 (cut off, or 5xx after the commit)\n",
           unanswered);
    for (long i = 0; i < run->s.orders; i++) {
        const chaos_order_t *c = &run->orders[i];
        if (c->placed != PLACED_ACCEPTED)
            continue;
        const order_row_t *o = find_order(s, c->order_id);
        if (!o)
            chaos_violation("accepted order lost", "order %s (201) is not in order_db",
                            c->order_id);
        else if (o->idx != i)
            chaos_violation("accepted order mixed up", "order %s answered to plan %ld belongs to %s",
                            c->order_id, i, o->customer);
    }
    free(orders_of);
}

/* The gateway's rules as the stack runs them (chaos.sh's defaults): decline-*
 * customers declined, amounts above 10000.00 declined, no random declines. */
static bool default_gateway(void) {
    const char *customers = getenv("PAYMENT_DECLINE_CUSTOMERS");
    const char *rate = getenv("PAYMENT_DECLINE_RATE");
    const char *above = getenv("PAYMENT_DECLINE_ABOVE");
    return customers && is(customers, "decline-*") && (!rate || !*rate || is(rate, "0")) &&
           (!above || !*above || is(above, "10000.00"));
}

static void check_payment(const chaos_run_t *run, const order_row_t *o, bool gateway) {
    if (o->npay == 0 && cancelled(o))
        return; /* cancelled before its charge: payment.cancelled fenced it off */
    if (o->npay != 1) {
        chaos_violation("reserved order without exactly one payment", "order %s: %d payment(s)",
                        o->id, o->npay);
        return;
    }
    if (!is(o->pay_amount, o->total))
        chaos_violation("payment amount differs from the order", "order %s: paid %s of %s",
                        o->id, o->pay_amount, o->total);
    bool authorized = is(o->pay_status, "AUTHORIZED");
    bool released_by_cancel = cancelled(o) && is(o->res_status, "RELEASED");
    if (!is(o->res_status, "HELD") && !released_by_cancel &&
        !is(o->res_status, authorized ? "SOLD" : "RELEASED"))
        chaos_violation("reservation disagrees with payment", "order %s: %s reservation, %s payment",
                        o->id, o->res_status, o->pay_status);
    if (o->decline && authorized)
        chaos_violation("decline-* customer authorized", "order %s", o->id);
    if (gateway && o->idx >= 0 && !o->decline && !authorized &&
        run->orders[o->idx].total_cents <= 1000000)
        chaos_violation("payment declined against the rules", "order %s: %s, %s", o->id,
                        o->pay_reason, o->total);
}

static void check_delivery(const order_row_t *o) {
    bool authorized = o->npay == 1 && is(o->pay_status, "AUTHORIZED");
    if (cancelled(o)) {
        /* a waiting or never-seen order has no delivery; an assigned one CANCELLED */
        if (o->ndel > 1 || (o->ndel && !authorized))
            chaos_violation("cancelled order with a wrong delivery", "order %s: %d deliveries, "
                            "payment %s", o->id, o->ndel, o->pay_status);
        else if (o->ndel == 1 && !is(o->del_payment, o->pay_id))
            chaos_violation("delivery names another payment", "order %s: delivery's %s, "
                            "payment %s", o->id, o->del_payment, o->pay_id);
        return;
    }
    if (!authorized) {
        if (o->ndel)
            chaos_violation("delivery without an authorized payment", "order %s: %d deliveries",
                            o->id, o->ndel);
        return;
    }
    if (o->ndel != 1)
        chaos_violation("authorized order without exactly one delivery",
                        "order %s: %d deliveries", o->id, o->ndel);
    else if (!is(o->del_payment, o->pay_id))
        chaos_violation("delivery names another payment", "order %s: delivery's %s, payment %s",
                        o->id, o->del_payment, o->pay_id);
}

static void check_write_side(const chaos_run_t *run, const order_row_t *o, bool gateway) {
    const char *stage = pending_stage(o);
    if (stage)
        chaos_violation("order not in an end state", "order %s: %s", o->id, stage);
    if (o->nres != 1) {
        chaos_violation("order without exactly one reservation", "order %s: %d", o->id, o->nres);
        return;
    }
    if (is(o->res_status, "CANCELLED")) {
        /* cancelled before anything was reserved: a row of no items, nothing else */
        if (!cancelled(o))
            chaos_violation("CANCELLED reservation of an order not cancelled", "order %s", o->id);
        if (o->npay || o->ndel)
            chaos_violation("order cancelled before its reservation paid or delivered",
                            "order %s: %d payment(s), %d deliveries", o->id, o->npay, o->ndel);
        return;
    }
    if (!is(o->res_total, o->total))
        chaos_violation("reservation total differs from the order", "order %s: %s vs %s", o->id,
                        o->res_total, o->total);
    if (!is(o->res_lines, o->lines))
        chaos_violation("reservation lines differ from the order", "order %s: %s vs %s", o->id,
                        o->res_lines, o->lines);
    if (is(o->res_status, "REJECTED")) {
        if (o->npay || o->ndel)
            chaos_violation("rejected order paid or delivered", "order %s: %d payment(s), %d "
                            "deliveries", o->id, o->npay, o->ndel);
        return;
    }
    check_payment(run, o, gateway);
    check_delivery(o);
}

/* What the read model must say of an order, from the write side. */
static void check_view(const order_row_t *o) {
    if (o->nview != 1) {
        chaos_violation("order missing from the read model", "order %s", o->id);
        return;
    }
    bool rejected = is(o->res_status, "REJECTED");
    bool declined = o->npay == 1 && is(o->pay_status, "DECLINED");
    bool gone = cancelled(o);
    bool reserved = !rejected && !is(o->res_status, "CANCELLED");
    const char *want = gone       ? DETA_STATE_CANCELLED
                       : rejected ? DETA_STATE_INVENTORY_REJECTED
                       : declined ? DETA_STATE_PAYMENT_FAILED
                                  : DETA_STATE_DELIVERED;
    const struct {
        const char *field, *view, *write;
    } pairs[] = {
        {"status", o->v_status, want},
        {"customer", o->v_customer, o->customer},
        {"total", o->v_total, o->total},
        {"reservationId", o->v_res, reserved ? o->res_id : ""},
        {"paymentId", o->v_pay, o->npay ? o->pay_id : ""},
        {"deliveryId", o->v_del, o->ndel ? o->del_id : ""},
        {"driverId", o->v_driver, o->ndel ? o->del_driver : ""},
        {"deliveredAt", o->v_at, o->ndel ? o->del_at : ""},
        {"failureReason", o->v_failure, rejected ? o->res_reason : declined ? o->pay_reason : ""},
        {"currency", o->v_currency, o->currency},
        {"createdAt", o->v_created, o->created},
        {"correlationId", o->v_correlation, o->correlation},
        {"driverName", o->v_driver_name, o->ndel ? o->del_driver_name : ""},
        /* at delivery the estimate is the delivery instant (docs/contracts.md) */
        {"estimatedDeliveryAt", o->v_eta, gone ? o->v_eta : o->ndel ? o->del_at : ""},
        /* a cancelled assignment keeps its first ETA in the view: not compared */
        {"refundedAmount", o->v_refunded, o->nref ? o->ref_amount : ""},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++)
        if (!is(pairs[i].view, pairs[i].write))
            chaos_violation("read model differs from the write side", "order %s: %s \"%s\", "
                            "write side \"%s\"", o->id, pairs[i].field, pairs[i].view,
                            pairs[i].write);
}

static void check_stock(const chaos_run_t *run, const snapshot_t *s) {
    for (int k = 0; k < CHAOS_ITEMS; k++) {
        const item_row_t *it = &s->items[k];
        const chaos_item_t *item = &run->items[k];
        if (!it->found) {
            chaos_violation("item lost", "%s is not in stock", item->id);
            continue;
        }
        if (it->available + it->held + it->sold != item->initial)
            chaos_violation("stock not conserved", "%s: %ld available + %ld held + %ld sold != "
                            "%ld initial", item->id, it->available, it->held, it->sold,
                            item->initial);
        if (it->held != 0 || it->held != it->units_held)
            chaos_violation("stock held after the run", "%s: %ld held (reservations hold %ld)",
                            item->id, it->held, it->units_held);
        if (it->sold != it->units_sold)
            chaos_violation("sold stock differs from SOLD reservations", "%s: %ld sold, "
                            "reservations %ld", item->id, it->sold, it->units_sold);
    }
}

static void check_drivers(void) {
    PGresult *r = db_query("delivery_db",
                           "SELECT d.driver_id, d.active_deliveries, count(x.delivery_id)"
                           " FROM drivers d LEFT JOIN deliveries x ON x.driver_id = d.driver_id"
                           " AND x.status IN ('ASSIGNED', 'PICKED_UP')"
                           " GROUP BY d.driver_id, d.active_deliveries"
                           " HAVING d.active_deliveries <> count(x.delivery_id)",
                           0, NULL);
    if (!r) {
        chaos_violation("databases unreadable", "cannot read drivers");
        return;
    }
    for (int i = 0; i < PQntuples(r); i++)
        chaos_violation("driver capacity leaked", "driver %s: active_deliveries %s, %s "
                        "deliveries under way", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                        PQgetvalue(r, i, 2));
    PQclear(r);
    r = db_query("delivery_db", "SELECT order_id::text FROM waiting_orders", 0, NULL);
    for (int i = 0; r && i < PQntuples(r); i++)
        chaos_violation("paid order still waiting for a driver", "order %s",
                        PQgetvalue(r, i, 0));
    PQclear(r);
}

/* ---- checks on the topics ---- */

static void remember_event(order_row_t *o, const char *id, const char *type, int64_t offset,
                           const char *ref) {
    for (int i = 0; i < o->nevents; i++)
        if (is(o->events[i].id, id))
            return; /* a re-publication of one event: same id */
    if (o->nevents == o->capevents) {
        int cap = o->capevents ? o->capevents * 2 : 8;
        seen_event_t *more = realloc(o->events, (size_t)cap * sizeof *more);
        if (!more)
            return;
        o->events = more;
        o->capevents = cap;
    }
    seen_event_t *e = &o->events[o->nevents++];
    snprintf(e->id, sizeof e->id, "%s", id);
    snprintf(e->type, sizeof e->type, "%s", type);
    snprintf(e->ref, sizeof e->ref, "%s", ref ? ref : "");
    e->offset = offset;
}

static const char *payload_ref(const json_t *payload) {
    static const char *const keys[] = {"deliveryId", "paymentId", "reservationId"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const char *v = json_string_value(json_object_get(payload, keys[i]));
        if (v)
            return v;
    }
    return NULL;
}

static void visit_raw(const chaos_tap_msg_t *m, snapshot_t *s) {
    order_row_t *o = m->key ? find_order(s, m->key) : NULL;
    if (!o)
        return;
    json_t *ev = json_loads(m->value, 0, NULL);
    const char *id = json_string_value(json_object_get(ev, "eventId"));
    const char *type = json_string_value(json_object_get(ev, "eventType"));
    if (id && type)
        remember_event(o, id, type, m->offset, payload_ref(json_object_get(ev, "payload")));
    else
        chaos_violation("unreadable event", "order %s: %.120s", o->id, m->value);
    json_decref(ev);
}

static void visit_dlq(const chaos_tap_msg_t *m, const snapshot_t *s) {
    const order_row_t *o = m->key ? find_order(s, m->key) : NULL;
    if (!o)
        return;
    chaos_violation("dead letter for an order of the run", "order %s from %s by %s: %s", o->id,
                    m->original_topic ? m->original_topic : "?",
                    m->consumer_group ? m->consumer_group : "?", m->error ? m->error : "?");
}

/* The distinct events of type the order has, the first in *first. */
static int count_type(const order_row_t *o, const char *type, const seen_event_t **first) {
    int n = 0;
    for (int i = 0; i < o->nevents; i++)
        if (is(o->events[i].type, type) && n++ == 0 && first)
            *first = &o->events[i];
    return n;
}

/* Exactly want distinct events of type, whose payload names ref (when given). */
static void expect_events(const order_row_t *o, const char *type, int want, const char *ref,
                          const seen_event_t **first) {
    const seen_event_t *e = NULL;
    int n = count_type(o, type, &e);
    if (first)
        *first = e;
    if (n != want)
        chaos_violation("wrong number of distinct events", "order %s: %d %s, expected %d", o->id,
                        n, type, want);
    else if (n > 0 && ref && *ref && !is(e->ref, ref))
        chaos_violation("event names another entity than the database", "order %s: %s names %s, "
                        "database %s", o->id, type, e->ref, ref);
}

/* The cancel's own events: one request when one was asked, then exactly one
 * verdict, a win or a refusal, and a refund for a cancelled paid order. */
static void check_cancel_events(const order_row_t *o, bool authorized) {
    bool asked = o->cancel_status[0] != '\0';
    expect_events(o, DETA_EVT_ORDER_CANCEL_REQUESTED, asked, NULL, NULL);
    int won = count_type(o, DETA_EVT_INVENTORY_CANCELLED, NULL) +
              count_type(o, DETA_EVT_PAYMENT_CANCELLED, NULL) +
              count_type(o, DETA_EVT_DELIVERY_CANCELLED, NULL);
    int lost = count_type(o, DETA_EVT_INVENTORY_CANCEL_REFUSED, NULL) +
               count_type(o, DETA_EVT_PAYMENT_CANCEL_REFUSED, NULL) +
               count_type(o, DETA_EVT_DELIVERY_CANCEL_REFUSED, NULL);
    bool refused = is(o->cancel_status, "REFUSED");
    if (won != (cancelled(o) ? 1 : 0) || lost != (refused ? 1 : 0))
        chaos_violation("cancel verdict events wrong", "order %s: cancel %s, %d win(s), %d "
                        "refusal(s) on the topics", o->id, asked ? o->cancel_status : "not asked",
                        won, lost);
    expect_events(o, DETA_EVT_PAYMENT_REFUNDED, cancelled(o) && authorized, NULL, NULL);
}

static void check_events(const order_row_t *o, bool cancel_readable) {
    bool rejected = is(o->res_status, "REJECTED");
    bool authorized = o->npay == 1 && is(o->pay_status, "AUTHORIZED");
    bool declined = o->npay == 1 && is(o->pay_status, "DECLINED");
    bool gone = cancelled(o);
    bool reserved = !rejected && !is(o->res_status, "CANCELLED");
    bool released = is(o->res_status, "RELEASED");
    /* a cancelled order's delivery stops at its assignment (or before) */
    int delivery_steps = gone ? o->ndel : authorized;
    expect_events(o, DETA_EVT_ORDER_CREATED, 1, NULL, NULL);
    expect_events(o, DETA_EVT_INVENTORY_REJECTED, rejected, NULL, NULL);
    expect_events(o, DETA_EVT_INVENTORY_RESERVED, reserved, o->res_id, NULL);
    expect_events(o, DETA_EVT_INVENTORY_RELEASED, declined || released, o->res_id, NULL);
    expect_events(o, DETA_EVT_PAYMENT_AUTHORIZED, authorized, o->pay_id, NULL);
    expect_events(o, DETA_EVT_PAYMENT_FAILED, declined, o->pay_id, NULL);
    const seen_event_t *a = NULL, *p = NULL, *d = NULL;
    expect_events(o, DETA_EVT_DELIVERY_ASSIGNED, delivery_steps, o->del_id, &a);
    expect_events(o, DETA_EVT_DELIVERY_PICKED_UP, gone ? 0 : authorized, o->del_id, &p);
    expect_events(o, DETA_EVT_DELIVERY_DELIVERED, gone ? 0 : authorized, o->del_id, &d);
    expect_events(o, DETA_EVT_ETA_UPDATED, gone ? o->ndel : authorized ? 3 : 0, o->del_id, NULL);
    if (cancel_readable)
        check_cancel_events(o, authorized);
    if (o->v_timeline != o->nevents)
        chaos_violation("read model timeline differs from the topics", "order %s: %ld events in "
                        "order_events, %d distinct on the topics", o->id, o->v_timeline,
                        o->nevents);
    /* an order that waited for a driver did so once, before its assignment */
    const seen_event_t *w = NULL;
    int waited = count_type(o, DETA_EVT_DELIVERY_WAITING, &w);
    if (waited > (authorized ? 1 : 0) || (w && a && w->offset > a->offset))
        chaos_violation("delivery.waiting out of place", "order %s: %d delivery.waiting, "
                        "authorized %d", o->id, waited, authorized);
    if (a && p && d && !(a->offset < p->offset && p->offset < d->offset))
        chaos_violation("delivery steps out of order", "order %s: assigned at %lld, picked up at "
                        "%lld, delivered at %lld", o->id, (long long)a->offset,
                        (long long)p->offset, (long long)d->offset);
}

static void check_topics(snapshot_t *s, chaos_tap_t *tap) {
    if (!chaos_tap_finish(tap, KAFKA_SCAN_MS))
        return; /* violations said; checks on a partial log would only add noise */
    const chaos_tap_msg_t *msgs;
    size_t read = chaos_tap_messages(tap, &msgs);
    for (size_t i = 0; i < read; i++) {
        if (msgs[i].dlq)
            visit_dlq(&msgs[i], s);
        else
            visit_raw(&msgs[i], s);
    }
    printf("chaos: %zu messages read from the raw and dlq topics\n", read);
    for (size_t i = 0; i < s->n; i++)
        if (s->orders[i].nres == 1)
            check_events(&s->orders[i], s->cancel_readable);
}

/* ---- the gateway's ledger ---- */

/* Counts each order's charges in the ledger (the run's stack is its own, so a
 * line whose key is no order of the snapshot is some other run's). */
static bool load_charges(snapshot_t *s) {
    const char *path = getenv("PAYMENT_GATEWAY_LEDGER");
    FILE *f = path && *path ? fopen(path, "r") : NULL;
    if (!f) {
        chaos_violation("the gateway's ledger cannot be read", "PAYMENT_GATEWAY_LEDGER=%s",
                        path ? path : "(unset)");
        return false;
    }
    char line[512], key[40], status[TXT];
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "refund %39s %47s", key, status) == 2) {
            order_row_t *o = find_order(s, key);
            if (o && o->ledger_refunds++ == 0)
                snprintf(o->ledger_refund_amount, TXT, "%s", status);
            continue;
        }
        if (sscanf(line, "charge %39s %47s", key, status) != 2)
            continue;
        order_row_t *o = find_order(s, key);
        if (o && o->charges++ == 0)
            snprintf(o->charge_status, sizeof o->charge_status, "%s", status);
    }
    fclose(f);
    return true;
}

static void check_charges(const order_row_t *o) {
    bool charged = o->npay == 1 && !is(o->pay_reason, "DECLINED_HOLD_EXPIRED");
    if (o->charges != (charged ? 1 : 0))
        chaos_violation(charged ? "charged order without exactly one gateway charge"
                                : "gateway charge for an order without a charged payment",
                        "order %s: %d charge(s), %d payment(s) %s", o->id, o->charges, o->npay,
                        o->pay_status);
    else if (charged && !is(o->charge_status, o->pay_status))
        chaos_violation("payment disagrees with the gateway's charge",
                        "order %s: payment %s, charge %s", o->id, o->pay_status,
                        o->charge_status);
}

/* ---- the cancellation and the keys (issue #14) ---- */

/* A cancelled order left nothing behind; a refused one ended some other way;
 * refunds only for cancelled paid orders, once, of the whole charge. */
static void check_cancellation(const chaos_run_t *run, const order_row_t *o) {
    bool authorized = o->npay == 1 && is(o->pay_status, "AUTHORIZED");
    if (is(o->v_status, DETA_STATE_CANCELLED) != cancelled(o))
        chaos_violation("read model CANCELLED differs from order-service", "order %s: view %s, "
                        "cancel_status %s", o->id, o->v_status, o->cancel_status);
    if (cancelled(o)) {
        bool released = is(o->res_status, "RELEASED") && is(o->res_reason, "ORDER_CANCELLED");
        if (!released && !is(o->res_status, "CANCELLED") && !is(o->res_status, "REJECTED") &&
            !is(o->res_status, "UNFULFILLABLE"))
            chaos_violation("cancelled order keeps its stock", "order %s: reservation %s (%s)",
                            o->id, o->res_status, o->res_reason);
        if (active_delivery(o) || (o->ndel == 1 && !is(o->del_status, "CANCELLED")) ||
            o->nwaiting)
            chaos_violation("cancelled order still in delivery", "order %s: delivery %s, %d in "
                            "the queue", o->id, o->ndel ? o->del_status : "none", o->nwaiting);
        if (authorized && o->ncancelled_rec != 1)
            chaos_violation("cancelled paid order not in cancelled_orders", "order %s: %d rows",
                            o->id, o->ncancelled_rec);
        if (authorized && (o->nref != 1 || !is(o->ref_amount, o->pay_amount)))
            chaos_violation("cancelled paid order not refunded its charge", "order %s: %d "
                            "refund(s) of %s, charge %s", o->id, o->nref, o->ref_amount,
                            o->pay_amount);
        if (!authorized && o->nref)
            chaos_violation("refund without a charge", "order %s: payment %s", o->id,
                            o->npay ? o->pay_status : "none");
    } else {
        if (o->nref)
            chaos_violation("refund for an order not cancelled", "order %s: %s refunded, cancel "
                            "%s", o->id, o->ref_amount, o->cancel_status);
        if (o->ncancelled_rec)
            chaos_violation("order in cancelled_orders not cancelled", "order %s", o->id);
    }
    if (is(o->cancel_status, "REFUSED") && !is(o->v_status, DETA_STATE_DELIVERED) &&
        !is(o->v_status, DETA_STATE_INVENTORY_REJECTED) &&
        !is(o->v_status, DETA_STATE_PAYMENT_FAILED))
        chaos_violation("refused cancel but the order did not end otherwise", "order %s: %s",
                        o->id, o->v_status);
    /* what the load asked: a cancel it was told was taken must be on record */
    const chaos_order_t *c = o->idx >= 0 ? &run->orders[o->idx] : NULL;
    if (c && c->cancel_sent && !o->cancel_status[0] &&
        (c->cancel_outcome == DETA_OUTCOME_REQUESTED || c->cancel_outcome == DETA_OUTCOME_CANCELLED))
        chaos_violation("cancel answered 202/200 but not recorded", "order %s", o->id);
    if (c && !c->cancel_sent && o->cancel_status[0])
        chaos_violation("cancel recorded that no client asked", "order %s: %s", o->id,
                        o->cancel_status);
}

/* The gateway refunds each order at most once, and exactly as the refunds rows say. */
static void check_ledger_refunds(const order_row_t *o) {
    if (o->ledger_refunds > 1)
        chaos_violation("payment refunded twice at the gateway", "order %s: %d refunds", o->id,
                        o->ledger_refunds);
    else if (o->ledger_refunds != o->nref ||
             (o->nref && !is(o->ledger_refund_amount, o->ref_amount)))
        chaos_violation("gateway refunds differ from the refunds rows", "order %s: ledger %d of "
                        "%s, rows %d of %s", o->id, o->ledger_refunds, o->ledger_refund_amount,
                        o->nref, o->ref_amount);
}

/* Every key the load issued names exactly one order, the one of its plan index,
 * and every intended order exists: a killed order-service lost and doubled
 * nothing. (No order exists twice for one key: a customer with two orders is
 * "order created twice" in check_client_view.) */
static void check_keys(const chaos_run_t *run, const snapshot_t *s) {
    long *order_of = malloc((size_t)run->s.orders * sizeof *order_of);
    if (!order_of)
        return;
    for (long i = 0; i < run->s.orders; i++)
        order_of[i] = -1;
    for (size_t k = 0; k < s->n; k++)
        if (s->orders[k].idx >= 0)
            order_of[s->orders[k].idx] = (long)k;
    long missing = 0;
    for (long i = 0; i < run->s.orders; i++) {
        const chaos_order_t *c = &run->orders[i];
        if (!c->key[0])
            continue; /* CHAOS_VERIFY_ONLY: the keys were the clients' */
        if (order_of[i] < 0) {
            missing++;
            chaos_violation("intended order not created", "plan %ld (key %s): no order", i,
                            c->key);
            continue;
        }
        const order_row_t *o = &s->orders[order_of[i]];
        if (s->cancel_readable && (o->nkey != 1 || !is(o->key, c->key)))
            chaos_violation("key without exactly its one order", "plan %ld: key %s, order %s "
                            "has %d key row(s) (%s)", i, c->key, o->id, o->nkey, o->key);
    }
    if (missing == 0)
        printf("chaos: every intended order exists, once\n");
    free(order_of);
}

/* ---- the whole ---- */

static void print_outcomes(const snapshot_t *s) {
    long rejected = 0, failed = 0, delivered = 0, other = 0, gone = 0, refused = 0;
    for (size_t i = 0; i < s->n; i++) {
        const order_row_t *o = &s->orders[i];
        refused += is(o->cancel_status, "REFUSED");
        if (pending_stage(o))
            other++;
        else if (cancelled(o))
            gone++;
        else if (is(o->res_status, "REJECTED"))
            rejected++;
        else if (is(o->pay_status, "DECLINED"))
            failed++;
        else
            delivered++;
    }
    printf("chaos: %zu orders in order_db: %ld delivered, %ld rejected, %ld payment failed, "
           "%ld cancelled, %ld unfinished; %ld cancels refused\n",
           s->n, delivered, rejected, failed, gone, other, refused);
}

double chaos_converge_and_verify(chaos_run_t *run, chaos_tap_t *tap) {
    snapshot_t s;
    memset(&s, 0, sizeof s);
    double waited = converge(run, &s);
    if (!s.orders)
        return waited;
    print_outcomes(&s);
    bool gateway = default_gateway();
    check_client_view(run, &s);
    for (size_t i = 0; i < s.n; i++) {
        check_write_side(run, &s.orders[i], gateway);
        check_view(&s.orders[i]);
    }
    check_keys(run, &s);
    if (!s.cancel_readable)
        chaos_violation("cancellation tables unreadable", "orders.cancel_status, refunds, "
                        "cancelled_orders, order_view.refunded_amount or idempotency_keys");
    for (size_t i = 0; s.cancel_readable && i < s.n; i++)
        check_cancellation(run, &s.orders[i]);
    if (load_charges(&s))
        for (size_t i = 0; i < s.n; i++) {
            check_charges(&s.orders[i]);
            if (s.cancel_readable)
                check_ledger_refunds(&s.orders[i]);
        }
    check_stock(run, &s);
    check_drivers();
    check_topics(&s, tap);
    snapshot_free(&s);
    return waited;
}

/*
 * read_model_cql.c - the read model in Cassandra (QUERY_STORE=cassandra): the
 * implementation of read_model.h over libdeta's CQL client (deta/cql.h). The
 * design, its reasoning and its costs: docs/read-model-cassandra.md.
 *
 * The fold is query_view_merge() itself. Applying an event reads the order's row,
 * merges the event in C and writes the row back with a lightweight transaction:
 * INSERT ... IF NOT EXISTS for a new order (first_seen_at is set then), else
 * UPDATE ... IF version = <the version read>, version + 1. A transaction that
 * loses a race merges again from the row that won (the refused INSERT's answer
 * carries it; a refused UPDATE's carries only the version, so the row is read
 * again at the serial consistency) and tries again, up to LWT_TRIES times. So the
 * row always equals the C fold of the events applied, in whatever order they came,
 * by construction. An event that changes nothing writes no row.
 *
 * Then one UNLOGGED BATCH writes the event's timeline row and the list keys of
 * the row's current state (always, even when nothing changed, so that a
 * redelivery after a crash between the two writes repairs them) and deletes the
 * list keys of the state the row left (old status, old customer).
 *
 * The list tables hold keys only. A page reads keys newest first, scope by scope
 * day by day (order_list_buckets), then the views of those keys with one SELECT
 * ... IN (a statement per count of keys, prepared on demand), and answers in the
 * keys' order. A status or customer key can be stale (the state moved and its
 * delete has not run yet, or never will after a crash): the view says so, and the
 * key is skipped, and deleted when the view proves it is past it.
 *
 * read_model_apply ignores the Postgres transaction: the consumer's claim stays
 * in Postgres, and every write here is idempotent, so an event whose claim rolls
 * back after these writes folds to the same row when it comes again.
 *
 * Consistency: reads at CASSANDRA_READ_CONSISTENCY, writes and the lightweight
 * transactions' commits at CASSANDRA_WRITE_CONSISTENCY, their Paxos at
 * CASSANDRA_SERIAL_CONSISTENCY; the node-local system tables at ONE. Every
 * statement names its keyspace, so connections need no USE.
 *
 * Errors: the client's classes (deta/cql.h) pass through: TRANSIENT (the node is
 * away, overloaded, unavailable, timed out) and INTERNAL (a statement refused: a
 * bug or a misconfiguration). The consumer dead-letters a message whose handler
 * failed transiently max_retries times while the service's required health
 * checks were up; Cassandra refusing writes must never do that. So an apply that
 * failed transiently makes read_model_ping (the required check "readModel") say
 * DOWN until an apply succeeds, or for FAILING_MS after the last such failure:
 * the consumer then waits the store out without counting retries, as it does for
 * Postgres.
 */
#include "read_model.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deta/clock.h"
#include "deta/cql.h"
#include "deta/log.h"
#include "read_model_cql.h"

#define LWT_TRIES 10          /* lost races before an apply gives up (TRANSIENT) */
#define STATS_PAGE 5000       /* rows per page of the stats scan (tests: set_stats_page) */
#define BUCKETS_PAGE 64       /* days read per query of a scope's buckets */
#define AGREEMENT_MS 10000    /* the longest wait for schema agreement */
#define FAILING_MS 10000      /* how long a failed apply keeps the store DOWN */
#define DAY_US 86400000000LL
#define CQL_SETS_MAX 1024     /* "col = ?, ..." of the view's UPDATE */
#define SCOPE_MAX (sizeof "customer:" + DETA_ID_MAX)

/* ---- the clock (first_seen_at) ---- */

static int64_t wall_clock_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t (*now_us)(void) = wall_clock_us;

void read_model_cql_set_clock(int64_t (*fn)(void)) { now_us = fn ? fn : wall_clock_us; }

static int32_t stats_page = STATS_PAGE;

void read_model_cql_set_stats_page(int32_t rows) { stats_page = rows > 0 ? rows : STATS_PAGE; }

/* ---- the view's columns ---- */

typedef enum col_kind { COL_UUID, COL_TEXT, COL_INSTANT } col_kind_t;

typedef struct view_col {
    const char *name;
    col_kind_t kind;
    size_t offset;
    size_t size;
} view_col_t;

#define C(m, kind) {#m, kind, offsetof(query_view_t, m), sizeof(((query_view_t *)0)->m)}
/* Every text column of query_view_t; order_id first, first_seen_at last (the two
 * that never change once the row exists). */
static const view_col_t view_cols[] = {
    C(order_id, COL_UUID),
    C(customer_id, COL_TEXT),
    C(total_amount, COL_TEXT),
    C(currency, COL_TEXT),
    C(status, COL_TEXT),
    C(created_at, COL_INSTANT),
    C(updated_at, COL_INSTANT),
    C(reservation_id, COL_TEXT),
    C(payment_id, COL_TEXT),
    C(delivery_id, COL_TEXT),
    C(driver_id, COL_TEXT),
    C(driver_name, COL_TEXT),
    C(estimated_delivery_at, COL_INSTANT),
    C(eta_calculated_at, COL_INSTANT),
    C(delivered_at, COL_INSTANT),
    C(failure_reason, COL_TEXT),
    C(correlation_id, COL_TEXT),
    C(cancelled_at, COL_INSTANT),
    C(refunded_amount, COL_TEXT),
    C(first_seen_at, COL_INSTANT),
};
#undef C
#define NCOLS (sizeof view_cols / sizeof *view_cols)
#define COL_FIRST_SEEN (NCOLS - 1)

static char *field(query_view_t *v, const view_col_t *c) { return (char *)v + c->offset; }
static const char *cfield(const query_view_t *v, const view_col_t *c) {
    return (const char *)v + c->offset;
}

static bool views_equal(const query_view_t *a, const query_view_t *b) {
    for (size_t i = 0; i < NCOLS; i++)
        if (strcmp(cfield(a, &view_cols[i]), cfield(b, &view_cols[i])) != 0)
            return false;
    return a->status_rank == b->status_rank;
}

/* ---- the store ---- */

typedef struct cql_model {
    deta_service_t *svc;
    query_cassandra_settings_t cfg;
    deta_cql_pool_t *pool;
    deta_cql_consistency_t read_cl, write_cl, serial_cl;
    /* the applies' health: the last transient failure and the last success */
    pthread_mutex_t lock;
    long failed_ms, applied_ms;
    char failure[256];
    /* the statements, with the keyspace in them */
    char select_view[1024];
    char insert_view[1024];
    char update_view[CQL_SETS_MAX + 128]; /* the SET list, the keyspace and the rest */
    char insert_event[256];
    char insert_key[256];
    char insert_bucket[256];
    char delete_key[256];
    char select_keys[256];
    char select_keys_after[256];
    char select_buckets[256];
    char select_buckets_upto[256];
    char select_timeline[256];
    char select_statuses[128];
    char select_meta[128];
    char insert_meta[128];
} cql_model_t;

/* "a, b, c" of the view's columns, then status_rank and version. */
static void column_list(char *out, size_t size) {
    size_t used = 0;
    for (size_t i = 0; i < NCOLS; i++)
        used += (size_t)snprintf(out + used, size - used, "%s, ", view_cols[i].name);
    snprintf(out + used, size - used, "status_rank, version");
}

static void build_statements(cql_model_t *m) {
    const char *ks = m->cfg.keyspace;
    char cols[512], marks[128] = "", sets[CQL_SETS_MAX] = "";
    column_list(cols, sizeof cols);
    size_t used = 0;
    for (size_t i = 0; i < NCOLS + 2; i++)
        used += (size_t)snprintf(marks + used, sizeof marks - used, "%s?", i ? ", " : "");
    used = 0;
    for (size_t i = 1; i < COL_FIRST_SEEN; i++)
        used += (size_t)snprintf(sets + used, sizeof sets - used, "%s = ?, ", view_cols[i].name);
    snprintf(sets + used, sizeof sets - used, "status_rank = ?, version = ?");
    snprintf(m->select_view, sizeof m->select_view,
             "SELECT %s FROM %s.order_view WHERE order_id = ?", cols, ks);
    snprintf(m->insert_view, sizeof m->insert_view,
             "INSERT INTO %s.order_view (%s) VALUES (%s) IF NOT EXISTS", ks, cols, marks);
    snprintf(m->update_view, sizeof m->update_view,
             "UPDATE %s.order_view SET %s WHERE order_id = ? IF version = ?", ks, sets);
    snprintf(m->insert_event, sizeof m->insert_event,
             "INSERT INTO %s.order_events (order_id, occurred_at, event_id, event_type, "
             "topic, payload) VALUES (?, ?, ?, ?, ?, ?)", ks);
    snprintf(m->insert_key, sizeof m->insert_key,
             "INSERT INTO %s.order_list (scope, bucket, first_seen_at, order_id) "
             "VALUES (?, ?, ?, ?)", ks);
    snprintf(m->insert_bucket, sizeof m->insert_bucket,
             "INSERT INTO %s.order_list_buckets (scope, bucket) VALUES (?, ?)", ks);
    snprintf(m->delete_key, sizeof m->delete_key,
             "DELETE FROM %s.order_list WHERE scope = ? AND bucket = ? AND first_seen_at = ? "
             "AND order_id = ?", ks);
    snprintf(m->select_keys, sizeof m->select_keys,
             "SELECT first_seen_at, order_id FROM %s.order_list WHERE scope = ? AND bucket = ? "
             "LIMIT ?", ks);
    snprintf(m->select_keys_after, sizeof m->select_keys_after,
             "SELECT first_seen_at, order_id FROM %s.order_list WHERE scope = ? AND bucket = ? "
             "AND (first_seen_at, order_id) < (?, ?) LIMIT ?", ks);
    snprintf(m->select_buckets, sizeof m->select_buckets,
             "SELECT bucket FROM %s.order_list_buckets WHERE scope = ? LIMIT ?", ks);
    snprintf(m->select_buckets_upto, sizeof m->select_buckets_upto,
             "SELECT bucket FROM %s.order_list_buckets WHERE scope = ? AND bucket <= ? LIMIT ?",
             ks);
    snprintf(m->select_timeline, sizeof m->select_timeline,
             "SELECT event_id, event_type, topic, occurred_at, payload FROM %s.order_events "
             "WHERE order_id = ? LIMIT ?", ks);
    snprintf(m->select_statuses, sizeof m->select_statuses, "SELECT status FROM %s.order_view",
             ks);
    snprintf(m->select_meta, sizeof m->select_meta,
             "SELECT version FROM %s.schema_meta WHERE name = ?", ks);
    snprintf(m->insert_meta, sizeof m->insert_meta,
             "INSERT INTO %s.schema_meta (name, version) VALUES (?, ?)", ks);
}

static void *cql_open(deta_service_t *svc, const query_settings_t *settings, char *errstr,
                      size_t errsize) {
    cql_model_t *m = calloc(1, sizeof *m);
    if (!m) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return NULL;
    }
    m->svc = svc;
    m->cfg = settings->cassandra;
    m->read_cl = (deta_cql_consistency_t)m->cfg.read_consistency;
    m->write_cl = (deta_cql_consistency_t)m->cfg.write_consistency;
    m->serial_cl = (deta_cql_consistency_t)m->cfg.serial_consistency;
    deta_cql_settings_t cs = {
        .contact_points = m->cfg.contact_points,
        .port = m->cfg.port,
        .username = m->cfg.username,
        .password = m->cfg.password,
        .local_dc = m->cfg.local_dc,
        .request_timeout_ms = m->cfg.request_timeout_ms,
    };
    char why[256] = "";
    m->pool = deta_cql_pool_new(&cs, why, sizeof why);
    if (!m->pool) {
        deta_errf(DETA_ERR_INVALID, errstr, errsize, "CASSANDRA_CONTACT_POINTS: %s", why);
        memset(&m->cfg, 0, sizeof m->cfg);
        free(m);
        return NULL;
    }
    build_statements(m);
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

static void cql_close(void *impl) {
    cql_model_t *m = impl;
    if (!m)
        return;
    deta_cql_pool_free(m->pool);
    memset(&m->cfg, 0, sizeof m->cfg); /* the password */
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* The calling thread's connection. */
static deta_cql_t *conn(cql_model_t *m, deta_err_t *err, char *errstr, size_t errsize) {
    deta_cql_t *c = deta_cql_pool_get(m->pool);
    if (!c)
        *err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    return c;
}

/* A client error as the store reports it: the class kept, a malformed answer
 * (the getters' INVALID) or Already_exists made INTERNAL. */
static deta_err_t store_err(deta_err_t err) {
    return err == DETA_OK || err == DETA_ERR_TRANSIENT ? err : DETA_ERR_INTERNAL;
}

/* EXECUTE of a statement the connection prepares once. */
static deta_err_t run(deta_cql_t *c, const char *cql, const deta_cql_value_t *values, size_t n,
                      deta_cql_consistency_t cl, deta_cql_result_t *out, char *errstr,
                      size_t errsize) {
    deta_cql_query_t q = {.cql = cql, .values = values, .nvalues = n, .consistency = cl};
    memset(out, 0, sizeof *out);
    deta_err_t err = deta_cql_execute(c, &q, out, errstr, errsize);
    return err ? store_err(err) : DETA_OK;
}

/* The same for a lightweight transaction: the serial consistency set. */
static deta_err_t run_lwt(cql_model_t *m, deta_cql_t *c, const char *cql,
                          const deta_cql_value_t *values, size_t n, deta_cql_result_t *out,
                          char *errstr, size_t errsize) {
    deta_cql_query_t q = {.cql = cql,
                          .values = values,
                          .nvalues = n,
                          .consistency = m->write_cl,
                          .has_serial = true,
                          .serial_consistency = m->serial_cl};
    memset(out, 0, sizeof *out);
    deta_err_t err = deta_cql_execute(c, &q, out, errstr, errsize);
    return err ? store_err(err) : DETA_OK;
}

static deta_err_t malformed(char *errstr, size_t errsize, const char *what) {
    return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cassandra answered %s", what);
}

/* Column `name` of the answer, or -1 after an error. */
static int column(const deta_cql_result_t *r, const char *name, deta_err_t *err, char *errstr,
                  size_t errsize) {
    int i = deta_cql_column_index(r, name);
    if (i < 0)
        *err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize,
                         "cassandra's answer has no column %s", name);
    return i;
}

/* ---- rows and values ---- */

static deta_err_t instant_cell(const deta_cql_result_t *r, size_t row, int col, char *dst,
                               char *errstr, size_t errsize) {
    int64_t us = 0;
    bool null = false;
    deta_err_t err = deta_cql_get_bigint(r, row, (size_t)col, &us, &null, errstr, errsize);
    dst[0] = '\0';
    if (!err && !null)
        deta_timestamp_from_us(us, dst);
    return err;
}

/* Row `row` of an answer holding the view's columns (found by name: a refused
 * INSERT's answer lists them in its own order); *version when not NULL. */
static deta_err_t view_from_row(const deta_cql_result_t *r, size_t row, query_view_t *v,
                                int64_t *version, char *errstr, size_t errsize) {
    memset(v, 0, sizeof *v);
    deta_err_t err = DETA_OK;
    for (size_t i = 0; i < NCOLS && !err; i++) {
        const view_col_t *c = &view_cols[i];
        int col = column(r, c->name, &err, errstr, errsize);
        if (err)
            break;
        char uuid[37];
        switch (c->kind) {
        case COL_UUID:
            err = deta_cql_get_uuid(r, row, (size_t)col, uuid, NULL, errstr, errsize);
            if (!err)
                snprintf(field(v, c), c->size, "%s", uuid);
            break;
        case COL_TEXT:
            err = deta_cql_get_text(r, row, (size_t)col, field(v, c), c->size, NULL, errstr,
                                    errsize);
            break;
        case COL_INSTANT:
            err = instant_cell(r, row, col, field(v, c), errstr, errsize);
            break;
        }
    }
    int rank_col = err ? -1 : column(r, "status_rank", &err, errstr, errsize);
    if (!err) {
        int32_t rank = 0;
        err = deta_cql_get_int(r, row, (size_t)rank_col, &rank, NULL, errstr, errsize);
        v->status_rank = rank;
    }
    if (!err && version) {
        int col = column(r, "version", &err, errstr, errsize);
        if (!err)
            err = deta_cql_get_bigint(r, row, (size_t)col, version, NULL, errstr, errsize);
    }
    return err ? store_err(err) : DETA_OK;
}

/* Column c of v as a bound value: empty is `absent` (null, or not set). Text is
 * borrowed from v. */
static deta_cql_value_t col_value(const view_col_t *c, const query_view_t *v,
                                  deta_cql_value_t absent) {
    const char *s = cfield(v, c);
    if (!s[0])
        return absent;
    deta_cql_value_t out = absent;
    int64_t us;
    switch (c->kind) {
    case COL_UUID:
        if (!deta_cql_uuid_text(s, &out))
            out = absent;
        break;
    case COL_TEXT:
        out = deta_cql_text(s);
        break;
    case COL_INSTANT:
        if (deta_timestamp_us(s, &us))
            out = deta_cql_bigint(us);
        break;
    }
    return out;
}

static int64_t day_of(int64_t us) { return us >= 0 ? us / DAY_US : -((-us + DAY_US - 1) / DAY_US); }

/* ---- apply ---- */

/* The order's row at consistency cl; *exists false when there is none. */
static deta_err_t read_view(cql_model_t *m, deta_cql_t *c, const char *order_id,
                            deta_cql_consistency_t cl, query_view_t *v, int64_t *version,
                            bool *exists, char *errstr, size_t errsize) {
    deta_cql_value_t id;
    if (!deta_cql_uuid_text(order_id, &id))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "order id %s is not a UUID",
                         order_id);
    deta_cql_result_t r;
    deta_err_t err = run(c, m->select_view, &id, 1, cl, &r, errstr, errsize);
    if (err)
        return err;
    *exists = r.nrows > 0;
    if (*exists)
        err = view_from_row(&r, 0, v, version, errstr, errsize);
    else
        memset(v, 0, sizeof *v);
    deta_cql_result_clear(&r);
    return err;
}

/* [applied] of a lightweight transaction's answer. */
static deta_err_t lwt_applied(const deta_cql_result_t *r, bool *applied, char *errstr,
                              size_t errsize) {
    deta_err_t err = DETA_OK;
    int col = column(r, "[applied]", &err, errstr, errsize);
    if (err)
        return err;
    if (r->nrows != 1)
        return malformed(errstr, errsize, "a lightweight transaction without one row");
    err = deta_cql_get_bool(r, 0, (size_t)col, applied, NULL, errstr, errsize);
    return err ? store_err(err) : DETA_OK;
}

/* INSERT IF NOT EXISTS of a new row. Refused: *cur becomes the row that exists
 * (the answer carries it). */
static deta_err_t insert_view(cql_model_t *m, deta_cql_t *c, const query_view_t *next,
                              bool *applied, query_view_t *cur, int64_t *version,
                              char *errstr, size_t errsize) {
    deta_cql_value_t vals[NCOLS + 2];
    for (size_t i = 0; i < NCOLS; i++)
        vals[i] = col_value(&view_cols[i], next, deta_cql_unset());
    vals[NCOLS] = deta_cql_int(next->status_rank);
    vals[NCOLS + 1] = deta_cql_bigint(1);
    deta_cql_result_t r;
    deta_err_t err = run_lwt(m, c, m->insert_view, vals, NCOLS + 2, &r, errstr, errsize);
    if (!err)
        err = lwt_applied(&r, applied, errstr, errsize);
    if (!err && !*applied)
        err = view_from_row(&r, 0, cur, version, errstr, errsize);
    deta_cql_result_clear(&r);
    return err;
}

/* UPDATE ... IF version = the version read: the columns that changed, the others
 * not set (the condition guarantees they are still what was read). */
static deta_err_t update_view(cql_model_t *m, deta_cql_t *c, const query_view_t *cur,
                              const query_view_t *next, int64_t version, bool *applied,
                              char *errstr, size_t errsize) {
    deta_cql_value_t vals[NCOLS + 2];
    size_t n = 0;
    for (size_t i = 1; i < COL_FIRST_SEEN; i++) {
        const view_col_t *col = &view_cols[i];
        bool same = strcmp(cfield(cur, col), cfield(next, col)) == 0;
        vals[n++] = same ? deta_cql_unset() : col_value(col, next, deta_cql_null());
    }
    vals[n++] = next->status_rank != cur->status_rank ? deta_cql_int(next->status_rank)
                                                      : deta_cql_unset();
    vals[n++] = deta_cql_bigint(version + 1);
    deta_cql_value_t id, expect = deta_cql_bigint(version);
    if (!deta_cql_uuid_text(next->order_id, &id))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "bad order id %s", next->order_id);
    deta_cql_value_t all[NCOLS + 2];
    memcpy(all, vals, n * sizeof *vals);
    all[n++] = id;
    all[n++] = expect;
    deta_cql_result_t r;
    deta_err_t err = run_lwt(m, c, m->update_view, all, n, &r, errstr, errsize);
    if (!err)
        err = lwt_applied(&r, applied, errstr, errsize);
    deta_cql_result_clear(&r);
    return err;
}

/* The list keys of a view: "all", its status's, its customer's. */
typedef struct list_keys {
    char scope[3][SCOPE_MAX];
    size_t n;
} list_keys_t;

static void keys_of(const query_view_t *v, list_keys_t *k) {
    k->n = 0;
    snprintf(k->scope[k->n++], SCOPE_MAX, "all");
    if (v->status[0])
        snprintf(k->scope[k->n++], SCOPE_MAX, "status:%s", v->status);
    if (v->customer_id[0])
        snprintf(k->scope[k->n++], SCOPE_MAX, "customer:%s", v->customer_id);
}

#define BATCH_MAX 9 /* timeline, 3 keys, 3 buckets, 2 deletes */

typedef struct batch_build {
    deta_cql_batch_item_t items[BATCH_MAX];
    deta_cql_value_t values[BATCH_MAX][6];
    char scopes[BATCH_MAX][SCOPE_MAX];
    size_t n;
} batch_build_t;

static deta_cql_value_t *batch_add(batch_build_t *b, const char *cql, size_t nvalues) {
    deta_cql_batch_item_t *it = &b->items[b->n];
    it->cql = cql;
    it->prepared = true;
    it->values = b->values[b->n];
    it->nvalues = nvalues;
    return b->values[b->n++];
}

/* A key of scope in the batch (insert, or delete), with its day's bucket. */
static void batch_key(cql_model_t *m, batch_build_t *b, const char *scope, bool del,
                      int64_t first_seen_us, const deta_cql_value_t *id) {
    snprintf(b->scopes[b->n], SCOPE_MAX, "%s", scope);
    const char *s = b->scopes[b->n];
    int32_t bucket = (int32_t)day_of(first_seen_us);
    deta_cql_value_t *v = batch_add(b, del ? m->delete_key : m->insert_key, 4);
    v[0] = deta_cql_text(s);
    v[1] = deta_cql_int(bucket);
    v[2] = deta_cql_bigint(first_seen_us);
    v[3] = *id;
    if (!del) {
        v = batch_add(b, m->insert_bucket, 2);
        v[0] = deta_cql_text(s);
        v[1] = deta_cql_int(bucket);
    }
}

/* The timeline row and the list keys of `now` (and the deletes of the keys of
 * `before` that `now` no longer has; before is NULL when nothing was written). */
static deta_err_t write_batch(cql_model_t *m, deta_cql_t *c, const query_change_t *ch,
                              const char *payload, const query_view_t *before,
                              const query_view_t *now, char *errstr, size_t errsize) {
    batch_build_t b = {.n = 0};
    deta_cql_value_t id, event_id;
    int64_t occurred_us, first_seen_us;
    if (!deta_cql_uuid_text(now->order_id, &id) || !deta_cql_uuid_text(ch->event_id, &event_id) ||
        !deta_timestamp_us(ch->occurred_at, &occurred_us) ||
        !deta_timestamp_us(now->first_seen_at, &first_seen_us))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "a view without its keys");
    deta_cql_value_t *v = batch_add(&b, m->insert_event, 6);
    v[0] = id;
    v[1] = deta_cql_bigint(occurred_us);
    v[2] = event_id;
    v[3] = deta_cql_text(ch->event_type);
    v[4] = deta_cql_text(ch->topic);
    v[5] = deta_cql_text(payload);
    list_keys_t keys;
    keys_of(now, &keys);
    for (size_t i = 0; i < keys.n; i++)
        batch_key(m, &b, keys.scope[i], false, first_seen_us, &id);
    if (before) {
        list_keys_t old;
        keys_of(before, &old);
        for (size_t i = 1; i < old.n; i++) {
            bool kept = false;
            for (size_t k = 1; k < keys.n; k++)
                kept |= strcmp(old.scope[i], keys.scope[k]) == 0;
            if (!kept)
                batch_key(m, &b, old.scope[i], true, first_seen_us, &id);
        }
    }
    deta_cql_batch_t batch = {.type = DETA_CQL_BATCH_UNLOGGED,
                              .items = b.items,
                              .nitems = b.n,
                              .consistency = m->write_cl};
    deta_cql_result_t r;
    memset(&r, 0, sizeof r);
    deta_err_t err = deta_cql_batch(c, &batch, &r, errstr, errsize);
    deta_cql_result_clear(&r);
    return err ? store_err(err) : DETA_OK;
}

static deta_err_t apply_once(cql_model_t *m, const query_change_t *ch, read_model_outcome_t *out,
                             char *errstr, size_t errsize);

/* The apply's outcome for read_model_ping (see the top of the file). */
static deta_err_t note_apply(cql_model_t *m, deta_err_t err, const char *why) {
    pthread_mutex_lock(&m->lock);
    if (err == DETA_OK) {
        m->applied_ms = deta_clock_ms();
    } else if (err == DETA_ERR_TRANSIENT) {
        m->failed_ms = deta_clock_ms();
        snprintf(m->failure, sizeof m->failure, "%s", why);
    }
    pthread_mutex_unlock(&m->lock);
    return err;
}

static deta_err_t cql_apply(void *impl, deta_db_t *tx, const query_change_t *ch,
                            read_model_outcome_t *out, char *errstr, size_t errsize) {
    (void)tx; /* see the top of the file: the claim is Postgres's, these writes idempotent */
    cql_model_t *m = impl;
    char why[512] = "";
    deta_err_t err = apply_once(m, ch, out, why, sizeof why);
    if (err)
        deta_errf(err, errstr, errsize, "%s", why);
    return note_apply(m, err, why);
}

static deta_err_t apply_once(cql_model_t *m, const query_change_t *ch, read_model_outcome_t *out,
                             char *errstr, size_t errsize) {
    memset(out, 0, sizeof *out);
    deta_err_t err = DETA_OK;
    deta_cql_t *c = conn(m, &err, errstr, errsize);
    if (!c)
        return err;
    query_view_t cur, next, before;
    int64_t version = 0;
    bool exists = false, written = false, moved = false;
    err = read_view(m, c, ch->fields.order_id, m->read_cl, &cur, &version, &exists, errstr,
                    errsize);
    int tries = 0;
    while (!err) {
        next = cur;
        moved = query_view_merge(&next, ch);
        if (exists && views_equal(&next, &cur))
            break; /* nothing new: no row to write */
        if (++tries > LWT_TRIES)
            return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                             "order %s: lost %d races to write its view", next.order_id,
                             LWT_TRIES);
        bool applied = false;
        if (!exists) {
            if (!next.first_seen_at[0])
                deta_timestamp_from_us(now_us(), next.first_seen_at);
            err = insert_view(m, c, &next, &applied, &cur, &version, errstr, errsize);
            exists = !applied || err; /* refused: cur is the row that won */
        } else {
            err = update_view(m, c, &cur, &next, version, &applied, errstr, errsize);
            if (!err && !applied) /* the answer holds the version only: read the winner */
                err = read_view(m, c, ch->fields.order_id, m->serial_cl, &cur, &version,
                                &exists, errstr, errsize);
        }
        if (!err && applied) {
            before = cur;
            written = true;
            cur = next;
            break;
        }
    }
    if (err)
        return err;
    if (!written)
        moved = false;
    char *payload = json_dumps(ch->payload, JSON_COMPACT);
    if (!payload)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot serialize the payload");
    bool had_row = written && before.order_id[0];
    err = write_batch(m, c, ch, payload, had_row ? &before : NULL, &cur, errstr, errsize);
    free(payload);
    if (err)
        return err;
    out->applied = true;
    out->status_changed = moved;
    snprintf(out->status, sizeof out->status, "%s", cur.status); /* the view now, for the feed */
    snprintf(out->customer_id, sizeof out->customer_id, "%s", cur.customer_id);
    if (!cur.created_at[0] || !deta_timestamp_us(cur.created_at, &out->created_us))
        out->created_us = 0;
    return DETA_OK;
}

/* ---- get, timeline, stats, ping ---- */

static deta_err_t cql_get(void *impl, const char *order_id, query_view_t *out, char *errstr,
                          size_t errsize) {
    cql_model_t *m = impl;
    deta_err_t err = DETA_OK;
    deta_cql_t *c = conn(m, &err, errstr, errsize);
    if (!c)
        return err;
    bool exists = false;
    int64_t version;
    err = read_view(m, c, order_id, m->read_cl, out, &version, &exists, errstr, errsize);
    if (!err && !exists)
        err = deta_errf(DETA_ERR_NOT_FOUND, errstr, errsize, "no order %s", order_id);
    return err;
}

static deta_err_t entry_from_row(const deta_cql_result_t *r, size_t row,
                                 query_timeline_entry_t *e, char *errstr, size_t errsize) {
    deta_err_t err;
    char uuid[37];
    if ((err = deta_cql_get_uuid(r, row, 0, uuid, NULL, errstr, errsize)))
        return store_err(err);
    snprintf(e->event_id, sizeof e->event_id, "%s", uuid);
    if ((err = deta_cql_get_text(r, row, 1, e->event_type, sizeof e->event_type, NULL, errstr,
                                 errsize)) ||
        (err = deta_cql_get_text(r, row, 2, e->topic, sizeof e->topic, NULL, errstr, errsize)) ||
        (err = instant_cell(r, row, 3, e->occurred_at, errstr, errsize)))
        return store_err(err);
    const deta_cql_cell_t *cell = deta_cql_cell(r, row, 4);
    if (!cell || cell->len < 0)
        return malformed(errstr, errsize, "an event without its payload");
    json_error_t jerr;
    e->payload = json_loadb((const char *)cell->data, (size_t)cell->len, JSON_DECODE_ANY, &jerr);
    if (!e->payload)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "bad payload JSON: %s", jerr.text);
    return DETA_OK;
}

static deta_err_t cql_timeline(void *impl, const char *order_id, query_timeline_t *out,
                               char *errstr, size_t errsize) {
    cql_model_t *m = impl;
    memset(out, 0, sizeof *out);
    deta_err_t err = DETA_OK;
    deta_cql_t *c = conn(m, &err, errstr, errsize);
    if (!c)
        return err;
    deta_cql_value_t vals[2];
    if (!deta_cql_uuid_text(order_id, &vals[0]))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "order id %s is not a UUID",
                         order_id);
    vals[1] = deta_cql_int(QUERY_TIMELINE_MAX);
    deta_cql_result_t r;
    if ((err = run(c, m->select_timeline, vals, 2, m->read_cl, &r, errstr, errsize)))
        return err;
    if (r.nrows == 0) {
        deta_cql_result_clear(&r);
        return deta_errf(DETA_ERR_NOT_FOUND, errstr, errsize, "no events for order %s",
                         order_id);
    }
    out->entries = calloc(r.nrows, sizeof *out->entries);
    if (!out->entries)
        err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    for (size_t i = 0; i < r.nrows && !err; i++) {
        err = entry_from_row(&r, i, &out->entries[i], errstr, errsize);
        if (!err)
            out->n = i + 1;
    }
    deta_cql_result_clear(&r);
    if (err)
        query_timeline_clear(out);
    return err;
}

/* A paged scan of every view's status: O(orders), see the docs. */
static deta_err_t cql_stats(void *impl, query_stats_t *out, char *errstr, size_t errsize) {
    cql_model_t *m = impl;
    memset(out, 0, sizeof *out);
    deta_err_t err = DETA_OK;
    deta_cql_t *c = conn(m, &err, errstr, errsize);
    if (!c)
        return err;
    uint8_t *state = NULL;
    size_t state_len = 0;
    do {
        deta_cql_query_t q = {.cql = m->select_statuses,
                              .consistency = m->read_cl,
                              .page_size = stats_page,
                              .paging_state = state,
                              .paging_state_len = state_len};
        deta_cql_result_t r;
        memset(&r, 0, sizeof r);
        err = deta_cql_execute(c, &q, &r, errstr, errsize);
        free(state);
        state = NULL;
        if (err)
            return store_err(err);
        for (size_t row = 0; row < r.nrows && !err; row++) {
            char status[DETA_STATE_MAX];
            bool null = false;
            err = deta_cql_get_text(&r, row, 0, status, sizeof status, &null, errstr, errsize);
            int i = 0;
            while (!null && i < DETA_STATES_COUNT && strcmp(deta_states[i], status) != 0)
                i++;
            if (!null && i < DETA_STATES_COUNT)
                out->by_status[i]++;
            else
                out->without_status++;
        }
        if (!err && r.has_more_pages && r.paging_state_len > 0) {
            state = malloc(r.paging_state_len);
            if (!state)
                err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
            else
                memcpy(state, r.paging_state, r.paging_state_len);
            state_len = r.paging_state_len;
        }
        deta_cql_result_clear(&r);
    } while (!err && state);
    free(state);
    return err ? store_err(err) : DETA_OK;
}

/* schema_meta's version, 0 when there is no row yet. */
static deta_err_t schema_version(cql_model_t *m, deta_cql_t *c, int32_t *version,
                                 char *errstr, size_t errsize) {
    deta_cql_value_t name = deta_cql_text("read_model");
    deta_cql_result_t r;
    deta_err_t err = run(c, m->select_meta, &name, 1, m->read_cl, &r, errstr, errsize);
    if (err)
        return err;
    *version = 0;
    if (r.nrows > 0)
        err = store_err(deta_cql_get_int(&r, 0, 0, version, NULL, errstr, errsize));
    deta_cql_result_clear(&r);
    return err;
}

static bool cql_ping(void *impl, char *detail, size_t detailsize) {
    cql_model_t *m = impl;
    pthread_mutex_lock(&m->lock);
    long since = deta_clock_ms() - m->failed_ms;
    bool failing = m->failed_ms > m->applied_ms && since < FAILING_MS;
    if (failing)
        snprintf(detail, detailsize, "cassandra: an event could not be applied %ld ms ago: %s",
                 since, m->failure);
    pthread_mutex_unlock(&m->lock);
    if (failing)
        return false;
    deta_err_t err = DETA_OK;
    deta_cql_t *c = conn(m, &err, detail, detailsize);
    int32_t version = 0;
    if (c)
        err = schema_version(m, c, &version, detail, detailsize);
    if (!c || err)
        return false;
    if (version < READ_MODEL_CQL_SCHEMA_VERSION) {
        snprintf(detail, detailsize, "cassandra: the read model's schema is incomplete");
        return false;
    }
    return true;
}

/* ---- prepare: the schema ---- */

/* Every node's schema_version (system.local and system.peers) is the same. */
static deta_err_t schema_agrees(deta_cql_t *c, bool *agree, char *errstr, size_t errsize) {
    static const char *const queries[] = {
        "SELECT schema_version FROM system.local WHERE key = 'local'",
        "SELECT schema_version FROM system.peers",
    };
    char first[37] = "";
    *agree = true;
    for (size_t q = 0; q < 2; q++) {
        deta_cql_query_t query = {.cql = queries[q], .consistency = DETA_CQL_ONE};
        deta_cql_result_t r;
        memset(&r, 0, sizeof r);
        deta_err_t err = deta_cql_query(c, &query, &r, errstr, errsize);
        if (err)
            return store_err(err);
        for (size_t row = 0; row < r.nrows && !err; row++) {
            char v[37];
            bool null = false;
            err = deta_cql_get_uuid(&r, row, 0, v, &null, errstr, errsize);
            if (!err && !null && !first[0])
                memcpy(first, v, sizeof v);
            else if (!err && !null && strcmp(first, v) != 0)
                *agree = false;
        }
        deta_cql_result_clear(&r);
        if (err)
            return store_err(err);
    }
    return DETA_OK;
}

/* Waits (bounded) until the nodes agree on the schema. A node that stays apart
 * (down since before the change) does not stop the start: after AGREEMENT_MS it is
 * logged and the next statement goes ahead, as the drivers do. */
static deta_err_t await_agreement(cql_model_t *m, deta_cql_t *c, char *errstr,
                                  size_t errsize) {
    for (int waited = 0;; waited += 200) {
        bool agree = false;
        deta_err_t err = schema_agrees(c, &agree, errstr, errsize);
        if (err || agree)
            return err;
        if (waited >= AGREEMENT_MS) {
            DETA_WARN("cassandra: no schema agreement after %d ms; going on", AGREEMENT_MS);
            return DETA_OK;
        }
        if (!m->svc)
            deta_sleep_ms(200);
        else if (deta_service_pause(m->svc, 200))
            return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize, "stopped");
    }
}

/* Whether a refused schema statement is an ALTER TABLE ... ADD of a column the
 * table has already (a keyspace made at the current schema, or a start that
 * stopped half way): Invalid, "Column with name 'x' already exists" (Cassandra
 * 4 and later; 3.x says "... conflicts with an existing column"). */
static bool column_exists(const deta_cql_t *c, const char *ddl, const char *why) {
    return strncmp(ddl, "ALTER TABLE ", 12) == 0 && strstr(ddl, " ADD ") &&
           deta_cql_last_error(c) == DETA_CQL_E_INVALID &&
           (strstr(why, "already exists") || strstr(why, "conflicts with an existing column"));
}

static deta_err_t create_schema(cql_model_t *m, deta_cql_t *c, char *errstr, size_t errsize) {
    deta_err_t err = DETA_OK;
    for (size_t i = 0; i < read_model_cql_ddl_count() && !err; i++) {
        char ddl[1024];
        if (!read_model_cql_ddl(i, &m->cfg, ddl, sizeof ddl))
            return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "schema statement %zu", i);
        deta_cql_query_t q = {.cql = ddl, .consistency = m->write_cl};
        deta_cql_result_t r;
        memset(&r, 0, sizeof r);
        err = deta_cql_query(c, &q, &r, errstr, errsize);
        deta_cql_result_clear(&r);
        if (err && column_exists(c, ddl, errstr)) {
            DETA_DEBUG("cassandra: %s: the column is there already", ddl);
            err = DETA_OK;
        }
        if (!err)
            err = await_agreement(m, c, errstr, errsize);
        else
            err = store_err(err);
    }
    if (err)
        return err;
    deta_cql_value_t vals[2] = {deta_cql_text("read_model"),
                                deta_cql_int(READ_MODEL_CQL_SCHEMA_VERSION)};
    deta_cql_result_t r;
    err = run(c, m->insert_meta, vals, 2, m->write_cl, &r, errstr, errsize);
    deta_cql_result_clear(&r);
    return err;
}

static deta_err_t cql_prepare(void *impl, char *errstr, size_t errsize) {
    cql_model_t *m = impl;
    deta_err_t err = DETA_OK;
    deta_cql_t *c = conn(m, &err, errstr, errsize);
    if (!c)
        return err;
    int backoff_ms = 100;
    for (;;) {
        char why[512] = "";
        err = create_schema(m, c, why, sizeof why);
        if (!err)
            return DETA_OK;
        if (err != DETA_ERR_TRANSIENT)
            return deta_errf(err, errstr, errsize, "cassandra: the read model's schema: %s", why);
        DETA_WARN("waiting for Cassandra (%s) to create the read model's schema: %s",
                  m->cfg.contact_points, why);
        if (!m->svc || deta_service_pause(m->svc, backoff_ms))
            return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                             "stopped while waiting for Cassandra: %s", why);
        backoff_ms = backoff_ms * 2 > 5000 ? 5000 : backoff_ms * 2;
    }
}

/* ---- the list ---- */

/* A key of a list scope, in the list's order. */
typedef struct list_key {
    int64_t first_seen_us;
    char order_id[DETA_UUID_LEN + 1];
} list_key_t;

typedef struct page_walk {
    cql_model_t *m;
    deta_cql_t *c;
    const query_list_params_t *p;
    char scope[SCOPE_MAX];
    bool by_status;   /* the scope is a status's: its keys may be stale */
    bool by_customer; /* the scope is a customer's: likewise */
    size_t want;      /* limit + 1: one more tells whether a page follows */
    query_view_t *items;
    size_t n;
    list_key_t stale[QUERY_LIMIT_MAX + 1]; /* keys to delete after the page */
    int32_t stale_bucket[QUERY_LIMIT_MAX + 1];
    size_t nstale;
    /* one read of keys and their views (here rather than on a thread's stack) */
    list_key_t keys[QUERY_LIMIT_MAX + 1];
    query_view_t views[QUERY_LIMIT_MAX + 1];
    bool found[QUERY_LIMIT_MAX + 1];
} page_walk_t;

/* Up to `limit` keys of a bucket, after `after` when not NULL. */
static deta_err_t read_keys(page_walk_t *w, int32_t bucket, const list_key_t *after,
                            int32_t limit, list_key_t *keys, size_t *nkeys, char *errstr,
                            size_t errsize) {
    deta_cql_value_t vals[5];
    size_t n = 0;
    vals[n++] = deta_cql_text(w->scope);
    vals[n++] = deta_cql_int(bucket);
    if (after) {
        vals[n++] = deta_cql_bigint(after->first_seen_us);
        if (!deta_cql_uuid_text(after->order_id, &vals[n++]))
            return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "bad key %s", after->order_id);
    }
    vals[n++] = deta_cql_int(limit);
    deta_cql_result_t r;
    deta_err_t err = run(w->c, after ? w->m->select_keys_after : w->m->select_keys, vals, n,
                         w->m->read_cl, &r, errstr, errsize);
    if (err)
        return err;
    *nkeys = 0;
    for (size_t row = 0; row < r.nrows && row < (size_t)limit && !err; row++) {
        err = deta_cql_get_bigint(&r, row, 0, &keys[row].first_seen_us, NULL, errstr, errsize);
        if (!err)
            err = deta_cql_get_uuid(&r, row, 1, keys[row].order_id, NULL, errstr, errsize);
        if (!err)
            *nkeys = row + 1;
    }
    deta_cql_result_clear(&r);
    return err ? store_err(err) : DETA_OK;
}

/* The views of keys, with one SELECT ... IN (a statement per number of keys);
 * views[i] is keys[i]'s, found[i] false when it has none. */
static deta_err_t read_views(page_walk_t *w, const list_key_t *keys, size_t n,
                             query_view_t *views, bool *found, char *errstr, size_t errsize) {
    char cols[512], cql[2048];
    column_list(cols, sizeof cols);
    int used = snprintf(cql, sizeof cql, "SELECT %s FROM %s.order_view WHERE order_id IN (",
                        cols, w->m->cfg.keyspace);
    deta_cql_value_t vals[QUERY_LIMIT_MAX + 1];
    for (size_t i = 0; i < n; i++) {
        used += snprintf(cql + used, sizeof cql - (size_t)used, "%s?", i ? ", " : "");
        if (!deta_cql_uuid_text(keys[i].order_id, &vals[i]))
            return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "bad key %s", keys[i].order_id);
        found[i] = false;
    }
    snprintf(cql + used, sizeof cql - (size_t)used, ")");
    deta_cql_result_t r;
    deta_err_t err = run(w->c, cql, vals, n, w->m->read_cl, &r, errstr, errsize);
    if (err)
        return err;
    for (size_t row = 0; row < r.nrows && !err; row++) {
        query_view_t v;
        err = view_from_row(&r, row, &v, NULL, errstr, errsize);
        for (size_t i = 0; i < n && !err; i++)
            if (!found[i] && strcmp(keys[i].order_id, v.order_id) == 0) {
                views[i] = v;
                found[i] = true;
            }
    }
    deta_cql_result_clear(&r);
    return err;
}

/* Whether view v belongs in the walk's page; *stale when its key should go
 * (the view proves its state is past the key's). */
static bool belongs(const page_walk_t *w, const query_view_t *v, bool *stale) {
    *stale = false;
    const query_list_params_t *p = w->p;
    if (w->by_customer && strcmp(v->customer_id, p->customer_id) != 0) {
        /* once order.created is in, the customer is final */
        *stale = v->created_at[0] != '\0';
        return false;
    }
    if (p->status[0] && strcmp(v->status, p->status) != 0) {
        /* a status only rises: a view at or past the key's rank has left it; one
         * below it is a read behind the key's write, not a stale key */
        *stale = w->by_status && v->status_rank >= deta_state_rank(p->status);
        return false;
    }
    return true;
}

/* Walks one bucket's keys from `after` until the page is full or the bucket ends. */
static deta_err_t walk_bucket(page_walk_t *w, int32_t bucket, const list_key_t *after,
                              char *errstr, size_t errsize) {
    list_key_t last, *keys = w->keys;
    query_view_t *views = w->views;
    bool *found = w->found;
    if (after) {
        last = *after;
        after = &last;
    }
    while (w->n < w->want) {
        int32_t limit = (int32_t)(w->want - w->n);
        size_t n = 0;
        deta_err_t err = read_keys(w, bucket, after, limit, keys, &n, errstr, errsize);
        if (!err && n > 0)
            err = read_views(w, keys, n, views, found, errstr, errsize);
        if (err)
            return err;
        for (size_t i = 0; i < n && w->n < w->want; i++) {
            bool stale = false;
            if (!found[i])
                continue; /* a key whose view is not readable yet */
            if (belongs(w, &views[i], &stale))
                w->items[w->n++] = views[i];
            else if (stale && w->nstale < sizeof w->stale / sizeof *w->stale) {
                w->stale_bucket[w->nstale] = bucket;
                w->stale[w->nstale++] = keys[i];
            }
        }
        if (n < (size_t)limit)
            return DETA_OK; /* the bucket has no more keys */
        last = keys[n - 1];
        after = &last;
    }
    return DETA_OK;
}

/* Deletes the stale keys met (best effort: a failure leaves them for the next walk). */
static void drop_stale(page_walk_t *w) {
    for (size_t i = 0; i < w->nstale; i++) {
        deta_cql_value_t vals[4] = {deta_cql_text(w->scope), deta_cql_int(w->stale_bucket[i]),
                                    deta_cql_bigint(w->stale[i].first_seen_us)};
        if (!deta_cql_uuid_text(w->stale[i].order_id, &vals[3]))
            continue;
        char why[256];
        deta_cql_result_t r;
        if (run(w->c, w->m->delete_key, vals, 4, w->m->write_cl, &r, why, sizeof why) == DETA_OK)
            deta_cql_result_clear(&r);
        else
            DETA_DEBUG("cassandra: a stale list key stays: %s", why);
    }
}

/* The scope's days, newest first, from `upto` (inclusive) when has_upto. */
static deta_err_t read_buckets(page_walk_t *w, bool has_upto, int32_t upto, int32_t *out,
                               size_t *n, char *errstr, size_t errsize) {
    deta_cql_value_t vals[3];
    size_t nv = 0;
    vals[nv++] = deta_cql_text(w->scope);
    if (has_upto)
        vals[nv++] = deta_cql_int(upto);
    vals[nv++] = deta_cql_int(BUCKETS_PAGE);
    deta_cql_result_t r;
    deta_err_t err = run(w->c, has_upto ? w->m->select_buckets_upto : w->m->select_buckets,
                         vals, nv, w->m->read_cl, &r, errstr, errsize);
    if (err)
        return err;
    *n = 0;
    for (size_t row = 0; row < r.nrows && row < BUCKETS_PAGE && !err; row++) {
        err = deta_cql_get_int(&r, row, 0, &out[row], NULL, errstr, errsize);
        if (!err)
            *n = row + 1;
    }
    deta_cql_result_clear(&r);
    return err ? store_err(err) : DETA_OK;
}

static deta_err_t walk(page_walk_t *w, char *errstr, size_t errsize) {
    const query_list_params_t *p = w->p;
    list_key_t cursor;
    int32_t cursor_bucket = 0;
    bool has_upto = p->has_cursor;
    int32_t upto = 0;
    if (p->has_cursor) {
        if (!deta_timestamp_us(p->after.at, &cursor.first_seen_us))
            return deta_errf(DETA_ERR_INVALID, errstr, errsize, "bad cursor");
        snprintf(cursor.order_id, sizeof cursor.order_id, "%s", p->after.order_id);
        cursor_bucket = (int32_t)day_of(cursor.first_seen_us);
        upto = cursor_bucket;
    }
    while (w->n < w->want) {
        int32_t buckets[BUCKETS_PAGE];
        size_t nb = 0;
        deta_err_t err = read_buckets(w, has_upto, upto, buckets, &nb, errstr, errsize);
        for (size_t i = 0; i < nb && !err && w->n < w->want; i++) {
            bool at_cursor = p->has_cursor && buckets[i] == cursor_bucket;
            err = walk_bucket(w, buckets[i], at_cursor ? &cursor : NULL, errstr, errsize);
        }
        if (err)
            return err;
        if (nb < BUCKETS_PAGE)
            return DETA_OK; /* no older day */
        has_upto = true;
        upto = buckets[nb - 1] - 1;
    }
    return DETA_OK;
}

static deta_err_t cql_list(void *impl, const query_list_params_t *p, query_page_t *out,
                           char *errstr, size_t errsize) {
    cql_model_t *m = impl;
    memset(out, 0, sizeof *out);
    deta_err_t err = DETA_OK;
    page_walk_t *w = calloc(1, sizeof *w);
    if (!w)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    w->m = m;
    w->p = p;
    w->c = conn(m, &err, errstr, errsize);
    w->want = (size_t)p->limit + 1;
    w->items = calloc(w->want, sizeof *w->items);
    if (!w->items && !err)
        err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    /* With both filters, the customer's scope (a few orders) filtered by status. */
    if (p->customer_id[0]) {
        snprintf(w->scope, sizeof w->scope, "customer:%s", p->customer_id);
        w->by_customer = true;
    } else if (p->status[0]) {
        snprintf(w->scope, sizeof w->scope, "status:%s", p->status);
        w->by_status = true;
    } else {
        snprintf(w->scope, sizeof w->scope, "all");
    }
    if (!err)
        err = walk(w, errstr, errsize);
    if (!err) {
        drop_stale(w);
        out->more = w->n > (size_t)p->limit;
        out->n = out->more ? (size_t)p->limit : w->n;
        out->items = w->items;
        w->items = NULL;
    }
    free(w->items);
    free(w);
    return err;
}

bool read_model_cql_client_stats(read_model_t *rm, deta_cql_stats_t *out) {
    cql_model_t *m = read_model_impl(rm, &read_model_cql_ops);
    deta_cql_t *c = m ? deta_cql_pool_get(m->pool) : NULL;
    if (!c)
        return false;
    deta_cql_get_stats(c, out);
    return true;
}

const read_model_ops_t read_model_cql_ops = {
    .name = "cassandra",
    .needs_claim = true, /* its writes are outside the consumer's transaction */
    .open = cql_open,
    .close = cql_close,
    .prepare = cql_prepare,
    .apply = cql_apply,
    .get = cql_get,
    .list = cql_list,
    .timeline = cql_timeline,
    .stats = cql_stats,
    .ping = cql_ping,
};

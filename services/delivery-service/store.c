/*
 * store.c - delivery-service's schema and queries (database delivery_db).
 *
 * Concurrency. Three things must hold with several instances and the ticker
 * running next to the consumer:
 *   - a driver never carries more than the capacity: the booking is one
 *     conditional UPDATE ... RETURNING, whose WHERE is evaluated again on the
 *     locked, latest row version, so two bookings of one driver serialize and the
 *     second fails once the driver is full;
 *   - a delivery advances once per stage: the ticker takes a due row with
 *     FOR UPDATE SKIP LOCKED, so instances never wait for, nor repeat, each
 *     other's work;
 *   - no two transactions deadlock on drivers: a transaction that waits for
 *     drivers' rows locks all it needs in one statement in driver_id order
 *     (delivery_store_lock_drivers: the ticker, once per turn, after its
 *     deliveries are moved and before it releases or books anyone), and the
 *     consumer's booking never waits for a driver's row (SKIP LOCKED). Before,
 *     each delivered delivery released its driver as the turn went, in due
 *     order, and two tickers whose turns met the drivers in crossing orders
 *     deadlocked (40P01) and rolled their turns back.
 * Lock order is deliveries rows, then drivers rows, then waiting_orders rows.
 *
 * The cancel (events.c) and the ticker race for a delivery and for a waiting
 * order; exactly one wins each time, because every change of a delivery's
 * status is conditional on the status it changes from (UPDATE ... WHERE status
 * = ...), evaluated again on the latest row version once a lock is granted, and
 * because the queue's rows are taken FOR UPDATE SKIP LOCKED by the ticker and
 * deleted by the cancel: a cancel that waited for the ticker's assignment finds
 * nothing to delete and re-reads (a delivery now), and a ticker never sees a
 * row the cancel holds. The loser of either race changes nothing.
 *
 * The queue. waiting_orders holds the paid orders that found no free driver, in
 * paid order (authorizedAt, then arrival). Only a transaction that holds every
 * driver's row takes orders out of it, so instances serve it strictly in order.
 *
 * Instants cross the boundary as ISO-8601 text going in and as epoch
 * milliseconds coming out (extract(epoch) is exact numeric), so no float ever
 * rounds one; the REST answers are built as JSON by Postgres itself, so the
 * distance (numeric) reaches the client exactly as stored.
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/outbox.h"
#include "deta/topics.h"

#define PRODUCER "delivery-service"

const deta_migration_t delivery_migrations[] = {
    {1, "drivers and deliveries",
     "CREATE TABLE drivers ("
     "  driver_id text PRIMARY KEY,"
     "  name text NOT NULL,"
     "  active_deliveries int NOT NULL DEFAULT 0 CHECK (active_deliveries >= 0),"
     "  available boolean NOT NULL DEFAULT true);"
     "CREATE TABLE deliveries ("
     "  delivery_id uuid PRIMARY KEY,"
     "  order_id uuid NOT NULL UNIQUE,"
     "  driver_id text NOT NULL REFERENCES drivers (driver_id),"
     "  payment_id text NOT NULL,"
     "  correlation_id text NOT NULL,"
     "  status text NOT NULL CHECK (status IN ('ASSIGNED', 'PICKED_UP', 'DELIVERED')),"
     "  distance_km numeric(4,1) NOT NULL CHECK (distance_km > 0),"
     "  assigned_at timestamptz NOT NULL,"
     "  picked_up_at timestamptz,"
     "  delivered_at timestamptz,"
     "  estimated_delivery_at timestamptz NOT NULL,"
     "  next_transition_at timestamptz,"
     "  updated_at timestamptz NOT NULL);"
     "CREATE INDEX deliveries_due_idx ON deliveries (next_transition_at)"
     "  WHERE status <> 'DELIVERED';"
     "CREATE INDEX deliveries_driver_idx ON deliveries (driver_id);"},
    {2, "orders waiting for a driver",
     "CREATE TABLE waiting_orders ("
     "  order_id uuid PRIMARY KEY,"
     "  payment_id text NOT NULL,"
     "  correlation_id text NOT NULL,"
     "  paid_at timestamptz NOT NULL,"
     "  waiting_since timestamptz NOT NULL,"
     "  seq bigint GENERATED ALWAYS AS IDENTITY);"
     "CREATE INDEX waiting_orders_queue_idx ON waiting_orders (paid_at, seq);"},
    /* A delivery may end CANCELLED (its next_transition_at cleared, so it is
     * never due again); cancel_refused_at records a refusal, so that a second
     * forward of the cancel finds the verdict given. cancelled_orders lists
     * every order whose cancel won here, whatever the stage, and fences off a
     * later payment.authorized for it. */
    {3, "cancellation",
     "ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check,"
     "  ADD CONSTRAINT deliveries_status_check"
     "    CHECK (status IN ('ASSIGNED', 'PICKED_UP', 'DELIVERED', 'CANCELLED')),"
     "  ADD COLUMN cancelled_at timestamptz,"
     "  ADD COLUMN cancel_refused_at timestamptz;"
     "CREATE TABLE cancelled_orders ("
     "  order_id uuid PRIMARY KEY,"
     "  stage text NOT NULL CHECK (stage IN ('NONE', 'WAITING', 'ASSIGNED')),"
     "  delivery_id uuid REFERENCES deliveries (delivery_id),"
     "  payment_id text NOT NULL,"
     "  cancelled_at timestamptz NOT NULL,"
     "  CHECK ((stage = 'ASSIGNED') = (delivery_id IS NOT NULL)));"},
};
const size_t delivery_migrations_count = sizeof delivery_migrations / sizeof *delivery_migrations;

/* An instant as a statement parameter: NULL for 0 ("not yet"). */
typedef struct instant_param {
    char text[DETA_TS_LEN];
} instant_param_t;

static const char *instant(instant_param_t *buf, int64_t ms) {
    if (ms == 0)
        return NULL;
    deta_timestamp_from_ms(ms, buf->text);
    return buf->text;
}

static int64_t column_ms(const PGresult *res, int row, int col) {
    return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static void copy_column(char *dst, size_t dstsize, const PGresult *res, int row, int col) {
    snprintf(dst, dstsize, "%s", PQgetvalue(res, row, col));
}

/* ---- drivers ---- */

deta_err_t delivery_store_seed_drivers(deta_db_t *db, long count, char *errstr, size_t errsize) {
    deta_err_t err = deta_db_begin(db, errstr, errsize);
    for (long i = 1; !err && i <= count; i++) {
        char id[DELIVERY_DRIVER_ID_MAX + 1], name[DELIVERY_DRIVER_NAME_MAX + 1];
        if (!delivery_driver_identity(i, id, sizeof id, name, sizeof name)) {
            err = deta_errf(DETA_ERR_INVALID, errstr, errsize, "no identity for driver %ld", i);
            break;
        }
        const char *params[] = {id, name};
        err = deta_db_run(db,
                          "INSERT INTO drivers (driver_id, name) VALUES ($1, $2)"
                          " ON CONFLICT (driver_id) DO NOTHING",
                          2, params, errstr, errsize);
    }
    if (!err)
        return deta_db_commit(db, errstr, errsize);
    deta_db_rollback(db);
    return err;
}

/* Rows first..end of res's columns col..col+3 (driver_id, name,
 * active_deliveries, available) as driver rows; NULL columns end the list (the
 * outer join of delivery_store_intake). *rows malloc'd. */
static deta_err_t drivers_from(PGresult *res, int col, delivery_driver_t **rows, size_t *n,
                               char *errstr, size_t errsize) {
    int count = PQntuples(res);
    *rows = calloc(count > 0 ? (size_t)count : 1, sizeof **rows);
    *n = 0;
    if (!*rows)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    for (int i = 0; i < count && !PQgetisnull(res, i, col); i++) {
        delivery_driver_t *r = &(*rows)[(*n)++];
        copy_column(r->driver_id, sizeof r->driver_id, res, i, col);
        copy_column(r->name, sizeof r->name, res, i, col + 1);
        r->active = strtol(PQgetvalue(res, i, col + 2), NULL, 10);
        r->available = PQgetvalue(res, i, col + 3)[0] == 't';
    }
    return DETA_OK;
}

deta_err_t delivery_store_load_drivers(deta_db_t *db, delivery_driver_t **rows, size_t *n,
                                       char *errstr, size_t errsize) {
    deta_err_t err;
    *rows = NULL;
    *n = 0;
    PGresult *res = deta_db_exec(db,
                                 "SELECT driver_id, name, active_deliveries, available"
                                 " FROM drivers",
                                 0, NULL, &err, errstr, errsize);
    if (!res)
        return err;
    err = drivers_from(res, 0, rows, n, errstr, errsize);
    PQclear(res);
    return err;
}

deta_err_t delivery_store_intake(deta_db_t *db, const char *order_id, bool *known,
                                 bool *waiting, delivery_driver_t **rows, size_t *n,
                                 char *errstr, size_t errsize) {
    const char *params[] = {order_id};
    deta_err_t err;
    *rows = NULL;
    *n = 0;
    PGresult *res = deta_db_exec(
        db,
        "SELECT k.known, k.waiting, d.driver_id, d.name, d.active_deliveries, d.available"
        " FROM (SELECT EXISTS (SELECT 1 FROM deliveries WHERE order_id = $1::uuid)"
        "   OR EXISTS (SELECT 1 FROM waiting_orders WHERE order_id = $1::uuid)"
        "   OR EXISTS (SELECT 1 FROM cancelled_orders WHERE order_id = $1::uuid) AS known,"
        "  EXISTS (SELECT 1 FROM waiting_orders) AS waiting) k"
        " LEFT JOIN drivers d ON NOT k.known AND NOT k.waiting",
        1, params, &err, errstr, errsize);
    if (!res)
        return err;
    *known = PQgetvalue(res, 0, 0)[0] == 't';
    *waiting = PQgetvalue(res, 0, 1)[0] == 't';
    err = drivers_from(res, 2, rows, n, errstr, errsize);
    PQclear(res);
    return err;
}

deta_err_t delivery_store_book_driver(deta_db_t *db, const char *driver_id, long capacity,
                                      bool *booked, char *name, size_t namesize, char *errstr,
                                      size_t errsize) {
    char cap[24];
    snprintf(cap, sizeof cap, "%ld", capacity);
    const char *params[] = {driver_id, cap};
    deta_err_t err;
    PGresult *res = deta_db_exec(db,
                                 "UPDATE drivers SET active_deliveries = active_deliveries + 1"
                                 " WHERE driver_id = (SELECT driver_id FROM drivers"
                                 "   WHERE driver_id = $1 AND available"
                                 "     AND active_deliveries < $2::int"
                                 "   FOR UPDATE SKIP LOCKED)"
                                 " RETURNING name",
                                 2, params, &err, errstr, errsize);
    if (!res)
        return err;
    *booked = PQntuples(res) == 1;
    if (*booked)
        copy_column(name, namesize, res, 0, 0);
    PQclear(res);
    return DETA_OK;
}

/* One statement over the drivers named in ids (text[] as $1). */
static deta_err_t run_on_drivers(deta_db_t *db, const char *sql, const char *const *ids, size_t n,
                                 char *errstr, size_t errsize) {
    char *array = deta_db_array(ids, n);
    if (!array)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    const char *params[] = {array};
    deta_err_t err = deta_db_run(db, sql, 1, params, errstr, errsize);
    free(array);
    return err;
}

deta_err_t delivery_store_lock_drivers(deta_db_t *db, const char *const *ids, size_t n, bool all,
                                       char *errstr, size_t errsize) {
    if (all)
        return deta_db_run(db, "SELECT 1 FROM drivers ORDER BY driver_id FOR UPDATE", 0, NULL,
                           errstr, errsize);
    if (n == 0)
        return DETA_OK;
    return run_on_drivers(db,
                          "SELECT 1 FROM drivers WHERE driver_id = ANY ($1::text[])"
                          " ORDER BY driver_id FOR UPDATE",
                          ids, n, errstr, errsize);
}

deta_err_t delivery_store_release_drivers(deta_db_t *db, const char *const *ids, size_t n,
                                          char *errstr, size_t errsize) {
    if (n == 0)
        return DETA_OK;
    return run_on_drivers(db,
                          "UPDATE drivers r SET active_deliveries ="
                          "  GREATEST(r.active_deliveries - x.n, 0)"
                          " FROM (SELECT id, count(*)::int AS n FROM unnest($1::text[]) id"
                          "       GROUP BY id) x"
                          " WHERE r.driver_id = x.id",
                          ids, n, errstr, errsize);
}

/* ---- the queue ---- */

deta_err_t delivery_store_anyone_waiting(deta_db_t *db, bool *waiting, char *errstr,
                                         size_t errsize) {
    deta_err_t err;
    PGresult *res = deta_db_exec(db, "SELECT 1 FROM waiting_orders LIMIT 1", 0, NULL, &err,
                                 errstr, errsize);
    if (!res)
        return err;
    *waiting = PQntuples(res) > 0;
    PQclear(res);
    return DETA_OK;
}

static deta_err_t announce_waiting(deta_db_t *db, const delivery_waiting_t *w, int64_t now_ms,
                                   long position, char *errstr, size_t errsize);

deta_err_t delivery_store_park(deta_db_t *db, const delivery_waiting_t *w, const char *paid_at,
                               int64_t now_ms, bool *parked, char *errstr, size_t errsize) {
    instant_param_t since;
    const char *params[] = {w->order_id, w->payment_id, w->correlation_id, paid_at,
                            instant(&since, now_ms)};
    deta_err_t err;
    PGresult *res = deta_db_exec(
        db,
        "WITH mine AS (INSERT INTO waiting_orders (order_id, payment_id, correlation_id, paid_at,"
        "  waiting_since) VALUES ($1, $2, $3, $4, $5)"
        "  ON CONFLICT (order_id) DO NOTHING RETURNING paid_at, seq)"
        " SELECT 1 + (SELECT count(*) FROM waiting_orders q"
        "   WHERE (q.paid_at, q.seq) < (mine.paid_at, mine.seq)) FROM mine",
        5, params, &err, errstr, errsize);
    if (!res)
        return err;
    *parked = PQntuples(res) == 1;
    long position = *parked ? strtol(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);
    return *parked ? announce_waiting(db, w, now_ms, position, errstr, errsize) : DETA_OK;
}

deta_err_t delivery_store_next_waiting(deta_db_t *db, delivery_waiting_t *w, bool *found,
                                       char *errstr, size_t errsize) {
    deta_err_t err;
    PGresult *res = deta_db_exec(db,
                                 "SELECT w.order_id, w.payment_id, w.correlation_id,"
                                 "  EXISTS (SELECT 1 FROM deliveries d"
                                 "          WHERE d.order_id = w.order_id)"
                                 " FROM waiting_orders w ORDER BY w.paid_at, w.seq"
                                 " LIMIT 1 FOR UPDATE OF w SKIP LOCKED",
                                 0, NULL, &err, errstr, errsize);
    if (!res)
        return err;
    *found = PQntuples(res) == 1;
    if (*found) {
        copy_column(w->order_id, sizeof w->order_id, res, 0, 0);
        copy_column(w->payment_id, sizeof w->payment_id, res, 0, 1);
        copy_column(w->correlation_id, sizeof w->correlation_id, res, 0, 2);
        w->has_delivery = PQgetvalue(res, 0, 3)[0] == 't';
    }
    PQclear(res);
    return DETA_OK;
}

deta_err_t delivery_store_unpark(deta_db_t *db, const char *order_id, char *errstr,
                                 size_t errsize) {
    const char *params[] = {order_id};
    return deta_db_run(db, "DELETE FROM waiting_orders WHERE order_id = $1::uuid", 1, params,
                       errstr, errsize);
}

/* ---- deliveries ---- */

deta_err_t delivery_store_insert(deta_db_t *db, const delivery_t *d, const char *payment_id,
                                 const char *correlation_id, bool *inserted, char *errstr,
                                 size_t errsize) {
    char km[16];
    instant_param_t at, eta, next;
    delivery_format_km(d->distance_hm, km, sizeof km);
    const char *params[] = {d->delivery_id,
                            d->order_id,
                            d->driver_id,
                            payment_id,
                            correlation_id,
                            delivery_stage_name(d->status),
                            km,
                            instant(&at, d->assigned_ms),
                            instant(&eta, d->eta_ms),
                            instant(&next, d->next_transition_ms)};
    deta_err_t err;
    PGresult *res = deta_db_exec(
        db,
        "INSERT INTO deliveries (delivery_id, order_id, driver_id, payment_id, correlation_id,"
        "  status, distance_km, assigned_at, estimated_delivery_at, next_transition_at,"
        "  updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::numeric, $8, $9, $10, $8)"
        " ON CONFLICT (order_id) DO NOTHING RETURNING 1",
        10, params, &err, errstr, errsize);
    if (!res)
        return err;
    *inserted = PQntuples(res) == 1;
    PQclear(res);
    return DETA_OK;
}

#define MS(col) "COALESCE((extract(epoch FROM " col ") * 1000)::bigint, 0)"

static const char CLAIM_DUE_SQL[] =
    "SELECT d.delivery_id, d.order_id, d.driver_id, r.name, d.status,"
    "  (d.distance_km * 10)::int, " MS("d.assigned_at") ", " MS("d.picked_up_at") ", "
    MS("d.delivered_at") ", " MS("d.estimated_delivery_at") ", " MS("d.next_transition_at") ","
    "  d.correlation_id"
    " FROM deliveries d JOIN drivers r ON r.driver_id = d.driver_id"
    " WHERE d.status <> 'DELIVERED' AND d.status <> 'CANCELLED'"
    "   AND d.next_transition_at <= $1"
    " ORDER BY d.next_transition_at"
    " LIMIT $2 FOR UPDATE OF d SKIP LOCKED";

static deta_err_t due_from_row(const PGresult *res, int row, delivery_due_t *out, char *errstr,
                               size_t errsize) {
    delivery_t *d = &out->d;
    memset(d, 0, sizeof *d);
    copy_column(d->delivery_id, sizeof d->delivery_id, res, row, 0);
    copy_column(d->order_id, sizeof d->order_id, res, row, 1);
    copy_column(d->driver_id, sizeof d->driver_id, res, row, 2);
    copy_column(d->driver_name, sizeof d->driver_name, res, row, 3);
    if (!delivery_stage_parse(PQgetvalue(res, row, 4), &d->status))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "delivery %s has status %s",
                         d->delivery_id, PQgetvalue(res, row, 4));
    d->distance_hm = (int)strtol(PQgetvalue(res, row, 5), NULL, 10);
    d->assigned_ms = column_ms(res, row, 6);
    d->picked_up_ms = column_ms(res, row, 7);
    d->delivered_ms = column_ms(res, row, 8);
    d->eta_ms = column_ms(res, row, 9);
    d->next_transition_ms = column_ms(res, row, 10);
    copy_column(out->correlation_id, sizeof out->correlation_id, res, row, 11);
    return DETA_OK;
}

deta_err_t delivery_store_claim_due(deta_db_t *db, int64_t now_ms, size_t max,
                                    delivery_due_t *out, size_t *n, char *errstr,
                                    size_t errsize) {
    instant_param_t now;
    char limit[24];
    snprintf(limit, sizeof limit, "%zu", max);
    const char *params[] = {instant(&now, now_ms), limit};
    deta_err_t err;
    *n = 0;
    PGresult *res = deta_db_exec(db, CLAIM_DUE_SQL, 2, params, &err, errstr, errsize);
    if (!res)
        return err;
    size_t rows = (size_t)PQntuples(res);
    err = DETA_OK;
    for (size_t i = 0; i < rows && i < max && !err; i++)
        if ((err = due_from_row(res, (int)i, &out[i], errstr, errsize)) == DETA_OK)
            *n = i + 1;
    PQclear(res);
    return err;
}

/* The deliveries' new stages as arrays ($1..$8), unnested into one row each. */
static const char SAVE_STAGES_SQL[] =
    "UPDATE deliveries d SET status = v.status, picked_up_at = v.picked_up_at,"
    "  delivered_at = v.delivered_at, estimated_delivery_at = v.eta,"
    "  next_transition_at = v.next_at, updated_at = v.changed_at"
    " FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[],"
    "  $5::timestamptz[], $6::timestamptz[], $7::timestamptz[], $8::text[])"
    "  AS v(delivery_id, status, picked_up_at, delivered_at, eta, next_at, changed_at, was)"
    " WHERE d.delivery_id = v.delivery_id AND d.status = v.was"
    " RETURNING d.delivery_id::text";

enum { STAGE_COLS = 8 };

deta_err_t delivery_store_save_stages(deta_db_t *db, const delivery_due_t *ds,
                                      const delivery_stage_t *from, size_t n, bool *saved,
                                      char *errstr, size_t errsize) {
    for (size_t i = 0; i < n; i++)
        saved[i] = false;
    if (n == 0)
        return DETA_OK;
    /* vals[c * n + i]: column c of delivery i */
    const char **vals = calloc(STAGE_COLS * n, sizeof *vals);
    instant_param_t *at = calloc(5 * n, sizeof *at);
    char *arrays[STAGE_COLS] = {0};
    deta_err_t err = vals && at ? DETA_OK : DETA_ERR_INTERNAL;
    for (size_t i = 0; i < n && !err; i++) {
        const delivery_t *d = &ds[i].d;
        int64_t changed_ms = d->delivered_ms ? d->delivered_ms
                             : d->picked_up_ms ? d->picked_up_ms
                                               : d->assigned_ms;
        vals[0 * n + i] = d->delivery_id;
        vals[1 * n + i] = delivery_stage_name(d->status);
        vals[2 * n + i] = instant(&at[5 * i], d->picked_up_ms);
        vals[3 * n + i] = instant(&at[5 * i + 1], d->delivered_ms);
        vals[4 * n + i] = instant(&at[5 * i + 2], d->eta_ms);
        vals[5 * n + i] = instant(&at[5 * i + 3], d->next_transition_ms);
        vals[6 * n + i] = instant(&at[5 * i + 4], changed_ms);
        vals[7 * n + i] = delivery_stage_name(from[i]);
    }
    for (int c = 0; c < STAGE_COLS && !err; c++)
        if (!(arrays[c] = deta_db_array(&vals[(size_t)c * n], n)))
            err = DETA_ERR_INTERNAL;
    if (err) {
        err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    } else {
        PGresult *res = deta_db_exec(db, SAVE_STAGES_SQL, STAGE_COLS,
                                     (const char *const *)arrays, &err, errstr, errsize);
        for (int r = 0; res && r < PQntuples(res); r++)
            for (size_t i = 0; i < n; i++)
                if (strcmp(PQgetvalue(res, r, 0), ds[i].d.delivery_id) == 0)
                    saved[i] = true;
        PQclear(res);
    }
    for (int c = 0; c < STAGE_COLS; c++)
        free(arrays[c]);
    free(vals);
    free(at);
    return err;
}

/* ---- cancellation ---- */

deta_err_t delivery_store_lock_order(deta_db_t *db, const char *order_id, char *errstr,
                                     size_t errsize) {
    const char *params[] = {order_id};
    return deta_db_run(db, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", 1, params,
                       errstr, errsize);
}

deta_err_t delivery_store_cancel_facts(deta_db_t *db, const char *order_id,
                                       delivery_cancel_facts_t *f, char *errstr,
                                       size_t errsize) {
    const char *params[] = {order_id};
    deta_err_t err;
    PGresult *res = deta_db_exec(
        db,
        "SELECT EXISTS (SELECT 1 FROM cancelled_orders WHERE order_id = $1::uuid),"
        "  d.cancel_refused_at IS NOT NULL, d.status,"
        "  EXISTS (SELECT 1 FROM waiting_orders WHERE order_id = $1::uuid)"
        " FROM (SELECT 1) one LEFT JOIN deliveries d ON d.order_id = $1::uuid",
        1, params, &err, errstr, errsize);
    if (!res)
        return err;
    memset(f, 0, sizeof *f);
    f->cancelled = PQgetvalue(res, 0, 0)[0] == 't';
    f->refused = PQgetvalue(res, 0, 1)[0] == 't';
    f->has_delivery = !PQgetisnull(res, 0, 2);
    if (f->has_delivery && !delivery_stage_parse(PQgetvalue(res, 0, 2), &f->stage))
        err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "order %s's delivery has status %s",
                        order_id, PQgetvalue(res, 0, 2));
    f->waiting = PQgetvalue(res, 0, 3)[0] == 't';
    PQclear(res);
    return err;
}

deta_err_t delivery_store_cancel_delivery(deta_db_t *db, const char *order_id, int64_t now_ms,
                                          bool *cancelled, char delivery_id[DETA_UUID_LEN + 1],
                                          char driver_id[DELIVERY_DRIVER_ID_MAX + 1],
                                          char *errstr, size_t errsize) {
    instant_param_t now;
    const char *params[] = {order_id, instant(&now, now_ms)};
    deta_err_t err;
    PGresult *res = deta_db_exec(db,
                                 "UPDATE deliveries SET status = 'CANCELLED', cancelled_at = $2,"
                                 "  next_transition_at = NULL, updated_at = $2"
                                 " WHERE order_id = $1::uuid AND status = 'ASSIGNED'"
                                 " RETURNING delivery_id, driver_id",
                                 2, params, &err, errstr, errsize);
    if (!res)
        return err;
    *cancelled = PQntuples(res) == 1;
    if (*cancelled) {
        copy_column(delivery_id, DETA_UUID_LEN + 1, res, 0, 0);
        copy_column(driver_id, DELIVERY_DRIVER_ID_MAX + 1, res, 0, 1);
    }
    PQclear(res);
    return DETA_OK;
}

deta_err_t delivery_store_refuse_cancel(deta_db_t *db, const char *order_id, int64_t now_ms,
                                        bool *refused, delivery_stage_t *stage, char *errstr,
                                        size_t errsize) {
    instant_param_t now;
    const char *params[] = {order_id, instant(&now, now_ms)};
    deta_err_t err;
    PGresult *res = deta_db_exec(db,
                                 "UPDATE deliveries SET cancel_refused_at = $2"
                                 " WHERE order_id = $1::uuid"
                                 "   AND status IN ('PICKED_UP', 'DELIVERED')"
                                 "   AND cancel_refused_at IS NULL"
                                 " RETURNING status",
                                 2, params, &err, errstr, errsize);
    if (!res)
        return err;
    *refused = PQntuples(res) == 1 && delivery_stage_parse(PQgetvalue(res, 0, 0), stage);
    PQclear(res);
    return DETA_OK;
}

deta_err_t delivery_store_leave_queue(deta_db_t *db, const char *order_id, bool *left,
                                      char *errstr, size_t errsize) {
    const char *params[] = {order_id};
    deta_err_t err;
    PGresult *res = deta_db_exec(db,
                                 "DELETE FROM waiting_orders WHERE order_id = $1::uuid"
                                 " RETURNING 1",
                                 1, params, &err, errstr, errsize);
    if (!res)
        return err;
    *left = PQntuples(res) == 1;
    PQclear(res);
    return DETA_OK;
}

deta_err_t delivery_store_record_cancelled(deta_db_t *db, const char *order_id,
                                           const char *stage, const char *delivery_id,
                                           const char *payment_id, int64_t now_ms,
                                           bool *recorded, char *errstr, size_t errsize) {
    instant_param_t now;
    const char *params[] = {order_id, stage, delivery_id, payment_id, instant(&now, now_ms)};
    deta_err_t err;
    PGresult *res = deta_db_exec(db,
                                 "INSERT INTO cancelled_orders (order_id, stage, delivery_id,"
                                 "  payment_id, cancelled_at) VALUES ($1, $2, $3, $4, $5)"
                                 " ON CONFLICT (order_id) DO NOTHING RETURNING 1",
                                 5, params, &err, errstr, errsize);
    if (!res)
        return err;
    *recorded = PQntuples(res) == 1;
    PQclear(res);
    return DETA_OK;
}

/* ---- events ---- */

/* ev: a delivery event of type for order_id, occurred at occurred_ms (takes payload). */
static deta_err_t event_of(deta_event_t *ev, const char *type, const char *order_id,
                           const char *correlation_id, json_t *payload, int64_t occurred_ms,
                           char *errstr, size_t errsize) {
    if (!payload)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot build the %s payload", type);
    deta_err_t err =
        deta_event_init(ev, type, order_id, correlation_id, PRODUCER, payload, errstr, errsize);
    if (!err)
        deta_timestamp_from_ms(occurred_ms, ev->occurred_at);
    return err;
}

deta_err_t delivery_store_add_event(deta_db_t *db, const char *type, const char *order_id,
                            const char *correlation_id, json_t *payload, int64_t occurred_ms,
                            char *errstr, size_t errsize) {
    deta_event_t ev;
    deta_err_t err = event_of(&ev, type, order_id, correlation_id, payload, occurred_ms, errstr,
                              errsize);
    if (err)
        return err;
    err = deta_outbox_add(db, DETA_TOPIC_DELIVERY_EVENTS, &ev, errstr, errsize);
    deta_event_clear(&ev);
    return err;
}

static int64_t stage_instant(const delivery_t *d) {
    switch (d->status) {
    case DELIVERY_ASSIGNED:
        return d->assigned_ms;
    case DELIVERY_PICKED_UP:
        return d->picked_up_ms;
    case DELIVERY_DELIVERED:
        return d->delivered_ms;
    case DELIVERY_CANCELLED:
        return 0;
    }
    return 0;
}

/* The stage's event (raw.delivery-events) and its eta.updated (raw.eta-events)
 * of d into two[0] and two[1], both cleared on error. */
static deta_err_t announcement(const delivery_t *d, const char *correlation_id,
                               deta_event_t two[2], char *errstr, size_t errsize) {
    int64_t at = stage_instant(d);
    json_t *eta_payload = delivery_eta_payload(d, at);
    deta_err_t err = event_of(&two[0], delivery_stage_event_type(d->status), d->order_id,
                              correlation_id, delivery_stage_payload(d), at, errstr, errsize);
    if (err) {
        json_decref(eta_payload);
        return err;
    }
    err = event_of(&two[1], DETA_EVT_ETA_UPDATED, d->order_id, correlation_id, eta_payload, at,
                   errstr, errsize);
    if (err)
        deta_event_clear(&two[0]);
    return err;
}

static const char *const ANNOUNCED_TOPICS[] = {DETA_TOPIC_DELIVERY_EVENTS, DETA_TOPIC_ETA_EVENTS};

/* Both in one statement. */
deta_err_t delivery_store_announce(deta_db_t *db, const delivery_t *d, const char *correlation_id,
                                   char *errstr, size_t errsize) {
    deta_event_t two[2];
    deta_err_t err = announcement(d, correlation_id, two, errstr, errsize);
    if (err)
        return err;
    const deta_event_t *both[] = {&two[0], &two[1]};
    err = deta_outbox_add_many(db, ANNOUNCED_TOPICS, both, 2, errstr, errsize);
    deta_event_clear(&two[1]);
    deta_event_clear(&two[0]);
    return err;
}

/* All of them in one statement: each delivery's two events, in turn order. */
deta_err_t delivery_store_announce_all(deta_db_t *db, const delivery_due_t *ds, size_t n,
                                       char *errstr, size_t errsize) {
    if (n == 0)
        return DETA_OK;
    if (n > DETA_OUTBOX_EACH_MAX / 2)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "%zu deliveries to announce at once, at most %d", n,
                         DETA_OUTBOX_EACH_MAX / 2);
    deta_event_t *evs = calloc(2 * n, sizeof *evs);
    const deta_event_t **ptrs = calloc(2 * n, sizeof *ptrs);
    const char **topics = calloc(2 * n, sizeof *topics);
    deta_err_t err = evs && ptrs && topics
                         ? DETA_OK
                         : deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    size_t made = 0; /* deliveries whose two events were made (a failed one's are cleared) */
    while (!err && made < n) {
        err = announcement(&ds[made].d, ds[made].correlation_id, &evs[2 * made], errstr,
                           errsize);
        if (!err)
            made++;
    }
    for (size_t i = 0; !err && i < 2 * n; i++) {
        ptrs[i] = &evs[i];
        topics[i] = ANNOUNCED_TOPICS[i % 2];
    }
    if (!err)
        err = deta_outbox_add_each(db, topics, ptrs, 2 * n, errstr, errsize);
    for (size_t i = 0; evs && i < 2 * made; i++)
        deta_event_clear(&evs[i]);
    free(evs);
    free(ptrs);
    free(topics);
    return err;
}

static deta_err_t announce_waiting(deta_db_t *db, const delivery_waiting_t *w, int64_t now_ms,
                                   long position, char *errstr, size_t errsize) {
    return delivery_store_add_event(db, DETA_EVT_DELIVERY_WAITING, w->order_id, w->correlation_id,
                     delivery_waiting_payload(w->order_id, w->payment_id, now_ms, position),
                     now_ms, errstr, errsize);
}

/* ---- reads for the REST API and the gauge ---- */

#define ISO(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

static const char SELECT_DELIVERY_SQL[] =
    "SELECT json_build_object("
    "  'deliveryId', d.delivery_id, 'orderId', d.order_id, 'status', d.status,"
    "  'driverId', d.driver_id, 'driverName', r.name, 'paymentId', d.payment_id,"
    "  'distanceKm', d.distance_km,"
    "  'assignedAt', " ISO("d.assigned_at") ","
    "  'pickedUpAt', " ISO("d.picked_up_at") ","
    "  'deliveredAt', " ISO("d.delivered_at") ","
    "  'cancelledAt', " ISO("d.cancelled_at") ","
    "  'estimatedDeliveryAt', " ISO("d.estimated_delivery_at") ","
    "  'updatedAt', " ISO("d.updated_at") ")::text"
    " FROM deliveries d JOIN drivers r ON r.driver_id = d.driver_id"
    " WHERE d.order_id = $1::uuid";

/* The text of the first column of a one-row query, malloc'd into *out. */
static deta_err_t query_text(deta_db_t *db, const char *sql, int nparams,
                             const char *const *params, char **out, char *errstr,
                             size_t errsize) {
    deta_err_t err;
    *out = NULL;
    PGresult *res = deta_db_exec(db, sql, nparams, params, &err, errstr, errsize);
    if (!res)
        return err;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return deta_errf(DETA_ERR_NOT_FOUND, errstr, errsize, "no row");
    }
    *out = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return *out ? DETA_OK : deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
}

static const char SELECT_WAITING_SQL[] =
    "SELECT json_build_object("
    "  'orderId', w.order_id, 'status', 'WAITING', 'paymentId', w.payment_id,"
    "  'waitingSince', " ISO("w.waiting_since") ","
    "  'position', 1 + (SELECT count(*) FROM waiting_orders q"
    "                   WHERE (q.paid_at, q.seq) < (w.paid_at, w.seq)))::text"
    " FROM waiting_orders w WHERE w.order_id = $1::uuid";

/* An order cancelled before it had a delivery (stage WAITING or NONE); one
 * cancelled with its delivery (ASSIGNED) shows the delivery instead. */
static const char SELECT_CANCELLED_SQL[] =
    "SELECT json_build_object("
    "  'orderId', c.order_id, 'status', 'CANCELLED', 'stage', c.stage,"
    "  'deliveryId', c.delivery_id, 'paymentId', c.payment_id,"
    "  'cancelledAt', " ISO("c.cancelled_at") ")::text"
    " FROM cancelled_orders c WHERE c.order_id = $1::uuid";

deta_err_t delivery_store_get_json(deta_db_t *db, const char *order_id, char **json,
                                   char *errstr, size_t errsize) {
    const char *params[] = {order_id};
    deta_err_t err = query_text(db, SELECT_DELIVERY_SQL, 1, params, json, errstr, errsize);
    if (err == DETA_ERR_NOT_FOUND)
        err = query_text(db, SELECT_WAITING_SQL, 1, params, json, errstr, errsize);
    if (err == DETA_ERR_NOT_FOUND)
        err = query_text(db, SELECT_CANCELLED_SQL, 1, params, json, errstr, errsize);
    return err;
}

deta_err_t delivery_store_drivers_json(deta_db_t *db, long capacity, char **json, char *errstr,
                                       size_t errsize) {
    char cap[24];
    snprintf(cap, sizeof cap, "%ld", capacity);
    const char *params[] = {cap};
    return query_text(db,
                      "SELECT json_build_object('capacity', $1::int, 'drivers',"
                      "  COALESCE(json_agg(json_build_object('driverId', driver_id, 'name', name,"
                      "    'activeDeliveries', active_deliveries, 'available', available)"
                      "    ORDER BY driver_id), '[]'::json))::text"
                      " FROM drivers",
                      1, params, json, errstr, errsize);
}

deta_err_t delivery_store_count_active(deta_db_t *db, long *n, long *waiting, char *errstr,
                                       size_t errsize) {
    deta_err_t err;
    PGresult *res = deta_db_exec(db,
                                 "SELECT (SELECT count(*) FROM deliveries"
                                 "        WHERE status IN ('ASSIGNED', 'PICKED_UP')),"
                                 "  (SELECT count(*) FROM waiting_orders)",
                                 0, NULL, &err, errstr, errsize);
    if (!res)
        return err;
    *n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    *waiting = strtol(PQgetvalue(res, 0, 1), NULL, 10);
    PQclear(res);
    return DETA_OK;
}

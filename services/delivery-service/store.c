/*
 * store.c - delivery-service's schema and queries (database delivery_db).
 *
 * Concurrency. Two things must hold with several instances and the ticker running
 * next to the consumer:
 *   - a driver never carries more than the capacity: the booking is one
 *     conditional UPDATE ... RETURNING, whose WHERE is evaluated again on the
 *     locked, latest row version, so two bookings of one driver serialize and the
 *     second fails once the driver is full;
 *   - a delivery advances once per stage: the ticker takes a due row with
 *     FOR UPDATE SKIP LOCKED, so instances never wait for, nor repeat, each
 *     other's work.
 * Lock order is deliveries row, then drivers row (the ticker releases a driver
 * after locking its delivery; a booking locks a driver and only inserts a new
 * delivery), so the two never deadlock.
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
};
const size_t delivery_migrations_count = sizeof delivery_migrations / sizeof *delivery_migrations;

/* An instant as a statement parameter: NULL for 0 ("not yet"). */
typedef struct instant_param {
    char text[DETA_TS_LEN];
} instant_param_t;

static const char *instant(instant_param_t *buf, int64_t ms) {
    if (ms == 0)
        return NULL;
    delivery_format_instant(ms, buf->text);
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
    int count = PQntuples(res);
    *rows = calloc(count > 0 ? (size_t)count : 1, sizeof **rows);
    if (!*rows) {
        PQclear(res);
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    }
    for (int i = 0; i < count; i++) {
        delivery_driver_t *r = &(*rows)[i];
        copy_column(r->driver_id, sizeof r->driver_id, res, i, 0);
        copy_column(r->name, sizeof r->name, res, i, 1);
        r->active = strtol(PQgetvalue(res, i, 2), NULL, 10);
        r->available = PQgetvalue(res, i, 3)[0] == 't';
    }
    *n = (size_t)count;
    PQclear(res);
    return DETA_OK;
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
                                 " WHERE driver_id = $1 AND available"
                                 "   AND active_deliveries < $2::int"
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

/* ---- deliveries ---- */

deta_err_t delivery_store_order_known(deta_db_t *db, const char *order_id, bool *known,
                                      char *errstr, size_t errsize) {
    const char *params[] = {order_id};
    deta_err_t err;
    PGresult *res = deta_db_exec(db, "SELECT 1 FROM deliveries WHERE order_id = $1::uuid", 1,
                                 params, &err, errstr, errsize);
    if (!res)
        return err;
    *known = PQntuples(res) > 0;
    PQclear(res);
    return DETA_OK;
}

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
    " WHERE d.status <> 'DELIVERED' AND d.next_transition_at <= $1"
    " ORDER BY d.next_transition_at"
    " LIMIT 1 FOR UPDATE OF d SKIP LOCKED";

static deta_err_t delivery_from_row(const PGresult *res, delivery_t *d, char *correlation_id,
                                    char *errstr, size_t errsize) {
    memset(d, 0, sizeof *d);
    copy_column(d->delivery_id, sizeof d->delivery_id, res, 0, 0);
    copy_column(d->order_id, sizeof d->order_id, res, 0, 1);
    copy_column(d->driver_id, sizeof d->driver_id, res, 0, 2);
    copy_column(d->driver_name, sizeof d->driver_name, res, 0, 3);
    if (!delivery_stage_parse(PQgetvalue(res, 0, 4), &d->status))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "delivery %s has status %s",
                         d->delivery_id, PQgetvalue(res, 0, 4));
    d->distance_hm = (int)strtol(PQgetvalue(res, 0, 5), NULL, 10);
    d->assigned_ms = column_ms(res, 0, 6);
    d->picked_up_ms = column_ms(res, 0, 7);
    d->delivered_ms = column_ms(res, 0, 8);
    d->eta_ms = column_ms(res, 0, 9);
    d->next_transition_ms = column_ms(res, 0, 10);
    snprintf(correlation_id, DETA_ID_MAX + 1, "%s", PQgetvalue(res, 0, 11));
    return DETA_OK;
}

deta_err_t delivery_store_claim_due(deta_db_t *db, int64_t now_ms, delivery_t *d,
                                    char correlation_id[DETA_ID_MAX + 1], bool *found,
                                    char *errstr, size_t errsize) {
    instant_param_t now;
    const char *params[] = {instant(&now, now_ms)};
    deta_err_t err;
    PGresult *res = deta_db_exec(db, CLAIM_DUE_SQL, 1, params, &err, errstr, errsize);
    if (!res)
        return err;
    *found = PQntuples(res) == 1;
    err = *found ? delivery_from_row(res, d, correlation_id, errstr, errsize) : DETA_OK;
    PQclear(res);
    return err;
}

static deta_err_t release_driver(deta_db_t *db, const char *driver_id, char *errstr,
                                 size_t errsize) {
    const char *params[] = {driver_id};
    return deta_db_run(db,
                       "UPDATE drivers SET active_deliveries = active_deliveries - 1"
                       " WHERE driver_id = $1 AND active_deliveries > 0",
                       1, params, errstr, errsize);
}

deta_err_t delivery_store_save_stage(deta_db_t *db, const delivery_t *d, char *errstr,
                                     size_t errsize) {
    instant_param_t picked, delivered, eta, next;
    int64_t changed_ms = d->delivered_ms ? d->delivered_ms
                         : d->picked_up_ms ? d->picked_up_ms
                                           : d->assigned_ms;
    instant_param_t changed;
    const char *params[] = {d->delivery_id,
                            delivery_stage_name(d->status),
                            instant(&picked, d->picked_up_ms),
                            instant(&delivered, d->delivered_ms),
                            instant(&eta, d->eta_ms),
                            instant(&next, d->next_transition_ms),
                            instant(&changed, changed_ms)};
    deta_err_t err = deta_db_run(db,
                                 "UPDATE deliveries SET status = $2, picked_up_at = $3,"
                                 "  delivered_at = $4, estimated_delivery_at = $5,"
                                 "  next_transition_at = $6, updated_at = $7"
                                 " WHERE delivery_id = $1",
                                 7, params, errstr, errsize);
    if (!err && d->status == DELIVERY_DELIVERED)
        err = release_driver(db, d->driver_id, errstr, errsize);
    return err;
}

/* ---- events ---- */

/* One event for d's order to the outbox, occurring at occurred_ms. Takes payload. */
static deta_err_t add_event(deta_db_t *db, const char *type, const delivery_t *d,
                            const char *correlation_id, json_t *payload, int64_t occurred_ms,
                            char *errstr, size_t errsize) {
    if (!payload)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot build the %s payload", type);
    deta_event_t ev;
    deta_err_t err =
        deta_event_init(&ev, type, d->order_id, correlation_id, PRODUCER, payload, errstr, errsize);
    if (err)
        return err;
    delivery_format_instant(occurred_ms, ev.occurred_at);
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
    }
    return 0;
}

deta_err_t delivery_store_announce(deta_db_t *db, const delivery_t *d, const char *correlation_id,
                                   char *errstr, size_t errsize) {
    int64_t at = stage_instant(d);
    deta_err_t err = add_event(db, delivery_stage_event_type(d->status), d, correlation_id,
                               delivery_stage_payload(d), at, errstr, errsize);
    if (!err)
        err = add_event(db, DETA_EVT_ETA_UPDATED, d, correlation_id, delivery_eta_payload(d, at),
                        at, errstr, errsize);
    return err;
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

deta_err_t delivery_store_get_json(deta_db_t *db, const char *order_id, char **json,
                                   char *errstr, size_t errsize) {
    const char *params[] = {order_id};
    return query_text(db, SELECT_DELIVERY_SQL, 1, params, json, errstr, errsize);
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

deta_err_t delivery_store_count_active(deta_db_t *db, long *n, char *errstr, size_t errsize) {
    deta_err_t err;
    PGresult *res = deta_db_exec(db, "SELECT count(*) FROM deliveries WHERE status <> 'DELIVERED'",
                                 0, NULL, &err, errstr, errsize);
    if (!res)
        return err;
    *n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return DETA_OK;
}

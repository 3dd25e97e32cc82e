/*
 * outbox.c - the transactional outbox: the table and writing to it (see
 * deta/outbox.h; the relay is outbox_relay.c).
 *
 * deta_outbox_add() inserts the serialized envelope inside the caller's
 * transaction: the row exists only if the transaction commits, and then the
 * relay sees it in the write-ahead log (the publication deta_outbox), in
 * commit order. Nothing else is written: no notification, no mark.
 */
#include "deta/outbox.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/trace.h"

const deta_migration_t deta_outbox_migrations[] = {
    {1, "create outbox",
     "CREATE TABLE IF NOT EXISTS outbox ("
     " id bigserial PRIMARY KEY,"
     " topic text NOT NULL,"
     " msg_key text NOT NULL,"
     " payload text NOT NULL,"
     " created_at timestamptz NOT NULL DEFAULT now(),"
     " published_at timestamptz);"
     "CREATE INDEX IF NOT EXISTS outbox_unpublished_idx ON outbox (id)"
     " WHERE published_at IS NULL;"},
    {2, "park rows the broker refuses for good",
     "ALTER TABLE outbox ADD COLUMN IF NOT EXISTS parked_at timestamptz,"
     " ADD COLUMN IF NOT EXISTS parked_reason text;"
     "CREATE INDEX IF NOT EXISTS outbox_parked_key_idx ON outbox (msg_key)"
     " WHERE parked_at IS NOT NULL;"},
    {3, "carry the trace context of the transaction that wrote the row",
     "ALTER TABLE outbox ADD COLUMN IF NOT EXISTS traceparent text,"
     " ADD COLUMN IF NOT EXISTS tracestate text;"
     "CREATE INDEX IF NOT EXISTS outbox_traced_key_idx ON outbox (msg_key, id)"
     " WHERE traceparent IS NOT NULL;"},
    {4, "read the outbox from the write-ahead log",
     /* The relay streams the inserts (outbox_relay.c) and marks nothing: the
      * index of unmarked rows would hold every row. The purge goes by age
      * (a BRIN index: ids and ages ascend together), the relay's look for
      * parked and cleared rows by parked_reason. The rows an older relay had
      * not published are taken from the table once (legacy_drain). */
     "DROP INDEX IF EXISTS outbox_unpublished_idx;"
     "CREATE INDEX IF NOT EXISTS outbox_created_idx ON outbox USING brin (created_at);"
     "CREATE INDEX IF NOT EXISTS outbox_parked_reason_idx ON outbox (msg_key)"
     " WHERE parked_reason IS NOT NULL;"
     "CREATE TABLE IF NOT EXISTS outbox_relay_state ("
     " one boolean PRIMARY KEY DEFAULT true CHECK (one),"
     " legacy_drain boolean NOT NULL);"
     "INSERT INTO outbox_relay_state (legacy_drain) VALUES (true) ON CONFLICT DO NOTHING;"
     "DO $$ BEGIN"
     " IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'deta_outbox') THEN"
     "  CREATE PUBLICATION deta_outbox FOR TABLE outbox WITH (publish = 'insert');"
     " END IF; END $$;"},
    {5, "purge by id: no index on the rows' age",
     /* A BRIN's ranges only widen: once purged pages were reused, every range
      * matched and each purge read the whole table. The purge now takes the
      * oldest rows by id (retention.h), and no insert writes an age index. */
     "DROP INDEX IF EXISTS outbox_created_idx;"},
};
const size_t deta_outbox_migrations_count =
    sizeof deta_outbox_migrations / sizeof deta_outbox_migrations[0];

/* ---- writing ---- */

/* Appends to sql (size bytes, *used of them written); false, and nothing more
 * appended after, once it would not fit. */
static bool append(char *sql, size_t size, size_t *used, const char *fmt, ...) {
    if (*used >= size)
        return false;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(sql + *used, size - *used, fmt, ap);
    va_end(ap);
    *used = n < 0 || (size_t)n >= size - *used ? size : *used + (size_t)n;
    return *used < size;
}

/* The INSERT of n rows of one key, in the order given: $1 the key, then with
 * the trace context given ($2, $3) the rows' (topic, payload) pairs from $4,
 * else the pairs from $2 and the context of the key's latest traced row. False
 * when it does not fit in size (at DETA_OUTBOX_ADD_MAX rows it is about 510
 * bytes). */
static bool insert_sql(char *sql, size_t size, size_t n, bool context_given) {
    size_t first = context_given ? 4 : 2, used = 0;
    bool ok = append(sql, size, &used, "%s",
                     "INSERT INTO outbox (topic, msg_key, payload, traceparent, tracestate)");
    if (context_given) {
        ok = ok && append(sql, size, &used, " VALUES");
        for (size_t i = 0; i < n; i++)
            ok = ok && append(sql, size, &used, "%s ($%zu, $1, $%zu, $2, $3)", i ? "," : "",
                              first + 2 * i, first + 2 * i + 1);
        return ok;
    }
    ok = ok && append(sql, size, &used, "%s",
                      " SELECT v.t, $1, v.p, c.traceparent, c.tracestate FROM (VALUES");
    for (size_t i = 0; i < n; i++)
        ok = ok && append(sql, size, &used, "%s (%zu, $%zu::text, $%zu::text)", i ? "," : "", i,
                          first + 2 * i, first + 2 * i + 1);
    return ok && append(sql, size, &used, "%s",
                        ") v(n, t, p) LEFT JOIN LATERAL (SELECT traceparent, tracestate"
                        " FROM outbox WHERE msg_key = $1 AND traceparent IS NOT NULL"
                        " ORDER BY id DESC LIMIT 1) c ON true ORDER BY v.n");
}

/* DETA_OK when the n events, each with a topic, are a write of 1..max of them
 * (and, with one_key, of one orderId), inside an open transaction of db. */
static deta_err_t check_write(deta_db_t *db, const char *const *topics,
                              const deta_event_t *const *evs, size_t n, size_t max, bool one_key,
                              char *errstr, size_t errsize) {
    if (!db || !topics || !evs || n < 1 || n > max)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "an outbox write needs 1 to %zu events, each with a topic", max);
    for (size_t i = 0; i < n; i++)
        if (!topics[i] || !*topics[i])
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             "an outbox write needs a topic for each event");
    for (size_t i = 0; i < n; i++)
        if (!evs[i] || !evs[i]->order_id[0] ||
            (one_key && strcmp(evs[i]->order_id, evs[0]->order_id) != 0))
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             one_key ? "the events of an outbox write have one orderId (their key)"
                                     : "each event of an outbox write needs an orderId (its key)");
    PGconn *conn = deta_db_conn(db, errstr, errsize);
    if (!conn)
        return DETA_ERR_TRANSIENT;
    if (PQtransactionStatus(conn) == PQTRANS_IDLE)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "deta_outbox_add must run inside the caller's transaction");
    return DETA_OK;
}

/* The rows' trace context (deta/trace.h): the current span's (the
 * transaction's), written into traceparent and tracestate; false outside any
 * span with tracing on (a ticker, a sweeper): then each row takes that of its
 * order's latest traced row, so that the order's saga stays one trace (none
 * found: the relay starts a new one). With tracing off the context is given,
 * and empty. */
static bool context_given(char traceparent[DETA_TRACEPARENT_LEN + 1],
                          char tracestate[DETA_TRACESTATE_MAX + 1], bool *traced) {
    *traced = deta_span_current_headers(traceparent, tracestate);
    return *traced || !deta_trace_enabled();
}

/* Each event's envelope, malloc'd, into payloads (freed by the caller, NULL
 * when not made); false when out of memory. */
static bool serialize_all(const char *const *topics, const deta_event_t *const *evs, size_t n,
                          char **payloads) {
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        deta_span_event(deta_span_current(), "outbox.add", "messaging.destination.name",
                        topics[i]);
        ok = (payloads[i] = deta_event_serialize(evs[i])) != NULL;
    }
    return ok;
}

deta_err_t deta_outbox_add_many(deta_db_t *db, const char *const *topics,
                                const deta_event_t *const *evs, size_t n, char *errstr,
                                size_t errsize) {
    deta_err_t err = check_write(db, topics, evs, n, DETA_OUTBOX_ADD_MAX, true, errstr, errsize);
    if (err)
        return err;
    char traceparent[DETA_TRACEPARENT_LEN + 1], tracestate[DETA_TRACESTATE_MAX + 1];
    bool traced, given = context_given(traceparent, tracestate, &traced);
    const char *params[3 + 2 * DETA_OUTBOX_ADD_MAX] = {evs[0]->order_id};
    size_t first = 1;
    if (given) {
        params[1] = traced ? traceparent : NULL;
        params[2] = traced && tracestate[0] ? tracestate : NULL;
        first = 3;
    }
    char *payloads[DETA_OUTBOX_ADD_MAX] = {NULL};
    if (!serialize_all(topics, evs, n, payloads))
        err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    for (size_t i = 0; i < n; i++) {
        params[first + 2 * i] = topics[i];
        params[first + 2 * i + 1] = payloads[i];
    }
    if (!err) {
        char sql[1024];
        err = insert_sql(sql, sizeof sql, n, given)
                  ? deta_db_run(db, sql, (int)(first + 2 * n), params, errstr, errsize)
                  : deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "the outbox INSERT is too long");
    }
    for (size_t i = 0; i < n; i++)
        free(payloads[i]);
    return err;
}

/* deta_outbox_add_each's INSERT: the rows from three arrays, $1 the topics, $2
 * the keys, $3 the payloads, in the order given (WITH ORDINALITY: the ids follow
 * it). One text whatever the count: one prepared statement. */
#define EACH_ROWS                                                                      \
    " FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY v(t, k, p, n)"
/* ... with the trace context given, $4 and $5, every row's */
static const char INSERT_EACH_GIVEN_SQL[] =
    "INSERT INTO outbox (topic, msg_key, payload, traceparent, tracestate)"
    " SELECT v.t, v.k, v.p, $4, $5" EACH_ROWS " ORDER BY v.n";
/* ... else the context of each key's latest traced row */
static const char INSERT_EACH_SQL[] =
    "INSERT INTO outbox (topic, msg_key, payload, traceparent, tracestate)"
    " SELECT v.t, v.k, v.p, c.traceparent, c.tracestate" EACH_ROWS
    " LEFT JOIN LATERAL (SELECT traceparent, tracestate FROM outbox"
    "  WHERE msg_key = v.k AND traceparent IS NOT NULL ORDER BY id DESC LIMIT 1) c ON true"
    " ORDER BY v.n";
#undef EACH_ROWS

deta_err_t deta_outbox_add_each(deta_db_t *db, const char *const *topics,
                                const deta_event_t *const *evs, size_t n, char *errstr,
                                size_t errsize) {
    deta_err_t err = check_write(db, topics, evs, n, DETA_OUTBOX_EACH_MAX, false, errstr, errsize);
    if (err)
        return err;
    char traceparent[DETA_TRACEPARENT_LEN + 1], tracestate[DETA_TRACESTATE_MAX + 1];
    bool traced, given = context_given(traceparent, tracestate, &traced);
    char **payloads = calloc(n, sizeof *payloads);
    const char **keys = calloc(n, sizeof *keys);
    char *arrays[3] = {NULL, NULL, NULL};
    bool ok = payloads && keys && serialize_all(topics, evs, n, payloads);
    for (size_t i = 0; ok && i < n; i++)
        keys[i] = evs[i]->order_id;
    if (ok) {
        arrays[0] = deta_db_array(topics, n);
        arrays[1] = deta_db_array(keys, n);
        arrays[2] = deta_db_array((const char *const *)payloads, n);
        ok = arrays[0] && arrays[1] && arrays[2];
    }
    if (ok) {
        const char *params[] = {arrays[0], arrays[1], arrays[2], traced ? traceparent : NULL,
                                traced && tracestate[0] ? tracestate : NULL};
        err = given ? deta_db_run(db, INSERT_EACH_GIVEN_SQL, 5, params, errstr, errsize)
                    : deta_db_run(db, INSERT_EACH_SQL, 3, params, errstr, errsize);
    } else {
        err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    }
    for (size_t i = 0; payloads && i < n; i++)
        free(payloads[i]);
    for (size_t i = 0; i < 3; i++)
        free(arrays[i]);
    free(payloads);
    free(keys);
    return err;
}

deta_err_t deta_outbox_add(deta_db_t *db, const char *topic, const deta_event_t *ev,
                           char *errstr, size_t errsize) {
    if (!ev)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "an outbox row needs a topic and an event with an orderId");
    return deta_outbox_add_many(db, &topic, &ev, 1, errstr, errsize);
}

deta_err_t deta_outbox_check_server(deta_db_t *db, char *errstr, size_t errsize) {
    deta_err_t err;
    PGresult *res = deta_db_exec(db,
                                 "SELECT current_setting('wal_level'),"
                                 " (SELECT rolreplication OR rolsuper FROM pg_roles"
                                 "  WHERE rolname = current_user)",
                                 0, NULL, &err, errstr, errsize);
    if (!res)
        return err;
    bool logical = strcmp(PQgetvalue(res, 0, 0), "logical") == 0;
    bool replication = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    char level[32];
    snprintf(level, sizeof level, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    if (!logical)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "Postgres runs with wal_level = %s: the outbox relay reads the"
                         " write-ahead log and needs wal_level = logical", level);
    if (!replication)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "the role has no REPLICATION attribute: the outbox relay streams the"
                         " write-ahead log and needs it (ALTER ROLE ... REPLICATION)");
    return DETA_OK;
}

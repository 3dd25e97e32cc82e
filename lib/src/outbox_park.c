/*
 * outbox_park.c - the outbox rows the broker refuses for good, and their way
 * back (see outbox_internal.h). Everything here runs on the relay's SQL
 * connection, in autocommit: a park is written before the relay confirms the
 * stream past the row, so a parked row is never forgotten.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "deta/log.h"
#include "outbox_internal.h"

#define PARK_TRIES 20     /* a park finding fewer rows than asked: tries again... */
#define PARK_RETRY_MS 25 /* ...this far apart */

outbox_row_t *outbox_row_new(const char *const vals[OUTBOX_NCOLS],
                             const size_t lens[OUTBOX_NCOLS]) {
    size_t size = sizeof(outbox_row_t);
    for (int i = 0; i < OUTBOX_NCOLS; i++)
        size += vals[i] ? lens[i] + 1 : 0;
    outbox_row_t *row = calloc(1, size);
    if (!row)
        return NULL;
    char *at = (char *)(row + 1);
    char **fields[OUTBOX_NCOLS] = {&row->id, &row->topic, &row->key, &row->payload,
                                   &row->traceparent, &row->tracestate};
    for (int i = 0; i < OUTBOX_NCOLS; i++) {
        if (!vals[i])
            continue;
        memcpy(at, vals[i], lens[i]);
        at[lens[i]] = '\0';
        *fields[i] = at;
        at += lens[i] + 1;
    }
    row->payload_len = vals[OUTBOX_COL_PAYLOAD] ? lens[OUTBOX_COL_PAYLOAD] : 0;
    return row;
}

outbox_row_t *outbox_row_from_result(const PGresult *res, int i) {
    const char *vals[OUTBOX_NCOLS];
    size_t lens[OUTBOX_NCOLS];
    for (int c = 0; c < OUTBOX_NCOLS; c++) {
        vals[c] = PQgetisnull(res, i, c) ? NULL : PQgetvalue(res, i, c);
        lens[c] = (size_t)PQgetlength(res, i, c);
    }
    return outbox_row_new(vals, lens);
}

char *outbox_ids_literal(outbox_row_t *const *rows, size_t n, bool only_done) {
    size_t cap = 3;
    for (size_t i = 0; i < n; i++)
        cap += strlen(rows[i]->id) + 1;
    char *ids = malloc(cap);
    if (!ids)
        return NULL;
    size_t len = 0;
    ids[len++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (only_done && !rows[i]->done)
            continue;
        len += (size_t)snprintf(ids + len, cap - len, "%s%s", len > 1 ? "," : "", rows[i]->id);
    }
    snprintf(ids + len, cap - len, "}");
    return ids;
}

void outbox_held_free(outbox_held_t *h) {
    for (size_t i = 0; i < h->n; i++)
        free(h->keys[i]);
    free(h->keys);
    *h = (outbox_held_t){0};
}

bool outbox_held_has(const outbox_held_t *h, const char *key) {
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->keys[i], key) == 0)
            return true;
    return false;
}

bool outbox_held_add(outbox_held_t *h, const char *key) {
    if (outbox_held_has(h, key))
        return true;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 8;
        char **keys = realloc(h->keys, cap * sizeof *keys);
        if (!keys)
            return false;
        h->keys = keys;
        h->cap = cap;
    }
    char *copy = strdup(key);
    if (!copy)
        return false;
    h->keys[h->n++] = copy;
    return true;
}

deta_err_t outbox_held_load(deta_db_t *db, outbox_held_t *h, char *why, size_t whysize) {
    deta_err_t err;
    PGresult *res = deta_db_exec(db,
                                 "SELECT msg_key, count(*) FILTER (WHERE parked_at IS NOT NULL),"
                                 " count(*) FILTER (WHERE parked_at IS NULL)"
                                 " FROM outbox WHERE parked_reason IS NOT NULL GROUP BY msg_key",
                                 0, NULL, &err, why, whysize);
    if (!res)
        return err;
    outbox_held_free(h);
    for (int i = 0; i < PQntuples(res); i++) {
        if (!outbox_held_add(h, PQgetvalue(res, i, 0))) {
            PQclear(res);
            return deta_errf(DETA_ERR_INTERNAL, why, whysize, "out of memory");
        }
        h->parked += atof(PQgetvalue(res, i, 1));
        h->cleared += atof(PQgetvalue(res, i, 2));
    }
    PQclear(res);
    return DETA_OK;
}

deta_err_t outbox_park(deta_db_t *db, outbox_held_t *h, outbox_row_t *const *rows, size_t n,
                       const char *reason, char *why, size_t whysize) {
    if (n == 0)
        return DETA_OK;
    char *ids = outbox_ids_literal(rows, n, false);
    if (!ids)
        return deta_errf(DETA_ERR_INTERNAL, why, whysize, "out of memory");
    const char *params[] = {ids, reason};
    deta_err_t err;
    /* The stream may bring a transaction a moment before it is visible to
     * other sessions (Postgres writes the commit to the WAL, which the
     * walsender decodes, before it ends the transaction in shared memory): a
     * row just streamed may not be found yet. The UPDATE is tried again, each
     * time with a new snapshot, before the rows are taken for purged. */
    PGresult *res = NULL;
    for (int tries = 0;; tries++) {
        res = deta_db_exec(db,
                           "UPDATE outbox SET parked_at = now(), parked_reason = $2"
                           " WHERE id = ANY($1::bigint[]) RETURNING id",
                           2, params, &err, why, whysize);
        if (!res || (size_t)PQntuples(res) == n || tries == PARK_TRIES)
            break;
        PQclear(res);
        nanosleep(&(struct timespec){.tv_nsec = PARK_RETRY_MS * 1000000L}, NULL);
    }
    free(ids);
    if (!res)
        return err;
    if ((size_t)PQntuples(res) < n)
        DETA_ERROR("outbox relay: %zu of %zu rows to park are no longer in the table (purged):"
                   " they are dropped", n - (size_t)PQntuples(res), n);
    PQclear(res);
    for (size_t i = 0; i < n; i++) {
        DETA_ERROR("outbox relay: parked row %s (topic %s, order %s): %s", rows[i]->id,
                   rows[i]->topic ? rows[i]->topic : "", rows[i]->key ? rows[i]->key : "",
                   reason);
        rows[i]->done = true;
        if (rows[i]->key && !outbox_held_add(h, rows[i]->key))
            return deta_errf(DETA_ERR_INTERNAL, why, whysize, "out of memory");
    }
    h->parked += (double)n;
    return DETA_OK;
}

deta_err_t outbox_cleared_rows(deta_db_t *db, int limit, outbox_row_t ***rows, size_t *n,
                               char *why, size_t whysize) {
    *rows = NULL;
    *n = 0;
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *params[] = {lim};
    deta_err_t err;
    PGresult *res = deta_db_exec(db,
                                 "SELECT id, topic, msg_key, payload, traceparent, tracestate"
                                 " FROM outbox o WHERE parked_reason IS NOT NULL AND parked_at IS NULL"
                                 " AND NOT EXISTS (SELECT FROM outbox p WHERE p.msg_key = o.msg_key"
                                 "  AND p.parked_at IS NOT NULL AND p.id < o.id)"
                                 " ORDER BY id LIMIT $1::int",
                                 1, params, &err, why, whysize);
    if (!res)
        return err;
    int count = PQntuples(res);
    *rows = calloc(count ? (size_t)count : 1, sizeof **rows);
    if (!*rows) {
        PQclear(res);
        return deta_errf(DETA_ERR_INTERNAL, why, whysize, "out of memory");
    }
    for (int i = 0; i < count; i++) {
        outbox_row_t *row = outbox_row_from_result(res, i);
        if (!row) {
            PQclear(res);
            return deta_errf(DETA_ERR_INTERNAL, why, whysize, "out of memory");
        }
        (*rows)[(*n)++] = row;
    }
    PQclear(res);
    return DETA_OK;
}

deta_err_t outbox_cleared_done(deta_db_t *db, outbox_row_t *const *rows, size_t n, char *why,
                               size_t whysize) {
    char *ids = outbox_ids_literal(rows, n, true);
    if (!ids)
        return deta_errf(DETA_ERR_INTERNAL, why, whysize, "out of memory");
    const char *params[] = {ids};
    deta_err_t err = deta_db_run(db,
                                 "UPDATE outbox SET parked_reason = NULL"
                                 " WHERE id = ANY($1::bigint[]) AND parked_at IS NULL",
                                 1, params, why, whysize);
    free(ids);
    return err;
}

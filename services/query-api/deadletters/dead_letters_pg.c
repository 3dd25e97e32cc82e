/*
 * dead_letters_pg.c - the dead letters in Postgres (database delivery_query,
 * table dead_letters): the implementation of dead_letters.h.
 *
 * One row per message of a dlq.* topic, unique on (topic, partition, "offset"):
 * the capture consumer may see a message again after a restart or a rebalance,
 * and INSERT ... ON CONFLICT DO NOTHING makes that a no-op. Key and value are
 * bytea (a dead letter need not be text) and travel as hex both ways, so the
 * bytes are exact whatever the server's bytea_output. The headers are one jsonb
 * array in their order (domain.c's shape). A partial index serves the pending
 * walk of replay-all; (topic, msg_key) serves the list's key filter.
 *
 * A replay runs in one transaction on the calling thread's connection: SELECT
 * ... FOR UPDATE holds the row (SKIP LOCKED for replay-all, which must neither
 * wait for nor repeat a replay in progress), the caller's send function
 * publishes and waits for the broker, and the UPDATE of replay_count commits
 * only after that. A broker failure rolls back, so nothing is marked.
 */
#include "dead_letters.h"
#include "deta/timestamp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dead_letters {
    deta_service_t *svc;
};

static const deta_migration_t dead_letter_migrations[] = {
    {1, "dead_letters",
     "CREATE TABLE dead_letters ("
     "  id bigserial PRIMARY KEY,"
     "  topic text NOT NULL,"
     "  partition int NOT NULL,"
     "  \"offset\" bigint NOT NULL,"
     "  msg_key bytea,"
     "  value bytea,"
     "  headers jsonb NOT NULL DEFAULT '[]',"
     "  original_topic text,"
     "  original_partition int,"
     "  original_offset bigint,"
     "  consumer_group text,"
     "  error text,"
     "  retry_count int,"
     "  replayed_from text,"
     "  received_at timestamptz NOT NULL DEFAULT now(),"
     "  replay_count int NOT NULL DEFAULT 0,"
     "  last_replayed_at timestamptz,"
     "  UNIQUE (topic, partition, \"offset\"));"
     "CREATE INDEX dead_letters_topic_idx ON dead_letters (topic, id);"
     "CREATE INDEX dead_letters_pending_idx ON dead_letters (topic, id) WHERE replay_count = 0;"
     "CREATE INDEX dead_letters_key_idx ON dead_letters (topic, msg_key);"},
};

dead_letters_t *dead_letters_new(deta_service_t *svc) {
    dead_letters_t *s = calloc(1, sizeof *s);
    if (s)
        s->svc = svc;
    return s;
}

void dead_letters_free(dead_letters_t *s) { free(s); }

deta_err_t dead_letters_prepare(dead_letters_t *s, char *errstr, size_t errsize) {
    return deta_service_migrate(s->svc, "query-api-dead-letters", dead_letter_migrations,
                                sizeof dead_letter_migrations / sizeof *dead_letter_migrations,
                                errstr, errsize);
}

void dead_letter_page_clear(dead_letter_page_t *p) {
    for (size_t i = 0; i < p->n; i++)
        query_dead_letter_clear(&p->items[i]);
    free(p->items);
    memset(p, 0, sizeof *p);
}

static deta_db_t *connection(dead_letters_t *s, deta_err_t *err, char *errstr, size_t errsize) {
    deta_db_t *db = deta_db_pool_get(deta_service_db(s->svc));
    if (!db)
        *err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    return db;
}

static PGresult *query(dead_letters_t *s, const char *sql, int nparams, const char *const *params,
                       deta_err_t *err, char *errstr, size_t errsize) {
    deta_db_t *db = connection(s, err, errstr, errsize);
    return db ? deta_db_exec(db, sql, nparams, params, err, errstr, errsize) : NULL;
}

/* ---- bytes as hex ---- */

static char *hex_encode(const unsigned char *in, size_t n) {
    static const char digits[] = "0123456789abcdef";
    char *out = malloc(2 * n + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0xf];
    }
    out[2 * n] = '\0';
    return out;
}

static int hex_value(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A nullable hex column into the record's bytes; false when out of memory or
 * not hex (which Postgres's encode never yields). */
static bool hex_column(const PGresult *res, int row, int col, unsigned char **dst, size_t *len,
                       bool *present) {
    if (PQgetisnull(res, row, col))
        return query_dead_letter_set_bytes(dst, len, present, NULL, 0);
    const char *hex = PQgetvalue(res, row, col);
    size_t n = strlen(hex) / 2;
    unsigned char *bytes = malloc(n + 1);
    if (!bytes)
        return false;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(bytes);
            return false;
        }
        bytes[i] = (unsigned char)(hi << 4 | lo);
    }
    bool ok = query_dead_letter_set_bytes(dst, len, present, bytes, n);
    free(bytes);
    return ok;
}

/* ---- add ---- */

static const char INSERT_SQL[] =
    "INSERT INTO dead_letters (topic, partition, \"offset\", msg_key, value, headers,"
    "  original_topic, original_partition, original_offset, consumer_group, error,"
    "  retry_count, replayed_from)"
    " VALUES ($1, $2::int, $3::bigint, decode($4, 'hex'), decode($5, 'hex'), $6::jsonb,"
    "  $7, $8::int, $9::bigint, $10, $11, $12::int, $13)"
    " ON CONFLICT (topic, partition, \"offset\") DO NOTHING RETURNING id";

/* "" is SQL NULL. */
static const char *nullable(const char *s) { return s[0] ? s : NULL; }

/* A number, or NULL (into buf) when unknown (< 0). */
static const char *number_or_null(long long v, char *buf, size_t size) {
    if (v < 0)
        return NULL;
    snprintf(buf, size, "%lld", v);
    return buf;
}

deta_err_t dead_letters_add(dead_letters_t *s, const query_dead_letter_t *d, bool *added,
                            char *errstr, size_t errsize) {
    *added = false;
    char partition[16], offset[24], opart[16], ooff[24], retries[16];
    snprintf(partition, sizeof partition, "%d", (int)d->partition);
    snprintf(offset, sizeof offset, "%lld", (long long)d->offset);
    char *key = d->has_key ? hex_encode(d->key, d->key_len) : NULL;
    char *value = d->has_value ? hex_encode(d->value, d->value_len) : NULL;
    char *headers = json_dumps(d->headers, JSON_COMPACT);
    deta_err_t err = DETA_OK;
    if ((d->has_key && !key) || (d->has_value && !value) || !headers) {
        err = deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        goto done;
    }
    const char *params[] = {d->topic,
                            partition,
                            offset,
                            key,
                            value,
                            headers,
                            nullable(d->original_topic),
                            number_or_null(d->original_partition, opart, sizeof opart),
                            number_or_null(d->original_offset, ooff, sizeof ooff),
                            nullable(d->consumer_group),
                            nullable(d->error),
                            number_or_null(d->retry_count, retries, sizeof retries),
                            nullable(d->replayed_from)};
    PGresult *res = query(s, INSERT_SQL, 13, params, &err, errstr, errsize);
    if (res) {
        *added = PQntuples(res) == 1;
        PQclear(res);
    }
done:
    free(key);
    free(value);
    free(headers);
    return err;
}

/* ---- reading rows ---- */

#define MICROS(col) "(extract(epoch FROM " col ") * 1000000)::bigint"

/* The list's columns; a record read whole adds value and headers. */
#define SUMMARY_COLUMNS                                                                     \
    "id, topic, partition, \"offset\", encode(msg_key, 'hex'), original_topic,"             \
    " original_partition, original_offset, consumer_group, error, retry_count,"            \
    " replayed_from, " MICROS("received_at") ", replay_count, " MICROS("last_replayed_at")
#define DETAIL_COLUMNS SUMMARY_COLUMNS ", encode(value, 'hex'), headers::text"
#define SUMMARY_NCOLS 15

static void text_col(const PGresult *res, int row, int col, char *dst, size_t size) {
    snprintf(dst, size, "%s", PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col));
}

static long long number_col(const PGresult *res, int row, int col) {
    return PQgetisnull(res, row, col) ? -1 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static void instant_col(const PGresult *res, int row, int col, char dst[DETA_TS_LEN]) {
    dst[0] = '\0';
    if (!PQgetisnull(res, row, col))
        deta_timestamp_from_us(strtoll(PQgetvalue(res, row, col), NULL, 10), dst);
}

static deta_err_t detail_from_row(const PGresult *res, int row, query_dead_letter_t *d,
                                  char *errstr, size_t errsize) {
    if (!hex_column(res, row, SUMMARY_NCOLS, &d->value, &d->value_len, &d->has_value))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    json_error_t jerr;
    d->headers = json_loads(PQgetvalue(res, row, SUMMARY_NCOLS + 1), 0, &jerr);
    if (!json_is_array(d->headers))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "stored headers: %s", jerr.text);
    return DETA_OK;
}

/* A row into d (which the caller clears, also on failure). */
static deta_err_t record_from_row(const PGresult *res, int row, query_dead_letter_t *d,
                                  char *errstr, size_t errsize) {
    memset(d, 0, sizeof *d);
    d->id = number_col(res, row, 0);
    text_col(res, row, 1, d->topic, sizeof d->topic);
    d->partition = (int32_t)number_col(res, row, 2);
    d->offset = number_col(res, row, 3);
    if (!hex_column(res, row, 4, &d->key, &d->key_len, &d->has_key))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    text_col(res, row, 5, d->original_topic, sizeof d->original_topic);
    d->original_partition = (int32_t)number_col(res, row, 6);
    d->original_offset = number_col(res, row, 7);
    text_col(res, row, 8, d->consumer_group, sizeof d->consumer_group);
    text_col(res, row, 9, d->error, sizeof d->error);
    d->retry_count = (int)number_col(res, row, 10);
    text_col(res, row, 11, d->replayed_from, sizeof d->replayed_from);
    instant_col(res, row, 12, d->received_at);
    d->replay_count = (int)number_col(res, row, 13);
    instant_col(res, row, 14, d->last_replayed_at);
    if (PQnfields(res) > SUMMARY_NCOLS)
        return detail_from_row(res, row, d, errstr, errsize);
    return DETA_OK;
}

/* ---- counts and list ---- */

deta_err_t dead_letters_counts(dead_letters_t *s, query_dlq_counts_t out[QUERY_DLQ_TOPIC_COUNT],
                               char *errstr, size_t errsize) {
    memset(out, 0, QUERY_DLQ_TOPIC_COUNT * sizeof *out);
    deta_err_t err;
    PGresult *res = query(s,
                          "SELECT topic, count(*), count(*) FILTER (WHERE replay_count = 0)"
                          " FROM dead_letters GROUP BY topic",
                          0, NULL, &err, errstr, errsize);
    if (!res)
        return err;
    for (int row = 0; row < PQntuples(res); row++) {
        int i = query_dlq_topic_index(PQgetvalue(res, row, 0));
        if (i < 0)
            continue;
        out[i].total = strtol(PQgetvalue(res, row, 1), NULL, 10);
        out[i].pending = strtol(PQgetvalue(res, row, 2), NULL, 10);
    }
    PQclear(res);
    return DETA_OK;
}

/* One WHERE for the page and its total: an absent filter is a NULL parameter. */
#define LIST_WHERE                                                                          \
    " FROM dead_letters WHERE topic = $1"                                                   \
    " AND ($2::text = 'all' OR ($2::text = 'pending') = (replay_count = 0))"                \
    " AND ($3::text IS NULL OR msg_key = convert_to($3, 'UTF8'))"

static const char LIST_SQL[] =
    "SELECT " SUMMARY_COLUMNS LIST_WHERE " ORDER BY id LIMIT $4::int OFFSET $5::bigint";
static const char COUNT_SQL[] = "SELECT count(*)" LIST_WHERE;

static deta_err_t page_from_result(const PGresult *res, dead_letter_page_t *out, char *errstr,
                                   size_t errsize) {
    int rows = PQntuples(res);
    out->items = calloc(rows ? (size_t)rows : 1, sizeof *out->items);
    if (!out->items)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    for (int i = 0; i < rows; i++) {
        out->n = (size_t)i + 1;
        deta_err_t err = record_from_row(res, i, &out->items[i], errstr, errsize);
        if (err)
            return err;
    }
    return DETA_OK;
}

deta_err_t dead_letters_list(dead_letters_t *s, const char *topic,
                             const query_dlq_list_params_t *p, dead_letter_page_t *out,
                             char *errstr, size_t errsize) {
    memset(out, 0, sizeof *out);
    char limit[16], offset[24];
    snprintf(limit, sizeof limit, "%d", p->limit);
    snprintf(offset, sizeof offset, "%ld", p->offset);
    const char *params[] = {topic, query_dlq_status_name(p->status), p->has_key ? p->key : NULL,
                            limit, offset};
    deta_err_t err;
    PGresult *res = query(s, COUNT_SQL, 3, params, &err, errstr, errsize);
    if (!res)
        return err;
    out->total = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    res = query(s, LIST_SQL, 5, params, &err, errstr, errsize);
    if (!res)
        return err;
    err = page_from_result(res, out, errstr, errsize);
    PQclear(res);
    if (err)
        dead_letter_page_clear(out);
    return err;
}

/* ---- one record ---- */

static const char GET_SQL[] =
    "SELECT " DETAIL_COLUMNS " FROM dead_letters WHERE topic = $1 AND id = $2::bigint";

/* The one row of res into out; NOT_FOUND when there is none. */
static deta_err_t one_record(const PGresult *res, const char *topic, int64_t id,
                             query_dead_letter_t *out, char *errstr, size_t errsize) {
    if (PQntuples(res) == 0)
        return deta_errf(DETA_ERR_NOT_FOUND, errstr, errsize, "no dead letter %lld in %s",
                         (long long)id, topic);
    deta_err_t err = record_from_row(res, 0, out, errstr, errsize);
    if (err)
        query_dead_letter_clear(out);
    return err;
}

deta_err_t dead_letters_get(dead_letters_t *s, const char *topic, int64_t id,
                            query_dead_letter_t *out, char *errstr, size_t errsize) {
    memset(out, 0, sizeof *out);
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", (long long)id);
    const char *params[] = {topic, idtext};
    deta_err_t err;
    PGresult *res = query(s, GET_SQL, 2, params, &err, errstr, errsize);
    if (!res)
        return err;
    err = one_record(res, topic, id, out, errstr, errsize);
    PQclear(res);
    return err;
}

/* ---- replay ---- */

static const char LOCK_SQL[] = "SELECT " DETAIL_COLUMNS
                               " FROM dead_letters WHERE topic = $1 AND id = $2::bigint"
                               " FOR UPDATE";
static const char LOCK_PENDING_SQL[] = "SELECT " DETAIL_COLUMNS
                                       " FROM dead_letters WHERE topic = $1 AND id = $2::bigint"
                                       " AND replay_count = 0 FOR UPDATE SKIP LOCKED";
static const char MARK_SQL[] =
    "UPDATE dead_letters SET replay_count = replay_count + 1, last_replayed_at = now()"
    " WHERE id = $1::bigint RETURNING replay_count, " MICROS("last_replayed_at");

/* Holds the record in the open transaction on db and reads it into out. */
static deta_err_t lock_record(deta_db_t *db, const char *topic, int64_t id, bool pending_only,
                              query_dead_letter_t *out, char *errstr, size_t errsize) {
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", (long long)id);
    const char *params[] = {topic, idtext};
    deta_err_t err;
    PGresult *res = deta_db_exec(db, pending_only ? LOCK_PENDING_SQL : LOCK_SQL, 2, params, &err,
                                 errstr, errsize);
    if (!res)
        return err;
    err = one_record(res, topic, id, out, errstr, errsize);
    PQclear(res);
    return err;
}

static deta_err_t mark_replayed(deta_db_t *db, query_dead_letter_t *d, char *errstr,
                                size_t errsize) {
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", (long long)d->id);
    const char *params[] = {idtext};
    deta_err_t err;
    PGresult *res = deta_db_exec(db, MARK_SQL, 1, params, &err, errstr, errsize);
    if (!res)
        return err;
    if (PQntuples(res) == 1) {
        d->replay_count = (int)number_col(res, 0, 0);
        instant_col(res, 0, 1, d->last_replayed_at);
    }
    PQclear(res);
    return DETA_OK;
}

deta_err_t dead_letters_replay(dead_letters_t *s, const char *topic, int64_t id,
                               bool pending_only, dead_letter_send_fn send, void *opaque,
                               query_dead_letter_t *out, char *errstr, size_t errsize) {
    memset(out, 0, sizeof *out);
    deta_err_t err = DETA_OK;
    deta_db_t *db = connection(s, &err, errstr, errsize);
    if (!db)
        return err;
    if ((err = deta_db_begin(db, errstr, errsize)))
        return err;
    if (!(err = lock_record(db, topic, id, pending_only, out, errstr, errsize)) &&
        !(err = send(out, opaque, errstr, errsize)) &&
        !(err = mark_replayed(db, out, errstr, errsize)))
        err = deta_db_commit(db, errstr, errsize);
    if (err) {
        deta_db_rollback(db);
        query_dead_letter_clear(out);
    }
    return err;
}

/* ---- the pending walk ---- */

deta_err_t dead_letters_pending_ids(dead_letters_t *s, const char *topic, int64_t after,
                                    int64_t upto, int64_t *ids, size_t max, size_t *n,
                                    char *errstr, size_t errsize) {
    *n = 0;
    char a[24], u[24], m[24];
    snprintf(a, sizeof a, "%lld", (long long)after);
    snprintf(u, sizeof u, "%lld", (long long)upto);
    snprintf(m, sizeof m, "%zu", max);
    const char *params[] = {topic, a, u, m};
    deta_err_t err;
    PGresult *res = query(s,
                          "SELECT id FROM dead_letters WHERE topic = $1 AND replay_count = 0"
                          " AND id > $2::bigint AND id <= $3::bigint ORDER BY id LIMIT $4::int",
                          4, params, &err, errstr, errsize);
    if (!res)
        return err;
    for (int row = 0; row < PQntuples(res) && *n < max; row++)
        ids[(*n)++] = strtoll(PQgetvalue(res, row, 0), NULL, 10);
    PQclear(res);
    return DETA_OK;
}

deta_err_t dead_letters_last_id(dead_letters_t *s, const char *topic, int64_t *id, char *errstr,
                                size_t errsize) {
    const char *params[] = {topic};
    deta_err_t err;
    PGresult *res = query(s, "SELECT COALESCE(max(id), 0) FROM dead_letters WHERE topic = $1", 1,
                          params, &err, errstr, errsize);
    if (!res)
        return err;
    *id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return DETA_OK;
}

#undef MICROS

/*
 * cql.h - a client of Cassandra's native protocol, version 4 (the CQL binary
 * protocol), written from its specification (doc/native_protocol_v4.spec in
 * apache/cassandra). Debian packages no C driver; this is the part of one that the
 * read model needs, with the same habits as db.h and redis.h.
 *
 * A deta_cql_t is one connection to one node at a time, used by one thread at a
 * time (requests are synchronous; each still carries its own stream id, and an
 * answer on another stream is a protocol error). It connects on first use, to the
 * first contact point that answers, in the order given; when the connection is
 * lost, the next call reconnects, no sooner than the backoff allows (doubling from
 * reconnect_min_ms to reconnect_max_ms after each failed attempt, reset by a
 * success), trying every contact point again. A deta_cql_pool_t hands each thread
 * its own deta_cql_t, like deta_db_pool_t.
 *
 * Every request is bounded by request_timeout_ms (the TCP connect to each contact
 * point by connect_timeout_ms; each request of the handshake, like any other, by
 * request_timeout_ms); a request that timed out loses the connection (its answer
 * could still arrive) and is DETA_ERR_TRANSIENT. A request is never sent twice by
 * the client except an EXECUTE answered UNPREPARED (0x2500): the statement is
 * prepared again and executed once more.
 *
 * Errors, as deta_err_t (the server's code is kept, deta_cql_last_error()):
 *   TRANSIENT  the connection (refused, lost, timed out, cut mid-frame, an answer
 *              on another stream than the request's: the connection is dropped), the
 *              server's Unavailable, Overloaded, IsBootstrapping, Truncate_error,
 *              Read/Write timeout, Read/Write failure, Server error, and an
 *              Unprepared that outlived its one re-prepare: retry later;
 *   INTERNAL   Syntax, Invalid, Unauthorized, Config, Bad credentials,
 *              Function failure, Protocol error, and a malformed answer (a frame
 *              larger than max_frame_bytes, a body that does not parse): a bug or a
 *              misconfiguration, not the caller's input. errstr carries the
 *              server's message;
 *   CONFLICT   Already_exists (0x2400).
 *
 * Values are bound by position (deta_cql_value_t), results are read by row and
 * column with the typed getters below, which check each cell's length against
 * its type.
 */
#ifndef DETA_CQL_H
#define DETA_CQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deta/config.h"
#include "deta/err.h"

/* ---- protocol constants (spec sections 3, 4.2.1, 6) ---- */

typedef enum deta_cql_consistency {
    DETA_CQL_ANY = 0x0000,
    DETA_CQL_ONE = 0x0001,
    DETA_CQL_TWO = 0x0002,
    DETA_CQL_THREE = 0x0003,
    DETA_CQL_QUORUM = 0x0004,
    DETA_CQL_ALL = 0x0005,
    DETA_CQL_LOCAL_QUORUM = 0x0006,
    DETA_CQL_EACH_QUORUM = 0x0007,
    DETA_CQL_SERIAL = 0x0008,
    DETA_CQL_LOCAL_SERIAL = 0x0009,
    DETA_CQL_LOCAL_ONE = 0x000A,
} deta_cql_consistency_t;

/* "LOCAL_QUORUM" and the others, as written in the settings; -1 when unknown. */
int deta_cql_consistency_parse(const char *name);
const char *deta_cql_consistency_name(deta_cql_consistency_t c);

/* The [option] ids of column types that this client reads and writes. */
typedef enum deta_cql_type {
    DETA_CQL_T_CUSTOM = 0x0000,
    DETA_CQL_T_ASCII = 0x0001,
    DETA_CQL_T_BIGINT = 0x0002,
    DETA_CQL_T_BLOB = 0x0003,
    DETA_CQL_T_BOOLEAN = 0x0004,
    DETA_CQL_T_COUNTER = 0x0005,
    DETA_CQL_T_DECIMAL = 0x0006,
    DETA_CQL_T_DOUBLE = 0x0007,
    DETA_CQL_T_FLOAT = 0x0008,
    DETA_CQL_T_INT = 0x0009,
    DETA_CQL_T_TIMESTAMP = 0x000B,
    DETA_CQL_T_UUID = 0x000C,
    DETA_CQL_T_VARCHAR = 0x000D,
    DETA_CQL_T_VARINT = 0x000E,
    DETA_CQL_T_TIMEUUID = 0x000F,
    DETA_CQL_T_INET = 0x0010,
    DETA_CQL_T_DATE = 0x0011,
    DETA_CQL_T_TIME = 0x0012,
    DETA_CQL_T_SMALLINT = 0x0013,
    DETA_CQL_T_TINYINT = 0x0014,
    DETA_CQL_T_LIST = 0x0020,
    DETA_CQL_T_MAP = 0x0021,
    DETA_CQL_T_SET = 0x0022,
    DETA_CQL_T_UDT = 0x0030,
    DETA_CQL_T_TUPLE = 0x0031,
} deta_cql_type_t;

/* Server error codes (spec 9). */
#define DETA_CQL_E_SERVER 0x0000
#define DETA_CQL_E_PROTOCOL 0x000A
#define DETA_CQL_E_BAD_CREDENTIALS 0x0100
#define DETA_CQL_E_UNAVAILABLE 0x1000
#define DETA_CQL_E_OVERLOADED 0x1001
#define DETA_CQL_E_BOOTSTRAPPING 0x1002
#define DETA_CQL_E_TRUNCATE 0x1003
#define DETA_CQL_E_WRITE_TIMEOUT 0x1100
#define DETA_CQL_E_READ_TIMEOUT 0x1200
#define DETA_CQL_E_READ_FAILURE 0x1300
#define DETA_CQL_E_FUNCTION_FAILURE 0x1400
#define DETA_CQL_E_WRITE_FAILURE 0x1500
#define DETA_CQL_E_SYNTAX 0x2000
#define DETA_CQL_E_UNAUTHORIZED 0x2100
#define DETA_CQL_E_INVALID 0x2200
#define DETA_CQL_E_CONFIG 0x2300
#define DETA_CQL_E_ALREADY_EXISTS 0x2400
#define DETA_CQL_E_UNPREPARED 0x2500

/* The deta_err_t a server error code maps to (see the table above). */
deta_err_t deta_cql_error_class(int code);

/* ---- values bound to a statement ---- */

typedef enum deta_cql_value_kind {
    DETA_CQL_V_SET = 0, /* a value of `type` */
    DETA_CQL_V_NULL,    /* [value] length -1 */
    DETA_CQL_V_UNSET,   /* [value] length -2: leaves the column as it is */
} deta_cql_value_kind_t;

/* One bound value. Text and bytes are borrowed: they must outlive the call. */
typedef struct deta_cql_value {
    deta_cql_value_kind_t kind;
    deta_cql_type_t type; /* VARCHAR/ASCII, INT, BIGINT, TIMESTAMP (ms), BOOLEAN,
                             UUID/TIMEUUID, BLOB, DECIMAL (as bytes) */
    union {
        const char *text;
        int32_t i32;
        int64_t i64; /* BIGINT, and TIMESTAMP in milliseconds since the epoch */
        bool b;
        uint8_t uuid[16];
        struct {
            const uint8_t *p;
            size_t n;
        } bytes;
    } u;
} deta_cql_value_t;

/* Constructors. deta_cql_text(NULL) is null; deta_cql_uuid_text() parses the
 * 36-character form (kind NULL when s is NULL or "", and DETA_CQL_V_UNSET never);
 * it returns false for text that is not a UUID, leaving *v null. */
deta_cql_value_t deta_cql_text(const char *s);
deta_cql_value_t deta_cql_int(int32_t i);
deta_cql_value_t deta_cql_bigint(int64_t i);
deta_cql_value_t deta_cql_timestamp_ms(int64_t ms);
deta_cql_value_t deta_cql_bool(bool b);
deta_cql_value_t deta_cql_blob(const uint8_t *p, size_t n);
deta_cql_value_t deta_cql_null(void);
deta_cql_value_t deta_cql_unset(void);
bool deta_cql_uuid_text(const char *s, deta_cql_value_t *v);

/* ---- requests ---- */

/* A QUERY (cql is the text), or an EXECUTE (cql is the text of a statement this
 * connection prepares once and keeps, see deta_cql_execute). Zero-initialized
 * fields leave the corresponding flag unset, except consistency. */
typedef struct deta_cql_query {
    const char *cql;
    const deta_cql_value_t *values;
    size_t nvalues;
    deta_cql_consistency_t consistency;
    bool has_serial;                          /* flag 0x10 */
    deta_cql_consistency_t serial_consistency; /* SERIAL or LOCAL_SERIAL */
    int32_t page_size;                        /* > 0: flag 0x04 */
    const uint8_t *paging_state;              /* non-NULL: flag 0x08 */
    size_t paging_state_len;
    bool has_timestamp;                       /* flag 0x20 */
    int64_t timestamp_us;
    bool skip_metadata;                       /* flag 0x02 */
} deta_cql_query_t;

typedef enum deta_cql_batch_type {
    DETA_CQL_BATCH_LOGGED = 0,
    DETA_CQL_BATCH_UNLOGGED = 1,
    DETA_CQL_BATCH_COUNTER = 2,
} deta_cql_batch_type_t;

/* One statement of a batch: prepared (deta_cql_batch prepares cql on this
 * connection) or sent as text, with its values. */
typedef struct deta_cql_batch_item {
    const char *cql;
    bool prepared;
    const deta_cql_value_t *values;
    size_t nvalues;
} deta_cql_batch_item_t;

typedef struct deta_cql_batch {
    deta_cql_batch_type_t type;
    const deta_cql_batch_item_t *items;
    size_t nitems;
    deta_cql_consistency_t consistency;
    bool has_serial;
    deta_cql_consistency_t serial_consistency;
    bool has_timestamp;
    int64_t timestamp_us;
} deta_cql_batch_t;

/* ---- results ---- */

typedef enum deta_cql_result_kind {
    DETA_CQL_RESULT_VOID = 0x0001,
    DETA_CQL_RESULT_ROWS = 0x0002,
    DETA_CQL_RESULT_SET_KEYSPACE = 0x0003,
    DETA_CQL_RESULT_PREPARED = 0x0004,
    DETA_CQL_RESULT_SCHEMA_CHANGE = 0x0005,
} deta_cql_result_kind_t;

#define DETA_CQL_NAME_MAX 256 /* keyspace, table and column names, plus NUL */

/* A column's type: collections name their element types (a map: key, value). */
typedef struct deta_cql_coltype {
    deta_cql_type_t type;
    deta_cql_type_t sub[2];
} deta_cql_coltype_t;

typedef struct deta_cql_column {
    char keyspace[DETA_CQL_NAME_MAX];
    char table[DETA_CQL_NAME_MAX];
    char name[DETA_CQL_NAME_MAX];
    deta_cql_coltype_t type;
} deta_cql_column_t;

/* A cell of a Rows result, pointing into the result's body; data is NULL and len
 * -1 for null. */
typedef struct deta_cql_cell {
    const uint8_t *data;
    int32_t len;
} deta_cql_cell_t;

/* A decoded RESULT. Owns everything it points to (deta_cql_result_clear). */
typedef struct deta_cql_result {
    deta_cql_result_kind_t kind;
    /* Rows, and the result metadata of Prepared */
    size_t ncolumns;
    deta_cql_column_t *columns;
    size_t nrows;
    deta_cql_cell_t *cells; /* nrows * ncolumns, row-major */
    bool has_more_pages;
    uint8_t *paging_state;  /* when has_more_pages */
    size_t paging_state_len;
    /* Set_keyspace, and the keyspace of Schema_change */
    char keyspace[DETA_CQL_NAME_MAX];
    /* Prepared */
    uint8_t *prepared_id;
    size_t prepared_id_len;
    size_t nbind;                 /* bind markers */
    deta_cql_column_t *bind;      /* their names and types */
    size_t npk;                   /* partition key indexes among the markers */
    uint16_t *pk;
    /* Schema_change: "CREATED"/"UPDATED"/"DROPPED", "KEYSPACE"/"TABLE"/"TYPE"/
     * "FUNCTION"/"AGGREGATE", and the object's name ("" for a keyspace) */
    char change[16];
    char target[16];
    char name[DETA_CQL_NAME_MAX];
    /* warnings the server sent with the answer (flag 0x08), joined by "; " */
    char *warnings;
    void *body_; /* the frame body the cells point into */
} deta_cql_result_t;

void deta_cql_result_clear(deta_cql_result_t *r);

/* Index of the column named `name`, or -1. */
int deta_cql_column_index(const deta_cql_result_t *r, const char *name);
const deta_cql_cell_t *deta_cql_cell(const deta_cql_result_t *r, size_t row, size_t col);

/* Typed getters. Each returns DETA_OK and sets *is_null (when not NULL) for a null
 * cell (leaving the output zero or ""), DETA_ERR_INVALID when the cell's length
 * does not fit the type (an int of 3 bytes, text longer than dstsize - 1, text
 * that is not UTF-8 for varchar), naming the column in errstr. */
deta_err_t deta_cql_get_text(const deta_cql_result_t *r, size_t row, size_t col, char *dst,
                             size_t dstsize, bool *is_null, char *errstr, size_t errsize);
deta_err_t deta_cql_get_int(const deta_cql_result_t *r, size_t row, size_t col, int32_t *out,
                            bool *is_null, char *errstr, size_t errsize);
/* BIGINT, COUNTER and TIMESTAMP (milliseconds) */
deta_err_t deta_cql_get_bigint(const deta_cql_result_t *r, size_t row, size_t col, int64_t *out,
                               bool *is_null, char *errstr, size_t errsize);
deta_err_t deta_cql_get_bool(const deta_cql_result_t *r, size_t row, size_t col, bool *out,
                             bool *is_null, char *errstr, size_t errsize);
/* UUID and TIMEUUID, written in the 36-character lower-case form. */
deta_err_t deta_cql_get_uuid(const deta_cql_result_t *r, size_t row, size_t col,
                             char out[37], bool *is_null, char *errstr, size_t errsize);

/* ---- the connection ---- */

typedef struct deta_cql_settings {
    const char *contact_points; /* "host[:port],host[:port]..." */
    int port;                   /* for contact points without one; 9042 when 0 */
    const char *username;       /* NULL or "": no authentication offered */
    const char *password;
    const char *keyspace;       /* NULL or "": none; else USE after connecting */
    const char *local_dc;       /* NULL or "": any; else contact points whose
                                   system.local data_center differs are tried last */
    int connect_timeout_ms;     /* 0: 5000 */
    int request_timeout_ms;     /* 0: 12000 */
    int reconnect_min_ms;       /* 0: 100 */
    int reconnect_max_ms;       /* 0: 10000 */
    size_t max_frame_bytes;     /* 0: 16 MiB; a larger answer is refused */
} deta_cql_settings_t;

typedef struct deta_cql deta_cql_t;
typedef struct deta_cql_pool deta_cql_pool_t;

/* Copies the settings; never connects. NULL when out of memory or the contact
 * points do not parse (errstr says which). */
deta_cql_t *deta_cql_new(const deta_cql_settings_t *s, char *errstr, size_t errsize);
void deta_cql_free(deta_cql_t *c);

/* Connects now (STARTUP, authentication, USE) unless connected. TRANSIENT while
 * no contact point answers or the backoff has not elapsed. */
deta_err_t deta_cql_connect(deta_cql_t *c, char *errstr, size_t errsize);
bool deta_cql_connected(const deta_cql_t *c);
/* Drops the connection (the next call reconnects, backoff aside). */
void deta_cql_disconnect(deta_cql_t *c);
/* "host:port" of the node connected to, "" when none. */
const char *deta_cql_node(const deta_cql_t *c);

/* OPTIONS: the server's SUPPORTED multimap, written as "KEY=v1,v2;KEY=v..." */
deta_err_t deta_cql_options(deta_cql_t *c, char *out, size_t outsize, char *errstr,
                            size_t errsize);

/* QUERY with q->cql as text. *out is filled on DETA_OK (clear it after). */
deta_err_t deta_cql_query(deta_cql_t *c, const deta_cql_query_t *q, deta_cql_result_t *out,
                          char *errstr, size_t errsize);
/* EXECUTE of q->cql, prepared on this connection on first use and kept in its
 * cache (by text) until the connection is lost; an UNPREPARED answer prepares it
 * again and executes once more. */
deta_err_t deta_cql_execute(deta_cql_t *c, const deta_cql_query_t *q, deta_cql_result_t *out,
                            char *errstr, size_t errsize);
/* PREPARE alone (EXECUTE does it when needed); *out is the Prepared result. */
deta_err_t deta_cql_prepare(deta_cql_t *c, const char *cql, deta_cql_result_t *out,
                            char *errstr, size_t errsize);
deta_err_t deta_cql_batch(deta_cql_t *c, const deta_cql_batch_t *b, deta_cql_result_t *out,
                          char *errstr, size_t errsize);

/* The server's error code of the last request that failed with an ERROR answer,
 * -1 when the last failure was not an answer (or nothing failed). */
int deta_cql_last_error(const deta_cql_t *c);

/* Counters since deta_cql_new, for tests and metrics. */
typedef struct deta_cql_stats {
    unsigned long requests;     /* frames sent */
    unsigned long bytes_out, bytes_in;
    unsigned long prepares;     /* PREPARE frames sent */
    unsigned long reprepares;   /* after UNPREPARED */
    unsigned long connects;     /* successful handshakes */
} deta_cql_stats_t;
void deta_cql_get_stats(const deta_cql_t *c, deta_cql_stats_t *out);

/* One deta_cql_t per thread, each with these settings (copied). */
deta_cql_pool_t *deta_cql_pool_new(const deta_cql_settings_t *s, char *errstr, size_t errsize);
/* The calling thread's connection (not yet connected the first time); NULL when
 * out of memory. */
deta_cql_t *deta_cql_pool_get(deta_cql_pool_t *p);
void deta_cql_pool_free(deta_cql_pool_t *p);

#endif

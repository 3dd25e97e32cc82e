/*
 * pgoutput.h - private to libdeta: the messages of Postgres's logical
 * replication stream, as its documentation describes them ("Streaming
 * Replication Protocol": the CopyData messages XLogData 'w', Primary keepalive
 * 'k' and Standby status update 'r'; "Logical Replication Message Formats":
 * what the pgoutput plugin writes, protocol version 1). The outbox relay reads
 * the outbox table's inserts this way (outbox.c). Pure functions, no I/O: the
 * bytes come from the server and are checked before use (fuzzed:
 * tests/fuzz/fuzz_pgoutput.c). All integers are big-endian.
 *
 * Parsed values point into the buffer given (no copies): they live as long as
 * it does. Strings of the stream (relation names) end in NUL in the stream and
 * are returned as such pointers after that NUL was found within the buffer.
 */
#ifndef DETA_PGOUTPUT_H
#define DETA_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A WAL position, as Postgres writes it in text: "16/B374D848". */
typedef uint64_t deta_lsn_t;
#define DETA_LSN_TEXT_MAX 18 /* "FFFFFFFF/FFFFFFFF" and its NUL */
/* false unless s is exactly such a position. */
bool deta_lsn_parse(const char *s, deta_lsn_t *out);
/* Writes lsn as text into out (DETA_LSN_TEXT_MAX bytes); returns out. */
char *deta_lsn_format(deta_lsn_t lsn, char out[DETA_LSN_TEXT_MAX]);

/* Postgres's timestamps count microseconds from 2000-01-01 00:00 UTC. */
int64_t deta_pg_time_from_unix_ms(int64_t unix_ms);
int64_t deta_pg_time_to_unix_ms(int64_t pg_us);

/* ---- the replication stream's CopyData messages ---- */

typedef struct deta_repl_frame {
    char kind;              /* 'w' XLogData or 'k' keepalive */
    deta_lsn_t wal_start;   /* 'w': where the data starts; 'k': 0 */
    deta_lsn_t wal_end;     /* the server's end of WAL ('k': how far it has sent) */
    int64_t send_time;      /* Postgres time (see above) */
    bool reply_requested;   /* 'k': the server asks for a status update now */
    const uint8_t *data;    /* 'w': one pgoutput message; NULL for 'k' */
    size_t len;
} deta_repl_frame_t;

/* 0, or -1 when buf is not a whole 'w' or 'k' message (too short, another
 * kind, a keepalive with bytes left over). */
int deta_repl_frame_parse(const uint8_t *buf, size_t len, deta_repl_frame_t *out);

#define DETA_REPL_STATUS_LEN 34
/* The Standby status update 'r' (written, flushed, applied, now, reply
 * requested) into out; returns DETA_REPL_STATUS_LEN. */
size_t deta_repl_status(uint8_t out[DETA_REPL_STATUS_LEN], deta_lsn_t written,
                        deta_lsn_t flushed, deta_lsn_t applied, int64_t now_pg,
                        bool reply_requested);

/* ---- pgoutput's messages (protocol version 1) ---- */

#define DETA_PGO_MAX_COLS 64   /* more columns in a relation or tuple: refused */
#define DETA_PGO_NAME_MAX 64   /* Postgres's NAMEDATALEN, NUL included */

typedef struct deta_pgo_value {
    char kind;                 /* 'n' null, 'u' unchanged TOAST value (not sent), 't' text */
    const uint8_t *data;       /* 't': the value's text, not NUL-terminated */
    uint32_t len;
} deta_pgo_value_t;

typedef struct deta_pgo_tuple {
    int ncols;
    deta_pgo_value_t cols[DETA_PGO_MAX_COLS];
} deta_pgo_tuple_t;

typedef struct deta_pgo_msg {
    char kind; /* 'B' begin, 'C' commit, 'R' relation, 'I' insert, 'U' update,
                * 'D' delete, 'T' truncate, 'O' origin, 'Y' type, 'M' message:
                * the last four are recognized and carry nothing here */
    union {
        struct { deta_lsn_t final_lsn; int64_t commit_time; uint32_t xid; } begin;
        struct { uint8_t flags; deta_lsn_t commit_lsn, end_lsn; int64_t commit_time; } commit;
        struct {
            uint32_t oid;
            const char *nspname, *relname; /* NUL-terminated, in the buffer */
            char replident;
            int ncols;
            const char *colnames[DETA_PGO_MAX_COLS]; /* NUL-terminated, in the buffer */
        } relation;
        struct {
            uint32_t relid;
            bool has_old;          /* 'U', 'D': an old tuple ('K' key or 'O' whole) came */
            deta_pgo_tuple_t old;  /* 'U' with has_old, 'D' */
            deta_pgo_tuple_t tuple; /* 'I', 'U': the new row */
        } change;
    } u;
} deta_pgo_msg_t;

/* 0, or -1 when buf is not one whole, well-formed pgoutput message of a kind
 * above (bytes left over, a count or length past the end, a name without its
 * NUL or longer than DETA_PGO_NAME_MAX, more than DETA_PGO_MAX_COLS columns, an
 * unknown tuple kind). */
int deta_pgo_parse(const uint8_t *buf, size_t len, deta_pgo_msg_t *out);

#endif

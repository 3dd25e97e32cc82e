/*
 * cql_script_server.h - a scripted CQL v4 server for the client's tests
 * (tests/unit/test_cql_client.c), written from the protocol's specification
 * (doc/native_protocol_v4.spec in apache/cassandra) with a reader and writer of
 * its own: it never uses lib/src/cql_codec.c, so that the client is tested
 * against an encoding it did not make.
 *
 * It listens on 127.0.0.1 on an ephemeral port, in a thread, and serves one
 * connection at a time (the next is accepted when the client closes the current
 * one). A script is a list of steps, consumed in order across connections: each
 * step expects one request (its opcode, and optionally its query text,
 * consistency, values, paging, prepared id, batch items, auth token) and then
 * answers it with a frame or misbehaves (closes, cuts the answer after n bytes,
 * stays silent, announces an oversized body, corrupts the header, answers on
 * another stream). A request that does not match its step, or comes when no step
 * is left, is a complaint: cqls_verify() returns the first one.
 *
 * Usage: cqls_t *s = cqls_start(); cqls_ready(cqls_expect(s, CQLS_STARTUP)); ...
 * connect a client to 127.0.0.1:cqls_port(s); then assert_null(cqls_verify(s))
 * and cqls_free(s). Steps are scripted before the client runs.
 */
#ifndef CQL_SCRIPT_SERVER_H
#define CQL_SCRIPT_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Request opcodes (spec 2.4). */
#define CQLS_STARTUP 0x01
#define CQLS_OPTIONS 0x05
#define CQLS_QUERY 0x07
#define CQLS_PREPARE 0x09
#define CQLS_EXECUTE 0x0A
#define CQLS_BATCH 0x0D
#define CQLS_AUTH_RESPONSE 0x0F

typedef struct cqls cqls_t;
typedef struct cqls_step cqls_step_t;

cqls_t *cqls_start(void);
int cqls_port(const cqls_t *s);
/* Stops the thread, closes everything. NULL is fine. */
void cqls_free(cqls_t *s);
/* NULL when every step was reached and every request matched its step; else the
 * first complaint (valid until cqls_free). */
const char *cqls_verify(cqls_t *s);
/* Connections accepted so far. */
int cqls_connections(cqls_t *s);
/* Requests read so far, and the stream id of each (the first 64). */
int cqls_requests(cqls_t *s);
int cqls_stream_of(cqls_t *s, int request);

/* A port of 127.0.0.1 where nothing listens (a connection there is refused). */
int cqls_closed_port(void);

/* ---- steps: what the next request must be ---- */

cqls_step_t *cqls_expect(cqls_t *s, uint8_t opcode);
/* QUERY and PREPARE: the exact text. */
void cqls_expect_query(cqls_step_t *st, const char *text);
void cqls_expect_consistency(cqls_step_t *st, int consistency);
/* QUERY and EXECUTE: one more bound value, its bytes (len -1: null, -2: unset).
 * Expecting no value at all: cqls_expect_nvalues(st, 0). */
void cqls_expect_value(cqls_step_t *st, const void *p, int len);
void cqls_expect_nvalues(cqls_step_t *st, int n);
void cqls_expect_page_size(cqls_step_t *st, int page_size);
/* p NULL: the request must carry no paging state. */
void cqls_expect_paging_state(cqls_step_t *st, const void *p, size_t n);
/* EXECUTE: the prepared id. */
void cqls_expect_id(cqls_step_t *st, const void *p, size_t n);
/* AUTH_RESPONSE: the token. */
void cqls_expect_token(cqls_step_t *st, const void *p, size_t n);
/* BATCH: its type, and one more item: prepared (id) or text, with n values. */
void cqls_expect_batch_type(cqls_step_t *st, int type);
void cqls_expect_batch_item(cqls_step_t *st, const char *text, const void *id, size_t idlen,
                            int nvalues);

/* ---- answers ---- */

void cqls_ready(cqls_step_t *st);
void cqls_authenticate(cqls_step_t *st, const char *authenticator);
void cqls_auth_challenge(cqls_step_t *st);
void cqls_auth_success(cqls_step_t *st);
/* SUPPORTED: n keys, each with its values written "v1,v2". */
void cqls_supported(cqls_step_t *st, int n, const char *const *keys,
                    const char *const *values);
void cqls_void(cqls_step_t *st);
void cqls_set_keyspace(cqls_step_t *st, const char *keyspace);
/* A Prepared result with nbind varchar markers and no result metadata. */
void cqls_prepared(cqls_step_t *st, const void *id, size_t idlen, int nbind);
void cqls_schema_change(cqls_step_t *st, const char *change, const char *target,
                        const char *keyspace, const char *name);

typedef struct cqls_cell {
    const void *p;
    int len; /* -1: null */
} cqls_cell_t;
/* A Rows result (global table spec "ks"."t"), ncols columns of the given [option]
 * type ids, nrows rows of cells (row-major); a paging state sets Has_more_pages. */
void cqls_rows(cqls_step_t *st, int ncols, const char *const *names, const uint16_t *types,
               int nrows, const cqls_cell_t *cells, const void *paging_state,
               size_t paging_len);
/* An ERROR with the fields its code adds (zeros, "SIMPLE", the keyspace "ks"). */
void cqls_error(cqls_step_t *st, int32_t code, const char *message);
void cqls_error_unprepared(cqls_step_t *st, const void *id, size_t idlen, const char *message);
/* Before the answer, an EVENT frame on stream -1 (STATUS_CHANGE UP). */
void cqls_event_first(cqls_step_t *st);

/* ---- misbehaviour (instead of, or done to, the answer) ---- */

/* Reads the request and closes the connection without answering. */
void cqls_close(cqls_step_t *st);
/* Sends the first n bytes of the answer, then closes. */
void cqls_cut(cqls_step_t *st, size_t n);
/* Never answers; the connection stays open until the client closes it. */
void cqls_silent(cqls_step_t *st);
/* Sends a header announcing a body of `length` bytes, and no body. */
void cqls_oversized(cqls_step_t *st, uint32_t length);
/* Sends the answer, then closes the connection (a node restarting between two
 * requests). */
void cqls_answer_then_close(cqls_step_t *st);
/* Sends the answer with a version byte that is no v4 response (0x05). */
void cqls_bad_header(cqls_step_t *st);
/* Sends the answer on the request's stream + 1. */
void cqls_wrong_stream(cqls_step_t *st);

#endif

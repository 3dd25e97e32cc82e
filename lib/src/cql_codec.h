/*
 * cql_codec.h - private to libdeta: the frames of the CQL native protocol v4,
 * encoded and decoded without I/O (cql_codec.c), under the connection of cql.c.
 *
 * Encoding appends one whole frame (9-byte header and body) to a growing buffer.
 * Decoding takes one frame's header, then its body, and never reads past the
 * length it was given: every [int]/[short]/[string]/[bytes] is checked against what
 * remains, a count is checked against what remains before anything is allocated,
 * and a frame whose header is not a v4 response (0x84), names an unknown opcode,
 * or announces a body larger than the bound is refused. The fuzz target
 * (tests/fuzz/fuzz_cql_frame.c) feeds these functions arbitrary bytes.
 */
#ifndef DETA_CQL_CODEC_H
#define DETA_CQL_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deta/cql.h"

#define CQL_HEADER_LEN 9
#define CQL_VERSION_REQUEST 0x04
#define CQL_VERSION_RESPONSE 0x84

#define CQL_FLAG_COMPRESSION 0x01
#define CQL_FLAG_TRACING 0x02
#define CQL_FLAG_CUSTOM_PAYLOAD 0x04
#define CQL_FLAG_WARNING 0x08

enum cql_opcode {
    CQL_OP_ERROR = 0x00,
    CQL_OP_STARTUP = 0x01,
    CQL_OP_READY = 0x02,
    CQL_OP_AUTHENTICATE = 0x03,
    CQL_OP_OPTIONS = 0x05,
    CQL_OP_SUPPORTED = 0x06,
    CQL_OP_QUERY = 0x07,
    CQL_OP_RESULT = 0x08,
    CQL_OP_PREPARE = 0x09,
    CQL_OP_EXECUTE = 0x0A,
    CQL_OP_REGISTER = 0x0B,
    CQL_OP_EVENT = 0x0C,
    CQL_OP_BATCH = 0x0D,
    CQL_OP_AUTH_CHALLENGE = 0x0E,
    CQL_OP_AUTH_RESPONSE = 0x0F,
    CQL_OP_AUTH_SUCCESS = 0x10,
};

/* ---- encoding ---- */

typedef struct cql_buf {
    uint8_t *p;
    size_t len, cap;
    bool failed; /* out of memory, or a value too long for its length field */
} cql_buf_t;

void cql_buf_free(cql_buf_t *b);

/* Each appends one request frame with the given stream id (0..32767) and returns
 * false when the buffer failed (b->failed). */
bool cql_encode_startup(cql_buf_t *b, int16_t stream, const char *cql_version);
/* The PasswordAuthenticator token: "\0user\0password". */
bool cql_encode_auth_response_password(cql_buf_t *b, int16_t stream, const char *user,
                                       const char *password);
bool cql_encode_options(cql_buf_t *b, int16_t stream);
bool cql_encode_query(cql_buf_t *b, int16_t stream, const deta_cql_query_t *q);
bool cql_encode_prepare(cql_buf_t *b, int16_t stream, const char *cql);
/* q->cql is not sent; id is the prepared statement's id. */
bool cql_encode_execute(cql_buf_t *b, int16_t stream, const uint8_t *id, size_t idlen,
                        const deta_cql_query_t *q);
/* ids[i] is the prepared id of items[i] when items[i].prepared (idlens[i] its length). */
bool cql_encode_batch(cql_buf_t *b, int16_t stream, const deta_cql_batch_t *batch,
                      const uint8_t *const *ids, const size_t *idlens);

/* ---- decoding ---- */

typedef struct cql_header {
    uint8_t version;
    uint8_t flags;
    int16_t stream;
    uint8_t opcode;
    uint32_t length;
} cql_header_t;

/* Checks a response header: version 0x84, a known response opcode, no
 * compression flag, length <= max_body. false with the reason in errstr. */
bool cql_header_decode(const uint8_t h[CQL_HEADER_LEN], size_t max_body, cql_header_t *out,
                       char *errstr, size_t errsize);

/* A decoded ERROR (spec 9), with the fields some codes add. */
typedef struct cql_error {
    int32_t code;
    char message[1024]; /* truncated to fit */
    /* Unavailable, Read/Write timeout, Read/Write failure */
    int consistency;
    int32_t required, alive, received, blockfor, numfailures;
    bool data_present;  /* Read_timeout, Read_failure */
    char write_type[32]; /* Write_timeout, Write_failure */
    /* Already_exists */
    char keyspace[DETA_CQL_NAME_MAX], table[DETA_CQL_NAME_MAX];
    /* Unprepared */
    uint8_t unprepared_id[64];
    size_t unprepared_id_len;
} cql_error_t;

typedef struct cql_response {
    uint8_t opcode;
    cql_error_t error;             /* ERROR */
    char authenticator[256];       /* AUTHENTICATE: the class name */
    char *supported;               /* SUPPORTED, as in deta_cql_options (malloc'd) */
    deta_cql_result_t result;      /* RESULT */
    uint8_t *token;                /* AUTH_CHALLENGE, AUTH_SUCCESS ([bytes], malloc'd) */
    int32_t token_len;             /* -1 null */
} cql_response_t;

/* Decodes a response body (after its header). On success the response owns
 * what it allocated; RESULT rows point into `body`, which the result takes over
 * (body must be malloc'd; it is freed by cql_response_clear, or at once when the
 * decode fails). Warnings (flag 0x08) go to result.warnings for a RESULT and are
 * otherwise dropped; a tracing id (flag 0x02) and a custom payload (0x04) are
 * skipped. false with the reason in errstr for a malformed body. */
bool cql_response_decode(const cql_header_t *h, uint8_t *body, cql_response_t *out,
                         char *errstr, size_t errsize);
void cql_response_clear(cql_response_t *r);

#endif

/*
 * deta/client.h - one HTTP client for the system's own clients: deta-cli, the
 * bench's programs, the chaos test and the integration tests (lib/client/).
 *
 * Design. A deta_client_t wraps one libcurl easy handle and is used by one
 * thread at a time: reusing it keeps its connection alive, so a thread that
 * makes many requests keeps one handle (one per thread), and a caller that
 * wants a fresh connection each time makes a handle per request. Each request
 * starts from curl's defaults (the handle is reset, its connections kept), so
 * nothing one request set leaks into the next. A request either gets an answer
 * (any status: the caller decides what a 404 means) or none, and then the error
 * text names the URL and curl's reason. The answer's body is kept in the
 * handle's buffer, whose room is kept from one request to the next, and parsed
 * as JSON when it is JSON. The buffer and its write callback are public, for
 * callers that drive curl themselves (the bench's multi sender).
 *
 * Not linked by any service: libcurl stays out of the services' images.
 */
#ifndef DETA_CLIENT_H
#define DETA_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* ---- the response buffer ---------------------------------------------------- */

/* What curl writes, NUL-terminated. Growing (fixed false): the buffer is
 * malloc'd and doubled as needed, an allocation failure is a write error.
 * Fixed: data is the caller's, cap bytes; what does not fit is cut, never an
 * error (no allocation at all, for a hot loop). */
typedef struct deta_client_buf {
    char *data;
    size_t len, cap;
    bool fixed;
} deta_client_buf_t;

/* libcurl's CURLOPT_WRITEFUNCTION (and HEADERFUNCTION) for a deta_client_buf_t
 * given as the write data. */
size_t deta_client_buf_write(char *ptr, size_t size, size_t nmemb, void *buf);
/* Empties the buffer, keeping its room. */
void deta_client_buf_reset(deta_client_buf_t *b);
/* Frees a growing buffer's memory (a fixed one is the caller's). */
void deta_client_buf_free(deta_client_buf_t *b);

/* ---- requests ------------------------------------------------------------------ */

typedef struct deta_client deta_client_t;

typedef struct deta_client_req {
    const char *method; /* "GET", "POST", ... */
    const char *url;
    const char *body;   /* sent as is, NULL for none */
    const char *const *headers; /* "Name: value" lines, NULL-terminated; NULL for none */
    bool keep_headers;  /* keep the answer's status line and header lines */
    bool raw;           /* leave the body unparsed (json NULL): for a caller that
                           times the exchange alone */
} deta_client_req_t;

typedef struct deta_client_resp {
    long status;         /* HTTP status; 0 when no answer arrived */
    const char *body;    /* NUL-terminated, "" when empty; the handle's, valid until its
                            next request or its free */
    size_t body_len;
    json_t *json;        /* the body parsed (any JSON value), or NULL; the caller's */
    const char *headers; /* with keep_headers, like body; else NULL */
    double millis;       /* how long the exchange took */
    int error;           /* libcurl's code: 0 when an answer arrived */
} deta_client_resp_t;

/* timeout_ms bounds each whole request, connect_timeout_ms its connection (0:
 * curl's defaults). NULL when out of memory. */
deta_client_t *deta_client_new(long timeout_ms, long connect_timeout_ms);
void deta_client_free(deta_client_t *c);
/* Every later request of c carries "Authorization: Bearer <token>" (an operator or
 * reader token, deta/auth.h); NULL or "" for none. The handle keeps a copy (wiped
 * when replaced or freed); the token never appears in an error text. False when out
 * of memory. */
bool deta_client_set_token(deta_client_t *c, const char *token);
/* The token the system's own clients send, from the environment: for an operator
 * action OPERATOR_TOKEN; for a read READER_TOKEN, else OPERATOR_TOKEN (reads need
 * one only when HTTP_READS_NEED_AUTH closes them). NULL when unset or empty. */
const char *deta_client_env_token(bool operator_action);
/* Returns 0 when an answer arrived (whatever its status), -1 when none did:
 * errstr then says why ("cannot reach http://...: Connection refused") and out
 * has status 0, body "" and its error. */
int deta_client_request(deta_client_t *c, const deta_client_req_t *req, deta_client_resp_t *out,
                        char *errstr, size_t errsize);
/* The JSON call: Accept: application/json, and with a body (JSON text)
 * Content-Type: application/json. */
int deta_client_json(deta_client_t *c, const char *method, const char *url, const char *body,
                     deta_client_resp_t *out, char *errstr, size_t errsize);
/* Releases out's JSON; its body stays the handle's. */
void deta_client_resp_clear(deta_client_resp_t *r);
/* "HTTP 404 Not Found: no order with id ..." from an error answer. */
void deta_client_resp_describe(const deta_client_resp_t *r, char *buf, size_t size);
/* True when the request failed before it reached the server (connection
 * refused): it cannot have had any effect, so it may be sent again. */
bool deta_client_never_connected(const deta_client_resp_t *r);
/* libcurl's text for an error code of deta_client_resp_t. */
const char *deta_client_strerror(int error);

/* base + path (trailing '/' of base dropped); malloc'd. */
char *deta_client_url(const char *base, const char *path);
/* s percent-encoded for a query string; malloc'd. */
char *deta_client_url_escape(const char *s);
/* Whole-process libcurl setup; before any thread starts. */
bool deta_client_global_init(void);
void deta_client_global_cleanup(void);

#endif

/*
 * request.c - blocking HTTP requests over a keep-alive libcurl handle
 * (deta/client.h).
 *
 * A request resets the handle to curl's defaults (its live connections stay),
 * sets exactly what the request asks for, performs it and reads the status, the
 * time taken and the body, which it parses as any JSON value. A request that
 * gets no answer says which URL and why, with curl's own message when it gave
 * one. The handle's body and header buffers keep their room between requests.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/client.h"

struct deta_client {
    CURL *curl;
    long timeout_ms;
    long connect_timeout_ms;
    deta_client_buf_t body;
    deta_client_buf_t head;
    char *auth_header; /* "Authorization: Bearer <token>", or NULL */
};

bool deta_client_global_init(void) { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }

void deta_client_global_cleanup(void) { curl_global_cleanup(); }

deta_client_t *deta_client_new(long timeout_ms, long connect_timeout_ms) {
    deta_client_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->curl = curl_easy_init();
    if (!c->curl) {
        free(c);
        return NULL;
    }
    c->timeout_ms = timeout_ms;
    c->connect_timeout_ms = connect_timeout_ms;
    return c;
}

static void forget_token(deta_client_t *c) {
    if (c->auth_header) {
        explicit_bzero(c->auth_header, strlen(c->auth_header));
        free(c->auth_header);
        c->auth_header = NULL;
    }
}

bool deta_client_set_token(deta_client_t *c, const char *token) {
    forget_token(c);
    if (!token || !token[0])
        return true;
    return asprintf(&c->auth_header, "Authorization: Bearer %s", token) >= 0 ||
           (c->auth_header = NULL, false);
}

const char *deta_client_env_token(bool operator_action) {
    const char *op = getenv("OPERATOR_TOKEN"), *rd = getenv("READER_TOKEN");
    if (!operator_action && rd && rd[0])
        return rd;
    return op && op[0] ? op : NULL;
}

void deta_client_free(deta_client_t *c) {
    if (!c)
        return;
    forget_token(c);
    curl_easy_cleanup(c->curl);
    deta_client_buf_free(&c->body);
    deta_client_buf_free(&c->head);
    free(c);
}

/* The request's header lines as curl's list, after the handle's Authorization line
 * (auth, NULL for none); false when out of memory. */
static bool header_list(const char *auth, const char *const *lines, struct curl_slist **out) {
    *out = NULL;
    if (auth && !(*out = curl_slist_append(NULL, auth)))
        return false;
    for (size_t i = 0; lines && lines[i]; i++) {
        struct curl_slist *l = curl_slist_append(*out, lines[i]);
        if (!l) {
            curl_slist_free_all(*out);
            *out = NULL;
            return false;
        }
        *out = l;
    }
    return true;
}

static void prepare(deta_client_t *c, const deta_client_req_t *req, struct curl_slist *headers,
                    char *curl_err) {
    CURL *e = c->curl;
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, deta_client_buf_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &c->body);
    if (req->keep_headers) {
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, deta_client_buf_write);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, &c->head);
    }
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
    if (req->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(req->body));
    } else if (strcmp(req->method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
}

/* Fills out from the answer the handle holds. */
static void take_answer(deta_client_t *c, const deta_client_req_t *req, deta_client_resp_t *out) {
    double seconds = 0;
    curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_getinfo(c->curl, CURLINFO_TOTAL_TIME, &seconds);
    out->millis = seconds * 1000.0;
    out->body = c->body.data ? c->body.data : "";
    out->body_len = c->body.len;
    if (!req->raw)
        out->json = json_loads(out->body, JSON_DECODE_ANY, NULL);
    if (req->keep_headers)
        out->headers = c->head.data ? c->head.data : "";
}

int deta_client_request(deta_client_t *c, const deta_client_req_t *req, deta_client_resp_t *out,
                        char *errstr, size_t errsize) {
    memset(out, 0, sizeof *out);
    out->body = "";
    deta_client_buf_reset(&c->body);
    deta_client_buf_reset(&c->head);
    struct curl_slist *headers;
    CURLcode rc = CURLE_OUT_OF_MEMORY;
    char curl_err[CURL_ERROR_SIZE] = "";
    if (header_list(c->auth_header, req->headers, &headers)) {
        prepare(c, req, headers, curl_err);
        rc = curl_easy_perform(c->curl);
        curl_easy_setopt(c->curl, CURLOPT_ERRORBUFFER, NULL); /* curl_err goes out of scope */
        curl_slist_free_all(headers);
    }
    if (rc != CURLE_OK) {
        out->error = (int)rc;
        snprintf(errstr, errsize, "cannot reach %s: %s", req->url,
                 curl_err[0] ? curl_err : curl_easy_strerror(rc));
        return -1;
    }
    take_answer(c, req, out);
    return 0;
}

int deta_client_json(deta_client_t *c, const char *method, const char *url, const char *body,
                     deta_client_resp_t *out, char *errstr, size_t errsize) {
    const char *const headers[] = {"Accept: application/json",
                                   body ? "Content-Type: application/json" : NULL, NULL};
    deta_client_req_t req = {.method = method, .url = url, .body = body, .headers = headers};
    return deta_client_request(c, &req, out, errstr, errsize);
}

void deta_client_resp_clear(deta_client_resp_t *r) {
    json_decref(r->json);
    memset(r, 0, sizeof *r);
    r->body = "";
}

/* The services answer errors as {"status","error","field"?,"message"}. */
void deta_client_resp_describe(const deta_client_resp_t *r, char *buf, size_t size) {
    const char *phrase = json_string_value(json_object_get(r->json, "error"));
    const char *message = json_string_value(json_object_get(r->json, "message"));
    if (message)
        snprintf(buf, size, "HTTP %ld%s%s: %s", r->status, phrase ? " " : "", phrase ? phrase : "",
                 message);
    else if (r->body && r->body[0])
        snprintf(buf, size, "HTTP %ld: %.300s", r->status, r->body);
    else
        snprintf(buf, size, "HTTP %ld with an empty body", r->status);
}

bool deta_client_never_connected(const deta_client_resp_t *r) {
    return r->error == CURLE_COULDNT_CONNECT;
}

const char *deta_client_strerror(int error) { return curl_easy_strerror((CURLcode)error); }

char *deta_client_url(const char *base, const char *path) {
    size_t blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    char *url = malloc(blen + strlen(path) + 1);
    if (!url)
        return NULL;
    memcpy(url, base, blen);
    strcpy(url + blen, path);
    return url;
}

char *deta_client_url_escape(const char *s) {
    char *e = curl_easy_escape(NULL, s, 0);
    char *copy = e ? strdup(e) : NULL;
    curl_free(e);
    return copy;
}

/*
 * http.c - the HTTP client of deta-cli: blocking requests over libcurl.
 *
 * One cli_http_t wraps one curl easy handle and is used by one thread at a time;
 * reusing it keeps the connection alive, which matters when the demo posts
 * hundreds of orders. A request either gets a response (any status: the caller
 * decides what a 404 means) or fails to reach the server, and then the error text
 * names the URL and curl's reason, so that "service unreachable" is never vague.
 * Bodies are kept whole and parsed as JSON when they are JSON.
 */
#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

struct cli_http {
    CURL *curl;
    long timeout_ms;
};

typedef struct buffer {
    char *data;
    size_t len, cap;
} buffer_t;

bool cli_http_global_init(void) { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }

void cli_http_global_cleanup(void) { curl_global_cleanup(); }

cli_http_t *cli_http_new(long timeout_ms) {
    cli_http_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->curl = curl_easy_init();
    if (!h->curl) {
        free(h);
        return NULL;
    }
    h->timeout_ms = timeout_ms;
    return h;
}

void cli_http_free(cli_http_t *h) {
    if (!h)
        return;
    curl_easy_cleanup(h->curl);
    free(h);
}

static size_t append_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
    buffer_t *b = userdata;
    size_t n = size * nmemb;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data)
            return 0; /* curl reports a write error */
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

static void prepare(cli_http_t *h, const char *method, const char *url, const char *body,
                    struct curl_slist *headers, buffer_t *buf, char *curl_err) {
    CURL *c = h->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, h->timeout_ms < 5000 ? h->timeout_ms : 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, append_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, buf);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    }
}

int cli_http_request(cli_http_t *h, const char *method, const char *url, const char *body,
                     cli_resp_t *out, char *errstr, size_t errsize) {
    memset(out, 0, sizeof *out);
    buffer_t buf = {0};
    char curl_err[CURL_ERROR_SIZE] = "";
    struct curl_slist *headers = curl_slist_append(NULL, "Accept: application/json");
    if (body)
        headers = curl_slist_append(headers, "Content-Type: application/json");
    prepare(h, method, url, body, headers, &buf, curl_err);

    CURLcode rc = curl_easy_perform(h->curl);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) {
        free(buf.data);
        snprintf(errstr, errsize, "cannot reach %s: %s", url,
                 curl_err[0] ? curl_err : curl_easy_strerror(rc));
        return -1;
    }
    double seconds = 0;
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_getinfo(h->curl, CURLINFO_TOTAL_TIME, &seconds);
    out->millis = seconds * 1000.0;
    out->body = buf.data ? buf.data : strdup("");
    out->json = json_loads(out->body, JSON_DECODE_ANY, NULL);
    return 0;
}

void cli_resp_clear(cli_resp_t *r) {
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

/* The services answer errors as {"status","error","field"?,"message"}. */
void cli_resp_describe(const cli_resp_t *r, char *buf, size_t size) {
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

char *cli_url(const char *base, const char *path) {
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

char *cli_url_escape(const char *s) {
    char *e = curl_easy_escape(NULL, s, 0);
    char *copy = e ? strdup(e) : NULL;
    curl_free(e);
    return copy;
}

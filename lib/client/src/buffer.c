/*
 * buffer.c - the response buffer that libcurl writes into (deta/client.h).
 *
 * One write callback for every client of the system: a growing buffer doubles
 * its room (from 4 KiB) and keeps it across resets, so a handle reused for many
 * requests stops allocating once its answers fit; a fixed buffer is the caller's
 * array and cuts what does not fit, so a hot loop never allocates. Either way
 * the text stays NUL-terminated.
 */
#include <stdlib.h>
#include <string.h>

#include "deta/client.h"

#define FIRST_ROOM 4096

/* Room for need bytes plus the NUL; false when it cannot be had. */
static bool make_room(deta_client_buf_t *b, size_t need) {
    if (need + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : FIRST_ROOM;
    while (cap < need + 1)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data)
        return false;
    b->data = data;
    b->cap = cap;
    return true;
}

size_t deta_client_buf_write(char *ptr, size_t size, size_t nmemb, void *buf) {
    deta_client_buf_t *b = buf;
    size_t n = size * nmemb;
    size_t take = n;
    if (b->fixed) {
        size_t room = b->cap - 1 - b->len;
        take = n < room ? n : room;
    } else if (!make_room(b, b->len + n)) {
        return 0; /* curl reports a write error */
    }
    memcpy(b->data + b->len, ptr, take);
    b->len += take;
    b->data[b->len] = '\0';
    return n; /* a fixed buffer's over-long answer is cut, not an error */
}

void deta_client_buf_reset(deta_client_buf_t *b) {
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

void deta_client_buf_free(deta_client_buf_t *b) {
    if (!b->fixed)
        free(b->data);
    memset(b, 0, sizeof *b);
}

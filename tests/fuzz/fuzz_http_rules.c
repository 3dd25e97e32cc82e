/*
 * fuzz_http_rules.c - libFuzzer target of the rules libdeta's HTTP server applies to
 * outside bytes for the web console: a request path (deta_static_name, then the
 * content type of the name it gives), an origin (deta_cors_origin_valid), and an
 * allow-list (deta_cors_origins_parse, then matching the input against it). Each
 * input is copied into a heap buffer of exactly its length (the length-taking
 * functions) and into a NUL-terminated one (the others), so AddressSanitizer
 * reports a read of a single byte past either. Checks what must hold whatever the
 * input: a name given is inside the input and follows the path rules, and a list that
 * parses holds only valid origins, each of which matches itself.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deta/http_cors.h"
#include "deta/http_static.h"

static void check_name(const char *path, size_t len) {
    const char *name = deta_static_name(path, len);
    if (!name)
        return;
    if (len == 1) { /* "/" */
        if (strcmp(name, "index.html") != 0)
            abort();
        return;
    }
    if (name != path + 1 || memchr(path, '\0', len))
        abort();
    /* never "..", never a hidden file, never an absolute path; name is not
     * NUL-terminated here (exact), so only len - 1 bytes are looked at */
    size_t n = len - 1;
    if (n == 0 || name[0] == '/' || name[0] == '.' || memmem(name, n, "/.", 2) ||
        memmem(name, n, "//", 2) || name[n - 1] == '/')
        abort();
    char *copy = strndup(name, n);
    if (!copy)
        abort();
    (void)deta_static_content_type(copy);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *exact = malloc(size ? size : 1);
    char *text = malloc(size + 1);
    if (!exact || !text)
        abort();
    memcpy(exact, data, size);
    memcpy(text, data, size);
    text[size] = '\0';

    check_name(exact, size);
    const char *why = NULL;
    (void)deta_cors_origin_valid(exact, size, &why);

    deta_cors_origins_t list;
    char err[256];
    if (deta_cors_origins_parse(text, "HTTP_CORS_ORIGINS", &list, err, sizeof err) == DETA_OK) {
        for (int i = 0; i < list.n; i++) {
            if (!deta_cors_origin_valid(list.origin[i], strlen(list.origin[i]), NULL) ||
                deta_cors_origins_match(&list, list.origin[i]) != list.origin[i])
                abort();
        }
        (void)deta_cors_origins_match(&list, text);
    } else if (list.n != 0) {
        abort();
    }
    free(exact);
    free(text);
    return 0;
}

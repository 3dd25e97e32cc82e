/*
 * http_static.c - which paths name a static file, its type, and its bounded read
 * (see deta/http_static.h).
 *
 * The path rules alone keep a request inside the directory: no segment can be "..",
 * and MHD has already decoded the path, so an encoded "%2e%2e" arrives as ".." and is
 * refused like the plain one (http.c leaves "%00" undecoded, so no NUL reaches here
 * either, and a '%' is refused). Symbolic links are what the rules cannot see: the
 * file's realpath must still lie below the directory's, so a link pointing out of it
 * is a 404 like a missing file. The file is opened by that resolved path and checked
 * with fstat (regular, within the size bound) on the descriptor that is read.
 */
#include "deta/http_static.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static bool is_name_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

const char *deta_static_name(const char *path, size_t len) {
    if (!path || len == 0 || path[0] != '/' || len > DETA_STATIC_MAX_PATH)
        return NULL;
    if (len == 1)
        return "index.html";
    int segments = 0;
    size_t seg_len = 0;
    for (size_t i = 1; i <= len; i++) {
        if (i == len || path[i] == '/') {
            if (seg_len == 0 || ++segments > DETA_STATIC_MAX_SEGMENTS)
                return NULL;
            seg_len = 0;
            continue;
        }
        if (!is_name_char(path[i]) || (seg_len == 0 && path[i] == '.'))
            return NULL;
        seg_len++;
    }
    return path + 1;
}

const char *deta_static_content_type(const char *name) {
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".json", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
    };
    if (!name)
        return NULL;
    const char *slash = strrchr(name, '/');
    const char *dot = strrchr(slash ? slash + 1 : name, '.');
    if (!dot)
        return NULL;
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return NULL;
}

/* Is resolved below root (root itself excluded)? */
static bool inside(const char *root, const char *resolved) {
    size_t n = strlen(root);
    if (n == 1 && root[0] == '/')
        return resolved[0] == '/' && resolved[1] != '\0';
    return strncmp(resolved, root, n) == 0 && resolved[n] == '/';
}

static deta_err_t read_fd(int fd, long max, char **data, size_t *len) {
    struct stat st;
    if (fstat(fd, &st) != 0)
        return DETA_ERR_INTERNAL;
    if (!S_ISREG(st.st_mode))
        return DETA_ERR_NOT_FOUND;
    if (st.st_size > max)
        return DETA_ERR_INVALID;
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size + 1);
    if (!buf)
        return DETA_ERR_INTERNAL;
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* shrunk meanwhile: serve what is there */
        got += (size_t)n;
    }
    buf[got] = '\0';
    *data = buf;
    *len = got;
    return DETA_OK;
}

deta_err_t deta_static_read(const char *root, const char *name, long max, char **data,
                            size_t *len) {
    *data = NULL;
    *len = 0;
    if (!root || !name || !*name)
        return DETA_ERR_NOT_FOUND;
    char *joined = NULL;
    if (asprintf(&joined, "%s/%s", root, name) < 0)
        return DETA_ERR_INTERNAL;
    char *resolved = realpath(joined, NULL);
    free(joined);
    if (!resolved)
        return errno == ENOMEM ? DETA_ERR_INTERNAL : DETA_ERR_NOT_FOUND;
    deta_err_t err = DETA_ERR_NOT_FOUND;
    if (inside(root, resolved)) {
        int fd = open(resolved, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd >= 0) {
            err = read_fd(fd, max, data, len);
            close(fd);
        } else if (errno == EMFILE || errno == ENFILE || errno == ENOMEM) {
            err = DETA_ERR_INTERNAL; /* ours, not the client's */
        }
    }
    free(resolved);
    return err;
}

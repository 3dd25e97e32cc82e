/*
 * http_static.h - the rules of the static files libdeta's HTTP server serves below a
 * directory (deta_http_static in deta/http.h; docs/console.md, "Where it lives"), and
 * the bounded read of one such file.
 *
 * A request path is looked up only when it is "/" (the file index.html) or made of 1 to
 * DETA_STATIC_MAX_SEGMENTS segments separated by single '/', each of the characters
 * A-Z a-z 0-9 . _ - and not starting with '.' (so no "..", no hidden file, no empty
 * segment, no trailing '/'). Only the extensions below are served, each with its type.
 */
#ifndef DETA_HTTP_STATIC_H
#define DETA_HTTP_STATIC_H

#include <stdbool.h>
#include <stddef.h>

#include "deta/err.h"

#define DETA_STATIC_MAX_SEGMENTS 8
#define DETA_STATIC_MAX_PATH 512          /* bytes of a request path looked up */
#define DETA_STATIC_MAX_FILE (4L << 20)   /* bytes of a file served: 4 MiB */

/* The file name below the directory that path[0..len) asks for ("index.html" for "/",
 * else path + 1), or NULL when the path breaks the rules above. Pure. */
const char *deta_static_name(const char *path, size_t len);

/* The Content-Type of a file name by its (lower-case) extension, or NULL when the
 * extension is not served: .html .css .js .json .svg .png .ico .txt. Pure. */
const char *deta_static_content_type(const char *name);

/* Reads the file `name` (as deta_static_name gives it) below the directory root (a
 * canonical path, as realpath gives it) into a malloc'd buffer (*data, *len). The
 * file must resolve, symbolic links followed, to a regular file inside root and be at
 * most max bytes. DETA_ERR_NOT_FOUND when it is missing or not such a file (the
 * client's 404), DETA_ERR_INVALID when larger than max, DETA_ERR_INTERNAL on a read
 * error or out of memory. */
deta_err_t deta_static_read(const char *root, const char *name, long max, char **data,
                            size_t *len);

#endif

/*
 * openapi-bundle - a service's OpenAPI document as the service serves it.
 *
 *   openapi-bundle COMMON SERVICE OUT_JSON OUT_C
 *
 * COMMON is libdeta's part (lib/openapi/common.json: the routes every service has
 * and the shapes they share), SERVICE a service's own document
 * (services/<name>/openapi.json), which refers to COMMON's components by external
 * references ("../../lib/openapi/common.json#/components/schemas/Error"), which
 * tools follow too (its security requirements name schemes only COMMON defines,
 * so the bundled document is the one to give a tool). The result:
 *
 *   - COMMON's paths added to SERVICE's (a path in both is an error);
 *   - COMMON's components added to SERVICE's (a name in both is an error);
 *   - COMMON's "x-deta-every-operation" responses added to every operation of
 *     SERVICE's own paths that does not list the status itself (the answers the
 *     HTTP server gives before any handler, at its bounds: 408, 413, 429, 431, 503);
 *   - every reference into COMMON made local ("#/components/..."), then every
 *     reference checked to resolve (a dangling one is an error);
 *
 * written as JSON to OUT_JSON and, as `deta_openapi` (deta/openapi.h: the text,
 * and the document's operations, "METHOD /path" a line each, which the service
 * compares with its routes when it starts), to OUT_C, which the service's
 * executable links. The build runs it (services/CMakeLists.txt), so a document
 * that does not bundle does not build.
 *
 * Design: a build step of our own instead of a bundler from npm: the build needs
 * nothing but jansson, which every service links anyway, and the merge is this
 * small. Keys keep their order (jansson keeps insertion order), so the output is
 * the same for the same input.
 */
#include <ctype.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const METHODS[] = {"get", "put", "post", "delete", "options", "head", "patch",
                                      "trace"};

static bool fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "openapi-bundle: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return false;
}

static json_t *load(const char *path) {
    json_error_t e;
    json_t *doc = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
    if (!doc)
        fail("%s:%d:%d: %s", path, e.line, e.column, e.text);
    else if (!json_is_object(doc)) {
        fail("%s: not a JSON object", path);
        json_decref(doc);
        doc = NULL;
    }
    return doc;
}

/* dst[name] = a copy of each member of src; a name already in dst is an error. */
static bool add_members(json_t *dst, json_t *src, const char *what) {
    const char *name;
    json_t *value;
    json_object_foreach(src, name, value) {
        if (json_object_get(dst, name))
            return fail("%s \"%s\" is in both documents", what, name);
        json_object_set_new(dst, name, json_deep_copy(value));
    }
    return true;
}

/* obj[key], made an empty object when missing; NULL when it is not an object. */
static json_t *object_at(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    if (!v) {
        v = json_object();
        json_object_set_new(obj, key, v);
    }
    return json_is_object(v) ? v : NULL;
}

static bool merge_components(json_t *doc, json_t *common) {
    json_t *mine = object_at(doc, "components");
    json_t *theirs = json_object_get(common, "components");
    if (!mine)
        return fail("\"components\" is not an object");
    const char *kind;
    json_t *group;
    json_object_foreach(theirs, kind, group) {
        json_t *dst = object_at(mine, kind);
        if (!dst || !json_is_object(group))
            return fail("components.%s is not an object", kind);
        char what[128];
        snprintf(what, sizeof what, "components.%s", kind);
        if (!add_members(dst, group, what))
            return false;
    }
    return true;
}

/* The guard responses into every operation of the service's own paths. */
static bool add_every_operation(json_t *paths, json_t *common) {
    json_t *every = json_object_get(json_object_get(common, "x-deta-every-operation"), "responses");
    if (!every)
        return true;
    const char *path;
    json_t *item;
    json_object_foreach(paths, path, item) {
        for (size_t m = 0; m < sizeof METHODS / sizeof METHODS[0]; m++) {
            json_t *op = json_object_get(item, METHODS[m]);
            if (!op)
                continue;
            json_t *responses = json_object_get(op, "responses");
            if (!json_is_object(responses))
                return fail("%s %s has no responses object", METHODS[m], path);
            const char *status;
            json_t *resp;
            json_object_foreach(every, status, resp) {
                if (!json_object_get(responses, status))
                    json_object_set_new(responses, status, json_deep_copy(resp));
            }
        }
    }
    return true;
}

/* Calls visit(ref, doc) on every "$ref" string under node; stops at the first
 * false. */
static bool each_ref(json_t *node, json_t *doc, bool (*visit)(json_t *ref, json_t *doc)) {
    const char *key;
    size_t i;
    json_t *v;
    if (json_is_array(node)) {
        json_array_foreach(node, i, v) {
            if (!each_ref(v, doc, visit))
                return false;
        }
    } else if (json_is_object(node)) {
        json_object_foreach(node, key, v) {
            bool ref = strcmp(key, "$ref") == 0 && json_is_string(v);
            if (!(ref ? visit(v, doc) : each_ref(v, doc, visit)))
                return false;
        }
    }
    return true;
}

/* The common document's real path, and the service document's directory: a
 * reference's file part is read from the latter (set by main). */
static char common_path[PATH_MAX];
static char service_dir[PATH_MAX];

/* A reference into the common document made local; a reference to any other
 * file is an error. */
static bool localize(json_t *v, json_t *doc) {
    (void)doc;
    const char *ref = json_string_value(v);
    const char *hash = strchr(ref, '#');
    if (!hash)
        return fail("reference \"%s\" has no fragment", ref);
    if (hash == ref)
        return true;
    char file[PATH_MAX], real[PATH_MAX];
    int n = snprintf(file, sizeof file, "%s/%.*s", service_dir, (int)(hash - ref), ref);
    if (n < 0 || (size_t)n >= sizeof file || !realpath(file, real) ||
        strcmp(real, common_path) != 0)
        return fail("reference \"%s\" is to another document than %s", ref, common_path);
    return json_string_set(v, hash) == 0 || fail("out of memory");
}

/* The node a local reference ("#/a/b~1c") names, or NULL. */
static json_t *resolve(json_t *doc, const char *ref) {
    if (strncmp(ref, "#/", 2) != 0)
        return strcmp(ref, "#") == 0 ? doc : NULL;
    json_t *node = doc;
    char token[256];
    for (const char *p = ref + 2; node;) {
        size_t n = 0;
        for (; *p && *p != '/'; p++) {
            char c = *p;
            if (c == '~' && (p[1] == '0' || p[1] == '1'))
                c = *++p == '0' ? '~' : '/';
            if (n + 1 >= sizeof token)
                return NULL;
            token[n++] = c;
        }
        token[n] = '\0';
        node = json_object_get(node, token);
        if (*p != '/')
            break;
        p++;
    }
    return node;
}

static bool resolves(json_t *v, json_t *doc) {
    return resolve(doc, json_string_value(v)) ||
           fail("reference \"%s\" resolves to nothing", json_string_value(v));
}

static json_t *bundle(json_t *common, json_t *doc) {
    json_t *paths = json_object_get(doc, "paths");
    json_t *common_paths = json_object_get(common, "paths");
    if (!json_is_object(paths) || !json_is_object(common_paths)) {
        fail("both documents need a \"paths\" object");
        return NULL;
    }
    if (!add_every_operation(paths, common) || !add_members(paths, common_paths, "path") ||
        !merge_components(doc, common) || !each_ref(doc, doc, localize) ||
        !each_ref(doc, doc, resolves))
        return NULL;
    return doc;
}

/* Closes f, which was written to path: false (said) when anything failed. */
static bool close_written(FILE *f, const char *path) {
    bool ok = !ferror(f);
    return (fclose(f) == 0 && ok) || fail("cannot write %s", path);
}

static bool write_json(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f)
        return fail("cannot write %s", path);
    fputs(text, f);
    fputc('\n', f);
    return close_written(f, path);
}

/* One C array: name[] = the bytes of text and its NUL. */
static void c_array(FILE *f, const char *name, const char *text) {
    fprintf(f, "static const char %s[] = {", name);
    size_t len = strlen(text);
    for (size_t i = 0; i <= len; i++)
        fprintf(f, "%s0x%02x,", i % 16 ? " " : "\n    ", (unsigned char)text[i]);
    fprintf(f, "\n};\n");
}

/* The document's operations, "METHOD /path\n" each, in its order: what the
 * service checks its routes against when it starts, without parsing the
 * document (deta/openapi.h). NULL when out of memory. */
static char *operations(json_t *doc) {
    char *out = NULL;
    size_t size = 0;
    FILE *m = open_memstream(&out, &size);
    if (!m)
        return NULL;
    const char *path;
    json_t *item;
    json_object_foreach(json_object_get(doc, "paths"), path, item) {
        for (size_t k = 0; k < sizeof METHODS / sizeof METHODS[0]; k++) {
            if (!json_object_get(item, METHODS[k]))
                continue;
            for (const char *c = METHODS[k]; *c; c++)
                fputc(toupper((unsigned char)*c), m);
            fprintf(m, " %s\n", path);
        }
    }
    bool ok = !ferror(m);
    if (fclose(m) != 0 || !ok) {
        free(out);
        return NULL;
    }
    return out;
}

static bool write_c(const char *path, const char *text, const char *ops) {
    FILE *f = fopen(path, "w");
    if (!f)
        return fail("cannot write %s", path);
    fprintf(f, "/* Generated by tools/openapi-bundle: edit the service's openapi.json. */\n"
               "#include \"deta/openapi.h\"\n\n");
    c_array(f, "document", text);
    c_array(f, "operations", ops);
    fprintf(f, "\nconst deta_openapi_t deta_openapi = {document, operations};\n");
    return close_written(f, path);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: openapi-bundle COMMON SERVICE OUT_JSON OUT_C\n");
        return 2;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", argv[2]);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    if (!realpath(argv[1], common_path) || !realpath(slash ? dir : ".", service_dir)) {
        fail("cannot find %s or %s", argv[1], argv[2]);
        return 1;
    }
    json_t *common = load(argv[1]);
    json_t *doc = common ? load(argv[2]) : NULL;
    int status = 1;
    if (doc && bundle(common, doc)) {
        char *text = json_dumps(doc, JSON_INDENT(2) | JSON_ENSURE_ASCII);
        char *ops = operations(doc);
        if (text && ops && write_json(argv[3], text) && write_c(argv[4], text, ops))
            status = 0;
        free(ops);
        free(text);
    }
    json_decref(doc);
    json_decref(common);
    if (status != 0) {
        remove(argv[3]); /* never a half-written output the build would take */
        remove(argv[4]);
    }
    return status;
}

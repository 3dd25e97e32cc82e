/*
 * fuzz_query_params.c - libFuzzer target of query-api's request arguments: the
 * list's query parameters and its cursor (services/query-api/domain.c:
 * query_list_params_parse, query_cursor_decode and _encode) and the dead-letter
 * administration's (services/query-api/deadletters/domain.c:
 * query_dlq_list_params_parse, query_dlq_id_parse for the {id} of the path).
 *
 * An input is a byte saying which arguments are present (bit i for text i), then
 * up to eight texts separated by NUL bytes, each copied into a heap buffer of
 * exactly its length plus the NUL: limit, cursor, status, customerId of
 * GET /api/orders, then status, limit, offset, key of the dead-letter list. Every
 * text is also tried as a cursor and as a record id. Checks what must hold
 * whatever the input:
 *   - accepted arguments have their values in range, the defaults when absent,
 *     the texts given kept whole; a refusal names the argument at fault;
 *   - a cursor that decodes is exactly the one the encoder writes for it (one
 *     position, one cursor: "the cursor is one this API handed out");
 *   - an id is accepted exactly when it is 1 to 16 digits without a leading
 *     zero of a value up to 2^53, and is that value.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/states.h"
#include "fuzz.h"
#include "query-api/deadletters/domain.h"
#include "query-api/domain.h"

#define NTEXTS 8

static void check_cursor(const char *text) {
    query_cursor_t c;
    if (!query_cursor_decode(text, &c))
        return;
    char again[QUERY_CURSOR_MAX];
    FUZZ_CHECK(query_cursor_encode(&c, again, sizeof again));
    FUZZ_CHECK(strcmp(again, text) == 0);
}

static void check_id(const char *text) {
    int64_t id = -5;
    bool ok = query_dlq_id_parse(text, &id);
    size_t n = strlen(text);
    bool valid = n >= 1 && n <= 16 && text[0] != '0' && strspn(text, "0123456789") == n &&
                 strtoll(text, NULL, 10) <= (INT64_C(1) << 53);
    FUZZ_CHECK(ok == valid);
    if (!ok) {
        FUZZ_CHECK(id == -5);
        return;
    }
    char back[24];
    snprintf(back, sizeof back, "%lld", (long long)id);
    FUZZ_CHECK(strcmp(back, text) == 0);
}

static bool one_of(const char *field, const char *const *names, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(field, names[i]) == 0)
            return true;
    return false;
}

static void check_list(char **t) {
    static const char *const fields[] = {"limit", "cursor", "status", "customerId"};
    query_list_params_t p;
    query_violation_t v;
    memset(&v, 0, sizeof v);
    if (query_list_params_parse(t[0], t[1], t[2], t[3], &p, &v) != DETA_OK) {
        FUZZ_CHECK(one_of(v.field, fields, 4) && v.message[0]);
        return;
    }
    FUZZ_CHECK(p.limit >= 1 && p.limit <= QUERY_LIMIT_MAX);
    FUZZ_CHECK(t[0] || p.limit == QUERY_LIMIT_DEFAULT);
    if (t[0])
        FUZZ_CHECK(strtol(t[0], NULL, 10) == p.limit);
    FUZZ_CHECK(p.has_cursor == (t[1] != NULL));
    if (t[1]) {
        char again[QUERY_CURSOR_MAX];
        FUZZ_CHECK(query_cursor_encode(&p.after, again, sizeof again) && strcmp(again, t[1]) == 0);
    }
    FUZZ_CHECK(t[2] ? strcmp(p.status, t[2]) == 0 && deta_state_rank(p.status) > 0
                    : p.status[0] == '\0');
    FUZZ_CHECK(t[3] ? strcmp(p.customer_id, t[3]) == 0 : p.customer_id[0] == '\0');
}

static void check_dlq_list(char **t) {
    static const char *const fields[] = {"status", "limit", "offset", "key"};
    query_dlq_list_params_t p;
    query_violation_t v;
    memset(&v, 0, sizeof v);
    if (query_dlq_list_params_parse(t[0], t[1], t[2], t[3], &p, &v) != DETA_OK) {
        FUZZ_CHECK(one_of(v.field, fields, 4) && v.message[0]);
        return;
    }
    FUZZ_CHECK(t[0] ? strcmp(query_dlq_status_name(p.status), t[0]) == 0
                    : p.status == QUERY_DLQ_ALL);
    FUZZ_CHECK(p.limit >= 1 && p.limit <= QUERY_DLQ_LIMIT_MAX);
    FUZZ_CHECK(t[1] ? strtol(t[1], NULL, 10) == p.limit : p.limit == QUERY_DLQ_LIMIT_DEFAULT);
    FUZZ_CHECK(p.offset >= 0 && p.offset <= QUERY_DLQ_OFFSET_MAX);
    FUZZ_CHECK(t[2] ? strtol(t[2], NULL, 10) == p.offset : p.offset == 0);
    FUZZ_CHECK(p.has_key == (t[3] != NULL) && (!t[3] || strcmp(p.key, t[3]) == 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    unsigned present = data[0];
    char *texts[NTEXTS], *args[NTEXTS];
    int n = fuzz_split(data + 1, size - 1, texts, NTEXTS);
    for (int i = 0; i < NTEXTS; i++)
        args[i] = (present >> i) & 1 ? texts[i] : NULL;
    check_list(args);
    check_dlq_list(args + 4);
    for (int i = 0; i < n; i++) {
        check_cursor(texts[i]);
        check_id(texts[i]);
    }
    fuzz_free(texts, n);
    return 0;
}

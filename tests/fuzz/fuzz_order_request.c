/*
 * fuzz_order_request.c - libFuzzer target of order-service's request checks
 * (services/order-service/domain.c): the body of POST /api/orders
 * (order_from_request), the body of POST /api/orders/{orderId}/cancel
 * (order_cancel_from_request) and the Idempotency-Key header
 * (order_idempotency_key_check). Each input is the body, parsed as the HTTP
 * server parses it (an empty input is "no body" for the cancel), and, cut at its
 * first NUL, the header's value. Checks what must hold whatever the input:
 *   - a refused body names a field, says why, and has a metric reason;
 *   - an accepted order has 1..100 lines, texts that are the body's strings
 *     whole, and the total the lines make (checked in 128-bit arithmetic);
 *   - the order written back as a request (amounts as money strings) is
 *     accepted again with the same canonical form (what idempotent replays
 *     compare), and its order.created payload is accepted by inventory-service's
 *     reader and query-api's, as the saga needs;
 *   - a key is accepted exactly when it is 1..255 characters from '!' to '~'.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "deta/envelope.h"
#include "deta/topics.h"
#include "fuzz.h"
#include "inventory-service/domain.h"
#include "order-service/domain.h"
#include "query-api/domain.h"

static void check_whole(const json_t *obj, const char *key, const char *got) {
    const json_t *v = json_object_get(obj, key);
    FUZZ_CHECK(json_is_string(v) && json_string_length(v) == strlen(got) &&
               memcmp(json_string_value(v), got, strlen(got)) == 0);
}

/* The order as a request body again. */
static json_t *as_request(const order_t *o) {
    json_t *items = json_array();
    for (size_t i = 0; i < o->nitems; i++) {
        char price[DETA_MONEY_STRLEN];
        json_array_append_new(items, json_pack("{s:s,s:i,s:s}", "itemId", o->items[i].item_id,
                                               "quantity", o->items[i].quantity, "unitPrice",
                                               deta_money_format(o->items[i].unit_price, price)));
    }
    json_t *body = json_pack("{s:s,s:s,s:o}", "customerId", o->customer_id, "currency",
                             o->currency, "items", items);
    FUZZ_CHECK(body != NULL);
    return body;
}

/* What inventory-service and query-api make of the order.created it makes. */
static void check_downstream(order_t *o) {
    order_assign_identity(o, "c0ffee00-1111-4222-8333-444455556666");
    json_t *payload = order_created_payload(o);
    FUZZ_CHECK(payload != NULL);
    char err[256];
    inv_request_t *r = malloc(sizeof *r);
    FUZZ_CHECK(r != NULL);
    FUZZ_CHECK(inv_request_from_order_created(payload, o->order_id, r, err, sizeof err) ==
               DETA_OK);
    FUZZ_CHECK(strcmp(r->customer_id, o->customer_id) == 0 && r->total == o->total);
    free(r);
    deta_event_t ev;
    FUZZ_CHECK(deta_event_init(&ev, DETA_EVT_ORDER_CREATED, o->order_id, o->correlation_id,
                               "order-service", payload, err, sizeof err) == DETA_OK);
    query_change_t c;
    memset(&c, 0, sizeof c);
    FUZZ_CHECK(query_change_from_event(&ev, &c, err, sizeof err) == DETA_OK);
    FUZZ_CHECK(strcmp(c.fields.customer_id, o->customer_id) == 0);
    deta_event_clear(&ev);
}

static void check_order(const json_t *body) {
    order_t *o = malloc(sizeof *o);
    FUZZ_CHECK(o != NULL);
    order_violation_t v;
    memset(&v, 0, sizeof v);
    if (order_from_request(body, o, &v) != DETA_OK) {
        FUZZ_CHECK(v.field[0] && v.message[0] && v.reason);
        free(o);
        return;
    }
    FUZZ_CHECK(o->nitems >= 1 && o->nitems <= ORDER_MAX_ITEMS);
    FUZZ_CHECK(deta_currency_valid(o->currency));
    check_whole(body, "customerId", o->customer_id);
    const json_t *items = json_object_get(body, "items");
    __int128 total = 0;
    for (size_t i = 0; i < o->nitems; i++) {
        const order_item_t *it = &o->items[i];
        check_whole(json_array_get(items, i), "itemId", it->item_id);
        FUZZ_CHECK(it->quantity >= 1 && it->quantity <= ORDER_MAX_QUANTITY && it->unit_price >= 0);
        total += (__int128)it->unit_price * it->quantity;
    }
    FUZZ_CHECK(total == o->total && o->total <= DETA_MONEY_MAX);

    char *canonical = order_request_canonical(o);
    FUZZ_CHECK(canonical != NULL);
    json_t *again_body = as_request(o);
    order_t *again = malloc(sizeof *again);
    FUZZ_CHECK(again != NULL);
    FUZZ_CHECK(order_from_request(again_body, again, &v) == DETA_OK);
    char *canonical_again = order_request_canonical(again);
    FUZZ_CHECK(canonical_again && strcmp(canonical, canonical_again) == 0);
    check_downstream(again);
    free(canonical_again);
    free(canonical);
    free(again);
    json_decref(again_body);
    free(o);
}

static void check_cancel(const json_t *body) {
    order_cancel_request_t c;
    order_violation_t v;
    memset(&v, 0, sizeof v);
    if (order_cancel_from_request(body, &c, &v) != DETA_OK) {
        FUZZ_CHECK(v.field[0] && v.message[0]);
        return;
    }
    if (c.has_reason) {
        FUZZ_CHECK(c.reason[0] && strlen(c.reason) <= ORDER_CANCEL_REASON_MAX);
        check_whole(body, "reason", c.reason);
    }
}

static void check_key(const char *key) {
    order_violation_t v;
    size_t n = strlen(key);
    bool valid = n >= 1 && n <= ORDER_IDEMPOTENCY_KEY_MAX;
    for (size_t i = 0; i < n; i++)
        valid = valid && key[i] >= '!' && key[i] <= '~';
    FUZZ_CHECK((order_idempotency_key_check(key, &v) == DETA_OK) == valid);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_error_t jerr;
    json_t *body = json_loadb((const char *)data, size, 0, &jerr);
    if (body) {
        check_order(body);
        check_cancel(body);
        json_decref(body);
    } else if (size == 0) {
        check_cancel(NULL);
    }
    char *key = fuzz_text(data, size);
    check_key(key);
    free(key);
    return 0;
}

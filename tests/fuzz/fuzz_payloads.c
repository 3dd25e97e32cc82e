/*
 * fuzz_payloads.c - libFuzzer target of every service's readers of what another
 * service wrote: the payload readers of order-service, payment-service,
 * inventory-service, delivery-service and query-api (their domain.c, which
 * their events.c call after deta_event_parse), and inventory-service's stock
 * bodies (PUT and PATCH /api/inventory/{itemId}). Table-driven: an input's first
 * byte picks a row (a reader and the event type it is given), the rest is the
 * payload as JSON (parsed as the envelope's parse does). The envelope around it
 * carries the payload's orderId as the envelope's (cut at a NUL, as a C string
 * is), or a fixed UUID when the payload has none.
 *
 * Checks what must hold whatever the payload, besides memory safety and no leak:
 *   - a refused payload has an error text (it becomes the dead letter's x-error);
 *   - an accepted one whose payload has an orderId has the envelope's, whole;
 *   - every text a reader keeps is the payload's string whole (nothing cut at a
 *     NUL) and NUL-terminated inside its field;
 *   - query-api's change, merged into a view, makes a view that has a JSON form.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "delivery-service/domain.h"
#include "deta/envelope.h"
#include "deta/topics.h"
#include "fuzz.h"
#include "inventory-service/domain.h"
#include "order-service/domain.h"
#include "payment-service/domain.h"
#include "query-api/domain.h"

typedef enum reader {
    ORDER_EVENT, PAYMENT_REQUEST, PAYMENT_CANCEL, PAYMENT_REFUND, INV_ORDER_CREATED,
    INV_CANCEL_REQUEST, INV_CANCEL_VERDICT, DELIVERY_AUTHORIZED, DELIVERY_CANCEL_FORWARDED,
    QUERY_CHANGE, INV_STOCK_PUT, INV_STOCK_PATCH,
} reader_t;

typedef struct row {
    reader_t reader;
    const char *type;
} row_t;

static const char *const all_types[] = {
    DETA_EVT_ORDER_CREATED, DETA_EVT_INVENTORY_RESERVED, DETA_EVT_INVENTORY_REJECTED,
    DETA_EVT_INVENTORY_RELEASED, DETA_EVT_PAYMENT_AUTHORIZED, DETA_EVT_PAYMENT_FAILED,
    DETA_EVT_DELIVERY_WAITING, DETA_EVT_DELIVERY_ASSIGNED, DETA_EVT_ETA_UPDATED,
    DETA_EVT_DELIVERY_PICKED_UP, DETA_EVT_DELIVERY_DELIVERED, DETA_EVT_ORDER_CANCEL_REQUESTED,
    DETA_EVT_INVENTORY_CANCEL_FORWARDED, DETA_EVT_INVENTORY_CANCEL_REFUSED,
    DETA_EVT_INVENTORY_CANCELLED, DETA_EVT_PAYMENT_CANCEL_FORWARDED,
    DETA_EVT_PAYMENT_CANCEL_REFUSED, DETA_EVT_PAYMENT_CANCELLED, DETA_EVT_PAYMENT_REFUNDED,
    DETA_EVT_DELIVERY_CANCELLED, DETA_EVT_DELIVERY_CANCEL_REFUSED,
};
#define NTYPES (sizeof all_types / sizeof *all_types)

/* Rows 0..9 the single-type readers; then order-service and query-api with
 * every type each (types[i] is the row's type). */
static const row_t fixed_rows[] = {
    {PAYMENT_REQUEST, DETA_EVT_INVENTORY_RESERVED},
    {PAYMENT_CANCEL, DETA_EVT_INVENTORY_CANCEL_FORWARDED},
    {PAYMENT_REFUND, DETA_EVT_DELIVERY_CANCELLED},
    {INV_ORDER_CREATED, DETA_EVT_ORDER_CREATED},
    {INV_CANCEL_REQUEST, DETA_EVT_ORDER_CANCEL_REQUESTED},
    {INV_CANCEL_VERDICT, DETA_EVT_PAYMENT_CANCELLED},
    {DELIVERY_AUTHORIZED, DETA_EVT_PAYMENT_AUTHORIZED},
    {DELIVERY_CANCEL_FORWARDED, DETA_EVT_PAYMENT_CANCEL_FORWARDED},
    {INV_STOCK_PUT, NULL},
    {INV_STOCK_PATCH, NULL},
};
#define NFIXED (sizeof fixed_rows / sizeof *fixed_rows)

static row_t row_of(uint8_t b) {
    size_t i = b % (NFIXED + 2 * NTYPES);
    if (i < NFIXED)
        return fixed_rows[i];
    i -= NFIXED;
    return (row_t){i < NTYPES ? ORDER_EVENT : QUERY_CHANGE, all_types[i % NTYPES]};
}

/* A kept text: terminated inside its field of size bytes. */
static void check_terminated(const char *s, size_t size) { FUZZ_CHECK(strnlen(s, size) < size); }

/* A kept text is the payload's string at key whole (when the payload has one). */
static void check_whole(const json_t *obj, const char *key, const char *got, size_t size) {
    check_terminated(got, size);
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v) || !got[0])
        return;
    FUZZ_CHECK(json_string_length(v) == strlen(got) &&
               memcmp(json_string_value(v), got, strlen(got)) == 0);
}
#define WHOLE(obj, key, field) check_whole(obj, key, field, sizeof field)

/* The payload's orderId, when it has one, is the envelope's whole. */
static void check_order_id(const json_t *payload, const char *order_id) {
    const json_t *v = json_object_get(payload, "orderId");
    if (!json_is_string(v))
        return;
    FUZZ_CHECK(json_string_length(v) == strlen(order_id) &&
               strncasecmp(json_string_value(v), order_id, strlen(order_id)) == 0);
}

static void check_view(const query_change_t *c, const json_t *payload) {
    static const struct {
        const char *key;
        size_t offset, size;
    } texts[] = {
#define T(key, member) {key, offsetof(query_view_t, member), sizeof(((query_view_t *)0)->member)}
        T("customerId", customer_id), T("reservationId", reservation_id),
        T("paymentId", payment_id),   T("deliveryId", delivery_id),
        T("driverId", driver_id),     T("driverName", driver_name),
#undef T
    };
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++)
        check_whole(payload, texts[i].key, (const char *)&c->fields + texts[i].offset,
                    texts[i].size);
    query_view_t view;
    memset(&view, 0, sizeof view);
    (void)query_view_merge(&view, c);
    json_t *j = query_view_to_json(&view);
    FUZZ_CHECK(j != NULL);
    char *text = json_dumps(j, JSON_COMPACT);
    FUZZ_CHECK(text != NULL);
    free(text);
    json_decref(j);
}

static deta_err_t run_event(row_t row, const deta_event_t *ev, char *err, size_t errsize) {
    const json_t *p = ev->payload;
    deta_err_t rc = DETA_ERR_INTERNAL;
    switch (row.reader) {
    case ORDER_EVENT: {
        order_event_effect_t eff;
        memset(&eff, 0, sizeof eff);
        rc = order_event_read(ev, &eff, err, errsize);
        if (rc == DETA_OK) {
            check_terminated(eff.order_id, sizeof eff.order_id);
            check_terminated(eff.decided_at, sizeof eff.decided_at);
            WHOLE(p, "orderStatus", eff.refused_because);
        }
        return rc == DETA_ERR_NOT_FOUND ? DETA_OK : rc;
    }
    case PAYMENT_REQUEST: {
        payment_request_t r;
        if ((rc = payment_request_from_event(ev, &r, err, errsize)) == DETA_OK) {
            WHOLE(p, "customerId", r.customer_id);
            FUZZ_CHECK(r.amount >= 0 && deta_currency_valid(r.currency));
        }
        return rc;
    }
    case PAYMENT_CANCEL: {
        payment_cancel_t c;
        if ((rc = payment_cancel_from_event(ev, &c, err, errsize)) == DETA_OK) {
            WHOLE(p, "reservationId", c.reservation_id);
            if (c.has_reason)
                WHOLE(p, "reason", c.reason);
        }
        return rc;
    }
    case PAYMENT_REFUND: {
        payment_refund_request_t r;
        return payment_refund_request_from_event(ev, &r, err, errsize);
    }
    case INV_ORDER_CREATED: {
        inv_request_t *r = malloc(sizeof *r);
        FUZZ_CHECK(r != NULL);
        if ((rc = inv_request_from_order_created(p, ev->order_id, r, err, errsize)) == DETA_OK) {
            WHOLE(p, "customerId", r->customer_id);
            FUZZ_CHECK(r->nlines >= 1 && r->nlines <= INV_MAX_LINES);
            for (size_t i = 0; i < r->nlines; i++) {
                check_terminated(r->lines[i].item_id, sizeof r->lines[i].item_id);
                FUZZ_CHECK(r->lines[i].item_id[0] && r->lines[i].quantity >= 1);
                for (size_t k = 0; k < i; k++)
                    FUZZ_CHECK(strcmp(r->lines[k].item_id, r->lines[i].item_id) != 0);
            }
        }
        free(r);
        return rc;
    }
    case INV_CANCEL_REQUEST: {
        inv_cancel_request_t c;
        if ((rc = inv_cancel_request_read(p, ev->order_id, &c, err, errsize)) == DETA_OK &&
            c.has_reason)
            WHOLE(p, "reason", c.reason);
        return rc;
    }
    case INV_CANCEL_VERDICT:
        return inv_cancel_verdict_read(p, ev->order_id, err, errsize);
    case DELIVERY_AUTHORIZED: {
        payment_authorized_t a;
        if ((rc = delivery_parse_payment_authorized(ev, &a, err, errsize)) == DETA_OK) {
            WHOLE(p, "paymentId", a.payment_id);
            WHOLE(p, "customerId", a.customer_id);
        }
        return rc;
    }
    case DELIVERY_CANCEL_FORWARDED: {
        payment_cancel_forwarded_t f;
        if ((rc = delivery_parse_cancel_forwarded(ev, &f, err, errsize)) == DETA_OK) {
            WHOLE(p, "paymentId", f.payment_id);
            if (f.has_reason)
                WHOLE(p, "reason", f.reason);
        }
        return rc;
    }
    case QUERY_CHANGE: {
        query_change_t c;
        memset(&c, 0, sizeof c);
        if ((rc = query_change_from_event(ev, &c, err, errsize)) == DETA_OK)
            check_view(&c, p);
        return rc;
    }
    case INV_STOCK_PUT:
    case INV_STOCK_PATCH:
        break;
    }
    return rc;
}

static void run_body(row_t row, const json_t *body) {
    inv_stock_change_t c;
    inv_violation_t v;
    memset(&c, 0, sizeof c);
    memset(&v, 0, sizeof v);
    deta_err_t rc = row.reader == INV_STOCK_PUT ? inv_stock_put_from_request(body, &c, &v)
                                                : inv_stock_patch_from_request(body, &c, &v);
    if (rc != DETA_OK) {
        FUZZ_CHECK(v.field[0] && v.message[0]);
        return;
    }
    FUZZ_CHECK(c.relative == (row.reader == INV_STOCK_PATCH));
    if (c.has_name)
        WHOLE(body, "name", c.name);
    if (c.has_available)
        FUZZ_CHECK(c.available >= 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    row_t row = row_of(data[0]);
    json_error_t jerr;
    json_t *payload = json_loadb((const char *)data + 1, size - 1,
                                 row.type ? JSON_REJECT_DUPLICATES : 0, &jerr);
    if (!payload)
        return 0;
    if (!row.type) {
        run_body(row, payload);
        json_decref(payload);
        return 0;
    }
    if (!json_is_object(payload)) { /* the envelope's parse refuses it */
        json_decref(payload);
        return 0;
    }
    deta_event_t ev;
    memset(&ev, 0, sizeof ev);
    strcpy(ev.event_id, "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d");
    snprintf(ev.event_type, sizeof ev.event_type, "%s", row.type);
    ev.schema_version = 1;
    strcpy(ev.occurred_at, "2026-11-25T12:38:05.123Z");
    strcpy(ev.produced_at, "2026-11-25T12:38:05.125Z");
    const char *oid = json_string_value(json_object_get(payload, "orderId"));
    snprintf(ev.order_id, sizeof ev.order_id, "%s",
             oid && oid[0] && strlen(oid) <= DETA_ID_MAX ? oid
                                                         : "3f8a1c2e-9b4d-4e6f-8a1b-2c3d4e5f6a7b");
    strcpy(ev.correlation_id, "c0ffee00-1111-4222-8333-444455556666");
    strcpy(ev.producer, "fuzz");
    ev.payload = payload;
    char err[256] = "";
    deta_err_t rc = run_event(row, &ev, err, sizeof err);
    if (rc != DETA_OK)
        FUZZ_CHECK(err[0] != '\0');
    else if (row.reader != ORDER_EVENT || order_event_followed(row.type))
        check_order_id(payload, ev.order_id);
    json_decref(payload);
    return 0;
}

/*
 * domain.c - inventory-service's rules (see domain.h): reading order.created,
 * reserve-or-reject, settling after a payment, the catalog, the admin's stock
 * changes, the cancellation saga's rules (a cancel request by reservation
 * status, the compensation of a cancel's verdict) and the payloads this service
 * publishes.
 *
 * Decisions: an order.created that breaks order-service's own limits (no lines,
 * more than 100, a quantity outside 1..100000, a missing customer or amount) is
 * malformed, not "rejected": no stock decision can be made from it, so it is
 * dead-lettered for a person to look at. Item ids in an order are any 1..64-byte
 * string (an id the stock does not know is an UNKNOWN_ITEM rejection); ids that
 * the catalog and the REST path create are restricted to URL-safe characters so
 * that every stocked item can be addressed as /api/inventory/{itemId}.
 */
#include "domain.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/fields.h"

const char INV_DEFAULT_CATALOG[] =
    "sku-1:100000,sku-2:100000,sku-3:100000,sku-4:100000,sku-5:100000,"
    "sku-6:100000,sku-7:100000,sku-8:100000,sku-9:100000,sku-10:100000,"
    "sku-11:100000,sku-12:100000,sku-13:100000,sku-14:100000,sku-15:100000,"
    "sku-16:100000,sku-17:100000,sku-18:100000,sku-19:100000,sku-20:100000,"
    "sku-limited:25";

/* ---- order.created ---- */

/* The fields of order.created's payload (deta/fields.h); the envelope's orderId
 * is compared after. items are read line by line with LINE_FIELDS. */
static const deta_field_t REQUEST_FIELDS[] = {
    DETA_FIELD("orderId", DETA_FIELD_TEXT, true, 1, INV_ID_MAX, inv_request_t, order_id),
    DETA_FIELD("customerId", DETA_FIELD_TEXT, true, 1, INV_ID_MAX, inv_request_t, customer_id),
    DETA_FIELD("totalAmount", DETA_FIELD_AMOUNT, true, 0, 0, inv_request_t, total),
    DETA_FIELD("currency", DETA_FIELD_CURRENCY, true, 0, 0, inv_request_t, currency),
};

typedef struct line_in {
    char item_id[INV_ID_MAX + 1];
    int64_t quantity;
} line_in_t;

static const deta_field_t LINE_FIELDS[] = {
    DETA_FIELD("itemId", DETA_FIELD_TEXT, true, 1, INV_ID_MAX, line_in_t, item_id),
    DETA_FIELD("quantity", DETA_FIELD_INT, true, 1, INV_MAX_QUANTITY, line_in_t, quantity),
};

#define NFIELDS(t) (sizeof t / sizeof *t)

/* Adds qty of item to the request, on the line that item already has if any. */
static void add_line(inv_request_t *r, const char *item_id, int64_t qty) {
    for (size_t i = 0; i < r->nlines; i++)
        if (strcmp(r->lines[i].item_id, item_id) == 0) {
            r->lines[i].quantity += qty;
            return;
        }
    inv_line_t *l = &r->lines[r->nlines++];
    snprintf(l->item_id, sizeof l->item_id, "%s", item_id);
    l->quantity = qty;
}

static deta_err_t take_line(const json_t *j, size_t i, inv_request_t *r, char *errstr,
                            size_t errsize) {
    if (!json_is_object(j))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "items[%zu] must be an object", i);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "items[%zu].", i);
    line_in_t line;
    deta_field_error_t e;
    if (deta_fields_read(j, prefix, LINE_FIELDS, NFIELDS(LINE_FIELDS), &line, &e))
        return deta_field_error_text(&e, errstr, errsize);
    add_line(r, line.item_id, line.quantity);
    return DETA_OK;
}

static deta_err_t take_lines(const json_t *payload, inv_request_t *r, char *errstr,
                             size_t errsize) {
    const json_t *items = json_object_get(payload, "items");
    if (!json_is_array(items))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "items must be a list");
    size_t n = json_array_size(items);
    if (n < 1 || n > INV_MAX_LINES)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "items must hold 1 to %d lines",
                         INV_MAX_LINES);
    for (size_t i = 0; i < n; i++)
        if (take_line(json_array_get(items, i), i, r, errstr, errsize))
            return DETA_ERR_INVALID;
    return DETA_OK;
}

deta_err_t inv_request_from_order_created(const json_t *payload, const char *order_id,
                                          inv_request_t *r, char *errstr, size_t errsize) {
    memset(r, 0, sizeof *r);
    if (!json_is_object(payload))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "payload must be an object");
    deta_field_error_t e;
    if (deta_fields_read(payload, NULL, REQUEST_FIELDS, 1, r, &e)) /* orderId */
        return deta_field_error_text(&e, errstr, errsize);
    if (strcmp(r->order_id, order_id) != 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "orderId %s differs from the envelope's %s", r->order_id, order_id);
    if (deta_fields_read(payload, NULL, REQUEST_FIELDS + 1, NFIELDS(REQUEST_FIELDS) - 1, r, &e))
        return deta_field_error_text(&e, errstr, errsize);
    if (take_lines(payload, r, errstr, errsize))
        return DETA_ERR_INVALID;
    return DETA_OK;
}

/* ---- decisions ---- */

static const inv_level_t *level_of(const char *item_id, const inv_level_t *levels, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(levels[i].item_id, item_id) == 0)
            return &levels[i];
    return NULL;
}

void inv_decide(const inv_line_t *lines, size_t nlines, const inv_level_t *levels,
                size_t nlevels, inv_decision_t *d) {
    memset(d, 0, sizeof *d);
    d->reserve = true;
    for (size_t i = 0; i < nlines; i++) {
        const inv_line_t *l = &lines[i];
        const inv_level_t *s = level_of(l->item_id, levels, nlevels);
        if (s && s->sellable && s->available >= l->quantity)
            continue;
        d->reserve = false;
        d->reason = !s            ? INV_REASON_UNKNOWN_ITEM
                    : !s->sellable ? INV_REASON_NOT_SELLABLE
                                   : INV_REASON_INSUFFICIENT_STOCK;
        snprintf(d->item_id, sizeof d->item_id, "%s", l->item_id);
        d->requested = l->quantity;
        d->available = s ? s->available : 0;
        return;
    }
}

static bool same(const char *a, const char *b) { return a && b && strcmp(a, b) == 0; }

inv_settlement_t inv_settlement_after_payment(const char *status, const char *reason,
                                              bool authorized) {
    if (same(status, INV_STATUS_HELD))
        return authorized ? INV_SETTLE_SELL : INV_SETTLE_RELEASE;
    if (authorized && same(status, INV_STATUS_RELEASED) && same(reason, INV_REASON_HOLD_EXPIRED))
        return INV_SETTLE_RETAKE;
    return INV_SETTLE_NOTHING;
}

/* ---- the cancellation saga ---- */

static const deta_field_t CANCEL_FIELDS[] = {
    DETA_FIELD("orderId", DETA_FIELD_TEXT, true, 1, INV_ID_MAX, inv_cancel_request_t, order_id),
    DETA_FIELD("reason", DETA_FIELD_TEXT, false, 1, INV_CANCEL_REASON_MAX, inv_cancel_request_t,
               reason),
    DETA_FIELD("requestedAt", DETA_FIELD_INSTANT, true, 0, 0, inv_cancel_request_t,
               requested_at),
};

/* The payload's orderId, which must be the envelope's. */
static deta_err_t same_order(const json_t *payload, const char *order_id, char *errstr,
                             size_t errsize) {
    if (!json_is_object(payload))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "payload must be an object");
    inv_cancel_request_t c;
    deta_field_error_t e;
    if (deta_fields_read(payload, NULL, CANCEL_FIELDS, 1, &c, &e))
        return deta_field_error_text(&e, errstr, errsize);
    if (strcmp(c.order_id, order_id) != 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "orderId %s differs from the envelope's %s", c.order_id, order_id);
    return DETA_OK;
}

deta_err_t inv_cancel_request_read(const json_t *payload, const char *order_id,
                                   inv_cancel_request_t *c, char *errstr, size_t errsize) {
    memset(c, 0, sizeof *c);
    if (same_order(payload, order_id, errstr, errsize))
        return DETA_ERR_INVALID;
    snprintf(c->order_id, sizeof c->order_id, "%s", order_id);
    /* reason is the client's, or null when it gave none (fields.h knows no null) */
    const json_t *reason = json_object_get(payload, "reason");
    size_t from = reason && !json_is_null(reason) ? 1 : 2;
    deta_field_error_t e;
    if (deta_fields_read(payload, NULL, CANCEL_FIELDS + from, NFIELDS(CANCEL_FIELDS) - from, c,
                         &e))
        return deta_field_error_text(&e, errstr, errsize);
    c->has_reason = c->reason[0] != '\0';
    return DETA_OK;
}

deta_err_t inv_cancel_verdict_read(const json_t *payload, const char *order_id, char *errstr,
                                   size_t errsize) {
    return same_order(payload, order_id, errstr, errsize);
}

inv_cancel_step_t inv_cancel_step(const char *status, bool decided) {
    if (!status || !*status)
        return INV_CANCEL_STEP_RECORD;
    if (decided || same(status, INV_STATUS_CANCELLED))
        return INV_CANCEL_STEP_NOTHING;
    if (same(status, INV_STATUS_REJECTED))
        return INV_CANCEL_STEP_REFUSE;
    /* HELD, SOLD, RELEASED, UNFULFILLABLE: the order went on to payment, which
     * knows whether it was charged (a late authorization may still come). */
    return INV_CANCEL_STEP_FORWARD;
}

inv_compensation_t inv_compensation(const char *status, const char *reason) {
    if (same(status, INV_STATUS_HELD))
        return INV_COMPENSATE_RELEASE_HELD;
    if (same(status, INV_STATUS_SOLD))
        return INV_COMPENSATE_RELEASE_SOLD;
    if (same(status, INV_STATUS_RELEASED) && same(reason, INV_REASON_HOLD_EXPIRED))
        return INV_COMPENSATE_FENCE;
    return INV_COMPENSATE_NOTHING;
}

bool inv_item_id_valid(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > INV_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80 || !(isalnum(c) || c == '.' || c == '_' || c == '~' || c == '-'))
            return false;
    }
    return true;
}

/* ---- the catalog ---- */

static bool all_digits(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return n > 0;
}

static bool in_catalog(const inv_catalog_t *c, const char *item_id) {
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->items[i].item_id, item_id) == 0)
            return true;
    return false;
}

/* One "itemId:units" entry (already trimmed, len bytes at e), appended to c. */
static deta_err_t take_entry(const char *e, size_t len, size_t no, inv_catalog_t *c,
                             char *errstr, size_t errsize) {
    const char *colon = memchr(e, ':', len);
    if (!colon)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         INV_CATALOG_VAR ": entry %zu \"%.*s\" is not itemId:units", no, (int)len,
                         e);
    size_t idlen = (size_t)(colon - e), ulen = len - idlen - 1;
    char id[INV_ID_MAX + 2];
    snprintf(id, sizeof id, "%.*s", (int)(idlen > INV_ID_MAX ? INV_ID_MAX + 1 : idlen), e);
    if (idlen > INV_ID_MAX || !inv_item_id_valid(id))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         INV_CATALOG_VAR ": entry %zu \"%.*s\": itemId must be 1 to %d of "
                                         "A-Z a-z 0-9 . _ ~ -",
                         no, (int)len, e, INV_ID_MAX);
    if (!all_digits(colon + 1, ulen) || ulen > 10 || strtoll(colon + 1, NULL, 10) > INV_MAX_UNITS)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         INV_CATALOG_VAR ": entry %zu \"%.*s\": units must be an integer from 0 "
                                         "to %lld",
                         no, (int)len, e, (long long)INV_MAX_UNITS);
    if (in_catalog(c, id))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         INV_CATALOG_VAR ": entry %zu: itemId %s is listed twice", no, id);
    inv_line_t *more = realloc(c->items, (c->n + 1) * sizeof *more);
    if (!more)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    c->items = more;
    memcpy(c->items[c->n].item_id, id, idlen + 1);
    c->items[c->n].quantity = strtoll(colon + 1, NULL, 10);
    c->n++;
    return DETA_OK;
}

deta_err_t inv_catalog_parse(const char *spec, inv_catalog_t *c, char *errstr, size_t errsize) {
    memset(c, 0, sizeof *c);
    if (!spec)
        spec = "";
    const char *p = spec;
    for (size_t no = 1;; no++) {
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        const char *b = p, *e = end;
        while (b < e && isspace((unsigned char)*b))
            b++;
        while (e > b && isspace((unsigned char)e[-1]))
            e--;
        deta_err_t err = b == e ? deta_errf(DETA_ERR_INVALID, errstr, errsize,
                                            INV_CATALOG_VAR ": entry %zu is empty (expected "
                                                            "itemId:units,itemId:units,...)",
                                            no)
                                : take_entry(b, (size_t)(e - b), no, c, errstr, errsize);
        if (err) {
            inv_catalog_clear(c);
            return err;
        }
        if (!*end)
            return DETA_OK;
        p = end + 1;
    }
}

void inv_catalog_clear(inv_catalog_t *c) {
    free(c->items);
    memset(c, 0, sizeof *c);
}

/* ---- the admin's stock changes ---- */

static deta_err_t violation(inv_violation_t *v, const char *field, const char *message) {
    snprintf(v->field, sizeof v->field, "%s", field);
    snprintf(v->message, sizeof v->message, "%s", message);
    return DETA_ERR_INVALID;
}

/* An optional integer member within [min, max]; *has tells whether it was there. */
static deta_err_t take_int(const json_t *body, const char *key, int64_t min, int64_t max,
                           const char *message, bool *has, int64_t *out, inv_violation_t *v) {
    const json_t *j = json_object_get(body, key);
    *has = j != NULL;
    if (!j)
        return DETA_OK;
    if (!json_is_integer(j) || json_integer_value(j) < min || json_integer_value(j) > max)
        return violation(v, key, message);
    *out = (int64_t)json_integer_value(j);
    return DETA_OK;
}

/* name, sellable and expectedVersion (at least min_version), which PUT and PATCH share. */
static deta_err_t take_common(const json_t *body, int64_t min_version, inv_stock_change_t *c,
                              inv_violation_t *v) {
    if (take_int(body, "expectedVersion", min_version, INT64_MAX,
                 min_version ? "must be the item's version, an integer from 1"
                             : "must be the item's version, an integer from 0 (no item yet)",
                 &c->has_expected_version, &c->expected_version, v))
        return DETA_ERR_INVALID;
    const json_t *s = json_object_get(body, "sellable");
    if (s && !json_is_boolean(s))
        return violation(v, "sellable", "must be true or false");
    c->has_sellable = s != NULL;
    c->sellable = json_is_true(s);
    const json_t *n = json_object_get(body, "name");
    if (!n)
        return DETA_OK;
    if (!json_is_string(n) || json_string_length(n) == 0 || json_string_length(n) > INV_NAME_MAX ||
        strlen(json_string_value(n)) != json_string_length(n))
        return violation(v, "name", "must be a string of 1 to 128 characters");
    c->has_name = true;
    memcpy(c->name, json_string_value(n), json_string_length(n) + 1);
    return DETA_OK;
}

deta_err_t inv_stock_put_from_request(const json_t *body, inv_stock_change_t *c,
                                      inv_violation_t *v) {
    memset(c, 0, sizeof *c);
    if (!json_is_object(body))
        return violation(v, "body", "must be a JSON object");
    if (!json_object_get(body, "available"))
        return violation(v, "available", "is required");
    if (take_int(body, "available", 0, INV_MAX_UNITS, "must be an integer from 0 to 1000000000",
                 &c->has_available, &c->available, v))
        return DETA_ERR_INVALID;
    return take_common(body, 0, c, v);
}

deta_err_t inv_stock_patch_from_request(const json_t *body, inv_stock_change_t *c,
                                        inv_violation_t *v) {
    memset(c, 0, sizeof *c);
    c->relative = true;
    if (!json_is_object(body))
        return violation(v, "body", "must be a JSON object");
    if (json_object_get(body, "available"))
        return violation(v, "available",
                         "cannot be set by PATCH: send delta, or PUT it with expectedVersion");
    if (take_int(body, "delta", -INV_MAX_UNITS, INV_MAX_UNITS,
                 "must be an integer from -1000000000 to 1000000000", &c->has_delta, &c->delta,
                 v) ||
        take_common(body, 1, c, v))
        return DETA_ERR_INVALID;
    if (!c->has_delta && !c->has_sellable && !c->has_name)
        return violation(v, "delta", "is required (or sellable, or name)");
    return DETA_OK;
}

/* Would writing c over cur change anything? (for an unversioned put) */
static bool changes(const inv_stock_row_t *cur, const inv_stock_change_t *c) {
    return cur->available != c->available || (c->has_sellable && cur->sellable != c->sellable) ||
           (c->has_name && strcmp(cur->name, c->name) != 0);
}

static inv_change_outcome_t refuse(inv_change_outcome_t o, inv_violation_t *v, const char *field,
                                   const char *message) {
    violation(v, field, message);
    return o;
}

inv_change_outcome_t inv_stock_apply(const inv_stock_row_t *cur, const inv_stock_change_t *c,
                                     inv_stock_row_t *next, inv_violation_t *v) {
    int64_t version = cur ? cur->version : 0;
    if (!cur && c->relative)
        return refuse(INV_CHANGE_NOT_FOUND, v, "itemId", "no such item");
    if (c->has_expected_version && c->expected_version != version)
        return refuse(INV_CHANGE_STALE, v, "expectedVersion",
                      cur ? "is not the item's version: it changed since it was read"
                          : "names a version of an item that does not exist");
    if (cur && !c->relative && !c->has_expected_version) {
        if (!changes(cur, c))
            return INV_CHANGE_SAME;
        return refuse(INV_CHANGE_VERSION_REQUIRED, v, "expectedVersion",
                      "is required to change an existing item: GET it and send its version, "
                      "or PATCH a delta");
    }
    memset(next, 0, sizeof *next);
    next->version = version + 1;
    next->sellable = c->has_sellable ? c->sellable : cur ? cur->sellable : true;
    if (c->has_name)
        memcpy(next->name, c->name, sizeof next->name);
    else if (cur)
        memcpy(next->name, cur->name, sizeof next->name);
    next->available = c->relative ? cur->available + c->delta : c->available;
    if (next->available < 0 || next->available > INV_MAX_UNITS)
        return refuse(INV_CHANGE_OUT_OF_RANGE, v, "delta",
                      "would leave available outside 0 to 1000000000");
    return cur ? INV_CHANGE_UPDATE : INV_CHANGE_CREATE;
}

/* ---- payloads ---- */

json_t *inv_lines_json(const inv_line_t *lines, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_pack("{s:s, s:I}", "itemId", lines[i].item_id,
                                               "quantity", (json_int_t)lines[i].quantity))) {
            json_decref(a);
            return NULL;
        }
    return a;
}

json_t *inv_reserved_payload(const inv_request_t *r, const char *reservation_id,
                             const char *reserved_at, const char *hold_expires_at) {
    char total[DETA_MONEY_STRLEN];
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:s}", "orderId", r->order_id,
                     "reservationId", reservation_id, "customerId", r->customer_id,
                     "totalAmount", deta_money_format(r->total, total), "currency", r->currency,
                     "items", inv_lines_json(r->lines, r->nlines), "reservedAt", reserved_at,
                     "holdExpiresAt", hold_expires_at);
}

json_t *inv_rejected_payload(const char *order_id, const char *customer_id,
                             const inv_decision_t *d, const char *rejected_at) {
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:s}", "orderId", order_id, "customerId",
                     customer_id, "reason", d->reason, "itemId", d->item_id, "requested",
                     (json_int_t)d->requested, "available", (json_int_t)d->available,
                     "rejectedAt", rejected_at);
}

json_t *inv_released_payload(const char *order_id, const char *reservation_id, const char *reason,
                             const inv_line_t *lines, size_t n, const char *released_at) {
    return json_pack("{s:s, s:s, s:s, s:o, s:s}", "orderId", order_id, "reservationId",
                     reservation_id, "reason", reason, "items", inv_lines_json(lines, n),
                     "releasedAt", released_at);
}

/* The request's reason, or null. */
static json_t *reason_json(const inv_cancel_request_t *c) {
    return c->has_reason ? json_string(c->reason) : json_null();
}

json_t *inv_cancel_forwarded_payload(const inv_cancel_request_t *c, const char *reservation_id,
                                     const char *forwarded_at) {
    return json_pack("{s:s, s:s, s:o, s:s, s:s}", "orderId", c->order_id, "reservationId",
                     reservation_id, "reason", reason_json(c), "requestedAt", c->requested_at,
                     "forwardedAt", forwarded_at);
}

json_t *inv_cancel_refused_payload(const inv_cancel_request_t *c, const char *refused_at) {
    return json_pack("{s:s, s:s, s:o, s:s, s:s}", "orderId", c->order_id, "orderStatus",
                     DETA_STATE_INVENTORY_REJECTED, "reason", reason_json(c), "requestedAt",
                     c->requested_at, "refusedAt", refused_at);
}

json_t *inv_cancelled_payload(const inv_cancel_request_t *c, const char *cancelled_at) {
    return json_pack("{s:s, s:s, s:o, s:s, s:s}", "orderId", c->order_id, "stage", "NONE",
                     "reason", reason_json(c), "requestedAt", c->requested_at, "cancelledAt",
                     cancelled_at);
}

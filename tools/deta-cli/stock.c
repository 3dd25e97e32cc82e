/*
 * stock.c - inventory-service's stock levels, as the demo compares them.
 *
 * GET /api/inventory lists every item with its available, held and sold units.
 * The demo reads it before and after the run: units move between the three
 * columns (held while an order waits for payment, sold once paid, back to
 * available when the payment fails) but their sum per item never changes, and
 * nothing is left held once every order has ended. A row that lacks a number is
 * an error rather than a zero, so that a changed shape is noticed, not hidden.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static bool take_count(const json_t *row, const char *key, long *out, char *errstr,
                       size_t errsize) {
    const json_t *v = json_object_get(row, key);
    if (!json_is_integer(v)) {
        snprintf(errstr, errsize, "an inventory row has no integer '%s'", key);
        return false;
    }
    *out = (long)json_integer_value(v);
    return true;
}

static bool take_row(const json_t *row, stock_row_t *r, char *errstr, size_t errsize) {
    const char *id = json_string_value(json_object_get(row, "itemId"));
    if (!id) {
        snprintf(errstr, errsize, "an inventory row has no 'itemId'");
        return false;
    }
    snprintf(r->item_id, sizeof r->item_id, "%s", id);
    return take_count(row, "available", &r->available, errstr, errsize) &&
           take_count(row, "held", &r->held, errstr, errsize) &&
           take_count(row, "sold", &r->sold, errstr, errsize);
}

bool stock_from_json(const json_t *j, stock_t *out, char *errstr, size_t errsize) {
    memset(out, 0, sizeof *out);
    const json_t *list = json_is_array(j) ? j : json_object_get(j, "items");
    if (!json_is_array(list)) {
        snprintf(errstr, errsize, "the inventory is neither a list nor {\"items\": [...]}");
        return false;
    }
    out->rows = calloc(json_array_size(list) + 1, sizeof *out->rows);
    if (!out->rows) {
        snprintf(errstr, errsize, "out of memory");
        return false;
    }
    size_t i;
    json_t *row;
    json_array_foreach(list, i, row) {
        if (!take_row(row, &out->rows[out->n], errstr, errsize)) {
            stock_clear(out);
            return false;
        }
        out->n++;
    }
    return true;
}

bool stock_fetch(deta_client_t *h, const char *inventory_url, stock_t *out, char *errstr,
                 size_t errsize) {
    memset(out, 0, sizeof *out);
    char *url = deta_client_url(inventory_url, "/api/inventory");
    deta_client_resp_t r;
    char why[512];
    if (!url || deta_client_json(h, "GET", url, NULL, &r, why, sizeof why) != 0) {
        snprintf(errstr, errsize, "inventory-service: %s", url ? why : "out of memory");
        free(url);
        return false;
    }
    bool ok = false;
    if (r.status != 200) {
        deta_client_resp_describe(&r, why, sizeof why);
        snprintf(errstr, errsize, "inventory-service (GET %s): %s", url, why);
    } else if (!stock_from_json(r.json, out, why, sizeof why)) {
        snprintf(errstr, errsize, "inventory-service (GET %s): %s", url, why);
    } else {
        ok = true;
    }
    deta_client_resp_clear(&r);
    free(url);
    return ok;
}

const stock_row_t *stock_find(const stock_t *s, const char *item_id) {
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->rows[i].item_id, item_id))
            return &s->rows[i];
    return NULL;
}

void stock_clear(stock_t *s) {
    free(s->rows);
    memset(s, 0, sizeof *s);
}

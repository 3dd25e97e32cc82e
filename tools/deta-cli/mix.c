/*
 * mix.c - the demo's orders: a deterministic mix drawn from a seed.
 *
 * The same seed and count give the same orders on every machine (splitmix64, not
 * rand()), so two runs of the demo can be compared. The mix is made of exact
 * counts, then shuffled, rather than drawn kind by kind, so that even a short run
 * has every kind in it:
 *   - about 1 in 10 orders asks for 2-3 units of sku-limited (25 in stock), so a
 *     run of 300 asks for about 75 and the rest are rejected for stock;
 *   - about 1 in 16 comes from a customer "decline-<n>", whom the payment gateway
 *     declines (the stock held for it is released);
 *   - about 1 in 50 is above the gateway's amount limit (10000.00 by default);
 *   - the rest are ordinary: 1-3 distinct lines of sku-1..sku-20, 1-3 units each.
 * Prices are fixed per SKU, so an order's total depends only on its lines.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "deta/states.h"

#define CATALOG_SIZE 20
#define CUSTOMERS 40

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* Uniform enough in [0, n) for the small n used here. */
static int draw(uint64_t *state, int n) { return (int)(splitmix64(state) % (uint64_t)n); }

/* sku-k costs 1.99 + (k * 3.37 mod 40): a few euros to a few tens. */
static deta_money_t catalog_price(int k) { return 199 + (k * 337) % 4000; }

static void set_line(mix_line_t *l, const char *item_id, int quantity, deta_money_t price) {
    snprintf(l->item_id, sizeof l->item_id, "%s", item_id);
    l->quantity = quantity;
    l->unit_price = price;
}

static void catalog_line(mix_line_t *l, int k, int quantity) {
    char id[16];
    snprintf(id, sizeof id, "sku-%d", k);
    set_line(l, id, quantity, catalog_price(k));
}

/* 1-3 distinct catalog items, 1-3 units each. */
static void ordinary_lines(uint64_t *st, mix_order_t *o) {
    int want = 1 + draw(st, 3), used[MIX_MAX_LINES] = {0};
    o->nlines = 0;
    while (o->nlines < want) {
        int k = 1 + draw(st, CATALOG_SIZE), dup = 0;
        for (int i = 0; i < o->nlines; i++)
            dup |= used[i] == k;
        if (dup)
            continue;
        used[o->nlines] = k;
        catalog_line(&o->lines[o->nlines++], k, 1 + draw(st, 3));
    }
}

static void make_order(uint64_t *st, mix_kind_t kind, size_t index, mix_order_t *o) {
    memset(o, 0, sizeof *o);
    o->kind = kind;
    snprintf(o->customer, sizeof o->customer, "cust-%d", 1 + draw(st, CUSTOMERS));
    switch (kind) {
    case MIX_LIMITED:
        set_line(&o->lines[0], MIX_LIMITED_SKU, 2 + draw(st, 2), 4999);
        o->nlines = 1;
        break;
    case MIX_DECLINED_CUSTOMER:
        snprintf(o->customer, sizeof o->customer, "decline-%zu", index + 1);
        ordinary_lines(st, o);
        break;
    case MIX_DECLINED_AMOUNT:
        catalog_line(&o->lines[0], 1 + draw(st, CATALOG_SIZE), 2);
        o->lines[0].unit_price = 600000; /* 2 x 6000.00 = 12000.00 */
        o->nlines = 1;
        break;
    default: ordinary_lines(st, o); break;
    }
}

void mix_plan(uint64_t seed, size_t n, mix_order_t *out) {
    uint64_t st = seed;
    mix_kind_t *kinds = malloc((n ? n : 1) * sizeof *kinds);
    if (!kinds) {
        for (size_t i = 0; i < n; i++)
            make_order(&st, MIX_ORDINARY, i, &out[i]);
        return;
    }
    size_t limited = (n + 9) / 10, declined = n / 16, amount = n / 50;
    for (size_t i = 0; i < n; i++)
        kinds[i] = i < limited                       ? MIX_LIMITED
                   : i < limited + declined          ? MIX_DECLINED_CUSTOMER
                   : i < limited + declined + amount ? MIX_DECLINED_AMOUNT
                                                     : MIX_ORDINARY;
    for (size_t i = n; i > 1; i--) { /* Fisher-Yates */
        size_t j = (size_t)(splitmix64(&st) % i);
        mix_kind_t t = kinds[i - 1];
        kinds[i - 1] = kinds[j];
        kinds[j] = t;
    }
    for (size_t i = 0; i < n; i++)
        make_order(&st, kinds[i], i, &out[i]);
    free(kinds);
}

char *mix_order_body(const mix_order_t *o) {
    json_t *items = json_array();
    char price[DETA_MONEY_STRLEN];
    for (int i = 0; i < o->nlines; i++)
        json_array_append_new(items, json_pack("{s:s, s:i, s:s}", "itemId", o->lines[i].item_id,
                                               "quantity", o->lines[i].quantity, "unitPrice",
                                               deta_money_format(o->lines[i].unit_price, price)));
    json_t *body =
        json_pack("{s:s, s:s, s:o}", "customerId", o->customer, "currency", "EUR", "items", items);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return text;
}

const char *mix_kind_name(mix_kind_t kind) {
    switch (kind) {
    case MIX_ORDINARY: return "ordinary";
    case MIX_LIMITED: return "sku-limited";
    case MIX_DECLINED_CUSTOMER: return "declined customer";
    case MIX_DECLINED_AMOUNT: return "above amount limit";
    default: return "?";
    }
}

const char *mix_kind_expectation(mix_kind_t kind) {
    switch (kind) {
    case MIX_ORDINARY: return DETA_STATE_DELIVERED;
    case MIX_LIMITED: return "DELIVERED or INVENTORY_REJECTED";
    default: return DETA_STATE_PAYMENT_FAILED;
    }
}

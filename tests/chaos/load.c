/*
 * load.c - the chaos run's clients: its items, then its orders.
 *
 * Items are created before the first fault, so their initial stock is known for
 * certain (each PUT is retried until it is answered 200/201).
 *
 * Orders: CHAOS_THREADS threads take plan indexes from one atomic counter and
 * POST each order once, paced to CHAOS_RATE in all by a shared schedule (each
 * order has its slot: start + index / rate). A request that never reached
 * order-service (connection refused: the service is down) cannot have created
 * anything, so it is retried, for up to PATIENCE_S; anything else is final,
 * because re-sending a request that may have arrived could create a second order
 * the client asked for only once. The answer is recorded in the plan (accepted
 * with its orderId, refused, unavailable, cut off or unreachable) for verify.c.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaos.h"
#include "deta/client_orders.h"

#define PATIENCE_S 60.0     /* how long an order waits for order-service to be back */
#define REQUEST_TIMEOUT_MS 20000L
#define CONNECT_TIMEOUT_MS 3000L
#define RETRY_PAUSE_MS 200

/* A handle of its own for one request: a connection kept across the kills
 * would mostly be found dead. NULL (with err said) when out of memory. */
static deta_client_t *fresh_client(char *err, size_t errsize) {
    deta_client_t *c = deta_client_new(REQUEST_TIMEOUT_MS, CONNECT_TIMEOUT_MS);
    if (!c)
        snprintf(err, errsize, "out of memory");
    return c;
}

/* ---- items ---- */

/* One PUT of the item's stock; true when answered 200 or 201. */
static bool put_once(const char *url, const char *body) {
    char err[512];
    deta_client_t *c = fresh_client(err, sizeof err);
    deta_client_resp_t r = {.body = ""};
    if (c)
        deta_client_json(c, "PUT", url, body, &r, err, sizeof err);
    bool ok = r.status == 200 || r.status == 201;
    if (!ok)
        fprintf(stderr, "chaos: PUT %s: %s, status %ld; retrying\n", url,
                deta_client_strerror(r.error), r.status);
    deta_client_resp_clear(&r);
    deta_client_free(c);
    return ok;
}

static bool put_item(const chaos_run_t *run, const chaos_item_t *it) {
    char url[512], body[128];
    snprintf(url, sizeof url, "%s/api/inventory/%s", run->s.inventory_url, it->id);
    snprintf(body, sizeof body, "{\"available\": %ld}", it->initial);
    for (double until = chaos_now() + PATIENCE_S; chaos_now() < until;) {
        if (put_once(url, body))
            return true;
        chaos_sleep_ms(1000);
    }
    return false;
}

bool chaos_setup_items(chaos_run_t *run) {
    for (int i = 0; i < CHAOS_ITEMS; i++)
        if (!put_item(run, &run->items[i])) {
            fprintf(stderr, "chaos: cannot create item %s\n", run->items[i].id);
            return false;
        }
    printf("chaos: %d items created (%d scarce, %ld units each)\n", CHAOS_ITEMS,
           CHAOS_SCARCE_ITEMS, run->items[CHAOS_ITEMS - 1].initial);
    return true;
}

/* ---- orders ---- */

static char *order_body(const chaos_run_t *run, long i) {
    const chaos_order_t *o = &run->orders[i];
    char customer[96];
    chaos_customer_id(run, i, customer, sizeof customer);
    json_t *items = json_array();
    for (int l = 0; l < o->nlines; l++) {
        char price[32];
        snprintf(price, sizeof price, "%ld.%02ld", o->lines[l].cents / 100,
                 o->lines[l].cents % 100);
        json_array_append_new(items, json_pack("{s:s, s:i, s:s}", "itemId",
                                               run->items[o->lines[l].item].id, "quantity",
                                               o->lines[l].quantity, "unitPrice", price));
    }
    json_t *body = json_pack("{s:s, s:s, s:o}", "customerId", customer, "currency", "USD",
                             "items", items);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    return text;
}

static void take_order_id(chaos_order_t *o, const deta_client_resp_t *r) {
    if (deta_order_id_of(r->json, o->order_id, sizeof o->order_id)) {
        o->placed = PLACED_ACCEPTED;
    } else {
        chaos_violation("201 without an orderId", "answer %.200s", r->body);
        o->placed = PLACED_CUT_OFF;
    }
}

/* What the answer (or its absence) to order i's POST means for the order. */
static void judge_answer(chaos_order_t *o, long i, int rc, const deta_client_resp_t *r) {
    o->http_status = r->status;
    if (deta_client_never_connected(r))
        o->placed = PLACED_UNREACHABLE;
    else if (rc != 0)
        o->placed = PLACED_CUT_OFF;
    else if (r->status == 201)
        take_order_id(o, r);
    else if (r->status >= 500)
        o->placed = PLACED_UNAVAILABLE;
    else {
        o->placed = PLACED_REFUSED;
        chaos_violation("valid order refused", "order %ld: HTTP %ld: %.200s", i, r->status,
                        r->body);
    }
}

/* Places order i: retried only while order-service cannot be reached at all. */
static void place_one(chaos_run_t *run, long i) {
    chaos_order_t *o = &run->orders[i];
    char *body = order_body(run, i);
    if (!body) {
        o->placed = PLACED_UNREACHABLE;
        return;
    }
    double until = chaos_now() + PATIENCE_S;
    for (;;) {
        char err[512];
        deta_client_t *c = fresh_client(err, sizeof err);
        deta_client_resp_t r = {.body = ""};
        int rc = c ? deta_order_place(c, run->s.order_url, body, &r, err, sizeof err) : -1;
        bool again = deta_client_never_connected(&r) && chaos_now() < until;
        if (!again)
            judge_answer(o, i, rc, &r);
        deta_client_resp_clear(&r);
        deta_client_free(c);
        if (!again)
            break;
        chaos_sleep_ms(RETRY_PAUSE_MS);
    }
    free(body);
}

typedef struct pacer {
    chaos_run_t *run;
    double start;
} pacer_t;

static void *client_main(void *arg) {
    pacer_t *p = arg;
    chaos_run_t *run = p->run;
    for (;;) {
        long i = atomic_fetch_add(&run->next_order, 1);
        if (i >= run->s.orders)
            break;
        if (run->s.rate > 0) {
            double slot = p->start + (double)i / (double)run->s.rate;
            double wait = slot - chaos_now();
            if (wait > 0)
                chaos_sleep_ms((long)(wait * 1000));
        }
        place_one(run, i);
        long done = atomic_fetch_add(&run->placed_count, 1) + 1;
        if (done % 500 == 0 || done == run->s.orders)
            printf("chaos: %ld/%ld orders placed\n", done, run->s.orders);
    }
    return NULL;
}

void chaos_place_orders(chaos_run_t *run) {
    pacer_t p = {run, chaos_now()};
    pthread_t threads[64];
    long n = run->s.threads;
    long started = 0;
    for (; started < n; started++)
        if (pthread_create(&threads[started], NULL, client_main, &p) != 0)
            break;
    if (started == 0)
        client_main(&p);
    for (long t = 0; t < started; t++)
        pthread_join(threads[t], NULL);
}

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
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaos.h"

#define PATIENCE_S 60.0     /* how long an order waits for order-service to be back */
#define REQUEST_TIMEOUT_S 20L
#define RETRY_PAUSE_MS 200

typedef struct body {
    char *buf;
    size_t len;
} body_t;

static size_t collect(char *data, size_t size, size_t n, void *opaque) {
    body_t *b = opaque;
    size_t add = size * n;
    char *nb = realloc(b->buf, b->len + add + 1);
    if (!nb)
        return 0;
    memcpy(nb + b->len, data, add);
    b->buf = nb;
    b->len += add;
    b->buf[b->len] = '\0';
    return add;
}

/* One HTTP request with a JSON body; *status 0 when there was no answer.
 * Returns curl's code; the body (malloc'd, maybe NULL) in *answer. */
static CURLcode http_json(const char *method, const char *url, const char *json, long *status,
                          char **answer) {
    CURL *c = curl_easy_init();
    body_t b = {NULL, 0};
    *status = 0;
    *answer = NULL;
    if (!c)
        return CURLE_FAILED_INIT;
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(json));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, REQUEST_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 3L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    *answer = b.buf;
    return rc;
}

/* ---- items ---- */

static bool put_item(const chaos_run_t *run, const chaos_item_t *it) {
    char url[512], body[128];
    snprintf(url, sizeof url, "%s/api/inventory/%s", run->s.inventory_url, it->id);
    snprintf(body, sizeof body, "{\"available\": %ld}", it->initial);
    for (double until = chaos_now() + PATIENCE_S; chaos_now() < until;) {
        long status;
        char *answer;
        CURLcode rc = http_json("PUT", url, body, &status, &answer);
        free(answer);
        if (rc == CURLE_OK && (status == 200 || status == 201))
            return true;
        fprintf(stderr, "chaos: PUT %s: %s, status %ld; retrying\n", url, curl_easy_strerror(rc),
                status);
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

static void take_order_id(chaos_order_t *o, const char *answer) {
    json_t *j = answer ? json_loads(answer, 0, NULL) : NULL;
    const char *id = json_string_value(json_object_get(j, "orderId"));
    if (id && strlen(id) < sizeof o->order_id) {
        snprintf(o->order_id, sizeof o->order_id, "%s", id);
        o->placed = PLACED_ACCEPTED;
    } else {
        chaos_violation("201 without an orderId", "answer %.200s", answer ? answer : "(none)");
        o->placed = PLACED_CUT_OFF;
    }
    json_decref(j);
}

/* Places order i: retried only while order-service cannot be reached at all. */
static void place_one(chaos_run_t *run, long i) {
    chaos_order_t *o = &run->orders[i];
    char url[512];
    snprintf(url, sizeof url, "%s/api/orders", run->s.order_url);
    char *body = order_body(run, i);
    if (!body) {
        o->placed = PLACED_UNREACHABLE;
        return;
    }
    double until = chaos_now() + PATIENCE_S;
    for (;;) {
        char *answer = NULL;
        CURLcode rc = http_json("POST", url, body, &o->http_status, &answer);
        if (rc == CURLE_COULDNT_CONNECT && chaos_now() < until) {
            free(answer);
            chaos_sleep_ms(RETRY_PAUSE_MS);
            continue;
        }
        if (rc == CURLE_COULDNT_CONNECT)
            o->placed = PLACED_UNREACHABLE;
        else if (rc != CURLE_OK)
            o->placed = PLACED_CUT_OFF;
        else if (o->http_status == 201)
            take_order_id(o, answer);
        else if (o->http_status >= 500)
            o->placed = PLACED_UNAVAILABLE;
        else {
            o->placed = PLACED_REFUSED;
            chaos_violation("valid order refused", "order %ld: HTTP %ld: %.200s", i,
                            o->http_status, answer ? answer : "");
        }
        free(answer);
        break;
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

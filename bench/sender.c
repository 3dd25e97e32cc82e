/*
 * sender.c - the open-loop half of the load generator: POST /api/orders at
 * exact intended instants, over a bounded pool of keep-alive connections.
 *
 * One thread drives one curl multi handle. At each turn it hands curl every
 * order whose intended instant has come (all of them at once if it fell
 * behind: the schedule is never stretched), lets curl move bytes, collects the
 * answers, and sleeps in curl_multi_poll until the next intended instant or
 * socket activity, whichever comes first. Curl opens at most `connections`
 * connections and keeps them alive; a request that finds them all busy waits
 * in curl's own queue, first come first served, and that wait is part of its
 * latency (measured from the intended instant). The generator's queue is
 * bounded by max_outstanding: an order due while that many are unanswered is
 * dropped and counted, which makes its step fail rather than exhaust memory.
 *
 * Easy handles are recycled through a free list, each with its own body and
 * answer buffers (the answer's a fixed deta_client_buf_t: written by the
 * clients' one write callback, cut rather than grown, never allocating); an
 * answer is parsed for orderId with jansson (deta_order_id_of). At the run's
 * deadline whatever is still unanswered is abandoned and counted as refused.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/client_orders.h"
#include "loadgen.h"

#define BODY_MAX 256
#define ANSWER_MAX 2048

typedef struct request {
    CURL *easy;
    size_t index;
    char body[BODY_MAX];
    char answer[ANSWER_MAX];
    deta_client_buf_t buf; /* fixed, over answer: cut, never grown */
    struct request *next_free;
} request_t;

typedef struct sender {
    lg_run_t *run;
    CURLM *multi;
    struct curl_slist *headers;
    char url[512];
    request_t *free_list;
    request_t **live; /* in flight, for the abandon at the deadline */
    size_t nlive, live_cap;
    size_t next; /* the next order to send */
} sender_t;

static request_t *request_new(sender_t *s) {
    request_t *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->easy = curl_easy_init();
    if (!q->easy) {
        free(q);
        return NULL;
    }
    q->buf = (deta_client_buf_t){.data = q->answer, .cap = ANSWER_MAX, .fixed = true};
    CURL *e = q->easy;
    curl_easy_setopt(e, CURLOPT_URL, s->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, deta_client_buf_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &q->buf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, q);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, s->run->timeout_ms);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    return q;
}

static void request_free(request_t *q) {
    curl_easy_cleanup(q->easy);
    free(q);
}

static request_t *request_take(sender_t *s) {
    request_t *q = s->free_list;
    if (q) {
        s->free_list = q->next_free;
        return q;
    }
    return request_new(s);
}

static void request_give_back(sender_t *s, request_t *q) {
    q->next_free = s->free_list;
    s->free_list = q;
}

static bool live_add(sender_t *s, request_t *q) {
    if (s->nlive == s->live_cap) {
        size_t cap = s->live_cap ? s->live_cap * 2 : 64;
        request_t **live = realloc(s->live, cap * sizeof *live);
        if (!live)
            return false;
        s->live = live;
        s->live_cap = cap;
    }
    s->live[s->nlive++] = q;
    return true;
}

static void live_remove(sender_t *s, request_t *q) {
    for (size_t i = 0; i < s->nlive; i++)
        if (s->live[i] == q) {
            s->live[i] = s->live[--s->nlive];
            return;
        }
}

/* One line of one unit of a stock item; the items rotate so that no single
 * stock row takes every reservation. */
static void order_body(const lg_run_t *r, size_t i, char *buf, size_t size) {
    char customer[128];
    lg_customer_id(r, i, customer, sizeof customer);
    snprintf(buf, size,
             "{\"customerId\":\"%s\",\"currency\":\"USD\",\"items\":"
             "[{\"itemId\":\"sku-%zu\",\"quantity\":1,\"unitPrice\":\"9.99\"}]}",
             customer, i % 20 + 1);
}

static void note_in_flight(lg_run_t *r, size_t n) {
    size_t max = atomic_load(&r->max_in_flight);
    while (n > max && !atomic_compare_exchange_weak(&r->max_in_flight, &max, n))
        ;
}

static void finish_order(lg_run_t *r, lg_order_t *o, int http_status, const char *order_id) {
    o->answered_us = lg_now_us();
    o->http_status = http_status;
    if (http_status == 201 && order_id && strlen(order_id) == LG_ID_MAX) {
        memcpy(o->order_id, order_id, LG_ID_MAX + 1);
        atomic_store_explicit(&o->state, ORDER_ACCEPTED, memory_order_release);
        atomic_fetch_add(&r->accepted, 1);
    } else {
        atomic_store_explicit(&o->state, ORDER_REFUSED, memory_order_release);
        atomic_fetch_add(&r->refused, 1);
    }
}

static void send_order(sender_t *s, size_t i) {
    lg_run_t *r = s->run;
    lg_order_t *o = &r->orders[i];
    if (s->nlive >= (size_t)r->max_outstanding) {
        atomic_store(&o->state, ORDER_DROPPED);
        atomic_fetch_add(&r->dropped, 1);
        return;
    }
    request_t *q = request_take(s);
    if (!q || !live_add(s, q)) {
        if (q)
            request_give_back(s, q);
        o->http_status = -(int)CURLE_OUT_OF_MEMORY;
        atomic_store(&o->state, ORDER_DROPPED);
        atomic_fetch_add(&r->dropped, 1);
        return;
    }
    q->index = i;
    deta_client_buf_reset(&q->buf);
    order_body(r, i, q->body, sizeof q->body);
    curl_easy_setopt(q->easy, CURLOPT_POSTFIELDS, q->body);
    curl_easy_setopt(q->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(q->body));
    o->sent_us = lg_now_us();
    atomic_store(&o->state, ORDER_SENT);
    curl_multi_add_handle(s->multi, q->easy);
    atomic_fetch_add(&r->sent, 1);
    note_in_flight(r, s->nlive);
}

/* The orderId of a 201's body, copied into id; false when there is none. */
static bool answer_order_id(const char *answer, char *id, size_t size) {
    json_t *root = json_loads(answer, 0, NULL);
    bool ok = deta_order_id_of(root, id, size);
    json_decref(root);
    return ok;
}

static void collect_answers(sender_t *s) {
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(s->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        request_t *q = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&q);
        CURLcode rc = m->data.result;
        curl_multi_remove_handle(s->multi, m->easy_handle);
        lg_order_t *o = &s->run->orders[q->index];
        long status = 0;
        char id[LG_ID_MAX + 1] = "";
        if (rc == CURLE_OK) {
            curl_easy_getinfo(q->easy, CURLINFO_RESPONSE_CODE, &status);
            if (status == 201 && !answer_order_id(q->answer, id, sizeof id))
                status = -1000; /* a 201 without an orderId is a broken answer */
            finish_order(s->run, o, (int)status, id);
        } else {
            finish_order(s->run, o, -(int)rc, NULL);
        }
        live_remove(s, q);
        request_give_back(s, q);
    }
}

/* Hands curl every order whose intended instant has come. */
static void send_due(sender_t *s, int64_t now) {
    lg_run_t *r = s->run;
    while (s->next < r->n && r->orders[s->next].intended_us <= now)
        send_order(s, s->next++);
}

/* How long curl_multi_poll may sleep: until the next intended instant, but
 * never past what curl itself wants. Rounded up to whole milliseconds rather
 * than spinning through the last one: the machine's cores belong to the
 * system under test, and an order sent up to 1 ms late still has its latency
 * measured from its intended instant. */
static int poll_timeout_ms(sender_t *s, int64_t now) {
    long curl_ms = -1;
    curl_multi_timeout(s->multi, &curl_ms);
    long ms = 100;
    if (s->next < s->run->n) {
        int64_t wait = s->run->orders[s->next].intended_us - now;
        ms = wait <= 0 ? 0 : (long)((wait + 999) / 1000);
    }
    if (curl_ms >= 0 && curl_ms < ms)
        ms = curl_ms;
    return (int)ms;
}

/* At the deadline: every request still unanswered is given up. */
static void abandon_live(sender_t *s) {
    while (s->nlive > 0) {
        request_t *q = s->live[s->nlive - 1];
        curl_multi_remove_handle(s->multi, q->easy);
        finish_order(s->run, &s->run->orders[q->index], -(int)CURLE_OPERATION_TIMEDOUT, NULL);
        s->nlive--;
        request_give_back(s, q);
    }
}

/* Orders never sent by the deadline (only if the schedule itself overran it). */
static void drop_unsent(sender_t *s) {
    for (; s->next < s->run->n; s->next++) {
        atomic_store(&s->run->orders[s->next].state, ORDER_DROPPED);
        atomic_fetch_add(&s->run->dropped, 1);
    }
}

static void run_schedule(sender_t *s) {
    lg_run_t *r = s->run;
    for (;;) {
        int64_t now = lg_now_us();
        send_due(s, now);
        int running = 0;
        curl_multi_perform(s->multi, &running);
        collect_answers(s);
        if (s->next >= r->n && s->nlive == 0)
            return;
        if (now >= r->deadline_us) {
            abandon_live(s);
            drop_unsent(s);
            return;
        }
        if (s->next < r->n && r->orders[s->next].intended_us <= lg_now_us())
            continue;
        curl_multi_poll(s->multi, NULL, 0, poll_timeout_ms(s, lg_now_us()), NULL);
    }
}

static bool sender_open(sender_t *s, lg_run_t *r) {
    memset(s, 0, sizeof *s);
    s->run = r;
    snprintf(s->url, sizeof s->url, "%s/api/orders", r->order_url);
    s->multi = curl_multi_init();
    s->headers = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *h = s->headers ? curl_slist_append(s->headers, "Expect:") : NULL;
    if (!s->multi || !h)
        return false;
    s->headers = h;
    long c = r->connections;
    curl_multi_setopt(s->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, c);
    curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, c);
    curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, c);
    return true;
}

static void sender_close(sender_t *s) {
    while (s->free_list) {
        request_t *q = s->free_list;
        s->free_list = q->next_free;
        request_free(q);
    }
    free(s->live);
    if (s->multi)
        curl_multi_cleanup(s->multi);
    curl_slist_free_all(s->headers);
}

void *lg_sender_main(void *arg) {
    lg_run_t *r = arg;
    sender_t s;
    if (sender_open(&s, r)) {
        run_schedule(&s);
    } else {
        fprintf(stderr, "loadgen: cannot set up curl\n");
        for (size_t i = 0; i < r->n; i++) {
            atomic_store(&r->orders[i].state, ORDER_DROPPED);
            atomic_fetch_add(&r->dropped, 1);
        }
    }
    sender_close(&s);
    atomic_store(&r->sender_done, true);
    return NULL;
}

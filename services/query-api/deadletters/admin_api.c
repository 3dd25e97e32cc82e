/*
 * admin_api.c - the dead-letter administration's REST handlers (admin_api.h).
 *
 * Access. Every route is an operator route (DETA_HTTP_OPERATOR, deta/auth.h): libdeta's
 * HTTP server checks the operator token (OPERATOR_TOKEN) before it reads anything
 * else, so no handler here runs for a caller without it, who learns nothing, not
 * even whether a topic or id exists: 503 when OPERATOR_TOKEN is not set, 401
 * without the token or with a wrong one, 403 with the reader token; counted in
 * http_auth_total{role="operator",outcome}.
 *
 * Answers. {topic} is one of the five dlq topics (404 naming "topic" otherwise),
 * {id} a record id (400 naming "id" when not a positive integer, 404 when the
 * topic has no such record); the list's bad arguments are 400 naming the field.
 * A store that is away is 503.
 *
 * Replay. The record is held by the store while it is sent (dead_letters.h) to
 * its original topic (domain.c's query_replay_prepare: the original headers but
 * the dead-letter ones, plus x-replayed-from), and the send waits for the
 * broker's acknowledgement for longer than the producer's own message timeout,
 * so that its outcome is final: acknowledged, the replay is counted and the
 * record returned (200); not acknowledged, nothing is marked (503). A record that
 * cannot be sent as stored (a NUL in its key) is 422. Replay-all walks the
 * records that were pending when it began, in id order, one replay at a time,
 * skipping any that another request replays meanwhile and any that cannot be
 * sent (listed in the answer); it stops at the first broker or store failure
 * and says how far it got. Replaying is safe: every consumer is idempotent on
 * the eventId, so a group that applied the event already skips it, and a message
 * that is still poison comes back as a new dead letter (with x-replayed-from).
 *
 *   query_api_dead_letter_replays_total{topic,outcome="replayed|refused|
 *                                       broker_unavailable|store_error"}
 */
#include "admin_api.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/log.h"

#define ADMIN_BASE "/api/admin/dead-letters"
/* Well past the producer's message timeout (10 s; its report can come a second
 * or two later while the broker is unreachable), so the outcome is final: a
 * replay answered 503 was not delivered and will not be. */
#define REPLAY_SEND_MS 20000
#define REPLAY_ALL_BATCH 100

typedef enum replay_outcome {
    REPLAY_DONE = 0,
    REPLAY_REFUSED,
    REPLAY_BROKER,
    REPLAY_STORE,
    REPLAY_OUTCOMES,
    REPLAY_NOT_FOUND = REPLAY_OUTCOMES, /* not counted */
} replay_outcome_t;

static const char *const replay_outcome_names[REPLAY_OUTCOMES] = {
    "replayed", "refused", "broker_unavailable", "store_error"};

struct query_admin {
    deta_service_t *svc;
    dead_letters_t *store;
    deta_counter_t *replays[QUERY_DLQ_TOPIC_COUNT][REPLAY_OUTCOMES];
};

static void register_metrics(query_admin_t *a) {
    deta_metrics_t *m = deta_service_metrics(a->svc);
    char labels[160];
    for (int t = 0; t < QUERY_DLQ_TOPIC_COUNT; t++)
        for (int o = 0; o < REPLAY_OUTCOMES; o++) {
            snprintf(labels, sizeof labels, "topic=\"%s\",outcome=\"%s\"", query_dlq_topics[t],
                     replay_outcome_names[o]);
            a->replays[t][o] = deta_counter(m, "query_api_dead_letter_replays_total",
                                            "Dead-letter replays, by dlq topic and outcome",
                                            labels);
        }
}

query_admin_t *query_admin_new(deta_service_t *svc, dead_letters_t *store) {
    query_admin_t *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->svc = svc;
    a->store = store;
    register_metrics(a);
    return a;
}

void query_admin_free(query_admin_t *a) { free(a); }

/* ---- arguments ---- */

/* Printable ASCII of a sane length: safe to echo in a message. */
static bool echoable(const char *s) {
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if (!isprint((unsigned char)s[i]))
            return false;
    return n > 0 && n <= 64;
}

/* The path's dlq topic, or NULL after answering 404. */
static const char *topic_of(const deta_http_req_t *req, deta_http_resp_t *resp) {
    const char *topic = deta_http_param(req, "topic");
    if (topic && query_dlq_topic_index(topic) >= 0)
        return topic;
    char names[QUERY_DLQ_TOPIC_COUNT * (DETA_TOPIC_MAX + 2)] = "";
    for (int i = 0; i < QUERY_DLQ_TOPIC_COUNT; i++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                 query_dlq_topics[i]);
    deta_http_resp_error(resp, 404, "topic", "no dead-letter topic %s: one of %s",
                         topic && echoable(topic) ? topic : "by that name", names);
    return NULL;
}

/* The path's record id; false after answering 400. */
static bool id_of(const deta_http_req_t *req, deta_http_resp_t *resp, int64_t *id) {
    if (query_dlq_id_parse(deta_http_param(req, "id"), id))
        return true;
    deta_http_resp_error(resp, 400, "id", "id must be a positive integer");
    return false;
}

/* ---- reading ---- */

static void handle_summary(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    query_admin_t *a = opaque;
    (void)req;
    char why[256] = "";
    query_dlq_counts_t counts[QUERY_DLQ_TOPIC_COUNT];
    deta_err_t err = dead_letters_counts(a->store, counts, why, sizeof why);
    if (err)
        deta_http_resp_store_error(resp, err, "dead-letter store", why);
    else
        deta_http_resp_json(resp, 200, query_dlq_summary_to_json(counts));
}

static json_t *page_to_json(const char *topic, const query_dlq_list_params_t *p,
                            const dead_letter_page_t *page) {
    json_t *items = json_array();
    for (size_t i = 0; i < page->n; i++)
        json_array_append_new(items, query_dead_letter_to_json(&page->items[i], false));
    return json_pack("{s:s, s:s, s:i, s:I, s:I, s:o}", "topic", topic, "status",
                     query_dlq_status_name(p->status), "limit", p->limit, "offset",
                     (json_int_t)p->offset, "total", (json_int_t)page->total, "items", items);
}

static void handle_list(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    query_admin_t *a = opaque;
    const char *topic;
    if (!(topic = topic_of(req, resp)))
        return;
    query_dlq_list_params_t p;
    query_violation_t v;
    if (query_dlq_list_params_parse(deta_http_query(req, "status"), deta_http_query(req, "limit"),
                                    deta_http_query(req, "offset"), deta_http_query(req, "key"),
                                    &p, &v) != DETA_OK) {
        deta_http_resp_error(resp, 400, v.field, "%s", v.message);
        return;
    }
    char why[256] = "";
    dead_letter_page_t page;
    deta_err_t err = dead_letters_list(a->store, topic, &p, &page, why, sizeof why);
    if (err) {
        deta_http_resp_store_error(resp, err, "dead-letter store", why);
        return;
    }
    deta_http_resp_json(resp, 200, page_to_json(topic, &p, &page));
    dead_letter_page_clear(&page);
}

static void handle_show(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    query_admin_t *a = opaque;
    const char *topic;
    int64_t id;
    if (!(topic = topic_of(req, resp)) || !id_of(req, resp, &id))
        return;
    char why[256] = "";
    query_dead_letter_t d;
    deta_err_t err = dead_letters_get(a->store, topic, id, &d, why, sizeof why);
    if (err == DETA_ERR_NOT_FOUND) {
        deta_http_resp_error(resp, 404, "id", "no dead letter %lld in %s", (long long)id, topic);
        return;
    }
    if (err) {
        deta_http_resp_store_error(resp, err, "dead-letter store", why);
        return;
    }
    deta_http_resp_json(resp, 200, query_dead_letter_to_json(&d, true));
    query_dead_letter_clear(&d);
}

/* ---- replaying ---- */

/* What one replay did, filled in by send_replay while the store holds the record. */
typedef struct replay_ctx {
    query_admin_t *admin;
    bool refused;  /* the record cannot be sent as stored */
    bool attempted; /* handed to the producer */
    bool sent;     /* acknowledged by the broker */
    bool stopping; /* replay-all: the service is shutting down */
    query_violation_t violation;
    char target[DETA_TOPIC_MAX + 1];
    char why[256];
    replay_outcome_t outcome;
} replay_ctx_t;

static deta_err_t send_replay(const query_dead_letter_t *d, void *opaque, char *errstr,
                              size_t errsize) {
    replay_ctx_t *x = opaque;
    query_replay_t r;
    deta_err_t err = query_replay_prepare(d, &r, &x->violation);
    if (err == DETA_ERR_INVALID) {
        x->refused = true;
        return deta_errf(err, errstr, errsize, "%s", x->violation.message);
    }
    if (err)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory preparing a replay");
    snprintf(x->target, sizeof x->target, "%s", r.topic);
    deta_kafka_out_t out = {.topic = r.topic,
                            .key = r.key,
                            .value = d->has_value ? (const char *)d->value : NULL,
                            .len = d->has_value ? d->value_len : 0,
                            .headers = r.headers,
                            .nheaders = r.nheaders};
    x->attempted = true;
    err = deta_producer_send(deta_service_producer(x->admin->svc), &out, REPLAY_SEND_MS, errstr,
                             errsize);
    x->sent = err == DETA_OK;
    query_replay_clear(&r);
    return err;
}

/* Replays one record; *out is the record after it (when REPLAY_DONE). */
static replay_outcome_t replay_record(query_admin_t *a, const char *topic, int64_t id,
                                      bool pending_only, query_dead_letter_t *out,
                                      replay_ctx_t *x) {
    memset(x, 0, sizeof *x);
    x->admin = a;
    deta_err_t err = dead_letters_replay(a->store, topic, id, pending_only, send_replay, x, out,
                                         x->why, sizeof x->why);
    if (err == DETA_OK)
        x->outcome = REPLAY_DONE;
    else if (err == DETA_ERR_NOT_FOUND && !x->attempted)
        return x->outcome = REPLAY_NOT_FOUND;
    else if (x->refused)
        x->outcome = REPLAY_REFUSED;
    else if (x->attempted && !x->sent)
        x->outcome = REPLAY_BROKER;
    else
        x->outcome = REPLAY_STORE;
    deta_counter_inc(a->replays[query_dlq_topic_index(topic)][x->outcome]);
    if (x->outcome == REPLAY_DONE)
        DETA_INFO("dead letter %lld of %s replayed to %s (replay %d)", (long long)id, topic,
                  x->target, out->replay_count);
    else if (x->outcome == REPLAY_STORE && x->sent)
        DETA_ERROR("dead letter %lld of %s was replayed to %s but the replay is not recorded: %s",
                   (long long)id, topic, x->target, x->why);
    else
        DETA_WARN("dead letter %lld of %s not replayed (%s): %s", (long long)id, topic,
                  replay_outcome_names[x->outcome], x->why);
    return x->outcome;
}

/* The answer to a replay that did not happen (every outcome but DONE). */
static void answer_replay_failure(deta_http_resp_t *resp, const char *topic, int64_t id,
                                  const replay_ctx_t *x) {
    switch (x->outcome) {
    case REPLAY_NOT_FOUND:
        deta_http_resp_error(resp, 404, "id", "no dead letter %lld in %s", (long long)id, topic);
        break;
    case REPLAY_REFUSED:
        deta_http_resp_error(resp, 422, x->violation.field, "%s", x->violation.message);
        break;
    case REPLAY_BROKER:
        deta_http_resp_error(resp, 503, NULL,
                             "the broker did not acknowledge the replay to %s; nothing was "
                             "marked, retry later",
                             x->target);
        break;
    default:
        if (x->sent)
            deta_http_resp_error(resp, 500, NULL,
                                 "replayed to %s, but the replay could not be recorded",
                                 x->target);
        else
            deta_http_resp_error(resp, 503, NULL, "dead-letter store unavailable, retry later");
        break;
    }
}

static void handle_replay_one(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    query_admin_t *a = opaque;
    const char *topic;
    int64_t id;
    if (!(topic = topic_of(req, resp)) || !id_of(req, resp, &id))
        return;
    query_dead_letter_t d;
    replay_ctx_t x;
    if (replay_record(a, topic, id, false, &d, &x) != REPLAY_DONE) {
        answer_replay_failure(resp, topic, id, &x);
        return;
    }
    json_t *body = query_dead_letter_to_json(&d, true);
    json_object_set_new(body, "replayedTo", json_string(x.target));
    deta_http_resp_json(resp, 200, body);
    query_dead_letter_clear(&d);
}

/* How far a replay-all got. */
typedef struct replay_all {
    long replayed;
    json_t *skipped; /* [{"id","field","message"}]: records that cannot be sent */
    int64_t after;   /* the last id visited */
    int64_t upto;    /* the highest id when the walk began */
} replay_all_t;

/* Replays one batch of pending ids; false after a failure that stops the walk
 * (resp then holds the answer), or when there was nothing left (*done). */
static bool replay_batch(query_admin_t *a, const char *topic, replay_all_t *w, bool *done,
                         replay_ctx_t *x) {
    int64_t ids[REPLAY_ALL_BATCH];
    size_t n = 0;
    deta_err_t err = dead_letters_pending_ids(a->store, topic, w->after, w->upto, ids,
                                              REPLAY_ALL_BATCH, &n, x->why, sizeof x->why);
    if (err) {
        memset(x, 0, sizeof *x);
        x->outcome = REPLAY_STORE;
        return false;
    }
    *done = n == 0;
    for (size_t i = 0; i < n; i++) {
        if (atomic_load(deta_service_stopping(a->svc))) {
            memset(x, 0, sizeof *x);
            x->stopping = true;
            return false;
        }
        w->after = ids[i];
        query_dead_letter_t d;
        replay_outcome_t o = replay_record(a, topic, ids[i], true, &d, x);
        if (o == REPLAY_DONE) {
            w->replayed++;
            query_dead_letter_clear(&d);
        } else if (o == REPLAY_REFUSED) {
            json_array_append_new(w->skipped,
                                  json_pack("{s:I, s:s, s:s}", "id", (json_int_t)ids[i], "field",
                                            x->violation.field, "message", x->violation.message));
        } else if (o != REPLAY_NOT_FOUND) {
            return false;
        }
    }
    return true;
}

/* 503 with the progress: {"status","error","message","topic","replayed","skipped"}. */
static void answer_replay_all_stopped(deta_http_resp_t *resp, const char *topic,
                                      const replay_all_t *w, const replay_ctx_t *x) {
    char message[512];
    snprintf(message, sizeof message,
             "stopped after %ld replay(s): %s; the rest stays pending, retry later", w->replayed,
             x->stopping                 ? "the service is stopping"
             : x->outcome == REPLAY_BROKER ? "the broker did not acknowledge a replay"
             : x->sent                   ? "a replay was sent but could not be recorded"
                                         : "the dead-letter store is unavailable");
    json_t *body = json_pack("{s:i, s:s, s:s, s:s, s:I, s:O}", "status", 503, "error",
                             "Service Unavailable", "message", message, "topic", topic,
                             "replayed", (json_int_t)w->replayed, "skipped", w->skipped);
    deta_http_resp_json(resp, 503, body);
}

static void handle_replay_all(const deta_http_req_t *req, deta_http_resp_t *resp, void *opaque) {
    query_admin_t *a = opaque;
    const char *topic;
    if (!(topic = topic_of(req, resp)))
        return;
    replay_all_t w = {.skipped = json_array()};
    replay_ctx_t x;
    memset(&x, 0, sizeof x);
    deta_err_t err = dead_letters_last_id(a->store, topic, &w.upto, x.why, sizeof x.why);
    if (err) {
        deta_http_resp_store_error(resp, err, "dead-letter store", x.why);
        json_decref(w.skipped);
        return;
    }
    bool done = false, ok = true;
    while (ok && !done)
        ok = replay_batch(a, topic, &w, &done, &x);
    if (ok)
        deta_http_resp_json(resp, 200,
                            json_pack("{s:s, s:I, s:O}", "topic", topic, "replayed",
                                      (json_int_t)w.replayed, "skipped", w.skipped));
    else
        answer_replay_all_stopped(resp, topic, &w, &x);
    DETA_INFO("replay-all of %s: %ld replayed, %zu skipped%s", topic, w.replayed,
              json_array_size(w.skipped), ok ? "" : ", stopped early");
    json_decref(w.skipped);
}

deta_err_t query_admin_mount(query_admin_t *a, char *errstr, size_t errsize) {
    deta_http_server_t *http = deta_service_http(a->svc);
    const int op = DETA_HTTP_OPERATOR;
    if (deta_http_route(http, "GET", ADMIN_BASE, op, handle_summary, a) ||
        deta_http_route(http, "GET", ADMIN_BASE "/{topic}", op, handle_list, a) ||
        deta_http_route(http, "POST", ADMIN_BASE "/{topic}/replay", op, handle_replay_all, a) ||
        deta_http_route(http, "GET", ADMIN_BASE "/{topic}/{id}", op, handle_show, a) ||
        deta_http_route(http, "POST", ADMIN_BASE "/{topic}/{id}/replay", op, handle_replay_one, a))
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "cannot register the admin routes");
    return DETA_OK;
}

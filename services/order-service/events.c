/*
 * events.c - order-service follows its orders: every event that sets a state
 * (deta_state_for_event) folds into orders.status by rank, and the cancel's
 * verdicts (*.cancelled, *.cancel_refused) are recorded in its cancellation.
 * Other types are skipped.
 *
 * Why not events.h's dispatcher: it claims every event in processed_events,
 * and order-service needs no claims. Each effect is a conditional UPDATE that
 * changes nothing the second time: the status moves only to a strictly higher
 * rank, and a verdict is recorded only over no verdict (contracts: "verdicts
 * are final"). A redelivered or re-sent event (another eventId) is therefore
 * harmless, without a table that would grow with every event and need a purge.
 * The envelope, key and producer checks are the dispatcher's (deta_event_from_msg:
 * a refused message is a dead letter); then, written here: skip types
 * not followed, read the payload (a bad field -> dead letter naming it), apply
 * in one transaction; a database error is transient and retried.
 *
 * Unknown orders are skipped and counted (outcome unknown_order), not dead-
 * lettered: the topics carry every order of the system, and one that did not
 * come through this order-service (a test's injected events, an order of
 * another environment's producer) is nobody's error here, and retrying would
 * not make it known. An event of a known order cannot arrive before the order
 * itself: order-service commits the order before its order.created is
 * published, and every other event follows that one.
 *
 * Batches: a worker that finds several events queued (up to ORDER_BATCH_MAX)
 * applies them in one transaction (deta/batch.h): one commit instead of one per
 * event. A worker with fewer queued waits up to
 * ORDER_BATCH_WAIT_MS (settings.h) for more: nothing downstream waits for these
 * updates (the saga's next steps follow the events, not orders.status), so the
 * order's status shows them that much later for fewer commits at moderate rates.
 * Inside the batch, the events that only raise a status (every type but the
 * cancel's verdicts) go in one statement together (order_store_fold_status:
 * each order to its highest rank, ranks only rise), run at the first one; their
 * outcomes are what one by one would have given (order_fold_outcomes). A
 * verdict goes alone as before.
 * An event refused before any SQL (malformed,
 * wrong key or producer, a bad field) is dead-lettered alone and the others
 * apply; a database error rolls the batch back, and the consumer then applies
 * the events one at a time, retries and all. The conditional UPDATEs lock only
 * the row of the event's order, and every event of an order goes to one worker,
 * so two batches of one instance never wait for each other (with several
 * instances they could, rarely: Postgres breaks such a deadlock by failing one
 * batch, which then goes one at a time).
 *
 * Metrics: deta_events_total{type,outcome="applied|unchanged|unknown_order|
 * ignored|failed"}, as the dispatcher counts (applied: something changed),
 * counted once the event's transaction (or batch) committed.
 */
#include "events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/batch.h"
#include "deta/event_check.h"
#include "deta/log.h"
#include "deta/topics.h"
#include "domain.h"
#include "store.h"

/* The events of one order stay on one worker (kafka.h), so the per-order order of
 * each topic holds; orders proceed in parallel. Two, not more: nothing waits for
 * these updates, and each worker batches only what its own queue holds, so more
 * workers would mean smaller batches and more commits (bench/README.md). */
#define CONSUMER_WORKERS 2
/* Up to 64 events a transaction: at ORDER_BATCH_WAIT_MS a worker's queue fills
 * past 16 at a few tens of orders a second (an order is 8 events here). As many
 * as one fold statement takes, so that a batch's status changes are one. */
#define ORDER_BATCH_MAX ORDER_STORE_FOLD_ROWS_MAX

struct order_events {
    deta_service_t *svc;
};

order_events_t *order_events_new(deta_service_t *svc) {
    order_events_t *e = calloc(1, sizeof *e);
    if (e)
        e->svc = svc;
    return e;
}

void order_events_free(order_events_t *e) { free(e); }

static void count(order_events_t *e, const char *type, const char *outcome) {
    char labels[160];
    snprintf(labels, sizeof labels, "type=\"%s\",outcome=\"%s\"", type, outcome);
    deta_counter_inc(deta_counter(deta_service_metrics(e->svc), "deta_events_total",
                                  "Events consumed, by type and outcome", labels));
}

static const char *outcome_name(order_event_result_t r) {
    switch (r) {
    case ORDER_EVENT_APPLIED: return "applied";
    case ORDER_EVENT_UNCHANGED: return "unchanged";
    case ORDER_EVENT_UNKNOWN_ORDER: return "unknown_order";
    }
    return "applied";
}

/* The metrics and log line of a followed event once its fate is known. */
static void report(order_events_t *e, const deta_event_t *ev, const order_event_effect_t *eff,
                   order_event_result_t result, deta_err_t err, const char *why) {
    if (err) {
        count(e, ev->event_type, "failed");
        deta_log(err == DETA_ERR_TRANSIENT ? DETA_LOG_WARN : DETA_LOG_ERROR, ev->order_id,
                 ev->correlation_id, "%s %s not applied (%s): %s", ev->event_type, ev->event_id,
                 deta_err_name(err), why ? why : "");
        return;
    }
    count(e, ev->event_type, outcome_name(result));
    if (result == ORDER_EVENT_UNKNOWN_ORDER)
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id,
                 "%s %s: no such order here, skipped", ev->event_type, ev->event_id);
    else if (result == ORDER_EVENT_APPLIED && eff->verdict)
        deta_log(DETA_LOG_INFO, ev->order_id, ev->correlation_id, "cancel %s (%s)",
                 eff->verdict, ev->event_type);
}

/* A parsed event this service follows: read, then applied. */
static deta_err_t follow(order_events_t *e, const deta_event_t *ev, char *errstr,
                         size_t errsize) {
    order_event_effect_t eff;
    deta_err_t err = order_event_read(ev, &eff, errstr, errsize);
    order_event_result_t result = ORDER_EVENT_UNCHANGED;
    if (!err) {
        deta_db_t *db = deta_db_pool_get(deta_service_db(e->svc));
        err = db ? order_store_apply_event(db, &eff, &result, errstr, errsize)
                 : deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    }
    report(e, ev, &eff, result, err, errstr);
    return err;
}

static deta_err_t consume(const deta_kafka_msg_t *msg, void *opaque, char *errstr,
                          size_t errsize) {
    order_events_t *e = opaque;
    deta_event_t ev;
    bool parsed = false;
    deta_err_t err = deta_event_from_msg(msg, &ev, &parsed, errstr, errsize);
    if (err && !parsed) {
        count(e, "unparsable", "failed");
        return err;
    }
    if (err) {
        count(e, ev.event_type, "failed");
    } else if (!order_event_followed(ev.event_type)) {
        count(e, ev.event_type, "ignored");
    } else {
        err = follow(e, &ev, errstr, errsize);
    }
    deta_event_clear(&ev);
    return err;
}

/* ---- batches ---- */

/* One message of a batch: parsed and read before the transaction. */
typedef struct batch_item {
    deta_event_t ev;
    bool parsed;
    bool followed; /* read, to apply */
    bool folded;   /* followed, and its status change goes in the batch's fold */
    order_event_effect_t eff;
    order_event_result_t result;
} batch_item_t;

typedef struct batch {
    batch_item_t *items;
    size_t n;
    bool folded; /* the fold statement ran */
} batch_t;

/* The status changes of every folded item, in one statement: run at the first
 * folded item; the later ones find their outcome set. The
 * outcomes count every item that sets a state, verdicts too (their own
 * statements run apart, but a verdict's state comes before the events after
 * it, one by one). Any failure is reported transient, so that the batch rolls
 * back and its events go one at a time, each to its own fate. */
static deta_err_t batch_fold(batch_t *b, deta_db_t *db, char *why, size_t whysize) {
    const order_event_effect_t **effs = calloc(b->n, sizeof *effs);
    const order_event_effect_t **fold = calloc(b->n, sizeof *fold);
    size_t *item = calloc(b->n, sizeof *item);
    bool *folded = calloc(b->n, sizeof *folded);
    int *before = calloc(b->n, sizeof *before), *fold_before = calloc(b->n, sizeof *fold_before);
    order_event_result_t *outcomes = calloc(b->n, sizeof *outcomes);
    deta_err_t err = DETA_OK;
    size_t n = 0, nfold = 0;
    if (!effs || !fold || !item || !folded || !before || !fold_before || !outcomes) {
        err = deta_errf(DETA_ERR_TRANSIENT, why, whysize, "out of memory");
    } else {
        for (size_t i = 0; i < b->n; i++) {
            const batch_item_t *it = &b->items[i];
            if (!it->followed || !it->eff.state)
                continue;
            effs[n] = &it->eff;
            item[n] = i;
            folded[n] = it->folded;
            if (it->folded)
                fold[nfold++] = &it->eff;
            n++;
        }
        err = order_store_fold_status(db, fold, nfold, fold_before, why, whysize);
    }
    if (!err) {
        for (size_t k = 0, f = 0; k < n; k++)
            before[k] = folded[k] ? fold_before[f++] : 0;
        order_fold_outcomes(effs, folded, before, n, outcomes);
        for (size_t k = 0; k < n; k++)
            if (folded[k])
                b->items[item[k]].result = outcomes[k];
        b->folded = true;
    }
    free(effs);
    free(fold);
    free(item);
    free(folded);
    free(before);
    free(fold_before);
    free(outcomes);
    return err ? DETA_ERR_TRANSIENT : DETA_OK;
}

static deta_err_t batch_apply_one(deta_db_t *db, size_t i, void *opaque, char *why,
                                  size_t whysize) {
    batch_t *b = opaque;
    batch_item_t *it = &b->items[i];
    if (!it->followed)
        return DETA_OK;
    if (it->folded)
        return b->folded ? DETA_OK : batch_fold(b, db, why, whysize);
    return order_store_apply_event_in(db, &it->eff, &it->result, why, whysize);
}

/* Checks and reads message i into *it: results[i] is DETA_OK to apply (or skip),
 * another code to dead-letter. */
static deta_err_t batch_read(const deta_kafka_msg_t *msg, batch_item_t *it, char *why,
                             size_t whysize) {
    deta_err_t err = deta_event_from_msg(msg, &it->ev, &it->parsed, why, whysize);
    if (err || !order_event_followed(it->ev.event_type))
        return err;
    err = order_event_read(&it->ev, &it->eff, why, whysize);
    it->followed = err == DETA_OK;
    return err;
}

/* After the commit: each message's metrics and log line, as one at a time. */
static void batch_report(order_events_t *e, batch_item_t *it, deta_err_t result,
                         const char *why) {
    if (!it->parsed)
        count(e, "unparsable", "failed");
    else if (result == DETA_OK && !it->followed)
        count(e, it->ev.event_type, "ignored");
    else
        report(e, &it->ev, &it->eff, it->result, result, why);
}

static deta_err_t consume_batch(const deta_kafka_msg_t *msgs, size_t n, void *opaque,
                                deta_err_t *results, char (*why)[DETA_KAFKA_WHY_MAX]) {
    order_events_t *e = opaque;
    batch_item_t *items = calloc(n, sizeof *items);
    deta_db_t *db = deta_db_pool_get(deta_service_db(e->svc));
    if (!items || !db) {
        free(items);
        return DETA_ERR_INTERNAL;
    }
    for (size_t i = 0; i < n; i++) {
        why[i][0] = '\0';
        results[i] = batch_read(&msgs[i], &items[i], why[i], DETA_KAFKA_WHY_MAX);
        items[i].folded = results[i] == DETA_OK && items[i].followed &&
                          order_effect_foldable(&items[i].eff);
    }
    batch_t batch = {.items = items, .n = n, .folded = false};
    char tx_why[256] = "";
    size_t failed = n;
    deta_err_t err = deta_batch_run(db, msgs, n, 0, NULL, batch_apply_one, &batch, results, why,
                                    &failed, tx_why, sizeof tx_why);
    if (err)
        DETA_WARN("batch of %zu events rolled back, applying one at a time: %s", n,
                  failed < n ? why[failed] : tx_why);
    for (size_t i = 0; i < n; i++) {
        if (!err)
            batch_report(e, &items[i], results[i], why[i]);
        if (items[i].parsed)
            deta_event_clear(&items[i].ev);
    }
    free(items);
    return err;
}

deta_err_t order_events_subscribe(order_events_t *e, int batch_wait_ms, char *errstr,
                                  size_t errsize) {
    static const char *const topics[] = {DETA_TOPIC_INVENTORY_EVENTS, DETA_TOPIC_PAYMENT_EVENTS,
                                         DETA_TOPIC_DELIVERY_EVENTS};
    deta_consumer_opts_t opts = {.workers = CONSUMER_WORKERS,
                                 .metrics = deta_service_metrics(e->svc),
                                 .batch_fn = consume_batch,
                                 .batch_max = ORDER_BATCH_MAX,
                                 .batch_wait_ms = batch_wait_ms,
                                 .fetch_wait_min_ms = DETA_KAFKA_FETCH_WAIT_RELAXED_MS};
    return deta_service_consume(e->svc, topics, sizeof topics / sizeof *topics, consume, e,
                                &opts, errstr, errsize);
}

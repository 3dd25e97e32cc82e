/*
 * events.c - idempotent event consumption (see deta/events.h).
 *
 * The claim and the effects share one transaction, so there is no window in which
 * an event is marked processed without its effects, or applied without its mark:
 * a crash anywhere in between rolls back both, and the redelivery applies it once.
 *
 * A dispatch with own_key makes no claim: its handlers' own key (written in the
 * same transaction as the rest of their effects) plays the claim's part, and a
 * handler's DETA_ERR_CONFLICT is the duplicate that the claim would have found.
 * Its effects, if it wrote any, are rolled back all the same.
 */
#include "deta/events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/batch.h"
#include "deta/event_check.h"
#include "deta/inbox.h"
#include "deta/log.h"

struct deta_event_dispatch {
    deta_service_t *svc;
    const deta_event_route_t *routes;
    size_t nroutes;
    void *opaque;
    deta_event_dispatch_opts_t opts;
};

deta_event_dispatch_t *deta_event_dispatch_new_opts(deta_service_t *s,
                                                    const deta_event_route_t *routes,
                                                    size_t nroutes, void *opaque,
                                                    const deta_event_dispatch_opts_t *opts) {
    deta_event_dispatch_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->svc = s;
    d->routes = routes;
    d->nroutes = nroutes;
    d->opaque = opaque;
    if (opts)
        d->opts = *opts;
    return d;
}

deta_event_dispatch_t *deta_event_dispatch_new(deta_service_t *s, const deta_event_route_t *routes,
                                               size_t nroutes, void *opaque) {
    return deta_event_dispatch_new_opts(s, routes, nroutes, opaque, NULL);
}

void deta_event_dispatch_free(deta_event_dispatch_t *d) { free(d); }

static void count(deta_event_dispatch_t *d, const char *type, const char *outcome) {
    char labels[160];
    snprintf(labels, sizeof labels, "type=\"%s\",outcome=\"%s\"", type, outcome);
    deta_counter_inc(deta_counter(deta_service_metrics(d->svc), "deta_events_total",
                                  "Events consumed, by type and outcome", labels));
}

static const deta_event_route_t *route_for(const deta_event_dispatch_t *d, const char *type) {
    for (size_t i = 0; i < d->nroutes; i++)
        if (strcmp(d->routes[i].event_type, type) == 0)
            return &d->routes[i];
    return NULL;
}

/* Parse, key and producer checks (deta/event_check.h), route and the route's
 * payload check: what every message goes through before any transaction, one at
 * a time or in a batch.
 * *parsed says whether ev must be cleared; on DETA_OK *route may be NULL (a
 * type this service ignores). */
static deta_err_t check_message(const deta_event_dispatch_t *d, const deta_kafka_msg_t *msg,
                                deta_event_t *ev, bool *parsed,
                                const deta_event_route_t **route, char *errstr,
                                size_t errsize) {
    *route = NULL;
    deta_err_t err = deta_event_from_msg(msg, ev, parsed, errstr, errsize);
    if (err)
        return err;
    *route = route_for(d, ev->event_type);
    return *route && (*route)->check ? (*route)->check(ev, errstr, errsize) : DETA_OK;
}

/* Claims the event and, the first time, applies it, inside the transaction the
 * caller opened on db. Without the claim (own_key) the handler always runs, and
 * its DETA_ERR_CONFLICT says duplicate: that code is returned with *duplicate
 * true, and the caller reports DETA_OK (one at a time after rolling back; in a
 * batch the duplicate wrote nothing and the batch goes on, deta/batch.h). */
static deta_err_t claim_and_apply(deta_event_dispatch_t *d, deta_db_t *db,
                                  const deta_event_route_t *r, const deta_event_t *ev,
                                  bool *duplicate, char *errstr, size_t errsize) {
    if (d->opts.own_key) {
        deta_err_t err = r->fn(db, ev, d->opaque, errstr, errsize);
        *duplicate = err == DETA_ERR_CONFLICT;
        return err;
    }
    bool first = false;
    deta_err_t err = deta_inbox_claim(db, deta_service_config(d->svc)->service, ev->event_id,
                                      &first, errstr, errsize);
    if (!err && first)
        err = r->fn(db, ev, d->opaque, errstr, errsize);
    if (!err)
        *duplicate = !first;
    return err;
}

/* Claim and apply in one transaction. A duplicate that only the handler could
 * tell (own_key) is rolled back: nothing of it is kept, and nothing to commit. */
static deta_err_t apply(deta_event_dispatch_t *d, const deta_event_route_t *r,
                        const deta_event_t *ev, bool *duplicate, char *errstr, size_t errsize) {
    deta_db_t *db = deta_db_pool_get(deta_service_db(d->svc));
    if (!db)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    deta_err_t err = deta_db_begin(db, errstr, errsize);
    if (err)
        return err;
    err = claim_and_apply(d, db, r, ev, duplicate, errstr, errsize);
    if (err) {
        deta_db_rollback(db);
        return *duplicate ? DETA_OK : err;
    }
    return deta_db_commit(db, errstr, errsize);
}

deta_err_t deta_event_dispatch(const deta_kafka_msg_t *msg, void *dispatch, char *errstr,
                               size_t errsize) {
    deta_event_dispatch_t *d = dispatch;
    deta_event_t ev;
    bool parsed = false;
    const deta_event_route_t *r = NULL;
    deta_err_t err = check_message(d, msg, &ev, &parsed, &r, errstr, errsize);
    if (err) {
        count(d, parsed ? ev.event_type : "unparsable", "failed");
        if (parsed)
            deta_event_clear(&ev);
        return err;
    }
    if (!r) {
        count(d, ev.event_type, "ignored");
        deta_event_clear(&ev);
        return DETA_OK;
    }
    bool duplicate = false;
    err = apply(d, r, &ev, &duplicate, errstr, errsize);
    if (err) {
        count(d, ev.event_type, "failed");
        deta_log(err == DETA_ERR_TRANSIENT ? DETA_LOG_WARN : DETA_LOG_ERROR, ev.order_id,
                 ev.correlation_id, "%s %s not applied (%s): %s", ev.event_type, ev.event_id,
                 deta_err_name(err), errstr ? errstr : "");
    } else {
        count(d, ev.event_type, duplicate ? "duplicate" : "applied");
        deta_log(DETA_LOG_DEBUG, ev.order_id, ev.correlation_id, "%s %s %s", ev.event_type,
                 ev.event_id, duplicate ? "was a duplicate" : "applied");
    }
    deta_event_clear(&ev);
    return err;
}

/* ---- batches (deta_event_dispatch_batch) ---- */

/* What one message of a batch is, once parsed and checked. */
typedef struct batch_item {
    deta_event_t ev;
    bool parsed;
    const deta_event_route_t *route; /* NULL: refused or ignored */
    bool duplicate;
} batch_item_t;

/* One routed item of the batch, inside the transaction deta_batch_run opened. */
typedef struct batch_ctx {
    deta_event_dispatch_t *d;
    batch_item_t *items;
    const deta_err_t *results; /* the refusals before the transaction */
    size_t n;
    bool at_once; /* the items were applied by opts.batch_apply (batch_prepare) */
} batch_ctx_t;

static deta_err_t batch_apply_one(deta_db_t *db, size_t i, void *opaque, char *why,
                                  size_t whysize) {
    batch_ctx_t *b = opaque;
    batch_item_t *it = &b->items[i];
    if (!it->route)
        return DETA_OK; /* a type this service ignores */
    if (b->at_once) /* applied already: what remains is its outcome */
        return it->duplicate ? DETA_ERR_CONFLICT : DETA_OK;
    deta_err_t err = claim_and_apply(b->d, db, it->route, &it->ev, &it->duplicate, why, whysize);
    /* Only the duplicate leaves the batch going (deta/batch.h): a conflict that is
     * not one (a handler's with the claim) loses it. */
    return err == DETA_ERR_CONFLICT && !it->duplicate ? DETA_ERR_INTERNAL : err;
}

/* Whether item i is still to apply: not refused before any SQL, and of a type
 * this service handles. */
static bool to_apply(const batch_item_t *items, const deta_err_t *results, size_t i) {
    return results[i] == DETA_OK && items[i].route;
}

/* deta/batch.h's prepare over the items still to apply: the dispatch's
 * batch_lock, then, when the batch applies at once, its batch_apply, whose
 * duplicates go to the items (batch_apply_one then only reports them). */
static deta_err_t batch_prepare(deta_db_t *db, void *opaque, char *errstr, size_t errsize) {
    batch_ctx_t *b = opaque;
    const deta_event_t **evs = calloc(b->n, sizeof *evs);
    bool *dup = calloc(b->n, sizeof *dup);
    size_t *at = calloc(b->n, sizeof *at);
    if (!evs || !dup || !at) {
        free(evs);
        free(dup);
        free(at);
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++)
        if (to_apply(b->items, b->results, i)) {
            at[k] = i;
            evs[k++] = &b->items[i].ev;
        }
    const deta_event_dispatch_opts_t *o = &b->d->opts;
    deta_err_t err = o->batch_lock ? o->batch_lock(db, evs, k, b->d->opaque, errstr, errsize)
                                   : DETA_OK;
    if (!err && b->at_once)
        err = o->batch_apply(db, evs, k, dup, b->d->opaque, errstr, errsize);
    for (size_t j = 0; !err && j < k; j++)
        b->items[at[j]].duplicate = dup[j];
    free(evs);
    free(dup);
    free(at);
    return err;
}

/* How many items are still to apply: one refused before any SQL, or of a type
 * this service ignores, needs no transaction. */
static size_t batch_work(const batch_item_t *items, size_t n, const deta_err_t *results) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += to_apply(items, results, i);
    return k;
}

/* The transaction (deta/batch.h): every routed item, then one commit. A failure
 * of an item, but for its duplicate, rolls back the whole batch. A batch
 * with nothing to apply opens none: with a lock timeout its SET LOCAL alone
 * would cost a round trip and a read-only transaction. */
static deta_err_t batch_apply(deta_event_dispatch_t *d, const deta_kafka_msg_t *msgs,
                              batch_item_t *items, size_t n, int lock_timeout_ms,
                              deta_err_t *results, char (*why)[DETA_KAFKA_WHY_MAX]) {
    size_t work = batch_work(items, n, results);
    if (work == 0)
        return DETA_OK;
    deta_db_t *db = deta_db_pool_get(deta_service_db(d->svc));
    if (!db)
        return DETA_ERR_INTERNAL;
    bool at_once = d->opts.own_key && d->opts.batch_apply && work >= 2;
    batch_ctx_t b = {d, items, results, n, at_once};
    char tx_why[256] = "";
    size_t failed = n;
    deta_err_t err = deta_batch_run(db, msgs, n, lock_timeout_ms,
                                    d->opts.batch_lock || at_once ? batch_prepare : NULL,
                                    batch_apply_one, &b, results, why, &failed, tx_why,
                                    sizeof tx_why);
    if (err && failed < n && items[failed].parsed)
        deta_log(DETA_LOG_WARN, items[failed].ev.order_id, items[failed].ev.correlation_id,
                 "%s %s: batch of %zu rolled back, applying one at a time: %s",
                 items[failed].ev.event_type, items[failed].ev.event_id, n, why[failed]);
    else if (err)
        DETA_WARN("batch of %zu rolled back, applying one at a time: %s", n, tx_why);
    return err;
}

/* After the commit: the same metrics and log lines as one at a time. */
static void batch_report(deta_event_dispatch_t *d, batch_item_t *it, deta_err_t result,
                         const char *why) {
    if (!it->parsed) {
        count(d, "unparsable", "failed");
        return;
    }
    if (result != DETA_OK) {
        count(d, it->ev.event_type, "failed");
        deta_log(DETA_LOG_ERROR, it->ev.order_id, it->ev.correlation_id,
                 "%s %s not applied (%s): %s", it->ev.event_type, it->ev.event_id,
                 deta_err_name(result), why);
    } else if (!it->route) {
        count(d, it->ev.event_type, "ignored");
    } else {
        count(d, it->ev.event_type, it->duplicate ? "duplicate" : "applied");
    }
}

deta_err_t deta_event_dispatch_batch(const deta_kafka_msg_t *msgs, size_t n, void *dispatch,
                                     deta_err_t *results, char (*why)[DETA_KAFKA_WHY_MAX]) {
    return deta_event_dispatch_batch_bounded(msgs, n, dispatch, 0, results, why);
}

deta_err_t deta_event_dispatch_batch_bounded(const deta_kafka_msg_t *msgs, size_t n,
                                             void *dispatch, int lock_timeout_ms,
                                             deta_err_t *results,
                                             char (*why)[DETA_KAFKA_WHY_MAX]) {
    deta_event_dispatch_t *d = dispatch;
    batch_item_t *items = calloc(n, sizeof *items);
    if (!items)
        return DETA_ERR_INTERNAL;
    for (size_t i = 0; i < n; i++) {
        why[i][0] = '\0';
        results[i] = check_message(d, &msgs[i], &items[i].ev, &items[i].parsed, &items[i].route,
                                   why[i], DETA_KAFKA_WHY_MAX);
    }
    deta_err_t err = batch_apply(d, msgs, items, n, lock_timeout_ms, results, why);
    for (size_t i = 0; i < n; i++) {
        if (err == DETA_OK && items[i].duplicate && results[i] == DETA_ERR_CONFLICT) {
            /* own_key: the handler's duplicate, which wrote nothing; done */
            results[i] = DETA_OK;
            why[i][0] = '\0';
        }
        if (err == DETA_OK)
            batch_report(d, &items[i], results[i], why[i]);
        if (items[i].parsed)
            deta_event_clear(&items[i].ev);
    }
    free(items);
    return err;
}

deta_err_t deta_service_on_events_opts(deta_service_t *s, const char *const *topics,
                                       size_t ntopics, const deta_event_route_t *routes,
                                       size_t nroutes, void *opaque,
                                       const deta_consumer_opts_t *opts,
                                       const deta_event_dispatch_opts_t *dispatch_opts,
                                       char *errstr, size_t errsize) {
    deta_err_t err = deta_service_use_inbox(s, errstr, errsize);
    if (err)
        return err;
    deta_event_dispatch_t *d = deta_event_dispatch_new_opts(s, routes, nroutes, opaque,
                                                            dispatch_opts);
    if (!d)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    err = deta_service_consume(s, topics, ntopics, deta_event_dispatch, d, opts, errstr, errsize);
    if (err) {
        deta_event_dispatch_free(d);
        return err;
    }
    deta_service_adopt(s, d, (void (*)(void *))deta_event_dispatch_free);
    return DETA_OK;
}

deta_err_t deta_service_on_events(deta_service_t *s, const char *const *topics, size_t ntopics,
                                  const deta_event_route_t *routes, size_t nroutes,
                                  void *opaque, const deta_consumer_opts_t *opts, char *errstr,
                                  size_t errsize) {
    return deta_service_on_events_opts(s, topics, ntopics, routes, nroutes, opaque, opts, NULL,
                                       errstr, errsize);
}

deta_err_t deta_event_own_result(deta_err_t err, bool duplicate) {
    if (err == DETA_ERR_CONFLICT)
        return DETA_ERR_INTERNAL;
    if (err)
        return err;
    return duplicate ? DETA_ERR_CONFLICT : DETA_OK;
}

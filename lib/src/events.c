/*
 * events.c - idempotent event consumption (see deta/events.h).
 *
 * The claim and the effects share one transaction, so there is no window in which
 * an event is marked processed without its effects, or applied without its mark:
 * a crash anywhere in between rolls back both, and the redelivery applies it once.
 */
#include "deta/events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deta/inbox.h"
#include "deta/log.h"

struct deta_event_dispatch {
    deta_service_t *svc;
    const deta_event_route_t *routes;
    size_t nroutes;
    void *opaque;
};

deta_event_dispatch_t *deta_event_dispatch_new(deta_service_t *s, const deta_event_route_t *routes,
                                               size_t nroutes, void *opaque) {
    deta_event_dispatch_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->svc = s;
    d->routes = routes;
    d->nroutes = nroutes;
    d->opaque = opaque;
    return d;
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

/* Claim and apply in one transaction. */
static deta_err_t apply(deta_event_dispatch_t *d, const deta_event_route_t *r,
                        const deta_event_t *ev, bool *duplicate, char *errstr, size_t errsize) {
    deta_db_t *db = deta_db_pool_get(deta_service_db(d->svc));
    if (!db)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
    bool first = false;
    deta_err_t err = deta_db_begin(db, errstr, errsize);
    if (err)
        return err;
    err = deta_inbox_claim(db, deta_service_config(d->svc)->service, ev->event_id, &first, errstr,
                           errsize);
    if (!err && first)
        err = r->fn(db, ev, d->opaque, errstr, errsize);
    if (err) {
        deta_db_rollback(db);
        return err;
    }
    *duplicate = !first;
    return deta_db_commit(db, errstr, errsize);
}

deta_err_t deta_event_dispatch(const deta_kafka_msg_t *msg, void *dispatch, char *errstr,
                               size_t errsize) {
    deta_event_dispatch_t *d = dispatch;
    deta_event_t ev;
    char why[256];
    if (deta_event_parse(msg->value, msg->len, &ev, why, sizeof why) != DETA_OK) {
        count(d, "unparsable", "failed");
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "malformed event: %s", why);
    }
    deta_err_t err = DETA_OK;
    if (!msg->key || msg->key_len != strlen(ev.order_id) ||
        memcmp(msg->key, ev.order_id, msg->key_len) != 0) {
        err = deta_errf(DETA_ERR_INVALID, errstr, errsize,
                        "message key does not match orderId %s", ev.order_id);
        count(d, ev.event_type, "failed");
        deta_event_clear(&ev);
        return err;
    }
    const deta_event_route_t *r = route_for(d, ev.event_type);
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

deta_err_t deta_service_on_events(deta_service_t *s, const char *const *topics, size_t ntopics,
                                  const deta_event_route_t *routes, size_t nroutes,
                                  void *opaque, const deta_consumer_opts_t *opts, char *errstr,
                                  size_t errsize) {
    deta_err_t err = deta_service_use_inbox(s, errstr, errsize);
    if (err)
        return err;
    deta_event_dispatch_t *d = deta_event_dispatch_new(s, routes, nroutes, opaque);
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

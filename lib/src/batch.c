/*
 * batch.c - several messages in one transaction (see deta/batch.h): a message
 * that fails, but for its duplicate, rolls the whole batch back.
 *
 * Spans: a consumer's worker thread has no current span, so db.c gives the
 * batch's transaction none. Each message's part gets one instead,
 * "db.transaction", a child of the message's consumer span (msgs[i].span),
 * current while the message is applied (so the outbox rows it writes are its
 * children, as one at a time) and ended once the batch committed or rolled
 * back. A caller that is inside a span of its own keeps it: then the
 * transaction is that span's child (db.c) and no item spans are made.
 */
#include "deta/batch.h"

#include <stdio.h>
#include <stdlib.h>

#include "db_internal.h"
#include "deta/trace.h"

/* Room for the messages' db.transaction spans, or NULL when none are made: no
 * message has a consumer span (tracing off), or a span is current (above). */
static deta_span_t **item_spans_new(const deta_kafka_msg_t *msgs, size_t n) {
    if (!msgs || deta_span_current())
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (msgs[i].span)
            return calloc(n, sizeof(deta_span_t *));
    return NULL;
}

/* Message i's db.transaction span (NULL without a consumer span), current, and
 * its consumer span under it, until leave_item. */
static deta_span_t *enter_item(const deta_kafka_msg_t *msgs, size_t i, size_t n) {
    if (!msgs[i].span)
        return NULL;
    deta_span_enter(msgs[i].span);
    deta_span_t *span = deta_span_begin("db.transaction", DETA_SPAN_INTERNAL, NULL);
    deta_span_attr(span, "db.system", "postgresql");
    deta_span_attr_int(span, "deta.batch.size", (long long)n);
    deta_span_enter(span);
    return span;
}

/* None was current before enter_item (item_spans_new), and none is again: the
 * spans entered stay alive until end_items and the consumer end them. */
static void leave_item(void) { deta_span_enter(NULL); }

/* Ends the messages' db.transaction spans: with error when not committed. */
static void end_items(deta_span_t **spans, size_t n, const char *error) {
    if (!spans)
        return;
    for (size_t i = 0; i < n; i++) {
        if (!spans[i])
            continue;
        if (error)
            deta_span_set_error(spans[i], error);
        deta_span_end(spans[i]);
    }
    free(spans);
}

/* Whether message i's apply leaves the batch going: applied, or its own
 * duplicate (DETA_ERR_CONFLICT, which wrote nothing: deta/batch.h) in a
 * transaction that is not aborted (a racing insert's unique violation). */
static bool batch_goes_on(deta_db_t *db, deta_err_t err) {
    return err == DETA_OK || (err == DETA_ERR_CONFLICT && !deta_db_tx_aborted(db));
}

deta_err_t deta_batch_run(deta_db_t *db, const deta_kafka_msg_t *msgs, size_t n,
                          int lock_timeout_ms, deta_batch_prepare_fn prepare,
                          deta_batch_apply_fn apply, void *opaque,
                          deta_err_t *results, char (*why)[DETA_KAFKA_WHY_MAX], size_t *failed,
                          char *errstr, size_t errsize) {
    *failed = n;
    if (deta_db_begin(db, errstr, errsize) != DETA_OK)
        return DETA_ERR_TRANSIENT;
    if (lock_timeout_ms > 0) {
        char sql[64];
        snprintf(sql, sizeof sql, "SET LOCAL lock_timeout = %d", lock_timeout_ms);
        if (deta_db_run(db, sql, 0, NULL, errstr, errsize) != DETA_OK) {
            deta_db_rollback(db);
            return DETA_ERR_TRANSIENT;
        }
    }
    if (prepare && prepare(db, opaque, errstr, errsize) != DETA_OK) {
        deta_db_rollback(db);
        return DETA_ERR_TRANSIENT;
    }
    deta_span_t **spans = item_spans_new(msgs, n);
    for (size_t i = 0; i < n; i++) {
        if (results[i] != DETA_OK)
            continue;
        deta_span_t *span = NULL;
        if (spans)
            span = spans[i] = enter_item(msgs, i, n);
        results[i] = apply(db, i, opaque, why[i], DETA_KAFKA_WHY_MAX);
        if (spans)
            leave_item();
        if (!batch_goes_on(db, results[i])) {
            if (span)
                deta_span_set_error(span, why[i]);
            *failed = i;
            deta_db_rollback(db);
            end_items(spans, n, "the batch rolled back");
            return DETA_ERR_TRANSIENT;
        }
    }
    deta_err_t err = deta_db_commit(db, errstr, errsize) ? DETA_ERR_TRANSIENT : DETA_OK;
    end_items(spans, n, err ? "the batch's commit failed" : NULL);
    return err;
}

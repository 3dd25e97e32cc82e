/*
 * kafka_resend.c - the producer's abandoned batches, kept to recognize their
 * resend (see kafka_producer.c for why a sender may stop waiting).
 *
 * A sender that stopped waiting sends the same messages again (the outbox
 * relay: the rows it could not mark), and those the broker acknowledged after
 * it stopped waiting are in the log already. So the producer keeps a copy of
 * each abandoned batch's messages (the relay's: those without headers, or
 * whose headers are only its trace context, deta_kafka_out_t.resendable; at most
 * DETA_KAFKA_KEEP_ABANDONED batches): a send whose leading messages equal them
 * (topic, key, value), in order, while they were acknowledged, reports those as
 * acknowledged without producing them again, and the rest go out behind them.
 * An outage then does not publish a row twice. Out of memory for a copy only
 * means that the resend is produced again: a duplicate, never a loss.
 */
#include "kafka_internal.h"

#include <stdlib.h>
#include <string.h>

#define DETA_KAFKA_KEEP_ABANDONED 8 /* abandoned batches kept to recognize resends */

static void kept_free(kept_msg_t *k, size_t n) {
    for (size_t i = 0; k && i < n; i++) {
        free(k[i].topic);
        free(k[i].key);
        free(k[i].value);
    }
    free(k);
}

/* Copies of msgs[first..n) up to the first with headers; NULL when none or out
 * of memory (then the resend is produced again: a duplicate, never a loss). */
static kept_msg_t *kept_copy(const dr_batch_t *b, const out_msg_t *msgs, size_t first, size_t n,
                             size_t *count) {
    *count = 0;
    while (first + *count < n && b->slots[first + *count].plain)
        (*count)++;
    kept_msg_t *k = *count ? calloc(*count, sizeof *k) : NULL;
    for (size_t i = 0; k && i < *count; i++) {
        const out_msg_t *m = &msgs[first + i];
        k[i] = (kept_msg_t){.topic = strdup(m->topic),
                            .key = malloc(m->key_len + 1),
                            .value = malloc(m->len + 1),
                            .key_len = m->key_len,
                            .len = m->len};
        if (!k[i].topic || !k[i].key || !k[i].value) {
            kept_free(k, i + 1);
            return NULL;
        }
        if (m->key_len)
            memcpy(k[i].key, m->key, m->key_len);
        if (m->len)
            memcpy(k[i].value, m->value, m->len);
    }
    if (!k)
        *count = 0;
    return k;
}

/* Under p->lock: drops a kept batch and its reference; returns the batch when
 * that was the last reference, for the caller to free after unlocking. */
static dr_batch_t *abandoned_drop(abandoned_t *a) {
    dr_batch_t *b = deta_kafka_batch_unref(a->b) ? a->b : NULL;
    kept_free(a->msgs, a->count);
    free(a);
    return b;
}

/* Hands the caller's reference on b (abandoned, msgs its messages) to the kept
 * list, keeping copies of the ones from first on; drops the oldest beyond the
 * limit. */
void deta_kafka_abandon(deta_producer_t *p, dr_batch_t *b, const out_msg_t *msgs, size_t first,
                        size_t n) {
    abandoned_t *a = calloc(1, sizeof *a);
    if (a)
        a->msgs = kept_copy(b, msgs, first, n, &a->count);
    dr_batch_t *to_free[2] = {NULL, NULL};
    pthread_mutex_lock(&p->lock);
    if (!a || !a->msgs) {
        to_free[0] = deta_kafka_batch_unref(b) ? b : NULL;
        free(a);
    } else {
        a->b = b;
        a->first = first;
        abandoned_t **tail = &p->abandoned;
        while (*tail)
            tail = &(*tail)->next;
        *tail = a;
        if (++p->nabandoned > DETA_KAFKA_KEEP_ABANDONED) {
            abandoned_t *oldest = p->abandoned;
            p->abandoned = oldest->next;
            p->nabandoned--;
            to_free[1] = abandoned_drop(oldest);
        }
    }
    pthread_mutex_unlock(&p->lock);
    free(to_free[0]);
    free(to_free[1]);
}

static bool same_msg(const out_msg_t *m, const kept_msg_t *k) {
    return (!m->headers || m->resendable) && m->len == k->len && m->key_len == k->key_len &&
           strcmp(m->topic, k->topic) == 0 && (!m->len || !memcmp(m->value, k->value, m->len)) &&
           (!m->key_len || !memcmp(m->key, k->key, m->key_len));
}

/* Under p->lock, with no abandoned message in flight: marks b's leading slots
 * acknowledged while msgs resend kept messages, in order, that the broker
 * acknowledged; the kept batches passed by such a resend are dropped (into
 * *to_free, for the caller to free after unlocking). Returns how many. */
static size_t adopt_resends(deta_producer_t *p, dr_batch_t *b, const out_msg_t *msgs, size_t n,
                            dr_batch_t **to_free, size_t *nfree) {
    size_t i = 0;
    abandoned_t *a = p->abandoned;
    size_t k = 0;
    while (a && i < n) {
        if (k == a->count) {
            a = a->next;
            k = 0;
            continue;
        }
        const dr_slot_t *slot = &a->b->slots[a->first + k];
        if (!slot->done || slot->err != RD_KAFKA_RESP_ERR_NO_ERROR ||
            !same_msg(&msgs[i], &a->msgs[k]))
            break;
        b->slots[i].batch = b;
        b->slots[i].done = true;
        b->slots[i].err = RD_KAFKA_RESP_ERR_NO_ERROR;
        i++;
        k++;
    }
    if (i == 0)
        return 0; /* another sender's messages, maybe: the kept ones stay */
    abandoned_t *stop = a && k < a->count ? a : (a ? a->next : NULL);
    while (p->abandoned != stop) { /* superseded by this resend */
        abandoned_t *gone = p->abandoned;
        p->abandoned = gone->next;
        p->nabandoned--;
        dr_batch_t *f = abandoned_drop(gone);
        if (f)
            to_free[(*nfree)++] = f;
    }
    return i;
}

void deta_kafka_abandoned_free_all(deta_producer_t *p) {
    while (p->abandoned) {
        abandoned_t *a = p->abandoned;
        p->abandoned = a->next;
        free(abandoned_drop(a));
    }
    p->nabandoned = 0;
}

/* Under p->lock after await_orphans: marks the resent messages already
 * acknowledged (see adopt_resends) and frees what that released; returns how
 * many. */
size_t deta_kafka_adopt_locked(deta_producer_t *p, dr_batch_t *b, const out_msg_t *msgs, size_t n) {
    dr_batch_t *to_free[DETA_KAFKA_KEEP_ABANDONED + 1];
    size_t nfree = 0;
    size_t adopted = adopt_resends(p, b, msgs, n, to_free, &nfree);
    for (size_t i = 0; i < nfree; i++)
        free(to_free[i]); /* unreferenced: no report can reach them */
    return adopted;
}

/*
 * batch.h - several consumed messages applied in one database transaction: the
 * part of every batch handler (deta_consume_batch_fn, kafka.h) that is the same
 * whatever the messages are.
 *
 * One BEGIN, the caller's apply of each message still to apply, one COMMIT. A
 * message refused before the transaction (results[i] not DETA_OK on entry) is
 * left out, and so is one whose apply answers DETA_ERR_CONFLICT: its duplicate,
 * which by the apply's contract wrote nothing (deta/events.h, own_key); the
 * others go on. Any other failure of a message (transient: a lost connection, a
 * deadlock, a lock or statement timeout; or refused for good once applied), or
 * a failed commit, rolls back the whole batch and is returned as TRANSIENT:
 * nothing was applied, and the consumer then handles the messages one at a time
 * with their retries, where a message refused for good is dead-lettered alone.
 * A duplicate whose statement aborted the transaction after all (a racing
 * insert's unique violation) is told apart at once (no I/O: libpq knows the
 * transaction's state), and the batch goes one at a time as well.
 *
 * No savepoint per message. One cost two statements (SAVEPOINT and RELEASE)
 * and a subtransaction per message, and a row locked in the batch (a prepare's
 * FOR UPDATE) and then changed under a message's savepoint was marked with a
 * multixact, which every later reader of the row had to look up. What a
 * savepoint bought, that a message refused for good did not cost its batch, is
 * had before the transaction instead: the dispatcher refuses a malformed
 * envelope, a wrong key or producer and a payload its route's check refuses
 * (deta/events.h) before any SQL.
 *
 * With tracing on, each message applied gets a "db.transaction" span of its own,
 * a child of its consumer span (msgs[i].span, deta/kafka.h), current while the
 * message is applied and ended when the batch commits or rolls back, so the
 * outbox rows a message writes carry its trace, as one at a time
 * (docs/observability.md, "Batches"). Called inside a span of the caller's, it
 * makes none: the transaction is that span's child.
 *
 * Rows shared between orders (inventory's stock levels) make a batch hold their
 * locks for the whole batch, and two batches may take them in opposite orders:
 * Postgres then breaks the deadlock after deadlock_timeout (1 s by default) by
 * failing one transaction (40P01, transient: that batch goes one at a time).
 * lock_timeout_ms > 0 bounds that wait for the batch's transaction (SET LOCAL
 * lock_timeout, one more round trip): a batch that waits longer for a row lock
 * gives up (55P03, transient) and its messages go one at a time, as before
 * batching, where the locks are taken in a fixed order and cannot deadlock.
 * A prepare step (below) that takes every such lock the batch needs, at once
 * and in one fixed order, before any message is applied, keeps two batches
 * from waiting on each other in a cycle: then they only queue.
 */
#ifndef DETA_BATCH_H
#define DETA_BATCH_H

#include <stddef.h>
#include "deta/db.h"
#include "deta/kafka.h"

/* Applies message i inside the open transaction. DETA_ERR_CONFLICT only for a
 * duplicate that wrote nothing (above). why has DETA_KAFKA_WHY_MAX bytes. */
typedef deta_err_t (*deta_batch_apply_fn)(deta_db_t *db, size_t i, void *opaque, char *why,
                                          size_t whysize);

/* Run in the batch's transaction before any message is applied, with the
 * apply's opaque (e.g. the row locks the batch will take, at once, in a fixed
 * order). A failure rolls the batch back: deta_batch_run returns it as
 * DETA_ERR_TRANSIENT, its reason in errstr. */
typedef deta_err_t (*deta_batch_prepare_fn)(deta_db_t *db, void *opaque, char *errstr,
                                            size_t errsize);

/* The transaction above on db over messages msgs[0..n) (the batch handler's;
 * NULL: no spans): those with results[i] == DETA_OK on entry are applied, the
 * others (refused before any transaction) left as they are; prepare (NULL:
 * none) first. DETA_OK once committed; otherwise the transient error, with
 * *failed the message it came from (n: the begin, the lock timeout, the prepare
 * or the commit) and its reason in why[*failed] (or in errstr for n). */
deta_err_t deta_batch_run(deta_db_t *db, const deta_kafka_msg_t *msgs, size_t n,
                          int lock_timeout_ms, deta_batch_prepare_fn prepare,
                          deta_batch_apply_fn apply, void *opaque,
                          deta_err_t *results, char (*why)[DETA_KAFKA_WHY_MAX], size_t *failed,
                          char *errstr, size_t errsize);

#endif

/*
 * dead_letters.h - where query-api keeps the dead letters of the five dlq.*
 * topics, behind an interface as narrow as read_model.h's.
 *
 * What the administration needs and nothing more: prepare the schema, add one
 * captured dead letter (idempotently: the same dlq topic, partition and offset
 * is one record however often it is consumed), count per topic, list a page,
 * get one, and replay one. Nothing here names SQL; the rules (what a record
 * holds, what a replay sends) live in domain.c.
 *
 * Replaying is a store operation because the record must not change under the
 * replay: the store holds the record (Postgres: a row lock in a transaction),
 * calls the caller's send function with it, and only when that succeeded raises
 * replay_count and sets last_replayed_at, then releases it. Two replays of one
 * record therefore run one after the other, and a replay-all that meets a record
 * somebody is replaying right now skips it instead of sending it twice.
 *
 * The Postgres implementation is dead_letters_pg.c (database delivery_query,
 * table dead_letters). Every function may be called from any thread; each uses
 * the calling thread's connection of the service's pool.
 */
#ifndef QUERY_DEAD_LETTERS_H
#define QUERY_DEAD_LETTERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deta/service.h"
#include "domain.h"

typedef struct dead_letters dead_letters_t;

/* One page of a topic's dead letters, oldest (lowest id) first. */
typedef struct dead_letter_page {
    query_dead_letter_t *items; /* malloc'd; each owns its bytes */
    size_t n;
    long total; /* records matching the filters, on every page */
} dead_letter_page_t;

void dead_letter_page_clear(dead_letter_page_t *p);

dead_letters_t *dead_letters_new(deta_service_t *svc);
void dead_letters_free(dead_letters_t *s);

/* Creates or migrates the schema (waits while the store is unreachable). */
deta_err_t dead_letters_prepare(dead_letters_t *s, char *errstr, size_t errsize);

/* Stores a captured dead letter; *added false when that topic, partition and
 * offset were stored already. DETA_ERR_TRANSIENT when the store is away. */
deta_err_t dead_letters_add(dead_letters_t *s, const query_dead_letter_t *d, bool *added,
                            char *errstr, size_t errsize);

/* Totals and pending (never replayed) per topic, in query_dlq_topics order. */
deta_err_t dead_letters_counts(dead_letters_t *s, query_dlq_counts_t out[QUERY_DLQ_TOPIC_COUNT],
                               char *errstr, size_t errsize);

/* topic is one of query_dlq_topics. Items carry no value and no headers (the
 * list shows neither); get returns them. */
deta_err_t dead_letters_list(dead_letters_t *s, const char *topic,
                             const query_dlq_list_params_t *p, dead_letter_page_t *out,
                             char *errstr, size_t errsize);

/* DETA_ERR_NOT_FOUND when topic has no record with this id. */
deta_err_t dead_letters_get(dead_letters_t *s, const char *topic, int64_t id,
                            query_dead_letter_t *out, char *errstr, size_t errsize);

/* Sends the record (see the top of this file). Must not keep d. */
typedef deta_err_t (*dead_letter_send_fn)(const query_dead_letter_t *d, void *opaque,
                                          char *errstr, size_t errsize);

/* Replays record id of topic: holds it, calls send, and when send returned
 * DETA_OK records the replay; *out is then the record as it is now (free it with
 * query_dead_letter_clear). Returns send's error as is (nothing recorded), or
 * DETA_ERR_NOT_FOUND when there is no such record - with pending_only, also when
 * it was replayed already or another request is replaying it right now - or the
 * store's own error (when it comes after a successful send, the message went out
 * but the replay is not counted). */
deta_err_t dead_letters_replay(dead_letters_t *s, const char *topic, int64_t id,
                               bool pending_only, dead_letter_send_fn send, void *opaque,
                               query_dead_letter_t *out, char *errstr, size_t errsize);

/* The ids of topic's pending records with after < id <= upto, ascending, at most
 * max of them (*n). For replay-all, which walks the records pending when it
 * began (upto = dead_letters_last_id then) and never those that arrive while it
 * runs, such as the replays that come back as new dead letters. */
deta_err_t dead_letters_pending_ids(dead_letters_t *s, const char *topic, int64_t after,
                                    int64_t upto, int64_t *ids, size_t max, size_t *n,
                                    char *errstr, size_t errsize);
/* The highest id of topic (0 when it has none). */
deta_err_t dead_letters_last_id(dead_letters_t *s, const char *topic, int64_t *id, char *errstr,
                                size_t errsize);

#endif

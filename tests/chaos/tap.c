/*
 * tap.c - the chaos run's own reader of the raw and dead-letter topics, from the
 * first message on, for the whole run.
 *
 * Why not read the topics once at the end: the local broker (librdkafka's mock
 * cluster) keeps at most 5 MiB or 100,000 message sets per partition and drops
 * the oldest beyond that. A long run writes far more, so a scan at the end sees
 * a cut log and every order whose events were dropped looks wrong. The tap
 * reads while the run goes on, keeps what the checks need (verify.c), and knows
 * when it lost something: a partition whose log no longer starts at offset 0
 * when first read, an offset skipped, or a reset of its position
 * (auto.offset.reset=error makes the consumer say so instead of skipping). A
 * tap that lost messages is a harness failure, reported as a violation, never
 * taken for the system's.
 *
 * With CHAOS_VERIFY_ONLY the tap starts when verification does: a scan, with
 * the same loss detection.
 */
#include "chaos.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <librdkafka/rdkafka.h>

#include "deta/topics.h"
#include "testsupport.h"

#define TAP_MAX_PARTS 256
#define TAP_POLL_MS 100
#define TAP_META_TRIES 50

typedef struct {
    char topic[64];
    int32_t partition;
    int64_t next;     /* the offset expected next; -1 before the first message */
    int64_t low_seen; /* the partition's low watermark when the tap began */
} tap_part_t;

struct chaos_tap {
    rd_kafka_t *rk;
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t mu;
    tap_part_t parts[TAP_MAX_PARTS];
    int nparts;
    chaos_tap_msg_t *msgs;
    size_t n, cap;
    long lost;          /* messages known to be missing */
    char lost_why[256]; /* the first loss, for the report */
};

/* Called with t->mu held (or before the thread runs). */
static void note_loss(chaos_tap_t *t, long n, const char *topic, int32_t part, const char *what,
                      long long a, long long b) {
    if (t->lost == 0)
        snprintf(t->lost_why, sizeof t->lost_why, "%s[%d]: %s (%lld, %lld)", topic, (int)part,
                 what, a, b);
    t->lost += n;
}

static tap_part_t *part_of(chaos_tap_t *t, const char *topic, int32_t partition) {
    for (int i = 0; i < t->nparts; i++)
        if (t->parts[i].partition == partition && strcmp(t->parts[i].topic, topic) == 0)
            return &t->parts[i];
    return NULL;
}

static char *dup_bytes(const void *p, size_t len) {
    if (!p)
        return NULL;
    char *s = malloc(len + 1);
    if (s) {
        memcpy(s, p, len);
        s[len] = '\0';
    }
    return s;
}

static char *header_dup(rd_kafka_message_t *m, const char *name) {
    rd_kafka_headers_t *h = NULL;
    const void *v = NULL;
    size_t len = 0;
    if (rd_kafka_message_headers(m, &h) || rd_kafka_header_get_last(h, name, &v, &len))
        return NULL;
    return dup_bytes(v, len);
}

static bool is_dlq(const char *topic) { return strncmp(topic, "dlq.", 4) == 0; }

static void keep(chaos_tap_t *t, rd_kafka_message_t *m) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    pthread_mutex_lock(&t->mu);
    tap_part_t *p = part_of(t, topic, m->partition);
    if (p) {
        int64_t want = p->next >= 0 ? p->next : p->low_seen;
        if (m->offset > want)
            note_loss(t, (long)(m->offset - want), topic, m->partition,
                      "offsets skipped (from, to)", (long long)want, (long long)m->offset - 1);
        if (m->offset >= want)
            p->next = m->offset + 1;
        else if (p->next >= 0) { /* read again after a reconnect: kept already */
            pthread_mutex_unlock(&t->mu);
            return;
        }
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 4096;
        chaos_tap_msg_t *more = realloc(t->msgs, cap * sizeof *more);
        if (!more) {
            note_loss(t, 1, topic, m->partition, "out of memory (offset, -)",
                      (long long)m->offset, 0LL);
            pthread_mutex_unlock(&t->mu);
            return;
        }
        t->msgs = more;
        t->cap = cap;
    }
    chaos_tap_msg_t *k = &t->msgs[t->n++];
    memset(k, 0, sizeof *k);
    k->dlq = is_dlq(topic);
    k->offset = m->offset;
    k->key = dup_bytes(m->key, m->key_len);
    if (k->dlq) {
        k->original_topic = header_dup(m, "x-original-topic");
        k->consumer_group = header_dup(m, "x-consumer-group");
        k->error = header_dup(m, "x-error");
    } else {
        k->value = dup_bytes(m->payload, m->len);
    }
    pthread_mutex_unlock(&t->mu);
}

static void *follow(void *arg) {
    chaos_tap_t *t = arg;
    while (!atomic_load(&t->stop)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(t->rk, TAP_POLL_MS);
        if (!m)
            continue;
        if (!m->err) {
            keep(t, m);
        } else if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET ||
                   m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE) {
            pthread_mutex_lock(&t->mu);
            note_loss(t, 1, m->rkt ? rd_kafka_topic_name(m->rkt) : "?", m->partition,
                      "position reset (offset, -)", (long long)m->offset, 0LL);
            pthread_mutex_unlock(&t->mu);
        }
        rd_kafka_message_destroy(m);
    }
    return NULL;
}

/* Every partition of topic into parts, from the beginning. */
static bool add_topic(chaos_tap_t *t, rd_kafka_topic_partition_list_t *parts, const char *topic) {
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(t->rk, topic, NULL);
    for (int i = 0; i < TAP_META_TRIES; i++) {
        if (!rd_kafka_metadata(t->rk, 0, rkt, &md, 2000) && md->topic_cnt == 1 &&
            md->topics[0].partition_cnt > 0)
            break;
        if (md)
            rd_kafka_metadata_destroy(md);
        md = NULL;
        ts_sleep_ms(200);
    }
    rd_kafka_topic_destroy(rkt);
    if (!md)
        return false;
    bool ok = true;
    for (int p = 0; p < md->topics[0].partition_cnt && ok; p++) {
        int32_t id = md->topics[0].partitions[p].id;
        if (t->nparts == TAP_MAX_PARTS) {
            ok = false;
            break;
        }
        tap_part_t *tp = &t->parts[t->nparts++];
        snprintf(tp->topic, sizeof tp->topic, "%s", topic);
        tp->partition = id;
        tp->next = -1;
        int64_t low = 0, high = 0;
        if (!rd_kafka_query_watermark_offsets(t->rk, topic, id, &low, &high, 5000))
            tp->low_seen = low;
        if (tp->low_seen > 0)
            note_loss(t, (long)tp->low_seen, topic, id, "the log no longer starts at 0 (low, high)",
                      (long long)low, (long long)high);
        rd_kafka_topic_partition_list_add(parts, topic, id)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    rd_kafka_metadata_destroy(md);
    return ok;
}

chaos_tap_t *chaos_tap_start(void) {
    chaos_tap_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    pthread_mutex_init(&t->mu, NULL);
    char err[512], group[64];
    snprintf(group, sizeof group, "chaos-tap-%d", (int)getpid());
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", ts_env("KAFKA_BOOTSTRAP_SERVERS"), err,
                          sizeof err) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof err) != RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "auto.offset.reset", "error", err, sizeof err) !=
            RD_KAFKA_CONF_OK) {
        fprintf(stderr, "chaos: tap: %s\n", err);
        rd_kafka_conf_destroy(conf);
        free(t);
        return NULL;
    }
    if (!(t->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err))) {
        fprintf(stderr, "chaos: tap: %s\n", err);
        free(t);
        return NULL;
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(64);
    bool ok = true;
    for (size_t i = 0; i < DETA_TOPICS_COUNT && ok; i++)
        ok = add_topic(t, parts, deta_topics_all[i]);
    if (ok)
        ok = !rd_kafka_assign(t->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (ok)
        ok = !pthread_create(&t->thread, NULL, follow, t);
    if (!ok) {
        fprintf(stderr, "chaos: tap: cannot follow the topics\n");
        rd_kafka_destroy(t->rk);
        pthread_mutex_destroy(&t->mu);
        free(t);
        return NULL;
    }
    return t;
}

/* Has the tap read every partition up to its high watermark as it is now? */
static bool caught_up(chaos_tap_t *t, char *behind, size_t behindsize) {
    for (int i = 0; i < t->nparts; i++) {
        tap_part_t *p = &t->parts[i];
        int64_t low = 0, high = 0;
        if (rd_kafka_query_watermark_offsets(t->rk, p->topic, p->partition, &low, &high, 5000)) {
            snprintf(behind, behindsize, "%s[%d]: no watermarks", p->topic, (int)p->partition);
            return false;
        }
        pthread_mutex_lock(&t->mu);
        int64_t next = p->next >= 0 ? p->next : p->low_seen;
        pthread_mutex_unlock(&t->mu);
        if (next < high) {
            snprintf(behind, behindsize, "%s[%d] at %lld of %lld", p->topic, (int)p->partition,
                     (long long)next, (long long)high);
            return false;
        }
    }
    return true;
}

bool chaos_tap_finish(chaos_tap_t *t, int timeout_ms) {
    char behind[160] = "";
    long deadline = (long)(chaos_now() * 1000.0) + timeout_ms;
    bool done = false;
    while (!(done = caught_up(t, behind, sizeof behind)) &&
           (long)(chaos_now() * 1000.0) < deadline)
        ts_sleep_ms(200);
    atomic_store(&t->stop, true);
    pthread_join(t->thread, NULL);
    rd_kafka_consumer_close(t->rk);
    rd_kafka_destroy(t->rk);
    t->rk = NULL;
    if (!done)
        chaos_violation("the tap could not read the topics to their end",
                        "still behind after %d ms: %s", timeout_ms, behind);
    if (t->lost > 0)
        chaos_violation("the tap lost messages (the topic checks are incomplete)",
                        "%ld message(s); first: %s", t->lost, t->lost_why);
    return done && t->lost == 0;
}

size_t chaos_tap_messages(const chaos_tap_t *t, const chaos_tap_msg_t **msgs) {
    *msgs = t->msgs;
    return t->n;
}

void chaos_tap_free(chaos_tap_t *t) {
    if (!t)
        return;
    if (t->rk) {
        atomic_store(&t->stop, true);
        pthread_join(t->thread, NULL);
        rd_kafka_destroy(t->rk);
    }
    for (size_t i = 0; i < t->n; i++) {
        chaos_tap_msg_t *k = &t->msgs[i];
        free(k->key);
        free(k->value);
        free(k->original_topic);
        free(k->consumer_group);
        free(k->error);
    }
    free(t->msgs);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

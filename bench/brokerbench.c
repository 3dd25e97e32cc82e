/*
 * brokerbench.c - the local broker's own ceiling: how many messages per second
 * go from a producer to a consumer, with nothing else in the way.
 *
 *   brokerbench --bootstrap HOST:PORT [--messages N] [--size BYTES]
 *               [--window N] [--probes N] [--fetch-wait-ms MS] [--topic NAME]
 *
 * The producer is configured like the services' (lib/src/kafka_conf.c): idempotent,
 * acks=all, linger.ms=5, keyed messages; the consumer too (librdkafka's
 * defaults; --fetch-wait-ms sets its fetch.wait.max.ms, to see what that
 * costs on the mock broker); the value is --size bytes (550, about
 * an order.created envelope). A consumer in another thread reads the topic's
 * every partition from the start. The clock starts once the consumer has
 * received a first warm-up message (so the topic exists and fetching runs) and
 * stops when the consumer has the last of N messages. The producer stays at
 * most --window messages ahead of the consumer: the mock cluster keeps a
 * bounded amount per partition in memory, and an unbounded producer would
 * measure how fast it forgets, not how fast it delivers.
 *
 * Then --probes (50) messages go one at a time, each sent only once the
 * consumer has the one before: the latency of a single hop through the broker
 * when nothing queues, which every step of the saga pays at least once.
 *
 * Prints key=value lines: produce_to_consume_per_s (the figure the benchmark
 * uses), acked_per_s (producer acknowledgements alone), mb_per_s, lost, and
 * hop_p50_ms / hop_p99_ms / hop_max_ms of the probes.
 * The topic (bench.raw.<pid>.<time>, auto-created with the mock's default of 4
 * partitions) is left behind; the broker keeps nothing across restarts.
 */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

typedef struct bench {
    const char *bootstrap;
    char topic[128];
    long messages;
    long size;
    long window;
    long probes;
    const char *fetch_wait_ms; /* the consumer's fetch.wait.max.ms; NULL: librdkafka's (500) */
    rd_kafka_t *producer;
    rd_kafka_t *consumer;
    atomic_long acked, ack_errors, consumed;
    atomic_llong last_ack_us, last_consume_us;
    atomic_bool stop;
    int partitions;
} bench_t;

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    bench_t *b = opaque;
    if (m->err)
        atomic_fetch_add(&b->ack_errors, 1);
    else
        atomic_fetch_add(&b->acked, 1);
    atomic_store(&b->last_ack_us, now_us());
}

static bool set_all(rd_kafka_conf_t *conf, const char *const (*kv)[2], size_t n) {
    char why[256];
    for (size_t i = 0; i < n; i++)
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], why, sizeof why) != RD_KAFKA_CONF_OK) {
            fprintf(stderr, "brokerbench: %s: %s\n", kv[i][0], why);
            return false;
        }
    return true;
}

static rd_kafka_t *make_client(bench_t *b, rd_kafka_type_t type) {
    const char *const producer_kv[][2] = {
        {"bootstrap.servers", b->bootstrap}, {"enable.idempotence", "true"},
        {"acks", "all"},                     {"linger.ms", "5"},
    };
    const char *const consumer_kv[][2] = {
        {"bootstrap.servers", b->bootstrap}, {"group.id", "brokerbench"},
        {"enable.auto.commit", "false"},     {"auto.offset.reset", "earliest"},
    };
    const char *const fetch_kv[][2] = {{"fetch.wait.max.ms", b->fetch_wait_ms}};
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    bool ok = type == RD_KAFKA_PRODUCER
                  ? set_all(conf, producer_kv, 4)
                  : set_all(conf, consumer_kv, 4) && (!b->fetch_wait_ms || set_all(conf, fetch_kv, 1));
    if (!ok) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, b);
    if (type == RD_KAFKA_PRODUCER)
        rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(type, conf, why, sizeof why);
    if (!rk) {
        fprintf(stderr, "brokerbench: %s\n", why);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* Produces one message, waiting while the local queue is full. */
static bool produce(bench_t *b, long seq, char *value) {
    char key[24];
    snprintf(key, sizeof key, "%ld", seq);
    memcpy(value, key, strlen(key));
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            b->producer, RD_KAFKA_V_TOPIC(b->topic), RD_KAFKA_V_KEY(key, strlen(key)),
            RD_KAFKA_V_VALUE(value, (size_t)b->size), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
            return true;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            fprintf(stderr, "brokerbench: produce: %s\n", rd_kafka_err2str(err));
            return false;
        }
        rd_kafka_poll(b->producer, 10);
    }
}

/* The warm-up message creates the topic; then its partitions are counted. */
static bool create_topic(bench_t *b) {
    char *warm_up = malloc((size_t)b->size);
    if (!warm_up)
        return false;
    memset(warm_up, 'w', (size_t)b->size);
    bool ok = produce(b, -1, warm_up);
    free(warm_up);
    if (!ok || rd_kafka_flush(b->producer, 15000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        atomic_load(&b->acked) != 1) {
        fprintf(stderr, "brokerbench: the warm-up message was not acknowledged\n");
        return false;
    }
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(b->producer, b->topic, NULL);
    if (t && rd_kafka_metadata(b->producer, 0, t, &md, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        md->topic_cnt == 1)
        b->partitions = md->topics[0].partition_cnt;
    if (md)
        rd_kafka_metadata_destroy(md);
    if (t)
        rd_kafka_topic_destroy(t);
    atomic_store(&b->acked, 0);
    return b->partitions > 0;
}

static bool assign_all(bench_t *b) {
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(b->partitions);
    for (int p = 0; p < b->partitions; p++)
        rd_kafka_topic_partition_list_add(list, b->topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    bool ok = rd_kafka_assign(b->consumer, list) == RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_topic_partition_list_destroy(list);
    return ok;
}

static void *consume(void *arg) {
    bench_t *b = arg;
    while (!atomic_load(&b->stop)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(b->consumer, 100);
        if (!m)
            continue;
        if (!m->err) {
            atomic_fetch_add(&b->consumed, 1);
            atomic_store(&b->last_consume_us, now_us());
        }
        rd_kafka_message_destroy(m);
    }
    return NULL;
}

/* Waits until the consumer has `count` messages, or `quiet_s` pass with no progress. */
static bool wait_consumed(bench_t *b, long count, double quiet_s) {
    long seen = -1;
    int64_t progress_at = now_us();
    while (atomic_load(&b->consumed) < count) {
        long c = atomic_load(&b->consumed);
        if (c != seen) {
            seen = c;
            progress_at = now_us();
        } else if (now_us() - progress_at > (int64_t)(quiet_s * 1e6)) {
            return false;
        }
        rd_kafka_poll(b->producer, 1);
    }
    return true;
}

static bool run(bench_t *b) {
    char *value = malloc((size_t)b->size);
    if (!value)
        return false;
    memset(value, 'x', (size_t)b->size);
    int64_t t0 = now_us();
    bool ok = true;
    for (long i = 0; ok && i < b->messages; i++) {
        while (i + 1 - atomic_load(&b->consumed) > b->window)
            rd_kafka_poll(b->producer, 1);
        ok = produce(b, i, value);
        if (i % 1000 == 0)
            rd_kafka_poll(b->producer, 0);
    }
    free(value);
    rd_kafka_flush(b->producer, 30000);
    bool all = ok && wait_consumed(b, b->messages + 1, 10);
    long consumed = atomic_load(&b->consumed) - 1;
    double consume_s = (double)(atomic_load(&b->last_consume_us) - t0) / 1e6;
    double ack_s = (double)(atomic_load(&b->last_ack_us) - t0) / 1e6;
    printf("messages=%ld\nsize=%ld\npartitions=%d\nwindow=%ld\n", b->messages, b->size,
           b->partitions, b->window);
    printf("acked_per_s=%.0f\nproduce_to_consume_per_s=%.0f\nmb_per_s=%.1f\nlost=%ld\n"
           "ack_errors=%ld\n",
           ack_s > 0 ? (double)atomic_load(&b->acked) / ack_s : 0,
           consume_s > 0 ? (double)consumed / consume_s : 0,
           consume_s > 0 ? (double)consumed * (double)b->size / consume_s / 1e6 : 0,
           b->messages - consumed, atomic_load(&b->ack_errors));
    return all;
}

static int compare_longs(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* One message at a time, each waited for by the consumer: the latency of one
 * hop through the broker when nothing queues (what each step of the saga pays
 * at least once). */
static bool probe_latency(bench_t *b) {
    long *us = calloc((size_t)b->probes, sizeof *us);
    char *value = malloc((size_t)b->size);
    long n = 0;
    if (!us || !value) {
        free(us);
        free(value);
        return false;
    }
    memset(value, 'p', (size_t)b->size);
    for (long k = 0; k < b->probes; k++) {
        long before = atomic_load(&b->consumed);
        int64_t t0 = now_us();
        if (!produce(b, k, value))
            break;
        while (atomic_load(&b->consumed) == before && now_us() - t0 < 5000000)
            rd_kafka_poll(b->producer, 1);
        if (atomic_load(&b->consumed) == before)
            break;
        us[n++] = (long)(now_us() - t0);
    }
    if (n > 0) {
        qsort(us, (size_t)n, sizeof *us, compare_longs);
        printf("probes=%ld\nhop_p50_ms=%.1f\nhop_p99_ms=%.1f\nhop_max_ms=%.1f\n", n,
               (double)us[(n - 1) / 2] / 1000.0, (double)us[(n * 99 + 99) / 100 - 1] / 1000.0,
               (double)us[n - 1] / 1000.0);
    }
    free(us);
    free(value);
    return n == b->probes;
}

static int usage(void) {
    fputs("usage: brokerbench --bootstrap HOST:PORT [--messages N] [--size BYTES]\n"
          "                   [--window N] [--probes N] [--fetch-wait-ms MS] [--topic NAME]\n",
          stderr);
    return 2;
}

static int parse(bench_t *b, int argc, char **argv) {
    static const struct option longs[] = {
        {"bootstrap", required_argument, NULL, 'b'}, {"messages", required_argument, NULL, 'n'},
        {"size", required_argument, NULL, 's'},      {"window", required_argument, NULL, 'w'},
        {"topic", required_argument, NULL, 't'},     {"probes", required_argument, NULL, 'p'},
        {"fetch-wait-ms", required_argument, NULL, 'f'}, {NULL, 0, NULL, 0},
    };
    b->messages = 200000;
    b->size = 550;
    b->window = 20000;
    b->probes = 50;
    snprintf(b->topic, sizeof b->topic, "bench.raw.%ld.%ld", (long)getpid(), (long)time(NULL));
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'b': b->bootstrap = optarg; break;
        case 'n': b->messages = strtol(optarg, NULL, 10); break;
        case 's': b->size = strtol(optarg, NULL, 10); break;
        case 'w': b->window = strtol(optarg, NULL, 10); break;
        case 'p': b->probes = strtol(optarg, NULL, 10); break;
        case 'f': b->fetch_wait_ms = optarg; break;
        case 't': snprintf(b->topic, sizeof b->topic, "%s", optarg); break;
        default: return usage();
        }
    }
    if (!b->bootstrap || b->messages < 1 || b->size < 16 || b->size > 1000000 || b->window < 1 ||
        b->probes < 0 || optind < argc)
        return usage();
    return 0;
}

int main(int argc, char **argv) {
    static bench_t b;
    int rc = parse(&b, argc, argv);
    if (rc)
        return rc;
    b.producer = make_client(&b, RD_KAFKA_PRODUCER);
    b.consumer = b.producer ? make_client(&b, RD_KAFKA_CONSUMER) : NULL;
    pthread_t reader;
    bool started = false;
    rc = 1;
    if (b.consumer && create_topic(&b) && assign_all(&b) &&
        pthread_create(&reader, NULL, consume, &b) == 0) {
        started = true;
        if (!wait_consumed(&b, 1, 15))
            fprintf(stderr, "brokerbench: the consumer never got the warm-up message\n");
        else
            rc = run(&b) && probe_latency(&b) ? 0 : 1;
    }
    atomic_store(&b.stop, true);
    if (started)
        pthread_join(reader, NULL);
    if (b.consumer) {
        rd_kafka_consumer_close(b.consumer);
        rd_kafka_destroy(b.consumer);
    }
    if (b.producer)
        rd_kafka_destroy(b.producer);
    return rc;
}

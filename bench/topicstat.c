/*
 * topicstat.c - what the system put through the broker in a window: messages
 * and bytes per topic, for the scaling model of bench/report.sh.
 *
 *   topicstat --bootstrap HOST:PORT marks
 *       prints "topic partition high_watermark" for every partition of every
 *       topic (internal "__" topics and brokerbench's "bench." ones left out);
 *   topicstat --bootstrap HOST:PORT count --from BEFORE --to AFTER
 *       reads, for every partition in AFTER, the messages between its offset in
 *       BEFORE (0 for a partition or topic BEFORE does not list) and its offset in
 *       AFTER, and prints CSV: topic,messages,read,key_bytes,value_bytes,header_bytes.
 *       messages is the difference of the watermarks (exact: every message produced
 *       in the window); read is how many of them the broker still had (the mock
 *       cluster forgets the oldest messages of a partition past a few MB), and the
 *       byte sums are over those: key, value, and headers' names and values, without
 *       Kafka's record and batch framing.
 *
 * The consumer is assigned the partitions (no group join, nothing committed), with
 * fetch.wait.max.ms=10 so that the mock broker answers quickly. It gives up after
 * --timeout seconds (30) and says so on stderr, printing what it has read.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#define MAX_PARTS 8192
#define TOPIC_MAX 250

typedef struct part {
    char topic[TOPIC_MAX];
    int partition;
    int64_t from, to; /* the window: [from, to) */
    int64_t next;     /* the next offset wanted */
} part_t;

typedef struct topic_sum {
    char topic[TOPIC_MAX];
    long long messages, read, key_bytes, value_bytes, header_bytes;
} topic_sum_t;

static part_t parts[MAX_PARTS];
static size_t nparts;

static void usage(void) {
    fprintf(stderr, "usage: topicstat --bootstrap HOST:PORT marks\n"
                    "       topicstat --bootstrap HOST:PORT count --from FILE --to FILE"
                    " [--timeout S]\n");
}

static rd_kafka_t *make_consumer(const char *bootstrap) {
    const char *const kv[][2] = {
        {"bootstrap.servers", bootstrap}, {"group.id", "topicstat"},
        {"enable.auto.commit", "false"},  {"enable.auto.offset.store", "false"},
        {"fetch.wait.max.ms", "10"},      {"enable.partition.eof", "false"},
    };
    char why[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        if (rd_kafka_conf_set(conf, kv[i][0], kv[i][1], why, sizeof why) != RD_KAFKA_CONF_OK) {
            fprintf(stderr, "topicstat: %s: %s\n", kv[i][0], why);
            rd_kafka_conf_destroy(conf);
            return NULL;
        }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    if (!rk) {
        fprintf(stderr, "topicstat: %s\n", why);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

static bool system_topic(const char *name) {
    return strncmp(name, "__", 2) != 0 && strncmp(name, "bench.", 6) != 0;
}

/* Every partition's high watermark, printed as "topic partition high". */
static int marks(rd_kafka_t *rk) {
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, 10000);
    if (err) {
        fprintf(stderr, "topicstat: metadata: %s\n", rd_kafka_err2str(err));
        return 1;
    }
    int status = 0;
    for (int t = 0; t < md->topic_cnt && status == 0; t++) {
        const rd_kafka_metadata_topic_t *mt = &md->topics[t];
        if (mt->err || !system_topic(mt->topic))
            continue;
        for (int p = 0; p < mt->partition_cnt; p++) {
            int64_t low = 0, high = 0;
            err = rd_kafka_query_watermark_offsets(rk, mt->topic, mt->partitions[p].id, &low,
                                                   &high, 10000);
            if (err) {
                fprintf(stderr, "topicstat: %s [%d]: %s\n", mt->topic, mt->partitions[p].id,
                        rd_kafka_err2str(err));
                status = 1;
                break;
            }
            printf("%s %d %lld\n", mt->topic, mt->partitions[p].id, (long long)high);
        }
    }
    rd_kafka_metadata_destroy(md);
    return status;
}

static part_t *find_part(const char *topic, int partition) {
    for (size_t i = 0; i < nparts; i++)
        if (parts[i].partition == partition && strcmp(parts[i].topic, topic) == 0)
            return &parts[i];
    return NULL;
}

/* Reads a marks file: with add, every line becomes a partition whose window ends
 * there; without, a line sets the start of a partition already listed. */
static bool read_marks(const char *path, bool add) {
    FILE *f = fopen(path, "r");
    if (!f) {
        perror(path);
        return false;
    }
    char topic[TOPIC_MAX];
    int partition;
    long long offset;
    bool ok = true;
    int n;
    while ((n = fscanf(f, "%249s %d %lld", topic, &partition, &offset)) == 3) {
        if (add) {
            if (nparts == MAX_PARTS) {
                fprintf(stderr, "topicstat: more than %d partitions\n", MAX_PARTS);
                ok = false;
                break;
            }
            part_t *p = &parts[nparts++];
            snprintf(p->topic, sizeof p->topic, "%s", topic);
            p->partition = partition;
            p->from = 0;
            p->to = offset;
        } else {
            part_t *p = find_part(topic, partition);
            if (p)
                p->from = offset < p->to ? offset : p->to;
        }
    }
    if (ok && n != EOF) {
        fprintf(stderr, "topicstat: %s: not \"topic partition offset\" lines\n", path);
        ok = false;
    }
    fclose(f);
    return ok;
}

static topic_sum_t *sum_of(topic_sum_t *sums, size_t *nsums, const char *topic) {
    for (size_t i = 0; i < *nsums; i++)
        if (strcmp(sums[i].topic, topic) == 0)
            return &sums[i];
    topic_sum_t *s = &sums[(*nsums)++];
    memset(s, 0, sizeof *s);
    snprintf(s->topic, sizeof s->topic, "%s", topic);
    return s;
}

static long long header_bytes(const rd_kafka_message_t *m) {
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR || !hdrs)
        return 0;
    long long total = 0;
    const char *name;
    const void *value;
    size_t size;
    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) ==
                       RD_KAFKA_RESP_ERR_NO_ERROR;
         i++)
        total += (long long)(strlen(name) + size);
    return total;
}

static int count(rd_kafka_t *rk, const char *from, const char *to, int timeout_s) {
    if (!read_marks(to, true) || !read_marks(from, false))
        return 2;
    static topic_sum_t sums[MAX_PARTS];
    size_t nsums = 0;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)nparts);
    size_t pending = 0;
    for (size_t i = 0; i < nparts; i++) {
        part_t *p = &parts[i];
        p->next = p->from;
        sum_of(sums, &nsums, p->topic)->messages += p->to - p->from;
        if (p->to > p->from) {
            rd_kafka_topic_partition_list_add(list, p->topic, p->partition)->offset = p->from;
            pending++;
        }
    }
    rd_kafka_resp_err_t err = rd_kafka_assign(rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    if (err) {
        fprintf(stderr, "topicstat: assign: %s\n", rd_kafka_err2str(err));
        return 1;
    }
    time_t deadline = time(NULL) + timeout_s;
    while (pending > 0 && time(NULL) < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        if (!m->err && m->rkt) {
            part_t *p = find_part(rd_kafka_topic_name(m->rkt), m->partition);
            if (p && m->offset >= p->next && m->offset < p->to) {
                topic_sum_t *s = sum_of(sums, &nsums, p->topic);
                s->read++;
                s->key_bytes += (long long)m->key_len;
                s->value_bytes += (long long)m->len;
                s->header_bytes += header_bytes(m);
            }
            if (p && m->offset + 1 > p->next) {
                bool was_open = p->next < p->to;
                p->next = m->offset + 1;
                if (was_open && p->next >= p->to)
                    pending--;
            }
        } else if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET ||
                   m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE) {
            fprintf(stderr, "topicstat: %s\n", rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
    }
    if (pending > 0)
        fprintf(stderr, "topicstat: %zu partitions not read to the end within %d s\n", pending,
                timeout_s);
    printf("topic,messages,read,key_bytes,value_bytes,header_bytes\n");
    for (size_t i = 0; i < nsums; i++)
        printf("%s,%lld,%lld,%lld,%lld,%lld\n", sums[i].topic, sums[i].messages, sums[i].read,
               sums[i].key_bytes, sums[i].value_bytes, sums[i].header_bytes);
    return 0;
}

int main(int argc, char **argv) {
    const char *bootstrap = NULL, *from = NULL, *to = NULL;
    int timeout_s = 30;
    static const struct option opts[] = {{"bootstrap", required_argument, NULL, 'b'},
                                         {"from", required_argument, NULL, 'f'},
                                         {"to", required_argument, NULL, 't'},
                                         {"timeout", required_argument, NULL, 'T'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'b': bootstrap = optarg; break;
        case 'f': from = optarg; break;
        case 't': to = optarg; break;
        case 'T': timeout_s = atoi(optarg); break;
        case 'h': usage(); return 0;
        default: usage(); return 2;
        }
    }
    const char *mode = optind < argc ? argv[optind] : NULL;
    bool is_marks = mode && strcmp(mode, "marks") == 0;
    bool is_count = mode && strcmp(mode, "count") == 0;
    if (!bootstrap || !(is_marks || is_count) || (is_count && (!from || !to)) ||
        timeout_s < 1) {
        usage();
        return 2;
    }
    rd_kafka_t *rk = make_consumer(bootstrap);
    if (!rk)
        return 1;
    int status = is_marks ? marks(rk) : count(rk, from, to, timeout_s);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return status;
}

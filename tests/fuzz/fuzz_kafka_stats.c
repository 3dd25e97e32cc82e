/*
 * fuzz_kafka_stats.c - libFuzzer target of the consumer-lag reader of librdkafka's
 * statistics (lib/src/kafka_stats.c), whose JSON comes from outside the library's
 * code. Each input is the statistics text, and the target checks, besides memory
 * safety:
 *   - a refusal (-1) visits nothing, and happens exactly when the text is not a
 *     JSON object or its "topics" is not an object (jansson, loaded again here);
 *   - the count returned is the number of visits, and the number of partitions
 *     the rule below accepts (counted again here);
 *   - every visit is a partition that is in the text: topics.<topic>.partitions.
 *     <the partition in decimal>, a partition >= 0 and a lag >= 0, fetched by
 *     this handle (a fetch_state other than none, stopping, stopped), and its lag
 *     is consumer_lag when that is an integer >= 0, else lo..end of an "active"
 *     partition with nothing committed (the rule written again the plain way).
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "kafka_stats.h"

typedef struct check {
    json_t *root;
    int visits;
} check_t;

static long long int_or(const json_t *o, const char *name, long long dflt) {
    const json_t *v = json_object_get(o, name);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}

/* The rule, the plain way: the lag of partition object p, or -1. */
static long long plain_lag(const json_t *p) {
    const char *state = json_string_value(json_object_get(p, "fetch_state"));
    if (!json_is_object(p) || !state || !strcmp(state, "none") || !strcmp(state, "stopping") ||
        !strcmp(state, "stopped"))
        return -1;
    long long cl = int_or(p, "consumer_lag", -1);
    if (cl >= 0)
        return cl;
    long long lo = int_or(p, "lo_offset", -1), ls = int_or(p, "ls_offset", -1);
    long long end = ls >= 0 ? ls : int_or(p, "hi_offset", -1);
    if (strcmp(state, "active") || int_or(p, "committed_offset", 0) >= 0 || lo < 0 || end < lo)
        return -1;
    return end - lo;
}

/* A partition key the way librdkafka writes one: the decimal of 0..INT32_MAX. */
static int plain_partition(const char *key) {
    char *end;
    if (key[0] < '0' || key[0] > '9')
        return 0;
    long long v = strtoll(key, &end, 10);
    char again[24];
    snprintf(again, sizeof again, "%lld", v);
    return *end == '\0' && v <= INT32_MAX && strcmp(again, key) == 0;
}

static int plain_count(const json_t *topics) {
    int n = 0;
    const char *name, *key;
    json_t *t, *p;
    json_object_foreach((json_t *)topics, name, t) {
        json_object_foreach(json_object_get(t, "partitions"), key, p) {
            n += plain_partition(key) && plain_lag(p) >= 0;
        }
    }
    return n;
}

static void check_visit(const deta_kafka_lag_t *lag, void *arg) {
    check_t *c = arg;
    c->visits++;
    FUZZ_CHECK(lag->topic != NULL && lag->partition >= 0 && lag->lag >= 0);
    char key[16];
    snprintf(key, sizeof key, "%d", (int)lag->partition);
    const json_t *t = json_object_get(json_object_get(c->root, "topics"), lag->topic);
    const json_t *p = json_object_get(json_object_get(t, "partitions"), key);
    FUZZ_CHECK(json_is_object(p));
    const char *state = json_string_value(json_object_get(p, "fetch_state"));
    FUZZ_CHECK(state && strcmp(state, "none") && strcmp(state, "stopping") &&
               strcmp(state, "stopped"));
    long long cl = int_or(p, "consumer_lag", -1);
    if (cl >= 0) {
        FUZZ_CHECK(lag->lag == cl);
        return;
    }
    FUZZ_CHECK(strcmp(state, "active") == 0);
    FUZZ_CHECK(int_or(p, "committed_offset", 0) < 0);
    long long lo = int_or(p, "lo_offset", -1), ls = int_or(p, "ls_offset", -1);
    long long end = ls >= 0 ? ls : int_or(p, "hi_offset", -1);
    FUZZ_CHECK(lo >= 0 && end >= lo && lag->lag == end - lo);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size ? size : 1);
    FUZZ_CHECK(buf != NULL);
    if (size)
        memcpy(buf, data, size);
    check_t c = {.root = json_loadb(buf, size, 0, NULL), .visits = 0};
    const json_t *topics = json_object_get(c.root, "topics");
    int refused = !json_is_object(c.root) || (topics && !json_is_object(topics));
    int n = deta_kafka_stats_lags(buf, size, check_visit, &c);
    FUZZ_CHECK(refused ? n == -1 && c.visits == 0 : n == c.visits);
    FUZZ_CHECK(refused || n == plain_count(topics));
    json_decref(c.root);
    free(buf);
    return 0;
}

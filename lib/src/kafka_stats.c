/*
 * kafka_stats.c - the consumer lag read from librdkafka's statistics JSON (the
 * rule is in kafka_stats.h). Pure: jansson and nothing else, no I/O.
 */
#include "kafka_stats.h"

#include <jansson.h>
#include <stdbool.h>
#include <string.h>

/* A partition key: decimal digits only, 0..INT32_MAX, no sign, no leading zero
 * (but "0" itself). */
static bool partition_of(const char *key, int32_t *out) {
    size_t n = strlen(key);
    if (n == 0 || n > 10 || (n > 1 && key[0] == '0'))
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (key[i] < '0' || key[i] > '9')
            return false;
        v = v * 10 + (key[i] - '0');
    }
    if (v > INT32_MAX)
        return false;
    *out = (int32_t)v;
    return true;
}

/* The integer member name of o; false when absent or not an integer. */
static bool int_member(const json_t *o, const char *name, int64_t *out) {
    const json_t *v = json_object_get(o, name);
    if (!json_is_integer(v))
        return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

/* Fetched by this handle: assigned to it. librdkafka's states of a partition
 * not (or no longer) fetched are none, stopping and stopped. */
static bool assigned_state(const char *state) {
    return state && strcmp(state, "none") != 0 && strcmp(state, "stopping") != 0 &&
           strcmp(state, "stopped") != 0;
}

/* The lag of one partition object by the rule of kafka_stats.h. */
static bool lag_of(const json_t *p, int64_t *lag) {
    int64_t v;
    if (!json_is_object(p))
        return false;
    const char *state = json_string_value(json_object_get(p, "fetch_state"));
    if (!assigned_state(state))
        return false;
    if (int_member(p, "consumer_lag", &v) && v >= 0) {
        *lag = v;
        return true;
    }
    int64_t committed, lo, ls, hi, end;
    if (strcmp(state, "active") != 0 || !int_member(p, "committed_offset", &committed) ||
        committed >= 0 || !int_member(p, "lo_offset", &lo) || lo < 0)
        return false;
    if (int_member(p, "ls_offset", &ls) && ls >= 0)
        end = ls;
    else if (int_member(p, "hi_offset", &hi) && hi >= 0)
        end = hi;
    else
        return false;
    if (end < lo)
        return false;
    *lag = end - lo;
    return true;
}

static int visit_topic(const char *topic, const json_t *t, deta_kafka_lag_fn visit, void *arg) {
    const json_t *parts = json_object_get(t, "partitions");
    if (!json_is_object(parts))
        return 0;
    int n = 0;
    const char *key;
    json_t *p;
    json_object_foreach((json_t *)parts, key, p) {
        deta_kafka_lag_t lag = {.topic = topic};
        if (!partition_of(key, &lag.partition) || !lag_of(p, &lag.lag))
            continue;
        if (visit)
            visit(&lag, arg);
        n++;
    }
    return n;
}

int deta_kafka_stats_lags(const char *json, size_t len, deta_kafka_lag_fn visit, void *arg) {
    if (!json)
        return -1;
    json_t *root = json_loadb(json, len, 0, NULL);
    const json_t *topics = json_object_get(root, "topics");
    if (!json_is_object(root) || (topics && !json_is_object(topics))) {
        json_decref(root);
        return -1;
    }
    int n = 0;
    const char *name;
    json_t *t;
    if (topics)
        json_object_foreach((json_t *)topics, name, t) {
            if (json_is_object(t))
                n += visit_topic(name, t, visit, arg);
        }
    json_decref(root);
    return n;
}

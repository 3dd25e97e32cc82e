/*
 * local-broker - a Kafka cluster inside one process, for machines without Kafka.
 *
 * Our machines and CI have no Kafka broker and no container engine, but
 * librdkafka ships a mock cluster (rdkafka_mock.h): real TCP listeners on
 * 127.0.0.1 that speak the Kafka protocol well enough for producers, consumer
 * groups and offset commits. This program only hosts it:
 *
 *   1. a producer handle is created that never connects anywhere: the mock
 *      cluster needs an rd_kafka_t to live in (its threads, timers and logs);
 *   2. the cluster is started with --brokers brokers, and the topics (the
 *      system's ten unless --topics names others) are created with
 *      --partitions partitions and replication min(brokers, 3). Any other
 *      topic a producer asks for is auto-created by the mock with its built-in
 *      default of 4 partitions (librdkafka 2.0.2 offers no way to change it);
 *   3. its bootstrap address, which is on ephemeral ports chosen by the mock,
 *      is written to --bootstrap-file (temporary file + rename, so a reader
 *      never sees half of it) and logged in the "local broker ready" line;
 *   4. line commands on the --control FIFO inject faults for tests:
 *        down <broker-id|all>       disconnect and refuse connections; with
 *                                   other brokers up, the partitions it led
 *                                   and the groups it coordinated move to
 *                                   them, as a real cluster's controller would
 *        up <broker-id|all>         accept connections again (leadership stays
 *                                   where it moved, until `preferred`)
 *        leader <topic|all> <partition|all> <broker-id>
 *                                   move partition leadership, as a
 *                                   reassignment or an election does
 *        preferred                  every partition and group back on its
 *                                   first broker (a preferred leader election)
 *        errors <api-key> <code> <count>
 *                                   the next <count> requests of that ApiKey
 *                                   (0 Produce, 1 Fetch, 3 Metadata, 8
 *                                   OffsetCommit, ...) fail with <code>
 *        clear                      forget injected errors, every broker up
 *      The FIFO is opened read-write so that it never reports end-of-file
 *      when a writer goes away: each `echo ... > fifo` is just more input.
 *
 * Leaders. The mock picks a random leader for each partition, hashes a group
 * to its coordinator whether that broker is up or not, and keeps no broker's
 * copy of the data apart (every replica is the same log); it never moves a
 * leader by itself. So with more than one broker this program learns the
 * leaders the mock chose (one metadata request of its own, right after the
 * topics are made: their preferred places), puts the j-th group of the
 * system's services on broker j % R + 1, remembers both, and moves them as
 * said above; when brokers come back, what was left on none that is up goes to
 * its preferred broker or the next one up. The mock makes brokers 1..R, R =
 * min(N, 3), the replicas of every partition, so leaders and coordinators move
 * only among those. A group of another name keeps the mock's hashed coordinator, and
 * a topic the mock auto-creates later is not moved.
 *
 * SIGTERM and SIGINT are blocked in every thread and read from a signalfd in
 * the same poll() as the FIFO, so shutdown is immediate and happens on the
 * main thread: the FIFO and the bootstrap file are removed (no one finds a
 * dead address), then the cluster is destroyed, then its handle. The mock keeps everything in memory: a restart
 * loses topics, messages and committed offsets, and changes the address.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "deta/log.h"
#include "deta/topics.h"
#include "deta_services.h"

#define MAX_BROKERS 32
#define MAX_PARTITIONS 1024
#define MAX_API_KEY 127      /* Kafka's ApiKeys are well below this */
#define MAX_ERROR_COUNT 100000
#define CONTROL_LINE_MAX 256
#define MAX_TOPICS 64
#define TOPIC_NAME_MAX 250

typedef struct broker_opts {
    int brokers;
    int partitions;
    const char *bootstrap_file;
    const char *control_path;
    const char *topics; /* comma-separated; NULL for the system's (deta_topics_all) */
} broker_opts_t;

/* Where each partition's leadership and each group's coordination is, and which
 * brokers are up (ids 1..brokers; index 0 unused). */
typedef struct placement {
    int brokers;
    int replicas; /* the mock's replicas of every partition: brokers 1..replicas */
    int partitions;
    int ntopics;
    char topics[MAX_TOPICS][TOPIC_NAME_MAX + 1];
    int32_t leader[MAX_TOPICS][MAX_PARTITIONS];    /* now */
    int32_t preferred[MAX_TOPICS][MAX_PARTITIONS]; /* as the mock chose them */
    int32_t coordinator[DETA_SERVICE_COUNT];
    bool up[MAX_BROKERS + 1];
} placement_t;

/* A FIFO reader: bytes read but not yet ending in a newline. */
typedef struct control_reader {
    int fd;
    char line[CONTROL_LINE_MAX];
    size_t len;
    bool overflow; /* the current line is too long: skip to its newline */
} control_reader_t;

/* ---- options ------------------------------------------------------------ */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: local-broker [--brokers N] [--partitions P] [--topics a,b,...]\n"
            "                    [--bootstrap-file PATH] [--control FIFO]\n"
            "  --brokers N          mock brokers, ids 1..N (default 1, max %d)\n"
            "  --partitions P       partitions of each created topic (default 6)\n"
            "  --topics LIST        topics to create (default: the system's ten)\n"
            "  --bootstrap-file F   write the bootstrap address to F (atomically)\n"
            "  --control FIFO       create FIFO and read commands from it:\n"
            "                       down <id|all>, up <id|all>, preferred,\n"
            "                       leader <topic|all> <partition|all> <id>,\n"
            "                       errors <api-key> <error-code> <count>, clear\n",
            MAX_BROKERS);
}

/* A whole decimal integer within [min, max]. */
static bool parse_int(const char *s, long min, long max, long *out)
{
    char *end;
    long v;

    if (s == NULL || *s == '\0')
        return false;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* 0: run; 1: --help was asked; -1: bad arguments (already reported). */
static int parse_options(int argc, char **argv, broker_opts_t *opts)
{
    static const struct option longopts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"partitions", required_argument, NULL, 'p'},
        {"topics", required_argument, NULL, 't'},
        {"bootstrap-file", required_argument, NULL, 'f'},
        {"control", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    long v;

    *opts = (broker_opts_t){.brokers = 1, .partitions = 6};
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            if (!parse_int(optarg, 1, MAX_BROKERS, &v)) {
                fprintf(stderr, "local-broker: --brokers must be 1..%d\n", MAX_BROKERS);
                return -1;
            }
            opts->brokers = (int)v;
            break;
        case 'p':
            if (!parse_int(optarg, 1, MAX_PARTITIONS, &v)) {
                fprintf(stderr, "local-broker: --partitions must be 1..%d\n", MAX_PARTITIONS);
                return -1;
            }
            opts->partitions = (int)v;
            break;
        case 't': opts->topics = optarg; break;
        case 'f': opts->bootstrap_file = optarg; break;
        case 'c': opts->control_path = optarg; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "local-broker: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    return 0;
}

static void log_init_from_env(void)
{
    deta_log_level_t level = DETA_LOG_INFO;
    const char *name = getenv("LOG_LEVEL");

    if (name != NULL && *name != '\0' && !deta_log_level_parse(name, &level))
        fprintf(stderr, "local-broker: LOG_LEVEL '%s' unknown, using info\n", name);
    deta_log_init("local-broker", level);
}

/* ---- the cluster -------------------------------------------------------- */

/* librdkafka's syslog levels onto ours. The host handle has, by design, no
 * bootstrap servers; the warning librdkafka gives about that is noise here. */
static void log_from_librdkafka(const rd_kafka_t *rk, int level, const char *fac,
                                const char *buf)
{
    deta_log_level_t ours = level <= 3 ? DETA_LOG_ERROR
                          : level == 4 ? DETA_LOG_WARN
                          : level <= 6 ? DETA_LOG_INFO
                                       : DETA_LOG_DEBUG;
    (void)rk;
    if (strcmp(fac, "CONFWARN") == 0 && strstr(buf, "bootstrap.servers") != NULL)
        ours = DETA_LOG_DEBUG;
    deta_log(ours, NULL, NULL, "librdkafka %s: %s", fac, buf);
}

/* The rd_kafka_t the mock cluster lives in: a producer that connects nowhere. */
static rd_kafka_t *host_handle_new(void)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk;

    rd_kafka_conf_set_log_cb(conf, log_from_librdkafka);
    if (rd_kafka_conf_set(conf, "client.id", "local-broker", errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
        DETA_ERROR("cannot configure the host handle: %s", errstr);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        DETA_ERROR("cannot create the host handle: %s", errstr);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* Broker id of the k-th preferred place (0-based) among n brokers. */
static int32_t preferred_broker(int k, int brokers)
{
    return (int32_t)(k % brokers) + 1;
}

static bool set_leader(rd_kafka_mock_cluster_t *mcluster, placement_t *pl, int t, int p,
                       int32_t id)
{
    rd_kafka_resp_err_t err = rd_kafka_mock_partition_set_leader(mcluster, pl->topics[t], p, id);

    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        DETA_WARN("cannot make broker %d the leader of %s [%d]: %s", (int)id, pl->topics[t], p,
                  rd_kafka_err2str(err));
        return false;
    }
    pl->leader[t][p] = id;
    return true;
}

static bool set_coordinator(rd_kafka_mock_cluster_t *mcluster, placement_t *pl, int g, int32_t id)
{
    static const deta_service_def_t services[] = DETA_SERVICES;
    rd_kafka_resp_err_t err =
        rd_kafka_mock_coordinator_set(mcluster, "group", services[g].name, id);

    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        DETA_WARN("cannot make broker %d the coordinator of group %s: %s", (int)id,
                  services[g].name, rd_kafka_err2str(err));
        return false;
    }
    pl->coordinator[g] = id;
    return true;
}

static bool create_topic(rd_kafka_mock_cluster_t *mcluster, placement_t *pl, const char *topic)
{
    int t = pl->ntopics;
    rd_kafka_resp_err_t err;

    if (t == MAX_TOPICS || strlen(topic) > TOPIC_NAME_MAX) {
        DETA_ERROR("cannot create topic %s: at most %d topics of at most %d bytes", topic,
                   MAX_TOPICS, TOPIC_NAME_MAX);
        return false;
    }
    err = rd_kafka_mock_topic_create(mcluster, topic, pl->partitions, pl->replicas);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        DETA_ERROR("cannot create topic %s: %s", topic, rd_kafka_err2str(err));
        return false;
    }
    snprintf(pl->topics[t], sizeof(pl->topics[t]), "%s", topic);
    pl->ntopics++;
    DETA_DEBUG("topic %s created: %d partitions, replication %d", topic, pl->partitions,
               pl->replicas);
    return true;
}

/* The leaders the mock chose for the topics made, from a metadata request of a
 * client of its own: the partitions' preferred places. */
static bool learn_leaders(placement_t *pl, const char *bootstrap)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err;
    rd_kafka_t *rk;
    int found = 0;

    rd_kafka_conf_set_log_cb(conf, log_from_librdkafka);
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK ||
        (rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr))) == NULL) {
        DETA_ERROR("cannot make the metadata client: %s", errstr);
        rd_kafka_conf_destroy(conf);
        return false;
    }
    if ((err = rd_kafka_metadata(rk, 1, NULL, &md, 10000)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        DETA_ERROR("cannot read the cluster's metadata: %s", rd_kafka_err2str(err));
        rd_kafka_destroy(rk);
        return false;
    }
    for (int i = 0; i < md->topic_cnt; i++)
        for (int t = 0; t < pl->ntopics; t++) {
            if (strcmp(md->topics[i].topic, pl->topics[t]) != 0)
                continue;
            for (int k = 0; k < md->topics[i].partition_cnt; k++) {
                const rd_kafka_metadata_partition_t *part = &md->topics[i].partitions[k];
                if (part->id >= 0 && part->id < pl->partitions && part->leader >= 1 &&
                    part->leader <= pl->replicas) {
                    pl->leader[t][part->id] = pl->preferred[t][part->id] = part->leader;
                    found++;
                }
            }
        }
    rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    if (found != pl->ntopics * pl->partitions) {
        DETA_ERROR("the metadata named %d leaders of %d partitions", found,
                   pl->ntopics * pl->partitions);
        return false;
    }
    return true;
}

/* The system's topics (deta_topics_all), or each non-empty name of the --topics
 * list; then, with several brokers, the services' groups on their preferred
 * coordinators. */
static bool create_topics(rd_kafka_mock_cluster_t *mcluster, placement_t *pl,
                          const broker_opts_t *opts)
{
    char *list, *name, *save = NULL;
    bool ok = true;

    for (int g = 0; g < DETA_SERVICE_COUNT && ok && pl->brokers > 1; g++)
        ok = set_coordinator(mcluster, pl, g, preferred_broker(g, pl->replicas));
    if (opts->topics == NULL) {
        for (int i = 0; i < DETA_TOPICS_COUNT && ok; i++)
            ok = create_topic(mcluster, pl, deta_topics_all[i]);
        return ok;
    }
    if ((list = strdup(opts->topics)) == NULL) {
        DETA_ERROR("out of memory");
        return false;
    }
    for (name = strtok_r(list, ", ", &save); name != NULL && ok;
         name = strtok_r(NULL, ", ", &save))
        ok = create_topic(mcluster, pl, name);
    free(list);
    return ok;
}

/* The first replica broker up after id (wrapping), other than id; 0 when none is. */
static int32_t next_up(const placement_t *pl, int32_t id)
{
    for (int k = 1; k <= pl->replicas; k++) {
        int32_t other = (int32_t)((id - 1 + k) % pl->replicas) + 1;
        if (other != id && pl->up[other])
            return other;
    }
    return 0;
}

/* What a controller does when brokers come back: every partition whose leader,
 * and every group whose coordinator, is still down goes to its preferred broker
 * if that one is up, else to the next replica up. */
static void elect_orphans(rd_kafka_mock_cluster_t *mcluster, placement_t *pl)
{
    int moved = 0;

    if (pl->brokers < 2)
        return;
    for (int t = 0; t < pl->ntopics; t++)
        for (int p = 0; p < pl->partitions; p++) {
            int32_t now = pl->leader[t][p], want = pl->preferred[t][p];
            if (pl->up[now])
                continue;
            if (!pl->up[want])
                want = next_up(pl, now);
            if (want != 0 && set_leader(mcluster, pl, t, p, want))
                moved++;
        }
    for (int g = 0; g < DETA_SERVICE_COUNT; g++) {
        int32_t now = pl->coordinator[g], want = preferred_broker(g, pl->replicas);
        if (pl->up[now])
            continue;
        if (!pl->up[want])
            want = next_up(pl, now);
        if (want != 0 && set_coordinator(mcluster, pl, g, want))
            moved++;
    }
    if (moved > 0)
        DETA_INFO("control: %d partition(s) and group(s) without a broker up moved to one", moved);
}

/* What a controller does when broker id is lost: the partitions it led and the
 * groups it coordinated go to the brokers still up (spread: each to the next
 * one up after id, in turn). */
static void fail_over(rd_kafka_mock_cluster_t *mcluster, placement_t *pl, int32_t id)
{
    int moved = 0, groups = 0;
    int32_t to;

    if ((to = next_up(pl, id)) == 0) {
        DETA_WARN("control: no other broker is up: broker %d keeps its leaders", (int)id);
        return;
    }
    for (int t = 0; t < pl->ntopics; t++)
        for (int p = 0; p < pl->partitions; p++)
            if (pl->leader[t][p] == id && set_leader(mcluster, pl, t, p, to)) {
                int32_t after = next_up(pl, to);
                moved++;
                if (after != 0)
                    to = after;
            }
    for (int g = 0; g < DETA_SERVICE_COUNT; g++)
        if (pl->coordinator[g] == id && set_coordinator(mcluster, pl, g, next_up(pl, id)))
            groups++;
    DETA_INFO("control: broker %d lost: %d partition leader(s) and %d group coordinator(s) "
              "moved to the brokers up", (int)id, moved, groups);
}

/* ---- files -------------------------------------------------------------- */

/* path gets "bootstrap\n" whole or not at all: written beside it, then renamed. */
static bool write_bootstrap_file(const char *path, const char *bootstrap)
{
    char tmp[PATH_MAX];
    FILE *f;
    bool ok;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
        DETA_ERROR("bootstrap file path too long: %s", path);
        return false;
    }
    if ((f = fopen(tmp, "w")) == NULL) {
        DETA_ERROR("cannot write %s: %s", tmp, strerror(errno));
        return false;
    }
    ok = fprintf(f, "%s\n", bootstrap) > 0;
    ok = (fclose(f) == 0) && ok;
    if (ok && rename(tmp, path) != 0) {
        DETA_ERROR("cannot rename %s to %s: %s", tmp, path, strerror(errno));
        ok = false;
    } else if (!ok) {
        DETA_ERROR("cannot write %s: %s", tmp, strerror(errno));
    }
    if (!ok)
        unlink(tmp);
    return ok;
}

/* Creates the FIFO (or reuses one left by an earlier run) and opens it
 * read-write, non-blocking: we are then always a writer too, so reads never
 * see end-of-file between two commands. -1 on error (logged). */
static int control_open(const char *path)
{
    struct stat st;
    int fd;

    if (mkfifo(path, 0600) != 0) {
        if (errno != EEXIST) {
            DETA_ERROR("cannot create control FIFO %s: %s", path, strerror(errno));
            return -1;
        }
        if (stat(path, &st) != 0 || !S_ISFIFO(st.st_mode)) {
            DETA_ERROR("control path %s exists and is not a FIFO", path);
            return -1;
        }
    }
    fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        DETA_ERROR("cannot open control FIFO %s: %s", path, strerror(errno));
    return fd;
}

/* ---- control commands --------------------------------------------------- */

/* "all" is -1 for the mock's broker functions; otherwise an id 1..brokers.
 * A missing argument (NULL) is no id. */
static bool parse_broker_id(const char *s, int brokers, int32_t *id)
{
    long v;

    if (s != NULL && strcmp(s, "all") == 0) {
        *id = -1;
        return true;
    }
    if (!parse_int(s, 1, brokers, &v))
        return false;
    *id = (int32_t)v;
    return true;
}

static void command_broker_state(rd_kafka_mock_cluster_t *mcluster, placement_t *pl, bool up,
                                 const char *arg)
{
    int32_t id;
    rd_kafka_resp_err_t err;

    if (arg == NULL || !parse_broker_id(arg, pl->brokers, &id)) {
        DETA_WARN("control: %s needs a broker id 1..%d or 'all'", up ? "up" : "down",
                  pl->brokers);
        return;
    }
    err = up ? rd_kafka_mock_broker_set_up(mcluster, id)
             : rd_kafka_mock_broker_set_down(mcluster, id);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        DETA_WARN("control: %s %s failed: %s", up ? "up" : "down", arg, rd_kafka_err2str(err));
        return;
    }
    for (int32_t b = 1; b <= pl->brokers; b++)
        if (id == -1 || b == id)
            pl->up[b] = up;
    DETA_INFO("control: broker %s %s", arg, up ? "up" : "down");
    if (!up && id != -1 && pl->brokers > 1)
        fail_over(mcluster, pl, id);
    else if (up)
        elect_orphans(mcluster, pl);
}

/* leader <topic|all> <partition|all> <broker-id> */
static void command_leader(rd_kafka_mock_cluster_t *mcluster, placement_t *pl, char *const *args,
                           int nargs)
{
    int32_t id;
    long part = -1;
    int moved = 0;

    if (nargs != 3 || !parse_broker_id(args[2], pl->replicas, &id) || id == -1 ||
        (strcmp(args[1], "all") != 0 && !parse_int(args[1], 0, pl->partitions - 1, &part))) {
        DETA_WARN("control: usage: leader <topic|all> <partition 0..%d|all> <broker-id 1..%d, "
                  "a replica>",
                  pl->partitions - 1, pl->replicas);
        return;
    }
    for (int t = 0; t < pl->ntopics; t++) {
        if (strcmp(args[0], "all") != 0 && strcmp(args[0], pl->topics[t]) != 0)
            continue;
        for (int p = 0; p < pl->partitions; p++)
            if ((part == -1 || p == part) && set_leader(mcluster, pl, t, p, id))
                moved++;
    }
    if (moved == 0)
        DETA_WARN("control: leader: no partition of %s matched", args[0]);
    else
        DETA_INFO("control: broker %d leads %d more partition(s)", (int)id, moved);
}

/* Every partition and group back on its preferred broker, where that one is up. */
static void command_preferred(rd_kafka_mock_cluster_t *mcluster, placement_t *pl)
{
    int moved = 0;

    for (int t = 0; t < pl->ntopics; t++)
        for (int p = 0; p < pl->partitions; p++) {
            int32_t want = pl->preferred[t][p];
            if (pl->leader[t][p] != want && pl->up[want] && set_leader(mcluster, pl, t, p, want))
                moved++;
        }
    for (int g = 0; g < DETA_SERVICE_COUNT; g++) {
        int32_t want = preferred_broker(g, pl->replicas);
        if (pl->coordinator[g] != want && pl->up[want] && set_coordinator(mcluster, pl, g, want))
            moved++;
    }
    DETA_INFO("control: preferred leaders: %d partition(s) and group(s) moved back", moved);
}

/* errors <api-key> <error-code> <count>: pushed one at a time, so that any
 * count goes through the same variadic call. */
static void command_errors(rd_kafka_mock_cluster_t *mcluster, char *const *args, int nargs)
{
    long api_key, code, count;

    if (nargs != 3 || !parse_int(args[0], 0, MAX_API_KEY, &api_key) ||
        !parse_int(args[1], -200, 1000, &code) || code == 0 ||
        !parse_int(args[2], 1, MAX_ERROR_COUNT, &count)) {
        DETA_WARN("control: usage: errors <api-key 0..%d> <error-code, not 0> <count 1..%d>",
                  MAX_API_KEY, MAX_ERROR_COUNT);
        return;
    }
    for (long i = 0; i < count; i++)
        rd_kafka_mock_push_request_errors(mcluster, (int16_t)api_key, 1,
                                          (rd_kafka_resp_err_t)code);
    DETA_INFO("control: the next %ld requests of ApiKey %ld fail with %ld (%s)", count,
              api_key, code, rd_kafka_err2name((rd_kafka_resp_err_t)code));
}

static void command_clear(rd_kafka_mock_cluster_t *mcluster, placement_t *pl)
{
    for (int16_t key = 0; key <= MAX_API_KEY; key++)
        rd_kafka_mock_clear_request_errors(mcluster, key);
    rd_kafka_mock_broker_set_up(mcluster, -1);
    for (int32_t b = 1; b <= pl->brokers; b++)
        pl->up[b] = true;
    DETA_INFO("control: injected errors cleared, every broker up");
    elect_orphans(mcluster, pl);
}

/* Splits line into at most max words in place; returns how many. */
static int split_words(char *line, char **words, int max)
{
    char *save = NULL, *w;
    int n = 0;

    for (w = strtok_r(line, " \t\r", &save); w != NULL; w = strtok_r(NULL, " \t\r", &save)) {
        if (n == max)
            return max + 1; /* too many */
        words[n++] = w;
    }
    return n;
}

static void control_execute(rd_kafka_mock_cluster_t *mcluster, char *line, placement_t *pl)
{
    char *w[5];
    int n = split_words(line, w, 4);

    if (n == 0)
        return;
    if (strcmp(w[0], "down") == 0 || strcmp(w[0], "up") == 0)
        command_broker_state(mcluster, pl, w[0][0] == 'u', n == 2 ? w[1] : NULL);
    else if (strcmp(w[0], "errors") == 0)
        command_errors(mcluster, w + 1, n > 4 ? 4 : n - 1);
    else if (strcmp(w[0], "leader") == 0)
        command_leader(mcluster, pl, w + 1, n > 4 ? 4 : n - 1);
    else if (strcmp(w[0], "preferred") == 0 && n == 1)
        command_preferred(mcluster, pl);
    else if (strcmp(w[0], "clear") == 0 && n == 1)
        command_clear(mcluster, pl);
    else
        DETA_WARN("control: unknown or malformed command '%s' (down <id|all>, up <id|all>, "
                  "leader <topic|all> <partition|all> <id>, preferred, "
                  "errors <api-key> <code> <count>, clear)", w[0]);
}

/* One byte of FIFO input: a newline completes a command. */
static void control_feed(control_reader_t *r, rd_kafka_mock_cluster_t *mcluster, char c,
                         placement_t *pl)
{
    if (c == '\n') {
        if (r->overflow)
            DETA_WARN("control: command longer than %d bytes ignored", CONTROL_LINE_MAX - 1);
        else {
            r->line[r->len] = '\0';
            if (r->line[strspn(r->line, " \t\r")] != '\0') { /* blank lines are no command */
                DETA_INFO("control: command '%s'", r->line);
                control_execute(mcluster, r->line, pl);
            }
        }
        r->len = 0;
        r->overflow = false;
    } else if (r->len + 1 >= sizeof(r->line)) {
        r->overflow = true;
    } else if (!r->overflow) {
        r->line[r->len++] = (c >= 0x20 && c < 0x7f) || c == '\t' ? c : '?';
    }
}

/* Reads whatever is buffered in the FIFO and runs each complete line. */
static void control_drain(control_reader_t *r, rd_kafka_mock_cluster_t *mcluster, placement_t *pl)
{
    char buf[512];
    ssize_t n;

    while ((n = read(r->fd, buf, sizeof(buf))) > 0)
        for (ssize_t i = 0; i < n; i++)
            control_feed(r, mcluster, buf[i], pl);
    if (n < 0 && errno != EAGAIN && errno != EINTR)
        DETA_WARN("control: read failed: %s", strerror(errno));
}

/* ---- lifetime ----------------------------------------------------------- */

/* Blocks SIGTERM/SIGINT in this thread (and so in every thread created
 * after) and returns a descriptor that becomes readable when one arrives. */
static int shutdown_signals_fd(void)
{
    sigset_t set;
    int fd;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, NULL) != 0)
        return -1;
    fd = signalfd(-1, &set, SFD_CLOEXEC);
    if (fd < 0)
        DETA_ERROR("signalfd: %s", strerror(errno));
    return fd;
}

/* Until SIGTERM/SIGINT: runs control commands as they come. */
static void serve(rd_kafka_mock_cluster_t *mcluster, int sig_fd, control_reader_t *ctl,
                  placement_t *pl)
{
    struct pollfd fds[2] = {{.fd = sig_fd, .events = POLLIN}, {.fd = ctl->fd, .events = POLLIN}};
    nfds_t nfds = ctl->fd >= 0 ? 2 : 1;
    struct signalfd_siginfo si;

    for (;;) {
        if (poll(fds, nfds, -1) < 0) {
            if (errno == EINTR)
                continue;
            DETA_ERROR("poll: %s", strerror(errno));
            return;
        }
        if (fds[0].revents & POLLIN) {
            if (read(sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                DETA_INFO("signal %u received, stopping", si.ssi_signo);
            return;
        }
        if (nfds == 2 && (fds[1].revents & POLLIN))
            control_drain(ctl, mcluster, pl);
    }
}

/* Starts the cluster, announces it, serves until a signal; 0 on a clean run. */
static int run(const broker_opts_t *opts, int sig_fd)
{
    static placement_t pl; /* 256 KiB of leaders: not on the stack */
    control_reader_t ctl = {.fd = -1};
    rd_kafka_mock_cluster_t *mcluster = NULL;
    rd_kafka_t *rk;
    const char *bootstrap;
    int rc = 1;

    if ((rk = host_handle_new()) == NULL)
        return 1;
    if ((mcluster = rd_kafka_mock_cluster_new(rk, opts->brokers)) == NULL) {
        DETA_ERROR("cannot start the mock cluster");
        goto out;
    }
    bootstrap = rd_kafka_mock_cluster_bootstraps(mcluster);
    pl.brokers = opts->brokers;
    pl.replicas = opts->brokers < 3 ? opts->brokers : 3;
    pl.partitions = opts->partitions;
    for (int b = 1; b <= opts->brokers; b++)
        pl.up[b] = true;
    if (!create_topics(mcluster, &pl, opts) ||
        (opts->brokers > 1 && !learn_leaders(&pl, bootstrap)))
        goto out;
    if (opts->control_path != NULL && (ctl.fd = control_open(opts->control_path)) < 0)
        goto out;
    if (opts->bootstrap_file != NULL && !write_bootstrap_file(opts->bootstrap_file, bootstrap))
        goto out;

    /* deta_log has no extra fields: the address goes into the message. */
    DETA_INFO("local broker ready; bootstrap %s (%d broker(s), %d partitions per topic)",
              bootstrap, opts->brokers, opts->partitions);
    serve(mcluster, sig_fd, &ctl, &pl);
    rc = 0;
out:
    if (ctl.fd >= 0) {
        close(ctl.fd);
        unlink(opts->control_path);
    }
    if (opts->bootstrap_file != NULL)
        unlink(opts->bootstrap_file);
    if (mcluster != NULL)
        rd_kafka_mock_cluster_destroy(mcluster);
    rd_kafka_destroy(rk);
    if (rc == 0)
        DETA_INFO("local broker stopped");
    return rc;
}

int main(int argc, char **argv)
{
    broker_opts_t opts;
    int sig_fd, rc;

    if ((rc = parse_options(argc, argv, &opts)) != 0)
        return rc > 0 ? 0 : 2;
    log_init_from_env();
    if ((sig_fd = shutdown_signals_fd()) < 0)
        return 1;
    rc = run(&opts, sig_fd);
    close(sig_fd);
    return rc;
}

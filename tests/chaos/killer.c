/*
 * killer.c - the chaos run's fault injector: kill -9 at random, start again.
 *
 * One thread, so faults never overlap: wait a random CHAOS_KILL_MIN_MS..MAX_MS,
 * `stack.sh kill <part>` for a random part of CHAOS_TARGETS (SIGKILL; for
 * Postgres the postmaster and all its processes), wait CHAOS_DOWN_MIN_MS..MAX_MS,
 * `stack.sh start <part>` (which waits until it is healthy; Postgres runs crash
 * recovery). CHAOS_GRACEFUL percent of the faults are a `stack.sh stop`
 * (SIGTERM: the graceful shutdown; Postgres's fast shutdown) instead of a kill.
 * The target "broker" takes the local broker's brokers down and up again
 * (`stack.sh broker down all` / `up all`: connections refused, data kept), as
 * killing it would lose every topic. The target "one-broker" takes one broker
 * of the local cluster (KAFKA_BROKERS of them; chosen at random) down: the
 * partitions it led and the groups it coordinated move to the others, as a
 * controller would move them; then it comes back and the leaders return to
 * their preferred brokers (`stack.sh broker down <id>`, `up <id>`,
 * `preferred`): two leader moves per fault. Its random numbers come from CHAOS_SEED
 * too, so a seed gives the same sequence of targets and pauses.
 *
 * After every restart it asks `stack.sh status` whether anything else stopped:
 * a part that died without being killed (a service that crashed because Postgres
 * or Redis went away, say) is a violation of its own, and is started again so
 * that the run can go on. A restart that fails is a violation too.
 *
 * stack.sh is run with posix_spawn, its output appended to CHAOS_STACK_LOG (or
 * read through a pipe for `status`); it inherits the environment, so it acts on
 * the same STACK_DIR with the same settings as the stack that chaos.sh started.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chaos.h"

extern char **environ;

#define HEALTHY_PATIENCE_S 120.0

struct chaos_killer {
    const chaos_settings_t *s;
    double started_at;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    uint64_t rng;
    long kills[CHAOS_MAX_TARGETS];
    long stops[CHAOS_MAX_TARGETS];
    long failed_restarts;
    long found_dead;
};

/* ---- running stack.sh ---- */

static char *read_all(int fd) {
    size_t len = 0, cap = 4096;
    char *buf = malloc(cap);
    for (ssize_t n; buf; len += (size_t)n) {
        if (cap - len < 1024) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
        }
        n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR) {
            n = 0;
            continue;
        }
        if (n <= 0)
            break;
    }
    if (buf)
        buf[len] = '\0';
    return buf;
}

int chaos_stack(const chaos_settings_t *s, const char *const *args, char **out) {
    const char *argv[16] = {s->stack_sh};
    int argc = 1;
    for (; args[argc - 1] && argc < 15; argc++)
        argv[argc] = args[argc - 1];
    argv[argc] = NULL;

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    int pipefd[2] = {-1, -1};
    if (out && pipe2(pipefd, O_CLOEXEC) == 0) {
        posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
    } else {
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, s->stack_log,
                                         O_WRONLY | O_CREAT | O_APPEND, 0644);
    }
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, s->stack_log,
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, s->stack_sh, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    if (rc != 0) {
        if (pipefd[0] >= 0)
            close(pipefd[0]);
        fprintf(stderr, "chaos: cannot run %s: %s\n", s->stack_sh, strerror(rc));
        return -1;
    }
    if (out) {
        *out = pipefd[0] >= 0 ? read_all(pipefd[0]) : NULL;
        if (pipefd[0] >= 0)
            close(pipefd[0]);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static bool stack_do(const chaos_settings_t *s, const char *cmd, const char *part) {
    const char *args[] = {cmd, part, NULL};
    return chaos_stack(s, args, NULL) == 0;
}

/* ---- the parts' state ---- */

/* Calls fn for every part `stack.sh status` lists, with its state and health. */
static bool each_part(const chaos_settings_t *s,
                      void (*fn)(const char *part, bool running, bool up, void *opaque),
                      void *opaque) {
    const char *args[] = {"status", NULL};
    char *text = NULL;
    if (chaos_stack(s, args, &text) != 0 || !text) {
        free(text);
        return false;
    }
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char part[64], pid[32], port[32], state[32], health[32];
        if (sscanf(line, "%63s %31s %31s %31s %31s", part, pid, port, state, health) != 5 ||
            strcmp(part, "PART") == 0)
            continue;
        fn(part, strcmp(state, "running") == 0, strcmp(health, "UP") == 0, opaque);
    }
    free(text);
    return true;
}

typedef struct revive {
    chaos_killer_t *k;
    const char *killed; /* the part the killer itself took down, or NULL */
} revive_t;

static void revive_if_dead(const char *part, bool running, bool up, void *opaque) {
    (void)up;
    revive_t *r = opaque;
    if (running || (r->killed && strcmp(part, r->killed) == 0))
        return;
    r->k->found_dead++;
    chaos_violation("part died without being killed",
                    "%s was found stopped (see its log in the stack's logs/)", part);
    printf("chaos: %s was found stopped: starting it again\n", part);
    if (!stack_do(r->k->s, "start", part)) {
        r->k->failed_restarts++;
        chaos_violation("restart failed", "%s could not be started again", part);
    }
}

/* ---- the thread ---- */

/* Sleeps up to ms, in slices, until asked to stop; false when asked. */
static bool nap(chaos_killer_t *k, long ms) {
    for (; ms > 0; ms -= 100) {
        if (atomic_load(&k->stop))
            return false;
        chaos_sleep_ms(ms < 100 ? ms : 100);
    }
    return !atomic_load(&k->stop);
}

/* The broker's outage: its brokers refuse connections, then come back. */
static bool broker_outage(const chaos_settings_t *s, long down) {
    const char *off[] = {"broker", "down", "all", NULL}, *on[] = {"broker", "up", "all", NULL};
    bool ok = chaos_stack(s, off, NULL) == 0;
    chaos_sleep_ms(down);
    return chaos_stack(s, on, NULL) == 0 && ok;
}

/* One broker of several lost, then back, its leadership returned to it. */
static bool one_broker_outage(chaos_killer_t *k, long down, long *id) {
    const chaos_settings_t *s = k->s;
    char which[16];
    *id = chaos_rand_between(&k->rng, 1, s->brokers);
    snprintf(which, sizeof which, "%ld", *id);
    const char *off[] = {"broker", "down", which, NULL}, *on[] = {"broker", "up", which, NULL};
    const char *back[] = {"broker", "preferred", NULL};
    bool ok = chaos_stack(s, off, NULL) == 0;
    chaos_sleep_ms(down);
    ok = chaos_stack(s, on, NULL) == 0 && ok;
    return chaos_stack(s, back, NULL) == 0 && ok;
}

static void strike(chaos_killer_t *k) {
    const chaos_settings_t *s = k->s;
    int t = (int)chaos_rand_between(&k->rng, 0, s->ntargets - 1);
    const char *part = s->targets[t];
    long down = chaos_rand_between(&k->rng, s->down_min_ms, s->down_max_ms);
    bool graceful = chaos_rand_between(&k->rng, 1, 100) <= s->graceful_percent;
    double t0 = chaos_now();
    if (strcmp(part, "one-broker") == 0) {
        long id;
        if (!one_broker_outage(k, down, &id))
            chaos_violation("broker outage failed", "stack.sh broker down/up/preferred failed");
        k->kills[t]++;
        printf("chaos: broker %ld of %ld down, back after %.1f s\n", id, s->brokers,
               chaos_now() - t0);
        return;
    }
    if (strcmp(part, "broker") == 0) {
        if (!broker_outage(s, down))
            chaos_violation("broker outage failed", "stack.sh broker down/up all failed");
        k->kills[t]++;
        printf("chaos: broker down, back after %.1f s\n", chaos_now() - t0);
        return;
    }
    if (!stack_do(s, graceful ? "stop" : "kill", part)) {
        chaos_violation("kill failed", "stack.sh %s %s failed", graceful ? "stop" : "kill", part);
        return;
    }
    (graceful ? k->stops : k->kills)[t]++;
    chaos_sleep_ms(down);
    if (!stack_do(s, "start", part)) {
        k->failed_restarts++;
        chaos_violation("restart failed", "stack.sh start %s failed after a %s", part,
                        graceful ? "stop" : "kill");
    }
    printf("chaos: %s %s, back after %.1f s\n", graceful ? "stopped" : "killed", part,
           chaos_now() - t0);
    revive_t r = {k, NULL};
    each_part(s, revive_if_dead, &r);
}

static void *killer_main(void *arg) {
    chaos_killer_t *k = arg;
    while (nap(k, chaos_rand_between(&k->rng, k->s->kill_min_ms, k->s->kill_max_ms)))
        strike(k);
    return NULL;
}

chaos_killer_t *chaos_killer_start(const chaos_settings_t *s) {
    chaos_killer_t *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->s = s;
    k->started_at = chaos_now();
    k->rng = s->seed ^ UINT64_C(0x6b696c6c6572); /* its own stream of the same seed */
    atomic_init(&k->stop, false);
    if (s->ntargets > 0 && pthread_create(&k->thread, NULL, killer_main, k) == 0)
        k->started = true;
    return k;
}

/* ---- the end of the faults ---- */

typedef struct health {
    int parts, down;
    char first_down[64];
} health_t;

static void count_health(const char *part, bool running, bool up, void *opaque) {
    health_t *h = opaque;
    h->parts++;
    if (running && up)
        return;
    if (h->down++ == 0)
        snprintf(h->first_down, sizeof h->first_down, "%s", part);
}

/* Every part running (found-dead ones started again) and healthy, within a
 * bound; a violation otherwise. */
static void await_healthy(chaos_killer_t *k) {
    revive_t r = {k, NULL};
    each_part(k->s, revive_if_dead, &r);
    double until = chaos_now() + HEALTHY_PATIENCE_S;
    health_t h;
    do {
        memset(&h, 0, sizeof h);
        if (each_part(k->s, count_health, &h) && h.parts > 0 && h.down == 0)
            return;
        chaos_sleep_ms(1000);
    } while (chaos_now() < until);
    chaos_violation("not healthy after the faults", "%d part(s) not UP after %.0f s, first %s",
                    h.down, HEALTHY_PATIENCE_S, h.first_down);
}

void chaos_killer_finish(chaos_killer_t *k) {
    if (!k)
        return;
    double more = k->started_at + (double)k->s->fault_s - chaos_now();
    if (more > 0 && k->started) {
        printf("chaos: faults go on for %.0f s more (CHAOS_FAULT_S)\n", more);
        chaos_sleep_ms((long)(more * 1000));
    }
    atomic_store(&k->stop, true);
    if (k->started)
        pthread_join(k->thread, NULL);
    await_healthy(k);
    long kills = 0, stops = 0;
    printf("chaos: faults (kills+stops):");
    for (int t = 0; t < k->s->ntargets; t++) {
        printf(" %s %ld+%ld,", k->s->targets[t], k->kills[t], k->stops[t]);
        kills += k->kills[t];
        stops += k->stops[t];
    }
    printf(" %ld kills and %ld stops in all; %ld part(s) found dead unkilled, %ld failed "
           "restart(s)\n",
           kills, stops, k->found_dead, k->failed_restarts);
    free(k);
}

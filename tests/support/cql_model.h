/*
 * cql_model.h - the tests' Cassandra: the model CQL server (cql_model_server.py,
 * run with /usr/bin/python3) as a child of the test, or a real Cassandra when
 * TEST_CASSANDRA_CONTACT_POINTS is set (scripts/test-cassandra.sh sets it from
 * CASSANDRA_CONTACT_POINTS). Everything fails the running cmocka test with a
 * clear message rather than returning errors.
 */
#ifndef DETA_TS_CQL_MODEL_H
#define DETA_TS_CQL_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct ts_cql {
    bool real;               /* a real Cassandra: no control port, no request log */
    pid_t pid;               /* the model server */
    char contact_points[256];
    int port;                /* CQL; 0 with a real Cassandra (contact points carry it) */
    int control_port;
    char dir[256];           /* the model's files (ports, its output) */
    char log[512];           /* its request log, "" when none */
} ts_cql_t;

/* A real Cassandra is asked for (TEST_CASSANDRA_CONTACT_POINTS). */
bool ts_cql_real(void);

/* The model server (or the real Cassandra), its request log in log_path when not
 * NULL (the model only); extra are more of its options, NULL-ended (or NULL). */
void ts_cql_start(ts_cql_t *c, const char *log_path, const char *const *extra);
void ts_cql_stop(ts_cql_t *c);

/* Sets CASSANDRA_CONTACT_POINTS, CASSANDRA_PORT and CASSANDRA_KEYSPACE in this
 * process's environment for c, keyspace `keyspace`. */
void ts_cql_setenv(const ts_cql_t *c, const char *keyspace);

/* A command line to the model's control port (see cql_model_server.py); its
 * answer into reply. Fails the test with a real Cassandra. */
void ts_cql_control(const ts_cql_t *c, const char *line, char *reply, size_t size);
/* The control's `count` as a number. */
long ts_cql_count(const ts_cql_t *c, const char *table_and_filter);

#endif

/*
 * settings.h - query-api's own settings, read once at start and validated, each
 * error naming its variable.
 *
 *   QUERY_API_CONSUMER_WORKERS  2     read-model events applied concurrently (1..32;
 *                                     one order's in order; each worker batches its
 *                                     own queue, so more workers, smaller batches)
 *   QUERY_API_BATCH_WAIT_MS     20    how long a worker with fewer than a batch's
 *                                     events queued waits for more before it applies
 *                                     them in one transaction (0..1000; 0: never)
 *   QUERY_STORE                 postgres  where the read model is kept: postgres
 *                                     (database delivery_query, read_model_pg.c) or
 *                                     cassandra (read_model_cql.c). The dead letters and
 *                                     the consumer's inbox claims stay in Postgres
 *                                     either way (docs/read-model-cassandra.md).
 *   QUERY_CONSOLE_DIR           none  the web console's files (docs/console.md), served at
 *                                     "/"; unset or empty: no console. When set it must
 *                                     be a directory.
 *   QUERY_CONSOLE_ORDER_URL     none  order-service's and inventory-service's origins
 *   QUERY_CONSOLE_INVENTORY_URL none  as the browser reaches them (http(s)://host[:port],
 *                                     deta/http_cors.h's syntax), handed to the page in
 *                                     GET /console-config.json and allowed in the page's
 *                                     connect-src; unset or empty: null (not configured).
 *
 * With QUERY_STORE=cassandra (ignored otherwise):
 *   CASSANDRA_CONTACT_POINTS    none  required: host[:port],host[:port]...
 *   CASSANDRA_PORT              9042  for contact points without a port
 *   CASSANDRA_USERNAME / CASSANDRA_PASSWORD   optional, both or neither
 *                                     (PasswordAuthenticator); the password is never
 *                                     logged nor echoed in an error; it may come from a
 *                                     file, CASSANDRA_PASSWORD_FILE (deta/config.h)
 *   CASSANDRA_KEYSPACE          delivery_query  created on start when missing; a
 *                                     lower-case identifier (a-z, 0-9, _, at most 48)
 *   CASSANDRA_LOCAL_DC          dc1   the data center this instance prefers, and the
 *                                     one NetworkTopologyStrategy replicates to
 *   CASSANDRA_REPLICATION_CLASS SimpleStrategy  or NetworkTopologyStrategy: the
 *                                     keyspace's, when query-api creates it
 *   CASSANDRA_REPLICATION_FACTOR 1    1..32; for NetworkTopologyStrategy, the local
 *                                     data center's
 *   CASSANDRA_READ_CONSISTENCY  LOCAL_QUORUM   every read
 *   CASSANDRA_WRITE_CONSISTENCY LOCAL_QUORUM   every write (and a lightweight
 *                                     transaction's commit)
 *   CASSANDRA_SERIAL_CONSISTENCY LOCAL_SERIAL  the lightweight transactions' Paxos
 *                                     (SERIAL or LOCAL_SERIAL)
 *   CASSANDRA_REQUEST_TIMEOUT_MS 12000 a request's bound (100..600000)
 *
 * The live streams (docs/console.md, "Live updates"; stream/hub.h):
 *   QUERY_STREAM_MAX            256   open streams per instance (1..10000); the next
 *                                     gets 503 with Retry-After: 5
 *   QUERY_STREAM_BUFFER_BYTES   262144  bytes that may wait for one client before it
 *                                     is dropped (4096..67108864)
 *   QUERY_STREAM_HEARTBEAT_S    15    a comment after this many quiet seconds (1..300)
 *   QUERY_STREAM_GAP_MS         10000 how long the feed reader waits for a missing
 *                                     sequence number while a transaction that may
 *                                     hold it is still open, before giving it up
 *                                     (0..60000; one that rolled back is skipped
 *                                     as soon as that is certain)
 *   QUERY_STREAM_BACKLOG_MAX    10000 a resume point further behind gets a reset
 *                                     (1..1000000)
 *   QUERY_STREAM_RETENTION_HOURS 24   feed rows are purged after this (1..8760)
 *
 * Only query-api reads these, so the Cassandra password never sits in another
 * service's memory. The dead-letter administration's token is libdeta's
 * OPERATOR_TOKEN (deta/config.h, deta/auth.h).
 */
#ifndef QUERY_SETTINGS_H
#define QUERY_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>

#include "deta/err.h"

typedef enum query_store {
    QUERY_STORE_POSTGRES = 0,
    QUERY_STORE_CASSANDRA,
} query_store_t;

#define QUERY_CASSANDRA_KEYSPACE_MAX 48 /* Cassandra's longest keyspace name */

/* The Cassandra store's settings (QUERY_STORE=cassandra). Consistencies are
 * deta_cql_consistency_t values (deta/cql.h). */
typedef struct query_cassandra_settings {
    char contact_points[512];
    int port;
    char username[128]; /* "" when none */
    char password[256]; /* "" when none; never logged */
    char keyspace[QUERY_CASSANDRA_KEYSPACE_MAX + 1];
    char local_dc[65];
    bool network_topology; /* NetworkTopologyStrategy, else SimpleStrategy */
    int replication_factor;
    int read_consistency;
    int write_consistency;
    int serial_consistency;
    int request_timeout_ms;
} query_cassandra_settings_t;

typedef struct query_stream_settings {
    int max;               /* QUERY_STREAM_MAX */
    long buffer_bytes;     /* QUERY_STREAM_BUFFER_BYTES */
    int heartbeat_s;       /* QUERY_STREAM_HEARTBEAT_S */
    long gap_ms;           /* QUERY_STREAM_GAP_MS */
    long backlog_max;      /* QUERY_STREAM_BACKLOG_MAX */
    long retention_hours;  /* QUERY_STREAM_RETENTION_HOURS */
} query_stream_settings_t;
#define QUERY_CONSOLE_DIR_MAX 1024
#define QUERY_CONSOLE_URL_MAX 255

/* The console's settings (QUERY_CONSOLE_*); "" when not set. */
typedef struct query_console_settings {
    char dir[QUERY_CONSOLE_DIR_MAX + 1];
    char order_url[QUERY_CONSOLE_URL_MAX + 1];
    char inventory_url[QUERY_CONSOLE_URL_MAX + 1];
} query_console_settings_t;

typedef struct query_settings {
    int consumer_workers;                        /* QUERY_API_CONSUMER_WORKERS */
    int batch_wait_ms;                           /* QUERY_API_BATCH_WAIT_MS */
    query_store_t store;                         /* QUERY_STORE */
    query_cassandra_settings_t cassandra;        /* CASSANDRA_*, when store is cassandra */
    query_stream_settings_t stream;              /* QUERY_STREAM_* */
    query_console_settings_t console;            /* QUERY_CONSOLE_* */
} query_settings_t;

/* Reads and validates the settings above. DETA_ERR_INVALID with the variable's
 * name in errstr (never the password's value) when a value is malformed or out of
 * range; the password is then left empty. */
deta_err_t query_settings_load(query_settings_t *s, char *errstr, size_t errsize);

/* The Cassandra settings alone, as query_settings_load reads them (for tests and
 * tools that open the Cassandra store without the rest). */
deta_err_t query_cassandra_settings_load(query_cassandra_settings_t *c, char *errstr,
                                         size_t errsize);

/* The console's settings alone, as query_settings_load reads them. */
deta_err_t query_console_settings_load(query_console_settings_t *c, char *errstr,
                                       size_t errsize);

/* The Content-Security-Policy of the console's files (docs/console.md): connect-src
 * 'self' and the two origins that are set. Pure; false when size is too small. */
bool query_console_csp(const query_console_settings_t *c, char *buf, size_t size);

#endif

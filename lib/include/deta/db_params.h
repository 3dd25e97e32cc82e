/*
 * db_params.h - what a Postgres connection is opened with: libpq's keywords
 * and values (PQconnectdbParams), built from the settings by a pure function,
 * so that a unit test can see that each setting reaches the connection.
 *
 * Every value is a copy held in the struct, and keys/vals point into it: a
 * deta_db_params_t must stay where deta_db_params_init put it (never copied).
 * The TLS keywords (sslmode, sslrootcert, sslcert, sslkey) are always passed
 * explicitly when set, so that a service's transport is what its settings say
 * (config.h: PGSSLMODE and the rest), whatever libpq would have defaulted to.
 */
#ifndef DETA_DB_PARAMS_H
#define DETA_DB_PARAMS_H

#include "deta/config.h"

#define DETA_DB_PARAMS_MAX 24 /* keywords, the terminating NULL included */

typedef struct deta_db_params {
    char host[256];
    char port[16];
    char user[64];
    char password[128];
    char dbname[64];
    char appname[64];
    char options[384]; /* the session's settings (db.c: statement and lock timeouts, ...) */
    char sslmode[16];
    char sslrootcert[256];
    char sslcert[256];
    char sslkey[256];
    const char *keys[DETA_DB_PARAMS_MAX]; /* NULL-terminated */
    const char *vals[DETA_DB_PARAMS_MAX];
} deta_db_params_t;

/* Fills p from cfg: the address, the credentials, the database, the
 * application name (the service), the session's settings, the keepalives and
 * the TLS settings that are set. */
void deta_db_params_init(deta_db_params_t *p, const deta_config_t *cfg);
/* The same for a logical replication connection to the same database (the
 * outbox relay's stream): replication=database, and of the session's settings
 * only the TCP keepalives and timeout. */
void deta_db_params_init_replication(deta_db_params_t *p, const deta_config_t *cfg);
/* The value passed for keyword key, or NULL when it is not passed. */
const char *deta_db_params_get(const deta_db_params_t *p, const char *key);

#endif

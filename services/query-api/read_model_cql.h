/*
 * read_model_cql.h - private to query-api's Cassandra store (read_model_cql.c):
 * the text of its schema (read_model_cql_schema.c) and a hook for tests.
 */
#ifndef QUERY_READ_MODEL_CQL_H
#define QUERY_READ_MODEL_CQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deta/cql.h"
#include "read_model.h"
#include "settings.h"

/* schema_meta's version once every statement below has run (2: order_view's
 * cancelled_at and refunded_amount). */
#define READ_MODEL_CQL_SCHEMA_VERSION 2

/* How many schema statements there are: the keyspace's, then the tables'. */
size_t read_model_cql_ddl_count(void);
/* Statement i (0: CREATE KEYSPACE with s's replication) into out; false when i
 * is past the last or out is too small. */
bool read_model_cql_ddl(size_t i, const query_cassandra_settings_t *s, char *out,
                        size_t outsize);

/* The clock first_seen_at is taken from (microseconds since the epoch); NULL
 * restores the wall clock. For tests whose expected statements name instants. */
void read_model_cql_set_clock(int64_t (*now_us)(void));
/* Rows per page of the stats scan (5000; 0 restores it), so that a test walks
 * several pages without thousands of orders. */
void read_model_cql_set_stats_page(int32_t rows);

/* The counters of the calling thread's connection of rm's pool (round trips and
 * bytes, for the docs' figures); false when rm is not the Cassandra store. */
bool read_model_cql_client_stats(read_model_t *rm, deta_cql_stats_t *out);

#endif

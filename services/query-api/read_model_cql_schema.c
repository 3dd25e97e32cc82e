/*
 * read_model_cql_schema.c - the CQL text of the Cassandra read model's schema
 * (docs/read-model-cassandra.md says why each table is shaped as it is).
 *
 * Every statement is idempotent (IF NOT EXISTS; an ALTER TABLE ... ADD of a
 * column that exists is taken as done), so a start that stopped half way, or two
 * instances starting at once, simply run them again. read_model_cql.c
 * sends them one at a time and waits for schema agreement after each; the last
 * step writes schema_meta, which is how read_model_ping knows the schema is whole.
 * A change of schema gets a new READ_MODEL_CQL_SCHEMA_VERSION and statements that
 * bring an older keyspace to it.
 */
#include "read_model_cql.h"

#include <stdio.h>

/* The tables, "%s" standing for the keyspace. Instants are bigint microseconds
 * since the epoch (Cassandra's timestamp has milliseconds only, and the view's
 * instants are microsecond-exact); amounts are the domain's exact text. */
static const char *const tables[] = {
    /* one row per order: the fold of its events (query_view_merge), written with
     * lightweight transactions conditioned on version */
    "CREATE TABLE IF NOT EXISTS %s.order_view ("
    "order_id uuid PRIMARY KEY, customer_id text, total_amount text, currency text, "
    "status text, status_rank int, created_at bigint, updated_at bigint, "
    "reservation_id text, payment_id text, delivery_id text, driver_id text, "
    "driver_name text, estimated_delivery_at bigint, eta_calculated_at bigint, "
    "delivered_at bigint, failure_reason text, correlation_id text, cancelled_at bigint, "
    "refunded_amount text, first_seen_at bigint, version bigint)",
    /* schema 2, the cancellation: a keyspace made by schema 1 gets the columns;
     * one made now has them already, and Cassandra refuses to add a column twice
     * (Invalid, "already exists"; before 5.0 there is no ADD IF NOT EXISTS), which
     * read_model_cql.c takes as done */
    "ALTER TABLE %s.order_view ADD cancelled_at bigint",
    "ALTER TABLE %s.order_view ADD refunded_amount text",
    /* the timeline: an order's events, in occurredAt order, ties by eventId; a
     * redelivered event overwrites itself with the same values */
    "CREATE TABLE IF NOT EXISTS %s.order_events ("
    "order_id uuid, occurred_at bigint, event_id uuid, event_type text, topic text, "
    "payload text, PRIMARY KEY ((order_id), occurred_at, event_id))",
    /* the lists' keys: scope "all", "status:<S>" or "customer:<id>", one partition
     * per scope and day of first_seen_at, newest first */
    "CREATE TABLE IF NOT EXISTS %s.order_list ("
    "scope text, bucket int, first_seen_at bigint, order_id uuid, "
    "PRIMARY KEY ((scope, bucket), first_seen_at, order_id)) "
    "WITH CLUSTERING ORDER BY (first_seen_at DESC, order_id DESC)",
    /* the days a scope has entries in, newest first */
    "CREATE TABLE IF NOT EXISTS %s.order_list_buckets ("
    "scope text, bucket int, PRIMARY KEY (scope, bucket)) "
    "WITH CLUSTERING ORDER BY (bucket DESC)",
    /* written last: the schema is whole */
    "CREATE TABLE IF NOT EXISTS %s.schema_meta (name text PRIMARY KEY, version int)",
};

#define NTABLES (sizeof tables / sizeof *tables)

size_t read_model_cql_ddl_count(void) { return 1 + NTABLES; }

bool read_model_cql_ddl(size_t i, const query_cassandra_settings_t *s, char *out,
                        size_t outsize) {
    int n;
    if (i == 0 && s->network_topology)
        n = snprintf(out, outsize,
                     "CREATE KEYSPACE IF NOT EXISTS %s WITH replication = "
                     "{'class': 'NetworkTopologyStrategy', '%s': %d}",
                     s->keyspace, s->local_dc, s->replication_factor);
    else if (i == 0)
        n = snprintf(out, outsize,
                     "CREATE KEYSPACE IF NOT EXISTS %s WITH replication = "
                     "{'class': 'SimpleStrategy', 'replication_factor': %d}",
                     s->keyspace, s->replication_factor);
    else if (i <= NTABLES)
        n = snprintf(out, outsize, tables[i - 1], s->keyspace);
    else
        return false;
    return n > 0 && (size_t)n < outsize;
}

/*
 * read_model_pg.h - what the Postgres store's two files share: the view's
 * columns as read_model_pg.c reads them, and the row they make. The store's
 * interface is read_model.h's (read_model_pg_ops); this header is for
 * read_model_pg.c and read_model_pg_batch.c alone.
 */
#ifndef QUERY_READ_MODEL_PG_H
#define QUERY_READ_MODEL_PG_H

#include "deta/db.h"
#include "domain.h"
#include "read_model.h"

#define PG_MICROS(col) "(extract(epoch FROM " col ") * 1000000)::bigint"

/* order_view's columns in the order pg_view_from_row reads them: instants as
 * integer microseconds (spelled by domain.c, so that they round-trip exactly). */
#define PG_VIEW_COLUMNS                                                                  \
    "order_id::text, customer_id, total_amount::text, currency, status, status_rank, "  \
    PG_MICROS("created_at") ", " PG_MICROS("updated_at")                                 \
    ", reservation_id, payment_id, delivery_id, driver_id, driver_name, "               \
    PG_MICROS("estimated_delivery_at") ", " PG_MICROS("eta_calculated_at") ", "         \
    PG_MICROS("delivered_at") ", failure_reason, correlation_id, "                       \
    PG_MICROS("cancelled_at") ", refunded_amount::text, " PG_MICROS("first_seen_at")
#define PG_VIEW_NCOLUMNS 21

/* The timeline's primary key (its constraint's name, as CREATE TABLE gave it):
 * the violation a racing delivery of the same event meets. */
#define PG_TIMELINE_KEY "order_events_pkey"

/* "" (or NULL) is SQL NULL. */
static inline const char *pg_nullable(const char *s) { return s && s[0] ? s : NULL; }

/* Row row of res, whose first PG_VIEW_NCOLUMNS columns are PG_VIEW_COLUMNS. */
void pg_view_from_row(const PGresult *res, int row, query_view_t *v);

/* read_model_ops_t.apply_batch (read_model_pg_batch.c). */
deta_err_t pg_apply_batch(void *impl, deta_db_t *tx, const query_change_t *changes, size_t n,
                          read_model_outcome_t *outs, bool *rolled_back, char *errstr,
                          size_t errsize);

#endif

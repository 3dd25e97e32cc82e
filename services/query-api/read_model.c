/*
 * read_model.c - chooses the read model's store (QUERY_STORE, settings.h) and
 * hands every call to its table of functions (read_model_ops_t). Nothing else:
 * what a store does is in read_model_pg.c and read_model_cql.c.
 */
#include "read_model.h"

#include <stdlib.h>

#include "deta/log.h"

struct read_model {
    const read_model_ops_t *ops;
    void *impl;
};

read_model_t *read_model_new(deta_service_t *svc, const query_settings_t *settings,
                             char *errstr, size_t errsize) {
    const read_model_ops_t *ops =
        settings->store == QUERY_STORE_CASSANDRA ? &read_model_cql_ops : &read_model_pg_ops;
    read_model_t *rm = calloc(1, sizeof *rm);
    if (!rm) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return NULL;
    }
    rm->ops = ops;
    rm->impl = ops->open(svc, settings, errstr, errsize);
    if (!rm->impl) {
        free(rm);
        return NULL;
    }
    DETA_INFO("read model: %s", ops->name);
    return rm;
}

void read_model_free(read_model_t *rm) {
    if (!rm)
        return;
    rm->ops->close(rm->impl);
    free(rm);
}

const char *read_model_store_name(const read_model_t *rm) { return rm->ops->name; }

void *read_model_impl(read_model_t *rm, const read_model_ops_t *ops) {
    return rm && rm->ops == ops ? rm->impl : NULL;
}

deta_err_t read_model_prepare(read_model_t *rm, char *errstr, size_t errsize) {
    return rm->ops->prepare(rm->impl, errstr, errsize);
}

deta_err_t read_model_apply(read_model_t *rm, deta_db_t *tx, const query_change_t *c,
                            read_model_outcome_t *out, char *errstr, size_t errsize) {
    return rm->ops->apply(rm->impl, tx, c, out, errstr, errsize);
}

deta_err_t read_model_apply_batch(read_model_t *rm, deta_db_t *tx, const query_change_t *changes,
                                  size_t n, read_model_outcome_t *outs, bool *rolled_back,
                                  char *errstr, size_t errsize) {
    *rolled_back = false;
    if (!rm->ops->apply_batch)
        return deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "the %s store applies no batches",
                         rm->ops->name);
    return rm->ops->apply_batch(rm->impl, tx, changes, n, outs, rolled_back, errstr, errsize);
}

bool read_model_batches(const read_model_t *rm) { return rm->ops->apply_batch != NULL; }

deta_err_t read_model_get(read_model_t *rm, const char *order_id, query_view_t *out,
                          char *errstr, size_t errsize) {
    return rm->ops->get(rm->impl, order_id, out, errstr, errsize);
}

deta_err_t read_model_list(read_model_t *rm, const query_list_params_t *p, query_page_t *out,
                           char *errstr, size_t errsize) {
    return rm->ops->list(rm->impl, p, out, errstr, errsize);
}

deta_err_t read_model_timeline(read_model_t *rm, const char *order_id, query_timeline_t *out,
                               char *errstr, size_t errsize) {
    return rm->ops->timeline(rm->impl, order_id, out, errstr, errsize);
}

deta_err_t read_model_stats(read_model_t *rm, query_stats_t *out, char *errstr,
                            size_t errsize) {
    return rm->ops->stats(rm->impl, out, errstr, errsize);
}

bool read_model_ping(read_model_t *rm, char *detail, size_t detailsize) {
    return rm->ops->ping(rm->impl, detail, detailsize);
}

bool read_model_needs_claim(const read_model_t *rm) { return rm->ops->needs_claim; }

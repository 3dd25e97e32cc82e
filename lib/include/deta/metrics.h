/*
 * metrics.h - counters, gauges and histograms, rendered in the Prometheus text
 * exposition format (version 0.0.4).
 *
 * A metric is looked up (or created) by name plus a label string such as
 * `reason="missing_field"`; the same name with other labels is another series of
 * the same family. Handles stay valid until the registry is freed, so hot paths
 * look a series up once and keep the pointer. Updates are lock-free for counters
 * and gauges and take a short lock for histograms; all are thread-safe.
 */
#ifndef DETA_METRICS_H
#define DETA_METRICS_H

#include <stddef.h>

typedef struct deta_metrics deta_metrics_t;
typedef struct deta_counter deta_counter_t;
typedef struct deta_gauge deta_gauge_t;
typedef struct deta_histogram deta_histogram_t;

deta_metrics_t *deta_metrics_new(void);
void deta_metrics_free(deta_metrics_t *m);

/* labels may be NULL or "" for none. help is kept from the first registration. */
deta_counter_t *deta_counter(deta_metrics_t *m, const char *name, const char *help,
                             const char *labels);
void deta_counter_inc(deta_counter_t *c);
void deta_counter_add(deta_counter_t *c, double v); /* v >= 0 */
double deta_counter_value(const deta_counter_t *c);

deta_gauge_t *deta_gauge(deta_metrics_t *m, const char *name, const char *help,
                         const char *labels);
void deta_gauge_set(deta_gauge_t *g, double v);
void deta_gauge_add(deta_gauge_t *g, double v);
double deta_gauge_value(const deta_gauge_t *g);
/* Leaves the series out of the rendering (Prometheus then sees it end) until the
 * next deta_gauge_set or deta_gauge_add, which bring it back. For a series that
 * stops meaning anything, such as the lag of a partition no longer assigned; the
 * handle stays valid. */
void deta_gauge_unset(deta_gauge_t *g);

/* buckets: ascending upper bounds, +Inf implied; NULL for the default latency
 * buckets in seconds (0.001 ... 10). */
deta_histogram_t *deta_histogram(deta_metrics_t *m, const char *name, const char *help,
                                 const char *labels, const double *buckets, size_t nbuckets);
void deta_histogram_observe(deta_histogram_t *h, double v);
unsigned long long deta_histogram_count(const deta_histogram_t *h);

/* The whole registry as exposition text; malloc'd, the caller frees it. Families
 * in registration order, each with one # HELP and one # TYPE line. */
char *deta_metrics_render(deta_metrics_t *m);

#endif

/*
 * metrics.c - counters, gauges and histograms in a registry rendered as
 * Prometheus text (see deta/metrics.h).
 *
 * Design. The registry is a list of families (name, help, type) in registration
 * order; each family holds its series (one per label string) in registration
 * order too. One mutex guards the lists: registering or looking a series up and
 * rendering take it, updates do not. Series are never removed before the
 * registry is freed, which is what lets callers keep the handles.
 *
 * Counters and gauges are one _Atomic double each (a gauge also has a flag,
 * "unset", that leaves it out of the rendering while the value means nothing:
 * deta_gauge_unset; the series and its handle stay): a counter must accept
 * fractional increments (deta_counter_add takes a double, e.g. seconds), so a
 * uint64 would not do; additions are compare-and-swap loops, which are lock-free
 * on every 64-bit target we build for. A double counts integers exactly up to
 * 2^53, far beyond what a process lives to count.
 *
 * A histogram keeps one non-cumulative count per bucket plus sum and count under
 * its own mutex, so that a render sees sum, count and buckets that agree; the
 * buckets are made cumulative when rendered. All series of a histogram family
 * share the bucket bounds given at the family's first registration.
 *
 * Numbers are rendered in the shortest form that reads back to the same double
 * ("0.005", "1e-05"), integers below 1e15 in plain digits ("400000", not
 * "4e+05"), and +Inf, -Inf and NaN spelled the Prometheus way.
 */
#include "deta/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum metric_type { TYPE_COUNTER, TYPE_GAUGE, TYPE_HISTOGRAM } metric_type_t;

struct deta_counter {
    _Atomic double value;
};

struct deta_gauge {
    _Atomic double value; /* first, as in deta_counter */
    atomic_bool unset;    /* left out of the rendering until the next update */
};

struct deta_histogram {
    pthread_mutex_t lock;
    const double *bounds; /* the family's, nbounds ascending; +Inf implied */
    size_t nbounds;
    unsigned long long *counts; /* nbounds + 1, the last one for +Inf */
    unsigned long long count;
    double sum;
};

typedef struct series {
    struct series *next;
    char *labels; /* "" for none */
    union {
        struct deta_counter counter;
        struct deta_gauge gauge;
        struct deta_histogram histogram;
    } u;
} series_t;

typedef struct family {
    struct family *next;
    char *name;
    char *help;
    metric_type_t type;
    double *bounds; /* histograms only */
    size_t nbounds;
    series_t *series, *last_series;
} family_t;

struct deta_metrics {
    pthread_mutex_t lock;
    family_t *families, *last_family;
};

static const double default_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                         0.25,  0.5,    1,     2.5,  5,     10};

/* ---- registry ---- */

deta_metrics_t *deta_metrics_new(void) {
    deta_metrics_t *m = calloc(1, sizeof *m);
    if (m)
        pthread_mutex_init(&m->lock, NULL);
    return m;
}

static void series_free(series_t *s, metric_type_t type) {
    if (type == TYPE_HISTOGRAM) {
        pthread_mutex_destroy(&s->u.histogram.lock);
        free(s->u.histogram.counts);
    }
    free(s->labels);
    free(s);
}

static void family_free(family_t *f) {
    series_t *s = f->series;
    while (s) {
        series_t *next = s->next;
        series_free(s, f->type);
        s = next;
    }
    free(f->name);
    free(f->help);
    free(f->bounds);
    free(f);
}

void deta_metrics_free(deta_metrics_t *m) {
    if (!m)
        return;
    family_t *f = m->families;
    while (f) {
        family_t *next = f->next;
        family_free(f);
        f = next;
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* Prometheus metric names: [a-zA-Z_:][a-zA-Z0-9_:]* */
static bool valid_name(const char *name) {
    if (!name || !*name)
        return false;
    for (const char *p = name; *p; p++) {
        bool alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
                     *p == ':';
        bool digit = *p >= '0' && *p <= '9';
        if (!alpha && !(digit && p != name))
            return false;
    }
    return true;
}

static bool valid_buckets(const double *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(b[i]) || (i > 0 && b[i] <= b[i - 1]))
            return false;
    }
    return true;
}

static family_t *find_family(deta_metrics_t *m, const char *name) {
    for (family_t *f = m->families; f; f = f->next) {
        if (strcmp(f->name, name) == 0)
            return f;
    }
    return NULL;
}

static series_t *find_series(family_t *f, const char *labels) {
    for (series_t *s = f->series; s; s = s->next) {
        if (strcmp(s->labels, labels) == 0)
            return s;
    }
    return NULL;
}

static family_t *family_new(const char *name, const char *help, metric_type_t type,
                            const double *bounds, size_t nbounds) {
    family_t *f = calloc(1, sizeof *f);
    if (!f)
        return NULL;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->type = type;
    f->nbounds = nbounds;
    if (type == TYPE_HISTOGRAM && nbounds > 0) {
        f->bounds = malloc(nbounds * sizeof *bounds);
        if (f->bounds)
            memcpy(f->bounds, bounds, nbounds * sizeof *bounds);
    }
    if (!f->name || !f->help || (type == TYPE_HISTOGRAM && nbounds > 0 && !f->bounds)) {
        family_free(f);
        return NULL;
    }
    return f;
}

static series_t *series_new(const family_t *f, const char *labels) {
    series_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->labels = strdup(labels);
    if (!s->labels) {
        free(s);
        return NULL;
    }
    if (f->type == TYPE_HISTOGRAM) {
        struct deta_histogram *h = &s->u.histogram;
        h->bounds = f->bounds;
        h->nbounds = f->nbounds;
        h->counts = calloc(f->nbounds + 1, sizeof *h->counts);
        if (!h->counts) {
            free(s->labels);
            free(s);
            return NULL;
        }
        pthread_mutex_init(&h->lock, NULL);
    } else if (f->type == TYPE_GAUGE) {
        atomic_init(&s->u.gauge.value, 0.0);
        atomic_init(&s->u.gauge.unset, false);
    } else {
        atomic_init(&s->u.counter.value, 0.0);
    }
    return s;
}

static void append_family(deta_metrics_t *m, family_t *f) {
    if (m->last_family)
        m->last_family->next = f;
    else
        m->families = f;
    m->last_family = f;
}

static void append_series(family_t *f, series_t *s) {
    if (f->last_series)
        f->last_series->next = s;
    else
        f->series = s;
    f->last_series = s;
}

/* The series name{labels} of the given type, created when new; NULL on a type
 * clash, a bad name or bad buckets, or out of memory. Caller holds m->lock. */
static series_t *lookup_locked(deta_metrics_t *m, const char *name, const char *help,
                               const char *labels, metric_type_t type, const double *bounds,
                               size_t nbounds) {
    family_t *f = find_family(m, name);
    bool new_family = f == NULL;
    if (f && f->type != type)
        return NULL;
    if (!f && !(f = family_new(name, help, type, bounds, nbounds)))
        return NULL;
    series_t *s = find_series(f, labels);
    if (!s && (s = series_new(f, labels)) != NULL)
        append_series(f, s);
    if (new_family) {
        if (s)
            append_family(m, f);
        else
            family_free(f);
    }
    return s;
}

static series_t *lookup(deta_metrics_t *m, const char *name, const char *help,
                        const char *labels, metric_type_t type, const double *bounds,
                        size_t nbounds) {
    if (!m || !valid_name(name))
        return NULL;
    pthread_mutex_lock(&m->lock);
    series_t *s = lookup_locked(m, name, help, labels ? labels : "", type, bounds, nbounds);
    pthread_mutex_unlock(&m->lock);
    return s;
}

/* ---- counters and gauges ---- */

static void atomic_add_double(_Atomic double *target, double v) {
    double old = atomic_load(target);
    while (!atomic_compare_exchange_weak(target, &old, old + v))
        ;
}

deta_counter_t *deta_counter(deta_metrics_t *m, const char *name, const char *help,
                             const char *labels) {
    series_t *s = lookup(m, name, help, labels, TYPE_COUNTER, NULL, 0);
    return s ? &s->u.counter : NULL;
}

void deta_counter_inc(deta_counter_t *c) { deta_counter_add(c, 1.0); }

/* Negative or NaN increments are ignored: a counter only goes up. */
void deta_counter_add(deta_counter_t *c, double v) {
    if (c && v >= 0)
        atomic_add_double(&c->value, v);
}

double deta_counter_value(const deta_counter_t *c) {
    return c ? atomic_load(&((deta_counter_t *)c)->value) : 0.0;
}

deta_gauge_t *deta_gauge(deta_metrics_t *m, const char *name, const char *help,
                         const char *labels) {
    series_t *s = lookup(m, name, help, labels, TYPE_GAUGE, NULL, 0);
    return s ? &s->u.gauge : NULL;
}

void deta_gauge_set(deta_gauge_t *g, double v) {
    if (!g)
        return;
    atomic_store(&g->value, v);
    atomic_store(&g->unset, false);
}

void deta_gauge_add(deta_gauge_t *g, double v) {
    if (!g)
        return;
    atomic_add_double(&g->value, v);
    atomic_store(&g->unset, false);
}

void deta_gauge_unset(deta_gauge_t *g) {
    if (g)
        atomic_store(&g->unset, true);
}

double deta_gauge_value(const deta_gauge_t *g) {
    return g ? atomic_load(&((deta_gauge_t *)g)->value) : 0.0;
}

/* ---- histograms ---- */

deta_histogram_t *deta_histogram(deta_metrics_t *m, const char *name, const char *help,
                                 const char *labels, const double *buckets, size_t nbuckets) {
    if (!buckets) {
        buckets = default_buckets;
        nbuckets = sizeof default_buckets / sizeof *default_buckets;
    }
    if (!valid_buckets(buckets, nbuckets))
        return NULL;
    series_t *s = lookup(m, name, help, labels, TYPE_HISTOGRAM, buckets, nbuckets);
    return s ? &s->u.histogram : NULL;
}

/* Counts v in the first bucket whose upper bound is >= v (le = "less or equal"). */
void deta_histogram_observe(deta_histogram_t *h, double v) {
    if (!h || isnan(v))
        return;
    size_t i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        i++;
    pthread_mutex_lock(&h->lock);
    h->counts[i]++;
    h->count++;
    h->sum += v;
    pthread_mutex_unlock(&h->lock);
}

unsigned long long deta_histogram_count(const deta_histogram_t *h) {
    if (!h)
        return 0;
    deta_histogram_t *mh = (deta_histogram_t *)h;
    pthread_mutex_lock(&mh->lock);
    unsigned long long n = mh->count;
    pthread_mutex_unlock(&mh->lock);
    return n;
}

/* ---- rendering ---- */

/* Shortest text that reads back as v; Prometheus spellings for the rest. */
static void format_number(char *buf, size_t size, double v) {
    if (isnan(v)) {
        snprintf(buf, size, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == trunc(v) && fabs(v) < 1e15) {
        snprintf(buf, size, "%.0f", v);
        return;
    }
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(buf, size, "%.*g", precision, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

/* HELP text escapes backslash and newline. */
static void write_help(FILE *out, const family_t *f) {
    fprintf(out, "# HELP %s ", f->name);
    for (const char *p = f->help; *p; p++) {
        if (*p == '\\')
            fputs("\\\\", out);
        else if (*p == '\n')
            fputs("\\n", out);
        else
            fputc(*p, out);
    }
    fputc('\n', out);
}

static const char *type_name(metric_type_t type) {
    switch (type) {
    case TYPE_COUNTER: return "counter";
    case TYPE_GAUGE: return "gauge";
    case TYPE_HISTOGRAM: return "histogram";
    }
    return "untyped";
}

/* name{labels} value, or name value without labels. */
static void write_sample(FILE *out, const char *name, const char *suffix, const char *labels,
                         double value) {
    char num[40];
    format_number(num, sizeof num, value);
    if (*labels)
        fprintf(out, "%s%s{%s} %s\n", name, suffix, labels, num);
    else
        fprintf(out, "%s%s %s\n", name, suffix, num);
}

static void write_bucket(FILE *out, const char *name, const char *labels, const char *le,
                         unsigned long long cumulative) {
    fprintf(out, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, *labels ? "," : "", le,
            cumulative);
}

static void write_histogram(FILE *out, const char *name, const series_t *s) {
    deta_histogram_t *h = (deta_histogram_t *)&s->u.histogram;
    pthread_mutex_lock(&h->lock);
    unsigned long long cumulative = 0;
    char le[40];
    for (size_t i = 0; i < h->nbounds; i++) {
        cumulative += h->counts[i];
        format_number(le, sizeof le, h->bounds[i]);
        write_bucket(out, name, s->labels, le, cumulative);
    }
    write_bucket(out, name, s->labels, "+Inf", h->count);
    double sum = h->sum;
    unsigned long long count = h->count;
    pthread_mutex_unlock(&h->lock);
    write_sample(out, name, "_sum", s->labels, sum);
    fprintf(out, "%s_count%s%s%s %llu\n", name, *s->labels ? "{" : "", s->labels,
            *s->labels ? "}" : "", count);
}

static void write_family(FILE *out, const family_t *f) {
    write_help(out, f);
    fprintf(out, "# TYPE %s %s\n", f->name, type_name(f->type));
    for (const series_t *s = f->series; s; s = s->next) {
        series_t *w = (series_t *)s;
        if (f->type == TYPE_HISTOGRAM)
            write_histogram(out, f->name, s);
        else if (f->type == TYPE_GAUGE && !atomic_load(&w->u.gauge.unset))
            write_sample(out, f->name, "", s->labels, atomic_load(&w->u.gauge.value));
        else if (f->type == TYPE_COUNTER)
            write_sample(out, f->name, "", s->labels, atomic_load(&w->u.counter.value));
    }
}

char *deta_metrics_render(deta_metrics_t *m) {
    if (!m)
        return NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (!out)
        return NULL;
    pthread_mutex_lock(&m->lock);
    for (const family_t *f = m->families; f; f = f->next)
        write_family(out, f);
    pthread_mutex_unlock(&m->lock);
    bool failed = ferror(out) != 0;
    if (fclose(out) != 0 || failed) {
        free(text);
        return NULL;
    }
    return text;
}

/*
 * stats.c - latency distributions for the load generator's summary.
 *
 * Nearest-rank percentiles over every sample (no histogram buckets, no
 * interpolation): the p99 of a step is a latency that one order in a hundred
 * actually had or exceeded. Samples are milliseconds.
 */
#include <math.h>
#include <stdlib.h>

#include "loadgen.h"

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double nearest_rank(const double *sorted, size_t n, double p) {
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    if (rank < 1)
        rank = 1;
    return sorted[rank - 1];
}

lg_dist_t lg_dist_of(double *v, size_t n) {
    lg_dist_t d = {.n = n};
    if (n == 0)
        return d;
    qsort(v, n, sizeof *v, compare_doubles);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    d.mean = sum / (double)n;
    d.p50 = nearest_rank(v, n, 50);
    d.p95 = nearest_rank(v, n, 95);
    d.p99 = nearest_rank(v, n, 99);
    d.max = v[n - 1];
    return d;
}

/*
 * violations.c - the chaos run's list of broken invariants.
 *
 * A violation has a kind (a short fixed text: "payment without reservation")
 * and a detail. Every one is counted by kind; only the first DETAILS_PER_KIND
 * details of a kind are kept, so a systematic bug over thousands of orders
 * gives a readable report (the count says how wide it is, the details show a
 * few orders to look up). The clients, the killer and the checker all report
 * here, so it takes a mutex.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chaos.h"

#define MAX_KINDS 64
#define DETAILS_PER_KIND 5
#define DETAIL_MAX 300

typedef struct kind {
    const char *name;
    long count;
    int ndetails;
    char details[DETAILS_PER_KIND][DETAIL_MAX];
} kind_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static kind_t kinds[MAX_KINDS];
static int nkinds;
static long total;

static kind_t *kind_named(const char *name) {
    for (int i = 0; i < nkinds; i++)
        if (strcmp(kinds[i].name, name) == 0)
            return &kinds[i];
    if (nkinds == MAX_KINDS)
        return &kinds[MAX_KINDS - 1]; /* the last kind absorbs any overflow */
    kinds[nkinds].name = name;
    return &kinds[nkinds++];
}

void chaos_violation(const char *kind, const char *fmt, ...) {
    char detail[DETAIL_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&lock);
    kind_t *k = kind_named(kind);
    k->count++;
    total++;
    if (k->ndetails < DETAILS_PER_KIND)
        memcpy(k->details[k->ndetails++], detail, sizeof detail);
    pthread_mutex_unlock(&lock);
}

long chaos_violations_total(void) {
    pthread_mutex_lock(&lock);
    long n = total;
    pthread_mutex_unlock(&lock);
    return n;
}

void chaos_violations_report(void) {
    pthread_mutex_lock(&lock);
    if (total == 0)
        printf("chaos: no violations\n");
    else
        printf("chaos: %ld violation(s) of %d kind(s):\n", total, nkinds);
    for (int i = 0; i < nkinds; i++) {
        printf("  %s: %ld\n", kinds[i].name, kinds[i].count);
        for (int d = 0; d < kinds[i].ndetails; d++)
            printf("    - %s\n", kinds[i].details[d]);
    }
    pthread_mutex_unlock(&lock);
}

void chaos_violations_free(void) {
    pthread_mutex_lock(&lock);
    nkinds = 0;
    total = 0;
    pthread_mutex_unlock(&lock);
}

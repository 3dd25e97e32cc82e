/*
 * alloc.c - allocation with a failure hook for tests (see alloc.h).
 */
#include "alloc.h"

#include <stdlib.h>

_Atomic(deta_alloc_fail_fn) deta_alloc_fail = NULL;

static bool told_to_fail(size_t size) {
    deta_alloc_fail_fn fail = atomic_load(&deta_alloc_fail);
    return fail && fail(size);
}

void *deta_malloc(size_t size) { return told_to_fail(size) ? NULL : malloc(size); }

void *deta_calloc(size_t n, size_t size) {
    return told_to_fail(n * size) ? NULL : calloc(n, size);
}

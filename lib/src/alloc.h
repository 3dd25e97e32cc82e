/*
 * alloc.h - malloc and calloc for the consumer's out-of-memory paths, with a hook
 * that lets tests make them fail (private to libdeta).
 *
 * A consumer that cannot allocate what a message needs must stop, never count the
 * message as handled (kafka_handle.c, kafka_workers.c, offsets.c): Kafka keeps one
 * offset per partition, and storing one past a message that was skipped loses it. Those paths run only
 * when memory runs out, which a test cannot bring about by itself; so they
 * allocate through these two functions, which first ask deta_alloc_fail (when set)
 * and fail the allocation when it answers true. It is NULL outside tests.
 */
#ifndef DETA_ALLOC_H
#define DETA_ALLOC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

typedef bool (*deta_alloc_fail_fn)(size_t size);

/* Tests only: asked with the size of each allocation below; true fails it. */
extern _Atomic(deta_alloc_fail_fn) deta_alloc_fail;

void *deta_malloc(size_t size);
void *deta_calloc(size_t n, size_t size);

#endif

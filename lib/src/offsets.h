/*
 * offsets.h - the "completed watermark" of one partition (private to libdeta).
 *
 * The consumer loop with workers (kafka_workers.c) finishes a partition's messages
 * out of order: a slow key holds one worker while the others go on. Kafka keeps one
 * committed offset per partition, so the offset may only move past a message once
 * that message and every one dispatched before it are finished. This tracker
 * records the offsets dispatched, in order, marks them finished one by one, and
 * tells how far the finished prefix now reaches. Pure bookkeeping: no locking, no
 * I/O; the caller serializes access.
 */
#ifndef DETA_OFFSETS_H
#define DETA_OFFSETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct deta_offset_slot {
    int64_t offset;
    bool finished;
} deta_offset_slot_t;

/* A ring of the dispatched offsets not yet passed by the watermark, oldest first.
 * Zero-initialized (or deta_offsets_init) is empty. */
typedef struct deta_offsets {
    deta_offset_slot_t *slots;
    size_t cap;
    size_t head;  /* index of the oldest */
    size_t count; /* offsets tracked */
    int64_t next_min; /* the last offset ever added + 1: the least one to accept */
} deta_offsets_t;

void deta_offsets_init(deta_offsets_t *t);
/* Forgets every offset and frees the memory; the tracker is empty again. */
void deta_offsets_reset(deta_offsets_t *t);

typedef enum deta_offsets_added {
    DETA_OFFSETS_ADDED,
    DETA_OFFSETS_STALE,     /* negative, or not above the last one ever recorded */
    DETA_OFFSETS_NO_MEMORY, /* the ring could not grow: the caller must stop */
} deta_offsets_added_t;

/* Records a dispatched offset; anything but ADDED records nothing. Running out
 * of memory is told apart from a refusal: a message whose offset is not tracked
 * could be passed by the watermark before it is finished. */
deta_offsets_added_t deta_offsets_add(deta_offsets_t *t, int64_t offset);
/* Marks a recorded offset finished. False when it is not tracked (never added,
 * already passed by the watermark) or was already finished. */
bool deta_offsets_finish(deta_offsets_t *t, int64_t offset);
/* Drops the finished prefix and returns the offset to store for it (its last
 * offset + 1), or -1 when the oldest tracked offset is unfinished or none is. */
int64_t deta_offsets_advance(deta_offsets_t *t);

/* Offsets tracked (dispatched and not yet passed by the watermark). */
size_t deta_offsets_pending(const deta_offsets_t *t);
/* The oldest tracked offset (after advance: the lowest unfinished), or -1. */
int64_t deta_offsets_first(const deta_offsets_t *t);

#endif

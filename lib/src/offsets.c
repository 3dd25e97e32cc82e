/*
 * offsets.c - the completed watermark of one partition (see offsets.h).
 *
 * Design. Offsets arrive strictly increasing (the order a partition is consumed
 * in), so the tracked ones form a sorted ring buffer: adding appends at the tail,
 * advancing pops finished slots from the head, and finishing finds its slot by
 * binary search. Offsets need not be contiguous (compacted topics, transaction
 * markers): the watermark is "last finished offset of the prefix + 1", which skips
 * the gaps exactly as Kafka would. The ring doubles when full; how many slots it
 * holds is bounded by the consumer's in-flight messages, a few dozen. Its memory
 * comes through alloc.h, so that a test can make growing fail.
 */
#include "offsets.h"

#include <stdlib.h>

#include "alloc.h"

#define OFFSETS_MIN_CAP 16

static deta_offset_slot_t *slot_at(const deta_offsets_t *t, size_t i) {
    return &t->slots[(t->head + i) % t->cap];
}

void deta_offsets_init(deta_offsets_t *t) { *t = (deta_offsets_t){0}; }

void deta_offsets_reset(deta_offsets_t *t) {
    free(t->slots);
    deta_offsets_init(t);
}

/* Doubles the ring, moving the tracked slots to its start. */
static bool grow(deta_offsets_t *t) {
    size_t cap = t->cap ? t->cap * 2 : OFFSETS_MIN_CAP;
    deta_offset_slot_t *slots = deta_malloc(cap * sizeof *slots);
    if (!slots)
        return false;
    for (size_t i = 0; i < t->count; i++)
        slots[i] = *slot_at(t, i);
    free(t->slots);
    t->slots = slots;
    t->cap = cap;
    t->head = 0;
    return true;
}

deta_offsets_added_t deta_offsets_add(deta_offsets_t *t, int64_t offset) {
    if (offset < 0 || offset < t->next_min)
        return DETA_OFFSETS_STALE;
    if (t->count == t->cap && !grow(t))
        return DETA_OFFSETS_NO_MEMORY;
    *slot_at(t, t->count++) = (deta_offset_slot_t){.offset = offset, .finished = false};
    t->next_min = offset + 1;
    return DETA_OFFSETS_ADDED;
}

bool deta_offsets_finish(deta_offsets_t *t, int64_t offset) {
    size_t lo = 0, hi = t->count; /* search [lo, hi) */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        deta_offset_slot_t *s = slot_at(t, mid);
        if (s->offset == offset) {
            if (s->finished)
                return false;
            s->finished = true;
            return true;
        }
        if (s->offset < offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

int64_t deta_offsets_advance(deta_offsets_t *t) {
    int64_t store = -1;
    while (t->count > 0 && slot_at(t, 0)->finished) {
        store = slot_at(t, 0)->offset + 1;
        t->head = (t->head + 1) % t->cap;
        t->count--;
    }
    return store;
}

size_t deta_offsets_pending(const deta_offsets_t *t) { return t->count; }

int64_t deta_offsets_first(const deta_offsets_t *t) {
    return t->count > 0 ? slot_at(t, 0)->offset : -1;
}

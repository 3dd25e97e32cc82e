/*
 * rules.c - the gap rule, the reader's first look and where a stream starts
 * (rules.h). No I/O.
 */
#include "query-api/stream/rules.h"

gap_verdict_t gap_check(gap_wait_t *w, int64_t pos, int64_t seq, bool settled, long now_ms,
                        long bound_ms) {
    if (seq <= pos + 1) {
        *w = (gap_wait_t){0};
        return GAP_TAKE;
    }
    bool fresh = w->missing != pos + 1 || seq > w->seq;
    if (fresh)
        *w = (gap_wait_t){.missing = pos + 1, .seq = seq, .since_ms = now_ms};
    if (w->holders && settled) {
        *w = (gap_wait_t){0};
        return GAP_SKIP;
    }
    if (now_ms - w->since_ms >= bound_ms) {
        *w = (gap_wait_t){0};
        return GAP_SKIP_BOUND;
    }
    if (!w->holders && !fresh)
        return GAP_HOLDERS;
    return GAP_WAIT;
}

void gap_holders_noted(gap_wait_t *w) {
    if (w->missing != 0)
        w->holders = true;
}

long gap_remaining_ms(const gap_wait_t *w, long now_ms, long bound_ms) {
    if (w->missing == 0)
        return -1;
    long left = bound_ms - (now_ms - w->since_ms);
    return left > 0 ? left : 0;
}

look_verdict_t first_look_check(const first_look_t *f, bool ended, long now_ms, long bound_ms) {
    if (ended || f->newest == 0) /* an empty feed: no number below it to hold */
        return LOOK_START;
    return now_ms - f->since_ms >= bound_ms ? LOOK_GIVE_UP : LOOK_WAIT;
}

start_verdict_t stream_start_decide(const stream_start_t *s, const feed_extent_t *e,
                                    long backlog_max, int64_t *cursor) {
    int64_t newest = e->delivered < e->newest ? e->delivered : e->newest;
    if (!s->has_resume) {
        *cursor = s->order_stream ? 0 : newest;
        return START_FROM;
    }
    int64_t r = s->resume;
    /* Purged: rows after r are gone (the oldest left is past r + 1). Beyond the
     * newest: the id is not from this feed (or its rows are lost). */
    bool purged = e->oldest > 0 && r < e->oldest - 1; /* r + 1 would overflow at 2^63-1 */
    bool ahead = r > e->newest;
    if (purged || ahead || e->behind > backlog_max) {
        *cursor = newest;
        return START_RESET;
    }
    *cursor = r;
    return START_FROM;
}

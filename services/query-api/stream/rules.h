/*
 * rules.h - the decisions of query-api's streams, as pure functions:
 *
 * The gap rule. Feed sequence numbers are taken before commit, so seq 41 may
 * commit after 42, or never (its transaction rolled back). The reader follows the
 * feed in seq order: a row whose seq is not the next one waits until the missing
 * number commits, or until it has been missing for gap_ms, after which it is taken
 * as rolled back and skipped.
 *
 * Where a stream starts (docs/console.md): from its resume point when it has one
 * (Last-Event-ID wins over ?lastEventId=, since EventSource keeps the first URL
 * when it reconnects); without one, an order's stream from its first retained row,
 * the board's from the newest. A resume point that cannot be served (rows after it
 * purged, or beyond the newest row, or too far behind) is a reset: the client gets
 * `event: reset` with the newest seq and goes on from there.
 */
#ifndef QUERY_STREAM_RULES_H
#define QUERY_STREAM_RULES_H

#include <stdbool.h>
#include <stdint.h>

/* The reader's wait for a missing number. */
typedef struct gap_wait {
    int64_t missing; /* the number waited for; 0 when none */
    long since_ms;   /* when the wait for it began */
} gap_wait_t;

typedef enum gap_verdict {
    GAP_TAKE, /* deliver the row (it is the next, or the numbers before it are given up) */
    GAP_WAIT, /* wait: come back with the same row later */
} gap_verdict_t;

/* The reader has delivered everything up to pos; the smallest committed seq above
 * it is seq. */
gap_verdict_t gap_check(gap_wait_t *w, int64_t pos, int64_t seq, long now_ms, long gap_ms);
/* How long until the wait in w gives up (>= 0), or -1 when nothing is waited for. */
long gap_remaining_ms(const gap_wait_t *w, long now_ms, long gap_ms);

typedef struct stream_start {
    bool has_resume;
    int64_t resume;    /* with has_resume */
    bool order_stream; /* one order's, else the board's */
} stream_start_t;

/* The feed as the stream starts: oldest and newest committed seq (0 when empty),
 * and how many rows matching the stream follow the resume point (counted up to
 * backlog_max + 1). */
typedef struct feed_extent {
    int64_t oldest, newest;
    long behind;
} feed_extent_t;

typedef enum start_verdict {
    START_FROM,  /* send the matching rows after *cursor, then the live ones */
    START_RESET, /* send reset with *cursor (the newest), then go on from it */
} start_verdict_t;

/* Whether the extent's `behind` is needed: only a resume point is checked. */
static inline bool start_needs_count(const stream_start_t *s) { return s->has_resume; }

start_verdict_t stream_start_decide(const stream_start_t *s, const feed_extent_t *e,
                                    long backlog_max, int64_t *cursor);

#endif

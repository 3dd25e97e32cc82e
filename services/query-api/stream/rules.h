/*
 * rules.h - the decisions of query-api's streams, as pure functions:
 *
 * The gap rule. Feed sequence numbers are taken before commit, so seq 41 may
 * commit after 42, or never (its transaction rolled back). The reader follows
 * the feed in seq order. When the smallest committed seq above what it has
 * delivered is not the next one, the missing numbers were taken by transactions
 * that had them before that row committed, and each of those transactions had
 * its (top-level) transaction id before it took its number (feed.c makes sure
 * of it). Most holes fill within milliseconds, so the reader first looks again;
 * a hole still there is when it notes the *holders*: the transactions of
 * query-api's database open with an id (feed_holders). Once
 * a read's own snapshot shows every holder ended, that read holds every missing
 * number that committed: the ones still missing rolled back, and are skipped at
 * once. A hole whose holders are not all ended after bound_ms
 * (QUERY_STREAM_GAP_MS) is given up (counted and logged), and its holders still
 * open are left out of later holes' holders: a transaction of query-api's
 * database open that long is a fault of its own, and stalls the streams once,
 * not at every hole. The reader's first look is such a wait too (first_look_t).
 *
 * What this relies on: the reader reads the primary (a standby has no
 * backend_xid of the primary's transactions); no prepared (two-phase)
 * transactions write the feed; the feed's sequence hands out numbers in order
 * (CACHE 1, bigserial's default).
 *
 * Where a stream starts (docs/console.md): from its resume point when it has one
 * (Last-Event-ID wins over ?lastEventId=, since EventSource keeps the first URL
 * when it reconnects); without one, an order's stream from its first retained row,
 * the board's from the newest the reader has delivered (not the newest committed:
 * rows below that one may still be waited for, and must reach the new stream). A resume point that cannot be served (rows after it
 * purged, or beyond the newest row, or too far behind) is a reset: the client gets
 * `event: reset` with the newest seq and goes on from there.
 */
#ifndef QUERY_STREAM_RULES_H
#define QUERY_STREAM_RULES_H

#include <stdbool.h>
#include <stdint.h>

/* The reader's wait for missing numbers. */
typedef struct gap_wait {
    int64_t missing; /* the first number waited for; 0 when none */
    int64_t seq;     /* the row above the hole when the wait began */
    bool holders;    /* the holders are noted */
    long since_ms;   /* when the wait began */
} gap_wait_t;

typedef enum gap_verdict {
    GAP_TAKE,       /* deliver the row: it is the next one */
    GAP_SKIP,       /* deliver it: the numbers before it rolled back */
    GAP_SKIP_BOUND, /* deliver it: the numbers before it are given up after bound_ms */
    GAP_HOLDERS,    /* note the holders (then gap_holders_noted), and read again */
    GAP_WAIT,       /* read again soon (with the holders, when noted) */
} gap_verdict_t;

/* The reader has delivered everything up to pos; in a read, the smallest
 * committed seq above it is seq, and settled says whether that read's snapshot
 * showed every holder noted in w ended (false when the read was made before
 * they were noted). The holders of a wait cover the numbers below its first row
 * (w->seq): each was taken before that row's, by a transaction that had its id
 * then. A row above that one (the first was deleted meanwhile, by the purge or
 * by hand) makes a hole they may not cover: a new wait, its clock from now. */
gap_verdict_t gap_check(gap_wait_t *w, int64_t pos, int64_t seq, bool settled, long now_ms,
                        long bound_ms);
/* The holders asked for by GAP_HOLDERS are noted. */
void gap_holders_noted(gap_wait_t *w);
/* How long until the wait in w is given up (>= 0), or -1 when nothing is waited for. */
long gap_remaining_ms(const gap_wait_t *w, long now_ms, long bound_ms);

/* The reader's first look, before it has a position: the newest committed seq
 * then, and the holders open after it was read. A number below it still
 * missing is held by one of them; should it commit after a stream started at
 * that position, no stream would get it. So the reader takes the position once
 * a read's snapshot shows all of them ended (most end within milliseconds),
 * and no stream starts before; holders still open after bound_ms are given up
 * as a hole's are. */
typedef struct first_look {
    bool pending; /* newest and the holders are noted */
    int64_t newest;
    long since_ms;
} first_look_t;

typedef enum look_verdict {
    LOOK_START,   /* the position is newest */
    LOOK_GIVE_UP, /* the same, the holders still open given up */
    LOOK_WAIT,    /* look again soon */
} look_verdict_t;

/* ended: whether a read's snapshot, made after the holders were noted, shows
 * every one of them ended. An empty feed (newest 0) starts at once: every number
 * is above it, where the gap rule waits. */
look_verdict_t first_look_check(const first_look_t *f, bool ended, long now_ms, long bound_ms);

typedef struct stream_start {
    bool has_resume;
    int64_t resume;    /* with has_resume */
    bool order_stream; /* one order's, else the board's */
} stream_start_t;

/* The feed as the stream starts: oldest and newest committed seq (0 when empty),
 * delivered the reader's position (every row up to it has been fanned out),
 * and how many rows matching the stream follow the resume point (counted up to
 * backlog_max + 1). */
typedef struct feed_extent {
    int64_t oldest, newest, delivered;
    long behind;
} feed_extent_t;

typedef enum start_verdict {
    START_FROM,  /* send the matching rows after *cursor, then the live ones */
    START_RESET, /* send reset with *cursor (the newest delivered), then go on from it */
} start_verdict_t;

/* Whether the extent's `behind` is needed: only a resume point is checked. */
static inline bool start_needs_count(const stream_start_t *s) { return s->has_resume; }

start_verdict_t stream_start_decide(const stream_start_t *s, const feed_extent_t *e,
                                    long backlog_max, int64_t *cursor);

#endif

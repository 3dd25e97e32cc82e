/*
 * test_query_stream.c - query-api's live streams against the test stack
 * (docs/console.md, "Live updates"): an order's stream from order.created to its
 * end, each event once and in seq order; the board sees orders placed through the
 * API; a reconnect with Last-Event-ID after query-api was stopped (orders placed
 * while it was down) misses nothing and repeats nothing; a malformed resume point
 * is 400 naming it; a client that stops reading is dropped; QUERY_STREAM_MAX
 * streams, then 503 with Retry-After; the gap rule against real transactions (a
 * feed number held by a slow transaction is waited for, one rolled back is
 * skipped as rolled back, a hole after the row above the last one was deleted is
 * a new wait); a number held as the reader starts reaches the streams; old
 * rows are purged, oldest first by seq.
 *
 * The streams are read over plain sockets with HTTP/1.0 requests (so the body is
 * not chunked and a test can stop reading whenever it likes).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "deta/clock.h"
#include "testsupport.h"

static char item[64]; /* one per run: ts_stock_set creates it */
#define MAX_EVENTS 4096

typedef struct sse {
    int fd;
    int status;
    char *headers;
    char buf[1 << 16];
    size_t len;
} sse_t;

typedef struct sse_event {
    long long id;
    char event[32];
    json_t *data; /* NULL for a frame without data */
} sse_event_t;

static int api_port(void) {
    const char *url = ts_env("QUERY_API_URL");
    const char *colon = strrchr(url, ':');
    assert_non_null(colon);
    return atoi(colon + 1);
}

static int connect_api(int rcvbuf) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)api_port())};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/* Reads into s->buf until it holds `until`, or timeout; true when found. */
static bool read_until(sse_t *s, const char *until, int timeout_ms) {
    long deadline = deta_clock_ms() + timeout_ms;
    for (;;) {
        s->buf[s->len] = '\0';
        if (strstr(s->buf, until))
            return true;
        long left = deadline - deta_clock_ms();
        if (left <= 0 || s->len + 1 >= sizeof s->buf)
            return false;
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        ssize_t n = read(s->fd, s->buf + s->len, sizeof s->buf - 1 - s->len);
        if (n <= 0)
            return false;
        s->len += (size_t)n;
    }
}

/* GET path (HTTP/1.0) with an optional extra header line; reads the headers. */
static void sse_open(sse_t *s, const char *path, const char *header, int rcvbuf) {
    memset(s, 0, sizeof *s);
    s->fd = connect_api(rcvbuf);
    char req[1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nAccept: text/event-stream\r\n%s%s\r\n",
                     path, header ? header : "", header ? "\r\n" : "");
    assert_int_equal(write(s->fd, req, (size_t)n), n);
    assert_true(read_until(s, "\r\n\r\n", 20000));
    char *end = strstr(s->buf, "\r\n\r\n");
    size_t hlen = (size_t)(end - s->buf) + 4;
    s->headers = strndup(s->buf, hlen);
    s->status = atoi(s->buf + 9);
    memmove(s->buf, s->buf + hlen, s->len - hlen);
    s->len -= hlen;
}

static void sse_close(sse_t *s) {
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    free(s->headers);
    s->headers = NULL;
}

/* The next frame with an event (comments and retry skipped); false on timeout. */
static bool sse_next(sse_t *s, int timeout_ms, sse_event_t *ev) {
    long deadline = deta_clock_ms() + timeout_ms;
    for (;;) {
        long left = deadline - deta_clock_ms();
        if (!read_until(s, "\n\n", left > 0 ? (int)left : 0))
            return false;
        char *end = strstr(s->buf, "\n\n");
        *end = '\0';
        memset(ev, 0, sizeof *ev);
        ev->id = -1;
        for (char *line = strtok(s->buf, "\n"); line; line = strtok(NULL, "\n")) {
            if (strncmp(line, "id: ", 4) == 0)
                ev->id = atoll(line + 4);
            else if (strncmp(line, "event: ", 7) == 0)
                snprintf(ev->event, sizeof ev->event, "%s", line + 7);
            else if (strncmp(line, "data: ", 6) == 0)
                ev->data = json_loads(line + 6, 0, NULL);
        }
        size_t used = (size_t)(end - s->buf) + 2;
        memmove(s->buf, s->buf + used, s->len - used);
        s->len -= used;
        if (ev->event[0])
            return true;
    }
}

static const char *str(const json_t *o, const char *k) {
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

/* A collection of order events read from streams. */
typedef struct seen {
    long long ids[MAX_EVENTS];
    char event_ids[MAX_EVENTS][37];
    char order_ids[MAX_EVENTS][37];
    char types[MAX_EVENTS][64];
    char statuses[MAX_EVENTS][32];
    size_t n;
} seen_t;

static void note(seen_t *s, const sse_event_t *ev) {
    assert_true(s->n < MAX_EVENTS);
    s->ids[s->n] = ev->id;
    snprintf(s->event_ids[s->n], 37, "%s", str(ev->data, "eventId"));
    snprintf(s->order_ids[s->n], 37, "%s", str(ev->data, "orderId"));
    snprintf(s->types[s->n], 64, "%s", str(ev->data, "eventType"));
    snprintf(s->statuses[s->n], 32, "%s", str(ev->data, "status"));
    assert_int_equal(json_integer_value(json_object_get(ev->data, "seq")), ev->id);
    s->n++;
}

/* seqs strictly rising and no event twice. */
static void assert_in_order_once(const seen_t *s) {
    for (size_t i = 1; i < s->n; i++) {
        if (s->ids[i] <= s->ids[i - 1])
            fail_msg("seq %lld after %lld", s->ids[i], s->ids[i - 1]);
        for (size_t j = 0; j < i; j++)
            if (strcmp(s->event_ids[i], s->event_ids[j]) == 0)
                fail_msg("event %s twice", s->event_ids[i]);
    }
}

static bool delivered(const seen_t *s, const char *order_id) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->order_ids[i], order_id) == 0 && strcmp(s->statuses[i], "DELIVERED") == 0)
            return true;
    return false;
}

static size_t count_of(const seen_t *s, const char *order_id) {
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += strcmp(s->order_ids[i], order_id) == 0;
    return n;
}

/* Reads ev frames of `order` into seen until every order of ids is DELIVERED and
 * quiet_ms passed after that (the events after delivery, such as a last ETA). */
static void read_until_delivered(sse_t *c, seen_t *seen, char (*ids)[37], size_t n,
                                 int timeout_ms, int quiet_ms) {
    long deadline = deta_clock_ms() + timeout_ms, done_at = -1;
    while (deta_clock_ms() < deadline) {
        if (done_at < 0) {
            bool all = true;
            for (size_t i = 0; i < n; i++)
                all = all && delivered(seen, ids[i]);
            if (all)
                done_at = deta_clock_ms();
        }
        if (done_at >= 0 && deta_clock_ms() - done_at >= quiet_ms)
            return;
        sse_event_t ev;
        if (!sse_next(c, 500, &ev))
            continue;
        if (strcmp(ev.event, "order") == 0) {
            bool mine = false;
            for (size_t i = 0; i < n; i++)
                mine = mine || strcmp(str(ev.data, "orderId"), ids[i]) == 0;
            if (mine)
                note(seen, &ev);
        }
        json_decref(ev.data);
    }
    fail_msg("the orders were not all DELIVERED on the stream within %d ms", timeout_ms);
}

/* Every event id the feed holds for the order, as the stream must have shown. */
static void assert_matches_feed(const seen_t *seen, const char *order_id) {
    PGconn *pg = ts_pg("delivery_query");
    const char *p[] = {order_id};
    PGresult *r = PQexecParams(pg, "SELECT event_id::text FROM stream_feed WHERE order_id = $1"
                                   " ORDER BY seq", 1, NULL, p, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    size_t in_stream = count_of(seen, order_id);
    if ((size_t)PQntuples(r) != in_stream)
        fail_msg("order %s: %d feed rows, %zu on the stream", order_id, PQntuples(r), in_stream);
    for (int i = 0; i < PQntuples(r); i++) {
        bool found = false;
        for (size_t j = 0; j < seen->n && !found; j++)
            found = strcmp(seen->event_ids[j], PQgetvalue(r, i, 0)) == 0;
        if (!found)
            fail_msg("event %s of order %s missing from the stream", PQgetvalue(r, i, 0),
                     order_id);
    }
    PQclear(r);
    PQfinish(pg);
}

/* Opens order_id's stream on c, up to its first frame. */
static void open_order_stream(sse_t *c, const char *order_id) {
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s/stream", order_id);
    sse_open(c, path, NULL, 0);
    assert_int_equal(c->status, 200);
    assert_true(read_until(c, "retry: 2000\n\n", 5000));
}

/* Deletes order_id's feed rows, which must be want. */
static void delete_rows(PGconn *c, const char *order_id, long long want) {
    const char *p[] = {order_id};
    assert_int_equal(ts_pg_long(c,
                                "WITH d AS (DELETE FROM stream_feed WHERE order_id = $1"
                                " RETURNING 1) SELECT count(*) FROM d",
                                1, p),
                     want);
}

static int setup(void **state) {
    (void)state;
    snprintf(item, sizeof item, "STREAM-%ld-%ld", (long)getpid(), (long)time(NULL));
    ts_stock_set(item, 100000);
    return 0;
}

static void place(char id[37]) {
    assert_int_equal(ts_order_place("c-stream", item, 1, id), 201);
}

static void order_stream_shows_created_to_delivered_once_in_order(void **state) {
    (void)state;
    char id[1][37];
    place(id[0]);
    sse_t c;
    open_order_stream(&c, id[0]);
    assert_non_null(strcasestr(c.headers, "Content-Type: text/event-stream"));
    assert_non_null(strcasestr(c.headers, "Cache-Control: no-store"));
    static seen_t seen;
    memset(&seen, 0, sizeof seen);
    read_until_delivered(&c, &seen, id, 1, 120000, 3000);
    sse_close(&c);
    assert_true(seen.n >= 4);
    /* The feed is in the order the read model applied the events, which need not be
     * the saga's (the five topics are consumed apart: on a fresh stack
     * payment.authorized can come first); the stream shows it as it is. */
    bool created = false;
    for (size_t i = 0; i < seen.n; i++)
        created = created || strcmp(seen.types[i], "order.created") == 0;
    assert_true(created);
    assert_in_order_once(&seen);
    assert_matches_feed(&seen, id[0]);
}

static void board_sees_orders_placed_through_the_api(void **state) {
    (void)state;
    sse_t c;
    sse_open(&c, "/api/stream", NULL, 0);
    assert_int_equal(c.status, 200);
    assert_true(read_until(&c, "retry: 2000\n\n", 5000));
    ts_sleep_ms(1500); /* the reader has taken the stream: it starts at the newest row */
    char ids[3][37];
    for (int i = 0; i < 3; i++)
        place(ids[i]);
    static seen_t seen;
    memset(&seen, 0, sizeof seen);
    read_until_delivered(&c, &seen, ids, 3, 180000, 2000);
    sse_close(&c);
    assert_in_order_once(&seen);
    for (int i = 0; i < 3; i++)
        assert_matches_feed(&seen, ids[i]);
}

static void reconnect_after_restart_misses_nothing_repeats_nothing(void **state) {
    (void)state;
    char first[1][37];
    place(first[0]);
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s/stream", first[0]);
    sse_t c;
    sse_open(&c, path, NULL, 0);
    static seen_t seen;
    memset(&seen, 0, sizeof seen);
    read_until_delivered(&c, &seen, first, 1, 120000, 0);
    sse_close(&c);
    /* the board, from the last row this client saw */
    long long last = seen.ids[seen.n - 1];
    assert_int_equal(ts_stack("stop query-api"), 0);
    char ids[3][37];
    for (int i = 0; i < 3; i++)
        place(ids[i]);
    assert_int_equal(ts_stack("start query-api"), 0);
    char header[64];
    snprintf(header, sizeof header, "Last-Event-ID: %lld", last);
    sse_open(&c, "/api/stream", header, 0);
    assert_int_equal(c.status, 200);
    static seen_t after;
    memset(&after, 0, sizeof after);
    read_until_delivered(&c, &after, ids, 3, 180000, 2000);
    sse_close(&c);
    assert_in_order_once(&after);
    assert_true(after.ids[0] > last);
    for (int i = 0; i < 3; i++)
        assert_matches_feed(&after, ids[i]);
}

static void malformed_resume_points_are_400_naming_them(void **state) {
    (void)state;
    const char *const bad_header[] = {"Last-Event-ID: 12a", NULL};
    ts_http_resp_t r;
    ts_http_headers("GET", "QUERY_API_URL", "/api/stream", bad_header, &r, NULL);
    assert_int_equal(r.status, 400);
    assert_string_equal(str(r.json, "field"), "Last-Event-ID");
    ts_http_resp_free(&r);
    ts_http_headers("GET", "QUERY_API_URL", "/api/stream?lastEventId=-1", NULL, &r, NULL);
    assert_int_equal(r.status, 400);
    assert_string_equal(str(r.json, "field"), "lastEventId");
    ts_http_resp_free(&r);
    ts_http_headers("GET", "QUERY_API_URL",
                    "/api/orders/x/stream?lastEventId=99999999999999999999", NULL, &r, NULL);
    assert_int_equal(r.status, 400);
    assert_string_equal(str(r.json, "field"), "orderId");
    ts_http_resp_free(&r);
    /* The largest valid one, beyond every row: a reset (its rule once overflowed) */
    sse_t c;
    sse_open(&c, "/api/stream", "Last-Event-ID: 9223372036854775807", 0);
    assert_int_equal(c.status, 200);
    sse_event_t ev;
    assert_true(sse_next(&c, 10000, &ev));
    assert_string_equal(ev.event, "reset");
    json_decref(ev.data);
    sse_close(&c);
}

static void a_client_that_stops_reading_is_dropped(void **state) {
    (void)state;
    char order[37];
    ts_uuid(order);
    PGconn *pg = ts_pg("delivery_query");
    long newest = ts_pg_long(pg, "SELECT COALESCE(max(seq), 0) FROM stream_feed", 0, NULL);
    double before = ts_metric("QUERY_API_URL", "query_streams_dropped_total{reason=\"slow\"}");
    char path[160];
    snprintf(path, sizeof path, "/api/orders/%s/stream?lastEventId=%ld", order, newest);
    sse_t c;
    sse_open(&c, path, NULL, 4096); /* a small window, and it is never read */
    assert_int_equal(c.status, 200);
    ts_sleep_ms(1500);
    /* Far more than the buffer (262144) plus both sockets' buffers. */
    const char *p[] = {order};
    PGresult *r = PQexecParams(
        pg,
        "INSERT INTO stream_feed (event_id, order_id, event_type, topic, occurred_at, status,"
        " customer_id) SELECT gen_random_uuid(), $1, 'eta.updated', 'raw.eta-events',"
        " now(), 'IN_TRANSIT', repeat('x', 60) FROM generate_series(1, 30000)",
        1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("insert: %s", PQerrorMessage(pg));
    PQclear(r);
    PQclear(PQexec(pg, "NOTIFY stream_feed"));
    double after = before;
    for (int waited = 0; waited < 60000 && after <= before; waited += 500) {
        ts_sleep_ms(500);
        after = ts_metric("QUERY_API_URL", "query_streams_dropped_total{reason=\"slow\"}");
    }
    sse_close(&c);
    r = PQexecParams(pg, "DELETE FROM stream_feed WHERE order_id = $1", 1, NULL, p, NULL, NULL,
                     0);
    PQclear(r);
    PQfinish(pg);
    assert_true(after > before);
}

static void the_limit_then_503_with_retry_after(void **state) {
    (void)state;
    int open_before = (int)ts_metric("QUERY_API_URL", "query_streams_open");
    int max = getenv("QUERY_STREAM_MAX") ? atoi(getenv("QUERY_STREAM_MAX")) : 256;
    int room = max - (open_before > 0 ? open_before : 0);
    assert_true(room > 0);
    static sse_t conns[10000];
    int opened = 0;
    for (; opened < room; opened++) {
        sse_open(&conns[opened], "/api/stream", NULL, 0);
        assert_int_equal(conns[opened].status, 200);
    }
    sse_t over;
    sse_open(&over, "/api/stream", NULL, 0);
    assert_int_equal(over.status, 503);
    assert_non_null(strcasestr(over.headers, "Retry-After: 5"));
    sse_close(&over);
    for (int i = 0; i < opened; i++)
        sse_close(&conns[i]);
    /* The closed ones are found at their next heartbeat: wait for the slots, so that
     * what runs next finds them free. */
    for (int waited = 0; waited < 60000; waited += 1000) {
        if (ts_metric("QUERY_API_URL", "query_streams_open") <= open_before)
            return;
        ts_sleep_ms(1000);
    }
    fail_msg("the closed streams were not let go within 60 s");
}

/* A feed row written as the consumer writes it: the transaction has its id
 * before it takes a number (feed.c). Returns the row's seq. */
static long long feed_insert(PGconn *c, const char *order_id) {
    char event_id[37];
    ts_uuid(event_id);
    const char *p[] = {event_id, order_id};
    return ts_pg_long(
        c,
        "INSERT INTO stream_feed (event_id, order_id, event_type, topic, occurred_at,"
        " created_at) SELECT $1::uuid, $2, 'test.gap', 'raw.order-events', now(),"
        " clock_timestamp() WHERE pg_current_xact_id() IS NOT NULL RETURNING seq",
        2, p);
}

static void pg_ok(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

static long long next_id(sse_t *c, int timeout_ms) {
    sse_event_t ev;
    if (!sse_next(c, timeout_ms, &ev))
        return -1;
    json_decref(ev.data);
    return strcmp(ev.event, "order") == 0 ? ev.id : -2;
}

/* slow commits (and wakes the reader): c gets first, then second. */
static void commit_then_expect(PGconn *slow, sse_t *c, long long first, long long second) {
    pg_ok(slow, "COMMIT");
    pg_ok(slow, "SELECT pg_notify('stream_feed', '')");
    assert_int_equal(next_id(c, 15000), first);
    assert_int_equal(next_id(c, 15000), second);
}

/* A gap test's start: a fresh order id, its stream taken by the reader, and two
 * connections to query-api's database (slow holds numbers, fast commits). */
static void gap_test_open(char oid[37], sse_t *c, PGconn **slow, PGconn **fast) {
    ts_uuid(oid);
    open_order_stream(c, oid);
    ts_sleep_ms(1500); /* the reader has taken the stream */
    *slow = ts_pg("delivery_query");
    *fast = ts_pg("delivery_query");
}

/* Its end: the stream closed, the order's rows (which must be rows) deleted. */
static void gap_test_close(sse_t *c, PGconn *slow, PGconn *fast, const char *oid,
                           long long rows) {
    sse_close(c);
    delete_rows(fast, oid, rows);
    PQfinish(slow);
    PQfinish(fast);
}

#define GAPS_ROLLED_BACK "query_stream_gaps_total{outcome=\"rolled_back\"}"
#define GAPS_GIVEN_UP "query_stream_gaps_total{outcome=\"given_up\"}"

/* The old rule gave a missing number up after 2 s, and then never sent the row
 * when its slow transaction committed. Now: a number held by an open
 * transaction is waited for (3 s here, within QUERY_STREAM_GAP_MS), even when
 * that transaction's id is younger than the last one that ended, and the rows go
 * out in order once it commits; a number whose transaction rolls back is skipped
 * as rolled back (its holders ended), not given up by the clock. */
static void the_gap_rule_waits_for_a_slow_holder_and_skips_a_rolled_back_one(void **state) {
    (void)state;
    char oid[37];
    sse_t c;
    PGconn *slow, *fast;
    gap_test_open(oid, &c, &slow, &fast);
    double rolled0 = ts_metric("QUERY_API_URL", GAPS_ROLLED_BACK);
    double given0 = ts_metric("QUERY_API_URL", GAPS_GIVEN_UP);
    assert_true(rolled0 >= 0 && given0 >= 0);

    /* The hard order: fast has the older transaction id and commits first, so a
     * snapshot's xmax stops below slow's id and leaves slow out of its list of
     * open transactions; slow still holds s1. */
    pg_ok(fast, "BEGIN");
    assert_true(ts_pg_long(fast, "SELECT pg_current_xact_id()::text", 0, NULL) > 0);
    pg_ok(slow, "BEGIN");
    long long s1 = feed_insert(slow, oid);
    long long s2 = feed_insert(fast, oid);
    pg_ok(fast, "COMMIT");
    pg_ok(fast, "SELECT pg_notify('stream_feed', '')");
    assert_true(s2 > s1);
    assert_int_equal(next_id(&c, 3000), -1); /* s2 waits behind s1 */
    commit_then_expect(slow, &c, s1, s2);

    pg_ok(slow, "BEGIN");
    long long s3 = feed_insert(slow, oid);
    long long s4 = feed_insert(fast, oid);
    pg_ok(fast, "SELECT pg_notify('stream_feed', '')");
    assert_true(s4 > s3);
    ts_sleep_ms(500);
    pg_ok(slow, "ROLLBACK");
    assert_int_equal(next_id(&c, 15000), s4);
    assert_true(ts_metric("QUERY_API_URL", GAPS_ROLLED_BACK) >= rolled0 + 1);
    assert_true(ts_metric("QUERY_API_URL", GAPS_GIVEN_UP) == given0);

    gap_test_close(&c, slow, fast, oid, 3);
}

/* The reader noted slow's transaction at a hole; the row above the hole was
 * then deleted (as the purge does) and slow rolled back. A later hole, held by
 * another transaction, is a new wait: the old rule judged it by the old wait's
 * holders (all ended) and skipped it at once, and the held row, committed
 * later, never reached the stream. */
static void a_hole_after_the_row_above_the_last_went_is_waited_for_anew(void **state) {
    (void)state;
    char oid[37];
    sse_t c;
    PGconn *slow, *fast;
    gap_test_open(oid, &c, &slow, &fast);

    pg_ok(slow, "BEGIN");
    long long s1 = feed_insert(slow, oid);
    long long s2 = feed_insert(fast, oid);
    pg_ok(fast, "SELECT pg_notify('stream_feed', '')");
    assert_int_equal(next_id(&c, 1500), -1); /* s2 waits behind s1, slow noted */
    char s2text[24];
    snprintf(s2text, sizeof s2text, "%lld", s2);
    const char *p2[] = {s2text};
    assert_int_equal(ts_pg_long(fast,
                                "WITH d AS (DELETE FROM stream_feed WHERE seq = $1::bigint"
                                " RETURNING 1) SELECT count(*) FROM d",
                                1, p2),
                     1);
    pg_ok(slow, "ROLLBACK");
    ts_sleep_ms(500); /* the reader looked: nothing above the hole */

    pg_ok(slow, "BEGIN");
    long long s3 = feed_insert(slow, oid);
    long long s4 = feed_insert(fast, oid);
    pg_ok(fast, "SELECT pg_notify('stream_feed', '')");
    assert_true(s1 < s2 && s2 < s3 && s3 < s4);
    assert_int_equal(next_id(&c, 3000), -1); /* s4 waits behind s3 */
    commit_then_expect(slow, &c, s3, s4);

    gap_test_close(&c, slow, fast, oid, 2);
}

/* query-api starts while a transaction holds a feed number below the newest
 * row. The reader takes its position only once that transaction ended, so an
 * order's stream opened meanwhile gets the held row, in order, when it commits;
 * the old reader started at the newest row at once, the stream's catch-up read
 * sent the newer row alone, and the held one never came. */
static void a_number_held_as_the_reader_starts_reaches_the_streams(void **state) {
    (void)state;
    char oid[37];
    ts_uuid(oid);
    PGconn *slow = ts_pg("delivery_query"), *fast = ts_pg("delivery_query");
    pg_ok(slow, "BEGIN");
    long long s1 = feed_insert(slow, oid);
    long long s2 = feed_insert(fast, oid);
    assert_true(s2 > s1);
    assert_int_equal(ts_stack("stop query-api"), 0);
    assert_int_equal(ts_stack("start query-api"), 0);
    sse_t c;
    open_order_stream(&c, oid);
    assert_int_equal(next_id(&c, 2000), -1); /* the stream waits for the reader */
    commit_then_expect(slow, &c, s1, s2);

    gap_test_close(&c, slow, fast, oid, 2);
}

#define FEED_PURGED "query_stream_feed_purged_total"

/* Rows older than QUERY_STREAM_RETENTION_HOURS (24) go, oldest first by seq
 * (the feed has no index on its age): every row up to the third of an order's
 * four is made 25 hours old, and the running query-api's purge (every 10 s)
 * deletes those three, not the fourth. */
static void old_feed_rows_are_purged_oldest_first(void **state) {
    (void)state;
    char oid[37];
    ts_uuid(oid);
    PGconn *c = ts_pg("delivery_query");
    double purged0 = ts_metric("QUERY_API_URL", FEED_PURGED);
    assert_true(purged0 >= 0);
    long long seq[4];
    for (int i = 0; i < 4; i++)
        seq[i] = feed_insert(c, oid);
    char upto[24];
    snprintf(upto, sizeof upto, "%lld", seq[2]);
    const char *p[] = {upto};
    assert_true(ts_pg_long(c,
                           "WITH u AS (UPDATE stream_feed SET created_at = now() - interval"
                           " '25 hours' WHERE seq <= $1::bigint RETURNING 1) SELECT count(*) FROM u",
                           1, p) >= 3);
    const char *o[] = {oid};
    long long left = 4;
    for (int waited = 0; left > 1 && waited < 60000; waited += 500) {
        ts_sleep_ms(500);
        left = ts_pg_long(c, "SELECT count(*) FROM stream_feed WHERE order_id = $1", 1, o);
    }
    assert_int_equal(left, 1);
    assert_int_equal(ts_pg_long(c, "SELECT seq FROM stream_feed WHERE order_id = $1", 1, o),
                     seq[3]);
    assert_true(ts_metric("QUERY_API_URL", FEED_PURGED) >= purged0 + 3);
    delete_rows(c, oid, 1);
    PQfinish(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(malformed_resume_points_are_400_naming_them),
        cmocka_unit_test(order_stream_shows_created_to_delivered_once_in_order),
        cmocka_unit_test(board_sees_orders_placed_through_the_api),
        cmocka_unit_test(reconnect_after_restart_misses_nothing_repeats_nothing),
        cmocka_unit_test(a_client_that_stops_reading_is_dropped),
        cmocka_unit_test(the_limit_then_503_with_retry_after),
        cmocka_unit_test(the_gap_rule_waits_for_a_slow_holder_and_skips_a_rolled_back_one),
        cmocka_unit_test(a_hole_after_the_row_above_the_last_went_is_waited_for_anew),
        cmocka_unit_test(a_number_held_as_the_reader_starts_reaches_the_streams),
        cmocka_unit_test(old_feed_rows_are_purged_oldest_first),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}

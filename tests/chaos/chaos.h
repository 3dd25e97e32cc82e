/*
 * chaos.h - what the parts of the chaos program share (see chaos.c for the whole
 * design): its settings, the plan of the run's orders, what the clients saw when
 * placing them, the killer's tally and the list of violations.
 *
 * The plan is drawn from CHAOS_SEED before anything runs, so a seed always
 * means the same orders (items, quantities, customers); what the faults do to
 * them depends on timing and is not reproducible, which is why every check is
 * made against the databases rather than against expectations computed ahead.
 */
#ifndef CHAOS_H
#define CHAOS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CHAOS_MAX_TARGETS 32
#define CHAOS_NAME_MAX 48
#define CHAOS_ITEMS 8         /* items of a run: the last CHAOS_SCARCE_ITEMS are scarce */
#define CHAOS_SCARCE_ITEMS 2
#define CHAOS_MAX_LINES 3
#define CHAOS_PLENTY 1000000L /* units of a plentiful item */

typedef struct chaos_settings {
    long orders;      /* CHAOS_ORDERS */
    long threads;     /* CHAOS_THREADS: clients placing orders at once */
    long rate;        /* CHAOS_RATE: orders per second in all, 0 = as fast as answered */
    uint64_t seed;    /* CHAOS_SEED */
    long kill_min_ms; /* CHAOS_KILL_MIN_MS .. CHAOS_KILL_MAX_MS between two kills */
    long kill_max_ms;
    long down_min_ms; /* CHAOS_DOWN_MIN_MS .. CHAOS_DOWN_MAX_MS before the restart */
    long down_max_ms;
    long converge_s;  /* CHAOS_CONVERGE_S: patience for the system to settle */
    long graceful_percent; /* CHAOS_GRACEFUL: faults that are a SIGTERM stop, in % */
    long fault_s;     /* CHAOS_FAULT_S: faults go on at least this long (0: while placing) */
    char targets[CHAOS_MAX_TARGETS][CHAOS_NAME_MAX]; /* CHAOS_TARGETS: stack.sh parts */
    int ntargets;
    long brokers;          /* KAFKA_BROKERS: the local cluster's (stack.sh's), for "one-broker" */
    const char *stack_sh;  /* CHAOS_STACK_SH: scripts/stack.sh */
    const char *stack_log; /* CHAOS_STACK_LOG: where stack.sh's own output goes */
    double cancel_share; /* CHAOS_CANCEL_SHARE: orders the load cancels, 0..1 */
    const char *order_url;
    const char *inventory_url;
    const char *query_url; /* where the canceller reads how far an order got */
} chaos_settings_t;

typedef struct chaos_line {
    int item;     /* index into the run's items */
    int quantity;
    long cents;   /* unit price */
} chaos_line_t;

/* What a client got for one order, after its retries under its key. */
typedef enum chaos_placed_kind {
    PLACED_NOT_YET,
    PLACED_ACCEPTED,    /* 201 (or a replay's 200) with an orderId */
    PLACED_REFUSED,     /* 4xx: a valid order refused is a violation */
    PLACED_UNAVAILABLE, /* 5xx on the last attempt: nothing promised (it may exist) */
    PLACED_CUT_OFF,     /* no complete answer on the last attempt (it may exist) */
    PLACED_UNREACHABLE, /* never reached order-service within the patience */
} chaos_placed_kind_t;

/* When the load cancels an order: a stage the order must have reached first
 * (the read model's status), so that cancels land all along the saga. */
typedef enum chaos_cancel_at {
    CANCEL_NONE,
    CANCEL_AT_CREATED,   /* right after the 201 */
    CANCEL_AT_RESERVED,  /* INVENTORY_RESERVED or later */
    CANCEL_AT_PAID,      /* PAYMENT_AUTHORIZED or later */
    CANCEL_AT_ASSIGNED,  /* DELIVERY_ASSIGNED or later */
    CANCEL_AT_PICKED_UP, /* PICKED_UP or later: expect a refusal (409) */
    CANCEL_STAGES
} chaos_cancel_at_t;

typedef struct chaos_order {
    /* the plan */
    bool decline_customer; /* customer decline-chaos-<tag>-<n>: the gateway declines */
    int nlines;
    chaos_line_t lines[CHAOS_MAX_LINES];
    long total_cents;
    chaos_cancel_at_t cancel_at;
    atomic_int ready; /* 1 once its client placed it (the canceller reads it then) */
    /* what the client saw */
    char key[40];      /* its Idempotency-Key, the same on every retry */
    int attempts;      /* POSTs it took */
    bool replayed;     /* accepted as a replay (200) */
    chaos_placed_kind_t placed;
    long http_status;
    char order_id[40];
    bool cancel_sent;
    int cancel_outcome; /* deta_outcome_t of the cancel, when sent */
    char cancel_seen[24]; /* the status the canceller saw when it sent it */
} chaos_order_t;

typedef struct chaos_item {
    char id[64];
    long initial; /* units set by PUT /api/inventory/{id} before the run */
} chaos_item_t;

typedef struct chaos_run {
    chaos_settings_t s;
    char tag[16]; /* names this run's customers and items */
    chaos_item_t items[CHAOS_ITEMS];
    chaos_order_t *orders;
    atomic_long next_order;  /* the next plan index a client takes */
    atomic_long placed_count;
} chaos_run_t;

/* ---- violations (violations.c) ---- */

/* Records one violation of kind (a short fixed text); the first few details of
 * each kind are kept for the report. Thread-safe. */
void chaos_violation(const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
long chaos_violations_total(void);
void chaos_violations_report(void);
void chaos_violations_free(void);

/* ---- the parts ---- */

/* The customer id of plan index i. */
void chaos_customer_id(const chaos_run_t *run, long i, char *out, size_t outsize);

/* load.c: creates the run's items with their stock; false on failure. */
bool chaos_setup_items(chaos_run_t *run);
/* load.c: places every order of the plan from s.threads clients, and cancels
 * those the plan cancels (a canceller thread follows the later stages); returns
 * when every order is placed and every due cancel sent (or its patience ran out). */
void chaos_place_orders(chaos_run_t *run);
const char *chaos_cancel_at_name(chaos_cancel_at_t at);

/* killer.c */
typedef struct chaos_killer chaos_killer_t;
chaos_killer_t *chaos_killer_start(const chaos_settings_t *s);
/* Lets the faults go on until CHAOS_FAULT_S after the start, then stops
 * killing, restarts whatever is down, and waits until every part is running and
 * healthy (violations otherwise); then frees. Prints the tally. */
void chaos_killer_finish(chaos_killer_t *k);
/* Runs scripts/stack.sh with args (NULL-terminated); its output goes to the
 * stack log, or into out (malloc'd) when out is not NULL. Returns its exit
 * status (-1 when it could not run). */
int chaos_stack(const chaos_settings_t *s, const char *const *args, char **out);

/* tap.c: follows the raw and dlq topics from their first message while the run
 * goes on (the local broker drops a long run's oldest messages). */
typedef struct chaos_tap chaos_tap_t;
typedef struct chaos_tap_msg {
    bool dlq;
    int64_t offset;
    char *key;            /* NULL when none */
    char *value;          /* raw topics */
    char *original_topic; /* dlq topics: the x- headers the checks name */
    char *consumer_group;
    char *error;
} chaos_tap_msg_t;
/* NULL (said on stderr) when the topics cannot be followed. */
chaos_tap_t *chaos_tap_start(void);
/* Waits until every partition is read to its high watermark as it is then, or
 * timeout_ms; stops following. A tap that fell short or lost messages reports a
 * violation and returns false. */
bool chaos_tap_finish(chaos_tap_t *t, int timeout_ms);
/* What the tap kept, in the order read (per partition, by offset). */
size_t chaos_tap_messages(const chaos_tap_t *t, const chaos_tap_msg_t **msgs);
void chaos_tap_free(chaos_tap_t *t);

/* verify.c: waits (bounded, with progress) until every order of the run reached
 * an end state everywhere, then checks every invariant, the topics' through tap
 * (which it finishes). Returns seconds waited. */
double chaos_converge_and_verify(chaos_run_t *run, chaos_tap_t *tap);

/* Small shared helpers (chaos.c). */
uint64_t chaos_rand(uint64_t *state);
long chaos_rand_between(uint64_t *state, long lo, long hi);
double chaos_now(void); /* monotonic seconds */
void chaos_sleep_ms(long ms);

#endif

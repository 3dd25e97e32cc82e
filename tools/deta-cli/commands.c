/*
 * commands.c - deta-cli's everyday commands: create, get, list and watch.
 *
 * Each command parses its options, checks them before any request (a usage error
 * is exit 2 and sends nothing), makes its requests and prints the answer for a
 * person: create and get print the order as indented JSON (it is also what a
 * script wants), list prints a table, watch prints one line per change. A service
 * that cannot be reached or answers an error is exit 1 with the URL, the HTTP
 * status and the service's own message.
 *
 * watch polls rather than subscribing: the read model is the query-api's, and
 * two GETs every quarter second (the order and its timeline) show every event
 * shortly after it is applied, with no extra interface to keep in step.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "deta/envelope.h"
#include "deta/states.h"

#define WATCH_POLL_MS 250
#define LIST_PAGE_MAX 200 /* query-api's maximum */

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int usage_error(const char *usage, const char *fmt, const char *arg) {
    fputs("deta-cli: ", stderr);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", usage);
    return CLI_USAGE;
}

/* The request, or false after printing why no response came. */
static bool call(deta_client_t *h, const char *method, const char *url, const char *body,
                 deta_client_resp_t *r) {
    char err[512];
    if (deta_client_json(h, method, url, body, r, err, sizeof err) == 0)
        return true;
    cli_fail(CLI_FAIL, "%s", err);
    return false;
}

static void print_json(const json_t *j) {
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (text)
        puts(text);
    free(text);
}

static const char *str_field(const json_t *obj, const char *key, const char *def) {
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : def;
}

const json_t *cli_timeline_events(const json_t *timeline) {
    if (json_is_array(timeline))
        return timeline;
    const json_t *events = json_object_get(timeline, "events");
    return events ? events : json_object_get(timeline, "items");
}

/* ---- create -------------------------------------------------------------- */

static const char CREATE_USAGE[] =
    "usage: deta-cli create --customer C [--currency EUR] --item SKU:QTY:PRICE [--item ...]\n"
    "                       [--idempotency-key KEY] [--order-url URL]\n"
    "  e.g. deta-cli create --customer c-1 --item sku-1:2:9.99 --item sku-2:1:0.50\n"
    "  the order goes with an Idempotency-Key (KEY, or a fresh UUID) and is retried on\n"
    "  5xx, timeouts and lost connections: the same key never makes a second order\n";

bool cli_parse_item(const char *spec, char *item_id, size_t idsize, long *quantity,
                    deta_money_t *unit_price, char *why, size_t whysize) {
    const char *price = strrchr(spec, ':');
    const char *qty = NULL;
    for (const char *p = spec; price && p < price; p++)
        if (*p == ':')
            qty = p;
    if (!price || !qty) {
        snprintf(why, whysize, "'%s' is not SKU:QUANTITY:UNIT_PRICE", spec);
        return false;
    }
    size_t idlen = (size_t)(qty - spec);
    if (idlen == 0 || idlen >= idsize) {
        snprintf(why, whysize, "'%s': the item id must be 1..%zu characters", spec, idsize - 1);
        return false;
    }
    char qtext[32];
    size_t qlen = (size_t)(price - qty - 1);
    if (qlen >= sizeof qtext)
        qlen = sizeof qtext - 1;
    memcpy(qtext, qty + 1, qlen);
    qtext[qlen] = '\0';
    if (!cli_parse_long(qtext, 1, 100000, quantity)) {
        snprintf(why, whysize, "'%s': the quantity must be a whole number from 1 to 100000", spec);
        return false;
    }
    char merr[128];
    if (deta_money_parse(price + 1, unit_price, merr, sizeof merr) != DETA_OK || *unit_price < 0) {
        snprintf(why, whysize, "'%s': the unit price must be an amount such as 9.99", spec);
        return false;
    }
    memcpy(item_id, spec, idlen);
    item_id[idlen] = '\0';
    return true;
}

/* Adds --item spec to the items list; false with a usage message printed. */
static bool add_item(json_t *items, const char *spec) {
    char id[65], why[160], price[DETA_MONEY_STRLEN];
    long qty;
    deta_money_t unit;
    if (!cli_parse_item(spec, id, sizeof id, &qty, &unit, why, sizeof why)) {
        usage_error(CREATE_USAGE, "--item %s", why);
        return false;
    }
    json_array_append_new(items,
                          json_pack("{s:s, s:I, s:s}", "itemId", id, "quantity", (json_int_t)qty,
                                    "unitPrice", deta_money_format(unit, price)));
    return true;
}

/* Places the order under key, retrying what may be retried (lib/client's
 * deta_order_create): a repeat of an order that went through is answered with
 * that order, so a retry never makes a second one. */
static int post_order(const char *order_url, const json_t *body, const char *key) {
    char *text = json_dumps(body, JSON_COMPACT);
    if (!text)
        return cli_fail(CLI_FAIL, "out of memory");
    deta_retry_policy_t policy = cli_retry_policy();
    deta_call_result_t r;
    deta_outcome_t o = deta_order_create(&policy, NULL, order_url, text, key, &r);
    int status = CLI_FAIL;
    if ((o == DETA_OUTCOME_CREATED || o == DETA_OUTCOME_REPLAYED) && r.json) {
        print_json(r.json);
        if (o == DETA_OUTCOME_REPLAYED)
            fprintf(stderr, "deta-cli: replayed: order-service already had this order under "
                            "key %s (HTTP 200%s)\n",
                    key, r.replay_header ? ", Idempotent-Replayed: true" : "");
        status = CLI_OK;
    } else if (o == DETA_OUTCOME_TRANSIENT) {
        cli_fail(CLI_FAIL,
                 "order-service did not take the order after %d attempt%s in %.1f s (%s); "
                 "sending the same command with --idempotency-key %s cannot make a second "
                 "order",
                 r.attempts, r.attempts == 1 ? "" : "s", r.millis / 1000.0, r.error, key);
    } else {
        cli_fail(CLI_FAIL, "order-service refused the order (POST %s/api/orders, %s): %s",
                 order_url, deta_outcome_name(o), r.error);
    }
    deta_call_result_clear(&r);
    free(text);
    return status;
}

int cli_cmd_create(cli_ctx_t *ctx, int argc, char **argv) {
    static const struct option opts[] = {{"customer", 1, NULL, 'c'},
                                         {"currency", 1, NULL, 'u'},
                                         {"item", 1, NULL, 'i'},
                                         {"idempotency-key", 1, NULL, 'k'},
                                         CLI_URL_OPTIONS,
                                         {NULL, 0, NULL, 0}};
    json_t *body = json_object();
    json_t *items = json_array();
    json_object_set_new(body, "items", items);
    const char *key = NULL;
    int opt, status = CLI_OK;
    optind = 0;
    while (status == CLI_OK && (opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 'k')
            key = optarg;
        else if (opt == 'c')
            json_object_set_new(body, "customerId", json_string(optarg));
        else if (opt == 'u')
            json_object_set_new(body, "currency", json_string(optarg));
        else if (opt == 'i')
            status = add_item(items, optarg) ? CLI_OK : CLI_USAGE;
        else if (opt == CLI_OPT_HELP) {
            fputs(CREATE_USAGE, stdout);
            json_decref(body);
            return CLI_OK;
        } else if (!cli_take_url_option(ctx, opt, optarg))
            status = usage_error(CREATE_USAGE, "unknown option or missing value: '%s'",
                                 argv[optind - 1]);
    }
    if (status == CLI_OK && optind < argc)
        status = usage_error(CREATE_USAGE, "unexpected argument '%s'", argv[optind]);
    if (status == CLI_OK && !json_object_get(body, "customerId"))
        status = usage_error(CREATE_USAGE, "%s", "--customer is required");
    if (status == CLI_OK && json_array_size(items) == 0)
        status = usage_error(CREATE_USAGE, "%s", "at least one --item is required");
    if (status == CLI_OK && key && !deta_idempotency_key_valid(key))
        status = usage_error(CREATE_USAGE,
                             "--idempotency-key '%s' must be 1 to 255 visible ASCII characters",
                             key);
    char fresh[DETA_KEY_UUID_LEN + 1];
    if (status == CLI_OK && !key) {
        if (!deta_idempotency_key_new(fresh))
            status = cli_fail(CLI_FAIL, "no random source for an idempotency key");
        key = fresh;
    }
    const char *url = NULL;
    if (status == CLI_OK &&
        !(url = cli_need_url(ctx->order_url, "ORDER_SERVICE_URL", "--order-url")))
        status = CLI_USAGE;
    if (status == CLI_OK)
        status = post_order(url, body, key);
    json_decref(body);
    return status;
}

/* ---- get ----------------------------------------------------------------- */

static const char GET_USAGE[] =
    "usage: deta-cli get ORDER_ID [--write-side] [--query-url URL] [--order-url URL]\n"
    "  the order as the read model (query-api) shows it; --write-side asks order-service\n";

static int get_order(const char *base, const char *id, bool write_side) {
    char path[128];
    snprintf(path, sizeof path, "/api/orders/%s", id);
    char *url = deta_client_url(base, path);
    deta_client_t *h = cli_client_new();
    const char *who = write_side ? "order-service" : "query-api";
    int status = CLI_FAIL;
    deta_client_resp_t r;
    if (url && h && call(h, "GET", url, NULL, &r)) {
        char why[512];
        deta_client_resp_describe(&r, why, sizeof why);
        if (r.status == 200 && r.json) {
            print_json(r.json);
            status = CLI_OK;
        } else if (r.status == 404 && !write_side) {
            cli_fail(CLI_FAIL,
                     "order %s not found in the read model (%s at %s: %s); an order "
                     "placed a moment ago may not have arrived yet: try "
                     "deta-cli get %s --write-side",
                     id, who, url, why, id);
        } else if (r.status == 404) {
            cli_fail(CLI_FAIL, "order %s not found (%s at %s: %s)", id, who, url, why);
        } else {
            cli_fail(CLI_FAIL, "%s could not answer for order %s (GET %s): %s", who, id, url, why);
        }
        deta_client_resp_clear(&r);
    }
    deta_client_free(h);
    free(url);
    return status;
}

/* Takes the single ORDER_ID operand; false after a usage message. */
static bool take_order_id(int argc, char **argv, const char *usage, const char **id) {
    if (optind >= argc) {
        usage_error(usage, "%s", "the order id is missing");
        return false;
    }
    if (optind + 1 < argc) {
        usage_error(usage, "unexpected argument '%s'", argv[optind + 1]);
        return false;
    }
    if (!deta_uuid_valid(argv[optind])) {
        usage_error(usage, "'%s' is not an order id (a UUID)", argv[optind]);
        return false;
    }
    *id = argv[optind];
    return true;
}

int cli_cmd_get(cli_ctx_t *ctx, int argc, char **argv) {
    static const struct option opts[] = {
        {"write-side", 0, NULL, 'w'}, CLI_URL_OPTIONS, {NULL, 0, NULL, 0}};
    bool write_side = false;
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 'w')
            write_side = true;
        else if (opt == CLI_OPT_HELP)
            return fputs(GET_USAGE, stdout), CLI_OK;
        else if (!cli_take_url_option(ctx, opt, optarg))
            return usage_error(GET_USAGE, "unknown option or missing value: '%s'",
                               argv[optind - 1]);
    }
    const char *id;
    if (!take_order_id(argc, argv, GET_USAGE, &id))
        return CLI_USAGE;
    const char *base = write_side ? cli_need_url(ctx->order_url, "ORDER_SERVICE_URL", "--order-url")
                                  : cli_need_url(ctx->query_url, "QUERY_API_URL", "--query-url");
    return base ? get_order(base, id, write_side) : CLI_USAGE;
}

/* ---- list ---------------------------------------------------------------- */

static const char LIST_USAGE[] =
    "usage: deta-cli list [--status S] [--customer C] [--limit N] [--cursor X] [--all]\n"
    "                     [--query-url URL]\n"
    "  orders from the read model, newest first; --all follows the cursors to the end\n";

typedef struct list_query {
    const char *status, *customer, *cursor;
    long limit;
    bool all;
} list_query_t;

/* Appends &name=escaped(value) to buf. */
static void add_param(char *buf, size_t size, const char *name, const char *value) {
    if (!value)
        return;
    char *e = deta_client_url_escape(value);
    size_t len = strlen(buf);
    snprintf(buf + len, size - len, "%c%s=%s", strchr(buf, '?') ? '&' : '?', name, e ? e : "");
    free(e);
}

static void print_row(const json_t *o) {
    printf("%-36s  %-18s  %-20s  %12s %-3s  %s\n", str_field(o, "orderId", "-"),
           str_field(o, "status", "-"), str_field(o, "customerId", "-"),
           str_field(o, "totalAmount", "-"), str_field(o, "currency", ""),
           str_field(o, "createdAt", "-"));
}

/* One page: prints its rows (after the table's header, when *count is still 0),
 * sets *next (malloc'd, NULL at the end). */
static int list_page(deta_client_t *h, const char *base, const list_query_t *q, const char *cursor,
                     size_t *count, char **next) {
    char path[1024];
    snprintf(path, sizeof path, "/api/orders?limit=%ld", q->limit);
    add_param(path, sizeof path, "status", q->status);
    add_param(path, sizeof path, "customerId", q->customer);
    add_param(path, sizeof path, "cursor", cursor);
    char *url = deta_client_url(base, path);
    *next = NULL;
    deta_client_resp_t r;
    if (!url || !call(h, "GET", url, NULL, &r)) {
        free(url);
        return CLI_FAIL;
    }
    int status = CLI_OK;
    json_t *items = json_object_get(r.json, "items");
    if (r.status != 200 || !json_is_array(items)) {
        char why[512];
        deta_client_resp_describe(&r, why, sizeof why);
        status = cli_fail(CLI_FAIL, "query-api could not list orders (GET %s): %s", url, why);
    } else {
        size_t i;
        json_t *o;
        if (*count == 0)
            printf("%-36s  %-18s  %-20s  %12s %-3s  %s\n", "ORDER ID", "STATUS", "CUSTOMER",
                   "TOTAL", "CUR", "CREATED");
        json_array_foreach(items, i, o) print_row(o);
        *count += json_array_size(items);
        const char *c = json_string_value(json_object_get(r.json, "nextCursor"));
        if (c && *c && json_array_size(items) > 0)
            *next = strdup(c);
    }
    deta_client_resp_clear(&r);
    free(url);
    return status;
}

static int list_orders(const char *base, const list_query_t *q) {
    deta_client_t *h = cli_client_new();
    if (!h)
        return cli_fail(CLI_FAIL, "out of memory");
    size_t count = 0;
    char *cursor = q->cursor ? strdup(q->cursor) : NULL, *next = NULL;
    int status;
    while ((status = list_page(h, base, q, cursor, &count, &next)) == CLI_OK && next && q->all) {
        free(cursor);
        cursor = next;
        next = NULL;
    }
    if (status == CLI_OK) {
        printf("%zu order%s\n", count, count == 1 ? "" : "s");
        if (next)
            printf("more: deta-cli list --cursor %s (or --all)\n", next);
    }
    free(next);
    free(cursor);
    deta_client_free(h);
    return status;
}

int cli_cmd_list(cli_ctx_t *ctx, int argc, char **argv) {
    static const struct option opts[] = {{"status", 1, NULL, 's'}, {"customer", 1, NULL, 'c'},
                                         {"limit", 1, NULL, 'l'},  {"cursor", 1, NULL, 'k'},
                                         {"all", 0, NULL, 'a'},    CLI_URL_OPTIONS,
                                         {NULL, 0, NULL, 0}};
    list_query_t q = {NULL, NULL, NULL, 50, false};
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 's': q.status = optarg; break;
        case 'c': q.customer = optarg; break;
        case 'k': q.cursor = optarg; break;
        case 'a': q.all = true; break;
        case 'l':
            if (!cli_parse_long(optarg, 1, LIST_PAGE_MAX, &q.limit))
                return usage_error(LIST_USAGE, "--limit '%s' must be a number from 1 to 200",
                                   optarg);
            break;
        case CLI_OPT_HELP: return fputs(LIST_USAGE, stdout), CLI_OK;
        default:
            if (!cli_take_url_option(ctx, opt, optarg))
                return usage_error(LIST_USAGE, "unknown option or missing value: '%s'",
                                   argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error(LIST_USAGE, "unexpected argument '%s'", argv[optind]);
    const char *base = cli_need_url(ctx->query_url, "QUERY_API_URL", "--query-url");
    return base ? list_orders(base, &q) : CLI_USAGE;
}

/* ---- watch --------------------------------------------------------------- */

static const char WATCH_USAGE[] =
    "usage: deta-cli watch ORDER_ID [--timeout SECONDS] [--query-url URL]\n"
    "  prints each status change and event until an end state (default timeout 120 s)\n";

typedef struct watch_state {
    char status[32];
    char **seen; /* eventIds printed so far */
    size_t nseen;
    bool announced_absent;
} watch_state_t;

static bool already_seen(const watch_state_t *w, const char *id) {
    for (size_t i = 0; i < w->nseen; i++)
        if (!strcmp(w->seen[i], id))
            return true;
    return false;
}

static void remember(watch_state_t *w, const char *id) {
    char **seen = realloc(w->seen, (w->nseen + 1) * sizeof *seen);
    if (!seen)
        return;
    w->seen = seen;
    w->seen[w->nseen++] = strdup(id);
}

/* A short description of an event's payload, by type. */
static void summarize(const char *type, const json_t *p, char *buf, size_t size) {
    const char *eta = str_field(p, "estimatedDeliveryAt", "?");
    if (!strcmp(type, "order.created"))
        snprintf(buf, size, "customer %s, %s %s", str_field(p, "customerId", "?"),
                 str_field(p, "totalAmount", "?"), str_field(p, "currency", ""));
    else if (!strcmp(type, "inventory.reserved"))
        snprintf(buf, size, "stock held, reservation %s", str_field(p, "reservationId", "?"));
    else if (!strcmp(type, "inventory.rejected"))
        snprintf(buf, size, "%s: %s requested %lld, available %lld", str_field(p, "reason", "?"),
                 str_field(p, "itemId", "?"),
                 (long long)json_integer_value(json_object_get(p, "requested")),
                 (long long)json_integer_value(json_object_get(p, "available")));
    else if (!strcmp(type, "inventory.released"))
        snprintf(buf, size, "stock released (%s)", str_field(p, "reason", "?"));
    else if (!strcmp(type, "payment.authorized"))
        snprintf(buf, size, "%s %s authorized, payment %s", str_field(p, "amount", "?"),
                 str_field(p, "currency", ""), str_field(p, "paymentId", "?"));
    else if (!strcmp(type, "payment.failed"))
        snprintf(buf, size, "%s (%s %s)", str_field(p, "reason", "?"), str_field(p, "amount", "?"),
                 str_field(p, "currency", ""));
    else if (!strcmp(type, "delivery.assigned"))
        snprintf(buf, size, "driver %s, ETA %s", str_field(p, "driverName", "?"), eta);
    else if (!strcmp(type, "delivery.picked_up"))
        snprintf(buf, size, "picked up, ETA %s", eta);
    else if (!strcmp(type, "delivery.delivered"))
        snprintf(buf, size, "delivered at %s", str_field(p, "deliveredAt", "?"));
    else if (!strcmp(type, "eta.updated"))
        snprintf(buf, size, "%s, ETA %s", str_field(p, "stage", "?"), eta);
    else {
        char *text = json_dumps(p, JSON_COMPACT);
        snprintf(buf, size, "%.200s", text ? text : "");
        free(text);
    }
}

/* "12:38:05.123" out of an ISO instant, or the whole text when it is short. */
static const char *clock_part(const char *iso) {
    return iso && strlen(iso) >= 23 ? iso + 11 : (iso ? iso : "?");
}

static void print_new_events(watch_state_t *w, const json_t *timeline) {
    size_t i;
    json_t *ev;
    json_array_foreach(cli_timeline_events(timeline), i, ev) {
        const char *id = str_field(ev, "eventId", NULL);
        if (!id || already_seen(w, id))
            continue;
        remember(w, id);
        const char *type = str_field(ev, "eventType", "?");
        char summary[384];
        summarize(type, json_object_get(ev, "payload"), summary, sizeof summary);
        printf("%.12s  event   %-20s %s\n", clock_part(str_field(ev, "occurredAt", NULL)), type,
               summary);
    }
}

/* One round: the order, then its timeline. CLI_OK to go on, else the exit status. */
static int watch_round(deta_client_t *h, const char *order_url, const char *events_url,
                       watch_state_t *w) {
    deta_client_resp_t r;
    char why[512];
    if (!call(h, "GET", order_url, NULL, &r))
        return CLI_FAIL;
    if (r.status == 404) {
        if (!w->announced_absent)
            printf("waiting for the order to reach the read model...\n");
        w->announced_absent = true;
        deta_client_resp_clear(&r);
        return CLI_OK;
    }
    if (r.status != 200) {
        deta_client_resp_describe(&r, why, sizeof why);
        deta_client_resp_clear(&r);
        return cli_fail(CLI_FAIL, "query-api (GET %s): %s", order_url, why);
    }
    const char *status = str_field(r.json, "status", "");
    char now[DETA_TS_LEN];
    deta_timestamp_now(now);
    if (status[0] && strcmp(status, w->status) != 0) {
        printf("%.12s  status  %s%s%s\n", clock_part(now), w->status[0] ? w->status : "",
               w->status[0] ? " -> " : "", status);
        snprintf(w->status, sizeof w->status, "%s", status);
    }
    deta_client_resp_clear(&r);
    if (!call(h, "GET", events_url, NULL, &r))
        return CLI_FAIL;
    if (r.status == 200)
        print_new_events(w, r.json);
    deta_client_resp_clear(&r);
    fflush(stdout);
    return CLI_OK;
}

static int watch_order(const char *base, const char *id, long timeout_s) {
    char path[160];
    snprintf(path, sizeof path, "/api/orders/%s", id);
    char *order_url = deta_client_url(base, path);
    snprintf(path, sizeof path, "/api/orders/%s/events", id);
    char *events_url = deta_client_url(base, path);
    deta_client_t *h = cli_client_new();
    watch_state_t w = {0};
    int status = order_url && events_url && h ? CLI_OK : CLI_FAIL;
    double deadline = now_seconds() + (double)timeout_s;
    printf("watching order %s (until an end state, at most %ld s)\n", id, timeout_s);
    while (status == CLI_OK && !deta_order_is_end_state(w.status) && now_seconds() < deadline) {
        status = watch_round(h, order_url, events_url, &w);
        if (status == CLI_OK && !deta_order_is_end_state(w.status))
            sleep_ms(WATCH_POLL_MS);
    }
    if (status == CLI_OK && deta_order_is_end_state(w.status)) {
        sleep_ms(2 * WATCH_POLL_MS); /* events applied just after the end state */
        status = watch_round(h, order_url, events_url, &w);
        if (status == CLI_OK)
            printf("order %s ended: %s\n", id, w.status);
    } else if (status == CLI_OK) {
        status = cli_fail(CLI_FAIL,
                          "order %s did not reach an end state within %ld s "
                          "(last status: %s)",
                          id, timeout_s, w.status[0] ? w.status : "not in the read model");
    }
    for (size_t i = 0; i < w.nseen; i++)
        free(w.seen[i]);
    free(w.seen);
    deta_client_free(h);
    free(order_url);
    free(events_url);
    return status;
}

int cli_cmd_watch(cli_ctx_t *ctx, int argc, char **argv) {
    static const struct option opts[] = {
        {"timeout", 1, NULL, 't'}, CLI_URL_OPTIONS, {NULL, 0, NULL, 0}};
    long timeout_s = 120;
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 't') {
            if (!cli_parse_long(optarg, 1, 86400, &timeout_s))
                return usage_error(WATCH_USAGE, "--timeout '%s' must be seconds (1..86400)",
                                   optarg);
        } else if (opt == CLI_OPT_HELP) {
            return fputs(WATCH_USAGE, stdout), CLI_OK;
        } else if (!cli_take_url_option(ctx, opt, optarg)) {
            return usage_error(WATCH_USAGE, "unknown option or missing value: '%s'",
                               argv[optind - 1]);
        }
    }
    const char *id;
    if (!take_order_id(argc, argv, WATCH_USAGE, &id))
        return CLI_USAGE;
    const char *base = cli_need_url(ctx->query_url, "QUERY_API_URL", "--query-url");
    return base ? watch_order(base, id, timeout_s) : CLI_USAGE;
}

/* ---- cancel -------------------------------------------------------------- */

static const char CANCEL_USAGE[] =
    "usage: deta-cli cancel ORDER_ID [--reason TEXT] [--order-url URL]\n"
    "  asks order-service to cancel the order (retried: a cancel is idempotent);\n"
    "  exit 0 when the cancel is asked (202, decided downstream: follow it with\n"
    "  deta-cli watch) or won (200), 3 when refused (409: picked up, delivered,\n"
    "  failed, or a cancel refused before), 1 for an unknown order or no answer\n";

#define CANCEL_REASON_MAX 200 /* bytes, the contract's */

static int cancel_order(const char *base, const char *id, const char *reason) {
    deta_retry_policy_t policy = cli_retry_policy();
    deta_call_result_t r;
    deta_outcome_t o = deta_order_cancel(&policy, NULL, base, id, reason, &r);
    int status = CLI_FAIL;
    const char *order_status = str_field(r.json, "status", NULL);
    switch (o) {
    case DETA_OUTCOME_REQUESTED:
        printf("cancel requested for order %s (status %s); the saga decides it: "
               "deta-cli watch %s\n",
               id, order_status ? order_status : "?", id);
        print_json(r.json);
        status = CLI_OK;
        break;
    case DETA_OUTCOME_CANCELLED:
        printf("order %s is cancelled\n", id);
        print_json(r.json);
        status = CLI_OK;
        break;
    case DETA_OUTCOME_REFUSED:
        status = cli_fail(CLI_REFUSED, "order %s cannot be cancelled: its status is %s (%s)", id,
                          str_field(r.json, "orderStatus", "unknown"), r.error);
        break;
    case DETA_OUTCOME_NOT_FOUND:
        cli_fail(CLI_FAIL, "order %s not found (order-service at %s: %s)", id, base, r.error);
        break;
    case DETA_OUTCOME_TRANSIENT:
        cli_fail(CLI_FAIL, "order-service did not answer the cancel after %d attempt%s in %.1f s "
                           "(%s); asking again is safe",
                 r.attempts, r.attempts == 1 ? "" : "s", r.millis / 1000.0, r.error);
        break;
    default:
        cli_fail(CLI_FAIL, "order-service refused the cancel of %s: %s", id, r.error);
    }
    deta_call_result_clear(&r);
    return status;
}

int cli_cmd_cancel(cli_ctx_t *ctx, int argc, char **argv) {
    static const struct option opts[] = {
        {"reason", 1, NULL, 'r'}, CLI_URL_OPTIONS, {NULL, 0, NULL, 0}};
    const char *reason = NULL;
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 'r') {
            reason = optarg;
            if (!*reason || strlen(reason) > CANCEL_REASON_MAX)
                return usage_error(CANCEL_USAGE, "--reason must be 1 to 200 bytes%s", "");
        } else if (opt == CLI_OPT_HELP) {
            return fputs(CANCEL_USAGE, stdout), CLI_OK;
        } else if (!cli_take_url_option(ctx, opt, optarg)) {
            return usage_error(CANCEL_USAGE, "unknown option or missing value: '%s'",
                               argv[optind - 1]);
        }
    }
    const char *id;
    if (!take_order_id(argc, argv, CANCEL_USAGE, &id))
        return CLI_USAGE;
    const char *base = cli_need_url(ctx->order_url, "ORDER_SERVICE_URL", "--order-url");
    return base ? cancel_order(base, id, reason) : CLI_USAGE;
}

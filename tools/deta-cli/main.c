/*
 * main.c - deta-cli's entry point: picks the command and says how to use it.
 *
 *   deta-cli create --customer C [--currency EUR] --item sku-1:2:9.99 [--item ...]
 *                   [--idempotency-key K]
 *   deta-cli get ID [--write-side]
 *   deta-cli list [--status S] [--customer C] [--limit N] [--cursor X] [--all]
 *   deta-cli watch ID [--timeout S]
 *   deta-cli cancel ID [--reason TEXT]
 *   deta-cli demo [--orders 300] [--concurrency 8] [--seed 42] [--wait 180]
 *
 * The service URLs come from the environment that stack.env sets
 * (ORDER_SERVICE_URL, QUERY_API_URL, INVENTORY_SERVICE_URL); each command also
 * takes --order-url, --query-url and --inventory-url to override them. Each
 * command parses its own options (getopt_long, restarted per command), so the
 * options of one never leak into another. Every command's HTTP handle comes
 * from cli_client_new, so that they all wait alike.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define REQUEST_TIMEOUT_MS 10000L /* each whole request */
#define CONNECT_TIMEOUT_MS 5000L  /* its connection */

static const char USAGE[] =
    "usage: deta-cli <command> [options]\n"
    "\n"
    "commands:\n"
    "  create --customer C [--currency EUR] --item SKU:QTY:PRICE [--item ...]\n"
    "         [--idempotency-key KEY]\n"
    "                     place an order (order-service) and print it; retried under\n"
    "                     an idempotency key (KEY, or a fresh UUID), never made twice\n"
    "  get ID [--write-side]\n"
    "                     an order from the read model (query-api), or from\n"
    "                     order-service with --write-side\n"
    "  list [--status S] [--customer C] [--limit N] [--cursor X] [--all]\n"
    "                     orders from the read model as a table (--all follows cursors)\n"
    "  watch ID [--timeout S]\n"
    "                     print each status change and event of an order until it ends\n"
    "                     (DELIVERED, INVENTORY_REJECTED, PAYMENT_FAILED or CANCELLED);\n"
    "                     default 120 s\n"
    "  cancel ID [--reason TEXT]\n"
    "                     ask order-service to cancel an order: exit 0 when asked (202)\n"
    "                     or cancelled (200), 3 when refused (409: too late)\n"
    "  demo [--orders N] [--concurrency C] [--seed S] [--wait S]\n"
    "                     run N orders (300) through the whole saga and report on them\n"
    "\n"
    "services (each command): --order-url URL (env ORDER_SERVICE_URL),\n"
    "  --query-url URL (env QUERY_API_URL), --inventory-url URL (env INVENTORY_SERVICE_URL);\n"
    "  the local stack writes them to .local/stack.env: set -a; . .local/stack.env; set +a\n"
    "\n"
    "exit status: 0 success, 1 failure, 2 usage error, 3 cancel refused\n";

int cli_fail(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("deta-cli: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return status;
}

bool cli_parse_long(const char *s, long min, long max, long *out) {
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

deta_client_t *cli_client_new(void) {
    deta_client_t *h = deta_client_new(REQUEST_TIMEOUT_MS, CONNECT_TIMEOUT_MS);
    /* The CLI only reads what needs a token (the read model, the stock): READER_TOKEN,
     * else OPERATOR_TOKEN, sent when set (needed when HTTP_READS_NEED_AUTH is on). */
    if (h && !deta_client_set_token(h, deta_client_env_token(false))) {
        deta_client_free(h);
        return NULL;
    }
    return h;
}

deta_retry_policy_t cli_retry_policy(void) {
    deta_retry_policy_t p = deta_retry_policy_default();
    p.request_timeout_ms = REQUEST_TIMEOUT_MS;
    p.connect_timeout_ms = CONNECT_TIMEOUT_MS;
    return p;
}

bool cli_take_url_option(cli_ctx_t *ctx, int opt, const char *arg) {
    switch (opt) {
    case CLI_OPT_ORDER_URL: ctx->order_url = arg; return true;
    case CLI_OPT_QUERY_URL: ctx->query_url = arg; return true;
    case CLI_OPT_INVENTORY_URL: ctx->inventory_url = arg; return true;
    default: return false;
    }
}

const char *cli_need_url(const char *url, const char *var, const char *flag) {
    if (url && *url)
        return url;
    cli_fail(CLI_USAGE,
             "%s is not set: pass %s URL, or load the stack's settings "
             "(set -a; . .local/stack.env; set +a)",
             var, flag);
    return NULL;
}

static const char *env_or_null(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

typedef int (*command_fn)(cli_ctx_t *ctx, int argc, char **argv);

static command_fn find_command(const char *name) {
    static const struct {
        const char *name;
        command_fn fn;
    } commands[] = {{"create", cli_cmd_create},
                    {"get", cli_cmd_get},
                    {"list", cli_cmd_list},
                    {"watch", cli_cmd_watch},
                    {"cancel", cli_cmd_cancel},
                    {"demo", cli_cmd_demo}};
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return commands[i].fn;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(USAGE, stderr);
        return CLI_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        fputs(USAGE, stdout);
        return CLI_OK;
    }
    command_fn fn = find_command(argv[1]);
    if (!fn) {
        cli_fail(CLI_USAGE, "unknown command '%s'", argv[1]);
        fputs(USAGE, stderr);
        return CLI_USAGE;
    }
    opterr = 0; /* each command names the bad option itself */
    cli_ctx_t ctx = {env_or_null("ORDER_SERVICE_URL"), env_or_null("QUERY_API_URL"),
                     env_or_null("INVENTORY_SERVICE_URL")};
    if (!deta_client_global_init())
        return cli_fail(CLI_FAIL, "libcurl could not be initialised");
    int status = fn(&ctx, argc - 1, argv + 1);
    deta_client_global_cleanup();
    return status;
}

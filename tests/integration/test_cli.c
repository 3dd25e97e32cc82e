/*
 * test_cli.c - the built deta-cli against the test stack, as a user runs it.
 *
 * The binary is found next to this test's own build tree: /proc/self/exe is
 * <build>/tests/it_test_cli, deta-cli is <build>/tools/deta-cli, so the test runs
 * the deta-cli of the same build (sanitizers included). Each case runs it through
 * popen with stdout and stderr together, and asserts the exit status (0 success,
 * 1 failure, 2 usage) and what the output says. An order of a fresh customer is
 * followed by `watch` to its end state (every service runs in the test stack)
 * and then found by `list --customer`.
 *
 * Issue #14: `create` goes with an Idempotency-Key (--idempotency-key, else a
 * fresh UUID) and `cancel` asks order-service to cancel. The usage cases and
 * the unreachable service hold on any branch; the cases against the stack are
 * written for the contract (docs/contracts.md) and need order-service's key
 * (order-idem) and the whole cancellation saga (order-cancel, inventory-cancel,
 * payment-refund, delivery-cancel, query-cancel) merged.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "deta/envelope.h"
#include "deta/states.h"
#include "testsupport.h"

static char cli_path[PATH_MAX + 32];

typedef struct run {
    int status; /* exit status, or -1 when it did not exit normally */
    char *out;  /* stdout and stderr, NUL-terminated */
} run_t;

static void find_cli(void) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        fail_msg("cannot read /proc/self/exe");
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    *slash = '\0';
    snprintf(cli_path, sizeof cli_path, "%s/../tools/deta-cli", self);
    if (access(cli_path, X_OK) != 0)
        fail_msg("deta-cli is not built at %s", cli_path);
}

/* Runs deta-cli with args (a shell word list built by the test, no user input). */
static run_t cli(const char *args) {
    if (!cli_path[0])
        find_cli();
    char cmd[PATH_MAX + 1024];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", cli_path, args);
    FILE *p = popen(cmd, "r");
    if (!p)
        fail_msg("popen %s", cmd);
    run_t r = {0};
    size_t len = 0, cap = 4096;
    r.out = malloc(cap);
    size_t got;
    while ((got = fread(r.out + len, 1, cap - len - 1, p)) > 0) {
        len += got;
        if (cap - len < 1024)
            r.out = realloc(r.out, cap *= 2);
    }
    r.out[len] = '\0';
    int st = pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

static void expect(run_t r, int status, const char *needle) {
    bool ok = r.status == status && (!needle || strstr(r.out, needle));
    if (!ok)
        print_error("expected exit %d and output with \"%s\"; got exit %d:\n%s\n", status,
                    needle ? needle : "", r.status, r.out);
    free(r.out);
    if (!ok)
        fail();
}

/* Creates an order for customer (under key, when given); returns its id (37
 * bytes into id). */
static void create_order_keyed(const char *customer, const char *key, char id[37]) {
    char args[384];
    snprintf(args, sizeof args, "create --customer %s --currency EUR --item sku-1:2:2.50%s%s",
             customer, key ? " --idempotency-key " : "", key ? key : "");
    run_t r = cli(args);
    if (r.status != 0)
        fail_msg("create: exit %d: %s", r.status, r.out);
    json_error_t jerr;
    json_t *j = json_loads(r.out, 0, &jerr);
    if (!j)
        fail_msg("create did not print JSON (%s): %s", jerr.text, r.out);
    const char *oid = json_string_value(json_object_get(j, "orderId"));
    assert_true(deta_uuid_valid(oid));
    assert_string_equal(json_string_value(json_object_get(j, "customerId")), customer);
    assert_string_equal(json_string_value(json_object_get(j, "totalAmount")), "5.00");
    assert_string_equal(json_string_value(json_object_get(j, "status")), DETA_STATE_CREATED);
    memcpy(id, oid, 37);
    json_decref(j);
    free(r.out);
}

static void create_order(const char *customer, char id[37]) {
    create_order_keyed(customer, NULL, id);
}

static void usage_errors_exit_2(void **state) {
    (void)state;
    expect(cli(""), 2, "usage: deta-cli");
    expect(cli("frobnicate"), 2, "unknown command 'frobnicate'");
    expect(cli("get"), 2, "the order id is missing");
    expect(cli("get not-a-uuid"), 2, "'not-a-uuid' is not an order id");
    expect(cli("create --customer c-1"), 2, "at least one --item is required");
    expect(cli("create --item sku-1:1:1.00"), 2, "--customer is required");
    expect(cli("create --customer c-1 --item sku-1:0:1.00"), 2, "quantity");
    expect(cli("create --customer c-1 --item sku-1:1:1.005"), 2, "unit price");
    expect(cli("create --customer c-1 --item sku-1"), 2, "SKU:QUANTITY:UNIT_PRICE");
    expect(cli("create --customer c-1 --bogus"), 2, "'--bogus'");
    expect(cli("list --limit 0"), 2, "--limit");
    expect(cli("watch 3f2504e0-4f89-11d3-9a0c-0305e82c3301 --timeout soon"), 2, "--timeout");
    expect(cli("demo --orders 0"), 2, "--orders");
    expect(cli("get --help"), 0, "usage: deta-cli get");
}

static void failures_exit_1_and_say_why(void **state) {
    (void)state;
    char id[37], args[256];
    ts_uuid(id);
    snprintf(args, sizeof args, "get %s", id);
    expect(cli(args), 1, "not found in the read model");
    snprintf(args, sizeof args, "get %s --write-side", id);
    expect(cli(args), 1, "HTTP 404");
    snprintf(args, sizeof args, "get %s --query-url http://127.0.0.1:1", id);
    expect(cli(args), 1, "cannot reach http://127.0.0.1:1");
    /* The server's own refusal, passed on with its status and message. */
    expect(cli("create --customer c-1 --currency eur --item sku-1:1:1.00"), 1,
           "HTTP 400 Bad Request: currency");
}

static void created_order_is_watched_to_its_end_and_listed(void **state) {
    (void)state;
    char customer[64], uuid[37], id[37], args[256];
    ts_uuid(uuid);
    snprintf(customer, sizeof customer, "cli-%.8s", uuid);
    create_order(customer, id);

    snprintf(args, sizeof args, "watch %s --timeout 90", id);
    run_t w = cli(args);
    bool ended = w.status == 0 && strstr(w.out, "order.created") && strstr(w.out, "status  ") &&
                 (strstr(w.out, "ended: DELIVERED") || strstr(w.out, "ended: PAYMENT_FAILED") ||
                  strstr(w.out, "ended: INVENTORY_REJECTED"));
    if (!ended)
        print_error("watch: exit %d:\n%s\n", w.status, w.out);
    free(w.out);
    assert_true(ended);

    snprintf(args, sizeof args, "get %s", id);
    expect(cli(args), 0, id);
    snprintf(args, sizeof args, "list --customer %s", customer);
    run_t l = cli(args);
    bool listed = l.status == 0 && strstr(l.out, id) && strstr(l.out, "\n1 order\n");
    if (!listed)
        print_error("list --customer %s: exit %d:\n%s\n", customer, l.status, l.out);
    free(l.out);
    assert_true(listed);
}

static void cancel_and_key_usage_errors_exit_2(void **state) {
    (void)state;
    char reason[260] = "--reason ";
    memset(reason + 9, 'r', 201);
    reason[210] = '\0';
    char args[512];
    expect(cli("cancel"), 2, "the order id is missing");
    expect(cli("cancel not-a-uuid"), 2, "'not-a-uuid' is not an order id");
    expect(cli("cancel 3f2504e0-4f89-11d3-9a0c-0305e82c3301 extra"), 2, "unexpected argument");
    expect(cli("cancel 3f2504e0-4f89-11d3-9a0c-0305e82c3301 --reason ''"), 2, "--reason");
    snprintf(args, sizeof args, "cancel 3f2504e0-4f89-11d3-9a0c-0305e82c3301 %s", reason);
    expect(cli(args), 2, "--reason must be 1 to 200 bytes");
    expect(cli("cancel 3f2504e0-4f89-11d3-9a0c-0305e82c3301 --bogus"), 2, "'--bogus'");
    expect(cli("cancel --help"), 0, "usage: deta-cli cancel");
    expect(cli("create --customer c-1 --item sku-1:1:1.00 --idempotency-key 'a b'"), 2,
           "--idempotency-key");
    expect(cli("create --customer c-1 --item sku-1:1:1.00 --idempotency-key ''"), 2,
           "--idempotency-key");
    expect(cli("demo --cancels -1"), 2, "--cancels");
    expect(cli("--help"), 0, "cancel ID [--reason TEXT]");
}

static void unreachable_service_is_retried_then_said(void **state) {
    (void)state;
    /* connection refused on every attempt: the default policy's 8, then exit 1 */
    expect(cli("cancel 3f2504e0-4f89-11d3-9a0c-0305e82c3301 --order-url http://127.0.0.1:1"), 1,
           "did not answer the cancel after 8 attempts");
    expect(cli("create --customer c-1 --item sku-1:1:1.00 --order-url http://127.0.0.1:1"), 1,
           "--idempotency-key");
}

/* Needs order-idem merged: the same key answers the first order (200, replayed). */
static void same_key_makes_one_order(void **state) {
    (void)state;
    char customer[64], uuid[37], key[37], first[37], again[37];
    ts_uuid(uuid);
    ts_uuid(key);
    snprintf(customer, sizeof customer, "cli-key-%.8s", uuid);
    create_order_keyed(customer, key, first);
    char args[384];
    snprintf(args, sizeof args,
             "create --customer %s --currency EUR --item sku-1:2:2.50 --idempotency-key %s",
             customer, key);
    run_t r = cli(args);
    bool replayed = r.status == 0 && strstr(r.out, "replayed") && strstr(r.out, first);
    if (!replayed)
        print_error("second create under key %s: exit %d:\n%s\n", key, r.status, r.out);
    free(r.out);
    assert_true(replayed);
    create_order(customer, again); /* a fresh key: a new order */
    assert_string_not_equal(first, again);
    /* the same key for another order: 422, refused */
    snprintf(args, sizeof args,
             "create --customer %s --currency EUR --item sku-1:3:2.50 --idempotency-key %s",
             customer, key);
    expect(cli(args), 1, "key reused");
}

/* Needs the whole cancellation saga merged: a cancel right after create wins
 * (202, then CANCELLED at the end), a second one answers 200, and a cancel of
 * a delivered order is refused with exit 3 and its status. */
static void cancel_wins_early_and_is_refused_late(void **state) {
    (void)state;
    char customer[64], uuid[37], id[37], args[256];
    ts_uuid(uuid);
    snprintf(customer, sizeof customer, "cli-cancel-%.8s", uuid);
    create_order(customer, id);
    snprintf(args, sizeof args, "cancel %s --reason 'changed my mind'", id);
    expect(cli(args), 0, "cancel requested for order");
    snprintf(args, sizeof args, "watch %s --timeout 90", id);
    expect(cli(args), 0, "ended: CANCELLED");
    snprintf(args, sizeof args, "cancel %s", id);
    expect(cli(args), 0, "is cancelled");

    char late[37];
    create_order(customer, late);
    snprintf(args, sizeof args, "watch %s --timeout 90", late);
    expect(cli(args), 0, "ended: DELIVERED");
    snprintf(args, sizeof args, "cancel %s", late);
    expect(cli(args), 3, "cannot be cancelled: its status is DELIVERED");

    ts_uuid(id);
    snprintf(args, sizeof args, "cancel %s", id);
    expect(cli(args), 1, "not found");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cancel_and_key_usage_errors_exit_2),
        cmocka_unit_test(unreachable_service_is_retried_then_said),
        cmocka_unit_test(same_key_makes_one_order),
        cmocka_unit_test(cancel_wins_early_and_is_refused_late),
        cmocka_unit_test(usage_errors_exit_2),
        cmocka_unit_test(failures_exit_1_and_say_why),
        cmocka_unit_test(created_order_is_watched_to_its_end_and_listed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

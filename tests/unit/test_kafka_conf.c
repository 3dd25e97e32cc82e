/*
 * test_kafka_conf.c - the Kafka transport settings (KAFKA_SECURITY_PROTOCOL,
 * KAFKA_SASL_*, KAFKA_SSL_*): read and checked at start (lib/src/config_kafka.c),
 * and set on every librdkafka configuration the library makes
 * (lib/src/kafka_conf.c: the producer's, which also sends the dead letters, and
 * the consumers'), read back with rd_kafka_conf_get. Bad combinations are
 * refused naming the variables; a message never quotes a password.
 *
 * The CA, certificate and key files are empty temporary files: the settings
 * only need them readable (librdkafka reads them when a handle is made, which
 * no unit test does).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "deta/config.h"
#include "kafka_internal.h"

static const char *const vars[] = {
    "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM",           "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",     "KAFKA_SSL_CA_LOCATION",          "KAFKA_SSL_CERTIFICATE_LOCATION",
    "KAFKA_SSL_KEY_LOCATION",  "KAFKA_SSL_KEY_PASSWORD",         "KAFKA_SSL_ENDPOINT_IDENTIFICATION",
    "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_FETCH_WAIT_MAX_MS",        "KAFKA_STATIC_MEMBERSHIP",
    "INSTANCE_ID",
};

#define PASSWORD "s3cret-sasl-pw"
#define KEY_PASSWORD "s3cret-key-pw"

static char ca[64], cert[64], key[64];

static void temp_file(char *path, const char *what) {
    snprintf(path, 64, "/tmp/deta-kconf-%s-XXXXXX", what);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
}

static int setup(void **state) {
    (void)state;
    temp_file(ca, "ca");
    temp_file(cert, "cert");
    temp_file(key, "key");
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(ca);
    unlink(cert);
    unlink(key);
    return 0;
}

static int clear_env(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        unsetenv(vars[i]);
    return 0;
}

static void load_ok(deta_config_t *cfg) {
    char err[256] = "";
    if (deta_config_load(cfg, "order-service", err, sizeof err) != DETA_OK)
        fail_msg("load failed: %s", err);
}

/* Loading fails with an error that names each of names (a NULL-ended list) and
 * quotes no secret. */
static void load_refused(const char *first, ...) {
    deta_config_t cfg;
    char err[256] = "";
    deta_err_t rc = deta_config_load(&cfg, "order-service", err, sizeof err);
    if (rc != DETA_ERR_INVALID)
        fail_msg("accepted (rc %s)", deta_err_name(rc));
    va_list ap;
    va_start(ap, first);
    for (const char *name = first; name; name = va_arg(ap, const char *))
        if (!strstr(err, name))
            fail_msg("errstr \"%s\" does not name %s", err, name);
    va_end(ap);
    assert_null(strstr(err, PASSWORD));
    assert_null(strstr(err, KEY_PASSWORD));
    /* The refused settings' secrets are not kept. */
    assert_null(memmem(&cfg, sizeof cfg, PASSWORD, strlen(PASSWORD)));
}

/* The value of a property of conf ("" when unset: librdkafka then answers
 * RD_KAFKA_CONF_UNKNOWN, as for a name it does not know, so each name is also
 * checked with a value in test_sasl_ssl_reaches_every_handle). */
static const char *conf_get(rd_kafka_conf_t *conf, const char *name, char *buf, size_t size) {
    size_t n = size;
    if (rd_kafka_conf_get(conf, name, buf, &n) != RD_KAFKA_CONF_OK)
        buf[0] = '\0';
    return buf;
}

static void assert_conf(rd_kafka_conf_t *conf, const char *name, const char *want) {
    char buf[1100];
    const char *got = conf_get(conf, name, buf, sizeof buf);
    if (strcmp(got, want) != 0)
        fail_msg("%s is \"%s\", wanted \"%s\"", name, got, want);
}

/* The producer's and a consumer's configurations for cfg, each checked by check. */
static void each_conf(const deta_config_t *cfg, void (*check)(rd_kafka_conf_t *)) {
    char err[256] = "";
    rd_kafka_conf_t *p = deta_kafka_producer_conf(cfg, err, sizeof err);
    if (!p)
        fail_msg("producer conf: %s", err);
    check(p);
    rd_kafka_conf_destroy(p);
    rd_kafka_conf_t *c =
        deta_kafka_consumer_conf(cfg, "order-service", "raw.order-events", 0, err, sizeof err);
    if (!c)
        fail_msg("consumer conf: %s", err);
    check(c);
    rd_kafka_conf_destroy(c);
    /* And a tool's or a test's own handle, through the public call. */
    rd_kafka_conf_t *t = rd_kafka_conf_new();
    assert_int_equal(deta_kafka_conf_security(t, cfg, err, sizeof err), DETA_OK);
    check(t);
    rd_kafka_conf_destroy(t);
}

static void plaintext(rd_kafka_conf_t *conf) {
    assert_conf(conf, "security.protocol", "plaintext");
    assert_conf(conf, "sasl.username", "");
    assert_conf(conf, "sasl.password", "");
    assert_conf(conf, "ssl.ca.location", "");
}

static void test_default_is_plaintext(void **state) {
    (void)state;
    deta_config_t cfg;
    load_ok(&cfg);
    assert_string_equal(cfg.kafka_security.protocol, "PLAINTEXT");
    assert_string_equal(cfg.kafka_security.sasl_mechanism, "");
    each_conf(&cfg, plaintext);
}

static void sasl_ssl(rd_kafka_conf_t *conf) {
    assert_conf(conf, "security.protocol", "sasl_ssl");
    assert_conf(conf, "sasl.mechanisms", "SCRAM-SHA-512");
    assert_conf(conf, "sasl.username", "payment-service");
    assert_conf(conf, "sasl.password", PASSWORD);
    assert_conf(conf, "ssl.ca.location", ca);
    assert_conf(conf, "ssl.certificate.location", cert);
    assert_conf(conf, "ssl.key.location", key);
    assert_conf(conf, "ssl.key.password", KEY_PASSWORD);
    assert_conf(conf, "ssl.endpoint.identification.algorithm", "https");
}

static void test_sasl_ssl_reaches_every_handle(void **state) {
    (void)state;
    setenv("KAFKA_SECURITY_PROTOCOL", "sasl_ssl", 1); /* any case */
    setenv("KAFKA_SASL_MECHANISM", "scram-sha-512", 1);
    setenv("KAFKA_SASL_USERNAME", "payment-service", 1);
    setenv("KAFKA_SASL_PASSWORD", PASSWORD, 1);
    setenv("KAFKA_SSL_CA_LOCATION", ca, 1);
    setenv("KAFKA_SSL_CERTIFICATE_LOCATION", cert, 1);
    setenv("KAFKA_SSL_KEY_LOCATION", key, 1);
    setenv("KAFKA_SSL_KEY_PASSWORD", KEY_PASSWORD, 1);
    deta_config_t cfg;
    load_ok(&cfg);
    assert_string_equal(cfg.kafka_security.protocol, "SASL_SSL");
    assert_string_equal(cfg.kafka_security.sasl_mechanism, "SCRAM-SHA-512");
    each_conf(&cfg, sasl_ssl);
}

static void ssl_unverified_host(rd_kafka_conf_t *conf) {
    assert_conf(conf, "security.protocol", "ssl");
    assert_conf(conf, "ssl.ca.location", ca);
    assert_conf(conf, "ssl.endpoint.identification.algorithm", "none");
    assert_conf(conf, "sasl.username", "");
}

static void test_ssl_alone(void **state) {
    (void)state;
    setenv("KAFKA_SECURITY_PROTOCOL", "SSL", 1);
    setenv("KAFKA_SSL_CA_LOCATION", ca, 1);
    setenv("KAFKA_SSL_ENDPOINT_IDENTIFICATION", "NONE", 1);
    deta_config_t cfg;
    load_ok(&cfg);
    assert_string_equal(cfg.kafka_security.ssl_endpoint_identification, "none");
    each_conf(&cfg, ssl_unverified_host);
}

static void sasl_plaintext_plain(rd_kafka_conf_t *conf) {
    assert_conf(conf, "security.protocol", "sasl_plaintext");
    assert_conf(conf, "sasl.mechanisms", "PLAIN");
    assert_conf(conf, "sasl.username", "order-service");
    assert_conf(conf, "sasl.password", PASSWORD);
}

static void test_sasl_plaintext(void **state) {
    (void)state;
    setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT", 1);
    setenv("KAFKA_SASL_MECHANISM", "PLAIN", 1);
    setenv("KAFKA_SASL_USERNAME", "order-service", 1);
    setenv("KAFKA_SASL_PASSWORD", PASSWORD, 1);
    deta_config_t cfg;
    load_ok(&cfg);
    each_conf(&cfg, sasl_plaintext_plain);
}

static void test_unknown_protocol_refused(void **state) {
    (void)state;
    setenv("KAFKA_SECURITY_PROTOCOL", "TLS", 1);
    load_refused("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL", NULL);
}

static void test_sasl_settings_need_a_sasl_protocol(void **state) {
    (void)state;
    setenv("KAFKA_SASL_USERNAME", "order-service", 1);
    setenv("KAFKA_SASL_PASSWORD", PASSWORD, 1);
    load_refused("KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD", "KAFKA_SECURITY_PROTOCOL",
                 "PLAINTEXT", NULL);
    setenv("KAFKA_SECURITY_PROTOCOL", "SSL", 1);
    load_refused("KAFKA_SASL_USERNAME", "KAFKA_SECURITY_PROTOCOL", NULL);
}

static void test_ssl_settings_need_an_ssl_protocol(void **state) {
    (void)state;
    setenv("KAFKA_SSL_CA_LOCATION", ca, 1);
    load_refused("KAFKA_SSL_CA_LOCATION", "KAFKA_SECURITY_PROTOCOL", NULL);
    clear_env(NULL);
    setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT", 1);
    setenv("KAFKA_SASL_MECHANISM", "PLAIN", 1);
    setenv("KAFKA_SASL_USERNAME", "u", 1);
    setenv("KAFKA_SASL_PASSWORD", PASSWORD, 1);
    setenv("KAFKA_SSL_ENDPOINT_IDENTIFICATION", "https", 1);
    load_refused("KAFKA_SSL_ENDPOINT_IDENTIFICATION", "SASL_PLAINTEXT", NULL);
}

static void sasl_base(const char *mechanism) {
    clear_env(NULL);
    setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL", 1);
    if (mechanism)
        setenv("KAFKA_SASL_MECHANISM", mechanism, 1);
    setenv("KAFKA_SASL_USERNAME", "u", 1);
    setenv("KAFKA_SASL_PASSWORD", PASSWORD, 1);
}

static void test_sasl_mechanisms(void **state) {
    (void)state;
    sasl_base("SCRAM-SHA-1");
    load_refused("KAFKA_SASL_MECHANISM", "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", NULL);
    sasl_base("GSSAPI");
    load_refused("KAFKA_SASL_MECHANISM", "GSSAPI is not supported", NULL);
    sasl_base("oauthbearer");
    load_refused("KAFKA_SASL_MECHANISM", "OAUTHBEARER is not supported", NULL);
    sasl_base(NULL);
    load_refused("KAFKA_SASL_MECHANISM", "required", NULL);
    const char *ok[] = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        sasl_base(ok[i]);
        deta_config_t cfg;
        load_ok(&cfg);
        assert_string_equal(cfg.kafka_security.sasl_mechanism, ok[i]);
    }
}

static void test_sasl_needs_credentials(void **state) {
    (void)state;
    sasl_base("PLAIN");
    unsetenv("KAFKA_SASL_USERNAME");
    load_refused("KAFKA_SASL_USERNAME", "required", NULL);
    sasl_base("PLAIN");
    unsetenv("KAFKA_SASL_PASSWORD");
    load_refused("KAFKA_SASL_PASSWORD", "required", NULL);
}

static void test_files_must_be_readable(void **state) {
    (void)state;
    const char *names[] = {"KAFKA_SSL_CA_LOCATION", "KAFKA_SSL_CERTIFICATE_LOCATION",
                           "KAFKA_SSL_KEY_LOCATION"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        clear_env(NULL);
        setenv("KAFKA_SECURITY_PROTOCOL", "SSL", 1);
        setenv("KAFKA_SSL_CERTIFICATE_LOCATION", cert, 1);
        setenv("KAFKA_SSL_KEY_LOCATION", key, 1);
        setenv(names[i], "/nonexistent/deta-kafka.pem", 1);
        load_refused(names[i], "/nonexistent/deta-kafka.pem", "cannot read", NULL);
    }
}

static void test_certificate_and_key_go_together(void **state) {
    (void)state;
    setenv("KAFKA_SECURITY_PROTOCOL", "SSL", 1);
    setenv("KAFKA_SSL_CERTIFICATE_LOCATION", cert, 1);
    load_refused("KAFKA_SSL_KEY_LOCATION", "KAFKA_SSL_CERTIFICATE_LOCATION", NULL);
    unsetenv("KAFKA_SSL_CERTIFICATE_LOCATION");
    setenv("KAFKA_SSL_KEY_LOCATION", key, 1);
    load_refused("KAFKA_SSL_CERTIFICATE_LOCATION", "KAFKA_SSL_KEY_LOCATION", NULL);
    unsetenv("KAFKA_SSL_KEY_LOCATION");
    setenv("KAFKA_SSL_KEY_PASSWORD", KEY_PASSWORD, 1);
    load_refused("KAFKA_SSL_KEY_PASSWORD", "KAFKA_SSL_KEY_LOCATION", NULL);
}

static void test_endpoint_identification_values(void **state) {
    (void)state;
    setenv("KAFKA_SECURITY_PROTOCOL", "SSL", 1);
    setenv("KAFKA_SSL_ENDPOINT_IDENTIFICATION", "hostname", 1);
    load_refused("KAFKA_SSL_ENDPOINT_IDENTIFICATION", "https or none", NULL);
    unsetenv("KAFKA_SSL_ENDPOINT_IDENTIFICATION");
    deta_config_t cfg;
    load_ok(&cfg);
    assert_string_equal(cfg.kafka_security.ssl_endpoint_identification, "https");
}

static void test_too_long_refused(void **state) {
    (void)state;
    char longer[2048];
    memset(longer, 'a', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    sasl_base("PLAIN");
    setenv("KAFKA_SASL_PASSWORD", longer, 1);
    load_refused("KAFKA_SASL_PASSWORD", "longer than", NULL);
}

/* A consumer's fetch.wait.max.ms: KAFKA_FETCH_WAIT_MAX_MS, raised to the
 * consumer's least (fetch_wait_min_ms), never lowered by it. */
static void fetch_wait_is(int least, const char *want) {
    deta_config_t cfg;
    load_ok(&cfg);
    char err[256] = "";
    rd_kafka_conf_t *c =
        deta_kafka_consumer_conf(&cfg, "order-service", "raw.order-events", least, err, sizeof err);
    if (!c)
        fail_msg("consumer conf: %s", err);
    assert_conf(c, "fetch.wait.max.ms", want);
    rd_kafka_conf_destroy(c);
}

static void test_fetch_wait_least(void **state) {
    (void)state;
    fetch_wait_is(0, "500"); /* the default, librdkafka's */
    fetch_wait_is(100, "500");
    setenv("KAFKA_FETCH_WAIT_MAX_MS", "10", 1); /* the local stack's, for the mock */
    fetch_wait_is(0, "10");
    fetch_wait_is(100, "100");
    setenv("KAFKA_FETCH_WAIT_MAX_MS", "250", 1);
    fetch_wait_is(0, "250");
    fetch_wait_is(100, "250");
    fetch_wait_is(400, "400");
}

/* The consumer of member's group.instance.id ("" when none). */
static void member_is(const char *member, const char *want) {
    deta_config_t cfg;
    load_ok(&cfg);
    char err[256] = "";
    rd_kafka_conf_t *c = deta_kafka_consumer_conf(&cfg, "payment-service", member, 0, err,
                                                  sizeof err);
    if (!c)
        fail_msg("consumer conf: %s", err);
    assert_conf(c, "group.instance.id", want);
    rd_kafka_conf_destroy(c);
}

/* Static membership: off by default, even with INSTANCE_ID; on, each consumer
 * is <INSTANCE_ID>.<its first topic>; refused without a stable INSTANCE_ID or
 * with one Kafka would not take. */
static void test_static_membership(void **state) {
    (void)state;
    member_is("raw.inventory-events", "");
    setenv("INSTANCE_ID", "payment-service-0", 1);
    member_is("raw.inventory-events", "");
    setenv("KAFKA_STATIC_MEMBERSHIP", "on", 1);
    member_is("raw.inventory-events", "payment-service-0.raw.inventory-events");
    member_is("raw.delivery-events", "payment-service-0.raw.delivery-events");

    char topic[260];
    memset(topic, 'x', sizeof topic - 1);
    topic[sizeof topic - 1] = '\0';
    deta_config_t cfg;
    load_ok(&cfg);
    char err[256] = "";
    assert_null(deta_kafka_consumer_conf(&cfg, "payment-service", topic, 0, err, sizeof err));
    assert_non_null(strstr(err, "longer than 249 bytes"));

    setenv("INSTANCE_ID", "payment/0", 1);
    load_refused("INSTANCE_ID", "KAFKA_STATIC_MEMBERSHIP", NULL);
    unsetenv("INSTANCE_ID");
    load_refused("KAFKA_STATIC_MEMBERSHIP", "INSTANCE_ID", NULL);
    setenv("KAFKA_STATIC_MEMBERSHIP", "sometimes", 1);
    load_refused("KAFKA_STATIC_MEMBERSHIP", NULL);
}

#define T(f) cmocka_unit_test_setup(f, clear_env)

int main(void) {
    const struct CMUnitTest tests[] = {
        T(test_default_is_plaintext),
        T(test_sasl_ssl_reaches_every_handle),
        T(test_ssl_alone),
        T(test_sasl_plaintext),
        T(test_unknown_protocol_refused),
        T(test_sasl_settings_need_a_sasl_protocol),
        T(test_ssl_settings_need_an_ssl_protocol),
        T(test_sasl_mechanisms),
        T(test_sasl_needs_credentials),
        T(test_files_must_be_readable),
        T(test_certificate_and_key_go_together),
        T(test_endpoint_identification_values),
        T(test_too_long_refused),
        T(test_fetch_wait_least),
        T(test_static_membership),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

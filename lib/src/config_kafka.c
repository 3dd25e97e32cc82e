/*
 * config_kafka.c - how the library's Kafka clients reach the brokers:
 * KAFKA_SECURITY_PROTOCOL and its SASL and SSL settings, read and checked at
 * start (the table is deta/config.h's; kafka_conf.c sets them on every
 * librdkafka handle the library makes).
 *
 * Checked here, so that a deployment's mistake stops the service at start with
 * the variables' names instead of showing up as a broker that never answers, or
 * worse as a connection less protected than the deployment meant:
 *
 * - the protocol is one of librdkafka's four (any case; kept in upper case);
 * - SASL settings without a SASL protocol, or SSL settings without an SSL one,
 *   are an error naming them: librdkafka would ignore them, and a deployment
 *   that believes it authenticates or verifies would not;
 * - a SASL protocol needs a mechanism, a username and a password. The
 *   mechanisms are PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512. Debian 12's
 *   librdkafka (2.0.2) has GSSAPI and OAUTHBEARER built in as well, but each
 *   needs settings of its own (a Kerberos keytab, principal and kinit command;
 *   an OIDC token endpoint and client credentials) that this system does not
 *   offer, so they are refused by name rather than half-configured;
 * - a file setting (CA, client certificate, key) must be readable now, a
 *   client certificate comes with its key and the other way round, and a key
 *   password needs a key;
 * - endpoint identification is https (the default: the broker's certificate
 *   must name the host connected to) or none.
 *
 * KAFKA_SASL_PASSWORD and KAFKA_SSL_KEY_PASSWORD are secrets: no message here
 * quotes their values (nor the username's), only their names.
 */
#include "config_kafka.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define PROTOCOLS "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
#define MECHANISMS "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"

static const char *const protocols[] = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"};
static const char *const mechanisms[] = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"};
/* Built into librdkafka, refused here (see the top). */
static const char *const unsupported_mechanisms[] = {"GSSAPI", "OAUTHBEARER"};

/* A variable's value into dst, "" when unset or empty; too long is an error. The
 * passwords may come from NAME_FILE (deta_config_secret). */
static deta_err_t copy_var(const char *name, char *dst, size_t dstsize, char *errstr,
                           size_t errsize) {
    if (strstr(name, "_PASSWORD"))
        return deta_config_secret(name, "", dst, dstsize, errstr, errsize);
    return deta_config_text(name, "", dst, dstsize, errstr, errsize);
}

/* value's canonical spelling among names, compared without case; NULL if none. */
static const char *one_of(const char *value, const char *const *names, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(value, names[i]) == 0)
            return names[i];
    return NULL;
}

/* A variable and where its value went. */
typedef struct var {
    const char *name;
    char *value;
    size_t size;
} var_t;

/* The names of the variables of vars[0..n) that are set, joined by ", " in buf;
 * false when none is. */
static bool names_set(const var_t *vars, size_t n, char *buf, size_t bufsize) {
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (!vars[i].value[0])
            continue;
        int w = snprintf(buf + used, bufsize - used, "%s%s", used ? ", " : "", vars[i].name);
        if (w < 0 || (size_t)w >= bufsize - used)
            break;
        used += (size_t)w;
    }
    return used > 0;
}

/* A file setting, when given, must be readable by this process now. */
static deta_err_t readable(const char *name, const char *path, char *errstr, size_t errsize) {
    if (!path[0] || access(path, R_OK) == 0)
        return DETA_OK;
    return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: cannot read %s: %s", name, path,
                     strerror(errno));
}

static deta_err_t check_sasl(deta_kafka_security_t *sec, const var_t *vars, size_t n,
                             char *errstr, size_t errsize) {
    char names[160];
    bool sasl = strncmp(sec->protocol, "SASL_", 5) == 0;
    if (!sasl) {
        if (names_set(vars, n, names, sizeof names))
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             "%s: set, but KAFKA_SECURITY_PROTOCOL is %s (SASL needs "
                             "SASL_PLAINTEXT or SASL_SSL)",
                             names, sec->protocol);
        return DETA_OK;
    }
    if (!sec->sasl_mechanism[0])
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "KAFKA_SASL_MECHANISM: required with KAFKA_SECURITY_PROTOCOL=%s (one "
                         "of " MECHANISMS ")",
                         sec->protocol);
    const char *m = one_of(sec->sasl_mechanism, mechanisms, sizeof mechanisms / sizeof *mechanisms);
    if (!m) {
        const char *u = one_of(sec->sasl_mechanism, unsupported_mechanisms,
                               sizeof unsupported_mechanisms / sizeof *unsupported_mechanisms);
        if (u)
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             "KAFKA_SASL_MECHANISM: %s is not supported here (it needs settings "
                             "of its own); one of " MECHANISMS,
                             u);
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "KAFKA_SASL_MECHANISM: \"%.32s\" is not one of " MECHANISMS,
                         sec->sasl_mechanism);
    }
    snprintf(sec->sasl_mechanism, sizeof sec->sasl_mechanism, "%s", m);
    if (!sec->sasl_username[0])
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "KAFKA_SASL_USERNAME: required with KAFKA_SECURITY_PROTOCOL=%s",
                         sec->protocol);
    if (!sec->sasl_password[0])
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "KAFKA_SASL_PASSWORD: required with KAFKA_SECURITY_PROTOCOL=%s",
                         sec->protocol);
    return DETA_OK;
}

static deta_err_t check_ssl(deta_kafka_security_t *sec, const var_t *vars, size_t n,
                            char *errstr, size_t errsize) {
    char names[200];
    size_t len = strlen(sec->protocol);
    bool ssl = len >= 3 && strcmp(sec->protocol + len - 3, "SSL") == 0;
    if (!ssl) {
        if (names_set(vars, n, names, sizeof names))
            return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                             "%s: set, but KAFKA_SECURITY_PROTOCOL is %s (TLS needs SSL or "
                             "SASL_SSL)",
                             names, sec->protocol);
        return DETA_OK;
    }
    deta_err_t err;
    if ((err = readable("KAFKA_SSL_CA_LOCATION", sec->ssl_ca_location, errstr, errsize)) ||
        (err = readable("KAFKA_SSL_CERTIFICATE_LOCATION", sec->ssl_certificate_location, errstr,
                        errsize)) ||
        (err = readable("KAFKA_SSL_KEY_LOCATION", sec->ssl_key_location, errstr, errsize)))
        return err;
    if (sec->ssl_certificate_location[0] && !sec->ssl_key_location[0])
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "KAFKA_SSL_KEY_LOCATION: required with KAFKA_SSL_CERTIFICATE_LOCATION "
                         "(a client certificate needs its key)");
    if (sec->ssl_key_location[0] && !sec->ssl_certificate_location[0])
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "KAFKA_SSL_CERTIFICATE_LOCATION: required with KAFKA_SSL_KEY_LOCATION "
                         "(a key needs its client certificate)");
    if (sec->ssl_key_password[0] && !sec->ssl_key_location[0])
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "KAFKA_SSL_KEY_PASSWORD: set without KAFKA_SSL_KEY_LOCATION");
    const char *ident = sec->ssl_endpoint_identification;
    if (!ident[0])
        ident = "https";
    else if (strcasecmp(ident, "https") == 0)
        ident = "https";
    else if (strcasecmp(ident, "none") == 0)
        ident = "none";
    else
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "KAFKA_SSL_ENDPOINT_IDENTIFICATION: \"%.32s\" is not https or none",
                         ident);
    snprintf(sec->ssl_endpoint_identification, sizeof sec->ssl_endpoint_identification, "%s",
             ident);
    return DETA_OK;
}

static deta_err_t load(deta_kafka_security_t *sec, char *errstr, size_t errsize) {
    const var_t sasl[] = {
        {"KAFKA_SASL_MECHANISM", sec->sasl_mechanism, sizeof sec->sasl_mechanism},
        {"KAFKA_SASL_USERNAME", sec->sasl_username, sizeof sec->sasl_username},
        /* A secret: NAME or NAME_FILE (deta_config_secret, in copy_var). */
        {"KAFKA_SASL_PASSWORD", sec->sasl_password, sizeof sec->sasl_password},
    };
    const var_t ssl[] = {
        {"KAFKA_SSL_CA_LOCATION", sec->ssl_ca_location, sizeof sec->ssl_ca_location},
        {"KAFKA_SSL_CERTIFICATE_LOCATION", sec->ssl_certificate_location,
         sizeof sec->ssl_certificate_location},
        {"KAFKA_SSL_KEY_LOCATION", sec->ssl_key_location, sizeof sec->ssl_key_location},
        /* A secret, like the SASL password. */
        {"KAFKA_SSL_KEY_PASSWORD", sec->ssl_key_password, sizeof sec->ssl_key_password},
        {"KAFKA_SSL_ENDPOINT_IDENTIFICATION", sec->ssl_endpoint_identification,
         sizeof sec->ssl_endpoint_identification},
    };
    const char *v = deta_config_str("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT");
    const char *p = one_of(v, protocols, sizeof protocols / sizeof *protocols);
    if (!p)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "KAFKA_SECURITY_PROTOCOL: \"%.32s\" is not one of " PROTOCOLS, v);
    snprintf(sec->protocol, sizeof sec->protocol, "%s", p);
    deta_err_t err;
    for (size_t i = 0; i < sizeof sasl / sizeof *sasl; i++)
        if ((err = copy_var(sasl[i].name, sasl[i].value, sasl[i].size, errstr, errsize)))
            return err;
    for (size_t i = 0; i < sizeof ssl / sizeof *ssl; i++)
        if ((err = copy_var(ssl[i].name, ssl[i].value, ssl[i].size, errstr, errsize)))
            return err;
    if ((err = check_sasl(sec, sasl, sizeof sasl / sizeof *sasl, errstr, errsize)))
        return err;
    return check_ssl(sec, ssl, sizeof ssl / sizeof *ssl, errstr, errsize);
}

deta_err_t deta_config_load_kafka_security(deta_kafka_security_t *sec, char *errstr,
                                           size_t errsize) {
    memset(sec, 0, sizeof *sec);
    deta_err_t err = load(sec, errstr, errsize);
    if (err)
        explicit_bzero(sec, sizeof *sec); /* no secret kept from refused settings */
    return err;
}

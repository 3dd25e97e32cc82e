/*
 * gateway.c - the simulated payment gateway (see gateway.h).
 *
 * The ledger is a plain file opened with O_APPEND, one line a charge written by
 * one write(2): the kernel places each write at the end as a whole, so the
 * instances that share the file never interleave their lines, and a line
 * written is kept when the process is killed right after (it is in the page
 * cache). A look-up reads the file from the start and takes the first charge
 * line of the key; a last line without its newline (a write still under way
 * elsewhere) is not read. Refunds are lines of the same file ("refund ..."),
 * which a charge's look-up skips, and the other way round. Look-ups are rare (only an attempt that finds an
 * earlier one unfinished makes one), so the scan costs nothing that matters.
 */
#include "gateway.h"

#include "deta/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct payment_gateway {
    payment_settings_t settings;
    char instance[96];
    int ledger; /* the file's descriptor, or -1 without a ledger */
};

payment_gateway_t *payment_gateway_new(const payment_settings_t *s, const char *instance,
                                       char *errstr, size_t errsize) {
    payment_gateway_t *gw = calloc(1, sizeof *gw);
    if (!gw) {
        deta_errf(DETA_ERR_INTERNAL, errstr, errsize, "out of memory");
        return NULL;
    }
    gw->settings = *s;
    snprintf(gw->instance, sizeof gw->instance, "%s", instance);
    gw->ledger = -1;
    if (s->gateway_ledger[0]) {
        gw->ledger = open(s->gateway_ledger, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (gw->ledger < 0) {
            deta_errf(DETA_ERR_INVALID, errstr, errsize, "PAYMENT_GATEWAY_LEDGER: %s: %s",
                      s->gateway_ledger, strerror(errno));
            free(gw);
            return NULL;
        }
    }
    return gw;
}

void payment_gateway_free(payment_gateway_t *gw) {
    if (!gw)
        return;
    if (gw->ledger >= 0)
        close(gw->ledger);
    free(gw);
}

/* One ledger line, written halfway through the latency (a real gateway acts
 * before its answer reaches the caller). */
static deta_err_t act(payment_gateway_t *gw, const char *line, char *errstr, size_t errsize) {
    long latency = gw->settings.gateway_latency_ms;
    deta_sleep_ms(latency / 2);
    if (gw->ledger >= 0) {
        size_t len = strlen(line);
        if (write(gw->ledger, line, len) != (ssize_t)len)
            return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                             "the gateway's ledger cannot be written: %s", strerror(errno));
    }
    deta_sleep_ms(latency - latency / 2);
    return DETA_OK;
}

deta_err_t payment_gateway_charge(payment_gateway_t *gw, const char *key,
                                  const payment_request_t *req, payment_decision_t *out,
                                  char *errstr, size_t errsize) {
    *out = payment_gateway_decide(&gw->settings, req);
    char line[PAYMENT_LEDGER_LINE_MAX];
    payment_ledger_format(line, key, *out, gw->instance);
    return act(gw, line, errstr, errsize);
}

deta_err_t payment_gateway_refund(payment_gateway_t *gw, const char *key, deta_money_t amount,
                                  char *errstr, size_t errsize) {
    char line[PAYMENT_LEDGER_LINE_MAX];
    payment_ledger_format_refund(line, key, amount, gw->instance);
    return act(gw, line, errstr, errsize);
}

/* Calls match on each finished line of the ledger until it answers true;
 * *found says whether one did. */
static deta_err_t scan(payment_gateway_t *gw, bool (*match)(const char *line, void *opaque),
                       void *opaque, bool *found, char *errstr, size_t errsize) {
    *found = false;
    FILE *f = fopen(gw->settings.gateway_ledger, "re");
    if (!f)
        return deta_errf(DETA_ERR_TRANSIENT, errstr, errsize,
                         "the gateway's ledger cannot be read: %s", strerror(errno));
    char line[PAYMENT_LEDGER_LINE_MAX + 2];
    while (!*found && fgets(line, sizeof line, f)) {
        char *nl = strchr(line, '\n');
        if (!nl)
            continue; /* unfinished (or too long to be ours) */
        *nl = '\0';
        *found = match(line, opaque);
    }
    fclose(f);
    return DETA_OK;
}

typedef struct charge_match {
    const char *key;
    payment_decision_t decision;
} charge_match_t;

static bool match_charge(const char *line, void *opaque) {
    charge_match_t *m = opaque;
    char k[DETA_UUID_LEN + 1];
    payment_decision_t d;
    if (!payment_ledger_parse(line, k, &d) || strcmp(k, m->key) != 0)
        return false;
    m->decision = d;
    return true;
}

deta_err_t payment_gateway_lookup(payment_gateway_t *gw, const char *key,
                                  const payment_request_t *req, bool *found,
                                  payment_decision_t *out, char *errstr, size_t errsize) {
    if (gw->ledger < 0) { /* no memory: the rule answers as the charge did */
        *out = payment_gateway_decide(&gw->settings, req);
        *found = true;
        return DETA_OK;
    }
    charge_match_t m = {.key = key};
    deta_err_t err = scan(gw, match_charge, &m, found, errstr, errsize);
    if (!err && *found)
        *out = m.decision;
    return err;
}

typedef struct refund_match {
    const char *key;
    deta_money_t amount;
} refund_match_t;

static bool match_refund(const char *line, void *opaque) {
    refund_match_t *m = opaque;
    char k[DETA_UUID_LEN + 1];
    deta_money_t amount;
    if (!payment_ledger_parse_refund(line, k, &amount) || strcmp(k, m->key) != 0)
        return false;
    m->amount = amount;
    return true;
}

deta_err_t payment_gateway_refund_lookup(payment_gateway_t *gw, const char *key, bool *found,
                                         deta_money_t *amount, char *errstr, size_t errsize) {
    if (gw->ledger < 0) {
        *found = true;
        return DETA_OK;
    }
    refund_match_t m = {.key = key};
    deta_err_t err = scan(gw, match_refund, &m, found, errstr, errsize);
    if (!err && *found)
        *amount = m.amount;
    return err;
}

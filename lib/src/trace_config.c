/*
 * trace_config.c - the tracing settings, OpenTelemetry's standard environment
 * variables (see deta/trace.h and docs/observability.md#traces), read and
 * validated once at start like every other setting (deta/config.h):
 *
 *   OTEL_EXPORTER_OTLP_ENDPOINT         none: tracing off. Spans go to <it>/v1/traces
 *   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  none: the full URL, used as it is (wins)
 *   OTEL_EXPORTER_OTLP_PROTOCOL         http/json (the only one the exporter speaks)
 *   OTEL_EXPORTER_OTLP_TIMEOUT          10000 ms (1..600000: one export's bound;
 *                                       OTEL_EXPORTER_OTLP_TRACES_TIMEOUT wins)
 *   OTEL_SERVICE_NAME                   the service's own name (service.name)
 *   OTEL_TRACES_SAMPLER                 parentbased_always_on (always_on, always_off,
 *                                       traceidratio, parentbased_always_on,
 *                                       parentbased_always_off, parentbased_traceidratio)
 *   OTEL_TRACES_SAMPLER_ARG             1.0 (0..1: the ratio of the *traceidratio kinds)
 *   OTEL_TRACES_EXPORTER                otlp (none: tracing off)
 *   OTEL_SDK_DISABLED                   false (true: tracing off)
 *   OTEL_BSP_MAX_QUEUE_SIZE             2048 (1..1000000 spans waiting; more are dropped)
 *   OTEL_BSP_MAX_EXPORT_BATCH_SIZE      512 (1..OTEL_BSP_MAX_QUEUE_SIZE spans a request)
 *   OTEL_BSP_SCHEDULE_DELAY             5000 ms (1..600000: the longest a span waits
 *                                       for a batch to fill)
 *
 * The endpoint must be an http:// URL: the exporter has no TLS (otlp_http.c says
 * why); an https:// one is refused at start, naming the variable.
 */
#include "trace_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "deta/config.h"

static deta_err_t config_int(const char *name, long def, long min, long max, int *out,
                             char *errstr, size_t errsize) {
    long v;
    deta_err_t err = deta_config_int(name, def, min, max, &v, errstr, errsize);
    if (err == DETA_OK)
        *out = (int)v;
    return err;
}

/* "true"/"false" in any case, as OpenTelemetry's booleans. */
static deta_err_t otel_bool(const char *name, bool *out, char *errstr, size_t errsize) {
    const char *v = deta_config_str(name, NULL);
    *out = false;
    if (!v || strcasecmp(v, "false") == 0)
        return DETA_OK;
    if (strcasecmp(v, "true") == 0) {
        *out = true;
        return DETA_OK;
    }
    return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: \"%.32s\" is neither true nor false",
                     name, v);
}

static const char *const sampler_names[] = {
    [DETA_SAMPLER_ALWAYS_ON] = "always_on",
    [DETA_SAMPLER_ALWAYS_OFF] = "always_off",
    [DETA_SAMPLER_TRACEIDRATIO] = "traceidratio",
    [DETA_SAMPLER_PARENTBASED_ALWAYS_ON] = "parentbased_always_on",
    [DETA_SAMPLER_PARENTBASED_ALWAYS_OFF] = "parentbased_always_off",
    [DETA_SAMPLER_PARENTBASED_TRACEIDRATIO] = "parentbased_traceidratio",
};

bool deta_sampler_parse(const char *name, deta_sampler_kind_t *out) {
    if (!name)
        return false;
    for (size_t i = 0; i < sizeof sampler_names / sizeof *sampler_names; i++) {
        if (strcmp(name, sampler_names[i]) == 0) {
            *out = (deta_sampler_kind_t)i;
            return true;
        }
    }
    return false;
}

static deta_err_t load_endpoint(deta_trace_config_t *cfg, char *errstr, size_t errsize) {
    const char *name = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    const char *url = deta_config_str(name, NULL);
    if (url) {
        if (strlen(url) >= sizeof cfg->endpoint)
            return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: longer than %zu bytes",
                             name, sizeof cfg->endpoint - 1);
        snprintf(cfg->endpoint, sizeof cfg->endpoint, "%s", url);
    } else {
        name = "OTEL_EXPORTER_OTLP_ENDPOINT";
        const char *base = deta_config_str(name, NULL);
        if (!base)
            return DETA_OK;
        size_t n = strlen(base);
        while (n > 0 && base[n - 1] == '/')
            n--;
        if (n + sizeof "/v1/traces" > sizeof cfg->endpoint)
            return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: longer than %zu bytes",
                             name, sizeof cfg->endpoint - sizeof "/v1/traces");
        snprintf(cfg->endpoint, sizeof cfg->endpoint, "%.*s/v1/traces", (int)n, base);
    }
    otlp_url_t parsed;
    char why[256];
    if (!deta_otlp_url_parse(cfg->endpoint, &parsed, why, sizeof why))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "%s: %s", name, why);
    cfg->enabled = true;
    return DETA_OK;
}

static deta_err_t load_sampler(deta_trace_config_t *cfg, char *errstr, size_t errsize) {
    const char *name = deta_config_str("OTEL_TRACES_SAMPLER", "parentbased_always_on");
    if (!deta_sampler_parse(name, &cfg->sampler.kind))
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "OTEL_TRACES_SAMPLER: \"%.40s\" is none of always_on, always_off, "
                         "traceidratio, parentbased_always_on, parentbased_always_off, "
                         "parentbased_traceidratio",
                         name);
    cfg->sampler.ratio = 1.0;
    const char *arg = deta_config_str("OTEL_TRACES_SAMPLER_ARG", NULL);
    if (!arg)
        return DETA_OK;
    char *end;
    errno = 0;
    double r = strtod(arg, &end);
    if (errno || *end || end == arg || !isfinite(r) || r < 0.0 || r > 1.0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "OTEL_TRACES_SAMPLER_ARG: \"%.40s\" is not a ratio between 0 and 1", arg);
    cfg->sampler.ratio = r;
    return DETA_OK;
}

static deta_err_t load_batching(deta_trace_config_t *cfg, char *errstr, size_t errsize) {
    deta_err_t err;
    if ((err = config_int("OTEL_BSP_MAX_QUEUE_SIZE", 2048, 1, 1000000, &cfg->max_queue, errstr,
                          errsize)) ||
        (err = config_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, 1, cfg->max_queue,
                          &cfg->max_batch, errstr, errsize)) ||
        (err = config_int("OTEL_BSP_SCHEDULE_DELAY", 5000, 1, 600000, &cfg->schedule_delay_ms,
                          errstr, errsize)) ||
        (err = config_int("OTEL_EXPORTER_OTLP_TIMEOUT", 10000, 1, 600000,
                          &cfg->export_timeout_ms, errstr, errsize)))
        return err;
    return config_int("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", cfg->export_timeout_ms, 1, 600000,
                      &cfg->export_timeout_ms, errstr, errsize);
}

deta_err_t deta_trace_config_load(deta_trace_config_t *cfg, const char *service, char *errstr,
                                  size_t errsize) {
    memset(cfg, 0, sizeof *cfg);
    deta_err_t err;
    bool disabled = false;
    if ((err = deta_config_text("OTEL_SERVICE_NAME", service && *service ? service : "unknown",
                                cfg->service_name, sizeof cfg->service_name, errstr,
                                errsize)) ||
        (err = load_sampler(cfg, errstr, errsize)) ||
        (err = load_batching(cfg, errstr, errsize)) ||
        (err = otel_bool("OTEL_SDK_DISABLED", &disabled, errstr, errsize)))
        return err;
    const char *protocol = deta_config_str("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
    if (strcmp(protocol, "http/json") != 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "OTEL_EXPORTER_OTLP_PROTOCOL: \"%.32s\": the exporter speaks http/json "
                         "only",
                         protocol);
    const char *exporter = deta_config_str("OTEL_TRACES_EXPORTER", "otlp");
    if (strcmp(exporter, "otlp") != 0 && strcmp(exporter, "none") != 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "OTEL_TRACES_EXPORTER: \"%.32s\" is neither otlp nor none", exporter);
    if ((err = load_endpoint(cfg, errstr, errsize)))
        return err;
    if (disabled || strcmp(exporter, "none") == 0)
        cfg->enabled = false;
    return DETA_OK;
}

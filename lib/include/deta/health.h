/*
 * health.h - dependency health, reported the way Spring Boot's actuator did so that
 * probes written for the original services keep working:
 *
 *   {"status":"UP","components":{"db":{"status":"UP"},"kafka":{"status":"DOWN",
 *    "details":{"error":"..."}}}}
 *
 * Overall status is DOWN (HTTP 503) when any required check is DOWN; an optional
 * check that is DOWN makes the overall status "DEGRADED" with HTTP 200 (the
 * service works, with less safety or speed; the payment service without Redis).
 */
#ifndef DETA_HEALTH_H
#define DETA_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

typedef struct deta_health deta_health_t;

/* Returns true when UP; may write a reason into detail when DOWN. */
typedef bool (*deta_health_check_fn)(void *opaque, char *detail, size_t detailsize);

deta_health_t *deta_health_new(void);
void deta_health_free(deta_health_t *h);
void deta_health_add(deta_health_t *h, const char *name, bool required, deta_health_check_fn fn,
                     void *opaque);
/* Runs every check; returns the report and sets *http_status to 200 or 503. */
json_t *deta_health_report(deta_health_t *h, int *http_status);
/* Runs only the required checks, stopping at the first DOWN one: true when all
 * are UP (the service can do its work; optional checks do not matter). When one
 * is DOWN, detail gets "<name>: <its reason>". */
bool deta_health_required_up(deta_health_t *h, char *detail, size_t detailsize);

#endif

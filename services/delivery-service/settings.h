/*
 * settings.h - delivery-service's own settings (env DELIVERY_*) and its clock.
 *
 *   DELIVERY_DRIVERS          20    drivers seeded at start ("Driver 01" ...)
 *   DELIVERY_DRIVER_CAPACITY  5     concurrent deliveries per driver
 *   DELIVERY_PICKUP_MINUTES   10    simulated minutes from assignment to pickup
 *   DELIVERY_SPEED_KMH        25    driving speed
 *   DELIVERY_CLOCK_SPEED      1     simulated seconds per real second (600: a
 *                                   delivery completes in a few real seconds)
 *   DELIVERY_TICK_MS          200   how often due deliveries are advanced
 */
#ifndef DELIVERY_SETTINGS_H
#define DELIVERY_SETTINGS_H

#include <stddef.h>
#include <stdint.h>

#include "deta/err.h"
#include "domain.h"

/* The defaults of domain.h overridden by the environment. DETA_ERR_INVALID with
 * the variable's name in errstr when a value is malformed or out of range. */
deta_err_t delivery_settings_load(delivery_params_t *p, char *errstr, size_t errsize);

/* The wall clock in milliseconds since the epoch: the one source of "now" for
 * every instant the service writes. */
int64_t delivery_now_ms(void);

#endif

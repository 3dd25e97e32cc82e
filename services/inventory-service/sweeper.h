/*
 * sweeper.h - the thread that releases holds whose payment never came: a HELD
 * reservation INVENTORY_HOLD_GRACE_S past its holdExpiresAt goes back to
 * available and is announced (inventory.released, reason HOLD_EXPIRED). It also
 * keeps the gauge of the oldest hold, for the alert on old holds.
 */
#ifndef INVENTORY_SWEEPER_H
#define INVENTORY_SWEEPER_H

#include "deta/service.h"
#include "domain.h"
#include "events.h"

typedef struct inv_sweeper inv_sweeper_t;

/* settings is copied (the grace). Registers inventory_holds_expired_total and
 * inventory_holds_oldest_age_seconds. */
inv_sweeper_t *inv_sweeper_new(deta_service_t *svc, inv_events_t *events,
                               const inv_settings_t *settings);
deta_err_t inv_sweeper_start(inv_sweeper_t *s, char *errstr, size_t errsize);
/* Stops the thread (it also stops by itself once the service is stopping) and
 * waits for it. Call before deta_service_free: the thread uses the service's pool. */
void inv_sweeper_stop(inv_sweeper_t *s);
void inv_sweeper_free(inv_sweeper_t *s);

#endif

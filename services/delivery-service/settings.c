/*
 * settings.c - reads delivery-service's DELIVERY_* variables through deta_config_int
 * (so they are validated like the library's own) and tells the time.
 *
 * The bounds keep the arithmetic of domain.c far from overflow and reject settings
 * that make no sense (a clock that stands still, a driver who can carry nothing).
 */
#include "settings.h"

#include <time.h>

#include "deta/config.h"

typedef struct setting {
    const char *name;
    long min;
    long max;
    long *field;
} setting_t;

deta_err_t delivery_settings_load(delivery_params_t *p, char *errstr, size_t errsize) {
    delivery_params_defaults(p);
    const setting_t settings[] = {
        {"DELIVERY_DRIVERS", 1, 999, &p->drivers},
        {"DELIVERY_DRIVER_CAPACITY", 1, 1000, &p->capacity},
        {"DELIVERY_PICKUP_MINUTES", 0, 1440, &p->pickup_minutes},
        {"DELIVERY_SPEED_KMH", 1, 300, &p->speed_kmh},
        {"DELIVERY_CLOCK_SPEED", 1, 1000000, &p->clock_speed},
        {"DELIVERY_TICK_MS", 10, 60000, &p->tick_ms},
    };
    for (size_t i = 0; i < sizeof settings / sizeof *settings; i++) {
        const setting_t *s = &settings[i];
        deta_err_t err = deta_config_int(s->name, *s->field, s->min, s->max, s->field, errstr,
                                         errsize);
        if (err)
            return err;
    }
    return DETA_OK;
}

int64_t delivery_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * event_check.c - the checks every consumed event passes before a service acts
 * on it: envelope, key, producer, version (see deta/event_check.h).
 */
#include "deta/event_check.h"

#include <string.h>

#include "deta/topics.h"

deta_err_t deta_event_producer_check(const char *topic, const char *producer, char *errstr,
                                     size_t errsize) {
    const char *owner = deta_topic_owner(topic);
    if (!owner)
        return DETA_OK;
    if (producer && strcmp(producer, owner) == 0)
        return DETA_OK;
    return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                     "producer \"%.64s\" does not own %s (its owner is %s)",
                     producer ? producer : "", topic, owner);
}

deta_err_t deta_event_version_check(const deta_event_t *ev, char *errstr, size_t errsize) {
    int reads = deta_event_type_version(ev->event_type);
    if (reads == 0 || ev->schema_version <= reads)
        return DETA_OK;
    return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                     "schemaVersion %d of %s is newer than this consumer reads (%d)",
                     ev->schema_version, ev->event_type, reads);
}

deta_err_t deta_event_from_msg(const deta_kafka_msg_t *msg, deta_event_t *ev, bool *parsed,
                               char *errstr, size_t errsize) {
    char why[256];
    *parsed = false;
    if (deta_event_parse(msg->value, msg->len, ev, why, sizeof why) != DETA_OK)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize, "malformed event: %s", why);
    *parsed = true;
    if (!msg->key || msg->key_len != strlen(ev->order_id) ||
        memcmp(msg->key, ev->order_id, msg->key_len) != 0)
        return deta_errf(DETA_ERR_INVALID, errstr, errsize,
                         "message key does not match orderId %s", ev->order_id);
    deta_err_t err = deta_event_producer_check(msg->topic, ev->producer, errstr, errsize);
    if (err)
        return err;
    return deta_event_version_check(ev, errstr, errsize);
}

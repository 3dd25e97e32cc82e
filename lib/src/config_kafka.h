/*
 * config_kafka.h - private to libdeta: the Kafka transport settings, read for
 * config.c (deta/config.h's table has them; config_kafka.c the rules).
 */
#ifndef DETA_CONFIG_KAFKA_H
#define DETA_CONFIG_KAFKA_H

#include <stddef.h>

#include "deta/config.h"

/* Fills sec from KAFKA_SECURITY_PROTOCOL and the KAFKA_SASL_* and KAFKA_SSL_*
 * variables; DETA_ERR_INVALID naming the variables when they are malformed or
 * do not go together. */
deta_err_t deta_config_load_kafka_security(deta_kafka_security_t *sec, char *errstr,
                                           size_t errsize);

#endif

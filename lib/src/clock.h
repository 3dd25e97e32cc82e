/*
 * clock.h - private to libdeta: beside the public deta/clock.h, the
 * deadlines pthread_cond_timedwait needs on condition variables that run on
 * that clock. Every timed wait in the library uses CLOCK_MONOTONIC, so that a
 * wall-clock step (NTP) neither cuts a wait short nor stretches it.
 */
#ifndef DETA_CLOCK_H
#define DETA_CLOCK_H

#include <pthread.h>
#include <time.h>

#include "deta/clock.h" /* deta_clock_ms, deta_sleep_ms */

/* The CLOCK_MONOTONIC instant ms from now (0 when ms is negative). */
struct timespec deta_clock_after(long ms);
/* The CLOCK_MONOTONIC instant of `at`, a deta_clock_ms() value. */
struct timespec deta_clock_at(long at);
/* Initializes cond to time its waits on CLOCK_MONOTONIC; returns cond. */
pthread_cond_t *deta_cond_init_monotonic(pthread_cond_t *cond);

#endif

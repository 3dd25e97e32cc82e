/*
 * clock.h - time as the services measure it: the monotonic clock in
 * milliseconds (for deadlines and durations: a wall-clock step neither cuts
 * them short nor stretches them) and a sleep that a signal does not cut short.
 */
#ifndef DETA_PUBLIC_CLOCK_H
#define DETA_PUBLIC_CLOCK_H

/* Milliseconds on CLOCK_MONOTONIC (an arbitrary origin: only differences count). */
long deta_clock_ms(void);
/* Sleeps ms milliseconds (nothing for ms <= 0), resuming after a signal. */
void deta_sleep_ms(long ms);

#endif

/*
 * perthread.h - private to libdeta: one object per thread, made on the thread's
 * first request and freed when the thread exits or the set is freed. The
 * connection pools of db.c, redis.c and cql.c are this, with their own
 * constructors, each given the argument the set was made with (the pool's copy of
 * its configuration, which must outlive the set).
 */
#ifndef DETA_PERTHREAD_H
#define DETA_PERTHREAD_H

typedef struct deta_perthread deta_perthread_t;
typedef void *(*deta_perthread_new_fn)(const void *arg);
typedef void (*deta_perthread_free_fn)(void *obj);

/* arg is passed to make as it is (it may be NULL); the set does not copy it. */
deta_perthread_t *deta_perthread_new(const void *arg, deta_perthread_new_fn make,
                                     deta_perthread_free_fn destroy);
/* The calling thread's object; NULL only when it cannot be made. */
void *deta_perthread_get(deta_perthread_t *set);
/* Frees every object still alive, whichever thread made it. NULL is fine. */
void deta_perthread_free(deta_perthread_t *set);

#endif

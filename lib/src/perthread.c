/*
 * perthread.c - one object per thread (see perthread.h).
 *
 * A pthread key holds each thread's entry; its destructor frees the object when
 * the thread exits. Every live entry is also on a list, so that freeing the set
 * frees the objects of threads still running (after pthread_key_delete no
 * destructor runs for the key any more, so nothing is freed twice).
 */
#include "perthread.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct entry {
    deta_perthread_t *set;
    void *obj;
    struct entry *prev, *next;
} entry_t;

struct deta_perthread {
    const void *arg; /* the owner's, passed to make */
    deta_perthread_new_fn make;
    deta_perthread_free_fn destroy;
    pthread_key_t key;
    pthread_mutex_t lock;
    entry_t *entries; /* every object not yet freed */
};

static void unlink_entry(deta_perthread_t *set, entry_t *e) {
    if (e->prev)
        e->prev->next = e->next;
    else
        set->entries = e->next;
    if (e->next)
        e->next->prev = e->prev;
}

/* Thread exit: free that thread's object. */
static void release_thread(void *value) {
    entry_t *e = value;
    deta_perthread_t *set = e->set;
    pthread_mutex_lock(&set->lock);
    unlink_entry(set, e);
    pthread_mutex_unlock(&set->lock);
    set->destroy(e->obj);
    free(e);
}

deta_perthread_t *deta_perthread_new(const void *arg, deta_perthread_new_fn make,
                                     deta_perthread_free_fn destroy) {
    if (!make || !destroy)
        return NULL;
    deta_perthread_t *set = calloc(1, sizeof *set);
    if (!set)
        return NULL;
    set->arg = arg;
    set->make = make;
    set->destroy = destroy;
    if (pthread_key_create(&set->key, release_thread) != 0) {
        free(set);
        return NULL;
    }
    pthread_mutex_init(&set->lock, NULL);
    return set;
}

void *deta_perthread_get(deta_perthread_t *set) {
    if (!set)
        return NULL;
    entry_t *e = pthread_getspecific(set->key);
    if (e)
        return e->obj;
    e = calloc(1, sizeof *e);
    void *obj = e ? set->make(set->arg) : NULL;
    if (!obj || pthread_setspecific(set->key, e) != 0) {
        if (obj)
            set->destroy(obj);
        free(e);
        return NULL;
    }
    e->set = set;
    e->obj = obj;
    pthread_mutex_lock(&set->lock);
    e->next = set->entries;
    if (set->entries)
        set->entries->prev = e;
    set->entries = e;
    pthread_mutex_unlock(&set->lock);
    return obj;
}

void deta_perthread_free(deta_perthread_t *set) {
    if (!set)
        return;
    pthread_key_delete(set->key);
    entry_t *e = set->entries;
    while (e) {
        entry_t *next = e->next;
        set->destroy(e->obj);
        free(e);
        e = next;
    }
    pthread_mutex_destroy(&set->lock);
    free(set);
}

/*
 * test_perthread.c - one object per thread (lib/src/perthread.h, private to
 * libdeta): a thread gets the same object on every call, another thread its own;
 * a thread's object is freed when the thread exits, the others when the set is
 * freed, each exactly once. No server: the objects are counters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <cmocka.h>

#include "../../lib/src/perthread.h"

static atomic_int made, freed;

/* The object: the number it was made as (1, 2, ...). */
static void *make(const void *arg) {
    (void)arg;
    int *obj = malloc(sizeof *obj);
    if (obj)
        *obj = atomic_fetch_add(&made, 1) + 1;
    return obj;
}

static void destroy(void *obj) {
    atomic_fetch_add(&freed, 1);
    free(obj);
}

static int reset(void **state) {
    (void)state;
    atomic_store(&made, 0);
    atomic_store(&freed, 0);
    return 0;
}

static void *get_on_thread(void *set) { return deta_perthread_get(set); }

static void test_same_object_on_one_thread(void **state) {
    (void)state;
    int cfg = 0;
    deta_perthread_t *set = deta_perthread_new(&cfg, make, destroy);
    assert_non_null(set);
    assert_int_equal(atomic_load(&made), 0); /* made on first request only */
    int *a = deta_perthread_get(set);
    int *b = deta_perthread_get(set);
    assert_non_null(a);
    assert_ptr_equal(a, b);
    assert_int_equal(atomic_load(&made), 1);
    deta_perthread_free(set);
    assert_int_equal(atomic_load(&freed), 1); /* the main thread's, by the free */
}

static void test_other_thread_own_object_freed_at_exit(void **state) {
    (void)state;
    int cfg = 0;
    deta_perthread_t *set = deta_perthread_new(&cfg, make, destroy);
    int *mine = deta_perthread_get(set);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, get_on_thread, set), 0);
    void *theirs = NULL;
    pthread_join(t, &theirs);
    assert_non_null(theirs);
    assert_ptr_not_equal(theirs, mine);
    assert_int_equal(atomic_load(&made), 2);
    assert_int_equal(atomic_load(&freed), 1); /* the thread's, when it exited */
    assert_ptr_equal(deta_perthread_get(set), mine);
    deta_perthread_free(set);
    assert_int_equal(atomic_load(&freed), 2);
}

/* A thread still running when the set is freed: its object goes with the set,
 * and its exit frees nothing more. */
typedef struct holder {
    deta_perthread_t *set;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stage; /* 1: object taken; 2: set freed, may exit */
} holder_t;

static void *hold_until_freed(void *arg) {
    holder_t *h = arg;
    deta_perthread_get(h->set);
    pthread_mutex_lock(&h->lock);
    h->stage = 1;
    pthread_cond_broadcast(&h->cond);
    while (h->stage != 2)
        pthread_cond_wait(&h->cond, &h->lock);
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

static void test_free_frees_live_threads_objects_once(void **state) {
    (void)state;
    int cfg = 0;
    holder_t h = {.set = deta_perthread_new(&cfg, make, destroy)};
    pthread_mutex_init(&h.lock, NULL);
    pthread_cond_init(&h.cond, NULL);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, hold_until_freed, &h), 0);
    pthread_mutex_lock(&h.lock);
    while (h.stage != 1)
        pthread_cond_wait(&h.cond, &h.lock);
    pthread_mutex_unlock(&h.lock);
    deta_perthread_free(h.set);
    assert_int_equal(atomic_load(&freed), 1);
    pthread_mutex_lock(&h.lock);
    h.stage = 2;
    pthread_cond_broadcast(&h.cond);
    pthread_mutex_unlock(&h.lock);
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&freed), 1);
    pthread_cond_destroy(&h.cond);
    pthread_mutex_destroy(&h.lock);
}

static void *make_nothing(const void *arg) {
    (void)arg;
    return NULL;
}

static const void *seen_arg;
static void *make_seeing(const void *arg) {
    seen_arg = arg;
    return make(arg);
}

/* The constructor gets the argument the set was made with, as it is: the pools
 * pass their own copy of their settings. */
static void test_make_gets_the_sets_argument(void **state) {
    (void)state;
    int arg = 0;
    deta_perthread_t *set = deta_perthread_new(&arg, make_seeing, destroy);
    assert_non_null(deta_perthread_get(set));
    assert_ptr_equal(seen_arg, &arg);
    deta_perthread_free(set);
}

static void test_bad_arguments_and_failed_make(void **state) {
    (void)state;
    int cfg = 0;
    assert_null(deta_perthread_new(&cfg, NULL, destroy));
    assert_null(deta_perthread_new(&cfg, make, NULL));
    deta_perthread_free(NULL);
    deta_perthread_t *set = deta_perthread_new(&cfg, make_nothing, destroy);
    assert_null(deta_perthread_get(set));
    deta_perthread_free(set);
    assert_int_equal(atomic_load(&freed), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_same_object_on_one_thread, reset),
        cmocka_unit_test_setup(test_other_thread_own_object_freed_at_exit, reset),
        cmocka_unit_test_setup(test_free_frees_live_threads_objects_once, reset),
        cmocka_unit_test_setup(test_make_gets_the_sets_argument, reset),
        cmocka_unit_test_setup(test_bad_arguments_and_failed_make, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

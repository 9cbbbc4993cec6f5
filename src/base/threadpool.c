/* threadpool.c - persistent workers woken per parallel region by a generation counter; tasks
 * claimed with an atomic counter; completion counted down. Decoding runs hundreds of short
 * regions per token, so a worker (and the caller, for completion) first spins briefly on the
 * counters (~tens of microseconds) before sleeping on the mutex/condition variable: a futex
 * wake-up costs several microseconds per region, a bounded spin does not burn a busy machine. */
#define _GNU_SOURCE
#include "base/threadpool.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/status.h"

struct clara_pool {
    int n_threads;
    pthread_t *workers;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    _Atomic unsigned long generation; /* bumped (under mu) for each parallel region */
    atomic_int n_active;              /* workers still inside the current region */
    int quit;
    clara_task_fn fn;
    void *arg;
    size_t n_tasks;
    atomic_size_t next; /* next unclaimed task */
};

typedef struct {
    clara_pool *pool;
    int index;
} worker_arg;

static void run_tasks(clara_pool *p, int thread) {
    for (;;) {
        size_t t = atomic_fetch_add(&p->next, 1);
        if (t >= p->n_tasks) break;
        p->fn(p->arg, t, thread);
    }
}

/* Spin iterations before sleeping: a pause is ~10-60 cycles, so a few tens of microseconds. */
#define SPIN_ITERS 4096

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Spins until the generation differs from seen (true) or the budget runs out (false). */
static bool spin_for_generation(clara_pool *p, unsigned long seen) {
    for (int i = 0; i < SPIN_ITERS; i++) {
        if (atomic_load_explicit(&p->generation, memory_order_acquire) != seen) return true;
        cpu_relax();
    }
    return false;
}

static void *worker_main(void *varg) {
    worker_arg *wa = varg;
    clara_pool *p = wa->pool;
    int index = wa->index;
    free(wa);
    unsigned long seen = 0;
    for (;;) {
        if (!spin_for_generation(p, seen)) {
            pthread_mutex_lock(&p->mu);
            while (!p->quit && atomic_load(&p->generation) == seen)
                pthread_cond_wait(&p->wake, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        /* quit is set under mu, and generation bumped with it: read it under mu */
        pthread_mutex_lock(&p->mu);
        int quit = p->quit;
        pthread_mutex_unlock(&p->mu);
        if (quit) break;
        seen = atomic_load(&p->generation);
        run_tasks(p, index);
        if (atomic_fetch_sub(&p->n_active, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

clara_status clara_pool_create(int n_threads, clara_pool **out) {
    if (n_threads < 1) n_threads = 1;
    clara_pool *p = calloc(1, sizeof *p);
    if (!p) return clara_fail(CLARA_ERR_NOMEM, "out of memory creating the thread pool");
    p->n_threads = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->workers = calloc((size_t)n_threads, sizeof *p->workers);
    if (!p->workers) {
        clara_pool_free(p);
        return clara_fail(CLARA_ERR_NOMEM, "out of memory creating the thread pool");
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa) *wa = (worker_arg){p, i};
        if (!wa || pthread_create(&p->workers[i], NULL, worker_main, wa) != 0) {
            free(wa);
            p->n_threads = i; /* only the started ones are joined */
            clara_pool_free(p);
            return clara_fail(CLARA_ERR_NOMEM, "cannot start worker thread %d", i);
        }
    }
    *out = p;
    return CLARA_OK;
}

void clara_pool_free(clara_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    atomic_fetch_add(&p->generation, 1); /* wakes spinning workers too */
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->workers[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->workers);
    free(p);
}

int clara_pool_threads(const clara_pool *p) {
    return p->n_threads;
}

void clara_pool_run(clara_pool *p, size_t n_tasks, clara_task_fn fn, void *arg) {
    if (n_tasks == 0) return;
    if (p->n_threads == 1 || n_tasks == 1) {
        for (size_t t = 0; t < n_tasks; t++) fn(arg, t, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->n_tasks = n_tasks;
    atomic_store(&p->next, 0);
    atomic_store(&p->n_active, p->n_threads - 1);
    /* release: a worker that sees the new generation also sees fn, arg, n_tasks and next */
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p, 0);
    for (int i = 0; i < SPIN_ITERS && atomic_load(&p->n_active) > 0; i++) cpu_relax();
    if (atomic_load(&p->n_active) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->n_active) > 0) pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}

/* Counts distinct (physical id, core id) pairs in /proc/cpuinfo. */
int clara_physical_cores(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    int pairs[1024][2], n = 0, phys = 0;
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        int v;
        if (sscanf(line, "physical id : %d", &v) == 1) phys = v;
        if (sscanf(line, "core id : %d", &v) == 1) {
            int seen = 0;
            for (int i = 0; i < n; i++) seen |= pairs[i][0] == phys && pairs[i][1] == v;
            if (!seen && n < 1024) {
                pairs[n][0] = phys;
                pairs[n][1] = v;
                n++;
            }
        }
    }
    if (f) fclose(f);
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0 || (online > 0 && n > online)) n = online > 0 ? (int)online : 1;
    return n;
}

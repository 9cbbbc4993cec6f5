/* threadpool.h - one persistent pool of worker threads (no per-operation thread creation). The
 * caller runs `fn(arg, task, thread_index)` for task = 0..n_tasks-1; tasks are handed out by an
 * atomic counter (work stealing for uneven rows), and the call returns when all are done. */
#ifndef CLARA_BASE_THREADPOOL_H
#define CLARA_BASE_THREADPOOL_H

#include <stddef.h>

#include "clara.h"

typedef struct clara_pool clara_pool;
typedef void (*clara_task_fn)(void *arg, size_t task, int thread);

/* n_threads >= 1 counts the calling thread; n_threads - 1 workers are started. */
clara_status clara_pool_create(int n_threads, clara_pool **out);
void clara_pool_free(clara_pool *p);
int clara_pool_threads(const clara_pool *p);
/* Runs n_tasks tasks over all threads. Not reentrant: one parallel region at a time per pool. */
void clara_pool_run(clara_pool *p, size_t n_tasks, clara_task_fn fn, void *arg);

/* Physical cores of this machine (falls back to online CPUs). */
int clara_physical_cores(void);

#endif

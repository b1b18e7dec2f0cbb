/* core/threadpool.h — a fixed pool of worker threads for data-parallel loops.
 *
 * tp_create() starts n_threads-1 workers (the calling thread is the n-th). tp_parallel_for()
 * splits [0, n) into at most n_threads contiguous ranges, runs fn on each (one on the
 * caller) and returns when all are done. Calls on one pool must not overlap (one caller at
 * a time); fn must not call back into the same pool. A NULL pool runs fn(ctx, 0, n, 0)
 * inline, so every kernel works without threads. The pool is owned by the caller of
 * tp_create() and released with tp_free() (NULL is fine).
 * Errors: RT_ENOMEM, RT_EINTERNAL (thread creation failed).
 */
#ifndef RT_THREADPOOL_H
#define RT_THREADPOOL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tp_pool tp_pool;

/* fn processes items [begin, end); thread is 0..n_threads-1. */
typedef void (*tp_fn)(void *ctx, size_t begin, size_t end, int thread);

int tp_create(int n_threads, tp_pool **out); /* n_threads <= 0: one per online CPU */
int tp_size(const tp_pool *p);              /* 1 for NULL */
void tp_parallel_for(tp_pool *p, size_t n, tp_fn fn, void *ctx);
void tp_free(tp_pool *p);

#ifdef __cplusplus
}
#endif

#endif

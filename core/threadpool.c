#include "core/threadpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/status.h"

struct tp_pool {
    int n;                 /* threads including the caller */
    pthread_t *threads;    /* [n-1] */
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    unsigned long gen;     /* bumped for each parallel_for */
    int pending;           /* workers still running the current job */
    int stop;
    tp_fn fn;
    void *ctx;
    size_t count;
};

typedef struct { tp_pool *p; int id; } worker_arg;

static void range_of(size_t n, int parts, int i, size_t *b, size_t *e) {
    size_t chunk = n / (size_t)parts, rem = n % (size_t)parts;
    size_t ui = (size_t)i;
    *b = ui * chunk + (ui < rem ? ui : rem);
    *e = *b + chunk + (ui < rem ? 1 : 0);
}

static void *worker(void *arg) {
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    tp_pool *p = wa.p;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->gen == seen) pthread_cond_wait(&p->start, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        tp_fn fn = p->fn;
        void *ctx = p->ctx;
        size_t n = p->count, b, e;
        pthread_mutex_unlock(&p->mu);
        range_of(n, p->n, wa.id, &b, &e);
        if (b < e) fn(ctx, b, e, wa.id);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int tp_create(int n_threads, tp_pool **out) {
    *out = NULL;
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    tp_pool *p = rt_calloc(1, sizeof *p);
    if (!p) return RT_ENOMEM;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    if (n_threads > 1) {
        p->threads = rt_calloc((size_t)n_threads - 1, sizeof *p->threads);
        if (!p->threads) { tp_free(p); return RT_ENOMEM; }
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = rt_malloc(sizeof *wa);
        if (!wa) { p->n = i; tp_free(p); return RT_ENOMEM; }
        wa->p = p;
        wa->id = i;
        if (pthread_create(&p->threads[i - 1], NULL, worker, wa)) {
            free(wa);
            p->n = i;
            tp_free(p);
            return rt_fail(RT_EINTERNAL, "cannot start worker thread %d of %d", i, n_threads);
        }
    }
    *out = p;
    return 0;
}

int tp_size(const tp_pool *p) { return p ? p->n : 1; }

void tp_parallel_for(tp_pool *p, size_t n, tp_fn fn, void *ctx) {
    if (n == 0) return;
    if (!p || p->n == 1 || n == 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->count = n;
    p->pending = p->n - 1;
    p->gen++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    size_t b, e;
    range_of(n, p->n, 0, &b, &e);
    if (b < e) fn(ctx, b, e, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

void tp_free(tp_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i - 1], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    free(p->threads);
    free(p);
}

/* bench/student_bench.h — the setup the CPU student benchmarks share (bench/train.c, bench/kd.c).
 *
 * sb_open() builds a random-init model from a config.json, a thread pool, activations for
 * B × N tokens and a random batch: token ids drawn from a fixed seed, one document per sequence,
 * every next token a target (as the PyTorch peer in bench/train_torch.py does). sb_close()
 * frees what sb_open made (also after a failed sb_open). Returns 0 or the failing call's code
 * with `what` naming the step that failed (its message is rt_errmsg()). */
#ifndef RT_BENCH_STUDENT_BENCH_H
#define RT_BENCH_STUDENT_BENCH_H

#include <stdlib.h>

#include "core/json.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "kernels/matmul.h"
#include "student/model.h"
#include "student/rng.h"

typedef struct {
    int64_t B, N, T;        /* sequences, their length, tokens */
    sm_model *m;
    tp_pool *pool;
    sm_acts *a;
    int32_t *tok, *ds, *pos, *tg;   /* [T] each */
    int64_t targets;        /* tokens with a target */
    sm_batch b;
} sb_setup;

static int sb_open(const char *config, int64_t B, int64_t N, int threads, sb_setup *s, const char **what) {
    *s = (sb_setup){.B = B, .N = N, .T = B * N};
    int64_t T = s->T;
    json_t *cfg;
    int rc;
    if ((rc = rt_json_load_file(config, &cfg))) return *what = config, rc;
    rc = sm_create_random(cfg, 1, &s->m);
    json_decref(cfg);
    if (rc) return *what = "model", rc;
    mm_blas_single_thread();
    if ((rc = tp_create(threads, &s->pool))) return *what = "threads", rc;
    if ((rc = sm_acts_create(s->m, T, false, 0, &s->a))) return *what = "activations", rc;
    s->tok = malloc((size_t)T * 4), s->ds = malloc((size_t)T * 4), s->pos = malloc((size_t)T * 4);
    s->tg = malloc((size_t)T * 4);
    if (!s->tok || !s->ds || !s->pos || !s->tg) return *what = "batch", rt_fail(RT_ENOMEM, "%lld tokens", (long long)T);
    sr_rng r;
    sr_seed(&r, 2);
    for (int64_t t = 0; t < T; t++) {
        s->tok[t] = (int32_t)sr_below(&r, (uint64_t)s->m->V);
        s->ds[t] = (int32_t)(t / N * N);
        s->pos[t] = (int32_t)(t % N);
    }
    for (int64_t t = 0; t < T; t++) {
        s->tg[t] = (t + 1) % N ? s->tok[t + 1] : -1;
        s->targets += s->tg[t] >= 0;
    }
    s->b = (sm_batch){T, s->tok, s->ds, s->pos, s->tg};
    return 0;
}

static void sb_close(sb_setup *s) {
    sm_acts_free(s->a);
    sm_free(s->m);
    tp_free(s->pool);
    free(s->tok), free(s->ds), free(s->pos), free(s->tg);
    *s = (sb_setup){0};
}

#endif

/* bench/generate.c — decode speed of the engine (teacher/engine.h): B requests of a P-token
 * prompt each, greedy, EOS ignored; runs once with 1 new token and once with N, so that
 * decode time = t(N) − t(1) covers B·(N−1) tokens. Also measures this machine's read
 * bandwidth (sum over a 1 GiB buffer split over the same threads) for the roofline.
 *   generate MODEL_DIR PROMPT_LEN NEW_TOKENS BATCH THREADS [cpu|cuda]
 * prints "decode_seconds decode_tokens step_weight_bytes read_GBps decode_cpu_seconds" (weights
 * read per decode step: all but the untied input embedding, in the dtype the engine holds them;
 * read_GBps is this machine's host read bandwidth, 0 on cuda, where bench/first_light.sh
 * measures the GPU's; decode_cpu_seconds is the same difference in process CPU time, user +
 * system, which other work on a shared machine inflates far less than wall time) */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "core/clock.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "teacher/engine.h"

static int fail(void) {
    fprintf(stderr, "generate: %s\n", rt_errmsg());
    return 1;
}

static double cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_stime.tv_sec + 1e-6 * (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

static int run(te_model *m, int plen, int nnew, int batch, double *secs, double *cpu) {
    const mc_config *c = te_model_config(m);
    te_opts o = {.max_batch = batch, .cache_tokens = (int64_t)batch * (plen + nnew + 16)};
    te_engine *e;
    if (te_engine_create(m, &o, &e)) return -1;
    int32_t *p = malloc((size_t)plen * sizeof *p);
    double t0 = now_s(), c0 = cpu_s();
    for (int b = 0; b < batch; b++) {
        for (int i = 0; i < plen; i++) p[i] = (int32_t)(((int64_t)(b * plen + i) * 7919 + 13) % c->vocab_size);
        te_request r = {.prompt = p, .n_prompt = plen, .n_samples = 1, .max_tokens = nnew, .sampling = SMP_GREEDY,
                        .ignore_config_eos = true};
        if (te_submit(e, &r)) return -1;
    }
    while (te_busy(e)) {
        te_result *res;
        size_t n;
        if (te_step(e, &res, &n)) return -1;
        te_results_free(res, n);
    }
    *secs = now_s() - t0;
    *cpu = cpu_s() - c0;
    free(p);
    te_engine_free(e);
    return 0;
}

typedef struct {
    const float *x;
    size_t n;
    double part[1024];
} bw_ctx;

/* 16 independent accumulators: the loop is bound by memory, not by one chain of adds */
static void bw_sum(void *p, size_t b, size_t e, int th) {
    bw_ctx *c = p;
    float acc[16] = {0};
    size_t end = e * 4096 < c->n ? e * 4096 : c->n;
    for (size_t i = b * 4096; i + 16 <= end; i += 16)
        for (int k = 0; k < 16; k++) acc[k] += c->x[i + k];
    double s = 0;
    for (int k = 0; k < 16; k++) s += acc[k];
    c->part[th] += s;
}

static double read_bandwidth(tp_pool *pool) {
    size_t n = (size_t)1 << 28;   /* 1 GiB of floats */
    float *x = malloc(n * sizeof *x);
    if (!x) return 0;
    for (size_t i = 0; i < n; i++) x[i] = 1.0f;
    bw_ctx c = {.x = x, .n = n};
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now_s();
        tp_parallel_for(pool, n / 4096, bw_sum, &c);
        double t = now_s() - t0;
        best = t < best ? t : best;
    }
    free(x);
    return (double)n * sizeof(float) / best / 1e9;
}

int main(int argc, char **argv) {
    te_device dev = TE_DEVICE_CPU;
    if ((argc != 6 && argc != 7) || (argc == 7 && te_device_parse(argv[6], &dev))) {
        fprintf(stderr, "usage: generate DIR PROMPT_LEN NEW_TOKENS BATCH THREADS [cpu|cuda]\n");
        return 2;
    }
    int plen = atoi(argv[2]), nnew = atoi(argv[3]), batch = atoi(argv[4]), th = atoi(argv[5]);
    tp_pool *pool = NULL;
    if (tp_create(th, &pool)) return fail();
    te_model *m;
    te_load_opts lo = {.pool = pool, .device = dev, .gpu = 0};
    if (te_model_load_opts(argv[1], &lo, &m)) return fail();
    double t1, tn, c1, cn;
    if (run(m, plen, 1, batch, &t1, &c1) || run(m, plen, 1, batch, &t1, &c1) || run(m, plen, nnew, batch, &tn, &cn))
        return fail();
    const mc_config *c = te_model_config(m);
    /* bytes read per decode step: every weight but the input embedding (one row per token) */
    double held = (double)te_model_resident_bytes(m), per = held / (double)mc_param_count(c, false);
    double w = held - (c->tie_word_embeddings ? 0 : (double)c->vocab_size * c->hidden_size * per);
    printf("%.6f %d %.0f %.3f %.6f\n", tn - t1, batch * (nnew - 1), w, dev == TE_DEVICE_CPU ? read_bandwidth(pool) : 0.0,
           cn - c1);
    te_model_free(m);
    tp_free(pool);
    return 0;
}

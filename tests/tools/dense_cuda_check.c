/* tests/tools/dense_cuda_check.c — the CUDA teacher engine against the CPU engine on a real GPU:
 * the end-to-end check for a device session (the kernels alone: make gpu-test).
 *
 *   dense_cuda_check MODEL_DIR...   (a dense Llama/Qwen2 checkpoint, head_dim 64 or 128)
 *   mpirun -np N dense_cuda_check MODEL_DIR...   (tensor parallel: one GPU per rank)
 *
 * Under mpirun the CUDA engine is split over the ranks (te_load_opts.comm) and every rank runs the
 * CPU engine alone and compares; rank 0 prints, every rank's failure counts.
 * For each model: the CPU engine and the CUDA engine (te_model_load_opts) run the same requests
 * — prompts of 5, 37, 1 and 300 tokens (the last in chunks of 64: a chunk continuing a cached
 * prefix), one with 3 samples, greedy, 32 new tokens each, top-2 logprobs — and the tool prints
 * per sample the tokens compared, the first divergence if any (with the CPU's top-2 margin
 * there), the largest |Δ logprob|, and the wall time of each engine (information only).
 * A divergence counts as a failure when the CPU's margin at that token was ≥ 0.1 (a bf16 path
 * can flip a nearer tie without any bug); |Δ logprob| must stay ≤ 0.15 up to the first
 * divergence. Exit 0 when every model passes, 1 otherwise, and 0 with "skipped: …" when no CUDA
 * device is usable (or the build has no CUDA).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/comm.h"
#include "core/status.h"
#include "teacher/engine.h"

#define NREQ 4
#define NEW 32

typedef struct {
    te_result *r;
    size_t n;
    double seconds;
} run_out;

static int by_tag(const void *a, const void *b) {
    const te_result *x = a, *y = b;
    if (x->tag != y->tag) return x->tag < y->tag ? -1 : 1;
    return x->sample - y->sample;
}

static int run(te_model *m, const int32_t *const *prompts, const int64_t *plen, run_out *out) {
    te_opts o = {.max_batch = 8, .cache_tokens = 8192, .block_size = 16, .prefill_chunk = 64};
    te_engine *e;
    int rc = te_engine_create(m, &o, &e);
    if (rc) return rc;
    static const int nsmp[NREQ] = {1, 3, 1, 1};
    for (int i = 0; i < NREQ && !rc; i++) {
        te_request q = {.prompt = prompts[i], .n_prompt = plen[i], .n_samples = nsmp[i], .max_tokens = NEW,
                        .sampling = SMP_GREEDY, .ignore_config_eos = true, .logprobs = true, .top_logprobs = 2,
                        .tag = (uint64_t)i};
        rc = te_submit(e, &q);
    }
    double t0 = now_s();
    size_t cap = 0;
    while (!rc && te_busy(e)) {
        te_result *r;
        size_t n;
        rc = te_step(e, &r, &n);
        if (n && out->n + n > cap) out->r = realloc(out->r, (cap = 2 * (out->n + n)) * sizeof *out->r);
        if (n) memcpy(out->r + out->n, r, n * sizeof *r);
        out->n += n;
        free(r);
    }
    out->seconds = now_s() - t0;
    te_engine_free(e);
    if (!rc) qsort(out->r, out->n, sizeof *out->r, by_tag);
    return rc;
}

static bool quiet;   /* ranks other than 0 */
#define printf(...) (quiet ? 0 : printf(__VA_ARGS__))

static int check(const char *dir, rt_comm *comm) {
    te_model *cm = NULL, *gm = NULL;
    te_load_opts lc = {.device = TE_DEVICE_CPU}, lg = {.device = TE_DEVICE_CUDA, .gpu = -1, .comm = comm};
    int rc = te_model_load_opts(dir, &lg, &gm);
    if (rc == RT_EUNSUPPORTED) {
        printf("skipped: %s\n", rt_errmsg());
        return -1;
    }
    if (rc) {
        printf("FAIL %s: cuda load: %s\n", dir, rt_errmsg());
        return 1;
    }
    if ((rc = te_model_load_opts(dir, &lc, &cm))) {
        printf("FAIL %s: cpu load: %s\n", dir, rt_errmsg());
        te_model_free(gm);
        return 1;
    }
    int64_t V = te_model_config(cm)->vocab_size;
    static const int64_t plen[NREQ] = {5, 37, 1, 300};
    int32_t *buf = malloc(343 * sizeof(int32_t));
    const int32_t *prompts[NREQ];
    for (int i = 0, at = 0; i < NREQ; at += (int)plen[i], i++) {
        for (int64_t j = 0; j < plen[i]; j++) buf[at + j] = (int32_t)((11 + i * 7919 + j * 104729) % V);
        prompts[i] = buf + at;
    }
    run_out c = {0}, g = {0};
    int fail = 0;
    if ((rc = run(cm, prompts, plen, &c)) || (rc = run(gm, prompts, plen, &g))) {
        printf("FAIL %s: %s\n", dir, rt_errmsg());
        fail = 1;
    }
    for (size_t i = 0; !fail && i < c.n && i < g.n; i++) {
        const te_result *a = &c.r[i], *b = &g.r[i];
        int64_t t = 0, n = a->n_ids < b->n_ids ? a->n_ids : b->n_ids;
        float worst = 0;
        for (; t < n && a->ids[t] == b->ids[t]; t++) worst = fmaxf(worst, fabsf(a->logprobs[t] - b->logprobs[t]));
        bool same = t == a->n_ids && t == b->n_ids;
        float margin = !same && t < a->n_ids ? a->top_logprobs[2 * t] - a->top_logprobs[2 * t + 1] : 0;
        bool bad = worst > 0.15f || (!same && margin >= 0.1f);
        fail |= bad;
        printf("%s request %llu sample %d: %lld of %lld tokens equal%s, max |Δ logprob| %.4f", bad ? "FAIL" : "ok  ",
               (unsigned long long)a->tag, a->sample, (long long)t, (long long)a->n_ids, same ? "" : " (diverged)",
               worst);
        if (!same) printf("; CPU top-2 margin there %.3f", margin);
        printf("\n");
    }
    if (!fail && c.n != g.n) printf("FAIL %s: %zu CPU results, %zu GPU\n", dir, c.n, g.n), fail = 1;
    printf("%s %s: cpu %.2f s, cuda %.2f s for %d samples of %d tokens\n", fail ? "FAIL" : "ok  ", dir, c.seconds,
           g.seconds, 6, NEW);
    te_results_free(c.r, c.n);
    te_results_free(g.r, g.n);
    free(buf);
    te_model_free(cm);
    te_model_free(gm);
    return fail;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: dense_cuda_check MODEL_DIR...\n");
        return 2;
    }
    rt_comm *comm;
    if (comm_open(COMM_AUTO, &comm)) {
        fprintf(stderr, "dense_cuda_check: %s\n", rt_errmsg());
        return 1;
    }
    quiet = comm_rank(comm) != 0;
    int fail = 0;
    for (int i = 1; i < argc; i++) {
        int r = check(argv[i], comm);
        if (r < 0) break;
        fail |= r;
    }
    if (comm_size(comm) > 1) {   /* any rank's failure */
        int32_t f = fail;
        if (comm_allreduce(comm, &f, &f, 1, RT_DT_I32, COMM_MAX)) f = 1;
        fail = f;
    }
    comm_close(comm);
    return fail;
}

/* bench/deepseek_fp8_decode.c — DeepSeek-V3 CPU decode, FP8-resident weights against f32
 * weights of the same values, in one process (bench/deepseek_fp8_decode.sh makes the pair).
 *   deepseek_fp8_decode FP8_DIR F32_DIR PROMPT_LEN NEW_TOKENS THREADS REPS
 * Loads both models, then REPS times, alternating: prefill the prompt (naive MLA) and decode
 * NEW_TOKENS greedily (absorbed MLA), timing the decode by the wall clock and by the process's
 * CPU time (steadier on a shared machine: other processes' load does not count). Prints
 * "f32|fp8 <median wall tokens/s> <median cpu tokens/s> <resident bytes>", one line each. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/status.h"
#include "core/threadpool.h"
#include "teacher/deepseek.h"

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* One prefill + decode; *wall and *cpu get the decode's seconds. */
static int run(ds_model *m, int plen, int nnew, double *wall, double *cpu) {
    int64_t V = ds_vocab(m), n = plen + nnew;
    int32_t *tok = malloc((size_t)n * sizeof *tok), *pos = malloc((size_t)n * sizeof *pos);
    float *lg = malloc((size_t)plen * (size_t)V * sizeof *lg);
    ds_cache *c = NULL;
    int rc = tok && pos && lg ? ds_cache_create(m, n, &c) : RT_ENOMEM;
    for (int64_t i = 0; i < n; i++) tok[i] = (int32_t)((i * 7919 + 13) % V), pos[i] = (int32_t)i;
    if (!rc) rc = ds_forward(m, c, tok, pos, plen, DS_ATTN_NAIVE, lg, NULL);
    double w0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    const float *last = lg + (int64_t)(plen - 1) * V;
    for (int64_t i = plen; i < n && !rc; i++) {
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (last[v] > last[best]) best = (int32_t)v;
        tok[i] = best;
        rc = ds_forward(m, c, tok + i, pos + i, 1, DS_ATTN_ABSORBED, lg, NULL);
        last = lg;
    }
    *wall = clock_s(CLOCK_MONOTONIC) - w0;
    *cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    ds_cache_free(c);
    free(tok), free(pos), free(lg);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: deepseek_fp8_decode FP8_DIR F32_DIR PROMPT_LEN NEW_TOKENS THREADS REPS\n");
        return 2;
    }
    int plen = atoi(argv[3]), nnew = atoi(argv[4]), th = atoi(argv[5]), reps = atoi(argv[6]);
    if (plen < 1 || nnew < 1 || reps < 1 || reps > 100) {
        fprintf(stderr, "deepseek_fp8_decode: bad sizes\n");
        return 2;
    }
    tp_pool *pool = NULL;
    if (th > 1 && tp_create(th, &pool)) {
        fprintf(stderr, "deepseek_fp8_decode: %s\n", rt_errmsg());
        return 1;
    }
    ds_model *m[2] = {NULL, NULL};   /* fp8, f32 */
    ds_load_opts o = {.pool = pool};
    for (int k = 0; k < 2; k++)
        if (ds_load(argv[1 + k], &o, &m[k])) {
            fprintf(stderr, "deepseek_fp8_decode: %s\n", rt_errmsg());
            return 1;
        }
    double wall[2][100], cpu[2][100];
    for (int r = 0; r < reps; r++)
        for (int k = 0; k < 2; k++) {
            int kk = r % 2 ? 1 - k : k;   /* alternate which goes first */
            if (run(m[kk], plen, nnew, &wall[kk][r], &cpu[kk][r])) {
                fprintf(stderr, "deepseek_fp8_decode: %s\n", rt_errmsg());
                return 1;
            }
        }
    const char *name[2] = {"fp8", "f32"};
    for (int k = 1; k >= 0; k--)
        printf("%s %.3f %.3f %zu\n", name[k], nnew / median(wall[k], reps), nnew / median(cpu[k], reps),
               ds_resident_bytes(m[k]));
    for (int k = 0; k < 2; k++) ds_free(m[k]);
    tp_free(pool);
    return 0;
}

/* bench/deepseek_decode.c — DeepSeek-V3 CPU decode speed: prefill a prompt (naive MLA), then
 * greedy decode one token at a time (absorbed MLA, latent cache).
 *   deepseek_decode MODEL_DIR PROMPT_LEN NEW_TOKENS THREADS
 * prints "decode_seconds new_tokens prefill_seconds" */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/clock.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "teacher/deepseek.h"

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: deepseek_decode DIR PROMPT_LEN NEW_TOKENS THREADS\n"); return 2; }
    int plen = atoi(argv[2]), nnew = atoi(argv[3]), th = atoi(argv[4]);
    tp_pool *pool = NULL;
    if (th > 1 && tp_create(th, &pool)) { fprintf(stderr, "deepseek_decode: %s\n", rt_errmsg()); return 1; }
    ds_model *m;
    ds_load_opts o = {.pool = pool};
    if (ds_load(argv[1], &o, &m)) { fprintf(stderr, "deepseek_decode: %s\n", rt_errmsg()); return 1; }
    int64_t V = ds_vocab(m), n = plen + nnew;
    int32_t *tok = malloc(n * sizeof *tok), *pos = malloc(n * sizeof *pos);
    float *lg = malloc((size_t)plen * V * sizeof *lg);
    for (int64_t i = 0; i < n; i++) { tok[i] = (int32_t)((i * 7919 + 13) % V); pos[i] = (int32_t)i; }
    ds_cache *c;
    if (ds_cache_create(m, n, &c)) return 1;
    double t0 = now_s();
    if (ds_forward(m, c, tok, pos, plen, DS_ATTN_NAIVE, lg, NULL)) { fprintf(stderr, "%s\n", rt_errmsg()); return 1; }
    double t1 = now_s();
    const float *last = lg + (int64_t)(plen - 1) * V;
    for (int64_t i = plen; i < n; i++) {
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++) if (last[v] > last[best]) best = (int32_t)v;
        tok[i] = best;
        if (ds_forward(m, c, tok + i, pos + i, 1, DS_ATTN_ABSORBED, lg, NULL)) { fprintf(stderr, "%s\n", rt_errmsg()); return 1; }
        last = lg;
    }
    double t2 = now_s();
    printf("%.6f %d %.6f\n", t2 - t1, nnew, t1 - t0);
    ds_cache_free(c);
    ds_free(m);
    tp_free(pool);
    free(tok); free(pos); free(lg);
    return 0;
}

/* bench/ds_parallel.c — DeepSeek-V3 prefill and greedy decode on the parallel forward
 * (teacher/parallel.h) under mpirun, or on the serial one.
 *   [mpirun -np P] ds_parallel MODEL_DIR PROMPT_LEN NEW_TOKENS THREADS [serial]
 * rank 0 prints "decode_seconds new_tokens prefill_seconds bytes_read_rank0 first_token last_token" */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/comm.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "teacher/deepseek.h"
#include "teacher/parallel.h"

static int fail(void) {
    fprintf(stderr, "ds_parallel: %s\n", rt_errmsg());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: ds_parallel DIR PROMPT_LEN NEW_TOKENS THREADS [serial]\n");
        return 2;
    }
    int plen = atoi(argv[2]), nnew = atoi(argv[3]), th = atoi(argv[4]);
    bool serial = argc == 6 && !strcmp(argv[5], "serial");
    rt_comm *comm;
    if (comm_open(serial ? COMM_SINGLE : COMM_AUTO, &comm)) return fail();
    tp_pool *pool = NULL;
    if (th > 1 && tp_create(th, &pool)) return fail();
    ds_model *m;
    ds_load_opts o = {.pool = pool};
    if (serial ? ds_load(argv[1], &o, &m) : ds_load_parallel(argv[1], &o, comm, &m)) return fail();
    int64_t V = ds_vocab(m), n = plen + nnew;
    int32_t *tok = malloc(n * sizeof *tok), *pos = malloc(n * sizeof *pos);
    float *lg = malloc((size_t)plen * V * sizeof *lg);
    for (int64_t i = 0; i < n; i++) tok[i] = (int32_t)((i * 7919 + 13) % V), pos[i] = (int32_t)i;
    ds_cache *c;
    if (ds_cache_create(m, n, &c)) return fail();
    comm_barrier(comm);
    double t0 = now_s();
    if (ds_forward(m, c, tok, pos, plen, DS_ATTN_NAIVE, lg, NULL)) return fail();
    double t1 = now_s();
    const float *last = lg + (int64_t)(plen - 1) * V;
    for (int64_t i = plen; i < n; i++) {
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (last[v] > last[best]) best = (int32_t)v;
        tok[i] = best;
        if (ds_forward(m, c, tok + i, pos + i, 1, DS_ATTN_ABSORBED, lg, NULL)) return fail();
        last = lg;
    }
    double t2 = now_s();
    ds_load_info li;
    ds_load_info_get(m, &li);
    if (comm_rank(comm) == 0)
        printf("%.6f %d %.6f %zu %d %d\n", t2 - t1, nnew, t1 - t0, li.bytes, tok[plen], tok[n - 1]);
    ds_cache_free(c);
    ds_free(m);
    tp_free(pool);
    free(tok);
    free(pos);
    free(lg);
    comm_close(comm);
    return 0;
}

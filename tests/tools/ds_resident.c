/* tests/tools/ds_resident.c — test helper: what loading a DeepSeek-V3 checkpoint costs in
 * memory, as the model counts it and as the kernel measures the process.
 *
 *   ds_resident MODEL_DIR [THREADS [parallel]]
 *
 * Resets the peak RSS (writes 5 to /proc/self/clear_refs), reads VmRSS and VmHWM from
 * /proc/self/status, runs ds_load, reads them again, then runs one 4-token forward (that
 * the model works) and prints one JSON line, all sizes in bytes:
 *   {"resident": ds_resident_bytes, "fp8": …, "scales": …, "f32": …, "other": … (ds_resident),
 *    "rss_before": …, "rss_after": …, "hwm_before": …, "hwm_after": …, "hwm_reset": 0|1,
 *    "logits_finite": 0|1}
 * "parallel" (under mpirun): every rank loads its part with ds_load_parallel and prints its
 * line, with "rank" and "size" added, in rank order.
 * Exit 0 ok, 1 with the library's message on stderr, 2 usage.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "teacher/deepseek.h"
#include "teacher/parallel.h"

/* The "<key>: N kB" line of /proc/self/status, in bytes; -1 when unreadable. */
static long long status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long long v = -1;
    size_t n = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') {
            v = strtoll(line + n + 1, NULL, 10) * 1024;
            break;
        }
    fclose(f);
    return v;
}

static int reset_peak(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return 0;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 4 || (argc == 4 && strcmp(argv[3], "parallel"))) {
        fprintf(stderr, "usage: ds_resident MODEL_DIR [THREADS [parallel]]\n");
        return 2;
    }
    int th = argc >= 3 ? atoi(argv[2]) : 1;
    rt_comm *comm = NULL;
    if (argc == 4 && comm_open(COMM_AUTO, &comm)) {
        fprintf(stderr, "ds_resident: %s\n", rt_errmsg());
        return 1;
    }
    tp_pool *pool = NULL;
    if (th > 1 && tp_create(th, &pool)) {
        fprintf(stderr, "ds_resident: %s\n", rt_errmsg());
        return 1;
    }
    int reset = reset_peak();
    long long rss0 = status_kb("VmRSS"), hwm0 = status_kb("VmHWM");
    ds_model *m = NULL;
    ds_load_opts o = {.pool = pool};
    if (comm ? ds_load_parallel(argv[1], &o, comm, &m) : ds_load(argv[1], &o, &m)) {
        fprintf(stderr, "ds_resident: %s\n", rt_errmsg());
        return 1;
    }
    long long rss1 = status_kb("VmRSS"), hwm1 = status_kb("VmHWM");
    ds_resident r;
    ds_resident_get(m, &r);
    int64_t V = ds_vocab(m), n = 4;
    int32_t tok[4], pos[4];
    for (int i = 0; i < n; i++) tok[i] = (int32_t)((i * 7919 + 13) % V), pos[i] = i;
    float *lg = malloc((size_t)(n * V) * sizeof *lg);
    ds_cache *c = NULL;
    int finite = 1;
    if (!lg || ds_cache_create(m, n, &c) || ds_forward(m, c, tok, pos, n, DS_ATTN_AUTO, lg, NULL)) {
        fprintf(stderr, "ds_resident: forward: %s\n", rt_errmsg());
        return 1;
    }
    for (int64_t i = 0; i < n * V; i++) finite &= isfinite(lg[i]) != 0;
    int rank = comm ? comm_rank(comm) : 0, size = comm ? comm_size(comm) : 1;
    for (int turn = 0; turn < size; turn++) {   /* one line per rank, in rank order */
        if (turn == rank) {
            printf("{\"rank\": %d, \"size\": %d, \"resident\": %zu, \"fp8\": %zu, \"scales\": %zu, \"f32\": %zu, "
                   "\"other\": %zu, \"rss_before\": %lld, \"rss_after\": %lld, \"hwm_before\": %lld, \"hwm_after\": %lld, "
                   "\"hwm_reset\": %d, \"logits_finite\": %d}\n",
                   rank, size, ds_resident_bytes(m), r.fp8, r.scales, r.f32, r.other, rss0, rss1, hwm0, hwm1, reset, finite);
            fflush(stdout);
        }
        if (comm && comm_barrier(comm)) {
            fprintf(stderr, "ds_resident: %s\n", rt_errmsg());
            return 1;
        }
    }
    ds_cache_free(c);
    free(lg);
    ds_free(m);
    comm_close(comm);
    tp_free(pool);
    return 0;
}

/* tests/tools/comm_zero_check.c — the collectives the data-parallel trainer uses, in the
 * forms it uses them (student/zero.c), checked against a serial computation each rank does
 * from all ranks' inputs: reduce-scatter in place (recv = send + rank·n), all-gather in place
 * (send = recv + rank·n), gather to every root (separate and in place at the root), the
 * node-local rank/size on one machine, and ZeRO-3's range collectives (student/zero.h) on
 * ranges that start and end inside ranks' parts, span several or lie in one: all-gather,
 * gather to a root, and the reduce-scatter-add against the rank-ordered serial sum, bit for
 * bit, with a scratch big enough for one round and one that forces many. Run under mpirun with any rank count (or alone).
 * Prints "rank R/P: N passed, M failed"; exit 1 on any failure. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "core/status.h"
#include "student/zero.h"

static int passed, failed, rank;

#define EXPECT(cond, ...) do { if (cond) passed++; else { failed++; fprintf(stderr, "rank %d: ", rank); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

static float val(int r, size_t i) {           /* rank-dependent values of mixed magnitude */
    uint64_t x = (uint64_t)(r + 1) * 0x9E3779B97F4A7C15ull ^ (i + 7) * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31; x *= 0x94D049BB133111EBull; x ^= x >> 29;
    return (float)((double)(x >> 11) / 9007199254740992.0 - 0.5) * (float)(1u << (x % 16));
}

int main(void) {
    rt_comm *c;
    if (comm_open(COMM_AUTO, &c)) { fprintf(stderr, "comm_open: %s\n", rt_errmsg()); return 1; }
    rank = comm_rank(c);
    int P = comm_size(c);
    EXPECT(comm_local_size(c) == P && comm_local_rank(c) == rank, "local rank %d/%d, world %d/%d", comm_local_rank(c),
           comm_local_size(c), rank, P);
    static const size_t ns[] = {1, 16, 1003};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        size_t n = ns[k], all = n * (size_t)P;
        float *buf = malloc(all * 4), *want = malloc(all * 4), *full = malloc(all * 4);
        /* reduce-scatter in place */
        for (size_t i = 0; i < all; i++) buf[i] = val(rank, i);
        EXPECT(!comm_reduce_scatter(c, buf, buf + (size_t)rank * n, n, RT_DT_F32, COMM_SUM), "rs: %s", rt_errmsg());
        int ok = 1;
        for (size_t i = 0; i < n; i++) {
            size_t g = (size_t)rank * n + i;
            float a = val(0, g);
            for (int r = 1; r < P; r++) a += val(r, g);
            ok &= buf[g] == a;
        }
        EXPECT(ok, "in-place reduce_scatter n %zu differs from the rank-ordered sum", n);
        /* all-gather in place: every block from its rank */
        for (size_t i = 0; i < all; i++) buf[i] = -1.0f;
        for (size_t i = 0; i < n; i++) buf[(size_t)rank * n + i] = val(rank, i);
        EXPECT(!comm_allgather(c, buf + (size_t)rank * n, buf, n, RT_DT_F32), "ag: %s", rt_errmsg());
        for (int r = 0; r < P; r++)
            for (size_t i = 0; i < n; i++) want[(size_t)r * n + i] = val(r, i);
        EXPECT(!memcmp(buf, want, all * 4), "in-place allgather n %zu", n);
        /* gather to each root: separate buffers, then in place at the root */
        float *mine = malloc(n * 4);
        for (size_t i = 0; i < n; i++) mine[i] = val(rank, i);
        for (int root = 0; root < P; root++) {
            memset(full, 0xff, all * 4);
            EXPECT(!comm_gather(c, mine, rank == root ? full : NULL, n, RT_DT_F32, root), "gather: %s", rt_errmsg());
            if (rank == root) EXPECT(!memcmp(full, want, all * 4), "gather to %d n %zu", root, n);
            memset(full, 0xff, all * 4);
            memcpy(full + (size_t)rank * n, mine, n * 4);
            const float *src = rank == root ? full + (size_t)root * n : mine;
            EXPECT(!comm_gather(c, src, rank == root ? full : NULL, n, RT_DT_F32, root), "gather: %s", rt_errmsg());
            if (rank == root) EXPECT(!memcmp(full, want, all * 4), "in-place gather to %d n %zu", root, n);
        }
        free(mine); free(buf); free(want); free(full);
    }
    /* ZeRO-3 ranges over a flat buffer of n elements: the layout's parts, values val(r, i) */
    static const int64_t flat[] = {1, 100, 1003};
    for (size_t k = 0; k < sizeof flat / sizeof *flat; k++) {
        int64_t n = flat[k];
        zr_layout z;
        zr_layout_init(&z, n, rank, P, 3);
        float *own = malloc((size_t)z.shard * 4), *out = malloc((size_t)n * 4), *stage = malloc((size_t)n * 4 + 64 * P);
        float *unit = malloc((size_t)n * 4), *acc = malloc((size_t)z.shard * 4);
        for (int64_t i = 0; i < z.shard; i++) own[i] = (float)(rank * z.shard + i < n ? rank * z.shard + i : -7);
        const int64_t ranges[][2] = {{0, n}, {n / 3, n / 3 + 1}, {n / 5, n - n / 7}, {n - 1, n}, {n / 2, n / 2}};
        for (size_t q = 0; q < sizeof ranges / sizeof *ranges; q++) {
            int64_t lo = ranges[q][0], hi = ranges[q][1], len = hi - lo;
            for (int root = -1; root < P; root++) {
                for (int64_t i = 0; i < len; i++) out[i] = -1.0f;
                EXPECT(!zr_range_gather(&z, c, own, lo, hi, root < 0 || root == rank ? out : NULL, root), "rg: %s", rt_errmsg());
                int ok = 1;
                for (int64_t i = 0; i < len && (root < 0 || root == rank); i++) ok &= out[i] == (float)(lo + i);
                EXPECT(ok, "range gather [%lld, %lld) of %lld to %d", (long long)lo, (long long)hi, (long long)n, root);
            }
            const int64_t stages[] = {n + 16 * P, P, 3 * P + 1};   /* one round; one element a round; a few */
            for (size_t st = 0; st < sizeof stages / sizeof *stages; st++) {
                for (int64_t i = 0; i < len; i++) unit[i] = val(rank, (size_t)(lo + i));
                for (int64_t i = 0; i < z.shard; i++) acc[i] = 0.25f * (float)i;
                EXPECT(!zr_range_reduce_scatter_add(&z, c, unit, lo, hi, acc, stage, stages[st]), "rs: %s", rt_errmsg());
                int ok = 1;
                for (int64_t i = 0; i < z.shard; i++) {
                    int64_t g = rank * z.shard + i;
                    float want = 0.25f * (float)i;
                    if (g >= lo && g < hi) {
                        float s = val(0, (size_t)g);
                        for (int r = 1; r < P; r++) s += val(r, (size_t)g);
                        want += s;
                    }
                    ok &= acc[i] == want;
                }
                EXPECT(ok, "range reduce-scatter-add [%lld, %lld) of %lld, scratch %lld", (long long)lo, (long long)hi,
                       (long long)n, (long long)stages[st]);
            }
        }
        free(own); free(out); free(stage); free(unit); free(acc);
    }
    EXPECT(comm_gather(c, &rank, NULL, 1, RT_DT_I32, P) == RT_EINVAL, "gather to a root that is not a rank accepted");
    rt_comm *dev = NULL;
    int rc = comm_open_nccl(c, -1, NULL, &dev);
#ifdef RT_HAVE_CUDA
    (void)rc;            /* CUDA build: may or may not find a GPU here; only the CPU build's answer is fixed */
    comm_close(dev);
#else
    EXPECT(rc == RT_EUNSUPPORTED && !dev, "comm_open_nccl in a CPU build: %d", rc);
#endif
    printf("rank %d/%d (%s): %d passed, %d failed\n", rank, P, comm_backend_name(c), passed, failed);
    comm_close(c);
    return failed ? 1 : 0;
}

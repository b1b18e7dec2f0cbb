/* tests/tools/comm_check.c — run under mpirun with any number of ranks (or alone): every
 * collective of core/comm against a serial computation that each rank does by itself from
 * all ranks' inputs (regenerated from per-rank seeds). Prints one line per rank
 * "rank R/P: N passed, M failed" and exits non-zero on any failure. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "core/status.h"

static int passed, failed, rank;

#define EXPECT(cond, ...) do { if (cond) passed++; else { failed++; fprintf(stderr, "rank %d: ", rank); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

static float val(int r, size_t i) {           /* deterministic, rank-dependent, awkward to sum */
    uint64_t x = (uint64_t)r * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull + 1;
    x ^= x >> 31; x *= 0x94D049BB133111EBull; x ^= x >> 29;
    return (float)((double)(x >> 11) / 9007199254740992.0 - 0.5) * (float)(1u << (x % 20));
}

int main(void) {
    rt_comm *c;
    if (comm_open(COMM_AUTO, &c)) { fprintf(stderr, "comm_open: %s\n", rt_errmsg()); return 1; }
    rank = comm_rank(c);
    int P = comm_size(c);
    static const size_t counts[] = {0, 1, 7, 1000, 100003};
    for (size_t k = 0; k < sizeof counts / sizeof *counts; k++) {
        size_t n = counts[k];
        float *x = malloc(n * 4 + 4), *y = malloc(n * 4 + 4), *want = malloc(n * 4 + 4);
        for (size_t i = 0; i < n; i++) x[i] = val(rank, i);
        for (comm_op op = COMM_SUM; op <= COMM_MIN; op++) {
            for (size_t i = 0; i < n; i++) {            /* serial, rank order */
                float a = val(0, i);
                for (int r = 1; r < P; r++) {
                    float b = val(r, i);
                    a = op == COMM_SUM ? a + b : op == COMM_MAX ? (b > a ? b : a) : (b < a ? b : a);
                }
                want[i] = a;
            }
            memset(y, 0xff, n * 4);
            EXPECT(!comm_allreduce(c, x, y, n, RT_DT_F32, op), "allreduce: %s", rt_errmsg());
            EXPECT(!memcmp(y, want, n * 4), "allreduce op %d n %zu differs from the serial rank-ordered result", op, n);
            memcpy(y, x, n * 4);                        /* in place */
            EXPECT(!comm_allreduce(c, y, y, n, RT_DT_F32, op), "allreduce in place: %s", rt_errmsg());
            EXPECT(!memcmp(y, want, n * 4), "in-place allreduce op %d n %zu differs", op, n);
        }
        free(x); free(y); free(want);
    }
    /* reduce-scatter and allgather on doubles and int64 */
    size_t blk = 33;
    double *s = malloc(blk * (size_t)P * 8), *rs = malloc(blk * 8), *g = malloc(blk * (size_t)P * 8);
    for (size_t i = 0; i < blk * (size_t)P; i++) s[i] = val(rank, i);
    EXPECT(!comm_reduce_scatter(c, s, rs, blk, RT_DT_F64, COMM_SUM), "reduce_scatter: %s", rt_errmsg());
    for (size_t i = 0; i < blk; i++) {
        double a = val(0, (size_t)rank * blk + i);
        for (int r = 1; r < P; r++) a += val(r, (size_t)rank * blk + i);
        EXPECT(rs[i] == a, "reduce_scatter[%zu]: %g vs %g", i, rs[i], a);
    }
    EXPECT(!comm_allgather(c, rs, g, blk, RT_DT_F64), "allgather: %s", rt_errmsg());
    for (int r = 0; r < P; r++)
        for (size_t i = 0; i < blk; i++) {
            double a = val(0, (size_t)r * blk + i);
            for (int q = 1; q < P; q++) a += val(q, (size_t)r * blk + i);
            EXPECT(g[(size_t)r * blk + i] == a, "allgather block %d[%zu]", r, i);
        }
    /* reduce-scatter in rounds (host backends: 2^18 elements per block and round), out of
     * place and in place; reduce-scatterv with blocks of different lengths, some empty, laid
     * end to end (rank q's block: (q·7919 + k·2^17) mod 3·2^18 elements; every other one 0) */
    for (int k = 0; k < 3; k++) {
        size_t *cnt = calloc((size_t)P, sizeof *cnt), tot = 0, at = 0, big = k == 0 ? ((size_t)1 << 18) + 5 : 0;
        for (int q = 0; q < P; q++) {
            cnt[q] = k == 0 ? big : (q + k) % 2 ? 0 : ((size_t)q * 7919 + (size_t)k * ((size_t)1 << 17)) % ((size_t)3 << 18);
            if (q < rank) at += cnt[q];
            tot += cnt[q];
        }
        float *x = malloc(tot * 4 + 4), *y = malloc(cnt[rank] * 4 + 4);
        for (size_t i = 0; i < tot; i++) x[i] = val(rank, i);
        for (int in_place = 0; in_place < 2; in_place++) {
            float *in = x, *out = in_place ? x + at : y;
            if (in_place) for (size_t i = 0; i < tot; i++) x[i] = val(rank, i);
            else memset(y, 0xff, cnt[rank] * 4);
            int rc = k == 0 ? comm_reduce_scatter(c, in, out, big, RT_DT_F32, COMM_SUM)
                            : comm_reduce_scatterv(c, in, out, cnt, RT_DT_F32, COMM_SUM);
            EXPECT(!rc, "reduce_scatter%s %d: %s", k ? "v" : "", k, rt_errmsg());
            size_t bad = 0;
            for (size_t i = 0; i < cnt[rank]; i++) {
                float a = val(0, at + i);
                for (int r = 1; r < P; r++) a += val(r, at + i);
                bad += memcmp(&a, &out[i], 4) != 0;
            }
            EXPECT(bad == 0, "reduce_scatter%s %d (%s): %zu of %zu elements differ from the serial rank-ordered sum",
                   k ? "v" : "", k, in_place ? "in place" : "out of place", bad, cnt[rank]);
        }
        free(x); free(y); free(cnt);
    }
    float b0[1] = {0};
    /* reduce to each root in turn: out of place, in place at the root, and across the host
     * backend's 2^20-element blocks */
    size_t rn[] = {0, 5, ((size_t)1 << 20) + 3};
    for (size_t k = 0; k < 3; k++) {
        size_t n = rn[k];
        float *x = malloc(n * 4 + 4), *y = malloc(n * 4 + 4);
        for (size_t i = 0; i < n; i++) x[i] = val(rank, i);
        for (int root = 0; root < P; root++) {
            memset(y, 0xff, n * 4);
            int in_place = root % 2 == 1;
            if (in_place) memcpy(y, x, n * 4);
            EXPECT(!comm_reduce(c, in_place ? y : x, rank == root ? y : NULL, n, RT_DT_F32, COMM_SUM, root), "reduce: %s",
                   rt_errmsg());
            if (rank != root) continue;
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) {
                float a = val(0, i);
                for (int r = 1; r < P; r++) a += val(r, i);
                bad += memcmp(&a, &y[i], 4) != 0;
            }
            EXPECT(bad == 0, "reduce n %zu root %d: %zu elements differ from the serial rank-ordered sum", n, root, bad);
        }
        free(x); free(y);
    }
    EXPECT(comm_reduce(c, b0, b0, 1, RT_DT_F32, COMM_SUM, P) == RT_EINVAL, "reduce to a bad root must fail");
    int64_t mine = rank + 1, sum = 0;
    EXPECT(!comm_allreduce(c, &mine, &sum, 1, RT_DT_I64, COMM_SUM) && sum == (int64_t)P * (P + 1) / 2, "i64 sum %lld", (long long)sum);
    /* alltoallv: rank r sends (r + d + 1) values to rank d, each = 1000 r + d */
    size_t *sc = calloc((size_t)P, sizeof *sc), *sd = calloc((size_t)P, sizeof *sd), *rc = calloc((size_t)P, sizeof *rc),
           *rd = calloc((size_t)P, sizeof *rd), ns = 0, nr = 0;
    for (int d = 0; d < P; d++) { sc[d] = (size_t)(rank + d + 1); sd[d] = ns; ns += sc[d]; rc[d] = (size_t)(d + rank + 1); rd[d] = nr; nr += rc[d]; }
    int32_t *sb = malloc(ns * 4 + 4), *rb = malloc(nr * 4 + 4);
    for (int d = 0; d < P; d++) for (size_t i = 0; i < sc[d]; i++) sb[sd[d] + i] = 1000 * rank + d;
    EXPECT(!comm_alltoallv(c, sb, sc, sd, rb, rc, rd, RT_DT_I32), "alltoallv: %s", rt_errmsg());
    for (int src = 0; src < P; src++) for (size_t i = 0; i < rc[src]; i++) EXPECT(rb[rd[src] + i] == 1000 * src + rank, "alltoallv from %d", src);
    double b[3] = {rank == P - 1 ? 1.5 : 0, rank == P - 1 ? 2.5 : 0, rank == P - 1 ? -3 : 0};
    EXPECT(!comm_broadcast(c, b, 3, RT_DT_F64, P - 1) && b[0] == 1.5 && b[1] == 2.5 && b[2] == -3, "broadcast");
    EXPECT(comm_broadcast(c, b, 3, RT_DT_F64, P) == RT_EINVAL, "broadcast to a bad root must fail");
    EXPECT(comm_allreduce(c, b, b, 1, RT_DT_BF16, COMM_SUM) == RT_EUNSUPPORTED, "bf16 reductions are unsupported");
    EXPECT(!comm_barrier(c), "barrier");
    printf("rank %d/%d (%s): %d passed, %d failed\n", rank, P, comm_backend_name(c), passed, failed);
    free(s); free(rs); free(g); free(sc); free(sd); free(rc); free(rd); free(sb); free(rb);
    comm_close(c);
    return failed ? 1 : 0;
}

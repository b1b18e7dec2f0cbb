/* tests/tools/comm_nccl_check.c — the NCCL backend of core/comm against the MPI (or single)
 * backend, on a GPU per rank: run under mpirun with one rank per GPU (or alone). Every
 * collective gets the same inputs on device buffers (NCCL) and host buffers (MPI); data
 * movement (all-gather, gather, broadcast, all-to-all-v, in place or not) must agree bit
 * for bit, reductions within f32 reordering: NCCL sums in its own (ring/tree) order, so
 * |nccl − mpi| ≤ 1e-6 · Σ_r |x_r| per element (P ≤ 8 additions of f32, each ≤ 2^-24
 * relative to the partial sum's magnitude, which Σ|x_r| bounds; both sides round, so
 * 2·7·2^-24 < 1e-6 for P ≤ 8).
 * Prints "rank R/P: N passed, M failed"; exit 1 on failure. Built without CUDA, or with no
 * GPU visible, it prints "skipped: …" and exits 0 (the pytest that runs it skips too). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "core/status.h"

#ifndef RT_HAVE_CUDA
int main(void) {
    printf("skipped: built without CUDA\n");
    return 0;
}
#else
#include <cuda_runtime.h>

static int passed, failed, rank;

#define EXPECT(cond, ...) do { if (cond) passed++; else { failed++; fprintf(stderr, "rank %d: ", rank); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

static float val(int r, size_t i) {
    uint64_t x = (uint64_t)(r + 3) * 0x9E3779B97F4A7C15ull ^ (i + 1) * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31; x *= 0x94D049BB133111EBull; x ^= x >> 29;
    return (float)((double)(x >> 11) / 9007199254740992.0 - 0.5) * (float)(1u << (x % 12));
}

static void *dev_copy(const void *h, size_t bytes) {
    void *d = NULL;
    if (cudaMalloc(&d, bytes ? bytes : 1) != cudaSuccess) return NULL;
    if (bytes) cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice);
    return d;
}

static void host_copy(void *h, const void *d, size_t bytes) { if (bytes) cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost); }

int main(void) {
    rt_comm *host, *nc;
    if (comm_open(COMM_AUTO, &host)) { fprintf(stderr, "comm_open: %s\n", rt_errmsg()); return 1; }
    rank = comm_rank(host);
    int P = comm_size(host), n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
        if (rank == 0) printf("skipped: no CUDA device visible\n");
        comm_close(host);
        return 0;
    }
    if (comm_open_nccl(host, -1, NULL, &nc)) { fprintf(stderr, "comm_open_nccl: %s\n", rt_errmsg()); return 1; }
    EXPECT(!strcmp(comm_backend_name(nc), "nccl") && comm_rank(nc) == rank && comm_size(nc) == P, "nccl comm identity");
    static const size_t ns[] = {1, 1000, 1 << 20};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        size_t n = ns[k], all = n * (size_t)P;
        float *x = malloc(all * 4), *ref = malloc(all * 4), *got = malloc(all * 4), *mag = malloc(all * 4);
        for (size_t i = 0; i < all; i++) {
            x[i] = val(rank, i);
            mag[i] = 0;
            for (int r = 0; r < P; r++) mag[i] += fabsf(val(r, i));
        }
        /* allreduce (out of place and in place) */
        float *dx = dev_copy(x, all * 4), *dy = dev_copy(x, all * 4);
        EXPECT(!comm_allreduce(host, x, ref, all, RT_DT_F32, COMM_SUM), "mpi allreduce: %s", rt_errmsg());
        EXPECT(!comm_allreduce(nc, dx, dy, all, RT_DT_F32, COMM_SUM) && !comm_sync(nc), "nccl allreduce: %s", rt_errmsg());
        host_copy(got, dy, all * 4);
        int ok = 1;
        for (size_t i = 0; i < all; i++) ok &= fabsf(got[i] - ref[i]) <= 1e-6f * mag[i];
        EXPECT(ok, "allreduce n %zu beyond the reordering bound", all);
        EXPECT(!comm_allreduce(nc, dx, dx, all, RT_DT_F32, COMM_SUM) && !comm_sync(nc), "nccl allreduce in place: %s", rt_errmsg());
        host_copy(got, dx, all * 4);
        ok = 1;
        for (size_t i = 0; i < all; i++) ok &= fabsf(got[i] - ref[i]) <= 1e-6f * mag[i];
        EXPECT(ok, "in-place allreduce n %zu", all);
        /* reduce-scatter in place: rank r's block at send + r·n */
        cudaMemcpy(dx, x, all * 4, cudaMemcpyHostToDevice);
        EXPECT(!comm_reduce_scatter(nc, dx, dx + (size_t)rank * n, n, RT_DT_F32, COMM_SUM) && !comm_sync(nc), "nccl rs: %s", rt_errmsg());
        host_copy(got, dx + (size_t)rank * n, n * 4);
        ok = 1;
        for (size_t i = 0; i < n; i++) ok &= fabsf(got[i] - ref[(size_t)rank * n + i]) <= 1e-6f * mag[(size_t)rank * n + i];
        EXPECT(ok, "reduce_scatter n %zu", n);
        /* reduce to the last rank, in place there (the ZeRO-2/3 trainer's per-unit pieces) */
        cudaMemcpy(dx, x, n * 4, cudaMemcpyHostToDevice);
        EXPECT(!comm_reduce(nc, dx, rank == P - 1 ? dx : NULL, n, RT_DT_F32, COMM_SUM, P - 1) && !comm_sync(nc),
               "nccl reduce: %s", rt_errmsg());
        if (rank == P - 1) {
            host_copy(got, dx, n * 4);
            ok = 1;
            for (size_t i = 0; i < n; i++) ok &= fabsf(got[i] - ref[i]) <= 1e-6f * mag[i];
            EXPECT(ok, "reduce n %zu", n);
        }
        /* all-gather in place, gather to the last rank: exact */
        cudaMemcpy(dx + (size_t)rank * n, x, n * 4, cudaMemcpyHostToDevice);
        EXPECT(!comm_allgather(nc, dx + (size_t)rank * n, dx, n, RT_DT_F32) && !comm_sync(nc), "nccl ag: %s", rt_errmsg());
        host_copy(got, dx, all * 4);
        for (int r = 0; r < P; r++) for (size_t i = 0; i < n; i++) ref[(size_t)r * n + i] = val(r, i);
        EXPECT(!memcmp(got, ref, all * 4), "allgather n %zu", n);
        cudaMemcpy(dy, x, n * 4, cudaMemcpyHostToDevice);
        cudaMemset(dx, 0, all * 4);
        cudaDeviceSynchronize();   /* the memset runs on the legacy stream, NCCL on a non-blocking one */
        EXPECT(!comm_gather(nc, dy, dx, n, RT_DT_F32, P - 1) && !comm_sync(nc), "nccl gather: %s", rt_errmsg());
        if (rank == P - 1) { host_copy(got, dx, all * 4); EXPECT(!memcmp(got, ref, all * 4), "gather n %zu", n); }
        /* broadcast from rank 0 */
        cudaMemcpy(dx, x, n * 4, cudaMemcpyHostToDevice);
        EXPECT(!comm_broadcast(nc, dx, n, RT_DT_F32, 0) && !comm_sync(nc), "nccl bcast: %s", rt_errmsg());
        host_copy(got, dx, n * 4);
        EXPECT(!memcmp(got, ref, n * 4), "broadcast n %zu", n);
        cudaFree(dx); cudaFree(dy);
        free(x); free(ref); free(got); free(mag);
    }
    /* all-to-all-v: rank s sends s + r + 1 values to rank r, all equal to 1000·s + r */
    size_t *sc = calloc((size_t)P, sizeof *sc), *sd = calloc((size_t)P, sizeof *sd), *rcn = calloc((size_t)P, sizeof *rcn),
           *rd = calloc((size_t)P, sizeof *rd), st = 0, rt = 0;
    for (int r = 0; r < P; r++) {
        sc[r] = (size_t)(rank + r + 1); sd[r] = st; st += sc[r];
        rcn[r] = (size_t)(r + rank + 1); rd[r] = rt; rt += rcn[r];
    }
    float *hs = malloc(st * 4), *hr = calloc(rt, 4), *want = malloc(rt * 4);
    for (int r = 0; r < P; r++) for (size_t i = 0; i < sc[r]; i++) hs[sd[r] + i] = (float)(1000 * rank + r);
    for (int r = 0; r < P; r++) for (size_t i = 0; i < rcn[r]; i++) want[rd[r] + i] = (float)(1000 * r + rank);
    float *ds = dev_copy(hs, st * 4), *dr = dev_copy(hr, rt * 4);
    EXPECT(!comm_alltoallv(nc, ds, sc, sd, dr, rcn, rd, RT_DT_F32) && !comm_sync(nc), "nccl alltoallv: %s", rt_errmsg());
    host_copy(hr, dr, rt * 4);
    EXPECT(!memcmp(hr, want, rt * 4), "alltoallv");
    EXPECT(!comm_barrier(nc), "barrier: %s", rt_errmsg());
    cudaFree(ds); cudaFree(dr);
    free(hs); free(hr); free(want); free(sc); free(sd); free(rcn); free(rd);
    printf("rank %d/%d (nccl vs %s): %d passed, %d failed\n", rank, P, comm_backend_name(host), passed, failed);
    comm_close(nc);
    comm_close(host);
    return failed ? 1 : 0;
}
#endif

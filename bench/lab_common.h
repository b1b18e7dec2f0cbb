/* bench/lab_common.h — shared by the kernel labs bench/lab_*.c (built by `make gpu-test-build`,
 * run by `make gpu-bench`). Each lab measures the device's peaks in the same process first —
 * FLOP/s as a large cuBLASLt bf16 GEMM (8192³, f32 accumulation), bandwidth as a 1 GiB
 * device-to-device copy (read + write bytes) — then times every variant with CUDA events
 * (3 warm-up runs, then the median of LAB_REPS runs, default 10) and prints one line per
 * variant: median time, achieved TFLOP/s or GB/s, and that as a percentage of the measured
 * peak. Lines start with "  " and a fixed-width name, so bench/lab_torch_peer.py can match
 * them against the PyTorch peer's lines of the same names. */
#ifndef RT_BENCH_LAB_COMMON_H
#define RT_BENCH_LAB_COMMON_H

#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "kernels/matmul.h"

#define LAB_CU(call)                                                                                \
    do {                                                                                            \
        cudaError_t e_ = (call);                                                                    \
        if (e_ != cudaSuccess) {                                                                    \
            fprintf(stderr, "lab: %s: %s\n", #call, cudaGetErrorString(e_));                        \
            exit(1);                                                                                \
        }                                                                                           \
    } while (0)
#define LAB_RT(call)                                                                                \
    do {                                                                                            \
        if ((call) != 0) {                                                                          \
            fprintf(stderr, "lab: %s: %s\n", #call, rt_errmsg());                                   \
            exit(1);                                                                                \
        }                                                                                           \
    } while (0)

typedef int (*lab_fn)(void *ctx);

static inline int lab_reps(void) {
    const char *s = getenv("LAB_REPS");
    int r = s ? atoi(s) : 10;
    return r > 0 ? r : 10;
}

static int lab_cmp_f(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* Median milliseconds of one call of fn. */
static inline double lab_time(lab_fn fn, void *ctx) {
    int reps = lab_reps();
    cudaEvent_t a, b;
    LAB_CU(cudaEventCreate(&a));
    LAB_CU(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++)
        if (fn(ctx)) {
            fprintf(stderr, "lab: kernel failed: %s\n", rt_errmsg());
            exit(1);
        }
    float *t = (float *)malloc((size_t)reps * sizeof(float));
    for (int i = 0; i < reps; i++) {
        LAB_CU(cudaEventRecord(a, 0));
        if (fn(ctx)) exit(1);
        LAB_CU(cudaEventRecord(b, 0));
        LAB_CU(cudaEventSynchronize(b));
        LAB_CU(cudaEventElapsedTime(&t[i], a, b));
    }
    qsort(t, (size_t)reps, sizeof(float), lab_cmp_f);
    double med = t[reps / 2];
    free(t);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return med;
}

static inline void *lab_alloc(size_t bytes) {
    void *p = NULL;
    LAB_CU(cudaMalloc(&p, bytes));
    return p;
}

/* Fill with random bf16 values ~ U(-amp, amp) (a device kernel would be faster; this runs once). */
static inline void lab_fill_bf16(uint16_t *d, size_t n, float amp, uint64_t seed) {
    size_t chunk = (size_t)1 << 24;
    uint16_t *h = (uint16_t *)malloc((n < chunk ? n : chunk) * 2);
    for (size_t i0 = 0; i0 < n; i0 += chunk) {
        size_t m = n - i0 < chunk ? n - i0 : chunk;
        for (size_t i = 0; i < m; i++) {
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            float f = ((float)(seed >> 40) / 16777216.0f * 2 - 1) * amp;
            uint32_t u;
            memcpy(&u, &f, 4);
            h[i] = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
        }
        LAB_CU(cudaMemcpy(d + i0, h, m * 2, cudaMemcpyHostToDevice));
    }
    free(h);
}

typedef struct {
    double tflops, gbps;
} lab_peak;

typedef struct {
    mm_cuda_ctx *mm;
    uint16_t *a, *b, *c;
    int64_t n;
    void *src, *dst;
    size_t bytes;
} lab_peak_ctx;

static int lab_peak_gemm(void *p) {
    lab_peak_ctx *c = (lab_peak_ctx *)p;
    return mm_gemm_cuda(c->mm, c->c, false, c->n, c->a, c->n, false, c->b, c->n, true, c->n, c->n, c->n, 1.f, 0.f, NULL);
}
static int lab_peak_copy(void *p) {
    lab_peak_ctx *c = (lab_peak_ctx *)p;
    return cudaMemcpyAsync(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice, 0) != cudaSuccess;
}

static inline lab_peak lab_measure_peak(const char *lab_name) {
    struct cudaDeviceProp prop;
    LAB_CU(cudaGetDeviceProperties(&prop, 0));
    lab_peak_ctx c = {0};
    c.n = 8192;
    size_t nn = (size_t)(c.n * c.n);
    c.a = (uint16_t *)lab_alloc(nn * 2), c.b = (uint16_t *)lab_alloc(nn * 2), c.c = (uint16_t *)lab_alloc(nn * 2);
    lab_fill_bf16(c.a, nn, 1.f, 1), lab_fill_bf16(c.b, nn, 1.f, 2);
    LAB_RT(mm_cuda_ctx_create(&c.mm, 0));
    double ms = lab_time(lab_peak_gemm, &c);
    lab_peak pk;
    pk.tflops = 2.0 * (double)c.n * c.n * c.n / (ms * 1e-3) / 1e12;
    cudaFree(c.a), cudaFree(c.b), cudaFree(c.c);
    mm_cuda_ctx_free(c.mm);
    c.bytes = (size_t)1 << 30;
    c.src = lab_alloc(c.bytes), c.dst = lab_alloc(c.bytes);
    LAB_CU(cudaMemset(c.src, 1, c.bytes));
    ms = lab_time(lab_peak_copy, &c);
    pk.gbps = 2.0 * (double)c.bytes / (ms * 1e-3) / 1e9;
    cudaFree(c.src), cudaFree(c.dst);
    printf("%s on %s (%d SMs)\n", lab_name, prop.name, prop.multiProcessorCount);
    printf("  %-44s %9.1f TFLOP/s (cuBLASLt bf16 GEMM 8192^3)\n", "peak compute (measured)", pk.tflops);
    printf("  %-44s %9.1f GB/s (1 GiB device-to-device copy, read+write)\n", "peak bandwidth (measured)", pk.gbps);
    return pk;
}

static inline void lab_report_flops(const lab_peak *pk, const char *name, double ms, double flops) {
    double tf = flops / (ms * 1e-3) / 1e12;
    printf("  %-44s %9.3f ms %9.1f TFLOP/s %6.1f%% of peak\n", name, ms, tf, 100.0 * tf / pk->tflops);
    fflush(stdout);
}
static inline void lab_report_bytes(const lab_peak *pk, const char *name, double ms, double bytes) {
    double gb = bytes / (ms * 1e-3) / 1e9;
    printf("  %-44s %9.3f ms %9.1f GB/s    %6.1f%% of peak\n", name, ms, gb, 100.0 * gb / pk->gbps);
    fflush(stdout);
}

#endif

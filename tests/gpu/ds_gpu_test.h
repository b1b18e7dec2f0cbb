/* tests/gpu/ds_gpu_test.h — helpers for the DeepSeek kernel GPU tests (tests/gpu/test_ds_*_gpu.c):
 * pass/fail/skip counting, CUDA checks, a seeded generator (fresh per run unless DS_SEED is
 * set; the seed is printed), bf16 rounding and device copies. Header-only. */
#ifndef RT_DS_GPU_TEST_H
#define RT_DS_GPU_TEST_H

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/status.h"
#include "kernels/convert.h"

static int failed, passed, skipped;
#define CHECK(cond, ...) do { if (!(cond)) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); failed++; return; } } while (0)
#define CU(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { printf("FAIL %s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); failed++; return; } } while (0)
#define RT(call) do { int r_ = (call); if (r_) { printf("FAIL %s:%d %s: %s\n", __FILE__, __LINE__, #call, rt_errmsg()); failed++; return; } } while (0)
#define SKIP(...) do { printf("skipped: "); printf(__VA_ARGS__); printf("\n"); skipped++; return; } while (0)

static unsigned long long ds_rng_state = 1;
static inline void ds_seed(void) {
    const char *s = getenv("DS_SEED");
    ds_rng_state = s ? strtoull(s, NULL, 0) : (unsigned long long)time(NULL) * 2654435761ull + (unsigned long long)clock();
    if (!ds_rng_state) ds_rng_state = 1;
    printf("seed %llu (DS_SEED=%llu reproduces)\n", ds_rng_state, ds_rng_state);
}
static inline unsigned rnd(void) { ds_rng_state ^= ds_rng_state << 13; ds_rng_state ^= ds_rng_state >> 7; ds_rng_state ^= ds_rng_state << 17; return (unsigned)(ds_rng_state >> 11); }
static inline float rnd_unit(void) { return (float)(rnd() & 0xffffff) / 16777216.0f; }            /* [0, 1) */
static inline float rnd_normal(void) { float u = rnd_unit() + 1e-7f, v = rnd_unit(); return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v); }
static inline float bf16r(float x) { return bf16_to_f32(f32_to_bf16(x)); }
static inline uint8_t rnd_fp8(void) { uint8_t b = (uint8_t)rnd(); return (b & 0x7f) == 0x7f ? 0x7e : b; }   /* no NaN */

static inline void *dev_copy(const void *h, size_t n) {
    void *d = NULL;
    if (cudaMalloc(&d, n ? n : 1) != cudaSuccess) return NULL;
    if (n && cudaMemcpy(d, h, n, cudaMemcpyHostToDevice) != cudaSuccess) { cudaFree(d); return NULL; }
    return d;
}
static inline void *dev_poison(size_t n) {   /* 0xff bytes: bf16 NaN, e4m3 NaN, f32 NaN */
    void *d = NULL;
    if (cudaMalloc(&d, n ? n : 1) != cudaSuccess) return NULL;
    cudaMemset(d, 0xff, n ? n : 1);
    return d;
}
static inline int dev_get(void *h, const void *d, size_t n) { return cudaMemcpy(h, d, n, cudaMemcpyDeviceToHost) != cudaSuccess; }

static inline int ds_have_device(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("skipped: no CUDA device\n0 passed, 0 failed, 1 skipped\n");
        return 0;
    }
    struct cudaDeviceProp p;
    cudaGetDeviceProperties(&p, 0);
    printf("device: %s (sm_%d%d, %d SMs)\n", p.name, p.major, p.minor, p.multiProcessorCount);
    ds_seed();
    return 1;
}
static inline int ds_finish(void) {
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}

#endif

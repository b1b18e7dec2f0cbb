/* tests/gpu/gpu_test.h — shared by tests/gpu/test_*_gpu.c: a tiny harness (CHECK, CU, TEST,
 * GPU_TEST_MAIN that skips with "skipped: no CUDA device"), seeded random inputs (a fresh seed
 * each run unless RT_GPU_TEST_SEED is set; the seed is printed), bf16 rounding of host arrays
 * so the CPU twin sees exactly the values the GPU sees, device upload/download, output
 * poisoning (0xff bytes: NaN in bf16 and f32, so an unwritten element fails), and the
 * comparison helpers, which print the error they measured next to the bound they allow. */
#ifndef RT_TESTS_GPU_TEST_H
#define RT_TESTS_GPU_TEST_H

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/convert.h"

static int tg_failed, tg_passed;
static const char *tg_name = "";

#define CHECK(cond, ...)                                                         \
    do {                                                                         \
        if (!(cond)) {                                                           \
            printf("FAIL %s (%s:%d): ", tg_name, __FILE__, __LINE__);            \
            printf(__VA_ARGS__);                                                 \
            printf("\n");                                                        \
            tg_failed++;                                                         \
            return;                                                              \
        }                                                                        \
    } while (0)
#define CU(call)                                                                                          \
    do {                                                                                                  \
        cudaError_t e_ = (call);                                                                          \
        if (e_ != cudaSuccess) {                                                                          \
            printf("FAIL %s: %s: %s\n", tg_name, #call, cudaGetErrorString(e_));                          \
            tg_failed++;                                                                                  \
            return;                                                                                       \
        }                                                                                                 \
    } while (0)
#define RUN(fn)                                    \
    do {                                           \
        tg_name = #fn;                             \
        int f0_ = tg_failed;                       \
        fn();                                      \
        if (tg_failed == f0_) {                    \
            tg_passed++;                           \
            printf("ok   %s\n", #fn);              \
        }                                          \
    } while (0)

static uint64_t tg_rng = 0x9e3779b97f4a7c15ull;
static inline void tg_seed(void) {
    const char *s = getenv("RT_GPU_TEST_SEED");
    tg_rng = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) * 2654435761u + (uint64_t)clock();
    if (!tg_rng) tg_rng = 1;
    printf("seed %llu (RT_GPU_TEST_SEED to repeat)\n", (unsigned long long)tg_rng);
}
static inline uint32_t tg_u32(void) {
    tg_rng ^= tg_rng << 13;
    tg_rng ^= tg_rng >> 7;
    tg_rng ^= tg_rng << 17;
    return (uint32_t)(tg_rng >> 16);
}
static inline float tg_unif(void) { return ((float)tg_u32() + 0.5f) / 4294967296.0f; }
static inline float tg_randn(void) {
    float u = tg_unif(), v = tg_unif();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}
static inline float *tg_randn_arr(size_t n, float std) {
    float *x = (float *)malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = tg_randn() * std;
    return x;
}
/* Round x to bf16 in place (the CPU then works on exactly the GPU's inputs); returns the bits. */
static inline uint16_t *tg_round_bf16(float *x, size_t n) {
    uint16_t *h = (uint16_t *)malloc(n * 2);
    cvt_f32_to_bf16(x, h, n);
    cvt_bf16_to_f32(h, x, n);
    return h;
}
static inline void *tg_dev(const void *host, size_t bytes) {
    void *d = NULL;
    if (cudaMalloc(&d, bytes ? bytes : 1) != cudaSuccess) return NULL;
    if (host) cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice);
    else cudaMemset(d, 0xff, bytes);   /* poison */
    return d;
}
static inline uint16_t *tg_dev_bf16(float *x, size_t n) {   /* rounds x in place, uploads the bits */
    uint16_t *h = tg_round_bf16(x, n);
    uint16_t *d = (uint16_t *)tg_dev(h, n * 2);
    free(h);
    return d;
}
static inline float *tg_get_bf16(const uint16_t *d, size_t n) {   /* download bf16 → f32 */
    uint16_t *h = (uint16_t *)malloc(n * 2);
    float *f = (float *)malloc(n * sizeof(float));
    cudaMemcpy(h, d, n * 2, cudaMemcpyDeviceToHost);
    cvt_bf16_to_f32(h, f, n);
    free(h);
    return f;
}
static inline float *tg_get_f32(const float *d, size_t n) {
    float *f = (float *)malloc(n * sizeof(float));
    cudaMemcpy(f, d, n * sizeof(float), cudaMemcpyDeviceToHost);
    return f;
}

/* Elementwise: |got − want| ≤ atol + rtol·|want| (+ extra[i] when extra != NULL). Prints the
 * worst element's error and its bound; returns 1 if every element is within its bound. */
static inline int tg_close(const char *what, const float *got, const float *want, const float *extra, size_t n, float atol,
                    float rtol) {
    size_t bad = 0, worst = 0;
    double worst_ratio = 0, max_abs = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        double b = atol + rtol * fabs((double)want[i]) + (extra ? extra[i] : 0.0);
        if (!(d <= b)) bad++;   /* NaN fails */
        double r = b > 0 ? d / b : (d > 0 ? INFINITY : 0);
        if (!(r <= worst_ratio)) worst_ratio = r, worst = i;
        if (d > max_abs) max_abs = d;
    }
    printf("     %-22s n=%zu max|err|=%.3g worst err/bound=%.3f%s", what, n, max_abs, worst_ratio,
           bad ? "" : "\n");
    if (bad)
        printf("  %zu outside: [%zu] got %.8g want %.8g\n", bad, worst, (double)got[worst], (double)want[worst]);
    return bad == 0;
}
/* Normwise: ‖got − want‖₂ ≤ rel·‖want‖₂ and max|got − want| ≤ maxrel·max|want|; no NaN. */
static inline int tg_close_norm(const char *what, const float *got, const float *want, size_t n, double rel, double maxrel) {
    double e2 = 0, w2 = 0, emax = 0, wmax = 0;
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)got[i] - (double)want[i];
        if (d != d) nan = 1;
        e2 += d * d, w2 += (double)want[i] * want[i];
        if (fabs(d) > emax) emax = fabs(d);
        if (fabs(want[i]) > wmax) wmax = fabs(want[i]);
    }
    double r = sqrt(e2) / (sqrt(w2) > 0 ? sqrt(w2) : 1), m = emax / (wmax > 0 ? wmax : 1);
    printf("     %-22s n=%zu rel‖err‖=%.3g (≤ %.3g) max|err|/max|want|=%.3g (≤ %.3g)%s\n", what, n, r, rel, m, maxrel,
           nan ? " NaN" : "");
    return !nan && r <= rel && m <= maxrel;
}
static inline int tg_equal_u16(const char *what, const uint16_t *got, const uint16_t *want, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) {
            printf("     %-22s [%zu] got 0x%04x want 0x%04x\n", what, i, got[i], want[i]);
            return 0;
        }
    printf("     %-22s n=%zu bit-identical\n", what, n);
    return 1;
}
static inline int tg_equal_f32(const char *what, const float *got, const float *want, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], 4)) {
            printf("     %-22s [%zu] got %.9g want %.9g\n", what, i, (double)got[i], (double)want[i]);
            return 0;
        }
    printf("     %-22s n=%zu bit-identical\n", what, n);
    return 1;
}

#define BF16_U 0.00390625f   /* 2^-8: bf16's unit roundoff (8 significant bits) */
#define F32_U 5.9604645e-08f /* 2^-24 */

#define GPU_TEST_MAIN(...)                                                          \
    int main(void) {                                                                \
        int ndev = 0;                                                               \
        if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {                \
            printf("skipped: no CUDA device\n0 passed, 0 failed, 1 skipped\n");     \
            return 0;                                                               \
        }                                                                           \
        tg_seed();                                                                  \
        __VA_ARGS__                                                                 \
        printf("%d passed, %d failed\n", tg_passed, tg_failed);                     \
        return tg_failed ? 1 : 0;                                                   \
    }

#endif

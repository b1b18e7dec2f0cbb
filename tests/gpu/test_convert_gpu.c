/* tests/gpu/test_convert_gpu.c — the CUDA conversion kernels against their CPU twins
 * (kernels/cpu/convert.c, itself tested against torch). Needs a GPU: `make gpu-test`.
 * Tolerance: exact. bf16 ↔ f32 is exactly specified; the dequantization multiplies one fp8
 * value by one f32 scale and rounds once to bf16 on both sides. */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/convert.h"

static int failed, passed;
#define CHECK(cond, ...) do { if (!(cond)) { printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); failed++; return; } } while (0)
#define CU(call) do { cudaError_t e_ = (call); if (e_ != cudaSuccess) { printf("FAIL %s: %s\n", #call, cudaGetErrorString(e_)); failed++; return; } } while (0)

static unsigned long long rng = 88172645463325252ull;
static unsigned rnd(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return (unsigned)rng; }

static void test_bf16_round_trip(void) {
    size_t n = (1u << 20) + 3;
    float *x = malloc(n * 4), *back = malloc(n * 4);
    uint16_t *want = malloc(n * 2), *got = malloc(n * 2);
    for (size_t i = 0; i < n; i++) { uint32_t u = rnd(); memcpy(&x[i], &u, 4); if (x[i] != x[i]) x[i] = 1.5f; }
    cvt_f32_to_bf16(x, want, n);
    float *dx; uint16_t *dh; float *df;
    CU(cudaMalloc((void **)&dx, n * 4)); CU(cudaMalloc((void **)&dh, n * 2)); CU(cudaMalloc((void **)&df, n * 4));
    CU(cudaMemcpy(dx, x, n * 4, cudaMemcpyHostToDevice));
    CU(cudaMemset(dh, 0xff, n * 2));
    CHECK(!cvt_f32_to_bf16_cuda(dx, dh, n, NULL), "launch");
    CU(cudaMemcpy(got, dh, n * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) CHECK(got[i] == want[i], "f32->bf16 [%zu]: gpu 0x%04x cpu 0x%04x", i, got[i], want[i]);
    CHECK(!cvt_bf16_to_f32_cuda(dh, df, n, NULL), "launch");
    CU(cudaMemcpy(back, df, n * 4, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++) CHECK(back[i] == bf16_to_f32(want[i]) || back[i] != back[i], "bf16->f32 [%zu]", i);
    cudaFree(dx); cudaFree(dh); cudaFree(df);
    free(x); free(back); free(want); free(got);
    passed++;
}

static void test_block_dequant(void) {
    int64_t rows = 1000, cols = 700; /* partial blocks on both edges */
    int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
    uint8_t *w = malloc((size_t)(rows * cols));
    float *s = malloc((size_t)(sr * sc) * 4), *ref = malloc((size_t)(rows * cols) * 4);
    uint16_t *got = malloc((size_t)(rows * cols) * 2);
    for (int64_t i = 0; i < rows * cols; i++) { w[i] = (uint8_t)rnd(); if ((w[i] & 0x7f) == 0x7f) w[i] = 0; }
    for (int64_t i = 0; i < sr * sc; i++) s[i] = (float)(rnd() % 1000 + 1) * 1e-4f;
    fp8_block_dequant(w, s, rows, cols, 128, 128, ref, NULL);
    uint8_t *dw; float *ds; uint16_t *dout;
    CU(cudaMalloc((void **)&dw, (size_t)(rows * cols))); CU(cudaMalloc((void **)&ds, (size_t)(sr * sc) * 4));
    CU(cudaMalloc((void **)&dout, (size_t)(rows * cols) * 2));
    CU(cudaMemcpy(dw, w, (size_t)(rows * cols), cudaMemcpyHostToDevice));
    CU(cudaMemcpy(ds, s, (size_t)(sr * sc) * 4, cudaMemcpyHostToDevice));
    CU(cudaMemset(dout, 0xff, (size_t)(rows * cols) * 2));
    CHECK(!fp8_block_dequant_cuda(dw, ds, rows, cols, 128, 128, dout, NULL), "launch");
    CU(cudaMemcpy(got, dout, (size_t)(rows * cols) * 2, cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < rows * cols; i++)
        CHECK(got[i] == f32_to_bf16(ref[i]), "dequant [%lld]: gpu 0x%04x cpu 0x%04x", (long long)i, got[i], f32_to_bf16(ref[i]));
    cudaFree(dw); cudaFree(ds); cudaFree(dout);
    free(w); free(s); free(ref); free(got);
    passed++;
}

int main(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("skipped: no CUDA device\n0 passed, 0 failed, 1 skipped\n");
        return 0;
    }
    test_bf16_round_trip();
    test_block_dequant();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

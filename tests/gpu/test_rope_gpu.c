/* tests/gpu/test_rope_gpu.c — RoPE (kernels/cuda/rope.cu) against the CPU twin rope_tables +
 * rope_apply (kernels/cpu/rope.c, tested against transformers), forward and inverse, for
 * head dims taking the vector path (half % 8 == 0: 64, 128, 80) and the scalar one (36).
 * inv_freq is the default θ^(-2i/d) formed here in f32.
 *
 * Tolerance: both sides take cos/sin of the same f32 angle; CUDA's sincosf is within 2 ulp
 * and glibc's within 1, so cos and sin differ by ≤ 3·2^-24 (|cos|, |sin| ≤ 1); with the two
 * f32 products and the sum: ≤ 8·2^-24·(|a| + |b|) before the output's bf16 rounding
 * (2^-8·|want|). */
#include "tests/gpu/gpu_test.h"

#include "kernels/rope.h"

static void rope_case(int64_t T, int64_t H, int64_t hd, float theta) {
    int64_t half = hd / 2;
    size_t n = (size_t)(T * H * hd);
    float *x = tg_randn_arr(n, 1.f), *inv = malloc((size_t)half * 4);
    int32_t *pos = malloc((size_t)T * 4);
    for (int64_t t = 0; t < T; t++) pos[t] = (int32_t)(tg_u32() % 32768);
    pos[0] = 0;
    for (int64_t i = 0; i < half; i++) inv[i] = (float)(1.0 / pow(theta, (double)(2 * i) / (double)hd));
    uint16_t *dx = tg_dev_bf16(x, n);
    int32_t *dpos = (int32_t *)tg_dev(pos, (size_t)T * 4);
    float *dinv = (float *)tg_dev(inv, (size_t)half * 4);
    float *ct = malloc((size_t)(T * half) * 4), *st = malloc((size_t)(T * half) * 4);
    rope_tables(ct, st, pos, T, inv, half);
    for (int inverse = 0; inverse < 2; inverse++) {
        uint16_t *d = (uint16_t *)tg_dev(NULL, n * 2);
        CU(cudaMemcpy(d, dx, n * 2, cudaMemcpyDeviceToDevice));
        CHECK(!rope_apply_cuda(d, dpos, dinv, T, H, hd, inverse, NULL), "launch");
        CU(cudaDeviceSynchronize());
        float *want = malloc(n * 4), *extra = malloc(n * 4);
        memcpy(want, x, n * 4);
        rope_apply(want, ct, st, T, H, hd, inverse, NULL);
        for (size_t e = 0; e < n; e++) {
            size_t i = e % (size_t)hd, base = e - i;
            size_t j = i < (size_t)half ? i + (size_t)half : i - (size_t)half;
            extra[e] = 8 * F32_U * (fabsf(x[base + i]) + fabsf(x[base + j]));
        }
        float *got = tg_get_bf16(d, n);
        char what[64];
        snprintf(what, sizeof what, "hd=%lld %s", (long long)hd, inverse ? "inverse" : "forward");
        int ok = tg_close(what, got, want, extra, n, 0, BF16_U);
        cudaFree(d);
        free(want), free(extra), free(got);
        CHECK(ok, "outside tolerance");
    }
    cudaFree(dx), cudaFree(dpos), cudaFree(dinv);
    free(x), free(inv), free(pos), free(ct), free(st);
}

static void rope_forward_and_inverse_match_cpu(void) {
    rope_case(301, 8, 128, 1000000.f);
    rope_case(97, 14, 64, 10000.f);
    rope_case(50, 3, 80, 10000.f);
    rope_case(33, 5, 36, 500000.f);
}

/* rope_apply_cuda_ld on q inside a wider row (a fused QKV buffer) gives the dense call's bits and
 * leaves the rest of each row alone. */
static void rope_strided_rows_equal_dense(void) {
    int64_t T = 77, H = 4, hd = 128, ld = (4 + 2 * 2) * 128;
    size_t n = (size_t)(T * H * hd), nw = (size_t)(T * ld);
    float *x = tg_randn_arr(nw, 1.f), *inv = malloc(64 * 4);
    int32_t *pos = malloc((size_t)T * 4);
    for (int64_t t = 0; t < T; t++) pos[t] = (int32_t)(t * 13);
    for (int i = 0; i < 64; i++) inv[i] = (float)pow(1e6, -(double)(2 * i) / 128.0);
    uint16_t *wide = tg_dev_bf16(x, nw), *dense = (uint16_t *)tg_dev(NULL, n * 2);
    CU(cudaMemcpy2D(dense, (size_t)(H * hd) * 2, wide, (size_t)ld * 2, (size_t)(H * hd) * 2, (size_t)T, cudaMemcpyDeviceToDevice));
    int32_t *dpos = (int32_t *)tg_dev(pos, (size_t)T * 4);
    float *dinv = (float *)tg_dev(inv, 64 * 4);
    uint16_t *before = malloc(nw * 2), *after = malloc(nw * 2), *d = malloc(n * 2);
    CU(cudaMemcpy(before, wide, nw * 2, cudaMemcpyDeviceToHost));
    CHECK(!rope_apply_cuda_ld(wide, ld, dpos, dinv, T, H, hd, false, NULL), "strided");
    CHECK(!rope_apply_cuda(dense, dpos, dinv, T, H, hd, false, NULL), "dense");
    CU(cudaDeviceSynchronize());
    CU(cudaMemcpy(after, wide, nw * 2, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(d, dense, n * 2, cudaMemcpyDeviceToHost));
    int ok = 1;
    for (int64_t t = 0; t < T && ok; t++) {
        ok &= !memcmp(after + t * ld, d + t * H * hd, (size_t)(H * hd) * 2);
        ok &= !memcmp(after + t * ld + H * hd, before + t * ld + H * hd, (size_t)(ld - H * hd) * 2);
    }
    printf("     strided rows %s\n", ok ? "bit-identical to dense, rest of rows untouched" : "DIFFER");
    cudaFree(wide), cudaFree(dense), cudaFree(dpos), cudaFree(dinv);
    free(x), free(inv), free(pos), free(before), free(after), free(d);
    CHECK(ok, "strided rope differs");
}

GPU_TEST_MAIN(RUN(rope_forward_and_inverse_match_cpu); RUN(rope_strided_rows_equal_dense);)

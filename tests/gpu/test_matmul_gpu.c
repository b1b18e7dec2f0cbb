/* tests/gpu/test_matmul_gpu.c — the cuBLASLt GEMMs (kernels/cuda/matmul.cu) against the CPU
 * twins of kernels/matmul.h (themselves tested against torch), on the same bf16-rounded inputs.
 *
 * Tolerance, per element: the GPU accumulates in f32 in another order than OpenBLAS, so the
 * two sums differ by at most the classic bound γ_K·Σ_k|a_k·b_k| ≈ K·2^-24·(|A|·|B|)_ij on
 * each side — K·2^-23·(|A|·|B|)_ij together (|A|·|B| is formed by the CPU twin on |x|, |w|);
 * a bf16 output is then rounded once more: + 2^-8·|want|. f32 outputs (dw) get no rounding
 * term. The bias column sums: M·2^-23·Σ_m|dy|. */
#include "tests/gpu/gpu_test.h"

#include "kernels/matmul.h"

static float *absdup(const float *x, size_t n) {
    float *y = (float *)malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) y[i] = fabsf(x[i]);
    return y;
}
static float *scaled(const float *x, size_t n, float s) {
    float *y = (float *)malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) y[i] = x[i] * s;
    return y;
}

static void linear_fwd_with_bias_epilogue(void) {
    int64_t M = 333, N = 520, K = 264;
    float *x = tg_randn_arr((size_t)(M * K), 1.f), *w = tg_randn_arr((size_t)(N * K), 0.05f), *b = tg_randn_arr((size_t)N, 0.5f);
    uint16_t *dx = tg_dev_bf16(x, (size_t)(M * K)), *dw = tg_dev_bf16(w, (size_t)(N * K)), *db = tg_dev_bf16(b, (size_t)N);
    uint16_t *dy = (uint16_t *)tg_dev(NULL, (size_t)(M * N) * 2), *dy2 = (uint16_t *)tg_dev(NULL, (size_t)(M * N) * 2);
    mm_cuda_ctx *c = NULL;
    CHECK(!mm_cuda_ctx_create(&c, 0), "ctx");
    CHECK(!mm_linear_fwd_cuda(c, dy, dx, dw, db, M, N, K, NULL), "fwd: %s", "launch");
    CHECK(!mm_linear_fwd_cuda(c, dy2, dx, dw, NULL, M, N, K, NULL), "fwd (no bias)");
    CU(cudaDeviceSynchronize());
    float *want = malloc((size_t)(M * N) * 4), *want2 = malloc((size_t)(M * N) * 4), *bound = malloc((size_t)(M * N) * 4);
    mm_linear_fwd(want, x, w, b, M, N, K, NULL);
    mm_linear_fwd(want2, x, w, NULL, M, N, K, NULL);
    float *ax = absdup(x, (size_t)(M * K)), *aw = absdup(w, (size_t)(N * K));
    mm_linear_fwd(bound, ax, aw, NULL, M, N, K, NULL);
    float *extra = scaled(bound, (size_t)(M * N), (float)K * 2 * F32_U);
    float *got = tg_get_bf16(dy, (size_t)(M * N)), *got2 = tg_get_bf16(dy2, (size_t)(M * N));
    int ok = tg_close("y = x·wᵀ + b", got, want, extra, (size_t)(M * N), 0, BF16_U);
    ok &= tg_close("y = x·wᵀ", got2, want2, extra, (size_t)(M * N), 0, BF16_U);
    mm_cuda_ctx_free(c);
    cudaFree(dx), cudaFree(dw), cudaFree(db), cudaFree(dy), cudaFree(dy2);
    free(x), free(w), free(b), free(want), free(want2), free(bound), free(ax), free(aw), free(extra), free(got), free(got2);
    CHECK(ok, "outside tolerance");
}

static void linear_bwd_x_accumulates(void) {
    int64_t M = 257, N = 384, K = 200;
    float *dyv = tg_randn_arr((size_t)(M * N), 1.f), *w = tg_randn_arr((size_t)(N * K), 0.05f);
    float *dx0 = tg_randn_arr((size_t)(M * K), 1.f);
    uint16_t *ddy = tg_dev_bf16(dyv, (size_t)(M * N)), *dw = tg_dev_bf16(w, (size_t)(N * K)), *ddx = tg_dev_bf16(dx0, (size_t)(M * K));
    mm_cuda_ctx *c = NULL;
    CHECK(!mm_cuda_ctx_create(&c, 0), "ctx");
    CHECK(!mm_linear_bwd_x_cuda(c, ddx, true, ddy, dw, M, N, K, NULL), "bwd_x");
    CU(cudaDeviceSynchronize());
    float *want = malloc((size_t)(M * K) * 4), *bound = calloc((size_t)(M * K), 4);
    memcpy(want, dx0, (size_t)(M * K) * 4);
    mm_linear_bwd_x(want, true, dyv, w, M, N, K, NULL);
    float *ady = absdup(dyv, (size_t)(M * N)), *aw = absdup(w, (size_t)(N * K));
    mm_linear_bwd_x(bound, false, ady, aw, M, N, K, NULL);
    float *extra = scaled(bound, (size_t)(M * K), (float)(N + 1) * 2 * F32_U);
    float *got = tg_get_bf16(ddx, (size_t)(M * K));
    int ok = tg_close("dx += dy·w", got, want, extra, (size_t)(M * K), 0, BF16_U);
    mm_cuda_ctx_free(c);
    cudaFree(ddy), cudaFree(dw), cudaFree(ddx);
    free(dyv), free(w), free(dx0), free(want), free(bound), free(ady), free(aw), free(extra), free(got);
    CHECK(ok, "outside tolerance");
}

static void linear_bwd_w_accumulates_f32_and_bias(void) {
    int64_t M = 700, N = 136, K = 96;
    float *dyv = tg_randn_arr((size_t)(M * N), 1.f), *x = tg_randn_arr((size_t)(M * K), 1.f);
    float *w0 = tg_randn_arr((size_t)(N * K), 1.f), *b0 = tg_randn_arr((size_t)N, 1.f);
    uint16_t *ddy = tg_dev_bf16(dyv, (size_t)(M * N)), *dx = tg_dev_bf16(x, (size_t)(M * K));
    float *ddw = (float *)tg_dev(w0, (size_t)(N * K) * 4), *ddb = (float *)tg_dev(b0, (size_t)N * 4);
    mm_cuda_ctx *c = NULL;
    CHECK(!mm_cuda_ctx_create(&c, 0), "ctx");
    CHECK(!mm_linear_bwd_w_cuda(c, ddw, ddb, ddy, dx, M, N, K, NULL), "bwd_w");
    CU(cudaDeviceSynchronize());
    float *want = malloc((size_t)(N * K) * 4), *wantb = malloc((size_t)N * 4);
    memcpy(want, w0, (size_t)(N * K) * 4), memcpy(wantb, b0, (size_t)N * 4);
    mm_linear_bwd_w(want, wantb, dyv, x, M, N, K, NULL);
    float *bound = calloc((size_t)(N * K), 4), *boundb = calloc((size_t)N, 4);
    float *ady = absdup(dyv, (size_t)(M * N)), *ax = absdup(x, (size_t)(M * K));
    mm_linear_bwd_w(bound, boundb, ady, ax, M, N, K, NULL);
    for (int64_t i = 0; i < N * K; i++) bound[i] = bound[i] * (float)(M + 1) * 2 * F32_U + 2 * F32_U * fabsf(w0[i]);
    for (int64_t i = 0; i < N; i++) boundb[i] = boundb[i] * (float)(M + 1) * 2 * F32_U + 2 * F32_U * fabsf(b0[i]);
    float *got = tg_get_f32(ddw, (size_t)(N * K)), *gotb = tg_get_f32(ddb, (size_t)N);
    int ok = tg_close("dw += dyᵀ·x (f32)", got, want, bound, (size_t)(N * K), 0, 0);
    ok &= tg_close("db += Σ dy (f32)", gotb, wantb, boundb, (size_t)N, 0, 0);
    mm_cuda_ctx_free(c);
    cudaFree(ddy), cudaFree(dx), cudaFree(ddw), cudaFree(ddb);
    free(dyv), free(x), free(w0), free(b0), free(want), free(wantb), free(bound), free(boundb), free(ady), free(ax);
    free(got), free(gotb);
    CHECK(ok, "outside tolerance");
}

/* mm_gemm_cuda with every transpose combination, strided operands, alpha/beta, against a
 * plain double-precision loop written here. */
static void gemm_general_transposes_and_strides(void) {
    int64_t M = 72, N = 48, K = 40, pad = 8;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int f32 = 0; f32 < 2; f32++) {
                int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
                int64_t lda = ac + pad, ldb = bc + pad, ldd = N + pad;
                float *a = tg_randn_arr((size_t)(ar * lda), 1.f), *b = tg_randn_arr((size_t)(br * ldb), 1.f);
                float *d0 = tg_randn_arr((size_t)(M * ldd), 1.f);
                uint16_t *da = tg_dev_bf16(a, (size_t)(ar * lda)), *db = tg_dev_bf16(b, (size_t)(br * ldb));
                uint16_t *d0h = f32 ? NULL : tg_round_bf16(d0, (size_t)(M * ldd));
                void *dd = f32 ? tg_dev(d0, (size_t)(M * ldd) * 4) : tg_dev(d0h, (size_t)(M * ldd) * 2);
                mm_cuda_ctx *c = NULL;
                CHECK(!mm_cuda_ctx_create(&c, 1 << 20), "ctx");
                float alpha = 0.75f, beta = -0.5f;
                CHECK(!mm_gemm_cuda(c, dd, f32, ldd, da, lda, ta, db, ldb, tb, M, N, K, alpha, beta, NULL),
                      "gemm ta=%d tb=%d f32=%d", ta, tb, f32);
                CU(cudaDeviceSynchronize());
                float *got = f32 ? tg_get_f32((float *)dd, (size_t)(M * ldd)) : tg_get_bf16((uint16_t *)dd, (size_t)(M * ldd));
                float *want = malloc((size_t)(M * ldd) * 4), *extra = malloc((size_t)(M * ldd) * 4);
                for (int64_t i = 0; i < M; i++)
                    for (int64_t j = 0; j < ldd; j++) {
                        if (j >= N) {   /* padding columns must be untouched */
                            want[i * ldd + j] = d0[i * ldd + j], extra[i * ldd + j] = 0;
                            continue;
                        }
                        double s = 0, sa = 0;
                        for (int64_t p = 0; p < K; p++) {
                            double av = ta ? a[p * lda + i] : a[i * lda + p], bv = tb ? b[j * ldb + p] : b[p * ldb + j];
                            s += av * bv, sa += fabs(av * bv);
                        }
                        want[i * ldd + j] = (float)(alpha * s + beta * d0[i * ldd + j]);
                        extra[i * ldd + j] = (float)((K + 2) * F32_U * (sa + fabs(d0[i * ldd + j])));
                    }
                char what[64];
                snprintf(what, sizeof what, "gemm ta=%d tb=%d %s", ta, tb, f32 ? "f32" : "bf16");
                int ok = tg_close(what, got, want, extra, (size_t)(M * ldd), 0, f32 ? 0 : BF16_U);
                mm_cuda_ctx_free(c);
                cudaFree(da), cudaFree(db), cudaFree(dd);
                free(a), free(b), free(d0), free(d0h), free(got), free(want), free(extra);
                CHECK(ok, "outside tolerance");
            }
}

GPU_TEST_MAIN(RUN(linear_fwd_with_bias_epilogue); RUN(linear_bwd_x_accumulates);
              RUN(linear_bwd_w_accumulates_f32_and_bias); RUN(gemm_general_transposes_and_strides);)

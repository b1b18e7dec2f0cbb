/* tests/gpu/test_norm_gpu.c — fused residual-add RMSNorm (kernels/cuda/norm.cu) against the
 * CPU twin rmsnorm_fwd/rmsnorm_bwd (kernels/cpu/norm.c, tested against torch), on the same
 * bf16 inputs, for row widths that take every register-tiling variant (D/8/256 ≤ 1, 2, 4, 8).
 *
 * The forward's twin is rmsnorm_residual_fwd; since the GPU stores the residual sum in bf16 and
 * normalizes that stored value, the reference is that twin's two steps with the same rounding
 * in between: the f32 sum, rounded to bf16, then rmsnorm_fwd.
 * Tolerances. Residual: res + add is one f32 addition rounded to bf16 on both sides: bit-
 * identical. y: the GPU's f32 sum of squares (tree order) vs the CPU's double sum changes
 * rstd by ≤ (D+8)·2^-24 relative; y is then rounded to bf16: 2^-8·|want| + (D+8)·2^-24·|want|.
 * rstd (f32): (D+8)·2^-24 relative. Backward: dx = r·(g − x̂·mean(g ⊙ x̂)); the mean's f32 sum
 * may differ by 2(D+8)·2^-24·Σ|g ⊙ x̂|/D, each element of dx by r·|x̂_j| times that, plus a few
 * f32 roundings of r·|g_j|; dres (bf16) adds 2^-8·|want|. dw (f32): partial sums in another
 * order, (M+8)·2^-23·Σ_i|dy·x̂| + 2^-23·|dw0|. */
#include "tests/gpu/gpu_test.h"

#include "kernels/norm.h"

static void fwd_case(int64_t M, int64_t D, int with_add) {
    float eps = 1e-6f;
    size_t n = (size_t)(M * D);
    float *res = tg_randn_arr(n, 1.f), *add = tg_randn_arr(n, 0.5f), *w = tg_randn_arr((size_t)D, 0.3f);
    for (int64_t j = 0; j < D; j++) w[j] += 1.f;
    uint16_t *dres = tg_dev_bf16(res, n), *dadd = tg_dev_bf16(add, n), *dw = tg_dev_bf16(w, (size_t)D);
    uint16_t *dy = (uint16_t *)tg_dev(NULL, n * 2);
    float *drstd = (float *)tg_dev(NULL, (size_t)M * 4);
    CHECK(!rmsnorm_fwd_cuda(dy, drstd, dres, with_add ? dadd : NULL, dw, M, D, eps, NULL), "launch D=%lld", (long long)D);
    CU(cudaDeviceSynchronize());
    /* CPU: the residual sum rounded to bf16, then the twin */
    float *sum = malloc(n * 4), *want = malloc(n * 4), *want_rstd = malloc((size_t)M * 4);
    if (with_add) rmsnorm_residual_fwd(want, want_rstd, sum, res, add, w, M, D, eps, NULL);   /* the f32 sum */
    else memcpy(sum, res, n * 4);
    uint16_t *want_res = tg_round_bf16(sum, n);                 /* stored as bf16 ... */
    rmsnorm_fwd(want, want_rstd, sum, w, M, D, eps, NULL);      /* ... and normalized as stored */
    uint16_t *got_res = malloc(n * 2);
    cudaMemcpy(got_res, dres, n * 2, cudaMemcpyDeviceToHost);
    float *got = tg_get_bf16(dy, n), *got_rstd = tg_get_f32(drstd, (size_t)M);
    char what[64];
    snprintf(what, sizeof what, "res D=%lld", (long long)D);
    int ok = tg_equal_u16(what, got_res, want_res, n);
    snprintf(what, sizeof what, "y D=%lld%s", (long long)D, with_add ? " (+add)" : "");
    ok &= tg_close(what, got, want, NULL, n, 0, BF16_U + (float)(D + 8) * F32_U);
    ok &= tg_close("rstd", got_rstd, want_rstd, NULL, (size_t)M, 0, (float)(D + 8) * F32_U);
    cudaFree(dres), cudaFree(dadd), cudaFree(dw), cudaFree(dy), cudaFree(drstd);
    free(res), free(add), free(w), free(sum), free(want_res), free(want), free(want_rstd), free(got_res), free(got);
    free(got_rstd);
    CHECK(ok, "outside tolerance");
}

/* rmsnorm_residual_fwd_cuda (out of place) must equal the in-place form bit for bit. */
static void fwd_out_of_place_equals_in_place(void) {
    int64_t M = 19, D = 4096;
    size_t n = (size_t)(M * D);
    float *res = tg_randn_arr(n, 1.f), *add = tg_randn_arr(n, 0.5f), *w = tg_randn_arr((size_t)D, 1.f);
    uint16_t *a = tg_dev_bf16(res, n), *b = tg_dev_bf16(res, n), *dadd = tg_dev_bf16(add, n), *dw = tg_dev_bf16(w, (size_t)D);
    uint16_t *sum = (uint16_t *)tg_dev(NULL, n * 2), *y1 = (uint16_t *)tg_dev(NULL, n * 2), *y2 = (uint16_t *)tg_dev(NULL, n * 2);
    CHECK(!rmsnorm_fwd_cuda(y1, NULL, a, dadd, dw, M, D, 1e-5f, NULL), "in place");
    CHECK(!rmsnorm_residual_fwd_cuda(y2, NULL, sum, b, dadd, dw, M, D, 1e-5f, NULL), "out of place");
    CU(cudaDeviceSynchronize());
    uint16_t *h1 = malloc(n * 2), *h2 = malloc(n * 2), *s1 = malloc(n * 2), *s2 = malloc(n * 2), *b0 = malloc(n * 2);
    CU(cudaMemcpy(h1, y1, n * 2, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(h2, y2, n * 2, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(s1, a, n * 2, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(s2, sum, n * 2, cudaMemcpyDeviceToHost));
    CU(cudaMemcpy(b0, b, n * 2, cudaMemcpyDeviceToHost));
    uint16_t *orig = tg_round_bf16(res, n);
    int ok = tg_equal_u16("y", h2, h1, n) & tg_equal_u16("sum", s2, s1, n) & tg_equal_u16("x untouched", b0, orig, n);
    cudaFree(a), cudaFree(b), cudaFree(dadd), cudaFree(dw), cudaFree(sum), cudaFree(y1), cudaFree(y2);
    free(res), free(add), free(w), free(h1), free(h2), free(s1), free(s2), free(b0), free(orig);
    CHECK(ok, "differs");
}

static void fwd_fused_residual_all_widths(void) {
    const int64_t Ds[] = {64, 896, 4096, 8192, 12288};
    for (int i = 0; i < 5; i++) {
        fwd_case(37, Ds[i], 1);
        fwd_case(5, Ds[i], 0);
    }
}

static void bwd_case(int64_t M, int64_t D) {
    size_t n = (size_t)(M * D);
    float *x = tg_randn_arr(n, 1.f), *dy = tg_randn_arr(n, 1.f), *dres0 = tg_randn_arr(n, 1.f);
    float *w = tg_randn_arr((size_t)D, 0.3f), *dw0 = tg_randn_arr((size_t)D, 1.f);
    for (int64_t j = 0; j < D; j++) w[j] += 1.f;
    uint16_t *dx_ = tg_dev_bf16(x, n), *ddy = tg_dev_bf16(dy, n), *ddres = tg_dev_bf16(dres0, n), *dw_ = tg_dev_bf16(w, (size_t)D);
    float *rstd = malloc((size_t)M * 4), *ytmp = malloc(n * 4);
    rmsnorm_fwd(ytmp, rstd, x, w, M, D, 1e-6f, NULL);
    float *drstd = (float *)tg_dev(rstd, (size_t)M * 4), *ddw = (float *)tg_dev(dw0, (size_t)D * 4);
    void *ws = tg_dev(NULL, rmsnorm_bwd_cuda_ws_bytes(M, D));
    CHECK(!rmsnorm_bwd_cuda(ddres, ddw, ddy, dx_, dw_, drstd, M, D, ws, NULL), "launch");
    CU(cudaDeviceSynchronize());
    float *want = malloc(n * 4), *want_dw = malloc((size_t)D * 4);
    memcpy(want, dres0, n * 4), memcpy(want_dw, dw0, (size_t)D * 4);
    rmsnorm_bwd(want, want_dw, dy, x, w, rstd, M, D, NULL);
    float *extra = malloc(n * 4), *extra_dw = calloc((size_t)D, 4);
    for (int64_t i = 0; i < M; i++) {
        double a = 0;
        float r = rstd[i];
        for (int64_t j = 0; j < D; j++) a += fabs((double)dy[i * D + j] * w[j] * x[i * D + j] * r);
        a /= (double)D;
        for (int64_t j = 0; j < D; j++) {
            float xh = fabsf(x[i * D + j] * r), g = fabsf(dy[i * D + j] * w[j]);
            extra[i * D + j] = r * (8 * F32_U * (g + xh * (float)a) + xh * (float)(2 * (D + 8) * a) * F32_U);
            extra_dw[j] += fabsf(dy[i * D + j] * x[i * D + j] * r);
        }
    }
    for (int64_t j = 0; j < D; j++) extra_dw[j] = extra_dw[j] * (float)(M + 8) * 2 * F32_U + 2 * F32_U * fabsf(dw0[j]);
    float *got = tg_get_bf16(ddres, n), *got_dw = tg_get_f32(ddw, (size_t)D);
    char what[64];
    snprintf(what, sizeof what, "dres D=%lld", (long long)D);
    int ok = tg_close(what, got, want, extra, n, 0, BF16_U);
    ok &= tg_close("dw (f32)", got_dw, want_dw, extra_dw, (size_t)D, 0, 0);
    cudaFree(dx_), cudaFree(ddy), cudaFree(ddres), cudaFree(dw_), cudaFree(drstd), cudaFree(ddw), cudaFree(ws);
    free(x), free(dy), free(dres0), free(w), free(dw0), free(rstd), free(ytmp), free(want), free(want_dw), free(extra);
    free(extra_dw), free(got), free(got_dw);
    CHECK(ok, "outside tolerance");
}

static void bwd_fused_residual_all_widths(void) {
    bwd_case(200, 64);    /* several row blocks of 64, the last partial */
    bwd_case(130, 896);
    bwd_case(70, 4096);
    bwd_case(9, 8192);
    bwd_case(3, 12288);
}

GPU_TEST_MAIN(RUN(fwd_fused_residual_all_widths); RUN(fwd_out_of_place_equals_in_place);
              RUN(bwd_fused_residual_all_widths);)

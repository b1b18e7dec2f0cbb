/* tests/gpu/test_act_gpu.c — SwiGLU (kernels/cuda/act.cu) against the CPU twin swiglu_fwd /
 * swiglu_bwd (kernels/cpu/act.c, tested against torch), with separate gate/up buffers
 * (ld_in = F) and with a fused gate_up layout (ld_in = 2F, u = g + F).
 *
 * Tolerance: the same f32 formulas; CUDA's expf is within 2 ulp and glibc's within 1, and a
 * handful of f32 operations follow, so the two f32 results differ by ≤ 8·2^-24 relative to
 * the magnitudes involved (|g·u| forward; |da·g| for du; |da·u|·(1 + |g|) for dg, whose
 * factor 1 + g(1 − σ) may cancel); the bf16 output adds 2^-8·|want|. */
#include "tests/gpu/gpu_test.h"

#include "kernels/act.h"

static void swiglu_case(int64_t M, int64_t F, int fused) {
    int64_t ld = fused ? 2 * F : F;
    size_t n = (size_t)(M * F), nin = (size_t)(M * ld);
    float *gu = tg_randn_arr(fused ? nin : 2 * n, 2.f), *da = tg_randn_arr(n, 1.f);
    uint16_t *dgu = tg_dev_bf16(gu, fused ? nin : 2 * n), *dda = tg_dev_bf16(da, n);
    const uint16_t *dg = dgu, *du = fused ? dgu + F : dgu + n;
    /* host copies as contiguous [M, F] */
    float *g = malloc(n * 4), *u = malloc(n * 4);
    for (int64_t r = 0; r < M; r++)
        for (int64_t c = 0; c < F; c++) {
            g[r * F + c] = fused ? gu[r * ld + c] : gu[r * F + c];
            u[r * F + c] = fused ? gu[r * ld + F + c] : gu[n + r * F + c];
        }
    uint16_t *dout = (uint16_t *)tg_dev(NULL, n * 2);
    uint16_t *dgrad = (uint16_t *)tg_dev(NULL, (fused ? nin : 2 * n) * 2);
    uint16_t *ddg = dgrad, *ddu = fused ? dgrad + F : dgrad + n;
    CHECK(!swiglu_fwd_cuda(dout, dg, du, M, F, ld, NULL), "fwd");
    CHECK(!swiglu_bwd_cuda(ddg, ddu, dda, dg, du, M, F, ld, NULL), "bwd");
    CU(cudaDeviceSynchronize());
    float *a = malloc(n * 4), *wg = malloc(n * 4), *wu = malloc(n * 4), *a2 = malloc(n * 4);
    swiglu_fwd(a, g, u, n, NULL);
    swiglu_bwd(wg, wu, a2, da, g, u, n, NULL);
    float *ea = malloc(n * 4), *eg = malloc(n * 4), *eu = malloc(n * 4);
    for (size_t i = 0; i < n; i++) {
        ea[i] = 8 * F32_U * fabsf(g[i] * u[i]);
        eu[i] = 8 * F32_U * fabsf(da[i] * g[i]);
        eg[i] = 8 * F32_U * fabsf(da[i] * u[i]) * (1 + fabsf(g[i]));
    }
    float *got = tg_get_bf16(dout, n), *gall = tg_get_bf16(dgrad, fused ? nin : 2 * n);
    float *gg = malloc(n * 4), *gu2 = malloc(n * 4);
    for (int64_t r = 0; r < M; r++)
        for (int64_t c = 0; c < F; c++) {
            gg[r * F + c] = fused ? gall[r * ld + c] : gall[r * F + c];
            gu2[r * F + c] = fused ? gall[r * ld + F + c] : gall[n + r * F + c];
        }
    int ok = tg_close(fused ? "a (fused gate_up)" : "a", got, a, ea, n, 0, BF16_U);
    ok &= tg_close("dg", gg, wg, eg, n, 0, BF16_U);
    ok &= tg_close("du", gu2, wu, eu, n, 0, BF16_U);
    cudaFree(dgu), cudaFree(dda), cudaFree(dout), cudaFree(dgrad);
    free(gu), free(da), free(g), free(u), free(a), free(wg), free(wu), free(a2), free(ea), free(eg), free(eu);
    free(got), free(gall), free(gg), free(gu2);
    CHECK(ok, "outside tolerance");
}

static void swiglu_matches_cpu_separate_and_fused(void) {
    swiglu_case(67, 1000, 0);
    swiglu_case(31, 4864, 1);
}

GPU_TEST_MAIN(RUN(swiglu_matches_cpu_separate_and_fused);)

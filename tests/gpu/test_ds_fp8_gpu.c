/* tests/gpu/test_ds_fp8_gpu.c — the FP8 kernels (kernels/cuda/fp8_gemm.cu) against their CPU
 * twins (kernels/cpu/fp8.c, themselves checked against torch in tests/unit/test_fp8.c).
 * Needs a GPU: `make gpu-test`. Inputs are bf16 values (what the GPU reads) held as f32 on
 * the CPU side, so both sides see the same numbers.
 * Tolerances, and why:
 *   act_quant: exact (one IEEE division by the same scale and one RNE cast on both sides).
 *   swiglu_quant: silu uses expf, which may differ in the last bits between CUDA and glibc:
 *     scale within 1e-6 relative, each byte within one e4m3 code.
 *   block-scaled GEMM (own kernel and cuBLASLt), two kinds of data:
 *     exact: e4m3 values from {0, ±½, ±1, ±1½, ±2}, so every product is a multiple of ¼ and
 *       a 128-block sum has ≤ 11 significant bits: exact in any accumulator the tensor cores
 *       use; what remains is the promotion (one f32 rounding per block) and the bf16 output:
 *       |gpu − cpu| ≤ 2^-8·|cpu| + 2^-20·Σ|a·w|. A wrong block scale, row or group fails.
 *     random (all e4m3 codes, DeepSeek-quantized activations): Hopper's FP8 tensor cores
 *       accumulate with fewer bits than f32 (about 14 per DeepSeek-V3's report), each of the
 *       four k32 steps of a block losing ≤ 2^-13 of the running magnitude: ≤ 2^-11·Σ|a·w|
 *       per block, and the bf16 output: |gpu − cpu| ≤ 2^-8·|cpu| + 2^-9·Σ|a·w| (4× margin).
 *   bf16 GEMMs: bf16 products are exact in f32, f32 accumulation, one bf16 rounding:
 *     |gpu − ref| ≤ 2^-8·|ref| + 2^-14·Σ|x·w|. */
#include "tests/gpu/ds_gpu_test.h"
#include "core/threadpool.h"
#include "kernels/fp8.h"
#include "kernels/matmul.h"

static tp_pool *pool;

static void test_act_quant(int swiglu) {
    int64_t M = 37, K = swiglu ? 2048 : 7168, W = swiglu ? 2 * K : K, nb = K / 128;
    float *x = malloc((size_t)(M * W) * 4), *s = malloc((size_t)(M * nb) * 4), *gs = malloc((size_t)(M * nb) * 4);
    uint16_t *xb = malloc((size_t)(M * W) * 2);
    uint8_t *q = malloc((size_t)(M * K)), *gq = malloc((size_t)(M * K));
    for (int64_t m = 0; m < M; m++) {
        float mag = ldexpf(1.0f, (int)(rnd() % 24) - 12);
        for (int64_t j = 0; j < W; j++) { xb[m * W + j] = f32_to_bf16(rnd_normal() * mag * (swiglu ? 4 : 1)); x[m * W + j] = bf16_to_f32(xb[m * W + j]); }
    }
    for (int64_t j = 0; j < 128; j++) { x[3 * W + 128 + j] = 0.0f; xb[3 * W + 128 + j] = 0; }   /* an all-zero block */
    RT(swiglu ? fp8_swiglu_quant(x, M, K, q, s) : fp8_act_quant(x, M, K, q, s));
    uint16_t *dx = dev_copy(xb, (size_t)(M * W) * 2);
    uint8_t *dq = dev_poison((size_t)(M * K));
    float *ds = dev_poison((size_t)(M * nb) * 4);
    CHECK(dx && dq && ds, "cudaMalloc");
    for (int t = 0; t < 2; t++) {   /* scale_t = 0: [M, K/128]; 1: [K/128, M] */
        RT(swiglu ? fp8_swiglu_quant_cuda(dx, M, K, dq, ds, t, NULL) : fp8_act_quant_cuda(dx, M, K, dq, ds, t, NULL));
        CU(cudaDeviceSynchronize());
        CHECK(!dev_get(gq, dq, (size_t)(M * K)) && !dev_get(gs, ds, (size_t)(M * nb) * 4), "copy back");
        for (int64_t m = 0; m < M; m++)
            for (int64_t b = 0; b < nb; b++) {
                float g = gs[t ? b * M + m : m * nb + b], c = s[m * nb + b];
                if (swiglu) CHECK(fabsf(g - c) <= 1e-6f * c, "swiglu scale[%lld,%lld] gpu %.9g cpu %.9g", (long long)m, (long long)b, g, c);
                else CHECK(g == c, "scale[%lld,%lld] (scale_t %d) gpu %.9g cpu %.9g", (long long)m, (long long)b, t, g, c);
            }
        for (int64_t i = 0; i < M * K; i++) {
            int a = gq[i], b = q[i];
            if (!swiglu) CHECK(a == b, "q[%lld] gpu 0x%02x cpu 0x%02x", (long long)i, a, b);
            else CHECK(abs((a & 0x7f) - (b & 0x7f)) <= 1 && ((a & 0x80) == (b & 0x80) || (a & 0x7f) + (b & 0x7f) <= 1),
                       "swiglu q[%lld] gpu 0x%02x cpu 0x%02x", (long long)i, a, b);
        }
    }
    cudaFree(dx); cudaFree(dq); cudaFree(ds);
    free(x); free(s); free(gs); free(xb); free(q); free(gq);
    passed++;
}

/* Σ_k |a·w| dequantized, the scale of the accumulation error */
static double mag_of(const uint8_t *a, const float *as, const uint8_t *w, const float *ws, int64_t m, int64_t n, int64_t K,
                     int64_t nb) {
    double s = 0;
    for (int64_t k = 0; k < K; k++)
        s += fabs((double)fp8e4m3_to_f32(a[m * K + k]) * fp8e4m3_to_f32(w[n * K + k])) * as[m * nb + k / 128] *
             ws[(n / 128) * nb + k / 128];
    return s;
}

static double g_mag_tol = 0x1p-9;   /* 2^-20 for the exact data */
static int close_gemm(float g, float c, double mag) { return fabs((double)g - c) <= 0x1p-8 * fabs(c) + g_mag_tol * mag; }
/* e4m3 codes of 0, ±0.5, ±1, ±1.5, ±2 */
static uint8_t small_fp8(void) {
    static const uint8_t c[9] = {0x00, 0x30, 0x38, 0x3c, 0x40, 0xb0, 0xb8, 0xbc, 0xc0};
    return c[rnd() % 9];
}
/* the cheap part of the bound first; Σ|a·w| only when it is needed */
#define GEMM_OK(g, c, magexpr) (fabs((double)(g) - (c)) <= 0x1p-8 * fabs(c) || close_gemm((g), (c), (magexpr)))

static void test_grouped(int exact) {
    g_mag_tol = exact ? 0x1p-20 : 0x1p-9;
    enum { G = 8 };
    int64_t N = 320, K = 1024, nb = K / 128, nsb = 3;
    int64_t cnt[G] = {0, 1, 64, 65, 130, 0, 7, 33};    /* empty, partial and multi-tile groups */
    int64_t off[G + 1] = {0};
    for (int g = 0; g < G; g++) off[g + 1] = off[g] + cnt[g];
    int64_t rows = off[G], alloc = rows + 5;           /* 5 rows past the groups stay untouched */
    uint8_t *a = malloc((size_t)(alloc * K)), *w = malloc((size_t)(G * N * K));
    float *as = malloc((size_t)(alloc * nb) * 4), *ws = malloc((size_t)(G * nsb * nb) * 4);
    for (int64_t i = 0; i < alloc * K; i++) a[i] = exact ? small_fp8() : rnd_fp8();
    for (int64_t i = 0; i < G * N * K; i++) w[i] = exact ? small_fp8() : rnd_fp8();
    for (int64_t i = 0; i < alloc * nb; i++) as[i] = ldexpf(1.0f + rnd_unit(), -(int)(rnd() % 10));
    for (int64_t i = 0; i < G * nsb * nb; i++) ws[i] = 1e-4f + rnd_unit() * 1e-3f;
    float *ref = malloc((size_t)(alloc * N) * 4);
    RT(fp8_gemm_grouped(a, as, w, ws, off, G, N, K, ref, NULL, pool));
    int32_t off32[G + 1];
    for (int g = 0; g <= G; g++) off32[g] = (int32_t)off[g];
    uint8_t *da = dev_copy(a, (size_t)(alloc * K)), *dw = dev_copy(w, (size_t)(G * N * K));
    float *das = dev_copy(as, (size_t)(alloc * nb) * 4), *dws = dev_copy(ws, (size_t)(G * nsb * nb) * 4);
    int32_t *doff = dev_copy(off32, sizeof off32);
    uint16_t *dout = dev_poison((size_t)(alloc * N) * 2), *out = malloc((size_t)(alloc * N) * 2);
    CHECK(da && dw && das && dws && doff && dout, "cudaMalloc");
    RT(fp8_gemm_grouped_cuda(da, das, dw, dws, doff, G, rows, N, K, dout, NULL));
    CU(cudaDeviceSynchronize());
    CHECK(!dev_get(out, dout, (size_t)(alloc * N) * 2), "copy back");
    for (int g = 0; g < G; g++)
        for (int64_t r = off[g]; r < off[g + 1]; r++)
            for (int64_t n = 0; n < N; n++) {
                float gv = bf16_to_f32(out[r * N + n]), c = ref[r * N + n];
                CHECK(GEMM_OK(gv, c, mag_of(a, as, w + g * N * K, ws + g * nsb * nb, r, n, K, nb)),
                      "group %d row %lld col %lld: gpu %g cpu %g (mag %g)", g, (long long)r, (long long)n, gv, c,
                      mag_of(a, as, w + g * N * K, ws + g * nsb * nb, r, n, K, nb));
            }
    for (int64_t i = rows * N; i < alloc * N; i++) CHECK(out[i] == 0xffff, "row %lld past the groups was written", (long long)(i / N));
    cudaFree(da); cudaFree(dw); cudaFree(das); cudaFree(dws); cudaFree(doff); cudaFree(dout);
    free(a); free(w); free(as); free(ws); free(ref); free(out);
    passed++;
}

/* A real dense shape (R1's shared-expert down projection, 2048 → 7168 is N = 7168, K = 2048;
 * here the up direction N = 2048, K = 7168): own kernel as G = 1, and cuBLASLt block-scaled. */
static void test_dense(int exact) {
    g_mag_tol = exact ? 0x1p-20 : 0x1p-9;
    int64_t M = 128, N = 2048, K = 7168, nb = K / 128, nsb = N / 128;
    uint16_t *xb = malloc((size_t)(M * K) * 2);
    float *x = malloc((size_t)(M * K) * 4), *as = malloc((size_t)(M * nb) * 4), *ws = malloc((size_t)(nsb * nb) * 4);
    uint8_t *a = malloc((size_t)(M * K)), *w = malloc((size_t)(N * K));
    for (int64_t i = 0; i < M * K; i++) { xb[i] = f32_to_bf16(rnd_normal()); x[i] = bf16_to_f32(xb[i]); }
    for (int64_t i = 0; i < N * K; i++) w[i] = rnd_fp8();
    for (int64_t i = 0; i < nsb * nb; i++) ws[i] = 1e-4f + rnd_unit() * 1e-3f;
    RT(fp8_act_quant(x, M, K, a, as));
    if (exact)   /* keep the scales, replace the codes: the GPU gets the same bytes below */
        for (int64_t i = 0; i < M * K; i++) a[i] = small_fp8();
    if (exact)
        for (int64_t i = 0; i < N * K; i++) w[i] = small_fp8();
    float *ref = malloc((size_t)(M * N) * 4);
    RT(fp8_gemm(a, as, w, ws, M, N, K, ref, NULL, pool));
    uint16_t *dx = dev_copy(xb, (size_t)(M * K) * 2), *dout = dev_poison((size_t)(M * N) * 2), *out = malloc((size_t)(M * N) * 2);
    uint8_t *da = dev_poison((size_t)(M * K)), *dw = dev_copy(w, (size_t)(N * K));
    float *das = dev_poison((size_t)(M * nb) * 4), *dast = dev_poison((size_t)(M * nb) * 4), *dws = dev_copy(ws, (size_t)(nsb * nb) * 4);
    int32_t off[2] = {0, (int32_t)M}, *doff = dev_copy(off, sizeof off);
    CHECK(dx && dout && da && dw && das && dast && dws && doff, "cudaMalloc");
    if (exact) {   /* the GPU quantization is tested on its own; here its output is the CPU's */
        CU(cudaMemcpy(da, a, (size_t)(M * K), cudaMemcpyHostToDevice));
        CU(cudaMemcpy(das, as, (size_t)(M * nb) * 4, cudaMemcpyHostToDevice));
    } else {
        RT(fp8_act_quant_cuda(dx, M, K, da, das, 0, NULL));
    }
    RT(fp8_gemm_grouped_cuda(da, das, dw, dws, doff, 1, M, N, K, dout, NULL));
    CU(cudaDeviceSynchronize());
    CHECK(!dev_get(out, dout, (size_t)(M * N) * 2), "copy back");
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            float gv = bf16_to_f32(out[m * N + n]), c = ref[m * N + n];
            CHECK(GEMM_OK(gv, c, mag_of(a, as, w, ws, m, n, K, nb)), "own kernel [%lld,%lld]: gpu %g cpu %g", (long long)m, (long long)n, gv, c);
        }
    passed++;
    fp8_lt *lt = NULL;
    RT(fp8_gemm_lt_create(&lt));
    if (exact) {   /* transposed scales [K/128, M] */
        float *ast = malloc((size_t)(M * nb) * 4);
        for (int64_t m = 0; m < M; m++)
            for (int64_t k = 0; k < nb; k++) ast[k * M + m] = as[m * nb + k];
        CU(cudaMemcpy(dast, ast, (size_t)(M * nb) * 4, cudaMemcpyHostToDevice));
        free(ast);
    } else {
        RT(fp8_act_quant_cuda(dx, M, K, da, dast, 1, NULL));
    }
    CU(cudaMemset(dout, 0xff, (size_t)(M * N) * 2));
    int rc = fp8_gemm_lt(lt, da, dast, dw, dws, M, N, K, dout, NULL);
    if (rc == RT_EUNSUPPORTED) {
        fp8_gemm_lt_free(lt);
        SKIP("cuBLASLt block-scaled FP8: %s", rt_errmsg());
    }
    CHECK(rc == 0, "fp8_gemm_lt: %s", rt_errmsg());
    CU(cudaDeviceSynchronize());
    CHECK(!dev_get(out, dout, (size_t)(M * N) * 2), "copy back");
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            float gv = bf16_to_f32(out[m * N + n]), c = ref[m * N + n];
            CHECK(GEMM_OK(gv, c, mag_of(a, as, w, ws, m, n, K, nb)), "cuBLASLt [%lld,%lld]: gpu %g cpu %g", (long long)m, (long long)n, gv, c);
        }
    fp8_gemm_lt_free(lt);
    cudaFree(dx); cudaFree(dout); cudaFree(da); cudaFree(dw); cudaFree(das); cudaFree(dast); cudaFree(dws); cudaFree(doff);
    free(xb); free(x); free(as); free(ws); free(a); free(w); free(ref); free(out);
    passed++;
}

/* fp8_gemm_dense_cuda with split-K on o_proj's shape (N 7168, K 16384) at decode sizes: one
 * split, the planned number, and an uneven 5 (K blocks 26+26+26+26+24). */
static void test_dense_splitk(int exact) {
    g_mag_tol = exact ? 0x1p-20 : 0x1p-9;
    int64_t N = 7168, K = 16384, nb = K / 128, nsb = N / 128;
    for (int64_t M = 1; M <= 37; M += 36) {
        uint8_t *a = malloc((size_t)(M * K)), *w = malloc((size_t)(N * K));
        float *as = malloc((size_t)(M * nb) * 4), *ws = malloc((size_t)(nsb * nb) * 4), *ref = malloc((size_t)(M * N) * 4);
        uint16_t *out = malloc((size_t)(M * N) * 2);
        for (int64_t i = 0; i < M * K; i++) a[i] = exact ? small_fp8() : rnd_fp8();
        for (int64_t i = 0; i < N * K; i++) w[i] = exact ? small_fp8() : rnd_fp8();
        for (int64_t i = 0; i < M * nb; i++) as[i] = ldexpf(1.0f + rnd_unit(), -(int)(rnd() % 8));
        for (int64_t i = 0; i < nsb * nb; i++) ws[i] = 1e-4f + rnd_unit() * 1e-3f;
        RT(fp8_gemm(a, as, w, ws, M, N, K, ref, NULL, pool));
        int plan = fp8_gemm_splitk_plan(M, N, K), splits[3] = {1, plan, 5};
        size_t wsb = fp8_gemm_splitk_workspace_bytes(M, N, plan > 5 ? plan : 5);
        uint8_t *da = dev_copy(a, (size_t)(M * K)), *dw = dev_copy(w, (size_t)(N * K));
        float *das = dev_copy(as, (size_t)(M * nb) * 4), *dws = dev_copy(ws, (size_t)(nsb * nb) * 4);
        void *dwk = dev_poison(wsb);
        uint16_t *dout = dev_poison((size_t)(M * N) * 2);
        CHECK(da && dw && das && dws && dwk && dout, "cudaMalloc");
        for (int si = 0; si < 3; si++) {
            CU(cudaMemset(dout, 0xff, (size_t)(M * N) * 2));
            RT(fp8_gemm_dense_cuda(da, das, dw, dws, M, N, K, splits[si], dwk, wsb, dout, NULL));
            CU(cudaDeviceSynchronize());
            CHECK(!dev_get(out, dout, (size_t)(M * N) * 2), "copy back");
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < N; n++) {
                    float gv = bf16_to_f32(out[m * N + n]), c = ref[m * N + n];
                    CHECK(GEMM_OK(gv, c, mag_of(a, as, w, ws, m, n, K, nb)), "split-K %d, M %lld [%lld,%lld]: gpu %g cpu %g",
                          splits[si], (long long)M, (long long)m, (long long)n, gv, c);
                }
        }
        CHECK(fp8_gemm_dense_cuda(da, das, dw, dws, M, N, K, 4, dwk, 0, dout, NULL) == RT_EINVAL, "a short workspace is refused");
        cudaFree(da); cudaFree(dw); cudaFree(das); cudaFree(dws); cudaFree(dwk); cudaFree(dout);
        free(a); free(w); free(as); free(ws); free(ref); free(out);
    }
    passed++;
}

/* bf16 fallback, f32-out and batched (both weight layouts) against double sums. */
static void test_bf16(void) {
    int64_t M = 48, N = 136, K = 320, B = 3;
    uint16_t *x = malloc((size_t)(B * M * K) * 2), *w = malloc((size_t)(B * N * K) * 2), *out = malloc((size_t)(B * M * N) * 2);
    float *of = malloc((size_t)(M * N) * 4);
    for (int64_t i = 0; i < B * M * K; i++) x[i] = f32_to_bf16(rnd_normal());
    for (int64_t i = 0; i < B * N * K; i++) w[i] = f32_to_bf16(rnd_normal() * 0.1f);
    fp8_lt *lt = NULL;
    RT(fp8_gemm_lt_create(&lt));
    uint16_t *dx = dev_copy(x, (size_t)(B * M * K) * 2), *dw = dev_copy(w, (size_t)(B * N * K) * 2), *dout = dev_poison((size_t)(B * M * N) * 2);
    float *dof = dev_poison((size_t)(M * N) * 4);
    CHECK(dx && dw && dout && dof, "cudaMalloc");
    RT(bf16_gemm_cuda(lt, dx, dw, M, N, K, dout, NULL));
    RT(bf16_gemm_f32_cuda(lt, dx, dw, M, N, K, dof, NULL));
    CU(cudaDeviceSynchronize());
    CHECK(!dev_get(out, dout, (size_t)(M * N) * 2) && !dev_get(of, dof, (size_t)(M * N) * 4), "copy back");
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double r = 0, mag = 0;
            for (int64_t k = 0; k < K; k++) { double p = (double)bf16_to_f32(x[m * K + k]) * bf16_to_f32(w[n * K + k]); r += p; mag += fabs(p); }
            CHECK(fabs(bf16_to_f32(out[m * N + n]) - r) <= 0x1p-8 * fabs(r) + 0x1p-14 * mag, "bf16 [%lld,%lld] %g vs %g", (long long)m, (long long)n, bf16_to_f32(out[m * N + n]), r);
            CHECK(fabs(of[m * N + n] - r) <= 0x1p-14 * mag, "f32-out [%lld,%lld] %g vs %g", (long long)m, (long long)n, of[m * N + n], r);
        }
    for (int trans = 0; trans < 2; trans++) {   /* trans: W_b [N, K]; else W_b [K, N] (same buffer, reinterpreted) */
        CU(cudaMemset(dout, 0xff, (size_t)(B * M * N) * 2));
        RT(bf16_gemm_batched_cuda(lt, trans, dx, K, M * K, dw, trans ? K : N, N * K, dout, N, M * N, M, N, K, B, NULL));
        CU(cudaDeviceSynchronize());
        CHECK(!dev_get(out, dout, (size_t)(B * M * N) * 2), "copy back");
        for (int64_t b = 0; b < B; b++)
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < N; n++) {
                    double r = 0, mag = 0;
                    for (int64_t k = 0; k < K; k++) {
                        float wv = bf16_to_f32(w[b * N * K + (trans ? n * K + k : k * N + n)]);
                        double p = (double)bf16_to_f32(x[b * M * K + m * K + k]) * wv;
                        r += p; mag += fabs(p);
                    }
                    float g = bf16_to_f32(out[b * M * N + m * N + n]);
                    CHECK(fabs(g - r) <= 0x1p-8 * fabs(r) + 0x1p-14 * mag, "batched (trans %d) [%lld,%lld,%lld] %g vs %g", trans, (long long)b, (long long)m, (long long)n, g, r);
                }
    }
    fp8_gemm_lt_free(lt);
    cudaFree(dx); cudaFree(dw); cudaFree(dout); cudaFree(dof);
    free(x); free(w); free(out); free(of);
    passed++;
}

int main(void) {
    if (!ds_have_device()) return 0;
    if (tp_create(0, &pool)) { printf("FAIL thread pool: %s\n", rt_errmsg()); return 1; }
    test_act_quant(0);
    test_act_quant(1);
    test_grouped(1);
    test_grouped(0);
    test_dense(1);
    test_dense(0);
    test_dense_splitk(1);
    test_dense_splitk(0);
    test_bf16();
    tp_free(pool);
    return ds_finish();
}

/* kernels/gemm: every kernel mm_sgemm can run (OpenBLAS, and retort's AVX2+FMA kernel where
 * the CPU has it) agrees with a plain triple loop summed in double, for all four transpose
 * cases, shapes off every block edge (MR 6, NR 16, KC 256, MC 96, NC 256, the small-M path
 * up to 8 rows), row strides larger than the row, alpha, beta, and beta = 0 over a C full of
 * NaN (C must not be read). Tolerance per element: (K+2)·2⁻²³·(|alpha|·Σₖ|a·b| + |beta·c|),
 * twice the worst-case bound of an f32 sum of K products followed by the alpha and beta
 * steps (each product, add, FMA and scaling rounds once, by at most 2⁻²⁴), so any order of
 * summation passes and any wrong element fails. The linear layers are checked through the same reference under each
 * kernel, and RETORT_GEMM's parsing through mm_gemm_choose. oneDNN's sgemm (opened at run time) is
 * checked the same way where libdnnl is installed, on whatever code oneDNN picks for this CPU
 * (tests/ref/test_gemm_choice.py runs it under older ISAs too). */
#include <math.h>

#include "kernels/cpu/gemm_dnnl.h"
#include "kernels/matmul.h"
#include "student/rng.h"
#include "testutil.h"

static float *rand_buf(sr_rng *r, size_t n) {
    float *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (float)sr_normal(r);
    return v;
}

/* one case: returns the number of elements outside the tolerance */
/* off: A, B and C start that many floats past an allocation (off = 1: not 32-byte aligned) */
static int check_case_at(mm_gemm_kernel k, bool ta, bool tb, int M, int N, int K, float alpha, float beta, int pad,
                         int off, sr_rng *r) {
    int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    int arows = ta ? K : M, brows = tb ? N : K;
    float *Ab = rand_buf(r, (size_t)arows * lda + off), *Bb = rand_buf(r, (size_t)brows * ldb + off);
    float *Cb = rand_buf(r, (size_t)M * ldc + off), *C0 = malloc((size_t)M * ldc * sizeof *C0);
    float *A = Ab + off, *B = Bb + off, *C = Cb + off;
    if (beta == 0.0f)
        for (size_t i = 0; i < (size_t)M * ldc; i++) C[i] = NAN;
    memcpy(C0, C, (size_t)M * ldc * sizeof *C);
    mm_sgemm_with(k, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    int bad = 0;
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double s = 0, sa = 0;
            for (int p = 0; p < K; p++) {
                double a = ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                double b = tb ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                s += a * b;
                sa += fabs(a * b);
            }
            double c0 = beta == 0.0f ? 0.0 : (double)beta * C0[(size_t)i * ldc + j];
            double want = alpha * s + c0;
            double tol = ldexp((K + 2.0) * (fabs(alpha) * sa + fabs(c0)), -23) + 1e-30;
            double got = C[(size_t)i * ldc + j];
            if (!(fabs(got - want) <= tol)) {
                if (bad < 3)
                    cr_log_error("kernel %d ta=%d tb=%d M=%d N=%d K=%d: C[%d,%d] = %g, want %g (tol %g)", (int)k, ta, tb,
                                 M, N, K, i, j, got, want, tol);
                bad++;
            }
        }
        /* the padding past N in each row of C is never written */
        for (int j = N; j < ldc; j++) {
            float g = C[(size_t)i * ldc + j], w = C0[(size_t)i * ldc + j];
            if (!(g == w || (isnan(g) && isnan(w)))) bad++;
        }
    }
    free(Ab), free(Bb), free(Cb), free(C0);
    return bad;
}

static int check_case(mm_gemm_kernel k, bool ta, bool tb, int M, int N, int K, float alpha, float beta, int pad,
                      sr_rng *r) {
    return check_case_at(k, ta, tb, M, N, K, alpha, beta, pad, 0, r);
}

static void sweep(mm_gemm_kernel k) {
    static const int Ms[] = {1, 2, 5, 8, 9, 13, 97, 200};
    static const int Ns[] = {1, 3, 16, 17, 40, 257, 300};
    static const int Ks[] = {1, 7, 64, 255, 257, 600};
    sr_rng r;
    sr_seed(&r, 20);
    int cases = 0, failed = 0;
    for (int t = 0; t < 4; t++) {
        bool ta = t & 1, tb = t & 2;
        for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++)
            for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++)
                for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++) {
                    int M = Ms[mi], N = Ns[ni], K = Ks[ki];
                    if ((double)M * N * K > 4e6) continue;   /* the double reference is slow */
                    int v = cases++;
                    float alpha = v % 3 == 0 ? 1.0f : (v % 3 == 1 ? 0.5f : -1.25f);
                    float beta = v % 4 == 0 ? 0.0f : (v % 4 == 1 ? 1.0f : 0.75f);
                    int pad = v % 2 ? 3 : 0;
                    if (check_case(k, ta, tb, M, N, K, alpha, beta, pad, &r)) failed++;
                }
    }
    cr_expect_eq(failed, 0, "%d of %d shapes differ from the double reference", failed, cases);
}

Test(kernels_gemm, openblas_matches_double_reference) { sweep(MM_GEMM_BLAS); }

Test(kernels_gemm, avx2_matches_double_reference) {
    if (!cpu_avx2_fma()) cr_skip_test("skipped: this CPU has no AVX2+FMA");
    sweep(MM_GEMM_AVX2);
}

static void need_dnnl(void) {
    if (!mm_dnnl_available()) {
        char why[256];
        cr_skip_test("skipped: %s", mm_dnnl_describe(why, sizeof why));
    }
}

Test(kernels_gemm, onednn_matches_double_reference) {
    need_dnnl();
    sweep(MM_GEMM_DNNL);
}

/* decode products x·wᵀ of 1..9 rows (the streaming kernel's register tiles are up to 4 rows of x
 * by 3, 4, 6 or 8 rows of w, with a masked step for K mod 8): every row count, column counts
 * around each tile width, K on both sides of multiples of 8, and pointers off 32-byte alignment */
static void small_sweep(mm_gemm_kernel k) {
    static const int Ns[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 25, 70};
    static const int Ks[] = {1, 7, 8, 9, 15, 16, 17, 33, 771};
    sr_rng r;
    sr_seed(&r, 21);
    int cases = 0, failed = 0;
    for (int M = 1; M <= 9; M++)
        for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++)
            for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++) {
                int v = cases++;
                float alpha = v % 3 == 0 ? 1.0f : (v % 3 == 1 ? 0.5f : -1.25f);
                float beta = v % 4 == 0 ? 0.0f : (v % 4 == 1 ? 1.0f : 0.75f);
                if (check_case_at(k, false, true, M, Ns[ni], Ks[ki], alpha, beta, v % 2 ? 3 : 0, v % 3 ? 1 : 0, &r))
                    failed++;
            }
    cr_expect_eq(failed, 0, "%d of %d decode shapes differ from the double reference", failed, cases);
}

Test(kernels_gemm, avx2_decode_shapes_match_double_reference) {
    if (!cpu_avx2_fma()) cr_skip_test("skipped: this CPU has no AVX2+FMA");
    small_sweep(MM_GEMM_AVX2);
}

Test(kernels_gemm, openblas_decode_shapes_match_double_reference) { small_sweep(MM_GEMM_BLAS); }

Test(kernels_gemm, onednn_decode_shapes_match_double_reference) {
    need_dnnl();
    small_sweep(MM_GEMM_DNNL);
}

/* K = 0: C = beta·C (and 0 for beta = 0, even over NaN) */
Test(kernels_gemm, empty_product_scales_c) {
    float C[4] = {1, 2, NAN, 4};
    mm_sgemm(false, true, 1, 2, 0, 1.0f, NULL, 1, NULL, 1, 2.0f, C, 2);
    cr_expect(C[0] == 2 && C[1] == 4);
    mm_sgemm(false, true, 1, 2, 0, 1.0f, NULL, 1, NULL, 1, 0.0f, C + 2, 2);
    cr_expect(C[2] == 0 && C[3] == 0);
}

/* the linear layer (forward, both splits; input and weight gradients) under each kernel */
static void linear_case(const char *kernel) {
    setenv("RETORT_GEMM", kernel, 1);
    enum { M = 11, N = 70, K = 45 };
    sr_rng r;
    sr_seed(&r, 7);
    float *x = rand_buf(&r, M * K), *w = rand_buf(&r, N * K), *b = rand_buf(&r, N), *dy = rand_buf(&r, M * N);
    float *y = malloc(M * N * 4), *y2 = malloc(M * N * 4), *dx = malloc(M * K * 4), *dw = calloc(N * K, 4),
          *db = calloc(N, 4);
    tp_pool *pool;
    cr_assert_eq(tp_create(2, &pool), 0);
    mm_linear_fwd(y, x, w, b, M, N, K, pool);
    mm_linear_fwd_cols(y2, x, w, b, M, N, K, pool);
    mm_linear_bwd_x(dx, false, dy, w, M, N, K, pool);
    mm_linear_bwd_w(dw, db, dy, x, M, N, K, pool);
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = b[j];
            for (int p = 0; p < K; p++) s += (double)x[i * K + p] * w[j * K + p];
            worst = fmax(worst, fmax(fabs(y[i * N + j] - s), fabs(y2[i * N + j] - s)));
        }
    for (int i = 0; i < M; i++)
        for (int p = 0; p < K; p++) {
            double s = 0;
            for (int j = 0; j < N; j++) s += (double)dy[i * N + j] * w[j * K + p];
            worst = fmax(worst, fabs(dx[i * K + p] - s));
        }
    for (int j = 0; j < N; j++) {
        double sb = 0;
        for (int i = 0; i < M; i++) sb += dy[i * N + j];
        worst = fmax(worst, fabs(db[j] - sb));
        for (int p = 0; p < K; p++) {
            double s = 0;
            for (int i = 0; i < M; i++) s += (double)dy[i * N + j] * x[i * K + p];
            worst = fmax(worst, fabs(dw[j * K + p] - s));
        }
    }
    /* sums of ≤ 70 products of N(0,1) values: |error| ≤ 70·2⁻²³·Σ|ab| < 70·1.2e-7·70·9 ≈ 5e-3 worst
     * case; with these inputs the largest Σ|ab| is far smaller, so 1e-3 is safe and still catches
     * any wrong element (those are off by O(1)) */
    cr_expect_lt(worst, 1e-3, "RETORT_GEMM=%s: linear layer differs from the double reference by %g", kernel, worst);
    tp_free(pool);
    free(x), free(w), free(b), free(dy), free(y), free(y2), free(dx), free(dw), free(db);
    unsetenv("RETORT_GEMM");
}

Test(kernels_gemm, linear_layers_under_openblas) { linear_case("blas"); }

Test(kernels_gemm, linear_layers_under_avx2) {
    if (!cpu_avx2_fma()) cr_skip_test("skipped: this CPU has no AVX2+FMA");
    linear_case("avx2");
}

Test(kernels_gemm, linear_layers_under_onednn) {
    need_dnnl();
    linear_case("dnnl");
}

/* the automatic rule, case by case: the CPUs of the issue (Sapphire Rapids with OpenBLAS
 * 0.3.21's Prescott fallback), a Sapphire Rapids that OpenBLAS knows, Zen 4 (AVX-512) under a
 * Zen core, AVX2-only CPUs with a known and a fallback core (oneDNN's AVX2 sgemm is ahead of
 * retort's kernel there), a CPU without AVX2 */
Test(kernels_gemm, automatic_rule) {
    cr_expect_eq(mm_gemm_auto(true, true, "Prescott", true), MM_GEMM_DNNL);
    cr_expect_eq(mm_gemm_auto(true, true, "Prescott", false), MM_GEMM_AVX2);
    cr_expect_eq(mm_gemm_auto(true, true, "Haswell", true), MM_GEMM_DNNL);
    cr_expect_eq(mm_gemm_auto(true, true, "Haswell", false), MM_GEMM_BLAS);
    cr_expect_eq(mm_gemm_auto(true, true, "SapphireRapids", true), MM_GEMM_BLAS);
    cr_expect_eq(mm_gemm_auto(true, true, "SkylakeX", true), MM_GEMM_BLAS);
    cr_expect_eq(mm_gemm_auto(true, true, "Zen", true), MM_GEMM_DNNL);
    cr_expect_eq(mm_gemm_auto(true, false, "Zen", true), MM_GEMM_BLAS);
    cr_expect_eq(mm_gemm_auto(true, false, "Prescott", true), MM_GEMM_DNNL);
    cr_expect_eq(mm_gemm_auto(true, false, "Prescott", false), MM_GEMM_AVX2);
    cr_expect_eq(mm_gemm_auto(false, false, "Prescott", true), MM_GEMM_BLAS);
    cr_expect_eq(mm_gemm_auto(true, false, NULL, false), MM_GEMM_AVX2);
    cr_expect_eq(mm_gemm_auto(true, false, NULL, true), MM_GEMM_DNNL);
}

Test(kernels_gemm, retort_gemm_variable_is_checked) {
    mm_gemm_kernel k;
    setenv("RETORT_GEMM", "blas", 1);
    cr_expect_eq(mm_gemm_choose(&k), 0);
    cr_expect_eq(k, MM_GEMM_BLAS);
    setenv("RETORT_GEMM", "avx512", 1);
    cr_expect_eq(mm_gemm_choose(&k), RT_EINVAL);
    cr_expect(strstr(rt_errmsg(), "RETORT_GEMM=avx512"), "message: %s", rt_errmsg());
    cr_expect(strstr(rt_errmsg(), "expected auto, blas, avx2 or dnnl"), "message: %s", rt_errmsg());
    setenv("RETORT_GEMM", "avx2", 1);
    cr_expect_eq(mm_gemm_choose(&k), cpu_avx2_fma() ? 0 : RT_EINVAL);
    cr_expect_eq(k, cpu_avx2_fma() ? MM_GEMM_AVX2 : MM_GEMM_BLAS);
    char line[320];
    cr_expect(strstr(mm_gemm_describe(line, sizeof line), cpu_avx2_fma() ? "avx2" : "OpenBLAS"), "%s", line);
    setenv("RETORT_GEMM", "dnnl", 1);
    if (mm_dnnl_available()) {
        cr_expect_eq(mm_gemm_choose(&k), 0);
        cr_expect_eq(k, MM_GEMM_DNNL);
        cr_expect(strstr(mm_gemm_describe(line, sizeof line), "oneDNN"), "%s", line);
    } else {
        cr_expect_eq(mm_gemm_choose(&k), RT_EINVAL);
        cr_expect(strstr(rt_errmsg(), "RETORT_GEMM=dnnl: oneDNN not available"), "message: %s", rt_errmsg());
    }
    unsetenv("RETORT_GEMM");
    cr_expect_eq(mm_gemm_choose(&k), 0);
}

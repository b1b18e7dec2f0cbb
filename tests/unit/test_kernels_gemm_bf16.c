/* kernels/gemm_bf16 (kernels/matmul.h, "bf16 weights on the CPU"): the linear layer with w in
 * bf16 gives the same bits as mm_sgemm / mm_linear_fwd / mm_linear_fwd_cols on w widened to f32
 * wherever mm_sgemm runs one of retort's kernels (decode shapes on an AVX2 CPU, every shape under
 * RETORT_GEMM=avx2) — widening is exact, so the same FMAs in the same order must agree to the
 * bit. OpenBLAS (RETORT_GEMM=blas, and more than 8 rows under auto where OpenBLAS knows the CPU)
 * sums a column differently depending on which columns share its call (measured: sgemm and
 * sgemv of 0.3.21 on Zen), so the widened blocks of w give other roundings there: only the
 * double-precision bound is checked for those. The widened w
 * is made here by shifting each bf16 pattern left by 16 (IEEE-754: bf16 is the top half of an
 * f32), not by retort's converter. Shapes: M = 1..9, 16, 33 (the decode kernel up to 8 rows, the
 * widened panel beyond), N around the register tiles (3, 4, 6, 8) and the 16-row panels, odd K and
 * K off multiples of 8, K large enough that a panel holds fewer than 16 rows (9000) or one row in
 * chunks (140001), pointers off 32-byte alignment, with and without a bias, under every
 * RETORT_GEMM kernel; the pool splits at 1 and 2 threads. A double-precision triple loop checks
 * the values themselves: (K+2)·2⁻²³·Σ|x·w| per element, twice the worst-case bound of an f32 sum
 * of K products and a bias (each rounds once by at most 2⁻²⁴), so any order passes and a wrong
 * element fails. */
#include <math.h>

#include "kernels/matmul.h"
#include "student/rng.h"
#include "testutil.h"

static float widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* a bf16 pattern of a N(0,1) draw: its top 16 bits (truncation; any bf16 value will do) */
static uint16_t rand_bf16(sr_rng *r) {
    float f = (float)sr_normal(r);
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (uint16_t)(u >> 16);
}

static int same_bits(const float *a, const float *b, size_t n, size_t *at) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(a + i, b + i, sizeof *a)) {
            *at = i;
            return 0;
        }
    return 1;
}

/* one shape: mm_sgemm_bf16 against mm_sgemm on the widened w (bit for bit when exact) and
 * against double precision (tolerance); returns the number of failures */
static int check(int M, int N, int K, bool bias, int off, bool exact, sr_rng *r) {
    size_t nx = (size_t)M * K + off, nw = (size_t)N * K + off;
    float *xb = malloc(nx * sizeof(float)), *wf = malloc(((size_t)N * K + 1) * sizeof(float));
    uint16_t *wb = malloc(nw * sizeof(uint16_t));
    float *b = bias ? malloc((size_t)N * sizeof(float)) : NULL;
    float *y = malloc((size_t)M * N * sizeof(float)), *want = malloc((size_t)M * N * sizeof(float));
    for (size_t i = 0; i < nx; i++) xb[i] = (float)sr_normal(r);
    for (size_t i = 0; i < nw; i++) wb[i] = rand_bf16(r);
    for (int j = 0; b && j < N; j++) b[j] = (float)sr_normal(r);
    const float *x = xb + off;
    const uint16_t *w = wb + off;
    for (size_t i = 0; i < (size_t)N * K; i++) wf[i] = widen(w[i]);
    for (size_t i = 0; i < (size_t)M * N; i++) y[i] = NAN, want[i] = b ? b[i % N] : NAN;
    /* the f32 linear layers' call: the bias first, then beta = 1 */
    mm_sgemm(false, true, M, N, K, 1.0f, x, K, wf, K, b ? 1.0f : 0.0f, want, N);
    mm_sgemm_bf16(M, N, K, x, K, w, K, b, y, N);
    int bad = 0;
    size_t at = 0;
    if (exact && !same_bits(y, want, (size_t)M * N, &at)) {
        cr_log_error("M=%d N=%d K=%d bias=%d off=%d: y[%zu] = %a, mm_sgemm on the widened w %a", M, N, K, bias, off, at,
                     y[at], want[at]);
        bad++;
    }
    for (int i = 0; i < M && !bad; i++)
        for (int j = 0; j < N; j++) {
            double s = b ? b[j] : 0, sa = b ? fabs(b[j]) : 0;
            for (int p = 0; p < K; p++) {
                double t = (double)x[(size_t)i * K + p] * wf[(size_t)j * K + p];
                s += t, sa += fabs(t);
            }
            double tol = ldexp((K + 2.0) * sa, -23) + 1e-30;
            if (!(fabs(y[(size_t)i * N + j] - s) <= tol)) {
                cr_log_error("M=%d N=%d K=%d: y[%d,%d] = %g, double %g (tol %g)", M, N, K, i, j, y[(size_t)i * N + j],
                             s, tol);
                bad++;
                break;
            }
        }
    free(xb), free(wf), free(wb), free(b), free(y), free(want);
    return bad;
}

/* exact: which shapes must match mm_sgemm bit for bit (those where it runs retort's kernels) */
static void sweep(const char *kernel, bool (*exact)(int M)) {
    if (kernel) setenv("RETORT_GEMM", kernel, 1);
    static const int Ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 33};
    static const int Ns[] = {1, 3, 4, 5, 7, 8, 13, 17, 70};
    static const int Ks[] = {1, 7, 8, 9, 33, 257, 771};
    sr_rng r;
    sr_seed(&r, 41);
    int cases = 0, failed = 0;
    for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++)
        for (size_t ni = 0; ni < sizeof Ns / sizeof *Ns; ni++)
            for (size_t ki = 0; ki < sizeof Ks / sizeof *Ks; ki++) {
                int v = cases++;
                failed += check(Ms[mi], Ns[ni], Ks[ki], v % 2, v % 3 ? 1 : 0, exact(Ms[mi]), &r) ? 1 : 0;
            }
    /* panels of fewer than 16 rows (K 9000: 14 rows of 512 KiB) over several panels, and the
     * panel of 16·k rows (K 1000: 128 rows) with a last partial one */
    int big[][3] = {{9, 40, 9000}, {16, 300, 1000}, {33, 70, 1000}, {1, 40, 9000}, {8, 19, 9000}};
    for (size_t i = 0; i < sizeof big / sizeof *big; i++, cases++)
        failed += check(big[i][0], big[i][1], big[i][2], i % 2, 1, exact(big[i][0]), &r) ? 1 : 0;
    cr_expect_eq(failed, 0, "RETORT_GEMM=%s: %d of %d shapes differ", kernel ? kernel : "(unset)", failed, cases);
    unsetenv("RETORT_GEMM");
}

static bool always(int M) { return (void)M, true; }
static bool never(int M) { return (void)M, false; }
static bool decode_on_avx2(int M) { return M <= MM_SMALL_M && cpu_avx2_fma(); }
/* auto on a CPU whose OpenBLAS core is AVX2-class: retort's kernel for decode shapes only (a CPU
 * where auto picks retort's packed kernel for everything passes this too) */
Test(kernels_gemm_bf16, auto_decode_same_bits_rest_within_f32_rounding) { sweep(NULL, decode_on_avx2); }
Test(kernels_gemm_bf16, openblas_within_f32_rounding) { sweep("blas", never); }
Test(kernels_gemm_bf16, avx2_same_bits_as_f32_gemm_every_shape) {
    if (!cpu_avx2_fma()) cr_skip_test("skipped: this CPU has no AVX2+FMA");
    sweep("avx2", always);
}

/* K beyond the 128 Ki-float panel: summed in chunks, so only the double-precision bound holds
 * (check() reports a bit difference as a failure: count those apart) */
Test(kernels_gemm_bf16, k_beyond_the_panel_is_within_f32_rounding) {
    enum { M = 9, N = 3, K = 140001 };
    sr_rng r;
    sr_seed(&r, 43);
    float *x = malloc((size_t)M * K * sizeof(float)), *y = malloc(M * N * sizeof(float));
    uint16_t *w = malloc((size_t)N * K * sizeof(uint16_t));
    float b[N] = {0.5f, -1.0f, 2.0f};
    for (size_t i = 0; i < (size_t)M * K; i++) x[i] = (float)sr_normal(&r);
    for (size_t i = 0; i < (size_t)N * K; i++) w[i] = rand_bf16(&r);
    mm_sgemm_bf16(M, N, K, x, K, w, K, b, y, N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = b[j], sa = fabs(b[j]);
            for (int p = 0; p < K; p++) {
                double t = (double)x[(size_t)i * K + p] * widen(w[(size_t)j * K + p]);
                s += t, sa += fabs(t);
            }
            cr_expect(fabs(y[i * N + j] - s) <= ldexp((K + 2.0) * sa, -23), "y[%d,%d] = %g, double %g", i, j,
                      y[i * N + j], s);
        }
    free(x), free(y), free(w);
}

/* the pool splits: mm_linear_fwd_bf16 / _cols_bf16 against mm_linear_fwd / _cols on the
 * widened w, same pool size, bit for bit under RETORT_GEMM=avx2 (and for decode shapes under
 * auto) */
static void pools(int threads, const char *kernel) {
    if (!cpu_avx2_fma()) cr_skip_test("skipped: this CPU has no AVX2+FMA");
    if (kernel) setenv("RETORT_GEMM", kernel, 1);
    static const int Ms[] = {1, 2, 3, 5, 8, 9, 16, 33};
    enum { N = 200, K = 777 };
    sr_rng r;
    sr_seed(&r, 44 + threads);
    tp_pool *pool;
    cr_assert_eq(tp_create(threads, &pool), 0);
    float *x = malloc(33 * K * sizeof(float)), *wf = malloc(N * K * sizeof(float)), *b = malloc(N * sizeof(float));
    uint16_t *w = malloc(N * K * sizeof(uint16_t));
    float *y = malloc(33 * N * sizeof(float)), *want = malloc(33 * N * sizeof(float));
    for (int i = 0; i < 33 * K; i++) x[i] = (float)sr_normal(&r);
    for (int i = 0; i < N * K; i++) wf[i] = widen(w[i] = rand_bf16(&r));
    for (int j = 0; j < N; j++) b[j] = (float)sr_normal(&r);
    for (size_t mi = 0; mi < sizeof Ms / sizeof *Ms; mi++)
        for (int v = 0; v < 4; v++) {
            int M = Ms[mi];
            if (!kernel && M > MM_SMALL_M) continue;
            const float *bb = v & 1 ? b : NULL;
            for (int i = 0; i < M * N; i++) y[i] = NAN, want[i] = NAN;
            if (v & 2) {
                mm_linear_fwd_cols(want, x, wf, bb, M, N, K, pool);
                mm_linear_fwd_cols_bf16(y, x, w, bb, M, N, K, pool);
            } else {
                mm_linear_fwd(want, x, wf, bb, M, N, K, pool);
                mm_linear_fwd_bf16(y, x, w, bb, M, N, K, pool);
            }
            size_t at = 0;
            cr_expect(same_bits(y, want, (size_t)M * N, &at), "%d threads, M=%d %s%s: y[%zu] = %a, f32 %a", threads,
                      M, v & 2 ? "cols" : "rows", bb ? " +bias" : "", at, y[at], want[at]);
        }
    tp_free(pool);
    free(x), free(wf), free(b), free(w), free(y), free(want);
    unsetenv("RETORT_GEMM");
}

Test(kernels_gemm_bf16, pool_of_1_same_bits_as_f32_linear_avx2) { pools(1, "avx2"); }
Test(kernels_gemm_bf16, pool_of_2_same_bits_as_f32_linear_avx2) { pools(2, "avx2"); }
Test(kernels_gemm_bf16, pool_of_2_decode_same_bits_as_f32_linear_auto) { pools(2, NULL); }

Test(kernels_gemm_bf16, empty_k_gives_the_bias) {
    float b[2] = {1.5f, -2.0f}, y[4] = {NAN, NAN, NAN, NAN};
    mm_sgemm_bf16(2, 2, 0, NULL, 0, NULL, 0, b, y, 2);
    cr_expect(y[0] == 1.5f && y[1] == -2.0f && y[2] == 1.5f && y[3] == -2.0f);
    mm_sgemm_bf16(1, 2, 0, NULL, 0, NULL, 0, NULL, y, 2);
    cr_expect(y[0] == 0 && y[1] == 0);
}

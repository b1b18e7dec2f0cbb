/* The CPU-side pieces the GPU path relies on:
 *  - embed_bwd_plan (kernels/cpu/embed.c): the grouping of a batch's tokens by id that makes
 *    the CUDA embedding backward deterministic — a hand-worked case, and the defining
 *    properties (a stable permutation, segments of equal ids, ascending) on random batches;
 *  - the plain-C CBLAS stand-in of the GPU-only build (kernels/cpu/noblas/cblas.c, compiled
 *    here under other names so it cannot collide with OpenBLAS): sgemm in both orders and all
 *    transposes with alpha/beta, and sgemv, against a double-precision loop written here.
 *    Tolerance: (K + 2)·2^-24·Σ|terms| per element, the f32 summation bound;
 *  - rmsnorm_residual_fwd (kernels/cpu/norm.c), the CPU twin of the CUDA fused residual norm,
 *    in place and out of place, against the formula in double written here: sum exact (one f32
 *    addition on both sides), y and rstd within 8·2^-24 relative (f32 products and rounding). */
#include <math.h>

#include "kernels/embed.h"
#include "kernels/norm.h"
#include "testutil.h"

#define cblas_sgemm noblas_sgemm
#define cblas_sgemv noblas_sgemv
#define openblas_set_num_threads noblas_set_num_threads
#include "kernels/cpu/noblas/cblas.c"

Test(kernels_gpu_support, embed_plan_worked_example) {
    int32_t ids[] = {5, 2, 5, 0, 2, 5}, order[6], seg[7];
    int64_t n = embed_bwd_plan(ids, 6, order, seg);
    cr_assert_eq(n, 3);
    int32_t want_order[] = {3, 1, 4, 0, 2, 5}, want_seg[] = {0, 1, 3, 6};
    for (int i = 0; i < 6; i++) cr_expect_eq(order[i], want_order[i], "order[%d] = %d", i, order[i]);
    for (int i = 0; i < 4; i++) cr_expect_eq(seg[i], want_seg[i], "seg[%d] = %d", i, seg[i]);
}

Test(kernels_gpu_support, embed_plan_groups_stably) {
    unsigned long long s = 0x1234567ull;
    for (int round = 0; round < 20; round++) {
        int64_t M = 1 + round * 97, V = 1 + round * 13;
        int32_t *ids = malloc((size_t)M * 4), *order = malloc((size_t)M * 4), *seg = malloc((size_t)(M + 1) * 4);
        char *seen = calloc((size_t)M, 1);
        for (int64_t i = 0; i < M; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            ids[i] = (int32_t)(s % (unsigned long long)V);
        }
        int64_t n = embed_bwd_plan(ids, M, order, seg);
        cr_assert(n >= 1 && n <= M);
        cr_assert_eq(seg[0], 0);
        cr_assert_eq(seg[n], M);
        for (int64_t k = 0; k < n; k++) {
            cr_assert_lt(seg[k], seg[k + 1], "empty segment %lld", (long long)k);
            for (int32_t j = seg[k]; j < seg[k + 1]; j++) {
                int32_t t = order[j];
                cr_assert(t >= 0 && t < M && !seen[t], "order is not a permutation");
                seen[t] = 1;
                cr_assert_eq(ids[t], ids[order[seg[k]]], "mixed ids in a segment");
                if (j > seg[k]) cr_assert_lt(order[j - 1], t, "not in token order within an id");
            }
            if (k) cr_assert_lt(ids[order[seg[k - 1]]], ids[order[seg[k]]], "ids not ascending");
        }
        free(ids), free(order), free(seg), free(seen);
    }
}

static float frand(unsigned long long *s) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return (float)((*s >> 11) % 2000001) / 1e6f - 1.0f;
}

Test(kernels_gpu_support, noblas_sgemm_matches_double_loop) {
    unsigned long long s = 99;
    int M = 13, N = 11, K = 17;
    for (int order = 0; order < 2; order++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int rm = order == 0;
                /* stored shapes: op(A) is M×K, op(B) is K×N, C is M×N, leading dims padded by 3 */
                int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
                int lda = (rm ? ac : ar) + 3, ldb = (rm ? bc : br) + 3, ldc = (rm ? N : M) + 3;
                float A[40 * 40], B[40 * 40], C[40 * 40], C0[40 * 40];
                for (int i = 0; i < 1600; i++) A[i] = frand(&s), B[i] = frand(&s), C0[i] = C[i] = frand(&s);
#define AT(i, p) (rm ? A[(ta ? (p) * lda + (i) : (i) * lda + (p))] : A[(ta ? (i) * lda + (p) : (p) * lda + (i))])
#define BT(p, j) (rm ? B[(tb ? (j) * ldb + (p) : (p) * ldb + (j))] : B[(tb ? (p) * ldb + (j) : (j) * ldb + (p))])
#define CI(i, j) (rm ? (i) * ldc + (j) : (j) * ldc + (i))
                cblas_sgemm(rm ? CblasRowMajor : CblasColMajor, ta ? CblasTrans : CblasNoTrans,
                            tb ? CblasTrans : CblasNoTrans, M, N, K, 0.7f, A, lda, B, ldb, -0.3f, C, ldc);
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        double acc = 0, mag = 0;
                        for (int p = 0; p < K; p++) acc += (double)AT(i, p) * BT(p, j), mag += fabs((double)AT(i, p) * BT(p, j));
                        double want = 0.7 * acc - 0.3 * C0[CI(i, j)];
                        double tol = (K + 2) * 5.96e-8 * (0.7 * mag + 0.3 * fabs(C0[CI(i, j)]));
                        cr_assert_leq(fabs(C[CI(i, j)] - want), tol, "order %d ta %d tb %d [%d,%d]: %g vs %g", order,
                                      ta, tb, i, j, C[CI(i, j)], want);
                    }
#undef AT
#undef BT
#undef CI
            }
}

Test(kernels_gpu_support, noblas_sgemv_matches_double_loop) {
    unsigned long long s = 7;
    int M = 9, N = 14, lda = 20;
    float A[20 * 20], x[40], y[40], y0[40];
    for (int i = 0; i < 400; i++) A[i] = frand(&s);
    for (int i = 0; i < 40; i++) x[i] = frand(&s), y0[i] = frand(&s);
    for (int order = 0; order < 2; order++)
        for (int ta = 0; ta < 2; ta++) {
            int rm = order == 0, ny = ta ? N : M, nx = ta ? M : N;
            memcpy(y, y0, sizeof y);
            cblas_sgemv(rm ? CblasRowMajor : CblasColMajor, ta ? CblasTrans : CblasNoTrans, M, N, 1.5f, A, lda, x, 2,
                        0.5f, y, 1);
            for (int i = 0; i < ny; i++) {
                double acc = 0, mag = 0;
                for (int p = 0; p < nx; p++) {
                    int r = ta ? p : i, c = ta ? i : p;   /* element (r, c) of the M×N matrix */
                    double a = rm ? A[r * lda + c] : A[c * lda + r];
                    acc += a * x[2 * p], mag += fabs(a * x[2 * p]);
                }
                double want = 1.5 * acc + 0.5 * y0[i];
                cr_assert_leq(fabs(y[i] - want), (nx + 2) * 5.96e-8 * (1.5 * mag + 0.5 * fabs(y0[i])) + 1e-7,
                              "order %d ta %d [%d]", order, ta, i);
            }
        }
}

Test(kernels_gpu_support, rmsnorm_residual_fwd_matches_formula) {
    unsigned long long s = 4242;
    int64_t M = 9, D = 200;
    float *x = malloc((size_t)(M * D) * 4), *add = malloc((size_t)(M * D) * 4), *w = malloc((size_t)D * 4);
    float *sum = malloc((size_t)(M * D) * 4), *y = malloc((size_t)(M * D) * 4), *rstd = malloc((size_t)M * 4);
    float *x2 = malloc((size_t)(M * D) * 4), *y2 = malloc((size_t)(M * D) * 4), *rstd2 = malloc((size_t)M * 4);
    for (int64_t i = 0; i < M * D; i++) x[i] = 3 * frand(&s), add[i] = frand(&s);
    for (int64_t j = 0; j < D; j++) w[j] = 1 + frand(&s) / 2;
    memcpy(x2, x, (size_t)(M * D) * 4);
    rmsnorm_residual_fwd(y, rstd, sum, x, add, w, M, D, 1e-6f, NULL);
    rmsnorm_residual_fwd(y2, rstd2, x2, x2, add, w, M, D, 1e-6f, NULL);   /* in place */
    for (int64_t i = 0; i < M; i++) {
        double ss = 0;
        for (int64_t j = 0; j < D; j++) {
            float e = x[i * D + j] + add[i * D + j];
            cr_assert_eq(sum[i * D + j], e);
            cr_assert_eq(x2[i * D + j], e, "in place");
            ss += (double)e * e;
        }
        double r = 1.0 / sqrt(ss / D + 1e-6);
        cr_assert_leq(fabs(rstd[i] - r), 8 * 5.96e-8 * r, "rstd row %lld", (long long)i);
        cr_assert_eq(rstd2[i], rstd[i]);
        for (int64_t j = 0; j < D; j++) {
            double want = w[j] * (double)sum[i * D + j] * r;
            cr_assert_leq(fabs(y[i * D + j] - want), 8 * 5.96e-8 * fabs(want) + 1e-30, "y[%lld,%lld]", (long long)i,
                          (long long)j);
            cr_assert_eq(y2[i * D + j], y[i * D + j]);
        }
    }
    free(x), free(add), free(w), free(sum), free(y), free(rstd), free(x2), free(y2), free(rstd2);
}

/* kernels/cpu/noblas/cblas.c — plain-C sgemm/sgemv for the GPU-only build (see cblas.h). */
#include "cblas.h"

#include <stddef.h>

void openblas_set_num_threads(int n) { (void)n; }

/* Row-major C[M,N] = alpha·op(A)·op(B) + beta·C. The inner loops run over contiguous memory
 * (C's row for B untransposed, a dot product of two rows for B transposed) so they vectorize. */
static void gemm_rm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                    float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        for (int j = 0; j < N; j++) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
        if (!tb) {
            for (int p = 0; p < K; p++) {
                float a = alpha * (ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p]);
                const float *b = B + (size_t)p * ldb;
                for (int j = 0; j < N; j++) c[j] += a * b[j];
            }
        } else {
            for (int j = 0; j < N; j++) {
                const float *b = B + (size_t)j * ldb;
                float s = 0.0f;
                if (!ta) {
                    const float *a = A + (size_t)i * lda;
                    for (int p = 0; p < K; p++) s += a[p] * b[p];
                } else {
                    for (int p = 0; p < K; p++) s += A[(size_t)p * lda + i] * b[p];
                }
                c[j] += alpha * s;
            }
        }
    }
}

void cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    int a_t = ta != CblasNoTrans, b_t = tb != CblasNoTrans;
    if (order == CblasRowMajor) gemm_rm(a_t, b_t, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else gemm_rm(b_t, a_t, N, M, K, alpha, B, ldb, A, lda, beta, C, ldc);   /* Cᵀ = op(B)ᵀ·op(A)ᵀ */
}

void cblas_sgemv(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, int M, int N, float alpha, const float *A, int lda,
                 const float *x, int incx, float beta, float *y, int incy) {
    /* y = alpha·op(A)·x + beta·y with A M×N in the given order */
    int rows_contig = (order == CblasRowMajor) == (ta == CblasNoTrans);
    int ny = ta == CblasNoTrans ? M : N, nx = ta == CblasNoTrans ? N : M;
    for (int i = 0; i < ny; i++) {
        float s = 0.0f;
        for (int p = 0; p < nx; p++) {
            float a = rows_contig ? A[(size_t)i * lda + p] : A[(size_t)p * lda + i];
            s += a * x[(size_t)p * incx];
        }
        float *yi = y + (size_t)i * incy;
        *yi = alpha * s + (beta == 0.0f ? 0.0f : beta * *yi);
    }
}

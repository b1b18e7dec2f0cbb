/* kernels/cpu/noblas/cblas.h — a plain-C stand-in for the few CBLAS calls the CPU twins make
 * (cblas_sgemm, cblas_sgemv, openblas_set_num_threads), for the GPU-only build (`make
 * gpu-test-build`), which runs on a machine without OpenBLAS. That build puts this folder
 * first on the include path and defines RT_NO_BLAS; the normal build never sees it.
 * Same arguments and results as CBLAS (row- and column-major), single-threaded, no errors.
 * Much slower than OpenBLAS: meant for the GPU tests' CPU references only. */
#ifndef RT_NOBLAS_CBLAS_H
#define RT_NOBLAS_CBLAS_H

#ifdef __cplusplus
extern "C" {
#endif

enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 };
enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 };
typedef enum CBLAS_ORDER CBLAS_ORDER;
typedef enum CBLAS_TRANSPOSE CBLAS_TRANSPOSE;

void cblas_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);
void cblas_sgemv(CBLAS_ORDER order, CBLAS_TRANSPOSE ta, int M, int N, float alpha, const float *A, int lda,
                 const float *x, int incx, float beta, float *y, int incy);
void openblas_set_num_threads(int n);

#ifdef __cplusplus
}
#endif

#endif

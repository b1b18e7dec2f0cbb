/* kernels/matmul.h — the GEMM family: the linear layers y = x·wᵀ + b and their gradients (CPU
 * and CUDA), the general single-threaded mm_sgemm, the forward with bf16 weights on the CPU, and
 * the teacher's bf16 GEMMs (CUDA).
 *
 * Shapes (row-major, f32): x [M, K] (M tokens), w [N, K] (HF's nn.Linear layout), b [N]
 * or NULL, y [M, N]. The CPU path splits rows (forward, input gradient) or output features
 * (weight gradient) over the pool and calls the single-threaded mm_sgemm on each part, so
 * the pool is the only source of parallelism: call mm_blas_single_thread() once before
 * using these (it sets OpenBLAS's own thread count to 1, a process-wide setting; the
 * environment variable OPENBLAS_NUM_THREADS=1 does the same). Each part of the split does
 * the same arithmetic in the same order for a given pool size and kernel, so results are
 * deterministic run to run. No allocation, no errors.
 *
 * mm_sgemm picks its kernel at run time (kernels/cpu/gemm.c, the rule in mm_gemm_auto):
 * oneDNN's sgemm (opened at first use, kernels/cpu/gemm_dnnl.h) on an AVX-512 CPU whose
 * OpenBLAS core has no AVX-512 kernels (OpenBLAS 0.3.21 runs Sapphire Rapids on SSE3 ones);
 * else retort's AVX2+FMA kernel when the CPU has AVX2 and FMA but OpenBLAS's core is older;
 * else OpenBLAS. Decode products x·wᵀ of at most MM_SMALL_M rows take retort's streaming
 * AVX2 kernel on any AVX2 CPU. RETORT_GEMM=blas|avx2|dnnl|auto forces one kernel for every
 * shape (tests run each).
 */
#ifndef RT_KERNELS_MATMUL_H
#define RT_KERNELS_MATMUL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

void mm_blas_single_thread(void);

/* Single-threaded row-major C[M,N] = alpha·op(A)·op(B) + beta·C, op(A) [M,K] stored [M,K]
 * (ta: [K,M]) with row stride lda, op(B) [K,N] stored [K,N] (tb: [N,K]) with row stride
 * ldb; beta == 0 does not read C. Uses up to ~360 KiB of stack, no heap, no errors. */
void mm_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

typedef enum { MM_GEMM_BLAS, MM_GEMM_AVX2, MM_GEMM_DNNL } mm_gemm_kernel;
/* The automatic choice from the facts it depends on: the CPU has AVX2+FMA, the CPU has
 * AVX-512 (F, BW, DQ, VL), OpenBLAS's core name (openblas_get_corename), oneDNN loads. */
mm_gemm_kernel mm_gemm_auto(bool avx2, bool avx512, const char *blas_core, bool dnnl);
/* The kernel mm_sgemm uses on this CPU under the current RETORT_GEMM. A value other than
 * auto/blas/avx2/dnnl, avx2 on a CPU without AVX2+FMA, or dnnl where oneDNN cannot be loaded
 * is RT_EINVAL (*out still gets what mm_sgemm will use: the automatic choice, or OpenBLAS). */
int mm_gemm_choose(mm_gemm_kernel *out);
/* One line naming the kernel in use and why, into buf (returned). */
const char *mm_gemm_describe(char *buf, size_t n);
/* mm_sgemm with the kernel given (MM_GEMM_AVX2 on a CPU without it, or MM_GEMM_DNNL without
 * oneDNN, runs OpenBLAS). */
void mm_sgemm_with(mm_gemm_kernel k, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                   int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* Whether mm_sgemm sends x·wᵀ of at most MM_SMALL_M rows to retort's streaming AVX2 kernel
 * under the current RETORT_GEMM (an AVX2 CPU, and no other kernel forced). */
bool mm_gemm_decode_streams(void);
/* Rows up to which an x·wᵀ product streams w without packing (decode batches). */
#define MM_SMALL_M 8

/* y[M,N] = x[M,K] · w[N,K]ᵀ (+ b[N] on every row when b != NULL). */
void mm_linear_fwd(float *y, const float *x, const float *w, const float *b, int64_t M, int64_t N, int64_t K,
                   tp_pool *pool);

/* The same product for few rows (inference decode: M = the sequences of a batch): the output
 * features are split over the pool in blocks of MM_COL_BLOCK, each block one single-threaded
 * sgemm over all M rows, so every thread reads its own slice of w. Same contract otherwise. */
#define MM_COL_BLOCK 64
void mm_linear_fwd_cols(float *y, const float *x, const float *w, const float *b, int64_t M, int64_t N, int64_t K,
                        tp_pool *pool);

/* dx[M,K] = dy[M,N] · w[N,K]   (accumulate_dx: dx += instead of =); skipped when dx == NULL. */
void mm_linear_bwd_x(float *dx, bool accumulate_dx, const float *dy, const float *w, int64_t M, int64_t N, int64_t K,
                     tp_pool *pool);
/* dw[N,K] += dy[M,N]ᵀ · x[M,K]; db[N] += Σ_m dy[m,:] when db != NULL. */
void mm_linear_bwd_w(float *dw, float *db, const float *dy, const float *x, int64_t M, int64_t N, int64_t K,
                     tp_pool *pool);

/* ---- bf16 weights on the CPU (kernels/cpu/gemm_bf16.c) ----
 * The forward linear layer with w held as bf16 (uint16_t bit patterns, [N, K]) and x, b, y in
 * f32; widening bf16 to f32 is exact. Decode shapes (M ≤ MM_SMALL_M) on an AVX2 CPU (unless
 * RETORT_GEMM=blas) stream w through retort's AVX2 kernel, widening in registers and reading half
 * the bytes; other shapes widen blocks of w's rows into a 512 KiB stack panel and run mm_sgemm
 * on each block. The result has the same bits as mm_sgemm / mm_linear_fwd / mm_linear_fwd_cols
 * on the widened w (same pool, same RETORT_GEMM) wherever mm_sgemm runs retort's kernels (decode
 * shapes on AVX2; every shape under RETORT_GEMM=avx2), whose sums do not depend on which columns
 * share a call. OpenBLAS's do (0.3.21 on Zen: sgemm and sgemv), so where mm_sgemm runs OpenBLAS
 * (prefill under auto on a CPU it knows; RETORT_GEMM=blas) the blocks round differently, within
 * f32 summation-order error; so does K > 131072 (summed in chunks). Up to ~0.9 MiB of stack
 * (with mm_sgemm's), no heap allocation, no errors. */
/* y[M,N] (row stride ldy) = x[M,K] (ldx) · w[N,K] (ldw)ᵀ (+ b[N] on every row when b != NULL),
 * single-threaded; y need not be initialized. */
void mm_sgemm_bf16(int64_t M, int64_t N, int64_t K, const float *x, int64_t ldx, const uint16_t *w, int64_t ldw,
                   const float *b, float *y, int64_t ldy);
/* Whether this CPU runs the decode kernel above (AVX2+FMA): elsewhere bf16 w is only a memory
 * saving, widened block by block for every product. */
bool mm_bf16_streams(void);
/* mm_linear_fwd and mm_linear_fwd_cols with w in bf16: the same splits over the pool. */
void mm_linear_fwd_bf16(float *y, const float *x, const uint16_t *w, const float *b, int64_t M, int64_t N, int64_t K,
                        tp_pool *pool);
void mm_linear_fwd_cols_bf16(float *y, const float *x, const uint16_t *w, const float *b, int64_t M, int64_t N,
                             int64_t K, tp_pool *pool);

/* ---- CUDA twins (kernels/cuda/matmul.cu; contract also in docs/kernels.md) ----
 * Device pointers; bf16 tensors are uint16_t bit patterns (round to nearest even), math in
 * f32. Asynchronous on `stream` (a cudaStream_t; NULL = the default stream). Return 0, or
 * RT_EINTERNAL with the failing CUDA/cuBLAS call in the message (RT_EINVAL for a shape the
 * kernel does not handle). No host synchronization, no allocation unless said. */
#ifdef RT_HAVE_CUDA
/* cuBLASLt handle + device workspace, owned by the caller (one per stream/thread).
 * mm_cuda_ctx_create allocates workspace_bytes of device memory (0: 32 MiB).
 * Errors: RT_EINTERNAL, RT_ENOMEM. mm_cuda_ctx_free(NULL) is fine. */
typedef struct mm_cuda_ctx mm_cuda_ctx;
int mm_cuda_ctx_create(mm_cuda_ctx **out, size_t workspace_bytes);
void mm_cuda_ctx_free(mm_cuda_ctx *c);

/* y[M,N] = x[M,K] · w[N,K]ᵀ (+ b[N]): bf16 in/out, f32 accumulation; the bias is added in
 * the GEMM epilogue (b == NULL: none). */
int mm_linear_fwd_cuda(mm_cuda_ctx *c, uint16_t *y, const uint16_t *x, const uint16_t *w, const uint16_t *b,
                       int64_t M, int64_t N, int64_t K, void *stream);
/* dx[M,K] = dy[M,N] · w[N,K] (accumulate_dx: dx += , folded into the GEMM as beta = 1), bf16. */
int mm_linear_bwd_x_cuda(mm_cuda_ctx *c, uint16_t *dx, bool accumulate_dx, const uint16_t *dy, const uint16_t *w,
                         int64_t M, int64_t N, int64_t K, void *stream);
/* dw[N,K] += dy[M,N]ᵀ · x[M,K] in f32 (beta = 1); db[N] += Σ_m dy[m,:] (f32) when db != NULL
 * (a separate column-sum kernel, fixed order: deterministic). */
int mm_linear_bwd_w_cuda(mm_cuda_ctx *c, float *dw, float *db, const uint16_t *dy, const uint16_t *x, int64_t M,
                         int64_t N, int64_t K, void *stream);
/* General row-major bf16 GEMM (the loss, the labs): D[M,N] = alpha·op(A)·op(B) + beta·D, f32
 * accumulation. A is stored [M,K] (trans_a: [K,M]) with row stride lda; B is stored [K,N]
 * (trans_b: [N,K]) with row stride ldb; D has row stride ldd and is f32 when d_f32, else bf16.
 * mm_linear_fwd_cuda is A = x, B = w, trans_b. */
int mm_gemm_cuda(mm_cuda_ctx *c, void *d, bool d_f32, int64_t ldd, const uint16_t *a, int64_t lda, bool trans_a,
                 const uint16_t *b, int64_t ldb, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 float beta, void *stream);

/* The teacher's bf16 GEMMs (kernels/cuda/fp8_gemm.cu), on the cuBLASLt handle of
 * kernels/fp8.h (fp8_gemm_lt_create: cuBLASLt + a 32 MiB workspace, one per stream) rather
 * than an mm_cuda_ctx; bf16 x, W, f32 accumulation:
 *   bf16_gemm_cuda: the bf16 fallback of the FP8 GEMM, out [M, N] = x [M, K] · W [N, K]ᵀ,
 *     bf16 out (mm_linear_fwd_cuda without bias, on the other handle);
 *   bf16_gemm_f32_cuda: the same with f32 out (the MoE gate's logits, the LM head);
 *   bf16_gemm_batched_cuda: for b < batch, out_b [M, N] = x_b [M, K] · (w_trans ? W_bᵀ with
 *     W_b [N, K] : W_b [K, N]); ld* are row strides, s* the strides between batch entries,
 *     all in elements (MLA's per-head absorption: q_nope·W_UK[h], o_lat·W_UV[h]ᵀ). */
typedef struct fp8_lt fp8_lt;   /* opaque; defined with kernels/fp8.h's FP8 GEMMs */
int bf16_gemm_cuda(fp8_lt *h, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N, int64_t K, uint16_t *out,
                   void *stream);
int bf16_gemm_f32_cuda(fp8_lt *h, const uint16_t *x, const uint16_t *w, int64_t M, int64_t N, int64_t K, float *out,
                       void *stream);
int bf16_gemm_batched_cuda(fp8_lt *h, int w_trans, const uint16_t *x, int64_t ldx, int64_t sx, const uint16_t *w,
                           int64_t ldw, int64_t sw, uint16_t *out, int64_t ldo, int64_t so, int64_t M, int64_t N,
                           int64_t K, int64_t batch, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif

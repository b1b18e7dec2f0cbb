/* kernels/matmul.h — the linear layers of the student: y = x·wᵀ + b, and its gradients.
 *
 * Shapes (row-major, f32): x [M, K] (M tokens), w [N, K] (HF's nn.Linear layout), b [N]
 * or NULL, y [M, N]. The CPU path splits rows (forward, input gradient) or output features
 * (weight gradient) over the pool and calls a single-threaded OpenBLAS cblas_sgemm on each
 * part, so the pool is the only source of parallelism: call mm_blas_single_thread() once
 * before using these (it sets OpenBLAS's own thread count to 1, a process-wide setting; the
 * environment variable OPENBLAS_NUM_THREADS=1 does the same). Each part of the split does
 * the same arithmetic in the same order for a given pool size, so results are
 * deterministic run to run. No allocation, no errors.
 */
#ifndef RT_KERNELS_MATMUL_H
#define RT_KERNELS_MATMUL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/threadpool.h"

void mm_blas_single_thread(void);

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

#endif

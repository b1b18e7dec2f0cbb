/* kernels/norm.h — RMSNorm as Llama and Qwen2 use it: y = w ⊙ x / sqrt(mean(x²) + eps).
 *
 * Shapes (row-major, f32): x, y, dy, dx [M, D]; w, dw [D]; rstd [M] (1/sqrt(mean(x²)+eps),
 * saved by the forward for the backward). The mean of squares is accumulated in double.
 * Rows are split over the pool; the weight gradient is split over columns, so no two
 * threads write the same element and results do not depend on the pool size.
 * No allocation, no errors.
 */
#ifndef RT_KERNELS_NORM_H
#define RT_KERNELS_NORM_H

#include <stdint.h>

#include "core/threadpool.h"

/* rstd may be NULL (inference). y may not alias x. */
void rmsnorm_fwd(float *y, float *rstd, const float *x, const float *w, int64_t M, int64_t D, float eps,
                 tp_pool *pool);

/* dx[M,D] += ∂L/∂x (accumulated: the residual stream's gradient); dw[D] += ∂L/∂w. */
void rmsnorm_bwd(float *dx, float *dw, const float *dy, const float *x, const float *w, const float *rstd, int64_t M,
                 int64_t D, tp_pool *pool);

#endif

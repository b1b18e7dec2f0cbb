/* kernels/act.h — the SwiGLU gate of Llama/Qwen MLPs: a = silu(g) ⊙ u, silu(g) = g·σ(g).
 *
 * Elementwise over n values (f32), split over the pool. swiglu_bwd overwrites dg and du,
 * and, when a != NULL, writes the forward's a again (the backward needs σ(g) anyway, so a
 * caller that did not keep the activation gets it without a second pass). Outputs may not
 * alias the inputs. No allocation, no errors.
 */
#ifndef RT_KERNELS_ACT_H
#define RT_KERNELS_ACT_H

#include <stddef.h>

#include "core/threadpool.h"

void swiglu_fwd(float *a, const float *g, const float *u, size_t n, tp_pool *pool);
void swiglu_bwd(float *dg, float *du, float *a, const float *da, const float *g, const float *u, size_t n,
                tp_pool *pool);

#endif

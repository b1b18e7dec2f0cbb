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
#include <stdint.h>

#include "core/threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

void swiglu_fwd(float *a, const float *g, const float *u, size_t n, tp_pool *pool);
void swiglu_bwd(float *dg, float *du, float *a, const float *da, const float *g, const float *u, size_t n,
                tp_pool *pool);

/* ---- CUDA twins (kernels/cuda/act.cu; tiling and tolerances in docs/kernels.md) ----
 * Device pointers; bf16 values are uint16_t bit patterns (rounded to nearest even), math in
 * f32. Asynchronous on `stream` (a cudaStream_t; NULL = default stream). Return 0, or
 * RT_EINTERNAL with the failing CUDA call in the message (RT_EINVAL for a shape not handled).
 * Results are deterministic (no floating-point atomics). */
#ifdef RT_HAVE_CUDA
/* M rows of F: g and u rows start every ld_in elements (ld_in = F for separate buffers;
 * ld_in = 2F with u = g + F for a fused gate_up GEMM output), a has row stride F.
 * swiglu_bwd_cuda writes dg and du with the same stride ld_in (du = dg + F for a fused
 * gate_up gradient). F % 8 == 0 and ld_in % 8 == 0 (16-byte vectors). */
int swiglu_fwd_cuda(uint16_t *a, const uint16_t *g, const uint16_t *u, int64_t M, int64_t F, int64_t ld_in,
                    void *stream);
int swiglu_bwd_cuda(uint16_t *dg, uint16_t *du, const uint16_t *da, const uint16_t *g, const uint16_t *u, int64_t M,
                    int64_t F, int64_t ld_in, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif

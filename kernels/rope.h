/* kernels/rope.h — rotary position embeddings, HF "rotate_half" layout.
 *
 * For a head vector x of head_dim = 2h and angle a_i = pos · inv_freq[i] (i < h):
 *   y[i]   = x[i]·cos a_i − x[i+h]·sin a_i
 *   y[i+h] = x[i+h]·cos a_i + x[i]·sin a_i
 * rope_inv_freq() computes inv_freq[h] from the config's rope parameters: "default"
 * (theta^(−2i/d)), "linear" (divided by factor) and "llama3" (wavelength-dependent
 * scaling); YaRN is RT_EUNSUPPORTED here. The angle is formed in f32 (pos · inv_freq, one
 * rounding), as transformers does, and cos/sin are taken of that f32 angle.
 * rope_tables() fills cos/sin [T, h] for T positions; rope_apply() rotates x [T, H, 2h] in
 * place; with inverse it applies the transpose (rotation by −a), which is the backward.
 * No allocation; rope_inv_freq returns 0 or RT_EUNSUPPORTED.
 */
#ifndef RT_KERNELS_ROPE_H
#define RT_KERNELS_ROPE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/threadpool.h"
#ifndef RT_KERNELS_ONLY   /* the GPU-only build (no jansson) has no config parsing */
#include "core/model_config.h"
#endif

#ifdef __cplusplus
extern "C" {
#endif

#ifndef RT_KERNELS_ONLY
int rope_inv_freq(const mc_rope *r, int64_t head_dim, float *inv_freq);
#endif
void rope_tables(float *cos_t, float *sin_t, const int32_t *pos, int64_t T, const float *inv_freq, int64_t half);
void rope_apply(float *x, const float *cos_t, const float *sin_t, int64_t T, int64_t H, int64_t head_dim,
                bool inverse, tp_pool *pool);

/* ---- CUDA twins (kernels/cuda/rope.cu; tiling and tolerances in docs/kernels.md) ----
 * Device pointers; bf16 values are uint16_t bit patterns (rounded to nearest even), math in
 * f32. Asynchronous on `stream` (a cudaStream_t; NULL = default stream). Return 0, or
 * RT_EINTERNAL with the failing CUDA call in the message (RT_EINVAL for a shape not handled).
 * Results are deterministic (no floating-point atomics). */
#ifdef RT_HAVE_CUDA
/* x [T, H, hd] bf16 rotated in place (inverse: by −a, the backward). The angle is formed in
 * f32 as pos[t]·inv_freq[i] (pos [T] int32, inv_freq [hd/2] f32, both device) and its cos/sin
 * taken in the kernel (no tables). hd even, ≤ 256. */
int rope_apply_cuda(uint16_t *x, const int32_t *pos, const float *inv_freq, int64_t T, int64_t H, int64_t hd,
                    bool inverse, void *stream);
/* The same with token rows ld elements apart (ld ≥ H·hd): q or k in place inside a fused QKV
 * GEMM output [T, (Hq+2·Hkv)·hd]. */
int rope_apply_cuda_ld(uint16_t *x, int64_t ld, const int32_t *pos, const float *inv_freq, int64_t T, int64_t H,
                       int64_t hd, bool inverse, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif

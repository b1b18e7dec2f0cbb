/* kernels/rope.h — rotary position embeddings: Llama/Qwen's (HF "rotate_half" layout) and
 * DeepSeek-V3's (YaRN frequencies, interleaved pairs), CPU and CUDA.
 *
 * ---- Llama / Qwen (kernels/cpu/rope.c, kernels/cuda/rope.cu) ----
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
 *
 * ---- DeepSeek-V3 (kernels/cpu/yarn.c, kernels/cuda/ds_rope.cu) ----
 * yarn_init() fills inv_freq[dim/2] for the rope dims (qk_rope_head_dim) from the config's
 * rope parameters, the way transformers' _compute_yarn_parameters does (f32 arithmetic,
 * correction range from beta_fast/beta_slow truncated to integers, linear ramp between
 * interpolated and extrapolated frequencies), and *cs_scale, the factor applied to cos and
 * sin ("attention_factor": given, or mscale(factor, mscale)/mscale(factor, mscale_all_dim),
 * mscale(s, m) = 0.1·m·ln s + 1 for s > 1, else 1). MC_ROPE_DEFAULT gives theta^(−2i/d) and
 * 1; other rope types are RT_EUNSUPPORTED.
 * yarn_softmax_scale() is the attention logit scale: qk_head_dim^−½ · mscale(factor,
 * mscale_all_dim)² when the rope is scaled and mscale_all_dim ≠ 0.
 *
 * yarn_tables() fills cos/sin [T, dim/2] for T positions: angle = (f32)pos · inv_freq (one
 * f32 rounding, as transformers), cos/sin of it times cs_scale.
 * yarn_rope_apply() rotates, in place, T rows of H vectors of dim values each (vector h of
 * row t starts at x + t·row_stride + h·vec_stride). interleaved (DeepSeek's checkpoints,
 * config rope_interleave=true): pairs (x[2i], x[2i+1]) rotate by angle i and the result is
 * written de-interleaved, y[i] = x[2i]c − x[2i+1]s, y[i+dim/2] = x[2i+1]c + x[2i]s — the
 * same values and order as transformers' apply_rotary_pos_emb_interleave. Otherwise the HF
 * rotate_half layout. dim ≤ YARN_MAX_DIM. Rows are split over the pool.
 * No allocation; only yarn_init returns errors (RT_EUNSUPPORTED, RT_EINVAL).
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

#define YARN_MAX_DIM 512
#ifndef RT_KERNELS_ONLY
int yarn_init(const mc_rope *r, int64_t dim, float *inv_freq, float *cs_scale);
double yarn_softmax_scale(const mc_rope *r, int64_t qk_head_dim);
#endif
double yarn_mscale(double scale, double m);
void yarn_tables(float *cos_t, float *sin_t, const int32_t *pos, int64_t T, const float *inv_freq, int64_t half,
                 float cs_scale);
void yarn_rope_apply(float *x, int64_t T, int64_t row_stride, int64_t H, int64_t vec_stride, int64_t dim,
                     const float *cos_t, const float *sin_t, bool interleaved, tp_pool *pool);

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

/* DeepSeek's rope (kernels/cuda/ds_rope.cu): yarn_rope_apply, interleaved, on bf16 rows in
 * place — x holds T rows of H vectors of dim values (vector h of row t at x + t·row_stride +
 * h·vec_stride), dim even, ≤ 512. cos/sin are formed on the GPU from inv_freq [dim/2] and pos
 * [T] (angle = (f32)pos·inv_freq, cosf/sinf, times cs_scale); no inverse (the teacher has no
 * backward). Unlike rope_apply_cuda the input is interleaved and the output de-interleaved,
 * the vectors need not be contiguous, and cos/sin carry YaRN's cs_scale. */
int ds_rope_cuda(uint16_t *x, int64_t T, int64_t row_stride, int64_t H, int64_t vec_stride, int64_t dim,
                 const int32_t *pos, const float *inv_freq, float cs_scale, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif

/* kernels/yarn.h — DeepSeek-V3's rotary embedding: YaRN frequencies, the attention scale
 * they imply, and the rotation of the rope part of q/k in DeepSeek's interleaved layout.
 *
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
#ifndef RT_KERNELS_YARN_H
#define RT_KERNELS_YARN_H

#include <stdbool.h>
#include <stdint.h>

#include "core/model_config.h"
#include "core/threadpool.h"

#define YARN_MAX_DIM 512

int yarn_init(const mc_rope *r, int64_t dim, float *inv_freq, float *cs_scale);
double yarn_mscale(double scale, double m);
double yarn_softmax_scale(const mc_rope *r, int64_t qk_head_dim);
void yarn_tables(float *cos_t, float *sin_t, const int32_t *pos, int64_t T, const float *inv_freq, int64_t half,
                 float cs_scale);
void yarn_rope_apply(float *x, int64_t T, int64_t row_stride, int64_t H, int64_t vec_stride, int64_t dim,
                     const float *cos_t, const float *sin_t, bool interleaved, tp_pool *pool);

#endif

/* kernels/mla.h — DeepSeek multi-head latent attention over a latent KV cache.
 *
 * The cache of one sequence is T rows of kv_rank + rope_dim floats: the normalized KV latent
 * c (kv_a_layernorm(x·W_kv_aᵀ)[:kv_rank]) and the shared, already rotated rope key k_r.
 * kv_b [H·(nope+v), kv_rank] is kv_b_proj's weight: for head h, rows h·(nope+v) … +nope are
 * W_UK[h] (keys) and the next v rows W_UV[h] (values).
 * q [n, H, nope+rope] holds the queries (rope part already rotated, same layout as k_r);
 * query i sees cache rows [0, ctx[i]) (causal: ctx[i] = its position + 1), 1 ≤ ctx[i] ≤ T.
 * out [n, H·v] = softmax(scale · q·kᵀ) · v per head.
 *
 * mla_attn_naive(): decompresses K_nope and V for all T rows (c·kv_bᵀ) and attends per head
 * — the prefill path. mla_attn_absorbed(): never decompresses: q_nope is folded into the
 * latent space (q_nope·W_UK[h]), attention runs on c and k_r directly and the latent output
 * goes through W_UV[h] — the decode path; both give the same result up to f32 rounding.
 * Heads are split over the pool; each part calls cblas_sgemm, which should run
 * single-threaded (mm_blas_single_thread(), kernels/matmul.h).
 * Errors: RT_ENOMEM (scratch), RT_EINVAL (ctx out of range).
 */
#ifndef RT_KERNELS_MLA_H
#define RT_KERNELS_MLA_H

#include <stdint.h>

#include "core/threadpool.h"

typedef struct {
    int64_t n_heads, nope_dim, rope_dim, v_dim, kv_rank;
    float scale;       /* softmax scale, e.g. yarn_softmax_scale() */
} mla_dims;

int mla_attn_naive(const mla_dims *d, const float *q, int64_t n, const float *latent, int64_t T, const float *kv_b,
                   const int32_t *ctx, float *out, tp_pool *pool);
int mla_attn_absorbed(const mla_dims *d, const float *q, int64_t n, const float *latent, int64_t T,
                      const float *kv_b, const int32_t *ctx, float *out, tp_pool *pool);

#endif

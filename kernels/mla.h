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

#ifdef RT_HAVE_CUDA
/* CUDA (kernels/cuda/ds_mla.cu): the absorbed attention core on a paged latent cache, for
 * decode (one query per sequence) and prefill (many queries of a sequence, each with its own
 * ctx) alike; the projections around it (q_nope·W_UK[h] before, ·W_UV[h]ᵀ after) are GEMMs.
 * q [n, H, kv_rank + rope_dim] bf16: the absorbed query (q_nope·W_UK[h] | rotated q_rope).
 * kv: the cache, pages of `page` rows of kv_rank + rope_dim values (c | k_r, as `latent`
 * above): bf16, or e4m3 when kv_scale [pages·page] (one f32 scale per row) is given.
 * Query i reads sequence seq[i] (seq NULL: i) through block_table + seq[i]·bt_stride (page
 * ids) and sees its first ctx[i] rows (1 ≤ ctx[i] ≤ max_ctx). out [n, H, kv_rank] bf16 =
 * softmax(scale · q·kᵀ) · c per head — mla_attn_absorbed's o_lat, before W_UV.
 * Built for DeepSeek-V3's kv_rank 512 and rope 64 (else RT_EUNSUPPORTED); H a multiple of
 * 16. Work is split over the context (flash-decoding) into ws, mla_decode_workspace_bytes()
 * bytes, owned by the caller (no allocation: the call can be captured in a CUDA graph once
 * a first call outside the capture has raised the kernel's shared-memory limit).
 * Asynchronous on `stream`; 0, RT_EINVAL, RT_EUNSUPPORTED or RT_EINTERNAL.
 * mla_cache_append_cuda(): rows [n, 576] bf16 (c | k_r) into cache rows slot[n] (page id ·
 * page + offset); with kv_scale (e4m3 cache) each row is quantized with scale amax/448 (1 for
 * a zero row), as fp8_act_quant does per block. */
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
size_t mla_decode_workspace_bytes(int64_t n, int64_t H, int64_t max_ctx);
int mla_decode_cuda(const mla_dims *d, const uint16_t *q, int64_t n, const void *kv, const float *kv_scale,
                    int64_t page, const int32_t *block_table, int64_t bt_stride, const int32_t *seq,
                    const int32_t *ctx, int64_t max_ctx, void *ws, size_t ws_bytes, uint16_t *out, void *stream);
int mla_cache_append_cuda(const uint16_t *rows, int64_t n, const int32_t *slot, void *kv, float *kv_scale,
                          void *stream);
#ifdef __cplusplus
}
#endif
#endif

#endif

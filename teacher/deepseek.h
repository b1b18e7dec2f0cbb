/* teacher/deepseek.h — DeepSeek-V3 / R1 forward pass on the CPU (f32 math), with its latent
 * KV cache and the multi-token-prediction (MTP) layer.
 *
 * ds_load() opens a Hugging Face checkpoint directory (config.json + safetensors, sharded
 * or not) and checks every tensor against the config (ck_validate). FP8 e4m3 weights of the
 * linear layers (q_a/q_b/q_proj, kv_a, kv_b, o_proj, the dense MLP, shared and routed
 * experts, the MTP eh_proj) stay e4m3 in memory, copied with their f32 block scales
 * (weight_scale_inv, 128×128): about one byte per parameter plus 4 bytes per block. Their
 * products dequantize one tile at a time into a small scratch (kernels/fp8.h's
 * fp8_linear_fwd); kv_b, which the MLA kernels read as f32, is widened per layer call into
 * the call's workspace (H·(dn+dv)·R floats). Every other tensor (BF16/F16/F32: norms,
 * embeddings, LM head, router) is converted to f32, and so is an FP8 tensor outside the
 * linear layers. Each tensor's pages of the mapping are dropped from the process's resident
 * set once read (madvise DONTNEED; they stay in the page cache), so loading peaks near the
 * model's own size, not the checkpoint's plus the copy's. The MTP layer
 * (model.layers.<num_hidden_layers>.*) is loaded when stored and opts->load_mtp is set. The
 * model owns its weights; it borrows opts->pool (NULL: single-threaded), which must outlive
 * it. ds_load_parallel loads one rank's part instead (the layout and the collectives are
 * teacher/parallel.h's); every call below works on that model too, its collectives hidden
 * inside. Dependency order: teacher/deepseek_int.h ← teacher/parallel.h ← this file.
 *
 * The math follows transformers' DeepseekV3ForCausalLM: MLA (q_a → q_a_layernorm → q_b,
 * kv_a_with_mqa → kv_a_layernorm → kv_b, o_proj; those two norms use eps 1e-6 as in
 * transformers), RoPE on the rope part only with YaRN (kernels/rope.h), the softmax scale
 * with mscale_all_dim, first_k_dense_replace dense MLP layers, then the MoE block (sigmoid
 * group-limited router with e_score_correction_bias, routed experts + shared experts).
 *
 * ds_cache holds, per sequence and per layer (the MTP layer included), one row of
 * kv_rank + qk_rope_head_dim floats per position: the normalized latent and the rotated
 * rope key (576 floats per token per layer for R1). Contiguous, `capacity` positions.
 * ds_cache_create() returns a cache the caller frees with ds_cache_free() (NULL is fine).
 *
 * ds_forward() runs n tokens of one sequence at positions[i] = positions[0] + i, with
 * positions[0] ≤ the cache's length (< it rewinds, e.g. after rejected draft tokens) and
 * positions[0] + n ≤ capacity; it writes their latent rows, attends causally to rows
 * [0, position] and writes logits [n, vocab] (and, when hidden_out is not NULL, the final
 * normalized hidden states [n, hidden] that feed lm_head — the input of the MTP layer).
 * mode DS_ATTN_NAIVE decompresses K/V (prefill), DS_ATTN_ABSORBED attends in latent space
 * (decode); DS_ATTN_AUTO picks naive for n > 1 and absorbed for n = 1.
 *
 * ds_mtp_forward() is the draft model: for each i, with h[i] the main model's hidden_out at
 * position p_i and next[i] the token at p_i + 1,
 *   x = eh_proj([enorm(embed_mtp(next[i])) ; hnorm(h[i])]) → the MTP decoder layer (its own
 *   cache rows, at positions[i]) → logits = shared_head.head(shared_head.norm(x)),
 * which predict the token at p_i + 2 (the concatenation order follows vLLM and SGLang).
 * hidden_out (optional) gets x before shared_head.norm, for chaining MTP steps. The MTP
 * cache length is tracked apart from the main one, with the same position rules.
 * Errors: RT_EIO/RT_EFORMAT/RT_ENOTFOUND/RT_EUNSUPPORTED (load), RT_EINVAL (bad token,
 * position or n), RT_ENOMEM.
 */
#ifndef RT_TEACHER_DEEPSEEK_H
#define RT_TEACHER_DEEPSEEK_H

#include <stdbool.h>
#include <stdint.h>

#include "core/comm.h"
#include "core/model_config.h"
#include "core/threadpool.h"
#include "teacher/kvcache.h"
#include "teacher/parallel.h"

typedef struct ds_model ds_model;   /* opaque; owned by the caller of ds_load */
typedef struct ds_cache ds_cache;   /* opaque; owned by the caller of ds_cache_create */

typedef struct {
    tp_pool *pool;       /* borrowed; NULL runs single-threaded */
    bool load_mtp;       /* load the MTP layer when the checkpoint has it */
} ds_load_opts;

typedef enum { DS_ATTN_AUTO = 0, DS_ATTN_NAIVE, DS_ATTN_ABSORBED } ds_attn_mode;

int ds_load(const char *dir, const ds_load_opts *opts, ds_model **out);
void ds_free(ds_model *m);

/* One rank's part of the model, as teacher/parallel.h describes: the layout of comm's rank
 * (ds_layout_make), then ds_load_layout. */
int ds_load_parallel(const char *dir, const ds_load_opts *opts, rt_comm *comm, ds_model **out);
/* The loader behind both: ds_load restricted to lo's part, forwarding through comm. ds_load is
 * this with the one-rank layout and no comm. */
int ds_load_layout(const char *dir, const ds_load_opts *opts, const ds_layout *lo, rt_comm *comm, ds_model **out);
const ds_layout *ds_model_layout(const ds_model *m);   /* NULL for a ds_load model */

/* Bytes of the checkpoint that loading read and converted (tensor data and the FP8 scales
 * of the slices taken): all of it for ds_load, a rank's part for ds_load_parallel
 * (below); expert_bytes counts the routed experts' weights among them. */
typedef struct {
    size_t bytes, expert_bytes;
} ds_load_info;
void ds_load_info_get(const ds_model *m, ds_load_info *out);

/* Bytes of weights the model holds in memory (its own allocations, 64-byte rounded; not the
 * caches or per-call workspaces): e4m3 matrices, their f32 block scales, f32 tensors (norms,
 * embeddings, LM head, router, and any weight not stored as FP8) and the per-layer tables.
 * For R1 in FP8: ~1 byte per FP8 parameter. ds_resident_bytes() is .total. */
typedef struct {
    size_t fp8, scales, f32, other, total;
} ds_resident;
void ds_resident_get(const ds_model *m, ds_resident *out);
size_t ds_resident_bytes(const ds_model *m);

const mc_config *ds_config(const ds_model *m);
bool ds_has_mtp(const ds_model *m);
int64_t ds_vocab(const ds_model *m);
int64_t ds_hidden(const ds_model *m);

/* Shapes of the loaded MTP tensors, for checks: name is the checkpoint suffix after
 * "model.layers.<L>." (e.g. "eh_proj.weight"); rows/cols as held (FP8 or f32); RT_ENOTFOUND
 * when absent. */
int ds_mtp_tensor_shape(const ds_model *m, const char *name, int64_t *rows, int64_t *cols);

int ds_cache_create(const ds_model *m, int64_t capacity, ds_cache **out);
void ds_cache_free(ds_cache *c);
void ds_cache_reset(ds_cache *c);
int64_t ds_cache_len(const ds_cache *c);        /* positions filled by ds_forward */
int64_t ds_cache_mtp_len(const ds_cache *c);    /* positions filled by ds_mtp_forward */
/* Values per token per layer: kv_lora_rank + qk_rope_head_dim. */
int64_t ds_cache_row(const ds_cache *c);

int ds_forward(ds_model *m, ds_cache *cache, const int32_t *tokens, const int32_t *positions, int64_t n,
               ds_attn_mode mode, float *logits_out, float *hidden_out);

/* The same forward over a paged latent cache (teacher/kvcache.h), for the engine: blocks of
 * ds_block_floats(m, bs) floats hold, per main layer l, bs latent rows at l·bs·row. Sequence
 * i appends n_new[i] ≥ 1 tokens (laid end to end in tokens) at positions seqs[i]->len, …
 * (blocks reserved, shared ones copied on write; lengths advance). Each layer gathers a
 * sequence's rows into a contiguous scratch, runs the MLA kernels on it (AUTO: naive for
 * n_new > 1, absorbed for 1) and writes the new rows back. logits: all_logits → [Σ n_new, V],
 * else [n_seqs, V] (last new token of each). No MTP rows. Errors: ds_forward's, RT_ERANGE
 * (cache full). */
size_t ds_block_floats(const ds_model *m, int64_t block_size);
int ds_forward_paged(ds_model *m, kv_pool *cache, kv_seq *const *seqs, const int32_t *n_new, int64_t n_seqs,
                     const int32_t *tokens, ds_attn_mode mode, float *logits, bool all_logits);

int ds_mtp_forward(ds_model *m, ds_cache *cache, const float *hidden, const int32_t *next_tokens,
                   const int32_t *positions, int64_t n, ds_attn_mode mode, float *logits_out, float *hidden_out);

#endif

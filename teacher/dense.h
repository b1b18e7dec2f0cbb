/* teacher/dense.h — dense Llama-3 / Qwen2.5 / Qwen3 teacher forward (f32) over a paged KV cache.
 * (Qwen3: each head of q and k RMS-normalized by q_norm / k_norm before RoPE.)
 *
 * dn_load() reads a Hugging Face directory (config.json + safetensors, sharded or not;
 * F32/BF16/F16/F64 weights) after checking every tensor against the config
 * (core/checkpoint.h), and keeps f32 copies, except that the matrices of a BF16 checkpoint
 * (q/k/v/o, gate/up/down, embedding, lm_head) stay bf16 when RETORT_CPU_WEIGHTS allows: auto
 * (the default) where the CPU has AVX2+FMA (kernels/matmul.h: mm_bf16_streams), bf16 on any CPU,
 * f32 never (RT_EINVAL for another value). The bf16 products widen w in registers and give the
 * same logits, bit for bit, as the f32 copies, reading half the bytes per decode step; the
 * embedding rows are widened per token. It borrows `pool` (NULL: single-threaded),
 * which must outlive the model. The math is the student's (student/model.h) through the
 * same kernels — rmsnorm, linear, rope, swiglu, and the blocked attention (attn_fwd) when
 * every sequence of a call starts empty (a fresh prefill) — and otherwise attention of the
 * new tokens against the cached K/V (attn_paged_fwd, kernels/attention.h).
 *
 * Cache layout: a kv_pool (teacher/kvcache.h) whose blocks hold dn_block_floats(m, bs)
 * floats: per layer l, K rows [bs, Hkv·hd] then V rows [bs, Hkv·hd] (RoPE already applied
 * to K). One pool serves many sequences.
 *
 * dn_forward() runs a batch of n_seqs sequences: sequence i appends n_new[i] ≥ 1 tokens
 * (tokens laid end to end, sequence by sequence) at positions seqs[i]->len, …; their K/V
 * are written (kv_seq_reserve: blocks allocated, shared blocks copied on write) and each
 * sequence's len advances. logits: all_logits → [Σ n_new, V] (every new token), else
 * [n_seqs, V] (the last new token of each sequence). A sequence's logits do not depend on
 * the other sequences in the batch. On error no length changes (blocks may stay reserved).
 * Errors: RT_EIO/RT_EFORMAT/RT_ENOTFOUND/RT_EUNSUPPORTED (load), RT_EINVAL (bad token,
 * n_new), RT_ERANGE (cache full, position beyond max_position_embeddings), RT_ENOMEM.
 */
#ifndef RT_TEACHER_DENSE_H
#define RT_TEACHER_DENSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/model_config.h"
#include "core/threadpool.h"
#include "teacher/kvcache.h"

typedef struct dn_model dn_model;   /* opaque; owned by the caller of dn_load */

int dn_load(const char *dir, tp_pool *pool, dn_model **out);
void dn_free(dn_model *m);   /* NULL is fine */

const mc_config *dn_config(const dn_model *m);
/* Bytes the model holds in memory: its copy of every weight (4 bytes per parameter, 2 for a
 * matrix held in bf16; each tensor padded to 64 bytes) plus the per-layer table and RoPE
 * frequencies; not the KV cache nor per-call workspaces. */
size_t dn_resident_bytes(const dn_model *m);
size_t dn_block_floats(const dn_model *m, int64_t block_size);

int dn_forward(dn_model *m, kv_pool *cache, kv_seq *const *seqs, const int32_t *n_new, int64_t n_seqs,
               const int32_t *tokens, float *logits, bool all_logits);

#endif

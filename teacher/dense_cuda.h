/* teacher/dense_cuda.h — the dense Llama-3 / Qwen2.5 / Qwen3 teacher forward on CUDA GPUs (the
 * device twin of teacher/dense.h, behind te_model_load_opts with TE_DEVICE_CUDA). Qwen3's q/k
 * norms (one RMSNorm per head of q and of k, before RoPE; head_dim independent of hidden/heads)
 * run in place on the fused q|k|v rows (rmsnorm_heads_fwd_cuda); their [head_dim] weights are
 * whole on every rank.
 *
 * dc_load() reads a Hugging Face directory (config.json + safetensors, sharded or not), checks
 * every tensor against the config (core/checkpoint.h) and the shapes the kernels take (head_dim
 * 64 or 128, hidden and intermediate sizes multiples of 8), makes the memory plan, and only then
 * allocates: weights go to the device in bf16 — bf16 tensors copied as stored from the mapping,
 * f32/f16/f64 converted per tensor in chunks of 1 Mi elements on the way (never a host copy of
 * the model) —, q/k/v and gate/up fused into one matrix each (biases too; a missing one of a
 * fused group is zeros).
 *
 * Memory plan (dc_plan): weights + activations for max_tokens tokens and max_seqs sequences per
 * pass (the logits rows, the block tables) + workspaces (cuBLASLt, split-KV) are fixed; the KV
 * cache takes what is left of gpu_memory_fraction of the device's memory (cudaMemGetInfo: what
 * other processes hold is not ours), in bf16, L·2·Hkv·hd·2 bytes per position. A model whose
 * weights do not fit, or that leaves less than DC_MIN_KV positions (or its whole context, if
 * shorter) of cache, is refused with one line (RT_ENOMEM) before anything is allocated.
 *
 * The KV cache: dc_cache_init() lays the KV arena out in blocks of block_size positions — per
 * block, per layer, K rows [bs, Hkv·hd] then V rows, bf16, RoPE applied to K — and returns their
 * count; the caller's kv_pool (teacher/kvcache.h, made with block_floats 0: it holds only block
 * tables, reference counts and the free list) hands out the same block ids. One cache per model:
 * one engine at a time drives a dc_model (a second dc_cache_init takes the cache over). dc_forward() copies a
 * block on the device when kv_seq_reserve gives a sequence a private copy of a shared block.
 *
 * dc_forward() has dn_forward's contract (teacher/dense.h) for the last token's logits [n_seqs,
 * V] (f32, copied to the host): sequence i appends n_new[i] tokens. A batch larger than a pass
 * (max_tokens tokens, max_seqs sequences) runs as several passes, a long chunk of one sequence in
 * pieces; a pass whose sequences all start empty uses the flash attention over the new tokens
 * (attn_fwd_cuda_ex), others the paged attention (attn_paged_fwd_cuda). bf16 weights and
 * activations, f32 accumulation: logits agree with dn_forward to a tolerance (see docs/teacher.md,
 * "The GPU engine"), not bit for bit, and may depend on the batch through the GEMMs' algorithms.
 *
 * Tensor parallel (dc_load_opts.comm with P > 1 ranks, one GPU each; every rank calls dc_load and
 * then every dc_forward in lockstep, with the same arguments): the layout of teacher/parallel.c —
 * rank r keeps query heads [r·Hq/P, …) (q rows and o_proj columns), the kv heads they read (split
 * when P divides Hkv, else, when Hkv divides P, the one kv head of its query heads: replicated
 * over P/Hkv ranks), intermediate rows [r·F/P, …) (gate/up rows, down_proj columns) and LM-head
 * rows [r·Vp, …) (Vp = ceil(V/P) rounded up to 8) — the embedding's same rows (vocabulary-parallel:
 * a lookup of this rank's rows, zeros for the others' ids, then a bf16 all-reduce, exact since one
 * term of each sum is not zero; a tied head reads those rows too) —, reading only those slices
 * from the mapping; the norms are whole on every rank, o_proj / down_proj biases on rank 0 only. A
 * bf16 all-reduce (NCCL over comm_open_nccl, on the model's stream) follows o_proj and down_proj;
 * the f32 logits rows are all-gathered, so every rank gets the same full logits. The plan is per
 * rank (its slices), and the ranks agree before any collective: a rank that fails stops all (the
 * others say another rank failed), and the cache takes the smallest rank's positions. Other
 * splits (Hq or F not divisible by P, F/P not a multiple of 8) are RT_EUNSUPPORTED.
 *
 * CUDA graphs (unless dc_load_opts.no_cuda_graphs): a decode pass (one new token for each of n
 * sequences, none starting empty) runs as the graph of the smallest bucket B ≥ n of 1, 2, 4, …,
 * max_seqs and the smallest context class C ≥ its longest context of bs, 2·bs, 4·bs, …, the
 * model's context, captured after that pair's first (eager) pass: its ints padded to B rows in
 * the fixed device buffer (padding rows use a scratch block: dc_cache_init gives the caller one
 * block less than the arena holds when graphs are on), tables of ceil(C / bs) ints a row, max_ctx
 * C (the paged kernel's split plan). dc_cache_init drops the graphs. Tokens equal the eager passes';
 * logits may differ in the last bits (GEMMs over B rows).
 *
 * Without CUDA (a CPU-only build) every entry point returns RT_EUNSUPPORTED.
 * Errors: RT_EIO/RT_EFORMAT/RT_ENOTFOUND (load), RT_EUNSUPPORTED (shape, no device), RT_ENOMEM
 * (the plan; host), RT_EINVAL (bad token, n_new, a cache not made by dc_cache_init), RT_ERANGE
 * (cache full, position beyond the context), RT_EINTERNAL (a CUDA call, named in the message).
 */
#ifndef RT_TEACHER_DENSE_CUDA_H
#define RT_TEACHER_DENSE_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/comm.h"
#include "core/model_config.h"
#include "kernels/sample.h"
#include "teacher/cuda_plan.h"
#include "teacher/kvcache.h"

typedef struct dc_model dc_model;   /* opaque; owned by the caller of dc_load */

#define DC_MIN_KV 1024              /* cache positions a plan must leave at least (or the context) */

typedef struct {
    int gpu;                        /* device index (< 0: 0) */
    double memory_fraction;         /* share of the device's memory to use (0: 0.9) */
    int64_t max_tokens;             /* tokens per device pass (0: 512; at least 16) */
    int64_t max_seqs;               /* sequences per device pass (0: 256; at least 16) */
    rt_comm *comm;                  /* tensor-parallel ranks (NULL or one rank: one GPU); borrowed */
    bool no_cuda_graphs;            /* run decode passes eagerly (default: CUDA graphs) */
} dc_load_opts;

typedef cb_plan dc_plan;   /* the memory plan: teacher/cuda_plan.h */

int dc_load(const char *dir, const dc_load_opts *o, dc_model **out);
void dc_free(dc_model *m);   /* NULL is fine */

const mc_config *dc_config(const dc_model *m);
const dc_plan *dc_get_plan(const dc_model *m);
int64_t dc_kv_positions(const dc_model *m);

/* Blocks of block_size positions over the KV arena: *n_blocks = kv_positions / block_size (less
 * the graphs' scratch block; ≥ 1, else RT_ERANGE). Forgets what the cache held. */
int dc_cache_init(dc_model *m, int64_t block_size, int64_t *n_blocks);

int dc_forward(dc_model *m, kv_pool *cache, kv_seq *const *seqs, const int32_t *n_new, int64_t n_seqs,
               const int32_t *tokens, float *logits);

/* Sampling on the device. dc_forward() with logits NULL (n_seqs ≤ max_seqs, else RT_EINVAL) leaves
 * its n_seqs rows [V] on the device, full rows on every rank (under tensor parallel the ranks'
 * LM-head slices are gathered there, as for the host logits: each rank then draws from the same
 * bits, so every rank draws the same token); dc_sample() draws from them as dsc_sample does
 * (teacher/ds_cuda.h): draw i from row row_of[i] restricted to ids [0, n_valid) with holes at
 * −inf, under params[i] (smp_check'd) and the uniform smp_uniform(rng[3i], rng[3i+1], rng[3i+2])
 * — the host sampler's stream, so the same tokens (smp_sample_cuda's exact ties and double
 * rounding at a CDF boundary aside) —; tokens [n], logprob [n] (NULL: not wanted), and with
 * top_k > 0 (≤ SMP_TOP_MAX) each masked row's top-k logprobs top_ids / top_lp [n, top_k] come
 * back, nothing else. RT_EINVAL past the rows the last forward left. dc_logits_row() copies one
 * such row [V] to the host. */
int dc_sample(dc_model *m, int64_t n, const int32_t *row_of, int64_t n_valid, const int32_t *holes, int64_t n_holes,
              const smp_params *params, const uint64_t *rng, int32_t *tokens, float *logprob, int top_k,
              int32_t *top_ids, float *top_lp);
int dc_logits_row(dc_model *m, int64_t row, float *out);

#endif

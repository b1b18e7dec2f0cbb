/* teacher/ds_cuda.h — the DeepSeek-V3 / R1 teacher forward on one CUDA GPU, or split over the GPUs
 * of an MPI job (tensor + expert parallel over NCCL, below) (the device twin of
 * teacher/deepseek.h's ds_forward_paged, behind te_model_load_opts with TE_DEVICE_CUDA; the
 * contract shape of teacher/dense_cuda.h).
 *
 * dsc_load() reads a Hugging Face directory (config.json + safetensors, sharded or not), checks
 * every tensor against the config (core/checkpoint.h) and the shapes the kernels take (kv_rank
 * 512 and rope 64 — the absorbed-MLA kernel's build —, heads a multiple of 16, hidden, q_lora,
 * H·v_head_dim and every MLP/expert intermediate size multiples of 128, interleaved rope, 128×128
 * FP8 blocks, no attention biases), makes the memory plan, and only then allocates. Weights go to
 * the device in their stored dtype, tensor by tensor straight from the mapped safetensors (no
 * host copy of the model): every projection (q_a, q_b or q_proj, kv_a, o_proj, the dense MLPs,
 * shared and routed experts) must be FP8 e4m3 and stays e4m3 with its f32 128×128 block scales
 * (gate|up of an MLP stacked into one matrix, the routed experts of a layer laid end to end for
 * the grouped GEMM); embeddings, LM head and router weights go as bf16 (BF16 copied as stored,
 * F32/F16 converted in chunks); norms and the router's correction bias as f32. kv_b (which the
 * absorbed MLA multiplies in bf16 batched GEMMs) is widened to bf16 at load, 128 rows at a time
 * — the one FP8 tensor not held as FP8 (R1: 32 MiB per layer, 0.3% of the weights).
 *
 * Memory plan (dsc_plan): weights + activations for max_tokens tokens and max_seqs sequences per
 * pass + workspaces (the cuBLASLt handle's 32 MiB, split-K partials, the MLA split workspace)
 * are fixed; the latent cache takes what is left of memory_fraction of the device (cudaMemGetInfo:
 * what other processes hold is not ours), bf16, L·(kv_rank + rope)·2 bytes per position. A model
 * whose weights do not fit, or that leaves less than 1024 positions (or its whole context),
 * is refused with one line (RT_ENOMEM, "needs N GB of weights; the GPU has M GB") before any
 * allocation.
 *
 * The cache: dsc_cache_init() lays the latent arena out per layer as [n_blocks][block_size][576]
 * (normalized latent c | rotated k_rope), so one block id names the same block in every layer;
 * the caller's kv_pool (made with block_floats 0) hands out the ids. dsc_forward() copies a block
 * (every layer) on the device when kv_seq_reserve gives a sequence a private copy.
 *
 * dsc_forward() has ds_forward_paged's contract (without all_logits, mode and MTP) for the last
 * token's logits [n_seqs, V] (f32, to the host; logits NULL: none come back): sequence i appends
 * n_new[i] tokens. When n_seqs ≤ max_seqs the rows also stay on the device for dsc_sample. A batch larger
 * than a pass (max_tokens, max_seqs) runs as several passes, a long chunk in pieces. Prefill and
 * decode both go through the absorbed MLA on the paged cache. Activations are bf16 and quantized
 * to e4m3 per token and per 128 channels before every FP8 GEMM (DeepSeek's act_quant), so logits
 * agree with the CPU engine (f32 activations) to a tolerance (docs/teacher.md, "The GPU engine").
 *
 * Tensor and expert parallel (dsc_load_opts.comm with P > 1 ranks, one GPU each; every rank calls
 * dsc_load and then every dsc_forward / dsc_sample in lockstep, with the same arguments): the
 * layout of teacher/parallel.c on the GPU. Rank r holds
 *   attention   heads [r·H/P, …): their rows of q_b (q_proj) and kv_b, their columns of o_proj;
 *               q_a, kv_a, their norms and the latent cache are whole on every rank (the latent
 *               row is per token and every head reads all of it: splitting it would only move it
 *               back), so each rank's cache holds every position; o_proj's bf16 partial sums are
 *               all-reduced (NCCL).
 *   dense MLP   intermediate rows [r·F/P, …) (gate/up rows, down_proj columns), all-reduced.
 *   experts     routed expert e on rank e mod P (laid end to end for the grouped GEMM in that
 *               order); router and shared experts whole on every rank. Every rank routes every
 *               token (the all-reduced hidden state is the same on all ranks); token t is owned by
 *               rank t / ceil(T/P), which sends the e4m3 rows (and their scales) of its (t, k)
 *               slots to the experts' ranks with comm_alltoallv — the row counts exchanged over
 *               the host communicator first and checked against the routing —, gets the experts'
 *               bf16 outputs back the same way, adds the shared experts' output of its tokens and
 *               combines; the owned slices are then all-gathered. A decode pass (graphs on) sends
 *               instead a fixed slab of ceil(T/P)·min(K, ceil(E/P)) rows to every rank, packed on
 *               the device with padding (kernels/moe.h's moe_slab_pack_cuda), so nothing waits
 *               for the host: more bytes (docs/teacher.md: P× for R1 at P = 8), no host sync.
 *   vocabulary  LM-head rows [r·Vp, …) (Vp = ceil(V/P) rounded up to 8); the embedding is whole.
 *               The f32 logits rows are all-gathered, so every rank holds the same full rows on
 *               the device (dsc_sample draws the same ids on every rank).
 * Each rank reads only its slices from the mapping. An FP8 slice must start and end on the 128×128
 * block grid (H/P·(nope+rope), H/P·v_head_dim, H/P·(nope+v) and F/P multiples of 128; H/P a
 * multiple of 16 for the MLA kernel): other splits are refused with one line (RT_EUNSUPPORTED).
 * The plan is per rank ("needs N GB of weights per rank"); the ranks agree before any collective:
 * a rank that fails stops all (the others say another rank failed), and the cache takes the
 * smallest rank's positions.
 *
 * The MTP layer (dsc_load_opts.load_mtp; teacher/ds_cuda_mtp.c): model.layers.<L>.* — its decoder
 * layer laid out, split over the ranks and cached like a main layer (the latent arena gets an
 * (L+1)-th layer: kv_position_bytes counts it), eh_proj FP8 and whole on every rank, its
 * embedding (bf16, whole) and shared_head.head (bf16, this rank's vocabulary rows) copies of
 * their own, all in the plan. A checkpoint without it is refused (RT_ENOTFOUND) when it is asked
 * for. dsc_forward never touches it; sd_greedy_cuda (teacher/speculative.h) drafts with it.
 *
 * CUDA graphs (one rank, unless dsc_load_opts.no_cuda_graphs): a decode pass (one new token for
 * each of n ≤ max_seqs sequences, none starting empty, its logits rows from row 0) runs as the
 * graph of the smallest bucket B ≥ n of 1, 2, 4, …, max_seqs and the smallest context class C ≥
 * its longest context of bs, 2·bs, 4·bs, …, the model's context (the MLA decode's split plan and
 * its tables' width depend on C), captured after that pair's first pass, which runs eagerly with
 * the same shapes (so every kernel's >48 KB shared-memory opt-in and cuBLASLt's choices are made
 * before any capture). The pass's ints are padded to B rows in the fixed device buffer: padding
 * rows write their latent rows into a scratch block (dsc_cache_init gives the caller one block
 * less than the arena holds when graphs are on) and read only that; the split-K choice, the MoE
 * grouped GEMMs (sized for B·K rows, reading the device offsets) and the LM head (B rows) have
 * the bucket's shapes. dsc_cache_init drops the graphs. Over P > 1 ranks a decode pass's expert
 * dispatch is capacity-padded (below), so its NCCL calls are inside the graph too.
 *
 * Without CUDA every entry point returns RT_EUNSUPPORTED.
 * Errors: RT_EIO/RT_EFORMAT/RT_ENOTFOUND (load), RT_EUNSUPPORTED (shape, dtype, no device),
 * RT_ENOMEM (the plan; host), RT_EINVAL (bad token, n_new, a cache not made by dsc_cache_init),
 * RT_ERANGE (cache full, position beyond the context), RT_EINTERNAL (a CUDA call).
 */
#ifndef RT_TEACHER_DS_CUDA_H
#define RT_TEACHER_DS_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/comm.h"
#include "core/model_config.h"
#include "kernels/sample.h"
#include "teacher/cuda_plan.h"
#include "teacher/kvcache.h"

typedef struct dsc_model dsc_model;   /* opaque; owned by the caller of dsc_load */

typedef struct {
    int gpu;                        /* device index (< 0: 0) */
    double memory_fraction;         /* share of the device's memory to use (0: 0.9) */
    int64_t max_tokens;             /* tokens per device pass (0: 512; at least 16) */
    int64_t max_seqs;               /* sequences per device pass (0: 256; at least 16) */
    rt_comm *comm;                  /* tensor/expert-parallel ranks (NULL or one rank: one GPU); borrowed */
    bool load_mtp;                  /* also the MTP layer (num_nextn_predict_layers > 0; below) */
    bool no_cuda_graphs;            /* run decode passes eagerly (default: CUDA graphs) */
} dsc_load_opts;

typedef cb_plan dsc_plan;   /* the memory plan: teacher/cuda_plan.h */

int dsc_load(const char *dir, const dsc_load_opts *o, dsc_model **out);
void dsc_free(dsc_model *m);   /* NULL is fine */

const mc_config *dsc_config(const dsc_model *m);
const dsc_plan *dsc_get_plan(const dsc_model *m);

/* Blocks of block_size positions over the latent arena: *n_blocks = kv_positions / block_size
 * (less the graphs' scratch block when graphs are on; ≥ 1, else RT_ERANGE). Forgets what the
 * cache held. */
int dsc_cache_init(dsc_model *m, int64_t block_size, int64_t *n_blocks);

int dsc_forward(dsc_model *m, kv_pool *cache, kv_seq *const *seqs, const int32_t *n_new, int64_t n_seqs,
                const int32_t *tokens, float *logits);

/* Sampling on the device from the rows the last dsc_forward left there (RT_EINVAL past them):
 * draw i samples row row_of[i] restricted to ids [0, n_valid) with holes[0, n_holes) at −inf,
 * under params[i] (smp_check'd here) with the uniform smp_uniform(rng[3i], rng[3i+1], rng[3i+2])
 * — smp_sample's draw (kernels/sample.h: smp_sample_cuda, exact ties and double rounding at a
 * CDF boundary aside) —; tokens [n] and logprob [n] (NULL: not wanted; smp_logprob of the drawn
 * id over the masked row) come back, and with top_k > 0 (≤ SMP_TOP_MAX) each masked row's top_k
 * logprobs, top_ids / top_lp [n, top_k] (smp_top_logprobs_cuda: larger first, ties by lower id),
 * nothing else. n ≤ max_seqs. dsc_logits_row() copies one such row [V] to the host. */
int dsc_sample(dsc_model *m, int64_t n, const int32_t *row_of, int64_t n_valid, const int32_t *holes, int64_t n_holes,
               const smp_params *params, const uint64_t *rng, int32_t *tokens, float *logprob, int top_k,
               int32_t *top_ids, float *top_lp);
int dsc_logits_row(dsc_model *m, int64_t row, float *out);

#endif

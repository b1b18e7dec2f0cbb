/* student/gpu_plan.h — the host-side plan of the GPU trainer (student/gpu_train.h): where every
 * parameter, gradient and activation lives on the device, and how much memory that takes.
 * Plain C, no CUDA: the plan is tested on the CPU (tests/unit/test_gpu_train_plan.c).
 *
 * Parameters. The GPU keeps the model in its own flat order, so that the fused GEMMs of
 * bench/lab_layer.c read one matrix: per layer q|k|v weights back to back ([(Hq+2·Hkv)·hd, D]),
 * their biases likewise, gate|up ([2F, D]) and their biases; every group (and every other
 * tensor) starts at a multiple of 16 elements. The same offsets index the bf16 weights, the
 * f32 gradients, the f32 master weights and the AdamW moments (student/zero.h's sharding
 * applies to this flat order: zr_layout_init(n)). off[i] is the GPU offset of the model's
 * tensor i (student/model.h order); gp_to_gpu / gp_from_gpu permute a whole flat f32 buffer
 * between the two orders (the checkpoint is always written in the CPU trainer's format).
 *
 * Qwen3 (qk_norm): q_norm and k_norm ([hd] each) follow the q|k|v biases in each layer.
 *
 * Activations: byte offsets into one device arena, each 256-byte aligned. x[l], l = 0..L, the
 * residual stream entering layer l (x[L]: the final norm's input) — always kept. The set
 * each layer's backward reads (normed input, fused qkv, attention output and lse, mid
 * residual, its norm, gate|up, SwiGLU output, two rstd; Qwen3: q and k before their per-head
 * norm and its rstd) is kept for every layer, or with
 * checkpointing only one set exists and each layer's forward is recomputed from x[l] in its
 * backward. Then the transients (o and down outputs, the final hidden, the gradients flowing
 * back), kernel scratch (sizes given by the caller: they come from CUDA functions) and the
 * batch (tokens, doc_start, pos, target, rows with a target, embedding-backward order and
 * segments: int32, contiguous so one copy uploads them), inv_freq, per-micro-batch losses.
 *
 * gp_plan_init returns RT_EUNSUPPORTED for shapes the kernels do not take (hd ∉ {64, 128},
 * D or F not a multiple of 8, D > 16384, Hq not a multiple of Hkv, partial bias groups, no
 * layers), RT_ENOMEM. gp_plan_free releases the arrays (a zeroed plan is fine).
 */
#ifndef RT_STUDENT_GPU_PLAN_H
#define RT_STUDENT_GPU_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/model_config.h"
#include "student/model.h"
#include "student/zero.h"

#define GP_ALIGN 256   /* bytes, every activation buffer */
enum { GP_CKPT_NONE = 0, GP_CKPT_LAYERS = 1, GP_CKPT_HOST = 2 };   /* gp_plan_init's ckpt */
#define GP_X_SLOTS 3   /* GP_CKPT_HOST: device slots of the layer inputs */

typedef struct {   /* GPU flat offsets (elements); −1 when absent */
    int64_t attn_norm, wqkv, bqkv, wo, bo, mlp_norm, wgu, bgu, wd, bd;
    int64_t qn, kn;           /* qwen3: q_norm, k_norm [hd]; −1 otherwise */
} gp_layer_off;

typedef struct {   /* byte offsets into the activation arena */
    size_t xn1, qkv, att, lse, rstd1, mid, xn2, rstd2, gu, act;
    size_t qkr, rqk;          /* qk_norm: q then k before their per-head norm, bf16 [T·Hq, hd] then
                               * [T·Hkv, hd]; the norm's rstd f32 [T·(Hq + Hkv)] (same order) */
} gp_layer_acts;

typedef struct {   /* scratch the kernels ask for (bytes) */
    size_t norm_ws, attn_ws, sumsq_ws;
} gp_ws_sizes;

typedef struct {
    int64_t D, F, L, V, Hq, Hkv, hd, W;   /* W = (Hq + 2·Hkv)·hd, the fused qkv width */
    bool qk_norm;             /* qwen3: q and k of each head RMS-normalized (q_norm, k_norm) before RoPE */
    /* parameters */
    int64_t n;                /* GPU flat length, alignment gaps included */
    size_t n_tensors;
    int64_t *off;             /* [n_tensors] */
    int64_t embed, norm_f, lm_head;   /* lm_head == embed when tied */
    gp_layer_off *layers;     /* [L]; NULL in a plan from a config */
    /* units (ZeRO-2/3 buckets and gathers): E = [0, e_len) the embedding, layer l =
     * [e_len + l·layer_len, +layer_len), H = [n − h_len, n) the final norm and untied head */
    int64_t e_len, layer_len, h_len;
    bool tied;
    /* activations */
    int64_t T, ce_chunk;
    bool ckpt;
    bool x_host;              /* the layer inputs live in host memory; x[l] is slot l % GP_X_SLOTS */
    size_t *x;                /* [L + 1] */
    gp_layer_acts *keep;      /* [ckpt ? 1 : L] */
    size_t tmp, out, hf, rstd_f, dres, dxn, dqkv, datt, dgu, dact;
    size_t qkn, dqk;          /* qk_norm: bf16 [T·(Hq + Hkv)·hd] each, the per-head norm's output (forward) or
                               * its output's gradient (backward), and its input's gradient; 0 bytes otherwise */
    size_t norm_ws, attn_ws, sumsq_ws;
    size_t batch;             /* int32 [7T + 1]: tokens, doc_start, pos, target, rows, order at k·T; seg at 6T */
    size_t inv_freq, loss, sumsq;   /* f32 [hd/2]; f64 [loss_slots]; f64 */
    int64_t loss_slots;
    size_t x_bytes, keep_bytes, act_bytes;   /* the layer inputs; one kept set; the whole arena */
} gp_plan;

/* ckpt: GP_CKPT_NONE (every layer's set kept), GP_CKPT_LAYERS (one set, recomputed), or
 * GP_CKPT_HOST (as LAYERS, and the layer inputs x[0..L) kept in host memory: on the device
 * GP_X_SLOTS buffers, x[l] in slot l % GP_X_SLOTS, streamed out in the forward and back in
 * the backward by the trainer). */
int gp_plan_init(gp_plan *p, const sm_model *m, int64_t T, int ckpt, int64_t ce_chunk, int64_t loss_slots,
                 const gp_ws_sizes *ws);
/* The same plan from a config alone (nothing the size of the model is allocated): dims,
 * n, units and the arena; no per-tensor offsets (off, layers NULL). For --plan. ws NULL:
 * gp_ws_estimate's sizes (the sum of squares over the CPU layout's length, as the trainer). */
int gp_plan_init_config(gp_plan *p, const mc_config *c, int64_t T, int ckpt, int64_t ce_chunk, int64_t loss_slots,
                        const gp_ws_sizes *ws);
void gp_plan_free(gp_plan *p);
/* The kept set layer l reads (set 0 for every layer with checkpointing). */
const gp_layer_acts *gp_acts_of(const gp_plan *p, int64_t l);
/* Rows per cross-entropy chunk for T tokens and vocabulary V: ce_chunk when given (capped at
 * T), else as many as fit 1 GiB of f32 logits (1766 rows of Qwen's 151,936: GEMMs large
 * enough for the GPU; the CPU trainer's default is 64 MiB), at least 1. */
int64_t gp_ce_chunk(int64_t ce_chunk, int64_t T, int64_t V);

/* cpu: the model's flat layout [m->n_params ≥]; gpu: [p->n ≥] (gaps left untouched). */
void gp_to_gpu(const gp_plan *p, const sm_model *m, const float *cpu, float *gpu);
void gp_from_gpu(const gp_plan *p, const sm_model *m, const float *gpu, float *cpu);
/* part [len ≥]: GPU flat elements [lo, lo + len) of gp_to_gpu's result (gaps untouched). */
void gp_to_gpu_range(const gp_plan *p, const sm_model *m, const float *cpu, float *part, int64_t lo, int64_t len);

/* Device memory of one rank, in bytes, by component (what gt_create allocates, and what
 * `retort train --plan` prints). z: the ZeRO layout over p->n (level 0 when one rank).
 *   weights    bf16 parameters: 2·padded; ZeRO-3: the rank's shard, 2·S
 *   master     f32 master weights of the state the rank keeps (zr_state_len): 4·state; 0 offloaded
 *   moments    AdamW m and v: 8·state; 0 offloaded
 *   grads      f32 gradient: the whole 4·padded (levels 0, 1); ZeRO-2/3: the rank's reduced shard
 *              4·S, or 0 offloaded (the shard then lives in host memory with the optimizer)
 *   buckets    ZeRO-2/3: the backward's per-unit f32 buckets, reduced as soon as a unit is done:
 *              4·(A + B), A = gp_bucket_a (the embedding; untied: or the head), B = gp_bucket_l
 *              (a layer; tied: or the final norm)
 *   gathered   ZeRO-3: bf16 gather buffers, two of a layer (the one computed, the next prefetched)
 *              and one of the embedding / head: 2·(2B + A)
 *   acts       the arena's activations (gp_plan's x, kept sets, transients)
 *   workspace  the arena's kernel scratch, batch, inv_freq, losses
 *   ce         the cross-entropy workspace of one chunk (gp_ce_ws_estimate)
 *   host       pinned host bytes: offload, master and moments (12·state), ZeRO-2/3 the
 *              gradient shard (4·S), and two staging chunks of gp_offload_chunk elements
 *              (levels 0, 1: the gradient coming down, f32, and the bf16 going up; else bf16);
 *              GP_CKPT_HOST, the layer inputs x[0..L) (2·L·T·D)
 *   kd         logit distillation only (gp_mem_add_kd): one micro-batch's teacher top-k and the
 *              per-micro-batch sums, gp_kd_bytes
 * Not counted: the CUDA context, cuBLAS and NCCL workspaces (≈ 0.5–1 GiB). */
typedef struct {
    size_t weights, master, moments, grads, buckets, gathered, acts, workspace, ce, kd, total, host;
} gp_mem;
void gp_rank_memory(const gp_plan *p, const zr_layout *z, bool offload, size_t ce_ws, gp_mem *out);
/* The KD buffer of T tokens per micro-batch, K teacher entries per token, A micro-batches a step:
 * ids and logprobs (8·T·K), counts (T), the sums (3 doubles per micro-batch). */
size_t gp_kd_bytes(int64_t T, int64_t K, int64_t A);
void gp_mem_add_kd(gp_mem *m, size_t kd_bytes);
int64_t gp_bucket_a(const gp_plan *p);
/* offload: elements per staged chunk of a state of `state` elements: ⅛ of it, rounded up to
 * 16, within [4096, 2^22] (16 MiB of f32) */
int64_t gp_offload_chunk(int64_t state);
int64_t gp_bucket_l(const gp_plan *p);
/* The cross-entropy workspace's bytes as kernels/cuda/loss.cu allocates it (cuBLASLt
 * workspaces aside). */
size_t gp_ce_ws_estimate(int64_t chunk, int64_t V, int64_t D);
/* The kernels' scratch as kernels/cuda/{norm,attention,optim}.cu size it, for a plan made
 * without CUDA (the trainer asks the CUDA functions themselves). n: the sum of squares' length.
 * (Qwen3: gp_plan_init_config widens norm_ws to the per-head norms' backward, T·Hq rows of hd,
 * when that is larger; the trainer does the same with the CUDA function's sizes.) */
gp_ws_sizes gp_ws_estimate(int64_t T, int64_t D, int64_t Hq, int64_t n);

#endif

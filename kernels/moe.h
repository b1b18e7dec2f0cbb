/* kernels/moe.h — DeepSeek-V3 mixture of experts: the sigmoid group-limited router, the
 * routed experts' combine, and the dense SwiGLU MLP (dense layers and shared experts).
 *
 * moe_route(): logits [n, E] (x·W_gateᵀ, f32) → for each token top_k expert ids idx [n, top_k]
 * and weights w [n, top_k], as transformers' DeepseekV3TopkRouter: s = σ(logit); selection on
 * s + bias (e_score_correction_bias, NULL = 0) only: the E experts form n_group equal groups,
 * a group scores the sum of its two best, the topk_group best groups stay, and the top_k
 * best experts among them are chosen. Weights are the plain s of the chosen experts,
 * divided by their sum (+1e-20) when norm_topk_prob, times routed_scaling_factor.
 * Experts are listed best first; ties go to the lower index.
 * Errors: RT_EINVAL when the router shape is impossible (E not divisible by n_group, fewer
 * than two experts per group, topk_group > n_group, top_k > experts in the kept groups).
 *
 * moe_experts_fwd(): out[t] += Σ_j w[t,j] · expert_{idx[t,j]}(x[t]) for x, out [n, dim];
 * expert e is the SwiGLU MLP down(silu(gate·x) ⊙ up·x) with w1 = gate_proj, w3 = up_proj
 * [inter, dim] and w2 = down_proj [dim, inter]. Experts run one after another, each over the
 * tokens that chose it. Errors: RT_ENOMEM (scratch), RT_EINVAL (bad id).
 *
 * moe_mlp_fwd(): out [n, dim] = down(silu(gate·x) ⊙ up·x) (overwrites), the same MLP for all
 * tokens. scratch: NULL (allocated here) or n·3·inter floats. Errors: RT_ENOMEM.
 *
 * moe_slab_pack(): the capacity-padded dispatch of an expert-parallel MoE over P ranks (expert e
 *   on rank e mod P, local expert e / P), for all-to-alls of fixed size. idx [n, K] holds the
 *   expert ids of n tokens (ids outside [0, n_experts) route nowhere). Rank q's slab is rows
 *   [q·cap, (q+1)·cap): the slots t·K + k routed to q in (t, k) order, then padding. slot [P·cap]:
 *   each row's slot as slot0 + t·K + k (padding: 0, a row any gather may read); lexp [P·cap]: its local expert
 *   (padding: `none`, which the receiver's permutation leaves past its experts); comb [n·K]: each
 *   slot's row in the slabs, q·cap + j (−1: routed nowhere) — where its expert's output comes
 *   back. cap ≥ n·min(K, ceil(n_experts / P)) (the most one rank can be sent: a token's K experts
 *   are distinct), else RT_EINVAL; P ≤ 1024.
 *
 * Linear layers and the SwiGLU gate are kernels/matmul.h's mm_linear_fwd and kernels/act.h's
 * swiglu_fwd, so the pool is the only parallelism (OpenBLAS single-threaded, see matmul.h).
 */
#ifndef RT_KERNELS_MOE_H
#define RT_KERNELS_MOE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/threadpool.h"

typedef struct {
    int64_t n_experts, n_group, topk_group, top_k;
    bool norm_topk_prob;
    float routed_scaling_factor;
} moe_router_cfg;

typedef struct {
    const float *w1, *w3;  /* gate_proj, up_proj [inter, dim] */
    const float *w2;       /* down_proj [dim, inter] */
} moe_expert;

int moe_router_check(const moe_router_cfg *c);
int moe_route(const moe_router_cfg *c, const float *logits, const float *bias, int64_t n, int32_t *idx, float *w);

int moe_experts_fwd(const moe_expert *experts, int64_t n_experts, int64_t dim, int64_t inter, const float *x,
                    int64_t n, const int32_t *idx, const float *w, int64_t top_k, float *out, tp_pool *pool);

int moe_mlp_fwd(const moe_expert *mlp, int64_t dim, int64_t inter, const float *x, int64_t n, float *out,
                float *scratch, tp_pool *pool);

int moe_slab_pack(const int32_t *idx, int64_t n, int64_t K, int64_t n_experts, int64_t P, int64_t cap, int32_t none,
                  int32_t slot0, int32_t *slot, int32_t *lexp, int32_t *comb);
int moe_slab_check(int64_t n, int64_t K, int64_t n_experts, int64_t P, int64_t cap);   /* the shape rule above */

#ifdef RT_HAVE_CUDA
/* CUDA (kernels/cuda/ds_moe.cu): device pointers, asynchronous on `stream` (a cudaStream_t,
 * NULL = default); 0, RT_EINVAL (shape or limits) or RT_EINTERNAL (the CUDA error).
 * moe_route_cuda(): moe_route on the GPU, one block per token (≤ 1024 experts, ≤ 64 groups,
 *   top_k ≤ 32); rows of idx/w have `stride` ≥ top_k entries, those past top_k untouched (a
 *   shared expert can sit in a fixed extra slot). f32 math as moe_route; expf may differ from
 *   the CPU's in the last bit, so weights agree to a few ulp and a choice can differ only
 *   between experts whose scores are that close.
 * moe_permute_cuda(): idx [n_slots] expert ids (0 … E−1; others are skipped, row −1) →
 *   offsets [E+1] (int32, exclusive prefix of the counts), row_of_slot [n_slots] (the slot's
 *   row in expert order) and slot_of_row [offsets[E]]; within an expert rows keep slot order,
 *   as moe_experts_fwd. One block; E ≤ 4096.
 * moe_gather_rows_cuda(): dst row r = src row (slot_of_row[r] / slots_per_token), rows of
 *   row_bytes bytes (fp8 activations, their scales, bf16 rows alike).
 * moe_combine_cuda(): out [n, dim] bf16 = base (NULL: 0) + Σ_k w[t,k] · y[row_of_slot[t·slots+k]]
 *   in f32, slots in order, one rounding; y [rows, dim] bf16 in expert order; dim even;
 *   base may be out (the residual stream updated in place).
 * moe_slab_pack_cuda(): moe_slab_pack on the GPU (one thread per destination rank, the same
 *   order): reads only device memory, so a graph can capture it; the shape rule is checked on
 *   the host. */
#ifdef __cplusplus
extern "C" {
#endif
int moe_route_cuda(const moe_router_cfg *c, const float *logits, const float *bias, int64_t n, int64_t stride,
                   int32_t *idx, float *w, void *stream);
int moe_permute_cuda(const int32_t *idx, int64_t n_slots, int64_t n_experts, int32_t *offsets, int32_t *row_of_slot,
                     int32_t *slot_of_row, void *stream);
int moe_gather_rows_cuda(const void *src, int64_t row_bytes, const int32_t *slot_of_row, int64_t n_rows,
                         int64_t slots_per_token, void *dst, void *stream);
int moe_combine_cuda(const uint16_t *y, const int32_t *row_of_slot, const float *w, int64_t n, int64_t slots,
                     int64_t dim, const uint16_t *base, uint16_t *out, void *stream);
int moe_slab_pack_cuda(const int32_t *idx, int64_t n, int64_t K, int64_t n_experts, int64_t P, int64_t cap,
                       int32_t none, int32_t slot0, int32_t *slot, int32_t *lexp, int32_t *comb, void *stream);
#ifdef __cplusplus
}
#endif
#endif

#endif

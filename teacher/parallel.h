/* teacher/parallel.h — tensor-parallel attention and expert-parallel MoE for the DeepSeek-V3
 * teacher (teacher/deepseek.h) over core/comm: one rank per device, started by mpirun/srun.
 *
 * Dependency order: teacher/deepseek_int.h (weights, linear layers, the experts' MLP) ← this
 * (the layout and the collective steps) ← teacher/deepseek.c (loading a rank's part, the forward
 * that calls the steps below). This file calls nothing of deepseek.c.
 *
 * Layout of rank r of P (ds_layout_make; contiguous ranges split as evenly as possible, the
 * first ranks taking the extra one, so P need not divide anything, but P ≤ attention heads):
 *   attention   heads [head0, head0 + n_heads): the rows of q_b_proj (or q_proj) and kv_b_proj
 *               of those heads and the matching input columns of o_proj. The latent
 *               down-projections q_a_proj, kv_a_proj_with_mqa and their norms are replicated,
 *               and so is the latent KV cache (all heads read the same latent rows).
 *               o_proj gives partial sums (rank 0 adds the bias), summed with comm_allreduce.
 *   dense MLP   (first_k_dense_replace layers) intermediate columns [inter0, inter0 + n_inter):
 *               rows of gate_proj/up_proj, columns of down_proj; partial sums allreduced.
 *   routed      expert e lives on rank e mod P (round-robin: the router keeps topk_group
 *   experts     contiguous groups, and round-robin spreads each group over all ranks, where
 *               contiguous ranges would send a whole group's load to one rank).
 *   router,     replicated: every rank routes every token on bit-identical inputs (collectives
 *   shared      are rank-ordered and deterministic, so all ranks hold the same hidden state)
 *   experts     and so makes the same choices. Shared experts run on the tokens a rank owns.
 *   vocabulary  rows [vocab0, vocab0 + n_vocab) of the embedding and the LM head (the MTP
 *               layer's embedding and head are replicated). The embedding lookup fills owned
 *               rows, zeros elsewhere, and an allreduce sums them (exact: x + 0 = x); logits
 *               are computed per slice and allgathered in vocab_block padded blocks.
 *
 * The MoE block (ds_par_moe_fwd): token t is owned by rank t / ceil(n/P). Each owner sends the
 * hidden row of every (t, k) it owns to the rank of expert idx[t,k] (comm_alltoallv, in (t, k)
 * order; receivers know the order from the replicated routing, so no metadata travels), each
 * rank runs its experts over the rows it received (ascending expert, then token, the order
 * of moe_experts_fwd), the outputs go back with a second alltoallv, and the owner combines
 * them: shared(h_t), then + w[t,k]·y in ascending expert id — the serial order. The owned
 * slices are then allgathered. (With tensor-parallel attention every rank already holds h,
 * so the dispatch is redundant today; it is what lets the same block take token-sharded
 * input, as data-parallel attention would give.)
 *
 * Numbers: one rank gives exactly the bits of ds_forward (the collectives are copies and
 * every expert sees the same rows in the same order). With P > 1, o_proj and the dense MLP
 * sum P partial sums (each over 1/P of the terms) in rank order instead of one running sum:
 * the same terms in another f32 association; and the shared experts run over each owner's
 * token slice, a GEMM of other shape (OpenBLAS may round another way, gemv for one row).
 * Logits move by a few ulp of the summed magnitudes per layer (measured ~2e-6 on the test
 * model; tested bound max |dlogit| < 1e-4, the f32-vs-transformers bound), so only a router
 * or argmax whose top two choices tie to within that could flip.
 *
 * ds_load_parallel() (declared in teacher/deepseek.h, which loads; this file only lays out and
 * communicates) reads config.json, makes this rank's layout and loads only its part:
 * tensors and row/column slices are copied from the mmapped safetensors one slice at a time
 * — FP8 projections stay e4m3 with the block scales covering the slice (a head slice may
 * start inside a 128×128 block), the rest is converted to f32 — so other ranks' experts,
 * heads and vocabulary rows are never read (ds_load_info: bytes read) nor held
 * (ds_resident_bytes: a rank's share). The model borrows comm (and opts->pool), which
 * must outlive it; ds_forward, ds_forward_paged, ds_mtp_forward and the latent cache work on
 * it unchanged, and every rank must call them with the same arguments in the same order and
 * use a pool of the same size (replicated steps such as the router must round alike on all
 * ranks: the same binary and thread count do). Every rank then holds the same logits, bit for
 * bit, so samplers and schedulers driven by them stay in lockstep without messages.
 * Errors: ds_load's, RT_EINVAL (more ranks than attention heads), comm's (RT_EINTERNAL).
 */
#ifndef RT_TEACHER_PARALLEL_H
#define RT_TEACHER_PARALLEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/comm.h"
#include "core/model_config.h"
#include "core/threadpool.h"
#include "teacher/deepseek_int.h"

typedef struct ds_layout {
    int rank, size;
    int64_t head0, n_heads;      /* attention heads held */
    int64_t inter0, n_inter;     /* dense-MLP intermediate columns held */
    int64_t vocab0, n_vocab;     /* embedding / LM-head rows held */
    int64_t vocab_block;         /* ceil(V / size): the allgather block of the logits */
    int64_t n_experts;           /* routed experts per MoE layer (all ranks) */
} ds_layout;

int ds_layout_make(const mc_config *c, int rank, int size, ds_layout *out);
int ds_layout_expert_rank(const ds_layout *lo, int64_t expert);   /* expert mod size */
int64_t ds_layout_local_experts(const ds_layout *lo);             /* experts this rank holds */

/* ---- the collective steps, called by teacher/deepseek.c's forward on a parallel model ---- */

/* x [n] summed over the ranks, in place. */
int ds_par_allreduce(rt_comm *comm, float *x, size_t n);

/* x [n, dim] = embed rows of tokens; embed holds rows [vocab0, vocab0 + n_vocab). */
int ds_par_embed(rt_comm *comm, const ds_layout *lo, const float *embed, int64_t dim, const int32_t *tokens,
                 int64_t n, float *x);

/* logits [n, V] = h [n, dim] · headᵀ, head holding rows [vocab0, vocab0 + n_vocab). */
int ds_par_logits(rt_comm *comm, const ds_layout *lo, const float *head, int64_t dim, int64_t vocab,
                  const float *h, int64_t n, float *logits, tp_pool *pool);

/* out [n, dim] = shared(h) + Σ_k w[t,k] · expert_{idx[t,k]}(h[t]) (overwrites), as described
 * above. experts [n_experts] (teacher/deepseek_int.h: FP8 or f32 weights): the held ones
 * are present, the others absent (rows 0); shared: NULL when shared_inter is 0. idx/w
 * [n, top_k] are the same on every rank. */
int ds_par_moe_fwd(rt_comm *comm, const ds_layout *lo, const ds_mlp *experts, int64_t dim, int64_t inter,
                   const ds_mlp *shared, int64_t shared_inter, const float *h, int64_t n, const int32_t *idx,
                   const float *w, int64_t top_k, float *out, tp_pool *pool);

#endif

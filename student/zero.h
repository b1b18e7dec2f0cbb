/* student/zero.h — data parallelism over core/comm: how the flat parameter buffer is split
 * between ranks (ZeRO-1 / ZeRO-2 / ZeRO-3), and the collectives of one optimizer step.
 *
 * Layout. student/model.h keeps every parameter in one flat f32 buffer (tensors in HF
 * order, each 64-byte aligned); its gradients in a second buffer of the same layout. With P
 * ranks both are padded (sm_pad_flat) to P·S elements, S = ⌈n/P⌉ rounded up to 16 (64
 * bytes), the tail zero; rank r owns [r·S, (r+1)·S) — cut across tensor boundaries, so the
 * optimizer walks, per tensor, the intersection of the tensor with the owned range (AdamW
 * is elementwise: the same update as on the whole tensor). The owned part of the last
 * rank(s) may be short or empty; the zero tail is never read by the optimizer.
 *
 *   level 0  replicated: the gradient is allreduced, every rank updates every parameter;
 *            AdamW moments [n] on every rank.
 *   level 1  ZeRO-1: the gradient is allreduced (every rank has all of it), each rank keeps
 *            the AdamW moments of its part only ([S]) and updates only that part of the
 *            parameters (f32, which are the master weights on the CPU path); then the
 *            parameters are all-gathered in place.
 *   level 2  ZeRO-2: the gradient is reduce-scattered in place — rank r's part of the reduced
 *            gradient lands at grads + r·S and only that part is read; otherwise as level 1.
 *            (On the CPU path the backward still writes a full local gradient buffer, so
 *            what level 2 saves is the allreduce's all-gather half and, on the GPU path,
 *            where the backward reduce-scatters per layer bucket, the full reduced buffer.)
 *   level 3  ZeRO-3: as level 2, but no rank holds the whole parameters or gradients: each
 *            keeps only its part of the parameters (own [S], flat element r·S + i at own[i]),
 *            of the reduced gradient and of the moments. A unit of the model (a contiguous
 *            flat range [lo, hi): a layer, the embedding, the final norm, the LM head — see
 *            student/model.h) is all-gathered from the ranks' parts right before its forward
 *            and again before its backward (zr_range_gather), and its local gradient is
 *            reduce-scattered as soon as its backward is done, each rank adding its part of the
 *            sum to its own reduced gradient (zr_range_reduce_scatter_add). Parts of a unit
 *            have different lengths on different ranks (the cut ignores unit boundaries), so
 *            both go through comm_alltoallv; the sum is formed here in rank order, element by
 *            element exactly as comm_reduce_scatter forms it, so with one micro-batch a step
 *            gives the same bits as level 2 at the same rank count.
 *
 * The global gradient norm is √(Σ over ranks of the Σ g² of each rank's own part, in f64),
 * the rank sums allreduced (levels 1, 2, 3) — level 0 sums the whole reduced gradient locally.
 *
 * Reductions go through comm's rank-ordered host backends, so a run is deterministic for a
 * given rank count; against 1 rank it differs only by the order of f32 additions.
 * Allocation: only the per-rank count arrays of the level-3 calls; errors are comm's
 * (RT_EINTERNAL, RT_ENOMEM).
 */
#ifndef RT_STUDENT_ZERO_H
#define RT_STUDENT_ZERO_H

#include <stdint.h>

#include "core/comm.h"
#include "core/threadpool.h"

typedef struct {
    int level;            /* 0, 1, 2 or 3 */
    int rank, ranks;
    int64_t n;            /* parameters (model n_params) */
    int64_t shard;        /* S: elements per rank's part; a multiple of 16 */
    int64_t padded;       /* ranks·S ≥ n: length of the params / grads buffers */
    int64_t lo, hi;       /* the range this rank updates: level 0 [0, n); else [r·S, min((r+1)·S, n)) */
} zr_layout;

void zr_layout_init(zr_layout *z, int64_t n, int rank, int ranks, int level);
/* elements of AdamW state this rank keeps: n (level 0) or S */
int64_t zr_state_len(const zr_layout *z);

/* Sum the ranks' gradients: afterwards grads[lo, hi) holds the global sum (levels 0, 1: all
 * of grads). grads: [padded]. c NULL or one rank, or level 3 (reduced per unit in the
 * backward): nothing to do. */
int zr_reduce_grads(const zr_layout *z, rt_comm *c, float *grads);
/* Σ g² over [lo, hi) of every rank, in f64 (allreduced when sharded). grads: [padded]; at
 * level 3 the own part [S] (flat lo at grads[0]). */
int zr_grad_sumsq(const zr_layout *z, rt_comm *c, const float *grads, tp_pool *pool, double *out);
/* After each rank updated params[lo, hi): every rank gets every part (levels 1, 2; level 3
 * keeps parts only: nothing to do). */
int zr_gather_params(const zr_layout *z, rt_comm *c, float *params);
/* Rank `root` receives the whole state whose part [S] each rank holds in `own` (levels 1,
 * 2, 3; level 0 copies own): full is [padded], significant at root only. */
int zr_gather_state(const zr_layout *z, rt_comm *c, const float *own, float *full, int root);

/* Level 3 (the layout's sharding, any level > 0). own: this rank's part [S]. The part of a
 * flat range [lo, hi) that rank r holds is [lo, hi) ∩ [r·S, (r+1)·S). Collective: every rank
 * calls with the same lo, hi (and root). */
/* out [hi − lo] ← the flat range, from every rank's part: on every rank (root < 0), or on
 * rank `root` only (out may be NULL elsewhere). */
int zr_range_gather(const zr_layout *z, rt_comm *c, const float *own, int64_t lo, int64_t hi, float *out, int root);
/* unit [hi − lo]: this rank's local values of the flat range. The ranks' values are summed in
 * rank order and this rank's part of the sum is added into own. stage: scratch of stage_len
 * ≥ ranks floats (not read before, clobbered); a smaller one only means more rounds. */
int zr_range_reduce_scatter_add(const zr_layout *z, rt_comm *c, const float *unit, int64_t lo, int64_t hi, float *own,
                                float *stage, int64_t stage_len);

#endif

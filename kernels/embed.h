/* kernels/embed.h — token embedding lookup and its gradient.
 *
 * table/dtable [V, D], ids [M] (each < V, checked by the caller), out/dout [M, D].
 * embed_bwd adds each row of dout into its token's row of dtable; the work is split over
 * column blocks, so rows of repeated tokens are summed in token order by one thread and
 * the result does not depend on the pool size. No allocation, no errors.
 */
#ifndef RT_KERNELS_EMBED_H
#define RT_KERNELS_EMBED_H

#include <stddef.h>
#include <stdint.h>

#include "core/threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

void embed_fwd(float *out, const float *table, const int32_t *ids, int64_t M, int64_t D, tp_pool *pool);
void embed_bwd(float *dtable, const float *dout, const int32_t *ids, int64_t M, int64_t D, tp_pool *pool);
/* A vocabulary-parallel lookup: table [nv, D] holds rows [v0, v0 + nv) of the whole table; out
 * row i = that row of ids[i] when v0 ≤ ids[i] < v0 + nv, else zeros (the ranks' outputs summed
 * give embed_fwd, exactly: one term is not zero). */
void embed_fwd_rows(float *out, const float *table, const int32_t *ids, int64_t M, int64_t D, int64_t v0, int64_t nv);

/* Deterministic backward plan (host, CPU): tokens grouped by id. order [M] lists token
 * indices sorted by id (stable: ascending token index within an id); seg [n_seg + 1] are
 * the offsets into order where each distinct id begins (seg[n_seg] = M); seg needs room for
 * M + 1 entries. Returns n_seg, or −1 when its count array (max id + 2 ints) cannot be
 * allocated. Used by embed_bwd_cuda. */
int64_t embed_bwd_plan(const int32_t *ids, int64_t M, int32_t *order, int32_t *seg);
/* ---- CUDA twins (kernels/cuda/embed.cu; tiling and tolerances in docs/kernels.md) ----
 * Device pointers; bf16 values are uint16_t bit patterns (rounded to nearest even), math in
 * f32. Asynchronous on `stream` (a cudaStream_t; NULL = default stream). Return 0, or
 * RT_EINTERNAL with the failing CUDA call in the message (RT_EINVAL for a shape not handled).
 * Results are deterministic (no floating-point atomics). */
#ifdef RT_HAVE_CUDA
/* out[M,D] = table[ids] (bf16). D % 8 == 0. */
int embed_fwd_cuda(uint16_t *out, const uint16_t *table, const int32_t *ids, int64_t M, int64_t D, void *stream);
/* embed_fwd_rows' twin (bf16). D % 8 == 0. */
int embed_fwd_rows_cuda(uint16_t *out, const uint16_t *table, const int32_t *ids, int64_t M, int64_t D, int64_t v0,
                        int64_t nv, void *stream);
/* dtable[V,D] (f32) += Σ dout rows of each id, summed in token order. ids, order, seg are
 * device copies of the batch ids and of embed_bwd_plan's output (n_seg distinct ids). */
int embed_bwd_cuda(float *dtable, const uint16_t *dout, const int32_t *ids, const int32_t *order, const int32_t *seg,
                   int64_t n_seg, int64_t M, int64_t D, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif

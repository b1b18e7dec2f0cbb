/* kernels/attention.h — causal grouped-query attention over packed documents.
 *
 * Shapes (row-major, f32): q, o, dq [T, Hq, hd]; k, v, dk, dv [T, Hkv, hd]; lse [Hq, T].
 * T is every token of a batch laid end to end. doc_start[t] is the index of the first
 * token of t's document (doc_start[t] ≤ t, and tokens of one document are contiguous):
 * query t attends to keys s with doc_start[t] ≤ s ≤ t, so attention never crosses a
 * document (or sequence) boundary. Query head h reads kv head h / (Hq / Hkv), as in
 * transformers' repeat_kv. scale is usually 1/sqrt(hd).
 *
 * attn_fwd writes o and the log-sum-exp of each query's scaled scores (lse, for the
 * backward). attn_bwd recomputes the probabilities from q, k and lse and overwrites dq,
 * dk and dv. Work is split over (head, query) for the forward and dq, and over (kv head,
 * key) for dk and dv, so no two threads write one element and the result does not depend
 * on the pool size. Scores and accumulators are f32; head_dim ≤ ATTN_MAX_HEAD_DIM.
 * No allocation, no errors.
 */
#ifndef RT_KERNELS_ATTENTION_H
#define RT_KERNELS_ATTENTION_H

#include <stdint.h>

#include "core/threadpool.h"

#define ATTN_MAX_HEAD_DIM 512

void attn_fwd(float *o, float *lse, const float *q, const float *k, const float *v, const int32_t *doc_start,
              int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, float scale, tp_pool *pool);

/* scratch: Hq·T floats the backward may overwrite (each query's dout·o). */
void attn_bwd(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *o, const float *lse,
              const float *q, const float *k, const float *v, const int32_t *doc_start, int64_t T, int64_t Hq,
              int64_t Hkv, int64_t hd, float scale, tp_pool *pool);

#endif

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
 * dk and dv. The CPU path works on blocks of ATTN_BLOCK queries (forward, dq) or keys
 * (dk, dv) against the keys (queries) of their documents, with the score and probability
 * blocks formed by single-threaded sgemm calls; blocks are split over the pool. Every
 * output element is computed by one thread in a fixed order, so the result does not depend
 * on the pool size. Masked scores never enter a sum (their probability is exactly 0).
 *
 * ws: attn_workspace_floats(T, Hq, tp_size(pool)) floats of scratch, owned by the caller.
 * No allocation, no errors.
 */
#ifndef RT_KERNELS_ATTENTION_H
#define RT_KERNELS_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "core/threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ATTN_BLOCK 64

size_t attn_workspace_floats(int64_t T, int64_t Hq, int n_threads);

void attn_fwd(float *o, float *lse, const float *q, const float *k, const float *v, const int32_t *doc_start,
              int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, float scale, float *ws, tp_pool *pool);

void attn_bwd(float *dq, float *dk, float *dv, const float *dout, const float *o, const float *lse, const float *q,
              const float *k, const float *v, const int32_t *doc_start, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd,
              float scale, float *ws, tp_pool *pool);

/* Inference: n new queries against a paged K/V cache (teacher/kvcache.h).
 * q, o [n, Hq, hd]. The cache is a sequence of blocks of block_size positions, each row
 * Hkv·hd floats; position s of query i's sequence lives in block b = tables[i][s / block_size]
 * at k + b·block_stride + (s % block_size)·Hkv·hd (V at the same offset from v). Query i
 * attends to positions [0, ctx[i]) (causal: ctx[i] = its position + 1; ctx[i] ≥ 1).
 * (query, head) pairs are split over the pool; each softmax is formed by one thread, in
 * position order, so the result does not depend on the pool or on the other queries.
 * ws: attn_paged_workspace_floats(max ctx[i], tp_size(pool)) floats, owned by the caller. */
size_t attn_paged_workspace_floats(int64_t max_ctx, int n_threads);
void attn_paged_fwd(float *o, const float *q, int64_t n, int64_t Hq, int64_t Hkv, int64_t hd, float scale,
                    const float *k, const float *v, int64_t block_size, int64_t block_stride,
                    const int32_t *const *tables, const int32_t *ctx, float *ws, tp_pool *pool);

/* ---- CUDA twins (kernels/cuda/attention.cu; tiling and tolerances in docs/kernels.md) ----
 * Device pointers; bf16 values are uint16_t bit patterns (rounded to nearest even), math in
 * f32. Asynchronous on `stream` (a cudaStream_t; NULL = default stream). Return 0, or
 * RT_EINTERNAL with the failing CUDA call in the message (RT_EINVAL for a shape not handled).
 * Results are deterministic (no floating-point atomics). */
#ifdef RT_HAVE_CUDA
/* Flash attention (causal, GQA, packed documents; same layout and doc_start rule as
 * attn_fwd): q [T,Hq,hd], k/v [T,Hkv,hd], o [T,Hq,hd] bf16; lse [Hq,T] f32. hd ∈ {64, 128};
 * Hq % Hkv == 0. No T×T matrix exists: blocks of queries stream over blocks of keys with an
 * online softmax, scores and probabilities in registers, mma.sync bf16 tensor-core tiles. */
int attn_fwd_cuda(uint16_t *o, float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                  const int32_t *doc_start, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, float scale, void *stream);
/* The same with a layout: row strides (elements; 0 = dense) of q, k/v (inputs, so a fused QKV
 * GEMM output [T, (Hq+2·Hkv)·hd] is read in place: q = base, k = base + Hq·hd, v = k + Hkv·hd,
 * all with stride (Hq+2·Hkv)·hd), of dq and dk/dv (outputs of attn_bwd_cuda_ex, so they can land
 * in a fused dQKV buffer for one input-gradient and one weight-gradient GEMM), and the query
 * tile of the forward (0: ATTN_CUDA_BLOCK_Q; 64: 4 warps; 128: 8 warps sharing each K/V tile).
 * o, dout and lse stay dense. q/kv strides multiples of 8. NULL layout = all defaults. */
#define ATTN_CUDA_BLOCK_Q 64
typedef struct {
    int64_t ld_q, ld_kv, ld_dq, ld_dkv;
    int block_q;
} attn_cuda_layout;
int attn_fwd_cuda_ex(uint16_t *o, float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                     const int32_t *doc_start, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, float scale,
                     const attn_cuda_layout *layout, void *stream);
/* Backward: overwrites dq [T,Hq,hd], dk, dv [T,Hkv,hd] (bf16). Deterministic: one kernel forms
 * dk/dv per key block summing over the group's query heads in order, another forms dq per
 * query block; neither uses atomics. ws: attn_bwd_cuda_ws_bytes(T, Hq) bytes of device
 * scratch (Δ = rowsum(dO ⊙ O) per query and head), owned by the caller. */
size_t attn_bwd_cuda_ws_bytes(int64_t T, int64_t Hq);
int attn_bwd_cuda(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout, const uint16_t *o, const float *lse,
                  const uint16_t *q, const uint16_t *k, const uint16_t *v, const int32_t *doc_start, int64_t T,
                  int64_t Hq, int64_t Hkv, int64_t hd, float scale, void *ws, void *stream);
int attn_bwd_cuda_ex(uint16_t *dq, uint16_t *dk, uint16_t *dv, const uint16_t *dout, const uint16_t *o,
                     const float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v,
                     const int32_t *doc_start, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, float scale,
                     const attn_cuda_layout *layout, void *ws, void *stream);

/* Paged inference attention (kernels/cuda/paged_attention.cu), the twin of attn_paged_fwd on a
 * bf16 cache: n new queries q [n, Hq, hd] (rows ld_q ≥ Hq·hd elements apart, e.g. a fused QKV
 * GEMM output read in place) → o [n, Hq, hd] (dense). Position s of query i's sequence lives in
 * block b = tables[seq[i]·table_ld + s / block_size] at k + b·block_stride + (s % block_size)·
 * Hkv·hd (V at the same offset from v): the block tables of the batch's sequences are the rows
 * of one [n_seqs, table_ld] int32 array, and seq[i] names query i's row, so the queries of one
 * sequence (chunked prefill: a chunk continuing a cached prefix) share it. Query i attends to
 * positions [0, ctx[i]) (ctx[i] ≥ 1; causal: its position + 1); max_ctx (host) ≥ every ctx[i].
 * hd ∈ {64, 128}, Hq % Hkv == 0, k/v 16-byte aligned, block_stride % 8 == 0. f32 scores and
 * accumulators, online softmax over tiles of 64 positions; split-KV (a query's positions cut into
 * splits merged in a fixed order) when the launch has few blocks and long contexts: ws is
 * attn_paged_cuda_ws_bytes(n, Hq, Hkv, hd, max_ctx) bytes of device scratch (0: none needed,
 * ws may be NULL). Deterministic; a query's result depends on n and max_ctx only through the
 * split plan. */
size_t attn_paged_cuda_ws_bytes(int64_t n, int64_t Hq, int64_t Hkv, int64_t hd, int64_t max_ctx);
int attn_paged_fwd_cuda(uint16_t *o, const uint16_t *q, int64_t ld_q, int64_t n, int64_t Hq, int64_t Hkv, int64_t hd,
                        float scale, const uint16_t *k, const uint16_t *v, int64_t block_size, int64_t block_stride,
                        const int32_t *tables, int64_t table_ld, const int32_t *seq, const int32_t *ctx,
                        int64_t max_ctx, void *ws, void *stream);
/* Chunked prefill on tensor cores (the same paged layout, n, q, o, seq, ctx, scale as
 * attn_paged_fwd_cuda, its twin attn_paged_fwd): for passes with many new queries per sequence.
 * The queries are cut into tiles of up to 16, 32 or 64 consecutive queries of one table row;
 * attn_paged_prefill_tiles (host) writes the first query of each tile into tiles (n ints at
 * most; seq a host copy) and returns their count; the launch reads a device copy. Each tile
 * streams its sequence's K/V in tiles of 64 positions once for all the query heads of a kv head
 * (up to 8), mma.sync bf16 with f32 accumulation and an online softmax; a query sees positions
 * [0, ctx[i]) (causal: a chunk continuing a cached prefix of any length). hd ∈ {64, 128},
 * Hq % Hkv == 0, ld_q and block_stride multiples of 8, q, k, v 16-byte aligned, o 4-byte aligned.
 * No workspace. Results differ from attn_paged_fwd_cuda's by the bf16 rounding of the
 * probabilities (tolerance in tests/emu/paged_attn_emu.cpp). */
int64_t attn_paged_prefill_tiles(int32_t *tiles, const int32_t *seq, int64_t n, int64_t Hq, int64_t Hkv);
int attn_paged_prefill_cuda(uint16_t *o, const uint16_t *q, int64_t ld_q, int64_t n, int64_t Hq, int64_t Hkv,
                            int64_t hd, float scale, const uint16_t *k, const uint16_t *v, int64_t block_size,
                            int64_t block_stride, const int32_t *tables, int64_t table_ld, const int32_t *seq,
                            const int32_t *ctx, const int32_t *tiles, int64_t n_tiles, void *stream);
/* Writes n new tokens' K and V rows (kd = Hkv·hd bf16 each; rows ld apart in k and v, e.g. inside
 * a fused QKV output) into the cache at position pos[i] of table row seq[i] (layout as above,
 * k_cache/v_cache the bases). kd, ld, block_stride multiples of 8; pointers 16-byte aligned. */
int attn_paged_store_cuda(uint16_t *k_cache, uint16_t *v_cache, const uint16_t *k, const uint16_t *v, int64_t ld,
                          int64_t n, int64_t kd, int64_t block_size, int64_t block_stride, const int32_t *tables,
                          int64_t table_ld, const int32_t *seq, const int32_t *pos, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif

/* teacher/cuda_batch.h — the device paged batch under the two GPU engines (teacher/dense_cuda.c,
 * teacher/ds_cuda.c): what their passes share whatever the model is. Private to teacher/ (not
 * the library's interface).
 *
 * - cb_plan_limits / cb_plan_budget: the model-independent parts of an engine's memory plan
 *   (teacher/cuda_plan.h); cb_use_device, cb_open_stream (stream, then NCCL), cb_agree (the
 *   ranks' agreement on a load), cb_upload_consts, cb_cache_blocks.
 * - cb_passes: a forward call (n_seqs sequences, n_new[i] new tokens each) split into device
 *   passes of at most max_seqs pieces and max_tokens tokens (a sequence longer than a pass in
 *   pieces), each handed to the engine's pass function.
 * - cb_reserve: kv_seq_reserve, then the device copy of every cache block it made private.
 * - cb_graphs: the decode passes' CUDA graphs, bucket k of B[k] rows (1, 2, 4, …, max_seqs) by
 *   context class c of contexts up to C[c] (bs, 2·bs, …, the model's context); the scratch block
 *   the padding rows use; the eager first pass of a pair, then its capture.
 * - cb_gather_last: the finished sequences' last hidden rows, before the LM head.
 * - cb_logits_row / cb_sample: one logits row to the host; sampling from device rows.
 *
 * Memory: nothing here owns device memory; cb_graphs owns its graph executables until
 * cb_graphs_drop. Functions return 0 or an RT_E… code with one message (RT_EINTERNAL names the
 * CUDA call; a graph error names --no-cuda-graphs). Compiled in CUDA builds only (RT_HAVE_CUDA);
 * against the CPU stand-ins (tests/unit/fake_cuda.h: RT_FAKE_CUDA) its names become fake_cb_…
 * and the test includes teacher/cuda_batch.c beside the engine's .c. */
#ifndef RT_TEACHER_CUDA_BATCH_H
#define RT_TEACHER_CUDA_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "teacher/cuda_plan.h"

#ifdef RT_HAVE_CUDA

#ifdef RT_FAKE_CUDA   /* the stand-in build's own copies (the library holds the real ones) */
#define cb_plan_limits fake_cb_plan_limits
#define cb_plan_budget fake_cb_plan_budget
#define cb_agree fake_cb_agree
#define cb_passes fake_cb_passes
#define cb_upload_consts fake_cb_upload_consts
#define cb_cache_blocks fake_cb_cache_blocks
#define cb_use_device fake_cb_use_device
#define cb_open_stream fake_cb_open_stream
#define cb_gather_last fake_cb_gather_last
#define cb_reserve fake_cb_reserve
#define cb_graphs_drop fake_cb_graphs_drop
#define cb_graphs_plan fake_cb_graphs_plan
#define cb_graphs_decode fake_cb_graphs_decode
#define cb_graphs_run fake_cb_graphs_run
#define cb_graphs_capture fake_cb_graphs_capture
#define cb_logits_row fake_cb_logits_row
#define cb_sample fake_cb_sample
#else
#include <cuda_runtime.h>
#endif

#include "core/comm.h"
#include "kernels/sample.h"
#include "teacher/kvcache.h"

#define CB_MAX_BUCKETS 32   /* graph buckets and context classes: powers of 2 */

/* The pass limits from the load options' (0: 512 tokens, 256 sequences; at least 16 each;
 * sequences at most tokens). */
void cb_plan_limits(cb_plan *p, int64_t max_tokens, int64_t max_seqs);

/* device_total/free and budget (fraction of the device, 0: 0.9, at most 1, less what others
 * hold); RT_ENOMEM with one line when the weights alone do not fit (P > 1: "per rank"). */
int cb_plan_budget(cb_plan *p, double memory_fraction, const char *dir, int P);

/* Every rank's status rc, met before a collective over host (P ranks): a failure on one rank
 * (its own message) stops all, the others with a line that points at it; the cache takes the
 * smallest rank's kv_positions (kv and total follow), so every rank's scheduler sees the same
 * blocks. P ≤ 1: rc. */
int cb_agree(rt_comm *host, int P, const char *dir, int rc, cb_plan *p);

/* The device the load options name (gpu < 0: 0) into *dev, made current; RT_EUNSUPPORTED with
 * one line when there is no usable one (said first, whatever the model). */
int cb_use_device(int gpu, int *dev);

/* The rope frequencies inv [n] to d_inv, and the f32 −inf cb_sample writes over the holes to
 * d_neginf. */
int cb_upload_consts(float *d_inv, const float *inv, int64_t n, float *d_neginf);

/* After the status rc of a load so far: its stream (non-blocking) into *st, then (P > 1) once every
 * rank is this far (cb_agree: a failure anywhere stops all), NCCL's communicator over host's ranks
 * on device dev and that stream into *nccl (NULL when not made). */
int cb_open_stream(rt_comm *host, int P, int dev, const char *dir, int rc, cb_plan *p, cudaStream_t *st,
                   rt_comm **nccl);

/* A piece: tokens [from, from + n) of sequence s's new tokens. */
typedef struct {
    int64_t s, from, n;
    bool last;   /* ends the sequence's new tokens: its logits row */
} cb_piece;

/* One device pass over pc[0, np) (T tokens; sequence s's new tokens start at tokens[tok_at[s]]);
 * the logits rows of the pieces that end their sequence are rows [first, …) of the call's. */
typedef int (*cb_pass_fn)(void *ctx, const cb_piece *pc, int64_t np, int64_t T, const int64_t *tok_at,
                          int64_t first);

/* The passes of one forward call: whole sequences while they fit a pass (max_seqs pieces,
 * max_tokens tokens, np·(longest table) ≤ table_ints), a sequence longer than a pass in pieces.
 * Stops at the first failing pass. RT_ENOMEM (host). */
int cb_passes(kv_seq *const *seqs, const int32_t *n_new, int64_t n_seqs, const cb_plan *p, cb_pass_fn pass_fn,
              void *ctx);

/* The hidden rows [D] bf16 of the last token of each of pc[0, np) that ends its sequence, from
 * xn (the pass's T rows, pieces in order) to rows 0, 1, … of hf. */
int cb_gather_last(uint16_t *hf, const uint16_t *xn, int64_t D, const cb_piece *pc, int64_t np, cudaStream_t st);

/* kv_seq_reserve(cache, s, new_len), and on the device the copy of every block it made private
 * (even when it stopped early, cache full): blocks of block_elems bf16 elements in each of
 * `layers` arenas layer_stride elements apart from kv. */
int cb_reserve(kv_pool *cache, kv_seq *s, int64_t new_len, int64_t bs, uint16_t *kv, size_t block_elems,
               int64_t layers, size_t layer_stride, cudaStream_t st);

typedef struct {
    bool on;                        /* the load options' no_cuda_graphs unset */
    int ng, nc;                     /* buckets, classes (0: no graphs: off, or no room) */
    int64_t B[CB_MAX_BUCKETS], C[CB_MAX_BUCKETS];
    cudaGraphExec_t gx[CB_MAX_BUCKETS][CB_MAX_BUCKETS];   /* NULL until the first such pass */
    int32_t scratch;                /* the cache block the graphs' padding rows use */
} cb_graphs;

void cb_graphs_drop(cb_graphs *g);

/* Cache blocks of block_size positions in the plan's cache: *n_blocks = kv_positions / block_size
 * (before cb_graphs_plan takes its scratch block); RT_ERANGE with one line unless 1 ≤ block_size ≤
 * kv_positions. */
int cb_cache_blocks(const cb_plan *p, int64_t block_size, int64_t *n_blocks);

/* At cache init (blocks of bs positions, *n_blocks of them): drops the graphs; with graphs on, at
 * least 2 blocks and room for max_seqs tables of the longest class (the context maxpos) in
 * table_ints, takes the last block as the scratch block (*n_blocks one less) and sets the buckets
 * and classes (none beyond CB_MAX_BUCKETS). */
void cb_graphs_plan(cb_graphs *g, int64_t *n_blocks, int64_t bs, int64_t max_seqs, int64_t maxpos,
                    int64_t table_ints);

/* Whether pc[0, np) is a decode pass the graphs take (graphs planned; one new token for each
 * piece, its last, none starting empty); if so its bucket *k (smallest B ≥ np), its longest
 * context *max_ctx and class *c (smallest C ≥ it). */
bool cb_graphs_decode(const cb_graphs *g, kv_seq *const *seqs, const cb_piece *pc, int64_t np, int64_t *max_ctx,
                      int *k, int *c);

/* The device work of a decode pass of B rows and context class C (its ints already on the
 * device): only stream work, so that a graph captures exactly it. */
typedef int (*cb_body_fn)(void *ctx, int64_t B, int64_t C);

/* Runs decode pass (k, c) on st: its graph if captured (*fresh false), else body eagerly, as the
 * graph will run (*fresh true: call cb_graphs_capture once its outputs are taken). */
int cb_graphs_run(cb_graphs *g, cudaStream_t st, int k, int c, cb_body_fn body_fn, void *ctx, bool *fresh);

/* Captures body for (k, c) as its graph (the eager run came first, so every lazy set-up —
 * shared-memory opt-ins, cuBLASLt's choices — is done). */
int cb_graphs_capture(cb_graphs *g, cudaStream_t st, int k, int c, cb_body_fn body_fn, void *ctx);

/* Logits rows left on the device by the last forward and what device sampling works in. */
typedef struct {
    const float *rows;              /* [n_rows, V] */
    int64_t n_rows, V, max_seqs;
    float *packed;                  /* [max_seqs, V]: the drawable ids of each drawn row */
    const float *neginf;            /* one f32 −inf */
    void *params, *rng;             /* [max_seqs] smp_params; [max_seqs, 3] u64 */
    void *ws;                       /* smp_sample_cuda's workspace */
    size_t ws_bytes;
    int32_t *tok;                   /* [max_seqs] */
    float *lp;                      /* [max_seqs] */
    int32_t *top;                   /* [max_seqs·SMP_TOP_MAX] ids, then as many f32 logprobs */
} cb_rows;

/* Row `row` [V] to the host. RT_EINVAL past the rows. */
int cb_logits_row(const cb_rows *d, int64_t row, float *out, cudaStream_t st);

/* The engines' dc_sample / dsc_sample (teacher/ds_cuda.h): draw i from row row_of[i] restricted
 * to ids [0, n_valid) with holes at −inf, under params[i] and the uniform of rng[3i…3i+2];
 * tokens [n], logprob [n] (NULL: not wanted), top_k > 0: top_ids / top_lp [n, top_k]. */
int cb_sample(const cb_rows *d, cudaStream_t st, int64_t n, const int32_t *row_of, int64_t n_valid,
              const int32_t *holes, int64_t n_holes, const smp_params *params, const uint64_t *rng, int32_t *tokens,
              float *logprob, int top_k, int32_t *top_ids, float *top_lp);

#endif
#endif

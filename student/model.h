/* student/model.h — the dense Llama-3 / Qwen2.5 / Qwen3 student in f32: parameters, forward, backward.
 * (Qwen3: q and k of each head RMS-normalized by q_norm / k_norm before RoPE, and back through them.)
 *
 * An sm_model holds every parameter in one flat f32 buffer (params) and, beside it, one
 * gradient buffer of the same layout (grads), in the tensor order of mc_expected_tensors
 * (HF names; the lm_head is absent when embeddings are tied). sm_create_random() draws
 * weights from a seeded normal(0, 0.02) — o_proj and down_proj with 0.02/√(2·layers) —
 * with norms at 1 and biases at 0. sm_load() reads a HF directory (config.json +
 * safetensors, BF16/F16/F32/F64) after checking every tensor against the architecture
 * (core/checkpoint.h). sm_save() writes DIR/config.json and DIR/model.safetensors (F32 or
 * BF16) in the same HF layout, tensor by tensor (one tensor's conversion at a time). The
 * model keeps the config JSON it was made from and writes it back (torch_dtype updated). sm_free() releases everything (NULL is fine).
 *
 * Lazy models, for a trainer that keeps only a shard (a 70B model's f32 weights are 280 GB):
 * sm_open_random() and sm_open() make the same model as sm_create_random() and sm_load()
 * (sm_open checks the files the same way) but allocate no params or grads (both NULL) and
 * remember where the weights come from (the seed, or the directory: `source`). An
 * sm_reader then writes any flat range [lo, hi) of those weights into a caller's buffer —
 * the same values, bit for bit, as the eager call puts there (gaps between tensors 0): from
 * the mmapped safetensors (converted slice by slice), or drawn again from the seed (the
 * stream is skipped forward to the range; a reader remembers the stream at each tensor start
 * it passed, so reading ranges in any order costs at most one pass over the stream).
 * sm_materialize() gives a lazy model its whole params and grads (an eager one: nothing to do).
 *
 * A batch is T tokens laid end to end (B sequences of N): per token its id, the index of
 * the first token of its document (doc_start, see kernels/attention.h), its position in
 * the document (RoPE), and its target (the next token of the same document when that one
 * is trained on, else −1). sm_batch_targets() fills doc_start/pos/target from sequences,
 * loss masks and shard documents.
 *
 * sm_acts holds the activations for up to max_tokens tokens; with checkpointing only the
 * residual stream between layers is kept and each layer's forward is recomputed during
 * its backward. sm_forward_backward() adds scale·∂(Σ loss)/∂θ into grads (the caller
 * zeroes them, and picks scale = 1 / loss tokens of the whole optimizer step) and returns
 * Σ loss over the batch's targets. sm_forward_logits() writes the full [T, V] logits
 * (tests, small vocabularies). Threads: every kernel runs on the pool given (NULL: inline).
 *
 * Units (for a trainer that keeps only shards of the weights, ZeRO-3 in student/train.h):
 * the flat layout is cut into sm_units() contiguous ranges — 0 the embedding, 1..L the
 * decoder layers, L+1 the final norm, L+2 the LM head (the embedding's range when tied).
 * sm_forward_backward_hooked() calls hooks->begin(ctx, u, backward) right before unit u is
 * used and hooks->end(ctx, u, backward) right after: in the forward (backward false) for
 * units 0..L+1 in order, then (backward true) the head (its cross-entropy is fused: forward
 * and backward in one), the final norm, the layers from L−1 down (with checkpointing the
 * layer's forward is recomputed between its begin and end) and the embedding (whose
 * backward reads no weights). Between begin and end the hook may point params and grads
 * at buffers that hold only the unit: element i of the flat layout is then params[i − base]
 * (base: 0 for a whole model). end(u, true) means unit u's gradients of this batch are
 * complete. A hook's nonzero return stops the pass and is returned.
 * Errors: RT_EFORMAT, RT_EUNSUPPORTED (deepseek_v3, yarn), RT_EINVAL, RT_EIO, RT_ENOMEM.
 */
#ifndef RT_STUDENT_MODEL_H
#define RT_STUDENT_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/model_config.h"
#include "core/shard.h"
#include "core/threadpool.h"
#include "kernels/loss.h"

typedef struct {
    char name[112];
    int ndim;
    int64_t shape[2];
    int64_t offset, numel;   /* into params / grads */
    bool decay;              /* weight decay applies: matrices (embeddings, projections), not norms or biases */
} sm_tensor;

/* Offsets of one decoder layer's tensors into params/grads; −1 when absent. */
typedef struct {
    int64_t attn_norm, wq, wk, wv, wo, bq, bk, bv, bo;
    int64_t mlp_norm, wg, wu, wd, bg, bu, bd;
    int64_t qn, kn;            /* qwen3: q_norm, k_norm [hd] (RMSNorm of each head before RoPE); −1 otherwise */
} sm_layer_off;

typedef struct {
    mc_config cfg;
    json_t *config_json;       /* the HF config this model was made from (owned) */
    int64_t D, F, L, V, Hq, Hkv, hd;
    int64_t n_params;
    float *params, *grads;     /* [n_params] each: flat element i at params[i − base] */
    int64_t base;              /* 0, except while a ZeRO-3 hook points params/grads at one unit */
    sm_tensor *tensors;
    size_t n_tensors;
    int64_t embed, norm_f, lm_head;   /* offsets; lm_head == embed when tied */
    sm_layer_off *layers;      /* [L] */
    float *inv_freq;           /* [hd/2] */
    char *source;              /* lazy (sm_open): the checkpoint directory; NULL: drawn from seed */
    uint64_t seed;             /* sm_create_random / sm_open_random's seed */
} sm_model;

int sm_create_random(const json_t *config, uint64_t seed, sm_model **out);
int sm_load(const char *dir, sm_model **out);
int sm_open_random(const json_t *config, uint64_t seed, sm_model **out);
int sm_open(const char *dir, sm_model **out);
int sm_materialize(sm_model *m);
typedef struct sm_reader sm_reader;
/* A reader of m's initial weights (m must outlive it; sm_reader_close: NULL is fine). */
int sm_reader_open(const sm_model *m, sm_reader **out);
/* dst [hi − lo] ← flat elements [lo, hi) of the weights. RT_EINVAL outside [0, n_params]. */
int sm_reader_read(sm_reader *r, int64_t lo, int64_t hi, float *dst);
void sm_reader_close(sm_reader *r);
int sm_save(const sm_model *m, const char *dir, rt_dtype dtype);
/* sm_save for weights that are not in params (a ZeRO-3 trainer's shards): fetch(ctx, t, dst)
 * writes tensor t's f32 values into dst [t->numel], called once per tensor in order, right
 * before the tensor is written; its nonzero return stops the save and is returned (then, or
 * when writing fails, fewer calls happen). */
int sm_save_fetch(const sm_model *m, const char *dir, rt_dtype dtype, int (*fetch)(void *ctx, const sm_tensor *t, float *dst),
                  void *ctx);
/* sm_save_fetch, with the weights split into shards of at most max_shard_bytes (a tensor
 * larger than that gets a shard of its own; ≤ 0: SM_SHARD_BYTES, transformers' 5 GB):
 * model-0000k-of-0000n.safetensors and model.safetensors.index.json ({"metadata":
 * {"total_size"}, "weight_map"}); one model.safetensors when everything fits. fetch NULL:
 * the weights come from params. */
#define SM_SHARD_BYTES ((int64_t)5000000000)
int sm_save_sharded(const sm_model *m, const char *dir, rt_dtype dtype, int64_t max_shard_bytes,
                    int (*fetch)(void *ctx, const sm_tensor *t, float *dst), void *ctx);
void sm_free(sm_model *m);
const sm_tensor *sm_find(const sm_model *m, const char *name);
/* Reallocate params and grads to n_alloc ≥ n_params elements (the tail zero), for the
 * data-parallel trainer's equal shards (student/zero.h); contents kept, old pointers invalid. */
int sm_pad_flat(sm_model *m, int64_t n_alloc);

typedef struct {
    int64_t T;
    const int32_t *tokens, *doc_start, *pos, *target;   /* [T] each */
} sm_batch;

/* From n_seq sequences of seq_len tokens and masks (mask[t] = 1: token t is trained on) and
 * the documents of each sequence (docs[i]: n_docs[i] of them, only start and len are read):
 * fills doc_start, pos, target [n_seq·seq_len]. A position no document covers (padding)
 * is a document of its own with no target. Returns the number of targets. */
int64_t sm_batch_targets(const int32_t *tokens, const uint8_t *mask, int64_t n_seq, int64_t seq_len,
                         const shard_doc *const *docs, const size_t *n_docs, int32_t *doc_start, int32_t *pos,
                         int32_t *target);

typedef struct sm_acts sm_acts;
/* ce_chunk: rows per cross-entropy chunk (0: as many as fit 64 MiB of logits). */
int sm_acts_create(const sm_model *m, int64_t max_tokens, bool checkpoint_layers, int64_t ce_chunk, sm_acts **out);
void sm_acts_free(sm_acts *a);

int sm_forward_backward(sm_model *m, sm_acts *a, const sm_batch *b, float scale, double *loss_sum, tp_pool *pool);
int64_t sm_units(const sm_model *m);
/* Flat range [*lo, *hi) of unit u (alignment gaps included). */
void sm_unit_range(const sm_model *m, int64_t u, int64_t *lo, int64_t *hi);
typedef struct {
    int (*begin)(void *ctx, int64_t unit, bool backward);
    int (*end)(void *ctx, int64_t unit, bool backward);
    void *ctx;
} sm_hooks;
/* sm_forward_backward with unit hooks (NULL: none). */
int sm_forward_backward_hooked(sm_model *m, sm_acts *a, const sm_batch *b, float scale, double *loss_sum,
                               const sm_hooks *hooks, tp_pool *pool);
/* Logit distillation for the passes that follow (kernels/loss.h kd_fused; its rows are the
 * batch's T tokens, aligned with target; borrowed until replaced): NULL or alpha 0 is the plain
 * cross-entropy, bit for bit. */
void sm_acts_set_kd(sm_acts *a, const kd_spec *kd);
/* Σ cross-entropy and Σ D (0 without distillation) of the last pass. */
void sm_acts_kd_sums(const sm_acts *a, double *ce_sum, double *kd_sum);
/* Loss only (no gradients). */
int sm_forward_loss(const sm_model *m, sm_acts *a, const sm_batch *b, double *loss_sum, tp_pool *pool);
/* The same with unit hooks (ZeRO-3's validation loss): begin/end(u, false) for units 0..L+1 in
 * order, then for the head (unit L+2, the embedding's range when tied), whose loss reads its
 * weights only; grads are never touched. */
int sm_forward_loss_hooked(sm_model *m, sm_acts *a, const sm_batch *b, double *loss_sum, const sm_hooks *h,
                           tp_pool *pool);
/* logits [T, V]. */
int sm_forward_logits(const sm_model *m, sm_acts *a, const sm_batch *b, float *logits, tp_pool *pool);

/* Wall time spent in each kind of kernel since the acts were created (or reset), forward
 * and backward separately (checkpointed recomputation counts as forward). */
enum { SM_PROF_EMBED, SM_PROF_NORM, SM_PROF_LINEAR, SM_PROF_ROPE, SM_PROF_ATTN, SM_PROF_ACT, SM_PROF_HEAD,
       SM_PROF_OTHER, SM_PROF_COUNT };
void sm_acts_profile(const sm_acts *a, double fwd[SM_PROF_COUNT], double bwd[SM_PROF_COUNT]);
void sm_acts_profile_reset(sm_acts *a);
const char *sm_prof_name(int cat);

#endif

/* student/train.h — the SFT loop: micro-batches, gradient accumulation, clipping, AdamW,
 * LR schedule, checkpoints with exact resume.
 *
 * One tr_step() is one optimizer update: it reads batch × grad_accum sequences (each
 * micro-batch is `batch` sequences), counts the loss tokens of all of them first, and runs
 * every micro-batch's forward/backward with scale 1/total, so the gradient is that of the
 * mean loss over every target of the step (not a mean of per-micro-batch means). Then the
 * global gradient norm (reported before clipping), clipping to `clip` when > 0 (torch's
 * clip_grad_norm_ rule: × clip/(norm + 1e-6) when that is < 1), and AdamW with weight
 * decay on matrices only (embeddings, projections; not norms or biases).
 *
 * LR at update s (0-based): warmup (s+1)/warmup·lr for s < warmup, then by schedule:
 * cosine from lr down to lr·min_lr_ratio at the last step, linear likewise, or constant.
 *
 * A step whose loss or global gradient norm is not finite (NaN, Inf) fails with RT_ERANGE
 * naming the step, before the optimizer touches the weights: a diverged run stops there.
 *
 * tr_save() writes the model directory DIR and its state directory DIR.state beside it
 * (each created, or replaced whole: the files go to DIR.partial and DIR.state.partial first
 * and the directories are renamed into place, the state first, so DIR appears last; a failed
 * save removes the partials, and stale ones from a killed save are removed before the next).
 * DIR is a complete Hugging Face model directory: config.json, model.safetensors (F32 or
 * BF16; above o.max_shard_bytes model-0000i-of-0000n.safetensors and
 * model.safetensors.index.json), and with o.hf the tokenizer and generation files
 * (student/hfdir.h). DIR.state holds optimizer.safetensors (AdamW moments, and F32 master
 * weights when the model was written in BF16) and trainer_state.json (step, data position,
 * options) — see docs/formats.md, "Training checkpoints". A checkpoint is complete when
 * DIR/config.json and DIR.state/trainer_state.json exist; tr_state_dir() names the state
 * directory of a checkpoint (DIR.state, or DIR itself for one written before the state
 * moved out, which tr_resume still reads). Weights or moments that are not finite are never written
 * (RT_ERANGE naming the tensor). tr_resume() restores all of it into a trainer created from the
 * same directory's model; with the same options the run continues bit-exactly.
 *
 * The trainer takes ownership of the model and data given to tr_create (freed by
 * tr_free, NULL is fine); the pool stays the caller's. Library code: nothing is printed;
 * the caller reports the tr_stats of each step.
 * Data parallel (tr_create_dp, P ranks, see student/zero.h for the sharding): a step reads
 * batch × grad_accum × P sequences in data order, rank r the r-th run of batch × grad_accum
 * of them; the loss-token count is allreduced first, so every rank scales by 1/(targets of
 * the global step) and the summed gradient is the 1-rank gradient of the same global batch.
 * Gradients are allreduced (levels 0, 1) or reduce-scattered (2); the norm is allreduced
 * from the ranks' parts; each rank updates its part and the parameters are all-gathered.
 * The model may be lazy (sm_open, sm_open_random: no whole buffers): levels 0–2 then
 * materialize it; level 3 reads only this rank's part of the weights (an sm_reader), so no
 * whole parameter buffer ever exists on the rank.
 * Level 3 (ZeRO-3): tr_create_dp keeps only this rank's part of the model's parameters and
 * frees the whole buffers (the model's params and grads stay NULL between steps: tr_model
 * gives the shapes, not the weights); in the step each unit (student/model.h: embedding,
 * layer, final norm, head) is all-gathered into a one-unit buffer right before its forward
 * and again before its backward, and its local gradient is reduce-scattered as soon as its
 * backward ends (a tied embedding's gradient, begun by the head, when the embedding's
 * backward ends), each rank adding its part to its reduced gradient [S]. A rank then holds
 * S = ⌈n/P⌉ parameters, gradients and two moments, one unit's parameters and gradient, and
 * (tied) the embedding's gradient: tr_memory lists them. Micro-batches are reduced one by
 * one (with grad_accum 1 a step gives level 2's bits at the same P).
 * Stats are global (tokens of all ranks, loss over all targets), the same on every rank.
 * tr_save is collective: the AdamW moments are gathered on rank 0, which alone writes the
 * checkpoint in the 1-rank format, so a checkpoint resumes at any rank count and level
 * (tr_resume: every rank reads the files and keeps its part). At level 3 rank 0 gathers
 * and writes one tensor at a time (parameters, then moments and master weights), so it
 * never holds more than the largest tensor of them. Without a comm nothing changes: one rank,
 * level 0, bit for bit the earlier trainer.
 * Logit distillation (kd_alpha > 0, docs/student.md): the loss of every target becomes
 * (1 − α)·CE + α·T²·D(teacher ‖ student) over the teacher top-k the shards carry
 * (kernels/loss.h kd_fused; rows without teacher entries keep plain CE). Data without top-k
 * (sd_top_k 0), or a teacher vocabulary other than the shards' with a loss other than
 * KD_ULD, is RT_EINVAL from tr_create. kd_alpha 0 is the SFT trainer bit for bit.
 * Errors: RT_EINVAL (options; P > 1 with fewer sequences in the data than one step reads),
 * RT_EINTERNAL (a collective), RT_EFORMAT (a checkpoint that does not fit), RT_EIO, RT_ENOMEM.
 */
#ifndef RT_STUDENT_TRAIN_H
#define RT_STUDENT_TRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "core/comm.h"
#include "core/dtype.h"
#include "core/threadpool.h"
#include "student/data.h"
#include "student/model.h"

typedef enum { TR_SCHED_COSINE, TR_SCHED_LINEAR, TR_SCHED_CONSTANT } tr_schedule;

typedef struct {
    int64_t batch, grad_accum, steps;   /* steps: total optimizer updates of the run */
    double lr, min_lr_ratio;
    int64_t warmup;
    tr_schedule schedule;
    double weight_decay, clip, beta1, beta2, eps;
    uint64_t seed;                      /* data order (and, in the CLI, --init weights) */
    bool checkpoint_layers;             /* recompute each layer's forward in the backward */
    int64_t ce_chunk;                   /* rows per cross-entropy chunk; 0: automatic */
    int zero;                           /* data parallel: 0 replicated, 1 ZeRO-1, 2 ZeRO-2, 3 ZeRO-3 (student/zero.h) */
    const char *run_data, *run_model;   /* what the run reads and starts from (the CLI: absolute paths), kept
                                         * in trainer_state.json as "run" so that a rerun can tell its own
                                         * checkpoints from another run's; NULL: not recorded. Borrowed. */
    bool offload_optimizer;             /* GPU trainer only: master weights and moments in host memory */
    bool offload_activations;           /* GPU trainer only, with checkpoint_layers: layer inputs in host memory */
    int64_t max_shard_bytes;            /* model weights split into shards above this (sm_save_sharded); 0: 5 GB */
    const struct hd_source *hf;         /* tokenizer, template and generation defaults of the model directories
                                         * (student/hfdir.h); NULL: config and weights only. Borrowed. */
    double kd_alpha, kd_temperature;    /* logit distillation weight (0: SFT) and temperature (> 0) */
    int kd_loss;                        /* kd_kind (kernels/loss.h) */
    double kd_beta;                     /* KD_JSD's β */
} tr_options;

typedef struct {
    int64_t step;                       /* updates done, this one included (1-based) */
    double loss, lr, grad_norm;
    double ce_loss, kd_loss;            /* mean CE and mean D over the targets (SFT: ce_loss = loss, kd_loss 0) */
    int64_t tokens, loss_tokens;        /* tokens read (batch·accum·seq) and targets among them */
    uint64_t epoch;                     /* data epoch after this step */
} tr_stats;

void tr_options_default(tr_options *o);
double tr_lr_at(const tr_options *o, int64_t step);

typedef struct tr_trainer tr_trainer;

int tr_create(sm_model *m, sd_data *d, const tr_options *o, tp_pool *pool, tr_trainer **out);
/* The distillation options against the data (both trainers call it at creation): kd_alpha in
 * [0, 1], temperature > 0, top-k in the shards, the student's vocabulary unless KD_ULD. */
int tr_kd_check(const sm_model *m, sd_data *d, const tr_options *o);
/* Data parallel over comm (borrowed; NULL or one rank: tr_create). Every rank calls it with
 * the same model, data and options; tr_step and tr_save are then collective. */
int tr_create_dp(sm_model *m, sd_data *d, const tr_options *o, tp_pool *pool, rt_comm *comm, tr_trainer **out);
void tr_free(tr_trainer *t);
int tr_step(tr_trainer *t, tr_stats *out);
int64_t tr_steps_done(const tr_trainer *t);
/* The mean cross-entropy over every target of val (each of its sequences once, batch at a
 * time, the trainer's current weights; nothing of the trainer changes but its scratch), and
 * how many targets that is (loss NaN when none). val must have the training data's sequence
 * length and a vocabulary the model covers (RT_EINVAL). At ZeRO levels 0–2 each rank computes
 * it alone (no collective); at level 3 it is collective: every rank calls it with the same val
 * (each unit's weights are gathered for every batch, as in the step) and gets the same loss. */
int tr_eval(tr_trainer *t, sd_data *val, double *loss, int64_t *targets);
const sm_model *tr_model(const tr_trainer *t);
int tr_save(const tr_trainer *t, const char *dir, rt_dtype model_dtype);
/* The parameter, gradient and optimizer buffers this rank holds (activations, the batch and
 * the kernels' scratch aside), each by name and size in bytes: "params", "grads" (the
 * model's whole flat buffers at levels 0–2, the own parts [S] at level 3), "adam_m",
 * "adam_v", and at level 3 "unit_params", "unit_grads" and (tied embeddings) "embed_grads".
 * Returns how many were filled. */
#define TR_MAX_BUFFERS 8
typedef struct {
    const char *name;
    int64_t bytes;
} tr_buffer;
int tr_memory(const tr_trainer *t, tr_buffer out[TR_MAX_BUFFERS]);
int tr_resume(tr_trainer *t, const char *dir);
/* DIR.state when it holds trainer_state.json, else DIR (the older layout); owned, NULL on ENOMEM. */
char *tr_state_dir(const char *dir);
/* The same checkpoint for a trainer whose state lives elsewhere (the GPU path,
 * student/gpu_train.h), written one tensor at a time: fetch(ctx, kind, x, dst) writes tensor x's f32 values
 * (kind 0: exp_avg, 1: exp_avg_sq, 2: the weights / master weights) into dst [x->numel], in
 * the order the files are written — every tensor's weights (model order), then per tensor
 * exp_avg, exp_avg_sq and (BF16 model) master: n_tensors · (3 or 4) calls, fewer when a
 * write fails; its nonzero return stops the save (a fetch should refuse values that are not
 * finite, RT_ERANGE). Holds one tensor (and the writers' one-tensor buffers). */
int tr_save_stream(const sm_model *m, int (*fetch)(void *ctx, int kind, const sm_tensor *x, float *dst), void *ctx,
                   int64_t step, const sd_position *pos, int64_t seq_len, const tr_options *o, const char *dir,
                   rt_dtype model_dtype);
/* trainer_state.json alone (step and data position, checked against d), for a trainer that
 * reads the weights and moments of its part itself (student/gpu_train.h). */
int tr_resume_position(sd_data *d, int64_t *step, sd_position *pos, const char *dir);

#endif

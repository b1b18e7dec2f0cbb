/* student/gpu_train.h — the SFT loop of student/train.h on one CUDA device per rank.
 *
 * The same step as tr_step (read batch × grad_accum × P sequences in data order, count the
 * step's loss tokens first — allreduced —, scale every micro-batch's gradient by 1/total,
 * global gradient norm before clipping, torch's clip rule, AdamW with decay on matrices,
 * tr_lr_at's schedule), computed with the kernels' CUDA twins in the order of
 * bench/lab_layer.c: bf16 weights and activations, f32 gradients, f32 master weights and
 * AdamW moments (adamw_step_cuda writes the bf16 copy in the same pass). The device layout
 * is student/gpu_plan.h's; with checkpoint_layers only each layer's input is kept and its
 * forward is recomputed in the backward. Each micro-batch is read on the host into a pinned
 * buffer (two, alternating) and copied asynchronously on the trainer's stream.
 *
 * Data parallel (host comm with P > 1): an NCCL communicator over the same ranks
 * (comm_open_nccl, device = local rank). ZeRO levels over the GPU flat layout, sharded as
 * student/zero.h says (rank r keeps [r·S, (r+1)·S), S = ⌈n/P⌉ rounded up to 16):
 *   0  the whole f32 gradient, all-reduced after the step's last micro-batch; every rank
 *      updates everything (16 B/param);
 *   1  the same gradient; master weights and moments of the rank's part only, whose bf16
 *      weights are then all-gathered (2 + 4 + 12/P B/param);
 *   2  no whole-model gradient: the backward writes each unit's gradient (the embedding, one
 *      layer, the final norm and untied head: gpu_plan.h's units) into a bucket and, as soon
 *      as the unit is done, reduce-scatters it — one comm_reduce_scatterv whose blocks are the
 *      shards' pieces of the unit, end to end in rank order — into the rank's f32 gradient
 *      shard [S], which accumulates the micro-batches
 *      (2 + 16/P B/param, plus two buckets);
 *   3  as 2, and the bf16 weights are sharded too: a unit's weights are all-gathered (each
 *      owner broadcasts its piece) into a gather buffer just before its forward and again
 *      before its backward, the next unit prefetched on a second stream (and NCCL
 *      communicator) into the other buffer while this one computes; no rank holds the whole
 *      model's weights or gradient (16/P B/param, plus three gather buffers and two buckets).
 * With one rank every level is 0. tr_options.offload_optimizer keeps the master weights and
 * moments of the rank's part in pinned host memory: after the backward the gradient comes
 * down in chunks, AdamW runs on the host (kernels/cpu, a thread pool of the node's CPUs over
 * its ranks) while the next chunk comes down, and each chunk's bf16 copy goes back up
 * (the next step starts when the last one has landed). With ZeRO-3 (P > 1, the gradient
 * shard on the host) the host AdamW overlaps the next step instead: a thread updates the
 * units in forward order (the same elementwise math over the same ranges, so the same bits),
 * each unit's bf16 shard going up on a stream of its own, and the next step's gather of unit
 * u waits for unit u's update and upload only; the thread is joined before the next norm,
 * and gt_save / gt_resume wait for its uploads. gt_create allocates exactly
 * gpu_plan.h's gp_rank_memory (beside the CUDA context and the cuBLAS and NCCL workspaces),
 * and nothing after.
 *
 * gt_save writes the CPU trainer's checkpoint (tr_save_stream: model.safetensors, F32 or
 * BF16, from the f32 master weights; optimizer.safetensors; trainer_state.json), so a GPU
 * checkpoint resumes on the CPU and the other way round; collective, rank 0 writes.
 * gt_resume reads one (every rank). gt_peak_mem_gib: the most device memory seen in use
 * (cudaMemGetInfo after each step; every buffer is allocated up front, so this is the peak).
 * Host memory: gt_create streams the weights to the device through one 16 MiB chunk at a
 * time, from the model's params (then freed: the model keeps its shapes only) or, for a lazy
 * model (student/model.h: sm_open, sm_open_random), read by an sm_reader from the mmapped
 * checkpoint or the seed — the part of them this rank keeps (ZeRO-3: its shard; else the
 * whole bf16 copy goes up chunk by chunk), so no rank holds the model's f32 weights on the
 * host. gt_resume reads only the rank's part of the weights (the f32 masters when kept) and
 * moments from the mmapped checkpoint, chunk by chunk; gt_save streams the checkpoint tensor
 * by tensor (tr_save_stream: each tensor's pieces gathered on rank 0 as the files are written,
 * checked finite there), so a rank holds at most two tensors' worth for either.
 *
 * Ownership: gt_create takes the model and data (freed by gt_free, also on failure); the
 * host comm is borrowed. Nothing is printed.
 * Without CUDA (a CPU-only build) gt_check_device and gt_create return RT_EUNSUPPORTED
 * "built without CUDA". gt_check_device: RT_EUNSUPPORTED when no CUDA device can be used.
 * Errors: RT_EINVAL (options: ZeRO 0–3), RT_EUNSUPPORTED (a shape the kernels do not take), RT_ENOMEM
 * (host or device), RT_EINTERNAL (a CUDA, cuBLAS or NCCL call), RT_EFORMAT, RT_EIO.
 */
#ifndef RT_STUDENT_GPU_TRAIN_H
#define RT_STUDENT_GPU_TRAIN_H

#include <stdint.h>

#include "core/comm.h"
#include "core/dtype.h"
#include "student/data.h"
#include "student/model.h"
#include "student/train.h"

typedef struct gt_trainer gt_trainer;

int gt_check_device(void);
int gt_create(sm_model *m, sd_data *d, const tr_options *o, rt_comm *host, gt_trainer **out);
void gt_free(gt_trainer *t);   /* NULL is fine */
int gt_step(gt_trainer *t, tr_stats *out);
/* The validation loss with the trainer's current weights: student/train.h's tr_eval (the mean
 * cross-entropy over every target of val, each sequence once, batch sequences at a time; NaN
 * when none; RT_EINVAL for another sequence length or a larger vocabulary), on the device,
 * nothing of the trainer changed but its scratch. At ZeRO-3 with P > 1 it is collective
 * (every rank calls it with the same val; the units' weights are gathered as in the step);
 * else each rank computes it alone. */
int gt_eval(gt_trainer *t, sd_data *val, double *loss, int64_t *targets);
int64_t gt_steps_done(const gt_trainer *t);
int gt_save(gt_trainer *t, const char *dir, rt_dtype model_dtype);
int gt_resume(gt_trainer *t, const char *dir);
double gt_peak_mem_gib(const gt_trainer *t);

#endif

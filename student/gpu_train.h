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
 * (comm_open_nccl, device = local rank). ZeRO levels as student/zero.h over the GPU flat
 * layout: level 0 allreduces the gradient and every rank updates everything; level 1 keeps
 * master weights and moments of its part [S] only, updates it, and all-gathers the bf16
 * weights; level 2 reduce-scatters the gradient instead of allreducing it.
 *
 * gt_save writes the CPU trainer's checkpoint (tr_save_external: model.safetensors, F32 or
 * BF16, from the f32 master weights; optimizer.safetensors; trainer_state.json), so a GPU
 * checkpoint resumes on the CPU and the other way round; collective, rank 0 writes.
 * gt_resume reads one (every rank). gt_peak_mem_gib: the most device memory seen in use
 * (cudaMemGetInfo after each step; every buffer is allocated up front, so this is the peak).
 *
 * Ownership: gt_create takes the model and data (freed by gt_free, also on failure); the
 * host comm is borrowed. Nothing is printed.
 * Without CUDA (a CPU-only build) gt_check_device and gt_create return RT_EUNSUPPORTED
 * "built without CUDA". gt_check_device: RT_EUNSUPPORTED when no CUDA device can be used.
 * Errors: RT_EINVAL (options), RT_EUNSUPPORTED (a shape the kernels do not take), RT_ENOMEM
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
int64_t gt_steps_done(const gt_trainer *t);
int gt_save(gt_trainer *t, const char *dir, rt_dtype model_dtype);
int gt_resume(gt_trainer *t, const char *dir);
double gt_peak_mem_gib(const gt_trainer *t);

#endif

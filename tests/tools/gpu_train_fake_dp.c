/* tests/tools/gpu_train_fake_dp.c — student/gpu_train.c's data-parallel path on the CPU: the
 * trainer compiled against tests/unit/fake_cuda.h's stand-ins (kernels = their CPU twins on
 * bf16 values, device memory = host memory, NCCL = the MPI communicator), run under mpirun so
 * the ZeRO offsets, the reduce-scatter / all-reduce of the gradient, the sharded master
 * weights and moments, the bf16 all-gather and the gathered checkpoint are exercised without
 * a GPU (tests/ref/test_train_gpu.py compares it with the CPU trainer at one rank).
 *
 *   gpu_train_fake_dp CONFIG.json SHARDS STEPS ZERO[:offload][:ckpt][:kd] BATCH ACCUM SEED [SAVE_DIR SAVE_AT | --resume DIR]
 *
 * Options as the pytest's CLI runs: lr 3e-3, warmup 2, cosine, weight decay 0.1, clip 1.0;
 * --init weights from SEED; ZERO 0–3, ":offload" keeps the optimizer state in (pinned) host
 * memory, ":ckpt" checkpoints layers, ":kd" distils (alpha 0.6, T 2, jsd:0.5; the shards need
 * top-k) and adds ce_loss and kd_loss to each line, ":val" adds val_loss and val_targets: gt_eval
 * over the first 7 sequences of SHARDS after every step (every rank calls it: at ZeRO-3 it is
 * collective). Rank 0 prints one JSON object per step (step, loss, lr,
 * grad_norm, loss_tokens, and peak_device_bytes: the stand-in allocator's peak on rank 0,
 * which holds the largest shard); SAVE_DIR: the checkpoint after step SAVE_AT (collective,
 * rank 0 writes), the run going on to STEPS; --resume DIR: the model and the trainer's state
 * from a checkpoint (every rank reads it; CONFIG unused), then on to STEPS. The model is opened
 * lazily as retort train opens it (student/model.h: sm_open_random, sm_open), so each rank
 * streams only what it keeps to the stand-in device.
 * Exit 0, or 1 with the message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/fake_cuda.h"

#include "student/gpu_train.c"

#define FAKE_CHECK(cond)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "gpu_train_fake_dp: %s:%d: %s does not hold\n", __FILE__, __LINE__, #cond); \
            abort();                                                                          \
        }                                                                                     \
    } while (0)
#include "tests/unit/fake_cuda_impl.h"

#include "core/json.h"
#include "kernels/matmul.h"

static int fail(const char *what) {
    fprintf(stderr, "gpu_train_fake_dp: %s: %s\n", what, rt_errmsg());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 8 && argc != 10) {
        fprintf(stderr, "usage: gpu_train_fake_dp CONFIG.json SHARDS STEPS ZERO[:offload][:ckpt][:kd] BATCH ACCUM SEED [SAVE_DIR SAVE_AT | --resume DIR]\n");
        return 2;
    }
    mm_blas_single_thread();
    rt_comm *comm;
    if (comm_open(COMM_AUTO, &comm)) return fail("comm_open");
    tr_options o;
    tr_options_default(&o);
    o.steps = atoll(argv[3]), o.zero = atoi(argv[4]), o.batch = atoll(argv[5]), o.grad_accum = atoll(argv[6]);
    o.offload_optimizer = strstr(argv[4], ":offload") != NULL;
    o.checkpoint_layers = strstr(argv[4], ":ckpt") != NULL;
    if (strstr(argv[4], ":kd")) o.kd_alpha = 0.6, o.kd_temperature = 2.0, o.kd_loss = KD_JSD, o.kd_beta = 0.5;
    o.seed = strtoull(argv[7], NULL, 10);
    o.lr = 3e-3, o.warmup = 2, o.weight_decay = 0.1, o.clip = 1.0;
    json_t *cfg;
    sm_model *m;
    sd_data *d;
    gt_trainer *t;
    const char *resume = argc == 10 && !strcmp(argv[8], "--resume") ? argv[9] : NULL;
    if (resume) {
        if (sm_open(resume, &m)) return fail("model");
    } else {
        if (rt_json_load_file(argv[1], &cfg) || sm_open_random(cfg, o.seed, &m)) return fail("model");
        json_decref(cfg);
    }
    if (sd_open(argv[2], &d)) return fail("data");
    sd_data *val = NULL;
    if (strstr(argv[4], ":val") && (sd_open(argv[2], &val) || sd_restrict(val, 0, 7))) return fail("validation data");
    if (gt_create(m, d, &o, comm, &t)) return fail("gt_create");
    if (resume && gt_resume(t, resume)) return fail("gt_resume");
    while (gt_steps_done(t) < o.steps) {
        tr_stats st;
        if (gt_step(t, &st)) return fail("gt_step");
        double vl = 0;
        int64_t vt = 0;
        if (val && gt_eval(t, val, &vl, &vt)) return fail("gt_eval");
        if (comm_rank(comm) == 0)
            printf("{\"step\": %lld, \"loss\": %.9g, \"lr\": %.17g, \"grad_norm\": %.9g, \"loss_tokens\": %lld, "
                   "\"peak_device_bytes\": %zu, \"ce_loss\": %.9g, \"kd_loss\": %.9g, \"val_loss\": %.9g, \"val_targets\": %lld}\n",
                   (long long)st.step, st.loss, st.lr, st.grad_norm, (long long)st.loss_tokens, fake_cuda_peak_bytes(),
                   st.ce_loss, st.kd_loss, vl, (long long)vt);
        if (argc == 10 && !resume && st.step == atoll(argv[9]) && gt_save(t, argv[8], RT_DT_BF16)) return fail("gt_save");
    }
    gt_free(t);
    sd_close(val);
    fake_real_comm_close(comm);
    return 0;
}

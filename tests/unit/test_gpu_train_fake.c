/* student/gpu_train.c run on the CPU: the CUDA runtime and every kernel entry point it calls
 * are stood in for by the kernels' CPU twins on bf16-rounded data (device memory is host
 * memory, poisoned with NaN on allocation; streams and events are no-ops). What this checks
 * without a GPU is the trainer's own orchestration — the plan's offsets and fused groups, the
 * call order and strides of bench/lab_layer.c's sequence, the residual stream and its
 * gradient, checkpoint recomputation, the loss normalization over the step, clipping, the
 * AdamW ranges with decay, the pinned batch packing, the checkpoint permutation — against
 * the CPU trainer (student/train.h, itself tested against transformers and torch). What it
 * cannot check: the CUDA kernels themselves (tests/gpu, make gpu-test) and the device.
 * The model is a tiny Qwen2; the qwen3_* tests run the same checks on a tiny Qwen3 (per-head
 * q/k norms, head_dim decoupled), and the val_* tests gt_eval against tr_eval.
 * Tolerances: the stand-ins round weights and activations to bf16 (2^-8 relative) like the
 * GPU path; through two layers and the head that moves the step-1 loss by ~1e-3 relative.
 * Bounds: loss 1e-2 relative at every step of 6, gradient norm 5e-2.
 * Memory: the stand-in allocator's peak device bytes equal retort train --plan's arithmetic
 * for the same configuration (5%; measured: to the byte); the offloads (optimizer state,
 * layer inputs) change no number and take their bytes off the device. */
#include <criterion/criterion.h>

#include "tests/unit/fake_cuda.h"

#include "student/gpu_train.c"

#define FAKE_CHECK(cond) cr_assert(cond)
#include "tests/unit/fake_cuda_impl.h"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/shard.h"
#include "student/rng.h"

/* ---- the tests ------------------------------------------------------------------------- */

/* hidden 128, 2 query heads and 1 kv head of 64 (the attention kernels' smallest head),
 * FFN 256, 2 layers, vocabulary 64, tied, q/k/v biases */
static const char *QWEN = "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"vocab_size\": 64,"
                          " \"hidden_size\": 128, \"intermediate_size\": 256, \"num_hidden_layers\": 2,"
                          " \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": 64,"
                          " \"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-6, \"rope_theta\": 10000.0,"
                          " \"tie_word_embeddings\": true}";

/* Qwen3: q_norm / k_norm per head before RoPE, head_dim decoupled from the hidden size (4 query
 * heads and 2 kv heads of 64: q is 256 wide, hidden 128), no biases, untied head */
static const char *QWEN3 = "{\"architectures\": [\"Qwen3ForCausalLM\"], \"model_type\": \"qwen3\", \"vocab_size\": 64,"
                           " \"hidden_size\": 128, \"intermediate_size\": 256, \"num_hidden_layers\": 2,"
                           " \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 64,"
                           " \"max_position_embeddings\": 512, \"rms_norm_eps\": 1e-6, \"rope_theta\": 1000000.0,"
                           " \"attention_bias\": false, \"tie_word_embeddings\": false}";

static const char *CONFIG;   /* the model the tests train: QWEN unless a test picks another (each test is a process) */

static char tmpdir[64];

/* documents as tests/tools/student_mkshard makes them: 24 sequences of 32 */
static void make_data(void) {
    mm_blas_single_thread();
    snprintf(tmpdir, sizeof tmpdir, "/tmp/gt-fake-XXXXXX");
    cr_assert(mkdtemp(tmpdir));
    char path[128];
    snprintf(path, sizeof path, "%s/shard-00000.bin", tmpdir);
    shard_writer *w;
    const uint32_t N = 32, V = 64;
    cr_assert_eq(shard_writer_open(path, N, V, 0, &w), 0, "%s", rt_errmsg());
    sr_rng r;
    sr_seed(&r, 11);
    int32_t tok[32];
    uint8_t mask[32];
    shard_doc docs[32];
    uint64_t id = 0;
    for (int s = 0; s < 24; s++) {
        uint32_t at = 0, nd = 0;
        memset(tok, 0, sizeof tok), memset(mask, 0, sizeof mask);
        while (N - at >= 4) {
            uint32_t len = 4 + (uint32_t)sr_below(&r, N / 2 - 3);
            if (len > N - at) len = N - at;
            int32_t t = 3 + (int32_t)sr_below(&r, V - 3);
            for (uint32_t i = 0; i < len; i++) {
                tok[at + i] = t;
                mask[at + i] = i >= len / 4;
                t = sr_below(&r, 8) == 0 ? 3 + (int32_t)sr_below(&r, V - 3) : (5 * t + 3) % (int32_t)(V - 3) + 3;
            }
            docs[nd++] = (shard_doc){.doc_id = id++, .start = at, .len = len};
            at += len;
        }
        cr_assert_eq(shard_writer_add(w, tok, mask, docs, nd), 0, "%s", rt_errmsg());
    }
    cr_assert_eq(shard_writer_finish(w), 0, "%s", rt_errmsg());
}

static void remove_data(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(gpu_train_fake, .init = make_data, .fini = remove_data);

static tr_options opts(int64_t steps) {
    tr_options o;
    tr_options_default(&o);
    o.batch = 2, o.grad_accum = 2, o.steps = steps, o.lr = 3e-3, o.warmup = 2, o.weight_decay = 0.1, o.clip = 1.0;
    o.seed = 5;
    return o;
}

static sm_model *model(void) {
    json_error_t e;
    json_t *cfg = json_loads(CONFIG ? CONFIG : QWEN, 0, &e);
    sm_model *m = NULL;
    cr_assert_eq(sm_create_random(cfg, 3, &m), 0, "%s", rt_errmsg());
    json_decref(cfg);
    return m;
}

static sd_data *data(void) {
    sd_data *d = NULL;
    cr_assert_eq(sd_open(tmpdir, &d), 0, "%s", rt_errmsg());
    return d;
}

static bool close_rel(double a, double b, double rtol) { return fabs(a - b) <= rtol * fmax(fabs(a), fabs(b)); }

/* n steps on the CPU trainer (from `from`: a checkpoint, or NULL for fresh weights); saves at
 * step save_at into `save` when given; stats into st[0..n). */
static void cpu_steps(const tr_options *o, const char *from, int n, tr_stats *st, const char *save, int64_t save_at) {
    sm_model *m;
    if (from) cr_assert_eq(sm_load(from, &m), 0, "%s", rt_errmsg());
    else m = model();
    tr_trainer *t;
    cr_assert_eq(tr_create(m, data(), o, NULL, &t), 0, "%s", rt_errmsg());
    if (from) cr_assert_eq(tr_resume(t, from), 0, "%s", rt_errmsg());
    for (int i = 0; i < n; i++) {
        cr_assert_eq(tr_step(t, &st[i]), 0, "%s", rt_errmsg());
        if (save && st[i].step == save_at) cr_assert_eq(tr_save(t, save, RT_DT_BF16), 0, "%s", rt_errmsg());
    }
    tr_free(t);
}

static void gpu_steps(const tr_options *o, const char *from, int n, tr_stats *st, const char *save, int64_t save_at,
                      double *peak) {
    sm_model *m;
    if (from) cr_assert_eq(sm_load(from, &m), 0, "%s", rt_errmsg());
    else m = model();
    gt_trainer *t;
    cr_assert_eq(gt_create(m, data(), o, NULL, &t), 0, "%s", rt_errmsg());
    if (from) cr_assert_eq(gt_resume(t, from), 0, "%s", rt_errmsg());
    for (int i = 0; i < n; i++) {
        cr_assert_eq(gt_step(t, &st[i]), 0, "%s", rt_errmsg());
        if (save && st[i].step == save_at) cr_assert_eq(gt_save(t, save, RT_DT_BF16), 0, "%s", rt_errmsg());
    }
    if (peak) *peak = gt_peak_mem_gib(t);
    gt_free(t);
}

static void assert_agree(const tr_stats *c, const tr_stats *g, int n) {
    for (int i = 0; i < n; i++) {
        cr_assert_eq(c[i].step, g[i].step);
        cr_assert_eq(c[i].lr, g[i].lr);
        cr_assert_eq(c[i].loss_tokens, g[i].loss_tokens, "step %lld: the same targets", (long long)c[i].step);
        cr_assert(close_rel(c[i].loss, g[i].loss, 1e-2), "step %lld: loss cpu %.6f gpu %.6f", (long long)c[i].step,
                  c[i].loss, g[i].loss);
        cr_assert(close_rel(c[i].grad_norm, g[i].grad_norm, 5e-2), "step %lld: grad norm cpu %.6f gpu %.6f",
                  (long long)c[i].step, c[i].grad_norm, g[i].grad_norm);
    }
}

Test(gpu_train_fake, losses_and_norms_follow_the_cpu_trainer) {
    tr_options o = opts(6);
    tr_stats c[6], g[6];
    double peak = 0;
    cpu_steps(&o, NULL, 6, c, NULL, 0);
    gpu_steps(&o, NULL, 6, g, NULL, 0, &peak);
    assert_agree(c, g, 6);
    cr_assert(close_rel(c[0].loss, g[0].loss, 5e-3), "step 1: cpu %.6f gpu %.6f", c[0].loss, g[0].loss);
    cr_assert_lt(g[5].loss, g[0].loss);
    cr_assert_gt(peak, 0.0);
    /* the peak is what the trainer allocated: weights, gradients, master, moments, arena, pinned */
    cr_assert_lt(peak, 0.1);
}

Test(gpu_train_fake, checkpoint_layers_changes_no_number) {
    tr_options o = opts(3);
    tr_stats a[3], b[3];
    gpu_steps(&o, NULL, 3, a, NULL, 0, NULL);
    o.checkpoint_layers = true;
    gpu_steps(&o, NULL, 3, b, NULL, 0, NULL);
    for (int i = 0; i < 3; i++) cr_assert(a[i].loss == b[i].loss && a[i].grad_norm == b[i].grad_norm, "step %d", i + 1);
}

Test(gpu_train_fake, without_clipping_or_accumulation_too) {
    tr_options o = opts(3);
    o.clip = 0, o.grad_accum = 1, o.batch = 3, o.schedule = TR_SCHED_CONSTANT, o.warmup = 0;
    tr_stats c[3], g[3];
    cpu_steps(&o, NULL, 3, c, NULL, 0);
    gpu_steps(&o, NULL, 3, g, NULL, 0, NULL);
    assert_agree(c, g, 3);
}

Test(gpu_train_fake, checkpoints_cross_between_the_trainers) {
    tr_options o = opts(6);
    tr_stats c[6], g[6], gc[3], cg[3];
    char cdir[128], gdir[128];
    snprintf(cdir, sizeof cdir, "%s/cpu-step-3", tmpdir);
    snprintf(gdir, sizeof gdir, "%s/gpu-step-3", tmpdir);
    cpu_steps(&o, NULL, 6, c, cdir, 3);
    gpu_steps(&o, NULL, 6, g, gdir, 3, NULL);
    /* the GPU checkpoint resumes on the CPU, the CPU one on the GPU: both continue the run */
    cpu_steps(&o, gdir, 3, gc, NULL, 0);
    gpu_steps(&o, cdir, 3, cg, NULL, 0, NULL);
    cr_assert_eq(gc[0].step, 4);
    cr_assert_eq(cg[0].step, 4);
    assert_agree(c + 3, gc, 3);
    assert_agree(c + 3, cg, 3);
    /* the GPU run resumed on the GPU is exact (the fake kernels are deterministic) */
    tr_stats gg[3];
    gpu_steps(&o, gdir, 3, gg, NULL, 0, NULL);
    for (int i = 0; i < 3; i++) cr_assert(gg[i].loss == g[3 + i].loss && gg[i].grad_norm == g[3 + i].grad_norm);
}

/* The first step's gradient, tensor by tensor, against the CPU model's on the same sequences,
 * both from the same weights (rounded to bf16 first, so only the activations' rounding
 * differs). ‖g_gpu − g_cpu‖ / ‖g_cpu‖ per tensor: bf16 activations give ~1e-2 at most here;
 * a wrong stride, rotation, offset or scale gives O(1). Bound 5e-2. */
static void first_gradient_per_tensor(void) {
    tr_options o = opts(1);
    sm_model *mg = model(), *mc = model();
    uint16_t *tmp = malloc((size_t)mg->n_params * 2);
    for (sm_model *m = mg; m; m = m == mg ? mc : NULL) {   /* both: bf16-representable weights */
        cvt_f32_to_bf16(m->params, tmp, (size_t)m->n_params);
        cvt_bf16_to_f32(tmp, m->params, (size_t)m->n_params);
    }
    free(tmp);
    gt_trainer *t;
    cr_assert_eq(gt_create(mg, data(), &o, NULL, &t), 0, "%s", rt_errmsg());
    int64_t total = 0;
    cr_assert_eq(step_grads(t, &total), 0, "%s", rt_errmsg());
    /* the CPU side by hand: the same A micro-batches of B sequences from the start of epoch 0 */
    sd_data *d = data();
    sd_position pos = {.seed = o.seed};
    int64_t N = sd_seq_len(d), T = o.batch * N, A = o.grad_accum, ctotal = 0;
    int32_t *buf = malloc((size_t)(4 * T * A) * sizeof(int32_t));
    for (int64_t a = 0; a < A; a++) {
        int32_t *b = buf + 4 * T * a;
        int64_t n;
        cr_assert_eq(sd_read(d, &pos, o.batch, b, b + T, b + 2 * T, b + 3 * T, &n), 0);
        ctotal += n;
    }
    cr_assert_eq(ctotal, total);
    sm_acts *acts;
    cr_assert_eq(sm_acts_create(mc, T, false, 0, &acts), 0);
    memset(mc->grads, 0, (size_t)mc->n_params * sizeof(float));
    double closs = 0, gloss = 0;
    for (int64_t a = 0; a < A; a++) {
        int32_t *b = buf + 4 * T * a;
        sm_batch bt = {T, b, b + T, b + 2 * T, b + 3 * T};
        double ls;
        cr_assert_eq(sm_forward_backward(mc, acts, &bt, (float)(1.0 / (double)total), &ls, NULL), 0);
        closs += ls;
    }
    for (int64_t a = 0; a < A; a++) gloss += ((double *)(t->arena + t->p.loss))[a];
    cr_assert(close_rel(closs, gloss, 5e-3), "loss sum cpu %.6f gpu %.6f", closs, gloss);
    double worst = 0;
    const char *worst_name = "";
    for (size_t i = 0; i < mc->n_tensors; i++) {
        const sm_tensor *x = &mc->tensors[i];
        const float *gc = mc->grads + x->offset, *gg = t->g + t->p.off[i];
        double num = 0, den = 0;
        for (int64_t e = 0; e < x->numel; e++) {
            num += ((double)gg[e] - gc[e]) * ((double)gg[e] - gc[e]);
            den += (double)gc[e] * gc[e];
        }
        double rel = sqrt(num / (den > 0 ? den : 1e-300));
        cr_assert(rel < 5e-2, "%s: gradient %.3g relative to the CPU model's (norm %.3g)", x->name, rel, sqrt(den));
        if (rel > worst) worst = rel, worst_name = x->name;
    }
    cr_log_info("worst tensor gradient: %s at %.3g relative", worst_name, worst);
    free(buf);
    sm_acts_free(acts);
    sd_close(d);
    sm_free(mc);
    gt_free(t);
}

Test(gpu_train_fake, first_gradient_matches_the_cpu_model_per_tensor) { first_gradient_per_tensor(); }

/* One update with a large weight decay: matrices shrink by (1 − lr·wd), norms and biases do
 * not; AdamW's first step moves every weight by ±lr (m/√v = g/|g|), the same on both
 * trainers unless a gradient's sign differs (an element with g ≈ 0). So the f32 master
 * weights after step 1 agree with the CPU trainer's within 2·lr + rounding everywhere, and
 * up to rounding for ≥ 95% of each matrix's elements. A decay applied to a norm moves it by
 * lr·wd = 0.1 ≫ 2·lr; a missing one moves a matrix element by 0.1·|w|. */
Test(gpu_train_fake, first_update_matches_the_cpu_trainer_weights) {
    tr_options o = opts(1);
    o.lr = 1e-2, o.weight_decay = 10.0, o.warmup = 0, o.clip = 0, o.schedule = TR_SCHED_CONSTANT;
    tr_trainer *ct;
    gt_trainer *gt;
    cr_assert_eq(tr_create(model(), data(), &o, NULL, &ct), 0, "%s", rt_errmsg());
    cr_assert_eq(gt_create(model(), data(), &o, NULL, &gt), 0, "%s", rt_errmsg());
    tr_stats sc, sg;
    cr_assert_eq(tr_step(ct, &sc), 0, "%s", rt_errmsg());
    cr_assert_eq(gt_step(gt, &sg), 0, "%s", rt_errmsg());
    cr_assert(sc.lr == o.lr && sg.lr == o.lr);
    const sm_model *m = tr_model(ct);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const sm_tensor *x = &m->tensors[i];
        const float *wc = m->params + x->offset, *wg = gt->master + gt->p.off[i];
        int64_t same = 0;
        for (int64_t e = 0; e < x->numel; e++) {
            double d = fabs((double)wc[e] - wg[e]);
            cr_assert(d <= 2 * o.lr + 1e-6, "%s[%lld]: cpu %.6f gpu %.6f", x->name, (long long)e, wc[e], wg[e]);
            same += d <= 1e-6 + 1e-6 * fabs(wc[e]);
        }
        if (x->decay)   /* (the k bias's gradient is ~0 analytically — softmax ignores a shift
                         * shared by all keys, up to RoPE — so its signs are noise) */
            cr_assert_geq(same, x->numel * 95 / 100, "%s: %lld of %lld elements agree", x->name, (long long)same,
                          (long long)x->numel);
    }
    tr_free(ct);
    gt_free(gt);
}

/* The device memory the trainer allocates, as the stand-in allocator measures it (peak of
 * cudaMalloc'd bytes over creation and 2 steps; pinned host memory not counted), against
 * `retort train --plan`'s arithmetic (gp_plan_init_config + gp_rank_memory: from the config
 * alone, no model) for the same configuration: within 5% (here the two should agree to the
 * byte but for the cuBLAS context, which the plan leaves out and the stand-in does not
 * allocate). With and without checkpointing. */
static void peak_against_plan(bool ckpt) {
    tr_options o = opts(2);
    o.checkpoint_layers = ckpt;
    fake_cuda_peak_reset();
    size_t base = fake_in_use;
    gt_trainer *t;
    cr_assert_eq(gt_create(model(), data(), &o, NULL, &t), 0, "%s", rt_errmsg());
    tr_stats st;
    for (int i = 0; i < 2; i++) cr_assert_eq(gt_step(t, &st), 0, "%s", rt_errmsg());
    size_t peak = fake_cuda_peak_bytes() - base;
    gt_free(t);
    json_error_t e;
    json_t *cfgj = json_loads(CONFIG ? CONFIG : QWEN, 0, &e);
    mc_config cfg;
    cr_assert_eq(mc_parse(cfgj, &cfg), 0, "%s", rt_errmsg());
    json_decref(cfgj);
    gp_plan p;
    cr_assert_eq(gp_plan_init_config(&p, &cfg, o.batch * 32, ckpt, 0, o.grad_accum, NULL), 0, "%s", rt_errmsg());
    zr_layout z;
    zr_layout_init(&z, p.n, 0, 1, 0);
    gp_mem mem;
    gp_rank_memory(&p, &z, false, gp_ce_ws_estimate(p.ce_chunk, p.V, p.D), &mem);
    double rel = ((double)peak - (double)mem.total) / (double)mem.total;
    cr_log_info("checkpointing %d: measured peak %zu bytes, plan %zu (%.3f%%)", ckpt, peak, mem.total, 100 * rel);
    cr_assert(fabs(rel) <= 0.05, "measured peak %zu bytes, plan %zu: %.1f%% apart", peak, mem.total, 100 * rel);
    gp_plan_free(&p);
}

Test(gpu_train_fake, measured_peak_device_bytes_equal_the_plan) {
    peak_against_plan(false);
    peak_against_plan(true);
}

/* --offload-optimizer: the same numbers (the CPU AdamW twin on the host state is the
 * stand-in's device AdamW), and the master weights and moments leave the device. */
Test(gpu_train_fake, offloaded_optimizer_gives_the_same_steps_off_the_device) {
    tr_options o = opts(4);
    tr_stats a[4], b[4];
    fake_cuda_peak_reset();
    size_t base = fake_in_use;
    gpu_steps(&o, NULL, 4, a, NULL, 0, NULL);
    size_t on_dev = fake_cuda_peak_bytes() - base;
    o.offload_optimizer = true;
    fake_cuda_peak_reset();
    gpu_steps(&o, NULL, 4, b, NULL, 0, NULL);
    size_t off_dev = fake_cuda_peak_bytes() - base;
    for (int i = 0; i < 4; i++) cr_assert(a[i].loss == b[i].loss && a[i].grad_norm == b[i].grad_norm, "step %d", i + 1);
    sm_model *m = model();
    int64_t n = m->n_params;
    sm_free(m);
    /* 12 bytes per parameter (master, m, v) fewer on the device; the GPU layout is ≤ n */
    cr_assert_geq(on_dev - off_dev, (size_t)(12 * n * 95 / 100), "on %zu, offloaded %zu", on_dev, off_dev);
    cr_assert_leq(on_dev - off_dev, (size_t)(12 * n));
}

/* --offload-activations on a 5-layer model (the three newest layer inputs stay on the device,
 * so x[0], x[1] come back from the host in the backward): every number equals plain
 * checkpointing (the host copy is exact: bf16 out and back; a missed upload reads another
 * layer's input, a missed download the pinned buffer's NaN poison), and the device holds
 * three layer inputs instead of six, as the plan says. */
Test(gpu_train_fake, offloaded_layer_inputs_change_no_number) {
    json_error_t e;
    json_t *cfg = json_loads(QWEN, 0, &e);
    json_object_set_new(cfg, "num_hidden_layers", json_integer(5));
    tr_options o = opts(3);
    o.checkpoint_layers = true;
    tr_stats st[2][3];
    size_t peak[2];
    for (int k = 0; k < 2; k++) {
        o.offload_activations = k == 1;
        sm_model *m;
        cr_assert_eq(sm_create_random(cfg, 3, &m), 0, "%s", rt_errmsg());
        fake_cuda_peak_reset();
        size_t base = fake_in_use;
        gt_trainer *t;
        cr_assert_eq(gt_create(m, data(), &o, NULL, &t), 0, "%s", rt_errmsg());
        for (int i = 0; i < 3; i++) cr_assert_eq(gt_step(t, &st[k][i]), 0, "%s", rt_errmsg());
        peak[k] = fake_cuda_peak_bytes() - base;
        gt_free(t);
    }
    for (int i = 0; i < 3; i++)
        cr_assert(st[0][i].loss == st[1][i].loss && st[0][i].grad_norm == st[1][i].grad_norm, "step %d: %.9g %.9g", i + 1,
                  st[0][i].loss, st[1][i].loss);
    cr_assert(isfinite(st[1][2].loss));
    size_t x = 2 * (size_t)(o.batch * 32 * 128);   /* one layer input, bf16 [T, D] (a multiple of 256) */
    cr_assert_eq(peak[0] - peak[1], 3 * x, "peak %zu vs %zu", peak[0], peak[1]);
    /* and the plan agrees */
    mc_config c;
    cr_assert_eq(mc_parse(cfg, &c), 0, "%s", rt_errmsg());
    gp_plan p;
    cr_assert_eq(gp_plan_init_config(&p, &c, o.batch * 32, GP_CKPT_HOST, 0, o.grad_accum, NULL), 0, "%s", rt_errmsg());
    zr_layout z;
    zr_layout_init(&z, p.n, 0, 1, 0);
    gp_mem mem;
    gp_rank_memory(&p, &z, false, gp_ce_ws_estimate(p.ce_chunk, p.V, p.D), &mem);
    cr_assert_eq(mem.total, peak[1]);
    cr_assert_eq(mem.host, 5 * x);
    gp_plan_free(&p);
    json_decref(cfg);
}

/* a wrong combination is refused at creation */
Test(gpu_train_fake, offloaded_layer_inputs_need_checkpointing) {
    tr_options o = opts(1);
    o.offload_activations = true;
    gt_trainer *t;
    cr_assert_eq(gt_create(model(), data(), &o, NULL, &t), RT_EINVAL);
    cr_assert(strstr(rt_errmsg(), "checkpointing"), "%s", rt_errmsg());
}

/* A lazy model (student/model.h: sm_open_random, sm_open — what retort train hands the
 * trainer) is streamed to the device through an sm_reader, chunk by chunk: the same steps,
 * bit for bit, as the eager model whose params are uploaded; from a checkpoint directory
 * (sm_open of a BF16 save) as from sm_load of it. */
Test(gpu_train_fake, lazy_models_train_the_same_bits) {
    tr_options o = opts(3);
    tr_stats a[3], b[3], c[3], d[3];
    gpu_steps(&o, NULL, 3, a, NULL, 0, NULL);
    json_error_t e;
    json_t *cfg = json_loads(QWEN, 0, &e);
    sm_model *m;
    cr_assert_eq(sm_open_random(cfg, 3, &m), 0, "%s", rt_errmsg());
    json_decref(cfg);
    cr_assert_null(m->params);
    gt_trainer *t;
    cr_assert_eq(gt_create(m, data(), &o, NULL, &t), 0, "%s", rt_errmsg());
    for (int i = 0; i < 3; i++) cr_assert_eq(gt_step(t, &b[i]), 0, "%s", rt_errmsg());
    gt_free(t);
    for (int i = 0; i < 3; i++) cr_assert(a[i].loss == b[i].loss && a[i].grad_norm == b[i].grad_norm, "step %d", i + 1);
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/gt-lazy-XXXXXX");
    cr_assert(mkdtemp(dir));
    sm_model *w = model();
    cr_assert_eq(sm_save(w, dir, RT_DT_BF16), 0, "%s", rt_errmsg());
    sm_free(w);
    for (int lazy = 0; lazy < 2; lazy++) {
        cr_assert_eq(lazy ? sm_open(dir, &m) : sm_load(dir, &m), 0, "%s", rt_errmsg());
        cr_assert_eq(gt_create(m, data(), &o, NULL, &t), 0, "%s", rt_errmsg());
        for (int i = 0; i < 3; i++) cr_assert_eq(gt_step(t, lazy ? &d[i] : &c[i]), 0, "%s", rt_errmsg());
        gt_free(t);
    }
    for (int i = 0; i < 3; i++) cr_assert(c[i].loss == d[i].loss && c[i].grad_norm == d[i].grad_norm, "step %d", i + 1);
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* gt_resume reads only what the rank keeps, from the mmapped files: the f32 masters of a BF16
 * checkpoint, or the weights of an F32 one (which are the masters: no master.* tensors). Saved
 * both ways after step 2, each resumes into the same steps 3–4 as the run that went on, bit for
 * bit (the stand-in kernels are deterministic). */
Test(gpu_train_fake, resumes_from_f32_and_bf16_checkpoints_alike) {
    tr_options o = opts(4);
    tr_stats run[4], r[2][2];
    char dirs[2][64];
    for (int k = 0; k < 2; k++) {
        snprintf(dirs[k], sizeof dirs[k], "/tmp/gt-resume-XXXXXX");
        cr_assert(mkdtemp(dirs[k]));
    }
    gt_trainer *t;
    cr_assert_eq(gt_create(model(), data(), &o, NULL, &t), 0, "%s", rt_errmsg());
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(gt_step(t, &run[i]), 0, "%s", rt_errmsg());
        if (i == 1) {
            cr_assert_eq(gt_save(t, dirs[0], RT_DT_BF16), 0, "%s", rt_errmsg());
            cr_assert_eq(gt_save(t, dirs[1], RT_DT_F32), 0, "%s", rt_errmsg());
        }
    }
    gt_free(t);
    for (int k = 0; k < 2; k++) {
        sm_model *m;
        cr_assert_eq(sm_open(dirs[k], &m), 0, "%s", rt_errmsg());
        cr_assert_eq(gt_create(m, data(), &o, NULL, &t), 0, "%s", rt_errmsg());
        cr_assert_eq(gt_resume(t, dirs[k]), 0, "%s", rt_errmsg());
        cr_assert_eq(gt_steps_done(t), 2);
        for (int i = 0; i < 2; i++) cr_assert_eq(gt_step(t, &r[k][i]), 0, "%s", rt_errmsg());
        gt_free(t);
        for (int i = 0; i < 2; i++)
            cr_assert(r[k][i].loss == run[2 + i].loss && r[k][i].grad_norm == run[2 + i].grad_norm, "%s: step %d",
                      k ? "F32" : "BF16", 3 + i);
        char cmd[96];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dirs[k]);
        cr_assert_eq(system(cmd), 0);
    }
}

/* gt_save streams tensor by tensor and checks each as it comes: a weight that is not finite
 * stops the save with RT_ERANGE naming the tensor, and nothing (no DIR, no DIR.partial) is left. */
Test(gpu_train_fake, a_non_finite_weight_is_never_saved) {
    tr_options o = opts(1);
    gt_trainer *t;
    tr_stats st;
    cr_assert_eq(gt_create(model(), data(), &o, NULL, &t), 0, "%s", rt_errmsg());
    cr_assert_eq(gt_step(t, &st), 0, "%s", rt_errmsg());
    const sm_tensor *x = sm_find(t->m, "model.layers.1.mlp.up_proj.weight");
    cr_assert_not_null(x);
    t->master[t->p.off[x - t->m->tensors] + 5] = NAN;
    char dir[64], partial[80];
    snprintf(dir, sizeof dir, "/tmp/gt-nan-XXXXXX");
    cr_assert(mkdtemp(dir));
    cr_assert_eq(rmdir(dir), 0);
    cr_assert_eq(gt_save(t, dir, RT_DT_BF16), RT_ERANGE);
    cr_assert(strstr(rt_errmsg(), "model.layers.1.mlp.up_proj.weight"), "%s", rt_errmsg());
    snprintf(partial, sizeof partial, "%s.partial", dir);
    cr_assert(access(dir, F_OK) != 0 && access(partial, F_OK) != 0);
    gt_free(t);
}

/* ---- Qwen3: the per-head q/k norms on the device ------------------------------------------ */

/* The Qwen3 model on the GPU trainer (its q_norm / k_norm forward and backward through the
 * norm kernels over rows of head_dim) gives the CPU trainer's losses and norms (the CPU
 * trainer's Qwen3 is tested against transformers in tests/ref/test_train.py) within the Qwen2
 * bounds above, with and without layer checkpointing (which recomputes the norms). */
Test(gpu_train_fake, qwen3_losses_and_norms_follow_the_cpu_trainer) {
    CONFIG = QWEN3;
    sm_model *m = model();
    cr_assert(m->cfg.qk_norm && m->Hq * m->hd != m->D);   /* the norms exist; head_dim decoupled */
    cr_assert_not_null(sm_find(m, "model.layers.1.self_attn.k_norm.weight"));
    sm_free(m);
    tr_options o = opts(6);
    tr_stats c[6], g[6], k[6];
    cpu_steps(&o, NULL, 6, c, NULL, 0);
    gpu_steps(&o, NULL, 6, g, NULL, 0, NULL);
    assert_agree(c, g, 6);
    cr_assert(close_rel(c[0].loss, g[0].loss, 5e-3), "step 1: cpu %.6f gpu %.6f", c[0].loss, g[0].loss);
    cr_assert_lt(g[5].loss, g[0].loss);
    o.checkpoint_layers = true;
    gpu_steps(&o, NULL, 6, k, NULL, 0, NULL);
    for (int i = 0; i < 6; i++) cr_assert(k[i].loss == g[i].loss && k[i].grad_norm == g[i].grad_norm, "step %d", i + 1);
}

/* Every tensor's first gradient, q_norm and k_norm included, against the CPU model's (bound 5e-2
 * as for Qwen2: a missing norm backward leaves q_norm's gradient at 0, relative error 1). */
Test(gpu_train_fake, qwen3_first_gradient_matches_the_cpu_model_per_tensor) {
    CONFIG = QWEN3;
    first_gradient_per_tensor();
}

/* The plan from the config (`retort train --plan`) places the norms and their activations:
 * the measured peak equals it, with and without checkpointing. */
Test(gpu_train_fake, qwen3_measured_peak_device_bytes_equal_the_plan) {
    CONFIG = QWEN3;
    peak_against_plan(false);
    peak_against_plan(true);
}

/* A Qwen3 checkpoint written by the GPU trainer resumes on the CPU trainer and continues the run. */
Test(gpu_train_fake, qwen3_checkpoint_resumes_on_the_cpu) {
    CONFIG = QWEN3;
    tr_options o = opts(4);
    tr_stats c[4], g[4], gc[2];
    char gdir[128];
    snprintf(gdir, sizeof gdir, "%s/q3-gpu-step-2", tmpdir);
    cpu_steps(&o, NULL, 4, c, NULL, 0);
    gpu_steps(&o, NULL, 4, g, gdir, 2, NULL);
    cpu_steps(&o, gdir, 2, gc, NULL, 0);
    cr_assert_eq(gc[0].step, 3);
    assert_agree(c + 2, gc, 2);
}

/* ---- validation loss ------------------------------------------------------------------- */

/* gt_eval against tr_eval on the same weights and validation data (7 of the suite's sequences:
 * batch 2, so the last batch is padded): the same targets, the loss within the bf16 bound of
 * the step losses (1e-2), before training and after 3 steps — with checkpointing too, and on
 * Qwen3; evaluating changes nothing of the run (the next step's loss and norm are the ones a
 * run without it gets, bit for bit). */
static void val_loss_follows_the_cpu_trainer(bool ckpt) {
    tr_options o = opts(4);
    o.checkpoint_layers = ckpt;
    tr_trainer *ct;
    gt_trainer *gt;
    cr_assert_eq(tr_create(model(), data(), &o, NULL, &ct), 0, "%s", rt_errmsg());
    cr_assert_eq(gt_create(model(), data(), &o, NULL, &gt), 0, "%s", rt_errmsg());
    sd_data *val = data();
    cr_assert_eq(sd_restrict(val, 5, 7), 0, "%s", rt_errmsg());
    tr_stats sc, sg, plain[4];
    gpu_steps(&o, NULL, 4, plain, NULL, 0, NULL);
    for (int i = 0; i <= 3; i++) {
        if (i > 0) {
            cr_assert_eq(tr_step(ct, &sc), 0, "%s", rt_errmsg());
            cr_assert_eq(gt_step(gt, &sg), 0, "%s", rt_errmsg());
            cr_assert(sg.loss == plain[i - 1].loss && sg.grad_norm == plain[i - 1].grad_norm, "step %d", i);
        }
        double lc, lg;
        int64_t nc, ng;
        cr_assert_eq(tr_eval(ct, val, &lc, &nc), 0, "%s", rt_errmsg());
        cr_assert_eq(gt_eval(gt, val, &lg, &ng), 0, "%s", rt_errmsg());
        cr_assert_gt(nc, 0);
        cr_assert_eq(nc, ng, "after %d steps: the same targets", i);
        cr_assert(close_rel(lc, lg, 1e-2), "after %d steps: val loss cpu %.6f gpu %.6f", i, lc, lg);
    }
    cr_assert_eq(gt_step(gt, &sg), 0, "%s", rt_errmsg());
    cr_assert(sg.loss == plain[3].loss && sg.grad_norm == plain[3].grad_norm);
    sd_close(val);
    tr_free(ct);
    gt_free(gt);
}

Test(gpu_train_fake, val_loss_follows_the_cpu_trainer) {
    val_loss_follows_the_cpu_trainer(false);
    val_loss_follows_the_cpu_trainer(true);
}

Test(gpu_train_fake, qwen3_val_loss_follows_the_cpu_trainer) {
    CONFIG = QWEN3;
    val_loss_follows_the_cpu_trainer(false);
}

/* validation data of another sequence length: one error naming both */
Test(gpu_train_fake, val_data_of_another_length_is_refused) {
    char dir[64], path[96];
    snprintf(dir, sizeof dir, "/tmp/gt-val-XXXXXX");
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/shard-00000.bin", dir);
    shard_writer *w;
    cr_assert_eq(shard_writer_open(path, 16, 64, 0, &w), 0, "%s", rt_errmsg());
    int32_t tok[16] = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20};
    uint8_t mask[16];
    memset(mask, 1, sizeof mask);
    shard_doc doc = {.doc_id = 0, .start = 0, .len = 16};
    cr_assert_eq(shard_writer_add(w, tok, mask, &doc, 1), 0, "%s", rt_errmsg());
    cr_assert_eq(shard_writer_finish(w), 0, "%s", rt_errmsg());
    tr_options o = opts(1);
    gt_trainer *t;
    cr_assert_eq(gt_create(model(), data(), &o, NULL, &t), 0, "%s", rt_errmsg());
    sd_data *val;
    cr_assert_eq(sd_open(dir, &val), 0, "%s", rt_errmsg());
    double l;
    int64_t n;
    cr_assert_eq(gt_eval(t, val, &l, &n), RT_EINVAL);
    cr_assert(strstr(rt_errmsg(), "16 tokens") && strstr(rt_errmsg(), "32"), "%s", rt_errmsg());
    sd_close(val);
    gt_free(t);
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* ---- logit distillation: the GPU trainer's KD head (kd_fused_cuda) follows the CPU trainer ---- */

/* The suite's shard again, each sequence with a teacher top-k (1…4 entries, ids < 64) on 4 of
 * every 5 mask-1 positions, in kd_dir. */
static void make_kd_data(char *kd_dir) {
    snprintf(kd_dir, 64, "/tmp/gt-fake-kd-XXXXXX");
    cr_assert(mkdtemp(kd_dir));
    char src[128], dst[128];
    snprintf(src, sizeof src, "%s/shard-00000.bin", tmpdir);
    snprintf(dst, sizeof dst, "%s/shard-00000.bin", kd_dir);
    shard_file *f;
    cr_assert_eq(shard_open(src, &f), 0, "%s", rt_errmsg());
    const shard_info *in = shard_get_info(f);
    shard_writer *w;
    cr_assert_eq(shard_writer_open(dst, in->seq_len, in->vocab_size, in->pad_id, &w), 0, "%s", rt_errmsg());
    cr_assert_eq(shard_writer_set_topk(w, 4, 64), 0, "%s", rt_errmsg());
    sr_rng r;
    sr_seed(&r, 17);
    int32_t tok[32], ids[32 * 4];
    uint8_t mask[32], tn[32];
    float lps[32 * 4];
    for (uint64_t s = 0; s < in->n_seqs; s++) {
        shard_read_seq(f, s, tok, mask);
        size_t nd;
        const shard_doc *docs = shard_seq_docs(f, s, &nd);
        memset(ids, 0, sizeof ids), memset(lps, 0, sizeof lps);
        for (int i = 0; i < 32; i++) {
            tn[i] = mask[i] && sr_below(&r, 5) ? (uint8_t)(1 + sr_below(&r, 4)) : 0;
            for (int a = 0; a < tn[i]; a++) {
                ids[i * 4 + a] = (tok[i] + 13 * a) % 64;
                lps[i * 4 + a] = -0.2f - 0.9f * (float)a - 0.01f * (float)sr_below(&r, 50);
            }
        }
        cr_assert_eq(shard_writer_add_topk(w, tok, mask, docs, nd, tn, ids, lps), 0, "%s", rt_errmsg());
    }
    cr_assert_eq(shard_writer_finish(w), 0, "%s", rt_errmsg());
    shard_close(f);
}

Test(gpu_train_fake, kd_losses_follow_the_cpu_trainer) {
    char kd_dir[64];
    make_kd_data(kd_dir);
    const char *kinds[] = {"forward", "jsd:0.5", "uld"};
    for (int k = 0; k < 3; k++) {
        tr_options o = opts(4);
        kd_kind kind;
        cr_assert_eq(kd_parse_kind(kinds[k], &kind, &o.kd_beta), 0);
        o.kd_loss = (int)kind, o.kd_alpha = 0.6, o.kd_temperature = k == 1 ? 2.0 : 1.0;
        tr_stats c[4], g[4];
        for (int which = 0; which < 2; which++) {
            sd_data *d;
            cr_assert_eq(sd_open(kd_dir, &d), 0, "%s", rt_errmsg());
            if (which == 0) {
                tr_trainer *t;
                cr_assert_eq(tr_create(model(), d, &o, NULL, &t), 0, "%s", rt_errmsg());
                for (int i = 0; i < 4; i++) cr_assert_eq(tr_step(t, &c[i]), 0, "%s", rt_errmsg());
                tr_free(t);
            } else {
                gt_trainer *t;
                cr_assert_eq(gt_create(model(), d, &o, NULL, &t), 0, "%s", rt_errmsg());
                for (int i = 0; i < 4; i++) cr_assert_eq(gt_step(t, &g[i]), 0, "%s", rt_errmsg());
                gt_free(t);
            }
        }
        assert_agree(c, g, 4);   /* bf16 weights and activations against f32 */
        for (int i = 0; i < 4; i++) {
            cr_assert(close_rel(c[i].ce_loss, g[i].ce_loss, 1e-2), "%s step %d: CE cpu %.6f gpu %.6f", kinds[k], i + 1,
                      c[i].ce_loss, g[i].ce_loss);
            cr_assert(close_rel(c[i].kd_loss, g[i].kd_loss, 3e-2), "%s step %d: D cpu %.6f gpu %.6f", kinds[k], i + 1,
                      c[i].kd_loss, g[i].kd_loss);
            cr_assert_gt(g[i].kd_loss, 0.0);
        }
    }
    /* shards without top-k: one error at creation */
    tr_options o = opts(1);
    o.kd_alpha = 0.5;
    gt_trainer *t;
    cr_assert_eq(gt_create(model(), data(), &o, NULL, &t), RT_EINVAL);
    cr_assert(strstr(rt_errmsg(), "top-k"), "%s", rt_errmsg());
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", kd_dir);
    cr_assert_eq(system(cmd), 0);
}

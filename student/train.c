/* student/train.c — optimizer steps, schedules and training checkpoints. */
#include "student/train.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "kernels/optim.h"
#include "student/hfdir.h"
#include "student/zero.h"

#define STATE_FORMAT "retort-trainer-state"
#define STATE_VERSION 1

struct tr_trainer {
    sm_model *m;
    sd_data *d;
    tr_options o;
    tp_pool *pool;
    sm_acts *acts;
    rt_comm *comm;                       /* borrowed; NULL: one rank */
    zr_layout z;
    float *mom1, *mom2;                  /* [zr_state_len]: element i of the flat buffer at i − mbase */
    int64_t mbase;                       /* 0 (replicated) or rank·S (sharded) */
    int64_t step;                        /* updates done */
    sd_position pos;
    int64_t N;                           /* sequence length */
    int32_t *tokens, *doc_start, *posi, *target;   /* [accum, batch·N] */
    /* level 3 (ZeRO-3): m->params and m->grads are NULL outside a unit's hooks */
    float *own_p, *own_g;                /* [S]: this rank's part of the parameters, of the reduced gradient */
    float *unit_p;                       /* [unit_p_len]: the gathered unit; then the reduce-scatter scratch */
    float *unit_g;                       /* [umax]: the local gradient of the unit in its backward */
    float *embed_g;                      /* tied embeddings: the embedding's local gradient, head to embedding */
    int64_t umax, unit_p_len, embed_len;
    /* logit distillation (kd_alpha > 0): the teacher top-k of every row, [accum, batch·N (·K)] */
    kd_spec kd;
    uint8_t *top_n;
    int32_t *top_ids;
    float *top_lps;
};

void tr_options_default(tr_options *o) {
    *o = (tr_options){.batch = 1, .grad_accum = 1, .steps = 1, .lr = 1e-4, .min_lr_ratio = 0.1, .warmup = 0,
                      .schedule = TR_SCHED_COSINE, .weight_decay = 0.0, .clip = 1.0, .beta1 = 0.9, .beta2 = 0.95,
                      .eps = 1e-8, .seed = 0, .zero = 0, .kd_temperature = 1.0, .kd_loss = KD_FORWARD};
}

double tr_lr_at(const tr_options *o, int64_t s) {
    if (s < o->warmup) return o->lr * (double)(s + 1) / (double)o->warmup;
    double lo = o->lr * o->min_lr_ratio, span = (double)(o->steps - o->warmup - 1);
    double prog = span > 0 ? (double)(s - o->warmup) / span : 1.0;
    if (prog > 1) prog = 1;
    switch (o->schedule) {
    case TR_SCHED_CONSTANT: return o->lr;
    case TR_SCHED_LINEAR: return lo + (o->lr - lo) * (1.0 - prog);
    default: return lo + (o->lr - lo) * 0.5 * (1.0 + cos(M_PI * prog));
    }
}

static int check_options(const tr_options *o) {
    if (o->batch < 1 || o->grad_accum < 1 || o->steps < 1) return rt_fail(RT_EINVAL, "batch, grad-accum and steps must be ≥ 1");
    if (!(o->lr > 0) || !(o->min_lr_ratio >= 0 && o->min_lr_ratio <= 1) || o->warmup < 0 || !(o->weight_decay >= 0) ||
        !(o->clip >= 0) || !(o->beta1 >= 0 && o->beta1 < 1) || !(o->beta2 >= 0 && o->beta2 < 1) || !(o->eps > 0))
        return rt_fail(RT_EINVAL, "lr > 0, min-lr-ratio in [0, 1], warmup ≥ 0, weight-decay ≥ 0, clip ≥ 0 expected");
    if (o->zero < 0 || o->zero > 3) return rt_fail(RT_EINVAL, "ZeRO level %d: 0, 1, 2 or 3 expected", o->zero);
    return 0;
}

static bool tied(const sm_model *m) { return m->lm_head == m->embed; }

/* Level 3: keep this rank's part of the parameters, drop the whole buffers, and make the
 * unit buffers (student/zero.h). */
static int shard_model(tr_trainer *t) {
    sm_model *m = t->m;
    const zr_layout *z = &t->z;
    int64_t S = z->shard, a = t->mbase, b = a + S < m->n_params ? a + S : m->n_params;
    for (int64_t u = 0; u < sm_units(m); u++) {
        int64_t lo, hi;
        sm_unit_range(m, u, &lo, &hi);
        if (hi - lo > t->umax) t->umax = hi - lo;
    }
    t->unit_p_len = t->umax > 16 * (int64_t)z->ranks ? t->umax : 16 * (int64_t)z->ranks;
    if (tied(m)) {
        int64_t lo;
        sm_unit_range(m, 0, &lo, &t->embed_len);
        t->embed_len -= lo;
    }
    t->own_p = rt_aligned_alloc(64, (size_t)S * sizeof(float));
    t->own_g = rt_aligned_alloc(64, (size_t)S * sizeof(float));
    t->unit_p = rt_aligned_alloc(64, (size_t)t->unit_p_len * sizeof(float));
    t->unit_g = rt_aligned_alloc(64, (size_t)t->umax * sizeof(float));
    if (t->embed_len) t->embed_g = rt_aligned_alloc(64, (size_t)t->embed_len * sizeof(float));
    if (!t->own_p || !t->own_g || !t->unit_p || !t->unit_g || (t->embed_len && !t->embed_g)) return RT_ENOMEM;
    memset(t->own_p, 0, (size_t)S * sizeof(float));
    if (b > a && m->params) memcpy(t->own_p, m->params + a, (size_t)(b - a) * sizeof(float));
    else if (b > a) {   /* a lazy model (sm_open): read the part only, never the whole */
        sm_reader *r;
        int rc = sm_reader_open(m, &r);
        if (!rc) rc = sm_reader_read(r, a, b, t->own_p);
        sm_reader_close(r);
        if (rc) return rc;
    }
    free(m->params);
    free(m->grads);
    m->params = m->grads = NULL;
    return 0;
}

/* Level 3 hooks (student/model.h): gather the unit before it runs (the embedding's backward
 * reads no weights), point the model at it; after its backward, reduce-scatter its local
 * gradient into own_g — except the tied head's, which the embedding's backward adds to. */
static int unit_begin(void *ctx, int64_t u, bool bwd) {
    tr_trainer *t = ctx;
    sm_model *m = t->m;
    int64_t lo, hi;
    sm_unit_range(m, u, &lo, &hi);
    if (!(u == 0 && bwd)) {
        int rc = zr_range_gather(&t->z, t->comm, t->own_p, lo, hi, t->unit_p, -1);
        if (rc) return rc;
    }
    m->params = t->unit_p;
    m->base = lo;
    if (bwd) {
        bool emb = tied(m) && (u == 0 || u == m->L + 2);
        m->grads = emb ? t->embed_g : t->unit_g;
        if (!(emb && u == 0)) memset(m->grads, 0, (size_t)(hi - lo) * sizeof(float));
    }
    return 0;
}

static int unit_end(void *ctx, int64_t u, bool bwd) {
    tr_trainer *t = ctx;
    sm_model *m = t->m;
    int rc = 0;
    if (bwd && !(tied(m) && u == m->L + 2)) {
        int64_t lo, hi;
        sm_unit_range(m, u, &lo, &hi);
        rc = zr_range_reduce_scatter_add(&t->z, t->comm, m->grads, lo, hi, t->own_g, t->unit_p, t->unit_p_len);
    }
    m->params = m->grads = NULL;
    m->base = 0;
    return rc;
}

/* Distilling needs teacher top-k in every shard and, unless the loss is ULD, the student's
 * tokenizer on the teacher's side too. */
int tr_kd_check(const sm_model *m, sd_data *d, const tr_options *o) {
    if (!(o->kd_alpha > 0)) return 0;
    if (!(o->kd_alpha <= 1)) return rt_fail(RT_EINVAL, "--kd-alpha %g not in [0, 1]", o->kd_alpha);
    if (!(o->kd_temperature > 0)) return rt_fail(RT_EINVAL, "--kd-temperature %g must be positive", o->kd_temperature);
    if (!sd_top_k(d))
        return rt_fail(RT_EINVAL, "--kd-alpha %g needs the teacher's top-k logprobs in the training shards, and these "
                       "carry none (pack them from samples generated with --logprobs K, or train with --kd-alpha 0)",
                       o->kd_alpha);
    if (o->kd_loss != KD_ULD && (int64_t)sd_teacher_vocab(d) != m->V && sd_teacher_vocab(d) != sd_vocab_size(d))
        return rt_fail(RT_EINVAL, "the teacher's vocabulary (%u tokens) is not the student's (%lld): a different "
                       "tokenizer needs --kd-loss uld", sd_teacher_vocab(d), (long long)m->V);
    return 0;
}

int tr_create(sm_model *m, sd_data *d, const tr_options *o, tp_pool *pool, tr_trainer **out) {
    return tr_create_dp(m, d, o, pool, NULL, out);
}

int tr_create_dp(sm_model *m, sd_data *d, const tr_options *o, tp_pool *pool, rt_comm *comm, tr_trainer **out) {
    *out = NULL;
    int P = comm ? comm_size(comm) : 1, rank = comm ? comm_rank(comm) : 0;
    int rc = check_options(o);
    if (!rc && (int64_t)sd_vocab_size(d) > m->V)
        rc = rt_fail(RT_EINVAL, "the shards use a vocabulary of %u tokens, the model has %lld", sd_vocab_size(d), (long long)m->V);
    if (!rc && P > 1 && (uint64_t)(o->batch * o->grad_accum * P) > sd_num_seqs(d))
        rc = rt_fail(RT_EINVAL,
                     "a step of %lld sequences (batch %lld × grad-accum %lld × %d ranks) is more than the %llu sequences "
                     "in the data: every rank needs sequences of its own",
                     (long long)(o->batch * o->grad_accum * P), (long long)o->batch, (long long)o->grad_accum, P,
                     (unsigned long long)sd_num_seqs(d));
    if (!rc) rc = tr_kd_check(m, d, o);
    tr_trainer *t = rc ? NULL : rt_calloc(1, sizeof *t);
    if (!t) {
        sm_free(m);
        sd_close(d);
        return rc ? rc : RT_ENOMEM;
    }
    t->m = m;
    t->d = d;
    t->o = *o;
    t->pool = pool;
    t->N = sd_seq_len(d);
    t->pos.seed = o->seed;
    t->comm = comm;
    zr_layout_init(&t->z, m->n_params, rank, P, o->zero);
    t->mbase = o->zero ? (int64_t)rank * t->z.shard : 0;
    if (o->zero == 3) rc = shard_model(t);
    else if (!(rc = sm_materialize(m)) && t->z.padded > m->n_params) rc = sm_pad_flat(m, t->z.padded);
    if (rc) { tr_free(t); return rc; }
    int64_t T = o->batch * t->N, all = T * o->grad_accum, ns = zr_state_len(&t->z);
    t->mom1 = rt_aligned_alloc(64, (size_t)ns * sizeof(float));
    t->mom2 = rt_aligned_alloc(64, (size_t)ns * sizeof(float));
    t->tokens = rt_malloc((size_t)all * sizeof(int32_t));
    t->doc_start = rt_malloc((size_t)all * sizeof(int32_t));
    t->posi = rt_malloc((size_t)all * sizeof(int32_t));
    t->target = rt_malloc((size_t)all * sizeof(int32_t));
    if (!t->mom1 || !t->mom2 || !t->tokens || !t->doc_start || !t->posi || !t->target) rc = RT_ENOMEM;
    if (!rc && o->kd_alpha > 0) {
        int K = (int)sd_top_k(d);
        t->kd = (kd_spec){.kind = (kd_kind)o->kd_loss, .alpha = o->kd_alpha, .temperature = o->kd_temperature,
                          .beta = o->kd_beta, .k = K};
        t->top_n = rt_malloc((size_t)all);
        t->top_ids = rt_malloc((size_t)all * (size_t)K * sizeof(int32_t));
        t->top_lps = rt_malloc((size_t)all * (size_t)K * sizeof(float));
        if (!t->top_n || !t->top_ids || !t->top_lps) rc = RT_ENOMEM;
    }
    if (!rc) rc = sm_acts_create(m, T, o->checkpoint_layers, o->ce_chunk, &t->acts);
    if (rc) { tr_free(t); return rc; }
    memset(t->mom1, 0, (size_t)ns * sizeof(float));
    memset(t->mom2, 0, (size_t)ns * sizeof(float));
    *out = t;
    return 0;
}

void tr_free(tr_trainer *t) {
    if (!t) return;
    sm_acts_free(t->acts);
    sm_free(t->m);
    sd_close(t->d);
    free(t->mom1);
    free(t->mom2);
    free(t->tokens);
    free(t->doc_start);
    free(t->posi);
    free(t->target);
    free(t->own_p);
    free(t->own_g);
    free(t->unit_p);
    free(t->unit_g);
    free(t->embed_g);
    free(t->top_n);
    free(t->top_ids);
    free(t->top_lps);
    free(t);
}

int tr_memory(const tr_trainer *t, tr_buffer out[TR_MAX_BUFFERS]) {
    const sm_model *m = t->m;
    int64_t flat = t->z.padded > m->n_params ? t->z.padded : m->n_params, ns = zr_state_len(&t->z), n = 0;
    bool z3 = t->z.level == 3;
    out[n++] = (tr_buffer){"params", (z3 ? t->z.shard : flat) * 4};
    out[n++] = (tr_buffer){"grads", (z3 ? t->z.shard : flat) * 4};
    out[n++] = (tr_buffer){"adam_m", ns * 4};
    out[n++] = (tr_buffer){"adam_v", ns * 4};
    if (z3) {
        out[n++] = (tr_buffer){"unit_params", t->unit_p_len * 4};
        out[n++] = (tr_buffer){"unit_grads", t->umax * 4};
        if (t->embed_g) out[n++] = (tr_buffer){"embed_grads", t->embed_len * 4};
    }
    return (int)n;
}

int64_t tr_steps_done(const tr_trainer *t) { return t->step; }
const sm_model *tr_model(const tr_trainer *t) { return t->m; }

static int step_fail(int rc) { return rt_errorf(rc, "data-parallel step"); }

int tr_eval(tr_trainer *t, sd_data *val, double *loss, int64_t *targets) {
    *loss = 0;
    *targets = 0;
    bool z3 = t->z.level == 3;   /* every rank runs the passes: each unit's weights gathered as the step does */
    sm_hooks hooks = {unit_begin, unit_end, t};
    sm_acts_set_kd(t->acts, NULL);   /* the validation loss is the cross-entropy */
    if ((int64_t)sd_seq_len(val) != t->N)
        return rt_fail(RT_EINVAL, "the validation data holds sequences of %u tokens, the training data %lld",
                       sd_seq_len(val), (long long)t->N);
    if ((int64_t)sd_vocab_size(val) > t->m->V)
        return rt_fail(RT_EINVAL, "the validation data's vocabulary (%u) is larger than the model's (%lld)",
                       sd_vocab_size(val), (long long)t->m->V);
    sd_position pos = {0, 0, 0};   /* one pass over every sequence: the order does not change the mean */
    uint64_t n = sd_num_seqs(val);
    double sum = 0;
    int64_t count = 0;
    for (uint64_t i = 0; i < n;) {
        int64_t k = (int64_t)(n - i < (uint64_t)t->o.batch ? n - i : (uint64_t)t->o.batch), nt = 0;
        int rc = sd_read(val, &pos, k, t->tokens, t->doc_start, t->posi, t->target, &nt);
        double ls = 0;
        sm_batch b = {k * t->N, t->tokens, t->doc_start, t->posi, t->target};
        if (!rc && nt > 0) rc = sm_forward_loss_hooked(t->m, t->acts, &b, &ls, z3 ? &hooks : NULL, t->pool);
        if (rc) return rt_errorf(rc, "validation loss");
        sum += ls;
        count += nt;
        i += (uint64_t)k;
    }
    *loss = count ? sum / (double)count : NAN;
    *targets = count;
    return 0;
}

int tr_step(tr_trainer *t, tr_stats *st) {
    sm_model *m = t->m;
    const zr_layout *z = &t->z;
    int64_t T = t->o.batch * t->N, A = t->o.grad_accum, total = 0, P = z->ranks;
    /* the step's B·A·P sequences in data order; rank r reads the r-th run of B·A of them */
    sd_skip(t->d, &t->pos, (uint64_t)(z->rank * t->o.batch * A));
    for (int64_t a = 0; a < A; a++) {
        int64_t n;
        int64_t K = t->kd.k;
        int rc = sd_read_kd(t->d, &t->pos, t->o.batch, t->tokens + a * T, t->doc_start + a * T, t->posi + a * T,
                            t->target + a * T, &n, t->top_n ? t->top_n + a * T : NULL,
                            t->top_n ? t->top_ids + a * T * K : NULL, t->top_n ? t->top_lps + a * T * K : NULL);
        if (rc) return rc;
        total += n;
    }
    sd_skip(t->d, &t->pos, (uint64_t)((P - 1 - z->rank) * t->o.batch * A));
    int rc = 0;
    if (P > 1 && (rc = comm_allreduce(t->comm, &total, &total, 1, RT_DT_I64, COMM_SUM))) return step_fail(rc);
    bool z3 = z->level == 3;
    /* flat element i ∈ [lo, hi) of the parameters / reduced gradient: pg[i − g0], gg[i − g0] */
    float *pg = z3 ? t->own_p : m->params, *gg = z3 ? t->own_g : m->grads;
    int64_t g0 = z3 ? t->mbase : 0;
    if (z3) memset(t->own_g, 0, (size_t)z->shard * sizeof(float));
    else memset(m->grads, 0, (size_t)m->n_params * sizeof(float));
    double loss_sum = 0, sums[2] = {0, 0};   /* Σ CE, Σ D */
    float scale = total > 0 ? (float)(1.0 / (double)total) : 0.0f;
    sm_hooks hooks = {unit_begin, unit_end, t};
    for (int64_t a = 0; a < A; a++) {
        kd_spec kd = t->kd;
        if (t->top_n) {
            kd.top_n = t->top_n + a * T;
            kd.top_ids = t->top_ids + a * T * kd.k;
            kd.top_lps = t->top_lps + a * T * kd.k;
        }
        sm_batch b = {T, t->tokens + a * T, t->doc_start + a * T, t->posi + a * T, t->target + a * T};
        sm_acts_set_kd(t->acts, t->top_n ? &kd : NULL);
        double ls;
        rc = sm_forward_backward_hooked(m, t->acts, &b, scale, &ls, z3 ? &hooks : NULL, t->pool);
        sm_acts_set_kd(t->acts, NULL);   /* kd points into this loop */
        if (rc) {
            if (z3) {   /* a failed pass may stop inside a unit */
                m->params = m->grads = NULL;
                m->base = 0;
            }
            return rc;
        }
        loss_sum += ls;
        double ce, kds;
        sm_acts_kd_sums(t->acts, &ce, &kds);
        sums[0] += ce;
        sums[1] += kds;
    }
    double sumsq = 0;
    if (P > 1 && (rc = comm_allreduce(t->comm, &loss_sum, &loss_sum, 1, RT_DT_F64, COMM_SUM))) return step_fail(rc);
    if (P > 1 && t->top_n && (rc = comm_allreduce(t->comm, sums, sums, 2, RT_DT_F64, COMM_SUM))) return step_fail(rc);
    if ((rc = zr_reduce_grads(z, t->comm, m->grads))) return step_fail(rc);
    if ((rc = zr_grad_sumsq(z, t->comm, z3 ? t->own_g : m->grads, t->pool, &sumsq))) return step_fail(rc);
    double norm = sqrt(sumsq), loss = total > 0 ? loss_sum / (double)total : 0.0;
    if (!isfinite(loss) || !isfinite(norm))   /* stop before the update: the weights stay those of the last step */
        return rt_fail(RT_ERANGE, "step %lld: loss %g, gradient norm %g: the training diverged (not finite); stopped "
                       "before updating the weights, nothing saved at this step", (long long)t->step + 1, loss, norm);
    if (t->o.clip > 0) {
        double coef = t->o.clip / (norm + 1e-6);
        if (coef < 1.0) vec_scale(gg + (z->lo - g0), (size_t)(z->hi - z->lo), (float)coef, t->pool);
    }
    double lr = tr_lr_at(&t->o, t->step);
    t->step++;
    for (size_t i = 0; i < m->n_tensors; i++) {   /* each tensor's part inside [lo, hi) */
        const sm_tensor *x = &m->tensors[i];
        int64_t a = x->offset > z->lo ? x->offset : z->lo, b = x->offset + x->numel < z->hi ? x->offset + x->numel : z->hi;
        if (a >= b) continue;
        adamw_hparams h = {.lr = lr, .beta1 = t->o.beta1, .beta2 = t->o.beta2, .eps = t->o.eps,
                           .weight_decay = x->decay ? t->o.weight_decay : 0.0, .step = t->step};
        adamw_step(pg + (a - g0), gg + (a - g0), t->mom1 + (a - t->mbase), t->mom2 + (a - t->mbase), (size_t)(b - a), &h,
                   t->pool);
    }
    if ((rc = zr_gather_params(z, t->comm, m->params))) return step_fail(rc);
    *st = (tr_stats){.step = t->step, .loss = loss, .lr = lr, .grad_norm = norm,
                     .tokens = T * A * P, .loss_tokens = total, .epoch = t->pos.epoch,
                     .ce_loss = t->top_n && total > 0 ? sums[0] / (double)total : loss,
                     .kd_loss = t->top_n && total > 0 ? sums[1] / (double)total : 0};
    return 0;
}

/* ---- checkpoints ----------------------------------------------------------------------- */

static json_t *options_json(const tr_options *o) {
    static const char *sched[] = {"cosine", "linear", "constant"}, *kd[] = {"forward", "reverse", "jsd", "uld"};
    json_t *j = json_pack("{s:I,s:I,s:I,s:f,s:f,s:I,s:s,s:f,s:f,s:f,s:f,s:f,s:b}", "batch", (json_int_t)o->batch,
                     "grad_accum", (json_int_t)o->grad_accum, "steps", (json_int_t)o->steps, "lr", o->lr,
                     "min_lr_ratio", o->min_lr_ratio, "warmup", (json_int_t)o->warmup, "schedule", sched[o->schedule],
                     "weight_decay", o->weight_decay, "clip", o->clip, "beta1", o->beta1, "beta2", o->beta2, "eps",
                     o->eps, "checkpoint_layers", o->checkpoint_layers);
    if (j && o->kd_alpha > 0)   /* a distilling run (SFT runs write what they always wrote) */
        json_object_update_new(j, json_pack("{s:f,s:f,s:s,s:f}", "kd_alpha", o->kd_alpha, "kd_temperature",
                                            o->kd_temperature, "kd_loss", kd[o->kd_loss & 3], "kd_beta", o->kd_beta));
    return j;
}

static int write_state(const tr_trainer *t, const char *dir) {
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)t->pos.seed);   /* u64: exact as a string */
    json_t *j = json_pack("{s:s,s:i,s:I,s:{s:s,s:I,s:I,s:I},s:o}", "format", STATE_FORMAT, "version", STATE_VERSION,
                          "step", (json_int_t)t->step, "data", "seed", seed, "epoch", (json_int_t)t->pos.epoch, "cursor",
                          (json_int_t)t->pos.cursor, "seq_len", (json_int_t)t->N, "options", options_json(&t->o));
    if (j && (t->o.run_data || t->o.run_model)) {   /* what the run reads and starts from */
        json_t *run = json_object();
        if (t->o.run_data) json_object_set_new(run, "data", json_string(t->o.run_data));
        if (t->o.run_model) json_object_set_new(run, "model", json_string(t->o.run_model));
        json_object_set_new(j, "run", run);
    }
    char *txt = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    char *path = rt_path_join(dir, "trainer_state.json");
    int rc = (!txt || !path) ? rt_fail(RT_ENOMEM, "serializing the trainer state") : 0;
    if (!rc) rc = rt_atomic_write_text(path, txt);
    free(txt);
    free(path);
    return rc;
}

/* Where a checkpoint's tensors come from: whole arrays in the flat layout (levels 0–2), or
 * at level 3 the ranks' parts, gathered on rank 0 tensor by tensor.
 * At level 3 every rank makes the same gathers in the same order — the model file's
 * tensors (parameters), then per tensor exp_avg, exp_avg_sq and (BF16 model) master, as
 * the files list them: rank 0 as its writers ask for them, then ckpt_drain the rest (all
 * of them on the other ranks, and after a failed write on rank 0), so that no rank waits. */
typedef struct {
    const tr_trainer *t;
    const float *full[3];        /* exp_avg, exp_avg_sq, parameters: [n] each (not level 3) */
    const float *own[3];         /* level 3: the same, this rank's parts [S] */
    bool z3, master;
    float *buf;                  /* level 3, rank 0: one tensor */
    int64_t calls, total;        /* level 3: gathers done, and due */
    /* tr_save_stream: the caller's gather instead of zr_range_gather (z3 set) */
    int (*fetch)(void *ctx, int kind, const sm_tensor *x, float *dst);
    void *fctx;
} ckpt_src;

/* Level 3: gather number k of the sequence above (out: rank 0's buffer, or NULL). */
static int ckpt_gather(ckpt_src *c, float *out) {
    const sm_model *m = c->t->m;
    int64_t k = c->calls++, nt = (int64_t)m->n_tensors, per = c->master ? 3 : 2;
    int64_t ti = k < nt ? k : (k - nt) / per, kind = k < nt ? 2 : (k - nt) % per;
    const sm_tensor *x = &m->tensors[ti];
    if (c->fetch) return c->fetch(c->fctx, (int)kind, x, out);
    return zr_range_gather(&c->t->z, c->t->comm, c->own[kind], x->offset, x->offset + x->numel, out, 0);
}

static int ckpt_drain(ckpt_src *c) {
    int rc = 0;
    while (c->z3 && !rc && c->calls < c->total) rc = ckpt_gather(c, c->buf);
    return rc;
}

static int fetch_param(void *ctx, const sm_tensor *x, float *dst) {
    (void)x;   /* the next gather is this tensor's: sm_save_fetch asks in the model's order */
    return ckpt_gather(ctx, dst);
}

static int get_state(void *ctx, size_t k, const void **data) {
    ckpt_src *c = ctx;
    size_t per = c->master ? 3 : 2;
    const sm_tensor *x = &c->t->m->tensors[k / per];
    if (!c->z3) {
        *data = c->full[k % per] + x->offset;
        return 0;
    }
    *data = c->buf;
    return ckpt_gather(c, c->buf);
}

static int write_optimizer(ckpt_src *c, const char *dir) {
    const sm_model *m = c->t->m;
    size_t per = c->master ? 3 : 2, n = m->n_tensors * per;
    st_wtensor *ts = rt_calloc(n, sizeof *ts);
    char (*names)[128] = rt_calloc(n, sizeof *names);
    char *path = rt_path_join(dir, "optimizer.safetensors");
    int rc = (!ts || !names || !path) ? RT_ENOMEM : 0;
    for (size_t i = 0, k = 0; !rc && i < m->n_tensors; i++) {
        const sm_tensor *x = &m->tensors[i];
        static const char *pre[3] = {"exp_avg.", "exp_avg_sq.", "master."};
        for (size_t s = 0; s < per; s++, k++) {
            snprintf(names[k], sizeof names[k], "%s%s", pre[s], x->name);
            ts[k] = (st_wtensor){names[k], RT_DT_F32, x->ndim, {x->shape[0], x->shape[1]}, NULL};
        }
    }
    char step[32];
    snprintf(step, sizeof step, "%lld", (long long)c->t->step);
    json_t *meta = json_pack("{s:s,s:s,s:s}", "format", "retort-adamw", "version", "1", "step", step);
    if (!rc) rc = meta ? st_write_stream(path, ts, n, meta, get_state, c) : RT_ENOMEM;
    json_decref(meta);
    free(path);
    free(names);
    free(ts);
    return rc;
}

/* A checkpoint directory and every file in it (a killed save may have left temporaries of
 * the atomic writes beside the four files). Absent is fine. */
static int remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : rt_fail(RT_EIO, "%s: cannot open (%s)", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = rt_path_join(dir, e->d_name);
        if (!p) { closedir(d); return RT_ENOMEM; }
        unlink(p);
        free(p);
    }
    closedir(d);
    return rmdir(dir) && errno != ENOENT ? rt_fail(RT_EIO, "%s: cannot remove (%s)", dir, strerror(errno)) : 0;
}

/* 0 when every value of [n] is finite, else RT_ERANGE naming the tensor of m it falls in. */
static int check_finite(const sm_model *m, const float *v, const char *what) {
    for (size_t i = 0; i < m->n_tensors; i++) {
        const sm_tensor *x = &m->tensors[i];
        const float *p = v + x->offset;
        for (int64_t k = 0; k < x->numel; k++)
            if (!isfinite(p[k]))
                return rt_fail(RT_ERANGE, "%s of %s hold %g at element %lld: not finite, the checkpoint is not written",
                               what, x->name, (double)p[k], (long long)k);
    }
    return 0;
}

/* Moves dir aside to old (when present; a stale old removed first), then src into dir. */
static int swap_in(const char *src, const char *dir, const char *old) {
    int rc = remove_tree(old);
    if (!rc && rt_is_dir(dir) && rename(dir, old)) rc = rt_fail(RT_EIO, "%s: cannot move aside (%s)", dir, strerror(errno));
    if (!rc && rename(src, dir)) rc = rt_fail(RT_EIO, "%s: cannot rename into place (%s)", dir, strerror(errno));
    return rc;
}

static int save_files(ckpt_src *c, const char *dir, rt_dtype model_dtype) {
    const tr_trainer *t = c->t;
    size_t len = strlen(dir) + 32;
    char *tmp = rt_malloc(len), *old = rt_malloc(len), *sdir = rt_malloc(len), *stmp = rt_malloc(len),
         *sold = rt_malloc(len);
    int rc = (!tmp || !old || !sdir || !stmp || !sold) ? RT_ENOMEM : 0;
    if (!rc && !c->z3) rc = check_finite(t->m, c->full[2], "the weights");   /* level 3: tr_save checked the parts */
    if (!rc && !c->z3) rc = check_finite(t->m, c->full[0], "the AdamW first moments");
    if (!rc && !c->z3) rc = check_finite(t->m, c->full[1], "the AdamW second moments");
    bool made = false, smade = false;
    if (!rc) {
        snprintf(tmp, len, "%s.partial", dir);
        snprintf(old, len, "%s.old", dir);
        snprintf(sdir, len, "%s.state", dir);
        snprintf(stmp, len, "%s.state.partial", dir);
        snprintf(sold, len, "%s.state.old", dir);
        rc = remove_tree(tmp);   /* stale ones, from a save that was killed */
        if (!rc) rc = remove_tree(stmp);
    }
    if (!rc && mkdir(tmp, 0755)) rc = rt_fail(RT_EIO, "%s: cannot create (%s)", tmp, strerror(errno));
    made = !rc;
    if (!rc && mkdir(stmp, 0755)) rc = rt_fail(RT_EIO, "%s: cannot create (%s)", stmp, strerror(errno));
    smade = !rc;
    if (!rc) rc = sm_save_sharded(t->m, tmp, model_dtype, t->o.max_shard_bytes, c->z3 ? fetch_param : NULL, c);
    if (!rc) rc = hd_write(tmp, t->o.hf, t->m->config_json);
    if (!rc) rc = write_optimizer(c, stmp);
    if (!rc) rc = write_state(t, stmp);
    /* the state first: DIR appears last, and DIR with DIR.state/trainer_state.json is a checkpoint */
    bool sput = false;   /* DIR.state is this save's */
    if (!rc && !(rc = swap_in(stmp, sdir, sold))) smade = false, sput = true;
    if (!rc && !(rc = swap_in(tmp, dir, old))) made = false;
    else if (rc && sput) {   /* the model could not go into place: the state goes too, the earlier one back */
        remove_tree(sdir);
        if (rt_is_dir(sold)) rename(sold, sdir);
    }
    if (!rc) rc = remove_tree(old);
    if (!rc) rc = remove_tree(sold);
    if (rc && (made || smade)) {   /* a failed save leaves no partial behind; its message stays */
        char msg[RT_ERRMSG_MAX];
        snprintf(msg, sizeof msg, "%s", rt_errmsg());
        if (made) remove_tree(tmp);
        if (smade) remove_tree(stmp);
        rt_fail(rc, "%s", msg);
    }
    free(tmp);
    free(old);
    free(sdir);
    free(stmp);
    free(sold);
    return rc;
}

char *tr_state_dir(const char *dir) {
    size_t len = strlen(dir) + 8;
    char *s = rt_malloc(len), *ts = NULL;
    if (!s) return NULL;
    snprintf(s, len, "%s.state", dir);
    if ((ts = rt_path_join(s, "trainer_state.json")) && rt_is_file(ts)) {
        free(ts);
        return s;
    }
    free(ts);
    free(s);
    return rt_strdup(dir);
}

/* Collective with more than one rank. Levels 1, 2: the moments' parts are gathered on rank 0,
 * which writes everything (the parameters are whole on every rank). Level 3: rank 0 gathers
 * one tensor at a time as it writes (ckpt_src). Rank 0's status is broadcast. */
int tr_save(const tr_trainer *t, const char *dir, rt_dtype model_dtype) {
    const zr_layout *z = &t->z;
    const sm_model *m = t->m;
    int rc = 0, z3 = z->level == 3, sharded = !z3 && z->level > 0 && z->ranks > 1, root = z->rank == 0;
    bool master = model_dtype != RT_DT_F32;
    ckpt_src c = {.t = t, .full = {t->mom1, t->mom2, m->params}, .own = {t->mom1, t->mom2, t->own_p}, .z3 = z3,
                  .master = master, .total = (int64_t)m->n_tensors * (master ? 4 : 3)};
    float *m1 = NULL, *m2 = NULL;
    if (z3) {   /* every rank's parts must be finite (levels 0–2: save_files names the tensor) */
        int32_t fin = 1;
        for (int64_t i = 0; i < z->shard && fin; i++)
            fin = isfinite(t->own_p[i]) && isfinite(t->mom1[i]) && isfinite(t->mom2[i]);
        if (z->ranks > 1 && (rc = comm_allreduce(t->comm, &fin, &fin, 1, RT_DT_I32, COMM_MIN)))
            return rt_errorf(rc, "saving checkpoint %s", dir);
        if (!fin)
            return rt_fail(RT_ERANGE, "saving checkpoint %s: the weights or AdamW moments hold a value that is not "
                           "finite; the checkpoint is not written", dir);
    }
    if (sharded || z3) {
        int32_t ok = 1;
        if (root && sharded) {
            m1 = rt_aligned_alloc(64, (size_t)z->padded * sizeof(float));
            m2 = rt_aligned_alloc(64, (size_t)z->padded * sizeof(float));
            ok = m1 && m2;
        } else if (root) {
            int64_t big = 0;
            for (size_t i = 0; i < m->n_tensors; i++) big = m->tensors[i].numel > big ? m->tensors[i].numel : big;
            ok = (c.buf = rt_malloc((size_t)big * sizeof(float))) != NULL;
        }
        rc = z->ranks > 1 ? comm_broadcast(t->comm, &ok, 1, RT_DT_I32, 0) : 0;
        if (!rc && !ok) rc = rt_fail(RT_ENOMEM, "gathering the checkpoint on rank 0");
        if (!rc && sharded) rc = zr_gather_state(z, t->comm, t->mom1, m1, 0);
        if (!rc && sharded) rc = zr_gather_state(z, t->comm, t->mom2, m2, 0);
        if (rc) {
            free(m1);
            free(m2);
            free(c.buf);
            return rt_errorf(rc, "saving checkpoint %s", dir);
        }
        if (sharded) {
            c.full[0] = m1;
            c.full[1] = m2;
        }
    }
    if (root) rc = save_files(&c, dir, model_dtype);
    int drc = ckpt_drain(&c);   /* level 3: the gathers rank 0's writers did not ask for */
    if (!rc) rc = drc;
    free(m1);
    free(m2);
    free(c.buf);
    if (z->ranks > 1) {
        int32_t r0 = rc;
        int brc = comm_broadcast(t->comm, &r0, 1, RT_DT_I32, 0);
        if (brc) return rt_errorf(brc, "saving checkpoint %s", dir);
        if (r0 && !root) return rt_fail(r0, "saving checkpoint %s failed on rank 0", dir);
    }
    return rc ? rt_errorf(rc, "saving checkpoint %s", dir) : 0;
}

static int read_moments(tr_trainer *t, const char *ck) {
    char *dir = tr_state_dir(ck), *path = dir ? rt_path_join(dir, "optimizer.safetensors") : NULL;
    free(dir);
    if (!path) return RT_ENOMEM;
    st_file *f;
    int rc = st_open(path, &f);
    free(path);
    if (rc) return rc;
    sm_model *m = t->m;
    const zr_layout *z = &t->z;
    for (size_t i = 0; i < m->n_tensors && !rc; i++) {
        const sm_tensor *x = &m->tensors[i];
        /* moments: only this rank's part [lo, hi) of the tensor; master weights: all of it
         * (level 3: the part too) */
        int64_t a = x->offset > z->lo ? x->offset : z->lo, b = x->offset + x->numel < z->hi ? x->offset + x->numel : z->hi;
        bool z3 = z->level == 3;
        float *dst[3] = {t->mom1 + (a - t->mbase), t->mom2 + (a - t->mbase),
                         z3 ? t->own_p + (a - t->mbase) : m->params + x->offset};
        static const char *pre[3] = {"exp_avg.", "exp_avg_sq.", "master."};
        for (int s = 0; s < 3 && !rc; s++) {
            char name[160];
            snprintf(name, sizeof name, "%s%s", pre[s], x->name);
            const st_tensor *st = st_find(f, name);
            if (!st && s == 2) break;   /* no master copy: model.safetensors was F32 */
            if (!st) rc = rt_fail(RT_EFORMAT, "optimizer.safetensors: %s missing", name);
            else if (st->dtype != RT_DT_F32 || (int64_t)st->nelem != x->numel)
                rc = rt_fail(RT_EFORMAT, "optimizer.safetensors: %s is %s with %zu elements, F32 with %lld expected", name,
                             rt_dtype_name(st->dtype), st->nelem, (long long)x->numel);
            else if (s == 2 && !z3) memcpy(dst[s], st->data, st->nbytes);
            else if (a < b) memcpy(dst[s], (const float *)st->data + (a - x->offset), (size_t)(b - a) * sizeof(float));
        }
    }
    st_close(f);
    return rc;
}

static int read_state(tr_trainer *t, const char *ck) {
    char *dir = tr_state_dir(ck), *path = dir ? rt_path_join(dir, "trainer_state.json") : NULL;
    free(dir);
    if (!path) return RT_ENOMEM;
    json_t *j;
    int rc = rt_json_load_file(path, &j);
    free(path);
    if (rc) return rc;
    const char *fmt = NULL, *seed = NULL;
    int64_t ver = 0, step = -1, epoch = -1, cursor = -1, seq_len = -1;
    json_t *data = json_object_get(j, "data");
    rc = rt_json_get_str(j, "format", "", &fmt);
    if (!rc) rc = rt_json_get_int(j, "version", 0, &ver);
    if (!rc && (strcmp(fmt, STATE_FORMAT) || ver != STATE_VERSION))
        rc = rt_fail(RT_EFORMAT, "trainer_state.json: format \"%s\" version %lld, expected \"%s\" version %d", fmt,
                     (long long)ver, STATE_FORMAT, STATE_VERSION);
    if (!rc) rc = rt_json_get_int(j, "step", -1, &step);
    if (!rc && !json_is_object(data)) rc = rt_fail(RT_EFORMAT, "trainer_state.json: \"data\" missing");
    if (!rc) rc = rt_json_get_str(data, "seed", NULL, &seed);
    if (!rc) rc = rt_json_get_int(data, "epoch", -1, &epoch);
    if (!rc) rc = rt_json_get_int(data, "cursor", -1, &cursor);
    if (!rc) rc = rt_json_get_int(data, "seq_len", -1, &seq_len);
    if (!rc && (step < 0 || epoch < 0 || cursor < 0 || !seed || (uint64_t)cursor > sd_num_seqs(t->d)))
        rc = rt_fail(RT_EFORMAT, "trainer_state.json: step, data.seed, data.epoch or data.cursor missing or out of range");
    if (!rc && seq_len != t->N)
        rc = rt_fail(RT_EFORMAT, "the checkpoint was trained on sequences of %lld tokens, the data has %lld",
                     (long long)seq_len, (long long)t->N);
    if (!rc) {
        t->step = step;
        t->pos = (sd_position){strtoull(seed, NULL, 10), (uint64_t)epoch, (uint64_t)cursor};
    }
    json_decref(j);
    return rc;
}

int tr_resume(tr_trainer *t, const char *dir) {
    int rc = read_state(t, dir);
    if (!rc) rc = read_moments(t, dir);
    return rc ? rt_errorf(rc, "resuming from %s", dir) : 0;
}

int tr_save_stream(const sm_model *m, int (*fetch)(void *ctx, int kind, const sm_tensor *x, float *dst), void *ctx,
                   int64_t step, const sd_position *pos, int64_t seq_len, const tr_options *o, const char *dir,
                   rt_dtype model_dtype) {
    tr_trainer t = {.m = (sm_model *)m, .o = *o, .step = step, .pos = *pos, .N = seq_len};
    bool master = model_dtype != RT_DT_F32;
    ckpt_src c = {.t = &t, .z3 = true, .master = master, .total = (int64_t)m->n_tensors * (master ? 4 : 3),
                  .fetch = fetch, .fctx = ctx};
    int64_t big = 0;
    for (size_t i = 0; i < m->n_tensors; i++) big = m->tensors[i].numel > big ? m->tensors[i].numel : big;
    int rc = (c.buf = rt_malloc((size_t)(big > 0 ? big : 1) * sizeof(float))) ? 0 : RT_ENOMEM;
    if (!rc) rc = save_files(&c, dir, model_dtype);
    free(c.buf);
    return rc ? rt_errorf(rc, "saving checkpoint %s", dir) : 0;
}

int tr_resume_position(sd_data *d, int64_t *step, sd_position *pos, const char *dir) {
    tr_trainer t = {.d = d, .N = sd_seq_len(d)};
    int rc = read_state(&t, dir);
    if (rc) return rt_errorf(rc, "resuming from %s", dir);
    *step = t.step;
    *pos = t.pos;
    return 0;
}

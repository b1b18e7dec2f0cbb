/* student/model against transformers (tests/ref/gen_student.py): logits, loss and every
 * parameter's gradient on a packed, masked batch of the tiny llama and qwen2 presets.
 * The reference runs each document alone in float64, so this also checks the packing.
 * Tolerances: logits 1e-4 absolute (the bound; f32 accumulation over hidden 256
 * and 4 layers gives ~1e-6); gradients 1e-4 relative to the largest element of each
 * tensor's reference gradient (f32 sums over ~90 tokens: ~1e-6 expected). */
#include <math.h>

#include "core/shard.h"
#include "kernels/convert.h"
#include "kernels/matmul.h"
#include "student/model.h"
#include "student/rng.h"
#include "testutil.h"

typedef struct {
    int64_t S, N, T;
    int32_t *tokens, *doc_start, *pos, *target;
    uint8_t *mask;
    int64_t count;
} ref_batch;

static void load_batch(const st_file *f, ref_batch *b) {
    const st_tensor *tk = ref_tensor(f, "tokens"), *mk = ref_tensor(f, "mask"), *dc = ref_tensor(f, "docs");
    b->S = tk->shape[0];
    b->N = tk->shape[1];
    b->T = b->S * b->N;
    b->tokens = malloc((size_t)b->T * 4);
    b->mask = malloc((size_t)b->T);
    b->doc_start = malloc((size_t)b->T * 4);
    b->pos = malloc((size_t)b->T * 4);
    b->target = malloc((size_t)b->T * 4);
    memcpy(b->tokens, tk->data, (size_t)b->T * 4);
    memcpy(b->mask, mk->data, (size_t)b->T);
    int32_t d[64][3];
    int64_t nd = dc->shape[0];
    cr_assert(nd <= 64);
    memcpy(d, dc->data, (size_t)nd * 12);
    shard_doc docs[8][64];
    size_t n_docs[8] = {0};
    const shard_doc *dp[8];
    cr_assert(b->S <= 8);
    for (int64_t i = 0; i < nd; i++) {
        int s = d[i][0];
        docs[s][n_docs[s]++] = (shard_doc){.seq = (uint32_t)s, .start = (uint32_t)d[i][1], .len = (uint32_t)d[i][2]};
    }
    for (int64_t s = 0; s < b->S; s++) dp[s] = docs[s];
    b->count = sm_batch_targets(b->tokens, b->mask, b->S, b->N, dp, n_docs, b->doc_start, b->pos, b->target);
}

static void free_batch(ref_batch *b) {
    free(b->tokens);
    free(b->mask);
    free(b->doc_start);
    free(b->pos);
    free(b->target);
}

static float *f32_of(const st_tensor *t) {
    float *v = malloc(t->nelem * sizeof *v);
    cr_assert(v && !cvt_to_f32(t->dtype, t->data, v, t->nelem));
    return v;
}

static void check_model(const char *arch, int threads, bool ckpt) {
    char mdir[4200], refname[64];
    snprintf(refname, sizeof refname, "student_%s_ref.safetensors", arch);
    st_file *ref = ref_open(refname);
    snprintf(mdir, sizeof mdir, "%s/student_%s", getenv("REF_DIR"), arch);
    mm_blas_single_thread();
    sm_model *m;
    cr_assert_eq(sm_load(mdir, &m), 0, "%s", rt_errmsg());
    ref_batch b;
    load_batch(ref, &b);
    tp_pool *pool = NULL;
    if (threads > 1) cr_assert_eq(tp_create(threads, &pool), 0);
    sm_acts *a;
    cr_assert_eq(sm_acts_create(m, b.T, ckpt, 7, &a), 0, "%s", rt_errmsg());
    sm_batch sb = {b.T, b.tokens, b.doc_start, b.pos, b.target};

    float *logits = malloc((size_t)(b.T * m->V) * sizeof *logits);
    cr_assert_eq(sm_forward_logits(m, a, &sb, logits, pool), 0, "%s", rt_errmsg());
    float *want = f32_of(ref_tensor(ref, "logits"));
    double maxd = 0;
    for (int64_t i = 0; i < b.T * m->V; i++) maxd = fmax(maxd, fabs((double)logits[i] - want[i]));
    cr_log_info("%s: max |logit diff| %.3g", arch, maxd);
    cr_expect_lt(maxd, 1e-4, "%s: max logit difference %g", arch, maxd);

    double loss_sum;
    memset(m->grads, 0, (size_t)m->n_params * sizeof(float));
    cr_assert_eq(sm_forward_backward(m, a, &sb, 1.0f / (float)b.count, &loss_sum, pool), 0, "%s", rt_errmsg());
    double loss = loss_sum / (double)b.count, want_loss;
    memcpy(&want_loss, ref_tensor(ref, "loss")->data, 8);
    cr_expect_lt(fabs(loss - want_loss), 1e-5, "%s: loss %.9g, transformers %.9g", arch, loss, want_loss);

    double worst = 0;
    const char *worst_name = "";
    for (size_t i = 0; i < m->n_tensors; i++) {
        const sm_tensor *t = &m->tensors[i];
        char gname[160];
        snprintf(gname, sizeof gname, "grad.%s", t->name);
        const st_tensor *rt = ref_tensor(ref, gname);
        cr_assert_eq((int64_t)rt->nelem, t->numel, "%s", gname);
        float *g = f32_of(rt);
        double mx = 0, md = 0;
        for (int64_t j = 0; j < t->numel; j++) {
            mx = fmax(mx, fabs(g[j]));
            md = fmax(md, fabs((double)m->grads[t->offset + j] - g[j]));
        }
        double rel = md / (mx > 0 ? mx : 1);
        if (rel > worst) { worst = rel; worst_name = t->name; }
        cr_expect_lt(rel, 1e-4, "%s: gradient of %s: max diff %g, max |grad| %g", arch, t->name, md, mx);
        free(g);
    }
    cr_log_info("%s: worst gradient relative error %.3g (%s)", arch, worst, worst_name);
    free(want);
    free(logits);
    sm_acts_free(a);
    tp_free(pool);
    free_batch(&b);
    sm_free(m);
    st_close(ref);
}

Test(student, llama_logits_loss_and_gradients_match_transformers) { check_model("llama", 1, false); }
Test(student, qwen2_logits_loss_and_gradients_match_transformers) { check_model("qwen2", 1, false); }
Test(student, qwen3_logits_loss_and_gradients_match_transformers) { check_model("qwen3", 1, false); }
Test(student, threaded_and_checkpointed_runs_match_transformers) {
    check_model("llama", 3, true);
    check_model("qwen2", 2, true);
    check_model("qwen3", 2, true);
}

/* Finite differences on a micro model (2 layers, hidden 16, vocab 32, q/k/v biases, tied
 * embeddings, weights ~N(0, 0.3) so that gradients are not tiny): central differences of
 * the f32 forward with the loss summed in double, step 1e-2 on 60 random parameters, against
 * the backward. Tolerance: 2e-3 absolute + 2e-2 relative — the f32 forward rounds at ~1e-7
 * relative to a loss of ~3.5 (≈ 2e-5 after dividing by 2·step), and the O(step²) term of
 * the central difference is ~1e-4 here. */
Test(student, gradients_match_finite_differences_on_a_micro_model) {
    json_t *cfg = json_pack("{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:b}", "model_type", "qwen2", "vocab_size", 32,
                            "hidden_size", 16, "intermediate_size", 24, "num_hidden_layers", 2, "num_attention_heads",
                            4, "num_key_value_heads", 2, "rms_norm_eps", 1e-6, "rope_theta", 10000.0,
                            "tie_word_embeddings", 1);
    sm_model *m;
    cr_assert_eq(sm_create_random(cfg, 3, &m), 0, "%s", rt_errmsg());
    json_decref(cfg);
    sr_rng r;
    sr_seed(&r, 4);
    for (int64_t i = 0; i < m->n_params; i++) m->params[i] = (float)(0.3 * sr_normal(&r)) + (m->params[i] == 1.0f);
    enum { N = 12 };
    int32_t tokens[N], ds[N], pos[N], tg[N];
    uint8_t mask[N];
    for (int t = 0; t < N; t++) { tokens[t] = (int32_t)sr_below(&r, 32); mask[t] = t % 4 != 0; }
    shard_doc docs[2] = {{.start = 0, .len = 7}, {.start = 7, .len = 5}};
    const shard_doc *dp = docs;
    size_t nd = 2;
    int64_t count = sm_batch_targets(tokens, mask, 1, N, &dp, &nd, ds, pos, tg);
    sm_acts *a;
    cr_assert_eq(sm_acts_create(m, N, false, 5, &a), 0);
    sm_batch b = {N, tokens, ds, pos, tg};
    double loss;
    memset(m->grads, 0, (size_t)m->n_params * sizeof(float));
    cr_assert_eq(sm_forward_backward(m, a, &b, 1.0f, &loss, NULL), 0);
    cr_assert_gt(count, 0);
    double worst = 0;
    for (int i = 0; i < 60; i++) {
        size_t ti = (size_t)sr_below(&r, m->n_tensors);
        const sm_tensor *t = &m->tensors[ti];
        int64_t j = t->offset + (int64_t)sr_below(&r, (uint64_t)t->numel);
        float keep = m->params[j], h = 1e-2f;
        double lp, lm;
        m->params[j] = keep + h;
        cr_assert_eq(sm_forward_loss(m, a, &b, &lp, NULL), 0);
        m->params[j] = keep - h;
        cr_assert_eq(sm_forward_loss(m, a, &b, &lm, NULL), 0);
        m->params[j] = keep;
        double fd = (lp - lm) / (2.0 * h), g = m->grads[j];
        worst = fmax(worst, fabs(fd - g) / (fabs(g) + 1e-2));
        cr_expect_leq(fabs(fd - g), 2e-3 + 2e-2 * fabs(g), "%s[%lld]: backward %.6g, finite difference %.6g", t->name,
                      (long long)(j - t->offset), g, fd);
    }
    cr_log_info("finite differences: worst |fd − g| / (|g| + 0.01) = %.3g", worst);
    sm_acts_free(a);
    sm_free(m);
}

/* A lazy model's reader (sm_open_random, sm_open) against the eager loaders: every range, read
 * in a random order (backwards too), is bit for bit what sm_create_random and sm_load hold —
 * from the seed, and from a checkpoint in F32 and in BF16 (slices at odd element offsets). */
static void expect_ranges(const sm_model *eager, const sm_model *lazy) {
    cr_assert_null(lazy->params);
    cr_assert_null(lazy->grads);
    cr_assert_eq(lazy->n_params, eager->n_params);
    sm_reader *r;
    cr_assert_eq(sm_reader_open(lazy, &r), 0, "%s", rt_errmsg());
    int64_t n = eager->n_params;
    float *got = malloc((size_t)n * sizeof(float));
    sr_rng g;
    sr_seed(&g, 5);
    for (int k = 0; k < 40; k++) {
        int64_t lo = (int64_t)sr_below(&g, (uint64_t)n), hi = lo + (int64_t)sr_below(&g, (uint64_t)(n - lo) + 1);
        cr_assert_eq(sm_reader_read(r, lo, hi, got), 0, "%s", rt_errmsg());
        cr_assert_eq(memcmp(got, eager->params + lo, (size_t)(hi - lo) * sizeof(float)), 0, "[%lld, %lld) differs",
                     (long long)lo, (long long)hi);
    }
    cr_assert_eq(sm_reader_read(r, 0, n, got), 0);
    cr_assert_eq(memcmp(got, eager->params, (size_t)n * sizeof(float)), 0);
    cr_assert_eq(sm_reader_read(r, 1, n + 1, got), RT_EINVAL);
    sm_reader_close(r);
    free(got);
}

Test(student, lazy_models_read_the_eager_weights_in_any_order) {
    json_t *cfg = json_pack("{s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:b}", "model_type", "qwen2", "vocab_size", 40,
                            "hidden_size", 16, "intermediate_size", 24, "num_hidden_layers", 3, "num_attention_heads",
                            4, "num_key_value_heads", 2, "rms_norm_eps", 1e-6, "rope_theta", 10000.0,
                            "tie_word_embeddings", 0);
    sm_model *e, *l;
    cr_assert_eq(sm_create_random(cfg, 9, &e), 0, "%s", rt_errmsg());
    cr_assert_eq(sm_open_random(cfg, 9, &l), 0, "%s", rt_errmsg());
    expect_ranges(e, l);
    cr_assert_eq(sm_materialize(l), 0, "%s", rt_errmsg());
    cr_assert_eq(memcmp(l->params, e->params, (size_t)e->n_params * sizeof(float)), 0);
    sm_free(l);
    char dir[64];
    snprintf(dir, sizeof dir, "/tmp/sm-lazy-XXXXXX");
    cr_assert(mkdtemp(dir));
    rt_dtype dts[2] = {RT_DT_F32, RT_DT_BF16};
    for (int i = 0; i < 2; i++) {
        sm_model *f;
        cr_assert_eq(sm_save(e, dir, dts[i]), 0, "%s", rt_errmsg());
        cr_assert_eq(sm_load(dir, &f), 0, "%s", rt_errmsg());
        cr_assert_eq(sm_open(dir, &l), 0, "%s", rt_errmsg());
        expect_ranges(f, l);
        sm_free(f);
        sm_free(l);
    }
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
    sm_free(e);
    json_decref(cfg);
}

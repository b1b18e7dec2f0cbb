/* tests/unit/engine_fake.h — the harness the stand-in GPU engine checks share
 * (tests/unit/test_dense_cuda_fake.c, tests/unit/test_ds_cuda_fake.c, tests/tools/dense_cuda_tp.c).
 *
 * Included twice by each of them:
 *   1. before its #include of the engine sources (teacher/dense_cuda.c or ds_cuda.c, then
 *      teacher/engine.c): the engine's public names renamed to fake_* (the library linked beside
 *      holds the real ones), with ENGINE_FAKE_DENSE defined first the dense GPU forward's (dc_*)
 *      too;
 *   2. after tests/unit/fake_cuda_impl.h: the helpers —
 *      ef_randn()            N(0, 1) from a xorshift64 stream (ef_rs: its state, set by the caller);
 *      ef_tensors / ef_push / ef_add   a list of safetensors tensors written with st_write;
 *                            ef_add's values N(mean, std) in bf16 or f32 (c ≤ 1: a vector of r);
 *      ef_tensors_free       frees the names and data;
 *      ef_make_dense()       a tiny Llama/Qwen2/Qwen3 checkpoint (config.json + model.safetensors) of
 *                            an ef_shape: EF_QWEN, EF_LLAMA, EF_QWEN3 (with ENGINE_FAKE_DENSE only);
 *      ef_forward_steps()    one CPU forward and one GPU forward over the same passes — a prefill of
 *                            three prompts (5, 40, 17 tokens), then 5 greedy decode steps of all
 *                            three — with their logits compared at every step;
 *      ef_collected / ef_keep / ef_by_tag   an engine's results, kept and sorted by (tag, sample);
 *      ef_drive()            the engine request pattern: 4 requests (prompts of 5, 37, 1, 20
 *                            tokens) arriving at steps 0, 2, 3, 6, request 1 sampled by
 *                            ef_pattern.sampled (the others greedy; or all of them, each with a
 *                            seed of its own), top-2 logprobs, run until idle;
 *      ef_compare()          two sorted result lists token by token (their top-k logprobs too);
 *      ef_refused()          a --device cuda load that must fail with one line, allocating nothing
 *                            (needs tests/unit/fake_cuda_impl.h's counters, included before).
 * The helpers return 0 or an RT_E… code with the message (callers assert or print it); they keep
 * no state but ef_rs. */
#ifndef ENGINE_FAKE_NAMES
#define ENGINE_FAKE_NAMES

#define te_model_load fake_te_model_load
#define te_model_load_comm fake_te_model_load_comm
#define te_model_load_opts fake_te_model_load_opts
#define te_device_parse fake_te_device_parse
#define te_device_name fake_te_device_name
#define te_model_free fake_te_model_free
#define te_model_config fake_te_model_config
#define te_model_is_deepseek fake_te_model_is_deepseek
#define te_model_resident_bytes fake_te_model_resident_bytes
#define te_engine_create fake_te_engine_create
#define te_engine_free fake_te_engine_free
#define te_submit fake_te_submit
#define te_step fake_te_step
#define te_cancel fake_te_cancel
#define te_busy fake_te_busy
#define te_stats_get fake_te_stats_get
#define te_results_free fake_te_results_free
#ifdef ENGINE_FAKE_DENSE
#define dc_load fake_dc_load
#define dc_free fake_dc_free
#define dc_config fake_dc_config
#define dc_get_plan fake_dc_get_plan
#define dc_kv_positions fake_dc_kv_positions
#define dc_cache_init fake_dc_cache_init
#define dc_forward fake_dc_forward
#define dc_sample fake_dc_sample
#define dc_logits_row fake_dc_logits_row
#endif

#elif !defined(ENGINE_FAKE_HELPERS)
#define ENGINE_FAKE_HELPERS

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/dtype.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "kernels/sample.h"
#include "teacher/engine.h"
#include "teacher/kvcache.h"

static uint64_t ef_rs = 0x9e3779b97f4a7c15ull;
static float ef_randn(void) {
    ef_rs ^= ef_rs << 13, ef_rs ^= ef_rs >> 7, ef_rs ^= ef_rs << 17;
    float a = ((float)(ef_rs >> 40) + 0.5f) / 16777216.0f;
    ef_rs ^= ef_rs << 13, ef_rs ^= ef_rs >> 7, ef_rs ^= ef_rs << 17;
    float b = ((float)(ef_rs >> 40) + 0.5f) / 16777216.0f;
    return sqrtf(-2.f * logf(a)) * cosf(6.2831853f * b);
}

#define EF_MAX_TENSORS 512
typedef struct {
    st_wtensor t[EF_MAX_TENSORS];
    void *mem[EF_MAX_TENSORS];
    size_t n;
} ef_tensors;

/* [r, c], or c 0: a vector of r; data (malloc'd) is the list's from then on */
static int ef_push(ef_tensors *ts, const char *name, rt_dtype dt, int64_t r, int64_t c, void *data) {
    if (ts->n == EF_MAX_TENSORS) { free(data); return rt_fail(RT_ERANGE, "more than %d tensors", EF_MAX_TENSORS); }
    size_t i = ts->n++;
    ts->mem[i] = data;
    ts->t[i] = (st_wtensor){.name = strdup(name), .dtype = dt, .ndim = c > 0 ? 2 : 1, .shape = {r, c}, .data = data};
    return 0;
}

/* [r, c] (c ≤ 1: a vector of r) of N(mean, std), stored as dt (bf16 or f32) */
static int ef_add(ef_tensors *ts, const char *name, int64_t r, int64_t c, float std, float mean, rt_dtype dt) {
    if (c <= 1) c = 0;
    size_t n = (size_t)(r * (c ? c : 1));
    float *f = malloc(n * sizeof(float));
    if (!f) return RT_ENOMEM;
    for (size_t j = 0; j < n; j++) f[j] = mean + std * ef_randn();
    if (dt == RT_DT_F32) return ef_push(ts, name, dt, r, c, f);
    uint16_t *b = malloc(n * 2);
    if (!b) { free(f); return RT_ENOMEM; }
    cvt_f32_to_bf16(f, b, n);
    free(f);
    return ef_push(ts, name, RT_DT_BF16, r, c, b);
}

static void ef_tensors_free(ef_tensors *ts) {
    for (size_t i = 0; i < ts->n; i++) free((void *)ts->t[i].name), free(ts->mem[i]);
    ts->n = 0;
}

#ifdef ENGINE_FAKE_DENSE
typedef struct {
    const char *arch, *model_type;
    int64_t D, F, L, V, Hq, Hkv, hd;
    bool bias, tied;
    rt_dtype dt;
    float head_gain;   /* std of lm_head (untied) in units of 1/sqrt(D) */
    bool qk_norm;      /* qwen3: self_attn.q_norm / k_norm [hd] */
} ef_shape;

static const ef_shape EF_QWEN = {"Qwen2ForCausalLM", "qwen2", 128, 256, 2, 96, 2, 1, 64, true, true, RT_DT_BF16, 4, false};
static const ef_shape EF_LLAMA = {"LlamaForCausalLM", "llama", 256, 384, 2, 80, 2, 1, 128, false, false, RT_DT_F32, 4,
                                  false};
/* Qwen3: q/k norms, head_dim 64 decoupled from hidden 128 / 4 heads (q is 256 wide), tied, bf16 */
static const ef_shape EF_QWEN3 = {"Qwen3ForCausalLM", "qwen3", 128, 256, 2, 96, 4, 2, 64, false, true, RT_DT_BF16, 4,
                                  true};

/* A tiny dense checkpoint in dir (created): random weights of seed, scaled so the logits have a
 * standard deviation of about 4. */
static int ef_make_dense(const char *dir, const ef_shape *s, uint64_t seed) {
    ef_rs = seed;
    char path[512], name[160];
    if (mkdir(dir, 0755) && errno != EEXIST) return rt_fail(RT_EIO, "mkdir %s", dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return rt_fail(RT_EIO, "writing %s", path);
    fprintf(f, "{\"architectures\": [\"%s\"], \"model_type\": \"%s\", \"vocab_size\": %lld, \"hidden_size\": %lld, "
               "\"intermediate_size\": %lld, \"num_hidden_layers\": %lld, \"num_attention_heads\": %lld, "
               "\"num_key_value_heads\": %lld, \"head_dim\": %lld, \"max_position_embeddings\": 512, "
               "\"rms_norm_eps\": 1e-6, \"rope_theta\": 10000.0, \"tie_word_embeddings\": %s, "
               "\"eos_token_id\": 1}\n",
            s->arch, s->model_type, (long long)s->V, (long long)s->D, (long long)s->F, (long long)s->L,
            (long long)s->Hq, (long long)s->Hkv, (long long)s->hd, s->tied ? "true" : "false");
    fclose(f);
    ef_tensors *ts = calloc(1, sizeof *ts);
    if (!ts) return RT_ENOMEM;
    int64_t D = s->D, qd = s->Hq * s->hd, kd = s->Hkv * s->hd;
    float sd = 1.0f / sqrtf((float)D), head = s->head_gain / sqrtf((float)D);
    int rc = ef_add(ts, "model.embed_tokens.weight", s->V, D, s->tied ? head : 1.0f, 0, s->dt);
    if (!rc) rc = ef_add(ts, "model.norm.weight", D, 1, 0.1f, 1, s->dt);
    if (!rc && !s->tied) rc = ef_add(ts, "lm_head.weight", s->V, D, head, 0, s->dt);
    for (int64_t l = 0; !rc && l < s->L; l++) {
#define W(suffix, r, c, std, mean)                                                                        \
    if (!rc) rc = (snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l, suffix),             \
                   ef_add(ts, name, r, c, std, mean, s->dt))
        W("input_layernorm.weight", D, 1, 0.1f, 1);
        W("post_attention_layernorm.weight", D, 1, 0.1f, 1);
        W("self_attn.q_proj.weight", qd, D, sd, 0);
        W("self_attn.k_proj.weight", kd, D, sd, 0);
        W("self_attn.v_proj.weight", kd, D, sd, 0);
        W("self_attn.o_proj.weight", D, qd, 1.0f / sqrtf((float)qd), 0);
        if (s->qk_norm) {
            W("self_attn.q_norm.weight", s->hd, 1, 0.1f, 1);
            W("self_attn.k_norm.weight", s->hd, 1, 0.1f, 1);
        }
        if (s->bias) {
            W("self_attn.q_proj.bias", qd, 1, 0.5f, 0);
            W("self_attn.k_proj.bias", kd, 1, 0.5f, 0);
            W("self_attn.v_proj.bias", kd, 1, 0.5f, 0);
        }
        W("mlp.gate_proj.weight", s->F, D, sd, 0);
        W("mlp.up_proj.weight", s->F, D, sd, 0);
        W("mlp.down_proj.weight", D, s->F, 1.0f / sqrtf((float)s->F), 0);
#undef W
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!rc) rc = st_write(path, ts->t, ts->n, NULL);
    ef_tensors_free(ts);
    free(ts);
    return rc;
}
#endif

/* ---- one forward against another ----------------------------------------------------------- */

/* a forward of either engine: fills logits [n_seqs, V] (the last position of each) */
typedef int (*ef_forward_fn)(void *model, kv_pool *cache, kv_seq *const *seqs, const int32_t *n_new, int64_t n_seqs,
                             const int32_t *tokens, float *logits);

typedef struct {
    float max_d;              /* largest |Δ logit| (NaN counts as the largest) */
    double sum_sq_logit;      /* Σ logit² of the CPU forward */
    double sum_sq_d;          /* Σ Δ² */
    int64_t count;            /* logits compared */
} ef_forward_stats;

/* The CPU forward (its pool: 64 blocks of cpu_block_floats) and the GPU one (gpu_blocks blocks of
 * the device cache, at most 64) over the same passes, block size 16; the greedy next token is the
 * CPU's. RT_EINTERNAL when the two caches disagree on a sequence's length. */
static int ef_forward_steps(ef_forward_fn cpu, void *cm, size_t cpu_block_floats, ef_forward_fn gpu, void *gm,
                            int64_t gpu_blocks, int64_t V, ef_forward_stats *st) {
    int64_t bs = 16;
    kv_pool *cp = NULL, *gp = NULL;
    *st = (ef_forward_stats){0};
    int rc = kv_pool_create(64, bs, cpu_block_floats, &cp);
    if (!rc) rc = kv_pool_create(gpu_blocks < 64 ? gpu_blocks : 64, bs, 0, &gp);
    kv_seq cs[3] = {{0}}, gs[3] = {{0}};
    kv_seq *cpt[3] = {&cs[0], &cs[1], &cs[2]}, *gpt[3] = {&gs[0], &gs[1], &gs[2]};
    int32_t n_new[3] = {5, 40, 17}, tok[62];
    for (int i = 0; i < 62; i++) tok[i] = (int32_t)(3 + (i * 13 + 5) % (V - 3));
    float *lc = malloc((size_t)(3 * V) * sizeof(float)), *lg = malloc((size_t)(3 * V) * sizeof(float));
    if (!rc && (!lc || !lg)) rc = RT_ENOMEM;
    for (int step = 0; step < 6 && !rc; step++) {
        for (int64_t i = 0; i < 3 * V; i++) lg[i] = NAN;   /* unwritten logits show up */
        if ((rc = cpu(cm, cp, cpt, n_new, 3, tok, lc)) || (rc = gpu(gm, gp, gpt, n_new, 3, tok, lg))) break;
        for (int s = 0; s < 3 && !rc; s++)
            if (cs[s].len != gs[s].len)
                rc = rt_fail(RT_EINTERNAL, "sequence %d: length %lld on the CPU, %lld on the GPU", s,
                             (long long)cs[s].len, (long long)gs[s].len);
        for (int64_t i = 0; i < 3 * V; i++) {
            float d = fabsf(lc[i] - lg[i]);
            if (!(d <= st->max_d)) st->max_d = d;   /* NaN too */
            st->sum_sq_logit += (double)lc[i] * lc[i], st->sum_sq_d += (double)d * d, st->count++;
        }
        for (int s = 0; s < 3; s++) {   /* greedy next tokens */
            int32_t best = 0;
            for (int64_t j = 1; j < V; j++)
                if (lc[s * V + j] > lc[s * V + best]) best = (int32_t)j;
            tok[s] = best, n_new[s] = 1;
        }
    }
    for (int s = 0; s < 3; s++) {
        if (cp) kv_seq_release(cp, &cs[s]);
        if (gp) kv_seq_release(gp, &gs[s]);
    }
    kv_pool_free(cp), kv_pool_free(gp);
    free(lc), free(lg);
    return rc;
}

/* ---- the engine over a request pattern ------------------------------------------------------ */

typedef struct {
    te_result *r;
    size_t n, cap;
    float min_margin;   /* smallest top-1 − top-2 logprob gap over the greedy requests' tokens */
    float min_gap;      /* the same over every token, drawn ones too */
} ef_collected;

static int ef_keep(ef_collected *c, te_result *r, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (c->n == c->cap) {
            size_t cap = c->cap ? 2 * c->cap : 16;
            te_result *g = realloc(c->r, cap * sizeof *c->r);
            if (!g) { te_results_free(r + i, n - i); return RT_ENOMEM; }
            c->r = g, c->cap = cap;
        }
        c->r[c->n++] = r[i];
    }
    free(r);   /* the arrays inside are kept */
    return 0;
}

static int ef_by_tag(const void *a, const void *b) {
    const te_result *x = a, *y = b;
    if (x->tag != y->tag) return x->tag < y->tag ? -1 : 1;
    return x->sample - y->sample;
}

typedef struct {
    int64_t max_tokens[4];
    int n_samples[4];
    smp_params sampled;   /* request 1's sampling (SMP_GREEDY: all greedy) */
    uint64_t seed;        /* every request's */
    bool all_sampled;     /* every request drawn with sampled, request r with seed + r */
} ef_pattern;

/* Requests of different lengths arriving at different steps (more sequences than a small
 * max_batch queue), prompts longer than a block shared by their samples; runs e until idle and
 * leaves out sorted by (tag, sample). RT_EINTERNAL after 200 steps. */
static int ef_drive(te_engine *e, int64_t V, const ef_pattern *p, ef_collected *out) {
    int32_t prompt[4][40];
    int64_t plen[4] = {5, 37, 1, 20};
    for (int r = 0; r < 4; r++)
        for (int64_t i = 0; i < plen[r]; i++) prompt[r][i] = (int32_t)(2 + (r * 31 + i * 7 + i * i) % (V - 2));
    bool req1_greedy = p->sampled.temperature == 0.0f;
    int submitted = 0, step = 0, rc = 0;
    out->min_margin = out->min_gap = INFINITY;
    while (!rc && (submitted < 4 || te_busy(e))) {
        if (submitted < 4 && (step == 0 || step == 2 || step == 3 || step == 6)) {
            te_request q = {.prompt = prompt[submitted], .n_prompt = plen[submitted], .n_samples = p->n_samples[submitted],
                            .max_tokens = p->max_tokens[submitted],
                            .sampling = p->all_sampled || submitted == 1 ? p->sampled : SMP_GREEDY,
                            .seed = p->seed + (p->all_sampled ? (uint64_t)submitted : 0), .ignore_config_eos = true,
                            .logprobs = true, .top_logprobs = 2, .tag = (uint64_t)submitted};
            if ((rc = te_submit(e, &q))) break;
            submitted++;
        }
        te_result *r;
        size_t n;
        if ((rc = te_step(e, &r, &n)) || (rc = ef_keep(out, r, n))) break;
        if (++step >= 200) rc = rt_fail(RT_EINTERNAL, "the engine ran 200 steps");
    }
    for (size_t i = 0; i < out->n; i++) {
        bool greedy = !p->all_sampled && (req1_greedy || out->r[i].tag != 1);
        for (int64_t t = 0; t < out->r[i].n_ids; t++) {
            float g = out->r[i].top_logprobs[2 * t] - out->r[i].top_logprobs[2 * t + 1];
            if (g < out->min_gap) out->min_gap = g;
            if (greedy && g < out->min_margin) out->min_margin = g;
        }
    }
    qsort(out->r, out->n, sizeof *out->r, ef_by_tag);
    return rc;
}

/* a and b (sorted) hold the same requests, samples and tokens: 0, else RT_EINVAL naming the first
 * difference. *max_dlogprob: the largest |Δ logprob| of the tokens compared; *tokens the tokens of
 * the results compared (up to the one that differs).
 * top_tol > 0: the top-k logprobs too, rank by rank within top_tol, and the top id a's unless a's
 * top two are within 2 × top_tol (a near tie the rounding may swap). */
static int ef_compare(const ef_collected *a, const ef_collected *b, float top_tol, float *max_dlogprob,
                      int64_t *tokens) {
    *max_dlogprob = 0, *tokens = 0;
    if (a->n != b->n) return rt_fail(RT_EINVAL, "%zu results vs %zu", a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        const te_result *x = &a->r[i], *y = &b->r[i];
        if (x->tag != y->tag || x->sample != y->sample)
            return rt_fail(RT_EINVAL, "result %zu: request %llu sample %d vs request %llu sample %d", i,
                           (unsigned long long)x->tag, x->sample, (unsigned long long)y->tag, y->sample);
        if (x->n_ids != y->n_ids)
            return rt_fail(RT_EINVAL, "request %llu sample %d: %lld vs %lld tokens", (unsigned long long)x->tag,
                           x->sample, (long long)x->n_ids, (long long)y->n_ids);
        *tokens += x->n_ids;
        for (int64_t t = 0; t < x->n_ids; t++) {
            if (x->ids[t] != y->ids[t])
                return rt_fail(RT_EINVAL, "request %llu sample %d token %lld: %d vs %d", (unsigned long long)x->tag,
                               x->sample, (long long)t, x->ids[t], y->ids[t]);
            float d = fabsf(x->logprobs[t] - y->logprobs[t]);
            if (!(d <= *max_dlogprob)) *max_dlogprob = d;
        }
        if (!(top_tol > 0)) continue;
        int k = x->top_k;
        if (y->top_k != k || (k && (!x->top_logprobs || !y->top_logprobs || !x->top_ids || !y->top_ids)))
            return rt_fail(RT_EINVAL, "request %llu sample %d: top-%d vs top-%d logprobs", (unsigned long long)x->tag,
                           x->sample, k, y->top_k);
        for (int64_t t = 0; t < x->n_ids && k; t++) {
            const float *p = x->top_logprobs + k * t, *q = y->top_logprobs + k * t;
            for (int j = 0; j < k; j++)
                if (!(fabsf(p[j] - q[j]) <= top_tol))
                    return rt_fail(RT_EINVAL, "request %llu sample %d token %lld: top-%d logprob %.4f vs %.4f",
                                   (unsigned long long)x->tag, x->sample, (long long)t, j + 1, p[j], q[j]);
            if (x->top_ids[k * t] != y->top_ids[k * t] && !(k >= 2 && p[0] - p[1] <= 2 * top_tol))
                return rt_fail(RT_EINVAL, "request %llu sample %d token %lld: top id %d vs %d (gap %.3f)",
                               (unsigned long long)x->tag, x->sample, (long long)t, x->top_ids[k * t],
                               y->top_ids[k * t], k >= 2 ? p[0] - p[1] : INFINITY);
        }
    }
    return 0;
}

/* te_model_load_opts(dir, device cuda) on a stand-in GPU of gpu_bytes (0: as it is) fails with
 * code and a one-line message containing needle, and allocates no device memory: 0 (the refusal
 * stays rt_errmsg()), else RT_EINVAL saying what differed. */
__attribute__((unused)) static int ef_refused(const char *dir, size_t gpu_bytes, int code, const char *needle) {
    if (gpu_bytes) fake_total_bytes = gpu_bytes;
    size_t before = fake_mallocs;
    te_load_opts lo = {.device = TE_DEVICE_CUDA};
    te_model *m = NULL;
    int rc = te_model_load_opts(dir, &lo, &m);
    if (!rc) {
        te_model_free(m);
        return rt_fail(RT_EINVAL, "%s loaded; expected code %d", dir, code);
    }
    if (rc != code) return rt_errorf(RT_EINVAL, "code %d, expected %d", rc, code);
    if (m) return rt_errorf(RT_EINVAL, "a model was returned beside the error");
    if (!strstr(rt_errmsg(), needle)) return rt_errorf(RT_EINVAL, "no '%s' in the message", needle);
    if (strchr(rt_errmsg(), '\n')) return rt_errorf(RT_EINVAL, "the message is more than one line");
    if (fake_mallocs != before)
        return rt_errorf(RT_EINVAL, "%zu device allocations before the error", fake_mallocs - before);
    return 0;
}

#endif

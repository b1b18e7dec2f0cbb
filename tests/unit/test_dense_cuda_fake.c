/* The GPU teacher engine (teacher/dense_cuda.c behind teacher/engine.c, --device cuda) run on the
 * CPU: the CUDA runtime and every kernel entry point it calls are stood in for by the kernels'
 * CPU twins on bf16 values (tests/unit/fake_cuda_impl.h: device memory is host memory, poisoned
 * with NaN on allocation and counted; vector-loaded pointers are checked for 16-byte
 * alignment). What this checks without a GPU is the engine's own orchestration — the weight
 * layout (fused q/k/v and gate/up with their biases, tied and untied heads, bf16 copied and f32
 * converted), the memory plan and the allocations it predicts, the device KV cache addressed
 * through the host pool's block tables (shared prompt blocks, copy on write), the choice between
 * the fresh-prefill flash attention and the paged attention, passes split by the pass limits,
 * the gathering of the logits rows — against the CPU engine (teacher/dense.h, itself tested
 * against transformers). What it cannot check: the CUDA kernels themselves (tests/gpu,
 * tests/emu) and the device.
 *
 * Models: a tiny Qwen2 (hidden 128, 2 query heads and 1 kv head of 64, q/k/v biases, tied
 * embeddings, BF16 weights), a tiny Llama (hidden 256, 2 heads of 128 and 1 kv head, untied
 * head, F32 weights converted to bf16 on the way) and a tiny Qwen3 (hidden 128, 4 query heads
 * and 2 kv heads of 64 — head_dim decoupled from hidden/heads —, q/k norms, tied, BF16), 2
 * layers each, random weights scaled so the logits have a standard deviation of about 4. The
 * Qwen3's seed is 9: of seeds 1–10, 5–7 fail the margin precondition, 2, 3, 8, 10 give CPU
 * samples of request 1 that agree (a peaked distribution: the divergence precondition), 1 a
 * temperature-1 draw flipped at a CDF boundary; its forward matches at every seed tried.
 *
 * Tolerances: the stand-ins round weights and every activation to bf16 (2^-9 rms relative per
 * rounding) where the CPU engine keeps f32; about 15 roundings in series through two layers
 * give ~0.5% of the logit spread, ~0.02 rms, and ~0.1 at the worst of the ~1,500 logits a test
 * compares (measured 0.09–0.13 over 8 seeds: see the cr_log_info lines). Bounds: |Δ logit| ≤
 * 0.25 (dense level), |Δ logprob| ≤ 0.15 for every generated token, and identical greedy tokens.
 * A greedy decision whose top-2 margin is below the logit error can flip under bf16 without any
 * bug, so the weights' seed (14, from the first 8 tried) is one where every greedy CPU decision
 * has a margin ≥ 0.1 (measured 0.12 and 0.18); the test asserts that precondition and prints it.
 * The request with 3 samples is sampled (temperature 1), so its samples diverge and each writes
 * its own copy of the prompt's shared last block; a sampled token flips where the uniform draw
 * lands within the logprob error of a boundary of the CDF — at seed 14 none does (seeds 9 and
 * 15 show such flips), so a mismatch at this seed is a change in the arithmetic, to be looked at. */
#include <criterion/criterion.h>

#include "tests/unit/fake_cuda.h"

/* the engine and the GPU forward under names of their own (the library has the real ones) */
#define te_model_load fake_te_model_load
#define te_model_load_comm fake_te_model_load_comm
#define te_model_load_opts fake_te_model_load_opts
#define te_device_parse fake_te_device_parse
#define te_device_name fake_te_device_name
#define te_model_free fake_te_model_free
#define te_model_config fake_te_model_config
#define te_model_is_deepseek fake_te_model_is_deepseek
#define te_engine_create fake_te_engine_create
#define te_engine_free fake_te_engine_free
#define te_submit fake_te_submit
#define te_step fake_te_step
#define te_cancel fake_te_cancel
#define te_busy fake_te_busy
#define te_stats_get fake_te_stats_get
#define te_results_free fake_te_results_free
#define dc_load fake_dc_load
#define dc_free fake_dc_free
#define dc_config fake_dc_config
#define dc_get_plan fake_dc_get_plan
#define dc_kv_positions fake_dc_kv_positions
#define dc_cache_init fake_dc_cache_init
#define dc_forward fake_dc_forward
#define dc_sample fake_dc_sample
#define dc_logits_row fake_dc_logits_row

#include "teacher/dense_cuda.c"
#undef CUDA_TRY
#include "teacher/engine.c"

#include "kernels/loss.h"
#include "kernels/optim.h"
#define FAKE_CHECK(cond) cr_assert(cond)
#include "tests/unit/fake_cuda_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- tiny checkpoints ------------------------------------------------------------------ */

typedef struct {
    const char *arch, *model_type;
    int64_t D, F, L, V, Hq, Hkv, hd;
    bool bias, tied;
    rt_dtype dt;
    float head_gain;   /* std of lm_head (untied) in units of 1/sqrt(D) */
    bool qk_norm;      /* qwen3: self_attn.q_norm / k_norm [hd] */
} shape;

static const shape QWEN = {"Qwen2ForCausalLM", "qwen2", 128, 256, 2, 96, 2, 1, 64, true, true, RT_DT_BF16, 4, false};
static const shape LLAMA = {"LlamaForCausalLM", "llama", 256, 384, 2, 80, 2, 1, 128, false, false, RT_DT_F32, 4, false};
/* Qwen3: q/k norms, head_dim 64 decoupled from hidden 128 / 4 heads (q is 256 wide), tied, bf16 */
static const shape QWEN3 = {"Qwen3ForCausalLM", "qwen3", 128, 256, 2, 96, 4, 2, 64, false, true, RT_DT_BF16, 4, true};

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static float randn(void) {
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    float a = ((float)(rs >> 40) + 0.5f) / 16777216.0f;
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    float b = ((float)(rs >> 40) + 0.5f) / 16777216.0f;
    return sqrtf(-2.f * logf(a)) * cosf(6.2831853f * b);
}

typedef struct {
    st_wtensor t[64];
    void *mem[64];
    size_t n;
    rt_dtype dt;
} tensors;

static void add(tensors *ts, const char *name, int64_t r, int64_t c, float std, float mean) {
    size_t n = (size_t)(r * c), i = ts->n++;
    float *f = malloc(n * sizeof(float));
    for (size_t j = 0; j < n; j++) f[j] = mean + std * randn();
    void *data = f;
    if (ts->dt == RT_DT_BF16) {
        data = malloc(n * 2);
        cvt_f32_to_bf16(f, data, n);
        free(f);
    }
    ts->mem[i] = data;
    ts->t[i] = (st_wtensor){.name = strdup(name), .dtype = ts->dt, .ndim = c > 1 ? 2 : 1,
                            .shape = {c > 1 ? r : r * c, c}, .data = data};
}

static void make_model(const char *dir, const shape *s, uint64_t seed) {
    rs = seed;
    char path[512], name[160];
    cr_assert(mkdir(dir, 0755) == 0 || errno == EEXIST);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fprintf(f, "{\"architectures\": [\"%s\"], \"model_type\": \"%s\", \"vocab_size\": %lld, \"hidden_size\": %lld, "
               "\"intermediate_size\": %lld, \"num_hidden_layers\": %lld, \"num_attention_heads\": %lld, "
               "\"num_key_value_heads\": %lld, \"head_dim\": %lld, \"max_position_embeddings\": 512, "
               "\"rms_norm_eps\": 1e-6, \"rope_theta\": 10000.0, \"tie_word_embeddings\": %s, "
               "\"eos_token_id\": 1}\n",
            s->arch, s->model_type, (long long)s->V, (long long)s->D, (long long)s->F, (long long)s->L,
            (long long)s->Hq, (long long)s->Hkv, (long long)s->hd, s->tied ? "true" : "false");
    fclose(f);
    tensors ts = {.dt = s->dt};
    int64_t D = s->D, qd = s->Hq * s->hd, kd = s->Hkv * s->hd;
    add(&ts, "model.embed_tokens.weight", s->V, D, s->tied ? s->head_gain / sqrtf((float)D) : 1.0f, 0);
    add(&ts, "model.norm.weight", D, 1, 0.1f, 1);
    if (!s->tied) add(&ts, "lm_head.weight", s->V, D, s->head_gain / sqrtf((float)D), 0);
    for (int64_t l = 0; l < s->L; l++) {
#define W(suffix, r, c, std, mean) \
    (snprintf(name, sizeof name, "model.layers.%lld.%s", (long long)l, suffix), add(&ts, name, r, c, std, mean))
        W("input_layernorm.weight", D, 1, 0.1f, 1);
        W("post_attention_layernorm.weight", D, 1, 0.1f, 1);
        W("self_attn.q_proj.weight", qd, D, 1.0f / sqrtf((float)D), 0);
        W("self_attn.k_proj.weight", kd, D, 1.0f / sqrtf((float)D), 0);
        W("self_attn.v_proj.weight", kd, D, 1.0f / sqrtf((float)D), 0);
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
        W("mlp.gate_proj.weight", s->F, D, 1.0f / sqrtf((float)D), 0);
        W("mlp.up_proj.weight", s->F, D, 1.0f / sqrtf((float)D), 0);
        W("mlp.down_proj.weight", D, s->F, 1.0f / sqrtf((float)s->F), 0);
#undef W
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(st_write(path, ts.t, ts.n, NULL), 0, "%s", rt_errmsg());
    for (size_t i = 0; i < ts.n; i++) free((void *)ts.t[i].name), free(ts.mem[i]);
}

static char tmpdir[64];
static char qwen_dir[128], llama_dir[128], qwen3_dir[128];

static void setup(void) {
    mm_blas_single_thread();
    fake_total_bytes = (size_t)64 << 20;   /* a 64 MiB "GPU": the plan gives the cache what is left */
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dc-fake-XXXXXX");
    cr_assert(mkdtemp(tmpdir));
    snprintf(qwen_dir, sizeof qwen_dir, "%s/qwen", tmpdir);
    snprintf(llama_dir, sizeof llama_dir, "%s/llama", tmpdir);
    snprintf(qwen3_dir, sizeof qwen3_dir, "%s/qwen3", tmpdir);
    const char *sq = getenv("DC_SEED_Q"), *sl = getenv("DC_SEED_L");
    make_model(qwen_dir, &QWEN, sq ? strtoull(sq, NULL, 0) : 14);   /* DC_SEED_*: to try others */
    make_model(llama_dir, &LLAMA, sl ? strtoull(sl, NULL, 0) : 14);
    const char *s3 = getenv("DC_SEED_Q3");
    make_model(qwen3_dir, &QWEN3, s3 ? strtoull(s3, NULL, 0) : 9);
}

static void teardown(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

/* ---- the engine on both devices ------------------------------------------------------- */

typedef struct {
    te_result *r;
    size_t n, cap;
    float min_margin;   /* smallest top-1 − top-2 logprob gap over every drawn token (CPU run) */
} collected;

static void keep(collected *c, te_result *r, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (c->n == c->cap) c->r = realloc(c->r, (c->cap = c->cap ? 2 * c->cap : 16) * sizeof *c->r);
        c->r[c->n++] = r[i];
    }
    free(r);   /* the arrays inside are kept */
}

static int by_tag(const void *a, const void *b) {
    const te_result *x = a, *y = b;
    if (x->tag != y->tag) return x->tag < y->tag ? -1 : 1;
    return x->sample - y->sample;
}

/* Requests of different lengths, arriving at different steps, with n > 1 samples sharing a
 * prompt longer than one block (16), prompts chunked by prefill_chunk 16 (a chunk continuing a
 * cached prefix), and more sequences than max_batch (queueing). Greedy, except request 1 (3
 * samples at temperature 1), with top-2 logprobs. */
#define SAMPLED ((smp_params){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f})
static const smp_params *all_sampling;   /* non-NULL: every request samples with these */
static void run_engine_opts(const char *dir, te_device dev, bool graphs, collected *out) {
    te_load_opts lo = {.device = dev, .gpu_memory_fraction = 0.9, .no_cuda_graphs = !graphs};
    te_model *m;
    cr_assert_eq(te_model_load_opts(dir, &lo, &m), 0, "%s", rt_errmsg());
    if (dev == TE_DEVICE_CUDA) {   /* everything planned is allocated at load, nothing more */
        const dc_plan *p = dc_get_plan(m->gpu);
        cr_assert(fake_peak <= p->total && fake_peak + DC_GEMM_WS >= p->total, "peak %zu, plan %zu", fake_peak,
                  p->total);
    }
    te_opts o = {.max_batch = 5, .cache_tokens = dev == TE_DEVICE_CUDA ? 0 : 4096, .block_size = 16,
                 .prefill_chunk = 16};
    te_engine *e;
    cr_assert_eq(te_engine_create(m, &o, &e), 0, "%s", rt_errmsg());
    int64_t V = te_model_config(m)->vocab_size;
    int32_t prompt[4][40];
    int64_t plen[4] = {5, 37, 1, 20}, maxt[4] = {12, 10, 15, 9};
    int nsmp[4] = {1, 3, 1, 2};
    for (int r = 0; r < 4; r++)
        for (int64_t i = 0; i < plen[r]; i++) prompt[r][i] = (int32_t)(2 + (r * 31 + i * 7 + i * i) % (V - 2));
    int submitted = 0, step = 0;
    out->min_margin = INFINITY;
    while (submitted < 4 || te_busy(e)) {
        if (submitted < 4 && (step == 0 || step == 2 || step == 3 || step == 6)) {
            te_request q = {.prompt = prompt[submitted], .n_prompt = plen[submitted], .n_samples = nsmp[submitted],
                            .max_tokens = maxt[submitted], .sampling = all_sampling ? *all_sampling : submitted == 1 ? SAMPLED : SMP_GREEDY,
                            .seed = all_sampling ? 11 + (uint64_t)submitted : 5, .ignore_config_eos = true,
                            .logprobs = true, .top_logprobs = 2, .tag = (uint64_t)submitted};
            cr_assert_eq(te_submit(e, &q), 0, "%s", rt_errmsg());
            submitted++;
        }
        te_result *r;
        size_t n;
        cr_assert_eq(te_step(e, &r, &n), 0, "%s", rt_errmsg());
        keep(out, r, n);
        step++;
        cr_assert(step < 200);
    }
    te_stats st;
    te_stats_get(e, &st);
    cr_assert_eq(st.blocks_in_use, 0);
    for (size_t i = 0; i < out->n; i++)
        for (int64_t t = 0; t < out->r[i].n_ids && out->r[i].tag != 1 && !all_sampling; t++) {   /* greedy requests */
            float g = out->r[i].top_logprobs[2 * t] - out->r[i].top_logprobs[2 * t + 1];
            if (g < out->min_margin) out->min_margin = g;
        }
    qsort(out->r, out->n, sizeof *out->r, by_tag);
    if (dev == TE_DEVICE_CUDA) {   /* the forwards allocated nothing on the device */
        const dc_plan *p = dc_get_plan(m->gpu);
        cr_assert(fake_peak <= p->total, "peak %zu, plan %zu", fake_peak, p->total);
    }
    te_engine_free(e);
    te_model_free(m);
}
static void run_engine(const char *dir, te_device dev, collected *out) { run_engine_opts(dir, dev, true, out); }

static void engine_matches_cpu(const char *dir) {
    collected cpu = {0}, gpu = {0};
    run_engine(dir, TE_DEVICE_CPU, &cpu);
    fake_peak = fake_in_use;
    run_engine(dir, TE_DEVICE_CUDA, &gpu);
    cr_assert_eq(cpu.n, 7);   /* 1 + 3 + 1 + 2 samples */
    cr_assert(all_sampling || cpu.min_margin >= 0.1f, "precondition: the CPU's smallest top-2 margin is %.3f (a near-tie)",
              cpu.min_margin);
    cr_assert_eq(gpu.n, cpu.n);
    float worst = 0;
    int64_t tokens = 0, sampled = 0;
    for (size_t i = 0; i < cpu.n; i++) {
        te_result *a = &cpu.r[i], *b = &gpu.r[i];
        cr_assert(a->tag == b->tag && a->sample == b->sample);
        cr_assert_eq(a->n_ids, b->n_ids, "request %llu sample %d: %lld vs %lld tokens", (unsigned long long)a->tag,
                     a->sample, (long long)a->n_ids, (long long)b->n_ids);
        for (int64_t t = 0; t < a->n_ids; t++) {
            cr_assert_eq(a->ids[t], b->ids[t], "request %llu sample %d token %lld: cpu %d, gpu %d (smallest CPU "
                         "margin %.3f)", (unsigned long long)a->tag, a->sample, (long long)t, a->ids[t], b->ids[t],
                         cpu.min_margin);
            float d = fabsf(a->logprobs[t] - b->logprobs[t]);
            if (!(d <= worst)) worst = d;
        }
        tokens += a->n_ids;
        if (a->tag == 1 || all_sampling) sampled += a->n_ids;
    }
    /* top-2 logprobs (the device's kernel on the stand-in): logprobs rank by rank within the
     * bound; the top id the CPU's unless the CPU's top two are a near tie (within 2 × the bound:
     * bf16 may swap them) */
    for (size_t i = 0; i < cpu.n; i++)
        for (int64_t t = 0; t < cpu.r[i].n_ids; t++) {
            const float *a = cpu.r[i].top_logprobs + 2 * t, *b = gpu.r[i].top_logprobs + 2 * t;
            cr_assert(fabsf(a[0] - b[0]) <= 0.15f && fabsf(a[1] - b[1]) <= 0.15f, "request %llu top logprobs",
                      (unsigned long long)cpu.r[i].tag);
            cr_assert(cpu.r[i].top_ids[2 * t] == gpu.r[i].top_ids[2 * t] || a[0] - a[1] <= 0.3f,
                      "request %llu sample %d step %lld: top id cpu %d, gpu %d (gap %.3f)",
                      (unsigned long long)cpu.r[i].tag, cpu.r[i].sample, (long long)t, cpu.r[i].top_ids[2 * t],
                      gpu.r[i].top_ids[2 * t], a[0] - a[1]);
        }
    /* the three samples of request 1 went their own ways (so each wrote its own copy of the
     * prompt's last, shared block); under the all-sampled nucleus a peaked model may not */
    te_result *s1 = cpu.r + 1;   /* sorted: request 0's one sample, then request 1's three */
    cr_assert(s1[0].tag == 1 && s1[2].tag == 1);
    for (int i = 0; i < 3 && !all_sampling; i++) {
        const te_result *x = &s1[i], *y = &s1[(i + 1) % 3];
        cr_assert(x->n_ids != y->n_ids || memcmp(x->ids, y->ids, (size_t)x->n_ids * 4), "samples %d and %d agree",
                  x->sample, y->sample);
    }
    cr_log_info("%s: %lld tokens identical (%lld sampled); max |Δ logprob| %.4f; smallest CPU top-2 margin %.3f", dir,
                (long long)tokens, (long long)sampled, worst, cpu.min_margin);
    cr_assert(worst <= 0.15f, "max |Δ logprob| %g", worst);
    te_results_free(cpu.r, cpu.n);
    te_results_free(gpu.r, gpu.n);
}

TestSuite(dense_cuda_fake, .init = setup, .fini = teardown);

Test(dense_cuda_fake, qwen2_engine_gives_the_cpu_engines_tokens) { engine_matches_cpu(qwen_dir); }
Test(dense_cuda_fake, llama_engine_gives_the_cpu_engines_tokens) { engine_matches_cpu(llama_dir); }
Test(dense_cuda_fake, qwen3_engine_gives_the_cpu_engines_tokens) { engine_matches_cpu(qwen3_dir); }

/* Every request sampled on the device (dc_sample: temperature 0.8, top-p 0.9, top-k 40, min-p
 * 0.05, seeds 11–14): the host sampler's RNG stream (seed, sample, step), so the CPU engine's
 * tokens, and logprobs within the bound above. A draw flips where its uniform lands within the
 * logprob error of a CDF boundary of the filtered distribution; at these seeds none does. */
static const smp_params NUCLEUS = {.temperature = 0.8f, .top_k = 40, .top_p = 0.9f, .min_p = 0.05f};
Test(dense_cuda_fake, qwen2_device_sampling_gives_the_cpu_engines_tokens) {
    all_sampling = &NUCLEUS;
    engine_matches_cpu(qwen_dir);
    all_sampling = NULL;
}
Test(dense_cuda_fake, qwen3_device_sampling_gives_the_cpu_engines_tokens) {
    all_sampling = &NUCLEUS;
    engine_matches_cpu(qwen3_dir);
    all_sampling = NULL;
}
Test(dense_cuda_fake, llama_device_sampling_gives_the_cpu_engines_tokens) {
    all_sampling = &NUCLEUS;
    engine_matches_cpu(llama_dir);
    all_sampling = NULL;
}

/* dc_forward against dn_forward directly, with passes of at most 16 tokens and 16 sequences:
 * a fresh prefill of three prompts (5, 40, 17 tokens: the 40 in three pieces, the later ones on
 * the paged path), then decode steps of all three together; logits compared at every step. */
static void forward_matches_dense(const char *dir) {
    dn_model *cm;
    cr_assert_eq(dn_load(dir, NULL, &cm), 0, "%s", rt_errmsg());
    dc_load_opts lo = {.max_tokens = 16, .max_seqs = 16};
    dc_model *gm;
    cr_assert_eq(dc_load(dir, &lo, &gm), 0, "%s", rt_errmsg());
    int64_t bs = 16, nb;
    cr_assert_eq(dc_cache_init(gm, bs, &nb), 0, "%s", rt_errmsg());
    kv_pool *cp, *gp;
    cr_assert_eq(kv_pool_create(64, bs, dn_block_floats(cm, bs), &cp), 0);
    cr_assert_eq(kv_pool_create(nb < 64 ? nb : 64, bs, 0, &gp), 0);
    int64_t V = dn_config(cm)->vocab_size;
    kv_seq cs[3] = {{0}}, gs[3] = {{0}};
    kv_seq *cpt[3] = {&cs[0], &cs[1], &cs[2]}, *gpt[3] = {&gs[0], &gs[1], &gs[2]};
    int32_t n_new[3] = {5, 40, 17}, tok[62];
    for (int i = 0; i < 62; i++) tok[i] = (int32_t)(3 + (i * 13 + 5) % (V - 3));
    float *lc = malloc((size_t)(3 * V) * sizeof(float)), *lg = malloc((size_t)(3 * V) * sizeof(float));
    float worst = 0;
    for (int step = 0; step < 6; step++) {
        for (int64_t i = 0; i < 3 * V; i++) lg[i] = NAN;
        cr_assert_eq(dn_forward(cm, cp, cpt, n_new, 3, tok, lc, false), 0, "%s", rt_errmsg());
        cr_assert_eq(dc_forward(gm, gp, gpt, n_new, 3, tok, lg), 0, "%s", rt_errmsg());
        for (int s = 0; s < 3; s++) cr_assert_eq(cs[s].len, gs[s].len);
        for (int64_t i = 0; i < 3 * V; i++) {
            float d = fabsf(lc[i] - lg[i]);
            if (!(d <= worst)) worst = d;
        }
        for (int s = 0; s < 3; s++) {   /* greedy next tokens */
            int32_t best = 0;
            for (int64_t j = 1; j < V; j++)
                if (lc[s * V + j] > lc[s * V + best]) best = (int32_t)j;
            tok[s] = best, n_new[s] = 1;
        }
    }
    cr_log_info("%s: dc_forward vs dn_forward, max |Δ logit| %.4f", dir, worst);
    cr_assert(worst <= 0.25f, "max |Δ logit| %g", worst);
    for (int s = 0; s < 3; s++) kv_seq_release(cp, &cs[s]), kv_seq_release(gp, &gs[s]);
    kv_pool_free(cp), kv_pool_free(gp);
    free(lc), free(lg);
    dc_free(gm);
    dn_free(cm);
}

Test(dense_cuda_fake, qwen2_forward_in_passes_matches_dense) { forward_matches_dense(qwen_dir); }
Test(dense_cuda_fake, llama_forward_in_passes_matches_dense) { forward_matches_dense(llama_dir); }
Test(dense_cuda_fake, qwen3_forward_in_passes_matches_dense) { forward_matches_dense(qwen3_dir); }

/* A model that does not fit: one line, and not one device allocation. */
Test(dense_cuda_fake, model_that_does_not_fit_is_refused_before_any_allocation) {
    size_t before = fake_mallocs;
    fake_total_bytes = (size_t)1 << 20;   /* 1 MiB: below the Llama's 0.6 MB of bf16 weights / 0.9 */
    te_load_opts lo = {.device = TE_DEVICE_CUDA};
    te_model *m = NULL;
    int rc = te_model_load_opts(llama_dir, &lo, &m);
    cr_assert_eq(rc, RT_ENOMEM, "rc %d: %s", rc, rt_errmsg());
    cr_assert_null(m);
    cr_assert(strstr(rt_errmsg(), "GB of weights; the GPU has"), "%s", rt_errmsg());
    cr_assert_null(strchr(rt_errmsg(), '\n'));
    cr_assert_eq(fake_mallocs, before, "%zu device allocations before the error", fake_mallocs - before);
    /* the weights fit, the activations and a minimal cache do not */
    fake_total_bytes = (size_t)40 << 20;
    rc = te_model_load_opts(llama_dir, &lo, &m);
    cr_assert_eq(rc, RT_ENOMEM, "rc %d: %s", rc, rt_errmsg());
    cr_assert(strstr(rt_errmsg(), "for a cache of"), "%s", rt_errmsg());
    cr_assert_eq(fake_mallocs, before);
    cr_log_info("%s", rt_errmsg());
}

/* DeepSeek-V3 on the GPU: tests/unit/test_ds_cuda_fake.c. */

/* Llama-3.3-70B on one 80 GiB GPU: 70.6B parameters × 2 bytes of bf16 = 141 GB of weights
 * (README's count), more than 0.9 × 85.9 GB; refused from config.json alone, allocating nothing. */
Test(dense_cuda_fake, llama_70b_on_one_80_gb_gpu_needs_141_gb_of_weights) {
    char dir[160], cmd[512];
    snprintf(dir, sizeof dir, "%s/l70", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp configs/models/llama-3.3-70b.json %s/config.json", dir, dir);
    cr_assert_eq(system(cmd), 0);
    fake_total_bytes = (size_t)80 << 30;
    size_t before = fake_mallocs;
    te_load_opts lo = {.device = TE_DEVICE_CUDA};
    te_model *m = NULL;
    cr_assert_eq(te_model_load_opts(dir, &lo, &m), RT_ENOMEM, "%s", rt_errmsg());
    cr_assert(strstr(rt_errmsg(), "needs 141 GB of weights; the GPU has 77.3 GB (0.90 of 85.9 GB"), "%s", rt_errmsg());
    cr_assert_eq(fake_mallocs, before);
}

/* The engine's cache on the GPU is the plan's: all of it by default, a larger request clipped;
 * a host pool with float blocks is not the GPU cache's. */
Test(dense_cuda_fake, engine_cache_is_the_plans) {
    te_load_opts lo = {.device = TE_DEVICE_CUDA};
    te_model *m;
    cr_assert_eq(te_model_load_opts(qwen_dir, &lo, &m), 0, "%s", rt_errmsg());
    int64_t pos = dc_kv_positions(m->gpu);
    /* 64 MiB × 0.9 less the fixed part, at 2 layers × 2 × 64 × 2 bytes = 512 bytes a position;
     * the engine's blocks are all but one: the scratch block of the decode graphs' padding rows */
    const dc_plan *p = dc_get_plan(m->gpu);
    cr_assert_eq(p->kv_position_bytes, 512);
    cr_assert_eq(pos, (int64_t)(((size_t)(0.9 * (double)(64 << 20)) - p->weights - p->activations - p->workspace) / 512));
    for (int i = 0; i < 2; i++) {
        te_opts o = {.block_size = 16, .cache_tokens = i ? (int64_t)1 << 40 : 0};
        te_engine *e;
        cr_assert_eq(te_engine_create(m, &o, &e), 0, "%s", rt_errmsg());
        te_stats st;
        te_stats_get(e, &st);
        cr_assert_eq(st.blocks_total, pos / 16 - 1);
        te_engine_free(e);
    }
    kv_pool *host;
    cr_assert_eq(kv_pool_create(4, 16, 8, &host), 0);
    kv_seq s = {0}, *sp = &s;
    int32_t n = 1, tok = 3;
    float lg[96];
    cr_assert_eq(dc_forward(m->gpu, host, &sp, &n, 1, &tok, lg), RT_EINVAL);
    kv_pool_free(host);
    te_model_free(m);
}

/* Decode steps as CUDA graphs (the stand-ins record a capture and replay it at launch, reading
 * the buffers then): the engine's tokens and logprobs with graphs are those without — the
 * padding rows of a bucket touch only the scratch block, and nothing a step changes (its
 * tokens, positions, tables) is baked into a graph —, and graphs did run. */
static void graphs_match_eager(const char *dir) {
    collected g = {0}, e = {0};
    size_t before = fake_graph_launches(), made = fake_graph_instances();
    run_engine_opts(dir, TE_DEVICE_CUDA, true, &g);
    size_t launched = fake_graph_launches() - before;
    made = fake_graph_instances() - made;
    run_engine_opts(dir, TE_DEVICE_CUDA, false, &e);
    cr_assert_eq(fake_graph_launches() - before, launched, "graphs launched with --no-cuda-graphs");
    cr_assert(launched >= 10, "%zu graph launches", launched);
    /* batch buckets 1, 2, 4, 8 and context classes of 16, 32, 64 positions: several graphs */
    cr_assert(made >= 4, "%zu graphs captured", made);
    cr_assert_eq(g.n, e.n);
    float worst = 0;
    for (size_t i = 0; i < g.n; i++) {
        cr_assert(g.r[i].tag == e.r[i].tag && g.r[i].sample == e.r[i].sample && g.r[i].n_ids == e.r[i].n_ids);
        cr_assert_arr_eq(g.r[i].ids, e.r[i].ids, (size_t)g.r[i].n_ids * sizeof(int32_t));
        for (int64_t t = 0; t < g.r[i].n_ids; t++) {
            float d = fabsf(g.r[i].logprobs[t] - e.r[i].logprobs[t]);
            if (!(d <= worst)) worst = d;
        }
    }
    /* not bit for bit: a graph's GEMMs run over the bucket's rows (padding included), and the
     * CPU twin's sgemm blocks its sums by the row count (as cuBLASLt picks algorithms by shape):
     * a last-bit change of an f32 sum that moves a bf16 rounding, ~2^-8 relative, a few of them */
    cr_log_info("%s: %zu decode steps ran as %zu graphs; max |Δ logprob| vs eager %.4f", dir, launched, made, worst);
    cr_assert(worst <= 0.05f, "max |Δ logprob| %g", worst);
    te_results_free(g.r, g.n);
    te_results_free(e.r, e.n);
}

Test(dense_cuda_fake, qwen2_decode_graphs_give_the_eager_tokens) { graphs_match_eager(qwen_dir); }
Test(dense_cuda_fake, llama_decode_graphs_give_the_eager_tokens) { graphs_match_eager(llama_dir); }
Test(dense_cuda_fake, qwen3_decode_graphs_give_the_eager_tokens) { graphs_match_eager(qwen3_dir); }

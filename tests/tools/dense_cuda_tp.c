/* tests/tools/dense_cuda_tp.c — the GPU teacher engine's tensor parallel (teacher/dense_cuda.c
 * over the ranks of an MPI job) on the CPU: dense_cuda.c and engine.c compiled against the CPU
 * stand-ins of tests/unit/fake_cuda.h (kernels = their CPU twins on bf16 values, device memory =
 * counted host memory, NCCL = the MPI communicator, one stand-in GPU per rank), run under
 * mpirun by tests/ref/test_dense_cuda_tp.py and compared on every rank with the CPU engine
 * (teacher/dense.h, itself tested against transformers) run on that rank alone.
 *
 *   dense_cuda_tp make qwen|llama|llama4 DIR SEED   write a tiny random checkpoint (one process)
 *   dense_cuda_tp run DIR [--no-cuda-graphs]        the comparison (under mpirun -np N, or alone)
 *
 * Models (as tests/unit/test_dense_cuda_fake.c's, same generator): qwen — hidden 128, 2 query
 * heads and 1 kv head of 64 (the kv head replicated on 2 ranks), q/k/v biases, tied embeddings,
 * bf16; llama — hidden 256, 2 heads of 128 and 1 kv head, untied head, f32 weights converted on
 * the way; llama4 — llama with 4 query heads and 2 kv heads (split on 2 ranks, replicated on 4).
 * intermediate 256 / 384, vocabulary 96 / 80 (split 48+48, 40+40; on 4 ranks 24+24+24+8).
 *
 * `run` does, on every rank: (1) dc_forward of the rank's part against dn_forward in passes of
 * at most 16 tokens (a fresh prefill of prompts of 5, 40 and 17 tokens, then 5 decode steps):
 * the largest |Δ logit|; (2) the engine (te_model_load_opts, device cuda over the job's ranks)
 * against the CPU engine on one request pattern — 4 requests arriving at steps 0, 2, 3, 6, one
 * of 3 samples sharing its prompt's blocks (each sample's first token copies the shared last
 * block on the device), prompts chunked by 16, more sequences than max_batch 5 —, greedy (the
 * sampled comparison, whose draws near a CDF boundary may flip under bf16, is the one-rank unit
 * test's), top-2 logprobs: tokens equal, the largest |Δ logprob|, the CPU's smallest top-2
 * margin (a greedy decision nearer a tie than the logit error may flip without a bug); (3) the stand-in allocator's peak device
 * bytes held against the rank's plan (after load: at most the plan and at least the plan less
 * the cuBLASLt workspace, which the stand-in does not allocate; after the run: nothing more).
 * DC_TP_GPU_MIB=N gives every rank a stand-in GPU of N MiB instead of 64, DC_TP_RANK1_GPU_MIB=N
 * rank 1 alone (the ranks' plans
 * must agree on the smallest cache, or all stop when one rank's weights do not fit).
 * Decode steps run as CUDA graphs (the stand-ins record and replay them, NCCL calls included)
 * unless --no-cuda-graphs. Each rank prints one JSON line {"rank", "ranks", "dlogit", "dlogprob",
 * "margin", "tokens", "equal", "peak", "plan", "weights", "graph_launches", "kv_positions"}; exit 0, or 1 with the message of what failed (a load
 * error too, one line per rank). The pytest holds the numbers against its tolerances. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
#define te_model_resident_bytes fake_te_model_resident_bytes
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
#define FAKE_CHECK(cond)                                                                                      \
    do {                                                                                                      \
        if (!(cond)) {                                                                                        \
            fprintf(stderr, "dense_cuda_tp: %s:%d: %s does not hold\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                                          \
        }                                                                                                     \
    } while (0)
#include "tests/unit/fake_cuda_impl.h"

#include <errno.h>
#include <sys/stat.h>

#include "core/safetensors.h"
#include "kernels/matmul.h"

/* ---- tiny checkpoints (the generator of tests/unit/test_dense_cuda_fake.c) ----------------- */

typedef struct {
    const char *arch, *model_type;
    int64_t D, F, L, V, Hq, Hkv, hd;
    bool bias, tied;
    rt_dtype dt;
    float head_gain;
    bool qk_norm;      /* qwen3: self_attn.q_norm / k_norm [hd] */
} shape;

static const shape QWEN = {"Qwen2ForCausalLM", "qwen2", 128, 256, 2, 96, 2, 1, 64, true, true, RT_DT_BF16, 4, false};
static const shape LLAMA = {"LlamaForCausalLM", "llama", 256, 384, 2, 80, 2, 1, 128, false, false, RT_DT_F32, 4, false};
/* Qwen3: q/k norms, head_dim 64 decoupled from hidden 128 / 4 heads (q is 256 wide), tied, bf16 */
static const shape QWEN3 = {"Qwen3ForCausalLM", "qwen3", 128, 256, 2, 96, 4, 2, 64, false, true, RT_DT_BF16, 4, true};
static const shape LLAMA4 = {"LlamaForCausalLM", "llama", 256, 384, 2, 80, 4, 2, 128, false, false, RT_DT_F32, 4, false};

static uint64_t rs;
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

static int make_model(const char *dir, const shape *s, uint64_t seed) {
    rs = seed;
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
    int rc = st_write(path, ts.t, ts.n, NULL);
    for (size_t i = 0; i < ts.n; i++) free((void *)ts.t[i].name), free(ts.mem[i]);
    return rc;
}

/* ---- the comparisons ------------------------------------------------------------------- */

static bool no_graphs;   /* run --no-cuda-graphs */
static uint64_t seed_base = 41;   /* --sampled: request r has seed seed_base + r (DC_TP_SEED_BASE) */
static bool sampled;     /* run --sampled: every request drawn at temperature 0.8, top-p 0.9, top-k 40, min-p 0.05 */

static int fail(const char *what) {
    fprintf(stderr, "dense_cuda_tp: %s: %s\n", what, rt_errmsg());
    return 1;
}

/* (1) dc_forward of this rank's part against dn_forward: the largest |Δ logit|. */
static int forward_vs_dense(const char *dir, rt_comm *comm, float *worst) {
    dn_model *cm;
    dc_model *gm;
    if (dn_load(dir, NULL, &cm)) return fail("dn_load");
    dc_load_opts lo = {.gpu = comm_local_rank(comm), .max_tokens = 16, .max_seqs = 16, .comm = comm,
                       .no_cuda_graphs = no_graphs};
    if (dc_load(dir, &lo, &gm)) {
        dn_free(cm);
        return fail("dc_load");
    }
    int64_t bs = 16, nb;
    kv_pool *cp = NULL, *gp = NULL;
    int rc = dc_cache_init(gm, bs, &nb);
    if (!rc) rc = kv_pool_create(64, bs, dn_block_floats(cm, bs), &cp);
    if (!rc) rc = kv_pool_create(nb < 64 ? nb : 64, bs, 0, &gp);
    int64_t V = dn_config(cm)->vocab_size;
    kv_seq cs[3] = {{0}}, gs[3] = {{0}};
    kv_seq *cpt[3] = {&cs[0], &cs[1], &cs[2]}, *gpt[3] = {&gs[0], &gs[1], &gs[2]};
    int32_t n_new[3] = {5, 40, 17}, tok[62];
    for (int i = 0; i < 62; i++) tok[i] = (int32_t)(3 + (i * 13 + 5) % (V - 3));
    float *lc = malloc((size_t)(3 * V) * sizeof(float)), *lg = malloc((size_t)(3 * V) * sizeof(float));
    *worst = 0;
    for (int step = 0; step < 6 && !rc; step++) {
        for (int64_t i = 0; i < 3 * V; i++) lg[i] = NAN;
        if ((rc = dn_forward(cm, cp, cpt, n_new, 3, tok, lc, false)) || (rc = dc_forward(gm, gp, gpt, n_new, 3, tok, lg)))
            break;
        for (int64_t i = 0; i < 3 * V; i++) {
            float d = fabsf(lc[i] - lg[i]);
            if (!(d <= *worst)) *worst = d;   /* NaN too */
        }
        for (int s = 0; s < 3; s++) {
            if (cs[s].len != gs[s].len) rc = rt_fail(RT_EINTERNAL, "sequence %d: length %lld vs %lld", s,
                                                     (long long)cs[s].len, (long long)gs[s].len);
            int32_t best = 0;
            for (int64_t j = 1; j < V; j++)
                if (lc[s * V + j] > lc[s * V + best]) best = (int32_t)j;
            tok[s] = best, n_new[s] = 1;
        }
    }
    if (rc) fail("forward");
    for (int s = 0; s < 3; s++) {
        if (cp) kv_seq_release(cp, &cs[s]);
        if (gp) kv_seq_release(gp, &gs[s]);
    }
    kv_pool_free(cp), kv_pool_free(gp);
    free(lc), free(lg);
    dc_free(gm);
    dn_free(cm);
    return rc ? 1 : 0;
}

typedef struct {
    te_result *r;
    size_t n, cap;
    float min_margin;
} collected;

static int by_tag(const void *a, const void *b) {
    const te_result *x = a, *y = b;
    if (x->tag != y->tag) return x->tag < y->tag ? -1 : 1;
    return x->sample - y->sample;
}

/* (2) one engine over the request pattern; for cuda, the peak against the plan too */
static int64_t kv_positions;   /* the CUDA engine's cache, after the ranks agreed */

static int run_engine(const char *dir, te_device dev, rt_comm *comm, collected *out, size_t *peak, size_t *plan,
                      size_t *weights) {
    te_load_opts lo = {.device = dev, .gpu = -1, .gpu_memory_fraction = 0.9,
                       .comm = dev == TE_DEVICE_CUDA ? comm : NULL, .no_cuda_graphs = no_graphs};
    te_model *m;
    if (dev == TE_DEVICE_CUDA) fake_peak = fake_in_use;
    if (te_model_load_opts(dir, &lo, &m)) return fail(dev == TE_DEVICE_CUDA ? "cuda load" : "cpu load");
    int rc = 0;
    if (dev == TE_DEVICE_CUDA) {   /* everything planned is allocated at load, nothing more */
        const dc_plan *p = dc_get_plan(m->gpu);
        *plan = p->total, *weights = p->weights, kv_positions = p->kv_positions;
        if (fake_peak > p->total || fake_peak + DC_GEMM_WS < p->total)
            rc = rt_fail(RT_EINTERNAL, "after load: peak %zu device bytes, plan %zu", fake_peak, p->total);
    }
    te_opts o = {.max_batch = 5, .cache_tokens = dev == TE_DEVICE_CUDA ? 0 : 4096, .block_size = 16,
                 .prefill_chunk = 16};
    te_engine *e = NULL;
    if (!rc) rc = te_engine_create(m, &o, &e);
    int64_t V = te_model_config(m)->vocab_size;
    int32_t prompt[4][40];
    int64_t plen[4] = {5, 37, 1, 20}, maxt[4] = {12, 10, 15, 9};
    int nsmp[4] = {1, 3, 1, 2};
    for (int r = 0; r < 4; r++)
        for (int64_t i = 0; i < plen[r]; i++) prompt[r][i] = (int32_t)(2 + (r * 31 + i * 7 + i * i) % (V - 2));
    int submitted = 0, step = 0;
    out->min_margin = INFINITY;
    while (!rc && (submitted < 4 || te_busy(e))) {
        if (submitted < 4 && (step == 0 || step == 2 || step == 3 || step == 6)) {
            te_request q = {.prompt = prompt[submitted], .n_prompt = plen[submitted], .n_samples = nsmp[submitted],
                            .max_tokens = maxt[submitted], .sampling = SMP_GREEDY, .seed = sampled ? seed_base + (uint64_t)submitted : 5, .ignore_config_eos = true, .logprobs = true, .top_logprobs = 2,
                            .tag = (uint64_t)submitted};
            if (sampled) q.sampling = (smp_params){.temperature = 0.8f, .top_k = 40, .top_p = 0.9f, .min_p = 0.05f};
            if ((rc = te_submit(e, &q))) break;
            submitted++;
        }
        te_result *r;
        size_t n;
        if ((rc = te_step(e, &r, &n))) break;
        for (size_t i = 0; i < n; i++) {
            if (out->n == out->cap) out->r = realloc(out->r, (out->cap = out->cap ? 2 * out->cap : 16) * sizeof *out->r);
            out->r[out->n++] = r[i];
        }
        free(r);
        if (++step >= 200) rc = rt_fail(RT_EINTERNAL, "the engine ran 200 steps");
    }
    for (size_t i = 0; i < out->n; i++)
        for (int64_t t = 0; t < out->r[i].n_ids; t++) {
            float g = out->r[i].top_logprobs[2 * t] - out->r[i].top_logprobs[2 * t + 1];
            if (g < out->min_margin) out->min_margin = g;
        }
    qsort(out->r, out->n, sizeof *out->r, by_tag);
    if (!rc && dev == TE_DEVICE_CUDA) {
        *peak = fake_peak;
        if (fake_peak > *plan) rc = rt_fail(RT_EINTERNAL, "after the run: peak %zu device bytes, plan %zu", fake_peak, *plan);
    }
    if (rc) fail(dev == TE_DEVICE_CUDA ? "cuda engine" : "cpu engine");
    te_engine_free(e);
    te_model_free(m);
    return rc ? 1 : 0;
}

static int run(const char *dir) {
    rt_comm *comm;
    if (comm_open(COMM_AUTO, &comm)) return fail("comm_open");
    fake_devices = comm_local_size(comm);    /* one stand-in GPU per rank of the node */
    const char *all = getenv("DC_TP_GPU_MIB");
    fake_total_bytes = (size_t)(all ? strtoull(all, NULL, 10) : 64) << 20;   /* the plan gives the cache what is left */
    const char *small = getenv("DC_TP_RANK1_GPU_MIB");   /* rank 1's GPU smaller: the ranks must agree */
    if (small && comm_rank(comm) == 1) fake_total_bytes = (size_t)strtoull(small, NULL, 10) << 20;
    float dlogit = 0, dlogprob = 0;
    collected cpu = {0}, gpu = {0};
    size_t peak = 0, plan = 0, weights = 0;
    int64_t tokens = 0;
    bool equal = true;
    int rc = forward_vs_dense(dir, comm, &dlogit);
    if (!rc) rc = run_engine(dir, TE_DEVICE_CPU, comm, &cpu, &peak, &plan, &weights);
    if (!rc) rc = run_engine(dir, TE_DEVICE_CUDA, comm, &gpu, &peak, &plan, &weights);
    if (!rc && cpu.n != gpu.n) equal = false;
    for (size_t i = 0; !rc && equal && i < cpu.n; i++) {
        const te_result *a = &cpu.r[i], *b = &gpu.r[i];
        if (a->tag != b->tag || a->sample != b->sample || a->n_ids != b->n_ids) {
            equal = false;
            break;
        }
        for (int64_t t = 0; t < a->n_ids; t++) {
            if (a->ids[t] != b->ids[t]) {
                fprintf(stderr, "dense_cuda_tp: rank %d: request %llu sample %d token %lld: cpu %d, cuda %d\n",
                        comm_rank(comm), (unsigned long long)a->tag, a->sample, (long long)t, a->ids[t], b->ids[t]);
                equal = false;
                break;
            }
            float d = fabsf(a->logprobs[t] - b->logprobs[t]);
            if (!(d <= dlogprob)) dlogprob = d;
        }
        tokens += a->n_ids;
    }
    if (!rc)
        printf("{\"rank\": %d, \"ranks\": %d, \"dlogit\": %.5f, \"dlogprob\": %.5f, \"margin\": %.4f, \"tokens\": %lld, "
               "\"results\": %zu, \"equal\": %s, \"peak\": %zu, \"plan\": %zu, \"weights\": %zu, "
               "\"graph_launches\": %zu, \"kv_positions\": %lld}\n",
               comm_rank(comm), comm_size(comm), dlogit, dlogprob, cpu.min_margin, (long long)tokens, gpu.n,
               equal ? "true" : "false", peak, plan, weights, fake_graph_launches(), (long long)kv_positions);
    fflush(stdout);
    te_results_free(cpu.r, cpu.n);
    te_results_free(gpu.r, gpu.n);
    fake_real_comm_close(comm);   /* comm_close is NCCL's stand-in here */
    return rc;
}

int main(int argc, char **argv) {
    mm_blas_single_thread();
    if (argc == 5 && !strcmp(argv[1], "make")) {
        const shape *s = !strcmp(argv[2], "qwen") ? &QWEN : !strcmp(argv[2], "llama") ? &LLAMA
                       : !strcmp(argv[2], "llama4") ? &LLAMA4 : !strcmp(argv[2], "qwen3") ? &QWEN3 : NULL;
        if (!s) {
            fprintf(stderr, "dense_cuda_tp: unknown model %s (qwen, llama, llama4, qwen3)\n", argv[2]);
            return 2;
        }
        return make_model(argv[3], s, strtoull(argv[4], NULL, 0)) ? fail("make") : 0;
    }
    if (argc >= 3 && !strcmp(argv[1], "run")) {
        bool ok = true;
        for (int i = 3; i < argc; i++) {
            if (!strcmp(argv[i], "--no-cuda-graphs")) no_graphs = true;
            else if (!strcmp(argv[i], "--sampled")) sampled = true;
            else ok = false;
        }
        if (getenv("DC_TP_SEED_BASE")) seed_base = strtoull(getenv("DC_TP_SEED_BASE"), NULL, 0);
        if (ok) return run(argv[2]);
    }
    fprintf(stderr, "usage: dense_cuda_tp make qwen|llama|llama4|qwen3 DIR SEED | dense_cuda_tp run DIR [--no-cuda-graphs] "
                    "[--sampled]\n");
    return 2;
}

/* tests/tools/ds_cuda_tp.c — the DeepSeek-V3 GPU engine over the ranks of an MPI job
 * (teacher/ds_cuda.c: tensor-parallel MLA heads, dense MLP and vocabulary, expert-parallel MoE
 * with all-to-all dispatch and combine) on the CPU: ds_cuda.c and engine.c compiled against the
 * CPU stand-ins of tests/unit/fake_cuda.h (kernels = their CPU twins, device memory = counted host
 * memory, NCCL = the MPI communicator, one stand-in GPU per rank), run under mpirun by
 * tests/ref/test_ds_cuda_tp.py and compared on every rank with the CPU engine (teacher/deepseek.c,
 * itself tested against transformers) run on that rank alone.
 *
 *   ds_cuda_tp make DIR SEED    write a tiny random FP8 DeepSeek-V3 checkpoint (one process)
 *   ds_cuda_tp run DIR          the comparison (under mpirun -np N, or alone)
 *   ds_cuda_tp spec DIR         MTP draft-and-verify (sd_greedy_cuda over the ranks) against the
 *                               CPU's sd_greedy (under mpirun -np N, or alone)
 *   ds_cuda_tp plan DIR GIB     dsc_load alone on a stand-in GPU of GIB GiB (a config.json
 *                               without weights: the per-rank plan's refusal, no allocation)
 *   ds_cuda_tp fault DIR SPEC WARM [--no-cuda-graphs]   a CUDA / NCCL error mid-run: the engine
 *                               over the job's ranks steps two requests in lockstep; after WARM
 *                               steps the stand-ins' fault SPEC (KIND:N[@RANK], fake_fault_set) is
 *                               armed; a rank whose step fails prints "ds_cuda_tp: rank R of P:
 *                               MESSAGE" and calls comm_abort, as `retort generate` does with a
 *                               failed lockstep (cli/cmd_generate.c); a rank that finishes prints
 *                               {"rank", "steps", "fired"}
 *
 * Model (the generator of tests/unit/test_ds_cuda_fake.c, wider to split over 4 ranks): hidden
 * 256, 64 heads (nope 32, rope 64, v 32: 16 heads a rank on 4 ranks, the MLA kernel's multiple),
 * q_lora 128, kv_lora 512 (R1's latent), 2 layers: one dense (intermediate 512: 128 rows a rank on
 * 4) and one MoE (8 routed experts of 128 — 4 a rank on 2, 2 on 4 —, top 2 of 2 groups with 1
 * kept, one shared expert, sigmoid router with a correction bias of std 0.1, or BIAS_STD: 20
 * decides the routing for every token), YaRN factor 4 over 256
 * original positions, untied head, vocabulary 256; projections FP8 e4m3 with 128×128 block scales,
 * embeddings/head/router bf16, norms bf16, the correction bias f32. After the main layers, an MTP
 * layer (model.layers.2.*, num_nextn_predict_layers 1: a MoE decoder layer as layer 1, eh_proj
 * FP8, its own embedding and shared head), written after every main tensor so the main weights
 * are those of a checkpoint without it; `run` does not load it.
 *
 * `run` does, on every rank: (1) dsc_forward of the rank's part against ds_forward_paged in
 * passes of at most 16 tokens and 16 sequences (a prefill of prompts of 5, 40 and 17 tokens, then
 * 5 decode steps), with bf16 activations (fake_fp8_exact: the FP8 GEMM stand-ins take the exact
 * values the quantizer was given — the orchestration check, the unit test's 0.25 bound) and with
 * e4m3 activations (what the GPU computes: rms |Δ| against the logits' rms); (2) the engine
 * (te_model_load_opts, device cuda over the job's ranks, bf16 activations) against the CPU engine
 * on one request pattern — 4 requests arriving at steps 0, 2, 3, 6, one of 2 samples sharing its
 * prompt's blocks, prompts chunked by 16, more sequences than max_batch 3 —, greedy, top-2
 * logprobs: tokens equal, the largest |Δ logprob|, the CPU's smallest top-2 margin; (3) the
 * stand-in allocator's peak device bytes held against the rank's plan. Each rank prints one JSON
 * line {"rank", "ranks", "dlogit", "rms_ratio", "dlogprob", "margin", "tokens", "results",
 * "equal", "peak", "plan", "weights", "a2a_bytes", "kv_positions"}; exit 0, or 1 with the message
 * of what failed (a load error too: one line per rank). DSC_TP_RANK1_GPU_MIB=N gives rank 1 a
 * stand-in GPU of N MiB (a rank that cannot load stops every rank). The pytest holds the numbers
 * against its tolerances. */
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
#define dsc_load fake_dsc_load
#define dsc_free fake_dsc_free
#define dsc_config fake_dsc_config
#define dsc_get_plan fake_dsc_get_plan
#define dsc_cache_init fake_dsc_cache_init
#define dsc_forward fake_dsc_forward
#define dsc_logits_row fake_dsc_logits_row
#define dsc_sample fake_dsc_sample
#define sd_greedy_cuda fake_sd_greedy_cuda

#include "teacher/ds_cuda.c"
#include "teacher/ds_cuda_mtp.c"
#include "teacher/cuda_batch.c"
#undef CUDA_TRY
#include "teacher/engine.c"   /* its dense GPU engine is the library's (teacher/dense_cuda.c) */

#include "kernels/act.h"
#include "kernels/attention.h"
#include "kernels/loss.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/optim.h"
#include "kernels/rope.h"
#define FAKE_CHECK(cond)                                                                                      \
    do {                                                                                                      \
        if (!(cond)) {                                                                                        \
            fprintf(stderr, "ds_cuda_tp: %s:%d: %s does not hold\n", __FILE__, __LINE__, #cond);             \
            abort();                                                                                          \
        }                                                                                                     \
    } while (0)
#include "tests/unit/fake_cuda_impl.h"
#include "tests/tools/tp_fault.h"

#include <errno.h>
#include <sys/stat.h>

#include "core/safetensors.h"
#include "teacher/deepseek.h"

/* ---- a tiny FP8 DeepSeek-V3 ------------------------------------------------------------ */

enum { D = 256, H = 64, DN = 32, DR = 64, DV = 32, QL = 128, KVL = 512, NL = 2, FI = 512, MI = 128, NE = 8, VOC = 256 };

static uint64_t rs;
static float randn(void) {
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    float a = ((float)(rs >> 40) + 0.5f) / 16777216.0f;
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    float b = ((float)(rs >> 40) + 0.5f) / 16777216.0f;
    return sqrtf(-2.f * logf(a)) * cosf(6.2831853f * b);
}

typedef struct {
    st_wtensor t[512];
    void *mem[512];
    size_t n;
} tensors;

static void push(tensors *ts, const char *name, rt_dtype dt, int64_t r, int64_t c, void *data) {
    size_t i = ts->n++;
    ts->mem[i] = data;
    ts->t[i] = (st_wtensor){.name = strdup(name), .dtype = dt, .ndim = c > 0 ? 2 : 1, .shape = {r, c}, .data = data};
}

/* bf16 (or f32) [r, c] (c 0: a vector) of N(mean, std) */
static void add_plain(tensors *ts, const char *name, int64_t r, int64_t c, float std, float mean, rt_dtype dt) {
    size_t n = (size_t)(r * (c > 0 ? c : 1));
    float *f = malloc(n * sizeof(float));
    for (size_t j = 0; j < n; j++) f[j] = mean + std * randn();
    if (dt == RT_DT_F32) {
        push(ts, name, dt, r, c, f);
        return;
    }
    uint16_t *b = malloc(n * 2);
    cvt_f32_to_bf16(f, b, n);
    free(f);
    push(ts, name, RT_DT_BF16, r, c, b);
}

/* FP8 e4m3 [r, c] of N(0, std), quantized per 128×128 block (scale = amax / 448), + its scales */
static void add_fp8(tensors *ts, const char *name, int64_t r, int64_t c, float std) {
    float *f = malloc((size_t)(r * c) * sizeof(float));
    for (int64_t j = 0; j < r * c; j++) f[j] = std * randn();
    int64_t sr = (r + 127) / 128, sc = (c + 127) / 128;
    uint8_t *q = malloc((size_t)(r * c));
    float *s = malloc((size_t)(sr * sc) * sizeof(float));
    for (int64_t bi = 0; bi < sr; bi++)
        for (int64_t bj = 0; bj < sc; bj++) {
            float amax = 0;
            for (int64_t i = bi * 128; i < r && i < bi * 128 + 128; i++)
                for (int64_t j = bj * 128; j < c && j < bj * 128 + 128; j++) amax = fmaxf(amax, fabsf(f[i * c + j]));
            float scale = amax > 0 ? amax / 448.0f : 1.0f;
            s[bi * sc + bj] = scale;
            for (int64_t i = bi * 128; i < r && i < bi * 128 + 128; i++)
                for (int64_t j = bj * 128; j < c && j < bj * 128 + 128; j++) q[i * c + j] = fp8_from_f32(f[i * c + j] / scale);
        }
    free(f);
    push(ts, name, RT_DT_F8_E4M3, r, c, q);
    char sn[200];
    snprintf(sn, sizeof sn, "%s_scale_inv", name);
    push(ts, sn, RT_DT_F32, sr, sc, s);
}

static int make_model(const char *dir, uint64_t seed, float bias) {
    rs = seed;
    char name[200], path[600];
    if (mkdir(dir, 0755) && errno != EEXIST) return rt_fail(RT_EIO, "mkdir %s", dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return rt_fail(RT_EIO, "writing %s", path);
    fprintf(f, "{\"architectures\": [\"DeepseekV3ForCausalLM\"], \"model_type\": \"deepseek_v3\", \"vocab_size\": %d, "
               "\"hidden_size\": %d, \"intermediate_size\": %d, \"moe_intermediate_size\": %d, "
               "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, "
               "\"q_lora_rank\": %d, \"kv_lora_rank\": %d, \"qk_nope_head_dim\": %d, \"qk_rope_head_dim\": %d, "
               "\"v_head_dim\": %d, \"n_routed_experts\": %d, \"n_shared_experts\": 1, \"num_experts_per_tok\": 2, "
               "\"n_group\": 2, \"topk_group\": 1, \"first_k_dense_replace\": 1, \"moe_layer_freq\": 1, "
               "\"norm_topk_prob\": true, \"routed_scaling_factor\": 2.5, \"scoring_func\": \"sigmoid\", "
               "\"topk_method\": \"noaux_tc\", \"max_position_embeddings\": 1024, \"rms_norm_eps\": 1e-6, "
               "\"rope_theta\": 10000, \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4, \"beta_fast\": 32, "
               "\"beta_slow\": 1, \"mscale\": 1.0, \"mscale_all_dim\": 1.0, \"original_max_position_embeddings\": 256}, "
               "\"tie_word_embeddings\": false, \"num_nextn_predict_layers\": 1, \"bos_token_id\": 0, "
               "\"eos_token_id\": 1, \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", "
               "\"quant_method\": \"fp8\", \"weight_block_size\": [128, 128]}}\n",
            VOC, D, FI, MI, NL, H, H, QL, KVL, DN, DR, DV, NE);
    fclose(f);
    tensors ts = {0};
    add_plain(&ts, "model.embed_tokens.weight", VOC, D, 1.0f, 0, RT_DT_BF16);
    add_plain(&ts, "model.norm.weight", D, 0, 0.1f, 1, RT_DT_BF16);
    add_plain(&ts, "lm_head.weight", VOC, D, 4.0f / sqrtf((float)D), 0, RT_DT_BF16);
    for (int l = 0; l <= NL; l++) {   /* NL: the MTP layer */
#define NM(suffix) (snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix), name)
        if (l == NL) {
            add_plain(&ts, NM("embed_tokens.weight"), VOC, D, 1.0f, 0, RT_DT_BF16);
            add_plain(&ts, NM("enorm.weight"), D, 0, 0.1f, 1, RT_DT_BF16);
            add_plain(&ts, NM("hnorm.weight"), D, 0, 0.1f, 1, RT_DT_BF16);
            add_fp8(&ts, NM("eh_proj.weight"), D, 2 * D, 1.0f / sqrtf((float)(2 * D)));
            add_plain(&ts, NM("shared_head.norm.weight"), D, 0, 0.1f, 1, RT_DT_BF16);
            add_plain(&ts, NM("shared_head.head.weight"), VOC, D, 4.0f / sqrtf((float)D), 0, RT_DT_BF16);
        }
        add_plain(&ts, NM("input_layernorm.weight"), D, 0, 0.1f, 1, RT_DT_BF16);
        add_plain(&ts, NM("post_attention_layernorm.weight"), D, 0, 0.1f, 1, RT_DT_BF16);
        add_fp8(&ts, NM("self_attn.q_a_proj.weight"), QL, D, 1.0f / sqrtf((float)D));
        add_plain(&ts, NM("self_attn.q_a_layernorm.weight"), QL, 0, 0.1f, 1, RT_DT_BF16);
        add_fp8(&ts, NM("self_attn.q_b_proj.weight"), H * (DN + DR), QL, 1.0f / sqrtf((float)QL));
        add_fp8(&ts, NM("self_attn.kv_a_proj_with_mqa.weight"), KVL + DR, D, 1.0f / sqrtf((float)D));
        add_plain(&ts, NM("self_attn.kv_a_layernorm.weight"), KVL, 0, 0.1f, 1, RT_DT_BF16);
        add_fp8(&ts, NM("self_attn.kv_b_proj.weight"), H * (DN + DV), KVL, 1.0f / sqrtf((float)KVL));
        add_fp8(&ts, NM("self_attn.o_proj.weight"), D, H * DV, 1.0f / sqrtf((float)(H * DV)));
        if (l == 0) {
            add_fp8(&ts, NM("mlp.gate_proj.weight"), FI, D, 1.0f / sqrtf((float)D));
            add_fp8(&ts, NM("mlp.up_proj.weight"), FI, D, 1.0f / sqrtf((float)D));
            add_fp8(&ts, NM("mlp.down_proj.weight"), D, FI, 1.0f / sqrtf((float)FI));
            continue;
        }
        add_plain(&ts, NM("mlp.gate.weight"), NE, D, 0.1f, 0, RT_DT_BF16);
        add_plain(&ts, NM("mlp.gate.e_score_correction_bias"), NE, 0, bias, 0, RT_DT_F32);
        char pre[40];
        for (int e = 0; e <= NE; e++) {   /* NE: the shared expert */
            if (e < NE) snprintf(pre, sizeof pre, "mlp.experts.%d", e);
            else snprintf(pre, sizeof pre, "mlp.shared_experts");
            char sub[100];
            snprintf(sub, sizeof sub, "%s.gate_proj.weight", pre);
            add_fp8(&ts, NM(sub), MI, D, 1.0f / sqrtf((float)D));
            snprintf(sub, sizeof sub, "%s.up_proj.weight", pre);
            add_fp8(&ts, NM(sub), MI, D, 1.0f / sqrtf((float)D));
            snprintf(sub, sizeof sub, "%s.down_proj.weight", pre);
            add_fp8(&ts, NM(sub), D, MI, 1.0f / sqrtf((float)MI));
        }
#undef NM
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = st_write(path, ts.t, ts.n, NULL);
    for (size_t i = 0; i < ts.n; i++) free((void *)ts.t[i].name), free(ts.mem[i]);
    return rc;
}

/* ---- the comparisons ------------------------------------------------------------------- */

static int fail(const char *what) {
    fprintf(stderr, "ds_cuda_tp: %s: %s\n", what, rt_errmsg());
    return 1;
}

/* (1) dsc_forward of this rank's part against ds_forward_paged: the largest |Δ logit|, the rms
 * of the differences and of the logits. */
static int forward_vs_cpu(const char *dir, rt_comm *comm, bool exact, float *max_d, float *rms_d, float *rms_l) {
    fake_fp8_exact = exact;
    ds_model *cm;
    dsc_model *gm;
    if (ds_load(dir, NULL, &cm)) return fail("ds_load");
    dsc_load_opts lo = {.gpu = comm_local_rank(comm), .max_tokens = 16, .max_seqs = 16, .comm = comm};
    if (dsc_load(dir, &lo, &gm)) {
        ds_free(cm);
        return fail("dsc_load");
    }
    int64_t bs = 16, nb, V = ds_vocab(cm);
    kv_pool *cp = NULL, *gp = NULL;
    int rc = dsc_cache_init(gm, bs, &nb);
    if (!rc) rc = kv_pool_create(64, bs, ds_block_floats(cm, bs), &cp);
    if (!rc) rc = kv_pool_create(nb < 64 ? nb : 64, bs, 0, &gp);
    kv_seq cs[3] = {{0}}, gs[3] = {{0}};
    kv_seq *cpt[3] = {&cs[0], &cs[1], &cs[2]}, *gpt[3] = {&gs[0], &gs[1], &gs[2]};
    int32_t n_new[3] = {5, 40, 17}, tok[62];
    for (int i = 0; i < 62; i++) tok[i] = (int32_t)(3 + (i * 13 + 5) % (V - 3));
    float *lc = malloc((size_t)(3 * V) * sizeof(float)), *lg = malloc((size_t)(3 * V) * sizeof(float));
    double ss = 0, sd = 0;
    int64_t cnt = 0;
    *max_d = 0;
    for (int step = 0; step < 6 && !rc; step++) {
        for (int64_t i = 0; i < 3 * V; i++) lg[i] = NAN;
        if ((rc = ds_forward_paged(cm, cp, cpt, n_new, 3, tok, DS_ATTN_AUTO, lc, false)) ||
            (rc = dsc_forward(gm, gp, gpt, n_new, 3, tok, lg)))
            break;
        for (int64_t i = 0; i < 3 * V; i++) {
            float d = fabsf(lc[i] - lg[i]);
            if (!(d <= *max_d)) *max_d = d;   /* NaN too */
            ss += (double)lc[i] * lc[i], sd += (double)d * d, cnt++;
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
    *rms_d = cnt ? (float)sqrt(sd / (double)cnt) : 0, *rms_l = cnt ? (float)sqrt(ss / (double)cnt) : 0;
    for (int s = 0; s < 3; s++) {
        if (cp) kv_seq_release(cp, &cs[s]);
        if (gp) kv_seq_release(gp, &gs[s]);
    }
    kv_pool_free(cp), kv_pool_free(gp);
    free(lc), free(lg);
    dsc_free(gm);
    ds_free(cm);
    fake_exact_clear();
    fake_fp8_exact = false;
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

static int run_engine(const char *dir, te_device dev, bool graphs, rt_comm *comm, collected *out, size_t *peak,
                      size_t *plan, size_t *weights) {
    te_load_opts lo = {.device = dev, .gpu = -1, .gpu_memory_fraction = 0.9, .comm = dev == TE_DEVICE_CUDA ? comm : NULL,
                       .no_cuda_graphs = !graphs};
    te_model *m;
    size_t before = fake_in_use;
    fake_peak = fake_in_use;
    if (te_model_load_opts(dir, &lo, &m)) return fail(dev == TE_DEVICE_CUDA ? "cuda load" : "cpu load");
    int rc = 0;
    if (dev == TE_DEVICE_CUDA) {   /* everything planned is allocated at load, nothing more */
        const dsc_plan *p = dsc_get_plan(m->dsg);
        *plan = p->total, *weights = p->weights, kv_positions = p->kv_positions;
        size_t held = fake_peak - before;
        if (held > p->total || (double)held < 0.95 * (double)p->total)
            rc = rt_fail(RT_EINTERNAL, "after load: peak %zu device bytes, plan %zu", held, p->total);
    }
    te_opts o = {.max_batch = 3, .cache_tokens = dev == TE_DEVICE_CUDA ? 0 : 4096, .block_size = 16,
                 .prefill_chunk = 16};
    te_engine *e = NULL;
    if (!rc) rc = te_engine_create(m, &o, &e);
    int32_t prompt[4][40];
    int64_t plen[4] = {5, 37, 1, 20}, maxt[4] = {8, 6, 10, 6};
    int nsmp[4] = {1, 2, 1, 1};
    for (int r = 0; r < 4; r++)
        for (int64_t i = 0; i < plen[r]; i++) prompt[r][i] = (int32_t)(2 + (r * 31 + i * 7 + i * i) % (VOC - 2));
    int submitted = 0, step = 0;
    out->min_margin = INFINITY;
    while (!rc && (submitted < 4 || te_busy(e))) {
        if (submitted < 4 && (step == 0 || step == 2 || step == 3 || step == 6)) {
            te_request q = {.prompt = prompt[submitted], .n_prompt = plen[submitted], .n_samples = nsmp[submitted],
                            .max_tokens = maxt[submitted], .sampling = SMP_GREEDY, .seed = 5,
                            .ignore_config_eos = true, .logprobs = true, .top_logprobs = 2, .tag = (uint64_t)submitted};
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
        *peak = fake_peak - before;
        if (*peak > *plan) rc = rt_fail(RT_EINTERNAL, "after the run: peak %zu device bytes, plan %zu", *peak, *plan);
    }
    if (rc) fail(dev == TE_DEVICE_CUDA ? "cuda engine" : "cpu engine");
    te_engine_free(e);
    te_model_free(m);
    if (!rc && fake_in_use != before) {
        rt_fail(RT_EINTERNAL, "%zu device bytes left held after the model was freed", fake_in_use - before);
        rc = fail("cuda engine");
    }
    return rc ? 1 : 0;
}

static int run(const char *dir) {
    rt_comm *comm;
    if (comm_open(COMM_AUTO, &comm)) return fail("comm_open");
    fake_devices = comm_local_size(comm);   /* one stand-in GPU per rank of the node */
    fake_total_bytes = (size_t)384 << 20;  /* a 384 MiB "GPU": the plan gives the cache what is left */
    const char *small = getenv("DSC_TP_RANK1_GPU_MIB");   /* rank 1's GPU smaller: every rank must stop */
    if (small && comm_rank(comm) == 1) fake_total_bytes = (size_t)strtoull(small, NULL, 10) << 20;
    float dlogit = 0, rms = 0, rl = 0, rms8 = 0, rl8 = 0, dlogprob = 0;
    collected cpu = {0}, gpu = {0};
    size_t peak = 0, plan = 0, weights = 0;
    int64_t tokens = 0;
    bool equal = true;
    int rc = forward_vs_cpu(dir, comm, true, &dlogit, &rms, &rl);
    float mx8;
    if (!rc) rc = forward_vs_cpu(dir, comm, false, &mx8, &rms8, &rl8);
    if (!rc) rc = run_engine(dir, TE_DEVICE_CPU, false, comm, &cpu, &peak, &plan, &weights);
    fake_fp8_exact = true;   /* bf16 activations through the engine too */
    size_t launches = fake_graph_launches(), graphs = fake_graph_instances(), eager_launches = 0;
    if (!rc) rc = run_engine(dir, TE_DEVICE_CUDA, true, comm, &gpu, &peak, &plan, &weights);
    launches = fake_graph_launches() - launches, graphs = fake_graph_instances() - graphs;
    /* (4) the same engine without graphs: bit for bit the same results (the stand-ins compute each
     * row alone, so only the orchestration — a padding row, a slab, a value baked into a graph —
     * can make them differ) */
    collected eager = {0};
    size_t peak2 = 0, plan2 = 0, weights2 = 0, before = fake_graph_launches();
    if (!rc) rc = run_engine(dir, TE_DEVICE_CUDA, false, comm, &eager, &peak2, &plan2, &weights2);
    eager_launches = fake_graph_launches() - before;
    fake_exact_clear();
    fake_fp8_exact = false;
    bool graphs_equal = !rc && eager.n == gpu.n && eager_launches == 0;
    for (size_t i = 0; graphs_equal && i < gpu.n; i++) {
        const te_result *a = &gpu.r[i], *b = &eager.r[i];
        size_t nt = (size_t)a->n_ids;
        graphs_equal = a->tag == b->tag && a->sample == b->sample && a->n_ids == b->n_ids &&
                       !memcmp(a->ids, b->ids, nt * sizeof(int32_t)) &&
                       !memcmp(a->logprobs, b->logprobs, nt * sizeof(float)) &&
                       !memcmp(a->top_ids, b->top_ids, 2 * nt * sizeof(int32_t)) &&
                       !memcmp(a->top_logprobs, b->top_logprobs, 2 * nt * sizeof(float));
        if (!graphs_equal)
            fprintf(stderr, "ds_cuda_tp: rank %d: request %llu sample %d differs with graphs from without\n",
                    comm_rank(comm), (unsigned long long)a->tag, a->sample);
    }
    if (!rc && cpu.n != gpu.n) equal = false;
    for (size_t i = 0; !rc && equal && i < cpu.n; i++) {
        const te_result *a = &cpu.r[i], *b = &gpu.r[i];
        if (a->tag != b->tag || a->sample != b->sample || a->n_ids != b->n_ids) {
            equal = false;
            break;
        }
        for (int64_t t = 0; t < a->n_ids; t++) {
            if (a->ids[t] != b->ids[t]) {
                fprintf(stderr, "ds_cuda_tp: rank %d: request %llu sample %d token %lld: cpu %d, cuda %d (cpu top-2 "
                        "margin there %.4f)\n", comm_rank(comm), (unsigned long long)a->tag, a->sample, (long long)t,
                        a->ids[t], b->ids[t], a->top_logprobs[2 * t] - a->top_logprobs[2 * t + 1]);
                equal = false;
                break;
            }
            float d = fabsf(a->logprobs[t] - b->logprobs[t]);
            if (!(d <= dlogprob)) dlogprob = d;
        }
        tokens += a->n_ids;
    }
    if (!rc)
        printf("{\"rank\": %d, \"ranks\": %d, \"dlogit\": %.5f, \"rms_ratio\": %.5f, \"dlogprob\": %.5f, "
               "\"margin\": %.4f, \"tokens\": %lld, \"results\": %zu, \"equal\": %s, \"peak\": %zu, \"plan\": %zu, "
               "\"weights\": %zu, \"a2a_bytes\": %zu, \"kv_positions\": %lld, \"graph_launches\": %zu, \"graphs\": %zu, "
               "\"graphs_equal\": %s}\n",
               comm_rank(comm), comm_size(comm), dlogit, rl8 > 0 ? rms8 / rl8 : 0.0f, dlogprob, cpu.min_margin,
               (long long)tokens, gpu.n, equal ? "true" : "false", peak, plan, weights, fake_a2a_bytes(),
               (long long)kv_positions, launches, graphs, graphs_equal ? "true" : "false");
    fflush(stdout);
    te_results_free(cpu.r, cpu.n);
    te_results_free(gpu.r, gpu.n);
    te_results_free(eager.r, eager.n);
    fake_real_comm_close(comm);   /* comm_close is NCCL's stand-in here */
    return rc;
}

/* (4) MTP draft-and-verify over the ranks: sd_greedy_cuda (bf16 activations) against the CPU's
 * sd_greedy on this rank alone, a 20-token prompt, 24 new tokens, with the MTP layer's drafts, a
 * draft always right and one wrong every third position (both from the CPU's tokens): tokens,
 * drafts and accept counts equal. One JSON line {"rank", "ranks", "equal", "drafts_equal",
 * "steps", "accepted", "peak", "plan", "kv_position_bytes"}, the counts per draft kind. */
typedef struct {
    const int32_t *want;
    int64_t n_prompt;
    int every;
    int32_t seen[64];
    int n_seen;
} spec_oracle;

static int spec_oracle_fn(void *p, int64_t pos, int32_t *d) {
    spec_oracle *o = p;
    if (o->n_seen < 64) o->seen[o->n_seen++] = *d;
    if (o->every == 0) return 0;
    int64_t i = pos - o->n_prompt;
    *d = o->want[i];
    if (o->every > 1 && i % o->every == 0) *d = (*d + 1) % VOC;
    return 0;
}

static int spec(const char *dir) {
    rt_comm *comm;
    if (comm_open(COMM_AUTO, &comm)) return fail("comm_open");
    fake_devices = comm_local_size(comm);
    fake_total_bytes = (size_t)384 << 20;
    enum { NP = 20, NN = 24 };
    int32_t prompt[NP], want[NN], out[2][NN];
    for (int i = 0; i < NP; i++) prompt[i] = (int32_t)(3 + (i * 37 + 5) % (VOC - 3));
    fake_fp8_exact = true;
    ds_model *cm = NULL;
    dsc_model *gm = NULL;
    ds_load_opts co = {.load_mtp = true};
    dsc_load_opts lo = {.gpu = comm_local_rank(comm), .max_tokens = 16, .max_seqs = 16, .comm = comm, .load_mtp = true};
    size_t before = fake_in_use;
    fake_peak = fake_in_use;
    int rc = ds_load(dir, &co, &cm) ? fail("ds_load") : 0;
    if (!rc && dsc_load(dir, &lo, &gm)) rc = fail("dsc_load");
    size_t peak_load = fake_peak - before;
    bool equal = true, drafts_equal = true;
    int64_t steps[3] = {0}, acc[3] = {0};
    sd_stats st[2];
    int64_t n[2];
    for (int k = 0; k < 3 && !rc; k++) {
        int every = k == 0 ? 0 : k == 1 ? 1 : 3;
        spec_oracle oc[2] = {{.want = want, .n_prompt = NP, .every = every}, {.want = want, .n_prompt = NP, .every = every}};
        if (sd_greedy(cm, prompt, NP, NN, NULL, 0, spec_oracle_fn, &oc[0], out[0], &n[0], &st[0])) rc = fail("sd_greedy");
        if (!rc && sd_greedy_cuda(gm, prompt, NP, NN, NULL, 0, spec_oracle_fn, &oc[1], out[1], &n[1], &st[1]))
            rc = fail("sd_greedy_cuda");
        if (rc) break;
        if (k == 0) memcpy(want, out[0], sizeof want);   /* greedy decoding's tokens (sd_greedy's contract) */
        equal = equal && n[0] == NN && n[1] == NN && !memcmp(out[0], want, sizeof want) && !memcmp(out[1], want, sizeof want);
        drafts_equal = drafts_equal && oc[0].n_seen == oc[1].n_seen && !memcmp(oc[0].seen, oc[1].seen, sizeof oc[0].seen) &&
                       st[0].accepted == st[1].accepted && st[0].steps == st[1].steps;
        steps[k] = st[1].steps, acc[k] = st[1].accepted;
    }
    if (!rc) {
        const dsc_plan *p = dsc_get_plan(gm);
        printf("{\"rank\": %d, \"ranks\": %d, \"equal\": %s, \"drafts_equal\": %s, \"steps\": [%lld, %lld, %lld], "
               "\"accepted\": [%lld, %lld, %lld], \"peak\": %zu, \"plan\": %zu, \"kv_position_bytes\": %zu}\n",
               comm_rank(comm), comm_size(comm), equal ? "true" : "false", drafts_equal ? "true" : "false",
               (long long)steps[0], (long long)steps[1], (long long)steps[2], (long long)acc[0], (long long)acc[1],
               (long long)acc[2], fake_peak - before > peak_load ? fake_peak - before : peak_load, p->total,
               p->kv_position_bytes);
    }
    fflush(stdout);
    dsc_free(gm);
    ds_free(cm);
    fake_exact_clear();
    fake_fp8_exact = false;
    fake_real_comm_close(comm);
    return rc ? 1 : 0;
}

/* dsc_load alone on a stand-in GPU of gib GiB (a config.json without weights: the plan's refusal) */
static int plan_only(const char *dir, double gib) {
    rt_comm *comm;
    if (comm_open(COMM_AUTO, &comm)) return fail("comm_open");
    fake_devices = comm_local_size(comm);
    fake_total_bytes = (size_t)(gib * (double)(1 << 30));
    size_t before = fake_mallocs;
    dsc_load_opts lo = {.gpu = comm_local_rank(comm), .comm = comm};
    dsc_model *gm;
    int rc = dsc_load(dir, &lo, &gm);
    if (rc) fail("dsc_load");
    else dsc_free(gm);
    if (rc && fake_mallocs != before) fprintf(stderr, "ds_cuda_tp: %zu device allocations before the error\n",
                                              fake_mallocs - before);
    fake_real_comm_close(comm);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    mm_blas_single_thread();
    if ((argc == 4 || argc == 5) && !strcmp(argv[1], "make"))
        return make_model(argv[2], strtoull(argv[3], NULL, 0), argc == 5 ? strtof(argv[4], NULL) : 0.1f) ? fail("make") : 0;
    if (argc == 3 && !strcmp(argv[1], "run")) return run(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "spec")) return spec(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "plan")) return plan_only(argv[2], strtod(argv[3], NULL));
    if ((argc == 5 || (argc == 6 && !strcmp(argv[5], "--no-cuda-graphs"))) && !strcmp(argv[1], "fault"))
        return tp_fault_run("ds_cuda_tp", argv[2], (size_t)384 << 20, argc != 5, argv[3], atoi(argv[4]), VOC, 12);
    fprintf(stderr, "usage: ds_cuda_tp make DIR SEED [BIAS_STD] | ds_cuda_tp run DIR | ds_cuda_tp spec DIR | ds_cuda_tp plan DIR GPU_GIB"
                    " | ds_cuda_tp fault DIR KIND:N[@RANK] WARM [--no-cuda-graphs]\n");
    return 2;
}

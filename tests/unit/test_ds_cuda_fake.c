/* The DeepSeek-V3 GPU engine (teacher/ds_cuda.c behind teacher/engine.c, --device cuda) run on the
 * CPU: the CUDA runtime and every kernel entry point it calls are stood in for by the kernels'
 * CPU twins (tests/unit/fake_cuda_impl.h, "DeepSeek-V3 on the GPU": FP8 activation quantization
 * and block-scaled GEMMs, the router, norms, YaRN rope, the MoE permutation/gather/combine and the
 * absorbed MLA core on the paged latent cache; device memory is host memory, NaN-poisoned and
 * counted; vector-loaded pointers checked for 16-byte alignment). What this checks without a GPU is
 * the engine's orchestration — the FP8 weights streamed to their places (gate|up stacked, the
 * routed experts laid end to end for the grouped GEMM, kv_b widened), the memory plan against what
 * is allocated, the latent cache addressed through the host pool's block tables (shared prompt
 * blocks copied on write in every layer), passes split by the pass limits, the MoE routing and
 * the shared experts, the dense first layer, YaRN — against the CPU engine (teacher/deepseek.c,
 * itself tested against transformers). It cannot check the CUDA kernels (tests/gpu, tests/emu).
 *
 * Model: a tiny FP8 DeepSeek-V3 written here — hidden 256, 16 heads (nope 32, rope 64, v 32),
 * q_lora 128, kv_lora 512 (the MLA kernel's build), 3 layers: one dense (intermediate 256) and two
 * MoE (8 routed experts of 128, top 2 of 2 groups with 1 kept, one shared expert, sigmoid router
 * with a correction bias), YaRN factor 4 over 256 original positions, untied head, vocabulary 256;
 * every projection FP8 e4m3 with 128×128 block scales, embeddings/head/router bf16, norms bf16,
 * the correction bias f32.
 *
 * Tolerances. The GPU path keeps activations in bf16 and quantizes every FP8 projection's input to
 * e4m3 per token and per 128 channels (DeepSeek's act_quant: 3 mantissa bits), where the CPU
 * engine multiplies f32 activations by the exactly dequantized weights. Two comparisons:
 * - bf16 activations (fake_fp8_exact: the FP8 GEMM stand-ins take the exact values the quantizer
 *   was given, so only the bf16 roundings differ — the orchestration check): |Δ logit| ≤ 0.25 over
 *   a forward in passes, |Δ logprob| ≤ 0.15 and identical greedy tokens through the engine.
 *   Measured: max |Δ logit| 0.13–0.19 (rms 0.04 for logits of rms 4) at all 12 seeds tried, with
 *   the routing pinned (DSC_BIAS=20: a correction bias that decides the experts) at the 5 where
 *   it flips; max |Δ logprob| 0.05 through the engine (decode steps as graphs).
 * - e4m3 activations (what the GPU computes): rms |Δ logit| ≤ 10% of the logits' rms (measured
 *   7.5% at the test's seed, 7–8% at seeds without routing flips).
 * A routing decision whose score margin lies within the activation error flips to another expert
 * without any bug, and moves logits by several units in this random model (5 of 12 seeds show one
 * in bf16; none with the routing pinned); a greedy decision whose top-2 margin is below the logit
 * error flips likewise, and so does a sampled token whose uniform lands within the logprob error
 * of a CDF boundary (4 of 11 request seeds tried; the host sampler on the GPU engine's logits
 * drew the same as dsc_sample at all of them). The weights' seed (6) is one without a routing
 * flip where every greedy CPU decision has a margin ≥ 0.15 (measured 0.204), which the engine
 * test asserts; the sampled request's seed (2) is one without a sampling flip. */
#include <criterion/criterion.h>

#include "tests/unit/fake_cuda.h"

/* the engine and the GPU forwards under names of their own (the library has the real ones) */
#include "tests/unit/engine_fake.h"
#define dsc_load fake_dsc_load
#define dsc_free fake_dsc_free
#define dsc_config fake_dsc_config
#define dsc_get_plan fake_dsc_get_plan
#define dsc_cache_init fake_dsc_cache_init
#define dsc_forward fake_dsc_forward
#define sd_greedy_cuda fake_sd_greedy_cuda

#include "teacher/ds_cuda.c"
#include "teacher/ds_cuda_mtp.c"
#include "teacher/cuda_batch.c"
#undef CUDA_TRY
#include "teacher/engine.c"   /* its dense GPU engine is the library's (teacher/dense_cuda.c) */

/* what the shared stand-ins implement for the other GPU code */
#include "kernels/act.h"
#include "kernels/attention.h"
#include "kernels/loss.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/optim.h"
#include "kernels/rope.h"
#define FAKE_CHECK(cond) cr_assert(cond)
#include "tests/unit/fake_cuda_impl.h"

#include "tests/unit/engine_fake.h"

#include <unistd.h>

#include "teacher/deepseek.h"

/* ---- a tiny FP8 DeepSeek-V3 ------------------------------------------------------------ */

enum { D = 256, H = 16, DN = 32, DR = 64, DV = 32, QL = 128, KVL = 512, NL = 3, FI = 256, MI = 128, NE = 8, VOC = 256 };

/* bf16 (or f32) [r, c] (c 0: a vector) of N(mean, std) */
static void add_plain(ef_tensors *ts, const char *name, int64_t r, int64_t c, float std, float mean, rt_dtype dt) {
    cr_assert_eq(ef_add(ts, name, r, c, std, mean, dt), 0, "%s", rt_errmsg());
}

/* FP8 e4m3 [r, c] of N(0, std), quantized per 128×128 block (scale = amax / 448), + its scales */
static void add_fp8(ef_tensors *ts, const char *name, int64_t r, int64_t c, float std) {
    float *f = malloc((size_t)(r * c) * sizeof(float));
    for (int64_t j = 0; j < r * c; j++) f[j] = std * ef_randn();
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
    cr_assert_eq(ef_push(ts, name, RT_DT_F8_E4M3, r, c, q), 0, "%s", rt_errmsg());
    char sn[200];
    snprintf(sn, sizeof sn, "%s_scale_inv", name);
    cr_assert_eq(ef_push(ts, sn, RT_DT_F32, sr, sc, s), 0, "%s", rt_errmsg());
}

static bool with_mtp;   /* write an MTP layer (model.layers.3.*: num_nextn_predict_layers 1) */
static void write_config(const char *dir, int64_t kv_rank) {
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fprintf(f, "{\"architectures\": [\"DeepseekV3ForCausalLM\"], \"model_type\": \"deepseek_v3\", \"vocab_size\": %d, "
               "\"hidden_size\": %d, \"intermediate_size\": %d, \"moe_intermediate_size\": %d, "
               "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, "
               "\"q_lora_rank\": %d, \"kv_lora_rank\": %lld, \"qk_nope_head_dim\": %d, \"qk_rope_head_dim\": %d, "
               "\"v_head_dim\": %d, \"n_routed_experts\": %d, \"n_shared_experts\": 1, \"num_experts_per_tok\": 2, "
               "\"n_group\": 2, \"topk_group\": 1, \"first_k_dense_replace\": 1, \"moe_layer_freq\": 1, "
               "\"norm_topk_prob\": true, \"routed_scaling_factor\": 2.5, \"scoring_func\": \"sigmoid\", "
               "\"topk_method\": \"noaux_tc\", \"max_position_embeddings\": 1024, \"rms_norm_eps\": 1e-6, "
               "\"rope_theta\": 10000, \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 4, \"beta_fast\": 32, "
               "\"beta_slow\": 1, \"mscale\": 1.0, \"mscale_all_dim\": 1.0, \"original_max_position_embeddings\": 256}, "
               "\"tie_word_embeddings\": false, \"num_nextn_predict_layers\": %d, \"bos_token_id\": 0, "
               "\"eos_token_id\": 1, \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", "
               "\"quant_method\": \"fp8\", \"weight_block_size\": [128, 128]}}\n",
            VOC, D, FI, MI, NL, H, H, QL, (long long)kv_rank, DN, DR, DV, NE, with_mtp ? 1 : 0);
    fclose(f);
}

static bool bf16_o_proj;   /* write layer 1's o_proj in bf16 (a projection the GPU engine refuses) */
static void make_model(const char *dir, uint64_t seed) {
    ef_rs = seed;
    char name[200];
    cr_assert(mkdir(dir, 0755) == 0 || errno == EEXIST);
    write_config(dir, KVL);
    ef_tensors ts = {0};
    add_plain(&ts, "model.embed_tokens.weight", VOC, D, 1.0f, 0, RT_DT_BF16);
    add_plain(&ts, "model.norm.weight", D, 0, 0.1f, 1, RT_DT_BF16);
    add_plain(&ts, "lm_head.weight", VOC, D, 4.0f / sqrtf((float)D), 0, RT_DT_BF16);
    for (int l = 0; l < NL + with_mtp; l++) {
#define NM(suffix) (snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix), name)
        if (l == NL) {   /* the MTP layer's own tensors, then a MoE decoder layer like the others */
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
        if (bf16_o_proj && l == 1)
            add_plain(&ts, NM("self_attn.o_proj.weight"), D, H * DV, 1.0f / sqrtf((float)(H * DV)), 0, RT_DT_BF16);
        else
            add_fp8(&ts, NM("self_attn.o_proj.weight"), D, H * DV, 1.0f / sqrtf((float)(H * DV)));
        if (l == 0) {
            add_fp8(&ts, NM("mlp.gate_proj.weight"), FI, D, 1.0f / sqrtf((float)D));
            add_fp8(&ts, NM("mlp.up_proj.weight"), FI, D, 1.0f / sqrtf((float)D));
            add_fp8(&ts, NM("mlp.down_proj.weight"), D, FI, 1.0f / sqrtf((float)FI));
            continue;
        }
        add_plain(&ts, NM("mlp.gate.weight"), NE, D, 0.1f, 0, RT_DT_BF16);
        add_plain(&ts, NM("mlp.gate.e_score_correction_bias"), NE, 0, getenv("DSC_BIAS") ? (float)atof(getenv("DSC_BIAS")) : 0.1f, 0, RT_DT_F32);
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
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(st_write(path, ts.t, ts.n, NULL), 0, "%s", rt_errmsg());
    ef_tensors_free(&ts);
}

static char tmpdir[64], ds_dir[512];
#define FAKE_GPU ((size_t)128 << 20)   /* a 128 MiB "GPU" */

static void setup(void) {
    mm_blas_single_thread();
    fake_total_bytes = FAKE_GPU;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dsc-fake-XXXXXX");
    cr_assert(mkdtemp(tmpdir));
    snprintf(ds_dir, sizeof ds_dir, "%s/ds", tmpdir);
    const char *sd = getenv("DSC_SEED");
    make_model(ds_dir, sd ? strtoull(sd, NULL, 0) : 6);   /* DSC_SEED: to try others */
    const char *other = getenv("DSC_MODEL");   /* another checkpoint instead (e.g. scripts/device_models.py's tiny-ds) */
    if (other) snprintf(ds_dir, sizeof ds_dir, "%s", other);
}

static void teardown(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(ds_cuda_fake, .init = setup, .fini = teardown);

/* ---- dsc_forward against ds_forward_paged ---------------------------------------------- */

/* Passes of at most 16 tokens and 16 sequences: a prefill of three prompts (5, 40, 17 tokens:
 * the 40 in three pieces, continued through the cache), then decode steps of all three; logits
 * compared at every step. */
static int cpu_fwd(void *m, kv_pool *c, kv_seq *const *s, const int32_t *n_new, int64_t n, const int32_t *t, float *l) {
    return ds_forward_paged(m, c, s, n_new, n, t, DS_ATTN_AUTO, l, false);
}
static int gpu_fwd(void *m, kv_pool *c, kv_seq *const *s, const int32_t *n_new, int64_t n, const int32_t *t, float *l) {
    return dsc_forward(m, c, s, n_new, n, t, l);
}

static void forward_vs_cpu(bool exact, float *max_d, float *rms_d, float *rms_logit) {
    fake_fp8_exact = exact;
    ds_model *cm;
    cr_assert_eq(ds_load(ds_dir, NULL, &cm), 0, "%s", rt_errmsg());
    dsc_load_opts lo = {.max_tokens = 16, .max_seqs = 16};
    dsc_model *gm;
    cr_assert_eq(dsc_load(ds_dir, &lo, &gm), 0, "%s", rt_errmsg());
    int64_t nb;
    cr_assert_eq(dsc_cache_init(gm, 16, &nb), 0, "%s", rt_errmsg());
    ef_forward_stats st;
    cr_assert_eq(ef_forward_steps(cpu_fwd, cm, ds_block_floats(cm, 16), gpu_fwd, gm, nb, ds_vocab(cm), &st), 0, "%s",
                 rt_errmsg());
    *max_d = st.max_d, *rms_d = (float)sqrt(st.sum_sq_d / (double)st.count);
    *rms_logit = (float)sqrt(st.sum_sq_logit / (double)st.count);
    cr_log_info("dsc_forward vs ds_forward_paged (%s): max |Δ logit| %.4f, rms Δ %.4f, rms logit %.3f",
                exact ? "bf16 activations" : "e4m3 activations", *max_d, *rms_d, *rms_logit);
    dsc_free(gm);
    ds_free(cm);
    fake_exact_clear();
    fake_fp8_exact = false;
}

Test(ds_cuda_fake, forward_in_passes_matches_the_cpu_engine_with_bf16_activations) {
    float mx, rms, rl;
    forward_vs_cpu(true, &mx, &rms, &rl);
    cr_assert(mx <= 0.25f, "max |Δ logit| %g", mx);
}

Test(ds_cuda_fake, forward_with_e4m3_activations_stays_near_the_cpu_engine) {
    float mx, rms, rl;
    forward_vs_cpu(false, &mx, &rms, &rl);
    cr_assert(rms <= 0.1f * rl, "rms |Δ logit| %g, rms logit %g", rms, rl);
}

/* ---- the engine on both devices ------------------------------------------------------- */

/* Requests of different lengths arriving at different steps, one with 2 samples sharing a prompt
 * longer than a block (16; its last, partial block copied on write by each sample), prompts
 * chunked by prefill_chunk 16, more sequences than max_batch. Greedy but for request 1's two
 * samples (temperature 0.8, top-k 20, top-p 0.9, min-p 0.05, seed 5: drawn on the device by
 * dsc_sample for --device cuda, by the host sampler for cpu, from the same uniforms); logprobs
 * and top-2 logprobs (a row fetched from the device for those). */
#define SAMPLED ((smp_params){.temperature = 0.8f, .top_k = 20, .top_p = 0.9f, .min_p = 0.05f})
static void run_engine_opts(te_device dev, bool graphs, int max_batch, ef_collected *out) {
    te_load_opts lo = {.device = dev, .gpu_memory_fraction = 0.9, .no_cuda_graphs = !graphs};
    te_model *m;
    size_t before = fake_in_use;
    fake_peak = fake_in_use;
    cr_assert_eq(te_model_load_opts(ds_dir, &lo, &m), 0, "%s", rt_errmsg());
    if (dev == TE_DEVICE_CUDA) {   /* everything planned is allocated at load, nothing more */
        const dsc_plan *p = dsc_get_plan(m->dsg);
        size_t held = fake_peak - before;
        cr_log_info("plan: weights %zu, activations %zu, workspace %zu, cache %zu (%lld positions) = %zu bytes; "
                    "stand-in peak %zu", p->weights, p->activations, p->workspace, p->kv, (long long)p->kv_positions,
                    p->total, held);
        cr_assert(held <= p->total && (double)held >= 0.95 * (double)p->total, "peak %zu, plan %zu", held, p->total);
        cr_assert_eq(te_model_resident_bytes(m), p->weights);
    }
    te_opts o = {.max_batch = max_batch, .cache_tokens = dev == TE_DEVICE_CUDA ? 0 : 4096, .block_size = 16,
                 .prefill_chunk = 16};
    te_engine *e;
    cr_assert_eq(te_engine_create(m, &o, &e), 0, "%s", rt_errmsg());
    const char *rsd = getenv("DSC_RSEED");   /* the sampled request's seed (DSC_RSEED: to try others) */
    ef_pattern pat = {.max_tokens = {8, 6, 10, 6}, .n_samples = {1, 2, 1, 1}, .sampled = SAMPLED,
                      .seed = rsd ? strtoull(rsd, NULL, 0) : 2};
    cr_assert_eq(ef_drive(e, VOC, &pat, out), 0, "%s", rt_errmsg());
    te_stats st;
    te_stats_get(e, &st);
    cr_assert_eq(st.blocks_in_use, 0);
    if (dev == TE_DEVICE_CUDA) {   /* the forwards allocated nothing on the device */
        const dsc_plan *p = dsc_get_plan(m->dsg);
        cr_assert(fake_peak - before <= p->total, "peak %zu, plan %zu", fake_peak - before, p->total);
    }
    te_engine_free(e);
    te_model_free(m);
    cr_assert_eq(fake_in_use, before, "device bytes left held after the model was freed");
}
static void run_engine(te_device dev, ef_collected *out) { run_engine_opts(dev, true, 3, out); }

Test(ds_cuda_fake, engine_gives_the_cpu_engines_greedy_tokens) {
    ef_collected cpu = {0}, gpu = {0};
    run_engine(TE_DEVICE_CPU, &cpu);
    fake_fp8_exact = true;   /* bf16 activations: see the tolerances above */
    run_engine(TE_DEVICE_CUDA, &gpu);
    fake_exact_clear();
    fake_fp8_exact = false;
    cr_assert_eq(cpu.n, 5);   /* 1 + 2 + 1 + 1 samples */
    cr_assert(cpu.min_margin >= 0.15f, "precondition: the CPU's smallest top-2 margin is %.3f (a near-tie)",
              cpu.min_margin);
    float worst;
    int64_t tokens;
    cr_assert_eq(ef_compare(&cpu, &gpu, 0, &worst, &tokens), 0, "cpu vs gpu: %s (smallest CPU margin %.3f)", rt_errmsg(),
                 cpu.min_margin);
    cr_log_info("%lld tokens identical; max |Δ logprob| %.4f; smallest CPU top-2 margin %.3f", (long long)tokens, worst,
                cpu.min_margin);
    cr_assert(worst <= 0.15f, "max |Δ logprob| %g", worst);
    te_results_free(cpu.r, cpu.n);
    te_results_free(gpu.r, gpu.n);
}

/* ---- decode steps as CUDA graphs --------------------------------------------------------- */

/* The engine's run with graphs (the stand-ins record a capture and replay it at launch, reading
 * the buffers as they are then, with the capture's scalars) against the same run without: five
 * samples of 8, 6, 6, 10 and 6 tokens arriving at steps 0, 2, 3, 6 with max_batch 5, so decode
 * batches grow and shrink across buckets 1, 2, 4, 8 and contexts cross classes of 16, 32 and 64
 * positions. Tokens, logprobs and top-2 logprobs are bit for bit those of the eager run: the
 * stand-ins compute each row alone (a padding row changes no other row), so a difference can only
 * come from the orchestration — a padding row writing a real sequence's cache block, or a value
 * of one step (its tokens, positions, slots, contexts, tables) baked into a graph and replayed at
 * another. Both give the CPU engine's greedy tokens; graphs ran, and no more were made than
 * buckets × classes. */
Test(ds_cuda_fake, decode_graphs_give_the_eager_runs_tokens_bit_for_bit) {
    ef_collected cpu = {0}, g = {0}, e = {0};
    run_engine_opts(TE_DEVICE_CPU, false, 5, &cpu);
    fake_fp8_exact = true;   /* bf16 activations: see the tolerances above */
    size_t launches = fake_graph_launches(), made = fake_graph_instances();
    run_engine_opts(TE_DEVICE_CUDA, true, 5, &g);
    launches = fake_graph_launches() - launches, made = fake_graph_instances() - made;
    size_t before = fake_graph_launches(), before_made = fake_graph_instances();
    run_engine_opts(TE_DEVICE_CUDA, false, 5, &e);
    fake_exact_clear();
    fake_fp8_exact = false;
    cr_assert_eq(fake_graph_launches(), before, "graphs launched with --no-cuda-graphs");
    cr_assert_eq(fake_graph_instances(), before_made, "graphs captured with --no-cuda-graphs");
    /* max_seqs 256 (buckets 1 … 256: 9) and the context 1024 in blocks of 16 (classes 16 … 1024: 7) */
    cr_log_info("decode: %zu graph launches of %zu graphs", launches, made);
    cr_assert(launches >= 5, "%zu graph launches", launches);   /* 8 of this run's 12 pure decode passes */
    cr_assert(made >= 4 && made <= 9 * 7, "%zu graphs captured", made);
    cr_assert_eq(g.n, 5);
    cr_assert_eq(g.n, e.n);
    for (size_t i = 0; i < g.n; i++) {
        const te_result *a = &g.r[i], *b = &e.r[i];
        cr_assert(a->tag == b->tag && a->sample == b->sample && a->n_ids == b->n_ids && a->top_k == b->top_k);
        cr_assert_arr_eq(a->ids, b->ids, (size_t)a->n_ids * sizeof(int32_t), "request %llu sample %d",
                         (unsigned long long)a->tag, a->sample);
        cr_assert_arr_eq(a->logprobs, b->logprobs, (size_t)a->n_ids * sizeof(float), "request %llu sample %d",
                         (unsigned long long)a->tag, a->sample);
        cr_assert_arr_eq(a->top_ids, b->top_ids, (size_t)(a->n_ids * a->top_k) * sizeof(int32_t));
        cr_assert_arr_eq(a->top_logprobs, b->top_logprobs, (size_t)(a->n_ids * a->top_k) * sizeof(float));
    }
    float worst;
    int64_t tokens;
    cr_assert_eq(ef_compare(&cpu, &g, 0, &worst, &tokens), 0, "cpu vs gpu with graphs: %s", rt_errmsg());
    cr_log_info("%lld tokens identical to the CPU engine's; max |Δ logprob| %.4f", (long long)tokens, worst);
    cr_assert(worst <= 0.15f, "max |Δ logprob| %g", worst);
    te_results_free(cpu.r, cpu.n);
    te_results_free(g.r, g.n);
    te_results_free(e.r, e.n);
}

/* ---- refusals ---------------------------------------------------------------------------- */

/* A model that does not fit: one line, and not one device allocation. */
Test(ds_cuda_fake, model_that_does_not_fit_is_refused_before_any_allocation) {
    /* 1 MiB: below the model's ~6 MB of weights */
    cr_assert_eq(ef_refused(ds_dir, (size_t)1 << 20, RT_ENOMEM, "GB of weights; the GPU has"), 0, "%s", rt_errmsg());
    /* the weights fit, the workspaces and a minimal cache do not */
    cr_assert_eq(ef_refused(ds_dir, (size_t)40 << 20, RT_ENOMEM, "cached positions"), 0, "%s", rt_errmsg());
    cr_log_info("%s", rt_errmsg());
}

/* Shapes the kernels were not built for (configs/models/tiny-deepseek-v3.json: kv_lora_rank 64),
 * refused from the config alone. */
Test(ds_cuda_fake, mla_shape_outside_the_kernels_build_is_refused) {
    char dir[160], cmd[512];
    snprintf(dir, sizeof dir, "%s/small", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp configs/models/tiny-deepseek-v3.json %s/config.json", dir, dir);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(ef_refused(dir, 0, RT_EUNSUPPORTED, "kv_lora_rank 64"), 0, "%s", rt_errmsg());
}

/* The full DeepSeek-R1 (config.json alone) on one 80 GiB GPU: refused with the weights it needs. */
Test(ds_cuda_fake, r1_on_one_80_gb_gpu_is_refused_with_its_weight_bytes) {
    char dir[160], cmd[512];
    snprintf(dir, sizeof dir, "%s/r1", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp configs/models/deepseek-r1.json %s/config.json", dir, dir);
    if (system(cmd)) cr_skip_test("configs/models/deepseek-r1.json missing");
    cr_assert_eq(ef_refused(dir, (size_t)80 << 30, RT_ENOMEM, "GB of weights; the GPU has 77.3 GB"), 0, "%s", rt_errmsg());
    cr_log_info("%s", rt_errmsg());
}

/* ---- sampling on the device ------------------------------------------------------------ */

/* dsc_sample against the host sampler on the same rows: three sequences' logits left on the
 * device, ids [0, V − 10) drawable with three holes at −inf, five parameter sets (greedy,
 * temperature, top-k, top-p, min-p) × the rows in any order, uniforms from smp_uniform(seed,
 * stream, step): the same ids and logprobs as smp_sample / smp_logprob on the row fetched by
 * dsc_logits_row and masked on the host, and the top-5 logprobs of smp_top_logprobs on it. */
Test(ds_cuda_fake, device_sampling_draws_the_host_samplers_tokens) {
    dsc_model *gm;
    cr_assert_eq(dsc_load(ds_dir, NULL, &gm), 0, "%s", rt_errmsg());
    int64_t bs = 16, nb, V = dsc_config(gm)->vocab_size;
    cr_assert_eq(dsc_cache_init(gm, bs, &nb), 0, "%s", rt_errmsg());
    kv_pool *gp;
    cr_assert_eq(kv_pool_create(nb < 64 ? nb : 64, bs, 0, &gp), 0);
    kv_seq gs[3] = {{0}};
    kv_seq *gpt[3] = {&gs[0], &gs[1], &gs[2]};
    int32_t n_new[3] = {4, 9, 2}, tok[15];
    for (int i = 0; i < 15; i++) tok[i] = (int32_t)(3 + (i * 29 + 11) % (V - 3));
    cr_assert_eq(dsc_forward(gm, gp, gpt, n_new, 3, tok, NULL), 0, "%s", rt_errmsg());
    int64_t n_valid = V - 10;
    int32_t holes[3] = {3, 7, 100};
    smp_params ps[5] = {SMP_GREEDY, {.temperature = 1.0f, .top_p = 1.0f}, {.temperature = 0.7f, .top_k = 5, .top_p = 1.0f},
                        {.temperature = 1.2f, .top_p = 0.8f}, {.temperature = 0.9f, .top_p = 1.0f, .min_p = 0.1f}};
    enum { N = 12 };
    int32_t rows[N], got[N];
    smp_params par[N];
    uint64_t rng[3 * N];
    float lp[N], tlp[N * 5], *row = malloc((size_t)V * sizeof(float));
    int32_t tid[N * 5];
    void *ws = malloc(smp_workspace_bytes(V));
    for (int i = 0; i < N; i++) {
        rows[i] = (int32_t)((i * 2 + 1) % 3);
        par[i] = ps[i % 5];
        rng[3 * i] = 42 + (uint64_t)i, rng[3 * i + 1] = (uint64_t)(i % 3), rng[3 * i + 2] = (uint64_t)(7 * i);
    }
    cr_assert_eq(dsc_sample(gm, N, rows, n_valid, holes, 3, par, rng, got, lp, 5, tid, tlp), 0, "%s", rt_errmsg());
    int distinct = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(dsc_logits_row(gm, rows[i], row), 0, "%s", rt_errmsg());
        for (int h = 0; h < 3; h++) row[holes[h]] = -INFINITY;
        int32_t want;
        cr_assert_eq(smp_sample(row, n_valid, &par[i], smp_uniform(rng[3 * i], rng[3 * i + 1], rng[3 * i + 2]), ws, &want), 0);
        cr_assert_eq(got[i], want, "draw %d: device %d, host %d", i, got[i], want);
        cr_assert(got[i] >= 0 && got[i] < n_valid && got[i] != 3 && got[i] != 7 && got[i] != 100);
        cr_assert_float_eq(lp[i], smp_logprob(row, n_valid, want), 1e-6f);
        int32_t wid[5];
        float wlp[5];
        smp_top_logprobs(row, n_valid, 5, wid, wlp);
        for (int j = 0; j < 5; j++) {
            cr_assert_eq(tid[i * 5 + j], wid[j], "draw %d top-%d: device %d, host %d", i, j, tid[i * 5 + j], wid[j]);
            cr_assert_float_eq(tlp[i * 5 + j], wlp[j], 1e-6f);
        }
        distinct += i > 0 && got[i] != got[i - 1];
    }
    cr_assert(distinct > 3, "the draws are not varied enough to tell rows apart");
    /* rows past the last forward's are refused */
    int32_t bad = 3;
    cr_assert_eq(dsc_sample(gm, 1, &bad, n_valid, NULL, 0, par, rng, got, lp, 0, NULL, NULL), RT_EINVAL);
    cr_assert_eq(dsc_sample(gm, 1, rows, n_valid, NULL, 0, par, rng, got, lp, SMP_TOP_MAX + 1, tid, tlp), RT_EINVAL);
    free(row), free(ws);
    for (int s = 0; s < 3; s++) kv_seq_release(gp, &gs[s]);
    kv_pool_free(gp);
    dsc_free(gm);
}

/* A projection stored in bf16 in an FP8 checkpoint: one line naming it, after the allocations,
 * all of which are given back. */
Test(ds_cuda_fake, a_projection_not_in_fp8_is_refused_and_the_device_memory_freed) {
    char dir[160];
    snprintf(dir, sizeof dir, "%s/bf16o", tmpdir);
    bf16_o_proj = true;
    make_model(dir, 6);
    bf16_o_proj = false;
    size_t before = fake_in_use;
    te_load_opts lo = {.device = TE_DEVICE_CUDA};
    te_model *m = NULL;
    int rc = te_model_load_opts(dir, &lo, &m);
    cr_assert_eq(rc, RT_EUNSUPPORTED, "rc %d: %s", rc, rt_errmsg());
    cr_assert_null(m);
    cr_assert(strstr(rt_errmsg(), "model.layers.1.self_attn.o_proj.weight is BF16"), "%s", rt_errmsg());
    cr_assert_null(strchr(rt_errmsg(), '\n'));
    cr_assert_eq(fake_in_use, before);
}

/* ---- MTP speculative decoding on the GPU engine ----------------------------------------- */

static char mtp_dir[600];
static void make_mtp_model(void) {
    snprintf(mtp_dir, sizeof mtp_dir, "%s/mtp", tmpdir);
    with_mtp = true;
    make_model(mtp_dir, 6);
    with_mtp = false;
}

/* plain greedy decoding of n tokens on the GPU engine (dsc_forward, one token a step) */
static void gpu_plain_greedy(dsc_model *gm, const int32_t *prompt, int64_t np, int64_t n, int32_t *out) {
    int64_t nb, V = dsc_config(gm)->vocab_size;
    cr_assert_eq(dsc_cache_init(gm, 16, &nb), 0, "%s", rt_errmsg());
    kv_pool *pool;
    cr_assert_eq(kv_pool_create(nb, 16, 0, &pool), 0);
    kv_seq s = {0}, *sp = &s;
    float *lg = malloc((size_t)V * sizeof(float));
    int32_t nn = (int32_t)np;
    const int32_t *tok = prompt;
    for (int64_t i = 0; i < n; i++) {
        cr_assert_eq(dsc_forward(gm, pool, &sp, &nn, 1, tok, lg), 0, "%s", rt_errmsg());
        int32_t b = 0;
        for (int64_t v = 1; v < V; v++)
            if (lg[v] > lg[b]) b = (int32_t)v;
        out[i] = b;
        tok = &out[i], nn = 1;
    }
    free(lg);
    kv_seq_release(pool, &s);
    kv_pool_free(pool);
}

typedef struct {
    const int32_t *want;
    int64_t n_prompt;
    int every;   /* 0: the MTP layer's draft; 1: always right; > 1: wrong when (pos - n_prompt) % every == 0 */
    int32_t seen[128];
    int n_seen;
} mtp_oracle;

static int mtp_oracle_fn(void *p, int64_t pos, int32_t *d) {
    mtp_oracle *o = p;
    if (o->n_seen < 128) o->seen[o->n_seen++] = *d;   /* the MTP layer's own draft */
    if (o->every == 0) return 0;
    int64_t i = pos - o->n_prompt;
    *d = o->want[i];
    if (o->every > 1 && i % o->every == 0) *d = (*d + 1) % VOC;
    return 0;
}

/* A 20-token prompt (two passes of 16 on the GPU), 24 new tokens, greedy: through the MTP
 * layer's own drafts, a draft that is always right and one wrong every third position — on the
 * CPU (sd_greedy, f32) and the GPU engine (sd_greedy_cuda, bf16 activations as the forward test:
 * fake_fp8_exact). Both give plain greedy decoding's tokens on the GPU engine, which are the CPU
 * engine's (margins ≥ 0.15 at this seed, as the engine test); the MTP drafts are the CPU's (so
 * the accept counts are equal) at this seed, where no MTP top-2 margin lies within the bf16
 * error — asserted below, not assumed. */
Test(ds_cuda_fake, mtp_speculative_decoding_gives_plain_greedy_tokens_on_both_engines) {
    make_mtp_model();
    enum { NP = 20, NN = 24 };
    int32_t prompt[NP], plain[NN];
    for (int i = 0; i < NP; i++) prompt[i] = (int32_t)(3 + (i * 37 + 5) % (VOC - 3));
    fake_fp8_exact = true;
    ds_model *cm;
    ds_load_opts co = {.load_mtp = true};
    cr_assert_eq(ds_load(mtp_dir, &co, &cm), 0, "%s", rt_errmsg());
    cr_assert(ds_has_mtp(cm));
    dsc_load_opts lo = {.max_tokens = 16, .max_seqs = 16, .load_mtp = true};
    dsc_model *gm;
    cr_assert_eq(dsc_load(mtp_dir, &lo, &gm), 0, "%s", rt_errmsg());
    gpu_plain_greedy(gm, prompt, NP, NN, plain);
    for (int every = 0; every <= 3; every += every == 1 ? 2 : 1) {
        mtp_oracle oc[2] = {{.want = plain, .n_prompt = NP, .every = every}, {.want = plain, .n_prompt = NP, .every = every}};
        int32_t out[2][NN];
        int64_t n[2];
        sd_stats st[2];
        cr_assert_eq(sd_greedy(cm, prompt, NP, NN, NULL, 0, mtp_oracle_fn, &oc[0], out[0], &n[0], &st[0]), 0, "%s",
                     rt_errmsg());
        cr_assert_eq(sd_greedy_cuda(gm, prompt, NP, NN, NULL, 0, mtp_oracle_fn, &oc[1], out[1], &n[1], &st[1]), 0, "%s",
                     rt_errmsg());
        for (int e = 0; e < 2; e++) {
            cr_assert_eq(n[e], NN);
            for (int i = 0; i < NN; i++)
                cr_assert_eq(out[e][i], plain[i], "%s, draft %d: token %d is %d, plain greedy on the GPU gives %d",
                             e ? "GPU" : "CPU", every, i, out[e][i], plain[i]);
            cr_assert_eq(st[e].drafted, st[e].steps);
            cr_assert(1 + st[e].steps + st[e].accepted >= NN && 1 + st[e].steps + st[e].accepted <= NN + 1);
        }
        cr_assert_eq(oc[0].n_seen, oc[1].n_seen);
        for (int k = 0; k < oc[0].n_seen; k++)
            cr_assert_eq(oc[0].seen[k], oc[1].seen[k], "draft %d: the MTP layer guesses %d on the CPU, %d on the GPU", k,
                         oc[0].seen[k], oc[1].seen[k]);
        cr_assert_eq(st[0].accepted, st[1].accepted);
        if (every == 1) cr_assert_eq(st[1].accepted, st[1].steps);
        if (every == 3) cr_assert(st[1].accepted > 0 && st[1].accepted < st[1].steps);
        cr_log_info("draft %s: %lld verify steps, %lld/%lld drafts accepted on both engines",
                    every == 0 ? "MTP" : every == 1 ? "always right" : "wrong every 3rd", (long long)st[1].steps,
                    (long long)st[1].accepted, (long long)st[1].drafted);
    }
    dsc_free(gm);   /* (the stand-in GPU holds one model's cache) */
    /* without the MTP layer and without an oracle: refused */
    dsc_model *g0;
    dsc_load_opts lo0 = {.max_tokens = 16, .max_seqs = 16};
    cr_assert_eq(dsc_load(mtp_dir, &lo0, &g0), 0, "%s", rt_errmsg());
    int32_t o1[4];
    int64_t n1;
    sd_stats s1;
    cr_assert_eq(sd_greedy_cuda(g0, prompt, NP, 4, NULL, 0, NULL, NULL, o1, &n1, &s1), RT_EINVAL);
    dsc_free(g0);
    ds_free(cm);
    fake_exact_clear();
    fake_fp8_exact = false;
}

/* The MTP layer in the plan: one more latent cache layer per position, its weights (decoder
 * layer, eh_proj, embedding and head copies, norms) in `weights`, and the device peak at load
 * within the plan as for the main model; a checkpoint without it is refused when it is asked for. */
Test(ds_cuda_fake, mtp_layer_is_in_the_memory_plan) {
    make_mtp_model();
    size_t before = fake_in_use;
    dsc_load_opts plain_o = {0}, mtp_o = {.load_mtp = true};
    dsc_model *a, *b;
    cr_assert_eq(dsc_load(mtp_dir, &plain_o, &a), 0, "%s", rt_errmsg());
    dsc_plan pa = *dsc_get_plan(a);
    dsc_free(a);
    fake_peak = fake_in_use;
    cr_assert_eq(dsc_load(mtp_dir, &mtp_o, &b), 0, "%s", rt_errmsg());
    const dsc_plan *pb = dsc_get_plan(b);
    size_t held = fake_peak - before;
    cr_assert(held <= pb->total && (double)held >= 0.95 * (double)pb->total, "peak %zu, plan %zu", held, pb->total);
    cr_assert_eq(pa.kv_position_bytes, (size_t)NL * (KVL + DR) * 2);
    cr_assert_eq(pb->kv_position_bytes, (size_t)(NL + 1) * (KVL + DR) * 2);
    /* the MTP weights, counted by hand (256-byte rounded as laid out): the layer as layer 1 + its own */
#define R256(x) (((size_t)(x) + 255) / 256 * 256)
#define FP8(r, c) (R256((size_t)(r) * (c)) + R256((size_t)(((r) + 127) / 128) * (((c) + 127) / 128) * 4))
    size_t layer = 2 * R256(D * 4) + R256(KVL * 4) + FP8(QL, D) + R256(QL * 4) + FP8(H * (DN + DR), QL) +
                   FP8(KVL + DR, D) + R256((size_t)H * (DN + DV) * KVL * 2) + FP8(D, H * DV) + R256(NE * D * 2) +
                   R256(NE * 4) + FP8(NE * 2 * MI, D) + FP8(NE * D, MI) + FP8(2 * MI, D) + FP8(D, MI);
    size_t own = 2 * R256(VOC * D * 2) + 3 * R256(D * 4) + FP8(D, 2 * D);
    cr_assert_eq(pb->weights - pa.weights, layer + own, "MTP weights %zu, counted %zu", pb->weights - pa.weights,
                 layer + own);
    cr_log_info("MTP layer: %zu bytes of weights, %zu more per cached position; plan %zu, peak %zu", layer + own,
                pb->kv_position_bytes - pa.kv_position_bytes, pb->total, held);
    dsc_free(b);
    cr_assert_eq(fake_in_use, before);
    /* asked for on a checkpoint without one */
    dsc_model *c = NULL;
    cr_assert_eq(dsc_load(ds_dir, &mtp_o, &c), 0, "%s", rt_errmsg());   /* num_nextn_predict_layers 0: nothing to load */
    cr_assert_eq(dsc_get_plan(c)->kv_position_bytes, pa.kv_position_bytes);
    dsc_free(c);
}

/* ---- a CUDA error mid-run (the stand-ins' fault injection, tests/unit/fake_cuda.h) ----------- */

/* The engine with two greedy samples of one 21-token prompt, 16 tokens each; `warm` steps, then
 * the fault `spec` armed (fake_fault_set: the N-th launch or async copy from then on fails, and the
 * error stays); steps until one fails. Its status (message in rt_errmsg); the engine and model then
 * freed — every device byte given back (the stand-in's count), nothing leaked (ASan: docs/teacher.md,
 * "Faults"). *kernels: the launches of the step after `warm` when spec names none that fires. */
static int ds_run_until_fault(bool graphs, int warm, const char *spec, long long *kernels) {
    te_load_opts lo = {.device = TE_DEVICE_CUDA, .gpu_memory_fraction = 0.9, .no_cuda_graphs = !graphs};
    te_model *m;
    size_t before = fake_in_use;
    cr_assert_eq(fake_fault_set(NULL), 0);
    cr_assert_eq(te_model_load_opts(ds_dir, &lo, &m), 0, "%s", rt_errmsg());
    te_opts o = {.max_batch = 4, .block_size = 16, .prefill_chunk = 16};
    te_engine *e;
    cr_assert_eq(te_engine_create(m, &o, &e), 0, "%s", rt_errmsg());
    int32_t prompt[21];
    for (int i = 0; i < 21; i++) prompt[i] = (i * 7 + 3) % VOC;
    te_request r = {.prompt = prompt, .n_prompt = 21, .n_samples = 2, .max_tokens = 16, .ignore_config_eos = true,
                    .sampling = SMP_GREEDY, .logprobs = true, .top_logprobs = 2};
    cr_assert_eq(te_submit(e, &r), 0, "%s", rt_errmsg());
    int rc = 0;
    for (int s = 0; s < 40 && !rc && te_busy(e); s++) {
        if (s == warm) cr_assert_eq(fake_fault_set(spec), 0, "%s", spec);
        te_result *res;
        size_t k;
        rt_errclear();
        rc = te_step(e, &res, &k);
        te_results_free(res, k);
        if (s == warm && kernels) *kernels = fake_ft.seen[FAKE_F_KERNEL];
    }
    te_engine_free(e);
    te_model_free(m);
    cr_assert_eq(fake_in_use, before, "device bytes left held after a fault");
    cr_assert_eq(fake_cap_graph, NULL, "a capture left open");
    return rc;
}

static void ds_fault(bool graphs, int warm, const char *spec, const char *says, const char *says2) {
    int rc = ds_run_until_fault(graphs, warm, spec, NULL);
    cr_assert(fake_fault_fired(), "%s never fired", spec);
    cr_assert_eq(rc, RT_EINTERNAL, "%s: %d: %s", spec, rc, rt_errmsg());
    const char *msg = rt_errmsg();
    cr_assert(msg[0] && !strchr(msg, '\n'), "not one line: '%s'", msg);
    cr_assert(strstr(msg, says) && (!says2 || strstr(msg, says2)), "%s: %s", spec, msg);
    cr_assert_eq(!graphs || !strstr(says, "cudaGraphLaunch") || strstr(msg, "--no-cuda-graphs") != NULL, 1, "%s", msg);
    cr_log_info("%s%s: %s", spec, graphs ? "" : " (no graphs)", msg);
}

/* A launch in the middle of a decode step: eager (the kernel's launch check, named), replayed in a
 * graph (cudaGraphLaunch, with --no-cuda-graphs), and into the capture of the bucket's graph (the
 * capture ended, the line says which). Warm steps: the prefill (step 0), the first decode step of
 * the batch (eager, then captured: step 1), replays after. */
Test(ds_cuda_fake, kernel_failure_mid_decode_is_one_line_and_frees_everything) {
    ds_fault(false, 3, "kernel:20", "cudaGetLastError() failed after ", ": unspecified launch failure");
    ds_fault(true, 3, "kernel:20", "cudaGraphLaunch: unspecified launch failure", "--no-cuda-graphs");
    long long eager = 0, both = 0;
    ds_run_until_fault(false, 1, "kernel:100000000", &eager);
    ds_run_until_fault(true, 1, "kernel:100000000", &both);
    cr_assert_eq(both, 2 * eager, "eager %lld, eager + capture %lld", eager, both);
    char spec[32];
    snprintf(spec, sizeof spec, "kernel:%lld", eager + eager / 2);
    ds_fault(true, 1, spec, "capturing the decode graph", "--no-cuda-graphs");
}

/* An async copy failing mid-step (as a kernel's bad access surfaces at the next call): named;
 * one replayed inside a graph fails its launch. */
Test(ds_cuda_fake, copy_failure_mid_decode_is_one_line_naming_the_copy) {
    ds_fault(false, 3, "memcpy:2", "CUDA failed in cudaMemcpy", ": unspecified launch failure");
    /* with graphs the step's device-to-device copies are in the graph (memcpy:2 fails its launch):
     * the first copy, the pass's ints going up before the launch */
    ds_fault(true, 3, "memcpy:1", "CUDA failed in cudaMemcpy", ": unspecified launch failure");
    ds_fault(true, 3, "memcpy:2", "cudaGraphLaunch: unspecified launch failure", "--no-cuda-graphs");
}

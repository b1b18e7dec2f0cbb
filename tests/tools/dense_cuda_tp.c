/* tests/tools/dense_cuda_tp.c — the GPU teacher engine's tensor parallel (teacher/dense_cuda.c
 * over the ranks of an MPI job) on the CPU: dense_cuda.c and engine.c compiled against the CPU
 * stand-ins of tests/unit/fake_cuda.h (kernels = their CPU twins on bf16 values, device memory =
 * counted host memory, NCCL = the MPI communicator, one stand-in GPU per rank), run under
 * mpirun by tests/ref/test_dense_cuda_tp.py and compared on every rank with the CPU engine
 * (teacher/dense.h, itself tested against transformers) run on that rank alone.
 *
 *   dense_cuda_tp make qwen|llama|llama4|qwen3 DIR SEED   write a tiny random checkpoint (one process)
 *   dense_cuda_tp run DIR [--no-cuda-graphs]        the comparison (under mpirun -np N, or alone)
 *
 * Models (tests/unit/engine_fake.h's ef_make_dense, as tests/unit/test_dense_cuda_fake.c's): qwen — hidden 128, 2 query
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
 * error too, one line per rank). The pytest holds the numbers against its tolerances.
 *
 *   dense_cuda_tp fault DIR SPEC WARM [--no-cuda-graphs]   a CUDA / NCCL error mid-run
 * Every rank loads the engine over the job's ranks and steps it in lockstep (two requests of 2
 * samples, 24 tokens each); after WARM steps the stand-ins' fault SPEC is armed (fake_fault_set:
 * KIND:N[@RANK], tests/unit/fake_cuda.h). The rank whose step fails does what `retort generate`
 * does with a failed lockstep (cli/cmd_generate.c): one line "dense_cuda_tp: rank R of P: MESSAGE"
 * and comm_abort, which ends every rank (the others wait in a collective). A rank that finishes
 * prints {"rank", "steps", "fired"} and exits 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/fake_cuda.h"

/* the engine and the GPU forward under names of their own (the library has the real ones) */
#define ENGINE_FAKE_DENSE
#include "tests/unit/engine_fake.h"

#include "teacher/dense_cuda.c"
#include "teacher/cuda_batch.c"
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
#include "tests/tools/tp_fault.h"

#include "tests/unit/engine_fake.h"

#include "kernels/matmul.h"

/* tiny checkpoints: ef_make_dense's EF_QWEN, EF_LLAMA, EF_QWEN3, and a Llama of 4 query heads and 2 kv
 * heads (split on 2 ranks, replicated on 4) */
static const ef_shape LLAMA4 = {"LlamaForCausalLM", "llama", 256, 384, 2, 80, 4, 2, 128, false, false, RT_DT_F32, 4,
                                false};

/* ---- the comparisons ------------------------------------------------------------------- */

static bool no_graphs;   /* run --no-cuda-graphs */
static uint64_t seed_base = 41;   /* --sampled: request r has seed seed_base + r (DC_TP_SEED_BASE) */
static bool sampled;     /* run --sampled: every request drawn at temperature 0.8, top-p 0.9, top-k 40, min-p 0.05 */

static int fail(const char *what) {
    fprintf(stderr, "dense_cuda_tp: %s: %s\n", what, rt_errmsg());
    return 1;
}

/* (1) dc_forward of this rank's part against dn_forward: the largest |Δ logit|. */
static int cpu_fwd(void *m, kv_pool *c, kv_seq *const *s, const int32_t *n_new, int64_t n, const int32_t *t, float *l) {
    return dn_forward(m, c, s, n_new, n, t, l, false);
}
static int gpu_fwd(void *m, kv_pool *c, kv_seq *const *s, const int32_t *n_new, int64_t n, const int32_t *t, float *l) {
    return dc_forward(m, c, s, n_new, n, t, l);
}

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
    int64_t nb;
    ef_forward_stats st = {0};
    int rc = dc_cache_init(gm, 16, &nb);
    if (!rc) rc = ef_forward_steps(cpu_fwd, cm, dn_block_floats(cm, 16), gpu_fwd, gm, nb, dn_config(cm)->vocab_size, &st);
    *worst = st.max_d;
    if (rc) fail("forward");
    dc_free(gm);
    dn_free(cm);
    return rc ? 1 : 0;
}

/* (2) one engine over the request pattern; for cuda, the peak against the plan too */
static int64_t kv_positions;   /* the CUDA engine's cache, after the ranks agreed */

static int run_engine(const char *dir, te_device dev, rt_comm *comm, ef_collected *out, size_t *peak, size_t *plan,
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
    ef_pattern pat = {.max_tokens = {12, 10, 15, 9}, .n_samples = {1, 3, 1, 2},
                      .sampled = sampled ? (smp_params){.temperature = 0.8f, .top_k = 40, .top_p = 0.9f, .min_p = 0.05f}
                                         : SMP_GREEDY,
                      .seed = sampled ? seed_base : 5, .all_sampled = sampled};
    if (!rc) rc = ef_drive(e, te_model_config(m)->vocab_size, &pat, out);
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
    ef_collected cpu = {0}, gpu = {0};
    size_t peak = 0, plan = 0, weights = 0;
    int64_t tokens = 0;
    bool equal = true;
    int rc = forward_vs_dense(dir, comm, &dlogit);
    if (!rc) rc = run_engine(dir, TE_DEVICE_CPU, comm, &cpu, &peak, &plan, &weights);
    if (!rc) rc = run_engine(dir, TE_DEVICE_CUDA, comm, &gpu, &peak, &plan, &weights);
    if (!rc && ef_compare(&cpu, &gpu, 0, &dlogprob, &tokens)) {
        fprintf(stderr, "dense_cuda_tp: rank %d: cpu vs cuda: %s\n", comm_rank(comm), rt_errmsg());
        equal = false;
    }
    if (!rc)
        printf("{\"rank\": %d, \"ranks\": %d, \"dlogit\": %.5f, \"dlogprob\": %.5f, \"margin\": %.4f, \"tokens\": %lld, "
               "\"results\": %zu, \"equal\": %s, \"peak\": %zu, \"plan\": %zu, \"weights\": %zu, "
               "\"graph_launches\": %zu, \"kv_positions\": %lld}\n",
               comm_rank(comm), comm_size(comm), dlogit, dlogprob, cpu.min_gap, (long long)tokens, gpu.n,
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
        const ef_shape *s = !strcmp(argv[2], "qwen") ? &EF_QWEN : !strcmp(argv[2], "llama") ? &EF_LLAMA
                          : !strcmp(argv[2], "llama4") ? &LLAMA4 : !strcmp(argv[2], "qwen3") ? &EF_QWEN3 : NULL;
        if (!s) {
            fprintf(stderr, "dense_cuda_tp: unknown model %s (qwen, llama, llama4, qwen3)\n", argv[2]);
            return 2;
        }
        return ef_make_dense(argv[3], s, strtoull(argv[4], NULL, 0)) ? fail("make") : 0;
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
    if ((argc == 5 || argc == 6) && !strcmp(argv[1], "fault")) {
        no_graphs = argc == 6 && !strcmp(argv[5], "--no-cuda-graphs");
        if (argc == 5 || no_graphs)
            return tp_fault_run("dense_cuda_tp", argv[2], (size_t)64 << 20, no_graphs, argv[3], atoi(argv[4]), 80, 24);
    }
    fprintf(stderr, "usage: dense_cuda_tp make qwen|llama|llama4|qwen3 DIR SEED | dense_cuda_tp run DIR [--no-cuda-graphs] "
                    "[--sampled] | dense_cuda_tp fault DIR KIND:N[@RANK] WARM [--no-cuda-graphs]\n");
    return 2;
}

/* A CUDA error in the middle of a run of the dense GPU teacher engine (teacher/dense_cuda.c behind
 * teacher/engine.c), on the CPU: the stand-ins of tests/unit/fake_cuda_impl.h with their fault
 * injection (fake_fault_set: the N-th kernel launch or async copy from now fails, with the
 * runtime's "unspecified launch failure", and the error stays, as a real context's does). The
 * engine runs a few steps of a request (the prefill, eager decode steps, the capture of the
 * bucket's graph, replays), then the fault is armed and the next te_step must return
 * RT_EINTERNAL with one line that names the failing call (and --no-cuda-graphs when a graph was
 * launched), and the engine and the model must free cleanly (no crash; no leak under ASan:
 * see docs/teacher.md, "Faults"). The expected messages are those of the runtime's own names
 * (cudaGetErrorString of cudaErrorLaunchFailure) and of core/cuda_try.h's shape, not the engine's.
 * The NCCL collectives (tensor parallel) fail under mpirun: tests/ref/test_dense_cuda_tp.py. */
#include <criterion/criterion.h>

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
#define FAKE_CHECK(cond) cr_assert(cond)
#include "tests/unit/fake_cuda_impl.h"

#include "tests/unit/engine_fake.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char tmpdir[64], qwen_dir[128];

static void setup(void) {
    mm_blas_single_thread();
    (void)ef_compare, (void)ef_drive, (void)ef_forward_steps;   /* the shared harness's, unused here */
    fake_total_bytes = (size_t)64 << 20;
    cr_assert_eq(fake_fault_set(NULL), 0);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/dc-fault-XXXXXX");
    cr_assert(mkdtemp(tmpdir));
    snprintf(qwen_dir, sizeof qwen_dir, "%s/qwen", tmpdir);
    cr_assert_eq(ef_make_dense(qwen_dir, &EF_QWEN, 14), 0, "%s", rt_errmsg());
}

static void teardown(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    cr_assert_eq(system(cmd), 0);
    fake_fault_set(NULL);
}

TestSuite(dense_cuda_fault, .init = setup, .fini = teardown);

/* The engine on the stand-in GPU with one greedy request of 20 tokens (prompt of 21), ignore_eos;
 * `warm` steps run before the fault `spec` is armed; then steps until one fails. Returns its status
 * (the message in rt_errmsg), *steps the steps it took to fail. */
static int run_until_fault_opt(bool graphs, bool sampled_on_device, int warm, const char *spec, int *steps,
                               int max_steps) {
    te_load_opts lo = {.device = TE_DEVICE_CUDA, .gpu_memory_fraction = 0.9, .no_cuda_graphs = !graphs};
    te_model *m;
    cr_assert_eq(fake_fault_set(NULL), 0);
    cr_assert_eq(te_model_load_opts(qwen_dir, &lo, &m), 0, "%s", rt_errmsg());
    te_opts o = {.max_batch = 4, .block_size = 16, .prefill_chunk = 16};
    te_engine *e;
    cr_assert_eq(te_engine_create(m, &o, &e), 0, "%s", rt_errmsg());
    int32_t prompt[21];
    for (int i = 0; i < 21; i++) prompt[i] = (i * 7 + 3) % 90;
    te_request r = {.prompt = prompt, .n_prompt = 21, .n_samples = 2, .max_tokens = 20, .ignore_config_eos = true,
                    .sampling = sampled_on_device ? (smp_params){.temperature = 0.8f, .top_k = 0, .top_p = 1.0f}
                                                  : SMP_GREEDY,
                    .seed = 3, .logprobs = true};
    cr_assert_eq(te_submit(e, &r), 0, "%s", rt_errmsg());
    int rc = 0;
    *steps = 0;
    for (int s = 0; s < max_steps && !rc; s++) {
        if (s == warm) cr_assert_eq(fake_fault_set(spec), 0, "%s", spec);
        te_result *res;
        size_t k;
        rt_errclear();
        rc = te_step(e, &res, &k);
        te_results_free(res, k);
        if (s >= warm) ++*steps;
    }
    if (max_steps == 40) cr_assert(fake_fault_fired(), "the fault %s never fired", spec);
    te_engine_free(e);   /* after the error: frees what was in flight, the sticky error notwithstanding */
    te_model_free(m);
    return rc;
}

static int run_until_fault(bool graphs, bool sampled_on_device, int warm, const char *spec, int *steps) {
    return run_until_fault_opt(graphs, sampled_on_device, warm, spec, steps, 40);
}

static void one_line(const char *msg) {
    cr_assert(msg[0] && !strchr(msg, '\n'), "not one line: '%s'", msg);
    cr_log_info("%s", msg);
}

/* A kernel failing in the middle of a decode step run eagerly: the kernel's launch check, named. */
Test(dense_cuda_fault, kernel_failure_mid_decode_without_graphs_is_one_line) {
    int steps;
    /* 4 warm steps: the prefill and three decode steps; then the 9th launch of the next step (the
     * first layer's attention or MLP) */
    int rc = run_until_fault(false, false, 4, "kernel:9", &steps);
    cr_assert_eq(rc, RT_EINTERNAL, "%d: %s", rc, rt_errmsg());
    cr_assert_eq(steps, 1);
    one_line(rt_errmsg());
    cr_assert(strstr(rt_errmsg(), "cudaGetLastError() failed after ") &&
              strstr(rt_errmsg(), ": unspecified launch failure"), "%s", rt_errmsg());
    cr_assert(!strstr(rt_errmsg(), "--no-cuda-graphs"), "%s", rt_errmsg());
}

/* The same kernel failing inside a replayed decode graph: cudaGraphLaunch fails, and the line says
 * how to run without graphs. */
Test(dense_cuda_fault, kernel_failure_inside_a_decode_graph_names_the_launch_and_no_cuda_graphs) {
    int steps;
    size_t launched = fake_graph_launches();
    /* 4 warm steps: the prefill, the bucket's first (eager, captured) decode step, two replays */
    int rc = run_until_fault(true, false, 4, "kernel:9", &steps);
    cr_assert(fake_graph_launches() > launched, "no graph ran before the fault");
    cr_assert_eq(rc, RT_EINTERNAL, "%d: %s", rc, rt_errmsg());
    cr_assert_eq(steps, 1);
    one_line(rt_errmsg());
    cr_assert(strstr(rt_errmsg(), "cudaGraphLaunch: unspecified launch failure"), "%s", rt_errmsg());
    cr_assert(strstr(rt_errmsg(), "--no-cuda-graphs"), "%s", rt_errmsg());
}

/* Kernel launches of one step after `warm` steps (no fault armed). */
static long long launches_of_step(bool graphs, int warm) {
    int steps;
    char spec[32];
    snprintf(spec, sizeof spec, "kernel:%d", 1000000);   /* never reached: counts only */
    run_until_fault_opt(graphs, false, warm, spec, &steps, warm + 1);
    return fake_ft.seen[FAKE_F_KERNEL];
}

/* A launch failing while the bucket's graph is captured (after its eager run: the second half of
 * the first decode step's launches): the capture is ended (cudaStreamEndCapture on the way out: the
 * stand-in refuses to open a second capture otherwise), the half-made graph destroyed, and the
 * line names the capture and --no-cuda-graphs. */
Test(dense_cuda_fault, kernel_failure_during_capture_ends_the_capture) {
    long long both = launches_of_step(true, 1), eager = launches_of_step(false, 1);
    cr_assert_eq(both, 2 * eager, "eager %lld, eager + capture %lld", eager, both);
    char spec[32];
    snprintf(spec, sizeof spec, "kernel:%lld", eager + 5);
    int steps;
    size_t made = fake_graph_instances();
    int rc = run_until_fault(true, false, 1, spec, &steps);
    cr_assert_eq(rc, RT_EINTERNAL, "%d: %s", rc, rt_errmsg());
    cr_assert_eq(steps, 1);
    cr_assert_eq(fake_cap_graph, NULL, "the capture was left open");
    cr_assert_eq(fake_graph_instances(), made, "a graph of a failed capture was instantiated");
    one_line(rt_errmsg());
    cr_assert(strstr(rt_errmsg(), "capturing the decode graph") && strstr(rt_errmsg(), "--no-cuda-graphs") &&
              strstr(rt_errmsg(), "unspecified launch failure"), "%s", rt_errmsg());
}

/* An async copy failing mid-step (the error a kernel's bad access leaves for the next call): the
 * copy is named. With graphs: the second copy of a replayed step is the logits' download after
 * the launch. */
Test(dense_cuda_fault, copy_failure_mid_decode_is_one_line_naming_the_copy) {
    for (int graphs = 0; graphs < 2; graphs++) {
        int steps;
        int rc = run_until_fault(graphs, false, 4, "memcpy:2", &steps);
        cr_assert_eq(rc, RT_EINTERNAL, "%d: %s", rc, rt_errmsg());
        cr_assert_eq(steps, 1);
        one_line(rt_errmsg());
        cr_assert(strstr(rt_errmsg(), "CUDA failed in cudaMemcpyAsync: unspecified launch failure"), "%s", rt_errmsg());
    }
}

/* Device sampling (dc_sample after a forward that left its rows on the GPU): a failure there too. */
Test(dense_cuda_fault, failure_in_device_sampling_is_one_line) {
    int steps;
    /* a decode step's launches: the forward's, then smp_sample_cuda (not counted: no fault hook);
     * the copies: meta up, logits rows, the sampled row, params, rng, tokens down: the 5th is rng */
    int rc = run_until_fault(true, true, 4, "memcpy:5", &steps);
    cr_assert_eq(rc, RT_EINTERNAL, "%d: %s", rc, rt_errmsg());
    one_line(rt_errmsg());
    cr_assert(strstr(rt_errmsg(), "CUDA failed in cudaMemcpyAsync: unspecified launch failure"), "%s", rt_errmsg());
}

/* The spec's grammar: KIND:N[@RANK], else refused. */
Test(dense_cuda_fault, fault_spec_is_checked) {
    cr_assert_eq(fake_fault_set("kernel:3"), 0);
    cr_assert_eq(fake_fault_set("nccl:1@1"), 0);
    cr_assert_eq(fake_fault_set("memcpy:0"), -1);
    cr_assert_eq(fake_fault_set("gpu:1"), -1);
    cr_assert_eq(fake_fault_set("kernel:2@x"), -1);
    cr_assert_eq(fake_fault_set("kernel:2x"), -1);
    cr_assert_eq(fake_fault_set(NULL), 0);
}

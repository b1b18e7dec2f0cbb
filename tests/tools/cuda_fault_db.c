/* tests/tools/cuda_fault_db.c — `retort generate --db` with the GPU teacher engine on the CPU,
 * for a CUDA error mid-run: the generation driver (teacher/driver.c) storing samples into a run
 * database through the dense GPU engine (teacher/dense_cuda.c behind teacher/engine.c) compiled
 * against the CPU stand-ins of tests/unit/fake_cuda.h, whose fault injection FAKE_CUDA_FAIL
 * (KIND:N, counted from the start of the process) makes a kernel launch or copy fail part-way.
 *
 *   cuda_fault_db DB MODEL_DIR N MAX_TOKENS [--no-cuda-graphs]
 *
 * The wiring of cli/cmd_generate.c's local --db mode, one rank: the tokenizer MODEL_DIR/tokenizer.json,
 * the built-in deepseek-r1 template, N samples a prompt of at most MAX_TOKENS tokens at temperature
 * 0.6, top-p 0.95, seed 7, the engine's batch 4 (queue 8). Prints one JSON line {"done", "existing",
 * "fired", "kernels" (the stand-in launches that ran)} and exits 0; or, when gd_run fails, the one line "cuda_fault_db: MESSAGE" and exits 1 (as
 * `retort generate` prints its line). tests/ref/test_cuda_faults_tp.py holds it to the store's
 * contract: what was committed before the fault stays, and a rerun completes exactly the rest. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/fake_cuda.h"

/* the engine, the GPU forward and the driver under names of their own (the library has the real ones) */
#define ENGINE_FAKE_DENSE
#include "tests/unit/engine_fake.h"
#define gd_run fake_gd_run
#define gd_sample_seed fake_gd_sample_seed
#define gd_source_is_math fake_gd_source_is_math
#define gd_params_json fake_gd_params_json

#include "teacher/dense_cuda.c"
#include "teacher/cuda_batch.c"
#undef CUDA_TRY
#include "teacher/engine.c"
#define run drv_run     /* driver.c's file-scope names, out of the stand-ins' way */
#define batch drv_batch
#include "teacher/driver.c"
#undef run
#undef batch

#include "kernels/loss.h"
#include "kernels/optim.h"
#define FAKE_CHECK(cond)                                                                                      \
    do {                                                                                                      \
        if (!(cond)) {                                                                                        \
            fprintf(stderr, "cuda_fault_db: %s:%d: %s does not hold\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                                          \
        }                                                                                                     \
    } while (0)
#include "tests/unit/fake_cuda_impl.h"

#include "core/fsutil.h"
#include "kernels/matmul.h"

int main(int argc, char **argv) {
    mm_blas_single_thread();
    bool graphs = !(argc == 6 && !strcmp(argv[5], "--no-cuda-graphs"));
    if (argc != 5 && (argc != 6 || graphs)) {
        fprintf(stderr, "usage: cuda_fault_db DB MODEL_DIR N MAX_TOKENS [--no-cuda-graphs]\n");
        return 2;
    }
    fake_total_bytes = (size_t)64 << 20;   /* a 64 MiB "GPU": the plan gives the cache what is left */
    const char *dir = argv[2];
    char *tok_path = rt_path_join(dir, "tokenizer.json");
    tok_tokenizer *tok = NULL;
    te_model *m = NULL;
    te_engine *e = NULL;
    db_conn *db = NULL;
    te_load_opts lo = {.device = TE_DEVICE_CUDA, .gpu_memory_fraction = 0.9, .no_cuda_graphs = !graphs};
    int rc = tok_path ? tok_load(tok_path, &tok) : RT_ENOMEM;
    if (!rc) rc = te_model_load_opts(dir, &lo, &m);
    te_opts eo = {.max_batch = 4, .tok = tok};
    if (!rc) rc = te_engine_create(m, &eo, &e);
    if (!rc) rc = db_open(argv[1], 0, &db);
    gd_opts o = {.teacher = "fake-gpu", .n = atoi(argv[3]), .max_tokens = atoll(argv[4]), .temperature = 0.6,
                 .top_p = 0.95, .seed = 7, .logprobs = 0, .think_prefix = true, .engine = e, .tok = tok,
                 .max_queue = 8, .instruction = GD_R1_INSTRUCTION};
    gd_report rep = {0};
    if (!rc) rc = gd_run(db, &o, &rep);
    if (rc) fprintf(stderr, "cuda_fault_db: %s\n", rt_errmsg());
    else printf("{\"done\": %zu, \"existing\": %zu, \"fired\": %d, \"kernels\": %lld}\n", rep.p.samples_done,
                rep.p.existing, fake_fault_fired(), fake_ft.seen[FAKE_F_KERNEL]);
    db_close(db);
    te_engine_free(e);
    te_model_free(m);
    tok_free(tok);
    free(tok_path);
    return rc ? 1 : 0;
}

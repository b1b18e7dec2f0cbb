/* tests/tools/pe_check.c — test helper for teacher/parallel_engine.h, run under mpirun -np P
 * (or alone).
 *
 *   [mpirun -np P] pe_check MODEL_DIR
 *
 * Every rank loads MODEL_DIR with te_model_load (each rank the whole model: the engine has no
 * parallel loader yet, see docs/teacher.md) and follows rank 0 through pe_step: rank 0 submits
 * a schedule of requests over several steps (greedy and sampled, n > 1, logprobs, stop ids, one
 * with a stop string that te_submit refuses without a tokenizer) and cancels one running
 * request. Each rank hashes its results in order. Then rank 0 replays the same schedule on a
 * second engine with te_submit/te_cancel/te_step directly. Rank 0 prints
 *   "pe_check: P ranks, N results, S steps, hashes equal"
 * and exits 0 when every rank's hash and count equal the direct run's, the refused request
 * was refused and the others accepted; else it prints what differs and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "core/status.h"
#include "teacher/engine.h"
#include "teacher/parallel_engine.h"

#define NREQ 5

typedef struct {
    uint64_t h, n;
} digest;

static void mix(digest *d, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) d->h = (d->h ^ b[i]) * 0x100000001b3ull;
}

static void add_results(digest *d, const te_result *r, size_t n) {
    for (size_t i = 0; i < n; i++) {
        mix(d, &r[i].tag, sizeof r[i].tag);
        mix(d, &r[i].sample, sizeof r[i].sample);
        mix(d, &r[i].n_ids, sizeof r[i].n_ids);
        mix(d, r[i].ids, (size_t)r[i].n_ids * sizeof *r[i].ids);
        mix(d, &r[i].finish, sizeof r[i].finish);
        if (r[i].logprobs) mix(d, r[i].logprobs, (size_t)r[i].n_ids * sizeof *r[i].logprobs);
        if (r[i].top_ids) mix(d, r[i].top_ids, (size_t)(r[i].n_ids * r[i].top_k) * sizeof *r[i].top_ids);
        d->n++;
    }
}

static int32_t prompts[NREQ][24];
static const int32_t stop_ids[] = {7, 11};
static const char *const stop_str[] = {"never"};

static void make_requests(int64_t vocab, te_request *rq) {
    uint64_t x = 12345;
    for (int i = 0; i < NREQ; i++)
        for (int j = 0; j < 24; j++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            prompts[i][j] = (int32_t)((x >> 33) % (uint64_t)vocab);
        }
    smp_params greedy = SMP_GREEDY;
    smp_params warm = {.temperature = 0.8f, .top_k = 0, .top_p = 0.9f, .min_p = 0.0f};
    smp_params hot = {.temperature = 1.0f, .top_k = 20, .top_p = 1.0f, .min_p = 0.0f};
    rq[0] = (te_request){.prompt = prompts[0], .n_prompt = 24, .n_samples = 1, .max_tokens = 6, .sampling = greedy,
                         .seed = 1, .ignore_config_eos = true, .tag = 100};
    rq[1] = (te_request){.prompt = prompts[1], .n_prompt = 17, .n_samples = 2, .max_tokens = 12, .sampling = warm,
                         .seed = 2, .ignore_config_eos = true, .logprobs = true, .top_logprobs = 3, .tag = 101};
    rq[2] = (te_request){.prompt = prompts[2], .n_prompt = 9, .n_samples = 2, .max_tokens = 8, .sampling = hot,
                         .seed = 3, .stop_ids = stop_ids, .n_stop_ids = 2, .tag = 102};
    rq[3] = (te_request){.prompt = prompts[3], .n_prompt = 5, .n_samples = 1, .max_tokens = 4, .sampling = greedy,
                         .seed = 4, .stop = stop_str, .n_stop = 1, .tag = 103};   /* refused: no tokenizer */
    rq[4] = (te_request){.prompt = prompts[4], .n_prompt = 20, .n_samples = 3, .max_tokens = 10, .sampling = hot,
                         .seed = 5, .ignore_config_eos = true, .logprobs = true, .tag = 104};
}

/* The schedule: step 0 submits requests 0-1, step 2 requests 2-4, step 4 cancels request 1. */
static void schedule(int step, const te_request *rq, pe_input *in) {
    static const uint64_t cancel[] = {101};
    *in = (pe_input){0};
    if (step == 0) in->submit = rq, in->n_submit = 2;
    if (step == 2) in->submit = rq + 2, in->n_submit = 3;
    if (step == 4) in->cancel = cancel, in->n_cancel = 1;
}

static int fail(const char *what) {
    fprintf(stderr, "pe_check: %s: %s\n", what, rt_errmsg());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: pe_check MODEL_DIR\n");
        return 2;
    }
    rt_comm *c;
    if (comm_open(COMM_AUTO, &c)) return fail("comm");
    int rank = comm_rank(c), P = comm_size(c);
    te_model *m = NULL;
    te_engine *e = NULL;
    te_opts o = {.max_batch = 4, .cache_tokens = 2048};
    if (te_model_load(argv[1], NULL, &m) || te_engine_create(m, &o, &e)) return fail(argv[1]);
    te_request rq[NREQ];
    make_requests(te_model_config(m)->vocab_size, rq);
    digest d = {0xcbf29ce484222325ull, 0};
    int submit_rc[NREQ], steps = 0, rc = 0;
    for (int i = 0; i < NREQ; i++) submit_rc[i] = 99;
    for (bool last = false; !rc && !last; steps++) {
        pe_input in;
        schedule(steps, rq, &in);
        if (steps > 4 && !te_busy(e)) in.last = true;
        te_result *res;
        size_t n;
        rc = pe_step(c, e, rank == 0 ? &in : NULL, steps == 2 ? submit_rc + 2 : steps == 0 ? submit_rc : NULL, &res, &n,
                     &last);
        if (!rc) add_results(&d, res, n);
        te_results_free(res, n);
    }
    if (rc) return fail("pe_step");
    uint64_t mine[3] = {d.h, d.n, (uint64_t)steps}, *all = calloc((size_t)P * 3, sizeof *all);
    if (!all || comm_allgather(c, mine, all, 3, RT_DT_I64)) return fail("allgather");
    int bad = 0;
    if (rank == 0) {   /* the same schedule on an engine alone */
        te_engine *e2 = NULL;
        if (te_engine_create(m, &o, &e2)) return fail("engine");
        digest d2 = {0xcbf29ce484222325ull, 0};
        int rc2[NREQ];
        for (int step = 0;; step++) {
            pe_input in;
            schedule(step, rq, &in);
            if (step > 4 && !te_busy(e2)) break;
            for (size_t i = 0; i < in.n_submit; i++) rc2[in.submit - rq + (long)i] = te_submit(e2, &in.submit[i]);
            for (size_t i = 0; i < in.n_cancel; i++) te_cancel(e2, in.cancel[i]);
            te_result *res;
            size_t n;
            if (te_step(e2, &res, &n)) return fail("te_step");
            add_results(&d2, res, n);
            te_results_free(res, n);
        }
        for (int r = 0; r < P; r++)
            if (all[r * 3] != d2.h || all[r * 3 + 1] != d2.n) {
                fprintf(stderr, "pe_check: rank %d: %llu results, hash %016llx; alone: %llu results, hash %016llx\n", r,
                        (unsigned long long)all[r * 3 + 1], (unsigned long long)all[r * 3], (unsigned long long)d2.n,
                        (unsigned long long)d2.h);
                bad = 1;
            }
        for (int i = 0; i < NREQ; i++)
            if ((submit_rc[i] != 0) != (i == 3) || (rc2[i] != 0) != (i == 3)) {
                fprintf(stderr, "pe_check: request %d: te_submit gave %d in lockstep, %d alone\n", i, submit_rc[i], rc2[i]);
                bad = 1;
            }
        if (d2.n == 0) bad = 1;
        if (!bad)
            printf("pe_check: %d ranks, %llu results, %d steps, hashes equal\n", P, (unsigned long long)d2.n, steps);
        te_engine_free(e2);
    }
    free(all);
    te_engine_free(e);
    te_model_free(m);
    comm_close(c);
    return bad;
}

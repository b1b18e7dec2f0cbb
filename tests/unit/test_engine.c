/* teacher/engine: greedy generation against transformers' generate (tests/ref/gen_teacher.py:
 * 64 new tokens, EOS disabled, tiny llama, qwen2 and DeepSeek-V3 in F32), and the batching
 * invariants — a request gives the same tokens alone, beside other requests (which join
 * and leave), and as sample 0 of n > 1 sharing its prompt, greedy and seeded sampling — plus
 * the cache bound, stop conditions and logprobs. */
#include <math.h>
#include <stdint.h>

#include "core/threadpool.h"
#include "teacher/deepseek.h"
#include "teacher/engine.h"
#include "testutil.h"

static te_model *load(const char *tag, tp_pool *tp) {
    const char *dir = getenv("REF_DIR");
    if (!dir) cr_skip_test("skipped: REF_DIR not set (run the suite through `make test`)");
    char path[4096];
    snprintf(path, sizeof path, "%s/teacher/%s", dir, tag);
    te_model *m = NULL;
    int rc = te_model_load(path, tp, &m);
    if (rc == RT_ENOTFOUND || rc == RT_EIO) cr_skip_test("skipped: %s missing (%s)", path, rt_errmsg());
    cr_assert_eq(rc, 0, "%s", rt_errmsg());
    return m;
}

/* Runs the engine until idle; results sorted into out[tag][sample] (caller frees all). */
#define MAXR 8
#define MAXS 4
typedef struct {
    te_result r[MAXR][MAXS];
    int got[MAXR];
    int max_running;
} outcome;

static void drain(te_engine *e, outcome *o) {
    memset(o, 0, sizeof *o);
    int guard = 0;
    while (te_busy(e)) {
        te_result *res;
        size_t n;
        cr_assert_eq(te_step(e, &res, &n), 0, "%s", rt_errmsg());
        te_stats st;
        te_stats_get(e, &st);
        cr_assert(st.blocks_reserved <= st.blocks_total);
        if (st.running > o->max_running) o->max_running = st.running;
        for (size_t i = 0; i < n; i++) {
            cr_assert(res[i].tag < MAXR && res[i].sample < MAXS);
            o->r[res[i].tag][res[i].sample] = res[i];
            o->got[res[i].tag]++;
        }
        free(res);   /* the per-result arrays now belong to o */
        cr_assert(++guard < 10000, "engine does not finish");
    }
}

static void outcome_free(outcome *o) {
    for (int t = 0; t < MAXR; t++)
        for (int s = 0; s < MAXS; s++) {
            free(o->r[t][s].ids);
            free(o->r[t][s].logprobs);
            free(o->r[t][s].top_ids);
            free(o->r[t][s].top_logprobs);
        }
}

static void greedy_matches(const char *tag) {
    tp_pool *tp;
    cr_assert_eq(tp_create(2, &tp), 0);
    te_model *m = load(tag, tp);
    st_file *f = ref_open("teacher_ref.safetensors");
    te_engine *e;
    te_opts o = {.max_batch = 4, .cache_tokens = 1024, .block_size = 16, .prefill_chunk = 8};
    cr_assert_eq(te_engine_create(m, &o, &e), 0, "%s", rt_errmsg());
    const st_tensor *want[2];
    for (int g = 0; g < 2; g++) {   /* both prompts in one batch */
        char nm[64];
        snprintf(nm, sizeof nm, "%s.g%d.ids", tag, g);
        const st_tensor *ids = ref_tensor(f, nm);
        snprintf(nm, sizeof nm, "%s.g%d.out", tag, g);
        want[g] = ref_tensor(f, nm);
        te_request r = {.prompt = ids->data, .n_prompt = ids->shape[0], .n_samples = 1, .max_tokens = 64,
                        .sampling = SMP_GREEDY, .ignore_config_eos = true, .tag = (uint64_t)g};
        cr_assert_eq(te_submit(e, &r), 0, "%s", rt_errmsg());
    }
    outcome out;
    drain(e, &out);
    for (int g = 0; g < 2; g++) {
        const te_result *r = &out.r[g][0];
        cr_assert_eq(r->n_ids, 64);
        cr_assert_eq(r->finish, TE_FINISH_LENGTH);
        const int32_t *w = want[g]->data;
        for (int i = 0; i < 64; i++)
            cr_assert_eq(r->ids[i], w[i], "%s prompt %d: token %d is %d, transformers generates %d", tag, g, i,
                         r->ids[i], w[i]);
    }
    outcome_free(&out);
    te_engine_free(e);
    te_model_free(m);
    st_close(f);
    tp_free(tp);
}

Test(engine, llama_greedy_64_tokens_match_transformers_generate) { greedy_matches("llama"); }
Test(engine, qwen2_greedy_64_tokens_match_transformers_generate) { greedy_matches("qwen2"); }
Test(engine, qwen3_greedy_64_tokens_match_transformers_generate) { greedy_matches("qwen3"); }
Test(engine, deepseek_greedy_64_tokens_match_transformers_generate) { greedy_matches("deepseek"); }

static const int32_t PA[] = {5, 17, 99, 3, 250, 42, 7, 7, 301, 11, 64, 128, 9, 33, 2, 400, 18};
static const int32_t PB[] = {77, 78, 79};
static const int32_t PC[] = {300, 1, 200, 2, 100, 3, 50, 4, 25, 5, 12, 6, 130, 7, 65, 8, 32, 9, 16, 10, 8};

static te_request req_of(const int32_t *p, int64_t n, int samples, int64_t max_tokens, smp_params sp, uint64_t seed,
                         uint64_t tag) {
    return (te_request){.prompt = p, .n_prompt = n, .n_samples = samples, .max_tokens = max_tokens, .sampling = sp,
                        .seed = seed, .ignore_config_eos = true, .tag = tag, .logprobs = true};
}

static void same_tokens(const te_result *a, const te_result *b, const char *what) {
    cr_assert_eq(a->n_ids, b->n_ids, "%s: %lld vs %lld tokens", what, (long long)a->n_ids, (long long)b->n_ids);
    for (int64_t i = 0; i < a->n_ids; i++) {
        cr_assert_eq(a->ids[i], b->ids[i], "%s: token %lld differs", what, (long long)i);
        cr_assert(fabsf(a->logprobs[i] - b->logprobs[i]) < 1e-4f, "%s: logprob %lld", what, (long long)i);
    }
}

static void batching_invariants(const char *tag, smp_params sp) {
    tp_pool *tp;
    cr_assert_eq(tp_create(2, &tp), 0);
    te_model *m = load(tag, tp);
    te_engine *e;
    outcome alone, alone_n, mixed;
    /* A alone, n = 1 */
    te_opts o = {.max_batch = 16, .cache_tokens = 2048, .block_size = 8};
    cr_assert_eq(te_engine_create(m, &o, &e), 0, "%s", rt_errmsg());
    te_request a1 = req_of(PA, 17, 1, 40, sp, 1234, 0);
    cr_assert_eq(te_submit(e, &a1), 0, "%s", rt_errmsg());
    drain(e, &alone);
    te_engine_free(e);
    /* A alone, n = 3 */
    cr_assert_eq(te_engine_create(m, &o, &e), 0);
    te_request a3 = req_of(PA, 17, 3, 40, sp, 1234, 0);
    cr_assert_eq(te_submit(e, &a3), 0);
    drain(e, &alone_n);
    te_engine_free(e);
    /* mixed: B (short, leaves early), A with n = 3 queued behind a full batch, C joins late */
    te_opts small = {.max_batch = 4, .cache_tokens = 2048, .block_size = 8};
    cr_assert_eq(te_engine_create(m, &small, &e), 0);
    te_request b = req_of(PB, 3, 2, 5, sp, 99, 1);
    te_request c = req_of(PC, 21, 1, 30, sp, 5, 2);
    cr_assert_eq(te_submit(e, &b), 0);
    cr_assert_eq(te_submit(e, &a3), 0);
    te_result *res;
    size_t n;
    cr_assert_eq(te_step(e, &res, &n), 0);   /* B runs; A (3 samples) waits for room */
    te_stats st;
    te_stats_get(e, &st);
    cr_assert_eq(st.running, 2);
    cr_assert_eq(st.queued, 1);
    te_results_free(res, n);
    cr_assert_eq(te_submit(e, &c), 0);
    outcome rest;
    drain(e, &rest);
    mixed = rest;
    te_engine_free(e);

    same_tokens(&alone.r[0][0], &alone_n.r[0][0], "sample 0 of n=3 vs n=1");
    for (int j = 0; j < 3; j++) same_tokens(&alone_n.r[0][j], &mixed.r[0][j], "mixed batch vs alone");
    cr_assert_eq(mixed.got[0], 3);
    cr_assert_eq(mixed.got[2], 1);
    if (sp.temperature > 0) {   /* samples of one prompt differ */
        int differ = 0;
        for (int64_t i = 0; i < 40; i++) differ += alone_n.r[0][0].ids[i] != alone_n.r[0][1].ids[i];
        cr_assert(differ > 0, "samples 0 and 1 drew the same 40 tokens");
    }
    outcome_free(&alone);
    outcome_free(&alone_n);
    outcome_free(&mixed);
    te_model_free(m);
    tp_free(tp);
}

static const smp_params SAMPLED = {.temperature = 1.0f, .top_k = 0, .top_p = 0.95f, .min_p = 0.02f};

Test(engine, dense_request_same_alone_mixed_and_shared_greedy) { batching_invariants("llama", SMP_GREEDY); }
Test(engine, dense_request_same_alone_mixed_and_shared_sampled) { batching_invariants("qwen2", SAMPLED); }
Test(engine, deepseek_request_same_alone_mixed_and_shared_sampled) { batching_invariants("deepseek", SAMPLED); }

Test(engine, cache_bound_queues_requests_and_refuses_what_never_fits) {
    tp_pool *tp;
    cr_assert_eq(tp_create(2, &tp), 0);
    te_model *m = load("llama", tp);
    te_engine *e;
    /* 64 positions: each request (17 + 20 → 5 blocks of 8) fits, two together do not */
    te_opts o = {.max_batch = 16, .cache_tokens = 64, .block_size = 8};
    cr_assert_eq(te_engine_create(m, &o, &e), 0);
    te_request big = req_of(PA, 17, 4, 60, SMP_GREEDY, 0, 3);
    cr_assert_eq(te_submit(e, &big), RT_ERANGE);
    for (uint64_t t = 0; t < 3; t++) {
        te_request r = req_of(PA, 17, 1, 20, SAMPLED, 10 + t, t);
        cr_assert_eq(te_submit(e, &r), 0);
    }
    outcome out;
    drain(e, &out);
    cr_assert_eq(out.max_running, 1, "one request at a time fits");
    for (int t = 0; t < 3; t++) cr_assert_eq(out.r[t][0].n_ids, 20);
    outcome_free(&out);
    te_engine_free(e);
    te_model_free(m);
    tp_free(tp);
}

Test(engine, stops_on_stop_ids_and_reports_top_logprobs) {
    tp_pool *tp;
    cr_assert_eq(tp_create(2, &tp), 0);
    te_model *m = load("llama", tp);
    te_engine *e;
    te_opts o = {0};
    cr_assert_eq(te_engine_create(m, &o, &e), 0);
    te_request r = req_of(PA, 17, 1, 30, SMP_GREEDY, 0, 0);
    r.top_logprobs = 3;
    cr_assert_eq(te_submit(e, &r), 0);
    outcome full;
    drain(e, &full);
    const te_result *g = &full.r[0][0];
    for (int64_t i = 0; i < g->n_ids; i++) {   /* greedy: the chosen token is the top-1 */
        cr_assert_eq(g->top_ids[i * 3], g->ids[i]);
        cr_assert(fabsf(g->top_logprobs[i * 3] - g->logprobs[i]) < 1e-6f);
        cr_assert(g->top_logprobs[i * 3 + 1] <= g->top_logprobs[i * 3] && g->logprobs[i] <= 0);
    }
    int32_t stop = g->ids[12];
    int64_t first = 0;
    while (g->ids[first] != stop) first++;
    te_request s = req_of(PA, 17, 1, 30, SMP_GREEDY, 0, 1);
    s.stop_ids = &stop;
    s.n_stop_ids = 1;
    cr_assert_eq(te_submit(e, &s), 0);
    outcome st;
    drain(e, &st);
    cr_assert_eq(st.r[1][0].finish, TE_FINISH_STOP);
    cr_assert_eq(st.r[1][0].n_ids, first + 1, "stops at the first stop id, which is kept");
    te_request bad = req_of(PA, 17, 1, 30, SMP_GREEDY, 0, 2);
    bad.stop = (const char *const[]){"x"};
    bad.n_stop = 1;
    cr_assert_eq(te_submit(e, &bad), RT_EINVAL, "stop strings without a tokenizer");
    int32_t oov = 100000;
    te_request bad2 = req_of(&oov, 1, 1, 30, SMP_GREEDY, 0, 2);
    cr_assert_eq(te_submit(e, &bad2), RT_EINVAL);
    outcome_free(&full);
    outcome_free(&st);
    te_engine_free(e);
    te_model_free(m);
    tp_free(tp);
}

/* ds_forward_paged against transformers (tests/ref/gen_teacher.py, the tiny DeepSeek-V3 of the
 * greedy tests): block size 4, half of each prompt in one call, the rest one token at a time
 * (absorbed MLA), every row of logits compared (bound 1e-4); then all four prompts in one
 * batched call (naive MLA per sequence), and a forked sequence (copy on write of the shared
 * partial block) continuing like a separate run. */
Test(engine, deepseek_paged_forward_matches_transformers) {
    tp_pool *tp;
    cr_assert_eq(tp_create(2, &tp), 0);
    const char *dir = getenv("REF_DIR");
    if (!dir) cr_skip_test("skipped: REF_DIR not set (run the suite through `make test`)");
    char path[4096];
    snprintf(path, sizeof path, "%s/teacher/deepseek", dir);
    ds_model *m;
    ds_load_opts lo = {.pool = tp};
    int rc = ds_load(path, &lo, &m);
    if (rc == RT_ENOTFOUND || rc == RT_EIO) cr_skip_test("skipped: %s missing", path);
    cr_assert_eq(rc, 0, "%s", rt_errmsg());
    st_file *f = ref_open("teacher_ref.safetensors");
    int64_t V = ds_vocab(m);
    kv_pool *kv;
    cr_assert_eq(kv_pool_create(128, 4, ds_block_floats(m, 4), &kv), 0);
    kv_seq s[4] = {{0}}, *sp[4] = {&s[0], &s[1], &s[2], &s[3]};
    int32_t nn[4], all[256];
    const float *want[4];
    int64_t T = 0;
    float *got = malloc(256 * V * sizeof(float));
    for (int p = 0; p < 4; p++) {
        char nm[64];
        snprintf(nm, sizeof nm, "deepseek.p%d.ids", p);
        const st_tensor *ids = ref_tensor(f, nm);
        snprintf(nm, sizeof nm, "deepseek.p%d.logits", p);
        want[p] = ref_tensor(f, nm)->data;
        int32_t n = (int32_t)ids->shape[0], h = n / 2 > 0 ? n / 2 : 1, one = 1;
        const int32_t *tok = ids->data;
        nn[p] = n;
        memcpy(all + T, tok, n * sizeof(int32_t));
        T += n;
        kv_seq q = {0}, *qp = &q;
        cr_assert_eq(ds_forward_paged(m, kv, &qp, &h, 1, tok, DS_ATTN_AUTO, got, true), 0, "%s", rt_errmsg());
        for (int32_t i = h; i < n; i++)
            cr_assert_eq(ds_forward_paged(m, kv, &qp, &one, 1, tok + i, DS_ATTN_AUTO, got + i * V, false), 0);
        float d = 0;
        for (int64_t i = 0; i < n * V; i++) d = fmaxf(d, fabsf(got[i] - want[p][i]));
        cr_assert(d < 1e-4f, "prompt %d: prefill %d + decode: max |dlogit| = %g", p, h, d);
        cr_log_info("deepseek paged, prompt %d (%d tokens): prefill %d + decode: max |dlogit| = %.2g", p, n, h, d);
        kv_seq_release(kv, &q);
    }
    cr_assert_eq(ds_forward_paged(m, kv, sp, nn, 4, all, DS_ATTN_AUTO, got, true), 0, "%s", rt_errmsg());
    for (int p = 0, at = 0; p < 4; at += nn[p], p++) {
        float d = 0;
        for (int64_t i = 0; i < nn[p] * V; i++) d = fmaxf(d, fabsf(got[at * V + i] - want[p][i]));
        cr_assert(d < 1e-4f, "prompt %d in a batch: max |dlogit| = %g", p, d);
    }
    /* fork prompt 2 (37 tokens: a partial block), continue both with different tokens */
    kv_seq t;
    cr_assert_eq(kv_seq_fork(kv, &s[2], &t), 0);
    int32_t one = 1, ta = 11, tb = 12;
    float *a = malloc(V * sizeof(float)), *b = malloc(V * sizeof(float)), *r = malloc(V * sizeof(float));
    kv_seq *tp2 = &t;
    cr_assert_eq(ds_forward_paged(m, kv, &sp[2], &one, 1, &ta, DS_ATTN_AUTO, a, false), 0);
    cr_assert_eq(ds_forward_paged(m, kv, &tp2, &one, 1, &tb, DS_ATTN_AUTO, b, false), 0);
    for (int w = 0; w < 2; w++) {
        kv_seq q = {0}, *qp = &q;
        int32_t n1 = nn[2] + 1, t1[64];
        memcpy(t1, all + nn[0] + nn[1], nn[2] * sizeof(int32_t));
        t1[nn[2]] = w ? tb : ta;
        cr_assert_eq(ds_forward_paged(m, kv, &qp, &n1, 1, t1, DS_ATTN_AUTO, r, false), 0);
        float d = 0;
        for (int64_t i = 0; i < V; i++) d = fmaxf(d, fabsf(r[i] - (w ? b : a)[i]));
        cr_assert(d < 1e-4f, "continuation %d vs a separate run: %g", w, d);
        kv_seq_release(kv, &q);
    }
    for (int p = 0; p < 4; p++) kv_seq_release(kv, &s[p]);
    kv_seq_release(kv, &t);
    cr_assert_eq(kv_pool_free_blocks(kv), 128);
    free(a); free(b); free(r); free(got);
    kv_pool_free(kv);
    st_close(f);
    ds_free(m);
    tp_free(tp);
}

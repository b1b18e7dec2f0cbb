/* teacher/engine: what `retort serve` adds — the per-token callback (every token of every
 * sample, in order, equal to the results' ids, logprobs and top alternatives) and te_cancel
 * (a running or queued request is dropped: its cache blocks and reservation are freed at once,
 * no result comes for it, and the other requests give the tokens they give alone). On the
 * tiny llama of tests/ref/gen_teacher.py. */
#include <stdint.h>

#include "core/threadpool.h"
#include "teacher/engine.h"
#include "testutil.h"

static te_model *load_llama(void) {
    const char *dir = getenv("REF_DIR");
    if (!dir) cr_skip_test("skipped: REF_DIR not set (run the suite through `make test`)");
    char path[4096];
    snprintf(path, sizeof path, "%s/teacher/llama", dir);
    te_model *m = NULL;
    int rc = te_model_load(path, NULL, &m);
    if (rc == RT_ENOTFOUND || rc == RT_EIO) cr_skip_test("skipped: %s missing (%s)", path, rt_errmsg());
    cr_assert_eq(rc, 0, "%s", rt_errmsg());
    return m;
}

#define MAXT 64
typedef struct {
    int32_t ids[4][2][MAXT];
    float lp[4][2][MAXT], top[4][2][MAXT][3];
    int32_t top_ids[4][2][MAXT][3];
    int n[4][2];
    int bad_order;
} seen;

static void on_tok(void *user, const te_token *t) {
    seen *s = user;
    int *n = &s->n[t->tag][t->sample];
    if (t->index != *n || *n >= MAXT) {
        s->bad_order++;
        return;
    }
    s->ids[t->tag][t->sample][*n] = t->id;
    s->lp[t->tag][t->sample][*n] = t->has_logprob ? t->logprob : 1.0f;
    for (int k = 0; k < t->top_k && k < 3; k++) {
        s->top_ids[t->tag][t->sample][*n][k] = t->top_ids[k];
        s->top[t->tag][t->sample][*n][k] = t->top_logprobs[k];
    }
    (*n)++;
}

static te_request req(const int32_t *prompt, int64_t n_prompt, int n, int64_t max_tokens, uint64_t tag) {
    return (te_request){.prompt = prompt, .n_prompt = n_prompt, .n_samples = n, .max_tokens = max_tokens,
                        .sampling = {.temperature = 0.8f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f}, .seed = 5 + tag,
                        .ignore_config_eos = true, .logprobs = true, .top_logprobs = 3, .tag = tag};
}

Test(engine_stream, callback_sees_every_token_in_order) {
    te_model *m = load_llama();
    seen *s = calloc(1, sizeof *s);
    te_opts o = {.max_batch = 8, .cache_tokens = 1024, .on_token = on_tok, .user = s};
    te_engine *e;
    cr_assert_eq(te_engine_create(m, &o, &e), 0);
    int32_t p0[] = {5, 17, 99, 3}, p1[] = {77};
    te_request r0 = req(p0, 4, 2, 20, 0), r1 = req(p1, 1, 1, 33, 1);
    cr_assert_eq(te_submit(e, &r0), 0);
    cr_assert_eq(te_submit(e, &r1), 0);
    int got = 0;
    while (te_busy(e)) {
        te_result *res;
        size_t k;
        cr_assert_eq(te_step(e, &res, &k), 0);
        for (size_t i = 0; i < k; i++) {
            const te_result *r = &res[i];
            cr_assert_eq(s->n[r->tag][r->sample], r->n_ids, "tag %llu sample %d", (unsigned long long)r->tag, r->sample);
            for (int64_t t = 0; t < r->n_ids; t++) {
                cr_assert_eq(s->ids[r->tag][r->sample][t], r->ids[t]);
                cr_assert_eq(s->lp[r->tag][r->sample][t], r->logprobs[t]);
                for (int q = 0; q < 3; q++) {
                    cr_assert_eq(s->top_ids[r->tag][r->sample][t][q], r->top_ids[t * 3 + q]);
                    cr_assert_eq(s->top[r->tag][r->sample][t][q], r->top_logprobs[t * 3 + q]);
                }
            }
            got++;
        }
        te_results_free(res, k);
    }
    cr_assert_eq(got, 3);
    cr_assert_eq(s->bad_order, 0);
    cr_assert_eq(s->n[0][0], 20);
    cr_assert_eq(s->n[1][0], 33);
    te_engine_free(e);
    te_model_free(m);
    free(s);
}

/* Runs until idle; returns the ids of (tag, sample 0) in out (n_out), counts results of tag drop. */
static void drain(te_engine *e, uint64_t want, int32_t *out, int64_t *n_out, uint64_t drop, int *dropped_results) {
    while (te_busy(e)) {
        te_result *res;
        size_t k;
        cr_assert_eq(te_step(e, &res, &k), 0);
        for (size_t i = 0; i < k; i++) {
            if (res[i].tag == drop) (*dropped_results)++;
            if (res[i].tag == want && res[i].sample == 0) {
                memcpy(out, res[i].ids, (size_t)res[i].n_ids * sizeof *out);
                *n_out = res[i].n_ids;
            }
        }
        te_results_free(res, k);
    }
}

Test(engine_stream, cancel_frees_blocks_and_leaves_the_others_alone) {
    te_model *m = load_llama();
    te_opts o = {.max_batch = 8, .cache_tokens = 2048, .block_size = 16};
    te_engine *e;
    cr_assert_eq(te_engine_create(m, &o, &e), 0);
    int32_t pa[40], pb[] = {9, 8, 7};
    for (int i = 0; i < 40; i++) pa[i] = (i * 37 + 11) % 200;
    /* b alone */
    int32_t alone[64], with[64];
    int64_t n_alone = 0, n_with = 0;
    int dropped = 0;
    te_request rb = req(pb, 3, 1, 48, 1);
    cr_assert_eq(te_submit(e, &rb), 0);
    drain(e, 1, alone, &n_alone, 99, &dropped);
    cr_assert_eq(n_alone, 48);
    /* a (3 samples) beside b; a is cancelled after 5 steps */
    te_request ra = req(pa, 40, 3, 400, 0);
    cr_assert_eq(te_submit(e, &ra), 0);
    cr_assert_eq(te_submit(e, &rb), 0);
    for (int step = 0; step < 5; step++) {
        te_result *res;
        size_t k;
        cr_assert_eq(te_step(e, &res, &k), 0);
        cr_assert_eq(k, 0);
        te_results_free(res, k);
    }
    te_stats st;
    te_stats_get(e, &st);
    cr_assert_eq(st.running, 4);
    cr_assert_gt(st.blocks_in_use, 4);   /* a's shared prompt (3 blocks) + forks + b */
    cr_assert_eq(te_cancel(e, 0), 3);
    te_stats_get(e, &st);
    cr_assert_eq(st.running, 1);
    cr_assert_eq(st.blocks_in_use, 1, "b's one block remains");   /* 3 + 5 positions */
    cr_assert_eq(st.blocks_reserved, (3 + 48 + 15) / 16);
    cr_assert_eq(te_cancel(e, 0), 0);
    drain(e, 1, with, &n_with, 0, &dropped);
    cr_assert_eq(dropped, 0, "no result for a cancelled request");
    cr_assert_eq(n_with, n_alone);
    cr_assert_arr_eq(with, alone, (size_t)n_alone * sizeof *alone);
    te_stats_get(e, &st);
    cr_assert(st.blocks_in_use == 0 && st.blocks_reserved == 0 && st.running == 0 && st.queued == 0);
    /* a queued request is dropped before it runs */
    te_engine_free(e);
    o.max_batch = 1;
    cr_assert_eq(te_engine_create(m, &o, &e), 0);
    cr_assert_eq(te_submit(e, &rb), 0);
    cr_assert_eq(te_submit(e, &ra), 0);
    te_result *res;
    size_t k;
    cr_assert_eq(te_step(e, &res, &k), 0);
    te_results_free(res, k);
    te_stats_get(e, &st);
    cr_assert_eq(st.queued, 1);
    cr_assert_eq(te_cancel(e, 0), 1);
    te_stats_get(e, &st);
    cr_assert_eq(st.queued, 0);
    dropped = 0;
    drain(e, 1, with, &n_with, 0, &dropped);
    cr_assert_eq(dropped, 0);
    cr_assert_arr_eq(with, alone, (size_t)n_alone * sizeof *alone);
    te_engine_free(e);
    te_model_free(m);
}

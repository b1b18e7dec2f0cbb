/* teacher/speculative: MTP draft-and-verify yields exactly the tokens of plain greedy
 * decoding — transformers' generate on the same weights (tests/ref/gen_teacher.py:
 * teacher/deepseek-mtp = teacher/deepseek + a random MTP layer; 64 new tokens) — through the
 * MTP draft, an oracle that is always right (every draft accepted) and one wrong on every
 * third position (both paths interleaved); every MTP draft is checked against one MTP
 * forward over the whole final sequence. */
#include <stdint.h>

#include "core/threadpool.h"
#include "teacher/speculative.h"
#include "testutil.h"

static ds_model *load_mtp(tp_pool *tp) {
    const char *dir = getenv("REF_DIR");
    if (!dir) cr_skip_test("skipped: REF_DIR not set (run the suite through `make test`)");
    char path[4096];
    snprintf(path, sizeof path, "%s/teacher/deepseek-mtp", dir);
    ds_model *m = NULL;
    ds_load_opts o = {.pool = tp, .load_mtp = true};
    int rc = ds_load(path, &o, &m);
    if (rc == RT_ENOTFOUND || rc == RT_EIO) cr_skip_test("skipped: %s missing (%s)", path, rt_errmsg());
    cr_assert_eq(rc, 0, "%s", rt_errmsg());
    cr_assert(ds_has_mtp(m));
    return m;
}

typedef struct {
    const int32_t *want;   /* the greedy continuation */
    int64_t n_prompt;
    int every;             /* 0: MTP's own draft; 1: always right; > 1: wrong when (pos - n_prompt) % every == 0 */
    int64_t seen_pos[128];
    int32_t seen[128];     /* the MTP layer's drafts */
    int n_seen;
} oracle_ctx;

static int oracle(void *p, int64_t pos, int32_t *d) {
    oracle_ctx *o = p;
    cr_assert(*d >= 0 && o->n_seen < 128);   /* the MTP layer's own draft, before any replacement */
    o->seen_pos[o->n_seen] = pos;
    o->seen[o->n_seen++] = *d;
    if (o->every == 0) return 0;
    int64_t i = pos - o->n_prompt;
    *d = i < 64 ? o->want[i] : 0;
    if (o->every > 1 && i % o->every == 0) *d = (*d + 1) % 512;
    return 0;
}

/* Each MTP draft equals the argmax of one MTP forward over the whole final sequence (rows
 * (h_i, token i+1) from a full main forward) — the incremental MTP cache does not drift. */
static void check_drafts(ds_model *m, const int32_t *prompt, int64_t np, const int32_t *gen, const oracle_ctx *oc) {
    int64_t N = np + 64, V = ds_vocab(m), D = ds_hidden(m);
    int32_t *tok = malloc(N * sizeof *tok), *pos = malloc(N * sizeof *pos);
    float *h = malloc(N * D * sizeof *h), *lg = malloc(N * V * sizeof *lg);
    memcpy(tok, prompt, np * sizeof *tok);
    memcpy(tok + np, gen, 64 * sizeof *tok);
    for (int64_t i = 0; i < N; i++) pos[i] = (int32_t)i;
    ds_cache *c;
    cr_assert_eq(ds_cache_create(m, N, &c), 0);
    cr_assert_eq(ds_forward(m, c, tok, pos, N, DS_ATTN_NAIVE, lg, h), 0, "%s", rt_errmsg());
    cr_assert_eq(ds_mtp_forward(m, c, h, tok + 1, pos, N - 1, DS_ATTN_NAIVE, lg, NULL), 0, "%s", rt_errmsg());
    cr_assert(oc->n_seen > 0);
    for (int k = 0; k < oc->n_seen; k++) {   /* the draft for position p comes from row p - 2 */
        const float *row = lg + (oc->seen_pos[k] - 2) * V;
        int32_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (row[v] > row[best]) best = (int32_t)v;
        cr_assert_eq(oc->seen[k], best, "draft %d (position %lld)", k, (long long)oc->seen_pos[k]);
    }
    ds_cache_free(c);
    free(tok); free(pos); free(h); free(lg);
}

static void run(int every) {
    tp_pool *tp;
    cr_assert_eq(tp_create(2, &tp), 0);
    ds_model *m = load_mtp(tp);
    st_file *f = ref_open("teacher_ref.safetensors");
    for (int g = 0; g < 2; g++) {
        char nm[64];
        snprintf(nm, sizeof nm, "deepseek.g%d.ids", g);
        const st_tensor *ids = ref_tensor(f, nm);
        snprintf(nm, sizeof nm, "deepseek.g%d.out", g);
        const int32_t *want = ref_tensor(f, nm)->data;
        int32_t out[64];
        int64_t n = 0;
        sd_stats st;
        oracle_ctx oc = {.want = want, .n_prompt = ids->shape[0], .every = every};
        int rc = sd_greedy(m, ids->data, ids->shape[0], 64, NULL, 0, oracle, &oc, out, &n, &st);
        cr_assert_eq(rc, 0, "%s", rt_errmsg());
        cr_assert_eq(n, 64);
        for (int i = 0; i < 64; i++)
            cr_assert_eq(out[i], want[i], "prompt %d: token %d is %d, greedy gives %d", g, i, out[i], want[i]);
        cr_assert_eq(st.drafted, st.steps);
        if (every == 1) cr_assert_eq(st.accepted, st.steps, "a perfect draft is always accepted");
        if (every == 3) cr_assert(st.accepted > 0 && st.accepted < st.steps);
        /* every step emits 1 + accepted tokens: 64 = 1 (prefill) + steps + accepted (± the last) */
        cr_assert(1 + st.steps + st.accepted >= 64 && 1 + st.steps + st.accepted <= 65);
        check_drafts(m, ids->data, ids->shape[0], out, &oc);
        cr_log_info("draft %s: prompt %d, %lld verify steps, %lld/%lld drafts accepted", every ? "oracle" : "MTP", g,
                    (long long)st.steps, (long long)st.accepted, (long long)st.drafted);
    }
    st_close(f);
    ds_free(m);
    tp_free(tp);
}

Test(speculative, mtp_draft_gives_exactly_greedy_tokens) { run(0); }
Test(speculative, always_right_draft_accepts_every_step) { run(1); }
Test(speculative, often_wrong_draft_mixes_accepts_and_rejects) { run(3); }

Test(speculative, stops_at_a_stop_id_and_needs_mtp) {
    tp_pool *tp;
    cr_assert_eq(tp_create(2, &tp), 0);
    ds_model *m = load_mtp(tp);
    st_file *f = ref_open("teacher_ref.safetensors");
    const st_tensor *ids = ref_tensor(f, "deepseek.g0.ids");
    const int32_t *want = ref_tensor(f, "deepseek.g0.out")->data;
    int32_t stop = want[20], out[64];
    int64_t first = 0, n;
    while (want[first] != stop) first++;
    sd_stats st;
    cr_assert_eq(sd_greedy(m, ids->data, ids->shape[0], 64, &stop, 1, NULL, NULL, out, &n, &st), 0);
    cr_assert_eq(n, first + 1);
    cr_assert_eq(out[n - 1], stop);
    cr_assert_eq(sd_greedy(m, ids->data, 0, 64, NULL, 0, NULL, NULL, out, &n, &st), RT_EINVAL);
    st_close(f);
    ds_free(m);
    tp_free(tp);
}

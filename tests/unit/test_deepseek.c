/* teacher/deepseek against transformers' DeepseekV3ForCausalLM (tests/ref/gen_deepseek.py):
 * tiny checkpoints in F32 (save_pretrained) and FP8 e4m3 with 128x128 block scales (sharded,
 * BF16 elsewhere, with the MTP layer; reference = transformers on the dequantized weights),
 * prompts of 1, 7, 33 and 300 tokens (YaRN beyond original_max_position_embeddings = 256).
 * Tolerance: max |Δlogit| < 1e-4 (f32 throughout; logits have std ~0.8, differences come
 * from summation order only). */
#include <math.h>
#include <stdint.h>

#include "core/threadpool.h"
#include "teacher/deepseek.h"
#include "testutil.h"

#define TOL 1e-4f

static ds_model *load(const char *which, bool mtp, tp_pool *pool) {
    const char *dir = getenv("REF_DIR");
    if (!dir) cr_skip_test("skipped: REF_DIR not set (run the suite through `make test`)");
    char path[4096];
    snprintf(path, sizeof path, "%s/deepseek/%s", dir, which);
    ds_model *m = NULL;
    ds_load_opts o = {.pool = pool, .load_mtp = mtp};
    int rc = ds_load(path, &o, &m);
    if (rc == RT_ENOTFOUND) cr_skip_test("skipped: %s missing (%s)", path, rt_errmsg());
    cr_assert_eq(rc, 0, "%s", rt_errmsg());
    return m;
}

static float max_diff(const float *a, const float *b, size_t n) {
    float d = 0;
    for (size_t i = 0; i < n; i++) {
        float e = fabsf(a[i] - b[i]);
        if (!(e <= d)) d = e;   /* NaN counts as a failure */
    }
    return d;
}

typedef enum { FULL_NAIVE, FULL_ABSORBED, PREFILL_DECODE } run_kind;

/* Logits of every prompt of `tag`; prefill+decode: first half of the prompt in one naive
 * call, the rest one token at a time through the absorbed path. */
static void check_prompts(ds_model *m, const char *tag, run_kind kind) {
    st_file *f = ref_open("deepseek_ref.safetensors");
    int64_t V = ds_vocab(m);
    for (int p = 0;; p++) {
        char nm[64];
        snprintf(nm, sizeof nm, "%s.p%d.ids", tag, p);
        const st_tensor *ids = st_find(f, nm);
        if (!ids) {
            cr_assert(p > 0, "no prompts for %s", tag);
            break;
        }
        snprintf(nm, sizeof nm, "%s.p%d.logits", tag, p);
        const float *want = ref_tensor(f, nm)->data;
        int64_t n = ids->shape[0];
        const int32_t *tok = ids->data;
        int32_t *pos = malloc(n * sizeof *pos);
        for (int64_t i = 0; i < n; i++) pos[i] = (int32_t)i;
        float *got = malloc(n * V * sizeof *got);
        for (int64_t i = 0; i < n * V; i++) got[i] = NAN;
        ds_cache *c;
        cr_assert_eq(ds_cache_create(m, n + 3, &c), 0);
        if (kind == PREFILL_DECODE) {
            int64_t k = n / 2 > 0 ? n / 2 : 1;
            cr_assert_eq(ds_forward(m, c, tok, pos, k, DS_ATTN_NAIVE, got, NULL), 0, "%s", rt_errmsg());
            for (int64_t i = k; i < n; i++)
                cr_assert_eq(ds_forward(m, c, tok + i, pos + i, 1, DS_ATTN_ABSORBED, got + i * V, NULL), 0, "%s",
                             rt_errmsg());
        } else {
            cr_assert_eq(ds_forward(m, c, tok, pos, n, kind == FULL_NAIVE ? DS_ATTN_NAIVE : DS_ATTN_ABSORBED, got, NULL),
                         0, "%s", rt_errmsg());
        }
        cr_assert_eq(ds_cache_len(c), n);
        float d = max_diff(got, want, (size_t)(n * V));
        cr_log_info("%s prompt %d (%lld tokens, run %d): max |dlogit| = %.3g", tag, p, (long long)n, (int)kind, d);
        cr_assert(d < TOL, "%s prompt %d (%lld tokens, run kind %d): max |dlogit| = %g", tag, p, (long long)n, (int)kind, d);
        ds_cache_free(c);
        free(got);
        free(pos);
    }
    st_close(f);
}

Test(deepseek, f32_prefill_naive_matches_transformers) {
    ds_model *m = load("f32", false, NULL);
    check_prompts(m, "f32", FULL_NAIVE);
    ds_free(m);
}

Test(deepseek, f32_absorbed_matches_transformers) {
    ds_model *m = load("f32", false, NULL);
    check_prompts(m, "f32", FULL_ABSORBED);
    ds_free(m);
}

Test(deepseek, f32_prefill_then_decode_matches_transformers) {
    tp_pool *pool;
    cr_assert_eq(tp_create(2, &pool), 0);
    ds_model *m = load("f32", false, pool);
    check_prompts(m, "f32", PREFILL_DECODE);
    ds_free(m);
    tp_free(pool);
}

Test(deepseek, fp8_sharded_matches_transformers_on_dequantized_weights) {
    tp_pool *pool;
    cr_assert_eq(tp_create(2, &pool), 0);
    ds_model *m = load("fp8", false, pool);
    cr_assert(!ds_has_mtp(m));
    check_prompts(m, "fp8", FULL_NAIVE);
    check_prompts(m, "fp8", PREFILL_DECODE);
    ds_free(m);
    tp_free(pool);
}

Test(deepseek, mtp_layer_loads_with_its_shapes) {
    ds_model *m = load("fp8", true, NULL);
    cr_assert(ds_has_mtp(m));
    const mc_config *c = ds_config(m);
    int64_t r, k;
    cr_assert_eq(ds_mtp_tensor_shape(m, "eh_proj.weight", &r, &k), 0);
    cr_assert(r == c->hidden_size && k == 2 * c->hidden_size);
    cr_assert_eq(ds_mtp_tensor_shape(m, "shared_head.head.weight", &r, &k), 0);
    cr_assert(r == c->vocab_size && k == c->hidden_size);
    cr_assert_eq(ds_mtp_tensor_shape(m, "embed_tokens.weight", &r, &k), 0);
    cr_assert(r == c->vocab_size && k == c->hidden_size);
    cr_assert_eq(ds_mtp_tensor_shape(m, "mlp.gate.weight", &r, &k), 0);
    cr_assert(r == c->n_routed_experts && k == c->hidden_size);
    ds_cache *cache;
    cr_assert_eq(ds_cache_create(m, 4, &cache), 0);
    cr_assert_eq(ds_cache_row(cache), c->kv_lora_rank + c->qk_rope_head_dim);
    ds_cache_free(cache);
    ds_free(m);
}

/* The draft step against the hand-derived reference: main forward for h, then the MTP
 * layer over the whole prompt (naive), and again token by token (absorbed). */
Test(deepseek, mtp_draft_matches_hand_derived_reference) {
    ds_model *m = load("fp8", true, NULL);
    st_file *f = ref_open("deepseek_ref.safetensors");
    const st_tensor *ids = ref_tensor(f, "mtp.ids");
    const int32_t *tok = ids->data, *next = ref_tensor(f, "mtp.next")->data;
    const float *want = ref_tensor(f, "mtp.logits")->data, *want_h = ref_tensor(f, "mtp.hidden")->data;
    int64_t n = ids->shape[0], V = ds_vocab(m), D = ds_hidden(m);
    int32_t *pos = malloc(n * sizeof *pos);
    for (int64_t i = 0; i < n; i++) pos[i] = (int32_t)i;
    float *h = malloc(n * D * sizeof *h), *lg = malloc(n * V * sizeof *lg), *hh = malloc(n * D * sizeof *hh);
    ds_cache *c;
    cr_assert_eq(ds_cache_create(m, n, &c), 0);
    cr_assert_eq(ds_forward(m, c, tok, pos, n, DS_ATTN_NAIVE, NULL, h), 0, "%s", rt_errmsg());
    cr_assert_eq(ds_mtp_forward(m, c, h, next, pos, n, DS_ATTN_NAIVE, lg, hh), 0, "%s", rt_errmsg());
    float d = max_diff(lg, want, (size_t)(n * V)), dh = max_diff(hh, want_h, (size_t)(n * D));
    cr_log_info("mtp: max |dlogit| = %.3g, max |dhidden| = %.3g", d, dh);
    cr_assert(d < TOL && dh < TOL, "mtp naive: max |dlogit| = %g, |dhidden| = %g", d, dh);
    cr_assert_eq(ds_cache_mtp_len(c), n);
    for (int64_t i = 0; i < n; i++) lg[i] = NAN;
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(ds_mtp_forward(m, c, h + i * D, next + i, pos + i, 1, DS_ATTN_ABSORBED, lg + i * V, NULL), 0);
    d = max_diff(lg, want, (size_t)(n * V));
    cr_assert(d < TOL, "mtp decode: max |dlogit| = %g", d);
    ds_cache_free(c);
    free(pos);
    free(h);
    free(lg);
    free(hh);
    st_close(f);
    ds_free(m);
}

/* Rewinding the cache (as after rejected draft tokens) and decoding again gives the same logits. */
Test(deepseek, rewind_and_redecode_is_consistent) {
    ds_model *m = load("f32", false, NULL);
    st_file *f = ref_open("deepseek_ref.safetensors");
    const int32_t *tok = ref_tensor(f, "f32.p2.ids")->data;
    const float *want = ref_tensor(f, "f32.p2.logits")->data;
    int64_t V = ds_vocab(m);
    int32_t pos[33];
    for (int i = 0; i < 33; i++) pos[i] = i;
    ds_cache *c;
    cr_assert_eq(ds_cache_create(m, 40, &c), 0);
    float *lg = malloc(33 * V * sizeof *lg);
    cr_assert_eq(ds_forward(m, c, tok, pos, 20, DS_ATTN_AUTO, lg, NULL), 0);
    int32_t junk[3] = {5, 6, 7};
    cr_assert_eq(ds_forward(m, c, junk, pos + 20, 3, DS_ATTN_AUTO, lg + 20 * V, NULL), 0);
    cr_assert_eq(ds_cache_len(c), 23);
    cr_assert_eq(ds_forward(m, c, tok + 20, pos + 20, 13, DS_ATTN_AUTO, lg + 20 * V, NULL), 0);
    float d = max_diff(lg, want, 33 * (size_t)V);
    cr_assert(d < TOL, "after rewind: max |dlogit| = %g", d);
    free(lg);
    ds_cache_free(c);
    st_close(f);
    ds_free(m);
}

Test(deepseek, rejects_bad_tokens_positions_and_capacity) {
    ds_model *m = load("f32", false, NULL);
    ds_cache *c;
    cr_assert_eq(ds_cache_create(m, 4, &c), 0);
    float *lg = malloc(8 * ds_vocab(m) * sizeof *lg);
    int32_t tok[5] = {1, 2, 3, 4, 5}, pos[5] = {0, 1, 2, 3, 4}, gap[1] = {2}, bad[1] = {-1}, big[1] = {1 << 20};
    cr_assert_eq(ds_forward(m, c, bad, pos, 1, DS_ATTN_AUTO, lg, NULL), RT_EINVAL);
    cr_assert_eq(ds_forward(m, c, big, pos, 1, DS_ATTN_AUTO, lg, NULL), RT_EINVAL);
    cr_assert_eq(ds_forward(m, c, tok, gap, 1, DS_ATTN_AUTO, lg, NULL), RT_EINVAL);   /* empty cache: gap */
    cr_assert_eq(ds_forward(m, c, tok, pos, 5, DS_ATTN_AUTO, lg, NULL), RT_ERANGE);
    int32_t swapped[2] = {1, 0};
    cr_assert_eq(ds_forward(m, c, tok, swapped, 2, DS_ATTN_AUTO, lg, NULL), RT_EINVAL);
    cr_assert_eq(ds_forward(m, c, tok, pos, 0, DS_ATTN_AUTO, lg, NULL), RT_EINVAL);
    cr_assert_eq(ds_mtp_forward(m, c, lg, tok, pos, 1, DS_ATTN_AUTO, lg, NULL), RT_EINVAL);  /* no MTP loaded */
    cr_assert_eq(ds_cache_len(c), 0);
    free(lg);
    ds_cache_free(c);
    ds_free(m);
}

Test(deepseek, load_refuses_missing_dir_and_other_architectures) {
    ds_model *m = (ds_model *)1;
    cr_assert_neq(ds_load("/nonexistent/retort-model", NULL, &m), 0);
    cr_assert_null(m);
    const char *dir = getenv("REF_DIR");
    if (!dir) cr_skip_test("skipped: REF_DIR not set");
}

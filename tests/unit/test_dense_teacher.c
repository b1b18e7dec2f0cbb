/* teacher/dense and the paged attention kernel against torch / transformers
 * (tests/ref/gen_teacher.py): tiny llama and qwen2 checkpoints in F32, prompts of 1, 6, 37
 * and 90 tokens. Tolerance: max |Δlogit| < 1e-4 (f32 throughout; logits have std ~1,
 * differences come from summation order only). Prefill + decode and batched forwards are
 * compared with the full forward at 1e-5 (same arithmetic but different GEMM shapes). */
#include <math.h>
#include <stdint.h>

#include "core/threadpool.h"
#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "teacher/dense.h"
#include "teacher/kvcache.h"
#include "testutil.h"

#define TOL 1e-4f

static float max_diff(const float *a, const float *b, size_t n) {
    float d = 0;
    for (size_t i = 0; i < n; i++) {
        float e = fabsf(a[i] - b[i]);
        if (!(e <= d)) d = e;   /* NaN counts as a failure */
    }
    return d;
}

Test(attn_paged, matches_torch_sdpa_through_shuffled_blocks) {
    st_file *f = ref_open("teacher_ref.safetensors");
    const int64_t *dims = ref_tensor(f, "attn.dims")->data;
    int64_t n = dims[0], Hq = dims[1], Hkv = dims[2], hd = dims[3];
    const st_tensor *kt = ref_tensor(f, "attn.k");
    int64_t T = kt->shape[0], bs = 8, nb = (T + bs - 1) / bs, kd = Hkv * hd, stride = 2 * bs * kd + 3;
    const float *q = ref_tensor(f, "attn.q")->data, *k = kt->data, *v = ref_tensor(f, "attn.v")->data;
    const float *want = ref_tensor(f, "attn.o")->data;
    float *pool = malloc((size_t)(nb * stride) * sizeof(float));
    int32_t *table = malloc((size_t)nb * sizeof *table);
    for (int64_t b = 0; b < nb; b++) table[b] = (int32_t)((b * 3 + 1) % nb);   /* a permutation (nb = 10) */
    for (int64_t i = 0; i < nb * stride; i++) pool[i] = NAN;
    for (int64_t s = 0; s < T; s++) {
        float *row = pool + table[s / bs] * stride + (s % bs) * kd;
        memcpy(row, k + s * kd, (size_t)kd * sizeof(float));
        memcpy(row + bs * kd, v + s * kd, (size_t)kd * sizeof(float));
    }
    const int32_t **tabs = malloc((size_t)n * sizeof *tabs);
    int32_t *ctx = malloc((size_t)n * sizeof *ctx);
    for (int64_t i = 0; i < n; i++) {
        tabs[i] = table;
        ctx[i] = (int32_t)(T - n + i + 1);
    }
    tp_pool *tp;
    cr_assert_eq(tp_create(3, &tp), 0);
    float *ws = malloc(attn_paged_workspace_floats(T, 3) * sizeof(float));
    float *o = malloc((size_t)(n * Hq * hd) * sizeof(float));
    for (int64_t i = 0; i < n * Hq * hd; i++) o[i] = NAN;
    attn_paged_fwd(o, q, n, Hq, Hkv, hd, 1.0f / sqrtf((float)hd), pool, pool + bs * kd, bs, stride, tabs, ctx, ws, tp);
    float d = max_diff(o, want, (size_t)(n * Hq * hd));
    cr_assert(d < 1e-5f, "max |do| = %g", d);
    cr_log_info("paged attention vs torch: max |do| = %.2g", d);
    tp_free(tp);
    free(o); free(ws); free(ctx); free(tabs); free(table); free(pool);
    st_close(f);
}

typedef struct {
    dn_model *m;
    kv_pool *cache;
    tp_pool *tp;
    int64_t V;
} fixture;

static fixture setup(const char *tag, int threads, int64_t blocks, int64_t bs) {
    const char *dir = getenv("REF_DIR");
    if (!dir) cr_skip_test("skipped: REF_DIR not set (run the suite through `make test`)");
    char path[4096];
    snprintf(path, sizeof path, "%s/teacher/%s", dir, tag);
    fixture x = {0};
    cr_assert_eq(tp_create(threads, &x.tp), 0);
    int rc = dn_load(path, x.tp, &x.m);
    if (rc == RT_ENOTFOUND || rc == RT_EIO) cr_skip_test("skipped: %s missing (%s)", path, rt_errmsg());
    cr_assert_eq(rc, 0, "%s", rt_errmsg());
    x.V = dn_config(x.m)->vocab_size;
    cr_assert_eq(kv_pool_create(blocks, bs, dn_block_floats(x.m, bs), &x.cache), 0, "%s", rt_errmsg());
    return x;
}

static void teardown(fixture *x) {
    dn_free(x->m);
    kv_pool_free(x->cache);
    tp_free(x->tp);
}

static void full_forward_matches(const char *tag) {
    fixture x = setup(tag, 2, 64, 16);
    st_file *f = ref_open("teacher_ref.safetensors");
    for (int p = 0;; p++) {
        const float *want;
        const st_tensor *ids = ref_prompt(f, tag, p, &want);
        if (!ids) break;
        int32_t n = (int32_t)ids->shape[0];
        float *got = malloc((size_t)(n * x.V) * sizeof(float));
        kv_seq s = {0}, *sp = &s;
        cr_assert_eq(dn_forward(x.m, x.cache, &sp, &n, 1, ids->data, got, true), 0, "%s", rt_errmsg());
        cr_assert_eq(s.len, n);
        float d = max_diff(got, want, (size_t)(n * x.V));
        cr_assert(d < TOL, "%s prompt %d (%d tokens): max |dlogit| = %g", tag, p, n, d);
        cr_log_info("%s prompt %d (%d tokens): max |dlogit| = %.2g", tag, p, n, d);
        kv_seq_release(x.cache, &s);
        free(got);
    }
    cr_assert_eq(kv_pool_free_blocks(x.cache), 64, "every block returned");
    st_close(f);
    teardown(&x);
}

Test(dense_teacher, llama_logits_match_transformers) { full_forward_matches("llama"); }
Test(dense_teacher, qwen2_logits_match_transformers) { full_forward_matches("qwen2"); }
Test(dense_teacher, qwen3_logits_match_transformers) { full_forward_matches("qwen3"); }

/* Half the prompt in one call, the rest one token at a time (block size 4: decode crosses
 * block boundaries), every step's logits against transformers' full forward. */
static void prefill_decode_matches(const char *tag) {
    fixture x = setup(tag, 2, 64, 4);
    st_file *f = ref_open("teacher_ref.safetensors");
    for (int p = 0;; p++) {
        const float *want;
        const st_tensor *ids = ref_prompt(f, tag, p, &want);
        if (!ids) break;
        int32_t n = (int32_t)ids->shape[0], h = n / 2 > 0 ? n / 2 : 1;
        const int32_t *tok = ids->data;
        float *got = malloc((size_t)(n * x.V) * sizeof(float));
        kv_seq s = {0}, *sp = &s;
        cr_assert_eq(dn_forward(x.m, x.cache, &sp, &h, 1, tok, got, true), 0, "%s", rt_errmsg());
        for (int32_t i = h, one = 1; i < n; i++)
            cr_assert_eq(dn_forward(x.m, x.cache, &sp, &one, 1, tok + i, got + i * x.V, false), 0, "%s", rt_errmsg());
        float d = max_diff(got, want, (size_t)(n * x.V));
        cr_assert(d < TOL, "%s prompt %d: prefill %d + decode: max |dlogit| = %g", tag, p, h, d);
        cr_log_info("%s prompt %d: prefill %d + decode: max |dlogit| = %.2g", tag, p, h, d);
        kv_seq_release(x.cache, &s);
        free(got);
    }
    st_close(f);
    teardown(&x);
}

Test(dense_teacher, llama_prefill_then_decode_matches_full_forward) { prefill_decode_matches("llama"); }
Test(dense_teacher, qwen2_prefill_then_decode_matches_full_forward) { prefill_decode_matches("qwen2"); }
Test(dense_teacher, qwen3_prefill_then_decode_matches_full_forward) { prefill_decode_matches("qwen3"); }

/* Every prompt in one batched call gives each prompt's own logits. */
Test(dense_teacher, batched_sequences_do_not_see_each_other) {
    fixture x = setup("qwen2", 3, 128, 16);
    st_file *f = ref_open("teacher_ref.safetensors");
    kv_seq s[4] = {{0}}, *sp[4];
    int32_t nn[4], tok[256];
    const float *want[4];
    int64_t T = 0;
    for (int p = 0; p < 4; p++) {
        const st_tensor *ids = ref_prompt(f, "qwen2", p, &want[p]);
        cr_assert(ids);
        nn[p] = (int32_t)ids->shape[0];
        memcpy(tok + T, ids->data, (size_t)nn[p] * sizeof(int32_t));
        T += nn[p];
        sp[p] = &s[p];
    }
    float *got = malloc((size_t)(T * x.V) * sizeof(float)), *last = malloc((size_t)(4 * x.V) * sizeof(float));
    cr_assert_eq(dn_forward(x.m, x.cache, sp, nn, 4, tok, got, true), 0, "%s", rt_errmsg());
    for (int p = 0, at = 0; p < 4; at += nn[p], p++) {
        float d = max_diff(got + (int64_t)at * x.V, want[p], (size_t)(nn[p] * x.V));
        cr_assert(d < TOL, "prompt %d in a batch: max |dlogit| = %g", p, d);
    }
    /* one decode step of all four, against each one's last row */
    int32_t next[4] = {5, 6, 7, 8}, one[4] = {1, 1, 1, 1};
    cr_assert_eq(dn_forward(x.m, x.cache, sp, one, 4, next, last, false), 0, "%s", rt_errmsg());
    for (int p = 0; p < 4; p++) {
        kv_seq alone = {0}, *ap = &alone;
        int32_t n1 = nn[p] + 1, *t1 = malloc((size_t)n1 * sizeof(int32_t));
        memcpy(t1, ref_prompt(f, "qwen2", p, NULL)->data, (size_t)nn[p] * sizeof(int32_t));
        t1[nn[p]] = next[p];
        float *row = malloc((size_t)x.V * sizeof(float));
        cr_assert_eq(dn_forward(x.m, x.cache, &ap, &n1, 1, t1, row, false), 0, "%s", rt_errmsg());
        float d = max_diff(row, last + p * x.V, (size_t)x.V);
        cr_assert(d < 1e-5f, "prompt %d: batched decode vs alone: %g", p, d);
        kv_seq_release(x.cache, &alone);
        free(row);
        free(t1);
    }
    for (int p = 0; p < 4; p++) kv_seq_release(x.cache, &s[p]);
    free(got);
    free(last);
    st_close(f);
    teardown(&x);
}

/* A forked sequence shares the prompt's blocks; both continue differently; the shared
 * partial block is copied on the first write, and each continuation's logits equal a
 * separate run. */
Test(dense_teacher, forked_sequences_copy_on_write) {
    fixture x = setup("llama", 2, 32, 8);
    st_file *f = ref_open("teacher_ref.safetensors");
    const st_tensor *ids = ref_prompt(f, "llama", 2, NULL);   /* 37 tokens: 4 full blocks + 5 */
    int32_t n = (int32_t)ids->shape[0], one = 1;
    float *a = malloc((size_t)x.V * sizeof(float)), *b = malloc((size_t)x.V * sizeof(float));
    kv_seq s = {0}, t, *sp = &s, *tp_ = &t;
    cr_assert_eq(dn_forward(x.m, x.cache, &sp, &n, 1, ids->data, a, false), 0, "%s", rt_errmsg());
    cr_assert_eq(kv_seq_fork(x.cache, &s, &t), 0);
    cr_assert_eq(kv_pool_free_blocks(x.cache), 32 - 5);
    cr_assert_eq(kv_pool_refcount(x.cache, s.blocks[4]), 2);
    int32_t ta = 11, tb = 12;
    cr_assert_eq(dn_forward(x.m, x.cache, &sp, &one, 1, &ta, a, false), 0);
    cr_assert_eq(dn_forward(x.m, x.cache, &tp_, &one, 1, &tb, b, false), 0);
    cr_assert_eq(kv_pool_free_blocks(x.cache), 32 - 6, "only the partial block was copied");
    cr_assert_eq(s.blocks[0], t.blocks[0]);
    cr_assert_neq(s.blocks[4], t.blocks[4]);
    for (int w = 0; w < 2; w++) {
        kv_seq r = {0}, *rp = &r;
        int32_t n1 = n + 1, *t1 = malloc((size_t)n1 * sizeof(int32_t));
        memcpy(t1, ids->data, (size_t)n * sizeof(int32_t));
        t1[n] = w ? tb : ta;
        float *row = malloc((size_t)x.V * sizeof(float));
        cr_assert_eq(dn_forward(x.m, x.cache, &rp, &n1, 1, t1, row, false), 0);
        float d = max_diff(row, w ? b : a, (size_t)x.V);
        cr_assert(d < 1e-5f, "continuation %d vs a separate run: %g", w, d);
        kv_seq_release(x.cache, &r);
        free(row);
        free(t1);
    }
    kv_seq_release(x.cache, &s);
    kv_seq_release(x.cache, &t);
    cr_assert_eq(kv_pool_free_blocks(x.cache), 32);
    free(a);
    free(b);
    st_close(f);
    teardown(&x);
}

Test(dense_teacher, full_cache_is_an_error_not_a_crash) {
    fixture x = setup("llama", 1, 2, 4);
    int32_t tok[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, n = 12;
    float *l = malloc((size_t)x.V * sizeof(float));
    kv_seq s = {0}, *sp = &s;
    cr_assert_eq(dn_forward(x.m, x.cache, &sp, &n, 1, tok, l, false), RT_ERANGE);
    cr_assert_eq(s.len, 0);
    kv_seq_release(x.cache, &s);
    int32_t bad = 100000, one = 1;
    cr_assert_eq(dn_forward(x.m, x.cache, &sp, &one, 1, &bad, l, false), RT_EINVAL);
    kv_seq_release(x.cache, &s);
    free(l);
    teardown(&x);
}

/* mm_linear_fwd_cols (the decode split) against mm_linear_fwd (tested against torch in the
 * student's kernel tests), with a bias, an N that is not a multiple of the block, 1..9 rows. */
Test(matmul_cols, matches_the_row_split_product) {
    tp_pool *tp;
    cr_assert_eq(tp_create(3, &tp), 0);
    int64_t N = 300, K = 70;
    float *w = malloc(N * K * sizeof(float)), *x = malloc(9 * K * sizeof(float)), *b = malloc(N * sizeof(float));
    float *y1 = malloc(9 * N * sizeof(float)), *y2 = malloc(9 * N * sizeof(float));
    uint32_t s = 12345;
    for (int64_t i = 0; i < N * K; i++) w[i] = (float)((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (int64_t i = 0; i < 9 * K; i++) x[i] = (float)((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
    for (int64_t i = 0; i < N; i++) b[i] = (float)i / N;
    for (int64_t M = 1; M <= 9; M += 4)
        for (int bias = 0; bias < 2; bias++) {
            for (int64_t i = 0; i < 9 * N; i++) y1[i] = y2[i] = NAN;
            mm_linear_fwd(y1, x, w, bias ? b : NULL, M, N, K, tp);
            mm_linear_fwd_cols(y2, x, w, bias ? b : NULL, M, N, K, tp);
            float d = max_diff(y1, y2, (size_t)(M * N));
            cr_assert(d < 1e-5f, "M = %lld, bias %d: max diff %g", (long long)M, bias, d);
        }
    free(w); free(x); free(b); free(y1); free(y2);
    tp_free(tp);
}

/* teacher/kvcache by hand: blocks allocated on demand, a fork shares them, the first write
 * into a shared block copies it (contents kept), a full pool is RT_ERANGE, release returns all. */
Test(kvcache, fork_shares_and_copy_on_write_copies_only_what_is_written) {
    kv_pool *p;
    cr_assert_eq(kv_pool_create(4, 2, 3, &p), 0);
    kv_seq a = {0}, b;
    cr_assert_eq(kv_seq_reserve(p, &a, 3), 0);   /* positions 0..2: blocks 0, 1 */
    cr_assert_eq(a.n_blocks, 2);
    float *d = kv_pool_data(p);
    for (int i = 0; i < 3; i++) d[a.blocks[1] * 3 + i] = 7.0f + i;
    a.len = 3;
    cr_assert_eq(kv_seq_fork(p, &a, &b), 0);
    cr_assert_eq(b.len, 3);
    cr_assert_eq(kv_pool_refcount(p, a.blocks[0]), 2);
    cr_assert_eq(kv_pool_free_blocks(p), 2);
    cr_assert_eq(kv_seq_reserve(p, &b, 4), 0);   /* writes position 3: block 1 is copied, block 0 stays shared */
    cr_assert_eq(b.blocks[0], a.blocks[0]);
    cr_assert_neq(b.blocks[1], a.blocks[1]);
    for (int i = 0; i < 3; i++) cr_assert_eq(d[b.blocks[1] * 3 + i], 7.0f + i, "copied contents");
    cr_assert_eq(kv_pool_refcount(p, a.blocks[1]), 1);
    cr_assert_eq(kv_pool_free_blocks(p), 1);
    cr_assert_eq(kv_seq_reserve(p, &a, 4), 0, "a owns its block 1 alone now: no copy");
    cr_assert_eq(kv_pool_free_blocks(p), 1);
    cr_assert_eq(kv_seq_reserve(p, &a, 8), RT_ERANGE, "needs 2 more blocks, 1 free");
    kv_seq_release(p, &a);
    kv_seq_release(p, &b);
    cr_assert_eq(kv_pool_free_blocks(p), 4);
    kv_pool_free(p);
    kv_pool *q;
    cr_assert_eq(kv_pool_create(0, 2, 3, &q), RT_EINVAL);
    kv_pool_free(NULL);
}

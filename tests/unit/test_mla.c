/* kernels/mla and kernels/yarn against torch / transformers (tests/ref/gen_deepseek.py).
 * MLA: both paths against attention computed the plain way in torch (decompressed K/V);
 * tolerance 2e-5 absolute on outputs of magnitude ~1 (f32 sums of ~40 products, the
 * absorbed path re-associates them). YaRN: inv_freq and scales to 1e-6 relative (f32 pow
 * may differ by an ulp between libm and torch). */
#include <math.h>
#include <stdint.h>

#include "core/threadpool.h"
#include "kernels/mla.h"
#include "kernels/rope.h"
#include "testutil.h"

typedef int (*mla_fn)(const mla_dims *, const float *, int64_t, const float *, int64_t, const float *, const int32_t *,
                      float *, tp_pool *);

static void check_mla(mla_fn fn, int threads) {
    st_file *f = ref_open("deepseek_mla.safetensors");
    const int64_t *dm = ref_tensor(f, "dims")->data;
    mla_dims d = {.n_heads = dm[0], .nope_dim = dm[1], .rope_dim = dm[2], .v_dim = dm[3], .kv_rank = dm[4],
                  .scale = *(const float *)ref_tensor(f, "scale")->data};
    int64_t T = dm[5];
    const st_tensor *q = ref_tensor(f, "q"), *want = ref_tensor(f, "out");
    int64_t n = q->shape[0];
    float *out = malloc(want->nelem * sizeof *out);
    for (size_t i = 0; i < want->nelem; i++) out[i] = NAN;   /* poison */
    tp_pool *pool = NULL;
    if (threads > 1) cr_assert_eq(tp_create(threads, &pool), 0);
    cr_assert_eq(fn(&d, q->data, n, ref_tensor(f, "latent")->data, T, ref_tensor(f, "kv_b")->data,
                    ref_tensor(f, "ctx")->data, out, pool), 0, "%s", rt_errmsg());
    const float *w = want->data;
    for (size_t i = 0; i < want->nelem; i++)
        cr_assert(fabsf(out[i] - w[i]) <= 2e-5f, "out[%zu] = %.7g, want %.7g", i, out[i], w[i]);
    tp_free(pool);
    free(out);
    st_close(f);
}

Test(mla, naive_matches_torch) { check_mla(mla_attn_naive, 1); }
Test(mla, absorbed_matches_torch) { check_mla(mla_attn_absorbed, 1); }
Test(mla, both_paths_match_torch_threaded) {
    check_mla(mla_attn_naive, 3);
    check_mla(mla_attn_absorbed, 2);
}

Test(mla, rejects_context_beyond_cache) {
    mla_dims d = {.n_heads = 1, .nope_dim = 2, .rope_dim = 2, .v_dim = 2, .kv_rank = 2, .scale = 1};
    float q[4] = {0}, lat[8] = {0}, kvb[8] = {0}, out[2];
    int32_t ctx[1] = {3};
    cr_assert_eq(mla_attn_naive(&d, q, 1, lat, 2, kvb, ctx, out, NULL), RT_EINVAL);
    cr_assert_eq(mla_attn_absorbed(&d, q, 1, lat, 2, kvb, ctx, out, NULL), RT_EINVAL);
}

static void check_yarn(const char *tag, const char *cfg_dir) {
    st_file *f = ref_open("deepseek_ref.safetensors");
    char nm[64], path[4096];
    snprintf(path, sizeof path, "%s/deepseek/%s", getenv("REF_DIR"), cfg_dir);
    mc_config c;
    cr_assert_eq(mc_load(path, &c), 0, "%s", rt_errmsg());
    float inv[YARN_MAX_DIM / 2], cs;
    cr_assert_eq(yarn_init(&c.rope, c.qk_rope_head_dim, inv, &cs), 0, "%s", rt_errmsg());
    snprintf(nm, sizeof nm, "yarn.%s.inv_freq", tag);
    const st_tensor *t = ref_tensor(f, nm);
    cr_assert_eq((int64_t)t->nelem, c.qk_rope_head_dim / 2);
    const float *w = t->data;
    for (size_t i = 0; i < t->nelem; i++)
        cr_assert(fabsf(inv[i] - w[i]) <= 1e-6f * fabsf(w[i]), "%s inv_freq[%zu] = %.9g, want %.9g", tag, i, inv[i], w[i]);
    snprintf(nm, sizeof nm, "yarn.%s.cs_scale", tag);
    float want_cs = *(const float *)ref_tensor(f, nm)->data;
    cr_assert(fabsf(cs - want_cs) <= 1e-6f * want_cs, "%s cos/sin scale %.9g, want %.9g", tag, cs, want_cs);
    snprintf(nm, sizeof nm, "yarn.%s.softmax_scale", tag);
    float want_s = *(const float *)ref_tensor(f, nm)->data;
    float s = (float)yarn_softmax_scale(&c.rope, c.qk_nope_head_dim + c.qk_rope_head_dim);
    cr_assert(fabsf(s - want_s) <= 1e-6f * want_s, "%s softmax scale %.9g, want %.9g", tag, s, want_s);
    st_close(f);
}

Test(yarn, matches_transformers_with_mscale_all_dim) { check_yarn("f32", "f32"); }
Test(yarn, matches_transformers_preset) { check_yarn("fp8", "fp8"); }

/* Hand-worked interleaved rotation: pairs (x0,x1),(x2,x3) by angles a0, a1, output de-interleaved. */
Test(yarn, interleaved_rotation_hand_worked) {
    float inv[2] = {1.0f, 0.5f}, cs[2], sn[2];
    int32_t pos[1] = {2};
    yarn_tables(cs, sn, pos, 1, inv, 2, 1.5f);
    float x[4] = {1, 2, 3, 4};
    yarn_rope_apply(x, 1, 4, 1, 0, 4, cs, sn, true, NULL);
    double c0 = cos(2.0) * 1.5, s0 = sin(2.0) * 1.5, c1 = cos(1.0) * 1.5, s1 = sin(1.0) * 1.5;
    double want[4] = {1 * c0 - 2 * s0, 3 * c1 - 4 * s1, 2 * c0 + 1 * s0, 4 * c1 + 3 * s1};
    for (int i = 0; i < 4; i++) cr_assert(fabs(x[i] - want[i]) < 1e-5, "x[%d] = %g, want %g", i, x[i], want[i]);
}

/* kernels/loss kd_fused (logit distillation from a stored top-k) against torch autograd in
 * float64 on the same formula (tests/ref/gen_kd.py), for each loss kind at T = 1 and 2 and
 * chunk sizes that split the rows unevenly; against central finite differences of its own
 * loss; alpha = 0 against ce_fused bit for bit; and its input checks.
 * Tolerance: loss 1e-5 relative, gradients 1e-5 relative to the largest element (f32 logits
 * over D = 16 are good to ~1e-7; the rest is double). Finite differences: step 1e-2 on h in
 * f32, error O(step²) and f32 rounding of the loss (~1e-7 · loss / step): 2e-3 relative. */
#include <math.h>

#include "kernels/loss.h"
#include "kernels/matmul.h"
#include "testutil.h"

typedef struct {
    st_file *f;
    int64_t M, D, V, K;
    const float *h, *w;
    const int32_t *target;
    int64_t count;
    kd_spec kd;
} kd_case;

static void load(kd_case *c, kd_kind kind, double T) {
    c->f = ref_open("kd.safetensors");
    const st_tensor *th = ref_tensor(c->f, "kd_h"), *tw = ref_tensor(c->f, "kd_w"), *ti = ref_tensor(c->f, "kd_ids");
    c->M = th->shape[0];
    c->D = th->shape[1];
    c->V = tw->shape[0];
    c->K = ti->shape[1];
    c->h = th->data;
    c->w = tw->data;
    c->target = ref_tensor(c->f, "kd_target")->data;
    c->count = 0;
    for (int64_t i = 0; i < c->M; i++) c->count += c->target[i] >= 0;
    double hp[2];
    memcpy(hp, ref_tensor(c->f, "kd_hp")->data, sizeof hp);
    c->kd = (kd_spec){.kind = kind, .alpha = hp[0], .temperature = T, .beta = kind == KD_JSD ? hp[1] : 0, .k = (int)c->K,
                      .top_ids = ti->data, .top_lps = ref_tensor(c->f, "kd_lps")->data,
                      .top_n = ref_tensor(c->f, "kd_n")->data};
}

static double max_abs(const float *x, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

static void run_kd(kd_kind kind, const char *name, double T, int64_t chunk, int threads) {
    kd_case c;
    load(&c, kind, T);
    char key[64];
    double want, want_kd;
    snprintf(key, sizeof key, "%s_loss", name);
    memcpy(&want, ref_tensor(c.f, key)->data, 8);
    snprintf(key, sizeof key, "%s_kd", name);
    memcpy(&want_kd, ref_tensor(c.f, key)->data, 8);
    snprintf(key, sizeof key, "%s_dh", name);
    const float *wdh = ref_tensor(c.f, key)->data;
    snprintf(key, sizeof key, "%s_dw", name);
    const float *wdw = ref_tensor(c.f, key)->data;
    int64_t M = c.M, D = c.D, V = c.V;
    mm_blas_single_thread();
    tp_pool *pool = NULL;
    if (threads > 1) cr_assert_eq(tp_create(threads, &pool), 0);
    ce_workspace ws;
    cr_assert_eq(ce_workspace_init(&ws, chunk, V, D), 0);
    float *dh = malloc((size_t)(M * D) * sizeof *dh), *dw = calloc((size_t)(V * D), sizeof *dw);
    for (int64_t i = 0; i < M * D; i++) dh[i] = NAN;
    double loss, kd, loss_only;
    cr_assert_eq(kd_fused(&loss, NULL, &kd, dh, dw, c.h, c.w, c.target, M, 1.0f / (float)c.count, &c.kd, &ws, pool), 0, "%s",
                 rt_errmsg());
    cr_assert_eq(kd_fused(&loss_only, NULL, NULL, NULL, NULL, c.h, c.w, c.target, M, 1.0f, &c.kd, &ws, pool), 0);
    cr_expect_lt(fabs(loss - want), 1e-5 * fabs(want), "%s chunk %lld: loss %.9g, torch %.9g", name, (long long)chunk, loss, want);
    cr_expect_lt(fabs(kd - want_kd), 1e-5 * fabs(want_kd) + 1e-9, "%s: D %.9g, torch %.9g", name, kd, want_kd);
    cr_expect_eq(loss, loss_only);
    double mdh = 0, mdw = 0, mxh = max_abs(wdh, M * D), mxw = max_abs(wdw, V * D);
    for (int64_t i = 0; i < M * D; i++) mdh = fmax(mdh, fabs((double)dh[i] - wdh[i]));
    for (int64_t i = 0; i < V * D; i++) mdw = fmax(mdw, fabs((double)dw[i] - wdw[i]));
    cr_expect_lt(mdh, 1e-5 * mxh, "%s chunk %lld: dh differs by %g (scale %g)", name, (long long)chunk, mdh, mxh);
    cr_expect_lt(mdw, 1e-5 * mxw, "%s chunk %lld: dw differs by %g (scale %g)", name, (long long)chunk, mdw, mxw);
    free(dh);
    free(dw);
    ce_workspace_free(&ws);
    tp_free(pool);
    st_close(c.f);
}

Test(kernels_kd, forward_kl_matches_torch) { run_kd(KD_FORWARD, "forward_t1", 1, 7, 2); run_kd(KD_FORWARD, "forward_t2", 2, 64, 1); }
Test(kernels_kd, reverse_kl_matches_torch) { run_kd(KD_REVERSE, "reverse_t1", 1, 1, 1); run_kd(KD_REVERSE, "reverse_t2", 2, 7, 3); }
Test(kernels_kd, jsd_matches_torch) { run_kd(KD_JSD, "jsd_t1", 1, 64, 2); run_kd(KD_JSD, "jsd_t2", 2, 5, 1); }
Test(kernels_kd, uld_matches_torch) { run_kd(KD_ULD, "uld_t1", 1, 7, 1); run_kd(KD_ULD, "uld_t2", 2, 64, 2); }

/* ∂(Σ loss)/∂h against central differences of the loss itself, for a few elements. */
static void fd_check(kd_kind kind, double T) {
    kd_case c;
    load(&c, kind, T);
    int64_t M = c.M, D = c.D, V = c.V;
    mm_blas_single_thread();
    ce_workspace ws;
    cr_assert_eq(ce_workspace_init(&ws, 16, V, D), 0);
    float *h = malloc((size_t)(M * D) * sizeof *h), *dh = malloc((size_t)(M * D) * sizeof *dh),
          *dw = calloc((size_t)(V * D), sizeof *dw);
    memcpy(h, c.h, (size_t)(M * D) * sizeof *h);
    double loss;
    cr_assert_eq(kd_fused(&loss, NULL, NULL, dh, dw, h, c.w, c.target, M, 1.0f, &c.kd, &ws, NULL), 0);
    const float step = 1e-2f;
    for (int64_t e = 3; e < M * D; e += 37) {
        if (c.target[e / D] < 0) continue;
        double lp, lm;
        float x = h[e];
        h[e] = x + step;
        kd_fused(&lp, NULL, NULL, NULL, NULL, h, c.w, c.target, M, 1.0f, &c.kd, &ws, NULL);
        h[e] = x - step;
        kd_fused(&lm, NULL, NULL, NULL, NULL, h, c.w, c.target, M, 1.0f, &c.kd, &ws, NULL);
        h[e] = x;
        double fd = (lp - lm) / (2.0 * (double)step);
        cr_expect_lt(fabs(fd - dh[e]), 2e-3 * fmax(1.0, fabs(fd)), "kind %d T %g element %lld: fd %.7g, dh %.7g", kind, T,
                     (long long)e, fd, (double)dh[e]);
    }
    free(h);
    free(dh);
    free(dw);
    ce_workspace_free(&ws);
    st_close(c.f);
}

/* ULD's |·| has kinks where a student and teacher probability meet; random inputs miss them. */
Test(kernels_kd, gradients_match_finite_differences) {
    fd_check(KD_FORWARD, 1);
    fd_check(KD_REVERSE, 2);
    fd_check(KD_JSD, 1.5);
    fd_check(KD_ULD, 1);
}

Test(kernels_kd, alpha_zero_is_cross_entropy_bit_for_bit) {
    kd_case c;
    load(&c, KD_FORWARD, 1);
    c.kd.alpha = 0;
    int64_t M = c.M, D = c.D, V = c.V;
    mm_blas_single_thread();
    ce_workspace ws;
    cr_assert_eq(ce_workspace_init(&ws, 7, V, D), 0);
    float *dh1 = malloc((size_t)(M * D) * sizeof(float)), *dh2 = malloc((size_t)(M * D) * sizeof(float));
    float *dw1 = calloc((size_t)(V * D), sizeof(float)), *dw2 = calloc((size_t)(V * D), sizeof(float));
    double l1, l2;
    ce_fused(&l1, dh1, dw1, c.h, c.w, c.target, M, 0.03f, &ws, NULL);
    cr_assert_eq(kd_fused(&l2, NULL, NULL, dh2, dw2, c.h, c.w, c.target, M, 0.03f, &c.kd, &ws, NULL), 0);
    /* the KD path computes exponentials in double: equal within f32 rounding, not bit for bit;
     * the trainer calls ce_fused itself when alpha is 0 (tests/ref/test_train_kd.py) */
    cr_expect_lt(fabs(l1 - l2), 1e-6 * l1);
    double m = 0;
    for (int64_t i = 0; i < M * D; i++) m = fmax(m, fabs((double)dh1[i] - dh2[i]));
    cr_expect_lt(m, 1e-6 * max_abs(dh1, M * D));
    free(dh1); free(dh2); free(dw1); free(dw2);
    ce_workspace_free(&ws);
    st_close(c.f);
}

Test(kernels_kd, bad_input_is_one_clear_error) {
    kd_case c;
    load(&c, KD_FORWARD, 1);
    int32_t ids[20 * 64];
    cr_assert_leq(c.M * c.K, 20 * 64);
    memcpy(ids, c.kd.top_ids, (size_t)(c.M * c.K) * sizeof *ids);
    ids[0] = (int32_t)c.V + 5;   /* row 0 has all K entries and a target */
    cr_assert_geq(c.target[0], 0);
    c.kd.top_ids = ids;
    cr_expect_eq(kd_check(&c.kd, c.target, c.M, c.V), RT_EINVAL);
    cr_expect(strstr(rt_errmsg(), "--kd-loss uld"), "%s", rt_errmsg());
    c.kd.kind = KD_ULD;   /* ULD never reads the ids: another vocabulary is fine */
    cr_expect_eq(kd_check(&c.kd, c.target, c.M, c.V), 0);
    c.kd.kind = KD_FORWARD;
    ids[0] = ids[1];
    cr_expect_eq(kd_check(&c.kd, c.target, c.M, c.V), RT_EINVAL);
    kd_kind k;
    double b;
    cr_expect_eq(kd_parse_kind("jsd:0.5", &k, &b), 0);
    cr_expect(k == KD_JSD && b == 0.5);
    cr_expect_eq(kd_parse_kind("jsd:1", &k, &b), RT_EINVAL);
    cr_expect_eq(kd_parse_kind("kl", &k, &b), RT_EINVAL);
    st_close(c.f);
}

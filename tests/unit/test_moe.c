/* kernels/moe against transformers' DeepseekV3TopkRouter (tests/ref/gen_deepseek.py) and a
 * hand-worked expert combine. Router: expert ids exact; weights to 1e-6 (sigmoid and a sum
 * of at most 8 terms in f32, one ulp apart at most). */
#include <math.h>
#include <stdint.h>

#include "kernels/convert.h"
#include "kernels/moe.h"
#include "testutil.h"

static void sort_by_id(int32_t *idx, float *w, int64_t k) {
    for (int64_t i = 1; i < k; i++)
        for (int64_t j = i; j > 0 && idx[j - 1] > idx[j]; j--) {
            int32_t ti = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = ti;
            float tw = w[j]; w[j] = w[j - 1]; w[j - 1] = tw;
        }
}

static void check_case(const st_file *f, int k) {
    char nm[64];
#define T(s) (snprintf(nm, sizeof nm, "c%d.%s", k, s), ref_tensor(f, nm))
    const st_tensor *lt = T("logits"), *cfgt = T("cfg"), *idxt = T("idx"), *wt = T("w");
    const int64_t *cv = cfgt->data;
    moe_router_cfg c = {.n_experts = cv[0], .n_group = cv[1], .topk_group = cv[2], .top_k = cv[3],
                        .norm_topk_prob = cv[4] != 0, .routed_scaling_factor = *(const float *)T("scale")->data};
    int64_t N = lt->shape[0], K = c.top_k;
    int32_t *idx = malloc(N * K * sizeof *idx);
    float *w = malloc(N * K * sizeof *w);
    cr_assert_eq(moe_route(&c, lt->data, T("bias")->data, N, idx, w), 0, "%s", rt_errmsg());
    const int32_t *want_i = idxt->data;
    const float *want_w = wt->data;
    for (int64_t t = 0; t < N; t++) {
        sort_by_id(idx + t * K, w + t * K, K);
        for (int64_t j = 0; j < K; j++) {
            cr_assert_eq(idx[t * K + j], want_i[t * K + j], "case %d token %lld slot %lld: expert %d, want %d", k,
                         (long long)t, (long long)j, idx[t * K + j], want_i[t * K + j]);
            cr_assert(fabsf(w[t * K + j] - want_w[t * K + j]) <= 1e-6f, "case %d token %lld: weight %g, want %g", k,
                      (long long)t, w[t * K + j], want_w[t * K + j]);
        }
    }
#undef T
    free(idx);
    free(w);
}

Test(moe, router_group_top2_sum_beats_higher_max) {
    st_file *f = ref_open("deepseek_router.safetensors");
    check_case(f, 0);
    st_close(f);
}

Test(moe, router_bias_selects_but_does_not_weight) {
    st_file *f = ref_open("deepseek_router.safetensors");
    check_case(f, 1);
    st_close(f);
}

Test(moe, router_matches_transformers_on_random_logits) {
    st_file *f = ref_open("deepseek_router.safetensors");
    for (int k = 2; k <= 5; k++) check_case(f, k);
    st_close(f);
}

Test(moe, router_rejects_impossible_shapes) {
    moe_router_cfg c = {.n_experts = 8, .n_group = 3, .topk_group = 1, .top_k = 2, .routed_scaling_factor = 1};
    cr_assert_eq(moe_router_check(&c), RT_EINVAL);
    c.n_group = 8;   /* one expert per group: no top-2 */
    cr_assert_eq(moe_router_check(&c), RT_EINVAL);
    c.n_group = 4;
    c.top_k = 3;     /* 1 kept group of 2 experts cannot give 3 */
    cr_assert_eq(moe_router_check(&c), RT_EINVAL);
    c.top_k = 2;
    cr_assert_eq(moe_router_check(&c), 0);
}

/* Hand-worked: dim 2, inter 1, two experts; out += w * down(silu(gate x) * up x). */
Test(moe, experts_combine_hand_worked) {
    float g0[] = {1, 0}, u0[] = {0, 1}, d0[] = {1, 2};     /* gate = x0, up = x1, down: [1, 2] */
    float g1[] = {0, 1}, u1[] = {1, 1}, d1[] = {-1, 1};    /* gate = x1, up = x0 + x1 */
    moe_expert ex[2] = {{.w1 = g0, .w3 = u0, .w2 = d0}, {.w1 = g1, .w3 = u1, .w2 = d1}};
    float x[] = {1, 2, -1, 3};
    int32_t idx[] = {0, 1, 1, 0};
    float wt[] = {0.5f, 2.0f, 1.0f, 0.25f};
    float out[4] = {10, 20, 30, 40};
    cr_assert_eq(moe_experts_fwd(ex, 2, 2, 1, x, 2, idx, wt, 2, out, NULL), 0);
    double s = 1 / (1 + exp(-1.0)), s2 = 2 / (1 + exp(-2.0)), s3 = 3 / (1 + exp(-3.0)), sm1 = -1 / (1 + exp(1.0));
    double a0 = s * 2, b0 = s2 * 3;           /* token 0: expert 0 act, expert 1 act */
    double b1 = s3 * 2, a1 = sm1 * 3;         /* token 1 */
    double want[4] = {10 + 0.5 * a0 - 2 * b0, 20 + 0.5 * 2 * a0 + 2 * b0, 30 - 1 * b1 + 0.25 * a1,
                      40 + 1 * b1 + 0.25 * 2 * a1};
    for (int i = 0; i < 4; i++) cr_assert(fabs(out[i] - want[i]) < 1e-5, "out[%d] = %g, want %g", i, out[i], want[i]);
    int32_t bad[] = {0, 2, 1, 0};
    cr_assert_eq(moe_experts_fwd(ex, 2, 2, 1, x, 2, bad, wt, 2, out, NULL), RT_EINVAL);
}

/* The capacity-padded expert-parallel dispatch, worked by hand: 5 experts over 2 ranks (rank 0
 * holds 0, 2, 4 as local 0, 1, 2; rank 1 holds 1, 3), 3 tokens of top 2 (the last slot routed
 * nowhere), slabs of 6 rows (3 tokens × min(2, 3)), slots numbered from 6. */
Test(moe, slab_pack_hand_worked) {
    int32_t idx[] = {4, 1, 0, 2, 3, -1}, slot[12], lexp[12], comb[6];
    cr_assert_eq(moe_slab_pack(idx, 3, 2, 5, 2, 6, 3, 6, slot, lexp, comb), 0, "%s", rt_errmsg());
    int32_t want_slot[] = {6, 8, 9, 0, 0, 0, 7, 10, 0, 0, 0, 0};
    int32_t want_lexp[] = {2, 0, 1, 3, 3, 3, 0, 1, 3, 3, 3, 3};
    int32_t want_comb[] = {0, 6, 1, 2, 7, -1};
    cr_assert_arr_eq(slot, want_slot, sizeof slot);
    cr_assert_arr_eq(lexp, want_lexp, sizeof lexp);
    cr_assert_arr_eq(comb, want_comb, sizeof comb);
    /* slabs smaller than the most one rank can be sent (3 tokens × 2 slots) */
    cr_assert_eq(moe_slab_pack(idx, 3, 2, 5, 2, 5, 3, 6, slot, lexp, comb), RT_EINVAL);
    cr_assert(strstr(rt_errmsg(), "need slabs of 6 rows; 5 given"), "%s", rt_errmsg());
}

/* kernels/sample: the filters against their definitions (chi-square over 40000 draws from
 * fixed logits, expected probabilities worked out here from the definitions in
 * kernels/sample.h), logprobs against torch.log_softmax (tests/ref/gen_teacher.py, |Δ| <
 * 1e-5: double accumulation, f32 result), the counter-based RNG. */
#include <math.h>
#include <stdint.h>

#include "kernels/sample.h"
#include "testutil.h"

#define NV 8
/* not sorted, one tie (ids 2 and 6), spread so that every filter cuts somewhere */
static const float LOGITS[NV] = {0.5f, 2.0f, 1.0f, -1.0f, 1.5f, -3.0f, 1.0f, 0.0f};

/* softmax(l / t) in the order of decreasing probability (ties by lower id): order[] */
static void sorted_softmax(double t, double *p, int *order) {
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < NV; i++) mx = fmax(mx, LOGITS[i] / t);
    for (int i = 0; i < NV; i++) s += (p[i] = exp(LOGITS[i] / t - mx));
    for (int i = 0; i < NV; i++) p[i] /= s;
    for (int i = 0; i < NV; i++) order[i] = i;
    for (int i = 0; i < NV; i++)   /* selection sort: plain and obviously right */
        for (int j = i + 1; j < NV; j++)
            if (p[order[j]] > p[order[i]] || (p[order[j]] == p[order[i]] && order[j] < order[i])) {
                int x = order[i];
                order[i] = order[j];
                order[j] = x;
            }
}

/* Expected distribution: the definitions applied one after the other. */
static void expected(const smp_params *sp, double *want) {
    double p[NV];
    int order[NV], keep = NV;
    sorted_softmax(sp->temperature, p, order);
    if (sp->top_k > 0 && sp->top_k < keep) keep = sp->top_k;
    if (sp->top_p < 1) {
        double tot = 0, cum = 0;
        for (int i = 0; i < keep; i++) tot += p[order[i]];
        int k = 0;
        while (k < keep && cum < sp->top_p * tot) cum += p[order[k++]];
        keep = k;
    }
    if (sp->min_p > 0) {
        int k = 0;
        while (k < keep && p[order[k]] >= sp->min_p * p[order[0]]) k++;
        keep = k;
    }
    double tot = 0;
    for (int i = 0; i < NV; i++) want[i] = 0;
    for (int i = 0; i < keep; i++) tot += p[order[i]];
    for (int i = 0; i < keep; i++) want[order[i]] = p[order[i]] / tot;
}

static void chi_square(smp_params sp, int expect_kept) {
    double want[NV];
    expected(&sp, want);
    int kept = 0;
    for (int i = 0; i < NV; i++) kept += want[i] > 0;
    cr_assert_eq(kept, expect_kept, "definition keeps %d tokens, the test expects %d", kept, expect_kept);
    /* the kernel's own distribution */
    double got[NV];
    char ws[4096];
    cr_assert_eq(smp_probs(LOGITS, NV, &sp, ws, got), 0, "%s", rt_errmsg());
    for (int i = 0; i < NV; i++) cr_assert(fabs(got[i] - want[i]) < 1e-12, "token %d: %g vs %g", i, got[i], want[i]);
    /* draws */
    const int N = 40000;
    int count[NV] = {0};
    for (int d = 0; d < N; d++) {
        int32_t tok;
        cr_assert_eq(smp_sample(LOGITS, NV, &sp, smp_uniform(1234, 7, (uint64_t)d), ws, &tok), 0);
        cr_assert(tok >= 0 && tok < NV);
        count[tok]++;
    }
    double x2 = 0;
    for (int i = 0; i < NV; i++) {
        if (want[i] == 0) {
            cr_assert_eq(count[i], 0, "token %d was filtered out but drawn %d times", i, count[i]);
            continue;
        }
        double e = want[i] * N;
        x2 += (count[i] - e) * (count[i] - e) / e;
    }
    /* chi-square quantiles at 1 − 1e-4 for df = 1..7 */
    static const double crit[] = {0, 15.14, 18.42, 21.11, 23.51, 25.74, 27.86, 29.88};
    if (kept > 1) cr_assert(x2 < crit[kept - 1], "chi-square %.2f over %d tokens (critical %.2f)", x2, kept, crit[kept - 1]);
}

Test(sample, plain_softmax_matches_definition) { chi_square((smp_params){1.0f, 0, 1.0f, 0.0f}, 8); }
Test(sample, temperature_and_top_k_match_definition) { chi_square((smp_params){0.7f, 3, 1.0f, 0.0f}, 3); }
Test(sample, top_p_matches_definition) { chi_square((smp_params){1.3f, 0, 0.8f, 0.0f}, 4); }
Test(sample, min_p_matches_definition) { chi_square((smp_params){1.0f, 0, 1.0f, 0.2f}, 5); }
Test(sample, filters_compose_in_order) { chi_square((smp_params){0.9f, 6, 0.9f, 0.12f}, 5); }

Test(sample, top_k_tie_keeps_lower_id) {
    double want[NV];
    smp_params sp = {1.0f, 3, 1.0f, 0.0f};   /* ids 1, 4, then the tie 2/6: 2 is kept */
    char ws[4096];
    cr_assert_eq(smp_probs(LOGITS, NV, &sp, ws, want), 0);
    cr_assert(want[1] > 0 && want[4] > 0 && want[2] > 0 && want[6] == 0 && want[0] == 0);
}

Test(sample, greedy_takes_the_first_maximum) {
    float l[5] = {0.1f, 3.0f, -2.0f, 3.0f, 1.0f};
    char ws[256];
    int32_t tok = -1;
    cr_assert_eq(smp_sample(l, 5, &SMP_GREEDY, 0.99, ws, &tok), 0);
    cr_assert_eq(tok, 1);
    smp_params k1 = {1.0f, 1, 1.0f, 0.0f};
    cr_assert_eq(smp_sample(l, 5, &k1, 0.5, ws, &tok), 0);
    cr_assert_eq(tok, 1);
}

Test(sample, bad_parameters_are_errors) {
    char ws[4096];
    int32_t tok;
    smp_params bad[] = {{-1.0f, 0, 1.0f, 0.0f}, {NAN, 0, 1.0f, 0.0f}, {1.0f, -2, 1.0f, 0.0f},
                        {1.0f, 0, 0.0f, 0.0f}, {1.0f, 0, 1.5f, 0.0f}, {1.0f, 0, 1.0f, -0.1f}, {1.0f, 0, 1.0f, 2.0f}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(smp_sample(LOGITS, NV, &bad[i], 0.5, ws, &tok), RT_EINVAL, "case %zu", i);
    smp_params ok = {1.0f, 0, 1.0f, 0.0f};
    cr_assert_eq(smp_sample(LOGITS, NV, &ok, 1.0, ws, &tok), RT_EINVAL, "u = 1");
}

Test(sample, logprobs_match_torch_log_softmax) {
    st_file *f = ref_open("teacher_ref.safetensors");
    const st_tensor *lt = ref_tensor(f, "sample.logits");
    const float *lg = lt->data, *want = ref_tensor(f, "sample.logprobs")->data;
    int64_t R = lt->shape[0], V = lt->shape[1];
    for (int64_t r = 0; r < R; r++) {
        const float *row = lg + r * V, *w = want + r * V;
        float d = 0;
        for (int64_t i = 0; i < V; i++) d = fmaxf(d, fabsf(smp_logprob(row, V, (int32_t)i) - w[i]));
        cr_assert(d < 1e-5f, "row %lld: max |dlogprob| = %g", (long long)r, d);
        int32_t ids[7];
        float lp[7];
        smp_top_logprobs(row, V, 7, ids, lp);
        for (int j = 0; j < 7; j++) {
            cr_assert(fabsf(lp[j] - w[ids[j]]) < 1e-5f);
            int above = 0;   /* exactly j tokens have a larger logprob */
            for (int64_t i = 0; i < V; i++) above += w[i] > w[ids[j]];
            cr_assert_eq(above, j, "rank of top-%d", j);
        }
    }
    st_close(f);
}

Test(sample, rng_is_a_function_of_seed_stream_and_step) {
    cr_assert_eq(smp_bits(1, 2, 3), smp_bits(1, 2, 3));
    cr_assert_neq(smp_bits(1, 2, 3), smp_bits(1, 3, 2));
    cr_assert_neq(smp_bits(1, 2, 3), smp_bits(2, 2, 3));
    cr_assert_neq(smp_bits(0, 0, 0), smp_bits(0, 0, 1));
    double s = 0;
    for (int i = 0; i < 100000; i++) {
        double u = smp_uniform(99, 0, (uint64_t)i);
        cr_assert(u >= 0 && u < 1);
        s += u;
    }
    cr_assert(fabs(s / 100000 - 0.5) < 0.005, "mean %g", s / 100000);
}

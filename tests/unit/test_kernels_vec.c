/* kernels/cpu/vec_int.h: the 8-lane exp against libm's exp in double (an independent
 * reference), at ~1.8 million points spread over its whole finite range [-87.33, 88.37] and at
 * ±x for every 256th float x in [2^-30, 1]; tolerance 2 ulp of the correctly rounded
 * float result. Outside the range: 0 below (true values are subnormal), +inf above, NaN stays
 * NaN, exp(0) = 1 exactly. The vector helpers agree with their plain-C fallback. Skipped where
 * the CPU lacks AVX2 + FMA. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/vec_int.h"
#include "student/rng.h"
#include "testutil.h"

#ifdef RT_VEC_X86
VEC_AVX2 static void exp8_of(const float *in, float *out) {
    _mm256_storeu_ps(out, vec_exp8(_mm256_loadu_ps(in)));
}

static double ulp_err(float got, float x) {
    double ref = exp((double)x);
    float rf = (float)ref;
    double ulp = (double)nextafterf(rf, INFINITY) - (double)rf;
    return fabs((double)got - ref) / ulp;
}

/* worst error over [lo, hi) in steps of 1e-4 + 1e-6·|x| */
static double worst_over(float lo, float hi) {
    double worst = 0;
    float in[8], out[8];
    int k = 0;
    for (float x = lo; x < hi; x += 1e-4f + fabsf(x) * 1e-6f) {
        in[k++] = x;
        if (k == 8) {
            exp8_of(in, out);
            for (int l = 0; l < 8; l++) worst = fmax(worst, ulp_err(out[l], in[l]));
            k = 0;
        }
    }
    return worst;
}

/* worst error over ±x for every 64th float x in [2^-30, 1] */
static double worst_near_zero(void) {
    double worst = 0;
    float in[8], out[8], one = 1.0f, tiny = 0x1p-30f;
    uint32_t b0, b1;
    memcpy(&b0, &tiny, 4), memcpy(&b1, &one, 4);
    for (uint32_t b = b0; b <= b1; b += 256) {
        float x;
        memcpy(&x, &b, 4);
        for (int l = 0; l < 8; l += 2) in[l] = x, in[l + 1] = -x;
        exp8_of(in, out);
        worst = fmax(worst, fmax(ulp_err(out[0], in[0]), ulp_err(out[1], in[1])));
    }
    return worst;
}
#endif

Test(kernels_vec, exp8_within_2_ulp_of_exp_in_double) {
#ifdef RT_VEC_X86
    if (!vec_avx2()) cr_skip_test("skipped: this CPU has no AVX2 + FMA");
    double w = worst_over(-87.33f, 88.37f);
    cr_expect_leq(w, 2.0, "worst error over the range %.3f ulp", w);
    w = worst_near_zero();
    cr_expect_leq(w, 2.0, "worst error over [-1, 1] %.3f ulp", w);
#else
    cr_skip_test("skipped: not x86-64");
#endif
}

Test(kernels_vec, exp8_edges) {
#ifdef RT_VEC_X86
    if (!vec_avx2()) cr_skip_test("skipped: this CPU has no AVX2 + FMA");
    float in[8] = {-100.0f, -88.0f, 89.0f, 1000.0f, NAN, 0.0f, -INFINITY, INFINITY}, out[8];
    exp8_of(in, out);
    cr_expect_eq(out[0], 0.0f);
    cr_expect_eq(out[1], 0.0f);
    cr_expect(isinf(out[2]) && out[2] > 0);
    cr_expect(isinf(out[3]) && out[3] > 0);
    cr_expect(isnan(out[4]));
    cr_expect_eq(out[5], 1.0f);
    cr_expect_eq(out[6], 0.0f);
    cr_expect(isinf(out[7]) && out[7] > 0);
#else
    cr_skip_test("skipped: not x86-64");
#endif
}

/* softmax pieces: AVX2 and plain C on the same random rows of every length 1..40 */
Test(kernels_vec, helpers_match_plain_c) {
    if (!vec_avx2()) cr_skip_test("skipped: this CPU has no AVX2 + FMA");
    sr_rng r;
    sr_seed(&r, 7);
    for (int n = 1; n <= 40; n++) {
        float x[40], y[40], sub[40], p[40], dp1[40], dp2[40];
        for (int i = 0; i < n; i++) {
            x[i] = y[i] = (float)(sr_normal(&r) * 5);
            sub[i] = (float)sr_normal(&r);
            p[i] = (float)sr_uniform(&r);
            dp1[i] = dp2[i] = (float)sr_normal(&r);
        }
        cr_expect_eq(vec_max(true, x, n), vec_max(false, x, n));
        float mx = vec_max(false, x, n);
        float s1 = vec_exp_shift_sum(true, x, n, mx), s2 = vec_exp_shift_sum(false, y, n, mx);
        cr_expect_leq(fabsf(s1 - s2), 1e-6f * (float)n * s2, "n %d: sums %g and %g", n, s1, s2);
        for (int i = 0; i < n; i++) cr_expect_leq(fabsf(x[i] - y[i]), 2.5e-7f * y[i], "n %d element %d", n, i);
        vec_exp_sub(true, x, sub, n), vec_exp_sub(false, y, sub, n);
        for (int i = 0; i < n; i++) cr_expect_leq(fabsf(x[i] - y[i]), 5e-7f * y[i], "n %d element %d", n, i);
        vec_dsoftmax(true, dp1, p, sub, n), vec_dsoftmax(false, dp2, p, sub, n);
        for (int i = 0; i < n; i++) cr_expect_eq(dp1[i], dp2[i]);
        vec_dsoftmax1(true, dp1, p, 0.5f, n), vec_dsoftmax1(false, dp2, p, 0.5f, n);
        vec_scale_f(true, dp1, n, 0.3f), vec_scale_f(false, dp2, n, 0.3f);
        for (int i = 0; i < n; i++) cr_expect_eq(dp1[i], dp2[i]);
    }
}

/* kernels/fp8 against torch (tests/ref/gen_fp8.py: float8_e4m3fn casts, DeepSeek's act_quant,
 * float64 matmuls) and hand-worked values.
 * Tolerances: encoding, act_quant scales and bytes are exact (one IEEE division and one
 * correctly rounded cast on both sides). swiglu_quant: silu uses exp, whose last bit may
 * differ between glibc and torch, so the scale may differ by a few ulp and a byte by one
 * code. The GEMM's f32 output: block sums are exact, then ≤ K/128 f32 multiply-adds, so
 * |d| ≤ 1e-6·Σ|a·w| (the sum of absolute dequantized products). bf16 output: within 1 ulp of
 * torch's rounding of the f64 result (the f32 sum may sit on the other side of a tie). */
#include <math.h>
#include <stdint.h>

#include "kernels/convert.h"
#include "kernels/fp8.h"
#include "testutil.h"

static float *f32_of(const st_tensor *t) {
    float *v = malloc(t->nelem * sizeof *v);
    cr_assert(v && !cvt_to_f32(t->dtype, t->data, v, t->nelem));
    return v;
}

static void *copy_of(const st_tensor *t) {
    void *v = malloc(t->nbytes);
    cr_assert(v);
    memcpy(v, t->data, t->nbytes);
    return v;
}

Test(fp8, encoding_matches_torch) {
    st_file *f = ref_open("fp8.safetensors");
    const st_tensor *in = ref_tensor(f, "enc_in"), *want = ref_tensor(f, "enc_out");
    float *x = f32_of(in);
    const uint8_t *w = want->data;
    cr_assert_eq(in->nelem, want->nelem);
    for (size_t i = 0; i < in->nelem; i++)
        cr_assert_eq(fp8_from_f32(x[i]), w[i], "fp8(%.9g): got 0x%02x, torch 0x%02x", x[i], fp8_from_f32(x[i]), w[i]);
    free(x);
    st_close(f);
}

Test(fp8, encoding_saturates_and_keeps_nan) {
    cr_assert_eq(fp8_from_f32(448.0f), 0x7e);
    cr_assert_eq(fp8_from_f32(464.0f), 0x7e);      /* would round to 480: saturates */
    cr_assert_eq(fp8_from_f32(1e9f), 0x7e);
    cr_assert_eq(fp8_from_f32(-INFINITY), 0xfe);
    cr_assert_eq(fp8_from_f32(NAN), 0x7f);
    cr_assert_eq(fp8_from_f32(0x1p-10f), 0x00);    /* half of the smallest subnormal: tie to even 0 */
    cr_assert_eq(fp8_from_f32(3 * 0x1p-10f), 0x02); /* 1.5 units: tie to even 2 */
    cr_assert_eq(fp8_from_f32(-1.0f), 0xb8);
    for (int b = 0; b < 256; b++) {                 /* every finite byte survives the round trip */
        if ((b & 0x7f) == 0x7f) continue;
        cr_assert_eq(fp8_from_f32(fp8e4m3_to_f32((uint8_t)b)), (uint8_t)b, "byte 0x%02x", b);
    }
}

static void check_quant(const char *xname, const char *qname, const char *sname, bool swiglu) {
    st_file *f = ref_open("fp8.safetensors");
    const st_tensor *xt = ref_tensor(f, xname), *qt = ref_tensor(f, qname), *st = ref_tensor(f, sname);
    int64_t M = qt->shape[0], K = qt->shape[1];
    float *x = f32_of(xt), *want_s = f32_of(st), *s = malloc((size_t)(M * K / 128) * sizeof *s);
    uint8_t *q = malloc((size_t)(M * K));
    memset(q, 0x7f, (size_t)(M * K));
    int rc = swiglu ? fp8_swiglu_quant(x, M, K, q, s) : fp8_act_quant(x, M, K, q, s);
    cr_assert_eq(rc, 0, "%s", rt_errmsg());
    const uint8_t *want_q = qt->data;
    for (int64_t i = 0; i < M * K / 128; i++) {
        if (swiglu) cr_assert(fabsf(s[i] - want_s[i]) <= 4e-7f * want_s[i], "scale[%lld] %.9g vs %.9g", (long long)i, s[i], want_s[i]);
        else cr_assert_eq(s[i], want_s[i], "scale[%lld] %.9g vs %.9g", (long long)i, s[i], want_s[i]);
    }
    for (int64_t i = 0; i < M * K; i++) {
        if (!swiglu) {
            cr_assert_eq(q[i], want_q[i], "q[%lld]: 0x%02x vs torch 0x%02x", (long long)i, q[i], want_q[i]);
            continue;
        }
        int a = q[i], b = want_q[i];   /* same sign, magnitudes one code apart at most */
        cr_assert((a & 0x80) == (b & 0x80) || (a & 0x7f) + (b & 0x7f) <= 1, "q[%lld]: 0x%02x vs 0x%02x", (long long)i, a, b);
        cr_assert(abs((a & 0x7f) - (b & 0x7f)) <= 1, "q[%lld]: 0x%02x vs torch 0x%02x", (long long)i, a, b);
    }
    free(x);
    free(want_s);
    free(s);
    free(q);
    st_close(f);
}

Test(fp8, act_quant_matches_deepseek_scheme) { check_quant("aq_x", "aq_q", "aq_s", false); }
Test(fp8, swiglu_quant_matches_torch) { check_quant("sw_gu", "sw_q", "sw_s", true); }

Test(fp8, act_quant_rejects_ragged_k) {
    float x[100] = {0};
    uint8_t q[100];
    float s[1];
    cr_assert_eq(fp8_act_quant(x, 1, 100, q, s), RT_EINVAL);
}

Test(fp8, gemm_matches_float64_matmul) {
    st_file *f = ref_open("fp8.safetensors");
    const st_tensor *aq = ref_tensor(f, "aq_q"), *wt = ref_tensor(f, "gm_w"), *ot = ref_tensor(f, "gm_out");
    int64_t M = aq->shape[0], K = aq->shape[1], N = wt->shape[0];
    uint8_t *a = copy_of(aq), *w = copy_of(wt);
    float *as = f32_of(ref_tensor(f, "aq_s")), *ws = f32_of(ref_tensor(f, "gm_ws"));
    double *ref = copy_of(ot);
    const uint16_t *want16 = ref_tensor(f, "gm_bf16")->data;
    float *out = malloc((size_t)(M * N) * sizeof *out);
    uint16_t *o16 = malloc((size_t)(M * N) * 2);
    tp_pool *pool = NULL;
    cr_assert_eq(tp_create(4, &pool), 0);
    cr_assert_eq(fp8_gemm(a, as, w, ws, M, N, K, out, o16, pool), 0, "%s", rt_errmsg());
    int64_t nb = K / 128;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double mag = 0;
            for (int64_t k = 0; k < K; k++)
                mag += fabs((double)fp8e4m3_to_f32(a[m * K + k]) * as[m * nb + k / 128] *
                            fp8e4m3_to_f32(w[n * K + k]) * ws[(n / 128) * nb + k / 128]);
            double r = ref[m * N + n];
            cr_assert(fabs(out[m * N + n] - r) <= 1e-6 * mag, "out[%lld,%lld] = %.9g, f64 %.9g (mag %g)", (long long)m,
                      (long long)n, out[m * N + n], r, mag);
            float g = bf16_to_f32(o16[m * N + n]), t = bf16_to_f32(want16[m * N + n]);
            cr_assert(fabsf(g - t) <= fabsf(t) * 0x1p-7f, "bf16 out[%lld,%lld] = %g, torch %g", (long long)m, (long long)n, g, t);
        }
    tp_free(pool);
    free(a); free(w); free(as); free(ws); free(ref); free(out); free(o16);
    st_close(f);
}

/* Grouped rows against the dense GEMM (itself checked against torch above) with each group's
 * own weight, and untouched rows outside the groups. */
Test(fp8, grouped_gemm_uses_each_groups_weight) {
    int64_t K = 256, N = 200, G = 3, rows = 41, nsb = 2, nb = 2;
    int64_t off[4] = {2, 9, 9, 38};   /* an empty group; rows 0-1 and 38-40 outside */
    uint8_t *a = malloc((size_t)(rows * K)), *w = malloc((size_t)(G * N * K));
    float *as = malloc((size_t)(rows * nb) * 4), *ws = malloc((size_t)(G * nsb * nb) * 4);
    unsigned long long st = 12345;
    for (int64_t i = 0; i < rows * K; i++) { st = st * 6364136223846793005ull + 1; a[i] = (uint8_t)(st >> 33); if ((a[i] & 0x7f) == 0x7f) a[i] = 1; }
    for (int64_t i = 0; i < G * N * K; i++) { st = st * 6364136223846793005ull + 1; w[i] = (uint8_t)(st >> 33); if ((w[i] & 0x7f) == 0x7f) w[i] = 2; }
    for (int64_t i = 0; i < rows * nb; i++) as[i] = 0.001f * (float)(i % 7 + 1);
    for (int64_t i = 0; i < G * nsb * nb; i++) ws[i] = 0.01f * (float)(i % 5 + 1);
    float *out = malloc((size_t)(rows * N) * 4), *want = malloc((size_t)(rows * N) * 4);
    for (int64_t i = 0; i < rows * N; i++) out[i] = -7.0f;
    cr_assert_eq(fp8_gemm_grouped(a, as, w, ws, off, G, N, K, out, NULL, NULL), 0, "%s", rt_errmsg());
    for (int64_t g = 0; g < G; g++) {
        int64_t m = off[g + 1] - off[g];
        if (!m) continue;
        cr_assert_eq(fp8_gemm(a + off[g] * K, as + off[g] * nb, w + g * N * K, ws + g * nsb * nb, m, N, K,
                              want + off[g] * N, NULL, NULL), 0);
    }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t n = 0; n < N; n++) {
            float e = (r < off[0] || r >= off[G]) ? -7.0f : want[r * N + n];
            cr_assert_eq(out[r * N + n], e, "row %lld col %lld: %g vs %g", (long long)r, (long long)n, out[r * N + n], e);
        }
    int64_t bad[4] = {0, 5, 3, 9};
    cr_assert_eq(fp8_gemm_grouped(a, as, w, ws, bad, G, N, K, out, NULL, NULL), RT_EINVAL);
    free(a); free(w); free(as); free(ws); free(out); free(want);
}

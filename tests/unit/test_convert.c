/* kernels/convert against torch (tests/ref/gen_convert.py) and hand-worked values.
 * Tolerance: none — every conversion is exactly specified, so results must be bit-exact. */
#include <math.h>
#include <stdint.h>

#include "core/alloc.h"
#include "kernels/convert.h"
#include "testutil.h"

static uint32_t bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

static void expect_same_f32(const float *got, const float *want, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++) {
        if (isnan(want[i])) { cr_assert(isnan(got[i]), "%s[%zu]: expected NaN, got %g", what, i, got[i]); continue; }
        cr_assert_eq(bits(got[i]), bits(want[i]), "%s[%zu]: got %.9g (0x%08x), want %.9g (0x%08x)", what, i, got[i],
                     bits(got[i]), want[i], bits(want[i]));
    }
}

static float *f32_of(const st_tensor *t) {
    float *v = malloc(t->nelem * sizeof *v);
    cr_assert(v && !cvt_to_f32(t->dtype, t->data, v, t->nelem));
    return v;
}

Test(convert, fp8_e4m3_matches_torch_for_every_byte) {
    st_file *f = ref_open("convert.safetensors");
    const st_tensor *b = ref_tensor(f, "fp8_e4m3_bytes");
    float *want = f32_of(ref_tensor(f, "fp8_e4m3_f32")), got[256];
    cvt_fp8e4m3_to_f32(b->data, got, 256);
    expect_same_f32(got, want, 256, "e4m3");
    free(want);
    st_close(f);
}

Test(convert, fp8_e5m2_matches_torch_for_every_byte) {
    st_file *f = ref_open("convert.safetensors");
    float *want = f32_of(ref_tensor(f, "fp8_e5m2_f32")), got[256];
    cvt_fp8e5m2_to_f32(ref_tensor(f, "fp8_e5m2_bytes")->data, got, 256);
    expect_same_f32(got, want, 256, "e5m2");
    free(want);
    st_close(f);
}

Test(convert, f16_to_f32_matches_torch_for_every_half) {
    st_file *f = ref_open("convert.safetensors");
    float *want = f32_of(ref_tensor(f, "f16_f32"));
    float *got = malloc(65536 * sizeof *got);
    cvt_f16_to_f32(ref_tensor(f, "f16_bits")->data, got, 65536);
    expect_same_f32(got, want, 65536, "f16");
    free(got);
    free(want);
    st_close(f);
}

Test(convert, bf16_to_f32_matches_torch_for_every_bfloat16) {
    st_file *f = ref_open("convert.safetensors");
    float *want = f32_of(ref_tensor(f, "bf16_f32"));
    float *got = malloc(65536 * sizeof *got);
    cvt_bf16_to_f32(ref_tensor(f, "bf16_bits")->data, got, 65536);
    expect_same_f32(got, want, 65536, "bf16");
    free(got);
    free(want);
    st_close(f);
}

/* The widening loops (vectorised in sixteens, scalar tails) at every length 0..70 and some
 * long odd ones, from source addresses at every byte offset 0..3 (odd ones: bf16/f16 values
 * straddling 2-byte alignment) into destinations at float offsets 0..7, against torch's
 * values; guard floats around the destination must stay untouched. */
static void check_widening(const char *bits_name, const char *f32_name, void (*cvt)(const void *, float *, size_t)) {
    st_file *f = ref_open("convert.safetensors");
    const st_tensor *hb = ref_tensor(f, bits_name);
    float *want = f32_of(ref_tensor(f, f32_name));
    enum { MAXN = 4099, GUARD = 8 };
    unsigned char *src = malloc(2 * MAXN + 8);
    float *dst = malloc((MAXN + 2 * GUARD + 8) * sizeof *dst);
    const float poison = -1234.5f;
    static const size_t longs[] = {127, 1001, 4097, MAXN};
    for (size_t li = 0; li < 71 + sizeof longs / sizeof *longs; li++) {
        size_t n = li < 71 ? li : longs[li - 71];
        size_t first = (n * 7919 + 12345) % (65536 - n);             /* a varying window of values */
        for (size_t so = 0; so < 4; so++)
            for (size_t d = 0; d < 8; d++) {
                memcpy(src + so, (const unsigned char *)hb->data + 2 * first, 2 * n);
                for (size_t i = 0; i < MAXN + 2 * GUARD + 8; i++) dst[i] = poison;
                float *out = dst + GUARD + d;
                cvt(src + so, out, n);
                char what[96];
                snprintf(what, sizeof what, "%s n=%zu src+%zu dst+%zu", bits_name, n, so, d);
                expect_same_f32(out, want + first, n, what);
                for (size_t i = 0; i < GUARD + d; i++) cr_assert_eq(dst[i], poison, "%s: wrote before the start", what);
                for (size_t i = 0; i < GUARD; i++) cr_assert_eq(out[n + i], poison, "%s: wrote past the end", what);
            }
    }
    free(src);
    free(dst);
    free(want);
    st_close(f);
}

Test(convert, bf16_widening_exact_at_any_length_and_alignment) { check_widening("bf16_bits", "bf16_f32", cvt_bf16_to_f32); }
Test(convert, f16_widening_exact_at_any_length_and_alignment) { check_widening("f16_bits", "f16_f32", cvt_f16_to_f32); }

/* Hand-worked: bf16 widening is a 16-bit shift, NaN payloads included (0x7fc1 quiet, 0xff81
 * signalling), on both the scalar path (n < 16) and the vector one. */
Test(convert, bf16_widening_keeps_nan_bits) {
    uint16_t h[32];
    float out[32];
    for (int i = 0; i < 32; i++) h[i] = (uint16_t)(i % 2 ? 0xff81 : 0x7fc1);
    for (size_t n = 2; n <= 32; n += 30) {
        cvt_bf16_to_f32(h, out, n);
        for (size_t i = 0; i < n; i++) cr_assert_eq(bits(out[i]), i % 2 ? 0xff810000u : 0x7fc10000u, "n=%zu [%zu]", n, i);
    }
}

static void check_rounding(const char *out_name, void (*cvt)(const float *, uint16_t *, size_t)) {
    st_file *f = ref_open("convert.safetensors");
    const st_tensor *in = ref_tensor(f, "f32_in"), *want = ref_tensor(f, out_name);
    cr_assert_eq(in->nelem, want->nelem);
    float *x = f32_of(in);
    uint16_t *got = malloc(in->nelem * 2), *w = malloc(in->nelem * 2);
    memcpy(w, want->data, in->nelem * 2);
    cvt(x, got, in->nelem);
    for (size_t i = 0; i < in->nelem; i++)
        cr_assert_eq(got[i], w[i], "%s of %.9g (0x%08x): got 0x%04x, torch 0x%04x", out_name, x[i], bits(x[i]), got[i], w[i]);
    free(x);
    free(got);
    free(w);
    st_close(f);
}

Test(convert, f32_to_bf16_rounds_like_torch) { check_rounding("bf16_out", cvt_f32_to_bf16); }
Test(convert, f32_to_f16_rounds_like_torch) { check_rounding("f16_out", cvt_f32_to_f16); }

Test(convert, block_dequant_matches_torch_with_partial_edge_blocks) {
    st_file *f = ref_open("convert.safetensors");
    const st_tensor *w = ref_tensor(f, "dq_w"), *s = ref_tensor(f, "dq_scale");
    float *want = f32_of(ref_tensor(f, "dq_out"));
    int64_t rows = w->shape[0], cols = w->shape[1];
    float *got = malloc((size_t)(rows * cols) * sizeof *got);
    tp_pool *pool;
    cr_assert(!tp_create(2, &pool));
    fp8_block_dequant(w->data, s->data, rows, cols, 128, 128, got, pool);
    expect_same_f32(got, want, (size_t)(rows * cols), "dequant");
    memset(got, 0xff, (size_t)(rows * cols) * sizeof *got);           /* poison, then single-threaded */
    fp8_block_dequant(w->data, s->data, rows, cols, 128, 128, got, NULL);
    expect_same_f32(got, want, (size_t)(rows * cols), "dequant (1 thread)");
    tp_free(pool);
    free(got);
    free(want);
    st_close(f);
}

/* Hand-worked: e4m3fn 0x7e = 1.75·2^8 = 448 (largest), 0x01 = 2^-9 (smallest subnormal),
 * 0x38 = 1.0, 0xb8 = -1.0, 0x7f = NaN; bf16 rounding of 1 + 2^-8 (a tie) goes to even 1.0,
 * 1 + 3·2^-8 rounds up to 1 + 2^-6. */
Test(convert, hand_worked_values) {
    cr_assert_eq(fp8e4m3_to_f32(0x7e), 448.0f);
    cr_assert_eq(fp8e4m3_to_f32(0x01), ldexpf(1.0f, -9));
    cr_assert_eq(fp8e4m3_to_f32(0x38), 1.0f);
    cr_assert_eq(fp8e4m3_to_f32(0xb8), -1.0f);
    cr_assert(isnan(fp8e4m3_to_f32(0x7f)));
    cr_assert_eq(f32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3f80);
    cr_assert_eq(f32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)), 0x3f82);
    cr_assert_eq(bf16_to_f32(0x3f82), 1.0f + ldexpf(1.0f, -6));
    cr_assert_eq(f32_to_f16(65504.0f), 0x7bff);
    cr_assert_eq(f32_to_f16(65520.0f), 0x7c00);
    cr_assert(isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

/* cvt_to_f32_fill into a fresh rt_big_alloc buffer, 1 and 2 threads: every value is torch's
 * .float() of the same bf16 / f16 (convert.safetensors), at a length of several 1 MiB chunks
 * plus a tail (no multiple of the chunk or of 16), from an odd source address; nothing is
 * written past the end. */
static void check_fill(rt_dtype dt, const char *bits_name, const char *f32_name) {
    st_file *f = ref_open("convert.safetensors");
    const st_tensor *hb = ref_tensor(f, bits_name);
    float *want = f32_of(ref_tensor(f, f32_name));
    const size_t n = ((size_t)5 << 18) + 12345;
    unsigned char *src = malloc(2 * n + 1);
    cr_assert(src);
    for (size_t i = 0; i < n; i++) memcpy(src + 1 + 2 * i, (const unsigned char *)hb->data + 2 * ((i * 7919) % 65536), 2);
    tp_pool *pool;
    cr_assert(!tp_create(2, &pool));
    for (int threads = 1; threads <= 2; threads++) {
        float *got = rt_big_alloc((n + 16) * sizeof *got);
        cr_assert(got);
        for (size_t i = n; i < n + 16; i++) got[i] = -1234.5f;
        cr_assert(!cvt_to_f32_fill(dt, src + 1, got, n, threads == 2 ? pool : NULL), "%s", rt_errmsg());
        for (size_t i = 0; i < n; i++) {
            float w = want[(i * 7919) % 65536];
            if (isnan(w)) { cr_assert(isnan(got[i]), "%s %d threads [%zu]: want NaN", bits_name, threads, i); continue; }
            cr_assert_eq(bits(got[i]), bits(w), "%s %d threads [%zu]: 0x%08x, want 0x%08x", bits_name, threads, i,
                         bits(got[i]), bits(w));
        }
        for (size_t i = n; i < n + 16; i++) cr_assert_eq(got[i], -1234.5f, "%s: wrote past the end", bits_name);
        rt_big_free(got);
    }
    tp_free(pool);
    free(src);
    free(want);
    st_close(f);
}

Test(convert, fill_bf16_matches_torch_at_one_and_two_threads) { check_fill(RT_DT_BF16, "bf16_bits", "bf16_f32"); }
Test(convert, fill_f16_matches_torch_at_one_and_two_threads) { check_fill(RT_DT_F16, "f16_bits", "f16_f32"); }

Test(convert, fill_of_a_non_float_dtype_is_refused_and_writes_nothing) {
    float dst[4] = {1, 2, 3, 4};
    int32_t src[4] = {5, 6, 7, 8};
    rt_errclear();
    cr_assert_eq(cvt_to_f32_fill(RT_DT_I32, src, dst, 4, NULL), RT_EUNSUPPORTED);
    cr_assert(strstr(rt_errmsg(), "I32"), "message: %s", rt_errmsg());
    for (int i = 0; i < 4; i++) cr_assert_eq(dst[i], (float)(i + 1));
}

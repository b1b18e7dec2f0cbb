/* kernels/fp8's FP8-resident linear layer (fp8_linear_fwd, fp8_weight_dequant) against the
 * plain way: every weight dequantized with kernels/convert's table-free reference decoder
 * fp8e4m3_to_f32 (ldexpf of the fields) times its block scale, then a float64 matmul.
 * Shapes with partial edge blocks (rows and columns not multiples of 128), K over several
 * FP8_TILE_K tiles, slices whose origin sits inside a block (row_off, col_off), M = 1 (the
 * GEMV path), small and larger M, with and without bias, serial and on a pool of 3.
 * Tolerances: dequantization is exact (one f32 rounding of the product on both sides: the
 * same bits, compared bit for bit). The product sums K exact f32 products in f32 in some
 * order (OpenBLAS's blocking, K tiles), so |Δ| ≤ γ_K·Σ|x·w|; with K ≤ 700, γ_K < 5e-5 in the
 * worst case and ~√K·6e-8 ≈ 2e-6 typically; the bound 1e-5·Σ|x·w| still catches any wrong
 * scale or misplaced element (those move an output by O(|x·w|)). */
#include <math.h>
#include <stdint.h>

#include "core/threadpool.h"
#include "kernels/convert.h"
#include "kernels/fp8.h"
#include "testutil.h"

static uint32_t rng(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*s >> 33);
}

static float uni(uint64_t *s) { return (float)rng(s) / 2147483648.0f - 1.0f; }   /* [-1, 1) */

typedef struct {
    uint8_t *w;
    float *scale;
    fp8_weight fw;
} wcase;

/* A random [rows, cols] e4m3 matrix, no NaN codes unless nan_ok, scales over several binades;
 * the slice starts at (row_off, col_off) of its first block. */
static wcase make_w(int64_t rows, int64_t cols, int64_t br, int64_t bc, int64_t row_off, int64_t col_off,
                    bool nan_ok, uint64_t *s) {
    wcase c;
    c.w = malloc((size_t)(rows * cols));
    for (int64_t i = 0; i < rows * cols; i++) {
        uint8_t b = (uint8_t)rng(s);
        if (!nan_ok && (b & 0x7f) == 0x7f) b ^= 0x01;
        c.w[i] = b;
    }
    int64_t sr = (rows + row_off + br - 1) / br, sc = (cols + col_off + bc - 1) / bc;
    c.scale = malloc((size_t)(sr * sc) * sizeof(float));
    for (int64_t i = 0; i < sr * sc; i++) c.scale[i] = ldexpf(0.5f + 0.5f * fabsf(uni(s)), (int)(rng(s) % 9) - 12);
    c.fw = (fp8_weight){.w = c.w, .scale = c.scale, .rows = rows, .cols = cols, .block_rows = br, .block_cols = bc,
                        .row_off = row_off, .col_off = col_off, .scale_cols = sc};
    return c;
}

static float ref_weight(const wcase *c, int64_t r, int64_t k) {
    const fp8_weight *w = &c->fw;
    float s = c->scale[((r + w->row_off) / w->block_rows) * w->scale_cols + (k + w->col_off) / w->block_cols];
    return fp8e4m3_to_f32(c->w[r * w->cols + k]) * s;
}

static void linear_case(int64_t M, int64_t N, int64_t K, int64_t row_off, int64_t col_off, bool bias, tp_pool *pool) {
    uint64_t s = 0x9e3779b97f4a7c15ull ^ (uint64_t)(M * 1000003 + N * 1009 + K * 7 + row_off + col_off + bias);
    wcase c = make_w(N, K, 128, 128, row_off, col_off, false, &s);
    float *x = malloc((size_t)(M * K) * sizeof *x), *b = bias ? malloc((size_t)N * sizeof *b) : NULL;
    float *y = malloc((size_t)(M * N) * sizeof *y);
    for (int64_t i = 0; i < M * K; i++) x[i] = uni(&s);
    for (int64_t i = 0; bias && i < N; i++) b[i] = uni(&s);
    for (int64_t i = 0; i < M * N; i++) y[i] = NAN;   /* poison */
    fp8_linear_fwd(y, x, &c.fw, b, M, pool);
    double worst = 0;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double want = bias ? b[n] : 0.0, mag = bias ? fabs(b[n]) : 0.0;
            for (int64_t k = 0; k < K; k++) {
                double p = (double)x[m * K + k] * (double)ref_weight(&c, n, k);
                want += p;
                mag += fabs(p);
            }
            double d = fabs((double)y[m * N + n] - want);
            cr_assert(d <= 1e-5 * mag, "M=%lld N=%lld K=%lld off=(%lld,%lld) bias=%d: y[%lld,%lld] = %.9g, want %.9g",
                      (long long)M, (long long)N, (long long)K, (long long)row_off, (long long)col_off, bias,
                      (long long)m, (long long)n, y[m * N + n], want);
            if (mag > 0 && d / mag > worst) worst = d / mag;
        }
    cr_log_info("M=%lld N=%lld K=%lld: max |dy| / sum|x*w| = %.2g", (long long)M, (long long)N, (long long)K, worst);
    free(c.w), free(c.scale), free(x), free(b), free(y);
}

Test(fp8_linear, matches_dequantize_then_multiply_with_partial_edge_blocks) {
    int64_t Ms[] = {1, 2, 5, 33};
    for (size_t i = 0; i < sizeof Ms / sizeof Ms[0]; i++) {
        linear_case(Ms[i], 300, 200, 0, 0, false, NULL);   /* blocks 128+128+44 rows, 128+72 columns */
        linear_case(Ms[i], 130, 700, 0, 0, true, NULL);    /* three K tiles, the last one partial */
    }
}

Test(fp8_linear, slices_that_start_inside_a_block) {
    linear_case(1, 200, 300, 50, 100, false, NULL);
    linear_case(7, 200, 300, 127, 1, true, NULL);
    linear_case(3, 64, 129, 64, 127, false, NULL);
}

Test(fp8_linear, pool_gives_the_same_answer) {
    tp_pool *pool;
    cr_assert_eq(tp_create(3, &pool), 0);
    linear_case(1, 333, 257, 0, 0, true, pool);
    linear_case(9, 333, 257, 10, 20, false, pool);
    linear_case(40, 65, 128, 0, 0, false, pool);   /* fewer tiles (2) than threads */
    tp_free(pool);
}

Test(fp8_linear, tiny_shapes) {
    linear_case(1, 1, 1, 0, 0, false, NULL);
    linear_case(3, 5, 17, 0, 0, true, NULL);
    linear_case(2, 70, 16, 0, 0, false, NULL);   /* K < 16: only the tail loop */
}

/* Every code (NaN, subnormals, ±0, ±448) at every column position of runs longer and
 * shorter than the vectorized 16, against the reference decoder, bit for bit. The last shape
 * has scales near 2^100, where the kernel leaves its AVX2/F16C run (which multiplies by
 * scale · 2^8) for the portable one, so both decoders are checked on an x86 machine. */
Test(fp8_linear, dequant_is_the_reference_decoding_bit_for_bit) {
    uint64_t s = 12345;
    tp_pool *pool;
    cr_assert_eq(tp_create(2, &pool), 0);
    int64_t shapes[][6] = {{3, 256, 128, 128, 0, 0}, {5, 300, 128, 128, 7, 99}, {4, 37, 2, 16, 1, 15},
                           {3, 300, 128, 128, 5, 3}};
    for (size_t i = 0; i < 4; i++) {
        int64_t *d = shapes[i];
        wcase c = make_w(d[0], d[1], d[2], d[3], d[4], d[5], true, &s);
        if (i == 3)
            for (int64_t j = 0; j < ((d[0] + d[4] + 127) / 128) * c.fw.scale_cols; j++) c.scale[j] = ldexpf(c.scale[j], 110);
        for (int64_t k = 0; k < d[1] && k < 256; k++) c.w[k] = (uint8_t)k;   /* row 0: all 256 codes */
        float *out = malloc((size_t)(d[0] * d[1]) * sizeof *out);
        for (int64_t r0 = 0; r0 < 2; r0++) {
            for (int64_t j = 0; j < d[0] * d[1]; j++) out[j] = 1234.5f;
            fp8_weight_dequant(&c.fw, r0, d[0], out, r0 ? pool : NULL);
            for (int64_t r = r0; r < d[0]; r++)
                for (int64_t k = 0; k < d[1]; k++) {
                    float got = out[(r - r0) * d[1] + k], want = ref_weight(&c, r, k);
                    uint32_t gb, wb;
                    memcpy(&gb, &got, 4);
                    memcpy(&wb, &want, 4);
                    cr_assert(gb == wb || (isnan(got) && isnan(want)), "shape %zu (%lld, %lld) code 0x%02x: %a, want %a",
                              i, (long long)r, (long long)k, c.w[r * d[1] + k], got, want);
                }
        }
        free(out), free(c.w), free(c.scale);
    }
    tp_free(pool);
}

/* kernels/cpu/fp8.c — e4m3 encoding, DeepSeek's activation quantization and the block-scaled
 * FP8 GEMM: the CPU twins of kernels/cuda/fp8_gemm.cu; and the f32 linear layer over
 * FP8-resident weights of the CPU teacher (see kernels/fp8.h). */
#include "kernels/fp8.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "kernels/convert.h"
#include "kernels/matmul.h"

uint8_t fp8_from_f32(float f) {
    if (isnan(f)) return 0x7f;
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (a >= FP8_E4M3_MAX) return sign | 0x7e;            /* saturate (also ±inf) */
    if (a < 0x1p-6f) {                                      /* subnormal: units of 2^-9 */
        float m = rintf(a * 512.0f);                        /* exact scaling, ties to even */
        return sign | (uint8_t)m;                           /* m = 8 is the smallest normal */
    }
    int ex;
    frexpf(a, &ex);                                         /* a = fr·2^ex, fr ∈ [0.5, 1) */
    int e = ex - 1;                                         /* a ∈ [2^e, 2^(e+1)) */
    float m = rintf(ldexpf(a, 3 - e));                      /* ∈ [8, 16], exact scaling */
    if (m == 16.0f) {
        m = 8.0f;
        e++;
    }
    int code = ((e + 7) << 3) | ((int)m - 8);
    if (code > 0x7e) code = 0x7e;
    return sign | (uint8_t)code;
}

static float block_scale(const float *x, int64_t n) {
    float amax = 0.0f;
    for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
    float s = amax / FP8_E4M3_MAX;
    return s > 0.0f ? s : 1.0f;
}

int fp8_act_quant(const float *x, int64_t M, int64_t K, uint8_t *q, float *scale) {
    if (K <= 0 || K % FP8_BLOCK) return rt_fail(RT_EINVAL, "fp8 quantization: K = %lld is not a multiple of 128", (long long)K);
    int64_t nb = K / FP8_BLOCK;
    for (int64_t m = 0; m < M; m++)
        for (int64_t b = 0; b < nb; b++) {
            const float *xb = x + m * K + b * FP8_BLOCK;
            float s = block_scale(xb, FP8_BLOCK);
            scale[m * nb + b] = s;
            for (int i = 0; i < FP8_BLOCK; i++) q[m * K + b * FP8_BLOCK + i] = fp8_from_f32(xb[i] / s);
        }
    return 0;
}

int fp8_swiglu_quant(const float *gu, int64_t M, int64_t I, uint8_t *q, float *scale) {
    if (I <= 0 || I % FP8_BLOCK) return rt_fail(RT_EINVAL, "fp8 swiglu: I = %lld is not a multiple of 128", (long long)I);
    float h[FP8_BLOCK];
    int64_t nb = I / FP8_BLOCK;
    for (int64_t m = 0; m < M; m++)
        for (int64_t b = 0; b < nb; b++) {
            const float *g = gu + m * 2 * I + b * FP8_BLOCK, *u = g + I;
            for (int i = 0; i < FP8_BLOCK; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
            float s = block_scale(h, FP8_BLOCK);
            scale[m * nb + b] = s;
            for (int i = 0; i < FP8_BLOCK; i++) q[m * I + b * FP8_BLOCK + i] = fp8_from_f32(h[i] / s);
        }
    return 0;
}

typedef struct {
    const uint8_t *a, *w;
    const float *a_scale, *w_scale;
    int64_t row0, N, K;
    float *out_f32;
    uint16_t *out_bf16;
    float *scratch;        /* K floats per thread */
    float lut[256];
} gemm_ctx;

static void gemm_rows(void *p, size_t r0, size_t r1, int thread) {
    const gemm_ctx *c = p;
    int64_t K = c->K, N = c->N, nb = K / FP8_BLOCK;
    float *af = c->scratch + (size_t)thread * (size_t)K;
    for (size_t r = r0; r < r1; r++) {
        int64_t m = c->row0 + (int64_t)r;
        for (int64_t k = 0; k < K; k++) af[k] = c->lut[c->a[m * K + k]];
        for (int64_t n = 0; n < N; n++) {
            const uint8_t *wr = c->w + n * K;
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                double blk = 0.0;
                for (int64_t k = b * FP8_BLOCK; k < (b + 1) * FP8_BLOCK; k++) blk += (double)(af[k] * c->lut[wr[k]]);
                float s = c->a_scale[m * nb + b] * c->w_scale[(n / FP8_BLOCK) * nb + b];
                acc += (float)blk * s;
            }
            if (c->out_f32) c->out_f32[m * N + n] = acc;
            if (c->out_bf16) c->out_bf16[m * N + n] = f32_to_bf16(acc);
        }
    }
}

static void gemm_run(gemm_ctx *c, int64_t rows, tp_pool *pool) {
    if (rows > 0) tp_parallel_for(pool, (size_t)rows, gemm_rows, c);
}

static int scratch_init(gemm_ctx *c, tp_pool *pool) {
    size_t n;
    if (!rt_mul_ok((size_t)tp_size(pool), (size_t)c->K, &n) || !(c->scratch = rt_malloc(n * sizeof(float))))
        return rt_fail(RT_ENOMEM, "fp8 gemm: no memory for %lld-wide rows", (long long)c->K);
    return 0;
}

static void lut_init(float *lut) {
    for (int i = 0; i < 256; i++) {
        lut[i] = fp8e4m3_to_f32((uint8_t)i);
        if (isnan(lut[i])) lut[i] = 0.0f;   /* 0x7f/0xff never come out of fp8_from_f32 */
    }
}

int fp8_gemm(const uint8_t *a, const float *a_scale, const uint8_t *w, const float *w_scale, int64_t M, int64_t N,
             int64_t K, float *out_f32, uint16_t *out_bf16, tp_pool *pool) {
    if (K <= 0 || K % FP8_BLOCK) return rt_fail(RT_EINVAL, "fp8 gemm: K = %lld is not a multiple of 128", (long long)K);
    gemm_ctx c = {.a = a, .w = w, .a_scale = a_scale, .w_scale = w_scale, .row0 = 0, .N = N, .K = K,
                  .out_f32 = out_f32, .out_bf16 = out_bf16};
    lut_init(c.lut);
    if (scratch_init(&c, pool)) return RT_ENOMEM;
    gemm_run(&c, M, pool);
    free(c.scratch);
    return 0;
}

int fp8_gemm_grouped(const uint8_t *a, const float *a_scale, const uint8_t *w, const float *w_scale,
                     const int64_t *offsets, int64_t G, int64_t N, int64_t K, float *out_f32, uint16_t *out_bf16,
                     tp_pool *pool) {
    if (K <= 0 || K % FP8_BLOCK) return rt_fail(RT_EINVAL, "fp8 gemm: K = %lld is not a multiple of 128", (long long)K);
    for (int64_t g = 0; g < G; g++)
        if (offsets[g] < 0 || offsets[g + 1] < offsets[g])
            return rt_fail(RT_EINVAL, "fp8 grouped gemm: offsets[%lld..%lld] = %lld, %lld are not ascending", (long long)g,
                           (long long)g + 1, (long long)offsets[g], (long long)offsets[g + 1]);
    int64_t nb = K / FP8_BLOCK, nsb = (N + FP8_BLOCK - 1) / FP8_BLOCK;
    gemm_ctx c = {.a = a, .a_scale = a_scale, .N = N, .K = K, .out_f32 = out_f32, .out_bf16 = out_bf16};
    lut_init(c.lut);
    if (scratch_init(&c, pool)) return RT_ENOMEM;
    for (int64_t g = 0; g < G; g++) {
        c.w = w + g * N * K;
        c.w_scale = w_scale + g * nsb * nb;
        c.row0 = offsets[g];
        gemm_run(&c, offsets[g + 1] - offsets[g], pool);
    }
    free(c.scratch);
    return 0;
}

/* ---- FP8-resident weights, f32 activations --------------------------------------------- */

/* e4m3fn → f32 without branches or tables, so that fixed-length loops over it vectorize:
 * the 7 magnitude bits go to f32 bits 20…26 with the exponent rebased (+120); a subnormal
 * (exponent 0) is built one binade up, 2^-6 + m·2^-9, and 2^-6 subtracted (exact); the NaN
 * codes (magnitude 0x7f) get an all-ones exponent; the sign bit is copied. Never touches an
 * f32 subnormal, so flush-to-zero modes cannot change it. */
static inline float e4m3_f32(uint32_t b) {
    uint32_t mag = b & 0x7f, sub = ((mag + 120) >> 7) ^ 1, nan = (mag + 1) >> 7;
    uint32_t bits = (mag << 20) + ((120u + sub) << 23), sub_bits = sub * (121u << 23);
    float f, fs;
    memcpy(&f, &bits, sizeof f);
    memcpy(&fs, &sub_bits, sizeof fs);
    f -= fs;
    uint32_t fb;
    memcpy(&fb, &f, sizeof fb);
    fb |= nan * 0x7fc00000u | (b & 0x80) << 24;
    memcpy(&f, &fb, sizeof f);
    return f;
}

/* out[j] = e4m3(w[j]) · s for j < n: runs of 16 (a fixed count -O2 vectorizes), then the rest. */
static void dequant_run_c(const uint8_t *restrict w, float *restrict out, int64_t n, float s) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16)
        for (int i = 0; i < 16; i++) out[j + i] = e4m3_f32(w[j + i]) * s;
    for (; j < n; j++) out[j] = e4m3_f32(w[j]) * s;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define FP8_X86 1
/* The same on AVX2 + F16C (chosen at run time): e4m3 is f16 with the exponent 8 lower, so
 * shifting the 7 magnitude bits up by 7 (sign to bit 15) gives the f16 of e4m3 · 2^-8 exactly,
 * subnormals included; vcvtph2ps widens it (exact, not subject to DAZ), and one multiply by
 * s · 2^8 (exact scaling) rounds e4m3 · s once — the bits of dequant_run_c. The NaN codes
 * become f16 NaNs. Sixteen weights take about ten instructions. */
__attribute__((target("avx2,f16c"))) static void dequant_run_f16c(const uint8_t *w, float *out, int64_t n, float s) {
    const __m256 vs = _mm256_set1_ps(s * 256.0f);
    const __m256i mag_mask = _mm256_set1_epi16(0x7f), sign_mask = _mm256_set1_epi16(0x80);
    const __m256i nan_mag = _mm256_set1_epi16(0x7f << 7), nan_bits = _mm256_set1_epi16(0x7e00);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(w + j)));
        __m256i mag = _mm256_slli_epi16(_mm256_and_si256(b, mag_mask), 7);
        __m256i h = _mm256_or_si256(mag, _mm256_slli_epi16(_mm256_and_si256(b, sign_mask), 8));
        h = _mm256_or_si256(h, _mm256_and_si256(_mm256_cmpeq_epi16(mag, nan_mag), nan_bits));
        _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), vs));
        _mm256_storeu_ps(out + j + 8, _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), vs));
    }
    for (; j < n; j++) out[j] = e4m3_f32(w[j]) * s;
}
#endif

/* Which run to use: the F16C one where the CPU has it (dequant_run then keeps s · 2^8 from
 * overflowing). Asked once per kernel call: GCC's __builtin_cpu_supports reads what libgcc
 * found at start-up; clang's has no "f16c", so there it is CPUID itself (slow under a
 * hypervisor, fine for the sanitizer builds that use clang). */
typedef void (*dequant_fn)(const uint8_t *, float *, int64_t, float);
static dequant_fn pick_run(void) {
#ifdef FP8_X86
#ifdef __clang__
    unsigned a, b, c, d;   /* F16C: CPUID.1:ECX bit 29 */
    if (__builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C)) return dequant_run_f16c;
#else
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c")) return dequant_run_f16c;
#endif
#endif
    return dequant_run_c;
}

static void dequant_run(dequant_fn fn, const uint8_t *w, float *out, int64_t n, float s) {
    if (fn != dequant_run_c && !(fabsf(s) < 0x1p100f)) fn = dequant_run_c;
    fn(w, out, n, s);
}

/* Rows [r0, r1) × columns [c0, c1) of w into out (row stride ldo), one block-constant run of
 * a row at a time. */
static void dequant_tile(dequant_fn fn, const fp8_weight *w, int64_t r0, int64_t r1, int64_t c0, int64_t c1, float *out,
                         int64_t ldo) {
    for (int64_t r = r0; r < r1; r++) {
        const float *srow = w->scale + ((r + w->row_off) / w->block_rows) * w->scale_cols;
        const uint8_t *wr = w->w + r * w->cols;
        float *o = out + (r - r0) * ldo - c0;
        for (int64_t j0 = c0; j0 < c1;) {
            int64_t blk = (j0 + w->col_off) / w->block_cols, j1 = (blk + 1) * w->block_cols - w->col_off;
            if (j1 > c1) j1 = c1;
            dequant_run(fn, wr + j0, o + j0, j1 - j0, srow[blk]);
            j0 = j1;
        }
    }
}

typedef struct {
    const fp8_weight *w;
    int64_t r0;
    float *out;
    dequant_fn fn;
} wdq_ctx;

static void wdq_rows(void *p, size_t begin, size_t end, int thread) {
    (void)thread;
    const wdq_ctx *c = p;
    int64_t r0 = c->r0 + (int64_t)begin, r1 = c->r0 + (int64_t)end;
    dequant_tile(c->fn, c->w, r0, r1, 0, c->w->cols, c->out + (int64_t)begin * c->w->cols, c->w->cols);
}

void fp8_weight_dequant(const fp8_weight *w, int64_t r0, int64_t r1, float *out, tp_pool *pool) {
    if (r1 <= r0) return;
    wdq_ctx c = {.w = w, .r0 = r0, .out = out, .fn = pick_run()};
    tp_parallel_for(pool, (size_t)(r1 - r0), wdq_rows, &c);
}

typedef struct {
    float *y;
    const float *x, *b;
    const fp8_weight *w;
    int64_t M;
    dequant_fn fn;
} lin_ctx;

static void lin_tiles(void *p, size_t begin, size_t end, int thread) {
    (void)thread;
    const lin_ctx *c = p;
    const fp8_weight *w = c->w;
    int64_t N = w->rows, K = w->cols, M = c->M;
    _Alignas(64) float tile[FP8_TILE_N * FP8_TILE_K];
    for (size_t t = begin; t < end; t++) {
        int64_t n0 = (int64_t)t * FP8_TILE_N, n1 = n0 + FP8_TILE_N < N ? n0 + FP8_TILE_N : N, nn = n1 - n0;
        /* y starts as the bias or zero, and every K tile adds to it (beta = 1: never relies on
         * how a BLAS treats beta = 0 on a NaN it would overwrite) */
        for (int64_t m = 0; m < M; m++) {
            if (c->b) memcpy(c->y + m * N + n0, c->b + n0, (size_t)nn * sizeof(float));
            else memset(c->y + m * N + n0, 0, (size_t)nn * sizeof(float));
        }
        const float beta = 1.0f;
        for (int64_t k0 = 0; k0 < K; k0 += FP8_TILE_K) {
            int64_t kk = K - k0 < FP8_TILE_K ? K - k0 : FP8_TILE_K;
            dequant_tile(c->fn, w, n0, n1, k0, k0 + kk, tile, kk);
            /* (one row goes to a matrix-vector product inside mm_sgemm) */
            mm_sgemm(false, true, M, nn, kk, 1.0f, c->x + k0, K, tile, kk, beta, c->y + n0, N);
        }
    }
}

void fp8_linear_fwd(float *y, const float *x, const fp8_weight *w, const float *b, int64_t M, tp_pool *pool) {
    if (M <= 0 || w->rows <= 0) return;
    lin_ctx c = {.y = y, .x = x, .b = b, .w = w, .M = M, .fn = pick_run()};
    tp_parallel_for(pool, (size_t)((w->rows + FP8_TILE_N - 1) / FP8_TILE_N), lin_tiles, &c);
}

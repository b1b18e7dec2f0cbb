#include "kernels/convert.h"

#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t f32_to_bf16(float f) {
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                            /* nearest, ties to even */
    return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return u2f(sign | 0x7f800000u | (man << 13));      /* inf / nan */
    if (exp == 0) {
        float v = ldexpf((float)man, -24);                               /* zero / subnormal */
        return sign ? -v : v;
    }
    return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_f16(float f) {
    uint32_t u = f2u(f), sign = (u >> 16) & 0x8000;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00);              /* nan */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);             /* rounds to inf (>= 65520) */
    if (a < 0x38800000u) {                                               /* result is subnormal or zero */
        /* value = a as float; the subnormal unit is 2^-24: round(value / 2^-24), ties to even */
        float v = u2f(a) * 16777216.0f;                                  /* exact: power-of-two scaling */
        float r = rintf(v);                                              /* default mode: ties to even */
        return (uint16_t)(sign | (uint32_t)r);
    }
    uint32_t exp = (a >> 23) - 112, man = a & 0x7fffffu;
    uint32_t h = (exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;          /* may carry into the exponent: fine */
    return (uint16_t)(sign | h);
}

float fp8e4m3_to_f32(uint8_t b) {
    uint32_t sign = b >> 7, exp = (b >> 3) & 0xf, man = b & 7;
    float v;
    if (exp == 0xf && man == 7) return sign ? -NAN : NAN;
    if (exp == 0) v = ldexpf((float)man, -9);                            /* subnormal: man/8 · 2^-6 */
    else v = ldexpf(1.0f + (float)man / 8.0f, (int)exp - 7);
    return sign ? -v : v;
}

float fp8e5m2_to_f32(uint8_t b) { return f16_to_f32((uint16_t)b << 8); }

#define CVT_LOOP(T, conv)                                      \
    do {                                                       \
        const unsigned char *s = src;                          \
        for (size_t i = 0; i < n; i++) {                       \
            T v;                                               \
            memcpy(&v, s + i * sizeof(T), sizeof(T));          \
            dst[i] = conv(v);                                  \
        }                                                      \
    } while (0)

static void bf16_run_c(const void *src, float *dst, size_t n) { CVT_LOOP(uint16_t, bf16_to_f32); }
static void f16_run_c(const void *src, float *dst, size_t n) { CVT_LOOP(uint16_t, f16_to_f32); }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define CVT_X86 1
/* The same on AVX2, chosen at run time: sixteen bf16 (one unaligned 32-byte load; src may sit
 * at any byte address) are zero-extended to 32 bits and shifted up by 16 — exactly
 * bf16_to_f32, NaN payloads included. The tail (n % 16) goes through the scalar loop. */
__attribute__((target("avx2"))) static void bf16_run_avx2(const void *src, float *dst, size_t n) {
    const unsigned char *s = src;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)(s + 2 * i));
        __m256i lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(h)), 16);
        __m256i hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1)), 16);
        _mm256_storeu_si256((__m256i *)(void *)(dst + i), lo);
        _mm256_storeu_si256((__m256i *)(void *)(dst + i + 8), hi);
    }
    bf16_run_c(s + 2 * i, dst + i, n - i);
}

/* f16 on F16C: vcvtph2ps widens exactly (subnormals, infinities; NaNs stay NaN, quiet). */
__attribute__((target("avx2,f16c"))) static void f16_run_f16c(const void *src, float *dst, size_t n) {
    const unsigned char *s = src;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)(s + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm256_castsi256_si128(h)));
        _mm256_storeu_ps(dst + i + 8, _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)));
    }
    f16_run_c(s + 2 * i, dst + i, n - i);
}

/* Asked per call: GCC's __builtin_cpu_supports reads what libgcc found at start-up; clang's
 * knows no "f16c", so there it is CPUID (CPUID.1:ECX bit 29). */
static int cpu_avx2(void) { return __builtin_cpu_supports("avx2"); }
static int cpu_avx2_f16c(void) {
#ifdef __clang__
    unsigned a, b, c, d;
    return __builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
#else
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#endif
}
#endif

void cvt_bf16_to_f32(const void *src, float *dst, size_t n) {
#ifdef CVT_X86
    if (n >= 16 && cpu_avx2()) { bf16_run_avx2(src, dst, n); return; }
#endif
    bf16_run_c(src, dst, n);
}

void cvt_f16_to_f32(const void *src, float *dst, size_t n) {
#ifdef CVT_X86
    if (n >= 16 && cpu_avx2_f16c()) { f16_run_f16c(src, dst, n); return; }
#endif
    f16_run_c(src, dst, n);
}
void cvt_fp8e4m3_to_f32(const void *src, float *dst, size_t n) { CVT_LOOP(uint8_t, fp8e4m3_to_f32); }
void cvt_fp8e5m2_to_f32(const void *src, float *dst, size_t n) { CVT_LOOP(uint8_t, fp8e5m2_to_f32); }

void cvt_f32_to_bf16(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_bf16(src[i]);
}

void cvt_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_f16(src[i]);
}

static float f64_to_f32(double d) { return (float)d; }

int cvt_to_f32(rt_dtype dt, const void *src, float *dst, size_t n) {
    switch (dt) {
    case RT_DT_F32: if (n) memcpy(dst, src, n * sizeof *dst); return 0;
    case RT_DT_F64: CVT_LOOP(double, f64_to_f32); return 0;
    case RT_DT_F16: cvt_f16_to_f32(src, dst, n); return 0;
    case RT_DT_BF16: cvt_bf16_to_f32(src, dst, n); return 0;
    case RT_DT_F8_E4M3: cvt_fp8e4m3_to_f32(src, dst, n); return 0;
    case RT_DT_F8_E5M2: cvt_fp8e5m2_to_f32(src, dst, n); return 0;
    default: return rt_fail(RT_EUNSUPPORTED, "cannot convert %s to f32", rt_dtype_name(dt));
    }
}

#define FILL_CHUNK ((size_t)1 << 18)   /* elements: 1 MiB of f32, zeroed by the kernel and still in cache */

typedef struct {
    rt_dtype dt;
    const unsigned char *src;
    float *dst;
    size_t n, es;
} fill_ctx;

static void fill_chunks(void *vctx, size_t c0, size_t c1, int thread) {
    const fill_ctx *c = vctx;
    for (size_t k = c0; k < c1; k++) {
        size_t i = k * FILL_CHUNK, m = c->n - i < FILL_CHUNK ? c->n - i : FILL_CHUNK;
        rt_prefault(c->dst + i, m * sizeof *c->dst);
        (void)cvt_to_f32(c->dt, c->src + i * c->es, c->dst + i, m);   /* the dtype was checked */
    }
}

int cvt_to_f32_fill(rt_dtype dt, const void *src, float *dst, size_t n, tp_pool *pool) {
    int rc = cvt_to_f32(dt, src, dst, 0);   /* a dtype it cannot convert: the error, nothing written */
    if (rc || !n) return rc;
    fill_ctx c = {dt, src, dst, n, rt_dtype_size(dt)};
    tp_parallel_for(pool, (n + FILL_CHUNK - 1) / FILL_CHUNK, fill_chunks, &c);
    return 0;
}

typedef struct {
    const uint8_t *w;
    const unsigned char *scale;
    int64_t rows, cols, scols;
    int br, bc;
    float *out;
} dequant_ctx;

static void dequant_rows(void *vctx, size_t r0, size_t r1, int thread) {
    const dequant_ctx *c = vctx;
    float lut[256];
    for (int i = 0; i < 256; i++) lut[i] = fp8e4m3_to_f32((uint8_t)i);
    for (size_t r = r0; r < r1; r++) {
        const uint8_t *wr = c->w + r * (size_t)c->cols;
        float *o = c->out + r * (size_t)c->cols;
        const unsigned char *srow = c->scale + (r / (size_t)c->br) * (size_t)c->scols * 4;
        for (int64_t cb = 0; cb < c->scols; cb++) {
            float s;
            memcpy(&s, srow + cb * 4, 4);
            int64_t c0 = cb * c->bc, c1 = c0 + c->bc < c->cols ? c0 + c->bc : c->cols;
            for (int64_t j = c0; j < c1; j++) o[j] = lut[wr[j]] * s;
        }
    }
}

void fp8_block_dequant(const void *w, const void *scale_inv, int64_t rows, int64_t cols, int br, int bc,
                       float *out, tp_pool *pool) {
    dequant_ctx c = {w, scale_inv, rows, cols, (cols + bc - 1) / bc, br, bc, out};
    tp_parallel_for(pool, (size_t)rows, dequant_rows, &c);
}

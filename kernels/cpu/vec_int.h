/* kernels/cpu/vec_int.h — private AVX2 helpers of the CPU kernels (attention, SwiGLU, AdamW,
 * cross-entropy).
 *
 * vec_avx2() says whether this CPU runs AVX2 + FMA (asked per kernel call: GCC's
 * __builtin_cpu_supports reads what libgcc found at start-up). Every helper takes that answer
 * and falls back to plain C (libm expf) without it, so any x86-64 or other CPU gets a result.
 *
 * vec_exp8 is expf on 8 lanes: Cody–Waite reduction x = n·ln2 + r (|r| ≤ ln2/2, ln2 split in
 * two parts), a degree-6 polynomial for e^r (the Cephes expf coefficients), and 2^n built in the
 * exponent bits. Error ≤ 2 ulp of the correctly rounded result over [-87.33, 88.37] (1.24 ulp
 * measured; tests/unit/test_kernels_vec.c checks it against exp in double); below -87.33 it
 * returns 0 (true results there are subnormal, < 1.2e-38), above 88.37 +inf (true results there
 * are within a factor 1.5 of FLT_MAX); NaN stays NaN. Nothing here allocates or fails. */
#ifndef RT_KERNELS_CPU_VEC_INT_H
#define RT_KERNELS_CPU_VEC_INT_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RT_VEC_X86 1
#include <immintrin.h>
#define VEC_AVX2 __attribute__((target("avx2,fma")))
#endif

static inline bool vec_avx2(void) {
#ifdef RT_VEC_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

#ifdef RT_VEC_X86
VEC_AVX2 static inline __m256 vec_exp8(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365447504f);
    __m256 over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ), under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    y = _mm256_andnot_ps(under, y);
    y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), over);
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));   /* NaN in, NaN out */
}

VEC_AVX2 static inline float vec_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* the n-element tail of a loop in steps of 8, as a mask for maskload/maskstore */
VEC_AVX2 static inline __m256i vec_tail_mask(int64_t n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), idx);
}

VEC_AVX2 static inline float vec_max_avx2(const float *x, int64_t n) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    float r = _mm_cvtss_f32(s);
    for (; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}

VEC_AVX2 static inline float vec_exp_shift_sum_avx2(float *x, int64_t n, float shift) {
    __m256 acc = _mm256_setzero_ps(), sh = _mm256_set1_ps(shift);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = vec_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    if (i < n) {
        __m256i mk = vec_tail_mask(n - i);
        __m256 e = vec_exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, mk), sh));
        e = _mm256_and_ps(e, _mm256_castsi256_ps(mk));
        _mm256_maskstore_ps(x + i, mk, e);
        acc = _mm256_add_ps(acc, e);
    }
    return vec_hsum8(acc);
}

/* as vec_exp_shift_sum_avx2, the sum kept in double (long rows: a vocabulary) */
VEC_AVX2 static inline double vec_exp_shift_sumd_avx2(float *x, int64_t n, float shift) {
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    __m256 sh = _mm256_set1_ps(shift);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = vec_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
        _mm256_storeu_ps(x + i, e);
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(a0, a1));
    double s = (t[0] + t[1]) + (t[2] + t[3]);
    for (; i < n; i++) s += (x[i] = expf(x[i] - shift));
    return s;
}

VEC_AVX2 static inline void vec_exp_sub_avx2(float *x, const float *sub, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, vec_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(sub + i))));
    for (; i < n; i++) x[i] = expf(x[i] - sub[i]);
}

VEC_AVX2 static inline void vec_scale_avx2(float *x, int64_t n, float s) {
    __m256 v = _mm256_set1_ps(s);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), v));
    for (; i < n; i++) x[i] *= s;
}

/* dp[i] = p[i]·(dp[i] − d[i]) */
VEC_AVX2 static inline void vec_dsoftmax_avx2(float *dp, const float *p, const float *d, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 t = _mm256_sub_ps(_mm256_loadu_ps(dp + i), _mm256_loadu_ps(d + i));
        _mm256_storeu_ps(dp + i, _mm256_mul_ps(_mm256_loadu_ps(p + i), t));
    }
    for (; i < n; i++) dp[i] = p[i] * (dp[i] - d[i]);
}

/* dp[i] = p[i]·(dp[i] − d) */
VEC_AVX2 static inline void vec_dsoftmax1_avx2(float *dp, const float *p, float d, int64_t n) {
    __m256 dv = _mm256_set1_ps(d);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dp + i, _mm256_mul_ps(_mm256_loadu_ps(p + i), _mm256_sub_ps(_mm256_loadu_ps(dp + i), dv)));
    for (; i < n; i++) dp[i] = p[i] * (dp[i] - d);
}
#endif

/* max of x[0, n) (n ≥ 1) */
static inline float vec_max(bool avx, const float *x, int64_t n) {
#ifdef RT_VEC_X86
    if (avx) return vec_max_avx2(x, n);
#endif
    float r = x[0];
    for (int64_t i = 1; i < n; i++) r = x[i] > r ? x[i] : r;
    return r;
}

/* x[i] = exp(x[i] − shift); returns the sum of the new x */
static inline float vec_exp_shift_sum(bool avx, float *x, int64_t n, float shift) {
#ifdef RT_VEC_X86
    if (avx) return vec_exp_shift_sum_avx2(x, n, shift);
#endif
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += (x[i] = expf(x[i] - shift));
    return s;
}

/* x[i] = exp(x[i] − shift); returns the sum of the new x, summed in double */
static inline double vec_exp_shift_sumd(bool avx, float *x, int64_t n, float shift) {
#ifdef RT_VEC_X86
    if (avx) return vec_exp_shift_sumd_avx2(x, n, shift);
#endif
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (x[i] = expf(x[i] - shift));
    return s;
}

/* x[i] = exp(x[i] − sub[i]) */
static inline void vec_exp_sub(bool avx, float *x, const float *sub, int64_t n) {
#ifdef RT_VEC_X86
    if (avx) { vec_exp_sub_avx2(x, sub, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) x[i] = expf(x[i] - sub[i]);
}

static inline void vec_scale_f(bool avx, float *x, int64_t n, float s) {
#ifdef RT_VEC_X86
    if (avx) { vec_scale_avx2(x, n, s); return; }
#endif
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

static inline void vec_dsoftmax(bool avx, float *dp, const float *p, const float *d, int64_t n) {
#ifdef RT_VEC_X86
    if (avx) { vec_dsoftmax_avx2(dp, p, d, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) dp[i] = p[i] * (dp[i] - d[i]);
}

static inline void vec_dsoftmax1(bool avx, float *dp, const float *p, float d, int64_t n) {
#ifdef RT_VEC_X86
    if (avx) { vec_dsoftmax1_avx2(dp, p, d, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) dp[i] = p[i] * (dp[i] - d);
}

#endif

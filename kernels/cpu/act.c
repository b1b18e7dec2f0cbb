/* kernels/cpu/act.c — SwiGLU; 8 lanes at a time with AVX2 (exp from kernels/cpu/vec_int.h,
 * ≤ 2 ulp from expf), plain C otherwise. */
#include "kernels/act.h"

#include "kernels/cpu/vec_int.h"

#include <math.h>

typedef struct {
    float *a, *dg, *du;
    const float *g, *u, *da;
    bool avx;   /* vec_avx2() */
} act_ctx;

#ifdef RT_VEC_X86
VEC_AVX2 static size_t fwd_avx2(const act_ctx *c, size_t begin, size_t end) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    size_t i = begin;
    for (; i + 8 <= end; i += 8) {
        __m256 g = _mm256_loadu_ps(c->g + i);
        __m256 den = _mm256_add_ps(one, vec_exp8(_mm256_sub_ps(zero, g)));
        _mm256_storeu_ps(c->a + i, _mm256_mul_ps(_mm256_div_ps(g, den), _mm256_loadu_ps(c->u + i)));
    }
    return i;
}

VEC_AVX2 static size_t bwd_avx2(const act_ctx *c, size_t begin, size_t end) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    size_t i = begin;
    for (; i + 8 <= end; i += 8) {
        __m256 g = _mm256_loadu_ps(c->g + i), u = _mm256_loadu_ps(c->u + i), da = _mm256_loadu_ps(c->da + i);
        __m256 den = _mm256_add_ps(one, vec_exp8(_mm256_sub_ps(zero, g))), s = _mm256_div_ps(one, den);
        if (c->a) _mm256_storeu_ps(c->a + i, _mm256_mul_ps(_mm256_div_ps(g, den), u));
        _mm256_storeu_ps(c->du + i, _mm256_mul_ps(_mm256_mul_ps(da, g), s));
        __m256 t = _mm256_add_ps(one, _mm256_mul_ps(g, _mm256_sub_ps(one, s)));
        _mm256_storeu_ps(c->dg + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(da, u), s), t));
    }
    return i;
}
#endif

static void fwd(void *p, size_t begin, size_t end, int thread) {
    const act_ctx *c = p;
#ifdef RT_VEC_X86
    if (c->avx) begin = fwd_avx2(c, begin, end);
#endif
    for (size_t i = begin; i < end; i++) {
        float g = c->g[i];
        c->a[i] = g / (1.0f + expf(-g)) * c->u[i];
    }
}

void swiglu_fwd(float *a, const float *g, const float *u, size_t n, tp_pool *pool) {
    act_ctx c = {.a = a, .g = g, .u = u, .avx = vec_avx2()};
    tp_parallel_for(pool, n, fwd, &c);
}

static void bwd(void *p, size_t begin, size_t end, int thread) {
    const act_ctx *c = p;
#ifdef RT_VEC_X86
    if (c->avx) begin = bwd_avx2(c, begin, end);
#endif
    for (size_t i = begin; i < end; i++) {
        float g = c->g[i], den = 1.0f + expf(-g), s = 1.0f / den, da = c->da[i];
        if (c->a) c->a[i] = g / den * c->u[i];   /* the same operations as swiglu_fwd */
        c->du[i] = da * g * s;
        c->dg[i] = da * c->u[i] * s * (1.0f + g * (1.0f - s));
    }
}

void swiglu_bwd(float *dg, float *du, float *a, const float *da, const float *g, const float *u, size_t n,
                tp_pool *pool) {
    act_ctx c = {.a = a, .dg = dg, .du = du, .da = da, .g = g, .u = u, .avx = vec_avx2()};
    tp_parallel_for(pool, n, bwd, &c);
}

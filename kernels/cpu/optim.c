/* kernels/cpu/optim.c — AdamW, sum of squares, scaling. AdamW runs one fused pass, 8 lanes at a
 * time with AVX2: the same operations in the same order as the plain loop (no FMA; -std=c11 keeps
 * the compiler from contracting the plain loop either), so both give the same bits. */
#include "kernels/optim.h"

#include "kernels/cpu/vec_int.h"

#include <math.h>

typedef struct {
    float *p, *m, *v, *x;
    const float *g;
    float decay, b1c, b2, b2c, bc2_sqrt, eps, neg_step, s;
    double *partial;
    size_t n;
    bool avx;   /* vec_avx2() */
} opt_ctx;

#ifdef RT_VEC_X86
VEC_AVX2 static size_t adam_avx2(const opt_ctx *c, size_t begin, size_t end) {
    const __m256 decay = _mm256_set1_ps(c->decay), b1c = _mm256_set1_ps(c->b1c), b2 = _mm256_set1_ps(c->b2),
                 b2c = _mm256_set1_ps(c->b2c), bc2 = _mm256_set1_ps(c->bc2_sqrt), eps = _mm256_set1_ps(c->eps),
                 step = _mm256_set1_ps(c->neg_step);
    size_t i = begin;
    for (; i + 8 <= end; i += 8) {
        __m256 g = _mm256_loadu_ps(c->g + i), m0 = _mm256_loadu_ps(c->m + i);
        __m256 w = _mm256_mul_ps(_mm256_loadu_ps(c->p + i), decay);
        __m256 m = _mm256_add_ps(m0, _mm256_mul_ps(b1c, _mm256_sub_ps(g, m0)));
        __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(c->v + i), b2), _mm256_mul_ps(b2c, _mm256_mul_ps(g, g)));
        __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(v), bc2), eps);
        _mm256_storeu_ps(c->p + i, _mm256_add_ps(w, _mm256_mul_ps(step, _mm256_div_ps(m, denom))));
        _mm256_storeu_ps(c->m + i, m);
        _mm256_storeu_ps(c->v + i, v);
    }
    return i;
}
#endif

static void adam_range(void *p, size_t begin, size_t end, int thread) {
    const opt_ctx *c = p;
#ifdef RT_VEC_X86
    if (c->avx) begin = adam_avx2(c, begin, end);
#endif
    for (size_t i = begin; i < end; i++) {
        float g = c->g[i];
        float w = c->p[i] * c->decay;
        float m = c->m[i] + c->b1c * (g - c->m[i]);
        float v = c->v[i] * c->b2 + c->b2c * (g * g);
        float denom = sqrtf(v) / c->bc2_sqrt + c->eps;
        c->p[i] = w + c->neg_step * (m / denom);
        c->m[i] = m;
        c->v[i] = v;
    }
}

void adamw_step(float *p, const float *g, float *m, float *v, size_t n, const adamw_hparams *h, tp_pool *pool) {
    double bc1 = 1.0 - pow(h->beta1, (double)h->step), bc2 = 1.0 - pow(h->beta2, (double)h->step);
    opt_ctx c = {.p = p, .g = g, .m = m, .v = v,
                 .decay = (float)(1.0 - h->lr * h->weight_decay),
                 .b1c = (float)(1.0 - h->beta1), .b2 = (float)h->beta2, .b2c = (float)(1.0 - h->beta2),
                 .bc2_sqrt = (float)sqrt(bc2), .eps = (float)h->eps, .neg_step = (float)(-(h->lr / bc1)), .avx = vec_avx2()};
    tp_parallel_for(pool, n, adam_range, &c);
}

#define BLOCK 65536
static void sumsq_blocks(void *p, size_t begin, size_t end, int thread) {
    const opt_ctx *c = p;
    for (size_t b = begin; b < end; b++) {
        size_t i0 = b * BLOCK, i1 = i0 + BLOCK < c->n ? i0 + BLOCK : c->n;
        double s = 0;
        for (size_t i = i0; i < i1; i++) s += (double)c->g[i] * c->g[i];
        c->partial[b] = s;
    }
}

double vec_sumsq(const float *x, size_t n, tp_pool *pool) {
    double total = 0, part[256];
    size_t nb = (n + BLOCK - 1) / BLOCK;
    for (size_t b0 = 0; b0 < nb; b0 += 256) {
        size_t cnt = nb - b0 < 256 ? nb - b0 : 256;
        opt_ctx c = {.g = x + b0 * BLOCK, .n = n - b0 * BLOCK, .partial = part};
        tp_parallel_for(pool, cnt, sumsq_blocks, &c);
        for (size_t b = 0; b < cnt; b++) total += part[b];
    }
    return total;
}

static void scale_range(void *p, size_t begin, size_t end, int thread) {
    const opt_ctx *c = p;
    for (size_t i = begin; i < end; i++) c->x[i] *= c->s;
}

void vec_scale(float *x, size_t n, float s, tp_pool *pool) {
    opt_ctx c = {.x = x, .s = s};
    tp_parallel_for(pool, n, scale_range, &c);
}

/* kernels/cpu/mla.c — multi-head latent attention, naive and absorbed (see kernels/mla.h). */
#include "kernels/mla.h"

#include <math.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "core/status.h"
#include "kernels/matmul.h"

typedef struct {
    const mla_dims *d;
    const float *q, *latent, *kv_b, *kv;   /* kv: decompressed [T, H*(nope+v)] (naive only) */
    const int32_t *ctx;
    int64_t n, T;
    float *out, *scratch;                  /* scratch: per thread */
    int64_t per_thread;
} mla_ctx;

/* Row i of s [n, T]: scale, mask columns >= ctx[i], softmax in place. */
static void softmax_rows(float *s, int64_t n, int64_t T, const int32_t *ctx, float scale) {
    for (int64_t i = 0; i < n; i++) {
        float *r = s + i * T;
        int64_t c = ctx[i];
        float mx = -INFINITY;
        for (int64_t j = 0; j < c; j++) {
            r[j] *= scale;
            if (r[j] > mx) mx = r[j];
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < c; j++) {
            r[j] = expf(r[j] - mx);
            sum += r[j];
        }
        float inv = 1.0f / sum;
        for (int64_t j = 0; j < c; j++) r[j] *= inv;
        for (int64_t j = c; j < T; j++) r[j] = 0.0f;
    }
}

static void naive_heads(void *p, size_t hb, size_t he, int thread) {
    const mla_ctx *c = p;
    const mla_dims *d = c->d;
    int64_t H = d->n_heads, dn = d->nope_dim, dr = d->rope_dim, dv = d->v_dim, R = d->kv_rank;
    int64_t dq = dn + dr, dkv = dn + dv, n = c->n, T = c->T;
    float *s = c->scratch + thread * c->per_thread;
    for (size_t h = hb; h < he; h++) {
        mm_sgemm(false, true, n, T, dn, 1.0f, c->q + h * dq, H * dq, c->kv + h * dkv, H * dkv, 0.0f, s, T);
        mm_sgemm(false, true, n, T, dr, 1.0f, c->q + h * dq + dn, H * dq, c->latent + R, R + dr, 1.0f, s, T);
        softmax_rows(s, n, T, c->ctx, d->scale);
        mm_sgemm(false, false, n, dv, T, 1.0f, s, T, c->kv + h * dkv + dn, H * dkv, 0.0f, c->out + h * dv, H * dv);
    }
}

static void absorbed_heads(void *p, size_t hb, size_t he, int thread) {
    const mla_ctx *c = p;
    const mla_dims *d = c->d;
    int64_t H = d->n_heads, dn = d->nope_dim, dr = d->rope_dim, dv = d->v_dim, R = d->kv_rank;
    int64_t dq = dn + dr, dkv = dn + dv, n = c->n, T = c->T;
    float *s = c->scratch + thread * c->per_thread, *ql = s + n * T, *ol = ql + n * R;
    for (size_t h = hb; h < he; h++) {
        const float *wuk = c->kv_b + (int64_t)h * dkv * R, *wuv = wuk + dn * R;
        /* q_lat [n, R] = q_nope [n, dn] · W_UK[h] [dn, R] */
        mm_sgemm(false, false, n, R, dn, 1.0f, c->q + h * dq, H * dq, wuk, R, 0.0f, ql, R);
        mm_sgemm(false, true, n, T, R, 1.0f, ql, R, c->latent, R + dr, 0.0f, s, T);
        mm_sgemm(false, true, n, T, dr, 1.0f, c->q + h * dq + dn, H * dq, c->latent + R, R + dr, 1.0f, s, T);
        softmax_rows(s, n, T, c->ctx, d->scale);
        /* o_lat [n, R] = p [n, T] · c [T, R]; out_h [n, dv] = o_lat · W_UV[h]ᵀ */
        mm_sgemm(false, false, n, R, T, 1.0f, s, T, c->latent, R + dr, 0.0f, ol, R);
        mm_sgemm(false, true, n, dv, R, 1.0f, ol, R, wuv, R, 0.0f, c->out + h * dv, H * dv);
    }
}

static int check_ctx(const int32_t *ctx, int64_t n, int64_t T) {
    for (int64_t i = 0; i < n; i++)
        if (ctx[i] < 1 || ctx[i] > T)
            return rt_fail(RT_EINVAL, "mla: query %lld sees %d cache rows, not in 1..%lld", (long long)i, ctx[i],
                           (long long)T);
    return 0;
}

int mla_attn_naive(const mla_dims *d, const float *q, int64_t n, const float *latent, int64_t T, const float *kv_b,
                   const int32_t *ctx, float *out, tp_pool *pool) {
    if (n <= 0) return 0;
    int rc = check_ctx(ctx, n, T);
    if (rc) return rc;
    int64_t H = d->n_heads, R = d->kv_rank, dr = d->rope_dim, dkv = d->nope_dim + d->v_dim;
    int nt = tp_size(pool);
    size_t kv_n, s_n;
    if (!rt_mul_ok((size_t)T, (size_t)(H * dkv), &kv_n) || !rt_mul_ok((size_t)(n * T), (size_t)nt, &s_n))
        return rt_fail(RT_ENOMEM, "mla: scratch size overflows");
    float *kv = rt_malloc((kv_n + s_n) * sizeof *kv);
    if (!kv) return RT_ENOMEM;
    /* K_nope | V for every cached row: c [T, R] (row stride R + dr) · kv_bᵀ */
    float *cpk = rt_malloc((size_t)(T * R) * sizeof *cpk);
    if (!cpk) {
        free(kv);
        return RT_ENOMEM;
    }
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < R; j++) cpk[t * R + j] = latent[t * (R + dr) + j];
    mm_linear_fwd(kv, cpk, kv_b, NULL, T, H * dkv, R, pool);
    free(cpk);
    mla_ctx c = {.d = d, .q = q, .latent = latent, .kv_b = kv_b, .kv = kv, .ctx = ctx, .n = n, .T = T, .out = out,
                 .scratch = kv + kv_n, .per_thread = n * T};
    tp_parallel_for(pool, (size_t)H, naive_heads, &c);
    free(kv);
    return 0;
}

int mla_attn_absorbed(const mla_dims *d, const float *q, int64_t n, const float *latent, int64_t T,
                      const float *kv_b, const int32_t *ctx, float *out, tp_pool *pool) {
    if (n <= 0) return 0;
    int rc = check_ctx(ctx, n, T);
    if (rc) return rc;
    int64_t per = n * T + 2 * n * d->kv_rank;
    size_t cnt;
    if (!rt_mul_ok((size_t)per, (size_t)tp_size(pool), &cnt)) return rt_fail(RT_ENOMEM, "mla: scratch size overflows");
    float *scratch = rt_malloc(cnt * sizeof *scratch);
    if (!scratch) return RT_ENOMEM;
    mla_ctx c = {.d = d, .q = q, .latent = latent, .kv_b = kv_b, .ctx = ctx, .n = n, .T = T, .out = out,
                 .scratch = scratch, .per_thread = per};
    tp_parallel_for(pool, (size_t)d->n_heads, absorbed_heads, &c);
    free(scratch);
    return 0;
}

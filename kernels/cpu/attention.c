/* kernels/cpu/attention.c — packed causal GQA attention, one query (or key) at a time.
 *
 * The forward keeps a running maximum and sum (online softmax), so no score buffer is
 * needed; the backward recomputes p = exp(s − lse) instead of storing probabilities. */
#include "kernels/attention.h"

#include <math.h>
#include <string.h>

/* Eight partial sums so the compiler can vectorize without reassociating. */
static inline float dot(const float *a, const float *b, int64_t n) {
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline void axpy(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

typedef struct {
    float *o, *lse, *dq, *dk, *dv, *dsum;
    const float *q, *k, *v, *dout, *oo, *lse_in;
    const int32_t *ds;
    int64_t T, Hq, Hkv, hd;
    float scale;
} attn_ctx;

static void fwd_items(void *p, size_t begin, size_t end, int thread) {
    const attn_ctx *c = p;
    int64_t rep = c->Hq / c->Hkv, hd = c->hd;
    float acc[ATTN_MAX_HEAD_DIM];
    for (size_t it = begin; it < end; it++) {
        int64_t h = (int64_t)it / c->T, t = (int64_t)it % c->T, kh = h / rep;
        const float *q = c->q + (t * c->Hq + h) * hd;
        float m = -INFINITY, l = 0;
        memset(acc, 0, (size_t)hd * sizeof *acc);
        for (int64_t s = c->ds[t]; s <= t; s++) {
            const float *k = c->k + (s * c->Hkv + kh) * hd, *v = c->v + (s * c->Hkv + kh) * hd;
            float sc = dot(q, k, hd) * c->scale;
            if (sc > m) {
                float r = expf(m - sc);
                l *= r;
                for (int64_t i = 0; i < hd; i++) acc[i] *= r;
                m = sc;
            }
            float e = expf(sc - m);
            l += e;
            axpy(acc, e, v, hd);
        }
        float *o = c->o + (t * c->Hq + h) * hd, inv = 1.0f / l;
        for (int64_t i = 0; i < hd; i++) o[i] = acc[i] * inv;
        c->lse[h * c->T + t] = m + logf(l);
    }
}

void attn_fwd(float *o, float *lse, const float *q, const float *k, const float *v, const int32_t *doc_start,
              int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, float scale, tp_pool *pool) {
    attn_ctx c = {.o = o, .lse = lse, .q = q, .k = k, .v = v, .ds = doc_start, .T = T, .Hq = Hq, .Hkv = Hkv,
                  .hd = hd, .scale = scale};
    tp_parallel_for(pool, (size_t)(Hq * T), fwd_items, &c);
}

/* dq[t] = scale · Σ_s p_ts (dp_ts − D_t) k_s, with dp_ts = dout_t·v_s and D_t = dout_t·o_t. */
static void bwd_q_items(void *p, size_t begin, size_t end, int thread) {
    const attn_ctx *c = p;
    int64_t rep = c->Hq / c->Hkv, hd = c->hd;
    for (size_t it = begin; it < end; it++) {
        int64_t h = (int64_t)it / c->T, t = (int64_t)it % c->T, kh = h / rep;
        int64_t qi = (t * c->Hq + h) * hd;
        const float *q = c->q + qi, *dout = c->dout + qi;
        float D = dot(dout, c->oo + qi, hd), lse = c->lse_in[h * c->T + t];
        c->dsum[h * c->T + t] = D;
        float *dq = c->dq + qi;
        memset(dq, 0, (size_t)hd * sizeof *dq);
        for (int64_t s = c->ds[t]; s <= t; s++) {
            const float *k = c->k + (s * c->Hkv + kh) * hd, *v = c->v + (s * c->Hkv + kh) * hd;
            float pr = expf(dot(q, k, hd) * c->scale - lse);
            float g = pr * (dot(dout, v, hd) - D) * c->scale;
            axpy(dq, g, k, hd);
        }
    }
}

/* dk[s] = scale · Σ_{h in group} Σ_{t ≥ s in s's document} ds_ts q_t;  dv[s] = Σ p_ts dout_t. */
static void bwd_kv_items(void *p, size_t begin, size_t end, int thread) {
    const attn_ctx *c = p;
    int64_t rep = c->Hq / c->Hkv, hd = c->hd;
    for (size_t it = begin; it < end; it++) {
        int64_t kh = (int64_t)it / c->T, s = (int64_t)it % c->T;
        int64_t ki = (s * c->Hkv + kh) * hd;
        const float *k = c->k + ki, *v = c->v + ki;
        float *dk = c->dk + ki, *dv = c->dv + ki;
        memset(dk, 0, (size_t)hd * sizeof *dk);
        memset(dv, 0, (size_t)hd * sizeof *dv);
        int32_t doc = c->ds[s];
        for (int64_t t = s; t < c->T && c->ds[t] == doc; t++) {
            for (int64_t h = kh * rep; h < (kh + 1) * rep; h++) {
                int64_t qi = (t * c->Hq + h) * hd;
                const float *q = c->q + qi, *dout = c->dout + qi;
                float pr = expf(dot(q, k, hd) * c->scale - c->lse_in[h * c->T + t]);
                float D = c->dsum[h * c->T + t];
                float g = pr * (dot(dout, v, hd) - D) * c->scale;
                axpy(dk, g, q, hd);
                axpy(dv, pr, dout, hd);
            }
        }
    }
}

void attn_bwd(float *dq, float *dk, float *dv, float *scratch, const float *dout, const float *o, const float *lse,
              const float *q, const float *k, const float *v, const int32_t *doc_start, int64_t T, int64_t Hq,
              int64_t Hkv, int64_t hd, float scale, tp_pool *pool) {
    attn_ctx c = {.dsum = scratch, .dq = dq, .dk = dk, .dv = dv, .dout = dout, .oo = o, .lse_in = lse, .q = q, .k = k, .v = v,
                  .ds = doc_start, .T = T, .Hq = Hq, .Hkv = Hkv, .hd = hd, .scale = scale};
    tp_parallel_for(pool, (size_t)(Hq * T), bwd_q_items, &c);
    tp_parallel_for(pool, (size_t)(Hkv * T), bwd_kv_items, &c);
}

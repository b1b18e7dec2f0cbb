/* kernels/cpu/attention.c — packed causal GQA attention in blocks, scores through sgemm.
 *
 * Forward, per (head h, query block [t0, t1)): the keys are [k0, t1) with k0 the start of
 * t0's document; S = scale·Q·Kᵀ, each row softmaxed over its own document's keys up to
 * itself (others get probability 0), O = P·V, lse = max + log Σ.
 * Backward pass 1, per (h, query block): P again from S and lse, dP = dO·Vᵀ,
 * dS = P ⊙ (dP − D) with D_t = dO_t·O_t, dQ = scale·dS·K.
 * Backward pass 2, per (kv head, key block [s0, s1)): the queries are [s0, e) with e the end
 * of the document of s1−1; for each query head of the group Pᵀ, dPᵀ and dSᵀ as above,
 * transposed, and dV += Pᵀ·dO, dK += scale·dSᵀ·Q. */
#include "kernels/attention.h"

#include "kernels/cpu/vec_int.h"
#include "kernels/matmul.h"

#include <math.h>
#include <string.h>

#define BLK ATTN_BLOCK

/* D for every (head, query), then two [BLK, T] blocks per thread. */
size_t attn_workspace_floats(int64_t T, int64_t Hq, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    return (size_t)n_threads * 2 * BLK * (size_t)T + (size_t)(Hq * T);
}

typedef struct {
    float *o, *lse, *dq, *dk, *dv, *ws;
    const float *q, *k, *v, *dout, *oo, *lse_in;
    const int32_t *ds;
    int64_t T, Hq, Hkv, hd, nblk;
    float scale;
    bool avx;   /* vec_avx2() */
} attn_ctx;

static float *thread_ws(const attn_ctx *c, int thread, int which) {
    return c->ws + (size_t)(c->Hq * c->T) + ((size_t)thread * 2 + (size_t)which) * BLK * (size_t)c->T;
}

/* C[m, n] = alpha · A[m, hd] · B[n, hd]ᵀ with row strides lda, ldb. */
static void gemm_nt(int64_t m, int64_t n, int64_t kd, float alpha, const float *A, int64_t lda, const float *B,
                    int64_t ldb, float *C, int64_t ldc) {
    mm_sgemm(false, true, m, n, kd, alpha, A, lda, B, ldb, 0.0f, C, ldc);
}

/* C[m, n] (= or +=) alpha · A[m, kk] · B[kk, n]. */
static void gemm_nn(int64_t m, int64_t n, int64_t kk, float alpha, const float *A, int64_t lda, const float *B,
                    int64_t ldb, float beta, float *C, int64_t ldc) {
    mm_sgemm(false, false, m, n, kk, alpha, A, lda, B, ldb, beta, C, ldc);
}

static void fwd_blocks(void *p, size_t begin, size_t end, int thread) {
    const attn_ctx *c = p;
    int64_t rep = c->Hq / c->Hkv, hd = c->hd, lq = c->Hq * hd, lk = c->Hkv * hd;
    float *S = thread_ws(c, thread, 0);
    for (size_t it = begin; it < end; it++) {
        int64_t h = (int64_t)it / c->nblk, t0 = ((int64_t)it % c->nblk) * BLK, kh = h / rep;
        int64_t t1 = t0 + BLK < c->T ? t0 + BLK : c->T, k0 = c->ds[t0], nk = t1 - k0, m = t1 - t0;
        gemm_nt(m, nk, hd, c->scale, c->q + t0 * lq + h * hd, lq, c->k + k0 * lk + kh * hd, lk, S, nk);
        for (int64_t r = 0; r < m; r++) {
            int64_t t = t0 + r, a = c->ds[t] - k0, b = t - k0;
            float *row = S + r * nk, mx = vec_max(c->avx, row + a, b - a + 1);
            memset(row, 0, (size_t)a * sizeof *row);   /* other documents and the future: p = 0, no exp */
            memset(row + b + 1, 0, (size_t)(nk - b - 1) * sizeof *row);
            float sum = vec_exp_shift_sum(c->avx, row + a, b - a + 1, mx);
            vec_scale_f(c->avx, row + a, b - a + 1, 1.0f / sum);
            c->lse[h * c->T + t] = mx + logf(sum);
        }
        gemm_nn(m, hd, nk, 1.0f, S, nk, c->v + k0 * lk + kh * hd, lk, 0.0f, c->o + t0 * lq + h * hd, lq);
    }
}

void attn_fwd(float *o, float *lse, const float *q, const float *k, const float *v, const int32_t *doc_start,
              int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, float scale, float *ws, tp_pool *pool) {
    attn_ctx c = {.o = o, .lse = lse, .q = q, .k = k, .v = v, .ds = doc_start, .T = T, .Hq = Hq, .Hkv = Hkv,
                  .hd = hd, .scale = scale, .ws = ws, .nblk = (T + BLK - 1) / BLK, .avx = vec_avx2()};
    tp_parallel_for(pool, (size_t)(Hq * c.nblk), fwd_blocks, &c);
}


static void bwd_q_blocks(void *p, size_t begin, size_t end, int thread) {
    const attn_ctx *c = p;
    int64_t rep = c->Hq / c->Hkv, hd = c->hd, lq = c->Hq * hd, lk = c->Hkv * hd;
    float *P = thread_ws(c, thread, 0), *dP = thread_ws(c, thread, 1), *D = c->ws;
    for (size_t it = begin; it < end; it++) {
        int64_t h = (int64_t)it / c->nblk, t0 = ((int64_t)it % c->nblk) * BLK, kh = h / rep;
        int64_t t1 = t0 + BLK < c->T ? t0 + BLK : c->T, k0 = c->ds[t0], nk = t1 - k0, m = t1 - t0;
        const float *Q = c->q + t0 * lq + h * hd, *dO = c->dout + t0 * lq + h * hd;
        const float *K = c->k + k0 * lk + kh * hd, *V = c->v + k0 * lk + kh * hd;
        gemm_nt(m, nk, hd, c->scale, Q, lq, K, lk, P, nk);
        gemm_nt(m, nk, hd, 1.0f, dO, lq, V, lk, dP, nk);
        for (int64_t r = 0; r < m; r++) {
            int64_t t = t0 + r;
            const float *dor = dO + r * lq, *orow = c->oo + t * lq + h * hd;
            float d = 0;
            for (int64_t i = 0; i < hd; i++) d += dor[i] * orow[i];
            D[h * c->T + t] = d;
            /* P and dS over t's document prefix [a, b]; 0 elsewhere, with no exp */
            float *pr = P + r * nk, *dpr = dP + r * nk;
            int64_t a = c->ds[t] - k0, b = t - k0;
            memset(pr, 0, (size_t)a * sizeof *pr), memset(pr + b + 1, 0, (size_t)(nk - b - 1) * sizeof *pr);
            memset(dpr, 0, (size_t)a * sizeof *dpr), memset(dpr + b + 1, 0, (size_t)(nk - b - 1) * sizeof *dpr);
            (void)vec_exp_shift_sum(c->avx, pr + a, b - a + 1, c->lse_in[h * c->T + t]);
            vec_dsoftmax1(c->avx, dpr + a, pr + a, d, b - a + 1);
        }
        gemm_nn(m, hd, nk, c->scale, dP, nk, K, lk, 0.0f, c->dq + t0 * lq + h * hd, lq);
    }
}

static void bwd_kv_blocks(void *p, size_t begin, size_t end, int thread) {
    const attn_ctx *c = p;
    int64_t rep = c->Hq / c->Hkv, hd = c->hd, lq = c->Hq * hd, lk = c->Hkv * hd;
    float *Pt = thread_ws(c, thread, 0), *dPt = thread_ws(c, thread, 1);
    const float *D = c->ws;
    for (size_t it = begin; it < end; it++) {
        int64_t kh = (int64_t)it / c->nblk, s0 = ((int64_t)it % c->nblk) * BLK;
        int64_t s1 = s0 + BLK < c->T ? s0 + BLK : c->T, m = s1 - s0, e = s1;
        while (e < c->T && c->ds[e] == c->ds[s1 - 1]) e++;
        int64_t nq = e - s0;
        const float *K = c->k + s0 * lk + kh * hd, *V = c->v + s0 * lk + kh * hd;
        float *dK = c->dk + s0 * lk + kh * hd, *dV = c->dv + s0 * lk + kh * hd;
        for (int64_t h = kh * rep; h < (kh + 1) * rep; h++) {
            const float *Q = c->q + s0 * lq + h * hd, *dO = c->dout + s0 * lq + h * hd;
            gemm_nt(m, nq, hd, c->scale, K, lk, Q, lq, Pt, nq);
            gemm_nt(m, nq, hd, 1.0f, V, lk, dO, lq, dPt, nq);
            /* key s sees the queries [s, E): those of its own document from s on (doc_start is
             * non-decreasing, so E only grows with s); P and dS are 0 elsewhere, with no exp */
            int64_t E = s0;
            for (int64_t r = 0; r < m; r++) {
                int64_t s = s0 + r, js = r;
                if (E < s + 1) E = s + 1;
                while (E < e && c->ds[E] <= s) E++;
                int64_t je = E - s0, len = je - js;
                float *pr = Pt + r * nq, *dpr = dPt + r * nq;
                memset(pr, 0, (size_t)js * sizeof *pr), memset(pr + je, 0, (size_t)(nq - je) * sizeof *pr);
                memset(dpr, 0, (size_t)js * sizeof *dpr), memset(dpr + je, 0, (size_t)(nq - je) * sizeof *dpr);
                vec_exp_sub(c->avx, pr + js, c->lse_in + h * c->T + s, len);
                vec_dsoftmax(c->avx, dpr + js, pr + js, D + h * c->T + s, len);
            }
            float beta = h == kh * rep ? 0.0f : 1.0f;
            gemm_nn(m, hd, nq, 1.0f, Pt, nq, dO, lq, beta, dV, lk);
            gemm_nn(m, hd, nq, c->scale, dPt, nq, Q, lq, beta, dK, lk);
        }
    }
}

void attn_bwd(float *dq, float *dk, float *dv, const float *dout, const float *o, const float *lse, const float *q,
              const float *k, const float *v, const int32_t *doc_start, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd,
              float scale, float *ws, tp_pool *pool) {
    attn_ctx c = {.dq = dq, .dk = dk, .dv = dv, .dout = dout, .oo = o, .lse_in = lse, .q = q, .k = k, .v = v,
                  .ds = doc_start, .T = T, .Hq = Hq, .Hkv = Hkv, .hd = hd, .scale = scale, .ws = ws,
                  .nblk = (T + BLK - 1) / BLK, .avx = vec_avx2()};
    tp_parallel_for(pool, (size_t)(Hq * c.nblk), bwd_q_blocks, &c);
    tp_parallel_for(pool, (size_t)(Hkv * c.nblk), bwd_kv_blocks, &c);
}

/* ---- paged inference attention ----------------------------------------------------------- */

size_t attn_paged_workspace_floats(int64_t max_ctx, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    return (size_t)n_threads * (size_t)(max_ctx > 0 ? max_ctx : 1);
}

typedef struct {
    float *o, *ws;
    const float *q, *k, *v;
    const int32_t *const *tables;
    const int32_t *ctx;
    int64_t Hq, Hkv, hd, bs, bstride, max_ctx;
    float scale;
} paged_ctx;

/* q·k over one head: 8 independent partial sums (one running sum would wait out the add's
 * latency on every element; decode spends its attention time here) */
static float dot8(const float *a, const float *b, int64_t n) {
    float acc[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[j + l] * b[j + l];
    for (int l = 0; j < n; j++, l++) acc[l] += a[j] * b[j];
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* out += w·v, in blocks of 8 the compiler turns into vector operations (restrict: out and v do
 * not overlap, which it cannot prove on its own) */
static void axpy8(float *restrict out, const float *restrict v, float w, int64_t n) {
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) out[j + l] += w * v[j + l];
    for (; j < n; j++) out[j] += w * v[j];
}

static void paged_rows(void *p, size_t begin, size_t end, int thread) {
    const paged_ctx *c = p;
    int64_t rep = c->Hq / c->Hkv, hd = c->hd, lk = c->Hkv * hd;
    float *S = c->ws + (size_t)thread * (size_t)c->max_ctx;
    for (size_t it = begin; it < end; it++) {
        int64_t i = (int64_t)it / c->Hq, h = (int64_t)it % c->Hq, kh = h / rep, T = c->ctx[i];
        const int32_t *tab = c->tables[i];
        const float *qv = c->q + (i * c->Hq + h) * hd;
        float mx = -INFINITY;
        for (int64_t s = 0; s < T; s++) {
            const float *kr = c->k + (int64_t)tab[s / c->bs] * c->bstride + (s % c->bs) * lk + kh * hd;
            S[s] = dot8(qv, kr, hd) * c->scale;
            if (S[s] > mx) mx = S[s];
        }
        float sum = 0;
        for (int64_t s = 0; s < T; s++) sum += (S[s] = expf(S[s] - mx));
        float inv = 1.0f / sum, *out = c->o + (i * c->Hq + h) * hd;
        for (int64_t j = 0; j < hd; j++) out[j] = 0;
        for (int64_t s = 0; s < T; s++) {
            const float *vr = c->v + (int64_t)tab[s / c->bs] * c->bstride + (s % c->bs) * lk + kh * hd;
            axpy8(out, vr, S[s] * inv, hd);
        }
    }
}

void attn_paged_fwd(float *o, const float *q, int64_t n, int64_t Hq, int64_t Hkv, int64_t hd, float scale,
                    const float *k, const float *v, int64_t block_size, int64_t block_stride,
                    const int32_t *const *tables, const int32_t *ctx, float *ws, tp_pool *pool) {
    int64_t mc = 1;
    for (int64_t i = 0; i < n; i++) mc = ctx[i] > mc ? ctx[i] : mc;
    paged_ctx c = {.o = o, .ws = ws, .q = q, .k = k, .v = v, .tables = tables, .ctx = ctx, .Hq = Hq, .Hkv = Hkv,
                   .hd = hd, .bs = block_size, .bstride = block_stride, .max_ctx = mc, .scale = scale};
    tp_parallel_for(pool, (size_t)(n * Hq), paged_rows, &c);
}

/* kernels/cpu/loss.c — chunked LM head + cross-entropy (its softmax 8 lanes at a time with AVX2). */
#include "kernels/loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "kernels/cpu/vec_int.h"
#include "kernels/matmul.h"

int ce_workspace_init(ce_workspace *ws, int64_t chunk, int64_t V, int64_t D) {
    memset(ws, 0, sizeof *ws);
    if (chunk < 1) chunk = 1;
    ws->chunk = chunk;
    ws->V = V;
    ws->D = D;
    ws->logits = rt_aligned_alloc(64, (size_t)(chunk * V) * sizeof(float));
    ws->hc = rt_aligned_alloc(64, (size_t)(chunk * D) * sizeof(float));
    ws->dhc = rt_aligned_alloc(64, (size_t)(chunk * D) * sizeof(float));
    ws->rows = rt_malloc((size_t)chunk * sizeof(int64_t));
    ws->row_loss = rt_malloc((size_t)chunk * sizeof(double));
    if (!ws->logits || !ws->hc || !ws->dhc || !ws->rows || !ws->row_loss) {
        ce_workspace_free(ws);
        return rt_errorf(RT_ENOMEM, "cross-entropy workspace for %lld rows of %lld logits", (long long)chunk,
                         (long long)V);
    }
    return 0;
}

void ce_workspace_free(ce_workspace *ws) {
    free(ws->logits);
    free(ws->hc);
    free(ws->dhc);
    free(ws->rows);
    free(ws->row_loss);
    memset(ws, 0, sizeof *ws);
}

typedef struct {
    ce_workspace *ws;
    const int32_t *target;
    float scale;
    int grad;
    bool avx;   /* vec_avx2() */
} ce_ctx;

/* Row r of the chunk: loss, and (grad) its logits turned into scale·(softmax − onehot); one
 * exponential per logit. */
static void softmax_rows(void *p, size_t begin, size_t end, int thread) {
    const ce_ctx *c = p;
    int64_t V = c->ws->V;
    for (size_t r = begin; r < end; r++) {
        float *z = c->ws->logits + (int64_t)r * V;
        int32_t y = c->target[c->ws->rows[r]];
        float mx = vec_max(c->avx, z, V), zy = z[y];
        double sum = vec_exp_shift_sumd(c->avx, z, V, mx);   /* z now holds exp(z − max) */
        c->ws->row_loss[r] = (double)mx + log(sum) - (double)zy;
        if (!c->grad) continue;
        vec_scale_f(c->avx, z, V, (float)((double)c->scale / sum));
        z[y] -= c->scale;
    }
}

void ce_fused(double *loss_sum, float *dh, float *dw, const float *h, const float *w, const int32_t *target, int64_t M,
              float scale, ce_workspace *ws, tp_pool *pool) {
    int64_t D = ws->D, V = ws->V;
    double total = 0;
    if (dh) memset(dh, 0, (size_t)(M * D) * sizeof *dh);
    ce_ctx c = {.ws = ws, .target = target, .scale = scale, .grad = dh != NULL, .avx = vec_avx2()};
    int64_t i = 0;
    while (i < M) {
        int64_t n = 0;
        for (; i < M && n < ws->chunk; i++) {
            if (target[i] < 0) continue;
            ws->rows[n] = i;
            memcpy(ws->hc + n * D, h + i * D, (size_t)D * sizeof(float));
            n++;
        }
        if (n == 0) break;
        mm_linear_fwd(ws->logits, ws->hc, w, NULL, n, V, D, pool);
        tp_parallel_for(pool, (size_t)n, softmax_rows, &c);
        for (int64_t r = 0; r < n; r++) total += ws->row_loss[r];
        if (!dh) continue;
        mm_linear_bwd_x(ws->dhc, false, ws->logits, w, n, V, D, pool);
        mm_linear_bwd_w(dw, NULL, ws->logits, ws->hc, n, V, D, pool);
        for (int64_t r = 0; r < n; r++) memcpy(dh + ws->rows[r] * D, ws->dhc + r * D, (size_t)D * sizeof(float));
    }
    *loss_sum = total;
}

/* ---- logit distillation ---- */

int kd_parse_kind(const char *s, kd_kind *kind, double *beta) {
    *beta = 0;
    if (!strcmp(s, "forward")) { *kind = KD_FORWARD; return 0; }
    if (!strcmp(s, "reverse")) { *kind = KD_REVERSE; return 0; }
    if (!strcmp(s, "uld")) { *kind = KD_ULD; return 0; }
    if (!strncmp(s, "jsd:", 4)) {
        char *end;
        double b = strtod(s + 4, &end);
        if (end != s + 4 && !*end && b > 0 && b < 1) {
            *kind = KD_JSD;
            *beta = b;
            return 0;
        }
        return rt_fail(RT_EINVAL, "KD loss '%s': jsd:B needs 0 < B < 1", s);
    }
    return rt_fail(RT_EINVAL, "unknown KD loss '%s' (forward, reverse, jsd:B, uld)", s);
}

int kd_check(const kd_spec *kd, const int32_t *target, int64_t M, int64_t V) {
    if (!(kd->alpha >= 0 && kd->alpha <= 1)) return rt_fail(RT_EINVAL, "KD alpha %g not in [0, 1]", kd->alpha);
    if (!(kd->temperature > 0 && isfinite(kd->temperature)))
        return rt_fail(RT_EINVAL, "KD temperature %g must be positive", kd->temperature);
    if (kd->kind == KD_JSD && !(kd->beta > 0 && kd->beta < 1)) return rt_fail(RT_EINVAL, "KD jsd beta %g not in (0, 1)", kd->beta);
    if (kd->k < 1 || kd->k > KD_MAX_K) return rt_fail(RT_EINVAL, "KD top-k %d not in 1..%d", kd->k, KD_MAX_K);
    for (int64_t i = 0; i < M; i++) {
        if (target[i] < 0) continue;
        int n = kd->top_n[i];
        if (n > kd->k) return rt_fail(RT_EINVAL, "KD row %lld: %d teacher entries, at most %d", (long long)i, n, kd->k);
        const int32_t *id = kd->top_ids + i * kd->k;
        const float *lp = kd->top_lps + i * kd->k;
        for (int a = 0; a < n; a++) {
            if (!isfinite(lp[a])) return rt_fail(RT_EINVAL, "KD row %lld: teacher logprob %g is not finite", (long long)i, (double)lp[a]);
            if (kd->kind == KD_ULD) continue;
            if (id[a] < 0 || id[a] >= V)
                return rt_fail(RT_EINVAL, "KD row %lld: teacher token %d outside the student's vocabulary of %lld "
                               "(a different tokenizer needs --kd-loss uld)", (long long)i, id[a], (long long)V);
            for (int b = 0; b < a; b++)
                if (id[b] == id[a]) return rt_fail(RT_EINVAL, "KD row %lld: teacher token %d listed twice", (long long)i, id[a]);
        }
    }
    return 0;
}

typedef struct {
    ce_workspace *ws;
    const int32_t *target;
    float scale;
    int grad;
    const kd_spec *kd;
    double *row_kd, *row_ce;
    float *tscratch;   /* T ≠ 1: [threads, V], each thread's row of exp((z − max)/T) */
} kd_ctx;

static double sgn(double x) { return (double)(x > 0) - (double)(x < 0); }

/* The student's n largest logits of z, descending (ties: lower index first). */
static void top_n_of(const float *z, int64_t V, int n, int32_t *idx) {
    float val[KD_MAX_K];
    int have = 0;
    for (int64_t j = 0; j < V; j++) {
        if (have == n && !(z[j] > val[n - 1])) continue;
        int p = have < n ? have++ : n - 1;
        while (p > 0 && z[j] > val[p - 1]) { val[p] = val[p - 1]; idx[p] = idx[p - 1]; p--; }
        val[p] = z[j];
        idx[p] = (int32_t)j;
    }
}

static void kd_rows(void *p, size_t begin, size_t end, int thread) {
    const kd_ctx *c = p;
    const kd_spec *kd = c->kd;
    int64_t V = c->ws->V;
    double A = kd->alpha, T = kd->temperature, invT = 1.0 / T;
    for (size_t r = begin; r < end; r++) {
        int64_t i = c->ws->rows[r];
        float *z = c->ws->logits + (int64_t)r * V;
        int32_t y = c->target[i];
        int n = kd->top_n[i];
        float mx = z[0], zy = z[y];
        for (int64_t j = 1; j < V; j++) mx = z[j] > mx ? z[j] : mx;
        /* the buckets' student tokens and their logits, read before z is overwritten */
        int32_t sid[KD_MAX_K];
        float sz[KD_MAX_K];
        if (n > 0 && kd->kind == KD_ULD) top_n_of(z, V, n, sid);
        else if (n > 0) memcpy(sid, kd->top_ids + i * kd->k, (size_t)n * sizeof *sid);
        for (int b = 0; b < n; b++) sz[b] = z[sid[b]];
        /* z becomes exp(z − max) (one exponential per logit, as ce_fused); T ≠ 1 also keeps
         * exp((z − max)/T) in the thread's scratch row */
        double S1 = 0, ST = 0;
        float *eT = c->tscratch ? c->tscratch + (int64_t)thread * V : NULL;
        if (T == 1.0) {
            for (int64_t j = 0; j < V; j++) S1 += (z[j] = expf(z[j] - mx));
            ST = S1;
        } else {
            float iT = (float)invT;
            for (int64_t j = 0; j < V; j++) {
                float d = z[j] - mx;
                S1 += (z[j] = expf(d));
                ST += (eT[j] = expf(d * iT));
            }
        }
        double ce = (double)mx + log(S1) - (double)zy;
        c->row_ce[r] = ce;
        if (n == 0) {   /* no teacher data: plain cross-entropy */
            c->row_kd[r] = 0;
            c->ws->row_loss[r] = ce;
            if (!c->grad) continue;
            float k = (float)((double)c->scale / S1);
            for (int64_t j = 0; j < V; j++) z[j] *= k;
            z[y] -= c->scale;
            continue;
        }
        /* teacher buckets: n tokens (ULD: sorted descending) + tail, floored, tempered */
        const float *lp = kd->top_lps + i * kd->k;
        double P[KD_MAX_K + 1], lq[KD_MAX_K + 1], q[KD_MAX_K + 1], sumP = 0;
        for (int b = 0; b < n; b++) sumP += (P[b] = exp((double)lp[b]));
        P[n] = 1.0 - sumP > 0 ? 1.0 - sumP : 0;
        if (kd->kind == KD_ULD)   /* insertion sort, descending */
            for (int b = 1; b < n; b++)
                for (int a = b; a > 0 && P[a] > P[a - 1]; a--) { double t = P[a]; P[a] = P[a - 1]; P[a - 1] = t; }
        double lmax = -INFINITY, lsum = 0;
        for (int b = 0; b <= n; b++) {
            lq[b] = log(P[b] > KD_TEACHER_FLOOR ? P[b] : KD_TEACHER_FLOOR) * invT;
            lmax = lq[b] > lmax ? lq[b] : lmax;
        }
        for (int b = 0; b <= n; b++) lsum += exp(lq[b] - lmax);
        for (int b = 0; b <= n; b++) { lq[b] -= lmax + log(lsum); q[b] = exp(lq[b]); }
        /* student buckets */
        double s[KD_MAX_K + 1], ls[KD_MAX_K + 1], sumS = 0, logST = log(ST);
        for (int b = 0; b < n; b++) {
            ls[b] = (double)(sz[b] - mx) * invT - logST;
            sumS += (s[b] = exp(ls[b]));
        }
        s[n] = 1.0 - sumS > 0 ? 1.0 - sumS : 0;
        ls[n] = log(s[n] > 1e-300 ? s[n] : 1e-300);
        /* D and g_b = ∂D/∂s_b, kept as sg_b = s_b·g_b where g_b can blow up */
        double D = 0, g[KD_MAX_K + 1], sg[KD_MAX_K + 1], gbar = 0;
        for (int b = 0; b <= n; b++) {
            switch (kd->kind) {
            case KD_FORWARD:
                D += q[b] * (lq[b] - ls[b]);
                g[b] = -q[b] / (s[b] > 1e-300 ? s[b] : 1e-300);
                sg[b] = -q[b];   /* the limit also when s_b underflows */
                break;
            case KD_REVERSE:
                if (s[b] > 0) D += s[b] * (ls[b] - lq[b]);
                g[b] = ls[b] - lq[b] + 1;
                sg[b] = s[b] * g[b];
                break;
            case KD_JSD: {
                double be = kd->beta, m = be * q[b] + (1 - be) * s[b], lm = log(m);
                D += be * q[b] * (lq[b] - lm);
                if (s[b] > 0) D += (1 - be) * s[b] * (ls[b] - lm);
                g[b] = s[b] > 0 ? (1 - be) * (ls[b] - lm) : 0;
                sg[b] = s[b] * g[b];
                break;
            }
            case KD_ULD:
                D += fabs(s[b] - q[b]);
                g[b] = sgn(s[b] - q[b]);
                sg[b] = s[b] * g[b];
                break;
            }
            gbar += sg[b];
        }
        c->row_kd[r] = D;
        c->ws->row_loss[r] = (1 - A) * ce + A * T * T * D;
        if (!c->grad) continue;
        double cce = (double)c->scale * (1 - A), ckd = (double)c->scale * A * T;
        float top_grad[KD_MAX_K];
        for (int b = 0; b < n; b++)
            top_grad[b] = (float)(cce * exp((double)(sz[b] - mx)) / S1 + ckd * (sg[b] - s[b] * gbar));
        double kce = cce / S1, ktail = ckd * (g[n] - gbar) / ST;
        if (T == 1.0) {   /* z holds exp(z − max) */
            float k = (float)(kce + ktail);
            for (int64_t j = 0; j < V; j++) z[j] *= k;
        } else {
            float a = (float)kce, bt = (float)ktail;
            for (int64_t j = 0; j < V; j++) z[j] = z[j] * a + eT[j] * bt;
        }
        for (int b = 0; b < n; b++) z[sid[b]] = top_grad[b];
        z[y] -= (float)cce;
    }
}

int kd_fused(double *loss_sum, double *ce_sum, double *kd_sum, float *dh, float *dw, const float *h, const float *w,
             const int32_t *target, int64_t M, float scale, const kd_spec *kd, ce_workspace *ws, tp_pool *pool) {
    int64_t D = ws->D, V = ws->V;
    int rc = kd_check(kd, target, M, V);
    if (rc) return rc;
    double *row_kd = rt_malloc(2 * (size_t)ws->chunk * sizeof *row_kd);
    float *tscratch = kd->temperature != 1.0 ? rt_malloc((size_t)tp_size(pool) * (size_t)V * sizeof(float)) : NULL;
    if (!row_kd || (kd->temperature != 1.0 && !tscratch)) {
        free(row_kd);
        free(tscratch);
        return rt_fail(RT_ENOMEM, "KD workspace");
    }
    double total = 0, total_kd = 0, total_ce = 0;
    if (dh) memset(dh, 0, (size_t)(M * D) * sizeof *dh);
    kd_ctx c = {.ws = ws, .target = target, .scale = scale, .grad = dh != NULL, .kd = kd, .row_kd = row_kd,
                .row_ce = row_kd + ws->chunk, .tscratch = tscratch};
    int64_t i = 0;
    while (i < M) {
        int64_t n = 0;
        for (; i < M && n < ws->chunk; i++) {
            if (target[i] < 0) continue;
            ws->rows[n] = i;
            memcpy(ws->hc + n * D, h + i * D, (size_t)D * sizeof(float));
            n++;
        }
        if (n == 0) break;
        mm_linear_fwd(ws->logits, ws->hc, w, NULL, n, V, D, pool);
        tp_parallel_for(pool, (size_t)n, kd_rows, &c);
        for (int64_t r = 0; r < n; r++) {
            total += ws->row_loss[r];
            total_kd += row_kd[r];
            total_ce += c.row_ce[r];
        }
        if (!dh) continue;
        mm_linear_bwd_x(ws->dhc, false, ws->logits, w, n, V, D, pool);
        mm_linear_bwd_w(dw, NULL, ws->logits, ws->hc, n, V, D, pool);
        for (int64_t r = 0; r < n; r++) memcpy(dh + ws->rows[r] * D, ws->dhc + r * D, (size_t)D * sizeof(float));
    }
    free(row_kd);
    free(tscratch);
    *loss_sum = total;
    if (kd_sum) *kd_sum = total_kd;
    if (ce_sum) *ce_sum = total_ce;
    return 0;
}

/* kernels/attention: packed documents give what each document gives alone (forward, lse and
 * backward; tolerance 1e-6 relative to the largest value (at least 1): the blocks of a packed batch span
 * other documents' keys, whose probability is exactly 0, but sgemm may sum the remaining
 * terms in another order), and the kernel agrees with a plain softmax(q·kᵀ/√d)·v and its
 * gradients written here in double (tolerance 1e-5: f32 sums over ≤ 40 keys). */
#include <math.h>

#include "kernels/attention.h"
#include "student/rng.h"
#include "testutil.h"

enum { HQ = 4, HKV = 2, HD = 16 };
static const int LENS[] = {5, 17, 1, 9, 8};   /* documents packed end to end; the last is short */
#define NDOC 5

static float *rand_buf(sr_rng *r, size_t n) {
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = (float)sr_normal(r);
    return v;
}

static void expect_close(const float *a, const float *b, size_t n, double tol, const char *what, int doc) {
    double md = 0, mx = 1;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mx = fmax(mx, fabs(b[i]));
    }
    cr_expect_lt(md, tol * mx, "document %d: %s differs by %g (largest value %g)", doc, what, md, mx);
}

static void packed_layout(int32_t *ds, int T) {
    int at = 0;
    for (int d = 0; d < NDOC; d++) {
        for (int i = 0; i < LENS[d]; i++) ds[at + i] = at;
        at += LENS[d];
    }
    cr_assert_eq(at, T);
}

Test(kernels_attention, packed_documents_equal_each_document_alone) {
    int T = 0;
    for (int d = 0; d < NDOC; d++) T += LENS[d];
    sr_rng r;
    sr_seed(&r, 5);
    size_t nq = (size_t)T * HQ * HD, nk = (size_t)T * HKV * HD;
    float *q = rand_buf(&r, nq), *k = rand_buf(&r, nk), *v = rand_buf(&r, nk), *dout = rand_buf(&r, nq);
    float *o = malloc(nq * 4), *lse = malloc((size_t)T * HQ * 4), *dq = malloc(nq * 4), *dk = malloc(nk * 4),
          *dv = malloc(nk * 4), *ws = malloc(attn_workspace_floats(T, HQ, 3) * 4);
    int32_t *ds = malloc((size_t)T * 4);
    packed_layout(ds, T);
    float scale = 1.0f / sqrtf(HD);
    tp_pool *pool;
    cr_assert_eq(tp_create(3, &pool), 0);
    attn_fwd(o, lse, q, k, v, ds, T, HQ, HKV, HD, scale, ws, pool);
    attn_bwd(dq, dk, dv, dout, o, lse, q, k, v, ds, T, HQ, HKV, HD, scale, ws, pool);

    int at = 0;
    for (int d = 0; d < NDOC; d++) {
        int n = LENS[d];
        size_t qo = (size_t)at * HQ * HD, ko = (size_t)at * HKV * HD;
        float *o1 = malloc((size_t)n * HQ * HD * 4), *l1 = malloc((size_t)n * HQ * 4), *dq1 = malloc((size_t)n * HQ * HD * 4),
              *dk1 = malloc((size_t)n * HKV * HD * 4), *dv1 = malloc((size_t)n * HKV * HD * 4), *s1 = malloc(attn_workspace_floats(n, HQ, 1) * 4);
        int32_t *ds1 = calloc((size_t)n, 4);
        attn_fwd(o1, l1, q + qo, k + ko, v + ko, ds1, n, HQ, HKV, HD, scale, s1, NULL);
        attn_bwd(dq1, dk1, dv1, dout + qo, o1, l1, q + qo, k + ko, v + ko, ds1, n, HQ, HKV, HD, scale, s1, NULL);
        expect_close(o1, o + qo, (size_t)n * HQ * HD, 1e-6, "output", d);
        expect_close(dq1, dq + qo, (size_t)n * HQ * HD, 1e-6, "dq", d);
        expect_close(dk1, dk + ko, (size_t)n * HKV * HD, 1e-6, "dk", d);
        expect_close(dv1, dv + ko, (size_t)n * HKV * HD, 1e-6, "dv", d);
        for (int h = 0; h < HQ; h++) expect_close(l1 + (size_t)h * n, lse + (size_t)h * T + at, (size_t)n, 1e-6, "lse", d);
        free(o1); free(l1); free(dq1); free(dk1); free(dv1); free(s1); free(ds1);
        at += n;
    }
    tp_free(pool);
    free(q); free(k); free(v); free(dout); free(o); free(lse); free(dq); free(dk); free(dv); free(ws); free(ds);
}

/* Output of query t, head h, in double: softmax over keys of its document. */
static void naive(double *out, const float *q, const float *k, const float *v, const int32_t *ds, int t, int h) {
    int kh = h / (HQ / HKV);
    double w[64], mx = -INFINITY, sum = 0;
    for (int s = ds[t]; s <= t; s++) {
        double dot = 0;
        for (int i = 0; i < HD; i++) dot += (double)q[(t * HQ + h) * HD + i] * k[(s * HKV + kh) * HD + i];
        w[s - ds[t]] = dot / sqrt(HD);
        mx = fmax(mx, w[s - ds[t]]);
    }
    for (int s = ds[t]; s <= t; s++) sum += (w[s - ds[t]] = exp(w[s - ds[t]] - mx));
    for (int i = 0; i < HD; i++) out[i] = 0;
    for (int s = ds[t]; s <= t; s++)
        for (int i = 0; i < HD; i++) out[i] += w[s - ds[t]] / sum * v[(s * HKV + kh) * HD + i];
}

Test(kernels_attention, forward_matches_plain_softmax_attention) {
    int T = 40;
    sr_rng r;
    sr_seed(&r, 9);
    float *q = rand_buf(&r, (size_t)T * HQ * HD), *k = rand_buf(&r, (size_t)T * HKV * HD), *v = rand_buf(&r, (size_t)T * HKV * HD);
    float *o = malloc((size_t)T * HQ * HD * 4), *lse = malloc((size_t)T * HQ * 4), *ws = malloc(attn_workspace_floats(T, HQ, 1) * 4);
    int32_t ds[40];
    for (int t = 0; t < T; t++) ds[t] = t < 25 ? 0 : 25;
    attn_fwd(o, lse, q, k, v, ds, T, HQ, HKV, HD, 1.0f / sqrtf(HD), ws, NULL);
    double md = 0, ref[HD];
    for (int t = 0; t < T; t++)
        for (int h = 0; h < HQ; h++) {
            naive(ref, q, k, v, ds, t, h);
            for (int i = 0; i < HD; i++) md = fmax(md, fabs(ref[i] - o[(t * HQ + h) * HD + i]));
        }
    cr_expect_lt(md, 1e-5, "max difference %g", md);
    free(q); free(k); free(v); free(o); free(lse); free(ws);
}

/* kernels/cpu/sample.c — the sampling filters, the counter-based RNG and logprobs (see sample.h). */
#include "kernels/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "core/status.h"

uint64_t smp_bits(uint64_t seed, uint64_t stream, uint64_t step) { return rt_hash3(seed, stream, step); }

double smp_uniform(uint64_t seed, uint64_t stream, uint64_t step) {
    return (double)(smp_bits(seed, stream, step) >> 11) * 0x1.0p-53;
}

int smp_check(const smp_params *p) {
    if (!isfinite(p->temperature) || p->temperature < 0)
        return rt_fail(RT_EINVAL, "temperature %g must be a finite value >= 0", (double)p->temperature);
    if (p->top_k < 0) return rt_fail(RT_EINVAL, "top_k %d must be >= 0", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1)) return rt_fail(RT_EINVAL, "top_p %g must be in (0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0 && p->min_p <= 1)) return rt_fail(RT_EINVAL, "min_p %g must be in [0, 1]", (double)p->min_p);
    return 0;
}

typedef struct {
    double p;
    int32_t id;
} cand;

size_t smp_workspace_bytes(int64_t V) { return (size_t)(V > 0 ? V : 1) * sizeof(cand); }

static int by_prob_desc(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int32_t argmax(const float *logits, int64_t V) {
    int64_t best = 0;
    for (int64_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    return (int32_t)best;
}

static inline int before(const cand *x, const cand *y) {   /* x sorts before y: by_prob_desc < 0 */
    return x->p > y->p || (x->p == y->p && x->id < y->id);
}

/* Moves the m first candidates of c[0..n) in by_prob_desc order into c[0..m), in any order
 * (quickselect with median-of-three pivots; the order is total, so the set is exact). */
static void select_top(cand *c, int64_t n, int64_t m) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (before(&c[mid], &c[lo])) { cand t = c[mid]; c[mid] = c[lo]; c[lo] = t; }
        if (before(&c[hi], &c[lo])) { cand t = c[hi]; c[hi] = c[lo]; c[lo] = t; }
        if (before(&c[hi], &c[mid])) { cand t = c[hi]; c[hi] = c[mid]; c[mid] = t; }
        cand pivot = c[mid];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (before(&c[i], &pivot)) i++;
            while (before(&pivot, &c[j])) j--;
            if (i <= j) { cand t = c[i]; c[i] = c[j]; c[j] = t; i++; j--; }
        }
        if (m - 1 <= j) hi = j;
        else if (m - 1 >= i) lo = i;
        else return;
    }
}

/* c[0..sorted) is the sorted head of c[0..n); grows it to at least `want` (geometrically, so a
 * walk down the distribution costs O(n) per growth and usually one or two growths: sampling
 * mass sits in few tokens). Returns the new sorted length. */
static int64_t grow_sorted(cand *c, int64_t n, int64_t sorted, int64_t want) {
    if (want <= sorted) return sorted;
    int64_t m = sorted < 64 ? 64 : sorted * 4;
    if (m < want) m = want;
    if (m > n) m = n;
    if (m < n) select_top(c + sorted, n - sorted, m - sorted);
    qsort(c + sorted, (size_t)(m - sorted), sizeof *c, by_prob_desc);
    return m;
}

/* The kept candidates, most probable first (c[0..return) sorted), with unnormalized
 * probabilities; returns how many (>= 1). *sorted: how much of c is sorted (>= the return);
 * *total: their sum (in sorted order, except when every token is kept: then in id order). */
static int64_t filter(const float *logits, int64_t V, const smp_params *p, cand *c, int64_t *sorted, double *total) {
    double inv_t = 1.0 / p->temperature, mx = -INFINITY, all = 0;
    for (int64_t i = 0; i < V; i++) mx = fmax(mx, (double)logits[i] * inv_t);
    for (int64_t i = 0; i < V; i++) {
        c[i] = (cand){exp((double)logits[i] * inv_t - mx), (int32_t)i};
        all += c[i].p;
    }
    int64_t n = V, s = 0;
    double left = all;   /* the mass of c[0..n) */
    if (p->top_k > 0 && p->top_k < n) {
        n = p->top_k;
        s = grow_sorted(c, V, 0, n);
        left = 0;
        for (int64_t i = 0; i < n; i++) left += c[i].p;
    }
    if (p->top_p < 1) {
        double cum = 0;
        int64_t keep = 0;
        while (keep < n) {
            s = grow_sorted(c, V, s, keep + 1);
            cum += c[keep++].p;
            if (cum >= (double)p->top_p * left) break;
        }
        n = keep;
    }
    if (p->min_p > 0) {
        s = grow_sorted(c, V, s, 1);
        double thr = (double)p->min_p * c[0].p;
        int64_t keep = 1;
        while (keep < n) {
            s = grow_sorted(c, V, s, keep + 1);
            if (!(c[keep].p >= thr)) break;
            keep++;
        }
        n = keep;
    }
    if (n < V) {
        left = 0;
        for (int64_t i = 0; i < n; i++) left += c[i].p;
    }
    *sorted = s;
    *total = left;
    return n;
}

int smp_sample(const float *logits, int64_t V, const smp_params *p, double u, void *ws, int32_t *token) {
    int rc = smp_check(p);
    if (rc) return rc;
    if (V < 1 || !(u >= 0 && u < 1)) return rt_fail(RT_EINVAL, "sampling from %lld logits with u = %g", (long long)V, u);
    if (p->temperature == 0 || p->top_k == 1) {
        *token = argmax(logits, V);
        return 0;
    }
    cand *c = ws;
    int64_t sorted = 0;
    double total = 0;
    int64_t n = filter(logits, V, p, c, &sorted, &total);
    double target = u * total, cum = 0;
    for (int64_t i = 0; i < n; i++) {
        sorted = grow_sorted(c, n, sorted, i + 1);
        cum += c[i].p;
        if (target < cum) {
            *token = c[i].id;
            return 0;
        }
    }
    *token = c[n - 1].id;   /* rounding: u·total at the very top */
    return 0;
}

int smp_probs(const float *logits, int64_t V, const smp_params *p, void *ws, double *probs) {
    int rc = smp_check(p);
    if (rc) return rc;
    memset(probs, 0, (size_t)V * sizeof *probs);
    if (p->temperature == 0 || p->top_k == 1) {
        probs[argmax(logits, V)] = 1;
        return 0;
    }
    cand *c = ws;
    int64_t sorted = 0;
    double total = 0;
    int64_t n = filter(logits, V, p, c, &sorted, &total);
    for (int64_t i = 0; i < n; i++) probs[c[i].id] = c[i].p / total;
    return 0;
}

static double log_norm(const float *logits, int64_t V) {
    double mx = -INFINITY, s = 0;
    for (int64_t i = 0; i < V; i++) mx = fmax(mx, (double)logits[i]);
    for (int64_t i = 0; i < V; i++) s += exp((double)logits[i] - mx);
    return mx + log(s);
}

float smp_logprob(const float *logits, int64_t V, int32_t token) {
    return (float)((double)logits[token] - log_norm(logits, V));
}

void smp_top_logprobs(const float *logits, int64_t V, int k, int32_t *ids, float *logprobs) {
    double lz = log_norm(logits, V);
    int n = 0;   /* ids[0..n) sorted: larger logit first, ties by lower id */
    for (int64_t i = 0; i < V; i++) {
        float x = logits[i];
        if (n == k && !(x > logits[ids[n - 1]])) continue;
        int j = n < k ? n++ : k - 1;
        while (j > 0 && x > logits[ids[j - 1]]) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = (int32_t)i;
    }
    for (int j = 0; j < n; j++) logprobs[j] = (float)((double)logits[ids[j]] - lz);
}

/* kernels/cpu/sample.c — the sampling filters, the counter-based RNG and logprobs (see sample.h). */
#include "kernels/sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

static uint64_t mix64(uint64_t z) {   /* splitmix64's finalizer: a bijection with full avalanche */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t smp_bits(uint64_t seed, uint64_t stream, uint64_t step) {
    uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ULL);
    h = mix64(h ^ (stream * 0xd6e8feb86659fd93ULL + 0x632be59bd9b4e019ULL));
    return mix64(h ^ (step * 0x9e3779b97f4a7c15ULL + 0xa0761d6478bd642fULL));
}

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

/* The kept candidates, most probable first, with unnormalized probabilities; returns how
 * many (≥ 1). */
static int64_t filter(const float *logits, int64_t V, const smp_params *p, cand *c) {
    double inv_t = 1.0 / p->temperature, mx = -INFINITY;
    for (int64_t i = 0; i < V; i++) mx = fmax(mx, (double)logits[i] * inv_t);
    for (int64_t i = 0; i < V; i++) c[i] = (cand){exp((double)logits[i] * inv_t - mx), (int32_t)i};
    qsort(c, (size_t)V, sizeof *c, by_prob_desc);
    int64_t n = V;
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;
    if (p->top_p < 1) {
        double total = 0, cum = 0;
        for (int64_t i = 0; i < n; i++) total += c[i].p;
        int64_t keep = 0;
        while (keep < n) {
            cum += c[keep++].p;
            if (cum >= (double)p->top_p * total) break;
        }
        n = keep;
    }
    if (p->min_p > 0) {
        double thr = (double)p->min_p * c[0].p;
        int64_t keep = 1;
        while (keep < n && c[keep].p >= thr) keep++;
        n = keep;
    }
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
    int64_t n = filter(logits, V, p, c);
    double total = 0;
    for (int64_t i = 0; i < n; i++) total += c[i].p;
    double target = u * total, cum = 0;
    for (int64_t i = 0; i < n; i++) {
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
    int64_t n = filter(logits, V, p, c);
    double total = 0;
    for (int64_t i = 0; i < n; i++) total += c[i].p;
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

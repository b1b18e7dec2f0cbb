/* kernels/cpu/moe.c — DeepSeek-V3 router, expert combine and SwiGLU MLP (see kernels/moe.h). */
#include "kernels/moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "kernels/act.h"
#include "kernels/matmul.h"

/* ---- router ---------------------------------------------------------------------------- */

int moe_router_check(const moe_router_cfg *c) {
    if (c->n_experts <= 0 || c->n_group <= 0 || c->n_experts % c->n_group)
        return rt_fail(RT_EINVAL, "router: %lld experts do not split into %lld groups", (long long)c->n_experts,
                       (long long)c->n_group);
    int64_t per = c->n_experts / c->n_group;
    if (per < 2) return rt_fail(RT_EINVAL, "router: groups need at least 2 experts (have %lld)", (long long)per);
    if (c->topk_group <= 0 || c->topk_group > c->n_group)
        return rt_fail(RT_EINVAL, "router: topk_group %lld not in 1..%lld", (long long)c->topk_group, (long long)c->n_group);
    if (c->top_k <= 0 || c->top_k > c->topk_group * per)
        return rt_fail(RT_EINVAL, "router: %lld experts per token but only %lld in the kept groups", (long long)c->top_k,
                       (long long)(c->topk_group * per));
    return 0;
}

/* Index of the largest v[i] with !taken[i] (lowest index on ties); -1 if none. */
static int64_t argmax_free(const float *v, const unsigned char *taken, int64_t n) {
    int64_t best = -1;
    for (int64_t i = 0; i < n; i++)
        if (!taken[i] && (best < 0 || v[i] > v[best])) best = i;
    return best;
}

int moe_route(const moe_router_cfg *c, const float *logits, const float *bias, int64_t n, int32_t *idx, float *w) {
    int rc = moe_router_check(c);
    if (rc) return rc;
    int64_t E = c->n_experts, G = c->n_group, per = E / G, K = c->top_k;
    float *buf = rt_malloc((size_t)(2 * E + G) * sizeof *buf);
    unsigned char *taken = rt_malloc((size_t)(E + G));
    if (!buf || !taken) {
        free(buf);
        free(taken);
        return RT_ENOMEM;
    }
    float *s = buf, *choice = buf + E, *gscore = buf + 2 * E;
    unsigned char *gkeep = taken + E;
    for (int64_t t = 0; t < n; t++) {
        const float *l = logits + t * E;
        for (int64_t e = 0; e < E; e++) {
            s[e] = 1.0f / (1.0f + expf(-l[e]));
            choice[e] = s[e] + (bias ? bias[e] : 0.0f);
        }
        for (int64_t g = 0; g < G; g++) {     /* a group's score: the sum of its two best */
            const float *v = choice + g * per;
            int64_t a = v[0] >= v[1] ? 0 : 1, b = 1 - a;
            for (int64_t i = 2; i < per; i++) {
                if (v[i] > v[a]) { b = a; a = i; }
                else if (v[i] > v[b]) b = i;
            }
            gscore[g] = v[a] + v[b];
        }
        memset(gkeep, 0, (size_t)G);          /* gkeep doubles as "taken" for the group pick */
        for (int64_t k = 0; k < c->topk_group; k++) gkeep[argmax_free(gscore, gkeep, G)] = 1;
        for (int64_t e = 0; e < E; e++) taken[e] = !gkeep[e / per];
        float sum = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            int64_t e = argmax_free(choice, taken, E);
            taken[e] = 1;
            idx[t * K + k] = (int32_t)e;
            w[t * K + k] = s[e];
            sum += s[e];
        }
        float den = c->norm_topk_prob ? sum + 1e-20f : 1.0f;
        for (int64_t k = 0; k < K; k++) {
            float v = w[t * K + k];
            if (c->norm_topk_prob) v /= den;
            w[t * K + k] = v * c->routed_scaling_factor;
        }
    }
    free(buf);
    free(taken);
    return 0;
}

/* ---- experts --------------------------------------------------------------------------- */

/* out [n, dim] = down(silu(gate x) * up x); scratch: n*3*inter floats. */
static void mlp_run(const moe_expert *m, int64_t dim, int64_t inter, const float *x, int64_t n, float *out,
                    float *scratch, tp_pool *pool) {
    float *g = scratch, *u = g + n * inter, *a = u + n * inter;
    mm_linear_fwd(g, x, m->w1, NULL, n, inter, dim, pool);
    mm_linear_fwd(u, x, m->w3, NULL, n, inter, dim, pool);
    swiglu_fwd(a, g, u, (size_t)(n * inter), pool);
    mm_linear_fwd(out, a, m->w2, NULL, n, dim, inter, pool);
}

int moe_mlp_fwd(const moe_expert *mlp, int64_t dim, int64_t inter, const float *x, int64_t n, float *out,
                float *scratch, tp_pool *pool) {
    float *own = NULL;
    if (!scratch) {
        size_t cnt;
        if (!rt_mul_ok((size_t)n, (size_t)(3 * inter), &cnt) || !(own = rt_malloc(cnt * sizeof *own))) return RT_ENOMEM;
        scratch = own;
    }
    mlp_run(mlp, dim, inter, x, n, out, scratch, pool);
    free(own);
    return 0;
}

int moe_experts_fwd(const moe_expert *experts, int64_t n_experts, int64_t dim, int64_t inter, const float *x,
                    int64_t n, const int32_t *idx, const float *w, int64_t top_k, float *out, tp_pool *pool) {
    int64_t nk = n * top_k;
    int64_t *count = rt_calloc((size_t)n_experts + 1, sizeof *count);
    int64_t *order = rt_malloc((size_t)(nk > 0 ? nk : 1) * sizeof *order);
    if (!count || !order) {
        free(count);
        free(order);
        return RT_ENOMEM;
    }
    for (int64_t i = 0; i < nk; i++) {
        if (idx[i] < 0 || idx[i] >= n_experts) {
            free(count);
            free(order);
            return rt_fail(RT_EINVAL, "moe: expert id %d out of 0..%lld", idx[i], (long long)n_experts - 1);
        }
        count[idx[i] + 1]++;
    }
    int64_t maxm = 0;
    for (int64_t e = 0; e < n_experts; e++) {
        if (count[e + 1] > maxm) maxm = count[e + 1];
        count[e + 1] += count[e];            /* count[e] = first slot of expert e */
    }
    int64_t *fill = rt_malloc((size_t)n_experts * sizeof *fill);
    float *xs = rt_malloc((size_t)(maxm * (dim * 2 + inter * 3)) * sizeof *xs + 1);
    if (!fill || !xs) {
        free(count);
        free(order);
        free(fill);
        free(xs);
        return RT_ENOMEM;
    }
    memcpy(fill, count, (size_t)n_experts * sizeof *fill);
    for (int64_t i = 0; i < nk; i++) order[fill[idx[i]]++] = i;   /* token-major, so rows stay sorted */
    float *ys = xs + maxm * dim, *h = ys + maxm * dim;
    for (int64_t e = 0; e < n_experts; e++) {
        int64_t b = count[e], m = count[e + 1] - b;
        if (!m) continue;
        for (int64_t r = 0; r < m; r++) memcpy(xs + r * dim, x + (order[b + r] / top_k) * dim, (size_t)dim * sizeof *xs);
        mlp_run(&experts[e], dim, inter, xs, m, ys, h, pool);
        for (int64_t r = 0; r < m; r++) {
            int64_t slot = order[b + r];
            float wt = w[slot], *o = out + (slot / top_k) * dim;
            const float *y = ys + r * dim;
            for (int64_t j = 0; j < dim; j++) o[j] += wt * y[j];
        }
    }
    free(count);
    free(order);
    free(fill);
    free(xs);
    return 0;
}

/* ---- the capacity-padded expert-parallel dispatch --------------------------------------------- */

int moe_slab_check(int64_t n, int64_t K, int64_t n_experts, int64_t P, int64_t cap) {
    int64_t per = P > 0 ? (n_experts + P - 1) / P : 0, most = n * (K < per ? K : per);
    if (n < 0 || K < 1 || n_experts < 1 || P < 1 || P > 1024 || cap < most || P * cap > 0x7fffffff)
        return rt_fail(RT_EINVAL, "moe slab: %lld tokens of %lld slots over %lld ranks of %lld experts need slabs of %lld "
                       "rows; %lld given", (long long)n, (long long)K, (long long)P, (long long)n_experts,
                       (long long)most, (long long)cap);
    return 0;
}

int moe_slab_pack(const int32_t *idx, int64_t n, int64_t K, int64_t n_experts, int64_t P, int64_t cap, int32_t none,
                  int32_t slot0, int32_t *slot, int32_t *lexp, int32_t *comb) {
    int rc = moe_slab_check(n, K, n_experts, P, cap);
    if (rc) return rc;
    for (int64_t q = 0; q < P; q++) {
        int64_t j = 0;
        for (int64_t i = 0; i < n * K; i++) {
            int32_t e = idx[i];
            if (e < 0 || e >= n_experts || e % P != q) continue;
            slot[q * cap + j] = slot0 + (int32_t)i, lexp[q * cap + j] = (int32_t)(e / P);
            comb[i] = (int32_t)(q * cap + j++);
        }
        for (; j < cap; j++) slot[q * cap + j] = 0, lexp[q * cap + j] = none;
    }
    for (int64_t i = 0; i < n * K; i++)
        if (idx[i] < 0 || idx[i] >= n_experts) comb[i] = -1;
    return 0;
}

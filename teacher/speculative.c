/* teacher/speculative.c — MTP draft-and-verify greedy decoding (see speculative.h): the loop
 * (sd_run) and the CPU engine's sd_ops (sd_greedy). The GPU engine's are in teacher/ds_cuda_mtp.c. */
#include "teacher/speculative.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"

static int32_t argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return (int32_t)b;
}

typedef struct {
    int32_t *out;
    int64_t n, max;
    const int32_t *stop;
    int n_stop;
} emitter;

/* Appends tok; returns 1 when generation is over. */
static int emit(emitter *e, int32_t tok) {
    e->out[e->n++] = tok;
    if (e->n >= e->max) return 1;
    for (int i = 0; i < e->n_stop; i++)
        if (tok == e->stop[i]) return 1;
    return 0;
}

int sd_run(const sd_ops *ops, void *ctx, const int32_t *prompt, int64_t n_prompt, int64_t max_new,
           const int32_t *stop_ids, int n_stop, sd_oracle oracle, void *oracle_ctx, int32_t *out, int64_t *n_out,
           sd_stats *stats) {
    *n_out = 0;
    *stats = (sd_stats){0};
    if (!oracle && !ops->mtp) return rt_fail(RT_EINVAL, "draft-and-verify needs the MTP layer loaded");
    if (n_prompt <= 0 || max_new < 1) return rt_fail(RT_EINVAL, "prompt of %lld tokens, %lld new", (long long)n_prompt, (long long)max_new);
    int64_t V = ops->vocab, D = ops->hidden, cap = n_prompt + max_new + 2;
    int rc = 0;
    int32_t *all = rt_malloc((size_t)cap * sizeof(int32_t));
    float *hid = rt_malloc((size_t)(cap * D) * sizeof(float));
    float *lg = rt_malloc((size_t)(2 * V) * sizeof(float));
    emitter em = {out, 0, max_new, stop_ids, n_stop};
    if (!all || !hid || !lg) {
        rc = RT_ENOMEM;
        goto out;
    }
    memcpy(all, prompt, (size_t)n_prompt * sizeof(int32_t));
    /* prefill: hidden states of every prompt position, the first token */
    if ((rc = ops->forward(ctx, all, 0, n_prompt, false, lg, hid))) goto out;
    int64_t L = n_prompt, mtp_done = 0;   /* main positions [0, L) cached; all[L] pending */
    all[L] = argmax(lg, V);
    if (emit(&em, all[L])) goto out;
    for (;;) {
        int32_t d = -1;
        if (ops->mtp) {   /* MTP rows [mtp_done, L): (h_i, all[i+1]) */
            if ((rc = ops->mtp(ctx, hid + mtp_done * D, all + mtp_done + 1, mtp_done, L - mtp_done, lg))) goto out;
            d = argmax(lg, V);
            mtp_done = L;
        }
        if (oracle && (rc = oracle(oracle_ctx, L + 1, &d))) goto out;
        if (d < 0 || d >= V) {
            rc = rt_fail(RT_EINVAL, "draft token %d outside the vocabulary", d);
            goto out;
        }
        stats->steps++;
        stats->drafted++;
        all[L + 1] = d;
        /* verify [pending, d] at L, L+1 (a rejected d's row is rewound by the next forward at L+1) */
        if ((rc = ops->forward(ctx, all + L, L, 2, true, lg, hid + L * D))) goto out;
        int32_t g1 = argmax(lg, V);
        if (g1 == d) {
            stats->accepted++;
            if (emit(&em, d)) break;
            all[L + 2] = argmax(lg + V, V);
            L += 2;
            if (emit(&em, all[L])) break;
        } else {
            all[L + 1] = g1;
            L += 1;
            if (emit(&em, g1)) break;
        }
    }
out:
    *n_out = em.n;
    free(all);
    free(hid);
    free(lg);
    return rc;
}

/* ---- the CPU engine's sd_ops ---------------------------------------------------------- */

typedef struct {
    ds_model *m;
    ds_cache *c;
    int32_t *pos;   /* [cap] 0, 1, … */
    float *lg;      /* [cap, V] */
} cpu_ctx;

static int cpu_forward(void *p, const int32_t *tokens, int64_t pos0, int64_t n, bool all_logits, float *logits,
                       float *hidden) {
    cpu_ctx *c = p;
    int64_t V = ds_vocab(c->m);
    TRY(ds_forward(c->m, c->c, tokens, c->pos + pos0, n, DS_ATTN_AUTO, c->lg, hidden));
    if (all_logits) memcpy(logits, c->lg, (size_t)(n * V) * sizeof(float));
    else memcpy(logits, c->lg + (n - 1) * V, (size_t)V * sizeof(float));
    return 0;
}

static int cpu_mtp(void *p, const float *hidden, const int32_t *next, int64_t pos0, int64_t n, float *logits) {
    cpu_ctx *c = p;
    int64_t V = ds_vocab(c->m);
    TRY(ds_mtp_forward(c->m, c->c, hidden, next, c->pos + pos0, n, DS_ATTN_AUTO, c->lg, NULL));
    memcpy(logits, c->lg + (n - 1) * V, (size_t)V * sizeof(float));
    return 0;
}

int sd_greedy(ds_model *m, const int32_t *prompt, int64_t n_prompt, int64_t max_new, const int32_t *stop_ids,
              int n_stop, sd_oracle oracle, void *oracle_ctx, int32_t *out, int64_t *n_out, sd_stats *stats) {
    *n_out = 0;
    *stats = (sd_stats){0};
    if (!oracle && !ds_has_mtp(m)) return rt_fail(RT_EINVAL, "draft-and-verify needs the MTP layer loaded");
    if (n_prompt <= 0 || max_new < 1) return rt_fail(RT_EINVAL, "prompt of %lld tokens, %lld new", (long long)n_prompt, (long long)max_new);
    int64_t V = ds_vocab(m), cap = n_prompt + max_new + 2;
    cpu_ctx c = {.m = m};
    int rc = ds_cache_create(m, cap, &c.c);
    if (rc) return rc;
    c.pos = rt_malloc((size_t)cap * sizeof(int32_t));
    c.lg = rt_malloc((size_t)(cap * V) * sizeof(float));
    if (!c.pos || !c.lg) rc = RT_ENOMEM;
    for (int64_t i = 0; !rc && i < cap; i++) c.pos[i] = (int32_t)i;
    sd_ops ops = {.vocab = V, .hidden = ds_hidden(m), .forward = cpu_forward, .mtp = ds_has_mtp(m) ? cpu_mtp : NULL};
    if (!rc) rc = sd_run(&ops, &c, prompt, n_prompt, max_new, stop_ids, n_stop, oracle, oracle_ctx, out, n_out, stats);
    ds_cache_free(c.c);
    free(c.pos);
    free(c.lg);
    return rc;
}

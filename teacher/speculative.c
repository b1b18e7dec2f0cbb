/* teacher/speculative.c — MTP draft-and-verify greedy decoding (see speculative.h). */
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

int sd_greedy(ds_model *m, const int32_t *prompt, int64_t n_prompt, int64_t max_new, const int32_t *stop_ids,
              int n_stop, sd_oracle oracle, void *oracle_ctx, int32_t *out, int64_t *n_out, sd_stats *stats) {
    *n_out = 0;
    *stats = (sd_stats){0};
    if (!oracle && !ds_has_mtp(m)) return rt_fail(RT_EINVAL, "draft-and-verify needs the MTP layer loaded");
    if (n_prompt <= 0 || max_new < 1) return rt_fail(RT_EINVAL, "prompt of %lld tokens, %lld new", (long long)n_prompt, (long long)max_new);
    int64_t V = ds_vocab(m), D = ds_hidden(m), cap = n_prompt + max_new + 2;
    ds_cache *c = NULL;
    int rc = ds_cache_create(m, cap, &c);
    if (rc) return rc;
    int32_t *all = rt_malloc((size_t)cap * 2 * sizeof(int32_t)), *pos = all ? all + cap : NULL;
    float *hid = rt_malloc((size_t)(cap * D) * sizeof(float));
    float *lg = rt_malloc((size_t)(cap * V) * sizeof(float));
    emitter em = {out, 0, max_new, stop_ids, n_stop};
    if (!all || !hid || !lg) {
        rc = RT_ENOMEM;
        goto out;
    }
    for (int64_t i = 0; i < cap; i++) pos[i] = (int32_t)i;
    memcpy(all, prompt, (size_t)n_prompt * sizeof(int32_t));
    /* prefill: hidden states of every prompt position, the first token */
    if ((rc = ds_forward(m, c, all, pos, n_prompt, DS_ATTN_AUTO, lg, hid))) goto out;
    int64_t L = n_prompt, mtp_done = 0;   /* main positions [0, L) cached; all[L] pending */
    all[L] = argmax(lg + (n_prompt - 1) * V, V);
    if (emit(&em, all[L])) goto out;
    for (;;) {
        int32_t d = -1;
        if (ds_has_mtp(m)) {   /* MTP rows [mtp_done, L): (h_i, all[i+1]) */
            int64_t k = L - mtp_done;
            if ((rc = ds_mtp_forward(m, c, hid + mtp_done * D, all + mtp_done + 1, pos + mtp_done, k, DS_ATTN_AUTO, lg,
                                     NULL)))
                goto out;
            d = argmax(lg + (k - 1) * V, V);
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
        if ((rc = ds_forward(m, c, all + L, pos + L, 2, DS_ATTN_AUTO, lg, hid + L * D))) goto out;
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
    ds_cache_free(c);
    free(all);
    free(hid);
    free(lg);
    return rc;
}

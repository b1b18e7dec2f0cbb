/* teacher/parallel.c — the layout and the collective steps of the parallel DeepSeek-V3
 * forward (see teacher/parallel.h); the loading and the layers are teacher/deepseek.c's, which
 * calls down into this file, never the other way; the experts' MLP is teacher/deepseek_int.c's. */
#include "teacher/parallel.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "kernels/matmul.h"

/* [begin, end) of part `rank` of n split into `size` parts, the first n % size one larger. */
static void split(int64_t n, int rank, int size, int64_t *begin, int64_t *count) {
    int64_t q = n / size, r = n % size;
    *begin = rank * q + (rank < r ? rank : r);
    *count = q + (rank < r ? 1 : 0);
}

int ds_layout_make(const mc_config *c, int rank, int size, ds_layout *out) {
    memset(out, 0, sizeof *out);
    if (size < 1 || rank < 0 || rank >= size) return rt_fail(RT_EINVAL, "rank %d of %d", rank, size);
    if (size > c->num_attention_heads)
        return rt_fail(RT_EINVAL, "%d ranks but the model has %lld attention heads (each rank needs at least one)", size,
                       (long long)c->num_attention_heads);
    if (size > c->vocab_size || (c->intermediate_size > 0 && size > c->intermediate_size))
        return rt_fail(RT_EINVAL, "%d ranks but the vocabulary or the dense MLP is smaller than that", size);
    out->rank = rank;
    out->size = size;
    split(c->num_attention_heads, rank, size, &out->head0, &out->n_heads);
    split(c->intermediate_size, rank, size, &out->inter0, &out->n_inter);
    split(c->vocab_size, rank, size, &out->vocab0, &out->n_vocab);
    out->vocab_block = (c->vocab_size + size - 1) / size;
    out->n_experts = c->n_routed_experts;
    return 0;
}

int ds_layout_expert_rank(const ds_layout *lo, int64_t expert) { return (int)(expert % lo->size); }

int64_t ds_layout_local_experts(const ds_layout *lo) {
    int64_t n = 0;
    for (int64_t e = 0; e < lo->n_experts; e++) n += ds_layout_expert_rank(lo, e) == lo->rank;
    return n;
}

/* ---- collective steps ------------------------------------------------------------------ */

int ds_par_allreduce(rt_comm *comm, float *x, size_t n) {
    int rc = comm_allreduce(comm, x, x, n, RT_DT_F32, COMM_SUM);
    return rc ? rt_errorf(rc, "tensor-parallel sum") : 0;
}

int ds_par_embed(rt_comm *comm, const ds_layout *lo, const float *embed, int64_t dim, const int32_t *tokens,
                 int64_t n, float *x) {
    for (int64_t i = 0; i < n; i++) {
        int64_t v = (int64_t)tokens[i] - lo->vocab0;
        if (v >= 0 && v < lo->n_vocab) memcpy(x + i * dim, embed + v * dim, (size_t)dim * sizeof *x);
        else memset(x + i * dim, 0, (size_t)dim * sizeof *x);
    }
    return ds_par_allreduce(comm, x, (size_t)(n * dim));
}

int ds_par_logits(rt_comm *comm, const ds_layout *lo, const float *head, int64_t dim, int64_t vocab,
                  const float *h, int64_t n, float *logits, tp_pool *pool) {
    int64_t B = lo->vocab_block, P = lo->size;
    size_t mine = (size_t)(n * B);
    float *buf = rt_malloc((mine * (size_t)(P + 1) + 1) * sizeof *buf);
    if (!buf) return RT_ENOMEM;
    float *local = buf, *all = buf + mine;
    memset(local, 0, mine * sizeof *local);
    if (lo->n_vocab > 0) {
        float *y = rt_malloc((size_t)(n * lo->n_vocab) * sizeof *y);
        if (!y) { free(buf); return RT_ENOMEM; }
        if (n < 4 * tp_size(pool)) mm_linear_fwd_cols(y, h, head, NULL, n, lo->n_vocab, dim, pool);
        else mm_linear_fwd(y, h, head, NULL, n, lo->n_vocab, dim, pool);
        for (int64_t i = 0; i < n; i++) memcpy(local + i * B, y + i * lo->n_vocab, (size_t)lo->n_vocab * sizeof *y);
        free(y);
    }
    int rc = comm_allgather(comm, local, all, mine, RT_DT_F32);
    if (rc) { free(buf); return rt_errorf(rc, "gathering the logits"); }
    for (int64_t r = 0; r < P; r++) {   /* rank r's block [n, B] holds vocabulary [v0, v0 + nv) */
        int64_t v0, nv;
        split(vocab, (int)r, (int)P, &v0, &nv);
        for (int64_t i = 0; i < n; i++)
            memcpy(logits + i * vocab + v0, all + r * (int64_t)mine + i * B, (size_t)nv * sizeof *logits);
    }
    free(buf);
    return 0;
}

/* Token t of n is owned by rank t / ceil(n / P). */
static void owned(int64_t n, int P, int r, int64_t *t0, int64_t *t1) {
    int64_t b = (n + P - 1) / P;
    *t0 = r * b < n ? r * b : n;
    *t1 = (r + 1) * b < n ? (r + 1) * b : n;
}

int ds_par_moe_fwd(rt_comm *comm, const ds_layout *lo, const ds_mlp *experts, int64_t dim, int64_t inter,
                   const ds_mlp *shared, int64_t shared_inter, const float *h, int64_t n, const int32_t *idx,
                   const float *w, int64_t top_k, float *out, tp_pool *pool) {
    int P = lo->size, me = lo->rank;
    int64_t K = top_k, E = lo->n_experts, t0, t1;
    for (int64_t i = 0; i < n * K; i++)
        if (idx[i] < 0 || idx[i] >= E) return rt_fail(RT_EINVAL, "moe: expert id %d out of 0..%lld", idx[i], (long long)E - 1);
    owned(n, P, me, &t0, &t1);
    int64_t own_n = t1 - t0, blk = (n + P - 1) / P;
    /* counts: rows this rank sends (its tokens' slots, by destination) and receives (its
     * experts' slots, by source); first[e]: expert e's first row in expert-sorted order */
    size_t *cnt = rt_calloc((size_t)P * 4, sizeof *cnt);
    int64_t *first = rt_calloc((size_t)E + 1, sizeof *first);
    if (!cnt || !first) { free(cnt); free(first); return RT_ENOMEM; }
    size_t *scnt = cnt, *sdis = cnt + P, *rcnt = cnt + 2 * P, *rdis = cnt + 3 * P;
    int64_t n_send = 0, n_recv = 0;
    for (int s = 0; s < P; s++) {
        int64_t a, b;
        owned(n, P, s, &a, &b);
        for (int64_t i = a * K; i < b * K; i++) {
            int d = ds_layout_expert_rank(lo, idx[i]);
            if (s == me) scnt[d]++, n_send++;
            if (d == me) rcnt[s]++, n_recv++, first[idx[i] + 1]++;
        }
    }
    int64_t maxm = 0;
    for (int64_t e = 0; e < E; e++) {
        if (first[e + 1] > maxm) maxm = first[e + 1];
        first[e + 1] += first[e];
    }
    for (int r = 0; r < P; r++) scnt[r] *= (size_t)dim, rcnt[r] *= (size_t)dim;   /* rows → floats */
    for (int r = 1; r < P; r++) sdis[r] = sdis[r - 1] + scnt[r - 1], rdis[r] = rdis[r - 1] + rcnt[r - 1];
    int64_t inter_max = inter > shared_inter ? inter : shared_inter, rows_max = maxm > own_n ? maxm : own_n;
    size_t floats = (size_t)((2 * n_send + 2 * n_recv + 2 * maxm + blk * (P + 1)) * dim) + (size_t)(rows_max * 3 * inter_max);
    float *fbuf = rt_malloc((floats + 1) * sizeof *fbuf);
    int64_t *ibuf = rt_malloc((size_t)(n_recv + own_n * K + E + K + 1) * sizeof *ibuf);
    int rc = fbuf && ibuf ? 0 : RT_ENOMEM;
    if (rc) goto done;
    float *sbuf = fbuf, *rbuf = sbuf + n_send * dim, *ybuf = rbuf + n_recv * dim, *back = ybuf + n_recv * dim;
    float *xs = back + n_send * dim, *ys = xs + maxm * dim, *mine = ys + maxm * dim, *all = mine + blk * dim;
    float *scratch = all + blk * P * dim;
    int64_t *sorted = ibuf, *sent_at = sorted + n_recv, *fill = sent_at + own_n * K, *ord = fill + E;
    /* dispatch: for each destination, this rank's slots in (t, k) order */
    for (int d = 0, at = 0; d < P; d++)
        for (int64_t i = t0 * K; i < t1 * K; i++)
            if (ds_layout_expert_rank(lo, idx[i]) == d) {
                memcpy(sbuf + (int64_t)at * dim, h + (i / K) * dim, (size_t)dim * sizeof *h);
                sent_at[i - t0 * K] = at++;
            }
    if ((rc = comm_alltoallv(comm, sbuf, scnt, sdis, rbuf, rcnt, rdis, RT_DT_F32))) {
        rt_errorf(rc, "expert dispatch");
        goto done;
    }
    /* received row j is a slot (t, k) of source s, in the order s sent them: sort by expert */
    memcpy(fill, first, (size_t)E * sizeof *fill);
    for (int s = 0, j = 0; s < P; s++) {
        int64_t a, b;
        owned(n, P, s, &a, &b);
        for (int64_t i = a * K; i < b * K; i++)
            if (ds_layout_expert_rank(lo, idx[i]) == me) sorted[fill[idx[i]]++] = j++;
    }
    for (int64_t e = 0; e < E; e++) {    /* expert e over its rows, token-major as moe_experts_fwd */
        int64_t b = first[e], m = first[e + 1] - b;
        if (!m) continue;
        RT_ASSERT(ds_mat_present(&experts[e].w1), "moe: expert %lld routed to rank %d, which does not hold it", (long long)e, me);
        for (int64_t r = 0; r < m; r++) memcpy(xs + r * dim, rbuf + sorted[b + r] * dim, (size_t)dim * sizeof *xs);
        if ((rc = ds_mlp_fwd(&experts[e], dim, inter, xs, m, ys, scratch, pool))) goto done;
        for (int64_t r = 0; r < m; r++) memcpy(ybuf + sorted[b + r] * dim, ys + r * dim, (size_t)dim * sizeof *ys);
    }
    /* combine: outputs go back to their owners, landing where the owners sent the inputs from */
    if ((rc = comm_alltoallv(comm, ybuf, rcnt, rdis, back, scnt, sdis, RT_DT_F32))) {
        rt_errorf(rc, "expert combine");
        goto done;
    }
    if (own_n > 0 && shared_inter > 0) {
        if ((rc = ds_mlp_fwd(shared, dim, shared_inter, h + t0 * dim, own_n, mine, scratch, pool))) goto done;
    } else {
        memset(mine, 0, (size_t)(own_n * dim) * sizeof *mine);
    }
    memset(mine + own_n * dim, 0, (size_t)((blk - own_n) * dim) * sizeof *mine);
    for (int64_t t = t0; t < t1; t++) {
        float *o = mine + (t - t0) * dim;
        for (int64_t k = 0; k < K; k++) {   /* t's slots by ascending expert id, the serial order */
            int64_t j = k;
            while (j > 0 && idx[t * K + ord[j - 1]] > idx[t * K + k]) ord[j] = ord[j - 1], j--;
            ord[j] = k;
        }
        for (int64_t k = 0; k < K; k++) {
            int64_t i = t * K + ord[k];
            float wt = w[i];
            const float *y = back + sent_at[i - t0 * K] * dim;
            for (int64_t j = 0; j < dim; j++) o[j] += wt * y[j];
        }
    }
    if ((rc = comm_allgather(comm, mine, all, (size_t)(blk * dim), RT_DT_F32))) {
        rt_errorf(rc, "gathering the expert outputs");
        goto done;
    }
    memcpy(out, all, (size_t)(n * dim) * sizeof *out);
done:
    free(cnt);
    free(first);
    free(fbuf);
    free(ibuf);
    return rc;
}

/* teacher/cuda_batch.c — the device paged batch under the GPU engines (see teacher/cuda_batch.h).
 * tests/unit/test_dense_cuda_fake.c, test_ds_cuda_fake.c and tests/tools/{dense,ds}_cuda_tp.c
 * include this file beside the engine's, against the CPU stand-ins (tests/unit/fake_cuda.h). */
#include "teacher/cuda_batch.h"

#ifdef RT_HAVE_CUDA

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/cuda_try.h"
#include "core/status.h"

static double cb_gb(size_t b) { return (double)b / 1e9; }

void cb_plan_limits(cb_plan *p, int64_t max_tokens, int64_t max_seqs) {
    p->max_tokens = max_tokens > 0 ? max_tokens : 512;
    p->max_seqs = max_seqs > 0 ? max_seqs : 256;
    if (p->max_tokens < 16) p->max_tokens = 16;
    if (p->max_seqs < 16) p->max_seqs = 16;
    if (p->max_seqs > p->max_tokens) p->max_seqs = p->max_tokens;
}

int cb_plan_budget(cb_plan *p, double memory_fraction, const char *dir, int P) {
    double frac = memory_fraction > 0 ? memory_fraction : 0.9;
    if (frac > 1) frac = 1;
    CUDA_TRY(cudaMemGetInfo(&p->device_free, &p->device_total));
    double cap = frac * (double)p->device_total, used = (double)(p->device_total - p->device_free);
    p->budget = cap > used ? (size_t)(cap - used) : 0;
    if (p->weights > p->budget)
        return rt_fail(RT_ENOMEM, "model %s needs %.3g GB of weights%s; the GPU has %.3g GB (%.2f of %.3g GB, %.3g GB "
                       "already in use)", dir, cb_gb(p->weights), P > 1 ? " per rank" : "", cb_gb(p->budget), frac,
                       cb_gb(p->device_total), used / 1e9);
    return 0;
}

int cb_agree(rt_comm *host, int P, const char *dir, int rc, cb_plan *p) {
    if (P <= 1) return rc;
    int64_t v[2] = {rc != 0, rc ? 0 : -p->kv_positions};
    int crc = comm_allreduce(host, v, v, 2, RT_DT_I64, COMM_MAX);
    if (rc) return rc;
    if (crc) return rt_errorf(crc, "model %s: agreeing on the load across ranks", dir);
    if (v[0]) return rt_fail(RT_EINTERNAL, "model %s: another rank could not load its part (its line says why)", dir);
    if (-v[1] < p->kv_positions) {
        p->kv_positions = -v[1];
        p->kv = (size_t)p->kv_positions * p->kv_position_bytes;
        p->total = p->weights + p->activations + p->workspace + p->kv;
    }
    return 0;
}

int cb_use_device(int gpu, int *dev) {
    int ndev = 0;
    *dev = gpu >= 0 ? gpu : 0;
    cudaError_t ce = cudaGetDeviceCount(&ndev);
    if (ce != cudaSuccess || ndev < 1)
        return rt_fail(RT_EUNSUPPORTED, "--device cuda: no usable CUDA device (%s)",
                       ce != cudaSuccess ? cudaGetErrorString(ce) : "none found");
    if (*dev >= ndev) return rt_fail(RT_EUNSUPPORTED, "--device cuda: GPU %d, but %d found", *dev, ndev);
    if (cudaSetDevice(*dev) != cudaSuccess) return rt_fail(RT_EUNSUPPORTED, "--device cuda: cannot use GPU %d", *dev);
    return 0;
}

int cb_upload_consts(float *d_inv, const float *inv, int64_t n, float *d_neginf) {
    cudaError_t e = cudaMemcpy(d_inv, inv, (size_t)n * 4, cudaMemcpyHostToDevice);
    if (e) return rt_fail(RT_EINTERNAL, "uploading the RoPE frequencies: %s", cudaGetErrorString(e));
    float ninf = -INFINITY;   /* what cb_sample writes over the ids that cannot be drawn */
    if ((e = cudaMemcpy(d_neginf, &ninf, 4, cudaMemcpyHostToDevice)))
        return rt_fail(RT_EINTERNAL, "uploading a constant: %s", cudaGetErrorString(e));
    return 0;
}

int cb_open_stream(rt_comm *host, int P, int dev, const char *dir, int rc, cb_plan *p, cudaStream_t *st,
                   rt_comm **nccl) {
    cudaError_t e = cudaSuccess;
    if (!rc && (e = cudaStreamCreateWithFlags(st, cudaStreamNonBlocking)) != cudaSuccess)
        rc = rt_fail(RT_EINTERNAL, "cudaStreamCreateWithFlags: %s", cudaGetErrorString(e));
    /* NCCL's communicator joins every rank: only after all of them are this far */
    if (P > 1 && !(rc = cb_agree(host, P, dir, rc, p)) && (rc = comm_open_nccl(host, dev, *st, nccl))) *nccl = NULL;
    return rc;
}

int cb_gather_last(uint16_t *hf, const uint16_t *xn, int64_t D, const cb_piece *pc, int64_t np, cudaStream_t st) {
    for (int64_t i = 0, t = 0, r = 0; i < np; i++) {
        t += pc[i].n;
        if (pc[i].last)
            CUDA_TRY(cudaMemcpyAsync(hf + (r++) * D, xn + (t - 1) * D, (size_t)D * 2, cudaMemcpyDeviceToDevice, st));
    }
    return 0;
}

int cb_passes(kv_seq *const *seqs, const int32_t *n_new, int64_t n_seqs, const cb_plan *p, cb_pass_fn pass_fn,
              void *ctx) {
    int64_t *tok_at = rt_malloc((size_t)n_seqs * sizeof(int64_t));
    cb_piece *pc = rt_malloc((size_t)(n_seqs < p->max_seqs ? n_seqs : p->max_seqs) * sizeof *pc);
    int rc = tok_at && pc ? 0 : RT_ENOMEM;
    for (int64_t s = 0, t = 0; s < n_seqs && !rc; t += n_new[s], s++) tok_at[s] = t;
    int64_t s = 0, from = 0, first = 0;
    while (s < n_seqs && !rc) {
        int64_t np = 0, Tp = 0, ld = 1, R = 0;
        while (s < n_seqs && np < p->max_seqs && Tp < p->max_tokens) {
            int64_t nld = seqs[s]->n_blocks > ld ? seqs[s]->n_blocks : ld;
            if (np > 0 && (np + 1) * nld > p->table_ints) break;
            int64_t take = n_new[s] - from, room = p->max_tokens - Tp;
            if (take > room) take = room;
            pc[np++] = (cb_piece){.s = s, .from = from, .n = take, .last = from + take == n_new[s]};
            Tp += take, ld = nld;
            if (from + take < n_new[s]) {
                from += take;
                break;
            }
            R++, s++, from = 0;
        }
        rc = pass_fn(ctx, pc, np, Tp, tok_at, first);
        first += R;
    }
    free(tok_at);
    free(pc);
    return rc;
}

int cb_reserve(kv_pool *cache, kv_seq *s, int64_t new_len, int64_t bs, uint16_t *kv, size_t block_elems,
               int64_t layers, size_t layer_stride, cudaStream_t st) {
    int64_t b0 = s->len / bs, nb = s->n_blocks, nold = nb > b0 ? nb - b0 : 0;
    int32_t old[64], *o = nold <= 64 ? old : rt_malloc((size_t)nold * sizeof(int32_t));
    if (!o) return RT_ENOMEM;
    if (nold) memcpy(o, s->blocks + b0, (size_t)nold * sizeof(int32_t));
    int rc = kv_seq_reserve(cache, s, new_len);
    /* every block it replaced, even when it stopped early (cache full): the table names them now */
    size_t el = block_elems;
    for (int64_t b = 0; b < nold; b++) {
        int32_t nw = s->blocks[b0 + b];
        if (nw == o[b]) continue;
        for (int64_t l = 0; l < layers; l++) {
            uint16_t *base = kv + (size_t)l * layer_stride;
            cudaError_t e = cudaMemcpyAsync(base + (size_t)nw * el, base + (size_t)o[b] * el, el * 2,
                                            cudaMemcpyDeviceToDevice, st);
            if (e != cudaSuccess && !rc)
                rc = rt_fail(RT_EINTERNAL, "copying a shared cache block: %s", cudaGetErrorString(e));
        }
    }
    if (o != old) free(o);
    return rc;
}

/* ---- CUDA graphs of decode passes ---------------------------------------------------------- */

#define CB_NOGRAPH " (--no-cuda-graphs runs decode steps without graphs)"

void cb_graphs_drop(cb_graphs *g) {
    for (int k = 0; k < g->ng; k++)
        for (int c = 0; c < g->nc; c++)
            if (g->gx[k][c]) cudaGraphExecDestroy(g->gx[k][c]);
    memset(g->gx, 0, sizeof g->gx);
    g->ng = g->nc = 0;
}

int cb_cache_blocks(const cb_plan *p, int64_t block_size, int64_t *n_blocks) {
    *n_blocks = 0;
    if (block_size <= 0 || block_size > p->kv_positions)
        return rt_fail(RT_ERANGE, "cache blocks of %lld positions; the GPU's cache holds %lld", (long long)block_size,
                       (long long)p->kv_positions);
    *n_blocks = p->kv_positions / block_size;
    return 0;
}

void cb_graphs_plan(cb_graphs *g, int64_t *n_blocks, int64_t bs, int64_t max_seqs, int64_t maxpos,
                    int64_t table_ints) {
    /* graphs were captured for the old blocks; decode graphs need a scratch block, and tables of
     * the longest class (the context) for max_seqs sequences in the planned room */
    cb_graphs_drop(g);
    int64_t gld = (maxpos + bs - 1) / bs;
    if (!g->on || *n_blocks < 2 || max_seqs * gld > table_ints) return;
    g->scratch = (int32_t)--*n_blocks;
    for (int64_t b = 1; g->ng < CB_MAX_BUCKETS; b *= 2) {
        g->B[g->ng++] = b < max_seqs ? b : max_seqs;
        if (b >= max_seqs) break;
    }
    for (int64_t c = bs; g->nc < CB_MAX_BUCKETS; c *= 2) {
        g->C[g->nc++] = c < maxpos ? c : maxpos;
        if (c >= maxpos) break;
    }
    if (g->B[g->ng - 1] < max_seqs || g->C[g->nc - 1] < maxpos) g->ng = g->nc = 0;   /* beyond 2^31 */
}

bool cb_graphs_decode(const cb_graphs *g, kv_seq *const *seqs, const cb_piece *pc, int64_t np, int64_t *max_ctx,
                      int *k, int *c) {
    if (g->ng <= 0) return false;
    for (int64_t i = 0; i < np; i++)
        if (!(pc[i].n == 1 && pc[i].last && seqs[pc[i].s]->len + pc[i].from > 0)) return false;
    for (int64_t i = 0; i < np; i++) {
        int64_t cx = seqs[pc[i].s]->len + pc[i].from + 1;   /* a sequence's later piece sees more */
        if (cx > *max_ctx) *max_ctx = cx;
    }
    *k = 0, *c = 0;
    while (g->B[*k] < np) ++*k;          /* the last bucket is max_seqs ≥ np */
    while (g->C[*c] < *max_ctx) ++*c;    /* the last class is the model's context */
    return true;
}

int cb_graphs_run(cb_graphs *g, cudaStream_t st, int k, int c, cb_body_fn body_fn, void *ctx, bool *fresh) {
    *fresh = !g->gx[k][c];
    if (*fresh) return body_fn(ctx, g->B[k], g->C[c]);
    cudaError_t e = cudaGraphLaunch(g->gx[k][c], st);
    if (e != cudaSuccess) return rt_fail(RT_EINTERNAL, "cudaGraphLaunch: %s%s", cudaGetErrorString(e), CB_NOGRAPH);
    return 0;
}

int cb_graphs_capture(cb_graphs *g, cudaStream_t st, int k, int c, cb_body_fn body_fn, void *ctx) {
    int64_t B = g->B[k];
    cudaGraph_t gr = NULL;
    cudaError_t e = cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess)
        return rt_fail(RT_EINTERNAL, "cudaStreamBeginCapture: %s%s", cudaGetErrorString(e), CB_NOGRAPH);
    int rc = body_fn(ctx, B, g->C[c]);
    e = cudaStreamEndCapture(st, &gr);
    if (!rc && e != cudaSuccess)
        rc = rt_fail(RT_EINTERNAL, "cudaStreamEndCapture: %s%s", cudaGetErrorString(e), CB_NOGRAPH);
    else if (rc) rc = rt_errorf(rc, "capturing the decode graph of %lld rows%s", (long long)B, CB_NOGRAPH);
    if (!rc && (e = cudaGraphInstantiate(&g->gx[k][c], gr, 0)) != cudaSuccess) {
        g->gx[k][c] = NULL;
        rc = rt_fail(RT_EINTERNAL, "cudaGraphInstantiate: %s%s", cudaGetErrorString(e), CB_NOGRAPH);
    }
    if (gr) cudaGraphDestroy(gr);
    return rc;
}

/* ---- logits rows on the device --------------------------------------------------------------- */

static int cb_check_row(const cb_rows *d, int64_t row) {
    if (row < 0 || row >= d->n_rows)
        return rt_fail(RT_EINVAL, "logits row %lld: the last forward left %lld on the GPU", (long long)row,
                       (long long)d->n_rows);
    return 0;
}

int cb_logits_row(const cb_rows *d, int64_t row, float *out, cudaStream_t st) {
    TRY(cb_check_row(d, row));
    CUDA_TRY(cudaMemcpyAsync(out, d->rows + row * d->V, (size_t)d->V * sizeof(float), cudaMemcpyDeviceToHost, st));
    CUDA_TRY(cudaStreamSynchronize(st));
    return 0;
}

int cb_sample(const cb_rows *d, cudaStream_t st, int64_t n, const int32_t *row_of, int64_t n_valid,
              const int32_t *holes, int64_t n_holes, const smp_params *params, const uint64_t *rng, int32_t *tokens,
              float *logprob, int top_k, int32_t *top_ids, float *top_lp) {
    if (n <= 0 || n > d->max_seqs || n_valid <= 0 || n_valid > d->V || top_k < 0 || top_k > SMP_TOP_MAX ||
        top_k > n_valid)
        return rt_fail(RT_EINVAL, "device sampling of %lld rows of %lld ids with top-%d logprobs (at most %lld rows of "
                       "%lld, top-%d)", (long long)n, (long long)n_valid, top_k, (long long)d->max_seqs,
                       (long long)d->V, SMP_TOP_MAX);
    float *sl = d->packed;
    for (int64_t i = 0; i < n; i++) {
        TRY(cb_check_row(d, row_of[i]));
        TRY(smp_check(&params[i]));
        /* the row's drawable ids, packed [n, n_valid], the tokenizer's holes at −inf */
        CUDA_TRY(cudaMemcpyAsync(sl + i * n_valid, d->rows + (int64_t)row_of[i] * d->V, (size_t)n_valid * sizeof(float),
                                 cudaMemcpyDeviceToDevice, st));
        for (int64_t h = 0; h < n_holes; h++)
            CUDA_TRY(cudaMemcpyAsync(sl + i * n_valid + holes[h], d->neginf, sizeof(float), cudaMemcpyDeviceToDevice,
                                     st));
    }
    CUDA_TRY(cudaMemcpyAsync(d->params, params, (size_t)n * sizeof *params, cudaMemcpyHostToDevice, st));
    CUDA_TRY(cudaMemcpyAsync(d->rng, rng, (size_t)n * 3 * sizeof *rng, cudaMemcpyHostToDevice, st));
    TRY(smp_sample_cuda(sl, n, n_valid, (const smp_params *)d->params, (const uint64_t *)d->rng, d->ws, d->ws_bytes,
                        d->tok, logprob ? d->lp : NULL, st));
    CUDA_TRY(cudaMemcpyAsync(tokens, d->tok, (size_t)n * sizeof(int32_t), cudaMemcpyDeviceToHost, st));
    if (logprob) CUDA_TRY(cudaMemcpyAsync(logprob, d->lp, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost, st));
    if (top_k > 0) {
        int32_t *d_ids = d->top;
        float *d_lp = (float *)(d_ids + n * top_k);
        TRY(smp_top_logprobs_cuda(sl, n, n_valid, top_k, d_ids, d_lp, st));
        CUDA_TRY(cudaMemcpyAsync(top_ids, d_ids, (size_t)(n * top_k) * sizeof(int32_t), cudaMemcpyDeviceToHost, st));
        CUDA_TRY(cudaMemcpyAsync(top_lp, d_lp, (size_t)(n * top_k) * sizeof(float), cudaMemcpyDeviceToHost, st));
    }
    CUDA_TRY(cudaStreamSynchronize(st));
    return 0;
}

#endif

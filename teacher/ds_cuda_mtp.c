/* teacher/ds_cuda_mtp.c — DeepSeek-V3's MTP layer on the GPU engine and greedy draft-and-verify
 * over it (sd_greedy_cuda, teacher/speculative.h; the layer's layout and load, ds_cuda.h). The
 * MTP forward is teacher/deepseek.c's ds_mtp_forward on the device: embed(next) → enorm, h →
 * hnorm, [e | h] → FP8 eh_proj → the decoder layer (layers[L], its own latent cache layer at the
 * main sequence's slots) → shared_head.norm → shared_head.head. */
#include "teacher/speculative.h"

#include "core/cuda_try.h"
#include "core/status.h"

#ifndef RT_HAVE_CUDA

int sd_greedy_cuda(dsc_model *m, const int32_t *prompt, int64_t n_prompt, int64_t max_new, const int32_t *stop_ids,
                   int n_stop, sd_oracle oracle, void *oracle_ctx, int32_t *out, int64_t *n_out, sd_stats *stats) {
    (void)m, (void)prompt, (void)n_prompt, (void)max_new, (void)stop_ids, (void)n_stop, (void)oracle, (void)oracle_ctx,
        (void)out, (void)stats;
    *n_out = 0;
    return rt_fail(RT_EUNSUPPORTED, "built without CUDA");
}

#else

#ifndef RT_FAKE_CUDA
#include <cuda_runtime.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "kernels/convert.h"
#include "kernels/embed.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "teacher/ds_cuda_int.h"

void dsc_mtp_layout(dsc_model *m, size_t *at) {
    int64_t D = m->D;
    m->mt.embed = dsc_put(at, (size_t)(m->V * D) * 2);
    m->mt.head = dsc_put(at, (size_t)(m->Vr * D) * 2);
    m->mt.enorm = dsc_put(at, (size_t)D * 4);
    m->mt.hnorm = dsc_put(at, (size_t)D * 4);
    m->mt.norm = dsc_put(at, (size_t)D * 4);
    m->mt.eh = dsc_put_fp8(at, D, 2 * D);
}

int dsc_mtp_load(dsc_model *m, loader *ld) {
    int64_t D = m->D;
    char nm[200];
#define NM(suffix) (snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)m->L, suffix), nm)
    TRY(dsc_load_plain(ld, NM("embed_tokens.weight"), m->V, D, m->mt.embed, true));
    TRY(dsc_load_plain_rows(ld, NM("shared_head.head.weight"), m->V, D, m->v0, m->Vr, m->mt.head, true));
    TRY(dsc_load_plain(ld, NM("enorm.weight"), D, 0, m->mt.enorm, false));
    TRY(dsc_load_plain(ld, NM("hnorm.weight"), D, 0, m->mt.hnorm, false));
    TRY(dsc_load_plain(ld, NM("shared_head.norm.weight"), D, 0, m->mt.norm, false));
    return dsc_load_fp8(ld, NM("eh_proj.weight"), D, 2 * D, &m->mt.eh);
#undef NM
}

/* ---- one sequence through the main model: every row's hidden state, rewinds -------------- */

typedef struct {
    dsc_model *m;
    kv_pool *pool;
    kv_seq s;
    uint16_t *h16;   /* host: [max_tokens, D] bf16 rows in and out */
} gpu_ctx;

static int check_tokens(const dsc_model *m, const int32_t *t, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (t[i] < 0 || t[i] >= m->V) return rt_fail(RT_EINVAL, "token %d outside the vocabulary of %lld", t[i], (long long)m->V);
    return 0;
}

static int gpu_forward(void *p, const int32_t *tokens, int64_t pos0, int64_t n, bool all_logits, float *logits,
                       float *hidden) {
    gpu_ctx *g = p;
    dsc_model *m = g->m;
    kv_seq *s = &g->s, *seqs[1] = {s};
    int64_t D = m->D, V = m->V;
    if (n < 1 || pos0 < 0 || pos0 > s->len || pos0 + n > m->c.max_position_embeddings)
        return rt_fail(RT_EINVAL, "positions [%lld, %lld) after %lld cached (context %lld)", (long long)pos0,
                       (long long)(pos0 + n), (long long)s->len, (long long)m->c.max_position_embeddings);
    TRY(check_tokens(m, tokens, n));
    s->len = pos0;   /* the rewind: later rows are rewritten */
    TRY(dsc_reserve(m, g->pool, s, pos0 + n));
    /* all_logits: one piece per token (each its logits row), at most max_seqs a pass; else whole
     * chunks of max_tokens, the last row's logits from the final one */
    int64_t per = all_logits ? (m->p.max_seqs < m->p.max_tokens ? m->p.max_seqs : m->p.max_tokens) : m->p.max_tokens;
    while (all_logits && per > 1 && per * s->n_blocks > m->p.table_ints) per--;
    piece pc[per > 0 ? per : 1];
    int64_t tok_at[1] = {0};
    for (int64_t off = 0; off < n; off += per) {
        int64_t T = n - off < per ? n - off : per, np;
        if (all_logits) {
            for (np = 0; np < T; np++) pc[np] = (piece){.s = 0, .from = np, .n = 1, .last = true};
        } else {
            pc[0] = (piece){.s = 0, .from = 0, .n = T, .last = true};
            np = 1;
        }
        float *lg = all_logits ? logits + off * V : off + T == n ? logits : NULL;
        TRY(dsc_pass(m, seqs, pc, np, T, tokens + off, tok_at, 0, lg));
        s->len += T;
        /* the final normalized hidden states are still in xn */
        CUDA_TRY(cudaMemcpy(g->h16, m->arena + m->a.xn, (size_t)(T * D) * 2, cudaMemcpyDeviceToHost));
        cvt_bf16_to_f32(g->h16, hidden + off * D, (size_t)(T * D));
    }
    m->dev_rows = 0;   /* nothing left for dsc_sample */
    return 0;
}

/* ---- the MTP layer on the device -------------------------------------------------------- */

/* logits [V] (host) of one bf16 row h on the device through shared_head.head (P > 1: this rank's
 * vocabulary rows, all-gathered, as ds_cuda.c's pass does for the LM head) */
static int mtp_head(dsc_model *m, const uint16_t *h, float *logits) {
    cudaStream_t st = m->stream;
    float *lg = (float *)(m->arena + m->a.logits);
    if (m->P == 1) TRY(bf16_gemm_f32_cuda(m->lt, h, (const uint16_t *)(m->wb + m->mt.head), 1, m->V, m->D, lg, st));
    else {
        float *lp = (float *)(m->arena + m->a.lpart), *lga = (float *)(m->arena + m->a.lgather);
        TRY(bf16_gemm_f32_cuda(m->lt, h, (const uint16_t *)(m->wb + m->mt.head), 1, m->Vr, m->D, lp, st));
        TRY(comm_allgather(m->nccl, lp, lga, (size_t)m->Vp, RT_DT_F32));
        for (int64_t q = 0; q < m->P; q++) {
            int64_t v0 = q * m->Vp, nv = m->V - v0 < m->Vp ? m->V - v0 : m->Vp;
            CUDA_TRY(cudaMemcpyAsync(lg + v0, lga + q * m->Vp, (size_t)nv * 4, cudaMemcpyDeviceToDevice, st));
        }
    }
    CUDA_TRY(cudaMemcpyAsync(logits, lg, (size_t)m->V * sizeof(float), cudaMemcpyDeviceToHost, st));
    CUDA_TRY(cudaStreamSynchronize(st));
    return 0;
}

static int gpu_mtp(void *p, const float *hidden, const int32_t *next, int64_t pos0, int64_t n, float *logits) {
    gpu_ctx *g = p;
    dsc_model *m = g->m;
    kv_seq *s = &g->s;
    cudaStream_t st = m->stream;
    int64_t D = m->D, bs = m->bs, ld = s->n_blocks;
    if (!m->mtp) return rt_fail(RT_EINVAL, "the model has no MTP layer loaded");
    if (n < 1 || pos0 < 0 || pos0 + n > s->len)
        return rt_fail(RT_EINVAL, "MTP rows [%lld, %lld) beyond the %lld cached positions", (long long)pos0,
                       (long long)(pos0 + n), (long long)s->len);
    TRY(check_tokens(m, next, n));
    if (ld > m->p.table_ints) return rt_fail(RT_ERANGE, "a block table of %lld blocks", (long long)ld);
    const dsc_layer *y = &m->layers[m->L];
    uint16_t *x = (uint16_t *)(m->arena + m->a.x), *xn = (uint16_t *)(m->arena + m->a.xn);
    uint16_t *hb = (uint16_t *)(m->arena + m->a.att), *cat = (uint16_t *)(m->arena + m->a.cat);
#define WF(off) ((const float *)(m->wb + (off)))
    for (int64_t off = 0; off < n; off += m->p.max_tokens) {
        int64_t T = n - off < m->p.max_tokens ? n - off : m->p.max_tokens, max_ctx = 1;
        /* the pass's ints as ds_cuda.c lays them out: tokens, positions, slots, sequence, contexts | table */
        int32_t *tok = m->meta, *pos = tok + T, *slot = pos + T, *sq = slot + T, *ctx = sq + T, *tab = ctx + T;
        for (int64_t t = 0; t < T; t++) {
            tok[t] = next[off + t];
            pos[t] = (int32_t)(pos0 + off + t);
            slot[t] = s->blocks[pos[t] / bs] * (int32_t)bs + (int32_t)(pos[t] % bs);
            sq[t] = 0;
            ctx[t] = pos[t] + 1;
            if (ctx[t] > max_ctx) max_ctx = ctx[t];
        }
        memcpy(tab, s->blocks, (size_t)ld * sizeof(int32_t));
        CUDA_TRY(cudaMemcpyAsync(m->arena + m->a.meta, m->meta, (size_t)(5 * T + ld) * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, st));
        cvt_f32_to_bf16(hidden + off * D, g->h16, (size_t)(T * D));
        CUDA_TRY(cudaMemcpyAsync(hb, g->h16, (size_t)(T * D) * 2, cudaMemcpyHostToDevice, st));
        /* [enorm(embed(next)) | hnorm(h)] → eh_proj → x */
        TRY(embed_fwd_cuda(x, (const uint16_t *)(m->wb + m->mt.embed), (const int32_t *)(m->arena + m->a.meta), T, D, st));
        TRY(ds_rmsnorm_cuda(x, D, NULL, WF(m->mt.enorm), T, D, m->eps, cat, 2 * D, st));
        TRY(ds_rmsnorm_cuda(hb, D, NULL, WF(m->mt.hnorm), T, D, m->eps, cat + D, 2 * D, st));
        TRY(dsc_linear(m, &m->mt.eh, cat, T, x));
        /* the decoder layer on cache layer L, then shared_head.norm */
        TRY(ds_rmsnorm_cuda(x, D, NULL, WF(y->attn_norm), T, D, m->eps, xn, D, st));
        TRY(dsc_attention(m, y, m->L, T, ld, max_ctx));
        TRY(ds_rmsnorm_cuda(x, D, (uint16_t *)(m->arena + m->a.att), WF(y->ffn_norm), T, D, m->eps, xn, D, st));
        TRY(dsc_feed_forward(m, y, T));
        TRY(ds_rmsnorm_cuda(x, D, (uint16_t *)(m->arena + m->a.tmp), WF(m->mt.norm), T, D, m->eps, xn, D, st));
        if (off + T == n) TRY(mtp_head(m, xn + (T - 1) * D, logits));
    }
#undef WF
    CUDA_TRY(cudaStreamSynchronize(st));
    m->dev_rows = 0;
    return 0;
}

int sd_greedy_cuda(dsc_model *m, const int32_t *prompt, int64_t n_prompt, int64_t max_new, const int32_t *stop_ids,
                   int n_stop, sd_oracle oracle, void *oracle_ctx, int32_t *out, int64_t *n_out, sd_stats *stats) {
    *n_out = 0;
    *stats = (sd_stats){0};
    if (!oracle && !m->mtp) return rt_fail(RT_EINVAL, "draft-and-verify needs the MTP layer loaded (dsc_load_opts.load_mtp)");
    int64_t nb;
    TRY(dsc_cache_init(m, 16, &nb));
    gpu_ctx g = {.m = m};
    int rc = kv_pool_create(nb, 16, 0, &g.pool);
    if (!rc && !(g.h16 = rt_malloc((size_t)(m->p.max_tokens * m->D) * 2))) rc = RT_ENOMEM;
    sd_ops ops = {.vocab = m->V, .hidden = m->D, .forward = gpu_forward, .mtp = m->mtp ? gpu_mtp : NULL};
    if (!rc) rc = sd_run(&ops, &g, prompt, n_prompt, max_new, stop_ids, n_stop, oracle, oracle_ctx, out, n_out, stats);
    kv_seq_release(g.pool, &g.s);
    kv_pool_free(g.pool);
    free(g.h16);
    return rc;
}

#endif

/* teacher/ds_cuda.c — DeepSeek-V3 load, memory plan and paged forward on one CUDA GPU or several (see
 * teacher/ds_cuda.h). The layer is the chain of bench/lab_ds_r1_layer.cu: RMSNorm → FP8 q_a
 * (→ RMSNorm → q_b) and kv_a → latent RMSNorm, YaRN rope → latent rows into the paged cache →
 * q_nope·W_UK (bf16 batched) → absorbed MLA → ·W_UVᵀ → FP8 o_proj → residual + RMSNorm → dense
 * FP8 MLP, or router → permutation → grouped FP8 experts + the shared experts → combine.
 * tests/unit/test_ds_cuda_fake.c compiles this file against CPU stand-ins of the runtime and
 * the kernels (tests/unit/fake_cuda.h) and runs it beside the CPU engine. */
#include "teacher/ds_cuda.h"

#include "core/cuda_try.h"
#include "core/status.h"

#ifndef RT_HAVE_CUDA

int dsc_load(const char *dir, const dsc_load_opts *o, dsc_model **out) {
    (void)dir, (void)o;
    *out = NULL;
    return rt_fail(RT_EUNSUPPORTED, "--device cuda: this retort was built without CUDA (rebuild with make CUDA=1)");
}
void dsc_free(dsc_model *m) { (void)m; }
const mc_config *dsc_config(const dsc_model *m) { (void)m; return NULL; }
const dsc_plan *dsc_get_plan(const dsc_model *m) { (void)m; return NULL; }
int dsc_cache_init(dsc_model *m, int64_t block_size, int64_t *n_blocks) {
    (void)m, (void)block_size;
    *n_blocks = 0;
    return rt_fail(RT_EUNSUPPORTED, "built without CUDA");
}
int dsc_forward(dsc_model *m, kv_pool *cache, kv_seq *const *seqs, const int32_t *n_new, int64_t n_seqs,
                const int32_t *tokens, float *logits) {
    (void)m, (void)cache, (void)seqs, (void)n_new, (void)n_seqs, (void)tokens, (void)logits;
    return rt_fail(RT_EUNSUPPORTED, "built without CUDA");
}
int dsc_logits_row(dsc_model *m, int64_t row, float *out) {
    (void)m, (void)row, (void)out;
    return rt_fail(RT_EUNSUPPORTED, "built without CUDA");
}
int dsc_sample(dsc_model *m, int64_t n, const int32_t *row_of, int64_t n_valid, const int32_t *holes, int64_t n_holes,
               const smp_params *params, const uint64_t *rng, int32_t *tokens, float *logprob, int top_k,
               int32_t *top_ids, float *top_lp) {
    (void)top_k, (void)top_ids, (void)top_lp;
    (void)m, (void)n, (void)row_of, (void)n_valid, (void)holes, (void)n_holes, (void)params, (void)rng, (void)tokens,
        (void)logprob;
    return rt_fail(RT_EUNSUPPORTED, "built without CUDA");
}

#else

#ifndef RT_FAKE_CUDA   /* tests/unit/test_ds_cuda_fake.c stands the runtime and kernels in on the CPU */
#include <cuda_runtime.h>
#endif
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/checkpoint.h"
#include "core/comm.h"
#include "core/safetensors.h"
#include "kernels/convert.h"
#include "kernels/embed.h"
#include "kernels/fp8.h"
#include "kernels/matmul.h"
#include "kernels/mla.h"
#include "kernels/moe.h"
#include "kernels/norm.h"
#include "kernels/rope.h"
#include "kernels/sample.h"
#include "teacher/cuda_batch.h"

#define DSC_LT_WS ((size_t)32 << 20)      /* fp8_gemm_lt_create's cuBLASLt workspace */
#define DSC_CHUNK ((size_t)1 << 20)       /* elements converted per staging step */
#define DSC_PLAN_BS 16                    /* block size the block-table room is planned for */
#define DSC_MIN_KV 1024                   /* cache positions a plan must leave at least (or the context) */
#define DSC_SPLITK_M 64                   /* rows up to which dense FP8 GEMMs may split K */
#define DSC_LORA_EPS 1e-6f                /* q_a_layernorm / kv_a_layernorm (as teacher/deepseek.c) */
#define NONE ((size_t)-1)

#include "teacher/ds_cuda_int.h"


static double gb(size_t b) { return (double)b / 1e9; }

/* ---- the layout and the plan (no device memory yet) -------------------------------------- */

static size_t put(size_t *at, size_t bytes) {
    size_t o = *at;
    *at += up256(bytes);
    return o;
}
static dmat put_fp8(size_t *at, int64_t rows, int64_t cols) {
    dmat d = {.rows = rows, .cols = cols};
    d.w = put(at, (size_t)(rows * cols));
    d.s = put(at, (size_t)(cdiv(rows, 128) * cdiv(cols, 128)) * 4);
    return d;
}
/* G matrices of [rows, cols] end to end (rows a multiple of 128: the scale grids line up) */
static dmat put_fp8_groups(size_t *at, int64_t G, int64_t rows, int64_t cols) {
    dmat d = put_fp8(at, G * rows, cols);
    d.rows = rows;
    return d;
}

static size_t layout_weights(dsc_model *m) {
    const mc_config *c = &m->c;
    size_t at = 0;
    int64_t D = m->D;
    m->embed = put(&at, (size_t)(m->V * D) * 2);
    m->norm = put(&at, (size_t)D * 4);
    /* this rank's LM-head rows (tied: its rows of the whole embedding) */
    m->head = c->tie_word_embeddings ? m->embed + (size_t)(m->v0 * D) * 2 : put(&at, (size_t)(m->Vr * D) * 2);
    for (int64_t l = 0; l < m->L; l++) dsc_layout_layer(m, l, &at);
    if (m->mtp) {   /* its decoder layer as layer L, then its own tensors */
        dsc_layout_layer(m, m->L, &at);
        dsc_mtp_layout(m, &at);
    }
    return at;
}

void dsc_layout_layer(dsc_model *m, int64_t l, size_t *at_) {
    const mc_config *c = &m->c;
    int64_t D = m->D;
    size_t at = *at_;
    {
        dsc_layer *y = &m->layers[l];
        y->attn_norm = put(&at, (size_t)D * 4);
        y->ffn_norm = put(&at, (size_t)D * 4);
        y->kv_norm = put(&at, (size_t)m->R * 4);
        y->q_a_norm = NONE;
        if (m->ql > 0) {
            y->q_a = put_fp8(&at, m->ql, D);
            y->q_a_norm = put(&at, (size_t)m->ql * 4);
            y->q_b = put_fp8(&at, m->H * m->dq, m->ql);
        } else {
            y->q_b = put_fp8(&at, m->H * m->dq, D);
        }
        y->kv_a = put_fp8(&at, m->R + m->dr, D);
        y->kvb = put(&at, (size_t)(m->H * (m->dn + m->dv) * m->R) * 2);
        y->o = put_fp8(&at, D, m->H * m->dv);
        y->moe = mc_layer_is_moe(c, l);
        y->gate = y->gate_bias = NONE;
        if (!y->moe) y->inter = m->Fl;
        else {   /* the router and the shared experts whole; this rank's routed experts e ≡ rank (mod P) */
            y->inter = c->moe_intermediate_size * c->n_shared_experts;
            y->gate = put(&at, (size_t)(m->E * D) * 2);
            if (c->has_correction_bias) y->gate_bias = put(&at, (size_t)m->E * 4);
            y->e13 = put_fp8_groups(&at, m->El, 2 * m->I, D);
            y->e2 = put_fp8_groups(&at, m->El, D, m->I);
        }
        if (y->inter > 0) {
            y->w13 = put_fp8(&at, 2 * y->inter, D);
            y->w2 = put_fp8(&at, D, y->inter);
        }
    }
    *at_ = at;
}

static size_t layout_activations(dsc_model *m, int64_t T, int64_t S, int64_t table_ints) {
    size_t at = 0;
    bool ep = m->P > 1 && m->E > 0;
    /* expert parallel: a decode pass's capacity-padded slabs hold P·ceil(T/P)·K ≤ (T + P)·K rows */
    int64_t D = m->D, TK = (ep ? T + m->P : T) * (m->K > 0 ? m->K : 1), rows = TK > T ? TK : T, dl = m->R + m->dr;
#define PUT(field, bytes) (m->a.field = put(&at, (size_t)(bytes)))
    PUT(x, T * D * 2);
    PUT(xn, T * D * 2);
    PUT(tmp, (T + m->P) * D * 2);   /* P > 1: room for the all-gather of ceil(T/P)-row slices */
    PUT(att, T * D * 2);
    PUT(aq, T * m->Kmax);
    PUT(as, T * (m->Kmax / 128) * 4);
    PUT(qa, T * (m->ql > 0 ? m->ql : 1) * 2);
    PUT(qan, T * (m->ql > 0 ? m->ql : 1) * 2);
    PUT(q, T * m->H * m->dq * 2);
    PUT(kv, T * dl * 2);
    PUT(lat, T * dl * 2);
    PUT(qabs, T * m->H * dl * 2);
    PUT(olat, T * m->H * m->R * 2);
    PUT(ov, T * m->H * m->dv * 2);
    PUT(logit, T * (m->E > 0 ? m->E : 1) * 4);
    PUT(ridx, TK * 4);
    PUT(rw, TK * 4);
    PUT(off, (m->E + 1) * 4);
    PUT(ros, TK * 4);
    PUT(sor, TK * 4);
    PUT(mqp, m->E > 0 ? TK * D : 0);
    PUT(msp, m->E > 0 ? TK * (D / 128) * 4 : 0);
    PUT(gu, rows * 2 * m->Imax * 2);
    PUT(hq, rows * m->Imax);
    PUT(hs, rows * (m->Imax / 128) * 4);
    PUT(y, m->E > 0 ? TK * D * 2 : 0);
    PUT(ys, T * D * 2);
    PUT(hf, S * D * 2);
    PUT(logits, S * m->V * 4);
    PUT(lpart, m->P > 1 ? S * m->Vp * 4 : 0);
    PUT(lgather, m->P > 1 ? m->P * S * m->Vp * 4 : 0);
    PUT(sendq, ep ? TK * D : 0);
    PUT(sends, ep ? TK * (D / 128) * 4 : 0);
    PUT(recvq, ep ? TK * D : 0);
    PUT(recvs, ep ? TK * (D / 128) * 4 : 0);
    PUT(yb, ep ? TK * D * 2 : 0);
    PUT(ret, ep ? TK * D * 2 : 0);
    PUT(pidx, ep ? 4 * TK * 4 : 0);
    PUT(meta, (5 * T + table_ints) * 4);
    PUT(inv_freq, m->dr / 2 * 4);
    PUT(cat, m->mtp ? T * 2 * D * 2 : 0);
    PUT(sl, S * m->V * 4);
    PUT(sparams, S * (int64_t)sizeof(smp_params));
    PUT(srng, S * 3 * 8);
    PUT(stok, S * 4);
    PUT(slp, S * 4);
    PUT(neginf, 4);
    PUT(gemm_ws, m->gemm_ws_bytes);
    PUT(mla_ws, m->mla_ws_bytes);
    PUT(smp_ws, m->smp_ws_bytes);
#undef PUT
    m->a.end = at;
    return at;
}

/* The split-K partials the dense FP8 GEMMs may ask for at up to DSC_SPLITK_M rows. */
static size_t splitk_bytes(int64_t max_m, int64_t N, int64_t K) {
    size_t most = 0;
    for (int64_t M = 1; M <= max_m && M <= DSC_SPLITK_M; M++) {
        size_t b = fp8_gemm_splitk_workspace_bytes(M, N, fp8_gemm_splitk_plan(M, N, K));
        if (b > most) most = b;
    }
    return most;
}

static int make_plan(dsc_model *m, const char *dir, const dsc_load_opts *o) {
    dsc_plan *p = &m->p;
    cb_plan_limits(p, o ? o->max_tokens : 0, o ? o->max_seqs : 0);
    int64_t maxpos = m->c.max_position_embeddings, T = p->max_tokens;
    p->weights = layout_weights(m);
    m->smp_ws_bytes = smp_cuda_workspace_bytes(p->max_seqs, m->V);
    p->table_ints = p->max_seqs * (cdiv(maxpos, DSC_PLAN_BS) + 1);
    /* workspaces: the most any pass can ask */
    m->gemm_ws_bytes = 0;
    for (int64_t l = 0; l < m->L + m->mtp; l++) {
        const dsc_layer *y = &m->layers[l];
        const dmat *ds[] = {&y->q_a, &y->q_b, &y->kv_a, &y->o, &y->w13, &y->w2, l == m->L ? &m->mt.eh : &y->o};
        for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++) {
            if (ds[i]->rows <= 0) continue;
            size_t b = splitk_bytes(T, ds[i]->rows, ds[i]->cols);
            if (b > m->gemm_ws_bytes) m->gemm_ws_bytes = b;
        }
    }
    m->mla_ws_bytes = 0;
    for (int64_t n = 1; n <= T; n++) {
        size_t b = mla_decode_workspace_bytes(n, m->H, maxpos);
        if (b > m->mla_ws_bytes) m->mla_ws_bytes = b;
    }
    size_t ws = up256(m->gemm_ws_bytes) + up256(m->mla_ws_bytes) + up256(m->smp_ws_bytes);
    p->activations = layout_activations(m, T, p->max_seqs, p->table_ints) - ws;
    p->workspace = ws + DSC_LT_WS;
    p->kv_position_bytes = (size_t)((m->L + m->mtp) * (m->R + m->dr)) * 2;   /* the MTP layer's rows too */
    TRY(cb_plan_budget(p, o ? o->memory_fraction : 0, dir, m->P));
    size_t fixed = p->weights + p->activations + p->workspace;
    int64_t need_kv = maxpos < DSC_MIN_KV ? maxpos : DSC_MIN_KV;
    int64_t room = fixed < p->budget ? (int64_t)((p->budget - fixed) / p->kv_position_bytes) : 0;
    if (room < need_kv)
        return rt_fail(RT_ENOMEM, "model %s needs %.3g GB of weights and %.3g GB of activations and workspace%s, "
                       "which leaves the GPU's %.3g GB room for %lld cached positions (at least %lld needed)", dir,
                       gb(p->weights), gb(p->activations + p->workspace), m->P > 1 ? " per rank" : "", gb(p->budget),
                       (long long)room,
                       (long long)need_kv);
    p->kv_positions = room;
    p->kv = (size_t)room * p->kv_position_bytes;
    p->total = fixed + p->kv;
    return 0;
}

/* ---- loading ---------------------------------------------------------------------------- */



static const st_tensor *find(const loader *ld, const char *name, int64_t rows, int64_t cols) {
    const st_tensor *t = st_find(ld->f, name);
    if (!t) {
        rt_fail(RT_EFORMAT, "model %s: tensor %s missing", ld->dir, name);
        return NULL;
    }
    size_t want = (size_t)(rows * (cols > 0 ? cols : 1));
    if (t->nelem != want) {
        rt_fail(RT_EFORMAT, "model %s: tensor %s has %zu elements, %zu expected", ld->dir, name, t->nelem, want);
        return NULL;
    }
    return t;
}

/* Rows [r0, r0 + nr) and columns [c0, c0 + nc) of an FP8 [rows, cols] tensor, with the scales of
 * their blocks, into d's matrix g at rows [row0, …) (row0 % 128 = 0; d->cols = nc): only those
 * bytes of the mapping are read. The slice lies on the 128×128 block grid. */
static int load_fp8(loader *ld, const char *name, int64_t rows, int64_t cols, int64_t r0, int64_t nr, int64_t c0,
                    int64_t nc, const dmat *d, int64_t g, int64_t row0) {
    dsc_model *m = ld->m;
    const st_tensor *t = find(ld, name, rows, cols);
    if (!t) return RT_EFORMAT;
    if (t->dtype != RT_DT_F8_E4M3)
        return rt_fail(RT_EUNSUPPORTED, "model %s: tensor %s is %s; the CUDA engine takes FP8 e4m3 projections "
                       "(DeepSeek's checkpoints); use --device cpu", ld->dir, name, rt_dtype_name(t->dtype));
    char sn[240];
    snprintf(sn, sizeof sn, "%s_scale_inv", name);
    const st_tensor *s = find(ld, sn, cdiv(rows, 128), cdiv(cols, 128));
    if (!s) return RT_EFORMAT;
    if (s->dtype != RT_DT_F32) return rt_fail(RT_EFORMAT, "model %s: %s is not F32", ld->dir, sn);
    if (r0 % 128 || c0 % 128 || (nr % 128 && r0 + nr != rows) || (nc % 128 && c0 + nc != cols))
        return rt_fail(RT_EUNSUPPORTED, "model %s: tensor %s: this rank's rows [%lld, %lld) and columns [%lld, %lld) "
                       "do not lie on its 128×128 FP8 blocks", ld->dir, name, (long long)r0, (long long)(r0 + nr),
                       (long long)c0, (long long)(c0 + nc));
    int64_t scols = cdiv(cols, 128), dscols = cdiv(nc, 128), grows = d->rows;
    size_t w_at = d->w + (size_t)((g * grows + row0) * nc), s_at = d->s + (size_t)((g * grows + row0) / 128 * dscols) * 4;
    const uint8_t *w = (const uint8_t *)t->data + r0 * cols + c0;
    const float *sc = (const float *)s->data + (r0 / 128) * scols + c0 / 128;
    if (nc == cols) {
        CUDA_TRY(cudaMemcpy(m->wb + w_at, w, (size_t)(nr * cols), cudaMemcpyHostToDevice));
        CUDA_TRY(cudaMemcpy(m->wb + s_at, sc, (size_t)(cdiv(nr, 128) * scols) * 4, cudaMemcpyHostToDevice));
        return 0;
    }
    CUDA_TRY(cudaMemcpy2DAsync(m->wb + w_at, (size_t)nc, w, (size_t)cols, (size_t)nc, (size_t)nr,
                               cudaMemcpyHostToDevice, m->stream));
    CUDA_TRY(cudaMemcpy2DAsync(m->wb + s_at, (size_t)dscols * 4, sc, (size_t)scols * 4, (size_t)dscols * 4,
                               (size_t)cdiv(nr, 128), cudaMemcpyHostToDevice, m->stream));
    CUDA_TRY(cudaStreamSynchronize(m->stream));   /* the mapping's pages are read before the next slice */
    return 0;
}

/* Elements [first, first + n) of a tensor of any float dtype into bf16 (to16) or f32 at byte
 * offset `at`, in chunks. */
static int load_float(loader *ld, const st_tensor *t, size_t first, size_t n, size_t at, bool to16) {
    dsc_model *m = ld->m;
    size_t es = rt_dtype_size(t->dtype);
    const char *src = (const char *)t->data + first * es;
    if ((to16 && t->dtype == RT_DT_BF16) || (!to16 && t->dtype == RT_DT_F32)) {
        CUDA_TRY(cudaMemcpy(m->wb + at, src, n * es, cudaMemcpyHostToDevice));
        return 0;
    }
    for (size_t i = 0; i < n; i += DSC_CHUNK) {
        size_t k = n - i < DSC_CHUNK ? n - i : DSC_CHUNK;
        TRY(cvt_to_f32(t->dtype, src + i * es, ld->stage, k));
        if (to16) {
            cvt_f32_to_bf16(ld->stage, ld->stage16, k);
            CUDA_TRY(cudaMemcpy(m->wb + at + i * 2, ld->stage16, k * 2, cudaMemcpyHostToDevice));
        } else {
            CUDA_TRY(cudaMemcpy(m->wb + at + i * 4, ld->stage, k * 4, cudaMemcpyHostToDevice));
        }
    }
    return 0;
}

/* Rows [r0, r0 + nr) of a float [rows, cols] tensor (cols 0: a vector, whole) at `at`. */
static int load_plain_rows(loader *ld, const char *name, int64_t rows, int64_t cols, int64_t r0, int64_t nr, size_t at,
                           bool to16) {
    const st_tensor *t = find(ld, name, rows, cols);
    if (!t) return RT_EFORMAT;
    if (t->dtype == RT_DT_F8_E4M3)
        return rt_fail(RT_EUNSUPPORTED, "model %s: tensor %s is FP8 where the CUDA engine expects a float type", ld->dir,
                       name);
    int64_t w = cols > 0 ? cols : 1;
    return load_float(ld, t, (size_t)(r0 * w), (size_t)(nr * w), at, to16);
}
static int load_plain(loader *ld, const char *name, int64_t rows, int64_t cols, size_t at, bool to16) {
    return load_plain_rows(ld, name, rows, cols, 0, rows, at, to16);
}

/* Rows [r0, r0 + nr) of kv_b [rows, cols] as bf16, FP8 widened 128 rows at a time on the host
 * (cols ≤ DSC_CHUNK/128; r0 on the block grid). */
static int load_kvb(loader *ld, const char *name, int64_t rows, int64_t cols, int64_t r0, int64_t nr, size_t at) {
    const st_tensor *t = find(ld, name, rows, cols);
    if (!t) return RT_EFORMAT;
    if (t->dtype != RT_DT_F8_E4M3) return load_float(ld, t, (size_t)(r0 * cols), (size_t)(nr * cols), at, true);
    char sn[240];
    snprintf(sn, sizeof sn, "%s_scale_inv", name);
    const st_tensor *s = find(ld, sn, cdiv(rows, 128), cdiv(cols, 128));
    if (!s) return RT_EFORMAT;
    if (cols * 128 > (int64_t)DSC_CHUNK)
        return rt_fail(RT_EUNSUPPORTED, "model %s: kv_b_proj with %lld columns", ld->dir, (long long)cols);
    if (r0 % 128)
        return rt_fail(RT_EUNSUPPORTED, "model %s: tensor %s: this rank's rows start at %lld, inside a 128-row FP8 "
                       "block", ld->dir, name, (long long)r0);
    for (int64_t r = 0; r < nr; r += 128) {
        int64_t n = nr - r < 128 ? nr - r : 128;
        fp8_block_dequant((const uint8_t *)t->data + (r0 + r) * cols,
                          (const float *)s->data + ((r0 + r) / 128) * cdiv(cols, 128), n, cols, 128, 128, ld->stage,
                          NULL);
        cvt_f32_to_bf16(ld->stage, ld->stage16, (size_t)(n * cols));
        CUDA_TRY(cudaMemcpy(ld->m->wb + at + (size_t)(r * cols) * 2, ld->stage16, (size_t)(n * cols) * 2,
                            cudaMemcpyHostToDevice));
    }
    return 0;
}

/* An MLP of `full` intermediate rows, this rank's rows [f0, f0 + inter) of it, into group g of
 * w13 (gate rows, then up rows) and w2 (the matching down_proj columns). */
static int load_mlp(loader *ld, const char *pre, int64_t full, int64_t f0, int64_t inter, const dmat *w13,
                    const dmat *w2, int64_t g) {
    char nm[200];
    int64_t D = ld->m->D;
    snprintf(nm, sizeof nm, "%s.gate_proj.weight", pre);
    TRY(load_fp8(ld, nm, full, D, f0, inter, 0, D, w13, g, 0));
    snprintf(nm, sizeof nm, "%s.up_proj.weight", pre);
    TRY(load_fp8(ld, nm, full, D, f0, inter, 0, D, w13, g, inter));
    snprintf(nm, sizeof nm, "%s.down_proj.weight", pre);
    return load_fp8(ld, nm, D, full, 0, D, f0, inter, w2, g, 0);
}

static int load_weights(dsc_model *m, loader *ld) {
    const mc_config *c = &m->c;
    int64_t D = m->D;
    TRY(load_plain(ld, "model.embed_tokens.weight", m->V, D, m->embed, true));
    TRY(load_plain(ld, "model.norm.weight", D, 0, m->norm, false));
    if (!c->tie_word_embeddings) TRY(load_plain_rows(ld, "lm_head.weight", m->V, D, m->v0, m->Vr, m->head, true));
    for (int64_t l = 0; l < m->L; l++) TRY(dsc_load_layer(m, ld, l));
    if (m->mtp) {
        TRY(dsc_load_layer(m, ld, m->L));
        TRY(dsc_mtp_load(m, ld));
    }
    return 0;
}

int dsc_load_layer(dsc_model *m, loader *ld, int64_t l) {
    const mc_config *c = &m->c;
    int64_t D = m->D;
    char nm[200];
    int64_t Hg = c->num_attention_heads, dkv = m->dn + m->dv;   /* this rank's heads: [h0, h0 + H) of Hg */
    {
        const dsc_layer *y = &m->layers[l];
#define NM(suffix) (snprintf(nm, sizeof nm, "model.layers.%lld.%s", (long long)l, suffix), nm)
        TRY(load_plain(ld, NM("input_layernorm.weight"), D, 0, y->attn_norm, false));
        TRY(load_plain(ld, NM("post_attention_layernorm.weight"), D, 0, y->ffn_norm, false));
        static const char *biases[] = {"self_attn.q_a_proj.bias", "self_attn.kv_a_proj_with_mqa.bias",
                                       "self_attn.o_proj.bias", "self_attn.q_proj.bias"};
        for (size_t i = 0; i < sizeof biases / sizeof biases[0]; i++)
            if (st_find(ld->f, NM(biases[i])))
                return rt_fail(RT_EUNSUPPORTED, "model %s: %s: the CUDA engine takes no attention biases; use "
                               "--device cpu", ld->dir, nm);
        if (m->ql > 0) {
            TRY(load_fp8(ld, NM("self_attn.q_a_proj.weight"), m->ql, D, 0, m->ql, 0, D, &y->q_a, 0, 0));
            TRY(load_plain(ld, NM("self_attn.q_a_layernorm.weight"), m->ql, 0, y->q_a_norm, false));
            TRY(load_fp8(ld, NM("self_attn.q_b_proj.weight"), Hg * m->dq, m->ql, m->h0 * m->dq, m->H * m->dq, 0, m->ql,
                         &y->q_b, 0, 0));
        } else {
            TRY(load_fp8(ld, NM("self_attn.q_proj.weight"), Hg * m->dq, D, m->h0 * m->dq, m->H * m->dq, 0, D, &y->q_b, 0,
                         0));
        }
        TRY(load_fp8(ld, NM("self_attn.kv_a_proj_with_mqa.weight"), m->R + m->dr, D, 0, m->R + m->dr, 0, D, &y->kv_a,
                     0, 0));
        TRY(load_plain(ld, NM("self_attn.kv_a_layernorm.weight"), m->R, 0, y->kv_norm, false));
        TRY(load_kvb(ld, NM("self_attn.kv_b_proj.weight"), Hg * dkv, m->R, m->h0 * dkv, m->H * dkv, y->kvb));
        TRY(load_fp8(ld, NM("self_attn.o_proj.weight"), D, Hg * m->dv, 0, D, m->h0 * m->dv, m->H * m->dv, &y->o, 0, 0));
        if (!y->moe) return load_mlp(ld, NM("mlp"), c->intermediate_size, m->f0, y->inter, &y->w13, &y->w2, 0);
        TRY(load_plain(ld, NM("mlp.gate.weight"), m->E, D, y->gate, true));
        if (y->gate_bias != NONE) TRY(load_plain(ld, NM("mlp.gate.e_score_correction_bias"), m->E, 0, y->gate_bias, false));
        char pre[160];
        for (int64_t j = 0; j < m->El; j++) {   /* local expert j is expert j·P + rank */
            snprintf(pre, sizeof pre, "model.layers.%lld.mlp.experts.%lld", (long long)l, (long long)(j * m->P + m->rank));
            TRY(load_mlp(ld, pre, m->I, 0, m->I, &y->e13, &y->e2, j));
        }
        if (y->inter > 0) TRY(load_mlp(ld, NM("mlp.shared_experts"), y->inter, 0, y->inter, &y->w13, &y->w2, 0));
#undef NM
    }
    return 0;
}

static int check_shapes(dsc_model *m, const char *dir) {
    const mc_config *c = &m->c;
    bool fp8 = c->quant.block_rows == 128 && c->quant.block_cols == 128;
    int64_t inter_dense = m->dense_layers ? c->intermediate_size : 128;
    if (!fp8)
        return rt_fail(RT_EUNSUPPORTED, "--device cuda: model %s is not quantized to FP8 with 128×128 blocks (DeepSeek's "
                       "checkpoints are); use --device cpu", dir);
    if (m->R != 512 || m->dr != 64 || m->H % 16 || m->D % 128 || m->ql % 128 || (m->H * m->dv) % 128 ||
        m->I % 128 || inter_dense % 128 || !c->rope_interleave || m->E > 1024 || m->K > 32 || c->n_group > 64)
        return rt_fail(RT_EUNSUPPORTED, "--device cuda: model %s (kv_lora_rank %lld, qk_rope_head_dim %lld, %lld heads, "
                       "hidden %lld, q_lora_rank %lld, intermediate %lld/%lld): the CUDA engine takes kv_lora_rank 512, "
                       "rope 64, heads a multiple of 16, sizes that are multiples of 128 and interleaved rope",
                       dir, (long long)m->R, (long long)m->dr, (long long)m->H, (long long)m->D, (long long)m->ql,
                       (long long)c->intermediate_size, (long long)m->I);
    return 0;
}

/* The layout of teacher/parallel.c over P GPUs (ds_cuda.h): heads, dense intermediate rows and
 * LM-head rows in P equal parts, routed experts round-robin. Sets this rank's sizes (P = 1: the
 * whole model); a split whose FP8 slices would not lie on the 128×128 blocks is refused. */
static int split(dsc_model *m, const char *dir) {
    int64_t P = m->P, r = m->rank, H = m->H, V = m->V, F = m->dense_layers ? m->c.intermediate_size : 0;
    int64_t hl = H / P, dkv = m->dn + m->dv;
    m->Vp = P > 1 ? (cdiv(V, P) + 7) / 8 * 8 : V;
    if (P > 1 && (H % P || hl % 16 || (hl * m->dq) % 128 || (hl * m->dv) % 128 || (hl * dkv) % 128 || F % P ||
                  (F / P) % 128 || (P - 1) * m->Vp >= V))
        return rt_fail(RT_EUNSUPPORTED, "--device cuda: model %s over %lld ranks: %lld heads (q %lld, v %lld, kv_b %lld "
                       "rows each), dense intermediate %lld, vocabulary %lld: the CUDA engine splits heads in equal "
                       "parts of a multiple of 16 heads whose q_b, kv_b and o_proj slices lie on the 128x128 FP8 "
                       "blocks, the dense intermediate in equal parts of a multiple of 128 rows, and needs vocabulary "
                       "rows on every rank", dir, (long long)P, (long long)H, (long long)m->dq, (long long)m->dv,
                       (long long)dkv, (long long)F, (long long)V);
    m->H = hl, m->h0 = r * hl;
    m->Fl = m->c.intermediate_size / P, m->f0 = r * m->Fl;
    m->El = m->E > r ? (m->E - r + P - 1) / P : 0;
    m->v0 = r * m->Vp;
    m->Vr = V - m->v0 < m->Vp ? V - m->v0 : m->Vp;
    return 0;
}

/* Up to the plan: config, device, shapes, layout; nothing allocated on the device. */
static int prepare(dsc_model *m, const char *dir, const dsc_load_opts *o, float *inv, int *dev) {
    TRY(mc_load(dir, &m->c));
    const mc_config *c = &m->c;
    if (c->arch != MC_ARCH_DEEPSEEK_V3) return rt_fail(RT_EUNSUPPORTED, "model %s is not DeepSeek-V3", dir);
    m->D = c->hidden_size, m->L = c->num_hidden_layers, m->V = c->vocab_size, m->H = c->num_attention_heads;
    m->R = c->kv_lora_rank, m->dr = c->qk_rope_head_dim, m->dn = c->qk_nope_head_dim, m->dv = c->v_head_dim;
    m->dq = m->dn + m->dr, m->ql = c->q_lora_rank, m->E = c->n_routed_experts, m->K = c->num_experts_per_tok;
    m->I = c->moe_intermediate_size;
    m->eps = (float)c->rms_norm_eps;
    if (m->E == 0) m->K = 0, m->I = 0;
    for (int64_t l = 0; l < m->L; l++) m->dense_layers += !mc_layer_is_moe(c, l);
    m->mtp = o && o->load_mtp && c->num_nextn_predict_layers > 0;
    if (m->mtp && !mc_layer_is_moe(c, m->L)) m->dense_layers++;
    /* a machine without a usable GPU hears that first, whatever the model */
    TRY(cb_use_device(o ? o->gpu : -1, dev));
    TRY(check_shapes(m, dir));
    TRY(split(m, dir));
    m->Imax = m->I;
    if (m->dense_layers && m->Fl > m->Imax) m->Imax = m->Fl;
    if (m->I * c->n_shared_experts > m->Imax) m->Imax = m->I * c->n_shared_experts;
    int64_t ks[] = {m->D, m->ql, m->H * m->dv, m->mtp ? 2 * m->D : 0};   /* eh_proj's input: [e | h] */
    m->Kmax = 0;
    for (int i = 0; i < 4; i++) m->Kmax = ks[i] > m->Kmax ? ks[i] : m->Kmax;
    TRY(yarn_init(&c->rope, m->dr, inv, &m->cs_scale));
    m->attn_scale = (float)yarn_softmax_scale(&c->rope, m->dq);
    m->router = (moe_router_cfg){.n_experts = m->E, .n_group = c->n_group, .topk_group = c->topk_group,
                                 .top_k = m->K, .norm_topk_prob = c->norm_topk_prob,
                                 .routed_scaling_factor = (float)c->routed_scaling_factor};
    if (m->E > 0) TRY(moe_router_check(&m->router));
    if (!(m->layers = rt_calloc((size_t)(m->L + m->mtp), sizeof *m->layers))) return RT_ENOMEM;
    /* the plan first: nothing is allocated on the device for a model that does not fit */
    return make_plan(m, dir, o);
}

/* The ranks' agreement on the load before a collective (cb_agree). */
static int agree(dsc_model *m, const char *dir, int rc) { return cb_agree(m->host, m->P, dir, rc, &m->p); }

static int load_all(dsc_model *m, const char *dir, const dsc_load_opts *o) {
    float inv[YARN_MAX_DIM / 2];
    int dev = 0;
    int rc = agree(m, dir, prepare(m, dir, o, inv, &dev));
    const mc_config *c = &m->c;
    st_file *f = NULL;
    ck_summary sum;
    if (!rc) rc = st_open(dir, &f);
    loader ld = {.m = m, .f = f, .dir = dir};
    if (!rc) rc = ck_validate(c, f, &sum);
    if (!rc && m->mtp && !sum.mtp_present)
        rc = rt_fail(RT_ENOTFOUND, "model %s: the MTP layer (model.layers.%lld.*) was asked for but is not stored", dir,
                     (long long)m->L);
    rc = cb_open_stream(m->host, m->P, dev, dir, rc, &m->p, &m->stream, &m->nccl);
    cudaError_t e = cudaSuccess;
    if (!rc) rc = fp8_gemm_lt_create(&m->lt);
    const dsc_plan *p = &m->p;
    if (!rc && (e = cudaMalloc((void **)&m->wb, p->weights)) == cudaSuccess &&
        (e = cudaMalloc((void **)&m->kv, p->kv)) == cudaSuccess)
        e = cudaMalloc((void **)&m->arena, m->a.end);
    if (!rc && e != cudaSuccess)
        rc = rt_fail(RT_ENOMEM, "model %s: the planned %.3g GB could not be allocated on the GPU (%s)", dir,
                     gb(p->total), cudaGetErrorString(e));
    if (!rc && !(m->meta = rt_malloc(m->a.inv_freq - m->a.meta))) rc = RT_ENOMEM;
    /* expert parallel: a layer's routing and its three index lists on the host */
    if (!rc && m->P > 1 && m->E > 0 && !(m->hidx = rt_malloc((size_t)(4 * p->max_tokens * m->K) * sizeof(int32_t))))
        rc = RT_ENOMEM;
    if (!rc && (!(ld.stage = rt_malloc(DSC_CHUNK * 4)) || !(ld.stage16 = rt_malloc(DSC_CHUNK * 2)))) rc = RT_ENOMEM;
    if (!rc) rc = load_weights(m, &ld);
    if (!rc) rc = cb_upload_consts(F4(m->a.inv_freq), inv, m->dr / 2, F4(m->a.neginf));
    if (m->nccl) rc = agree(m, dir, rc);
    free(ld.stage);
    free(ld.stage16);
    st_close(f);
    return rc;
}

int dsc_load(const char *dir, const dsc_load_opts *o, dsc_model **out) {
    *out = NULL;
    dsc_model *m = rt_calloc(1, sizeof *m);
    if (!m) return RT_ENOMEM;
    m->host = o ? o->comm : NULL;
    m->P = m->host ? comm_size(m->host) : 1;
    m->rank = m->host ? comm_rank(m->host) : 0;
    m->g.on = !(o && o->no_cuda_graphs);
    int rc = load_all(m, dir, o);
    if (rc) {
        dsc_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void dsc_free(dsc_model *m) {
    if (!m) return;
    if (m->stream) cudaStreamSynchronize(m->stream);
    cb_graphs_drop(&m->g);
    comm_close(m->nccl);
    cudaFree(m->wb), cudaFree(m->kv), cudaFree(m->arena);
    fp8_gemm_lt_free(m->lt);
    if (m->stream) cudaStreamDestroy(m->stream);
    free(m->layers);
    free(m->meta);
    free(m->hidx);
    free(m);
}

const mc_config *dsc_config(const dsc_model *m) { return &m->c; }
const dsc_plan *dsc_get_plan(const dsc_model *m) { return &m->p; }

int dsc_cache_init(dsc_model *m, int64_t block_size, int64_t *n_blocks) {
    *n_blocks = 0;
    TRY(cb_cache_blocks(&m->p, block_size, &m->n_blocks));
    m->bs = block_size;
    m->layer_stride = (size_t)(m->n_blocks * block_size * (m->R + m->dr));
    cb_graphs_plan(&m->g, &m->n_blocks, block_size, m->p.max_seqs, m->c.max_position_embeddings, m->p.table_ints);
    *n_blocks = m->n_blocks;
    return 0;
}

/* ---- forward ----------------------------------------------------------------------------- */



/* out [T, N] bf16 = in [T, K] bf16 · Wᵀ: per-token e4m3 quantization, then the FP8 GEMM (split-K
 * for few rows, when the planned partials hold it). */
static int linear(dsc_model *m, const dmat *w, const uint16_t *in, int64_t T, uint16_t *out) {
    cudaStream_t st = m->stream;
    uint8_t *aq = (uint8_t *)A(m->a.aq);
    float *as = F4(m->a.as);
    TRY(fp8_act_quant_cuda(in, T, w->cols, aq, as, 0, st));
    int splits = T <= DSC_SPLITK_M ? fp8_gemm_splitk_plan(T, w->rows, w->cols) : 1;
    if (fp8_gemm_splitk_workspace_bytes(T, w->rows, splits) > m->gemm_ws_bytes) splits = 1;
    return fp8_gemm_dense_cuda(aq, as, W8(w->w), WF(w->s), T, w->rows, w->cols, splits, A(m->a.gemm_ws),
                               m->gemm_ws_bytes, out, st);
}

/* out [T, D] = down(silu(gate·x) ⊙ up·x) with x already quantized (aq/as: e4m3 rows, scales). */
static int mlp(dsc_model *m, const dmat *w13, const dmat *w2, int64_t inter, const uint8_t *aq, const float *as,
               int64_t T, uint16_t *out) {
    cudaStream_t st = m->stream;
    uint8_t *hq = (uint8_t *)A(m->a.hq);
    float *hs = F4(m->a.hs);
    uint16_t *gu = BF(m->a.gu);
    int sp = T <= DSC_SPLITK_M ? fp8_gemm_splitk_plan(T, 2 * inter, m->D) : 1;
    if (fp8_gemm_splitk_workspace_bytes(T, 2 * inter, sp) > m->gemm_ws_bytes) sp = 1;
    TRY(fp8_gemm_dense_cuda(aq, as, W8(w13->w), WF(w13->s), T, 2 * inter, m->D, sp, A(m->a.gemm_ws), m->gemm_ws_bytes,
                            gu, st));
    TRY(fp8_swiglu_quant_cuda(gu, T, inter, hq, hs, 0, st));
    sp = T <= DSC_SPLITK_M ? fp8_gemm_splitk_plan(T, m->D, inter) : 1;
    if (fp8_gemm_splitk_workspace_bytes(T, m->D, sp) > m->gemm_ws_bytes) sp = 1;
    return fp8_gemm_dense_cuda(hq, hs, W8(w2->w), WF(w2->s), T, m->D, inter, sp, A(m->a.gemm_ws), m->gemm_ws_bytes,
                               out, st);
}

static int attention(dsc_model *m, const dsc_layer *y, int64_t l, int64_t T, int64_t ld, int64_t max_ctx) {
    cudaStream_t st = m->stream;
    int64_t H = m->H, R = m->R, dr = m->dr, dn = m->dn, dv = m->dv, dq = m->dq, dl = R + dr;
    const int32_t *d_pos = I4(m->a.meta) + T, *d_slot = d_pos + T, *d_seq = d_slot + T, *d_ctx = d_seq + T;
    const int32_t *d_tab = d_ctx + T;
    const float *inv = F4(m->a.inv_freq);
    uint16_t *xn = BF(m->a.xn), *q = BF(m->a.q), *kv = BF(m->a.kv), *lat = BF(m->a.lat), *qabs = BF(m->a.qabs);
    uint16_t *kvb = (uint16_t *)(m->wb + y->kvb), *cache = m->kv + (size_t)l * m->layer_stride;
    if (m->ql > 0) {
        TRY(linear(m, &y->q_a, xn, T, BF(m->a.qa)));
        TRY(ds_rmsnorm_cuda(BF(m->a.qa), m->ql, NULL, WF(y->q_a_norm), T, m->ql, DSC_LORA_EPS, BF(m->a.qan), m->ql, st));
        TRY(linear(m, &y->q_b, BF(m->a.qan), T, q));
    } else {
        TRY(linear(m, &y->q_b, xn, T, q));
    }
    TRY(linear(m, &y->kv_a, xn, T, kv));
    /* latent rows: [kv_a_layernorm(c) | rotated k_rope] */
    TRY(ds_rmsnorm_cuda(kv, dl, NULL, WF(y->kv_norm), T, R, DSC_LORA_EPS, lat, dl, st));
    CUDA_TRY(cudaMemcpy2DAsync(lat + R, (size_t)dl * 2, kv + R, (size_t)dl * 2, (size_t)dr * 2, (size_t)T,
                               cudaMemcpyDeviceToDevice, st));
    TRY(ds_rope_cuda(lat + R, T, dl, 1, dr, dr, d_pos, inv, m->cs_scale, st));
    TRY(ds_rope_cuda(q + dn, T, H * dq, H, dq, dr, d_pos, inv, m->cs_scale, st));
    TRY(mla_cache_append_cuda(lat, T, d_slot, cache, NULL, st));
    /* the absorbed query: q_nope·W_UK[h] | q_rope */
    TRY(bf16_gemm_batched_cuda(m->lt, 0, q, H * dq, dq, kvb, R, (dn + dv) * R, qabs, H * dl, dl, T, R, dn, H, st));
    CUDA_TRY(cudaMemcpy2DAsync(qabs + R, (size_t)dl * 2, q + dn, (size_t)dq * 2, (size_t)dr * 2, (size_t)(T * H),
                               cudaMemcpyDeviceToDevice, st));
    mla_dims md = {.n_heads = H, .nope_dim = dn, .rope_dim = dr, .v_dim = dv, .kv_rank = R, .scale = m->attn_scale};
    size_t need = mla_decode_workspace_bytes(T, H, max_ctx);
    if (need > m->mla_ws_bytes)
        return rt_fail(RT_EINTERNAL, "MLA workspace: %zu bytes needed, %zu planned", need, m->mla_ws_bytes);
    TRY(mla_decode_cuda(&md, qabs, T, cache, NULL, m->bs, d_tab, ld, d_seq, d_ctx, max_ctx, A(m->a.mla_ws),
                        m->mla_ws_bytes, BF(m->a.olat), st));
    TRY(bf16_gemm_batched_cuda(m->lt, 1, BF(m->a.olat), H * R, R, kvb + dn * R, R, (dn + dv) * R, BF(m->a.ov), H * dv,
                               dv, T, dv, R, H, st));
    TRY(linear(m, &y->o, BF(m->a.ov), T, BF(m->a.att)));
    /* this rank's heads' share of o_proj, summed over the ranks */
    if (m->P > 1) TRY(comm_allreduce(m->nccl, BF(m->a.att), BF(m->a.att), (size_t)(T * m->D), RT_DT_BF16, COMM_SUM));
    return 0;
}

/* The MoE block over the ranks (teacher/parallel.c's ds_par_moe_fwd on the GPU): the routing
 * ridx/rw [T, K] and the quantized xn (aq/as) are the same on every rank. Token t is owned by rank
 * t / c (c = ceil(T/P)). The owner sends the e4m3 row and scales of each of its slots (t, k) to the
 * rank of expert ridx[t,k] (ordered by destination, then t, then k; the row counts exchanged over
 * the host communicator first and checked against the routing, which tells every rank what it
 * receives and in which order: by source, then t, k); each rank runs its experts (grouped GEMMs
 * over the rows it received, grouped by local expert) and sends the bf16 outputs back the same
 * way; the owner adds the shared experts of its tokens and combines, and the owned slices of tmp
 * are all-gathered (slices of c rows: tmp has room for P·c ≥ T rows). */
static int moe_parallel(dsc_model *m, const dsc_layer *y, int64_t T) {
    cudaStream_t st = m->stream;
    int64_t D = m->D, K = m->K, P = m->P, me = m->rank, TK = T * K, sd = D / 128;
    int64_t c = cdiv(T, P), t0 = me * c < T ? me * c : T, t1 = t0 + c < T ? t0 + c : T;
    int32_t *idx = m->hidx, *send_slot = idx + TK, *lidx = send_slot + TK, *comb = lidx + TK;
    CUDA_TRY(cudaMemcpyAsync(idx, I4(m->a.ridx), (size_t)TK * sizeof(int32_t), cudaMemcpyDeviceToHost, st));
    CUDA_TRY(cudaStreamSynchronize(st));
    size_t *cnt = rt_malloc((size_t)(10 * P) * sizeof *cnt);
    if (!cnt) return RT_ENOMEM;
    size_t *sn = cnt, *rn = sn + P, *one = rn + P, *iota = one + P, *a = iota + P, *ad = a + P, *b = ad + P,
           *bd = b + P;
    int64_t *told = (int64_t *)(bd + P), *tell = told + P;
    /* what this rank sends: its slots, by destination rank; slot (t, k)'s output comes back to
     * the same place of the return buffer */
    int64_t ns = 0, nr = 0;
    for (int64_t q = 0; q < P; q++) {
        sn[q] = 0;
        for (int64_t t = t0; t < t1; t++)
            for (int64_t k = 0; k < K; k++) {
                int32_t e = idx[t * K + k];
                if (e < 0 || e % P != q) continue;
                comb[(t - t0) * K + k] = (int32_t)ns;
                send_slot[ns++] = (int32_t)(t * K + k);
                sn[q]++;
            }
    }
    for (int64_t i = 0; i < (t1 - t0) * K; i++)
        if (idx[t0 * K + i] < 0) comb[i] = -1;
    /* what it receives: each source's slots routed here, in the source's order (local expert ids) */
    for (int64_t s = 0; s < P; s++) {
        int64_t s0 = s * c < T ? s * c : T, s1 = s0 + c < T ? s0 + c : T;
        rn[s] = 0;
        for (int64_t t = s0; t < s1; t++)
            for (int64_t k = 0; k < K; k++) {
                int32_t e = idx[t * K + k];
                if (e >= 0 && e % P == me) lidx[nr++] = (int32_t)(e / P), rn[s]++;
            }
        one[s] = 1, iota[s] = (size_t)s, tell[s] = (int64_t)sn[s];
    }
    int rc = comm_alltoallv(m->host, tell, one, iota, told, one, iota, RT_DT_I64);
    for (int64_t s = 0; s < P && !rc; s++)
        if (told[s] != (int64_t)rn[s])
            rc = rt_fail(RT_EINTERNAL, "expert-parallel MoE: rank %lld sends %lld rows to rank %lld, whose routing "
                         "expects %lld (the ranks' hidden states differ)", (long long)s, (long long)told[s],
                         (long long)me, (long long)rn[s]);
    uint8_t *aq = (uint8_t *)A(m->a.aq), *sq = (uint8_t *)A(m->a.sendq), *rq = (uint8_t *)A(m->a.recvq);
    float *as = F4(m->a.as), *ss = F4(m->a.sends), *rs = F4(m->a.recvs);
    int32_t *d_send = I4(m->a.pidx), *d_lidx = d_send + TK, *d_comb = d_lidx + TK;
    uint16_t *yb = BF(m->a.yb), *ret = BF(m->a.ret), *tmp = BF(m->a.tmp);
#define XFER(rows_a, rows_b, per)                                                                    \
    for (int64_t q = 0; q < P; q++) {                                                                \
        a[q] = rows_a[q] * (size_t)(per), b[q] = rows_b[q] * (size_t)(per);                          \
        ad[q] = q ? ad[q - 1] + a[q - 1] : 0, bd[q] = q ? bd[q - 1] + b[q - 1] : 0;                  \
    }
    cudaError_t e = cudaSuccess;
    if (!rc && (e = cudaMemcpyAsync(d_send, send_slot, (size_t)(3 * TK) * sizeof(int32_t), cudaMemcpyHostToDevice,
                                    st)) != cudaSuccess)
        rc = rt_fail(RT_EINTERNAL, "uploading the expert-parallel lists: %s", cudaGetErrorString(e));
    /* dispatch: e4m3 rows, then their scales */
    if (!rc && ns > 0) rc = moe_gather_rows_cuda(aq, D, d_send, ns, K, sq, st);
    if (!rc && ns > 0) rc = moe_gather_rows_cuda(as, sd * 4, d_send, ns, K, ss, st);
    XFER(sn, rn, D);
    if (!rc) rc = comm_alltoallv(m->nccl, sq, a, ad, rq, b, bd, RT_DT_U8);
    XFER(sn, rn, sd);
    if (!rc) rc = comm_alltoallv(m->nccl, ss, a, ad, rs, b, bd, RT_DT_F32);
    /* this rank's experts over what it received, the outputs back in the order received */
    if (!rc && nr > 0) {
        int32_t *off = I4(m->a.off), *ros = I4(m->a.ros), *sor = I4(m->a.sor);
        uint8_t *mqp = (uint8_t *)A(m->a.mqp), *hq = (uint8_t *)A(m->a.hq);
        float *msp = F4(m->a.msp), *hs = F4(m->a.hs);
        if (!rc) rc = moe_permute_cuda(d_lidx, nr, m->El, off, ros, sor, st);
        if (!rc) rc = moe_gather_rows_cuda(rq, D, sor, nr, 1, mqp, st);
        if (!rc) rc = moe_gather_rows_cuda(rs, sd * 4, sor, nr, 1, msp, st);
        if (!rc) rc = fp8_gemm_grouped_cuda(mqp, msp, W8(y->e13.w), WF(y->e13.s), off, m->El, nr, 2 * m->I, D,
                                            BF(m->a.gu), st);
        if (!rc) rc = fp8_swiglu_quant_cuda(BF(m->a.gu), nr, m->I, hq, hs, 0, st);
        if (!rc) rc = fp8_gemm_grouped_cuda(hq, hs, W8(y->e2.w), WF(y->e2.s), off, m->El, nr, D, m->I, BF(m->a.y), st);
        if (!rc) rc = moe_gather_rows_cuda(BF(m->a.y), D * 2, ros, nr, 1, yb, st);
    }
    XFER(rn, sn, D * 2);
    if (!rc) rc = comm_alltoallv(m->nccl, yb, a, ad, ret, b, bd, RT_DT_U8);
#undef XFER
    free(cnt);
    if (rc) return rc;
    /* the owner: shared experts of its tokens + Σ_k w·y, then every rank's slice to every rank */
    if (t1 > t0) {
        const uint16_t *base = NULL;
        if (y->inter > 0) {
            TRY(mlp(m, &y->w13, &y->w2, y->inter, aq + t0 * D, as + t0 * sd, t1 - t0, BF(m->a.ys)));
            base = BF(m->a.ys);
        }
        TRY(moe_combine_cuda(ret, d_comb, F4(m->a.rw) + t0 * K, t1 - t0, K, D, base, tmp + t0 * D, st));
    }
    return comm_allgather(m->nccl, tmp + me * c * D, tmp, (size_t)(c * D), RT_DT_BF16);
}

/* The MoE block over the ranks for a decode pass, in fixed sizes (a graph can capture it; see
 * moe_parallel for the roles). Token t is owned by rank t / c (c = ceil(T/P)); every rank sends
 * every rank (itself too) a slab of cap = c·min(K, ceil(E/P)) rows — the most its owned tokens can
 * route to one rank, as a token's K experts are distinct —, packed on the device
 * (moe_slab_pack_cuda: the slots in (t, k) order, the rest padding whose local expert is
 * ceil(E/P), past every rank's experts). The e4m3 rows, their scales and the local expert ids go
 * out with all-to-alls of fixed counts (host constants of the bucket: the NCCL calls capture);
 * the receiver permutes the P·cap rows by local expert (the padding sorts last and the grouped
 * GEMMs, sized for P·cap rows and reading the device offsets, skip it), runs its experts, puts the
 * outputs back in slab order and returns the slabs; the owner combines through the slab rows
 * moe_slab_pack gave each slot.
 * Traffic: a rank sends P·cap rows of D + 4·D/128 bytes and gets P·cap bf16 rows back, where the
 * exact exchange moves only its c·K routed slots. For R1 (D 7168, K 8, 256 experts) at P = 8 and
 * batch 256 (c = 32, cap = 256): 2048 rows × (7392 + 14336) B = 44.5 MB per rank per MoE layer
 * padded, against 256 × 21728 B = 5.6 MB exact — P = 8 times the bytes (the worst case, every
 * token's K experts on one rank, must fit). It buys decode steps without a host round trip per
 * layer, which is what lets them run as graphs; prefill (large T) keeps the exact counts. */
static int moe_padded(dsc_model *m, const dsc_layer *y, int64_t T) {
    cudaStream_t st = m->stream;
    int64_t D = m->D, K = m->K, P = m->P, me = m->rank, sd = D / 128;
    int64_t c = cdiv(T, P), t0 = me * c < T ? me * c : T, t1 = t0 + c < T ? t0 + c : T, n = t1 - t0;
    int64_t Emax = cdiv(m->E, P), cap = c * (K < Emax ? K : Emax), S = P * cap;
    uint8_t *aq = (uint8_t *)A(m->a.aq), *sq = (uint8_t *)A(m->a.sendq), *rq = (uint8_t *)A(m->a.recvq);
    float *as = F4(m->a.as), *ss = F4(m->a.sends), *rs = F4(m->a.recvs);
    int32_t *d_slot = I4(m->a.pidx), *d_lexp = d_slot + S, *d_rexp = d_lexp + S, *d_comb = d_rexp + S;
    int32_t *off = I4(m->a.off), *ros = I4(m->a.ros), *sor = I4(m->a.sor);
    uint8_t *mqp = (uint8_t *)A(m->a.mqp), *hq = (uint8_t *)A(m->a.hq);
    float *msp = F4(m->a.msp), *hs = F4(m->a.hs);
    uint16_t *yb = BF(m->a.yb), *ret = BF(m->a.ret), *tmp = BF(m->a.tmp);
    TRY(moe_slab_pack_cuda(I4(m->a.ridx) + t0 * K, n, K, m->E, P, cap, (int32_t)Emax, (int32_t)(t0 * K), d_slot, d_lexp,
                           d_comb, st));
    TRY(moe_gather_rows_cuda(aq, D, d_slot, S, K, sq, st));
    TRY(moe_gather_rows_cuda(as, sd * 4, d_slot, S, K, ss, st));
    size_t cnt[4 * 64];   /* counts | displacements, per row width (P ≤ 64: the host's arrays) */
    if (P > 64) return rt_fail(RT_EUNSUPPORTED, "expert-parallel decode graphs over %lld ranks (at most 64)", (long long)P);
#define SLABS(per)                                                     \
    for (int64_t q = 0; q < P; q++) cnt[q] = (size_t)(cap * (per)), cnt[P + q] = (size_t)(q * cap * (per));
    SLABS(D);
    TRY(comm_alltoallv(m->nccl, sq, cnt, cnt + P, rq, cnt, cnt + P, RT_DT_U8));
    SLABS(sd);
    TRY(comm_alltoallv(m->nccl, ss, cnt, cnt + P, rs, cnt, cnt + P, RT_DT_F32));
    SLABS(1);
    TRY(comm_alltoallv(m->nccl, d_lexp, cnt, cnt + P, d_rexp, cnt, cnt + P, RT_DT_I32));
    /* this rank's experts over the P·cap rows received (padding in group Emax, past them) */
    TRY(moe_permute_cuda(d_rexp, S, Emax + 1, off, ros, sor, st));
    TRY(moe_gather_rows_cuda(rq, D, sor, S, 1, mqp, st));
    TRY(moe_gather_rows_cuda(rs, sd * 4, sor, S, 1, msp, st));
    TRY(fp8_gemm_grouped_cuda(mqp, msp, W8(y->e13.w), WF(y->e13.s), off, m->El, S, 2 * m->I, D, BF(m->a.gu), st));
    TRY(fp8_swiglu_quant_cuda(BF(m->a.gu), S, m->I, hq, hs, 0, st));
    TRY(fp8_gemm_grouped_cuda(hq, hs, W8(y->e2.w), WF(y->e2.s), off, m->El, S, D, m->I, BF(m->a.y), st));
    TRY(moe_gather_rows_cuda(BF(m->a.y), D * 2, ros, S, 1, yb, st));
    SLABS(D * 2);
    TRY(comm_alltoallv(m->nccl, yb, cnt, cnt + P, ret, cnt, cnt + P, RT_DT_U8));
#undef SLABS
    if (n > 0) {   /* the owner: shared experts of its tokens + Σ_k w·y */
        const uint16_t *base = NULL;
        if (y->inter > 0) {
            TRY(mlp(m, &y->w13, &y->w2, y->inter, aq + t0 * D, as + t0 * sd, n, BF(m->a.ys)));
            base = BF(m->a.ys);
        }
        TRY(moe_combine_cuda(ret, d_comb, F4(m->a.rw) + t0 * K, n, K, D, base, tmp + t0 * D, st));
    }
    return comm_allgather(m->nccl, tmp + me * c * D, tmp, (size_t)(c * D), RT_DT_BF16);
}

/* tmp [T, D] = the feed-forward of xn: the dense MLP, or shared experts + Σ routed experts. */
static int feed_forward(dsc_model *m, const dsc_layer *y, int64_t T, bool padded) {
    cudaStream_t st = m->stream;
    int64_t D = m->D, K = m->K, E = m->E, TK = T * K;
    uint16_t *xn = BF(m->a.xn), *tmp = BF(m->a.tmp);
    uint8_t *aq = (uint8_t *)A(m->a.aq);
    TRY(fp8_act_quant_cuda(xn, T, D, aq, F4(m->a.as), 0, st));
    if (!y->moe) {   /* this rank's intermediate rows, summed over the ranks */
        TRY(mlp(m, &y->w13, &y->w2, y->inter, aq, F4(m->a.as), T, tmp));
        if (m->P > 1) TRY(comm_allreduce(m->nccl, tmp, tmp, (size_t)(T * D), RT_DT_BF16, COMM_SUM));
        return 0;
    }
    int32_t *ridx = I4(m->a.ridx), *off = I4(m->a.off), *ros = I4(m->a.ros), *sor = I4(m->a.sor);
    float *rw = F4(m->a.rw);
    TRY(bf16_gemm_f32_cuda(m->lt, xn, W16(y->gate), T, E, D, F4(m->a.logit), st));
    TRY(moe_route_cuda(&m->router, F4(m->a.logit), y->gate_bias != NONE ? WF(y->gate_bias) : NULL, T, K, ridx, rw, st));
    if (m->P > 1) return padded ? moe_padded(m, y, T) : moe_parallel(m, y, T);
    TRY(moe_permute_cuda(ridx, TK, E, off, ros, sor, st));
    uint8_t *mqp = (uint8_t *)A(m->a.mqp), *hq = (uint8_t *)A(m->a.hq);
    float *msp = F4(m->a.msp), *hs = F4(m->a.hs);
    TRY(moe_gather_rows_cuda(aq, D, sor, TK, K, mqp, st));
    TRY(moe_gather_rows_cuda(F4(m->a.as), (D / 128) * 4, sor, TK, K, msp, st));
    TRY(fp8_gemm_grouped_cuda(mqp, msp, W8(y->e13.w), WF(y->e13.s), off, E, TK, 2 * m->I, D, BF(m->a.gu), st));
    TRY(fp8_swiglu_quant_cuda(BF(m->a.gu), TK, m->I, hq, hs, 0, st));
    TRY(fp8_gemm_grouped_cuda(hq, hs, W8(y->e2.w), WF(y->e2.s), off, E, TK, D, m->I, BF(m->a.y), st));
    const uint16_t *base = NULL;
    if (y->inter > 0) {   /* the shared experts, on the quantized xn still in aq */
        TRY(mlp(m, &y->w13, &y->w2, y->inter, aq, F4(m->a.as), T, BF(m->a.ys)));
        base = BF(m->a.ys);
    }
    return moe_combine_cuda(BF(m->a.y), ros, rw, T, K, D, base, tmp, st);
}

/* The device work of a pass over T tokens (its ints already on the device, in the layout pass()
 * writes: tables ld ints a row; max_ctx the longest context): every layer, then the logits of R
 * rows — all T (R == T), or the last token of each of the np pieces that end their sequence — to
 * device rows [dev_row, …). padded (a decode pass): over P > 1 ranks the MoE dispatch is
 * moe_padded's, which reads nothing back and waits for nothing on the host, so a graph captures
 * exactly this; else moe_parallel's exact counts (one host sync per MoE layer). */
static int body(dsc_model *m, int64_t T, int64_t ld, int64_t max_ctx, int64_t R, const piece *pc, int64_t np,
                int64_t dev_row, bool padded) {
    cudaStream_t st = m->stream;
    int64_t D = m->D;
    uint16_t *x = BF(m->a.x), *xn = BF(m->a.xn);
    TRY(embed_fwd_cuda(x, W16(m->embed), I4(m->a.meta), T, D, st));
    const uint16_t *res = NULL;   /* the previous block's output, added to x by the next norm */
    for (int64_t l = 0; l < m->L; l++) {
        const dsc_layer *y = &m->layers[l];
        TRY(ds_rmsnorm_cuda(x, D, res, WF(y->attn_norm), T, D, m->eps, xn, D, st));
        TRY(attention(m, y, l, T, ld, max_ctx));
        TRY(ds_rmsnorm_cuda(x, D, BF(m->a.att), WF(y->ffn_norm), T, D, m->eps, xn, D, st));   /* x += attention */
        TRY(feed_forward(m, y, T, padded));
        res = BF(m->a.tmp);
    }
    TRY(ds_rmsnorm_cuda(x, D, res, WF(m->norm), T, D, m->eps, xn, D, st));
    if (R == 0) return 0;
    const uint16_t *h = xn;
    if (R != T) {   /* the last new token of each finished sequence, gathered */
        TRY(cb_gather_last(BF(m->a.hf), xn, D, pc, np, st));
        h = BF(m->a.hf);
    }
    float *lg = F4(m->a.logits) + dev_row * m->V;
    if (m->P == 1) return bf16_gemm_f32_cuda(m->lt, h, W16(m->head), R, m->V, D, lg, st);
    /* this rank's vocabulary rows [R, Vr], gathered as blocks of R·Vp, laid out as rows of V */
    float *lp = F4(m->a.lpart), *lga = F4(m->a.lgather);
    TRY(bf16_gemm_f32_cuda(m->lt, h, W16(m->head), R, m->Vr, D, lp, st));
    TRY(comm_allgather(m->nccl, lp, lga, (size_t)(R * m->Vp), RT_DT_F32));
    for (int64_t q = 0; q < m->P; q++) {
        int64_t v0 = q * m->Vp, nv = m->V - v0 < m->Vp ? m->V - v0 : m->Vp;
        CUDA_TRY(cudaMemcpy2DAsync(lg + v0, (size_t)m->V * 4, lga + q * R * m->Vp, (size_t)nv * 4, (size_t)nv * 4,
                                   (size_t)R, cudaMemcpyDeviceToDevice, st));
    }
    return 0;
}

/* body() of a decode pass of B rows and context class C (cb_body_fn): what its graph captures. */
static int decode_body(void *ctx, int64_t B, int64_t C) {
    dsc_model *m = ctx;
    return body(m, B, cdiv(C, m->bs), C, B, NULL, 0, 0, true);
}

/* One device pass over pieces[0, np) (T tokens); logits of the pieces that end their sequence to
 * device rows [dev_row, …) and, logits non-NULL, to the host. A decode pass (one new token for each
 * of np sequences, none starting empty, its rows from device row 0) with graphs on runs as the
 * graph of the smallest bucket B ≥ np and the smallest context class C ≥ its longest context: its
 * ints padded to B rows (a padding row appends its latent row to position 0 of the scratch block
 * and attends to that alone), the tables ceil(C / bs) ints a row, max_ctx C — the shapes the
 * graph was captured with; its logits are B rows, of which the first np are the sequences'. */
static int pass(dsc_model *m, kv_seq *const *seqs, const piece *pc, int64_t np, int64_t T, const int32_t *tokens_of,
                const int64_t *tok_at, int64_t dev_row, float *logits) {
    int64_t bs = m->bs, ld = 1, max_ctx = 1, R = 0;
    for (int64_t i = 0; i < np; i++) {
        const kv_seq *q = seqs[pc[i].s];
        if (q->n_blocks > ld) ld = q->n_blocks;
        R += pc[i].last;
    }
    int k = 0, c = 0;   /* a sequence's later piece (MTP verify) sees more context */
    bool decode = dev_row == 0 && cb_graphs_decode(&m->g, seqs, pc, np, &max_ctx, &k, &c);
    if (decode) ld = cdiv(m->g.C[c], bs);
    int64_t Tp = decode ? m->g.B[k] : T;
    /* the pass's ints: tokens, positions, cache slots, sequence of each token, contexts | tables */
    int32_t *tok = m->meta, *pos = tok + Tp, *slot = pos + Tp, *sq = slot + Tp, *ctx = sq + Tp, *tab = ctx + Tp;
    for (int64_t i = 0, t = 0; i < np; i++) {
        const kv_seq *s = seqs[pc[i].s];
        for (int64_t j = 0; j < pc[i].n; j++, t++) {
            tok[t] = tokens_of[tok_at[pc[i].s] + pc[i].from + j];
            pos[t] = (int32_t)(s->len + pc[i].from + j);
            slot[t] = s->blocks[pos[t] / bs] * (int32_t)bs + (int32_t)(pos[t] % bs);
            sq[t] = (int32_t)i;
            ctx[t] = pos[t] + 1;
            if (ctx[t] > max_ctx) max_ctx = ctx[t];
        }
        memcpy(tab + i * ld, s->blocks, (size_t)s->n_blocks * sizeof(int32_t));
    }
    for (int64_t t = np; decode && t < Tp; t++) {   /* a graph's padding rows: position 0 of the scratch block */
        tok[t] = 0, pos[t] = 0, slot[t] = m->g.scratch * (int32_t)bs, sq[t] = (int32_t)t, ctx[t] = 1;
        tab[t * ld] = m->g.scratch;
    }
    cudaStream_t st = m->stream;
    size_t meta_bytes = (size_t)(5 * Tp + (decode ? Tp : np) * ld) * sizeof(int32_t);
    CUDA_TRY(cudaMemcpyAsync(I4(m->a.meta), m->meta, meta_bytes, cudaMemcpyHostToDevice, st));
    bool fresh = false;   /* a pair's first decode pass: eagerly, as the graph will run, then captured */
    if (decode) TRY(cb_graphs_run(&m->g, st, k, c, decode_body, m, &fresh));
    else TRY(body(m, T, ld, max_ctx, R, pc, np, dev_row, false));
    if (R > 0 && logits)
        CUDA_TRY(cudaMemcpyAsync(logits, F4(m->a.logits) + dev_row * m->V, (size_t)(R * m->V) * sizeof(float),
                                 cudaMemcpyDeviceToHost, st));
    CUDA_TRY(cudaStreamSynchronize(st));
    return fresh ? cb_graphs_capture(&m->g, st, k, c, decode_body, m) : 0;
}

/* kv_seq_reserve, and on the device the copy (every layer, the MTP layer's rows too) of each block
 * it made private. */
static int reserve(dsc_model *m, kv_pool *cache, kv_seq *s, int64_t new_len) {
    return cb_reserve(cache, s, new_len, m->bs, m->kv, (size_t)(m->bs * (m->R + m->dr)), m->L + m->mtp,
                      m->layer_stride, m->stream);
}

/* cb_passes' pass: dsc_forward's arguments in ctx */
typedef struct {
    dsc_model *m;
    kv_seq *const *seqs;
    const int32_t *tokens;
    float *logits;
    int64_t n_seqs;
} fwd_call;

static int pass_of(void *ctx, const piece *pc, int64_t np, int64_t T, const int64_t *tok_at, int64_t first) {
    fwd_call *f = ctx;
    dsc_model *m = f->m;
    /* the rows stay on the device for dsc_sample when the batch's rows fit the buffer */
    int64_t dev_row = f->n_seqs <= m->p.max_seqs ? first : 0;
    return pass(m, f->seqs, pc, np, T, f->tokens, tok_at, dev_row, f->logits ? f->logits + first * m->V : NULL);
}

int dsc_forward(dsc_model *m, kv_pool *cache, kv_seq *const *seqs, const int32_t *n_new, int64_t n_seqs,
                const int32_t *tokens, float *logits) {
    int64_t T;
    TRY(kv_check_device_batch(cache, m->bs, m->n_blocks, "dsc_cache_init", seqs, n_new, n_seqs, tokens, m->V,
                              m->c.max_position_embeddings, &T));
    for (int64_t s = 0; s < n_seqs; s++) TRY(reserve(m, cache, seqs[s], seqs[s]->len + n_new[s]));
    int rc = cb_passes(seqs, n_new, n_seqs, &m->p, pass_of, &(fwd_call){m, seqs, tokens, logits, n_seqs});
    m->dev_rows = !rc && n_seqs <= m->p.max_seqs ? n_seqs : 0;
    if (rc) return rc;
    for (int64_t i = 0; i < n_seqs; i++) seqs[i]->len += n_new[i];
    return 0;
}

/* the rows the last dsc_forward left on the device, and device sampling's buffers (the top-k
 * logprobs go to the sampler's workspace, free again by then: same stream) */
static cb_rows rows_of(dsc_model *m) {
    return (cb_rows){.rows = F4(m->a.logits), .n_rows = m->dev_rows, .V = m->V, .max_seqs = m->p.max_seqs,
                     .packed = F4(m->a.sl), .neginf = F4(m->a.neginf), .params = A(m->a.sparams),
                     .rng = A(m->a.srng), .ws = A(m->a.smp_ws), .ws_bytes = m->smp_ws_bytes, .tok = I4(m->a.stok),
                     .lp = F4(m->a.slp), .top = A(m->a.smp_ws)};
}

int dsc_logits_row(dsc_model *m, int64_t row, float *out) {
    cb_rows d = rows_of(m);
    return cb_logits_row(&d, row, out, m->stream);
}

int dsc_sample(dsc_model *m, int64_t n, const int32_t *row_of, int64_t n_valid, const int32_t *holes, int64_t n_holes,
               const smp_params *params, const uint64_t *rng, int32_t *tokens, float *logprob, int top_k,
               int32_t *top_ids, float *top_lp) {
    cb_rows d = rows_of(m);
    return cb_sample(&d, m->stream, n, row_of, n_valid, holes, n_holes, params, rng, tokens, logprob, top_k, top_ids,
                     top_lp);
}

/* for teacher/ds_cuda_mtp.c (ds_cuda_int.h) */
size_t dsc_put(size_t *at, size_t bytes) { return put(at, bytes); }
dmat dsc_put_fp8(size_t *at, int64_t rows, int64_t cols) { return put_fp8(at, rows, cols); }
int dsc_load_fp8(loader *ld, const char *name, int64_t rows, int64_t cols, const dmat *d) {
    return load_fp8(ld, name, rows, cols, 0, rows, 0, cols, d, 0, 0);
}
int dsc_load_plain(loader *ld, const char *name, int64_t rows, int64_t cols, size_t at, bool to16) {
    return load_plain(ld, name, rows, cols, at, to16);
}
int dsc_load_plain_rows(loader *ld, const char *name, int64_t rows, int64_t cols, int64_t r0, int64_t nr, size_t at,
                        bool to16) {
    return load_plain_rows(ld, name, rows, cols, r0, nr, at, to16);
}
int dsc_linear(dsc_model *m, const dmat *w, const uint16_t *in, int64_t T, uint16_t *out) { return linear(m, w, in, T, out); }
int dsc_attention(dsc_model *m, const dsc_layer *y, int64_t l, int64_t T, int64_t ld, int64_t max_ctx) {
    return attention(m, y, l, T, ld, max_ctx);
}
int dsc_feed_forward(dsc_model *m, const dsc_layer *y, int64_t T) { return feed_forward(m, y, T, false); }
int dsc_pass(dsc_model *m, kv_seq *const *seqs, const piece *pc, int64_t np, int64_t T, const int32_t *tokens_of,
             const int64_t *tok_at, int64_t dev_row, float *logits) {
    return pass(m, seqs, pc, np, T, tokens_of, tok_at, dev_row, logits);
}
int dsc_reserve(dsc_model *m, kv_pool *cache, kv_seq *s, int64_t new_len) { return reserve(m, cache, s, new_len); }

#endif

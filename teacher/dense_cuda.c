/* teacher/dense_cuda.c — dense Llama/Qwen load, memory plan and paged forward on CUDA (see
 * teacher/dense_cuda.h). tests/unit/test_dense_cuda_fake.c compiles this file against CPU
 * stand-ins of the runtime and kernels (tests/unit/fake_cuda.h) and runs it beside the CPU
 * engine. */
#include "teacher/dense_cuda.h"

#include "core/cuda_try.h"
#include "core/status.h"

#ifndef RT_HAVE_CUDA

int dc_load(const char *dir, const dc_load_opts *o, dc_model **out) {
    (void)dir, (void)o;
    *out = NULL;
    return rt_fail(RT_EUNSUPPORTED, "--device cuda: this retort was built without CUDA (rebuild with make CUDA=1)");
}
void dc_free(dc_model *m) { (void)m; }
const mc_config *dc_config(const dc_model *m) { (void)m; return NULL; }
const dc_plan *dc_get_plan(const dc_model *m) { (void)m; return NULL; }
int64_t dc_kv_positions(const dc_model *m) { (void)m; return 0; }
int dc_cache_init(dc_model *m, int64_t block_size, int64_t *n_blocks) {
    (void)m, (void)block_size;
    *n_blocks = 0;
    return rt_fail(RT_EUNSUPPORTED, "built without CUDA");
}
int dc_forward(dc_model *m, kv_pool *cache, kv_seq *const *seqs, const int32_t *n_new, int64_t n_seqs,
               const int32_t *tokens, float *logits) {
    (void)m, (void)cache, (void)seqs, (void)n_new, (void)n_seqs, (void)tokens, (void)logits;
    return rt_fail(RT_EUNSUPPORTED, "built without CUDA");
}
int dc_logits_row(dc_model *m, int64_t row, float *out) {
    (void)m, (void)row, (void)out;
    return rt_fail(RT_EUNSUPPORTED, "built without CUDA");
}
int dc_sample(dc_model *m, int64_t n, const int32_t *row_of, int64_t n_valid, const int32_t *holes, int64_t n_holes,
              const smp_params *params, const uint64_t *rng, int32_t *tokens, float *logprob, int top_k,
              int32_t *top_ids, float *top_lp) {
    (void)m, (void)n, (void)row_of, (void)n_valid, (void)holes, (void)n_holes, (void)params, (void)rng;
    (void)tokens, (void)logprob, (void)top_k, (void)top_ids, (void)top_lp;
    return rt_fail(RT_EUNSUPPORTED, "built without CUDA");
}

#else

#ifndef RT_FAKE_CUDA   /* tests/unit/test_dense_cuda_fake.c stands the runtime and kernels in on the CPU */
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
#include "kernels/act.h"
#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/embed.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/rope.h"
#include "kernels/sample.h"
#include "teacher/cuda_batch.h"

#define DC_ALIGN 64                       /* elements: every region starts 128 bytes apart */
#define DC_GEMM_WS ((size_t)32 << 20)     /* mm_cuda_ctx_create's default workspace */
#define DC_CHUNK ((size_t)1 << 20)        /* elements converted per staging step */
#define DC_PLAN_BS 16                     /* block size the block-table room is planned for */
#define DC_PREFILL_MIN 16                 /* a piece this long: the pass takes the tensor-core prefill */

/* element offsets into the weight arena; −1: absent */
typedef struct {
    int64_t attn_norm, mlp_norm, wqkv, bqkv, wo, bo, wgu, bgu, wd, bd;
    int64_t qn, kn;   /* qwen3: [hd] RMSNorm weights of each q / k head, before RoPE */
} dc_layer;

/* byte offsets into the activation arena */
typedef struct {
    size_t x, xn, qkv, att, tmp, gu, act, lse, hf, logits, lgather, pws;
    size_t rows, sl, sparams, srng, stok, slp, stop, neginf, smp_ws;   /* device sampling (dc_sample) */
    size_t meta, inv_freq, end;
} dc_act;

struct dc_model {
    mc_config c;
    dc_plan p;
    /* this rank's part: F, Hq, Hkv (and qd, kd, W) are its slices; D, L, V, hd the model's */
    int64_t D, F, L, V, Hq, Hkv, hd, W, qd, kd;
    int P, rank;                           /* tensor-parallel ranks (1: one GPU) */
    int64_t q0, kv0, f0;                   /* this rank's first query head, kv head, intermediate row */
    int64_t Vp, v0, Vr;                    /* LM-head rows per rank (padded), this rank's first and count */
    rt_comm *host, *nccl;                  /* borrowed; NCCL's over the same ranks (P > 1) */
    float *lhost;                          /* host: the gathered logits [P, S, Vp] (P > 1) */
    cb_graphs g;                           /* CUDA graphs of decode passes (teacher/cuda_batch.h) */
    int64_t embed, norm, lm_head;          /* element offsets (embed, lm_head: this rank's rows [v0, v0 + Vr)) */
    dc_layer *layers;
    dc_act a;
    size_t pws_bytes;                      /* split-KV workspace */
    size_t smp_ws_bytes;                   /* smp_sample_cuda's workspace for max_seqs rows */
    int64_t dev_rows;                      /* logits rows the last dc_forward left on the device */
    int64_t bs, n_blocks, block_stride;    /* dc_cache_init; block_stride in elements */
    cudaStream_t stream;
    mm_cuda_ctx *mm;
    uint16_t *wb, *kv;                     /* device: weights, KV arena */
    char *arena;                           /* device: activations */
    int32_t *meta;                         /* host: a pass's ints, uploaded at once */
    float eps, scale;
};

static size_t up64(size_t n) { return (n + DC_ALIGN - 1) / DC_ALIGN * DC_ALIGN; }
static size_t up128b(size_t n) { return (n + 127) / 128 * 128; }

/* ---- the layout and the plan (no device memory yet) -------------------------------------- */

/* Where this rank's part of a checkpoint tensor of rows × cols goes: rows [r0, r0 + nr) and columns
 * [c0, c0 + nc) of it, to rows [drow, …) of the region at *off (nc columns). false: a name the
 * layout does not know; nr 0: nothing of it lives on this rank. */
typedef struct {
    int64_t *off;
    int64_t drow, r0, nr, c0, nc;
} dc_slice;

static bool slot(dc_model *m, const char *name, int64_t rows, int64_t cols, dc_slice *o) {
    *o = (dc_slice){.off = NULL, .drow = 0, .r0 = 0, .nr = rows, .c0 = 0, .nc = cols};
    if (!strcmp(name, "model.embed_tokens.weight")) return o->off = &m->embed, o->r0 = m->v0, o->nr = m->Vr, true;
    if (!strcmp(name, "model.norm.weight")) return o->off = &m->norm, true;
    if (!strcmp(name, "lm_head.weight")) return o->off = &m->lm_head, o->r0 = m->v0, o->nr = m->Vr, true;
    long long i;
    int used = 0;
    if (sscanf(name, "model.layers.%lld.%n", &i, &used) != 1 || !used || i < 0 || i >= m->L) return false;
    dc_layer *l = &m->layers[i];
    const char *s = name + used;
    int64_t q = m->qd, k = m->kd, hd = m->hd;
    bool w = strstr(s, ".weight") != NULL;
    /* fused groups: q/k/v and gate/up rows of this rank's heads and intermediate rows */
    if (!strcmp(s, "input_layernorm.weight")) return o->off = &l->attn_norm, true;
    if (!strcmp(s, "post_attention_layernorm.weight")) return o->off = &l->mlp_norm, true;
    if (!strcmp(s, "self_attn.q_norm.weight")) return o->off = &l->qn, true;   /* per head: whole on every rank */
    if (!strcmp(s, "self_attn.k_norm.weight")) return o->off = &l->kn, true;
    if (!strncmp(s, "self_attn.q_proj.", 17))
        return o->off = w ? &l->wqkv : &l->bqkv, o->r0 = m->q0 * hd, o->nr = q, true;
    if (!strncmp(s, "self_attn.k_proj.", 17))
        return o->off = w ? &l->wqkv : &l->bqkv, o->drow = q, o->r0 = m->kv0 * hd, o->nr = k, true;
    if (!strncmp(s, "self_attn.v_proj.", 17))
        return o->off = w ? &l->wqkv : &l->bqkv, o->drow = q + k, o->r0 = m->kv0 * hd, o->nr = k, true;
    if (!strcmp(s, "self_attn.o_proj.weight")) return o->off = &l->wo, o->c0 = m->q0 * hd, o->nc = q, true;
    /* the biases after a row split are added once, on rank 0, before the all-reduce */
    if (!strcmp(s, "self_attn.o_proj.bias")) return o->off = &l->bo, o->nr = m->rank ? 0 : rows, true;
    if (!strncmp(s, "mlp.gate_proj.", 14)) return o->off = w ? &l->wgu : &l->bgu, o->r0 = m->f0, o->nr = m->F, true;
    if (!strncmp(s, "mlp.up_proj.", 12))
        return o->off = w ? &l->wgu : &l->bgu, o->drow = m->F, o->r0 = m->f0, o->nr = m->F, true;
    if (!strcmp(s, "mlp.down_proj.weight")) return o->off = &l->wd, o->c0 = m->f0, o->nc = m->F, true;
    if (!strcmp(s, "mlp.down_proj.bias")) return o->off = &l->bd, o->nr = m->rank ? 0 : rows, true;
    return false;
}

static bool has(const mc_tensor_spec *spec, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (spec[i].group == MC_GROUP_REQUIRED && !strcmp(spec[i].name, name)) return true;
    return false;
}

/* Element offsets of every weight region; returns the arena's element count. */
static size_t layout_weights(dc_model *m, const mc_tensor_spec *spec, size_t n) {
    size_t at = 0;
#define PUT(field, elems) (field = (int64_t)at, at += up64((size_t)(elems)))
    PUT(m->embed, m->Vr * m->D);   /* vocabulary-parallel: this rank's rows (all of them on one GPU) */
    PUT(m->norm, m->D);
    char name[160];
    if (has(spec, n, "lm_head.weight")) PUT(m->lm_head, m->Vr * m->D);
    else m->lm_head = m->embed;    /* tied: the same rows of the embedding */
    for (int64_t l = 0; l < m->L; l++) {
        dc_layer *y = &m->layers[l];
        *y = (dc_layer){-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
        if (m->c.qk_norm) {
            PUT(y->qn, m->hd);
            PUT(y->kn, m->hd);
        }
        PUT(y->attn_norm, m->D);
        PUT(y->mlp_norm, m->D);
        PUT(y->wqkv, m->W * m->D);
        PUT(y->wo, m->D * m->qd);
        PUT(y->wgu, 2 * m->F * m->D);
        PUT(y->wd, m->D * m->F);
        bool bq = false, bg = false;
        static const char *qkvb[] = {"q_proj", "k_proj", "v_proj"}, *gub[] = {"gate_proj", "up_proj"};
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "model.layers.%lld.self_attn.%s.bias", (long long)l, qkvb[i]);
            bq = bq || has(spec, n, name);
        }
        for (int i = 0; i < 2; i++) {
            snprintf(name, sizeof name, "model.layers.%lld.mlp.%s.bias", (long long)l, gub[i]);
            bg = bg || has(spec, n, name);
        }
        if (bq) PUT(y->bqkv, m->W);
        if (bg) PUT(y->bgu, 2 * m->F);
        snprintf(name, sizeof name, "model.layers.%lld.self_attn.o_proj.bias", (long long)l);
        if (has(spec, n, name) && m->rank == 0) PUT(y->bo, m->D);
        snprintf(name, sizeof name, "model.layers.%lld.mlp.down_proj.bias", (long long)l);
        if (has(spec, n, name) && m->rank == 0) PUT(y->bd, m->D);
    }
#undef PUT
    return at;
}

/* Byte offsets of the activation arena for T tokens and S sequences per pass. */
static size_t layout_activations(dc_model *m, int64_t T, int64_t S, int64_t table_ints) {
    size_t at = 0;
#define PUT(field, bytes) (m->a.field = at, at += up128b((size_t)(bytes)))
    PUT(x, T * m->D * 2);
    PUT(xn, T * m->D * 2);
    PUT(qkv, T * m->W * 2);
    PUT(att, T * m->qd * 2);
    PUT(tmp, T * m->D * 2);
    PUT(gu, T * 2 * m->F * 2);
    PUT(act, T * m->F * 2);
    PUT(lse, m->Hq * T * 4);
    PUT(hf, S * m->D * 2);
    PUT(logits, S * m->Vp * 4);
    PUT(lgather, m->P > 1 ? m->P * S * m->Vp * 4 : 0);
    PUT(pws, m->pws_bytes);
    PUT(rows, S * m->V * 4);
    PUT(sl, S * m->V * 4);
    PUT(sparams, S * (int64_t)sizeof(smp_params));
    PUT(srng, S * 3 * 8);
    PUT(stok, S * 4);
    PUT(slp, S * 4);
    PUT(stop, S * SMP_TOP_MAX * 8);
    PUT(neginf, 4);
    PUT(smp_ws, m->smp_ws_bytes);
    PUT(meta, (6 * T + table_ints) * 4);
    PUT(inv_freq, m->hd / 2 * 4);
#undef PUT
    m->a.end = at;
    return at;
}

static double gb(size_t b) { return (double)b / 1e9; }

static int make_plan(dc_model *m, const char *dir, const dc_load_opts *o, const mc_tensor_spec *spec, size_t n) {
    dc_plan *p = &m->p;
    cb_plan_limits(p, o ? o->max_tokens : 0, o ? o->max_seqs : 0);
    int64_t maxpos = m->c.max_position_embeddings;
    p->table_ints = p->max_seqs * ((maxpos + DC_PLAN_BS - 1) / DC_PLAN_BS + 1);
    /* split-KV scratch: the most any pass can ask (more queries or a longer context never ask less) */
    m->pws_bytes = 0;
    for (int64_t q = 1; q <= p->max_tokens && q <= 256; q++) {
        size_t b = attn_paged_cuda_ws_bytes(q, m->Hq, m->Hkv, m->hd, maxpos);
        if (b > m->pws_bytes) m->pws_bytes = b;
    }
    m->smp_ws_bytes = smp_cuda_workspace_bytes(p->max_seqs, m->V);
    p->weights = layout_weights(m, spec, n) * 2;
    p->activations = layout_activations(m, p->max_tokens, p->max_seqs, p->table_ints) - up128b(m->pws_bytes) -
                     up128b(m->smp_ws_bytes);
    p->workspace = DC_GEMM_WS + up128b(m->pws_bytes) + up128b(m->smp_ws_bytes);
    p->kv_position_bytes = (size_t)(m->L * 2 * m->kd) * 2;
    TRY(cb_plan_budget(p, o ? o->memory_fraction : 0, dir, m->P));
    size_t fixed = p->weights + p->activations + p->workspace;
    int64_t need_kv = maxpos < DC_MIN_KV ? maxpos : DC_MIN_KV;
    if (fixed + (size_t)need_kv * p->kv_position_bytes > p->budget)
        return rt_fail(RT_ENOMEM, "model %s needs %.3g GB%s (weights %.3g, activations %.3g, workspace %.3g) and %.3g "
                       "GB for a cache of %lld positions; the GPU has %.3g GB", dir, gb(fixed),
                       m->P > 1 ? " per rank" : "", gb(p->weights),
                       gb(p->activations), gb(p->workspace), gb((size_t)need_kv * p->kv_position_bytes),
                       (long long)need_kv, gb(p->budget));
    p->kv_positions = (int64_t)((p->budget - fixed) / p->kv_position_bytes);
    p->kv = (size_t)p->kv_positions * p->kv_position_bytes;
    p->total = fixed + p->kv;
    return 0;
}

/* ---- loading ----------------------------------------------------------------------------- */

/* This rank's slice of one tensor (cols columns) into the arena at element `at`, packed row by
 * row: bf16 as stored (a whole-row slice in one copy), anything else converted, through the host
 * stage in chunks of DC_CHUNK elements. Only the slice's bytes of the mapping are read. */
static int upload(dc_model *m, const st_tensor *t, int64_t cols, const dc_slice *s, size_t at, uint16_t *stage,
                  float *f32) {
    uint16_t *dst = m->wb + at;
    size_t es = rt_dtype_size(t->dtype);
    if (t->dtype == RT_DT_BF16 && s->nc == cols) {
        CUDA_TRY(cudaMemcpy(dst, (const uint16_t *)t->data + s->r0 * cols, (size_t)(s->nr * cols) * 2,
                            cudaMemcpyHostToDevice));
        return 0;
    }
    size_t k = 0, done = 0;   /* elements staged, elements sent */
    for (int64_t r = 0; r < s->nr; r++)
        for (int64_t c = 0; c < s->nc;) {
            size_t take = (size_t)(s->nc - c) < DC_CHUNK - k ? (size_t)(s->nc - c) : DC_CHUNK - k;
            const char *src = (const char *)t->data + ((size_t)((s->r0 + r) * cols + s->c0 + c)) * es;
            if (t->dtype == RT_DT_BF16) memcpy(stage + k, src, take * 2);
            else {
                TRY(cvt_to_f32(t->dtype, src, f32, take));
                cvt_f32_to_bf16(f32, stage + k, take);
            }
            k += take, c += (int64_t)take;
            if (k == DC_CHUNK || (r == s->nr - 1 && c == s->nc)) {
                CUDA_TRY(cudaMemcpy(dst + done, stage, k * 2, cudaMemcpyHostToDevice));
                done += k, k = 0;
            }
        }
    return 0;
}

static int load_weights(dc_model *m, st_file *f, const mc_tensor_spec *spec, size_t n) {
    uint16_t *stage = rt_malloc(DC_CHUNK * 2);
    float *f32 = rt_malloc(DC_CHUNK * 4);
    int rc = stage && f32 ? 0 : RT_ENOMEM;
    /* shard by shard, in the order the files hold them */
    for (int sh = 0; sh < st_nshards(f) && !rc; sh++)
        for (size_t i = 0; i < n && !rc; i++) {
            if (spec[i].group != MC_GROUP_REQUIRED) continue;
            const st_tensor *t = st_find(f, spec[i].name);
            if (!t) {
                if (sh == 0) rc = rt_fail(RT_EFORMAT, "tensor %s missing", spec[i].name);
                continue;
            }
            if (t->shard != sh) continue;
            int64_t rows = spec[i].shape[0], cols = spec[i].ndim == 2 ? spec[i].shape[1] : 1;
            dc_slice sl;
            bool known = slot(m, spec[i].name, rows, cols, &sl);
            RT_ASSERT(known && sl.off && !(sl.nr && *sl.off < 0), "unexpected tensor %s", spec[i].name);
            if (t->nelem != (size_t)(rows * cols))
                rc = rt_fail(RT_EFORMAT, "tensor %s: %zu elements, %lld expected", spec[i].name, t->nelem,
                             (long long)(rows * cols));
            else if (sl.nr)
                rc = upload(m, t, cols, &sl, (size_t)(*sl.off + sl.drow * sl.nc), stage, f32);
        }
    free(stage);
    free(f32);
    return rc;
}

static int check_shapes(const dc_model *m, const char *dir) {
    if ((m->hd != 64 && m->hd != 128) || m->Hkv <= 0 || m->Hq % m->Hkv || m->D % 8 || m->F % 8 || m->D > 16384)
        return rt_fail(RT_EUNSUPPORTED, "model %s: head_dim %lld, %lld/%lld heads, hidden %lld, intermediate %lld: the "
                       "CUDA engine takes head_dim 64 or 128, hidden ≤ 16384 and sizes that are multiples of 8",
                       dir, (long long)m->hd, (long long)m->Hq, (long long)m->Hkv, (long long)m->D, (long long)m->F);
    return 0;
}

/* The tensor-parallel layout of teacher/parallel.c for a dense model: query heads, intermediate
 * rows and LM-head rows split in P equal parts; kv heads split too, or, when P > Hkv, each rank
 * keeps the one its query heads read (replicated over P / Hkv ranks). Sets the local sizes. */
static int split(dc_model *m, const char *dir) {
    int64_t P = m->P, r = m->rank, Hq = m->Hq, Hkv = m->Hkv, F = m->F, V = m->V;
    m->Vp = P > 1 ? ((V + P - 1) / P + 7) / 8 * 8 : V;   /* rows 32-byte aligned in the f32 logits */
    if (Hq % P || (Hkv % P && P % Hkv) || F % P || (F / P) % 8 || (P - 1) * m->Vp >= V)
        return rt_fail(RT_EUNSUPPORTED, "model %s over %lld ranks: %lld query heads, %lld kv heads, intermediate %lld, "
                       "vocabulary %lld: the CUDA engine splits query heads and intermediate rows evenly (a multiple "
                       "of 8 per rank), kv heads evenly or one per rank, and needs a vocabulary row on every rank",
                       dir, (long long)P, (long long)Hq, (long long)Hkv, (long long)F, (long long)V);
    m->Hq = Hq / P, m->q0 = r * m->Hq;
    m->Hkv = Hkv >= P ? Hkv / P : 1;
    m->kv0 = Hkv >= P ? r * m->Hkv : r / (P / Hkv);
    m->F = F / P, m->f0 = r * m->F;
    m->v0 = r * m->Vp;
    m->Vr = V - m->v0 < m->Vp ? V - m->v0 : m->Vp;
    m->qd = m->Hq * m->hd, m->kd = m->Hkv * m->hd, m->W = m->qd + 2 * m->kd;
    return 0;
}

/* Up to the plan: config, device, shapes, layout; nothing allocated on the device. */
static int prepare(dc_model *m, const char *dir, const dc_load_opts *o, mc_tensor_spec **spec, size_t *n,
                   float **inv, int *dev) {
    TRY(mc_load(dir, &m->c));
    const mc_config *c = &m->c;
    if (c->arch == MC_ARCH_DEEPSEEK_V3)
        return rt_fail(RT_EUNSUPPORTED, "--device cuda: DeepSeek-V3 models (%s) run on the CPU only for now", dir);
    mc_dims d = mc_dense_dims(c);
    m->D = d.D, m->F = d.F, m->L = d.L, m->V = d.V, m->Hq = d.Hq, m->Hkv = d.Hkv, m->hd = d.hd;
    m->qd = m->Hq * m->hd, m->kd = m->Hkv * m->hd, m->W = m->qd + 2 * m->kd;
    m->eps = (float)c->rms_norm_eps;
    m->scale = 1.0f / sqrtf((float)m->hd);
    /* a machine without a usable GPU hears that first, whatever the model */
    TRY(cb_use_device(o ? o->gpu : -1, dev));
    TRY(check_shapes(m, dir));
    TRY(split(m, dir));
    if (!(*inv = rt_malloc((size_t)(m->hd / 2) * sizeof(float))) ||
        !(m->layers = rt_calloc((size_t)m->L, sizeof *m->layers)))
        return RT_ENOMEM;
    TRY(rope_inv_freq(&c->rope, m->hd, *inv));
    TRY(mc_expected_tensors(c, spec, n));
    /* the plan first: nothing is allocated on the device for a model that does not fit */
    return make_plan(m, dir, o, *spec, *n);
}

/* The ranks' agreement on the load before a collective (cb_agree). */
static int agree(dc_model *m, const char *dir, int rc) { return cb_agree(m->host, m->P, dir, rc, &m->p); }

static int load_all(dc_model *m, const char *dir, const dc_load_opts *o) {
    mc_tensor_spec *spec = NULL;
    size_t n = 0;
    float *inv = NULL;
    int dev = 0;
    int rc = agree(m, dir, prepare(m, dir, o, &spec, &n, &inv, &dev));
    st_file *f = NULL;
    ck_summary sum;
    if (!rc) rc = st_open(dir, &f);
    if (!rc) rc = ck_validate(&m->c, f, &sum);
    rc = cb_open_stream(m->host, m->P, dev, dir, rc, &m->p, &m->stream, &m->nccl);
    cudaError_t e = cudaSuccess;
    if (!rc) rc = mm_cuda_ctx_create(&m->mm, DC_GEMM_WS);
    const dc_plan *p = &m->p;
    if (!rc && (e = cudaMalloc((void **)&m->wb, p->weights)) == cudaSuccess &&
        (e = cudaMalloc((void **)&m->kv, p->kv)) == cudaSuccess &&
        (e = cudaMalloc((void **)&m->arena, m->a.end)) == cudaSuccess)
        e = cudaMemset(m->wb, 0, p->weights);   /* fused biases of which one part is absent: zeros */
    if (!rc && e != cudaSuccess)
        rc = rt_fail(RT_ENOMEM, "model %s: the planned %.3g GB could not be allocated on the GPU (%s)", dir,
                     gb(p->total), cudaGetErrorString(e));
    if (!rc && !(m->meta = rt_malloc(m->a.end - m->a.meta))) rc = RT_ENOMEM;
    if (!rc && m->P > 1 && !(m->lhost = rt_malloc((size_t)(m->P * p->max_seqs * m->Vp) * sizeof(float)))) rc = RT_ENOMEM;
    if (!rc) rc = load_weights(m, f, spec, n);
    if (!rc)
        rc = cb_upload_consts((float *)(m->arena + m->a.inv_freq), inv, m->hd / 2, (float *)(m->arena + m->a.neginf));
    if (m->nccl) rc = agree(m, dir, rc);
    st_close(f);
    free(spec);
    free(inv);
    return rc;
}

int dc_load(const char *dir, const dc_load_opts *o, dc_model **out) {
    *out = NULL;
    dc_model *m = rt_calloc(1, sizeof *m);
    if (!m) return RT_ENOMEM;
    m->host = o ? o->comm : NULL;
    m->P = m->host ? comm_size(m->host) : 1;
    m->rank = m->host ? comm_rank(m->host) : 0;
    m->g.on = !(o && o->no_cuda_graphs);
    int rc = load_all(m, dir, o);
    if (rc) {
        dc_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void dc_free(dc_model *m) {
    if (!m) return;
    if (m->stream) cudaStreamSynchronize(m->stream);
    cb_graphs_drop(&m->g);
    comm_close(m->nccl);
    cudaFree(m->wb), cudaFree(m->kv), cudaFree(m->arena);
    mm_cuda_ctx_free(m->mm);
    if (m->stream) cudaStreamDestroy(m->stream);
    free(m->layers);
    free(m->meta);
    free(m->lhost);
    free(m);
}

const mc_config *dc_config(const dc_model *m) { return &m->c; }
const dc_plan *dc_get_plan(const dc_model *m) { return &m->p; }
int64_t dc_kv_positions(const dc_model *m) { return m->p.kv_positions; }

int dc_cache_init(dc_model *m, int64_t block_size, int64_t *n_blocks) {
    *n_blocks = 0;
    TRY(cb_cache_blocks(&m->p, block_size, &m->n_blocks));
    m->bs = block_size;
    m->block_stride = m->L * 2 * block_size * m->kd;
    cb_graphs_plan(&m->g, &m->n_blocks, block_size, m->p.max_seqs, m->c.max_position_embeddings, m->p.table_ints);
    *n_blocks = m->n_blocks;
    return 0;
}

/* ---- forward ----------------------------------------------------------------------------- */

typedef cb_piece piece;   /* tokens [from, from + n) of sequence s's new tokens */

#define BF(off) ((uint16_t *)(m->arena + (off)))
#define F4(off) ((float *)(m->arena + (off)))
#define I4(off) ((int32_t *)(m->arena + (off)))
#define OPT(off) ((off) >= 0 ? m->wb + (off) : NULL)

/* The device work of a pass over T tokens (a pass's ints already on the device, in the layout
 * pass() writes: tables ld ints a row; max_ctx the longest context; n_tiles > 0: attention of the
 * cached pass by the tensor-core prefill over that many query tiles): every layer, then the logits
 * of R rows — all T (R == T), or the last token of each of the np pieces that end their sequence
 * (gathered) — into lg [R, Vp], gathered over the ranks into lgather [P, R, Vp]. Only stream
 * work: a graph captures exactly this. */
static int body(dc_model *m, int64_t T, int64_t ld, int64_t max_ctx, bool fresh, int64_t n_tiles, int64_t R,
                const piece *pc, int64_t np) {
    int64_t D = m->D, F = m->F, W = m->W, qd = m->qd, kd = m->kd, hd = m->hd, bs = m->bs;
    cudaStream_t st = m->stream;
    const int32_t *d_tok = I4(m->a.meta), *d_pos = d_tok + T, *d_ctx = d_pos + T, *d_row = d_ctx + T;
    const int32_t *d_doc = d_row + T, *d_tile = d_doc + T, *d_tab = d_tile + T;
    const float *inv = F4(m->a.inv_freq);
    uint16_t *x = BF(m->a.x), *xn = BF(m->a.xn), *qkv = BF(m->a.qkv), *att = BF(m->a.att), *tmp = BF(m->a.tmp);
    uint16_t *gu = BF(m->a.gu), *act = BF(m->a.act), *wb = m->wb;
    attn_cuda_layout lay = {.ld_q = W, .ld_kv = W};
    if (m->P == 1) TRY(embed_fwd_cuda(x, wb + m->embed, d_tok, T, D, st));
    else {   /* vocabulary-parallel: this rank's rows, zeros elsewhere, summed (exactly: one term is not 0) */
        TRY(embed_fwd_rows_cuda(x, wb + m->embed, d_tok, T, D, m->v0, m->Vr, st));
        TRY(comm_allreduce(m->nccl, x, x, (size_t)(T * D), RT_DT_BF16, COMM_SUM));
    }
    TRY(rmsnorm_fwd_cuda(xn, NULL, x, NULL, wb + m->layers[0].attn_norm, T, D, m->eps, st));
    for (int64_t l = 0; l < m->L; l++) {
        const dc_layer *y = &m->layers[l];
        uint16_t *kc = m->kv + l * 2 * bs * kd, *vc = kc + bs * kd;
        TRY(mm_linear_fwd_cuda(m->mm, qkv, xn, wb + y->wqkv, OPT(y->bqkv), T, W, D, st));
        if (y->qn >= 0) {   /* qwen3: each q and k head RMS-normalized before RoPE */
            TRY(rmsnorm_heads_fwd_cuda(qkv, W, T, m->Hq, hd, wb + y->qn, m->eps, st));
            TRY(rmsnorm_heads_fwd_cuda(qkv + qd, W, T, m->Hkv, hd, wb + y->kn, m->eps, st));
        }
        TRY(rope_apply_cuda_ld(qkv, W, d_pos, inv, T, m->Hq, hd, false, st));
        TRY(rope_apply_cuda_ld(qkv + qd, W, d_pos, inv, T, m->Hkv, hd, false, st));
        TRY(attn_paged_store_cuda(kc, vc, qkv + qd, qkv + qd + kd, W, T, kd, bs, m->block_stride, d_tab, ld, d_row,
                                  d_pos, st));
        if (fresh)
            TRY(attn_fwd_cuda_ex(att, F4(m->a.lse), qkv, qkv + qd, qkv + qd + kd, d_doc, T, m->Hq, m->Hkv, hd, m->scale,
                                 &lay, st));
        else if (n_tiles > 0)
            TRY(attn_paged_prefill_cuda(att, qkv, W, T, m->Hq, m->Hkv, hd, m->scale, kc, vc, bs, m->block_stride, d_tab,
                                        ld, d_row, d_ctx, d_tile, n_tiles, st));
        else
            TRY(attn_paged_fwd_cuda(att, qkv, W, T, m->Hq, m->Hkv, hd, m->scale, kc, vc, bs, m->block_stride, d_tab, ld,
                                    d_row, d_ctx, max_ctx, m->pws_bytes ? m->arena + m->a.pws : NULL, st));
        TRY(mm_linear_fwd_cuda(m->mm, tmp, att, wb + y->wo, OPT(y->bo), T, D, qd, st));
        if (m->P > 1) TRY(comm_allreduce(m->nccl, tmp, tmp, (size_t)(T * D), RT_DT_BF16, COMM_SUM));
        TRY(rmsnorm_fwd_cuda(xn, NULL, x, tmp, wb + y->mlp_norm, T, D, m->eps, st));   /* x += attention */
        TRY(mm_linear_fwd_cuda(m->mm, gu, xn, wb + y->wgu, OPT(y->bgu), T, 2 * F, D, st));
        TRY(swiglu_fwd_cuda(act, gu, gu + F, T, F, 2 * F, st));
        TRY(mm_linear_fwd_cuda(m->mm, tmp, act, wb + y->wd, OPT(y->bd), T, D, F, st));
        if (m->P > 1) TRY(comm_allreduce(m->nccl, tmp, tmp, (size_t)(T * D), RT_DT_BF16, COMM_SUM));
        int64_t next = l + 1 < m->L ? m->layers[l + 1].attn_norm : m->norm;
        TRY(rmsnorm_fwd_cuda(xn, NULL, x, tmp, wb + next, T, D, m->eps, st));        /* x += MLP */
    }
    if (R == 0) return 0;
    const uint16_t *h = xn;
    if (R != T) {   /* the last new token of each finished sequence, gathered */
        TRY(cb_gather_last(BF(m->a.hf), xn, D, pc, np, st));
        h = BF(m->a.hf);
    }
    /* this rank's rows of the vocabulary: [R, Vr] of rows Vp apart */
    float *lg = F4(m->a.logits);
    TRY(mm_gemm_cuda(m->mm, lg, true, m->Vp, h, D, false, wb + m->lm_head, D, true, R, m->Vr, D, 1.0f, 0.0f, st));
    if (m->P > 1) TRY(comm_allgather(m->nccl, lg, F4(m->a.lgather), (size_t)(R * m->Vp), RT_DT_F32));
    return 0;
}

/* The first R_out of R logits rows to the host rows of V (every rank's part: [P, R, Vp] → rows);
 * logits NULL: to rows [first, …) of the device's rows buffer instead (for dc_sample). */
static int logits_out(dc_model *m, int64_t R, int64_t R_out, int64_t first, float *logits) {
    cudaStream_t st = m->stream;
    if (!logits) {
        float *dst = F4(m->a.rows) + first * m->V;
        if (m->P == 1)
            CUDA_TRY(cudaMemcpyAsync(dst, F4(m->a.logits), (size_t)(R_out * m->V) * sizeof(float),
                                     cudaMemcpyDeviceToDevice, st));
        for (int64_t q = 0; q < m->P && m->P > 1; q++) {
            int64_t v0 = q * m->Vp, nv = m->V - v0 < m->Vp ? m->V - v0 : m->Vp;
            CUDA_TRY(cudaMemcpy2DAsync(dst + v0, (size_t)m->V * sizeof(float), F4(m->a.lgather) + q * R * m->Vp,
                                       (size_t)m->Vp * sizeof(float), (size_t)nv * sizeof(float), (size_t)R_out,
                                       cudaMemcpyDeviceToDevice, st));
        }
        return 0;
    }
    if (m->P == 1) {
        CUDA_TRY(cudaMemcpyAsync(logits, F4(m->a.logits), (size_t)(R_out * m->V) * sizeof(float),
                                 cudaMemcpyDeviceToHost, st));
        CUDA_TRY(cudaStreamSynchronize(st));
        return 0;
    }
    CUDA_TRY(cudaMemcpyAsync(m->lhost, F4(m->a.lgather), (size_t)(m->P * R * m->Vp) * sizeof(float),
                             cudaMemcpyDeviceToHost, st));
    CUDA_TRY(cudaStreamSynchronize(st));
    for (int64_t q = 0; q < m->P; q++) {
        int64_t v0 = q * m->Vp, nv = m->V - v0 < m->Vp ? m->V - v0 : m->Vp;
        for (int64_t r = 0; r < R_out; r++)
            memcpy(logits + r * m->V + v0, m->lhost + (q * R + r) * m->Vp, (size_t)nv * sizeof(float));
    }
    return 0;
}

/* body() of a decode pass of B rows and context class C (cb_body_fn): what its graph captures. */
static int decode_body(void *ctx, int64_t B, int64_t C) {
    dc_model *m = ctx;
    return body(m, B, (C + m->bs - 1) / m->bs, C, false, 0, B, NULL, 0);
}

/* One device pass over pieces[0, np) (T tokens); logits of the pieces that end their sequence go
 * to rows [first, …) of `logits`. A decode pass (one new token for each of np sequences, none
 * starting empty) with graphs on runs as the graph of the smallest bucket B ≥ np and the smallest
 * context class C ≥ its longest context: its ints padded to B rows (the padding writes its K/V
 * into the scratch block and reads only that), the tables ceil(C / bs) ints a row, max_ctx C —
 * the shapes the graph was captured with. */
static int pass(dc_model *m, kv_seq *const *seqs, const piece *pc, int64_t np, int64_t T, const int32_t *tokens_of,
                const int64_t *tok_at, int64_t first, float *logits) {
    int64_t ld = 1, max_ctx = 1, R = 0, longest = 0;
    bool fresh = true;
    for (int64_t i = 0; i < np; i++) {
        const kv_seq *q = seqs[pc[i].s];
        if (q->n_blocks > ld) ld = q->n_blocks;
        if (pc[i].n > longest) longest = pc[i].n;
        fresh = fresh && q->len == 0 && pc[i].from == 0;
        R += pc[i].last;
    }
    int k = 0, c = 0;
    bool decode = cb_graphs_decode(&m->g, seqs, pc, np, &max_ctx, &k, &c);
    if (decode) ld = (m->g.C[c] + m->bs - 1) / m->bs;
    int64_t Tp = decode ? m->g.B[k] : T;
    /* the pass's ints: tokens, positions, contexts, table rows, document starts, prefill tiles | tables */
    int32_t *tok = m->meta, *pos = tok + Tp, *ctx = pos + Tp, *row = ctx + Tp, *doc = row + Tp, *tile = doc + Tp;
    int32_t *tab = tile + Tp;
    for (int64_t i = 0, t = 0; i < np; i++) {
        const kv_seq *q = seqs[pc[i].s];
        for (int64_t j = 0; j < pc[i].n; j++, t++) {
            tok[t] = tokens_of[tok_at[pc[i].s] + pc[i].from + j];
            pos[t] = (int32_t)(q->len + pc[i].from + j);
            ctx[t] = pos[t] + 1;
            if (ctx[t] > max_ctx) max_ctx = ctx[t];
            row[t] = (int32_t)i;
            doc[t] = (int32_t)(t - j);
        }
        memcpy(tab + i * ld, q->blocks, (size_t)q->n_blocks * sizeof(int32_t));
    }
    for (int64_t t = np; decode && t < Tp; t++) {   /* a graph's padding rows: one position of the scratch block */
        tok[t] = 0, pos[t] = 0, ctx[t] = 1, row[t] = (int32_t)t, doc[t] = (int32_t)t;
        tab[t * ld] = m->g.scratch;
    }
    /* a cached pass with a long piece (chunked prefill continuing a prefix): the tensor-core kernel */
    int64_t n_tiles = 0;
    if (!decode && !fresh && longest >= DC_PREFILL_MIN) n_tiles = attn_paged_prefill_tiles(tile, row, T, m->Hq, m->Hkv);
    cudaStream_t st = m->stream;
    size_t meta_bytes = (size_t)(6 * Tp + (decode ? Tp : np) * ld) * sizeof(int32_t);
    CUDA_TRY(cudaMemcpyAsync(I4(m->a.meta), m->meta, meta_bytes, cudaMemcpyHostToDevice, st));
    if (decode) {   /* its graph, or the first pass of this pair: eagerly, as the graph will, then captured */
        bool eager;
        TRY(cb_graphs_run(&m->g, st, k, c, decode_body, m, &eager));
        TRY(logits_out(m, Tp, np, first, logits));
        return eager ? cb_graphs_capture(&m->g, st, k, c, decode_body, m) : 0;
    }
    TRY(body(m, T, ld, max_ctx, fresh, n_tiles, R, pc, np));
    if (R > 0 && logits) return logits_out(m, R, R, first, logits);
    if (R > 0) TRY(logits_out(m, R, R, first, NULL));
    CUDA_TRY(cudaStreamSynchronize(st));
    return 0;
}

/* cb_passes' pass: dc_forward's arguments in ctx */
typedef struct {
    dc_model *m;
    kv_seq *const *seqs;
    const int32_t *tokens;
    float *logits;
} fwd_call;

static int pass_of(void *ctx, const piece *pc, int64_t np, int64_t T, const int64_t *tok_at, int64_t first) {
    fwd_call *f = ctx;
    return pass(f->m, f->seqs, pc, np, T, f->tokens, tok_at, first, f->logits ? f->logits + first * f->m->V : NULL);
}

int dc_forward(dc_model *m, kv_pool *cache, kv_seq *const *seqs, const int32_t *n_new, int64_t n_seqs,
               const int32_t *tokens, float *logits) {
    int64_t T;
    m->dev_rows = 0;
    if (!logits && n_seqs > m->p.max_seqs)
        return rt_fail(RT_EINVAL, "%lld logits rows to keep on the GPU; it holds %lld", (long long)n_seqs,
                       (long long)m->p.max_seqs);
    TRY(kv_check_device_batch(cache, m->bs, m->n_blocks, "dc_cache_init", seqs, n_new, n_seqs, tokens, m->V,
                              m->c.max_position_embeddings, &T));
    /* every block kv_seq_reserve makes private is copied on the device (copy on write) */
    for (int64_t s = 0; s < n_seqs; s++)
        TRY(cb_reserve(cache, seqs[s], seqs[s]->len + n_new[s], m->bs, m->kv, (size_t)m->block_stride, 1, 0,
                       m->stream));
    int rc = cb_passes(seqs, n_new, n_seqs, &m->p, pass_of, &(fwd_call){m, seqs, tokens, logits});
    m->dev_rows = !rc && !logits ? n_seqs : 0;
    if (rc) return rc;
    for (int64_t i = 0; i < n_seqs; i++) seqs[i]->len += n_new[i];
    return 0;
}

/* the rows the last dc_forward left on the device, and device sampling's buffers */
static cb_rows rows_of(dc_model *m) {
    return (cb_rows){.rows = F4(m->a.rows), .n_rows = m->dev_rows, .V = m->V, .max_seqs = m->p.max_seqs,
                     .packed = F4(m->a.sl), .neginf = F4(m->a.neginf), .params = m->arena + m->a.sparams,
                     .rng = m->arena + m->a.srng, .ws = m->arena + m->a.smp_ws, .ws_bytes = m->smp_ws_bytes,
                     .tok = I4(m->a.stok), .lp = F4(m->a.slp), .top = I4(m->a.stop)};
}

int dc_logits_row(dc_model *m, int64_t row, float *out) {
    cb_rows d = rows_of(m);
    return cb_logits_row(&d, row, out, m->stream);
}

int dc_sample(dc_model *m, int64_t n, const int32_t *row_of, int64_t n_valid, const int32_t *holes, int64_t n_holes,
              const smp_params *params, const uint64_t *rng, int32_t *tokens, float *logprob, int top_k,
              int32_t *top_ids, float *top_lp) {
    cb_rows d = rows_of(m);
    return cb_sample(&d, m->stream, n, row_of, n_valid, holes, n_holes, params, rng, tokens, logprob, top_k, top_ids,
                     top_lp);
}

#endif

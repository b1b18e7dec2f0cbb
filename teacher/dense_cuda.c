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
#include "core/safetensors.h"
#include "kernels/act.h"
#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/embed.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/rope.h"

#define TRY(call)                                                                                        \
    do {                                                                                                 \
        int rc_ = (call);                                                                                \
        if (rc_) return rc_;                                                                             \
    } while (0)

#define DC_ALIGN 64                       /* elements: every region starts 128 bytes apart */
#define DC_GEMM_WS ((size_t)32 << 20)     /* mm_cuda_ctx_create's default workspace */
#define DC_CHUNK ((size_t)1 << 20)        /* elements converted per staging step */
#define DC_PLAN_BS 16                     /* block size the block-table room is planned for */

/* element offsets into the weight arena; −1: absent */
typedef struct {
    int64_t attn_norm, mlp_norm, wqkv, bqkv, wo, bo, wgu, bgu, wd, bd;
} dc_layer;

/* byte offsets into the activation arena */
typedef struct {
    size_t x, xn, qkv, att, tmp, gu, act, lse, hf, logits, pws, meta, inv_freq, end;
} dc_act;

struct dc_model {
    mc_config c;
    dc_plan p;
    int64_t D, F, L, V, Hq, Hkv, hd, W, qd, kd;
    int64_t embed, norm, lm_head;          /* element offsets */
    dc_layer *layers;
    dc_act a;
    size_t pws_bytes;                      /* split-KV workspace */
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

/* Where a checkpoint tensor goes, and its element count. */
static int64_t *slot(dc_model *m, const char *name, int64_t *row0) {
    *row0 = 0;
    if (!strcmp(name, "model.embed_tokens.weight")) return &m->embed;
    if (!strcmp(name, "model.norm.weight")) return &m->norm;
    if (!strcmp(name, "lm_head.weight")) return &m->lm_head;
    long long i;
    int used = 0;
    if (sscanf(name, "model.layers.%lld.%n", &i, &used) != 1 || !used || i < 0 || i >= m->L) return NULL;
    dc_layer *l = &m->layers[i];
    const char *s = name + used;
    int64_t q = m->qd, k = m->kd;
    /* fused groups: rows (or bias elements) [row0, …) of the fused tensor */
    if (!strcmp(s, "input_layernorm.weight")) return &l->attn_norm;
    if (!strcmp(s, "post_attention_layernorm.weight")) return &l->mlp_norm;
    if (!strcmp(s, "self_attn.q_proj.weight")) return &l->wqkv;
    if (!strcmp(s, "self_attn.k_proj.weight")) return *row0 = q, &l->wqkv;
    if (!strcmp(s, "self_attn.v_proj.weight")) return *row0 = q + k, &l->wqkv;
    if (!strcmp(s, "self_attn.q_proj.bias")) return &l->bqkv;
    if (!strcmp(s, "self_attn.k_proj.bias")) return *row0 = q, &l->bqkv;
    if (!strcmp(s, "self_attn.v_proj.bias")) return *row0 = q + k, &l->bqkv;
    if (!strcmp(s, "self_attn.o_proj.weight")) return &l->wo;
    if (!strcmp(s, "self_attn.o_proj.bias")) return &l->bo;
    if (!strcmp(s, "mlp.gate_proj.weight")) return &l->wgu;
    if (!strcmp(s, "mlp.up_proj.weight")) return *row0 = m->F, &l->wgu;
    if (!strcmp(s, "mlp.gate_proj.bias")) return &l->bgu;
    if (!strcmp(s, "mlp.up_proj.bias")) return *row0 = m->F, &l->bgu;
    if (!strcmp(s, "mlp.down_proj.weight")) return &l->wd;
    if (!strcmp(s, "mlp.down_proj.bias")) return &l->bd;
    return NULL;
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
    PUT(m->embed, m->V * m->D);
    PUT(m->norm, m->D);
    char name[160];
    if (has(spec, n, "lm_head.weight")) PUT(m->lm_head, m->V * m->D);
    else m->lm_head = m->embed;
    for (int64_t l = 0; l < m->L; l++) {
        dc_layer *y = &m->layers[l];
        *y = (dc_layer){-1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
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
        if (has(spec, n, name)) PUT(y->bo, m->D);
        snprintf(name, sizeof name, "model.layers.%lld.mlp.down_proj.bias", (long long)l);
        if (has(spec, n, name)) PUT(y->bd, m->D);
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
    PUT(logits, S * m->V * 4);
    PUT(pws, m->pws_bytes);
    PUT(meta, (5 * T + table_ints) * 4);
    PUT(inv_freq, m->hd / 2 * 4);
#undef PUT
    m->a.end = at;
    return at;
}

static double gb(size_t b) { return (double)b / 1e9; }

static int make_plan(dc_model *m, const char *dir, const dc_load_opts *o, const mc_tensor_spec *spec, size_t n) {
    dc_plan *p = &m->p;
    p->max_tokens = o && o->max_tokens > 0 ? o->max_tokens : 512;
    p->max_seqs = o && o->max_seqs > 0 ? o->max_seqs : 256;
    if (p->max_tokens < 16) p->max_tokens = 16;
    if (p->max_seqs < 16) p->max_seqs = 16;
    if (p->max_seqs > p->max_tokens) p->max_seqs = p->max_tokens;
    int64_t maxpos = m->c.max_position_embeddings;
    p->table_ints = p->max_seqs * ((maxpos + DC_PLAN_BS - 1) / DC_PLAN_BS + 1);
    /* split-KV scratch: the most any pass can ask (more queries or a longer context never ask less) */
    m->pws_bytes = 0;
    for (int64_t q = 1; q <= p->max_tokens && q <= 256; q++) {
        size_t b = attn_paged_cuda_ws_bytes(q, m->Hq, m->Hkv, m->hd, maxpos);
        if (b > m->pws_bytes) m->pws_bytes = b;
    }
    p->weights = layout_weights(m, spec, n) * 2;
    p->activations = layout_activations(m, p->max_tokens, p->max_seqs, p->table_ints) - up128b(m->pws_bytes);
    p->workspace = DC_GEMM_WS + up128b(m->pws_bytes);
    p->kv_position_bytes = (size_t)(m->L * 2 * m->kd) * 2;
    double frac = o && o->memory_fraction > 0 ? o->memory_fraction : 0.9;
    if (frac > 1) frac = 1;
    CUDA_TRY(cudaMemGetInfo(&p->device_free, &p->device_total));
    double cap = frac * (double)p->device_total, used = (double)(p->device_total - p->device_free);
    p->budget = cap > used ? (size_t)(cap - used) : 0;
    size_t fixed = p->weights + p->activations + p->workspace;
    int64_t need_kv = maxpos < DC_MIN_KV ? maxpos : DC_MIN_KV;
    if (p->weights > p->budget)
        return rt_fail(RT_ENOMEM, "model %s needs %.3g GB of weights; the GPU has %.3g GB (%.2f of %.3g GB, %.3g GB "
                       "already in use)", dir, gb(p->weights), gb(p->budget), frac, gb(p->device_total), used / 1e9);
    if (fixed + (size_t)need_kv * p->kv_position_bytes > p->budget)
        return rt_fail(RT_ENOMEM, "model %s needs %.3g GB (weights %.3g, activations %.3g, workspace %.3g) and %.3g GB "
                       "for a cache of %lld positions; the GPU has %.3g GB", dir, gb(fixed), gb(p->weights),
                       gb(p->activations), gb(p->workspace), gb((size_t)need_kv * p->kv_position_bytes),
                       (long long)need_kv, gb(p->budget));
    p->kv_positions = (int64_t)((p->budget - fixed) / p->kv_position_bytes);
    p->kv = (size_t)p->kv_positions * p->kv_position_bytes;
    p->total = fixed + p->kv;
    return 0;
}

/* ---- loading ----------------------------------------------------------------------------- */

/* One tensor into the arena at element `at`: bf16 as stored, anything else converted in chunks. */
static int upload(dc_model *m, const st_tensor *t, size_t at, uint16_t *stage, float *f32) {
    uint16_t *dst = m->wb + at;
    if (t->dtype == RT_DT_BF16) {
        CUDA_TRY(cudaMemcpy(dst, t->data, t->nelem * 2, cudaMemcpyHostToDevice));
        return 0;
    }
    size_t es = rt_dtype_size(t->dtype);
    for (size_t i = 0; i < t->nelem; i += DC_CHUNK) {
        size_t c = t->nelem - i < DC_CHUNK ? t->nelem - i : DC_CHUNK;
        TRY(cvt_to_f32(t->dtype, (const char *)t->data + i * es, f32, c));
        cvt_f32_to_bf16(f32, stage, c);
        CUDA_TRY(cudaMemcpy(dst + i, stage, c * 2, cudaMemcpyHostToDevice));
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
            int64_t row0, *off = slot(m, spec[i].name, &row0);
            size_t cols = spec[i].ndim == 2 ? (size_t)spec[i].shape[1] : 1;
            size_t numel = (size_t)spec[i].shape[0] * cols;
            if (!off || *off < 0) rc = rt_fail(RT_EINTERNAL, "unexpected tensor %s", spec[i].name);
            else if (t->nelem != numel)
                rc = rt_fail(RT_EFORMAT, "tensor %s: %zu elements, %zu expected", spec[i].name, t->nelem, numel);
            else rc = upload(m, t, (size_t)*off + (size_t)row0 * cols, stage, f32);
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

static int load_all(dc_model *m, const char *dir, const dc_load_opts *o) {
    TRY(mc_load(dir, &m->c));
    const mc_config *c = &m->c;
    if (c->arch == MC_ARCH_DEEPSEEK_V3)
        return rt_fail(RT_EUNSUPPORTED, "--device cuda: DeepSeek-V3 models (%s) run on the CPU only for now", dir);
    if (c->qk_norm)
        return rt_fail(RT_EUNSUPPORTED, "--device cuda: %s models (q/k norms, %s) run on the CPU only for now", c->model_type, dir);
    m->D = c->hidden_size, m->F = c->intermediate_size, m->L = c->num_hidden_layers, m->V = c->vocab_size;
    m->Hq = c->num_attention_heads, m->Hkv = c->num_key_value_heads, m->hd = c->head_dim;
    m->qd = m->Hq * m->hd, m->kd = m->Hkv * m->hd, m->W = m->qd + 2 * m->kd;
    m->eps = (float)c->rms_norm_eps;
    m->scale = 1.0f / sqrtf((float)m->hd);
    /* a machine without a usable GPU hears that first, whatever the model */
    int dev = o && o->gpu >= 0 ? o->gpu : 0, ndev = 0;
    cudaError_t ce = cudaGetDeviceCount(&ndev);
    if (ce != cudaSuccess || ndev < 1)
        return rt_fail(RT_EUNSUPPORTED, "--device cuda: no usable CUDA device (%s)",
                       ce != cudaSuccess ? cudaGetErrorString(ce) : "none found");
    if (dev >= ndev) return rt_fail(RT_EUNSUPPORTED, "--device cuda: GPU %d, but %d found", dev, ndev);
    if (cudaSetDevice(dev) != cudaSuccess) return rt_fail(RT_EUNSUPPORTED, "--device cuda: cannot use GPU %d", dev);
    TRY(check_shapes(m, dir));
    float *inv = rt_malloc((size_t)(m->hd / 2) * sizeof(float));
    if (!inv || !(m->layers = rt_calloc((size_t)m->L, sizeof *m->layers))) {
        free(inv);
        return RT_ENOMEM;
    }
    int rc = rope_inv_freq(&c->rope, m->hd, inv);
    mc_tensor_spec *spec = NULL;
    size_t n = 0;
    if (!rc) rc = mc_expected_tensors(c, &spec, &n);
    /* the plan first: nothing is allocated on the device for a model that does not fit */
    if (!rc) rc = make_plan(m, dir, o, spec, n);
    st_file *f = NULL;
    ck_summary sum;
    if (!rc) rc = st_open(dir, &f);
    if (!rc) rc = ck_validate(c, f, &sum);
    cudaError_t e = cudaSuccess;
    if (!rc && (e = cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking)) != cudaSuccess)
        rc = rt_fail(RT_EINTERNAL, "cudaStreamCreateWithFlags: %s", cudaGetErrorString(e));
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
    if (!rc) rc = load_weights(m, f, spec, n);
    if (!rc && (e = cudaMemcpy(m->arena + m->a.inv_freq, inv, (size_t)(m->hd / 2) * 4, cudaMemcpyHostToDevice)))
        rc = rt_fail(RT_EINTERNAL, "uploading the RoPE frequencies: %s", cudaGetErrorString(e));
    st_close(f);
    free(spec);
    free(inv);
    return rc;
}

int dc_load(const char *dir, const dc_load_opts *o, dc_model **out) {
    *out = NULL;
    dc_model *m = rt_calloc(1, sizeof *m);
    if (!m) return RT_ENOMEM;
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
    cudaFree(m->wb), cudaFree(m->kv), cudaFree(m->arena);
    mm_cuda_ctx_free(m->mm);
    if (m->stream) cudaStreamDestroy(m->stream);
    free(m->layers);
    free(m->meta);
    free(m);
}

const mc_config *dc_config(const dc_model *m) { return &m->c; }
const dc_plan *dc_get_plan(const dc_model *m) { return &m->p; }
int64_t dc_kv_positions(const dc_model *m) { return m->p.kv_positions; }

int dc_cache_init(dc_model *m, int64_t block_size, int64_t *n_blocks) {
    *n_blocks = 0;
    if (block_size <= 0 || block_size > m->p.kv_positions)
        return rt_fail(RT_ERANGE, "cache blocks of %lld positions; the GPU's cache holds %lld", (long long)block_size,
                       (long long)m->p.kv_positions);
    m->bs = block_size;
    m->n_blocks = m->p.kv_positions / block_size;
    m->block_stride = m->L * 2 * block_size * m->kd;
    *n_blocks = m->n_blocks;
    return 0;
}

/* ---- forward ----------------------------------------------------------------------------- */

/* A piece: tokens [from, from + n) of sequence s's new tokens. */
typedef struct {
    int64_t s, from, n;
    bool last;   /* ends the sequence's new tokens: its logits row */
} piece;

#define BF(off) ((uint16_t *)(m->arena + (off)))
#define F4(off) ((float *)(m->arena + (off)))
#define I4(off) ((int32_t *)(m->arena + (off)))
#define OPT(off) ((off) >= 0 ? m->wb + (off) : NULL)

/* One device pass over pieces[0, np) (T tokens); logits of the pieces that end their sequence go
 * to rows [first, …) of `logits`. */
static int pass(dc_model *m, kv_seq *const *seqs, const piece *pc, int64_t np, int64_t T, const int32_t *tokens_of,
                const int64_t *tok_at, float *logits) {
    int64_t D = m->D, F = m->F, W = m->W, qd = m->qd, kd = m->kd, hd = m->hd, bs = m->bs;
    int64_t ld = 1, max_ctx = 1, R = 0;
    bool fresh = true;
    for (int64_t i = 0; i < np; i++) {
        const kv_seq *q = seqs[pc[i].s];
        if (q->n_blocks > ld) ld = q->n_blocks;
        fresh = fresh && q->len == 0 && pc[i].from == 0;
        R += pc[i].last;
    }
    /* the pass's ints: tokens, positions, contexts, table rows, document starts | tables */
    int32_t *tok = m->meta, *pos = tok + T, *ctx = pos + T, *row = ctx + T, *doc = row + T, *tab = doc + T;
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
    cudaStream_t st = m->stream;
    size_t meta_bytes = (size_t)(5 * T + np * ld) * sizeof(int32_t);
    CUDA_TRY(cudaMemcpyAsync(I4(m->a.meta), m->meta, meta_bytes, cudaMemcpyHostToDevice, st));
    const int32_t *d_tok = I4(m->a.meta), *d_pos = d_tok + T, *d_ctx = d_pos + T, *d_row = d_ctx + T;
    const int32_t *d_doc = d_row + T, *d_tab = d_doc + T;
    const float *inv = F4(m->a.inv_freq);
    uint16_t *x = BF(m->a.x), *xn = BF(m->a.xn), *qkv = BF(m->a.qkv), *att = BF(m->a.att), *tmp = BF(m->a.tmp);
    uint16_t *gu = BF(m->a.gu), *act = BF(m->a.act), *wb = m->wb;
    attn_cuda_layout lay = {.ld_q = W, .ld_kv = W};
    TRY(embed_fwd_cuda(x, wb + m->embed, d_tok, T, D, st));
    TRY(rmsnorm_fwd_cuda(xn, NULL, x, NULL, wb + m->layers[0].attn_norm, T, D, m->eps, st));
    for (int64_t l = 0; l < m->L; l++) {
        const dc_layer *y = &m->layers[l];
        uint16_t *kc = m->kv + l * 2 * bs * kd, *vc = kc + bs * kd;
        TRY(mm_linear_fwd_cuda(m->mm, qkv, xn, wb + y->wqkv, OPT(y->bqkv), T, W, D, st));
        TRY(rope_apply_cuda_ld(qkv, W, d_pos, inv, T, m->Hq, hd, false, st));
        TRY(rope_apply_cuda_ld(qkv + qd, W, d_pos, inv, T, m->Hkv, hd, false, st));
        TRY(attn_paged_store_cuda(kc, vc, qkv + qd, qkv + qd + kd, W, T, kd, bs, m->block_stride, d_tab, ld, d_row,
                                  d_pos, st));
        if (fresh)
            TRY(attn_fwd_cuda_ex(att, F4(m->a.lse), qkv, qkv + qd, qkv + qd + kd, d_doc, T, m->Hq, m->Hkv, hd, m->scale,
                                 &lay, st));
        else
            TRY(attn_paged_fwd_cuda(att, qkv, W, T, m->Hq, m->Hkv, hd, m->scale, kc, vc, bs, m->block_stride, d_tab, ld,
                                    d_row, d_ctx, max_ctx, m->pws_bytes ? m->arena + m->a.pws : NULL, st));
        TRY(mm_linear_fwd_cuda(m->mm, tmp, att, wb + y->wo, OPT(y->bo), T, D, qd, st));
        TRY(rmsnorm_fwd_cuda(xn, NULL, x, tmp, wb + y->mlp_norm, T, D, m->eps, st));   /* x += attention */
        TRY(mm_linear_fwd_cuda(m->mm, gu, xn, wb + y->wgu, OPT(y->bgu), T, 2 * F, D, st));
        TRY(swiglu_fwd_cuda(act, gu, gu + F, T, F, 2 * F, st));
        TRY(mm_linear_fwd_cuda(m->mm, tmp, act, wb + y->wd, OPT(y->bd), T, D, F, st));
        int64_t next = l + 1 < m->L ? m->layers[l + 1].attn_norm : m->norm;
        TRY(rmsnorm_fwd_cuda(xn, NULL, x, tmp, wb + next, T, D, m->eps, st));        /* x += MLP */
    }
    if (R > 0) {
        const uint16_t *h = xn;
        if (R != T) {   /* the last new token of each finished sequence, gathered */
            uint16_t *hf = BF(m->a.hf);
            for (int64_t i = 0, t = 0, r = 0; i < np; i++) {
                t += pc[i].n;
                if (pc[i].last)
                    CUDA_TRY(cudaMemcpyAsync(hf + (r++) * D, xn + (t - 1) * D, (size_t)D * 2, cudaMemcpyDeviceToDevice, st));
            }
            h = hf;
        }
        float *lg = F4(m->a.logits);
        TRY(mm_gemm_cuda(m->mm, lg, true, m->V, h, D, false, wb + m->lm_head, D, true, R, m->V, D, 1.0f, 0.0f, st));
        CUDA_TRY(cudaMemcpyAsync(logits, lg, (size_t)(R * m->V) * sizeof(float), cudaMemcpyDeviceToHost, st));
    }
    CUDA_TRY(cudaStreamSynchronize(st));
    return 0;
}

/* kv_seq_reserve, and on the device the copy of every block it made private (copy on write). */
static int reserve(dc_model *m, kv_pool *cache, kv_seq *s, int64_t new_len) {
    int64_t b0 = s->len / m->bs, nb = s->n_blocks, nold = nb > b0 ? nb - b0 : 0;
    int32_t old[64], *o = nold <= 64 ? old : rt_malloc((size_t)nold * sizeof(int32_t));
    if (!o) return RT_ENOMEM;
    if (nold) memcpy(o, s->blocks + b0, (size_t)nold * sizeof(int32_t));
    int rc = kv_seq_reserve(cache, s, new_len);
    /* every block it replaced, even when it stopped early (cache full): the table names them now */
    for (int64_t b = 0; b < nold; b++) {
        int32_t nw = s->blocks[b0 + b];
        if (nw == o[b]) continue;
        size_t el = (size_t)m->block_stride;
        cudaError_t e = cudaMemcpyAsync(m->kv + (size_t)nw * el, m->kv + (size_t)o[b] * el, el * 2,
                                        cudaMemcpyDeviceToDevice, m->stream);
        if (e != cudaSuccess && !rc)
            rc = rt_fail(RT_EINTERNAL, "copying a shared cache block: %s", cudaGetErrorString(e));
    }
    if (o != old) free(o);
    return rc;
}

int dc_forward(dc_model *m, kv_pool *cache, kv_seq *const *seqs, const int32_t *n_new, int64_t n_seqs,
               const int32_t *tokens, float *logits) {
    if (n_seqs <= 0) return rt_fail(RT_EINVAL, "forward of %lld sequences", (long long)n_seqs);
    if (!m->bs || kv_pool_block_size(cache) != m->bs || kv_pool_block_floats(cache) != 0 ||
        kv_pool_blocks(cache) > m->n_blocks)
        return rt_fail(RT_EINVAL, "the KV cache's blocks were not made for this model's GPU cache (dc_cache_init)");
    int64_t T = 0;
    for (int64_t s = 0; s < n_seqs; s++) {
        if (n_new[s] <= 0) return rt_fail(RT_EINVAL, "sequence %lld: %d new tokens", (long long)s, n_new[s]);
        int64_t end = seqs[s]->len + n_new[s];
        if (end > m->c.max_position_embeddings)
            return rt_fail(RT_ERANGE, "sequence of %lld positions exceeds max_position_embeddings %lld",
                           (long long)end, (long long)m->c.max_position_embeddings);
        T += n_new[s];
    }
    for (int64_t t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= m->V)
            return rt_fail(RT_EINVAL, "token %d outside the vocabulary of %lld", tokens[t], (long long)m->V);
    for (int64_t s = 0; s < n_seqs; s++) TRY(reserve(m, cache, seqs[s], seqs[s]->len + n_new[s]));
    int64_t *tok_at = rt_malloc((size_t)n_seqs * sizeof(int64_t));
    piece *pc = rt_malloc((size_t)(n_seqs < m->p.max_seqs ? n_seqs : m->p.max_seqs) * sizeof *pc);
    int rc = tok_at && pc ? 0 : RT_ENOMEM;
    for (int64_t s = 0, t = 0; s < n_seqs && !rc; t += n_new[s], s++) tok_at[s] = t;
    /* passes: whole sequences while they fit; a sequence longer than a pass in pieces */
    int64_t s = 0, from = 0, first = 0;
    while (s < n_seqs && !rc) {
        int64_t np = 0, Tp = 0, ld = 1, R = 0;
        while (s < n_seqs && np < m->p.max_seqs && Tp < m->p.max_tokens) {
            int64_t nld = seqs[s]->n_blocks > ld ? seqs[s]->n_blocks : ld;
            if (np > 0 && (np + 1) * nld > m->p.table_ints) break;
            int64_t take = n_new[s] - from, room = m->p.max_tokens - Tp;
            if (take > room) take = room;
            pc[np++] = (piece){.s = s, .from = from, .n = take, .last = from + take == n_new[s]};
            Tp += take, ld = nld;
            if (from + take < n_new[s]) {
                from += take;
                break;
            }
            R++, s++, from = 0;
        }
        rc = pass(m, seqs, pc, np, Tp, tokens, tok_at, logits + first * m->V);
        first += R;
    }
    free(tok_at);
    free(pc);
    if (rc) return rc;
    for (int64_t i = 0; i < n_seqs; i++) seqs[i]->len += n_new[i];
    return 0;
}

#endif

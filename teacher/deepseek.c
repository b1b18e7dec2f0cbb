/* teacher/deepseek.c — DeepSeek-V3 load, forward, latent cache and MTP (see teacher/deepseek.h). */
#include "teacher/deepseek.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/checkpoint.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "kernels/convert.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/mla.h"
#include "kernels/moe.h"
#include "kernels/yarn.h"
#include "teacher/parallel.h"

#define DS_LORA_NORM_EPS 1e-6f   /* q_a_layernorm / kv_a_layernorm: transformers' default eps */

/* H is the heads this model holds (all of them, or a rank's part: teacher/parallel.h). */
typedef struct {
    float *attn_norm, *ffn_norm;         /* [dim] */
    float *q_a, *q_a_bias, *q_a_norm;    /* [q_rank, dim], [q_rank], [q_rank] (q_lora_rank > 0) */
    float *q_b;                          /* [H*dq, q_rank], or q_proj [H*dq, dim] */
    float *kv_a, *kv_a_bias;             /* [R + dr, dim], [R + dr] */
    float *kv_a_norm;                    /* [R] */
    float *kv_b;                         /* [H*(dn+dv), R] */
    float *o, *o_bias;                   /* [dim, H*dv], [dim] (bias: rank 0 only) */
    int64_t n_heads;                     /* H */
    moe_expert mlp;                      /* dense MLP (a rank's columns), or the shared experts */
    int64_t mlp_inter;                   /* its intermediate size; 0: no shared experts */
    bool moe;
    float *router, *router_bias;         /* [E, dim], [E] or NULL */
    moe_expert *experts;                 /* [E]; experts of other ranks have NULL weights */
} ds_layer;

typedef struct {
    float *embed;                        /* [V, dim] */
    float *enorm, *hnorm;                /* [dim] */
    float *eh_proj;                      /* [dim, 2*dim] */
    ds_layer layer;
    float *norm, *head;                  /* [dim], [V, dim] */
} ds_mtp;

struct ds_model {
    mc_config c;
    tp_pool *pool;
    ds_layout lo;                        /* the one-rank layout for ds_load */
    rt_comm *comm;                       /* borrowed; NULL: not parallel (no collectives) */
    ds_load_info info;
    float *embed, *norm, *lm_head;       /* [Vl, dim], [dim], [Vl, dim]: rows [vocab0, +n_vocab) */
    ds_layer *layers;                    /* [num_hidden_layers] */
    ds_mtp *mtp;                         /* NULL when not loaded */
    float inv_freq[YARN_MAX_DIM / 2], cs_scale, attn_scale;
    moe_router_cfg router;
    void **allocs;                       /* every weight buffer, freed by ds_free */
    size_t n_allocs, cap_allocs;
};

struct ds_cache {
    int64_t cap, row, n_slots, main_layers;
    int64_t len, mtp_len;
    float *data;                         /* [n_slots, cap, row] */
};

/* ---- loading --------------------------------------------------------------------------- */

typedef struct {
    ds_model *m;
    const st_file *f;
    char prefix[64];
    bool expert;                         /* count what is read as routed-expert bytes */
} loader;

/* A zeroed, 64-byte aligned buffer that ds_free releases. */
static void *own_bytes(ds_model *m, size_t bytes) {
    if (m->n_allocs == m->cap_allocs && rt_grow((void **)&m->allocs, &m->cap_allocs, m->n_allocs + 1, sizeof(void *)))
        return NULL;
    bytes = (bytes + 63) & ~(size_t)63;
    void *p = rt_aligned_alloc(64, bytes ? bytes : 64);
    if (!p) return NULL;
    memset(p, 0, bytes);
    m->allocs[m->n_allocs++] = p;
    return p;
}

static float *own_alloc(ds_model *m, size_t nelem) {
    size_t bytes;
    if (!rt_mul_ok(nelem, sizeof(float), &bytes)) {
        rt_fail(RT_ENOMEM, "tensor of %zu elements", nelem);
        return NULL;
    }
    return own_bytes(m, bytes);
}

/* Converts rows [r0, r1) × columns [c0, c1) of tensor `name` ([rows, cols]; cols = 0 for a
 * vector, c0 = 0 and c1 = 1 then) to f32 into dst [r1 - r0, c1 - c0], reading only that
 * slice of the mapping (a whole tensor goes through the bulk, pooled conversions). */
static int load_into(const loader *ld, const char *name, int64_t rows, int64_t cols, int64_t r0, int64_t r1, int64_t c0,
                     int64_t c1, float *dst) {
    const st_tensor *t = st_find(ld->f, name);
    if (!t) return rt_fail(RT_ENOTFOUND, "tensor %s missing", name);
    int nd = cols ? 2 : 1;
    if (t->ndim != nd || t->shape[0] != rows || (nd == 2 && t->shape[1] != cols))
        return rt_fail(RT_EFORMAT, "tensor %s: shape does not match the config", name);
    int64_t sc = cols ? cols : 1, nc = c1 - c0;
    if (r1 <= r0 || nc <= 0) return 0;   /* an empty slice */
    bool whole = r0 == 0 && r1 == rows && c0 == 0 && c1 == sc;
    size_t es = rt_dtype_size(t->dtype), bytes = (size_t)((r1 - r0) * nc) * es;
    const unsigned char *src = t->data;
    if (t->dtype == RT_DT_F8_E4M3) {
        char sn[200];
        snprintf(sn, sizeof sn, "%s_scale_inv", name);
        const st_tensor *s = st_find(ld->f, sn);
        const mc_quant *q = &ld->m->c.quant;
        if (!s || s->dtype != RT_DT_F32 || nd != 2 || q->block_rows <= 0 || q->block_cols <= 0)
            return rt_fail(RT_EFORMAT, "tensor %s: FP8 without a usable F32 %s", name, sn);
        int64_t br = (rows + q->block_rows - 1) / q->block_rows, bc = (cols + q->block_cols - 1) / q->block_cols;
        if (s->ndim != 2 || s->shape[0] != br || s->shape[1] != bc)
            return rt_fail(RT_EFORMAT, "tensor %s: scale shape is not %lldx%lld", sn, (long long)br, (long long)bc);
        int64_t sb0 = r0 / q->block_rows, sb1 = (r1 - 1) / q->block_rows, sc0 = c0 / q->block_cols, sc1 = (c1 - 1) / q->block_cols;
        bytes += (size_t)((sb1 - sb0 + 1) * (sc1 - sc0 + 1)) * sizeof(float);
        if (whole) {
            fp8_block_dequant(t->data, s->data, rows, cols, q->block_rows, q->block_cols, dst, ld->m->pool);
        } else {   /* the same products as fp8_block_dequant, a row's run of a block at a time */
            const unsigned char *sd = s->data;
            float lut[256];
            for (int i = 0; i < 256; i++) lut[i] = fp8e4m3_to_f32((uint8_t)i);
            for (int64_t r = r0; r < r1; r++)
                for (int64_t j0 = c0; j0 < c1;) {
                    int64_t j1 = (j0 / q->block_cols + 1) * q->block_cols;
                    if (j1 > c1) j1 = c1;
                    float sv;
                    memcpy(&sv, sd + (size_t)((r / q->block_rows) * bc + j0 / q->block_cols) * sizeof sv, sizeof sv);
                    for (int64_t j = j0; j < j1; j++) dst[(r - r0) * nc + (j - c0)] = lut[src[r * cols + j]] * sv;
                    j0 = j1;
                }
        }
    } else if (whole) {
        int rc = cvt_to_f32(t->dtype, t->data, dst, t->nelem);
        if (rc) return rt_errorf(rc, "tensor %s", name);
    } else {
        for (int64_t r = r0; r < r1; r++) {
            int rc = cvt_to_f32(t->dtype, src + (size_t)(r * sc + c0) * es, dst + (r - r0) * nc, (size_t)nc);
            if (rc) return rt_errorf(rc, "tensor %s", name);
        }
    }
    ld->m->info.bytes += bytes;
    if (ld->expert) ld->m->info.expert_bytes += bytes;
    return 0;
}

/* Loads rows [r0, r1) × columns [c0, c1) of "<prefix>.<suffix>" ([rows, cols], see load_into)
 * into a new buffer; *out stays NULL when optional and absent. */
static int load_ws(const loader *ld, const char *suffix, int64_t rows, int64_t cols, int64_t r0, int64_t r1, int64_t c0,
                   int64_t c1, bool optional, float **out) {
    char name[160];
    snprintf(name, sizeof name, "%s%s%s", ld->prefix, ld->prefix[0] ? "." : "", suffix);
    *out = NULL;
    if (optional && !st_find(ld->f, name)) return 0;
    float *p = own_alloc(ld->m, (size_t)(r1 - r0) * (size_t)(c1 - c0));
    if (!p) return RT_ENOMEM;
    int rc = load_into(ld, name, rows, cols, r0, r1, c0, c1, p);
    if (rc) return rc;
    *out = p;
    return 0;
}

static int load_w(const loader *ld, const char *suffix, int64_t rows, int64_t cols, bool optional, float **out) {
    return load_ws(ld, suffix, rows, cols, 0, rows, 0, cols ? cols : 1, optional, out);
}

#define TRY(x) do { int rc_ = (x); if (rc_) return rc_; } while (0)

/* The SwiGLU MLP `what` of intermediate size inter, restricted to columns [i0, i1). */
static int load_mlp(const loader *ld, const char *what, int64_t inter, int64_t i0, int64_t i1, moe_expert *e) {
    int64_t dim = ld->m->c.hidden_size;
    char name[200];
    float *w1, *w3, *w2;
    snprintf(name, sizeof name, "%s.gate_proj.weight", what);
    TRY(load_ws(ld, name, inter, dim, i0, i1, 0, dim, false, &w1));
    snprintf(name, sizeof name, "%s.up_proj.weight", what);
    TRY(load_ws(ld, name, inter, dim, i0, i1, 0, dim, false, &w3));
    snprintf(name, sizeof name, "%s.down_proj.weight", what);
    TRY(load_ws(ld, name, dim, inter, 0, dim, i0, i1, false, &w2));
    *e = (moe_expert){.w1 = w1, .w3 = w3, .w2 = w2};
    return 0;
}

static int load_layer(ds_model *m, const st_file *f, int64_t i, ds_layer *L) {
    const mc_config *c = &m->c;
    loader ld = {.m = m, .f = f};
    snprintf(ld.prefix, sizeof ld.prefix, "model.layers.%lld", (long long)i);
    int64_t D = c->hidden_size, H = c->num_attention_heads, R = c->kv_lora_rank, dr = c->qk_rope_head_dim;
    int64_t dq = c->qk_nope_head_dim + dr, dkv = c->qk_nope_head_dim + c->v_head_dim, dv = c->v_head_dim;
    const ds_layout *lo = &m->lo;
    int64_t h0 = lo->head0, h1 = lo->head0 + lo->n_heads;
    L->n_heads = lo->n_heads;
    TRY(load_w(&ld, "input_layernorm.weight", D, 0, false, &L->attn_norm));
    TRY(load_w(&ld, "post_attention_layernorm.weight", D, 0, false, &L->ffn_norm));
    if (c->q_lora_rank > 0) {
        TRY(load_w(&ld, "self_attn.q_a_proj.weight", c->q_lora_rank, D, false, &L->q_a));
        TRY(load_w(&ld, "self_attn.q_a_proj.bias", c->q_lora_rank, 0, true, &L->q_a_bias));
        TRY(load_w(&ld, "self_attn.q_a_layernorm.weight", c->q_lora_rank, 0, false, &L->q_a_norm));
        TRY(load_ws(&ld, "self_attn.q_b_proj.weight", H * dq, c->q_lora_rank, h0 * dq, h1 * dq, 0, c->q_lora_rank, false,
                    &L->q_b));
    } else {
        TRY(load_ws(&ld, "self_attn.q_proj.weight", H * dq, D, h0 * dq, h1 * dq, 0, D, false, &L->q_b));
    }
    TRY(load_w(&ld, "self_attn.kv_a_proj_with_mqa.weight", R + dr, D, false, &L->kv_a));
    TRY(load_w(&ld, "self_attn.kv_a_proj_with_mqa.bias", R + dr, 0, true, &L->kv_a_bias));
    TRY(load_w(&ld, "self_attn.kv_a_layernorm.weight", R, 0, false, &L->kv_a_norm));
    TRY(load_ws(&ld, "self_attn.kv_b_proj.weight", H * dkv, R, h0 * dkv, h1 * dkv, 0, R, false, &L->kv_b));
    TRY(load_ws(&ld, "self_attn.o_proj.weight", D, H * dv, 0, D, h0 * dv, h1 * dv, false, &L->o));
    if (lo->rank == 0) TRY(load_w(&ld, "self_attn.o_proj.bias", D, 0, true, &L->o_bias));   /* added once */
    L->moe = mc_layer_is_moe(c, i);
    if (!L->moe) {
        L->mlp_inter = lo->n_inter;
        return load_mlp(&ld, "mlp", c->intermediate_size, lo->inter0, lo->inter0 + lo->n_inter, &L->mlp);
    }
    int64_t E = c->n_routed_experts;
    TRY(load_w(&ld, "mlp.gate.weight", E, D, false, &L->router));
    TRY(load_w(&ld, "mlp.gate.e_score_correction_bias", E, 0, true, &L->router_bias));
    L->experts = own_bytes(m, (size_t)E * sizeof(moe_expert));
    if (!L->experts) return RT_ENOMEM;
    char what[64];
    loader lx = ld;
    lx.expert = true;
    for (int64_t e = 0; e < E; e++) {   /* only this rank's experts */
        if (ds_layout_expert_rank(lo, e) != lo->rank) continue;
        snprintf(what, sizeof what, "mlp.experts.%lld", (long long)e);
        TRY(load_mlp(&lx, what, c->moe_intermediate_size, 0, c->moe_intermediate_size, &L->experts[e]));
    }
    if (c->n_shared_experts > 0) {   /* replicated */
        L->mlp_inter = c->moe_intermediate_size * c->n_shared_experts;
        TRY(load_mlp(&ld, "mlp.shared_experts", L->mlp_inter, 0, L->mlp_inter, &L->mlp));
    }
    return 0;
}

static int load_mtp(ds_model *m, const st_file *f) {
    const mc_config *c = &m->c;
    int64_t L = c->num_hidden_layers, D = c->hidden_size, V = c->vocab_size;
    ds_mtp *t = own_bytes(m, sizeof(ds_mtp));
    if (!t) return RT_ENOMEM;
    loader ld = {.m = m, .f = f};
    snprintf(ld.prefix, sizeof ld.prefix, "model.layers.%lld", (long long)L);
    TRY(load_w(&ld, "embed_tokens.weight", V, D, false, &t->embed));
    TRY(load_w(&ld, "enorm.weight", D, 0, false, &t->enorm));
    TRY(load_w(&ld, "hnorm.weight", D, 0, false, &t->hnorm));
    TRY(load_w(&ld, "eh_proj.weight", D, 2 * D, false, &t->eh_proj));
    TRY(load_w(&ld, "shared_head.norm.weight", D, 0, false, &t->norm));
    TRY(load_w(&ld, "shared_head.head.weight", V, D, false, &t->head));
    TRY(load_layer(m, f, L, &t->layer));
    m->mtp = t;
    return 0;
}

static int check_shape(const mc_config *c) {
    if (c->arch != MC_ARCH_DEEPSEEK_V3)
        return rt_fail(RT_EUNSUPPORTED, "model_type %s is not deepseek_v3", c->model_type);
    if (c->qk_rope_head_dim <= 0 || c->qk_rope_head_dim % 2 || c->qk_rope_head_dim > YARN_MAX_DIM)
        return rt_fail(RT_EUNSUPPORTED, "qk_rope_head_dim %lld must be even and <= %d", (long long)c->qk_rope_head_dim,
                       YARN_MAX_DIM);
    if (c->kv_lora_rank <= 0 || c->qk_nope_head_dim <= 0 || c->v_head_dim <= 0)
        return rt_fail(RT_EFORMAT, "kv_lora_rank, qk_nope_head_dim and v_head_dim must be positive");
    return 0;
}

static int load_all(ds_model *m, const char *dir, bool want_mtp, const ds_layout *lo) {
    TRY(mc_load(dir, &m->c));
    const mc_config *c = &m->c;
    TRY(check_shape(c));
    if (!lo) TRY(ds_layout_make(c, 0, 1, &m->lo));
    else {
        ds_layout want;
        TRY(ds_layout_make(c, lo->rank, lo->size, &want));
        if (memcmp(&want, lo, sizeof want)) return rt_fail(RT_EINVAL, "the parallel layout was not made for this config");
        m->lo = *lo;
    }
    TRY(yarn_init(&c->rope, c->qk_rope_head_dim, m->inv_freq, &m->cs_scale));
    m->attn_scale = (float)yarn_softmax_scale(&c->rope, c->qk_nope_head_dim + c->qk_rope_head_dim);
    m->router = (moe_router_cfg){.n_experts = c->n_routed_experts, .n_group = c->n_group, .topk_group = c->topk_group,
                                 .top_k = c->num_experts_per_tok, .norm_topk_prob = c->norm_topk_prob,
                                 .routed_scaling_factor = (float)c->routed_scaling_factor};
    if (c->n_routed_experts > 0) TRY(moe_router_check(&m->router));
    st_file *f = NULL;
    TRY(st_open(dir, &f));
    ck_summary sum;
    int rc = ck_validate(c, f, &sum);
    if (rc) goto out;
    loader ld = {.m = m, .f = f};
    int64_t D = c->hidden_size, V = c->vocab_size;
    int64_t v0 = m->lo.vocab0, v1 = m->lo.vocab0 + m->lo.n_vocab;
    if ((rc = load_ws(&ld, "model.embed_tokens.weight", V, D, v0, v1, 0, D, false, &m->embed))) goto out;
    if ((rc = load_w(&ld, "model.norm.weight", D, 0, false, &m->norm))) goto out;
    if (c->tie_word_embeddings) m->lm_head = m->embed;
    else if ((rc = load_ws(&ld, "lm_head.weight", V, D, v0, v1, 0, D, false, &m->lm_head))) goto out;
    m->layers = own_bytes(m, (size_t)c->num_hidden_layers * sizeof(ds_layer));
    if (!m->layers) { rc = RT_ENOMEM; goto out; }
    for (int64_t i = 0; i < c->num_hidden_layers && !rc; i++) rc = load_layer(m, f, i, &m->layers[i]);
    if (!rc && want_mtp && sum.mtp_present) rc = load_mtp(m, f);
out:
    st_close(f);
    return rc;
}

int ds_load_layout(const char *dir, const ds_load_opts *opts, const ds_layout *lo, rt_comm *comm, ds_model **out) {
    *out = NULL;
    if (lo && (!comm || comm_size(comm) != lo->size || comm_rank(comm) != lo->rank))
        return rt_fail(RT_EINVAL, "the parallel layout is for rank %d of %d, not this communicator's", lo->rank, lo->size);
    ds_model *m = rt_calloc(1, sizeof *m);
    if (!m) return RT_ENOMEM;
    m->pool = opts ? opts->pool : NULL;
    m->comm = lo ? comm : NULL;
    mm_blas_single_thread();   /* the pool is the only parallelism (kernels/matmul.h) */
    int rc = load_all(m, dir, opts && opts->load_mtp, lo);
    if (rc) {
        ds_free(m);
        return rt_errorf(rc, "loading DeepSeek-V3 model %s", dir);
    }
    *out = m;
    return 0;
}

int ds_load(const char *dir, const ds_load_opts *opts, ds_model **out) {
    return ds_load_layout(dir, opts, NULL, NULL, out);
}

const ds_layout *ds_model_layout(const ds_model *m) { return m->comm ? &m->lo : NULL; }
void ds_load_info_get(const ds_model *m, ds_load_info *out) { *out = m->info; }

void ds_free(ds_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_allocs; i++) free(m->allocs[i]);
    free(m->allocs);
    free(m);
}

const mc_config *ds_config(const ds_model *m) { return &m->c; }
bool ds_has_mtp(const ds_model *m) { return m->mtp != NULL; }
int64_t ds_vocab(const ds_model *m) { return m->c.vocab_size; }
int64_t ds_hidden(const ds_model *m) { return m->c.hidden_size; }

int ds_mtp_tensor_shape(const ds_model *m, const char *name, int64_t *rows, int64_t *cols) {
    const mc_config *c = &m->c;
    if (!m->mtp) return rt_fail(RT_ENOTFOUND, "no MTP layer loaded");
    int64_t D = c->hidden_size, V = c->vocab_size;
    const ds_mtp *t = m->mtp;
    struct { const char *n; const float *p; int64_t r, c; } tab[] = {
        {"embed_tokens.weight", t->embed, V, D}, {"enorm.weight", t->enorm, D, 0},
        {"hnorm.weight", t->hnorm, D, 0}, {"eh_proj.weight", t->eh_proj, D, 2 * D},
        {"shared_head.norm.weight", t->norm, D, 0}, {"shared_head.head.weight", t->head, V, D},
        {"self_attn.kv_b_proj.weight", t->layer.kv_b, c->num_attention_heads * (c->qk_nope_head_dim + c->v_head_dim),
         c->kv_lora_rank},
        {"mlp.gate.weight", t->layer.router, c->n_routed_experts, D},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(tab[i].n, name) && tab[i].p) {
            *rows = tab[i].r;
            *cols = tab[i].c;
            return 0;
        }
    return rt_fail(RT_ENOTFOUND, "MTP tensor %s not known", name);
}

/* ---- cache ----------------------------------------------------------------------------- */

int ds_cache_create(const ds_model *m, int64_t capacity, ds_cache **out) {
    *out = NULL;
    if (capacity <= 0) return rt_fail(RT_EINVAL, "cache capacity %lld must be positive", (long long)capacity);
    ds_cache *c = rt_calloc(1, sizeof *c);
    if (!c) return RT_ENOMEM;
    c->cap = capacity;
    c->row = m->c.kv_lora_rank + m->c.qk_rope_head_dim;
    c->main_layers = m->c.num_hidden_layers;
    c->n_slots = c->main_layers + (m->mtp ? 1 : 0);
    size_t n;
    if (!rt_mul_ok((size_t)c->n_slots * (size_t)c->cap, (size_t)c->row, &n) || !(c->data = rt_calloc(n, sizeof(float)))) {
        free(c);
        return rt_errorf(RT_ENOMEM, "latent cache of %lld positions", (long long)capacity);
    }
    *out = c;
    return 0;
}

void ds_cache_free(ds_cache *c) {
    if (!c) return;
    free(c->data);
    free(c);
}

void ds_cache_reset(ds_cache *c) { c->len = c->mtp_len = 0; }
int64_t ds_cache_len(const ds_cache *c) { return c->len; }
int64_t ds_cache_mtp_len(const ds_cache *c) { return c->mtp_len; }
int64_t ds_cache_row(const ds_cache *c) { return c->row; }

/* ---- forward --------------------------------------------------------------------------- */

typedef struct {
    float *x, *h, *qa, *qn, *q, *kv, *ao, *a, *logit, *wt, *mlp, *cos, *sin;
    int32_t *idx, *ctx;
} ds_ws;

static int ws_alloc(const ds_model *m, int64_t n, ds_ws *w, void **block) {
    const mc_config *c = &m->c;
    int64_t D = c->hidden_size, H = c->num_attention_heads, R = c->kv_lora_rank, dr = c->qk_rope_head_dim;
    int64_t dq = c->qk_nope_head_dim + dr, K = c->num_experts_per_tok > 0 ? c->num_experts_per_tok : 1;
    int64_t inter = c->intermediate_size;
    if (c->moe_intermediate_size > inter) inter = c->moe_intermediate_size;
    if (c->moe_intermediate_size * c->n_shared_experts > inter) inter = c->moe_intermediate_size * c->n_shared_experts;
    int64_t qa = c->q_lora_rank > 0 ? c->q_lora_rank : 1;
    int64_t sizes[] = {2 * D, D, qa, qa, H * dq, R + dr, H * c->v_head_dim, D, c->n_routed_experts + 1, K, 3 * inter,
                       dr / 2, dr / 2};
    float **ptrs[] = {&w->x, &w->h, &w->qa, &w->qn, &w->q, &w->kv, &w->ao, &w->a, &w->logit, &w->wt, &w->mlp, &w->cos, &w->sin};
    size_t total = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) total += (size_t)(sizes[i] * n);
    total += (size_t)(K * n + n);   /* idx, ctx */
    float *b = rt_malloc(total * sizeof(float));
    if (!b) return RT_ENOMEM;
    *block = b;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        *ptrs[i] = b;
        b += sizes[i] * n;
    }
    w->idx = (int32_t *)b;
    w->ctx = w->idx + K * n;
    return 0;
}

/* Few rows (decode): split the output features over the pool instead of the rows. */
static void linear(float *y, const float *x, const float *w, const float *b, int64_t M, int64_t N, int64_t K,
                   tp_pool *pool) {
    if (M < 4 * tp_size(pool)) mm_linear_fwd_cols(y, x, w, b, M, N, K, pool);
    else mm_linear_fwd(y, x, w, b, M, N, K, pool);
}

/* One decoder layer on x [n, D] (in place). The n tokens are n_seg segments, one per sequence:
 * segment s is seg_n[s] consecutive tokens whose cache rows are at seg_rows[s] ([cap, row]). */
static int layer_fwd_seg(ds_model *m, const ds_layer *L, float *const *seg_rows, const int64_t *seg_n, int64_t n_seg,
                         int64_t n, const int32_t *pos, ds_attn_mode mode, ds_ws *w) {
    const mc_config *c = &m->c;
    tp_pool *pool = m->pool;
    int64_t D = c->hidden_size, H = L->n_heads, R = c->kv_lora_rank, dr = c->qk_rope_head_dim;
    int64_t dn = c->qk_nope_head_dim, dq = dn + dr, dv = c->v_head_dim;
    float *x = w->x, *h = w->h;
    int rc;

    /* attention */
    rmsnorm_fwd(h, NULL, x, L->attn_norm, n, D, (float)c->rms_norm_eps, pool);
    if (L->q_a) {
        linear(w->qa, h, L->q_a, L->q_a_bias, n, c->q_lora_rank, D, pool);
        rmsnorm_fwd(w->qn, NULL, w->qa, L->q_a_norm, n, c->q_lora_rank, DS_LORA_NORM_EPS, pool);
        linear(w->q, w->qn, L->q_b, NULL, n, H * dq, c->q_lora_rank, pool);
    } else {
        linear(w->q, h, L->q_b, NULL, n, H * dq, D, pool);
    }
    linear(w->kv, h, L->kv_a, L->kv_a_bias, n, R + dr, D, pool);
    yarn_rope_apply(w->q + dn, n, H * dq, H, dq, dr, w->cos, w->sin, c->rope_interleave, pool);
    yarn_rope_apply(w->kv + R, n, R + dr, 1, 0, dr, w->cos, w->sin, c->rope_interleave, pool);
    int64_t row = R + dr;
    mla_dims md = {.n_heads = H, .nope_dim = dn, .rope_dim = dr, .v_dim = dv, .kv_rank = R, .scale = m->attn_scale};
    for (int64_t sg = 0, at = 0; sg < n_seg; at += seg_n[sg], sg++) {
        float *rows = seg_rows[sg];
        int64_t ns = seg_n[sg];
        for (int64_t i = at; i < at + ns; i++) {   /* latent rows: [kv_a_layernorm(c) | rotated k_rope] */
            float *dst = rows + (int64_t)pos[i] * row;
            rmsnorm_fwd(dst, NULL, w->kv + i * row, L->kv_a_norm, 1, R, DS_LORA_NORM_EPS, NULL);
            memcpy(dst + R, w->kv + i * row + R, (size_t)dr * sizeof *dst);
            w->ctx[i] = pos[i] + 1;
        }
        int64_t T = pos[at + ns - 1] + 1;
        ds_attn_mode md_mode = mode == DS_ATTN_AUTO ? (ns > 1 ? DS_ATTN_NAIVE : DS_ATTN_ABSORBED) : mode;
        const float *q = w->q + at * H * dq;
        float *ao = w->ao + at * H * dv;
        rc = md_mode == DS_ATTN_NAIVE ? mla_attn_naive(&md, q, ns, rows, T, L->kv_b, w->ctx + at, ao, pool)
                                      : mla_attn_absorbed(&md, q, ns, rows, T, L->kv_b, w->ctx + at, ao, pool);
        if (rc) return rc;
    }
    linear(w->a, w->ao, L->o, L->o_bias, n, D, H * dv, pool);
    if (m->comm) TRY(ds_par_allreduce(m->comm, w->a, (size_t)(n * D)));   /* the heads' partial sums */
    for (int64_t i = 0; i < n * D; i++) x[i] += w->a[i];

    /* feed-forward */
    rmsnorm_fwd(h, NULL, x, L->ffn_norm, n, D, (float)c->rms_norm_eps, pool);
    if (!L->moe) {
        TRY(moe_mlp_fwd(&L->mlp, D, L->mlp_inter, h, n, w->a, w->mlp, pool));
        if (m->comm) TRY(ds_par_allreduce(m->comm, w->a, (size_t)(n * D)));   /* the columns' partial sums */
    } else {
        int64_t E = c->n_routed_experts, K = c->num_experts_per_tok;
        linear(w->logit, h, L->router, NULL, n, E, D, pool);
        TRY(moe_route(&m->router, w->logit, L->router_bias, n, w->idx, w->wt));
        if (m->comm)
            TRY(ds_par_moe_fwd(m->comm, &m->lo, L->experts, D, c->moe_intermediate_size, L->mlp_inter ? &L->mlp : NULL,
                               L->mlp_inter, h, n, w->idx, w->wt, K, w->a, pool));
        else if (L->mlp_inter > 0) TRY(moe_mlp_fwd(&L->mlp, D, L->mlp_inter, h, n, w->a, w->mlp, pool));
        else memset(w->a, 0, (size_t)(n * D) * sizeof *w->a);
        if (!m->comm) TRY(moe_experts_fwd(L->experts, E, D, c->moe_intermediate_size, h, n, w->idx, w->wt, K, w->a, pool));
    }
    for (int64_t i = 0; i < n * D; i++) x[i] += w->a[i];
    return 0;
}

static int layer_fwd(ds_model *m, const ds_layer *L, float *rows, int64_t n, const int32_t *pos, ds_attn_mode mode,
                     ds_ws *w) {
    return layer_fwd_seg(m, L, &rows, &n, 1, n, pos, mode, w);
}

static int check_positions(const ds_model *m, const ds_cache *cache, int64_t len, const int32_t *pos, int64_t n) {
    if (n <= 0) return rt_fail(RT_EINVAL, "forward of %lld tokens", (long long)n);
    if (pos[0] < 0 || pos[0] > len)
        return rt_fail(RT_EINVAL, "position %d: the cache holds %lld positions (no gaps allowed)", pos[0], (long long)len);
    for (int64_t i = 1; i < n; i++)
        if (pos[i] != pos[0] + i) return rt_fail(RT_EINVAL, "positions must be consecutive (position %lld is %d)", (long long)i, pos[i]);
    if ((int64_t)pos[0] + n > cache->cap)
        return rt_fail(RT_ERANGE, "positions up to %lld exceed the cache capacity %lld", (long long)pos[0] + n,
                       (long long)cache->cap);
    return 0;
}

/* x [n, D] = the embedding rows of tokens (a parallel model holds a vocabulary slice). */
static int embed_tokens(const ds_model *m, const int32_t *tokens, int64_t n, float *x) {
    int64_t D = m->c.hidden_size;
    if (m->comm) return ds_par_embed(m->comm, &m->lo, m->embed, D, tokens, n, x);
    for (int64_t i = 0; i < n; i++) memcpy(x + i * D, m->embed + (int64_t)tokens[i] * D, (size_t)D * sizeof(float));
    return 0;
}

/* logits [n, V] = h [n, D] · lm_headᵀ. */
static int head_logits(const ds_model *m, const float *h, int64_t n, float *logits) {
    const mc_config *c = &m->c;
    if (m->comm) return ds_par_logits(m->comm, &m->lo, m->lm_head, c->hidden_size, c->vocab_size, h, n, logits, m->pool);
    linear(logits, h, m->lm_head, NULL, n, c->vocab_size, c->hidden_size, m->pool);
    return 0;
}

static int check_tokens(const ds_model *m, const int32_t *tok, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (tok[i] < 0 || tok[i] >= m->c.vocab_size)
            return rt_fail(RT_EINVAL, "token %d out of the vocabulary (0..%lld)", tok[i], (long long)m->c.vocab_size - 1);
    return 0;
}

int ds_forward(ds_model *m, ds_cache *cache, const int32_t *tokens, const int32_t *positions, int64_t n,
               ds_attn_mode mode, float *logits_out, float *hidden_out) {
    TRY(check_positions(m, cache, cache->len, positions, n));
    TRY(check_tokens(m, tokens, n));
    const mc_config *c = &m->c;
    int64_t D = c->hidden_size, cap_row = cache->cap * cache->row;
    ds_ws w;
    void *block;
    TRY(ws_alloc(m, n, &w, &block));
    int rc = embed_tokens(m, tokens, n, w.x);
    yarn_tables(w.cos, w.sin, positions, n, m->inv_freq, c->qk_rope_head_dim / 2, m->cs_scale);
    for (int64_t l = 0; l < c->num_hidden_layers && !rc; l++)
        rc = layer_fwd(m, &m->layers[l], cache->data + l * cap_row, n, positions, mode, &w);
    if (!rc) {
        cache->len = positions[0] + n;
        rmsnorm_fwd(w.h, NULL, w.x, m->norm, n, D, (float)c->rms_norm_eps, m->pool);
        if (hidden_out) memcpy(hidden_out, w.h, (size_t)(n * D) * sizeof(float));
        if (logits_out) rc = head_logits(m, w.h, n, logits_out);
    }
    free(block);
    return rc;
}

size_t ds_block_floats(const ds_model *m, int64_t block_size) {
    return (size_t)(m->c.num_hidden_layers * block_size * (m->c.kv_lora_rank + m->c.qk_rope_head_dim));
}

/* Copies positions [p0, p1) of layer l between a sequence's blocks and a contiguous [*, row]
 * buffer (to_blocks: buffer → blocks), a block's run at a time. */
static void move_rows(kv_pool *p, const kv_seq *s, int64_t l, int64_t row, float *buf, int64_t p0, int64_t p1,
                      bool to_blocks) {
    int64_t bs = kv_pool_block_size(p);
    size_t bf = kv_pool_block_floats(p);
    float *data = kv_pool_data(p);
    while (p0 < p1) {
        int64_t off = p0 % bs, n = bs - off < p1 - p0 ? bs - off : p1 - p0;
        float *blk = data + (size_t)s->blocks[p0 / bs] * bf + (size_t)((l * bs + off) * row);
        if (to_blocks) memcpy(blk, buf + p0 * row, (size_t)(n * row) * sizeof(float));
        else memcpy(buf + p0 * row, blk, (size_t)(n * row) * sizeof(float));
        p0 += n;
    }
}

int ds_forward_paged(ds_model *m, kv_pool *cache, kv_seq *const *seqs, const int32_t *n_new, int64_t n_seqs,
                     const int32_t *tokens, ds_attn_mode mode, float *logits, bool all_logits) {
    const mc_config *c = &m->c;
    if (n_seqs <= 0) return rt_fail(RT_EINVAL, "forward of %lld sequences", (long long)n_seqs);
    if (kv_pool_block_floats(cache) != ds_block_floats(m, kv_pool_block_size(cache)))
        return rt_fail(RT_EINVAL, "the KV cache's blocks were not made for this model");
    int64_t T = 0, scratch = 0, row = c->kv_lora_rank + c->qk_rope_head_dim, D = c->hidden_size;
    for (int64_t s = 0; s < n_seqs; s++) {
        if (n_new[s] <= 0) return rt_fail(RT_EINVAL, "sequence %lld: %d new tokens", (long long)s, n_new[s]);
        T += n_new[s];
        scratch += seqs[s]->len + n_new[s];
    }
    TRY(check_tokens(m, tokens, T));
    for (int64_t s = 0; s < n_seqs; s++) TRY(kv_seq_reserve(cache, seqs[s], seqs[s]->len + n_new[s]));
    int32_t *pos = rt_malloc((size_t)T * sizeof(int32_t));
    int64_t *seg_n = rt_malloc((size_t)n_seqs * sizeof(int64_t));
    float **rows = rt_malloc((size_t)n_seqs * sizeof(float *)), *buf = rt_malloc((size_t)(scratch * row) * sizeof(float));
    ds_ws w;
    void *block = NULL;
    int rc = (!pos || !seg_n || !rows || !buf) ? RT_ENOMEM : ws_alloc(m, T, &w, &block);
    if (!rc) {
        for (int64_t s = 0, t = 0, off = 0; s < n_seqs; s++) {
            seg_n[s] = n_new[s];
            rows[s] = buf + off * row;
            off += seqs[s]->len + n_new[s];
            for (int32_t j = 0; j < n_new[s]; j++) pos[t++] = (int32_t)(seqs[s]->len + j);
        }
        rc = embed_tokens(m, tokens, T, w.x);
        yarn_tables(w.cos, w.sin, pos, T, m->inv_freq, c->qk_rope_head_dim / 2, m->cs_scale);
    }
    for (int64_t l = 0; l < c->num_hidden_layers && !rc; l++) {
        for (int64_t s = 0; s < n_seqs; s++) move_rows(cache, seqs[s], l, row, rows[s], 0, seqs[s]->len, false);
        rc = layer_fwd_seg(m, &m->layers[l], rows, seg_n, n_seqs, T, pos, mode, &w);
        for (int64_t s = 0; s < n_seqs && !rc; s++)
            move_rows(cache, seqs[s], l, row, rows[s], seqs[s]->len, seqs[s]->len + n_new[s], true);
    }
    if (!rc) {
        int64_t R = T;
        if (!all_logits) {   /* keep the last token of each sequence */
            R = 0;
            for (int64_t s = 0, t = 0; s < n_seqs; s++) {
                t += n_new[s];
                memmove(w.x + R * D, w.x + (t - 1) * D, (size_t)D * sizeof(float));
                R++;
            }
        }
        rmsnorm_fwd(w.h, NULL, w.x, m->norm, R, D, (float)c->rms_norm_eps, m->pool);
        rc = head_logits(m, w.h, R, logits);
        for (int64_t s = 0; s < n_seqs && !rc; s++) seqs[s]->len += n_new[s];
    }
    free(block);
    free(pos);
    free(seg_n);
    free(rows);
    free(buf);
    return rc;
}

int ds_mtp_forward(ds_model *m, ds_cache *cache, const float *hidden, const int32_t *next_tokens,
                   const int32_t *positions, int64_t n, ds_attn_mode mode, float *logits_out, float *hidden_out) {
    if (!m->mtp) return rt_fail(RT_EINVAL, "the model has no MTP layer loaded");
    if (cache->n_slots <= cache->main_layers) return rt_fail(RT_EINVAL, "the cache has no MTP layer");
    TRY(check_positions(m, cache, cache->mtp_len, positions, n));
    TRY(check_tokens(m, next_tokens, n));
    const mc_config *c = &m->c;
    const ds_mtp *t = m->mtp;
    int64_t D = c->hidden_size;
    ds_ws w;
    void *block;
    TRY(ws_alloc(m, n, &w, &block));
    /* w.x has room for [n, 2D]: [enorm(embed(next)) | hnorm(h)] */
    float *cat = w.x;
    for (int64_t i = 0; i < n; i++) {
        float eps = (float)c->rms_norm_eps;
        rmsnorm_fwd(cat + i * 2 * D, NULL, t->embed + (int64_t)next_tokens[i] * D, t->enorm, 1, D, eps, NULL);
        rmsnorm_fwd(cat + i * 2 * D + D, NULL, hidden + i * D, t->hnorm, 1, D, eps, NULL);
    }
    mm_linear_fwd(w.a, cat, t->eh_proj, NULL, n, D, 2 * D, m->pool);
    memcpy(w.x, w.a, (size_t)(n * D) * sizeof(float));
    yarn_tables(w.cos, w.sin, positions, n, m->inv_freq, c->qk_rope_head_dim / 2, m->cs_scale);
    int rc = layer_fwd(m, &t->layer, cache->data + cache->main_layers * cache->cap * cache->row, n, positions, mode, &w);
    if (!rc) {
        cache->mtp_len = positions[0] + n;
        if (hidden_out) memcpy(hidden_out, w.x, (size_t)(n * D) * sizeof(float));
        rmsnorm_fwd(w.h, NULL, w.x, t->norm, n, D, (float)c->rms_norm_eps, m->pool);
        if (logits_out) mm_linear_fwd(logits_out, w.h, t->head, NULL, n, c->vocab_size, D, m->pool);
    }
    free(block);
    return rc;
}

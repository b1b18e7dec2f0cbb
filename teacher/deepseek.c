/* teacher/deepseek.c — DeepSeek-V3 load, forward, latent cache and MTP (see teacher/deepseek.h). */
#include "teacher/deepseek.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/checkpoint.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "kernels/act.h"
#include "kernels/convert.h"
#include "kernels/fp8.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/mla.h"
#include "kernels/moe.h"
#include "kernels/rope.h"
#include "teacher/deepseek_int.h"
#include "teacher/parallel.h"

#define DS_LORA_NORM_EPS 1e-6f   /* q_a_layernorm / kv_a_layernorm: transformers' default eps */

/* H is the heads this model holds (all of them, or a rank's part: teacher/parallel.h). The
 * projections are ds_mat (teacher/deepseek_int.h): FP8 as stored, or f32. */
typedef struct {
    float *attn_norm, *ffn_norm;         /* [dim] */
    ds_mat q_a;                          /* [q_rank, dim] (q_lora_rank > 0) */
    float *q_a_bias, *q_a_norm;          /* [q_rank], [q_rank] */
    ds_mat q_b;                          /* [H*dq, q_rank], or q_proj [H*dq, dim] */
    ds_mat kv_a;                         /* [R + dr, dim] */
    float *kv_a_bias;                    /* [R + dr] */
    float *kv_a_norm;                    /* [R] */
    ds_mat kv_b;                         /* [H*(dn+dv), R]: widened per call when FP8 (MLA reads f32) */
    ds_mat o;                            /* [dim, H*dv] */
    float *o_bias;                       /* [dim] (rank 0 only) */
    int64_t n_heads;                     /* H */
    ds_mlp mlp;                          /* dense MLP (a rank's columns), or the shared experts */
    int64_t mlp_inter;                   /* its intermediate size; 0: no shared experts */
    bool moe;
    float *router, *router_bias;         /* [E, dim], [E] or NULL */
    ds_mlp *experts;                     /* [E]; experts of other ranks are absent (rows 0) */
} ds_layer;

typedef struct {
    float *embed;                        /* [V, dim] */
    float *enorm, *hnorm;                /* [dim] */
    ds_mat eh_proj;                      /* [dim, 2*dim] */
    ds_layer layer;
    float *norm, *head;                  /* [dim], [V, dim] */
} ds_mtp;

struct ds_model {
    mc_config c;
    tp_pool *pool;
    ds_layout lo;                        /* the one-rank layout for ds_load */
    rt_comm *comm;                       /* borrowed; NULL: not parallel (no collectives) */
    ds_load_info info;
    ds_resident res;                     /* what own_bytes handed out, by kind */
    int64_t kvb_floats;                  /* largest FP8 kv_b, widened per call (0: none) */
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

/* A zeroed, 64-byte aligned buffer that ds_free releases, counted in *kind (m->res). */
static void *own_bytes(ds_model *m, size_t bytes, size_t *kind) {
    if (m->n_allocs == m->cap_allocs && rt_grow((void **)&m->allocs, &m->cap_allocs, m->n_allocs + 1, sizeof(void *)))
        return NULL;
    bytes = (bytes + 63) & ~(size_t)63;
    if (!bytes) bytes = 64;
    void *p = rt_aligned_alloc(64, bytes);
    if (!p) return NULL;
    memset(p, 0, bytes);
    m->allocs[m->n_allocs++] = p;
    *kind += bytes;
    m->res.total += bytes;
    return p;
}

static float *own_alloc(ds_model *m, size_t nelem) {
    size_t bytes;
    if (!rt_mul_ok(nelem, sizeof(float), &bytes)) {
        rt_fail(RT_ENOMEM, "tensor of %zu elements", nelem);
        return NULL;
    }
    return own_bytes(m, bytes, &m->res.f32);
}

/* Drops the pages of the mapping that held a tensor from this process's resident set once it
 * has been copied or converted (MADV_DONTNEED on a read-only file mapping: they stay in the
 * page cache and would be read back if touched again), so loading never holds the checkpoint
 * and the model's copy at once. Best effort: an error only means the pages stay mapped. */
static void drop_pages(const void *p, size_t n) {
    long ps = sysconf(_SC_PAGESIZE);
    if (ps <= 0 || !n) return;
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(ps - 1), e = ((uintptr_t)p + n + (size_t)ps - 1) & ~(uintptr_t)(ps - 1);
    (void)madvise((void *)a, e - a, MADV_DONTNEED);
}

/* The F32 block scales "<name>_scale_inv" of FP8 tensor t ([rows, cols]) after checking them:
 * *br × *bc blocks (the config's weight_block_size), a [ceil(rows/br), ceil(cols/bc)] grid. */
static int fp8_scales(const loader *ld, const char *name, int64_t rows, int64_t cols, const st_tensor **out,
                      int64_t *br, int64_t *bc) {
    char sn[200];
    snprintf(sn, sizeof sn, "%s_scale_inv", name);
    const st_tensor *s = st_find(ld->f, sn);
    const mc_quant *q = &ld->m->c.quant;
    if (!s || s->dtype != RT_DT_F32 || !cols || q->block_rows <= 0 || q->block_cols <= 0)
        return rt_fail(RT_EFORMAT, "tensor %s: FP8 without a usable F32 %s", name, sn);
    int64_t nr = (rows + q->block_rows - 1) / q->block_rows, nc = (cols + q->block_cols - 1) / q->block_cols;
    if (s->ndim != 2 || s->shape[0] != nr || s->shape[1] != nc)
        return rt_fail(RT_EFORMAT, "tensor %s: scale shape is not %lldx%lld", sn, (long long)nr, (long long)nc);
    *out = s;
    *br = q->block_rows;
    *bc = q->block_cols;
    return 0;
}

static int find_shaped(const loader *ld, const char *name, int64_t rows, int64_t cols, const st_tensor **out) {
    const st_tensor *t = st_find(ld->f, name);
    if (!t) return rt_fail(RT_ENOTFOUND, "tensor %s missing", name);
    int nd = cols ? 2 : 1;
    if (t->ndim != nd || t->shape[0] != rows || (nd == 2 && t->shape[1] != cols))
        return rt_fail(RT_EFORMAT, "tensor %s: shape does not match the config", name);
    *out = t;
    return 0;
}

static void count_read(const loader *ld, size_t bytes) {
    ld->m->info.bytes += bytes;
    if (ld->expert) ld->m->info.expert_bytes += bytes;
}

/* Converts rows [r0, r1) × columns [c0, c1) of tensor `name` ([rows, cols]; cols = 0 for a
 * vector, c0 = 0 and c1 = 1 then) to f32 into dst [r1 - r0, c1 - c0], reading only that
 * slice of the mapping (a whole tensor goes through the bulk, pooled conversions). FP8 is
 * widened through its block scales (tensors that are not linear layers: rare). */
static int load_into(const loader *ld, const char *name, int64_t rows, int64_t cols, int64_t r0, int64_t r1, int64_t c0,
                     int64_t c1, float *dst) {
    const st_tensor *t;
    TRY(find_shaped(ld, name, rows, cols, &t));
    int64_t sc = cols ? cols : 1, nc = c1 - c0;
    if (r1 <= r0 || nc <= 0) return 0;   /* an empty slice */
    bool whole = r0 == 0 && r1 == rows && c0 == 0 && c1 == sc;
    size_t es = rt_dtype_size(t->dtype), bytes = (size_t)((r1 - r0) * nc) * es;
    const unsigned char *src = t->data;
    if (t->dtype == RT_DT_F8_E4M3) {
        const st_tensor *s;
        int64_t br, bc;
        TRY(fp8_scales(ld, name, rows, cols, &s, &br, &bc));
        int64_t sb0 = r0 / br, sb1 = (r1 - 1) / br, sc0 = c0 / bc, sc1 = (c1 - 1) / bc;
        bytes += (size_t)((sb1 - sb0 + 1) * (sc1 - sc0 + 1)) * sizeof(float);
        /* the scales may be unaligned in the mapping: copy the grid's rows first */
        int64_t gc = (cols + bc - 1) / bc, gr = sb1 - sb0 + 1;
        float *grid = rt_malloc((size_t)(gr * gc) * sizeof *grid);
        if (!grid) return RT_ENOMEM;
        memcpy(grid, (const unsigned char *)s->data + (size_t)(sb0 * gc) * sizeof *grid, (size_t)(gr * gc) * sizeof *grid);
        fp8_weight w = {.w = src + (size_t)(r0 * cols), .scale = grid, .rows = r1 - r0, .cols = cols, .block_rows = br,
                        .block_cols = bc, .row_off = r0 - sb0 * br, .scale_cols = gc};
        if (whole) fp8_weight_dequant(&w, 0, w.rows, dst, ld->m->pool);
        else {
            float *row = rt_malloc((size_t)cols * sizeof *row);
            if (!row) { free(grid); return RT_ENOMEM; }
            for (int64_t r = 0; r < w.rows; r++) {
                fp8_weight_dequant(&w, r, r + 1, row, NULL);
                memcpy(dst + r * nc, row + c0, (size_t)nc * sizeof *dst);
            }
            free(row);
        }
        free(grid);
        drop_pages(s->data, s->nbytes);
    } else if (whole) {
        int rc = cvt_to_f32(t->dtype, t->data, dst, t->nelem);
        if (rc) return rt_errorf(rc, "tensor %s", name);
    } else {
        for (int64_t r = r0; r < r1; r++) {
            int rc = cvt_to_f32(t->dtype, src + (size_t)(r * sc + c0) * es, dst + (r - r0) * nc, (size_t)nc);
            if (rc) return rt_errorf(rc, "tensor %s", name);
        }
    }
    drop_pages(t->data, t->nbytes);
    count_read(ld, bytes);
    return 0;
}

static void full_name(const loader *ld, const char *suffix, char *name, size_t n) {
    snprintf(name, n, "%s%s%s", ld->prefix, ld->prefix[0] ? "." : "", suffix);
}

/* Loads rows [r0, r1) × columns [c0, c1) of "<prefix>.<suffix>" ([rows, cols], see load_into)
 * into a new f32 buffer; *out stays NULL when optional and absent. */
static int load_ws(const loader *ld, const char *suffix, int64_t rows, int64_t cols, int64_t r0, int64_t r1, int64_t c0,
                   int64_t c1, bool optional, float **out) {
    char name[160];
    full_name(ld, suffix, name, sizeof name);
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

/* A linear layer's weight, rows [r0, r1) × columns [c0, c1) of "<prefix>.<suffix>" ([rows,
 * cols]): FP8 stays e4m3 — the slice's bytes and the block scales that cover it are copied
 * (the slice may start inside a block: row_off/col_off) — anything else becomes f32. */
static int load_mat(const loader *ld, const char *suffix, int64_t rows, int64_t cols, int64_t r0, int64_t r1, int64_t c0,
                    int64_t c1, ds_mat *out) {
    char name[160];
    full_name(ld, suffix, name, sizeof name);
    memset(out, 0, sizeof *out);
    const st_tensor *t;
    TRY(find_shaped(ld, name, rows, cols, &t));
    if (t->dtype == RT_DT_F8_E4M3 && r1 > r0 && c1 > c0) {
        ds_model *m = ld->m;
        const st_tensor *s;
        int64_t br, bc;
        TRY(fp8_scales(ld, name, rows, cols, &s, &br, &bc));
        int64_t nr = r1 - r0, nc = c1 - c0, gc = (cols + bc - 1) / bc;
        int64_t sb0 = r0 / br, sb1 = (r1 - 1) / br, sc0 = c0 / bc, sc1 = (c1 - 1) / bc;
        int64_t snr = sb1 - sb0 + 1, snc = sc1 - sc0 + 1;
        uint8_t *q = own_bytes(m, (size_t)(nr * nc), &m->res.fp8);
        float *sg = own_bytes(m, (size_t)(snr * snc) * sizeof(float), &m->res.scales);
        if (!q || !sg) return RT_ENOMEM;
        const uint8_t *src = t->data;
        if (c0 == 0 && c1 == cols) memcpy(q, src + (size_t)(r0 * cols), (size_t)(nr * nc));
        else
            for (int64_t r = 0; r < nr; r++) memcpy(q + r * nc, src + (size_t)((r0 + r) * cols + c0), (size_t)nc);
        const unsigned char *sd = s->data;
        for (int64_t r = 0; r < snr; r++)
            memcpy(sg + r * snc, sd + (size_t)((sb0 + r) * gc + sc0) * sizeof(float), (size_t)snc * sizeof(float));
        drop_pages(t->data, t->nbytes);
        drop_pages(s->data, s->nbytes);
        count_read(ld, (size_t)(nr * nc) + (size_t)(snr * snc) * sizeof(float));
        out->fp8 = (fp8_weight){.w = q, .scale = sg, .rows = nr, .cols = nc, .block_rows = br, .block_cols = bc,
                                .row_off = r0 - sb0 * br, .col_off = c0 - sc0 * bc, .scale_cols = snc};
        out->rows = nr;
        out->cols = nc;
        return 0;
    }
    float *p;
    TRY(load_ws(ld, suffix, rows, cols, r0, r1, c0, c1, false, &p));
    out->f32 = p;
    out->rows = r1 - r0;
    out->cols = c1 - c0;
    return 0;
}

static int load_m(const loader *ld, const char *suffix, int64_t rows, int64_t cols, ds_mat *out) {
    return load_mat(ld, suffix, rows, cols, 0, rows, 0, cols, out);
}


/* The SwiGLU MLP `what` of intermediate size inter, restricted to columns [i0, i1). */
static int load_mlp(const loader *ld, const char *what, int64_t inter, int64_t i0, int64_t i1, ds_mlp *e) {
    int64_t dim = ld->m->c.hidden_size;
    char name[200];
    snprintf(name, sizeof name, "%s.gate_proj.weight", what);
    TRY(load_mat(ld, name, inter, dim, i0, i1, 0, dim, &e->w1));
    snprintf(name, sizeof name, "%s.up_proj.weight", what);
    TRY(load_mat(ld, name, inter, dim, i0, i1, 0, dim, &e->w3));
    snprintf(name, sizeof name, "%s.down_proj.weight", what);
    TRY(load_mat(ld, name, dim, inter, 0, dim, i0, i1, &e->w2));
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
        TRY(load_m(&ld, "self_attn.q_a_proj.weight", c->q_lora_rank, D, &L->q_a));
        TRY(load_w(&ld, "self_attn.q_a_proj.bias", c->q_lora_rank, 0, true, &L->q_a_bias));
        TRY(load_w(&ld, "self_attn.q_a_layernorm.weight", c->q_lora_rank, 0, false, &L->q_a_norm));
        TRY(load_mat(&ld, "self_attn.q_b_proj.weight", H * dq, c->q_lora_rank, h0 * dq, h1 * dq, 0, c->q_lora_rank,
                     &L->q_b));
    } else {
        TRY(load_mat(&ld, "self_attn.q_proj.weight", H * dq, D, h0 * dq, h1 * dq, 0, D, &L->q_b));
    }
    TRY(load_m(&ld, "self_attn.kv_a_proj_with_mqa.weight", R + dr, D, &L->kv_a));
    TRY(load_w(&ld, "self_attn.kv_a_proj_with_mqa.bias", R + dr, 0, true, &L->kv_a_bias));
    TRY(load_w(&ld, "self_attn.kv_a_layernorm.weight", R, 0, false, &L->kv_a_norm));
    TRY(load_mat(&ld, "self_attn.kv_b_proj.weight", H * dkv, R, h0 * dkv, h1 * dkv, 0, R, &L->kv_b));
    if (!L->kv_b.f32 && L->kv_b.rows * L->kv_b.cols > m->kvb_floats) m->kvb_floats = L->kv_b.rows * L->kv_b.cols;
    TRY(load_mat(&ld, "self_attn.o_proj.weight", D, H * dv, 0, D, h0 * dv, h1 * dv, &L->o));
    if (lo->rank == 0) TRY(load_w(&ld, "self_attn.o_proj.bias", D, 0, true, &L->o_bias));   /* added once */
    L->moe = mc_layer_is_moe(c, i);
    if (!L->moe) {
        L->mlp_inter = lo->n_inter;
        return load_mlp(&ld, "mlp", c->intermediate_size, lo->inter0, lo->inter0 + lo->n_inter, &L->mlp);
    }
    int64_t E = c->n_routed_experts;
    TRY(load_w(&ld, "mlp.gate.weight", E, D, false, &L->router));
    TRY(load_w(&ld, "mlp.gate.e_score_correction_bias", E, 0, true, &L->router_bias));
    L->experts = own_bytes(m, (size_t)E * sizeof(ds_mlp), &m->res.other);
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
    ds_mtp *t = own_bytes(m, sizeof(ds_mtp), &m->res.other);
    if (!t) return RT_ENOMEM;
    loader ld = {.m = m, .f = f};
    snprintf(ld.prefix, sizeof ld.prefix, "model.layers.%lld", (long long)L);
    TRY(load_w(&ld, "embed_tokens.weight", V, D, false, &t->embed));
    TRY(load_w(&ld, "enorm.weight", D, 0, false, &t->enorm));
    TRY(load_w(&ld, "hnorm.weight", D, 0, false, &t->hnorm));
    TRY(load_m(&ld, "eh_proj.weight", D, 2 * D, &t->eh_proj));
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
    m->layers = own_bytes(m, (size_t)c->num_hidden_layers * sizeof(ds_layer), &m->res.other);
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

int ds_load_parallel(const char *dir, const ds_load_opts *opts, rt_comm *comm, ds_model **out) {
    *out = NULL;
    mc_config c;
    int rc = mc_load(dir, &c);
    if (rc) return rt_errorf(rc, "loading DeepSeek-V3 model %s", dir);
    ds_layout lo;
    rc = ds_layout_make(&c, comm_rank(comm), comm_size(comm), &lo);
    if (rc) return rt_errorf(rc, "model %s", dir);
    return ds_load_layout(dir, opts, &lo, comm, out);
}

const ds_layout *ds_model_layout(const ds_model *m) { return m->comm ? &m->lo : NULL; }
void ds_load_info_get(const ds_model *m, ds_load_info *out) { *out = m->info; }
void ds_resident_get(const ds_model *m, ds_resident *out) { *out = m->res; }
size_t ds_resident_bytes(const ds_model *m) { return m->res.total; }

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
    struct { const char *n; bool p; int64_t r, c; } tab[] = {
        {"embed_tokens.weight", t->embed, V, D}, {"enorm.weight", t->enorm, D, 0},
        {"hnorm.weight", t->hnorm, D, 0}, {"eh_proj.weight", ds_mat_present(&t->eh_proj), D, 2 * D},
        {"shared_head.norm.weight", t->norm, D, 0}, {"shared_head.head.weight", t->head, V, D},
        {"self_attn.kv_b_proj.weight", ds_mat_present(&t->layer.kv_b),
         c->num_attention_heads * (c->qk_nope_head_dim + c->v_head_dim), c->kv_lora_rank},
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
    float *kvb;                          /* [kvb_floats]: an FP8 kv_b widened for the MLA kernels */
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
    total += (size_t)m->kvb_floats;
    float *b = rt_malloc(total * sizeof(float));
    if (!b) return RT_ENOMEM;
    *block = b;
    w->kvb = b + (total - (size_t)m->kvb_floats);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        *ptrs[i] = b;
        b += sizes[i] * n;
    }
    w->idx = (int32_t *)b;
    w->ctx = w->idx + K * n;
    return 0;
}

/* out[t] += Σ_j w[t,j] · expert_{idx[t,j]}(x[t]): kernels/moe.h's moe_experts_fwd on ds_mlp
 * experts — each expert once over the tokens that chose it (token order), contributions
 * added in ascending expert id, the order ds_par_moe_fwd reproduces. */
static int experts_fwd(const ds_mlp *experts, int64_t n_experts, int64_t dim, int64_t inter, const float *x, int64_t n,
                       const int32_t *idx, const float *w, int64_t top_k, float *out, tp_pool *pool) {
    int64_t nk = n * top_k;
    for (int64_t i = 0; i < nk; i++)
        if (idx[i] < 0 || idx[i] >= n_experts)
            return rt_fail(RT_EINVAL, "moe: expert id %d out of 0..%lld", idx[i], (long long)n_experts - 1);
    int64_t *count = rt_calloc((size_t)n_experts + 1, sizeof *count);
    int64_t *order = rt_malloc((size_t)(nk > 0 ? nk : 1) * sizeof *order);
    int64_t *fill = rt_malloc((size_t)n_experts * sizeof *fill);
    float *xs = NULL;
    int rc = count && order && fill ? 0 : RT_ENOMEM;
    if (rc) goto done;
    for (int64_t i = 0; i < nk; i++) count[idx[i] + 1]++;
    int64_t maxm = 0;
    for (int64_t e = 0; e < n_experts; e++) {
        if (count[e + 1] > maxm) maxm = count[e + 1];
        count[e + 1] += count[e];            /* count[e] = first slot of expert e */
    }
    if (!(xs = rt_malloc((size_t)(maxm * (dim * 2 + inter * 3)) * sizeof *xs + 1))) { rc = RT_ENOMEM; goto done; }
    memcpy(fill, count, (size_t)n_experts * sizeof *fill);
    for (int64_t i = 0; i < nk; i++) order[fill[idx[i]]++] = i;   /* token-major, so rows stay sorted */
    float *ys = xs + maxm * dim, *h = ys + maxm * dim;
    for (int64_t e = 0; e < n_experts && !rc; e++) {
        int64_t b = count[e], m = count[e + 1] - b;
        if (!m) continue;
        for (int64_t r = 0; r < m; r++) memcpy(xs + r * dim, x + (order[b + r] / top_k) * dim, (size_t)dim * sizeof *xs);
        if ((rc = ds_mlp_fwd(&experts[e], dim, inter, xs, m, ys, h, pool))) break;
        for (int64_t r = 0; r < m; r++) {
            int64_t slot = order[b + r];
            float wt = w[slot], *o = out + (slot / top_k) * dim;
            const float *y = ys + r * dim;
            for (int64_t j = 0; j < dim; j++) o[j] += wt * y[j];
        }
    }
done:
    free(count);
    free(order);
    free(fill);
    free(xs);
    return rc;
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
    if (ds_mat_present(&L->q_a)) {
        ds_linear(w->qa, h, &L->q_a, L->q_a_bias, n, pool);
        rmsnorm_fwd(w->qn, NULL, w->qa, L->q_a_norm, n, c->q_lora_rank, DS_LORA_NORM_EPS, pool);
        ds_linear(w->q, w->qn, &L->q_b, NULL, n, pool);
    } else {
        ds_linear(w->q, h, &L->q_b, NULL, n, pool);
    }
    ds_linear(w->kv, h, &L->kv_a, L->kv_a_bias, n, pool);
    const float *kv_b = L->kv_b.f32;
    if (!kv_b) {   /* FP8: the MLA kernels read f32, so widen it for this call */
        fp8_weight_dequant(&L->kv_b.fp8, 0, L->kv_b.rows, w->kvb, pool);
        kv_b = w->kvb;
    }
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
        rc = md_mode == DS_ATTN_NAIVE ? mla_attn_naive(&md, q, ns, rows, T, kv_b, w->ctx + at, ao, pool)
                                      : mla_attn_absorbed(&md, q, ns, rows, T, kv_b, w->ctx + at, ao, pool);
        if (rc) return rc;
    }
    ds_linear(w->a, w->ao, &L->o, L->o_bias, n, pool);
    if (m->comm) TRY(ds_par_allreduce(m->comm, w->a, (size_t)(n * D)));   /* the heads' partial sums */
    for (int64_t i = 0; i < n * D; i++) x[i] += w->a[i];

    /* feed-forward */
    rmsnorm_fwd(h, NULL, x, L->ffn_norm, n, D, (float)c->rms_norm_eps, pool);
    if (!L->moe) {
        TRY(ds_mlp_fwd(&L->mlp, D, L->mlp_inter, h, n, w->a, w->mlp, pool));
        if (m->comm) TRY(ds_par_allreduce(m->comm, w->a, (size_t)(n * D)));   /* the columns' partial sums */
    } else {
        int64_t E = c->n_routed_experts, K = c->num_experts_per_tok;
        ds_linear_f32(w->logit, h, L->router, NULL, n, E, D, pool);
        TRY(moe_route(&m->router, w->logit, L->router_bias, n, w->idx, w->wt));
        if (m->comm)
            TRY(ds_par_moe_fwd(m->comm, &m->lo, L->experts, D, c->moe_intermediate_size, L->mlp_inter ? &L->mlp : NULL,
                               L->mlp_inter, h, n, w->idx, w->wt, K, w->a, pool));
        else if (L->mlp_inter > 0) TRY(ds_mlp_fwd(&L->mlp, D, L->mlp_inter, h, n, w->a, w->mlp, pool));
        else memset(w->a, 0, (size_t)(n * D) * sizeof *w->a);
        if (!m->comm) TRY(experts_fwd(L->experts, E, D, c->moe_intermediate_size, h, n, w->idx, w->wt, K, w->a, pool));
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
    ds_linear_f32(logits, h, m->lm_head, NULL, n, c->vocab_size, c->hidden_size, m->pool);
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
    ds_linear_rows(w.a, cat, &t->eh_proj, n, m->pool);
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

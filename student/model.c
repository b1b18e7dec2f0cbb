/* student/model.c — parameters, loading/saving, and the forward/backward of the dense decoder. */
#include "student/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/checkpoint.h"
#include "core/clock.h"
#include "core/fsutil.h"
#include "core/json.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "kernels/act.h"
#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/embed.h"
#include "kernels/loss.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/rope.h"
#include "student/rng.h"

/* ---- layout ---------------------------------------------------------------------------- */

static void layer_field(sm_layer_off *l, const char *field, int64_t off) {
    static const struct { const char *name; size_t at; } map[] = {
        {"input_layernorm.weight", offsetof(sm_layer_off, attn_norm)},
        {"self_attn.q_proj.weight", offsetof(sm_layer_off, wq)},
        {"self_attn.k_proj.weight", offsetof(sm_layer_off, wk)},
        {"self_attn.v_proj.weight", offsetof(sm_layer_off, wv)},
        {"self_attn.o_proj.weight", offsetof(sm_layer_off, wo)},
        {"self_attn.q_proj.bias", offsetof(sm_layer_off, bq)},
        {"self_attn.k_proj.bias", offsetof(sm_layer_off, bk)},
        {"self_attn.v_proj.bias", offsetof(sm_layer_off, bv)},
        {"self_attn.o_proj.bias", offsetof(sm_layer_off, bo)},
        {"post_attention_layernorm.weight", offsetof(sm_layer_off, mlp_norm)},
        {"mlp.gate_proj.weight", offsetof(sm_layer_off, wg)},
        {"mlp.up_proj.weight", offsetof(sm_layer_off, wu)},
        {"mlp.down_proj.weight", offsetof(sm_layer_off, wd)},
        {"mlp.gate_proj.bias", offsetof(sm_layer_off, bg)},
        {"mlp.up_proj.bias", offsetof(sm_layer_off, bu)},
        {"mlp.down_proj.bias", offsetof(sm_layer_off, bd)},
        {"self_attn.q_norm.weight", offsetof(sm_layer_off, qn)},
        {"self_attn.k_norm.weight", offsetof(sm_layer_off, kn)},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcmp(field, map[i].name)) {
            *(int64_t *)((char *)l + map[i].at) = off;
            return;
        }
    RT_ASSERT(false, "unexpected tensor field %s", field);
}

/* name is one of mc_expected_tensors(): anything else is a bug */
static void place_tensor(sm_model *m, const char *name, int64_t off) {
    if (!strcmp(name, "model.embed_tokens.weight")) m->embed = off;
    else if (!strcmp(name, "model.norm.weight")) m->norm_f = off;
    else if (!strcmp(name, "lm_head.weight")) m->lm_head = off;
    else {
        long long layer = -1;
        int used = 0;
        int got = sscanf(name, "model.layers.%lld.%n", &layer, &used);
        RT_ASSERT(got == 1 && used > 0 && layer >= 0 && layer < m->L, "unexpected tensor %s", name);
        layer_field(&m->layers[layer], name + used, off);
    }
}

static int build_layout(sm_model *m) {
    const mc_config *c = &m->cfg;
    if (c->arch == MC_ARCH_DEEPSEEK_V3)
        return rt_fail(RT_EUNSUPPORTED, "the student is a dense llama/qwen2/qwen3 model; deepseek_v3 is not supported");
    mc_dims d = mc_dense_dims(c);
    m->D = d.D, m->F = d.F, m->L = d.L, m->V = d.V, m->Hq = d.Hq, m->Hkv = d.Hkv, m->hd = d.hd;
    mc_tensor_spec *spec;
    size_t n;
    int rc = mc_expected_tensors(c, &spec, &n);
    if (rc) return rc;
    m->tensors = rt_calloc(n, sizeof *m->tensors);
    m->layers = rt_malloc((size_t)m->L * sizeof *m->layers);
    m->inv_freq = rt_malloc((size_t)(m->hd / 2) * sizeof(float));
    if (!m->tensors || !m->layers || !m->inv_freq) { free(spec); return RT_ENOMEM; }
    memset(m->layers, 0xff, (size_t)m->L * sizeof *m->layers);   /* every offset −1 */
    m->lm_head = -1;
    int64_t off = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (spec[i].group != MC_GROUP_REQUIRED) continue;
        sm_tensor *t = &m->tensors[m->n_tensors++];
        snprintf(t->name, sizeof t->name, "%s", spec[i].name);
        t->ndim = spec[i].ndim;
        t->shape[0] = spec[i].shape[0];
        t->shape[1] = spec[i].ndim == 2 ? spec[i].shape[1] : 1;
        t->numel = t->shape[0] * t->shape[1];
        t->offset = off;
        t->decay = spec[i].ndim == 2;
        off += (t->numel + 15) / 16 * 16;   /* 64-byte aligned tensors */
        place_tensor(m, t->name, t->offset);
    }
    free(spec);
    if (rc) return rc;
    if (m->lm_head < 0) m->lm_head = m->embed;
    m->n_params = off;
    return rope_inv_freq(&c->rope, m->hd, m->inv_freq);
}

/* The whole flat params and grads, zero. */
static int alloc_flat(sm_model *m) {
    size_t n = (size_t)m->n_params;
    m->params = rt_aligned_alloc(64, n * sizeof(float));
    m->grads = rt_aligned_alloc(64, n * sizeof(float));
    if (!m->params || !m->grads) return RT_ENOMEM;
    memset(m->params, 0, n * sizeof(float));
    memset(m->grads, 0, n * sizeof(float));
    return 0;
}

/* The layout, and (flat) the whole params and grads. */
static int model_new(const json_t *config, bool flat, sm_model **out) {
    *out = NULL;
    sm_model *m = rt_calloc(1, sizeof *m);
    if (!m) return RT_ENOMEM;
    int rc = mc_parse(config, &m->cfg);
    if (!rc) {
        m->config_json = json_deep_copy(config);
        rc = m->config_json ? build_layout(m) : rt_fail(RT_ENOMEM, "copying the config");
    }
    if (!rc && flat) rc = alloc_flat(m);
    if (rc) { sm_free(m); return rc; }
    *out = m;
    return 0;
}

int sm_pad_flat(sm_model *m, int64_t n_alloc) {
    if (n_alloc < m->n_params) return rt_fail(RT_EINVAL, "sm_pad_flat: %lld < %lld parameters", (long long)n_alloc,
                                             (long long)m->n_params);
    float *p = rt_aligned_alloc(64, (size_t)n_alloc * sizeof(float)), *g = rt_aligned_alloc(64, (size_t)n_alloc * sizeof(float));
    if (!p || !g) { free(p); free(g); return RT_ENOMEM; }
    memcpy(p, m->params, (size_t)m->n_params * sizeof(float));
    memset(p + m->n_params, 0, (size_t)(n_alloc - m->n_params) * sizeof(float));
    memset(g, 0, (size_t)n_alloc * sizeof(float));
    free(m->params);
    free(m->grads);
    m->params = p;
    m->grads = g;
    return 0;
}

void sm_free(sm_model *m) {
    if (!m) return;
    json_decref(m->config_json);
    free(m->source);
    free(m->params);
    free(m->grads);
    free(m->tensors);
    free(m->layers);
    free(m->inv_freq);
    free(m);
}

const sm_tensor *sm_find(const sm_model *m, const char *name) {
    for (size_t i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

static bool is_residual_out(const char *name) {
    return strstr(name, "o_proj.weight") || strstr(name, "down_proj.weight");
}

/* The normal(0, std) draws of sm_create_random: tensor after tensor in flat order, a matrix's
 * elements one draw each from one stream; vectors draw nothing (norms 1, biases 0). The std
 * depends on the tensor's name only, so it is looked up once per tensor, not per element. */
static double init_std(const sm_tensor *t, const sm_model *m) {
    return is_residual_out(t->name) ? 0.02 / sqrt(2.0 * (double)m->L) : 0.02;
}

static void init_draw(float *dst, int64_t n, double std, sr_rng *r) {
    for (int64_t k = 0; k < n; k++) dst[k] = (float)(sr_normal(r) * std);
}

int sm_create_random(const json_t *config, uint64_t seed, sm_model **out) {
    int rc = model_new(config, true, out);
    if (rc) return rc;
    sm_model *m = *out;
    m->seed = seed;
    sr_rng r;
    sr_seed(&r, seed);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const sm_tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        if (t->ndim == 1) {
            float v = strstr(t->name, "norm") ? 1.0f : 0.0f;
            for (int64_t j = 0; j < t->numel; j++) p[j] = v;
            continue;
        }
        init_draw(p, t->numel, init_std(t, m), &r);
    }
    return 0;
}

int sm_open_random(const json_t *config, uint64_t seed, sm_model **out) {
    int rc = model_new(config, false, out);
    if (!rc) (*out)->seed = seed;
    return rc;
}

/* The checkpoint's safetensors (model.safetensors when present: a training checkpoint
 * directory also holds optimizer.safetensors), checked against the model's architecture and
 * tensor list. */
static int open_weights(const sm_model *m, const char *dir, st_file **out) {
    char *single = rt_path_join(dir, "model.safetensors");
    if (!single) return RT_ENOMEM;
    st_file *f;
    int rc = st_open(rt_is_file(single) ? single : dir, &f);
    free(single);
    if (rc) return rc;
    ck_summary sum;
    rc = ck_validate(&m->cfg, f, &sum);
    for (size_t i = 0; i < m->n_tensors && !rc; i++) {
        const sm_tensor *t = &m->tensors[i];
        const st_tensor *s = st_find(f, t->name);
        if (!s) rc = rt_fail(RT_EFORMAT, "tensor %s missing", t->name);
        else if ((int64_t)s->nelem != t->numel)
            rc = rt_fail(RT_EFORMAT, "tensor %s: %zu elements, %lld expected", t->name, s->nelem, (long long)t->numel);
    }
    if (rc) st_close(f);
    else *out = f;
    return rc;
}

/* The model of dir's config.json, its layout only (flat: and the whole buffers). */
static int model_of_dir(const char *dir, bool flat, sm_model **out) {
    char *cpath = rt_path_join(dir, "config.json");
    if (!cpath) return RT_ENOMEM;
    json_t *cj;
    int rc = rt_json_load_file(cpath, &cj);
    free(cpath);
    if (rc) return rc;
    rc = model_new(cj, flat, out);
    json_decref(cj);
    return rc;
}

int sm_load(const char *dir, sm_model **out) {
    *out = NULL;
    sm_model *m = NULL;
    int rc = model_of_dir(dir, true, &m);
    if (rc) return rt_errorf(rc, "loading %s", dir);
    st_file *f = NULL;
    rc = open_weights(m, dir, &f);
    for (size_t i = 0; i < m->n_tensors && !rc; i++) {
        const sm_tensor *t = &m->tensors[i];
        const st_tensor *s = st_find(f, t->name);
        rc = cvt_to_f32(s->dtype, s->data, m->params + t->offset, s->nelem);
    }
    st_close(f);
    if (rc) { sm_free(m); return rt_errorf(rc, "loading %s", dir); }
    *out = m;
    return 0;
}

int sm_open(const char *dir, sm_model **out) {
    *out = NULL;
    sm_model *m = NULL;
    int rc = model_of_dir(dir, false, &m);
    st_file *f = NULL;
    if (!rc) rc = open_weights(m, dir, &f);   /* checked now, read later (sm_reader) */
    st_close(f);
    if (!rc && !(m->source = rt_strdup(dir))) rc = RT_ENOMEM;
    if (rc) {
        sm_free(m);
        return rt_errorf(rc, "loading %s", dir);
    }
    *out = m;
    return 0;
}

/* ---- reading flat ranges of a lazy model's weights ------------------------------------- */

struct sm_reader {
    const sm_model *m;
    st_file *f;          /* the checkpoint's weights; NULL: drawn from the seed */
    /* drawn: the stream's state at the start of each tensor passed so far (at[i] valid for
     * i ≤ known), and the state `r` right before element `j` of tensor `i` */
    sr_rng *at;
    size_t known, i;
    int64_t j;
    sr_rng r;
};

int sm_reader_open(const sm_model *m, sm_reader **out) {
    *out = NULL;
    sm_reader *r = rt_calloc(1, sizeof *r);
    if (!r) return RT_ENOMEM;
    r->m = m;
    int rc = 0;
    if (m->source) rc = open_weights(m, m->source, &r->f);
    else if (!(r->at = rt_malloc((m->n_tensors + 1) * sizeof *r->at))) rc = RT_ENOMEM;
    else sr_seed(&r->at[0], m->seed), r->r = r->at[0];
    if (rc) { sm_reader_close(r); return rt_errorf(rc, "reading the weights of %s", m->source ? m->source : "the model"); }
    *out = r;
    return 0;
}

void sm_reader_close(sm_reader *r) {
    if (!r) return;
    st_close(r->f);
    free(r->at);
    free(r);
}

/* Drawn weights: move the stream to element j of matrix i (forward from where it is, or from
 * the nearest tensor start already passed), then draw n values into dst. */
static void draw(sm_reader *r, size_t i, int64_t j, int64_t n, float *dst) {
    const sm_model *m = r->m;
    if (i < r->i || (i == r->i && j < r->j)) {   /* back: restart at tensor i's start (known: passed) */
        r->i = i, r->j = 0, r->r = r->at[i];
    }
    while (r->i < i) {   /* pass whole tensors */
        const sm_tensor *t = &m->tensors[r->i];
        if (t->ndim == 2)
            for (int64_t k = r->j; k < t->numel; k++) (void)sr_normal(&r->r);
        r->i++, r->j = 0;
        if (r->i > r->known) r->at[r->i] = r->r, r->known = r->i;
    }
    for (; r->j < j; r->j++) (void)sr_normal(&r->r);
    const sm_tensor *t = &m->tensors[i];
    init_draw(dst, n, init_std(t, m), &r->r);
    r->j += n;
}

int sm_reader_read(sm_reader *r, int64_t lo, int64_t hi, float *dst) {
    const sm_model *m = r->m;
    if (lo < 0 || hi > m->n_params || lo > hi)
        return rt_fail(RT_EINVAL, "weights [%lld, %lld) outside the model's %lld", (long long)lo, (long long)hi,
                       (long long)m->n_params);
    memset(dst, 0, (size_t)(hi - lo) * sizeof(float));   /* the alignment gaps */
    for (size_t i = 0; i < m->n_tensors; i++) {
        const sm_tensor *t = &m->tensors[i];
        int64_t a = t->offset > lo ? t->offset : lo, b = t->offset + t->numel < hi ? t->offset + t->numel : hi;
        if (a >= b) continue;
        float *d = dst + (a - lo);
        int64_t j = a - t->offset, n = b - a;
        if (r->f) {
            const st_tensor *s = st_find(r->f, t->name);
            int rc = cvt_to_f32(s->dtype, (const char *)s->data + (size_t)j * rt_dtype_size(s->dtype), d, (size_t)n);
            if (rc) return rt_errorf(rc, "reading %s of %s", t->name, m->source);
        } else if (t->ndim == 1) {
            float v = strstr(t->name, "norm") ? 1.0f : 0.0f;
            for (int64_t k = 0; k < n; k++) d[k] = v;
        } else {
            draw(r, i, j, n, d);
        }
    }
    return 0;
}

int sm_materialize(sm_model *m) {
    if (m->params) return 0;
    sm_reader *r;
    int rc = alloc_flat(m);
    if (!rc) rc = sm_reader_open(m, &r);
    if (!rc) {
        rc = sm_reader_read(r, 0, m->n_params, m->params);
        sm_reader_close(r);
    }
    if (rc) {
        free(m->params), free(m->grads);
        m->params = m->grads = NULL;
    }
    return rc;
}

typedef struct {
    const sm_model *m;
    int (*fetch)(void *ctx, const sm_tensor *t, float *dst);
    void *ctx;
    float *f32;       /* [largest tensor] when fetching */
    uint16_t *bf;     /* [largest tensor] for BF16 */
} save_source;

static int save_get(void *ctx, size_t i, const void **data) {
    save_source *s = ctx;
    const sm_tensor *t = &s->m->tensors[i];
    const float *src = s->f32;   /* fetching: params may be NULL (ZeRO-3) */
    if (s->fetch) {
        int rc = s->fetch(s->ctx, t, s->f32);
        if (rc) return rc;
    } else {
        src = s->m->params + t->offset;
    }
    if (s->bf) cvt_f32_to_bf16(src, s->bf, (size_t)t->numel);
    *data = s->bf ? (const void *)s->bf : (const void *)src;
    return 0;
}

int sm_save(const sm_model *m, const char *dir, rt_dtype dtype) { return sm_save_sharded(m, dir, dtype, 0, NULL, NULL); }

int sm_save_fetch(const sm_model *m, const char *dir, rt_dtype dtype, int (*fetch)(void *ctx, const sm_tensor *t, float *dst),
                  void *ctx) {
    return sm_save_sharded(m, dir, dtype, 0, fetch, ctx);
}

int sm_save_sharded(const sm_model *m, const char *dir, rt_dtype dtype, int64_t max_shard_bytes,
                    int (*fetch)(void *ctx, const sm_tensor *t, float *dst), void *ctx) {
    if (dtype != RT_DT_F32 && dtype != RT_DT_BF16) return rt_fail(RT_EINVAL, "model dtype must be F32 or BF16");
    if (max_shard_bytes <= 0) max_shard_bytes = SM_SHARD_BYTES;
    st_wtensor *ts = rt_calloc(m->n_tensors, sizeof *ts);
    if (!ts) return RT_ENOMEM;
    int64_t big = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const sm_tensor *t = &m->tensors[i];
        if (t->numel > big) big = t->numel;
        ts[i] = (st_wtensor){t->name, dtype, t->ndim, {t->shape[0], t->shape[1]}, NULL};
    }
    save_source src = {m, fetch, ctx, NULL, NULL};
    if ((fetch && !(src.f32 = rt_malloc((size_t)big * sizeof(float)))) ||
        (dtype == RT_DT_BF16 && !(src.bf = rt_malloc((size_t)big * sizeof(uint16_t))))) {
        free(src.f32);
        free(ts);
        return RT_ENOMEM;
    }
    char *cpath = rt_path_join(dir, "config.json");
    json_t *meta = json_pack("{s:s}", "format", "pt");
    json_t *cfg = json_deep_copy(m->config_json);
    int rc = (!cpath || !meta || !cfg) ? rt_fail(RT_ENOMEM, "saving the model") : 0;
    if (!rc) rc = st_write_sharded(dir, ts, m->n_tensors, max_shard_bytes, meta, save_get, &src);
    if (!rc) {
        json_object_set_new(cfg, "torch_dtype", json_string(dtype == RT_DT_BF16 ? "bfloat16" : "float32"));
        json_object_del(cfg, "dtype");
        char *txt = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        rc = txt ? rt_atomic_write_text(cpath, txt) : rt_fail(RT_ENOMEM, "serializing config.json");
        free(txt);
    }
    json_decref(cfg);
    json_decref(meta);
    free(cpath);
    free(src.f32);
    free(src.bf);
    free(ts);
    return rc ? rt_errorf(rc, "saving the model to %s", dir) : 0;
}

/* ---- batches --------------------------------------------------------------------------- */

int64_t sm_batch_targets(const int32_t *tokens, const uint8_t *mask, int64_t n_seq, int64_t seq_len,
                         const shard_doc *const *docs, const size_t *n_docs, int32_t *doc_start, int32_t *pos,
                         int32_t *target) {
    int64_t count = 0;
    for (int64_t s = 0; s < n_seq; s++) {
        int64_t base = s * seq_len;
        for (int64_t t = 0; t < seq_len; t++) {   /* padding: a document of its own */
            doc_start[base + t] = (int32_t)(base + t);
            pos[base + t] = 0;
            target[base + t] = -1;
        }
        for (size_t d = 0; d < n_docs[s]; d++) {
            int64_t a = base + docs[s][d].start, e = a + docs[s][d].len;
            for (int64_t t = a; t < e; t++) {
                doc_start[t] = (int32_t)a;
                pos[t] = (int32_t)(t - a);
                if (t + 1 < e && mask[t + 1]) {
                    target[t] = tokens[t + 1];
                    count++;
                }
            }
        }
    }
    return count;
}

/* ---- activations ----------------------------------------------------------------------- */

typedef struct {
    float *xn1, *q, *k, *v, *att, *lse, *mid, *xn2, *gate, *up, *rstd1, *rstd2;
    float *qr, *kr, *rq, *rk;   /* qk_norm: q, k before their per-head norm [T, Hq·hd], [T, Hkv·hd]; its rstd [T·H] */
} layer_acts;

struct sm_acts {
    int64_t max_T;
    bool ckpt;
    float *mem;
    float *res;        /* [(L+1), T, D]: the residual stream entering each layer, and the last output */
    layer_acts *la;    /* [L], or [1] with checkpointing */
    float *xf, *rstdf, *dxf;          /* final norm out, its rstd, its gradient */
    float *dres, *tmp, *act, *dact, *dgate, *dup, *dxn, *datt, *dq, *dk, *dv;
    float *dqr, *dkr;                 /* qk_norm: ∂L/∂ q, k before their per-head norm */
    float *attn_ws;                   /* attention scratch for attn_ws_threads threads */
    int attn_ws_threads;
    float *cos_t, *sin_t;             /* [T, hd/2] */
    ce_workspace ce;
    const kd_spec *kd;       /* sm_acts_set_kd (borrowed) */
    double ce_sum, kd_sum;   /* of the last pass */
    bool in_bwd;
    double prof[2 * SM_PROF_COUNT];   /* seconds: forward, then backward */
};

void sm_acts_profile(const sm_acts *a, double fwd[SM_PROF_COUNT], double bwd[SM_PROF_COUNT]) {
    memcpy(fwd, a->prof, sizeof a->prof / 2);
    memcpy(bwd, a->prof + SM_PROF_COUNT, sizeof a->prof / 2);
}

void sm_acts_profile_reset(sm_acts *a) { memset(a->prof, 0, sizeof a->prof); }

const char *sm_prof_name(int cat) {
    static const char *names[SM_PROF_COUNT] = {"embedding", "rmsnorm", "linear (GEMM)", "rope", "attention",
                                               "swiglu", "lm head + loss", "residual adds"};
    return cat >= 0 && cat < SM_PROF_COUNT ? names[cat] : "?";
}

/* Places every buffer at a 64-byte aligned offset from base; with base == NULL it only counts. */
typedef struct {
    float *base;
    size_t used;
} carver;

static float *carve(carver *c, int64_t n) {
    float *r = c->base ? c->base + c->used : NULL;
    c->used += ((size_t)n + 15) / 16 * 16;
    return r;
}

static void carve_layer(const sm_model *m, int64_t T, carver *c, layer_acts *l) {
    l->xn1 = carve(c, T * m->D);
    l->q = carve(c, T * m->Hq * m->hd);
    l->k = carve(c, T * m->Hkv * m->hd);
    l->v = carve(c, T * m->Hkv * m->hd);
    l->att = carve(c, T * m->Hq * m->hd);
    l->lse = carve(c, T * m->Hq);
    l->mid = carve(c, T * m->D);
    l->xn2 = carve(c, T * m->D);
    l->gate = carve(c, T * m->F);
    l->up = carve(c, T * m->F);
    l->rstd1 = carve(c, T);
    l->rstd2 = carve(c, T);
    int64_t qk = m->cfg.qk_norm ? 1 : 0;   /* the per-head norm's inputs and rstd: qwen3 only */
    l->qr = carve(c, qk * T * m->Hq * m->hd);
    l->kr = carve(c, qk * T * m->Hkv * m->hd);
    l->rq = carve(c, qk * T * m->Hq);
    l->rk = carve(c, qk * T * m->Hkv);
}

static size_t carve_all(const sm_model *m, sm_acts *a, float *base) {
    int64_t T = a->max_T, D = m->D, qd = m->Hq * m->hd, kd = m->Hkv * m->hd, nl = a->ckpt ? 1 : m->L;
    carver c = {base, 0};
    a->res = carve(&c, (m->L + 1) * T * D);
    for (int64_t i = 0; i < nl; i++) carve_layer(m, T, &c, &a->la[i]);
    a->xf = carve(&c, T * D);
    a->dxf = carve(&c, T * D);
    a->rstdf = carve(&c, T);
    a->dres = carve(&c, T * D);
    a->tmp = carve(&c, T * D);
    a->act = carve(&c, T * m->F);
    a->dact = carve(&c, T * m->F);
    a->dgate = carve(&c, T * m->F);
    a->dup = carve(&c, T * m->F);
    a->dxn = carve(&c, T * D);
    a->datt = carve(&c, T * qd);
    a->dq = carve(&c, T * qd);
    a->dk = carve(&c, T * kd);
    a->dv = carve(&c, T * kd);
    a->dqr = carve(&c, m->cfg.qk_norm ? T * qd : 0);
    a->dkr = carve(&c, m->cfg.qk_norm ? T * kd : 0);
    a->cos_t = carve(&c, T * m->hd / 2);
    a->sin_t = carve(&c, T * m->hd / 2);
    return c.used;
}

int sm_acts_create(const sm_model *m, int64_t max_tokens, bool checkpoint_layers, int64_t ce_chunk, sm_acts **out) {
    *out = NULL;
    if (max_tokens <= 0 || max_tokens > INT32_MAX) return rt_fail(RT_EINVAL, "batch of %lld tokens", (long long)max_tokens);
    sm_acts *a = rt_calloc(1, sizeof *a);
    if (!a) return RT_ENOMEM;
    a->max_T = max_tokens;
    a->ckpt = checkpoint_layers;
    a->la = rt_calloc((size_t)(checkpoint_layers ? 1 : m->L), sizeof *a->la);
    size_t total = a->la ? carve_all(m, a, NULL) : 0;
    a->mem = a->la ? rt_aligned_alloc(64, total * sizeof(float)) : NULL;
    int64_t chunk = ce_chunk > 0 ? ce_chunk : (int64_t)((64u << 20) / sizeof(float)) / m->V;
    if (chunk < 1) chunk = 1;
    if (chunk > max_tokens) chunk = max_tokens;
    int rc = !a->mem ? RT_ENOMEM : ce_workspace_init(&a->ce, chunk, m->V, m->D);
    if (rc) { sm_acts_free(a); return rt_errorf(rc, "activations for %lld tokens", (long long)max_tokens); }
    carve_all(m, a, a->mem);
    *out = a;
    return 0;
}

void sm_acts_free(sm_acts *a) {
    if (!a) return;
    free(a->attn_ws);
    ce_workspace_free(&a->ce);
    free(a->mem);
    free(a->la);
    free(a);
}

/* ---- forward / backward ---------------------------------------------------------------- */

static const float *P(const sm_model *m, int64_t off) { return off < 0 ? NULL : m->params + (off - m->base); }
static float *G(const sm_model *m, int64_t off) { return off < 0 ? NULL : m->grads + (off - m->base); }

int64_t sm_units(const sm_model *m) { return m->L + 3; }

void sm_unit_range(const sm_model *m, int64_t u, int64_t *lo, int64_t *hi) {
    bool tied = m->lm_head == m->embed;
    if (u == m->L + 2 && tied) u = 0;
    if (u == 0) {
        *lo = m->embed;
        *hi = m->L > 0 ? m->layers[0].attn_norm : m->norm_f;
    } else if (u <= m->L) {
        *lo = m->layers[u - 1].attn_norm;   /* a layer's first tensor */
        *hi = u < m->L ? m->layers[u].attn_norm : m->norm_f;
    } else if (u == m->L + 1) {
        *lo = m->norm_f;
        *hi = tied ? m->n_params : m->lm_head;
    } else {
        *lo = m->lm_head;
        *hi = m->n_params;
    }
}

/* hook calls of sm_forward_backward_hooked: nothing without hooks */
static int hook(const sm_hooks *h, bool end, int64_t u, bool bwd) {
    if (!h) return 0;
    return end ? h->end(h->ctx, u, bwd) : h->begin(h->ctx, u, bwd);
}
#define HOOK(end, u, bwd) do { int hrc_ = hook(h, end, u, bwd); if (hrc_) { a->in_bwd = false; return hrc_; } } while (0)

/* Runs stmt and adds its wall time to the profile of `a` (forward or backward column). */
#define TIMED(cat, stmt)                                                  \
    do {                                                                  \
        double t0_ = now_s();                                             \
        stmt;                                                             \
        a->prof[(a->in_bwd ? SM_PROF_COUNT : 0) + (cat)] += now_s() - t0_; \
    } while (0)

static void add_into(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

/* One decoder layer: x [T, D] → out [T, D] (out = mid + mlp(norm(mid)), mid = x + attn(norm(x))). */
static void layer_fwd(const sm_model *m, sm_acts *a, layer_acts *l, const sm_layer_off *o, const sm_batch *b,
                      const float *x, float *out, tp_pool *pool) {
    int64_t T = b->T, D = m->D, qd = m->Hq * m->hd, kd = m->Hkv * m->hd;
    float eps = (float)m->cfg.rms_norm_eps;
    TIMED(SM_PROF_NORM, rmsnorm_fwd(l->xn1, l->rstd1, x, P(m, o->attn_norm), T, D, eps, pool));
    bool qkn = o->qn >= 0;   /* qwen3: q, k projected into qr, kr, then each head RMS-normalized into q, k */
    TIMED(SM_PROF_LINEAR, mm_linear_fwd(qkn ? l->qr : l->q, l->xn1, P(m, o->wq), P(m, o->bq), T, qd, D, pool));
    TIMED(SM_PROF_LINEAR, mm_linear_fwd(qkn ? l->kr : l->k, l->xn1, P(m, o->wk), P(m, o->bk), T, kd, D, pool));
    TIMED(SM_PROF_LINEAR, mm_linear_fwd(l->v, l->xn1, P(m, o->wv), P(m, o->bv), T, kd, D, pool));
    if (qkn) {
        TIMED(SM_PROF_NORM, rmsnorm_fwd(l->q, l->rq, l->qr, P(m, o->qn), T * m->Hq, m->hd, eps, pool));
        TIMED(SM_PROF_NORM, rmsnorm_fwd(l->k, l->rk, l->kr, P(m, o->kn), T * m->Hkv, m->hd, eps, pool));
    }
    TIMED(SM_PROF_ROPE, rope_apply(l->q, a->cos_t, a->sin_t, T, m->Hq, m->hd, false, pool));
    TIMED(SM_PROF_ROPE, rope_apply(l->k, a->cos_t, a->sin_t, T, m->Hkv, m->hd, false, pool));
    TIMED(SM_PROF_ATTN, attn_fwd(l->att, l->lse, l->q, l->k, l->v, b->doc_start, T, m->Hq, m->Hkv, m->hd, 1.0f / sqrtf((float)m->hd), a->attn_ws, pool));
    TIMED(SM_PROF_LINEAR, mm_linear_fwd(a->tmp, l->att, P(m, o->wo), P(m, o->bo), T, D, qd, pool));
    TIMED(SM_PROF_OTHER, memcpy(l->mid, x, (size_t)(T * D) * sizeof(float)));
    TIMED(SM_PROF_OTHER, add_into(l->mid, a->tmp, T * D));
    TIMED(SM_PROF_NORM, rmsnorm_fwd(l->xn2, l->rstd2, l->mid, P(m, o->mlp_norm), T, D, eps, pool));
    TIMED(SM_PROF_LINEAR, mm_linear_fwd(l->gate, l->xn2, P(m, o->wg), P(m, o->bg), T, m->F, D, pool));
    TIMED(SM_PROF_LINEAR, mm_linear_fwd(l->up, l->xn2, P(m, o->wu), P(m, o->bu), T, m->F, D, pool));
    TIMED(SM_PROF_ACT, swiglu_fwd(a->act, l->gate, l->up, (size_t)(T * m->F), pool));
    TIMED(SM_PROF_LINEAR, mm_linear_fwd(a->tmp, a->act, P(m, o->wd), P(m, o->bd), T, D, m->F, pool));
    TIMED(SM_PROF_OTHER, memcpy(out, l->mid, (size_t)(T * D) * sizeof(float)));
    TIMED(SM_PROF_OTHER, add_into(out, a->tmp, T * D));
}

/* a->dres holds ∂L/∂out on entry and ∂L/∂x on return; parameter gradients are added. */
static void layer_bwd(sm_model *m, sm_acts *a, layer_acts *l, const sm_layer_off *o, const sm_batch *b,
                      const float *x, tp_pool *pool) {
    int64_t T = b->T, D = m->D, F = m->F, qd = m->Hq * m->hd, kd = m->Hkv * m->hd;
    /* MLP */
    TIMED(SM_PROF_LINEAR, mm_linear_bwd_x(a->dact, false, a->dres, P(m, o->wd), T, D, F, pool));
    TIMED(SM_PROF_ACT, swiglu_bwd(a->dgate, a->dup, a->act, a->dact, l->gate, l->up, (size_t)(T * F), pool));
    TIMED(SM_PROF_LINEAR, mm_linear_bwd_w(G(m, o->wd), G(m, o->bd), a->dres, a->act, T, D, F, pool));
    TIMED(SM_PROF_LINEAR, mm_linear_bwd_x(a->dxn, false, a->dgate, P(m, o->wg), T, F, D, pool));
    TIMED(SM_PROF_LINEAR, mm_linear_bwd_x(a->dxn, true, a->dup, P(m, o->wu), T, F, D, pool));
    TIMED(SM_PROF_LINEAR, mm_linear_bwd_w(G(m, o->wg), G(m, o->bg), a->dgate, l->xn2, T, F, D, pool));
    TIMED(SM_PROF_LINEAR, mm_linear_bwd_w(G(m, o->wu), G(m, o->bu), a->dup, l->xn2, T, F, D, pool));
    TIMED(SM_PROF_NORM, rmsnorm_bwd(a->dres, G(m, o->mlp_norm), a->dxn, l->mid, P(m, o->mlp_norm), l->rstd2, T, D, pool));
    /* attention */
    TIMED(SM_PROF_LINEAR, mm_linear_bwd_x(a->datt, false, a->dres, P(m, o->wo), T, D, qd, pool));
    TIMED(SM_PROF_LINEAR, mm_linear_bwd_w(G(m, o->wo), G(m, o->bo), a->dres, l->att, T, D, qd, pool));
    TIMED(SM_PROF_ATTN, attn_bwd(a->dq, a->dk, a->dv, a->datt, l->att, l->lse, l->q, l->k, l->v, b->doc_start, T, m->Hq,
             m->Hkv, m->hd, 1.0f / sqrtf((float)m->hd), a->attn_ws, pool));
    TIMED(SM_PROF_ROPE, rope_apply(a->dq, a->cos_t, a->sin_t, T, m->Hq, m->hd, true, pool));
    TIMED(SM_PROF_ROPE, rope_apply(a->dk, a->cos_t, a->sin_t, T, m->Hkv, m->hd, true, pool));
    float *dq = a->dq, *dk = a->dk;
    if (o->qn >= 0) {   /* through the per-head norms (rmsnorm_bwd accumulates: start from zero) */
        TIMED(SM_PROF_NORM, memset(a->dqr, 0, (size_t)(T * qd) * sizeof(float)));
        TIMED(SM_PROF_NORM, memset(a->dkr, 0, (size_t)(T * kd) * sizeof(float)));
        TIMED(SM_PROF_NORM, rmsnorm_bwd(a->dqr, G(m, o->qn), a->dq, l->qr, P(m, o->qn), l->rq, T * m->Hq, m->hd, pool));
        TIMED(SM_PROF_NORM, rmsnorm_bwd(a->dkr, G(m, o->kn), a->dk, l->kr, P(m, o->kn), l->rk, T * m->Hkv, m->hd, pool));
        dq = a->dqr, dk = a->dkr;
    }
    TIMED(SM_PROF_LINEAR, mm_linear_bwd_x(a->dxn, false, dq, P(m, o->wq), T, qd, D, pool));
    TIMED(SM_PROF_LINEAR, mm_linear_bwd_x(a->dxn, true, dk, P(m, o->wk), T, kd, D, pool));
    TIMED(SM_PROF_LINEAR, mm_linear_bwd_x(a->dxn, true, a->dv, P(m, o->wv), T, kd, D, pool));
    TIMED(SM_PROF_LINEAR, mm_linear_bwd_w(G(m, o->wq), G(m, o->bq), dq, l->xn1, T, qd, D, pool));
    TIMED(SM_PROF_LINEAR, mm_linear_bwd_w(G(m, o->wk), G(m, o->bk), dk, l->xn1, T, kd, D, pool));
    TIMED(SM_PROF_LINEAR, mm_linear_bwd_w(G(m, o->wv), G(m, o->bv), a->dv, l->xn1, T, kd, D, pool));
    TIMED(SM_PROF_NORM, rmsnorm_bwd(a->dres, G(m, o->attn_norm), a->dxn, x, P(m, o->attn_norm), l->rstd1, T, D, pool));
}

/* Attention scratch for the pool's thread count (grown on first use with a bigger pool). */
static int ensure_attn_ws(const sm_model *m, sm_acts *a, tp_pool *pool) {
    int n = tp_size(pool);
    if (a->attn_ws && a->attn_ws_threads >= n) return 0;
    free(a->attn_ws);
    a->attn_ws = rt_aligned_alloc(64, attn_workspace_floats(a->max_T, m->Hq, n) * sizeof(float));
    a->attn_ws_threads = a->attn_ws ? n : 0;
    return a->attn_ws ? 0 : rt_errorf(RT_ENOMEM, "attention scratch for %d threads", n);
}

static int check_batch(const sm_model *m, sm_acts *a, const sm_batch *b, tp_pool *pool) {
    if (b->T <= 0 || b->T > a->max_T)
        return rt_fail(RT_EINVAL, "batch of %lld tokens (activations hold %lld)", (long long)b->T, (long long)a->max_T);
    for (int64_t t = 0; t < b->T; t++) {
        if (b->tokens[t] < 0 || b->tokens[t] >= m->V || b->target[t] >= m->V)
            return rt_fail(RT_EINVAL, "token %lld: id %d outside the vocabulary of %lld", (long long)t,
                           b->target[t] >= m->V ? b->target[t] : b->tokens[t], (long long)m->V);
        if (b->doc_start[t] < 0 || b->doc_start[t] > t || (t > 0 && b->doc_start[t] != t && b->doc_start[t] != b->doc_start[t - 1]))
            return rt_fail(RT_EINVAL, "token %lld: document start %d is not contiguous", (long long)t, b->doc_start[t]);
    }
    return ensure_attn_ws(m, a, pool);
}

/* Embedding, every layer, final norm: a->xf holds the normalized last hidden states. */
static int forward_trunk(const sm_model *m, sm_acts *a, const sm_batch *b, const sm_hooks *h, tp_pool *pool) {
    int64_t T = b->T, D = m->D;
    rope_tables(a->cos_t, a->sin_t, b->pos, T, m->inv_freq, m->hd / 2);
    HOOK(false, 0, false);
    TIMED(SM_PROF_EMBED, embed_fwd(a->res, P(m, m->embed), b->tokens, T, D, pool));
    HOOK(true, 0, false);
    for (int64_t i = 0; i < m->L; i++) {
        layer_acts *l = &a->la[a->ckpt ? 0 : i];
        HOOK(false, 1 + i, false);
        layer_fwd(m, a, l, &m->layers[i], b, a->res + i * T * D, a->res + (i + 1) * T * D, pool);
        HOOK(true, 1 + i, false);
    }
    HOOK(false, m->L + 1, false);
    TIMED(SM_PROF_NORM, rmsnorm_fwd(a->xf, a->rstdf, a->res + m->L * T * D, P(m, m->norm_f), T, D, (float)m->cfg.rms_norm_eps, pool));
    HOOK(true, m->L + 1, false);
    return 0;
}

/* The LM head's loss (and, with grad, its backward): the fused cross-entropy, or with a batch
 * that distils the fused CE + KD loss, whose Σ CE and Σ D are kept in the acts. */
static int head_loss(sm_model *m, sm_acts *a, const sm_batch *b, float scale, double *loss_sum, bool grad, tp_pool *pool) {
    a->ce_sum = a->kd_sum = 0;
    if (!a->kd || a->kd->alpha == 0) {
        ce_fused(loss_sum, grad ? a->dxf : NULL, grad ? G(m, m->lm_head) : NULL, a->xf, P(m, m->lm_head), b->target,
                 b->T, scale, &a->ce, pool);
        a->ce_sum = *loss_sum;
        return 0;
    }
    return kd_fused(loss_sum, &a->ce_sum, &a->kd_sum, grad ? a->dxf : NULL, grad ? G(m, m->lm_head) : NULL, a->xf,
                    P(m, m->lm_head), b->target, b->T, scale, a->kd, &a->ce, pool);
}

void sm_acts_set_kd(sm_acts *a, const kd_spec *kd) { a->kd = kd; }

void sm_acts_kd_sums(const sm_acts *a, double *ce_sum, double *kd_sum) {
    *ce_sum = a->ce_sum;
    *kd_sum = a->kd_sum;
}

int sm_forward_backward(sm_model *m, sm_acts *a, const sm_batch *b, float scale, double *loss_sum, tp_pool *pool) {
    return sm_forward_backward_hooked(m, a, b, scale, loss_sum, NULL, pool);
}

int sm_forward_backward_hooked(sm_model *m, sm_acts *a, const sm_batch *b, float scale, double *loss_sum,
                               const sm_hooks *h, tp_pool *pool) {
    int rc = check_batch(m, a, b, pool);
    if (rc) return rc;
    int64_t T = b->T, D = m->D;
    if ((rc = forward_trunk(m, a, b, h, pool))) return rc;
    a->in_bwd = true;
    HOOK(false, m->L + 2, true);
    TIMED(SM_PROF_HEAD, rc = head_loss(m, a, b, scale, loss_sum, true, pool));
    if (rc) return rc;
    HOOK(true, m->L + 2, true);
    memset(a->dres, 0, (size_t)(T * D) * sizeof(float));
    HOOK(false, m->L + 1, true);
    TIMED(SM_PROF_NORM, rmsnorm_bwd(a->dres, G(m, m->norm_f), a->dxf, a->res + m->L * T * D, P(m, m->norm_f), a->rstdf, T, D, pool));
    HOOK(true, m->L + 1, true);
    for (int64_t i = m->L - 1; i >= 0; i--) {
        layer_acts *l = &a->la[a->ckpt ? 0 : i];
        const float *x = a->res + i * T * D;
        HOOK(false, 1 + i, true);
        if (a->ckpt) {   /* recompute the layer (counted as forward time); its output is not needed */
            a->in_bwd = false;
            layer_fwd(m, a, l, &m->layers[i], b, x, a->tmp, pool);
            a->in_bwd = true;
        }
        layer_bwd(m, a, l, &m->layers[i], b, x, pool);
        HOOK(true, 1 + i, true);
    }
    HOOK(false, 0, true);
    TIMED(SM_PROF_EMBED, embed_bwd(G(m, m->embed), a->dres, b->tokens, T, D, pool));
    HOOK(true, 0, true);
    a->in_bwd = false;
    return 0;
}

int sm_forward_loss(const sm_model *m, sm_acts *a, const sm_batch *b, double *loss_sum, tp_pool *pool) {
    return sm_forward_loss_hooked((sm_model *)m, a, b, loss_sum, NULL, pool);
}

int sm_forward_loss_hooked(sm_model *m, sm_acts *a, const sm_batch *b, double *loss_sum, const sm_hooks *h,
                           tp_pool *pool) {
    int rc = check_batch(m, a, b, pool);
    if (rc) return rc;
    if ((rc = forward_trunk(m, a, b, h, pool))) return rc;
    HOOK(false, m->L + 2, false);
    rc = head_loss(m, a, b, 1.0f, loss_sum, false, pool);
    if (rc) return rc;
    HOOK(true, m->L + 2, false);
    return 0;
}

int sm_forward_logits(const sm_model *m, sm_acts *a, const sm_batch *b, float *logits, tp_pool *pool) {
    int rc = check_batch(m, a, b, pool);
    if (rc) return rc;
    forward_trunk(m, a, b, NULL, pool);
    mm_linear_fwd(logits, a->xf, P(m, m->lm_head), NULL, b->T, m->V, m->D, pool);
    return 0;
}

/* teacher/dense.c — dense Llama/Qwen load and paged-cache forward (see teacher/dense.h). */
#include "teacher/dense.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/checkpoint.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "kernels/act.h"
#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/embed.h"
#include "kernels/matmul.h"
#include "kernels/norm.h"
#include "kernels/rope.h"

/* a weight matrix, held in f32 or (a bf16 checkpoint's, when RETORT_CPU_WEIGHTS allows) in
 * bf16: exactly one of f, h is set */
typedef struct {
    float *f;
    uint16_t *h;
} dn_mat;

typedef struct {
    float *attn_norm, *mlp_norm;                 /* [D] */
    dn_mat wq, wk, wv, wo;                       /* [Hq·hd, D], [Hkv·hd, D] ×2, [D, Hq·hd] */
    float *bq, *bk, *bv, *bo;                    /* or NULL */
    float *qn, *kn;                              /* qwen3: [hd] RMSNorm of each q, k head before RoPE; or NULL */
    dn_mat wg, wu, wd;                           /* [F, D] ×2, [D, F] */
    float *bg, *bu, *bd;                         /* or NULL */
} dn_layer;

struct dn_model {
    mc_config c;
    tp_pool *pool;
    int64_t D, F, L, V, Hq, Hkv, hd;
    dn_mat embed, lm_head;                       /* [V, D] ×2 (lm_head == embed when tied) */
    float *norm;                                 /* [D] */
    dn_layer *layers;                            /* [L] */
    float *inv_freq;                             /* [hd/2] */
    void *weights;                               /* one buffer for every tensor, 64-byte aligned each */
    size_t resident;                             /* bytes of weights, inv_freq and tables */
};

/* ---- loading --------------------------------------------------------------------------- */

/* where tensor `name` goes: a dn_mat (*mat = true) or a float * (vectors); NULL if unknown */
static void *field(dn_model *m, const char *name, bool *mat) {
    *mat = true;
    if (!strcmp(name, "model.embed_tokens.weight")) return &m->embed;
    if (!strcmp(name, "lm_head.weight")) return &m->lm_head;
    *mat = false;
    if (!strcmp(name, "model.norm.weight")) return &m->norm;
    long long i;
    int used = 0;
    if (sscanf(name, "model.layers.%lld.%n", &i, &used) != 1 || !used || i < 0 || i >= m->L) return NULL;
    dn_layer *l = &m->layers[i];
    static const struct { const char *n; size_t at; bool mat; } map[] = {
        {"input_layernorm.weight", offsetof(dn_layer, attn_norm), false},
        {"post_attention_layernorm.weight", offsetof(dn_layer, mlp_norm), false},
        {"self_attn.q_proj.weight", offsetof(dn_layer, wq), true}, {"self_attn.k_proj.weight", offsetof(dn_layer, wk), true},
        {"self_attn.v_proj.weight", offsetof(dn_layer, wv), true}, {"self_attn.o_proj.weight", offsetof(dn_layer, wo), true},
        {"self_attn.q_proj.bias", offsetof(dn_layer, bq), false}, {"self_attn.k_proj.bias", offsetof(dn_layer, bk), false},
        {"self_attn.v_proj.bias", offsetof(dn_layer, bv), false}, {"self_attn.o_proj.bias", offsetof(dn_layer, bo), false},
        {"mlp.gate_proj.weight", offsetof(dn_layer, wg), true}, {"mlp.up_proj.weight", offsetof(dn_layer, wu), true},
        {"mlp.down_proj.weight", offsetof(dn_layer, wd), true}, {"mlp.gate_proj.bias", offsetof(dn_layer, bg), false},
        {"mlp.up_proj.bias", offsetof(dn_layer, bu), false}, {"mlp.down_proj.bias", offsetof(dn_layer, bd), false},
        {"self_attn.q_norm.weight", offsetof(dn_layer, qn), false}, {"self_attn.k_norm.weight", offsetof(dn_layer, kn), false},
    };
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++)
        if (!strcmp(name + used, map[k].n)) {
            *mat = map[k].mat;
            return (char *)l + map[k].at;
        }
    return NULL;
}

/* RETORT_CPU_WEIGHTS: auto (or unset): a bf16 checkpoint's matrices stay bf16 where the CPU
 * has the AVX2 decode kernel; bf16: stay bf16 on any CPU; f32: widened at load */
static int keep_bf16(bool *out) {
    const char *env = getenv("RETORT_CPU_WEIGHTS");
    if (!env || !*env || !strcmp(env, "auto")) *out = mm_bf16_streams();
    else if (!strcmp(env, "bf16")) *out = true;
    else if (!strcmp(env, "f32")) *out = false;
    else return rt_fail(RT_EINVAL, "RETORT_CPU_WEIGHTS=%s: expected auto, bf16 or f32", env);
    return 0;
}

static size_t numel_of(const mc_tensor_spec *s) {
    return (size_t)s->shape[0] * (size_t)(s->ndim == 2 ? s->shape[1] : 1);
}

static int load_all(dn_model *m, const char *dir) {
    bool bf16 = false;
    int rc = keep_bf16(&bf16);
    if (rc) return rc;
    if ((rc = mc_load(dir, &m->c))) return rc;
    const mc_config *c = &m->c;
    if (c->arch == MC_ARCH_DEEPSEEK_V3)
        return rt_fail(RT_EUNSUPPORTED, "deepseek_v3 is not a dense model (teacher/deepseek.h)");
    mc_dims d = mc_dense_dims(c);
    m->D = d.D, m->F = d.F, m->L = d.L, m->V = d.V, m->Hq = d.Hq, m->Hkv = d.Hkv, m->hd = d.hd;
    m->layers = rt_calloc((size_t)m->L, sizeof *m->layers);
    m->inv_freq = rt_malloc((size_t)(m->hd / 2 > 0 ? m->hd / 2 : 1) * sizeof(float));
    if (!m->layers || !m->inv_freq) return RT_ENOMEM;
    if ((rc = rope_inv_freq(&c->rope, m->hd, m->inv_freq))) return rc;
    mc_tensor_spec *spec;
    size_t n;
    if ((rc = mc_expected_tensors(c, &spec, &n))) return rc;
    st_file *f = NULL;
    rc = st_open(dir, &f);
    ck_summary sum;
    if (!rc) rc = ck_validate(c, f, &sum);
    /* a matrix stored BF16 stays bf16 when allowed, everything else becomes f32; each tensor
     * starts 64-byte aligned */
    size_t total = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        bool mat;
        if (spec[i].group != MC_GROUP_REQUIRED || !field(m, spec[i].name, &mat)) continue;
        const st_tensor *t = st_find(f, spec[i].name);
        bool half = mat && bf16 && t && t->dtype == RT_DT_BF16;
        total += (numel_of(&spec[i]) * (half ? 2 : 4) + 63) / 64 * 64;
    }
    /* straight from the kernel, faulted in a chunk at a time right before each is written
     * (core/alloc.h; bench/st_load.sh: 1.2x less CPU than faulting page by page) */
    if (!rc && !(m->weights = rt_big_alloc(total ? total : 64))) rc = RT_ENOMEM;
    m->resident = (total ? total : 64) + (size_t)m->L * sizeof *m->layers +
                  (size_t)(m->hd / 2 > 0 ? m->hd / 2 : 1) * sizeof(float);
    size_t off = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (spec[i].group != MC_GROUP_REQUIRED) continue;
        const st_tensor *t = st_find(f, spec[i].name);
        bool mat;
        void *dst = field(m, spec[i].name, &mat);
        size_t numel = numel_of(&spec[i]);
        RT_ASSERT(dst, "unexpected tensor %s", spec[i].name);
        if (!t) {
            rc = rt_fail(RT_EFORMAT, "tensor %s missing", spec[i].name);
            break;
        }
        if (t->nelem != numel) {
            rc = rt_fail(RT_EFORMAT, "tensor %s: %zu elements, %zu expected", spec[i].name, t->nelem, numel);
            break;
        }
        void *at = (char *)m->weights + off;
        bool half = mat && bf16 && t->dtype == RT_DT_BF16;
        size_t bytes = numel * (half ? 2 : 4);
        if (half) {
            for (size_t o = 0; o < bytes; o += (size_t)1 << 20) {   /* the mapping may be unaligned */
                size_t k = bytes - o < ((size_t)1 << 20) ? bytes - o : (size_t)1 << 20;
                rt_prefault((char *)at + o, k);
                memcpy((char *)at + o, (const char *)t->data + o, k);
            }
            ((dn_mat *)dst)->h = at;
        } else if (!(rc = cvt_to_f32_fill(t->dtype, t->data, at, numel, m->pool))) {
            if (mat) ((dn_mat *)dst)->f = at;
            else *(float **)dst = at;
        }
        off += (bytes + 63) / 64 * 64;
    }
    st_close(f);
    free(spec);
    if (!rc && !m->lm_head.f && !m->lm_head.h) m->lm_head = m->embed;
    return rc;
}

int dn_load(const char *dir, tp_pool *pool, dn_model **out) {
    *out = NULL;
    dn_model *m = rt_calloc(1, sizeof *m);
    if (!m) return RT_ENOMEM;
    m->pool = pool;
    mm_blas_single_thread();   /* the pool is the only parallelism (kernels/matmul.h) */
    int rc = load_all(m, dir);
    if (rc) {
        dn_free(m);
        return rt_errorf(rc, "loading model %s", dir);
    }
    *out = m;
    return 0;
}

void dn_free(dn_model *m) {
    if (!m) return;
    rt_big_free(m->weights);
    free(m->layers);
    free(m->inv_freq);
    free(m);
}

const mc_config *dn_config(const dn_model *m) { return &m->c; }
size_t dn_resident_bytes(const dn_model *m) { return m->resident; }

size_t dn_block_floats(const dn_model *m, int64_t block_size) {
    return (size_t)(m->L * 2 * block_size * m->Hkv * m->hd);
}

/* ---- forward --------------------------------------------------------------------------- */

/* Few rows (decode): split the output features over the pool instead of the rows. A bf16
 * matrix goes through the bf16 twins, which give the bits of the f32 ones on the widened w. */
static void linear(float *y, const float *x, dn_mat w, const float *b, int64_t M, int64_t N, int64_t K,
                   tp_pool *pool) {
    bool cols = M < 4 * tp_size(pool);
    if (w.h && cols) mm_linear_fwd_cols_bf16(y, x, w.h, b, M, N, K, pool);
    else if (w.h) mm_linear_fwd_bf16(y, x, w.h, b, M, N, K, pool);
    else if (cols) mm_linear_fwd_cols(y, x, w.f, b, M, N, K, pool);
    else mm_linear_fwd(y, x, w.f, b, M, N, K, pool);
}

/* the rows of the embedding (bf16: each widened, exactly) */
static void embed(float *x, dn_mat e, const int32_t *tokens, int64_t T, int64_t D, tp_pool *pool) {
    if (e.f) embed_fwd(x, e.f, tokens, T, D, pool);
    else
        for (int64_t t = 0; t < T; t++) cvt_bf16_to_f32(e.h + (int64_t)tokens[t] * D, x + t * D, (size_t)D);
}

static void add_into(float *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

int dn_forward(dn_model *m, kv_pool *cache, kv_seq *const *seqs, const int32_t *n_new, int64_t n_seqs,
               const int32_t *tokens, float *logits, bool all_logits) {
    if (n_seqs <= 0) return rt_fail(RT_EINVAL, "forward of %lld sequences", (long long)n_seqs);
    if (kv_pool_block_floats(cache) != dn_block_floats(m, kv_pool_block_size(cache)))
        return rt_fail(RT_EINVAL, "the KV cache's blocks were not made for this model");
    int64_t T = 0, max_ctx = 1;
    for (int64_t s = 0; s < n_seqs; s++) {
        if (n_new[s] <= 0) return rt_fail(RT_EINVAL, "sequence %lld: %d new tokens", (long long)s, n_new[s]);
        int64_t end = seqs[s]->len + n_new[s];
        if (end > m->c.max_position_embeddings)
            return rt_fail(RT_ERANGE, "sequence of %lld positions exceeds max_position_embeddings %lld",
                           (long long)end, (long long)m->c.max_position_embeddings);
        if (end > max_ctx) max_ctx = end;
        T += n_new[s];
    }
    for (int64_t t = 0; t < T; t++)
        if (tokens[t] < 0 || tokens[t] >= m->V)
            return rt_fail(RT_EINVAL, "token %d outside the vocabulary of %lld", tokens[t], (long long)m->V);
    for (int64_t s = 0; s < n_seqs; s++) {
        int rc = kv_seq_reserve(cache, seqs[s], seqs[s]->len + n_new[s]);
        if (rc) return rc;
    }
    tp_pool *pool = m->pool;
    int64_t D = m->D, F = m->F, hd = m->hd, qd = m->Hq * hd, kd = m->Hkv * hd, half = hd / 2;
    int64_t bs = kv_pool_block_size(cache);
    size_t bf = kv_pool_block_floats(cache);
    /* every sequence starts empty (a fresh prefill): the student's blocked attention over the
     * new tokens themselves, one document per sequence; otherwise attention against the cache */
    bool fresh = true;
    for (int64_t s = 0; s < n_seqs; s++) fresh = fresh && seqs[s]->len == 0;
    size_t wsn = fresh ? attn_workspace_floats(T, m->Hq, tp_size(pool)) + (size_t)(T * m->Hq) + (size_t)T
                       : attn_paged_workspace_floats(max_ctx, tp_size(pool));
    int64_t qkn = m->c.qk_norm ? kd : 0;   /* qwen3: k before its per-head norm */
    size_t nf = (size_t)T * (size_t)(3 * D + 2 * qd + 2 * kd + qkn + 3 * F + 2 * half) + wsn;
    float *buf = rt_malloc(nf * sizeof(float));
    int32_t *pos = rt_malloc((size_t)T * 2 * sizeof(int32_t));
    const int32_t **tables = rt_malloc((size_t)T * sizeof *tables);
    if (!buf || !pos || !tables) {
        free(buf); free(pos); free(tables);
        return rt_errorf(RT_ENOMEM, "forward of %lld tokens", (long long)T);
    }
    float *x = buf, *xn = x + T * D, *tmp = xn + T * D, *q = tmp + T * D, *att = q + T * qd, *k = att + T * qd;
    float *v = k + T * kd, *g = v + T * kd, *u = g + T * F, *a = u + T * F, *cs = a + T * F, *sn = cs + T * half;
    float *kr = sn + T * half, *ws = kr + T * qkn;
    int32_t *ctx = pos + T, *doc = NULL;
    if (fresh) doc = (int32_t *)(ws + attn_workspace_floats(T, m->Hq, tp_size(pool)) + (size_t)(T * m->Hq));
    for (int64_t s = 0, t = 0; s < n_seqs; s++)
        for (int32_t j = 0; j < n_new[s]; j++, t++) {
            pos[t] = (int32_t)(seqs[s]->len + j);
            ctx[t] = pos[t] + 1;
            tables[t] = seqs[s]->blocks;
            if (doc) doc[t] = (int32_t)(t - j);
        }
    rope_tables(cs, sn, pos, T, m->inv_freq, half);
    embed(x, m->embed, tokens, T, D, pool);
    float eps = (float)m->c.rms_norm_eps, scale = 1.0f / sqrtf((float)hd), *data = kv_pool_data(cache);
    for (int64_t l = 0; l < m->L; l++) {
        const dn_layer *L = &m->layers[l];
        rmsnorm_fwd(xn, NULL, x, L->attn_norm, T, D, eps, pool);
        if (L->qn) {   /* qwen3: each head of q and k RMS-normalized (att: q's scratch until attention) */
            linear(att, xn, L->wq, L->bq, T, qd, D, pool);
            linear(kr, xn, L->wk, L->bk, T, kd, D, pool);
            rmsnorm_fwd(q, NULL, att, L->qn, T * m->Hq, hd, eps, pool);
            rmsnorm_fwd(k, NULL, kr, L->kn, T * m->Hkv, hd, eps, pool);
        } else {
            linear(q, xn, L->wq, L->bq, T, qd, D, pool);
            linear(k, xn, L->wk, L->bk, T, kd, D, pool);
        }
        linear(v, xn, L->wv, L->bv, T, kd, D, pool);
        rope_apply(q, cs, sn, T, m->Hq, hd, false, pool);
        rope_apply(k, cs, sn, T, m->Hkv, hd, false, pool);
        float *kbase = data + l * 2 * bs * kd, *vbase = kbase + bs * kd;
        for (int64_t t = 0; t < T; t++) {
            size_t at = (size_t)tables[t][pos[t] / bs] * bf + (size_t)((pos[t] % bs) * kd);
            memcpy(kbase + at, k + t * kd, (size_t)kd * sizeof(float));
            memcpy(vbase + at, v + t * kd, (size_t)kd * sizeof(float));
        }
        if (fresh) attn_fwd(att, ws, q, k, v, doc, T, m->Hq, m->Hkv, hd, scale, ws + T * m->Hq, pool);
        else attn_paged_fwd(att, q, T, m->Hq, m->Hkv, hd, scale, kbase, vbase, bs, (int64_t)bf, tables, ctx, ws, pool);
        linear(tmp, att, L->wo, L->bo, T, D, qd, pool);
        add_into(x, tmp, T * D);
        rmsnorm_fwd(xn, NULL, x, L->mlp_norm, T, D, eps, pool);
        linear(g, xn, L->wg, L->bg, T, F, D, pool);
        linear(u, xn, L->wu, L->bu, T, F, D, pool);
        swiglu_fwd(a, g, u, (size_t)(T * F), pool);
        linear(tmp, a, L->wd, L->bd, T, D, F, pool);
        add_into(x, tmp, T * D);
    }
    int64_t R = T;
    if (!all_logits) {   /* keep the last token of each sequence */
        R = 0;
        for (int64_t s = 0, t = 0; s < n_seqs; s++) {
            t += n_new[s];
            memmove(x + R * D, x + (t - 1) * D, (size_t)D * sizeof(float));
            R++;
        }
    }
    rmsnorm_fwd(xn, NULL, x, m->norm, R, D, eps, pool);
    linear(logits, xn, m->lm_head, NULL, R, m->V, D, pool);
    for (int64_t s = 0; s < n_seqs; s++) seqs[s]->len += n_new[s];
    free(buf);
    free(pos);
    free(tables);
    return 0;
}

/* student/gpu_plan.c — the GPU trainer's device layout, computed on the host. */
#include "student/gpu_plan.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"

static int64_t al16(int64_t n) { return (n + 15) / 16 * 16; }

/* Place a group of model tensors (CPU offsets cpu[k], sizes from the model) back to back at
 * *at; record each one's GPU offset. Returns the group's GPU offset (−1: empty group). */
typedef struct {
    const sm_model *m;
    gp_plan *p;
    int64_t at;
} placer;

static int64_t tensor_index(const sm_model *m, int64_t cpu_off) {
    for (size_t i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].offset == cpu_off) return (int64_t)i;
    return -1;
}

static int place(placer *pl, const int64_t *cpu, int k, int64_t *group) {
    *group = -1;
    int present = 0;
    for (int j = 0; j < k; j++) present += cpu[j] >= 0;
    if (present == 0) return 0;
    if (present != k) return rt_fail(RT_EUNSUPPORTED, "the GPU trainer fuses q/k/v and gate/up: their biases must be all present or all absent");
    *group = pl->at;
    for (int j = 0; j < k; j++) {
        int64_t i = tensor_index(pl->m, cpu[j]);
        RT_ASSERT(i >= 0, "no tensor at offset %lld", (long long)cpu[j]);
        pl->p->off[i] = pl->at;
        pl->at += pl->m->tensors[i].numel;
    }
    pl->at = al16(pl->at);
    return 0;
}

static size_t take(size_t *at, size_t bytes) {
    size_t o = *at;
    *at += (bytes + GP_ALIGN - 1) / GP_ALIGN * GP_ALIGN;
    return o;
}

int64_t gp_ce_chunk(int64_t ce_chunk, int64_t T, int64_t V) {
    int64_t c = ce_chunk > 0 ? ce_chunk : ((int64_t)1 << 30) / (4 * (V > 0 ? V : 1));
    if (c > T) c = T;
    return c < 1 ? 1 : c;
}

/* dims and the shapes the kernels take (both plans) */
static int plan_dims(gp_plan *p, int64_t D, int64_t F, int64_t L, int64_t V, int64_t Hq, int64_t Hkv, int64_t hd,
                     int64_t T, bool qk_norm) {
    memset(p, 0, sizeof *p);
    p->D = D, p->F = F, p->L = L, p->V = V, p->Hq = Hq, p->Hkv = Hkv, p->hd = hd, p->qk_norm = qk_norm;
    p->W = (Hq + 2 * Hkv) * hd;
    if (hd != 64 && hd != 128)
        return rt_fail(RT_EUNSUPPORTED, "the GPU trainer's attention takes head_dim 64 or 128, the model has %lld", (long long)hd);
    if (D % 8 || F % 8 || D > 16384)
        return rt_fail(RT_EUNSUPPORTED, "the GPU kernels take hidden and intermediate sizes that are multiples of 8 (hidden ≤ 16384); the model has %lld and %lld",
                       (long long)D, (long long)F);
    if (Hkv < 1 || Hq % Hkv)
        return rt_fail(RT_EUNSUPPORTED, "%lld query heads are not a multiple of %lld kv heads", (long long)Hq, (long long)Hkv);
    if (L < 1) return rt_fail(RT_EUNSUPPORTED, "a model without layers");
    if (T < 1) return rt_fail(RT_EINVAL, "a micro-batch of %lld tokens", (long long)T);
    return 0;
}

/* The activation arena (p->D… set; p->x and p->keep allocated by the caller). */
static void plan_acts(gp_plan *p, int64_t T, int ckpt, int64_t ce_chunk, int64_t loss_slots, const gp_ws_sizes *ws) {
    int64_t D = p->D, F = p->F, W = p->W, qd = p->Hq * p->hd, qk = p->qk_norm ? (p->Hq + p->Hkv) : 0;
    p->T = T;
    p->ckpt = ckpt != 0;
    p->x_host = ckpt == GP_CKPT_HOST;
    p->ce_chunk = gp_ce_chunk(ce_chunk, T, p->V);
    p->loss_slots = loss_slots < 1 ? 1 : loss_slots;
    size_t at = 0, bf = 2, f4 = 4, tD = (size_t)(T * D);
    int64_t slots = p->x_host && p->L + 1 > GP_X_SLOTS ? GP_X_SLOTS : p->L + 1;
    for (int64_t l = 0; l < slots; l++) p->x[l] = take(&at, bf * tD);
    for (int64_t l = slots; l <= p->L; l++) p->x[l] = p->x[l % GP_X_SLOTS];
    p->x_bytes = at;
    int64_t sets = ckpt ? 1 : p->L;
    for (int64_t s = 0; s < sets; s++) {
        size_t s0 = at;
        gp_layer_acts *k = &p->keep[s];
        k->xn1 = take(&at, bf * tD);
        k->qkv = take(&at, bf * (size_t)(T * W));
        k->att = take(&at, bf * (size_t)(T * qd));
        k->lse = take(&at, f4 * (size_t)(T * p->Hq));
        k->rstd1 = take(&at, f4 * (size_t)T);
        k->mid = take(&at, bf * tD);
        k->xn2 = take(&at, bf * tD);
        k->rstd2 = take(&at, f4 * (size_t)T);
        k->gu = take(&at, bf * (size_t)(T * 2 * F));
        k->act = take(&at, bf * (size_t)(T * F));
        k->qkr = take(&at, bf * (size_t)(T * qk * p->hd));
        k->rqk = take(&at, f4 * (size_t)(T * qk));
        p->keep_bytes = at - s0;
    }
    p->tmp = take(&at, bf * tD);
    p->out = take(&at, bf * tD);
    p->hf = take(&at, bf * tD);
    p->rstd_f = take(&at, f4 * (size_t)T);
    p->dres = take(&at, bf * tD);
    p->dxn = take(&at, bf * tD);
    p->dqkv = take(&at, bf * (size_t)(T * W));
    p->datt = take(&at, bf * (size_t)(T * qd));
    p->dgu = take(&at, bf * (size_t)(T * 2 * F));
    p->dact = take(&at, bf * (size_t)(T * F));
    p->qkn = take(&at, bf * (size_t)(T * qk * p->hd));
    p->dqk = take(&at, bf * (size_t)(T * qk * p->hd));
    p->norm_ws = take(&at, ws->norm_ws);
    p->attn_ws = take(&at, ws->attn_ws);
    p->sumsq_ws = take(&at, ws->sumsq_ws);
    p->batch = take(&at, 4 * (size_t)(7 * T + 1));
    p->inv_freq = take(&at, f4 * (size_t)(p->hd / 2));
    p->loss = take(&at, 8 * (size_t)p->loss_slots);
    p->sumsq = take(&at, 8);
    p->act_bytes = at;
}

static int alloc_arrays(gp_plan *p, size_t n_tensors, int ckpt) {
    p->n_tensors = n_tensors;
    p->off = n_tensors ? rt_malloc(n_tensors * sizeof *p->off) : NULL;
    p->layers = n_tensors ? rt_malloc((size_t)p->L * sizeof *p->layers) : NULL;
    p->x = rt_malloc((size_t)(p->L + 1) * sizeof *p->x);
    p->keep = rt_malloc((size_t)(ckpt ? 1 : p->L) * sizeof *p->keep);
    if ((n_tensors && (!p->off || !p->layers)) || !p->x || !p->keep) {
        gp_plan_free(p);
        return RT_ENOMEM;
    }
    return 0;
}

/* the units' lengths from the layout (every layer the same length, as every layer has the
 * same tensors) */
static void set_units(gp_plan *p, int64_t e_len, int64_t layer_len, int64_t h_len, bool tied) {
    p->e_len = e_len, p->layer_len = layer_len, p->h_len = h_len, p->tied = tied;
    p->n = e_len + p->L * layer_len + h_len;
}

int gp_plan_init(gp_plan *p, const sm_model *m, int64_t T, int ckpt, int64_t ce_chunk, int64_t loss_slots,
                 const gp_ws_sizes *ws) {
    int rc = plan_dims(p, m->D, m->F, m->L, m->V, m->Hq, m->Hkv, m->hd, T, m->cfg.qk_norm);
    if (rc) return rc;
    if ((rc = alloc_arrays(p, m->n_tensors, ckpt))) return rc;
    for (size_t i = 0; i < m->n_tensors; i++) p->off[i] = -1;

    /* parameters: embed, layers, final norm, untied head */
    placer pl = {m, p, 0};
    rc = place(&pl, &m->embed, 1, &p->embed);
    for (int64_t l = 0; !rc && l < m->L; l++) {
        const sm_layer_off *c = &m->layers[l];
        gp_layer_off *g = &p->layers[l];
        int64_t qkv[3] = {c->wq, c->wk, c->wv}, bqkv[3] = {c->bq, c->bk, c->bv}, gu[2] = {c->wg, c->wu},
                bgu[2] = {c->bg, c->bu};
        if (!rc) rc = place(&pl, &c->attn_norm, 1, &g->attn_norm);
        if (!rc) rc = place(&pl, qkv, 3, &g->wqkv);
        if (!rc) rc = place(&pl, bqkv, 3, &g->bqkv);
        if (!rc) rc = place(&pl, &c->qn, 1, &g->qn);
        if (!rc) rc = place(&pl, &c->kn, 1, &g->kn);
        if (!rc) rc = place(&pl, &c->wo, 1, &g->wo);
        if (!rc) rc = place(&pl, &c->bo, 1, &g->bo);
        if (!rc) rc = place(&pl, &c->mlp_norm, 1, &g->mlp_norm);
        if (!rc) rc = place(&pl, gu, 2, &g->wgu);
        if (!rc) rc = place(&pl, bgu, 2, &g->bgu);
        if (!rc) rc = place(&pl, &c->wd, 1, &g->wd);
        if (!rc) rc = place(&pl, &c->bd, 1, &g->bd);
    }
    if (!rc) rc = place(&pl, &m->norm_f, 1, &p->norm_f);
    bool tied = m->lm_head == m->embed;
    if (!rc && !tied) rc = place(&pl, &m->lm_head, 1, &p->lm_head);
    else p->lm_head = p->embed;
    for (size_t i = 0; !rc && i < m->n_tensors; i++)
        if (p->off[i] < 0) rc = rt_fail(RT_EUNSUPPORTED, "tensor %s has no place on the GPU path", m->tensors[i].name);
    int64_t layer_len = m->L > 1 ? p->layers[1].attn_norm - p->layers[0].attn_norm : p->norm_f - p->layers[0].attn_norm;
    for (int64_t l = 0; !rc && l < m->L; l++)
        RT_ASSERT(p->layers[l].attn_norm == p->layers[0].attn_norm + l * layer_len,
                  "layer %lld of the GPU layout is not where equal layers put it", (long long)l);
    if (rc) { gp_plan_free(p); return rc; }
    set_units(p, p->layers[0].attn_norm, layer_len, pl.at - p->norm_f, tied);
    RT_ASSERT(p->n == pl.at, "the GPU layout's units do not tile it");
    plan_acts(p, T, ckpt, ce_chunk, loss_slots, ws);
    return 0;
}

int gp_plan_init_config(gp_plan *p, const mc_config *c, int64_t T, int ckpt, int64_t ce_chunk, int64_t loss_slots,
                        const gp_ws_sizes *ws) {
    if (c->arch == MC_ARCH_DEEPSEEK_V3)
        return rt_fail(RT_EUNSUPPORTED, "the student is a dense llama/qwen2/qwen3 model; deepseek_v3 is not supported");
    int64_t D = c->hidden_size, F = c->intermediate_size, L = c->num_hidden_layers, V = c->vocab_size;
    int64_t Hq = c->num_attention_heads, Hkv = c->num_key_value_heads, hd = c->head_dim;
    int rc = plan_dims(p, D, F, L, V, Hq, Hkv, hd, T, c->qk_norm);
    if (rc) return rc;
    /* the groups of gp_plan_init from the tensors the architecture has (layer 0's names) */
    mc_tensor_spec *spec;
    size_t ns;
    if ((rc = mc_expected_tensors(c, &spec, &ns))) return rc;
    int64_t g[12] = {0};   /* attn_norm, qkv, bqkv, o, bo, mlp_norm, gu, bgu, down, bd, q_norm, k_norm */
    static const struct { const char *name; int group; } map[] = {
        {"input_layernorm.weight", 0}, {"self_attn.q_proj.weight", 1}, {"self_attn.k_proj.weight", 1},
        {"self_attn.v_proj.weight", 1}, {"self_attn.q_proj.bias", 2}, {"self_attn.k_proj.bias", 2},
        {"self_attn.v_proj.bias", 2}, {"self_attn.o_proj.weight", 3}, {"self_attn.o_proj.bias", 4},
        {"post_attention_layernorm.weight", 5}, {"mlp.gate_proj.weight", 6}, {"mlp.up_proj.weight", 6},
        {"mlp.gate_proj.bias", 7}, {"mlp.up_proj.bias", 7}, {"mlp.down_proj.weight", 8}, {"mlp.down_proj.bias", 9},
        {"self_attn.q_norm.weight", 10}, {"self_attn.k_norm.weight", 11}};
    bool tied = true;
    int64_t cpu_n = 0;   /* the CPU trainer's flat length (student/model.h: tensors at multiples of 16) */
    for (size_t i = 0; i < ns; i++) {
        if (spec[i].group != MC_GROUP_REQUIRED) continue;
        cpu_n += al16(spec[i].shape[0] * (spec[i].ndim == 2 ? spec[i].shape[1] : 1));
        if (!strcmp(spec[i].name, "lm_head.weight")) tied = false;
        const char *pre = "model.layers.0.";
        if (strncmp(spec[i].name, pre, strlen(pre))) continue;
        int64_t numel = spec[i].shape[0] * (spec[i].ndim == 2 ? spec[i].shape[1] : 1);
        size_t k = 0;
        while (k < sizeof map / sizeof *map && strcmp(spec[i].name + strlen(pre), map[k].name)) k++;
        if (k == sizeof map / sizeof *map) {
            rc = rt_fail(RT_EUNSUPPORTED, "tensor %s has no place on the GPU path", spec[i].name);
            break;
        }
        g[map[k].group] += numel;
    }
    free(spec);
    if (rc) return rc;
    int64_t layer_len = 0;
    for (int k = 0; k < 12; k++) layer_len += al16(g[k]);
    if ((rc = alloc_arrays(p, 0, ckpt))) return rc;
    p->embed = 0, p->lm_head = tied ? 0 : al16(V * D) + L * layer_len + al16(D);
    p->norm_f = al16(V * D) + L * layer_len;
    set_units(p, al16(V * D), layer_len, al16(D) + (tied ? 0 : al16(V * D)), tied);
    gp_ws_sizes est = gp_ws_estimate(T, D, Hq, cpu_n);
    size_t head_ws = (size_t)((T * Hq + 15) / 16 * hd) * 4;   /* the per-head norms' backward (qwen3) */
    if (c->qk_norm && head_ws > est.norm_ws) est.norm_ws = head_ws;
    plan_acts(p, T, ckpt, ce_chunk, loss_slots, ws ? ws : &est);
    return 0;
}

void gp_plan_free(gp_plan *p) {
    free(p->off);
    free(p->layers);
    free(p->x);
    free(p->keep);
    p->off = NULL, p->layers = NULL, p->x = NULL, p->keep = NULL;
}

const gp_layer_acts *gp_acts_of(const gp_plan *p, int64_t l) { return &p->keep[p->ckpt ? 0 : l]; }

void gp_to_gpu(const gp_plan *p, const sm_model *m, const float *cpu, float *gpu) {
    for (size_t i = 0; i < m->n_tensors; i++)
        memcpy(gpu + p->off[i], cpu + m->tensors[i].offset, (size_t)m->tensors[i].numel * sizeof(float));
}

void gp_to_gpu_range(const gp_plan *p, const sm_model *m, const float *cpu, float *part, int64_t lo, int64_t len) {
    for (size_t i = 0; i < m->n_tensors; i++) {
        int64_t o = p->off[i], a = o > lo ? o : lo, b = o + m->tensors[i].numel < lo + len ? o + m->tensors[i].numel : lo + len;
        if (a < b) memcpy(part + (a - lo), cpu + m->tensors[i].offset + (a - o), (size_t)(b - a) * sizeof(float));
    }
}

void gp_from_gpu(const gp_plan *p, const sm_model *m, const float *gpu, float *cpu) {
    for (size_t i = 0; i < m->n_tensors; i++)
        memcpy(cpu + m->tensors[i].offset, gpu + p->off[i], (size_t)m->tensors[i].numel * sizeof(float));
}

size_t gp_ce_ws_estimate(int64_t chunk, int64_t V, int64_t D) {
    /* gathered rows and their gradient (bf16), logits (f32) and their gradient (bf16), row
     * losses (f64); not its cuBLASLt context's workspace */
    return (size_t)chunk * ((size_t)D * 4 + (size_t)V * 6 + 8);
}

gp_ws_sizes gp_ws_estimate(int64_t T, int64_t D, int64_t Hq, int64_t n) {
    return (gp_ws_sizes){(size_t)((T + 15) / 16 * D) * 4, (size_t)(T * Hq) * 4,
                         ((size_t)(n + 65535) / 65536 + 1) * sizeof(double)};
}

int64_t gp_offload_chunk(int64_t state) {
    int64_t c = (state + 7) / 8;
    return c < 4096 ? 4096 : c > ((int64_t)1 << 22) ? (int64_t)1 << 22 : (c + 15) / 16 * 16;
}

int64_t gp_bucket_a(const gp_plan *p) { return p->tied || p->h_len < p->e_len ? p->e_len : p->h_len; }
int64_t gp_bucket_l(const gp_plan *p) { return p->tied && p->h_len > p->layer_len ? p->h_len : p->layer_len; }

void gp_rank_memory(const gp_plan *p, const zr_layout *z, bool offload, size_t ce_ws, gp_mem *o) {
    memset(o, 0, sizeof *o);
    size_t state = (size_t)zr_state_len(z), S = (size_t)z->shard, np = (size_t)z->padded;
    bool sharded = z->ranks > 1 && z->level >= 2, z3 = z->ranks > 1 && z->level == 3;
    o->weights = 2 * (z3 ? S : np);
    o->master = offload ? 0 : 4 * state;
    o->moments = offload ? 0 : 8 * state;
    bool host_grads = offload && sharded;   /* the reduced shard on the host with the optimizer */
    o->grads = host_grads ? 0 : 4 * (sharded ? S : np);
    o->buckets = sharded ? 4 * (size_t)(gp_bucket_a(p) + gp_bucket_l(p)) : 0;
    o->gathered = z3 ? 2 * (size_t)(2 * gp_bucket_l(p) + gp_bucket_a(p)) : 0;
    o->acts = p->norm_ws;                   /* everything of the arena before the kernels' scratch */
    o->workspace = p->act_bytes - p->norm_ws;
    o->ce = ce_ws;
    o->total = o->weights + o->master + o->moments + o->grads + o->buckets + o->gathered + o->acts + o->workspace + o->ce;
    o->host = offload ? 12 * state + 2 * (size_t)gp_offload_chunk((int64_t)state) * (host_grads ? 2 : 6) : 0;
    if (host_grads) o->host += 4 * S;
    if (p->x_host) o->host += (size_t)p->L * 2 * (size_t)(p->T * p->D);   /* x[0..L): x[L] stays */
}

size_t gp_kd_bytes(int64_t T, int64_t K, int64_t A) {
    return (size_t)A * 3 * sizeof(double) + (size_t)T * (size_t)K * 8 + (size_t)T;
}

void gp_mem_add_kd(gp_mem *m, size_t kd_bytes) {
    m->total += kd_bytes - m->kd;
    m->kd = kd_bytes;
}

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
        if (i < 0) return rt_fail(RT_EINTERNAL, "no tensor at offset %lld", (long long)cpu[j]);
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

int gp_plan_init(gp_plan *p, const sm_model *m, int64_t T, bool ckpt, int64_t ce_chunk, int64_t loss_slots,
                 const gp_ws_sizes *ws) {
    memset(p, 0, sizeof *p);
    p->D = m->D, p->F = m->F, p->L = m->L, p->V = m->V, p->Hq = m->Hq, p->Hkv = m->Hkv, p->hd = m->hd;
    p->W = (m->Hq + 2 * m->Hkv) * m->hd;
    if (m->hd != 64 && m->hd != 128)
        return rt_fail(RT_EUNSUPPORTED, "the GPU trainer's attention takes head_dim 64 or 128, the model has %lld", (long long)m->hd);
    if (m->D % 8 || m->F % 8 || m->D > 16384)
        return rt_fail(RT_EUNSUPPORTED, "the GPU kernels take hidden and intermediate sizes that are multiples of 8 (hidden ≤ 16384); the model has %lld and %lld",
                       (long long)m->D, (long long)m->F);
    if (m->Hkv < 1 || m->Hq % m->Hkv)
        return rt_fail(RT_EUNSUPPORTED, "%lld query heads are not a multiple of %lld kv heads", (long long)m->Hq, (long long)m->Hkv);
    if (T < 1) return rt_fail(RT_EINVAL, "a micro-batch of %lld tokens", (long long)T);
    p->n_tensors = m->n_tensors;
    p->off = rt_malloc(m->n_tensors * sizeof *p->off);
    p->layers = rt_malloc((size_t)m->L * sizeof *p->layers);
    p->x = rt_malloc((size_t)(m->L + 1) * sizeof *p->x);
    p->ckpt = ckpt;
    p->keep = rt_malloc((size_t)(ckpt || m->L == 0 ? 1 : m->L) * sizeof *p->keep);
    if (!p->off || !p->layers || !p->x || !p->keep) { gp_plan_free(p); return RT_ENOMEM; }
    for (size_t i = 0; i < m->n_tensors; i++) p->off[i] = -1;

    /* parameters: embed, layers, final norm, untied head */
    placer pl = {m, p, 0};
    int rc = place(&pl, &m->embed, 1, &p->embed);
    for (int64_t l = 0; !rc && l < m->L; l++) {
        const sm_layer_off *c = &m->layers[l];
        gp_layer_off *g = &p->layers[l];
        int64_t qkv[3] = {c->wq, c->wk, c->wv}, bqkv[3] = {c->bq, c->bk, c->bv}, gu[2] = {c->wg, c->wu},
                bgu[2] = {c->bg, c->bu};
        if (!rc) rc = place(&pl, &c->attn_norm, 1, &g->attn_norm);
        if (!rc) rc = place(&pl, qkv, 3, &g->wqkv);
        if (!rc) rc = place(&pl, bqkv, 3, &g->bqkv);
        if (!rc) rc = place(&pl, &c->wo, 1, &g->wo);
        if (!rc) rc = place(&pl, &c->bo, 1, &g->bo);
        if (!rc) rc = place(&pl, &c->mlp_norm, 1, &g->mlp_norm);
        if (!rc) rc = place(&pl, gu, 2, &g->wgu);
        if (!rc) rc = place(&pl, bgu, 2, &g->bgu);
        if (!rc) rc = place(&pl, &c->wd, 1, &g->wd);
        if (!rc) rc = place(&pl, &c->bd, 1, &g->bd);
    }
    if (!rc) rc = place(&pl, &m->norm_f, 1, &p->norm_f);
    if (!rc && m->lm_head != m->embed) rc = place(&pl, &m->lm_head, 1, &p->lm_head);
    else p->lm_head = p->embed;
    for (size_t i = 0; !rc && i < m->n_tensors; i++)
        if (p->off[i] < 0) rc = rt_fail(RT_EUNSUPPORTED, "tensor %s has no place on the GPU path", m->tensors[i].name);
    if (rc) { gp_plan_free(p); return rc; }
    p->n = pl.at;

    /* activations */
    int64_t D = m->D, F = m->F, W = p->W, qd = m->Hq * m->hd;
    p->T = T;
    p->ce_chunk = gp_ce_chunk(ce_chunk, T, m->V);
    p->loss_slots = loss_slots < 1 ? 1 : loss_slots;
    size_t at = 0, bf = 2, f4 = 4, tD = (size_t)(T * D);
    for (int64_t l = 0; l <= m->L; l++) p->x[l] = take(&at, bf * tD);
    p->x_bytes = at;
    int64_t sets = ckpt || m->L == 0 ? 1 : m->L;
    for (int64_t s = 0; s < sets; s++) {
        size_t s0 = at;
        gp_layer_acts *k = &p->keep[s];
        k->xn1 = take(&at, bf * tD);
        k->qkv = take(&at, bf * (size_t)(T * W));
        k->att = take(&at, bf * (size_t)(T * qd));
        k->lse = take(&at, f4 * (size_t)(T * m->Hq));
        k->rstd1 = take(&at, f4 * (size_t)T);
        k->mid = take(&at, bf * tD);
        k->xn2 = take(&at, bf * tD);
        k->rstd2 = take(&at, f4 * (size_t)T);
        k->gu = take(&at, bf * (size_t)(T * 2 * F));
        k->act = take(&at, bf * (size_t)(T * F));
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
    p->norm_ws = take(&at, ws->norm_ws);
    p->attn_ws = take(&at, ws->attn_ws);
    p->sumsq_ws = take(&at, ws->sumsq_ws);
    p->batch = take(&at, 4 * (size_t)(7 * T + 1));
    p->inv_freq = take(&at, f4 * (size_t)(m->hd / 2));
    p->loss = take(&at, 8 * (size_t)p->loss_slots);
    p->sumsq = take(&at, 8);
    p->act_bytes = at;
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

void gp_from_gpu(const gp_plan *p, const sm_model *m, const float *gpu, float *cpu) {
    for (size_t i = 0; i < m->n_tensors; i++)
        memcpy(cpu + m->tensors[i].offset, gpu + p->off[i], (size_t)m->tensors[i].numel * sizeof(float));
}

size_t gp_ce_ws_estimate(int64_t chunk, int64_t V, int64_t D) {
    /* gathered rows and their gradient (bf16), logits (f32) and their gradient (bf16), row
     * losses (f64); not its cuBLASLt context's workspace (bench/train_gpu_mem.py leaves
     * those out too) */
    return (size_t)chunk * ((size_t)D * 4 + (size_t)V * 6 + 8);
}

void gp_plan_memory(const gp_plan *p, const zr_layout *z, size_t ce_ws, gp_mem *o) {
    size_t state = (size_t)zr_state_len(z);
    o->weights = 2 * (size_t)z->padded;
    o->master = 4 * state;
    o->moments = 8 * state;
    o->grads = 4 * (size_t)z->padded;
    o->acts = p->act_bytes;
    o->ce = ce_ws;
    o->total = o->weights + o->master + o->moments + o->grads + o->acts + o->ce;
}

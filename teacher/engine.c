/* teacher/engine.c — model interface, request queue, batching, sampling (see engine.h). */
#include "teacher/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "teacher/deepseek.h"
#include "teacher/dense.h"
#include "teacher/dense_cuda.h"
#include "teacher/ds_cuda.h"
#include "teacher/kvcache.h"
#include "teacher/parallel.h"

/* ---- the model interface --------------------------------------------------------------- */

struct te_model {
    mc_config c;
    dn_model *dense;     /* exactly one of dense, ds, gpu, dsg */
    ds_model *ds;
    dc_model *gpu;       /* the dense forward on CUDA (teacher/dense_cuda.h) */
    dsc_model *dsg;      /* the DeepSeek-V3 forward on CUDA (teacher/ds_cuda.h) */
};

int te_model_load(const char *dir, tp_pool *pool, te_model **out) { return te_model_load_comm(dir, pool, NULL, out); }

int te_device_parse(const char *s, te_device *out) {
    if (s && !strcmp(s, "cpu")) *out = TE_DEVICE_CPU;
    else if (s && !strcmp(s, "cuda")) *out = TE_DEVICE_CUDA;
    else return rt_fail(RT_EINVAL, "unknown device \"%s\" (cpu or cuda)", s ? s : "");
    return 0;
}

const char *te_device_name(te_device d) { return d == TE_DEVICE_CUDA ? "cuda" : "cpu"; }

int te_model_load_opts(const char *dir, const te_load_opts *o, te_model **out) {
    *out = NULL;
    if (o->device == TE_DEVICE_CPU) return te_model_load_comm(dir, o->pool, o->comm, out);
#ifndef RT_HAVE_CUDA
    return rt_fail(RT_EUNSUPPORTED, "--device cuda: this retort was built without CUDA (rebuild with make CUDA=1)");
#else
    te_model *m = rt_calloc(1, sizeof *m);
    if (!m) return RT_ENOMEM;
    int rc = mc_load(dir, &m->c);
    if (rc) rc = rt_errorf(rc, "loading model %s", dir);
    else if (m->c.arch == MC_ARCH_DEEPSEEK_V3) {   /* tensor + expert parallel over o->comm's ranks */
        int gpu = o->gpu >= 0 ? o->gpu : (o->comm ? comm_local_rank(o->comm) : 0);
        dsc_load_opts d = {.gpu = gpu, .memory_fraction = o->gpu_memory_fraction, .comm = o->comm,
                            .no_cuda_graphs = o->no_cuda_graphs};
        rc = dsc_load(dir, &d, &m->dsg);
    } else {
        int gpu = o->gpu >= 0 ? o->gpu : (o->comm ? comm_local_rank(o->comm) : 0);
        dc_load_opts d = {.gpu = gpu, .memory_fraction = o->gpu_memory_fraction, .comm = o->comm,
                           .no_cuda_graphs = o->no_cuda_graphs};
        rc = dc_load(dir, &d, &m->gpu);
    }
    if (rc) {
        te_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
#endif
}

int te_model_load_comm(const char *dir, tp_pool *pool, rt_comm *comm, te_model **out) {
    *out = NULL;
    bool par = comm && comm_size(comm) > 1;
    te_model *m = rt_calloc(1, sizeof *m);
    if (!m) return RT_ENOMEM;
    int rc = mc_load(dir, &m->c);
    if (rc) rc = rt_errorf(rc, "loading model %s", dir);
    else if (m->c.arch == MC_ARCH_DEEPSEEK_V3) {
        ds_load_opts o = {.pool = pool, .load_mtp = false};
        rc = par ? ds_load_parallel(dir, &o, comm, &m->ds) : ds_load(dir, &o, &m->ds);
    } else if (par) {
        rc = rt_fail(RT_EUNSUPPORTED,
                     "model %s: %d ranks, but only DeepSeek-V3 models (model_type deepseek_v3) run over several "
                     "ranks; run this model without mpirun",
                     dir, comm_size(comm));
    } else {
        rc = dn_load(dir, pool, &m->dense);
    }
    if (rc) {
        te_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void te_model_free(te_model *m) {
    if (!m) return;
    dn_free(m->dense);
    ds_free(m->ds);
    dc_free(m->gpu);
    dsc_free(m->dsg);
    free(m);
}

const mc_config *te_model_config(const te_model *m) { return &m->c; }
bool te_model_is_deepseek(const te_model *m) { return m->ds != NULL; }

size_t te_model_resident_bytes(const te_model *m) {
    if (m->gpu) return dc_get_plan(m->gpu)->weights;
    if (m->dsg) return dsc_get_plan(m->dsg)->weights;
    return m->ds ? ds_resident_bytes(m->ds) : dn_resident_bytes(m->dense);
}

static size_t model_block_floats(const te_model *m, int64_t bs) {
    if (m->gpu || m->dsg) return 0;   /* the blocks live on the GPU; the host pool keeps tables only */
    return m->ds ? ds_block_floats(m->ds, bs) : dn_block_floats(m->dense, bs);
}

/* Does the model sample n rows on the device (ds_cuda, dense_cuda: only the drawn ids, their
 * logprobs and top-k logprobs come back)? */
static bool device_sampling(const te_model *m, int64_t n) {
    return (m->dsg && n <= dsc_get_plan(m->dsg)->max_seqs) || (m->gpu && n <= dc_get_plan(m->gpu)->max_seqs);
}

/* The one forward the engine calls: sequences append n_new tokens each; logits of the last (left
 * on the device instead when device_sampling). */
static int model_forward(te_model *m, kv_pool *kv, kv_seq *const *seqs, const int32_t *n_new, int64_t n_seqs,
                         const int32_t *tokens, float *logits) {
    if (m->ds) return ds_forward_paged(m->ds, kv, seqs, n_new, n_seqs, tokens, DS_ATTN_AUTO, logits, false);
    if (m->gpu) return dc_forward(m->gpu, kv, seqs, n_new, n_seqs, tokens, device_sampling(m, n_seqs) ? NULL : logits);
    if (m->dsg)
        return dsc_forward(m->dsg, kv, seqs, n_new, n_seqs, tokens, device_sampling(m, n_seqs) ? NULL : logits);
    return dn_forward(m->dense, kv, seqs, n_new, n_seqs, tokens, logits, false);
}

/* ---- requests and sequences ------------------------------------------------------------ */

typedef struct req {
    te_request r;                  /* pointers below are owned copies */
    int32_t *prompt, *stop_ids;
    char **stop;
    size_t max_stop_len;
    int remaining;                 /* samples not finished */
    int64_t reserved;              /* cache blocks reserved while running */
    struct req *next;              /* queue */
} req;

typedef struct {
    req *r;
    int sample;
    kv_seq kv;
    int32_t *ids;
    float *lp, *top_lp;
    int32_t *top_ids;
    int64_t n_ids, cap;            /* cap = r->max_tokens */
} seq;

struct te_engine {
    te_model *m;
    te_opts o;
    int64_t V, blocks_total, blocks_reserved, bs;
    int64_t n_valid;               /* ids [0, n_valid) can be drawn: the tokenizer's (≤ V) */
    int32_t *holes;                /* ids below n_valid the tokenizer has no token for */
    int64_t n_holes;
    kv_pool *kv;
    req *head, *tail;              /* queue */
    int n_queued;
    seq **run;                     /* running sequences */
    int n_run, cap_run;
    float *logits;                 /* [cap_run or prefill rows, V] */
    size_t logits_rows;
    smp_params *d_par;             /* device sampling's per-row arguments and results [cap_dev] */
    uint64_t *d_rng;
    int32_t *d_row, *d_tok;
    float *d_lp;
    int *d_fin;
    int cap_dev;
    int32_t *d_top_ids;            /* device sampling's top-k logprobs [cap_top] */
    float *d_top_lp;
    size_t cap_top;
    void *smp_ws;
    te_result *done;
    size_t n_done, cap_done;
    int64_t prompt_tokens, generated_tokens, steps;
};

static void req_free(req *q) {
    if (!q) return;
    free(q->prompt);
    free(q->stop_ids);
    for (int i = 0; q->stop && i < q->r.n_stop; i++) free(q->stop[i]);
    free(q->stop);
    free(q);
}

static void seq_free(te_engine *e, seq *s) {
    if (!s) return;
    if (e->kv) kv_seq_release(e->kv, &s->kv);
    free(s->ids);
    free(s->lp);
    free(s->top_lp);
    free(s->top_ids);
    free(s);
}

/* The ids the tokenizer names: models pad their vocabulary beyond it (Qwen2.5: 151,936 rows
 * for 151,665 tokens), and an id without a token can never be drawn. */
static int valid_ids(te_engine *e) {
    size_t n = tok_vocab_size(e->o.tok);
    if ((int64_t)n < e->n_valid) e->n_valid = (int64_t)n;
    for (int64_t i = 0; i < e->n_valid; i++)
        if (!tok_id_to_token(e->o.tok, (int32_t)i)) e->n_holes++;
    if (e->n_valid <= 0 || e->n_holes == e->n_valid)
        return rt_fail(RT_EINVAL, "the tokenizer names none of the model's %lld token ids", (long long)e->V);
    if (!e->n_holes) return 0;
    if (!(e->holes = rt_malloc((size_t)e->n_holes * sizeof *e->holes))) return RT_ENOMEM;
    int64_t k = 0;
    for (int64_t i = 0; i < e->n_valid; i++)
        if (!tok_id_to_token(e->o.tok, (int32_t)i)) e->holes[k++] = (int32_t)i;
    return 0;
}

int te_engine_create(te_model *m, const te_opts *opts, te_engine **out) {
    *out = NULL;
    te_engine *e = rt_calloc(1, sizeof *e);
    if (!e) return RT_ENOMEM;
    e->m = m;
    if (opts) e->o = *opts;
    if (e->o.max_batch <= 0) e->o.max_batch = 16;
    if (e->o.cache_tokens <= 0) e->o.cache_tokens = 65536;
    if (e->o.block_size <= 0) e->o.block_size = 16;
    if (e->o.prefill_chunk <= 0) e->o.prefill_chunk = 512;
    e->bs = e->o.block_size;
    e->V = m->c.vocab_size;
    e->n_valid = e->V;
    e->blocks_total = (e->o.cache_tokens + e->bs - 1) / e->bs;
    int rc = 0;
    if (m->gpu || m->dsg) {   /* the GPU's plan sizes the cache: all of it by default, never more */
        int64_t nb = 0;
        rc = m->gpu ? dc_cache_init(m->gpu, e->bs, &nb) : dsc_cache_init(m->dsg, e->bs, &nb);
        if (!rc && (!opts || opts->cache_tokens <= 0 || e->blocks_total > nb)) e->blocks_total = nb;
        e->o.cache_tokens = e->blocks_total * e->bs;
    }
    if (!rc) rc = kv_pool_create(e->blocks_total, e->bs, model_block_floats(m, e->bs), &e->kv);
    if (!rc && !(e->smp_ws = rt_malloc(smp_workspace_bytes(e->V)))) rc = RT_ENOMEM;
    if (!rc && e->o.tok) rc = valid_ids(e);
    if (rc) {
        te_engine_free(e);
        return rt_errorf(rc, "engine with a cache of %lld positions", (long long)e->o.cache_tokens);
    }
    *out = e;
    return 0;
}

void te_engine_free(te_engine *e) {
    if (!e) return;
    for (int i = 0; i < e->n_run; i++) {
        req *q = e->run[i]->r;
        if (--q->remaining == 0) req_free(q);
        seq_free(e, e->run[i]);
    }
    while (e->head) {
        req *q = e->head;
        e->head = q->next;
        req_free(q);
    }
    te_results_free(e->done, e->n_done);
    kv_pool_free(e->kv);
    free(e->run);
    free(e->logits);
    free(e->smp_ws);
    free(e->holes);
    free(e->d_par), free(e->d_rng), free(e->d_row), free(e->d_tok), free(e->d_lp), free(e->d_fin);
    free(e->d_top_ids), free(e->d_top_lp);
    free(e);
}

void te_results_free(te_result *r, size_t n) {
    if (!r) return;
    for (size_t i = 0; i < n; i++) {
        free(r[i].ids);
        free(r[i].logprobs);
        free(r[i].top_ids);
        free(r[i].top_logprobs);
    }
    free(r);
}

bool te_busy(const te_engine *e) { return e->head || e->n_run > 0; }

void te_stats_get(const te_engine *e, te_stats *s) {
    *s = (te_stats){.prompt_tokens = e->prompt_tokens, .generated_tokens = e->generated_tokens, .steps = e->steps,
                    .running = e->n_run, .queued = e->n_queued, .blocks_reserved = e->blocks_reserved,
                    .blocks_total = e->blocks_total,
                    .blocks_in_use = kv_pool_blocks(e->kv) - kv_pool_free_blocks(e->kv)};
}

int te_cancel(te_engine *e, uint64_t tag) {
    int dropped = 0, kept = 0;
    for (int i = 0; i < e->n_run; i++) {
        seq *s = e->run[i];
        req *q = s->r;
        if (q->r.tag != tag) {
            e->run[kept++] = s;
            continue;
        }
        if (--q->remaining == 0) {
            e->blocks_reserved -= q->reserved;
            req_free(q);
        }
        seq_free(e, s);
        dropped++;
    }
    e->n_run = kept;
    req *prev = NULL;
    for (req *q = e->head; q;) {
        req *next = q->next;
        if (q->r.tag == tag) {
            if (prev) prev->next = next;
            else e->head = next;
            if (e->tail == q) e->tail = prev;
            e->n_queued--;
            req_free(q);
            dropped++;
        } else {
            prev = q;
        }
        q = next;
    }
    return dropped;
}

/* Blocks a request may ever use (see the header). */
static int64_t blocks_needed(const te_engine *e, const te_request *r) {
    int64_t full = (r->n_prompt + r->max_tokens + e->bs - 1) / e->bs;
    return full + (int64_t)(r->n_samples - 1) * (full - r->n_prompt / e->bs);
}

int te_submit(te_engine *e, const te_request *r) {
    const mc_config *c = &e->m->c;
    TRY(smp_check(&r->sampling));
    if (r->n_prompt <= 0) return rt_fail(RT_EINVAL, "empty prompt");
    if (r->n_samples < 1) return rt_fail(RT_EINVAL, "n = %d samples", r->n_samples);
    if (r->max_tokens < 1) return rt_fail(RT_EINVAL, "max_tokens %lld must be >= 1", (long long)r->max_tokens);
    if (r->top_logprobs < 0 || r->top_logprobs > TE_MAX_TOP_LOGPROBS || r->top_logprobs > e->n_valid)
        return rt_fail(RT_EINVAL, "top_logprobs %d outside 0..%d", r->top_logprobs, TE_MAX_TOP_LOGPROBS);
    if (r->n_stop > 0 && !e->o.tok) return rt_fail(RT_EINVAL, "stop strings need a tokenizer");
    for (int64_t i = 0; i < r->n_prompt; i++)
        if (r->prompt[i] < 0 || r->prompt[i] >= e->V)
            return rt_fail(RT_EINVAL, "prompt token %d outside the vocabulary of %lld", r->prompt[i], (long long)e->V);
    if (r->n_prompt >= c->max_position_embeddings)
        return rt_fail(RT_ERANGE, "prompt of %lld tokens leaves no room in the model's context of %lld",
                       (long long)r->n_prompt, (long long)c->max_position_embeddings);
    req *q = rt_calloc(1, sizeof *q);
    if (!q) return RT_ENOMEM;
    q->r = *r;
    if (q->r.max_tokens > c->max_position_embeddings - r->n_prompt) q->r.max_tokens = c->max_position_embeddings - r->n_prompt;
    int rc = 0;
    int64_t need = blocks_needed(e, &q->r);
    if (need > e->blocks_total)
        rc = rt_fail(RT_ERANGE, "a request of %lld prompt tokens, %d samples of up to %lld tokens needs %lld cache "
                     "positions; the cache holds %lld", (long long)r->n_prompt, r->n_samples, (long long)q->r.max_tokens,
                     (long long)(need * e->bs), (long long)(e->blocks_total * e->bs));
    q->prompt = rt_malloc((size_t)r->n_prompt * sizeof(int32_t));
    int n_ids = r->n_stop_ids + (r->ignore_config_eos ? 0 : c->n_eos);
    q->stop_ids = rt_malloc((size_t)(n_ids + 1) * sizeof(int32_t));
    q->stop = r->n_stop > 0 ? rt_calloc((size_t)r->n_stop, sizeof(char *)) : NULL;
    if (!rc && (!q->prompt || !q->stop_ids || (r->n_stop > 0 && !q->stop))) rc = RT_ENOMEM;
    if (!rc) {
        memcpy(q->prompt, r->prompt, (size_t)r->n_prompt * sizeof(int32_t));
        for (int i = 0; i < r->n_stop_ids; i++) q->stop_ids[i] = r->stop_ids[i];
        for (int i = 0; i < n_ids - r->n_stop_ids; i++) q->stop_ids[r->n_stop_ids + i] = (int32_t)c->eos_token_ids[i];
        q->r.prompt = q->prompt;
        q->r.stop_ids = q->stop_ids;
        q->r.n_stop_ids = n_ids;
        for (int i = 0; i < r->n_stop && !rc; i++) {
            if (!r->stop[i] || !r->stop[i][0]) rc = rt_fail(RT_EINVAL, "empty stop string");
            else if (!(q->stop[i] = rt_strdup(r->stop[i]))) rc = RT_ENOMEM;
            else if (strlen(q->stop[i]) > q->max_stop_len) q->max_stop_len = strlen(q->stop[i]);
        }
        q->r.stop = (const char *const *)q->stop;
    }
    if (rc) {
        if (!q->stop) q->r.n_stop = 0;
        req_free(q);
        return rc;
    }
    q->reserved = need;
    q->remaining = r->n_samples;
    if (e->tail) e->tail->next = q;
    else e->head = q;
    e->tail = q;
    e->n_queued++;
    return 0;
}

/* ---- stepping -------------------------------------------------------------------------- */

static int ensure_logits(te_engine *e, size_t rows) {
    if (rows <= e->logits_rows) return 0;
    size_t bytes;
    if (!rt_mul_ok(rows * (size_t)e->V, sizeof(float), &bytes)) return RT_ENOMEM;
    float *p = rt_realloc(e->logits, bytes);
    if (!p) return RT_ENOMEM;
    e->logits = p;
    e->logits_rows = rows;
    return 0;
}

static int ensure_run(te_engine *e, int more) {
    size_t cap = (size_t)e->cap_run;
    TRY(rt_grow((void **)&e->run, &cap, (size_t)(e->n_run + more), sizeof *e->run));
    e->cap_run = (int)cap;
    return 0;
}

static seq *seq_new(te_engine *e, req *q, int sample) {
    seq *s = rt_calloc(1, sizeof *s);
    if (!s) return NULL;
    s->r = q;
    s->sample = sample;
    s->cap = q->r.max_tokens;
    s->ids = rt_malloc((size_t)s->cap * sizeof(int32_t));
    if (q->r.logprobs) s->lp = rt_malloc((size_t)s->cap * sizeof(float));
    if (q->r.top_logprobs > 0) {
        s->top_ids = rt_malloc((size_t)(s->cap * q->r.top_logprobs) * sizeof(int32_t));
        s->top_lp = rt_malloc((size_t)(s->cap * q->r.top_logprobs) * sizeof(float));
    }
    if (!s->ids || (q->r.logprobs && !s->lp) || (q->r.top_logprobs > 0 && (!s->top_ids || !s->top_lp))) {
        seq_free(e, s);
        return NULL;
    }
    return s;
}

/* Does the generated text end in one of the stop strings? Decodes only the tail that can
 * hold the longest one (each token is at least one byte). Returns its index or -1. */
static int stop_string_hit(const te_engine *e, const seq *s) {
    const req *q = s->r;
    if (q->r.n_stop == 0) return -1;
    int64_t n = (int64_t)q->max_stop_len + 1;
    if (n > s->n_ids) n = s->n_ids;
    char *text = NULL;
    size_t len;
    if (tok_decode(e->o.tok, s->ids + s->n_ids - n, (size_t)n, false, &text, &len)) return -1;
    int hit = -1;
    for (int i = 0; i < q->r.n_stop && hit < 0; i++)
        if (strstr(text, q->stop[i])) hit = i;
    free(text);
    return hit;
}

static int finish(te_engine *e, seq *s, te_finish why, int stop_string) {
    size_t cap = e->cap_done;
    TRY(rt_grow((void **)&e->done, &cap, e->n_done + 1, sizeof *e->done));
    e->cap_done = cap;
    req *q = s->r;
    e->done[e->n_done++] = (te_result){.tag = q->r.tag, .sample = s->sample, .ids = s->ids, .n_ids = s->n_ids,
                                       .logprobs = s->lp, .top_ids = s->top_ids, .top_logprobs = s->top_lp,
                                       .top_k = q->r.top_logprobs, .finish = why, .stop_string = stop_string,
                                       .n_prompt = q->r.n_prompt};
    s->ids = NULL;
    s->lp = s->top_lp = NULL;
    s->top_ids = NULL;
    if (--q->remaining == 0) {
        e->blocks_reserved -= q->reserved;
        req_free(q);
    }
    seq_free(e, s);
    return 0;
}

/* Appends the drawn token tok (logprob lp) to s; logits [V]: the masked row it was drawn from,
 * read only for top-k logprobs, unless top_ids / top_lp (the device's, ≥ the request's k of them,
 * best first) give them. *finished = 1 when s finished (and is freed). */
static int accept(te_engine *e, seq *s, const float *logits, const int32_t *top_ids, const float *top_lp, int32_t tok,
                  float lp, int *finished) {
    req *q = s->r;
    *finished = 0;
    int64_t t = s->n_ids;
    if (s->lp) s->lp[t] = lp;
    if (s->top_ids) {
        int k = q->r.top_logprobs;
        if (top_ids) {
            memcpy(s->top_ids + t * k, top_ids, (size_t)k * sizeof(int32_t));
            memcpy(s->top_lp + t * k, top_lp, (size_t)k * sizeof(float));
        } else {
            smp_top_logprobs(logits, e->n_valid, k, s->top_ids + t * k, s->top_lp + t * k);
        }
    }
    s->ids[s->n_ids++] = tok;
    e->generated_tokens++;
    if (e->o.on_token) {
        int k = q->r.top_logprobs;
        te_token ev = {.tag = q->r.tag, .sample = s->sample, .index = t, .id = tok, .has_logprob = s->lp != NULL,
                       .logprob = s->lp ? s->lp[t] : 0, .top_ids = s->top_ids ? s->top_ids + t * k : NULL,
                       .top_logprobs = s->top_lp ? s->top_lp + t * k : NULL, .top_k = s->top_ids ? k : 0};
        e->o.on_token(e->o.user, &ev);
    }
    for (int i = 0; i < q->r.n_stop_ids; i++)
        if (tok == q->r.stop_ids[i]) {
            *finished = 1;
            return finish(e, s, TE_FINISH_STOP, -1);
        }
    int hit = stop_string_hit(e, s);
    if (hit >= 0) {
        *finished = 1;
        return finish(e, s, TE_FINISH_STOP, hit);
    }
    if (s->n_ids >= s->cap) {
        *finished = 1;
        return finish(e, s, TE_FINISH_LENGTH, -1);
    }
    return 0;
}

/* Draws the next token of s from logits [V] on the host; *finished as accept. */
static int advance(te_engine *e, seq *s, float *logits, int *finished) {
    req *q = s->r;
    int32_t tok;
    *finished = 0;
    for (int64_t i = 0; i < e->n_holes; i++) logits[e->holes[i]] = -INFINITY;
    TRY(smp_sample(logits, e->n_valid, &q->r.sampling, smp_uniform(q->r.seed, (uint64_t)s->sample, (uint64_t)s->n_ids),
                   e->smp_ws, &tok));
    return accept(e, s, logits, NULL, NULL, tok, s->lp ? smp_logprob(logits, e->n_valid, tok) : 0.0f, finished);
}

/* Draws the next token of ss[i] from the device's logits row row_of[i] (ds_cuda, dense_cuda),
 * all at once, with the top-k logprobs of the largest k asked (each takes its first k: the
 * order is total), then accepts them in order; fin[i] as accept's. The same draw as advance:
 * params, uniform, holes, logprob. */
static int advance_device(te_engine *e, seq **ss, const int32_t *row_of, int n, int *fin) {
    if (n > e->cap_dev) {
        free(e->d_par), free(e->d_rng), free(e->d_row), free(e->d_tok), free(e->d_lp), free(e->d_fin);
        e->d_par = rt_malloc((size_t)n * sizeof *e->d_par), e->d_rng = rt_malloc((size_t)n * 3 * sizeof *e->d_rng);
        e->d_row = rt_malloc((size_t)n * sizeof *e->d_row), e->d_tok = rt_malloc((size_t)n * sizeof *e->d_tok);
        e->d_lp = rt_malloc((size_t)n * sizeof *e->d_lp), e->d_fin = rt_malloc((size_t)n * sizeof *e->d_fin);
        e->cap_dev = n;
        if (!e->d_par || !e->d_rng || !e->d_row || !e->d_tok || !e->d_lp || !e->d_fin) {
            e->cap_dev = 0;
            return RT_ENOMEM;
        }
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        const seq *s = ss[i];
        e->d_par[i] = s->r->r.sampling;
        e->d_rng[3 * i] = s->r->r.seed, e->d_rng[3 * i + 1] = (uint64_t)s->sample, e->d_rng[3 * i + 2] = (uint64_t)s->n_ids;
        fin[i] = 0;
        if (s->top_ids && s->r->r.top_logprobs > k) k = s->r->r.top_logprobs;
    }
    if ((size_t)(n * k) > e->cap_top) {
        free(e->d_top_ids), free(e->d_top_lp);
        e->d_top_ids = rt_malloc((size_t)(n * k) * sizeof *e->d_top_ids);
        e->d_top_lp = rt_malloc((size_t)(n * k) * sizeof *e->d_top_lp);
        e->cap_top = (size_t)(n * k);
        if (!e->d_top_ids || !e->d_top_lp) {
            e->cap_top = 0;
            return RT_ENOMEM;
        }
    }
    if (e->m->dsg)
        TRY(dsc_sample(e->m->dsg, n, row_of, e->n_valid, e->holes, e->n_holes, e->d_par, e->d_rng, e->d_tok, e->d_lp,
                       k, e->d_top_ids, e->d_top_lp));
    else
        TRY(dc_sample(e->m->gpu, n, row_of, e->n_valid, e->holes, e->n_holes, e->d_par, e->d_rng, e->d_tok, e->d_lp,
                      k, e->d_top_ids, e->d_top_lp));
    int rc = 0;
    for (int i = 0; i < n && !rc; i++)
        rc = accept(e, ss[i], NULL, k ? e->d_top_ids + i * k : NULL, k ? e->d_top_lp + i * k : NULL, e->d_tok[i],
                    e->d_lp[i], &fin[i]);
    return rc;
}

/* Runs the prompt of q through the model on s0's cache, prefill_chunk tokens per forward; the
 * last row's logits in e->logits. */
static int prefill(te_engine *e, seq *s0) {
    const req *q = s0->r;
    int64_t n = q->r.n_prompt, chunk = e->o.prefill_chunk;
    TRY(ensure_logits(e, 1));
    kv_seq *sp = &s0->kv;
    for (int64_t at = 0; at < n; at += chunk) {
        int32_t c = (int32_t)(n - at < chunk ? n - at : chunk);
        TRY(model_forward(e->m, e->kv, &sp, &c, 1, q->prompt + at, e->logits));
    }
    return 0;
}

/* Admits q: prefill once, n samples from its last logits. */
static int admit(te_engine *e, req *q) {
    int n = q->r.n_samples;
    TRY(ensure_run(e, n));
    e->blocks_reserved += q->reserved;
    seq **ss = rt_calloc((size_t)n, sizeof *ss);
    if (!ss) return RT_ENOMEM;
    int rc = 0;
    for (int j = 0; j < n && !rc; j++)
        if (!(ss[j] = seq_new(e, q, j))) rc = RT_ENOMEM;
    if (!rc) rc = prefill(e, ss[0]);
    for (int j = 1; j < n && !rc; j++) rc = kv_seq_fork(e->kv, &ss[0]->kv, &ss[j]->kv);
    if (rc) {   /* the request is dropped: nothing of it runs */
        for (int j = 0; j < n; j++) seq_free(e, ss[j]);
        e->blocks_reserved -= q->reserved;
        req_free(q);
        free(ss);
        return rc;
    }
    e->prompt_tokens += q->r.n_prompt;
    /* every sample's first token from the prompt's logits (finish may free q: copy first) */
    if (device_sampling(e->m, n)) {
        int32_t *rows = rt_calloc((size_t)n, sizeof *rows);   /* all from the prompt's row 0 */
        int *fin = rt_calloc((size_t)n, sizeof *fin);
        rc = rows && fin ? advance_device(e, ss, rows, n, fin) : RT_ENOMEM;
        for (int j = 0; j < n && fin; j++)   /* on an error too: the engine frees what runs */
            if (!fin[j]) e->run[e->n_run++] = ss[j];
        free(rows);
        free(fin);
        free(ss);
        return rc;
    }
    float *lg = e->logits;
    /* more samples than a device pass: the host draws */
    if (e->m->dsg) rc = dsc_logits_row(e->m->dsg, 0, lg);
    else if (e->m->gpu) rc = dc_logits_row(e->m->gpu, 0, lg);
    for (int j = 0; j < n && !rc; j++) {
        int fin;
        rc = advance(e, ss[j], lg, &fin);
        if (!rc && !fin) e->run[e->n_run++] = ss[j];
        ss[j] = NULL;
    }
    free(ss);
    return rc;
}

static int admit_queued(te_engine *e) {
    while (e->head) {
        req *q = e->head;
        bool room = e->n_run == 0 || e->n_run + q->r.n_samples <= e->o.max_batch;
        if (!room || e->blocks_reserved + q->reserved > e->blocks_total) break;
        e->head = q->next;
        if (!e->head) e->tail = NULL;
        q->next = NULL;
        e->n_queued--;
        TRY(admit(e, q));
    }
    return 0;
}

static int decode(te_engine *e) {
    int n = e->n_run;
    if (n == 0) return 0;
    TRY(ensure_logits(e, (size_t)n));
    kv_seq **kv = rt_malloc((size_t)n * sizeof *kv);
    int32_t *one = rt_malloc((size_t)n * 2 * sizeof(int32_t));
    if (!kv || !one) {
        free(kv);
        free(one);
        return RT_ENOMEM;
    }
    int32_t *tok = one + n;
    for (int i = 0; i < n; i++) {
        kv[i] = &e->run[i]->kv;
        one[i] = 1;
        tok[i] = e->run[i]->ids[e->run[i]->n_ids - 1];
    }
    int frc = model_forward(e->m, e->kv, kv, one, n, tok, e->logits);
    free(kv);
    if (!frc && device_sampling(e->m, n)) {
        int32_t *rows = one;   /* row i: sequence i */
        for (int i = 0; i < n; i++) rows[i] = i;
        int *fin = rt_calloc((size_t)n, sizeof *fin);
        int rc = fin ? advance_device(e, e->run, rows, n, fin) : RT_ENOMEM;
        free(one);
        int kept = 0;
        for (int i = 0; i < n && fin; i++)
            if (!fin[i]) e->run[kept++] = e->run[i];
        if (fin) e->n_run = kept;
        free(fin);
        return rc;
    }
    free(one);
    TRY(frc);
    int kept = 0, rc = 0;
    for (int i = 0; i < n; i++) {
        int fin = 0;
        seq *s = e->run[i];
        if (!rc) rc = advance(e, s, e->logits + (size_t)i * e->V, &fin);
        if (!fin) e->run[kept++] = s;
    }
    e->n_run = kept;
    return rc;
}

int te_step(te_engine *e, te_result **results, size_t *n_results) {
    *results = NULL;
    *n_results = 0;
    int rc = decode(e);
    if (!rc) rc = admit_queued(e);
    e->steps++;
    *results = e->done;
    *n_results = e->n_done;
    e->done = NULL;
    e->n_done = e->cap_done = 0;
    return rc;
}

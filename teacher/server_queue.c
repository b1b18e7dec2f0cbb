/* teacher/server_queue.c — the job queue and the engine thread of `retort serve` (see
 * server_queue.h).
 *
 * Connections hand jobs over through q->pending (and q->wake); cancellations come through
 * q->cancel as engine tags. The engine thread takes both at the top of each turn
 * (take_handed), submits the new jobs (te_submit; in lockstep they go with the step), steps
 * the engine once (te_step or pe_step) without the lock, then applies the step under the lock
 * (apply_step): refused submissions, finished choices, and one notify per job that changed.
 */
#include "teacher/server_queue.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/hash.h"
#include "core/alloc.h"
#include "core/status.h"
#include "teacher/parallel_engine.h"

struct sq {
    sq_opts o;
    te_model *m;
    const tok_tokenizer *tok;
    te_engine *e;
    int64_t ctx, vocab;
    pthread_t engine_thread;
    bool engine_started;
    pthread_mutex_t mu;
    pthread_cond_t wake, drained;
    sq_job *pending, *pending_tail;
    int n_pending;
    uint64_t *cancel;
    size_t n_cancel, cap_cancel;
    sq_job **active;                /* engine thread only */
    size_t n_active, cap_active;
    bool stop_engine, draining;
    int in_flight;
    uint64_t next_tag, next_id;
    te_stats st;
    double tps;
};

static uint64_t mix64(uint64_t x) { return rt_mix64(x + RT_GOLDEN_GAMMA); }   /* one splitmix64 step from x */

void sq_lock(sq *q) { pthread_mutex_lock(&q->mu); }
void sq_unlock(sq *q) { pthread_mutex_unlock(&q->mu); }
int64_t sq_context(const sq *q) { return q->ctx; }

static void notify(sq_job *j) { j->q->o.notify(j->q->o.notify_user, j); }

/* ---- jobs ------------------------------------------------------------------------------ */

sq_job *sq_job_new(sq *q) {
    sq_job *j = rt_calloc(1, sizeof *j);
    if (!j) return NULL;
    j->q = q;
    j->refs = 1;
    j->fd = -1;
    return j;
}

void sq_job_unref(sq_job *j) {
    if (!j || --j->refs > 0) return;
    oai_request_free(&j->rq);
    for (size_t i = 0; i < j->n_prompts; i++) free(j->prompt[i]);
    free(j->prompt);
    free(j->prompt_n);
    for (int c = 0; j->ch && c < j->n_choices; c++) {
        free(j->ch[c].ids);
        free(j->ch[c].lp);
        free(j->ch[c].top_lp);
        free(j->ch[c].top_ids);
        oai_buf_free(&j->ch[c].text);
    }
    free(j->ch);
    oai_buf_free(&j->out);
    free(j);
}

void sq_cancel(sq_job *j) {
    sq *q = j->q;
    if (j->cancelled || j->state >= SQ_REFUSED) return;
    j->cancelled = true;
    for (size_t p = 0; p < j->n_prompts; p++) {
        if (rt_grow((void **)&q->cancel, &q->cap_cancel, q->n_cancel + 1, sizeof *q->cancel)) break;
        q->cancel[q->n_cancel++] = j->tag0 + p;
    }
    pthread_cond_signal(&q->wake);
}

void sq_job_release(sq_job *j) {
    sq *q = j->q;
    bool counted = j->id[0] != 0;   /* handed to the engine: in_flight counts it */
    if (counted && j->state < SQ_REFUSED) sq_cancel(j);   /* still running: the client went away */
    if (counted && --q->in_flight == 0) pthread_cond_broadcast(&q->drained);
    sq_job_unref(j);
}

int64_t sq_completion_tokens(const sq_job *j) {
    int64_t t = 0;
    for (int c = 0; c < j->n_choices; c++) t += j->ch[c].n;
    return t;
}

void sq_metrics_get(const sq *q, sq_metrics *out) {
    out->st = q->st;
    out->queued = q->st.queued + q->n_pending;
    out->in_flight = q->in_flight;
    out->tps = q->tps;
}

/* ---- building a job -------------------------------------------------------------------- */

static bool ends_with_think(const char *text) {
    size_t n = strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' ' || text[n - 1] == '\r')) n--;
    return n >= 7 && !memcmp(text + n - 7, "<think>", 7);
}

/* The chat prompt through the template: j->prompt[0], j->opened, j->turn_end. */
static int chat_prompt(sq *q, sq_job *j, char *msg, size_t cap) {
    oai_request *rq = &j->rq;
    if (!q->o.have_template) {
        snprintf(msg, cap, "this server has no chat template (start it with --template); use /v1/completions");
        return RT_EINVAL;
    }
    ct_message *m = rt_calloc(rq->n_messages, sizeof *m);
    if (!m) return RT_ENOMEM;
    for (size_t i = 0; i < rq->n_messages; i++)
        m[i] = (ct_message){rq->messages[i].role, rq->messages[i].content, rq->messages[i].reasoning_content};
    uint8_t *mask = NULL;
    char *text = NULL;
    int rc = ct_template_render(q->tok, q->o.tmpl, m, rq->n_messages, true, &j->prompt[0], &mask, &j->prompt_n[0]);
    if (!rc) rc = ct_template_render_text(q->o.tmpl, m, rq->n_messages, true, &text);
    if (!rc) j->opened = ends_with_think(text);
    free(text);
    free(mask);
    free(m);
    if (rc) {
        snprintf(msg, cap, "rendering the messages: %s", rt_errmsg());
        return rc == RT_ENOMEM ? rc : RT_EINVAL;
    }
    const char *eot = ct_template_eot(q->o.tmpl);
    if (!rq->ignore_eos && eot) j->turn_end = tok_token_to_id(q->tok, eot);
    return 0;
}

static int completion_prompts(sq *q, sq_job *j, char *msg, size_t cap) {
    for (size_t p = 0; p < j->n_prompts; p++) {
        oai_prompt *pr = &j->rq.prompts[p];
        if (pr->text) {
            if (tok_encode(q->tok, pr->text, strlen(pr->text), true, &j->prompt[p], &j->prompt_n[p])) {
                snprintf(msg, cap, "tokenizing the prompt: %s", rt_errmsg());
                return RT_EINVAL;
            }
        } else {
            if (!(j->prompt[p] = rt_malloc(pr->n_ids * sizeof(int32_t)))) return RT_ENOMEM;
            memcpy(j->prompt[p], pr->ids, pr->n_ids * sizeof(int32_t));
            j->prompt_n[p] = pr->n_ids;
        }
    }
    return 0;
}

/* The prompts fit the vocabulary and the context, and max_tokens fits what is left. */
static int check_lengths(sq *q, sq_job *j, char *msg, size_t cap, const char **param) {
    oai_request *rq = &j->rq;
    int64_t longest = 0;
    for (size_t p = 0; p < j->n_prompts; p++) {
        if (j->prompt_n[p] == 0) {
            snprintf(msg, cap, "the prompt has no tokens");
            return RT_EINVAL;
        }
        for (size_t i = 0; i < j->prompt_n[p]; i++)
            if (j->prompt[p][i] >= q->vocab) {
                snprintf(msg, cap, "prompt token %d is outside the model's vocabulary of %lld", j->prompt[p][i],
                         (long long)q->vocab);
                return RT_EINVAL;
            }
        if ((int64_t)j->prompt_n[p] > longest) longest = (int64_t)j->prompt_n[p];
        j->prompt_tokens += (int64_t)j->prompt_n[p];
    }
    if (longest >= q->ctx) {
        snprintf(msg, cap, "the prompt has %lld tokens; this model's context is %lld", (long long)longest,
                 (long long)q->ctx);
        return RT_EINVAL;
    }
    if (rq->max_tokens > 0) {
        if (rq->max_tokens > q->ctx - longest) {
            snprintf(msg, cap, "this model's context is %lld tokens; the prompt has %lld and max_tokens asks for %lld more",
                     (long long)q->ctx, (long long)longest, (long long)rq->max_tokens);
            *param = "max_tokens";
            return RT_EINVAL;
        }
        j->max_tokens = rq->max_tokens;
    } else if (rq->kind == OAI_COMPLETION) {
        j->max_tokens = 16;   /* OpenAI's default for completions */
    } else {   /* chat: the rest of the context, as far as the cache holds n samples of it */
        int64_t bs = q->o.engine.block_size > 0 ? q->o.engine.block_size : 16;
        int64_t cache = q->o.engine.cache_tokens > 0 ? q->o.engine.cache_tokens : 65536;
        int64_t fit = cache / rq->n - longest - 2 * bs;
        j->max_tokens = q->ctx - longest;
        if (fit < j->max_tokens) j->max_tokens = fit;
        if (j->max_tokens < 1) {
            snprintf(msg, cap, "the prompt of %lld tokens leaves no room for %d samples in the cache", (long long)longest,
                     rq->n);
            return RT_EINVAL;
        }
    }
    return 0;
}

int sq_job_prepare(sq *q, sq_job *j, char *msg, size_t cap, const char **param) {
    oai_request *rq = &j->rq;
    *param = NULL;
    size_t np = rq->kind == OAI_CHAT ? 1 : rq->n_prompts;
    j->prompt = rt_calloc(np, sizeof *j->prompt);
    j->prompt_n = rt_calloc(np, sizeof *j->prompt_n);
    if (!j->prompt || !j->prompt_n) return RT_ENOMEM;
    j->n_prompts = np;
    j->turn_end = -1;
    *param = rq->kind == OAI_CHAT ? "messages" : "prompt";
    int rc = rq->kind == OAI_CHAT ? chat_prompt(q, j, msg, cap) : completion_prompts(q, j, msg, cap);
    if (!rc) rc = check_lengths(q, j, msg, cap, param);
    if (rc) return rc;
    *param = NULL;
    j->n_choices = (int)j->n_prompts * j->rq.n;
    if (!(j->ch = rt_calloc((size_t)j->n_choices, sizeof *j->ch))) return RT_ENOMEM;
    for (int i = 0; i < j->n_choices; i++) oai_split_init(&j->ch[i].split, j->opened);
    j->created = (int64_t)time(NULL);
    return 0;
}

int sq_enqueue(sq *q, sq_job *j) {
    pthread_mutex_lock(&q->mu);
    if (q->draining) {
        pthread_mutex_unlock(&q->mu);
        return RT_EINVAL;
    }
    uint64_t nid = ++q->next_id;
    j->tag0 = q->next_tag;
    q->next_tag += j->n_prompts;
    j->seed = j->rq.has_seed ? j->rq.seed : mix64(nid ^ (uint64_t)time(NULL) << 20 ^ (uint64_t)(uintptr_t)j);
    snprintf(j->id, sizeof j->id, "%s-%016llx", j->rq.kind == OAI_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)mix64(nid + ((uint64_t)j->created << 32)));
    j->refs++;   /* the engine's */
    if (q->pending_tail) q->pending_tail->next = j;
    else q->pending = j;
    q->pending_tail = j;
    q->n_pending++;
    q->in_flight++;
    pthread_cond_signal(&q->wake);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

/* ---- the engine thread ----------------------------------------------------------------- */

static sq_job *find_job(sq *q, uint64_t tag) {
    for (size_t i = 0; i < q->n_active; i++) {
        sq_job *j = q->active[i];
        if (tag >= j->tag0 && tag < j->tag0 + j->n_prompts) return j;
    }
    return NULL;
}

static void drop_active(sq *q, sq_job *j) {   /* locked */
    for (size_t i = 0; i < q->n_active; i++)
        if (q->active[i] == j) {
            q->active[i] = q->active[--q->n_active];
            j->in_engine = false;
            sq_job_unref(j);
            return;
        }
}

static int grow_choice(sq_choice *c, int k) {
    if (c->n < c->cap) return 0;
    int64_t cap = c->cap ? 2 * c->cap : 64;
    int32_t *ids = rt_realloc(c->ids, (size_t)cap * sizeof *ids);
    if (ids) c->ids = ids;
    float *lp = rt_realloc(c->lp, (size_t)cap * sizeof *lp);
    if (lp) c->lp = lp;
    if (!ids || !lp) return RT_ENOMEM;
    if (k > 0) {
        int32_t *ti = rt_realloc(c->top_ids, (size_t)(cap * k) * sizeof *ti);
        if (ti) c->top_ids = ti;
        float *tl = rt_realloc(c->top_lp, (size_t)(cap * k) * sizeof *tl);
        if (tl) c->top_lp = tl;
        if (!ti || !tl) return RT_ENOMEM;
    }
    c->cap = cap;
    return 0;
}

static void on_token(void *user, const te_token *t) {
    sq *q = user;
    pthread_mutex_lock(&q->mu);
    sq_job *j = find_job(q, t->tag);
    if (j && !j->cancelled) {
        sq_choice *c = &j->ch[(int)(t->tag - j->tag0) * j->rq.n + t->sample];
        int k = t->top_k;
        if (c->n == t->index && !grow_choice(c, k)) {
            c->ids[c->n] = t->id;
            c->lp[c->n] = t->logprob;
            if (k > 0) {
                memcpy(c->top_ids + c->n * k, t->top_ids, (size_t)k * sizeof(int32_t));
                memcpy(c->top_lp + c->n * k, t->top_logprobs, (size_t)k * sizeof(float));
            }
            c->n++;
            j->dirty = true;   /* notified once after the step, not once per token */
        }
    }
    pthread_mutex_unlock(&q->mu);
}

static void fail_job(sq_job *j, const char *msg) {   /* locked */
    size_t n = strlen(msg) < sizeof j->error - 1 ? strlen(msg) : sizeof j->error - 1;
    memcpy(j->error, msg, n);
    j->error[n] = 0;
    j->state = SQ_REFUSED;
    notify(j);
}

static te_request request_of(const sq_job *j, size_t p) {
    smp_params sp = {.temperature = (float)j->rq.temperature, .top_k = j->rq.top_k, .top_p = (float)j->rq.top_p,
                     .min_p = (float)j->rq.min_p};
    return (te_request){.prompt = j->prompt[p], .n_prompt = (int64_t)j->prompt_n[p], .n_samples = j->rq.n,
                        .max_tokens = j->max_tokens, .sampling = sp, .seed = j->seed + p,
                        .stop_ids = j->turn_end >= 0 ? &j->turn_end : NULL, .n_stop_ids = j->turn_end >= 0,
                        .ignore_config_eos = j->rq.ignore_eos, .stop = (const char *const *)j->rq.stop,
                        .n_stop = j->rq.n_stop, .logprobs = j->rq.logprobs, .top_logprobs = j->rq.top_logprobs,
                        .tag = j->tag0 + p};
}

/* Submits every prompt of j; on a refusal the ones already in are dropped. */
static int submit_job(sq *q, sq_job *j) {
    for (size_t p = 0; p < j->n_prompts; p++) {
        te_request r = request_of(j, p);
        int rc = te_submit(q->e, &r);
        if (rc) {
            for (size_t x = 0; x < p; x++) te_cancel(q->e, j->tag0 + x);
            return rc;
        }
    }
    return 0;
}

/* Lockstep (opts.comm): the requests of the next pe_step, with their jobs. */
typedef struct {
    te_request *r;
    sq_job **j;
    int *src;
    size_t n, cap;
    uint64_t *cancel;
    size_t n_cancel, cap_cancel;
} step_input;

static void step_input_free(step_input *b) {
    free(b->r);
    free(b->j);
    free(b->src);
    free(b->cancel);
}

static int queue_job(step_input *b, sq_job *j) {   /* every prompt of j, as submit_job would */
    size_t need = b->n + j->n_prompts;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 16;
        while (cap < need) cap *= 2;
        te_request *r = rt_realloc(b->r, cap * sizeof *r);
        if (r) b->r = r;
        sq_job **jj = rt_realloc(b->j, cap * sizeof *jj);
        if (jj) b->j = jj;
        int *src = rt_realloc(b->src, cap * sizeof *src);
        if (src) b->src = src;
        if (!r || !jj || !src) return RT_ENOMEM;
        b->cap = cap;
    }
    for (size_t p = 0; p < j->n_prompts; p++) {
        b->r[b->n] = request_of(j, p);
        b->j[b->n++] = j;
    }
    return 0;
}

/* The engine thread's own state between turns. */
typedef struct {
    rt_comm *comm;                  /* lockstep, or NULL */
    step_input b;
    bool broken;                    /* lockstep lost: no more steps */
    char broken_msg[RT_ERRMSG_MAX];
    double t_last;
    int64_t gen_last;
} engine_loop;

static void update_tps(sq *q, engine_loop *L) {   /* locked */
    double t = now_s();
    if (t - L->t_last >= 1.0) {
        q->tps = (double)(q->st.generated_tokens - L->gen_last) / (t - L->t_last);
        L->gen_last = q->st.generated_tokens;
        L->t_last = t;
    }
}

/* The cancellations and the handed-over jobs (locked): applied now, or queued for the step. */
static void take_handed(sq *q, engine_loop *L) {
    step_input *b = &L->b;
    sq_job *pend = q->pending;
    q->pending = q->pending_tail = NULL;
    q->n_pending = 0;
    b->n = b->n_cancel = 0;
    for (size_t i = 0; i < q->n_cancel; i++) {
        sq_job *j = find_job(q, q->cancel[i]);
        if (!L->comm || L->broken) te_cancel(q->e, q->cancel[i]);
        else if (!rt_grow((void **)&b->cancel, &b->cap_cancel, b->n_cancel + 1, sizeof *b->cancel))
            b->cancel[b->n_cancel++] = q->cancel[i];   /* applied on every rank with the step */
        if (j && j->cancelled) {
            j->state = SQ_FINISHED;
            notify(j);
            drop_active(q, j);
        }
    }
    q->n_cancel = 0;
    while (pend) {
        sq_job *j = pend;
        pend = j->next;
        j->next = NULL;
        if (j->cancelled) {
            j->state = SQ_FINISHED;
            notify(j);
            sq_job_unref(j);
            continue;
        }
        if (L->broken) {
            fail_job(j, L->broken_msg);
            sq_job_unref(j);
            continue;
        }
        if (rt_grow((void **)&q->active, &q->cap_active, q->n_active + 1, sizeof *q->active) ||
            (L->comm && queue_job(b, j))) {
            fail_job(j, "out of memory");
            sq_job_unref(j);
            continue;
        }
        if (L->comm) {   /* submitted with the step; active now, so its first token finds it */
            j->in_engine = true;
            q->active[q->n_active++] = j;
            continue;
        }
        int rc = submit_job(q, j);   /* te_submit is quick: copies, no model work */
        if (rc) {
            fail_job(j, rt_errmsg());
            sq_job_unref(j);
            continue;
        }
        j->state = SQ_RUNNING;
        j->in_engine = true;
        q->active[q->n_active++] = j;
        notify(j);
    }
}

/* Lockstep: the jobs of this step's submissions that a rank refused fail, job by job (locked). */
static void apply_refusals(sq *q, engine_loop *L, const char *refused) {
    step_input *b = &L->b;
    for (size_t i = 0; i < b->n; i++) {
        sq_job *j = b->j[i];
        if (i > 0 && b->j[i - 1] == j) continue;
        bool bad = false;
        for (size_t p = 0; p < j->n_prompts; p++) bad |= b->src[i + p] != 0;
        if (!bad) {
            if (j->state == SQ_HANDED) j->state = SQ_RUNNING;
            notify(j);
            continue;
        }
        for (size_t p = 0; p < j->n_prompts; p++)   /* the accepted prompts go with the next step */
            if (!b->src[i + p] && !rt_grow((void **)&q->cancel, &q->cap_cancel, q->n_cancel + 1, sizeof *q->cancel))
                q->cancel[q->n_cancel++] = j->tag0 + p;
        fail_job(j, refused);
        drop_active(q, j);
    }
}

/* The results of a step (locked): finished choices, and the streams with new tokens. */
static void apply_results(sq *q, te_result *res, size_t n) {
    for (size_t i = 0; i < n; i++) {
        sq_job *j = find_job(q, res[i].tag);
        if (!j) continue;
        sq_choice *c = &j->ch[(int)(res[i].tag - j->tag0) * j->rq.n + res[i].sample];
        if (c->done) continue;
        c->done = true;
        c->finish = res[i].finish;
        if (++j->n_done == j->n_choices) {
            j->state = SQ_FINISHED;
            notify(j);
            drop_active(q, j);   /* may free j (its connection is gone) */
        } else if (j->rq.stream) {   /* a whole answer waits for the last choice */
            notify(j);
        }
    }
    for (size_t i = 0; i < q->n_active; i++)
        if (q->active[i]->dirty) {
            q->active[i]->dirty = false;
            if (q->active[i]->rq.stream) notify(q->active[i]);
        }
}

/* One engine step, called and returning locked (the step itself runs unlocked). */
static void engine_step(sq *q, engine_loop *L) {
    step_input *b = &L->b;
    pthread_mutex_unlock(&q->mu);
    te_result *res = NULL;
    size_t n = 0;
    int rc;
    char msg[RT_ERRMSG_MAX], refused[RT_ERRMSG_MAX] = "";
    if (L->comm) {
        bool last = false;
        pe_input in = {.submit = b->r, .n_submit = b->n, .cancel = b->cancel, .n_cancel = b->n_cancel};
        rc = pe_step(L->comm, q->e, &in, b->src, &res, &n, &last);
        for (size_t i = 0; !rc && i < b->n; i++)
            if (b->src[i]) snprintf(refused, sizeof refused, "%s", rt_errmsg());   /* the last refusal's */
    } else {
        rc = te_step(q->e, &res, &n);
    }
    if (rc) snprintf(msg, sizeof msg, "the engine failed: %s", rt_errmsg());
    if (rc && L->comm) {   /* a follower may wait in a collective: the caller ends the job */
        L->broken = true;
        snprintf(L->broken_msg, sizeof L->broken_msg, "%s", msg);
        if (q->o.on_comm_failure) q->o.on_comm_failure(q->o.comm_user, msg);
    }
    pthread_mutex_lock(&q->mu);
    if (!rc) apply_refusals(q, L, refused);
    apply_results(q, res, n);
    te_results_free(res, n);
    if (rc) {   /* nothing sensible remains: every request fails */
        while (q->n_active) {
            sq_job *j = q->active[0];
            for (size_t p = 0; p < j->n_prompts; p++) te_cancel(q->e, j->tag0 + p);
            fail_job(j, msg);
            drop_active(q, j);
        }
    }
}

static void *engine_main(void *arg) {
    sq *q = arg;
    engine_loop L = {.comm = q->o.comm && comm_size(q->o.comm) > 1 ? q->o.comm : NULL, .t_last = now_s()};
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->pending && !q->n_cancel && !te_busy(q->e) && !q->stop_engine) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&q->wake, &q->mu, &ts);
            update_tps(q, &L);
        }
        if (q->stop_engine && !q->pending && !q->n_cancel && !te_busy(q->e)) break;
        take_handed(q, &L);
        te_stats_get(q->e, &q->st);
        if (L.broken || (!te_busy(q->e) && !L.b.n && !L.b.n_cancel)) continue;
        engine_step(q, &L);
        te_stats_get(q->e, &q->st);
        update_tps(q, &L);
    }
    pthread_mutex_unlock(&q->mu);
    if (L.comm && !L.broken) pe_end(L.comm, q->e);   /* the followers stop */
    step_input_free(&L.b);
    return NULL;
}

/* ---- start and stop -------------------------------------------------------------------- */

int sq_start(te_model *m, const tok_tokenizer *tok, const sq_opts *opts, sq **out) {
    *out = NULL;
    sq *q = rt_calloc(1, sizeof *q);
    if (!q) return RT_ENOMEM;
    q->o = *opts;
    q->m = m;
    q->tok = tok;
    q->ctx = te_model_config(m)->max_position_embeddings;
    q->vocab = te_model_config(m)->vocab_size;
    q->next_tag = 1;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->wake, NULL);
    pthread_cond_init(&q->drained, NULL);
    te_opts eo = q->o.engine;
    eo.tok = tok;
    eo.on_token = on_token;
    eo.user = q;
    int rc = 0;
    if (opts->comm && comm_size(opts->comm) > 1 && !opts->on_comm_failure)
        rc = rt_fail(RT_EINVAL, "serve: a lockstep engine needs on_comm_failure");
    if (!rc) rc = te_engine_create(m, &eo, &q->e);
    if (!rc) te_stats_get(q->e, &q->st);
    if (!rc && pthread_create(&q->engine_thread, NULL, engine_main, q))
        rc = rt_fail(RT_EINTERNAL, "cannot start the engine thread");
    if (!rc) q->engine_started = true;
    if (rc) {
        sq_stop(q);
        return rc;
    }
    *out = q;
    return 0;
}

void sq_drain(sq *q) {
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    q->draining = true;
    while (q->in_flight > 0) pthread_cond_wait(&q->drained, &q->mu);
    pthread_mutex_unlock(&q->mu);
}

void sq_stop(sq *q) {
    if (!q) return;
    if (q->engine_started) {
        pthread_mutex_lock(&q->mu);
        q->stop_engine = true;
        pthread_cond_signal(&q->wake);
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->engine_thread, NULL);
    }
    pthread_mutex_lock(&q->mu);
    while (q->n_active) drop_active(q, q->active[0]);
    pthread_mutex_unlock(&q->mu);
    te_engine_free(q->e);
    free(q->active);
    free(q->cancel);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->wake);
    pthread_cond_destroy(&q->drained);
    free(q);
}

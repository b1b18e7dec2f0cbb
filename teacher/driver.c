/* teacher/driver.c — pending (prompt, sample index) pairs through the engine or an endpoint,
 * each finished sample stored in its own transaction (see driver.h). */
#include "teacher/driver.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/status.h"
#include "dataset/blob.h"
#include "dataset/queue.h"
#include "teacher/parallel_engine.h"

uint64_t gd_sample_seed(uint64_t seed, int64_t prompt_id, int64_t sample_index) {
    uint64_t z = seed;
    uint64_t parts[2] = {(uint64_t)prompt_id, (uint64_t)sample_index};
    for (int i = 0; i < 3; i++) {
        z += 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        if (i < 2) z ^= parts[i];
    }
    return z & 0x7fffffffffffffffull;
}

bool gd_source_is_math(const char *source) {
    static const char *const keys[] = {"gsm8k", "math", "aime"};
    for (size_t i = 0; source && i < sizeof keys / sizeof keys[0]; i++)
        if (strcasestr(source, keys[i])) return true;
    return false;
}

int gd_params_json(const gd_opts *o, char **json) {
    json_t *j = json_pack("{s:f, s:f, s:I, s:I, s:b}", "temperature", o->temperature, "top_p", o->top_p, "max_tokens",
                          (json_int_t)o->max_tokens, "seed", (json_int_t)(o->seed & 0x7fffffffffffffffull),
                          "think_prefix", o->think_prefix);
    if (!j) return rt_fail(RT_ENOMEM, "out of memory");
    json_object_set_new(j, "system", o->system ? json_string(o->system) : json_null());
    json_object_set_new(j, "instruction", o->instruction ? json_string(o->instruction) : json_null());
    if (o->instruction) json_object_set_new(j, "instruction_to", json_string(o->instruction_all ? "all" : "math"));
    if (o->top_k > 0) json_object_set_new(j, "top_k", json_integer(o->top_k));
    if (o->min_p > 0) json_object_set_new(j, "min_p", json_real(o->min_p));
    *json = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(j);
    return *json ? 0 : rt_fail(RT_ENOMEM, "out of memory");
}

/* ---- pending work ---- */

typedef struct {
    int64_t id;
    char *source, *messages;
    int left;                  /* samples of this prompt still to store this run */
} gprompt;

typedef struct {
    size_t prompt;             /* index into prompts */
    int j;                     /* sample index */
} work;

typedef struct {
    db_conn *db;
    const gd_opts *o;
    char *params;
    gprompt *ps;
    size_t n_ps;
    work *w;
    size_t n_w;
    blob_codec *codec;
    db_topk_writer *topk;
    gd_progress p;
    double t0, last;
    int32_t end_of_turn, think_close;
    char last_err[600];        /* the last per-sample failure */
} drv;

typedef struct {
    drv *d;
    size_t cap_p, cap_w;
} pending_acc;

static int add_pending(void *ud, const db_pending_prompt *p) {
    pending_acc *a = ud;
    drv *d = a->d;
    int K = d->o->n, n_have = p->n_have;
    d->p.existing += (size_t)n_have;
    if (n_have == K) return 0;
    if (rt_grow((void **)&d->ps, &a->cap_p, d->n_ps + 1, sizeof *d->ps) ||
        rt_grow((void **)&d->w, &a->cap_w, d->n_w + (size_t)(K - n_have), sizeof *d->w))
        return rt_fail(RT_ENOMEM, "out of memory");
    gprompt *g = &d->ps[d->n_ps];
    *g = (gprompt){.id = p->id, .source = rt_strdup(p->source ? p->source : ""),
                   .messages = rt_strdup(p->messages ? p->messages : "[]"), .left = K - n_have};
    if (!g->source || !g->messages) {
        free(g->source);
        free(g->messages);
        return rt_fail(RT_ENOMEM, "out of memory");
    }
    for (int j = 0; j < K; j++)
        if (!p->have[j]) d->w[d->n_w++] = (work){d->n_ps, j};
    d->n_ps++;
    return 0;
}

static int load_pending(drv *d) {
    pending_acc a = {d, 0, 0};
    int rc = db_queue_prompts(d->db, d->o->source, d->o->teacher, d->params, d->o->n, add_pending, &a);
    d->p.prompts_total = d->n_ps;
    d->p.samples_total = d->n_w;
    return rc;
}

/* The messages of prompt g as sent: system added, instruction appended (new reference). */
static int build_messages(const drv *d, const gprompt *g, json_t **out) {
    json_error_t je;
    json_t *m = json_loads(g->messages, 0, &je);
    if (!json_is_array(m) || json_array_size(m) == 0) {
        json_decref(m);
        return rt_fail(RT_EFORMAT, "prompt %lld: messages are not a non-empty JSON array", (long long)g->id);
    }
    json_t *msgs = json_array();
    bool has_system = false;
    size_t i, last_user = (size_t)-1;
    json_t *x;
    json_array_foreach(m, i, x) {
        const json_t *role = json_object_get(x, "role"), *content = json_object_get(x, "content");
        if (!json_is_string(role) || !json_is_string(content)) {
            json_decref(m);
            json_decref(msgs);
            return rt_fail(RT_EFORMAT, "prompt %lld: message %zu needs string role and content", (long long)g->id, i);
        }
        if (!strcmp(json_string_value(role), "system")) has_system = true;
        if (!strcmp(json_string_value(role), "user")) last_user = json_array_size(msgs);
        json_array_append_new(msgs, json_pack("{s:O, s:O}", "role", role, "content", content));
    }
    json_decref(m);
    const gd_opts *o = d->o;
    if (o->instruction && last_user != (size_t)-1 && (o->instruction_all || gd_source_is_math(g->source))) {
        json_t *u = json_array_get(msgs, last_user);
        const char *c = json_string_value(json_object_get(u, "content"));
        size_t n = strlen(c) + strlen(o->instruction) + 2;
        char *s = rt_malloc(n);
        if (!s) {
            json_decref(msgs);
            return rt_fail(RT_ENOMEM, "out of memory");
        }
        snprintf(s, n, "%s\n%s", c, o->instruction);
        json_object_set_new(u, "content", json_string(s));
        free(s);
    }
    if (o->system && !has_system) json_array_insert_new(msgs, 0, json_pack("{s:s, s:s}", "role", "system", "content", o->system));
    *out = msgs;
    return 0;
}

static void progress(drv *d, bool final) {
    double t = now_s();
    if (!final && t - d->last < (d->o->progress_every_s > 0 ? d->o->progress_every_s : 1.0)) return;
    d->last = t;
    gd_progress *p = &d->p;
    p->elapsed_s = t - d->t0;
    double el = p->elapsed_s > 1e-9 ? p->elapsed_s : 1e-9;
    p->tokens_per_s = (double)p->tokens / el;
    p->samples_per_s = (double)p->samples_done / el;
    size_t left = p->samples_total - p->samples_done - p->failed;
    p->eta_s = p->samples_done ? (double)left / p->samples_per_s : (left ? -1 : 0);
    p->final = final;
    if (d->o->progress) d->o->progress(d->o->progress_ctx, p);
}

typedef struct {
    const char *text;
    size_t len;
    int32_t prompt_tokens, thinking_tokens, answer_tokens;
    const char *finish;
    bool has_lp;
    double mean_lp;
    const int32_t *top_ids;
    const float *top_lps;
    int top_k;
    size_t n_tokens;
} stored;

static int store(drv *d, const work *w, const stored *x) {
    const gprompt *g = &d->ps[w->prompt];
    db_sample s = {.prompt_id = g->id, .teacher = d->o->teacher, .params_json = d->params, .has_seed = true,
                   .seed = (int64_t)gd_sample_seed(d->o->seed, g->id, w->j), .sample_index = w->j, .text = x->text,
                   .text_len = x->len, .prompt_tokens = x->prompt_tokens, .thinking_tokens = x->thinking_tokens,
                   .answer_tokens = x->answer_tokens, .finish_reason = x->finish, .has_logprob = x->has_lp,
                   .mean_logprob = x->mean_lp};
    int64_t id = 0;
    bool ins = false;
    int rc = db_begin(d->db);
    if (!rc) rc = db_sample_put(d->db, &s, &id, &ins);
    if (!rc && ins && x->top_k > 0 && x->n_tokens > 0) {
        size_t n = x->n_tokens * (size_t)x->top_k;
        uint8_t *raw = rt_malloc(n * 8), *z = NULL;
        size_t zlen = 0;
        if (!raw) rc = rt_fail(RT_ENOMEM, "out of memory");
        for (size_t i = 0; !rc && i < n; i++) {   /* little-endian hosts only (x86-64, aarch64) */
            memcpy(raw + 8 * i, &x->top_ids[i], 4);
            memcpy(raw + 8 * i + 4, &x->top_lps[i], 4);
        }
        if (!rc) rc = blob_compress(d->codec, raw, n * 8, 0, &z, &zlen);
        if (!rc) rc = db_topk_writer_put(d->topk, id, x->top_k, x->n_tokens, z, zlen);
        free(raw);
        free(z);
    }
    if (!rc) rc = db_commit(d->db);
    else db_rollback(d->db);
    if (rc) return rt_errorf(rc, "storing sample %d of prompt %lld", w->j, (long long)g->id);
    d->p.samples_done++;
    if (--d->ps[w->prompt].left == 0) d->p.prompts_done++;
    return 0;
}

/* Thinking tokens of a composed text "<think>\nR\n</think>…" by encoding (no special tokens). */
static int count_split(const tok_tokenizer *tok, const char *text, size_t len, int32_t *think, int32_t *answer) {
    const char *close = strstr(text, "</think>");
    size_t cut = close ? (size_t)(close - text) + 8 : (strncmp(text, "<think>", 7) ? 0 : len);
    int32_t *ids = NULL;
    size_t a = 0, b = 0;
    int rc = tok_encode(tok, text, cut, false, &ids, &a);
    free(ids);
    ids = NULL;
    if (!rc) rc = tok_encode(tok, text + cut, len - cut, false, &ids, &b);
    free(ids);
    if (!rc) {
        *think = (int32_t)a;
        *answer = (int32_t)b;
    }
    return rc;
}

/* ---- local ---- */

static int render_local(drv *d, const gprompt *g, int32_t **ids, size_t *n) {
    json_t *msgs = NULL;
    int rc = build_messages(d, g, &msgs);
    if (rc) return rc;
    size_t nm = json_array_size(msgs);
    ct_message *m = rt_calloc(nm, sizeof *m);
    if (!m) rc = rt_fail(RT_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < nm; i++) {
        const json_t *x = json_array_get(msgs, i);
        m[i] = (ct_message){json_string_value(json_object_get(x, "role")), json_string_value(json_object_get(x, "content")), NULL};
    }
    char *text = NULL;
    if (!rc) rc = ct_template_render_text(d->o->tmpl ? d->o->tmpl : ct_builtin(CT_DEEPSEEK_R1), m, nm, true, &text);
    free(m);
    json_decref(msgs);
    if (rc) return rt_errorf(rc, "prompt %lld", (long long)g->id);
    size_t len = strlen(text);
    if (d->o->think_prefix && (len < 8 || strcmp(text + len - 8, "<think>\n"))) {
        char *t2 = rt_realloc(text, len + 9);
        if (!t2) {
            free(text);
            return rt_fail(RT_ENOMEM, "out of memory");
        }
        text = t2;
        memcpy(text + len, "<think>\n", 9);
        len += 8;
    }
    rc = tok_encode(d->o->tok, text, len, false, ids, n);
    free(text);
    if (!rc && !*n) rc = rt_fail(RT_EINVAL, "prompt %lld renders to no tokens", (long long)g->id);
    return rc;
}

static int store_local(drv *d, const te_result *r) {
    const work *w = &d->w[r->tag];
    const tok_tokenizer *tok = d->o->tok;
    char *dec = NULL, *text = NULL;
    size_t dlen = 0, tlen = 0;
    int rc = tok_decode(tok, r->ids, (size_t)r->n_ids, true, &dec, &dlen);
    if (!rc) rc = oai_compose_text(NULL, 0, false, dec, dlen, d->o->think_prefix, &text, &tlen);
    int32_t think = -1, answer = -1;
    int64_t n = r->n_ids;
    if (!rc) {
        int64_t pos = -1;
        for (int64_t i = 0; d->think_close >= 0 && i < n && pos < 0; i++)
            if (r->ids[i] == d->think_close) pos = i;
        /* the end-of-turn token stopped the sample: not part of the answer */
        int64_t gen = n > 0 && d->end_of_turn >= 0 && r->ids[n - 1] == d->end_of_turn ? n - 1 : n;
        if (pos >= 0) {
            think = (int32_t)(pos + 1);
            answer = (int32_t)(gen - pos - 1 > 0 ? gen - pos - 1 : 0);
        } else if (d->think_close >= 0 || !strstr(text, "</think>")) {
            bool thinking = d->o->think_prefix;
            think = thinking ? (int32_t)gen : 0;
            answer = thinking ? 0 : (int32_t)gen;
        } else rc = count_split(tok, text, tlen, &think, &answer);
    }
    double sum = 0;
    for (int64_t i = 0; r->logprobs && i < n; i++) sum += r->logprobs[i];
    stored x = {.text = text, .len = tlen, .prompt_tokens = (int32_t)r->n_prompt, .thinking_tokens = think,
                .answer_tokens = answer, .finish = r->finish == TE_FINISH_STOP ? "stop" : "length",
                .has_lp = r->logprobs && n > 0, .mean_lp = n > 0 ? sum / (double)n : 0, .top_ids = r->top_ids,
                .top_lps = r->top_logprobs, .top_k = r->top_ids ? r->top_k : 0, .n_tokens = (size_t)n};
    if (!rc) rc = store(d, w, &x);
    d->p.tokens += n;
    free(dec);
    free(text);
    return rc;
}

static bool stopped(const drv *d) { return d->o->stop && *d->o->stop; }

/* The requests issued for the next lockstep step (rank 0 of a parallel engine): each owns its
 * prompt ids until the step has submitted it. */
typedef struct {
    te_request *r;
    size_t n, cap;
} batch;

static void batch_clear(batch *b) {
    for (size_t i = 0; i < b->n; i++) free((void *)b->r[i].prompt);
    b->n = 0;
}

/* A refused submission (te_submit's status src, its message current): a prompt that can never
 * fit is skipped and counted; anything else ends the run. */
static int refused(drv *d, const work *w, int src) {
    int rc = rt_errorf(src, "prompt %lld", (long long)d->ps[w->prompt].id);
    if (rc != RT_ERANGE) return rc;
    d->p.failed++;
    snprintf(d->last_err, sizeof d->last_err, "%s", rt_errmsg());
    return 0;
}

static int run_local(drv *d, gd_report *rep) {
    const gd_opts *o = d->o;
    te_engine *e = o->engine;
    rt_comm *c = o->comm && comm_size(o->comm) > 1 ? o->comm : NULL;
    const char *eot = ct_template_eot(o->tmpl ? o->tmpl : ct_builtin(CT_DEEPSEEK_R1));
    d->end_of_turn = eot ? tok_token_to_id(o->tok, eot) : -1;
    d->think_close = tok_token_to_id(o->tok, "</think>");
    int qcap = o->max_queue > 0 ? o->max_queue : 64;
    size_t next = 0;
    int rc = 0, *src = NULL;
    batch b = {0};
    smp_params sp = {.temperature = (float)o->temperature, .top_p = (float)o->top_p, .top_k = o->top_k,
                     .min_p = (float)o->min_p};
    while (!rc) {
        if (stopped(d)) {
            rep->interrupted = true;
            break;
        }
        te_stats st;
        te_stats_get(e, &st);
        while (!rc && next < d->n_w && st.queued + (int)b.n < qcap) {
            const work *w = &d->w[next];
            const gprompt *g = &d->ps[w->prompt];
            int32_t *ids = NULL;
            size_t n = 0;
            rc = render_local(d, g, &ids, &n);
            te_request r = {.prompt = ids, .n_prompt = (int64_t)n, .n_samples = 1, .max_tokens = o->max_tokens,
                            .sampling = sp, .seed = gd_sample_seed(o->seed, g->id, w->j),
                            .stop_ids = &d->end_of_turn, .n_stop_ids = d->end_of_turn >= 0 ? 1 : 0,
                            .logprobs = true, .top_logprobs = o->logprobs > 0 ? o->logprobs : 0, .tag = next};
            if (!rc && c) {   /* issued with the next step */
                if (rt_grow((void **)&b.r, &b.cap, b.n + 1, sizeof *b.r)) rc = rt_fail(RT_ENOMEM, "out of memory");
                else {
                    b.r[b.n++] = r;
                    ids = NULL;
                }
            } else if (!rc) {
                int s = te_submit(e, &r);
                if (s) rc = refused(d, w, s);
            }
            free(ids);
            next++;
            te_stats_get(e, &st);
        }
        if (rc || (!te_busy(e) && !b.n)) break;
        te_result *res = NULL;
        size_t k = 0;
        if (c) {
            bool last = false;
            pe_input in = {.submit = b.r, .n_submit = b.n};
            if (b.n && !(src = rt_realloc(src, b.n * sizeof *src))) {
                rc = rt_fail(RT_ENOMEM, "out of memory");
                break;
            }
            rc = pe_step(c, e, &in, src, &res, &k, &last);
            if (rc) rep->comm_failed = true;
            /* the message current is the last refusal's: the earlier ones are only counted */
            size_t last_refused = b.n;
            for (size_t i = 0; !rc && i < b.n; i++)
                if (src[i]) last_refused = i;
            for (size_t i = 0; !rc && i < b.n; i++)
                if (src[i] == RT_ERANGE && i != last_refused) d->p.failed++;
                else if (src[i]) rc = refused(d, &d->w[b.r[i].tag], src[i]);
            batch_clear(&b);
        } else {
            rc = te_step(e, &res, &k);
        }
        for (size_t i = 0; i < k && !rc; i++) rc = store_local(d, &res[i]);
        te_results_free(res, k);
        progress(d, false);
    }
    batch_clear(&b);
    free(b.r);
    free(src);
    if (!rc && d->p.failed && !rep->interrupted)
        rc = rt_fail(RT_EINVAL, "%zu sample(s) cannot be generated (the others are stored); last: %s", d->p.failed,
                     d->last_err);
    return rc;
}

/* ---- remote ---- */

static int request_body(drv *d, const work *w, char **body) {
    const gd_opts *o = d->o;
    const gprompt *g = &d->ps[w->prompt];
    json_t *msgs = NULL;
    int rc = build_messages(d, g, &msgs);
    if (rc) return rc;
    json_t *b = json_pack("{s:s, s:o, s:I, s:f, s:f, s:I, s:b}", "model", o->model, "messages", msgs, "max_tokens",
                          (json_int_t)o->max_tokens, "temperature", o->temperature, "top_p", o->top_p, "seed",
                          (json_int_t)gd_sample_seed(o->seed, g->id, w->j), "stream", o->remote->stream);
    if (b && o->remote->stream) json_object_set_new(b, "stream_options", json_pack("{s:b}", "include_usage", 1));
    if (b && o->top_k > 0) json_object_set_new(b, "top_k", json_integer(o->top_k));
    if (b && o->min_p > 0) json_object_set_new(b, "min_p", json_real(o->min_p));
    if (b && o->logprobs >= 0) {
        json_object_set_new(b, "logprobs", json_true());
        if (o->logprobs > 0) json_object_set_new(b, "top_logprobs", json_integer(o->logprobs));
    }
    *body = b ? json_dumps(b, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(b);
    return *body ? 0 : rt_fail(RT_ENOMEM, "out of memory");
}

static int store_remote(drv *d, const oai_result *r) {
    const work *w = &d->w[r->tag];
    const oai_response *x = &r->resp;
    char *text = NULL;
    size_t tlen = 0;
    int rc = oai_compose_text(x->reasoning, x->reasoning_len, x->has_reasoning, x->content, x->content_len,
                              d->o->think_prefix, &text, &tlen);
    if (rc) return rc;
    int32_t think = -1, answer = -1;
    bool thinks = !strncmp(text, "<think>", 7);
    if (x->completion_tokens >= 0 && x->reasoning_tokens >= 0 && x->reasoning_tokens <= x->completion_tokens) {
        think = (int32_t)x->reasoning_tokens;
        answer = (int32_t)(x->completion_tokens - x->reasoning_tokens);
    } else if (d->o->tok) {
        rc = count_split(d->o->tok, text, tlen, &think, &answer);
    } else if (x->completion_tokens >= 0 && !thinks) {
        think = 0;
        answer = (int32_t)x->completion_tokens;
    }
    double sum = 0;
    for (size_t i = 0; i < x->n_tokens; i++) sum += x->logprobs[i];
    stored s = {.text = text, .len = tlen, .prompt_tokens = x->prompt_tokens >= 0 ? (int32_t)x->prompt_tokens : -1,
                .thinking_tokens = think, .answer_tokens = answer, .finish = x->finish_reason,
                .has_lp = x->n_tokens > 0, .mean_lp = x->n_tokens ? sum / (double)x->n_tokens : 0,
                .top_ids = x->top_ids, .top_lps = x->top_logprobs, .top_k = d->o->logprobs > 0 ? x->top_k : 0,
                .n_tokens = x->n_tokens};
    if (!rc) rc = store(d, w, &s);
    d->p.tokens += x->completion_tokens >= 0 ? x->completion_tokens : (int64_t)x->n_tokens;
    free(text);
    return rc;
}

static int run_remote(drv *d, gd_report *rep) {
    const gd_opts *o = d->o;
    oai_client *c = NULL;
    int rc = oai_client_new(o->remote, &c);
    if (rc) return rc;
    size_t next = 0, window = 2 * (size_t)(o->remote->concurrency > 0 ? o->remote->concurrency : 8);
    char *last_err = d->last_err;
    size_t failed_in_a_row = 0, give_up = window > 16 ? window : 16;
    while (!rc) {
        if (stopped(d)) {
            rep->interrupted = true;
            oai_abort_all(c);
            break;
        }
        while (!rc && next < d->n_w && oai_pending(c) < window) {
            char *body = NULL;
            rc = request_body(d, &d->w[next], &body);
            if (!rc) rc = oai_submit(c, body, next);
            free(body);
            next++;
        }
        if (rc || oai_pending(c) == 0) break;
        oai_result *res = NULL;
        size_t k = 0;
        rc = oai_poll(c, 0.2, &res, &k);
        for (size_t i = 0; i < k && !rc; i++) {
            if (res[i].status == 0) {
                rc = store_remote(d, &res[i]);
                failed_in_a_row = 0;
            } else if (res[i].fatal) rc = rt_fail(RT_EIO, "%s", res[i].err ? res[i].err : "request failed");
            else {
                d->p.failed++;
                snprintf(last_err, sizeof d->last_err, "%s", res[i].err ? res[i].err : "request failed");
                /* an endpoint that fails every request after every retry is down: stop */
                if (++failed_in_a_row >= give_up)
                    rc = rt_fail(RT_EIO, "giving up: the last %zu samples all failed after every retry; last: %s",
                                 failed_in_a_row, last_err);
            }
        }
        oai_results_free(res, k);
        oai_stats cs;
        oai_stats_get(c, &cs);
        d->p.retries = cs.retries;
        progress(d, false);
    }
    oai_client_free(c);
    if (!rc && d->p.failed && !rep->interrupted)
        rc = rt_fail(RT_EIO, "%zu sample(s) failed after every retry (rerun to retry them); last: %s", d->p.failed,
                     last_err);
    return rc;
}

static int run(db_conn *db, const gd_opts *o, gd_report *rep);

int gd_run(db_conn *db, const gd_opts *o, gd_report *rep) {
    *rep = (gd_report){0};
    int rc = run(db, o, rep);
    if (o->engine && o->comm && comm_size(o->comm) > 1 && !rep->comm_failed) {   /* release the followers */
        int erc = pe_end(o->comm, o->engine);
        if (erc) {
            rep->comm_failed = true;
            if (!rc) rc = erc;
        }
    }
    return rc;
}

static int run(db_conn *db, const gd_opts *o, gd_report *rep) {
    if (!o->teacher || !*o->teacher || o->n < 1 || o->max_tokens < 1 || o->logprobs > OAI_MAX_TOP ||
        o->logprobs > TE_MAX_TOP_LOGPROBS)
        return rt_fail(RT_EINVAL, "generate: teacher, n ≥ 1, max_tokens ≥ 1 and logprobs ≤ 20 are required");
    if (o->engine ? !o->tok : (!o->remote || !o->model))
        return rt_fail(RT_EINVAL, "generate: a local engine needs a tokenizer; a remote one an endpoint and a model");
    drv d = {.db = db, .o = o, .t0 = now_s(), .end_of_turn = -1, .think_close = -1};
    d.last = d.t0;
    int rc = gd_params_json(o, &d.params);
    if (!rc) rc = blob_codec_new(0, &d.codec);
    if (!rc) rc = db_topk_writer_open(db, &d.topk);
    if (!rc) rc = load_pending(&d);
    if (!rc && d.n_w) rc = o->engine ? run_local(&d, rep) : run_remote(&d, rep);
    if (!rc && !rep->interrupted) progress(&d, true);
    rep->p = d.p;
    for (size_t i = 0; i < d.n_ps; i++) {
        free(d.ps[i].source);
        free(d.ps[i].messages);
    }
    free(d.ps);
    free(d.w);
    free(d.params);
    db_topk_writer_close(d.topk);
    blob_codec_free(d.codec);
    return rc;
}

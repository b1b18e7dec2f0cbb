/* eval/run.c — benchmark questions into prompts; k samples each through the engine into
 * eval_results, verified and resumable. */
#include "eval/run.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/fsutil.h"
#include "core/log.h"
#include "core/status.h"
#include "dataset/blob.h"
#include "dataset/evalres.h"
#include "dataset/import.h"
#include "filters/verify.h"
#include "teacher/driver.h"
#include "teacher/oai_client.h"
#include "teacher/parallel_engine.h"

#define R1_INSTRUCTION "Please reason step by step, and put your final answer within \\boxed{}."
#define SEED_STRIDE 1000003ull

void ev_questions_free(ev_questions *qs) {
    if (!qs) return;
    for (size_t i = 0; i < qs->n; i++) {
        free(qs->q[i].text);
        free(qs->q[i].gold);
    }
    free(qs->q);
    free(qs->name);
    *qs = (ev_questions){0};
}

void ev_questions_truncate(ev_questions *qs, size_t n) {
    for (size_t i = n; i < qs->n; i++) {
        free(qs->q[i].text);
        free(qs->q[i].gold);
    }
    if (n < qs->n) qs->n = n;
}

static char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    s = s ? s + 1 : path;
    const char *dot = strrchr(s, '.');
    size_t n = dot && dot != s ? (size_t)(dot - s) : strlen(s);
    char *out = rt_malloc(n + 1);
    if (out) {
        memcpy(out, s, n);
        out[n] = 0;
    }
    return out;
}

/* The content of the last user message of a messages JSON array (malloc'd). */
static int user_text(const char *messages, char **out) {
    json_error_t je;
    json_t *m = json_loads(messages, 0, &je);
    const char *s = NULL;
    for (size_t i = 0; m && json_is_array(m) && i < json_array_size(m); i++) {
        const json_t *x = json_array_get(m, i);
        if (json_is_string(json_object_get(x, "content"))) s = json_string_value(json_object_get(x, "content"));
    }
    *out = s ? rt_strdup(s) : NULL;
    json_decref(m);
    if (!s) return rt_fail(RT_EFORMAT, "a question without text");
    return *out ? 0 : rt_fail(RT_ENOMEM, "eval: out of memory");
}

static int parse_file(const char *path, const imp_options *io, imp_record **recs, size_t *n_recs) {
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = rt_read_file(path, &buf, &len);
    if (rc) return rc;
    size_t line = 0;
    for (char *p = buf; !rc && p < buf + len;) {
        char *nl = memchr(p, '\n', (size_t)(buf + len - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(buf + len - p);
        line++;
        char *next = p + n + 1;
        size_t k = 0;
        while (k < n && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r')) k++;
        if (k < n) {
            if (rt_grow((void **)recs, &cap, *n_recs + 1, sizeof **recs)) rc = rt_fail(RT_ENOMEM, "eval");
            else {
                imp_record *r = &(*recs)[*n_recs];
                *r = (imp_record){0};
                rc = imp_parse_line(io, p, n, r);
                if (rc) rc = rt_errorf(rc, "%s:%zu", path, line);
                else if (!r->gold || !*r->gold) rc = rt_fail(RT_EFORMAT, "%s:%zu: no answer", path, line);
                (*n_recs)++;
            }
        }
        p = next;
    }
    free(buf);
    return rc;
}

int ev_questions_load(db_conn *db, const char *bench, ev_questions *out) {
    *out = (ev_questions){0};
    static const struct { const char *name, *file; imp_format fmt; } builtins[] = {
        {"gsm8k", "gsm8k_test.jsonl", IMP_GSM8K},
        {"math500", "math500_test.jsonl", IMP_MATH},
        {"aime24", "aime24_test.jsonl", IMP_AIME},
    };
    imp_options io = {.format = IMP_JSONL, .prompt_field = "prompt", .answer_field = "answer"};
    char *path = NULL;
    bool builtin = false;
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
        if (!strcmp(bench, builtins[i].name)) {
            char *assets = rt_assets_dir(), *dir = assets ? rt_path_join(assets, "benchmarks") : NULL;
            path = dir ? rt_path_join(dir, builtins[i].file) : NULL;
            free(assets);
            free(dir);
            if (!path) return rt_fail(RT_ENOMEM, "eval: out of memory");
            io = (imp_options){.format = builtins[i].fmt};
            out->name = rt_strdup(bench);
            builtin = true;
        }
    if (!builtin) {
        path = rt_strdup(bench);
        out->name = base_name(bench);
    }
    if (!path || !out->name) {
        free(path);
        ev_questions_free(out);
        return rt_fail(RT_ENOMEM, "eval: out of memory");
    }
    if (!rt_is_file(path)) {
        int rc = builtin ? rt_fail(RT_ENOTFOUND, "benchmark %s: %s not found (set RETORT_ASSETS)", bench, path)
                         : rt_fail(RT_ENOTFOUND, "benchmark file %s not found (gsm8k, math500, aime24 or FILE.jsonl)", path);
        free(path);
        ev_questions_free(out);
        return rc;
    }
    imp_record *recs = NULL;
    size_t n_recs = 0;
    int rc = parse_file(path, &io, &recs, &n_recs);
    if (!rc && !n_recs) rc = rt_fail(RT_EFORMAT, "%s holds no questions", path);
    if (!rc && !(out->q = rt_calloc(n_recs, sizeof *out->q))) rc = rt_fail(RT_ENOMEM, "eval: out of memory");
    if (!rc) rc = db_begin(db);
    for (size_t i = 0; i < n_recs && !rc; i++) {
        imp_record *r = &recs[i];
        db_prompt p = {.source = out->name, .external_id = r->external_id, .messages_json = r->messages,
                       .prompt_key = r->prompt_key, .gold = r->gold, .metadata_json = r->metadata};
        int64_t id;
        if ((rc = db_prompt_put(db, &p, &id, NULL))) break;
        bool dup = false;
        for (size_t j = 0; j < out->n && !dup; j++) dup = out->q[j].prompt_id == id;
        if (dup) continue;
        ev_q *q = &out->q[out->n];
        char *text = NULL;
        if ((rc = user_text(r->messages, &text))) {
            rc = rt_errorf(rc, "%s: record %zu", path, i + 1);
            break;
        }
        if (builtin) {
            size_t n = strlen(text) + sizeof R1_INSTRUCTION + 2;
            q->text = rt_malloc(n);
            if (q->text) snprintf(q->text, n, "%s\n%s", text, R1_INSTRUCTION);
            free(text);
        } else q->text = text;
        q->gold = rt_strdup(r->gold);
        q->prompt_id = id;
        out->n++;
        if (!q->text || !q->gold) rc = rt_fail(RT_ENOMEM, "eval: out of memory");
    }
    if (!rc) rc = db_commit(db);
    else db_rollback(db);
    for (size_t i = 0; i < n_recs; i++) imp_record_free(&recs[i]);
    free(recs);
    free(path);
    if (rc) ev_questions_free(out);
    return rc;
}

/* ---- generation ---- */

static double now_ms(void) { return 1e3 * now_s(); }

typedef struct {
    db_conn *db;
    db_eval_writer *w;
    blob_codec *codec;
    const ev_gen_opts *o;
    const ev_questions *qs;
    vf_opts vo;
    bool **need;   /* [n questions][k]: sample still to generate */
    int32_t end_of_turn; /* the template's end-of-turn token, a stop token beside the config's eos; -1 none */
    double *t_submit;
} gen;

/* Verifies text (a response to question qi) and stores it as sample j. */
static int store_text(gen *g, size_t qi, int j, const char *text, size_t len, int64_t n_tokens, const char *finish,
                      double latency_ms) {
    const ev_q *q = &g->qs->q[qi];
    uint8_t *z = NULL;
    size_t zlen = 0;
    vf_result v = {0};
    int rc = blob_compress(g->codec, text, len, 0, &z, &zlen);
    if (!rc) rc = vf_verify(&g->vo, q->gold, text, &v);
    if (!rc) {
        db_eval_result row = {g->o->run, g->o->model, g->qs->name, q->prompt_id, j, z, zlen, v.pred_answer, v.correct,
                              n_tokens, finish, latency_ms};
        rc = db_eval_put(g->w, &row);
    }
    vf_result_free(&v);
    free(z);
    return rc;
}

static int store(gen *g, const te_result *r) {
    char *text = NULL;
    size_t len = 0;
    const char *fin = r->finish == TE_FINISH_STOP ? "stop" : "length";
    int rc = tok_decode(g->o->tok, r->ids, (size_t)r->n_ids, true, &text, &len);
    if (rc) {   /* a sample the tokenizer cannot decode is a failed sample, not a failed run */
        free(text);
        text = NULL;
        len = 0;
        fin = "error";
    }
    rc = store_text(g, r->tag, r->sample, text ? text : "", len, r->n_ids, fin, now_ms() - g->t_submit[r->tag]);
    free(text);
    return rc;
}

typedef struct {
    int k;
    bool *need;
    size_t *n_need;
} need_acc;

static void stored_index(void *ud, int64_t j) {
    need_acc *a = ud;
    if (j >= 0 && j < a->k && a->need[j]) {
        a->need[j] = false;
        (*a->n_need)--;
    }
}

/* Marks in need[0..k) the samples of prompt not stored yet; *n_need counts them. */
static int missing(gen *g, int64_t prompt, bool *need, size_t *n_need) {
    int k = g->o->k;
    for (int j = 0; j < k; j++) need[j] = true;
    *n_need = (size_t)k;
    need_acc a = {k, need, n_need};
    return db_eval_stored(g->w, g->o->run, g->o->model, prompt, stored_index, &a);
}

static int encode(const ev_gen_opts *o, const char *text, int32_t **ids, size_t *n) {
    if (!o->tmpl) return tok_encode(o->tok, text, strlen(text), true, ids, n);
    ct_message m = {"user", text, NULL};
    uint8_t *mask = NULL;
    int rc = ct_template_render(o->tok, o->tmpl, &m, 1, true, ids, &mask, n);
    free(mask);
    return rc;
}

static int run_all(gen *g, te_engine *e, ev_gen_report *rep) {
    const ev_questions *qs = g->qs;
    const ev_gen_opts *o = g->o;
    rt_comm *c = o->comm && comm_size(o->comm) > 1 ? o->comm : NULL;
    size_t todo = 0, done = 0, next = 0;
    int rc = 0;
    /* lockstep: the question to issue with the next step (at most one, as alone: a question
     * is submitted only when the queue is empty), its prompt ids owned here */
    te_request pend = {0};
    bool have_pend = false;
    size_t pend_q = 0;
    for (size_t i = 0; i < qs->n && !rc; i++) {
        size_t n_need;
        rc = missing(g, qs->q[i].prompt_id, g->need[i], &n_need);
        todo += n_need;
        rep->existing += (size_t)o->k - n_need;
    }
    while (!rc) {
        te_stats st;
        te_stats_get(e, &st);
        /* keep the queue short so latency measures generation, not waiting */
        while (!rc && st.queued == 0 && !have_pend && next < qs->n) {
            size_t i = next++;
            int last = -1;
            for (int j = 0; j < o->k; j++)
                if (g->need[i][j]) last = j;
            if (last < 0) continue;
            int32_t *ids = NULL;
            size_t n = 0;
            rc = encode(o, qs->q[i].text, &ids, &n);
            if (!rc && !n) rc = rt_fail(RT_EINVAL, "the question has no tokens");
            te_request r = {.prompt = ids, .n_prompt = (int64_t)n, .n_samples = last + 1, .max_tokens = o->max_tokens,
                            .sampling = o->sampling, .seed = o->seed + SEED_STRIDE * (uint64_t)qs->q[i].prompt_id,
                            .stop_ids = &g->end_of_turn, .n_stop_ids = g->end_of_turn >= 0 ? 1 : 0, .tag = i};
            if (!rc && c) {   /* issued with the next step */
                pend = r;
                pend_q = i;
                have_pend = true;
                ids = NULL;
            } else if (!rc) rc = te_submit(e, &r);
            free(ids);
            if (rc) rc = rt_errorf(rc, "%s question %zu (prompt %lld)", qs->name, i + 1, (long long)qs->q[i].prompt_id);
            g->t_submit[i] = now_ms();
            te_stats_get(e, &st);
        }
        if (rc || (!te_busy(e) && !have_pend)) break;
        te_result *res = NULL;
        size_t k = 0;
        if (c) {
            pe_input in = {.submit = &pend, .n_submit = have_pend ? 1 : 0};
            int src = 0;
            bool last = false;
            rc = pe_step(c, e, &in, &src, &res, &k, &last);
            if (rc) rep->comm_failed = true;
            else if (have_pend && src)   /* refused on every rank; te_submit's message is current */
                rc = rt_errorf(src, "%s question %zu (prompt %lld)", qs->name, pend_q + 1,
                               (long long)qs->q[pend_q].prompt_id);
            if (have_pend) free((void *)pend.prompt);
            have_pend = false;
            if (rc) {
                te_results_free(res, k);
                break;
            }
        } else if ((rc = te_step(e, &res, &k))) break;
        if (k && !(rc = db_begin(g->db))) {
            for (size_t j = 0; j < k && !rc; j++)
                if (res[j].sample < o->k && g->need[res[j].tag][res[j].sample]) {
                    rc = store(g, &res[j]);
                    g->need[res[j].tag][res[j].sample] = false;
                    done++;
                }
            if (!rc) rc = db_commit(g->db);
            else db_rollback(g->db);
        }
        te_results_free(res, k);
        if (!rc && o->progress) {
            te_stats_get(e, &st);
            o->progress(o->progress_ctx, done, todo, st.generated_tokens);
        }
    }
    if (have_pend) free((void *)pend.prompt);
    rep->generated = done;
    return rc;
}

int ev_run_model_check(db_conn *db, const char *run, const char *model) {
    char *other = NULL;
    int rc = db_eval_other_model(db, run, model, &other);
    if (!rc && other)
        rc = rt_fail(RT_EINVAL, "run %s already holds results of model %s; give this model another --name", run, other);
    free(other);
    return rc;
}


/* ---- remote: one request per sample through the OpenAI-compatible client ---- */

static int remote_body(const gen *g, const ev_remote *rm, size_t qi, int j, char **body) {
    const ev_gen_opts *o = g->o;
    const ev_q *q = &g->qs->q[qi];
    json_t *b = json_pack("{s:s, s:[{s:s, s:s}], s:I, s:f, s:f, s:I, s:b}", "model", rm->model, "messages", "role",
                          "user", "content", q->text, "max_tokens", (json_int_t)o->max_tokens, "temperature",
                          (double)o->sampling.temperature, "top_p", (double)o->sampling.top_p, "seed",
                          (json_int_t)gd_sample_seed(o->seed, q->prompt_id, j), "stream", rm->opts->stream);
    if (b && rm->opts->stream) json_object_set_new(b, "stream_options", json_pack("{s:b}", "include_usage", 1));
    *body = b ? json_dumps(b, JSON_COMPACT | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(b);
    return *body ? 0 : rt_fail(RT_ENOMEM, "eval: out of memory");
}

static int run_remote(gen *g, const ev_remote *rm, ev_gen_report *rep) {
    const ev_questions *qs = g->qs;
    const ev_gen_opts *o = g->o;
    size_t todo = 0, done = 0, failed = 0, n_work = 0;
    int rc = 0;
    for (size_t i = 0; i < qs->n && !rc; i++) {
        size_t n_need;
        rc = missing(g, qs->q[i].prompt_id, g->need[i], &n_need);
        todo += n_need;
        rep->existing += (size_t)o->k - n_need;
    }
    uint64_t *work = rc ? NULL : rt_malloc((todo ? todo : 1) * sizeof *work);
    if (!rc && !work) rc = rt_fail(RT_ENOMEM, "eval: out of memory");
    for (size_t i = 0; !rc && i < qs->n; i++)
        for (int j = 0; j < o->k; j++)
            if (g->need[i][j]) work[n_work++] = (uint64_t)i * (uint64_t)o->k + (uint64_t)j;
    oai_client *c = NULL;
    if (!rc) rc = oai_client_new(rm->opts, &c);
    size_t next = 0, window = 2 * (size_t)(rm->opts->concurrency > 0 ? rm->opts->concurrency : 8);
    int64_t tokens = 0;
    char last_err[600] = "";
    size_t failed_in_a_row = 0;
    while (!rc) {
        while (!rc && next < n_work && oai_pending(c) < window) {
            char *body = NULL;
            rc = remote_body(g, rm, work[next] / (uint64_t)o->k, (int)(work[next] % (uint64_t)o->k), &body);
            if (!rc) rc = oai_submit(c, body, work[next]);
            free(body);
            next++;
        }
        if (rc || oai_pending(c) == 0) break;
        oai_result *res = NULL;
        size_t n = 0;
        rc = oai_poll(c, 0.2, &res, &n);
        for (size_t x = 0; x < n && !rc; x++) {
            oai_result *r = &res[x];
            size_t qi = r->tag / (uint64_t)o->k;
            int j = (int)(r->tag % (uint64_t)o->k);
            if (r->status == 0) {
                char *text = NULL;
                size_t len = 0;
                const oai_response *a = &r->resp;
                rc = oai_compose_text(a->reasoning, a->reasoning_len, a->has_reasoning, a->content, a->content_len,
                                      false, &text, &len);
                if (!rc && !(rc = db_begin(g->db))) {
                    rc = store_text(g, qi, j, text, len, a->completion_tokens, a->finish_reason, 1e3 * r->latency_s);
                    if (!rc) rc = db_commit(g->db);
                    else db_rollback(g->db);
                }
                free(text);
                if (!rc) {
                    g->need[qi][j] = false;
                    failed_in_a_row = 0;
                    done++;
                    tokens += a->completion_tokens > 0 ? a->completion_tokens : 0;
                }
            } else if (r->fatal) rc = rt_fail(RT_EIO, "%s", r->err ? r->err : "request failed");
            else {
                failed++;
                snprintf(last_err, sizeof last_err, "%s", r->err ? r->err : "request failed");
                if (++failed_in_a_row >= (window > 16 ? window : 16))   /* the endpoint is down */
                    rc = rt_fail(RT_EIO, "giving up: the last %zu samples all failed after every retry; last: %s",
                                 failed_in_a_row, last_err);
            }
        }
        oai_results_free(res, n);
        if (!rc && o->progress) o->progress(o->progress_ctx, done, todo, tokens);
    }
    oai_client_free(c);
    free(work);
    rep->generated = done;
    if (!rc && failed)
        rc = rt_fail(RT_EIO, "%zu sample(s) failed after every retry (rerun to retry them); last: %s", failed, last_err);
    return rc;
}

static int generate(db_conn *db, te_engine *e, const ev_remote *remote, const ev_questions *qs, const ev_gen_opts *o,
                    ev_gen_report *rep) {
    *rep = (ev_gen_report){.questions = qs->n};
    if (o->k < 1 || o->max_tokens < 1 || (e && !o->tok) || !o->run || !o->model)
        return rt_fail(RT_EINVAL, "eval: k, max_tokens, tokenizer, run and model are required");
    gen g = {.db = db, .o = o, .qs = qs, .end_of_turn = -1};
    vf_opts_default(&g.vo);
    if (o->tmpl && o->tok) {
        const char *eot = ct_template_eot(o->tmpl);
        g.end_of_turn = eot ? tok_token_to_id(o->tok, eot) : -1;
    }
    int rc = ev_run_model_check(db, o->run, o->model);
    if (!rc) rc = db_eval_writer_open(db, &g.w);
    if (!rc) rc = blob_codec_new(0, &g.codec);
    g.need = rc ? NULL : rt_calloc(qs->n ? qs->n : 1, sizeof *g.need);
    g.t_submit = rc ? NULL : rt_calloc(qs->n ? qs->n : 1, sizeof *g.t_submit);
    if (!rc && (!g.need || !g.t_submit)) rc = rt_fail(RT_ENOMEM, "eval: out of memory");
    for (size_t i = 0; i < qs->n && !rc; i++)
        if (!(g.need[i] = rt_calloc((size_t)o->k, sizeof **g.need))) rc = rt_fail(RT_ENOMEM, "eval: out of memory");
    if (!rc) rc = e ? run_all(&g, e, rep) : run_remote(&g, remote, rep);
    for (size_t i = 0; g.need && i < qs->n; i++) free(g.need[i]);
    free(g.need);
    free(g.t_submit);
    blob_codec_free(g.codec);
    db_eval_writer_close(g.w);
    return rc;
}

int ev_generate(db_conn *db, te_engine *e, const ev_questions *qs, const ev_gen_opts *o, ev_gen_report *rep) {
    int rc = generate(db, e, NULL, qs, o, rep);
    if (e && o->comm && comm_size(o->comm) > 1 && !rep->comm_failed) {   /* release the followers */
        int erc = pe_end(o->comm, e);
        if (erc) {
            rep->comm_failed = true;
            if (!rc) rc = erc;
        }
    }
    return rc;
}

int ev_generate_remote(db_conn *db, const ev_remote *remote, const ev_questions *qs, const ev_gen_opts *o,
                       ev_gen_report *rep) {
    if (!remote || !remote->opts || !remote->model) return rt_fail(RT_EINVAL, "eval: an endpoint and a model are required");
    return generate(db, NULL, remote, qs, o, rep);
}

/* filters/pipeline.c — fp_run(): the filter stage over the run database (contract in
 * pipeline.h). Reading and writing happen on the calling thread (a db_conn is single-
 * threaded); scoring runs on the pool. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/phase.h"
#include "core/status.h"
#include "dataset/verdicts.h"
#include "filters/decontam.h"
#include "filters/pipeline.h"

enum { REASON_MAX = 400 };

typedef struct {
    bool pass;
    double score;
    char reason[REASON_MAX];
} verdict;

/* One sample of a batch: inputs read from the database, outputs per filter. */
typedef struct {
    int64_t id;
    char *text;
    size_t len;
    char *prompt;            /* user turns joined by blank lines (NULL when none) */
    char *gold;              /* NULL: no gold */
    char *finish;
    int64_t think_tokens, answer_tokens;
    bool code_task;
    unsigned todo;           /* filters to run (bit per fp_filter) */
    verdict v[FP_COUNT];
    int rc;                  /* a worker's error */
    char err[RT_ERRMSG_MAX];
} item;

static void item_clear(item *it) {
    free(it->text);
    free(it->prompt);
    free(it->gold);
    free(it->finish);
    memset(it, 0, sizeof *it);
}

static const unsigned SAMPLE_FILTERS = (1u << FP_DEDUP) - 1; /* everything but dedup */
static const unsigned TEXT_FILTERS = (1u << FP_FORMAT) | (1u << FP_LANGUAGE) | (1u << FP_READABILITY) |
                                     (1u << FP_REPETITION) | (1u << FP_LENGTH);

static flt_kind text_kind(fp_filter f) { return (flt_kind)(f - FP_FORMAT); }

/* "…" cut copy of s into a short quoted form for reasons. */
static void clip(char *dst, size_t cap, const char *s) {
    if (!s) { snprintf(dst, cap, "(none)"); return; }
    size_t n = strlen(s);
    if (n + 1 <= cap) { memcpy(dst, s, n + 1); }
    else {
        size_t k = cap - 4;
        while (k && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
        memcpy(dst, s, k);
        memcpy(dst + k, "...", 4);
    }
    for (char *p = dst; *p; p++)
        if (*p == '\n' || *p == '\r' || *p == '\t') *p = ' ';
}

typedef struct {
    const fp_config *c;
    const dc_index *ix;  /* NULL: no decontamination */
    item *items;
} score_ctx;

static int score_verify(const fp_config *c, item *it, verdict *v) {
    flt_split sp;
    flt_split_text(&c->text, it->text, &sp);
    const char *pred = it->text;
    char *ans = NULL;
    if (sp.found && sp.answer_e > sp.answer_b) {
        ans = rt_malloc(sp.answer_e - sp.answer_b + 1);
        if (!ans) return RT_ENOMEM;
        memcpy(ans, it->text + sp.answer_b, sp.answer_e - sp.answer_b);
        ans[sp.answer_e - sp.answer_b] = 0;
        pred = ans;
    }
    vf_result r;
    int rc = vf_verify(&c->verify, it->gold, pred, &r);
    free(ans);
    if (rc) return rc;
    char pa[80], ga[80];
    clip(pa, sizeof pa, r.pred_answer);
    clip(ga, sizeof ga, r.gold_answer ? r.gold_answer : it->gold);
    v->pass = r.correct;
    v->score = r.correct ? 1.0 : 0.0;
    if (!r.pred_answer) snprintf(v->reason, sizeof v->reason, "no answer found (gold %s)", ga);
    else if (r.correct) snprintf(v->reason, sizeof v->reason, "ok: answer %s equals gold %s", pa, ga);
    else snprintf(v->reason, sizeof v->reason, "wrong answer: %s, gold %s (%s)", pa, ga, r.reason ? r.reason : "different");
    vf_result_free(&r);
    return 0;
}

static int score_decontam(const fp_config *c, const dc_index *ix, item *it, verdict *v) {
    const char *what[2] = {"prompt", "sample"};
    const char *txt[2] = {it->prompt, it->text};
    for (int k = 0; k < 2; k++) {
        if (!txt[k]) continue;
        dc_hit h;
        int rc = dc_index_find(ix, txt[k], strlen(txt[k]), &h);
        if (rc) return rc;
        if (h.found) {
            char ng[200];
            clip(ng, sizeof ng, h.ngram);
            v->pass = false;
            v->score = 1;
            snprintf(v->reason, sizeof v->reason, "%s shares a %d-gram with %s (%s): \"%s\"", what[k], c->decontam_n,
                     h.benchmark, h.doc_id, ng);
            return 0;
        }
    }
    v->pass = true;
    v->score = 0;
    snprintf(v->reason, sizeof v->reason, "ok: no %d-gram shared with %zu benchmark documents", c->decontam_n,
             dc_index_docs(ix));
    return 0;
}

static void score_range(void *ctxp, size_t b, size_t e, int thread) {
    (void)thread;
    score_ctx *ctx = ctxp;
    const fp_config *c = ctx->c;
    for (size_t i = b; i < e; i++) {
        item *it = &ctx->items[i];
        int rc = 0;
        if (it->todo & (1u << FP_VERIFY)) rc = score_verify(c, it, &it->v[FP_VERIFY]);
        if (!rc && (it->todo & TEXT_FILTERS)) {
            flt_config fc = c->text;
            fc.enabled = 0;
            for (int f = FP_FORMAT; f <= FP_LENGTH; f++)
                if (it->todo & (1u << f)) fc.enabled |= 1u << text_kind((fp_filter)f);
            flt_sample s = {it->prompt, it->text, it->finish, it->code_task, it->think_tokens, it->answer_tokens};
            flt_verdict out[FLT_COUNT];
            size_t n = 0;
            rc = flt_run(&fc, &s, out, &n);
            for (size_t k = 0; !rc && k < n; k++) {
                verdict *v = &it->v[FP_FORMAT + (int)out[k].kind];
                v->pass = out[k].pass;
                v->score = out[k].score;
                snprintf(v->reason, sizeof v->reason, "%s", out[k].reason);
            }
        }
        if (!rc && (it->todo & (1u << FP_DECONTAM))) rc = score_decontam(c, ctx->ix, it, &it->v[FP_DECONTAM]);
        if (rc) {
            it->rc = rc;
            snprintf(it->err, sizeof it->err, "%s", rt_errmsg());
        }
    }
}

/* ---- reading a batch ---- */

/* User turns of a messages array, joined by blank lines (NULL when none). */
static int prompt_text(const char *messages, char **out) {
    *out = NULL;
    if (!messages) return 0;
    json_error_t e;
    json_t *m = json_loads(messages, 0, &e);
    if (!json_is_array(m)) { json_decref(m); return 0; }
    size_t i, len = 0, cap = 0;
    json_t *turn;
    char *buf = NULL;
    json_array_foreach(m, i, turn) {
        const char *role = json_string_value(json_object_get(turn, "role"));
        json_t *ct = json_object_get(turn, "content");
        if (!role || strcmp(role, "user") || !json_is_string(ct)) continue;
        size_t n = json_string_length(ct);
        if (rt_grow((void **)&buf, &cap, len + n + 3, 1)) { free(buf); json_decref(m); return RT_ENOMEM; }
        if (len) { memcpy(buf + len, "\n\n", 2); len += 2; }
        memcpy(buf + len, json_string_value(ct), n);
        len += n;
        buf[len] = 0;
    }
    json_decref(m);
    *out = buf;
    return 0;
}

static bool is_code_task(const char *metadata) {
    if (!metadata) return false;
    json_t *m = json_loads(metadata, 0, NULL);
    bool code = false;
    if (json_is_object(m)) {
        const char *task = json_string_value(json_object_get(m, "task"));
        code = (task && !strcmp(task, "code")) || json_is_true(json_object_get(m, "code_task"));
    }
    json_decref(m);
    return code;
}

static char *dup_str(const char *t) { return t ? rt_strdup(t) : NULL; }

/* The per-sample filters of todo as the database's pending query names them. */
static db_pending_spec pending_spec(unsigned todo, const char **names) {
    for (int f = 0; f < FP_DEDUP; f++) names[f] = fp_filter_name((fp_filter)f);
    return (db_pending_spec){todo, names, FP_DEDUP, FP_VERIFY};
}

typedef struct {
    unsigned todo;
    item *items;
    size_t n;
} batch_ctx;

static int read_item(void *ud, db_pending_row *r) {
    batch_ctx *b = ud;
    item *it = &b->items[b->n++];
    it->id = r->id;
    it->text = r->text;
    it->len = r->len;
    r->text = NULL;
    it->think_tokens = r->thinking_tokens;
    it->answer_tokens = r->answer_tokens;
    it->finish = dup_str(r->finish_reason);
    int rc = prompt_text(r->messages, &it->prompt);
    if (rc) return rc;
    it->gold = dup_str(r->gold);
    it->code_task = is_code_task(r->metadata);
    it->todo = b->todo & ~r->done;
    if (!it->gold) it->todo &= ~(1u << FP_VERIFY);
    return 0;
}

/* Reads up to cap pending samples with id > *last into items; *n gets how many. */
static int read_batch(db_pending *pq, unsigned todo, int64_t *last, item *items, size_t cap, size_t *n) {
    batch_ctx b = {todo, items, 0};
    int rc = db_pending_read(pq, last, cap, read_item, &b, n);
    *n = b.n;
    return rc;
}

/* ---- decontamination index ---- */

static void note_add(char *note, size_t cap, const char *fmt, const char *a, const char *b) {
    size_t o = strlen(note);
    if (o + 2 >= cap) return;
    if (o) { note[o++] = ';'; note[o++] = ' '; note[o] = 0; }
    snprintf(note + o, cap - o, fmt, a, b);
}

static int build_index(const fp_config *c, dc_index **out, fp_report *rep) {
    *out = NULL;
    dc_index *ix;
    int rc = dc_index_new(c->decontam_n, &ix);
    if (rc) return rc;
    char *assets = c->assets ? rt_strdup(c->assets) : rt_assets_dir();
    char *dir = assets ? rt_path_join(assets, "benchmarks") : NULL;
    free(assets);
    if (!dir) { dc_index_free(ix); return RT_ENOMEM; }
    const char *const *fields = c->n_decontam_fields ? c->decontam_fields : NULL;
    char *note = rep->decontam_note;
    for (size_t i = 0; i < c->n_benchmarks && !rc; i++) {
        char name[300];
        snprintf(name, sizeof name, "%s.jsonl", c->benchmarks[i]);
        char *path = rt_path_join(dir, name);
        if (!path) { rc = RT_ENOMEM; break; }
        if (!rt_is_file(path)) note_add(note, sizeof rep->decontam_note, "%s absent (%s)", c->benchmarks[i], path);
        else {
            size_t n;
            rc = dc_index_add_jsonl(ix, path, c->benchmarks[i], fields, c->n_decontam_fields, &n);
            char cnt[32];
            snprintf(cnt, sizeof cnt, "%zu", n);
            if (!rc) note_add(note, sizeof rep->decontam_note, "%s: %s records", c->benchmarks[i], cnt);
        }
        free(path);
    }
    for (size_t i = 0; i < c->n_decontam_files && !rc; i++) {
        const char *p = c->decontam_files[i];
        const char *base = strrchr(p, '/');
        base = base ? base + 1 : p;
        char name[256];
        snprintf(name, sizeof name, "%s", base);
        char *dot = strrchr(name, '.');
        if (dot && dot != name) *dot = 0;
        size_t n;
        rc = dc_index_add_jsonl(ix, p, name, fields, c->n_decontam_fields, &n);
        char cnt[32];
        snprintf(cnt, sizeof cnt, "%zu", n);
        if (!rc) note_add(note, sizeof rep->decontam_note, "%s: %s records", name, cnt);
    }
    free(dir);
    if (rc) { dc_index_free(ix); return rt_errorf(rc, "building the decontamination index"); }
    rep->bench_docs = dc_index_docs(ix);
    rep->bench_ngrams = dc_index_ngrams(ix);
    if (!rep->bench_ngrams) {
        rep->decontam_skipped = true;
        dc_index_free(ix);
        return 0;
    }
    *out = ix;
    return 0;
}

/* ---- filter_runs ---- */

static int run_record(db_conn *db, const fp_config *c, int64_t *id) {
    json_t *j = fp_config_to_json(c);
    char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    if (!txt) return rt_fail(RT_ENOMEM, "configuration");
    int rc = db_filter_run_start(db, txt, id);
    free(txt);
    return rc;
}

/* ---- per-sample stage ---- */

/* The ids of the samples this run scored, ascending (the stages read in id order). */
typedef struct {
    int64_t *v;
    size_t n, cap;
} id_list;

static bool id_list_has(const id_list *l, int64_t id) {
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (l->v[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return lo < l->n && l->v[lo] == id;
}

static int write_batch(db_conn *db, item *items, size_t n, fp_report *rep) {
    int rc = db_begin(db);
    if (rc) return rc;
    for (size_t i = 0; i < n && !rc; i++) {
        item *it = &items[i];
        for (int f = 0; f < FP_DEDUP && !rc; f++) {
            if (!(it->todo & (1u << f))) continue;
            verdict *v = &it->v[f];
            rc = db_verdict_put(db, it->id, fp_filter_name((fp_filter)f), v->pass, v->score, v->reason);
            if (!rc) { rep->written[f]++; rep->failed[f] += !v->pass; }
        }
    }
    if (!rc) rc = db_commit(db);
    if (rc) db_rollback(db);
    return rc;
}

static int sample_stage(db_conn *db, const fp_config *c, unsigned todo, const dc_index *ix, tp_pool *pool,
                        fp_progress_fn fn, void *ud, fp_report *rep, id_list *done) {
    const char *names[FP_DEDUP];
    db_pending_spec spec = pending_spec(todo, names);
    int rc = db_pending_count(db, &spec, &rep->pending);
    if (rc || !rep->pending) return rc;
    db_pending *st;
    if ((rc = db_pending_open(db, &spec, &st))) return rc;
    item *items = rt_calloc(c->batch, sizeof *items);
    if (!items) { db_pending_close(st); return RT_ENOMEM; }
    int64_t last = 0;
    size_t n;
    score_ctx ctx = {c, ix, items};
    if (fn) { /* the stage starts: its clock starts here */
        fp_progress p0 = {"scoring", 0, rep->pending, 0};
        fn(ud, &p0);
    }
    while (!rc) {
        rc = read_batch(st, todo, &last, items, c->batch, &n);
        if (rc || !n) break;
        tp_parallel_for(pool, n, score_range, &ctx);
        for (size_t i = 0; i < n && !rc; i++)
            if (items[i].rc) rc = rt_fail(items[i].rc, "sample %lld: %s", (long long)items[i].id, items[i].err);
        if (!rc) rc = write_batch(db, items, n, rep);
        if (!rc && rt_grow((void **)&done->v, &done->cap, done->n + n, sizeof *done->v)) rc = RT_ENOMEM;
        if (!rc) {
            for (size_t i = 0; i < n; i++) done->v[done->n++] = items[i].id;
            rep->scored += n;
            for (size_t i = 0; i < n; i++) rep->bytes += items[i].len;
            if (fn) {
                fp_progress p = {"scoring", rep->scored, rep->pending, rep->bytes};
                fn(ud, &p);
            }
        }
        for (size_t i = 0; i < n; i++) item_clear(&items[i]);
    }
    for (size_t i = 0; i < c->batch; i++) item_clear(&items[i]);
    free(items);
    db_pending_close(st);
    return rc;
}

/* ---- dedup stage ---- */

typedef struct {
    int64_t id;
    size_t bytes;
    bool old_rep;   /* a representative kept by an earlier run */
    bool clean;     /* no failing verdict of another filter */
} dd_row;

typedef struct {
    dd_row *rows;
    mh_doc *docs;
    size_t n, cap_r, cap_d, n_new, *also_scored;
    const id_list *done;
} dd_read;

static int dedup_row(void *ud, db_dedup_row *r) {
    dd_read *x = ud;
    if (rt_grow((void **)&x->rows, &x->cap_r, x->n + 1, sizeof *x->rows) ||
        rt_grow((void **)&x->docs, &x->cap_d, x->n + 1, sizeof *x->docs))
        return RT_ENOMEM;
    x->rows[x->n] = (dd_row){r->id, (size_t)r->text_bytes, r->has_dedup, r->clean};
    x->docs[x->n] = (mh_doc){r->text, r->len};
    r->text = NULL;
    if (!x->rows[x->n].old_rep) {
        x->n_new++;
        *x->also_scored += !id_list_has(x->done, r->id);
    }
    x->n++;
    return 0;
}

static int dedup_stage(db_conn *db, const fp_config *c, tp_pool *pool, fp_progress_fn fn, void *ud, fp_report *rep,
                       const id_list *done, size_t *also_scored) {
    const char *method = c->dedup.exact_only ? "exact" : "minhash";
    dd_read x = {.also_scored = also_scored, .done = done};
    ph_clock pc;
    ph_start(&pc, "filter dedup");
    int rc = db_dedup_rows(db, method, dedup_row, &x);
    ph_lap(&pc, "read");
    dd_row *rows = x.rows;
    mh_doc *docs = x.docs;
    size_t n = x.n, n_new = x.n_new;
    size_t *cl = NULL, *pick = NULL, *size = NULL;
    if (!rc && n_new) {
        rep->dedup_new = n_new;
        if (fn) {
            fp_progress p = {"dedup", 0, n_new, 0};
            fn(ud, &p);
        }
        cl = rt_malloc(n * sizeof *cl);
        pick = rt_malloc(n * sizeof *pick);
        size = rt_calloc(n, sizeof *size);
        if (!cl || !pick || !size) rc = RT_ENOMEM;
        if (!rc) rc = mh_dedup_run(&c->dedup, docs, n, pool, cl); /* logs its own phases */
        ph_start(&pc, "filter dedup");
    }
    if (!rc && n_new) {
        /* pick[root] = the member kept: an earlier representative, else one that failed no
         * other filter, then by policy */
        for (size_t i = 0; i < n; i++) pick[i] = SIZE_MAX;
        for (size_t i = 0; i < n; i++) {
            size_t r = cl[i];
            size[r]++;
            size_t *p = &pick[r];
            if (*p == SIZE_MAX) { *p = i; continue; }
            const dd_row *a = &rows[i], *b = &rows[*p];
            bool better;
            if (a->old_rep != b->old_rep) better = a->old_rep;
            else if (a->old_rep) better = false;   /* rows are in id order: the first stays */
            else if (a->clean != b->clean) better = a->clean;
            else if (c->dedup_keep == FP_KEEP_SHORTEST) better = a->bytes < b->bytes;
            else if (c->dedup_keep == FP_KEEP_LONGEST) better = a->bytes > b->bytes;
            else better = false;
            if (better) *p = i;
        }
        /* a cluster kept by an earlier run also has the members that run recorded: the
         * reasons name the whole cluster */
        for (size_t i = 0; i < n && !rc; i++) {
            if (cl[i] != i || pick[i] == SIZE_MAX || !rows[pick[i]].old_rep) continue;
            size_t more;
            if (!(rc = db_cluster_members(db, method, rows[pick[i]].id, &more))) size[i] += more;
        }
        static const char *const keep[] = {"first", "shortest", "longest"};
        db_cluster_writer *ci = NULL;
        rc = db_cluster_writer_open(db, &ci);
        /* one transaction: a run killed while writing leaves no dedup rows, and the rerun
         * clusters every sample again (never a cluster written in part) */
        if (!rc) rc = db_begin(db);
        for (size_t i = 0; i < n && !rc; i++) {
            if (rows[i].old_rep) {
                /* an earlier representative whose cluster grew: its reason names the new size */
                size_t members = size[cl[i]];
                if (pick[cl[i]] != i || members < 2) continue;
                char reason[REASON_MAX];
                snprintf(reason, sizeof reason, "ok: representative of a cluster of %zu (keep %s)", members, keep[c->dedup_keep]);
                rc = db_verdict_put(db, rows[i].id, "dedup", true, (double)members, reason);
                if (!rc) rc = db_cluster_regrow(db, method, rows[i].id, members);
                continue;
            }
            size_t k = pick[cl[i]];
            bool is_rep = k == i;
            int64_t rep_id = rows[k].id;
            if ((rc = db_cluster_put(ci, method, rows[i].id, rep_id, is_rep))) break;
            char reason[REASON_MAX];
            size_t members = size[cl[i]];
            if (is_rep && members == 1) snprintf(reason, sizeof reason, "ok: no duplicate");
            else if (is_rep)
                snprintf(reason, sizeof reason, "ok: representative of a cluster of %zu (keep %s)", members, keep[c->dedup_keep]);
            else {
                /* exact when the normalized texts are equal */
                char *na = NULL, *nb = NULL;
                size_t la = 0, lb = 0;
                rc = mh_normalize(docs[i].text, docs[i].len, &na, &la);
                if (!rc) rc = mh_normalize(docs[k].text, docs[k].len, &nb, &lb);
                bool exact = !rc && la == lb && !memcmp(na, nb, la);
                free(na);
                free(nb);
                if (rc) break;
                if (exact) snprintf(reason, sizeof reason, "exact duplicate of sample %lld (normalized text; cluster of %zu, keep %s)",
                                    (long long)rep_id, members, keep[c->dedup_keep]);
                else snprintf(reason, sizeof reason, "near-duplicate of sample %lld (MinHash, Jaccard >= %.2f; cluster of %zu, keep %s)",
                              (long long)rep_id, c->dedup.threshold, members, keep[c->dedup_keep]);
            }
            rc = db_verdict_put(db, rows[i].id, "dedup", is_rep, (double)members, reason);
            if (rc) break;
            rep->written[FP_DEDUP]++;
            if (!is_rep) { rep->failed[FP_DEDUP]++; rep->dedup_removed++; }
            else if (members > 1) rep->dedup_clusters++;
        }
        if (!rc) rc = db_commit(db);
        if (rc) db_rollback(db);
        db_cluster_writer_close(ci);
        ph_lap(&pc, "write");
        if (!rc && fn) {
            fp_progress p = {"dedup", n_new, n_new, 0};
            fn(ud, &p);
        }
    }
    for (size_t i = 0; i < n; i++) free((void *)docs[i].text);
    free(docs);
    free(rows);
    free(cl);
    free(pick);
    free(size);
    ph_lap(&pc, "free");
    return rc ? rt_errorf(rc, "dedup") : 0;
}

int fp_run(db_conn *db, const fp_config *c, tp_pool *pool, fp_progress_fn fn, void *ud, fp_report *rep) {
    memset(rep, 0, sizeof *rep);
    if (!c->batch) return rt_fail(RT_EINVAL, "batch must be ≥ 1");
    int rc = 0;
    unsigned todo = c->enabled & SAMPLE_FILTERS;
    dc_index *ix = NULL;
    if (todo & (1u << FP_DECONTAM)) {
        if ((rc = build_index(c, &ix, rep))) return rc;
        if (!ix) todo &= ~(1u << FP_DECONTAM);
    }
    if (todo & (1u << FP_VERIFY)) rep->no_gold = db_samples_without_gold(db);
    if (!rc) rc = run_record(db, c, &rep->run_id);
    id_list done = {0};
    size_t dedup_only = 0; /* samples scored by dedup alone (not by the per-sample stage too) */
    if (!rc && todo) rc = sample_stage(db, c, todo, ix, pool, fn, ud, rep, &done);
    dc_index_free(ix);
    if (!rc && (c->enabled & (1u << FP_DEDUP))) rc = dedup_stage(db, c, pool, fn, ud, rep, &done, &dedup_only);
    free(done.v);
    /* filter_runs.scored: distinct samples that got a verdict from this run */
    if (!rc) rc = db_filter_run_finish(db, rep->run_id, rep->scored + dedup_only);
    return rc;
}

/* filters/pipeline.c — fp_run(): the filter stage over the run database (contract in
 * pipeline.h). Reading and writing happen on the calling thread (a ds_db is single-
 * threaded); scoring runs on the pool. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/status.h"
#include "filters/decontam.h"
#include "filters/pipeline.h"

/* "DB: WHAT: SQLite's reason" — the database file, the action, and why. */
static int sql_fail(sqlite3 *h, const char *what) {
    const char *f = sqlite3_db_filename(h, "main");
    return rt_fail(RT_EINTERNAL, "%s: %s: %s", f && *f ? f : "the database", what, sqlite3_errmsg(h));
}

#define SQL_OK(h, call, what)                                                                            \
    do {                                                                                                 \
        int s_ = (call);                                                                                 \
        if (s_ != SQLITE_OK && s_ != SQLITE_ROW && s_ != SQLITE_DONE) return sql_fail((h), (what));     \
    } while (0)

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

static char *dup_col(sqlite3_stmt *st, int col) {
    const unsigned char *t = sqlite3_column_text(st, col);
    return t ? rt_strdup((const char *)t) : NULL;
}

/* SQL of the pending query: per filter a done flag; verify counts as done without gold. */
static int pending_sql(unsigned todo, char *sql, size_t cap, bool count) {
    size_t o = 0;
    o += (size_t)snprintf(sql + o, cap - o, "SELECT %s FROM (SELECT s.id, s.text, s.dict_id, s.thinking_tokens, "
                                           "s.answer_tokens, s.finish_reason, p.messages, p.gold, p.metadata, 0",
                          count ? "COUNT(*)" : "*");
    for (int f = 0; f < FP_DEDUP; f++) {
        if (!(todo & (1u << f))) continue;
        o += (size_t)snprintf(sql + o, cap - o,
                              " | ((%sEXISTS (SELECT 1 FROM verdicts v WHERE v.sample_id = s.id AND v.filter = '%s')) << %d)",
                              f == FP_VERIFY ? "p.gold IS NULL OR " : "", fp_filter_name((fp_filter)f), f);
    }
    o += (size_t)snprintf(sql + o, cap - o, " AS done FROM samples s JOIN prompts p ON p.id = s.prompt_id "
                                           "WHERE s.id > ?1) WHERE done != %u%s",
                          todo, count ? "" : " ORDER BY id LIMIT ?2");
    return o < cap ? 0 : rt_fail(RT_EINTERNAL, "pending query too long");
}

static int count_pending(sqlite3 *h, unsigned todo, size_t *n) {
    char sql[4096];
    int rc = pending_sql(todo, sql, sizeof sql, true);
    if (rc) return rc;
    sqlite3_stmt *st;
    SQL_OK(h, sqlite3_prepare_v2(h, sql, -1, &st, NULL), "counting pending samples");
    sqlite3_bind_int64(st, 1, 0);
    int s = sqlite3_step(st);
    *n = s == SQLITE_ROW ? (size_t)sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    SQL_OK(h, s, "counting pending samples");
    return 0;
}

/* Reads up to cap pending samples with id > *last into items; *n gets how many. */
static int read_batch(ds_db *db, sqlite3_stmt *st, unsigned todo, int64_t *last, item *items, size_t cap, size_t *n) {
    sqlite3 *h = db_sqlite(db);
    *n = 0;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, *last);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)cap);
    int s, rc = 0;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
        item *it = &items[(*n)++];
        it->id = sqlite3_column_int64(st, 0);
        *last = it->id;
        const void *blob = sqlite3_column_blob(st, 1);
        size_t bl = (size_t)sqlite3_column_bytes(st, 1);
        /* the blob pointer is valid until the next step; decompress now */
        rc = db_blob_text(db, blob, bl, sqlite3_column_int64(st, 2), &it->text, &it->len);
        if (rc) { rc = rt_errorf(rc, "sample %lld", (long long)it->id); break; }
        it->think_tokens = sqlite3_column_type(st, 3) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 3);
        it->answer_tokens = sqlite3_column_type(st, 4) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 4);
        it->finish = dup_col(st, 5);
        if ((rc = prompt_text((const char *)sqlite3_column_text(st, 6), &it->prompt))) break;
        it->gold = dup_col(st, 7);
        it->code_task = is_code_task((const char *)sqlite3_column_text(st, 8));
        unsigned done = (unsigned)sqlite3_column_int64(st, 9);
        it->todo = todo & ~done;
        if (!it->gold) it->todo &= ~(1u << FP_VERIFY);
    }
    if (!rc && s != SQLITE_DONE && s != SQLITE_ROW) rc = sql_fail(h, "reading samples");
    sqlite3_reset(st); /* releases the read before the batch is written */
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

static int run_record(ds_db *db, const fp_config *c, int64_t *id) {
    sqlite3 *h = db_sqlite(db);
    json_t *j = fp_config_to_json(c);
    char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    if (!txt) return rt_fail(RT_ENOMEM, "configuration");
    sqlite3_stmt *st;
    int s = sqlite3_prepare_v2(h, "INSERT INTO filter_runs (config) VALUES (?1)", -1, &st, NULL);
    if (s == SQLITE_OK) {
        sqlite3_bind_text(st, 1, txt, -1, SQLITE_TRANSIENT);
        s = sqlite3_step(st);
        sqlite3_finalize(st);
    }
    free(txt);
    SQL_OK(h, s, "recording the filter run");
    *id = sqlite3_last_insert_rowid(h);
    return 0;
}

static int run_finish(ds_db *db, int64_t id, size_t scored) {
    sqlite3 *h = db_sqlite(db);
    sqlite3_stmt *st;
    SQL_OK(h, sqlite3_prepare_v2(h, "UPDATE filter_runs SET scored = ?2, finished_at = CAST(strftime('%s','now') AS INTEGER) "
                                    "WHERE id = ?1", -1, &st, NULL), "recording the filter run");
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)scored);
    int s = sqlite3_step(st);
    sqlite3_finalize(st);
    SQL_OK(h, s, "recording the filter run");
    return 0;
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

static int write_batch(ds_db *db, item *items, size_t n, fp_report *rep) {
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

static int sample_stage(ds_db *db, const fp_config *c, unsigned todo, const dc_index *ix, tp_pool *pool,
                        fp_progress_fn fn, void *ud, fp_report *rep, id_list *done) {
    sqlite3 *h = db_sqlite(db);
    int rc = count_pending(h, todo, &rep->pending);
    if (rc || !rep->pending) return rc;
    char sql[4096];
    if ((rc = pending_sql(todo, sql, sizeof sql, false))) return rc;
    sqlite3_stmt *st;
    SQL_OK(h, sqlite3_prepare_v2(h, sql, -1, &st, NULL), "selecting pending samples");
    item *items = rt_calloc(c->batch, sizeof *items);
    if (!items) { sqlite3_finalize(st); return RT_ENOMEM; }
    int64_t last = 0;
    size_t n;
    score_ctx ctx = {c, ix, items};
    if (fn) { /* the stage starts: its clock starts here */
        fp_progress p0 = {"scoring", 0, rep->pending, 0};
        fn(ud, &p0);
    }
    while (!rc) {
        rc = read_batch(db, st, todo, &last, items, c->batch, &n);
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
    sqlite3_finalize(st);
    return rc;
}

/* ---- dedup stage ---- */

typedef struct {
    int64_t id;
    size_t bytes;
    bool old_rep;   /* a representative kept by an earlier run */
    bool clean;     /* no failing verdict of another filter */
} dd_row;

/* Members an earlier run recorded in the cluster of representative rep_id (the representative
 * itself not counted). */
static int earlier_members(sqlite3 *h, const char *method, int64_t rep_id, size_t *n) {
    sqlite3_stmt *st;
    *n = 0;
    SQL_OK(h, sqlite3_prepare_v2(h, "SELECT COUNT(*) FROM clusters WHERE method = ?1 AND cluster = ?2 AND representative = 0",
                                 -1, &st, NULL), "counting cluster members");
    sqlite3_bind_text(st, 1, method, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, rep_id);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) *n = (size_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    SQL_OK(h, s, "counting cluster members");
    return 0;
}

/* The members an earlier run recorded in representative rep_id's cluster: their reasons
 * and scores name the cluster's new size. */
static int regrow_members(sqlite3 *h, const char *method, int64_t rep_id, size_t members) {
    sqlite3_stmt *st;
    SQL_OK(h, sqlite3_prepare_v2(h, "UPDATE verdicts SET reason = replace(reason, 'cluster of ' || CAST(score AS INTEGER) || ',', "
                                    "'cluster of ' || ?3 || ','), score = ?3 WHERE filter = 'dedup' AND sample_id IN "
                                    "(SELECT sample_id FROM clusters WHERE method = ?1 AND cluster = ?2 AND representative = 0)",
                                 -1, &st, NULL), "updating cluster sizes");
    sqlite3_bind_text(st, 1, method, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, rep_id);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)members);
    int s = sqlite3_step(st);
    sqlite3_finalize(st);
    SQL_OK(h, s, "updating cluster sizes");
    return 0;
}

static int dedup_stage(ds_db *db, const fp_config *c, tp_pool *pool, fp_progress_fn fn, void *ud, fp_report *rep,
                       const id_list *done, size_t *also_scored) {
    sqlite3 *h = db_sqlite(db);
    const char *method = c->dedup.exact_only ? "exact" : "minhash";
    sqlite3_stmt *st;
    SQL_OK(h, sqlite3_prepare_v2(h,
                                 "SELECT s.id, s.text, s.dict_id, s.text_bytes, "
                                 "EXISTS (SELECT 1 FROM verdicts v WHERE v.sample_id = s.id AND v.filter = 'dedup'), "
                                 "NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.sample_id = s.id AND v.pass = 0 "
                                 "AND v.filter != 'dedup') FROM samples s WHERE NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.sample_id = s.id "
                                 "AND v.filter = 'dedup') OR EXISTS (SELECT 1 FROM clusters c WHERE c.sample_id = s.id "
                                 "AND c.method = ?1 AND c.representative = 1) ORDER BY s.id",
                                 -1, &st, NULL),
           "selecting samples for dedup");
    sqlite3_bind_text(st, 1, method, -1, SQLITE_STATIC);
    dd_row *rows = NULL;
    mh_doc *docs = NULL;
    size_t n = 0, cap_r = 0, cap_d = 0, n_new = 0;
    int s, rc = 0;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
        if (rt_grow((void **)&rows, &cap_r, n + 1, sizeof *rows) || rt_grow((void **)&docs, &cap_d, n + 1, sizeof *docs)) {
            rc = RT_ENOMEM;
            break;
        }
        char *t;
        size_t tl;
        rc = db_blob_text(db, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1), sqlite3_column_int64(st, 2),
                          &t, &tl);
        if (rc) break;
        rows[n] = (dd_row){sqlite3_column_int64(st, 0), (size_t)sqlite3_column_int64(st, 3), sqlite3_column_int(st, 4) != 0,
                           sqlite3_column_int(st, 5) != 0};
        docs[n] = (mh_doc){t, tl};
        if (!rows[n].old_rep) {
            n_new++;
            *also_scored += !id_list_has(done, rows[n].id);
        }
        n++;
    }
    if (!rc && s != SQLITE_DONE) rc = sql_fail(h, "reading samples for dedup");
    sqlite3_finalize(st);
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
        if (!rc) rc = mh_dedup_run(&c->dedup, docs, n, pool, cl);
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
            if (!(rc = earlier_members(h, method, rows[pick[i]].id, &more))) size[i] += more;
        }
        static const char *const keep[] = {"first", "shortest", "longest"};
        sqlite3_stmt *ci = NULL;
        int ps = sqlite3_prepare_v2(h, "INSERT INTO clusters (method, sample_id, cluster, representative) VALUES "
                                       "(?1, ?2, ?3, ?4) ON CONFLICT (method, sample_id) DO UPDATE SET "
                                       "cluster = excluded.cluster, representative = excluded.representative",
                                    -1, &ci, NULL);
        if (ps != SQLITE_OK) rc = sql_fail(h, "preparing clusters insert");
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
                if (!rc) rc = regrow_members(h, method, rows[i].id, members);
                continue;
            }
            size_t k = pick[cl[i]];
            bool is_rep = k == i;
            int64_t rep_id = rows[k].id;
            sqlite3_reset(ci);
            sqlite3_bind_text(ci, 1, method, -1, SQLITE_STATIC);
            sqlite3_bind_int64(ci, 2, rows[i].id);
            sqlite3_bind_int64(ci, 3, rep_id);
            sqlite3_bind_int(ci, 4, is_rep);
            if (sqlite3_step(ci) != SQLITE_DONE) { rc = sql_fail(h, "writing clusters"); break; }
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
        sqlite3_finalize(ci);
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
    return rc ? rt_errorf(rc, "dedup") : 0;
}

int fp_run(ds_db *db, const fp_config *c, tp_pool *pool, fp_progress_fn fn, void *ud, fp_report *rep) {
    memset(rep, 0, sizeof *rep);
    if (!c->batch) return rt_fail(RT_EINVAL, "batch must be ≥ 1");
    sqlite3 *h = db_sqlite(db);
    int rc = 0;
    unsigned todo = c->enabled & SAMPLE_FILTERS;
    dc_index *ix = NULL;
    if (todo & (1u << FP_DECONTAM)) {
        if ((rc = build_index(c, &ix, rep))) return rc;
        if (!ix) todo &= ~(1u << FP_DECONTAM);
    }
    if (todo & (1u << FP_VERIFY)) {
        sqlite3_stmt *st;
        int s = sqlite3_prepare_v2(h, "SELECT COUNT(*) FROM samples s JOIN prompts p ON p.id = s.prompt_id WHERE p.gold IS NULL",
                                   -1, &st, NULL);
        if (s == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) rep->no_gold = (size_t)sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    if (!rc) rc = run_record(db, c, &rep->run_id);
    id_list done = {0};
    size_t dedup_only = 0; /* samples scored by dedup alone (not by the per-sample stage too) */
    if (!rc && todo) rc = sample_stage(db, c, todo, ix, pool, fn, ud, rep, &done);
    dc_index_free(ix);
    if (!rc && (c->enabled & (1u << FP_DEDUP))) rc = dedup_stage(db, c, pool, fn, ud, rep, &done, &dedup_only);
    free(done.v);
    /* filter_runs.scored: distinct samples that got a verdict from this run */
    if (!rc) rc = run_finish(db, rep->run_id, rep->scored + dedup_only);
    return rc;
}

/* eval/results.c — eval_results rows → per-question and per-benchmark summaries. */
#include "eval/results.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/status.h"
#include "eval/metrics.h"

/* The message names the database and SQLite's reason; the call and where it failed are
 * logged at debug level (--log-level debug). */
#define SQL_CHECK(db, call)                                                                               \
    do {                                                                                                  \
        if ((call) != SQLITE_OK) {                                                                        \
            RT_DEBUG("%s failed at %s:%d: %s", #call, __FILE__, __LINE__, sqlite3_errmsg(db));            \
            return rt_fail(RT_EINTERNAL, "reading results from %s: %s", sqlite3_db_filename(db, "main"),  \
                           sqlite3_errmsg(db));                                                           \
        }                                                                                                 \
    } while (0)

void ev_run_free(ev_run *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_bench; i++) {
        free(r->b[i].name);
        free(r->b[i].model);
        free(r->b[i].q);
    }
    free(r->b);
    free(r->run);
    free(r);
}

const ev_bench *ev_run_bench(const ev_run *r, const char *name) {
    for (size_t i = 0; i < r->n_bench; i++)
        if (!strcmp(r->b[i].name, name)) return &r->b[i];
    return NULL;
}

const ev_question *ev_bench_question(const ev_bench *b, int64_t id) {
    size_t lo = 0, hi = b->n_questions;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b->q[mid].prompt_id == id) return &b->q[mid];
        if (b->q[mid].prompt_id < id) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* The samples of one question, gathered while scanning rows. */
typedef struct {
    char **ex;
    bool *correct;
    size_t n, cap, cap_c;
    double tokens;
    int trunc;
} qbuf;

static void qbuf_clear(qbuf *b) {
    for (size_t i = 0; i < b->n; i++) free(b->ex[i]);
    b->n = 0;
    b->tokens = 0;
    b->trunc = 0;
}

static int question_close(qbuf *qb, int64_t pid, ev_bench *b, size_t *qcap) {
    if (!qb->n) return 0;
    if (rt_grow((void **)&b->q, qcap, b->n_questions + 1, sizeof *b->q)) return rt_fail(RT_ENOMEM, "eval results");
    ev_question *q = &b->q[b->n_questions++];
    bool solved = false;
    int rc = ev_cons_at_k(NULL, (const char *const *)qb->ex, qb->correct, qb->n, &solved, NULL);
    if (rc) return rc;
    *q = (ev_question){.prompt_id = pid, .k = (int)qb->n, .pass1 = ev_pass_at_1(qb->correct, qb->n),
                       .cons = solved, .mean_tokens = qb->tokens / (double)qb->n, .truncated = qb->trunc};
    for (size_t i = 0; i < qb->n; i++) q->n_correct += qb->correct[i];
    b->n_samples += qb->n;
    if (q->k > b->k_max) b->k_max = q->k;
    qbuf_clear(qb);
    return 0;
}

static int bench_finish(ev_bench *b) {
    double *x = rt_malloc((b->n_questions ? b->n_questions : 1) * sizeof *x);
    if (!x) return rt_fail(RT_ENOMEM, "eval results");
    double tok = 0, trunc = 0, cons = 0;
    for (size_t i = 0; i < b->n_questions; i++) {
        x[i] = b->q[i].pass1;
        tok += b->q[i].mean_tokens * b->q[i].k;
        trunc += b->q[i].truncated;
        cons += b->q[i].cons;
    }
    ev_mean_ci95(x, b->n_questions, &b->pass1, &b->pass1_lo, &b->pass1_hi);
    free(x);
    if (b->n_questions) b->cons = cons / (double)b->n_questions;
    if (b->n_samples) {
        b->mean_tokens = tok / (double)b->n_samples;
        b->truncation = trunc / (double)b->n_samples;
    }
    return 0;
}

static int load(sqlite3 *s, sqlite3_stmt *st, ev_run *r) {
    qbuf qb = {0};
    size_t bcap = 0, qcap = 0;
    int64_t pid = -1;
    ev_bench *b = NULL;
    int rc = 0, step;
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *bench = (const char *)sqlite3_column_text(st, 0), *model = (const char *)sqlite3_column_text(st, 1);
        int64_t p = sqlite3_column_int64(st, 2);
        if (!b || strcmp(b->name, bench ? bench : "")) {
            if (b && ((rc = question_close(&qb, pid, b, &qcap)) || (rc = bench_finish(b)))) break;
            if (rt_grow((void **)&r->b, &bcap, r->n_bench + 1, sizeof *r->b)) {
                rc = rt_fail(RT_ENOMEM, "eval results");
                break;
            }
            b = &r->b[r->n_bench++];
            *b = (ev_bench){.name = rt_strdup(bench ? bench : ""), .model = rt_strdup(model ? model : "")};
            qcap = 0;
            pid = p;
            if (!b->name || !b->model) rc = rt_fail(RT_ENOMEM, "eval results");
        } else if (p != pid) {
            rc = question_close(&qb, pid, b, &qcap);
            pid = p;
        }
        if (rc) break;
        if (rt_grow((void **)&qb.ex, &qb.cap, qb.n + 1, sizeof *qb.ex) ||
            rt_grow((void **)&qb.correct, &qb.cap_c, qb.n + 1, sizeof *qb.correct)) {
            rc = rt_fail(RT_ENOMEM, "eval results");
            break;
        }
        const char *ex = (const char *)sqlite3_column_text(st, 3);
        qb.ex[qb.n] = ex ? rt_strdup(ex) : NULL;
        qb.correct[qb.n] = sqlite3_column_int(st, 4) == 1;
        qb.tokens += (double)sqlite3_column_int64(st, 5);
        const char *fin = (const char *)sqlite3_column_text(st, 6);
        qb.trunc += fin && !strcmp(fin, "length");
        qb.n++;
        if (ex && !qb.ex[qb.n - 1]) rc = rt_fail(RT_ENOMEM, "eval results");
    }
    if (!rc && step != SQLITE_DONE && step != SQLITE_ROW)
        rc = rt_fail(RT_EINTERNAL, "reading eval_results: %s", sqlite3_errmsg(s));
    if (!rc && b && !(rc = question_close(&qb, pid, b, &qcap))) rc = bench_finish(b);
    qbuf_clear(&qb);
    free(qb.ex);
    free(qb.correct);
    return rc;
}

int ev_run_load(ds_db *db, const char *run, ev_run **out) {
    *out = NULL;
    sqlite3 *s = db_sqlite(db);
    sqlite3_stmt *st = NULL;
    SQL_CHECK(s, sqlite3_prepare_v2(s,
                                    "SELECT benchmark, model, prompt_id, extracted, correct, COALESCE(n_tokens, 0), "
                                    "finish_reason FROM eval_results WHERE run = ?1 "
                                    "ORDER BY benchmark, prompt_id, sample_index",
                                    -1, &st, NULL));
    ev_run *r = rt_calloc(1, sizeof *r);
    int rc = 0;
    if (!r || !(r->run = rt_strdup(run))) rc = rt_fail(RT_ENOMEM, "eval results");
    else if (sqlite3_bind_text(st, 1, run, -1, SQLITE_TRANSIENT) != SQLITE_OK)
        rc = rt_fail(RT_EINTERNAL, "binding the run name: %s", sqlite3_errmsg(s));
    else rc = load(s, st, r);
    sqlite3_finalize(st);
    if (!rc && r->n_bench == 0) rc = rt_fail(RT_ENOTFOUND, "no eval results for run %s", run);
    if (rc) {
        ev_run_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int ev_run_names(ds_db *db, char ***names, size_t *n) {
    *names = NULL;
    *n = 0;
    sqlite3 *s = db_sqlite(db);
    sqlite3_stmt *st = NULL;
    SQL_CHECK(s, sqlite3_prepare_v2(s, "SELECT run FROM eval_results GROUP BY run ORDER BY MIN(id)", -1, &st, NULL));
    size_t cap = 0;
    int rc = 0, step;
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
        if (rt_grow((void **)names, &cap, *n + 1, sizeof **names) ||
            !((*names)[*n] = rt_strdup((const char *)sqlite3_column_text(st, 0))))
            rc = rt_fail(RT_ENOMEM, "eval results");
        else (*n)++;
    }
    if (!rc && step != SQLITE_DONE) rc = rt_fail(RT_EINTERNAL, "listing eval runs: %s", sqlite3_errmsg(s));
    sqlite3_finalize(st);
    if (rc) {
        for (size_t i = 0; i < *n; i++) free((*names)[i]);
        free(*names);
        *names = NULL;
        *n = 0;
    }
    return rc;
}

/* eval/results.c — eval_results rows → per-question and per-benchmark summaries. */
#include "eval/results.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/status.h"
#include "dataset/evalres.h"
#include "eval/metrics.h"

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

/* The scan over a run's rows, in benchmark, question, sample order. */
typedef struct {
    ev_run *r;
    qbuf qb;
    size_t bcap, qcap;
    int64_t pid;
    ev_bench *b;
} loader;

static int load_row(void *ud, const db_eval_row *row) {
    loader *L = ud;
    ev_run *r = L->r;
    qbuf *qb = &L->qb;
    const char *bench = row->benchmark, *model = row->model;
    int64_t p = row->prompt_id;
    int rc = 0;
    if (!L->b || strcmp(L->b->name, bench ? bench : "")) {
        if (L->b && ((rc = question_close(qb, L->pid, L->b, &L->qcap)) || (rc = bench_finish(L->b)))) return rc;
        if (rt_grow((void **)&r->b, &L->bcap, r->n_bench + 1, sizeof *r->b)) return rt_fail(RT_ENOMEM, "eval results");
        L->b = &r->b[r->n_bench++];
        *L->b = (ev_bench){.name = rt_strdup(bench ? bench : ""), .model = rt_strdup(model ? model : "")};
        L->qcap = 0;
        L->pid = p;
        if (!L->b->name || !L->b->model) rc = rt_fail(RT_ENOMEM, "eval results");
    } else if (p != L->pid) {
        rc = question_close(qb, L->pid, L->b, &L->qcap);
        L->pid = p;
    }
    if (rc) return rc;
    if (rt_grow((void **)&qb->ex, &qb->cap, qb->n + 1, sizeof *qb->ex) ||
        rt_grow((void **)&qb->correct, &qb->cap_c, qb->n + 1, sizeof *qb->correct))
        return rt_fail(RT_ENOMEM, "eval results");
    const char *ex = row->extracted;
    qb->ex[qb->n] = ex ? rt_strdup(ex) : NULL;
    qb->correct[qb->n] = row->correct;
    qb->tokens += (double)row->n_tokens;
    const char *fin = row->finish;
    qb->trunc += fin && !strcmp(fin, "length");
    qb->n++;
    if (ex && !qb->ex[qb->n - 1]) return rt_fail(RT_ENOMEM, "eval results");
    return 0;
}

static int load(db_conn *db, const char *run, ev_run *r) {
    loader L = {.r = r, .pid = -1};
    int rc = db_eval_rows(db, run, load_row, &L);
    if (!rc && L.b && !(rc = question_close(&L.qb, L.pid, L.b, &L.qcap))) rc = bench_finish(L.b);
    qbuf_clear(&L.qb);
    free(L.qb.ex);
    free(L.qb.correct);
    return rc;
}

int ev_run_load(db_conn *db, const char *run, ev_run **out) {
    *out = NULL;
    ev_run *r = rt_calloc(1, sizeof *r);
    int rc = 0;
    if (!r || !(r->run = rt_strdup(run))) rc = rt_fail(RT_ENOMEM, "eval results");
    else rc = load(db, run, r);
    if (!rc && r->n_bench == 0) rc = rt_fail(RT_ENOTFOUND, "no eval results for run %s", run);
    if (rc) {
        ev_run_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

int ev_run_names(db_conn *db, char ***names, size_t *n) { return db_eval_runs(db, names, n); }

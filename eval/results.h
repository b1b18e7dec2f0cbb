/* eval/results.h — a run's stored eval_results, summarized per benchmark and question.
 *
 * ev_run_load() reads every row of run `run` from eval_results (dataset/db.h) and groups
 * them by benchmark (sorted by name) and question (prompt id, ascending). For each
 * question: k (samples stored), pass@1, cons@k (eval/metrics.h: majority vote over the
 * stored extracted answers, the winner's stored correctness), mean tokens, truncated
 * samples (finish_reason "length"). For each benchmark: questions, samples, pass@1 with its
 * 95% normal interval over questions, cons@k (fraction of questions solved by the vote),
 * mean tokens per sample, truncation rate over samples, and the model recorded.
 * A run with no rows is RT_ENOTFOUND ("no eval results for run R").
 *
 * Ownership: *out is malloc'd; ev_run_free() releases it and everything in it (NULL is
 * fine). Errors: RT_ENOTFOUND, RT_ENOMEM, RT_EINTERNAL (SQLite).
 */
#ifndef RT_EVAL_RESULTS_H
#define RT_EVAL_RESULTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dataset/db.h"

typedef struct {
    int64_t prompt_id;
    int k;
    int n_correct;
    double pass1;
    bool cons;
    double mean_tokens;
    int truncated;
} ev_question;

typedef struct {
    char *name;
    char *model;
    size_t n_questions, n_samples;
    ev_question *q;          /* [n_questions], by prompt id */
    double pass1, pass1_lo, pass1_hi;
    double cons;             /* fraction of questions solved by the vote */
    double mean_tokens;      /* over samples */
    double truncation;       /* fraction of samples with finish "length" */
    int k_max;               /* most samples of any question */
} ev_bench;

typedef struct {
    char *run;
    size_t n_bench;
    ev_bench *b;             /* [n_bench], by name */
} ev_run;

int ev_run_load(db_conn *db, const char *run, ev_run **out);
void ev_run_free(ev_run *r);
/* The names of the runs in eval_results, in the order they were first stored; *names and
 * each name malloc'd (free each, then the array). */
int ev_run_names(db_conn *db, char ***names, size_t *n);
/* The benchmark called name, or NULL. */
const ev_bench *ev_run_bench(const ev_run *r, const char *name);
/* The question with prompt id id in b, or NULL (binary search). */
const ev_question *ev_bench_question(const ev_bench *b, int64_t id);

#endif

/* eval/compare.h — runs side by side: per benchmark, each run's summary, and for every
 * pair of runs the per-question agreement and the questions one solves and the other does
 * not.
 *
 * A question counts as solved by a run when its majority vote is right (cons@k; with k = 1,
 * when its one sample is right). For a pair (A, B) on a benchmark, only the questions both
 * runs answered count: agreement is the fraction of them that A and B both solve or both
 * miss; only_a / only_b list the prompt ids (ascending) solved by one run alone.
 *
 * ev_compare_json() builds, from loaded runs (eval/results.h):
 *   {"interval": TEXT, "runs": [RUN...],
 *    "benchmarks": {NAME: {"runs": {RUN: {"model", "questions", "samples", "k", "pass1",
 *                                          "pass1_ci": [lo, hi], "cons", "mean_tokens",
 *                                          "truncation"}},
 *                          "pairs": [{"a", "b", "common", "agreement", "both", "neither",
 *                                     "only_a": [ids], "only_b": [ids]}]}}}
 * Benchmarks appear in the order first met over the runs; a run without a benchmark is
 * absent from its "runs"; pairs are (i, j), i < j, in the order the runs were given.
 * *out is a new reference. Errors: RT_ENOMEM.
 */
#ifndef RT_EVAL_COMPARE_H
#define RT_EVAL_COMPARE_H

#include <jansson.h>
#include <stddef.h>

#include "eval/results.h"

#define EV_INTERVAL_NAME "normal interval over questions: mean ± 1.96·s/√n of per-question pass@1"

int ev_compare_json(const ev_run *const *runs, size_t n, json_t **out);

#endif

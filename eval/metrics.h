/* eval/metrics.h — the R1 evaluation metrics over k samples per question.
 *
 * pass@1 of a question is the mean correctness of its k samples; a benchmark's pass@1 is
 * the mean over its questions. cons@k is a majority vote: the samples' extracted answers
 * are grouped by equivalence (vf_same_answer, so "0.5" and "\frac{1}{2}" vote together);
 * the largest group wins, a tie going to the group whose first member comes first (the
 * lowest sample index); the question counts as solved when that group's first sample is
 * correct. Samples with no extracted answer (NULL) do not vote; a question where no
 * sample has an answer is not solved.
 *
 * The 95% interval of a benchmark's pass@1 is the normal interval over questions:
 * mean ± 1.96·s/√n, s the sample standard deviation of the per-question pass@1 (n − 1 in
 * the denominator; 0 when n < 2), clipped to [0, 1]. It treats questions as the random
 * unit (the k samples of one question are not independent draws of the benchmark).
 *
 * Pure functions, no allocation kept; ev_cons_at_k returns 0 or RT_ENOMEM.
 */
#ifndef RT_EVAL_METRICS_H
#define RT_EVAL_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "filters/verify.h"

/* Mean of correct[0..k); 0 when k == 0. */
double ev_pass_at_1(const bool *correct, size_t k);

/* Majority vote over extracted[0..k) (entries may be NULL). *solved: the winner's
 * correctness; *winner: the index of the winning group's first sample, or -1 when no
 * sample has an answer (may be NULL). o: NULL means vf_opts_default. */
int ev_cons_at_k(const vf_opts *o, const char *const *extracted, const bool *correct, size_t k, bool *solved,
                 long *winner);

/* Mean of x[0..n) and its 95% normal interval (see above). n == 0 gives all zeros. */
void ev_mean_ci95(const double *x, size_t n, double *mean, double *lo, double *hi);

#endif

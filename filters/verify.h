/* filters/verify.h — math answer verification: is the final answer of a solution the
 * same as a gold answer?
 *
 * vf_verify() extracts the answer from pred (the last \boxed{} or \fbox{}, "#### N", "the
 * answer is …", a short bare answer, and — with last_number — the last math span or
 * number), takes the gold as it is (or its \boxed{} / "#### N" when it has one),
 * normalizes both (LaTeX spellings, units, percent, thousands separators, …), parses them
 * into expression trees and compares them: exact rationals, floats rounded to
 * float_digits digits, expressions by evaluation at random points, tuples, intervals,
 * unions, finite sets, matrices, equations and inequalities, letters and words. When
 * either side does not parse, the normalized strings are compared.
 *
 * Time per pair is bounded (inputs capped at VF_MAX_ANSWER bytes, trees at 4096 nodes
 * and depth 64); vf_verify never loops on any input. No global state: safe to call from
 * many threads.
 *
 * Ownership: out->pred_answer and out->gold_answer are owned by out and released by
 * vf_result_free(). Errors: RT_ENOMEM only — malformed answers are verdicts, not errors.
 */
#ifndef RT_FILTERS_VERIFY_H
#define RT_FILTERS_VERIFY_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    bool last_number;     /* fall back to the last math span / number of pred (default off) */
    int float_digits;     /* floats agree when rounded to this many digits (default 6) */
    bool decimal_places;  /* count float_digits after the point, as math-verify does (default:
                             significant digits) */
    uint64_t seed;        /* random evaluation points (default fixed: verdicts are reproducible) */
} vf_opts;

void vf_opts_default(vf_opts *o);

typedef struct {
    bool correct;
    char *pred_answer;    /* the answer found in pred, or NULL when none */
    char *gold_answer;    /* the gold answer as compared (before normalization) */
    const char *reason;   /* static: the rule that decided — where the pred's answer was
                             found (boxed answer, #### answer, answer phrase, whole text,
                             last number) and how it compared ("boxed answer equal",
                             "answer phrase different", …), or "no answer in pred",
                             "empty gold answer" */
} vf_result;

int vf_verify(const vf_opts *o, const char *gold, const char *pred, vf_result *out);
void vf_result_free(vf_result *r); /* NULL is fine; leaves *r zeroed */

/* The final answer of a solution as vf_verify finds it (caller frees; NULL when none).
 * Returns 0 or RT_ENOMEM. */
int vf_extract_answer(const char *solution, bool last_number, char **out);

/* The canonical spelling of an answer (caller frees). Returns 0 or RT_ENOMEM. */
int vf_normalize_answer(const char *answer, char **out);

/* The parse of an answer as a compact prefix string (for tests and debugging), e.g.
 * "(add 1 (div 1 2))"; caller frees. Returns 0, RT_EFORMAT/RT_ERANGE (message says why)
 * or RT_ENOMEM. */
int vf_parse_answer(const char *answer, char **out);

/* Compare two bare answers (no extraction). */
bool vf_same_answer(const vf_opts *o, const char *gold, const char *pred);

#endif

/* eval/metrics: pass@1, cons@k and the 95% interval against hand-computed cases. */
#include <math.h>
#include <stddef.h>

#include "eval/metrics.h"
#include "testutil.h"

Test(eval_metrics, pass_at_1_is_the_mean_correctness) {
    bool c[] = {true, false, false, true, true};
    cr_assert_float_eq(ev_pass_at_1(c, 5), 0.6, 1e-12);
    cr_assert_float_eq(ev_pass_at_1(c, 1), 1.0, 1e-12);
    cr_assert_float_eq(ev_pass_at_1(c + 1, 2), 0.0, 1e-12);
    cr_assert_float_eq(ev_pass_at_1(c, 0), 0.0, 1e-12);
}

static void expect_cons(const char *const *ex, const bool *c, size_t k, bool want, long want_winner) {
    bool solved = !want;
    long w = -7;
    cr_assert_eq(ev_cons_at_k(NULL, ex, c, k, &solved, &w), 0);
    cr_assert_eq(solved, want, "solved");
    cr_assert_eq(w, want_winner, "winner %ld, want %ld", w, want_winner);
}

Test(eval_metrics, cons_majority_wins_even_when_wrong) {
    /* answers 5, 7, 7, 5, 7 → 7 has three votes; gold is 5 */
    const char *ex[] = {"5", "7", "7", "5", "7"};
    bool c[] = {true, false, false, true, false};
    expect_cons(ex, c, 5, false, 1);
    /* pass@1 is 0.4 on the same samples */
    cr_assert_float_eq(ev_pass_at_1(c, 5), 0.4, 1e-12);
}

Test(eval_metrics, cons_groups_equivalent_spellings) {
    /* 1/2 spelled three ways outvotes 3 (two votes) */
    const char *ex[] = {"3", "\\frac{1}{2}", "3", "0.5", "1/2"};
    bool c[] = {false, true, false, true, true};
    expect_cons(ex, c, 5, true, 1);
}

Test(eval_metrics, cons_tie_goes_to_the_earliest_group) {
    const char *ex[] = {"4", "9", "9", "4"};
    bool c[] = {false, true, true, false};
    expect_cons(ex, c, 4, false, 0);
    const char *ex2[] = {"9", "4", "4", "9"};
    bool c2[] = {true, false, false, true};
    expect_cons(ex2, c2, 4, true, 0);
}

Test(eval_metrics, cons_ignores_samples_without_an_answer) {
    const char *ex[] = {NULL, "2", NULL, NULL};
    bool c[] = {false, true, false, false};
    expect_cons(ex, c, 4, true, 1);
    const char *none[] = {NULL, NULL};
    bool c0[] = {false, false};
    expect_cons(none, c0, 2, false, -1);
    expect_cons(none, c0, 0, false, -1);
}

Test(eval_metrics, ci95_is_the_normal_interval_over_questions) {
    /* x = 0, 0.5, 1, 1: mean 0.625, s² = (0.390625+0.015625+0.140625·2)/3 = 0.229167,
     * half-width 1.96·0.478714/2 = 0.469140 */
    double x[] = {0, 0.5, 1, 1}, m, lo, hi;
    ev_mean_ci95(x, 4, &m, &lo, &hi);
    cr_assert_float_eq(m, 0.625, 1e-12);
    cr_assert_float_eq(lo, 0.625 - 0.469140, 1e-5);
    cr_assert_float_eq(hi, 1.0, 1e-12, "clipped at 1");
    double one[] = {0.25};
    ev_mean_ci95(one, 1, &m, &lo, &hi);
    cr_assert(m == 0.25 && lo == 0.25 && hi == 0.25);
    ev_mean_ci95(x, 0, &m, &lo, &hi);
    cr_assert(m == 0 && lo == 0 && hi == 0);
}

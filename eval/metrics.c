/* eval/metrics.c — pass@1, cons@k (majority vote) and the interval of a mean. */
#include "eval/metrics.h"

#include <math.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "core/status.h"

double ev_pass_at_1(const bool *correct, size_t k) {
    if (!k) return 0;
    size_t c = 0;
    for (size_t i = 0; i < k; i++) c += correct[i] ? 1 : 0;
    return (double)c / (double)k;
}

int ev_cons_at_k(const vf_opts *o, const char *const *extracted, const bool *correct, size_t k, bool *solved,
                 long *winner) {
    vf_opts def;
    if (!o) {
        vf_opts_default(&def);
        o = &def;
    }
    *solved = false;
    if (winner) *winner = -1;
    if (!k) return 0;
    /* group[i]: index of the first sample of i's group (the group's representative) */
    size_t *group = rt_malloc(k * sizeof *group), *votes = rt_calloc(k, sizeof *votes);
    if (!group || !votes) {
        free(group);
        free(votes);
        return rt_fail(RT_ENOMEM, "cons@k: out of memory");
    }
    long best = -1;
    for (size_t i = 0; i < k; i++) {
        group[i] = i;
        if (!extracted[i]) continue;
        for (size_t j = 0; j < i; j++)
            if (extracted[j] && group[j] == j && vf_same_answer(o, extracted[j], extracted[i])) {
                group[i] = j;
                break;
            }
        size_t g = group[i];
        votes[g]++;
        /* strictly more votes wins; on a tie the earlier representative stays */
        if (best < 0 || votes[g] > votes[best] || (votes[g] == votes[best] && (long)g < best)) best = (long)g;
    }
    if (best >= 0) {
        *solved = correct[best];
        if (winner) *winner = best;
    }
    free(group);
    free(votes);
    return 0;
}

void ev_mean_ci95(const double *x, size_t n, double *mean, double *lo, double *hi) {
    *mean = *lo = *hi = 0;
    if (!n) return;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    double m = s / (double)n, ss = 0;
    for (size_t i = 0; i < n; i++) ss += (x[i] - m) * (x[i] - m);
    double sd = n > 1 ? sqrt(ss / (double)(n - 1)) : 0, h = 1.96 * sd / sqrt((double)n);
    *mean = m;
    *lo = m - h < 0 ? 0 : m - h;
    *hi = m + h > 1 ? 1 : m + h;
}

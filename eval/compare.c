/* eval/compare.c — per-benchmark tables and pairwise agreement of eval runs, as JSON. */
#include "eval/compare.h"

#include <string.h>

#include "core/status.h"

static json_t *run_row(const ev_bench *b) {
    return json_pack("{s:s, s:I, s:I, s:i, s:f, s:[f,f], s:f, s:f, s:f}", "model", b->model, "questions",
                     (json_int_t)b->n_questions, "samples", (json_int_t)b->n_samples, "k", b->k_max, "pass1",
                     b->pass1, "pass1_ci", b->pass1_lo, b->pass1_hi, "cons", b->cons, "mean_tokens", b->mean_tokens,
                     "truncation", b->truncation);
}

static json_t *pair(const char *an, const ev_bench *a, const char *bn, const ev_bench *b) {
    json_t *only_a = json_array(), *only_b = json_array();
    size_t common = 0, agree = 0, both = 0, neither = 0;
    for (size_t i = 0; i < a->n_questions; i++) {
        const ev_question *qa = &a->q[i], *qb = ev_bench_question(b, qa->prompt_id);
        if (!qb) continue;
        common++;
        if (qa->cons == qb->cons) {
            agree++;
            if (qa->cons) both++;
            else neither++;
        } else json_array_append_new(qa->cons ? only_a : only_b, json_integer(qa->prompt_id));
    }
    return json_pack("{s:s, s:s, s:I, s:f, s:I, s:I, s:o, s:o}", "a", an, "b", bn, "common", (json_int_t)common,
                     "agreement", common ? (double)agree / (double)common : 0.0, "both", (json_int_t)both, "neither",
                     (json_int_t)neither, "only_a", only_a, "only_b", only_b);
}

int ev_compare_json(const ev_run *const *runs, size_t n, json_t **out) {
    json_t *root = json_object(), *names = json_array(), *benches = json_object();
    if (!root || !names || !benches) goto oom;
    json_object_set_new(root, "interval", json_string(EV_INTERVAL_NAME));
    json_object_set(root, "runs", names);
    json_object_set(root, "benchmarks", benches);
    for (size_t i = 0; i < n; i++) json_array_append_new(names, json_string(runs[i]->run));
    for (size_t i = 0; i < n; i++)
        for (size_t bi = 0; bi < runs[i]->n_bench; bi++) {
            const char *bn = runs[i]->b[bi].name;
            if (json_object_get(benches, bn)) continue;
            json_t *rows = json_object(), *pairs = json_array();
            json_t *entry = json_pack("{s:o, s:o}", "runs", rows, "pairs", pairs);
            if (!entry || json_object_set_new(benches, bn, entry)) goto oom;
            for (size_t r = 0; r < n; r++) {
                const ev_bench *b = ev_run_bench(runs[r], bn);
                if (b && json_object_set_new(rows, runs[r]->run, run_row(b))) goto oom;
            }
            for (size_t r = 0; r < n; r++)
                for (size_t s = r + 1; s < n; s++) {
                    const ev_bench *a = ev_run_bench(runs[r], bn), *b = ev_run_bench(runs[s], bn);
                    if (a && b && json_array_append_new(pairs, pair(runs[r]->run, a, runs[s]->run, b))) goto oom;
                }
        }
    json_decref(names);
    json_decref(benches);
    *out = root;
    return 0;
oom:
    json_decref(names);
    json_decref(benches);
    json_decref(root);
    return rt_fail(RT_ENOMEM, "compare: out of memory");
}

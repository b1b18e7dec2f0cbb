/* cli/cmd_compare.c — `retort compare`: eval runs side by side (eval/compare.h), as tables
 * or one JSON object. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/alloc.h"
#include "core/status.h"
#include "eval/compare.h"
#include "eval/results.h"

#define MAX_IDS_SHOWN 20

static void print_ids(const json_t *ids) {
    size_t n = json_array_size(ids);
    for (size_t i = 0; i < n && i < MAX_IDS_SHOWN; i++)
        printf("%s%lld", i ? ", " : " [", (long long)json_integer_value(json_array_get(ids, i)));
    if (n > MAX_IDS_SHOWN) printf(", … %zu more", n - MAX_IDS_SHOWN);
    printf(n ? "]" : "");
}

static void print_tables(const json_t *root) {
    printf("pass@1 interval: %s\n", json_string_value(json_object_get(root, "interval")));
    const char *bn;
    const json_t *b;
    json_object_foreach((json_t *)json_object_get(root, "benchmarks"), bn, b) {
        printf("\n== %s\n", bn);
        printf("%-16s %9s %4s %8s %18s %8s %11s %9s  %s\n", "run", "questions", "k", "pass@1", "95% CI", "cons@k",
               "mean tokens", "truncated", "model");
        const char *rn;
        const json_t *r;
        json_object_foreach((json_t *)json_object_get(b, "runs"), rn, r) {
            const json_t *ci = json_object_get(r, "pass1_ci");
            char cis[64];
            snprintf(cis, sizeof cis, "[%.4f, %.4f]", json_real_value(json_array_get(ci, 0)),
                     json_real_value(json_array_get(ci, 1)));
            printf("%-16s %9lld %4lld %8.4f %18s %8.4f %11.1f %8.1f%%  %s\n", rn,
                   (long long)json_integer_value(json_object_get(r, "questions")),
                   (long long)json_integer_value(json_object_get(r, "k")), json_real_value(json_object_get(r, "pass1")),
                   cis, json_real_value(json_object_get(r, "cons")), json_real_value(json_object_get(r, "mean_tokens")),
                   100 * json_real_value(json_object_get(r, "truncation")),
                   json_string_value(json_object_get(r, "model")));
        }
        size_t i;
        const json_t *p;
        json_array_foreach(json_object_get(b, "pairs"), i, p) {
            const char *a = json_string_value(json_object_get(p, "a")), *bb = json_string_value(json_object_get(p, "b"));
            printf("%s vs %s: %lld common questions, agreement %.4f (both solve %lld, neither %lld)\n", a, bb,
                   (long long)json_integer_value(json_object_get(p, "common")),
                   json_real_value(json_object_get(p, "agreement")),
                   (long long)json_integer_value(json_object_get(p, "both")),
                   (long long)json_integer_value(json_object_get(p, "neither")));
            printf("  solved only by %s: %zu", a, json_array_size(json_object_get(p, "only_a")));
            print_ids(json_object_get(p, "only_a"));
            printf("\n  solved only by %s: %zu", bb, json_array_size(json_object_get(p, "only_b")));
            print_ids(json_object_get(p, "only_b"));
            printf("\n");
        }
    }
    printf("\n(solved: the majority vote over a question's samples is right; ids are prompt ids)\n");
}

int cmd_compare(int argc, char **argv) {
    if (cli_wants_help("compare", argc, argv)) return EXIT_OK;
    cli_getopt g;
    cli_getopt_init("compare", 0, &g);
    const char *dbp = NULL;
    bool as_json = false;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        switch (c) {
        case 'd': dbp = optarg; break;
        case 'j': as_json = true; break;
        default: return cli_usage_error("compare", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (!dbp) return cli_usage_error("compare", "--db DB is required");
    size_t n = (size_t)(argc - optind);
    if (n < 2) return cli_usage_error("compare", "give at least two runs to compare");
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            if (!strcmp(argv[optind + i], argv[optind + j]))
                return cli_usage_error("compare", "run '%s' is named twice", argv[optind + i]);
    db_conn *db = NULL;
    if (db_open(dbp, DB_OPEN_READONLY, &db)) return cli_fail("compare");
    ev_run **runs = rt_calloc(n, sizeof *runs);
    int rc = runs ? 0 : cli_fail("compare");
    for (size_t i = 0; i < n && !rc; i++)
        if (ev_run_load(db, argv[optind + i], &runs[i])) rc = cli_fail("compare");
    json_t *j = NULL;
    if (!rc && ev_compare_json((const ev_run *const *)runs, n, &j)) rc = cli_fail("compare");
    if (!rc) {
        if (as_json) {
            char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            if (s) printf("%s\n", s);
            else rc = cli_fail("compare");
            free(s);
        } else print_tables(j);
    }
    json_decref(j);
    for (size_t i = 0; runs && i < n; i++) ev_run_free(runs[i]);
    free(runs);
    db_close(db);
    if (!rc && (fflush(stdout) || ferror(stdout))) {
        fprintf(stderr, "retort: compare: writing output failed\n");
        return EXIT_RUNTIME;
    }
    return rc;
}

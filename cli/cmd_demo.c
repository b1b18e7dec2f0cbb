/* cli/cmd_demo.c — `retort demo`: the whole pipeline on the built-in task (eval/demo.h),
 * each stage printed with its timing, then the teacher-vs-student comparison. */
#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/status.h"
#include "eval/demo.h"
#include "kernels/matmul.h"

static void on_event(void *ctx, const dm_event *ev) {
    (void)ctx;
    const char *name = dm_stage_name(ev->stage);
    switch (ev->kind) {
    case DM_EV_BEGIN: printf("\n[%d/%d] %s (at %.1f s): %s\n", (int)ev->stage + 1, DM_N_STAGES, name, ev->seconds, ev->text); break;
    case DM_EV_NOTE: printf("  %s\n", ev->text); break;
    case DM_EV_END: printf("  done in %.1f s: %s\n", ev->seconds, ev->text); break;
    }
    fflush(stdout);
}

static void print_comparison(const json_t *cmp) {
    const json_t *benches = json_object_get(cmp, "benchmarks");
    const char *bname;
    const json_t *b;
    json_object_foreach((json_t *)benches, bname, b) {
        printf("\ncomparison on %s (%s)\n", bname, json_string_value(json_object_get(cmp, "interval")));
        printf("  %-8s %9s %3s %8s %18s %8s %11s %9s\n", "run", "questions", "k", "pass@1", "95% CI", "cons@k",
               "mean tokens", "truncated");
        const char *rname;
        const json_t *r;
        json_object_foreach(json_object_get(b, "runs"), rname, r) {
            const json_t *ci = json_object_get(r, "pass1_ci");
            char cis[64];
            snprintf(cis, sizeof cis, "[%.3f, %.3f]", json_number_value(json_array_get(ci, 0)),
                     json_number_value(json_array_get(ci, 1)));
            printf("  %-8s %9lld %3lld %8.3f %18s %8.3f %11.1f %8.1f%%\n", rname,
                   (long long)json_integer_value(json_object_get(r, "questions")),
                   (long long)json_integer_value(json_object_get(r, "k")), json_number_value(json_object_get(r, "pass1")),
                   cis, json_number_value(json_object_get(r, "cons")), json_number_value(json_object_get(r, "mean_tokens")),
                   100 * json_number_value(json_object_get(r, "truncation")));
        }
        size_t i;
        const json_t *p;
        json_array_foreach(json_object_get(b, "pairs"), i, p) {
            printf("  %s vs %s: %lld common questions, agreement %.3f, solved by both %lld, by neither %lld, "
                   "only %s %zu, only %s %zu\n",
                   json_string_value(json_object_get(p, "a")), json_string_value(json_object_get(p, "b")),
                   (long long)json_integer_value(json_object_get(p, "common")),
                   json_number_value(json_object_get(p, "agreement")),
                   (long long)json_integer_value(json_object_get(p, "both")),
                   (long long)json_integer_value(json_object_get(p, "neither")), json_string_value(json_object_get(p, "a")),
                   json_array_size(json_object_get(p, "only_a")), json_string_value(json_object_get(p, "b")),
                   json_array_size(json_object_get(p, "only_b")));
        }
    }
}

int cmd_demo(int argc, char **argv) {
    cli_getopt g;
    cli_getopt_init("demo", 0, &g);
    dm_options o = {.seed = 0, .dir = "demo-run", .on_event = on_event};
    int ch;
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 's':
            if (cli_parse_seed("demo", optarg, &o.seed)) return EXIT_USAGE;
            break;
        case 'q': o.quick = true; break;
        case 'd': o.dir = optarg; break;
        case 't': {
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > 1024) return cli_usage_error("demo", "--threads wants 1..1024, not '%s'", optarg);
            o.threads = (int)v;
            break;
        }
        case 'h': cli_print_usage("demo", stdout); return EXIT_OK;
        default:
            return cli_usage_error("demo", optopt ? "option '%s' needs a value" : "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("demo", "unexpected argument '%s'", argv[optind]);
    printf("retort demo: the whole pipeline on a built-in task%s, seed %llu, in %s\n", o.quick ? " (--quick size)" : "",
           (unsigned long long)o.seed, o.dir);
    mm_blas_single_thread(); /* the thread pool is the only source of parallelism, as in retort train */
    dm_result r;
    if (dm_run(&o, &r)) return cli_fail("demo");
    print_comparison(r.compare);
    printf("\nstage timings:");
    for (int s = 0; s < DM_N_STAGES; s++) printf(" %s %.1f s%s", dm_stage_name((dm_stage)s), r.seconds[s], s + 1 < DM_N_STAGES ? "," : "");
    printf("; total %.1f s\n", r.total_seconds);
    printf("teacher: %lld parameters, student: %lld parameters (%.2fx smaller)\n", (long long)r.teacher_params,
           (long long)r.student_params, r.student_params ? (double)r.teacher_params / (double)r.student_params : 0.0);
    printf("distillation data: %zu teacher samples, %zu failed a filter, %zu selected\n", r.samples, r.filtered_out,
           r.selected);
    double ratio = r.teacher_pass1 > 0 ? r.student_pass1 / r.teacher_pass1 : 0.0;
    printf("teacher accuracy %.1f%%, student accuracy %.1f%% (pass@1 on %zu test questions): the student reaches "
           "%.1f%% of the teacher%s\n",
           100 * r.teacher_pass1, 100 * r.student_pass1, r.test, 100 * ratio,
           o.quick ? "" : (ratio >= 0.9 ? " (goal: at least 90%, met)" : " (goal: at least 90%, not met)"));
    printf("KD student (same snapshot, weights and steps; loss 0.5 CE + 0.5 KL over the teacher's top-8): accuracy %.1f%% "
           "(SFT student %.1f%%), %.1f%% of the teacher\n",
           100 * r.student_kd_pass1, 100 * r.student_pass1, r.teacher_pass1 > 0 ? 100 * r.student_kd_pass1 / r.teacher_pass1 : 0.0);
    printf("report: %s/report.html, database: %s/run.db\n", o.dir, o.dir);
    dm_result_free(&r);
    if (fflush(stdout) || ferror(stdout)) {
        fprintf(stderr, "retort: demo: writing output failed\n");
        return EXIT_RUNTIME;
    }
    return EXIT_OK;
}

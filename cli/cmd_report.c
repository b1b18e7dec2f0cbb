/* cli/cmd_report.c — `retort report`: the database's funnel, length histograms, train
 * curves and eval results as one self-contained HTML file (eval/report.h). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/status.h"
#include "dataset/db.h"
#include "eval/report.h"
#include "eval/results.h"

#define MAX_LOGS 32

int cmd_report(int argc, char **argv) {
    if (cli_wants_help("report", argc, argv)) return EXIT_OK;
    cli_getopt g;
    cli_getopt_init("report", 0, &g);
    const char *dbp = NULL, *out = NULL, *logs[MAX_LOGS];
    size_t n_logs = 0;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        switch (c) {
        case 'd': dbp = optarg; break;
        case 'o': out = optarg; break;
        case 'l':
            if (n_logs == MAX_LOGS) return cli_usage_error("report", "at most %d --train-log files", MAX_LOGS);
            logs[n_logs++] = optarg;
            break;
        default: return cli_usage_error("report", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("report", "unexpected argument '%s'", argv[optind]);
    if (!dbp) return cli_usage_error("report", "--db DB is required");
    if (!out) return cli_usage_error("report", "--out FILE.html is required");

    db_conn *db = NULL;
    json_t *stats = NULL;
    char **names = NULL;
    size_t n_names = 0;
    ev_run **runs = NULL;
    ev_train_log *tl[MAX_LOGS] = {0};
    int rc = 0;
    for (size_t i = 0; i < n_logs && !rc; i++)
        if (ev_train_log_load(logs[i], &tl[i])) rc = cli_fail("report: reading the train log");
    if (!rc && db_open(dbp, DB_OPEN_READONLY, &db)) rc = cli_fail("report");
    if (!rc && db_stats(db, &stats)) rc = cli_fail("report");
    if (!rc && ev_run_names(db, &names, &n_names)) rc = cli_fail("report");
    if (!rc && n_names && !(runs = rt_calloc(n_names, sizeof *runs))) rc = cli_fail("report");
    for (size_t i = 0; i < n_names && !rc; i++)
        if (ev_run_load(db, names[i], &runs[i])) rc = cli_fail("report");
    rt_atomic_file *af = NULL;
    if (!rc && rt_atomic_open(out, &af)) rc = cli_fail("report");
    if (!rc) {
        ev_report_input in = {.title = dbp, .stats = stats, .runs = (const ev_run *const *)runs, .n_runs = n_names,
                              .logs = (const ev_train_log *const *)tl, .n_logs = n_logs};
        if (ev_report_write(rt_atomic_stream(af), &in)) {
            rt_atomic_abort(af);
            rc = cli_fail("report");
        } else if (rt_atomic_commit(af)) rc = cli_fail("report");
        else
            printf("report: %s (%zu eval runs, %zu train logs, %lld samples)\n", out, n_names, n_logs,
                   (long long)json_integer_value(json_object_get(stats, "samples")));
    }
    for (size_t i = 0; i < n_names; i++) {
        if (runs) ev_run_free(runs[i]);
        free(names[i]);
    }
    free(runs);
    free(names);
    for (size_t i = 0; i < n_logs; i++) ev_train_log_free(tl[i]);
    json_decref(stats);
    db_close(db);
    return rc;
}

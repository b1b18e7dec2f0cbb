/* eval/report.h — the run report: one self-contained HTML file with inline SVG charts (no
 * script, no network, no external fonts or images).
 *
 * Sections, each shown only when there is data for it (otherwise a line says what is
 * missing and which command provides it):
 *   1. the filter funnel: samples remaining after each filter (db_stats "funnel"), with the
 *      count each removed;
 *   2. length histograms of kept samples (every verdict passed: db_stats stage "passed")
 *      and removed ones (stage "all" minus "passed"), summed over sources, in tokens (when
 *      counted) and in bytes (db_stats "histograms"; bins from "edges" / "byte_edges");
 *   3. training curves: loss and learning rate against step, one line per train log
 *      (`retort train --log` JSON lines with "step", "loss", "lr"; lines without a numeric
 *      step and loss are skipped), with the last values in a table; a log whose lines carry
 *      "val_loss" (train --val-data) adds a "NAME validation" line to the loss chart;
 *   4. evaluation: per benchmark, bars of each run's pass@1 (with its 95% interval as a
 *      whisker) and cons@k, and a table (eval/results.h).
 *
 * ev_train_log_load() reads one log file; *out owned by the caller (ev_train_log_free,
 * NULL fine). ev_report_write() writes the page to f; the inputs are borrowed.
 * Errors: RT_EIO (reading a log, writing f), RT_EFORMAT (a log without one usable line),
 * RT_ENOMEM.
 */
#ifndef RT_EVAL_REPORT_H
#define RT_EVAL_REPORT_H

#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

#include "eval/results.h"

typedef struct {
    char *name;        /* the file name */
    size_t n;
    double *step, *loss, *lr;   /* [n]; lr is NaN where a line has none */
    double *val;                /* [n]: val_loss, NaN where a line has none */
    size_t n_val;               /* lines with a val_loss */
} ev_train_log;

int ev_train_log_load(const char *path, ev_train_log **out);
void ev_train_log_free(ev_train_log *l);

typedef struct {
    const char *title;               /* page title (e.g. the database path) */
    const json_t *stats;             /* db_stats() object, or NULL */
    const ev_run *const *runs;       /* eval runs to chart */
    size_t n_runs;
    const ev_train_log *const *logs;
    size_t n_logs;
} ev_report_input;

int ev_report_write(FILE *f, const ev_report_input *in);

#endif

/* eval/report.c — the self-contained HTML report with inline SVG charts. */
#include "eval/report.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/status.h"

static const char *const COLORS[] = {"#4878d0", "#ee854a", "#6acc64", "#d65f5f", "#956cb4", "#8c613c", "#dc7ec0"};
#define N_COLORS (sizeof COLORS / sizeof COLORS[0])
#define W 760.0
#define H 300.0
#define ML 64.0
#define MR 16.0
#define MT 36.0
#define MB 56.0

/* ---- train logs ---- */

void ev_train_log_free(ev_train_log *l) {
    if (!l) return;
    free(l->name);
    free(l->step);
    free(l->loss);
    free(l->lr);
    free(l->val);
    free(l);
}

int ev_train_log_load(const char *path, ev_train_log **out) {
    *out = NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0, cap2 = 0, cap3 = 0, cap4 = 0;
    int rc = rt_read_file(path, &buf, &len);
    if (rc) return rc;
    ev_train_log *l = rt_calloc(1, sizeof *l);
    const char *slash = strrchr(path, '/');
    if (!l || !(l->name = rt_strdup(slash ? slash + 1 : path))) rc = rt_fail(RT_ENOMEM, "train log");
    for (char *p = buf; !rc && p < buf + len;) {
        char *nl = memchr(p, '\n', (size_t)(buf + len - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(buf + len - p);
        json_t *j = json_loadb(p, n, 0, NULL);
        p += n + 1;
        const json_t *st = json_object_get(j, "step"), *lo = json_object_get(j, "loss"), *lr = json_object_get(j, "lr");
        if (json_is_number(st) && json_is_number(lo)) {
            if (rt_grow((void **)&l->step, &cap, l->n + 1, sizeof *l->step) ||
                rt_grow((void **)&l->loss, &cap2, l->n + 1, sizeof *l->loss) ||
                rt_grow((void **)&l->lr, &cap3, l->n + 1, sizeof *l->lr) ||
                rt_grow((void **)&l->val, &cap4, l->n + 1, sizeof *l->val))
                rc = rt_fail(RT_ENOMEM, "train log");
            else {
                l->step[l->n] = json_number_value(st);
                l->loss[l->n] = json_number_value(lo);
                l->lr[l->n] = json_is_number(lr) ? json_number_value(lr) : NAN;
                const json_t *vl = json_object_get(j, "val_loss");
                l->val[l->n] = json_is_number(vl) ? json_number_value(vl) : NAN;
                l->n_val += json_is_number(vl);
                l->n++;
            }
        }
        json_decref(j);
    }
    free(buf);
    if (!rc && !l->n) rc = rt_fail(RT_EFORMAT, "%s: no line with a numeric \"step\" and \"loss\"", path);
    if (rc) {
        ev_train_log_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

/* ---- HTML / SVG helpers ---- */

static void esc(FILE *f, const char *s) {
    for (; s && *s; s++) switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
}

/* A "nice" upper bound for an axis: 1, 2, 2.5 or 5 times a power of ten, ≥ v. */
static double nice_max(double v) {
    if (!(v > 0)) return 1;
    double p = pow(10, floor(log10(v))), m[] = {1, 2, 2.5, 5, 10};
    for (size_t i = 0; i < 5; i++)
        if (m[i] * p >= v * (1 - 1e-12)) return m[i] * p;
    return 10 * p;
}

static void svg_open(FILE *f, const char *title, double h) {
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" role=\"img\">\n",
            W, h, W, h);
    fputs("<title>", f);
    esc(f, title);
    fputs("</title>\n", f);
    fprintf(f, "<rect width=\"%g\" height=\"%g\" fill=\"#fff\"/>\n", W, h);
}

static void legend(FILE *f, const char *const *names, size_t n) {
    double x = ML;
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "<rect x=\"%.1f\" y=\"10\" width=\"12\" height=\"12\" fill=\"%s\"/>", x, COLORS[i % N_COLORS]);
        fprintf(f, "<text x=\"%.1f\" y=\"21\" class=\"lg\">", x + 16);
        esc(f, names[i]);
        fputs("</text>\n", f);
        x += 28 + 7.0 * (double)strlen(names[i]);
    }
}

/* y axis from lo to hi, linear, with nt equal divisions. */
static void y_axis(FILE *f, double lo, double hi, double h, int nt) {
    double plot_h = h - MT - MB;
    for (int i = 0; i <= nt; i++) {
        double v = lo + (hi - lo) * i / nt, y = h - MB - plot_h * i / nt;
        if (fabs(v) < 1e-12 * fabs(hi - lo)) v = 0;
        fprintf(f, "<line x1=\"%g\" x2=\"%g\" y1=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>", ML, W - MR, y, y);
        fprintf(f, "<text x=\"%g\" y=\"%.1f\" class=\"yt\">%.4g</text>\n", ML - 6, y + 4, v);
    }
    fprintf(f, "<line x1=\"%g\" x2=\"%g\" y1=\"%g\" y2=\"%g\" class=\"axis\"/>\n", ML, ML, MT, h - MB);
    fprintf(f, "<line x1=\"%g\" x2=\"%g\" y1=\"%g\" y2=\"%g\" class=\"axis\"/>\n", ML, W - MR, h - MB, h - MB);
}

/* Grouped vertical bars: values[s * n_cat + c]; whiskers lo/hi (same shape) or NULL. */
static void bars(FILE *f, const char *title, const char *const *cats, size_t n_cat, const char *const *series,
                 size_t n_ser, const double *values, const double *wlo, const double *whi, double ymax) {
    svg_open(f, title, H);
    legend(f, series, n_ser);
    double top = ymax > 0 ? ymax : 0;
    for (size_t i = 0; i < n_cat * n_ser; i++)
        if (values[i] > top) top = values[i];
    top = ymax > 0 ? ymax : nice_max(top);
    y_axis(f, 0, top, H, 5);
    double plot_w = W - ML - MR, plot_h = H - MT - MB, gw = plot_w / (double)n_cat, bw = gw * 0.8 / (double)n_ser;
    for (size_t c = 0; c < n_cat; c++) {
        for (size_t s = 0; s < n_ser; s++) {
            double v = values[s * n_cat + c], x = ML + gw * (double)c + gw * 0.1 + bw * (double)s,
                   bh = top > 0 ? plot_h * v / top : 0;
            fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>", x,
                    H - MB - bh, bw > 1 ? bw - 1 : bw, bh, COLORS[s % N_COLORS]);
            esc(f, series[s]);
            fprintf(f, " %s: %.4g</title></rect>\n", cats[c], v);
            if (wlo && whi) {
                double y1 = H - MB - plot_h * wlo[s * n_cat + c] / top, y2 = H - MB - plot_h * whi[s * n_cat + c] / top,
                       xm = x + bw / 2;
                fprintf(f, "<path d=\"M%.1f %.1fV%.1fM%.1f %.1fH%.1fM%.1f %.1fH%.1f\" class=\"wh\"/>\n", xm, y1, y2,
                        xm - 4, y1, xm + 4, xm - 4, y2, xm + 4);
            }
        }
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"xt\">", ML + gw * ((double)c + 0.5), H - MB + 16);
        esc(f, cats[c]);
        fputs("</text>\n", f);
    }
    fputs("</svg>\n", f);
}

/* Lines: series s has n[s] points (x[s][i], y[s][i]); NaN y values are skipped. */
static void lines(FILE *f, const char *title, const char *xlabel, const char *const *names, size_t n_ser,
                  const double *const *x, const double *const *y, const size_t *n) {
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (size_t s = 0; s < n_ser; s++)
        for (size_t i = 0; i < n[s]; i++) {
            if (isnan(y[s][i])) continue;
            x0 = fmin(x0, x[s][i]), x1 = fmax(x1, x[s][i]), y0 = fmin(y0, y[s][i]), y1 = fmax(y1, y[s][i]);
        }
    svg_open(f, title, H);
    if (!isfinite(x0)) {
        fprintf(f, "<text x=\"%g\" y=\"%g\" class=\"lg\">no values</text></svg>\n", ML, H / 2);
        return;
    }
    if (y0 > 0 && y0 < 0.5 * y1) y0 = 0;
    if (y1 <= y0) y1 = y0 + (y0 != 0 ? fabs(y0) * 0.1 : 1);
    if (x1 <= x0) x1 = x0 + 1;
    /* round the y range out to whole ticks; x ticks at round values inside the data range */
    double sy = nice_max((y1 - y0) / 5), sx = nice_max((x1 - x0) / 5);
    y0 = floor(y0 / sy + 1e-9) * sy;
    y1 = ceil(y1 / sy - 1e-9) * sy;
    int nt = (int)lround((y1 - y0) / sy);
    legend(f, names, n_ser);
    y_axis(f, y0, y1, H, nt < 1 ? 1 : nt);
    double plot_w = W - ML - MR, plot_h = H - MT - MB;
    for (double t = ceil(x0 / sx - 1e-9) * sx; t <= x1 + 1e-9 * sx; t += sx)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"xt\">%.6g</text>\n", ML + plot_w * (t - x0) / (x1 - x0),
                H - MB + 16, t);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"xt\">", ML + plot_w / 2, H - 12);
    esc(f, xlabel);
    fputs("</text>\n", f);
    for (size_t s = 0; s < n_ser; s++) {
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" points=\"", COLORS[s % N_COLORS]);
        for (size_t i = 0; i < n[s]; i++)
            if (!isnan(y[s][i]))
                fprintf(f, "%.1f,%.1f ", ML + plot_w * (x[s][i] - x0) / (x1 - x0),
                        H - MB - plot_h * (y[s][i] - y0) / (y1 - y0));
        fputs("\"/>\n", f);
    }
    fputs("</svg>\n", f);
}

/* ---- sections ---- */

static void funnel(FILE *f, const json_t *stats) {
    fputs("<h2>Filter funnel</h2>\n", f);
    const json_t *fun = json_object_get(stats, "funnel");
    size_t n = json_array_size(fun);
    long long start = json_integer_value(json_object_get(stats, "samples"));
    if (!n || start <= 0) {
        fputs("<p class=\"none\">No filter has run on this database (retort filter).</p>\n", f);
        return;
    }
    double rh = 26, h = MT + rh * (double)(n + 1) + 12, bw = W - 180 - 150;
    svg_open(f, "filter funnel", h);
    for (size_t i = 0; i <= n; i++) {
        const json_t *e = i ? json_array_get(fun, i - 1) : NULL;
        const char *name = e ? json_string_value(json_object_get(e, "filter")) : "start";
        long long rem = e ? json_integer_value(json_object_get(e, "remaining")) : start,
                  rm = e ? json_integer_value(json_object_get(e, "removed")) : 0;
        double y = MT / 2 + rh * (double)i, w = bw * (double)rem / (double)start;
        fprintf(f, "<text x=\"172\" y=\"%.1f\" class=\"yt\">", y + 17);
        esc(f, name ? name : "?");
        fprintf(f, "</text><rect x=\"180\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>", y + 4, w > 0.5 ? w : 0.5,
                rh - 8, COLORS[0]);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" class=\"lg\">%lld", 186 + (w > 0.5 ? w : 0.5), y + 17, rem);
        if (e) fprintf(f, " (−%lld)", rm);
        fputs("</text>\n", f);
    }
    fputs("</svg>\n", f);
}

/* Sums stage counts over sources into out[n] (zeros when absent). */
static void hist_sum(const json_t *by_source, const char *stage, double *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = 0;
    const char *src;
    const json_t *st;
    json_object_foreach((json_t *)by_source, src, st) {
        const json_t *c = json_object_get(st, stage);
        for (size_t i = 0; i < n && i < json_array_size(c); i++) out[i] += (double)json_integer_value(json_array_get(c, i));
    }
}

static int histogram(FILE *f, const json_t *hist, const char *key, const char *edges_key, const char *unit,
                     bool any_verdicts) {
    const json_t *by = json_object_get(hist, key), *edges = json_object_get(hist, edges_key);
    size_t n = json_array_size(edges);
    if (!n || !json_object_size(by)) {
        fprintf(f, "<p class=\"none\">No sample lengths in %s recorded.</p>\n", unit);
        return 0;
    }
    double *v = rt_calloc(3 * n, sizeof *v);
    char **labels = rt_calloc(n, sizeof *labels);
    if (!v || !labels) {
        free(v);
        free(labels);
        return rt_fail(RT_ENOMEM, "report");
    }
    double *all = v + 2 * n, *kept = v, *removed = v + n;
    hist_sum(by, "all", all, n);
    hist_sum(by, "passed", kept, n);
    for (size_t i = 0; i < n; i++) removed[i] = any_verdicts ? all[i] - kept[i] : 0;
    if (!any_verdicts) memcpy(kept, all, n * sizeof *kept);
    size_t last = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i] > 0) last = i;
    size_t nb = last + 1;
    int rc = 0;
    for (size_t i = 0; i < nb && !rc; i++) {
        char b[64];
        long long lo = json_integer_value(json_array_get(edges, i));
        if (i + 1 < n) snprintf(b, sizeof b, "<%lld", json_integer_value(json_array_get(edges, i + 1)));
        else snprintf(b, sizeof b, "≥%lld", lo);
        if (!(labels[i] = rt_strdup(b))) rc = rt_fail(RT_ENOMEM, "report");
    }
    if (!rc) {
        /* the two series must sit next to each other: values[s * nb + c] */
        double *vals = rt_malloc(2 * nb * sizeof *vals);
        if (!vals) rc = rt_fail(RT_ENOMEM, "report");
        else {
            memcpy(vals, kept, nb * sizeof *vals);
            memcpy(vals + nb, removed, nb * sizeof *vals);
            char title[96];
            snprintf(title, sizeof title, "sample length in %s", unit);
            const char *names[] = {any_verdicts ? "kept (every verdict passed)" : "all samples (no verdicts yet)",
                                   "removed"};
            fprintf(f, "<h3>Length in %s</h3>\n", unit);
            bars(f, title, (const char *const *)labels, nb, names, any_verdicts ? 2 : 1, vals, NULL, NULL, 0);
            free(vals);
        }
    }
    for (size_t i = 0; i < n; i++) free(labels[i]);
    free(labels);
    free(v);
    return rc;
}

static int training(FILE *f, const ev_report_input *in) {
    fputs("<h2>Training</h2>\n", f);
    if (!in->n_logs) {
        fputs("<p class=\"none\">No train logs given (retort train --log FILE; retort report --train-log FILE).</p>\n", f);
        return 0;
    }
    size_t n = in->n_logs, nl = n;   /* nl: loss series, a validation one after each log that has it */
    const char **names = rt_calloc(2 * n, sizeof *names);
    const double **x = rt_calloc(2 * n, sizeof *x), **loss = rt_calloc(2 * n, sizeof *loss), **lr = rt_calloc(n, sizeof *lr);
    size_t *cnt = rt_calloc(2 * n, sizeof *cnt);
    char **vnames = rt_calloc(n, sizeof *vnames);
    int rc = 0;
    if (!names || !x || !loss || !lr || !cnt || !vnames) rc = rt_fail(RT_ENOMEM, "report");
    for (size_t i = 0; i < n && !rc; i++) {
        names[i] = in->logs[i]->name;
        x[i] = in->logs[i]->step;
        loss[i] = in->logs[i]->loss;
        lr[i] = in->logs[i]->lr;
        cnt[i] = in->logs[i]->n;
    }
    for (size_t i = 0, k = n; i < n && !rc; i++) {
        const ev_train_log *l = in->logs[i];
        if (!l->n_val) continue;
        size_t len = strlen(l->name) + 16;
        if (!(vnames[i] = rt_malloc(len))) {
            rc = rt_fail(RT_ENOMEM, "report");
            break;
        }
        snprintf(vnames[i], len, "%s validation", l->name);
        names[k] = vnames[i], x[k] = l->step, loss[k] = l->val, cnt[k] = l->n;
        nl = ++k;
    }
    if (!rc) {
        fputs("<h3>Loss</h3>\n", f);
        lines(f, nl > n ? "training and validation loss" : "training loss", "step", names, nl, x, loss, cnt);
        fputs("<h3>Learning rate</h3>\n", f);
        lines(f, "learning rate", "step", names, n, x, lr, cnt);
        fputs("<table><tr><th>log</th><th>steps logged</th><th>last step</th><th>first loss</th><th>last loss</th>"
              "<th>last lr</th></tr>\n", f);
        for (size_t i = 0; i < n; i++) {
            const ev_train_log *l = in->logs[i];
            fputs("<tr><td>", f);
            esc(f, l->name);
            fprintf(f, "</td><td>%zu</td><td>%.0f</td><td>%.4f</td><td>%.4f</td><td>%.3g</td></tr>\n", l->n,
                    l->step[l->n - 1], l->loss[0], l->loss[l->n - 1], l->lr[l->n - 1]);
        }
        fputs("</table>\n", f);
    }
    for (size_t i = 0; vnames && i < n; i++) free(vnames[i]);
    free(vnames);
    free(names);
    free(x);
    free(loss);
    free(lr);
    free(cnt);
    return rc;
}

static int evaluation(FILE *f, const ev_report_input *in) {
    fputs("<h2>Evaluation</h2>\n", f);
    if (!in->n_runs) {
        fputs("<p class=\"none\">No eval results in this database (retort eval).</p>\n", f);
        return 0;
    }
    size_t nr = in->n_runs, nb = 0;
    const char **benches = NULL, **names = rt_calloc(nr, sizeof *names);
    size_t cap = 0;
    int rc = names ? 0 : rt_fail(RT_ENOMEM, "report");
    for (size_t r = 0; r < nr && !rc; r++) {
        names[r] = in->runs[r]->run;
        for (size_t b = 0; b < in->runs[r]->n_bench && !rc; b++) {
            const char *bn = in->runs[r]->b[b].name;
            bool seen = false;
            for (size_t i = 0; i < nb; i++) seen |= !strcmp(benches[i], bn);
            if (seen) continue;
            if (rt_grow((void **)&benches, &cap, nb + 1, sizeof *benches)) rc = rt_fail(RT_ENOMEM, "report");
            else benches[nb++] = bn;
        }
    }
    double *v = rc ? NULL : rt_calloc(4 * nr * (nb ? nb : 1), sizeof *v);
    if (!rc && !v) rc = rt_fail(RT_ENOMEM, "report");
    if (!rc) {
        double *p1 = v, *lo = v + nr * nb, *hi = v + 2 * nr * nb, *cons = v + 3 * nr * nb;
        for (size_t r = 0; r < nr; r++)
            for (size_t b = 0; b < nb; b++) {
                const ev_bench *e = ev_run_bench(in->runs[r], benches[b]);
                p1[r * nb + b] = e ? e->pass1 : 0;
                lo[r * nb + b] = e ? e->pass1_lo : 0;
                hi[r * nb + b] = e ? e->pass1_hi : 0;
                cons[r * nb + b] = e ? e->cons : 0;
            }
        fputs("<h3>pass@1 per benchmark (whiskers: 95% normal interval over questions)</h3>\n", f);
        bars(f, "pass@1 per benchmark", benches, nb, names, nr, p1, lo, hi, 1);
        fputs("<h3>cons@k per benchmark (majority vote)</h3>\n", f);
        bars(f, "cons@k per benchmark", benches, nb, names, nr, cons, NULL, NULL, 1);
        fputs("<table><tr><th>benchmark</th><th>run</th><th>model</th><th>questions</th><th>k</th><th>pass@1</th>"
              "<th>95% interval</th><th>cons@k</th><th>mean tokens</th><th>truncated</th></tr>\n", f);
        for (size_t b = 0; b < nb; b++)
            for (size_t r = 0; r < nr; r++) {
                const ev_bench *e = ev_run_bench(in->runs[r], benches[b]);
                if (!e) continue;
                fputs("<tr><td>", f);
                esc(f, e->name);
                fputs("</td><td>", f);
                esc(f, in->runs[r]->run);
                fputs("</td><td>", f);
                esc(f, e->model);
                fprintf(f, "</td><td>%zu</td><td>%d</td><td>%.4f</td><td>[%.4f, %.4f]</td><td>%.4f</td><td>%.1f</td>"
                           "<td>%.1f%%</td></tr>\n",
                        e->n_questions, e->k_max, e->pass1, e->pass1_lo, e->pass1_hi, e->cons, e->mean_tokens,
                        100 * e->truncation);
            }
        fputs("</table>\n", f);
    }
    free(v);
    free(benches);
    free(names);
    return rc;
}

int ev_report_write(FILE *f, const ev_report_input *in) {
    fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>retort report: ", f);
    esc(f, in->title);
    fputs("</title>\n<style>\n"
          "body{font-family:sans-serif;margin:24px auto;max-width:800px;color:#222}\n"
          "h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;margin-top:32px}h3{font-size:15px}\n"
          "svg{display:block;margin:8px 0}text{font-family:sans-serif;font-size:11px;fill:#333}\n"
          ".yt{text-anchor:end}.xt{text-anchor:middle}.lg{font-size:12px}\n"
          ".grid{stroke:#e6e6e6}.axis{stroke:#888}.wh{stroke:#222;stroke-width:1.2;fill:none}\n"
          "table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;white-space:nowrap;"
          "text-align:right}th{background:#f3f3f3}.none{color:#777;font-style:italic}\n"
          "</style></head><body>\n<h1>retort report: ", f);
    esc(f, in->title);
    fputs("</h1>\n", f);
    const json_t *st = in->stats;
    if (st)
        fprintf(f, "<p>%lld prompts, %lld samples.</p>\n", (long long)json_integer_value(json_object_get(st, "prompts")),
                (long long)json_integer_value(json_object_get(st, "samples")));
    funnel(f, st);
    fputs("<h2>Sample lengths, kept and removed</h2>\n", f);
    const json_t *hist = json_object_get(st, "histograms");
    bool verdicts = json_object_size(json_object_get(st, "verdicts")) > 0;
    int rc = histogram(f, hist, "tokens", "edges", "tokens", verdicts);
    if (!rc)
        rc = histogram(f, hist, "bytes", json_object_get(hist, "byte_edges") ? "byte_edges" : "edges", "bytes", verdicts);
    if (!rc) rc = training(f, in);
    if (!rc) rc = evaluation(f, in);
    fputs("</body></html>\n", f);
    if (!rc && ferror(f)) rc = rt_fail(RT_EIO, "writing the report failed");
    return rc;
}

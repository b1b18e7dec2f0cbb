/* cli/cmd_filter.c — `retort filter --db DB [--config FILE | --preset NAME] [...]`. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/clock.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "core/yaml.h"
#include "dataset/db.h"
#include "filters/pipeline.h"

typedef struct {
    double t0, last_print;
    bool tty, quiet, printed;
    const char *stage;   /* the stage t0 belongs to */
} progress_state;

/* One line on stderr: rewritten in place on a terminal, else at most one every 10 s. */
static void on_progress(void *ud, const fp_progress *p) {
    progress_state *ps = ud;
    if (ps->quiet) return;
    if (ps->stage != p->stage) { ps->stage = p->stage; ps->t0 = now_s(); ps->last_print = 0; }
    double t = now_s(), el = t - ps->t0;
    bool final = p->done == p->total;
    if (!p->done && !ps->tty) return;
    if (!final && p->done && t - ps->last_print < (ps->tty ? 0.2 : 10.0)) return;
    ps->last_print = t;
    char a[32], b[32];
    double rate = el > 0.01 ? (double)p->done / el : 0.0;
    char speed[64] = "", eta[32] = "--:--";
    if (rate > 0) {
        double left = (double)(p->total - p->done) / rate;
        snprintf(speed, sizeof speed, "  %.0f samples/s", rate);
        if (p->bytes) snprintf(speed + strlen(speed), sizeof speed - strlen(speed), "  %.1f MB/s", (double)p->bytes / el / 1e6);
        snprintf(eta, sizeof eta, "%d:%02d", (int)(left / 60), (int)left % 60);
    }
    fprintf(stderr, "%sfilter: %s %s/%s samples%s  ETA %s%s", ps->tty ? "\r" : "", p->stage,
            cli_thousands((long long)p->done, a, sizeof a), cli_thousands((long long)p->total, b, sizeof b), speed, eta,
            ps->tty ? "   " : "\n");
    ps->printed = true;
    if (ps->tty && final) fputc('\n', stderr);
}

static int print_config(const fp_config *c) {
    json_t *j = fp_config_to_json(c);
    char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    if (!s) return cli_fail("filter");
    puts(s);
    free(s);
    return EXIT_OK;
}

static void print_funnel(db_conn *db) {
    json_t *j;
    if (db_stats(db, &j)) { rt_errclear(); return; }
    cli_print_funnel(j);
    json_decref(j);
}

int cmd_filter(int argc, char **argv) {
    cli_getopt g;
    cli_getopt_init("filter", 0, &g);
    const char *dbpath = NULL, *config = NULL, *preset = NULL, *assets = NULL;
    const char *extra[FP_MAX_LIST], *fields[FP_MAX_LIST];
    size_t n_extra = 0, n_fields = 0;
    long threads = 0;
    long long batch = 0;
    bool print = false, quiet = false;
    int ch;
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'd': dbpath = optarg; break;
        case 'c': config = optarg; break;
        case 'p': preset = optarg; break;
        case 'a': assets = optarg; break;
        case 'P': print = true; break;
        case 'q': quiet = true; break;
        case 'D':
            if (n_extra == FP_MAX_LIST) return cli_usage_error("filter", "at most %d --decontam files", FP_MAX_LIST);
            extra[n_extra++] = optarg;
            break;
        case 'F':
            if (n_fields == FP_MAX_LIST) return cli_usage_error("filter", "at most %d --decontam-field options", FP_MAX_LIST);
            fields[n_fields++] = optarg;
            break;
        case 't':
            threads = strtol(optarg, &end, 10);
            if (*end || threads < 1 || threads > 256) return cli_usage_error("filter", "--threads must be 1..256, got '%s'", optarg);
            break;
        case 'b':
            batch = strtoll(optarg, &end, 10);
            if (*end || batch < 1 || batch > 1000000) return cli_usage_error("filter", "--batch must be 1..1000000, got '%s'", optarg);
            break;
        case 'h': cli_print_usage("filter", stdout); return EXIT_OK;
        default:
            return cli_usage_error("filter", optopt ? "option '%s' needs a value" : "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("filter", "unexpected argument '%s'", argv[optind]);
    if (config && preset) return cli_usage_error("filter", "give --config or --preset, not both");
    if (!dbpath && !print) return cli_usage_error("filter", "missing --db DB");

    fp_config c;
    if (fp_config_default(&c)) return cli_fail("filter");
    int rc = 0;
    if (preset) {
        rc = fp_config_preset(preset, &c);
        if (rc == RT_ENOTFOUND) { fp_config_free(&c); return cli_usage_error("filter", "%s", rt_errmsg()); }
    } else if (config) {
        json_t *doc;
        rc = rt_yaml_load_file(config, &doc);
        if (!rc) { rc = fp_config_from_json(doc, config, &c); json_decref(doc); }
    }
    if (!rc && assets) rc = fp_config_set_assets(&c, assets);
    for (size_t i = 0; !rc && i < n_extra; i++) rc = fp_config_add_decontam_file(&c, extra[i]);
    if (!rc && n_fields) c.n_decontam_fields = 0; /* the command line replaces the configuration's list */
    for (size_t i = 0; !rc && i < n_fields; i++) rc = fp_config_add_decontam_field(&c, fields[i]);
    if (!rc && batch) c.batch = (size_t)batch;
    if (rc) { fp_config_free(&c); return cli_fail("filter"); }
    if (print) { int s = print_config(&c); fp_config_free(&c); return s; }

    db_conn *db;
    if (db_open(dbpath, 0, &db)) { fp_config_free(&c); return cli_fail("filter"); }
    tp_pool *pool = NULL;
    if (tp_create((int)threads, &pool)) { db_close(db); fp_config_free(&c); return cli_fail("filter: starting threads"); }
    double t0 = now_s();
    progress_state ps = {t0, 0, isatty(2) != 0, quiet, false, NULL};
    fp_report r;
    rc = fp_run(db, &c, pool, on_progress, &ps, &r);
    double dt = now_s() - t0;
    int status = EXIT_OK;
    if (rc) {
        if (ps.printed && ps.tty) fputc('\n', stderr);
        status = cli_fail("filter");
    } else {
        char a[32], b[32], d[32];
        if (c.enabled & (1u << FP_DECONTAM)) {
            if (r.decontam_skipped)
                fprintf(stderr, "retort filter: decontam skipped: no benchmark text to index (%s); set RETORT_ASSETS, "
                                "--assets DIR or --decontam FILE\n", r.decontam_note[0] ? r.decontam_note : "no files");
            else if (strstr(r.decontam_note, "absent"))
                fprintf(stderr, "retort filter: decontam: %s\n", r.decontam_note);
        }
        if ((c.enabled & (1u << FP_VERIFY)) && r.no_gold)
            fprintf(stderr, "retort filter: verify: %s samples have no gold answer in their prompt: no verify verdict for them\n",
                    cli_thousands((long long)r.no_gold, a, sizeof a));
        printf("%s: scored %s of %s pending samples in %.2f s (%.1f MB/s, %d threads)\n", dbpath,
               cli_thousands((long long)r.scored, a, sizeof a), cli_thousands((long long)r.pending, b, sizeof b), dt,
               dt > 0 ? (double)r.bytes / dt / 1e6 : 0.0, tp_size(pool));
        if ((c.enabled & (1u << FP_DECONTAM)) && !r.decontam_skipped)
            printf("decontam index: %s documents, %s %d-grams (%s)\n", cli_thousands((long long)r.bench_docs, a, sizeof a),
                   cli_thousands((long long)r.bench_ngrams, b, sizeof b), c.decontam_n, r.decontam_note);
        if (c.enabled & (1u << FP_DEDUP))
            printf("dedup: %s new samples, %s removed as duplicates, %s clusters with kept members\n",
                   cli_thousands((long long)r.dedup_new, a, sizeof a), cli_thousands((long long)r.dedup_removed, b, sizeof b),
                   cli_thousands((long long)r.dedup_clusters, d, sizeof d));
        printf("\n  %-14s %12s %12s\n", "filter", "verdicts", "failed");
        for (int f = 0; f < FP_COUNT; f++)
            if (r.written[f])
                printf("  %-14s %12s %12s\n", fp_filter_name((fp_filter)f), cli_thousands((long long)r.written[f], a, sizeof a),
                       cli_thousands((long long)r.failed[f], b, sizeof b));
        print_funnel(db);
    }
    tp_free(pool);
    db_close(db);
    fp_config_free(&c);
    return status;
}

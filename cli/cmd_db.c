/* cli/cmd_db.c — `retort db init|stats|check|dict|snapshot`. */
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/alloc.h"
#include "core/status.h"
#include "dataset/db.h"
#include "dataset/verdicts.h"

static int db_usage(const char *fmt, const char *arg) { return cli_usage_error("db", fmt, arg); }

/* The library's messages name the database file; the context says which action failed. */
static int fail_db(const char *verb, const char *path) {
    (void)path;
    char what[64];
    snprintf(what, sizeof what, "db %s", verb);
    return cli_fail(what);
}

static int run_init(const char *path) {
    db_conn *db;
    if (db_open(path, DB_OPEN_CREATE, &db)) return fail_db("init", path);
    int v = 0;
    int rc = db_schema_version(db, &v);
    db_close(db);
    if (rc) return fail_db("init", path);
    printf("%s: schema version %d\n", path, v);
    return EXIT_OK;
}

static int run_check(const char *path) {
    db_conn *db;
    if (db_open(path, DB_OPEN_READONLY, &db)) return fail_db("check", path);
    bool ok;
    char *report = NULL;
    int v = 0;
    int rc = db_schema_version(db, &v);
    if (!rc) rc = db_check(db, &ok, &report);
    db_close(db);
    if (rc) return fail_db("check", path);
    printf("schema version %d (this retort: %d)\nintegrity %s\n", v, DB_SCHEMA_VERSION, report);
    if (!ok) {
        size_t lines = 1;
        for (const char *c = report; *c; c++) lines += *c == '\n';
        size_t first = strcspn(report, "\n");
        fprintf(stderr, "retort: db check %s: integrity check failed: %zu problem%s (first: %.*s)\n", path, lines,
                lines == 1 ? "" : "s", (int)first, report);
        free(report);
        return EXIT_RUNTIME;
    }
    free(report);
    return EXIT_OK;
}

void cli_print_funnel(const json_t *stats) {
    const json_t *fun = json_object_get(stats, "funnel");
    char a[32], b[32];
    if (!json_array_size(fun)) return;
    printf("\nfunnel (a sample counts for the first filter it fails)\n  %-14s %12s %12s\n", "", "removed", "remaining");
    printf("  %-14s %12s %12s\n", "start", "",
           cli_thousands(json_integer_value(json_object_get(stats, "samples")), a, sizeof a));
    size_t i;
    const json_t *e;
    json_array_foreach(fun, i, e)
        printf("  %-14s %12s %12s\n", json_string_value(json_object_get(e, "filter")),
               cli_thousands(json_integer_value(json_object_get(e, "removed")), a, sizeof a),
               cli_thousands(json_integer_value(json_object_get(e, "remaining")), b, sizeof b));
}

static void print_hist(const char *title, json_t *edges, json_t *hist) {
    if (!json_object_size(hist)) return;
    size_t i;
    json_t *e;
    printf("\n%s\n  %-24s %-16s", title, "source", "stage");
    json_array_foreach(edges, i, e) {
        char lab[32];
        json_int_t v = json_integer_value(e);
        if (v >= 1024) snprintf(lab, sizeof lab, "%lldK", (long long)v / 1024);
        else snprintf(lab, sizeof lab, "%lld", (long long)v);
        printf(" %6s+", lab);
    }
    printf("\n");
    const char *src, *stage;
    json_t *stages, *counts;
    json_object_foreach(hist, src, stages) {
        json_object_foreach(stages, stage, counts) {
            printf("  %-24.24s %-16.16s", src, stage);
            json_array_foreach(counts, i, e) printf(" %7lld", (long long)json_integer_value(e));
            printf("\n");
        }
    }
}

static void print_stats(const char *path, json_t *j) {
    char a[32], b[32];
    printf("database   %s (schema %lld)\n", path, (long long)json_integer_value(json_object_get(j, "schema_version")));
    printf("prompts    %s\n", cli_thousands(json_integer_value(json_object_get(j, "prompts")), a, sizeof a));
    printf("samples    %s\n", cli_thousands(json_integer_value(json_object_get(j, "samples")), a, sizeof a));
    json_t *t = json_object_get(j, "text");
    printf("text       %s bytes stored in %s (ratio %.2f)\n", cli_thousands(json_integer_value(json_object_get(t, "bytes")), a, sizeof a),
           cli_thousands(json_integer_value(json_object_get(t, "stored_bytes")), b, sizeof b),
           json_real_value(json_object_get(t, "ratio")));
    const char *k;
    json_t *v;
    printf("\n  %-32s %10s %10s\n", "source", "prompts", "samples");
    json_object_foreach(json_object_get(j, "sources"), k, v)
        printf("  %-32.32s %10lld %10lld\n", k, (long long)json_integer_value(json_object_get(v, "prompts")),
               (long long)json_integer_value(json_object_get(v, "samples")));
    json_t *ts = json_object_get(j, "teachers");
    if (json_object_size(ts)) {
        printf("\n  %-32s %10s\n", "teacher", "samples");
        json_object_foreach(ts, k, v) printf("  %-32.32s %10lld\n", k, (long long)json_integer_value(v));
    }
    json_t *vs = json_object_get(j, "verdicts");
    if (json_object_size(vs)) {
        printf("\n  %-32s %10s %10s %10s\n", "filter", "pass", "fail", "pass rate");
        json_object_foreach(vs, k, v)
            printf("  %-32.32s %10lld %10lld %9.1f%%\n", k, (long long)json_integer_value(json_object_get(v, "pass")),
                   (long long)json_integer_value(json_object_get(v, "fail")),
                   100.0 * json_real_value(json_object_get(v, "pass_rate")));
    }
    cli_print_funnel(j);
    json_t *ss = json_object_get(j, "snapshots");
    if (json_object_size(ss)) {
        printf("\n  %-32s %10s\n", "snapshot", "samples");
        json_object_foreach(ss, k, v) printf("  %-32.32s %10lld\n", k, (long long)json_integer_value(v));
    }
    json_t *h = json_object_get(j, "histograms");
    print_hist("sample length, tokens (thinking + answer)", json_object_get(h, "edges"), json_object_get(h, "tokens"));
    print_hist("sample length, bytes", json_object_get(h, "byte_edges"), json_object_get(h, "bytes"));
}

static int run_stats(const char *path, bool json) {
    db_conn *db;
    if (db_open(path, DB_OPEN_READONLY, &db)) return fail_db("stats", path);
    json_t *j;
    int rc = db_stats(db, &j);
    db_close(db);
    if (rc) return fail_db("stats", path);
    if (json) {
        char *txt = json_dumps(j, JSON_COMPACT);
        if (txt) puts(txt);
        free(txt);
    } else {
        print_stats(path, j);
    }
    json_decref(j);
    return EXIT_OK;
}

static int run_dict(const char *path, size_t cap, size_t max_samples, bool recompress) {
    db_conn *db;
    if (db_open(path, 0, &db)) return fail_db("dict", path);
    db_dict_report r;
    size_t n = 0;
    int rc = recompress ? db_dict_train_recompress(db, cap, max_samples, &r, &n) : db_dict_train(db, cap, max_samples, &r);
    db_close(db);
    if (rc) return fail_db("dict", path);
    printf("dictionary %lld: %zu bytes, trained on %zu samples (%zu bytes of text)\n", (long long)r.dict_id,
           r.dict_bytes, r.samples, r.text_bytes);
    printf("  plain zstd per blob   %zu bytes  (ratio %.2f)\n", r.plain_bytes,
           r.plain_bytes ? (double)r.text_bytes / (double)r.plain_bytes : 0.0);
    printf("  zstd + dictionary     %zu bytes  (ratio %.2f)\n", r.dict_zstd_bytes,
           r.dict_zstd_bytes ? (double)r.text_bytes / (double)r.dict_zstd_bytes : 0.0);
    printf("  dictionary vs plain   %.2fx smaller\n",
           r.dict_zstd_bytes ? (double)r.plain_bytes / (double)r.dict_zstd_bytes : 0.0);
    if (recompress) printf("recompressed %zu samples with it\n", n);
    return EXIT_OK;
}

static int run_snapshot(const char *path, const char *name, const char *source, const char *teacher, bool passed) {
    db_conn *db;
    if (db_open(path, 0, &db)) return fail_db("snapshot", path);
    int64_t *ids = NULL;
    size_t n = 0;
    int rc = db_snapshot_pick(db, source, teacher, passed, &ids, &n);
    json_t *cfg = json_pack("{s:s?,s:s?,s:b}", "source", source, "teacher", teacher, "passed_all_filters", passed);
    char *cfgs = cfg ? json_dumps(cfg, JSON_COMPACT) : NULL;
    json_decref(cfg);
    if (!rc) rc = db_snapshot_create(db, name, cfgs, ids, n, NULL);
    free(cfgs);
    free(ids);
    db_close(db);
    if (rc) return fail_db("snapshot", path);
    printf("snapshot %s: %zu samples\n", name, n);
    return EXIT_OK;
}

int cmd_db(int argc, char **argv) {
    cli_getopt g;
    cli_getopt_init("db", 0, &g);
    bool json = false, recompress = false, passed = false;
    const char *source = NULL, *teacher = NULL;
    long long size = 112640, max_samples = 20000;
    int ch;
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'j': json = true; break;
        case 'r': recompress = true; break;
        case 'p': passed = true; break;
        case 'S': source = optarg; break;
        case 'T': teacher = optarg; break;
        case 's':
            size = strtoll(optarg, &end, 10);
            if (*end || size < 1024 || size > (1 << 26)) return db_usage("--size must be 1024..67108864, got '%s'", optarg);
            break;
        case 'm':
            max_samples = strtoll(optarg, &end, 10);
            if (*end || max_samples < 8) return db_usage("--max-samples must be an integer ≥ 8, got '%s'", optarg);
            break;
        case 'h': cli_print_usage("db", stdout); return EXIT_OK;
        default: return db_usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) return db_usage("missing %s", "ACTION (init, stats, check, dict, snapshot)");
    const char *act = argv[optind++];
    if (optind >= argc) return db_usage("missing %s", "DB");
    const char *path = argv[optind++];
    bool is_snap = !strcmp(act, "snapshot");
    if (is_snap && optind >= argc) return db_usage("missing %s", "snapshot NAME");
    const char *name = is_snap ? argv[optind++] : NULL;
    if (optind < argc) return db_usage("unexpected argument '%s'", argv[optind]);
    if (!strcmp(act, "init")) return run_init(path);
    if (!strcmp(act, "stats")) return run_stats(path, json);
    if (!strcmp(act, "check")) return run_check(path);
    if (!strcmp(act, "dict")) return run_dict(path, (size_t)size, (size_t)max_samples, recompress);
    if (is_snap) return run_snapshot(path, name, source, teacher, passed);
    return db_usage("unknown action '%s' (init, stats, check, dict, snapshot)", act);
}

/* cli/cmd_import.c — `retort import --db DB --format F [...] FILE...`. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "core/clock.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "dataset/db.h"
#include "dataset/import.h"

int cmd_import(int argc, char **argv) {
    cli_getopt g;
    cli_getopt_init("import", 0, &g);
    imp_options o = {0};
    const char *dbpath = NULL, *format = NULL;
    long threads = 0;
    int ch;
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'd': dbpath = optarg; break;
        case 'f': format = optarg; break;
        case 'p': o.prompt_field = optarg; break;
        case 'a': o.answer_field = optarg; break;
        case 's': o.source = optarg; break;
        case 'S': o.as_samples = true; break;
        case 'k': o.skip_bad = true; break;
        case 'b': {
            long long b = strtoll(optarg, &end, 10);
            if (*end || b < 1 || b > 10000000) return cli_usage_error("import", "--batch must be 1..10000000, got '%s'", optarg);
            o.batch_rows = (size_t)b;
            break;
        }
        case 'M': {
            /* bytes, or with a K, M or G suffix (powers of 1024) */
            unsigned long long v = strtoull(optarg, &end, 10);
            unsigned shift = 0;
            if (*end == 'K' || *end == 'k') shift = 10;
            else if (*end == 'M' || *end == 'm') shift = 20;
            else if (*end == 'G' || *end == 'g') shift = 30;
            if (shift) end++;
            if (*end || end == optarg || optarg[0] == '-' || v < 1 || v > (1ull << 40) >> shift)
                return cli_usage_error("import", "--max-prompt-bytes must be a positive size (bytes, or with K, M, G), got '%s'",
                                       optarg);
            o.max_prompt_bytes = (size_t)(v << shift);
            break;
        }
        case 't':
            threads = strtol(optarg, &end, 10);
            if (*end || threads < 1 || threads > 64) return cli_usage_error("import", "--threads must be 1..64, got '%s'", optarg);
            break;
        case 'h': cli_print_usage("import", stdout); return EXIT_OK;
        default:
            return cli_usage_error("import", optopt ? "option '%s' needs a value" : "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (!dbpath) return cli_usage_error("import", "missing --db DB");
    if (!format) return cli_usage_error("import", "missing --format (gsm8k, math, aime, jsonl, chat)");
    if (imp_parse_format(format, &o.format)) return cli_usage_error("import", "%s", rt_errmsg());
    if (optind >= argc) return cli_usage_error("import", "missing FILE");
    if (o.format == IMP_JSONL && !o.prompt_field) return cli_usage_error("import", "format jsonl needs --prompt-field");
    if (o.format == IMP_JSONL && o.as_samples && !o.answer_field)
        return cli_usage_error("import", "--as-samples with format jsonl needs --answer-field (the sample text)");
    if (o.format == IMP_CHAT && o.prompt_field)
        return cli_usage_error("import", "--prompt-field does not apply to format chat (the prompt is the messages)");

    db_conn *db;
    if (db_open(dbpath, DB_OPEN_CREATE, &db)) return cli_fail("import");
    tp_pool *pool = NULL;
    if (tp_create((int)threads, &pool)) { db_close(db); return cli_fail("import: starting threads"); }
    int status = EXIT_OK;
    for (int i = optind; i < argc; i++) {
        imp_report r;
        double t0 = now_s();
        if (db_import_file(db, argv[i], &o, pool, &r)) {
            status = cli_fail("import");
            continue;
        }
        double dt = now_s() - t0;
        char a[32], b[32], c[32];
        printf("%s: source %s, %s lines: %s new prompts (%s already present)", argv[i], r.source,
               cli_thousands((long long)r.lines, a, sizeof a), cli_thousands((long long)r.prompts_new, b, sizeof b),
               cli_thousands((long long)r.prompts_existing, c, sizeof c));
        if (o.as_samples)
            printf(", %s new samples (%s already present)", cli_thousands((long long)r.samples_new, a, sizeof a),
                   cli_thousands((long long)r.samples_existing, b, sizeof b));
        printf(", %zu bad; %.2f s, %.1f MB/s\n", r.bad, dt, dt > 0 ? (double)r.bytes / dt / 1e6 : 0.0);
        if (r.bad)
            fprintf(stderr, "retort: import %s: skipped %zu bad line%s (first: line %zu: %s)\n", argv[i], r.bad,
                    r.bad == 1 ? "" : "s", r.first_bad_line, r.first_bad_reason);
    }
    tp_free(pool);
    db_close(db);
    return status;
}

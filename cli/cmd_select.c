/* cli/cmd_select.c — `retort select --db DB --snapshot NAME [...]`. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/status.h"
#include "dataset/db.h"
#include "filters/pipeline.h"

int cmd_select(int argc, char **argv) {
    cli_getopt g;
    cli_getopt_init("select", 0, &g);
    fp_select_opts o = {.per_prompt = 1, .policy = FP_POLICY_SHORTEST, .seed = 0};
    const char *dbpath = NULL;
    int ch;
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'd': dbpath = optarg; break;
        case 's': o.snapshot = optarg; break;
        case 'b': o.balance_sources = true; break;
        case 'k':
            o.per_prompt = strtoll(optarg, &end, 10);
            if (*end || o.per_prompt < 1) return cli_usage_error("select", "--per-prompt must be an integer ≥ 1, got '%s'", optarg);
            break;
        case 'S':
            if (cli_parse_seed("select", optarg, &o.seed)) return EXIT_USAGE;
            break;
        case 'p':
            if (fp_policy_parse(optarg, &o.policy)) return cli_usage_error("select", "%s", rt_errmsg());
            break;
        case 'h': cli_print_usage("select", stdout); return EXIT_OK;
        default:
            return cli_usage_error("select", optopt ? "option '%s' needs a value" : "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("select", "unexpected argument '%s'", argv[optind]);
    if (!dbpath) return cli_usage_error("select", "missing --db DB");
    if (!o.snapshot || !*o.snapshot) return cli_usage_error("select", "missing --snapshot NAME");
    db_conn *db;
    if (db_open(dbpath, 0, &db)) return cli_fail("select");
    fp_select_report r;
    int rc = fp_select(db, &o, &r);
    db_close(db);
    if (rc) return cli_fail("select");
    char a[32], b[32], c[32];
    printf("snapshot %s: %s samples from %s prompts (%s eligible: passed every filter run)", o.snapshot,
           cli_thousands((long long)r.selected, a, sizeof a), cli_thousands((long long)r.prompts, b, sizeof b),
           cli_thousands((long long)r.eligible, c, sizeof c));
    if (o.balance_sources) printf(", %s dropped to balance sources", cli_thousands((long long)r.balanced_out, a, sizeof a));
    printf("\n");
    return EXIT_OK;
}

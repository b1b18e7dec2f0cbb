/* cli/cmd_resize_vocab.c — `retort resize-vocab`: a chat template's special tokens into a
 * model's tokenizer, and embedding / LM-head rows for them (student/vocab.h). */
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/fsutil.h"
#include "student/vocab.h"

int cmd_resize_vocab(int argc, char **argv) {
    cli_getopt g;
    cli_getopt_init("resize-vocab", 0, &g);
    const char *model = NULL, *from = NULL, *out = NULL;
    bool overwrite = false;
    int64_t max_shard = 0;
    int ch;
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        switch (ch) {
        case CO_RV_MODEL: model = optarg; break;
        case CO_RV_FROM: from = optarg; break;
        case CO_RV_OUT: out = optarg; break;
        case CO_RV_OVERWRITE: overwrite = true; break;
        case CO_RV_SHARD: {
            char *end;
            double b = strtod(optarg, &end);
            if (end == optarg || *end || !(b >= 1 && b <= 9e18))
                return cli_usage_error("resize-vocab", "--max-shard-size wants a byte count ≥ 1, not '%s'", optarg);
            max_shard = (int64_t)b;
            break;
        }
        case 'h': cli_print_usage("resize-vocab", stdout); return EXIT_OK;
        default: return cli_usage_error("resize-vocab", "unknown option or missing value '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("resize-vocab", "unexpected argument '%s'", argv[optind]);
    if (!model) return cli_usage_error("resize-vocab", "missing --model DIR");
    if (!from) return cli_usage_error("resize-vocab", "missing --add-tokens-from TEMPLATE|TOKENIZER.json");
    if (!out) return cli_usage_error("resize-vocab", "missing --out DIR");
    const vb_token *tokens = NULL;
    vb_token *owned = NULL;
    size_t n = 0;
    if (rt_is_file(from)) {
        if (vb_tokenizer_tokens(from, &owned, &n)) return cli_fail("resize-vocab");
        tokens = owned;
    } else if (vb_template_tokens(from, &tokens, &n)) {
        return cli_usage_error("resize-vocab", "--add-tokens-from '%s' is neither a template (deepseek-r1, qwen, llama3) "
                                               "nor a tokenizer.json", from);
    }
    vb_report r;
    int rc = vb_resize(model, tokens, n, out, overwrite, max_shard, &r);
    vb_tokens_free(owned, owned ? n : 0);
    if (rc) return cli_fail("resize-vocab");
    if (r.added)
        printf("resize-vocab: %zu token(s) added, ids %lld-%lld; vocabulary %lld -> %lld%s -> %s\n", r.added,
               (long long)r.first_id, (long long)(r.first_id + (int64_t)r.added - 1), (long long)r.old_vocab,
               (long long)r.new_vocab, r.new_vocab > r.old_vocab ? " (new rows: the mean of the old ones)" : "", out);
    else
        printf("resize-vocab: the tokenizer already holds every token; %s is a copy (vocabulary %lld)\n", out,
               (long long)r.old_vocab);
    return fflush(stdout) ? EXIT_RUNTIME : EXIT_OK;
}

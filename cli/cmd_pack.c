/* cli/cmd_pack.c — `retort pack`: chat JSONL → chat template → packed training shards. */
#include <getopt.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/chat_template.h"
#include "core/shard.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "core/tokenizer.h"
#include "dataset/pack.h"
#include "dataset/render.h"

/* Shared with cmd_export.c: the packing options and the closing summary. */
int cli_pack_option(const char *cmd, int ch, const char *arg, pk_options *o, const char **tokenizer,
                    const char **template_name, long *threads);
void cli_pack_summary(const pk_report *r, const pk_options *o, const char *dir);
bool cli_template_spec_ok(const char *spec);

int cli_template(const char *cmd, const char *spec, const char *tok_path, const tok_tokenizer *tok, bool required,
                 ct_template **out) {
    *out = NULL;
    if (!cli_template_spec_ok(spec))
        return cli_usage_error(cmd, "unknown chat template '%s' (deepseek-r1, qwen, llama3, auto or a template file)", spec);
    if (!tok) {
        if (!spec && !required) return EXIT_OK;
        return cli_usage_error(cmd, "--template needs a tokenizer (--tokenizer, or DIR/tokenizer.json)");
    }
    int rc = ct_template_resolve(spec, tok_path, tok, out);
    if (rc == RT_ENOTFOUND && !spec && !required) { rt_errclear(); return EXIT_OK; }
    if (rc) {
        char what[64];
        snprintf(what, sizeof what, "%s: chat template", cmd);
        return cli_fail(what);
    }
    return EXIT_OK;
}

/* --template: a built-in name, auto, or a readable file (ct_template_resolve reads it). */
bool cli_template_spec_ok(const char *spec) {
    ct_kind k;
    if (!spec || !strcmp(spec, "auto") || !ct_parse_kind(spec, &k)) return true;
    rt_errclear();
    return access(spec, R_OK) == 0;
}

int cli_pack_option(const char *cmd, int ch, const char *arg, pk_options *o, const char **tokenizer,
                    const char **template_name, long *threads) {
    char *end;
    long long v;
    switch (ch) {
    case 'K': *tokenizer = arg; return 0;
    case 'T': *template_name = arg; return 0;
    case 'N':
        v = strtoll(arg, &end, 10);
        if (*end || v < 1 || v > 16777216) return cli_usage_error(cmd, "--seq must be 1..16777216, got '%s'", arg);
        o->seq_len = (uint32_t)v;
        return 0;
    case 'R':
        return cli_parse_seed(cmd, arg, &o->seed);
    case 'D': o->drop_long = true; return 0;
    case 'P':
        v = strtoll(arg, &end, 10);
        if (*end || v < 1) return cli_usage_error(cmd, "--shard-seqs must be a positive integer, got '%s'", arg);
        o->shard_seqs = (uint64_t)v;
        return 0;
    case 'k':
        v = strtoll(arg, &end, 10);
        if (*end || v < 1 || v > SHARD_MAX_TOPK) return cli_usage_error(cmd, "--top-k must be 1..%d, got '%s'", SHARD_MAX_TOPK, arg);
        o->top_k = (uint32_t)v;
        return 0;
    case 'U':
        v = strtoll(arg, &end, 10);
        if (*end || v < 1 || v > 0x7fffffff) return cli_usage_error(cmd, "--teacher-vocab must be a positive integer, got '%s'", arg);
        o->teacher_vocab = (uint32_t)v;
        return 0;
    case 'j':
        *threads = strtol(arg, &end, 10);
        if (*end || *threads < 1 || *threads > 64) return cli_usage_error(cmd, "--threads must be 1..64, got '%s'", arg);
        return 0;
    }
    return -1;
}

void cli_pack_summary(const pk_report *r, const pk_options *o, const char *dir) {
    char a[32], b[32], c[32], d[32];
    uint64_t total = (uint64_t)r->seqs * o->seq_len;
    printf("%s: %s documents → %s sequences of %u tokens in %zu shard%s\n", dir,
           cli_thousands((long long)r->docs, a, sizeof a), cli_thousands((long long)r->seqs, b, sizeof b), o->seq_len,
           r->shards, r->shards == 1 ? "" : "s");
    printf("  tokens %s (loss on %s), padding %s (%.2f%%)\n", cli_thousands((long long)r->tokens, a, sizeof a),
           cli_thousands((long long)r->loss_tokens, b, sizeof b), cli_thousands((long long)r->pad_tokens, c, sizeof c),
           total ? 100.0 * (double)r->pad_tokens / (double)total : 0.0);
    printf("  longer than %u: %zu split, %zu dropped (%s tokens); empty: %zu\n", o->seq_len, r->docs_split,
           r->docs_dropped, cli_thousands((long long)r->dropped_tokens, d, sizeof d), r->docs_empty);
}

int cmd_pack(int argc, char **argv) {
    cli_getopt g;
    cli_getopt_init("pack", 0, &g);
    pk_options o = {0};
    const char *tokenizer = NULL, *tmpl = NULL, *jsonl = NULL, *out = NULL;
    long threads = 0;
    int ch;
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        if (ch == 'J') { jsonl = optarg; continue; }
        if (ch == 'O') { out = optarg; continue; }
        if (ch == 'h') { cli_print_usage("pack", stdout); return EXIT_OK; }
        int rc = ch == '?' ? -1 : cli_pack_option("pack", ch, optarg, &o, &tokenizer, &tmpl, &threads);
        if (rc > 0) return rc;
        if (rc < 0)
            return cli_usage_error("pack", optopt ? "option '%s' needs a value" : "unknown option '%s'", argv[optind - 1]);
    }
    if (optind < argc) return cli_usage_error("pack", "unexpected argument '%s'", argv[optind]);
    if (!tokenizer) return cli_usage_error("pack", "missing --tokenizer FILE (a tokenizer.json)");
    if (!jsonl) return cli_usage_error("pack", "missing --jsonl CHAT.jsonl");
    if (!o.seq_len) return cli_usage_error("pack", "missing --seq N");
    if (!out) return cli_usage_error("pack", "missing --out DIR");
    if (o.teacher_vocab && !o.top_k) return cli_usage_error("pack", "--teacher-vocab applies only with --top-k");
    if (!cli_template_spec_ok(tmpl))
        return cli_usage_error("pack", "unknown template '%s' (deepseek-r1, qwen, llama3, auto or a template file)", tmpl);
    tok_tokenizer *t;
    if (tok_load(tokenizer, &t)) return cli_fail("pack: loading the tokenizer");
    ct_template *ct;
    if (ct_template_resolve(tmpl, tokenizer, t, &ct)) { tok_free(t); return cli_fail("pack: chat template"); }
    tp_pool *pool = NULL;
    if (tp_create((int)threads, &pool)) { ct_template_free(ct); tok_free(t); return cli_fail("pack: starting threads"); }
    json_t *meta = json_pack("{s:s,s:s,s:s}", "tokenizer", tokenizer, "template", tmpl ? tmpl : ct_template_name(ct),
                             "input", jsonl);
    pk_report r;
    int rc = rd_pack_jsonl(t, ct, jsonl, out, &o, pool, meta, &r);
    json_decref(meta);
    tp_free(pool);
    ct_template_free(ct);
    tok_free(t);
    if (rc) return cli_fail("pack");
    cli_pack_summary(&r, &o, out);
    return EXIT_OK;
}

/* cli/cmd_export.c — `retort export`: samples as chat JSONL, prompts as JSONL, or packed shards. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/chat_template.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "core/tokenizer.h"
#include "dataset/db.h"
#include "dataset/export.h"
#include "dataset/pack.h"
#include "dataset/render.h"

int cli_pack_option(const char *cmd, int ch, const char *arg, pk_options *o, const char **tokenizer,
                    const char **template_name, long *threads);
void cli_pack_summary(const pk_report *r, const pk_options *o, const char *dir);
bool cli_template_spec_ok(const char *spec);

static int export_shards(db_conn *db, const exp_filter *flt, const char *tokenizer, const char *tmpl, const char *out,
                         const pk_options *o, long threads) {
    if (!cli_template_spec_ok(tmpl))
        return cli_usage_error("export", "unknown template '%s' (deepseek-r1, qwen, llama3, auto or a template file)", tmpl);
    tok_tokenizer *t;
    if (tok_load(tokenizer, &t)) return cli_fail("export: loading the tokenizer");
    ct_template *ct;
    if (ct_template_resolve(tmpl, tokenizer, t, &ct)) { tok_free(t); return cli_fail("export: chat template"); }
    tp_pool *pool = NULL;
    if (tp_create((int)threads, &pool)) { ct_template_free(ct); tok_free(t); return cli_fail("export: starting threads"); }
    json_t *meta = json_pack("{s:s,s:s,s:s?,s:s?}", "tokenizer", tokenizer, "template", tmpl ? tmpl : ct_template_name(ct),
                             "snapshot", flt->snapshot, "source", flt->source);
    pk_report r;
    int rc = rd_export_snapshot(db, flt, t, ct, out, o, pool, meta, &r);
    json_decref(meta);
    tp_free(pool);
    ct_template_free(ct);
    tok_free(t);
    if (rc) return cli_fail("export");
    cli_pack_summary(&r, o, out);
    return EXIT_OK;
}

int cmd_export(int argc, char **argv) {
    cli_getopt g;
    cli_getopt_init("export", 0, &g);
    pk_options o = {0};
    exp_filter flt = {0};
    exp_chat_opts co = {0};
    bool reasoning_set = false;
    const char *dbpath = NULL, *format = NULL, *out = NULL, *tokenizer = NULL, *tmpl = NULL;
    long threads = 0;
    int ch;
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        switch (ch) {
        case 'd': dbpath = optarg; continue;
        case 'f': format = optarg; continue;
        case 's': flt.snapshot = optarg; continue;
        case 'S': flt.source = optarg; continue;
        case 'O': out = optarg; continue;
        case 'r':
            if (!strcmp(optarg, "field")) co.reasoning_field = true;
            else if (!strcmp(optarg, "inline")) co.reasoning_field = false;
            else return cli_usage_error("export", "--reasoning wants inline or field, got '%s'", optarg);
            reasoning_set = true;
            continue;
        case 'h': cli_print_usage("export", stdout); return EXIT_OK;
        }
        int rc = ch == '?' ? -1 : cli_pack_option("export", ch, optarg, &o, &tokenizer, &tmpl, &threads);
        if (rc > 0) return rc;
        if (rc < 0)
            return cli_usage_error("export", optopt ? "option '%s' needs a value" : "unknown option '%s'", argv[optind - 1]);
    }
    if (optind < argc) return cli_usage_error("export", "unexpected argument '%s'", argv[optind]);
    if (!dbpath) return cli_usage_error("export", "missing --db DB");
    if (!format) return cli_usage_error("export", "missing --format (chat-jsonl, jsonl, shards)");
    if (!out) return cli_usage_error("export", "missing --out FILE (shards: --out DIR)");
    bool shards = !strcmp(format, "shards");
    if (!shards && strcmp(format, "chat-jsonl") && strcmp(format, "jsonl"))
        return cli_usage_error("export", "unknown format '%s' (chat-jsonl, jsonl, shards)", format);
    if (reasoning_set && strcmp(format, "chat-jsonl"))
        return cli_usage_error("export", "--reasoning applies only to --format chat-jsonl");
    if (shards && (!tokenizer || !o.seq_len))
        return cli_usage_error("export", "--format shards needs --tokenizer FILE and --seq N");
    if (!shards && (tokenizer || tmpl || o.seq_len))
        return cli_usage_error("export", "--tokenizer, --template and --seq apply only to --format shards");
    if (o.teacher_vocab && !o.top_k) return cli_usage_error("export", "--teacher-vocab applies only with --top-k");
    if (!strcmp(format, "jsonl") && o.top_k) return cli_usage_error("export", "--top-k applies to chat-jsonl and shards");
    flt.with_topk = o.top_k > 0;
    db_conn *db;
    if (db_open(dbpath, DB_OPEN_READONLY, &db)) return cli_fail("export");
    int status;
    if (shards) {
        status = export_shards(db, &flt, tokenizer, tmpl, out, &o, threads);
    } else {
        size_t n;
        exp_format f = !strcmp(format, "chat-jsonl") ? EXP_CHAT_JSONL : EXP_JSONL;
        if (db_export_jsonl(db, f, &flt, &co, out, &n)) status = cli_fail("export");
        else {
            status = EXIT_OK;
            if (strcmp(out, "-"))
                printf("%s: %zu %s\n", out, n, f == EXP_CHAT_JSONL ? "conversations (samples)" : "prompt records");
        }
    }
    db_close(db);
    return status;
}

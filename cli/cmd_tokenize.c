/* cli/cmd_tokenize.c — `retort tokenize`: JSONL in, JSONL out, line for line.
 *
 *   encode   {"text": S}                      -> {"ids": [...]}
 *   decode   {"ids": [...]}                   -> {"text": S}
 *   chat     {"messages": [...], "add_generation_prompt": B}
 *                                             -> {"text": S, "ids": [...], "mask": [...]}
 * Encoding runs in batches on a thread pool; output order is input order. The first bad
 * line stops the run with "line N: why" after every earlier line has been written.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/alloc.h"
#include "core/chat_template.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "core/tokenizer.h"

enum { BATCH = 2048 };

typedef struct {
    const tok_tokenizer *tok;
    bool special;        /* encode: add the post-processor's tokens */
    bool skip_special;   /* decode: drop special tokens */
    bool gen_prompt;     /* chat: default add_generation_prompt */
    ct_kind chat;
    bool is_chat, decode;
    tp_pool *pool;
} tk_opts;

/* ---- output helpers ---- */

static void put_ids(FILE *out, const char *key, const int32_t *ids, size_t n) {
    fprintf(out, "\"%s\": [", key);
    for (size_t i = 0; i < n; i++) fprintf(out, i ? ", %d" : "%d", ids[i]);
    fputc(']', out);
}

static void put_mask(FILE *out, const uint8_t *m, size_t n) {
    fputs("\"mask\": [", out);
    for (size_t i = 0; i < n; i++) fputs(i ? (m[i] ? ", 1" : ", 0") : (m[i] ? "1" : "0"), out);
    fputc(']', out);
}

static void put_text(FILE *out, const char *s, size_t n) {
    json_t *j = json_stringn(s, n);
    char *d = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    fprintf(out, "\"text\": %s", d ? d : "null");
    free(d);
    json_decref(j);
}

static int line_error(size_t line, const char *fmt, const char *detail) {
    fprintf(stderr, "retort: tokenize: line %zu: ", line);
    fprintf(stderr, fmt, detail);
    fputc('\n', stderr);
    return EXIT_RUNTIME;
}

static json_t *parse_line(const char *s, size_t n, size_t line, int *rc) {
    json_error_t e;
    json_t *j = json_loadb(s, n, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
    if (!j) *rc = line_error(line, "invalid JSON: %s", e.text);
    else if (!json_is_object(j)) {
        json_decref(j);
        j = NULL;
        *rc = line_error(line, "%s", "expected a JSON object");
    }
    return j;
}

/* ---- encode: batches on the pool ---- */

typedef struct {
    char *lines[BATCH];
    size_t line_no[BATCH];
    json_t *docs[BATCH];
    const char *texts[BATCH];
    size_t lens[BATCH];
    int32_t *ids[BATCH];
    size_t n_ids[BATCH];
} enc_batch;

/* Encodes texts [0, k) and writes them; returns 0 or an exit status. */
static int flush_encode(const tk_opts *o, enc_batch *b, size_t k) {
    if (!k) return 0;
    int rc = tok_encode_batch(o->tok, b->texts, b->lens, k, o->special, o->pool, b->ids, b->n_ids);
    if (!rc) {
        for (size_t i = 0; i < k; i++) {
            fputc('{', stdout);
            put_ids(stdout, "ids", b->ids[i], b->n_ids[i]);
            fputs("}\n", stdout);
            free(b->ids[i]);
        }
        return 0;
    }
    /* find the failing line, writing the ones before it */
    for (size_t i = 0; i < k; i++) {
        int32_t *ids;
        size_t n;
        if (tok_encode(o->tok, b->texts[i], b->lens[i], o->special, &ids, &n))
            return line_error(b->line_no[i], "%s", rt_errmsg());
        fputc('{', stdout);
        put_ids(stdout, "ids", ids, n);
        fputs("}\n", stdout);
        free(ids);
    }
    return 0;
}

static void release_batch(enc_batch *b, size_t k) {
    for (size_t i = 0; i < k; i++) json_decref(b->docs[i]);
}

static int run_encode(const tk_opts *o) {
    enc_batch *b = rt_calloc(1, sizeof *b);
    if (!b) return cli_fail("tokenize");
    char *line = NULL;
    size_t cap = 0, line_no = 0, k = 0;
    ssize_t len;
    int rc = 0;
    while (!rc && (len = getline(&line, &cap, stdin)) >= 0) {
        line_no++;
        json_t *j = parse_line(line, (size_t)len, line_no, &rc);
        const json_t *text = j ? json_object_get(j, "text") : NULL;
        if (j && !json_is_string(text)) {
            rc = line_error(line_no, "%s", "expected {\"text\": string}");
            json_decref(j);
        }
        if (rc) break;
        b->docs[k] = j;
        b->texts[k] = json_string_value(text);
        b->lens[k] = json_string_length(text);
        b->line_no[k++] = line_no;
        if (k == BATCH) {
            rc = flush_encode(o, b, k);
            release_batch(b, k);
            k = 0;
        }
    }
    int frc = flush_encode(o, b, k); /* lines before a bad one are still written */
    release_batch(b, k);
    free(line);
    free(b);
    return rc ? rc : frc;
}

/* ---- decode ---- */

static int decode_line(const tk_opts *o, const json_t *j, size_t line_no) {
    const json_t *a = json_object_get(j, "ids");
    if (!json_is_array(a)) return line_error(line_no, "%s", "expected {\"ids\": [integers]}");
    size_t n = json_array_size(a);
    int32_t *ids = rt_malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return cli_fail("tokenize");
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_array_get(a, i);
        if (!json_is_integer(x) || json_integer_value(x) < INT32_MIN || json_integer_value(x) > INT32_MAX) {
            free(ids);
            return line_error(line_no, "%s", "ids must be integers");
        }
        ids[i] = (int32_t)json_integer_value(x);
    }
    char *text;
    size_t len;
    int rc = tok_decode(o->tok, ids, n, o->skip_special, &text, &len);
    free(ids);
    if (rc) return line_error(line_no, "%s", rt_errmsg());
    fputc('{', stdout);
    put_text(stdout, text, len);
    fputs("}\n", stdout);
    free(text);
    return 0;
}

/* ---- chat ---- */

static int chat_line(const tk_opts *o, const json_t *j, size_t line_no) {
    const json_t *msgs = json_object_get(j, "messages"), *agp = json_object_get(j, "add_generation_prompt");
    if (!json_is_array(msgs)) return line_error(line_no, "%s", "expected {\"messages\": [...]}");
    if (agp && !json_is_boolean(agp)) return line_error(line_no, "%s", "add_generation_prompt must be true or false");
    size_t n = json_array_size(msgs);
    ct_message *m = rt_calloc(n ? n : 1, sizeof *m);
    if (!m) return cli_fail("tokenize");
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_array_get(msgs, i), *rc_ = json_object_get(x, "reasoning_content");
        m[i].role = json_string_value(json_object_get(x, "role"));
        m[i].content = json_string_value(json_object_get(x, "content"));
        m[i].reasoning_content = json_is_string(rc_) ? json_string_value(rc_) : NULL;
        if (!m[i].role || !m[i].content) {
            free(m);
            return line_error(line_no, "%s", "every message needs string \"role\" and \"content\"");
        }
    }
    bool gp = agp ? json_is_true(agp) : o->gen_prompt;
    char *text = NULL;
    int32_t *ids = NULL;
    uint8_t *mask = NULL;
    size_t nt = 0;
    int rc = ct_render_text(o->chat, m, n, gp, &text);
    if (!rc) rc = ct_render(o->tok, o->chat, m, n, gp, &ids, &mask, &nt);
    free(m);
    if (!rc) {
        fputc('{', stdout);
        put_text(stdout, text, strlen(text));
        fputs(", ", stdout);
        put_ids(stdout, "ids", ids, nt);
        fputs(", ", stdout);
        put_mask(stdout, mask, nt);
        fputs("}\n", stdout);
    }
    free(text);
    free(ids);
    free(mask);
    return rc ? line_error(line_no, "%s", rt_errmsg()) : 0;
}

static int run_lines(const tk_opts *o) {
    char *line = NULL;
    size_t cap = 0, line_no = 0;
    ssize_t len;
    int rc = 0;
    while (!rc && (len = getline(&line, &cap, stdin)) >= 0) {
        line_no++;
        json_t *j = parse_line(line, (size_t)len, line_no, &rc);
        if (!j) break;
        rc = o->is_chat ? chat_line(o, j, line_no) : decode_line(o, j, line_no);
        json_decref(j);
    }
    free(line);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    if (cli_wants_help("tokenize", argc, argv)) return EXIT_OK;
    cli_getopt g;
    cli_getopt_init("tokenize", 0, &g);
    tk_opts o = {0};
    const char *path = NULL;
    int threads = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        switch (c) {
        case 't': path = optarg; break;
        case 'd': o.decode = true; break;
        case 's': o.special = true; break;
        case 'k': o.skip_special = true; break;
        case 'g': o.gen_prompt = true; break;
        case 'c':
            if (ct_parse_kind(optarg, &o.chat))
                return cli_usage_error("tokenize", "unknown chat template '%s' (deepseek-r1, qwen, llama3)", optarg);
            o.is_chat = true;
            break;
        case 'j': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 1024) return cli_usage_error("tokenize", "--threads wants 1..1024, not '%s'", optarg);
            threads = (int)v;
            break;
        }
        default:
            return cli_usage_error("tokenize", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("tokenize", "unexpected argument '%s'", argv[optind]);
    if (!path) return cli_usage_error("tokenize", "--tokenizer FILE is required");
    if (o.decode && o.is_chat) return cli_usage_error("tokenize", "--decode and --chat do not go together");
    /* with --decode, --special asks to keep special tokens: the default, so it is accepted */
    if (o.special && o.decode && o.skip_special)
        return cli_usage_error("tokenize", "--special (keep special tokens) and --skip-special contradict each other");
    if (o.skip_special && !o.decode) return cli_usage_error("tokenize", "--skip-special applies to --decode");
    if (o.gen_prompt && !o.is_chat) return cli_usage_error("tokenize", "--generation-prompt applies to --chat");
    tok_tokenizer *tok;
    if (tok_load(path, &tok)) return cli_fail("tokenize");
    o.tok = tok;
    int rc;
    if (!o.decode && !o.is_chat) {
        if (tp_create(threads, &o.pool)) {
            tok_free(tok);
            return cli_fail("tokenize");
        }
        rc = run_encode(&o);
        tp_free(o.pool);
    } else {
        rc = run_lines(&o);
    }
    tok_free(tok);
    if (fflush(stdout) || ferror(stdout)) {
        fprintf(stderr, "retort: tokenize: writing output failed\n");
        return EXIT_RUNTIME;
    }
    return rc;
}

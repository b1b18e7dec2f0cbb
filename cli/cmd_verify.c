/* cli/cmd_verify.c — `retort verify`: JSONL {"gold", "pred"} on stdin → verdicts on stdout. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/json.h"
#include "core/status.h"
#include "filters/verify.h"

/* A member as text: strings as they are, numbers printed (GSM8K golds are often numbers). */
static int member_text(json_t *obj, const char *key, char *num, size_t numlen, const char **out) {
    json_t *v = json_object_get(obj, key);
    if (!v) return rt_fail(RT_EFORMAT, "missing \"%s\"", key);
    if (json_is_string(v)) { *out = json_string_value(v); return 0; }
    if (json_is_integer(v)) { snprintf(num, numlen, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); *out = num; return 0; }
    if (json_is_real(v)) { snprintf(num, numlen, "%.17g", json_real_value(v)); *out = num; return 0; }
    return rt_fail(RT_EFORMAT, "\"%s\" must be a string or a number", key);
}

int cmd_verify(int argc, char **argv) {
    cli_getopt g;
    cli_getopt_init("verify", 0, &g);
    vf_opts o;
    vf_opts_default(&o);
    int ch;
    optind = 0;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        if (ch == 'l') o.last_number = true;
        else if (ch == 'p') o.decimal_places = true;
        else if (ch == 'r') continue; /* --reason: the reason is always written now */
        else if (ch == 'd') {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 30) return cli_usage_error("verify", "--float-digits wants 1..30, got '%s'", optarg);
            o.float_digits = (int)v;
        } else if (ch == 'h') { cli_print_usage("verify", stdout); return EXIT_OK; }
        else return cli_usage_error("verify", "unknown option '%s'", argv[optind - 1]);
    }
    if (optind < argc) return cli_usage_error("verify", "unexpected argument '%s'", argv[optind]);

    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0;
    int status = EXIT_OK;
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        lineno++;
        size_t k = 0;
        while (k < (size_t)n && (line[k] == ' ' || line[k] == '\t' || line[k] == '\n' || line[k] == '\r')) k++;
        if (k == (size_t)n) continue; /* blank line */
        json_t *j;
        char what[64], gnum[64], pnum[64];
        snprintf(what, sizeof what, "stdin line %ld", lineno);
        if (rt_json_loadb(line, (size_t)n, what, &j)) { status = cli_fail("verify"); break; }
        const char *gold, *pred;
        if (!json_is_object(j)) rt_fail(RT_EFORMAT, "%s: expected an object {\"gold\": …, \"pred\": …}", what);
        if (!json_is_object(j) || member_text(j, "gold", gnum, sizeof gnum, &gold) ||
            member_text(j, "pred", pnum, sizeof pnum, &pred)) {
            if (json_is_object(j)) rt_errorf(RT_EFORMAT, "%s", what);
            json_decref(j);
            status = cli_fail("verify");
            break;
        }
        vf_result r;
        if (vf_verify(&o, gold, pred, &r)) { json_decref(j); status = cli_fail("verify"); break; }
        json_t *out = json_pack("{s:b,s:o,s:s,s:s}", "correct", r.correct, "pred_answer",
                                r.pred_answer ? json_string(r.pred_answer) : json_null(), "gold_answer", r.gold_answer,
                                "reason", r.reason ? r.reason : "");
        char *txt = out ? json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII) : NULL;
        if (!txt) { /* invalid UTF-8 in an answer: say so rather than drop the line */
            json_decref(out);
            out = json_pack("{s:b,s:n,s:n,s:s}", "correct", r.correct, "pred_answer", "gold_answer", "reason",
                            r.reason ? r.reason : "");
            txt = out ? json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        }
        json_decref(out);
        vf_result_free(&r);
        json_decref(j);
        if (!txt) { rt_fail(RT_ENOMEM, "%s: writing the verdict", what); status = cli_fail("verify"); break; }
        fputs(txt, stdout);
        fputc('\n', stdout);
        free(txt);
    }
    free(line);
    if (fflush(stdout) || ferror(stdout)) {
        fprintf(stderr, "retort: verify: writing stdout failed\n");
        return EXIT_RUNTIME;
    }
    return status;
}

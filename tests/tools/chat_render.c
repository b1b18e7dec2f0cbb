/* tests/tools/chat_render.c — test helper: chat templates through ct_template (core/jinja).
 *
 *   chat_render SPEC TOKDIR IN.jsonl   SPEC as --chat-template takes it (auto, deepseek-r1,
 *                                      qwen, llama3, or a file); TOKDIR holds tokenizer.json and
 *                                      tokenizer_config.json ("-" for none: text only). Each
 *                                      line of IN is {"messages": [...], "add_generation_prompt":
 *                                      bool, "tokens": bool}; each output line is {"text": …}
 *                                      (plus "ids" and "mask" when tokens is true) or
 *                                      {"error": message, "code": status}.
 *   chat_render --check SPEC TOKDIR    the template/tokenizer agreement check; exit 0 or 1
 *                                      with the message on stderr.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/chat_template.h"
#include "core/status.h"
#include "core/tokenizer.h"

static tok_tokenizer *load_tok(const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    tok_tokenizer *t = NULL;
    if (tok_load(p, &t)) { fprintf(stderr, "chat_render: %s\n", rt_errmsg()); exit(1); }
    return t;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--check")) {
        ct_template *ct;
        if (ct_template_open(argv[2], argv[3], &ct)) { fprintf(stderr, "chat_render: %s\n", rt_errmsg()); return 1; }
        tok_tokenizer *t = load_tok(argv[3]);
        int rc = ct_template_check_tokenizer(ct, t);
        if (rc) fprintf(stderr, "chat_render: %s\n", rt_errmsg());
        tok_free(t);
        ct_template_free(ct);
        return rc ? 1 : 0;
    }
    if (argc != 4) { fprintf(stderr, "usage: chat_render SPEC TOKDIR|- IN.jsonl | chat_render --check SPEC TOKDIR\n"); return 2; }
    const char *dir = strcmp(argv[2], "-") ? argv[2] : NULL;
    ct_template *ct;
    if (ct_template_open(argv[1], dir, &ct)) { fprintf(stderr, "chat_render: %s\n", rt_errmsg()); return 1; }
    tok_tokenizer *t = dir ? load_tok(dir) : NULL;
    FILE *f = fopen(argv[3], "r");
    if (!f) { fprintf(stderr, "chat_render: cannot open %s\n", argv[3]); return 1; }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t jerr;
        json_t *in = json_loads(line, 0, &jerr);
        if (!in) { fprintf(stderr, "chat_render: bad input line: %s\n", jerr.text); return 1; }
        json_t *msgs = json_object_get(in, "messages");
        size_t n = json_array_size(msgs);
        ct_message *m = calloc(n ? n : 1, sizeof *m);
        for (size_t i = 0; i < n; i++) {
            json_t *x = json_array_get(msgs, i);
            m[i].role = json_string_value(json_object_get(x, "role"));
            m[i].content = json_string_value(json_object_get(x, "content"));
            m[i].reasoning_content = json_string_value(json_object_get(x, "reasoning_content"));
        }
        bool gen = json_is_true(json_object_get(in, "add_generation_prompt"));
        json_t *out = json_object();
        char *text = NULL;
        int rc = ct_template_render_text(ct, m, n, gen, &text);
        if (!rc) json_object_set_new(out, "text", json_string(text));
        if (!rc && t && json_is_true(json_object_get(in, "tokens"))) {
            int32_t *ids; uint8_t *mask; size_t nt;
            rc = ct_template_render(t, ct, m, n, gen, &ids, &mask, &nt);
            if (!rc) {
                json_t *ji = json_array(), *jm = json_array();
                for (size_t i = 0; i < nt; i++) { json_array_append_new(ji, json_integer(ids[i])); json_array_append_new(jm, json_integer(mask[i])); }
                json_object_set_new(out, "ids", ji);
                json_object_set_new(out, "mask", jm);
                free(ids); free(mask);
            }
        }
        if (rc) { json_object_set_new(out, "error", json_string(rt_errmsg())); json_object_set_new(out, "code", json_integer(rc)); }
        char *s = json_dumps(out, JSON_COMPACT | JSON_ENSURE_ASCII);
        puts(s);
        free(s); free(text); free(m);
        json_decref(out); json_decref(in);
        rt_errclear();
    }
    free(line);
    fclose(f);
    tok_free(t);
    ct_template_free(ct);
    return 0;
}

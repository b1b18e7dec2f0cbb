/* core/chat_template.c — see chat_template.h. Each template appends text pieces to a
 * builder; pieces that are assistant content (and the turn's end token) are recorded as
 * byte spans, which become the token mask after encoding. */
#include "core/chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "core/utf8.h"

#define R1_BOS "<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
#define R1_EOS "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"
#define R1_USER "<\xEF\xBD\x9CUser\xEF\xBD\x9C>"
#define R1_ASSISTANT "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>"
#define QWEN_DEFAULT_SYSTEM "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

typedef struct {
    char *s; size_t n, cap;
    size_t *span; size_t n_span, cap_span;   /* pairs [start, end) of assistant bytes */
    int err;
} builder;

static void put(builder *b, const char *s, size_t n) {
    if (b->err) return;
    if (b->n + n + 1 > b->cap && rt_grow((void **)&b->s, &b->cap, b->n + n + 1, 1)) {
        b->err = RT_ENOMEM;
        return;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void puts_(builder *b, const char *s) { put(b, s, strlen(s)); }

static void span_open(builder *b, size_t *at) { *at = b->n; }

static void span_close(builder *b, size_t at) {
    if (b->err) return;
    if (b->n_span + 2 > b->cap_span && rt_grow((void **)&b->span, &b->cap_span, b->n_span + 2, sizeof *b->span)) {
        b->err = RT_ENOMEM;
        return;
    }
    b->span[b->n_span++] = at;
    b->span[b->n_span++] = b->n;
}

static const char *const KIND_NAMES[] = {"deepseek-r1", "qwen", "llama3"};

int ct_parse_kind(const char *name, ct_kind *out) {
    for (int i = 0; i < 3; i++)
        if (name && !strcmp(name, KIND_NAMES[i])) return *out = (ct_kind)i, 0;
    return rt_fail(RT_EINVAL, "unknown chat template '%s' (deepseek-r1, qwen, llama3)", name ? name : "(null)");
}

const char *ct_kind_name(ct_kind k) { return (unsigned)k < 3 ? KIND_NAMES[k] : "?"; }

static bool is_role(const ct_message *m, const char *role) { return !strcmp(m->role, role); }

static int check_messages(const ct_message *m, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!m[i].role || !m[i].content) return rt_fail(RT_EINVAL, "message %zu: role and content are required", i);
        if (!is_role(&m[i], "system") && !is_role(&m[i], "user") && !is_role(&m[i], "assistant"))
            return rt_fail(RT_EINVAL, "message %zu: role '%s' (system, user or assistant)", i, m[i].role);
    }
    return 0;
}

/* The final message when it is an assistant turn keeps its thinking: reasoning_content,
 * when given, is written as a <think> block before the content. */
static bool is_final_assistant(const ct_message *m, size_t n, size_t i) {
    return i + 1 == n && is_role(&m[i], "assistant");
}

static void put_thinking(builder *b, const ct_message *m) {
    if (!m->reasoning_content) return;
    puts_(b, "<think>\n");
    puts_(b, m->reasoning_content);
    puts_(b, "\n</think>\n\n");
}

/* ---- deepseek-r1 ---- */

static void render_r1(builder *b, const ct_message *m, size_t n, bool gen) {
    puts_(b, R1_BOS);
    bool first_sys = true;
    for (size_t i = 0; i < n; i++) {
        if (!is_role(&m[i], "system")) continue;
        if (!first_sys) puts_(b, "\n\n");
        puts_(b, m[i].content);
        first_sys = false;
    }
    for (size_t i = 0; i < n; i++) {
        if (is_role(&m[i], "user")) {
            puts_(b, R1_USER);
            puts_(b, m[i].content);
        } else if (is_role(&m[i], "assistant")) {
            const char *c = m[i].content;
            size_t at;
            puts_(b, R1_ASSISTANT);
            span_open(b, &at);
            if (is_final_assistant(m, n, i)) {
                put_thinking(b, &m[i]);
            } else {
                /* content.split('</think>')[-1] */
                for (const char *p = strstr(c, "</think>"); p; p = strstr(p + 1, "</think>")) c = p + 8;
            }
            puts_(b, c);
            puts_(b, R1_EOS);
            span_close(b, at);
        }
    }
    if (gen) puts_(b, R1_ASSISTANT "<think>\n");
}

/* ---- qwen (Qwen2.5) ---- */

static void render_qwen(builder *b, const ct_message *m, size_t n, bool gen) {
    if (n && is_role(&m[0], "system")) {
        puts_(b, "<|im_start|>system\n");
        puts_(b, m[0].content);
        puts_(b, "<|im_end|>\n");
    } else {
        puts_(b, "<|im_start|>system\n" QWEN_DEFAULT_SYSTEM "<|im_end|>\n");
    }
    for (size_t i = 0; i < n; i++) {
        if (i == 0 && is_role(&m[i], "system")) continue;
        puts_(b, "<|im_start|>");
        puts_(b, m[i].role);
        puts_(b, "\n");
        size_t at;
        bool asst = is_role(&m[i], "assistant");
        span_open(b, &at);
        if (asst && is_final_assistant(m, n, i)) put_thinking(b, &m[i]);
        puts_(b, m[i].content);
        puts_(b, "<|im_end|>");
        if (asst) span_close(b, at);
        puts_(b, "\n");
    }
    if (gen) puts_(b, "<|im_start|>assistant\n");
}

/* ---- llama3 ---- */

/* Python's str.isspace(), which Jinja's trim uses. */
static bool py_isspace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* s[0..n) without leading and trailing whitespace: *start and *len. */
static void py_strip(const char *s, size_t n, size_t *start, size_t *len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t a = 0, e = n;
    while (a < n) {
        size_t k = rt_utf8_seqlen(u + a, n - a);
        if (!k || !py_isspace(rt_utf8_decode(u + a, k))) break;
        a += k;
    }
    while (e > a) {
        size_t p = e - 1;
        while (p > a && (u[p] & 0xC0) == 0x80) p--;
        size_t k = rt_utf8_seqlen(u + p, e - p);
        if (!k || !py_isspace(rt_utf8_decode(u + p, k))) break;
        e = p;
    }
    *start = a;
    *len = e - a;
}

static void render_llama3(builder *b, const ct_message *m, size_t n, bool gen) {
    for (size_t i = 0; i < n; i++) {
        if (i == 0) puts_(b, "<|begin_of_text|>");
        puts_(b, "<|start_header_id|>");
        puts_(b, m[i].role);
        puts_(b, "<|end_header_id|>\n\n");
        bool asst = is_role(&m[i], "assistant");
        builder body = {0};
        if (asst && is_final_assistant(m, n, i)) put_thinking(&body, &m[i]);
        puts_(&body, m[i].content);
        if (body.err) b->err = body.err;
        size_t at, s0 = 0, len = 0;
        if (body.s) py_strip(body.s, body.n, &s0, &len);
        span_open(b, &at);
        put(b, body.s ? body.s + s0 : "", len);
        puts_(b, "<|eot_id|>");
        if (asst) span_close(b, at);
        free(body.s);
    }
    if (gen) puts_(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static int render(ct_kind k, const ct_message *m, size_t n, bool gen, builder *b) {
    int rc = check_messages(m, n);
    if (rc) return rc;
    memset(b, 0, sizeof *b);
    puts_(b, "");
    switch (k) {
    case CT_DEEPSEEK_R1: render_r1(b, m, n, gen); break;
    case CT_QWEN: render_qwen(b, m, n, gen); break;
    case CT_LLAMA3: render_llama3(b, m, n, gen); break;
    default: return rt_fail(RT_EINVAL, "unknown chat template kind %d", (int)k);
    }
    if (b->err) {
        free(b->s);
        free(b->span);
        return rt_fail(b->err, "rendering a %zu-message conversation", n);
    }
    return 0;
}

int ct_render_text(ct_kind k, const ct_message *m, size_t n, bool add_generation_prompt, char **text) {
    builder b;
    *text = NULL;
    int rc = render(k, m, n, add_generation_prompt, &b);
    if (rc) return rc;
    free(b.span);
    *text = b.s;
    return 0;
}

int ct_render(const tok_tokenizer *t, ct_kind k, const ct_message *m, size_t n, bool add_generation_prompt,
              int32_t **ids, uint8_t **mask, size_t *n_tokens) {
    builder b;
    *ids = NULL;
    *mask = NULL;
    *n_tokens = 0;
    int rc = render(k, m, n, add_generation_prompt, &b);
    if (rc) return rc;
    size_t *offs = NULL, nt = 0;
    int32_t *tid = NULL;
    rc = tok_encode_offsets(t, b.s, b.n, false, &tid, &offs, &nt);
    uint8_t *mk = rc ? NULL : rt_calloc(nt ? nt : 1, 1);
    if (!rc && !mk) rc = RT_ENOMEM;
    bool any = false, has_assistant = b.n_span > 0;
    for (size_t i = 0; !rc && i < nt; i++) {
        size_t s = offs[2 * i], e = offs[2 * i + 1];
        for (size_t j = 0; j < b.n_span && !mk[i]; j += 2)
            mk[i] = s < b.span[j + 1] && e > b.span[j];
        any = any || mk[i];
    }
    if (!rc && has_assistant && !any)
        rc = rt_fail(RT_EINVAL, "the conversation has assistant turns but no assistant tokens to train on");
    free(offs);
    free(b.s);
    free(b.span);
    if (rc) {
        free(tid);
        free(mk);
        return rc;
    }
    *ids = tid;
    *mask = mk;
    *n_tokens = nt;
    return 0;
}

/* ---------------------------------------------------------------- ct_template */

#include "core/fsutil.h"
#include "core/jinja.h"

/* tokenizer_config.json as transformers reads it: model_max_length may exceed int64 */
static int load_config(const char *path, json_t **out) {
    json_error_t e;
    *out = json_load_file(path, JSON_DECODE_INT_AS_REAL | JSON_REJECT_DUPLICATES, &e);
    if (!*out) {
        FILE *f = fopen(path, "rb");
        if (!f) return rt_fail(RT_EIO, "cannot open %s", path);
        fclose(f);
        return rt_fail(RT_EFORMAT, "%s: invalid JSON at line %d column %d: %s", path, e.line, e.column, e.text);
    }
    return 0;
}

struct ct_template {
    bool jinja;
    ct_kind kind;
    jj_template *jt;
    json_t *ctx;   /* special tokens */
    bool reads_reasoning;   /* the Jinja source mentions reasoning_content */
};

static const ct_template BUILTINS[3] = {{false, CT_DEEPSEEK_R1, NULL, NULL, true}, {false, CT_QWEN, NULL, NULL, true},
                                         {false, CT_LLAMA3, NULL, NULL, true}};

const ct_template *ct_builtin(ct_kind k) { return (unsigned)k <= CT_LLAMA3 ? &BUILTINS[k] : NULL; }

int ct_guess_kind(const tok_tokenizer *t, ct_kind *out) {
    if (tok_token_to_id(t, R1_ASSISTANT) >= 0) *out = CT_DEEPSEEK_R1;
    else if (tok_token_to_id(t, "<|im_start|>") >= 0) *out = CT_QWEN;
    else if (tok_token_to_id(t, "<|start_header_id|>") >= 0) *out = CT_LLAMA3;
    else return rt_fail(RT_ENOTFOUND, "the tokenizer has none of %s, <|im_start|>, <|start_header_id|>: no built-in "
                        "chat template fits it", R1_ASSISTANT);
    return 0;
}

int ct_template_resolve(const char *spec, const char *tokenizer_json, const tok_tokenizer *t, ct_template **out) {
    *out = NULL;
    char dir[4096] = "";
    if (tokenizer_json && rt_is_dir(tokenizer_json)) {
        snprintf(dir, sizeof dir, "%s", tokenizer_json);
    } else if (tokenizer_json) {
        const char *slash = strrchr(tokenizer_json, '/');
        if (!slash) snprintf(dir, sizeof dir, ".");
        else snprintf(dir, sizeof dir, "%.*s", (int)(slash - tokenizer_json), tokenizer_json);
    }
    int rc;
    if (spec && strcmp(spec, "auto")) {
        rc = ct_template_open(spec, dir[0] ? dir : NULL, out);
    } else {
        rc = dir[0] ? ct_template_open("auto", dir, out) : rt_fail(RT_ENOTFOUND, "no tokenizer directory");
        if (rc == RT_ENOTFOUND && t) {
            rt_errclear();
            ct_kind k;
            if (!(rc = ct_guess_kind(t, &k))) rc = ct_template_builtin(k, out);
            else rc = rt_errorf(rc, "no chat_template in %s/tokenizer_config.json", dir);
        }
    }
    if (!rc && t && (rc = ct_template_check_tokenizer(*out, t))) {
        ct_template_free(*out);
        *out = NULL;
    }
    return rc;
}

const char *ct_template_eot(const ct_template *ct) {
    if (!ct) return NULL;
    if (!ct->jinja) return ct->kind == CT_DEEPSEEK_R1 ? R1_EOS : ct->kind == CT_QWEN ? "<|im_end|>" : "<|eot_id|>";
    json_t *v = json_object_get(ct->ctx, "eos_token");
    return v ? json_string_value(v) : NULL;
}

int ct_template_builtin(ct_kind k, ct_template **out) {
    *out = NULL;
    if ((unsigned)k > CT_LLAMA3) return rt_fail(RT_EINVAL, "unknown chat template kind %d", (int)k);
    ct_template *ct = calloc(1, sizeof *ct);
    if (!ct) return rt_fail(RT_ENOMEM, "chat template");
    ct->kind = k;
    *out = ct;
    return 0;
}

/* "bos_token": "<s>" or {"content": "<s>", …} (AddedToken form) */
static const char *special_of(const json_t *cfg, const char *key) {
    const json_t *v = cfg ? json_object_get(cfg, key) : NULL;
    if (v && json_is_object(v)) v = json_object_get(v, "content");
    return v && json_is_string(v) ? json_string_value(v) : NULL;
}

int ct_template_from_jinja(const char *src, const json_t *cfg, ct_template **out) {
    *out = NULL;
    ct_template *ct = calloc(1, sizeof *ct);
    if (!ct) return rt_fail(RT_ENOMEM, "chat template");
    ct->jinja = true;
    ct->reads_reasoning = strstr(src, "reasoning_content") != NULL;
    int rc = jj_parse(src, strlen(src), &ct->jt);
    if (!rc && !(ct->ctx = json_object())) rc = rt_fail(RT_ENOMEM, "chat template");
    static const char *const keys[] = {"bos_token", "eos_token", "pad_token", "unk_token"};
    for (size_t i = 0; !rc && i < 4; i++) {
        const char *v = special_of(cfg, keys[i]);
        if (v && json_object_set_new(ct->ctx, keys[i], json_string(v))) rc = rt_fail(RT_ENOMEM, "chat template");
    }
    if (rc) { ct_template_free(ct); return rc; }
    *out = ct;
    return 0;
}

static int template_of_config(const json_t *cfg, const char *path, const char **src) {
    const json_t *t = json_object_get(cfg, "chat_template");
    if (t && json_is_array(t)) {   /* [{"name": "default", "template": …}, …] */
        const json_t *pick = NULL;
        for (size_t i = 0; i < json_array_size(t); i++) {
            const json_t *e = json_array_get(t, i);
            const json_t *nm = json_object_get(e, "name");
            if (nm && json_is_string(nm) && !strcmp(json_string_value(nm), "default")) pick = e;
        }
        t = pick ? json_object_get(pick, "template") : NULL;
    }
    if (!t || !json_is_string(t)) return rt_fail(RT_ENOTFOUND, "%s has no chat_template", path);
    *src = json_string_value(t);
    return 0;
}

int ct_template_from_config(const char *path, ct_template **out) {
    *out = NULL;
    json_t *cfg;
    int rc = load_config(path, &cfg);
    if (rc) return rc;
    const char *src;
    rc = template_of_config(cfg, path, &src);
    if (!rc) {
        rc = ct_template_from_jinja(src, cfg, out);
        if (rc) rc = rt_errorf(rc, "chat_template of %s", path);
    }
    json_decref(cfg);
    return rc;
}

int ct_template_open(const char *spec, const char *tokenizer_dir, ct_template **out) {
    *out = NULL;
    char cfgpath[4096] = "";
    if (tokenizer_dir) snprintf(cfgpath, sizeof cfgpath, "%s/tokenizer_config.json", tokenizer_dir);
    if (!spec || !strcmp(spec, "auto")) {
        if (!tokenizer_dir) return rt_fail(RT_ENOTFOUND, "no tokenizer directory to read a chat_template from");
        FILE *f = fopen(cfgpath, "rb");
        if (!f) return rt_fail(RT_ENOTFOUND, "%s not found (no chat_template to use)", cfgpath);
        fclose(f);
        return ct_template_from_config(cfgpath, out);
    }
    ct_kind k;
    if (!ct_parse_kind(spec, &k)) return ct_template_builtin(k, out);
    rt_errclear();
    /* a file */
    FILE *f = fopen(spec, "rb");
    if (!f) return rt_fail(RT_ENOTFOUND, "chat template '%s': not deepseek-r1, qwen, llama3, auto or a readable file", spec);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    int rc = 0;
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        if (cap >= ((size_t)64 << 20)) { rc = rt_fail(RT_ERANGE, "chat template %s larger than 64 MiB", spec); break; }
        cap *= 2;
        char *nb = realloc(buf, cap + 1);
        if (!nb) { free(buf); buf = NULL; }
        else buf = nb;
    }
    fclose(f);
    if (!buf) return rt_fail(RT_ENOMEM, "reading %s", spec);
    if (rc) { free(buf); return rc; }
    buf[n] = 0;
    json_t *dircfg = NULL;
    if (tokenizer_dir) {
        FILE *g = fopen(cfgpath, "rb");
        if (g) { fclose(g); if ((rc = load_config(cfgpath, &dircfg))) { free(buf); return rc; } }
    }
    size_t i = 0;
    while (i < n && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\t' || buf[i] == '\r')) i++;
    if (i < n && buf[i] == '{' && !(i + 1 < n && (buf[i + 1] == '%' || buf[i + 1] == '{' || buf[i + 1] == '#'))) {
        json_error_t je;
        json_t *cfg = json_loadb(buf, n, JSON_DECODE_INT_AS_REAL | JSON_REJECT_DUPLICATES, &je);
        if (!cfg) rc = rt_fail(RT_EFORMAT, "%s: invalid JSON at line %d column %d: %s", spec, je.line, je.column, je.text);
        const char *src = NULL;
        if (!rc) rc = template_of_config(cfg, spec, &src);
        if (!rc) {
            /* the file's own special tokens win over the tokenizer directory's */
            const json_t *use = cfg;
            if (dircfg && !special_of(cfg, "bos_token") && !special_of(cfg, "eos_token")) use = dircfg;
            rc = ct_template_from_jinja(src, use, out);
            if (rc) rc = rt_errorf(rc, "chat_template of %s", spec);
        }
        json_decref(cfg);
    } else {
        rc = ct_template_from_jinja(buf, dircfg, out);
        if (rc) rc = rt_errorf(rc, "chat template %s", spec);
    }
    json_decref(dircfg);
    free(buf);
    return rc;
}

const char *ct_template_name(const ct_template *ct) { return ct->jinja ? "jinja" : ct_kind_name(ct->kind); }

void ct_template_free(ct_template *ct) {
    if (!ct || (ct >= BUILTINS && ct < BUILTINS + 3)) return;
    jj_free(ct->jt);
    json_decref(ct->ctx);
    free(ct);
}

static int jinja_render(const ct_template *ct, const ct_message *m, size_t n, bool gen, char **text, size_t *len) {
    json_t *ctx = json_deep_copy(ct->ctx), *msgs = json_array();
    int rc = 0;
    if (!ctx || !msgs) rc = rt_fail(RT_ENOMEM, "chat template");
    for (size_t i = 0; !rc && i < n; i++) {
        json_t *o = json_pack("{ssss}", "role", m[i].role, "content", m[i].content);
        if (o && m[i].reasoning_content) json_object_set_new(o, "reasoning_content", json_string(m[i].reasoning_content));
        if (!o || json_array_append_new(msgs, o)) rc = rt_fail(RT_ENOMEM, "chat template");
    }
    if (!rc && (json_object_set(ctx, "messages", msgs) || json_object_set_new(ctx, "add_generation_prompt", json_boolean(gen)) ||
                json_object_set_new(ctx, "tools", json_null()) || json_object_set_new(ctx, "documents", json_null())))
        rc = rt_fail(RT_ENOMEM, "chat template");
    if (!rc) rc = jj_render(ct->jt, ctx, text, len);
    json_decref(msgs);
    json_decref(ctx);
    return rc;
}

static int check_jinja_messages(const ct_message *m, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!m[i].role || !m[i].content) return rt_fail(RT_EINVAL, "message %zu: role and content are required", i);
        if (strcmp(m[i].role, "system") && strcmp(m[i].role, "user") && strcmp(m[i].role, "assistant"))
            return rt_fail(RT_EINVAL, "message %zu: role \"%s\" (system, user or assistant expected)", i, m[i].role);
    }
    return 0;
}

int ct_template_render_text(const ct_template *ct, const ct_message *m, size_t n, bool gen, char **text) {
    *text = NULL;
    if (!ct->jinja) return ct_render_text(ct->kind, m, n, gen, text);
    int rc = check_jinja_messages(m, n);
    if (rc) return rc;
    return jinja_render(ct, m, n, gen, text, NULL);
}

/* byte spans of assistant turns in the full rendering (see the header) */
static int jinja_spans(const ct_template *ct, const ct_message *m, size_t n, const char *full, size_t flen,
                       size_t **spans, size_t *nspan) {
    size_t *sp = NULL, ns = 0;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        if (strcmp(m[i].role, "assistant")) continue;
        char *a = NULL, *b = NULL, *g = NULL;
        size_t la, lb, lg;
        if ((rc = jinja_render(ct, m, i, false, &a, &la)) || (rc = jinja_render(ct, m, i + 1, false, &b, &lb)) ||
            (rc = jinja_render(ct, m, i, true, &g, &lg))) {
            free(a); free(b); free(g);
            break;
        }
        if (la > flen || memcmp(a, full, la) || lb > flen || memcmp(b, full, lb) || lb < la) {
            rc = rt_fail(RT_EUNSUPPORTED, "chat template renders assistant message %zu differently once later messages "
                         "follow; its loss mask cannot be derived (train on conversations ending with that turn)", i);
        } else {
            size_t h = 0;
            if (lg >= la && !memcmp(g, a, la))
                while (la + h < lg && la + h < lb && g[la + h] == b[la + h]) h++;
            size_t s = la + h, e = lb;
            while (e > s && (full[e - 1] == '\n' || full[e - 1] == ' ' || full[e - 1] == '\t' || full[e - 1] == '\r')) e--;
            size_t *nsp = realloc(sp, (ns + 2) * sizeof *nsp);
            if (!nsp) rc = rt_fail(RT_ENOMEM, "chat template");
            else { sp = nsp; sp[ns++] = s; sp[ns++] = e; }
        }
        free(a); free(b); free(g);
    }
    if (rc) { free(sp); return rc; }
    *spans = sp;
    *nspan = ns;
    return 0;
}

int ct_template_render(const tok_tokenizer *t, const ct_template *ct, const ct_message *m, size_t n, bool gen,
                       int32_t **ids, uint8_t **mask, size_t *n_tokens) {
    if (!ct->jinja) return ct_render(t, ct->kind, m, n, gen, ids, mask, n_tokens);
    *ids = NULL; *mask = NULL; *n_tokens = 0;
    int rc = check_jinja_messages(m, n);
    if (rc) return rc;
    /* the turn being trained keeps its reasoning even when the template has no reasoning_content */
    ct_message *mm = NULL;
    char *joined = NULL;
    if (!ct->reads_reasoning && n && !strcmp(m[n - 1].role, "assistant") && m[n - 1].reasoning_content) {
        size_t lr = strlen(m[n - 1].reasoning_content), lc = strlen(m[n - 1].content);
        mm = malloc(n * sizeof *mm);
        joined = malloc(lr + lc + 32);
        if (!mm || !joined) { free(mm); free(joined); return rt_fail(RT_ENOMEM, "chat template"); }
        memcpy(mm, m, n * sizeof *mm);
        snprintf(joined, lr + lc + 32, "<think>\n%s\n</think>\n\n%s", m[n - 1].reasoning_content, m[n - 1].content);
        mm[n - 1].content = joined;
        mm[n - 1].reasoning_content = NULL;
        m = mm;
    }
    char *text;
    size_t len;
    if ((rc = jinja_render(ct, m, n, gen, &text, &len))) { free(mm); free(joined); return rc; }
    size_t *sp = NULL, ns = 0, *offs = NULL, nt = 0;
    int32_t *tid = NULL;
    uint8_t *mk = NULL;
    rc = jinja_spans(ct, m, n, text, len, &sp, &ns);
    if (!rc) rc = tok_encode_offsets(t, text, len, false, &tid, &offs, &nt);
    if (!rc && !(mk = rt_calloc(nt ? nt : 1, 1))) rc = RT_ENOMEM;
    bool any = false;
    for (size_t i = 0; !rc && i < nt; i++) {
        size_t s = offs[2 * i], e = offs[2 * i + 1];
        for (size_t j = 0; j < ns && !mk[i]; j += 2) mk[i] = s < sp[j + 1] && e > sp[j];
        any = any || mk[i];
    }
    if (!rc && ns && !any) rc = rt_fail(RT_EINVAL, "the conversation has assistant turns but no assistant tokens to train on");
    free(offs); free(sp); free(text); free(mm); free(joined);
    if (rc) { free(tid); free(mk); return rc; }
    *ids = tid; *mask = mk; *n_tokens = nt;
    return 0;
}

static int check_marker(const tok_tokenizer *t, const char *s, size_t n) {
    int32_t *ids = NULL;
    size_t nid = 0;
    int rc = tok_encode(t, s, n, false, &ids, &nid);
    if (rc) return rc;
    free(ids);
    if (nid != 1)
        return rt_fail(RT_EINVAL, "chat template marker %.*s is %zu tokens for this tokenizer, not one special token "
                       "(template and tokenizer disagree)", (int)n, s, nid);
    return 0;
}

int ct_template_check_tokenizer(const ct_template *ct, const tok_tokenizer *t) {
    static const ct_message probe[] = {{"system", "S", NULL}, {"user", "U", NULL}, {"assistant", "A", NULL}};
    char *texts[2] = {NULL, NULL};
    int rc = ct_template_render_text(ct, probe, 3, false, &texts[0]);
    if (rc) { rt_errclear(); rc = ct_template_render_text(ct, probe + 1, 2, false, &texts[0]); }
    if (!rc) rc = ct_template_render_text(ct, probe + 1, 1, true, &texts[1]);
    for (int k = 0; k < 2 && !rc; k++) {
        const char *s = texts[k];
        size_t n = strlen(s);
        for (size_t i = 0; i + 1 < n && !rc; i++) {
            /* <|name|> or <｜name｜> (U+FF5C = EF BD 9C) */
            size_t open = 0;
            if (s[i] == '<' && s[i + 1] == '|') open = 2;
            else if (s[i] == '<' && i + 3 < n && !memcmp(s + i + 1, "\xEF\xBD\x9C", 3)) open = 4;
            if (!open) continue;
            const char *close = open == 2 ? "|>" : "\xEF\xBD\x9C>";
            size_t cl = strlen(close), j = i + open, lim = i + 128 < n ? i + 128 : n;
            while (j + cl <= lim && memcmp(s + j, close, cl) && s[j] != '<' && s[j] != '\n') j++;
            if (j + cl > lim || memcmp(s + j, close, cl)) continue;
            rc = check_marker(t, s + i, j + cl - i);
            i = j + cl - 1;
        }
    }
    if (!rc && ct->jinja) {
        const char *const keys[] = {"bos_token", "eos_token"};
        for (int k = 0; k < 2 && !rc; k++) {
            json_t *v = json_object_get(ct->ctx, keys[k]);
            if (v && json_string_length(v) && (strstr(texts[0], json_string_value(v)) || strstr(texts[1], json_string_value(v))))
                rc = check_marker(t, json_string_value(v), json_string_length(v));
        }
    }
    free(texts[0]);
    free(texts[1]);
    return rc;
}

/* core/chat_template.c — see chat_template.h. Each template appends text pieces to a
 * builder; pieces that are assistant content (and the turn's end token) are recorded as
 * byte spans, which become the token mask after encoding. */
#include "core/chat_template.h"

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

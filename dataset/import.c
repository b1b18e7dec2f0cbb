#include "dataset/import.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/fsutil.h"
#include "core/json.h"
#include "core/status.h"


int imp_parse_format(const char *name, imp_format *out) {
    static const struct { const char *name; imp_format f; } names[] = {
        {"gsm8k", IMP_GSM8K}, {"math", IMP_MATH}, {"aime", IMP_AIME}, {"jsonl", IMP_JSONL}, {"chat", IMP_CHAT}};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(name, names[i].name)) { *out = names[i].f; return 0; }
    return rt_fail(RT_EINVAL, "unknown format '%s' (gsm8k, math, aime, jsonl, chat)", name);
}

/* Eight bytes at a time: the byte-class tests of the hot loops below look at one 64-bit word
 * and fall back to the byte loop only where a word holds a byte of interest. Each test is
 * exact about whether such a byte is present (not about where). */
#define SWAR_ONES 0x0101010101010101ull
#define SWAR_HIGH 0x8080808080808080ull

static inline uint64_t load8(const void *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Nonzero when a byte of x is below n (n ≤ 128). */
static inline uint64_t swar_less(uint64_t x, unsigned n) { return (x - SWAR_ONES * n) & ~x & SWAR_HIGH; }
/* Nonzero when a byte of x equals c. */
static inline uint64_t swar_has(uint64_t x, unsigned char c) { return swar_less(x ^ (SWAR_ONES * c), 1); }
/* Nonzero when a byte of x needs attention inside a JSON string: '"', '\\' or a control byte. */
static inline uint64_t swar_json_special(uint64_t x) { return swar_less(x, 0x20) | swar_has(x, '"') | swar_has(x, '\\'); }

/* Offset of the first byte that is not valid UTF-8 (overlongs, surrogates and code points
 * above U+10FFFF are invalid), or len when all of it is valid. */
static size_t utf8_invalid_at(const unsigned char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        while (i + 8 <= len && !(load8(s + i) & SWAR_HIGH)) i += 8; /* ASCII runs */
        if (i >= len) break;
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t n;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) n = 1;
        else if (c >= 0xE0 && c <= 0xEF) { n = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { n = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else return i;
        if (i + n >= len) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k <= n; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += n + 1;
    }
    return len;
}

void imp_record_free(imp_record *r) {
    if (!r) return;
    free(r->messages);
    free(r->prompt_key);
    free(r->gold);
    free(r->metadata);
    free(r->external_id);
    free(r->sample);
    memset(r, 0, sizeof *r);
}

static char *dump(const json_t *j) { return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY); }

/* A field's text: strings as they are; numbers as JSON writes them (an answer of 204). */
static int field_text(const json_t *obj, const char *key, bool required, char **out) {
    *out = NULL;
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return required ? rt_fail(RT_EFORMAT, "missing field \"%s\"", key) : 0;
    if (json_is_string(v)) *out = rt_strdup(json_string_value(v));
    else if (json_is_integer(v) || json_is_real(v)) *out = dump(v);
    else return rt_fail(RT_EFORMAT, "field \"%s\" must be a string or a number", key);
    return *out ? 0 : rt_fail(RT_ENOMEM, "copying field \"%s\"", key);
}

static int string_field(const json_t *obj, const char *key, const char **out) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return rt_fail(RT_EFORMAT, "missing field \"%s\"", key);
    if (!json_is_string(v)) return rt_fail(RT_EFORMAT, "field \"%s\" must be a string", key);
    *out = json_string_value(v);
    return 0;
}

/* gsm8k: the text after the last "####", trimmed. */
static int gsm8k_gold(const char *answer, char **gold) {
    const char *m = NULL;
    for (const char *p = strstr(answer, "####"); p; p = strstr(p + 4, "####")) m = p;
    if (!m) return rt_fail(RT_EFORMAT, "field \"answer\" has no \"#### N\" final answer");
    m += 4;
    while (*m == ' ' || *m == '\t' || *m == '\n' || *m == '\r') m++;
    size_t n = strlen(m);
    while (n && (m[n - 1] == ' ' || m[n - 1] == '\t' || m[n - 1] == '\n' || m[n - 1] == '\r')) n--;
    if (!n) return rt_fail(RT_EFORMAT, "field \"answer\" has nothing after \"####\"");
    *gold = strndup(m, n);
    return *gold ? 0 : RT_ENOMEM;
}

/* Only spaces, tabs and line breaks (or nothing). */
static bool is_blank(const char *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n') return false;
    return true;
}

size_t imp_max_prompt_bytes(const imp_options *o) {
    return o->max_prompt_bytes ? o->max_prompt_bytes : IMP_MAX_PROMPT_BYTES;
}

static int check_prompt_size(const imp_options *o, size_t bytes) {
    size_t max = imp_max_prompt_bytes(o);
    if (bytes > max)
        return rt_fail(RT_EFORMAT, "prompt of %zu bytes is over the limit of %zu (--max-prompt-bytes)", bytes, max);
    return 0;
}

static const char *const chat_roles[] = {"system", "user", "assistant"};

static int check_message(const json_t *m, size_t i) {
    if (!json_is_object(m)) return rt_fail(RT_EFORMAT, "messages[%zu] is not an object", i);
    const char *role, *content;
    int rc = string_field(m, "role", &role);
    if (!rc) rc = string_field(m, "content", &content);
    if (rc) return rt_errorf(rc, "messages[%zu]", i);
    bool known = false;
    for (size_t k = 0; k < sizeof chat_roles / sizeof *chat_roles; k++) known |= !strcmp(role, chat_roles[k]);
    if (!known) return rt_fail(RT_EFORMAT, "messages[%zu]: unknown role \"%s\" (system, user, assistant)", i, role);
    const json_t *r = json_object_get(m, "reasoning_content");
    if (r && !json_is_null(r) && !json_is_string(r))
        return rt_fail(RT_EFORMAT, "messages[%zu]: \"reasoning_content\" must be a string", i);
    return 0;
}

/* "<think>\nR\n</think>\n\nC" when R is non-empty, else C. */
static int assistant_text(const json_t *m, char **out, size_t *len) {
    const char *c = json_string_value(json_object_get(m, "content"));
    const char *r = json_string_value(json_object_get(m, "reasoning_content"));
    size_t lc = strlen(c), lr = r ? strlen(r) : 0;
    char *t = rt_malloc(lc + lr + 32);
    if (!t) return RT_ENOMEM;
    size_t o = 0;
    if (lr) {
        o = (size_t)sprintf(t, "<think>\n");
        memcpy(t + o, r, lr);
        o += lr;
        memcpy(t + o, "\n</think>\n\n", 11);
        o += 11;
    }
    memcpy(t + o, c, lc);
    o += lc;
    t[o] = 0;
    *out = t;
    *len = o;
    return 0;
}

static int parse_chat(const imp_options *o, json_t *obj, imp_record *r) {
    json_t *msgs = json_object_get(obj, "messages");
    if (!msgs || json_is_null(msgs)) return rt_fail(RT_EFORMAT, "missing field \"messages\"");
    if (!json_is_array(msgs) || !json_array_size(msgs)) return rt_fail(RT_EFORMAT, "\"messages\" must be a non-empty array");
    size_t n = json_array_size(msgs);
    for (size_t i = 0; i < n; i++) {
        int rc = check_message(json_array_get(msgs, i), i);
        if (rc) return rc;
    }
    const json_t *last = json_array_get(msgs, n - 1);
    bool ends_assistant = !strcmp(json_string_value(json_object_get(last, "role")), "assistant");
    size_t np = ends_assistant ? n - 1 : n;
    if (!np) return rt_fail(RT_EFORMAT, "no prompt: the only message is the assistant's");
    size_t bytes = 0;
    bool blank = true;
    for (size_t i = 0; i < np; i++) {
        const char *c = json_string_value(json_object_get(json_array_get(msgs, i), "content"));
        size_t l = json_string_length(json_object_get(json_array_get(msgs, i), "content"));
        bytes += l;
        blank = blank && is_blank(c, l);
    }
    if (blank) return rt_fail(RT_EFORMAT, "empty prompt (every message before the answer has empty content)");
    int rc0 = check_prompt_size(o, bytes);
    if (rc0) return rc0;
    if (o->as_samples && !ends_assistant)
        return rt_fail(RT_EFORMAT, "the last message is not an assistant turn (needed by --as-samples)");
    json_t *prompt = json_array();
    if (!prompt) return RT_ENOMEM;
    for (size_t i = 0; i < np; i++) json_array_append(prompt, json_array_get(msgs, i));
    r->messages = dump(prompt);
    json_decref(prompt);
    if (!r->messages) return RT_ENOMEM;
    if (o->answer_field) {
        int rc = field_text(obj, o->answer_field, true, &r->gold);
        if (rc) return rc;
    }
    if (o->as_samples) return assistant_text(last, &r->sample, &r->sample_len);
    return 0;
}

/* The fields a non-chat format reads: the prompt, the gold answer (NULL: none) and the
 * sample text (NULL: none; --as-samples then fails). */
static void format_fields(const imp_options *o, const char **pf, const char **af, const char **sf) {
    static const char *const def_prompt[] = {"question", "problem", "problem", "prompt"};
    static const char *const def_answer[] = {"answer", "answer", "answer", NULL};
    static const char *const def_sample[] = {"answer", "solution", "solution", NULL};
    *pf = o->prompt_field ? o->prompt_field : def_prompt[o->format];
    *af = o->answer_field ? o->answer_field : def_answer[o->format];
    *sf = o->format == IMP_JSONL ? *af : def_sample[o->format];
    if (o->format == IMP_GSM8K && o->answer_field) *sf = *af;
}

static int parse_fields(const imp_options *o, json_t *obj, imp_record *r) {
    const char *pf, *af, *sf;
    format_fields(o, &pf, &af, &sf);
    const char *prompt;
    int rc = string_field(obj, pf, &prompt);
    if (rc) return rc;
    size_t plen = json_string_length(json_object_get(obj, pf));
    if (is_blank(prompt, plen)) return rt_fail(RT_EFORMAT, "empty prompt (field \"%s\")", pf);
    if ((rc = check_prompt_size(o, plen))) return rc;
    json_t *m = json_pack("[{s:s,s:s}]", "role", "user", "content", prompt);
    if (!m) return RT_ENOMEM;
    r->messages = dump(m);
    json_decref(m);
    if (!r->messages || !(r->prompt_key = rt_strdup(pf))) return RT_ENOMEM;
    if (af) {
        if (o->format == IMP_GSM8K) {
            const char *ans;
            if ((rc = string_field(obj, af, &ans)) || (rc = gsm8k_gold(ans, &r->gold))) return rc;
        } else if ((rc = field_text(obj, af, true, &r->gold))) {
            return rc;
        }
    }
    if (o->as_samples) {
        if (!sf) return rt_fail(RT_EFORMAT, "--as-samples with format jsonl needs --answer-field");
        if ((rc = field_text(obj, sf, true, &r->sample))) return rc;
        r->sample_len = strlen(r->sample);
    }
    return 0;
}

/* ---- the fast path: a flat object of strings, integers, true, false and null ----
 *
 * Benchmark and prompt files are almost always flat objects of strings and integers. Such a
 * line is read here without building a jansson tree, and its messages and metadata are
 * written the way jansson writes them (compact, keys in file order, '"', '\\' and control
 * characters escaped: \b \f \n \r \t, others \u00XX in upper-case hex; '/' and non-ASCII as
 * they are), so a prompt's content hash does not depend on which path read it. Anything
 * else (nested values, real numbers, integers of 19 digits or more, \u0000, a lone
 * surrogate, duplicate keys, a field missing or of the wrong type, any syntax error) is
 * left to the jansson path, which gives the same record or the error message. */

#define FLAT_MAX_FIELDS 32
#define FLAT_FALLBACK 1 /* not for this path: parse with jansson */

typedef struct {
    const char *key;
    size_t key_len;
    char kind;       /* 's' string, 'i' integer, 't' true, 'f' false, 'n' null */
    const char *str; /* 's': the decoded text, NUL-terminated (in the scratch buffer) */
    size_t len;
    long long num;
} flat_field;

typedef struct {
    flat_field f[FLAT_MAX_FIELDS];
    size_t n;
} flat_obj;

static const char *skip_ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static int hex4(const char *p, const char *e, unsigned *out) {
    if (e - p < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}

/* A string starting at p (the opening quote), decoded into *w (advanced past its NUL).
 * Returns the byte after the closing quote, or NULL for anything the fast path leaves to
 * jansson. The input is valid UTF-8 (checked before). */
static const char *flat_string(const char *p, const char *e, char **w, const char **str, size_t *len) {
    char *o = *w;
    *str = o;
    for (p++; p < e;) {
        while (e - p >= 8 && !swar_json_special(load8(p))) { /* eight plain bytes */
            memcpy(o, p, 8);
            o += 8;
            p += 8;
        }
        if (p >= e) break;
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            *len = (size_t)(o - *str);
            *o++ = 0;
            *w = o;
            return p + 1;
        }
        if (c < 0x20) return NULL;
        if (c != '\\') { *o++ = (char)c; p++; continue; }
        if (++p >= e) return NULL;
        switch (*p++) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned u, lo;
            if (hex4(p, e, &u)) return NULL;
            p += 4;
            if (u == 0 || (u >= 0xDC00 && u <= 0xDFFF)) return NULL;
            if (u >= 0xD800 && u <= 0xDBFF) {
                if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, e, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return NULL;
                p += 6;
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (u < 0x80) *o++ = (char)u;
            else if (u < 0x800) { *o++ = (char)(0xC0 | u >> 6); *o++ = (char)(0x80 | (u & 0x3F)); }
            else if (u < 0x10000) {
                *o++ = (char)(0xE0 | u >> 12);
                *o++ = (char)(0x80 | ((u >> 6) & 0x3F));
                *o++ = (char)(0x80 | (u & 0x3F));
            } else {
                *o++ = (char)(0xF0 | u >> 18);
                *o++ = (char)(0x80 | ((u >> 12) & 0x3F));
                *o++ = (char)(0x80 | ((u >> 6) & 0x3F));
                *o++ = (char)(0x80 | (u & 0x3F));
            }
            break;
        }
        default: return NULL;
        }
    }
    return NULL;
}

/* An integer of at most 18 digits (so it fits), not followed by a fraction or exponent. */
static const char *flat_integer(const char *p, const char *e, long long *out) {
    bool neg = *p == '-';
    if (neg) p++;
    const char *d = p;
    long long v = 0;
    for (; p < e && *p >= '0' && *p <= '9'; p++)
        if (p - d < 18) v = v * 10 + (*p - '0'); /* more digits are refused below */
    size_t nd = (size_t)(p - d);
    if (!nd || nd > 18 || (nd > 1 && *d == '0')) return NULL;
    if (p < e && (*p == '.' || *p == 'e' || *p == 'E')) return NULL;
    *out = neg ? -v : v;
    return p;
}

/* The whole line as one flat object; 0 or FLAT_FALLBACK. scratch holds at least len bytes. */
static int flat_parse(const char *line, size_t len, char *scratch, flat_obj *obj) {
    const char *p = line, *e = line + len;
    char *w = scratch;
    obj->n = 0;
    p = skip_ws(p, e);
    if (p >= e || *p != '{') return FLAT_FALLBACK;
    p = skip_ws(p + 1, e);
    if (p >= e || *p != '"') return FLAT_FALLBACK; /* an empty object is rare: jansson's */
    for (;;) {
        if (obj->n == FLAT_MAX_FIELDS || p >= e || *p != '"') return FLAT_FALLBACK;
        flat_field *f = &obj->f[obj->n];
        if (!(p = flat_string(p, e, &w, &f->key, &f->key_len))) return FLAT_FALLBACK;
        for (size_t k = 0; k < obj->n; k++)
            if (obj->f[k].key_len == f->key_len && !memcmp(obj->f[k].key, f->key, f->key_len)) return FLAT_FALLBACK;
        p = skip_ws(p, e);
        if (p >= e || *p != ':') return FLAT_FALLBACK;
        p = skip_ws(p + 1, e);
        if (p >= e) return FLAT_FALLBACK;
        if (*p == '"') {
            f->kind = 's';
            p = flat_string(p, e, &w, &f->str, &f->len);
        } else if (*p == '-' || (*p >= '0' && *p <= '9')) {
            f->kind = 'i';
            p = flat_integer(p, e, &f->num);
        } else if (e - p >= 4 && !memcmp(p, "true", 4)) {
            f->kind = 't';
            p += 4;
        } else if (e - p >= 5 && !memcmp(p, "false", 5)) {
            f->kind = 'f';
            p += 5;
        } else if (e - p >= 4 && !memcmp(p, "null", 4)) {
            f->kind = 'n';
            p += 4;
        } else {
            return FLAT_FALLBACK;
        }
        if (!p) return FLAT_FALLBACK;
        obj->n++;
        p = skip_ws(p, e);
        if (p < e && *p == ',') { p = skip_ws(p + 1, e); continue; }
        if (p < e && *p == '}') break;
        return FLAT_FALLBACK;
    }
    return skip_ws(p + 1, e) == e ? 0 : FLAT_FALLBACK;
}

static const flat_field *flat_get(const flat_obj *obj, const char *key) {
    size_t n = strlen(key);
    for (size_t i = 0; i < obj->n; i++)
        if (obj->f[i].key_len == n && !memcmp(obj->f[i].key, key, n)) return &obj->f[i];
    return NULL;
}

/* A growing output string. */
typedef struct {
    char *s;
    size_t len, cap;
    bool oom;
} outbuf;

static void out_bytes(outbuf *b, const char *p, size_t n) {
    if (b->oom || rt_grow((void **)&b->s, &b->cap, b->len + n + 1, 1)) { b->oom = true; return; }
    memcpy(b->s + b->len, p, n);
    b->len += n;
    b->s[b->len] = 0;
}

/* s as a JSON string, escaped as jansson's compact dump escapes it. */
static void out_string(outbuf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    /* room for the escaped string: counted first (a plain run of eight bytes at a time) */
    size_t need = n + 3;
    for (size_t i = 0; i < n; i++) {
        while (n - i >= 8 && !swar_json_special(load8(s + i))) i += 8;
        if (i >= n) break;
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t') need += 1;
        else if (c < 0x20) need += 5;
    }
    if (b->oom || rt_grow((void **)&b->s, &b->cap, b->len + need, 1)) { b->oom = true; return; }
    char *o = b->s + b->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        while (n - i >= 8 && !swar_json_special(load8(s + i))) { /* eight bytes as they are */
            memcpy(o, s + i, 8);
            o += 8;
            i += 8;
        }
        if (i >= n) break;
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') { *o++ = (char)c; continue; }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default: *o++ = 'u'; *o++ = '0'; *o++ = '0'; *o++ = hex[c >> 4]; *o++ = hex[c & 15];
        }
    }
    *o++ = '"';
    *o = 0;
    b->len = (size_t)(o - b->s);
}

static void out_value(outbuf *b, const flat_field *f) {
    char num[32];
    switch (f->kind) {
    case 's': out_string(b, f->str, f->len); break;
    case 'i': out_bytes(b, num, (size_t)snprintf(num, sizeof num, "%lld", f->num)); break;
    case 't': out_bytes(b, "true", 4); break;
    case 'f': out_bytes(b, "false", 5); break;
    default: out_bytes(b, "null", 4);
    }
}

/* A field's text as field_text() gives it: a string as it is, an integer in decimal. NULL
 * with *fallback when absent, null or of another type. */
static char *flat_text(const flat_field *f, bool *fallback) {
    char num[32];
    if (f && f->kind == 's') return rt_strdup(f->str);
    if (f && f->kind == 'i') {
        snprintf(num, sizeof num, "%lld", f->num);
        return rt_strdup(num);
    }
    *fallback = true;
    return NULL;
}

/* 0: *out is the record; FLAT_FALLBACK: use the jansson path; RT_ENOMEM. check_only: the
 * line is checked as fully, but its messages, metadata and prompt key are not written. */
static int parse_flat(const imp_options *o, const char *line, size_t len, imp_record *r, bool check_only) {
    char *scratch = rt_malloc(len + 1);
    flat_obj objs, *obj = &objs;
    int rc = scratch ? flat_parse(line, len, scratch, obj) : RT_ENOMEM;
    const char *pf, *af, *sf;
    format_fields(o, &pf, &af, &sf);
    const flat_field *pv = rc ? NULL : flat_get(obj, pf);
    if (!rc && (!pv || pv->kind != 's' || is_blank(pv->str, pv->len) || pv->len > imp_max_prompt_bytes(o)))
        rc = FLAT_FALLBACK;
    if (!rc && o->as_samples && !sf) rc = FLAT_FALLBACK;
    bool fb = false;
    if (!rc && af) {
        const flat_field *av = flat_get(obj, af);
        if (o->format == IMP_GSM8K) {
            if (!av || av->kind != 's') fb = true;
            else if ((rc = gsm8k_gold(av->str, &r->gold)) == RT_EFORMAT) rc = FLAT_FALLBACK;
        } else if (!(r->gold = flat_text(av, &fb)) && !fb) {
            rc = RT_ENOMEM;
        }
    }
    if (!rc && !fb && o->as_samples) {
        if (!(r->sample = flat_text(flat_get(obj, sf), &fb)) && !fb) rc = RT_ENOMEM;
        if (r->sample) r->sample_len = strlen(r->sample);
    }
    if (!rc && fb) rc = FLAT_FALLBACK;
    if (!rc) {
        const flat_field *id = flat_get(obj, "id");
        if (id && (id->kind == 's' || id->kind == 'i') && !(r->external_id = flat_text(id, &fb))) rc = RT_ENOMEM;
    }
    if (!rc && !check_only) {
        /* an escaped string is never longer than it was in the line (escapes are written
         * no longer than they can be read, white space goes), so one allocation each */
        outbuf m = {0}, meta = {0};
        if (rt_grow((void **)&m.s, &m.cap, len + 64, 1) || rt_grow((void **)&meta.s, &meta.cap, len + 8, 1))
            m.oom = meta.oom = true;
        static const char head[] = "[{\"role\":\"user\",\"content\":";
        out_bytes(&m, head, sizeof head - 1);
        out_string(&m, pv->str, pv->len);
        out_bytes(&m, "}]", 2);
        out_bytes(&meta, "{", 1);
        bool first = true;
        for (size_t i = 0; i < obj->n; i++) {
            const flat_field *f = &obj->f[i];
            if (f == pv) continue;
            if (!first) out_bytes(&meta, ",", 1);
            first = false;
            out_string(&meta, f->key, f->key_len);
            out_bytes(&meta, ":", 1);
            out_value(&meta, f);
        }
        out_bytes(&meta, "}", 1);
        r->messages = m.s;
        r->metadata = meta.s;
        if (m.oom || meta.oom || !(r->prompt_key = rt_strdup(pf))) rc = RT_ENOMEM;
    }
    free(scratch);
    if (rc) imp_record_free(r);
    return rc;
}

/* imp_parse_line; check_only: the outcome is the same, the record may lack what only the
 * writer needs (the import's first pass keeps nothing). */
static int parse_line(const imp_options *o, const char *line, size_t len, imp_record *out, bool check_only) {
    memset(out, 0, sizeof *out);
    size_t bad = utf8_invalid_at((const unsigned char *)line, len);
    if (bad < len) return rt_fail(RT_EFORMAT, "invalid UTF-8 at byte %zu", bad + 1);
    if (o->format != IMP_CHAT) {
        int frc = parse_flat(o, line, len, out, check_only);
        if (frc != FLAT_FALLBACK) return frc;
    }
    json_error_t e;
    json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &e);
    if (!obj) return rt_fail(RT_EFORMAT, "invalid JSON at column %d: %s", e.column, e.text);
    int rc = 0;
    if (!json_is_object(obj)) rc = rt_fail(RT_EFORMAT, "not a JSON object");
    else rc = o->format == IMP_CHAT ? parse_chat(o, obj, out) : parse_fields(o, obj, out);
    if (!rc) {
        const json_t *id = json_object_get(obj, "id");
        if (json_is_string(id)) out->external_id = rt_strdup(json_string_value(id));
        else if (json_is_integer(id)) out->external_id = dump(id);
        /* what is left of the record is its metadata (everything above made its own copies) */
        json_object_del(obj, o->format == IMP_CHAT ? "messages" : out->prompt_key);
        if (!(out->metadata = dump(obj))) rc = RT_ENOMEM;
    }
    json_decref(obj);
    if (rc) imp_record_free(out);
    return rc;
}

int imp_parse_line(const imp_options *o, const char *line, size_t len, imp_record *out) {
    return parse_line(o, line, len, out, false);
}

/* ---- the file ---- */

/* A line over the reader's cap: its number (0-based) and length; its bytes are never held. */
typedef struct {
    size_t line;
    uint64_t bytes;
} long_line;

typedef struct {
    const char *data;     /* the lines: the mapped file, or buf */
    void *map;            /* mmap'd when non-NULL */
    size_t map_size;
    char *buf;            /* a stream's lines, without the bytes of over-long ones */
    size_t *starts;       /* n + 1 line starts; line i is [starts[i], starts[i+1]) minus its newline */
    size_t n;
    long_line *longs;     /* lines over the cap, in order */
    size_t n_long;
    uint64_t bytes;       /* bytes read from the file */
} input_file;

#define READ_CHUNK ((size_t)1 << 20)

static int add_line(input_file *f, size_t *cap, size_t *lcap, size_t start, uint64_t len, size_t line_cap) {
    if (rt_grow((void **)&f->starts, cap, f->n + 2, sizeof *f->starts)) return RT_ENOMEM;
    f->starts[f->n] = start;
    if (len > line_cap) {
        if (rt_grow((void **)&f->longs, lcap, f->n_long + 1, sizeof *f->longs)) return RT_ENOMEM;
        f->longs[f->n_long++] = (long_line){f->n, len};
    }
    f->n++;
    return 0;
}

/* A mapped regular file: the line starts come from reading it in chunks (not through the
 * mapping), so the pages of an over-long line are never brought into this process. */
static int index_mapped(const char *path, int fd, input_file *f, size_t line_cap) {
    char *chunk = rt_malloc(READ_CHUNK);
    if (!chunk) return RT_ENOMEM;
    size_t cap = 0, lcap = 0, start = 0, off = 0, size = f->map_size;
    int rc = 0;
    while (!rc && off < size) {
        size_t want = size - off < READ_CHUNK ? size - off : READ_CHUNK;
        ssize_t got = pread(fd, chunk, want, (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) { rc = rt_fail(RT_EIO, "cannot read %s: %s", path, strerror(errno)); break; }
        if (got == 0) { size = off; break; } /* the file shrank */
        for (const char *p = chunk, *e = chunk + got, *nl; !rc && (nl = memchr(p, '\n', (size_t)(e - p))); p = nl + 1) {
            size_t end = off + (size_t)(nl - chunk) + 1;
            rc = add_line(f, &cap, &lcap, start, end - 1 - start, line_cap);
            start = end;
        }
        off += (size_t)got;
    }
    if (!rc && start < size) rc = add_line(f, &cap, &lcap, start, size - start, line_cap);
    if (!rc && rt_grow((void **)&f->starts, &cap, f->n + 1, sizeof *f->starts)) rc = RT_ENOMEM;
    if (!rc) f->starts[f->n] = size;
    f->bytes = size;
    free(chunk);
    return rc;
}

/* A pipe or other stream: read into memory, except the bytes of a line over the cap,
 * which are counted and dropped as they arrive. */
static int read_stream(const char *path, int fd, input_file *f, size_t line_cap) {
    char *chunk = rt_malloc(READ_CHUNK);
    if (!chunk) return RT_ENOMEM;
    size_t cap = 0, lcap = 0, bcap = 0, blen = 0, line_start = 0;
    uint64_t cur = 0; /* bytes of the current line so far, dropped ones included */
    bool dropping = false;
    int rc = 0;
    for (;;) {
        ssize_t got = read(fd, chunk, READ_CHUNK);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) { rc = rt_fail(RT_EIO, "cannot read %s: %s", path, strerror(errno)); break; }
        if (got == 0) break;
        f->bytes += (uint64_t)got;
        for (const char *p = chunk, *e = chunk + got; !rc && p < e;) {
            const char *nl = memchr(p, '\n', (size_t)(e - p));
            size_t seg = nl ? (size_t)(nl - p) + 1 : (size_t)(e - p);
            if (!dropping && cur + seg - (nl != NULL) > line_cap) {
                dropping = true;
                blen = line_start; /* forget what was kept of this line */
            }
            if (!dropping) {
                if (rt_grow((void **)&f->buf, &bcap, blen + seg + 1, 1)) { rc = RT_ENOMEM; break; }
                memcpy(f->buf + blen, p, seg);
                blen += seg;
            }
            cur += seg;
            if (nl) {
                rc = add_line(f, &cap, &lcap, line_start, cur - 1, line_cap);
                line_start = blen;
                cur = 0;
                dropping = false;
            }
            p += seg;
        }
        if (rc) break;
    }
    if (!rc && cur) rc = add_line(f, &cap, &lcap, line_start, cur, line_cap);
    if (!rc && rt_grow((void **)&f->starts, &cap, f->n + 1, sizeof *f->starts)) rc = RT_ENOMEM;
    if (!rc) f->starts[f->n] = blen;
    f->data = f->buf;
    free(chunk);
    return rc;
}

static void input_close(input_file *f) {
    if (f->map) munmap(f->map, f->map_size);
    free(f->buf);
    free(f->starts);
    free(f->longs);
    memset(f, 0, sizeof *f);
}

static int input_open(const char *path, size_t line_cap, input_file *f) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return rt_fail(e == ENOENT ? RT_ENOTFOUND : RT_EIO, "cannot open %s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return rt_fail(RT_EIO, "cannot read %s: %s", path, strerror(e));
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return rt_fail(RT_EINVAL, "%s is a directory, not a JSONL file", path);
    }
    int rc;
    void *m = S_ISREG(st.st_mode) && st.st_size > 0
                  ? mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    if (m != MAP_FAILED) {
        madvise(m, (size_t)st.st_size, MADV_SEQUENTIAL);
        f->map = m;
        f->map_size = (size_t)st.st_size;
        f->data = m;
        rc = index_mapped(path, fd, f, line_cap);
    } else {
        rc = read_stream(path, fd, f, line_cap);
    }
    close(fd);
    if (rc) input_close(f);
    return rc;
}

typedef struct {
    const imp_options *o;
    const char *data;
    const size_t *starts; /* n + 1 line starts; line i is [starts[i], starts[i+1]) minus its newline */
    size_t base;          /* the first line of this batch */
    uint8_t *state;       /* per line: 0 good, 1 blank, 2 bad */
    imp_record *recs;     /* per line of the batch (parse pass), or NULL (check pass) */
    int n_threads;
    size_t *bad_line;     /* per thread: its first bad line (1-based), 0 none */
    char (*bad_msg)[256]; /* per thread: why */
} parse_job;

static void line_span(const parse_job *j, size_t i, const char **p, size_t *n) {
    const char *s = j->data + j->starts[i], *e = j->data + j->starts[i + 1];
    if (e > s && e[-1] == '\n') e--;
    if (e > s && e[-1] == '\r') e--;
    *p = s;
    *n = (size_t)(e - s);
}

static void parse_range(void *ctx, size_t begin, size_t end, int thread) {
    parse_job *j = ctx;
    for (size_t k = begin; k < end; k++) {
        size_t i = j->base + k;
        if (j->state[i]) continue; /* blank or bad (known from the check pass) */
        const char *p;
        size_t n;
        line_span(j, i, &p, &n);
        if (is_blank(p, n)) { j->state[i] = 1; continue; }
        imp_record r;
        int rc = parse_line(j->o, p, n, &r, !j->recs);
        if (rc) {
            j->state[i] = 2;
            int t = thread;
            if (!j->bad_line[t] || i + 1 < j->bad_line[t]) {
                j->bad_line[t] = i + 1;
                snprintf(j->bad_msg[t], sizeof j->bad_msg[t], "%s", rt_errmsg());
            }
            continue;
        }
        if (j->recs) j->recs[k] = r;
        else imp_record_free(&r);
    }
}

static void default_source(const char *path, char *out, size_t n) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    const char *dot = strrchr(b, '.');
    size_t l = dot && dot != b ? (size_t)(dot - b) : strlen(b);
    snprintf(out, n, "%.*s", (int)l, b);
}

static int insert_batch(db_conn *db, const imp_options *o, const char *source, imp_record *recs, const uint8_t *state,
                        size_t n, imp_report *rep) {
    int rc = db_begin(db);
    if (rc) return rc;
    size_t pn = 0, pe = 0, sn = 0, se = 0;
    for (size_t k = 0; k < n && !rc; k++) {
        if (state[k]) continue;
        imp_record *r = &recs[k];
        db_prompt p = {source, r->external_id, r->messages, r->prompt_key, r->gold, r->metadata};
        int64_t pid;
        bool ins;
        if ((rc = db_prompt_put(db, &p, &pid, &ins))) break;
        ins ? pn++ : pe++;
        if (o->as_samples && r->sample) {
            /* a prompt inserted just now has no samples: its reference is sample 0, which
             * is what "same text, else the next free index" (-1) would find, without the
             * lookups */
            db_sample s = {.prompt_id = pid, .teacher = "reference", .sample_index = -1, .fresh_prompt = ins,
                           .text = r->sample,
                           .text_len = r->sample_len, .prompt_tokens = -1, .thinking_tokens = -1,
                           .answer_tokens = -1};
            if ((rc = db_sample_put(db, &s, NULL, &ins))) break;
            ins ? sn++ : se++;
        }
    }
    if (!rc) rc = db_commit(db);
    if (rc) { db_rollback(db); return rc; }
    rep->prompts_new += pn;
    rep->prompts_existing += pe;
    rep->samples_new += sn;
    rep->samples_existing += se;
    return 0;
}

static void first_bad(const parse_job *j, imp_report *rep) {
    for (int t = 0; t < j->n_threads; t++)
        if (j->bad_line[t] && (!rep->first_bad_line || j->bad_line[t] < rep->first_bad_line)) {
            rep->first_bad_line = j->bad_line[t];
            snprintf(rep->first_bad_reason, sizeof rep->first_bad_reason, "%s", j->bad_msg[t]);
        }
}

/* The longest line the reader holds: room for a prompt at the limit, escaped, and the
 * record's other fields. */
static size_t line_cap(const imp_options *o) {
    size_t m = imp_max_prompt_bytes(o);
    return m > SIZE_MAX / 4 ? SIZE_MAX : 4 * m;
}

static int import_lines(db_conn *db, const char *path, const imp_options *o, tp_pool *pool, const input_file *in,
                        imp_report *rep) {
    const size_t *starts = in->starts;
    size_t n = in->n;
    rep->lines = n;
    rep->bytes = in->bytes;
    parse_job *j = rt_calloc(1, sizeof *j);
    uint8_t *state = rt_calloc(n ? n : 1, 1);
    size_t batch = o->batch_rows ? o->batch_rows : 5000;
    /* the check pass keeps nothing; each batch is parsed again before it is written, so
     * memory stays bounded by the batch (keeping every record of the file cost more in
     * fresh pages than parsing twice) */
    imp_record *recs = rt_calloc(batch, sizeof *recs);
    int nt = tp_size(pool);
    size_t *bad_line = rt_calloc((size_t)nt, sizeof *bad_line);
    char (*bad_msg)[256] = rt_calloc((size_t)nt, sizeof *bad_msg);
    int rc = (!j || !state || !recs || !bad_line || !bad_msg) ? RT_ENOMEM : 0;
    for (size_t k = 0; !rc && k < in->n_long; k++) state[in->longs[k].line] = 2; /* never read, never parsed */
    if (!rc) {
        /* pass 1: every line, nothing written */
        *j = (parse_job){.o = o, .data = in->data, .starts = starts, .state = state, .recs = NULL,
                         .n_threads = nt, .bad_line = bad_line, .bad_msg = bad_msg};
        tp_parallel_for(pool, n, parse_range, j);
        first_bad(j, rep);
        if (in->n_long && (!rep->first_bad_line || in->longs[0].line + 1 < rep->first_bad_line)) {
            rep->first_bad_line = in->longs[0].line + 1;
            snprintf(rep->first_bad_reason, sizeof rep->first_bad_reason,
                     "line of %llu bytes is longer than a record may be (4 x --max-prompt-bytes = %zu); not read",
                     (unsigned long long)in->longs[0].bytes, line_cap(o));
        }
        for (size_t i = 0; i < n; i++) {
            rep->blank += state[i] == 1;
            rep->bad += state[i] == 2;
        }
        if (rep->bad && !o->skip_bad)
            rc = rt_fail(RT_EFORMAT, "%s:%zu: %s (nothing from this file was imported%s)", path, rep->first_bad_line,
                         rep->first_bad_reason, rep->bad > 1 ? "; more bad lines follow" : "");
    }
    /* pass 2: batches, parsed in parallel, written in one transaction each */
    for (size_t b = 0; !rc && b < n; b += batch) {
        size_t m = n - b < batch ? n - b : batch;
        memset(recs, 0, m * sizeof *recs);
        j->base = b;
        j->recs = recs;
        tp_parallel_for(pool, m, parse_range, j);
        rc = insert_batch(db, o, rep->source, recs, state + b, m, rep);
        for (size_t k = 0; k < m; k++) imp_record_free(&recs[k]);
        if (rc) rc = rt_errorf(rc, "%s: writing lines %zu-%zu", path, b + 1, b + m);
    }
    free(recs);
    free(state);
    free(j);
    free(bad_line);
    free(bad_msg);
    return rc;
}

int db_import_file(db_conn *db, const char *path, const imp_options *o, tp_pool *pool, imp_report *rep) {
    memset(rep, 0, sizeof *rep);
    if (o->source) snprintf(rep->source, sizeof rep->source, "%s", o->source);
    else default_source(path, rep->source, sizeof rep->source);
    if (o->as_samples && o->format == IMP_JSONL && !o->answer_field)
        return rt_fail(RT_EINVAL, "--as-samples with format jsonl needs --answer-field (the sample text)");
    input_file in;
    int rc = input_open(path, line_cap(o), &in);
    if (rc) return rc;
    rc = import_lines(db, path, o, pool, &in, rep);
    input_close(&in);
    return rc;
}

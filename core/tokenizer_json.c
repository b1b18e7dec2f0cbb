/* core/tokenizer_json.c — the two large members of tokenizer.json (model.vocab and
 * model.merges) read straight from the text; see tokenizer_int.h (tokj_*).
 *
 * A Qwen or DeepSeek tokenizer.json is 7–11 MB, nearly all of it these two members: building
 * jansson's tree for them (a hash table of 150k keys, a node per merge) and walking it again
 * cost most of a one-line `retort tokenize`. Here tokj_find() locates the two values with a
 * structural scan (strings and brackets only), the caller hands the rest (with `{}` and `[]`
 * in their place) to jansson, strict as before, and tokj_vocab()/tokj_merges() parse the two
 * values themselves, just as strictly: RFC 8259 strings (escapes, surrogate pairs, no raw
 * control characters, valid UTF-8), integer ids, no duplicate keys (checked by the caller
 * on the vocabulary map), nothing after the closing bracket but the rest of the file.
 */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "core/tokenizer_int.h"
#include "core/utf8.h"

typedef struct {
    const char *p, *end, *base;
    tokj_text *out; /* where strings go */
} jcur;

static int jfail(const jcur *c, const char *what) {
    return rt_fail(RT_EFORMAT, "tokenizer.json: byte %zu: %s", (size_t)(c->p - c->base), what);
}

static void jws(jcur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t')) c->p++;
}

static int text_add(tokj_text *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap && rt_grow((void **)&t->s, &t->cap, t->len + n + 1, 1)) return RT_ENOMEM;
    memcpy(t->s + t->len, s, n);
    t->len += n;
    return 0;
}

static int hex4(const char *p, uint32_t *v) {
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char h = p[i];
        int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (d < 0) return -1;
        *v = *v << 4 | (uint32_t)d;
    }
    return 0;
}

/* One JSON string at c->p, unescaped into c->out (NUL-terminated there): *off, *n. */
static int jstring(jcur *c, size_t *off, size_t *n) {
    if (c->p >= c->end || *c->p != '"') return jfail(c, "expected a string");
    c->p++;
    tokj_text *t = c->out;
    size_t start = t->len;
    for (;;) {
        const char *q = c->p;
        while (q < c->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20) q++;
        if (text_add(t, c->p, (size_t)(q - c->p))) return RT_ENOMEM;
        c->p = q;
        if (q >= c->end) return jfail(c, "unterminated string");
        if (*q == '"') break;
        if ((unsigned char)*q < 0x20) return jfail(c, "control character in a string");
        if (c->end - q < 2) return jfail(c, "unterminated string");
        char e = q[1], one = 0;
        switch (e) {
        case '"': one = '"'; break;
        case '\\': one = '\\'; break;
        case '/': one = '/'; break;
        case 'b': one = '\b'; break;
        case 'f': one = '\f'; break;
        case 'n': one = '\n'; break;
        case 'r': one = '\r'; break;
        case 't': one = '\t'; break;
        case 'u': break;
        default: return jfail(c, "invalid escape in a string");
        }
        if (e != 'u') {
            if (text_add(t, &one, 1)) return RT_ENOMEM;
            c->p = q + 2;
            continue;
        }
        uint32_t cp;
        if (c->end - q < 6 || hex4(q + 2, &cp)) return jfail(c, "invalid \\u escape");
        c->p = q + 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF) return jfail(c, "lone low surrogate in a \\u escape");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t lo;
            if (c->end - c->p < 6 || c->p[0] != '\\' || c->p[1] != 'u' || hex4(c->p + 2, &lo) || lo < 0xDC00 ||
                lo > 0xDFFF)
                return jfail(c, "high surrogate without its low half in a \\u escape");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            c->p += 6;
        }
        if (cp == 0) return jfail(c, "NUL (\\u0000) in a token");
        char u[4];
        if (text_add(t, u, rt_utf8_encode(cp, u))) return RT_ENOMEM;
    }
    c->p++; /* the closing quote */
    size_t bad;
    if (!rt_utf8_check(t->s + start, t->len - start, &bad)) return jfail(c, "invalid UTF-8 in a string");
    t->s[t->len++] = '\0';
    *off = start;
    *n = t->len - start - 1;
    return 0;
}

/* Past the closing quote of the string whose body starts at c->p; -1 when unterminated. */
static int skip_string_body(jcur *c) {
    while (c->p < c->end && *c->p != '"') {
        if (*c->p == '\\' && c->end - c->p < 2) return -1;
        c->p += *c->p == '\\' ? 2 : 1;
    }
    if (c->p >= c->end) return -1;
    c->p++;
    return 0;
}

/* Skips one JSON value (for the structural scan: strings and brackets, no validation). */
static int jskip(jcur *c) {
    int depth = 0;
    do {
        if (c->p >= c->end) return -1;
        char ch = *c->p++;
        if (ch == '"') {
            if (skip_string_body(c)) return -1;
        } else if (ch == '{' || ch == '[') {
            depth++;
        } else if (ch == '}' || ch == ']') {
            if (--depth < 0) return -1;
        } else if (depth == 0) { /* a scalar: up to the next delimiter */
            while (c->p < c->end && !strchr(",}] \n\r\t", *c->p)) c->p++;
        }
    } while (depth > 0);
    return 0;
}

/* The raw bytes of one key (no escapes: the keys looked for have none). */
static int jkey(jcur *c, const char **k, size_t *n) {
    if (c->p >= c->end || *c->p != '"') return -1;
    const char *s = ++c->p;
    if (skip_string_body(c)) return -1;
    *k = s;
    *n = (size_t)(c->p - 1 - s);
    jws(c);
    if (c->p >= c->end || *c->p++ != ':') return -1;
    jws(c);
    return 0;
}

int tokj_find(const char *buf, size_t len, tokj_spans *sp) {
    memset(sp, 0, sizeof *sp);
    jcur c = {.p = buf, .end = buf + len, .base = buf};
    jws(&c);
    if (c.p >= c.end || *c.p++ != '{') return -1;
    bool in_model = false;
    const char *model_end = NULL;
    for (;;) {
        jws(&c);
        if (c.p < c.end && *c.p == '}') {
            if (!in_model) return -1; /* no model object */
            c.p++;
            in_model = false;
            if (model_end) break;
            continue;
        }
        const char *k;
        size_t kn;
        if (jkey(&c, &k, &kn)) return -1;
        if (!in_model && !model_end && kn == 5 && !memcmp(k, "model", 5) && c.p < c.end && *c.p == '{') {
            c.p++;
            in_model = true;
            model_end = c.p;
            continue;
        }
        bool vocab = in_model && kn == 5 && !memcmp(k, "vocab", 5), merges = in_model && kn == 6 && !memcmp(k, "merges", 6);
        size_t at = (size_t)(c.p - buf);
        if ((vocab && sp->vocab_end) || (merges && sp->merges_end)) return -1; /* twice: jansson says so */
        if (jskip(&c)) return -1;
        if (vocab) sp->vocab_at = at, sp->vocab_end = (size_t)(c.p - buf);
        if (merges) sp->merges_at = at, sp->merges_end = (size_t)(c.p - buf);
        jws(&c);
        if (c.p < c.end && *c.p == ',') c.p++;
        else if (c.p >= c.end || *c.p != '}') return -1;
        if (!in_model && model_end) break; /* past the model object: the rest is jansson's */
    }
    if (!sp->vocab_end || !sp->merges_end || buf[sp->vocab_at] != '{' || buf[sp->merges_at] != '[') return -1;
    return 0;
}

/* A key twice is an error, as jansson's strict parse makes it (open addressing on the keys). */
static int unique_keys(const tokj_vocab_t *v) {
    size_t cap = 16;
    while (cap < 2 * v->n) cap <<= 1;
    uint32_t *slot = rt_calloc(cap, sizeof *slot); /* entry index + 1 */
    if (!slot) return RT_ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < v->n && !rc; i++) {
        const char *k = v->text.s + v->e[i].off;
        for (size_t h = tok_hash(k, v->e[i].len) & (cap - 1);; h = (h + 1) & (cap - 1)) {
            if (!slot[h]) {
                slot[h] = (uint32_t)i + 1;
                break;
            }
            const tokj_entry *o = &v->e[slot[h] - 1];
            if (o->len == v->e[i].len && !memcmp(v->text.s + o->off, k, o->len)) {
                rc = rt_fail(RT_EFORMAT, "vocab: token '%s' appears twice", k);
                break;
            }
        }
    }
    free(slot);
    return rc;
}

int tokj_vocab(const char *buf, size_t at, size_t end, tokj_vocab_t *v) {
    jcur c = {.p = buf + at, .end = buf + end, .base = buf, .out = &v->text};
    c.p++; /* '{' */
    jws(&c);
    if (c.p < c.end && *c.p == '}') return c.p + 1 == c.end ? 0 : jfail(&c, "vocab: expected the end");
    for (;;) {
        jws(&c);
        size_t off, n;
        int rc = jstring(&c, &off, &n);
        if (rc) return rc;
        jws(&c);
        if (c.p >= c.end || *c.p++ != ':') return jfail(&c, "vocab: expected ':'");
        jws(&c);
        if (c.end - c.p >= 2 && c.p[0] == '-' && c.p[1] == '0') c.p++; /* -0 is 0, as jansson reads it */
        const char *d = c.p;
        int64_t id = 0;
        while (c.p < c.end && *c.p >= '0' && *c.p <= '9' && id < INT32_MAX) id = id * 10 + (*c.p++ - '0');
        bool bad_number = c.p == d || (c.p - d > 1 && *d == '0') ||
                          (c.p < c.end && (*c.p == '.' || *c.p == 'e' || *c.p == 'E' || (*c.p >= '0' && *c.p <= '9')));
        if ((rc = tokj_vocab_push(v, off, n, bad_number ? -1 : id))) return rc;
        jws(&c);
        if (c.p < c.end && *c.p == ',') {
            c.p++;
            continue;
        }
        if (c.p < c.end && *c.p == '}' && c.p + 1 == c.end) return unique_keys(v);
        return jfail(&c, "vocab: expected ',' or '}'");
    }
}

int tokj_text_add(tokj_text *t, const char *s, size_t n, size_t *off) {
    *off = t->len;
    if (text_add(t, s, n)) return RT_ENOMEM;
    t->s[t->len++] = '\0';
    return 0;
}

int tokj_vocab_push(tokj_vocab_t *v, size_t off, size_t n, int64_t id) {
    if (id < 0 || id >= INT32_MAX) return rt_fail(RT_EFORMAT, "vocab: token '%s' has no valid id", v->text.s + off);
    if (v->n == v->cap && rt_grow((void **)&v->e, &v->cap, v->n + 1, sizeof *v->e)) return RT_ENOMEM;
    v->e[v->n++] = (tokj_entry){.off = off, .len = n, .id = (int32_t)id};
    return 0;
}

int tokj_merge_push(tokj_merges_t *m, size_t a, size_t na, size_t b, size_t nb) {
    if (m->n == m->cap && rt_grow((void **)&m->e, &m->cap, m->n + 1, sizeof *m->e)) return RT_ENOMEM;
    m->e[m->n++] = (tokj_merge){.a = a, .na = na, .b = b, .nb = nb};
    return 0;
}

int tokj_merge_split(tokj_merges_t *m, size_t off, size_t n) {
    const char *s = m->text.s + off, *sp = memchr(s, ' ', n);
    if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp - s) - 1))
        return rt_fail(RT_EFORMAT, "merge %zu '%s' is not two tokens separated by one space", m->n, s);
    size_t k = (size_t)(sp - s);
    return tokj_merge_push(m, off, k, off + k + 1, n - k - 1);
}

static int merge_string(jcur *c, tokj_merges_t *m) {
    size_t off, n;
    int rc = jstring(c, &off, &n);
    return rc ? rc : tokj_merge_split(m, off, n);
}

static int merge_pair(jcur *c, tokj_merges_t *m) {
    size_t r = m->n;
    c->p++; /* '[' */
    size_t off[2], n[2];
    for (int i = 0; i < 2; i++) {
        jws(c);
        if (c->p >= c->end || *c->p != '"') return rt_fail(RT_EFORMAT, "merges: expected strings");
        int rc = jstring(c, &off[i], &n[i]);
        if (rc) return rc;
        jws(c);
        if (c->p < c->end && *c->p == (i ? ']' : ',')) c->p++;
        else return rt_fail(RT_EFORMAT, "merge %zu: expected \"a b\" or [a, b]", r);
    }
    return tokj_merge_push(m, off[0], n[0], off[1], n[1]);
}

int tokj_merges(const char *buf, size_t at, size_t end, tokj_merges_t *m) {
    jcur c = {.p = buf + at, .end = buf + end, .base = buf, .out = &m->text};
    c.p++; /* '[' */
    jws(&c);
    if (c.p < c.end && *c.p == ']') return c.p + 1 == c.end ? 0 : jfail(&c, "merges: expected the end");
    for (;;) {
        jws(&c);
        int rc = c.p < c.end && *c.p == '"'   ? merge_string(&c, m)
                 : c.p < c.end && *c.p == '[' ? merge_pair(&c, m)
                                              : rt_fail(RT_EFORMAT, "merge %zu: expected \"a b\" or [a, b]", m->n);
        if (rc) return rc;
        jws(&c);
        if (c.p < c.end && *c.p == ',') {
            c.p++;
            continue;
        }
        if (c.p < c.end && *c.p == ']' && c.p + 1 == c.end) return 0;
        return jfail(&c, "merges: expected ',' or ']'");
    }
}

void tokj_vocab_free(tokj_vocab_t *v) {
    free(v->e);
    free(v->text.s);
    memset(v, 0, sizeof *v);
}

void tokj_merges_free(tokj_merges_t *m) {
    free(m->e);
    free(m->text.s);
    memset(m, 0, sizeof *m);
}

/* core/jinja.c — see jinja.h. Lexer (text and tags, whitespace control as transformers'
 * environment: trim_blocks, lstrip_blocks), recursive-descent parser to an AST with Jinja's
 * precedence, and a tree-walking evaluator over jansson values. */
#include "core/jinja.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "core/utf8.h"

#define JJ_MAX_DEPTH 200
#define JJ_MAX_OUT ((size_t)1 << 30)

/* ---------------------------------------------------------------- tokens */

enum { T_TEXT, T_VAR_B, T_VAR_E, T_BLK_B, T_BLK_E, T_NAME, T_STR, T_INT, T_FLOAT, T_OP, T_EOF };

typedef struct {
    int kind, line;
    char *s;      /* text, name, string value, op */
    size_t len;   /* string length (may contain NUL) */
    long long i;
    double f;
} tok;

typedef struct {
    tok *v;
    size_t n, cap;
} toks;

static int tpush(toks *t, tok k) {
    if (t->n == t->cap) {
        size_t c = t->cap ? t->cap * 2 : 64;
        tok *v = realloc(t->v, c * sizeof *v);
        if (!v) { free(k.s); return rt_fail(RT_ENOMEM, "jinja: out of memory"); }
        t->v = v; t->cap = c;
    }
    t->v[t->n++] = k;
    return 0;
}

static void toks_free(toks *t) {
    for (size_t i = 0; i < t->n; i++) free(t->v[i].s);
    free(t->v);
}

static char *mem_dup(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static int lines_in(const char *s, size_t n) {
    int l = 0;
    for (size_t i = 0; i < n; i++) l += s[i] == '\n';
    return l;
}

static int lex_string(const char *s, size_t n, size_t *pos, int line, tok *out) {
    char q = s[*pos];
    size_t i = *pos + 1;
    char *buf = malloc(n - *pos + 1);
    if (!buf) return rt_fail(RT_ENOMEM, "jinja: out of memory");
    size_t o = 0;
    while (i < n && s[i] != q) {
        if (s[i] == '\\' && i + 1 < n) {
            char c = s[i + 1];
            i += 2;
            switch (c) {
            case 'n': buf[o++] = '\n'; break;
            case 't': buf[o++] = '\t'; break;
            case 'r': buf[o++] = '\r'; break;
            case 'b': buf[o++] = '\b'; break;
            case 'f': buf[o++] = '\f'; break;
            case 'v': buf[o++] = '\v'; break;
            case 'a': buf[o++] = '\a'; break;
            case '0': buf[o++] = '\0'; break;
            case '\\': buf[o++] = '\\'; break;
            case '\'': buf[o++] = '\''; break;
            case '"': buf[o++] = '"'; break;
            case '\n': break;
            case 'x': case 'u': case 'U': {
                int nd = c == 'x' ? 2 : c == 'u' ? 4 : 8;
                uint32_t cp = 0;
                for (int k = 0; k < nd; k++, i++) {
                    int h = i < n ? s[i] : 0;
                    int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                          : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                    if (d < 0) { free(buf); return rt_fail(RT_EFORMAT, "jinja: line %d: bad \\%c escape in string", line, c); }
                    cp = cp * 16 + (uint32_t)d;
                }
                if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) { free(buf); return rt_fail(RT_EFORMAT, "jinja: line %d: bad code point in string", line); }
                o += rt_utf8_encode(cp, buf + o);
                break;
            }
            default: buf[o++] = '\\'; buf[o++] = c; break;
            }
        } else {
            buf[o++] = s[i++];
        }
    }
    if (i >= n) { free(buf); return rt_fail(RT_EFORMAT, "jinja: line %d: unterminated string", line); }
    *pos = i + 1;
    buf[o] = 0;
    *out = (tok){T_STR, line, buf, o, 0, 0};
    return 0;
}

/* Tokens inside one tag, from s[*pos] up to the closing delimiter (end = "}}" or "%}"). */
static int lex_tag(const char *s, size_t n, size_t *pos, int *line, const char *end, toks *t, bool *close_minus) {
    size_t i = *pos;
    for (;;) {
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) { if (s[i] == '\n') (*line)++; i++; }
        if (i >= n) return rt_fail(RT_EFORMAT, "jinja: line %d: tag not closed (expected '%s')", *line, end);
        if (s[i] == '-' && i + 2 < n && s[i + 1] == end[0] && s[i + 2] == end[1]) { *close_minus = true; *pos = i + 3; return 0; }
        if (s[i] == '+' && i + 2 < n && s[i + 1] == end[0] && s[i + 2] == end[1]) { *close_minus = false; *pos = i + 3; return 0; }
        if (i + 1 < n && s[i] == end[0] && s[i + 1] == end[1]) { *close_minus = false; *pos = i + 2; return 0; }
        char c = s[i];
        int rc;
        if (c == '\'' || c == '"') {
            tok k;
            if ((rc = lex_string(s, n, &i, *line, &k))) return rc;
            if ((rc = tpush(t, k))) return rc;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
            size_t b = i;
            while (i < n && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_' || (s[i] >= '0' && s[i] <= '9'))) i++;
            char *nm = mem_dup(s + b, i - b);
            if (!nm) return rt_fail(RT_ENOMEM, "jinja: out of memory");
            if ((rc = tpush(t, (tok){T_NAME, *line, nm, i - b, 0, 0}))) return rc;
        } else if (c >= '0' && c <= '9') {
            size_t b = i;
            bool fl = false;
            while (i < n && ((s[i] >= '0' && s[i] <= '9') || s[i] == '_')) i++;
            if (i + 1 < n && s[i] == '.' && s[i + 1] >= '0' && s[i + 1] <= '9') {
                fl = true; i++;
                while (i < n && s[i] >= '0' && s[i] <= '9') i++;
            }
            if (i < n && (s[i] == 'e' || s[i] == 'E')) {
                size_t j = i + 1;
                if (j < n && (s[j] == '+' || s[j] == '-')) j++;
                if (j < n && s[j] >= '0' && s[j] <= '9') {
                    fl = true; i = j;
                    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
                }
            }
            char num[64];
            size_t o = 0;
            for (size_t k = b; k < i && o < sizeof num - 1; k++) if (s[k] != '_') num[o++] = s[k];
            num[o] = 0;
            tok k = {fl ? T_FLOAT : T_INT, *line, NULL, 0, 0, 0};
            if (fl) k.f = strtod(num, NULL); else k.i = strtoll(num, NULL, 10);
            if ((rc = tpush(t, k))) return rc;
        } else {
            static const char *ops[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                        "=", "(", ")", "[", "]", "{", "}", ".", ",", ":", "|", NULL};
            const char *m = NULL;
            for (int k = 0; ops[k]; k++) {
                size_t l = strlen(ops[k]);
                if (i + l <= n && !memcmp(s + i, ops[k], l)) { m = ops[k]; break; }
            }
            if (!m) return rt_fail(RT_EFORMAT, "jinja: line %d: unexpected character '%c'", *line, c);
            char *o = mem_dup(m, strlen(m));
            if (!o) return rt_fail(RT_ENOMEM, "jinja: out of memory");
            if ((rc = tpush(t, (tok){T_OP, *line, o, strlen(m), 0, 0}))) return rc;
            i += strlen(m);
        }
    }
}

static bool only_blanks(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) if (s[i] != ' ' && s[i] != '\t') return false;
    return true;
}

static int lex(const char *s, size_t n, toks *t) {
    size_t i = 0;
    int line = 1;
    bool strip_next = false;      /* previous tag closed with '-' */
    bool trim_nl = false;         /* previous tag was a block/comment: drop one newline */
    while (i <= n) {
        /* find next tag start */
        size_t j = i;
        int kind = -1;
        while (j + 1 < n) {
            if (s[j] == '{' && (s[j + 1] == '{' || s[j + 1] == '%' || s[j + 1] == '#')) { kind = s[j + 1]; break; }
            j++;
        }
        if (kind < 0) j = n;
        size_t tb = i, te = j;   /* text [tb, te) */
        if (strip_next) { while (tb < te && (s[tb] == ' ' || s[tb] == '\t' || s[tb] == '\n' || s[tb] == '\r' || s[tb] == '\f' || s[tb] == '\v')) tb++; }
        else if (trim_nl) {
            if (tb < te && s[tb] == '\n') tb++;
            else if (tb + 1 < te && s[tb] == '\r' && s[tb + 1] == '\n') tb += 2;
        }
        bool minus_open = false, plus_open = false;
        if (kind >= 0 && j + 2 < n) { minus_open = s[j + 2] == '-'; plus_open = s[j + 2] == '+'; }
        if (kind >= 0) {
            if (minus_open) {
                while (te > tb && (s[te - 1] == ' ' || s[te - 1] == '\t' || s[te - 1] == '\n' || s[te - 1] == '\r' || s[te - 1] == '\f' || s[te - 1] == '\v')) te--;
            } else if ((kind == '%' || kind == '#') && !plus_open) {
                /* lstrip_blocks: blanks from the start of the line to the tag */
                size_t ls = te;
                while (ls > tb && s[ls - 1] != '\n') ls--;
                bool at_line_start = ls == 0 || s[ls - 1] == '\n';
                if (at_line_start && only_blanks(s + ls, te - ls)) te = ls;
            }
        }
        int text_line = line + lines_in(s + i, tb - i);
        if (te > tb) {
            char *txt = mem_dup(s + tb, te - tb);
            if (!txt) return rt_fail(RT_ENOMEM, "jinja: out of memory");
            int rc = tpush(t, (tok){T_TEXT, text_line, txt, te - tb, 0, 0});
            if (rc) return rc;
        }
        line += lines_in(s + i, j - i);
        if (kind < 0) break;
        size_t p = j + 2 + (minus_open || plus_open);
        strip_next = trim_nl = false;
        if (kind == '#') {
            size_t k = p;
            while (k + 1 < n && !(s[k] == '#' && s[k + 1] == '}')) k++;
            if (k + 1 >= n) return rt_fail(RT_EFORMAT, "jinja: line %d: comment not closed", line);
            line += lines_in(s + j, k - j);
            strip_next = k > p && s[k - 1] == '-';
            trim_nl = !strip_next;
            i = k + 2;
        } else {
            int rc = tpush(t, (tok){kind == '{' ? T_VAR_B : T_BLK_B, line, NULL, 0, 0, 0});
            if (rc) return rc;
            bool cm = false;
            rc = lex_tag(s, n, &p, &line, kind == '{' ? "}}" : "%}", t, &cm);
            if (rc) return rc;
            if ((rc = tpush(t, (tok){kind == '{' ? T_VAR_E : T_BLK_E, line, NULL, 0, 0, 0}))) return rc;
            strip_next = cm;
            trim_nl = !cm && kind == '%';
            i = p;
        }
    }
    return tpush(t, (tok){T_EOF, line, NULL, 0, 0, 0});
}

/* ---------------------------------------------------------------- AST */

enum {
    /* statements */
    N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_BREAK, N_CONTINUE,
    /* expressions */
    E_LIT, E_NAME, E_ATTR, E_INDEX, E_SLICE, E_CALL, E_FILTER, E_TEST, E_BIN, E_NOT, E_NEG, E_POS,
    E_AND, E_OR, E_COND, E_LIST, E_DICT, E_IN, E_NONE_ARG
};

typedef struct node node;
struct node {
    int kind, line, op;   /* op: binary operator code; for E_IN/E_TEST: negated */
    char *s, *s2;         /* names */
    char *kw;             /* keyword-argument name when this node is a call argument */
    json_t *lit;
    node *a, *b, *c, *d;
    node **v; size_t n, cap;     /* body / arguments / items */
    node **w; size_t wn, wcap;   /* else body / dict values */
};

struct jj_template {
    node **all; size_t nall, cap;
    node *root;
};

typedef struct {
    toks *t;
    size_t p;
    jj_template *tpl;
    int depth;
} P;

static node *nnew(P *p, int kind, int line) {
    jj_template *T = p->tpl;
    if (T->nall == T->cap) {
        size_t c = T->cap ? T->cap * 2 : 128;
        node **v = realloc(T->all, c * sizeof *v);
        if (!v) return NULL;
        T->all = v; T->cap = c;
    }
    node *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->kind = kind; x->line = line;
    T->all[T->nall++] = x;
    return x;
}

static int vpush(node ***v, size_t *n, size_t *cap, node *x) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 8;
        node **nv = realloc(*v, c * sizeof *nv);
        if (!nv) return rt_fail(RT_ENOMEM, "jinja: out of memory");
        *v = nv; *cap = c;
    }
    (*v)[(*n)++] = x;
    return 0;
}

#define NOMEM() rt_fail(RT_ENOMEM, "jinja: out of memory")

static tok *cur(P *p) { return &p->t->v[p->p]; }
static bool is_op(P *p, const char *o) { tok *k = cur(p); return k->kind == T_OP && !strcmp(k->s, o); }
static bool is_name(P *p, const char *nm) { tok *k = cur(p); return k->kind == T_NAME && !strcmp(k->s, nm); }
static bool accept_op(P *p, const char *o) { if (is_op(p, o)) { p->p++; return true; } return false; }
static bool accept_name(P *p, const char *nm) { if (is_name(p, nm)) { p->p++; return true; } return false; }

static const char *tok_desc(tok *k) {
    switch (k->kind) {
    case T_TEXT: return "template text";
    case T_VAR_B: return "'{{'";
    case T_VAR_E: return "'}}'";
    case T_BLK_B: return "'{%'";
    case T_BLK_E: return "'%}'";
    case T_NAME: case T_OP: return k->s;
    case T_STR: return "a string";
    case T_INT: case T_FLOAT: return "a number";
    default: return "end of template";
    }
}

static int expect_op(P *p, const char *o) {
    if (accept_op(p, o)) return 0;
    return rt_fail(RT_EFORMAT, "jinja: line %d: expected '%s', found %s", cur(p)->line, o, tok_desc(cur(p)));
}

static int parse_expr(P *p, node **out);
static int parse_unary(P *p, node **out);

/* call arguments after '(' : positional and k=v */
static int parse_args(P *p, node *call) {
    int rc;
    while (!accept_op(p, ")")) {
        if (call->n && (rc = expect_op(p, ","))) return rc;
        if (accept_op(p, ")")) break;
        char *kw = NULL;
        if (cur(p)->kind == T_NAME && p->t->v[p->p + 1].kind == T_OP && !strcmp(p->t->v[p->p + 1].s, "=")) {
            kw = cur(p)->s;
            p->p += 2;
        }
        node *a;
        if ((rc = parse_expr(p, &a))) return rc;
        if (kw && !(a->kw = strdup(kw))) return NOMEM();
        if ((rc = vpush(&call->v, &call->n, &call->cap, a))) return rc;
    }
    return 0;
}

static int parse_primary(P *p, node **out) {
    tok *k = cur(p);
    node *x;
    int rc;
    if (++p->depth > JJ_MAX_DEPTH) return rt_fail(RT_ERANGE, "jinja: line %d: expression nested too deeply", k->line);
    if (k->kind == T_STR) {
        /* adjacent string literals concatenate */
        size_t len = 0, q = p->p;
        while (p->t->v[q].kind == T_STR) len += p->t->v[q++].len;
        char *buf = malloc(len + 1);
        if (!buf) return NOMEM();
        size_t o = 0;
        while (cur(p)->kind == T_STR) { memcpy(buf + o, cur(p)->s, cur(p)->len); o += cur(p)->len; p->p++; }
        if (!(x = nnew(p, E_LIT, k->line))) { free(buf); return NOMEM(); }
        x->lit = json_stringn_nocheck(buf, len);
        free(buf);
        if (!x->lit) return NOMEM();
    } else if (k->kind == T_INT || k->kind == T_FLOAT) {
        if (!(x = nnew(p, E_LIT, k->line))) return NOMEM();
        x->lit = k->kind == T_INT ? json_integer(k->i) : json_real(k->f);
        if (!x->lit) return NOMEM();
        p->p++;
    } else if (k->kind == T_NAME) {
        const char *nm = k->s;
        if (!strcmp(nm, "true") || !strcmp(nm, "True") || !strcmp(nm, "false") || !strcmp(nm, "False") ||
            !strcmp(nm, "none") || !strcmp(nm, "None")) {
            if (!(x = nnew(p, E_LIT, k->line))) return NOMEM();
            x->lit = (nm[0] == 't' || nm[0] == 'T') ? json_true() : (nm[0] == 'f' || nm[0] == 'F') ? json_false() : json_null();
        } else {
            if (!(x = nnew(p, E_NAME, k->line))) return NOMEM();
            if (!(x->s = strdup(nm))) return NOMEM();
        }
        p->p++;
    } else if (k->kind == T_OP && !strcmp(k->s, "(")) {
        p->p++;
        node *first;
        if (accept_op(p, ")")) {
            if (!(x = nnew(p, E_LIST, k->line))) return NOMEM();
        } else {
            if ((rc = parse_expr(p, &first))) return rc;
            if (is_op(p, ",")) {   /* tuple → list */
                if (!(x = nnew(p, E_LIST, k->line))) return NOMEM();
                if ((rc = vpush(&x->v, &x->n, &x->cap, first))) return rc;
                while (accept_op(p, ",")) {
                    if (is_op(p, ")")) break;
                    node *e;
                    if ((rc = parse_expr(p, &e)) || (rc = vpush(&x->v, &x->n, &x->cap, e))) return rc;
                }
            } else {
                x = first;
            }
            if ((rc = expect_op(p, ")"))) return rc;
        }
    } else if (k->kind == T_OP && !strcmp(k->s, "[")) {
        p->p++;
        if (!(x = nnew(p, E_LIST, k->line))) return NOMEM();
        while (!accept_op(p, "]")) {
            if (x->n && (rc = expect_op(p, ","))) return rc;
            if (accept_op(p, "]")) break;
            node *e;
            if ((rc = parse_expr(p, &e)) || (rc = vpush(&x->v, &x->n, &x->cap, e))) return rc;
        }
    } else if (k->kind == T_OP && !strcmp(k->s, "{")) {
        p->p++;
        if (!(x = nnew(p, E_DICT, k->line))) return NOMEM();
        while (!accept_op(p, "}")) {
            if (x->n && (rc = expect_op(p, ","))) return rc;
            if (accept_op(p, "}")) break;
            node *key, *val;
            if ((rc = parse_expr(p, &key)) || (rc = expect_op(p, ":")) || (rc = parse_expr(p, &val))) return rc;
            if ((rc = vpush(&x->v, &x->n, &x->cap, key)) || (rc = vpush(&x->w, &x->wn, &x->wcap, val))) return rc;
        }
    } else {
        return rt_fail(RT_EFORMAT, "jinja: line %d: expected an expression, found %s", k->line, tok_desc(k));
    }
    /* postfix: .attr, [index], [a:b:c], (args) */
    for (;;) {
        int line = cur(p)->line;
        if (accept_op(p, ".")) {
            tok *nm = cur(p);
            node *y;
            if (nm->kind == T_NAME) {
                if (!(y = nnew(p, E_ATTR, line)) || !(y->s = strdup(nm->s))) return NOMEM();
            } else if (nm->kind == T_INT) {
                if (!(y = nnew(p, E_INDEX, line))) return NOMEM();
                node *ix = nnew(p, E_LIT, line);
                if (!ix || !(ix->lit = json_integer(nm->i))) return NOMEM();
                y->b = ix;
            } else {
                return rt_fail(RT_EFORMAT, "jinja: line %d: expected a name after '.', found %s", line, tok_desc(nm));
            }
            p->p++;
            y->a = x;
            x = y;
        } else if (accept_op(p, "[")) {
            node *y, *lo = NULL, *hi = NULL, *st = NULL;
            bool slice = false;
            if (!is_op(p, ":") && (rc = parse_expr(p, &lo))) return rc;
            if (accept_op(p, ":")) {
                slice = true;
                if (!is_op(p, ":") && !is_op(p, "]") && (rc = parse_expr(p, &hi))) return rc;
                if (accept_op(p, ":") && !is_op(p, "]") && (rc = parse_expr(p, &st))) return rc;
            }
            if ((rc = expect_op(p, "]"))) return rc;
            if (!(y = nnew(p, slice ? E_SLICE : E_INDEX, line))) return NOMEM();
            y->a = x; y->b = lo; y->c = hi; y->d = st;
            x = y;
        } else if (accept_op(p, "(")) {
            node *y = nnew(p, E_CALL, line);
            if (!y) return NOMEM();
            y->a = x;
            if ((rc = parse_args(p, y))) return rc;
            x = y;
        } else {
            break;
        }
    }
    p->depth--;
    *out = x;
    return 0;
}

/* filters (|name(args)) and tests (is [not] name [arg]) */
static int parse_filters(P *p, node **io) {
    node *x = *io;
    int rc;
    for (;;) {
        int line = cur(p)->line;
        if (accept_op(p, "|")) {
            tok *nm = cur(p);
            if (nm->kind != T_NAME) return rt_fail(RT_EFORMAT, "jinja: line %d: expected a filter name after '|'", line);
            node *y = nnew(p, E_FILTER, line);
            if (!y || !(y->s = strdup(nm->s))) return NOMEM();
            p->p++;
            y->a = x;
            if (accept_op(p, "(") && (rc = parse_args(p, y))) return rc;
            x = y;
        } else if (accept_name(p, "is")) {
            node *y = nnew(p, E_TEST, line);
            if (!y) return NOMEM();
            y->op = accept_name(p, "not");
            tok *nm = cur(p);
            if (nm->kind != T_NAME) return rt_fail(RT_EFORMAT, "jinja: line %d: expected a test name after 'is'", line);
            if (!(y->s = strdup(nm->s))) return NOMEM();
            p->p++;
            y->a = x;
            if (accept_op(p, "(")) {
                if ((rc = parse_args(p, y))) return rc;
            } else {
                tok *k = cur(p);
                bool arg = k->kind == T_STR || k->kind == T_INT || k->kind == T_FLOAT ||
                           (k->kind == T_NAME && strcmp(k->s, "and") && strcmp(k->s, "or") && strcmp(k->s, "else") &&
                            strcmp(k->s, "if") && strcmp(k->s, "is") && strcmp(k->s, "in") && strcmp(k->s, "not"));
                if (arg) {
                    node *e;
                    if ((rc = parse_primary(p, &e)) || (rc = vpush(&y->v, &y->n, &y->cap, e))) return rc;
                }
            }
            x = y;
        } else {
            break;
        }
    }
    *io = x;
    return 0;
}

static int parse_unary(P *p, node **out) {
    int line = cur(p)->line, rc;
    if (accept_op(p, "-") || (is_op(p, "+") && (p->p++, 1))) {
        bool neg = p->t->v[p->p - 1].s[0] == '-';
        node *a;
        if ((rc = parse_unary(p, &a))) return rc;
        node *x = nnew(p, neg ? E_NEG : E_POS, line);
        if (!x) return NOMEM();
        x->a = a;
        *out = x;
        return 0;
    }
    if ((rc = parse_primary(p, out))) return rc;
    return parse_filters(p, out);
}

enum { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FDIV, OP_MOD, OP_POW, OP_CAT, OP_EQ, OP_NE, OP_LT, OP_GT, OP_LE, OP_GE };

static int mkbin(P *p, int op, int line, node *a, node *b, node **out) {
    node *x = nnew(p, E_BIN, line);
    if (!x) return NOMEM();
    x->op = op; x->a = a; x->b = b;
    *out = x;
    return 0;
}

static int parse_pow(P *p, node **out) {
    int rc = parse_unary(p, out);
    while (!rc && is_op(p, "**")) {
        int line = cur(p)->line;
        p->p++;
        node *b;
        if ((rc = parse_unary(p, &b))) return rc;
        rc = mkbin(p, OP_POW, line, *out, b, out);
    }
    return rc;
}

static int parse_math2(P *p, node **out) {
    int rc = parse_pow(p, out);
    for (;;) {
        if (rc) return rc;
        int op = is_op(p, "*") ? OP_MUL : is_op(p, "/") ? OP_DIV : is_op(p, "//") ? OP_FDIV : is_op(p, "%") ? OP_MOD : 0;
        if (!op) return 0;
        int line = cur(p)->line;
        p->p++;
        node *b;
        if ((rc = parse_pow(p, &b))) return rc;
        rc = mkbin(p, op, line, *out, b, out);
    }
}

static int parse_concat(P *p, node **out) {
    int rc = parse_math2(p, out);
    while (!rc && is_op(p, "~")) {
        int line = cur(p)->line;
        p->p++;
        node *b;
        if ((rc = parse_math2(p, &b))) return rc;
        rc = mkbin(p, OP_CAT, line, *out, b, out);
    }
    return rc;
}

static int parse_math1(P *p, node **out) {
    int rc = parse_concat(p, out);
    for (;;) {
        if (rc) return rc;
        int op = is_op(p, "+") ? OP_ADD : is_op(p, "-") ? OP_SUB : 0;
        if (!op) return 0;
        int line = cur(p)->line;
        p->p++;
        node *b;
        if ((rc = parse_concat(p, &b))) return rc;
        rc = mkbin(p, op, line, *out, b, out);
    }
}

static int parse_compare(P *p, node **out) {
    int rc = parse_math1(p, out);
    for (;;) {
        if (rc) return rc;
        int line = cur(p)->line;
        int op = is_op(p, "==") ? OP_EQ : is_op(p, "!=") ? OP_NE : is_op(p, "<") ? OP_LT : is_op(p, ">") ? OP_GT
               : is_op(p, "<=") ? OP_LE : is_op(p, ">=") ? OP_GE : 0;
        node *b;
        if (op) {
            p->p++;
            if ((rc = parse_math1(p, &b))) return rc;
            rc = mkbin(p, op, line, *out, b, out);
        } else if (is_name(p, "in") || (is_name(p, "not") && p->t->v[p->p + 1].kind == T_NAME && !strcmp(p->t->v[p->p + 1].s, "in"))) {
            bool neg = is_name(p, "not");
            p->p += neg ? 2 : 1;
            if ((rc = parse_math1(p, &b))) return rc;
            node *x = nnew(p, E_IN, line);
            if (!x) return NOMEM();
            x->op = neg; x->a = *out; x->b = b;
            *out = x;
        } else {
            return 0;
        }
    }
}

static int parse_not(P *p, node **out) {
    int line = cur(p)->line;
    if (accept_name(p, "not")) {
        if (++p->depth > JJ_MAX_DEPTH) return rt_fail(RT_ERANGE, "jinja: line %d: expression nested too deeply", line);
        node *a;
        int rc = parse_not(p, &a);
        if (rc) return rc;
        p->depth--;
        node *x = nnew(p, E_NOT, line);
        if (!x) return NOMEM();
        x->a = a;
        *out = x;
        return 0;
    }
    return parse_compare(p, out);
}

static int parse_and(P *p, node **out) {
    int rc = parse_not(p, out);
    while (!rc && is_name(p, "and")) {
        int line = cur(p)->line;
        p->p++;
        node *b;
        if ((rc = parse_not(p, &b))) return rc;
        node *x = nnew(p, E_AND, line);
        if (!x) return NOMEM();
        x->a = *out; x->b = b; *out = x;
    }
    return rc;
}

static int parse_or(P *p, node **out) {
    int rc = parse_and(p, out);
    while (!rc && is_name(p, "or")) {
        int line = cur(p)->line;
        p->p++;
        node *b;
        if ((rc = parse_and(p, &b))) return rc;
        node *x = nnew(p, E_OR, line);
        if (!x) return NOMEM();
        x->a = *out; x->b = b; *out = x;
    }
    return rc;
}

static int parse_expr(P *p, node **out) {
    if (++p->depth > JJ_MAX_DEPTH) return rt_fail(RT_ERANGE, "jinja: line %d: expression nested too deeply", cur(p)->line);
    int rc = parse_or(p, out);
    while (!rc && is_name(p, "if")) {
        int line = cur(p)->line;
        p->p++;
        node *c, *e = NULL;
        if ((rc = parse_or(p, &c))) return rc;
        if (accept_name(p, "else") && (rc = parse_or(p, &e))) return rc;
        node *x = nnew(p, E_COND, line);
        if (!x) return NOMEM();
        x->a = *out; x->b = c; x->c = e; *out = x;
    }
    p->depth--;
    return rc;
}

/* statements */
static int parse_body(P *p, node *parent, bool else_part, const char **stop, const char **found);

static int end_block(P *p) {
    if (cur(p)->kind == T_BLK_E) { p->p++; return 0; }
    return rt_fail(RT_EFORMAT, "jinja: line %d: expected '%%}', found %s", cur(p)->line, tok_desc(cur(p)));
}

static int parse_stmt(P *p, node **out) {
    tok *k = cur(p);
    int line = k->line, rc;
    if (k->kind != T_NAME) return rt_fail(RT_EFORMAT, "jinja: line %d: expected a statement name after '{%%'", line);
    const char *nm = k->s;
    if (!strcmp(nm, "if")) {
        p->p++;
        node *x = nnew(p, N_IF, line);
        if (!x) return NOMEM();
        if ((rc = parse_expr(p, &x->a)) || (rc = end_block(p))) return rc;
        node *at = x;
        for (;;) {
            static const char *stops[] = {"elif", "else", "endif", NULL};
            const char *f = NULL;
            if ((rc = parse_body(p, at, at != x && at->kind != N_IF ? true : false, stops, &f))) return rc;
            if (!f) return rt_fail(RT_EFORMAT, "jinja: line %d: {%% if %%} not closed by {%% endif %%}", line);
            if (!strcmp(f, "endif")) { if ((rc = end_block(p))) return rc; break; }
            if (!strcmp(f, "else")) {
                if ((rc = end_block(p))) return rc;
                static const char *stops2[] = {"endif", NULL};
                if ((rc = parse_body(p, at, true, stops2, &f))) return rc;
                if (!f) return rt_fail(RT_EFORMAT, "jinja: line %d: {%% if %%} not closed by {%% endif %%}", line);
                if ((rc = end_block(p))) return rc;
                break;
            }
            /* elif: a nested if as the sole else statement */
            node *y = nnew(p, N_IF, cur(p)->line);
            if (!y) return NOMEM();
            if ((rc = parse_expr(p, &y->a)) || (rc = end_block(p))) return rc;
            if ((rc = vpush(&at->w, &at->wn, &at->wcap, y))) return rc;
            at = y;
        }
        *out = x;
        return 0;
    }
    if (!strcmp(nm, "for")) {
        p->p++;
        node *x = nnew(p, N_FOR, line);
        if (!x) return NOMEM();
        if (cur(p)->kind != T_NAME) return rt_fail(RT_EFORMAT, "jinja: line %d: expected a loop variable", line);
        if (!(x->s = strdup(cur(p)->s))) return NOMEM();
        p->p++;
        if (accept_op(p, ",")) {
            if (cur(p)->kind != T_NAME) return rt_fail(RT_EFORMAT, "jinja: line %d: expected a second loop variable", line);
            if (!(x->s2 = strdup(cur(p)->s))) return NOMEM();
            p->p++;
            if (is_op(p, ",")) return rt_fail(RT_EUNSUPPORTED, "jinja: line %d: for loops over more than two variables are not supported", line);
        }
        if (!accept_name(p, "in")) return rt_fail(RT_EFORMAT, "jinja: line %d: expected 'in' in for loop", line);
        /* the iterable: no conditional expression (its 'if' filters the loop) */
        if ((rc = parse_or(p, &x->a))) return rc;
        if (accept_name(p, "if") && (rc = parse_or(p, &x->b))) return rc;
        if (is_name(p, "recursive")) return rt_fail(RT_EUNSUPPORTED, "jinja: line %d: recursive for loops are not supported", line);
        if ((rc = end_block(p))) return rc;
        static const char *stops[] = {"else", "endfor", NULL};
        const char *f = NULL;
        if ((rc = parse_body(p, x, false, stops, &f))) return rc;
        if (!f) return rt_fail(RT_EFORMAT, "jinja: line %d: {%% for %%} not closed by {%% endfor %%}", line);
        if ((rc = end_block(p))) return rc;
        if (!strcmp(f, "else")) {
            static const char *stops2[] = {"endfor", NULL};
            if ((rc = parse_body(p, x, true, stops2, &f))) return rc;
            if (!f) return rt_fail(RT_EFORMAT, "jinja: line %d: {%% for %%} not closed by {%% endfor %%}", line);
            if ((rc = end_block(p))) return rc;
        }
        *out = x;
        return 0;
    }
    if (!strcmp(nm, "set")) {
        p->p++;
        node *x = nnew(p, N_SET, line);
        if (!x) return NOMEM();
        if (cur(p)->kind != T_NAME) return rt_fail(RT_EFORMAT, "jinja: line %d: expected a name after 'set'", line);
        if (!(x->s = strdup(cur(p)->s))) return NOMEM();
        p->p++;
        if (accept_op(p, ".")) {
            if (cur(p)->kind != T_NAME) return rt_fail(RT_EFORMAT, "jinja: line %d: expected an attribute name", line);
            if (!(x->s2 = strdup(cur(p)->s))) return NOMEM();
            p->p++;
        }
        if (is_op(p, ",")) return rt_fail(RT_EUNSUPPORTED, "jinja: line %d: {%% set %%} of several names is not supported", line);
        if (cur(p)->kind == T_BLK_E) return rt_fail(RT_EUNSUPPORTED, "jinja: line %d: block {%% set %%}…{%% endset %%} is not supported", line);
        if ((rc = expect_op(p, "=")) || (rc = parse_expr(p, &x->a)) || (rc = end_block(p))) return rc;
        *out = x;
        return 0;
    }
    if (!strcmp(nm, "break") || !strcmp(nm, "continue")) {
        p->p++;
        node *x = nnew(p, nm[0] == 'b' ? N_BREAK : N_CONTINUE, line);
        if (!x) return NOMEM();
        if ((rc = end_block(p))) return rc;
        *out = x;
        return 0;
    }
    if (!strcmp(nm, "generation")) {
        /* transformers' assistant-mask marker: rendered as its body */
        p->p++;
        if ((rc = end_block(p))) return rc;
        node *x = nnew(p, N_IF, line);
        node *t = nnew(p, E_LIT, line);
        if (!x || !t) return NOMEM();
        t->lit = json_true();
        x->a = t;
        static const char *stops[] = {"endgeneration", NULL};
        const char *f = NULL;
        if ((rc = parse_body(p, x, false, stops, &f))) return rc;
        if (!f) return rt_fail(RT_EFORMAT, "jinja: line %d: {%% generation %%} not closed", line);
        if ((rc = end_block(p))) return rc;
        *out = x;
        return 0;
    }
    return rt_fail(RT_EUNSUPPORTED, "jinja: line %d: {%% %s %%} is not supported by retort's Jinja subset", line, nm);
}

/* Parses statements into parent->v (or ->w when else_part) until one of stop (a block tag whose
 * name is in stop; consumed up to the name, *found set) or EOF (*found NULL). */
static int parse_body(P *p, node *parent, bool else_part, const char **stop, const char **found) {
    int rc;
    *found = NULL;
    if (++p->depth > JJ_MAX_DEPTH) return rt_fail(RT_ERANGE, "jinja: line %d: blocks nested too deeply", cur(p)->line);
    for (;;) {
        tok *k = cur(p);
        node *x = NULL;
        if (k->kind == T_EOF) break;
        if (k->kind == T_TEXT) {
            if (!(x = nnew(p, N_TEXT, k->line))) return NOMEM();
            if (!(x->lit = json_stringn_nocheck(k->s, k->len))) return NOMEM();
            p->p++;
        } else if (k->kind == T_VAR_B) {
            p->p++;
            if (!(x = nnew(p, N_OUT, k->line))) return NOMEM();
            if ((rc = parse_expr(p, &x->a))) return rc;
            if (cur(p)->kind != T_VAR_E) return rt_fail(RT_EFORMAT, "jinja: line %d: expected '}}', found %s", cur(p)->line, tok_desc(cur(p)));
            p->p++;
        } else if (k->kind == T_BLK_B) {
            tok *nm = &p->t->v[p->p + 1];
            if (nm->kind == T_NAME && stop) {
                for (int i = 0; stop[i]; i++) {
                    if (!strcmp(nm->s, stop[i])) { *found = stop[i]; p->p += 2; p->depth--; return 0; }
                }
            }
            if (nm->kind == T_NAME && (!strcmp(nm->s, "endif") || !strcmp(nm->s, "endfor") || !strcmp(nm->s, "else") ||
                                        !strcmp(nm->s, "elif") || !strcmp(nm->s, "endgeneration")))
                return rt_fail(RT_EFORMAT, "jinja: line %d: unexpected {%% %s %%}", nm->line, nm->s);
            p->p++;
            if ((rc = parse_stmt(p, &x))) return rc;
        } else {
            return rt_fail(RT_EFORMAT, "jinja: line %d: unexpected %s", k->line, tok_desc(k));
        }
        if (else_part) rc = vpush(&parent->w, &parent->wn, &parent->wcap, x);
        else rc = vpush(&parent->v, &parent->n, &parent->cap, x);
        if (rc) return rc;
    }
    p->depth--;
    return 0;
}

void jj_free(jj_template *t) {
    if (!t) return;
    for (size_t i = 0; i < t->nall; i++) {
        node *x = t->all[i];
        free(x->s); free(x->s2); free(x->kw);
        json_decref(x->lit);
        free(x->v); free(x->w);
        free(x);
    }
    free(t->all);
    free(t);
}

int jj_parse(const char *src, size_t len, jj_template **out) {
    *out = NULL;
    toks t = {0};
    int rc = lex(src, len, &t);
    if (rc) { toks_free(&t); return rc; }
    jj_template *T = calloc(1, sizeof *T);
    if (!T) { toks_free(&t); return NOMEM(); }
    P p = {&t, 0, T, 0};
    if (!(T->root = nnew(&p, N_IF, 1))) { rc = NOMEM(); goto done; }
    const char *f = NULL;
    rc = parse_body(&p, T->root, false, NULL, &f);
done:
    toks_free(&t);
    if (rc) { jj_free(T); return rc; }
    *out = T;
    return 0;
}

/* ---------------------------------------------------------------- values */

typedef struct {
    char *b; size_t n, cap;
} sbuf;

static int sb_add(sbuf *s, const char *p, size_t n) {
    if (s->n + n + 1 > s->cap) {
        size_t c = s->cap ? s->cap : 256;
        while (c < s->n + n + 1) c *= 2;
        if (c > JJ_MAX_OUT) return rt_fail(RT_ERANGE, "jinja: output larger than %zu bytes", JJ_MAX_OUT);
        char *b = realloc(s->b, c);
        if (!b) return NOMEM();
        s->b = b; s->cap = c;
    }
    memcpy(s->b + s->n, p, n);
    s->n += n;
    s->b[s->n] = 0;
    return 0;
}
static int sb_str(sbuf *s, const char *p) { return sb_add(s, p, strlen(p)); }

typedef struct {
    sbuf out;
    json_t **sc; size_t nsc, capsc;
    int brk;   /* 1 break, 2 continue */
    int depth;
} R;

#define ERRL(code, line, ...) rt_fail(code, "jinja: line %d: " __VA_ARGS__)

static bool truthy(const json_t *v) {
    if (!v) return false;
    switch (json_typeof(v)) {
    case JSON_NULL: case JSON_FALSE: return false;
    case JSON_TRUE: return true;
    case JSON_INTEGER: return json_integer_value(v) != 0;
    case JSON_REAL: return json_real_value(v) != 0;
    case JSON_STRING: return json_string_length(v) > 0;
    case JSON_ARRAY: return json_array_size(v) > 0;
    case JSON_OBJECT: return json_object_size(v) > 0;
    }
    return false;
}

static bool is_num(const json_t *v) { return v && (json_is_number(v) || json_is_boolean(v)); }
static double numv(const json_t *v) {
    if (json_is_integer(v)) return (double)json_integer_value(v);
    if (json_is_real(v)) return json_real_value(v);
    return json_is_true(v) ? 1 : 0;
}
static bool is_intlike(const json_t *v) { return v && (json_is_integer(v) || json_is_boolean(v)); }
static long long intv(const json_t *v) { return json_is_integer(v) ? json_integer_value(v) : json_is_true(v) ? 1 : 0; }

static const char *type_name(const json_t *v) {
    if (!v) return "undefined";
    switch (json_typeof(v)) {
    case JSON_NULL: return "none";
    case JSON_TRUE: case JSON_FALSE: return "bool";
    case JSON_INTEGER: return "int";
    case JSON_REAL: return "float";
    case JSON_STRING: return "string";
    case JSON_ARRAY: return "list";
    case JSON_OBJECT: return "dict";
    }
    return "?";
}

static bool vequal(const json_t *a, const json_t *b) {
    if (!a || !b) return !a && !b;
    if (is_num(a) && is_num(b)) return numv(a) == numv(b);
    if (json_typeof(a) != json_typeof(b)) return false;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b)) return false;
        for (size_t i = 0; i < json_array_size(a); i++) if (!vequal(json_array_get(a, i), json_array_get(b, i))) return false;
        return true;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b)) return false;
        const char *k; json_t *x;
        json_object_foreach((json_t *)a, k, x) if (!vequal(x, json_object_get(b, k))) return false;
        return true;
    }
    return json_equal(a, b);
}

/* Python float repr */
static void py_float(double d, char *buf, size_t cap) {
    if (isnan(d)) { snprintf(buf, cap, "nan"); return; }
    if (isinf(d)) { snprintf(buf, cap, d < 0 ? "-inf" : "inf"); return; }
    char e[64];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec - 1, d);
        if (strtod(e, NULL) == d) break;
    }
    /* e = [-]d[.ddd]e[+-]XX */
    char digits[32]; size_t nd = 0;
    const char *q = e;
    bool neg = *q == '-';
    if (neg) q++;
    for (; *q && *q != 'e'; q++) if (*q >= '0' && *q <= '9') digits[nd++] = *q;
    int ex = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    size_t o = 0;
    if (neg) buf[o++] = '-';
    if (ex >= -5 + 1 && ex < 16) {
        if (ex < 0) {
            o += (size_t)snprintf(buf + o, cap - o, "0.");
            for (int i = 0; i < -ex - 1; i++) buf[o++] = '0';
            for (size_t i = 0; i < nd; i++) buf[o++] = digits[i];
        } else {
            for (int i = 0; i <= ex; i++) buf[o++] = (size_t)i < nd ? digits[i] : '0';
            buf[o++] = '.';
            if ((size_t)ex + 1 < nd) for (size_t i = (size_t)ex + 1; i < nd; i++) buf[o++] = digits[i];
            else buf[o++] = '0';
        }
        buf[o] = 0;
    } else {
        buf[o++] = digits[0];
        if (nd > 1) { buf[o++] = '.'; for (size_t i = 1; i < nd; i++) buf[o++] = digits[i]; }
        snprintf(buf + o, cap - o, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
}

static int py_repr(sbuf *s, const json_t *v);

static int py_str(sbuf *s, const json_t *v) {
    char num[64];
    if (!v) return 0;
    switch (json_typeof(v)) {
    case JSON_STRING: return sb_add(s, json_string_value(v), json_string_length(v));
    case JSON_NULL: return sb_str(s, "None");
    case JSON_TRUE: return sb_str(s, "True");
    case JSON_FALSE: return sb_str(s, "False");
    case JSON_INTEGER: snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); return sb_str(s, num);
    case JSON_REAL: py_float(json_real_value(v), num, sizeof num); return sb_str(s, num);
    default: return py_repr(s, v);
    }
}

static int py_repr(sbuf *s, const json_t *v) {
    int rc;
    if (v && json_is_string(v)) {
        const char *p = json_string_value(v);
        size_t n = json_string_length(v);
        char q = memchr(p, '\'', n) && !memchr(p, '"', n) ? '"' : '\'';
        if ((rc = sb_add(s, &q, 1))) return rc;
        for (size_t i = 0; i < n; i++) {
            char c = p[i], esc[8];
            if (c == q || c == '\\') { esc[0] = '\\'; esc[1] = c; rc = sb_add(s, esc, 2); }
            else if (c == '\n') rc = sb_str(s, "\\n");
            else if (c == '\r') rc = sb_str(s, "\\r");
            else if (c == '\t') rc = sb_str(s, "\\t");
            else if ((unsigned char)c < 0x20 || c == 0x7f) { snprintf(esc, sizeof esc, "\\x%02x", (unsigned char)c); rc = sb_str(s, esc); }
            else rc = sb_add(s, &c, 1);
            if (rc) return rc;
        }
        return sb_add(s, &q, 1);
    }
    if (v && json_is_array(v)) {
        if ((rc = sb_str(s, "["))) return rc;
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i && (rc = sb_str(s, ", "))) return rc;
            if ((rc = py_repr(s, json_array_get(v, i)))) return rc;
        }
        return sb_str(s, "]");
    }
    if (v && json_is_object(v)) {
        if ((rc = sb_str(s, "{"))) return rc;
        const char *k; json_t *x; bool first = true;
        json_object_foreach((json_t *)v, k, x) {
            if (!first && (rc = sb_str(s, ", "))) return rc;
            first = false;
            json_t *ks = json_string_nocheck(k);
            if (!ks) return NOMEM();
            rc = py_repr(s, ks);
            json_decref(ks);
            if (rc || (rc = sb_str(s, ": ")) || (rc = py_repr(s, x))) return rc;
        }
        return sb_str(s, "}");
    }
    return py_str(s, v);
}

/* json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=sort) */
static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static int tojson(sbuf *s, const json_t *v, int indent, bool sort, int level) {
    int rc;
    char num[64];
    if (!v) return rt_fail(RT_EINVAL, "jinja: tojson of an undefined value");
    switch (json_typeof(v)) {
    case JSON_NULL: return sb_str(s, "null");
    case JSON_TRUE: return sb_str(s, "true");
    case JSON_FALSE: return sb_str(s, "false");
    case JSON_INTEGER: snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); return sb_str(s, num);
    case JSON_REAL: {
        double d = json_real_value(v);
        if (isnan(d)) return sb_str(s, "NaN");
        if (isinf(d)) return sb_str(s, d < 0 ? "-Infinity" : "Infinity");
        py_float(d, num, sizeof num);
        return sb_str(s, num);
    }
    case JSON_STRING: {
        const char *p = json_string_value(v);
        size_t n = json_string_length(v);
        if ((rc = sb_str(s, "\""))) return rc;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)p[i];
            char esc[8];
            if (c == '"') rc = sb_str(s, "\\\"");
            else if (c == '\\') rc = sb_str(s, "\\\\");
            else if (c == '\n') rc = sb_str(s, "\\n");
            else if (c == '\r') rc = sb_str(s, "\\r");
            else if (c == '\t') rc = sb_str(s, "\\t");
            else if (c == '\b') rc = sb_str(s, "\\b");
            else if (c == '\f') rc = sb_str(s, "\\f");
            else if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); rc = sb_str(s, esc); }
            else rc = sb_add(s, (const char *)&c, 1);
            if (rc) return rc;
        }
        return sb_str(s, "\"");
    }
    case JSON_ARRAY: case JSON_OBJECT: {
        bool arr = json_is_array(v);
        size_t cnt = arr ? json_array_size(v) : json_object_size(v);
        if ((rc = sb_str(s, arr ? "[" : "{"))) return rc;
        if (!cnt) return sb_str(s, arr ? "]" : "}");
        const char **keys = NULL;
        if (!arr) {
            keys = malloc(cnt * sizeof *keys);
            if (!keys) return NOMEM();
            size_t i = 0; const char *k; json_t *x;
            json_object_foreach((json_t *)v, k, x) keys[i++] = k;
            if (sort) qsort(keys, cnt, sizeof *keys, cmp_str);
        }
        for (size_t i = 0; i < cnt && !rc; i++) {
            if (i) rc = sb_str(s, indent >= 0 ? "," : ", ");
            if (!rc && indent >= 0) {
                rc = sb_str(s, "\n");
                for (int k = 0; k < indent * (level + 1) && !rc; k++) rc = sb_str(s, " ");
            }
            if (rc) break;
            if (arr) rc = tojson(s, json_array_get(v, i), indent, sort, level + 1);
            else {
                json_t *ks = json_string_nocheck(keys[i]);
                if (!ks) { rc = NOMEM(); break; }
                rc = tojson(s, ks, indent, sort, level + 1);
                json_decref(ks);
                if (!rc) rc = sb_str(s, ": ");
                if (!rc) rc = tojson(s, json_object_get(v, keys[i]), indent, sort, level + 1);
            }
        }
        free(keys);
        if (rc) return rc;
        if (indent >= 0) {
            if ((rc = sb_str(s, "\n"))) return rc;
            for (int k = 0; k < indent * level; k++) if ((rc = sb_str(s, " "))) return rc;
        }
        return sb_str(s, arr ? "]" : "}");
    }
    }
    return 0;
}

/* UTF-8 code point helpers */
static size_t cp_len(const char *s, size_t n) {
    size_t l = rt_utf8_seqlen((const unsigned char *)s, n);
    return l ? l : 1;
}
static uint32_t cp_at(const char *s, size_t n, size_t *len) {
    *len = cp_len(s, n);
    size_t l = rt_utf8_seqlen((const unsigned char *)s, n);
    return l ? rt_utf8_decode((const unsigned char *)s, l) : (unsigned char)s[0];
}
static size_t cp_count(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i += cp_len(s + i, n - i)) c++;
    return c;
}
static bool py_space(uint32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}
static bool in_chars(uint32_t c, const char *chars, size_t cn) {
    for (size_t i = 0; i < cn;) {
        size_t l;
        if (cp_at(chars + i, cn - i, &l) == c) return true;
        i += l;
    }
    return false;
}

/* str.strip family: chars NULL = whitespace */
static json_t *py_strip(const char *s, size_t n, const char *chars, size_t cn, bool left, bool right) {
    size_t b = 0, e = n;
    if (left) {
        while (b < e) {
            size_t l;
            uint32_t c = cp_at(s + b, e - b, &l);
            if (chars ? !in_chars(c, chars, cn) : !py_space(c)) break;
            b += l;
        }
    }
    if (right) {
        while (e > b) {
            size_t k = e - 1;
            while (k > b && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
            size_t l;
            uint32_t c = cp_at(s + k, e - k, &l);
            if (k + l != e) { l = 1; k = e - 1; c = (unsigned char)s[k]; }
            if (chars ? !in_chars(c, chars, cn) : !py_space(c)) break;
            e = k;
        }
    }
    return json_stringn_nocheck(s + b, e - b);
}

static json_t *py_split(const char *s, size_t n, const char *sep, size_t sn, long long maxsplit) {
    json_t *out = json_array();
    if (!out) return NULL;
    if (!sep) {
        size_t i = 0;
        long long cnt = 0;
        for (;;) {
            while (i < n) { size_t l; if (!py_space(cp_at(s + i, n - i, &l))) break; i += l; }
            if (i >= n) break;
            size_t b = i;
            if (maxsplit >= 0 && cnt >= maxsplit) {
                /* rest, right-stripped */
                json_t *r = py_strip(s + b, n - b, NULL, 0, false, true);
                if (!r || json_array_append_new(out, r)) { json_decref(out); return NULL; }
                break;
            }
            while (i < n) { size_t l; if (py_space(cp_at(s + i, n - i, &l))) break; i += l; }
            if (json_array_append_new(out, json_stringn_nocheck(s + b, i - b))) { json_decref(out); return NULL; }
            cnt++;
        }
        return out;
    }
    size_t b = 0;
    long long cnt = 0;
    for (size_t i = 0; i + sn <= n;) {
        if ((maxsplit < 0 || cnt < maxsplit) && !memcmp(s + i, sep, sn)) {
            if (json_array_append_new(out, json_stringn_nocheck(s + b, i - b))) { json_decref(out); return NULL; }
            i += sn; b = i; cnt++;
        } else {
            i++;
        }
    }
    if (json_array_append_new(out, json_stringn_nocheck(s + b, n - b))) { json_decref(out); return NULL; }
    return out;
}

/* ---------------------------------------------------------------- evaluation */

static int ev(R *r, const node *e, json_t **out);
static int exec_body(R *r, node *const *v, size_t n);

static json_t *lookup(R *r, const char *name) {
    for (size_t i = r->nsc; i-- > 0;) {
        json_t *x = json_object_get(r->sc[i], name);
        if (x) return x;
    }
    return NULL;
}

static int push_scope(R *r) {
    if (r->nsc == r->capsc) {
        size_t c = r->capsc ? r->capsc * 2 : 16;
        json_t **v = realloc(r->sc, c * sizeof *v);
        if (!v) return NOMEM();
        r->sc = v; r->capsc = c;
    }
    if (!(r->sc[r->nsc] = json_object())) return NOMEM();
    r->nsc++;
    return 0;
}
static void pop_scope(R *r) { json_decref(r->sc[--r->nsc]); }

/* positional and keyword arguments of a call/filter/test, evaluated */
typedef struct {
    json_t *pos[8]; size_t np;
    const char *kn[8]; json_t *kv[8]; size_t nk;
    bool pos_def[8];
} args;

static void args_free(args *a) {
    for (size_t i = 0; i < a->np; i++) json_decref(a->pos[i]);
    for (size_t i = 0; i < a->nk; i++) json_decref(a->kv[i]);
}

static int eval_args(R *r, const node *call, args *a, int line) {
    memset(a, 0, sizeof *a);
    for (size_t i = 0; i < call->n; i++) {
        const node *x = call->v[i];
        json_t *v;
        int rc = ev(r, x, &v);
        if (rc) { args_free(a); return rc; }
        if (x->kw) {
            if (a->nk == 8) { json_decref(v); args_free(a); return ERRL(RT_EUNSUPPORTED, line, "more than 8 keyword arguments", line); }
            a->kn[a->nk] = x->kw; a->kv[a->nk++] = v;
        } else {
            if (a->np == 8) { json_decref(v); args_free(a); return ERRL(RT_EUNSUPPORTED, line, "more than 8 arguments", line); }
            a->pos_def[a->np] = v != NULL;
            a->pos[a->np++] = v;
        }
    }
    return 0;
}

static json_t *kwarg(const args *a, const char *name) {
    for (size_t i = 0; i < a->nk; i++) if (!strcmp(a->kn[i], name)) return a->kv[i];
    return NULL;
}

static json_t *to_string_value(const json_t *v) {
    sbuf s = {0};
    if (py_str(&s, v)) { free(s.b); return NULL; }
    json_t *o = json_stringn_nocheck(s.b ? s.b : "", s.n);
    free(s.b);
    return o;
}

/* a list to iterate: arrays as they are, dict keys, string characters; undefined = empty */
static int iter_list(const json_t *v, int line, json_t **out) {
    if (!v) { *out = json_array(); return *out ? 0 : NOMEM(); }
    if (json_is_array(v)) { *out = json_incref((json_t *)v); return 0; }
    if (json_is_object(v)) {
        json_t *l = json_array();
        if (!l) return NOMEM();
        const char *k; json_t *x;
        json_object_foreach((json_t *)v, k, x) if (json_array_append_new(l, json_string_nocheck(k))) { json_decref(l); return NOMEM(); }
        *out = l;
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        json_t *l = json_array();
        if (!l) return NOMEM();
        for (size_t i = 0; i < n;) {
            size_t cl = cp_len(s + i, n - i);
            if (json_array_append_new(l, json_stringn_nocheck(s + i, cl))) { json_decref(l); return NOMEM(); }
            i += cl;
        }
        *out = l;
        return 0;
    }
    return ERRL(RT_EINVAL, line, "%s is not iterable", line, type_name(v));
}

static int run_test(R *r, const char *name, const json_t *v, args *a, int line, bool *res);

static int apply_filter(R *r, const node *e, json_t *v, json_t **out) {
    const char *f = e->s;
    int line = e->line, rc;
    args a;
    if ((rc = eval_args(r, e, &a, line))) return rc;
    json_t *res = NULL;
    rc = 0;
    if (!strcmp(f, "trim")) {
        if (!v || !json_is_string(v)) { json_t *s = to_string_value(v); if (!s) { rc = NOMEM(); goto done; } res = py_strip(json_string_value(s), json_string_length(s), NULL, 0, true, true); json_decref(s); }
        else if (a.np && a.pos[0] && json_is_string(a.pos[0])) res = py_strip(json_string_value(v), json_string_length(v), json_string_value(a.pos[0]), json_string_length(a.pos[0]), true, true);
        else res = py_strip(json_string_value(v), json_string_length(v), NULL, 0, true, true);
    } else if (!strcmp(f, "length") || !strcmp(f, "count")) {
        if (!v) res = json_integer(0);
        else if (json_is_string(v)) res = json_integer((json_int_t)cp_count(json_string_value(v), json_string_length(v)));
        else if (json_is_array(v)) res = json_integer((json_int_t)json_array_size(v));
        else if (json_is_object(v)) res = json_integer((json_int_t)json_object_size(v));
        else { rc = ERRL(RT_EINVAL, line, "length of %s", line, type_name(v)); goto done; }
    } else if (!strcmp(f, "tojson")) {
        json_t *ind = kwarg(&a, "indent"), *sk = kwarg(&a, "sort_keys");
        if (!ind && a.np) ind = a.pos[0];
        sbuf s = {0};
        int indent = ind && json_is_integer(ind) ? (int)json_integer_value(ind) : -1;
        if (indent > 64) indent = 64;
        rc = tojson(&s, v, indent, sk && truthy(sk), 0);
        if (!rc) res = json_stringn_nocheck(s.b ? s.b : "", s.n);
        free(s.b);
        if (rc) { rc = rt_errorf(rc, "jinja: line %d", line); goto done; }
    } else if (!strcmp(f, "string")) {
        res = to_string_value(v);
    } else if (!strcmp(f, "lower") || !strcmp(f, "upper")) {
        res = to_string_value(v);
        if (res) {
            char *s = (char *)json_string_value(res);
            for (size_t i = 0; i < json_string_length(res); i++)
                if (f[0] == 'l' ? (s[i] >= 'A' && s[i] <= 'Z') : (s[i] >= 'a' && s[i] <= 'z')) s[i] ^= 0x20;
        }
    } else if (!strcmp(f, "items")) {
        if (!v) res = json_array();
        else if (!json_is_object(v)) { rc = ERRL(RT_EINVAL, line, "items of %s (a dict expected)", line, type_name(v)); goto done; }
        else {
            res = json_array();
            const char *k; json_t *x;
            if (res) json_object_foreach(v, k, x) json_array_append_new(res, json_pack("[sO]", k, x));
        }
    } else if (!strcmp(f, "join")) {
        json_t *l;
        if ((rc = iter_list(v, line, &l))) goto done;
        json_t *sep = a.np ? a.pos[0] : kwarg(&a, "d");
        sbuf s = {0};
        for (size_t i = 0; i < json_array_size(l) && !rc; i++) {
            if (i && sep) rc = py_str(&s, sep);
            if (!rc) rc = py_str(&s, json_array_get(l, i));
        }
        json_decref(l);
        if (!rc) res = json_stringn_nocheck(s.b ? s.b : "", s.n);
        free(s.b);
        if (rc) goto done;
    } else if (!strcmp(f, "first") || !strcmp(f, "last")) {
        json_t *l;
        if ((rc = iter_list(v, line, &l))) goto done;
        size_t n = json_array_size(l);
        res = n ? json_incref(json_array_get(l, f[0] == 'f' ? 0 : n - 1)) : NULL;
        json_decref(l);
        *out = res;
        args_free(&a);
        return 0;
    } else if (!strcmp(f, "list")) {
        if ((rc = iter_list(v, line, &res))) goto done;
        json_t *c = json_copy(res);
        json_decref(res);
        res = c;
    } else if (!strcmp(f, "default") || !strcmp(f, "d")) {
        bool boolean = (a.np > 1 && truthy(a.pos[1])) || truthy(kwarg(&a, "boolean"));
        if (!v || (boolean && !truthy(v))) res = a.np && a.pos[0] ? json_incref(a.pos[0]) : json_string("");
        else res = json_incref(v);
    } else if (!strcmp(f, "reject") || !strcmp(f, "select") || !strcmp(f, "rejectattr") || !strcmp(f, "selectattr")) {
        bool attr = strstr(f, "attr") != NULL, keep = f[0] == 's';
        json_t *l;
        if ((rc = iter_list(v, line, &l))) goto done;
        size_t skip = attr ? 1 : 0;
        if (attr && (!a.np || !a.pos[0] || !json_is_string(a.pos[0]))) { json_decref(l); rc = ERRL(RT_EINVAL, line, "%s needs an attribute name", line, f); goto done; }
        const char *test = a.np > skip && a.pos[skip] && json_is_string(a.pos[skip]) ? json_string_value(a.pos[skip]) : NULL;
        args ta = {0};
        for (size_t i = skip + 1; i < a.np; i++) { ta.pos[ta.np] = a.pos[i]; ta.pos_def[ta.np++] = a.pos_def[i]; }
        res = json_array();
        for (size_t i = 0; res && i < json_array_size(l); i++) {
            json_t *it = json_array_get(l, i), *sub = it;
            if (attr) sub = json_is_object(it) ? json_object_get(it, json_string_value(a.pos[0])) : NULL;
            bool t;
            if (test) { if ((rc = run_test(r, test, sub, &ta, line, &t))) break; }
            else t = truthy(sub);
            if (t == keep) json_array_append(res, it);
        }
        json_decref(l);
        if (rc) { json_decref(res); goto done; }
    } else if (!strcmp(f, "capitalize") || !strcmp(f, "title")) {
        res = to_string_value(v);
        if (res) {
            char *s = (char *)json_string_value(res);
            bool start = true;
            for (size_t i = 0; i < json_string_length(res); i++) {
                bool alpha = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z');
                if (alpha) {
                    if (start && s[i] >= 'a') s[i] ^= 0x20;
                    else if (!start && s[i] <= 'Z') s[i] ^= 0x20;
                }
                if (f[0] == 'c') start = false; else start = !alpha;
            }
        }
    } else if (!strcmp(f, "replace")) {
        if (a.np < 2 || !a.pos[0] || !a.pos[1] || !json_is_string(a.pos[0]) || !json_is_string(a.pos[1])) { rc = ERRL(RT_EINVAL, line, "replace needs two strings", line); goto done; }
        json_t *s = to_string_value(v);
        if (!s) { rc = NOMEM(); goto done; }
        json_t *parts = py_split(json_string_value(s), json_string_length(s), json_string_value(a.pos[0]), json_string_length(a.pos[0]), -1);
        json_decref(s);
        if (!json_string_length(a.pos[0])) { json_decref(parts); rc = ERRL(RT_EUNSUPPORTED, line, "replace of an empty string", line); goto done; }
        sbuf b = {0};
        for (size_t i = 0; parts && i < json_array_size(parts) && !rc; i++) {
            if (i) rc = py_str(&b, a.pos[1]);
            if (!rc) rc = py_str(&b, json_array_get(parts, i));
        }
        json_decref(parts);
        if (!rc) res = json_stringn_nocheck(b.b ? b.b : "", b.n);
        free(b.b);
        if (rc) goto done;
    } else if (!strcmp(f, "int")) {
        if (is_num(v)) res = json_integer((json_int_t)numv(v));
        else if (v && json_is_string(v)) res = json_integer(strtoll(json_string_value(v), NULL, 10));
        else res = json_integer(0);
    } else if (!strcmp(f, "float")) {
        if (is_num(v)) res = json_real(numv(v));
        else if (v && json_is_string(v)) res = json_real(strtod(json_string_value(v), NULL));
        else res = json_real(0);
    } else if (!strcmp(f, "abs")) {
        if (!is_num(v)) { rc = ERRL(RT_EINVAL, line, "abs of %s", line, type_name(v)); goto done; }
        res = is_intlike(v) ? json_integer(llabs(intv(v))) : json_real(fabs(numv(v)));
    } else if (!strcmp(f, "unique")) {
        json_t *l;
        if ((rc = iter_list(v, line, &l))) goto done;
        res = json_array();
        for (size_t i = 0; res && i < json_array_size(l); i++) {
            bool seen = false;
            for (size_t j = 0; j < json_array_size(res) && !seen; j++) seen = vequal(json_array_get(res, j), json_array_get(l, i));
            if (!seen) json_array_append(res, json_array_get(l, i));
        }
        json_decref(l);
    } else {
        args_free(&a);
        return ERRL(RT_EUNSUPPORTED, line, "filter '%s' is not supported by retort's Jinja subset", line, f);
    }
    if (!res) rc = NOMEM();
done:
    args_free(&a);
    if (rc) { json_decref(res); return rc; }
    *out = res;
    return 0;
}

static int run_test(R *r, const char *t, const json_t *v, args *a, int line, bool *res) {
    (void)r;
    const json_t *arg = a->np ? a->pos[0] : NULL;
    if (!strcmp(t, "defined")) *res = v != NULL;
    else if (!strcmp(t, "undefined")) *res = v == NULL;
    else if (!strcmp(t, "none")) *res = v && json_is_null(v);
    else if (!strcmp(t, "string")) *res = v && json_is_string(v);
    else if (!strcmp(t, "mapping")) *res = v && json_is_object(v);
    else if (!strcmp(t, "iterable")) *res = v && (json_is_array(v) || json_is_object(v) || json_is_string(v));
    else if (!strcmp(t, "sequence")) *res = v && (json_is_array(v) || json_is_object(v) || json_is_string(v));
    else if (!strcmp(t, "number")) *res = v && (json_is_number(v) || json_is_boolean(v));
    else if (!strcmp(t, "integer")) *res = v && json_is_integer(v);
    else if (!strcmp(t, "float")) *res = v && json_is_real(v);
    else if (!strcmp(t, "boolean")) *res = v && json_is_boolean(v);
    else if (!strcmp(t, "true")) *res = v && json_is_true(v);
    else if (!strcmp(t, "false")) *res = v && json_is_false(v);
    else if (!strcmp(t, "equalto") || !strcmp(t, "eq") || !strcmp(t, "==") || !strcmp(t, "sameas")) *res = vequal(v, arg);
    else if (!strcmp(t, "ne") || !strcmp(t, "!=")) *res = !vequal(v, arg);
    else if (!strcmp(t, "odd") || !strcmp(t, "even")) {
        if (!is_intlike(v)) return ERRL(RT_EINVAL, line, "test '%s' on %s", line, t, type_name(v));
        *res = (llabs(intv(v)) % 2 == 1) == (t[0] == 'o');
    } else if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        json_t *s = to_string_value(v);
        if (!s) return NOMEM();
        bool ok = true;
        for (const char *p = json_string_value(s); *p; p++)
            if (t[0] == 'l' ? (*p >= 'A' && *p <= 'Z') : (*p >= 'a' && *p <= 'z')) ok = false;
        json_decref(s);
        *res = ok;
    } else if (!strcmp(t, "in")) {
        if (!arg) return ERRL(RT_EINVAL, line, "test 'in' needs a container", line);
        if (json_is_string(arg)) *res = v && json_is_string(v) && strstr(json_string_value(arg), json_string_value(v)) != NULL;
        else if (json_is_object(arg)) *res = v && json_is_string(v) && json_object_get(arg, json_string_value(v));
        else if (json_is_array(arg)) { *res = false; for (size_t i = 0; i < json_array_size(arg); i++) if (vequal(json_array_get(arg, i), v)) *res = true; }
        else return ERRL(RT_EINVAL, line, "test 'in' on %s", line, type_name(arg));
    } else {
        return ERRL(RT_EUNSUPPORTED, line, "test '%s' is not supported by retort's Jinja subset", line, t);
    }
    return 0;
}

static int method_call(R *r, const node *call, const node *attr, json_t **out) {
    json_t *obj;
    int line = call->line, rc;
    const char *m = attr->s;
    if ((rc = ev(r, attr->a, &obj))) return rc;
    if (!obj) return ERRL(RT_EINVAL, line, "'%s' called on an undefined value", line, m);
    args a;
    if ((rc = eval_args(r, call, &a, line))) { json_decref(obj); return rc; }
    json_t *res = NULL;
    rc = 0;
    if (json_is_string(obj)) {
        const char *s = json_string_value(obj);
        size_t n = json_string_length(obj);
        json_t *a0 = a.np ? a.pos[0] : NULL;
        if (a0 && json_is_null(a0)) a0 = NULL;
        static const char *const known[] = {"strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper",
                                            "lower", "title", "capitalize", "replace", "find", NULL};
        bool ok = false;
        for (int k = 0; known[k]; k++) ok = ok || !strcmp(known[k], m);
        if (!ok) { rc = ERRL(RT_EUNSUPPORTED, line, "string method '%s' is not supported by retort's Jinja subset", line, m); goto done; }
        if (a0 && !json_is_string(a0) && strcmp(m, "split") && strcmp(m, "rsplit")) { rc = ERRL(RT_EINVAL, line, "%s() argument must be a string, not %s", line, m, type_name(a0)); goto done; }
        if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
            res = py_strip(s, n, a0 ? json_string_value(a0) : NULL, a0 ? json_string_length(a0) : 0, m[0] != 'r', m[0] != 'l');
        } else if (!strcmp(m, "split") || !strcmp(m, "rsplit")) {
            json_t *ms = a.np > 1 ? a.pos[1] : kwarg(&a, "maxsplit");
            if (!a0) a0 = kwarg(&a, "sep");
            if (a0 && json_is_null(a0)) a0 = NULL;
            if (a0 && !json_is_string(a0)) { rc = ERRL(RT_EINVAL, line, "split() separator must be a string", line); goto done; }
            if (a0 && !json_string_length(a0)) { rc = ERRL(RT_EINVAL, line, "split() with an empty separator", line); goto done; }
            long long maxs = ms && is_intlike(ms) ? intv(ms) : -1;
            if (m[0] == 'r' && maxs >= 0) { rc = ERRL(RT_EUNSUPPORTED, line, "rsplit with maxsplit", line); goto done; }
            res = py_split(s, n, a0 ? json_string_value(a0) : NULL, a0 ? json_string_length(a0) : 0, maxs);
        } else if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
            if (!a0) { rc = ERRL(RT_EINVAL, line, "%s() needs a string", line, m); goto done; }
            size_t pn = json_string_length(a0);
            const char *ps = json_string_value(a0);
            bool hit = pn <= n && !memcmp(m[0] == 's' ? s : s + n - pn, ps, pn);
            res = json_boolean(hit);
        } else if (!strcmp(m, "upper") || !strcmp(m, "lower") || !strcmp(m, "title") || !strcmp(m, "capitalize")) {
            node fake = *attr;
            fake.kind = E_FILTER; fake.n = 0; fake.v = NULL;
            rc = apply_filter(r, &fake, obj, &res);
            goto done;
        } else if (!strcmp(m, "replace")) {
            node fake = {0};
            fake.kind = E_FILTER; fake.s = "replace"; fake.line = line;
            fake.v = call->v; fake.n = call->n;
            rc = apply_filter(r, &fake, obj, &res);
            goto done;
        } else if (!strcmp(m, "find")) {
            if (!a0) { rc = ERRL(RT_EINVAL, line, "find() needs a string", line); goto done; }
            const char *hit = NULL;
            size_t pn = json_string_length(a0);
            for (size_t i = 0; i + pn <= n && !hit; i++) if (!memcmp(s + i, json_string_value(a0), pn)) hit = s + i;
            res = json_integer(hit ? (json_int_t)cp_count(s, (size_t)(hit - s)) : -1);
        } else {
            rc = ERRL(RT_EUNSUPPORTED, line, "string method '%s' is not supported by retort's Jinja subset", line, m);
            goto done;
        }
    } else if (json_is_object(obj)) {
        if (!strcmp(m, "get")) {
            if (!a.np || !a.pos[0] || !json_is_string(a.pos[0])) { rc = ERRL(RT_EINVAL, line, "get() needs a key", line); goto done; }
            json_t *x = json_object_get(obj, json_string_value(a.pos[0]));
            res = x ? json_incref(x) : a.np > 1 && a.pos[1] ? json_incref(a.pos[1]) : json_null();
        } else if (!strcmp(m, "items") || !strcmp(m, "keys") || !strcmp(m, "values")) {
            res = json_array();
            const char *k; json_t *x;
            if (res) json_object_foreach(obj, k, x) {
                json_array_append_new(res, m[0] == 'i' ? json_pack("[sO]", k, x) : m[0] == 'k' ? json_string_nocheck(k) : json_incref(x));
            }
        } else {
            rc = ERRL(RT_EUNSUPPORTED, line, "dict method '%s' is not supported by retort's Jinja subset", line, m);
            goto done;
        }
    } else {
        rc = ERRL(RT_EUNSUPPORTED, line, "method '%s' on %s is not supported by retort's Jinja subset", line, m, type_name(obj));
        goto done;
    }
    if (!res) rc = NOMEM();
done:
    args_free(&a);
    json_decref(obj);
    if (rc) { json_decref(res); return rc; }
    *out = res;
    return 0;
}

static int call_fn(R *r, const node *e, json_t **out) {
    const node *f = e->a;
    int line = e->line, rc;
    if (f->kind == E_ATTR) return method_call(r, e, f, out);
    if (f->kind != E_NAME) return ERRL(RT_EUNSUPPORTED, line, "calling an expression is not supported", line);
    const char *nm = f->s;
    args a;
    if (!strcmp(nm, "namespace") || !strcmp(nm, "dict")) {
        if ((rc = eval_args(r, e, &a, line))) return rc;
        json_t *ns = json_object();
        if (!ns) { args_free(&a); return NOMEM(); }
        if (a.np && a.pos[0] && json_is_object(a.pos[0])) json_object_update(ns, a.pos[0]);
        for (size_t i = 0; i < a.nk; i++) json_object_set(ns, a.kn[i], a.kv[i] ? a.kv[i] : json_null());
        args_free(&a);
        *out = ns;
        return 0;
    }
    if (!strcmp(nm, "raise_exception")) {
        if ((rc = eval_args(r, e, &a, line))) return rc;
        sbuf s = {0};
        if (a.np) py_str(&s, a.pos[0]);
        rc = rt_fail(RT_EINVAL, "chat template raised an exception at line %d: %s", line, s.b ? s.b : "");
        free(s.b);
        args_free(&a);
        return rc;
    }
    if (!strcmp(nm, "range")) {
        if ((rc = eval_args(r, e, &a, line))) return rc;
        long long lo = 0, hi = 0, st = 1;
        for (size_t i = 0; i < a.np; i++) if (!is_intlike(a.pos[i])) { args_free(&a); return ERRL(RT_EINVAL, line, "range() needs integers", line); }
        if (a.np == 1) hi = intv(a.pos[0]);
        else if (a.np >= 2) { lo = intv(a.pos[0]); hi = intv(a.pos[1]); if (a.np > 2) st = intv(a.pos[2]); }
        args_free(&a);
        if (!st) return ERRL(RT_EINVAL, line, "range() step must not be zero", line);
        json_t *l = json_array();
        if (!l) return NOMEM();
        for (long long i = lo; st > 0 ? i < hi : i > hi; i += st) {
            if (json_array_size(l) >= 100000) { json_decref(l); return ERRL(RT_ERANGE, line, "range() longer than 100000", line); }
            json_array_append_new(l, json_integer(i));
        }
        *out = l;
        return 0;
    }
    json_t *v = lookup(r, nm);
    if (v) return ERRL(RT_EINVAL, line, "'%s' is a %s, not a function", line, nm, type_name(v));
    return ERRL(RT_EUNSUPPORTED, line, "function '%s' is not supported by retort's Jinja subset", line, nm);
}

static int norm_index(long long i, size_t n, size_t *out) {
    if (i < 0) i += (long long)n;
    if (i < 0 || (size_t)i >= n) return -1;
    *out = (size_t)i;
    return 0;
}

static int do_slice(const json_t *obj, const json_t *lo, const json_t *hi, const json_t *st, int line, json_t **out) {
    for (const json_t *x = lo; x; x = NULL) if (!json_is_null(x) && !is_intlike(x)) return ERRL(RT_EINVAL, line, "slice indices must be integers", line);
    if ((hi && !json_is_null(hi) && !is_intlike(hi)) || (st && !json_is_null(st) && !is_intlike(st)))
        return ERRL(RT_EINVAL, line, "slice indices must be integers", line);
    long long step = st && !json_is_null(st) ? intv(st) : 1;
    if (!step) return ERRL(RT_EINVAL, line, "slice step cannot be zero", line);
    /* gather elements: array items or code points (offsets) */
    bool str = json_is_string(obj);
    if (!str && !json_is_array(obj)) return ERRL(RT_EINVAL, line, "cannot slice %s", line, type_name(obj));
    size_t n;
    size_t *offs = NULL;
    const char *s = NULL;
    size_t sn = 0;
    if (str) {
        s = json_string_value(obj); sn = json_string_length(obj);
        n = cp_count(s, sn);
        offs = malloc((n + 1) * sizeof *offs);
        if (!offs) return NOMEM();
        size_t k = 0;
        for (size_t i = 0; i < sn; i += cp_len(s + i, sn - i)) offs[k++] = i;
        offs[n] = sn;
    } else {
        n = json_array_size(obj);
    }
    long long N = (long long)n, a, b;
    bool ha = lo && !json_is_null(lo), hb = hi && !json_is_null(hi);
    if (step > 0) {
        a = ha ? intv(lo) : 0; b = hb ? intv(hi) : N;
        if (a < 0) { a += N; if (a < 0) a = 0; } else if (a > N) a = N;
        if (b < 0) { b += N; if (b < 0) b = 0; } else if (b > N) b = N;
    } else {
        a = ha ? intv(lo) : N - 1; b = hb ? intv(hi) : -1 - N;
        if (a < 0) { a += N; if (a < 0) a = -1; } else if (a >= N) a = N - 1;
        if (b < 0) { b += N; if (b < 0) b = -1; } else if (b >= N) b = N - 1;
    }
    json_t *res = str ? NULL : json_array();
    sbuf sb = {0};
    int rc = 0;
    for (long long i = a; step > 0 ? i < b : i > b; i += step) {
        if (str) rc = sb_add(&sb, s + offs[i], offs[i + 1] - offs[i]);
        else if (!res || json_array_append(res, json_array_get(obj, (size_t)i))) rc = NOMEM();
        if (rc) break;
    }
    free(offs);
    if (str) {
        if (!rc && !(res = json_stringn_nocheck(sb.b ? sb.b : "", sb.n))) rc = NOMEM();
        free(sb.b);
    }
    if (rc) { json_decref(res); return rc; }
    *out = res;
    return 0;
}

/* obj[key] / obj.attr: missing → undefined; undefined obj → error */
static int get_item(const json_t *obj, const json_t *key, const char *what, int line, json_t **out) {
    *out = NULL;
    if (!obj) return ERRL(RT_EINVAL, line, "%s of an undefined value", line, what);
    if (!key) return 0;
    if (json_is_object(obj)) {
        if (json_is_string(key)) { json_t *x = json_object_get(obj, json_string_value(key)); *out = x ? json_incref(x) : NULL; }
        return 0;
    }
    if (json_is_array(obj) && is_intlike(key)) {
        size_t i;
        if (!norm_index(intv(key), json_array_size(obj), &i)) *out = json_incref(json_array_get(obj, i));
        return 0;
    }
    if (json_is_string(obj) && is_intlike(key)) {
        const char *s = json_string_value(obj);
        size_t n = json_string_length(obj), cnt = cp_count(s, n), i;
        if (!norm_index(intv(key), cnt, &i)) {
            size_t off = 0;
            for (size_t k = 0; k < i; k++) off += cp_len(s + off, n - off);
            if (!(*out = json_stringn_nocheck(s + off, cp_len(s + off, n - off)))) return NOMEM();
        }
        return 0;
    }
    return 0;
}

static int binop(int op, json_t *a, json_t *b, int line, json_t **out) {
    static const char *names[] = {"", "+", "-", "*", "/", "//", "%", "**", "~"};
    *out = NULL;
    if (op == OP_CAT) {
        sbuf s = {0};
        int rc = py_str(&s, a);
        if (!rc) rc = py_str(&s, b);
        if (!rc && !(*out = json_stringn_nocheck(s.b ? s.b : "", s.n))) rc = NOMEM();
        free(s.b);
        return rc;
    }
    if (op >= OP_EQ) {
        if (op == OP_EQ || op == OP_NE) { bool e = vequal(a, b); *out = json_boolean(op == OP_EQ ? e : !e); return 0; }
        int c;
        if (is_num(a) && is_num(b)) { double x = numv(a), y = numv(b); c = x < y ? -1 : x > y ? 1 : 0; }
        else if (a && b && json_is_string(a) && json_is_string(b)) {
            size_t la = json_string_length(a), lb = json_string_length(b);
            c = memcmp(json_string_value(a), json_string_value(b), la < lb ? la : lb);
            if (!c) c = la < lb ? -1 : la > lb;
        } else return ERRL(RT_EINVAL, line, "cannot compare %s with %s", line, type_name(a), type_name(b));
        bool r = op == OP_LT ? c < 0 : op == OP_GT ? c > 0 : op == OP_LE ? c <= 0 : c >= 0;
        *out = json_boolean(r);
        return 0;
    }
    if (!a || !b) return ERRL(RT_EINVAL, line, "'%s' on an undefined value", line, names[op]);
    if (op == OP_ADD && json_is_string(a) && json_is_string(b)) {
        size_t la = json_string_length(a), lb = json_string_length(b);
        char *buf = malloc(la + lb + 1);
        if (!buf) return NOMEM();
        memcpy(buf, json_string_value(a), la);
        memcpy(buf + la, json_string_value(b), lb);
        *out = json_stringn_nocheck(buf, la + lb);
        free(buf);
        return *out ? 0 : NOMEM();
    }
    if (op == OP_ADD && json_is_array(a) && json_is_array(b)) {
        json_t *l = json_copy(a);
        if (!l || json_array_extend(l, b)) { json_decref(l); return NOMEM(); }
        *out = l;
        return 0;
    }
    if (op == OP_MUL && ((json_is_string(a) && is_intlike(b)) || (is_intlike(a) && json_is_string(b)))) {
        const json_t *s = json_is_string(a) ? a : b;
        long long k = intv(json_is_string(a) ? b : a);
        if (k < 0) k = 0;
        size_t n = json_string_length(s);
        if (n && (size_t)k > JJ_MAX_OUT / n) return ERRL(RT_ERANGE, line, "string repetition too large", line);
        sbuf sb = {0};
        int rc = 0;
        for (long long i = 0; i < k && !rc; i++) rc = sb_add(&sb, json_string_value(s), n);
        if (!rc && !(*out = json_stringn_nocheck(sb.b ? sb.b : "", sb.n))) rc = NOMEM();
        free(sb.b);
        return rc;
    }
    if (!is_num(a) || !is_num(b)) return ERRL(RT_EINVAL, line, "'%s' on %s and %s", line, names[op], type_name(a), type_name(b));
    bool ints = is_intlike(a) && is_intlike(b);
    if (ints && op != OP_DIV && op != OP_POW) {
        long long x = intv(a), y = intv(b), z = 0;
        if ((op == OP_FDIV || op == OP_MOD) && !y) return ERRL(RT_EINVAL, line, "division by zero", line);
        switch (op) {
        case OP_ADD: if (__builtin_add_overflow(x, y, &z)) return ERRL(RT_ERANGE, line, "integer overflow", line); break;
        case OP_SUB: if (__builtin_sub_overflow(x, y, &z)) return ERRL(RT_ERANGE, line, "integer overflow", line); break;
        case OP_MUL: if (__builtin_mul_overflow(x, y, &z)) return ERRL(RT_ERANGE, line, "integer overflow", line); break;
        case OP_FDIV: if (x == LLONG_MIN && y == -1) return ERRL(RT_ERANGE, line, "integer overflow", line);
            z = x / y; if ((x % y) && ((x < 0) != (y < 0))) z--; break;
        case OP_MOD: if (y == -1) { z = 0; break; } z = x % y; if (z && ((z < 0) != (y < 0))) z += y; break;
        }
        *out = json_integer(z);
        return *out ? 0 : NOMEM();
    }
    double x = numv(a), y = numv(b), z;
    switch (op) {
    case OP_ADD: z = x + y; break;
    case OP_SUB: z = x - y; break;
    case OP_MUL: z = x * y; break;
    case OP_DIV: if (!y) return ERRL(RT_EINVAL, line, "division by zero", line); z = x / y; break;
    case OP_FDIV: if (!y) return ERRL(RT_EINVAL, line, "division by zero", line); z = floor(x / y); break;
    case OP_MOD: if (!y) return ERRL(RT_EINVAL, line, "division by zero", line); z = fmod(x, y); if (z && ((z < 0) != (y < 0))) z += y; break;
    default:
        if (ints && intv(b) >= 0 && intv(b) < 64) {
            long long r = 1, base = intv(a);
            for (long long i = 0; i < intv(b); i++) if (__builtin_mul_overflow(r, base, &r)) return ERRL(RT_ERANGE, line, "integer overflow", line);
            *out = json_integer(r);
            return *out ? 0 : NOMEM();
        }
        z = pow(x, y);
    }
    *out = json_real(z);
    return *out ? 0 : NOMEM();
}

static int ev(R *r, const node *e, json_t **out) {
    int rc, line = e->line;
    json_t *a = NULL, *b = NULL;
    *out = NULL;
    if (++r->depth > JJ_MAX_DEPTH) return ERRL(RT_ERANGE, line, "evaluation nested too deeply", line);
    switch (e->kind) {
    case E_LIT: *out = json_incref(e->lit); rc = 0; break;
    case E_NAME: { json_t *v = lookup(r, e->s); *out = v ? json_incref(v) : NULL; rc = 0; break; }
    case E_ATTR:
        if ((rc = ev(r, e->a, &a))) break;
        if (!a) { rc = ERRL(RT_EINVAL, line, "'.%s' of an undefined value", line, e->s); break; }
        if (json_is_object(a)) { json_t *x = json_object_get(a, e->s); *out = x ? json_incref(x) : NULL; }
        break;
    case E_INDEX:
        if ((rc = ev(r, e->a, &a)) || (rc = ev(r, e->b, &b))) break;
        rc = get_item(a, b, "index", line, out);
        break;
    case E_SLICE: {
        json_t *lo = NULL, *hi = NULL, *st = NULL;
        if ((rc = ev(r, e->a, &a))) break;
        if (!a) { rc = ERRL(RT_EINVAL, line, "slice of an undefined value", line); break; }
        if ((!e->b || !(rc = ev(r, e->b, &lo))) && (!e->c || !(rc = ev(r, e->c, &hi))) && (!e->d || !(rc = ev(r, e->d, &st))))
            rc = do_slice(a, lo, hi, st, line, out);
        json_decref(lo); json_decref(hi); json_decref(st);
        break;
    }
    case E_CALL: rc = call_fn(r, e, out); break;
    case E_FILTER:
        if ((rc = ev(r, e->a, &a))) break;
        rc = apply_filter(r, e, a, out);
        break;
    case E_TEST: {
        if ((rc = ev(r, e->a, &a))) break;
        args ar;
        if ((rc = eval_args(r, e, &ar, line))) break;
        bool t;
        rc = run_test(r, e->s, a, &ar, line, &t);
        args_free(&ar);
        if (!rc) *out = json_boolean(e->op ? !t : t);
        break;
    }
    case E_BIN:
        if ((rc = ev(r, e->a, &a)) || (rc = ev(r, e->b, &b))) break;
        rc = binop(e->op, a, b, line, out);
        break;
    case E_NOT:
        if ((rc = ev(r, e->a, &a))) break;
        *out = json_boolean(!truthy(a));
        break;
    case E_NEG: case E_POS:
        if ((rc = ev(r, e->a, &a))) break;
        if (!is_num(a)) { rc = ERRL(RT_EINVAL, line, "unary '%c' on %s", line, e->kind == E_NEG ? '-' : '+', type_name(a)); break; }
        if (e->kind == E_POS) *out = json_is_boolean(a) ? json_integer(intv(a)) : json_incref(a);
        else if (is_intlike(a)) {
            if (intv(a) == LLONG_MIN) { rc = ERRL(RT_ERANGE, line, "integer overflow", line); break; }
            *out = json_integer(-intv(a));
        } else *out = json_real(-numv(a));
        break;
    case E_AND: case E_OR:
        if ((rc = ev(r, e->a, &a))) break;
        if (truthy(a) == (e->kind == E_OR)) { *out = a; a = NULL; }
        else rc = ev(r, e->b, out);
        break;
    case E_COND:
        if ((rc = ev(r, e->b, &a))) break;
        if (truthy(a)) rc = ev(r, e->a, out);
        else if (e->c) rc = ev(r, e->c, out);
        break;
    case E_LIST: {
        json_t *l = json_array();
        rc = l ? 0 : NOMEM();
        for (size_t i = 0; !rc && i < e->n; i++) {
            json_t *x;
            if ((rc = ev(r, e->v[i], &x))) break;
            if (!x) { rc = ERRL(RT_EUNSUPPORTED, line, "an undefined value inside a list literal", line); break; }
            if (json_array_append_new(l, x)) rc = NOMEM();
        }
        if (rc) json_decref(l); else *out = l;
        break;
    }
    case E_DICT: {
        json_t *d = json_object();
        rc = d ? 0 : NOMEM();
        for (size_t i = 0; !rc && i < e->n; i++) {
            json_t *k, *x;
            if ((rc = ev(r, e->v[i], &k))) break;
            if (!k || !json_is_string(k)) { json_decref(k); rc = ERRL(RT_EUNSUPPORTED, line, "dict keys other than strings", line); break; }
            if ((rc = ev(r, e->w[i], &x))) { json_decref(k); break; }
            if (json_object_set_new(d, json_string_value(k), x ? x : json_null())) rc = NOMEM();
            json_decref(k);
        }
        if (rc) json_decref(d); else *out = d;
        break;
    }
    case E_IN: {
        if ((rc = ev(r, e->a, &a)) || (rc = ev(r, e->b, &b))) break;
        args ar = {0};
        ar.pos[0] = b; ar.np = 1;
        bool t;
        if (!b) t = false;
        else if ((rc = run_test(r, "in", a, &ar, line, &t))) break;
        *out = json_boolean(e->op ? !t : t);
        break;
    }
    default:
        RT_ASSERT(false, "jinja: bad expression node %d", (int)e->kind);
        rc = ERRL(RT_EINTERNAL, line, "bad expression node %d", line, e->kind);   /* NDEBUG only */
    }
    json_decref(a);
    json_decref(b);
    r->depth--;
    if (rc) { json_decref(*out); *out = NULL; }
    return rc;
}

static int exec_node(R *r, const node *x) {
    int rc = 0, line = x->line;
    json_t *v = NULL;
    switch (x->kind) {
    case N_TEXT: return sb_add(&r->out, json_string_value(x->lit), json_string_length(x->lit));
    case N_OUT:
        if ((rc = ev(r, x->a, &v))) return rc;
        rc = py_str(&r->out, v);
        json_decref(v);
        return rc;
    case N_IF:
        if ((rc = ev(r, x->a, &v))) return rc;
        rc = truthy(v) ? exec_body(r, x->v, x->n) : exec_body(r, x->w, x->wn);
        json_decref(v);
        return rc;
    case N_SET: {
        if ((rc = ev(r, x->a, &v))) return rc;
        if (x->s2) {
            json_t *ns = lookup(r, x->s);
            if (!ns || !json_is_object(ns)) { json_decref(v); return ERRL(RT_EINVAL, line, "cannot set '%s.%s': '%s' is not a namespace", line, x->s, x->s2, x->s); }
            rc = json_object_set_new(ns, x->s2, v ? v : json_null()) ? NOMEM() : 0;
        } else if (v) {
            rc = json_object_set_new(r->sc[r->nsc - 1], x->s, v) ? NOMEM() : 0;
        } else {
            json_object_del(r->sc[r->nsc - 1], x->s);
            /* shadow an outer definition with "undefined": remove is enough only at top */
        }
        return rc;
    }
    case N_BREAK: r->brk = 1; return 0;
    case N_CONTINUE: r->brk = 2; return 0;
    case N_FOR: {
        json_t *it, *items;
        if ((rc = ev(r, x->a, &it))) return rc;
        rc = iter_list(it, line, &items);
        json_decref(it);
        if (rc) return rc;
        /* loop filter */
        if (x->b) {
            json_t *kept = json_array();
            if (!kept) { json_decref(items); return NOMEM(); }
            for (size_t i = 0; i < json_array_size(items) && !rc; i++) {
                json_t *item = json_array_get(items, i), *c = NULL;
                if ((rc = push_scope(r))) break;
                json_object_set(r->sc[r->nsc - 1], x->s, item);
                if (x->s2) {
                    if (!json_is_array(item) || json_array_size(item) != 2) { pop_scope(r); rc = ERRL(RT_EINVAL, line, "cannot unpack %s into two loop variables", line, type_name(item)); break; }
                    json_object_set(r->sc[r->nsc - 1], x->s, json_array_get(item, 0));
                    json_object_set(r->sc[r->nsc - 1], x->s2, json_array_get(item, 1));
                }
                rc = ev(r, x->b, &c);
                pop_scope(r);
                if (!rc && truthy(c)) json_array_append(kept, item);
                json_decref(c);
            }
            json_decref(items);
            if (rc) { json_decref(kept); return rc; }
            items = kept;
        }
        size_t n = json_array_size(items);
        for (size_t i = 0; i < n && !rc; i++) {
            json_t *item = json_array_get(items, i);
            if ((rc = push_scope(r))) break;
            json_t *sc = r->sc[r->nsc - 1];
            if (x->s2) {
                if (!json_is_array(item) || json_array_size(item) != 2) { pop_scope(r); rc = ERRL(RT_EINVAL, line, "cannot unpack %s into two loop variables", line, type_name(item)); break; }
                json_object_set(sc, x->s, json_array_get(item, 0));
                json_object_set(sc, x->s2, json_array_get(item, 1));
            } else {
                json_object_set(sc, x->s, item);
            }
            json_t *loop = json_pack("{sIsIsIsIsbsbsI}", "index", (json_int_t)i + 1, "index0", (json_int_t)i,
                                     "revindex", (json_int_t)(n - i), "revindex0", (json_int_t)(n - i - 1),
                                     "first", i == 0, "last", i + 1 == n, "length", (json_int_t)n);
            if (!loop) { pop_scope(r); rc = NOMEM(); break; }
            if (i > 0) json_object_set(loop, "previtem", json_array_get(items, i - 1));
            if (i + 1 < n) json_object_set(loop, "nextitem", json_array_get(items, i + 1));
            json_object_set_new(sc, "loop", loop);
            rc = exec_body(r, x->v, x->n);
            pop_scope(r);
            if (r->brk == 1) { r->brk = 0; break; }
            r->brk = 0;
        }
        json_decref(items);
        if (!rc && n == 0) rc = exec_body(r, x->w, x->wn);
        return rc;
    }
    }
    RT_ASSERT(false, "jinja: bad statement node %d", (int)x->kind);
    return ERRL(RT_EINTERNAL, line, "bad statement node %d", line, x->kind);   /* NDEBUG only */
}

static int exec_body(R *r, node *const *v, size_t n) {
    if (++r->depth > JJ_MAX_DEPTH) return rt_fail(RT_ERANGE, "jinja: blocks nested too deeply");
    for (size_t i = 0; i < n; i++) {
        int rc = exec_node(r, v[i]);
        if (rc) return rc;
        if (r->brk) break;
    }
    r->depth--;
    return 0;
}

int jj_render(const jj_template *t, const json_t *ctx, char **out, size_t *out_len) {
    *out = NULL;
    if (out_len) *out_len = 0;
    if (ctx && !json_is_object(ctx)) return rt_fail(RT_EINVAL, "jinja: render context must be an object");
    R r = {0};
    int rc = push_scope(&r);
    if (!rc && ctx) {
        json_t *c = json_deep_copy(ctx);   /* templates may not change the caller's values */
        if (!c || json_object_update(r.sc[0], c)) rc = NOMEM();
        json_decref(c);
    }
    if (!rc) rc = push_scope(&r);
    if (!rc) rc = exec_body(&r, t->root->v, t->root->n);
    if (!rc && !r.out.b) rc = sb_add(&r.out, "", 0);
    while (r.nsc) pop_scope(&r);
    free(r.sc);
    if (rc) { free(r.out.b); return rc; }
    *out = r.out.b;
    if (out_len) *out_len = r.out.n;
    return 0;
}

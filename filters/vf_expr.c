/* filters/vf_expr.c — parse canonical LaTeX into an expression tree (see vf_int.h).
 *
 * A recursive-descent parser over the characters:
 *
 *   top      := item ((',' | ';') item)*            several items → a set
 *   item     := rel ('\cup' rel)*                   unions
 *   rel      := sum (relop sum)*                    = < > \le \ge \ne \approx \in
 *   sum      := ['\pm'] term (('+' | '-' | '\pm' | '\mp') term)*
 *   term     := unary (('*' | '/' | implicit) unary)*
 *   unary    := ('-' | '+') unary | power
 *   power    := postfix ('^' arg)?
 *   postfix  := primary ('!' | '%' | '_' arg | '\'')*
 *   primary  := number [mixed \frac] | letter | group | (…) [a,b) … | \{…\} | |…| | \command …
 *
 * Macro arguments (\frac, \sqrt, ^) are read as TeX does: a {group} or one token, so
 * \frac12 and \sqrt3 parse as \frac{1}{2} and \sqrt{3}. Depth and node count are capped.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "filters/vf_int.h"

/* ---- arena --------------------------------------------------------------------------- */
#define ARENA_CHUNK 16384

typedef struct chunk { struct chunk *next; size_t used; _Alignas(16) unsigned char mem[ARENA_CHUNK]; } chunk;
struct vf_arena { chunk *head; int nodes; };

int vf_arena_new(vf_arena **out) {
    *out = calloc(1, sizeof **out);
    return *out ? 0 : rt_fail(RT_ENOMEM, "allocating a parse arena");
}

void vf_arena_free(vf_arena *a) {
    if (!a) return;
    for (chunk *c = a->head, *n; c; c = n) { n = c->next; free(c); }
    free(a);
}

static void *arena_alloc(vf_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n > ARENA_CHUNK) return NULL;
    if (!a->head || a->head->used + n > ARENA_CHUNK) {
        chunk *c = malloc(sizeof *c);
        if (!c) return NULL;
        c->next = a->head;
        c->used = 0;
        a->head = c;
    }
    void *p = a->head->mem + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

/* ---- parser state ----------------------------------------------------------------------- */
typedef struct {
    const char *s;
    size_t i;
    vf_arena *a;
    int depth;
    int err;   /* 0 or RT_E… */
} parser;

static vnode *fail(parser *p, int code, const char *what) {
    if (!p->err) {
        p->err = code;
        if (code == RT_ENOMEM) rt_fail(code, "out of memory parsing an answer");
        else rt_fail(code, "%s at column %zu", what, p->i + 1);
    }
    return NULL;
}

static vnode *node(parser *p, vn_kind k, int nkid) {
    if (++p->a->nodes > VF_MAX_NODES) return fail(p, RT_ERANGE, "expression too large");
    vnode *n = arena_alloc(p->a, sizeof *n);
    if (!n) return fail(p, RT_ENOMEM, "");
    n->kind = k;
    n->nkid = nkid;
    if (nkid) {
        n->kid = arena_alloc(p->a, sizeof(vnode *) * (size_t)nkid);
        if (!n->kid) return fail(p, RT_ENOMEM, "");
    }
    return n;
}

static vnode *node2(parser *p, vn_kind k, vnode *a, vnode *b) {
    vnode *n = node(p, k, b ? 2 : 1);
    if (!n) return NULL;
    n->kid[0] = a;
    if (b) n->kid[1] = b;
    return n;
}

static vnode *named(parser *p, vn_kind k, const char *name, size_t len) {
    vnode *n = node(p, k, 0);
    if (!n) return NULL;
    if (len >= VF_NAME_MAX) len = VF_NAME_MAX - 1;
    memcpy(n->name, name, len);
    n->name[len] = 0;
    return n;
}

static vnode *from_list(parser *p, vn_kind k, vnode **items, int n) {
    vnode *r = node(p, k, n);
    if (!r) return NULL;
    for (int j = 0; j < n; j++) r->kid[j] = items[j];
    return r;
}

static void skip(parser *p) {
    while (p->s[p->i] == ' ') p->i++;
}

static bool at_cmd(parser *p, const char *name) {
    size_t n = strlen(name);
    return p->s[p->i] == '\\' && !strncmp(p->s + p->i + 1, name, n) && !isalpha((unsigned char)p->s[p->i + 1 + n]);
}

static bool eat_cmd(parser *p, const char *name) {
    skip(p);
    if (!at_cmd(p, name)) return false;
    p->i += 1 + strlen(name);
    return true;
}

static bool eat(parser *p, char c) {
    skip(p);
    if (p->s[p->i] != c) return false;
    p->i++;
    return true;
}

static vnode *parse_item(parser *p);
static vnode *parse_sum(parser *p);
static vnode *parse_power(parser *p);
static vnode *parse_primary(parser *p);

/* ---- lists ----------------------------------------------------------------------------- */
/* Items separated by , or ; until one of the closers (a string of chars; "}" also accepts
 * "\}" when set_close). Returns the count; *closer gets the closing char. */
static int parse_list(parser *p, vnode **items, const char *closers, bool set_close, char *closer) {
    int n = 0;
    for (;;) {
        skip(p);
        char c = p->s[p->i];
        if (set_close && c == '\\' && p->s[p->i + 1] == '}') { p->i += 2; *closer = '}'; return n; }
        if (!set_close && c && strchr(closers, c)) { p->i++; *closer = c; return n; }
        if (!c) {
            if (!*closers) { *closer = 0; return n; }
            fail(p, RT_EFORMAT, "missing closing bracket");
            return -1;
        }
        if (n >= VF_MAX_ITEMS) { fail(p, RT_ERANGE, "too many items"); return -1; }
        vnode *it = parse_item(p);
        if (!it) return -1;
        items[n++] = it;
        skip(p);
        c = p->s[p->i];
        if (c == ',' || c == ';') { p->i++; continue; }
        if (set_close && c == '\\' && p->s[p->i + 1] == '}') continue;
        if (!set_close && c && strchr(closers, c)) continue;
        if (!c && !*closers) continue;
        fail(p, RT_EFORMAT, c ? "unexpected character" : "missing closing bracket");
        return -1;
    }
}

/* A bracket group after its opener: (…) [a,b) {…} */
static vnode *parse_bracket(parser *p, char open) {
    vnode **items = calloc(VF_MAX_ITEMS, sizeof *items);
    if (!items) return fail(p, RT_ENOMEM, "");
    char closer = 0;
    const char *closers = open == '{' ? "}" : ")]";
    int n = parse_list(p, items, closers, false, &closer);
    vnode *r = NULL;
    if (n < 0) goto done;
    if (n == 0) { fail(p, RT_EFORMAT, "empty brackets"); goto done; }
    if (open == '{') {
        r = n == 1 ? items[0] : from_list(p, VN_SET, items, n);
    } else if (n == 1 && ((open == '(' && closer == ')') || (open == '[' && closer == ']'))) {
        r = items[0];
    } else if (n == 2 && !(open == '(' && closer == ')')) {
        r = from_list(p, VN_INTERVAL, items, 2);
        if (r) { r->lopen = open == '('; r->ropen = closer == ')'; }
    } else {
        r = from_list(p, VN_TUPLE, items, n);
        if (r) r->paren = open == '(';
    }
done:
    free(items);
    return r;
}

/* ---- macro arguments ------------------------------------------------------------------------ */
/* A TeX argument: {group}, (group) for malformed input, or a single token. */
static vnode *parse_arg(parser *p) {
    skip(p);
    char c = p->s[p->i];
    if (c == '{' || c == '(') { p->i++; return parse_bracket(p, c); }
    if (isdigit((unsigned char)c)) {
        vnode *n = node(p, VN_NUM, 0);
        if (!n) return NULL;
        n->num = c - '0';
        n->den = 1;
        n->fval = c - '0';
        p->i++;
        return n;
    }
    if (c == '-') { p->i++; vnode *x = parse_arg(p); return x ? node2(p, VN_NEG, x, NULL) : NULL; }
    if (isalpha((unsigned char)c) || c == '\\') return parse_primary(p);
    return fail(p, RT_EFORMAT, "missing argument");
}

/* Raw text of a {group} (no parse), for \text and accents. */
static bool raw_group(parser *p, const char **b, size_t *len) {
    skip(p);
    if (p->s[p->i] != '{') {
        if (!p->s[p->i]) return false;
        *b = p->s + p->i;
        *len = 1;
        p->i++;
        return true;
    }
    int depth = 0;
    size_t start = p->i + 1;
    for (size_t j = p->i; p->s[j]; j++) {
        if (p->s[j] == '\\' && p->s[j + 1]) { j++; continue; }
        if (p->s[j] == '{') depth++;
        else if (p->s[j] == '}' && --depth == 0) {
            *b = p->s + start;
            *len = j - start;
            p->i = j + 1;
            return true;
        }
    }
    return false;
}

/* ---- numbers -------------------------------------------------------------------------------- */
static vnode *parse_number(parser *p) {
    const char *s = p->s + p->i;
    size_t j = 0, digits = 0, frac = 0;
    bool dot = false;
    int64_t v = 0;
    bool big = false;
    while (isdigit((unsigned char)s[j]) || (s[j] == '.' && !dot && isdigit((unsigned char)s[j + 1]))) {
        if (s[j] == '.') { dot = true; j++; continue; }
        if (v > (INT64_MAX - 9) / 10) big = true;
        else v = v * 10 + (s[j] - '0');
        digits++;
        if (dot) frac++;
        j++;
    }
    if (!digits) return fail(p, RT_EFORMAT, "bad number");
    vnode *n = node(p, VN_NUM, 0);
    if (!n) return NULL;
    char tmp[64];
    size_t m = j < sizeof tmp - 1 ? j : sizeof tmp - 1;
    memcpy(tmp, s, m);
    tmp[m] = 0;
    n->fval = strtod(tmp, NULL);
    if (j >= sizeof tmp - 1) n->fval = HUGE_VAL; /* more than 62 characters: treat as huge */
    n->is_float = dot;
    int64_t den = 1;
    for (size_t k = 0; k < frac && !big; k++) {
        if (den > INT64_MAX / 10) big = true;
        else den *= 10;
    }
    if (big) { n->den = 0; }
    else {
        int64_t a = v, b = den; /* reduce: 0.50 is 1/2 */
        while (b) { int64_t t = a % b; a = b; b = t; }
        n->num = a > 1 ? v / a : v;
        n->den = a > 1 ? den / a : den;
    }
    p->i += j;
    return n;
}

static bool is_int_num(const vnode *n) { return n && n->kind == VN_NUM && n->den == 1 && !n->is_float; }

/* "2\frac{1}{2}" — an integer directly followed by a fraction of integers is a mixed number. */
static vnode *maybe_mixed(parser *p, vnode *whole) {
    size_t save = p->i;
    skip(p);
    if (!at_cmd(p, "frac")) { p->i = save; return whole; }
    p->i += 5;
    vnode *a = parse_arg(p);
    vnode *b = a ? parse_arg(p) : NULL;
    if (p->err) return NULL;
    if (!is_int_num(a) || !is_int_num(b) || b->num == 0 || a->num >= b->num) { p->i = save; return whole; }
    vnode *fr = node2(p, VN_DIV, a, b);
    vnode *sum = fr ? node(p, VN_ADD, 2) : NULL;
    if (!sum) return NULL;
    sum->kid[0] = whole;
    sum->kid[1] = fr;
    return sum;
}

/* ---- commands ---------------------------------------------------------------------------------- */
static const char *const funcs[] = {"sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan",
                                    "sinh", "cosh", "tanh", "ln", "log", "exp", "det", "gcd", "lcm", "max",
                                    "min", "arg", NULL};
static const char *const accents[] = {"overline", "bar", "hat", "vec", "tilde", "widehat", "widetilde",
                                      "overrightarrow", "mathbb", "mathcal", "mathfrak", "mathscr", "dot",
                                      "ddot", "check", "acute", "grave", "breve", NULL};

static vnode *parse_text(parser *p) {
    const char *b;
    size_t len;
    if (!raw_group(p, &b, &len)) return fail(p, RT_EFORMAT, "unclosed \\text");
    while (len && *b == ' ') { b++; len--; }
    while (len && b[len - 1] == ' ') len--;
    bool letters = len > 0, any_alpha = false;
    for (size_t k = 0; k < len; k++) {
        if (isalpha((unsigned char)b[k])) any_alpha = true;
        else if (b[k] != ' ' && b[k] != '(' && b[k] != ')' && b[k] != '-' && b[k] != '\'' && b[k] != '.') letters = false;
    }
    if (len == 0) { /* \text{} is nothing: read the next primary instead */
        skip(p);
        if (!p->s[p->i]) return fail(p, RT_EFORMAT, "empty \\text");
        return parse_primary(p);
    }
    if (letters && any_alpha) {
        char name[VF_NAME_MAX];
        size_t o = 0;
        for (size_t k = 0; k < len && o + 1 < sizeof name; k++)
            if (isalpha((unsigned char)b[k])) name[o++] = (char)tolower((unsigned char)b[k]);
        if (o == 1) return named(p, VN_SYM, name, 1); /* \text{(A)}, \text{A} */
        return named(p, VN_TEXT, name, o);
    }
    /* \text{5}, \text{3 cm}: parse the content on its own */
    char *inner = strndup(b, len);
    if (!inner) return fail(p, RT_ENOMEM, "");
    parser q = {inner, 0, p->a, p->depth + 1, 0};
    vnode *r = parse_item(&q);
    skip(&q);
    if (r && q.s[q.i]) r = fail(&q, RT_EFORMAT, "unexpected text");
    free(inner);
    if (!r) return fail(p, q.err ? q.err : RT_EFORMAT, "bad \\text");
    return r;
}

static vnode *parse_matrix(parser *p, const char *env, size_t envlen) {
    /* \begin{array}{cc}: skip the column spec */
    if (envlen == 5 && !strncmp(env, "array", 5)) {
        const char *b;
        size_t len;
        if (!raw_group(p, &b, &len)) return fail(p, RT_EFORMAT, "bad array");
    }
    vnode *cells[VF_MAX_ITEMS];
    int n = 0, rows = 0, cols = -1, c = 0;
    for (;;) {
        skip(p);
        if (eat_cmd(p, "end")) {
            const char *b;
            size_t len;
            if (!raw_group(p, &b, &len)) return fail(p, RT_EFORMAT, "bad \\end");
            if (c > 0) {
                if (cols >= 0 && c != cols) return fail(p, RT_EFORMAT, "ragged matrix");
                cols = c;
                rows++;
            }
            break;
        }
        if (!p->s[p->i]) return fail(p, RT_EFORMAT, "missing \\end");
        if (n >= VF_MAX_ITEMS) return fail(p, RT_ERANGE, "matrix too large");
        vnode *x = parse_item(p);
        if (!x) return NULL;
        cells[n++] = x;
        c++;
        skip(p);
        if (p->s[p->i] == '&') { p->i++; continue; }
        if (p->s[p->i] == '\\' && p->s[p->i + 1] == '\\') {
            p->i += 2;
            if (cols >= 0 && c != cols) return fail(p, RT_EFORMAT, "ragged matrix");
            cols = c;
            rows++;
            c = 0;
            continue;
        }
        if (at_cmd(p, "end")) continue;
        return fail(p, RT_EFORMAT, "unexpected character in matrix");
    }
    if (rows == 0) return fail(p, RT_EFORMAT, "empty matrix");
    vnode *m = from_list(p, VN_MATRIX, cells, n);
    if (m) { m->rows = rows; m->cols = cols; }
    return m;
}

/* Function call: \sin x, \sin^2(x), \log_2 8, \ln(x). */
static vnode *parse_func(parser *p, const char *name) {
    vnode *power = NULL, *base = NULL;
    for (int k = 0; k < 2; k++) {
        skip(p);
        if (p->s[p->i] == '^' && !power) { p->i++; power = parse_arg(p); if (!power) return NULL; }
        else if (p->s[p->i] == '_' && !base) { p->i++; base = parse_arg(p); if (!base) return NULL; }
    }
    skip(p);
    vnode *arg;
    if (p->s[p->i] == '(' || p->s[p->i] == '{') { char o = p->s[p->i++]; arg = parse_bracket(p, o); }
    else arg = parse_power(p);
    if (!arg) return NULL;
    vnode *f;
    if (arg->kind == VN_TUPLE || arg->kind == VN_SET || arg->kind == VN_INTERVAL) { /* \gcd(a, b), \max(1,2) */
        f = node(p, VN_FUNC, arg->nkid);
        if (!f) return NULL;
        for (int j = 0; j < arg->nkid; j++) f->kid[j] = arg->kid[j];
    } else {
        f = node2(p, VN_FUNC, arg, base);
    }
    if (!f) return NULL;
    snprintf(f->name, sizeof f->name, "%s", name);
    if (power) {
        /* \sin^{-1} is arcsin */
        if (power->kind == VN_NEG && is_int_num(power->kid[0]) && power->kid[0]->num == 1 && strlen(name) == 3 &&
            strchr("sct", name[0])) {
            snprintf(f->name, sizeof f->name, "arc%s", name);
            return f;
        }
        return node2(p, VN_POW, f, power);
    }
    return f;
}

static vnode *parse_command(parser *p) {
    const char *s = p->s + p->i + 1;
    size_t len = 0;
    while (isalpha((unsigned char)s[len])) len++;
    if (!len) return fail(p, RT_EFORMAT, "unexpected symbol");
    char name[VF_NAME_MAX];
    snprintf(name, sizeof name, "%.*s", (int)(len < VF_NAME_MAX - 1 ? len : VF_NAME_MAX - 1), s);
    p->i += 1 + len;
    if (!strcmp(name, "frac")) {
        vnode *a = parse_arg(p);
        vnode *b = a ? parse_arg(p) : NULL;
        return b ? node2(p, VN_DIV, a, b) : NULL;
    }
    if (!strcmp(name, "binom") || !strcmp(name, "choose")) {
        vnode *a = parse_arg(p);
        vnode *b = a ? parse_arg(p) : NULL;
        vnode *f = b ? node2(p, VN_FUNC, a, b) : NULL;
        if (f) strcpy(f->name, "binom");
        return f;
    }
    if (!strcmp(name, "sqrt")) {
        vnode *idx = NULL;
        skip(p);
        if (p->s[p->i] == '[') {
            p->i++;
            char closer;
            vnode *items[VF_MAX_ITEMS];
            if (parse_list(p, items, "]", false, &closer) != 1) return fail(p, RT_EFORMAT, "bad root index");
            idx = items[0];
        }
        vnode *x = parse_arg(p);
        vnode *f = x ? node2(p, VN_FUNC, x, idx) : NULL;
        if (f) strcpy(f->name, idx ? "root" : "sqrt");
        return f;
    }
    if (!strcmp(name, "text")) return parse_text(p);
    if (!strcmp(name, "pi")) return named(p, VN_CONST, "pi", 2);
    if (!strcmp(name, "infty")) return named(p, VN_CONST, "inf", 3);
    if (!strcmp(name, "emptyset") || !strcmp(name, "varnothing")) return node(p, VN_SET, 0);
    if (!strcmp(name, "lfloor") || !strcmp(name, "lceil")) {
        bool fl = name[1] == 'f';
        vnode *x = parse_sum(p);
        if (!x) return NULL;
        if (!eat_cmd(p, fl ? "rfloor" : "rceil")) return fail(p, RT_EFORMAT, "unclosed floor/ceiling");
        vnode *f = node2(p, VN_FUNC, x, NULL);
        if (f) strcpy(f->name, fl ? "floor" : "ceil");
        return f;
    }
    if (!strcmp(name, "begin")) {
        const char *b;
        size_t l;
        if (!raw_group(p, &b, &l)) return fail(p, RT_EFORMAT, "bad \\begin");
        /* vmatrix / Vmatrix are determinants (a number for math-verify), not matrices */
        if (l >= 7 && (b[0] == 'v' || b[0] == 'V') && !strncmp(b + 1, "matrix", 6))
            return fail(p, RT_EUNSUPPORTED, "determinant (vmatrix)");
        if ((l >= 6 && b && memmem(b, l, "matrix", 6)) || (l == 5 && !strncmp(b, "array", 5))) return parse_matrix(p, b, l);
        return fail(p, RT_EUNSUPPORTED, "unsupported environment");
    }
    for (int k = 0; funcs[k]; k++)
        if (!strcmp(name, funcs[k])) return parse_func(p, name);
    for (int k = 0; accents[k]; k++) {
        if (strcmp(name, accents[k])) continue;
        const char *b;
        size_t l;
        if (!raw_group(p, &b, &l)) return fail(p, RT_EFORMAT, "missing argument");
        char nm[VF_NAME_MAX];
        int o = snprintf(nm, sizeof nm, "%s:", name);
        for (size_t j = 0; j < l && o + 1 < (int)sizeof nm; j++)
            if (b[j] != ' ') nm[o++] = b[j];
        nm[o < (int)sizeof nm ? o : (int)sizeof nm - 1] = 0;
        return named(p, VN_SYM, nm, strlen(nm));
    }
    for (int k = 0; funcs[k]; k++) { /* \cotx: \cot x */
        size_t fl = strlen(funcs[k]);
        if (fl < len && !strncmp(name, funcs[k], fl) && fl >= 2) {
            p->i -= len - fl;
            return parse_func(p, funcs[k]);
        }
    }
    static const char *const not_primary[] = {"cup", "cap", "end", "le", "ge", "ne", "approx", "in", "pm", "mp",
                                              "right", "rfloor", "rceil", "to", "implies", "Rightarrow", NULL};
    for (int k = 0; not_primary[k]; k++)
        if (!strcmp(name, not_primary[k])) { p->i -= 1 + len; return fail(p, RT_EFORMAT, "unexpected operator"); }
    return named(p, VN_SYM, name, strlen(name)); /* \alpha, \theta, … */
}

/* ---- primaries ----------------------------------------------------------------------------------- */
static vnode *parse_primary(parser *p) {
    if (++p->depth > VF_MAX_DEPTH) return fail(p, RT_ERANGE, "expression nested too deeply");
    skip(p);
    const char *s = p->s + p->i;
    char c = *s;
    vnode *r = NULL;
    if (isdigit((unsigned char)c) || (c == '.' && isdigit((unsigned char)s[1]))) {
        r = parse_number(p);
        if (r && is_int_num(r)) r = maybe_mixed(p, r);
    } else if (isalpha((unsigned char)c)) {
        if (!strncmp(s, "infty", 5)) { p->i += 5; r = named(p, VN_CONST, "inf", 3); }
        else if (!strncmp(s, "inf", 3) && !isalpha((unsigned char)s[3])) { p->i += 3; r = named(p, VN_CONST, "inf", 3); }
        else if (!strncmp(s, "sqrt", 4)) { p->i += 4; vnode *x = parse_arg(p); r = x ? node2(p, VN_FUNC, x, NULL) : NULL; if (r) strcpy(r->name, "sqrt"); }
        else {
            p->i++;
            if (c == 'e' || c == 'i') r = named(p, VN_CONST, s, 1);
            else r = named(p, VN_SYM, s, 1);
        }
    } else if (c == '(' || c == '[' || c == '{') {
        p->i++;
        r = parse_bracket(p, c);
    } else if (c == '\\' && s[1] == '{') {
        p->i += 2;
        vnode **items = calloc(VF_MAX_ITEMS, sizeof *items);
        if (!items) return fail(p, RT_ENOMEM, "");
        char closer;
        int n = parse_list(p, items, "", true, &closer);
        if (n >= 0) r = from_list(p, VN_SET, items, n);
        free(items);
    } else if (c == '|') {
        p->i++;
        vnode *x = parse_sum(p);
        if (x && !eat(p, '|')) return fail(p, RT_EFORMAT, "unclosed |");
        r = x ? node2(p, VN_FUNC, x, NULL) : NULL;
        if (r) strcpy(r->name, "abs");
    } else if (c == '\\') {
        r = parse_command(p);
    } else {
        r = fail(p, RT_EFORMAT, c ? "unexpected character" : "unexpected end");
    }
    p->depth--;
    return r;
}

static vnode *parse_postfix(parser *p) {
    vnode *x = parse_primary(p);
    while (x) {
        char c = p->s[p->i]; /* postfix operators attach without spaces, except % */
        if (c == ' ') { size_t j = p->i; while (p->s[j] == ' ') j++; if (p->s[j] == '%') p->i = j, c = '%'; }
        if (c == '!' && p->s[p->i + 1] != '=') { p->i++; x = node2(p, VN_FACT, x, NULL); }
        else if (c == '%') { p->i++; x = node2(p, VN_PCT, x, NULL); }
        else if (c == '\'') { p->i++; if (x->kind == VN_SYM && strlen(x->name) + 1 < VF_NAME_MAX) strcat(x->name, "'"); }
        else if (c == '_') {
            p->i++;
            const char *b;
            size_t l;
            if (!raw_group(p, &b, &l)) return fail(p, RT_EFORMAT, "bad subscript");
            if (x->kind == VN_SYM || x->kind == VN_CONST) { /* x_1, a_{n} */
                size_t o = strlen(x->name);
                if (o + 1 < VF_NAME_MAX) x->name[o++] = '_';
                for (size_t j = 0; j < l && o + 1 < VF_NAME_MAX; j++)
                    if (b[j] != ' ') x->name[o++] = b[j];
                x->name[o] = 0;
                x->kind = VN_SYM;
            } /* 52_8: a base subscript on a number is dropped */
        } else break;
    }
    return x;
}

static vnode *parse_power(parser *p) {
    vnode *b = parse_postfix(p);
    if (!b) return NULL;
    skip(p);
    if (p->s[p->i] == '^') {
        p->i++;
        vnode *e = parse_arg(p);
        if (!e) return NULL;
        b = node2(p, VN_POW, b, e);
        while (b && (p->s[p->i] == '!' && p->s[p->i + 1] != '=')) { p->i++; b = node2(p, VN_FACT, b, NULL); }
    }
    return b;
}

static vnode *parse_unary(parser *p) {
    if (++p->depth > VF_MAX_DEPTH) return fail(p, RT_ERANGE, "expression nested too deeply");
    skip(p);
    vnode *r;
    if (p->s[p->i] == '-') { p->i++; vnode *x = parse_unary(p); r = x ? node2(p, VN_NEG, x, NULL) : NULL; }
    else if (p->s[p->i] == '+') { p->i++; r = parse_unary(p); }
    else r = parse_power(p);
    p->depth--;
    return r;
}

/* Can a factor start here (implicit multiplication)? */
static bool starts_factor(parser *p, const vnode *prev) {
    skip(p);
    const char *s = p->s + p->i;
    char c = *s;
    if (isalpha((unsigned char)c) || c == '(' || c == '{') return true;
    if (c == '\\' && s[1] == '{') return true;
    if (isdigit((unsigned char)c) || c == '.') return prev->kind != VN_NUM && prev->kind != VN_POW;
    if (c == '\\' && isalpha((unsigned char)s[1])) {
        static const char *const stop[] = {"cup", "cap", "end", "le", "ge", "ne", "approx", "in", "pm", "mp", "right",
                                           "rfloor", "rceil", "to", "implies", "Rightarrow", "quad", NULL};
        for (int k = 0; stop[k]; k++)
            if (at_cmd(p, stop[k])) return false;
        return true;
    }
    return false;
}

static vnode *parse_term(parser *p) {
    vnode *x = parse_unary(p);
    while (x) {
        skip(p);
        char c = p->s[p->i];
        if (c == '*') {
            p->i++;
            vnode *y = parse_unary(p);
            x = y ? node2(p, VN_MUL, x, y) : NULL;
        } else if (c == '/') {
            p->i++;
            vnode *y = parse_unary(p);
            x = y ? node2(p, VN_DIV, x, y) : NULL;
        } else if (starts_factor(p, x)) {
            vnode *y = parse_power(p);
            x = y ? node2(p, VN_MUL, x, y) : NULL;
        } else break;
    }
    return x;
}

/* a ± b is the set {a + b, a - b}; a leading ± b is {b, -b}. */
static vnode *plus_minus(parser *p, vnode *a, vnode *b) {
    vnode *nb = node2(p, VN_NEG, b, NULL);
    vnode *set = nb ? node(p, VN_SET, 2) : NULL;
    if (!set) return NULL;
    set->kid[0] = a ? node2(p, VN_ADD, a, b) : b;
    set->kid[1] = a ? node2(p, VN_ADD, a, nb) : nb;
    return set->kid[0] && set->kid[1] ? set : NULL;
}

static vnode *parse_sum(parser *p) {
    if (++p->depth > VF_MAX_DEPTH) return fail(p, RT_ERANGE, "expression nested too deeply");
    vnode *x;
    skip(p);
    if (eat_cmd(p, "pm") || eat_cmd(p, "mp")) {
        vnode *y = parse_term(p);
        x = y ? plus_minus(p, NULL, y) : NULL;
    } else {
        x = parse_term(p);
    }
    while (x) {
        skip(p);
        char c = p->s[p->i];
        if (c == '+') {
            p->i++;
            vnode *y = parse_term(p);
            x = y ? node2(p, VN_ADD, x, y) : NULL;
        } else if (c == '-') {
            p->i++;
            vnode *y = parse_term(p);
            vnode *ny = y ? node2(p, VN_NEG, y, NULL) : NULL;
            x = ny ? node2(p, VN_ADD, x, ny) : NULL;
        } else if (eat_cmd(p, "pm") || eat_cmd(p, "mp")) {
            vnode *y = parse_term(p);
            x = y ? plus_minus(p, x, y) : NULL;
        } else break;
    }
    p->depth--;
    return x;
}

static bool eat_relop(parser *p, vr_op *op) {
    skip(p);
    const char *s = p->s + p->i;
    struct { const char *t; vr_op op; } ops[] = {
        {"<=", VR_LE}, {">=", VR_GE}, {"!=", VR_NE}, {"=", VR_EQ}, {"<", VR_LT}, {">", VR_GT},
    };
    for (size_t k = 0; k < sizeof ops / sizeof *ops; k++)
        if (!strncmp(s, ops[k].t, strlen(ops[k].t))) { p->i += strlen(ops[k].t); *op = ops[k].op; return true; }
    struct { const char *c; vr_op op; } cmds[] = {
        {"le", VR_LE}, {"ge", VR_GE}, {"ne", VR_NE}, {"approx", VR_APPROX}, {"in", VR_IN}, {"equiv", VR_EQ},
    };
    for (size_t k = 0; k < sizeof cmds / sizeof *cmds; k++)
        if (eat_cmd(p, cmds[k].c)) { *op = cmds[k].op; return true; }
    return false;
}

static vnode *parse_rel(parser *p) {
    vnode *first = parse_sum(p);
    if (!first) return NULL;
    vnode *items[VF_MAX_ITEMS];
    vr_op ops[VF_MAX_ITEMS];
    int n = 1;
    items[0] = first;
    vr_op op;
    while (n < VF_MAX_ITEMS && eat_relop(p, &op)) {
        vnode *y = parse_sum(p);
        if (!y) return NULL;
        ops[n - 1] = op;
        items[n++] = y;
    }
    if (n == 1) return first;
    vnode *r = from_list(p, VN_REL, items, n);
    if (!r) return NULL;
    r->ops = arena_alloc(p->a, sizeof(vr_op) * (size_t)(n - 1));
    if (!r->ops) return fail(p, RT_ENOMEM, "");
    memcpy(r->ops, ops, sizeof(vr_op) * (size_t)(n - 1));
    return r;
}

static vnode *parse_item(parser *p) {
    if (++p->depth > VF_MAX_DEPTH) return fail(p, RT_ERANGE, "expression nested too deeply");
    vnode *x = parse_rel(p);
    if (x && (skip(p), at_cmd(p, "cup"))) {
        vnode *items[VF_MAX_ITEMS];
        int n = 0;
        items[n++] = x;
        while (x && n < VF_MAX_ITEMS && eat_cmd(p, "cup")) {
            x = parse_rel(p);
            if (x) items[n++] = x;
        }
        x = x ? from_list(p, VN_UNION, items, n) : NULL;
    }
    p->depth--;
    return x;
}

/* ---- matrix arithmetic ---------------------------------------------------------------------------- */
/* Matrix expressions written out (2M, -M, M + N, M N, M / 2) become one matrix of element
 * expressions, so that they compare with a matrix answer as math-verify's sympy does.
 * Anything else (shapes that do not fit, a matrix beside a set) is left as it is. */
static bool is_scalar(const vnode *n) {
    return n->kind != VN_MATRIX && n->kind != VN_TUPLE && n->kind != VN_SET && n->kind != VN_INTERVAL &&
           n->kind != VN_UNION && n->kind != VN_REL;
}

static vnode *mat_like(parser *p, const vnode *m) {
    vnode *r = node(p, VN_MATRIX, m->nkid);
    if (r) { r->rows = m->rows; r->cols = m->cols; }
    return r;
}

/* a * b for a scalar and a matrix (either order), or two matrices that fit; NULL: no fold */
static vnode *mat_mul(parser *p, vnode *a, vnode *b) {
    if (a->kind == VN_MATRIX && b->kind == VN_MATRIX) {
        if (a->cols != b->rows) return NULL;
        vnode *r = node(p, VN_MATRIX, a->rows * b->cols);
        if (!r) return NULL;
        r->rows = a->rows;
        r->cols = b->cols;
        for (int i = 0; i < a->rows; i++)
            for (int j = 0; j < b->cols; j++) {
                vnode *sum = node(p, VN_ADD, a->cols);
                if (!sum) return NULL;
                for (int k = 0; k < a->cols; k++)
                    if (!(sum->kid[k] = node2(p, VN_MUL, a->kid[i * a->cols + k], b->kid[k * b->cols + j]))) return NULL;
                r->kid[i * b->cols + j] = sum;
            }
        return r;
    }
    vnode *m = a->kind == VN_MATRIX ? a : b->kind == VN_MATRIX ? b : NULL;
    if (!m || !is_scalar(m == a ? b : a)) return NULL;
    vnode *r = mat_like(p, m);
    for (int k = 0; r && k < m->nkid; k++)
        if (!(r->kid[k] = m == a ? node2(p, VN_MUL, a->kid[k], b) : node2(p, VN_MUL, a, b->kid[k]))) return NULL;
    return r;
}

static vnode *fold_matrices(parser *p, vnode *n, int depth) {
    if (!n || p->err || depth > 4 * VF_MAX_DEPTH) return n;
    for (int k = 0; k < n->nkid; k++) n->kid[k] = fold_matrices(p, n->kid[k], depth + 1);
    if (p->err) return n;
    vnode *r = NULL;
    if (n->kind == VN_NEG && n->kid[0]->kind == VN_MATRIX) {
        vnode *m = n->kid[0];
        r = mat_like(p, m);
        for (int k = 0; r && k < m->nkid; k++)
            if (!(r->kid[k] = node2(p, VN_NEG, m->kid[k], NULL))) r = NULL;
    } else if (n->kind == VN_DIV && n->kid[0]->kind == VN_MATRIX && is_scalar(n->kid[1])) {
        vnode *m = n->kid[0];
        r = mat_like(p, m);
        for (int k = 0; r && k < m->nkid; k++)
            if (!(r->kid[k] = node2(p, VN_DIV, m->kid[k], n->kid[1]))) r = NULL;
    } else if (n->kind == VN_ADD && n->nkid > 1) {
        const vnode *m0 = n->kid[0];
        bool all = true;
        for (int k = 0; k < n->nkid; k++)
            all = all && n->kid[k]->kind == VN_MATRIX && n->kid[k]->rows == m0->rows && n->kid[k]->cols == m0->cols;
        if (all) {
            r = mat_like(p, m0);
            for (int e = 0; r && e < m0->nkid; e++) {
                vnode *sum = node(p, VN_ADD, n->nkid);
                if (!sum) { r = NULL; break; }
                for (int k = 0; k < n->nkid; k++) sum->kid[k] = n->kid[k]->kid[e];
                r->kid[e] = sum;
            }
        }
    } else if (n->kind == VN_MUL && n->nkid > 1) {
        bool any = false;
        for (int k = 0; k < n->nkid; k++) any = any || n->kid[k]->kind == VN_MATRIX;
        if (any) {
            r = n->kid[0];
            for (int k = 1; r && k < n->nkid; k++) {
                vnode *b = n->kid[k];
                if (r->kind != VN_MATRIX && b->kind != VN_MATRIX) r = node2(p, VN_MUL, r, b);
                else r = mat_mul(p, r, b);
            }
        }
    }
    return r && !p->err ? r : n;
}

int vf_parse(vf_arena *a, const char *s, vnode **out) {
    *out = NULL;
    if (strlen(s) > VF_MAX_ANSWER) return rt_fail(RT_ERANGE, "answer longer than %d bytes", VF_MAX_ANSWER);
    parser p = {s, 0, a, 0, 0};
    vnode **items = calloc(VF_MAX_ITEMS, sizeof *items);
    if (!items) return rt_fail(RT_ENOMEM, "parsing an answer");
    char closer;
    int n = parse_list(&p, items, "", false, &closer);
    vnode *r = NULL;
    if (n == 0 && !p.err) fail(&p, RT_EFORMAT, "empty answer");
    else if (n == 1) r = items[0];
    else if (n > 1) r = from_list(&p, VN_SET, items, n);
    free(items);
    if (!p.err) r = fold_matrices(&p, r, 0);
    if (p.err) return p.err;
    *out = r;
    return 0;
}

/* ---- printing -------------------------------------------------------------------------------------- */
void vf_node_str(const vnode *n, vf_buf *b) {
    static const char *const kind[] = {"num", "sym", "const", "text", "add", "mul", "neg", "div", "pow", "func",
                                       "fact", "pct", "tuple", "set", "interval", "union", "matrix", "rel"};
    static const char *const rel[] = {"=", "!=", "<", "<=", ">", ">=", "~", "in"};
    char tmp[96];
    if (!n) { vf_buf_puts(b, "_"); return; }
    switch (n->kind) {
    case VN_NUM:
        if (n->den == 1) snprintf(tmp, sizeof tmp, "%lld%s", (long long)n->num, n->is_float ? "." : "");
        else if (n->den) snprintf(tmp, sizeof tmp, "%lld/%lld%s", (long long)n->num, (long long)n->den, n->is_float ? "." : "");
        else snprintf(tmp, sizeof tmp, "%.17g", n->fval);
        vf_buf_puts(b, tmp);
        return;
    case VN_SYM: case VN_CONST: case VN_TEXT:
        vf_buf_puts(b, n->kind == VN_TEXT ? "'" : "");
        vf_buf_puts(b, n->name);
        vf_buf_puts(b, n->kind == VN_TEXT ? "'" : "");
        return;
    default: break;
    }
    vf_buf_putc(b, '(');
    vf_buf_puts(b, n->kind == VN_FUNC ? n->name : kind[n->kind]);
    if (n->kind == VN_INTERVAL) vf_buf_puts(b, n->lopen ? " open" : " closed"), vf_buf_puts(b, n->ropen ? "-open" : "-closed");
    if (n->kind == VN_MATRIX) { snprintf(tmp, sizeof tmp, " %dx%d", n->rows, n->cols); vf_buf_puts(b, tmp); }
    for (int k = 0; k < n->nkid; k++) {
        vf_buf_putc(b, ' ');
        if (k && n->kind == VN_REL) { vf_buf_puts(b, rel[n->ops[k - 1]]); vf_buf_putc(b, ' '); }
        vf_node_str(n->kid[k], b);
    }
    vf_buf_putc(b, ')');
}

/* filters/vf_compare.c — are two answer trees the same answer? (see vf_int.h)
 *
 * The rules follow math-verify's grader, in this order:
 *   1. relations: a gold assignment (x = 5) against a plain pred compares its right side;
 *      a pred equation against a plain gold compares the pred's last right side;
 *      a gold inequality against a pred interval becomes an interval;
 *   2. identical trees are equal;
 *   3. relations: same operator and lhs - rhs equal, or the flipped operator and
 *      lhs - rhs equal to rhs' - lhs', or (equations) lhs - rhs proportional;
 *   4. sets, tuples, intervals, unions: intervals by ends and openness, sets by mutual
 *      containment (duplicates collapse),
 *      tuples in order; a lone value is a one-element set;
 *   5. symbols and words: by name (case-insensitive beyond one letter), a word against a
 *      product of letters by their concatenation ("Evelyn" written without \text);
 *   6. matrices element by element;
 *   7. numbers: percentages (28% is 28 against an integer, 0.28 otherwise); a float on
 *      either side: both rounded to float_digits significant digits, or to float_digits
 *      places after the point (math-verify's rule; the only one with decimal_places);
 *      two exact rationals: exactly;
 *      anything else: evaluated at random points (symbols get the same random value on
 *      both sides), equal within a relative 1e-9 at every point.
 * Work is bounded by the product of the tree sizes; nothing allocates.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "filters/vf_int.h"
#include "core/hash.h"

#define N_POINTS 4
#define REL_TOL 1e-9

typedef struct {
    const vf_cmp_opts *o;
    int point;
} ectx;

/* ---- exact rationals ------------------------------------------------------------------------- */
typedef struct { int64_t n, d; } rat; /* d > 0, reduced */

static int64_t gcd64(int64_t a, int64_t b) {
    if (a < 0) a = -a;
    if (b < 0) b = -b;
    while (b) { int64_t t = a % b; a = b; b = t; }
    return a;
}

static bool rat_make(__int128 n, __int128 d, rat *out) {
    if (d == 0) return false;
    if (d < 0) { n = -n; d = -d; }
    __int128 a = n < 0 ? -n : n, b = d;
    while (b) { __int128 t = a % b; a = b; b = t; }
    if (a > 1) { n /= a; d /= a; }
    if (n > INT64_MAX || n < -INT64_MAX || d > INT64_MAX) return false;
    out->n = (int64_t)n;
    out->d = (int64_t)d;
    return true;
}

static bool exact(const vnode *x, rat *r, int depth) {
    if (!x || depth > 2 * VF_MAX_DEPTH + VF_MAX_NODES) return false;
    rat a, b;
    switch (x->kind) {
    case VN_NUM:
        if (x->den <= 0) return false;
        return rat_make(x->num, x->den, r);
    case VN_NEG:
        if (!exact(x->kid[0], &a, depth + 1)) return false;
        r->n = -a.n;
        r->d = a.d;
        return true;
    case VN_ADD:
    case VN_MUL:
        if (!exact(x->kid[0], &a, depth + 1)) return false;
        for (int k = 1; k < x->nkid; k++) {
            if (!exact(x->kid[k], &b, depth + 1)) return false;
            bool ok = x->kind == VN_ADD ? rat_make((__int128)a.n * b.d + (__int128)b.n * a.d, (__int128)a.d * b.d, &a)
                                        : rat_make((__int128)a.n * b.n, (__int128)a.d * b.d, &a);
            if (!ok) return false;
        }
        *r = a;
        return true;
    case VN_DIV:
        if (!exact(x->kid[0], &a, depth + 1) || !exact(x->kid[1], &b, depth + 1) || b.n == 0) return false;
        return rat_make((__int128)a.n * b.d, (__int128)a.d * b.n, r);
    case VN_POW: {
        if (!exact(x->kid[0], &a, depth + 1) || !exact(x->kid[1], &b, depth + 1) || b.d != 1) return false;
        int64_t e = b.n;
        if (e > 64 || e < -64) return false;
        if (e < 0) {
            if (a.n == 0) return false;
            a = (rat){a.n < 0 ? -a.d : a.d, a.n < 0 ? -a.n : a.n};
            e = -e;
        }
        rat acc = {1, 1};
        for (int64_t k = 0; k < e; k++)
            if (!rat_make((__int128)acc.n * a.n, (__int128)acc.d * a.d, &acc)) return false;
        *r = acc;
        return true;
    }
    default:
        return false;
    }
}

/* ---- numeric evaluation ------------------------------------------------------------------------ */
static double sym_value(const char *name, const ectx *c) {
    uint64_t h = 1469598103934665603ULL ^ c->o->seed;
    for (const char *s = name; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    h = rt_fmix64(h + 0x9e3779b97f4a7c15ULL * (uint64_t)(c->point + 1));
    return 0.35 + 1.7 * (double)(h >> 11) / 9007199254740992.0; /* (0.35, 2.05) */
}

static double complex fact_c(double complex x) {
    if (fabs(cimag(x)) > 0) return NAN;
    double v = creal(x);
    if (v < 0 && v == floor(v)) return NAN;
    return tgamma(v + 1);
}

static double complex eval(const vnode *x, const ectx *c, int depth);

static double complex eval_func(const vnode *x, const ectx *c, int depth) {
    const char *f = x->name;
    double complex a = x->nkid > 0 ? eval(x->kid[0], c, depth + 1) : NAN;
    double complex b = x->nkid > 1 && x->kid[1] ? eval(x->kid[1], c, depth + 1) : NAN;
    if (!strcmp(f, "sqrt")) return csqrt(a);
    if (!strcmp(f, "root")) return cpow(a, 1.0 / b);
    if (!strcmp(f, "sin")) return csin(a);
    if (!strcmp(f, "cos")) return ccos(a);
    if (!strcmp(f, "tan")) return ctan(a);
    if (!strcmp(f, "sec")) return 1.0 / ccos(a);
    if (!strcmp(f, "csc")) return 1.0 / csin(a);
    if (!strcmp(f, "cot")) return ccos(a) / csin(a);
    if (!strcmp(f, "arcsin")) return casin(a);
    if (!strcmp(f, "arccos")) return cacos(a);
    if (!strcmp(f, "arctan")) return catan(a);
    if (!strcmp(f, "sinh")) return csinh(a);
    if (!strcmp(f, "cosh")) return ccosh(a);
    if (!strcmp(f, "tanh")) return ctanh(a);
    if (!strcmp(f, "exp")) return cexp(a);
    if (!strcmp(f, "ln")) return clog(a);
    if (!strcmp(f, "log")) return x->nkid > 1 && x->kid[1] ? clog(a) / clog(b) : clog(a);
    if (!strcmp(f, "abs")) return cabs(a);
    if (!strcmp(f, "floor")) return cimag(a) == 0 ? floor(creal(a)) : NAN;
    if (!strcmp(f, "ceil")) return cimag(a) == 0 ? ceil(creal(a)) : NAN;
    if (!strcmp(f, "binom")) return fact_c(a) / (fact_c(b) * fact_c(a - b));
    if (!strcmp(f, "max") || !strcmp(f, "min")) {
        double best = NAN;
        for (int k = 0; k < x->nkid; k++) {
            double complex v = eval(x->kid[k], c, depth + 1);
            if (cimag(v) != 0) return NAN;
            if (k == 0 || (f[1] == 'a' ? creal(v) > best : creal(v) < best)) best = creal(v);
        }
        return best;
    }
    if (!strcmp(f, "gcd") || !strcmp(f, "lcm")) {
        int64_t acc = 0;
        for (int k = 0; k < x->nkid; k++) {
            double complex v = eval(x->kid[k], c, depth + 1);
            double r = creal(v);
            if (cimag(v) != 0 || r != floor(r) || fabs(r) > 1e15) return NAN;
            int64_t iv = (int64_t)fabs(r);
            if (k == 0) acc = iv;
            else if (f[0] == 'g') acc = gcd64(acc, iv);
            else { int64_t g = gcd64(acc, iv); acc = g ? acc / g * iv : 0; }
        }
        return (double)acc;
    }
    return NAN;
}

static double complex eval(const vnode *x, const ectx *c, int depth) {
    if (!x || depth > 2 * VF_MAX_DEPTH + VF_MAX_NODES) return NAN;
    switch (x->kind) {
    case VN_NUM: return x->den > 0 ? (double)x->num / (double)x->den : x->fval;
    case VN_SYM: return sym_value(x->name, c);
    case VN_TEXT: return NAN;
    case VN_CONST:
        if (!strcmp(x->name, "pi")) return M_PI;
        if (!strcmp(x->name, "e")) return M_E;
        if (!strcmp(x->name, "i")) return I;
        return INFINITY;
    case VN_ADD: case VN_MUL: {
        double complex acc = eval(x->kid[0], c, depth + 1);
        for (int k = 1; k < x->nkid; k++) {
            double complex v = eval(x->kid[k], c, depth + 1);
            acc = x->kind == VN_ADD ? acc + v : acc * v;
        }
        return acc;
    }
    case VN_NEG: return -eval(x->kid[0], c, depth + 1);
    case VN_DIV: {
        double complex d = eval(x->kid[1], c, depth + 1);
        if (d == 0) return NAN;
        return eval(x->kid[0], c, depth + 1) / d;
    }
    case VN_POW: {
        double complex b = eval(x->kid[0], c, depth + 1), e = eval(x->kid[1], c, depth + 1);
        if (cimag(b) == 0 && cimag(e) == 0 && (creal(b) > 0 || creal(e) == floor(creal(e))))
            return pow(creal(b), creal(e));
        if (b == 0) return creal(e) > 0 ? 0 : NAN;
        return cpow(b, e);
    }
    case VN_FUNC: return eval_func(x, c, depth);
    case VN_FACT: return fact_c(eval(x->kid[0], c, depth + 1));
    case VN_PCT: return eval(x->kid[0], c, depth + 1) / 100.0;
    default: return NAN;
    }
}

static bool finite_c(double complex v) { return isfinite(creal(v)) && isfinite(cimag(v)); }

static bool close_c(double complex a, double complex b) {
    if (isnan(creal(a)) || isnan(cimag(a)) || isnan(creal(b)) || isnan(cimag(b))) return false;
    if (!finite_c(a) || !finite_c(b)) return a == b;
    double scale = fmax(1.0, fmax(cabs(a), cabs(b)));
    return cabs(a - b) <= REL_TOL * scale;
}

/* a - b and c - d (or a-b against -(c-d) when flip) agree at every point; ratio: any
 * constant ratio (sign: >0 needs positive, <0 negative, 0 any). */
static bool diff_agree(const vnode *a, const vnode *b, const vnode *cn, const vnode *d, int mode, const vf_cmp_opts *o) {
    /* mode: 0 equal, 1 negated, 2 proportional any sign, 3 proportional > 0, 4 proportional < 0 */
    double complex ratio = 0;
    int used = 0;
    for (int pt = 0; pt < N_POINTS; pt++) {
        ectx c = {o, pt};
        double complex u = eval(a, &c, 0) - (b ? eval(b, &c, 0) : 0);
        double complex v = eval(cn, &c, 0) - (d ? eval(d, &c, 0) : 0);
        if (!finite_c(u) || !finite_c(v)) return false;
        if (mode == 0 && !close_c(u, v)) return false;
        if (mode == 1 && !close_c(u, -v)) return false;
        if (mode >= 2) {
            if (cabs(v) < 1e-12 || cabs(u) < 1e-12) {
                if (!(cabs(u) < 1e-12 && cabs(v) < 1e-12)) return false;
                continue;
            }
            double complex r = u / v;
            if (used++ == 0) ratio = r;
            else if (!close_c(r, ratio)) return false;
        }
    }
    if (mode == 3 && !(used && cimag(ratio) == 0 && creal(ratio) > 0)) return false;
    if (mode == 4 && !(used && cimag(ratio) == 0 && creal(ratio) < 0)) return false;
    if (mode == 2 && !used) return false;
    return true;
}

/* ---- structure ---------------------------------------------------------------------------------- */
static bool same_tree(const vnode *a, const vnode *b) {
    if (!a || !b) return a == b;
    if (a->kind != b->kind || a->nkid != b->nkid) return false;
    switch (a->kind) {
    case VN_NUM:
        if (a->is_float != b->is_float) return false;
        if (a->den > 0 && b->den > 0) return a->num == b->num && a->den == b->den;
        return a->fval == b->fval;
    case VN_SYM: case VN_CONST: case VN_TEXT: case VN_FUNC:
        if (strcmp(a->name, b->name)) return false;
        break;
    case VN_INTERVAL: if (a->lopen != b->lopen || a->ropen != b->ropen) return false; break;
    case VN_MATRIX: if (a->rows != b->rows || a->cols != b->cols) return false; break;
    case VN_REL:
        for (int k = 0; k + 1 < a->nkid; k++)
            if (a->ops[k] != b->ops[k]) return false;
        break;
    default: break;
    }
    for (int k = 0; k < a->nkid; k++)
        if (!same_tree(a->kid[k], b->kid[k])) return false;
    return true;
}

static bool is_set_like(const vnode *x) {
    return x->kind == VN_SET || x->kind == VN_TUPLE || x->kind == VN_INTERVAL || x->kind == VN_UNION;
}

/* A sympy Set: finite sets, intervals ((a, b) parses as an open interval), unions. */
static bool is_sympy_set(const vnode *x) {
    return x->kind == VN_SET || x->kind == VN_INTERVAL || x->kind == VN_UNION ||
           (x->kind == VN_TUPLE && x->paren && x->nkid == 2);
}

static bool only_symbols(const vnode *x) {
    if (x->kind == VN_SYM || x->kind == VN_TEXT) return true;
    if (x->kind == VN_MUL) {
        for (int k = 0; k < x->nkid; k++)
            if (!only_symbols(x->kid[k])) return false;
        return true;
    }
    return false;
}

static bool is_rel(const vnode *x) { return x->kind == VN_REL; }

static bool is_equation(const vnode *x) {
    if (x->kind != VN_REL) return false;
    for (int k = 0; k + 1 < x->nkid; k++)
        if (x->ops[k] != VR_EQ && x->ops[k] != VR_IN) return false;
    return true;
}

static bool is_assignment(const vnode *x) { return is_equation(x) && only_symbols(x->kid[0]); }

static bool eq_rec(const vnode *g, const vnode *p, const vf_cmp_opts *o, int depth);

/* ---- numbers --------------------------------------------------------------------------------------- */
static bool is_float_atom(const vnode *x) {
    if (x->kind == VN_PCT) x = x->kid[0];
    if (x->kind == VN_NEG) x = x->kid[0];
    return x->kind == VN_NUM && (x->is_float || x->den <= 0);
}

static bool is_num_atom(const vnode *x) {
    if (x->kind == VN_PCT) x = x->kid[0];
    if (x->kind == VN_NEG) x = x->kid[0];
    return x->kind == VN_NUM;
}

static bool round_eq(double a, double b, const vf_cmp_opts *o) {
    if (!isfinite(a) || !isfinite(b)) return a == b;
    char sa[512], sb[512];
    int d = o->float_digits > 0 ? o->float_digits : 6;
    if (d > 30) d = 30;
    if (o->decimal_places) {
        snprintf(sa, sizeof sa, "%.*f", d, a);
        snprintf(sb, sizeof sb, "%.*f", d, b);
    } else {
        snprintf(sa, sizeof sa, "%.*e", d - 1, a);
        snprintf(sb, sizeof sb, "%.*e", d - 1, b);
    }
    if (!strcmp(sa, "-0.000000")) sa[0] = ' ';
    if (!strcmp(sb, "-0.000000")) sb[0] = ' ';
    return !strcmp(sa, sb);
}

static bool numeric_eq(const vnode *g, const vnode *p, const vf_cmp_opts *o) {
    const vnode *gi = g->kind == VN_PCT ? g->kid[0] : g, *pi = p->kind == VN_PCT ? p->kid[0] : p;
    bool pct = g->kind == VN_PCT || p->kind == VN_PCT;
    rat a, b;
    if (pct && exact(gi, &a, 0) && exact(pi, &b, 0) && a.d == 1 && b.d == 1 && !is_float_atom(gi) && !is_float_atom(pi))
        return a.n == b.n; /* 28% against 28 */
    if (is_float_atom(g) || is_float_atom(p)) {
        ectx c = {o, 0};
        double complex u = eval(g, &c, 0), v = eval(p, &c, 0);
        if (!finite_c(u) || !finite_c(v)) return close_c(u, v);
        if (round_eq(creal(u), creal(v), o) && round_eq(cimag(u), cimag(v), o)) return true;
        if (o->decimal_places) return false;
        /* significant digits, or — for small values — the same places after the point */
        vf_cmp_opts dp = *o;
        dp.decimal_places = true;
        return round_eq(creal(u), creal(v), &dp) && round_eq(cimag(u), cimag(v), &dp);
    }
    if (exact(g, &a, 0) && exact(p, &b, 0)) return a.n == b.n && a.d == b.d;
    (void)is_num_atom;
    return diff_agree(g, NULL, p, NULL, 0, o);
}

/* ---- symbols and words ------------------------------------------------------------------------------- */
static bool concat_letters(const vnode *x, char *buf, size_t cap, size_t *n) {
    if (x->kind == VN_SYM || x->kind == VN_TEXT || (x->kind == VN_CONST && !strcmp(x->name, "e")) ||
        (x->kind == VN_CONST && !strcmp(x->name, "i"))) {
        for (const char *s = x->name; *s; s++) {
            if (*n + 1 >= cap) return false;
            buf[(*n)++] = (char)(*s >= 'A' && *s <= 'Z' ? *s + 32 : *s);
        }
        buf[*n] = 0;
        return true;
    }
    if (x->kind == VN_MUL) {
        for (int k = 0; k < x->nkid; k++)
            if (!concat_letters(x->kid[k], buf, cap, n)) return false;
        return true;
    }
    return false;
}

static bool symbols_eq(const vnode *g, const vnode *p) {
    char a[256], b[256];
    size_t na = 0, nb = 0;
    a[0] = b[0] = 0;
    bool ga = (g->kind == VN_SYM || g->kind == VN_TEXT || g->kind == VN_MUL || g->kind == VN_CONST) &&
              concat_letters(g, a, sizeof a, &na);
    bool pb = (p->kind == VN_SYM || p->kind == VN_TEXT || p->kind == VN_MUL || p->kind == VN_CONST) &&
              concat_letters(p, b, sizeof b, &nb);
    if (ga && pb) return !strcmp(a, b);
    return false;
}

/* ---- sets ----------------------------------------------------------------------------------------------- */
typedef struct {
    const vnode *lo, *hi; /* NULL: infinite */
    bool lopen, ropen;
} ivl;

static bool as_interval(const vnode *x, ivl *out) {
    if (x->kind == VN_INTERVAL) { *out = (ivl){x->kid[0], x->kid[1], x->lopen, x->ropen}; return true; }
    if (x->kind == VN_TUPLE && x->paren && x->nkid == 2) { *out = (ivl){x->kid[0], x->kid[1], true, true}; return true; }
    return false;
}

static bool is_inf(const vnode *x, int sign) {
    if (!x) return true;
    if (sign < 0 && x->kind == VN_NEG) return x->kid[0]->kind == VN_CONST && !strcmp(x->kid[0]->name, "inf");
    return sign > 0 && x->kind == VN_CONST && !strcmp(x->name, "inf");
}

static bool end_eq(const vnode *a, const vnode *b, int sign, const vf_cmp_opts *o, int depth) {
    if (is_inf(a, sign) || is_inf(b, sign)) return is_inf(a, sign) && is_inf(b, sign);
    return eq_rec(a, b, o, depth + 1);
}

/* An infinite end is open however it is written ([-\infty, 0] is (-\infty, 0]). */
static bool interval_eq(const ivl *a, const ivl *b, const vf_cmp_opts *o, int depth) {
    bool lo_inf = is_inf(a->lo, -1) && is_inf(b->lo, -1), hi_inf = is_inf(a->hi, +1) && is_inf(b->hi, +1);
    return (lo_inf || a->lopen == b->lopen) && (hi_inf || a->ropen == b->ropen) && end_eq(a->lo, b->lo, -1, o, depth) &&
           end_eq(a->hi, b->hi, +1, o, depth);
}

/* Gold inequality over one variable (x < 3, 1 \le x < 2, 5 > x) as an interval. */
static bool rel_interval(const vnode *r, ivl *out) {
    if (r->kind != VN_REL || r->nkid > 3) return false;
    *out = (ivl){NULL, NULL, true, true};
    for (int k = 0; k + 1 < r->nkid; k++) {
        vr_op op = r->ops[k];
        const vnode *l = r->kid[k], *rr = r->kid[k + 1];
        bool lsym = l->kind == VN_SYM, rsym = rr->kind == VN_SYM;
        if (lsym == rsym) return false;
        bool strict = op == VR_LT || op == VR_GT;
        bool less = op == VR_LT || op == VR_LE;
        if (op != VR_LT && op != VR_LE && op != VR_GT && op != VR_GE) return false;
        /* sym < v: upper bound; v < sym: lower bound */
        bool upper = lsym ? less : !less;
        const vnode *v = lsym ? rr : l;
        if (upper) { out->hi = v; out->ropen = strict; }
        else { out->lo = v; out->lopen = strict; }
    }
    return true;
}

static bool items_eq_ordered(const vnode *g, const vnode *p, const vf_cmp_opts *o, int depth) {
    for (int k = 0; k < g->nkid; k++)
        if (!eq_rec(g->kid[k], p->kid[k], o, depth + 1)) return false;
    return true;
}

/* Finite sets: every element of each has an equal one in the other (so {a, a} = {a}, as
 * sympy's FiniteSet drops duplicates). */
static bool items_eq_unordered(const vnode *g, const vnode *p, const vf_cmp_opts *o, int depth) {
    for (int pass = 0; pass < 2; pass++) {
        const vnode *a = pass ? p : g, *b = pass ? g : p;
        for (int k = 0; k < a->nkid; k++) {
            bool hit = false;
            for (int j = 0; j < b->nkid && !hit; j++)
                hit = pass ? eq_rec(b->kid[j], a->kid[k], o, depth + 1) : eq_rec(a->kid[k], b->kid[j], o, depth + 1);
            if (!hit) return false;
        }
    }
    return true;
}

static bool sets_eq(const vnode *g, const vnode *p, const vf_cmp_opts *o, int depth) {
    ivl a, b;
    if (as_interval(g, &a) && as_interval(p, &b)) return interval_eq(&a, &b, o, depth);
    if (g->kind == VN_UNION || p->kind == VN_UNION) {
        if (g->kind != VN_UNION || p->kind != VN_UNION || g->nkid != p->nkid) return false;
        return items_eq_unordered(g, p, o, depth);
    }
    if (g->kind == VN_INTERVAL || p->kind == VN_INTERVAL) return false;
    /* finite sets and tuples; a lone value is a one-element set */
    vnode gs = {0}, ps = {0};
    const vnode *gk[1], *pk[1];
    if (!is_set_like(g)) { gk[0] = g; gs.kind = VN_SET; gs.nkid = 1; gs.kid = (vnode **)gk; g = &gs; }
    if (!is_set_like(p)) { pk[0] = p; ps.kind = VN_SET; ps.nkid = 1; ps.kid = (vnode **)pk; p = &ps; }
    if (g->kind == VN_SET || (p->kind == VN_SET && g->kind != VN_TUPLE)) return items_eq_unordered(g, p, o, depth);
    if (g->nkid != p->nkid) return false;
    return items_eq_ordered(g, p, o, depth);
}

/* ---- relations ------------------------------------------------------------------------------------------- */
static vr_op flip(vr_op op) {
    switch (op) {
    case VR_LT: return VR_GT;
    case VR_GT: return VR_LT;
    case VR_LE: return VR_GE;
    case VR_GE: return VR_LE;
    default: return op;
    }
}

static bool rel1_eq(const vnode *gl, vr_op go, const vnode *gr, const vnode *pl, vr_op po, const vnode *pr,
                    const vf_cmp_opts *o, int depth) {
    if (go == VR_IN || po == VR_IN) { /* x \in S: compare the sets */
        if (go != po) return false;
        return eq_rec(gl, pl, o, depth + 1) && eq_rec(gr, pr, o, depth + 1);
    }
    if (go == VR_APPROX) go = VR_EQ;
    if (po == VR_APPROX) po = VR_EQ;
    if (go == po && diff_agree(gl, gr, pl, pr, 0, o)) return true;
    /* a != b against b != a: math-verify keeps the order of the sides (Ne(a, b) is not
     * Ne(b, a) for it); retort follows, so that it never accepts what math-verify rejects */
    if (go != VR_NE && flip(go) == po && diff_agree(gl, gr, pl, pr, 1, o)) return true;
    /* x >= 114200 and x >= 114202 are nearly proportional at small x: a bound on a lone
     * variable is compared side by side only */
    if ((gl->kind == VN_SYM || gr->kind == VN_SYM) && (pl->kind == VN_SYM || pr->kind == VN_SYM)) return false;
    if (go == VR_EQ && po == VR_EQ) return diff_agree(gl, gr, pl, pr, 2, o);
    if (go == VR_NE && po == VR_NE) return diff_agree(gl, gr, pl, pr, 3, o);
    if (go == po) return diff_agree(gl, gr, pl, pr, 3, o);
    if (flip(go) == po) return diff_agree(gl, gr, pl, pr, 4, o);
    return false;
}

static bool rel_eq(const vnode *g, const vnode *p, const vf_cmp_opts *o, int depth) {
    if (g->nkid != p->nkid) return false;
    for (int k = 0; k + 1 < g->nkid; k++)
        if (!rel1_eq(g->kid[k], g->ops[k], g->kid[k + 1], p->kid[k], p->ops[k], p->kid[k + 1], o, depth)) return false;
    return true;
}

/* ---- the comparison ---------------------------------------------------------------------------------------- */
/* y = 2/7 \approx 0.29: the chain up to its first \approx (the rest is a rounding) */
static const vnode *cut_approx(const vnode *n, vnode *tmp) {
    if (n->kind != VN_REL) return n;
    for (int k = 1; k + 1 < n->nkid; k++)
        if (n->ops[k] == VR_APPROX) {
            *tmp = *n;
            tmp->nkid = k + 1;
            return tmp;
        }
    return n;
}

static bool eq_rec(const vnode *g, const vnode *p, const vf_cmp_opts *o, int depth) {
    if (!g || !p || depth > 4 * VF_MAX_DEPTH) return false;
    vnode gtmp, ptmp, gcut, pcut;
    vnode *gk[2], *pk[2];
    g = cut_approx(g, &gcut);
    p = cut_approx(p, &pcut);
    /* 1. relations */
    bool g_assign = is_assignment(g), p_eqn = is_equation(p), g_eqn = is_equation(g);
    if (g_assign && g->nkid > 2) { /* x = a = b: x = b */
        gtmp = *g;
        gk[0] = g->kid[0];
        gk[1] = g->kid[g->nkid - 1];
        gtmp.kid = gk;
        gtmp.nkid = 2;
        g = &gtmp;
    }
    if (is_assignment(p) && p->nkid > 2) {
        ptmp = *p;
        pk[0] = p->kid[0];
        pk[1] = p->kid[p->nkid - 1];
        ptmp.kid = pk;
        ptmp.nkid = 2;
        p = &ptmp;
    }
    if (p_eqn && !g_eqn) p = p->kid[p->nkid - 1];
    else if (g_assign && !p_eqn) g = g->kid[g->nkid - 1];
    if (is_rel(g) && is_sympy_set(p)) {
        ivl a, b;
        if (rel_interval(g, &a) && as_interval(p, &b)) return interval_eq(&a, &b, o, depth);
    }
    /* 2. identical */
    if (same_tree(g, p)) return true;
    /* 3. relations */
    if (is_rel(g) && is_rel(p)) return rel_eq(g, p, o, depth);
    if (is_rel(g) || is_rel(p)) return false;
    /* 4. sets */
    if (is_set_like(g) || is_set_like(p)) return sets_eq(g, p, o, depth);
    /* 5. symbols and words */
    if (g->kind == VN_SYM || p->kind == VN_SYM || g->kind == VN_TEXT || p->kind == VN_TEXT) return symbols_eq(g, p);
    /* 6. matrices */
    if (g->kind == VN_MATRIX || p->kind == VN_MATRIX) {
        if (g->kind != p->kind || g->rows != p->rows || g->cols != p->cols) return false;
        return items_eq_ordered(g, p, o, depth);
    }
    /* 7. numbers and expressions */
    return numeric_eq(g, p, o);
}

bool vf_equal(const vnode *gold, const vnode *pred, const vf_cmp_opts *o) { return eq_rec(gold, pred, o, 0); }

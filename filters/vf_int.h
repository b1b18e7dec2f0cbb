/* filters/vf_int.h — private to the answer verifier (filters/vf_*.c, filters/verify.c).
 *
 * The verifier works in four steps, one file each:
 *   vf_extract.c  find the final answer in a solution (\boxed, ####, "the answer is", …)
 *   vf_norm.c     rewrite LaTeX into a canonical spelling (fractions, units, \left, …)
 *   vf_expr.c     parse the canonical text into an expression tree (arena-allocated)
 *   vf_compare.c  decide whether two trees are the same answer
 * Every step is linear or bounded in the input size: inputs are capped at VF_MAX_ANSWER
 * bytes, trees at VF_MAX_NODES nodes and VF_MAX_DEPTH nesting, sets at VF_MAX_ITEMS, so a
 * pair is always decided in bounded time.
 */
#ifndef RT_VF_INT_H
#define RT_VF_INT_H

#include <complex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VF_MAX_ANSWER 4096
#define VF_MAX_NODES 4096
#define VF_MAX_DEPTH 64
#define VF_MAX_ITEMS 256
#define VF_NAME_MAX 32

/* ---- growable string ------------------------------------------------------------ */
typedef struct {
    char *s;
    size_t n, cap;
    bool oom;
} vf_buf;

void vf_buf_putn(vf_buf *b, const char *s, size_t n);
void vf_buf_puts(vf_buf *b, const char *s);
void vf_buf_putc(vf_buf *b, char c);
/* Takes the string (NUL-terminated, caller frees); NULL when an append ran out of memory. */
char *vf_buf_take(vf_buf *b);

/* ---- extraction (vf_extract.c) ----------------------------------------------------- */
typedef enum {
    VF_FROM_NONE = 0,
    VF_FROM_BOXED,     /* last \boxed{} / \fbox{} (adjacent ones joined with commas) */
    VF_FROM_HASH,      /* "#### N" (GSM8K) */
    VF_FROM_PHRASE,    /* "the (final) answer is …", "Answer: …" */
    VF_FROM_WHOLE,     /* the text is itself a short answer */
    VF_FROM_LAST,      /* last math span or number (fallback, by flag) */
} vf_source;

/* Finds the answer in text. *out is a new string (caller frees) or NULL when none was
 * found. whole_ok: a short text with no anchor is its own answer. last_number: fall back
 * to the last $…$ span or number. Returns 0 or RT_ENOMEM. */
int vf_extract(const char *text, bool whole_ok, bool last_number, char **out, vf_source *src);

/* ---- normalization (vf_norm.c) ----------------------------------------------------- */
/* Rewrites an extracted answer into canonical LaTeX (caller frees *out). RT_ENOMEM. */
int vf_normalize(const char *in, char **out);

/* ---- expression trees (vf_expr.c) ---------------------------------------------------- */
typedef enum {
    VN_NUM,      /* rational literal: num/den; is_float when written with a decimal point */
    VN_SYM,      /* a variable; name */
    VN_CONST,    /* name "pi", "e", "i", "inf" */
    VN_TEXT,     /* a word (\text{Evelyn}); name lowercased, spaces dropped */
    VN_ADD,      /* kids summed */
    VN_MUL,      /* kids multiplied */
    VN_NEG,      /* -kid[0] */
    VN_DIV,      /* kid[0] / kid[1] */
    VN_POW,      /* kid[0] ^ kid[1] */
    VN_FUNC,     /* name(kid[0] [, kid[1]]): sqrt, root, sin, …, log (kid[1] = base), binom */
    VN_FACT,     /* kid[0]! */
    VN_PCT,      /* kid[0] % */
    VN_TUPLE,    /* (a, b, …); paren: written with round brackets */
    VN_SET,      /* {a, b, …}, a bare list a, b, …, or a ± b = {a + b, a - b} */
    VN_INTERVAL, /* kid[0], kid[1]; lopen/ropen */
    VN_UNION,    /* kids: intervals, tuples, sets */
    VN_MATRIX,   /* rows × cols kids, row-major */
    VN_REL,      /* kid[0] op[0] kid[1] op[1] kid[2] … */
} vn_kind;

typedef enum { VR_EQ, VR_NE, VR_LT, VR_LE, VR_GT, VR_GE, VR_APPROX, VR_IN } vr_op;

typedef struct vnode vnode;
struct vnode {
    vn_kind kind;
    int nkid;
    vnode **kid;
    int64_t num, den;       /* VN_NUM (den > 0); overflowing literals: den = 0, approx in fval */
    double fval;            /* VN_NUM approximate value */
    bool is_float;          /* VN_NUM written with a decimal point */
    bool lopen, ropen;      /* VN_INTERVAL */
    bool paren;             /* VN_TUPLE from (…) */
    int rows, cols;         /* VN_MATRIX */
    vr_op *ops;             /* VN_REL: nkid-1 operators */
    char name[VF_NAME_MAX]; /* VN_SYM, VN_CONST, VN_TEXT, VN_FUNC */
};

typedef struct vf_arena vf_arena;
int vf_arena_new(vf_arena **out);
void vf_arena_free(vf_arena *a);

/* Parses canonical LaTeX (from vf_normalize) into *out, allocated in a.
 * Errors: RT_EFORMAT (not an expression; message says where), RT_ERANGE (too big or too
 * deep), RT_ENOMEM. */
int vf_parse(vf_arena *a, const char *s, vnode **out);

/* Writes a compact readable form of n (for debugging and tests). */
void vf_node_str(const vnode *n, vf_buf *b);

/* ---- comparison (vf_compare.c) -------------------------------------------------------- */
typedef struct {
    int float_digits;     /* floats agree when rounded to this many digits */
    bool decimal_places;  /* digits counted after the point (math-verify) instead of significant */
    uint64_t seed;        /* random evaluation points */
} vf_cmp_opts;

/* gold and pred are the same answer. Bounded time; never fails. */
bool vf_equal(const vnode *gold, const vnode *pred, const vf_cmp_opts *o);

#endif

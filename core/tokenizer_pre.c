/* core/tokenizer_pre.c — normalizers and pre-tokenizers, as HF tokenizers defines them.
 *
 * Pre-tokenizers run depth first: step d splits a piece and hands every sub-piece to step
 * d+1; after the last step a piece is a word for the BPE model. Splitting follows HF's
 * Pattern::find_matches (the whole piece as alternating non-match / match ranges, Rust
 * regex find_iter rules for empty matches) and SplitDelimiterBehavior.
 *
 * Normalizers run in chunks that start at an ASCII character: no Unicode normalization
 * form joins or reorders across an ASCII character (every ASCII character is a starter
 * that composes with nothing before it), so normalizing chunk by chunk gives the same
 * text as normalizing the whole piece, and each normalized chunk maps back to its
 * original bytes for offsets.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/alloc.h"
#include "core/status.h"
#include "core/tokenizer_int.h"
#include "core/utf8.h"

bool tok_is_unicode_space(uint32_t c) {
    if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
    if (c < 0x85) return false;
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Rust regex \w: alphabetic, marks, decimal digits, connector punctuation, join controls. */
bool tok_is_word_char(uint32_t c) {
    if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (c == 0x200C || c == 0x200D) return true;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

/* Rust char::is_numeric: general categories Nd, Nl, No. */
static bool is_numeric(uint32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

/* Oniguruma (HF's regex engine) reads \w as letters, marks, decimal and letter numbers,
 * connector punctuation and the Latin-1 other numbers (¹ ² ³ ¼ ½ ¾) — measured against
 * HF; PCRE2 10.42 with UCP has letters, all numbers and '_'. Spell onig's set out.
 * Returns a malloc'd pattern, or NULL on ENOMEM. */
static char *onig_word_classes(const char *p) {
    static const char W_IN[] = "\\p{L}\\p{M}\\p{Nd}\\p{Nl}\\p{Pc}\\x{B2}\\x{B3}\\x{B9}\\x{BC}-\\x{BE}";
    size_t n = strlen(p), w = 0;
    char *o = rt_malloc(n * (sizeof W_IN + 3) + 1);
    if (!o) return NULL;
    bool in_class = false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\\' && i + 1 < n) {
            char c = p[i + 1];
            if (c == 'w' || (c == 'W' && !in_class)) {
                if (!in_class) w += (size_t)sprintf(o + w, c == 'w' ? "[" : "[^");
                w += (size_t)sprintf(o + w, "%s", W_IN);
                if (!in_class) o[w++] = ']';
            } else {
                o[w++] = p[i], o[w++] = c;
            }
            i++;
            continue;
        }
        if (p[i] == '[' && !in_class) {
            in_class = true;
            o[w++] = p[i];
            if (i + 1 < n && p[i + 1] == '^') o[w++] = p[++i];
            if (i + 1 < n && p[i + 1] == ']') o[w++] = p[++i]; /* a leading ] is literal */
            continue;
        }
        if (p[i] == ']' && in_class) in_class = false;
        o[w++] = p[i];
    }
    o[w] = 0;
    return o;
}

int tok_regex_compile(const char *pattern, bool literal, pcre2_code **out) {
    int err;
    PCRE2_SIZE at;
    uint32_t opts = PCRE2_UTF | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    char *pat = literal ? NULL : onig_word_classes(pattern);
    if (!literal && !pat) return RT_ENOMEM;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)(pat ? pat : pattern), PCRE2_ZERO_TERMINATED, opts, &err, &at, NULL);
    free(pat);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return rt_fail(RT_EUNSUPPORTED, "regex /%s/ at offset %zu: %s", pattern, (size_t)at, (char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* without JIT, matching falls back to the interpreter */
    *out = re;
    return 0;
}

/* ---- match lists: triples (start, end, is_match) in st->marks[depth] ---- */

static int marks_push(tok_state *st, int d, size_t *n, size_t a, size_t b, size_t flag) {
    if (*n + 3 > st->marks_cap[d] && rt_grow((void **)&st->marks[d], &st->marks_cap[d], *n + 3, sizeof(size_t)))
        return RT_ENOMEM;
    st->marks[d][(*n)++] = a;
    st->marks[d][(*n)++] = b;
    st->marks[d][(*n)++] = flag;
    return 0;
}

static int regex_next(const pcre2_code *re, tok_state *st, const char *s, size_t n, size_t pos, size_t *ms,
                      size_t *me) {
    int rc = pcre2_jit_match(re, (PCRE2_SPTR)s, n, pos, 0, st->md, st->mctx);
    if (rc == PCRE2_ERROR_JIT_BADOPTION || rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, st->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 1;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        return rt_fail(RT_EINTERNAL, "regex match at byte %zu: %s", pos, (char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(st->md);
    *ms = ov[0];
    *me = ov[1];
    return 0;
}

static int find_regex(const pcre2_code *re, tok_state *st, int d, const char *s, size_t n, size_t *nm) {
    size_t prev = 0, pos = 0, last_end = SIZE_MAX;
    while (pos <= n) {
        size_t ms, me;
        int rc = regex_next(re, st, s, n, pos, &ms, &me);
        if (rc < 0) return rc;
        if (rc) break;
        if (ms == me && last_end == me) { /* no empty match right after the previous one */
            if (pos >= n) break;
            pos += rt_utf8_seqlen((const unsigned char *)s + pos, n - pos);
            continue;
        }
        if (prev != ms && marks_push(st, d, nm, prev, ms, 0)) return RT_ENOMEM;
        if (marks_push(st, d, nm, ms, me, 1)) return RT_ENOMEM;
        prev = pos = last_end = me;
    }
    if (prev != n && marks_push(st, d, nm, prev, n, 0)) return RT_ENOMEM;
    return 0;
}

static int find_digits(tok_state *st, int d, const char *s, size_t n, size_t *nm) {
    const unsigned char *u = (const unsigned char *)s;
    size_t last = 0;
    for (size_t i = 0; i < n;) {
        size_t k = rt_utf8_seqlen(u + i, n - i);
        if (!k) k = 1;
        if (is_numeric(rt_utf8_decode(u + i, k))) {
            if (last < i && marks_push(st, d, nm, last, i, 0)) return RT_ENOMEM;
            if (marks_push(st, d, nm, i, i + k, 1)) return RT_ENOMEM;
            last = i + k;
        }
        i += k;
    }
    if (last < n && marks_push(st, d, nm, last, n, 0)) return RT_ENOMEM;
    return 0;
}

/* Rewrites the match list in place into the pieces to keep: triples (start, end, remove). */
static size_t apply_behavior(size_t *m, size_t nm, tok_behavior b, bool invert) {
    if (invert)
        for (size_t i = 0; i < nm; i += 3) m[i + 2] = !m[i + 2];
    size_t w = 0;
    bool prev_match = false;
    switch (b) {
    case SPLIT_ISOLATED:
        for (size_t i = 0; i < nm; i += 3) m[i + 2] = 0;
        return nm;
    case SPLIT_REMOVED:
        return nm;
    case SPLIT_CONTIGUOUS:
    case SPLIT_MERGED_PREV:
        for (size_t i = 0; i < nm; i += 3) {
            bool is_match = m[i + 2];
            bool merge = b == SPLIT_CONTIGUOUS ? is_match == prev_match : is_match && !prev_match;
            if (merge && w) {
                m[w - 2] = m[i + 1];
            } else {
                m[w] = m[i], m[w + 1] = m[i + 1], m[w + 2] = 0;
                w += 3;
            }
            prev_match = is_match;
        }
        return w;
    case SPLIT_MERGED_NEXT: {
        /* right to left: a match joins the piece after it; written from the end */
        size_t r = nm;
        for (size_t i = nm; i >= 3; i -= 3) {
            size_t a = m[i - 3], e = m[i - 2];
            bool is_match = m[i - 1];
            if (is_match && !prev_match && r < nm) {
                m[r] = a;
            } else {
                r -= 3;
                m[r] = a, m[r + 1] = e, m[r + 2] = 0;
            }
            prev_match = is_match;
        }
        memmove(m, m + r, (nm - r) * sizeof *m);
        return nm - r;
    }
    }
    return nm;
}

int tok_pretokenize(const tok_tokenizer *t, tok_state *st, int depth, const char *s, size_t n, size_t off,
                    tok_word_fn fn, void *ctx) {
    if (!n) return 0;
    if (depth == t->n_pre) return fn(ctx, s, n, off);
    const tok_pre_step *p = &t->pre[depth];
    size_t nm = 0;
    int rc = 0;
    if (p->kind == PRE_BYTELEVEL) {
        if (p->add_prefix_space && s[0] != ' ') {
            /* HF prepends a space to every piece that lacks one; it has no original byte,
             * so it maps to the piece's start */
            char *c = rt_malloc(n + 1);
            if (!c) return RT_ENOMEM;
            c[0] = ' ';
            memcpy(c + 1, s, n);
            rc = p->regex >= 0 ? find_regex(t->re[p->regex], st, depth, c, n + 1, &nm) : marks_push(st, depth, &nm, 0, n + 1, 0);
            for (size_t i = 0; i < nm && !rc; i += 3) {
                size_t a = st->marks[depth][i], b = st->marks[depth][i + 1];
                rc = tok_pretokenize(t, st, depth + 1, c + a, b - a, off + (a ? a - 1 : 0), fn, ctx);
            }
            free(c);
            return rc;
        }
        if (p->regex < 0) return tok_pretokenize(t, st, depth + 1, s, n, off, fn, ctx);
        rc = find_regex(t->re[p->regex], st, depth, s, n, &nm);
        if (!rc) nm = apply_behavior(st->marks[depth], nm, SPLIT_ISOLATED, false);
    } else if (p->kind == PRE_SPLIT) {
        rc = find_regex(t->re[p->regex], st, depth, s, n, &nm);
        if (!rc) nm = apply_behavior(st->marks[depth], nm, p->behavior, p->invert);
    } else {
        rc = find_digits(st, depth, s, n, &nm);
        if (!rc) nm = apply_behavior(st->marks[depth], nm, p->individual_digits ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS, false);
    }
    if (rc) return rc;
    /* st->marks[depth] stays valid: deeper steps use their own depth's list */
    for (size_t i = 0; i < nm; i += 3) {
        const size_t *m = st->marks[depth] + i;
        if (m[2] || m[1] == m[0]) continue;
        rc = tok_pretokenize(t, st, depth + 1, s + m[0], m[1] - m[0], off + m[0], fn, ctx);
        if (rc) return rc;
    }
    return 0;
}

/* ---- normalizers ---- */

static int norm_reserve(tok_state *st, size_t need, bool want_align) {
    if (need > st->norm_cap && rt_grow((void **)&st->norm, &st->norm_cap, need, 1)) return RT_ENOMEM;
    if (want_align && 2 * need > st->align_cap &&
        rt_grow((void **)&st->align, &st->align_cap, 2 * need, sizeof *st->align))
        return RT_ENOMEM;
    return 0;
}

static int norm_append(tok_state *st, size_t *w, const char *p, size_t k, bool want_align, bool identity,
                       size_t orig_start, size_t orig_end) {
    if (norm_reserve(st, *w + k + 1, want_align)) return RT_ENOMEM;
    memcpy(st->norm + *w, p, k);
    if (want_align)
        for (size_t j = 0; j < k; j++) {
            st->align[2 * (*w + j)] = identity ? orig_start + j : orig_start;
            st->align[2 * (*w + j) + 1] = identity ? orig_start + j + 1 : orig_end;
        }
    *w += k;
    return 0;
}

static utf8proc_option_t norm_options(tok_norm_kind k) {
    switch (k) {
    case NORM_NFC: return UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    case NORM_NFD: return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    case NORM_NFKC: return UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    default: return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    }
}

/* Normalizes one chunk (an optional ASCII character, then non-ASCII characters). */
static int norm_chunk(const tok_tokenizer *t, tok_state *st, const char *c, size_t k, size_t orig, bool want_align,
                      size_t *w) {
    utf8proc_uint8_t *cur = NULL;
    const utf8proc_uint8_t *in = (const utf8proc_uint8_t *)c;
    utf8proc_ssize_t len = (utf8proc_ssize_t)k;
    for (int i = 0; i < t->n_norm; i++) {
        utf8proc_uint8_t *o = NULL;
        utf8proc_ssize_t r = utf8proc_map(in, len, &o, norm_options(t->norm[i]));
        free(cur);
        if (r < 0) return rt_fail(RT_EINTERNAL, "normalizing: %s", utf8proc_errmsg(r));
        cur = o;
        in = o;
        len = r;
    }
    bool same = (size_t)len == k && !memcmp(in, c, k);
    int rc = norm_append(st, w, (const char *)in, (size_t)len, want_align, same, orig, orig + k);
    free(cur);
    return rc;
}

int tok_normalize(const tok_tokenizer *t, tok_state *st, const char *s, size_t n, size_t base, bool want_align,
                  size_t *out_n) {
    size_t w = 0, i = 0;
    if (norm_reserve(st, n + 1, want_align)) return RT_ENOMEM;
    const unsigned char *u = (const unsigned char *)s;
    while (i < n) {
        size_t q = i;
        while (q < n && u[q] < 0x80) q++;
        if (q == n) return norm_append(st, &w, s + i, n - i, want_align, true, base + i, base + n) ? RT_ENOMEM
                                                                                                  : (*out_n = w, 0);
        size_t cs = q > i ? q - 1 : q; /* the chunk starts at the ASCII character before q */
        if (cs > i && norm_append(st, &w, s + i, cs - i, want_align, true, base + i, base + cs)) return RT_ENOMEM;
        size_t r = q;
        while (r < n && u[r] >= 0x80) r++;
        int rc = norm_chunk(t, st, s + cs, r - cs, base + cs, want_align, &w);
        if (rc) return rc;
        i = r;
    }
    *out_n = w;
    return 0;
}

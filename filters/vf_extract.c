/* filters/vf_extract.c — find the final answer in a solution (see vf_int.h).
 *
 * Order, first hit wins:
 *   1. the last \boxed{…} or \fbox{…} (braces balanced; an unclosed one runs to the end);
 *      boxes right before it (under 10 characters apart, or under 70 with "and", "or",
 *      "," or ";" between) are joined with commas, as in "\boxed{1} and \boxed{2}";
 *   2. the last "#### N" line (GSM8K);
 *   3. the last "answer" (as in "The final answer is", "Answer:") followed within 50
 *      characters by a math span ($…$, \(…\), \[…\], $$…$$) or a number; a lone variable
 *      followed by "is"/"="/"equals" gives way to the value after it ("The smallest $k$
 *      is 12");
 *   4. whole_ok and a short text with no prose: the text itself;
 *   5. last_number: the math span or number that ends last in the text.
 * A number in prose with one or two digits after a comma ("3,14 €") is a decimal comma and
 * comes out with a point, as math-verify reads prose. Scans are linear in the text; nothing here allocates more than the answer.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/status.h"
#include "filters/vf_int.h"

typedef struct { size_t b, e; } span; /* [b, e) */

static char *dup_span(const char *t, size_t b, size_t e) {
    while (b < e && isspace((unsigned char)t[b])) b++;
    while (e > b && isspace((unsigned char)t[e - 1])) e--;
    if (e - b > VF_MAX_ANSWER) e = b + VF_MAX_ANSWER;
    char *s = rt_malloc(e - b + 1);
    if (!s) return NULL;
    memcpy(s, t + b, e - b);
    s[e - b] = 0;
    return s;
}

/* ---- math spans and numbers ---------------------------------------------------------------- */
/* Where the next closer ("$$", "\\)", "\\]") after a position is, remembered across calls
 * so that scanning a text for spans stays linear even when openers never close. */
typedef struct {
    bool valid[3];
    size_t from[3], pos[3]; /* the first closer at or after from[] is at pos[] (SIZE_MAX: none) */
} span_cache;

static size_t find_closer(span_cache *c, int w, const char *t, size_t len, size_t start, const char *needle) {
    if (start >= len) return SIZE_MAX;
    if (c->valid[w] && start >= c->from[w] && (c->pos[w] == SIZE_MAX || start <= c->pos[w])) return c->pos[w];
    size_t pos;
    if (c->valid[w] && start < c->from[w]) { /* only the part before the known answer is new */
        size_t end = c->from[w] + 1 < len ? c->from[w] + 1 : len;
        const char *q = memmem(t + start, end - start, needle, 2);
        pos = q ? (size_t)(q - t) : c->pos[w];
    } else {
        const char *q = memmem(t + start, len - start, needle, 2);
        pos = q ? (size_t)(q - t) : SIZE_MAX;
    }
    c->valid[w] = true;
    c->from[w] = start;
    c->pos[w] = pos;
    return pos;
}

/* The math span starting at i, if any: content [*cb,*ce), span end returned (0: none).
 * Spans longer than VF_MAX_ANSWER * 4 bytes are not answers. */
static size_t math_span_at(span_cache *sc, const char *t, size_t len, size_t i, size_t *cb, size_t *ce) {
    if (t[i] == '$' && (i == 0 || (t[i - 1] != '\\'))) {
        if (i + 1 < len && t[i + 1] == '$') { /* $$…$$ */
            size_t q = find_closer(sc, 0, t, len, i + 2, "$$");
            if (q == SIZE_MAX || q - i > 4 * VF_MAX_ANSWER) return 0;
            *cb = i + 2;
            *ce = q;
            return q + 2;
        }
        if (i > 0 && isdigit((unsigned char)t[i - 1])) return 0;
        for (size_t j = i + 1; j < len && t[j] != '\n' && j - i < 4 * VF_MAX_ANSWER; j++) {
            if (t[j] == '\\' && j + 1 < len && t[j + 1] == '$') { j++; continue; }
            if (t[j] == '$') {
                if (j == i + 1) return 0;
                *cb = i + 1;
                *ce = j;
                return j + 1;
            }
        }
        return 0;
    }
    if (t[i] == '\\' && i + 1 < len && (t[i + 1] == '(' || t[i + 1] == '[')) {
        bool paren = t[i + 1] == '(';
        size_t q = find_closer(sc, paren ? 1 : 2, t, len, i + 2, paren ? "\\)" : "\\]");
        if (q == SIZE_MAX || q == i + 2 || q - i > 4 * VF_MAX_ANSWER) return 0;
        *cb = i + 2;
        *ce = q;
        return q + 2;
    }
    return 0;
}

/* ---- 1. boxes ------------------------------------------------------------------------- */
/* Start of the last \boxed or \fbox at or before limit, or -1; *cmd_len its length. */
static long last_box(const char *t, size_t limit, size_t *cmd_len) {
    for (size_t i = limit; i-- > 0;) {
        if (t[i] != '\\') continue;
        if (!strncmp(t + i, "\\boxed", 6) && !isalpha((unsigned char)t[i + 6])) { *cmd_len = 6; return (long)i; }
        if (!strncmp(t + i, "\\fbox", 5) && !isalpha((unsigned char)t[i + 5])) { *cmd_len = 5; return (long)i; }
    }
    return -1;
}

/* Content of the box starting at pos: [*cb, *ce); returns end of the box (past '}'),
 * or len when the braces never close. */
static size_t box_content(const char *t, size_t len, size_t pos, size_t cmd_len, size_t *cb, size_t *ce) {
    size_t i = pos + cmd_len;
    while (i < len && isspace((unsigned char)t[i])) i++;
    if (i >= len) { *cb = *ce = len; return len; }
    if (t[i] != '{') { /* \boxed 5: one token */
        size_t j = i;
        while (j < len && !isspace((unsigned char)t[j]) && t[j] != '$') j++;
        *cb = i;
        *ce = j;
        return j;
    }
    int depth = 0;
    for (size_t j = i; j < len; j++) {
        if (t[j] == '\\' && j + 1 < len) { j++; continue; }
        if (t[j] == '{') depth++;
        else if (t[j] == '}' && --depth == 0) { *cb = i + 1; *ce = j; return j + 1; }
    }
    *cb = i + 1;
    *ce = len;
    return len;
}

static bool separator_between(const char *t, size_t b, size_t e) {
    for (size_t i = b; i < e; i++) {
        if (t[i] == ',' || t[i] == ';') return true;
        if ((i == b || !isalpha((unsigned char)t[i - 1])) &&
            ((!strncasecmp(t + i, "and", 3) && (i + 3 >= e || !isalpha((unsigned char)t[i + 3]))) ||
             (!strncasecmp(t + i, "or", 2) && (i + 2 >= e || !isalpha((unsigned char)t[i + 2])))))
            return true;
    }
    return false;
}


/* The math span ($…$, \[…\], …) around position pos: [*b, *e), or false. */
static bool enclosing_span(const char *t, size_t len, size_t pos, size_t *b, size_t *e) {
    span_cache sc = {{false}, {0}, {0}};
    for (size_t i = 0; i < len && i <= pos; i++) {
        size_t cb, ce, end = math_span_at(&sc, t, len, i, &cb, &ce);
        if (!end) continue;
        if (cb <= pos && pos < ce) { *b = cb; *e = ce; return true; }
        i = end - 1;
    }
    return false;
}

static int extract_boxed(const char *t, size_t len, char **out) {
    size_t cl;
    long p = last_box(t, len, &cl);
    if (p < 0) return 0;
    /* a box inside a math span: only the boxes of that span count ("$\boxed{9}$") */
    size_t sb = 0, se = 0;
    bool in_span = enclosing_span(t, len, (size_t)p, &sb, &se);
    span parts[16];
    int np = 0;
    size_t cb, ce;
    box_content(t, len, (size_t)p, cl, &cb, &ce);
    parts[np++] = (span){cb, ce};
    size_t first_start = (size_t)p;
    while (np < 16) {
        size_t cl2;
        long q = last_box(t, first_start, &cl2);
        if (q < 0) break;
        size_t b2, e2;
        size_t end = box_content(t, first_start, (size_t)q, cl2, &b2, &e2);
        if (end > first_start) break;
        if (in_span && (size_t)q < sb) break;
        size_t gap = first_start - end;
        bool same = e2 - b2 == parts[np - 1].e - parts[np - 1].b && !memcmp(t + b2, t + parts[np - 1].b, e2 - b2);
        if (!in_span && !(gap < 10 || (!same && gap < 70 && separator_between(t, end, first_start)))) break;
        if (!same) parts[np++] = (span){b2, e2};
        first_start = (size_t)q;
    }
    vf_buf b = {0};
    for (int k = np - 1; k >= 0; k--) {
        vf_buf_putn(&b, t + parts[k].b, parts[k].e - parts[k].b);
        if (k) vf_buf_putc(&b, ',');
    }
    char *s = vf_buf_take(&b);
    if (!s) return RT_ENOMEM;
    *out = dup_span(s, 0, strlen(s));
    free(s);
    return *out ? 0 : RT_ENOMEM;
}

/* A decimal comma at j, right after the integer digits: ",5" or ",75" not followed by
 * another digit, '.' or ',' (math-verify reads "3,14 €" as 3.14 in prose, and "2,575" as
 * 2575). Returns the end of the fraction digits, 0 if none. */
static size_t decimal_comma_at(const char *t, size_t len, size_t j) {
    if (j + 1 >= len || t[j] != ',' || !isdigit((unsigned char)t[j + 1]) || j == 0 || !isdigit((unsigned char)t[j - 1]))
        return 0;
    size_t d = 0;
    while (j + 1 + d < len && isdigit((unsigned char)t[j + 1 + d])) d++;
    if (d > 2) return 0;
    size_t e = j + 1 + d;
    if (e < len && (t[e] == '.' || t[e] == ',') && e + 1 < len && isdigit((unsigned char)t[e + 1])) return 0;
    return e;
}

/* A number starting at i: -?digits (,ddd)* (.digits)? (/digits)? — end returned, 0 if none. */
static size_t number_at(const char *t, size_t len, size_t i) {
    size_t j = i;
    if (j < len && t[j] == '-') j++;
    if (j >= len || !(isdigit((unsigned char)t[j]) || (t[j] == '.' && j + 1 < len && isdigit((unsigned char)t[j + 1]))))
        return 0;
    while (j < len && isdigit((unsigned char)t[j])) j++;
    size_t dc = decimal_comma_at(t, len, j);
    if (dc) return dc;
    while (j + 3 < len && t[j] == ',' && isdigit((unsigned char)t[j + 1]) && isdigit((unsigned char)t[j + 2]) &&
           isdigit((unsigned char)t[j + 3]) && (j + 4 >= len || !isdigit((unsigned char)t[j + 4])))
        j += 4;
    if (j + 1 < len && t[j] == '.' && isdigit((unsigned char)t[j + 1])) {
        j++;
        while (j < len && isdigit((unsigned char)t[j])) j++;
    }
    if (j + 1 < len && t[j] == '/' && isdigit((unsigned char)t[j + 1])) {
        j++;
        while (j < len && isdigit((unsigned char)t[j])) j++;
    }
    return j;
}

/* Percent sign or word right after position e; returns the new end. */
static size_t percent_after(const char *t, size_t len, size_t e, bool *pct) {
    size_t k = e;
    while (k < len && t[k] == ' ') k++;
    *pct = true;
    if (k < len && t[k] == '%') return k + 1;
    if (k + 1 < len && t[k] == '\\' && t[k + 1] == '%') return k + 2;
    if (!strncasecmp(t + k, "percent", 7)) return k + 7;
    *pct = false;
    return e;
}

static bool number_anchor_ok(const char *t, size_t len, size_t b, size_t e) {
    /* before: start, space, '=', '*' or a currency sign; after: . , : space ) $ end */
    bool pre = b == 0 || isspace((unsigned char)t[b - 1]) || t[b - 1] == '=' || t[b - 1] == '*' || t[b - 1] == '$' ||
               t[b - 1] == '(' || (unsigned char)t[b - 1] >= 0x80;
    bool post = e >= len || t[e] == '.' || t[e] == ',' || t[e] == ':' || isspace((unsigned char)t[e]) || t[e] == ')' ||
                t[e] == '$' || t[e] == '*' || t[e] == '%' || t[e] == '!' || t[e] == ';' || t[e] == '?';
    return pre && post;
}

static int take_number(const char *t, size_t len, size_t b, size_t e, char **out) {
    bool pct;
    size_t pe = percent_after(t, len, e, &pct);
    (void)pe;
    vf_buf buf = {0};
    for (size_t k = b; k < e; k++) /* a decimal comma becomes a point (number_at took it) */
        vf_buf_putc(&buf, t[k] == ',' && decimal_comma_at(t, e, k) == e ? '.' : t[k]);
    if (pct) vf_buf_putc(&buf, '%');
    *out = vf_buf_take(&buf);
    return *out ? 0 : RT_ENOMEM;
}

static int take_span(const char *t, size_t len, size_t cb, size_t ce, size_t end, char **out) {
    bool pct;
    percent_after(t, len, end, &pct);
    char *s = dup_span(t, cb, ce);
    if (!s) return RT_ENOMEM;
    if (pct) {
        vf_buf b = {0};
        vf_buf_puts(&b, s);
        vf_buf_putc(&b, '%');
        free(s);
        s = vf_buf_take(&b);
        if (!s) return RT_ENOMEM;
    }
    *out = s;
    return 0;
}

/* ---- 2. #### N ------------------------------------------------------------------------------ */
static int extract_hash(const char *t, size_t len, char **out) {
    const char *last = NULL;
    for (const char *p = t; (p = strstr(p, "####")); p += 4) last = p;
    if (!last) return 0;
    size_t b = (size_t)(last - t) + 4;
    while (b < len && t[b] == '#') b++;
    size_t e = b;
    while (e < len && t[e] != '\n') e++;
    char *s = dup_span(t, b, e);
    if (!s) return RT_ENOMEM;
    if (!*s) { free(s); return 0; }
    *out = s;
    return 0;
}

/* ---- 3. "answer …" ---------------------------------------------------------------------------- */
/* After the word "answer": the number right after the last '=' within 100 characters
 * ("the answer as a percentage: 60 / 150 * 100% = 40%"), else the first math span or
 * anchored number within 50 characters that is not itself followed by '='. */
static int extract_phrase(const char *t, size_t len, char **out) {
    span_cache sc = {{false}, {0}, {0}};
    for (size_t i = len; i-- > 0;) {
        if (tolower((unsigned char)t[i]) != 'a' || strncasecmp(t + i, "answer", 6)) continue;
        size_t w = i + 6, stop = w + 50 < len ? w + 50 : len, stop_eq = w + 101 < len ? w + 101 : len;
        /* candidate 1: a number after the last '=' */
        size_t nb = 0, ne_eq = 0;
        for (size_t k = stop_eq; k-- > w;) {
            if (t[k] != '=') continue;
            size_t b = k + 1;
            while (b < len && isspace((unsigned char)t[b])) b++;
            if (b < len && t[b] == '$') b++; /* "= $6.00" */
            size_t ne = number_at(t, len, b);
            if (ne && number_anchor_ok(t, len, b, ne)) {
                size_t after = ne;
                while (after < len && t[after] == ' ') after++;
                if (!(after < len && t[after] == '=')) { nb = b; ne_eq = ne; }
            }
            break;
        }
        /* candidate 2: the first math span or number */
        size_t cb = 0, ce = 0, end2 = 0, n2 = 0;
        bool span2 = false;
        for (size_t k = w; k < stop && !end2; k++) {
            size_t sb, se, end = math_span_at(&sc, t, len, k, &sb, &se);
            if (end) {
                /* "The smallest $k$ is 12.": a lone variable named before its value */
                size_t a = end;
                while (a < len && t[a] == ' ') a++;
                bool lone = se - sb <= 2 && isalpha((unsigned char)t[sb]) && (se - sb == 1 || isdigit((unsigned char)t[sb + 1]));
                if (lone && a > end && (!strncmp(t + a, "is ", 3) || !strncmp(t + a, "= ", 2) || !strncmp(t + a, "equals ", 7))) {
                    k = end - 1;
                    stop = end + 50 < len ? end + 50 : len;
                    continue;
                }
                cb = sb; ce = se; end2 = end; span2 = true; break;
            }
            if (!strncmp(t + k, "\\boxed", 6)) break; /* handled by the box rule */
            size_t ne = (k == w || !isalnum((unsigned char)t[k - 1])) ? number_at(t, len, k) : 0;
            if (ne) {
                size_t after = ne;
                while (after < len && t[after] == ' ') after++;
                if ((after < len && t[after] == '=') || !number_anchor_ok(t, len, k, ne)) { k = ne; continue; }
                n2 = k;
                end2 = ne;
            }
        }
        if (!ne_eq && !end2) continue;
        if (end2 >= ne_eq) return span2 ? take_span(t, len, cb, ce, end2, out) : take_number(t, len, n2, end2, out);
        return take_number(t, len, nb, ne_eq, out);
    }
    return 0;
}

/* ---- 4. whole --------------------------------------------------------------------------------- */
static bool looks_like_bare_answer(const char *t, size_t len) {
    if (len == 0 || len > 120) return false;
    int run = 0;
    bool in_text = false;
    for (size_t i = 0; i < len; i++) {
        if (!strncmp(t + i, "\\text{", 6)) in_text = true;
        if (in_text && t[i] == '}') in_text = false;
        if (t[i] == '\\') { while (i + 1 < len && isalpha((unsigned char)t[i + 1])) i++; run = 0; continue; }
        if (isalpha((unsigned char)t[i]) && !in_text) {
            if (++run >= 4) return false;
        } else {
            run = 0;
        }
        if (t[i] == '\n') return false;
    }
    return true;
}

/* ---- 5. last span or number ------------------------------------------------------------------- */
static int extract_last(const char *t, size_t len, char **out) {
    span_cache sc = {{false}, {0}, {0}};
    size_t best_end = 0, sb = 0, se = 0, send = 0;
    bool best_is_span = false;
    for (size_t i = 0; i < len; i++) {
        size_t cb, ce, end = math_span_at(&sc, t, len, i, &cb, &ce);
        if (end) {
            if (end >= best_end) { best_end = end; sb = cb; se = ce; send = end; best_is_span = true; }
            i = end - 1;
            continue;
        }
        if ((t[i] == '-' || isdigit((unsigned char)t[i]) || t[i] == '.') && (i == 0 || !isdigit((unsigned char)t[i - 1]))) {
            size_t ne = number_at(t, len, i);
            if (ne && number_anchor_ok(t, len, i, ne)) {
                if (ne >= best_end) { best_end = ne; sb = i; se = ne; best_is_span = false; }
            }
            if (ne) i = ne - 1;
        }
    }
    if (!best_end) return 0;
    if (best_is_span) return take_span(t, len, sb, se, send, out);
    return take_number(t, len, sb, se, out);
}

int vf_extract(const char *text, bool whole_ok, bool last_number, char **out, vf_source *src) {
    *out = NULL;
    *src = VF_FROM_NONE;
    size_t len = strlen(text);
    int rc;
    if ((rc = extract_boxed(text, len, out)) || *out) { if (*out) *src = VF_FROM_BOXED; return rc; }
    if ((rc = extract_hash(text, len, out)) || *out) { if (*out) *src = VF_FROM_HASH; return rc; }
    if ((rc = extract_phrase(text, len, out)) || *out) { if (*out) *src = VF_FROM_PHRASE; return rc; }
    size_t b = 0, e = len;
    while (b < e && isspace((unsigned char)text[b])) b++;
    while (e > b && isspace((unsigned char)text[e - 1])) e--;
    if (whole_ok && looks_like_bare_answer(text + b, e - b)) {
        *out = dup_span(text, b, e);
        if (!*out) return RT_ENOMEM;
        *src = VF_FROM_WHOLE;
        return 0;
    }
    if (last_number) {
        if ((rc = extract_last(text, len, out))) return rc;
        if (*out) *src = VF_FROM_LAST;
    }
    return 0;
}

/* filters/vf_norm.c — canonical spelling of an extracted answer (see vf_int.h).
 *
 * Passes, in order:
 *   1. degree marks (^\circ, ^{\circ}, °) and a few Unicode symbols;
 *   2. one rewriting scan over commands: \left/\right and sizing commands dropped,
 *      \dfrac/\tfrac/\cfrac → \frac, \mathrm/\textbf/… → \text, \le/\leq → \le, spacing
 *      (\, \; \! \quad) and $ signs dropped, \% → %;
 *   3. words: "percent" → %, "and"/"or" between items → ",";
 *   4. numbers: thousands separators (1,000 and 1{,}000) removed; {,} before anything
 *      but three digits is a comma (3{,}5 is the list 3, 5, as math-verify reads it);
 *   5. the tail: trailing \text{…} (units) when something is left, trailing unit words
 *      (cm, dollars, …), trailing periods and commas.
 * Fraction and root arguments written without braces (\frac12, \sqrt3) are left to the
 * parser, which reads a macro argument the way TeX does (a group or one token).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "filters/vf_int.h"

void vf_buf_putn(vf_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) { b->oom = true; return; }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
void vf_buf_puts(vf_buf *b, const char *s) { vf_buf_putn(b, s, strlen(s)); }
void vf_buf_putc(vf_buf *b, char c) { vf_buf_putn(b, &c, 1); }
char *vf_buf_take(vf_buf *b) {
    if (b->oom) { free(b->s); b->s = NULL; return NULL; }
    if (!b->s) vf_buf_putn(b, "", 0);
    char *s = b->s;
    if (b->oom) s = NULL;
    b->s = NULL;
    b->n = b->cap = 0;
    return s;
}

/* Replaces every occurrence of from with to. */
static char *replace_all(char *s, const char *from, const char *to) {
    if (!s || !strstr(s, from)) return s;
    vf_buf b = {0};
    size_t fl = strlen(from);
    const char *p = s, *q;
    while ((q = strstr(p, from))) {
        vf_buf_putn(&b, p, (size_t)(q - p));
        vf_buf_puts(&b, to);
        p = q + fl;
    }
    vf_buf_puts(&b, p);
    free(s);
    return vf_buf_take(&b);
}

/* ---- pass 1: degrees and Unicode ------------------------------------------------------ */
static char *pass_symbols(char *s) {
    static const char *const drop[] = {"{}^{\\circ}", "{}^\\circ", "^{\\circ}", "^{ \\circ}", "^{\\circ }",
                                       "^\\circ", "\\textdegree", "\\degree", "\xc2\xb0" /* ° */,
                                       "\\mathrm{th}", "\\text{th}", "\\%%", NULL};
    for (int i = 0; drop[i]; i++) s = replace_all(s, drop[i], "");
    static const char *const uni[][2] = {
        {"\xe2\x88\x92", "-"},       {"\xc3\x97", "\\times "}, {"\xc3\xb7", "\\div "},  {"\xcf\x80", "\\pi "},
        {"\xe2\x88\x9a", "\\sqrt"},  {"\xe2\x89\xa4", "\\le "}, {"\xe2\x89\xa5", "\\ge "}, {"\xe2\x89\xa0", "\\ne "},
        {"\xe2\x88\x9e", "\\infty "}, {"\xe2\x82\xac", ""},       {"\xc2\xa3", ""},         {"\xc2\xa5", ""},
        {"\xe2\x82\xb9", ""},        {"\xc2\xa0", " "},        {"\xe2\x80\xaf", " "},    {"\xe2\x80\x89", " "},
    };
    for (size_t i = 0; i < sizeof uni / sizeof *uni; i++) s = replace_all(s, uni[i][0], uni[i][1]);
    return s;
}

/* ---- pass 2: commands ----------------------------------------------------------------- */
typedef struct { const char *from, *to; } cmd_map;

static const cmd_map cmd_table[] = {
    /* dropped (to == "") */
    {"left", ""}, {"right", ""}, {"mleft", ""}, {"mright", ""}, {"bigl", ""}, {"bigr", ""}, {"Bigl", ""},
    {"Bigr", ""}, {"big", ""}, {"Big", ""}, {"bigg", ""}, {"Bigg", ""}, {"biggl", ""}, {"biggr", ""},
    {"Biggl", ""}, {"Biggr", ""}, {"displaystyle", ""}, {"textstyle", ""}, {"scriptstyle", ""},
    {"limits", ""}, {"nolimits", ""}, {"quad", " "}, {"qquad", " "}, {"enspace", " "}, {"thinspace", " "},
    {"medspace", " "}, {"thickspace", " "}, {"negthinspace", ""}, {"hfill", " "}, {"circ", ""}, {"dots", " "},
    {"ldots", " "}, {"cdots", " "}, {"dotsc", " "}, {"dotsb", " "}, {"boxed", ""}, {"fbox", ""}, {"underline", ""},
    {"phantom", ""}, {"mathstrut", ""}, {"strut", ""}, {"rm", ""}, {"bf", ""}, {"it", ""},
    /* renamed */
    {"dfrac", "\\frac"}, {"tfrac", "\\frac"}, {"cfrac", "\\frac"}, {"dbinom", "\\binom"}, {"tbinom", "\\binom"},
    {"mathrm", "\\text"}, {"mathbf", "\\text"}, {"mathit", "\\text"}, {"textbf", "\\text"}, {"textit", "\\text"},
    {"textrm", "\\text"}, {"textnormal", "\\text"}, {"mbox", "\\text"}, {"hbox", "\\text"}, {"mathsf", "\\text"},
    {"textsf", "\\text"}, {"texttt", "\\text"}, {"mathtt", "\\text"}, {"textup", "\\text"}, {"emph", "\\text"},
    {"boldsymbol", "\\text"}, {"bm", "\\text"}, {"operatorname", "\\text"},
    {"leq", "\\le "}, {"leqslant", "\\le "}, {"le", "\\le "}, {"geq", "\\ge "}, {"geqslant", "\\ge "}, {"ge", "\\ge "},
    {"neq", "\\ne "}, {"ne", "\\ne "}, {"lt", "<"}, {"gt", ">"}, {"cdot", "*"}, {"times", "*"}, {"ast", "*"},
    {"div", "/"}, {"lbrace", "\\{"}, {"rbrace", "\\}"}, {"langle", "("}, {"rangle", ")"}, {"lvert", "|"},
    {"rvert", "|"}, {"vert", "|"}, {"infin", "\\infty "}, {"varpi", "\\pi "},
};

static char *pass_commands(const char *s) {
    vf_buf b = {0};
    for (size_t i = 0; s[i];) {
        char c = s[i];
        if (c == '\\' && isalpha((unsigned char)s[i + 1])) {
            size_t j = i + 1;
            while (isalpha((unsigned char)s[j])) j++;
            size_t len = j - i - 1;
            const cmd_map *m = NULL;
            for (size_t k = 0; k < sizeof cmd_table / sizeof *cmd_table; k++)
                if (strlen(cmd_table[k].from) == len && !memcmp(cmd_table[k].from, s + i + 1, len)) { m = &cmd_table[k]; break; }
            if (!m) { vf_buf_putn(&b, s + i, j - i); i = j; continue; }
            bool sizing = !strcmp(m->to, "") && (m->from[0] == 'l' || m->from[0] == 'r' || m->from[0] == 'm' ||
                                                 m->from[0] == 'b' || m->from[0] == 'B');
            vf_buf_puts(&b, m->to);
            i = j;
            if (sizing && s[i] == '.') i++; /* \left. and \right. are invisible */
            continue;
        }
        if (c == '\\' && s[i + 1]) {
            char d = s[i + 1];
            if (d == ',' || d == ';' || d == ':' || d == '!' || d == '>') {
                i += 2;
                if (d == '!') while (s[i] == ' ') i++; /* "11,\! 111" is one number */
                continue;
            }
            if (d == ' ') { vf_buf_putc(&b, ' '); i += 2; continue; }
            if (d == '$') { i += 2; continue; }
            if (d == '%') { vf_buf_putc(&b, '%'); i += 2; continue; }
            vf_buf_putn(&b, s + i, 2);
            i += 2;
            continue;
        }
        if (c == '$') { i++; continue; }
        if (c == '~' || c == '\n' || c == '\t' || c == '\r') { vf_buf_putc(&b, ' '); i++; continue; }
        vf_buf_putc(&b, c);
        i++;
    }
    return vf_buf_take(&b);
}

/* ---- pass 3: words ------------------------------------------------------------------- */
static bool word_at(const char *s, size_t i, const char *w, size_t start) {
    size_t n = strlen(w);
    if (strncasecmp(s + i, w, n)) return false;
    if (i > start && isalpha((unsigned char)s[i - 1])) return false;
    if (i > 0 && s[i - 1] == '\\') return false;
    return !isalpha((unsigned char)s[i + n]);
}

static char *pass_words(char *s) {
    if (!s) return NULL;
    s = replace_all(s, "\\text{percent}", "%");
    s = replace_all(s, "\\text{ percent}", "%");
    s = replace_all(s, "\\text{ and }", ",");
    s = replace_all(s, "\\text{and}", ",");
    s = replace_all(s, "\\text{ or }", ",");
    s = replace_all(s, "\\text{or}", ",");
    if (!s) return NULL;
    vf_buf b = {0};
    int depth_text = 0; /* inside \text{…}: leave words alone */
    size_t text_brace = 0;
    for (size_t i = 0; s[i];) {
        if (!depth_text && !strncmp(s + i, "\\text{", 6)) {
            depth_text = 1;
            text_brace = 0;
            vf_buf_putn(&b, s + i, 6);
            i += 6;
            continue;
        }
        if (depth_text) {
            if (s[i] == '{') text_brace++;
            else if (s[i] == '}') { if (text_brace == 0) depth_text = 0; else text_brace--; }
            vf_buf_putc(&b, s[i++]);
            continue;
        }
        size_t wl = word_at(s, i, "percentage", 0) ? 10 : word_at(s, i, "percent", 0) ? 7 : word_at(s, i, "pct", 0) ? 3 : 0;
        if (wl) { /* "28 percent" → "28%" */
            while (b.n && b.s[b.n - 1] == ' ') b.s[--b.n] = 0;
            vf_buf_putc(&b, '%');
            i += wl;
            continue;
        }
        if (word_at(s, i, "and", 0) || word_at(s, i, "or", 0)) {
            size_t n = s[i] == 'a' || s[i] == 'A' ? 3 : 2;
            /* drop a comma right before ("1, and 2") */
            while (b.n && b.s[b.n - 1] == ' ') b.n--;
            if (b.n && b.s[b.n - 1] == ',') b.n--;
            if (b.s) b.s[b.n] = 0;
            vf_buf_putc(&b, ',');
            i += n;
            continue;
        }
        vf_buf_putc(&b, s[i++]);
    }
    free(s);
    return vf_buf_take(&b);
}

/* ---- pass 4: numbers ------------------------------------------------------------------- */
static char *pass_numbers(char *s) {
    if (!s) return NULL;
    vf_buf b = {0};
    for (size_t i = 0; s[i];) {
        /* 1{,}000 → 1,000 (thousands, removed below) ; 3{,}5 → 3,5 (a list) */
        if (!strncmp(s + i, "{,}", 3) && i > 0 && isdigit((unsigned char)s[i - 1]) && isdigit((unsigned char)s[i + 3])) {
            size_t d = 0;
            while (isdigit((unsigned char)s[i + 3 + d])) d++;
            vf_buf_putc(&b, ','); /* 3{,}5 is the list 3, 5 (as math-verify reads it) */
            i += 3;
            continue;
        }
        vf_buf_putc(&b, s[i++]);
    }
    free(s);
    s = vf_buf_take(&b);
    if (!s) return NULL;
    /* thousands: d{1,3}(,ddd)+ not touching other digits or a decimal point */
    vf_buf o = {0};
    for (size_t i = 0; s[i];) {
        bool start = isdigit((unsigned char)s[i]) && (i == 0 || (!isdigit((unsigned char)s[i - 1]) && s[i - 1] != '.'));
        if (start) {
            size_t j = i;
            while (isdigit((unsigned char)s[j])) j++;
            size_t lead = j - i, groups = 0, k = j;
            while (lead <= 3 && s[k] == ',' && isdigit((unsigned char)s[k + 1]) && isdigit((unsigned char)s[k + 2]) &&
                   isdigit((unsigned char)s[k + 3]) && !isdigit((unsigned char)s[k + 4])) {
                k += 4;
                groups++;
            }
            if (groups) {
                for (size_t t = i; t < k; t++)
                    if (s[t] != ',') vf_buf_putc(&o, s[t]);
                i = k;
                continue;
            }
            vf_buf_putn(&o, s + i, j - i);
            i = j;
            continue;
        }
        vf_buf_putc(&o, s[i++]);
    }
    free(s);
    return vf_buf_take(&o);
}

/* ---- pass 5: the tail ------------------------------------------------------------------ */
static const char *const unit_words[] = {
    "cm", "mm", "km", "m", "kg", "g", "mg", "lb", "lbs", "oz", "ft", "feet", "foot", "inch", "inche", "in", "yd", "yard",
    "mile", "mi", "mph", "kmh", "kph", "hour", "hr", "h", "minute", "min", "second", "sec", "s", "day", "week",
    "month", "year", "yr", "dollar", "cent", "euro", "pound", "rupee", "yen", "unit", "degree", "deg", "meter",
    "metre", "liter", "litre", "l", "ml", "gallon", "gal", "cup", "acre", "hectare", "sq", "square", "cubic",
    "point", "people", "person", "student", "child", "children", "page", "book", "apple", "egg", "ticket",
    "item", "piece", "time", "way", "candy", "candie", "box", "boxe", "bag", "ounce", "quart", "pint", "ton",
    "tonne", "watt", "volt", "ohm", "hz", "step", "mark", "coin", "toy", "tile", "bottle", "car", "marble",
    "sheep", "cookie", "slice", "pie", "cake", "flower", "tree", "bird", "dog", "cat", "chicken", "cow",
    "sticker", "pencil", "pen", "card", "game", "song", "mile", "lap", "room", "seat", "shirt", "sandwich",
    "sandwiche", "muffin", "cupcake", "animal", "fish", "legs", "leg", "wheel", "am", "pm", "o'clock", NULL,
};

static bool is_unit_word(const char *w, size_t n) {
    for (int k = 0; unit_words[k]; k++) {
        size_t u = strlen(unit_words[k]);
        if (strncasecmp(w, unit_words[k], u)) continue;
        if (n == u || (n == u + 1 && tolower((unsigned char)w[u]) == 's') ||
            (n == u + 2 && !strncasecmp(w + u, "es", 2)))
            return true;
    }
    return false;
}

static void rtrim(char *s) {
    size_t n = strlen(s);
    while (n && (isspace((unsigned char)s[n - 1]))) s[--n] = 0;
}

/* Index of the \text{ whose group ends exactly at s[end-1] == '}', or -1. */
static long trailing_text_start(const char *s, size_t end) {
    if (end == 0 || s[end - 1] != '}') return -1;
    int depth = 0;
    for (size_t i = end; i-- > 0;) {
        if (s[i] == '}') depth++;
        else if (s[i] == '{') {
            if (--depth == 0) {
                if (i >= 5 && !strncmp(s + i - 5, "\\text", 5)) return (long)(i - 5);
                return -1;
            }
        }
    }
    return -1;
}

static void pass_tail(char *s) {
    for (int round = 0; round < 4; round++) {
        rtrim(s);
        size_t n = strlen(s);
        /* trailing punctuation: "5." "5," (not "\,"), but keep "..." inside numbers */
        while (n && (s[n - 1] == '.' || s[n - 1] == ',' || s[n - 1] == ';' || s[n - 1] == ':') &&
               !(n >= 2 && s[n - 2] == '\\')) {
            s[--n] = 0;
            rtrim(s);
            n = strlen(s);
        }
        /* trailing \text{…} with an optional ^2 / ^{2} */
        size_t end = n;
        if (end >= 2 && s[end - 2] == '^' && isdigit((unsigned char)s[end - 1])) end -= 2;
        else if (end >= 4 && !strncmp(s + end - 4, "^{", 2) && isdigit((unsigned char)s[end - 2]) && s[end - 1] == '}') end -= 4;
        long t = trailing_text_start(s, end);
        if (t > 0) {
            char save = s[t];
            s[t] = 0;
            char *probe = s;
            while (isspace((unsigned char)*probe)) probe++;
            if (*probe) { rtrim(s); continue; }
            s[t] = save;
        }
        /* trailing unit word after a digit, } or space */
        size_t w = n;
        while (w && isalpha((unsigned char)s[w - 1])) w--;
        if (w < n && w > 0 && (w == 0 || s[w - 1] != '\\') && is_unit_word(s + w, n - w)) {
            size_t p = w;
            while (p && s[p - 1] == ' ') p--;
            if (p && (isdigit((unsigned char)s[p - 1]) || s[p - 1] == '}' || p < w)) {
                s[w] = 0;
                continue;
            }
        }
        break;
    }
    rtrim(s);
    char *p = s;
    while (isspace((unsigned char)*p)) p++;
    if (p != s) memmove(s, p, strlen(p) + 1);
}

int vf_normalize(const char *in, char **out) {
    *out = NULL;
    char *s = rt_strdup(in);
    if (!s) return RT_ENOMEM;
    s = pass_symbols(s);
    if (!s) return rt_fail(RT_ENOMEM, "normalizing an answer");
    char *t = pass_commands(s);
    free(s);
    t = pass_words(t);
    t = pass_numbers(t);
    if (!t) return rt_fail(RT_ENOMEM, "normalizing an answer");
    pass_tail(t);
    *out = t;
    return 0;
}

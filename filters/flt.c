/* filters/flt.c — configuration, splitting, format, readability, length and flt_run
 * (see flt.h). Language lives in flt_lang.c, repetition in flt_repeat.c. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "filters/flt.h"
#include "filters/verify.h"

const char *flt_name(flt_kind k) {
    static const char *const names[] = {"format", "language", "readability", "repetition", "length"};
    return (unsigned)k < FLT_COUNT ? names[k] : "?";
}

void flt_config_default(flt_config *c) {
    memset(c, 0, sizeof *c);
    c->enabled = (1u << FLT_COUNT) - 1;
    c->think_open = "<think>";
    c->think_close = "</think>";
    c->require_final_answer = true;
    c->min_script_share = 0.9;
    c->min_letters = 20;
    c->max_paragraph_chars = 3000;
    c->max_dup_line_frac = 0.30;
    c->max_dup_line_char_frac = 0.20;
    const double top[3] = {0.20, 0.18, 0.16}, dup[6] = {0.15, 0.14, 0.13, 0.12, 0.11, 0.10};
    memcpy(c->max_top_ngram_char_frac, top, sizeof top);
    memcpy(c->max_dup_ngram_char_frac, dup, sizeof dup);
    c->max_repeated_substring = 1000;
    c->min_compression_ratio = 0.10;
    c->min_compress_bytes = 2000;
}

static size_t count_occ(const char *s, const char *tag) {
    size_t n = 0, tl = strlen(tag);
    if (!tl) return 0;
    for (const char *p = s; (p = strstr(p, tag)); p += tl) n++;
    return n;
}

void flt_split_text(const flt_config *c, const char *text, flt_split *out) {
    size_t len = strlen(text);
    memset(out, 0, sizeof *out);
    out->answer_e = len;
    const char *open = c->think_open && *c->think_open ? strstr(text, c->think_open) : NULL;
    const char *close = c->think_close && *c->think_close ? strstr(text, c->think_close) : NULL;
    if (!close) return;
    size_t tb;
    if (open && open < close) tb = (size_t)(open - text) + strlen(c->think_open);
    else if (c->open_tag_optional && !open) tb = 0;
    else return;
    out->found = true;
    out->think_b = tb;
    out->think_e = (size_t)(close - text);
    out->answer_b = out->think_e + strlen(c->think_close);
}

static bool blank(const char *s, size_t b, size_t e) {
    for (size_t i = b; i < e; i++)
        if (!isspace((unsigned char)s[i])) return false;
    return true;
}

static void verdict(flt_verdict *v, flt_kind k, bool pass, double score, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void verdict(flt_verdict *v, flt_kind k, bool pass, double score, const char *fmt, ...) {
    v->kind = k;
    v->pass = pass;
    v->score = score;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->reason, sizeof v->reason, fmt, ap);
    va_end(ap);
}

/* ---- format -------------------------------------------------------------------------------- */
int flt_format(const flt_config *c, const flt_sample *s, flt_verdict *v) {
    const char *t = s->text ? s->text : "";
    if (s->finish_reason && !strcmp(s->finish_reason, "length")) {
        verdict(v, FLT_FORMAT, false, 0, "truncated: finish_reason is length");
        return 0;
    }
    size_t n_open = count_occ(t, c->think_open), n_close = count_occ(t, c->think_close);
    if (n_close == 0) {
        verdict(v, FLT_FORMAT, false, 0, "no %s: the thinking block is not closed", c->think_close);
        return 0;
    }
    if (n_close > 1 || n_open > 1) {
        verdict(v, FLT_FORMAT, false, 0, "%zu %s and %zu %s tags: want exactly one of each", n_open, c->think_open,
                n_close, c->think_close);
        return 0;
    }
    if (n_open == 0 && !c->open_tag_optional) {
        verdict(v, FLT_FORMAT, false, 0, "no %s before %s", c->think_open, c->think_close);
        return 0;
    }
    flt_split sp;
    flt_split_text(c, t, &sp);
    if (!sp.found) {
        verdict(v, FLT_FORMAT, false, 0, "%s comes after %s", c->think_open, c->think_close);
        return 0;
    }
    if (n_open && !blank(t, 0, sp.think_b - strlen(c->think_open))) {
        verdict(v, FLT_FORMAT, false, 0, "text before %s", c->think_open);
        return 0;
    }
    if (blank(t, sp.think_b, sp.think_e)) {
        verdict(v, FLT_FORMAT, false, 0, "empty thinking block");
        return 0;
    }
    if (blank(t, sp.answer_b, sp.answer_e)) {
        verdict(v, FLT_FORMAT, false, 0, "no answer after %s", c->think_close);
        return 0;
    }
    if (c->require_final_answer) {
        char *ans = NULL;
        int rc = vf_extract_answer(t + sp.answer_b, false, &ans);
        if (rc) return rc;
        if (!ans) {
            verdict(v, FLT_FORMAT, false, 0, "no final answer (\\boxed{}, \"#### N\" or \"the answer is\") after %s",
                    c->think_close);
            return 0;
        }
        free(ans);
    }
    verdict(v, FLT_FORMAT, true, 1, "ok: one thinking block and an answer");
    return 0;
}

/* ---- readability ------------------------------------------------------------------------------ */
int flt_readability(const flt_config *c, const flt_sample *s, flt_verdict *v) {
    const char *t = s->text ? s->text : "";
    size_t longest = 0, at = 0, start = 0, i = 0, len = strlen(t);
    while (i <= len) {
        /* a paragraph ends at a blank line or the end */
        bool end = i == len;
        size_t next = i + 1;
        if (!end && t[i] == '\n') {
            size_t j = i + 1;
            while (j < len && (t[j] == ' ' || t[j] == '\t' || t[j] == '\r')) j++;
            if (j < len && t[j] == '\n') { end = true; next = j + 1; }
        }
        if (end) {
            if (i - start > longest) { longest = i - start; at = start; }
            start = next;
            i = next;
            continue;
        }
        i++;
    }
    if (c->max_paragraph_chars && longest > c->max_paragraph_chars) {
        verdict(v, FLT_READABILITY, false, (double)longest,
                "a paragraph of %zu characters (at byte %zu), more than %zu", longest, at, c->max_paragraph_chars);
        return 0;
    }
    if (!s->code_task && !c->allow_code_blocks) {
        const char *fence = strstr(t, "```");
        if (fence) {
            verdict(v, FLT_READABILITY, false, (double)longest, "a code block (``` at byte %zu) in a task that is not about code",
                    (size_t)(fence - t));
            return 0;
        }
    }
    verdict(v, FLT_READABILITY, true, (double)longest, "ok: longest paragraph %zu characters", longest);
    return 0;
}

/* ---- length --------------------------------------------------------------------------------------- */
static int64_t words(const char *s, size_t b, size_t e) {
    int64_t n = 0;
    bool in = false;
    for (size_t i = b; i < e; i++) {
        bool sp = isspace((unsigned char)s[i]);
        if (!sp && !in) n++;
        in = !sp;
    }
    return n;
}

int flt_length(const flt_config *c, const flt_sample *s, flt_verdict *v) {
    const char *t = s->text ? s->text : "";
    flt_split sp;
    flt_split_text(c, t, &sp);
    int64_t th = s->think_tokens >= 0 ? s->think_tokens : (sp.found ? words(t, sp.think_b, sp.think_e) : 0);
    int64_t an = s->answer_tokens >= 0 ? s->answer_tokens : words(t, sp.answer_b, sp.answer_e);
    double total = (double)(th + an);
    const char *unit = s->think_tokens >= 0 && s->answer_tokens >= 0 ? "tokens" : "tokens (estimated as words)";
    if (c->min_think_tokens && th < c->min_think_tokens) {
        verdict(v, FLT_LENGTH, false, total, "thinking has %lld %s, fewer than %lld", (long long)th, unit, (long long)c->min_think_tokens);
        return 0;
    }
    if (c->max_think_tokens && th > c->max_think_tokens) {
        verdict(v, FLT_LENGTH, false, total, "thinking has %lld %s, more than %lld", (long long)th, unit, (long long)c->max_think_tokens);
        return 0;
    }
    if (c->min_answer_tokens && an < c->min_answer_tokens) {
        verdict(v, FLT_LENGTH, false, total, "answer has %lld %s, fewer than %lld", (long long)an, unit, (long long)c->min_answer_tokens);
        return 0;
    }
    if (c->max_answer_tokens && an > c->max_answer_tokens) {
        verdict(v, FLT_LENGTH, false, total, "answer has %lld %s, more than %lld", (long long)an, unit, (long long)c->max_answer_tokens);
        return 0;
    }
    verdict(v, FLT_LENGTH, true, total, "ok: thinking %lld, answer %lld %s", (long long)th, (long long)an, unit);
    return 0;
}

/* ---- all --------------------------------------------------------------------------------------- */
int flt_run(const flt_config *c, const flt_sample *s, flt_verdict *out, size_t *n_out) {
    static int (*const fns[FLT_COUNT])(const flt_config *, const flt_sample *, flt_verdict *) = {
        flt_format, flt_language, flt_readability, flt_repetition, flt_length};
    *n_out = 0;
    for (int k = 0; k < FLT_COUNT; k++) {
        if (!(c->enabled & (1u << k))) continue;
        int rc = fns[k](c, s, &out[*n_out]);
        if (rc) return rt_errorf(rc, "filter %s", flt_name((flt_kind)k));
        (*n_out)++;
    }
    return 0;
}

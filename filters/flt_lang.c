/* filters/flt_lang.c — script mix of thinking and answer against the prompt (see flt.h). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <utf8proc.h>

#include "filters/flt.h"

const char *flt_script_name(flt_script s) {
    static const char *const n[] = {"other", "Latin", "CJK", "Cyrillic", "Greek", "Arabic", "Hebrew", "Devanagari", "Thai"};
    return (unsigned)s < FLT_SCRIPT_COUNT ? n[s] : "?";
}

static flt_script script_of(utf8proc_int32_t cp) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= 0xC0 && cp <= 0x24F) || (cp >= 0x1E00 && cp <= 0x1EFF))
        return FLT_SCRIPT_LATIN;
    if ((cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0xF900 && cp <= 0xFAFF) ||
        (cp >= 0x20000 && cp <= 0x2FFFF) || (cp >= 0x3040 && cp <= 0x30FF) || (cp >= 0xAC00 && cp <= 0xD7AF) ||
        (cp >= 0x1100 && cp <= 0x11FF) || (cp >= 0x3130 && cp <= 0x318F))
        return FLT_SCRIPT_CJK;
    if (cp >= 0x400 && cp <= 0x52F) return FLT_SCRIPT_CYRILLIC;
    if (cp >= 0x370 && cp <= 0x3FF) return FLT_SCRIPT_GREEK;
    if ((cp >= 0x600 && cp <= 0x6FF) || (cp >= 0x750 && cp <= 0x77F)) return FLT_SCRIPT_ARABIC;
    if (cp >= 0x590 && cp <= 0x5FF) return FLT_SCRIPT_HEBREW;
    if (cp >= 0x900 && cp <= 0x97F) return FLT_SCRIPT_DEVANAGARI;
    if (cp >= 0xE00 && cp <= 0xE7F) return FLT_SCRIPT_THAI;
    return FLT_SCRIPT_OTHER;
}

void flt_script_counts(const char *text, size_t len, size_t counts[FLT_SCRIPT_COUNT]) {
    memset(counts, 0, sizeof(size_t) * FLT_SCRIPT_COUNT);
    const unsigned char *s = (const unsigned char *)text;
    bool in_math = false, in_code = false;
    for (size_t i = 0; i < len;) {
        if (!in_math && i + 2 < len && !memcmp(s + i, "```", 3)) { in_code = !in_code; i += 3; continue; }
        if (in_code) { i++; continue; }
        if (s[i] == '$') { in_math = !in_math; i++; continue; }
        if (in_math) { i++; continue; }
        if (s[i] == '\\') { /* a LaTeX command: \frac, \text, … */
            i++;
            while (i < len && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z'))) i++;
            continue;
        }
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(len - i), &cp);
        if (k <= 0) { i++; continue; }
        utf8proc_category_t cat = utf8proc_category(cp);
        if (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) counts[script_of(cp)]++;
        i += (size_t)k;
    }
}

static flt_script dominant(const size_t counts[FLT_SCRIPT_COUNT], size_t *total) {
    flt_script best = FLT_SCRIPT_OTHER;
    *total = 0;
    for (int k = 0; k < FLT_SCRIPT_COUNT; k++) {
        *total += counts[k];
        if (counts[k] > counts[best]) best = (flt_script)k;
    }
    return best;
}

int flt_language(const flt_config *c, const flt_sample *s, flt_verdict *v) {
    const char *t = s->text ? s->text : "";
    size_t cnt[FLT_SCRIPT_COUNT], total;
    flt_script want;
    const char *from = "prompt";
    if (s->prompt) flt_script_counts(s->prompt, strlen(s->prompt), cnt);
    if (!s->prompt || (dominant(cnt, &total), total == 0)) {
        flt_script_counts(t, strlen(t), cnt);
        from = "sample";
    }
    want = dominant(cnt, &total);
    v->kind = FLT_LANGUAGE;
    if (total == 0) {
        v->pass = true;
        v->score = 1;
        snprintf(v->reason, sizeof v->reason, "ok: no letters to judge");
        return 0;
    }
    flt_split sp;
    flt_split_text(c, t, &sp);
    struct { const char *name; size_t b, e; } parts[2] = {{"thinking", sp.think_b, sp.think_e}, {"answer", sp.answer_b, sp.answer_e}};
    double worst = 1;
    for (int k = 0; k < 2; k++) {
        if (k == 0 && !sp.found) continue;
        size_t pc[FLT_SCRIPT_COUNT], pt;
        flt_script_counts(t + parts[k].b, parts[k].e - parts[k].b, pc);
        dominant(pc, &pt);
        if (pt < (size_t)(c->min_letters > 0 ? c->min_letters : 0) || pt == 0) continue;
        double share = (double)pc[want] / (double)pt;
        if (share < worst) worst = share;
        if (share < c->min_script_share) {
            /* name the largest other script */
            flt_script other = FLT_SCRIPT_OTHER;
            size_t om = 0;
            for (int q = 0; q < FLT_SCRIPT_COUNT; q++)
                if (q != (int)want && pc[q] > om) { om = pc[q]; other = (flt_script)q; }
            v->pass = false;
            v->score = share;
            snprintf(v->reason, sizeof v->reason, "%s is %.0f%% %s (the %s's script), %.0f%% %s; want at least %.0f%%",
                     parts[k].name, 100 * share, flt_script_name(want), from, 100.0 * (double)om / (double)pt,
                     flt_script_name(other), 100 * c->min_script_share);
            return 0;
        }
    }
    v->pass = true;
    v->score = worst;
    snprintf(v->reason, sizeof v->reason, "ok: %.0f%% %s (the %s's script)", 100 * worst, flt_script_name(want), from);
    return 0;
}

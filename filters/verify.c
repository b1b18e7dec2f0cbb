/* filters/verify.c — the verifier's entry points (see verify.h and vf_int.h). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "filters/verify.h"
#include "filters/vf_int.h"

void vf_opts_default(vf_opts *o) {
    memset(o, 0, sizeof *o);
    o->float_digits = 6;
    o->seed = 0x5eed5eedULL;
}

void vf_result_free(vf_result *r) {
    if (!r) return;
    free(r->pred_answer);
    free(r->gold_answer);
    memset(r, 0, sizeof *r);
}

int vf_extract_answer(const char *solution, bool last_number, char **out) {
    vf_source src;
    return vf_extract(solution, true, last_number, out, &src);
}

int vf_normalize_answer(const char *answer, char **out) { return vf_normalize(answer, out); }

int vf_parse_answer(const char *answer, char **out) {
    *out = NULL;
    char *norm;
    int rc = vf_normalize(answer, &norm);
    if (rc) return rc;
    vf_arena *a;
    if ((rc = vf_arena_new(&a))) { free(norm); return rc; }
    vnode *n;
    rc = vf_parse(a, norm, &n);
    if (!rc) {
        vf_buf b = {0};
        vf_node_str(n, &b);
        *out = vf_buf_take(&b);
        if (!*out) rc = rt_fail(RT_ENOMEM, "printing a parse");
    }
    vf_arena_free(a);
    free(norm);
    return rc;
}

/* Whitespace-free copy for the string fallback. */
static void squeeze(char *s) {
    char *o = s;
    for (char *p = s; *p; p++)
        if (!isspace((unsigned char)*p)) *o++ = *p;
    *o = 0;
}

/* 1 equal, 0 different, <0 error. */
static int compare_answers(const vf_opts *o, const char *gold, const char *pred, const char **why) {
    char *gn = NULL, *pn = NULL;
    vf_arena *a = NULL;
    int rc = vf_normalize(gold, &gn);
    if (!rc) rc = vf_normalize(pred, &pn);
    if (!rc) rc = vf_arena_new(&a);
    if (rc) { free(gn); free(pn); return rc; }
    vnode *g = NULL, *p = NULL;
    int rg = vf_parse(a, gn, &g), rp = vf_parse(a, pn, &p);
    int res;
    if (rg == RT_ENOMEM || rp == RT_ENOMEM) {
        res = RT_ENOMEM;
    } else if (rg || rp) {
        squeeze(gn);
        squeeze(pn);
        res = *gn && !strcmp(gn, pn);
        *why = res ? "equal as text" : rg ? "gold does not parse; texts differ" : "pred does not parse; texts differ";
    } else {
        vf_cmp_opts co = {o->float_digits, o->decimal_places, o->seed};
        res = vf_equal(g, p, &co);
        *why = res ? "equal" : "different";
    }
    rt_errclear();
    vf_arena_free(a);
    free(gn);
    free(pn);
    return res;
}

bool vf_same_answer(const vf_opts *o, const char *gold, const char *pred) {
    const char *why;
    return compare_answers(o, gold, pred, &why) == 1;
}

/* The rule that decided: where the answer was found, then how the two compared. */
static const char *reason_of(vf_source src, const char *why) {
    static const char *const table[][5] = {
        {"boxed answer equal", "boxed answer different", "boxed answer equal as text", "boxed answer: gold does not parse; texts differ", "boxed answer: pred does not parse; texts differ"},
        {"#### answer equal", "#### answer different", "#### answer equal as text", "#### answer: gold does not parse; texts differ", "#### answer: pred does not parse; texts differ"},
        {"answer phrase equal", "answer phrase different", "answer phrase equal as text", "answer phrase: gold does not parse; texts differ", "answer phrase: pred does not parse; texts differ"},
        {"whole text equal", "whole text different", "whole text equal as text", "whole text: gold does not parse; texts differ", "whole text: pred does not parse; texts differ"},
        {"last number equal", "last number different", "last number equal as text", "last number: gold does not parse; texts differ", "last number: pred does not parse; texts differ"},
    };
    static const char *const whys[] = {"equal", "different", "equal as text", "gold does not parse; texts differ",
                                       "pred does not parse; texts differ"};
    int row = src == VF_FROM_BOXED ? 0 : src == VF_FROM_HASH ? 1 : src == VF_FROM_PHRASE ? 2 : src == VF_FROM_WHOLE ? 3 : 4;
    for (int k = 0; k < 5; k++)
        if (!strcmp(why, whys[k])) return table[row][k];
    return why;
}

int vf_verify(const vf_opts *o, const char *gold, const char *pred, vf_result *out) {
    memset(out, 0, sizeof *out);
    vf_opts def;
    if (!o) { vf_opts_default(&def); o = &def; }
    vf_source src;
    int rc;
    /* gold: its box or #### line when it has one, else the whole text */
    if (strstr(gold, "\\boxed") || strstr(gold, "\\fbox") || strstr(gold, "####")) {
        if ((rc = vf_extract(gold, true, false, &out->gold_answer, &src))) return rc;
    }
    if (!out->gold_answer) {
        size_t b = 0, e = strlen(gold);
        while (b < e && isspace((unsigned char)gold[b])) b++;
        while (e > b && isspace((unsigned char)gold[e - 1])) e--;
        if (e - b > VF_MAX_ANSWER) e = b + VF_MAX_ANSWER;
        out->gold_answer = rt_malloc(e - b + 1);
        if (!out->gold_answer) return RT_ENOMEM;
        memcpy(out->gold_answer, gold + b, e - b);
        out->gold_answer[e - b] = 0;
    }
    if ((rc = vf_extract(pred, true, o->last_number, &out->pred_answer, &src))) { vf_result_free(out); return rc; }
    if (!*out->gold_answer) { out->reason = "empty gold answer"; return 0; }
    if (!out->pred_answer) { out->reason = "no answer in pred"; return 0; }
    int res = compare_answers(o, out->gold_answer, out->pred_answer, &out->reason);
    if (res < 0) { vf_result_free(out); return rt_fail(res, "verifying an answer: out of memory"); }
    out->reason = reason_of(src, out->reason);
    out->correct = res == 1;
    return 0;
}

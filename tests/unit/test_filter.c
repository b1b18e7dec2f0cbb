/* filters/flt: format, language, readability, repetition, length — hand-worked cases. */
#include <stdlib.h>
#include <string.h>

#include "filters/flt.h"
#include "testutil.h"

static flt_sample sample(const char *text) {
    return (flt_sample){.prompt = NULL, .text = text, .finish_reason = "stop", .think_tokens = -1, .answer_tokens = -1};
}

static flt_verdict run1(int (*fn)(const flt_config *, const flt_sample *, flt_verdict *), const flt_config *c,
                        const flt_sample *s) {
    flt_verdict v;
    memset(&v, 0x55, sizeof v);
    cr_assert_eq(fn(c, s, &v), 0, "%s", rt_errmsg());
    cr_assert(v.reason[0], "empty reason");
    return v;
}

/* ---- format ---- */
Test(filter_format, well_formed_passes) {
    flt_config c;
    flt_config_default(&c);
    flt_sample s = sample("<think>\n2 + 2 is 4.\n</think>\nThe answer is $\\boxed{4}$.");
    flt_verdict v = run1(flt_format, &c, &s);
    cr_assert(v.pass, "%s", v.reason);
    cr_assert_eq(v.score, 1);
}

Test(filter_format, each_defect_has_its_reason) {
    flt_config c;
    flt_config_default(&c);
    struct { const char *text, *finish, *needle; } cases[] = {
        {"<think>a</think>\n\\boxed{1}", "length", "truncated"},
        {"<think>never closed \\boxed{1}", "stop", "not closed"},
        {"<think>a</think><think>b</think>\\boxed{1}", "stop", "exactly one"},
        {"a</think>\\boxed{1}", "stop", "no <think>"},
        {"</think><think>\\boxed{1}", "stop", "after"},
        {"hello <think>a</think>\\boxed{1}", "stop", "text before"},
        {"<think>  </think>\\boxed{1}", "stop", "empty thinking"},
        {"<think>a</think>\n \n", "stop", "no answer"},
        {"<think>a</think>\nI am not sure about this one at all.", "stop", "no final answer"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        flt_sample s = sample(cases[i].text);
        s.finish_reason = cases[i].finish;
        flt_verdict v = run1(flt_format, &c, &s);
        cr_assert(!v.pass, "%s passed", cases[i].text);
        cr_assert(strstr(v.reason, cases[i].needle), "%s: reason '%s' lacks '%s'", cases[i].text, v.reason, cases[i].needle);
        cr_assert_eq(v.score, 0);
    }
}

Test(filter_format, tags_are_configurable) {
    flt_config c;
    flt_config_default(&c);
    c.think_open = "<reasoning>";
    c.think_close = "</reasoning>";
    flt_sample s = sample("<reasoning>ok</reasoning>\n#### 12");
    cr_assert(run1(flt_format, &c, &s).pass);
    c.open_tag_optional = true; /* the chat template already opened the block */
    s = sample("thinking…</reasoning>\n#### 12");
    cr_assert(run1(flt_format, &c, &s).pass);
}

/* ---- language ---- */
Test(filter_language, same_script_passes_and_math_is_ignored) {
    flt_config c;
    flt_config_default(&c);
    flt_sample s = sample("<think>Let x be the number; then $\\frac{x}{2} = \\alpha\\beta\\gamma$ works out fine.</think>\n"
                          "So the answer is $\\boxed{4}$, as we computed above in detail.");
    s.prompt = "What is the number? Explain your reasoning.";
    flt_verdict v = run1(flt_language, &c, &s);
    cr_assert(v.pass, "%s", v.reason);
    cr_assert_float_eq(v.score, 1.0, 1e-12);
}

Test(filter_language, mixed_thinking_fails_with_the_share) {
    flt_config c;
    flt_config_default(&c);
    /* thinking: 30 Latin letters and 10 Han characters → 75% Latin */
    flt_sample s = sample("<think>abcde fghij klmno pqrst uvwxy zabcd 我们需要计算这个数字</think>\n"
                          "The answer is obviously four, see above: \\boxed{4}");
    s.prompt = "Compute the number, please.";
    flt_verdict v = run1(flt_language, &c, &s);
    cr_assert(!v.pass);
    cr_assert_float_eq(v.score, 0.75, 1e-12);
    cr_assert(strstr(v.reason, "thinking is 75% Latin") && strstr(v.reason, "25% CJK"), "%s", v.reason);
    c.min_script_share = 0.7;
    cr_assert(run1(flt_language, &c, &s).pass);
}

Test(filter_language, script_counts) {
    size_t n[FLT_SCRIPT_COUNT];
    const char *t = "Привет мир! abc αβγ 日本語 ```code skipped``` $x+y$ \\frac";
    flt_script_counts(t, strlen(t), n);
    cr_assert_eq(n[FLT_SCRIPT_CYRILLIC], 9);
    cr_assert_eq(n[FLT_SCRIPT_LATIN], 3);
    cr_assert_eq(n[FLT_SCRIPT_GREEK], 3);
    cr_assert_eq(n[FLT_SCRIPT_CJK], 3);
}

/* ---- readability ---- */
Test(filter_readability, longest_paragraph_and_code_blocks) {
    flt_config c;
    flt_config_default(&c);
    c.max_paragraph_chars = 10;
    flt_sample s = sample("short\n\n0123456789\n  \nab");
    flt_verdict v = run1(flt_readability, &c, &s);
    cr_assert(v.pass, "%s", v.reason);
    cr_assert_eq(v.score, 10);
    s = sample("short\n\n0123456789A\n\nab");
    v = run1(flt_readability, &c, &s);
    cr_assert(!v.pass);
    cr_assert_eq(v.score, 11);
    cr_assert(strstr(v.reason, "11 characters (at byte 7)"), "%s", v.reason);
    c.max_paragraph_chars = 100;
    s = sample("Here:\n```python\nprint(1)\n```");
    v = run1(flt_readability, &c, &s);
    cr_assert(!v.pass && strstr(v.reason, "code block"), "%s", v.reason);
    s.code_task = true;
    cr_assert(run1(flt_readability, &c, &s).pass);
}

/* ---- repetition ---- */
Test(filter_repetition, gopher_measures_hand_worked) {
    flt_repeat_stats st;
    /* lines a, b, a, a: 2 of 4 lines repeat; their 2 characters of 7 */
    cr_assert_eq(flt_repeat_measure("a\nb\na\na", 7, &st), 0);
    cr_assert_float_eq(st.dup_line_frac, 0.5, 1e-12);
    cr_assert_float_eq(st.dup_line_char_frac, 2.0 / 7, 1e-12);
    /* "x y x y x y": top 2-gram "x y" (3 chars) occurs 3 times in 11 chars */
    cr_assert_eq(flt_repeat_measure("x y x y x y", 11, &st), 0);
    cr_assert_float_eq(st.top_ngram_char_frac[0], 9.0 / 11, 1e-12);
    /* 10 words "a b c d e a b c d e": the second 5-gram run repeats: 5 chars of 19 */
    cr_assert_eq(flt_repeat_measure("a b c d e a b c d e", 19, &st), 0);
    cr_assert_float_eq(st.dup_ngram_char_frac[0], 5.0 / 19, 1e-12);
    cr_assert_float_eq(st.dup_ngram_char_frac[1], 0, 1e-12); /* no 6-gram occurs twice */
}

Test(filter_repetition, longest_repeated_substring) {
    size_t n;
    cr_assert_eq(flt_longest_repeat("banana", 6, &n), 0);
    cr_assert_eq(n, 3); /* "ana", overlapping */
    cr_assert_eq(flt_longest_repeat("abcdefg", 7, &n), 0);
    cr_assert_eq(n, 0);
    cr_assert_eq(flt_longest_repeat("abcXabcYabcZab", 14, &n), 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(flt_longest_repeat("aaaa", 4, &n), 0);
    cr_assert_eq(n, 3);
}

Test(filter_repetition, degenerate_loop_fails_and_prose_passes) {
    flt_config c;
    flt_config_default(&c);
    size_t n = 20000;
    char *loop = malloc(n + 1);
    const char *unit = "Wait, let me recompute the sum of the first terms again. ";
    size_t ul = strlen(unit), o = 0;
    while (o + ul < n) { memcpy(loop + o, unit, ul); o += ul; }
    loop[o] = 0;
    flt_sample s = sample(loop);
    flt_verdict v = run1(flt_repetition, &c, &s);
    cr_assert(!v.pass);
    cr_assert_gt(v.score, 1);
    s = sample("First we add the two numbers to get seven. Then we multiply by three, which gives twenty-one.\n"
               "Finally, subtracting one leaves twenty, so the answer is 20.");
    v = run1(flt_repetition, &c, &s);
    cr_assert(v.pass, "%s", v.reason);
    free(loop);
}

Test(filter_repetition, compression_ratio) {
    flt_repeat_stats st;
    size_t n = 10000;
    char *z = calloc(n + 1, 1);
    memset(z, 'z', n);
    cr_assert_eq(flt_repeat_measure(z, n, &st), 0);
    cr_assert_lt(st.compression_ratio, 0.01); /* 10000 equal bytes compress to a few dozen */
    cr_assert_eq(st.longest_repeat, n - 1);
    free(z);
}

/* ---- length ---- */
Test(filter_length, limits_from_counts_or_words) {
    flt_config c;
    flt_config_default(&c);
    c.max_think_tokens = 5;
    c.min_answer_tokens = 2;
    flt_sample s = sample("<think>one two three</think> final answer");
    flt_verdict v = run1(flt_length, &c, &s);
    cr_assert(v.pass, "%s", v.reason);
    cr_assert_eq(v.score, 5);
    s.think_tokens = 6;
    s.answer_tokens = 2;
    v = run1(flt_length, &c, &s);
    cr_assert(!v.pass);
    cr_assert(strstr(v.reason, "thinking has 6 tokens, more than 5"), "%s", v.reason);
    s.think_tokens = 1;
    s.answer_tokens = 1;
    v = run1(flt_length, &c, &s);
    cr_assert(!v.pass && strstr(v.reason, "answer has 1 tokens, fewer than 2"), "%s", v.reason);
}

/* ---- all ---- */
Test(filter_run, one_verdict_per_enabled_filter) {
    flt_config c;
    flt_config_default(&c);
    flt_sample s = sample("<think>We add 2 and 2.</think>\nThe answer is $\\boxed{4}$.");
    s.prompt = "What is 2 + 2?";
    flt_verdict v[FLT_COUNT];
    size_t n;
    cr_assert_eq(flt_run(&c, &s, v, &n), 0);
    cr_assert_eq(n, FLT_COUNT);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(v[i].kind, (flt_kind)i);
        cr_assert(v[i].pass, "%s: %s", flt_name(v[i].kind), v[i].reason);
    }
    c.enabled = (1u << FLT_FORMAT) | (1u << FLT_LENGTH);
    cr_assert_eq(flt_run(&c, &s, v, &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(v[1].kind, FLT_LENGTH);
}

/* filters/verify: answer extraction, normalization, parsing and comparison.
 *
 * Expected values are hand-worked (extraction and normalization follow the rules stated
 * in issue 5 and math-verify's documented behaviour) or math-verify's own verdicts
 * (REF_DIR/verify_cases.jsonl, written by tests/ref/gen_verify.py).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "filters/verify.h"
#include "testutil.h"

static char *extract(const char *s, bool last) {
    char *out = NULL;
    cr_assert_eq(vf_extract_answer(s, last, &out), 0);
    return out;
}

static void expect_extract(const char *s, bool last, const char *want) {
    char *got = extract(s, last);
    if (!want) cr_assert_null(got, "extract(%s) = %s, want none", s, got);
    else {
        cr_assert_not_null(got, "extract(%s): none, want %s", s, want);
        cr_assert_str_eq(got, want, "extract(%s)", s);
    }
    free(got);
}

Test(verify_extract, last_boxed_wins_and_braces_nest) {
    expect_extract("First \\boxed{1}. Then more text, much more than seventy characters of it, really.\n"
                   "So \\boxed{\\frac{1}{2}} is it.", false, "\\frac{1}{2}");
    expect_extract("\\boxed{\\left\\{1, 2\\right\\}}", false, "\\left\\{1, 2\\right\\}");
    expect_extract("the result is \\fbox{42}", false, "42");
    expect_extract("unclosed \\boxed{3 + ", false, "3 +");
    expect_extract("\\boxed 7 done", false, "7");
}

Test(verify_extract, adjacent_boxes_are_joined_with_commas) {
    expect_extract("The roots are \\boxed{2} and \\boxed{3}.", false, "2,3");
    expect_extract("x = \\boxed{1}, \\boxed{-1}", false, "1,-1");
}

Test(verify_extract, a_box_inside_math_counts_alone) {
    /* an earlier box in another $…$ span is not joined (math-verify reads the last span) */
    expect_extract("At first $\\boxed{0}$, but that was a mistake.\n\nRedoing it gives $\\boxed{9}$", false, "9");
}

Test(verify_extract, gsm8k_hash_line) {
    expect_extract("She has 3 + 4 = 7 apples.\n#### 7", false, "7");
    expect_extract("#### 1,000\n", false, "1,000");
    /* #### beats an earlier "answer" phrase */
    expect_extract("convert the answer to weeks: 28 days / 7 = 4 weeks\n#### 4", false, "4");
}

Test(verify_extract, answer_phrases) {
    expect_extract("Thus the answer is 18.", false, "18");
    expect_extract("The final answer is $\\frac{3}{4}$. I hope it is correct.", false, "\\frac{3}{4}");
    expect_extract("**Answer:** $x = 5$", false, "x = 5");
    expect_extract("to express the answer as a percentage: 90 / 450 * 100% = 20%\n", false, "20%");
    expect_extract("the answer from the previous step: $4.00 + $2.00 = $6.00\n", false, "6.00");
}

/* What math-verify 0.9 extracts from the same texts (parse(text)[1]). */
Test(verify_extract, issue19_prose_forms) {
    expect_extract("Final Answer: The smallest $k$ is 12.", false, "12");
    expect_extract("Final Answer: The smallest $k$ is $12$.", false, "12");
    expect_extract("It costs 3,14 \xe2\x82\xac", true, "3.14");          /* decimal comma in prose */
    expect_extract("So the result is 25,75", true, "25.75");
    expect_extract("The total is 2,500.75 USD.", true, "2,500.75");
    expect_extract("The answer is 2,575.", false, "2,575");                  /* thousands, not decimal */
    expect_extract("$y \\in \\boxed{[1,3) \\cup (5,7]}$", false, "[1,3) \\cup (5,7]");
    expect_extract("Step 1: we have 12 items.\n\nStep 2: 3 + 4 = 7.\n\nHence the total is 41.", true, "41");
}

Test(verify_extract, last_number_only_by_flag) {
    const char *s = "So she makes 9 * 2 = 18 dollars every day at the market, as computed above.";
    expect_extract(s, false, NULL);
    expect_extract(s, true, "18");
    expect_extract("Simplifying, we get $x = 7$ and that is all there is to this problem.", true, "x = 7");
    expect_extract("no numbers at all in this sentence, none whatsoever", true, NULL);
}

Test(verify_extract, short_bare_answers_are_their_own_answer) {
    expect_extract("  \\frac{1}{2} ", false, "\\frac{1}{2}");
    expect_extract("x^2 + 1", false, "x^2 + 1");
}

static void expect_norm(const char *in, const char *want) {
    char *got = NULL;
    cr_assert_eq(vf_normalize_answer(in, &got), 0);
    cr_assert_str_eq(got, want, "normalize(%s)", in);
    free(got);
}

Test(verify_normalize, latex_spellings) {
    expect_norm("\\dfrac{1}{2}", "\\frac{1}{2}");
    expect_norm("\\tfrac{a}{b} + \\cfrac{c}{d}", "\\frac{a}{b} + \\frac{c}{d}");
    expect_norm("\\left( 3, \\frac{\\pi}{2} \\right)", "( 3, \\frac{\\pi}{2} )");
    expect_norm("\\left\\{ 1 \\right.", "\\{ 1");
    expect_norm("\\mathrm{Evelyn}", "\\text{Evelyn}");
    expect_norm("\\textbf{(A)}", "\\text{(A)}");
    expect_norm("\\displaystyle x\\,+\\!1", "x+1");
    expect_norm("$\\$18$", "18");
}

Test(verify_normalize, units_degrees_percent_and_numbers) {
    expect_norm("90^\\circ", "90");
    expect_norm("90^{\\circ}", "90");
    expect_norm("28\\%", "28%");
    expect_norm("28 percent", "28%");
    expect_norm("1,000,000", "1000000");
    expect_norm("1{,}000", "1000");
    expect_norm("3{,}5", "3,5"); /* math-verify: parse("$3{,}5$") is the set {3, 5} */
    expect_norm("11,\\! 111", "11111");
    expect_norm("10 \\text{ dollars}", "10");
    expect_norm("5\\text{ cm}^2", "5");
    expect_norm("12 inches", "12");
    expect_norm("42.", "42");
    expect_norm("1, 2, and 3", "1, 2, 3");
    expect_norm("\\text{Evelyn}", "\\text{Evelyn}"); /* a lone word is kept */
}

static void expect_parse(const char *in, const char *want) {
    char *got = NULL;
    int rc = vf_parse_answer(in, &got);
    cr_assert_eq(rc, 0, "parse(%s): %s", in, rt_errmsg());
    cr_assert_str_eq(got, want, "parse(%s)", in);
    free(got);
}

Test(verify_parse, tex_arguments_and_mixed_numbers) {
    expect_parse("\\frac12", "(div 1 2)");
    expect_parse("\\frac1{2}", "(div 1 2)");
    expect_parse("\\frac{1}2", "(div 1 2)");
    expect_parse("\\sqrt3", "(sqrt 3)");
    expect_parse("\\sqrt[3]{8}", "(root 8 3)");
    expect_parse("2\\frac{1}{2}", "(add 2 (div 1 2))");
    expect_parse("2\\sqrt{2}", "(mul 2 (sqrt 2))");
    expect_parse("-x^2", "(neg (pow x 2))");
    expect_parse("0.5", "1/2.");
}

Test(verify_parse, structures) {
    expect_parse("(1, 2]", "(interval open-closed 1 2)");
    expect_parse("[1, 2)", "(interval closed-open 1 2)");
    expect_parse("(1, 2)", "(tuple 1 2)");
    expect_parse("\\{1, 2\\}", "(set 1 2)");
    expect_parse("1, 2", "(set 1 2)");
    expect_parse("\\pm 2", "(set 2 (neg 2))");
    expect_parse("x = 5", "(rel x = 5)");
    expect_parse("1 < x \\le 2", "(rel 1 < x <= 2)");
    expect_parse("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "(matrix 2x2 1 2 3 4)");
    expect_parse("(0,1)\\cup(2,3)", "(union (tuple 0 1) (tuple 2 3))");
    expect_parse("\\text{Evelyn}", "'evelyn'");
    expect_parse("28%", "(pct 28)");
    expect_parse("52_8", "52");
}

Test(verify_parse, malformed_input_is_an_error_not_a_crash) {
    const char *bad[] = {"\\frac{1}{", "(1, 2", "\\begin{pmatrix}1&2\\\\3\\end{pmatrix}", "1 +", ")", "\\sqrt", "", "|x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *got = NULL;
        int rc = vf_parse_answer(bad[i], &got);
        cr_assert(rc == RT_EFORMAT || rc == RT_ERANGE || rc == RT_EUNSUPPORTED, "parse(%s) = %d (%s)", bad[i], rc, got ? got : "");
        cr_assert(*rt_errmsg(), "no message for %s", bad[i]);
        free(got);
    }
}

static void expect_same(const char *g, const char *p, bool want) {
    vf_opts o;
    vf_opts_default(&o);
    cr_assert_eq(vf_same_answer(&o, g, p), want, "%s vs %s: want %s", g, p, want ? "equal" : "different");
}

Test(verify_compare, hand_worked) {
    expect_same("\\frac{14}{3}", "4.66667", true);  /* 6 significant digits */
    expect_same("\\frac{14}{3}", "4.6667", false);
    expect_same("\\frac{3}{56}", "0.053571", true); /* 6 places after the point */
    expect_same("123456.7", "123457", true);
    expect_same("x^2-1", "(x-1)(x+1)", true);
    expect_same("x^2-1", "(y-1)(y+1)", false);
    expect_same("\\frac{x}{2}", "0.5x", true);
    expect_same("2x=4", "x=2", true);               /* same solutions */
    expect_same("x^2=4", "x=2", false);
    expect_same("a<2", "2>a", true);
    expect_same("x<2", "2x<4", true);
    expect_same("x<2", "-x<-2", false);
    expect_same("\\{1,1,2\\}", "\\{2,1\\}", true);  /* sets drop duplicates */
    expect_same("(1,2)", "(2,1)", false);           /* tuples keep order */
    expect_same("[1,2]", "[1,2)", false);
    expect_same("x \\ge 3", "[3, \\infty)", true);
    expect_same("\\text{Devon}", "devon", true);
    expect_same("B", "(B)", true);
    expect_same("B", "C", false);
}

Test(verify_compare, math_verify_verdicts) {
    const char *dir = getenv("REF_DIR");
    if (!dir) cr_skip_test("skipped: REF_DIR not set (run the suite through `make test`)");
    char path[4096];
    snprintf(path, sizeof path, "%s/verify_cases.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f) cr_skip_test("skipped: %s missing (tests/ref/gen_verify.py did not run)", path);
    char *line = NULL;
    size_t cap = 0;
    int n = 0, bad = 0;
    vf_opts o;
    vf_opts_default(&o);
    while (getline(&line, &cap, f) > 0) {
        json_error_t e;
        json_t *j = json_loads(line, 0, &e);
        cr_assert_not_null(j, "bad reference line: %s", e.text);
        const char *g = json_string_value(json_object_get(j, "gold"));
        const char *p = json_string_value(json_object_get(j, "pred"));
        bool mv = json_is_true(json_object_get(j, "mv"));
        if (vf_same_answer(&o, g, p) != mv) {
            bad++;
            cr_log_error("%s vs %s: math-verify says %s", g, p, mv ? "equal" : "different");
        }
        n++;
        json_decref(j);
    }
    free(line);
    fclose(f);
    cr_assert_gt(n, 50);
    cr_assert_eq(bad, 0, "%d of %d cases disagree with math-verify", bad, n);
}

Test(verify_full, verdict_fields) {
    vf_result r;
    cr_assert_eq(vf_verify(NULL, "\\frac{1}{2}", "We get $\\boxed{0.5}$.", &r), 0);
    cr_assert(r.correct);
    cr_assert_str_eq(r.pred_answer, "0.5");
    cr_assert_str_eq(r.gold_answer, "\\frac{1}{2}");
    vf_result_free(&r);
    cr_assert_eq(vf_verify(NULL, "#### 72", "no answer in this long explanation of nothing at all", &r), 0);
    cr_assert(!r.correct);
    cr_assert_null(r.pred_answer);
    cr_assert_str_eq(r.gold_answer, "72");
    vf_result_free(&r);
}

/* Bounded time: hostile inputs finish quickly and never crash. */
Test(verify_bounds, hostile_inputs_finish) {
    size_t n = 1 << 20;
    char *s = malloc(n + 1);
    const char *pieces[] = {"(", "\\frac{", "{", "\\sqrt", "^", "x", "1,", "\\boxed{", "$", "\\left(", "|",
                            "\\(", "answer \\( ", "$$a", "\\[", "answer: 1 = "};
    for (int k = 0; k < (int)(sizeof pieces / sizeof *pieces); k++) {
        size_t pl = strlen(pieces[k]), o = 0;
        while (o + pl < n) { memcpy(s + o, pieces[k], pl); o += pl; }
        s[o] = 0;
        clock_t t0 = clock();
        vf_result r;
        cr_assert_eq(vf_verify(NULL, s, s, &r), 0);
        vf_result_free(&r);
        vf_opts lo;
        vf_opts_default(&lo);
        lo.last_number = true; /* every extraction rule, the fallback scan included */
        cr_assert_eq(vf_verify(&lo, "1", s, &r), 0);
        vf_result_free(&r);
        double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
        cr_assert_lt(secs, 30.0, "piece %s took %.1f s", pieces[k], secs); /* a hang guard, not a benchmark */
    }
    free(s);
}

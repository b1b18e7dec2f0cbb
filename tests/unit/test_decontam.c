/* filters/decontam: word normalization and the n-gram index. Expected values are
 * hand-worked: the word lists are what Python's re.findall(r"[^\W_]+", text.lower())
 * gives for the same strings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filters/decontam.h"
#include "testutil.h"

static void expect_norm(const char *in, const char *want, size_t words) {
    char *out;
    size_t n, w;
    cr_assert_eq(dc_normalize(in, strlen(in), &out, &n, &w), 0);
    cr_assert_str_eq(out, want, "normalize(%s)", in);
    cr_assert_eq(n, strlen(want));
    cr_assert_eq(w, words, "words of %s", in);
    free(out);
}

Test(decontam, normalization_words_of_letters_and_digits) {
    expect_norm("Janet's ducks lay 16 eggs per day.", "janet s ducks lay 16 eggs per day", 8);
    expect_norm("  $\\frac{1}{2}$ of 3,000 -- snake_case  ", "frac 1 2 of 3 000 snake case", 8);
    expect_norm("ÉCOLE Straße, Москва 東京", "école straße москва 東京", 4);
    expect_norm("", "", 0);
    expect_norm("!!! ... ???", "", 0);
    expect_norm("a\xff" "b", "a b", 2); /* an invalid byte separates words */
}

static dc_index *index_of(int n, const char *bench, const char *doc) {
    dc_index *ix;
    cr_assert_eq(dc_index_new(n, &ix), 0);
    cr_assert_eq(dc_index_add(ix, bench, "doc 1", doc, strlen(doc)), 0);
    return ix;
}

static const char *BENCH_Q =
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?";

Test(decontam, finds_a_planted_ngram_with_benchmark_and_text) {
    dc_index *ix = index_of(10, "gsm8k_test", BENCH_Q);
    /* 31 words -> 22 distinct 10-grams */
    cr_assert_eq(dc_index_ngrams(ix), 22);
    const char *sample = "We start. NATALIA sold clips to 48 of her friends, in April -- and then we compute.";
    dc_hit h;
    cr_assert_eq(dc_index_find(ix, sample, strlen(sample), &h), 0);
    cr_assert(h.found);
    cr_assert_str_eq(h.benchmark, "gsm8k_test");
    cr_assert_str_eq(h.doc_id, "doc 1");
    cr_assert_str_eq(h.ngram, "natalia sold clips to 48 of her friends in april");
    dc_index_free(ix);
}

Test(decontam, near_miss_below_n_words_is_not_flagged) {
    dc_index *ix = index_of(10, "gsm8k_test", BENCH_Q);
    /* 9 consecutive benchmark words, then a different word; and the words out of order */
    const char *a = "natalia sold clips to 48 of her friends in March and then";
    const char *b = "clips natalia sold to 48 of her friends in april";
    dc_hit h;
    cr_assert_eq(dc_index_find(ix, a, strlen(a), &h), 0);
    cr_assert(!h.found);
    cr_assert_eq(dc_index_find(ix, b, strlen(b), &h), 0);
    cr_assert(!h.found, "%s", h.ngram);
    dc_index_free(ix);
}

Test(decontam, short_texts_have_no_ngrams) {
    dc_index *ix = index_of(10, "aime", "The answer is 204.");
    cr_assert_eq(dc_index_ngrams(ix), 0);
    cr_assert_eq(dc_index_docs(ix), 0);
    dc_hit h;
    cr_assert_eq(dc_index_find(ix, "The answer is 204.", 18, &h), 0);
    cr_assert(!h.found);
    dc_index_free(ix);
}

Test(decontam, n_is_configurable) {
    dc_index *ix = index_of(3, "b", "one two three four");
    cr_assert_eq(dc_index_ngrams(ix), 2);
    dc_hit h;
    cr_assert_eq(dc_index_find(ix, "x TWO, three; four y", 20, &h), 0);
    cr_assert(h.found);
    cr_assert_str_eq(h.ngram, "two three four");
    cr_assert_eq(dc_index_find(ix, "three two one", 13, &h), 0);
    cr_assert(!h.found);
    dc_index_free(ix);
    cr_assert_eq(dc_index_new(0, &ix), RT_EINVAL);
    cr_assert_eq(dc_index_new(DC_MAX_N + 1, &ix), RT_EINVAL);
}

Test(decontam, jsonl_fields_ids_and_bad_lines) {
    char *d = tmp_dir();
    char path[4096];
    snprintf(path, sizeof path, "%s/bench.jsonl", d);
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"id\": 7, \"question\": \"alpha beta gamma delta\", \"answer\": 42}\n\n"
               "{\"problem\": \"one two three\", \"solution\": \"four five\", \"other\": \"zeta eta theta iota\"}\n");
    fclose(f);
    dc_index *ix;
    cr_assert_eq(dc_index_new(4, &ix), 0);
    size_t recs;
    cr_assert_eq(dc_index_add_jsonl(ix, path, "mine", NULL, 0, &recs), 0);
    cr_assert_eq(recs, 2);
    dc_hit h;
    /* question and answer are one document: an n-gram may span them */
    cr_assert_eq(dc_index_find(ix, "beta gamma delta 42", 19, &h), 0);
    cr_assert(h.found);
    cr_assert_str_eq(h.doc_id, "id 7");
    cr_assert_str_eq(h.benchmark, "mine");
    cr_assert_eq(dc_index_find(ix, "two three four five", 19, &h), 0);
    cr_assert(h.found);
    cr_assert_str_eq(h.doc_id, "line 3");
    cr_assert_eq(dc_index_find(ix, "zeta eta theta iota", 19, &h), 0);
    cr_assert(!h.found, "fields not listed are not indexed");
    dc_index_free(ix);

    f = fopen(path, "w");
    fprintf(f, "{\"question\": \"a b c d\"}\n[1, 2]\n");
    fclose(f);
    cr_assert_eq(dc_index_new(4, &ix), 0);
    cr_assert_eq(dc_index_add_jsonl(ix, path, "mine", NULL, 0, NULL), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), ":2:"), "%s", rt_errmsg());
    dc_index_free(ix);
    remove(path);
    rmdir(d);
    free(d);
}

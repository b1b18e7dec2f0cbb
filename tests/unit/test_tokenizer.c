/* core/tokenizer on the three real tokenizers: ids, decoding and lookups against PyPI
 * tokenizers (expected values from tests/ref/gen_tok_corpus.py in REF_DIR/tok/), invalid
 * input, and concurrent use of one tokenizer. */
#include <jansson.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "core/threadpool.h"
#include "core/fsutil.h"
#include "core/tokenizer.h"
#include "core/tokenizer_int.h" /* tok_load_buffer_opts */
#include "testutil.h"

typedef struct {
    json_t **v;
    size_t n;
} jlines;

static void jlines_free(jlines *l) {
    for (size_t i = 0; i < l->n; i++) json_decref(l->v[i]);
    free(l->v);
}

static jlines read_jsonl(const char *path) {
    jlines l = {0};
    FILE *f = fopen(path, "r");
    cr_assert(f, "cannot open %s", path);
    char *line = NULL;
    size_t cap = 0, vcap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        json_error_t e;
        json_t *j = json_loadb(line, (size_t)len, JSON_ALLOW_NUL, &e);
        cr_assert(j, "%s line %zu: %s", path, l.n + 1, e.text);
        if (l.n == vcap) {
            vcap = vcap ? vcap * 2 : 1024;
            l.v = realloc(l.v, vcap * sizeof *l.v);
            cr_assert(l.v);
        }
        l.v[l.n++] = j;
    }
    free(line);
    fclose(f);
    return l;
}

static const char *ref_dir_or_skip(void) {
    const char *dir = getenv("REF_DIR");
    if (!dir) cr_skip_test("skipped: REF_DIR not set (run the suite through `make test`)");
    return dir;
}

static tok_tokenizer *load_or_skip(const char *name) {
    const char *assets = getenv("RETORT_ASSETS");
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizers/%s/tokenizer.json", assets ? assets : "../shared/assets", name);
    if (access(path, R_OK)) cr_skip_test("skipped: %s absent (set RETORT_ASSETS)", path);
    tok_tokenizer *t = NULL;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int rc = tok_load(path, &t);
    clock_gettime(CLOCK_MONOTONIC, &b);
    cr_assert_eq(rc, 0, "tok_load %s: %s", path, rt_errmsg());
    cr_log_info("%s: loaded in %.0f ms", name, (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6);
    return t;
}

static bool ids_equal(const json_t *want, const int32_t *got, size_t n) {
    if (json_array_size(want) != n) return false;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(want, i)) != got[i]) return false;
    return true;
}

static void ids_from_json(const json_t *a, int32_t **ids, size_t *n) {
    *n = json_array_size(a);
    *ids = malloc((*n ? *n : 1) * sizeof **ids);
    for (size_t i = 0; i < *n; i++) (*ids)[i] = (int32_t)json_integer_value(json_array_get(a, i));
}

/* Every corpus text: ids with and without special tokens, decode(encode(x)) == x, and
 * decode with skip_special_tokens. Asserts 100% identity and logs the counts. */
static void check_parity(const char *name) {
    const char *dir = ref_dir_or_skip();
    char path[4096];
    snprintf(path, sizeof path, "%s/tok/corpus.jsonl", dir);
    if (access(path, R_OK)) cr_skip_test("skipped: %s absent (gen_tok_corpus.py found no tokenizers)", path);
    tok_tokenizer *t = load_or_skip(name);
    jlines corpus = read_jsonl(path);
    snprintf(path, sizeof path, "%s/tok/%s.jsonl", dir, name);
    jlines want = read_jsonl(path);
    cr_assert_eq(corpus.n, want.n);
    size_t n = corpus.n;
    const char **texts = malloc(n * sizeof *texts);
    size_t *lens = malloc(n * sizeof *lens), *nids = malloc(n * sizeof *nids), bytes = 0;
    int32_t **ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++) {
        const json_t *s = json_object_get(corpus.v[i], "text");
        texts[i] = json_string_value(s);
        lens[i] = json_string_length(s);
        bytes += lens[i];
    }
    tp_pool *pool;
    cr_assert_eq(tp_create(2, &pool), 0);
    cr_assert_eq(tok_encode_batch(t, texts, lens, n, false, pool, ids, nids), 0, "%s", rt_errmsg());
    size_t same = 0, same_special = 0, round = 0, skip_ok = 0, identical_text = 0, normalized = 0;
    for (size_t i = 0; i < n; i++) {
        bool ok = ids_equal(json_object_get(want.v[i], "ids"), ids[i], nids[i]);
        same += ok;
        if (!ok) cr_log_error("%s: line %zu differs: %.80s", name, i + 1, texts[i]);
        char *back;
        size_t blen;
        cr_assert_eq(tok_decode(t, ids[i], nids[i], false, &back, &blen), 0, "%s", rt_errmsg());
        /* decode(encode(x)) == x, except where the normalizer (Qwen's NFC) changed x: then
         * it is HF's decode of HF's ids, the normalized text */
        const json_t *hd = json_object_get(want.v[i], "decoded");
        bool same_as_hf = blen == json_string_length(hd) && !memcmp(back, json_string_value(hd), blen);
        bool same_as_x = blen == lens[i] && !memcmp(back, texts[i], blen);
        round += same_as_hf;
        identical_text += same_as_x;
        if (!same_as_x && !strcmp(name, "qwen3")) normalized++;
        free(back);
        free(ids[i]);
    }
    cr_assert_eq(tok_encode_batch(t, texts, lens, n, true, pool, ids, nids), 0, "%s", rt_errmsg());
    for (size_t i = 0; i < n; i++) {
        same_special += ids_equal(json_object_get(want.v[i], "ids_special"), ids[i], nids[i]);
        char *dec;
        size_t dlen;
        cr_assert_eq(tok_decode(t, ids[i], nids[i], true, &dec, &dlen), 0, "%s", rt_errmsg());
        const json_t *w = json_object_get(want.v[i], "skip");
        skip_ok += dlen == json_string_length(w) && !memcmp(dec, json_string_value(w), dlen);
        free(dec);
        free(ids[i]);
    }
    cr_log_info("%s: %zu texts, %zu bytes: ids %zu/%zu identical, with special tokens %zu/%zu, "
                "decode(encode(x)) == HF's %zu/%zu, == x %zu/%zu (%zu changed by NFC), skip_special decode %zu/%zu",
                name, n, bytes, same, n, same_special, n, round, n, identical_text, n, normalized, skip_ok, n);
    cr_expect_eq(same, n, "%s: %zu of %zu texts differ from HF tokenizers", name, n - same, n);
    cr_expect_eq(same_special, n, "%s: add_special_tokens differs on %zu texts", name, n - same_special);
    cr_expect_eq(round, n, "%s: decode(encode(x)) differs from HF on %zu texts", name, n - round);
    cr_expect_eq(identical_text + normalized, n, "%s: decode(encode(x)) != x on %zu texts", name, n - identical_text);
    cr_expect_eq(skip_ok, n, "%s: skip_special_tokens decode differs on %zu texts", name, n - skip_ok);
    tp_free(pool);
    free(texts);
    free(lens);
    free(nids);
    free(ids);
    jlines_free(&corpus);
    jlines_free(&want);
    tok_free(t);
}

Test(tokenizer, deepseek_v3_ids_match_hf_on_corpus, .timeout = 300) { check_parity("deepseek_v3"); }
Test(tokenizer, qwen3_ids_match_hf_on_corpus, .timeout = 300) { check_parity("qwen3"); }
Test(tokenizer, llama3_1_ids_match_hf_on_corpus, .timeout = 300) { check_parity("llama3_1"); }

/* Random id sequences (which cut UTF-8 sequences apart) decode as HF decodes them. */
static void check_decode(const char *name) {
    const char *dir = ref_dir_or_skip();
    char path[4096];
    snprintf(path, sizeof path, "%s/tok/%s.decode.jsonl", dir, name);
    if (access(path, R_OK)) cr_skip_test("skipped: %s absent", path);
    tok_tokenizer *t = load_or_skip(name);
    jlines l = read_jsonl(path);
    size_t ok = 0;
    for (size_t i = 0; i < l.n; i++) {
        int32_t *ids;
        size_t n;
        ids_from_json(json_object_get(l.v[i], "ids"), &ids, &n);
        for (int skip = 0; skip < 2; skip++) {
            char *s;
            size_t len;
            cr_assert_eq(tok_decode(t, ids, n, skip, &s, &len), 0, "%s", rt_errmsg());
            const json_t *w = json_object_get(l.v[i], skip ? "skip" : "text");
            bool same = len == json_string_length(w) && !memcmp(s, json_string_value(w), len);
            if (!same) cr_log_error("%s: decode line %zu (skip %d) differs", name, i + 1, skip);
            ok += same;
            free(s);
        }
        free(ids);
    }
    cr_expect_eq(ok, 2 * l.n, "%s: %zu of %zu decodes differ", name, 2 * l.n - ok, 2 * l.n);
    jlines_free(&l);
    tok_free(t);
}

Test(tokenizer, deepseek_v3_decode_matches_hf) { check_decode("deepseek_v3"); }
Test(tokenizer, qwen3_decode_matches_hf) { check_decode("qwen3"); }
Test(tokenizer, llama3_1_decode_matches_hf) { check_decode("llama3_1"); }

/* Vocabulary size and lookups as HF reports them. */
static void check_meta(const char *name) {
    const char *dir = ref_dir_or_skip();
    char path[4096];
    snprintf(path, sizeof path, "%s/tok/%s.meta.json", dir, name);
    if (access(path, R_OK)) cr_skip_test("skipped: %s absent", path);
    tok_tokenizer *t = load_or_skip(name);
    json_error_t e;
    json_t *m = json_load_file(path, 0, &e);
    cr_assert(m);
    cr_expect_eq(tok_vocab_size(t), (size_t)json_integer_value(json_object_get(m, "vocab_size")));
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(m, "token_to_id"), k, v) {
        int32_t want = json_is_null(v) ? -1 : (int32_t)json_integer_value(v);
        cr_expect_eq(tok_token_to_id(t, k), want, "%s: token_to_id(%s) = %d, HF %d", name, k, tok_token_to_id(t, k), want);
    }
    json_object_foreach(json_object_get(m, "id_to_token"), k, v) {
        const char *got = tok_id_to_token(t, atoi(k));
        cr_expect(got && !strcmp(got, json_string_value(v)), "%s: id_to_token(%s)", name, k);
    }
    json_decref(m);
    tok_free(t);
}

Test(tokenizer, deepseek_v3_lookups_match_hf) { check_meta("deepseek_v3"); }
Test(tokenizer, qwen3_lookups_match_hf) { check_meta("qwen3"); }
Test(tokenizer, llama3_1_lookups_match_hf) { check_meta("llama3_1"); }

Test(tokenizer, invalid_utf8_is_a_format_error_naming_the_byte) {
    tok_tokenizer *t = load_or_skip("qwen3");
    static const char *bad[] = {"ab\xff", "\xc3", "x\xe2\x82", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80", "ok\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int32_t *ids = (int32_t *)1;
        size_t n = 7;
        cr_assert_eq(tok_encode(t, bad[i], strlen(bad[i]), false, &ids, &n), RT_EFORMAT, "case %zu", i);
        cr_assert_null(ids);
        cr_assert_eq(n, 0);
        cr_assert(strstr(rt_errmsg(), "not valid UTF-8"), "%s", rt_errmsg());
    }
    const char *texts[] = {"fine", "bad\xfe", "fine too"};
    size_t lens[] = {4, 4, 8}, ns[3];
    int32_t *ids[3];
    cr_assert_eq(tok_encode_batch(t, texts, lens, 3, false, NULL, ids, ns), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "text 1"), "%s", rt_errmsg());
    for (int i = 0; i < 3; i++) cr_assert_null(ids[i]);
    tok_free(t);
}

Test(tokenizer, bad_ids_are_range_errors) {
    tok_tokenizer *t = load_or_skip("llama3_1");
    int32_t ids[] = {1, -5};
    char *s = NULL;
    size_t n;
    cr_assert_eq(tok_decode(t, ids, 2, false, &s, &n), RT_ERANGE);
    cr_assert_null(s);
    int32_t big[] = {(int32_t)tok_vocab_size(t)};
    cr_assert_eq(tok_decode(t, big, 1, false, &s, &n), RT_ERANGE);
    tok_free(t);
}

Test(tokenizer, empty_text_gives_no_ids_and_special_only_with_flag) {
    tok_tokenizer *t = load_or_skip("llama3_1");
    int32_t *ids;
    size_t n;
    cr_assert_eq(tok_encode(t, "", 0, false, &ids, &n), 0);
    cr_assert_eq(n, 0);
    cr_assert_not_null(ids);
    free(ids);
    cr_assert_eq(tok_encode(t, "", 0, true, &ids, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(ids[0], tok_token_to_id(t, "<|begin_of_text|>"));
    free(ids);
    tok_free(t);
}

Test(tokenizer, malformed_files_are_format_errors) {
    static const char *docs[] = {
        "", "{", "[]", "{\"model\": 3}", "{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": [\"a b\"]}}",
        "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}",
        "{\"model\": {\"vocab\": {\"a\": -1}, \"merges\": []}}",
        ("{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", "
         "\"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}}"),
        "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"type\": \"Lowercase\"}}",
    };
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) {
        tok_tokenizer *t = (tok_tokenizer *)1;
        int rc = tok_load_buffer(docs[i], strlen(docs[i]), &t);
        cr_assert(rc == RT_EFORMAT || rc == RT_EUNSUPPORTED, "doc %zu: rc %d", i, rc);
        cr_assert_null(t);
        cr_assert(strlen(rt_errmsg()) > 0);
    }
    tok_tokenizer *t;
    cr_assert_eq(tok_load("/nonexistent/tokenizer.json", &t), RT_EIO);
    tok_free(NULL);
}

/* Four threads encode the same texts on one tokenizer at once; every result equals the
 * single-threaded one (the pooled caches are per call). */
typedef struct {
    const tok_tokenizer *t;
    const char *const *texts;
    size_t n;
    int32_t **want;
    size_t *nwant;
    size_t mismatches;
} mt_ctx;

static void *mt_worker(void *arg) {
    mt_ctx *c = arg;
    for (int rep = 0; rep < 20; rep++)
        for (size_t i = 0; i < c->n; i++) {
            int32_t *ids;
            size_t n;
            if (tok_encode(c->t, c->texts[i], strlen(c->texts[i]), false, &ids, &n) || n != c->nwant[i] ||
                memcmp(ids, c->want[i], n * sizeof *ids))
                c->mismatches++;
            free(ids);
        }
    return NULL;
}

Test(tokenizer, one_tokenizer_is_safe_from_many_threads) {
    tok_tokenizer *t = load_or_skip("deepseek_v3");
    static const char *texts[] = {"The quick brown fox jumps over 1234567 lazy dogs.", "数学题：求解方程 x^2 = 4",
                                  "  indented\n\tcode();  ", "<｜User｜>hi<｜Assistant｜>hello",
                                  "naïve café résumé 👩🏽‍💻"};
    size_t n = sizeof texts / sizeof *texts, nw[5];
    int32_t *w[5];
    for (size_t i = 0; i < n; i++) cr_assert_eq(tok_encode(t, texts[i], strlen(texts[i]), false, &w[i], &nw[i]), 0);
    pthread_t th[4];
    mt_ctx c[4];
    for (int k = 0; k < 4; k++) {
        c[k] = (mt_ctx){t, texts, n, w, nw, 0};
        pthread_create(&th[k], NULL, mt_worker, &c[k]);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        cr_expect_eq(c[k].mismatches, 0, "thread %d saw %zu mismatches", k, c[k].mismatches);
    }
    for (size_t i = 0; i < n; i++) free(w[i]);
    tok_free(t);
}

Test(tokenizer, offsets_cover_the_text_in_order) {
    tok_tokenizer *t = load_or_skip("qwen3");
    const char *s = "Cafe\xcc\x81 na\xc3\xafve <|im_start|>x e\xcc\x81\xcc\x81!";
    int32_t *ids;
    size_t *off, n;
    cr_assert_eq(tok_encode_offsets(t, s, strlen(s), false, &ids, &off, &n), 0, "%s", rt_errmsg());
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert(off[2 * i] <= off[2 * i + 1] && off[2 * i + 1] <= strlen(s), "token %zu", i);
        cr_assert(off[2 * i] >= at || off[2 * i + 1] == at, "token %zu starts before the previous one ends", i);
        at = off[2 * i + 1];
    }
    cr_assert_eq(at, strlen(s));
    free(ids);
    free(off);
    tok_free(t);
}

/* ---- model.vocab and model.merges read without jansson (core/tokenizer_json.c) ---- */

/* The same file loaded both ways gives the same tables: every id's token and special flag,
 * and the same ids for texts that exercise merges, bytes and added tokens. */
static void check_fast_equals_tree(const char *name) {
    const char *assets = getenv("RETORT_ASSETS");
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizers/%s/tokenizer.json", assets ? assets : "../shared/assets", name);
    if (access(path, R_OK)) cr_skip_test("skipped: %s absent (set RETORT_ASSETS)", path);
    char *buf;
    size_t len;
    cr_assert_eq(rt_read_file(path, &buf, &len), 0);
    tok_tokenizer *fast = NULL, *tree = NULL;
    cr_assert_eq(tok_load_buffer_opts(buf, len, false, &fast), 0, "%s", rt_errmsg());
    cr_assert_eq(tok_load_buffer_opts(buf, len, true, &tree), 0, "%s", rt_errmsg());
    cr_assert_eq(tok_vocab_size(fast), tok_vocab_size(tree));
    for (int32_t id = 0; id < (int32_t)tok_vocab_size(tree); id++) {
        const char *a = tok_id_to_token(fast, id), *b = tok_id_to_token(tree, id);
        cr_assert((a == NULL) == (b == NULL) && (!a || !strcmp(a, b)), "%s id %d: '%s' vs '%s'", name, id, a, b);
        cr_assert_eq(tok_is_special(fast, id), tok_is_special(tree, id));
    }
    static const char *texts[] = {"Hello, world! The quick brown fox jumps over the lazy dog.",
                                  "def f(x):\n    return x ** 2  # 平方\n", "Ünïcödé «ταυτότητα» 🙂 \t\r\n  spaces",
                                  "<think>\n2+2=4\n</think>\n\n\\boxed{4}"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        int32_t *x, *y;
        size_t nx, ny;
        cr_assert_eq(tok_encode(fast, texts[i], strlen(texts[i]), true, &x, &nx), 0);
        cr_assert_eq(tok_encode(tree, texts[i], strlen(texts[i]), true, &y, &ny), 0);
        cr_assert(nx == ny && !memcmp(x, y, nx * sizeof *x), "%s text %zu: ids differ", name, i);
        free(x);
        free(y);
    }
    tok_free(fast);
    tok_free(tree);
    free(buf);
}

Test(tokenizer, deepseek_v3_direct_vocab_and_merges_equal_jansson) { check_fast_equals_tree("deepseek_v3"); }
Test(tokenizer, qwen3_direct_vocab_and_merges_equal_jansson) { check_fast_equals_tree("qwen3"); }
Test(tokenizer, llama3_1_direct_vocab_and_merges_equal_jansson) { check_fast_equals_tree("llama3_1"); }

/* Escapes decode as JSON says (worked by hand: \u00e9 is é, the pair \ud83d\ude00 is U+1F600,
 * \/ is /), both merge forms load, and both paths agree on the result. */
Test(tokenizer, direct_parse_decodes_escapes_and_both_merge_forms) {
    static const char *doc =
        "{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"\\u00e9\": 3,"
        " \"\\ud83d\\ude00\": 4, \"x\\/y\": 5, \"\\\"q\\\"\": 6, \"a\\u00e9\": 7},"
        " \"merges\": [\"a b\", [\"a\", \"\\u00e9\"]]}, \"added_tokens\": []}";
    tok_tokenizer *fast = NULL, *tree = NULL;
    cr_assert_eq(tok_load_buffer_opts(doc, strlen(doc), false, &fast), 0, "%s", rt_errmsg());
    cr_assert_eq(tok_load_buffer_opts(doc, strlen(doc), true, &tree), 0, "%s", rt_errmsg());
    static const char *want[] = {"a", "b", "ab", "\xc3\xa9", "\xf0\x9f\x98\x80", "x/y", "\"q\"", "a\xc3\xa9"};
    for (int32_t id = 0; id < 8; id++) {
        cr_assert_str_eq(tok_id_to_token(fast, id), want[id]);
        cr_assert_str_eq(tok_id_to_token(tree, id), want[id]);
    }
    int32_t *ids;
    size_t n;
    cr_assert_eq(tok_encode(fast, "ab\xc3\xa9", 4, false, &ids, &n), 0);
    cr_assert(n == 2 && ids[0] == 2 && ids[1] == 3, "n %zu", n); /* "ab" then "é": a+é ranks below a+b */
    free(ids);
    tok_free(fast);
    tok_free(tree);
}

/* Malformed vocab and merges are one RT_EFORMAT error each, with nothing loaded, by the
 * direct parser as by jansson (the same documents through both). */
Test(tokenizer, direct_parse_rejects_what_jansson_rejects) {
    static const char *docs[] = {
        "{\"model\": {\"vocab\": {\"a\": 0, \"a\": 1}, \"merges\": []}}",          /* duplicate key */
        "{\"model\": {\"vocab\": {\"a\": 01}, \"merges\": []}}",                   /* leading zero */
        "{\"model\": {\"vocab\": {\"a\": 1.0}, \"merges\": []}}",                  /* not an integer */
        "{\"model\": {\"vocab\": {\"a\": 2147483647}, \"merges\": []}}",           /* id too large */
        "{\"model\": {\"vocab\": {\"\\ud800\": 0}, \"merges\": []}}",              /* lone surrogate */
        "{\"model\": {\"vocab\": {\"\\udc00x\": 0}, \"merges\": []}}",             /* lone low surrogate */
        "{\"model\": {\"vocab\": {\"\\q\": 0}, \"merges\": []}}",                  /* bad escape */
        "{\"model\": {\"vocab\": {\"\\u12\": 0}, \"merges\": []}}",                /* short \\u */
        "{\"model\": {\"vocab\": {\"a\tb\": 0}, \"merges\": []}}",                 /* raw control character */
        "{\"model\": {\"vocab\": {\"\xff\": 0}, \"merges\": []}}",                 /* invalid UTF-8 */
        "{\"model\": {\"vocab\": {\"\\u0000\": 0}, \"merges\": []}}",              /* NUL in a key */
        "{\"model\": {\"vocab\": {\"a\": 0 \"b\": 1}, \"merges\": []}}",           /* missing comma */
        "{\"model\": {\"vocab\": {\"a\": 0,}, \"merges\": []}}",                   /* trailing comma */
        "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a  b\"]}}",  /* two spaces */
        "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [[\"a\"]]}}",   /* one-element pair */
        "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [[\"a\", 1]]}}", /* not a string */
        "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\",]}}",  /* trailing comma */
        "{\"model\": {\"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a c\"]}}",   /* not in the vocabulary */
        "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}, \"x\": }",           /* the rest is broken */
        "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}",                     /* unterminated */
        "{\"model\": {\"vocab\": {\"a\": 0}, \"vocab\": {}, \"merges\": []}}",     /* vocab twice */
        "{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": []}, \"model\": {}}",     /* model twice */
    };
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++)
        for (int tree = 0; tree < 2; tree++) {
            tok_tokenizer *t = (tok_tokenizer *)1;
            int rc = tok_load_buffer_opts(docs[i], strlen(docs[i]), tree, &t);
            cr_assert_eq(rc, RT_EFORMAT, "doc %zu (%s): rc %d: %s", i, tree ? "jansson" : "direct", rc, rt_errmsg());
            cr_assert_null(t);
            cr_assert(strlen(rt_errmsg()) > 0);
        }
}

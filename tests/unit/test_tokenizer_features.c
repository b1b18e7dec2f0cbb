/* core/tokenizer on small tokenizers built by tests/ref/gen_tok_features.py with PyPI
 * tokenizers, one per feature: Split behaviours and invert, literal patterns, empty regex
 * matches, Digits, ByteLevel with add_prefix_space and its regex, added tokens (lstrip,
 * rstrip, single_word, normalized under NFC and NFKC), TemplateProcessing, ignore_merges,
 * "a b" merges, byte_fallback and unk. Expected ids are HF's. */
#include <dirent.h>
#include <jansson.h>

#include "core/tokenizer.h"
#include "testutil.h"

static size_t check_case(const char *dir, const char *name, size_t *probes) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s.json", dir, name);
    tok_tokenizer *t;
    cr_assert_eq(tok_load(path, &t), 0, "%s: %s", name, rt_errmsg());
    snprintf(path, sizeof path, "%s/%s.expect.jsonl", dir, name);
    FILE *f = fopen(path, "r");
    cr_assert(f, "%s missing", path);
    char *line = NULL;
    size_t cap = 0, bad = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        json_t *j = json_loadb(line, (size_t)len, 0, NULL);
        cr_assert(j);
        const json_t *text = json_object_get(j, "text");
        for (int special = 0; special < 2; special++) {
            const json_t *want = json_object_get(j, special ? "ids_special" : "ids");
            int32_t *ids;
            size_t n;
            cr_assert_eq(tok_encode(t, json_string_value(text), json_string_length(text), special, &ids, &n), 0,
                         "%s: %s", name, rt_errmsg());
            bool same = n == json_array_size(want);
            for (size_t i = 0; same && i < n; i++) same = ids[i] == json_integer_value(json_array_get(want, i));
            if (!same) {
                char *w = json_dumps(want, JSON_COMPACT);
                cr_log_error("%s: '%s' (special %d): want %s, got %zu ids starting %d", name, json_string_value(text),
                             special, w, n, n ? ids[0] : -1);
                free(w);
                bad++;
            }
            (*probes)++;
            free(ids);
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    tok_free(t);
    return bad;
}

Test(tokenizer_features, every_feature_matches_hf_tokenizers) {
    const char *ref = getenv("REF_DIR");
    if (!ref) cr_skip_test("skipped: REF_DIR not set (run the suite through `make test`)");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tok_features", ref);
    DIR *d = opendir(dir);
    if (!d) cr_skip_test("skipped: %s absent (gen_tok_features.py did not run)", dir);
    struct dirent *e;
    size_t cases = 0, probes = 0, bad = 0;
    while ((e = readdir(d))) {
        size_t k = strlen(e->d_name);
        if (k < 6 || strcmp(e->d_name + k - 5, ".json")) continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(k - 5), e->d_name);
        bad += check_case(dir, name, &probes);
        cases++;
    }
    closedir(d);
    cr_log_info("%zu feature tokenizers, %zu probes, %zu differ", cases, probes, bad);
    cr_assert_gt(cases, 10);
    cr_assert_eq(bad, 0, "%zu of %zu probes differ from HF", bad, probes);
}

/* filters/fp_config.c — the filter-stage configuration: defaults, presets, YAML/JSON
 * documents, and the resolved form recorded with each run (contract in pipeline.h). */
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "core/yaml.h"
#include "filters/decontam.h"
#include "filters/pipeline.h"

static const char *const filter_names[FP_COUNT] = {"verify", "format", "language", "readability",
                                                   "repetition", "length", "decontam", "dedup"};

const char *fp_filter_name(fp_filter f) { return (unsigned)f < FP_COUNT ? filter_names[f] : "?"; }

int fp_filter_parse(const char *name, fp_filter *out) {
    for (int i = 0; i < FP_COUNT; i++)
        if (!strcmp(name, filter_names[i])) { *out = (fp_filter)i; return 0; }
    return rt_fail(RT_EINVAL, "unknown filter '%s' (verify, format, language, readability, repetition, length, "
                              "decontam, dedup)", name);
}

/* The r1 preset: DeepSeek-R1's rejection-sampling recipe (paper §2.3.3) in retort's terms.
 * configs/filters/r1.yaml is the same text (a test holds them equal). */
static const char r1_yaml[] =
    "# DeepSeek-R1 rejection sampling (R1 paper, section 2.3.3), in retort's filters.\n"
    "filters: [verify, format, language, readability, repetition, length, decontam, dedup]\n"
    "verify:                  # keep only correct answers (rule-based: the gold answer)\n"
    "  last_number: false\n"
    "  float_digits: 6\n"
    "format:                  # one <think>...</think> block, then a summary with a final answer\n"
    "  think_open: \"<think>\"\n"
    "  think_close: \"</think>\"\n"
    "  require_final_answer: true\n"
    "language:                # no mixed languages: 95% of letters in the prompt's script\n"
    "  min_script_share: 0.95\n"
    "  min_letters: 20\n"
    "readability:             # no long paragraphs, no code blocks in non-code tasks\n"
    "  max_paragraph_chars: 2000\n"
    "  allow_code_blocks: false\n"
    "repetition:              # Gopher's limits (degenerate, looping chains)\n"
    "  max_dup_line_frac: 0.30\n"
    "  max_dup_line_char_frac: 0.20\n"
    "  max_top_ngram_char_frac: [0.20, 0.18, 0.16]\n"
    "  max_dup_ngram_char_frac: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10]\n"
    "  max_repeated_substring: 1000\n"
    "  min_compression_ratio: 0.10\n"
    "length:                  # R1 generated with a 32,768-token limit\n"
    "  min_answer_tokens: 1\n"
    "  max_think_tokens: 32768\n"
    "decontam:                # 10-gram decontamination against the evaluation sets\n"
    "  n: 10\n"
    "  benchmarks: [gsm8k_test, math500_test, aime24_test]\n"
    "dedup:                   # near-identical chains add nothing: keep the shortest\n"
    "  threshold: 0.8\n"
    "  keep: shortest\n";

const char *fp_preset_yaml(const char *name) { return !strcmp(name, "r1") ? r1_yaml : NULL; }

int fp_config_default(fp_config *c) {
    memset(c, 0, sizeof *c);
    c->enabled = (1u << FP_COUNT) - 1;
    vf_opts_default(&c->verify);
    flt_config_default(&c->text);
    mh_config_default(&c->dedup);
    c->dedup_keep = FP_KEEP_FIRST;
    c->decontam_n = DC_DEFAULT_N;
    c->benchmarks[0] = "gsm8k_test";
    c->benchmarks[1] = "math500_test";
    c->benchmarks[2] = "aime24_test";
    c->n_benchmarks = 3;
    c->batch = 512;
    c->json = json_pack("{s:[]}", "owned");
    return c->json ? 0 : rt_fail(RT_ENOMEM, "configuration");
}

void fp_config_free(fp_config *c) {
    if (!c) return;
    json_decref(c->json);
    c->json = NULL;
}

/* Keeps a copy of s alive as long as c; returns it (NULL on ENOMEM). */
static const char *own(fp_config *c, const char *s) {
    json_t *a = json_object_get(c->json, "owned");
    json_t *v = json_string(s);
    if (!v || json_array_append_new(a, v)) return NULL;
    return json_string_value(v);
}

/* ---- reading a document ---- */

typedef struct {
    const char *what, *section;
    const json_t *obj;
} sec;

static int bad(const sec *s, const char *key, const char *why) {
    return rt_fail(RT_EFORMAT, "%s: %s%s%s: %s", s->what, s->section ? s->section : "", s->section ? "." : "", key, why);
}

static const json_t *get(const sec *s, const char *key) {
    const json_t *v = json_object_get(s->obj, key);
    return v && !json_is_null(v) ? v : NULL;
}

static int get_num(const sec *s, const char *key, double lo, double hi, double *out) {
    const json_t *v = get(s, key);
    if (!v) return 0;
    if (!json_is_number(v)) return bad(s, key, "must be a number");
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi)) return bad(s, key, "out of range");
    *out = d;
    return 0;
}

static int get_i64(const sec *s, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    const json_t *v = get(s, key);
    if (!v) return 0;
    if (!json_is_integer(v)) return bad(s, key, "must be an integer");
    int64_t d = json_integer_value(v);
    if (d < lo || d > hi) return bad(s, key, "out of range");
    *out = d;
    return 0;
}

static int get_int(const sec *s, const char *key, int lo, int hi, int *out) {
    int64_t d = *out;
    int rc = get_i64(s, key, lo, hi, &d);
    *out = (int)d;
    return rc;
}

static int get_size(const sec *s, const char *key, size_t *out) {
    int64_t d = (int64_t)*out;
    int rc = get_i64(s, key, 0, INT64_MAX, &d);
    *out = (size_t)d;
    return rc;
}

static int get_bool(const sec *s, const char *key, bool *out) {
    const json_t *v = get(s, key);
    if (!v) return 0;
    if (!json_is_boolean(v)) return bad(s, key, "must be true or false");
    *out = json_is_true(v);
    return 0;
}

static int get_str(const sec *s, const char *key, const char **out) {
    const json_t *v = get(s, key);
    if (!v) return 0;
    if (!json_is_string(v) || !json_string_length(v)) return bad(s, key, "must be a non-empty string");
    *out = json_string_value(v);
    return 0;
}

static int get_nums(const sec *s, const char *key, double *out, size_t n) {
    const json_t *v = get(s, key);
    if (!v) return 0;
    if (!json_is_array(v) || json_array_size(v) != n) {
        char why[64];
        snprintf(why, sizeof why, "must be a list of %zu numbers", n);
        return bad(s, key, why);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(v, i);
        if (!json_is_number(e) || json_number_value(e) < 0 || json_number_value(e) > 1)
            return bad(s, key, "items must be numbers in 0..1");
        out[i] = json_number_value(e);
    }
    return 0;
}

static int get_strs(const sec *s, const char *key, const char **out, size_t *n) {
    const json_t *v = get(s, key);
    if (!v) return 0;
    if (!json_is_array(v)) return bad(s, key, "must be a list of strings");
    if (json_array_size(v) > FP_MAX_LIST) return bad(s, key, "too many items (16 at most)");
    *n = 0;
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) {
        if (!json_is_string(e) || !json_string_length(e)) return bad(s, key, "items must be non-empty strings");
        out[(*n)++] = json_string_value(e);
    }
    return 0;
}

/* Every key of the section must be one of known (NULL-terminated). */
static int check_keys(const sec *s, const char *const *known) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)s->obj, k, v) {
        bool ok = false;
        for (const char *const *p = known; *p && !ok; p++) ok = !strcmp(*p, k);
        if (!ok) return bad(s, k, "unknown key");
    }
    return 0;
}

static int section(const json_t *doc, const char *what, const char *name, sec *s) {
    *s = (sec){what, name, NULL};
    const json_t *v = json_object_get(doc, name);
    if (!v || json_is_null(v)) { s->obj = NULL; return 0; }
    if (!json_is_object(v)) return rt_fail(RT_EFORMAT, "%s: %s: must be a map", what, name);
    s->obj = v;
    return 0;
}

#define SECTION(name, ...)                                                      \
    do {                                                                        \
        static const char *const known_[] = {__VA_ARGS__, NULL};               \
        if ((rc = section(doc, what, name, &s))) return rc;                     \
        if (s.obj && (rc = check_keys(&s, known_))) return rc;                  \
    } while (0)

int fp_config_from_json(const json_t *doc, const char *what, fp_config *c) {
    if (!json_is_object(doc)) return rt_fail(RT_EFORMAT, "%s: the configuration must be a map", what);
    int rc;
    sec top = {what, NULL, doc};
    static const char *const top_keys[] = {"filters", "verify", "format", "language", "readability", "repetition",
                                           "length", "decontam", "dedup", "batch", NULL};
    if ((rc = check_keys(&top, top_keys))) return rc;
    /* the document's strings must live as long as c */
    json_t *copy = json_deep_copy(doc);
    if (!copy || json_array_append_new(json_object_get(c->json, "owned"), copy)) return rt_fail(RT_ENOMEM, "configuration");
    doc = copy;
    top.obj = doc;
    const json_t *fl = get(&top, "filters");
    if (fl) {
        if (!json_is_array(fl)) return bad(&top, "filters", "must be a list of filter names");
        c->enabled = 0;
        size_t i;
        json_t *e;
        json_array_foreach(fl, i, e) {
            fp_filter f = FP_VERIFY;
            if (!json_is_string(e)) return bad(&top, "filters", "items must be filter names");
            if (fp_filter_parse(json_string_value(e), &f)) return rt_errorf(RT_EFORMAT, "%s: filters", what);
            c->enabled |= 1u << f;
        }
    }
    if ((rc = get_size(&top, "batch", &c->batch))) return rc;
    if (!c->batch) return bad(&top, "batch", "must be ≥ 1");
    sec s;
    SECTION("verify", "last_number", "float_digits", "decimal_places");
    if (s.obj && ((rc = get_bool(&s, "last_number", &c->verify.last_number)) ||
                  (rc = get_int(&s, "float_digits", 1, 15, &c->verify.float_digits)) ||
                  (rc = get_bool(&s, "decimal_places", &c->verify.decimal_places))))
        return rc;
    flt_config *t = &c->text;
    SECTION("format", "think_open", "think_close", "open_tag_optional", "require_final_answer");
    if (s.obj && ((rc = get_str(&s, "think_open", &t->think_open)) || (rc = get_str(&s, "think_close", &t->think_close)) ||
                  (rc = get_bool(&s, "open_tag_optional", &t->open_tag_optional)) ||
                  (rc = get_bool(&s, "require_final_answer", &t->require_final_answer))))
        return rc;
    SECTION("language", "min_script_share", "min_letters");
    if (s.obj && ((rc = get_num(&s, "min_script_share", 0, 1, &t->min_script_share)) ||
                  (rc = get_int(&s, "min_letters", 0, 1 << 30, &t->min_letters))))
        return rc;
    SECTION("readability", "max_paragraph_chars", "allow_code_blocks");
    if (s.obj && ((rc = get_size(&s, "max_paragraph_chars", &t->max_paragraph_chars)) ||
                  (rc = get_bool(&s, "allow_code_blocks", &t->allow_code_blocks))))
        return rc;
    SECTION("repetition", "max_dup_line_frac", "max_dup_line_char_frac", "max_top_ngram_char_frac",
            "max_dup_ngram_char_frac", "max_repeated_substring", "min_compression_ratio", "min_compress_bytes");
    if (s.obj && ((rc = get_num(&s, "max_dup_line_frac", 0, 1, &t->max_dup_line_frac)) ||
                  (rc = get_num(&s, "max_dup_line_char_frac", 0, 1, &t->max_dup_line_char_frac)) ||
                  (rc = get_nums(&s, "max_top_ngram_char_frac", t->max_top_ngram_char_frac, 3)) ||
                  (rc = get_nums(&s, "max_dup_ngram_char_frac", t->max_dup_ngram_char_frac, 6)) ||
                  (rc = get_size(&s, "max_repeated_substring", &t->max_repeated_substring)) ||
                  (rc = get_num(&s, "min_compression_ratio", 0, 1, &t->min_compression_ratio)) ||
                  (rc = get_size(&s, "min_compress_bytes", &t->min_compress_bytes))))
        return rc;
    SECTION("length", "min_think_tokens", "max_think_tokens", "min_answer_tokens", "max_answer_tokens");
    if (s.obj && ((rc = get_i64(&s, "min_think_tokens", 0, INT64_MAX, &t->min_think_tokens)) ||
                  (rc = get_i64(&s, "max_think_tokens", 0, INT64_MAX, &t->max_think_tokens)) ||
                  (rc = get_i64(&s, "min_answer_tokens", 0, INT64_MAX, &t->min_answer_tokens)) ||
                  (rc = get_i64(&s, "max_answer_tokens", 0, INT64_MAX, &t->max_answer_tokens))))
        return rc;
    SECTION("decontam", "n", "assets", "benchmarks", "files", "fields");
    if (s.obj && ((rc = get_int(&s, "n", 1, DC_MAX_N, &c->decontam_n)) || (rc = get_str(&s, "assets", &c->assets)) ||
                  (rc = get_strs(&s, "benchmarks", c->benchmarks, &c->n_benchmarks)) ||
                  (rc = get_strs(&s, "files", c->decontam_files, &c->n_decontam_files)) ||
                  (rc = get_strs(&s, "fields", c->decontam_fields, &c->n_decontam_fields))))
        return rc;
    SECTION("dedup", "threshold", "ngram", "bands", "rows", "seed", "exact_only", "keep");
    const char *keep = NULL;
    int64_t seed = (int64_t)c->dedup.seed;
    if (s.obj && ((rc = get_num(&s, "threshold", 0, 1, &c->dedup.threshold)) ||
                  (rc = get_int(&s, "ngram", 1, 64, &c->dedup.ngram)) || (rc = get_int(&s, "bands", 1, 1024, &c->dedup.bands)) ||
                  (rc = get_int(&s, "rows", 1, 1024, &c->dedup.rows)) || (rc = get_i64(&s, "seed", 0, INT64_MAX, &seed)) ||
                  (rc = get_bool(&s, "exact_only", &c->dedup.exact_only)) || (rc = get_str(&s, "keep", &keep))))
        return rc;
    c->dedup.seed = (uint64_t)seed;
    if ((int64_t)c->dedup.bands * c->dedup.rows > MH_MAX_HASHES) return bad(&s, "bands", "bands × rows must be ≤ 1024");
    if (keep) {
        if (!strcmp(keep, "first")) c->dedup_keep = FP_KEEP_FIRST;
        else if (!strcmp(keep, "shortest")) c->dedup_keep = FP_KEEP_SHORTEST;
        else if (!strcmp(keep, "longest")) c->dedup_keep = FP_KEEP_LONGEST;
        else return bad(&s, "keep", "must be first, shortest or longest");
    }
    return 0;
}

int fp_config_preset(const char *name, fp_config *c) {
    const char *y = fp_preset_yaml(name);
    if (!y) return rt_fail(RT_ENOTFOUND, "unknown preset '%s' (known: r1)", name);
    json_t *doc;
    char what[64];
    snprintf(what, sizeof what, "preset %s", name);
    int rc = rt_yaml_parse(y, strlen(y), what, &doc);
    if (rc) return rc;
    rc = fp_config_from_json(doc, what, c);
    json_decref(doc);
    return rc;
}

int fp_config_set_assets(fp_config *c, const char *assets) {
    return (c->assets = own(c, assets)) ? 0 : rt_fail(RT_ENOMEM, "configuration");
}

int fp_config_add_decontam_file(fp_config *c, const char *path) {
    if (c->n_decontam_files >= FP_MAX_LIST) return rt_fail(RT_EINVAL, "too many decontamination files (16 at most)");
    const char *p = own(c, path);
    if (!p) return rt_fail(RT_ENOMEM, "configuration");
    c->decontam_files[c->n_decontam_files++] = p;
    return 0;
}

static json_t *str_list(const char *const *v, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *num_list(const double *v, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

json_t *fp_config_to_json(const fp_config *c) {
    static const char *const keep[] = {"first", "shortest", "longest"};
    const flt_config *t = &c->text;
    json_t *fl = json_array();
    for (int f = 0; f < FP_COUNT; f++)
        if (c->enabled & (1u << f)) json_array_append_new(fl, json_string(filter_names[f]));
    json_t *j = json_pack(
        "{s:o, s:I, s:{s:b,s:i,s:b}, s:{s:s,s:s,s:b,s:b}, s:{s:f,s:i}, s:{s:I,s:b},"
        " s:{s:f,s:f,s:o,s:o,s:I,s:f,s:I}, s:{s:I,s:I,s:I,s:I}, s:{s:i,s:s?,s:o,s:o,s:o},"
        " s:{s:f,s:i,s:i,s:i,s:I,s:b,s:s}}",
        "filters", fl, "batch", (json_int_t)c->batch,
        "verify", "last_number", c->verify.last_number, "float_digits", c->verify.float_digits, "decimal_places",
        c->verify.decimal_places,
        "format", "think_open", t->think_open, "think_close", t->think_close, "open_tag_optional", t->open_tag_optional,
        "require_final_answer", t->require_final_answer,
        "language", "min_script_share", t->min_script_share, "min_letters", t->min_letters,
        "readability", "max_paragraph_chars", (json_int_t)t->max_paragraph_chars, "allow_code_blocks", t->allow_code_blocks,
        "repetition", "max_dup_line_frac", t->max_dup_line_frac, "max_dup_line_char_frac", t->max_dup_line_char_frac,
        "max_top_ngram_char_frac", num_list(t->max_top_ngram_char_frac, 3), "max_dup_ngram_char_frac",
        num_list(t->max_dup_ngram_char_frac, 6), "max_repeated_substring", (json_int_t)t->max_repeated_substring,
        "min_compression_ratio", t->min_compression_ratio, "min_compress_bytes", (json_int_t)t->min_compress_bytes,
        "length", "min_think_tokens", (json_int_t)t->min_think_tokens, "max_think_tokens", (json_int_t)t->max_think_tokens,
        "min_answer_tokens", (json_int_t)t->min_answer_tokens, "max_answer_tokens", (json_int_t)t->max_answer_tokens,
        "decontam", "n", c->decontam_n, "assets", c->assets, "benchmarks", str_list(c->benchmarks, c->n_benchmarks),
        "files", str_list(c->decontam_files, c->n_decontam_files), "fields",
        str_list(c->decontam_fields, c->n_decontam_fields),
        "dedup", "threshold", c->dedup.threshold, "ngram", c->dedup.ngram, "bands", c->dedup.bands, "rows",
        c->dedup.rows, "seed", (json_int_t)c->dedup.seed, "exact_only", c->dedup.exact_only, "keep",
        keep[c->dedup_keep]);
    if (!j) rt_fail(RT_ENOMEM, "configuration");
    return j;
}

int fp_config_add_decontam_field(fp_config *c, const char *field) {
    if (c->n_decontam_fields >= FP_MAX_LIST) return rt_fail(RT_EINVAL, "too many decontamination fields (16 at most)");
    const char *p = own(c, field);
    if (!p) return rt_fail(RT_ENOMEM, "configuration");
    c->decontam_fields[c->n_decontam_fields++] = p;
    return 0;
}

/* tests/unit/test_dataset.c — the run database (schema, rows, idempotence, zstd blobs and
 * dictionaries, snapshots), the import line parser (each malformed case) and the export's
 * think split. Hand-worked expectations; counts read back with plain SQL. */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/status.h"
#include "dataset/blob.h"
#include "dataset/db.h"
#include "dataset/export.h"
#include "dataset/import.h"
#include "testutil.h"

static ds_db *fresh_db(char **dir_out) {
    char *dir = tmp_dir();
    char *path = rt_path_join(dir, "run.db");
    ds_db *db;
    cr_assert_eq(db_open(path, DB_OPEN_CREATE, &db), 0, "%s", rt_errmsg());
    free(path);
    if (dir_out) *dir_out = dir;
    else free(dir);
    return db;
}

static int64_t count(ds_db *db, const char *sql) {
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db_sqlite(db), sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db_sqlite(db)));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

Test(db, new_database_is_current_wal_with_foreign_keys) {
    ds_db *db = fresh_db(NULL);
    int v;
    cr_assert_eq(db_schema_version(db, &v), 0);
    cr_assert_eq(v, DB_SCHEMA_VERSION);
    cr_assert_eq(count(db, "PRAGMA foreign_keys"), 1);
    cr_assert_eq(count(db, "SELECT COUNT(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'"), 1);
    bool ok;
    char *rep;
    cr_assert_eq(db_check(db, &ok, &rep), 0);
    cr_assert(ok);
    cr_assert_str_eq(rep, "ok");
    free(rep);
    db_close(db);
}

Test(db, prompts_and_samples_are_idempotent) {
    ds_db *db = fresh_db(NULL);
    db_prompt p = {"src", "7", "[{\"role\":\"user\",\"content\":\"2+2?\"}]", "question", "4", "{\"level\":1}"};
    int64_t id1, id2;
    bool ins;
    cr_assert_eq(db_prompt_put(db, &p, &id1, &ins), 0, "%s", rt_errmsg());
    cr_assert(ins);
    p.source = "other"; /* same content: the same prompt */
    cr_assert_eq(db_prompt_put(db, &p, &id2, &ins), 0);
    cr_assert(!ins);
    cr_assert_eq(id1, id2);
    db_sample s = {.prompt_id = id1, .teacher = "r1", .params_json = "{\"t\":0.6}", .sample_index = 0, .text = "four",
                   .text_len = 4, .prompt_tokens = 5, .thinking_tokens = -1, .answer_tokens = 1};
    int64_t sid, sid2;
    cr_assert_eq(db_sample_put(db, &s, &sid, &ins), 0, "%s", rt_errmsg());
    cr_assert(ins);
    s.text = "FOUR"; /* same (prompt, teacher, params, index): kept as it was */
    cr_assert_eq(db_sample_put(db, &s, &sid2, &ins), 0);
    cr_assert(!ins);
    cr_assert_eq(sid, sid2);
    /* reference samples (index -1): one row per distinct text, indices 0, 1, … */
    db_sample r = {.prompt_id = id1, .teacher = "reference", .sample_index = -1, .text = "a", .text_len = 1,
                   .prompt_tokens = -1, .thinking_tokens = -1, .answer_tokens = -1};
    cr_assert_eq(db_sample_put(db, &r, NULL, &ins), 0);
    cr_assert(ins);
    r.text = "b";
    cr_assert_eq(db_sample_put(db, &r, NULL, &ins), 0);
    cr_assert(ins);
    r.text = "a";
    cr_assert_eq(db_sample_put(db, &r, NULL, &ins), 0);
    cr_assert(!ins);
    cr_assert_eq(count(db, "SELECT COUNT(*) FROM samples WHERE teacher = 'reference'"), 2);
    cr_assert_eq(count(db, "SELECT MAX(sample_index) FROM samples WHERE teacher = 'reference'"), 1);
    char *t;
    size_t n;
    cr_assert_eq(db_sample_text(db, sid, &t, &n), 0);
    cr_assert_str_eq(t, "four");
    free(t);
    cr_assert_eq(db_sample_text(db, 999, &t, &n), RT_ENOTFOUND);
    /* a sample of a missing prompt violates the foreign key */
    s.prompt_id = 12345;
    cr_assert_neq(db_sample_put(db, &s, NULL, &ins), 0);
    db_close(db);
}

Test(db, verdicts_snapshots_and_stats) {
    ds_db *db = fresh_db(NULL);
    db_prompt p = {"src", NULL, "[{\"role\":\"user\",\"content\":\"q\"}]", "q", NULL, NULL};
    int64_t pid, ids[4];
    cr_assert_eq(db_prompt_put(db, &p, &pid, NULL), 0);
    for (int i = 0; i < 4; i++) {
        db_sample s = {.prompt_id = pid, .teacher = "t", .sample_index = i, .text = "xyz", .text_len = 3,
                       .prompt_tokens = -1, .thinking_tokens = 100, .answer_tokens = 20};
        cr_assert_eq(db_sample_put(db, &s, &ids[i], NULL), 0);
        cr_assert_eq(db_verdict_put(db, ids[i], "math", i != 2, 1.0, i == 2 ? "wrong" : NULL), 0);
    }
    cr_assert_eq(db_snapshot_create(db, "v1", "{\"min\":1}", ids, 3, NULL), 0, "%s", rt_errmsg());
    cr_assert_eq(db_snapshot_create(db, "v1", NULL, ids, 1, NULL), RT_EINVAL);
    int64_t bogus[2] = {ids[0], 4242};
    cr_assert_neq(db_snapshot_create(db, "v2", NULL, bogus, 2, NULL), 0);
    int64_t sid;
    cr_assert_eq(db_snapshot_find(db, "v2", &sid), RT_ENOTFOUND, "a failed snapshot must leave nothing");
    json_t *j;
    cr_assert_eq(db_stats(db, &j), 0, "%s", rt_errmsg());
    cr_assert_eq(json_integer_value(json_object_get(j, "prompts")), 1);
    cr_assert_eq(json_integer_value(json_object_get(j, "samples")), 4);
    json_t *m = json_object_get(json_object_get(j, "verdicts"), "math");
    cr_assert_eq(json_integer_value(json_object_get(m, "pass")), 3);
    cr_assert_eq(json_integer_value(json_object_get(m, "fail")), 1);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "snapshots"), "v1")), 3);
    /* 120 tokens each: the bin [64, 128) — edges 0, 16, 32, 64, 128, … — holds all 4; 3 passed */
    json_t *edges = json_object_get(json_object_get(j, "histograms"), "edges");
    cr_assert_eq(json_integer_value(json_array_get(edges, 3)), 64);
    cr_assert_eq(json_integer_value(json_array_get(edges, 4)), 128);
    json_t *h = json_object_get(json_object_get(json_object_get(j, "histograms"), "tokens"), "src");
    cr_assert_eq(json_integer_value(json_array_get(json_object_get(h, "all"), 3)), 4);
    cr_assert_eq(json_integer_value(json_array_get(json_object_get(h, "all"), 2)), 0);
    cr_assert_eq(json_integer_value(json_array_get(json_object_get(h, "all"), 4)), 0);
    cr_assert_eq(json_integer_value(json_array_get(json_object_get(h, "passed"), 3)), 3);
    cr_assert_eq(json_integer_value(json_array_get(json_object_get(h, "snapshot:v1"), 3)), 3);
    json_decref(j);
    db_close(db);
}

Test(db, readonly_handle_refuses_writes) {
    char *dir;
    ds_db *db = fresh_db(&dir);
    db_close(db);
    char *path = rt_path_join(dir, "run.db");
    cr_assert_eq(db_open(path, DB_OPEN_READONLY, &db), 0, "%s", rt_errmsg());
    db_prompt p = {"src", NULL, "[]", NULL, NULL, NULL};
    int rc = db_prompt_put(db, &p, NULL, NULL);
    cr_assert_eq(rc, RT_EIO, "got %d: %s", rc, rt_errmsg());
    cr_assert(strstr(rt_errmsg(), "readonly"), "%s", rt_errmsg());
    db_close(db);
    cr_assert_eq(db_open("/nonexistent/run.db", 0, &db), RT_ENOTFOUND);
    free(path);
    free(dir);
}

Test(blob, round_trip_plain_and_with_dictionary) {
    blob_codec *c;
    cr_assert_eq(blob_codec_new(0, &c), 0);
    const char *texts[64];
    size_t lens[64];
    char buf[64][200];
    for (int i = 0; i < 64; i++) {
        snprintf(buf[i], sizeof buf[i], "<think>\nLet me compute %d times %d. First, %d * %d = %d.\n</think>\n\n%d",
                 i, i + 3, i, i + 3, i * (i + 3), i * (i + 3));
        texts[i] = buf[i];
        lens[i] = strlen(buf[i]);
    }
    uint8_t *dict, *z;
    size_t dlen, zlen, n;
    cr_assert_eq(blob_dict_train((const void *const *)texts, lens, 64, 2048, &dict, &dlen), 0, "%s", rt_errmsg());
    for (int use = 0; use < 2; use++) {
        if (use) cr_assert_eq(blob_codec_set_dict(c, 7, dict, dlen), 0);
        for (int i = 0; i < 64; i++) {
            char *out;
            cr_assert_eq(blob_compress(c, texts[i], lens[i], use, &z, &zlen), 0);
            cr_assert_eq(blob_decompress(c, z, zlen, use, &out, &n), 0, "%s", rt_errmsg());
            cr_assert_eq(n, lens[i]);
            cr_assert_str_eq(out, texts[i]);
            free(out);
            if (use && i == 0) { /* without the dictionary: refused, not garbage */
                blob_codec *plain;
                cr_assert_eq(blob_codec_new(0, &plain), 0);
                cr_assert_eq(blob_decompress(plain, z, zlen, 1, &out, &n), RT_EFORMAT);
                cr_assert(strstr(rt_errmsg(), "dictionary"));
                blob_codec_free(plain);
            }
            free(z);
        }
    }
    char *out;
    cr_assert_eq(blob_compress(c, "", 0, 0, &z, &zlen), 0);
    cr_assert_eq(blob_decompress(c, z, zlen, 0, &out, &n), 0);
    cr_assert_eq(n, 0);
    free(out);
    z[zlen / 2] ^= 0xFF;
    z[0] ^= 0xFF;
    cr_assert_eq(blob_decompress(c, z, zlen, 0, &out, &n), RT_EFORMAT);
    free(z);
    free(dict);
    blob_codec_free(c);
}

Test(db, dictionary_training_keeps_every_text_readable) {
    ds_db *db = fresh_db(NULL);
    db_prompt p = {"src", NULL, "[{\"role\":\"user\",\"content\":\"q\"}]", "q", NULL, NULL};
    int64_t pid;
    cr_assert_eq(db_prompt_put(db, &p, &pid, NULL), 0);
    char text[400];
    cr_assert_eq(db_begin(db), 0);
    for (int i = 0; i < 300; i++) {
        int k = snprintf(text, sizeof text, "<think>\nWe need %d + %d. Adding the tens and the ones gives %d. "
                         "Check: %d - %d = %d.\n</think>\n\nThe answer is %d.", i, 2 * i, 3 * i, 3 * i, i, 2 * i, 3 * i);
        db_sample s = {.prompt_id = pid, .teacher = "t", .sample_index = i, .text = text, .text_len = (size_t)k,
                       .prompt_tokens = -1, .thinking_tokens = -1, .answer_tokens = -1};
        cr_assert_eq(db_sample_put(db, &s, NULL, NULL), 0);
    }
    cr_assert_eq(db_commit(db), 0);
    db_dict_report r;
    cr_assert_eq(db_dict_train(db, 4096, 0, &r), 0, "%s", rt_errmsg());
    cr_assert_eq(r.samples, 300);
    cr_assert(r.dict_zstd_bytes < r.plain_bytes, "dictionary %zu vs plain %zu", r.dict_zstd_bytes, r.plain_bytes);
    size_t n;
    cr_assert_eq(db_recompress(db, &n), 0, "%s", rt_errmsg());
    cr_assert_eq(n, 300);
    cr_assert_eq(count(db, "SELECT COUNT(*) FROM samples WHERE dict_id IS NOT NULL"), 300);
    for (int64_t id = 1; id <= 300; id += 37) {
        char *t;
        size_t len;
        cr_assert_eq(db_sample_text(db, id, &t, &len), 0, "%s", rt_errmsg());
        int i = (int)id - 1;
        snprintf(text, sizeof text, "<think>\nWe need %d + %d. Adding the tens and the ones gives %d. "
                 "Check: %d - %d = %d.\n</think>\n\nThe answer is %d.", i, 2 * i, 3 * i, 3 * i, i, 2 * i, 3 * i);
        cr_assert_str_eq(t, text);
        free(t);
    }
    db_close(db);
}

/* ---- the import parser ---- */

static imp_options opts(imp_format f) { return (imp_options){.format = f}; }

static void parse_ok(imp_options o, const char *line, imp_record *r) {
    cr_assert_eq(imp_parse_line(&o, line, strlen(line), r), 0, "%s: %s", line, rt_errmsg());
}

static void parse_bad(imp_options o, const char *line, size_t len, const char *needle) {
    imp_record r;
    if (!len) len = strlen(line);
    cr_assert_eq(imp_parse_line(&o, line, len, &r), RT_EFORMAT, "accepted: %s", line);
    cr_assert(strstr(rt_errmsg(), needle), "message '%s' lacks '%s'", rt_errmsg(), needle);
}

Test(import_parse, gsm8k_gold_is_the_text_after_the_marker) {
    imp_record r;
    parse_ok(opts(IMP_GSM8K), "{\"question\":\"How many?\",\"answer\":\"3 * 360 = 1080\\n#### 1,080\"}", &r);
    cr_assert_str_eq(r.gold, "1,080");
    cr_assert_str_eq(r.messages, "[{\"role\":\"user\",\"content\":\"How many?\"}]");
    cr_assert_str_eq(r.prompt_key, "question");
    cr_assert_str_eq(r.metadata, "{\"answer\":\"3 * 360 = 1080\\n#### 1,080\"}");
    cr_assert_null(r.sample);
    imp_record_free(&r);
}

Test(import_parse, math_aime_and_chat_fields) {
    imp_record r;
    imp_options o = opts(IMP_AIME);
    o.as_samples = true;
    parse_ok(o, "{\"id\":60,\"problem\":\"P\",\"answer\":204,\"solution\":\"S\"}", &r);
    cr_assert_str_eq(r.gold, "204");
    cr_assert_str_eq(r.external_id, "60");
    cr_assert_str_eq(r.sample, "S");
    imp_record_free(&r);
    o = opts(IMP_CHAT);
    o.as_samples = true;
    parse_ok(o, "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"u\"},"
                "{\"role\":\"assistant\",\"content\":\"C\",\"reasoning_content\":\"R\"}],\"tag\":1}", &r);
    cr_assert_str_eq(r.messages, "[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"u\"}]");
    cr_assert_str_eq(r.sample, "<think>\nR\n</think>\n\nC");
    cr_assert_str_eq(r.metadata, "{\"tag\":1}");
    cr_assert_null(r.prompt_key);
    imp_record_free(&r);
}

Test(import_parse, each_malformed_case_is_refused) {
    imp_options g = opts(IMP_GSM8K);
    parse_bad(g, "{\"question\":\"q\",", 0, "invalid JSON");
    parse_bad(g, "[1,2]", 0, "not a JSON object");
    parse_bad(g, "{\"question\":\"q\"}", 0, "missing field \"answer\"");
    parse_bad(g, "{\"answer\":\"#### 1\"}", 0, "missing field \"question\"");
    parse_bad(g, "{\"question\":7,\"answer\":\"#### 1\"}", 0, "must be a string");
    parse_bad(g, "{\"question\":\"q\",\"answer\":\"one\"}", 0, "####");
    parse_bad(g, "{\"question\":\"q\",\"question\":\"r\",\"answer\":\"#### 1\"}", 0, "duplicate");
    /* invalid UTF-8: a lone continuation byte, an overlong '/', a surrogate, a truncated sequence, > U+10FFFF */
    const char *bad_utf8[] = {"{\"question\":\"\x80\",\"answer\":\"#### 1\"}", "{\"question\":\"\xC0\xAF\",\"answer\":\"#### 1\"}",
                              "{\"question\":\"\xED\xA0\x80\",\"answer\":\"#### 1\"}", "{\"question\":\"\xE2\x82",
                              "{\"question\":\"\xF4\x90\x80\x80\",\"answer\":\"#### 1\"}"};
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof *bad_utf8; i++) parse_bad(g, bad_utf8[i], strlen(bad_utf8[i]), "invalid UTF-8");
    imp_options c = opts(IMP_CHAT);
    c.as_samples = true;
    parse_bad(c, "{\"messages\":[]}", 0, "non-empty array");
    parse_bad(c, "{\"messages\":[{\"role\":\"user\",\"content\":\"u\"}]}", 0, "not an assistant turn");
    parse_bad(c, "{\"messages\":[{\"role\":\"user\"},{\"role\":\"assistant\",\"content\":\"a\"}]}", 0, "messages[0]");
    parse_bad(c, "{\"messages\":[{\"role\":\"bot\",\"content\":\"u\"}]}", 0, "unknown role");
    imp_options m = opts(IMP_MATH);
    m.as_samples = true;
    parse_bad(m, "{\"problem\":\"p\",\"answer\":\"1\"}", 0, "missing field \"solution\"");
    imp_options j = opts(IMP_JSONL);
    j.prompt_field = "text";
    parse_bad(j, "{\"prompt\":\"p\"}", 0, "missing field \"text\"");
}

Test(import_parse, empty_and_oversized_prompts_are_refused) {
    imp_options g = opts(IMP_GSM8K);
    parse_bad(g, "{\"question\":\"\",\"answer\":\"#### 1\"}", 0, "empty prompt (field \"question\")");
    parse_bad(g, "{\"question\":\" \\n\\t\\r \",\"answer\":\"#### 1\"}", 0, "empty prompt");
    imp_options c = opts(IMP_CHAT);
    parse_bad(c, "{\"messages\":[{\"role\":\"system\",\"content\":\"\"},{\"role\":\"user\",\"content\":\" \"},"
                 "{\"role\":\"assistant\",\"content\":\"a\"}]}", 0, "empty prompt");
    /* the limit counts the prompt's bytes as stored (decoded): "\u00e9" x 4 is 8 bytes */
    imp_options j = opts(IMP_JSONL);
    j.prompt_field = "p";
    j.max_prompt_bytes = 7;
    parse_bad(j, "{\"p\":\"\\u00e9\\u00e9\\u00e9\\u00e9\"}", 0, "prompt of 8 bytes is over the limit of 7");
    j.max_prompt_bytes = 8;
    imp_record r;
    parse_ok(j, "{\"p\":\"\\u00e9\\u00e9\\u00e9\\u00e9\"}", &r);
    imp_record_free(&r);
    /* chat: the prompt is every message before the answer, together */
    c.max_prompt_bytes = 5;
    parse_bad(c, "{\"messages\":[{\"role\":\"system\",\"content\":\"abc\"},{\"role\":\"user\",\"content\":\"def\"}]}", 0,
              "prompt of 6 bytes");
    cr_assert_eq(imp_max_prompt_bytes(&g), (size_t)4 << 20);
}

Test(import, bad_line_aborts_the_file_and_names_it) {
    char *dir;
    ds_db *db = fresh_db(&dir);
    char *path = rt_path_join(dir, "in.jsonl");
    FILE *f = fopen(path, "w");
    fputs("{\"question\":\"a\",\"answer\":\"#### 1\"}\n\n{\"question\":\"b\"}\n{\"question\":\"c\",\"answer\":\"#### 3\"}\n", f);
    fclose(f);
    imp_options o = opts(IMP_GSM8K);
    o.batch_rows = 1;
    imp_report r;
    cr_assert_eq(db_import_file(db, path, &o, NULL, &r), RT_EFORMAT);
    char want[600];
    snprintf(want, sizeof want, "%s:3: missing field \"answer\"", path);
    cr_assert(strstr(rt_errmsg(), want), "%s", rt_errmsg());
    cr_assert_eq(count(db, "SELECT COUNT(*) FROM prompts"), 0);
    o.skip_bad = true;
    cr_assert_eq(db_import_file(db, path, &o, NULL, &r), 0, "%s", rt_errmsg());
    cr_assert_eq(r.lines, 4);
    cr_assert_eq(r.blank, 1);
    cr_assert_eq(r.bad, 1);
    cr_assert_eq(r.first_bad_line, 3);
    cr_assert_eq(r.prompts_new, 2);
    cr_assert_str_eq(r.source, "in");
    cr_assert_eq(count(db, "SELECT COUNT(*) FROM prompts WHERE source = 'in'"), 2);
    cr_assert_eq(db_import_file(db, "/nonexistent.jsonl", &o, NULL, &r), RT_ENOTFOUND);
    db_close(db);
    free(path);
    free(dir);
}

Test(export, think_split) {
    struct { const char *text, *think, *answer; } cases[] = {
        {"<think>\nA\nB\n</think>\n\nC", "A\nB", "C"},
        {"plain", "", "plain"},
        {"no open tag</think> C ", "no open tag", "C "},
        {"<think></think>C", "", "C"},
        {"x</think>y</think>z", "x", "y</think>z"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *th, *an;
        size_t tl, al;
        exp_split_think(cases[i].text, strlen(cases[i].text), &th, &tl, &an, &al);
        cr_assert_eq(tl, strlen(cases[i].think), "case %zu", i);
        cr_assert_eq(memcmp(th, cases[i].think, tl), 0, "case %zu", i);
        cr_assert_eq(al, strlen(cases[i].answer), "case %zu", i);
        cr_assert_eq(memcmp(an, cases[i].answer, al), 0, "case %zu", i);
    }
}

/* exp_sampling: generation params (teacher/driver.c's gd_params_json) as transformers
 * GenerationConfig keys — worked by hand from GenerationConfig's meaning: temperature 0 is
 * greedy (do_sample false, no sampling keys); top_k / min_p only when used; max_tokens is
 * max_new_tokens; no temperature (an imported sample's "{}") is unknown. */
static void assert_json(json_t *got, const char *want) {
    json_t *w = json_loads(want, 0, NULL);
    cr_assert_not_null(w);
    char *g = got ? json_dumps(got, JSON_SORT_KEYS) : NULL;
    cr_assert(got && json_equal(got, w), "got %s, want %s", g ? g : "NULL", want);
    free(g);
    json_decref(w);
}

Test(export_sampling, generation_params_become_generation_config_keys) {
    json_t *s = exp_sampling("{\"max_tokens\":200,\"seed\":1,\"system\":null,\"temperature\":0.7,\"think_prefix\":true,"
                             "\"top_k\":40,\"top_p\":0.9}");
    assert_json(s, "{\"do_sample\": true, \"temperature\": 0.7, \"top_p\": 0.9, \"top_k\": 40, \"max_new_tokens\": 200}");
    json_decref(s);
    s = exp_sampling("{\"max_tokens\":50,\"min_p\":0.05,\"temperature\":0,\"top_p\":0.95}");
    assert_json(s, "{\"do_sample\": false, \"max_new_tokens\": 50}");
    json_decref(s);
    cr_assert_null(exp_sampling("{}"));
    cr_assert_null(exp_sampling(NULL));
    cr_assert_null(exp_sampling("not json"));
}

/* the accumulator keeps the keys every row agrees on; one row without sampling makes it unknown */
Test(export_sampling, a_set_keeps_what_every_row_agrees_on) {
    json_t *a = exp_sampling("{\"max_tokens\":100,\"temperature\":0.6,\"top_p\":0.95}");
    json_t *b = exp_sampling("{\"max_tokens\":300,\"temperature\":0.6,\"top_p\":0.95}");
    exp_sampling_acc acc = {0};
    exp_sampling_add(&acc, a);
    exp_sampling_add(&acc, b);
    exp_sampling_add(&acc, a);
    json_t *r = exp_sampling_take(&acc);
    assert_json(r, "{\"do_sample\": true, \"temperature\": 0.6, \"top_p\": 0.95}");
    json_decref(r);
    exp_sampling_add(&acc, a);
    exp_sampling_add(&acc, NULL);
    exp_sampling_add(&acc, a);
    cr_assert_null(exp_sampling_take(&acc));
    cr_assert_null(exp_sampling_take(&acc));   /* nothing added: unknown */
    json_decref(a);
    json_decref(b);
}

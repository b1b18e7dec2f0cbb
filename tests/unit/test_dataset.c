/* tests/unit/test_dataset.c — the run database (schema, rows, idempotence, zstd blobs and
 * dictionaries, snapshots), the import line parser (each malformed case) and the export's
 * think split. Hand-worked expectations; counts read back with plain SQL. */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "core/fsutil.h"
#include "core/status.h"
#include "dataset/blob.h"
#include "dataset/db.h"
#include "dataset/db_int.h" /* db_sqlite: counts read back with plain SQL */
#include "dataset/evalres.h"
#include "dataset/export.h"
#include "dataset/import.h"
#include "dataset/queue.h"
#include "dataset/verdicts.h"
#include "testutil.h"

static db_conn *fresh_db(char **dir_out) {
    char *dir = tmp_dir();
    char *path = rt_path_join(dir, "run.db");
    db_conn *db;
    cr_assert_eq(db_open(path, DB_OPEN_CREATE, &db), 0, "%s", rt_errmsg());
    free(path);
    if (dir_out) *dir_out = dir;
    else free(dir);
    return db;
}

static int64_t count(db_conn *db, const char *sql) {
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db_sqlite(db), sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db_sqlite(db)));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

Test(db, new_database_is_current_wal_with_foreign_keys) {
    db_conn *db = fresh_db(NULL);
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
    db_conn *db = fresh_db(NULL);
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
    db_conn *db = fresh_db(NULL);
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
    db_conn *db = fresh_db(&dir);
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

/* Short texts (under 1 KiB) are written with raw literals, longer ones exactly as libzstd's
 * one-shot ZSTD_compress at level 3 writes them; every frame is a plain zstd frame that
 * libzstd's own decoder reads back. */
Test(blob, short_texts_raw_literals_long_texts_unchanged) {
    blob_codec *c;
    cr_assert_eq(blob_codec_new(0, &c), 0);
    const size_t sizes[] = {1, 100, 300, 1023, 1024, 1500, 5000};
    char text[5001];
    for (size_t i = 0; i < 5000; i++) text[i] = "the answer is #### 42, so 7 * 6 = 42.\n"[(i * 7 + i / 13) % 38];
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        size_t len = sizes[k], zlen;
        uint8_t *z;
        cr_assert_eq(blob_compress(c, text, len, 0, &z, &zlen), 0, "%s", rt_errmsg());
        char back[5001];
        size_t r = ZSTD_decompress(back, sizeof back, z, zlen);
        cr_assert(!ZSTD_isError(r) && r == len && !memcmp(back, text, len), "%zu bytes: %s", len,
                  ZSTD_isError(r) ? ZSTD_getErrorName(r) : "differs");
        size_t cap = ZSTD_compressBound(len);
        uint8_t *ref = malloc(cap);
        size_t rlen = ZSTD_compress(ref, cap, text, len, 3);
        cr_assert(!ZSTD_isError(rlen));
        if (len >= 1024) cr_assert(zlen == rlen && !memcmp(z, ref, zlen), "%zu bytes: %zu vs level 3's %zu", len, zlen, rlen);
        else cr_assert(zlen >= rlen, "%zu bytes: %zu, below level 3's %zu", len, zlen, rlen);
        free(ref);
        free(z);
    }
    blob_codec_free(c);
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
    db_conn *db = fresh_db(NULL);
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

/* Flat lines are read without jansson; what they store must be what jansson writes
 * (compact, keys in file order, only '"', '\\' and control characters escaped, \b \f \n \r \t
 * by name and the rest as \u00XX in upper case) — worked out by hand here. */
Test(import_parse, flat_lines_store_jansson_compact_json) {
    imp_record r;
    imp_options o = opts(IMP_GSM8K);
    o.as_samples = true;
    parse_ok(o, " {\"id\" : -0, \"question\":\"a\\/b \\u00e9\\ud83d\\ude00 \\\"q\\\" \\u0001\\u001f\\t\","
                "\"answer\":\"x\\ny #### 7 \",\"k\\u0041\":true,\"n\":null,\"f\":false,\"big\":-123456789012345678} ", &r);
    cr_assert_str_eq(r.messages, "[{\"role\":\"user\",\"content\":\"a/b \xC3\xA9\xF0\x9F\x98\x80 \\\"q\\\" \\u0001\\u001F\\t\"}]");
    cr_assert_str_eq(r.metadata, "{\"id\":0,\"answer\":\"x\\ny #### 7 \",\"kA\":true,\"n\":null,\"f\":false,"
                                 "\"big\":-123456789012345678}");
    cr_assert_str_eq(r.external_id, "0");
    cr_assert_str_eq(r.gold, "7");
    cr_assert_str_eq(r.sample, "x\ny #### 7 ");
    cr_assert_eq(r.sample_len, 11);
    imp_record_free(&r);
    /* a long plain run and escapes on both sides of an eight-byte boundary */
    imp_options j = opts(IMP_JSONL);
    j.prompt_field = "p";
    parse_ok(j, "{\"p\":\"0123456\\\"89abcdef\\\\ghijklmnopq\\u00e9\"}", &r);
    cr_assert_str_eq(r.messages, "[{\"role\":\"user\",\"content\":\"0123456\\\"89abcdef\\\\ghijklmnopq\xC3\xA9\"}]");
    cr_assert_str_eq(r.metadata, "{}");
    imp_record_free(&r);
}

/* A line the fast reader leaves to jansson (a nested value, a real number) stores the same
 * prompt bytes, so its content hash matches the flat line's. */
Test(import_parse, nested_and_flat_lines_store_the_same_prompt) {
    imp_record a, b;
    imp_options o = opts(IMP_GSM8K);
    parse_ok(o, "{\"question\":\"Q \\u00e9\\n\\u0002\",\"answer\":\"#### 1\"}", &a);
    parse_ok(o, "{\"question\":\"Q \\u00e9\\n\\u0002\",\"answer\":\"#### 1\",\"tags\":[1,{\"x\":2.5}],\"w\":0.5}", &b);
    cr_assert_str_eq(a.messages, b.messages);
    cr_assert_str_eq(a.messages, "[{\"role\":\"user\",\"content\":\"Q \xC3\xA9\\n\\u0002\"}]");
    cr_assert_str_eq(b.metadata, "{\"answer\":\"#### 1\",\"tags\":[1,{\"x\":2.5}],\"w\":0.5}");
    imp_record_free(&a);
    imp_record_free(&b);
    /* what only jansson refuses is still refused, with its message */
    parse_bad(o, "{\"question\":\"a\\u0000\",\"answer\":\"#### 1\"}", 0, "invalid JSON");
    parse_bad(o, "{\"question\":\"\\ud83d\",\"answer\":\"#### 1\"}", 0, "invalid JSON");
    parse_bad(o, "{\"question\":\"q\",\"answer\":\"#### 1\",\"n\":01}", 0, "invalid JSON");
    parse_bad(o, "{\"question\":\"q\",\"answer\":\"#### 1\"} x", 0, "invalid JSON");
    parse_bad(o, "{\"question\":\"q\",\"answer\":\"#### 1\",\"n\":92233720368547758070}", 0, "invalid JSON");
}

Test(import, bad_line_aborts_the_file_and_names_it) {
    char *dir;
    db_conn *db = fresh_db(&dir);
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

/* ---- typed calls of queue.h, verdicts.h and evalres.h: hand-worked cases ---- */

static int64_t put_prompt(db_conn *db, const char *source, const char *messages, const char *gold, const char *meta) {
    db_prompt p = {source, NULL, messages, NULL, gold, meta};
    int64_t id;
    cr_assert_eq(db_prompt_put(db, &p, &id, NULL), 0, "%s", rt_errmsg());
    return id;
}

static int64_t put_sample(db_conn *db, int64_t prompt, const char *teacher, const char *params, int64_t index,
                          const char *text, int32_t think, int32_t answer) {
    db_sample s = {.prompt_id = prompt, .teacher = teacher, .params_json = params, .sample_index = index, .text = text,
                   .text_len = strlen(text), .prompt_tokens = -1, .thinking_tokens = think, .answer_tokens = answer,
                   .finish_reason = "stop"};
    int64_t id;
    cr_assert_eq(db_sample_put(db, &s, &id, NULL), 0, "%s", rt_errmsg());
    return id;
}

typedef struct {
    int64_t id[8];
    char have[8][8];  /* "1.1": index 0 and 2 stored */
    char txt[8][64];
    int n_have[8];
    size_t n;
} rows_seen;

static int see_pending_prompt(void *ud, const db_pending_prompt *p) {
    rows_seen *r = ud;
    r->id[r->n] = p->id;
    for (int j = 0; j < 3; j++) r->have[r->n][j] = p->have[j] ? '1' : '.';
    r->have[r->n][3] = 0;
    r->n_have[r->n] = p->n_have;
    snprintf(r->txt[r->n], sizeof r->txt[0], "%s", p->source);
    r->n++;
    return 0;
}

Test(queue, pending_prompts_list_the_stored_indices_of_this_teacher_and_params) {
    db_conn *db = fresh_db(NULL);
    int64_t a = put_prompt(db, "gsm8k", "[{\"role\":\"user\",\"content\":\"a\"}]", NULL, NULL);
    int64_t b = put_prompt(db, "math", "[{\"role\":\"user\",\"content\":\"b\"}]", NULL, NULL);
    put_sample(db, a, "r1", "{}", 0, "x", -1, -1);
    put_sample(db, a, "r1", "{}", 2, "y", -1, -1);
    put_sample(db, a, "r1", "{}", 5, "z", -1, -1);         /* beyond n = 3: not counted */
    put_sample(db, a, "r1", "{\"t\":1}", 1, "x", -1, -1);  /* other params */
    put_sample(db, b, "v3", "{}", 1, "x", -1, -1);         /* other teacher */
    rows_seen r = {0};
    cr_assert_eq(db_queue_prompts(db, NULL, "r1", "{}", 3, see_pending_prompt, &r), 0, "%s", rt_errmsg());
    cr_assert_eq(r.n, 2);
    cr_assert_eq(r.id[0], a);
    cr_assert_str_eq(r.have[0], "1.1");
    cr_assert_eq(r.n_have[0], 2);
    cr_assert_str_eq(r.txt[0], "gsm8k");
    cr_assert_eq(r.id[1], b);
    cr_assert_str_eq(r.have[1], "...");
    cr_assert_eq(r.n_have[1], 0);
    memset(&r, 0, sizeof r);
    cr_assert_eq(db_queue_prompts(db, "math", "r1", "{}", 3, see_pending_prompt, &r), 0);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(r.id[0], b);
    db_close(db);
}

static int stop_at_first(void *ud, const db_pending_prompt *p) {
    (void)p;
    ++*(int *)ud;
    return RT_ERANGE;
}

Test(queue, a_callbacks_error_stops_the_scan_and_is_returned) {
    db_conn *db = fresh_db(NULL);
    put_prompt(db, "s", "[{\"role\":\"user\",\"content\":\"a\"}]", NULL, NULL);
    put_prompt(db, "s", "[{\"role\":\"user\",\"content\":\"b\"}]", NULL, NULL);
    int calls = 0;
    cr_assert_eq(db_queue_prompts(db, NULL, "r1", "{}", 1, stop_at_first, &calls), RT_ERANGE);
    cr_assert_eq(calls, 1);
    db_close(db);
}

Test(queue, topk_writer_stores_once_per_sample) {
    db_conn *db = fresh_db(NULL);
    int64_t p = put_prompt(db, "s", "[{\"role\":\"user\",\"content\":\"a\"}]", NULL, NULL);
    int64_t sid = put_sample(db, p, "r1", "{}", 0, "x", -1, -1);
    db_topk_writer *w;
    cr_assert_eq(db_topk_writer_open(db, &w), 0, "%s", rt_errmsg());
    const unsigned char blob[3] = {1, 2, 3};
    cr_assert_eq(db_topk_writer_put(w, sid, 2, 5, blob, sizeof blob), 0, "%s", rt_errmsg());
    cr_assert_eq(count(db, "SELECT k * 100 + n_tokens * 10 + length(data) FROM sample_topk"), 253);
    cr_assert_eq(db_topk_writer_put(w, sid, 2, 5, blob, sizeof blob), RT_EIO); /* the primary key holds */
    cr_assert(strstr(rt_errmsg(), "storing top-k logprobs: "), "%s", rt_errmsg());
    db_topk_writer_close(w);
    db_topk_writer_close(NULL);
    db_close(db);
}

static int see_prompt_row(void *ud, const db_prompt_row *p) {
    rows_seen *r = ud;
    r->id[r->n] = p->id;
    snprintf(r->txt[r->n++], sizeof r->txt[0], "%s", p->metadata);
    return 0;
}

static int see_turn(void *ud, const db_prompt_turn *p) {
    rows_seen *r = ud;
    r->id[r->n] = p->id;
    snprintf(r->txt[r->n++], sizeof r->txt[0], "%s", p->last_content ? p->last_content : "(null)");
    return 0;
}

Test(queue, a_sources_prompts_and_their_last_turns) {
    db_conn *db = fresh_db(NULL);
    int64_t a = put_prompt(db, "train", "[{\"role\":\"system\",\"content\":\"be brief\"},{\"role\":\"user\",\"content\":\"1+1?\"}]",
                           NULL, "{\"solution\":\"2\"}");
    put_prompt(db, "test", "[{\"role\":\"user\",\"content\":\"2+2?\"}]", NULL, NULL);
    int64_t c = put_prompt(db, "train", "[{\"role\":\"user\",\"content\":\"3+3?\"}]", NULL, NULL);
    rows_seen r = {0};
    cr_assert_eq(db_source_prompts(db, "train", see_prompt_row, &r), 0, "%s", rt_errmsg());
    cr_assert_eq(r.n, 2);
    cr_assert_eq(r.id[0], a);
    cr_assert_str_eq(r.txt[0], "{\"solution\":\"2\"}");
    cr_assert_eq(r.id[1], c);
    cr_assert_str_eq(r.txt[1], "{}");
    memset(&r, 0, sizeof r);
    cr_assert_eq(db_source_last_turns(db, "train", see_turn, &r), 0, "%s", rt_errmsg());
    cr_assert_eq(r.n, 2);
    cr_assert_str_eq(r.txt[0], "1+1?");
    cr_assert_str_eq(r.txt[1], "3+3?");
    db_close(db);
}

typedef struct {
    int64_t id[8];
    unsigned done[8];
    char text[8][32];
    bool has_gold[8];
    int64_t think[8];
    size_t n;
} pending_seen;

static int see_pending(void *ud, db_pending_row *r) {
    pending_seen *s = ud;
    s->id[s->n] = r->id;
    s->done[s->n] = r->done;
    snprintf(s->text[s->n], sizeof s->text[0], "%.*s", (int)r->len, r->text);
    s->has_gold[s->n] = r->gold != NULL;
    s->think[s->n] = r->thinking_tokens;
    if (s->n == 0) { free(r->text); r->text = NULL; } /* the first is taken, the others left to the reader */
    s->n++;
    return 0;
}

Test(verdicts, pending_samples_per_filter_with_gold_and_batches) {
    db_conn *db = fresh_db(NULL);
    int64_t pg = put_prompt(db, "s", "[{\"role\":\"user\",\"content\":\"a\"}]", "4", NULL);
    int64_t pn = put_prompt(db, "s", "[{\"role\":\"user\",\"content\":\"b\"}]", NULL, NULL);
    int64_t s1 = put_sample(db, pg, "r1", "{}", 0, "one", 7, 2);
    int64_t s2 = put_sample(db, pg, "r1", "{}", 1, "two", -1, -1);
    int64_t s3 = put_sample(db, pn, "r1", "{}", 0, "three", -1, -1);
    /* bit 0 "verify" (needs gold), bit 1 "format", bit 2 "length" (not wanted) */
    const char *names[] = {"verify", "format", "length"};
    db_pending_spec spec = {0x3, names, 3, 0};
    cr_assert_eq(db_verdict_put(db, s1, "verify", true, 1, "ok"), 0);
    cr_assert_eq(db_verdict_put(db, s1, "format", true, 1, "ok"), 0);   /* s1 done */
    cr_assert_eq(db_verdict_put(db, s2, "format", false, 0, "bad"), 0); /* s2 lacks verify */
    cr_assert_eq(db_verdict_put(db, s3, "length", true, 0, "ok"), 0);   /* s3: verify done (no gold), lacks format */
    size_t n = 99;
    cr_assert_eq(db_pending_count(db, &spec, &n), 0, "%s", rt_errmsg());
    cr_assert_eq(n, 2);
    db_pending *q;
    cr_assert_eq(db_pending_open(db, &spec, &q), 0, "%s", rt_errmsg());
    pending_seen seen = {0};
    int64_t last = 0;
    cr_assert_eq(db_pending_read(q, &last, 1, see_pending, &seen, &n), 0, "%s", rt_errmsg());
    cr_assert_eq(n, 1);
    cr_assert_eq(last, s2);
    cr_assert_eq(seen.id[0], s2);
    cr_assert_eq(seen.done[0], 0x2);
    cr_assert_str_eq(seen.text[0], "two");
    cr_assert(seen.has_gold[0]);
    cr_assert_eq(seen.think[0], -1);
    /* the read is released between batches: a write goes through */
    cr_assert_eq(db_verdict_put(db, s2, "verify", false, 0, "wrong"), 0, "%s", rt_errmsg());
    cr_assert_eq(db_pending_read(q, &last, 1, see_pending, &seen, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(seen.id[1], s3);
    cr_assert_eq(seen.done[1], 0x1);
    cr_assert_str_eq(seen.text[1], "three");
    cr_assert(!seen.has_gold[1]);
    cr_assert_eq(db_pending_read(q, &last, 1, see_pending, &seen, &n), 0);
    cr_assert_eq(n, 0);
    db_pending_close(q);
    db_pending_close(NULL);
    cr_assert_eq(db_samples_without_gold(db), 1);
    db_close(db);
}

Test(verdicts, filter_runs_are_recorded_and_listed) {
    db_conn *db = fresh_db(NULL);
    int64_t r1, r2;
    cr_assert_eq(db_filter_run_start(db, "{\"a\":1}", &r1), 0, "%s", rt_errmsg());
    cr_assert_eq(db_filter_run_start(db, "{\"b\":2}", &r2), 0);
    cr_assert_eq(db_filter_run_finish(db, r1, 12), 0, "%s", rt_errmsg());
    int64_t p = put_prompt(db, "s", "[{\"role\":\"user\",\"content\":\"a\"}]", NULL, NULL);
    int64_t s = put_sample(db, p, "r1", "{}", 0, "x", -1, -1);
    cr_assert_eq(db_verdict_put(db, s, "length", true, 0, "ok"), 0);
    cr_assert_eq(db_verdict_put(db, s, "format", true, 0, "ok"), 0);
    json_t *filters = json_array(), *runs = json_array();
    cr_assert_eq(db_filter_history(db, filters, runs), 0, "%s", rt_errmsg());
    char *f = json_dumps(filters, JSON_COMPACT);
    cr_assert_str_eq(f, "[\"format\",\"length\"]");
    cr_assert_eq(json_array_size(runs), 2);
    json_t *a = json_array_get(runs, 0), *b = json_array_get(runs, 1);
    cr_assert_eq(json_integer_value(json_object_get(a, "id")), r1);
    cr_assert_eq(json_integer_value(json_object_get(a, "scored")), 12);
    cr_assert(json_is_true(json_object_get(a, "finished")));
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(a, "config"), "a")), 1);
    cr_assert(json_is_false(json_object_get(b, "finished")));
    cr_assert_eq(json_integer_value(json_object_get(b, "scored")), 0);
    free(f);
    json_decref(filters);
    json_decref(runs);
    db_close(db);
}

typedef struct {
    int64_t id[8];
    bool has_dedup[8], clean[8];
    int64_t bytes[8];
    char *text[8];
    size_t n;
} dedup_seen;

static int see_dedup(void *ud, db_dedup_row *r) {
    dedup_seen *s = ud;
    s->id[s->n] = r->id;
    s->has_dedup[s->n] = r->has_dedup;
    s->clean[s->n] = r->clean;
    s->bytes[s->n] = r->text_bytes;
    s->text[s->n++] = r->text; /* taken */
    r->text = NULL;
    return 0;
}

Test(verdicts, dedup_rows_clusters_and_regrown_reasons) {
    db_conn *db = fresh_db(NULL);
    int64_t p = put_prompt(db, "s", "[{\"role\":\"user\",\"content\":\"a\"}]", NULL, NULL);
    int64_t a = put_sample(db, p, "r1", "{}", 0, "alpha", -1, -1);
    int64_t b = put_sample(db, p, "r1", "{}", 1, "beta!", -1, -1);
    int64_t c = put_sample(db, p, "r1", "{}", 2, "gamma ray", -1, -1);
    int64_t d = put_sample(db, p, "r1", "{}", 3, "delta", -1, -1);
    /* an earlier run: a represents a cluster of 2 with b; c has no dedup verdict and fails length */
    db_cluster_writer *w;
    cr_assert_eq(db_cluster_writer_open(db, &w), 0, "%s", rt_errmsg());
    cr_assert_eq(db_cluster_put(w, "minhash", a, a, true), 0, "%s", rt_errmsg());
    cr_assert_eq(db_cluster_put(w, "minhash", b, a, false), 0);
    cr_assert_eq(db_cluster_put(w, "exact", d, d, true), 0);   /* another method: not a representative here */
    db_cluster_writer_close(w);
    cr_assert_eq(db_verdict_put(db, a, "dedup", true, 2, "ok: representative of a cluster of 2 (keep first)"), 0);
    cr_assert_eq(db_verdict_put(db, b, "dedup", false, 2, "exact duplicate of sample 1 (normalized text; cluster of 2, keep first)"), 0);
    cr_assert_eq(db_verdict_put(db, d, "dedup", true, 1, "ok: no duplicate"), 0);
    cr_assert_eq(db_verdict_put(db, c, "length", false, 0, "too long"), 0);
    dedup_seen s = {0};
    cr_assert_eq(db_dedup_rows(db, "minhash", see_dedup, &s), 0, "%s", rt_errmsg());
    cr_assert_eq(s.n, 2);
    cr_assert_eq(s.id[0], a);
    cr_assert(s.has_dedup[0] && s.clean[0]);
    cr_assert_str_eq(s.text[0], "alpha");
    cr_assert_eq(s.bytes[0], 5);
    cr_assert_eq(s.id[1], c);
    cr_assert(!s.has_dedup[1] && !s.clean[1]);
    cr_assert_str_eq(s.text[1], "gamma ray");
    for (size_t i = 0; i < s.n; i++) free(s.text[i]);
    size_t m = 99;
    cr_assert_eq(db_cluster_members(db, "minhash", a, &m), 0, "%s", rt_errmsg());
    cr_assert_eq(m, 1);
    cr_assert_eq(db_cluster_members(db, "exact", a, &m), 0);
    cr_assert_eq(m, 0);
    cr_assert_eq(db_cluster_regrow(db, "minhash", a, 3), 0, "%s", rt_errmsg());
    cr_assert_eq(count(db, "SELECT score FROM verdicts WHERE filter = 'dedup' AND sample_id = 2"), 3);
    cr_assert_eq(count(db, "SELECT reason = 'exact duplicate of sample 1 (normalized text; cluster of 3, keep first)' "
                           "FROM verdicts WHERE filter = 'dedup' AND sample_id = 2"), 1);
    cr_assert_eq(count(db, "SELECT score FROM verdicts WHERE filter = 'dedup' AND sample_id = 1"), 2); /* representative unchanged */
    db_close(db);
}

typedef struct {
    int64_t id[8], prompt[8], bytes[8];
    char src[8][16];
    size_t n;
} eligible_seen;

static int see_eligible(void *ud, const db_eligible_row *r) {
    eligible_seen *s = ud;
    s->id[s->n] = r->id;
    s->prompt[s->n] = r->prompt_id;
    s->bytes[s->n] = r->text_bytes;
    snprintf(s->src[s->n++], sizeof s->src[0], "%s", r->source);
    return 0;
}

Test(verdicts, selection_takes_samples_passing_every_filter_that_ran) {
    db_conn *db = fresh_db(NULL);
    bool any = true;
    cr_assert_eq(db_verdicts_any(db, &any), 0, "%s", rt_errmsg());
    cr_assert(!any);
    int64_t pg = put_prompt(db, "gsm8k", "[{\"role\":\"user\",\"content\":\"a\"}]", "4", NULL);
    int64_t pn = put_prompt(db, "chat", "[{\"role\":\"user\",\"content\":\"b\"}]", NULL, NULL);
    int64_t s1 = put_sample(db, pg, "r1", "{}", 0, "ok one", -1, -1);   /* passes verify and length */
    int64_t s2 = put_sample(db, pg, "r1", "{}", 1, "no verify", -1, -1); /* length only: not eligible */
    int64_t s3 = put_sample(db, pn, "r1", "{}", 0, "no gold", -1, -1);  /* length only, no gold: eligible */
    int64_t s4 = put_sample(db, pn, "v3", "{}", 0, "fails", -1, -1);    /* a failing verdict */
    int64_t s5 = put_sample(db, pn, "r1", "{}", 1, "dup", -1, -1);      /* a non-representative member */
    put_sample(db, pn, "r1", "{}", 2, "unscored", -1, -1);               /* no verdict at all: not eligible */
    cr_assert_eq(db_verdict_put(db, s1, "verify", true, 1, "ok"), 0);
    int64_t ids[] = {s1, s2, s3, s4, s5};
    for (int i = 0; i < 5; i++) cr_assert_eq(db_verdict_put(db, ids[i], "length", i != 3, 0, "r"), 0);
    db_cluster_writer *w;
    cr_assert_eq(db_cluster_writer_open(db, &w), 0);
    cr_assert_eq(db_cluster_put(w, "minhash", s5, s3, false), 0);
    db_cluster_writer_close(w);
    cr_assert_eq(db_verdicts_any(db, &any), 0);
    cr_assert(any);
    eligible_seen e = {0};
    cr_assert_eq(db_eligible_samples(db, see_eligible, &e), 0, "%s", rt_errmsg());
    cr_assert_eq(e.n, 2);
    cr_assert_eq(e.id[0], s1);
    cr_assert_eq(e.prompt[0], pg);
    cr_assert_eq(e.bytes[0], 6);
    cr_assert_str_eq(e.src[0], "gsm8k");
    cr_assert_eq(e.id[1], s3);
    cr_assert_str_eq(e.src[1], "chat");
    /* db snapshot's pick: by source, teacher, and "every verdict passes" */
    int64_t *got;
    size_t n;
    cr_assert_eq(db_snapshot_pick(db, NULL, NULL, false, &got, &n), 0, "%s", rt_errmsg());
    cr_assert_eq(n, 6);
    free(got);
    cr_assert_eq(db_snapshot_pick(db, "chat", "r1", true, &got, &n), 0);
    cr_assert_eq(n, 2); /* s3 and s5 (clusters are not verdicts); s4 is v3's, the last unscored */
    cr_assert_eq(got[0], s3);
    cr_assert_eq(got[1], s5);
    free(got);
    cr_assert_eq(db_snapshot_pick(db, "none", NULL, false, &got, &n), 0);
    cr_assert_eq(n, 0);
    free(got);
    db_close(db);
}

static void see_index(void *ud, int64_t j) { *(int64_t *)ud += (int64_t)1 << (4 * j); }

typedef struct {
    char line[8][96];
    size_t n;
} eval_seen;

static int see_eval(void *ud, const db_eval_row *r) {
    eval_seen *s = ud;
    snprintf(s->line[s->n++], sizeof s->line[0], "%s %s %lld %s %d %lld %s", r->benchmark, r->model,
             (long long)r->prompt_id, r->extracted ? r->extracted : "-", r->correct, (long long)r->n_tokens,
             r->finish ? r->finish : "-");
    return 0;
}

Test(evalres, results_are_stored_once_and_read_back_in_order) {
    db_conn *db = fresh_db(NULL);
    int64_t p1 = put_prompt(db, "gsm8k", "[{\"role\":\"user\",\"content\":\"a\"}]", "4", NULL);
    int64_t p2 = put_prompt(db, "aime", "[{\"role\":\"user\",\"content\":\"b\"}]", "7", NULL);
    db_eval_writer *w;
    cr_assert_eq(db_eval_writer_open(db, &w), 0, "%s", rt_errmsg());
    const char z[] = "zz";
    db_eval_result r = {"run1", "m", "gsm8k", p1, 1, z, 2, "4", true, 30, "stop", 12.5};
    cr_assert_eq(db_eval_put(w, &r), 0, "%s", rt_errmsg());
    r.sample_index = 0, r.extracted = NULL, r.correct = false, r.n_tokens = -1, r.finish = "length";
    cr_assert_eq(db_eval_put(w, &r), 0);
    r.extracted = "5"; /* same key: nothing changes */
    cr_assert_eq(db_eval_put(w, &r), 0);
    db_eval_result q = {"run1", "m", "aime", p2, 0, z, 2, "7", true, 10, NULL, 1};
    cr_assert_eq(db_eval_put(w, &q), 0);
    db_eval_result other = {"run2", "m2", "gsm8k", p1, 0, z, 2, "4", true, 5, "stop", 1};
    cr_assert_eq(db_eval_put(w, &other), 0);
    cr_assert_eq(count(db, "SELECT COUNT(*) FROM eval_results"), 4);
    int64_t mask = 0;
    cr_assert_eq(db_eval_stored(w, "run1", "m", p1, see_index, &mask), 0, "%s", rt_errmsg());
    cr_assert_eq(mask, 0x11); /* indices 0 and 1 */
    mask = 0;
    cr_assert_eq(db_eval_stored(w, "run1", "m2", p1, see_index, &mask), 0);
    cr_assert_eq(mask, 0);
    db_eval_writer_close(w);
    char *m = NULL;
    cr_assert_eq(db_eval_other_model(db, "run1", "m", &m), 0, "%s", rt_errmsg());
    cr_assert_null(m);
    cr_assert_eq(db_eval_other_model(db, "run1", "m9", &m), 0);
    cr_assert_str_eq(m, "m");
    free(m);
    eval_seen s = {0};
    cr_assert_eq(db_eval_rows(db, "run1", see_eval, &s), 0, "%s", rt_errmsg());
    cr_assert_eq(s.n, 3);
    char want[3][96];
    snprintf(want[0], sizeof want[0], "aime m %lld 7 1 10 -", (long long)p2);
    snprintf(want[1], sizeof want[1], "gsm8k m %lld - 0 0 length", (long long)p1);
    snprintf(want[2], sizeof want[2], "gsm8k m %lld 4 1 30 stop", (long long)p1);
    for (int i = 0; i < 3; i++) cr_assert_str_eq(s.line[i], want[i]);
    char **names;
    size_t n;
    cr_assert_eq(db_eval_runs(db, &names, &n), 0, "%s", rt_errmsg());
    cr_assert_eq(n, 2);
    cr_assert_str_eq(names[0], "run1");
    cr_assert_str_eq(names[1], "run2");
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    db_close(db);
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

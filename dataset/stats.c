/* dataset/stats.c — db_stats(): counts, pass rates and length histograms (contract in db.h). */
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "dataset/db.h"
#include "dataset/db_int.h"

/* Histogram edges: 0, then powers of two from 2^4 tokens (2^6 bytes), so short samples (the demo's)
 * spread over several bins as well as chains of thought; values ≥ the last edge share the last bin. */
#define N_EDGES 15
static const int64_t tok_edges[N_EDGES] = {0, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072};
static const int64_t byte_edges[N_EDGES] = {0,    64,    128,   256,   512,    1024,   2048,  4096,
                                            8192, 16384, 32768, 65536, 131072, 262144, 524288};

static int bin_of(const int64_t *edges, int64_t v) {
    int b = 0;
    while (b + 1 < N_EDGES && v >= edges[b + 1]) b++;
    return b;
}

static json_t *edges_json(const int64_t *edges) {
    json_t *a = json_array();
    for (int i = 0; i < N_EDGES; i++) json_array_append_new(a, json_integer(edges[i]));
    return a;
}

/* hist[source][stage] is an array of N_EDGES counts; created on first use. */
static void hist_add(json_t *hist, const char *source, const char *stage, int b) {
    json_t *src = json_object_get(hist, source);
    if (!src) json_object_set_new(hist, source, src = json_object());
    json_t *arr = json_object_get(src, stage);
    if (!arr) {
        json_object_set_new(src, stage, arr = json_array());
        for (int i = 0; i < N_EDGES; i++) json_array_append_new(arr, json_integer(0));
    }
    json_t *c = json_array_get(arr, (size_t)b);
    json_integer_set(c, json_integer_value(c) + 1);
}

typedef int (*row_fn)(sqlite3_stmt *st, json_t *acc);

static int each_row(db_conn *db, const char *sql, const char *bind_text, row_fn fn, json_t *acc) {
    sqlite3 *h = db_sqlite(db);
    sqlite3_stmt *st;
    SQL_TRY(h, sqlite3_prepare_v2(h, sql, -1, &st, NULL));
    if (bind_text) sqlite3_bind_text(st, 1, bind_text, -1, SQLITE_STATIC);
    int row, s, rc = 0;
    while (!rc && (s = db_step_row(st, &row)) == SQLITE_OK && row) rc = fn(st, acc);
    sqlite3_finalize(st);
    if (rc) return rc;
    SQL_TRY(h, s);
    return 0;
}

static const char *col_text(sqlite3_stmt *st, int c) {
    const char *t = (const char *)sqlite3_column_text(st, c);
    return t ? t : "";
}

static int row_count_pair(sqlite3_stmt *st, json_t *acc) { /* key, count → acc[key] = count */
    json_object_set_new(acc, col_text(st, 0), json_integer(sqlite3_column_int64(st, 1)));
    return 0;
}

static int row_source_prompts(sqlite3_stmt *st, json_t *acc) {
    json_object_set_new(acc, col_text(st, 0), json_pack("{s:I,s:I}", "prompts", (json_int_t)sqlite3_column_int64(st, 1),
                                                         "samples", (json_int_t)0));
    return 0;
}

static int row_source_samples(sqlite3_stmt *st, json_t *acc) {
    json_t *o = json_object_get(acc, col_text(st, 0));
    if (o) json_object_set_new(o, "samples", json_integer(sqlite3_column_int64(st, 1)));
    return 0;
}

static int row_verdict(sqlite3_stmt *st, json_t *acc) {
    int64_t pass = sqlite3_column_int64(st, 1), fail = sqlite3_column_int64(st, 2);
    json_object_set_new(acc, col_text(st, 0), json_pack("{s:I,s:I,s:f}", "pass", (json_int_t)pass, "fail",
                                                        (json_int_t)fail, "pass_rate",
                                                        pass + fail ? (double)pass / (double)(pass + fail) : 0.0));
    return 0;
}

/* columns: source, text_bytes, tokens (NULL when unknown), passed (0/1) ; acc = {tokens, bytes, stage} */
static int row_hist(sqlite3_stmt *st, json_t *acc) {
    const char *src = col_text(st, 0);
    const char *stage = json_string_value(json_object_get(acc, "stage"));
    json_t *tok = json_object_get(acc, "tokens"), *byt = json_object_get(acc, "bytes");
    bool has_tok = sqlite3_column_type(st, 2) != SQLITE_NULL;
    int64_t nb = sqlite3_column_int64(st, 1), nt = sqlite3_column_int64(st, 2);
    bool passed = sqlite3_column_int(st, 3);
    const char *stages[2] = {stage, passed ? "passed" : NULL};
    for (int i = 0; i < 2; i++) {
        if (!stages[i]) continue;
        hist_add(byt, src, stages[i], bin_of(byte_edges, nb));
        if (has_tok) hist_add(tok, src, stages[i], bin_of(tok_edges, nt));
    }
    return 0;
}

#define HIST_COLS                                                                                        \
    "SELECT p.source, s.text_bytes, CASE WHEN s.thinking_tokens IS NULL AND s.answer_tokens IS NULL "    \
    "THEN NULL ELSE COALESCE(s.thinking_tokens, 0) + COALESCE(s.answer_tokens, 0) END, "                 \
    "EXISTS (SELECT 1 FROM verdicts v WHERE v.sample_id = s.id) AND NOT EXISTS (SELECT 1 FROM verdicts v " \
    "WHERE v.sample_id = s.id AND v.pass = 0) FROM samples s JOIN prompts p ON p.id = s.prompt_id"

/* The order `retort filter` applies its filters in (filters/pipeline.h); the funnel counts a
 * sample as removed by the first of these it fails. Filters not in the list come after,
 * by name. */
static const char *const funnel_order[] = {"verify", "format", "language", "readability",
                                           "repetition", "length", "decontam", "dedup"};
#define N_FUNNEL_ORDER (sizeof funnel_order / sizeof *funnel_order)

static int funnel_rank(const char *f, char **names, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(names[i], f)) return (int)i;
    return -1;
}

/* "funnel": [{"filter", "removed", "remaining"}] starting from every sample: removed is the
 * number of samples whose first failing filter (in funnel order) is this one. */
static int funnel_fill(db_conn *db, json_t *j, int64_t samples) {
    sqlite3 *h = db_sqlite(db);
    sqlite3_stmt *st;
    char *names[64];
    size_t n = 0;
    int rc = 0, row, s;
    for (size_t i = 0; i < N_FUNNEL_ORDER; i++) names[n++] = (char *)funnel_order[i];
    size_t n_known = n;
    SQL_TRY(h, sqlite3_prepare_v2(h, "SELECT DISTINCT filter FROM verdicts ORDER BY filter", -1, &st, NULL));
    bool present[64] = {false};
    while ((s = db_step_row(st, &row)) == SQLITE_OK && row) {
        const char *f = col_text(st, 0);
        int r = funnel_rank(f, names, n);
        if (r < 0 && n < 64) {
            names[n] = strdup(f);
            if (!names[n]) { rc = rt_fail(RT_ENOMEM, "funnel"); break; }
            r = (int)n++;
        }
        if (r >= 0) present[r] = true;
    }
    sqlite3_finalize(st);
    int64_t removed[64] = {0};
    if (!rc && s != SQLITE_OK) rc = db_sql_fail(h, s, "reading filters", __FILE__, __LINE__);
    if (!rc) {
        s = sqlite3_prepare_v2(h, "SELECT sample_id, filter FROM verdicts WHERE pass = 0 ORDER BY sample_id", -1, &st, NULL);
        if (s != SQLITE_OK) rc = db_sql_fail(h, s, "funnel query", __FILE__, __LINE__);
    }
    if (!rc) {
        int64_t cur = -1;
        int best = -1;
        while ((s = db_step_row(st, &row)) == SQLITE_OK && row) {
            int64_t id = sqlite3_column_int64(st, 0);
            int r = funnel_rank(col_text(st, 1), names, n);
            if (id != cur) {
                if (best >= 0) removed[best]++;
                cur = id;
                best = r;
            } else if (r >= 0 && (best < 0 || r < best)) best = r;
        }
        if (best >= 0) removed[best]++;
        sqlite3_finalize(st);
        if (s != SQLITE_OK) rc = db_sql_fail(h, s, "funnel query", __FILE__, __LINE__);
    }
    if (!rc) {
        json_t *fun = json_array();
        json_object_set_new(j, "funnel", fun);
        int64_t left = samples;
        for (size_t i = 0; i < n; i++) {
            if (!present[i]) continue;
            left -= removed[i];
            json_array_append_new(fun, json_pack("{s:s,s:I,s:I}", "filter", names[i], "removed", (json_int_t)removed[i],
                                                 "remaining", (json_int_t)left));
        }
    }
    for (size_t i = n_known; i < n; i++) free(names[i]);
    return rc;
}

static int stats_fill(db_conn *db, json_t *j) {
    int rc, v;
    if ((rc = db_schema_version(db, &v))) return rc;
    json_object_set_new(j, "schema_version", json_integer(v));
    sqlite3 *h = db_sqlite(db);
    sqlite3_stmt *st;
    SQL_TRY(h, sqlite3_prepare_v2(h, "SELECT (SELECT COUNT(*) FROM prompts), (SELECT COUNT(*) FROM samples), "
                                     "(SELECT COALESCE(SUM(text_bytes), 0) FROM samples), "
                                     "(SELECT COALESCE(SUM(length(text)), 0) FROM samples)", -1, &st, NULL));
    int row, s = db_step_row(st, &row);
    if (s == SQLITE_OK && row) {
        int64_t raw = sqlite3_column_int64(st, 2), stored = sqlite3_column_int64(st, 3);
        json_object_set_new(j, "prompts", json_integer(sqlite3_column_int64(st, 0)));
        json_object_set_new(j, "samples", json_integer(sqlite3_column_int64(st, 1)));
        json_object_set_new(j, "text", json_pack("{s:I,s:I,s:f}", "bytes", (json_int_t)raw, "stored_bytes",
                                                 (json_int_t)stored, "ratio", stored ? (double)raw / (double)stored : 0.0));
    }
    sqlite3_finalize(st);
    SQL_TRY(h, s);
    json_t *sources = json_object(), *teachers = json_object(), *verdicts = json_object(), *snaps = json_object();
    json_object_set_new(j, "sources", sources);
    json_object_set_new(j, "teachers", teachers);
    json_object_set_new(j, "verdicts", verdicts);
    json_object_set_new(j, "snapshots", snaps);
    if ((rc = each_row(db, "SELECT source, COUNT(*) FROM prompts GROUP BY source ORDER BY source", NULL,
                       row_source_prompts, sources)) ||
        (rc = each_row(db, "SELECT p.source, COUNT(*) FROM samples s JOIN prompts p ON p.id = s.prompt_id "
                           "GROUP BY p.source", NULL, row_source_samples, sources)) ||
        (rc = each_row(db, "SELECT teacher, COUNT(*) FROM samples GROUP BY teacher ORDER BY teacher", NULL,
                       row_count_pair, teachers)) ||
        (rc = each_row(db, "SELECT filter, SUM(pass), SUM(1 - pass) FROM verdicts GROUP BY filter ORDER BY filter",
                       NULL, row_verdict, verdicts)) ||
        (rc = each_row(db, "SELECT name, n_samples FROM snapshots ORDER BY id", NULL, row_count_pair, snaps)))
        return rc;
    if ((rc = funnel_fill(db, j, json_integer_value(json_object_get(j, "samples"))))) return rc;
    json_t *tok = json_object(), *byt = json_object();
    json_t *hist = json_pack("{s:o,s:o,s:o,s:o}", "edges", edges_json(tok_edges), "byte_edges", edges_json(byte_edges),
                             "tokens", tok, "bytes", byt);
    json_object_set_new(j, "histograms", hist);
    json_t *acc = json_pack("{s:O,s:O,s:s}", "tokens", tok, "bytes", byt, "stage", "all");
    rc = each_row(db, HIST_COLS, NULL, row_hist, acc);
    const char *name;
    json_t *val;
    json_object_foreach(snaps, name, val) {
        if (rc) break;
        char stage[300];
        snprintf(stage, sizeof stage, "snapshot:%s", name);
        json_object_set_new(acc, "stage", json_string(stage));
        /* passed samples are counted once, by the "all" pass above: the 0 below keeps them out */
        rc = each_row(db,
                      "SELECT p.source, s.text_bytes, CASE WHEN s.thinking_tokens IS NULL AND s.answer_tokens IS NULL "
                      "THEN NULL ELSE COALESCE(s.thinking_tokens, 0) + COALESCE(s.answer_tokens, 0) END, 0 "
                      "FROM snapshot_samples m JOIN snapshots n ON n.id = m.snapshot_id "
                      "JOIN samples s ON s.id = m.sample_id JOIN prompts p ON p.id = s.prompt_id WHERE n.name = ?1",
                      name, row_hist, acc);
    }
    json_decref(acc);
    return rc;
}

int db_stats(db_conn *db, json_t **out) {
    *out = NULL;
    json_t *j = json_object();
    if (!j) return rt_fail(RT_ENOMEM, "building stats");
    int rc = stats_fill(db, j);
    if (rc) { json_decref(j); return rt_errorf(rc, "collecting stats"); }
    *out = j;
    return 0;
}

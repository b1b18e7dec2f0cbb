/* dataset/verdicts.c — the filter stage's bookkeeping: pending samples, filter runs, dedup
 * clusters, selection (contract in verdicts.h). */
#include "dataset/verdicts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "dataset/db_int.h"

/* "DB: WHAT: SQLite's reason" — the database file, the action, and why. */
static int stage_fail(sqlite3 *h, const char *what) {
    const char *f = sqlite3_db_filename(h, "main");
    return rt_fail(RT_EINTERNAL, "%s: %s: %s", f && *f ? f : "the database", what, sqlite3_errmsg(h));
}

/* SQLITE_ROW and SQLITE_DONE count as success here: the callers step once. */
static bool sql_ok(int s) { return s == SQLITE_OK || s == SQLITE_ROW || s == SQLITE_DONE; }

/* ---- pending samples ---- */

/* SQL of the pending query: per filter a done flag; the gold filter counts as done without gold. */
static int pending_sql(const db_pending_spec *spec, char *sql, size_t cap, bool count) {
    size_t o = 0;
    o += (size_t)snprintf(sql + o, cap - o, "SELECT %s FROM (SELECT s.id, s.text, s.dict_id, s.thinking_tokens, "
                                           "s.answer_tokens, s.finish_reason, p.messages, p.gold, p.metadata, 0",
                          count ? "COUNT(*)" : "*");
    for (int f = 0; f < spec->n_names && o < cap; f++) {
        if (!(spec->todo & (1u << f))) continue;
        o += (size_t)snprintf(sql + o, cap - o,
                              " | ((%sEXISTS (SELECT 1 FROM verdicts v WHERE v.sample_id = s.id AND v.filter = '%s')) << %d)",
                              f == spec->gold_bit ? "p.gold IS NULL OR " : "", spec->names[f], f);
    }
    if (o < cap)
        o += (size_t)snprintf(sql + o, cap - o, " AS done FROM samples s JOIN prompts p ON p.id = s.prompt_id "
                                               "WHERE s.id > ?1) WHERE done != %u%s",
                              spec->todo, count ? "" : " ORDER BY id LIMIT ?2");
    return o < cap ? 0 : rt_fail(RT_EINTERNAL, "pending query too long");
}

int db_pending_count(db_conn *db, const db_pending_spec *spec, size_t *n) {
    sqlite3 *h = db_sqlite(db);
    char sql[4096];
    int rc = pending_sql(spec, sql, sizeof sql, true);
    if (rc) return rc;
    sqlite3_stmt *st;
    if (!sql_ok(sqlite3_prepare_v2(h, sql, -1, &st, NULL))) return stage_fail(h, "counting pending samples");
    sqlite3_bind_int64(st, 1, 0);
    int s = sqlite3_step(st);
    *n = s == SQLITE_ROW ? (size_t)sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if (!sql_ok(s)) return stage_fail(h, "counting pending samples");
    return 0;
}

struct db_pending {
    db_conn *db;
    sqlite3_stmt *st;
};

int db_pending_open(db_conn *db, const db_pending_spec *spec, db_pending **out) {
    *out = NULL;
    sqlite3 *h = db_sqlite(db);
    char sql[4096];
    int rc = pending_sql(spec, sql, sizeof sql, false);
    if (rc) return rc;
    db_pending *p = rt_calloc(1, sizeof *p);
    if (!p) return RT_ENOMEM;
    p->db = db;
    if (!sql_ok(sqlite3_prepare_v2(h, sql, -1, &p->st, NULL))) {
        rc = stage_fail(h, "selecting pending samples");
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

static char *col_text(sqlite3_stmt *st, int c) { return (char *)sqlite3_column_text(st, c); }

int db_pending_read(db_pending *p, int64_t *last, size_t cap, db_pending_fn fn, void *ud, size_t *n) {
    sqlite3 *h = db_sqlite(p->db);
    sqlite3_stmt *st = p->st;
    *n = 0;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, *last);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)cap);
    int s, rc = 0;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
        db_pending_row r = {.id = sqlite3_column_int64(st, 0)};
        (*n)++;
        *last = r.id;
        const void *blob = sqlite3_column_blob(st, 1);
        size_t bl = (size_t)sqlite3_column_bytes(st, 1);
        /* the blob pointer is valid until the next step; decompress now */
        rc = db_blob_text(p->db, blob, bl, sqlite3_column_int64(st, 2), &r.text, &r.len);
        if (rc) { rc = rt_errorf(rc, "sample %lld", (long long)r.id); break; }
        r.thinking_tokens = sqlite3_column_type(st, 3) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 3);
        r.answer_tokens = sqlite3_column_type(st, 4) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 4);
        r.finish_reason = col_text(st, 5);
        r.messages = col_text(st, 6);
        r.gold = col_text(st, 7);
        r.metadata = col_text(st, 8);
        r.done = (unsigned)sqlite3_column_int64(st, 9);
        rc = fn(ud, &r);
        free(r.text);
    }
    if (!rc && s != SQLITE_DONE && s != SQLITE_ROW) rc = stage_fail(h, "reading samples");
    sqlite3_reset(st); /* releases the read before the batch is written */
    return rc;
}

void db_pending_close(db_pending *p) {
    if (!p) return;
    sqlite3_finalize(p->st);
    free(p);
}

size_t db_samples_without_gold(db_conn *db) {
    sqlite3 *h = db_sqlite(db);
    sqlite3_stmt *st;
    size_t n = 0;
    int s = sqlite3_prepare_v2(h, "SELECT COUNT(*) FROM samples s JOIN prompts p ON p.id = s.prompt_id WHERE p.gold IS NULL",
                               -1, &st, NULL);
    if (s == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) n = (size_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* ---- filter runs ---- */

int db_filter_run_start(db_conn *db, const char *config_json, int64_t *id) {
    sqlite3 *h = db_sqlite(db);
    sqlite3_stmt *st;
    int s = sqlite3_prepare_v2(h, "INSERT INTO filter_runs (config) VALUES (?1)", -1, &st, NULL);
    if (s == SQLITE_OK) {
        sqlite3_bind_text(st, 1, config_json, -1, SQLITE_TRANSIENT);
        s = sqlite3_step(st);
        sqlite3_finalize(st);
    }
    if (!sql_ok(s)) return stage_fail(h, "recording the filter run");
    *id = sqlite3_last_insert_rowid(h);
    return 0;
}

int db_filter_run_finish(db_conn *db, int64_t id, size_t scored) {
    sqlite3 *h = db_sqlite(db);
    sqlite3_stmt *st;
    if (!sql_ok(sqlite3_prepare_v2(h, "UPDATE filter_runs SET scored = ?2, finished_at = CAST(strftime('%s','now') AS INTEGER) "
                                      "WHERE id = ?1", -1, &st, NULL)))
        return stage_fail(h, "recording the filter run");
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)scored);
    int s = sqlite3_step(st);
    sqlite3_finalize(st);
    if (!sql_ok(s)) return stage_fail(h, "recording the filter run");
    return 0;
}

int db_filter_history(db_conn *db, json_t *filters, json_t *runs) {
    sqlite3 *h = db_sqlite(db);
    sqlite3_stmt *st;
    int s = sqlite3_prepare_v2(h, "SELECT DISTINCT filter FROM verdicts ORDER BY filter", -1, &st, NULL);
    if (s == SQLITE_OK)
        while ((s = sqlite3_step(st)) == SQLITE_ROW) json_array_append_new(filters, json_string(col_text(st, 0)));
    sqlite3_finalize(st);
    st = NULL;
    if (s == SQLITE_DONE)
        s = sqlite3_prepare_v2(h, "SELECT id, config, scored, started_at, finished_at FROM filter_runs ORDER BY id", -1, &st, NULL);
    if (s == SQLITE_OK) s = SQLITE_ROW; /* enter the loop below */
    while (s == SQLITE_ROW && (s = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *cfg = json_loads(col_text(st, 1), 0, NULL);
        json_array_append_new(runs, json_pack("{s:I,s:o*,s:I,s:I,s:b}", "id", (json_int_t)sqlite3_column_int64(st, 0),
                                              "config", cfg, "scored", (json_int_t)sqlite3_column_int64(st, 2),
                                              "started_at", (json_int_t)sqlite3_column_int64(st, 3), "finished",
                                              sqlite3_column_type(st, 4) != SQLITE_NULL));
    }
    sqlite3_finalize(st);
    if (s != SQLITE_DONE) return rt_fail(RT_EINTERNAL, "reading filter runs: %s", sqlite3_errmsg(h));
    return 0;
}

/* ---- dedup clusters ---- */

int db_dedup_rows(db_conn *db, const char *method, db_dedup_fn fn, void *ud) {
    sqlite3 *h = db_sqlite(db);
    sqlite3_stmt *st;
    if (!sql_ok(sqlite3_prepare_v2(h,
                                   "SELECT s.id, s.text, s.dict_id, s.text_bytes, "
                                   "EXISTS (SELECT 1 FROM verdicts v WHERE v.sample_id = s.id AND v.filter = 'dedup'), "
                                   "NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.sample_id = s.id AND v.pass = 0 "
                                   "AND v.filter != 'dedup') FROM samples s WHERE NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.sample_id = s.id "
                                   "AND v.filter = 'dedup') OR EXISTS (SELECT 1 FROM clusters c WHERE c.sample_id = s.id "
                                   "AND c.method = ?1 AND c.representative = 1) ORDER BY s.id",
                                   -1, &st, NULL)))
        return stage_fail(h, "selecting samples for dedup");
    sqlite3_bind_text(st, 1, method, -1, SQLITE_STATIC);
    int s, rc = 0;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
        db_dedup_row r = {.id = sqlite3_column_int64(st, 0)};
        rc = db_blob_text(db, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1), sqlite3_column_int64(st, 2),
                          &r.text, &r.len);
        if (rc) break;
        r.text_bytes = sqlite3_column_int64(st, 3);
        r.has_dedup = sqlite3_column_int(st, 4) != 0;
        r.clean = sqlite3_column_int(st, 5) != 0;
        rc = fn(ud, &r);
        free(r.text);
    }
    if (!rc && s != SQLITE_DONE) rc = stage_fail(h, "reading samples for dedup");
    sqlite3_finalize(st);
    return rc;
}

int db_cluster_members(db_conn *db, const char *method, int64_t rep_id, size_t *n) {
    sqlite3 *h = db_sqlite(db);
    sqlite3_stmt *st;
    *n = 0;
    if (!sql_ok(sqlite3_prepare_v2(h, "SELECT COUNT(*) FROM clusters WHERE method = ?1 AND cluster = ?2 AND representative = 0",
                                   -1, &st, NULL)))
        return stage_fail(h, "counting cluster members");
    sqlite3_bind_text(st, 1, method, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, rep_id);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) *n = (size_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (!sql_ok(s)) return stage_fail(h, "counting cluster members");
    return 0;
}

int db_cluster_regrow(db_conn *db, const char *method, int64_t rep_id, size_t members) {
    sqlite3 *h = db_sqlite(db);
    sqlite3_stmt *st;
    if (!sql_ok(sqlite3_prepare_v2(h, "UPDATE verdicts SET reason = replace(reason, 'cluster of ' || CAST(score AS INTEGER) || ',', "
                                      "'cluster of ' || ?3 || ','), score = ?3 WHERE filter = 'dedup' AND sample_id IN "
                                      "(SELECT sample_id FROM clusters WHERE method = ?1 AND cluster = ?2 AND representative = 0)",
                                   -1, &st, NULL)))
        return stage_fail(h, "updating cluster sizes");
    sqlite3_bind_text(st, 1, method, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, rep_id);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)members);
    int s = sqlite3_step(st);
    sqlite3_finalize(st);
    if (!sql_ok(s)) return stage_fail(h, "updating cluster sizes");
    return 0;
}

struct db_cluster_writer {
    db_conn *db;
    sqlite3_stmt *st;
};

int db_cluster_writer_open(db_conn *db, db_cluster_writer **out) {
    *out = NULL;
    sqlite3 *h = db_sqlite(db);
    db_cluster_writer *w = rt_calloc(1, sizeof *w);
    if (!w) return RT_ENOMEM;
    w->db = db;
    int ps = sqlite3_prepare_v2(h, "INSERT INTO clusters (method, sample_id, cluster, representative) VALUES "
                                   "(?1, ?2, ?3, ?4) ON CONFLICT (method, sample_id) DO UPDATE SET "
                                   "cluster = excluded.cluster, representative = excluded.representative",
                                -1, &w->st, NULL);
    if (ps != SQLITE_OK) {
        int rc = stage_fail(h, "preparing clusters insert");
        db_cluster_writer_close(w);
        return rc;
    }
    *out = w;
    return 0;
}

int db_cluster_put(db_cluster_writer *w, const char *method, int64_t sample_id, int64_t cluster, bool representative) {
    sqlite3_stmt *st = w->st;
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, method, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, sample_id);
    sqlite3_bind_int64(st, 3, cluster);
    sqlite3_bind_int(st, 4, representative);
    if (sqlite3_step(st) != SQLITE_DONE) return stage_fail(db_sqlite(w->db), "writing clusters");
    return 0;
}

void db_cluster_writer_close(db_cluster_writer *w) {
    if (!w) return;
    sqlite3_finalize(w->st);
    free(w);
}

/* ---- selection ---- */

int db_verdicts_any(db_conn *db, bool *any) {
    sqlite3 *h = db_sqlite(db);
    sqlite3_stmt *st;
    *any = false;
    int s = sqlite3_prepare_v2(h, "SELECT EXISTS (SELECT 1 FROM verdicts)", -1, &st, NULL);
    if (s == SQLITE_OK && (s = sqlite3_step(st)) == SQLITE_ROW) *any = sqlite3_column_int(st, 0) != 0;
    sqlite3_finalize(st);
    if (s != SQLITE_ROW) return rt_fail(RT_EINTERNAL, "reading verdicts: %s", sqlite3_errmsg(h));
    return 0;
}

/* The eligible samples: a passing verdict for every filter that was run (verify only where
 * the prompt has a gold answer), no failing verdict, and not a non-representative cluster
 * member. */
static const char ELIGIBLE_SQL[] =
    "WITH run_filters(f) AS (SELECT DISTINCT filter FROM verdicts) "
    "SELECT s.id, s.prompt_id, s.text_bytes, p.source FROM samples s JOIN prompts p ON p.id = s.prompt_id "
    "WHERE NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.sample_id = s.id AND v.pass = 0) "
    "AND NOT EXISTS (SELECT 1 FROM run_filters r WHERE NOT (r.f = 'verify' AND p.gold IS NULL) "
    "  AND NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.sample_id = s.id AND v.filter = r.f)) "
    "AND NOT EXISTS (SELECT 1 FROM clusters c WHERE c.sample_id = s.id AND c.representative = 0) "
    "ORDER BY s.id";

int db_eligible_samples(db_conn *db, db_eligible_fn fn, void *ud) {
    sqlite3 *h = db_sqlite(db);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(h, ELIGIBLE_SQL, -1, &st, NULL) != SQLITE_OK)
        return rt_fail(RT_EINTERNAL, "selecting eligible samples: %s", sqlite3_errmsg(h));
    int s, rc = 0;
    while (!rc && (s = sqlite3_step(st)) == SQLITE_ROW) {
        db_eligible_row r = {sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2),
                             col_text(st, 3)};
        rc = fn(ud, &r);
    }
    if (!rc && s != SQLITE_DONE) rc = rt_fail(RT_EINTERNAL, "selecting eligible samples: %s", sqlite3_errmsg(h));
    sqlite3_finalize(st);
    return rc;
}

int db_snapshot_pick(db_conn *db, const char *source, const char *teacher, bool passed, int64_t **ids_out, size_t *n_out) {
    sqlite3 *h = db_sqlite(db);
    sqlite3_stmt *st = NULL;
    const char *sql =
        "SELECT s.id FROM samples s JOIN prompts p ON p.id = s.prompt_id WHERE (?1 IS NULL OR p.source = ?1) "
        "AND (?2 IS NULL OR s.teacher = ?2) AND (?3 = 0 OR (EXISTS (SELECT 1 FROM verdicts v WHERE v.sample_id = s.id) "
        "AND NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.sample_id = s.id AND v.pass = 0))) ORDER BY s.id";
    int64_t *ids = NULL;
    size_t n = 0, cap = 0;
    int s = sqlite3_prepare_v2(h, sql, -1, &st, NULL);
    int rc = s == SQLITE_OK ? 0 : db_fail(db, s, "selecting samples");
    if (!rc) {
        if (source) sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
        if (teacher) sqlite3_bind_text(st, 2, teacher, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, passed);
        while ((s = sqlite3_step(st)) == SQLITE_ROW) {
            if (rt_grow((void **)&ids, &cap, n + 1, sizeof *ids)) { rc = RT_ENOMEM; break; }
            ids[n++] = sqlite3_column_int64(st, 0);
        }
        if (!rc && s != SQLITE_DONE) rc = db_fail(db, s, "selecting samples");
    }
    sqlite3_finalize(st);
    if (rc) {
        free(ids);
        ids = NULL;
        n = 0;
    }
    *ids_out = ids;
    *n_out = n;
    return rc;
}

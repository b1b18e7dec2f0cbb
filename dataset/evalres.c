/* dataset/evalres.c — eval_results rows in and out (contract in evalres.h). */
#include "dataset/evalres.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/status.h"
#include "dataset/db_int.h"

/* The message names the database, the direction and SQLite's reason; the call and where it
 * failed go to the debug log (--log-level debug). */
static int eval_fail(sqlite3 *h, const char *dir, const char *call, const char *file, int line) {
    RT_DEBUG("%s failed at %s:%d: %s", call, file, line, sqlite3_errmsg(h));
    return rt_fail(RT_EINTERNAL, "%s %s: %s", dir, sqlite3_db_filename(h, "main"), sqlite3_errmsg(h));
}

/* ---- writing ---- */

struct db_eval_writer {
    db_conn *db;
    sqlite3_stmt *ins, *have;
};

int db_eval_writer_open(db_conn *db, db_eval_writer **out) {
    *out = NULL;
    sqlite3 *h = db_sqlite(db);
    db_eval_writer *w = rt_calloc(1, sizeof *w);
    if (!w) return rt_fail(RT_ENOMEM, "eval: out of memory");
    w->db = db;
    int rc = 0;
    if (sqlite3_prepare_v2(h,
                           "INSERT INTO eval_results (run, model, benchmark, prompt_id, sample_index, "
                           "response, extracted, correct, n_tokens, finish_reason, latency_ms) "
                           "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) "
                           "ON CONFLICT (run, model, prompt_id, sample_index) DO NOTHING",
                           -1, &w->ins, NULL) != SQLITE_OK)
        rc = eval_fail(h, "writing results to", "sqlite3_prepare_v2(INSERT INTO eval_results)", __FILE__, __LINE__);
    else if (sqlite3_prepare_v2(h,
                                "SELECT sample_index FROM eval_results WHERE run = ?1 AND model = ?2 "
                                "AND prompt_id = ?3",
                                -1, &w->have, NULL) != SQLITE_OK)
        rc = eval_fail(h, "writing results to", "sqlite3_prepare_v2(SELECT sample_index)", __FILE__, __LINE__);
    if (rc) {
        db_eval_writer_close(w);
        return rc;
    }
    *out = w;
    return 0;
}

int db_eval_put(db_eval_writer *w, const db_eval_result *r) {
    sqlite3_stmt *st = w->ins;
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, r->run, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->model, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, r->benchmark, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, r->prompt_id);
    sqlite3_bind_int64(st, 5, r->sample_index);
    sqlite3_bind_blob(st, 6, r->response, (int)r->response_len, SQLITE_STATIC);
    if (r->extracted) sqlite3_bind_text(st, 7, r->extracted, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 7);
    sqlite3_bind_int(st, 8, r->correct ? 1 : 0);
    if (r->n_tokens >= 0) sqlite3_bind_int64(st, 9, r->n_tokens);
    else sqlite3_bind_null(st, 9);
    if (r->finish) sqlite3_bind_text(st, 10, r->finish, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 10);
    sqlite3_bind_double(st, 11, r->latency_ms);
    int rc = 0;
    if (sqlite3_step(st) != SQLITE_DONE) rc = rt_fail(RT_EIO, "storing an eval result: %s", sqlite3_errmsg(db_sqlite(w->db)));
    sqlite3_reset(st);
    return rc;
}

int db_eval_stored(db_eval_writer *w, const char *run, const char *model, int64_t prompt_id,
                   void (*fn)(void *ud, int64_t sample_index), void *ud) {
    sqlite3_stmt *st = w->have;
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, run, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, prompt_id);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) fn(ud, sqlite3_column_int64(st, 0));
    sqlite3_reset(st);
    return step == SQLITE_DONE ? 0 : rt_fail(RT_EINTERNAL, "reading eval_results: %s", sqlite3_errmsg(db_sqlite(w->db)));
}

void db_eval_writer_close(db_eval_writer *w) {
    if (!w) return;
    sqlite3_finalize(w->ins);
    sqlite3_finalize(w->have);
    free(w);
}

int db_eval_other_model(db_conn *db, const char *run, const char *model, char **other) {
    *other = NULL;
    sqlite3 *s = db_sqlite(db);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s, "SELECT model FROM eval_results WHERE run = ?1 AND model != ?2 LIMIT 1", -1, &st, NULL) !=
        SQLITE_OK)
        return eval_fail(s, "writing results to", "sqlite3_prepare_v2(SELECT model)", __FILE__, __LINE__);
    sqlite3_bind_text(st, 1, run, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, model, -1, SQLITE_STATIC);
    int rc = 0, step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        const char *m = (const char *)sqlite3_column_text(st, 0);
        if (!(*other = rt_strdup(m ? m : ""))) rc = rt_fail(RT_ENOMEM, "eval results");
    } else if (step != SQLITE_DONE) rc = rt_fail(RT_EINTERNAL, "reading eval_results: %s", sqlite3_errmsg(s));
    sqlite3_finalize(st);
    return rc;
}

/* ---- reading ---- */

int db_eval_rows(db_conn *db, const char *run, db_eval_row_fn fn, void *ud) {
    sqlite3 *s = db_sqlite(db);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s,
                           "SELECT benchmark, model, prompt_id, extracted, correct, COALESCE(n_tokens, 0), "
                           "finish_reason FROM eval_results WHERE run = ?1 "
                           "ORDER BY benchmark, prompt_id, sample_index",
                           -1, &st, NULL) != SQLITE_OK)
        return eval_fail(s, "reading results from", "sqlite3_prepare_v2(SELECT … FROM eval_results)", __FILE__, __LINE__);
    int rc = 0, step = SQLITE_DONE;
    if (sqlite3_bind_text(st, 1, run, -1, SQLITE_TRANSIENT) != SQLITE_OK)
        rc = rt_fail(RT_EINTERNAL, "binding the run name: %s", sqlite3_errmsg(s));
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
        db_eval_row r = {(const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1),
                         sqlite3_column_int64(st, 2), (const char *)sqlite3_column_text(st, 3),
                         sqlite3_column_int(st, 4) == 1, sqlite3_column_int64(st, 5),
                         (const char *)sqlite3_column_text(st, 6)};
        rc = fn(ud, &r);
    }
    if (!rc && step != SQLITE_DONE && step != SQLITE_ROW)
        rc = rt_fail(RT_EINTERNAL, "reading eval_results: %s", sqlite3_errmsg(s));
    sqlite3_finalize(st);
    return rc;
}

int db_eval_runs(db_conn *db, char ***names, size_t *n) {
    *names = NULL;
    *n = 0;
    sqlite3 *s = db_sqlite(db);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s, "SELECT run FROM eval_results GROUP BY run ORDER BY MIN(id)", -1, &st, NULL) != SQLITE_OK)
        return eval_fail(s, "reading results from", "sqlite3_prepare_v2(SELECT run FROM eval_results)", __FILE__, __LINE__);
    size_t cap = 0;
    int rc = 0, step;
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
        if (rt_grow((void **)names, &cap, *n + 1, sizeof **names) ||
            !((*names)[*n] = rt_strdup((const char *)sqlite3_column_text(st, 0))))
            rc = rt_fail(RT_ENOMEM, "eval results");
        else (*n)++;
    }
    if (!rc && step != SQLITE_DONE) rc = rt_fail(RT_EINTERNAL, "listing eval runs: %s", sqlite3_errmsg(s));
    sqlite3_finalize(st);
    if (rc) {
        for (size_t i = 0; i < *n; i++) free((*names)[i]);
        free(*names);
        *names = NULL;
        *n = 0;
    }
    return rc;
}

/* dataset/queue.c — pending prompts, teacher top-k, a source's prompts (contract in
 * queue.h). */
#include "dataset/queue.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "dataset/db_int.h"

int db_queue_prompts(db_conn *db, const char *source, const char *teacher, const char *params, int n,
                     db_pending_prompt_fn fn, void *ud) {
    sqlite3 *s = db_sqlite(db);
    sqlite3_stmt *st = NULL;
    const char *sql = "SELECT p.id, p.source, p.messages, (SELECT group_concat(sample_index) FROM samples s "
                      "WHERE s.prompt_id = p.id AND s.teacher = ?2 AND s.params = ?3 AND s.sample_index < ?4) "
                      "FROM prompts p WHERE ?1 IS NULL OR p.source = ?1 ORDER BY p.id";
    if (sqlite3_prepare_v2(s, sql, -1, &st, NULL) != SQLITE_OK)
        return rt_fail(RT_EINTERNAL, "selecting pending prompts: %s", sqlite3_errmsg(s));
    if (source) sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, teacher, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, params, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, n);
    int K = n, step, rc = 0;
    bool *have = rt_calloc((size_t)K, 1);
    if (!have) rc = rt_fail(RT_ENOMEM, "out of memory");
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
        memset(have, 0, (size_t)K);
        int n_have = 0;
        /* the stored indices, as group_concat lists them: "0,2,3" */
        const char *list = (const char *)sqlite3_column_text(st, 3);
        for (const char *q = list; q && *q;) {
            long v = strtol(q, (char **)&q, 10);
            if (v >= 0 && v < K && !have[v]) have[v] = true, n_have++;
            if (*q == ',') q++;
            else break;
        }
        db_pending_prompt p = {sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
                               (const char *)sqlite3_column_text(st, 2), have, n_have};
        rc = fn(ud, &p);
    }
    if (!rc && step != SQLITE_DONE) rc = rt_fail(RT_EINTERNAL, "selecting pending prompts: %s", sqlite3_errmsg(s));
    free(have);
    sqlite3_finalize(st);
    return rc;
}

struct db_topk_writer {
    db_conn *db;
    sqlite3_stmt *st;
};

int db_topk_writer_open(db_conn *db, db_topk_writer **out) {
    *out = NULL;
    sqlite3 *s = db_sqlite(db);
    db_topk_writer *w = rt_calloc(1, sizeof *w);
    if (!w) return RT_ENOMEM;
    w->db = db;
    if (sqlite3_prepare_v2(s, "INSERT INTO sample_topk (sample_id, k, n_tokens, data) VALUES (?1, ?2, ?3, ?4)", -1, &w->st,
                           NULL) != SQLITE_OK) {
        int rc = rt_fail(RT_EINTERNAL, "preparing the top-k insert: %s", sqlite3_errmsg(s));
        db_topk_writer_close(w);
        return rc;
    }
    *out = w;
    return 0;
}

int db_topk_writer_put(db_topk_writer *w, int64_t sample_id, int k, size_t n_tokens, const void *blob, size_t len) {
    sqlite3_stmt *st = w->st;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, sample_id);
    sqlite3_bind_int(st, 2, k);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)n_tokens);
    sqlite3_bind_blob(st, 4, blob, (int)len, SQLITE_STATIC);
    int rc = 0;
    if (sqlite3_step(st) != SQLITE_DONE) rc = rt_fail(RT_EIO, "storing top-k logprobs: %s", sqlite3_errmsg(db_sqlite(w->db)));
    sqlite3_reset(st);
    return rc;
}

void db_topk_writer_close(db_topk_writer *w) {
    if (!w) return;
    sqlite3_finalize(w->st);
    free(w);
}

int db_source_prompts(db_conn *db, const char *source, db_prompt_fn fn, void *ud) {
    sqlite3 *s = db_sqlite(db);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s, "SELECT id, messages, metadata FROM prompts WHERE source = ?1 ORDER BY id", -1, &st, NULL) !=
        SQLITE_OK)
        return rt_fail(RT_EINTERNAL, "reading prompts: %s", sqlite3_errmsg(s));
    sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
    int step, rc = 0;
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
        db_prompt_row p = {sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
                           (const char *)sqlite3_column_text(st, 2)};
        rc = fn(ud, &p);
    }
    if (!rc && step != SQLITE_DONE) rc = rt_fail(RT_EINTERNAL, "reading prompts: %s", sqlite3_errmsg(s));
    sqlite3_finalize(st);
    return rc;
}

int db_source_last_turns(db_conn *db, const char *source, db_prompt_turn_fn fn, void *ud) {
    sqlite3 *s = db_sqlite(db);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s, "SELECT id, json_extract(messages, '$[' || (json_array_length(messages) - 1) || '].content') "
                              "FROM prompts WHERE source = ?1 "
                              "ORDER BY id", -1, &st, NULL) != SQLITE_OK)
        return rt_fail(RT_EINTERNAL, "reading prompts: %s", sqlite3_errmsg(s));
    sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
    int step = SQLITE_DONE, rc = 0;
    while (!rc && (step = sqlite3_step(st)) == SQLITE_ROW) {
        db_prompt_turn p = {sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1)};
        rc = fn(ud, &p);
    }
    if (!rc && step != SQLITE_DONE) rc = rt_fail(RT_EINTERNAL, "reading prompts: %s", sqlite3_errmsg(s));
    sqlite3_finalize(st);
    return rc;
}

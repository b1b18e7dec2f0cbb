/* dataset/ext/retort_sqlite.c — a loadable SQLite extension for reading a retort database
 * from outside retort (sqlite3, Python's sqlite3, pandas, DuckDB's sqlite scanner …).
 *
 * Adds one SQL function:
 *   retort_text(blob)            the text of a zstd frame as the store writes it
 *                                (samples.text, eval_results.response); NULL gives NULL.
 *   retort_text(blob, dict_id)   the same, naming the zstd_dicts row the frame was written
 *                                with (samples.dict_id; NULL: plain zstd).
 * With one argument a frame written with a dictionary still decodes: the dictionary whose
 * zstd id the frame header names is looked up in zstd_dicts.
 *
 * Built by the Makefile as $(BUILD)/retort_sqlite.so, apart from libretort (sqlite3ext.h
 * routes every sqlite3_* call through the loader's table, which the library must not do).
 * State: one decoder per registered function (per connection), holding the last dictionary
 * used; freed when the connection closes. Errors are SQL errors with one message:
 * "retort_text: not a zstd frame", "retort_text: dictionary N not found", …
 */
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

typedef struct {
    ZSTD_DCtx *dctx;
    ZSTD_DDict *ddict;   /* the dictionary of the last dictionary frame, or NULL */
    int64_t row;         /* its zstd_dicts.id (0: none) */
    unsigned zid;        /* its zstd dictionary id */
} ext_state;

static void ext_free(void *p) {
    ext_state *s = p;
    if (!s) return;
    ZSTD_freeDDict(s->ddict);
    ZSTD_freeDCtx(s->dctx);
    sqlite3_free(s);
}

/* Loads the dictionary of zstd_dicts row `row` (row > 0), or the one whose zstd id is zid
 * (row == 0), into s. 0 or an error message (static). */
static const char *load_dict(sqlite3_context *ctx, ext_state *s, int64_t row, unsigned zid) {
    if ((row > 0 && s->ddict && s->row == row) || (row == 0 && s->ddict && s->zid == zid)) return NULL;
    sqlite3_stmt *st = NULL;
    const char *sql = row > 0 ? "SELECT id, dict FROM zstd_dicts WHERE id = ?" : "SELECT id, dict FROM zstd_dicts ORDER BY id DESC";
    if (sqlite3_prepare_v2(sqlite3_context_db_handle(ctx), sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return "retort_text: this database has no zstd_dicts table";
    }
    if (row > 0) sqlite3_bind_int64(st, 1, row);
    const char *err = "retort_text: the frame's dictionary is not in zstd_dicts";
    while (sqlite3_step(st) == SQLITE_ROW) {
        const void *d = sqlite3_column_blob(st, 1);
        int n = sqlite3_column_bytes(st, 1);
        if (!d || n <= 0) continue;
        unsigned id = ZSTD_getDictID_fromDict(d, (size_t)n);
        if (row == 0 && id != zid) continue;
        ZSTD_DDict *dd = ZSTD_createDDict(d, (size_t)n);
        if (!dd) { err = "retort_text: out of memory"; break; }
        ZSTD_freeDDict(s->ddict);
        s->ddict = dd;
        s->row = sqlite3_column_int64(st, 0);
        s->zid = id;
        err = NULL;
        break;
    }
    sqlite3_finalize(st);
    return err;
}

static void retort_text(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    ext_state *s = sqlite3_user_data(ctx);
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) { sqlite3_result_null(ctx); return; }
    const void *src = sqlite3_value_blob(argv[0]);
    size_t len = (size_t)sqlite3_value_bytes(argv[0]);
    if (!src || len == 0) { sqlite3_result_error(ctx, "retort_text: empty blob (not a zstd frame)", -1); return; }
    unsigned long long size = ZSTD_getFrameContentSize(src, len);
    if (size == ZSTD_CONTENTSIZE_ERROR) { sqlite3_result_error(ctx, "retort_text: not a zstd frame", -1); return; }
    if (size == ZSTD_CONTENTSIZE_UNKNOWN || size > 0x7fffffff) {
        sqlite3_result_error(ctx, "retort_text: frame without a usable content size (not written by retort)", -1);
        return;
    }
    int64_t row = argc > 1 && sqlite3_value_type(argv[1]) != SQLITE_NULL ? sqlite3_value_int64(argv[1]) : 0;
    unsigned zid = ZSTD_getDictID_fromFrame(src, len);
    const ZSTD_DDict *dd = NULL;
    if (row > 0 || zid) {
        const char *err = load_dict(ctx, s, row, zid);
        if (err) { sqlite3_result_error(ctx, err, -1); return; }
        dd = s->ddict;
    }
    char *out = sqlite3_malloc64(size + 1);
    if (!out) { sqlite3_result_error_nomem(ctx); return; }
    size_t got = dd ? ZSTD_decompress_usingDDict(s->dctx, out, size, src, len, dd) : ZSTD_decompressDCtx(s->dctx, out, size, src, len);
    if (ZSTD_isError(got) || got != size) {
        char msg[160];
        snprintf(msg, sizeof msg, "retort_text: bad zstd frame: %s", ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short");
        sqlite3_free(out);
        sqlite3_result_error(ctx, msg, -1);
        return;
    }
    out[got] = 0;
    sqlite3_result_text(ctx, out, (int)got, sqlite3_free);
}

#ifdef _WIN32
__declspec(dllexport)
#endif
int sqlite3_retortsqlite_init(sqlite3 *db, char **errmsg, const sqlite3_api_routines *api) {
    SQLITE_EXTENSION_INIT2(api);
    for (int nargs = 1; nargs <= 2; nargs++) {
        ext_state *s = sqlite3_malloc(sizeof *s);
        if (!s) return SQLITE_NOMEM;
        memset(s, 0, sizeof *s);
        if (!(s->dctx = ZSTD_createDCtx())) { sqlite3_free(s); return SQLITE_NOMEM; }
        int rc = sqlite3_create_function_v2(db, "retort_text", nargs, SQLITE_UTF8 | SQLITE_DETERMINISTIC, s, retort_text,
                                            NULL, NULL, ext_free);
        if (rc != SQLITE_OK) {
            if (errmsg) *errmsg = sqlite3_mprintf("retort_text: registering the function failed");
            return rc;
        }
    }
    return SQLITE_OK;
}

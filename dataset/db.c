#include "dataset/db.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#define XXH_INLINE_ALL /* header-only: no library to link */
#include <xxhash.h>

#include "core/alloc.h"
#include "core/status.h"
#include "dataset/db_int.h"

/* ---- errors ---- */

int db_sql_fail(sqlite3 *h, int s, const char *call, const char *file, int line) {
    int code;
    switch (s & 0xff) {
    case SQLITE_FULL: case SQLITE_IOERR: case SQLITE_READONLY: case SQLITE_CANTOPEN: case SQLITE_PERM:
    case SQLITE_BUSY: case SQLITE_LOCKED: case SQLITE_PROTOCOL: code = RT_EIO; break;
    case SQLITE_CORRUPT: case SQLITE_NOTADB: case SQLITE_SCHEMA: case SQLITE_MISMATCH: code = RT_EFORMAT; break;
    case SQLITE_NOMEM: code = RT_ENOMEM; break;
    case SQLITE_CONSTRAINT: case SQLITE_TOOBIG: case SQLITE_RANGE: code = RT_EINVAL; break;
    default: code = RT_EINTERNAL;
    }
    const char *msg = h ? sqlite3_errmsg(h) : sqlite3_errstr(s);
    if (h && sqlite3_errcode(h) != (s & 0xff)) msg = sqlite3_errstr(s);
    int sys = h && code == RT_EIO ? sqlite3_system_errno(h) : 0; /* the OS's reason: disk full, EFBIG, EACCES */
    if (sys)
        return rt_fail(code, "%s failed at %s:%d: %s (%s)", call, file, line, msg, strerror(sys));
    return rt_fail(code, "%s failed at %s:%d: %s", call, file, line, msg);
}

int db_step_done(sqlite3_stmt *st) {
    int s = sqlite3_step(st);
    return s == SQLITE_DONE ? SQLITE_OK : s;
}

int db_step_row(sqlite3_stmt *st, int *row) {
    int s = sqlite3_step(st);
    *row = s == SQLITE_ROW;
    return (s == SQLITE_ROW || s == SQLITE_DONE) ? SQLITE_OK : s;
}

/* ---- schema ---- */

#define NOW "(CAST(strftime('%s','now') AS INTEGER))"

/* migrations[v] takes a database from user_version v to v + 1. Never edit a released one:
 * append a new entry and bump DB_SCHEMA_VERSION. */
static const char *const migrations[DB_SCHEMA_VERSION] = {
    /* 0 → 1 */
    "CREATE TABLE prompts (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  source TEXT NOT NULL,\n"
    "  external_id TEXT,\n"
    "  content_hash BLOB NOT NULL UNIQUE,\n"
    "  messages TEXT NOT NULL CHECK (json_valid(messages)),\n"
    "  prompt_key TEXT,\n"
    "  gold TEXT,\n"
    "  metadata TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),\n"
    "  created_at INTEGER NOT NULL DEFAULT " NOW ");\n"
    "CREATE INDEX prompts_source ON prompts(source);\n"
    "CREATE TABLE zstd_dicts (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  dict BLOB NOT NULL,\n"
    "  trained_on INTEGER NOT NULL,\n"
    "  created_at INTEGER NOT NULL DEFAULT " NOW ");\n"
    "CREATE TABLE samples (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  prompt_id INTEGER NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,\n"
    "  teacher TEXT NOT NULL,\n"
    "  params TEXT NOT NULL DEFAULT '{}',\n"
    "  seed INTEGER,\n"
    "  sample_index INTEGER NOT NULL CHECK (sample_index >= 0),\n"
    "  text BLOB NOT NULL,\n"
    "  dict_id INTEGER REFERENCES zstd_dicts(id),\n"
    "  text_bytes INTEGER NOT NULL,\n"
    "  text_hash BLOB NOT NULL,\n"
    "  prompt_tokens INTEGER,\n"
    "  thinking_tokens INTEGER,\n"
    "  answer_tokens INTEGER,\n"
    "  finish_reason TEXT,\n"
    "  mean_logprob REAL,\n"
    "  created_at INTEGER NOT NULL DEFAULT " NOW ",\n"
    "  UNIQUE (prompt_id, teacher, params, sample_index));\n"
    "CREATE INDEX samples_text ON samples(prompt_id, teacher, text_hash);\n"
    "CREATE TABLE sample_topk (\n"
    "  sample_id INTEGER PRIMARY KEY REFERENCES samples(id) ON DELETE CASCADE,\n"
    "  k INTEGER NOT NULL,\n"
    "  n_tokens INTEGER NOT NULL,\n"
    "  data BLOB NOT NULL,\n"
    "  dict_id INTEGER REFERENCES zstd_dicts(id));\n"
    "CREATE TABLE verdicts (\n"
    "  sample_id INTEGER NOT NULL REFERENCES samples(id) ON DELETE CASCADE,\n"
    "  filter TEXT NOT NULL,\n"
    "  pass INTEGER NOT NULL CHECK (pass IN (0, 1)),\n"
    "  score REAL,\n"
    "  reason TEXT,\n"
    "  created_at INTEGER NOT NULL DEFAULT " NOW ",\n"
    "  PRIMARY KEY (sample_id, filter)) WITHOUT ROWID;\n"
    "CREATE INDEX verdicts_filter ON verdicts(filter, pass);\n"
    "CREATE TABLE clusters (\n"
    "  method TEXT NOT NULL,\n"
    "  sample_id INTEGER NOT NULL REFERENCES samples(id) ON DELETE CASCADE,\n"
    "  cluster INTEGER NOT NULL,\n"
    "  representative INTEGER NOT NULL DEFAULT 0 CHECK (representative IN (0, 1)),\n"
    "  PRIMARY KEY (method, sample_id)) WITHOUT ROWID;\n"
    "CREATE INDEX clusters_cluster ON clusters(method, cluster);\n"
    "CREATE TABLE snapshots (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  name TEXT NOT NULL UNIQUE,\n"
    "  filter_config TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(filter_config)),\n"
    "  n_samples INTEGER NOT NULL DEFAULT 0,\n"
    "  created_at INTEGER NOT NULL DEFAULT " NOW ");\n"
    "CREATE TABLE snapshot_samples (\n"
    "  snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,\n"
    "  sample_id INTEGER NOT NULL REFERENCES samples(id),\n"
    "  PRIMARY KEY (snapshot_id, sample_id)) WITHOUT ROWID;\n"
    "CREATE INDEX snapshot_samples_sample ON snapshot_samples(sample_id);\n"
    "CREATE TABLE eval_results (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  run TEXT NOT NULL,\n"
    "  model TEXT NOT NULL,\n"
    "  benchmark TEXT NOT NULL,\n"
    "  prompt_id INTEGER NOT NULL REFERENCES prompts(id),\n"
    "  sample_index INTEGER NOT NULL DEFAULT 0,\n"
    "  response BLOB,\n"
    "  dict_id INTEGER REFERENCES zstd_dicts(id),\n"
    "  extracted TEXT,\n"
    "  correct INTEGER CHECK (correct IN (0, 1)),\n"
    "  n_tokens INTEGER,\n"
    "  finish_reason TEXT,\n"
    "  latency_ms REAL,\n"
    "  created_at INTEGER NOT NULL DEFAULT " NOW ",\n"
    "  UNIQUE (run, model, prompt_id, sample_index));\n"
    "CREATE INDEX eval_results_run ON eval_results(run, model, benchmark);\n",
    /* 1 → 2: the configuration of each `retort filter` run, so a snapshot can name what made it */
    "CREATE TABLE filter_runs (\n"
    "  id INTEGER PRIMARY KEY,\n"
    "  config TEXT NOT NULL CHECK (json_valid(config)),\n"
    "  scored INTEGER NOT NULL DEFAULT 0,\n"
    "  started_at INTEGER NOT NULL DEFAULT " NOW ",\n"
    "  finished_at INTEGER);\n",
};

static const char *const stmt_sql[DB_ST_COUNT] = {
    [DB_ST_PROMPT_INSERT] = "INSERT INTO prompts (source, external_id, content_hash, messages, prompt_key, gold, metadata) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (content_hash) DO NOTHING",
    [DB_ST_PROMPT_FIND] = "SELECT id FROM prompts WHERE content_hash = ?1",
    [DB_ST_SAMPLE_INSERT] =
        "INSERT INTO samples (prompt_id, teacher, params, seed, sample_index, text, dict_id, text_bytes, text_hash, "
        "prompt_tokens, thinking_tokens, answer_tokens, finish_reason, mean_logprob) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) "
        "ON CONFLICT (prompt_id, teacher, params, sample_index) DO NOTHING",
    [DB_ST_SAMPLE_FIND_TEXT] = "SELECT id FROM samples WHERE prompt_id = ?1 AND teacher = ?2 AND text_hash = ?3 "
                               "AND params = ?4",
    [DB_ST_SAMPLE_NEXT_INDEX] = "SELECT COALESCE(MAX(sample_index) + 1, 0) FROM samples WHERE prompt_id = ?1 "
                                "AND teacher = ?2 AND params = ?3",
    [DB_ST_SAMPLE_FIND_INDEX] = "SELECT id FROM samples WHERE prompt_id = ?1 AND teacher = ?2 AND params = ?3 "
                                "AND sample_index = ?4",
    [DB_ST_SAMPLE_TEXT] = "SELECT text, dict_id FROM samples WHERE id = ?1",
    [DB_ST_VERDICT_PUT] = "INSERT INTO verdicts (sample_id, filter, pass, score, reason) VALUES (?1, ?2, ?3, ?4, ?5) "
                          "ON CONFLICT (sample_id, filter) DO UPDATE SET pass = excluded.pass, "
                          "score = excluded.score, reason = excluded.reason",
};

int db_stmt(ds_db *db, int i, sqlite3_stmt **out) {
    if (!db->st[i]) SQL_TRY(db->h, sqlite3_prepare_v3(db->h, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &db->st[i], NULL));
    sqlite3_reset(db->st[i]);
    sqlite3_clear_bindings(db->st[i]);
    *out = db->st[i];
    return 0;
}

static int exec(ds_db *db, const char *sql) {
    SQL_TRY(db->h, sqlite3_exec(db->h, sql, NULL, NULL, NULL));
    return 0;
}

static int query_int(ds_db *db, const char *sql, int64_t *out) {
    sqlite3_stmt *st;
    SQL_TRY(db->h, sqlite3_prepare_v2(db->h, sql, -1, &st, NULL));
    int row = 0, s = db_step_row(st, &row);
    *out = row ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    SQL_TRY(db->h, s);
    return 0;
}

int db_schema_version(ds_db *db, int *version) {
    int64_t v;
    int rc = query_int(db, "PRAGMA user_version", &v);
    *version = (int)v;
    return rc;
}

int db_begin(ds_db *db) {
    int rc = exec(db, "BEGIN IMMEDIATE");
    if (!rc) db->in_tx = 1;
    return rc;
}

int db_commit(ds_db *db) {
    int rc = exec(db, "COMMIT");
    if (!rc) db->in_tx = 0;
    return rc;
}

void db_rollback(ds_db *db) {
    if (!db || sqlite3_get_autocommit(db->h)) { if (db) db->in_tx = 0; return; }
    sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    db->in_tx = 0;
}

static int load_newest_dict(ds_db *db) {
    sqlite3_stmt *st;
    SQL_TRY(db->h, sqlite3_prepare_v2(db->h, "SELECT id, dict FROM zstd_dicts ORDER BY id DESC LIMIT 1", -1, &st, NULL));
    int row = 0, s = db_step_row(st, &row), rc = 0;
    if (s == SQLITE_OK && row) {
        db->write_dict = sqlite3_column_int64(st, 0);
        rc = blob_codec_set_dict(db->codec, db->write_dict, sqlite3_column_blob(st, 1),
                                 (size_t)sqlite3_column_bytes(st, 1));
    }
    sqlite3_finalize(st);
    SQL_TRY(db->h, s);
    return rc;
}

static int migrate(ds_db *db, bool readonly) {
    int v;
    int rc = db_schema_version(db, &v);
    if (rc) return rc;
    if (v > DB_SCHEMA_VERSION)
        return rt_fail(RT_EFORMAT, "schema version %d is newer than this retort knows (%d)", v, DB_SCHEMA_VERSION);
    if (v == 0) {
        int64_t n;
        if ((rc = query_int(db, "SELECT COUNT(*) FROM sqlite_schema", &n))) return rc;
        if (n) return rt_fail(RT_EFORMAT, "not a retort database (it has %lld tables but schema version 0)", (long long)n);
    }
    if (v == DB_SCHEMA_VERSION) return 0;
    if (readonly)
        return rt_fail(RT_EFORMAT, "schema version %d, expected %d (run `retort db init` on it to migrate)", v,
                       DB_SCHEMA_VERSION);
    while (v < DB_SCHEMA_VERSION) {
        if ((rc = db_begin(db))) return rc;
        int cur;
        if ((rc = db_schema_version(db, &cur))) { db_rollback(db); return rc; }
        if (cur == v) { /* another process may have migrated meanwhile */
            char pragma[64];
            snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v + 1);
            if ((rc = exec(db, migrations[v])) || (rc = exec(db, pragma))) {
                db_rollback(db);
                return rt_errorf(rc, "migrating schema %d to %d", v, v + 1);
            }
        }
        if ((rc = db_commit(db))) { db_rollback(db); return rc; }
        if ((rc = db_schema_version(db, &v))) return rc;
    }
    return 0;
}

static int configure(ds_db *db, unsigned flags) {
    bool ro = flags & DB_OPEN_READONLY;
    sqlite3_extended_result_codes(db->h, 1);
    SQL_TRY(db->h, sqlite3_busy_timeout(db->h, 10000));
    int rc;
    if (!ro && sqlite3_db_readonly(db->h, "main"))
        return rt_fail(RT_EIO, "cannot write: the database file is read-only");
    /* the first read tells a non-database file apart */
    int64_t n;
    if ((rc = query_int(db, "SELECT COUNT(*) FROM sqlite_schema", &n))) return rc;
    if (!ro && (rc = exec(db, "PRAGMA journal_mode = WAL"))) return rc;
    /* keep -wal and -shm after the last close, so read-only users (db stats, check, export)
     * can open the database even where they cannot create files */
    int persist = 1;
    if (!ro) sqlite3_file_control(db->h, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
    if ((rc = exec(db, "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA journal_size_limit = 67108864; PRAGMA cache_size = -65536")))
        return rc;
    if ((rc = migrate(db, ro))) return rc;
    return load_newest_dict(db);
}

static int open_handle(ds_db *db, const char *name, int oflags) {
    int s = sqlite3_open_v2(name, &db->h, oflags | SQLITE_OPEN_NOMUTEX, NULL);
    return s == SQLITE_OK ? 0 : db_sql_fail(db->h, s, "sqlite3_open_v2", __FILE__, __LINE__);
}

/* True when a read-only open failed for want of a writable -shm and no -wal file exists. */
static bool readonly_fallback_ok(ds_db *db, const char *path) {
    int e = db->h ? sqlite3_extended_errcode(db->h) & 0xff : SQLITE_OK;
    if (e != SQLITE_READONLY && e != SQLITE_CANTOPEN) return false;
    char wal[4096];
    struct stat sb;
    snprintf(wal, sizeof wal, "%s-wal", path);
    return stat(wal, &sb) != 0 || sb.st_size == 0;
}

/* "file:PATH?immutable=1" with PATH percent-encoded where URIs need it. */
static char *immutable_uri(const char *path) {
    size_t n = strlen(path);
    char *u = rt_malloc(3 * n + 32);
    if (!u) return NULL;
    size_t o = (size_t)sprintf(u, "file:");
    for (const char *p = path; *p; p++) {
        if (*p == '?' || *p == '#' || *p == '%') o += (size_t)sprintf(u + o, "%%%02X", (unsigned char)*p);
        else u[o++] = *p;
    }
    strcpy(u + o, "?immutable=1");
    return u;
}

int db_open(const char *path, unsigned flags, ds_db **out) {
    *out = NULL;
    struct stat sb;
    bool exists = stat(path, &sb) == 0;
    if (!exists && !(flags & DB_OPEN_CREATE))
        return rt_fail(RT_ENOTFOUND, "%s: no such database (create it with 'retort db init %s')", path, path);
    if (exists && !S_ISREG(sb.st_mode)) return rt_fail(RT_EINVAL, "%s: not a regular file", path);
    ds_db *db = rt_calloc(1, sizeof *db);
    if (!db) return RT_ENOMEM;
    int rc = blob_codec_new(3, &db->codec);
    if (rc || !(db->path = rt_strdup(path))) { db_close(db); return rc ? rc : RT_ENOMEM; }
    int oflags = (flags & DB_OPEN_READONLY) ? SQLITE_OPEN_READONLY
                                            : SQLITE_OPEN_READWRITE | ((flags & DB_OPEN_CREATE) ? SQLITE_OPEN_CREATE : 0);
    rc = open_handle(db, path, oflags);
    if (!rc) rc = configure(db, flags);
    if (rc && (flags & DB_OPEN_READONLY) && readonly_fallback_ok(db, path)) {
        /* A reader that cannot create the -shm file beside a WAL database (a read-only
         * directory) can still read it when no writer has it open: nothing is in a -wal
         * file, so the main file is complete. */
        sqlite3_close_v2(db->h);
        db->h = NULL;
        char *uri = immutable_uri(path);
        rc = uri ? open_handle(db, uri, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI) : RT_ENOMEM;
        free(uri);
        if (!rc) rc = configure(db, flags);
    }
    if (rc) {
        db_close(db);
        return rt_errorf(rc, "%s", path);
    }
    *out = db;
    return 0;
}

void db_close(ds_db *db) {
    if (!db) return;
    db_rollback(db);
    for (int i = 0; i < DB_ST_COUNT; i++) sqlite3_finalize(db->st[i]);
    sqlite3_close_v2(db->h);
    blob_codec_free(db->codec);
    free(db->path);
    free(db);
}

sqlite3 *db_sqlite(ds_db *db) { return db->h; }

/* ---- check ---- */

static int collect_rows(ds_db *db, const char *sql, char **acc, size_t *len, size_t *cap, int *problems,
                        const char *skip_ok) {
    sqlite3_stmt *st;
    SQL_TRY(db->h, sqlite3_prepare_v2(db->h, sql, -1, &st, NULL));
    int row, s;
    while ((s = db_step_row(st, &row)) == SQLITE_OK && row) {
        char line[512];
        int o = 0;
        for (int c = 0; c < sqlite3_column_count(st) && o < (int)sizeof line - 2; c++) {
            const char *t = (const char *)sqlite3_column_text(st, c);
            o += snprintf(line + o, sizeof line - (size_t)o, c ? " %s" : "%s", t ? t : "NULL");
        }
        if (skip_ok && !strcmp(line, skip_ok)) continue;
        (*problems)++;
        size_t l = strlen(line);
        if (rt_grow((void **)acc, cap, *len + l + 2, 1)) { sqlite3_finalize(st); return RT_ENOMEM; }
        memcpy(*acc + *len, line, l);
        *len += l;
        (*acc)[(*len)++] = '\n';
        (*acc)[*len] = 0;
    }
    sqlite3_finalize(st);
    SQL_TRY(db->h, s);
    return 0;
}

int db_check(ds_db *db, bool *ok, char **report) {
    *ok = false;
    *report = NULL;
    char *acc = NULL;
    size_t len = 0, cap = 0;
    int problems = 0, rc;
    if ((rc = collect_rows(db, "PRAGMA integrity_check", &acc, &len, &cap, &problems, "ok")) ||
        (rc = collect_rows(db, "PRAGMA foreign_key_check", &acc, &len, &cap, &problems, NULL))) {
        free(acc);
        return rc;
    }
    if (!problems) {
        free(acc);
        acc = rt_strdup("ok");
        if (!acc) return RT_ENOMEM;
    } else {
        acc[len - 1] = 0;
    }
    *ok = problems == 0;
    *report = acc;
    return 0;
}

/* ---- rows ---- */

static int ensure_dict(ds_db *db, int64_t dict_id);

static void hash128(const void *p, size_t n, uint8_t out[16]) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(p, n));
    memcpy(out, c.digest, 16);
}

static int bind_text_or_null(sqlite3_stmt *st, int i, const char *s) {
    return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

int db_prompt_put(ds_db *db, const db_prompt *p, int64_t *id, bool *inserted) {
    if (!p->source || !p->messages_json) return rt_fail(RT_EINVAL, "a prompt needs a source and messages");
    uint8_t h[16];
    hash128(p->messages_json, strlen(p->messages_json), h);
    sqlite3_stmt *st;
    int rc = db_stmt(db, DB_ST_PROMPT_INSERT, &st);
    if (rc) return rc;
    SQL_TRY(db->h, sqlite3_bind_text(st, 1, p->source, -1, SQLITE_STATIC));
    SQL_TRY(db->h, bind_text_or_null(st, 2, p->external_id));
    SQL_TRY(db->h, sqlite3_bind_blob(st, 3, h, 16, SQLITE_STATIC));
    SQL_TRY(db->h, sqlite3_bind_text(st, 4, p->messages_json, -1, SQLITE_STATIC));
    SQL_TRY(db->h, bind_text_or_null(st, 5, p->prompt_key));
    SQL_TRY(db->h, bind_text_or_null(st, 6, p->gold));
    SQL_TRY(db->h, sqlite3_bind_text(st, 7, p->metadata_json ? p->metadata_json : "{}", -1, SQLITE_STATIC));
    SQL_TRY(db->h, db_step_done(st));
    bool ins = sqlite3_changes(db->h) > 0;
    int64_t rid = sqlite3_last_insert_rowid(db->h);
    sqlite3_reset(st);
    if (!ins) {
        if ((rc = db_stmt(db, DB_ST_PROMPT_FIND, &st))) return rc;
        SQL_TRY(db->h, sqlite3_bind_blob(st, 1, h, 16, SQLITE_STATIC));
        int row;
        SQL_TRY(db->h, db_step_row(st, &row));
        if (!row) return rt_fail(RT_EINTERNAL, "prompt vanished between insert and lookup");
        rid = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
    }
    if (id) *id = rid;
    if (inserted) *inserted = ins;
    return 0;
}

/* Finds an existing sample: by text (sample_index -1) or by index. *found 0 when none. */
static int sample_find(ds_db *db, const db_sample *s, const char *params, const uint8_t h[16], int64_t *found) {
    sqlite3_stmt *st;
    int rc, row;
    *found = 0;
    if (s->sample_index < 0) {
        if ((rc = db_stmt(db, DB_ST_SAMPLE_FIND_TEXT, &st))) return rc;
        SQL_TRY(db->h, sqlite3_bind_blob(st, 3, h, 16, SQLITE_STATIC));
        SQL_TRY(db->h, sqlite3_bind_text(st, 4, params, -1, SQLITE_STATIC));
    } else {
        if ((rc = db_stmt(db, DB_ST_SAMPLE_FIND_INDEX, &st))) return rc;
        SQL_TRY(db->h, sqlite3_bind_text(st, 3, params, -1, SQLITE_STATIC));
        SQL_TRY(db->h, sqlite3_bind_int64(st, 4, s->sample_index));
    }
    SQL_TRY(db->h, sqlite3_bind_int64(st, 1, s->prompt_id));
    SQL_TRY(db->h, sqlite3_bind_text(st, 2, s->teacher, -1, SQLITE_STATIC));
    SQL_TRY(db->h, db_step_row(st, &row));
    if (row) *found = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return 0;
}

static int sample_next_index(ds_db *db, const db_sample *s, const char *params, int64_t *idx) {
    sqlite3_stmt *st;
    int rc, row;
    if ((rc = db_stmt(db, DB_ST_SAMPLE_NEXT_INDEX, &st))) return rc;
    SQL_TRY(db->h, sqlite3_bind_int64(st, 1, s->prompt_id));
    SQL_TRY(db->h, sqlite3_bind_text(st, 2, s->teacher, -1, SQLITE_STATIC));
    SQL_TRY(db->h, sqlite3_bind_text(st, 3, params, -1, SQLITE_STATIC));
    SQL_TRY(db->h, db_step_row(st, &row));
    *idx = row ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return 0;
}

static int bind_count(sqlite3_stmt *st, int i, int32_t v) {
    return v < 0 ? sqlite3_bind_null(st, i) : sqlite3_bind_int(st, i, v);
}

static int sample_insert(ds_db *db, const db_sample *s, const char *params, int64_t index, const uint8_t h[16],
                         const uint8_t *z, size_t zlen, bool *ins) {
    sqlite3_stmt *st;
    int rc = db_stmt(db, DB_ST_SAMPLE_INSERT, &st);
    if (rc) return rc;
    int64_t dict = db->write_dict;
    SQL_TRY(db->h, sqlite3_bind_int64(st, 1, s->prompt_id));
    SQL_TRY(db->h, sqlite3_bind_text(st, 2, s->teacher, -1, SQLITE_STATIC));
    SQL_TRY(db->h, sqlite3_bind_text(st, 3, params, -1, SQLITE_STATIC));
    SQL_TRY(db->h, s->has_seed ? sqlite3_bind_int64(st, 4, s->seed) : sqlite3_bind_null(st, 4));
    SQL_TRY(db->h, sqlite3_bind_int64(st, 5, index));
    SQL_TRY(db->h, sqlite3_bind_blob(st, 6, z, (int)zlen, SQLITE_STATIC));
    SQL_TRY(db->h, dict ? sqlite3_bind_int64(st, 7, dict) : sqlite3_bind_null(st, 7));
    SQL_TRY(db->h, sqlite3_bind_int64(st, 8, (sqlite3_int64)s->text_len));
    SQL_TRY(db->h, sqlite3_bind_blob(st, 9, h, 16, SQLITE_STATIC));
    SQL_TRY(db->h, bind_count(st, 10, s->prompt_tokens));
    SQL_TRY(db->h, bind_count(st, 11, s->thinking_tokens));
    SQL_TRY(db->h, bind_count(st, 12, s->answer_tokens));
    SQL_TRY(db->h, bind_text_or_null(st, 13, s->finish_reason));
    SQL_TRY(db->h, s->has_logprob ? sqlite3_bind_double(st, 14, s->mean_logprob) : sqlite3_bind_null(st, 14));
    SQL_TRY(db->h, db_step_done(st));
    *ins = sqlite3_changes(db->h) > 0;
    sqlite3_reset(st);
    return 0;
}

int db_sample_put(ds_db *db, const db_sample *s, int64_t *id, bool *inserted) {
    if (!s->teacher || (!s->text && s->text_len)) return rt_fail(RT_EINVAL, "a sample needs a teacher and text");
    if (s->text_len > INT32_MAX / 2) return rt_fail(RT_ERANGE, "sample text of %zu bytes is too long", s->text_len);
    const char *params = s->params_json ? s->params_json : "{}";
    uint8_t h[16];
    hash128(s->text ? s->text : "", s->text_len, h);
    int64_t found, index = s->sample_index;
    int rc = sample_find(db, s, params, h, &found);
    if (!rc && !found && index < 0) rc = sample_next_index(db, s, params, &index);
    if (rc) return rc;
    bool ins = false;
    if (!found) {
        uint8_t *z;
        size_t zlen;
        if ((rc = ensure_dict(db, db->write_dict)) ||
            (rc = blob_compress(db->codec, s->text ? s->text : "", s->text_len, db->write_dict != 0, &z, &zlen)))
            return rc;
        rc = sample_insert(db, s, params, index, h, z, zlen, &ins);
        free(z);
        if (rc) return rc;
        found = sqlite3_last_insert_rowid(db->h);
        if (!ins) return rt_fail(RT_EINTERNAL, "sample insert for prompt %lld was ignored", (long long)s->prompt_id);
    }
    if (id) *id = found;
    if (inserted) *inserted = ins;
    return 0;
}

static int ensure_dict(ds_db *db, int64_t dict_id) {
    if (!dict_id || blob_codec_dict_id(db->codec) == dict_id) return 0;
    sqlite3_stmt *st;
    SQL_TRY(db->h, sqlite3_prepare_v2(db->h, "SELECT dict FROM zstd_dicts WHERE id = ?1", -1, &st, NULL));
    sqlite3_bind_int64(st, 1, dict_id);
    int row = 0, s = db_step_row(st, &row), rc = 0;
    if (s == SQLITE_OK && !row) rc = rt_fail(RT_EFORMAT, "zstd dictionary %lld is missing", (long long)dict_id);
    if (s == SQLITE_OK && row)
        rc = blob_codec_set_dict(db->codec, dict_id, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
    sqlite3_finalize(st);
    SQL_TRY(db->h, s);
    return rc;
}

int db_blob_text(ds_db *db, const void *blob, size_t len, int64_t dict_id, char **text, size_t *text_len) {
    int rc = ensure_dict(db, dict_id);
    if (rc) return rc;
    return blob_decompress(db->codec, blob, len, dict_id != 0, text, text_len);
}

int db_sample_text(ds_db *db, int64_t sample_id, char **text, size_t *len) {
    sqlite3_stmt *st;
    int rc = db_stmt(db, DB_ST_SAMPLE_TEXT, &st), row;
    if (rc) return rc;
    SQL_TRY(db->h, sqlite3_bind_int64(st, 1, sample_id));
    SQL_TRY(db->h, db_step_row(st, &row));
    if (!row) return rt_fail(RT_ENOTFOUND, "no sample %lld", (long long)sample_id);
    int64_t dict = sqlite3_column_int64(st, 1);
    size_t n = (size_t)sqlite3_column_bytes(st, 0);
    uint8_t *copy = rt_malloc(n ? n : 1);
    if (!copy) { sqlite3_reset(st); return RT_ENOMEM; }
    memcpy(copy, sqlite3_column_blob(st, 0), n);
    sqlite3_reset(st);
    rc = db_blob_text(db, copy, n, dict, text, len);
    free(copy);
    return rc ? rt_errorf(rc, "sample %lld", (long long)sample_id) : 0;
}

int db_verdict_put(ds_db *db, int64_t sample_id, const char *filter, bool pass, double score, const char *reason) {
    sqlite3_stmt *st;
    int rc = db_stmt(db, DB_ST_VERDICT_PUT, &st);
    if (rc) return rc;
    SQL_TRY(db->h, sqlite3_bind_int64(st, 1, sample_id));
    SQL_TRY(db->h, sqlite3_bind_text(st, 2, filter, -1, SQLITE_STATIC));
    SQL_TRY(db->h, sqlite3_bind_int(st, 3, pass));
    SQL_TRY(db->h, sqlite3_bind_double(st, 4, score));
    SQL_TRY(db->h, bind_text_or_null(st, 5, reason));
    SQL_TRY(db->h, db_step_done(st));
    sqlite3_reset(st);
    return 0;
}

/* ---- snapshots ---- */

int db_snapshot_find(ds_db *db, const char *name, int64_t *snapshot_id) {
    sqlite3_stmt *st;
    SQL_TRY(db->h, sqlite3_prepare_v2(db->h, "SELECT id FROM snapshots WHERE name = ?1", -1, &st, NULL));
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int row = 0, s = db_step_row(st, &row);
    *snapshot_id = row ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    SQL_TRY(db->h, s);
    return row ? 0 : rt_fail(RT_ENOTFOUND, "no snapshot named '%s'", name);
}

static int snapshot_fill(ds_db *db, const char *name, const char *cfg, const int64_t *ids, size_t n, int64_t *sid) {
    sqlite3_stmt *st;
    SQL_TRY(db->h, sqlite3_prepare_v2(db->h, "INSERT INTO snapshots (name, filter_config, n_samples) VALUES (?1, ?2, ?3)",
                                      -1, &st, NULL));
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, cfg ? cfg : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)n);
    int s = db_step_done(st);
    sqlite3_finalize(st);
    if ((s & 0xff) == SQLITE_CONSTRAINT && sqlite3_extended_errcode(db->h) == SQLITE_CONSTRAINT_UNIQUE)
        return rt_fail(RT_EINVAL, "a snapshot named '%s' exists (snapshots are frozen; pick a new name)", name);
    SQL_TRY(db->h, s);
    *sid = sqlite3_last_insert_rowid(db->h);
    SQL_TRY(db->h, sqlite3_prepare_v2(db->h, "INSERT OR IGNORE INTO snapshot_samples (snapshot_id, sample_id) VALUES (?1, ?2)",
                                      -1, &st, NULL));
    for (size_t i = 0; i < n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, *sid);
        sqlite3_bind_int64(st, 2, ids[i]);
        if ((s = db_step_done(st)) != SQLITE_OK) {
            sqlite3_finalize(st);
            if ((s & 0xff) == SQLITE_CONSTRAINT) return rt_fail(RT_EINVAL, "no sample %lld", (long long)ids[i]);
            SQL_TRY(db->h, s);
        }
    }
    sqlite3_finalize(st);
    SQL_TRY(db->h, sqlite3_prepare_v2(db->h, "UPDATE snapshots SET n_samples = (SELECT COUNT(*) FROM snapshot_samples "
                                      "WHERE snapshot_id = ?1) WHERE id = ?1", -1, &st, NULL));
    sqlite3_bind_int64(st, 1, *sid);
    s = db_step_done(st);
    sqlite3_finalize(st);
    SQL_TRY(db->h, s);
    return 0;
}

int db_snapshot_create(ds_db *db, const char *name, const char *filter_config_json, const int64_t *ids, size_t n,
                       int64_t *snapshot_id) {
    int64_t sid = 0;
    bool own = !db->in_tx;
    int rc = own ? db_begin(db) : 0;
    if (!rc) rc = snapshot_fill(db, name, filter_config_json, ids, n, &sid);
    if (!rc && own) rc = db_commit(db);
    if (rc) {
        if (own) db_rollback(db);
        return rt_errorf(rc, "creating snapshot '%s'", name);
    }
    if (snapshot_id) *snapshot_id = sid;
    return 0;
}

/* ---- dictionary ---- */

int db_dict_train(ds_db *db, size_t cap, size_t max_samples, db_dict_report *rep) {
    memset(rep, 0, sizeof *rep);
    sqlite3_stmt *st;
    /* an even spread over the run: every k-th sample */
    int64_t total;
    int rc = query_int(db, "SELECT COUNT(*) FROM samples", &total);
    if (rc) return rc;
    if (!max_samples) max_samples = 20000;
    int64_t step = total > (int64_t)max_samples ? (total + (int64_t)max_samples - 1) / (int64_t)max_samples : 1;
    SQL_TRY(db->h, sqlite3_prepare_v2(db->h, "SELECT id FROM samples WHERE id % ?1 = 0 ORDER BY id LIMIT ?2", -1, &st, NULL));
    sqlite3_bind_int64(st, 1, step);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)max_samples);
    int64_t *ids = NULL;
    size_t n = 0, icap = 0;
    int row, s;
    while ((s = db_step_row(st, &row)) == SQLITE_OK && row) {
        if (rt_grow((void **)&ids, &icap, n + 1, sizeof *ids)) { sqlite3_finalize(st); free(ids); return RT_ENOMEM; }
        ids[n++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (s != SQLITE_OK) { free(ids); SQL_TRY(db->h, s); }
    char **texts = rt_calloc(n ? n : 1, sizeof *texts);
    size_t *lens = rt_calloc(n ? n : 1, sizeof *lens);
    uint8_t *dict = NULL, *z = NULL;
    size_t dlen = 0, zlen;
    blob_codec *plain = NULL, *withd = NULL;
    rc = (!texts || !lens) ? RT_ENOMEM : 0;
    for (size_t i = 0; !rc && i < n; i++) rc = db_sample_text(db, ids[i], &texts[i], &lens[i]);
    if (!rc) rc = blob_dict_train((const void *const *)texts, lens, n, cap, &dict, &dlen);
    if (!rc) rc = blob_codec_new(3, &plain);
    if (!rc) rc = blob_codec_new(3, &withd);
    if (!rc) rc = blob_codec_set_dict(withd, 1, dict, dlen);
    for (size_t i = 0; !rc && i < n; i++) {
        rep->text_bytes += lens[i];
        if (!(rc = blob_compress(plain, texts[i], lens[i], 0, &z, &zlen))) { rep->plain_bytes += zlen; free(z); }
        if (!rc && !(rc = blob_compress(withd, texts[i], lens[i], 1, &z, &zlen))) { rep->dict_zstd_bytes += zlen; free(z); }
    }
    if (!rc) {
        SQL_TRY(db->h, sqlite3_prepare_v2(db->h, "INSERT INTO zstd_dicts (dict, trained_on) VALUES (?1, ?2)", -1, &st, NULL));
        sqlite3_bind_blob(st, 1, dict, (int)dlen, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)n);
        s = db_step_done(st);
        sqlite3_finalize(st);
        if (s != SQLITE_OK) rc = db_sql_fail(db->h, s, "inserting the dictionary", __FILE__, __LINE__);
        else {
            rep->dict_id = db->write_dict = sqlite3_last_insert_rowid(db->h);
            rc = blob_codec_set_dict(db->codec, rep->dict_id, dict, dlen);
        }
    }
    rep->dict_bytes = dlen;
    rep->samples = n;
    for (size_t i = 0; texts && i < n; i++) free(texts[i]);
    free(texts);
    free(lens);
    free(ids);
    free(dict);
    blob_codec_free(plain);
    blob_codec_free(withd);
    return rc;
}

int db_recompress(ds_db *db, size_t *rewritten) {
    *rewritten = 0;
    int64_t dict = db->write_dict, maxid;
    int rc = query_int(db, "SELECT COALESCE(MAX(id), 0) FROM samples", &maxid);
    if (rc) return rc;
    sqlite3_stmt *up;
    SQL_TRY(db->h, sqlite3_prepare_v2(db->h, "UPDATE samples SET text = ?2, dict_id = ?3 WHERE id = ?1", -1, &up, NULL));
    const int64_t batch = 2000;
    for (int64_t lo = 1; !rc && lo <= maxid; lo += batch) {
        if ((rc = db_begin(db))) break;
        for (int64_t id = lo; !rc && id < lo + batch && id <= maxid; id++) {
            char *t;
            size_t n;
            uint8_t *z;
            size_t zlen;
            rc = db_sample_text(db, id, &t, &n);
            if (rc == RT_ENOTFOUND) { rt_errclear(); rc = 0; continue; }
            if (rc) break;
            /* db_sample_text may have swapped in an older dictionary; compress with the newest */
            rc = ensure_dict(db, dict);
            if (!rc) rc = blob_compress(db->codec, t, n, dict != 0, &z, &zlen);
            free(t);
            if (rc) break;
            sqlite3_reset(up);
            sqlite3_bind_int64(up, 1, id);
            sqlite3_bind_blob(up, 2, z, (int)zlen, SQLITE_STATIC);
            if (dict) sqlite3_bind_int64(up, 3, dict);
            else sqlite3_bind_null(up, 3);
            int s = db_step_done(up);
            free(z);
            if (s != SQLITE_OK) rc = db_sql_fail(db->h, s, "sqlite3_step(update text)", __FILE__, __LINE__);
            else (*rewritten)++;
        }
        if (!rc) rc = db_commit(db);
    }
    sqlite3_finalize(up);
    if (rc) db_rollback(db);
    return rc;
}

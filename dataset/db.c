#include "dataset/db.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_INLINE_ALL /* header-only: no library to link */
#include <xxhash.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/status.h"
#include "dataset/db_int.h"

/* ---- errors ---- */

/* The database's path for messages: as SQLite knows it (absolute), relative to the working
 * directory when it lies below it. "the database" when unknown. */
static const char *db_display_name(sqlite3 *h) {
    const char *f = h ? sqlite3_db_filename(h, "main") : NULL;
    if (!f || !*f) return "the database";
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd)) {
        size_t n = strlen(cwd);
        if (n > 1 && !strncmp(f, cwd, n) && f[n] == '/') return f + n + 1;
    }
    return f;
}

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
    /* the call and the source location are for --verbose; the message says what and why */
    if (file)
        RT_DEBUG("%s failed at %s:%d: %s (SQLite code %d%s%s)", call, file, line, msg, s, sys ? ", " : "",
                 sys ? strerror(sys) : "");
    else
        RT_DEBUG("%s failed: %s (SQLite code %d%s%s)", call, msg, s, sys ? ", " : "", sys ? strerror(sys) : "");
    const char *name = db_display_name(h);
    switch (s & 0xff) {
    case SQLITE_NOTADB: return rt_fail(code, "%s is not a SQLite database", name);
    case SQLITE_CORRUPT:
        return rt_fail(code, "%s is corrupt (SQLite: %s); 'retort db check %s' lists the damage", name, msg, name);
    case SQLITE_BUSY: case SQLITE_LOCKED:
        return rt_fail(code, "%s is locked by another process (SQLite: %s)", name, msg);
    }
    if (sys) return rt_fail(code, "%s: %s (%s)", name, msg, strerror(sys));
    return rt_fail(code, "%s: %s", name, msg);
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

int db_stmt(db_conn *db, int i, sqlite3_stmt **out) {
    if (!db->st[i]) SQL_TRY(db->h, sqlite3_prepare_v3(db->h, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &db->st[i], NULL));
    sqlite3_reset(db->st[i]);
    sqlite3_clear_bindings(db->st[i]);
    *out = db->st[i];
    return 0;
}

static int exec(db_conn *db, const char *sql) {
    SQL_TRY(db->h, sqlite3_exec(db->h, sql, NULL, NULL, NULL));
    return 0;
}

static int query_int(db_conn *db, const char *sql, int64_t *out) {
    sqlite3_stmt *st;
    SQL_TRY(db->h, sqlite3_prepare_v2(db->h, sql, -1, &st, NULL));
    int row = 0, s = db_step_row(st, &row);
    *out = row ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    SQL_TRY(db->h, s);
    return 0;
}

int db_schema_version(db_conn *db, int *version) {
    int64_t v;
    int rc = query_int(db, "PRAGMA user_version", &v);
    *version = (int)v;
    return rc;
}

int db_begin(db_conn *db) {
    int rc = exec(db, "BEGIN IMMEDIATE");
    if (!rc) db->in_tx = 1;
    return rc;
}

int db_commit(db_conn *db) {
    int rc = exec(db, "COMMIT");
    if (!rc) db->in_tx = 0;
    return rc;
}

void db_rollback(db_conn *db) {
    if (!db || sqlite3_get_autocommit(db->h)) { if (db) db->in_tx = 0; return; }
    sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
    db->in_tx = 0;
}

static int load_newest_dict(db_conn *db) {
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

/* Tells a retort database from any other SQLite file before anything is written to it:
 * schema version 0 with no tables is a new database; a version this code knows needs the
 * tables the first migration made. *version gets the file's schema version. */
static int check_identity(db_conn *db, int *version, bool *fresh) {
    int64_t n_all, n_ours;
    *fresh = false;
    int rc = db_schema_version(db, version);
    if (!rc) rc = query_int(db, "SELECT COUNT(*) FROM sqlite_schema", &n_all);
    if (!rc) rc = query_int(db, "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name IN "
                                "('prompts', 'samples', 'verdicts', 'zstd_dicts')", &n_ours);
    if (rc) return rc;
    int v = *version;
    if (v == 0 && n_all == 0) { *fresh = true; return 0; }
    if (n_ours < 4)
        return rt_fail(RT_EFORMAT, "%s is a SQLite database but not a retort one (schema version %d, %lld table%s, "
                       "not retort's); it was left unchanged", db->path, v, (long long)n_all, n_all == 1 ? "" : "s");
    if (v > DB_SCHEMA_VERSION)
        return rt_fail(RT_EFORMAT, "%s has schema version %d, newer than this retort knows (%d); use a newer retort",
                       db->path, v, DB_SCHEMA_VERSION);
    if (v == 0)
        return rt_fail(RT_EFORMAT, "%s has retort's tables but schema version 0 (not made by retort, or damaged); "
                       "it was left unchanged", db->path);
    return 0;
}

static int migrate(db_conn *db, int v, bool readonly) {
    int rc;
    if (v == DB_SCHEMA_VERSION) return 0;
    if (readonly)
        return rt_fail(RT_EFORMAT, "%s has schema version %d, this retort needs %d (run 'retort db init %s' to migrate it)",
                       db->path, v, DB_SCHEMA_VERSION, db->path);
    while (v < DB_SCHEMA_VERSION) {
        if ((rc = db_begin(db))) return rc;
        int cur;
        if ((rc = db_schema_version(db, &cur))) { db_rollback(db); return rc; }
        if (cur == v) { /* another process may have migrated meanwhile */
            char pragma[64];
            snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", v + 1);
            if ((rc = exec(db, migrations[v])) || (rc = exec(db, pragma))) {
                db_rollback(db);
                return rt_errorf(rc, "migrating %s from schema %d to %d", db->path, v, v + 1);
            }
        }
        if ((rc = db_commit(db))) { db_rollback(db); return rc; }
        if ((rc = db_schema_version(db, &v))) return rc;
    }
    return 0;
}

static int configure(db_conn *db, unsigned flags) {
    bool ro = flags & DB_OPEN_READONLY;
    sqlite3_extended_result_codes(db->h, 1);
    SQL_TRY(db->h, sqlite3_busy_timeout(db->h, 10000));
    int rc, v;
    if (!ro && sqlite3_db_readonly(db->h, "main"))
        return rt_fail(RT_EIO, "cannot write to %s: the file or its directory is read-only", db->path);
    /* the first read tells a non-database file apart; nothing is changed in a file that is
     * not a retort database (no WAL switch, no -wal or -shm files) */
    bool fresh;
    if ((rc = check_identity(db, &v, &fresh))) return rc;
    /* a new file gets 16 KiB pages (SQLite's default is 4 KiB): a quarter of the write and
     * read calls per megabyte for WAL frames and checkpoints, and shallower indexes; a bulk
     * import spends about a tenth less CPU and the file is about 5% smaller. The page size is
     * fixed once the file is in WAL mode, so it is set first; an existing file keeps its own. */
    if (!ro && fresh && (rc = exec(db, "PRAGMA page_size = 16384"))) return rc;
    if (!ro && (rc = exec(db, "PRAGMA journal_mode = WAL"))) return rc;
    /* keep -wal and -shm after the last close, so read-only users (db stats, check, export)
     * can open the database even where they cannot create files */
    int persist = 1;
    if (!ro) sqlite3_file_control(db->h, "main", SQLITE_FCNTL_PERSIST_WAL, &persist);
    if ((rc = exec(db, "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA journal_size_limit = 67108864; PRAGMA cache_size = -65536")))
        return rc;
    if ((rc = migrate(db, v, ro))) return rc;
    if ((rc = load_newest_dict(db))) return rt_errorf(rc, "%s: loading its zstd dictionary", db->path);
    return 0;
}

static int open_handle(db_conn *db, const char *name, int oflags) {
    int s = sqlite3_open_v2(name, &db->h, oflags | SQLITE_OPEN_NOMUTEX, NULL);
    if (s == SQLITE_OK) return 0;
    int sys = db->h ? sqlite3_system_errno(db->h) : 0;
    RT_DEBUG("sqlite3_open_v2(%s) failed at %s:%d: %s", name, __FILE__, __LINE__, sqlite3_errstr(s));
    if (sys) return rt_fail(RT_EIO, "cannot open %s: %s", db->path, strerror(sys));
    return rt_fail(RT_EIO, "cannot open %s: %s", db->path, sqlite3_errstr(s));
}

/* True when a read-only open failed for want of a writable -shm and no -wal file exists. */
static bool readonly_fallback_ok(db_conn *db, const char *path) {
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

/* Removes a database file this process created and its companions. */
static void remove_created(const char *path) {
    static const char *const ext[] = {"", "-wal", "-shm", "-journal"};
    char p[4096];
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++) {
        snprintf(p, sizeof p, "%s%s", path, ext[i]);
        unlink(p);
    }
}

int db_open(const char *path, unsigned flags, db_conn **out) {
    *out = NULL;
    struct stat sb;
    bool exists = stat(path, &sb) == 0, created = false;
    if (!exists && !(flags & DB_OPEN_CREATE))
        return rt_fail(RT_ENOTFOUND, "%s: no such database (create it with 'retort db init %s')", path, path);
    if (exists && S_ISDIR(sb.st_mode)) return rt_fail(RT_EINVAL, "%s is a directory, not a database file", path);
    if (exists && !S_ISREG(sb.st_mode)) return rt_fail(RT_EINVAL, "%s is not a regular file", path);
    if (!exists) {
        /* created here, so a failure names the system's reason (SQLite reports only its
         * last errno, often from probing a journal) and an empty file is a new database */
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST)
            return rt_fail(RT_EIO, "cannot create the database %s: %s", path, strerror(errno));
        if (fd >= 0) { close(fd); created = true; }
    }
    db_conn *db = rt_calloc(1, sizeof *db);
    if (!db) { if (created) remove_created(path); return RT_ENOMEM; }
    int rc = blob_codec_new(3, &db->codec);
    if (rc || !(db->path = rt_strdup(path))) {
        db_close(db);
        if (created) remove_created(path);
        return rc ? rc : RT_ENOMEM;
    }
    int oflags = (flags & DB_OPEN_READONLY) ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
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
        if (created) remove_created(path);
        return rc;
    }
    *out = db;
    return 0;
}

void db_close(db_conn *db) {
    if (!db) return;
    db_rollback(db);
    for (int i = 0; i < DB_ST_COUNT; i++) sqlite3_finalize(db->st[i]);
    sqlite3_close_v2(db->h);
    blob_codec_free(db->codec);
    free(db->path);
    free(db);
}

sqlite3 *db_sqlite(db_conn *db) { return db->h; }

int db_fail(db_conn *db, int s, const char *what) {
    int rc = db_sql_fail(db->h, s, what, NULL, 0);
    return what && *what ? rt_errorf(rc, "%s", what) : rc;
}

/* ---- check ---- */

typedef struct {
    char *acc;
    size_t len, cap;
    int problems;
} check_report;

static int report_line(check_report *r, const char *line) {
    size_t l = strlen(line);
    if (rt_grow((void **)&r->acc, &r->cap, r->len + l + 2, 1)) return RT_ENOMEM;
    memcpy(r->acc + r->len, line, l);
    r->len += l;
    r->acc[r->len++] = '\n';
    r->acc[r->len] = 0;
    r->problems++;
    return 0;
}

/* Adds each row of sql (columns joined by spaces) except one equal to skip_ok. A query
 * that SQLite cannot finish because the file is damaged is reported (*corrupt set), not
 * returned as an error: that is what a check is for. */
static int collect_rows(db_conn *db, const char *sql, check_report *r, const char *skip_ok, const char *what,
                        bool *corrupt) {
    sqlite3_stmt *st;
    int s = sqlite3_prepare_v2(db->h, sql, -1, &st, NULL), row = 0;
    while (s == SQLITE_OK && (s = db_step_row(st, &row)) == SQLITE_OK && row) {
        char line[512];
        int o = 0;
        for (int c = 0; c < sqlite3_column_count(st) && o < (int)sizeof line - 2; c++) {
            const char *t = (const char *)sqlite3_column_text(st, c);
            o += snprintf(line + o, sizeof line - (size_t)o, c ? " %s" : "%s", t ? t : "NULL");
        }
        if (skip_ok && !strcmp(line, skip_ok)) continue;
        const char *l = line;
        if (!strncmp(l, "*** in database ", 16)) { /* a heading, not a problem */
            const char *nl = strchr(l, '\n');
            if (!nl) continue;
            l = nl + 1;
        }
        size_t ll = strlen(l);
        while (ll && (l[ll - 1] == '\n' || l[ll - 1] == ' ')) line[(l - line) + --ll] = 0;
        if (report_line(r, l)) { sqlite3_finalize(st); return RT_ENOMEM; }
    }
    sqlite3_finalize(st);
    if (s == SQLITE_OK) return 0;
    int e = s & 0xff;
    if (e == SQLITE_CORRUPT || e == SQLITE_NOTADB || e == SQLITE_IOERR) {
        char line[512];
        snprintf(line, sizeof line, "%s: cannot be read (%s)", what, sqlite3_errstr(s));
        if (corrupt) *corrupt = true;
        return report_line(r, line) ? RT_ENOMEM : 0;
    }
    return db_sql_fail(db->h, s, sql, __FILE__, __LINE__);
}

int db_check(db_conn *db, bool *ok, char **report) {
    *ok = false;
    *report = NULL;
    check_report r = {0};
    bool corrupt = false;
    int rc = collect_rows(db, "PRAGMA integrity_check", &r, "ok", "the database", &corrupt);
    if (!rc && corrupt) {
        /* the whole-file check stopped at damage: check table by table, so the report says
         * which tables are damaged and which are whole */
        r.problems = 0;
        r.len = 0;
        sqlite3_stmt *st;
        int s = sqlite3_prepare_v2(db->h, "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name", -1, &st, NULL);
        char **names = NULL;
        size_t n = 0, cap = 0;
        int row = 0;
        while (!rc && s == SQLITE_OK && (s = db_step_row(st, &row)) == SQLITE_OK && row) {
            char *nm = rt_strdup((const char *)sqlite3_column_text(st, 0));
            if (!nm || rt_grow((void **)&names, &cap, n + 1, sizeof *names)) { free(nm); rc = RT_ENOMEM; break; }
            names[n++] = nm;
        }
        sqlite3_finalize(st);
        if (!rc && s != SQLITE_OK) {
            char line[256];
            snprintf(line, sizeof line, "the schema table: cannot be read (%s)", sqlite3_errstr(s));
            rc = report_line(&r, line);
        }
        for (size_t i = 0; !rc && i < n; i++) {
            char *sql = sqlite3_mprintf("PRAGMA integrity_check(\"%w\")", names[i]);
            char *what = sqlite3_mprintf("table %s", names[i]);
            rc = sql && what ? collect_rows(db, sql, &r, "ok", what, NULL) : RT_ENOMEM;
            sqlite3_free(sql);
            sqlite3_free(what);
        }
        for (size_t i = 0; i < n; i++) free(names[i]);
        free(names);
        if (!rc && !r.problems) rc = report_line(&r, "the database: cannot be read (database disk image is malformed)");
    }
    if (!rc) rc = collect_rows(db, "PRAGMA foreign_key_check", &r, NULL, "foreign keys", NULL);
    if (rc) {
        free(r.acc);
        return rc;
    }
    if (!r.problems) {
        free(r.acc);
        r.acc = rt_strdup("ok");
        if (!r.acc) return RT_ENOMEM;
    } else {
        r.acc[r.len - 1] = 0;
    }
    *ok = r.problems == 0;
    *report = r.acc;
    return 0;
}

/* ---- rows ---- */

static int ensure_dict(db_conn *db, int64_t dict_id);

static void hash128(const void *p, size_t n, uint8_t out[16]) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(p, n));
    memcpy(out, c.digest, 16);
}

static int bind_text_or_null(sqlite3_stmt *st, int i, const char *s) {
    return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

int db_prompt_put(db_conn *db, const db_prompt *p, int64_t *id, bool *inserted) {
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
static int sample_find(db_conn *db, const db_sample *s, const char *params, const uint8_t h[16], int64_t *found) {
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

static int sample_next_index(db_conn *db, const db_sample *s, const char *params, int64_t *idx) {
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

static int sample_insert(db_conn *db, const db_sample *s, const char *params, int64_t index, const uint8_t h[16],
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

int db_sample_put(db_conn *db, const db_sample *s, int64_t *id, bool *inserted) {
    if (!s->teacher || (!s->text && s->text_len)) return rt_fail(RT_EINVAL, "a sample needs a teacher and text");
    if (s->text_len > INT32_MAX / 2) return rt_fail(RT_ERANGE, "sample text of %zu bytes is too long", s->text_len);
    const char *params = s->params_json ? s->params_json : "{}";
    uint8_t h[16];
    hash128(s->text ? s->text : "", s->text_len, h);
    int64_t found = 0, index = s->sample_index;
    int rc = 0;
    if (s->fresh_prompt && index < 0) index = 0;
    else if (!s->fresh_prompt) rc = sample_find(db, s, params, h, &found);
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

int db_sample_topk_put(db_conn *db, int64_t sample_id, int k, size_t n_tokens, const int32_t *ids, const float *logprobs) {
    if (k < 1 || n_tokens == 0) return rt_fail(RT_EINVAL, "sample %lld: top-k of %d over %zu tokens", (long long)sample_id, k, n_tokens);
    size_t n = n_tokens * (size_t)k;
    uint8_t *raw = rt_malloc(n * 8), *z = NULL;
    size_t zlen = 0;
    if (!raw) return RT_ENOMEM;
    for (size_t i = 0; i < n; i++) {   /* little-endian hosts (as teacher/driver.c stores them) */
        memcpy(raw + 8 * i, &ids[i], 4);
        memcpy(raw + 8 * i + 4, &logprobs[i], 4);
    }
    int rc = blob_compress(db->codec, raw, n * 8, 0, &z, &zlen);
    free(raw);
    if (rc) return rc;
    sqlite3_stmt *st = NULL;
    int s = sqlite3_prepare_v2(db->h, "INSERT OR REPLACE INTO sample_topk (sample_id, k, n_tokens, data) VALUES (?1, ?2, ?3, ?4)",
                               -1, &st, NULL);
    if (s == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, sample_id);
        sqlite3_bind_int(st, 2, k);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)n_tokens);
        sqlite3_bind_blob(st, 4, z, (int)zlen, SQLITE_STATIC);
        s = db_step_done(st);
    }
    sqlite3_finalize(st);
    free(z);
    return s == SQLITE_OK ? 0 : db_sql_fail(db->h, s, "storing top-k logprobs", __FILE__, __LINE__);
}

static int ensure_dict(db_conn *db, int64_t dict_id) {
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

int db_blob_text(db_conn *db, const void *blob, size_t len, int64_t dict_id, char **text, size_t *text_len) {
    int rc = ensure_dict(db, dict_id);
    if (rc) return rc;
    return blob_decompress(db->codec, blob, len, dict_id != 0, text, text_len);
}

int db_sample_text(db_conn *db, int64_t sample_id, char **text, size_t *len) {
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

int db_verdict_put(db_conn *db, int64_t sample_id, const char *filter, bool pass, double score, const char *reason) {
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

int db_snapshot_find(db_conn *db, const char *name, int64_t *snapshot_id) {
    sqlite3_stmt *st;
    SQL_TRY(db->h, sqlite3_prepare_v2(db->h, "SELECT id FROM snapshots WHERE name = ?1", -1, &st, NULL));
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int row = 0, s = db_step_row(st, &row);
    *snapshot_id = row ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    SQL_TRY(db->h, s);
    return row ? 0 : rt_fail(RT_ENOTFOUND, "no snapshot named '%s'", name);
}

static int snapshot_fill(db_conn *db, const char *name, const char *cfg, const int64_t *ids, size_t n, int64_t *sid) {
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

int db_snapshot_create(db_conn *db, const char *name, const char *filter_config_json, const int64_t *ids, size_t n,
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

/* Trains a dictionary on an even spread of the run's samples and measures it; *dict is
 * malloc'd. Writes nothing. */
static int dict_build(db_conn *db, size_t cap, size_t max_samples, db_dict_report *rep, uint8_t **dict_out,
                      size_t *dlen_out) {
    memset(rep, 0, sizeof *rep);
    *dict_out = NULL;
    *dlen_out = 0;
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
    rep->dict_bytes = dlen;
    rep->samples = n;
    for (size_t i = 0; texts && i < n; i++) free(texts[i]);
    free(texts);
    free(lens);
    free(ids);
    blob_codec_free(plain);
    blob_codec_free(withd);
    if (rc) { free(dict); return rc; }
    *dict_out = dict;
    *dlen_out = dlen;
    return 0;
}

/* Inserts the dictionary (in the caller's transaction, if one is open) and makes it the one
 * new text is compressed with. */
static int dict_store(db_conn *db, const uint8_t *dict, size_t dlen, db_dict_report *rep) {
    sqlite3_stmt *st;
    SQL_TRY(db->h, sqlite3_prepare_v2(db->h, "INSERT INTO zstd_dicts (dict, trained_on) VALUES (?1, ?2)", -1, &st, NULL));
    sqlite3_bind_blob(st, 1, dict, (int)dlen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)rep->samples);
    int s = db_step_done(st);
    sqlite3_finalize(st);
    if (s != SQLITE_OK) return db_sql_fail(db->h, s, "inserting the dictionary", __FILE__, __LINE__);
    rep->dict_id = db->write_dict = sqlite3_last_insert_rowid(db->h);
    return blob_codec_set_dict(db->codec, rep->dict_id, dict, dlen);
}

int db_dict_train(db_conn *db, size_t cap, size_t max_samples, db_dict_report *rep) {
    uint8_t *dict;
    size_t dlen;
    int rc = dict_build(db, cap, max_samples, rep, &dict, &dlen);
    if (!rc) rc = dict_store(db, dict, dlen, rep);
    free(dict);
    return rc;
}

/* Rewrites every sample's text with the current dictionary, in batches of one transaction;
 * with new_dict, the first batch also inserts it (so a run killed before its first commit
 * leaves no dictionary behind). Ends by deleting the dictionaries nothing refers to. */
static int recompress(db_conn *db, const uint8_t *new_dict, size_t dlen, db_dict_report *rep, size_t *rewritten) {
    *rewritten = 0;
    int64_t maxid;
    int rc = query_int(db, "SELECT COALESCE(MAX(id), 0) FROM samples", &maxid);
    if (rc) return rc;
    int64_t old_write = db->write_dict;
    sqlite3_stmt *up;
    SQL_TRY(db->h, sqlite3_prepare_v2(db->h, "UPDATE samples SET text = ?2, dict_id = ?3 WHERE id = ?1", -1, &up, NULL));
    const int64_t batch = 2000;
    bool stored = !new_dict;
    for (int64_t lo = 1; !rc && (lo <= maxid || !stored); lo += batch) {
        if ((rc = db_begin(db))) break;
        bool first = !stored;
        if (first) rc = dict_store(db, new_dict, dlen, rep);
        int64_t dict = db->write_dict;
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
        if (!rc && first) stored = true;
    }
    sqlite3_finalize(up);
    if (!rc && (rc = db_begin(db)) == 0) {
        /* dictionaries superseded by this one that no row uses any more */
        sqlite3_stmt *st;
        int s = sqlite3_prepare_v2(db->h, "DELETE FROM zstd_dicts WHERE id != ?1 AND id NOT IN (SELECT dict_id FROM samples "
                                          "WHERE dict_id IS NOT NULL UNION SELECT dict_id FROM sample_topk WHERE dict_id IS NOT "
                                          "NULL UNION SELECT dict_id FROM eval_results WHERE dict_id IS NOT NULL)", -1, &st, NULL);
        if (s == SQLITE_OK) {
            sqlite3_bind_int64(st, 1, db->write_dict);
            s = db_step_done(st);
            sqlite3_finalize(st);
        }
        rc = s == SQLITE_OK ? db_commit(db) : db_sql_fail(db->h, s, "deleting unused dictionaries", __FILE__, __LINE__);
    }
    if (rc) {
        db_rollback(db);
        if (!stored) db->write_dict = old_write; /* the new dictionary's row was rolled back */
    }
    return rc;
}

int db_recompress(db_conn *db, size_t *rewritten) {
    db_dict_report rep = {0};
    return recompress(db, NULL, 0, &rep, rewritten);
}

int db_dict_train_recompress(db_conn *db, size_t cap, size_t max_samples, db_dict_report *rep, size_t *rewritten) {
    uint8_t *dict;
    size_t dlen;
    *rewritten = 0;
    int rc = dict_build(db, cap, max_samples, rep, &dict, &dlen);
    if (!rc) rc = recompress(db, dict, dlen, rep, rewritten);
    free(dict);
    return rc;
}

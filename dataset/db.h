/* dataset/db.h — the run database (SQLite): schema, migrations, rows, stats.
 *
 * Every stage meets in one SQLite file (run.db). db_open() opens it in WAL mode with
 * foreign keys on and a busy timeout, and brings the schema up to date: each migration
 * runs in its own transaction and sets PRAGMA user_version, so a database is always at a
 * version this code knows (a newer one is refused). The schema is documented in
 * docs/database.md; in short:
 *
 *   prompts          one row per distinct prompt: source, external id, content hash
 *                    (UNIQUE: XXH3-128 of the messages JSON), messages (JSON array of
 *                    {role, content}), prompt_key (the record field that held the prompt),
 *                    gold answer, metadata (the record's other fields, JSON)
 *   samples          one completion of a prompt by a teacher: UNIQUE (prompt, teacher,
 *                    params, sample_index) so generation is idempotent; text as one zstd
 *                    frame (dict_id names the dictionary, NULL for plain zstd), its size
 *                    and XXH3-128 hash; token counts of prompt, thinking and answer;
 *                    finish reason; mean logprob
 *   sample_topk      optional teacher top-k logprobs per sample (zstd blob)
 *   verdicts         (sample, filter) → pass, score, reason
 *   clusters         (method, sample) → dedup cluster id, representative flag
 *   snapshots        named, frozen sets of sample ids with the filter configuration that
 *                    made them (snapshot_samples holds the members)
 *   filter_runs      (version 2) the configuration (JSON) of each `retort filter` run, how
 *                    many samples it scored, when it started and finished
 *   eval_results     (run, model, prompt, sample_index) → response, extracted answer, correct
 *   zstd_dicts       dictionaries trained on the run's own samples
 *
 * Every SQL statement of retort is in dataset/: the stages' own queries are the typed calls of
 * dataset/queue.h (generation), verdicts.h (filter, select, db snapshot) and evalres.h
 * (eval_results); the raw handle stays inside (dataset/db_int.h).
 *
 * A db_conn is used by one thread at a time; several processes may share the file (WAL).
 * Writes from the row functions below join the caller's transaction when one is open
 * (db_begin/db_commit), so a stage commits in batches. Text columns go through the
 * database's blob codec (dataset/blob.h): the newest dictionary in zstd_dicts when one has
 * been trained, plain zstd otherwise.
 *
 * Strings returned through out-parameters are malloc'd; the caller frees them. json_t
 * results are new references (json_decref).
 * Errors: RT_EIO (cannot open/create, read-only file or directory, disk full — the message
 * gives SQLite's reason), RT_EFORMAT (not a retort database, corrupt, or a schema newer than
 * this code), RT_ENOTFOUND (a named snapshot or row that does not exist), RT_EINVAL,
 * RT_ENOMEM, RT_EINTERNAL (an unexpected SQLite failure). Every message names the database
 * file and says why in words ("run.db is not a SQLite database", "cannot create the
 * database x.db: Permission denied", "run.db is corrupt (…)"); the failing call and its
 * source line go to the debug log (retort --verbose), never into the message.
 */
#ifndef RT_DATASET_DB_H
#define RT_DATASET_DB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DB_SCHEMA_VERSION 2

typedef struct db_conn db_conn;

enum {
    DB_OPEN_CREATE = 1,   /* create the file when absent (else RT_ENOTFOUND) */
    DB_OPEN_READONLY = 2, /* never write: no migration (an old schema is RT_EFORMAT) */
};

int  db_open(const char *path, unsigned flags, db_conn **out);
void db_close(db_conn *db);                             /* NULL is fine */
int  db_schema_version(db_conn *db, int *version);

/* Transactions: db_begin starts a write transaction (BEGIN IMMEDIATE); db_rollback is safe
 * to call when none is open. */
int db_begin(db_conn *db);
int db_commit(db_conn *db);
void db_rollback(db_conn *db);

/* PRAGMA integrity_check and foreign_key_check. *ok is true when both find nothing;
 * *report (malloc'd) is "ok" or the problems, one per line. */
int db_check(db_conn *db, bool *ok, char **report);

/* Counts, per-source and per-filter numbers, compression and length histograms:
 * {"schema_version", "prompts", "samples", "sources": {NAME: {"prompts", "samples"}},
 *  "teachers": {T: n}, "verdicts": {FILTER: {"pass", "fail", "pass_rate"}},
 *  "funnel": [{"filter", "removed", "remaining"}] (filters in the order retort filter applies
 *             them; a sample counts as removed by the first filter it fails; remaining starts
 *             from every sample),
 *  "snapshots": {NAME: n}, "text": {"bytes", "stored_bytes", "ratio"},
 *  "histograms": {"edges": [...], "tokens": {SOURCE: {STAGE: [counts]}},
 *                 "bytes": {SOURCE: {STAGE: [counts]}}}}
 * Stages: "all" (every sample), "passed" (samples with verdicts, all passing), and
 * "snapshot:NAME". counts[i] holds values in [edges[i], edges[i+1]); the last is open. */
int db_stats(db_conn *db, json_t **out);

/* ---- rows ---- */

typedef struct {
    const char *source;        /* required */
    const char *external_id;   /* NULL allowed */
    const char *messages_json; /* required: JSON array of messages, as stored */
    const char *prompt_key;    /* NULL for chat records */
    const char *gold;          /* NULL allowed */
    const char *metadata_json; /* NULL means "{}" */
} db_prompt;

/* Inserts a prompt unless one with the same content hash exists; *id gets the row either
 * way, *inserted says which (both may be NULL). */
int db_prompt_put(db_conn *db, const db_prompt *p, int64_t *id, bool *inserted);

typedef struct {
    int64_t prompt_id;
    const char *teacher;     /* required */
    const char *params_json; /* sampling parameters, canonical JSON; NULL means "{}" */
    bool has_seed;
    int64_t seed;
    /* ≥ 0: the sample's index (insert is skipped when (prompt, teacher, params, index)
     * exists). -1: skip when the same text exists for (prompt, teacher, params), else
     * take the next free index — how reference answers are imported. */
    int64_t sample_index;
    /* the caller inserted the prompt in the open transaction, so it has no samples: none is
     * looked up and -1 means index 0 (a bulk import's shortcut; false is always safe) */
    bool fresh_prompt;
    const char *text;
    size_t text_len;
    int32_t prompt_tokens, thinking_tokens, answer_tokens; /* -1 = unknown */
    const char *finish_reason;                             /* NULL allowed */
    bool has_logprob;
    double mean_logprob;
} db_sample;

int db_sample_put(db_conn *db, const db_sample *s, int64_t *id, bool *inserted);
/* Stores a sample's teacher top-k (sample_topk: k alternatives per token for n_tokens tokens,
 * ids and logprobs [n_tokens · k]; zstd, no dictionary), replacing what it had. */
int db_sample_topk_put(db_conn *db, int64_t sample_id, int k, size_t n_tokens, const int32_t *ids, const float *logprobs);
/* The decompressed text of a sample (*text NUL-terminated, malloc'd). */
int db_sample_text(db_conn *db, int64_t sample_id, char **text, size_t *len);
/* Decompresses a text column value stored with dictionary dict_id (0 = none). */
int db_blob_text(db_conn *db, const void *blob, size_t len, int64_t dict_id, char **text, size_t *text_len);

int db_verdict_put(db_conn *db, int64_t sample_id, const char *filter, bool pass, double score, const char *reason);

/* Creates snapshot name from ids (each must be a sample); an existing name is RT_EINVAL:
 * snapshots are frozen. */
int db_snapshot_create(db_conn *db, const char *name, const char *filter_config_json, const int64_t *ids, size_t n,
                       int64_t *snapshot_id);
int db_snapshot_find(db_conn *db, const char *name, int64_t *snapshot_id);   /* RT_ENOTFOUND */

/* Trains a zstd dictionary (at most cap bytes) on up to max_samples sample texts, stores it
 * in zstd_dicts and makes it the one new text is compressed with. Measures, on those
 * texts, the bytes of plain per-blob zstd and of zstd with the dictionary. */
typedef struct {
    int64_t dict_id;
    size_t dict_bytes, samples, text_bytes, plain_bytes, dict_zstd_bytes;
} db_dict_report;
int db_dict_train(db_conn *db, size_t cap, size_t max_samples, db_dict_report *rep);
/* Rewrites every sample's text with the current dictionary, in transactions of 2000
 * samples; *rewritten counts them. Then deletes the dictionaries no row refers to any more. */
int db_recompress(db_conn *db, size_t *rewritten);
/* db_dict_train, then db_recompress, where the dictionary's row is written in the same
 * transaction as the first rewritten samples: a run killed or failing before that commit
 * leaves no dictionary behind, one killed later leaves it in use (a rerun recompresses the
 * rest and deletes what it superseded). */
int db_dict_train_recompress(db_conn *db, size_t cap, size_t max_samples, db_dict_report *rep, size_t *rewritten);

#endif

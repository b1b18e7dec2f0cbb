/* dataset/verdicts.h — what the filter stage reads and writes beside db_verdict_put():
 * pending samples, filter runs, dedup clusters, the samples a selection may take.
 *
 * The filters themselves live in filters/; here is only their bookkeeping in the run
 * database (dataset/db.h). Readers stream: each row goes to a callback while the query is
 * open (the callback must not write to the database); a callback's non-zero return stops
 * the scan and is returned as is. Row strings are valid during the callback only, except
 * a row's text, which the callback may take (set it to NULL) and then frees.
 *
 * Errors keep the wording the stages have always printed: pending samples, filter runs and
 * clusters say "DB: WHAT: SQLite's reason" (RT_EINTERNAL, DB being the database's file);
 * selection says "WHAT: SQLite's reason" (RT_EINTERNAL); db_snapshot_pick goes through the
 * database's own error words (dataset/db.h). RT_ENOMEM, and a text's decompression error
 * with "sample ID" prefixed.
 */
#ifndef RT_DATASET_VERDICTS_H
#define RT_DATASET_VERDICTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dataset/db.h"

/* ---- pending samples (retort filter) ---- */

/* The per-sample filters a run wants: bit f of todo is filter names[f]; a sample is
 * pending while one of them has no verdict for it. Filter gold_bit (-1: none) counts as
 * done for samples whose prompt has no gold answer. */
typedef struct {
    unsigned todo;
    const char *const *names; /* [n_names] by bit */
    int n_names;
    int gold_bit;
} db_pending_spec;

/* Counts the pending samples. */
int db_pending_count(db_conn *db, const db_pending_spec *spec, size_t *n);

typedef struct {
    int64_t id;
    char *text;                          /* decompressed, malloc'd, NUL-terminated; may be taken */
    size_t len;
    int64_t thinking_tokens, answer_tokens; /* -1 when unknown */
    const char *finish_reason;           /* NULL when unknown */
    const char *messages;                /* the prompt's messages (JSON) */
    const char *gold;                    /* NULL: no gold */
    const char *metadata;                /* the prompt's metadata (JSON) */
    unsigned done;                       /* bits of spec->todo already done (gold_bit set without gold) */
} db_pending_row;

typedef int (*db_pending_fn)(void *ud, db_pending_row *row);

typedef struct db_pending db_pending;     /* one prepared scan; owned by the caller */
int db_pending_open(db_conn *db, const db_pending_spec *spec, db_pending **out);
/* The next at most cap pending samples with id > *last, in id order, each to fn; *last
 * follows them, *n counts them (0: none left). The read is released before it returns, so
 * the caller may write between batches. */
int db_pending_read(db_pending *p, int64_t *last, size_t cap, db_pending_fn fn, void *ud, size_t *n);
void db_pending_close(db_pending *p); /* NULL is fine */

/* Samples whose prompt has no gold answer; 0 when the count cannot be read. */
size_t db_samples_without_gold(db_conn *db);

/* ---- filter runs ---- */

/* Records a run with its configuration (JSON); *id is its row. */
int db_filter_run_start(db_conn *db, const char *config_json, int64_t *id);
/* Sets the run's scored count and its finishing time. */
int db_filter_run_finish(db_conn *db, int64_t id, size_t scored);
/* Appends to filters the names of the filters with any verdict (sorted), and to runs one
 * {"id", "config" (the JSON, null when unreadable), "scored", "started_at", "finished"}
 * per filter run, oldest first. Errors: "reading filter runs: …". */
int db_filter_history(db_conn *db, json_t *filters, json_t *runs);

/* ---- dedup clusters ---- */

/* The samples a dedup run looks at: those without a dedup verdict and the representatives
 * an earlier run of method kept, in id order. */
typedef struct {
    int64_t id;
    char *text;          /* decompressed, malloc'd; may be taken */
    size_t len;
    int64_t text_bytes;
    bool has_dedup;      /* has a dedup verdict: an earlier representative */
    bool clean;          /* no failing verdict of another filter */
} db_dedup_row;

typedef int (*db_dedup_fn)(void *ud, db_dedup_row *row);
int db_dedup_rows(db_conn *db, const char *method, db_dedup_fn fn, void *ud);

/* Members (representative not counted) an earlier run recorded in the cluster of
 * representative rep_id. */
int db_cluster_members(db_conn *db, const char *method, int64_t rep_id, size_t *n);
/* Sets the dedup verdicts of those members to name the cluster's new size (reason
 * "cluster of N," and score N). */
int db_cluster_regrow(db_conn *db, const char *method, int64_t rep_id, size_t members);

typedef struct db_cluster_writer db_cluster_writer; /* owned by the caller */
int db_cluster_writer_open(db_conn *db, db_cluster_writer **out);
/* Sets sample_id's cluster (its representative's id) for method, replacing what it had. */
int db_cluster_put(db_cluster_writer *w, const char *method, int64_t sample_id, int64_t cluster, bool representative);
void db_cluster_writer_close(db_cluster_writer *w); /* NULL is fine */

/* ---- selection (retort select, retort db snapshot) ---- */

/* *any: some sample has a verdict. Errors: "reading verdicts: …". */
int db_verdicts_any(db_conn *db, bool *any);

/* The samples a selection may take, in id order: a passing verdict for every filter that
 * was run (verify only where the prompt has gold), no failing verdict, not a
 * non-representative cluster member. */
typedef struct {
    int64_t id, prompt_id, text_bytes;
    const char *source; /* NULL when unknown */
} db_eligible_row;

typedef int (*db_eligible_fn)(void *ud, const db_eligible_row *row);
int db_eligible_samples(db_conn *db, db_eligible_fn fn, void *ud); /* "selecting eligible samples: …" */

/* The ids (ascending, malloc'd) of the samples of prompts from source (NULL: any), by
 * teacher (NULL: any), and when passed, with verdicts that all pass — what `retort db
 * snapshot` freezes. */
int db_snapshot_pick(db_conn *db, const char *source, const char *teacher, bool passed, int64_t **ids, size_t *n);

#endif

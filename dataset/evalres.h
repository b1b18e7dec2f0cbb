/* dataset/evalres.h — the eval_results table: storing a benchmark run's samples and reading
 * them back.
 *
 * A db_eval_writer holds the two statements `retort eval` runs per question (the insert and
 * the stored-indices lookup), prepared once. Rows are keyed (run, model, prompt,
 * sample_index); storing a key that exists changes nothing (a resumed run never stores a
 * sample twice). Readers stream rows to a callback while the query is open (the callback
 * must not write to the database; its non-zero return stops the scan and is returned);
 * row strings are valid during the callback only.
 *
 * Errors keep the wording eval has always printed, each ending in SQLite's reason:
 * "writing results to DB: …" (preparing the writer or the model check, RT_EINTERNAL; the
 * call and source line go to the debug log), "storing an eval result: …" (RT_EIO),
 * "reading eval_results: …", "reading results from DB: …", "binding the run name: …",
 * "listing eval runs: …" (RT_EINTERNAL); RT_ENOMEM ("eval results").
 */
#ifndef RT_DATASET_EVALRES_H
#define RT_DATASET_EVALRES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dataset/db.h"

typedef struct {
    const char *run, *model, *benchmark; /* required */
    int64_t prompt_id;
    int64_t sample_index;
    const void *response; /* zstd frame (no dictionary), compressed by the caller */
    size_t response_len;
    const char *extracted; /* NULL: no answer found */
    bool correct;
    int64_t n_tokens;      /* < 0: unknown */
    const char *finish;    /* NULL: unknown */
    double latency_ms;
} db_eval_result;

typedef struct db_eval_writer db_eval_writer; /* owned by the caller */
int db_eval_writer_open(db_conn *db, db_eval_writer **out);
int db_eval_put(db_eval_writer *w, const db_eval_result *r);
/* Calls fn(ud, sample_index) for each sample stored for (run, model, prompt_id). */
int db_eval_stored(db_eval_writer *w, const char *run, const char *model, int64_t prompt_id,
                   void (*fn)(void *ud, int64_t sample_index), void *ud);
void db_eval_writer_close(db_eval_writer *w); /* NULL is fine */

/* *other (malloc'd) is a model other than model with results in run, NULL when none. */
int db_eval_other_model(db_conn *db, const char *run, const char *model, char **other);

/* The rows of run, by benchmark, prompt id and sample index. */
typedef struct {
    const char *benchmark, *model; /* NULL when unknown */
    int64_t prompt_id;
    const char *extracted;         /* NULL: no answer */
    bool correct;
    int64_t n_tokens;              /* 0 when unknown */
    const char *finish;            /* NULL when unknown */
} db_eval_row;

typedef int (*db_eval_row_fn)(void *ud, const db_eval_row *r);
int db_eval_rows(db_conn *db, const char *run, db_eval_row_fn fn, void *ud);

/* The names of the runs in eval_results, in the order they were first stored; *names and
 * each name malloc'd (free each, then the array). */
int db_eval_runs(db_conn *db, char ***names, size_t *n);

#endif

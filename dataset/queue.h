/* dataset/queue.h — prompts waiting for a stage: what `retort generate --db` still has to
 * sample, where it stores teacher top-k, and a source's prompts for the demo.
 *
 * Readers stream: each row goes to a callback while the query is open (the callback must
 * not write to the database); a callback's non-zero return stops the scan and is returned
 * as is. Row strings are valid during the callback only.
 *
 * Errors keep the wording the stages have always printed: "selecting pending prompts: …",
 * "preparing the top-k insert: …" (RT_EINTERNAL), "storing top-k logprobs: …" (RT_EIO),
 * "reading prompts: …" (RT_EINTERNAL), each ending in SQLite's reason; RT_ENOMEM.
 */
#ifndef RT_DATASET_QUEUE_H
#define RT_DATASET_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dataset/db.h"

/* A prompt with the samples (teacher, params) already has among indices 0..n-1. */
typedef struct {
    int64_t id;
    const char *source;   /* NULL when unknown */
    const char *messages; /* JSON; NULL when unknown */
    const bool *have;     /* [n]: sample index j is stored */
    int n_have;           /* how many of have are set */
} db_pending_prompt;

typedef int (*db_pending_prompt_fn)(void *ud, const db_pending_prompt *p);

/* Every prompt of source (NULL: all), in id order, with which of the n ≥ 1 samples of
 * teacher under params (canonical JSON, as stored) exist — fully sampled prompts too. */
int db_queue_prompts(db_conn *db, const char *source, const char *teacher, const char *params, int n,
                     db_pending_prompt_fn fn, void *ud);

/* Stores a sample's teacher top-k: k alternatives for n_tokens tokens, already packed and
 * compressed by the caller (zstd, no dictionary: ids and logprobs, 8 bytes per entry). The
 * statement is prepared once per writer; a sample that has top-k is an error (the insert
 * runs in the transaction that stored the sample). */
typedef struct db_topk_writer db_topk_writer; /* owned by the caller */
int db_topk_writer_open(db_conn *db, db_topk_writer **out);
int db_topk_writer_put(db_topk_writer *w, int64_t sample_id, int k, size_t n_tokens, const void *blob, size_t len);
void db_topk_writer_close(db_topk_writer *w); /* NULL is fine */

/* The prompts of source, in id order: id, messages and metadata (JSON). */
typedef struct {
    int64_t id;
    const char *messages, *metadata; /* NULL when unknown */
} db_prompt_row;

typedef int (*db_prompt_fn)(void *ud, const db_prompt_row *p);
int db_source_prompts(db_conn *db, const char *source, db_prompt_fn fn, void *ud);

/* The same prompts with the content of their last message (NULL when absent). */
typedef struct {
    int64_t id;
    const char *last_content;
} db_prompt_turn;

typedef int (*db_prompt_turn_fn)(void *ud, const db_prompt_turn *p);
int db_source_last_turns(db_conn *db, const char *source, db_prompt_turn_fn fn, void *ud);

#endif

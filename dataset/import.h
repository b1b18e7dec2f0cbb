/* dataset/import.h — JSONL prompt sets into the run database.
 *
 * Formats (one JSON object per line; blank lines are skipped):
 *   gsm8k  {question, answer}: the answer ends in "#### N"; gold = N as written after the
 *          marker (trimmed, e.g. "1,080"); --as-samples stores the whole answer text
 *   math   {problem, answer, solution}: gold = answer; the sample is the solution
 *   aime   {problem, answer}: gold = answer (a string or a number); the sample is the
 *          solution field when --as-samples
 *   jsonl  prompt = the --prompt-field (default "prompt"), gold = the --answer-field when
 *          given (it must then be present), which is also the sample text
 *   chat   {"messages": [{role, content, reasoning_content?}, ...]} (OpenAI/HF form): the
 *          prompt is every message before the final assistant turn; that turn is the sample
 *          ("<think>\nREASONING\n</think>\n\nCONTENT" when reasoning_content is non-empty,
 *          else CONTENT); gold = --answer-field when given
 * --prompt-field and --answer-field override the defaults of every format. Each prompt is
 * stored as messages [{"role": "user", "content": PROMPT}] (chat: its own messages), with the
 * record's other fields as metadata, so export can give the record back. The external id is
 * the record's "id" when present. Samples from --as-samples have teacher "reference".
 *
 * A line is malformed when it is not valid UTF-8, not a JSON object (duplicate keys
 * included), lacks a field its format needs (or has it with the wrong type), or has an
 * empty prompt (nothing but white space; chat: in every message before the answer) or one
 * longer than max_prompt_bytes (the prompt's bytes as stored; default 4 MiB). The reader
 * holds no line longer than 4 × max_prompt_bytes: such a line is counted and skipped as it
 * is read (a regular file is scanned in 1 MiB chunks, never through its mapping) and is
 * malformed, so a 300 MB line costs no memory.
 * db_import_file() parses every line before writing anything: a malformed line makes the
 * whole file RT_EFORMAT ("FILE:LINE: why") with nothing imported — unless skip_bad, which
 * imports the good lines and counts the bad. Rows are then written in transactions of
 * batch_rows lines; a prompt whose content hash is present, and a reference sample whose
 * text is present for its prompt, are skipped, so a rerun after a crash completes the file
 * without duplicates and a re-import changes nothing.
 *
 * Each batch is parsed again just before it is written, so memory is bounded by the batch.
 * Flat records (strings, integers, true, false, null) are read without jansson; any other
 * line goes through jansson. Both store the same bytes (jansson's compact JSON), so a
 * prompt's content hash does not depend on the reader, and both refuse the same lines with
 * the same messages.
 *
 * imp_parse_line() is the pure part (no database), used by the importer and the fuzzer.
 * Errors: RT_EFORMAT (malformed), RT_ENOTFOUND (no such file), RT_EINVAL (a directory),
 * RT_EIO (cannot read: the message gives the system's reason), the database's
 * (dataset/db.h), RT_ENOMEM.
 */
#ifndef RT_DATASET_IMPORT_H
#define RT_DATASET_IMPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "core/threadpool.h"
#include "dataset/db.h"

typedef enum { IMP_GSM8K, IMP_MATH, IMP_AIME, IMP_JSONL, IMP_CHAT } imp_format;

int imp_parse_format(const char *name, imp_format *out); /* RT_EINVAL for an unknown name */

typedef struct {
    imp_format format;
    const char *prompt_field; /* NULL: the format's default */
    const char *answer_field; /* NULL: the format's default */
    const char *source;       /* NULL: the file name without its extension */
    bool as_samples;
    bool skip_bad;
    size_t batch_rows; /* 0: 5000 */
    size_t max_prompt_bytes; /* 0: IMP_MAX_PROMPT_BYTES */
} imp_options;

#define IMP_MAX_PROMPT_BYTES ((size_t)4 << 20)

/* The limit in effect: o->max_prompt_bytes, or the default when 0. */
size_t imp_max_prompt_bytes(const imp_options *o);

/* One parsed line. Strings are malloc'd (imp_record_free releases them); NULL when absent. */
typedef struct {
    char *messages;    /* JSON array */
    char *prompt_key;  /* the field that held the prompt; NULL for chat */
    char *gold;
    char *metadata;    /* JSON object: the record minus the prompt (or "messages") field */
    char *external_id;
    char *sample;      /* the reference sample text (as_samples only) */
    size_t sample_len;
} imp_record;

int  imp_parse_line(const imp_options *o, const char *line, size_t len, imp_record *out);
void imp_record_free(imp_record *r);

typedef struct {
    size_t lines, blank, bad;
    size_t prompts_new, prompts_existing, samples_new, samples_existing;
    size_t bytes;
    size_t first_bad_line;      /* 1-based; 0 when none */
    char first_bad_reason[256];
    char source[256];
} imp_report;

/* pool: parsing runs on it (NULL: inline). */
int db_import_file(db_conn *db, const char *path, const imp_options *o, tp_pool *pool, imp_report *rep);

#endif

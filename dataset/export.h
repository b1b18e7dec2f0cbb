/* dataset/export.h — samples and prompts out of the run database.
 *
 * Selection: every sample, or those of snapshot NAME, optionally only prompts of one
 * source; always in sample (or prompt) id order.
 *
 * EXP_CHAT_JSONL writes one line per sample, the form TRL and HF datasets read:
 *   {"messages": [PROMPT MESSAGES..., {"role": "assistant",
 *                                      "content": "<think>\nTHINKING\n</think>\n\nANSWER"}],
 *    "metadata": {"sample_id", "prompt_id", "teacher",
 *                 "filters": [{"filter", "pass", "score"}, ...], "sampling": {...}}}
 * where ANSWER is the sample text after its first "</think>" (leading whitespace removed)
 * and THINKING the text before it without a leading "<think>" and surrounding whitespace;
 * a text without "</think>" (or with empty THINKING) is all ANSWER, without the tags.
 * With reasoning_field, content is ANSWER and THINKING goes in "reasoning_content"
 * (omitted when empty). PROMPT MESSAGES are those generation sent: the stored prompt with
 * the sample's system prompt first (params "system", unless the prompt has one) and its
 * instruction appended to the last user turn where generation applied it.
 * EXP_JSONL writes one line per prompt of the selection, the record it was imported from:
 * {PROMPT_KEY: prompt text, ...metadata} (chat prompts: {"messages": [...], ...metadata}).
 *
 * "sampling" (only for a sample `retort generate` made: its params hold a temperature) is
 * exp_sampling() of the sample's params.
 *
 * Sampling defaults, for the generation_config.json of a student trained on the samples:
 * exp_sampling() turns generation params (teacher/driver.c gd_params_json) into
 * transformers GenerationConfig keys — temperature 0: {"do_sample": false}; else
 * {"do_sample": true, "temperature", "top_p", and "top_k" / "min_p" when they were used};
 * then "max_new_tokens" (the params' max_tokens) — NULL without a temperature (imported
 * samples). An exp_sampling_acc keeps what every row of a set agrees on: rows are added with
 * their sampling object (NULL: a row without one, which makes the whole set unknown), and
 * exp_sampling_take() returns the keys every row has with the same value (a new reference;
 * NULL when nothing is known) and resets the accumulator. db_sampling_defaults() does that
 * over the samples of a selection.
 *
 * exp_conversation() builds that chat form for one sample (also used by the shard export);
 * exp_split_think() is the split on "</think>". The output file is written atomically
 * ("-" writes to stdout). Errors: the database's, RT_ENOTFOUND (snapshot), RT_EIO, RT_ENOMEM.
 */
#ifndef RT_DATASET_EXPORT_H
#define RT_DATASET_EXPORT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "dataset/db.h"

typedef enum { EXP_CHAT_JSONL, EXP_JSONL } exp_format;

typedef struct {
    const char *snapshot; /* NULL: every sample */
    const char *source;   /* NULL: every source */
    bool with_topk;       /* conversations carry the sample's stored teacher top-k, when it has one, as
                           * "teacher_topk": {"ids": [[id, …] per completion token], "logprobs": [[…]]};
                           * an alternative stored without its id (an endpoint that gave only the text)
                           * is id −1 (render leaves it out) */
} exp_filter;

/* Splits text at its first "</think>": [*think, *think + *think_len) and
 * [*answer, *answer + *answer_len) point into text; think_len is 0 without the tag. */
void exp_split_think(const char *text, size_t len, const char **think, size_t *think_len, const char **answer,
                     size_t *answer_len);

/* {"messages": prompt + assistant turn}; a new reference, NULL on ENOMEM or bad prompt JSON. */
json_t *exp_conversation(const char *prompt_messages_json, const char *text, size_t len);

/* Calls fn for each selected sample with its conversation (borrowed; fn must not keep it);
 * a non-zero return from fn stops and is returned. */
typedef int (*exp_conv_fn)(void *ctx, int64_t sample_id, json_t *conversation);
int db_each_conversation(db_conn *db, const exp_filter *flt, exp_conv_fn fn, void *ctx);

typedef struct {
    bool reasoning_field; /* THINKING in "reasoning_content" instead of inline in content */
} exp_chat_opts;

json_t *exp_sampling(const char *params_json);
typedef struct {
    json_t *common;   /* the keys every row added so far agrees on */
    bool seen, unknown;
} exp_sampling_acc;
void exp_sampling_add(exp_sampling_acc *a, const json_t *sampling);
json_t *exp_sampling_take(exp_sampling_acc *a);
/* *out: the selection's agreed sampling defaults (a new reference), NULL when unknown. */
int db_sampling_defaults(db_conn *db, const exp_filter *flt, json_t **out);

/* co: NULL for the defaults. */
int db_export_jsonl(db_conn *db, exp_format f, const exp_filter *flt, const exp_chat_opts *co, const char *out_path,
                    size_t *n_written);

#endif

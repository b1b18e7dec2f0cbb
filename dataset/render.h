/* dataset/render.h — conversations → chat-template tokens and loss masks → packed shards.
 *
 * rd_session renders conversations ({"messages": [{role, content, reasoning_content?}]})
 * with a chat template (core/chat_template.h: ids and the assistant mask, which becomes the
 * loss mask) in chunks on a thread pool, and spills each document's tokens and mask to a
 * temporary file in the output directory, so memory holds only one chunk however large the
 * set. rd_finish() packs the spilled documents (dataset/pack.h) into shards in that
 * directory and removes the spill file; rd_abort() removes it without packing.
 *
 * A conversation whose loss mask comes out all zero (no assistant turn) is RT_EINVAL: it
 * would train on nothing. Two front ends: rd_pack_jsonl() (a chat JSONL file: a malformed line or one that does not
 * render is RT_EFORMAT/RT_EINVAL naming file and line) and rd_export_snapshot() (the
 * samples of a database selection, as dataset/export.h builds their conversations).
 * Both record the teacher's sampling defaults in index.json as "generation_config" when the
 * conversations agree on them (dataset/export.h exp_sampling_acc: the JSONL rows'
 * metadata.sampling, which `retort export --format chat-jsonl` writes; the selection's
 * samples' generation params) — absent when unknown (a row without them, imported samples).
 * The tokenizer and the template are borrowed and must outlive the session. Errors: RT_EFORMAT, RT_EINVAL,
 * RT_EIO, RT_ENOMEM, and the tokenizer's, template's and database's.
 */
#ifndef RT_DATASET_RENDER_H
#define RT_DATASET_RENDER_H

#include <jansson.h>
#include <stddef.h>

#include "core/chat_template.h"
#include "core/threadpool.h"
#include "core/tokenizer.h"
#include "dataset/export.h"
#include "dataset/pack.h"

typedef struct rd_session rd_session;

/* o->vocab_size is taken from the tokenizer when 0. */
int  rd_begin(const tok_tokenizer *t, const ct_template *ct, const char *out_dir, const pk_options *o, tp_pool *pool,
              rd_session **out);
/* Adds one conversation (borrowed); what names it in error messages ("FILE:LINE"). */
int  rd_add(rd_session *s, json_t *conversation, const char *what);
/* Renders what rd_add queued, packs and writes the shards; meta is added to index.json.
 * Frees s whatever the result. */
int  rd_finish(rd_session *s, const json_t *meta, pk_report *rep);
void rd_abort(rd_session *s);   /* NULL is fine */

int rd_pack_jsonl(const tok_tokenizer *t, const ct_template *ct, const char *jsonl, const char *out_dir, const pk_options *o,
                  tp_pool *pool, const json_t *meta, pk_report *rep);
int rd_export_snapshot(db_conn *db, const exp_filter *flt, const tok_tokenizer *t, const ct_template *ct, const char *out_dir,
                       const pk_options *o, tp_pool *pool, const json_t *meta, pk_report *rep);

#endif

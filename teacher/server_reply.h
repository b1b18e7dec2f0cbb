/* teacher/server_reply.h — the response bodies of a `retort serve` job (teacher/server_queue.h):
 * the whole answer of a finished job, and the SSE chunks of a streamed one as its tokens
 * arrive. The JSON shapes are teacher/oai.h's; this file fills them from the job: decoding
 * tokens (special tokens skipped, ids the tokenizer lacks dropped), the visible text (stop
 * strings), the reasoning split and the logprobs (each token as text and as raw bytes).
 *
 * sr_full_response() returns a new reference (NULL: no memory or a decoding failure); the job
 * must be finished (no engine thread writes it any more). sr_stream_produce() appends to
 * j->out the chunks for what the engine added since its last call, the role chunks first and,
 * once every choice is done, the usage chunk (when asked for) and "data: [DONE]"; it takes
 * the queue's lock itself to copy what the engine wrote, and is called from one connection
 * thread at a time, without the lock. Returns 1 when it added something (or the stream
 * ended), 0 when there is nothing new, RT_ENOMEM or tok_decode's error.
 */
#ifndef RT_TEACHER_SERVER_REPLY_H
#define RT_TEACHER_SERVER_REPLY_H

#include <jansson.h>

#include "core/tokenizer.h"
#include "teacher/server_queue.h"

json_t *sr_full_response(const tok_tokenizer *tok, const char *model, sq_job *j);
int sr_stream_produce(const tok_tokenizer *tok, const char *model, sq_job *j);

#endif

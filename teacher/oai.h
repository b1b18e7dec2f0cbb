/* teacher/oai.h — the OpenAI-compatible wire format of `retort serve`, without any I/O:
 * request bodies parsed and validated into a typed request, and the JSON / SSE pieces of
 * responses (envelopes, choices, stream deltas, usage, logprobs, errors, the model list). Pure
 * functions over memory — no sockets, threads or engine — so they can be unit-tested and fuzzed;
 * teacher/server_reply.c fills them from a job.
 *
 * oai_parse_request() reads a /v1/chat/completions (OAI_CHAT) or /v1/completions
 * (OAI_COMPLETION) body. On success *out owns copies of everything (oai_request_free).
 * On bad input it returns RT_EINVAL and fills *err with an HTTP status (400) and an
 * OpenAI-style message and the offending parameter, ready for oai_error_json(); *out is
 * then empty. RT_ENOMEM only when allocation fails. Accepted fields:
 *   chat:        messages [{role: system|developer|user|assistant, content: string or
 *                [{type: "text", text}], reasoning_content?}], max_tokens or
 *                max_completion_tokens, logprobs (bool), top_logprobs (0..20)
 *   completions: prompt (string, [string, …], [id, …] or [[id, …], …]), max_tokens,
 *                logprobs (0..20 alternatives; null: none), echo (false only)
 *   both:        model, n (1..OAI_MAX_N), temperature (0..2), top_p (0,1], top_k (-1, 0: off;
 *                ≥ 1), min_p [0,1], seed (integer), stop (string or ≤ OAI_MAX_STOP strings),
 *                stream, stream_options {include_usage}, ignore_eos, user;
 *                presence_penalty / frequency_penalty only 0, tools / functions /
 *                response_format only absent or null (anything else: 400, not supported).
 * Unknown fields are ignored, as vLLM and llama.cpp do (clients add their own).
 *
 * Text shown to clients (oai_visible_len): the decoded output, cut before the first stop
 * string; while a sample is still running, a tail that could still become a stop string,
 * or that ends in an unfinished UTF-8 character (decoded as U+FFFD), is held back.
 *
 * The reasoning split (oai_split): when the chat template's generation prompt opened a
 * <think> block (opened = true), or the output begins (after whitespace) with "<think>",
 * the text up to the first "</think>" is reasoning_content and the rest, without its
 * leading whitespace, is content; when no "</think>" comes, everything is reasoning. When
 * neither holds, everything is content. Fed a growing text piece by piece, it gives the same
 * two strings as fed the final text once: a tag split across tokens is held back until
 * it is decided.
 */
#ifndef RT_TEACHER_OAI_H
#define RT_TEACHER_OAI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OAI_MAX_N 128
#define OAI_MAX_STOP 16
#define OAI_MAX_PROMPTS 64
#define OAI_MAX_TOP_LOGPROBS 20

typedef enum { OAI_CHAT = 0, OAI_COMPLETION } oai_kind;

typedef struct {
    char *role, *content, *reasoning_content;   /* reasoning_content NULL when absent */
} oai_message;

typedef struct {
    char *text;                /* a text prompt, or NULL */
    int32_t *ids;              /* a prompt of token ids (when text is NULL) */
    size_t n_ids;
} oai_prompt;

typedef struct {
    oai_kind kind;
    char *model;               /* NULL when absent */
    oai_message *messages;     /* chat */
    size_t n_messages;
    oai_prompt *prompts;       /* completions */
    size_t n_prompts;
    int n;
    double temperature, top_p, min_p;
    int top_k;                 /* 0: off */
    int64_t max_tokens;        /* -1: not given */
    bool has_seed;
    uint64_t seed;
    char **stop;
    int n_stop;
    bool logprobs;             /* return logprobs of the chosen tokens */
    int top_logprobs;          /* alternatives per position */
    bool stream, include_usage, ignore_eos;
} oai_request;

typedef struct {
    int status;                /* HTTP status */
    char message[512];
    char param[64];            /* "" when none */
} oai_error;

int oai_parse_request(const char *body, size_t len, oai_kind kind, oai_request *out, oai_error *err);
void oai_request_free(oai_request *r);    /* NULL is fine; leaves *r empty */

/* {"error": {"message", "type", "param" (null when NULL or ""), "code"}}; type from the
 * status (400/404/405/413: invalid_request_error, 401: authentication_error, 5xx:
 * server_error); code NULL → null. Returns a malloc'd string or NULL (no memory). */
char *oai_error_json(int status, const char *message, const char *param, const char *code);

/* "data: <compact json>\n\n", malloc'd (NULL: no memory). */
char *oai_sse_event(const json_t *j);

/* {"id", "object", "created", "model", "choices": []}: object is chat.completion,
 * chat.completion.chunk, or text_completion (both plain and streamed). New reference. */
json_t *oai_envelope(oai_kind kind, bool chunk, const char *id, int64_t created, const char *model);
json_t *oai_usage(int64_t prompt_tokens, int64_t completion_tokens);

/* The choices of a response, as the OpenAI API reference spells them. Each takes (steals) the
 * reference of logprobs (NULL: "logprobs": null); finish NULL: "finish_reason": null. New
 * reference, NULL when out of memory.
 *   oai_choice_chat:  {"index", "message": {"role": "assistant", "content", "reasoning_content"
 *                     (null unless has_reasoning), "tool_calls": []}, "logprobs", "finish_reason"}
 *   oai_choice_text:  {"index", "text", "logprobs", "finish_reason"} (a whole completion, or one
 *                     streamed chunk's piece of it)
 *   oai_delta_role:   {"index", "delta": {"role": "assistant", "content": ""}, "logprobs": null,
 *                     "finish_reason": null}: the first chunk of each streamed chat choice
 *   oai_delta_chat:   {"index", "delta": {"reasoning_content"?, "content"?} (each only when not
 *                     empty), "logprobs", "finish_reason"} */
json_t *oai_choice_chat(int index, const char *content, size_t content_len, bool has_reasoning, const char *reasoning,
                        size_t reasoning_len, json_t *logprobs, const char *finish);
json_t *oai_choice_text(int index, const char *text, size_t len, json_t *logprobs, const char *finish);
json_t *oai_delta_role(int index);
json_t *oai_delta_chat(int index, const char *reasoning, size_t reasoning_len, const char *content, size_t content_len,
                       json_t *logprobs, const char *finish);

/* A streamed chunk: oai_envelope(kind, chunk) holding the one choice (taken). New reference. */
json_t *oai_chunk(oai_kind kind, const char *id, int64_t created, const char *model, json_t *choice);
/* The last chunk of a stream with include_usage: no choices, and "usage". New reference. */
json_t *oai_usage_chunk(oai_kind kind, const char *id, int64_t created, const char *model, int64_t prompt_tokens,
                        int64_t completion_tokens);
/* What ends every stream, after its last chunk. */
#define OAI_SSE_DONE "data: [DONE]\n\n"

/* GET /v1/models: {"object": "list", "data": [{"id", "object": "model", "created", "owned_by":
 * "retort", "max_model_len"}]}. New reference. */
json_t *oai_models(const char *model, int64_t created, int64_t max_model_len);

/* Logprobs of generated tokens, one per position. */
typedef struct {
    const char *text;          /* the token as text (lossy for partial UTF-8) */
    size_t len;
    const uint8_t *bytes;      /* the token's raw bytes */
    size_t n_bytes;
    float logprob;
} oai_token_lp;

typedef struct {
    oai_token_lp tok;
    const oai_token_lp *top;   /* [n_top] */
    int n_top;
} oai_pos_lp;

/* Chat form: {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}],
 * "refusal": null}. */
json_t *oai_logprobs_chat(const oai_pos_lp *p, size_t n);
/* Completions form: {tokens, token_logprobs, top_logprobs: [{token: logprob}] (null when
 * n_top is 0), text_offset}: offsets in characters (code points, as Python counts them),
 * starting at *text_offset, which is advanced past the n tokens. */
json_t *oai_logprobs_completion(const oai_pos_lp *p, size_t n, size_t *text_offset);

/* Bytes of text (the whole decoded output so far) that may be shown: see above. */
size_t oai_visible_len(const char *text, size_t len, char *const *stop, int n_stop, bool final);

/* Growing strings for the split. */
typedef struct {
    char *s;
    size_t len, cap;
} oai_buf;
int oai_buf_put(oai_buf *b, const char *s, size_t n);   /* keeps s NUL-terminated; RT_ENOMEM */
void oai_buf_free(oai_buf *b);

typedef struct {
    int phase;                 /* 0 deciding, 1 reasoning, 2 content after </think>, 3 content only */
    size_t pos;                /* bytes of the text consumed */
    bool reasoning;            /* a reasoning block was opened */
    bool started;              /* content after </think> has begun */
} oai_split;

void oai_split_init(oai_split *s, bool opened);
/* text: the visible text so far (each call a prefix of the next); final: no more will come.
 * Appends what is now decided to reasoning and content. */
int oai_split_feed(oai_split *s, const char *text, size_t len, bool final, oai_buf *reasoning, oai_buf *content);

/* The start of an HTTP request in b[0:n] (before libmicrohttpd reads it): after any empty
 * lines, "METHOD SP TARGET SP HTTP/d.d" and CRLF (or LF), where METHOD is 1..32 token
 * characters (RFC 9110) and TARGET has no control bytes or spaces. 1: a complete, well-formed
 * request line; 0: a well-formed start of one (more bytes may complete it); -1: no request line
 * can start this way (a TLS handshake, a line without spaces, control bytes, a bad version). */
int oai_request_line(const char *b, size_t n);

#endif

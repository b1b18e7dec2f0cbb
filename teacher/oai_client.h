/* teacher/oai_client.h — client for OpenAI-compatible chat/completions endpoints: many
 * requests in flight over libcurl's multi interface, streaming (SSE) or plain JSON
 * responses, retries with exponential backoff and full jitter.
 *
 * Responses. oai_response holds what one completion returned: the answer text ("content"),
 * the reasoning ("reasoning_content", or vLLM's "reasoning"), finish_reason, the model the
 * server names, usage (prompt_tokens, completion_tokens, completion_tokens_details.
 * reasoning_tokens; -1 when absent) and logprobs.content (each chosen token's logprob and up
 * to OAI_MAX_TOP alternatives; a token spelled "token_id:N", vLLM's
 * return_tokens_as_token_ids form, gives id N, any other spelling id -1). oai_sse is the
 * incremental Server-Sent-Events parser: bytes may arrive split anywhere (lines end in LF,
 * CRLF or CR; "data:" lines of one event are joined with LF; comments and other fields are
 * ignored; an event is dispatched at its blank line). A stream is complete when the
 * "data: [DONE]" event arrived, or — for servers that never send it — once an event carried a
 * finish_reason: oai_sse_finish() on a stream with neither (a truncated stream) is
 * RT_EFORMAT. (A connection dropped mid-body is a transport error before that.) An event {"error": …} is RT_EIO. oai_parse_body() parses
 * a non-streaming response body.
 *
 * Text. oai_compose_text() turns (reasoning, content) into the one text retort stores:
 * reasoning R given separately or inline in content ("<think>R</think>A", the opening tag
 * optional: R1's template forces it into the prompt) both become
 * "<think>\n" + trim(R) + "\n</think>\n\n" + trim(A); without any closing tag, a response
 * that had reasoning (or think_prefix) is "<think>\n" + trim(R) (unfinished thinking), and
 * one without is the content unchanged.
 *
 * Client. oai_client_new() sets up the multi handle and copies the options.
 * oai_submit() queues a request body (JSON, copied) under the caller's tag; oai_poll() runs
 * transfers for up to max_wait seconds, keeps at most `concurrency` requests in flight, and
 * returns those that ended: succeeded (status 0, a complete response), or failed for good
 * (status RT_EIO, message in err). A failed attempt is retried when retryable — transport
 * errors and timeouts (each attempt has timeout_s), HTTP 408, 409, 429 and 5xx, a truncated
 * or malformed 200 response — after a delay drawn uniformly from [0, min(cap, base·2^attempt)]
 * (full jitter), or the server's Retry-After (seconds or an HTTP date) when that is longer,
 * up to max_retries retries. Other HTTP statuses (400, 401, 403, 404, …) are fatal: the
 * result has fatal = true and err names the status and the server's error message.
 * With stream set, a 200 response of Content-Type application/json (a server that ignores
 * "stream") is parsed as a plain body.
 * oai_abort_all() drops queued and in-flight requests (nothing is returned for them).
 * The client is used by one thread. Results are freed with oai_results_free().
 * oai_list_models() asks GET {base}/models for the first model id (*id malloc'd).
 * Errors: RT_EINVAL (bad options), RT_ENOMEM, RT_EINTERNAL (libcurl), RT_EIO, RT_EFORMAT.
 */
#ifndef RT_TEACHER_OAI_CLIENT_H
#define RT_TEACHER_OAI_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OAI_MAX_TOP 20

typedef struct {
    char *content, *reasoning;  /* NUL-terminated, malloc'd (never NULL after a parse) */
    size_t content_len, reasoning_len, content_cap, reasoning_cap;
    bool has_reasoning;         /* a reasoning field was present */
    char *finish_reason;        /* NULL when none was sent */
    char *model;                /* NULL when none was sent */
    int64_t prompt_tokens, completion_tokens, reasoning_tokens;   /* -1 when absent */
    size_t n_tokens, tok_cap;   /* logprob positions */
    float *logprobs;            /* [n_tokens] */
    int top_k;                  /* alternatives per position (the first position's count) */
    int32_t *top_ids;           /* [n_tokens, top_k]; -1 where unknown */
    float *top_logprobs;        /* [n_tokens, top_k]; -inf where missing */
    bool done;                  /* [DONE] seen / body parsed */
} oai_response;

void oai_response_init(oai_response *r);
void oai_response_free(oai_response *r);   /* frees members; NULL is fine */

typedef struct {
    oai_response *r;            /* borrowed; events are parsed into it */
    char *data;                 /* the current event's data lines */
    size_t data_len, data_cap;
    char *line;
    size_t line_len, line_cap;
    bool after_cr;              /* last byte was CR: a following LF belongs to it */
    bool has_data;
    int err;                    /* first error (sticky) */
} oai_sse;

void oai_sse_init(oai_sse *p, oai_response *r);
void oai_sse_free(oai_sse *p);
int oai_sse_feed(oai_sse *p, const char *buf, size_t n);
int oai_sse_finish(oai_sse *p);
int oai_parse_body(const char *body, size_t n, oai_response *r);

/* *out malloc'd; think_prefix: the prompt forced "<think>\n" (reasoning even without tags). */
int oai_compose_text(const char *reasoning, size_t rlen, bool has_reasoning, const char *content, size_t clen,
                     bool think_prefix, char **out, size_t *out_len);

typedef struct {
    const char *url;            /* base URL (…/v1; a bare http://host:port gets /v1) or the full
                                   …/chat/completions URL */
    const char *api_key;        /* NULL: no Authorization header */
    int concurrency;            /* requests in flight (0: 8) */
    double timeout_s;           /* per attempt (0: 600) */
    int max_retries;            /* retries after the first attempt (-1: 8) */
    double backoff_base_s;      /* 0: 0.5 */
    double backoff_cap_s;       /* 0: 60 */
    bool stream;                /* ask for SSE ("stream": true must be in the body too) */
    uint64_t jitter_seed;       /* the jitter's RNG seed */
} oai_opts;

typedef struct {
    uint64_t tag;
    int status;                 /* 0, or RT_EIO */
    bool fatal;                 /* a non-retryable failure (retrying cannot help) */
    char *err;                  /* malloc'd message when status != 0 */
    int attempts;
    long http_status;           /* of the last attempt; 0 when none */
    double latency_s;           /* of the last attempt */
    oai_response resp;
} oai_result;

typedef struct {
    size_t queued, in_flight, waiting;   /* waiting: retries sleeping out their backoff */
    size_t retries;                      /* failed attempts retried so far */
} oai_stats;

typedef struct oai_client oai_client;

int oai_client_new(const oai_opts *o, oai_client **out);
void oai_client_free(oai_client *c);     /* NULL is fine; drops what is pending */
int oai_submit(oai_client *c, const char *body, uint64_t tag);
int oai_poll(oai_client *c, double max_wait_s, oai_result **res, size_t *n_res);
size_t oai_pending(const oai_client *c);  /* queued + in flight + waiting */
void oai_stats_get(const oai_client *c, oai_stats *s);
void oai_abort_all(oai_client *c);
void oai_results_free(oai_result *r, size_t n);

int oai_list_models(const oai_opts *o, char **id);

/* The delay before retry `attempt` (0-based) given u in [0, 1) and a Retry-After of
 * retry_after_s seconds (< 0: none). */
double oai_backoff_s(const oai_opts *o, int attempt, double u, double retry_after_s);
/* Parses a Retry-After value (delta seconds or an IMF-fixdate) at time now (Unix seconds);
 * returns seconds (≥ 0) or -1 when unparsable. */
double oai_retry_after_parse(const char *v, double now);

#endif

/* teacher/server_queue.h — the job queue and the engine thread of `retort serve`
 * (teacher/server.h); no sockets, no HTTP.
 *
 * A job is one generation request: its prompts (token ids) × n samples = its choices. The HTTP
 * layer (teacher/server_http.c) makes one (sq_job_new), fills it from the parsed request
 * (sq_job_prepare: the chat template or the tokenizer, the context and cache checks) and hands
 * it over (sq_enqueue). ONE engine thread owns the te_engine made from the model: it takes the
 * handed-over jobs (te_submit, or with the step in lockstep: pe_step), steps the engine, appends
 * every token to its choice from the engine's on_token callback and marks choices done from
 * the results. A cancelled job (sq_cancel: the client went away) is dropped from the engine at
 * its next turn and its cache blocks freed.
 *
 * Locking: the queue's state and every job field marked "engine side" below are guarded by
 * one mutex (sq_lock / sq_unlock); the functions marked "locked" expect it held. Whenever a job
 * changes in a way its connection waits for — taken by the engine, refused, failed, finished,
 * a choice done, or (streamed) new tokens, once per step rather than once per token — the
 * engine thread calls opts.notify(opts.notify_user, job) with the mutex held; notify must not
 * block (the HTTP layer resumes the job's parked connection there).
 *
 * Ownership: a job is reference-counted (the connection's reference from sq_job_new, the
 * engine's from sq_enqueue, a streamed response's taken by the HTTP layer with refs++ under the
 * lock); sq_job_unref frees it with the last one, the connection-side buffers included.
 *
 * Lockstep (opts.comm of more than one rank): as teacher/server.h says; a failed pe_step calls
 * opts.on_comm_failure, then every job fails and the engine steps no more.
 *
 * sq_start() creates the engine (te_engine_create with opts.engine) and starts the engine
 * thread; it borrows m and tok (they must outlive the queue). sq_drain() refuses new jobs
 * (sq_enqueue returns RT_EINVAL) and waits until every job handed over has been let go by its
 * connection (sq_job_release); sq_stop() then ends the engine thread (after the engine runs
 * dry), ends lockstep followers and frees everything. NULL is fine.
 * Errors: te_engine_create's, RT_EINVAL (a lockstep engine without on_comm_failure),
 * RT_ENOMEM, RT_EINTERNAL (pthreads).
 */
#ifndef RT_TEACHER_SERVER_QUEUE_H
#define RT_TEACHER_SERVER_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/chat_template.h"
#include "core/comm.h"
#include "core/tokenizer.h"
#include "teacher/engine.h"
#include "teacher/oai.h"

typedef struct sq sq;   /* opaque; owned by the caller of sq_start */

enum { SQ_HANDED = 0, SQ_RUNNING, SQ_REFUSED, SQ_FINISHED };   /* sq_job.state */

typedef struct {
    /* engine side */
    int32_t *ids;
    float *lp, *top_lp;             /* [cap], [cap * top_k] */
    int32_t *top_ids;
    int64_t n, cap;
    bool done;
    te_finish finish;
    /* connection side (streaming), touched by the connection's thread only */
    int64_t sent;                   /* tokens covered by chunks already built */
    size_t shown, lp_offset;        /* completion text bytes sent; text offset of the next logprob */
    oai_buf text;                   /* decoded text of ids[0:sent] */
    int64_t dec_ids;                /* text[0:dec_len] is the decoding of ids[0:dec_ids] and ends on */
    size_t dec_len, vis;            /* a whole character; vis: bytes of text visible so far */
    oai_split split;
    bool final_sent;
} sq_choice;

typedef struct sq_job {
    sq *q;
    int refs;                       /* connection + engine (+ a streamed response) */
    oai_request rq;
    int32_t **prompt;               /* [n_prompts][prompt_n[i]] */
    size_t *prompt_n;
    size_t n_prompts;
    int64_t prompt_tokens, max_tokens;
    int32_t turn_end;               /* the template's end-of-turn id, -1 none */
    bool opened;                    /* the generation prompt opened <think> */
    uint64_t seed, tag0;
    int n_choices;
    sq_choice *ch;                  /* [n_prompts * rq.n], prompt-major */
    char id[48];                    /* set by sq_enqueue ("" before) */
    int64_t created;
    /* engine side */
    int n_done;
    int state;                      /* SQ_HANDED … SQ_FINISHED */
    bool cancelled, in_engine, dirty;
    char error[512];                /* state SQ_REFUSED: why */
    struct sq_job *next;
    /* connection side: the HTTP layer's (parking under the lock) */
    void *http;                     /* the HTTP layer serving it */
    void *conn;                     /* its connection; NULL once its request has completed */
    int fd;                         /* conn's socket */
    bool parked, gone;              /* conn suspended, waiting for news; the client hung up */
    struct sq_job *park_prev, *park_next;
    oai_buf out;                    /* SSE bytes built, not yet sent */
    size_t out_pos;
    bool head_sent, stream_done;
} sq_job;

typedef struct {
    te_opts engine;           /* tok, on_token and user are set here */
    bool have_template;       /* false: chat jobs are refused (sq_job_prepare) */
    const ct_template *tmpl;  /* borrowed */
    rt_comm *comm;            /* NULL or one rank: the engine alone; more: rank 0 in lockstep */
    void (*on_comm_failure)(void *user, const char *msg);
    void *comm_user;
    void (*notify)(void *user, sq_job *j);   /* j changed (locked, on the engine thread) */
    void *notify_user;
} sq_opts;

int sq_start(te_model *m, const tok_tokenizer *tok, const sq_opts *opts, sq **out);
void sq_drain(sq *q);
void sq_stop(sq *q);

void sq_lock(sq *q);
void sq_unlock(sq *q);

/* A new job holding the connection's reference (NULL: no memory). */
sq_job *sq_job_new(sq *q);
/* Token prompts, max_tokens and choices of j from j->rq (already parsed). RT_EINVAL with a
 * client-facing message in msg[cap] and the parameter it concerns in *param (NULL: none);
 * RT_ENOMEM. Not locked. */
int sq_job_prepare(sq *q, sq_job *j, char *msg, size_t cap, const char **param);
/* Hands j to the engine thread: gives it an id ("chatcmpl-…" / "cmpl-…"), a seed when the
 * request has none, and the engine's reference. RT_EINVAL once the queue drains. Not locked. */
int sq_enqueue(sq *q, sq_job *j);
/* The engine drops j at its next turn (locked; a job that has ended is left alone). */
void sq_cancel(sq_job *j);
/* The connection lets go of j (locked): a job still running is cancelled. */
void sq_job_release(sq_job *j);
void sq_job_unref(sq_job *j);                  /* locked; NULL is fine */
int64_t sq_completion_tokens(const sq_job *j); /* tokens generated over all choices (locked) */

/* The numbers /metrics reports (locked). */
typedef struct {
    te_stats st;
    int64_t queued;           /* the engine's queue and the jobs not yet taken */
    int in_flight;            /* jobs handed over and not yet released */
    double tps;               /* generated tokens per second over the last second or more */
} sq_metrics;
void sq_metrics_get(const sq *q, sq_metrics *out);

int64_t sq_context(const sq *q);   /* the model's context length (max_position_embeddings) */

#endif

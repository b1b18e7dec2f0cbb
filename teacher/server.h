/* teacher/server.h — `retort serve`: the OpenAI-compatible HTTP service over the engine.
 *
 * srv_start() binds host:port (port 0: a free one, see srv_port) and starts three kinds of
 * threads: a gate thread that accepts connections, a small pool of libmicrohttpd event-loop
 * threads (epoll) that serve them, and ONE engine thread that owns a te_engine made from `m`
 * and runs te_step. Requests are handed to the engine thread through a mutex/condvar queue;
 * tokens come back through the engine's per-token callback. No event-loop thread ever blocks
 * on the engine: a connection waiting for tokens (a streamed or a whole answer) is suspended
 * and resumed when its request changes, so thousands of slow streams cost no threads. It
 * borrows m and tok (both must outlive the server) and copies the strings in opts.
 *
 * Connections: at most max_connections open at once and max_connections_per_ip from one
 * address (more are answered 503 / 429 and closed). A connection must deliver each request
 * head (request line and headers) within header_timeout seconds — from accept for its first
 * request, from the end of the previous response for the next (so an idle kept-alive connection
 * closes after header_timeout too); a late one is closed (408 while still at the request line).
 * A malformed request line gets 400 and is closed as soon as its first bad byte arrives (the
 * gate checks the line before libmicrohttpd sees it).
 *
 * Endpoints: POST /v1/chat/completions and /v1/completions (teacher/oai.h: the wire format,
 * streaming as SSE), GET /v1/models, /health, /metrics (Prometheus text). With an API
 * key, every /v1/ path needs "Authorization: Bearer KEY" (else 401); /health and /metrics stay open.
 * A body over max_body bytes gets 413 (from Content-Length before reading; a chunked body as
 * soon as the bytes received pass the limit, and the connection is closed without reading the
 * rest), a malformed or invalid one 400 with an OpenAI error object; an unknown path 404, a
 * wrong method 405. A client that disconnects (the socket hangs up while it waits, or a write
 * fails) cancels its request: te_cancel frees its cache blocks.
 *
 * srv_stop() stops accepting (the listening socket is closed), answers new requests on open
 * connections with 503, lets every request in flight finish and be sent, then stops the
 * engine thread and frees everything. NULL is fine.
 *
 * Lockstep (`retort serve` under mpirun, teacher/parallel_engine.h): with opts.comm of more
 * than one rank, m is rank 0's part of a parallel model (te_model_load_comm) and the engine
 * thread steps through pe_step, carrying the requests and cancellations of each step; every
 * other rank makes its engine with te_engine_create(its m, opts.engine with .tok = tok — the
 * same options, on_token may stay NULL) and calls pe_follow(). Once the engine thread has
 * drained (srv_stop), it ends the followers (pe_end). When pe_step fails, a follower may be
 * waiting in a collective: the engine thread calls opts.on_comm_failure(comm_user, message)
 * (required with comm; the CLI ends the job there) and, should it return, fails every
 * request and steps no more.
 * Errors: RT_EIO (cannot listen: the message names host:port and why), RT_EINVAL (an empty
 * api_key, a lockstep engine without on_comm_failure), RT_ENOMEM,
 * RT_EINTERNAL (libmicrohttpd or pthreads failed).
 */
#ifndef RT_TEACHER_SERVER_H
#define RT_TEACHER_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "core/chat_template.h"
#include "core/comm.h"
#include "core/tokenizer.h"
#include "teacher/engine.h"

typedef struct srv srv;   /* opaque; owned by the caller of srv_start */

typedef struct {
    const char *host;         /* NULL: 127.0.0.1 */
    int port;                 /* 0: any free port */
    const char *api_key;      /* NULL: no authentication; "" is RT_EINVAL */
    const char *model_name;   /* the id /v1/models reports and responses carry */
    size_t max_body;          /* bytes (0: 4 MiB) */
    int max_connections;      /* open connections in all (0: 4096); needs as many descriptors */
    int max_connections_per_ip;   /* from one client address (0: 512) */
    double header_timeout;    /* seconds to deliver a request head (0: 10) */
    int http_threads;         /* libmicrohttpd event-loop threads (0: 4) */
    bool have_template;       /* false: chat requests get 400 */
    const ct_template *tmpl;  /* borrowed */
    te_opts engine;           /* max_batch, cache_tokens, …; tok, on_token and user are set here */
    rt_comm *comm;            /* NULL or one rank: the engine alone; more: rank 0 in lockstep */
    void (*on_comm_failure)(void *user, const char *msg);
    void *comm_user;
} srv_opts;

int srv_start(te_model *m, const tok_tokenizer *tok, const srv_opts *opts, srv **out);
int srv_port(const srv *s);
void srv_stop(srv *s);

#endif

/* teacher/server_http.h — the HTTP layer of `retort serve` (teacher/server.h): libmicrohttpd's
 * event-loop threads behind the connection gate (teacher/server_gate.h), routing, API-key
 * checks, body limits, the answers of /v1/models, /health and /metrics, and the generation
 * endpoints: a request body is parsed (teacher/oai.h), made into a job and handed to the queue
 * (teacher/server_queue.h); its answer, whole or streamed as SSE, is built by
 * teacher/server_reply.h. No event-loop thread ever waits on the engine: a connection whose
 * job has nothing new is suspended ("parked") and resumed by sh_notify, which the queue calls
 * when the job changes; the gate's 100 ms sweep polls parked sockets for a hang-up (libmicrohttpd
 * does not watch suspended sockets) and cancels their jobs.
 *
 * Lock order: the queue's lock, then libmicrohttpd's own (suspend/resume run under it); the
 * parked list and the request counters are under the queue's lock too.
 *
 * Life: sh_create() copies the strings of opts and starts nothing (so sh_notify can be given to
 * sq_start); sh_start() listens, starts libmicrohttpd and the gate over q (which must outlive
 * the layer's threads). sh_close_listener() stops new connections; new requests on open ones
 * get 503 from the queue's drain on. sh_stop() (after sq_drain) ends the gate, resumes what is
 * still parked and stops libmicrohttpd; sh_free() frees the rest (after sq_stop: the engine
 * thread may call sh_notify until then). NULL is fine for all.
 * Errors: gate_listen's and gate_start's, RT_ENOMEM, RT_EINTERNAL (libmicrohttpd did not start).
 */
#ifndef RT_TEACHER_SERVER_HTTP_H
#define RT_TEACHER_SERVER_HTTP_H

#include "core/tokenizer.h"
#include "teacher/server.h"
#include "teacher/server_queue.h"

typedef struct sh sh;   /* opaque; owned by the caller of sh_create */

int sh_create(const tok_tokenizer *tok, const srv_opts *opts, sh **out);
int sh_start(sh *h, sq *q);
int sh_port(const sh *h);
void sh_notify(void *h, sq_job *j);   /* sq_opts.notify */
void sh_close_listener(sh *h);
void sh_stop(sh *h);
void sh_free(sh *h);

#endif

/* teacher/server.c — the HTTP service (see server.h): the wiring of its three parts.
 *
 *   teacher/server_gate.h    the listening socket, connection limits, request-line check,
 *                            header deadlines (the gate thread)
 *   teacher/server_http.h    libmicrohttpd's event-loop threads: routing, auth, limits,
 *                            /v1/models, /health, /metrics, parking and SSE streaming
 *   teacher/server_queue.h   the job queue and the ONE engine thread (batching, cancellation,
 *                            the engine's counters)
 *   teacher/server_reply.h   the bodies of answers, in teacher/oai.h's shapes
 *
 * Dependencies go one way: server → server_http → server_gate, server_reply → server_queue →
 * engine (teacher/engine.h, teacher/parallel_engine.h); oai.h below them all. The queue tells
 * the HTTP layer of a job's news through sq_opts.notify (sh_notify), not by calling it.
 */
#include "teacher/server.h"

#include "core/alloc.h"
#include "core/status.h"
#include "teacher/server_http.h"
#include "teacher/server_queue.h"

struct srv {
    sq *q;
    sh *h;
    bool serving;   /* sh_start succeeded */
};

int srv_start(te_model *m, const tok_tokenizer *tok, const srv_opts *opts, srv **out) {
    *out = NULL;
    if (opts->api_key && !*opts->api_key) return rt_fail(RT_EINVAL, "serve: an empty API key (NULL: no authentication)");
    srv *s = rt_calloc(1, sizeof *s);
    if (!s) return RT_ENOMEM;
    int rc = sh_create(tok, opts, &s->h);
    if (!rc) {
        sq_opts qo = {.engine = opts->engine, .have_template = opts->have_template, .tmpl = opts->tmpl,
                      .comm = opts->comm, .on_comm_failure = opts->on_comm_failure, .comm_user = opts->comm_user,
                      .notify = sh_notify, .notify_user = s->h};
        rc = sq_start(m, tok, &qo, &s->q);
    }
    if (!rc) rc = sh_start(s->h, s->q);
    if (!rc) s->serving = true;
    if (rc) {
        srv_stop(s);
        return rc;
    }
    *out = s;
    return 0;
}

int srv_port(const srv *s) { return sh_port(s->h); }

void srv_stop(srv *s) {
    if (!s) return;
    sh_close_listener(s->h);   /* no new connections */
    if (s->serving) sq_drain(s->q);   /* the requests in flight finish (hang-ups still cancel) */
    sh_stop(s->h);             /* the gate, then libmicrohttpd */
    sq_stop(s->q);             /* the engine thread, after its last notify */
    sh_free(s->h);
    free(s);
}

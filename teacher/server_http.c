/* teacher/server_http.c — the HTTP layer of `retort serve` (see server_http.h). */
#include "teacher/server_http.h"

#include <microhttpd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/status.h"
#include "teacher/oai.h"
#include "teacher/server_gate.h"
#include "teacher/server_reply.h"

enum { EP_CHAT, EP_COMPLETIONS, EP_MODELS, EP_HEALTH, EP_METRICS, EP_OTHER, EP_COUNT };
static const char *const EP_NAME[EP_COUNT] = {"chat_completions", "completions", "models", "health", "metrics", "other"};

struct sh {
    sq *q;
    const tok_tokenizer *tok;
    char *host, *api_key, *model_name;
    int port_wanted, port;
    size_t max_body;
    unsigned http_threads;
    gate_opts go;
    int64_t started;
    struct MHD_Daemon *d;
    gate *g;
    sq_job *parked;                 /* parked jobs, for the hang-up sweep (queue's lock) */
    int64_t requests[EP_COUNT], errors;   /* (queue's lock) */
    struct pollfd *pf;              /* the sweep's (gate thread) */
    size_t cap_pf;
};

typedef struct {
    int ep;
    oai_buf body;
    sq_job *j;
} conn_ctx;

/* ---- parking --------------------------------------------------------------------------- */

/* Parks j's connection until the job changes (locked, on the connection's event-loop thread,
 * from the access handler or the content reader). */
static void job_park(sq_job *j) {
    sh *h = j->http;
    j->parked = true;
    j->park_prev = NULL;
    j->park_next = h->parked;
    if (h->parked) h->parked->park_prev = j;
    h->parked = j;
    MHD_suspend_connection(j->conn);
}

/* Resumes j's connection if it is parked (locked, any thread). */
void sh_notify(void *hv, sq_job *j) {
    sh *h = hv;
    if (!j->parked) return;
    j->parked = false;
    if (j->park_prev) j->park_prev->park_next = j->park_next;
    else h->parked = j->park_next;
    if (j->park_next) j->park_next->park_prev = j->park_prev;
    j->park_prev = j->park_next = NULL;
    if (j->conn) MHD_resume_connection(j->conn);
}

/* The gate's sweep (every 100 ms): parked connections whose client hung up. */
static void sweep_parked(void *hv) {
    sh *h = hv;
    sq_lock(h->q);
    size_t n = 0;
    for (sq_job *j = h->parked; j; j = j->park_next) n++;
    if (n && !rt_grow((void **)&h->pf, &h->cap_pf, n, sizeof *h->pf)) {
        n = 0;
        for (sq_job *j = h->parked; j; j = j->park_next) h->pf[n++] = (struct pollfd){.fd = j->fd, .events = POLLRDHUP};
        if (poll(h->pf, n, 0) > 0) {
            sq_job *jn;
            size_t i = 0;
            for (sq_job *j = h->parked; j; j = jn, i++) {
                jn = j->park_next;
                if (h->pf[i].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) {
                    j->gone = true;
                    sq_cancel(j);
                    sh_notify(h, j);
                }
            }
        }
    }
    sq_unlock(h->q);
}

/* ---- responses ------------------------------------------------------------------------- */

static enum MHD_Result send_body(sh *h, struct MHD_Connection *c, int ep, unsigned status, const char *ctype,
                                 char *body /* malloc'd, taken */) {
    if (!body) {
        status = 500;
        body = rt_strdup("{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
        if (!body) return MHD_NO;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (status == 401) MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    sq_lock(h->q);
    h->requests[ep]++;
    if (status >= 400) h->errors++;
    sq_unlock(h->q);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(sh *h, struct MHD_Connection *c, int ep, unsigned status, json_t *j) {
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return send_body(h, c, ep, status, "application/json", body);
}

static enum MHD_Result send_error(sh *h, struct MHD_Connection *c, int ep, unsigned status, const char *msg,
                                  const char *param, const char *code) {
    return send_body(h, c, ep, status, "application/json", oai_error_json((int)status, msg, param, code));
}

/* A 413 (or other error) while libmicrohttpd is still receiving the body: it cannot queue a
 * response then, so it is written to the socket, and the handler's MHD_NO closes it. */
static void send_raw_error(sh *h, struct MHD_Connection *conn, int ep, unsigned status, const char *msg) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) {
        gate_write_error(ci->connect_fd, status, msg);
        shutdown(ci->connect_fd, SHUT_WR);
    }
    sq_lock(h->q);
    h->requests[ep]++;
    h->errors++;
    sq_unlock(h->q);
}

/* ---- streaming ------------------------------------------------------------------------- */

/* libmicrohttpd's content reader for a stream, on the connection's event-loop thread: never
 * waits. With nothing to send it parks the connection and returns 0; the engine thread resumes
 * it when the job changes, and libmicrohttpd calls again. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    sq_job *j = cls;
    sh *h = j->http;
    for (;;) {
        if (j->out_pos < j->out.len) {
            size_t n = j->out.len - j->out_pos < max ? j->out.len - j->out_pos : max;
            memcpy(buf, j->out.s + j->out_pos, n);
            j->out_pos += n;
            if (j->out_pos == j->out.len) j->out_pos = j->out.len = 0;
            return (ssize_t)n;
        }
        if (j->stream_done) return MHD_CONTENT_READER_END_OF_STREAM;
        int rc = sr_stream_produce(h->tok, h->model_name, j);
        if (rc > 0) continue;
        sq_lock(h->q);
        bool news = false;
        for (int i = 0; i < j->n_choices && !news; i++)
            news = !j->ch[i].final_sent && (j->ch[i].n > j->ch[i].sent || j->ch[i].done);
        if (rc < 0 || j->state == SQ_REFUSED || j->gone) {
            sq_cancel(j);
            sq_unlock(h->q);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (!news) {
            job_park(j);
            sq_unlock(h->q);
            return 0;
        }
        sq_unlock(h->q);
    }
}

static void stream_free(void *cls) {
    sq_job *j = cls;
    sq *q = j->q;
    sq_lock(q);
    sq_job_unref(j);
    sq_unlock(q);
}

/* ---- generation requests --------------------------------------------------------------- */

/* The answer of a job that left the waiting states (or a park while it has not). */
static enum MHD_Result generate_answer(sh *h, struct MHD_Connection *conn, conn_ctx *cx) {
    int ep = cx->ep;
    sq_job *j = cx->j;
    sq_lock(h->q);
    if (j->gone) {
        sq_unlock(h->q);
        return MHD_NO;   /* the client hung up: closes the connection */
    }
    if (j->state == SQ_HANDED || (!j->rq.stream && j->state == SQ_RUNNING)) {   /* the engine resumes it */
        job_park(j);
        sq_unlock(h->q);
        return MHD_YES;
    }
    int state = j->state;
    sq_unlock(h->q);
    if (state == SQ_REFUSED) {
        bool server_side = !strncmp(j->error, "the engine failed", 17) || !strcmp(j->error, "out of memory");
        return send_error(h, conn, ep, server_side ? 500 : 400, j->error, NULL, NULL);
    }
    if (!j->rq.stream) return send_json(h, conn, ep, 200, sr_full_response(h->tok, h->model_name, j));
    sq_lock(h->q);
    j->refs++;   /* the response's */
    sq_unlock(h->q);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, j, stream_free);
    if (!r) {
        stream_free(j);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    sq_lock(h->q);
    h->requests[ep]++;
    sq_unlock(h->q);
    enum MHD_Result ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handle_generate(sh *h, struct MHD_Connection *conn, conn_ctx *cx) {
    int ep = cx->ep;
    sq_job *j = sq_job_new(h->q);
    if (!j) return send_error(h, conn, ep, 500, "out of memory", NULL, NULL);
    j->http = h;
    j->conn = conn;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    j->fd = ci ? ci->connect_fd : -1;
    cx->j = j;
    oai_error err;
    int rc = oai_parse_request(cx->body.s ? cx->body.s : "", cx->body.len, ep == EP_CHAT ? OAI_CHAT : OAI_COMPLETION,
                               &j->rq, &err);
    if (rc) return send_error(h, conn, ep, (unsigned)err.status, err.message, err.param, NULL);
    char msg[600];
    const char *param;
    rc = sq_job_prepare(h->q, j, msg, sizeof msg, &param);
    if (rc == RT_ENOMEM) return send_error(h, conn, ep, 500, "out of memory", NULL, NULL);
    if (rc) return send_error(h, conn, ep, 400, msg, param, NULL);
    if (sq_enqueue(h->q, j)) return send_error(h, conn, ep, 503, "the server is shutting down", NULL, NULL);
    /* wait (parked) for the engine to take it, and, without streaming, to finish it */
    return generate_answer(h, conn, cx);
}

/* ---- other endpoints ------------------------------------------------------------------- */

static enum MHD_Result handle_metrics(sh *h, struct MHD_Connection *conn) {
    oai_buf b = {0};
    char line[256];
    sq_metrics qm;
    int64_t req[EP_COUNT];
    sq_lock(h->q);
    sq_metrics_get(h->q, &qm);
    memcpy(req, h->requests, sizeof req);
    int64_t errors = h->errors;
    sq_unlock(h->q);
    gate_counts gc;
    gate_counts_get(h->g, &gc);
    te_stats st = qm.st;
    static const char head[] = "# HELP retort_requests_total HTTP requests answered, by endpoint.\n"
                               "# TYPE retort_requests_total counter\n";
    oai_buf_put(&b, head, sizeof head - 1);
    for (int i = 0; i < EP_COUNT; i++) {
        snprintf(line, sizeof line, "retort_requests_total{endpoint=\"%s\"} %lld\n", EP_NAME[i], (long long)req[i]);
        oai_buf_put(&b, line, strlen(line));
    }
    struct {
        const char *name, *type, *help;
        double v;
    } g[] = {
        {"retort_request_errors_total", "counter", "HTTP requests answered with a 4xx or 5xx status.", (double)errors},
        {"retort_requests_in_flight", "gauge", "Generation requests accepted and not yet answered in full.", qm.in_flight},
        {"retort_queue_depth", "gauge", "Generation requests waiting for room in the engine's batch or cache.",
         (double)qm.queued},
        {"retort_running_sequences", "gauge", "Sequences in the engine's running batch.", st.running},
        {"retort_prompt_tokens_total", "counter", "Prompt tokens run through the model.", (double)st.prompt_tokens},
        {"retort_generation_tokens_total", "counter", "Tokens generated.", (double)st.generated_tokens},
        {"retort_generation_tokens_per_second", "gauge", "Tokens generated per second over the last second or more.",
         qm.tps},
        {"retort_engine_steps_total", "counter", "Engine steps (batched forwards).", (double)st.steps},
        {"retort_cache_blocks_in_use", "gauge", "KV-cache blocks holding positions.", (double)st.blocks_in_use},
        {"retort_cache_blocks_reserved", "gauge", "KV-cache blocks reserved by running requests.",
         (double)st.blocks_reserved},
        {"retort_cache_blocks_total", "gauge", "KV-cache blocks in all.", (double)st.blocks_total},
        {"retort_connections_open", "gauge", "Client connections open (waiting for a request head, busy or idle).",
         (double)gc.open},
        {"retort_connections_refused_total", "counter", "Connections refused at accept: over --max-connections.",
         (double)gc.refused_limit},
        {"retort_connections_refused_per_ip_total", "counter", "Connections refused at accept: over --max-connections-per-ip.",
         (double)gc.refused_per_ip},
        {"retort_header_timeouts_total", "counter", "Connections closed because a request head was late (--header-timeout).",
         (double)gc.header_timeouts},
        {"retort_bad_request_lines_total", "counter", "Connections answered 400 and closed for a malformed request line.",
         (double)gc.bad_lines},
    };
    for (size_t i = 0; i < sizeof g / sizeof *g; i++) {
        snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", g[i].name, g[i].help, g[i].name, g[i].type,
                 g[i].name, g[i].v);
        oai_buf_put(&b, line, strlen(line));
    }
    return send_body(h, conn, EP_METRICS, 200, "text/plain; version=0.0.4; charset=utf-8", b.s);
}

static bool auth_ok(const sh *h, struct MHD_Connection *conn) {
    if (!h->api_key) return true;
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!v || strncasecmp(v, "Bearer ", 7)) return false;
    v += 7;
    while (*v == ' ') v++;
    size_t a = strlen(v), b = strlen(h->api_key);
    unsigned char diff = a != b;
    for (size_t i = 0; i < a; i++) diff |= (unsigned char)(v[i] ^ h->api_key[i % (b ? b : 1)]);
    return diff == 0;
}

static void *socket_record(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* A new request head: routed, checked, and answered at once unless it generates. */
static enum MHD_Result on_request_head(sh *h, struct MHD_Connection *conn, const char *url, const char *method,
                                       conn_ctx *cx) {
    cx->ep = !strcmp(url, "/v1/chat/completions") ? EP_CHAT
             : !strcmp(url, "/v1/completions")    ? EP_COMPLETIONS
             : !strcmp(url, "/v1/models")         ? EP_MODELS
             : !strcmp(url, "/health")            ? EP_HEALTH
             : !strcmp(url, "/metrics")           ? EP_METRICS
                                                  : EP_OTHER;
    bool post = !strcmp(method, "POST"), get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (cx->ep == EP_OTHER) {
        char m[300];
        snprintf(m, sizeof m, "no such endpoint: %s %.200s", method, url);
        return send_error(h, conn, EP_OTHER, 404, m, NULL, NULL);
    }
    if (!strncmp(url, "/v1/", 4) && !auth_ok(h, conn))
        return send_error(h, conn, cx->ep, 401, "missing or incorrect API key (Authorization: Bearer KEY)", NULL,
                          "invalid_api_key");
    bool gen = cx->ep == EP_CHAT || cx->ep == EP_COMPLETIONS;
    if ((gen && !post) || (!gen && !get)) {
        char m[128];
        snprintf(m, sizeof m, "%s is not allowed here (use %s)", method, gen ? "POST" : "GET");
        return send_error(h, conn, cx->ep, 405, m, NULL, NULL);
    }
    if (cx->ep == EP_MODELS)
        return send_json(h, conn, EP_MODELS, 200, oai_models(h->model_name, h->started, sq_context(h->q)));
    if (cx->ep == EP_HEALTH) return send_body(h, conn, EP_HEALTH, 200, "application/json", rt_strdup("{\"status\":\"ok\"}"));
    if (cx->ep == EP_METRICS) return handle_metrics(h, conn);
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > h->max_body) {
        char m[128];
        snprintf(m, sizeof m, "the request body is over the limit of %zu bytes", h->max_body);
        return send_error(h, conn, cx->ep, 413, m, NULL, NULL);
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    sh *h = cls;
    conn_ctx *cx = *con_cls;
    if (!cx) {   /* the request head is in: its deadline is met */
        gate_head_received(h->g, socket_record(conn));
        if (!(cx = rt_calloc(1, sizeof *cx))) return MHD_NO;
        *con_cls = cx;
        return on_request_head(h, conn, url, method, cx);
    }
    if (*upload_size) {
        if (cx->body.len + *upload_size > h->max_body) {   /* (chunked) answered now, the rest unread */
            char m[128];
            snprintf(m, sizeof m, "the request body is over the limit of %zu bytes", h->max_body);
            send_raw_error(h, conn, cx->ep, 413, m);
            return MHD_NO;   /* closes the connection */
        }
        if (oai_buf_put(&cx->body, upload, *upload_size)) return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    if (cx->ep != EP_CHAT && cx->ep != EP_COMPLETIONS) return MHD_YES;   /* already answered */
    if (cx->j) return generate_answer(h, conn, cx);   /* resumed */
    return handle_generate(h, conn, cx);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
    sh *h = cls;
    conn_ctx *cx = *con_cls;
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) gate_request_done(h->g, socket_record(conn));   /* the next one's */
    if (!cx) return;
    *con_cls = NULL;
    if (cx->j) {
        sq_job *j = cx->j;
        sq_lock(h->q);
        j->conn = NULL;
        sh_notify(h, j);   /* never parked here; for safety */
        sq_job_release(j);
        sq_unlock(h->q);
    }
    oai_buf_free(&cx->body);
    free(cx);
}

/* libmicrohttpd took a connection over (its socket context is the gate's record) or closed it;
 * CLOSED comes before it closes the socket, so a record's fd is always still open. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context, enum MHD_ConnectionNotificationCode code) {
    sh *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        *socket_context = gate_conn_started(h->g, ci ? ci->connect_fd : -1);
    } else if (*socket_context) {
        gate_conn_closed(h->g, *socket_context);
        *socket_context = NULL;
    }
}

static int hand_over(void *hv, int fd, const struct sockaddr *addr, socklen_t addr_len) {
    sh *h = hv;
    return MHD_add_connection(h->d, fd, addr, addr_len) != MHD_YES;
}

/* ---- start and stop -------------------------------------------------------------------- */

int sh_create(const tok_tokenizer *tok, const srv_opts *opts, sh **out) {
    *out = NULL;
    sh *h = rt_calloc(1, sizeof *h);
    if (!h) return RT_ENOMEM;
    h->tok = tok;
    h->port_wanted = opts->port;
    h->max_body = opts->max_body ? opts->max_body : 4u << 20;
    h->http_threads = opts->http_threads > 0 ? (unsigned)opts->http_threads : 4;
    h->go = (gate_opts){.max_conns = opts->max_connections > 0 ? opts->max_connections : 4096,
                        .max_per_ip = opts->max_connections_per_ip > 0 ? opts->max_connections_per_ip : 512,
                        .header_timeout = opts->header_timeout > 0 ? opts->header_timeout : 10,
                        .hand_over = hand_over, .sweep = sweep_parked, .user = h};
    h->started = (int64_t)time(NULL);
    h->host = rt_strdup(opts->host ? opts->host : "127.0.0.1");
    h->model_name = rt_strdup(opts->model_name ? opts->model_name : "retort");
    h->api_key = opts->api_key && *opts->api_key ? rt_strdup(opts->api_key) : NULL;
    if (!h->host || !h->model_name || (opts->api_key && *opts->api_key && !h->api_key)) {
        sh_free(h);
        return RT_ENOMEM;
    }
    *out = h;
    return 0;
}

int sh_start(sh *h, sq *q) {
    h->q = q;
    int fd;
    int rc = gate_listen(h->host, h->port_wanted, &fd, &h->port);
    if (rc) return rc;
    /* connections come from the gate (MHD_add_connection); the limit is a backstop */
    unsigned limit = (unsigned)h->go.max_conns + 64 + 2 * h->http_threads;
    h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                                MHD_USE_NO_LISTEN_SOCKET,
                            0, NULL, NULL, on_request, h, MHD_OPTION_THREAD_POOL_SIZE, h->http_threads,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
                            MHD_OPTION_CONNECTION_TIMEOUT, 300u, MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_END);
    if (!h->d) {
        close(fd);
        return rt_fail(RT_EINTERNAL, "libmicrohttpd did not start on %s:%d", h->host, h->port);
    }
    return gate_start(fd, &h->go, &h->g);
}

int sh_port(const sh *h) { return h->port; }

void sh_close_listener(sh *h) {
    if (h) gate_close_listener(h->g);
}

void sh_stop(sh *h) {
    if (!h) return;
    gate_stop(h->g);
    if (h->d) {
        sq_lock(h->q);   /* none should be parked now; libmicrohttpd must not stop with one */
        while (h->parked) {
            h->parked->gone = true;
            sh_notify(h, h->parked);
        }
        sq_unlock(h->q);
        MHD_stop_daemon(h->d);
        h->d = NULL;
    }
}

void sh_free(sh *h) {
    if (!h) return;
    sh_stop(h);
    gate_free(h->g);
    free(h->pf);
    free(h->host);
    free(h->model_name);
    free(h->api_key);
    free(h);
}

/* teacher/server.c — the HTTP service (see server.h).
 *
 * Threads: a GATE thread owns the listening socket: it accepts, applies the connection limits
 * (total, per IP), and watches each new connection (epoll, edge-triggered, reading with
 * MSG_PEEK so nothing is consumed) until its request line is complete: a malformed one gets
 * 400 and is closed at once, a complete one is handed to libmicrohttpd (MHD_add_connection).
 * libmicrohttpd runs a small pool of event-loop threads (epoll); they parse requests, render
 * and tokenize prompts, and hand jobs to ONE engine thread (s->pending, s->wake). The engine
 * thread submits them (te_submit), steps the engine, and appends every token to the job's
 * choices from the engine's on_token callback; results mark choices done. No event-loop
 * thread ever waits: a connection whose job has nothing new is suspended
 * (MHD_suspend_connection, "parked"), and the engine thread resumes it when the job changes
 * (once per step, not once per token). The gate thread also sweeps every 100 ms: it closes
 * connections whose request head is late (the header deadline) and polls parked connections
 * for a hang-up (libmicrohttpd does not watch suspended sockets), cancelling their jobs.
 * Jobs and parking live under s->mu; the connection registry (limits, deadlines) under s->cmu.
 * Lock order: s->mu, then libmicrohttpd's own locks (suspend/resume run under s->mu).
 * A job is freed when both sides (connection, engine) have let go of it (refs).
 */
#include "teacher/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/status.h"
#include "teacher/oai.h"
#include "teacher/parallel_engine.h"

enum { EP_CHAT, EP_COMPLETIONS, EP_MODELS, EP_HEALTH, EP_METRICS, EP_OTHER, EP_COUNT };
static const char *const EP_NAME[EP_COUNT] = {"chat_completions", "completions", "models", "health", "metrics", "other"};

typedef struct {
    int32_t *ids;
    float *lp, *top_lp;             /* [cap], [cap * top_k] */
    int32_t *top_ids;
    int64_t n, cap;
    bool done;
    te_finish finish;
    /* the connection side (streaming), touched by the connection thread only */
    int64_t sent;                   /* tokens covered by chunks already built */
    size_t shown, lp_offset;        /* completion text bytes sent; text offset of the next logprob */
    oai_buf text;                   /* decoded text of ids[0:sent] */
    int64_t dec_ids;                /* text[0:dec_len] is the decoding of ids[0:dec_ids] and ends on */
    size_t dec_len, vis;            /* a whole character; vis: bytes of text visible so far */
    oai_split split;
    bool final_sent;
} choice;

typedef struct job {
    struct srv *s;
    int refs;                       /* connection + engine */
    oai_request rq;
    int32_t **prompt;               /* [n_prompts][prompt_n[i]] */
    size_t *prompt_n;
    size_t n_prompts;
    int64_t prompt_tokens, max_tokens;
    int32_t turn_end;               /* the template's end-of-turn id, -1 none */
    bool opened;                    /* the generation prompt opened <think> */
    uint64_t seed, tag0;
    int n_choices, n_done;
    choice *ch;
    int state;                      /* 0 handed over, 1 running, 2 refused, 3 finished */
    bool cancelled, in_engine, dirty;
    char error[512];
    pthread_cond_t cv;
    char id[48];
    int64_t created;
    struct MHD_Connection *conn;    /* NULL once its request has completed */
    int fd;                         /* conn's socket */
    bool parked, gone;              /* conn suspended, waiting for news; the client hung up */
    struct job *park_prev, *park_next;
    /* streaming */
    oai_buf out;
    size_t out_pos;
    bool head_sent, stream_done;
    struct job *next;
} job;

/* A client connection, from accept to close (the gate's, then libmicrohttpd's). */
typedef struct conn_rec {
    int fd;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    uint8_t ip[16];                 /* the address as IPv6 (IPv4 mapped) */
    double deadline;                /* its request head is due by then; 0: none due */
    bool in_mhd;                    /* handed to libmicrohttpd */
    struct conn_rec *prev, *next;
} conn_rec;

typedef struct ip_count {
    uint8_t ip[16];
    int n;
    struct ip_count *next;
} ip_count;

enum { IP_BUCKETS = 1024, GATE_LINE_MAX = 8192 };

struct srv {
    srv_opts o;
    char *host, *api_key, *model_name;
    te_model *m;
    const tok_tokenizer *tok;
    te_engine *e;
    int64_t ctx, vocab;
    struct MHD_Daemon *d;
    int listen_fd, port;
    pthread_t engine_thread;
    bool engine_started;
    pthread_mutex_t mu;
    pthread_cond_t wake, drained;
    job *pending, *pending_tail;
    int n_pending;
    uint64_t *cancel;
    size_t n_cancel, cap_cancel;
    job **active;                   /* engine thread only */
    size_t n_active, cap_active;
    bool stop_engine, draining;
    int in_flight;
    uint64_t next_tag, next_id;
    job *parked;                    /* parked jobs, for the hang-up sweep */
    /* the gate (connections) */
    int max_conns, max_per_ip;
    double header_timeout;
    pthread_t gate_thread;
    bool gate_started;
    int ep_fd, wake_fd;
    atomic_int gate_mode;           /* 0 accept, 1 listening socket closed (draining), 2 exit */
    pthread_mutex_t cmu;            /* the registry below */
    pthread_cond_t gate_ack;
    bool listener_closed;
    conn_rec **by_fd, *conns;
    size_t cap_fd;
    ip_count *ips[IP_BUCKETS];
    int n_conns;
    int64_t refused_limit, refused_per_ip, header_timeouts, bad_lines;
    /* metrics */
    int64_t requests[EP_COUNT], errors, started;
    te_stats st;
    double tps;
};

typedef struct {
    int ep;
    oai_buf body;
    job *j;
} conn_ctx;


/* ---- jobs ------------------------------------------------------------------------------ */

static void job_unref(job *j) {   /* under s->mu */
    if (!j || --j->refs > 0) return;
    oai_request_free(&j->rq);
    for (size_t i = 0; i < j->n_prompts; i++) free(j->prompt[i]);
    free(j->prompt);
    free(j->prompt_n);
    for (int c = 0; j->ch && c < j->n_choices; c++) {
        free(j->ch[c].ids);
        free(j->ch[c].lp);
        free(j->ch[c].top_lp);
        free(j->ch[c].top_ids);
        oai_buf_free(&j->ch[c].text);
    }
    free(j->ch);
    oai_buf_free(&j->out);
    free(j);
}

static void job_cancel(job *j) {   /* under s->mu; the engine drops it at its next turn */
    srv *s = j->s;
    if (j->cancelled || j->state >= 2) return;
    j->cancelled = true;
    for (size_t p = 0; p < j->n_prompts; p++) {
        if (rt_grow((void **)&s->cancel, &s->cap_cancel, s->n_cancel + 1, sizeof *s->cancel)) break;
        s->cancel[s->n_cancel++] = j->tag0 + p;
    }
    pthread_cond_signal(&s->wake);
}

/* Parks j's connection until the job changes (under s->mu, on the connection's event-loop
 * thread, from the access handler or the content reader). */
static void job_park(job *j) {
    srv *s = j->s;
    j->parked = true;
    j->park_prev = NULL;
    j->park_next = s->parked;
    if (s->parked) s->parked->park_prev = j;
    s->parked = j;
    MHD_suspend_connection(j->conn);
}

/* Resumes j's connection if it is parked (under s->mu, any thread). */
static void job_wake(job *j) {
    srv *s = j->s;
    if (!j->parked) return;
    j->parked = false;
    if (j->park_prev) j->park_prev->park_next = j->park_next;
    else s->parked = j->park_next;
    if (j->park_next) j->park_next->park_prev = j->park_prev;
    j->park_prev = j->park_next = NULL;
    if (j->conn) MHD_resume_connection(j->conn);
}

/* ---- the engine thread ----------------------------------------------------------------- */

static job *find_job(srv *s, uint64_t tag) {
    for (size_t i = 0; i < s->n_active; i++) {
        job *j = s->active[i];
        if (tag >= j->tag0 && tag < j->tag0 + j->n_prompts) return j;
    }
    return NULL;
}

static void drop_active(srv *s, job *j) {   /* under s->mu */
    for (size_t i = 0; i < s->n_active; i++)
        if (s->active[i] == j) {
            s->active[i] = s->active[--s->n_active];
            j->in_engine = false;
            job_unref(j);
            return;
        }
}

static int grow_choice(choice *c, int k) {
    if (c->n < c->cap) return 0;
    int64_t cap = c->cap ? 2 * c->cap : 64;
    int32_t *ids = rt_realloc(c->ids, (size_t)cap * sizeof *ids);
    if (ids) c->ids = ids;
    float *lp = rt_realloc(c->lp, (size_t)cap * sizeof *lp);
    if (lp) c->lp = lp;
    if (!ids || !lp) return RT_ENOMEM;
    if (k > 0) {
        int32_t *ti = rt_realloc(c->top_ids, (size_t)(cap * k) * sizeof *ti);
        if (ti) c->top_ids = ti;
        float *tl = rt_realloc(c->top_lp, (size_t)(cap * k) * sizeof *tl);
        if (tl) c->top_lp = tl;
        if (!ti || !tl) return RT_ENOMEM;
    }
    c->cap = cap;
    return 0;
}

static void on_token(void *user, const te_token *t) {
    srv *s = user;
    pthread_mutex_lock(&s->mu);
    job *j = find_job(s, t->tag);
    if (j && !j->cancelled) {
        choice *c = &j->ch[(int)(t->tag - j->tag0) * j->rq.n + t->sample];
        int k = t->top_k;
        if (c->n == t->index && !grow_choice(c, k)) {
            c->ids[c->n] = t->id;
            c->lp[c->n] = t->logprob;
            if (k > 0) {
                memcpy(c->top_ids + c->n * k, t->top_ids, (size_t)k * sizeof(int32_t));
                memcpy(c->top_lp + c->n * k, t->top_logprobs, (size_t)k * sizeof(float));
            }
            c->n++;
            j->dirty = true;   /* woken once after the step, not once per token */
        }
    }
    pthread_mutex_unlock(&s->mu);
}

static void fail_job(job *j, const char *msg) {   /* under s->mu */
    size_t n = strlen(msg) < sizeof j->error - 1 ? strlen(msg) : sizeof j->error - 1;
    memcpy(j->error, msg, n);
    j->error[n] = 0;
    j->state = 2;
    job_wake(j);
}

/* Submits every prompt of j; on a refusal the ones already in are dropped. */
static int submit_job(srv *s, job *j) {
    smp_params sp = {.temperature = (float)j->rq.temperature, .top_k = j->rq.top_k, .top_p = (float)j->rq.top_p,
                     .min_p = (float)j->rq.min_p};
    for (size_t p = 0; p < j->n_prompts; p++) {
        te_request r = {.prompt = j->prompt[p], .n_prompt = (int64_t)j->prompt_n[p], .n_samples = j->rq.n,
                        .max_tokens = j->max_tokens, .sampling = sp, .seed = j->seed + p,
                        .stop_ids = j->turn_end >= 0 ? &j->turn_end : NULL, .n_stop_ids = j->turn_end >= 0,
                        .ignore_config_eos = j->rq.ignore_eos, .stop = (const char *const *)j->rq.stop,
                        .n_stop = j->rq.n_stop, .logprobs = j->rq.logprobs, .top_logprobs = j->rq.top_logprobs,
                        .tag = j->tag0 + p};
        int rc = te_submit(s->e, &r);
        if (rc) {
            for (size_t q = 0; q < p; q++) te_cancel(s->e, j->tag0 + q);
            return rc;
        }
    }
    return 0;
}

/* Lockstep (opts.comm): the requests of the next pe_step, with their jobs. */
typedef struct {
    te_request *r;
    job **j;
    int *src;
    size_t n, cap;
    uint64_t *cancel;
    size_t n_cancel, cap_cancel;
} step_input;

static void step_input_free(step_input *b) {
    free(b->r);
    free(b->j);
    free(b->src);
    free(b->cancel);
}

static int queue_job(step_input *b, job *j) {   /* every prompt of j, as submit_job would */
    size_t need = b->n + j->n_prompts;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 16;
        while (cap < need) cap *= 2;
        te_request *r = rt_realloc(b->r, cap * sizeof *r);
        if (r) b->r = r;
        job **jj = rt_realloc(b->j, cap * sizeof *jj);
        if (jj) b->j = jj;
        int *src = rt_realloc(b->src, cap * sizeof *src);
        if (src) b->src = src;
        if (!r || !jj || !src) return RT_ENOMEM;
        b->cap = cap;
    }
    smp_params sp = {.temperature = (float)j->rq.temperature, .top_k = j->rq.top_k, .top_p = (float)j->rq.top_p,
                     .min_p = (float)j->rq.min_p};
    for (size_t p = 0; p < j->n_prompts; p++) {
        b->r[b->n] = (te_request){.prompt = j->prompt[p], .n_prompt = (int64_t)j->prompt_n[p], .n_samples = j->rq.n,
                                  .max_tokens = j->max_tokens, .sampling = sp, .seed = j->seed + p,
                                  .stop_ids = j->turn_end >= 0 ? &j->turn_end : NULL, .n_stop_ids = j->turn_end >= 0,
                                  .ignore_config_eos = j->rq.ignore_eos, .stop = (const char *const *)j->rq.stop,
                                  .n_stop = j->rq.n_stop, .logprobs = j->rq.logprobs,
                                  .top_logprobs = j->rq.top_logprobs, .tag = j->tag0 + p};
        b->j[b->n++] = j;
    }
    return 0;
}

static void *engine_main(void *arg) {
    srv *s = arg;
    rt_comm *comm = s->o.comm && comm_size(s->o.comm) > 1 ? s->o.comm : NULL;
    step_input b = {0};
    bool broken = false;            /* lockstep lost: no more steps */
    char broken_msg[RT_ERRMSG_MAX] = "";
    double t_last = now_s();
    int64_t gen_last = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->pending && !s->n_cancel && !te_busy(s->e) && !s->stop_engine) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&s->wake, &s->mu, &ts);
            double t = now_s();
            if (t - t_last >= 1.0) {
                s->tps = (double)(s->st.generated_tokens - gen_last) / (t - t_last);
                gen_last = s->st.generated_tokens;
                t_last = t;
            }
        }
        if (s->stop_engine && !s->pending && !s->n_cancel && !te_busy(s->e)) break;
        job *pend = s->pending;
        s->pending = s->pending_tail = NULL;
        s->n_pending = 0;
        b.n = b.n_cancel = 0;
        for (size_t i = 0; i < s->n_cancel; i++) {
            job *j = find_job(s, s->cancel[i]);
            if (!comm || broken) te_cancel(s->e, s->cancel[i]);
            else if (!rt_grow((void **)&b.cancel, &b.cap_cancel, b.n_cancel + 1, sizeof *b.cancel))
                b.cancel[b.n_cancel++] = s->cancel[i];   /* applied on every rank with the step */
            if (j && j->cancelled) {
                j->state = 3;
                job_wake(j);
                drop_active(s, j);
            }
        }
        s->n_cancel = 0;
        while (pend) {
            job *j = pend;
            pend = j->next;
            j->next = NULL;
            if (j->cancelled) {
                j->state = 3;
                job_wake(j);
                job_unref(j);
                continue;
            }
            if (broken) {
                fail_job(j, broken_msg);
                job_unref(j);
                continue;
            }
            if (rt_grow((void **)&s->active, &s->cap_active, s->n_active + 1, sizeof *s->active) ||
                (comm && queue_job(&b, j))) {
                fail_job(j, "out of memory");
                job_unref(j);
                continue;
            }
            if (comm) {   /* submitted with the step; active now, so its first token finds it */
                j->in_engine = true;
                s->active[s->n_active++] = j;
                continue;
            }
            int rc = submit_job(s, j);   /* te_submit is quick: copies, no model work */
            if (rc) {
                fail_job(j, rt_errmsg());
                job_unref(j);
                continue;
            }
            j->state = 1;
            j->in_engine = true;
            s->active[s->n_active++] = j;
            job_wake(j);
        }
        te_stats_get(s->e, &s->st);
        if (broken || (!te_busy(s->e) && !b.n && !b.n_cancel)) continue;
        pthread_mutex_unlock(&s->mu);
        te_result *res = NULL;
        size_t n = 0;
        int rc;
        char msg[RT_ERRMSG_MAX], refused[RT_ERRMSG_MAX] = "";
        if (comm) {
            bool last = false;
            pe_input in = {.submit = b.r, .n_submit = b.n, .cancel = b.cancel, .n_cancel = b.n_cancel};
            rc = pe_step(comm, s->e, &in, b.src, &res, &n, &last);
            for (size_t i = 0; !rc && i < b.n; i++)
                if (b.src[i]) snprintf(refused, sizeof refused, "%s", rt_errmsg());   /* the last refusal's */
        } else {
            rc = te_step(s->e, &res, &n);
        }
        if (rc) snprintf(msg, sizeof msg, "the engine failed: %s", rt_errmsg());
        if (rc && comm) {   /* a follower may wait in a collective: the caller ends the job */
            broken = true;
            snprintf(broken_msg, sizeof broken_msg, "%s", msg);
            if (s->o.on_comm_failure) s->o.on_comm_failure(s->o.comm_user, msg);
        }
        pthread_mutex_lock(&s->mu);
        for (size_t i = 0; !rc && i < b.n; i++) {   /* this step's submissions, job by job */
            job *j = b.j[i];
            if (i > 0 && b.j[i - 1] == j) continue;
            bool bad = false;
            for (size_t p = 0; p < j->n_prompts; p++) bad |= b.src[i + p] != 0;
            if (!bad) {
                if (j->state == 0) j->state = 1;
                job_wake(j);
                continue;
            }
            for (size_t p = 0; p < j->n_prompts; p++)   /* the accepted prompts go with the next step */
                if (!b.src[i + p] && !rt_grow((void **)&s->cancel, &s->cap_cancel, s->n_cancel + 1, sizeof *s->cancel))
                    s->cancel[s->n_cancel++] = j->tag0 + p;
            fail_job(j, refused);
            drop_active(s, j);
        }
        for (size_t i = 0; i < n; i++) {
            job *j = find_job(s, res[i].tag);
            if (!j) continue;
            choice *c = &j->ch[(int)(res[i].tag - j->tag0) * j->rq.n + res[i].sample];
            if (c->done) continue;
            c->done = true;
            c->finish = res[i].finish;
            if (++j->n_done == j->n_choices) {
                j->state = 3;
                job_wake(j);
                drop_active(s, j);   /* may free j (its connection is gone) */
            } else if (j->rq.stream) {   /* a whole answer waits for the last choice */
                job_wake(j);
            }
        }
        te_results_free(res, n);
        for (size_t i = 0; i < s->n_active; i++)
            if (s->active[i]->dirty) {
                s->active[i]->dirty = false;
                if (s->active[i]->rq.stream) job_wake(s->active[i]);
            }
        if (rc) {   /* nothing sensible remains: every request fails */
            while (s->n_active) {
                job *j = s->active[0];
                for (size_t p = 0; p < j->n_prompts; p++) te_cancel(s->e, j->tag0 + p);
                fail_job(j, msg);
                drop_active(s, j);
            }
        }
        te_stats_get(s->e, &s->st);
        double t = now_s();
        if (t - t_last >= 1.0) {
            s->tps = (double)(s->st.generated_tokens - gen_last) / (t - t_last);
            gen_last = s->st.generated_tokens;
            t_last = t;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (comm && !broken) pe_end(comm, s->e);   /* the followers stop */
    step_input_free(&b);
    return NULL;
}

/* ---- responses ------------------------------------------------------------------------- */

static enum MHD_Result send_body(srv *s, struct MHD_Connection *c, int ep, unsigned status, const char *ctype,
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
    pthread_mutex_lock(&s->mu);
    s->requests[ep]++;
    if (status >= 400) s->errors++;
    pthread_mutex_unlock(&s->mu);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(srv *s, struct MHD_Connection *c, int ep, unsigned status, json_t *j) {
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return send_body(s, c, ep, status, "application/json", body);
}

static enum MHD_Result send_error(srv *s, struct MHD_Connection *c, int ep, unsigned status, const char *msg,
                                  const char *param, const char *code) {
    return send_body(s, c, ep, status, "application/json", oai_error_json((int)status, msg, param, code));
}

/* A token as text (lossy) and as raw bytes. */
typedef struct {
    char *text;
    size_t len;
    uint8_t bytes[256];
    size_t n_bytes;
} tok_text;

/* GPT-2's byte-to-unicode map, inverted: a code point of a byte-level token → its byte. */
static int byte_of(uint32_t cp) {
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255)) return (int)cp;
    if (cp < 256 || cp >= 256 + 68) return -1;
    int k = (int)(cp - 256);
    for (int b = 0; b < 256; b++) {
        bool direct = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        if (!direct && k-- == 0) return b;
    }
    return -1;
}

static void token_text(const tok_tokenizer *tok, int32_t id, tok_text *t) {
    t->text = NULL;
    t->len = 0;
    t->n_bytes = 0;
    if (tok_decode(tok, &id, 1, false, &t->text, &t->len)) {
        t->text = NULL;
        t->len = 0;
        return;
    }
    if (!memmem(t->text, t->len, "\xEF\xBF\xBD", 3) || tok_is_special(tok, id)) {
        t->n_bytes = t->len < sizeof t->bytes ? t->len : sizeof t->bytes;
        memcpy(t->bytes, t->text, t->n_bytes);
        return;
    }
    const unsigned char *p = (const unsigned char *)tok_id_to_token(tok, id);
    while (p && *p && t->n_bytes < sizeof t->bytes) {   /* decode UTF-8 of the byte-level form */
        uint32_t cp = *p++;
        int more = cp >= 0xF0 ? 3 : cp >= 0xE0 ? 2 : cp >= 0xC0 ? 1 : 0;
        if (more) cp &= 0x3F >> more;
        while (more-- > 0 && *p) cp = (cp << 6) | (*p++ & 0x3F);
        int b = byte_of(cp);
        if (b < 0) break;
        t->bytes[t->n_bytes++] = (uint8_t)b;
    }
}

/* Logprobs of n tokens (ids[i], lp[i], alternatives top_ids/top_lp[i*k …]) as the kind's JSON
 * (NULL: none asked); *text_offset is the completions form's running character offset. */
static json_t *logprobs_json(const job *j, const int32_t *ids, const float *lp, const int32_t *top_ids,
                             const float *top_lp, size_t n, size_t *text_offset) {
    if (!j->rq.logprobs) return NULL;
    int k = j->rq.top_logprobs;
    oai_pos_lp *p = rt_calloc(n ? n : 1, sizeof *p);
    tok_text *tt = rt_calloc(n * (size_t)(k + 1) + 1, sizeof *tt);
    oai_token_lp *tl = rt_calloc(n * (size_t)(k + 1) + 1, sizeof *tl);
    json_t *out = NULL;
    if (p && tt && tl) {
        for (size_t i = 0; i < n; i++) {
            size_t at = i;
            for (int q = 0; q <= k; q++) {
                size_t x = i * (size_t)(k + 1) + (size_t)q;
                int32_t id = q == 0 ? ids[at] : top_ids[at * (size_t)k + (size_t)q - 1];
                token_text(j->s->tok, id, &tt[x]);
                tl[x] = (oai_token_lp){tt[x].text ? tt[x].text : "", tt[x].len, tt[x].bytes, tt[x].n_bytes,
                                       q == 0 ? lp[at] : top_lp[at * (size_t)k + (size_t)q - 1]};
            }
            p[i] = (oai_pos_lp){tl[i * (size_t)(k + 1)], tl + i * (size_t)(k + 1) + 1, k};
        }
        if (j->rq.kind == OAI_CHAT) {
            out = oai_logprobs_chat(p, n);
        } else {
            out = oai_logprobs_completion(p, n, text_offset);
        }
        for (size_t x = 0; x < n * (size_t)(k + 1); x++) free(tt[x].text);
    }
    free(p);
    free(tt);
    free(tl);
    return out;
}

static const char *finish_name(te_finish f) { return f == TE_FINISH_STOP ? "stop" : "length"; }

/* Decodes ids[0:n] (special tokens skipped) into *text (malloc'd). */
static int decode_ids(const job *j, const int32_t *ids, int64_t n, char **text, size_t *len) {
    *text = NULL;
    *len = 0;
    int rc = tok_decode(j->s->tok, ids, (size_t)n, true, text, len);
    if (rc == RT_ERANGE) {   /* ids the tokenizer lacks (a model's padded vocabulary): dropped, as HF does */
        int32_t *known = rt_malloc((size_t)(n ? n : 1) * sizeof *known);
        size_t k = 0;
        for (int64_t i = 0; known && i < n; i++)
            if (tok_id_to_token(j->s->tok, ids[i])) known[k++] = ids[i];
        rc = known ? tok_decode(j->s->tok, known, k, true, text, len) : RT_ENOMEM;
        free(known);
    }
    return rc;
}

static int64_t completion_tokens(const job *j) {
    int64_t t = 0;
    for (int c = 0; c < j->n_choices; c++) t += j->ch[c].n;
    return t;
}

/* The whole (non-streamed) response of a finished job. */
static json_t *full_response(job *j) {
    json_t *r = oai_envelope(j->rq.kind, false, j->id, j->created, j->s->model_name);
    json_t *choices = json_object_get(r, "choices");
    for (int i = 0; r && i < j->n_choices; i++) {
        choice *c = &j->ch[i];
        char *text;
        size_t len, vis;
        if (decode_ids(j, c->ids, c->n, &text, &len)) {
            json_decref(r);
            return NULL;
        }
        vis = oai_visible_len(text, len, j->rq.stop, j->rq.n_stop, true);
        json_t *lp = logprobs_json(j, c->ids, c->lp, c->top_ids, c->top_lp, (size_t)c->n, &c->lp_offset), *ch;
        if (j->rq.kind == OAI_CHAT) {
            oai_split sp;
            oai_split_init(&sp, j->opened);
            oai_buf rea = {0}, con = {0};
            oai_buf_put(&rea, "", 0);
            oai_buf_put(&con, "", 0);
            oai_split_feed(&sp, text, vis, true, &rea, &con);
            json_t *msg = json_pack("{s:s, s:s%}", "role", "assistant", "content", con.s ? con.s : "", con.len);
            json_object_set_new(msg, "reasoning_content", sp.reasoning ? json_stringn(rea.s ? rea.s : "", rea.len) : json_null());
            json_object_set_new(msg, "tool_calls", json_array());
            oai_buf_free(&rea);
            oai_buf_free(&con);
            ch = json_pack("{s:i, s:o, s:o, s:s}", "index", i, "message", msg, "logprobs", lp ? lp : json_null(),
                           "finish_reason", finish_name(c->finish));
        } else {
            ch = json_pack("{s:i, s:s%, s:o, s:s}", "index", i, "text", text, vis, "logprobs", lp ? lp : json_null(),
                           "finish_reason", finish_name(c->finish));
        }
        free(text);
        json_array_append_new(choices, ch);
    }
    if (r) json_object_set_new(r, "usage", oai_usage(j->prompt_tokens, completion_tokens(j)));
    return r;
}

static int put_chunk(job *j, json_t *chunk) {
    char *sse = oai_sse_event(chunk);
    json_decref(chunk);
    if (!sse) return RT_ENOMEM;
    int rc = oai_buf_put(&j->out, sse, strlen(sse));
    free(sse);
    return rc;
}

static json_t *chunk_of(job *j, json_t *choice_obj) {
    json_t *r = oai_envelope(j->rq.kind, true, j->id, j->created, j->s->model_name);
    if (r) json_array_append_new(json_object_get(r, "choices"), choice_obj);
    else json_decref(choice_obj);
    return r;
}

/* What the engine added to a choice since the connection last looked, copied under s->mu. */
typedef struct {
    int64_t n;                      /* tokens now */
    bool done;
    te_finish finish;
    int32_t *ids;                   /* ids[dec_ids:n] */
    int32_t *lp_ids, *top_ids;      /* [sent:n] and their alternatives */
    float *lp, *top_lp;
} snap;

static int take_snap(const job *j, const choice *c, snap *sn) {   /* under s->mu */
    int k = j->rq.top_logprobs;
    size_t nd = (size_t)(c->n - c->dec_ids), nn = (size_t)(c->n - c->sent);
    *sn = (snap){.n = c->n, .done = c->done, .finish = c->finish};
    sn->ids = rt_malloc((nd ? nd : 1) * sizeof *sn->ids);
    if (!sn->ids) return RT_ENOMEM;
    memcpy(sn->ids, c->ids + c->dec_ids, nd * sizeof *sn->ids);
    if (!j->rq.logprobs) return 0;
    sn->lp_ids = rt_malloc((nn ? nn : 1) * sizeof *sn->lp_ids);
    sn->lp = rt_malloc((nn ? nn : 1) * sizeof *sn->lp);
    sn->top_ids = rt_malloc((nn * (size_t)k + 1) * sizeof *sn->top_ids);
    sn->top_lp = rt_malloc((nn * (size_t)k + 1) * sizeof *sn->top_lp);
    if (!sn->lp_ids || !sn->lp || !sn->top_ids || !sn->top_lp) return RT_ENOMEM;
    memcpy(sn->lp_ids, c->ids + c->sent, nn * sizeof *sn->lp_ids);
    memcpy(sn->lp, c->lp + c->sent, nn * sizeof *sn->lp);
    if (k > 0) {
        memcpy(sn->top_ids, c->top_ids + c->sent * k, nn * (size_t)k * sizeof *sn->top_ids);
        memcpy(sn->top_lp, c->top_lp + c->sent * k, nn * (size_t)k * sizeof *sn->top_lp);
    }
    return 0;
}

static void snap_free(snap *sn) {
    free(sn->ids);
    free(sn->lp_ids);
    free(sn->top_ids);
    free(sn->lp);
    free(sn->top_lp);
}

static size_t max_stop_len(const job *j) {
    size_t m = 0;
    for (int i = 0; i < j->rq.n_stop; i++)
        if (strlen(j->rq.stop[i]) > m) m = strlen(j->rq.stop[i]);
    return m;
}

/* Brings c->text up to the snapshot: only ids past the last whole-character checkpoint are
 * decoded (ByteLevel decoding is the concatenation of the tokens' bytes, and UTF-8 resumes at
 * any character boundary), and only the new tail is searched for stop strings (an earlier
 * one would have ended the sample), so a long stream costs linear time. Sets c->vis. */
static int update_text(const job *j, choice *c, const snap *sn) {
    char *tail;
    size_t tlen;
    int rc = decode_ids(j, sn->ids, sn->n - c->dec_ids, &tail, &tlen);
    if (rc) return rc;
    c->text.len = c->dec_len;
    rc = oai_buf_put(&c->text, tail, tlen);
    free(tail);
    if (rc) return rc;
    if (c->text.len < 3 || memcmp(c->text.s + c->text.len - 3, "\xEF\xBF\xBD", 3)) {
        c->dec_ids = sn->n;
        c->dec_len = c->text.len;
    }
    size_t m = max_stop_len(j), base = c->vis > m ? c->vis - m : 0;
    c->vis = base + oai_visible_len(c->text.s + base, c->text.len - base, j->rq.stop, j->rq.n_stop, sn->done);
    return 0;
}

/* Builds the SSE chunks for what the engine added since the last call (called without
 * s->mu). Returns 1 when it added something to j->out (or the stream ended), 0 when there is
 * nothing new, <0 on error. */
static int stream_produce(job *j) {
    srv *s = j->s;
    int added = 0;
    if (!j->head_sent && j->rq.kind == OAI_CHAT) {
        for (int i = 0; i < j->n_choices; i++) {
            json_t *ch = json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index", i, "delta", "role", "assistant", "content", "",
                                   "logprobs", "finish_reason");
            if (put_chunk(j, chunk_of(j, ch))) return RT_ENOMEM;
        }
        added = 1;
    }
    j->head_sent = true;
    bool all_final = true;
    for (int i = 0; i < j->n_choices; i++) {
        choice *c = &j->ch[i];
        if (c->final_sent) continue;
        snap sn;
        pthread_mutex_lock(&s->mu);
        bool fresh = c->n > c->sent || c->done;
        int rc = fresh ? take_snap(j, c, &sn) : 0;
        pthread_mutex_unlock(&s->mu);
        if (!fresh) {
            all_final = false;
            continue;
        }
        if (!rc) rc = update_text(j, c, &sn);
        if (rc) {
            snap_free(&sn);
            return rc;
        }
        json_t *lp = logprobs_json(j, sn.lp_ids, sn.lp, sn.top_ids, sn.top_lp, (size_t)(sn.n - c->sent), &c->lp_offset);
        json_t *ch = NULL;
        c->sent = sn.n;
        const char *fin = sn.done ? finish_name(sn.finish) : NULL;
        if (j->rq.kind == OAI_CHAT) {
            oai_buf rea = {0}, con = {0};
            oai_split_feed(&c->split, c->text.s ? c->text.s : "", c->vis, sn.done, &rea, &con);
            if (rea.len || con.len || lp || fin) {
                json_t *delta = json_object();
                if (rea.len) json_object_set_new(delta, "reasoning_content", json_stringn(rea.s, rea.len));
                if (con.len) json_object_set_new(delta, "content", json_stringn(con.s, con.len));
                ch = json_pack("{s:i, s:o, s:o, s:o}", "index", i, "delta", delta, "logprobs", lp ? lp : json_null(),
                               "finish_reason", fin ? json_string(fin) : json_null());
            } else {
                json_decref(lp);
            }
            oai_buf_free(&rea);
            oai_buf_free(&con);
        } else {
            size_t from = c->shown < c->vis ? c->shown : c->vis;
            if (c->vis > from || lp || fin)
                ch = json_pack("{s:i, s:s%, s:o, s:o}", "index", i, "text", c->text.s ? c->text.s + from : "", c->vis - from,
                               "logprobs", lp ? lp : json_null(), "finish_reason", fin ? json_string(fin) : json_null());
            else json_decref(lp);
            c->shown = c->vis > c->shown ? c->vis : c->shown;
        }
        if (sn.done) c->final_sent = true;
        else all_final = false;
        snap_free(&sn);
        if (ch) {
            if (put_chunk(j, chunk_of(j, ch))) return RT_ENOMEM;
            added = 1;
        }
    }
    if (all_final && !j->stream_done) {
        if (j->rq.include_usage) {
            pthread_mutex_lock(&s->mu);
            int64_t done_tokens = completion_tokens(j);
            pthread_mutex_unlock(&s->mu);
            json_t *r = oai_envelope(j->rq.kind, true, j->id, j->created, s->model_name);
            if (r) json_object_set_new(r, "usage", oai_usage(j->prompt_tokens, done_tokens));
            if (put_chunk(j, r)) return RT_ENOMEM;
        }
        if (oai_buf_put(&j->out, "data: [DONE]\n\n", 14)) return RT_ENOMEM;
        j->stream_done = true;
        added = 1;
    }
    return added;
}

/* libmicrohttpd's content reader for a stream, on the connection's event-loop thread: never
 * waits. With nothing to send it parks the connection and returns 0; the engine thread resumes
 * it when the job changes, and libmicrohttpd calls again. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    job *j = cls;
    srv *s = j->s;
    for (;;) {
        if (j->out_pos < j->out.len) {
            size_t n = j->out.len - j->out_pos < max ? j->out.len - j->out_pos : max;
            memcpy(buf, j->out.s + j->out_pos, n);
            j->out_pos += n;
            if (j->out_pos == j->out.len) j->out_pos = j->out.len = 0;
            return (ssize_t)n;
        }
        if (j->stream_done) return MHD_CONTENT_READER_END_OF_STREAM;
        int rc = stream_produce(j);
        if (rc > 0) continue;
        pthread_mutex_lock(&s->mu);
        bool news = false;
        for (int i = 0; i < j->n_choices && !news; i++)
            news = !j->ch[i].final_sent && (j->ch[i].n > j->ch[i].sent || j->ch[i].done);
        if (rc < 0 || j->state == 2 || j->gone) {
            job_cancel(j);
            pthread_mutex_unlock(&s->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (!news) {
            job_park(j);
            pthread_mutex_unlock(&s->mu);
            return 0;
        }
        pthread_mutex_unlock(&s->mu);
    }
}

static void stream_free(void *cls) {
    job *j = cls;
    srv *s = j->s;
    pthread_mutex_lock(&s->mu);
    job_unref(j);
    pthread_mutex_unlock(&s->mu);
}

/* ---- request handling ------------------------------------------------------------------ */

static bool ends_with_think(const char *text) {
    size_t n = strlen(text);
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' ' || text[n - 1] == '\r')) n--;
    return n >= 7 && !memcmp(text + n - 7, "<think>", 7);
}

/* The prompts of a parsed request as token ids; 0, or a message for a 400 in msg. */
static int build_prompts(srv *s, job *j, char *msg, size_t cap, const char **param) {
    oai_request *rq = &j->rq;
    *param = NULL;
    size_t np = rq->kind == OAI_CHAT ? 1 : rq->n_prompts;
    j->prompt = rt_calloc(np, sizeof *j->prompt);
    j->prompt_n = rt_calloc(np, sizeof *j->prompt_n);
    if (!j->prompt || !j->prompt_n) return RT_ENOMEM;
    j->n_prompts = np;
    j->turn_end = -1;
    if (rq->kind == OAI_CHAT) {
        *param = "messages";
        if (!s->o.have_template) {
            snprintf(msg, cap, "this server has no chat template (start it with --template); use /v1/completions");
            return RT_EINVAL;
        }
        ct_message *m = rt_calloc(rq->n_messages, sizeof *m);
        if (!m) return RT_ENOMEM;
        for (size_t i = 0; i < rq->n_messages; i++)
            m[i] = (ct_message){rq->messages[i].role, rq->messages[i].content, rq->messages[i].reasoning_content};
        uint8_t *mask = NULL;
        char *text = NULL;
        int rc = ct_template_render(s->tok, s->o.tmpl, m, rq->n_messages, true, &j->prompt[0], &mask, &j->prompt_n[0]);
        if (!rc) rc = ct_template_render_text(s->o.tmpl, m, rq->n_messages, true, &text);
        if (!rc) j->opened = ends_with_think(text);
        free(text);
        free(mask);
        free(m);
        if (rc) {
            snprintf(msg, cap, "rendering the messages: %s", rt_errmsg());
            return rc == RT_ENOMEM ? rc : RT_EINVAL;
        }
        const char *eot = ct_template_eot(s->o.tmpl);
        if (!rq->ignore_eos && eot) j->turn_end = tok_token_to_id(s->tok, eot);
    } else {
        *param = "prompt";
        for (size_t p = 0; p < np; p++) {
            oai_prompt *q = &rq->prompts[p];
            if (q->text) {
                if (tok_encode(s->tok, q->text, strlen(q->text), true, &j->prompt[p], &j->prompt_n[p])) {
                    snprintf(msg, cap, "tokenizing the prompt: %s", rt_errmsg());
                    return RT_EINVAL;
                }
            } else {
                if (!(j->prompt[p] = rt_malloc(q->n_ids * sizeof(int32_t)))) return RT_ENOMEM;
                memcpy(j->prompt[p], q->ids, q->n_ids * sizeof(int32_t));
                j->prompt_n[p] = q->n_ids;
            }
        }
    }
    int64_t longest = 0;
    for (size_t p = 0; p < np; p++) {
        if (j->prompt_n[p] == 0) {
            snprintf(msg, cap, "the prompt has no tokens");
            return RT_EINVAL;
        }
        for (size_t i = 0; i < j->prompt_n[p]; i++)
            if (j->prompt[p][i] >= s->vocab) {
                snprintf(msg, cap, "prompt token %d is outside the model's vocabulary of %lld", j->prompt[p][i],
                         (long long)s->vocab);
                return RT_EINVAL;
            }
        if ((int64_t)j->prompt_n[p] > longest) longest = (int64_t)j->prompt_n[p];
        j->prompt_tokens += (int64_t)j->prompt_n[p];
    }
    if (longest >= s->ctx) {
        snprintf(msg, cap, "the prompt has %lld tokens; this model's context is %lld", (long long)longest,
                 (long long)s->ctx);
        return RT_EINVAL;
    }
    if (rq->max_tokens > 0) {
        if (rq->max_tokens > s->ctx - longest) {
            snprintf(msg, cap, "this model's context is %lld tokens; the prompt has %lld and max_tokens asks for %lld more",
                     (long long)s->ctx, (long long)longest, (long long)rq->max_tokens);
            *param = "max_tokens";
            return RT_EINVAL;
        }
        j->max_tokens = rq->max_tokens;
    } else if (rq->kind == OAI_COMPLETION) {
        j->max_tokens = 16;   /* OpenAI's default for completions */
    } else {   /* chat: the rest of the context, as far as the cache holds n samples of it */
        int64_t bs = s->o.engine.block_size > 0 ? s->o.engine.block_size : 16;
        int64_t cache = s->o.engine.cache_tokens > 0 ? s->o.engine.cache_tokens : 65536;
        int64_t fit = cache / rq->n - longest - 2 * bs;
        j->max_tokens = s->ctx - longest;
        if (fit < j->max_tokens) j->max_tokens = fit;
        if (j->max_tokens < 1) {
            snprintf(msg, cap, "the prompt of %lld tokens leaves no room for %d samples in the cache", (long long)longest,
                     rq->n);
            return RT_EINVAL;
        }
    }
    *param = NULL;
    return 0;
}

static uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* The answer of a job that left the waiting states (or a park while it has not). */
static enum MHD_Result generate_answer(srv *s, struct MHD_Connection *conn, conn_ctx *cx) {
    int ep = cx->ep;
    job *j = cx->j;
    pthread_mutex_lock(&s->mu);
    if (j->gone) {
        pthread_mutex_unlock(&s->mu);
        return MHD_NO;   /* the client hung up: closes the connection */
    }
    if (j->state == 0 || (!j->rq.stream && j->state == 1)) {   /* the engine resumes it */
        job_park(j);
        pthread_mutex_unlock(&s->mu);
        return MHD_YES;
    }
    int state = j->state;
    pthread_mutex_unlock(&s->mu);
    if (state == 2) {
        bool server_side = !strncmp(j->error, "the engine failed", 17) || !strcmp(j->error, "out of memory");
        return send_error(s, conn, ep, server_side ? 500 : 400, j->error, NULL, NULL);
    }
    if (!j->rq.stream) return send_json(s, conn, ep, 200, full_response(j));
    pthread_mutex_lock(&s->mu);
    j->refs++;   /* the response's */
    pthread_mutex_unlock(&s->mu);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, j, stream_free);
    if (!r) {
        stream_free(j);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    pthread_mutex_lock(&s->mu);
    s->requests[ep]++;
    pthread_mutex_unlock(&s->mu);
    enum MHD_Result ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result handle_generate(srv *s, struct MHD_Connection *conn, conn_ctx *cx) {
    int ep = cx->ep;
    job *j = rt_calloc(1, sizeof *j);
    if (!j) return send_error(s, conn, ep, 500, "out of memory", NULL, NULL);
    j->s = s;
    j->refs = 1;
    j->conn = conn;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    j->fd = ci ? ci->connect_fd : -1;
    cx->j = j;
    oai_error err;
    int rc = oai_parse_request(cx->body.s ? cx->body.s : "", cx->body.len, ep == EP_CHAT ? OAI_CHAT : OAI_COMPLETION,
                               &j->rq, &err);
    if (rc) return send_error(s, conn, ep, (unsigned)err.status, err.message, err.param, NULL);
    char msg[600];
    const char *param;
    rc = build_prompts(s, j, msg, sizeof msg, &param);
    if (rc == RT_ENOMEM) return send_error(s, conn, ep, 500, "out of memory", NULL, NULL);
    if (rc) return send_error(s, conn, ep, 400, msg, param, NULL);
    j->n_choices = (int)j->n_prompts * j->rq.n;
    if (!(j->ch = rt_calloc((size_t)j->n_choices, sizeof *j->ch)))
        return send_error(s, conn, ep, 500, "out of memory", NULL, NULL);
    for (int i = 0; i < j->n_choices; i++) oai_split_init(&j->ch[i].split, j->opened);
    j->created = (int64_t)time(NULL);
    pthread_mutex_lock(&s->mu);
    if (s->draining) {
        pthread_mutex_unlock(&s->mu);
        return send_error(s, conn, ep, 503, "the server is shutting down", NULL, NULL);
    }
    uint64_t nid = ++s->next_id;
    j->tag0 = s->next_tag;
    s->next_tag += j->n_prompts;
    j->seed = j->rq.has_seed ? j->rq.seed : mix64(nid ^ (uint64_t)time(NULL) << 20 ^ (uint64_t)(uintptr_t)j);
    snprintf(j->id, sizeof j->id, "%s-%016llx", ep == EP_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)mix64(nid + ((uint64_t)j->created << 32)));
    j->refs++;   /* the engine's */
    if (s->pending_tail) s->pending_tail->next = j;
    else s->pending = j;
    s->pending_tail = j;
    s->n_pending++;
    s->in_flight++;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->mu);
    /* wait (parked) for the engine to take it, and, without streaming, to finish it */
    return generate_answer(s, conn, cx);
}

static enum MHD_Result handle_metrics(srv *s, struct MHD_Connection *conn) {
    oai_buf b = {0};
    char line[256];
    pthread_mutex_lock(&s->mu);
    te_stats st = s->st;
    int64_t req[EP_COUNT];
    memcpy(req, s->requests, sizeof req);
    int64_t errors = s->errors, queued = st.queued + s->n_pending;
    int in_flight = s->in_flight;
    double tps = s->tps;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&s->cmu);
    double open_conns = s->n_conns, ref_limit = (double)s->refused_limit, ref_ip = (double)s->refused_per_ip;
    double late = (double)s->header_timeouts, bad = (double)s->bad_lines;
    pthread_mutex_unlock(&s->cmu);
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
        {"retort_requests_in_flight", "gauge", "Generation requests accepted and not yet answered in full.", in_flight},
        {"retort_queue_depth", "gauge", "Generation requests waiting for room in the engine's batch or cache.",
         (double)queued},
        {"retort_running_sequences", "gauge", "Sequences in the engine's running batch.", st.running},
        {"retort_prompt_tokens_total", "counter", "Prompt tokens run through the model.", (double)st.prompt_tokens},
        {"retort_generation_tokens_total", "counter", "Tokens generated.", (double)st.generated_tokens},
        {"retort_generation_tokens_per_second", "gauge", "Tokens generated per second over the last second or more.", tps},
        {"retort_engine_steps_total", "counter", "Engine steps (batched forwards).", (double)st.steps},
        {"retort_cache_blocks_in_use", "gauge", "KV-cache blocks holding positions.", (double)st.blocks_in_use},
        {"retort_cache_blocks_reserved", "gauge", "KV-cache blocks reserved by running requests.",
         (double)st.blocks_reserved},
        {"retort_cache_blocks_total", "gauge", "KV-cache blocks in all.", (double)st.blocks_total},
        {"retort_connections_open", "gauge", "Client connections open (waiting for a request head, busy or idle).", open_conns},
        {"retort_connections_refused_total", "counter", "Connections refused at accept: over --max-connections.", ref_limit},
        {"retort_connections_refused_per_ip_total", "counter", "Connections refused at accept: over --max-connections-per-ip.",
         ref_ip},
        {"retort_header_timeouts_total", "counter", "Connections closed because a request head was late (--header-timeout).",
         late},
        {"retort_bad_request_lines_total", "counter", "Connections answered 400 and closed for a malformed request line.", bad},
    };
    for (size_t i = 0; i < sizeof g / sizeof *g; i++) {
        snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", g[i].name, g[i].help, g[i].name, g[i].type,
                 g[i].name, g[i].v);
        oai_buf_put(&b, line, strlen(line));
    }
    return send_body(s, conn, EP_METRICS, 200, "text/plain; version=0.0.4; charset=utf-8", b.s);
}

/* ---- connections: the gate, limits, deadlines ------------------------------------------ */

static const char *reason_of(unsigned status) {
    switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    default: return "Service Unavailable";
    }
}

/* Writes a whole error response straight to a socket that no one else writes to now (the
 * gate's, or libmicrohttpd's while it is still reading the request), best effort: the socket
 * is closed right after. */
static void write_raw_error(int fd, unsigned status, const char *msg) {
    char *body = oai_error_json((int)status, msg, NULL, NULL);
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %u %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     status, reason_of(status), body ? strlen(body) : 0, body ? body : "");
    free(body);
    if (n > 0) (void)!send(fd, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/* A 413 (or other error) while libmicrohttpd is still receiving the body: it cannot queue a
 * response then, so it is written to the socket, and the handler's MHD_NO closes it. */
static void send_raw_error(srv *s, struct MHD_Connection *conn, int ep, unsigned status, const char *msg) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) {
        write_raw_error(ci->connect_fd, status, msg);
        shutdown(ci->connect_fd, SHUT_WR);
    }
    pthread_mutex_lock(&s->mu);
    s->requests[ep]++;
    s->errors++;
    pthread_mutex_unlock(&s->mu);
}

/* The connection's request head is in (deadline 0), or the next one is due by `deadline`. */
static void head_received(srv *s, struct MHD_Connection *conn, double deadline) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (!ci) return;
    pthread_mutex_lock(&s->cmu);
    conn_rec *r = ci->socket_context;
    if (r) r->deadline = deadline;
    pthread_mutex_unlock(&s->cmu);
}

static unsigned ip_hash(const uint8_t *ip) {
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < 16; i++) h = (h ^ ip[i]) * 1099511628211ull;
    return (unsigned)(h % IP_BUCKETS);
}

static ip_count **ip_find(srv *s, const uint8_t *ip) {   /* under s->cmu; the link that holds it */
    ip_count **p = &s->ips[ip_hash(ip)];
    while (*p && memcmp((*p)->ip, ip, 16)) p = &(*p)->next;
    return p;
}

static void ip_of(const struct sockaddr_storage *a, uint8_t ip[16]) {
    memset(ip, 0, 16);
    if (a->ss_family == AF_INET6) {
        memcpy(ip, &((const struct sockaddr_in6 *)a)->sin6_addr, 16);
    } else if (a->ss_family == AF_INET) {
        ip[10] = ip[11] = 0xFF;
        memcpy(ip + 12, &((const struct sockaddr_in *)a)->sin_addr, 4);
    }
}

/* Drops a connection from the registry (under s->cmu); its socket is closed by its owner. */
static void conn_forget(srv *s, conn_rec *r) {
    if (r->prev) r->prev->next = r->next;
    else s->conns = r->next;
    if (r->next) r->next->prev = r->prev;
    if ((size_t)r->fd < s->cap_fd && s->by_fd[r->fd] == r) s->by_fd[r->fd] = NULL;
    ip_count **p = ip_find(s, r->ip);
    if (*p && --(*p)->n == 0) {
        ip_count *dead = *p;
        *p = dead->next;
        free(dead);
    }
    s->n_conns--;
    free(r);
}

/* libmicrohttpd took a connection over (its socket context is our record) or closed it; CLOSED
 * comes before it closes the socket, so a record's fd is always still open. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context, enum MHD_ConnectionNotificationCode code) {
    srv *s = cls;
    pthread_mutex_lock(&s->cmu);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        int fd = ci ? ci->connect_fd : -1;
        conn_rec *r = fd >= 0 && (size_t)fd < s->cap_fd ? s->by_fd[fd] : NULL;
        *socket_context = r && r->in_mhd ? r : NULL;
    } else if (*socket_context) {
        conn_forget(s, *socket_context);
        *socket_context = NULL;
    }
    pthread_mutex_unlock(&s->cmu);
}

/* An error response, then close: what the client sent is drained first (up to 64 KiB), so the
 * close sends FIN rather than RST, which could discard the response on its way. */
static void refuse_close(int fd, unsigned status, const char *msg) {
    write_raw_error(fd, status, msg);
    char junk[4096];
    for (int k = 0; k < 16 && recv(fd, junk, sizeof junk, MSG_DONTWAIT) > 0; k++) {}
    shutdown(fd, SHUT_WR);
    close(fd);
}

/* Closes a socket the gate still owns (with an error response when status is not 0). */
static void gate_close(srv *s, int fd, unsigned status, const char *msg) {
    pthread_mutex_lock(&s->cmu);
    conn_rec *r = (size_t)fd < s->cap_fd ? s->by_fd[fd] : NULL;
    if (r) conn_forget(s, r);
    if (status == 400) s->bad_lines++;
    if (status == 408) s->header_timeouts++;
    pthread_mutex_unlock(&s->cmu);
    epoll_ctl(s->ep_fd, EPOLL_CTL_DEL, fd, NULL);
    if (status) refuse_close(fd, status, msg);
    else close(fd);
}

/* A new connection: counted against the limits, then watched until its request line is in. */
static void gate_admit(srv *s, int fd, const struct sockaddr_storage *a, socklen_t alen, double t) {
    uint8_t ip[16];
    ip_of(a, ip);
    pthread_mutex_lock(&s->cmu);
    if ((size_t)fd < s->cap_fd && s->by_fd[fd]) conn_forget(s, s->by_fd[fd]);   /* closed unseen: stale */
    unsigned refuse = 0;
    ip_count **p = ip_find(s, ip);
    if (s->n_conns >= s->max_conns) refuse = 503, s->refused_limit++;
    else if (*p && (*p)->n >= s->max_per_ip) refuse = 429, s->refused_per_ip++;
    conn_rec *r = NULL;
    if (!refuse) {
        r = rt_calloc(1, sizeof *r);
        if (!*p && r && !(*p = rt_calloc(1, sizeof **p))) {
            free(r);
            r = NULL;
        }
        size_t cap = s->cap_fd;
        if (r && rt_grow((void **)&s->by_fd, &s->cap_fd, (size_t)fd + 1, sizeof *s->by_fd)) {
            free(r);
            r = NULL;
        }
        if (s->cap_fd > cap) memset(s->by_fd + cap, 0, (s->cap_fd - cap) * sizeof *s->by_fd);
        if (!r) {
            if (*p && !(*p)->n) {
                free(*p);
                *p = NULL;
            }
            refuse = 503;
        }
    }
    if (r) {
        if (!(*p)->n) memcpy((*p)->ip, ip, 16);
        (*p)->n++;
        r->fd = fd;
        memcpy(&r->addr, a, alen);
        r->addr_len = alen;
        memcpy(r->ip, ip, 16);
        r->deadline = t + s->header_timeout;
        r->next = s->conns;
        if (s->conns) s->conns->prev = r;
        s->conns = r;
        s->by_fd[fd] = r;
        s->n_conns++;
    }
    pthread_mutex_unlock(&s->cmu);
    if (refuse) {
        refuse_close(fd, refuse, refuse == 429 ? "too many connections from this address" : "the server is at its connection limit");
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = fd};
    if (epoll_ctl(s->ep_fd, EPOLL_CTL_ADD, fd, &ev)) gate_close(s, fd, 503, "the server cannot watch more connections");
}

/* New bytes on a gate connection: peeked (left for libmicrohttpd), checked, handed over. */
static void gate_read(srv *s, int fd) {
    char buf[GATE_LINE_MAX];
    ssize_t n = recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {   /* hung up */
        gate_close(s, fd, 0, NULL);
        return;
    }
    int v = oai_request_line(buf, (size_t)n);
    if (v == 0 && (size_t)n < sizeof buf) return;
    if (v <= 0) {
        gate_close(s, fd, 400, v < 0 ? "malformed HTTP request line" : "the request line is too long");
        return;
    }
    epoll_ctl(s->ep_fd, EPOLL_CTL_DEL, fd, NULL);
    struct sockaddr_storage a;
    socklen_t alen = 0;
    pthread_mutex_lock(&s->cmu);
    conn_rec *r = (size_t)fd < s->cap_fd ? s->by_fd[fd] : NULL;
    if (r) {
        r->in_mhd = true;
        a = r->addr;
        alen = r->addr_len;
    }
    pthread_mutex_unlock(&s->cmu);
    if (!r) {
        close(fd);
        return;
    }
    if (MHD_add_connection(s->d, fd, (const struct sockaddr *)&a, alen) != MHD_YES) {   /* it closed fd */
        pthread_mutex_lock(&s->cmu);
        if ((size_t)fd < s->cap_fd && s->by_fd[fd] == r) conn_forget(s, r);
        pthread_mutex_unlock(&s->cmu);
    }
}

/* Every 100 ms: late request heads, and parked connections whose client hung up. */
static void gate_sweep(srv *s, double t, struct pollfd **pf, size_t *cap_pf) {
    pthread_mutex_lock(&s->cmu);
    conn_rec *next;
    for (conn_rec *r = s->conns; r; r = next) {
        next = r->next;
        if (!(r->deadline > 0 && t > r->deadline)) continue;
        r->deadline = 0;
        s->header_timeouts++;
        if (r->in_mhd) {   /* libmicrohttpd sees the socket end and closes it */
            shutdown(r->fd, SHUT_RDWR);
        } else {
            int fd = r->fd;
            s->header_timeouts--;   /* gate_close counts it */
            pthread_mutex_unlock(&s->cmu);
            gate_close(s, fd, 408, "the request head did not arrive in time");
            pthread_mutex_lock(&s->cmu);
            next = s->conns;   /* the list changed: restart (deadlines passed are 0 now) */
        }
    }
    pthread_mutex_unlock(&s->cmu);
    pthread_mutex_lock(&s->mu);
    size_t n = 0;
    for (job *j = s->parked; j; j = j->park_next) n++;
    if (n && !rt_grow((void **)pf, cap_pf, n, sizeof **pf)) {
        n = 0;
        for (job *j = s->parked; j; j = j->park_next) (*pf)[n++] = (struct pollfd){.fd = j->fd, .events = POLLRDHUP};
        if (poll(*pf, n, 0) > 0) {
            job *jn;
            size_t i = 0;
            for (job *j = s->parked; j; j = jn, i++) {
                jn = j->park_next;
                if ((*pf)[i].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) {
                    j->gone = true;
                    job_cancel(j);
                    job_wake(j);
                }
            }
        }
    }
    pthread_mutex_unlock(&s->mu);
}

static void *gate_main(void *arg) {
    srv *s = arg;
    struct epoll_event ev[64];
    struct pollfd *pf = NULL;
    size_t cap_pf = 0;
    double next_sweep = 0, accept_again = 0;
    bool listening = true;
    for (;;) {
        int n = epoll_wait(s->ep_fd, ev, 64, 100);
        int mode = atomic_load(&s->gate_mode);
        if (mode == 2) break;
        double t = now_s();
        if (mode == 1 && listening) {   /* srv_stop: no new connections */
            epoll_ctl(s->ep_fd, EPOLL_CTL_DEL, s->listen_fd, NULL);
            close(s->listen_fd);
            pthread_mutex_lock(&s->cmu);
            s->listen_fd = -1;
            s->listener_closed = true;
            pthread_cond_broadcast(&s->gate_ack);
            pthread_mutex_unlock(&s->cmu);
            listening = false;
        }
        for (int i = 0; i < n; i++) {
            int fd = ev[i].data.fd;
            if (fd == s->wake_fd) {
                uint64_t x;
                (void)!read(s->wake_fd, &x, sizeof x);
            } else if (fd == s->listen_fd && listening) {
                for (;;) {
                    struct sockaddr_storage a;
                    socklen_t alen = sizeof a;
                    int c = accept4(s->listen_fd, (struct sockaddr *)&a, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c >= 0) {
                        gate_admit(s, c, &a, alen, t);
                        continue;
                    }
                    if (errno == EINTR || errno == ECONNABORTED) continue;
                    if (errno != EAGAIN && errno != EWOULDBLOCK) {   /* out of descriptors or memory: pause */
                        struct epoll_event off = {.events = 0, .data.fd = s->listen_fd};
                        epoll_ctl(s->ep_fd, EPOLL_CTL_MOD, s->listen_fd, &off);
                        accept_again = t + 0.1;
                    }
                    break;
                }
            } else if (fd != s->listen_fd) {
                gate_read(s, fd);
            }
        }
        if (t >= next_sweep) {
            gate_sweep(s, t, &pf, &cap_pf);
            next_sweep = t + 0.1;
        }
        if (accept_again > 0 && t >= accept_again && listening) {
            struct epoll_event on = {.events = EPOLLIN, .data.fd = s->listen_fd};
            epoll_ctl(s->ep_fd, EPOLL_CTL_MOD, s->listen_fd, &on);
            accept_again = 0;
        }
    }
    free(pf);
    pthread_mutex_lock(&s->cmu);   /* the connections still at the gate */
    conn_rec *next;
    for (conn_rec *r = s->conns; r; r = next) {
        next = r->next;
        if (!r->in_mhd) {
            close(r->fd);
            conn_forget(s, r);
        }
    }
    pthread_mutex_unlock(&s->cmu);
    return NULL;
}

static bool auth_ok(const srv *s, struct MHD_Connection *conn) {
    if (!s->api_key) return true;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    while (*h == ' ') h++;
    size_t a = strlen(h), b = strlen(s->api_key);
    unsigned char diff = a != b;
    for (size_t i = 0; i < a; i++) diff |= (unsigned char)(h[i] ^ s->api_key[i % (b ? b : 1)]);
    return diff == 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    srv *s = cls;
    conn_ctx *cx = *con_cls;
    if (!cx) {   /* the request head is in: its deadline is met */
        head_received(s, conn, 0);
        if (!(cx = rt_calloc(1, sizeof *cx))) return MHD_NO;
        *con_cls = cx;
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
            return send_error(s, conn, EP_OTHER, 404, m, NULL, NULL);
        }
        if (!strncmp(url, "/v1/", 4) && !auth_ok(s, conn))
            return send_error(s, conn, cx->ep, 401, "missing or incorrect API key (Authorization: Bearer KEY)", NULL,
                              "invalid_api_key");
        bool gen = cx->ep == EP_CHAT || cx->ep == EP_COMPLETIONS;
        if ((gen && !post) || (!gen && !get)) {
            char m[128];
            snprintf(m, sizeof m, "%s is not allowed here (use %s)", method, gen ? "POST" : "GET");
            return send_error(s, conn, cx->ep, 405, m, NULL, NULL);
        }
        if (cx->ep == EP_MODELS) {
            json_t *j = json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:I}]}", "object", "list", "data", "id", s->model_name,
                                  "object", "model", "created", (json_int_t)s->started, "owned_by", "retort",
                                  "max_model_len", (json_int_t)s->ctx);
            return send_json(s, conn, EP_MODELS, 200, j);
        }
        if (cx->ep == EP_HEALTH) return send_body(s, conn, EP_HEALTH, 200, "application/json", rt_strdup("{\"status\":\"ok\"}"));
        if (cx->ep == EP_METRICS) return handle_metrics(s, conn);
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->o.max_body) {
            char m[128];
            snprintf(m, sizeof m, "the request body is over the limit of %zu bytes", s->o.max_body);
            return send_error(s, conn, cx->ep, 413, m, NULL, NULL);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (cx->body.len + *upload_size > s->o.max_body) {   /* (chunked) answered now, the rest unread */
            char m[128];
            snprintf(m, sizeof m, "the request body is over the limit of %zu bytes", s->o.max_body);
            send_raw_error(s, conn, cx->ep, 413, m);
            return MHD_NO;   /* closes the connection */
        }
        if (oai_buf_put(&cx->body, upload, *upload_size)) return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    if (cx->ep != EP_CHAT && cx->ep != EP_COMPLETIONS) return MHD_YES;   /* already answered */
    if (cx->j) return generate_answer(s, conn, cx);   /* resumed */
    return handle_generate(s, conn, cx);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
    srv *s = cls;
    conn_ctx *cx = *con_cls;
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) head_received(s, conn, now_s() + s->header_timeout);   /* the next one's */
    if (!cx) return;
    *con_cls = NULL;
    if (cx->j) {
        job *j = cx->j;
        pthread_mutex_lock(&s->mu);
        j->conn = NULL;
        job_wake(j);   /* never parked here; for safety */
        bool counted = j->id[0] != 0;   /* handed to the engine: in_flight counts it */
        if (counted && j->state < 2) job_cancel(j);   /* still running: the client went away */
        if (counted && --s->in_flight == 0) pthread_cond_broadcast(&s->drained);
        job_unref(j);
        pthread_mutex_unlock(&s->mu);
    }
    oai_buf_free(&cx->body);
    free(cx);
}

/* ---- start and stop -------------------------------------------------------------------- */

static int listen_on(const char *host, int port, int *fd_out, int *port_out) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int g = getaddrinfo(host, ps, &hints, &res);
    if (g) return rt_fail(RT_EIO, "cannot listen on %s:%d: %s", host, port, gai_strerror(g));
    int err = 0, fd = -1;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) || listen(fd, 256)) {
            err = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) return rt_fail(RT_EIO, "cannot listen on %s:%d: %s", host, port, strerror(err));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return 0;
}

int srv_start(te_model *m, const tok_tokenizer *tok, const srv_opts *opts, srv **out) {
    *out = NULL;
    srv *s = rt_calloc(1, sizeof *s);
    if (!s) return RT_ENOMEM;
    s->o = *opts;
    s->listen_fd = -1;
    s->m = m;
    s->tok = tok;
    s->ctx = te_model_config(m)->max_position_embeddings;
    s->vocab = te_model_config(m)->vocab_size;
    s->started = (int64_t)time(NULL);
    s->next_tag = 1;
    if (!s->o.max_body) s->o.max_body = 4u << 20;
    s->host = rt_strdup(opts->host ? opts->host : "127.0.0.1");
    s->model_name = rt_strdup(opts->model_name ? opts->model_name : "retort");
    s->api_key = opts->api_key && *opts->api_key ? rt_strdup(opts->api_key) : NULL;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_cond_init(&s->drained, NULL);
    pthread_mutex_init(&s->cmu, NULL);
    pthread_cond_init(&s->gate_ack, NULL);
    s->ep_fd = s->wake_fd = -1;
    s->max_conns = opts->max_connections > 0 ? opts->max_connections : 4096;
    s->max_per_ip = opts->max_connections_per_ip > 0 ? opts->max_connections_per_ip : 512;
    s->header_timeout = opts->header_timeout > 0 ? opts->header_timeout : 10;
    unsigned http_threads = opts->http_threads > 0 ? (unsigned)opts->http_threads : 4;
    int rc = 0;
    if (opts->api_key && !*opts->api_key) rc = rt_fail(RT_EINVAL, "serve: an empty API key (NULL: no authentication)");
    if (!rc && (!s->host || !s->model_name || (opts->api_key && !s->api_key))) rc = RT_ENOMEM;
    te_opts eo = s->o.engine;
    eo.tok = tok;
    eo.on_token = on_token;
    eo.user = s;
    if (!rc && opts->comm && comm_size(opts->comm) > 1 && !opts->on_comm_failure)
        rc = rt_fail(RT_EINVAL, "serve: a lockstep engine needs on_comm_failure");
    if (!rc) rc = te_engine_create(m, &eo, &s->e);
    if (!rc) te_stats_get(s->e, &s->st);
    if (!rc) rc = listen_on(s->host, opts->port, &s->listen_fd, &s->port);
    if (!rc && pthread_create(&s->engine_thread, NULL, engine_main, s)) rc = rt_fail(RT_EINTERNAL, "cannot start the engine thread");
    if (!rc) s->engine_started = true;
    if (!rc) {   /* connections come from the gate (MHD_add_connection); the limit is a backstop */
        unsigned limit = (unsigned)s->max_conns + 64 + 2 * http_threads;
        s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                                    MHD_USE_NO_LISTEN_SOCKET,
                                0, NULL, NULL, on_request, s, MHD_OPTION_THREAD_POOL_SIZE, http_threads,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
                                MHD_OPTION_CONNECTION_TIMEOUT, 300u, MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_END);
        if (!s->d) rc = rt_fail(RT_EINTERNAL, "libmicrohttpd did not start on %s:%d", s->host, s->port);
    }
    if (!rc) {
        int fl = fcntl(s->listen_fd, F_GETFL);
        struct epoll_event el = {.events = EPOLLIN, .data.fd = s->listen_fd};
        s->ep_fd = epoll_create1(EPOLL_CLOEXEC);
        s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event ew = {.events = EPOLLIN, .data.fd = s->wake_fd};
        if (fl < 0 || fcntl(s->listen_fd, F_SETFL, fl | O_NONBLOCK) || s->ep_fd < 0 || s->wake_fd < 0 ||
            epoll_ctl(s->ep_fd, EPOLL_CTL_ADD, s->listen_fd, &el) || epoll_ctl(s->ep_fd, EPOLL_CTL_ADD, s->wake_fd, &ew))
            rc = rt_fail(RT_EINTERNAL, "serve: cannot set up the connection gate: %s", strerror(errno));
    }
    if (!rc && pthread_create(&s->gate_thread, NULL, gate_main, s)) rc = rt_fail(RT_EINTERNAL, "cannot start the gate thread");
    if (!rc) s->gate_started = true;
    if (rc) {
        srv_stop(s);
        return rc;
    }
    *out = s;
    return 0;
}

int srv_port(const srv *s) { return s->port; }

static void gate_signal(srv *s, int mode) {
    atomic_store(&s->gate_mode, mode);
    uint64_t one = 1;
    (void)!write(s->wake_fd, &one, sizeof one);
}

void srv_stop(srv *s) {
    if (!s) return;
    if (s->gate_started) {   /* no new connections */
        gate_signal(s, 1);
        pthread_mutex_lock(&s->cmu);
        while (!s->listener_closed) pthread_cond_wait(&s->gate_ack, &s->cmu);
        pthread_mutex_unlock(&s->cmu);
    }
    if (s->d) {   /* the requests in flight finish (the gate still sweeps: hang-ups cancel) */
        pthread_mutex_lock(&s->mu);
        s->draining = true;
        while (s->in_flight > 0) pthread_cond_wait(&s->drained, &s->mu);
        pthread_mutex_unlock(&s->mu);
    }
    if (s->gate_started) {
        gate_signal(s, 2);
        pthread_join(s->gate_thread, NULL);
    }
    if (s->d) {
        pthread_mutex_lock(&s->mu);   /* none should be parked now; libmicrohttpd must not stop with one */
        while (s->parked) {
            s->parked->gone = true;
            job_wake(s->parked);
        }
        pthread_mutex_unlock(&s->mu);
        MHD_stop_daemon(s->d);
    }
    if (s->listen_fd >= 0) close(s->listen_fd);
    if (s->ep_fd >= 0) close(s->ep_fd);
    if (s->wake_fd >= 0) close(s->wake_fd);
    if (s->engine_started) {
        pthread_mutex_lock(&s->mu);
        s->stop_engine = true;
        pthread_cond_signal(&s->wake);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->engine_thread, NULL);
    }
    pthread_mutex_lock(&s->mu);
    while (s->n_active) drop_active(s, s->active[0]);
    pthread_mutex_unlock(&s->mu);
    te_engine_free(s->e);
    free(s->active);
    free(s->cancel);
    while (s->conns) conn_forget(s, s->conns);   /* none remain: libmicrohttpd closed its own */
    for (int i = 0; i < IP_BUCKETS; i++)
        while (s->ips[i]) {
            ip_count *n = s->ips[i]->next;
            free(s->ips[i]);
            s->ips[i] = n;
        }
    free(s->by_fd);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->drained);
    pthread_mutex_destroy(&s->cmu);
    pthread_cond_destroy(&s->gate_ack);
    free(s->host);
    free(s->model_name);
    free(s->api_key);
    free(s);
}

/* teacher/oai_client.c — OpenAI-compatible chat/completions client (see oai_client.h). */
#include "teacher/oai_client.h"

#include <curl/curl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/status.h"

/* ---- responses ---- */

void oai_response_init(oai_response *r) {
    *r = (oai_response){.prompt_tokens = -1, .completion_tokens = -1, .reasoning_tokens = -1};
}

void oai_response_free(oai_response *r) {
    if (!r) return;
    free(r->content);
    free(r->reasoning);
    free(r->finish_reason);
    free(r->model);
    free(r->logprobs);
    free(r->top_ids);
    free(r->top_logprobs);
    oai_response_init(r);
}

static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (rt_grow((void **)buf, cap, *len + n + 1, 1)) return rt_fail(RT_ENOMEM, "out of memory");
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

static int ensure_strings(oai_response *r) {
    int rc = 0;
    if (!r->content) rc = append(&r->content, &r->content_len, &r->content_cap, "", 0);
    if (!rc && !r->reasoning) rc = append(&r->reasoning, &r->reasoning_len, &r->reasoning_cap, "", 0);
    return rc;
}

static int set_str(char **dst, const json_t *v) {
    if (!json_is_string(v)) return 0;
    char *s = rt_strdup(json_string_value(v));
    if (!s) return rt_fail(RT_ENOMEM, "out of memory");
    free(*dst);
    *dst = s;
    return 0;
}

static int32_t token_id_of(const char *tok) {
    if (!tok || strncmp(tok, "token_id:", 9)) return -1;
    char *end;
    long v = strtol(tok + 9, &end, 10);
    return *end || end == tok + 9 || v < 0 || v > INT32_MAX ? -1 : (int32_t)v;
}

static int add_logprobs(oai_response *r, const json_t *content) {
    if (!json_is_array(content)) return 0;
    size_t i;
    const json_t *x;
    json_array_foreach(content, i, x) {
        const json_t *lp = json_object_get(x, "logprob"), *top = json_object_get(x, "top_logprobs");
        if (!json_is_number(lp)) continue;
        if (r->n_tokens == 0 && r->top_k == 0 && json_is_array(top))
            r->top_k = (int)(json_array_size(top) < OAI_MAX_TOP ? json_array_size(top) : OAI_MAX_TOP);
        if (r->n_tokens + 1 > r->tok_cap) {
            size_t cap = r->tok_cap ? 2 * r->tok_cap : 256;
            float *a = rt_realloc(r->logprobs, cap * sizeof *a);
            if (!a) return rt_fail(RT_ENOMEM, "out of memory");
            r->logprobs = a;
            if (r->top_k) {
                int32_t *b = rt_realloc(r->top_ids, cap * (size_t)r->top_k * sizeof *b);
                if (!b) return rt_fail(RT_ENOMEM, "out of memory");
                r->top_ids = b;
                float *c = rt_realloc(r->top_logprobs, cap * (size_t)r->top_k * sizeof *c);
                if (!c) return rt_fail(RT_ENOMEM, "out of memory");
                r->top_logprobs = c;
            }
            r->tok_cap = cap;
        }
        size_t t = r->n_tokens++;
        r->logprobs[t] = (float)json_number_value(lp);
        for (int k = 0; k < r->top_k; k++) {
            const json_t *e = json_array_get(top, (size_t)k);
            const json_t *el = json_object_get(e, "logprob");
            r->top_ids[t * (size_t)r->top_k + (size_t)k] = token_id_of(json_string_value(json_object_get(e, "token")));
            r->top_logprobs[t * (size_t)r->top_k + (size_t)k] = json_is_number(el) ? (float)json_number_value(el) : -INFINITY;
        }
    }
    return 0;
}

static int add_usage(oai_response *r, const json_t *u) {
    if (!json_is_object(u)) return 0;
    const json_t *p = json_object_get(u, "prompt_tokens"), *c = json_object_get(u, "completion_tokens"),
                 *d = json_object_get(json_object_get(u, "completion_tokens_details"), "reasoning_tokens");
    if (json_is_integer(p)) r->prompt_tokens = json_integer_value(p);
    if (json_is_integer(c)) r->completion_tokens = json_integer_value(c);
    if (json_is_integer(d)) r->reasoning_tokens = json_integer_value(d);
    return 0;
}

static int add_text(oai_response *r, const json_t *msg) {
    if (!json_is_object(msg)) return 0;
    const json_t *c = json_object_get(msg, "content"), *rc_ = json_object_get(msg, "reasoning_content");
    if (!json_is_string(rc_)) rc_ = json_object_get(msg, "reasoning");
    int rc = 0;
    if (json_is_string(c)) rc = append(&r->content, &r->content_len, &r->content_cap, json_string_value(c), json_string_length(c));
    if (!rc && json_is_string(rc_)) {
        if (json_string_length(rc_)) r->has_reasoning = true;
        rc = append(&r->reasoning, &r->reasoning_len, &r->reasoning_cap, json_string_value(rc_), json_string_length(rc_));
    }
    return rc;
}

/* One JSON object: a stream chunk (delta) or a whole response (message). */
static int parse_object(oai_response *r, const json_t *j, bool stream) {
    if (!json_is_object(j)) return rt_fail(RT_EFORMAT, "response is not a JSON object");
    const json_t *err = json_object_get(j, "error");
    if (err && !json_is_null(err)) {
        const json_t *m = json_is_object(err) ? json_object_get(err, "message") : err;
        return rt_fail(RT_EIO, "server error: %s", json_is_string(m) ? json_string_value(m) : "(no message)");
    }
    int rc = set_str(&r->model, json_object_get(j, "model"));
    if (!rc) rc = add_usage(r, json_object_get(j, "usage"));
    const json_t *ch = json_object_get(j, "choices");
    if (!rc && !stream && (!json_is_array(ch) || json_array_size(ch) == 0))
        return rt_fail(RT_EFORMAT, "response has no choices");
    const json_t *c0 = json_array_get(ch, 0);
    if (!rc && c0) {
        rc = add_text(r, json_object_get(c0, stream ? "delta" : "message"));
        if (!rc) rc = set_str(&r->finish_reason, json_object_get(c0, "finish_reason"));
        if (!rc) rc = add_logprobs(r, json_object_get(json_object_get(c0, "logprobs"), "content"));
    }
    return rc;
}

int oai_parse_body(const char *body, size_t n, oai_response *r) {
    json_error_t je;
    json_t *j = json_loadb(body, n, 0, &je);
    if (!j) return rt_fail(RT_EFORMAT, "response is not JSON: %s", je.text);
    int rc = parse_object(r, j, false);
    json_decref(j);
    if (!rc) rc = ensure_strings(r);
    if (!rc) r->done = true;
    return rc;
}

/* ---- SSE ---- */

void oai_sse_init(oai_sse *p, oai_response *r) { *p = (oai_sse){.r = r}; }

void oai_sse_free(oai_sse *p) {
    if (!p) return;
    free(p->data);
    free(p->line);
    p->data = p->line = NULL;
}

static int dispatch(oai_sse *p) {
    if (!p->has_data) return 0;
    p->has_data = false;
    const char *d = p->data ? p->data : "";
    size_t n = p->data_len;
    p->data_len = 0;
    if (p->r->done) return 0;   /* events after [DONE] are ignored */
    if (n == 6 && !memcmp(d, "[DONE]", 6)) {
        p->r->done = true;
        return 0;
    }
    json_error_t je;
    json_t *j = json_loadb(d, n, 0, &je);
    if (!j) return rt_fail(RT_EFORMAT, "stream event is not JSON: %s", je.text);
    int rc = parse_object(p->r, j, true);
    json_decref(j);
    return rc;
}

static int process_line(oai_sse *p) {
    const char *l = p->line ? p->line : "";
    size_t n = p->line_len;
    p->line_len = 0;
    if (n == 0) return dispatch(p);
    if (l[0] == ':') return 0;
    const char *colon = memchr(l, ':', n);
    size_t fl = colon ? (size_t)(colon - l) : n;
    if (fl != 4 || memcmp(l, "data", 4)) return 0;   /* event:, id:, retry: … */
    const char *v = colon ? colon + 1 : l + n;
    if (v < l + n && *v == ' ') v++;
    size_t vl = (size_t)(l + n - v);
    int rc = 0;
    if (p->has_data) rc = append(&p->data, &p->data_len, &p->data_cap, "\n", 1);
    if (!rc) rc = append(&p->data, &p->data_len, &p->data_cap, v, vl);
    p->has_data = true;
    return rc;
}

int oai_sse_feed(oai_sse *p, const char *buf, size_t n) {
    for (size_t i = 0; i < n && !p->err; i++) {
        char ch = buf[i];
        if (ch == '\n' && p->after_cr) {
            p->after_cr = false;
            continue;
        }
        p->after_cr = false;
        if (ch == '\r' || ch == '\n') {
            p->after_cr = ch == '\r';
            p->err = process_line(p);
        } else {
            /* fast path: copy up to the next line end */
            size_t j = i;
            while (j < n && buf[j] != '\r' && buf[j] != '\n') j++;
            p->err = append(&p->line, &p->line_len, &p->line_cap, buf + i, j - i);
            i = j - 1;
        }
    }
    return p->err;
}

int oai_sse_finish(oai_sse *p) {
    if (p->err) return p->err;
    /* an unterminated last event is discarded, as the SSE spec says */
    int rc = ensure_strings(p->r);
    /* complete: [DONE], or (a server that never sends it) a finish_reason arrived */
    if (!rc && !p->r->done && !p->r->finish_reason)
        rc = rt_fail(RT_EFORMAT, "the stream ended before a finish_reason or [DONE] (truncated)");
    return rc;
}

/* ---- text ---- */

static bool ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static void trim(const char **s, size_t *n) {
    while (*n && ws(**s)) (*s)++, (*n)--;
    while (*n && ws((*s)[*n - 1])) (*n)--;
}

static const char *find(const char *s, size_t n, const char *needle) {
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (!memcmp(s + i, needle, m)) return s + i;
    return NULL;
}

int oai_compose_text(const char *reasoning, size_t rlen, bool has_reasoning, const char *content, size_t clen,
                     bool think_prefix, char **out, size_t *out_len) {
    const char *R = reasoning ? reasoning : "", *A = content ? content : "";
    size_t rl = reasoning ? rlen : 0, al = content ? clen : 0;
    bool closed = false, thinking = has_reasoning && rl > 0;
    if (thinking) {
        const char *a = A;
        size_t n = al;
        trim(&a, &n);
        closed = n > 0;
    } else {
        const char *c = A;
        size_t n = al;
        while (n && ws(*c)) c++, n--;
        bool opened = n >= 7 && !memcmp(c, "<think>", 7);
        const char *close = find(A, al, "</think>");
        if (opened || close || think_prefix) {
            thinking = true;
            if (opened) {
                R = c + 7;
                rl = n - 7;
            } else {
                R = A;
                rl = al;
            }
            if (close && close >= R) {
                closed = true;
                A = close + 8;
                al = (size_t)(content + clen - A);
                rl = (size_t)(close - R);
            } else {
                A = "";
                al = 0;
            }
        }
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    if (!thinking) rc = append(&buf, &len, &cap, A, al);
    else {
        trim(&R, &rl);
        trim(&A, &al);
        rc = append(&buf, &len, &cap, "<think>\n", 8);
        if (!rc) rc = append(&buf, &len, &cap, R, rl);
        if (!rc && closed) rc = append(&buf, &len, &cap, "\n</think>\n\n", 11);
        if (!rc && closed) rc = append(&buf, &len, &cap, A, al);
    }
    if (!rc && !buf) rc = append(&buf, &len, &cap, "", 0);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *out_len = len;
    return 0;
}

/* ---- retry policy ---- */

double oai_backoff_s(const oai_opts *o, int attempt, double u, double retry_after_s) {
    double base = o->backoff_base_s > 0 ? o->backoff_base_s : 0.5, cap = o->backoff_cap_s > 0 ? o->backoff_cap_s : 60;
    double hi = base * ldexp(1.0, attempt < 62 ? attempt : 62);
    if (hi > cap) hi = cap;
    double d = u * hi;
    return retry_after_s > d ? retry_after_s : d;
}

double oai_retry_after_parse(const char *v, double now) {
    while (*v == ' ' || *v == '\t') v++;
    if (*v >= '0' && *v <= '9') {
        char *end;
        double s = strtod(v, &end);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n') end++;
        return *end || !isfinite(s) || s < 0 ? -1 : s;
    }
    struct tm tm = {0};
    const char *e = strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!e) return -1;
    double t = (double)timegm(&tm) - now;
    return t > 0 ? t : 0;
}

/* ---- client ---- */

typedef struct req {
    uint64_t tag;
    char *body;
    int attempts;
    double not_before;
    char *last_err;
    long last_http;
    struct req *next;
} req;

typedef struct {
    CURL *h;
    req *r;
    struct curl_slist *hdrs;
    oai_response resp;
    oai_sse sse;
    char *buf;            /* non-streamed body, or an error body */
    size_t len, cap;
    double retry_after;   /* seconds, -1 none */
    bool plain;           /* streaming was asked for, but the 200 response is one JSON body */
    bool ct_checked;
    double t0;
    char errbuf[CURL_ERROR_SIZE];
} slot;

struct oai_client {
    oai_opts o;
    char *url, *auth;
    CURLM *m;
    slot *slots;
    int n_slots, busy;
    req *q_head, *q_tail;   /* new requests, FIFO */
    req *wait;              /* retries sleeping out their backoff (unsorted) */
    size_t n_queued, n_wait, retries;
    uint64_t rng;
    oai_result *out;
    size_t n_out, out_cap;
};

static double next_u(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

/* base URL + what ("/chat/completions", "/models"); a URL without a path gets "/v1". */
static char *endpoint(const char *url, const char *what) {
    size_t n = strlen(url);
    static const char cc[] = "/chat/completions";
    if (n >= sizeof cc - 1 && !strcmp(url + n - (sizeof cc - 1), cc)) n -= sizeof cc - 1;
    while (n && url[n - 1] == '/') n--;
    const char *host = strstr(url, "://");
    bool bare = host && !memchr(host + 3, '/', n - (size_t)(host + 3 - url));
    size_t m = n + strlen(what) + 4;
    char *s = rt_malloc(m);
    if (s) snprintf(s, m, "%.*s%s%s", (int)n, url, bare ? "/v1" : "", what);
    return s;
}

static int curl_global(void) {
    /* curl_global_init is reference counted and thread-safe in libcurl ≥ 7.84 */
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : rt_fail(RT_EINTERNAL, "curl_global_init failed");
}

int oai_client_new(const oai_opts *o, oai_client **out) {
    *out = NULL;
    if (!o->url || strncmp(o->url, "http", 4)) return rt_fail(RT_EINVAL, "endpoint URL must start with http:// or https://");
    int rc = curl_global();
    if (rc) return rc;
    oai_client *c = rt_calloc(1, sizeof *c);
    if (!c) return rt_fail(RT_ENOMEM, "out of memory");
    c->o = *o;
    if (c->o.concurrency <= 0) c->o.concurrency = 8;
    if (c->o.timeout_s <= 0) c->o.timeout_s = 600;
    if (c->o.max_retries < 0) c->o.max_retries = 8;
    c->rng = o->jitter_seed ^ 0x5851f42d4c957f2dull;
    c->url = endpoint(o->url, "/chat/completions");
    if (o->api_key && *o->api_key) {
        size_t n = strlen(o->api_key) + 32;
        if ((c->auth = rt_malloc(n))) snprintf(c->auth, n, "Authorization: Bearer %s", o->api_key);
    }
    c->n_slots = c->o.concurrency;
    c->slots = rt_calloc((size_t)c->n_slots, sizeof *c->slots);
    c->m = curl_multi_init();
    if (!c->url || !c->slots || (o->api_key && *o->api_key && !c->auth)) rc = rt_fail(RT_ENOMEM, "out of memory");
    else if (!c->m) rc = rt_fail(RT_EINTERNAL, "curl_multi_init failed");
    if (!rc) {
        curl_multi_setopt(c->m, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)c->n_slots);
        c->o.url = c->url;
        c->o.api_key = NULL;   /* not kept past this call */
    }
    if (rc) {
        oai_client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static void req_free(req *r) {
    if (!r) return;
    free(r->body);
    free(r->last_err);
    free(r);
}

static void slot_clear(oai_client *c, slot *s) {
    if (s->h) {
        curl_multi_remove_handle(c->m, s->h);
        curl_easy_cleanup(s->h);
    }
    curl_slist_free_all(s->hdrs);
    oai_sse_free(&s->sse);
    oai_response_free(&s->resp);
    free(s->buf);
    *s = (slot){0};
}

void oai_abort_all(oai_client *c) {
    if (!c) return;
    for (int i = 0; c->slots && i < c->n_slots; i++)
        if (c->slots[i].r) {
            req_free(c->slots[i].r);
            slot_clear(c, &c->slots[i]);
        }
    c->busy = 0;
    for (req *r = c->q_head, *nx; r; r = nx) nx = r->next, req_free(r);
    for (req *r = c->wait, *nx; r; r = nx) nx = r->next, req_free(r);
    c->q_head = c->q_tail = c->wait = NULL;
    c->n_queued = c->n_wait = 0;
}

void oai_client_free(oai_client *c) {
    if (!c) return;
    oai_abort_all(c);
    oai_results_free(c->out, c->n_out);
    free(c->slots);
    if (c->m) curl_multi_cleanup(c->m);
    free(c->url);
    if (c->auth) {
        memset(c->auth, 0, strlen(c->auth));
        free(c->auth);
    }
    free(c);
    curl_global_cleanup();
}

int oai_submit(oai_client *c, const char *body, uint64_t tag) {
    req *r = rt_calloc(1, sizeof *r);
    if (r) r->body = rt_strdup(body);
    if (!r || !r->body) {
        free(r);
        return rt_fail(RT_ENOMEM, "out of memory");
    }
    r->tag = tag;
    if (c->q_tail) c->q_tail->next = r;
    else c->q_head = r;
    c->q_tail = r;
    c->n_queued++;
    return 0;
}

size_t oai_pending(const oai_client *c) { return c->n_queued + (size_t)c->busy + c->n_wait; }

void oai_stats_get(const oai_client *c, oai_stats *s) {
    *s = (oai_stats){.queued = c->n_queued, .in_flight = (size_t)c->busy, .waiting = c->n_wait, .retries = c->retries};
}

static size_t on_header(char *b, size_t sz, size_t n, void *ud) {
    slot *s = ud;
    size_t len = sz * n;
    if (len > 12 && !strncasecmp(b, "retry-after:", 12)) {
        char v[128];
        size_t k = len - 12 < sizeof v - 1 ? len - 12 : sizeof v - 1;
        memcpy(v, b + 12, k);
        v[k] = 0;
        s->retry_after = oai_retry_after_parse(v, (double)time(NULL));
    }
    return len;
}

static size_t on_body(char *b, size_t sz, size_t n, void *ud) {
    slot *s = ud;
    size_t len = sz * n;
    long code = 0;
    curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &code);
    if (code == 200 && s->sse.r && !s->plain) {
        if (!s->ct_checked) {   /* first bytes: a server may answer JSON despite "stream": true */
            char *ct = NULL;
            curl_easy_getinfo(s->h, CURLINFO_CONTENT_TYPE, &ct);
            if (ct && !strncasecmp(ct, "application/json", 16)) s->plain = true;
            s->ct_checked = true;
        }
        if (!s->plain) {
            oai_sse_feed(&s->sse, b, len);   /* errors are sticky; checked at the end */
            return len;
        }
    }
    if (code == 200 && s->plain) {
        if (append(&s->buf, &s->len, &s->cap, b, len)) return 0;
        return len;
    }
    if (code != 200 && s->len > 4096) return len;   /* enough of an error body */
    if (append(&s->buf, &s->len, &s->cap, b, len)) return 0;
    return len;
}

static int start(oai_client *c, slot *s, req *r) {
    *s = (slot){.r = r, .retry_after = -1};
    oai_response_init(&s->resp);
    if (c->o.stream) oai_sse_init(&s->sse, &s->resp);
    s->h = curl_easy_init();
    if (!s->h) return rt_fail(RT_EINTERNAL, "curl_easy_init failed");
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (h) h = curl_slist_append(h, "Expect:");
    if (h && c->o.stream) h = curl_slist_append(h, "Accept: text/event-stream");
    if (h && c->auth) h = curl_slist_append(h, c->auth);
    if (!h) return rt_fail(RT_ENOMEM, "out of memory");
    s->hdrs = h;
    CURL *e = s->h;
    curl_easy_setopt(e, CURLOPT_URL, c->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(r->body));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(e, CURLOPT_PRIVATE, s);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(c->o.timeout_s * 1000));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(c->o.timeout_s < 30 ? c->o.timeout_s * 1000 : 30000));
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    s->t0 = now_s();
    if (curl_multi_add_handle(c->m, e) != CURLM_OK) return rt_fail(RT_EINTERNAL, "curl_multi_add_handle failed");
    c->busy++;
    return 0;
}

static int push_result(oai_client *c, oai_result *r) {
    if (rt_grow((void **)&c->out, &c->out_cap, c->n_out + 1, sizeof *c->out)) return rt_fail(RT_ENOMEM, "out of memory");
    c->out[c->n_out++] = *r;
    return 0;
}

/* The server's error message from a JSON error body, or the body's first line. */
static void error_text(const char *body, size_t len, char *out, size_t cap) {
    json_t *j = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    const json_t *e = json_object_get(j, "error"), *m = json_is_object(e) ? json_object_get(e, "message") : e;
    if (!json_is_string(m)) m = json_object_get(j, "message");
    if (!json_is_string(m)) m = json_object_get(j, "detail");
    const char *s = json_is_string(m) ? json_string_value(m) : body ? body : "";
    size_t k = 0;
    for (; s[k] && k + 1 < cap && k < 300; k++) out[k] = s[k] == '\n' || s[k] == '\r' ? ' ' : s[k];
    out[k] = 0;
    json_decref(j);
}

static int finish(oai_client *c, slot *s, CURLcode cc) {
    req *r = s->r;
    long code = 0;
    curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &code);
    double lat = now_s() - s->t0;
    r->attempts++;
    r->last_http = code;
    char msg[512];
    bool retry = false, fatal = false;
    msg[0] = 0;
    if (cc != CURLE_OK) {
        retry = true;
        snprintf(msg, sizeof msg, "%s%s%s", curl_easy_strerror(cc), s->errbuf[0] ? ": " : "", s->errbuf);
    } else if (code == 200) {
        int prc = c->o.stream && !s->plain ? oai_sse_finish(&s->sse)
                                           : oai_parse_body(s->buf ? s->buf : "", s->len, &s->resp);
        if (prc) {
            retry = true;
            snprintf(msg, sizeof msg, "%s", rt_errmsg());
        }
    } else {
        char et[320];
        error_text(s->buf, s->len, et, sizeof et);
        snprintf(msg, sizeof msg, "HTTP %ld%s%s", code, et[0] ? ": " : "", et);
        retry = code == 408 || code == 409 || code == 429 || code >= 500;
        fatal = !retry;
    }
    int rc = 0;
    if (!msg[0]) {   /* success */
        oai_result res = {.tag = r->tag, .attempts = r->attempts, .http_status = code, .latency_s = lat, .resp = s->resp};
        oai_response_init(&s->resp);
        rc = push_result(c, &res);
        req_free(r);
    } else if (retry && r->attempts <= c->o.max_retries) {
        free(r->last_err);
        r->last_err = rt_strdup(msg);
        double d = oai_backoff_s(&c->o, r->attempts - 1, next_u(&c->rng), s->retry_after);
        r->not_before = now_s() + d;
        r->next = c->wait;
        c->wait = r;
        c->n_wait++;
        c->retries++;
    } else {
        char full[700];
        if (fatal) snprintf(full, sizeof full, "%s: %s", c->url, msg);
        else snprintf(full, sizeof full, "%s: gave up after %d attempts: %s", c->url, r->attempts, msg);
        oai_result res = {.tag = r->tag, .status = RT_EIO, .fatal = fatal, .err = rt_strdup(full),
                          .attempts = r->attempts, .http_status = code, .latency_s = lat};
        oai_response_init(&res.resp);
        rc = push_result(c, &res);
        req_free(r);
    }
    s->r = NULL;
    slot_clear(c, s);
    c->busy--;
    return rc;
}

static int fill(oai_client *c, double now) {
    for (int i = 0; i < c->n_slots; i++) {
        slot *s = &c->slots[i];
        if (s->r) continue;
        req *r = NULL;
        /* due retries first, then new requests */
        for (req **pp = &c->wait; *pp; pp = &(*pp)->next)
            if ((*pp)->not_before <= now) {
                r = *pp;
                *pp = r->next;
                c->n_wait--;
                break;
            }
        if (!r && c->q_head) {
            r = c->q_head;
            c->q_head = r->next;
            if (!c->q_head) c->q_tail = NULL;
            c->n_queued--;
        }
        if (!r) break;
        r->next = NULL;
        int rc = start(c, s, r);
        if (rc) {
            req_free(r);
            slot_clear(c, s);
            return rc;
        }
    }
    return 0;
}

int oai_poll(oai_client *c, double max_wait_s, oai_result **res, size_t *n_res) {
    *res = NULL;
    *n_res = 0;
    double deadline = now_s() + (max_wait_s > 0 ? max_wait_s : 0);
    int rc = 0;
    for (;;) {
        double now = now_s();
        if ((rc = fill(c, now))) break;
        int running = 0;
        if (curl_multi_perform(c->m, &running) != CURLM_OK) {
            rc = rt_fail(RT_EINTERNAL, "curl_multi_perform failed");
            break;
        }
        CURLMsg *msg;
        int left;
        while (!rc && (msg = curl_multi_info_read(c->m, &left)))
            if (msg->msg == CURLMSG_DONE) {
                slot *s = NULL;
                curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&s);
                rc = finish(c, s, msg->data.result);
            }
        if (rc) break;
        now = now_s();
        if (c->n_out || oai_pending(c) == 0 || now >= deadline) break;
        double wait = deadline - now;
        for (req *r = c->wait; r; r = r->next)
            if (r->not_before - now < wait) wait = r->not_before - now;
        if (wait < 0) wait = 0;
        if (c->busy == 0 && wait > 0) {
            struct timespec ts = {(time_t)wait, (long)((wait - floor(wait)) * 1e9)};
            nanosleep(&ts, NULL);
        } else if (curl_multi_poll(c->m, NULL, 0, (int)(wait * 1000) + 1, NULL) != CURLM_OK) {
            rc = rt_fail(RT_EINTERNAL, "curl_multi_poll failed");
            break;
        }
    }
    *res = c->out;
    *n_res = c->n_out;
    c->out = NULL;
    c->n_out = c->out_cap = 0;
    return rc;
}

void oai_results_free(oai_result *r, size_t n) {
    for (size_t i = 0; r && i < n; i++) {
        free(r[i].err);
        oai_response_free(&r[i].resp);
    }
    free(r);
}

/* ---- models ---- */

int oai_list_models(const oai_opts *o, char **id) {
    *id = NULL;
    if (!o->url || strncmp(o->url, "http", 4)) return rt_fail(RT_EINVAL, "endpoint URL must start with http:// or https://");
    int rc = curl_global();
    if (rc) return rc;
    char *url = endpoint(o->url, "/models"), *auth = NULL;
    if (o->api_key && *o->api_key) {
        size_t n = strlen(o->api_key) + 32;
        if ((auth = rt_malloc(n))) snprintf(auth, n, "Authorization: Bearer %s", o->api_key);
    }
    uint64_t rng = o->jitter_seed;
    int retries = o->max_retries < 0 ? 8 : o->max_retries;
    if (!url) rc = rt_fail(RT_ENOMEM, "out of memory");
    for (int attempt = 0; !rc; attempt++) {
        slot s = {.retry_after = -1};
        CURL *e = s.h = curl_easy_init();
        struct curl_slist *h = auth ? curl_slist_append(NULL, auth) : NULL;
        if (!e) {
            rc = rt_fail(RT_EINTERNAL, "curl_easy_init failed");
            curl_slist_free_all(h);
            break;
        }
        curl_easy_setopt(e, CURLOPT_URL, url);
        if (h) curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &s);
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(e, CURLOPT_HEADERDATA, &s);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)((o->timeout_s > 0 ? o->timeout_s : 60) * 1000));
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s.errbuf);
        CURLcode cc = curl_easy_perform(e);
        long code = 0;
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
        bool retry = cc != CURLE_OK || code == 408 || code == 429 || code >= 500;
        char msg[512];
        if (cc != CURLE_OK) snprintf(msg, sizeof msg, "%s", curl_easy_strerror(cc));
        else {
            char et[320];
            error_text(s.buf, s.len, et, sizeof et);
            snprintf(msg, sizeof msg, "HTTP %ld%s%s", code, et[0] ? ": " : "", et);
        }
        if (cc == CURLE_OK && code == 200) {
            json_t *j = json_loadb(s.buf ? s.buf : "", s.len, 0, NULL);
            const json_t *m0 = json_array_get(json_object_get(j, "data"), 0), *v = json_object_get(m0, "id");
            if (json_is_string(v)) {
                if (!(*id = rt_strdup(json_string_value(v)))) rc = rt_fail(RT_ENOMEM, "out of memory");
            } else rc = rt_fail(RT_EFORMAT, "%s: no model in the response (give --model NAME)", url);
            json_decref(j);
            retry = false;
        } else if (!retry || attempt >= retries)
            rc = rt_fail(RT_EIO, "%s: %s", url, msg);
        double d = retry ? oai_backoff_s(o, attempt, next_u(&rng), s.retry_after) : 0;
        curl_easy_cleanup(e);
        curl_slist_free_all(h);
        free(s.buf);
        if (!retry || rc || *id) break;
        struct timespec ts = {(time_t)d, (long)((d - floor(d)) * 1e9)};
        nanosleep(&ts, NULL);
    }
    free(url);
    free(auth);
    curl_global_cleanup();
    return rc;
}

/* teacher/oai.c — OpenAI request parsing and response pieces (see oai.h). */
#include "teacher/oai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"

/* ---- errors ----------------------------------------------------------------------------- */

static int bad(oai_error *err, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(oai_error *err, const char *param, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    err->status = 400;
    return RT_EINVAL;
}

static const char *error_type(int status) {
    if (status == 401) return "authentication_error";
    if (status >= 500) return "server_error";
    return "invalid_request_error";
}

char *oai_error_json(int status, const char *message, const char *param, const char *code) {
    json_t *e = json_pack("{s:s, s:s, s:o, s:o}", "message", message ? message : "", "type", error_type(status),
                          "param", param && *param ? json_string(param) : json_null(), "code",
                          code ? json_string(code) : json_null());
    json_t *j = e ? json_pack("{s:o}", "error", e) : NULL;
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return s;
}

/* ---- request parsing ------------------------------------------------------------------- */

void oai_request_free(oai_request *r) {
    if (!r) return;
    free(r->model);
    for (size_t i = 0; i < r->n_messages; i++) {
        free(r->messages[i].role);
        free(r->messages[i].content);
        free(r->messages[i].reasoning_content);
    }
    free(r->messages);
    for (size_t i = 0; i < r->n_prompts; i++) {
        free(r->prompts[i].text);
        free(r->prompts[i].ids);
    }
    free(r->prompts);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->stop);
    memset(r, 0, sizeof *r);
}

static char *dupn(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

/* A number member: absent or null → def. */
static int get_num(const json_t *j, const char *key, double lo, double hi, bool lo_open, double def, double *out,
                   oai_error *err) {
    const json_t *x = json_object_get(j, key);
    *out = def;
    if (!x || json_is_null(x)) return 0;
    if (!json_is_number(x)) return bad(err, key, "'%s' must be a number", key);
    double v = json_number_value(x);
    if (!isfinite(v) || v < lo || v > hi || (lo_open && v == lo))
        return bad(err, key, "'%s' must be in %s%g, %g], got %g", key, lo_open ? "(" : "[", lo, hi, v);
    *out = v;
    return 0;
}

static int get_int(const json_t *j, const char *key, json_int_t lo, json_int_t hi, json_int_t def, json_int_t *out,
                   oai_error *err) {
    const json_t *x = json_object_get(j, key);
    *out = def;
    if (!x || json_is_null(x)) return 0;
    if (json_is_real(x) && json_real_value(x) == floor(json_real_value(x)) && fabs(json_real_value(x)) < 9e15) {
        *out = (json_int_t)json_real_value(x);
    } else if (json_is_integer(x)) {
        *out = json_integer_value(x);
    } else {
        return bad(err, key, "'%s' must be an integer", key);
    }
    if (*out < lo || *out > hi)
        return bad(err, key, "'%s' must be in [%lld, %lld], got %lld", key, (long long)lo, (long long)hi,
                   (long long)*out);
    return 0;
}

static int get_bool(const json_t *j, const char *key, bool def, bool *out, oai_error *err) {
    const json_t *x = json_object_get(j, key);
    *out = def;
    if (!x || json_is_null(x)) return 0;
    if (!json_is_boolean(x)) return bad(err, key, "'%s' must be a boolean", key);
    *out = json_is_true(x);
    return 0;
}

/* Message content: a string, or an array of {type: "text", text} parts joined by "\n". */
static int message_text(const json_t *c, size_t i, char **out, oai_error *err) {
    char param[64];
    snprintf(param, sizeof param, "messages[%zu].content", i);
    if (json_is_string(c)) {
        *out = dupn(json_string_value(c), json_string_length(c));
        return *out ? 0 : RT_ENOMEM;
    }
    if (json_is_null(c)) {
        *out = dupn("", 0);
        return *out ? 0 : RT_ENOMEM;
    }
    if (!json_is_array(c)) return bad(err, param, "%s must be a string or an array of text parts", param);
    oai_buf b = {0};
    int rc = oai_buf_put(&b, "", 0);
    for (size_t k = 0; k < json_array_size(c) && !rc; k++) {
        const json_t *p = json_array_get(c, k), *type = json_object_get(p, "type"), *text = json_object_get(p, "text");
        if (!json_is_object(p) || !json_is_string(type) || strcmp(json_string_value(type), "text") || !json_is_string(text))
            rc = bad(err, param, "%s[%zu]: only {\"type\": \"text\", \"text\": ...} parts are supported", param, k);
        else if (k > 0) rc = oai_buf_put(&b, "\n", 1);
        if (!rc) rc = oai_buf_put(&b, json_string_value(text), json_string_length(text));
    }
    if (rc) {
        oai_buf_free(&b);
        return rc;
    }
    *out = b.s;
    return 0;
}

static int parse_messages(const json_t *j, oai_request *r, oai_error *err) {
    const json_t *m = json_object_get(j, "messages");
    if (!m) return bad(err, "messages", "'messages' is required");
    if (!json_is_array(m) || json_array_size(m) == 0) return bad(err, "messages", "'messages' must be a non-empty array");
    size_t n = json_array_size(m);
    if (!(r->messages = rt_calloc(n, sizeof *r->messages))) return RT_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_array_get(m, i), *role = json_object_get(x, "role");
        char param[64];
        snprintf(param, sizeof param, "messages[%zu]", i);
        if (!json_is_object(x)) return bad(err, param, "%s must be an object", param);
        if (!json_is_string(role)) return bad(err, param, "%s needs a string 'role'", param);
        const char *rs = json_string_value(role);
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant"))
            return bad(err, param, "%s: role '%s' is not supported (system, developer, user, assistant)", param,
                       json_string_value(role));
        if (!(r->messages[i].role = rt_strdup(rs))) return RT_ENOMEM;
        r->n_messages = i + 1;
        const json_t *c = json_object_get(x, "content");
        if (!c) return bad(err, param, "%s needs 'content'", param);
        int rc = message_text(c, i, &r->messages[i].content, err);
        if (rc) return rc;
        const json_t *rea = json_object_get(x, "reasoning_content");
        if (rea && !json_is_null(rea)) {
            if (!json_is_string(rea)) return bad(err, param, "%s: 'reasoning_content' must be a string", param);
            if (!(r->messages[i].reasoning_content = dupn(json_string_value(rea), json_string_length(rea))))
                return RT_ENOMEM;
        }
    }
    return 0;
}

static int parse_ids(const json_t *a, const char *param, oai_prompt *p, oai_error *err) {
    size_t n = json_array_size(a);
    if (n == 0) return bad(err, param, "'%s' must not be empty", param);
    if (!(p->ids = rt_malloc(n * sizeof(int32_t)))) return RT_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_array_get(a, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX)
            return bad(err, param, "'%s' must hold token ids (integers >= 0)", param);
        p->ids[i] = (int32_t)json_integer_value(x);
    }
    p->n_ids = n;
    return 0;
}

static int parse_prompt(const json_t *j, oai_request *r, oai_error *err) {
    const json_t *p = json_object_get(j, "prompt");
    if (!p || json_is_null(p)) return bad(err, "prompt", "'prompt' is required");
    bool list = json_is_array(p) && json_array_size(p) > 0 &&
                (json_is_string(json_array_get(p, 0)) || json_is_array(json_array_get(p, 0)));
    size_t n = list ? json_array_size(p) : 1;
    if (!json_is_string(p) && !json_is_array(p))
        return bad(err, "prompt", "'prompt' must be a string, an array of strings, or token ids");
    if (json_is_array(p) && json_array_size(p) == 0) return bad(err, "prompt", "'prompt' must not be empty");
    if (n > OAI_MAX_PROMPTS) return bad(err, "prompt", "at most %d prompts per request", OAI_MAX_PROMPTS);
    if (!(r->prompts = rt_calloc(n, sizeof *r->prompts))) return RT_ENOMEM;
    r->n_prompts = n;
    for (size_t i = 0; i < n; i++) {
        const json_t *x = list ? json_array_get(p, i) : p;
        if (json_is_string(x)) {
            if (!(r->prompts[i].text = dupn(json_string_value(x), json_string_length(x)))) return RT_ENOMEM;
        } else if (json_is_array(x) && (!list || json_is_array(json_array_get(p, 0)))) {
            int rc = parse_ids(x, "prompt", &r->prompts[i], err);
            if (rc) return rc;
        } else {
            return bad(err, "prompt", "'prompt' must be a string, an array of strings, or token ids (not mixed)");
        }
    }
    return 0;
}

static int parse_stop(const json_t *j, oai_request *r, oai_error *err) {
    const json_t *s = json_object_get(j, "stop");
    if (!s || json_is_null(s)) return 0;
    size_t n = json_is_string(s) ? 1 : json_is_array(s) ? json_array_size(s) : 0;
    if (!json_is_string(s) && !json_is_array(s)) return bad(err, "stop", "'stop' must be a string or an array of strings");
    if (n > OAI_MAX_STOP) return bad(err, "stop", "at most %d stop strings", OAI_MAX_STOP);
    if (n == 0) return 0;
    if (!(r->stop = rt_calloc(n, sizeof *r->stop))) return RT_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const json_t *x = json_is_string(s) ? s : json_array_get(s, i);
        if (!json_is_string(x) || json_string_length(x) == 0)
            return bad(err, "stop", "'stop' strings must be non-empty strings");
        if (!(r->stop[i] = dupn(json_string_value(x), json_string_length(x)))) return RT_ENOMEM;
        r->n_stop = (int)i + 1;
    }
    return 0;
}

static int parse_fields(const json_t *j, oai_kind kind, oai_request *r, oai_error *err) {
    int rc;
    const json_t *model = json_object_get(j, "model");
    if (model && !json_is_null(model)) {
        if (!json_is_string(model)) return bad(err, "model", "'model' must be a string");
        if (!(r->model = dupn(json_string_value(model), json_string_length(model)))) return RT_ENOMEM;
    }
    if ((rc = kind == OAI_CHAT ? parse_messages(j, r, err) : parse_prompt(j, r, err))) return rc;
    json_int_t v;
    double d;
    if ((rc = get_int(j, "n", 1, OAI_MAX_N, 1, &v, err))) return rc;
    r->n = (int)v;
    if ((rc = get_num(j, "temperature", 0, 2, false, 1, &r->temperature, err))) return rc;
    if ((rc = get_num(j, "top_p", 0, 1, true, 1, &r->top_p, err))) return rc;
    if ((rc = get_num(j, "min_p", 0, 1, false, 0, &r->min_p, err))) return rc;
    if ((rc = get_int(j, "top_k", -1, INT32_MAX, 0, &v, err))) return rc;
    r->top_k = v < 0 ? 0 : (int)v;
    const char *mt = "max_tokens";
    if (kind == OAI_CHAT && json_object_get(j, "max_completion_tokens") &&
        !json_is_null(json_object_get(j, "max_completion_tokens")))
        mt = "max_completion_tokens";
    if ((rc = get_int(j, mt, 1, (json_int_t)1 << 40, -1, &v, err))) return rc;
    r->max_tokens = v;
    const json_t *seed = json_object_get(j, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed)) return bad(err, "seed", "'seed' must be an integer");
        r->has_seed = true;
        r->seed = (uint64_t)json_integer_value(seed);
    }
    if ((rc = parse_stop(j, r, err))) return rc;
    if ((rc = get_bool(j, "stream", false, &r->stream, err))) return rc;
    if ((rc = get_bool(j, "ignore_eos", false, &r->ignore_eos, err))) return rc;
    const json_t *so = json_object_get(j, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) return bad(err, "stream_options", "'stream_options' must be an object");
        if (!r->stream) return bad(err, "stream_options", "'stream_options' is only allowed when 'stream' is true");
        if ((rc = get_bool(so, "include_usage", false, &r->include_usage, err))) {
            snprintf(err->param, sizeof err->param, "stream_options.include_usage");
            return rc;
        }
    }
    if (kind == OAI_CHAT) {
        if ((rc = get_bool(j, "logprobs", false, &r->logprobs, err))) return rc;
        if ((rc = get_int(j, "top_logprobs", 0, OAI_MAX_TOP_LOGPROBS, 0, &v, err))) return rc;
        const json_t *tl = json_object_get(j, "top_logprobs");
        if (tl && !json_is_null(tl) && !r->logprobs)
            return bad(err, "top_logprobs", "'top_logprobs' needs 'logprobs' set to true");
        r->top_logprobs = (int)v;
    } else {
        if ((rc = get_int(j, "logprobs", 0, OAI_MAX_TOP_LOGPROBS, -1, &v, err))) return rc;
        r->logprobs = v >= 0;
        r->top_logprobs = v > 0 ? (int)v : 0;
        bool echo;
        if ((rc = get_bool(j, "echo", false, &echo, err))) return rc;
        if (echo) return bad(err, "echo", "'echo' is not supported");
        const json_t *bo = json_object_get(j, "best_of");
        if (bo && !json_is_null(bo) && !(json_is_integer(bo) && json_integer_value(bo) == r->n))
            return bad(err, "best_of", "'best_of' other than n is not supported");
        const json_t *sfx = json_object_get(j, "suffix");
        if (sfx && !json_is_null(sfx)) return bad(err, "suffix", "'suffix' is not supported");
    }
    static const char *const zero[] = {"presence_penalty", "frequency_penalty"};
    for (size_t i = 0; i < 2; i++) {
        if ((rc = get_num(j, zero[i], -2, 2, false, 0, &d, err))) return rc;
        if (d != 0) return bad(err, zero[i], "'%s' other than 0 is not supported", zero[i]);
    }
    static const char *const absent[] = {"tools", "functions", "response_format", "logit_bias", "tool_choice"};
    for (size_t i = 0; i < sizeof absent / sizeof *absent; i++) {
        const json_t *x = json_object_get(j, absent[i]);
        bool empty = !x || json_is_null(x) || (json_is_array(x) && json_array_size(x) == 0) ||
                     (json_is_object(x) && json_object_size(x) == 0) ||
                     (json_is_string(x) && !strcmp(json_string_value(x), "none")) ||
                     (json_is_object(x) && !strcmp(absent[i], "response_format") &&
                      json_is_string(json_object_get(x, "type")) &&
                      !strcmp(json_string_value(json_object_get(x, "type")), "text"));
        if (!empty) return bad(err, absent[i], "'%s' is not supported", absent[i]);
    }
    const json_t *user = json_object_get(j, "user");
    if (user && !json_is_null(user) && !json_is_string(user)) return bad(err, "user", "'user' must be a string");
    return 0;
}

int oai_parse_request(const char *body, size_t len, oai_kind kind, oai_request *out, oai_error *err) {
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    out->kind = kind;
    json_error_t je;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!j) return bad(err, NULL, "invalid JSON in the request body: %s (at byte %d)", je.text, je.position);
    int rc = json_is_object(j) ? parse_fields(j, kind, out, err) : bad(err, NULL, "the request body must be a JSON object");
    json_decref(j);
    if (rc) {
        oai_request_free(out);
        out->kind = kind;
        if (rc == RT_ENOMEM) {
            err->status = 500;
            snprintf(err->message, sizeof err->message, "out of memory");
            err->param[0] = 0;
        }
    }
    return rc;
}

/* ---- responses ------------------------------------------------------------------------- */

char *oai_sse_event(const json_t *j) {
    char *d = json_dumps(j, JSON_COMPACT);
    if (!d) return NULL;
    size_t n = strlen(d);
    char *s = malloc(n + 9);
    if (s) {
        memcpy(s, "data: ", 6);
        memcpy(s + 6, d, n);
        memcpy(s + 6 + n, "\n\n", 3);
    }
    free(d);
    return s;
}

json_t *oai_envelope(oai_kind kind, bool chunk, const char *id, int64_t created, const char *model) {
    const char *object = kind == OAI_COMPLETION ? "text_completion" : chunk ? "chat.completion.chunk" : "chat.completion";
    return json_pack("{s:s, s:s, s:I, s:s, s:[]}", "id", id, "object", object, "created", (json_int_t)created, "model",
                     model, "choices");
}

json_t *oai_usage(int64_t prompt_tokens, int64_t completion_tokens) {
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)prompt_tokens, "completion_tokens",
                     (json_int_t)completion_tokens, "total_tokens", (json_int_t)(prompt_tokens + completion_tokens));
}

json_t *oai_choice_chat(int index, const char *content, size_t content_len, bool has_reasoning, const char *reasoning,
                        size_t reasoning_len, json_t *logprobs, const char *finish) {
    json_t *msg = json_pack("{s:s, s:s%}", "role", "assistant", "content", content ? content : "", content_len);
    json_object_set_new(msg, "reasoning_content",
                        has_reasoning ? json_stringn(reasoning ? reasoning : "", reasoning_len) : json_null());
    json_object_set_new(msg, "tool_calls", json_array());
    return json_pack("{s:i, s:o, s:o, s:o}", "index", index, "message", msg, "logprobs", logprobs ? logprobs : json_null(),
                     "finish_reason", finish ? json_string(finish) : json_null());
}

json_t *oai_choice_text(int index, const char *text, size_t len, json_t *logprobs, const char *finish) {
    return json_pack("{s:i, s:s%, s:o, s:o}", "index", index, "text", text ? text : "", len, "logprobs",
                     logprobs ? logprobs : json_null(), "finish_reason", finish ? json_string(finish) : json_null());
}

json_t *oai_delta_role(int index) {
    return json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index", index, "delta", "role", "assistant", "content", "",
                     "logprobs", "finish_reason");
}

json_t *oai_delta_chat(int index, const char *reasoning, size_t reasoning_len, const char *content, size_t content_len,
                       json_t *logprobs, const char *finish) {
    json_t *delta = json_object();
    if (reasoning_len) json_object_set_new(delta, "reasoning_content", json_stringn(reasoning, reasoning_len));
    if (content_len) json_object_set_new(delta, "content", json_stringn(content, content_len));
    return json_pack("{s:i, s:o, s:o, s:o}", "index", index, "delta", delta, "logprobs", logprobs ? logprobs : json_null(),
                     "finish_reason", finish ? json_string(finish) : json_null());
}

json_t *oai_chunk(oai_kind kind, const char *id, int64_t created, const char *model, json_t *choice) {
    json_t *r = oai_envelope(kind, true, id, created, model);
    if (r) json_array_append_new(json_object_get(r, "choices"), choice);
    else json_decref(choice);
    return r;
}

json_t *oai_usage_chunk(oai_kind kind, const char *id, int64_t created, const char *model, int64_t prompt_tokens,
                        int64_t completion_tokens) {
    json_t *r = oai_envelope(kind, true, id, created, model);
    if (r) json_object_set_new(r, "usage", oai_usage(prompt_tokens, completion_tokens));
    return r;
}

json_t *oai_models(const char *model, int64_t created, int64_t max_model_len) {
    return json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:I}]}", "object", "list", "data", "id", model, "object", "model",
                     "created", (json_int_t)created, "owned_by", "retort", "max_model_len", (json_int_t)max_model_len);
}

static json_t *bytes_array(const uint8_t *b, size_t n) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) json_array_append_new(a, json_integer(b[i]));
    return a;
}

static json_t *chat_token(const oai_token_lp *t) {
    return json_pack("{s:s%, s:f, s:o}", "token", t->text, t->len, "logprob", (double)t->logprob, "bytes",
                     bytes_array(t->bytes, t->n_bytes));
}

json_t *oai_logprobs_chat(const oai_pos_lp *p, size_t n) {
    json_t *content = json_array();
    for (size_t i = 0; content && i < n; i++) {
        json_t *e = chat_token(&p[i].tok), *top = json_array();
        for (int k = 0; top && k < p[i].n_top; k++) json_array_append_new(top, chat_token(&p[i].top[k]));
        if (e && top) json_object_set_new(e, "top_logprobs", top);
        else json_decref(top);
        json_array_append_new(content, e);
    }
    return json_pack("{s:o, s:n}", "content", content, "refusal");
}

json_t *oai_logprobs_completion(const oai_pos_lp *p, size_t n, size_t *text_offset) {
    json_t *toks = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    size_t off = *text_offset;
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(toks, json_stringn(p[i].tok.text, p[i].tok.len));
        json_array_append_new(lps, json_real(p[i].tok.logprob));
        json_array_append_new(offs, json_integer((json_int_t)off));
        for (size_t b = 0; b < p[i].tok.len; b++) off += ((unsigned char)p[i].tok.text[b] & 0xC0) != 0x80;
        if (p[i].n_top > 0) {
            json_t *o = json_object();
            for (int k = 0; o && k < p[i].n_top; k++) {
                char *key = dupn(p[i].top[k].text, p[i].top[k].len);
                if (key && !json_object_get(o, key)) json_object_set_new(o, key, json_real(p[i].top[k].logprob));
                free(key);
            }
            json_array_append_new(tops, o);
        } else {
            json_array_append_new(tops, json_null());
        }
    }
    *text_offset = off;
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", toks, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offs);
}

/* ---- visible text and the reasoning split ---------------------------------------------- */

/* Longest proper prefix of tag that text[0:len] ends with. */
static size_t partial_suffix(const char *text, size_t len, const char *tag) {
    size_t t = strlen(tag);
    for (size_t k = (t - 1 < len ? t - 1 : len); k > 0; k--)
        if (!memcmp(text + len - k, tag, k)) return k;
    return 0;
}

static const char *memmem_s(const char *h, size_t hl, const char *n) {
    return memmem(h, hl, n, strlen(n));
}

size_t oai_visible_len(const char *text, size_t len, char *const *stop, int n_stop, bool final) {
    size_t cut = len;
    bool hit = false;
    for (int i = 0; i < n_stop; i++) {
        const char *at = memmem_s(text, len, stop[i]);
        if (at && (size_t)(at - text) <= cut) {
            cut = (size_t)(at - text);
            hit = true;
        }
    }
    if (hit || final) return cut;
    for (int i = 0; i < n_stop; i++) {
        size_t k = partial_suffix(text, len, stop[i]);
        if (len - k < cut) cut = len - k;
    }
    /* an unfinished UTF-8 character decodes as U+FFFD (EF BF BD) at the end */
    while (cut >= 3 && !memcmp(text + cut - 3, "\xEF\xBF\xBD", 3)) cut -= 3;
    return cut;
}

int oai_buf_put(oai_buf *b, const char *s, size_t n) {
    if (rt_grow((void **)&b->s, &b->cap, b->len + n + 1, 1)) return RT_ENOMEM;
    if (n) memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
    return 0;
}

void oai_buf_free(oai_buf *b) {
    free(b->s);
    *b = (oai_buf){0};
}

void oai_split_init(oai_split *s, bool opened) {
    *s = (oai_split){.phase = opened ? 1 : 0, .reasoning = opened};
}

static bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

int oai_split_feed(oai_split *s, const char *text, size_t len, bool final, oai_buf *reasoning, oai_buf *content) {
    static const char open[] = "<think>", close[] = "</think>";
    if (s->phase == 0) {
        size_t k = 0;
        while (k < len && is_space(text[k])) k++;
        size_t rest = len - k;
        if (rest >= sizeof open - 1 && !memcmp(text + k, open, sizeof open - 1)) {
            s->phase = 1;
            s->reasoning = true;
            s->pos = k + sizeof open - 1;
        } else if (!final && (rest == 0 || !memcmp(text + k, open, rest < sizeof open - 1 ? rest : sizeof open - 1))) {
            return 0;   /* still undecided */
        } else {
            s->phase = 3;
        }
    }
    if (s->phase == 1) {
        const char *at = memmem_s(text + s->pos, len - s->pos, close);
        if (at) {
            size_t end = (size_t)(at - text);
            if (oai_buf_put(reasoning, text + s->pos, end - s->pos)) return RT_ENOMEM;
            s->pos = end + sizeof close - 1;
            s->phase = 2;
        } else {
            size_t safe = final ? len : len - partial_suffix(text + s->pos, len - s->pos, close);
            if (oai_buf_put(reasoning, text + s->pos, safe - s->pos)) return RT_ENOMEM;
            s->pos = safe;
            return 0;
        }
    }
    if (s->phase == 2) {   /* leading whitespace of the content is dropped */
        if (!s->started)
            while (s->pos < len && is_space(text[s->pos])) s->pos++;
        if (s->pos < len) s->started = true;
    }
    if (s->pos < len && oai_buf_put(content, text + s->pos, len - s->pos)) return RT_ENOMEM;
    s->pos = len;
    return 0;
}

/* ---- the request line ------------------------------------------------------------------ */

static bool is_tchar(unsigned char c) {   /* RFC 9110 token characters */
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

int oai_request_line(const char *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    size_t i = 0;
    while (i < n && (b[i] == '\r' || b[i] == '\n')) i++;
    size_t m = i;
    while (i < n && is_tchar(b[i])) i++;
    if (i - m > 32) return -1;
    if (i == n) return 0;
    if (i == m || b[i++] != ' ') return -1;
    size_t t = i;
    while (i < n && b[i] > 0x20 && b[i] != 0x7F) i++;
    if (i == n) return 0;
    if (i == t || b[i++] != ' ') return -1;
    static const char v[] = "HTTP/D.D";
    for (int k = 0; v[k]; k++, i++) {
        if (i == n) return 0;
        if (v[k] == 'D' ? !(b[i] >= '0' && b[i] <= '9') : b[i] != (unsigned char)v[k]) return -1;
    }
    if (i < n && b[i] == '\r') i++;
    if (i == n) return 0;
    return b[i] == '\n' ? 1 : -1;
}

/* tests/fuzz/fuzz_oai_request.c — libFuzzer target on the request-body parser of `retort
 * serve` (teacher/oai.h). The first byte picks chat or completions; the rest is the body.
 * Any input must parse into a request whose fields are in their documented ranges, or fail
 * with RT_EINVAL, a 400 and a message (RT_ENOMEM: a 500). A parsed request's stop strings
 * then cut the body, read as model output, through oai_visible_len, and the reasoning split
 * fed that text piece by piece must give what it gives fed the whole at once. Never crash,
 * leak or read out of bounds. The raw input also goes through the request-line check of the
 * connection gate (oai_request_line).
 *   make fuzz && build/fuzz/fuzz_oai_request -max_total_time=60 tests/fuzz/corpus/oai_request */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "teacher/oai.h"

static void split(const char *t, size_t n, bool opened, size_t step, oai_buf *r, oai_buf *c) {
    oai_split s;
    oai_split_init(&s, opened);
    for (size_t at = step; step && at < n; at += step) {
        size_t before_r = r->len, before_c = c->len;
        assert(oai_split_feed(&s, t, at, false, r, c) == 0);
        assert(r->len >= before_r && c->len >= before_c);
    }
    assert(oai_split_feed(&s, t, n, true, r, c) == 0);
}

/* The request-line check, on the raw input: a verdict of -1 never turns into a request line
 * with more bytes, and a complete or partial line has only complete or partial prefixes. */
static void request_line(const uint8_t *data, size_t size) {
    int whole = oai_request_line((const char *)data, size);
    assert(whole >= -1 && whole <= 1);
    for (size_t cut = size / 2; ; cut = size - 1) {
        int part = oai_request_line((const char *)data, cut);
        assert(part >= -1 && part <= 1);
        if (part == -1) assert(whole == -1);
        if (part == 1) assert(whole == 1);
        if (whole >= 0) assert(part >= 0);
        if (cut + 1 >= size) break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!size) return 0;
    request_line(data, size);
    oai_kind kind = (data[0] & 1) ? OAI_COMPLETION : OAI_CHAT;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    oai_request r;
    oai_error e;
    int rc = oai_parse_request(body, len, kind, &r, &e);
    if (rc) {
        assert(rc == RT_EINVAL || rc == RT_ENOMEM);
        assert(e.status == (rc == RT_EINVAL ? 400 : 500) && e.message[0]);
        assert(r.n_messages == 0 && r.n_prompts == 0 && r.n_stop == 0 && !r.model);
        char *j = oai_error_json(e.status, e.message, e.param, NULL);
        free(j);
        return 0;
    }
    assert(r.kind == kind);
    assert(r.n >= 1 && r.n <= OAI_MAX_N);
    assert(r.temperature >= 0 && r.temperature <= 2 && r.top_p > 0 && r.top_p <= 1 && r.min_p >= 0 && r.min_p <= 1);
    assert(r.top_k >= 0 && (r.max_tokens == -1 || r.max_tokens >= 1));
    assert(r.top_logprobs >= 0 && r.top_logprobs <= OAI_MAX_TOP_LOGPROBS && (r.logprobs || !r.top_logprobs));
    assert(r.n_stop >= 0 && r.n_stop <= OAI_MAX_STOP);
    for (int i = 0; i < r.n_stop; i++) assert(r.stop[i] && r.stop[i][0]);
    if (kind == OAI_CHAT) {
        assert(r.n_messages >= 1 && r.n_prompts == 0);
        for (size_t i = 0; i < r.n_messages; i++) assert(r.messages[i].role && r.messages[i].content);
    } else {
        assert(r.n_prompts >= 1 && r.n_prompts <= OAI_MAX_PROMPTS && r.n_messages == 0);
        for (size_t i = 0; i < r.n_prompts; i++) assert(r.prompts[i].text || r.prompts[i].n_ids >= 1);
    }
    size_t vis = oai_visible_len(body, len, r.stop, r.n_stop, false), fin = oai_visible_len(body, len, r.stop, r.n_stop, true);
    assert(vis <= fin && fin <= len);
    for (int i = 0; i < r.n_stop; i++) assert(!memmem(body, fin, r.stop[i], strlen(r.stop[i])));
    oai_buf r1 = {0}, c1 = {0}, r2 = {0}, c2 = {0};
    bool opened = data[0] & 2;
    split(body, fin, opened, 0, &r1, &c1);
    split(body, fin, opened, 1 + data[0] % 7, &r2, &c2);
    assert(r1.len == r2.len && c1.len == c2.len);
    assert(!r1.len || !memcmp(r1.s, r2.s, r1.len));
    assert(!c1.len || !memcmp(c1.s, c2.s, c1.len));
    oai_buf_free(&r1);
    oai_buf_free(&c1);
    oai_buf_free(&r2);
    oai_buf_free(&c2);
    oai_request_free(&r);
    return 0;
}

/* tests/fuzz/fuzz_sse.c — libFuzzer target on the OpenAI-compatible response parsers
 * (teacher/oai_client.h). The first byte picks the mode: SSE fed in pieces whose sizes come
 * from the following bytes, or one non-streaming body; then the composed stored text. Any
 * input must parse or fail with RT_EFORMAT / RT_EIO and a message; the parsed strings are
 * NUL-terminated at their lengths; never crash, leak or read out of bounds.
 *   make fuzz && build/fuzz/fuzz_sse -max_total_time=60 tests/fuzz/corpus/sse */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "teacher/oai_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    uint8_t mode = data[0], step = data[1];
    const char *s = (const char *)data + 2;
    size_t n = size - 2;
    oai_response r;
    oai_response_init(&r);
    int rc;
    if (mode & 1) {
        oai_sse p;
        oai_sse_init(&p, &r);
        size_t piece = step ? step : n + 1, at = 0;
        rc = 0;
        while (!rc && at < n) {
            size_t k = n - at < piece ? n - at : piece;
            rc = oai_sse_feed(&p, s + at, k);
            at += k;
        }
        if (!rc) rc = oai_sse_finish(&p);
        oai_sse_free(&p);
    } else {
        rc = oai_parse_body(s, n, &r);
    }
    if (rc == 0) {
        assert(r.content && strlen(r.content) <= r.content_len);
        assert(r.reasoning && strlen(r.reasoning) <= r.reasoning_len);
        assert(r.top_k >= 0 && r.top_k <= OAI_MAX_TOP);
        char *t;
        size_t len;
        if (oai_compose_text(r.reasoning, r.reasoning_len, r.has_reasoning, r.content, r.content_len, mode & 2, &t,
                             &len) == 0) {
            assert(t[len] == 0);
            free(t);
        }
    } else {
        assert(rc == RT_EFORMAT || rc == RT_EIO || rc == RT_ENOMEM);
        assert(rt_errmsg()[0]);
    }
    oai_response_free(&r);
    return 0;
}

/* tests/unit/test_oai_client.c — the OpenAI-compatible client's parsers and retry policy:
 * an SSE stream (comments, CRLF/CR/LF line ends, multi-line data, reasoning_content deltas,
 * logprobs with token_id tops, usage, [DONE]) fed whole and split at every byte position
 * gives one hand-worked result; a stream cut anywhere before [DONE] is refused; non-streaming
 * bodies; both reasoning styles compose to the same stored text; backoff bounds and
 * Retry-After (seconds and HTTP date, hand-computed epoch). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "teacher/oai_client.h"

static const char STREAM[] =
    ": keep-alive comment\r\n"
    "\r\n"
    "event: message\n"
    "data: {\"id\":\"c1\",\"model\":\"tiny-r1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},"
    "\"finish_reason\":null}]}\n"
    "\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"Let me \"},\"logprobs\":{\"content\":["
    "{\"token\":\"token_id:11\",\"logprob\":-0.5,\"top_logprobs\":[{\"token\":\"token_id:11\",\"logprob\":-0.5},"
    "{\"token\":\"token_id:12\",\"logprob\":-1.25}]}]}}]}\r\r"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"think.\"},\"logprobs\":{\"content\":["
    "{\"token\":\"x\",\"logprob\":-0.25,\"top_logprobs\":[{\"token\":\"x\",\"logprob\":-0.25}]}]}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"The answer\"}}]}\r\n\r\n"
    "data: {\"choices\":[{\"index\":0,\n"
    "data: \"delta\":{\"content\":\" is 4 \\u00e9.\"},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":7,"
    "\"completion_tokens_details\":{\"reasoning_tokens\":3}}}\n\n"
    "data: [DONE]\n\n";

static void check_full(const oai_response *r) {
    cr_assert(r->done);
    cr_assert_str_eq(r->reasoning, "Let me think.");
    cr_assert(r->has_reasoning);
    cr_assert_str_eq(r->content, "The answer is 4 \xc3\xa9.");
    cr_assert_str_eq(r->finish_reason, "stop");
    cr_assert_str_eq(r->model, "tiny-r1");
    cr_assert_eq(r->prompt_tokens, 9);
    cr_assert_eq(r->completion_tokens, 7);
    cr_assert_eq(r->reasoning_tokens, 3);
    cr_assert_eq(r->n_tokens, 2);
    cr_assert_eq(r->top_k, 2);
    cr_assert_float_eq(r->logprobs[0], -0.5f, 0);
    cr_assert_float_eq(r->logprobs[1], -0.25f, 0);
    cr_assert_eq(r->top_ids[0], 11);
    cr_assert_eq(r->top_ids[1], 12);
    cr_assert_float_eq(r->top_logprobs[1], -1.25f, 0);
    cr_assert_eq(r->top_ids[2], -1);          /* "x" is no token_id: spelling */
    cr_assert(isinf(r->top_logprobs[3]));     /* second position had one alternative */
}

Test(sse, whole_stream) {
    oai_response r;
    oai_response_init(&r);
    oai_sse p;
    oai_sse_init(&p, &r);
    cr_assert_eq(oai_sse_feed(&p, STREAM, sizeof STREAM - 1), 0, "%s", rt_errmsg());
    cr_assert_eq(oai_sse_finish(&p), 0, "%s", rt_errmsg());
    check_full(&r);
    oai_sse_free(&p);
    oai_response_free(&r);
}

Test(sse, split_at_every_position_and_byte_by_byte) {
    size_t n = sizeof STREAM - 1;
    for (size_t cut = 0; cut <= n; cut++) {
        oai_response r;
        oai_response_init(&r);
        oai_sse p;
        oai_sse_init(&p, &r);
        cr_assert_eq(oai_sse_feed(&p, STREAM, cut), 0);
        cr_assert_eq(oai_sse_feed(&p, STREAM + cut, n - cut), 0);
        cr_assert_eq(oai_sse_finish(&p), 0, "cut %zu: %s", cut, rt_errmsg());
        check_full(&r);
        oai_sse_free(&p);
        oai_response_free(&r);
    }
    oai_response r;
    oai_response_init(&r);
    oai_sse p;
    oai_sse_init(&p, &r);
    for (size_t i = 0; i < n; i++) cr_assert_eq(oai_sse_feed(&p, STREAM + i, 1), 0);
    cr_assert_eq(oai_sse_finish(&p), 0);
    check_full(&r);
    oai_sse_free(&p);
    oai_response_free(&r);
}

Test(sse, truncated_before_finish_is_refused_after_it_accepted) {
    /* the finish_reason event ends with the blank line after "finish_reason\":\"stop\"}]}\n" */
    const char *fin = strstr(STREAM, "\"finish_reason\":\"stop\"}]}\n\n");
    size_t complete = (size_t)(fin - STREAM) + strlen("\"finish_reason\":\"stop\"}]}\n\n");
    for (size_t cut = 0; cut <= sizeof STREAM - 1; cut++) {
        oai_response r;
        oai_response_init(&r);
        oai_sse p;
        oai_sse_init(&p, &r);
        int rc = oai_sse_feed(&p, STREAM, cut);
        if (!rc) rc = oai_sse_finish(&p);
        if (cut < complete) cr_assert_eq(rc, RT_EFORMAT, "a stream cut at %zu was accepted", cut);
        else {
            cr_assert_eq(rc, 0, "cut %zu: %s", cut, rt_errmsg());
            cr_assert_str_eq(r.content, "The answer is 4 \xc3\xa9.");
            cr_assert_str_eq(r.reasoning, "Let me think.");
            const char *u = strstr(STREAM, "\"reasoning_tokens\":3}}}\n\n");
            size_t usage_end = (size_t)(u - STREAM) + strlen("\"reasoning_tokens\":3}}}\n\n");
            cr_assert_eq(r.completion_tokens, cut >= usage_end ? 7 : -1, "cut %zu", cut);
        }
        oai_sse_free(&p);
        oai_response_free(&r);
    }
}

Test(sse, error_event_and_bad_json) {
    oai_response r;
    oai_response_init(&r);
    oai_sse p;
    oai_sse_init(&p, &r);
    const char *s = "data: {\"error\":{\"message\":\"engine overloaded\"}}\n\n";
    cr_assert_eq(oai_sse_feed(&p, s, strlen(s)), RT_EIO);
    cr_assert(strstr(rt_errmsg(), "engine overloaded"));
    cr_assert_eq(oai_sse_finish(&p), RT_EIO);
    oai_sse_free(&p);
    oai_response_free(&r);
    oai_response_init(&r);
    oai_sse_init(&p, &r);
    s = "data: {\"choices\": [\n\n";
    cr_assert_eq(oai_sse_feed(&p, s, strlen(s)), RT_EFORMAT);
    oai_sse_free(&p);
    oai_response_free(&r);
}

Test(body, non_streaming_response) {
    const char *b = "{\"model\":\"m\",\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":\"<think>\\nhm\\n</think>\\n\\n42\","
                    "\"reasoning_content\":null},\"finish_reason\":\"length\",\"logprobs\":{\"content\":[{\"token\":\"a\","
                    "\"logprob\":-2}]}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5}}";
    oai_response r;
    oai_response_init(&r);
    cr_assert_eq(oai_parse_body(b, strlen(b), &r), 0, "%s", rt_errmsg());
    cr_assert_str_eq(r.content, "<think>\nhm\n</think>\n\n42");
    cr_assert(!r.has_reasoning);
    cr_assert_str_eq(r.finish_reason, "length");
    cr_assert_eq(r.prompt_tokens, 3);
    cr_assert_eq(r.completion_tokens, 5);
    cr_assert_eq(r.reasoning_tokens, -1);
    cr_assert_eq(r.n_tokens, 1);
    cr_assert_eq(r.top_k, 0);
    oai_response_free(&r);
    oai_response_init(&r);
    cr_assert_eq(oai_parse_body("{\"choices\":[]}", 14, &r), RT_EFORMAT);
    cr_assert_eq(oai_parse_body("{\"error\":{\"message\":\"bad key\"}}", 31, &r), RT_EIO);
    cr_assert_eq(oai_parse_body("[1,", 3, &r), RT_EFORMAT);
    oai_response_free(&r);
}

static char *compose(const char *r, bool has_r, const char *c, bool prefix) {
    char *out;
    size_t len;
    cr_assert_eq(oai_compose_text(r, r ? strlen(r) : 0, has_r, c, c ? strlen(c) : 0, prefix, &out, &len), 0);
    cr_assert_eq(strlen(out), len);
    return out;
}

Test(text, both_reasoning_styles_store_the_same_text) {
    const char *want = "<think>\nStep 1.\nStep 2.\n</think>\n\nThe answer is 4.";
    const char *cases[][3] = {
        {"Step 1.\nStep 2.", "The answer is 4.", NULL},                      /* DeepSeek API: stripped */
        {"Step 1.\nStep 2.\n", "\n\nThe answer is 4.", NULL},                /* vLLM parser: raw halves */
        {NULL, "Step 1.\nStep 2.\n</think>\n\nThe answer is 4.", NULL},      /* inline, opening tag in the prompt */
        {NULL, "<think>\nStep 1.\nStep 2.\n</think>\n\nThe answer is 4.", NULL},
        {NULL, "  <think>Step 1.\nStep 2.</think>The answer is 4.  ", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int prefix = 0; prefix < 2; prefix++) {
            char *t = compose(cases[i][0], cases[i][0] != NULL, cases[i][1], prefix);
            cr_assert_str_eq(t, want, "case %zu prefix %d: %s", i, prefix, t);
            free(t);
        }
    /* unfinished thinking (finish "length"): no closing tag, in both styles */
    char *a = compose("Step 1.", true, "", true), *b = compose(NULL, false, "Step 1.", true);
    cr_assert_str_eq(a, "<think>\nStep 1.");
    cr_assert_str_eq(b, "<think>\nStep 1.");
    free(a);
    free(b);
    /* no reasoning, no tags, no forced prefix: the content as sent */
    char *c = compose(NULL, false, " plain\n", false);
    cr_assert_str_eq(c, " plain\n");
    free(c);
}

Test(retry, backoff_is_full_jitter_capped_and_honours_retry_after) {
    oai_opts o = {.backoff_base_s = 0.5, .backoff_cap_s = 10};
    cr_assert_float_eq(oai_backoff_s(&o, 0, 0.999999, -1), 0.5, 1e-5);
    cr_assert_float_eq(oai_backoff_s(&o, 3, 0.5, -1), 2.0, 1e-12);     /* 0.5 · 2^3 · u */
    cr_assert_float_eq(oai_backoff_s(&o, 30, 0.5, -1), 5.0, 1e-12);    /* capped at 10 */
    cr_assert_float_eq(oai_backoff_s(&o, 0, 0.0, -1), 0.0, 1e-12);
    cr_assert_float_eq(oai_backoff_s(&o, 0, 0.5, 7), 7.0, 1e-12);      /* Retry-After wins when longer */
    cr_assert_float_eq(oai_backoff_s(&o, 5, 0.9, 1), 9.0, 1e-12);
}

Test(retry, retry_after_seconds_and_http_date) {
    cr_assert_float_eq(oai_retry_after_parse(" 3\r\n", 0), 3.0, 1e-12);
    cr_assert_float_eq(oai_retry_after_parse("0", 0), 0.0, 1e-12);
    /* Wed, 21 Oct 2015 07:28:00 GMT is 1445412480 (RFC 7231's example date; date -u -d) */
    cr_assert_float_eq(oai_retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT\r\n", 1445412470.0), 10.0, 1e-9);
    cr_assert_float_eq(oai_retry_after_parse("Wed, 21 Oct 2015 07:28:00 GMT", 1445412490.0), 0.0, 1e-9);
    cr_assert_lt(oai_retry_after_parse("soon", 0), 0);
    cr_assert_lt(oai_retry_after_parse("5 minutes", 0), 0);
}

/* teacher/oai: request bodies into typed requests (every accepted form, and the 400 for
 * each kind of bad input naming its parameter), the visible-text rule (stop strings,
 * held-back partial stop strings and unfinished UTF-8), the reasoning split (hand-worked
 * cases; fed byte by byte it gives what the final text gives at once) and the response
 * pieces' JSON shapes as the OpenAI API reference spells them. */
#include <jansson.h>
#include <string.h>

#include "core/status.h"
#include "teacher/oai.h"
#include "testutil.h"

static int parse(const char *body, oai_kind k, oai_request *r, oai_error *e) {
    return oai_parse_request(body, strlen(body), k, r, e);
}

Test(oai, chat_request_with_every_field) {
    const char *b = "{\"model\": \"m\", \"messages\": [{\"role\": \"developer\", \"content\": \"be brief\"},"
                    "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"a\"}, {\"type\": \"text\", \"text\": \"b\"}]},"
                    "{\"role\": \"assistant\", \"content\": \"x\", \"reasoning_content\": \"r\"}],"
                    "\"n\": 3, \"temperature\": 0.5, \"top_p\": 0.9, \"top_k\": 40, \"min_p\": 0.05,"
                    "\"max_completion_tokens\": 12, \"seed\": -3, \"stop\": [\"A\", \"BB\"], \"logprobs\": true,"
                    "\"top_logprobs\": 4, \"stream\": true, \"stream_options\": {\"include_usage\": true},"
                    "\"ignore_eos\": true, \"user\": \"u\", \"unknown_field\": {\"x\": 1}, \"tools\": []}";
    oai_request r;
    oai_error e;
    cr_assert_eq(parse(b, OAI_CHAT, &r, &e), 0, "%s", e.message);
    cr_assert_str_eq(r.model, "m");
    cr_assert_eq(r.n_messages, 3);
    cr_assert_str_eq(r.messages[0].role, "system");
    cr_assert_str_eq(r.messages[1].content, "a\nb");
    cr_assert_str_eq(r.messages[2].reasoning_content, "r");
    cr_assert_null(r.messages[0].reasoning_content);
    cr_assert_eq(r.n, 3);
    cr_assert_float_eq(r.temperature, 0.5, 1e-12);
    cr_assert_float_eq(r.top_p, 0.9, 1e-12);
    cr_assert_eq(r.top_k, 40);
    cr_assert_float_eq(r.min_p, 0.05, 1e-12);
    cr_assert_eq(r.max_tokens, 12);
    cr_assert(r.has_seed);
    cr_assert_eq(r.seed, (uint64_t)-3);
    cr_assert_eq(r.n_stop, 2);
    cr_assert_str_eq(r.stop[1], "BB");
    cr_assert(r.logprobs && r.top_logprobs == 4 && r.stream && r.include_usage && r.ignore_eos);
    oai_request_free(&r);
}

Test(oai, defaults) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", OAI_CHAT, &r, &e), 0);
    cr_assert(r.n == 1 && r.temperature == 1 && r.top_p == 1 && r.top_k == 0 && r.min_p == 0);
    cr_assert(r.max_tokens == -1 && !r.has_seed && r.n_stop == 0 && !r.logprobs && !r.stream && !r.model);
    oai_request_free(&r);
    cr_assert_eq(parse("{\"prompt\": \"x\", \"stop\": \"\\n\", \"top_k\": -1, \"logprobs\": 0}", OAI_COMPLETION, &r, &e), 0);
    cr_assert(r.n_stop == 1 && !strcmp(r.stop[0], "\n") && r.top_k == 0 && r.logprobs && r.top_logprobs == 0);
    oai_request_free(&r);
}

Test(oai, completion_prompt_forms) {
    oai_request r;
    oai_error e;
    cr_assert_eq(parse("{\"prompt\": \"hello\"}", OAI_COMPLETION, &r, &e), 0);
    cr_assert(r.n_prompts == 1 && !strcmp(r.prompts[0].text, "hello"));
    oai_request_free(&r);
    cr_assert_eq(parse("{\"prompt\": [\"a\", \"b\"]}", OAI_COMPLETION, &r, &e), 0);
    cr_assert(r.n_prompts == 2 && !strcmp(r.prompts[1].text, "b"));
    oai_request_free(&r);
    cr_assert_eq(parse("{\"prompt\": [5, 6, 7], \"logprobs\": 3}", OAI_COMPLETION, &r, &e), 0);
    cr_assert(r.n_prompts == 1 && !r.prompts[0].text && r.prompts[0].n_ids == 3 && r.prompts[0].ids[2] == 7);
    cr_assert(r.logprobs && r.top_logprobs == 3);
    oai_request_free(&r);
    cr_assert_eq(parse("{\"prompt\": [[1], [2, 3]]}", OAI_COMPLETION, &r, &e), 0);
    cr_assert(r.n_prompts == 2 && r.prompts[1].n_ids == 2 && r.prompts[1].ids[0] == 2);
    oai_request_free(&r);
}

/* Every bad body: 400, the parameter named, the request left empty. */
Test(oai, bad_requests_are_400_naming_the_parameter) {
    static const struct { oai_kind k; const char *body, *param, *needle; } cases[] = {
        {OAI_CHAT, "{\"messages\": [", "", "invalid JSON"},
        {OAI_CHAT, "[1, 2]", "", "JSON object"},
        {OAI_CHAT, "{}", "messages", "required"},
        {OAI_CHAT, "{\"messages\": []}", "messages", "non-empty"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}", "messages[0]", "tool"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\"}]}", "messages[0]", "content"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}",
         "messages[0].content", "text"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"n\": 0}", "n", "'n'"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"n\": 1.5}", "n", "integer"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"temperature\": 2.5}", "temperature", "[0, 2]"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"temperature\": \"hot\"}", "temperature", "number"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"top_p\": 0}", "top_p", "(0, 1]"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": 0}", "max_tokens", "max_tokens"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"seed\": \"1\"}", "seed", "integer"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"stop\": [\"\"]}", "stop", "non-empty"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"stop\": 3}", "stop", "string"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"top_logprobs\": 2}", "top_logprobs", "logprobs"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": true, \"top_logprobs\": 21}",
         "top_logprobs", "[0, 20]"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"stream_options\": {\"include_usage\": true}}",
         "stream_options", "stream"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": [{\"type\": \"function\"}]}", "tools",
         "not supported"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"presence_penalty\": 0.5}", "presence_penalty",
         "not supported"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"stream\": 1}", "stream", "boolean"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"model\": 7}", "model", "string"},
        {OAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"messages\": []}", "", "invalid JSON"},
        {OAI_COMPLETION, "{}", "prompt", "required"},
        {OAI_COMPLETION, "{\"prompt\": []}", "prompt", "empty"},
        {OAI_COMPLETION, "{\"prompt\": [1, -2]}", "prompt", "token ids"},
        {OAI_COMPLETION, "{\"prompt\": [\"a\", [1]]}", "prompt", "mixed"},
        {OAI_COMPLETION, "{\"prompt\": 5}", "prompt", "string"},
        {OAI_COMPLETION, "{\"prompt\": \"x\", \"echo\": true}", "echo", "not supported"},
        {OAI_COMPLETION, "{\"prompt\": \"x\", \"logprobs\": true}", "logprobs", "integer"},
        {OAI_COMPLETION, "{\"prompt\": \"x\", \"logprobs\": 21}", "logprobs", "[0, 20]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        oai_request r;
        oai_error e;
        int rc = parse(cases[i].body, cases[i].k, &r, &e);
        cr_assert_eq(rc, RT_EINVAL, "case %zu (%s) gave %d", i, cases[i].body, rc);
        cr_assert_eq(e.status, 400, "case %zu", i);
        cr_assert_str_eq(e.param, cases[i].param, "case %zu: param '%s'", i, e.param);
        cr_assert(strstr(e.message, cases[i].needle), "case %zu: '%s' lacks '%s'", i, e.message, cases[i].needle);
        cr_assert(r.n_messages == 0 && r.n_prompts == 0 && r.n_stop == 0 && !r.model, "case %zu left data", i);
        oai_request_free(&r);
    }
}

Test(oai, error_object_shape) {
    char *s = oai_error_json(400, "bad \"x\"", "temperature", NULL);
    json_t *j = json_loads(s, 0, NULL);
    cr_assert(j);
    json_t *e = json_object_get(j, "error");
    cr_assert_str_eq(json_string_value(json_object_get(e, "message")), "bad \"x\"");
    cr_assert_str_eq(json_string_value(json_object_get(e, "type")), "invalid_request_error");
    cr_assert_str_eq(json_string_value(json_object_get(e, "param")), "temperature");
    cr_assert(json_is_null(json_object_get(e, "code")));
    json_decref(j);
    free(s);
    s = oai_error_json(401, "no", NULL, "invalid_api_key");
    j = json_loads(s, 0, NULL);
    e = json_object_get(j, "error");
    cr_assert_str_eq(json_string_value(json_object_get(e, "type")), "authentication_error");
    cr_assert(json_is_null(json_object_get(e, "param")));
    cr_assert_str_eq(json_string_value(json_object_get(e, "code")), "invalid_api_key");
    json_decref(j);
    free(s);
}

Test(oai, envelope_usage_and_sse) {
    json_t *j = oai_envelope(OAI_CHAT, true, "chatcmpl-1", 1700000000, "tiny");
    json_object_set_new(j, "usage", oai_usage(5, 7));
    char *s = oai_sse_event(j);
    cr_assert_str_eq(s, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
                        "\"model\":\"tiny\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,"
                        "\"total_tokens\":12}}\n\n");
    free(s);
    json_decref(j);
    j = oai_envelope(OAI_COMPLETION, false, "cmpl-1", 1, "m");
    cr_assert_str_eq(json_string_value(json_object_get(j, "object")), "text_completion");
    json_decref(j);
    j = oai_envelope(OAI_CHAT, false, "c", 1, "m");
    cr_assert_str_eq(json_string_value(json_object_get(j, "object")), "chat.completion");
    json_decref(j);
}

Test(oai, logprob_shapes) {
    oai_token_lp top[2] = {{"Hi", 2, (const uint8_t *)"Hi", 2, -0.25f}, {" a", 2, (const uint8_t *)" a", 2, -2.0f}};
    oai_pos_lp p[2] = {{{"Hi", 2, (const uint8_t *)"Hi", 2, -0.25f}, top, 2}, {{"\xEF\xBF\xBD", 3, (const uint8_t *)"\xC3", 1, -1.5f}, NULL, 0}};
    json_t *c = oai_logprobs_chat(p, 2);
    char *s = json_dumps(c, JSON_COMPACT);
    cr_assert_str_eq(s, "{\"content\":[{\"token\":\"Hi\",\"logprob\":-0.25,\"bytes\":[72,105],\"top_logprobs\":["
                        "{\"token\":\"Hi\",\"logprob\":-0.25,\"bytes\":[72,105]},{\"token\":\" a\",\"logprob\":-2.0,"
                        "\"bytes\":[32,97]}]},{\"token\":\"\xEF\xBF\xBD\",\"logprob\":-1.5,\"bytes\":[195],"
                        "\"top_logprobs\":[]}],\"refusal\":null}");
    free(s);
    json_decref(c);
    size_t off = 10;
    c = oai_logprobs_completion(p, 2, &off);
    cr_assert_eq(off, 13);   /* "Hi" and U+FFFD: three characters */
    s = json_dumps(c, JSON_COMPACT);
    cr_assert_str_eq(s, "{\"tokens\":[\"Hi\",\"\xEF\xBF\xBD\"],\"token_logprobs\":[-0.25,-1.5],\"top_logprobs\":"
                        "[{\"Hi\":-0.25,\" a\":-2.0},null],\"text_offset\":[10,12]}");
    free(s);
    json_decref(c);
}

Test(oai, visible_text) {
    char *stop[] = {"END", "xy"};
    cr_assert_eq(oai_visible_len("hello", 5, stop, 2, false), 5);
    cr_assert_eq(oai_visible_len("helloEN", 7, stop, 2, false), 5);       /* "EN" may become END */
    cr_assert_eq(oai_visible_len("helloEN", 7, stop, 2, true), 7);        /* finished: it did not */
    cr_assert_eq(oai_visible_len("helloENDxy", 10, stop, 2, false), 5);   /* cut at the first stop */
    cr_assert_eq(oai_visible_len("abxyEND", 7, stop, 2, true), 2);
    cr_assert_eq(oai_visible_len("ab x", 4, stop, 2, false), 3);
    cr_assert_eq(oai_visible_len("ab\xEF\xBF\xBD", 5, NULL, 0, false), 2);  /* unfinished UTF-8 */
    cr_assert_eq(oai_visible_len("ab\xEF\xBF\xBD", 5, NULL, 0, true), 5);
}

typedef struct {
    const char *text;
    bool opened;
    const char *reasoning, *content;
    bool has_reasoning;
} split_case;

static void split_all(const char *t, size_t n, bool opened, size_t step, char **rea, char **con, bool *has) {
    oai_split s;
    oai_split_init(&s, opened);
    oai_buf r = {0}, c = {0};
    oai_buf_put(&r, "", 0);
    oai_buf_put(&c, "", 0);
    for (size_t at = step; at < n; at += step) {
        oai_buf dr = {0}, dc = {0};   /* deltas, as a stream sends them */
        cr_assert_eq(oai_split_feed(&s, t, at, false, &dr, &dc), 0);
        oai_buf_put(&r, dr.s ? dr.s : "", dr.len);
        oai_buf_put(&c, dc.s ? dc.s : "", dc.len);
        oai_buf_free(&dr);
        oai_buf_free(&dc);
    }
    cr_assert_eq(oai_split_feed(&s, t, n, true, &r, &c), 0);
    *rea = r.s;
    *con = c.s;
    *has = s.reasoning;
}

Test(oai, reasoning_split_whole_and_piecewise) {
    static const split_case cases[] = {
        {"Let me add.\n</think>\n\nIt is 4.", true, "Let me add.\n", "It is 4.", true},
        {"<think>hmm</think>answer", false, "hmm", "answer", true},
        {"  \n<think>\nhmm\n</think>  answer </think> x", false, "\nhmm\n", "answer </think> x", true},
        {"plain answer", false, "", "plain answer", false},
        {"<thin", false, "", "<thin", false},
        {"still thinking </thi", true, "still thinking </thi", "", true},
        {"no tag <think> inside", false, "", "no tag <think> inside", false},
        {"</think>", true, "", "", true},
        {"", false, "", "", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const split_case *k = &cases[i];
        size_t n = strlen(k->text);
        for (size_t step = 1; step <= n + 1; step++) {
            char *r, *c;
            bool has;
            split_all(k->text, n, k->opened, step, &r, &c, &has);
            cr_assert_str_eq(r, k->reasoning, "case %zu step %zu: reasoning '%s'", i, step, r);
            cr_assert_str_eq(c, k->content, "case %zu step %zu: content '%s'", i, step, c);
            cr_assert_eq(has, k->has_reasoning, "case %zu", i);
            free(r);
            free(c);
        }
    }
}

/* A delta never shows a piece of the closing tag as reasoning. */
Test(oai, split_holds_back_a_partial_tag) {
    oai_split s;
    oai_split_init(&s, true);
    oai_buf r = {0}, c = {0};
    const char *t = "abc</thi";
    cr_assert_eq(oai_split_feed(&s, t, strlen(t), false, &r, &c), 0);
    cr_assert_str_eq(r.s, "abc");
    cr_assert_eq(c.len, 0);
    oai_buf_free(&r);
    t = "abc</think>\n";
    cr_assert_eq(oai_split_feed(&s, t, strlen(t), false, &r, &c), 0);
    cr_assert_eq(r.len, 0);
    cr_assert_eq(c.len, 0);   /* leading whitespace of the content waits */
    t = "abc</think>\nX";
    cr_assert_eq(oai_split_feed(&s, t, strlen(t), false, &r, &c), 0);
    cr_assert_str_eq(c.s, "X");
    oai_buf_free(&r);
    oai_buf_free(&c);
}

/* Request lines, worked by hand against RFC 9112's request-line = method SP request-target SP
 * HTTP-version CRLF (method a token, HTTP-version "HTTP/" DIGIT "." DIGIT). */
Test(oai, request_line_complete_partial_and_bad) {
    static const struct {
        const char *b;
        int want;
    } cases[] = {
        {"GET /health HTTP/1.1\r\n", 1},
        {"POST /v1/completions?x=1 HTTP/1.0\nHost", 1},   /* a bare LF ends it too */
        {"\r\nGET / HTTP/1.1\r\n", 1},                    /* empty lines before it are ignored */
        {"M-SEARCH * HTTP/1.1\r\n", 1},                   /* any token is a method */
        {"", 0},
        {"G", 0},
        {"GET /he", 0},
        {"GET /health HTTP/1.", 0},
        {"GET /health HTTP/1.1\r", 0},
        {"GARBAGE\r\n", -1},                              /* no space */
        {"\x16\x03\x01\x02\x00", -1},                     /* a TLS handshake */
        {"GE\x01T / HTTP/1.1\r\n", -1},                   /* a control byte in the method */
        {"GET  / HTTP/1.1\r\n", -1},                      /* two spaces: an empty target */
        {"GET /a\tb HTTP/1.1\r\n", -1},                   /* a control byte in the target */
        {"GET / FOO/1.1\r\n", -1},
        {"GET / HTTP/1.1 \r\n", -1},
        {"GET / HTTP/x", -1},
        {"GET /\r\n", -1},                                /* HTTP/0.9 */
        {"{\"prompt\": [1]}\n", -1},
        {"ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFG", -1},        /* a 33-character method */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        cr_expect_eq(oai_request_line(cases[i].b, strlen(cases[i].b)), cases[i].want, "%zu: %s", i, cases[i].b);
    cr_expect_eq(oai_request_line("GE\0T / HTTP/1.1\r\n", 17), -1, "a NUL in the method");
}

/* ---- response shapes: worked examples written from the OpenAI API reference (the chat
 * completion object, the chat completion chunk object, the completion object), with the
 * reasoning_content field vLLM and DeepSeek's API add. Compared as whole compact strings, so
 * field order and null-vs-absent are pinned too. */

static void expect_json(json_t *j, const char *want) {
    cr_assert(j, "no JSON (out of memory?)");
    char *s = json_dumps(j, JSON_COMPACT);
    cr_assert_str_eq(s, want);
    free(s);
    json_decref(j);
}

Test(oai, whole_chat_completion) {
    json_t *r = oai_envelope(OAI_CHAT, false, "chatcmpl-abc", 1700000000, "r1");
    json_array_append_new(json_object_get(r, "choices"),
                          oai_choice_chat(0, "The answer is 4.", 16, true, "Let me add.\n", 12, NULL, "stop"));
    json_array_append_new(json_object_get(r, "choices"), oai_choice_chat(1, "4", 1, false, NULL, 0, NULL, "length"));
    json_object_set_new(r, "usage", oai_usage(9, 20));
    expect_json(r, "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\",\"created\":1700000000,\"model\":\"r1\","
                   "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"The answer is 4.\","
                   "\"reasoning_content\":\"Let me add.\\n\",\"tool_calls\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"},"
                   "{\"index\":1,\"message\":{\"role\":\"assistant\",\"content\":\"4\",\"reasoning_content\":null,"
                   "\"tool_calls\":[]},\"logprobs\":null,\"finish_reason\":\"length\"}],"
                   "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":20,\"total_tokens\":29}}");
}

/* Lengths, not NUL, end the strings: a piece of a longer buffer is cut where it says. */
Test(oai, choice_strings_are_cut_at_their_length) {
    expect_json(oai_choice_text(0, "Blue, mostly", 4, NULL, "stop"),
                "{\"index\":0,\"text\":\"Blue\",\"logprobs\":null,\"finish_reason\":\"stop\"}");
    expect_json(oai_choice_chat(2, "abc", 0, true, "xyz", 1, NULL, "stop"),
                "{\"index\":2,\"message\":{\"role\":\"assistant\",\"content\":\"\",\"reasoning_content\":\"x\","
                "\"tool_calls\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"}");
}

Test(oai, whole_completion_with_logprobs) {
    oai_token_lp top[1] = {{" Blue", 5, (const uint8_t *)" Blue", 5, -0.5f}};
    oai_pos_lp p[1] = {{{" Blue", 5, (const uint8_t *)" Blue", 5, -0.5f}, top, 1}};
    size_t off = 0;
    json_t *r = oai_envelope(OAI_COMPLETION, false, "cmpl-1", 1, "m");
    json_array_append_new(json_object_get(r, "choices"),
                          oai_choice_text(0, " Blue", 5, oai_logprobs_completion(p, 1, &off), "length"));
    json_object_set_new(r, "usage", oai_usage(3, 1));
    expect_json(r, "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":["
                   "{\"index\":0,\"text\":\" Blue\",\"logprobs\":{\"tokens\":[\" Blue\"],\"token_logprobs\":[-0.5],"
                   "\"top_logprobs\":[{\" Blue\":-0.5}],\"text_offset\":[0]},\"finish_reason\":\"length\"}],"
                   "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}");
}

Test(oai, chat_chunk_with_logprobs) {
    oai_pos_lp p[1] = {{{"4", 1, (const uint8_t *)"4", 1, -0.25f}, NULL, 0}};
    json_t *c = oai_chunk(OAI_CHAT, "chatcmpl-1", 5, "m", oai_delta_chat(0, NULL, 0, "4", 1, oai_logprobs_chat(p, 1), NULL));
    expect_json(c, "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":["
                   "{\"index\":0,\"delta\":{\"content\":\"4\"},\"logprobs\":{\"content\":[{\"token\":\"4\",\"logprob\":-0.25,"
                   "\"bytes\":[52],\"top_logprobs\":[]}],\"refusal\":null},\"finish_reason\":null}]}");
}

/* A stream, chunk by chunk as SSE events: the role first, reasoning and content deltas (each
 * field only when it has text), the finish with an empty delta, the usage chunk, [DONE]. */
Test(oai, sse_stream_of_a_chat_completion) {
    json_t *chunks[] = {
        oai_chunk(OAI_CHAT, "chatcmpl-1", 7, "m", oai_delta_role(0)),
        oai_chunk(OAI_CHAT, "chatcmpl-1", 7, "m", oai_delta_chat(0, "hmm", 3, NULL, 0, NULL, NULL)),
        oai_chunk(OAI_CHAT, "chatcmpl-1", 7, "m", oai_delta_chat(0, "!", 1, "It is", 5, NULL, NULL)),
        oai_chunk(OAI_CHAT, "chatcmpl-1", 7, "m", oai_delta_chat(0, NULL, 0, NULL, 0, NULL, "stop")),
        oai_usage_chunk(OAI_CHAT, "chatcmpl-1", 7, "m", 4, 3),
    };
    static const char *const want[] = {
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":["
        "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":["
        "{\"index\":0,\"delta\":{\"reasoning_content\":\"hmm\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":["
        "{\"index\":0,\"delta\":{\"reasoning_content\":\"!\",\"content\":\"It is\"},\"logprobs\":null,"
        "\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":["
        "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"m\",\"choices\":[],"
        "\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":3,\"total_tokens\":7}}\n\n",
    };
    for (size_t i = 0; i < sizeof chunks / sizeof *chunks; i++) {
        char *s = oai_sse_event(chunks[i]);
        cr_assert_str_eq(s, want[i], "chunk %zu", i);
        free(s);
        json_decref(chunks[i]);
    }
    cr_assert_str_eq(OAI_SSE_DONE, "data: [DONE]\n\n");
}

/* Streamed completions keep the object name "text_completion" and carry text pieces. */
Test(oai, completion_chunk) {
    json_t *c = oai_chunk(OAI_COMPLETION, "cmpl-9", 1, "m", oai_choice_text(1, " mostly", 7, NULL, NULL));
    char *s = oai_sse_event(c);
    cr_assert_str_eq(s, "data: {\"id\":\"cmpl-9\",\"object\":\"text_completion\",\"created\":1,\"model\":\"m\",\"choices\":["
                        "{\"index\":1,\"text\":\" mostly\",\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    free(s);
    json_decref(c);
}

Test(oai, model_list) {
    expect_json(oai_models("tiny", 1700000000, 4096),
                "{\"object\":\"list\",\"data\":[{\"id\":\"tiny\",\"object\":\"model\",\"created\":1700000000,"
                "\"owned_by\":\"retort\",\"max_model_len\":4096}]}");
}

/* Error objects by status, as whole strings: the type follows the status class. */
Test(oai, error_objects_by_status) {
    static const struct {
        int status;
        const char *msg, *param, *code, *want;
    } cases[] = {
        {404, "no such endpoint: GET /x", NULL, NULL,
         "{\"error\":{\"message\":\"no such endpoint: GET /x\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}"},
        {413, "too big", "", NULL,
         "{\"error\":{\"message\":\"too big\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":null}}"},
        {503, "the server is shutting down", NULL, NULL,
         "{\"error\":{\"message\":\"the server is shutting down\",\"type\":\"server_error\",\"param\":null,\"code\":null}}"},
        {400, "n must be 1..128", "n", NULL,
         "{\"error\":{\"message\":\"n must be 1..128\",\"type\":\"invalid_request_error\",\"param\":\"n\",\"code\":null}}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *s = oai_error_json(cases[i].status, cases[i].msg, cases[i].param, cases[i].code);
        cr_assert_str_eq(s, cases[i].want, "case %zu", i);
        free(s);
    }
}

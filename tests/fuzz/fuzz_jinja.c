/* tests/fuzz/fuzz_jinja.c — libFuzzer target on the Jinja-subset parser and evaluator. Any input
 * either parses or fails with RT_EFORMAT / RT_EUNSUPPORTED / RT_ERANGE / RT_ENOMEM and a message;
 * a parsed template renders against a small chat context or fails with a message. Never crash,
 * leak, loop forever (loops run over finite lists; range() is capped) or read out of bounds.
 *   make fuzz && build/fuzz/fuzz_jinja -max_total_time=60 -dict=tests/fuzz/jinja.dict tests/fuzz/corpus/jinja */
#include <assert.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/jinja.h"
#include "core/status.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    jj_template *t = NULL;
    int rc = jj_parse((const char *)data, size, &t);
    if (rc) {
        assert(rc == RT_EFORMAT || rc == RT_EUNSUPPORTED || rc == RT_ERANGE || rc == RT_ENOMEM);
        assert(rt_errmsg()[0]);
        assert(!t);
        return 0;
    }
    json_t *ctx = json_pack("{s:[{s:s,s:s},{s:s,s:s,s:s}],s:b,s:s,s:s,s:n}", "messages", "role", "user", "content",
                            " 2+2? ", "role", "assistant", "content", "<think>\nx\n</think>\n\n4", "reasoning_content",
                            "r", "add_generation_prompt", 1, "bos_token", "<s>", "eos_token", "</s>", "tools");
    char *out = NULL;
    size_t n = 0;
    rc = jj_render(t, ctx, &out, &n);
    if (rc) {
        assert(rt_errmsg()[0]);
        assert(!out);
    } else {
        assert(out && out[n] == 0);
    }
    free(out);
    json_decref(ctx);
    jj_free(t);
    return 0;
}

/* tests/fuzz/fuzz_tokenizer_json.c — libFuzzer target on loading tokenizer.json, differential:
 * the input is loaded twice, once with model.vocab and model.merges read directly from the
 * text (core/tokenizer_json.c, the default) and once with jansson for the whole file. Both
 * must succeed or both fail (RT_EFORMAT / RT_EUNSUPPORTED with a message, never a crash), and
 * when both succeed every id has the same token and special flag. Inputs holding a NUL byte
 * are only loaded (no comparison): jansson takes a raw NUL after a number ("2\0,"), which
 * RFC 8259 does not allow and the direct parser refuses. Seeds: small BPE files.
 *   make fuzz && build/fuzz/fuzz_tokenizer_json -max_total_time=60 tests/fuzz/corpus/tokenizer_json */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/status.h"
#include "core/tokenizer.h"
#include "core/tokenizer_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tok_tokenizer *fast = NULL, *tree = NULL;
    int a = tok_load_buffer_opts((const char *)data, size, false, &fast);
    if (a) assert(rt_errmsg()[0] && !fast);
    int b = tok_load_buffer_opts((const char *)data, size, true, &tree);
    if (b) assert(rt_errmsg()[0] && !tree);
    assert(a == 0 || a == RT_EFORMAT || a == RT_EUNSUPPORTED || a == RT_ENOMEM);
    if (memchr(data, 0, size)) {
        tok_free(fast);
        tok_free(tree);
        return 0;
    }
    assert((a == 0) == (b == 0));
    if (!a && !b) {
        assert(tok_vocab_size(fast) == tok_vocab_size(tree));
        for (int32_t id = 0; id < (int32_t)tok_vocab_size(tree); id++) {
            const char *x = tok_id_to_token(fast, id), *y = tok_id_to_token(tree, id);
            assert((x == NULL) == (y == NULL));
            assert(!x || !strcmp(x, y));
            assert(tok_is_special(fast, id) == tok_is_special(tree, id));
        }
    }
    tok_free(fast);
    tok_free(tree);
    return 0;
}

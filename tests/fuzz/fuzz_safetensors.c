/* tests/fuzz/fuzz_safetensors.c — libFuzzer target for the safetensors header parser.
 * Any input must either parse (and then every tensor's bytes lie inside the input) or fail
 * with a message; never crash, leak or read out of bounds.
 *   make fuzz && build/fuzz/fuzz_safetensors -max_total_time=60 tests/fuzz/corpus/safetensors */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "core/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file *f = NULL;
    if (st_open_buffer(data, size, "fuzz", &f) == 0) {
        for (size_t i = 0; i < st_count(f); i++) {
            const st_tensor *t = st_get(f, i);
            const uint8_t *p = t->data;
            assert(p >= data && p + t->nbytes <= data + size);
            volatile uint8_t sink = 0;
            if (t->nbytes) sink = p[0] ^ p[t->nbytes - 1];
            (void)sink;
            assert(st_find(f, t->name) == t);
        }
        st_close(f);
    }
    return 0;
}

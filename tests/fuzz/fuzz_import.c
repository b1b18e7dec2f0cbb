/* tests/fuzz/fuzz_import.c — libFuzzer target on the JSONL import line parser.
 * The first byte picks the format and options; the rest is one line. Any input must parse
 * (then the record's messages and metadata are valid JSON, and a sample exists exactly when
 * asked for) or fail with RT_EFORMAT and a message; never crash, leak or read out of bounds.
 *   make fuzz && build/fuzz/fuzz_import -max_total_time=60 tests/fuzz/corpus/import */
#include <assert.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/status.h"
#include "dataset/import.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!size) return 0;
    imp_options o = {.format = (imp_format)(data[0] % 5), .as_samples = data[0] & 8, .skip_bad = false};
    if (o.format == IMP_JSONL) o.prompt_field = "prompt";
    if (data[0] & 16) o.answer_field = "answer";
    if (o.format == IMP_JSONL && o.as_samples && !o.answer_field) o.answer_field = "answer";
    imp_record r;
    int rc = imp_parse_line(&o, (const char *)data + 1, size - 1, &r);
    if (rc == 0) {
        json_t *m = json_loads(r.messages, 0, NULL), *meta = json_loads(r.metadata, 0, NULL);
        assert(json_is_array(m) && json_array_size(m) > 0);
        assert(json_is_object(meta));
        assert(!o.as_samples || (r.sample && strlen(r.sample) == r.sample_len));
        json_decref(m);
        json_decref(meta);
        imp_record_free(&r);
    } else {
        assert(rc == RT_EFORMAT || rc == RT_ENOMEM);
        assert(rt_errmsg()[0]);
    }
    return 0;
}

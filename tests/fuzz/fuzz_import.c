/* tests/fuzz/fuzz_import.c — libFuzzer target on the JSONL import line parser.
 * The first byte picks the format (% 5) and options (8: --as-samples, 16: --answer-field
 * answer, 32: a 64-byte --max-prompt-bytes); the rest is one line. Any input must parse
 * (then the record's messages and metadata are valid JSON, the prompt is not empty, and a
 * sample exists exactly when asked for) or fail with RT_EFORMAT and a message; never crash,
 * leak or read out of bounds. Seeds: tests/fuzz/corpus/import (benchmark lines, trimmed,
 * and synthetic ones for every format and rejection); dictionary: tests/fuzz/import.dict.
 *   make fuzz && build/fuzz/fuzz_import -dict=tests/fuzz/import.dict -max_total_time=60 CORPUS_DIR tests/fuzz/corpus/import */
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
    if (data[0] & 32) o.max_prompt_bytes = 64;
    imp_record r;
    int rc = imp_parse_line(&o, (const char *)data + 1, size - 1, &r);
    if (rc == 0) {
        json_t *m = json_loads(r.messages, 0, NULL), *meta = json_loads(r.metadata, 0, NULL);
        assert(json_is_array(m) && json_array_size(m) > 0);
        size_t prompt_bytes = 0;
        for (size_t i = 0; i < json_array_size(m); i++)
            prompt_bytes += json_string_length(json_object_get(json_array_get(m, i), "content"));
        assert(prompt_bytes > 0 && prompt_bytes <= imp_max_prompt_bytes(&o));
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

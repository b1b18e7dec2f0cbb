/* tests/fuzz/fuzz_yaml.c — libFuzzer target on the YAML subset reader and the filter
 * configuration built from it. Any input must parse into a JSON value or fail with
 * RT_EFORMAT and a message; a parsed map must load as a filter configuration or fail with
 * RT_EFORMAT naming the key; the resolved configuration must serialize. Never crash, leak
 * or read out of bounds.
 *   make fuzz && build/fuzz/fuzz_yaml -max_total_time=60 tests/fuzz/corpus/yaml */
#include <assert.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/status.h"
#include "core/yaml.h"
#include "filters/pipeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_t *doc = NULL;
    int rc = rt_yaml_parse((const char *)data, size, "fuzz.yaml", &doc);
    if (rc) {
        assert(rc == RT_EFORMAT || rc == RT_ENOMEM);
        assert(rt_errmsg()[0]);
        assert(!doc);
        return 0;
    }
    assert(doc);
    fp_config c;
    if (fp_config_default(&c) == 0) {
        rc = fp_config_from_json(doc, "fuzz.yaml", &c);
        assert(rc == 0 || rc == RT_EFORMAT || rc == RT_ENOMEM);
        if (rc == 0) {
            json_t *j = fp_config_to_json(&c);
            char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
            assert(!j || s);
            free(s);
            json_decref(j);
        }
        fp_config_free(&c);
    }
    json_decref(doc);
    return 0;
}

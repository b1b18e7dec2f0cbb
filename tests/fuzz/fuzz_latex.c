/* libFuzzer target: the answer verifier's LaTeX path — extraction, normalization, parsing
 * and comparison — on arbitrary bytes. The input is split at the first NUL (or in half)
 * into a gold answer and a pred solution; every call must return without crashing,
 * leaking or running away, whatever the bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filters/verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 8192) return 0;
    char *buf = malloc(size + 2);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    buf[size + 1] = 0;
    size_t cut = strlen(buf);
    const char *gold, *pred;
    if (cut < size) { gold = buf; pred = buf + cut + 1; }
    else {
        size_t h = size / 2;
        memmove(buf + h + 1, buf + h, size - h + 1);
        buf[h] = 0;
        gold = buf;
        pred = buf + h + 1;
    }
    char *s = NULL;
    if (vf_parse_answer(pred, &s) == 0) free(s);
    if (vf_normalize_answer(gold, &s) == 0) free(s);
    vf_result r;
    vf_opts o;
    vf_opts_default(&o);
    o.last_number = size & 1;
    if (vf_verify(&o, gold, pred, &r) == 0) vf_result_free(&r);
    free(buf);
    return 0;
}

/* tests/fuzz/fuzz_tokenizer.c — libFuzzer target on tok_encode / tok_decode.
 *
 * The input is text (often not valid UTF-8). The tokenizer is either the file named by
 * RETORT_FUZZ_TOKENIZER or, by default, a small one built at startup that uses every
 * component: NFC, a Sequence of Split pre-tokenizers with each behaviour (one inverted),
 * Digits, ByteLevel, 256 byte tokens plus a few merges, and added tokens with lstrip,
 * rstrip, single_word and normalized. Invariants: invalid UTF-8 is RT_EFORMAT, never a
 * crash; valid text encodes, its ids decode, and encoding again (warm caches) gives the
 * same ids. ASan and UBSan watch every step.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "core/tokenizer.h"
#include "core/utf8.h"

static tok_tokenizer *g_tok;

static int alphabet_cp(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    int n = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE)) n++;
    return 256 + n;
}

static void put_json_str(char **p, const char *s, size_t n) {
    *(*p)++ = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') *(*p)++ = '\\';
        *(*p)++ = s[i];
    }
    *(*p)++ = '"';
}

static char *build_json(void) {
    char *buf = malloc(1 << 16), *p = buf;
    p += sprintf(p, "{\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"}]},"
                    "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
                    "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\p{N}{1,3}\"}, \"behavior\": \"Isolated\", \"invert\": false},"
                    "{\"type\": \"Split\", \"pattern\": {\"String\": \"--\"}, \"behavior\": \"MergedWithPrevious\", \"invert\": false},"
                    "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"[.!?]\"}, \"behavior\": \"MergedWithNext\", \"invert\": false},"
                    "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\s*\"}, \"behavior\": \"Contiguous\", \"invert\": true},"
                    "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"#\"}, \"behavior\": \"Removed\", \"invert\": false},"
                    "{\"type\": \"Digits\", \"individual_digits\": false},"
                    "{\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"use_regex\": true}]},"
                    "\"decoder\": {\"type\": \"ByteLevel\"},"
                    "\"added_tokens\": ["
                    "{\"id\": 300, \"content\": \"<s>\", \"special\": true, \"lstrip\": false, \"rstrip\": false, \"single_word\": false, \"normalized\": false},"
                    "{\"id\": 301, \"content\": \"[L]\", \"special\": false, \"lstrip\": true, \"rstrip\": true, \"single_word\": false, \"normalized\": false},"
                    "{\"id\": 302, \"content\": \"word\", \"special\": false, \"lstrip\": false, \"rstrip\": false, \"single_word\": true, \"normalized\": true},"
                    "{\"id\": 303, \"content\": \"caf\\u00e9\", \"special\": false, \"lstrip\": false, \"rstrip\": false, \"single_word\": false, \"normalized\": true}],"
                    "\"model\": {\"type\": \"BPE\", \"vocab\": {");
    for (int b = 0; b < 256; b++) {
        char u[4];
        size_t k = rt_utf8_encode((uint32_t)alphabet_cp(b), u);
        put_json_str(&p, u, k);
        p += sprintf(p, ": %d, ", b);
    }
    p += sprintf(p, "\"\\u0120t\": 256, \"th\": 257, \"the\": 258, \"\\u0120the\": 259, \"in\": 260, \"\\u0120\\u0120\": 261, \"he\": 262},"
                    "\"merges\": [\"\\u0120 t\", \"t h\", \"th e\", \"\\u0120t he\", [\"i\", \"n\"], \"\\u0120 \\u0120\"]}}");
    return buf;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    const char *path = getenv("RETORT_FUZZ_TOKENIZER");
    int rc;
    if (path) {
        rc = tok_load(path, &g_tok);
    } else {
        char *json = build_json();
        rc = tok_load_buffer(json, strlen(json), &g_tok);
        free(json);
    }
    if (rc) {
        fprintf(stderr, "fuzz_tokenizer: cannot load the tokenizer: %s\n", rt_errmsg());
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    bool valid = rt_utf8_check(text, size, NULL);
    int32_t *ids;
    size_t n;
    int rc = tok_encode(g_tok, text, size, size && (data[0] & 1), &ids, &n);
    if (!valid) {
        if (rc != RT_EFORMAT) abort();
        return 0;
    }
    if (rc) abort();
    char *back;
    size_t blen;
    if (tok_decode(g_tok, ids, n, false, &back, &blen)) abort();
    /* a second encode (warm caches) gives the same ids */
    int32_t *again;
    size_t n2;
    if (tok_encode(g_tok, text, size, size && (data[0] & 1), &again, &n2) || n2 != n ||
        memcmp(again, ids, n * sizeof *ids))
        abort();
    free(again);
    free(back);
    free(ids);
    return 0;
}

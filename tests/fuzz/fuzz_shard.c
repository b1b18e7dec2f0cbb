/* tests/fuzz/fuzz_shard.c — libFuzzer target on the packed-shard reader.
 * Any input must validate (then every sequence and document reads back inside the input,
 * with documents in bounds and ordered) or fail with RT_EFORMAT and a message; never
 * crash, leak or read out of bounds. Each input is tried as it is and once more with its
 * checksum recomputed (XXH64), so the fuzzer reaches the body checks past the checksum;
 * the seed corpus holds a real shard with a split document and one with teacher top-k
 * (version 2), whose entries must read back within K and the teacher vocabulary.
 *   make fuzz && build/fuzz/fuzz_shard -max_total_time=60 tests/fuzz/corpus/shard */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "core/shard.h"
#include "core/status.h"

static void check(const uint8_t *data, size_t size) {
    shard_file *f = NULL;
    int rc = shard_open_buffer(data, size, &f);
    if (rc) {
        assert(rc == RT_EFORMAT || rc == RT_ENOMEM);
        assert(rt_errmsg()[0]);
        return;
    }
    const shard_info *h = shard_get_info(f);
    int32_t *tok = malloc((size_t)h->seq_len * sizeof *tok);
    uint8_t *mask = malloc(h->seq_len);
    uint64_t docs = 0;
    for (uint64_t s = 0; s < h->n_seqs && tok && mask; s++) {
        shard_read_seq(f, s, tok, mask);
        size_t n;
        const shard_doc *d = shard_seq_docs(f, s, &n);
        for (size_t k = 0; k < n; k++) {
            assert(d[k].seq == s && d[k].start + d[k].len <= h->seq_len);
            for (uint32_t i = 0; i < d[k].len; i++) assert((uint32_t)tok[d[k].start + i] < h->vocab_size);
        }
        docs += n;
        if (h->top_k) {
            uint8_t *tn = malloc(h->seq_len);
            int32_t *ids = malloc((size_t)h->seq_len * h->top_k * sizeof *ids);
            float *lps = malloc((size_t)h->seq_len * h->top_k * sizeof *lps);
            if (tn && ids && lps) {
                shard_read_topk(f, s, tn, ids, lps);
                for (uint32_t i = 0; i < h->seq_len; i++) {
                    assert(tn[i] <= h->top_k);
                    for (uint32_t a = 0; a < tn[i]; a++) assert((uint32_t)ids[(size_t)i * h->top_k + a] < h->teacher_vocab);
                }
            }
            free(tn), free(ids), free(lps);
        }
    }
    assert(!tok || docs == h->n_docs);
    free(tok);
    free(mask);
    shard_close(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check(data, size);
    if (size >= SHARD_HEADER_BYTES) {
        uint8_t *copy = malloc(size);
        if (!copy) return 0;
        memcpy(copy, data, size);
        uint64_t h = XXH64(copy + SHARD_HEADER_BYTES, size - SHARD_HEADER_BYTES, 0);
        memcpy(copy + 48, &h, 8); /* little-endian host, as the reader requires */
        check(copy, size);
        free(copy);
    }
    return 0;
}

/* tests/tools/student_mkshard.c — writes a packed shard of synthetic documents for the trainer tests.
 *
 *   student_mkshard OUT.bin SEQ_LEN N_SEQS VOCAB SEED
 *
 * Each sequence is filled with documents of 4…SEQ_LEN/2 tokens until fewer than 4 positions
 * are left (those are padding, id 0). A document starts with a random token in [3, VOCAB)
 * and continues by a fixed rule (t → (5t + 3) mod (VOCAB−3) + 3) with one token in eight
 * random, so a model can learn it; its first quarter is the "prompt" (mask 0), the rest
 * has mask 1. Written through core/shard's writer. Exit 0, or 1 with the message.
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/shard.h"
#include "core/status.h"
#include "student/rng.h"

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: student_mkshard OUT.bin SEQ_LEN N_SEQS VOCAB SEED\n");
        return 2;
    }
    uint32_t N = (uint32_t)atoi(argv[2]), V = (uint32_t)atoi(argv[4]);
    long S = atol(argv[3]);
    sr_rng r;
    sr_seed(&r, strtoull(argv[5], NULL, 10));
    shard_writer *w;
    if (N < 8 || V < 8 || shard_writer_open(argv[1], N, V, 0, &w)) {
        fprintf(stderr, "student_mkshard: %s\n", N < 8 || V < 8 ? "SEQ_LEN and VOCAB must be ≥ 8" : rt_errmsg());
        return 1;
    }
    int32_t *tok = calloc(N, sizeof *tok);
    uint8_t *mask = calloc(N, 1);
    shard_doc *docs = calloc(N, sizeof *docs);
    uint64_t doc_id = 0;
    for (long s = 0; s < S; s++) {
        uint32_t at = 0, nd = 0;
        for (uint32_t i = 0; i < N; i++) { tok[i] = 0; mask[i] = 0; }
        while (N - at >= 4) {
            uint32_t len = 4 + (uint32_t)sr_below(&r, N / 2 - 3);
            if (len > N - at) len = N - at;
            int32_t t = 3 + (int32_t)sr_below(&r, V - 3);
            for (uint32_t i = 0; i < len; i++) {
                tok[at + i] = t;
                mask[at + i] = i >= len / 4;
                t = sr_below(&r, 8) == 0 ? 3 + (int32_t)sr_below(&r, V - 3) : (5 * t + 3) % (int32_t)(V - 3) + 3;
            }
            docs[nd++] = (shard_doc){.doc_id = doc_id++, .start = at, .len = len};
            at += len;
        }
        if (shard_writer_add(w, tok, mask, docs, nd)) {
            fprintf(stderr, "student_mkshard: %s\n", rt_errmsg());
            shard_writer_abort(w);
            return 1;
        }
    }
    free(tok);
    free(mask);
    free(docs);
    if (shard_writer_finish(w)) {
        fprintf(stderr, "student_mkshard: %s\n", rt_errmsg());
        return 1;
    }
    return 0;
}

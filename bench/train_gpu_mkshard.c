/* bench/train_gpu_mkshard.c — packed shards for bench/train_gpu.sh's retort side.
 *
 *   train_gpu_mkshard OUT.bin SEQ_LEN N_SEQS VOCAB DOCS SEED
 *
 * N_SEQS sequences of SEQ_LEN uniformly random token ids, each holding DOCS documents of
 * SEQ_LEN/DOCS tokens end to end, every token trained on (mask 1): the packing the PyTorch
 * peer runs as a batch of DOCS·N_SEQS sequences of SEQ_LEN/DOCS tokens. Written through
 * core/shard's writer. Exit 0, or 1 with the message. */
#include <stdio.h>
#include <stdlib.h>

#include "core/shard.h"
#include "core/status.h"
#include "student/rng.h"

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: train_gpu_mkshard OUT.bin SEQ_LEN N_SEQS VOCAB DOCS SEED\n");
        return 2;
    }
    uint32_t N = (uint32_t)atoi(argv[2]), V = (uint32_t)atoi(argv[4]), D = (uint32_t)atoi(argv[5]);
    long S = atol(argv[3]);
    if (N < 2 || V < 2 || D < 1 || N % D || S < 1) {
        fprintf(stderr, "train_gpu_mkshard: SEQ_LEN a multiple of DOCS, VOCAB ≥ 2, N_SEQS ≥ 1 expected\n");
        return 2;
    }
    sr_rng r;
    sr_seed(&r, strtoull(argv[6], NULL, 10));
    shard_writer *w;
    if (shard_writer_open(argv[1], N, V, 0, &w)) {
        fprintf(stderr, "train_gpu_mkshard: %s\n", rt_errmsg());
        return 1;
    }
    int32_t *tok = malloc(N * sizeof *tok);
    uint8_t *mask = malloc(N);
    shard_doc *docs = calloc(D, sizeof *docs);
    if (!tok || !mask || !docs) { fprintf(stderr, "train_gpu_mkshard: out of memory\n"); return 1; }
    for (uint32_t i = 0; i < N; i++) mask[i] = 1;
    for (long s = 0; s < S; s++) {
        for (uint32_t i = 0; i < N; i++) tok[i] = (int32_t)sr_below(&r, V);
        for (uint32_t d = 0; d < D; d++) docs[d] = (shard_doc){.doc_id = (uint64_t)s * D + d, .start = d * (N / D), .len = N / D};
        if (shard_writer_add(w, tok, mask, docs, D)) {
            fprintf(stderr, "train_gpu_mkshard: %s\n", rt_errmsg());
            shard_writer_abort(w);
            return 1;
        }
    }
    free(tok);
    free(mask);
    free(docs);
    if (shard_writer_finish(w)) {
        fprintf(stderr, "train_gpu_mkshard: %s\n", rt_errmsg());
        return 1;
    }
    return 0;
}

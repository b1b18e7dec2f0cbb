/* tests/tools/student_mkshard.c — writes a packed shard of synthetic documents for the trainer tests.
 *
 *   student_mkshard OUT.bin SEQ_LEN N_SEQS VOCAB SEED [TOPK TEACHER_VOCAB]
 *
 * Each sequence is filled with documents of 4…SEQ_LEN/2 tokens until fewer than 4 positions
 * are left (those are padding, id 0). A document starts with a random token in [3, VOCAB)
 * and continues by a fixed rule (t → (5t + 3) mod (VOCAB−3) + 3) with one token in eight
 * random, so a model can learn it; its first quarter is the "prompt" (mask 0), the rest
 * has mask 1. With TOPK, every mask-1 position but one in five also gets a teacher top-k: 1…TOPK
 * distinct ids below TEACHER_VOCAB (the position's own token first when it is below), with
 * descending logprobs drawn so that their mass is 0.5…0.99. Written through core/shard's
 * writer. Exit 0, or 1 with the message.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/shard.h"
#include "core/status.h"
#include "student/rng.h"

int main(int argc, char **argv) {
    if (argc != 6 && argc != 8) {
        fprintf(stderr, "usage: student_mkshard OUT.bin SEQ_LEN N_SEQS VOCAB SEED [TOPK TEACHER_VOCAB]\n");
        return 2;
    }
    uint32_t K = argc == 8 ? (uint32_t)atoi(argv[6]) : 0, TV = argc == 8 ? (uint32_t)atoi(argv[7]) : 0;
    uint32_t N = (uint32_t)atoi(argv[2]), V = (uint32_t)atoi(argv[4]);
    long S = atol(argv[3]);
    sr_rng r;
    sr_seed(&r, strtoull(argv[5], NULL, 10));
    shard_writer *w;
    if (N < 8 || V < 8 || shard_writer_open(argv[1], N, V, 0, &w) || (K && shard_writer_set_topk(w, K, TV))) {
        fprintf(stderr, "student_mkshard: %s\n", N < 8 || V < 8 ? "SEQ_LEN and VOCAB must be ≥ 8" : rt_errmsg());
        return 1;
    }
    int32_t *tok = calloc(N, sizeof *tok);
    uint8_t *mask = calloc(N, 1);
    shard_doc *docs = calloc(N, sizeof *docs);
    uint8_t *tn = calloc(N, 1);
    int32_t *tid = calloc((size_t)N * (K ? K : 1), sizeof *tid);
    float *tlp = calloc((size_t)N * (K ? K : 1), sizeof *tlp);
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
        for (uint32_t i = 0; K && i < N; i++) {
            tn[i] = 0;
            if (!mask[i] || sr_below(&r, 5) == 0) continue;
            uint32_t n = 1 + (uint32_t)sr_below(&r, K), have = 0;
            double mass = 0.5 + 0.49 * (double)sr_below(&r, 1000) / 1000.0, w8[32], sum = 0;
            for (uint32_t a = 0; a < n; a++) sum += (w8[a] = exp(-0.7 * a - (double)sr_below(&r, 100) / 200.0));
            while (have < n) {
                int32_t id = have == 0 && (uint32_t)tok[i] < TV ? tok[i] : (int32_t)sr_below(&r, TV);
                int dup = 0;
                for (uint32_t b = 0; b < have; b++) dup |= tid[i * K + b] == id;
                if (dup) continue;
                tid[i * K + have] = id;
                tlp[i * K + have] = (float)log(mass * w8[have] / sum);
                have++;
            }
            for (uint32_t a = 1; a < n; a++)   /* logprobs descending */
                for (uint32_t b = a; b > 0 && tlp[i * K + b] > tlp[i * K + b - 1]; b--) {
                    float t = tlp[i * K + b]; tlp[i * K + b] = tlp[i * K + b - 1]; tlp[i * K + b - 1] = t;
                }
            tn[i] = (uint8_t)n;
        }
        if (shard_writer_add_topk(w, tok, mask, docs, nd, K ? tn : NULL, tid, tlp)) {
            fprintf(stderr, "student_mkshard: %s\n", rt_errmsg());
            shard_writer_abort(w);
            return 1;
        }
    }
    free(tok);
    free(mask);
    free(docs);
    free(tn);
    free(tid);
    free(tlp);
    if (shard_writer_finish(w)) {
        fprintf(stderr, "student_mkshard: %s\n", rt_errmsg());
        return 1;
    }
    return 0;
}

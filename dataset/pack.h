/* dataset/pack.h — pack tokenized documents into fixed-length training sequences.
 *
 * pk_plan() places documents into sequences of seq_len tokens by best-fit decreasing:
 * pieces in order of decreasing length (ties broken by a seeded shuffle), each into the
 * open sequence with the least room that still holds it, else a new sequence; sequences are
 * then shuffled with the seed. A document longer than seq_len is split into pieces of
 * seq_len (the last shorter) or, with drop_long, dropped; empty documents are dropped. No
 * piece ever crosses a sequence boundary. The same input and seed give the same plan.
 *
 * pk_write_dir() plans and writes the shards (core/shard.h) into dir — shard-00000.bin, …
 * — and index.json (seq_len, vocab_size, pad_id, dtype, seed, the shard list with counts,
 * the report, and any extra fields given in meta). Each file is written atomically; shard
 * files of an earlier pack that the new one does not list are removed, and so are the
 * temporaries of a pack killed there. When the write fails (a full disk) in a directory
 * this call created, the directory and everything written into it are removed.
 *
 * Plans are malloc'd (pk_plan_free). Errors: RT_EINVAL (seq_len 0, a token outside the
 * vocabulary), RT_EIO (writing), RT_ENOMEM.
 */
#ifndef RT_DATASET_PACK_H
#define RT_DATASET_PACK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const int32_t *tokens;
    const uint8_t *mask;
    size_t len;
    /* teacher top-k per position (with pk_options.top_k; NULL: none): top_n [len],
     * top_ids / top_lps [len · top_k], as core/shard.h stores them */
    const uint8_t *top_n;
    const int32_t *top_ids;
    const float *top_lps;
} pk_doc;

typedef struct {
    uint32_t seq_len;
    bool drop_long;        /* drop documents longer than seq_len instead of splitting them */
    uint64_t seed;
    uint32_t vocab_size;   /* every token must be below it */
    uint32_t pad_id;
    uint64_t shard_seqs;   /* sequences per shard file; 0: as many as fit 2^28 tokens (2^28 bytes with top-k) */
    uint32_t top_k;        /* > 0: the shards carry teacher top-k with this many slots (core/shard.h) */
    uint32_t teacher_vocab;   /* with top_k: teacher ids are below it (0: vocab_size, the same tokenizer) */
} pk_options;

typedef struct {
    size_t docs, docs_split, docs_dropped, docs_empty, pieces, seqs, shards;
    uint64_t tokens, loss_tokens, pad_tokens, dropped_tokens;
} pk_report;

typedef struct {
    uint64_t doc;          /* index into the input */
    uint32_t offset, len;  /* the piece is tokens [offset, offset + len) of the document */
    uint32_t flags;        /* SHARD_DOC_CONT_PREV / _NEXT */
    uint64_t seq;          /* the sequence it lands in, after the shuffle */
    uint32_t start;        /* its first position there */
} pk_piece;

typedef struct {
    pk_piece *pieces;      /* ordered by (seq, start) */
    size_t n_pieces;
    uint64_t n_seqs;
} pk_plan_t;

int  pk_plan(const size_t *lens, size_t n, const pk_options *o, pk_plan_t *plan, pk_report *rep);
void pk_plan_free(pk_plan_t *plan);

int pk_write_dir(const char *dir, const pk_doc *docs, size_t n, const pk_options *o, const json_t *meta, pk_report *rep);

/* Removes what a pack writes into dir (shard-NNNNN.bin, index.json, unheld temporaries) and
 * then dir itself if nothing else is in it: the cleanup after a failed pack into a directory
 * that the pack created. Best effort. */
void pk_remove_dir(const char *dir);

#endif

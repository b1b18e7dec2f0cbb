/* student/data.h — training batches from packed shards (core/shard.h, written by `retort pack`).
 *
 * sd_open() takes one shard file or a directory, whose *.bin files (shard-00000.bin, … as
 * dataset/pack writes them) are opened in name order and validated by shard_open(); they
 * must agree on the sequence length and vocabulary. Sequences are numbered across the
 * files in that order. Each epoch visits every sequence once, in a permutation drawn from
 * (seed, epoch), so a position {seed, epoch, cursor} names exactly where the data stream
 * stands and is all a checkpoint needs to continue it.
 *
 * sd_read() fills n_seq sequences of the batch (tokens, and from the documents and loss
 * masks the doc_start / pos / target arrays of student/model.h) and advances the position,
 * crossing into the next epoch when one ends. The sd_data is owned by the caller of
 * sd_open and released with sd_close() (NULL is fine).
 * Teacher top-k (core/shard.h version 2): sd_top_k() is the shards' K when every shard carries
 * top-k with the same K and teacher vocabulary, else 0; sd_read_kd() is sd_read() that also
 * gives each row with a target the teacher's top-k of the token that row predicts (the
 * entries the shard stores at the next position), n = 0 for every other row.
 * Errors: RT_EIO, RT_EFORMAT (from the shard reader, or shards that disagree),
 * RT_ENOTFOUND (no shards), RT_ENOMEM.
 */
#ifndef RT_STUDENT_DATA_H
#define RT_STUDENT_DATA_H

#include <stdint.h>

typedef struct sd_data sd_data;

typedef struct {
    uint64_t seed, epoch, cursor;   /* cursor: sequences of this epoch already read */
} sd_position;

int sd_open(const char *path, sd_data **out);
void sd_close(sd_data *d);
/* Narrows d to the sequences [first, first + count) of its files (in the numbering above;
 * first ≥ the current view's start, inside it): the view is then all that sd_num_seqs counts
 * and epochs visit — a held-out validation split is the same files opened again and
 * restricted to the rest. RT_EINVAL for an empty or out-of-range view. */
int sd_restrict(sd_data *d, uint64_t first, uint64_t count);
uint64_t sd_num_seqs(const sd_data *d);
uint32_t sd_seq_len(const sd_data *d);
uint32_t sd_vocab_size(const sd_data *d);
int sd_num_files(const sd_data *d);

/* tokens, doc_start, pos, target: n_seq · seq_len entries; *n_targets gets the loss tokens. */
int sd_read(sd_data *d, sd_position *p, int64_t n_seq, int32_t *tokens, int32_t *doc_start, int32_t *pos,
            int32_t *target, int64_t *n_targets);

/* Advances p by k sequences without reading them, exactly as sd_read() of k sequences would
 * (crossing epochs the same way): how a data-parallel rank steps over the other ranks' share. */
void sd_skip(const sd_data *d, sd_position *p, uint64_t k);

uint32_t sd_top_k(const sd_data *d);
uint32_t sd_teacher_vocab(const sd_data *d);
/* top_n [n_seq·seq_len], top_ids / top_lps [n_seq·seq_len·sd_top_k] (sd_top_k > 0). */
int sd_read_kd(sd_data *d, sd_position *p, int64_t n_seq, int32_t *tokens, int32_t *doc_start, int32_t *pos,
               int32_t *target, int64_t *n_targets, uint8_t *top_n, int32_t *top_ids, float *top_lps);

#endif

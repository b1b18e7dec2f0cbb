/* core/shard.h — packed training shards: the file dataset/ writes and student/ reads.
 *
 * A shard holds S sequences of exactly N tokens. Each sequence is a run of whole documents
 * (rendered conversations, or pieces of one that was longer than N) followed by padding;
 * training attends only within a document and learns only where the loss mask is 1.
 * All integers are little-endian.
 *
 *   offset      size      field
 *   0           8         magic "RTSHARD\0" (52 54 53 48 41 52 44 00)
 *   8           4         version: 2 (written), 1 (still read: no top-k, bytes 56..63 zero)
 *   12          4         token dtype: bytes per token id, 2 (uint16) or 4 (uint32)
 *   16          4         N, tokens per sequence (1 … 16,777,216)
 *   20          4         V, vocabulary size: every token id is < V (dtype 2 needs V ≤ 65,536)
 *   24          8         S, sequences
 *   32          8         D, documents (pieces)
 *   40          4         pad id (< V): the token at every position no document covers
 *   44          4         flags: bit 0 = the teacher top-k section follows the documents
 *   48          8         XXH64 (seed 0) of every byte from offset 64 to the end
 *   56          4         K, teacher top-k slots per position (1 … 20 with flag bit 0, else 0)
 *   60          4         TV, the teacher's vocabulary size: every teacher id is < TV (with bit 0, else 0)
 *   64          S·N·dtype token ids, sequence after sequence
 *   T = 64+S·N·dtype      S·N bytes: loss mask, 1 = train on this token, 0 = not (0 on padding)
 *   T + S·N     0–7       zero bytes, so the document table starts at a multiple of 8
 *   …           D·32      documents, ordered by (seq, start), never overlapping:
 *                         u64 doc id (the document's index in the packed input),
 *                         u32 seq, u32 start (within the sequence), u32 len (≥ 1),
 *                         u32 offset (where this piece starts within its document),
 *                         u32 flags: bit 0 = continues an earlier piece of the same document
 *                         (set exactly when offset > 0), bit 1 = continued by a later piece —
 *                         both only when a document longer than N was split,
 *                         u32 reserved, 0
 *
 *   E = end of the documents (a multiple of 8); with flag bit 0, for each sequence s a block of
 *   N·(1 + 8K) bytes at E + s·N·(1 + 8K):
 *               N         n per position (0 … K): how many teacher alternatives it has; 0 on padding
 *               N·K·4     u32 teacher token ids, position after position (K slots each)
 *               N·K·4     f32 teacher logprobs (finite, ≤ 0.001), the same slots
 *               Slots past a position's n are zero. The entries of position t describe the
 *               teacher's distribution of token t itself (the one it was sampled from).
 *
 * The file ends right after the document table (version 1, or no flag), else after the
 * top-k blocks. shard_open() maps a file read-only and
 * validates all of it before returning — header fields, exact file size, checksum, token
 * ids < V, mask bytes 0/1, the document table (bounds, order, no overlap) and padding
 * (pad id, mask 0) — each failure an RT_EFORMAT message saying what was found and what was
 * expected. A shard_file is immutable and may be read from several threads; it is owned by
 * the caller of shard_open* and released with shard_close() (NULL is fine).
 *
 * The writer streams sequences into a temporary file beside the target and renames it into
 * place in shard_writer_finish() (core/fsutil.h's atomic file), so a reader never sees a
 * partial shard; a failed write (disk full) removes the temporary and returns RT_EIO.
 * Errors: RT_EIO, RT_EFORMAT, RT_EINVAL (writer: a token, mask or document out of range),
 * RT_ENOMEM, RT_EUNSUPPORTED (a big-endian host).
 */
#ifndef RT_SHARD_H
#define RT_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHARD_MAGIC "RTSHARD\0"
#define SHARD_VERSION 2
#define SHARD_MAX_TOPK 20
#define SHARD_HEADER_BYTES 64
#define SHARD_DOC_BYTES 32
#define SHARD_MAX_SEQ_LEN (1u << 24)

enum { SHARD_DOC_CONT_PREV = 1, SHARD_DOC_CONT_NEXT = 2 };
enum { SHARD_FLAG_TOPK = 1 };

typedef struct {
    uint64_t doc_id;
    uint32_t seq, start, len;
    uint32_t offset; /* of this piece within its document */
    uint32_t flags;  /* SHARD_DOC_CONT_PREV | SHARD_DOC_CONT_NEXT */
} shard_doc;

typedef struct {
    uint32_t version, dtype_bytes, seq_len, vocab_size, pad_id;
    uint64_t n_seqs, n_docs;
    uint32_t top_k;           /* teacher top-k slots per position; 0: the shard has none */
    uint32_t teacher_vocab;   /* teacher ids are below it (0 without top-k) */
} shard_info;

typedef struct shard_file shard_file;

int  shard_open(const char *path, shard_file **out);
/* Validates a shard held in memory; buf must outlive the shard_file (it is not copied). */
int  shard_open_buffer(const void *buf, size_t len, shard_file **out);
void shard_close(shard_file *f);

const shard_info *shard_get_info(const shard_file *f);
/* Sequence i (< n_seqs): its N token ids widened to int32 and its N mask bytes (either may
 * be NULL). */
void shard_read_seq(const shard_file *f, uint64_t i, int32_t *tokens, uint8_t *mask);
/* The documents of sequence i (ordered by start); *n gets their count. */
const shard_doc *shard_seq_docs(const shard_file *f, uint64_t i, size_t *n);
const shard_doc *shard_all_docs(const shard_file *f);   /* n_docs of them */
/* The teacher top-k of sequence i (info.top_k > 0): n [N], ids and logprobs [N·K], slots past
 * a position's n zero. Without top-k every n is 0 (ids, lps untouched). */
void shard_read_topk(const shard_file *f, uint64_t i, uint8_t *n, int32_t *ids, float *lps);

typedef struct shard_writer shard_writer;

/* vocab_size decides the dtype (≤ 65,536: uint16). */
int  shard_writer_open(const char *path, uint32_t seq_len, uint32_t vocab_size, uint32_t pad_id, shard_writer **out);
/* Makes the shard carry teacher top-k with k slots (1 … 20) per position, ids < teacher_vocab;
 * before the first shard_writer_add*. RT_EINVAL. */
int  shard_writer_set_topk(shard_writer *w, uint32_t k, uint32_t teacher_vocab);
/* Appends one sequence: tokens and mask hold seq_len entries; docs (their seq field is
 * ignored) list the documents it holds, ordered, within bounds; every other position
 * must hold pad_id with mask 0. */
int  shard_writer_add(shard_writer *w, const int32_t *tokens, const uint8_t *mask, const shard_doc *docs, size_t n_docs);
/* The same with the sequence's teacher top-k (the layout of shard_read_topk; all NULL: none).
 * RT_EINVAL for n > K, a padding position with n > 0, an id ≥ TV, a logprob not finite or
 * > 0.001; slots past n are written as zero whatever they hold. */
int  shard_writer_add_topk(shard_writer *w, const int32_t *tokens, const uint8_t *mask, const shard_doc *docs,
                           size_t n_docs, const uint8_t *top_n, const int32_t *top_ids, const float *top_lps);
uint64_t shard_writer_seqs(const shard_writer *w);
/* Writes the mask, the documents and the header and moves the file into place. Frees w
 * whatever the result. */
int  shard_writer_finish(shard_writer *w);
void shard_writer_abort(shard_writer *w);                 /* NULL is fine; removes the temporary */

#endif

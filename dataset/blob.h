/* dataset/blob.h — zstd compression of one text blob, with an optional trained dictionary.
 *
 * Every text the store keeps (sample text, eval responses, top-k logprob arrays) is one
 * zstd frame of its own, so any row decompresses alone. A dictionary trained on the run's
 * own samples (blob_dict_train) makes short, similar texts (reasoning traces share much
 * of their phrasing) compress far better than plain per-blob zstd; the store keeps the
 * dictionary in the database and records which one each blob used.
 *
 * A blob_codec holds the zstd contexts and at most one dictionary; it is not shared between
 * threads (one per thread or per database handle). Owned by the caller of blob_codec_new,
 * released with blob_codec_free (NULL is fine). Output buffers are malloc'd; caller frees.
 * Errors: RT_ENOMEM, RT_EFORMAT (a blob that is not a valid frame, or was written with a
 * dictionary this codec does not hold), RT_EINVAL (dictionary training failed: too few or
 * too small samples).
 */
#ifndef RT_DATASET_BLOB_H
#define RT_DATASET_BLOB_H

#include <stddef.h>
#include <stdint.h>

typedef struct blob_codec blob_codec;

int  blob_codec_new(int level, blob_codec **out);     /* level: zstd level, 0 = default (3) */
void blob_codec_free(blob_codec *c);

/* Installs dict (copied; NULL/0 removes it) as the dictionary used by later calls with
 * use_dict set. dict_id is the caller's name for it (the database row id). */
int  blob_codec_set_dict(blob_codec *c, int64_t dict_id, const void *dict, size_t len);
int64_t blob_codec_dict_id(const blob_codec *c);     /* 0 when none */

/* Compresses src into *out (malloc'd, *out_len bytes). With use_dict and a dictionary
 * installed, the frame is written with it. */
int blob_compress(blob_codec *c, const void *src, size_t len, int use_dict, uint8_t **out, size_t *out_len);
/* Decompresses a frame written by blob_compress; *out is NUL-terminated (not counted). */
int blob_decompress(blob_codec *c, const void *src, size_t len, int use_dict, char **out, size_t *out_len);

/* Trains a dictionary of at most cap bytes on n samples (pointers and lengths); *dict is
 * malloc'd, *dict_len its size. */
int blob_dict_train(const void *const *samples, const size_t *lens, size_t n, size_t cap, uint8_t **dict,
                    size_t *dict_len);

#endif

/* core/safetensors.h — read and write Hugging Face safetensors files.
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 *   {"__metadata__": {str: str}, "NAME": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, …}
 * then the data section; offsets are relative to the data section's start.
 *
 * st_open() takes a .safetensors file, or a directory holding model.safetensors.index.json
 * (a sharded checkpoint), else model.safetensors, else other *.safetensors files (all of
 * them, as one model). Every file is
 * mapped read-only and its header validated before st_open returns: length within the file
 * and at most ST_MAX_HEADER, strict JSON, known dtypes, shape × element size equal to the
 * byte range, offsets inside the data section and not overlapping, no duplicate names
 * across shards, and (sharded) every tensor where the index says it is and nothing else.
 * Tensors are sorted by name; their data points into the mapping (not necessarily aligned)
 * and stays valid until st_close().
 *
 * st_write() writes one file atomically (temporary file, fsync, rename): readers see the
 * old file or the new one, never a partial one.
 * Errors: RT_EIO, RT_EFORMAT (the message says which file and tensor, and why),
 * RT_ENOTFOUND (no safetensors in a directory), RT_EINVAL (bad arguments to st_write),
 * RT_ENOMEM.
 */
#ifndef RT_SAFETENSORS_H
#define RT_SAFETENSORS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER ((uint64_t)100000000) /* 100 MB, as in the reference implementation */

typedef struct {
    const char *name;            /* owned by the st_file */
    rt_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nelem, nbytes;
    const void *data;            /* into the mapping; may be unaligned */
    int shard;                   /* index into the opened files */
} st_tensor;

typedef struct st_file st_file;  /* opaque; owned by the caller of st_open */

int st_open(const char *path, st_file **out);
/* Parses one safetensors image already in memory (not copied: buf must outlive the
 * st_file). `what` names it in messages. Used by tests and the fuzz target. */
int st_open_buffer(const void *buf, size_t len, const char *what, st_file **out);
void st_close(st_file *f);                                        /* NULL is fine */

size_t st_count(const st_file *f);
const st_tensor *st_get(const st_file *f, size_t i);              /* sorted by name */
const st_tensor *st_find(const st_file *f, const char *name);     /* NULL if absent */
int st_nshards(const st_file *f);
const char *st_shard_path(const st_file *f, int shard);
const json_t *st_metadata(const st_file *f, int shard);           /* __metadata__ or NULL */
/* Tells the kernel that bytes [off, off + len) of tensor t (of f) are not needed for now, so
 * the pages wholly inside them leave the process's resident set (a reader streaming a model
 * larger than memory). The data stays valid: touched again, it is read back from the file.
 * A buffer (st_open_buffer) is left alone. */
void st_drop(const st_file *f, const st_tensor *t, size_t off, size_t len);

typedef struct {
    const char *name;
    rt_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;            /* nelem × dtype size bytes */
} st_wtensor;

/* metadata: NULL or a JSON object whose values are strings. */
int st_write(const char *path, const st_wtensor *ts, size_t n, const json_t *metadata);
/* st_write for tensors too large to hold at once: ts[i].data is ignored, and get(ctx, i,
 * &data) is called for i = 0, 1, … in order, right before tensor i is written; data must
 * stay valid until the next call. A nonzero return from get stops the write (the file is
 * not created) and is returned; so may fewer than n calls happen when writing fails. */
int st_write_stream(const char *path, const st_wtensor *ts, size_t n, const json_t *metadata,
                    int (*get)(void *ctx, size_t i, const void **data), void *ctx);
/* A model's weights in dir as transformers shards them (core/safetensors_shard.c): tensors in
 * order, a new shard when the next tensor would take the current one past max_shard_bytes
 * (> 0); one shard is model.safetensors, several are model-0000k-of-0000N.safetensors plus
 * model.safetensors.index.json (total_size and weight_map, keys sorted, indent 2). get is
 * st_write_stream's, with i the index in ts. */
int st_write_sharded(const char *dir, const st_wtensor *ts, size_t n, int64_t max_shard_bytes, const json_t *metadata,
                     int (*get)(void *ctx, size_t i, const void **data), void *ctx);

#endif

/* core/model_check.h — checks of a model before it is used: the tokenizer paired with it
 * fits its vocabulary, and its weights are finite numbers.
 *
 * mk_check_vocab() is the one pairing rule every command that puts a tokenizer in front
 * of a model applies (generate, serve, eval; train with the vocabulary its shards were
 * packed with): the tokenizer's largest id must be below the model's vocab_size. A
 * tokenizer with fewer ids than the vocabulary is fine (models pad their embedding
 * matrix: Qwen2.5 has 151,936 rows for 151,665 ids). mk_check_tokenizer() is the same
 * for a loaded tokenizer and a parsed config. RT_EINVAL, one message naming both.
 *
 * mk_scan_values() reads every floating-point tensor of an opened checkpoint (F64, F32,
 * F16, BF16: an all-ones exponent; FP8 e4m3: the NaN codes 0x7f and 0xff, it has no
 * infinity; e5m2 like F16) and counts NaN and ±Inf values per tensor, on the pool. With
 * projections false it skips the projection matrices (names ending in "_proj.weight"):
 * what remains — embeddings, LM head, norms, biases, routers, FP8 scales — is a few
 * percent of a large model and is where a diverged training run shows first. The report
 * lists each tensor holding a non-finite value; mk_values_free() releases it. Tensor
 * names point into the st_file and live as long as it.
 *
 * mk_check_weights() is the check generate, serve and eval make at load: it opens the
 * safetensors of dir and scans all of them when they hold at most MK_FULL_SCAN_BYTES
 * (students, dense teachers up to ~32B in BF16), else the cheap subset above (DeepSeek-R1:
 * a few GB of its 700). RT_EFORMAT when a value is not finite: one message naming the first
 * such tensor, its counts and how many other tensors are affected, and pointing at
 * `retort inspect --check-values`, which always scans everything.
 * Errors: RT_EFORMAT, RT_EINVAL, RT_EIO / RT_ENOTFOUND (from st_open), RT_ENOMEM.
 */
#ifndef RT_MODEL_CHECK_H
#define RT_MODEL_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/model_config.h"
#include "core/safetensors.h"
#include "core/threadpool.h"
#include "core/tokenizer.h"

#define MK_FULL_SCAN_BYTES ((uint64_t)64 << 30)

/* model_vocab: the model's vocab_size; tok_ids: one more than the tokenizer's largest id.
 * model names the model, tok the tokenizer ("tokenizer PATH", "the shards in DIR") in the
 * message. mk_check_tokenizer: tok is the tokenizer's path. */
int mk_check_vocab(int64_t model_vocab, const char *model, size_t tok_ids, const char *tok);
int mk_check_tokenizer(const mc_config *c, const char *model, const tok_tokenizer *t, const char *tok);

typedef struct {
    const char *name;        /* into the st_file */
    rt_dtype dtype;
    uint64_t elements, nan, inf;
} mk_bad_tensor;

typedef struct {
    size_t tensors;          /* scanned */
    size_t skipped;          /* not scanned: integer dtypes, and projections in a cheap scan */
    uint64_t values;         /* scanned */
    uint64_t nan, inf;       /* over every scanned tensor */
    mk_bad_tensor *bad;      /* [n_bad], in tensor order; malloc'd */
    size_t n_bad;
} mk_values;

int mk_scan_values(const st_file *f, bool projections, tp_pool *pool, mk_values *out);
void mk_values_free(mk_values *v);   /* NULL is fine */
int mk_check_weights(const char *dir, tp_pool *pool);

#endif

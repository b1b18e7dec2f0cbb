/* core/tokenizer.h — Hugging Face tokenizer.json byte-level BPE, with exact id parity.
 *
 * tok_load() reads a tokenizer.json (the file the PyPI `tokenizers` library writes) and
 * builds everything encoding needs: the normalizer (none, NFC/NFD/NFKC/NFKD through
 * utf8proc, Sequence), the pre-tokenizers (Split with a PCRE2 regex or a literal string,
 * every split behaviour and invert; ByteLevel with or without its regex; Digits;
 * Sequence), the BPE model (merges as "a b" strings or [a, b] pairs, ignore_merges,
 * byte_fallback, continuing_subword_prefix / end_of_word_suffix), the added tokens
 * (special or not; lstrip, rstrip, single_word, normalized), the post-processor
 * (ByteLevel, TemplateProcessing for single sequences, Sequence) and the ByteLevel
 * decoder. Anything else in the file is RT_EUNSUPPORTED, named in the message.
 *
 * The tokenizer is immutable after loading except for its internal caches, which are
 * lock-protected: every function below may be called from several threads at once on one
 * tokenizer. The tokenizer is owned by the caller of tok_load() and released with
 * tok_free() (NULL is fine).
 *
 * tok_encode() gives the ids HF `Tokenizer.encode(text, add_special_tokens=...).ids` gives:
 * special-token strings inside the text are always matched as tokens (as HF does), and
 * add_special_tokens only controls what the post-processor adds (BOS for Llama 3; nothing
 * for DeepSeek-V3 or Qwen). Text that is not valid UTF-8 is RT_EFORMAT (message gives the
 * byte offset). *ids is malloc'd (never NULL on success, even for n == 0); caller frees.
 *
 * tok_decode() gives HF `Tokenizer.decode(ids, skip_special_tokens=...)`: bytes that do not
 * form valid UTF-8 become U+FFFD as Rust's from_utf8_lossy does. One deliberate
 * difference: an id that names no token is RT_ERANGE (HF silently drops it). *text is
 * malloc'd and NUL-terminated; *len excludes the NUL; caller frees.
 *
 * tok_encode_batch() encodes count texts on the thread pool (NULL pool: inline); ids[i] and
 * n[i] are filled for every i on success; on failure every ids[i] is NULL and the first
 * failing text's message is recorded.
 *
 * Errors: RT_EIO (file), RT_EFORMAT (malformed tokenizer.json, invalid UTF-8 input),
 * RT_EUNSUPPORTED (a component retort does not implement), RT_ERANGE (bad id), RT_ENOMEM.
 */
#ifndef RT_TOKENIZER_H
#define RT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tok_tokenizer tok_tokenizer;

int  tok_load(const char *path, tok_tokenizer **out);      /* tokenizer.json; owned by caller */
/* Same, from a tokenizer.json already in memory (json need not be NUL-terminated). */
int  tok_load_buffer(const char *json, size_t len, tok_tokenizer **out);
void tok_free(tok_tokenizer *t);                           /* NULL is fine */

int  tok_encode(const tok_tokenizer *t, const char *text, size_t len, bool add_special_tokens,
                int32_t **ids, size_t *n);                 /* *ids malloc'd, caller frees */
/* As tok_encode, and *offsets (malloc'd, 2 per token) gets each token's [start, end) byte
 * range in text. Tokens the post-processor adds get the empty range [0, 0). Where a
 * normalizer changed the text, a token maps to the smallest range of whole original
 * characters that produced it. */
int  tok_encode_offsets(const tok_tokenizer *t, const char *text, size_t len, bool add_special_tokens,
                        int32_t **ids, size_t **offsets, size_t *n);
int  tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, bool skip_special_tokens,
                char **text, size_t *len);                 /* *text malloc'd, NUL-terminated */
int  tok_encode_batch(const tok_tokenizer *t, const char *const *texts, const size_t *lens, size_t count,
                      bool add_special_tokens, tp_pool *pool, int32_t **ids, size_t *n);  /* arrays of count */

int32_t     tok_token_to_id(const tok_tokenizer *t, const char *token);   /* -1 when absent */
/* The token string of an id as tokenizer.json spells it (byte-level form for vocabulary
 * tokens); NULL when id names no token. Points into t. */
const char *tok_id_to_token(const tok_tokenizer *t, int32_t id);
bool        tok_is_special(const tok_tokenizer *t, int32_t id);           /* a special added token */
/* Number of ids: one more than the largest id of the vocabulary or the added tokens
 * (what HF's get_vocab_size(with_added_tokens=True) reports for these files). */
size_t      tok_vocab_size(const tok_tokenizer *t);

#ifdef __cplusplus
}
#endif

#endif

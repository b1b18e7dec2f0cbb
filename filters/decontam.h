/* filters/decontam.h — benchmark decontamination with a word n-gram index.
 *
 * Text is normalized to words: lower-cased code point by code point (utf8proc's simple
 * lower case), every maximal run of letters and digits (Unicode categories L* and N*) is a
 * word, everything else separates words. This is Python's
 *     re.findall(r"[^\W_]+", text.lower())
 * for the texts retort sees. An n-gram is n consecutive words (default n = 10); its key
 * is the 64-bit xxhash of the words joined by single spaces. A text with fewer than n
 * words has no n-grams and can neither contaminate nor be flagged.
 *
 * A dc_index holds the n-grams of benchmark documents (questions and answers) with, per
 * n-gram, the first document that had it (benchmark name and document id). It is filled
 * with dc_index_add / dc_index_add_jsonl and is read-only afterwards: any number of
 * threads may call dc_index_find on it. Matching is by hash: two different n-grams with
 * the same 64-bit hash (odds ~1e-8 for a million n-grams against a million queries) would
 * be a false flag.
 *
 * Ownership: the index is created by dc_index_new and released by dc_index_free (NULL is
 * fine); strings handed in are copied. Errors: RT_EINVAL (n out of 1..64), RT_EIO (file),
 * RT_EFORMAT (a JSONL line that is not a JSON object: "FILE:LINE: why"), RT_ENOMEM.
 */
#ifndef RT_FILTERS_DECONTAM_H
#define RT_FILTERS_DECONTAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DC_DEFAULT_N 10
#define DC_MAX_N 64

typedef struct dc_index dc_index;

int dc_index_new(int n, dc_index **out);
void dc_index_free(dc_index *ix);
int dc_index_n(const dc_index *ix);
size_t dc_index_ngrams(const dc_index *ix); /* distinct n-grams */
size_t dc_index_docs(const dc_index *ix);   /* documents that had at least one n-gram */

/* Adds the n-grams of one document of benchmark (e.g. "gsm8k_test"), named doc_id. */
int dc_index_add(dc_index *ix, const char *benchmark, const char *doc_id, const char *text, size_t len);

/* Adds every line of a JSONL file: the string members named in fields (NULL: "question",
 * "problem", "prompt", "answer", "solution"; numbers are read as their text) are the
 * document's text; the id is the record's "id" when present, else "line N". Blank lines
 * are skipped. *n_records (may be NULL) gets the number of records read. */
int dc_index_add_jsonl(dc_index *ix, const char *path, const char *benchmark, const char *const *fields,
                       size_t n_fields, size_t *n_records);

typedef struct {
    bool found;
    const char *benchmark;  /* points into the index */
    const char *doc_id;     /* points into the index */
    char ngram[512];        /* the shared n-gram, normalized words joined by spaces (cut at 511 bytes) */
} dc_hit;

/* The first n-gram of text (in text order) that the index holds. */
int dc_index_find(const dc_index *ix, const char *text, size_t len, dc_hit *hit);

/* The normalized words of text joined by single spaces (caller frees *out); *n_words
 * (may be NULL) gets their count. RT_ENOMEM. */
int dc_normalize(const char *text, size_t len, char **out, size_t *out_len, size_t *n_words);

#endif

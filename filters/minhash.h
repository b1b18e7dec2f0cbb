/* filters/minhash.h — exact and near-duplicate detection (MinHash with LSH).
 *
 * Text is normalized the way datatrove's simplify_text does it: case folded, diacritics
 * stripped (NFD, marks removed), every run of digits (with one inner . or ,) replaced by
 * "0", punctuation, symbols and control characters turned into spaces, whitespace
 * collapsed. Shingles are word n-grams of the normalized text (default 5; a text with
 * fewer words is one shingle), each hashed with 64-bit xxhash. A signature holds, for
 * each of bands × rows (default 14 × 8) universal hash functions h(x) = ((a·x + b) mod
 * 2^64) mod (2^61 − 1), the minimum over the shingles — datatrove's arithmetic, with a and
 * b drawn from the config's seed. Two documents are candidates when a whole band of
 * their signatures agrees; a candidate pair is merged when its exact Jaccard similarity
 * (of the sorted shingle-hash sets, kept per document during the run) reaches the
 * threshold — the signature estimate only screens (it must be within 0.15 of it), so
 * estimation noise near the threshold does not merge documents.
 *
 * mh_dedup_run() clusters a batch: documents with the same normalized text (exact
 * duplicates) or a merged candidate pair end up in one cluster (single linkage, union
 * find); the cluster is named by its first document, which is the one kept. Later exact
 * copies stay out of LSH (their first copy stands for them). In each band a document is
 * checked against up to 32 earlier members of its bucket, stopping at the first that passes
 * or one already joined to it in that band; a pair whose rows agree in an earlier band is
 * left to that band. Each band thus depends only on the signatures, bands run in parallel,
 * and the clusters (connected components of the merged pairs) are the same at any thread
 * count. With the log level at debug it logs each phase's wall, CPU and busiest-thread
 * CPU (core/phase.h).
 *
 * Ownership: a mh_hasher is created by mh_hasher_new() and released by mh_hasher_free()
 * (NULL is fine); it is read-only after creation, so threads may share one.
 * Errors: RT_EINVAL (bad config), RT_ENOMEM.
 */
#ifndef RT_FILTERS_MINHASH_H
#define RT_FILTERS_MINHASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/threadpool.h"

#define MH_MAX_HASHES 1024

typedef struct {
    int ngram;          /* words per shingle (default 5) */
    int bands;          /* LSH bands (default 14) */
    int rows;           /* hashes per band (default 8) */
    uint64_t seed;      /* draws the permutations (default 1) */
    double threshold;   /* Jaccard estimate needed to merge a candidate pair (default 0.8) */
    bool exact_only;    /* only exact duplicates of the normalized text */
} mh_config;

void mh_config_default(mh_config *c);

typedef struct mh_hasher mh_hasher;

int mh_hasher_new(const mh_config *c, mh_hasher **out);
void mh_hasher_free(mh_hasher *h);
int mh_num_hashes(const mh_hasher *h); /* bands × rows */

/* Normalized text (caller frees *out; *out_len its length). RT_ENOMEM. */
int mh_normalize(const char *text, size_t len, char **out, size_t *out_len);

/* Signature of a text: sig[mh_num_hashes(h)]. *n_shingles (may be NULL) gets the shingle
 * count; a text with no words gets all values UINT64_MAX and matches nothing.
 * RT_ENOMEM. */
int mh_signature(const mh_hasher *h, const char *text, size_t len, uint64_t *sig, size_t *n_shingles);

/* Signature of an already normalized text (no allocation). */
void mh_signature_normalized(const mh_hasher *h, const char *norm, size_t len, uint64_t *sig, size_t *n_shingles);

/* Fraction of equal entries of two signatures of n values. */
double mh_similarity(const uint64_t *a, const uint64_t *b, int n);

typedef struct {
    const char *text;
    size_t len;
} mh_doc;

/* Clusters docs[0..n): cluster[i] = index of the first document of i's cluster (i itself
 * for a kept document). pool may be NULL (one thread). */
int mh_dedup_run(const mh_config *c, const mh_doc *docs, size_t n, tp_pool *pool, size_t *cluster);

#endif

/* core/tokenizer_int.h — what the tokenizer's source files share (not a public API).
 *
 * tokenizer.c      loading tokenizer.json, the public functions, the encode pipeline
 * tokenizer_pre.c  normalizers and pre-tokenizers (Split, ByteLevel, Digits)
 * tokenizer_bpe.c  the vocabulary and merge tables, the BPE merge loop, per-state caches
 * tokenizer_json.c model.vocab and model.merges read from the text without jansson (tokj_*)
 *
 * Encoding works on raw bytes: when a ByteLevel pre-tokenizer is present, vocabulary
 * tokens are stored in the bytes they stand for ("Ġthe" is stored as " the"), so text is
 * never transcoded into the byte-to-unicode alphabet at encode time.
 */
#ifndef RT_TOKENIZER_INT_H
#define RT_TOKENIZER_INT_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/tokenizer.h"

/* ---- growable arrays ---- */
typedef struct { int32_t *v; size_t n, cap; } tok_ivec;
typedef struct { size_t *v; size_t n, cap; } tok_zvec;   /* pairs of offsets */
int tok_ivec_push(tok_ivec *a, int32_t x);
int tok_zvec_push2(tok_zvec *a, size_t x, size_t y);

/* ---- hash of a byte string ---- */
uint64_t tok_hash(const void *p, size_t n);

/* ---- vocabulary: bytes -> id (open addressing; keys live in the token table) ---- */
typedef struct {
    uint32_t *slot;     /* [cap] id + 1, 0 = empty */
    uint32_t *tag;      /* [cap] low 32 bits of the key's hash */
    size_t cap;         /* power of two */
} tok_strmap;

/* ---- merges: (left id, right id) -> (rank, merged id) ---- */
typedef struct {
    uint64_t *key;      /* [cap] left << 32 | right, UINT64_MAX = empty */
    uint32_t *rank;     /* [cap] */
    int32_t *merged;    /* [cap] */
    size_t cap;
} tok_mergemap;

/* ---- pre-tokenizer steps ---- */
typedef enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS } tok_behavior;
typedef enum { PRE_SPLIT, PRE_BYTELEVEL, PRE_DIGITS } tok_pre_kind;
typedef struct {
    tok_pre_kind kind;
    tok_behavior behavior;
    bool invert;
    bool add_prefix_space;      /* ByteLevel */
    bool individual_digits;     /* Digits */
    int regex;                  /* index into tok_tokenizer.re, -1 for none */
} tok_pre_step;

typedef enum { NORM_NFC, NORM_NFD, NORM_NFKC, NORM_NFKD } tok_norm_kind;

/* ---- added tokens and their byte trie ---- */
typedef struct {
    int32_t id;
    bool special, lstrip, rstrip, single_word, normalized;
} tok_added;

typedef struct {
    uint32_t *first;    /* [n_nodes] first child node, 0 = none */
    uint32_t *next;     /* [n_nodes] next sibling, 0 = none */
    uint8_t *byte;      /* [n_nodes] edge byte into this node */
    int32_t *added;     /* [n_nodes] index into tok_tokenizer.added, -1 = not terminal */
    size_t n, cap;
    bool first_byte[256];
} tok_trie;

/* ---- per-call scratch and caches, pooled in the tokenizer ---- */
typedef struct tok_cache_entry { uint64_t hash; uint32_t koff, klen, voff, vlen; } tok_cache_entry;
typedef struct tok_state {
    struct tok_state *next_free;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
    /* word cache: word bytes -> ids; cleared when full */
    tok_cache_entry *cache;
    size_t cache_cap, cache_n;
    char *ckeys; size_t ckeys_n, ckeys_cap;
    int32_t *cvals; size_t cvals_n, cvals_cap;
    /* BPE scratch */
    int32_t *sym, *prev, *nxt; uint32_t *sstart, *slen; size_t sym_cap;
    uint64_t *heap; size_t heap_cap;
    /* pre-tokenizer scratch: one match list per depth */
    size_t *marks[8]; size_t marks_cap[8];
    char *tmp; size_t tmp_cap;          /* prefix-space copies */
    char *norm; size_t norm_cap;        /* normalized text of the current segment */
    size_t *align; size_t align_cap;    /* [2*norm_len] original [start, end) per normalized byte */
    tok_zvec seg[2];                    /* added-token splits: triples (start, end, added index + 1) */
} tok_state;

struct tok_tokenizer {
    /* tokens by id */
    size_t n_ids;                       /* 1 + largest id */
    char *str_arena;                    /* original strings, NUL-separated */
    uint32_t *str_off;                  /* [n_ids] offset into str_arena, UINT32_MAX = no token */
    char *raw_arena;                    /* decoded bytes (ByteLevel decoder form) */
    uint32_t *raw_off, *raw_len;        /* [n_ids] */
    uint8_t *is_special;                /* [n_ids] */
    int32_t *added_of_id;               /* [n_ids] index into added, -1 if not an added token */

    /* model */
    tok_strmap vocab;                   /* model vocabulary, in encode form (raw bytes when byte_level) */
    tok_mergemap merges;
    bool byte_level;                    /* a ByteLevel pre-tokenizer: vocab keys are raw bytes */
    bool ignore_merges, byte_fallback, fuse_unk;
    int32_t unk_id;                     /* -1 when none */
    int32_t byte_id[256];               /* id of each single byte (byte_level), -1 if absent */
    int32_t fallback_id[256];           /* <0xXX> tokens for byte_fallback, -1 if absent */

    /* normalizers */
    tok_norm_kind norm[4]; int n_norm;

    /* pre-tokenizers */
    tok_pre_step pre[8]; int n_pre;
    pcre2_code *re[8]; int n_re;

    /* added tokens */
    tok_added *added; size_t n_added;
    tok_trie trie_raw, trie_norm;       /* non-normalized / normalized added tokens */

    /* post-processor: ids added around a single sequence when add_special_tokens */
    int32_t *post_pre, *post_post; size_t n_post_pre, n_post_post;

    /* decoder */
    enum { DEC_NONE, DEC_BYTELEVEL, DEC_UNSUPPORTED } decoder;
    char decoder_name[32];

    /* pooled scratch states */
    pthread_mutex_t lock;
    tok_state *free_states;
};

/* tokenizer_bpe.c */
int  tok_strmap_init(tok_strmap *m, size_t n);
void tok_strmap_free(tok_strmap *m);
/* Inserts id under the key raw_arena[raw_off[id]..]; keeps the first id for a key. */
void tok_strmap_put(const tok_tokenizer *t, tok_strmap *m, int32_t id);
int32_t tok_strmap_get(const tok_tokenizer *t, const tok_strmap *m, const char *s, size_t n);
int  tok_mergemap_init(tok_mergemap *m, size_t n);
void tok_mergemap_free(tok_mergemap *m);
void tok_mergemap_put(tok_mergemap *m, int32_t a, int32_t b, uint32_t rank, int32_t merged);
/* BPE of one word (bytes in encode form); appends ids (and, if offs, [start,end) byte
 * ranges relative to the word) to out. */
int tok_bpe_word(const tok_tokenizer *t, tok_state *st, const char *w, size_t n, tok_ivec *out, tok_zvec *offs);
tok_state *tok_state_get(const tok_tokenizer *t);
void tok_state_put(const tok_tokenizer *t, tok_state *st);
void tok_state_free(tok_state *st);

/* tokenizer_pre.c */
typedef int (*tok_word_fn)(void *ctx, const char *w, size_t n, size_t off);
/* Runs the pre-tokenizers from step `depth` on s[0..n) (which starts at normalized offset
 * off); calls fn for every word. */
int tok_pretokenize(const tok_tokenizer *t, tok_state *st, int depth, const char *s, size_t n, size_t off,
                    tok_word_fn fn, void *ctx);
/* Normalizes s[0..n) into st->norm (and st->align when want_align: original offsets are
 * base + position in s). Returns the normalized length in *out_n. */
int tok_normalize(const tok_tokenizer *t, tok_state *st, const char *s, size_t n, size_t base, bool want_align,
                  size_t *out_n);
int tok_regex_compile(const char *pattern, bool literal, pcre2_code **out);
bool tok_is_unicode_space(uint32_t cp);
bool tok_is_word_char(uint32_t cp);


/* ---- tokenizer.json's two large members, without jansson (tokenizer_json.c) ----
 * tokj_find() locates the values of model.vocab (an object) and model.merges (an array)
 * by a structural scan: 0 and the byte spans [at, end), or -1 when the file is laid out in
 * any other way (the caller then parses it all with jansson, whose errors are precise).
 * tokj_vocab()/tokj_merges() parse one span strictly: RT_EFORMAT with a message, RT_ENOMEM.
 * Strings are unescaped into text.s, each NUL-terminated; entries hold offsets into it. */
typedef struct { size_t vocab_at, vocab_end, merges_at, merges_end; } tokj_spans;
typedef struct { char *s; size_t len, cap; } tokj_text;
typedef struct { size_t off, len; int32_t id; } tokj_entry;
typedef struct { tokj_entry *e; size_t n, cap; tokj_text text; } tokj_vocab_t;
typedef struct { size_t a, na, b, nb; } tokj_merge;
typedef struct { tokj_merge *e; size_t n, cap; tokj_text text; } tokj_merges_t;
int tokj_find(const char *buf, size_t len, tokj_spans *sp);
int tokj_vocab(const char *buf, size_t at, size_t end, tokj_vocab_t *v);
int tokj_merges(const char *buf, size_t at, size_t end, tokj_merges_t *m);
/* The same tables filled from elsewhere (jansson's tree): s[0..n) copied in, NUL added. */
int tokj_text_add(tokj_text *t, const char *s, size_t n, size_t *off);
int tokj_vocab_push(tokj_vocab_t *v, size_t off, size_t n, int64_t id);   /* id checked: 0..INT32_MAX-1 */
int tokj_merge_split(tokj_merges_t *m, size_t off, size_t n);             /* "a b" at off */
int tokj_merge_push(tokj_merges_t *m, size_t a, size_t na, size_t b, size_t nb);
void tokj_vocab_free(tokj_vocab_t *v);
void tokj_merges_free(tokj_merges_t *m);

/* tok_load_buffer() with jansson for the whole file (tree_only), as the tests compare. */
int tok_load_buffer_opts(const char *json, size_t len, bool tree_only, tok_tokenizer **out);

#endif

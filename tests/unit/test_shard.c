/* tests/unit/test_shard.c — core/shard (format, reader validation, writer) and the
 * best-fit-decreasing packer (dataset/pack): documents read back exactly, never cross a
 * sequence boundary unsplit; hand-worked packings; every corruption the reader must refuse.
 * Checksums in the corruption cases are recomputed with xxhash's own XXH64. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "core/fsutil.h"
#include "core/shard.h"
#include "core/status.h"
#include "dataset/pack.h"
#include "testutil.h"

static uint64_t rng_state;
static uint32_t rnd(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

typedef struct {
    pk_doc *docs;
    int32_t **tok;
    uint8_t **mask;
    size_t n;
} corpus;

static corpus make_corpus(size_t n, size_t max_len, uint32_t vocab) {
    corpus c = {calloc(n, sizeof(pk_doc)), calloc(n, sizeof(int32_t *)), calloc(n, sizeof(uint8_t *)), n};
    for (size_t i = 0; i < n; i++) {
        size_t len = 1 + rnd() % max_len;
        c.tok[i] = malloc(len * sizeof(int32_t));
        c.mask[i] = malloc(len);
        for (size_t k = 0; k < len; k++) {
            c.tok[i][k] = (int32_t)(rnd() % vocab);
            c.mask[i][k] = (uint8_t)(k > len / 3);
        }
        c.docs[i] = (pk_doc){c.tok[i], c.mask[i], len, NULL, NULL, NULL};
    }
    return c;
}

static void free_corpus(corpus *c) {
    for (size_t i = 0; i < c->n; i++) { free(c->tok[i]); free(c->mask[i]); }
    free(c->docs); free(c->tok); free(c->mask);
}

/* Reads every shard in dir back and checks each document against the corpus. */
static void check_read_back(const char *dir, const corpus *c, uint32_t seq, bool dropped_long, size_t shards) {
    size_t *seen = calloc(c->n, sizeof(size_t)); /* tokens recovered per document */
    int32_t *tok = malloc(seq * sizeof(int32_t));
    uint8_t *mask = malloc(seq);
    for (size_t s = 0; s < shards; s++) {
        char name[64];
        snprintf(name, sizeof name, "%s/shard-%05zu.bin", dir, s);
        shard_file *f;
        cr_assert_eq(shard_open(name, &f), 0, "%s", rt_errmsg());
        const shard_info *h = shard_get_info(f);
        cr_assert_eq(h->seq_len, seq);
        for (uint64_t q = 0; q < h->n_seqs; q++) {
            shard_read_seq(f, q, tok, mask);
            size_t nd;
            const shard_doc *d = shard_seq_docs(f, q, &nd);
            cr_assert(nd >= 1);
            for (size_t k = 0; k < nd; k++) {
                cr_assert(d[k].start + d[k].len <= seq, "a piece crosses the sequence end");
                size_t id = (size_t)d[k].doc_id, len = c->docs[id].len;
                cr_assert(id < c->n);
                cr_assert(d[k].offset + d[k].len <= len);
                if (len <= seq) cr_assert(d[k].offset == 0 && d[k].len == len && d[k].flags == 0,
                                          "document %zu (%zu tokens) was split", id, len);
                cr_assert_eq(memcmp(tok + d[k].start, c->tok[id] + d[k].offset, d[k].len * sizeof(int32_t)), 0);
                cr_assert_eq(memcmp(mask + d[k].start, c->mask[id] + d[k].offset, d[k].len), 0);
                seen[id] += d[k].len;
            }
        }
        shard_close(f);
    }
    for (size_t i = 0; i < c->n; i++) {
        size_t want = dropped_long && c->docs[i].len > seq ? 0 : c->docs[i].len;
        cr_assert_eq(seen[i], want, "document %zu: %zu of %zu tokens read back", i, seen[i], want);
    }
    free(seen); free(tok); free(mask);
}

static void round_trip(uint32_t vocab, bool drop) {
    rng_state = 42 + vocab + drop;
    corpus c = make_corpus(500, 700, vocab);
    char *dir = tmp_dir();
    pk_options o = {.seq_len = 512, .drop_long = drop, .seed = 3, .vocab_size = vocab, .pad_id = 1, .shard_seqs = 40};
    pk_report r;
    cr_assert_eq(pk_write_dir(dir, c.docs, c.n, &o, NULL, &r), 0, "%s", rt_errmsg());
    size_t n_long = 0;
    for (size_t i = 0; i < c.n; i++) n_long += c.docs[i].len > 512;
    cr_assert(n_long > 0);
    cr_assert_eq(drop ? r.docs_dropped : r.docs_split, n_long);
    cr_assert_eq(r.shards, (r.seqs + 39) / 40);
    check_read_back(dir, &c, 512, drop, r.shards);
    free_corpus(&c);
    free(dir);
}

Test(shard, documents_read_back_exactly_uint16) { round_trip(50000, false); }
Test(shard, documents_read_back_exactly_uint32) { round_trip(151936, false); }
Test(shard, long_documents_dropped_and_counted) { round_trip(1000, true); }

static pk_report plan_of(const size_t *lens, size_t n, uint32_t seq, bool drop) {
    pk_options o = {.seq_len = seq, .drop_long = drop, .seed = 1};
    pk_plan_t p;
    pk_report r = {0};
    cr_assert_eq(pk_plan(lens, n, &o, &p, &r), 0, "%s", rt_errmsg());
    /* every piece inside its sequence, none overlapping */
    for (size_t i = 0; i < p.n_pieces; i++) {
        cr_assert(p.pieces[i].start + p.pieces[i].len <= seq);
        if (i && p.pieces[i].seq == p.pieces[i - 1].seq)
            cr_assert(p.pieces[i].start >= p.pieces[i - 1].start + p.pieces[i - 1].len);
    }
    pk_plan_free(&p);
    return r;
}

Test(pack, best_fit_decreasing_hand_worked) {
    /* 6,5,4,3,2 into 10: 6+4, 5+3+2 — two full sequences */
    size_t a[] = {3, 6, 2, 5, 4};
    pk_report r = plan_of(a, 5, 10, false);
    cr_assert_eq(r.seqs, 2);
    cr_assert_eq(r.pad_tokens, 0);
    /* 7,6,5,4,3,2,2,1 (30 tokens) into 10: 7+3, 6+4, 5+2+2+1 — the optimum, 3 */
    size_t b[] = {1, 2, 2, 3, 4, 5, 6, 7};
    r = plan_of(b, 8, 10, false);
    cr_assert_eq(r.seqs, 3);
    cr_assert_eq(r.pad_tokens, 0);
    /* 11 tokens into 10: split 10 + 1; dropped with drop_long; empty documents skipped */
    size_t c[] = {11, 0, 3};
    r = plan_of(c, 3, 10, false);
    cr_assert_eq(r.seqs, 2);
    cr_assert_eq(r.pieces, 3);
    cr_assert_eq(r.docs_split, 1);
    cr_assert_eq(r.docs_empty, 1);
    r = plan_of(c, 3, 10, true);
    cr_assert_eq(r.seqs, 1);
    cr_assert_eq(r.docs_dropped, 1);
    cr_assert_eq(r.dropped_tokens, 11);
}

Test(pack, same_seed_same_plan) {
    size_t lens[300];
    rng_state = 9;
    for (int i = 0; i < 300; i++) lens[i] = 1 + rnd() % 900;
    pk_options o = {.seq_len = 1024, .seed = 77};
    pk_plan_t a, b;
    pk_report ra = {0}, rb = {0};
    cr_assert_eq(pk_plan(lens, 300, &o, &a, &ra), 0);
    cr_assert_eq(pk_plan(lens, 300, &o, &b, &rb), 0);
    cr_assert_eq(a.n_pieces, b.n_pieces);
    for (size_t i = 0; i < a.n_pieces; i++) {
        const pk_piece *x = &a.pieces[i], *y = &b.pieces[i];
        cr_assert(x->doc == y->doc && x->offset == y->offset && x->len == y->len && x->flags == y->flags &&
                  x->seq == y->seq && x->start == y->start, "piece %zu differs", i);
    }
    uint64_t total = 0;
    for (int i = 0; i < 300; i++) total += lens[i];
    cr_assert(a.n_seqs <= (total * 105 / 100) / 1024 + 2, "%llu sequences for %llu tokens", (unsigned long long)a.n_seqs,
              (unsigned long long)total);
    pk_plan_free(&a);
    pk_plan_free(&b);
}

Test(pack, empty_input_writes_an_empty_index) {
    char *dir = tmp_dir();
    pk_options o = {.seq_len = 64, .vocab_size = 100};
    pk_report r;
    cr_assert_eq(pk_write_dir(dir, NULL, 0, &o, NULL, &r), 0, "%s", rt_errmsg());
    cr_assert_eq(r.shards, 0);
    char *idx = rt_path_join(dir, "index.json");
    cr_assert(rt_is_file(idx));
    free(idx);
    free(dir);
}

/* ---- the reader refuses every corruption ---- */

static uint8_t *valid_shard(size_t *len) {
    char *dir = tmp_dir();
    char *path = rt_path_join(dir, "s.bin");
    shard_writer *w;
    cr_assert_eq(shard_writer_open(path, 8, 1000, 0, &w), 0, "%s", rt_errmsg());
    int32_t t1[8] = {5, 6, 7, 8, 9, 10, 0, 0};
    uint8_t m1[8] = {0, 1, 1, 0, 1, 1, 0, 0};
    shard_doc d1[2] = {{.doc_id = 0, .start = 0, .len = 3}, {.doc_id = 1, .start = 3, .len = 3}};
    cr_assert_eq(shard_writer_add(w, t1, m1, d1, 2), 0, "%s", rt_errmsg());
    int32_t t2[8] = {11, 12, 13, 14, 15, 16, 17, 18};
    uint8_t m2[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    shard_doc d2[1] = {{.doc_id = 2, .start = 0, .len = 8, .offset = 0, .flags = SHARD_DOC_CONT_NEXT}};
    cr_assert_eq(shard_writer_add(w, t2, m2, d2, 1), 0, "%s", rt_errmsg());
    cr_assert_eq(shard_writer_finish(w), 0, "%s", rt_errmsg());
    char *buf;
    cr_assert_eq(rt_read_file(path, &buf, len), 0);
    unlink(path);
    rmdir(dir);
    free(path);
    free(dir);
    return (uint8_t *)buf;
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void reseal(uint8_t *b, size_t len) {
    uint64_t h = XXH64(b + 64, len - 64, 0);
    memcpy(b + 48, &h, 8);
}

/* layout of valid_shard(): 2 sequences of 8 uint16 tokens; mask at 96; docs at 112 */
enum { TOK = 64, MASK = 96, DOCS = 112 };

static void expect_refused(void (*mutate)(uint8_t *, size_t *), bool reseal_it, const char *needle) {
    size_t len;
    uint8_t *b = valid_shard(&len);
    shard_file *f;
    cr_assert_eq(shard_open_buffer(b, len, &f), 0, "%s", rt_errmsg());
    cr_assert_eq(shard_get_info(f)->dtype_bytes, 2);
    cr_assert_eq(shard_get_info(f)->n_docs, 3);
    cr_assert_eq(len, (size_t)DOCS + 3 * SHARD_DOC_BYTES);
    shard_close(f);
    mutate(b, &len);
    if (reseal_it) reseal(b, len);
    int rc = shard_open_buffer(b, len, &f);
    cr_assert_eq(rc, RT_EFORMAT, "expected a refusal mentioning '%s', got %d (%s)", needle, rc, rt_errmsg());
    cr_assert(strstr(rt_errmsg(), needle), "message '%s' lacks '%s'", rt_errmsg(), needle);
    free(b);
}

static void m_magic(uint8_t *b, size_t *n) { (void)n; b[0] = 'X'; }
static void m_version(uint8_t *b, size_t *n) { (void)n; put32(b + 8, 3); }
static void m_dtype(uint8_t *b, size_t *n) { (void)n; put32(b + 12, 3); }
static void m_seq0(uint8_t *b, size_t *n) { (void)n; put32(b + 16, 0); }
static void m_pad(uint8_t *b, size_t *n) { (void)n; put32(b + 40, 1000); }
static void m_u16vocab(uint8_t *b, size_t *n) { (void)n; put32(b + 20, 70000); }
static void m_flags(uint8_t *b, size_t *n) { (void)n; put32(b + 44, 4); }
static void m_flag_topk_no_k(uint8_t *b, size_t *n) { (void)n; put32(b + 44, 1); }
static void m_v1_flags(uint8_t *b, size_t *n) { (void)n; put32(b + 8, 1); put32(b + 44, 1); }
static void m_v1_reserved(uint8_t *b, size_t *n) { (void)n; put32(b + 8, 1); put32(b + 60, 7); }
static void m_k_no_flag(uint8_t *b, size_t *n) { (void)n; put32(b + 56, 3); }
static void m_short(uint8_t *b, size_t *n) { (void)b; *n -= 1; }
static void m_tiny(uint8_t *b, size_t *n) { (void)b; *n = 40; }
static void m_bitflip(uint8_t *b, size_t *n) { (void)n; b[TOK + 2] ^= 1; }
static void m_token(uint8_t *b, size_t *n) { (void)n; b[TOK + 2] = 0xE8; b[TOK + 3] = 0x03; /* 1000 */ }
static void m_mask(uint8_t *b, size_t *n) { (void)n; b[MASK + 1] = 2; }
static void m_padtok(uint8_t *b, size_t *n) { (void)n; b[TOK + 12] = 3; }
static void m_padmask(uint8_t *b, size_t *n) { (void)n; b[MASK + 7] = 1; }
static void m_overlap(uint8_t *b, size_t *n) { (void)n; put32(b + DOCS + 32 + 12, 2); /* doc 1 starts at 2 */ }
static void m_past_end(uint8_t *b, size_t *n) { (void)n; put32(b + DOCS + 32 + 16, 6); /* 3 + 6 > 8 */ }
static void m_bad_seq(uint8_t *b, size_t *n) { (void)n; put32(b + DOCS + 64 + 8, 5); }
static void m_offset(uint8_t *b, size_t *n) { (void)n; put32(b + DOCS + 64 + 20, 4); /* offset without CONT_PREV */ }
static void m_reserved(uint8_t *b, size_t *n) { (void)n; put32(b + DOCS + 28, 9); }

Test(shard_reader, refuses_bad_magic) { expect_refused(m_magic, false, "magic"); }
Test(shard_reader, refuses_other_version) { expect_refused(m_version, false, "version 3, expected 1 or 2"); }
Test(shard_reader, refuses_topk_flag_without_k) { expect_refused(m_flag_topk_no_k, false, "top-k flag with K 0"); }
Test(shard_reader, refuses_flags_in_version_1) { expect_refused(m_v1_flags, false, "expected 0 in version 1"); }
Test(shard_reader, refuses_reserved_bytes_in_version_1) { expect_refused(m_v1_reserved, false, "reserved header bytes 56..63"); }
Test(shard_reader, refuses_topk_fields_without_flag) { expect_refused(m_k_no_flag, false, "without the top-k flag"); }

/* A version-1 file (what every earlier pack wrote: the same bytes with 1 at offset 8) still reads. */
Test(shard_reader, reads_version_1) {
    size_t len;
    uint8_t *b = valid_shard(&len);
    put32(b + 8, 1);
    shard_file *f;
    cr_assert_eq(shard_open_buffer(b, len, &f), 0, "%s", rt_errmsg());
    cr_expect_eq(shard_get_info(f)->version, 1);
    cr_expect_eq(shard_get_info(f)->top_k, 0);
    uint8_t n[8];
    memset(n, 7, sizeof n);
    shard_read_topk(f, 0, n, NULL, NULL);
    for (int i = 0; i < 8; i++) cr_expect_eq(n[i], 0);
    shard_close(f);
    free(b);
}
Test(shard_reader, refuses_unknown_dtype) { expect_refused(m_dtype, false, "dtype of 3 bytes"); }
Test(shard_reader, refuses_zero_seq_len) { expect_refused(m_seq0, false, "sequence length 0"); }
Test(shard_reader, refuses_pad_outside_vocab) { expect_refused(m_pad, false, "pad id 1000"); }
Test(shard_reader, refuses_vocab_too_big_for_uint16) { expect_refused(m_u16vocab, false, "does not fit uint16"); }
Test(shard_reader, refuses_unknown_flags) { expect_refused(m_flags, false, "flags 0x4, expected only bit 0"); }
Test(shard_reader, refuses_truncated_file) { expect_refused(m_short, false, "expected 208"); }
Test(shard_reader, refuses_file_shorter_than_header) { expect_refused(m_tiny, false, "shorter than the 64-byte header"); }
Test(shard_reader, refuses_bad_checksum) { expect_refused(m_bitflip, false, "checksum"); }
Test(shard_reader, refuses_token_outside_vocab) { expect_refused(m_token, true, "is id 1000, expected below"); }
Test(shard_reader, refuses_mask_not_0_or_1) { expect_refused(m_mask, true, "mask byte 1 is 2"); }
Test(shard_reader, refuses_non_pad_token_in_padding) { expect_refused(m_padtok, true, "expected pad id 0"); }
Test(shard_reader, refuses_mask_on_padding) { expect_refused(m_padmask, true, "mask 1 outside every document"); }
Test(shard_reader, refuses_overlapping_documents) { expect_refused(m_overlap, true, "overlaps"); }
Test(shard_reader, refuses_document_past_sequence_end) { expect_refused(m_past_end, true, "within its 8 tokens"); }
Test(shard_reader, refuses_document_in_missing_sequence) { expect_refused(m_bad_seq, true, "sequence 5, expected below 2"); }
Test(shard_reader, refuses_offset_without_flag) { expect_refused(m_offset, true, "offset 4"); }
Test(shard_reader, refuses_reserved_field) { expect_refused(m_reserved, true, "reserved"); }

Test(shard_writer, refuses_bad_sequences_and_leaves_no_file) {
    char *dir = tmp_dir();
    char *path = rt_path_join(dir, "s.bin");
    shard_writer *w;
    cr_assert_eq(shard_writer_open(path, 4, 10, 0, &w), 0);
    int32_t t[4] = {1, 2, 10, 0};
    uint8_t m[4] = {1, 1, 1, 0};
    shard_doc d = {.start = 0, .len = 3};
    cr_assert_eq(shard_writer_add(w, t, m, &d, 1), RT_EINVAL); /* 10 is outside the vocabulary */
    t[2] = 3;
    t[3] = 4;
    cr_assert_eq(shard_writer_add(w, t, m, &d, 1), RT_EINVAL); /* position 3: not in a document, not padding */
    shard_writer_abort(w);
    cr_assert(!rt_is_file(path));
    cr_assert_eq(rmdir(dir), 0, "the temporary file was left behind");
    cr_assert_eq(shard_writer_open("/nonexistent-dir/s.bin", 4, 10, 0, &w), RT_EIO);
    cr_assert(strstr(rt_errmsg(), "/nonexistent-dir/s.bin"));
    free(path);
    free(dir);
}

/* ---- teacher top-k (version 2, flag bit 0) ---- */

/* One sequence of 6 tokens: a document at [0, 4), padding after; K = 3, teacher vocabulary 50. */
static uint8_t *topk_shard(size_t *len) {
    char *dir = tmp_dir();
    char *path = rt_path_join(dir, "k.bin");
    shard_writer *w;
    cr_assert_eq(shard_writer_open(path, 6, 10, 0, &w), 0);
    cr_assert_eq(shard_writer_set_topk(w, 3, 50), 0, "%s", rt_errmsg());
    int32_t t[6] = {1, 2, 3, 4, 0, 0};
    uint8_t m[6] = {0, 1, 1, 1, 0, 0};
    shard_doc d = {.start = 0, .len = 4};
    uint8_t n[6] = {0, 3, 1, 2, 0, 0};
    int32_t ids[18] = {0, 0, 0, 2, 49, 7, 3, 99 /* past n: written as 0 */, 0, 4, 5, 0};
    float lps[18] = {0, 0, 0, -0.1f, -2.5f, -3.0f, 0.0f, -1.0f, 0, -0.5f, -1.25f, 0};
    cr_assert_eq(shard_writer_add_topk(w, t, m, &d, 1, n, ids, lps), 0, "%s", rt_errmsg());
    cr_assert_eq(shard_writer_finish(w), 0, "%s", rt_errmsg());
    char *buf;
    cr_assert_eq(rt_read_file(path, &buf, len), 0);
    unlink(path);
    rmdir(dir);
    free(path);
    free(dir);
    return (uint8_t *)buf;
}

/* layout: tokens 64 (12 bytes), mask 76 (6), docs 88 (32), top-k block at 120: n [6] at 120,
 * ids at 126 (6·3·4), logprobs at 198; end 270 */
enum { TK = 120, TK_IDS = 126, TK_LPS = 198 };

Test(shard_topk, round_trips_and_zeroes_unused_slots) {
    size_t len;
    uint8_t *b = topk_shard(&len);
    cr_assert_eq(len, 270);
    shard_file *f;
    cr_assert_eq(shard_open_buffer(b, len, &f), 0, "%s", rt_errmsg());
    const shard_info *h = shard_get_info(f);
    cr_expect_eq(h->version, 2);
    cr_expect_eq(h->top_k, 3);
    cr_expect_eq(h->teacher_vocab, 50);
    uint8_t n[6];
    int32_t ids[18];
    float lps[18];
    shard_read_topk(f, 0, n, ids, lps);
    uint8_t wn[6] = {0, 3, 1, 2, 0, 0};
    int32_t wid[18] = {0, 0, 0, 2, 49, 7, 3, 0, 0, 4, 5, 0};
    float wlp[18] = {0, 0, 0, -0.1f, -2.5f, -3.0f, 0.0f, 0, 0, -0.5f, -1.25f, 0};
    cr_expect_eq(memcmp(n, wn, 6), 0);
    cr_expect_eq(memcmp(ids, wid, sizeof wid), 0);
    cr_expect_eq(memcmp(lps, wlp, sizeof wlp), 0);
    shard_close(f);
    free(b);
}

static void topk_refused(void (*mutate)(uint8_t *), const char *needle) {
    size_t len;
    uint8_t *b = topk_shard(&len);
    mutate(b);
    reseal(b, len);
    shard_file *f;
    int rc = shard_open_buffer(b, len, &f);
    cr_assert_eq(rc, RT_EFORMAT, "expected a refusal mentioning '%s', got %d (%s)", needle, rc, rt_errmsg());
    cr_assert(strstr(rt_errmsg(), needle), "message '%s' lacks '%s'", rt_errmsg(), needle);
    free(b);
}
static void k_count(uint8_t *b) { b[TK + 2] = 4; }
static void k_padding(uint8_t *b) { b[TK + 4] = 1; put32(b + TK_IDS + 4 * 12, 1); put32(b + TK_LPS + 4 * 12, 0xbf800000u); }
static void k_id(uint8_t *b) { put32(b + TK_IDS + 4 * 4, 50); }
static void k_lp(uint8_t *b) { put32(b + TK_LPS + 4 * 4, 0x7fc00000u); /* NaN */ }
static void k_slot(uint8_t *b) { put32(b + TK_IDS + 4 * 7, 9); }

Test(shard_topk, refuses_more_alternatives_than_k) { topk_refused(k_count, "4 teacher alternatives, expected at most 3"); }
Test(shard_topk, refuses_topk_on_padding) { topk_refused(k_padding, "teacher top-k outside every document"); }
Test(shard_topk, refuses_id_outside_teacher_vocab) { topk_refused(k_id, "teacher id 50, expected below 50"); }
Test(shard_topk, refuses_non_finite_logprob) { topk_refused(k_lp, "teacher logprob nan"); }
Test(shard_topk, refuses_unused_slot_not_zero) { topk_refused(k_slot, "unused top-k slot 1 is not zero"); }
Test(shard_topk, refuses_truncated_topk) {
    size_t len;
    uint8_t *b = topk_shard(&len);
    shard_file *f;
    cr_assert_eq(shard_open_buffer(b, len - 8, &f), RT_EFORMAT);
    cr_assert(strstr(rt_errmsg(), "expected 270"), "%s", rt_errmsg());
    free(b);
}

Test(shard_topk, writer_refuses_bad_topk) {
    char *dir = tmp_dir();
    char *path = rt_path_join(dir, "k.bin");
    shard_writer *w;
    cr_assert_eq(shard_writer_open(path, 2, 10, 0, &w), 0);
    cr_assert_eq(shard_writer_set_topk(w, 21, 50), RT_EINVAL);
    cr_assert_eq(shard_writer_set_topk(w, 2, 50), 0);
    int32_t t[2] = {1, 0}, ids[4] = {60, 0, 0, 0};
    uint8_t m[2] = {1, 0}, n[2] = {1, 0};
    float lps[4] = {-1, 0, 0, 0};
    shard_doc d = {.start = 0, .len = 1};
    cr_assert_eq(shard_writer_add_topk(w, t, m, &d, 1, n, ids, lps), RT_EINVAL);   /* id 60 ≥ 50 */
    ids[0] = 3;
    n[1] = 1;
    cr_assert_eq(shard_writer_add_topk(w, t, m, &d, 1, n, ids, lps), RT_EINVAL);   /* top-k on padding */
    n[1] = 0;
    lps[0] = 0.5f;
    cr_assert_eq(shard_writer_add_topk(w, t, m, &d, 1, n, ids, lps), RT_EINVAL);   /* a positive logprob */
    shard_writer_abort(w);
    cr_assert_eq(rmdir(dir), 0, "the temporary file was left behind");
    free(path);
    free(dir);
}

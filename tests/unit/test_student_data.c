/* student/data: sd_skip() moves a position exactly as reading that many sequences does —
 * the same {epoch, cursor}, and the next read after it gives the same sequence. The
 * expected positions are worked by hand for 5 sequences a epoch: cursor counts the
 * sequences read this epoch and wraps only when the next one is taken. */
#include <string.h>
#include <unistd.h>

#include "core/shard.h"
#include "student/data.h"
#include "testutil.h"

#define NSEQ 5
#define LEN 8

static sd_data *five_seqs(char *dir, size_t cap) {
    snprintf(dir, cap, "/tmp/rt_sdskip_XXXXXX");
    cr_assert(mkdtemp(dir));
    char path[300];
    snprintf(path, sizeof path, "%s/shard-00000.bin", dir);
    shard_writer *w;
    cr_assert_eq(shard_writer_open(path, LEN, 64, 0, &w), 0, "%s", rt_errmsg());
    for (int s = 0; s < NSEQ; s++) {
        int32_t tok[LEN];
        uint8_t mask[LEN];
        for (int i = 0; i < LEN; i++) tok[i] = 1 + s * 10 + i, mask[i] = i > 0;
        shard_doc doc = {.doc_id = (uint64_t)s, .start = 0, .len = LEN};
        cr_assert_eq(shard_writer_add(w, tok, mask, &doc, 1), 0, "%s", rt_errmsg());
    }
    cr_assert_eq(shard_writer_finish(w), 0, "%s", rt_errmsg());
    sd_data *d;
    cr_assert_eq(sd_open(dir, &d), 0, "%s", rt_errmsg());
    cr_assert_eq(sd_num_seqs(d), NSEQ);
    return d;
}

static void read_n(sd_data *d, sd_position *p, int64_t n, int32_t *first_tok) {
    int32_t tok[LEN], ds[LEN], pos[LEN], tgt[LEN];
    int64_t nt;
    for (int64_t i = 0; i < n; i++) {
        cr_assert_eq(sd_read(d, p, 1, tok, ds, pos, tgt, &nt), 0, "%s", rt_errmsg());
        if (first_tok) *first_tok = tok[0];
    }
}

Test(student_data, skip_moves_the_position_as_reading_does) {
    char dir[64];
    sd_data *d = five_seqs(dir, sizeof dir);
    static const struct { uint64_t start_cursor, k, epoch, cursor; } cases[] = {
        {0, 0, 0, 0}, {0, 3, 0, 3}, {0, 5, 0, 5}, {0, 7, 1, 2}, {5, 1, 1, 1}, {2, 13, 2, 5}, {4, 11, 2, 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        sd_position a = {.seed = 9, .epoch = 0, .cursor = cases[i].start_cursor}, b = a;
        sd_skip(d, &a, cases[i].k);
        read_n(d, &b, (int64_t)cases[i].k, NULL);
        cr_assert_eq(a.epoch, cases[i].epoch, "case %zu: epoch", i);
        cr_assert_eq(a.cursor, cases[i].cursor, "case %zu: cursor", i);
        cr_assert_eq(b.epoch, a.epoch, "case %zu: sd_read's epoch", i);
        cr_assert_eq(b.cursor, a.cursor, "case %zu: sd_read's cursor", i);
        int32_t ta, tb;
        read_n(d, &a, 1, &ta);
        read_n(d, &b, 1, &tb);
        cr_assert_eq(ta, tb, "case %zu: the next sequence after a skip is the one after a read", i);
    }
    sd_close(d);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* core/tb_events: CRC-32C against its published check value, and the TFRecord framing of a
 * written file (lengths, masked CRCs recomputed from the definition). The Event protos
 * themselves are read back by tensorboard in tests/ref/test_tensorboard.py. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/tb_events.h"
#include "testutil.h"

Test(tb_events, crc32c_check_value) {
    /* the CRC catalogue's check value of CRC-32/ISCSI (Castagnoli) over "123456789" */
    cr_assert_eq(tb_crc32c("123456789", 9), 0xe3069283u);
    cr_assert_eq(tb_crc32c("", 0), 0u);
}

static uint32_t mask(uint32_t c) { return ((c >> 15) | (c << 17)) + 0xa282ead8u; }

Test(tb_events, records_are_framed_and_checksummed) {
    char *dir = tmp_dir();
    tb_writer *w;
    cr_assert_eq(tb_open(dir, &w), 0, "%s", rt_errmsg());
    cr_assert_eq(tb_scalar(w, "train/loss", 3, 1.5e9, 2.25f), 0);
    cr_assert_eq(tb_scalar(w, "", 3, 1.5e9, 2.25f), RT_EINVAL);
    char path[1024];
    snprintf(path, sizeof path, "%s", tb_path(w));
    tb_close(w);
    char *b;
    size_t len;
    cr_assert_eq(rt_read_file(path, &b, &len), 0);
    size_t off = 0;
    int records = 0;
    while (off < len) {
        uint64_t n = 0;
        uint32_t hc = 0, dc = 0;
        for (int i = 0; i < 8; i++) n |= (uint64_t)(uint8_t)b[off + i] << (8 * i);
        for (int i = 0; i < 4; i++) hc |= (uint32_t)(uint8_t)b[off + 8 + i] << (8 * i);
        for (int i = 0; i < 4; i++) dc |= (uint32_t)(uint8_t)b[off + 12 + n + i] << (8 * i);
        cr_assert_eq(hc, mask(tb_crc32c(b + off, 8)));
        cr_assert_eq(dc, mask(tb_crc32c(b + off + 12, n)));
        if (records == 1) cr_assert(memmem(b + off + 12, n, "train/loss", 10), "the tag is in the second record");
        off += 16 + n;
        records++;
    }
    cr_assert_eq(off, len);
    cr_assert_eq(records, 2);   /* file_version, one scalar */
    free(b);
    unlink(path);
    rmdir(dir);
    free(dir);
}

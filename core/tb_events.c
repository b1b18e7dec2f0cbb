/* core/tb_events.c — TFRecord framing and hand-encoded Event protos (see tb_events.h). */
#include "core/tb_events.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/status.h"

struct tb_writer {
    FILE *f;
    char *path;
};

/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bitwise: records are small. */
uint32_t tb_crc32c(const void *data, size_t n) {
    const uint8_t *p = data;
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
}

static uint32_t masked(const void *data, size_t n) {
    uint32_t c = tb_crc32c(data, n);
    return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

static void put_le(uint8_t *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* protobuf pieces into buf (large enough: the callers size it); each returns the bytes written */
static size_t varint(uint8_t *p, uint64_t v) {
    size_t n = 0;
    do {
        p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

static size_t field_bytes(uint8_t *p, int field, const void *data, size_t len) {
    size_t n = varint(p, (uint64_t)field << 3 | 2);
    n += varint(p + n, len);
    memcpy(p + n, data, len);
    return n + len;
}

static int write_record(tb_writer *w, const uint8_t *data, size_t n) {
    uint8_t head[12], tail[4];
    put_le(head, n, 8);
    put_le(head + 8, masked(head, 8), 4);
    put_le(tail, masked(data, n), 4);
    if (fwrite(head, 1, 12, w->f) != 12 || fwrite(data, 1, n, w->f) != n || fwrite(tail, 1, 4, w->f) != 4 ||
        fflush(w->f))
        return rt_fail(RT_EIO, "writing %s: %s", w->path, strerror(errno));
    return 0;
}

/* An Event with wall_time and step, then `rest` (already encoded fields) appended. */
static int write_event(tb_writer *w, double wall_time, int64_t step, const uint8_t *rest, size_t rest_n) {
    uint8_t buf[600];
    size_t n = 0;
    uint64_t bits;
    memcpy(&bits, &wall_time, 8);
    buf[n++] = 0x09;   /* field 1, fixed64 */
    put_le(buf + n, bits, 8);
    n += 8;
    buf[n++] = 0x10;   /* field 2, varint */
    n += varint(buf + n, (uint64_t)step);
    memcpy(buf + n, rest, rest_n);
    return write_record(w, buf, n + rest_n);
}

int tb_open(const char *dir, tb_writer **out) {
    *out = NULL;
    if (mkdir(dir, 0755) && errno != EEXIST) return rt_fail(RT_EIO, "cannot create %s: %s", dir, strerror(errno));
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    size_t len = strlen(dir) + strlen(host) + 96;
    tb_writer *w = rt_calloc(1, sizeof *w);
    char *path = rt_malloc(len);
    if (!w || !path) {
        free(w);
        free(path);
        return RT_ENOMEM;
    }
    snprintf(path, len, "%s/events.out.tfevents.%lld.%s.%ld.retort", dir, (long long)ts.tv_sec, host, (long)getpid());
    w->path = path;
    if (!(w->f = fopen(path, "wb"))) {
        int rc = rt_fail(RT_EIO, "cannot create %s: %s", path, strerror(errno));
        tb_close(w);
        return rc;
    }
    uint8_t rest[32];
    static const char ver[] = "brain.Event:2";
    size_t n = field_bytes(rest, 3, ver, sizeof ver - 1);
    int rc = write_event(w, (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec, 0, rest, n);
    if (rc) {
        tb_close(w);
        return rc;
    }
    *out = w;
    return 0;
}

int tb_scalar(tb_writer *w, const char *tag, int64_t step, double wall_time, float value) {
    size_t tl = strlen(tag);
    if (!tl || tl > 256) return rt_fail(RT_EINVAL, "a TensorBoard tag of %zu bytes (1-256)", tl);
    uint8_t val[300], sum[310], ev[320];
    size_t n = field_bytes(val, 1, tag, tl);   /* Summary.Value.tag */
    val[n++] = 0x15;                           /* Summary.Value.simple_value: field 2, fixed32 */
    uint32_t bits;
    memcpy(&bits, &value, 4);
    put_le(val + n, bits, 4);
    n += 4;
    size_t s = field_bytes(sum, 1, val, n);    /* Summary.value */
    size_t e = field_bytes(ev, 5, sum, s);     /* Event.summary */
    return write_event(w, wall_time, step, ev, e);
}

const char *tb_path(const tb_writer *w) { return w->path; }

void tb_close(tb_writer *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    free(w->path);
    free(w);
}

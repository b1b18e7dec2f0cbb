/* tests/tools/st_copy.c — test helper for the safetensors round trips with PyPI safetensors.
 *
 *   st_copy IN OUT        read IN (file or model directory) with st_open and write every
 *                         tensor, and the first shard's __metadata__, to OUT with st_write
 *   st_copy --pattern OUT write one 3×5 tensor per dtype named after it ("F32", …) whose
 *                         bytes are (i * 37 + 11) mod 256 for byte i (BOOL: that mod 2), with
 *                         metadata {"writer": "retort"}
 * Exit 0 ok, 1 with the library's message on stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"
#include "core/status.h"

static int fail(const char *what) {
    fprintf(stderr, "st_copy: %s: %s\n", what, rt_errmsg());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: st_copy IN OUT | st_copy --pattern OUT\n");
        return 2;
    }
    if (!strcmp(argv[1], "--pattern")) {
        st_wtensor ts[RT_DT_COUNT];
        unsigned char bufs[RT_DT_COUNT][15 * 8];
        size_t n = 0;
        for (int t = 1; t < RT_DT_COUNT; t++, n++) {
            for (size_t i = 0; i < sizeof bufs[n]; i++) {
                bufs[n][i] = (unsigned char)((i * 37 + 11) % 256);
                if (t == RT_DT_BOOL) bufs[n][i] &= 1;
            }
            ts[n] = (st_wtensor){rt_dtype_name((rt_dtype)t), (rt_dtype)t, 2, {3, 5}, bufs[n]};
        }
        json_t *meta = json_pack("{s:s}", "writer", "retort");
        int rc = st_write(argv[2], ts, n, meta);
        json_decref(meta);
        return rc ? fail(argv[2]) : 0;
    }
    st_file *f;
    if (st_open(argv[1], &f)) return fail(argv[1]);
    size_t n = st_count(f);
    st_wtensor *ts = calloc(n + 1, sizeof *ts);
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = st_get(f, i);
        ts[i].name = t->name;
        ts[i].dtype = t->dtype;
        ts[i].ndim = t->ndim;
        memcpy(ts[i].shape, t->shape, sizeof t->shape);
        ts[i].data = t->data;
    }
    int rc = st_write(argv[2], ts, n, st_metadata(f, 0));
    free(ts);
    st_close(f);
    return rc ? fail(argv[2]) : 0;
}

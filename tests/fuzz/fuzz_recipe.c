/* tests/fuzz/fuzz_recipe.c — libFuzzer target on recipes (eval/recipe.h): any input, read as
 * a recipe file, must load into a plan or fail with a code and a message; a plan's stages
 * must print as command lines and bind their argv. Never crash, leak or read out of bounds.
 * rc_load reads a file, so each input is written to one temporary file first.
 *   make fuzz && build/fuzz/fuzz_recipe -max_total_time=60 tests/fuzz/corpus/recipe */
#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/status.h"
#include "eval/recipe.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char path[64];
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/fuzz_recipe_%d.yaml", (int)getpid());
    }
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    if (size) fwrite(data, 1, size, f);
    fclose(f);
    static const char *const sets[] = {"work_dir=/tmp/fuzz-recipe-w"};
    rc_plan *p = NULL;
    int rc = rc_load(path, sets, size && (data[0] & 1), &p); /* with or without a --set */
    if (rc) {
        assert(rc == RT_EFORMAT || rc == RT_ENOTFOUND || rc == RT_EINVAL || rc == RT_ENOMEM || rc == RT_EIO);
        assert(rt_errmsg()[0]);
        assert(!p);
        return 0;
    }
    assert(p && p->n_stages > 0);
    for (size_t i = 0; i < p->n_stages; i++) {
        char *line = rc_command_line(&p->stages[i], "/bin/retort");
        assert(line);
        free(line);
        char **argv, *from;
        if (rc_stage_argv(p, i, true, false, &argv, &from) == 0) {
            assert(argv && argv[0]);
            rc_argv_free(argv);
            free(from);
        }
    }
    rc_plan_free(p);
    return 0;
}

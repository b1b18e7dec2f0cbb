/* cli/cmd_run.c — `retort run` (being written). */
#include <stdio.h>

#include "cli/cli.h"

int cmd_run(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "retort: run: not built yet\n");
    return EXIT_RUNTIME;
}

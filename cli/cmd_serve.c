/* cli/cmd_serve.c — `retort serve` (being written). */
#include <stdio.h>

#include "cli/cli.h"

int cmd_serve(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "retort: serve: not built yet\n");
    return EXIT_RUNTIME;
}

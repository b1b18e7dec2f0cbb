/* cli/cmd_dedup.c — placeholder until filters/minhash lands (replaced below). */
#include "cli/cli.h"
int cmd_dedup(int argc, char **argv) { (void)argc; (void)argv; return EXIT_RUNTIME; }

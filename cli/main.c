/* cli/main.c — `retort`: dispatch to subcommands, global help, version. */
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/log.h"
#include "core/status.h"

#define RETORT_VERSION "0.1.0"

static const cli_command commands[] = {
    {"inspect", "check a model directory (config.json + safetensors) and summarize it",
     "usage: retort inspect DIR [--json]\n"
     "\n"
     "Reads DIR/config.json (model_type llama, qwen2 or deepseek_v3) and the safetensors in DIR\n"
     "(model.safetensors, or shards named by model.safetensors.index.json), checks that every\n"
     "tensor the architecture needs is present with the right shape and dtype, and prints the\n"
     "architecture, shapes, dtypes, tensor count and parameter count.\n"
     "\n"
     "  --json   one JSON object on stdout: architecture, model_type, parameters (elements of\n"
     "           every tensor except *.weight_scale_inv), tensors, files, dtypes, quantization,\n"
     "           mtp_layers, config, shapes\n"
     "\n"
     "Exit status: 0 valid, 1 invalid or unreadable checkpoint, 2 usage error.\n",
     cmd_inspect},
    {"version", "print the version and what this build supports",
     "usage: retort version\n", cmd_version},
};

const cli_command *cli_find(const char *name) {
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(commands[i].name, name)) return &commands[i];
    return NULL;
}

int cli_fail(const char *what) {
    const char *m = rt_errmsg();
    if (what && *what) fprintf(stderr, "retort: %s: %s\n", what, *m ? m : "failed");
    else fprintf(stderr, "retort: %s\n", *m ? m : "failed");
    return EXIT_RUNTIME;
}

int cli_usage_error(const char *name, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "retort %s: ", name);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see 'retort help %s')\n", name);
    return EXIT_USAGE;
}

int cli_wants_help(const char *name, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) break;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(cli_find(name)->usage, stdout);
            return 1;
        }
    }
    return 0;
}

const char *cli_thousands(long long n, char *buf, size_t len) {
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, "%lld", n < 0 ? -n : n), o = 0;
    if (n < 0 && (size_t)o + 1 < len) buf[o++] = '-';
    for (int i = 0; i < k && (size_t)o + 2 < len; i++) {
        if (i && (k - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = 0;
    return buf;
}

static void print_help(FILE *out) {
    fprintf(out,
            "retort — distill reasoning models: teacher generation, filtering, student training, evaluation\n"
            "\n"
            "usage: retort [--log-level debug|info|warn|error|quiet] COMMAND [ARGS]\n"
            "\n"
            "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "  %-10s %s\n", "help", "show the usage of a command: retort help COMMAND");
    fprintf(out, "\nExit status: 0 ok, 1 runtime error (bad input, I/O), 2 usage error.\n");
}

int cmd_version(int argc, char **argv) {
    if (cli_wants_help("version", argc, argv)) return EXIT_OK;
    if (argc > 1) return cli_usage_error("version", "unexpected argument '%s'", argv[1]);
    printf("retort %s\n", RETORT_VERSION);
#ifdef RT_HAVE_CUDA
    printf("cuda: built (sm_80, sm_90)\n");
#else
    printf("cuda: not built (CPU only)\n");
#endif
    return EXIT_OK;
}

int main(int argc, char **argv) {
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { print_help(stdout); return EXIT_OK; }
        if (!strcmp(argv[i], "--version")) return cmd_version(1, argv);
        if (!strcmp(argv[i], "--log-level") && i + 1 < argc) {
            int lv = rt_log_parse_level(argv[i + 1]);
            if (lv < 0) {
                fprintf(stderr, "retort: unknown log level '%s' (debug, info, warn, error, quiet)\n", argv[i + 1]);
                return EXIT_USAGE;
            }
            rt_log_set_level((rt_log_level)lv);
            i += 2;
            continue;
        }
        fprintf(stderr, "retort: unknown option '%s'\n(see 'retort --help')\n", argv[i]);
        return EXIT_USAGE;
    }
    if (i >= argc) {
        print_help(stderr);
        return EXIT_USAGE;
    }
    const char *name = argv[i];
    if (!strcmp(name, "help")) {
        if (i + 1 >= argc) { print_help(stdout); return EXIT_OK; }
        const cli_command *c = cli_find(argv[i + 1]);
        if (!c) {
            fprintf(stderr, "retort: unknown command '%s'\n(see 'retort --help')\n", argv[i + 1]);
            return EXIT_USAGE;
        }
        fputs(c->usage, stdout);
        return EXIT_OK;
    }
    const cli_command *c = cli_find(name);
    if (!c) {
        fprintf(stderr, "retort: unknown command '%s'\n(see 'retort --help')\n", name);
        return EXIT_USAGE;
    }
    return c->run(argc - i, argv + i);
}

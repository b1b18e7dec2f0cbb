/* cli/cli.h — the subcommand table and the helpers every subcommand shares.
 *
 * Each subcommand is `int cmd_NAME(int argc, char **argv)` with argv[0] the command name.
 * It returns an exit status: 0 ok, 1 runtime error (bad input, I/O), 2 usage error.
 * cli/ is the only place that prints to the user and decides exit codes.
 */
#ifndef RT_CLI_H
#define RT_CLI_H

#include <getopt.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "eval/cmdopts.h"

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

typedef struct {
    const char *name;
    const char *summary;   /* one line for `retort --help` */
    const char *usage;     /* full usage for `retort help NAME` */
    int (*run)(int argc, char **argv);
} cli_command;

const cli_command *cli_find(const char *name);

/* The getopt_long array and short-option string of a subcommand's option table
 * (eval/cmdopts.h), for the options its parser `mode` accepts (0: all). */
typedef struct {
    struct option opts[64];
    char shorts[16];
} cli_getopt;
void cli_getopt_init(const char *name, unsigned mode, cli_getopt *g);
/* `retort help NAME`: the command's usage text, then its options from the table. */
void cli_print_usage(const char *name, FILE *out);
/* --seed S (every command): an unsigned 64-bit integer; anything else is one usage error
 * line naming the flag. Returns 0, or EXIT_USAGE (message printed). */
int cli_parse_seed(const char *name, const char *arg, uint64_t *out);

/* Prints "retort: <what>: <library message>" and returns EXIT_RUNTIME. */
int cli_fail(const char *what);
/* Prints "retort NAME: <message>" and the usage hint; returns EXIT_USAGE. */
int cli_usage_error(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True when argv holds -h or --help; then the usage is printed to stdout. */
int cli_wants_help(const char *name, int argc, char **argv);
/* Prints the filter funnel of a db_stats() object (nothing when no filter has run). */
void cli_print_funnel(const json_t *stats);
/* --template (cmd_pack.c): a built-in name, "auto" or a readable file. */
#include <stdbool.h>
bool cli_template_spec_ok(const char *spec);
/* The chat template every command uses (core/chat_template.h ct_template_resolve): spec, or
 * when NULL the tokenizer's own chat_template, else the built-in its markers fit; checked
 * against tok. A NULL spec that resolves to nothing leaves *out NULL and returns EXIT_OK
 * unless required. Returns an exit status (message printed). tok_path/tok may be NULL. */
struct tok_tokenizer;
struct ct_template;
int cli_template(const char *cmd, const char *spec, const char *tok_path, const struct tok_tokenizer *tok, bool required,
                 struct ct_template **out);
/* Formats n with thousands separators into buf. */
const char *cli_thousands(long long n, char *buf, size_t len);

int cmd_inspect(int argc, char **argv);
int cmd_version(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_dedup(int argc, char **argv);
int cmd_db(int argc, char **argv);
int cmd_import(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_pack(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_filter(int argc, char **argv);
int cmd_select(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_resize_vocab(int argc, char **argv);

#endif

/* eval/cmdopts.h — the options of every retort subcommand, described once, as data.
 *
 * One table per subcommand (co_find("train")): each entry is one --flag with the value
 * getopt_long returns for it, its argument kind, its help line and, when a recipe stage may
 * set it, its recipe key. Three readers:
 *   - cli/ parses argv with the struct option array and short-option string built from it
 *     (co_getopt) and prints the option list of `retort X --help` from it (co_help);
 *   - eval/recipe.c checks a stage's keys and their types against it (co_recipe_key);
 *   - tests/unit/test_cmdopts.c checks the three agree, and that the usage synopses written by
 *     hand in cli/main.c name only flags of the table and every required one (CO_REQ*).
 * The tables live here, beside the recipe checker, because eval/ is the lowest layer that
 * knows the subcommands and cli/ may include it (cli/ → eval/, never the other way).
 *
 * Pure data and pure functions: nothing allocates, nothing prints except co_help (to the
 * FILE given), no state. Values are parsed by the subcommand (cli/), which owns the error
 * messages; co_parse_u64 is the one shared value parser (--seed everywhere).
 */
#ifndef RT_EVAL_CMDOPTS_H
#define RT_EVAL_CMDOPTS_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* The argument of an option: also its type as a recipe value. */
typedef enum {
    CO_FLAG,   /* no argument; recipe: true or false */
    CO_INT,    /* an integer; recipe: an integer */
    CO_U64,    /* an unsigned 64-bit integer (--seed); recipe: 0 .. 2^64-1 */
    CO_NUM,    /* a number */
    CO_STR,    /* a string */
    CO_LIST,   /* a string, repeatable; recipe: a list (or one value) */
    CO_POS,    /* not a flag: the positional arguments (recipe key only); name is NULL */
} co_arg;

/* Recipe roles of a key (eval/recipe.c), and whether the option is required. */
enum {
    CO_IN = 1,       /* a file or directory the stage reads ("local:" removed; URLs skipped) */
    CO_IN_JSONL = 2, /* an input only when it names a .jsonl/.json file (eval --bench) */
    CO_OUT = 8,      /* train: the checkpoint directory */
    CO_LOG = 16,     /* train: the log */
    /* Required: the subcommand's parser (CO_MODE1's / CO_MODE2's of one with two) refuses to run
     * without it, so the usage synopsis of that parser in cli/main.c names it outside [ ] and
     * ( | ) (tests/unit/test_cmdopts.c). One of a group ("(--init | --model)") is not marked. */
    CO_REQ1 = 32,
    CO_REQ2 = 64,
    CO_REQ = CO_REQ1 | CO_REQ2,   /* by every parser that accepts it */
};

/* Parsers of one subcommand that accept an option (co_opt.modes); 0: every one. */
enum { CO_MODE1 = 1, CO_MODE2 = 2 };

/* Values getopt_long returns for options without a short letter of their own. */
enum {
    CO_NO_CUDA_GRAPHS = 0x4e47,
    CO_SPECULATIVE = 0x5350,
    /* train */
    CO_TRAIN_INIT = 256, CO_TRAIN_MODEL, CO_TRAIN_DATA, CO_TRAIN_SEQ, CO_TRAIN_BATCH, CO_TRAIN_ACCUM, CO_TRAIN_STEPS,
    CO_TRAIN_EPOCHS, CO_TRAIN_LR, CO_TRAIN_MINLR, CO_TRAIN_WARMUP, CO_TRAIN_WD, CO_TRAIN_CLIP, CO_TRAIN_SEED, CO_TRAIN_OUT,
    CO_TRAIN_SAVE, CO_TRAIN_RESUME, CO_TRAIN_LOG, CO_TRAIN_SCHED, CO_TRAIN_DTYPE, CO_TRAIN_THREADS, CO_TRAIN_CKPT,
    CO_TRAIN_CHUNK, CO_TRAIN_B1, CO_TRAIN_B2, CO_TRAIN_EPS, CO_TRAIN_ZERO, CO_TRAIN_DEVICE, CO_TRAIN_OVERWRITE,
    CO_TRAIN_OFFLOAD, CO_TRAIN_OFFLOAD_ACTS, CO_TRAIN_TOKENIZER, CO_TRAIN_SHARD, CO_TRAIN_TB, CO_TRAIN_VAL_DATA,
    CO_TRAIN_VAL_EVERY, CO_TRAIN_VAL_FRAC, CO_TRAIN_KD_ALPHA, CO_TRAIN_KD_TEMP, CO_TRAIN_KD_LOSS,
    CO_TRAIN_PLAN, CO_TRAIN_RANKS, CO_TRAIN_GPUMEM, CO_TRAIN_JSON, CO_TRAIN_KD_TOPK,
    /* run */
    CO_RUN_DRY, CO_RUN_FROM, CO_RUN_ONLY, CO_RUN_SET,
    /* resize-vocab */
    CO_RV_MODEL, CO_RV_FROM, CO_RV_OUT, CO_RV_OVERWRITE, CO_RV_SHARD,
};

typedef struct {
    const char *name;    /* the long option without "--"; NULL for CO_POS */
    int val;             /* what getopt_long returns for it */
    char short_opt;      /* its one-letter form (-h), or 0 */
    co_arg arg;
    unsigned modes;      /* CO_MODE1 | CO_MODE2 of a subcommand with two parsers; 0: all */
    const char *meta;    /* the argument's name in the help ("N", "DIR"); NULL for flags */
    const char *help;    /* one line */
    const char *recipe;  /* the key a recipe stage sets it with, or NULL */
    unsigned roles;      /* CO_IN, CO_IN_JSONL, CO_OUT, CO_LOG, CO_REQ* */
} co_opt;

typedef struct {
    const char *name;    /* the subcommand: "train" */
    const co_opt *opts;  /* ends with an entry whose name and recipe are NULL */
    bool stage;          /* a recipe stage may run it */
} co_command;

/* The table of a subcommand, or NULL. */
const co_command *co_find(const char *name);
/* Every subcommand's table, in `retort --help` order; *n set to the count. */
const co_command *co_all(size_t *n);

/* Fills out[] (cap entries, at least co_count+1) with the options that mode accepts
 * (0: all), ended by a zero entry, and shorts (cap_shorts bytes) with the short-option
 * string ("h", "hj:"). Returns the number of options, or -1 when out or shorts is too small. */
int co_getopt(const co_command *c, unsigned mode, struct option *out, size_t cap, char *shorts, size_t cap_shorts);

/* The option of c that a recipe key names ('_' and '-' are the same), or NULL. */
const co_opt *co_recipe_key(const co_command *c, const char *key);

/* Prints the "options:" section of `retort NAME --help` to out: every option, one per line
 * (a help of several lines indented to its column). mode as for co_getopt. */
void co_help(FILE *out, const co_command *c, unsigned mode);

/* Parses s as an unsigned 64-bit decimal integer: digits only (no sign, no space, no
 * fraction, no exponent), at most 18446744073709551615. Returns false otherwise. */
bool co_parse_u64(const char *s, uint64_t *out);

#endif

/* eval/cmdopts: every subcommand's option table agrees with what is built from it — the
 * getopt_long array accepts each entry (--name VALUE, --name=VALUE, -x) and returns its
 * value, the help lists each entry, each recipe key finds its entry — and --seed's parser
 * takes exactly the decimal integers 0 .. 2^64-1 (the bound written out by hand). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/cmdopts.h"
#include "testutil.h"

static const unsigned MODES[] = {0, CO_MODE1, CO_MODE2};

static bool in_mode(const co_opt *o, unsigned mode) { return !mode || !o->modes || (o->modes & mode); }

#define FOR_OPTS(c, o) for (const co_opt *o = (c)->opts; o->name || o->recipe; o++)

/* Runs getopt_long over argv (argc entries) and returns the first value it gives. */
static int parse_one(const struct option *opts, const char *shorts, int argc, char **argv, const char **arg) {
    optind = 0;   /* glibc: reinitialize */
    opterr = 0;
    int ch = getopt_long(argc, argv, shorts, opts, NULL);
    *arg = optarg;
    return ch;
}

Test(cmdopts, getopt_accepts_every_entry_and_returns_its_value) {
    size_t n;
    const co_command *all = co_all(&n);
    cr_assert_gt(n, 15);
    for (size_t i = 0; i < n; i++) {
        const co_command *c = &all[i];
        for (size_t m = 0; m < sizeof MODES / sizeof *MODES; m++) {
            struct option opts[64];
            char shorts[16];
            int k = co_getopt(c, MODES[m], opts, 64, shorts, sizeof shorts);
            cr_assert_geq(k, 0, "%s: the table does not fit", c->name);
            FOR_OPTS(c, o) {
                if (!o->name || !in_mode(o, MODES[m])) continue;
                /* one entry per long name and per value within a parser */
                FOR_OPTS(c, p) {
                    if (p == o || !p->name || !in_mode(p, MODES[m])) continue;
                    cr_assert(strcmp(p->name, o->name), "%s: --%s twice", c->name, o->name);
                    cr_assert_neq(p->val, o->val, "%s: --%s and --%s share a value", c->name, o->name, p->name);
                }
                char flag[96], eq[128], *argv[4] = {"retort", flag, "VALUE", NULL};
                snprintf(flag, sizeof flag, "--%s", o->name);
                const char *arg;
                int ch = parse_one(opts, shorts, o->arg == CO_FLAG ? 2 : 3, argv, &arg);
                cr_assert_eq(ch, o->val, "%s (mode %u): %s gave %d, want %d", c->name, MODES[m], flag, ch, o->val);
                if (o->arg == CO_FLAG) {
                    cr_assert_null(arg, "%s: %s takes no value", c->name, flag);
                    continue;
                }
                cr_assert_str_eq(arg, "VALUE", "%s: %s", c->name, flag);
                snprintf(eq, sizeof eq, "--%s=V2", o->name);
                char *argv2[3] = {"retort", eq, NULL};
                cr_assert_eq(parse_one(opts, shorts, 2, argv2, &arg), o->val);
                cr_assert_str_eq(arg, "V2");
                char *argv3[3] = {"retort", flag, NULL};   /* the value missing */
                cr_assert_eq(parse_one(opts, shorts, 2, argv3, &arg), '?', "%s: %s without its value", c->name, flag);
            }
            FOR_OPTS(c, o) {   /* the short forms */
                if (!o->short_opt || !in_mode(o, MODES[m])) continue;
                char s[3] = {'-', o->short_opt, 0}, *argv[4] = {"retort", s, "VALUE", NULL};
                const char *arg;
                cr_assert_eq(parse_one(opts, shorts, o->arg == CO_FLAG ? 2 : 3, argv, &arg), o->val, "%s: %s", c->name, s);
            }
        }
    }
}

Test(cmdopts, help_lists_every_entry) {
    size_t n;
    const co_command *all = co_all(&n);
    for (size_t i = 0; i < n; i++) {
        const co_command *c = &all[i];
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        cr_assert(f);
        co_help(f, c, 0);
        fclose(f);
        FOR_OPTS(c, o) {
            cr_assert(o->help && *o->help, "%s: an entry without help", c->name);
            if (!o->name) {
                cr_assert(o->meta && strstr(text, o->meta), "%s: positional %s not in the help", c->name, o->recipe);
                continue;
            }
            char line[128];   /* the option begins its line */
            snprintf(line, sizeof line, "  --%s%s", o->name, o->arg == CO_FLAG ? "" : " ");
            char alt[128];
            snprintf(alt, sizeof alt, ", --%s%s", o->name, o->arg == CO_FLAG ? "" : " ");
            cr_assert(strstr(text, line) || strstr(text, alt), "%s: --%s not in the help:\n%s", c->name, o->name, text);
            if (o->arg != CO_FLAG) cr_assert(o->meta, "%s: --%s takes a value but names none", c->name, o->name);
        }
        free(text);
    }
}

/* The stages a recipe may run: written out from docs/recipes.md. */
static const char *const STAGES[] = {"import", "generate", "filter", "select", "export", "pack",
                                     "train", "eval", "compare", "report", "resize-vocab"};

Test(cmdopts, every_recipe_key_maps_to_its_entry) {
    size_t n, stages = 0;
    const co_command *all = co_all(&n);
    for (size_t i = 0; i < n; i++) {
        const co_command *c = &all[i];
        bool listed = false;
        for (size_t s = 0; s < sizeof STAGES / sizeof *STAGES; s++) listed = listed || !strcmp(STAGES[s], c->name);
        cr_assert_eq(c->stage, listed, "%s: stage flag", c->name);
        stages += c->stage;
        FOR_OPTS(c, o) {
            if (!o->recipe) continue;
            cr_assert(c->stage, "%s: a recipe key in a command no stage runs", c->name);
            cr_assert_eq(co_recipe_key(c, o->recipe), o, "%s: key %s", c->name, o->recipe);
            if (o->arg == CO_POS) cr_assert_null(o->name);
            else cr_assert(o->name, "%s: key %s has no flag", c->name, o->recipe);
            /* '_' for '-' */
            char under[64];
            snprintf(under, sizeof under, "%s", o->recipe);
            for (char *p = under; *p; p++)
                if (*p == '-') *p = '_';
            cr_assert_eq(co_recipe_key(c, under), o, "%s: key %s", c->name, under);
        }
    }
    cr_assert_eq(stages, sizeof STAGES / sizeof *STAGES);
    /* keys that are not flag names: eval's run: is --name (name: is the stage's own) */
    const co_opt *run = co_recipe_key(co_find("eval"), "run");
    cr_assert(run && !strcmp(run->name, "name"));
    cr_assert_null(co_recipe_key(co_find("eval"), "name"));
    cr_assert_eq(co_recipe_key(co_find("import"), "files")->arg, CO_POS);
    cr_assert_eq(co_recipe_key(co_find("compare"), "runs")->arg, CO_POS);
    cr_assert_null(co_recipe_key(co_find("train"), "no-such-key"));
    /* every --seed is an unsigned 64-bit integer */
    for (size_t i = 0; i < n; i++)
        FOR_OPTS(&all[i], o)
            if (o->name && !strcmp(o->name, "seed")) cr_assert_eq(o->arg, CO_U64, "%s --seed", all[i].name);
}

Test(cmdopts, seed_is_an_unsigned_64_bit_integer) {
    uint64_t v = 7;
    cr_assert(co_parse_u64("0", &v) && v == 0);
    cr_assert(co_parse_u64("42", &v) && v == 42);
    cr_assert(co_parse_u64("18446744073709551615", &v) && v == 18446744073709551615ull);   /* 2^64 - 1 */
    const char *bad[] = {"1.5", "-1", "18446744073709551616", "99999999999999999999999", "", "+1", " 1", "1 ",
                         "1e3", "0x10", "abc", "-0"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        v = 7;
        cr_assert_not(co_parse_u64(bad[i], &v), "'%s' accepted", bad[i]);
        cr_assert_eq(v, 7, "'%s' wrote the output", bad[i]);
    }
}

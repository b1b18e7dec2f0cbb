/* eval/cmdopts: every subcommand's option table agrees with what is built from it — the
 * getopt_long array accepts each entry (--name VALUE, --name=VALUE, -x) and returns its
 * value, the help lists each entry, each recipe key finds its entry —, with the usage
 * synopses cli/main.c writes by hand (each flag they name is in the table, in one parser's
 * mode; each required option, CO_REQ*, stands in one outside [ ] and ( | )), and --seed's
 * parser takes exactly the decimal integers 0 .. 2^64-1 (the bound written out by hand). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval/cmdopts.h"
#include "testutil.h"

/* cli/main.c for its usage texts (cli_find): its main() renamed, the subcommands stubbed */
#define main retort_main
#include "cli/main.c"
#undef main
#define STUB(name) \
    int cmd_##name(int argc, char **argv) { return (void)argc, (void)argv, 0; }
STUB(inspect) STUB(db) STUB(import) STUB(verify) STUB(dedup) STUB(filter) STUB(select) STUB(tokenize)
STUB(export) STUB(pack) STUB(train) STUB(generate) STUB(eval) STUB(compare) STUB(report) STUB(resize_vocab)
STUB(demo) STUB(serve) STUB(run)

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

/* ---- the usage synopses ----------------------------------------------------------------- */

/* A synopsis: a line of a usage text that begins (after spaces) with "usage: retort NAME" or
 * "retort NAME", and the lines after it indented by 4 or more and beginning with '[', '(' or
 * '-'. Its flags: every "--word"; required where neither [ ] nor ( ) encloses it. */
#define MAX_SYN 8
#define MAX_SYN_FLAGS 64
typedef struct {
    char flag[MAX_SYN_FLAGS][48];
    bool bare[MAX_SYN_FLAGS];   /* outside [ ] and ( ) */
    int n;
    unsigned modes;             /* the parsers (CO_MODE1, CO_MODE2) that accept every flag */
} synopsis;

static const char *starts_synopsis(const char *line, const char *eol, const char *name) {
    while (line < eol && *line == ' ') line++;
    if (!strncmp(line, "usage: ", 7)) line += 7;
    size_t k = strlen(name);
    if (strncmp(line, "retort ", 7) || strncmp(line + 7, name, k)) return NULL;
    return line[7 + k] == ' ' || line + 7 + k == eol ? line + 7 + k : NULL;
}

static bool continues_synopsis(const char *line, const char *eol) {
    int sp = 0;
    while (line + sp < eol && line[sp] == ' ') sp++;
    return sp >= 4 && line + sp < eol && strchr("[(-", line[sp]);
}

/* the synopses of usage (at most MAX_SYN); returns their count */
static int synopses(const char *usage, const char *name, synopsis *out) {
    int n = -1, square = 0, round = 0;
    bool open = false;   /* the line before was part of synopsis n */
    for (const char *line = usage; *line;) {
        const char *eol = strchr(line, '\n');
        if (!eol) eol = line + strlen(line);
        const char *p = starts_synopsis(line, eol, name);
        if (p) {
            cr_assert_lt(n + 1, MAX_SYN, "%s: more than %d synopses", name, MAX_SYN);
            out[++n] = (synopsis){0};
            square = round = 0;
        } else if (open && continues_synopsis(line, eol)) {
            p = line;
        }
        open = p != NULL;
        for (; p && p < eol; p++) {
            square += (*p == '[') - (*p == ']'), round += (*p == '(') - (*p == ')');
            if (p[0] != '-' || p[1] != '-' || (p > line && !strchr(" [(|", p[-1])) || !(p[2] >= 'a' && p[2] <= 'z'))
                continue;
            synopsis *s = &out[n];
            cr_assert_lt(s->n, MAX_SYN_FLAGS, "%s: a synopsis of more than %d flags", name, MAX_SYN_FLAGS);
            size_t k = strspn(p + 2, "abcdefghijklmnopqrstuvwxyz0123456789-");
            cr_assert_lt(k, sizeof s->flag[0], "%s: a flag of %zu characters", name, k);
            memcpy(s->flag[s->n], p + 2, k);
            s->flag[s->n][k] = 0;
            s->bare[s->n++] = !square && !round;
            p += 1 + k;
        }
        line = *eol ? eol + 1 : eol;
    }
    return n + 1;
}

static const co_opt *table_flag(const co_command *c, const char *flag) {
    FOR_OPTS(c, o)
        if (o->name && !strcmp(o->name, flag)) return o;
    return NULL;
}

/* the entry of flag that parser mode accepts, or NULL */
static const co_opt *mode_flag(const co_command *c, const char *flag, unsigned mode) {
    FOR_OPTS(c, o)
        if (o->name && !strcmp(o->name, flag) && in_mode(o, mode)) return o;
    return NULL;
}

Test(cmdopts, usage_synopses_name_only_table_flags_and_every_required_one) {
    size_t n;
    const co_command *all = co_all(&n);
    int checked = 0, required = 0;
    for (size_t i = 0; i < n; i++) {
        const co_command *c = &all[i];
        const cli_command *cc = cli_find(c->name);
        cr_assert(cc, "%s: a table but no command in cli/main.c", c->name);
        synopsis syn[MAX_SYN];
        int ns = synopses(cc->usage, c->name, syn);
        cr_assert_gt(ns, 0, "%s: no usage synopsis", c->name);
        for (int k = 0; k < ns; k++) {
            syn[k].modes = CO_MODE1 | CO_MODE2;
            for (int f = 0; f < syn[k].n; f++) {
                const char *flag = syn[k].flag[f];
                cr_assert(table_flag(c, flag) || !strcmp(flag, "help"), "%s: the usage names --%s, not in its table",
                          c->name, flag);
                for (unsigned m = CO_MODE1; m <= CO_MODE2; m <<= 1)
                    if (!mode_flag(c, flag, m)) syn[k].modes &= ~m;
                checked++;
            }
            cr_assert(syn[k].modes, "%s: synopsis %d names flags of two parsers", c->name, k + 1);
        }
        FOR_OPTS(c, o) {
            required += (o->roles & CO_REQ) != 0;
            for (unsigned m = CO_MODE1; m <= CO_MODE2; m <<= 1) {
                unsigned req = m == CO_MODE1 ? CO_REQ1 : CO_REQ2;
                if (!(o->roles & req) || !in_mode(o, m)) continue;
                cr_assert(o->name, "%s: a required positional", c->name);
                bool named = false;
                for (int k = 0; k < ns && !named; k++)
                    for (int f = 0; f < syn[k].n && !named; f++)
                        named = (syn[k].modes & m) && syn[k].bare[f] && !strcmp(syn[k].flag[f], o->name);
                cr_assert(named, "%s: --%s is required (parser %u) but no synopsis of that parser names it outside "
                          "[ ] and ( )", c->name, o->name, m);
            }
        }
    }
    cr_log_info("%d flags of usage synopses in the tables; %d required options named", checked, required);
    cr_assert_gt(required, 25);
}

/* The synopsis reader itself, on a worked case. */
Test(cmdopts, synopsis_reader_finds_flags_and_brackets) {
    synopsis s[MAX_SYN];
    int n = synopses("usage: retort x --a A (--b | --c) [--d [--e]]\n"
                     "                --f F [--g]...\n"
                     "Prose names --h,\n"
                     "            (--k: prose too)\n"
                     "       retort x --i\n"
                     "  retort x-y --j\n", "x", s);
    cr_assert_eq(n, 2);
    cr_assert_eq(s[0].n, 7);
    const char *want[] = {"a", "b", "c", "d", "e", "f", "g"};
    bool bare[] = {true, false, false, false, false, true, false};
    for (int i = 0; i < 7; i++) {
        cr_assert_str_eq(s[0].flag[i], want[i]);
        cr_assert_eq(s[0].bare[i], bare[i], "--%s", want[i]);
    }
    cr_assert_eq(s[1].n, 1);
    cr_assert_str_eq(s[1].flag[0], "i");
    cr_assert(s[1].bare[0]);
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

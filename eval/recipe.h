/* eval/recipe.h — pipeline recipes (`retort run RECIPE.yaml`): parse, validate, resolve,
 * and the resumable state of a run. The format is documented in docs/recipes.md.
 *
 * rc_load() reads a recipe (core/yaml.h subset), applies --set overrides, substitutes the
 * variables (${work_dir}, ${recipe_dir}, ${name}, the recipe's vars:, ${env:NAME}, and
 * ${hash:STAGE}: the chained hash of the stages up to an earlier STAGE; ${checkpoint:STAGE}
 * is kept and bound when the stage starts, see rc_stage_argv) and turns every stage into a typed plan: the argv of one retort subcommand (without the program
 * name: argv[0] is the subcommand) and an optional launcher prefix ("mpirun -np 8", "srun
 * ..."). Every stage option is checked against the subcommand's option table
 * (eval/cmdopts.h: the same table its command line is parsed with) for its name and type.
 * Nothing is executed and nothing is written; the CLI (cli/cmd_run.c) spawns the stages.
 * Input files are checked separately (rc_check_inputs) so that --dry-run works on a machine
 * that lacks the models.
 *
 * The state file WORK_DIR/recipe-state.json records, per stage name, the hash of the
 * stage's resolved argv (launcher excluded) and whether it was started or finished.
 * rc_schedule() decides what a run does: stages finished with an unchanged argv are
 * skipped up to the first one that is not; that one and every later stage run; a stage
 * that was started with the same argv and not finished is resumed (train: from the newest
 * checkpoint in its --out directory).
 *
 * Ownership: rc_load() returns a plan freed by rc_plan_free(); rc_state_load() a state
 * freed by rc_state_free(); strings returned by rc_* functions that say "owned" are the
 * caller's to free(). Library code: nothing is printed.
 * Errors: RT_EFORMAT (YAML syntax, unknown key, unknown stage, bad type, undefined
 * variable: "RECIPE:LINE: where: why"), RT_ENOTFOUND (a missing input, a --set naming no
 * variable or stage), RT_EINVAL (a bad --set), RT_EIO (reading the recipe, the state file),
 * RT_ENOMEM.
 */
#ifndef RT_EVAL_RECIPE_H
#define RT_EVAL_RECIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *key;   /* the option without "--" ("init", "files", "teacher") */
    char *path;  /* the path as resolved ("local:" removed) */
    int line;    /* in the recipe file, 0 when unknown */
} rc_input;

typedef struct {
    char *name;        /* unique within the recipe (default: the subcommand) */
    char *kind;        /* the retort subcommand: "import", "generate", "train", ... */
    char **launcher;   /* [n_launcher] words put before the retort binary; none: run it directly */
    size_t n_launcher;
    char **argv;       /* [argc + 1], NULL-terminated; argv[0] is kind */
    size_t argc;
    uint64_t hash;     /* XXH64 of argv (launcher excluded): what makes a finished stage stale */
    rc_input *inputs;  /* [n_inputs] files the stage reads that an earlier stage does not write */
    size_t n_inputs;
    char *train_out;   /* train: its --out directory (resume looks there), else NULL */
    char *train_log;   /* train: its --log file when inside work_dir (a fresh run starts it
                          again; a resumed run appends), else NULL */
    int line;          /* of the stage's "- " in the recipe */
} rc_stage;

typedef struct {
    char *path;        /* the recipe file as given */
    char *name;        /* name: (default: the file name without .yaml) */
    char *work_dir;    /* absolute; created by the runner */
    char *state_path;  /* WORK_DIR/recipe-state.json */
    rc_stage *stages;  /* [n_stages], in order */
    size_t n_stages;
} rc_plan;

/* sets: n_sets strings "key=value" (--set): "VAR=v" (a variable of vars:, or work_dir /
 * name), "STAGE.KEY=v" (an option, launcher or extra_args of the stage named STAGE); the
 * value is read as a YAML scalar or flow list ("2e-5", "true", "[a, b]", "text"). */
int rc_load(const char *path, const char *const *sets, size_t n_sets, rc_plan **out);
void rc_plan_free(rc_plan *p); /* NULL is fine */

/* Index of the stage called name, or -1. */
int rc_find_stage(const rc_plan *p, const char *name);

/* Every input of stages [first, last] exists (a directory or file; URLs are not checked).
 * RT_ENOTFOUND: "RECIPE:LINE: stage S: KEY: PATH does not exist". */
int rc_check_inputs(const rc_plan *p, size_t first, size_t last);

/* One shell-quoted line: launcher words, exe, argv. Owned; NULL on ENOMEM. */
char *rc_command_line(const rc_stage *s, const char *exe);

/* ---- resumable state ---- */

typedef enum { RC_NONE, RC_STARTED, RC_DONE, RC_CHANGED } rc_status;

typedef struct rc_state rc_state;

/* A missing state file is an empty state. */
int rc_state_load(const rc_plan *p, rc_state **out);
void rc_state_free(rc_state *s); /* NULL is fine */
/* NONE: no record; STARTED/DONE: a record with the stage's current hash; CHANGED: a record
 * with another hash. */
rc_status rc_state_get(const rc_state *s, const rc_stage *st);
/* Records stage i as started (seconds ignored) or done, after removing the records of
 * stage i and every later stage; writes the file atomically. */
int rc_state_mark(rc_state *s, const rc_plan *p, size_t i, bool done, double seconds);

typedef enum { RC_SKIP, RC_RUN, RC_RESUME } rc_action;

/* Fills act[n_stages]. from / only: a stage index or -1. Default: skip the finished
 * stages before the first that is not finished with its current argv; run it (resume it
 * when it was started with that argv) and everything after it. from = i: skip before i,
 * run i (or resume it) and after. only = i: only i. */
void rc_schedule(const rc_plan *p, const rc_state *s, int from, int only, rc_action *act);

/* The argv to start stage i with (a copy; free with rc_argv_free()): every
 * ${checkpoint:STAGE} replaced by the newest complete checkpoint (OUT/step-N holding
 * trainer_state.json) in that train stage's --out; with resume, a train stage's
 * --init/--model X becomes --resume OUT/step-N of its own newest checkpoint, named in
 * *resumed_from (owned; NULL when there is none and the stage starts over); without
 * resume, a train stage whose --out already holds step-* entries gets --overwrite (it runs
 * afresh, and train refuses another run's checkpoints otherwise). strict: a
 * ${checkpoint:...} with no checkpoint yet is RT_ENOTFOUND; else it stays as written
 * (--dry-run). */
int rc_stage_argv(const rc_plan *p, size_t i, bool resume, bool strict, char ***argv_out, char **resumed_from);
void rc_argv_free(char **argv);

#endif

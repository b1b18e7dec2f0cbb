/* eval/recipe: recipes into plans, and the resumable state. Expected argv, lines and
 * schedules are written by hand from the recipe texts below. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eval/recipe.h"
#include "testutil.h"

/* Writes text to a fresh directory's r.yaml; returns the directory (static buffer). */
static const char *write_recipe(const char *text, char *path, size_t n) {
    static char dir[64];
    snprintf(dir, sizeof dir, "/tmp/rt_recipe_XXXXXX");
    cr_assert(mkdtemp(dir));
    snprintf(path, n, "%s/r.yaml", dir);
    FILE *f = fopen(path, "w");
    cr_assert(f);
    fputs(text, f);
    fclose(f);
    return dir;
}

static void rm_rf(const char *dir) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static rc_plan *load(const char *text, const char *const *sets, size_t n, char *path, size_t pn, const char **dir) {
    *dir = write_recipe(text, path, pn);
    rc_plan *p = NULL;
    int rc = rc_load(path, sets, n, &p);
    cr_assert_eq(rc, 0, "%s", rt_errmsg());
    return p;
}

static void expect_argv(const rc_stage *st, const char *const *want) {
    size_t i = 0;
    for (; want[i]; i++) {
        cr_assert(i < st->argc, "argv too short at %zu (want %s)", i, want[i]);
        cr_assert_str_eq(st->argv[i], want[i], "argv[%zu]", i);
    }
    cr_assert_eq(st->argc, i, "argv has %zu words, want %zu", st->argc, i);
    cr_assert_null(st->argv[i]);
}

static const char *BASE =
    "work_dir: ${recipe_dir}/w\n"
    "vars:\n"
    "  db: ${work_dir}/run.db\n"
    "  lr: 8e-5\n"
    "  n: 4\n"
    "stages:\n"
    "- stage: generate\n"         /* a list at its key's indentation */
    "  launcher: mpirun -np 8 --bind-to 'core x'\n"
    "  db: ${db}\n"
    "  teacher: http://h/v1\n"
    "  n: ${n}\n"
    "  temperature: 0.6\n"
    "  stop: [a, b]\n"
    "  ignore-eos: true\n"
    "  quiet: false\n"
    "- stage: train\n"
    "  model: m\n"
    "  lr: ${lr}\n"
    "  grad_accum: 8\n"
    "  out: ${work_dir}/student\n"
    "  extra_args: [--future, 1]\n"
    "- stage: eval\n"
    "  name: ev\n"
    "  model: local:${checkpoint:train}\n"
    "  run: s-${hash:train}\n"
    "- stage: compare\n"
    "  runs: [x, y]\n"
    "  json: true\n";

Test(recipe, stages_become_typed_argv) {
    char path[128];
    const char *dir;
    rc_plan *p = load(BASE, NULL, 0, path, sizeof path, &dir);
    char db[160], out[160];
    snprintf(db, sizeof db, "%s/w/run.db", dir);
    snprintf(out, sizeof out, "%s/w/student", dir);
    cr_assert_eq(p->n_stages, 4);
    cr_assert_str_eq(p->name, "r");
    const char *g[] = {"generate", "--db", db, "--teacher", "http://h/v1", "--n", "4", "--temperature", "0.6",
                       "--stop", "a", "--stop", "b", "--ignore-eos", NULL};
    expect_argv(&p->stages[0], g);
    cr_assert_eq(p->stages[0].n_launcher, 5);
    cr_assert_str_eq(p->stages[0].launcher[4], "core x");
    const char *t[] = {"train", "--model", "m", "--lr", "8e-05", "--grad-accum", "8", "--out", out, "--future", "1", NULL};
    expect_argv(&p->stages[1], t);
    cr_assert_str_eq(p->stages[1].train_out, out);
    /* the model input is outside work_dir: checked before a run; the URL is not */
    cr_assert_eq(p->stages[1].n_inputs, 1);
    cr_assert_str_eq(p->stages[1].inputs[0].path, "m");
    cr_assert_eq(p->stages[1].inputs[0].line, 17);
    cr_assert_eq(p->stages[0].n_inputs, 0);
    cr_assert_str_eq(p->stages[2].name, "ev");
    cr_assert_str_eq(p->stages[2].argv[2], "local:${checkpoint:train}");
    cr_assert_eq(strncmp(p->stages[2].argv[4], "s-", 2), 0);
    cr_assert_eq(strlen(p->stages[2].argv[4]), 10);
    cr_assert_str_eq(p->stages[2].argv[3], "--name");
    const char *c[] = {"compare", "--json", "x", "y", NULL};
    expect_argv(&p->stages[3], c);
    char *line = rc_command_line(&p->stages[0], "/bin/retort");
    cr_assert(strstr(line, "mpirun -np 8 --bind-to 'core x' /bin/retort generate --db "), "%s", line);
    free(line);
    cr_assert_eq(rc_find_stage(p, "ev"), 2);
    cr_assert_eq(rc_find_stage(p, "eval"), -1);
    rc_plan_free(p);
    rm_rf(dir);
}

Test(recipe, set_overrides_and_hash_chain) {
    char path[128];
    const char *dir;
    rc_plan *a = load(BASE, NULL, 0, path, sizeof path, &dir);
    char run_a[32];
    snprintf(run_a, sizeof run_a, "%s", a->stages[2].argv[4]);
    uint64_t h0 = a->stages[0].hash, h1 = a->stages[1].hash;
    rc_plan_free(a);
    /* a change after train leaves ${hash:train} alone; one before it changes it */
    const char *s1[] = {"compare.json=false", "ev.k=3"};
    rc_plan *b;
    cr_assert_eq(rc_load(path, s1, 2, &b), 0, "%s", rt_errmsg());
    cr_assert_str_eq(b->stages[2].argv[4], run_a);
    cr_assert_eq(b->stages[0].hash, h0);
    const char *c[] = {"compare", "x", "y", NULL};
    expect_argv(&b->stages[3], c);
    rc_plan_free(b);
    const char *s2[] = {"n=5", "lr=1e-4", "generate.launcher=", "train.grad-accum=4"};
    cr_assert_eq(rc_load(path, s2, 4, &b), 0, "%s", rt_errmsg());
    cr_assert_str_eq(b->stages[1].argv[6], "4"); /* grad_accum: replaced, not doubled */
    cr_assert_eq(b->stages[1].argc, 11);
    cr_assert_str_eq(b->stages[0].argv[6], "5");
    cr_assert_str_eq(b->stages[1].argv[4], "0.0001");
    cr_assert_eq(b->stages[0].n_launcher, 0);
    cr_assert_neq(b->stages[0].hash, h0);
    cr_assert_neq(b->stages[1].hash, h1);
    cr_assert_str_neq(b->stages[2].argv[4], run_a);
    rc_plan_free(b);
    /* the launcher is not part of the hash */
    const char *s3[] = {"generate.launcher=srun -n 8"};
    cr_assert_eq(rc_load(path, s3, 1, &b), 0, "%s", rt_errmsg());
    cr_assert_eq(b->stages[0].hash, h0);
    rc_plan_free(b);
    const char *s4[] = {"nosuch=1"};
    cr_assert_eq(rc_load(path, s4, 1, &b), RT_ENOTFOUND);
    rm_rf(dir);
}

static void expect_error(const char *text, const char *needle) {
    char path[128];
    const char *dir = write_recipe(text, path, sizeof path);
    rc_plan *p = NULL;
    int rc = rc_load(path, NULL, 0, &p);
    cr_assert_neq(rc, 0, "%s", text);
    cr_assert_null(p);
    cr_assert(strstr(rt_errmsg(), needle), "'%s' not in '%s'", needle, rt_errmsg());
    cr_assert(strstr(rt_errmsg(), path), "no file name in '%s'", rt_errmsg());
    rm_rf(dir);
}

Test(recipe, errors_name_the_line_and_key) {
    expect_error("work_dir: w\nstages:\n  - stage: train\n    lr: fast\n", ":4: stage train: lr: expected a number, got 'fast'");
    expect_error("work_dir: w\nstages:\n  - stage: train\n    lr: true\n", ":4: stage train: lr: expected a number, got a boolean");
    expect_error("work_dir: w\nstages:\n  - stage: select\n  - stage: trian\n", ":4: stages[1]: unknown stage 'trian'");
    expect_error("work_dir: w\nstages:\n  - stage: select\n\n    # c\n    snapshots: x\n", ":6: stage select: unknown key 'snapshots'");
    expect_error("work_dir: w\nvars:\n  a: ${b}\n  b: ${a}\nstages:\n  - stage: select\n", "(a cycle?)");
    expect_error("work_dir: w\nvars:\n  a: ${c}\nstages:\n  - stage: select\n", ":3: vars: a: undefined variable ${c}");
    expect_error("work_dir: w\nstages:\n  - stage: eval\n    model: ${checkpoint:train}\n",
                 ":4: stage eval: model: ${checkpoint:train}: no earlier train stage named 'train'");
    expect_error("work_dir: w\nstages: []\n", ":2: stages: expected a non-empty list");
    expect_error("stages:\n  - stage: select\n", "work_dir: missing");
    expect_error("work_dir: w\nstages:\n  - stage: select\n    enabled: maybe\n", ":4: stage select: enabled: expected true or false");
}

Test(recipe, schedule_skips_finished_and_resumes_started) {
    char path[128];
    const char *dir;
    rc_plan *p = load(BASE, NULL, 0, path, sizeof path, &dir);
    cr_assert_eq(mkdir(p->work_dir, 0755), 0);
    rc_state *s;
    cr_assert_eq(rc_state_load(p, &s), 0);
    rc_action act[4];
    rc_schedule(p, s, -1, -1, act);
    for (int i = 0; i < 4; i++) cr_assert_eq(act[i], RC_RUN);
    cr_assert_eq(rc_state_mark(s, p, 0, true, 1.0), 0);
    cr_assert_eq(rc_state_mark(s, p, 1, false, 0), 0);
    rc_state_free(s);
    cr_assert_eq(rc_state_load(p, &s), 0); /* from the file */
    cr_assert_eq(rc_state_get(s, &p->stages[0]), RC_DONE);
    cr_assert_eq(rc_state_get(s, &p->stages[1]), RC_STARTED);
    cr_assert_eq(rc_state_get(s, &p->stages[2]), RC_NONE);
    rc_schedule(p, s, -1, -1, act);
    cr_assert(act[0] == RC_SKIP && act[1] == RC_RESUME && act[2] == RC_RUN && act[3] == RC_RUN);
    rc_schedule(p, s, 0, -1, act);
    cr_assert(act[0] == RC_RUN && act[1] == RC_RUN);
    rc_schedule(p, s, -1, 3, act);
    cr_assert(act[0] == RC_SKIP && act[1] == RC_SKIP && act[2] == RC_SKIP && act[3] == RC_RUN);

    /* a fresh train stage over an --out that does not exist yet: its argv as written */
    {
        char **a0, *f0;
        cr_assert_eq(rc_stage_argv(p, 1, false, true, &a0, &f0), 0);
        for (size_t k = 0; a0[k]; k++) cr_assert_str_neq(a0[k], "--overwrite");
        rc_argv_free(a0);
    }
    /* the resumed train takes its newest complete checkpoint in place of --model */
    char d[300], f[320];
    snprintf(d, sizeof d, "%s/step-10", p->stages[1].train_out);
    cr_assert_eq(mkdir(p->stages[1].train_out, 0755), 0);
    cr_assert_eq(mkdir(d, 0755), 0);
    snprintf(f, sizeof f, "%s/trainer_state.json", d);
    fclose(fopen(f, "w"));
    snprintf(d, sizeof d, "%s/step-20", p->stages[1].train_out); /* incomplete: no trainer_state.json */
    cr_assert_eq(mkdir(d, 0755), 0);
    char **argv, *from;
    cr_assert_eq(rc_stage_argv(p, 1, true, true, &argv, &from), 0);
    snprintf(d, sizeof d, "%s/step-10", p->stages[1].train_out);
    cr_assert_str_eq(from, d);
    cr_assert_str_eq(argv[1], "--resume");
    cr_assert_str_eq(argv[2], d);
    cr_assert_str_eq(argv[3], "--lr");
    rc_argv_free(argv);
    free(from);
    /* run afresh over those checkpoints (a changed stage, --from): train is told to replace
     * them (it refuses an --out holding another run's checkpoints), and keeps its --model */
    cr_assert_eq(rc_stage_argv(p, 1, false, true, &argv, &from), 0);
    size_t na = 0;
    while (argv[na]) na++;
    cr_assert_str_eq(argv[na - 1], "--overwrite");
    cr_assert_str_eq(argv[1], "--model");
    cr_assert_null(from);
    rc_argv_free(argv);
    /* ${checkpoint:train} binds to the same directory */
    cr_assert_eq(rc_stage_argv(p, 2, false, true, &argv, &from), 0);
    char want[320];
    snprintf(want, sizeof want, "local:%s", d);
    cr_assert_str_eq(argv[2], want);
    cr_assert_null(from);
    rc_argv_free(argv);

    /* marking a stage drops the records of every later stage */
    cr_assert_eq(rc_state_mark(s, p, 3, true, 1), 0);
    cr_assert_eq(rc_state_mark(s, p, 0, false, 0), 0);
    cr_assert_eq(rc_state_get(s, &p->stages[0]), RC_STARTED);
    cr_assert_eq(rc_state_get(s, &p->stages[3]), RC_NONE);
    rc_state_free(s);
    rc_plan_free(p);
    rm_rf(dir);
}

/* train's --resume auto is a mode, not an input path to check before the run */
Test(recipe, train_resume_auto_is_not_an_input) {
    char path[128];
    const char *dir;
    rc_plan *p = load("work_dir: ${recipe_dir}/w\nstages:\n- stage: train\n  model: m\n  resume: auto\n  out: o\n", NULL, 0,
                      path, sizeof path, &dir);
    const char *t[] = {"train", "--model", "m", "--resume", "auto", "--out", "o", NULL};
    expect_argv(&p->stages[0], t);
    cr_assert_eq(p->stages[0].n_inputs, 1);
    cr_assert_str_eq(p->stages[0].inputs[0].key, "model");
    rc_plan_free(p);
    rm_rf(dir);
}

/* student/outdir: where a run starts, on hand-made output directories (step-N with its
 * config.json, step-N.state with trainer_state.json written here in the documented format,
 * docs/formats.md), and what od_prepare removes. */
#include <sys/stat.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "student/outdir.h"
#include "testutil.h"

static void put(const char *dir, const char *name, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    cr_assert(f, "%s", p);
    fputs(text, f);
    fclose(f);
}

static void sub(const char *dir, const char *name, char *out, size_t n) {
    snprintf(out, n, "%s/%s", dir, name);
    cr_assert_eq(mkdir(out, 0755), 0, "%s", out);
}

/* a trainer_state.json of a run with the default options but steps 10, lr 1e-3 */
static void state(const char *ck, const char *data, const char *model, double lr) {
    char t[2048];
    snprintf(t, sizeof t,
             "{\"format\": \"retort-trainer-state\", \"version\": 1, \"step\": 4, \"data\": {\"seed\": \"7\", \"epoch\": 0, "
             "\"cursor\": 8, \"seq_len\": 32}, \"options\": {\"batch\": 1, \"grad_accum\": 1, \"steps\": 10, \"lr\": %.17g, "
             "\"min_lr_ratio\": 0.1, \"warmup\": 0, \"schedule\": \"cosine\", \"weight_decay\": 0.0, \"clip\": 1.0, "
             "\"beta1\": 0.9, \"beta2\": 0.95, \"eps\": 1e-8, \"checkpoint_layers\": false}, "
             "\"run\": {\"data\": \"%s\", \"model\": \"%s\"}}\n", lr, data, model);
    put(ck, "trainer_state.json", t);
}

/* checkpoint dir/name as tr_save writes it: the model directory (config.json) and
 * name.state beside it holding the trainer state; ck gets the model directory's path */
static void checkpoint(const char *dir, const char *name, char *ck, size_t n, double lr) {
    char st[512], sname[128];
    sub(dir, name, ck, n);
    put(ck, "config.json", "{}\n");
    snprintf(sname, sizeof sname, "%s.state", name);
    sub(dir, sname, st, sizeof st);
    state(st, "/d", "init:/c.json", lr);
}

static tr_options opts(void) {
    tr_options o;
    tr_options_default(&o);
    o.steps = 10, o.lr = 1e-3, o.seed = 7, o.run_data = "/d", o.run_model = "init:/c.json";
    return o;
}

Test(outdir, newest_checkpoint_of_the_same_run_is_chosen) {
    char *dir = tmp_dir(), ck[512], ck2[512];
    tr_options o = opts();
    od_request r = {dir, NULL, NULL, false, true, &o};
    char *start;
    bool chosen;
    cr_assert_eq(od_choose(&r, &start, &chosen), 0);   /* empty: fresh */
    cr_assert_null(start);
    checkpoint(dir, "step-2", ck, sizeof ck, 1e-3);
    checkpoint(dir, "step-10", ck2, sizeof ck2, 1e-3);
    char st12[512];
    sub(dir, "step-12.state", st12, sizeof st12);      /* a save killed between its two renames: no step-12 */
    state(st12, "/d", "init:/c.json", 1e-3);
    sub(dir, "step-11.partial", ck, sizeof ck);       /* a killed save: not a checkpoint */
    cr_assert_eq(od_choose(&r, &start, &chosen), 0, "%s", rt_errmsg());
    cr_assert_str_eq(start, ck2);                      /* 10 > 2: by number, not by name */
    cr_assert(chosen);
    free(start);
    /* another learning rate, data or model: refused, naming the difference */
    o.lr = 2e-3;
    cr_assert_eq(od_choose(&r, &start, &chosen), RT_EINVAL);
    cr_assert(strstr(rt_errmsg(), "lr 0.001 there, 0.002 here") && strstr(rt_errmsg(), "--overwrite"), "%s", rt_errmsg());
    o = opts();
    o.run_data = "/e";
    cr_assert_eq(od_choose(&r, &start, &chosen), RT_EINVAL);
    cr_assert(strstr(rt_errmsg(), "data /d there, /e here"), "%s", rt_errmsg());
    o = opts();
    o.run_model = "model:/m";
    cr_assert_eq(od_choose(&r, &start, &chosen), RT_EINVAL);
    cr_assert(strstr(rt_errmsg(), "model init:/c.json there, model:/m here"), "%s", rt_errmsg());
    o = opts();
    o.seed = 8;
    cr_assert_eq(od_choose(&r, &start, &chosen), RT_EINVAL);
    cr_assert(strstr(rt_errmsg(), "seed 7 there, 8 here"), "%s", rt_errmsg());
    /* --overwrite and an explicit --resume do not look */
    o.seed = 7;
    od_request ov = {dir, NULL, NULL, true, true, &o};
    cr_assert_eq(od_choose(&ov, &start, &chosen), 0);
    cr_assert_null(start);
    od_request ex = {dir, NULL, "/elsewhere/step-3", false, true, &o};
    cr_assert_eq(od_choose(&ex, &start, &chosen), 0);
    cr_assert_str_eq(start, "/elsewhere/step-3");
    cr_assert(!chosen);
    free(start);
    char *m = od_state_model(ck2);
    cr_assert_str_eq(m, "init:/c.json");
    free(m);
    /* od_prepare with overwrite: every step-* goes, nothing else */
    put(dir, "notes.txt", "keep");
    cr_assert_eq(od_prepare(dir, true, NULL, 0), 0, "%s", rt_errmsg());
    cr_assert(!rt_is_dir(ck2) && !rt_is_dir(ck) && !rt_is_dir(st12));
    snprintf(st12, sizeof st12, "%s/step-10.state", dir);
    cr_assert(!rt_is_dir(st12));
    char p[512];
    snprintf(p, sizeof p, "%s/notes.txt", dir);
    cr_assert(rt_is_file(p));
    unlink(p);
    rmdir(dir);
    free(dir);
}

Test(outdir, other_contents_are_refused_but_the_log_is_not) {
    char *dir = tmp_dir(), p[512];
    tr_options o = opts();
    snprintf(p, sizeof p, "%s/train.jsonl", dir);
    put(dir, "train.jsonl", "{\"step\": 1}\n{\"step\": 2}\n{\"step\": 3}\n{\"step\": 4, \"lo");
    od_request r = {dir, p, "auto", false, true, &o};
    char *start;
    bool chosen;
    cr_assert_eq(od_choose(&r, &start, &chosen), 0, "%s", rt_errmsg());   /* only the log: fresh */
    cr_assert_null(start);
    od_request nolog = {dir, NULL, "auto", false, true, &o};
    cr_assert_eq(od_choose(&nolog, &start, &chosen), RT_EINVAL);          /* someone else's file */
    cr_assert(strstr(rt_errmsg(), "not empty (it holds train.jsonl)"), "%s", rt_errmsg());
    od_request none = {dir, p, "auto", false, false, &o};
    cr_assert_eq(od_choose(&none, &start, &chosen), RT_ENOTFOUND);
    char ck[512];
    sub(dir, "step-3", ck, sizeof ck);                                   /* no trainer_state.json */
    cr_assert_eq(od_choose(&r, &start, &chosen), RT_EINVAL);
    cr_assert(strstr(rt_errmsg(), "step-3, which is not a checkpoint"), "%s", rt_errmsg());
    rmdir(ck);
    /* od_prepare: stale .partial removed (with what it holds), log cut to step 2, the cut line gone */
    sub(dir, "step-5.partial", ck, sizeof ck);
    put(ck, "model.safetensors.tmp.99", "x");
    cr_assert_eq(od_prepare(dir, false, p, 2), 0, "%s", rt_errmsg());
    cr_assert(!rt_is_dir(ck));
    char *txt;
    size_t len;
    cr_assert_eq(rt_read_file(p, &txt, &len), 0);
    cr_assert_str_eq(txt, "{\"step\": 1}\n{\"step\": 2}\n");
    free(txt);
    cr_assert_eq(od_prepare(dir, false, p, 0), 0);                       /* a fresh start: empty */
    cr_assert_eq(rt_read_file(p, &txt, &len), 0);
    cr_assert_eq(len, 0);
    free(txt);
    unlink(p);
    rmdir(dir);
    free(dir);
}

Test(outdir, checkpoint_of_the_older_layout_resumes) {
    /* before the state moved out: trainer_state.json inside step-N, beside config.json */
    char *dir = tmp_dir(), ck[512];
    tr_options o = opts();
    sub(dir, "step-4", ck, sizeof ck);
    put(ck, "config.json", "{}\n");
    state(ck, "/d", "init:/c.json", 1e-3);
    od_request r = {dir, NULL, NULL, false, true, &o};
    char *start, *sd = tr_state_dir(ck);
    bool chosen;
    cr_assert_str_eq(sd, ck);
    free(sd);
    cr_assert_eq(od_choose(&r, &start, &chosen), 0, "%s", rt_errmsg());
    cr_assert_str_eq(start, ck);
    free(start);
    char *m = od_state_model(ck);
    cr_assert_str_eq(m, "init:/c.json");
    free(m);
    /* a newer model directory whose state is missing is not a checkpoint: step-4 stays the one */
    char ck2[512];
    sub(dir, "step-6", ck2, sizeof ck2);
    put(ck2, "config.json", "{}\n");
    cr_assert_eq(od_choose(&r, &start, &chosen), 0, "%s", rt_errmsg());
    cr_assert_str_eq(start, ck);
    free(start);
    cr_assert_eq(od_prepare(dir, true, NULL, 0), 0, "%s", rt_errmsg());
    cr_assert(!rt_is_dir(ck) && !rt_is_dir(ck2));
    rmdir(dir);
    free(dir);
}

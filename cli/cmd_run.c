/* cli/cmd_run.c — `retort run RECIPE.yaml`: the recipe's stages in order, resumably.
 *
 * eval/recipe.h parses and validates the recipe into a plan and keeps the state file;
 * here each stage to run is started as a child process of this same binary
 * (/proc/self/exe, behind the stage's launcher when it has one), its output streams
 * through, and the first failure stops the run with one line naming the stage. The child
 * is started with fork + exec rather than posix_spawn so that it can ask for SIGKILL when
 * the runner dies (PR_SET_PDEATHSIG): a killed runner never leaves a stage running on its
 * own, and a rerun never races an orphan for the same files.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/clock.h"
#include "core/status.h"
#include "eval/recipe.h"

static int mkdir_p(const char *path) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return -1;
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, 0755) && errno != EEXIST ? -1 : 0;
}

/* Runs launcher + exe + argv and waits. Returns the wait status, or -1 with *err set to
 * the errno of a failed start (fork, or exec of the launcher / binary). */
static int spawn_wait(const rc_stage *st, char **argv, const char *exe, int *err) {
    size_t n = st->n_launcher + 1;
    for (char **a = argv; *a; a++) n++;
    char **full = calloc(n + 1, sizeof *full);
    if (!full) { *err = ENOMEM; return -1; }
    size_t k = 0;
    for (size_t i = 0; i < st->n_launcher; i++) full[k++] = st->launcher[i];
    full[k++] = (char *)exe;
    for (char **a = argv; *a; a++) full[k++] = *a; /* argv[0] is the subcommand */
    full[k] = NULL;

    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC)) { *err = errno; free(full); return -1; }
    fflush(stdout);
    fflush(stderr);
    /* like system(3): while the stage runs, a terminal's Ctrl-C or Ctrl-\ reaches the stage
     * (same process group), which stops in its own way; the runner then reports it */
    struct sigaction ign = {0}, old_int, old_quit;
    ign.sa_handler = SIG_IGN;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGINT, &ign, &old_int);
    sigaction(SIGQUIT, &ign, &old_quit);
    pid_t parent = getpid(), pid = fork();
    if (pid < 0) {
        *err = errno;
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGQUIT, &old_quit, NULL);
        close(pfd[0]);
        close(pfd[1]);
        free(full);
        return -1;
    }
    if (pid == 0) {
        close(pfd[0]);
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGQUIT, &old_quit, NULL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127); /* the runner died before prctl */
        if (st->n_launcher) execvp(full[0], full);
        else execv(exe, full);
        int e = errno;
        ssize_t w = write(pfd[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    close(pfd[1]);
    int e = 0;
    ssize_t r;
    do r = read(pfd[0], &e, sizeof e);
    while (r < 0 && errno == EINTR);
    close(pfd[0]);
    free(full);
    int status, werr = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) { werr = errno; break; }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGQUIT, &old_quit, NULL);
    if (werr) { *err = werr; return -1; }
    if (r == (ssize_t)sizeof e) { *err = e; return -1; }
    return status;
}

typedef struct {
    int dry;
    const char *from, *only, *path;
    const char **sets;   /* [n_sets] --set KEY=VALUE, owned */
    size_t n_sets;
} run_args;

/* Returns 0 or an exit status (message printed; a->sets freed). */
static int parse_run_args(int argc, char **argv, run_args *a) {
    cli_getopt g;
    cli_getopt_init("run", 0, &g);
    *a = (run_args){.sets = calloc((size_t)argc, sizeof *a->sets)};
    if (!a->sets) { rt_fail(RT_ENOMEM, "out of memory"); return cli_fail("run"); }
    optind = 1;
    opterr = 0;
    int ch, rc = 0;
    while (!rc && (ch = getopt_long(argc, argv, g.shorts, g.opts, NULL)) != -1) {
        switch (ch) {
        case CO_RUN_DRY: a->dry = 1; break;
        case CO_RUN_FROM: a->from = optarg; break;
        case CO_RUN_ONLY: a->only = optarg; break;
        case CO_RUN_SET:
            if (!strchr(optarg, '=') || optarg[0] == '=') rc = cli_usage_error("run", "--set wants KEY=VALUE, not '%s'", optarg);
            else a->sets[a->n_sets++] = optarg;
            break;
        default: rc = cli_usage_error("run", "unknown option or missing value '%s'", argv[optind - 1]);
        }
    }
    if (!rc && optind >= argc) rc = cli_usage_error("run", "RECIPE.yaml is required");
    if (!rc && optind + 1 < argc) rc = cli_usage_error("run", "unexpected argument '%s'", argv[optind + 1]);
    if (!rc && a->from && a->only) rc = cli_usage_error("run", "--from and --only exclude each other");
    if (rc) { free(a->sets); a->sets = NULL; return rc; }
    a->path = argv[optind];
    return 0;
}

/* --from / --only STAGE → its index in *i_from / *i_only (else -1). */
static int find_selected(const rc_plan *p, const run_args *a, int *i_from, int *i_only) {
    *i_from = *i_only = -1;
    const char *want = a->from ? a->from : a->only;
    if (!want) return 0;
    int i = rc_find_stage(p, want);
    if (i < 0) {
        char names[512];
        size_t k = 0;
        names[0] = 0;
        for (size_t j = 0; j < p->n_stages && k + 64 < sizeof names; j++)
            k += (size_t)snprintf(names + k, sizeof names - k, "%s%s", j ? ", " : "", p->stages[j].name);
        return cli_usage_error("run", "%s: no stage named '%s' (stages: %s)", a->from ? "--from" : "--only", want, names);
    }
    if (a->from) *i_from = i;
    else *i_only = i;
    return 0;
}

/* --dry-run: the commands a run would start now, one per line; skipped stages as comments. */
static int dry_run(const rc_plan *p, const rc_state *state, const rc_action *act, const char *exe) {
    int status = EXIT_OK;
    for (size_t i = 0; i < p->n_stages && status == EXIT_OK; i++) {
        const rc_stage *st = &p->stages[i];
        if (act[i] == RC_SKIP) {
            printf("# %s: skipped (%s)\n", st->name,
                   rc_state_get(state, st) == RC_DONE ? "finished, unchanged" : "before the selected stage");
            continue;
        }
        char **rargv = NULL, *ck = NULL;
        if (rc_stage_argv(p, i, act[i] == RC_RESUME, false, &rargv, &ck)) { status = cli_fail("run"); break; }
        rc_stage shown = *st;
        shown.argv = rargv;
        for (shown.argc = 0; rargv[shown.argc]; shown.argc++) {}
        char *line = rc_command_line(&shown, exe);
        if (!line) { rt_fail(RT_ENOMEM, "out of memory"); status = cli_fail("run"); }
        else printf("%s\n", line);
        free(line);
        rc_argv_free(rargv);
        free(ck);
    }
    return status;
}

/* Runs stage i (act[i] RC_RUN or RC_RESUME) as a child and records it; *ran counts the done. */
static int run_stage(const rc_plan *p, rc_state *state, size_t i, rc_action act, const char *exe, size_t *ran) {
    const rc_stage *st = &p->stages[i];
    size_t n = p->n_stages;
    char **rargv = NULL, *ck = NULL;
    if (rc_stage_argv(p, i, act == RC_RESUME, true, &rargv, &ck)) return cli_fail("run");
    if (act == RC_RUN && st->train_log) unlink(st->train_log); /* a fresh run starts its log again */
    rc_stage shown = *st;
    shown.argv = rargv;
    for (shown.argc = 0; rargv[shown.argc]; shown.argc++) {}
    char *line = rc_command_line(&shown, exe);
    if (!line || rc_state_mark(state, p, i, false, 0)) {
        free(line);
        rc_argv_free(rargv);
        free(ck);
        return cli_fail("run");
    }
    if (ck) printf("[%zu/%zu] %s: resuming from %s\n", i + 1, n, st->name, ck);
    else if (act == RC_RESUME) printf("[%zu/%zu] %s: resuming (the stage continues what it had done)\n", i + 1, n, st->name);
    printf("[%zu/%zu] %s: %s\n", i + 1, n, st->name, line);
    free(line);
    free(ck);
    double ts = now_s();
    int err = 0, ws = spawn_wait(st, rargv, exe, &err);
    rc_argv_free(rargv);
    double secs = now_s() - ts;
    if (ws < 0) {
        fprintf(stderr, "retort: run: stage %s: cannot start %s: %s\n", st->name, st->n_launcher ? st->launcher[0] : exe,
                strerror(err));
        return EXIT_RUNTIME;
    }
    if (WIFSIGNALED(ws)) {
        fprintf(stderr, "retort: run: stage %s was killed by signal %d (%s) after %.1f s; rerun to resume it\n", st->name,
                WTERMSIG(ws), strsignal(WTERMSIG(ws)), secs);
        return EXIT_RUNTIME;
    }
    if (WEXITSTATUS(ws) != 0) {
        fprintf(stderr, "retort: run: stage %s failed (exit status %d) after %.1f s; fix it and rerun: finished stages are skipped\n",
                st->name, WEXITSTATUS(ws), secs);
        return EXIT_RUNTIME;
    }
    if (rc_state_mark(state, p, i, true, secs)) return cli_fail("run");
    printf("[%zu/%zu] %s: done in %.1f s\n", i + 1, n, st->name, secs);
    (*ran)++;
    return EXIT_OK;
}

/* Every stage to run, in order; the first failure stops. */
static int run_stages(const rc_plan *p, rc_state *state, const rc_action *act, int i_only, const char *exe) {
    size_t n = p->n_stages, first = n, last = 0;
    for (size_t i = 0; i < n; i++)
        if (act[i] != RC_SKIP) {
            if (first == n) first = i;
            last = i;
        }
    if (first == n) {
        printf("recipe %s: every stage is finished and unchanged (state: %s); --from STAGE reruns from STAGE\n", p->name,
               p->state_path);
        return EXIT_OK;
    }
    int status = EXIT_OK;
    if (rc_check_inputs(p, first, last)) status = cli_fail("run");
    if (status == EXIT_OK && mkdir_p(p->work_dir)) {
        rt_fail(RT_EIO, "cannot create work_dir %s: %s", p->work_dir, strerror(errno));
        status = cli_fail("run");
    }
    double t0 = now_s();
    size_t ran = 0, skipped = 0;
    if (status == EXIT_OK) printf("recipe %s: %zu stages, work_dir %s\n", p->name, n, p->work_dir);
    for (size_t i = 0; i < n && status == EXIT_OK; i++) {
        if (act[i] != RC_SKIP) {
            status = run_stage(p, state, i, act[i], exe, &ran);
            continue;
        }
        if (i_only < 0) {
            printf("[%zu/%zu] %s: skipped (%s)\n", i + 1, n, p->stages[i].name,
                   rc_state_get(state, &p->stages[i]) == RC_DONE ? "finished, unchanged" : "before --from");
            skipped++;
        }
    }
    if (status == EXIT_OK)
        printf("recipe %s: %zu stages run, %zu skipped, in %.1f s; state in %s\n", p->name, ran, skipped, now_s() - t0,
               p->state_path);
    fflush(stdout);
    return status;
}

int cmd_run(int argc, char **argv) {
    if (cli_wants_help("run", argc, argv)) return EXIT_OK;
    run_args a;
    int rc = parse_run_args(argc, argv, &a);
    if (rc) return rc;
    rc_plan *p;
    rc = rc_load(a.path, a.sets, a.n_sets, &p);
    free(a.sets);
    if (rc) return cli_fail("run");
    int i_from, i_only;
    if ((rc = find_selected(p, &a, &i_from, &i_only))) { rc_plan_free(p); return rc; }
    char exe[PATH_MAX];
    ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (el <= 0) {
        rt_fail(RT_EIO, "cannot find this program's path (/proc/self/exe): %s", strerror(errno));
        rc_plan_free(p);
        return cli_fail("run");
    }
    exe[el] = 0;
    rc_state *state;
    if (rc_state_load(p, &state)) { rc_plan_free(p); return cli_fail("run"); }
    rc_action *act = calloc(p->n_stages, sizeof *act);
    if (!act) { rc_state_free(state); rc_plan_free(p); rt_fail(RT_ENOMEM, "out of memory"); return cli_fail("run"); }
    rc_schedule(p, state, i_from, i_only, act);
    int status = a.dry ? dry_run(p, state, act, exe) : run_stages(p, state, act, i_only, exe);
    free(act);
    rc_state_free(state);
    rc_plan_free(p);
    return status;
}

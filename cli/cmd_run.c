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

int cmd_run(int argc, char **argv) {
    enum { O_DRY = 256, O_FROM, O_ONLY, O_SET };
    static const struct option opts[] = {{"dry-run", no_argument, 0, O_DRY}, {"from", required_argument, 0, O_FROM},
                                         {"only", required_argument, 0, O_ONLY}, {"set", required_argument, 0, O_SET},
                                         {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    if (cli_wants_help("run", argc, argv)) return EXIT_OK;
    int dry = 0;
    const char *from = NULL, *only = NULL;
    const char **sets = calloc((size_t)argc, sizeof *sets);
    size_t n_sets = 0;
    if (!sets) { rt_fail(RT_ENOMEM, "out of memory"); return cli_fail("run"); }
    optind = 1;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case O_DRY: dry = 1; break;
        case O_FROM: from = optarg; break;
        case O_ONLY: only = optarg; break;
        case O_SET:
            if (!strchr(optarg, '=') || optarg[0] == '=') {
                free(sets);
                return cli_usage_error("run", "--set wants KEY=VALUE, not '%s'", optarg);
            }
            sets[n_sets++] = optarg;
            break;
        default: free(sets); return cli_usage_error("run", "unknown option or missing value '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc) { free(sets); return cli_usage_error("run", "RECIPE.yaml is required"); }
    if (optind + 1 < argc) { free(sets); return cli_usage_error("run", "unexpected argument '%s'", argv[optind + 1]); }
    if (from && only) { free(sets); return cli_usage_error("run", "--from and --only exclude each other"); }
    const char *path = argv[optind];

    rc_plan *p;
    int rc = rc_load(path, sets, n_sets, &p);
    free(sets);
    if (rc) return cli_fail("run");
    int i_from = -1, i_only = -1;
    const char *want = from ? from : only;
    if (want) {
        int i = rc_find_stage(p, want);
        if (i < 0) {
            char names[512];
            size_t k = 0;
            names[0] = 0;
            for (size_t j = 0; j < p->n_stages && k + 64 < sizeof names; j++)
                k += (size_t)snprintf(names + k, sizeof names - k, "%s%s", j ? ", " : "", p->stages[j].name);
            rc_plan_free(p);
            return cli_usage_error("run", "%s: no stage named '%s' (stages: %s)", from ? "--from" : "--only", want, names);
        }
        if (from) i_from = i;
        else i_only = i;
    }
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
    size_t n = p->n_stages, first = n, last = 0;
    for (size_t i = 0; i < n; i++)
        if (act[i] != RC_SKIP) {
            if (first == n) first = i;
            last = i;
        }

    int status = EXIT_OK;
    if (dry) {
        /* the commands a run would start now, one per line; skipped stages as comments */
        for (size_t i = 0; i < n && status == EXIT_OK; i++) {
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
        free(act);
        rc_state_free(state);
        rc_plan_free(p);
        return status;
    }

    if (first == n) {
        printf("recipe %s: every stage is finished and unchanged (state: %s); --from STAGE reruns from STAGE\n", p->name,
               p->state_path);
        free(act);
        rc_state_free(state);
        rc_plan_free(p);
        return EXIT_OK;
    }
    if (rc_check_inputs(p, first, last)) status = cli_fail("run");
    if (status == EXIT_OK && mkdir_p(p->work_dir)) {
        rt_fail(RT_EIO, "cannot create work_dir %s: %s", p->work_dir, strerror(errno));
        status = cli_fail("run");
    }
    double t0 = now_s();
    size_t ran = 0, skipped = 0;
    if (status == EXIT_OK) printf("recipe %s: %zu stages, work_dir %s\n", p->name, n, p->work_dir);
    for (size_t i = 0; i < n && status == EXIT_OK; i++) {
        const rc_stage *st = &p->stages[i];
        if (act[i] == RC_SKIP) {
            if (i_only < 0) {
                printf("[%zu/%zu] %s: skipped (%s)\n", i + 1, n, st->name,
                       rc_state_get(state, st) == RC_DONE ? "finished, unchanged" : "before --from");
                skipped++;
            }
            continue;
        }
        char **rargv = NULL, *ck = NULL;
        if (rc_stage_argv(p, i, act[i] == RC_RESUME, true, &rargv, &ck)) { status = cli_fail("run"); break; }
        if (act[i] == RC_RUN && st->train_log) unlink(st->train_log); /* a fresh run starts its log again */
        rc_stage shown = *st;
        shown.argv = rargv;
        for (shown.argc = 0; rargv[shown.argc]; shown.argc++) {}
        char *line = rc_command_line(&shown, exe);
        if (!line || rc_state_mark(state, p, i, false, 0)) {
            free(line);
            rc_argv_free(rargv);
            free(ck);
            status = cli_fail("run");
            break;
        }
        if (ck) printf("[%zu/%zu] %s: resuming from %s\n", i + 1, n, st->name, ck);
        else if (act[i] == RC_RESUME) printf("[%zu/%zu] %s: resuming (the stage continues what it had done)\n", i + 1, n, st->name);
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
            status = EXIT_RUNTIME;
        } else if (WIFSIGNALED(ws)) {
            fprintf(stderr, "retort: run: stage %s was killed by signal %d (%s) after %.1f s; rerun to resume it\n", st->name,
                    WTERMSIG(ws), strsignal(WTERMSIG(ws)), secs);
            status = EXIT_RUNTIME;
        } else if (WEXITSTATUS(ws) != 0) {
            fprintf(stderr, "retort: run: stage %s failed (exit status %d) after %.1f s; fix it and rerun: finished stages are skipped\n",
                    st->name, WEXITSTATUS(ws), secs);
            status = EXIT_RUNTIME;
        } else if (rc_state_mark(state, p, i, true, secs)) {
            status = cli_fail("run");
        } else {
            printf("[%zu/%zu] %s: done in %.1f s\n", i + 1, n, st->name, secs);
            ran++;
        }
    }
    if (status == EXIT_OK)
        printf("recipe %s: %zu stages run, %zu skipped, in %.1f s; state in %s\n", p->name, ran, skipped, now_s() - t0,
               p->state_path);
    fflush(stdout);
    free(act);
    rc_state_free(state);
    rc_plan_free(p);
    return status;
}

/* cli/ranks.c — subcommands under mpirun (see ranks.h). */
#include "cli/ranks.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/status.h"

int cli_ranks_open(const char *name, cli_ranks *r) {
    *r = (cli_ranks){.saved_err = -1, .name = name};
    if (comm_open(COMM_AUTO, &r->c)) {
        fprintf(stderr, "retort: %s: %s\n", name, rt_errmsg());
        return EXIT_RUNTIME;
    }
    r->rank = comm_rank(r->c);
    r->size = comm_size(r->c);
    if (r->rank == 0) return 0;
    fflush(stdout);
    fflush(stderr);
    int null = open("/dev/null", O_WRONLY);
    if (null < 0) return 0;
    dup2(null, 1);
    r->saved_err = dup(2);
    dup2(null, 2);
    close(null);
    return 0;
}

void cli_ranks_speak(cli_ranks *r) {
    if (r->saved_err < 0) return;
    fflush(stderr);
    dup2(r->saved_err, 2);
    close(r->saved_err);
    r->saved_err = -1;
}

int cli_ranks_agree(cli_ranks *r, int rc) {
    if (r->size == 1) return rc;
    int32_t first = rc ? r->rank : r->size;
    if (comm_allreduce(r->c, &first, &first, 1, RT_DT_I32, COMM_MIN)) {
        cli_ranks_speak(r);
        fprintf(stderr, "retort: %s: rank %d of %d: %s\n", r->name, r->rank, r->size, rt_errmsg());
        comm_abort(r->c, EXIT_RUNTIME);
        return EXIT_RUNTIME;
    }
    if (first == r->size) return 0;
    if (first == r->rank && r->rank > 0) {
        cli_ranks_speak(r);
        fprintf(stderr, "retort: %s: rank %d of %d: %s\n", r->name, r->rank, r->size, rt_errmsg());
    }
    return rc ? rc : EXIT_RUNTIME;
}

int cli_ranks_threads(cli_ranks *r, double threads) {
    if (threads > 0 || r->size == 1) return (int)threads;
    int64_t t = 0;
    if (r->rank == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        t = cpus / comm_local_size(r->c);
        if (t < 1) t = 1;
    }
    if (comm_broadcast(r->c, &t, 1, RT_DT_I64, 0)) return -1;
    return (int)t;
}

void cli_ranks_close(cli_ranks *r) {
    cli_ranks_speak(r);
    fflush(stdout);
    comm_close(r->c);
    r->c = NULL;
}

/* cli/ranks.c — subcommands under mpirun (see ranks.h). */
#include "cli/ranks.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/model_check.h"
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

int cli_load_teacher(cli_ranks *r, const char *dir, tp_pool *pool, te_device dev, double gpu_memory_fraction,
                     bool no_cuda_graphs, te_model **out) {
    te_load_opts o = {.pool = pool, .comm = r->c, .device = dev, .gpu = -1, .gpu_memory_fraction = gpu_memory_fraction,
                      .no_cuda_graphs = no_cuda_graphs};
    if (te_model_load_opts(dir, &o, out)) return cli_fail(r->name);
    /* NaN or Inf weights: one line at load (core/model_check.h), whatever the device */
    if (r->rank == 0 && mk_check_weights(dir, pool)) return cli_fail(r->name);
    return 0;
}

const char *cli_weights(char *buf, size_t n, const cli_ranks *r, te_device dev, const te_model *m) {
    double b = (double)te_model_resident_bytes(m);
    snprintf(buf, n, "on %s, %.*f %s of weights in memory%s", te_device_name(dev), b < 1e9 ? 1 : 2,
             b < 1e9 ? b / 1e6 : b / 1e9, b < 1e9 ? "MB" : "GB", r->size > 1 ? " (rank 0's part)" : "");
    return buf;
}

int cli_parse_device(const char *cmd, const char *arg, te_device *out) {
    if (te_device_parse(arg, out)) return cli_usage_error(cmd, "--device wants cpu or cuda, not '%s'", arg);
    return 0;
}

int cli_parse_gpu_fraction(const char *cmd, const char *arg, double *out) {
    char *end;
    double v = strtod(arg, &end);
    if (end == arg || *end || !(v > 0 && v <= 1))
        return cli_usage_error(cmd, "--gpu-memory-fraction wants a number in (0, 1], not '%s'", arg);
    *out = v;
    return 0;
}

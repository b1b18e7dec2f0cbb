/* cli/ranks.h — what a subcommand needs to run under mpirun with a lockstep engine
 * (`retort generate`, `retort serve`; teacher/parallel_engine.h).
 *
 * Every rank runs the subcommand with the same arguments. cli_ranks_open() opens the
 * communicator (core/comm.h, COMM_AUTO: MPI under mpirun, else one rank) and silences ranks
 * > 0: their stdout for good (rank 0 alone writes output), their stderr until
 * cli_ranks_speak(), since their setup fails as rank 0's does and rank 0's line is enough.
 * cli_ranks_agree() is called by every rank after a setup phase with its status (0 or an exit
 * status, rank 0's message already printed): it returns 0 when every rank succeeded, else the
 * status every rank then returns; when rank 0 succeeded, the lowest failing rank prints
 * "retort: NAME: rank R of P: <message>", so one line is printed in all. It is a collective:
 * no rank is left waiting for one that gave up. cli_ranks_threads(): the worker threads,
 * --threads N, else one per CPU alone, or rank 0's node's CPUs over its ranks, broadcast so
 * that every rank uses the same count (replicated steps must round alike); -1 if that fails.
 * cli_ranks_close() restores stderr and closes the communicator. Mid-run failures are the
 * caller's: comm_abort, as the other ranks may wait in a collective.
 */
#ifndef RT_CLI_RANKS_H
#define RT_CLI_RANKS_H

#include "core/comm.h"
#include "core/threadpool.h"
#include "eval/cmdopts.h"
#include "teacher/engine.h"

typedef struct {
    rt_comm *c;
    int rank, size;
    int saved_err;   /* ranks > 0: stderr while it points at /dev/null, else -1 */
    const char *name;
} cli_ranks;

int cli_ranks_open(const char *name, cli_ranks *r);   /* 0, or an exit status (message printed) */
void cli_ranks_speak(cli_ranks *r);
int cli_ranks_agree(cli_ranks *r, int rc);
int cli_ranks_threads(cli_ranks *r, double threads);
/* The in-process teacher on --device DEV (teacher/engine.h: te_model_load_opts), one GPU per
 * rank (its local rank); NaN or Inf weights are refused (core/model_check.h). 0, or an exit
 * status (message printed). cli_weights: "on DEV, X MB of weights in memory" (rank 0's part
 * when split) into buf, for the subcommand's first progress line: the size is reported once
 * setup has succeeded, and an error stays one line. */
int cli_load_teacher(cli_ranks *r, const char *dir, tp_pool *pool, te_device dev, double gpu_memory_fraction,
                     bool no_cuda_graphs, te_model **out);
/* the long option of --no-cuda-graphs in the subcommands' tables */
#define CLI_OPT_NO_CUDA_GRAPHS CO_NO_CUDA_GRAPHS   /* eval/cmdopts.h */
#define CLI_OPT_SPECULATIVE CO_SPECULATIVE         /* eval/cmdopts.h */
const char *cli_weights(char *buf, size_t n, const cli_ranks *r, te_device dev, const te_model *m);
/* --device / --gpu-memory-fraction values: 0, or a usage error's exit status (printed). */
int cli_parse_device(const char *cmd, const char *arg, te_device *out);
int cli_parse_gpu_fraction(const char *cmd, const char *arg, double *out);
void cli_ranks_close(cli_ranks *r);

#endif

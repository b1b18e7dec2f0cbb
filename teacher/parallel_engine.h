/* teacher/parallel_engine.h — the generation engine (teacher/engine.h) in lockstep over the
 * ranks of a parallel model (teacher/parallel.h): the piece `retort serve` and `retort
 * generate` need to run under mpirun.
 *
 * Every rank owns a te_engine over its te_model, created with the same te_opts (the same
 * tokenizer too: stop strings are matched on every rank; on_token may differ, e.g. NULL on the
 * followers); only rank 0 takes requests (the HTTP
 * service, the generate driver). Every rank calls pe_step() once per engine step. Rank 0
 * passes what changed since its last step — requests to submit, tags to cancel — or `last`
 * to end; the followers pass nothing. Rank 0's input is broadcast (one length, then one
 * byte message), every rank applies it to its own engine in the same order (te_submit of
 * each request, then te_cancel of each tag) and calls te_step. The parallel forward leaves
 * bit-identical logits on every rank, so all engines admit, sample, stop and finish the same
 * sequences with no further messages: results (and te_opts.on_token calls) happen on every
 * rank alike, and the caller acts on rank 0's. A request te_submit refuses is refused on
 * every rank; submit_rc (rank 0, n_submit entries, may be NULL) gets each te_submit status.
 * Followers loop until pe_step reports last:
 *
 *     for (bool last = false; !last;) { pe_step(c, e, NULL, NULL, &res, &n, &last); … }
 *
 * pe_follow() is that loop (results dropped: the followers act on nothing), and pe_end() is rank
 * 0's last step (pe_step with last). `retort generate` and `retort serve` under mpirun: rank 0
 * drives (teacher/driver.h with gd_opts.comm, the server's engine thread), the others call
 * pe_follow() and return when rank 0 ends.
 *
 * The message is the requests' bytes as laid out in memory (te_request, then its prompt,
 * stop ids and NUL-terminated stop strings): the ranks must run the same binary on machines
 * of one byte order, as they do under mpirun. Errors: te_step's, comm's; an error on one
 * rank only (out of memory) leaves the others waiting in the next collective.
 */
#ifndef RT_TEACHER_PARALLEL_ENGINE_H
#define RT_TEACHER_PARALLEL_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/comm.h"
#include "teacher/engine.h"

typedef struct {
    const te_request *submit;       /* [n_submit], borrowed for the call */
    size_t n_submit;
    const uint64_t *cancel;         /* [n_cancel] tags */
    size_t n_cancel;
    bool last;                      /* end: nothing is applied, no step is run */
} pe_input;

/* in: rank 0's changes (NULL on the followers; NULL on rank 0 = nothing changed). *last is
 * set on every rank when rank 0 ended; results as te_step's (none when last). */
int pe_step(rt_comm *c, te_engine *e, const pe_input *in, int *submit_rc, te_result **results, size_t *n_results,
            bool *last);

/* The followers' loop: pe_step with no input until rank 0 ends (0), or an error. */
int pe_follow(rt_comm *c, te_engine *e);
/* Rank 0: ends the followers' pe_follow (pe_step with last; no step is run, e is not used and
 * may be NULL — e.g. when rank 0 failed to start after the followers began to follow). */
int pe_end(rt_comm *c, te_engine *e);

#endif

/* student/outdir.h — the output directory of a training run: which checkpoint the run
 * starts from, and what is cleaned up before it does.
 *
 * A run writes its checkpoints to OUT/step-N, a Hugging Face model directory, with the
 * optimizer and trainer state in OUT/step-N.state beside it (student/train.h: tr_save,
 * whole or absent).
 * od_choose() decides where a run starts, reading OUT and nothing else (every rank may call
 * it; nothing is written):
 *   - resume names a checkpoint (not "auto"): that one, whatever OUT holds;
 *   - overwrite: fresh (od_prepare then deletes OUT's step-* entries);
 *   - else (resume NULL or "auto"): the newest complete checkpoint of OUT (step-N holding
 *     config.json and step-N.state trainer_state.json, or the older step-N holding both)
 *     when it was written by this same run — the same run.data and run.model (see
 *     tr_options), seed, and the options that shape the updates (batch, grad_accum, steps,
 *     lr, min_lr_ratio, warmup, schedule, weight_decay, clip, beta1, beta2, eps); fresh when
 *     OUT is absent or empty (the log file, step-*.partial and step-*.state aside) and
 *     fresh_ok (the caller has --init or --model); else RT_EINVAL (RT_ENOTFOUND
 *     when there is nothing to start from), with one message naming OUT, what it holds (the
 *     checkpoint and the first difference, or the first other entry) and what to do.
 * *start is owned by the caller (NULL: fresh); *chosen is true when the checkpoint was found
 * in OUT rather than named.
 *
 * od_prepare() (rank 0, before the first step): creates OUT, removes its stale
 * step-*.partial (saves that were killed) and, with overwrite, every step-* entry; and cuts
 * the log back to the lines whose "step" is ≤ done (the step the run starts from; 0 when
 * fresh), dropping a line cut short by a kill, so that a resumed run logs every step once.
 *
 * od_identity() gives prefix + the absolute form of path (the path itself when it cannot be
 * resolved), owned; od_state_model() the run.model a checkpoint records (owned; NULL when it
 * has none). Library code: nothing is printed.
 * Errors: RT_EINVAL, RT_ENOTFOUND (above), RT_EIO, RT_EFORMAT (a trainer_state.json that
 * does not parse), RT_ENOMEM.
 */
#ifndef RT_STUDENT_OUTDIR_H
#define RT_STUDENT_OUTDIR_H

#include <stdbool.h>
#include <stdint.h>

#include "student/train.h"

typedef struct {
    const char *out, *log;        /* log: NULL when none */
    const char *resume;           /* NULL or "auto": choose; else the checkpoint to continue */
    bool overwrite;
    bool fresh_ok;                /* there is something to start from (--init, --model) */
    const tr_options *o;          /* the run's options, with run_data / run_model set */
} od_request;

int od_choose(const od_request *r, char **start, bool *chosen);
int od_prepare(const char *out, bool overwrite, const char *log, int64_t done);
char *od_identity(const char *prefix, const char *path);
char *od_state_model(const char *ck);

#endif

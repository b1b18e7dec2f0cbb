/* eval/demo.h — the built-in end-to-end demo: `retort demo` (what `make demo` runs).
 *
 * dm_run() runs the whole pipeline from nothing in opts->dir (created; an earlier demo's
 * run.db there is removed first, so a rerun starts clean), through the same library code
 * paths as real runs:
 *   1. task      a synthetic reasoning task with checkable answers: two-step arithmetic
 *                word problems ("Ana has 7 pens, gets 5, then loses 3. How many now?")
 *                whose worked solution is
 *                "<think>\n7+5=12\n12-3=9\n</think>\n\n\boxed{9}"; drawn with the seed,
 *                split into train and test with no shared (numbers, operations) tuple;
 *                written as DIR/train.jsonl ({prompt, answer, solution}) and
 *                DIR/demo-test.jsonl ({prompt, answer});
 *   2. tokenizer DIR/tokenizer.json: byte-level BPE, the 256 byte tokens and no merges, with
 *                the added tokens <|endoftext|>, <|im_start|>, <|im_end|> (special) and
 *                <think>, </think> (not special); loaded with core/tokenizer.h;
 *   3. teacher   the train split imported into DIR/run.db (dataset/import.h, source
 *                "demo-train", the solution kept in the prompt's metadata); prompt + solution
 *                rendered with the qwen template and packed (dataset/render.h) into
 *                DIR/teacher-data/; a dense qwen2-shaped teacher trained from random weights
 *                (student/train.h) and saved to DIR/teacher/ (HF safetensors), its log in
 *                DIR/teacher-train.jsonl;
 *   4. generate  k samples per train prompt at temperature 0.6, top-p 0.95 with the engine
 *                (teacher/engine.h), stored in run.db as samples of teacher "demo-teacher";
 *   5. distill   filters (filters/pipeline.h: verify, format, language, readability,
 *                repetition, length, decontamination against DIR/demo-test.jsonl, dedup),
 *                snapshot "demo" (one shortest passing sample per prompt), exported as shards
 *                to DIR/student-data/ (with the teacher's top-8 logprobs per generated token),
 *                a smaller student trained on them into DIR/student/ (SFT), and the same
 *                student, initial weights, data order and steps with logit distillation
 *                (student/train.h kd_alpha 0.5, forward KL) into DIR/student-kd/;
 *   6. evaluate  teacher and students on the test split (eval/run.h; runs "teacher",
 *                "student" and "student-kd", benchmark "demo-test"), the comparison (eval/compare.h), and
 *                DIR/report.html (eval/report.h).
 * Every random choice derives from opts->seed, so a seed gives the same task, weights,
 * samples and scores (with the same thread count: float sums are split across threads).
 *
 * The caller makes BLAS single-threaded first (kernels/matmul.h mm_blas_single_thread(), as
 * retort train does): the thread pool of opts->threads is the only parallelism.
 * Library code: nothing is printed. opts->on_event (may be NULL) is called on the calling
 * thread as stages start and end and with notes along the way.
 *
 * Ownership: dm_result_free() releases the result's compare object. Errors: RT_EIO
 * (the directory or a file), and those of every stage (each wrapped with the stage's
 * name), RT_ENOMEM.
 */
#ifndef RT_EVAL_DEMO_H
#define RT_EVAL_DEMO_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { DM_TASK, DM_TOKENIZER, DM_TEACHER, DM_GENERATE, DM_DISTILL, DM_EVALUATE, DM_N_STAGES } dm_stage;

const char *dm_stage_name(dm_stage s); /* "task", "tokenizer", … */

typedef enum {
    DM_EV_BEGIN, /* a stage starts: text says what it will do */
    DM_EV_NOTE,  /* a line of progress or a result within the stage */
    DM_EV_END    /* a stage ended: seconds is its wall time, text its summary */
} dm_event_kind;

typedef struct {
    dm_event_kind kind;
    dm_stage stage;
    double seconds;   /* DM_EV_END: the stage's wall time; else the time since the run began */
    const char *text; /* borrowed for the call */
} dm_event;

typedef struct {
    uint64_t seed;
    bool quick;   /* the reduced size the tests run (about 2 minutes on 2 cores) */
    const char *dir;
    int threads;  /* 0: one per online CPU */
    void (*on_event)(void *ctx, const dm_event *ev);
    void *ctx;
} dm_options;

typedef struct {
    size_t train, test;                   /* questions per split */
    int64_t teacher_params, student_params;
    size_t samples, selected;             /* teacher samples generated, samples in the snapshot */
    size_t filtered_out;                  /* samples failing some filter */
    double teacher_pass1, student_pass1;  /* on the test split */
    double teacher_cons, student_cons;
    double student_kd_pass1, student_kd_cons;   /* the KD student (same snapshot and steps, logit distillation) */
    double seconds[DM_N_STAGES], total_seconds;
    json_t *compare;                      /* ev_compare_json() of the two runs (owned) */
} dm_result;

int dm_run(const dm_options *opts, dm_result *out);
void dm_result_free(dm_result *r); /* NULL is fine */

#endif

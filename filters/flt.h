/* filters/flt.h — quality filters for one generated sample: format, language mix,
 * readability, repetition / degeneration, length.
 *
 * Each filter reads a flt_sample and fills one flt_verdict: pass or fail, a score (what
 * it measured, see below) and a one-line human-readable reason ("ok: …" when it passes).
 * flt_run() runs the enabled filters in flt_kind order and writes one verdict each.
 *
 *   format       exactly one well-formed open…close thinking block (tags configurable),
 *                nothing but whitespace before it, a non-empty answer after it, a final
 *                answer in the answer (\boxed{}, "#### N", "the answer is …"); a sample
 *                with finish_reason "length" fails as truncated.      score: 1 or 0
 *   language     the share of letters (outside math, commands and code) of the thinking
 *                and of the answer written in the prompt's script (Latin, CJK, Cyrillic,
 *                Greek, Arabic, Hebrew, Devanagari, Thai, …); the reference script is
 *                the prompt's, or the sample's own when there is no prompt.
 *                                                      score: the lower of the two shares
 *   readability  the longest paragraph (blank-line separated) in characters; a fenced
 *                code block (```) in a task that is not about code.
 *                                                      score: longest paragraph, chars
 *   repetition   Gopher's duplicate-line fraction and duplicate-line character fraction,
 *                top 2/3/4-gram character fractions, duplicated 5..10-gram character
 *                fractions; the longest repeated substring; the zstd compression ratio
 *                (compressed / original bytes, low means repetitive).
 *                       score: the worst measure relative to its limit (≥ 1 fails)
 *   length       token counts of thinking and answer (given by the caller, or estimated
 *                as whitespace-separated words) against minimums and maximums.
 *                                                      score: thinking + answer tokens
 *
 * No allocation survives a call; no global state. Errors: RT_EINVAL (bad config),
 * RT_ENOMEM. Malformed samples are verdicts, never errors.
 */
#ifndef RT_FILTERS_FLT_H
#define RT_FILTERS_FLT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { FLT_FORMAT, FLT_LANGUAGE, FLT_READABILITY, FLT_REPETITION, FLT_LENGTH, FLT_COUNT } flt_kind;

const char *flt_name(flt_kind k); /* "format", "language", … */

typedef struct {
    const char *prompt;         /* may be NULL */
    const char *text;           /* the whole completion: thinking block and answer */
    const char *finish_reason;  /* "stop", "length", … or NULL */
    bool code_task;             /* the prompt asks for code: code blocks are fine */
    int64_t think_tokens;       /* < 0: estimate from words */
    int64_t answer_tokens;      /* < 0: estimate from words */
} flt_sample;

typedef struct {
    flt_kind kind;
    bool pass;
    double score;
    char reason[256];
} flt_verdict;

typedef struct {
    unsigned enabled;                 /* bit (1u << flt_kind) per filter; default all */
    /* format */
    const char *think_open;           /* default "<think>" */
    const char *think_close;          /* default "</think>" */
    bool open_tag_optional;           /* the template already opened the block */
    bool require_final_answer;        /* default true */
    /* language */
    double min_script_share;          /* default 0.9 */
    int min_letters;                  /* shorter parts are not judged (default 20) */
    /* readability */
    size_t max_paragraph_chars;       /* default 3000 */
    bool allow_code_blocks;           /* even in a non-code task (default false) */
    /* repetition (Gopher's defaults; 0 disables a measure) */
    double max_dup_line_frac;         /* 0.30 */
    double max_dup_line_char_frac;    /* 0.20 */
    double max_top_ngram_char_frac[3];/* n = 2, 3, 4: 0.20, 0.18, 0.16 */
    double max_dup_ngram_char_frac[6];/* n = 5..10: 0.15, 0.14, 0.13, 0.12, 0.11, 0.10 */
    size_t max_repeated_substring;    /* characters (default 1000) */
    double min_compression_ratio;     /* default 0.10, judged from min_compress_bytes up */
    size_t min_compress_bytes;        /* default 2000 */
    /* length (0: no limit) */
    int64_t min_think_tokens, max_think_tokens, min_answer_tokens, max_answer_tokens;
} flt_config;

void flt_config_default(flt_config *c);

/* Thinking block and answer of a completion, as [begin, end) offsets into text: found is
 * false when there is no well-formed block (then the answer is the whole text). */
typedef struct {
    bool found;
    size_t think_b, think_e, answer_b, answer_e;
} flt_split;
void flt_split_text(const flt_config *c, const char *text, flt_split *out);

int flt_format(const flt_config *c, const flt_sample *s, flt_verdict *v);
int flt_language(const flt_config *c, const flt_sample *s, flt_verdict *v);
int flt_readability(const flt_config *c, const flt_sample *s, flt_verdict *v);
int flt_repetition(const flt_config *c, const flt_sample *s, flt_verdict *v);
int flt_length(const flt_config *c, const flt_sample *s, flt_verdict *v);

/* Runs the enabled filters; out has room for FLT_COUNT verdicts, *n_out gets how many
 * were written. */
int flt_run(const flt_config *c, const flt_sample *s, flt_verdict *out, size_t *n_out);

/* ---- measures, exposed for tests and for callers that want the numbers ---- */
typedef enum {
    FLT_SCRIPT_OTHER, FLT_SCRIPT_LATIN, FLT_SCRIPT_CJK, FLT_SCRIPT_CYRILLIC, FLT_SCRIPT_GREEK,
    FLT_SCRIPT_ARABIC, FLT_SCRIPT_HEBREW, FLT_SCRIPT_DEVANAGARI, FLT_SCRIPT_THAI, FLT_SCRIPT_COUNT
} flt_script;
const char *flt_script_name(flt_script s);
/* Letters per script in text[0..len) (math spans, \commands and code blocks skipped). */
void flt_script_counts(const char *text, size_t len, size_t counts[FLT_SCRIPT_COUNT]);

typedef struct {
    double dup_line_frac, dup_line_char_frac;
    double top_ngram_char_frac[3];   /* n = 2, 3, 4 */
    double dup_ngram_char_frac[6];   /* n = 5..10 */
    size_t longest_repeat;           /* bytes */
    double compression_ratio;        /* zstd level 3: compressed / original (1 for empty) */
} flt_repeat_stats;
int flt_repeat_measure(const char *text, size_t len, flt_repeat_stats *out);

/* Length of the longest substring that occurs at least twice (occurrences may overlap). */
int flt_longest_repeat(const char *text, size_t len, size_t *out);

#endif

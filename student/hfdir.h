/* student/hfdir.h — the Hugging Face files of a model directory besides its config and
 * weights: tokenizer.json, tokenizer_config.json, special_tokens_map.json and
 * generation_config.json, so that transformers' AutoTokenizer / AutoModelForCausalLM and
 * GenerationConfig load the directory as it is (local_files_only).
 *
 * hd_write() writes them into dir (which holds config.json already):
 *   - tokenizer.json: a byte copy of s->tokenizer;
 *   - tokenizer_config.json: s->tokenizer_config (the training tokenizer's) with its
 *     chat_template when it has one, else a minimal one (tokenizer_class
 *     PreTrainedTokenizerFast); without a chat_template, the Jinja text of the built-in
 *     template s->template_name (the same text as core/chat_template renders, for every
 *     conversation but one ending in an assistant turn with reasoning, whose thinking the
 *     Jinja drops as the models' own templates do); bos/eos/pad tokens filled in where
 *     absent: eos is the
 *     template's end-of-turn marker (s->template_name: deepseek-r1 <｜end▁of▁sentence｜>,
 *     qwen <|im_end|>, llama3 <|eot_id|>) when the tokenizer has it;
 *   - special_tokens_map.json: those bos/eos/pad tokens;
 *   - generation_config.json: s->generation_config's keys (the start model's defaults) when
 *     given; then, when s->sampling is known, the teacher's sampling defaults replace its
 *     sampling keys (do_sample, temperature, top_p, top_k, min_p; max_new_tokens added);
 *     then bos_token_id and eos_token_id: the model config's
 *     eos ids, the tokenizer's eos and the template's end-of-turn id (a list when several).
 * With s NULL or s->tokenizer NULL only generation_config.json is written (from the model
 * config's ids). Files are written atomically. Library code: nothing is printed.
 * hd_source_from() fills a source from what a training run has: a start model directory
 * (its tokenizer.json, tokenizer_config.json, generation_config.json when present), else
 * the index.json of packed shards (the "tokenizer" and "template" that `retort pack`
 * recorded; tokenizer_config.json beside that tokenizer.json; and its "generation_config",
 * the teacher's sampling defaults when pack or export knew them); a tokenizer given
 * explicitly wins. Strings are owned by the source (hd_source_free; NULL fine).
 * Errors: RT_EIO, RT_EFORMAT (a JSON file that does not parse, or a tokenizer that does not
 * load), RT_ENOMEM.
 */
#ifndef RT_STUDENT_HFDIR_H
#define RT_STUDENT_HFDIR_H

#include <jansson.h>

typedef struct hd_source {
    char *tokenizer;            /* tokenizer.json; NULL: unknown */
    char *tokenizer_config;     /* tokenizer_config.json beside it; NULL: none */
    char *template_name;        /* built-in template the data was rendered with; NULL: unknown */
    char *generation_config;    /* generation_config.json whose defaults are kept; NULL: none */
    json_t *sampling;           /* the teacher's sampling defaults (GenerationConfig keys); NULL: unknown */
} hd_source;

/* model_dir: the model the run starts from (NULL: random init); data: shards' file or
 * directory; tokenizer: explicit tokenizer.json (NULL: found as above). */
int hd_source_from(const char *model_dir, const char *data, const char *tokenizer, hd_source *out);
void hd_source_free(hd_source *s);
/* The end-of-turn marker of a built-in template name; NULL when unknown. */
const char *hd_end_of_turn(const char *template_name);
int hd_write(const char *dir, const hd_source *s, const json_t *model_config);

#endif

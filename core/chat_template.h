/* core/chat_template.h — native chat templates (no Jinja engine) with assistant loss masks.
 *
 * Three templates, each rendering exactly the text transformers' apply_chat_template
 * (tokenize=False) renders with the model's own tokenizer_config.json chat_template:
 *   CT_DEEPSEEK_R1 "deepseek-r1": <｜begin▁of▁sentence｜>, system prompts joined by "\n\n",
 *                  <｜User｜>…, <｜Assistant｜>…<｜end▁of▁sentence｜>; earlier assistant turns
 *                  keep only the text after their last </think>; the generation prompt is
 *                  "<｜Assistant｜><think>\n" (DeepSeek-R1's template).
 *   CT_QWEN        "qwen": ChatML <|im_start|>ROLE\n…<|im_end|>\n; without a leading system
 *                  message Qwen2.5's default system prompt is inserted (Qwen2.5-Instruct's
 *                  template).
 *   CT_LLAMA3      "llama3": <|begin_of_text|>, <|start_header_id|>ROLE<|end_header_id|>\n\n,
 *                  content trimmed, <|eot_id|> (Llama 3.1's template as shipped in
 *                  shared/assets, no default system prompt).
 * Roles are "system", "user" and "assistant"; anything else is RT_EINVAL. content must
 * not be NULL. reasoning_content (NULL when absent) is the assistant's thinking: when the
 * conversation ends with an assistant message (the turn being trained), that message's
 * reasoning_content is rendered as "<think>\nR\n</think>\n\n" before its content, and for
 * deepseek-r1 its content keeps any <think> block. Earlier assistant turns ignore
 * reasoning_content (deepseek-r1 also strips their thinking, as R1's template does). This
 * is the one deliberate difference from the Jinja templates, which drop the thinking of
 * the final turn too and so would train on answers only.
 *
 * ct_render_text() writes the text (*text malloc'd, NUL-terminated, caller frees).
 * ct_render() also tokenizes it with t (the text is encoded as a whole, so the ids equal
 * tok_encode(text, add_special_tokens=false)) and gives a per-token mask: 1 for tokens of
 * assistant content, including the turn's end-of-turn token (<｜end▁of▁sentence｜>,
 * <|im_end|>, <|eot_id|>); 0 for everything else (role headers, user and system text, the
 * generation prompt). A token is 1 when any of its bytes lies in assistant content. *ids
 * and *mask are malloc'd arrays of *n_tokens; caller frees both. A conversation with
 * assistant turns whose mask comes out all zero is RT_EINVAL (it would train on nothing).
 * Errors: RT_EINVAL, RT_ENOMEM, and tok_encode's.
 *
 * ct_template — the template a model actually ships: the `chat_template` string of its
 * tokenizer_config.json, rendered by core/jinja.h with the context transformers gives it
 * (messages, add_generation_prompt, tools = documents = none, and the special tokens
 * bos_token, eos_token, pad_token, unk_token when the config names them), or one of the
 * built-in kinds above as a named fallback.
 *   ct_template_from_config() reads tokenizer_config.json (RT_ENOTFOUND when it has no
 *   chat_template string; a list of named templates takes the one named "default").
 *   ct_template_from_jinja() compiles src with the special tokens of cfg (an object shaped
 *   like tokenizer_config.json; NULL for none).
 *   ct_template_open(spec, tokenizer_dir) resolves a --chat-template value: "auto" (or NULL)
 *   is tokenizer_dir/tokenizer_config.json's chat_template, else RT_ENOTFOUND;
 *   "deepseek-r1"/"qwen"/"llama3" a built-in; anything else a file: a tokenizer_config.json
 *   (JSON with chat_template) or a raw Jinja template (.jinja), whose special tokens come
 *   from tokenizer_dir's config when present.
 * Jinja masks: assistant turn i covers, in the full rendering T, the bytes from
 *   len(render(m[0..i))) + H to len(render(m[0..i])) less trailing whitespace, where H is the
 *   length of the common prefix of what the generation prompt adds and what turn i adds
 *   (the role header: "<|im_start|>assistant\n", "<｜Assistant｜>", …). Both renderings must
 *   be prefixes of T; a template that renders an earlier turn differently once later turns
 *   follow (Qwen3 drops the thinking of turns before the last user message) gives
 *   RT_EUNSUPPORTED for that conversation unless the turn has no thinking to drop.
 * Reasoning: ct_template_render_text() passes reasoning_content to the template as transformers
 *   does. ct_template_render() (ids and masks, what training uses) additionally keeps the final
 *   assistant turn's reasoning when the template never reads reasoning_content (Qwen2.5's,
 *   Llama's): that turn's content becomes "<think>\nR\n</think>\n\n" + content first. Templates
 *   that cut everything before "</think>" (DeepSeek-R1's and the distills') still drop it.
 * ct_template_check_tokenizer() is the agreement check: every marker the template writes
 *   (the <…> / <|…|> / <｜…｜> literals of its text, and its special tokens) must encode
 *   to one special token of t; otherwise RT_EINVAL naming the first marker that does not.
 * Errors: as above, plus jj_parse()/jj_render()'s and RT_EIO/RT_EFORMAT reading files.
 */
#ifndef RT_CHAT_TEMPLATE_H
#define RT_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CT_DEEPSEEK_R1, CT_QWEN, CT_LLAMA3 } ct_kind;

int ct_parse_kind(const char *name, ct_kind *out);        /* "deepseek-r1", "qwen", "llama3"; else RT_EINVAL */
const char *ct_kind_name(ct_kind k);

typedef struct { const char *role; const char *content; const char *reasoning_content; } ct_message;

int ct_render_text(ct_kind k, const ct_message *m, size_t n, bool add_generation_prompt, char **text);
int ct_render(const tok_tokenizer *t, ct_kind k, const ct_message *m, size_t n, bool add_generation_prompt,
              int32_t **ids, uint8_t **mask, size_t *n_tokens);

typedef struct ct_template ct_template;   /* owned by its creator; ct_template_free() */

int ct_template_builtin(ct_kind k, ct_template **out);
const ct_template *ct_builtin(ct_kind k);   /* a static built-in (ct_template_free ignores it); NULL if bad */
/* The built-in kind whose markers t has (<｜Assistant｜>, <|im_start|>, <|start_header_id|>);
 * RT_ENOTFOUND when none. The one guess every command uses when no template is given. */
int ct_guess_kind(const tok_tokenizer *t, ct_kind *out);
/* What every command does with --template: spec "auto" or NULL is the chat_template of the
 * tokenizer_config.json beside tokenizer_json (a tokenizer.json path or its directory), else
 * ct_guess_kind(t); any other spec as ct_template_open(). When t is given the result must pass
 * ct_template_check_tokenizer(t). */
int ct_template_resolve(const char *spec, const char *tokenizer_json, const tok_tokenizer *t, ct_template **out);
/* The end-of-turn text: the built-in's, or a Jinja template's eos_token (NULL when none). */
const char *ct_template_eot(const ct_template *ct);
int ct_template_from_jinja(const char *src, const json_t *cfg, ct_template **out);
int ct_template_from_config(const char *tokenizer_config_path, ct_template **out);
int ct_template_open(const char *spec, const char *tokenizer_dir, ct_template **out);
const char *ct_template_name(const ct_template *ct);   /* "deepseek-r1", …, or "jinja" */
int ct_template_render_text(const ct_template *ct, const ct_message *m, size_t n, bool add_generation_prompt,
                            char **text);
int ct_template_render(const tok_tokenizer *t, const ct_template *ct, const ct_message *m, size_t n,
                       bool add_generation_prompt, int32_t **ids, uint8_t **mask, size_t *n_tokens);
int ct_template_check_tokenizer(const ct_template *ct, const tok_tokenizer *t);
void ct_template_free(ct_template *ct);   /* NULL is fine */

#ifdef __cplusplus
}
#endif

#endif

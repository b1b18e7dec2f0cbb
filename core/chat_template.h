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
 */
#ifndef RT_CHAT_TEMPLATE_H
#define RT_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

#ifdef __cplusplus
}
#endif

#endif

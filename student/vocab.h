/* student/vocab.h — add special tokens to a model directory's tokenizer and grow its
 * embeddings and LM head to match, as DeepSeek-R1-Distill-Qwen/Llama did with R1's markers.
 *
 * vb_template_tokens() lists the tokens a built-in chat template (core/chat_template.h)
 * renders as single tokens: deepseek-r1 <｜begin▁of▁sentence｜> <｜end▁of▁sentence｜>
 * <｜User｜> <｜Assistant｜> (and <think> </think>, added as ordinary added tokens); qwen
 * <|im_start|> <|im_end|>; llama3 <|begin_of_text|> <|start_header_id|> <|end_header_id|>
 * <|eot_id|>. Static strings; RT_EINVAL for another name.
 * vb_tokenizer_tokens() lists the special added tokens of a tokenizer.json (owned by *out,
 * vb_tokens_free).
 *
 * vb_resize() reads model_dir (config.json, safetensors, tokenizer.json; tokenizer_config.json
 * and generation_config.json when present) and writes out_dir, a complete model directory
 * (student/hfdir.h) where every token of tokens that the tokenizer does not hold yet is an
 * added token with the next free id (the tokenizer's largest id + 1, in the order given;
 * special as given, normalized false), listed in tokenizer_config.json's added_tokens_decoder
 * too. When the new ids pass the config's vocab_size, embed_tokens (and an untied lm_head)
 * gets rows up to the new size, each the mean of all the old rows (transformers'
 * resize_token_embeddings with mean_resizing, without its 1e-9-scaled noise; summed in f64,
 * stored in the tensor's dtype); old rows are unchanged, and so are rows the config had
 * beyond the tokenizer (they take the new ids). config.json is the source's with vocab_size
 * updated. The model is streamed, never loaded: the source safetensors stay mapped (sm_open
 * checks them against the architecture first) and each tensor is written in turn, every
 * one but the grown ones byte for byte in its stored dtype, the mapped pages given back
 * once written (st_drop); the one buffer is the largest grown tensor (V2 × hidden × its
 * element size). The weights are sharded as sm_save_sharded shards them: at most
 * max_shard_bytes a shard (≤ 0: SM_SHARD_BYTES, 5 GB), model-0000k-of-0000n.safetensors and
 * model.safetensors.index.json, or one model.safetensors when everything fits.
 * out_dir must not exist yet, or be empty; with overwrite the files in it are removed first
 * (a directory holding subdirectories is still refused). rep says what happened.
 * Errors: RT_ENOTFOUND (no tokenizer.json in model_dir), RT_EINVAL (out_dir not empty),
 * RT_EFORMAT, RT_EIO, RT_ENOMEM; the model's loading errors.
 */
#ifndef RT_STUDENT_VOCAB_H
#define RT_STUDENT_VOCAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *text;
    bool special;
} vb_token;

typedef struct {
    size_t added;                 /* tokens added (the others were there already) */
    int64_t first_id;             /* id of the first added token; −1 when none */
    int64_t old_vocab, new_vocab; /* the config's vocab_size before and after */
} vb_report;

int vb_template_tokens(const char *template_name, const vb_token **out, size_t *n);
int vb_tokenizer_tokens(const char *tokenizer_json, vb_token **out, size_t *n);
void vb_tokens_free(vb_token *t, size_t n);
int vb_resize(const char *model_dir, const vb_token *tokens, size_t n, const char *out_dir, bool overwrite,
              int64_t max_shard_bytes, vb_report *rep);

#endif

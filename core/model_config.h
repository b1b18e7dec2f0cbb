/* core/model_config.h — Hugging Face config.json → the model shape retort computes with.
 *
 * mc_parse() reads the fields that change the math for model_type "llama", "qwen2",
 * "qwen3" (dense: an RMSNorm over each head of q and k before RoPE, q_norm/k_norm [head_dim],
 * head_dim its own field, biases only with attention_bias) and "deepseek_v3" (both the older rope_theta/rope_scaling and transformers 5's
 * rope_parameters spellings); anything else is RT_EUNSUPPORTED. Values are checked for
 * sense (positive sizes: a negative one is "invalid", an absent required one "missing";
 * heads divisible by KV heads, known rope and quantization types, every eos_token_id in
 * [0, vocab_size)).
 *
 * mc_expected_tensors() lists every tensor the architecture needs with its shape and role,
 * in checkpoint order. mc_param_count() sums them (without FP8 scale tensors).
 * Optional tensors: the MTP layers of DeepSeek-V3 (group MC_GROUP_MTP, all or none) and a
 * stored lm_head when embeddings are tied (MC_GROUP_TIED_HEAD).
 * Errors: RT_EFORMAT (message names the field), RT_EUNSUPPORTED, RT_EIO, RT_ENOMEM.
 */
#ifndef RT_MODEL_CONFIG_H
#define RT_MODEL_CONFIG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { MC_ARCH_LLAMA, MC_ARCH_QWEN2, MC_ARCH_DEEPSEEK_V3, MC_ARCH_QWEN3 } mc_arch;
typedef enum { MC_ROPE_DEFAULT, MC_ROPE_LINEAR, MC_ROPE_LLAMA3, MC_ROPE_YARN } mc_rope_type;

typedef struct {
    mc_rope_type type;
    double theta;
    double factor;                       /* linear, llama3, yarn */
    double low_freq_factor, high_freq_factor;       /* llama3 */
    int64_t original_max_position_embeddings;       /* llama3, yarn */
    double beta_fast, beta_slow, mscale, mscale_all_dim; /* yarn */
    double attention_factor;             /* yarn: 0 when not given (derived from mscale) */
} mc_rope;

typedef struct {
    bool fp8;                            /* quant_method "fp8" */
    int block_rows, block_cols;          /* weight_block_size, e.g. 128×128 */
    bool dynamic_activations;            /* activation_scheme "dynamic" */
} mc_quant;

typedef struct {
    mc_arch arch;
    char model_type[32];
    char architecture[64];               /* architectures[0], or the usual class name */
    int64_t vocab_size, hidden_size, intermediate_size, num_hidden_layers;
    int64_t num_attention_heads, num_key_value_heads, head_dim;
    int64_t max_position_embeddings;
    double rms_norm_eps;
    bool tie_word_embeddings;
    bool attention_bias;                 /* q/k/v (and o for llama, qwen3) biases; qwen2: q/k/v always */
    bool qk_norm;                        /* qwen3: self_attn.q_norm / k_norm [head_dim], per head before RoPE */
    bool mlp_bias;                       /* llama */
    mc_rope rope;
    int64_t bos_token_id;                /* -1 when absent */
    int64_t eos_token_ids[8];
    int n_eos;
    /* DeepSeek-V3 (MLA + MoE) */
    int64_t q_lora_rank;                 /* 0: plain q_proj */
    int64_t kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
    int64_t n_routed_experts, n_shared_experts, num_experts_per_tok, moe_intermediate_size;
    int64_t moe_layer_freq, first_k_dense_replace, n_group, topk_group;
    double routed_scaling_factor;
    bool norm_topk_prob, has_correction_bias, rope_interleave;
    int64_t num_nextn_predict_layers;
    mc_quant quant;
} mc_config;

int mc_parse(const json_t *cfg, mc_config *out);
/* path: a config.json file or a directory holding one. */
int mc_load(const char *path, mc_config *out);

/* True when layer i of a DeepSeek-V3 model has a routed-expert MoE block. */
bool mc_layer_is_moe(const mc_config *c, int64_t layer);

typedef enum {
    MC_T_EMBED,        /* embedding / lm_head: float */
    MC_T_NORM,         /* RMSNorm weight: float */
    MC_T_LINEAR,       /* projection weight: float, or FP8 with a block scale when quantized */
    MC_T_BIAS,         /* float */
    MC_T_ROUTER,       /* MoE gate weight: float */
    MC_T_ROUTER_BIAS,  /* e_score_correction_bias: float */
} mc_tensor_kind;

enum { MC_GROUP_REQUIRED = 0, MC_GROUP_TIED_HEAD = 1, MC_GROUP_MTP = 2 };

typedef struct {
    char name[112];
    int ndim;
    int64_t shape[2];
    mc_tensor_kind kind;
    int group;
} mc_tensor_spec;

/* A dense (llama / qwen2 / qwen3) model's dimensions under the names every forward uses:
 * D hidden_size, F intermediate_size, L num_hidden_layers, V vocab_size, Hq / Hkv query and
 * key-value heads, hd head_dim (mc_parse has filled and checked them). Meaningless for
 * deepseek_v3, whose callers refuse it first, each with its own message. */
typedef struct {
    int64_t D, F, L, V, Hq, Hkv, hd;
} mc_dims;
mc_dims mc_dense_dims(const mc_config *c);

/* *out is owned by the caller (free()). */
int mc_expected_tensors(const mc_config *c, mc_tensor_spec **out, size_t *n);
/* Elements of every required tensor; with_optional adds the MTP layers. */
int64_t mc_param_count(const mc_config *c, bool with_optional);
/* Shape of the FP8 scale of a [rows, cols] weight: ceil(rows/br) × ceil(cols/bc). */
void mc_scale_shape(const mc_config *c, const int64_t shape[2], int64_t out[2]);

const char *mc_arch_name(mc_arch a);
const char *mc_rope_name(mc_rope_type t);

#endif

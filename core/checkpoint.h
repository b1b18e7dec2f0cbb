/* core/checkpoint.h — check a set of safetensors against the architecture of a config.
 *
 * ck_validate() walks mc_expected_tensors() and the opened files together: every required
 * tensor present with the right shape and an allowed dtype (F32/F16/BF16/F64; FP8 e4m3 for
 * projection weights of an fp8-quantized config, each with its F32 `weight_scale_inv` of
 * ceil(rows/block) × ceil(cols/block)), optional groups present completely or not at all,
 * and no tensor the architecture does not know (rotary_emb.inv_freq buffers are tolerated).
 * It fills a summary, and on failure returns RT_EFORMAT naming the first bad tensor and
 * how many other problems there are.
 */
#ifndef RT_CHECKPOINT_H
#define RT_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/model_config.h"
#include "core/safetensors.h"

typedef struct {
    size_t tensors;                   /* in the files */
    int files;
    int64_t parameters;               /* elements of every tensor but *.weight_scale_inv */
    int64_t expected_parameters;      /* from the config, required tensors only */
    size_t dtype_count[RT_DT_COUNT];
    bool mtp_present;                 /* DeepSeek-V3 multi-token-prediction layers stored */
    bool tied_head_stored;            /* tied embeddings, lm_head stored anyway */
    size_t fp8_weights;               /* weights stored as FP8 with block scales */
} ck_summary;

int ck_validate(const mc_config *c, const st_file *f, ck_summary *out);

#endif

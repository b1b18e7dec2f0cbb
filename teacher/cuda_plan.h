/* teacher/cuda_plan.h — the memory plan of a GPU teacher engine: what teacher/dense_cuda.h's
 * dc_plan and teacher/ds_cuda.h's dsc_plan are (one type), made at load before any device
 * allocation (teacher/cuda_batch.h has its shared steps). Plain data; no CUDA types. */
#ifndef RT_TEACHER_CUDA_PLAN_H
#define RT_TEACHER_CUDA_PLAN_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t weights, activations, workspace, kv;   /* bytes (this rank's) */
    size_t total;                   /* their sum: what the engine's load allocates on the device */
    size_t kv_position_bytes;       /* bytes of one cache position, all layers */
    int64_t kv_positions;           /* what the cache holds */
    size_t device_total, device_free, budget;     /* cudaMemGetInfo, and fraction·total − in use */
    int64_t max_tokens, max_seqs, table_ints;     /* pass limits; block-table room (ints) */
} cb_plan;

#endif

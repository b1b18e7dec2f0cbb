/* core/cuda_try.h — CUDA_TRY for host C code that calls the CUDA runtime (core/comm_nccl.c,
 * student/gpu_train.c, teacher/dense_cuda.c; the .cu files have kernels/cuda/common.cuh).
 * A failing call returns from the enclosing int function: RT_ENOMEM when the device is out of
 * memory, else RT_EINTERNAL, with a message that names the runtime function and the CUDA error
 * in words ("CUDA failed in cudaMemcpyAsync: unspecified launch failure"); the whole call and its
 * place in the source go to the debug log only (retort --verbose), never to the user's line.
 * Include after cuda_runtime.h, or after a stand-in of it (tests/unit/fake_cuda.h). */
#ifndef RT_CORE_CUDA_TRY_H
#define RT_CORE_CUDA_TRY_H

#include <string.h>

#include "core/log.h"
#include "core/status.h"

/* " in NAME" for a call NAME(…); "" for a bare status variable */
#define RT_CALL_IN_(call) (strchr(call, '(') ? " in " : ""), (strchr(call, '(') ? (int)strcspn(call, "(") : 0), call

#define CUDA_TRY(call)                                                                                   \
    do {                                                                                                 \
        cudaError_t e_ = (call);                                                                         \
        if (e_ != cudaSuccess) {                                                                         \
            RT_DEBUG("%s failed at %s:%d", #call, __FILE__, __LINE__);                                   \
            return rt_fail(e_ == cudaErrorMemoryAllocation ? RT_ENOMEM : RT_EINTERNAL, "CUDA failed%s%.*s: %s", \
                           RT_CALL_IN_(#call), cudaGetErrorString(e_));                                  \
        }                                                                                                \
    } while (0)

#endif

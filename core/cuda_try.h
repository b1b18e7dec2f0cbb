/* core/cuda_try.h — CUDA_TRY for host C code that calls the CUDA runtime (core/comm_nccl.c,
 * student/gpu_train.c, teacher/dense_cuda.c; the .cu files have kernels/cuda/common.cuh).
 * A failing call returns from the enclosing int function: RT_ENOMEM when the device is out of
 * memory, else RT_EINTERNAL, with a message that names the CUDA error in words; the call and
 * its place in the source go to the debug log only (retort --verbose), never to the user's
 * line. Include after cuda_runtime.h, or after a stand-in of it (tests/unit/fake_cuda.h). */
#ifndef RT_CORE_CUDA_TRY_H
#define RT_CORE_CUDA_TRY_H

#include "core/log.h"
#include "core/status.h"

#define CUDA_TRY(call)                                                                                   \
    do {                                                                                                 \
        cudaError_t e_ = (call);                                                                         \
        if (e_ != cudaSuccess) {                                                                         \
            RT_DEBUG("%s failed at %s:%d", #call, __FILE__, __LINE__);                                   \
            return rt_fail(e_ == cudaErrorMemoryAllocation ? RT_ENOMEM : RT_EINTERNAL, "CUDA failed: %s", \
                           cudaGetErrorString(e_));                                                      \
        }                                                                                                \
    } while (0)

#endif

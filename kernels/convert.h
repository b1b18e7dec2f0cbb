/* kernels/convert.h — element-type conversions and FP8 block dequantization.
 *
 * CPU reference in kernels/cpu/convert.c; the CUDA twin (kernels/cuda/convert.cu) takes
 * device pointers. Sources may be unaligned (they often point into a mapped safetensors
 * file). Rounding: f32 → bf16 and f32 → f16 round to nearest, ties to even; NaN stays NaN
 * (quiet), infinities stay infinities. FP8 e4m3 follows the "fn" variant (no infinities,
 * S.1111.111 is NaN, max ±448); e5m2 is IEEE-like (infinities and NaNs).
 * Block dequantization (DeepSeek-V3): out[r][c] = fp8(w[r][c]) * scale_inv[r / br][c / bc],
 * with ceil(rows/br) × ceil(cols/bc) scales (partial blocks at the right and bottom edges).
 * Widening (bf16/f16 → f32) is exact; bf16 NaNs keep their bits, f16 NaNs stay NaN (quiet on
 * the F16C path). bf16 and f16 widening use AVX2 (+F16C) where the CPU has it, chosen at run time.
 * No allocation, no errors, except cvt_to_f32 (RT_EUNSUPPORTED for non-float dtypes).
 */
#ifndef RT_KERNELS_CONVERT_H
#define RT_KERNELS_CONVERT_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/threadpool.h"

#ifdef __cplusplus
extern "C" {
#endif

float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float fp8e4m3_to_f32(uint8_t b);
float fp8e5m2_to_f32(uint8_t b);

void cvt_bf16_to_f32(const void *src, float *dst, size_t n);
void cvt_f32_to_bf16(const float *src, uint16_t *dst, size_t n);
void cvt_f16_to_f32(const void *src, float *dst, size_t n);
void cvt_f32_to_f16(const float *src, uint16_t *dst, size_t n);
void cvt_fp8e4m3_to_f32(const void *src, float *dst, size_t n);
void cvt_fp8e5m2_to_f32(const void *src, float *dst, size_t n);

/* Any float dtype (F64, F32, F16, BF16, F8_E4M3, F8_E5M2) to f32. */
int cvt_to_f32(rt_dtype dt, const void *src, float *dst, size_t n);
/* cvt_to_f32 into memory not written yet (core/alloc.h: rt_big_alloc): in chunks of 1 MiB of
 * output, each faulted in at once (rt_prefault) right before it is written, the chunks split
 * over the pool's threads (NULL: the caller alone). The same values as cvt_to_f32, bit for bit. */
int cvt_to_f32_fill(rt_dtype dt, const void *src, float *dst, size_t n, tp_pool *pool);

/* w: [rows, cols] e4m3; scale_inv: [ceil(rows/br), ceil(cols/bc)] f32 (may be unaligned);
 * out: [rows, cols] f32. Rows are split over the pool (NULL: one thread). */
void fp8_block_dequant(const void *w, const void *scale_inv, int64_t rows, int64_t cols, int br, int bc,
                       float *out, tp_pool *pool);

#ifdef RT_HAVE_CUDA
/* CUDA twins: device pointers, asynchronous on `stream` (a cudaStream_t; NULL = default).
 * Return 0, or RT_EINTERNAL with the CUDA error in the message. */
int cvt_bf16_to_f32_cuda(const uint16_t *src, float *dst, size_t n, void *stream);
int cvt_f32_to_bf16_cuda(const float *src, uint16_t *dst, size_t n, void *stream);
int fp8_block_dequant_cuda(const uint8_t *w, const float *scale_inv, int64_t rows, int64_t cols, int br, int bc,
                           uint16_t *out_bf16, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif

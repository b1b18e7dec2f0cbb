/* core/dtype.h — element types of tensors as safetensors names them.
 *
 * Pure functions, no state. rt_dtype_parse() returns RT_DT_INVALID for an unknown name.
 */
#ifndef RT_DTYPE_H
#define RT_DTYPE_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    RT_DT_INVALID = 0,
    RT_DT_F64, RT_DT_F32, RT_DT_F16, RT_DT_BF16, RT_DT_F8_E4M3, RT_DT_F8_E5M2,
    RT_DT_I64, RT_DT_I32, RT_DT_I16, RT_DT_I8,
    RT_DT_U64, RT_DT_U32, RT_DT_U16, RT_DT_U8, RT_DT_BOOL,
    RT_DT_COUNT
} rt_dtype;

const char *rt_dtype_name(rt_dtype t);   /* "F32", …; "?" for invalid */
rt_dtype rt_dtype_parse(const char *name);
size_t rt_dtype_size(rt_dtype t);        /* bytes per element; 0 for invalid */
bool rt_dtype_is_float(rt_dtype t);      /* F64, F32, F16, BF16 (not FP8) */

#ifdef __cplusplus
}
#endif

#endif

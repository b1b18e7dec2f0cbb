#include "core/dtype.h"

#include <string.h>

static const struct { const char *name; size_t size; } info[RT_DT_COUNT] = {
    [RT_DT_INVALID] = {"?", 0},
    [RT_DT_F64] = {"F64", 8},        [RT_DT_F32] = {"F32", 4},
    [RT_DT_F16] = {"F16", 2},        [RT_DT_BF16] = {"BF16", 2},
    [RT_DT_F8_E4M3] = {"F8_E4M3", 1}, [RT_DT_F8_E5M2] = {"F8_E5M2", 1},
    [RT_DT_I64] = {"I64", 8},        [RT_DT_I32] = {"I32", 4},
    [RT_DT_I16] = {"I16", 2},        [RT_DT_I8] = {"I8", 1},
    [RT_DT_U64] = {"U64", 8},        [RT_DT_U32] = {"U32", 4},
    [RT_DT_U16] = {"U16", 2},        [RT_DT_U8] = {"U8", 1},
    [RT_DT_BOOL] = {"BOOL", 1},
};

const char *rt_dtype_name(rt_dtype t) { return (t > 0 && t < RT_DT_COUNT) ? info[t].name : "?"; }

rt_dtype rt_dtype_parse(const char *name) {
    for (int t = 1; t < RT_DT_COUNT; t++)
        if (!strcmp(name, info[t].name)) return (rt_dtype)t;
    return RT_DT_INVALID;
}

size_t rt_dtype_size(rt_dtype t) { return (t > 0 && t < RT_DT_COUNT) ? info[t].size : 0; }

bool rt_dtype_is_float(rt_dtype t) {
    return t == RT_DT_F64 || t == RT_DT_F32 || t == RT_DT_F16 || t == RT_DT_BF16;
}

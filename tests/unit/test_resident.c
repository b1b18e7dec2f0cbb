/* ds_resident_bytes / ds_resident_get (teacher/deepseek.h) and dn_resident_bytes
 * (teacher/dense.h) against sizes counted from the checkpoints' safetensors headers: e4m3
 * tensors at one byte per element, their weight_scale_inv at 4, everything else at 4 (the
 * engines hold f32). Checkpoints: tests/ref/gen_deepseek.py's tiny DeepSeek-V3 in FP8 (with
 * the MTP layer) and in F32, gen_teacher.py's tiny Llama. Bounds: each count is at least the
 * header's and at most that plus 64 bytes of alignment per tensor (the DeepSeek model rounds
 * every buffer up to 64 bytes, the dense one every tensor to 16 floats) plus the small
 * per-layer tables; the process-level RSS check is tests/ref/test_ds_fp8_memory.py. */
#include <stdint.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "teacher/deepseek.h"
#include "teacher/dense.h"
#include "testutil.h"

typedef struct {
    size_t fp8, scales, other, n;
} counted;

static counted count(const char *dir) {
    st_file *f;
    cr_assert_eq(st_open(dir, &f), 0, "%s", rt_errmsg());
    counted c = {0};
    for (size_t i = 0; i < st_count(f); i++) {
        const st_tensor *t = st_get(f, i);
        size_t nl = strlen(t->name);
        if (t->dtype == RT_DT_F8_E4M3) c.fp8 += t->nelem;
        else if (nl > 10 && !strcmp(t->name + nl - 10, "_scale_inv")) c.scales += 4 * t->nelem;
        else c.other += 4 * t->nelem;
        c.n++;
    }
    st_close(f);
    return c;
}

static char *ref_path(const char *sub) {
    const char *dir = getenv("REF_DIR");
    if (!dir) cr_skip_test("skipped: REF_DIR not set (run the suite through `make test`)");
    char *p = malloc(4096), cfg[4200];
    snprintf(p, 4096, "%s/%s", dir, sub);
    snprintf(cfg, sizeof cfg, "%s/config.json", p);
    if (access(cfg, R_OK)) cr_skip_test("skipped: %s missing (run tests/ref/gen_deepseek.py and gen_teacher.py)", p);
    return p;
}

static ds_model *ds_open(const char *path) {
    ds_model *m = NULL;
    ds_load_opts o = {.load_mtp = true};
    cr_assert_eq(ds_load(path, &o, &m), 0, "%s", rt_errmsg());
    return m;
}

Test(resident, deepseek_fp8_holds_one_byte_per_fp8_weight_and_f32_elsewhere) {
    char *path = ref_path("deepseek/fp8");
    ds_model *m = ds_open(path);
    counted c = count(path);
    ds_resident r;
    ds_resident_get(m, &r);
    cr_log_info("fp8 checkpoint: e4m3 %zu, scales %zu, other as f32 %zu; held fp8 %zu, scales %zu, f32 %zu, other %zu",
                c.fp8, c.scales, c.other, r.fp8, r.scales, r.f32, r.other);
    cr_assert(c.fp8 > 0 && c.scales > 0);
    cr_assert(r.fp8 >= c.fp8 && r.fp8 <= c.fp8 + 64 * c.n, "fp8 %zu, checkpoint %zu", r.fp8, c.fp8);
    cr_assert(r.scales >= c.scales && r.scales <= c.scales + 64 * c.n, "scales %zu, checkpoint %zu", r.scales, c.scales);
    cr_assert(r.f32 >= c.other && r.f32 <= c.other + 64 * c.n, "f32 %zu, checkpoint %zu", r.f32, c.other);
    cr_assert(r.other < 64 * 1024);
    cr_assert_eq(r.total, r.fp8 + r.scales + r.f32 + r.other);
    cr_assert_eq(ds_resident_bytes(m), r.total);
    ds_free(m);
    free(path);
}

Test(resident, deepseek_f32_checkpoint_is_all_f32) {
    char *path = ref_path("deepseek/f32");
    ds_model *m = ds_open(path);
    counted c = count(path);
    ds_resident r;
    ds_resident_get(m, &r);
    cr_assert_eq(c.fp8, 0);
    cr_assert_eq(r.fp8, 0);
    cr_assert_eq(r.scales, 0);
    cr_assert(r.f32 >= c.other && r.f32 <= c.other + 64 * c.n, "f32 %zu, checkpoint %zu", r.f32, c.other);
    ds_free(m);
    free(path);
}

Test(resident, dense_holds_f32_copies) {
    char *path = ref_path("teacher/llama");
    dn_model *m = NULL;
    cr_assert_eq(dn_load(path, NULL, &m), 0, "%s", rt_errmsg());
    counted c = count(path);
    size_t got = dn_resident_bytes(m);
    cr_log_info("llama: %zu bytes as f32 in the checkpoint, %zu held", c.other, got);
    cr_assert(got >= c.other && got <= c.other + 64 * c.n + 64 * 1024, "held %zu, checkpoint %zu", got, c.other);
    dn_free(m);
    free(path);
}

/* student/train: a diverged step stops before the update, a checkpoint holding NaN is never
 * written, a failed save leaves no DIR.partial and a stale one does not block the next save.
 * A tiny qwen2 on one hand-made shard; the NaN is put into the weights by hand. */
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fsutil.h"
#include "core/shard.h"
#include "student/train.h"
#include "testutil.h"

static const char *QWEN = "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"vocab_size\": 32,"
                          " \"hidden_size\": 32, \"intermediate_size\": 64, \"num_hidden_layers\": 1,"
                          " \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"max_position_embeddings\": 64,"
                          " \"tie_word_embeddings\": true}";

static tr_trainer *trainer(const char *dir) {
    char path[256];
    snprintf(path, sizeof path, "%s/shard-00000.bin", dir);
    shard_writer *w;
    cr_assert_eq(shard_writer_open(path, 16, 32, 0, &w), 0, "%s", rt_errmsg());
    for (int s = 0; s < 4; s++) {
        int32_t tok[16];
        uint8_t mask[16];
        for (int i = 0; i < 16; i++) tok[i] = 1 + (s * 7 + i * 3) % 31, mask[i] = i > 0;
        shard_doc doc = {.doc_id = (uint64_t)s, .start = 0, .len = 16};
        cr_assert_eq(shard_writer_add(w, tok, mask, &doc, 1), 0, "%s", rt_errmsg());
    }
    cr_assert_eq(shard_writer_finish(w), 0, "%s", rt_errmsg());
    sd_data *d;
    cr_assert_eq(sd_open(dir, &d), 0, "%s", rt_errmsg());
    json_error_t e;
    json_t *cfg = json_loads(QWEN, 0, &e);
    sm_model *m;
    cr_assert_eq(sm_create_random(cfg, 1, &m), 0, "%s", rt_errmsg());
    json_decref(cfg);
    tr_options o;
    tr_options_default(&o);
    o.steps = 5, o.lr = 1e-3;
    tr_trainer *t;
    cr_assert_eq(tr_create(m, d, &o, NULL, &t), 0, "%s", rt_errmsg());
    return t;
}

static void rm_rf(const char *d) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", d);
    cr_assert_eq(system(cmd), 0);
}

Test(train_safety, nan_weights_stop_the_step_and_are_never_saved) {
    char *dir = tmp_dir(), ck[256], part[280];
    tr_trainer *t = trainer(dir);
    tr_stats st;
    cr_assert_eq(tr_step(t, &st), 0, "%s", rt_errmsg());
    cr_assert(isfinite(st.loss));
    sm_model *m = (sm_model *)tr_model(t);
    const sm_tensor *x = &m->tensors[m->n_tensors - 1];
    m->params[x->offset + 3] = NAN;
    snprintf(ck, sizeof ck, "%s/step-1", dir);
    snprintf(part, sizeof part, "%s.partial", ck);
    cr_assert_eq(tr_save(t, ck, RT_DT_F32), RT_ERANGE);
    cr_assert(strstr(rt_errmsg(), x->name) && strstr(rt_errmsg(), "not finite"), "%s", rt_errmsg());
    cr_assert(!rt_is_dir(ck) && !rt_is_dir(part));
    float before = m->params[0];
    cr_assert_eq(tr_step(t, &st), RT_ERANGE);
    cr_assert(strstr(rt_errmsg(), "step 2: loss nan") || strstr(rt_errmsg(), "step 2: loss -nan"), "%s", rt_errmsg());
    cr_assert_eq(tr_steps_done(t), 1);              /* no update happened */
    cr_assert_eq(m->params[0], before);
    tr_free(t);
    rm_rf(dir);
    free(dir);
}

Test(train_safety, failed_save_leaves_no_partial_and_stale_partial_is_replaced) {
    char *dir = tmp_dir(), ck[256], part[280], f[320];
    tr_trainer *t = trainer(dir);
    tr_stats st;
    cr_assert_eq(tr_step(t, &st), 0, "%s", rt_errmsg());
    snprintf(ck, sizeof ck, "%s/step-1", dir);
    snprintf(part, sizeof part, "%s.partial", ck);
    FILE *in_the_way = fopen(ck, "w");                 /* step-1 is a file: the rename fails */
    fclose(in_the_way);
    cr_assert_neq(tr_save(t, ck, RT_DT_BF16), 0);
    cr_assert(strstr(rt_errmsg(), "step-1"), "%s", rt_errmsg());
    cr_assert(!rt_is_dir(part));
    unlink(ck);
    /* a killed save's leftovers, temporaries included */
    cr_assert_eq(mkdir(part, 0755), 0);
    snprintf(f, sizeof f, "%s/model.safetensors.tmp.4242", part);
    fclose(fopen(f, "w"));
    cr_assert_eq(tr_save(t, ck, RT_DT_BF16), 0, "%s", rt_errmsg());
    cr_assert(rt_is_dir(ck) && !rt_is_dir(part));
    tr_free(t);
    rm_rf(dir);
    free(dir);
}

/* tests/tools/ds_parallel_logits.c — test helper: the parallel DeepSeek-V3 forward
 * (teacher/parallel.h) under mpirun -np P, or the serial one for comparison.
 *
 *   [mpirun -np P] ds_parallel_logits MODEL_DIR IN OUT NGEN [THREADS] [parallel|serial|paged|serial-paged]
 *
 * IN holds "prompt", a 1-D I32 tensor of token ids. The prompt runs in one call (naive
 * attention), then NGEN greedy tokens are drawn (argmax, lowest id on ties), each fed back
 * one at a time through the cache (absorbed attention). "parallel" (default) loads with
 * ds_load_parallel and uses the contiguous latent cache; "serial" loads with ds_load (no
 * collectives: the reference); "paged" and "serial-paged" run the engine's path instead
 * (run_paged: a batch of two sequences through ds_forward_paged). Rank 0 writes OUT:
 *   logits [n, V] F32 (the prompt's), tokens [NGEN] I32, decode_logits [NGEN-1, V] F32 (the
 *   logits after feeding each generated token but the last),
 *   bytes [P, 2] I64 (per rank: checkpoint bytes read at load, of which routed-expert bytes),
 *   layout [P, 4] I64 (per rank: heads, dense-MLP columns, vocabulary rows, experts held),
 *   and for the paged modes b_logits [n/2 + 1, V] F32 and b_tokens [NGEN] I32 (sequence B);
 *   otherwise, when the checkpoint has an MTP layer, mtp_logits [n, V] F32 (its draft for the
 *   prompt, fed the prompt's next tokens and then the first greedy one).
 * Exit 0 ok; 1 with "ds_parallel_logits: message" on stderr (load errors from rank 0 only,
 * as every rank finds the same one); 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/comm.h"
#include "core/safetensors.h"
#include "core/status.h"
#include "core/threadpool.h"
#include "teacher/deepseek.h"
#include "teacher/kvcache.h"
#include "teacher/parallel.h"

static int32_t argmax(const float *v, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[b]) b = i;
    return (int32_t)b;
}

/* Prompt then greedy decode through the contiguous cache; with an MTP layer (mtp != NULL),
 * its draft logits [n, V] for the prompt: next token = the prompt's following one, then the
 * first greedy token. */
static int run_contiguous(ds_model *m, const int32_t *prompt, int64_t n, int64_t ngen, float *logits, int32_t *toks,
                          float *dec, float *mtp) {
    int64_t V = ds_vocab(m), D = ds_hidden(m);
    ds_cache *c = NULL;
    int32_t *pos = malloc((size_t)(n + ngen) * sizeof *pos), *next = malloc((size_t)n * sizeof *next);
    float *hid = malloc((size_t)(n * D) * sizeof *hid);
    int rc = pos && next && hid ? ds_cache_create(m, n + ngen, &c) : RT_ENOMEM;
    for (int64_t i = 0; i < n + ngen && pos; i++) pos[i] = (int32_t)i;
    if (!rc) rc = ds_forward(m, c, prompt, pos, n, DS_ATTN_NAIVE, logits, hid);
    if (!rc && ngen > 0) toks[0] = argmax(logits + (n - 1) * V, V);
    if (!rc && mtp && ngen > 0) {
        for (int64_t i = 0; i < n; i++) next[i] = i + 1 < n ? prompt[i + 1] : toks[0];
        rc = ds_mtp_forward(m, c, hid, next, pos, n, DS_ATTN_NAIVE, mtp, NULL);
    }
    for (int64_t i = 1; !rc && i < ngen; i++) {
        rc = ds_forward(m, c, &toks[i - 1], &pos[n + i - 1], 1, DS_ATTN_ABSORBED, dec + (i - 1) * V, NULL);
        if (!rc) toks[i] = argmax(dec + (i - 1) * V, V);
    }
    ds_cache_free(c);
    free(pos);
    free(next);
    free(hid);
    return rc;
}

/* The engine's path: a paged cache (blocks of 16) and ds_forward_paged over a batch of two
 * sequences, A = the prompt and B = its first half reversed, prefilled in one call and then
 * decoded side by side. A's results go where run_contiguous puts them; B's prompt logits to
 * blog [nb, V] and its greedy tokens to btoks [ngen]. */
static int run_paged(ds_model *m, const int32_t *prompt, int64_t n, int64_t ngen, float *logits, int32_t *toks,
                     float *dec, float *blog, int32_t *btoks) {
    int64_t V = ds_vocab(m), bs = 16, nb = n / 2 + 1;
    kv_pool *p = NULL;
    kv_seq a = {0}, b = {0};
    kv_seq *seqs[2] = {&a, &b};
    int32_t *tok = malloc((size_t)(n + nb) * sizeof *tok);
    float *all = malloc((size_t)((n + nb) * V) * sizeof *all);
    int rc = tok && all ? kv_pool_create(2 * ((n + ngen + bs - 1) / bs + 1), bs, ds_block_floats(m, bs), &p) : RT_ENOMEM;
    int32_t nn[2] = {(int32_t)n, (int32_t)nb};
    if (!rc) {
        memcpy(tok, prompt, (size_t)n * sizeof *tok);
        for (int64_t i = 0; i < nb; i++) tok[n + i] = prompt[nb - 1 - i];
        rc = ds_forward_paged(m, p, seqs, nn, 2, tok, DS_ATTN_AUTO, all, true);
    }
    if (!rc) {
        memcpy(logits, all, (size_t)(n * V) * sizeof *all);
        memcpy(blog, all + n * V, (size_t)(nb * V) * sizeof *all);
        if (ngen > 0) toks[0] = argmax(all + (n - 1) * V, V), btoks[0] = argmax(all + (n + nb - 1) * V, V);
    }
    nn[0] = nn[1] = 1;
    for (int64_t i = 1; !rc && i < ngen; i++) {
        int32_t step[2] = {toks[i - 1], btoks[i - 1]};
        rc = ds_forward_paged(m, p, seqs, nn, 2, step, DS_ATTN_AUTO, all, false);
        if (!rc) {
            memcpy(dec + (i - 1) * V, all, (size_t)V * sizeof *all);
            toks[i] = argmax(all, V);
            btoks[i] = argmax(all + V, V);
        }
    }
    if (p) kv_seq_release(p, &a), kv_seq_release(p, &b);
    kv_pool_free(p);
    free(tok);
    free(all);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 5 || argc > 7) {
        fprintf(stderr, "usage: ds_parallel_logits MODEL_DIR IN OUT NGEN [THREADS] [parallel|serial|paged|serial-paged]\n");
        return 2;
    }
    const char *mode = argc > 6 ? argv[6] : "parallel";
    bool serial = !strncmp(mode, "serial", 6), paged = !strcmp(mode, "paged") || !strcmp(mode, "serial-paged");
    if (!serial && !paged && strcmp(mode, "parallel")) {
        fprintf(stderr, "ds_parallel_logits: unknown mode %s\n", mode);
        return 2;
    }
    int64_t ngen = atoll(argv[4]);
    rt_comm *comm = NULL;
    if (comm_open(serial ? COMM_SINGLE : COMM_AUTO, &comm)) {
        fprintf(stderr, "ds_parallel_logits: %s\n", rt_errmsg());
        return 1;
    }
    int rank = comm_rank(comm), P = comm_size(comm);
    tp_pool *pool = NULL;
    ds_model *m = NULL;
    st_file *in = NULL;
    float *logits = NULL, *dec = NULL;
    int32_t *toks = NULL;
    int64_t info[2] = {0, 0}, *infos = NULL, lay[4] = {0, 0, 0, 0}, *lays = NULL;
    int rc = 0;
    const char *stage = "load";
    if (argc > 5 && atoi(argv[5]) > 1) rc = tp_create(atoi(argv[5]), &pool);
    ds_load_opts o = {.pool = pool, .load_mtp = true};
    if (!rc) rc = serial ? ds_load(argv[1], &o, &m) : ds_load_parallel(argv[1], &o, comm, &m);
    if (!rc) {
        stage = "forward";
        rc = st_open(argv[2], &in);
    }
    const st_tensor *t = rc ? NULL : st_find(in, "prompt");
    if (!rc && (!t || t->dtype != RT_DT_I32 || t->ndim != 1 || t->shape[0] < 1))
        rc = rt_fail(RT_EFORMAT, "%s: no 1-D I32 tensor \"prompt\"", argv[2]);
    int64_t n = rc ? 0 : t->shape[0], V = rc ? 0 : ds_vocab(m);
    int32_t *prompt = NULL;
    if (!rc) {
        prompt = malloc((size_t)n * sizeof *prompt);
        logits = malloc((size_t)(n * V) * sizeof *logits);
        dec = malloc((size_t)((ngen > 1 ? ngen - 1 : 1) * V) * sizeof *dec);
        toks = calloc((size_t)(ngen > 0 ? ngen : 1), sizeof *toks);
        infos = calloc((size_t)P * 2, sizeof *infos);
        lays = calloc((size_t)P * 4, sizeof *lays);
        if (!prompt || !logits || !dec || !toks || !infos || !lays) rc = RT_ENOMEM;
        else memcpy(prompt, t->data, (size_t)n * sizeof *prompt);
    }
    float *blog = NULL, *mtp = NULL;
    int32_t *btoks = NULL;
    bool has_mtp = !rc && ds_has_mtp(m) && ngen > 0;
    if (!rc && has_mtp && !(mtp = malloc((size_t)(n * V) * sizeof *mtp))) rc = RT_ENOMEM;
    if (!rc && paged) {
        blog = malloc((size_t)((n / 2 + 1) * V) * sizeof *blog);
        btoks = calloc((size_t)(ngen > 0 ? ngen : 1), sizeof *btoks);
        if (!blog || !btoks) rc = RT_ENOMEM;
    }
    if (!rc) rc = paged ? run_paged(m, prompt, n, ngen, logits, toks, dec, blog, btoks)
                        : run_contiguous(m, prompt, n, ngen, logits, toks, dec, mtp);
    if (!rc) {
        ds_load_info li;
        ds_load_info_get(m, &li);
        info[0] = (int64_t)li.bytes;
        info[1] = (int64_t)li.expert_bytes;
        const ds_layout *lo = ds_model_layout(m);
        if (lo) {
            lay[0] = lo->n_heads, lay[1] = lo->n_inter, lay[2] = lo->n_vocab, lay[3] = ds_layout_local_experts(lo);
        } else {
            const mc_config *c = ds_config(m);
            lay[0] = c->num_attention_heads, lay[1] = c->intermediate_size, lay[2] = c->vocab_size, lay[3] = c->n_routed_experts;
        }
        rc = comm_allgather(comm, info, infos, 2, RT_DT_I64);
        if (!rc) rc = comm_allgather(comm, lay, lays, 4, RT_DT_I64);
    }
    if (!rc && rank == 0) {
        st_wtensor ts[] = {
            {.name = "logits", .dtype = RT_DT_F32, .ndim = 2, .shape = {n, V}, .data = logits},
            {.name = "tokens", .dtype = RT_DT_I32, .ndim = 1, .shape = {ngen}, .data = toks},
            {.name = "decode_logits", .dtype = RT_DT_F32, .ndim = 2, .shape = {ngen > 1 ? ngen - 1 : 0, V}, .data = dec},
            {.name = "bytes", .dtype = RT_DT_I64, .ndim = 2, .shape = {P, 2}, .data = infos},
            {.name = "layout", .dtype = RT_DT_I64, .ndim = 2, .shape = {P, 4}, .data = lays},
            {.name = "b_logits", .dtype = RT_DT_F32, .ndim = 2, .shape = {n / 2 + 1, V}, .data = blog},
            {.name = "b_tokens", .dtype = RT_DT_I32, .ndim = 1, .shape = {ngen}, .data = btoks},
        };
        size_t nt = paged ? 7 : 5;
        if (!paged && mtp)   /* in the place of the paged modes' b_logits */
            ts[nt++] = (st_wtensor){.name = "mtp_logits", .dtype = RT_DT_F32, .ndim = 2, .shape = {n, V}, .data = mtp};
        rc = st_write(argv[3], ts, nt, NULL);
    }
    if (rc && (rank == 0 || strcmp(stage, "load")))
        fprintf(stderr, "ds_parallel_logits: %s%s\n", rank ? "rank > 0: " : "", rt_errmsg());
    free(prompt);
    free(logits);
    free(dec);
    free(toks);
    free(blog);
    free(mtp);
    free(btoks);
    free(infos);
    free(lays);
    st_close(in);
    ds_free(m);
    tp_free(pool);
    comm_close(comm);
    return rc ? 1 : 0;
}

/* student/zero.c — ZeRO-1/2/3 layout and the step's collectives (see zero.h). */
#include "student/zero.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/status.h"
#include "kernels/optim.h"

void zr_layout_init(zr_layout *z, int64_t n, int rank, int ranks, int level) {
    if (ranks < 1) ranks = 1;
    int64_t S = (n + ranks - 1) / ranks;
    S = (S + 15) / 16 * 16;
    *z = (zr_layout){.level = level, .rank = rank, .ranks = ranks, .n = n, .shard = S, .padded = S * ranks};
    if (level == 0) {
        z->lo = 0;
        z->hi = n;
    } else {
        z->lo = (int64_t)rank * S;
        if (z->lo > n) z->lo = n;
        z->hi = z->lo + S < n ? z->lo + S : n;
    }
}

int64_t zr_state_len(const zr_layout *z) { return z->level == 0 ? z->n : z->shard; }

int zr_reduce_grads(const zr_layout *z, rt_comm *c, float *grads) {
    if (!c || z->ranks == 1 || z->level == 3) return 0;
    if (z->level == 2)   /* in place: rank r's reduced part lands on its own slot */
        return comm_reduce_scatter(c, grads, grads + (int64_t)z->rank * z->shard, (size_t)z->shard, RT_DT_F32, COMM_SUM);
    return comm_allreduce(c, grads, grads, (size_t)z->padded, RT_DT_F32, COMM_SUM);
}

int zr_grad_sumsq(const zr_layout *z, rt_comm *c, const float *grads, tp_pool *pool, double *out) {
    double s = vec_sumsq(grads + (z->level == 3 ? 0 : z->lo), (size_t)(z->hi - z->lo), pool);
    if (c && z->ranks > 1 && z->level > 0) {
        int rc = comm_allreduce(c, &s, &s, 1, RT_DT_F64, COMM_SUM);
        if (rc) return rc;
    }
    *out = s;
    return 0;
}

int zr_gather_params(const zr_layout *z, rt_comm *c, float *params) {
    if (!c || z->ranks == 1 || z->level == 0 || z->level == 3) return 0;
    return comm_allgather(c, params + (int64_t)z->rank * z->shard, params, (size_t)z->shard, RT_DT_F32);
}

int zr_gather_state(const zr_layout *z, rt_comm *c, const float *own, float *full, int root) {
    if (z->level == 0 || !c || z->ranks == 1) {
        if (z->rank == root) memcpy(full, own, (size_t)zr_state_len(z) * sizeof(float));
        return 0;
    }
    return comm_gather(c, own, full, (size_t)z->shard, RT_DT_F32, root);
}

/* ---- level 3: flat ranges whose parts lie on several ranks ------------------------------ */

/* Rank r's part of [lo, hi): [*a, *a + len) in flat indices (len 0 when it holds none). */
static int64_t part_of(const zr_layout *z, int r, int64_t lo, int64_t hi, int64_t *a) {
    int64_t s = (int64_t)r * z->shard, e = s + z->shard;
    *a = lo > s ? lo : s;
    int64_t b = hi < e ? hi : e;
    if (b <= *a) {
        *a = s;
        return 0;
    }
    return b - *a;
}

int zr_range_gather(const zr_layout *z, rt_comm *c, const float *own, int64_t lo, int64_t hi, float *out, int root) {
    int P = z->ranks, me = z->rank;
    if (!c || P == 1) {   /* the own part is everything */
        if (out) memcpy(out, own + lo, (size_t)(hi - lo) * sizeof(float));
        return 0;
    }
    size_t *v = rt_calloc(4 * (size_t)P, sizeof *v);   /* send counts, displs, recv counts, displs */
    if (!v) return RT_ENOMEM;
    int64_t mine_at, mine = part_of(z, me, lo, hi, &mine_at);
    for (int r = 0; r < P; r++) {
        int64_t at, len = part_of(z, r, lo, hi, &at);
        if (root < 0 || r == root) {
            v[r] = (size_t)mine;
            v[P + r] = mine ? (size_t)(mine_at - (int64_t)me * z->shard) : 0;
        }
        if (root < 0 || me == root) {
            v[2 * P + r] = (size_t)len;
            v[3 * P + r] = len ? (size_t)(at - lo) : 0;
        }
    }
    int rc = comm_alltoallv(c, own, v, v + P, out, v + 2 * P, v + 3 * P, RT_DT_F32);
    free(v);
    return rc;
}

int zr_range_reduce_scatter_add(const zr_layout *z, rt_comm *c, const float *unit, int64_t lo, int64_t hi, float *own,
                                float *stage, int64_t stage_len) {
    int P = z->ranks, me = z->rank;
    if (!c || P == 1) {
        for (int64_t i = 0; i < hi - lo; i++) own[lo + i] += unit[i];
        return 0;
    }
    int64_t C = stage_len / P, longest = 0, mine_at, mine = part_of(z, me, lo, hi, &mine_at);
    if (C < 1) return rt_fail(RT_EINVAL, "reduce-scatter scratch of %lld floats for %d ranks", (long long)stage_len, P);
    for (int r = 0; r < P; r++) {
        int64_t at, len = part_of(z, r, lo, hi, &at);
        if (len > longest) longest = len;
    }
    size_t *v = rt_calloc(4 * (size_t)P, sizeof *v);
    if (!v) return RT_ENOMEM;
    float *dst = own + (mine_at - (int64_t)me * z->shard);
    int rc = 0;
    /* round k: elements [k·C, (k+1)·C) of every rank's part go to that rank; every rank runs
     * the same rounds (the longest part's), some with nothing to send or receive */
    for (int64_t k0 = 0; k0 < longest && !rc; k0 += C) {
        int64_t got = mine - k0 < C ? mine - k0 : C;
        if (got < 0) got = 0;
        for (int r = 0; r < P; r++) {
            int64_t at, len = part_of(z, r, lo, hi, &at), cnt = len - k0 < C ? len - k0 : C;
            if (cnt < 0) cnt = 0;
            v[r] = (size_t)cnt;
            v[P + r] = cnt ? (size_t)(at - lo + k0) : 0;
            v[2 * P + r] = (size_t)got;
            v[3 * P + r] = (size_t)(r * got);
        }
        rc = comm_alltoallv(c, unit, v, v + P, stage, v + 2 * P, v + 3 * P, RT_DT_F32);
        /* ((x_0 + x_1) + x_2) … in rank order, as comm_reduce_scatter sums */
        for (int64_t i = 0; !rc && i < got; i++) {
            float s = stage[i];
            for (int r = 1; r < P; r++) s = s + stage[(int64_t)r * got + i];
            dst[k0 + i] += s;
        }
    }
    free(v);
    return rc;
}

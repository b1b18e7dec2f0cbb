/* student/zero.c — ZeRO-1/2 layout and the step's collectives (see zero.h). */
#include "student/zero.h"

#include <string.h>

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
    if (!c || z->ranks == 1) return 0;
    if (z->level == 2)   /* in place: rank r's reduced part lands on its own slot */
        return comm_reduce_scatter(c, grads, grads + (int64_t)z->rank * z->shard, (size_t)z->shard, RT_DT_F32, COMM_SUM);
    return comm_allreduce(c, grads, grads, (size_t)z->padded, RT_DT_F32, COMM_SUM);
}

int zr_grad_sumsq(const zr_layout *z, rt_comm *c, const float *grads, tp_pool *pool, double *out) {
    double s = vec_sumsq(grads + z->lo, (size_t)(z->hi - z->lo), pool);
    if (c && z->ranks > 1 && z->level > 0) {
        int rc = comm_allreduce(c, &s, &s, 1, RT_DT_F64, COMM_SUM);
        if (rc) return rc;
    }
    *out = s;
    return 0;
}

int zr_gather_params(const zr_layout *z, rt_comm *c, float *params) {
    if (!c || z->ranks == 1 || z->level == 0) return 0;
    return comm_allgather(c, params + (int64_t)z->rank * z->shard, params, (size_t)z->shard, RT_DT_F32);
}

int zr_gather_state(const zr_layout *z, rt_comm *c, const float *own, float *full, int root) {
    if (z->level == 0 || !c || z->ranks == 1) {
        if (z->rank == root) memcpy(full, own, (size_t)zr_state_len(z) * sizeof(float));
        return 0;
    }
    return comm_gather(c, own, full, (size_t)z->shard, RT_DT_F32, root);
}

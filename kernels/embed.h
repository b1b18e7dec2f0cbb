/* kernels/embed.h — token embedding lookup and its gradient.
 *
 * table/dtable [V, D], ids [M] (each < V, checked by the caller), out/dout [M, D].
 * embed_bwd adds each row of dout into its token's row of dtable; the work is split over
 * column blocks, so rows of repeated tokens are summed in token order by one thread and
 * the result does not depend on the pool size. No allocation, no errors.
 */
#ifndef RT_KERNELS_EMBED_H
#define RT_KERNELS_EMBED_H

#include <stdint.h>

#include "core/threadpool.h"

void embed_fwd(float *out, const float *table, const int32_t *ids, int64_t M, int64_t D, tp_pool *pool);
void embed_bwd(float *dtable, const float *dout, const int32_t *ids, int64_t M, int64_t D, tp_pool *pool);

#endif

/* core/tb_events.h — TensorBoard event files (scalars), written without TensorFlow or a
 * protobuf library.
 *
 * A file is a sequence of TFRecords, each
 *   u64 little-endian length n, u32 masked CRC-32C of those 8 bytes, n bytes of data,
 *   u32 masked CRC-32C of the data
 * (mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8), the data an encoded tensorflow.Event:
 *   wall_time (1, double), step (2, int64), file_version (3, string) "brain.Event:2" in the
 *   first record, summary (5) { value (1) { tag (1, string), simple_value (2, float) } }.
 * tb_open() creates dir when needed and a new file in it, events.out.tfevents.<unix
 * seconds>.<host>.<pid>.retort, whose first record is the file_version event; each
 * tb_scalar() appends one Event with one value and flushes it, so a reader (TensorBoard,
 * its EventAccumulator) sees every scalar as soon as it is written. A writer is owned by
 * the caller of tb_open (tb_close; NULL is fine). tb_crc32c() is exposed for tests.
 * Errors: RT_EIO (the path and the system's reason), RT_EINVAL (an empty or over-long tag),
 * RT_ENOMEM.
 */
#ifndef RT_TB_EVENTS_H
#define RT_TB_EVENTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct tb_writer tb_writer;

int tb_open(const char *dir, tb_writer **out);
/* wall_time: seconds since the epoch (the caller's clock: library code keeps no time of its own). */
int tb_scalar(tb_writer *w, const char *tag, int64_t step, double wall_time, float value);
const char *tb_path(const tb_writer *w);
void tb_close(tb_writer *w);
uint32_t tb_crc32c(const void *data, size_t n);

#endif

/* core/fsutil.h — small file-system helpers: whole-file reads, directory tests, paths,
 * and atomic writes.
 *
 * An rt_atomic_file writes to a temporary file beside the target; rt_atomic_commit()
 * flushes, fsyncs, renames it over the target and fsyncs the directory, so readers see
 * either the old file or the complete new one — never a partial one, even if the process
 * is killed or the disk fills. rt_atomic_abort() removes the temporary (NULL is fine).
 * The temporary (PATH.tmp.XXXXXX) is flock()ed while it is written; rt_atomic_open() first
 * removes the temporaries of the same target that nobody holds (left by a killed writer).
 * Errors: RT_EIO (message names the path and the system's reason), RT_ENOMEM.
 */
#ifndef RT_FSUTIL_H
#define RT_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Reads a whole file; *buf is NUL-terminated, owned by the caller (free()). */
int rt_read_file(const char *path, char **buf, size_t *len);
bool rt_is_dir(const char *path);
bool rt_is_file(const char *path);
/* Joins a and b with one '/'; owned by the caller. NULL on ENOMEM. */
char *rt_path_join(const char *a, const char *b);

/* Where the shared assets (tokenizers/, benchmarks/) are: $RETORT_ASSETS when set, else
 * shared/assets beside the checkout that holds the running binary (<bin dir>/../shared/assets)
 * when that exists, else ../shared/assets. Owned by the caller; NULL on ENOMEM. */
char *rt_assets_dir(void);

typedef struct rt_atomic_file rt_atomic_file;
int rt_atomic_open(const char *path, rt_atomic_file **out);
FILE *rt_atomic_stream(rt_atomic_file *af);
int rt_atomic_write(rt_atomic_file *af, const void *data, size_t n);
int rt_atomic_commit(rt_atomic_file *af); /* frees af, whatever the result */
void rt_atomic_abort(rt_atomic_file *af);
/* path ← txt and a newline, atomically (rt_atomic_open … commit; nothing on failure). */
int rt_atomic_write_text(const char *path, const char *txt);
/* Removes the unheld temporaries in dir of the target stem (prefix: of every target whose
 * name starts with stem). Best effort: errors are ignored. */
void rt_atomic_clean_stale(const char *dir, const char *stem, bool prefix);

#endif

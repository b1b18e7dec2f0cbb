/* core/utf8.h — small UTF-8 helpers: validation, decoding one code point, encoding one,
 * and Rust-compatible lossy repair.
 *
 * rt_utf8_check() accepts exactly what Rust's str accepts (no surrogates, no overlongs,
 * nothing above U+10FFFF). rt_utf8_lossy() replaces each maximal invalid subpart with
 * U+FFFD, as Rust's String::from_utf8_lossy and Python's errors="replace" do. No state.
 */
#ifndef RT_UTF8_H
#define RT_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Length of the valid sequence starting at s[0] (1..4), or 0 when s[0..n) does not start
 * with a valid UTF-8 sequence. n must be > 0. */
size_t rt_utf8_seqlen(const unsigned char *s, size_t n);

/* True when s[0..n) is valid UTF-8; otherwise false and *bad (if not NULL) = the offset
 * of the first byte that does not start a valid sequence. */
bool rt_utf8_check(const char *s, size_t n, size_t *bad);

/* Decodes the valid sequence at s (length from rt_utf8_seqlen); returns the code point. */
uint32_t rt_utf8_decode(const unsigned char *s, size_t len);

/* Writes the UTF-8 form of cp (<= 0x10FFFF) to out (room for 4); returns its length. */
size_t rt_utf8_encode(uint32_t cp, char *out);

/* Lossy copy of s[0..n): *out malloc'd (NUL-terminated), *out_len excludes the NUL.
 * Errors: RT_ENOMEM. */
int rt_utf8_lossy(const char *s, size_t n, char **out, size_t *out_len);

#endif

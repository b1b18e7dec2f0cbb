/* core/json.h — JSON through jansson, with errors as status codes.
 *
 * rt_json_load_file()/rt_json_loadb() parse strictly (duplicate keys rejected) and return a
 * new reference the caller releases with json_decref(). The getters read one member of an
 * object: an absent (or null) member leaves *out at the default given and returns 0; a
 * member of the wrong type returns RT_EFORMAT naming the key.
 */
#ifndef RT_JSON_H
#define RT_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int rt_json_load_file(const char *path, json_t **out);
int rt_json_loadb(const char *buf, size_t len, const char *what, json_t **out);

int rt_json_get_int(const json_t *obj, const char *key, int64_t def, int64_t *out);
int rt_json_get_num(const json_t *obj, const char *key, double def, double *out);   /* int or real */
int rt_json_get_bool(const json_t *obj, const char *key, bool def, bool *out);
/* *out points into obj (valid while obj lives) or is def. */
int rt_json_get_str(const json_t *obj, const char *key, const char *def, const char **out);

#endif

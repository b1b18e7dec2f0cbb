/* core/yaml.h — a small YAML subset reader for configuration files, into jansson values.
 *
 * The subset: block maps ("key: value", nested by indentation with spaces), block lists
 * ("- item", items may be scalars or maps: "- key: v" followed by more keys at the item's
 * indentation), flow lists of scalars ("[a, 1, "b"]", "[]"), the empty flow map "{}",
 * comments ("#" at the start of a line or after a space, outside quotes), and scalars:
 * "double quoted" (escapes \" \\ \n \t \/), 'single quoted' ('' is a quote), true/false,
 * null/~, integers, floats, and plain strings (trimmed). A key with nothing after the
 * colon and no deeper lines below is null. A document that starts with "{" is read as
 * JSON instead. Not supported (RT_EFORMAT naming the line): tabs in indentation, anchors,
 * tags, multi-line strings, flow maps with members, several documents.
 *
 * rt_yaml_parse() returns a new reference (json_decref) in *out; duplicate keys are an
 * error. Errors: RT_EFORMAT ("WHAT:LINE: why"), RT_ENOMEM; rt_yaml_load_file adds RT_EIO.
 */
#ifndef RT_YAML_H
#define RT_YAML_H

#include <jansson.h>
#include <stddef.h>

int rt_yaml_parse(const char *text, size_t len, const char *what, json_t **out);
int rt_yaml_load_file(const char *path, json_t **out);

#endif

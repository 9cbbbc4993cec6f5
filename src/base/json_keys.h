/* json_keys.h - names given twice in one JSON object. RFC 8259 leaves their meaning open: cJSON
 * reads the first, Python's json module (the Python server's reader) the last, so a body that one
 * reader takes one way and another the other way is refused rather than guessed at. */
#ifndef CLARA_BASE_JSON_KEYS_H
#define CLARA_BASE_JSON_KEYS_H

#include <cjson/cJSON.h>

typedef enum { JSON_KEYS_OK, JSON_KEYS_DUPLICATE, JSON_KEYS_NOMEM } json_keys_code;

/* Checks every object of the tree v. On JSON_KEYS_DUPLICATE, *dup is the name found twice (a
 * string of the tree). O(n log n) in the keys of each object. */
json_keys_code json_duplicate_key(const cJSON *v, const char **dup);

#endif

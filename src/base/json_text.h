/* json_text.h - a JSON string item for text given as bytes and a length. Decoded model output can
 * hold NUL bytes (a byte-fallback token <0x00> decodes to one, as in the reference's decode),
 * which cJSON's C strings would cut; here they are written as \u0000 and the whole text kept. */
#ifndef CLARA_BASE_JSON_TEXT_H
#define CLARA_BASE_JSON_TEXT_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* A string item holding text[0..len) (NULL when out of memory). Without NUL bytes it is an
 * ordinary cJSON string; with them a raw item with the string already escaped. */
cJSON *json_text(const char *text, size_t len);

/* Adds json_text(text, len) to obj under key; false when out of memory. */
int json_add_text(cJSON *obj, const char *key, const char *text, size_t len);

#endif

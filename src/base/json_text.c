/* json_text.c - JSON string items for byte ranges that may hold NUL (json_text.h). */
#include "base/json_text.h"

#include <stdlib.h>
#include <string.h>

/* The JSON string literal of text[0..len): quotes, backslash and control bytes escaped, every
 * other byte as it is (the text is UTF-8: the decoder replaces what is not with U+FFFD). */
static char *quote(const char *text, size_t len) {
    static const char hex[] = "0123456789abcdef";
    char *out = malloc(len * 6 + 3), *o = out;
    if (!out) return NULL;
    *o++ = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\', *o++ = (char)c;
        } else if (c == '\n') {
            *o++ = '\\', *o++ = 'n';
        } else if (c == '\t') {
            *o++ = '\\', *o++ = 't';
        } else if (c == '\r') {
            *o++ = '\\', *o++ = 'r';
        } else if (c < 0x20) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4], o[5] = hex[c & 15];
            o += 6;
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

cJSON *json_text(const char *text, size_t len) {
    if (!text) text = "", len = 0;
    if (!memchr(text, '\0', len)) {
        char *s = malloc(len + 1);
        if (!s) return NULL;
        memcpy(s, text, len);
        s[len] = '\0';
        cJSON *item = cJSON_CreateString(s);
        free(s);
        return item;
    }
    char *q = quote(text, len);
    cJSON *item = q ? cJSON_CreateRaw(q) : NULL;
    free(q);
    return item;
}

int json_add_text(cJSON *obj, const char *key, const char *text, size_t len) {
    cJSON *item = json_text(text, len);
    if (item && cJSON_AddItemToObject(obj, key, item)) return 1;
    cJSON_Delete(item);
    return 0;
}

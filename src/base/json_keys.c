/* json_keys.c - json_duplicate_key (json_keys.h): each object's names sorted, neighbours compared.
 */
#include <stdlib.h>
#include <string.h>

#include "base/json_keys.h"

static int cmp_name(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static json_keys_code object_names(const cJSON *v, size_t n, const char **dup) {
    const char **names = malloc(n * sizeof *names);
    if (!names) return JSON_KEYS_NOMEM;
    size_t k = 0;
    for (const cJSON *c = v->child; c; c = c->next) names[k++] = c->string ? c->string : "";
    qsort(names, n, sizeof *names, cmp_name);
    json_keys_code rc = JSON_KEYS_OK;
    for (size_t i = 1; i < n && rc == JSON_KEYS_OK; i++)
        if (strcmp(names[i - 1], names[i]) == 0) {
            *dup = names[i];
            rc = JSON_KEYS_DUPLICATE;
        }
    free(names);
    return rc;
}

json_keys_code json_duplicate_key(const cJSON *v, const char **dup) {
    size_t n = 0;
    for (const cJSON *c = v->child; c; c = c->next, n++) {
        json_keys_code rc = json_duplicate_key(c, dup);
        if (rc != JSON_KEYS_OK) return rc;
    }
    return cJSON_IsObject(v) && n > 1 ? object_names(v, n, dup) : JSON_KEYS_OK;
}

/* json.c - memories, collections and selections as the JSON the server answers with and the
 * CLI prints (--json): one shape for both (docs/API.md). */
#include <string.h>

#include "store/store_internal.h"

cJSON *store_memory_json(const store_memory *m) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", m->id);
    cJSON_AddStringToObject(j, "text", m->text);
    cJSON *meta = m->metadata ? cJSON_Parse(m->metadata) : NULL;
    cJSON_AddItemToObject(j, "metadata", meta ? meta : cJSON_CreateNull());
    cJSON_AddNumberToObject(j, "created_ms", (double)m->created_ms);
    cJSON_AddNumberToObject(j, "updated_ms", (double)m->updated_ms);
    cJSON_AddNumberToObject(j, "chunks", m->n_chunks);
    cJSON_AddNumberToObject(j, "tokens", m->n_tokens);
    return j;
}

cJSON *store_collection_json(const store_collection *c) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "name", c->name);
    cJSON_AddNumberToObject(j, "memories", (double)c->n_memories);
    cJSON_AddNumberToObject(j, "chunks", (double)c->n_chunks);
    cJSON_AddNumberToObject(j, "created_ms", (double)c->created_ms);
    return j;
}

void store_selection_add_json(cJSON *j, const store_selection *sel) {
    cJSON *arr = cJSON_AddArrayToObject(j, "memories");
    for (size_t i = 0; arr && i < sel->n; i++) {
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "id", sel->memory_ids[i]);
        cJSON_AddNumberToObject(e, "chunk", sel->chunk_seq[i]);
        cJSON_AddStringToObject(e, "text", sel->texts[i]);
        cJSON_AddNumberToObject(e, "score", sel->scores[i]);
        cJSON_AddItemToArray(arr, e);
    }
    cJSON *how = cJSON_AddObjectToObject(j, "selection");
    cJSON_AddStringToObject(how, "method", sel->method);
    cJSON_AddBoolToObject(how, "exact", sel->exact || strcmp(sel->method, "cosine") != 0);
    cJSON_AddNumberToObject(how, "considered", (double)sel->considered);
    cJSON_AddNumberToObject(how, "scored_exactly", (double)sel->candidates);
}

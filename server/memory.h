/* memory.h - what memory.c and memory_query.c share. */
#ifndef CLARA_SERVER_MEMORY_H
#define CLARA_SERVER_MEMORY_H

#include "server.h"
#include "store/store.h"

/* Longest collection name or memory id a path may hold (longer ones are refused, 422). */
#define SRV_PATH_NAME_MAX 1024

store *srv_mem_store(srv_server *s, srv_reply *r);
void srv_mem_store_error(srv_reply *r, const store_err *e);
/* The store's view of the served model, under the given fingerprint. */
void srv_mem_model(srv_server *s, const char *fingerprint, store_model *m);
/* What a query selects from a collection: the memories POST /v1/collections/{c}/query answers
 * from (top_k 0 and filter NULL are its defaults). */
typedef struct {
    const char *collection;
    const char *query;
    size_t query_len;
    long top_k;
    const char *filter; /* JSON text or NULL */
    double deadline;    /* the request's (srv_task.deadline) */
} srv_mem_selector;
/* Catches up on missing vectors, ranks and selects as that endpoint does: 0 with *sel filled
 * (store_selection_free it; its vectors were made by the model *fp names), or -1 with *r
 * filled. ph[0..2] receive the recompress, query-vector and ranking times (ms). */
int srv_mem_select(srv_server *s, store *st, const srv_mem_selector *q, bool (*alive)(void *),
                   void *arg, char fp[CLARA_FINGERPRINT_LEN + 1], store_selection *sel,
                   double ph[3], srv_reply *r);
/* POST /v1/collections/{c}/query, answered by the request's deadline (srv_task.deadline). */
void srv_mem_query(srv_server *s, store *st, const char *coll, cJSON *root, double deadline,
                   bool (*alive)(void *), void *arg, srv_reply *r);

#endif

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
/* POST /v1/collections/{c}/query. */
void srv_mem_query(srv_server *s, store *st, const char *coll, cJSON *root, bool (*alive)(void *),
                   void *arg, srv_reply *r);

#endif

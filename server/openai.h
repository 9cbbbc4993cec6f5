/* openai.h - the OpenAI-compatible endpoints (openai.c): GET /v1/models, POST /v1/chat/completions
 * and POST /v1/completions. */
#ifndef CLARA_SERVER_OPENAI_H
#define CLARA_SERVER_OPENAI_H

#include "server.h"

/* A chat or completion request as openai_request.c read it (the engine's part is in the task). */
typedef struct {
    bool chat; /* /v1/chat/completions; else /v1/completions */
    bool stream, include_usage;
    char id[48];
    double created;
    double t0;
    size_t n_docs, n_cached; /* documents given, and of those found in the document cache */
    double docs_compress_ms; /* compressing the documents not in the cache (their own task) */
    const char *collection;  /* in the task's root, or NULL */
    cJSON *memories;         /* collection: what was selected (store_selection_add_json) */
    double select_ms[3];     /* collection: recompress, query vectors, ranking */
} oai_req;

/* An OpenAI error reply; param may be NULL. */
void srv_openai_error(srv_reply *r, int status, const char *param, const char *code,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Reads t->root into t (question, turns, system, sampling, stop sequences) and q. 0, or -1 with
 * *r filled. */
int srv_openai_parse(srv_server *s, srv_task *t, oai_req *q, srv_reply *r);
/* The context: documents (compressed, or from the document cache), a collection's selected
 * memories, or none (a plain chat). 0, -1 with *r filled, -2 refused before queueing. */
int srv_openai_context(srv_server *s, srv_task *t, oai_req *q, bool (*alive)(void *), void *arg,
                       srv_reply *r);

bool srv_openai_endpoint(srv_endpoint ep);
void srv_openai_route(srv_server *s, srv_endpoint ep, const char *body, size_t len,
                      bool (*alive)(void *), void *alive_arg, srv_reply *r);
/* Rewrites an error reply of ours ({success, error, error_type}) into OpenAI's shape
 * {"error": {"message", "type", "param", "code"}}, which the OpenAI SDKs read. */
void srv_openai_error_shape(srv_reply *r);

#endif

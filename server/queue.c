/* queue.c - the bounded task queue between HTTP handler threads and the scheduler, and task
 * lifetime: a task is shared by its handler (which may give up on it when the client leaves or
 * the request times out) and the queue/scheduler, and freed by whichever lets go last. */
#include <stdlib.h>
#include <string.h>

#include "server.h"
#include "stream.h"

static pthread_mutex_t *g_task_mu; /* the queue's mutex, which also guards task fields */

srv_task *srv_task_new(srv_endpoint ep) {
    srv_task *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->ep = ep;
    t->refs = 1;
    t->status = 500;
    atomic_init(&t->cancelled, false);
    pthread_cond_init(&t->cv, NULL);
    return t;
}

static void task_free(srv_task *t) {
    cJSON_Delete(t->root);
    free(t->docs);
    free(t->texts);
    free(t->chunks);
    free(t->chunk_of);
    free(t->cut);
    free(t->query_vectors);
    free(t->in_vectors);
    free(t->out_vectors);
    free(t->enc_tokens);
    free(t->turns);
    srv_stream_free(t->stream);
    if (t->has_gen) clara_gen_result_free(&t->gen);
    pthread_cond_destroy(&t->cv);
    free(t);
}

void srv_task_release(srv_task *t) {
    pthread_mutex_lock(g_task_mu);
    int left = --t->refs;
    pthread_mutex_unlock(g_task_mu);
    if (left == 0) task_free(t);
}

int srv_queue_init(srv_queue *q, int cap) {
    memset(q, 0, sizeof *q);
    q->ring = calloc((size_t)cap, sizeof *q->ring);
    if (!q->ring) return -1;
    q->cap = cap;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    g_task_mu = &q->mu;
    return 0;
}

void srv_queue_destroy(srv_queue *q) {
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q->ring);
}

int srv_queue_push(srv_queue *q, srv_task *t) {
    pthread_mutex_lock(&q->mu);
    if (q->stop || q->n == q->cap) {
        pthread_mutex_unlock(&q->mu);
        return -1;
    }
    t->refs++;
    q->ring[(q->head + q->n) % q->cap] = t;
    q->n++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

int srv_queue_pop_locked(srv_queue *q, srv_task **out, int max) {
    int k = 0;
    while (q->n > 0 && k < max) {
        out[k++] = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        q->n--;
    }
    return k;
}

int srv_queue_depth(srv_queue *q) {
    pthread_mutex_lock(&q->mu);
    int n = q->n;
    pthread_mutex_unlock(&q->mu);
    return n;
}

void srv_task_complete(srv_queue *q, srv_task *t) {
    pthread_mutex_lock(&q->mu);
    t->done = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&q->mu);
}

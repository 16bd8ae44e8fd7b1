/* batch.c - an int8 model over many images on several threads (batch.h). POSIX threads
 * started by qrt_batch_init and kept until qrt_batch_free: they sleep on a condition
 * variable between runs. Nothing is allocated: their state (struct qrt_batch_pool) is at
 * the start of the caller's buffer, the arenas after it. */
#include "batch.h"

#include <pthread.h>
#include <stdbool.h>

enum { ARENA_ALIGN = 64 };

static int clamp_threads(int threads) {
    return threads > QRT_BATCH_MAX_THREADS ? QRT_BATCH_MAX_THREADS : threads;
}

/* Images a thread runs together (qrt_run_batch): QRT_BATCH_CHUNK when the model has a
 * linear the SIMD path runs as a GEMM over them, else 1 (nothing would be shared). */
static int chunk(const qrt_model *m) {
    for (int i = 0; i < qrt_model_n_ops(m); i++)
        if (qrt_model_op(m, i)->kind == QRT_OP_LINEAR && qrt_model_op_packed(m, i)) return QRT_BATCH_CHUNK;
    return 1;
}

static size_t arena_stride(const qrt_model *m) {
    const size_t a = qrt_arena_size_batch(m, chunk(m));
    return (a + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
}

typedef struct slice {
    const qrt_model *m;
    int chunk;
    void *arena;
    const uint8_t *pixels;
    int begin, end;
    int *labels;
    int8_t *logits;
} slice;

static void *run_slice(void *p) {
    const slice *s = p;
    const size_t per = (size_t)qrt_model_input(s->m)->numel, K = (size_t)qrt_model_n_outputs(s->m);
    for (int i = s->begin; i < s->end; i += s->chunk) {
        const int n = s->end - i < s->chunk ? s->end - i : s->chunk;
        /* The model was validated at load and the arena sized for it: this cannot fail. */
        qrt_run_batch(s->m, s->pixels + (size_t)i * per, n, s->arena,
                      s->logits ? s->logits + (size_t)i * K : NULL, s->labels ? s->labels + i : NULL);
    }
    return NULL;
}

/* The threads and the run they work on. Worker t (1..started) runs slice t of each run;
 * slices past `started` run on the caller's thread. */
struct qrt_batch_pool {
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned long gen; /* bumped by each run */
    int pending;       /* workers not yet done with the current run */
    bool quit;
    int started;       /* workers running: threads 1..started */
    slice run[QRT_BATCH_MAX_THREADS];
    int T;             /* slices of the current run */
    pthread_t tid[QRT_BATCH_MAX_THREADS];
    struct worker_arg {
        struct qrt_batch_pool *pool;
        int t;
    } arg[QRT_BATCH_MAX_THREADS];
};

static size_t pool_bytes(void) {
    return (sizeof(struct qrt_batch_pool) + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
}

static void *worker(void *p) {
    const struct worker_arg *a = p;
    struct qrt_batch_pool *pool = a->pool;
    unsigned long seen = 0;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (!pool->quit && pool->gen == seen) pthread_cond_wait(&pool->go, &pool->mu);
        if (pool->quit) break;
        seen = pool->gen;
        const bool mine = a->t < pool->T;
        const slice s = mine ? pool->run[a->t] : (slice){0};
        pthread_mutex_unlock(&pool->mu);
        if (mine) run_slice((void *)&s);
        pthread_mutex_lock(&pool->mu);
        if (--pool->pending == 0) pthread_cond_signal(&pool->done);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

size_t qrt_batch_mem_size(const qrt_model *m, int threads) {
    if (!m || !m->ops) return 0;
    return ARENA_ALIGN + pool_bytes() + (size_t)clamp_threads(threads < 1 ? 1 : threads) * arena_stride(m);
}

qrt_status qrt_batch_init(qrt_batch *b, const qrt_model *m, int threads, void *mem, size_t mem_len) {
    if (!b) return QRT_STATUS_INVALID_ARG;
    *b = (qrt_batch){0};
    if (!m || !m->ops || !mem || threads < 1) return QRT_STATUS_INVALID_ARG;
    threads = clamp_threads(threads);
    if (mem_len < qrt_batch_mem_size(m, threads)) return QRT_STATUS_NO_MEMORY;
    uint8_t *base = mem;
    base += (ARENA_ALIGN - (uintptr_t)base % ARENA_ALIGN) % ARENA_ALIGN;
    struct qrt_batch_pool *pool = (struct qrt_batch_pool *)(void *)base;
    *b = (qrt_batch){.m = m, .threads = threads, .chunk = chunk(m), .arenas = base + pool_bytes(),
                     .stride = arena_stride(m)};
    if (threads == 1) return QRT_STATUS_OK; /* the caller's thread alone: no pool */
    *pool = (struct qrt_batch_pool){0};
    if (pthread_mutex_init(&pool->mu, NULL)) return QRT_STATUS_OK;
    if (pthread_cond_init(&pool->go, NULL)) {
        pthread_mutex_destroy(&pool->mu);
        return QRT_STATUS_OK;
    }
    if (pthread_cond_init(&pool->done, NULL)) {
        pthread_cond_destroy(&pool->go);
        pthread_mutex_destroy(&pool->mu);
        return QRT_STATUS_OK;
    }
    for (int t = 1; t < threads; t++) {
        pool->arg[t] = (struct worker_arg){pool, t};
        if (pthread_create(&pool->tid[t], NULL, worker, &pool->arg[t])) break;
        pool->started = t;
    }
    b->pool = pool;
    return QRT_STATUS_OK;
}

void qrt_batch_free(qrt_batch *b) {
    if (!b) return;
    struct qrt_batch_pool *pool = b->pool;
    b->m = NULL; /* a freed batch refuses to run */
    if (!pool) return;
    pthread_mutex_lock(&pool->mu);
    pool->quit = true;
    pthread_cond_broadcast(&pool->go);
    pthread_mutex_unlock(&pool->mu);
    for (int t = 1; t <= pool->started; t++) pthread_join(pool->tid[t], NULL);
    pthread_cond_destroy(&pool->done);
    pthread_cond_destroy(&pool->go);
    pthread_mutex_destroy(&pool->mu);
    b->pool = NULL;
}

qrt_status qrt_batch_run(const qrt_batch *b, const uint8_t *pixels, int n, int *labels, int8_t *logits) {
    if (!b || !b->m || !b->arenas || !pixels) return QRT_STATUS_INVALID_ARG;
    if (n <= 0) return QRT_STATUS_OK;
    const int T = b->threads < n ? b->threads : n;
    slice s[QRT_BATCH_MAX_THREADS];
    for (int t = 0; t < T; t++)
        s[t] = (slice){b->m, b->chunk, b->arenas + (size_t)t * b->stride, pixels, (int)((long long)n * t / T),
                       (int)((long long)n * (t + 1) / T), labels, logits};
    struct qrt_batch_pool *pool = b->pool;
    const int workers = pool ? pool->started : 0;
    if (workers) {
        pthread_mutex_lock(&pool->mu);
        for (int t = 0; t < T; t++) pool->run[t] = s[t];
        pool->T = T;
        pool->pending = workers;
        pool->gen++;
        pthread_cond_broadcast(&pool->go);
        pthread_mutex_unlock(&pool->mu);
    }
    run_slice(&s[0]);
    for (int t = workers + 1; t < T; t++) run_slice(&s[t]); /* threads that never started */
    if (workers) {
        pthread_mutex_lock(&pool->mu);
        while (pool->pending) pthread_cond_wait(&pool->done, &pool->mu);
        pthread_mutex_unlock(&pool->mu);
    }
    return QRT_STATUS_OK;
}

/* batch.c - an int8 model over many images on several threads (batch.h). POSIX threads
 * started by qrt_batch_init and kept until qrt_batch_free. Between runs each spins for a
 * while on the run counter, then sleeps on a condition variable; the caller spins the
 * same way for the workers' end of a run (why: see SPIN_NS). Nothing is allocated: their
 * state (struct qrt_batch_pool) is at the start of the caller's buffer, the arenas after
 * it. */
#define _POSIX_C_SOURCE 200809L
#include "batch.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

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

/* One thread's part of a run: it claims chunks of `chunk` images from *next until n are
 * claimed (dynamic, so that a thread slowed by another process's work on its CPU takes
 * fewer chunks instead of making the run wait for it). */
typedef struct slice {
    const qrt_model *m;
    int chunk;
    void *arena;
    const uint8_t *pixels;
    int n;
    atomic_int *next;
    int *labels;
    int8_t *logits;
} slice;

static void run_slice(const slice *s) {
    const size_t per = (size_t)qrt_model_input(s->m)->numel, K = (size_t)qrt_model_n_outputs(s->m);
    for (;;) {
        const int i = atomic_fetch_add_explicit(s->next, s->chunk, memory_order_relaxed);
        if (i >= s->n) break;
        const int n = s->n - i < s->chunk ? s->n - i : s->chunk;
        /* The model was validated at load and the arena sized for it: this cannot fail. */
        qrt_run_batch(s->m, s->pixels + (size_t)i * per, n, s->arena,
                      s->logits ? s->logits + (size_t)i * K : NULL, s->labels ? s->labels + i : NULL);
    }
}

/* How long a thread spins before it sleeps: a worker waiting for the next run, the
 * caller waiting for the workers' end of this one. A sleeping thread's wake-up (futex,
 * and on a VM the idle vCPU's own wake-up) took tens of microseconds: on the 2-core test
 * VM, the MLP's 256-image runs (~500 us) gained 1.41x from a second thread with
 * condition variables alone, against 2x for two processes of one thread each. Back-to-back
 * runs find their workers still spinning; an idle batch costs this much CPU per run. */
enum { SPIN_NS = 500 * 1000 };

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Spins until (*v == x) == until_equal (returns true) or SPIN_NS have passed (false). */
static bool spin(atomic_ulong *v, unsigned long x, bool until_equal) {
    long long end = 0;
    for (unsigned i = 1;; i++) {
        if ((atomic_load_explicit(v, memory_order_acquire) == x) == until_equal) return true;
        cpu_relax();
        if (i % 64 == 0) {
            const long long t = now_ns();
            if (!end) end = t + SPIN_NS;
            else if (t > end) return false;
        }
    }
}

/* The threads and the run they work on. Worker t (1..started) runs slice t of each run;
 * slices past `started` run on the caller's thread. gen and quit change under mu (so a
 * worker that checks them under mu before cond_wait cannot miss a wake-up), and are
 * read without it while spinning. */
struct qrt_batch_pool {
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    atomic_ulong gen;     /* bumped by each run (and by qrt_batch_free) */
    atomic_ulong pending; /* workers not yet done with the current run */
    atomic_bool quit;
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
    for (;;) {
        if (!spin(&pool->gen, seen, false)) {
            pthread_mutex_lock(&pool->mu);
            while (!atomic_load(&pool->quit) && atomic_load(&pool->gen) == seen)
                pthread_cond_wait(&pool->go, &pool->mu);
            pthread_mutex_unlock(&pool->mu);
        }
        if (atomic_load(&pool->quit)) break;
        /* the acquire load of gen orders the reads of run[] and T after the caller's writes */
        seen = atomic_load_explicit(&pool->gen, memory_order_acquire);
        const bool mine = a->t < pool->T;
        const slice s = mine ? pool->run[a->t] : (slice){0};
        if (mine) run_slice(&s);
        if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool->mu); /* the caller may be in cond_wait */
            pthread_cond_signal(&pool->done);
            pthread_mutex_unlock(&pool->mu);
        }
    }
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
    atomic_init(&pool->gen, 0);
    atomic_init(&pool->pending, 0);
    atomic_init(&pool->quit, false);
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
    atomic_store(&pool->quit, true);
    atomic_fetch_add(&pool->gen, 1); /* wakes the spinners too */
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
    /* Chunks of at most b->chunk images, at least 4 per thread when n allows (256
     * images on 2 threads: 8 of 32), so that the last claim leaves little imbalance. */
    int chunk = (n + 4 * T - 1) / (4 * T);
    if (chunk > b->chunk) chunk = b->chunk;
    if (chunk < 1) chunk = 1;
    atomic_int next;
    atomic_init(&next, 0);
    slice s[QRT_BATCH_MAX_THREADS];
    for (int t = 0; t < T; t++)
        s[t] = (slice){b->m, chunk, b->arenas + (size_t)t * b->stride, pixels, n, &next, labels, logits};
    struct qrt_batch_pool *pool = b->pool;
    const int workers = pool ? pool->started : 0;
    if (workers) {
        pthread_mutex_lock(&pool->mu);
        for (int t = 0; t < T; t++) pool->run[t] = s[t];
        pool->T = T;
        atomic_store(&pool->pending, (unsigned long)workers);
        atomic_fetch_add_explicit(&pool->gen, 1, memory_order_release);
        pthread_cond_broadcast(&pool->go);
        pthread_mutex_unlock(&pool->mu);
    }
    run_slice(&s[0]); /* also claims what threads that never started would have */
    if (workers && !spin(&pool->pending, 0, true)) {
        pthread_mutex_lock(&pool->mu);
        while (atomic_load(&pool->pending)) pthread_cond_wait(&pool->done, &pool->mu);
        pthread_mutex_unlock(&pool->mu);
    }
    return QRT_STATUS_OK;
}

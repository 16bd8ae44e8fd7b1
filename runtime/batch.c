/* batch.c - an int8 model over many images on several threads (batch.h). POSIX threads
 * started per run: a run is thousands of images, so starting threads costs little next
 * to it, and nothing lives between runs but the caller's arenas. */
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

size_t qrt_batch_mem_size(const qrt_model *m, int threads) {
    if (!m || !m->ops) return 0;
    return (size_t)clamp_threads(threads < 1 ? 1 : threads) * arena_stride(m);
}

qrt_status qrt_batch_init(qrt_batch *b, const qrt_model *m, int threads, void *mem, size_t mem_len) {
    if (!b) return QRT_STATUS_INVALID_ARG;
    *b = (qrt_batch){0};
    if (!m || !m->ops || !mem || threads < 1) return QRT_STATUS_INVALID_ARG;
    threads = clamp_threads(threads);
    if (mem_len < qrt_batch_mem_size(m, threads)) return QRT_STATUS_NO_MEMORY;
    *b = (qrt_batch){.m = m, .threads = threads, .chunk = chunk(m), .arenas = mem, .stride = arena_stride(m)};
    return QRT_STATUS_OK;
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

qrt_status qrt_batch_run(const qrt_batch *b, const uint8_t *pixels, int n, int *labels, int8_t *logits) {
    if (!b || !b->m || !b->arenas || !pixels) return QRT_STATUS_INVALID_ARG;
    if (n <= 0) return QRT_STATUS_OK;
    const int T = b->threads < n ? b->threads : n;
    slice s[QRT_BATCH_MAX_THREADS];
    pthread_t tid[QRT_BATCH_MAX_THREADS];
    bool started[QRT_BATCH_MAX_THREADS] = {0};
    for (int t = 0; t < T; t++)
        s[t] = (slice){b->m, b->chunk, b->arenas + (size_t)t * b->stride, pixels, (int)((long long)n * t / T),
                       (int)((long long)n * (t + 1) / T), labels, logits};
    for (int t = 1; t < T; t++) started[t] = pthread_create(&tid[t], NULL, run_slice, &s[t]) == 0;
    run_slice(&s[0]);
    for (int t = 1; t < T; t++) {
        if (started[t]) pthread_join(tid[t], NULL);
        else run_slice(&s[t]);
    }
    return QRT_STATUS_OK;
}

/* arena.h - a bump allocator for per-step memory (activations, gradients, the tape).
 *
 * A training step allocates every intermediate tensor from one arena and frees them all
 * at once with qat_arena_reset(). Reset keeps the blocks it obtained from malloc, so a
 * loop that repeats the same step asks the system for memory only during its first step
 * (qat_arena.n_system_allocs stops growing; the tests check this).
 *
 *     qat_arena a;
 *     qat_arena_init(&a, 1 << 20);          // first block: 1 MiB (more blocks on demand)
 *     float *x = qat_arena_alloc(&a, n * sizeof(float));
 *     ...
 *     qat_arena_reset(&a);                  // everything above is gone, blocks are kept
 *     qat_arena_free(&a);
 *
 * Every allocation is aligned to QAT_ARENA_ALIGN bytes (a cache line, and enough for
 * any SIMD load).
 */
#ifndef QAT_ARENA_H
#define QAT_ARENA_H

#include <stddef.h>

#define QAT_ARENA_ALIGN 64

typedef struct qat_arena_block {
    struct qat_arena_block *next;
    size_t size; /* usable bytes after the header */
    size_t used;
    unsigned char *base;
} qat_arena_block;

typedef struct qat_arena {
    qat_arena_block *first;
    qat_arena_block *cur;
    size_t block_size;      /* minimum size of a new block */
    size_t n_system_allocs; /* how many blocks were obtained from the system, ever */
    size_t peak;            /* the largest total in use at once, in bytes */
    size_t in_use;
} qat_arena;

void qat_arena_init(qat_arena *a, size_t block_size);
/* Returns NULL only when malloc fails. Memory is not zeroed. */
void *qat_arena_alloc(qat_arena *a, size_t bytes);
/* Same, zero-filled. */
void *qat_arena_calloc(qat_arena *a, size_t bytes);
void qat_arena_reset(qat_arena *a);
void qat_arena_free(qat_arena *a);

#endif

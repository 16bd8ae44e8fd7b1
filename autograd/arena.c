/* MAP_ANONYMOUS (POSIX 2024; glibc shows it with _DEFAULT_SOURCE beside the build's
 * _POSIX_C_SOURCE=200809L) */
#define _DEFAULT_SOURCE 1
#include "arena.h"

#include <stdlib.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define QAT_ARENA_MMAP 1
#endif

static size_t align_up(size_t n) {
    return (n + QAT_ARENA_ALIGN - 1) & ~(size_t)(QAT_ARENA_ALIGN - 1);
}

void qat_arena_init(qat_arena *a, size_t block_size) {
    memset(a, 0, sizeof *a);
    a->block_size = block_size ? block_size : ((size_t)1 << 20);
}

/* A block's memory comes straight from the system where it can (mmap), so that freeing
 * a tape gives it back: from malloc, blocks of a megabyte or more land in glibc's heap
 * once its mmap threshold has risen to their size (it rises with every large free), and
 * a freed heap block stays in the process. A command that trains, evaluates and writes a
 * report one phase after another then held every phase's arena at once: `qat demo`
 * peaked at 490 MiB. */
static unsigned char *block_memory(size_t size) {
#ifdef QAT_ARENA_MMAP
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p; /* page-aligned: a multiple of QAT_ARENA_ALIGN */
#else
    return aligned_alloc(QAT_ARENA_ALIGN, size);
#endif
}

static void block_memory_free(unsigned char *p, size_t size) {
#ifdef QAT_ARENA_MMAP
    if (p) munmap(p, size);
#else
    (void)size;
    free(p);
#endif
}

static qat_arena_block *block_new(size_t size) {
    qat_arena_block *b = malloc(sizeof *b);
    if (!b) return NULL;
    b->base = block_memory(align_up(size));
    if (!b->base) {
        free(b);
        return NULL;
    }
    b->next = NULL;
    b->size = align_up(size);
    b->used = 0;
    return b;
}

void *qat_arena_alloc(qat_arena *a, size_t bytes) {
    size_t need = align_up(bytes ? bytes : 1);
    /* Walk the kept blocks first: after a reset they are reused in the same order. */
    qat_arena_block *b = a->cur;
    while (b && b->used + need > b->size) {
        b = b->next;
        if (b) b->used = 0;
    }
    if (!b) {
        size_t size = need > a->block_size ? need : a->block_size;
        b = block_new(size);
        if (!b) return NULL;
        a->n_system_allocs++;
        if (!a->first) {
            a->first = b;
        } else {
            qat_arena_block *last = a->cur ? a->cur : a->first;
            while (last->next) last = last->next;
            last->next = b;
        }
    }
    a->cur = b;
    void *p = b->base + b->used;
    b->used += need;
    a->in_use += need;
    if (a->in_use > a->peak) a->peak = a->in_use;
    return p;
}

void *qat_arena_calloc(qat_arena *a, size_t bytes) {
    void *p = qat_arena_alloc(a, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void qat_arena_reset(qat_arena *a) {
    for (qat_arena_block *b = a->first; b; b = b->next) b->used = 0;
    a->cur = a->first;
    a->in_use = 0;
}

void qat_arena_free(qat_arena *a) {
    qat_arena_block *b = a->first;
    while (b) {
        qat_arena_block *n = b->next;
        block_memory_free(b->base, b->size);
        free(b);
        b = n;
    }
    memset(a, 0, sizeof *a);
}

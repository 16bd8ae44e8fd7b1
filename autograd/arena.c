#include "arena.h"

#include <stdlib.h>
#include <string.h>

static size_t align_up(size_t n) {
    return (n + QAT_ARENA_ALIGN - 1) & ~(size_t)(QAT_ARENA_ALIGN - 1);
}

void qat_arena_init(qat_arena *a, size_t block_size) {
    memset(a, 0, sizeof *a);
    a->block_size = block_size ? block_size : ((size_t)1 << 20);
}

static qat_arena_block *block_new(size_t size) {
    qat_arena_block *b = malloc(sizeof *b);
    if (!b) return NULL;
    b->base = aligned_alloc(QAT_ARENA_ALIGN, align_up(size));
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
        free(b->base);
        free(b);
        b = n;
    }
    memset(a, 0, sizeof *a);
}

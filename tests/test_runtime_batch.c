/* test_runtime_batch.c - the int8 batch runner (runtime/batch.h): on 1, 2 and 3 threads
 * (and more threads than images), every image's logits and label equal qrt_run's on it
 * alone, byte for byte, on every kernel path; labels and logits may each be NULL; the
 * caller's buffer may be unaligned and exactly qrt_batch_mem_size bytes; a batch runs
 * again on its sleeping threads, and refuses to run once freed; bad arguments are
 * refused. The model is testutil.c's whole-file test model (conv, max pool, packed
 * 4-bit depthwise conv, add, average pools, grouped conv, linear). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "runtime/batch.h"
#include "runtime/runtime.h"

enum { N_IMAGES = 37 }; /* not a multiple of 2 or 3: slices of unequal length */

typedef struct bfix {
    uint8_t *file, *mem;
    qrt_model m;
    tmodel tm;
    int in_n, K;
    uint8_t *px;          /* N_IMAGES images */
    int8_t *want_logits;  /* qrt_run, image by image */
    int want_labels[N_IMAGES];
} bfix;

static void bfix_init(bfix *f) {
    memset(f, 0, sizeof *f);
    tmodel_init(&f->tm, 44);
    size_t len;
    f->file = tmodel_bytes(&f->tm, &len);
    const size_t need = qrt_model_mem_size(f->file, len);
    f->mem = xmalloc(need);
    qrt_error err;
    if (qrt_model_load(&f->m, f->file, len, f->mem, need, &err) != QRT_STATUS_OK) fail_msg("load: %s", err.msg);
    f->in_n = qrt_model_input(&f->m)->numel;
    f->K = qrt_model_n_outputs(&f->m);
    f->px = xmalloc((size_t)N_IMAGES * f->in_n);
    trng r = {5};
    for (size_t i = 0; i < (size_t)N_IMAGES * f->in_n; i++) f->px[i] = (uint8_t)rint_in(&r, 0, 255);
    f->want_logits = xmalloc((size_t)N_IMAGES * f->K);
    uint8_t *arena = xmalloc(qrt_arena_size(&f->m));
    for (int i = 0; i < N_IMAGES; i++)
        if (qrt_run(&f->m, f->px + (size_t)i * f->in_n, arena, f->want_logits + (size_t)i * f->K,
                    &f->want_labels[i]) != QRT_STATUS_OK)
            fail_msg("qrt_run failed on image %d", i);
    free(arena);
    int distinct = 0;
    for (int i = 1; i < N_IMAGES; i++) distinct += f->want_labels[i] != f->want_labels[0];
    if (!distinct) fail_msg("degenerate test: every image has label %d", f->want_labels[0]);
}

static void bfix_free(bfix *f) {
    free(f->file), free(f->mem), free(f->px), free(f->want_logits);
    tmodel_free(&f->tm);
}

static void check_run(const bfix *f, int T, int n, bool with_labels, bool with_logits, const int *labels,
                      const int8_t *logits);

/* Runs n images of f on T threads, the buffer at an odd address; compares with qrt_run. */
static void run_and_compare(bfix *f, int T, int n, bool with_labels, bool with_logits) {
    const size_t mlen = qrt_batch_mem_size(&f->m, T);
    if (mlen < (size_t)(T < QRT_BATCH_MAX_THREADS ? T : QRT_BATCH_MAX_THREADS) * qrt_arena_size(&f->m))
        fail_msg("T=%d: qrt_batch_mem_size %zu is less than an arena per thread", T, mlen);
    uint8_t *buf = xmalloc(mlen + 1);
    memset(buf, 0x5a, mlen + 1); /* stale arenas must not matter */
    qrt_batch b;
    if (qrt_batch_init(&b, &f->m, T, buf + 1, mlen) != QRT_STATUS_OK) fail_msg("T=%d: init failed", T);
    int labels[N_IMAGES];
    int8_t *logits = xmalloc((size_t)N_IMAGES * f->K);
    for (int rep = 0; rep < 2; rep++) { /* the threads sleep between runs, then take the next */
        for (int i = 0; i < N_IMAGES; i++) labels[i] = -7;
        memset(logits, 0x33, (size_t)N_IMAGES * f->K);
        if (qrt_batch_run(&b, f->px, n, with_labels ? labels : NULL, with_logits ? logits : NULL) != QRT_STATUS_OK)
            fail_msg("T=%d n=%d: run %d failed", T, n, rep);
        check_run(f, T, n, with_labels, with_logits, labels, logits);
    }
    qrt_batch_free(&b);
    if (qrt_batch_run(&b, f->px, n, NULL, logits) != QRT_STATUS_INVALID_ARG) fail_msg("T=%d: a freed batch ran", T);
    qrt_batch_free(&b); /* a second free does nothing */
    free(logits);
    free(buf);
}

/* The labels and logits of a run of n images against qrt_run's, nothing written past n. */
static void check_run(const bfix *f, int T, int n, bool with_labels, bool with_logits, const int *labels,
                      const int8_t *logits) {
    for (int i = 0; i < N_IMAGES; i++) {
        const bool ran = i < n;
        if (with_labels && ran && labels[i] != f->want_labels[i])
            fail_msg("T=%d n=%d: image %d has label %d, qrt_run gives %d", T, n, i, labels[i], f->want_labels[i]);
        if (!(with_labels && ran) && labels[i] != -7) fail_msg("T=%d n=%d: label %d written", T, n, i);
        for (int k = 0; with_logits && ran && k < f->K; k++)
            if (logits[(size_t)i * f->K + k] != f->want_logits[(size_t)i * f->K + k])
                fail_msg("T=%d n=%d: image %d logit %d is %d, qrt_run gives %d", T, n, i, k,
                         logits[(size_t)i * f->K + k], f->want_logits[(size_t)i * f->K + k]);
        for (int k = 0; !(with_logits && ran) && k < f->K; k++)
            if (logits[(size_t)i * f->K + k] != 0x33) fail_msg("T=%d n=%d: logits of image %d written", T, n, i);
    }
}

static void test_thread_counts(void **state) {
    (void)state;
    bfix f;
    bfix_init(&f);
    const int counts[] = {1, 2, 3, N_IMAGES + 5};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        run_and_compare(&f, counts[c], N_IMAGES, true, true);
        run_and_compare(&f, counts[c], N_IMAGES, true, false);
        run_and_compare(&f, counts[c], N_IMAGES, false, true);
        run_and_compare(&f, counts[c], 2, true, true); /* fewer images than threads */
        run_and_compare(&f, counts[c], 0, true, true);
    }
    /* Every kernel path: the same bytes. */
    for (int isa = 0; isa < QRT_ISA_COUNT; isa++) {
        qrt_model_set_isa(&f.m, (qrt_isa)isa);
        run_and_compare(&f, 3, N_IMAGES, true, true);
    }
    bfix_free(&f);
}

static void test_bad_arguments(void **state) {
    (void)state;
    bfix f;
    bfix_init(&f);
    const size_t mlen = qrt_batch_mem_size(&f.m, 2);
    uint8_t *buf = xmalloc(mlen);
    qrt_batch b;
    if (qrt_batch_init(&b, &f.m, 2, buf, mlen - 1) != QRT_STATUS_NO_MEMORY) fail_msg("a short buffer was accepted");
    if (qrt_batch_init(&b, &f.m, 0, buf, mlen) != QRT_STATUS_INVALID_ARG) fail_msg("0 threads were accepted");
    if (qrt_batch_init(&b, &f.m, 2, NULL, mlen) != QRT_STATUS_INVALID_ARG) fail_msg("a NULL buffer was accepted");
    if (qrt_batch_init(&b, NULL, 2, buf, mlen) != QRT_STATUS_INVALID_ARG) fail_msg("a NULL model was accepted");
    if (qrt_batch_init(NULL, &f.m, 2, buf, mlen) != QRT_STATUS_INVALID_ARG) fail_msg("a NULL batch was accepted");
    const qrt_model empty = {0};
    if (qrt_batch_init(&b, &empty, 2, buf, mlen) != QRT_STATUS_INVALID_ARG) fail_msg("an unloaded model was accepted");
    if (qrt_batch_run(&b, f.px, 3, NULL, NULL) != QRT_STATUS_INVALID_ARG) fail_msg("a batch left unset ran");
    if (qrt_batch_mem_size(NULL, 2) != 0) fail_msg("mem_size of no model");
    if (qrt_batch_mem_size(&f.m, 1000) != qrt_batch_mem_size(&f.m, QRT_BATCH_MAX_THREADS))
        fail_msg("the thread count is not clamped");
    if (qrt_batch_init(&b, &f.m, 1000, buf, mlen) != QRT_STATUS_NO_MEMORY) fail_msg("1000 threads fit in 2 arenas");
    if (qrt_batch_init(&b, &f.m, 2, buf, mlen) != QRT_STATUS_OK || b.threads != 2) fail_msg("init");
    if (qrt_batch_run(&b, NULL, 3, NULL, NULL) != QRT_STATUS_INVALID_ARG) fail_msg("NULL pixels were accepted");
    if (qrt_batch_run(NULL, f.px, 3, NULL, NULL) != QRT_STATUS_INVALID_ARG) fail_msg("a NULL batch ran");
    if (qrt_batch_run(&b, f.px, -1, NULL, NULL) != QRT_STATUS_OK) fail_msg("n < 0 is not a no-op");
    qrt_batch_free(&b); /* before its buffer: the threads' state lives there */
    free(buf);
    bfix_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_thread_counts),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

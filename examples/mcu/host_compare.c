/* host_compare.c - checks the firmware's output against the host runtime (docs/mcu.md):
 *
 *     mcu_host_compare DIR/qat_model.int8 RUN.txt [DATA]
 *
 * RUN.txt is what the firmware printed under qemu (main.c); DATA the data set whose test
 * images `qat export --images` embedded (default Fashion-MNIST). For every image line it
 * runs the same int8 file through runtime/ on the host (its best kernels) and requires the
 * same label, prediction and logits; it also requires the firmware's model hash to be the
 * file's. Prints "N images identical" and exits 0, or names the first difference and
 * exits 1. (tests/test_mcu.c does the same for its own model.) */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataset.h"
#include "runtime/runtime.h"

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(b);
        return NULL;
    }
    fclose(f);
    b[n] = '\0';
    *len = (size_t)n;
    return b;
}

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mcu_host_compare: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: mcu_host_compare MODEL.int8 RUN.txt [DATA]\n");
        return 2;
    }
    size_t len, rlen;
    uint8_t *file = (uint8_t *)slurp(argv[1], &len);
    char *run = slurp(argv[2], &rlen);
    if (!file) return fail("%s: cannot read", argv[1]);
    if (!run) return fail("%s: cannot read", argv[2]);
    size_t ms = qrt_model_mem_size(file, len);
    void *mem = malloc(ms ? ms : 1);
    qrt_model m;
    qrt_error err;
    if (!mem || qrt_model_load(&m, file, len, mem, ms, &err)) {
        fprintf(stderr, "mcu_host_compare: %s: %s\n", argv[1], err.msg);
        return 1;
    }
    int8_t *arena = malloc(qrt_arena_size(&m)), logits[256];
    const int K = qrt_model_n_outputs(&m);
    if (!arena || K > 256) return fail("%s: too many outputs", argv[1]);
    qat_dataset test;
    qat_error qe = {0};
    const int *shape = qrt_model_input(&m)->shape;
    if (qat_dataset_open(&test, argc == 4 ? argv[3] : QAT_FASHION_MNIST_DIR, NULL, QAT_SPLIT_TEST, 3, shape, &qe)) {
        fprintf(stderr, "mcu_host_compare: %s\n", qe.msg);
        return 1;
    }
    if (test.dim != qrt_model_input(&m)->numel) return fail("%s: the data do not fit the model", argv[1]);
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) h = (h ^ file[i]) * 16777619u;
    const char *p = strstr(run, "model ");
    unsigned long fw_hash = 0;
    if (!p || sscanf(p, "model %*u bytes fnv1a %lx", &fw_hash) != 1 || fw_hash != h)
        return fail("%s: the firmware does not hold this file (hash %lx, the file's %lx)", argv[2], fw_hash,
                    (unsigned long)h);
    int n = 0;
    for (p = strstr(run, "\nimage "); p; p = strstr(p + 1, "\nimage ")) {
        int idx, label, pred, used = 0;
        if (sscanf(p + 1, "image %d label %d pred %d logits%n", &idx, &label, &pred, &used) != 3 || !used ||
            idx < 0 || idx >= test.n)
            return fail("%s: a bad image line", argv[2]);
        int host_pred;
        qrt_run(&m, test.pixels + (size_t)idx * (size_t)test.dim, arena, logits, &host_pred);
        if (label != test.labels[idx]) return fail("%s: image %d: label %d, the data set's %d", argv[2], idx, label, (int)test.labels[idx]);
        if (pred != host_pred) return fail("%s: image %d: the firmware predicts %d, the host %d", argv[2], idx, pred, host_pred);
        const char *q = p + 1 + used;
        for (int k = 0; k < K; k++) {
            char *e;
            long v = strtol(q, &e, 10);
            if (e == q || v != logits[k])
                return fail("%s: image %d: logit %d is %ld, the host's %d", argv[2], idx, k, v, logits[k]);
            q = e;
        }
        n++;
    }
    if (n == 0) return fail("%s: no image lines", argv[2]);
    printf("%s: %d images identical to the host runtime (labels, predictions, logits)\n", argv[2], n);
    qat_dataset_free(&test);
    free(arena);
    free(mem);
    free(file);
    free(run);
    return 0;
}

/* bench_int8.c - the int8 runtime's speed per path (portable, AVX2, AVX-512 VNNI), side
 * by side in one run, on one thread:
 *
 *   bench_int8 [--images N] [--reps R] MODEL.int8 ...
 *
 * For each model file: images/s and the median latency of qrt_run_isa over N images
 * (R rounds, interleaving the paths so that a noisy machine hurts them alike), the
 * speedup over the portable path and the logits agreement. Then the peak of the int8
 * conv kernel: a 1x1 conv with C = OC = 512 over a 32x32 plane (268 M multiply-adds),
 * in GOP/s (2 ops per multiply-add), so a report can give each model's fraction of it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/runtime.h"
#include "runtime/simd.h"
#include "bench_util.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Multiply-adds of the model's conv2d and linear ops. */
static double model_macs(const qrt_model *m) {
    double macs = 0;
    for (int i = 0; i < qrt_model_n_ops(m); i++) {
        const qrt_op *op = qrt_model_op(m, i);
        if (op->kind != QRT_OP_CONV2D && op->kind != QRT_OP_LINEAR) continue;
        const qrt_value *x = qrt_model_value(m, op->in[0]), *y = qrt_model_value(m, op->out);
        if (op->kind == QRT_OP_LINEAR) macs += (double)x->numel * y->numel;
        else macs += (double)y->numel * (x->shape[0] / op->groups) * op->k * op->k;
    }
    return macs;
}

static void bench_model(const char *path, int n_images, int reps) {
    size_t len;
    uint8_t *file = bench_read_file(path, &len);
    if (!file) {
        fprintf(stderr, "bench_int8: cannot read %s\n", path);
        exit(1);
    }
    const size_t need = qrt_model_mem_size(file, len);
    void *mem = malloc(need ? need : 1);
    qrt_model m;
    qrt_error err;
    if (qrt_model_load(&m, file, len, mem, need, &err) != QRT_STATUS_OK) {
        fprintf(stderr, "bench_int8: %s: %s\n", path, err.msg);
        exit(1);
    }
    const size_t alen = qrt_arena_size(&m);
    void *arena = malloc(alen);
    const int in_n = qrt_model_input(&m)->numel, n_out = qrt_model_n_outputs(&m);
    uint8_t *px = malloc((size_t)n_images * in_n);
    uint64_t s = 12345;
    for (size_t i = 0; i < (size_t)n_images * in_n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        px[i] = (uint8_t)(s >> 56);
    }
    const double macs = model_macs(&m);
    printf("%s: %d ops, %.2f M MACs, model memory %zu bytes, arena %zu bytes (activations %zu)\n", path,
           qrt_model_n_ops(&m), macs / 1e6, need, alen, m.arena_size);

    qrt_isa paths[QRT_ISA_COUNT];
    int np = 0;
    for (int i = 0; i < QRT_ISA_COUNT; i++)
        if (qrt_isa_supported((qrt_isa)i)) paths[np++] = (qrt_isa)i;
    double *lat[QRT_ISA_COUNT], total[QRT_ISA_COUNT] = {0};
    int mismatches[QRT_ISA_COUNT] = {0};
    int8_t *ref = malloc((size_t)n_images * n_out), got[4096];
    for (int i = 0; i < n_images; i++) qrt_run_isa(&m, QRT_ISA_PORTABLE, px + (size_t)i * in_n, arena, ref + (size_t)i * n_out, NULL);
    for (int k = 0; k < np; k++) lat[k] = malloc(sizeof(double) * (size_t)n_images * reps);
    /* the portable path is ~100x slower: fewer of its images per round */
    const int n_port = n_images / 10 > 0 ? n_images / 10 : 1;
    int counts[QRT_ISA_COUNT] = {0};
    for (int r = 0; r < reps; r++)
        for (int k = 0; k < np; k++) {
            const int n = paths[k] == QRT_ISA_PORTABLE ? n_port : n_images;
            const double t0 = now();
            for (int i = 0; i < n; i++) {
                const double a = now();
                qrt_run_isa(&m, paths[k], px + (size_t)i * in_n, arena, got, NULL);
                lat[k][counts[k]++] = now() - a;
                if (memcmp(got, ref + (size_t)i * n_out, (size_t)n_out)) mismatches[k]++;
            }
            total[k] += now() - t0;
        }
    printf("  %-11s %12s %14s %10s %9s %10s\n", "path", "images/s", "median (us)", "GMAC/s", "speedup", "logits");
    double base = 0;
    for (int k = 0; k < np; k++) {
        qsort(lat[k], (size_t)counts[k], sizeof(double), cmp_d);
        const double med = lat[k][counts[k] / 2];
        if (paths[k] == QRT_ISA_PORTABLE) base = med;
        printf("  %-11s %12.0f %14.2f %10.2f %8.1fx %10s\n", qrt_isa_str(paths[k]), counts[k] / total[k], med * 1e6,
               macs / med / 1e9, base > 0 ? base / med : 1.0, mismatches[k] ? "DIFFER" : "equal");
        free(lat[k]);
    }
    free(ref), free(px), free(arena), free(mem), free(file);
}

/* The conv kernel's peak: a 1x1 conv, C = OC = 512, 32x32. */
static void bench_peak(void) {
    const qrt_conv_params p = {.C = 512, .H = 32, .W = 32, .OC = 512, .OH = 32, .OW = 32, .k = 1, .stride = 1,
                               .pad = 0, .groups = 1, .z_in = -3, .z_out = 5, .act_min = -128, .act_max = 127};
    const size_t K = 512, nin = (size_t)512 * 32 * 32;
    int8_t *in = malloc(nin), *out = malloc(nin), *w = malloc(512 * K);
    int32_t b[512], mult[512], shift[512];
    uint64_t s = 99;
    for (size_t i = 0; i < nin; i++) s = s * 6364136223846793005ull + 1, in[i] = (int8_t)(s >> 56);
    for (size_t i = 0; i < 512 * K; i++) s = s * 6364136223846793005ull + 1, w[i] = (int8_t)((int)(s >> 57) - 64);
    for (int c = 0; c < 512; c++) b[c] = 100 * c, mult[c] = 1500000000, shift[c] = -14;
    const size_t psz = qrt_conv2d_pack_size(&p), ssz = qrt_conv2d_scratch_size(&p);
    void *pmem = malloc(psz ? psz : 1), *scratch = malloc(ssz ? ssz : 1);
    const void *packed = qrt_conv2d_pack(pmem, w, b, mult, shift, &p);
    const double ops = 2.0 * 512 * 512 * 1024;
    printf("peak: 1x1 conv C=OC=512 over 32x32 (%.0f M MACs), one thread\n", ops / 2e6);
    for (int i = QRT_ISA_AVX2; i < QRT_ISA_COUNT && packed; i++) {
        if (!qrt_isa_supported((qrt_isa)i)) continue;
        double best = 1e9;
        for (int r = 0; r < 7; r++) {
            const double t0 = now();
            qrt_conv2d_s8_isa((qrt_isa)i, out, in, packed, &p, scratch);
            const double t = now() - t0;
            if (t < best) best = t;
        }
        printf("  %-11s %8.1f GOP/s (%.2f ms)\n", qrt_isa_str((qrt_isa)i), ops / best / 1e9, best * 1e3);
    }
    {
        const double t0 = now();
        qrt_conv2d_s8(out, in, w, b, mult, shift, &p);
        const double t = now() - t0;
        printf("  %-11s %8.1f GOP/s (%.2f ms)\n", "portable", ops / t / 1e9, t * 1e3);
    }
    free(in), free(out), free(w), free(pmem), free(scratch);
}

int main(int argc, char **argv) {
    int n_images = 2000, reps = 3, n_files = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--images") && i + 1 < argc) n_images = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--help") || argv[i][0] == '-') {
            printf("usage: bench_int8 [--images N] [--reps R] MODEL.int8 ...\n");
            return argv[i][1] == '-' && argv[i][2] == 'h' ? 0 : 2;
        } else n_files++;
    }
    if (n_images < 1) n_images = 1;
    if (reps < 1) reps = 1;
    printf("int8 runtime: best path %s; every path this CPU has is measured\n", qrt_isa_str(qrt_isa_best()));
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--images") || !strcmp(argv[i], "--reps")) {
            i++;
            continue;
        }
        bench_model(argv[i], n_images, reps);
    }
    if (!n_files) printf("(no model files given: the peak only)\n");
    bench_peak();
    return 0;
}

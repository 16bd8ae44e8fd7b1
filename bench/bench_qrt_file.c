/* bench_qrt_file.c - qat's int8 runtime on exported model files, measured the way
 * bench/ort_bench.js measures ONNX Runtime on the ONNX exports of the same checkpoints
 * (bench/onnx_bench.sh runs both; docs/onnx.md):
 *
 *   bench_qrt_file IMAGES.u8 [--threads T] [--rounds R] [--seconds S] MODEL.int8 ...
 *
 * One process: each model is loaded once (the best kernels this CPU has), warmed up,
 * then R rounds (default 5) of
 *   - batch 256: images/s over S seconds (default 2) of back-to-back qrt_batch_run
 *     calls on T threads (default 2);
 *   - batch 1:   the median latency of qrt_run calls (one thread) in S seconds;
 * and the medians over the rounds, one JSON line per model. The images are the first
 * 256 of IMAGES.u8 (raw uint8, the model's C*H*W each).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/batch.h"
#include "runtime/runtime.h"
#include "bench_util.h"

enum { B = 256, MAX_SAMPLES = 1 << 20, MAX_ROUNDS = 64 };

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_d);
    return v[n / 2];
}

int main(int argc, char **argv) {
    int threads = 2, rounds = 5;
    double seconds = 2;
    if (argc < 3) {
        fprintf(stderr, "usage: bench_qrt_file IMAGES.u8 [--threads T] [--rounds R] [--seconds S] MODEL.int8 ...\n");
        return 2;
    }
    size_t n_img;
    uint8_t *img = bench_read_file(argv[1], &n_img);
    if (!img) {
        fprintf(stderr, "bench_qrt_file: cannot read %s\n", argv[1]);
        return 1;
    }
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
            continue;
        }
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            rounds = atoi(argv[++i]);
            if (rounds < 1 || rounds > MAX_ROUNDS) rounds = 5;
            continue;
        }
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            seconds = atof(argv[++i]);
            continue;
        }
        size_t len;
        uint8_t *file = bench_read_file(argv[i], &len);
        if (!file) {
            fprintf(stderr, "bench_qrt_file: cannot read %s\n", argv[i]);
            return 1;
        }
        size_t ms = qrt_model_mem_size(file, len);
        void *mem = malloc(ms ? ms : 1);
        qrt_model m;
        qrt_error err;
        if (!mem || qrt_model_load(&m, file, len, mem, ms, &err)) {
            fprintf(stderr, "bench_qrt_file: %s: %s\n", argv[i], err.msg);
            return 1;
        }
        const size_t per = (size_t)qrt_model_input(&m)->numel;
        if (n_img < B * per) {
            fprintf(stderr, "bench_qrt_file: %s has fewer than %d images of %zu bytes\n", argv[1], B, per);
            return 1;
        }
        qrt_batch b;
        const size_t bs = qrt_batch_mem_size(&m, threads);
        void *arenas = malloc(bs), *arena = malloc(qrt_arena_size(&m));
        int *labels = malloc(sizeof(int) * B);
        double *lat = malloc(sizeof(double) * MAX_SAMPLES);
        double thr[MAX_ROUNDS], med[MAX_ROUNDS];
        if (!arenas || !arena || !labels || !lat || qrt_batch_init(&b, &m, threads, arenas, bs)) {
            fprintf(stderr, "bench_qrt_file: out of memory\n");
            return 1;
        }
        for (int w = 0; w < 3; w++) qrt_batch_run(&b, img, B, labels, NULL); /* warm-up */
        for (int w = 0; w < 50; w++) qrt_run(&m, img, arena, NULL, labels);
        for (int r = 0; r < rounds; r++) {
            double t0 = now();
            long calls = 0;
            while (now() - t0 < seconds) {
                qrt_batch_run(&b, img, B, labels, NULL);
                calls++;
            }
            thr[r] = (double)calls * B / (now() - t0);
            size_t n = 0;
            t0 = now();
            while (now() - t0 < seconds && n < MAX_SAMPLES) {
                double s = now();
                qrt_run(&m, img + (n % B) * per, arena, NULL, labels);
                lat[n++] = now() - s;
            }
            med[r] = 1e6 * median(lat, n);
        }
        printf("{\"engine\": \"qat-runtime\", \"model\": \"%s\", \"kernels\": \"%s\", \"threads\": %d, \"rounds\": %d, "
               "\"batch256_images_per_s\": %.0f, \"batch1_latency_us\": %.1f}\n",
               argv[i], qrt_isa_str(m.isa), b.threads, rounds, median(thr, (size_t)rounds), median(med, (size_t)rounds));
        fflush(stdout);
        qrt_batch_free(&b); /* before its buffer: the threads' state lives there */
        free(arenas);
        free(arena);
        free(labels);
        free(lat);
        free(mem);
        free(file);
    }
    free(img);
    return 0;
}

/* bench_train.c - training-step throughput of the reference models on random data.
 *
 * For the CNN and the MLP at batch 64, in float and with QAT w8a8 fake quantization
 * (quant/quant.h): forward, cross-entropy, backward and an SGD momentum step, timed over
 * many steps after a warm-up. The models alternate in rounds so that drift of this noisy
 * machine hits all alike; the table reports the median of the rounds, the QAT/float time
 * ratio, and the peak resident memory of the whole run.
 *
 *     bench_train [rounds] [steps_per_round]
 *
 * Thread count: OpenBLAS's (OPENBLAS_NUM_THREADS; all cores by default).
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include "layers/loss.h"
#include "layers/model.h"
#include "optim/optim.h"
#include "quant/quant.h"

enum { BATCH = 64 };

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct bench_model {
    const char *name;
    qat_model *m;
    qat_optim opt;
    qat_tape tape;
    double *rates;
} bench_model;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Runs `steps` training steps; returns samples per second. */
static double run(bench_model *b, const float *x, const int32_t *y, int steps) {
    double t0 = now();
    for (int s = 0; s < steps; s++) {
        qat_tape_reset(&b->tape);
        qat_tensor *in = qat_tape_input(&b->tape, 4, (int[]){BATCH, 1, 28, 28}, x);
        qat_tensor *loss = qat_cross_entropy(&b->tape, qat_model_forward(b->m, &b->tape, in), y);
        qat_model_zero_grad(b->m);
        if (qat_tape_backward(&b->tape, loss) != QAT_STATUS_OK) {
            fprintf(stderr, "bench_train: %s\n", b->tape.err.msg);
            exit(1);
        }
        qat_optim_step(&b->opt, b->m->params, b->m->grads, 0.01f);
    }
    return steps * BATCH / (now() - t0);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    int steps = argc > 2 ? atoi(argv[2]) : 20;
    if (rounds < 1 || steps < 1) {
        fprintf(stderr, "usage: %s [rounds >= 1] [steps_per_round >= 1]\n", argv[0]);
        return 2;
    }
    qat_rng rng;
    qat_rng_init(&rng, 7);
    float *x = malloc(sizeof(float) * BATCH * 784);
    int32_t y[BATCH];
    for (int i = 0; i < BATCH * 784; i++) x[i] = qat_rng_normal(&rng);
    for (int i = 0; i < BATCH; i++) y[i] = (int32_t)qat_rng_below(&rng, 10);

    enum { NM = 4 };
    bench_model models[NM] = {{.name = "CNN", .m = qat_model_cnn(&rng)},
                              {.name = "CNN-QAT", .m = qat_model_cnn(&rng)},
                              {.name = "MLP", .m = qat_model_mlp(&rng)},
                              {.name = "MLP-QAT", .m = qat_model_mlp(&rng)}};
    qat_optim_config cfg = qat_optim_config_default(QAT_OPTIM_SGD);
    cfg.momentum = 0.9;
    for (int i = 0; i < NM; i++) {
        if (!models[i].m) return 1;
        if (i % 2) { /* QAT w8a8, ranges calibrated on the benchmark batch */
            qat_quant_spec spec = qat_quant_spec_default();
            qat_quant_input in = {true, 0.286f, 0.353f};
            qat_tape t;
            qat_tape_init(&t, 0);
            t.training = false;
            if (qat_quant_prepare(models[i].m, &spec, &in, NULL) || qat_quant_calibrate_begin(models[i].m, NULL))
                return 1;
            qat_model_forward(models[i].m, &t, qat_tape_input(&t, 4, (int[]){BATCH, 1, 28, 28}, x));
            qat_quant_calibrate_end(models[i].m, NULL);
            qat_tape_free(&t);
        }
        if (qat_optim_init(&models[i].opt, &cfg, models[i].m->n_params, NULL)) return 1;
        qat_tape_init(&models[i].tape, 0);
        models[i].rates = calloc((size_t)rounds, sizeof(double));
        run(&models[i], x, y, 3); /* warm-up: first-step allocations, caches */
    }
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < NM; i++) models[i].rates[r] = run(&models[i], x, y, steps);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const char *threads = getenv("OPENBLAS_NUM_THREADS");
    printf("training step, batch %d, %d rounds x %d steps, OpenBLAS threads: %s\n", BATCH,
           rounds, steps, threads ? threads : "default");
    printf("%-8s %12s %12s %12s %14s %16s\n", "model", "median/s", "min/s", "max/s", "step arena MiB",
           "time vs float");
    for (int i = 0; i < NM; i++) {
        qsort(models[i].rates, (size_t)rounds, sizeof(double), cmp_double);
        printf("%-8s %12.0f %12.0f %12.0f %14.1f", models[i].name, models[i].rates[rounds / 2],
               models[i].rates[0], models[i].rates[rounds - 1],
               (double)models[i].tape.arena.peak / (1 << 20));
        if (i % 2) printf(" %15.2fx", models[i - 1].rates[rounds / 2] / models[i].rates[rounds / 2]);
        printf("\n");
    }
    printf("peak resident memory of the run: %.1f MiB\n", (double)ru.ru_maxrss / 1024.0);
    for (int i = 0; i < NM; i++) {
        qat_tape_free(&models[i].tape);
        qat_optim_free(&models[i].opt);
        qat_model_free(models[i].m);
        free(models[i].rates);
    }
    free(x);
    return 0;
}

/* bench_train.c - training-step throughput of the reference models on random data.
 *
 * For the CNN, the DW-CNN (examples/dwcnn.model) and the MLP at batch 64, in float and
 * with QAT w8a8 fake quantization (quant/quant.h): forward, cross-entropy, backward and
 * an SGD momentum step, timed over many steps after a warm-up. The models alternate in
 * rounds so that drift of this noisy machine hits all alike; the table reports the
 * median of the rounds, the QAT/float time ratio, the step arena's peak, and the peak
 * resident memory (getrusage ru_maxrss) of the whole process.
 *
 *     bench_train [rounds] [steps_per_round] [threads] [--only NAME]
 *
 * threads: the pool's and OpenBLAS's (qat_set_num_threads); default QAT_NUM_THREADS from
 * the environment (read here: the library reads no environment), else all cores. --only NAME trains that model alone (CNN, CNN-QAT,
 * DW-CNN, ...), so the peak resident memory printed is that of a process training it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include <string.h>

#include "autograd/parallel.h"
#include "layers/loss.h"
#include "layers/model.h"
#include "layers/model_file.h"
#include "optim/optim.h"
#include "quant/quant.h"

enum { BATCH = 64 };

/* examples/dwcnn.model, without its comments. */
static const char DWCNN[] =
    "input 1 28 28\n"
    "conv2d out=16 kernel=3 pad=1\nbatchnorm\nrelu6\n"
    "conv2d out=16 kernel=3 stride=2 pad=1 groups=16\nbatchnorm\nrelu6\n"
    "conv2d out=32 kernel=1\nbatchnorm\nrelu6\n"
    "conv2d out=32 kernel=3 stride=2 pad=1 groups=32\nbatchnorm\nrelu6\n"
    "conv2d out=64 kernel=1\nbatchnorm\nrelu6\n"
    "conv2d out=64 kernel=3 pad=1 groups=64\nbatchnorm\nrelu6\n"
    "conv2d out=128 kernel=1\nbatchnorm\nrelu6\n"
    "global_avgpool\nlinear out=10\n";

static qat_model *dwcnn(qat_rng *rng) {
    qat_model *m = NULL;
    qat_error err = {0};
    if (qat_model_parse(DWCNN, "<dwcnn>", &m, &err) || qat_model_finalize(m, rng)) {
        fprintf(stderr, "bench_train: %s\n", err.status ? err.msg : m->err.msg);
        qat_model_free(m);
        return NULL;
    }
    return m;
}

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
    bool qat;
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
    int pos[3] = {5, 20, 0}, npos = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
        else if (npos < 3) pos[npos++] = atoi(argv[i]);
        else pos[0] = 0;
    }
    int rounds = pos[0], steps = pos[1], threads = pos[2];
    if (rounds < 1 || steps < 1 || threads < 0) {
        fprintf(stderr, "usage: %s [rounds >= 1] [steps_per_round >= 1] [threads] [--only NAME]\n",
                argv[0]);
        return 2;
    }
    const char *env = getenv("QAT_NUM_THREADS");
    if (threads == 0 && env && atoi(env) > 0) threads = atoi(env);
    if (threads > 0) qat_set_num_threads(threads);
    qat_rng rng;
    qat_rng_init(&rng, 7);
    float *x = malloc(sizeof(float) * BATCH * 784);
    int32_t y[BATCH];
    for (int i = 0; i < BATCH * 784; i++) x[i] = qat_rng_normal(&rng);
    for (int i = 0; i < BATCH; i++) y[i] = (int32_t)qat_rng_below(&rng, 10);

    enum { NALL = 6 };
    const char *names[NALL] = {"CNN", "CNN-QAT", "DW-CNN", "DW-CNN-QAT", "MLP", "MLP-QAT"};
    bench_model models[NALL];
    int nm = 0;
    for (int k = 0; k < NALL; k++) {
        /* --only X keeps X alone; a QAT model keeps its float twin out of the process. */
        if (only && strcmp(only, names[k]) != 0) continue;
        qat_model *m = k < 2 ? qat_model_cnn(&rng) : k < 4 ? dwcnn(&rng) : qat_model_mlp(&rng);
        models[nm++] = (bench_model){.name = names[k], .m = m, .qat = k % 2 == 1};
    }
    if (nm == 0) {
        fprintf(stderr, "bench_train: --only %s names no model (CNN, CNN-QAT, DW-CNN, DW-CNN-QAT, "
                        "MLP, MLP-QAT)\n", only);
        return 2;
    }
    qat_optim_config cfg = qat_optim_config_default(QAT_OPTIM_SGD);
    cfg.momentum = 0.9;
    for (int i = 0; i < nm; i++) {
        if (!models[i].m) return 1;
        if (models[i].qat) { /* QAT w8a8, ranges calibrated on the benchmark batch */
            qat_quant_spec spec = qat_quant_spec_default();
            /* The float simulation, as PyTorch's QAT computes: the same work on both sides
             * (the default sim=exact adds an integer GEMM per folded unit; docs/quant.md). */
            spec.sim = QAT_SIM_FLOAT;
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
        for (int i = 0; i < nm; i++) models[i].rates[r] = run(&models[i], x, y, steps);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("training step, batch %d, %d rounds x %d steps, threads: %d\n", BATCH, rounds, steps,
           qat_num_threads());
    printf("%-10s %10s %10s %10s %14s %14s\n", "model", "median/s", "min/s", "max/s",
           "step arena MiB", "time vs float");
    for (int i = 0; i < nm; i++) {
        qsort(models[i].rates, (size_t)rounds, sizeof(double), cmp_double);
        printf("%-10s %10.0f %10.0f %10.0f %14.1f", models[i].name, models[i].rates[rounds / 2],
               models[i].rates[0], models[i].rates[rounds - 1],
               (double)models[i].tape.arena.peak / (1 << 20));
        if (models[i].qat && i > 0 && !models[i - 1].qat)
            printf(" %13.2fx", models[i - 1].rates[rounds / 2] / models[i].rates[rounds / 2]);
        printf("\n");
    }
    printf("peak resident memory of the process: %.1f MiB\n", (double)ru.ru_maxrss / 1024.0);
    for (int i = 0; i < nm; i++) {
        qat_tape_free(&models[i].tape);
        qat_optim_free(&models[i].opt);
        qat_model_free(models[i].m);
        free(models[i].rates);
    }
    free(x);
    return 0;
}

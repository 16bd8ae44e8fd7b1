/* train_synthetic.c - train the reference MLP (or CNN) on a synthetic 10-class problem.
 *
 * Each class is a smooth random 28x28 pattern (a sum of a few random plane waves, so
 * that there is spatial structure for convolutions to find); a sample is its class
 * pattern plus strong Gaussian noise. The program trains with SGD (momentum 0.9, lr 0.05, per-step cosine
 * decay to 0, batch 64), evaluates on held-out samples after every epoch, and prints
 * loss, accuracy and throughput. It exercises everything of the foundation: the model
 * graph, the tape, backward, the optimizer and the schedule.
 *
 *     train_synthetic [mlp|cnn] [epochs]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "layers/loss.h"
#include "layers/model.h"
#include "optim/optim.h"
#include "optim/schedule.h"

enum { CLASSES = 10, PIXELS = 28 * 28, TRAIN = 6400, TEST = 1000, BATCH = 64 };

static void make_data(float *x, int32_t *y, int n, const float *protos, float noise, qat_rng *r) {
    for (int i = 0; i < n; i++) {
        y[i] = (int32_t)qat_rng_below(r, CLASSES);
        for (int p = 0; p < PIXELS; p++)
            x[(size_t)i * PIXELS + p] = protos[y[i] * PIXELS + p] + noise * qat_rng_normal(r);
    }
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    const char *which = argc > 1 ? argv[1] : "mlp";
    int epochs = argc > 2 ? atoi(argv[2]) : 3;
    if ((strcmp(which, "mlp") && strcmp(which, "cnn")) || epochs < 1) {
        fprintf(stderr, "usage: %s [mlp|cnn] [epochs >= 1]\n", argv[0]);
        return 2;
    }
    qat_rng rng;
    qat_rng_init(&rng, 42);
    qat_model *m = strcmp(which, "cnn") == 0 ? qat_model_cnn(&rng) : qat_model_mlp(&rng);
    if (!m) return 1;
    qat_model_print(m, stdout);

    float *protos = malloc(sizeof(float) * CLASSES * PIXELS);
    for (int c = 0; c < CLASSES; c++) {
        float *img = protos + c * PIXELS;
        memset(img, 0, sizeof(float) * PIXELS);
        for (int wave = 0; wave < 3; wave++) {
            float fy = qat_rng_range(&rng, -0.6f, 0.6f), fx = qat_rng_range(&rng, -0.6f, 0.6f);
            float phase = qat_rng_range(&rng, 0.0f, 6.2831853f);
            for (int p = 0; p < PIXELS; p++)
                img[p] += 0.5f * sinf(fy * (float)(p / 28) + fx * (float)(p % 28) + phase);
        }
    }
    float *xtr = malloc(sizeof(float) * TRAIN * PIXELS), *xte = malloc(sizeof(float) * TEST * PIXELS);
    int32_t *ytr = malloc(sizeof(int32_t) * TRAIN), *yte = malloc(sizeof(int32_t) * TEST);
    make_data(xtr, ytr, TRAIN, protos, 4.0f, &rng);
    make_data(xte, yte, TEST, protos, 4.0f, &rng);

    qat_optim_config cfg = qat_optim_config_default(QAT_OPTIM_SGD);
    cfg.lr = 0.05;
    cfg.momentum = 0.9;
    qat_optim opt;
    qat_error err = {0};
    const long steps_per_epoch = TRAIN / BATCH, total = steps_per_epoch * epochs;
    qat_lr_schedule sched = {.kind = QAT_LR_COSINE, .t_max = total, .eta_min = 0.0};
    if (qat_optim_init(&opt, &cfg, m->n_params, &err) ||
        qat_lr_schedule_check(&sched, &err)) {
        fprintf(stderr, "train_synthetic: %s\n", err.msg);
        return 1;
    }

    qat_tape t;
    qat_tape_init(&t, 0);
    t.rng = &rng;
    const int shape[4] = {BATCH, 1, 28, 28};
    long step = 0;
    for (int e = 0; e < epochs; e++) {
        double t0 = now(), loss_sum = 0;
        t.training = t.grad_enabled = true;
        for (int b = 0; b < steps_per_epoch; b++, step++) {
            qat_tape_reset(&t);
            qat_tensor *x = qat_tape_input(&t, 4, shape, xtr + (size_t)b * BATCH * PIXELS);
            qat_tensor *loss = qat_cross_entropy(&t, qat_model_forward(m, &t, x), ytr + b * BATCH);
            qat_model_zero_grad(m);
            if (qat_tape_backward(&t, loss) != QAT_STATUS_OK) {
                fprintf(stderr, "train_synthetic: %s\n", t.err.msg);
                return 1;
            }
            if (!isfinite(loss->data[0])) {
                fprintf(stderr, "train_synthetic: loss became %g at step %ld\n",
                        (double)loss->data[0], step);
                return 1;
            }
            loss_sum += loss->data[0];
            qat_optim_step(&opt, m->params, m->grads, qat_lr_schedule_at(&sched, (float)cfg.lr, step));
        }
        double secs = now() - t0;
        /* Evaluation: inference mode, running batch-norm statistics. */
        t.training = t.grad_enabled = false;
        int correct = 0;
        for (int b = 0; b + BATCH <= TEST; b += BATCH) {
            qat_tape_reset(&t);
            qat_tensor *x = qat_tape_input(&t, 4, shape, xte + (size_t)b * PIXELS);
            qat_tensor *logits = qat_model_forward(m, &t, x);
            if (!logits) {
                fprintf(stderr, "train_synthetic: %s\n", t.err.msg);
                return 1;
            }
            for (int i = 0; i < BATCH; i++) {
                const float *z = logits->data + i * CLASSES;
                int best = 0;
                for (int c = 1; c < CLASSES; c++) best = z[c] > z[best] ? c : best;
                correct += best == yte[b + i];
            }
        }
        int evaluated = TEST / BATCH * BATCH;
        printf("epoch %d: train loss %.4f, test accuracy %.2f%% (%d/%d), %.0f samples/s\n", e + 1,
               loss_sum / steps_per_epoch, 100.0 * correct / evaluated, correct, evaluated,
               steps_per_epoch * BATCH / secs);
    }
    qat_tape_free(&t);
    qat_optim_free(&opt);
    qat_model_free(m);
    free(protos);
    free(xtr);
    free(xte);
    free(ytr);
    free(yte);
    return 0;
}

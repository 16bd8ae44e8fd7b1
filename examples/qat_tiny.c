/* qat_tiny.c - quantization-aware training of a tiny MLP with the library, top to bottom.
 *
 * The data: 8x8 grey images of four strokes (a horizontal bar, a vertical bar, a diagonal,
 * a box) with noise, made here. The steps (docs/tutorial.md walks through them):
 *   1. one tensor quantized by hand: scale, zero point, integers, the rounding error;
 *   2. a float MLP 64-32-4 trained for a few epochs;
 *   3. post-training quantization to 2 bits (calibration only), which loses much of it;
 *   4. quantization-aware training at 2 bits from the calibrated start, which wins it back;
 *   5. export to an integer-only model and one image through the int8 runtime.
 *
 *     build/examples/qat_tiny [OUT.int8]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/loader.h"
#include "export/int8.h"
#include "quant/fake_quant.h"
#include "runtime/runtime.h"
#include "train/calibrate.h"
#include "train/open.h"
#include "train/step.h"
#include "train/trainer.h"

enum { SIDE = 8, CLASSES = 4, N_TRAIN = 2000, N_TEST = 500 };

/* Image i of class c: the stroke at a random offset, plus noise, as uint8 pixels. */
static void make_images(qat_dataset *ds, int n, uint64_t seed) {
    *ds = (qat_dataset){.kind = QAT_DATASET_KIND_IMAGES, .n = n, .c = 1, .h = SIDE, .w = SIDE,
                        .dim = SIDE * SIDE, .n_classes = CLASSES};
    ds->pixels = malloc((size_t)n * SIDE * SIDE);
    ds->labels = malloc((size_t)n * sizeof *ds->labels);
    qat_rng r;
    qat_rng_init(&r, seed);
    for (int i = 0; i < n; i++) {
        int c = i % CLASSES, o = (int)qat_rng_below(&r, 4) + 2;
        ds->labels[i] = c;
        for (int y = 0; y < SIDE; y++)
            for (int x = 0; x < SIDE; x++) {
                int on = c == 0 ? y == o : c == 1 ? x == o : c == 2 ? x == y : (x == 1 || x == 6 || y == 1 || y == 6);
                float v = (on ? 200.0f : 40.0f) + 60.0f * qat_rng_normal(&r);
                ds->pixels[(y * SIDE + x) + (size_t)i * SIDE * SIDE] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    }
}

/* Epochs of SGD on the loader; the optimizer covers every parameter the model has now. */
static void train(qat_model *m, qat_loader *l, int epochs, float lr) {
    qat_optim_config oc = qat_optim_config_default(QAT_OPTIM_SGD);
    oc.lr = lr;
    oc.momentum = 0.9f;
    qat_optim o;
    qat_tape t;
    qat_error err = {0};
    if (qat_optim_init(&o, &oc, m->n_params, &err)) exit(printf("%s\n", err.msg));
    qat_tape_init(&t, 0);
    for (int e = 0; e < epochs; e++) {
        qat_loader_seek(l, e, 0, &err);
        qat_batch b;
        qat_step_result r;
        while (qat_loader_next(l, &b))
            if (qat_train_step(m, &t, &o, lr, 0, &b, &r, &err)) exit(printf("%s\n", err.msg));
    }
    qat_tape_free(&t);
    qat_optim_free(&o);
}

static double test_accuracy(qat_model *m, qat_loader *test) {
    qat_tape t;
    qat_tape_init(&t, 0);
    double loss, acc;
    qat_error err = {0};
    if (qat_evaluate(m, &t, test, &loss, &acc, &err)) exit(printf("%s\n", err.msg));
    qat_tape_free(&t);
    return 100 * acc;
}

/* A 64-32-4 MLP on 8x8 images, initialised from seed 1. */
static qat_model *tiny_mlp(void) {
    qat_model *m = qat_model_new(3, (int[]){1, SIDE, SIDE});
    qat_model_flatten(m);
    qat_model_linear(m, 32, true);
    qat_model_relu(m);
    qat_model_linear(m, CLASSES, true);
    qat_rng r;
    qat_rng_init(&r, 1);
    if (qat_model_finalize(m, &r)) exit(printf("%s\n", m->err.msg));
    return m;
}

int main(int argc, char **argv) {
    const char *out = argc > 1 ? argv[1] : "qat_tiny.int8";
    qat_error err = {0};

    /* 1. By hand: four values on an 8-bit grid. The range [-1.2, 2.3] (widened to hold 0)
     *    spans 255 steps: s = 3.5 / 255; real 0 sits on the integer z = -128 - round(-1.2 / s). */
    const float v[4] = {-1.2f, 0.0f, 0.5f, 2.3f};
    float s;
    int32_t z;
    qat_qparams_from_range(-1.2f, 2.3f, -128, 127, false, &s, &z);
    printf("1. scale %.6f, zero point %d:", (double)s, (int)z);
    for (int i = 0; i < 4; i++) {
        int32_t q = qat_quantize(v[i], s, z, -128, 127);
        printf("  %.2f -> q %d -> %.4f", (double)v[i], (int)q, (double)(s * (float)(q - z)));
    }
    printf("\n");

    /* 2. Float training. Inputs are the loader's (p/255 - mean) / std. */
    qat_dataset train_set, test_set;
    make_images(&train_set, N_TRAIN, 7);
    make_images(&test_set, N_TEST, 8);
    qat_normalization norm = qat_normalization_identity(); /* x = p / 255 */
    qat_loader_config lc = qat_loader_config_default();
    lc.batch_size = 32;
    qat_loader_config_normalize(&lc, &norm);
    qat_loader_config tc = lc;
    tc.shuffle = false;
    qat_loader ltrain, ltest;
    if (qat_loader_init(&ltrain, &train_set, &lc, &err) || qat_loader_init(&ltest, &test_set, &tc, &err))
        return printf("%s\n", err.msg);
    qat_model *m = tiny_mlp();
    train(m, &ltrain, 3, 0.05f);
    printf("2. float: %.1f%%\n", test_accuracy(m, &ltest));

    /* 3. PTQ at 2 bits: the same weights, ranges from 256 calibration images. (Below 8 bits
     *    the first layer's weights and the logits stay at 8 unless the spec says "all"; at
     *    2 bits weights and activations get LSQ's learnable steps.) */
    qat_model *p = tiny_mlp();
    memcpy(p->params, m->params, m->n_params * sizeof(float)); /* the same layout: a copy */
    if (qat_model_quantize(p, "w2a2,all", &norm, &err) || qat_calibrate(p, &ltrain, 256, &err))
        return printf("%s\n", err.msg);
    printf("3. PTQ w2a2: %.1f%%\n", test_accuracy(p, &ltest));

    /* 4. QAT: the quantized forward (fake quant, straight-through gradients, LSQ steps) trained from
     *    the calibrated start; a new optimizer, since quantization added parameters. */
    train(p, &ltrain, 2, 0.01f);
    printf("4. QAT w2a2: %.1f%%\n", test_accuracy(p, &ltest));

    /* 5. The integer model: int8 tensors, int32 biases, fixed-point multipliers; then one
     *    test image through the runtime, which uses no float at all. */
    if (qat_export_int8(p, out, NULL, 0, NULL, &err)) return printf("%s\n", err.msg);
    FILE *f = fopen(out, "rb");
    static uint8_t file[1 << 16], mem[1 << 16], arena[1 << 16];
    size_t len = f ? fread(file, 1, sizeof file, f) : 0;
    if (f) fclose(f);
    qrt_model rm;
    qrt_error re = {0};
    if (qrt_model_mem_size(file, len) > sizeof mem || qrt_model_load(&rm, file, len, mem, sizeof mem, &re) ||
        qrt_arena_size(&rm) > sizeof arena)
        return printf("%s: %s\n", out, re.msg);
    int8_t logits[CLASSES];
    int best;
    qrt_run(&rm, test_set.pixels, arena, logits, &best);
    printf("5. %s (%zu bytes): test image 0 (class %d) -> int8 logits %d %d %d %d, class %d\n", out, len,
           (int)test_set.labels[0], logits[0], logits[1], logits[2], logits[3], best);

    qat_model_free(m);
    qat_model_free(p);
    qat_loader_free(&ltrain);
    qat_loader_free(&ltest);
    qat_dataset_free(&train_set);
    qat_dataset_free(&test_set);
    return 0;
}

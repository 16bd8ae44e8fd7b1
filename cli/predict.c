/* qat predict CHECKPOINT IMAGE...: the class and probabilities of each image. */
#include <math.h>
#include <string.h>

#include "common.h"
#include "data/dataset.h"
#include "data/image.h"

/* The i-th name of a comma-separated list, or NULL. */
static bool class_name(const char *list, int i, char *out, size_t n) {
    if (!list) return false;
    for (; i > 0 && list; i--) {
        list = strchr(list, ',');
        if (list) list++;
    }
    if (!list) return false;
    size_t len = strcspn(list, ",");
    snprintf(out, n, "%.*s", (int)len, list);
    return true;
}

int cmd_predict(int argc, char **argv) {
    int top = 3;
    bool json = false;
    qat_opt opts[] = {
        {"top", QAT_OPT_INT, &top, "K", "show the K most probable classes"},
        {"json", QAT_OPT_FLAG, &json, NULL, "one JSON object per image"},
        {0},
    };
    enum { MAX_IMAGES = 4096 };
    static char *pos[MAX_IMAGES + 1];
    qat_error err = {0};
    int n = qat_args_parse(argc, argv, opts, pos, MAX_IMAGES + 1, &err);
    if (n == -2 || (n >= 0 && n < 2)) {
        qat_args_help(n == -2 ? stdout : stderr, "qat predict CHECKPOINT|INT8_MODEL IMAGE...",
                      "Classifies PNG, JPEG or BMP images with a trained checkpoint or an int8 model "
                      "(integer-only, through runtime/); each image is converted to the model's "
                      "channels and size.",
                      opts);
        return n == -2 ? 0 : 2;
    }
    if (n < 0) return cli_fail("predict", err.msg);
    if (cli_is_int8(pos[0])) return cli_int8_predict(pos[0], pos + 1, n - 1, top, json);
    qat_opened cm;
    if (qat_model_open(&cm, pos[0], 0, &err)) return cli_fail("predict", err.msg);
    qat_model *m = cm.m;
    if (!cm.from_checkpoint || m->in_ndim != 3) {
        qat_opened_free(&cm);
        return cli_fail("predict", "needs a checkpoint of a model with an image input");
    }
    int C = m->in_shape[0], H = m->in_shape[1], W = m->in_shape[2];
    const float *mean = cm.norm.mean, *std = cm.norm.std;
    const char *names = qat_checkpoint_extra(&cm.ckpt, "class_names");
    uint8_t *pix = malloc((size_t)C * H * W);
    float *x = malloc(sizeof(float) * C * H * W);
    qat_tape t;
    qat_tape_init(&t, 0);
    t.training = t.grad_enabled = false;
    int rc = 0;
    for (int i = 1; i < n; i++) {
        qat_error_clear(&err);
        if (qat_image_load(pix, pos[i], C, H, W, &err)) {
            fprintf(stderr, "qat predict: %s\n", err.msg);
            rc = 1;
            continue;
        }
        for (int c = 0; c < C; c++)
            for (int k = 0; k < H * W; k++)
                x[c * H * W + k] = (pix[c * H * W + k] / 255.0f - mean[c]) / std[c];
        qat_tape_reset(&t);
        qat_tensor *z = qat_model_forward(m, &t, qat_tape_input(&t, 4, (int[]){1, C, H, W}, x));
        if (!z) {
            rc = cli_fail("predict", t.err.msg);
            break;
        }
        int K = (int)z->n;
        /* softmax, then the top classes */
        float mx = z->data[0];
        for (int k = 1; k < K; k++) mx = fmaxf(mx, z->data[k]);
        double sum = 0;
        for (int k = 0; k < K; k++) sum += exp(z->data[k] - mx);
        bool used[1024] = {false};
        int shown = top < K ? top : K;
        if (json) printf("{\"image\": \"%s\", \"top\": [", pos[i]);
        else printf("%s:", pos[i]);
        for (int r = 0; r < shown && r < 1024; r++) {
            int best = -1;
            for (int k = 0; k < K && k < 1024; k++)
                if (!used[k] && (best < 0 || z->data[k] > z->data[best])) best = k;
            used[best] = true;
            double p = exp(z->data[best] - mx) / sum;
            char name[64];
            if (!class_name(names, best, name, sizeof name)) snprintf(name, sizeof name, "%d", best);
            if (json) printf("%s{\"class\": %d, \"name\": \"%s\", \"probability\": %.6f}", r ? ", " : "", best, name, p);
            else printf("  %d %s %.1f%%", best, name, 100 * p);
        }
        printf(json ? "]}\n" : "\n");
    }
    qat_tape_free(&t);
    free(pix);
    free(x);
    qat_opened_free(&cm);
    return rc;
}

/* The int8 model files of qat export, through runtime/: qat eval, predict and inspect on
 * them. Everything that touches integers here is the runtime's; the CLI only reads files,
 * loops over images and prints (dequantising logits for probabilities, for people). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "common.h"
#include "data/image.h"
#include "export/int8.h"
#include "runtime/batch.h"
#include "runtime/fixedpoint.h"
#include "runtime/runtime.h"
#include "train/progress.h"
#include "train/trainer.h"

bool cli_is_int8(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    unsigned char b[9];
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    if (n != 9 || b[8] != '{') return false;
    qat_st_file st;
    if (qat_safetensors_read(&st, path, NULL)) return false;
    const char *format = qat_safetensors_meta(&st, "format");
    bool yes = format && !strcmp(format, QAT_INT8_FORMAT);
    qat_safetensors_free(&st);
    return yes;
}

typedef struct int8_model {
    uint8_t *file;
    void *mem, *arena;
    qrt_model m;
    char *class_names, *data;
} int8_model;

static void int8_close(int8_model *h) {
    free(h->file);
    free(h->mem);
    free(h->arena);
    free(h->class_names);
    free(h->data);
    memset(h, 0, sizeof *h);
}

/* The metadata for people (class names, data set), read once with the container checks. */
static void read_meta(int8_model *h, const char *path) {
    qat_st_file st;
    if (qat_safetensors_read(&st, path, NULL)) return;
    const char *v = qat_safetensors_meta(&st, "class_names");
    h->class_names = v ? strdup(v) : NULL;
    v = qat_safetensors_meta(&st, "data");
    h->data = v ? strdup(v) : NULL;
    qat_safetensors_free(&st);
}

/* QRT_ISA (checked by main.c's env_ok) chooses the int8 kernels of every model the
 * command loads; unset, the runtime's default stands: the best path this CPU has. */
static void apply_isa_env(qrt_model *m) {
    const char *e = getenv("QRT_ISA");
    qrt_isa isa;
    if (e && *e && qrt_isa_parse(e, &isa)) qrt_model_set_isa(m, isa);
}

/* Loads the int8 model in `file` (len bytes, owned by h from here on), named `name` in
 * messages. */
static qat_status int8_load(int8_model *h, const char *name, uint8_t *file, size_t len, qat_error *err) {
    h->file = file;
    size_t ms = qrt_model_mem_size(h->file, len);
    h->mem = malloc(ms ? ms : 1);
    qrt_error re = {0};
    if (!h->mem || qrt_model_load(&h->m, h->file, len, h->mem, ms, &re)) {
        int8_close(h);
        return qat_error_set(err, QAT_STATUS_FORMAT, "%s: %s", name, re.msg[0] ? re.msg : "out of memory");
    }
    apply_isa_env(&h->m);
    h->arena = malloc(qrt_arena_size(&h->m) ? qrt_arena_size(&h->m) : 1);
    if (!h->arena) {
        int8_close(h);
        return qat_error_set(err, QAT_STATUS_NOMEM, "out of memory");
    }
    return QAT_STATUS_OK;
}

static qat_status int8_open(int8_model *h, const char *path, qat_error *err) {
    memset(h, 0, sizeof *h);
    FILE *f = fopen(path, "rb");
    if (!f) return qat_error_set(err, QAT_STATUS_IO, "%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *file = malloc(len > 0 ? (size_t)len : 1);
    if (!file || len <= 0 || fread(file, 1, (size_t)len, f) != (size_t)len) {
        fclose(f);
        free(file);
        return qat_error_set(err, QAT_STATUS_IO, "%s: cannot read", path);
    }
    fclose(f);
    qat_status s = int8_load(h, path, file, (size_t)len, err);
    if (!s) read_meta(h, path);
    return s;
}

/* The int8 model `qat export` would write for the quantized checkpoint `ckpt`, in
 * memory. A model without an integer form (lowering refuses it: INVALID_ARG) sets
 * *no_int8, with the reason in err. */
static qat_status int8_from_checkpoint(int8_model *h, const char *ckpt, bool *no_int8, qat_error *err) {
    memset(h, 0, sizeof *h);
    qat_opened o;
    qat_status s = qat_model_open(&o, ckpt, 0, err);
    if (s) return s;
    if (!o.m->quant) {
        qat_opened_free(&o);
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: not a quantized checkpoint", ckpt);
    }
    qat_int_model im;
    if ((s = qat_lower(o.m, &im, err))) {
        *no_int8 = s == QAT_STATUS_INVALID_ARG;
        qat_opened_free(&o);
        return s;
    }
    const char *names = qat_checkpoint_extra(&o.ckpt, "class_names"), *data = qat_checkpoint_extra(&o.ckpt, "data");
    uint8_t *file = NULL;
    size_t len = 0;
    s = qat_int8_encode(&im, ckpt, NULL, 0, &file, &len, NULL, err);
    qat_int_model_free(&im);
    if (!s && !(s = int8_load(h, ckpt, file, len, err))) {
        h->class_names = names ? strdup(names) : NULL;
        h->data = data ? strdup(data) : NULL;
    }
    qat_opened_free(&o);
    return s;
}

/* Every image of `images` through the integer model the quantized model `m` lowers to (the
 * bytes qat export would write), predictions into pred (images->n). INVALID_ARG, with the
 * lowering's reason, when the model has no integer form. */
qat_status cli_int8_predictions(const qat_model *m, const qat_dataset *images, int *pred, qat_error *err) {
    qat_int_model im;
    qat_status s = qat_lower(m, &im, err);
    if (s) return s;
    uint8_t *file = NULL;
    size_t len = 0;
    int8_model h = {0};
    s = qat_int8_encode(&im, "report", NULL, 0, &file, &len, NULL, err);
    qat_int_model_free(&im);
    if (s || (s = int8_load(&h, "report", file, len, err))) return s;
    const qrt_value *in = qrt_model_input(&h.m);
    if (images->kind != QAT_DATASET_KIND_IMAGES || images->c != in->shape[0] || images->h != in->shape[1] ||
        images->w != in->shape[2]) {
        int8_close(&h);
        return qat_error_set(err, QAT_STATUS_SHAPE, "the data's images do not fit the model's input");
    }
    qrt_batch runner;
    const size_t arenas_len = qrt_batch_mem_size(&h.m, qat_num_threads());
    void *arenas = malloc(arenas_len);
    if (!arenas || qrt_batch_init(&runner, &h.m, qat_num_threads(), arenas, arenas_len)) {
        s = qat_error_set(err, QAT_STATUS_NOMEM, "out of memory");
    } else {
        qrt_batch_run(&runner, images->pixels, images->n, pred, NULL);
        qrt_batch_free(&runner);
    }
    free(arenas);
    int8_close(&h);
    return s;
}

/* ---- eval ---- */

/* Whether the int8 file `m` is an export of the quantized model `q`: lowering q must give
 * the file's ops, kind by kind, with the same weight shapes and the same weight and bias
 * integers (otherwise the agreement --compare reports would compare unrelated models).
 * Returns NULL when they correspond, else what differs (in msg). */
static const char *int8_corresponds(const qrt_model *m, const qat_model *q, char *msg, size_t n) {
    static const qrt_op_kind KIND[QAT_INT_OP_COUNT] = {
        [QAT_INT_OP_CONV2D] = QRT_OP_CONV2D, [QAT_INT_OP_LINEAR] = QRT_OP_LINEAR,
        [QAT_INT_OP_MAXPOOL] = QRT_OP_MAXPOOL, [QAT_INT_OP_AVGPOOL] = QRT_OP_AVGPOOL,
        [QAT_INT_OP_GLOBAL_AVGPOOL] = QRT_OP_GLOBAL_AVGPOOL, [QAT_INT_OP_ADD] = QRT_OP_ADD,
        [QAT_INT_OP_FLATTEN] = QRT_OP_FLATTEN, [QAT_INT_OP_LUT] = QRT_OP_LUT};
    qat_int_model im;
    qat_error err = {0};
    if (qat_lower(q, &im, &err)) {
        snprintf(msg, n, "%.200s", err.msg);
        return msg;
    }
    int j = 0; /* the file's ops without its input and output */
    const int n_ops = qrt_model_n_ops(m);
    const char *why = NULL;
    for (int i = 0; i < im.n_ops && !why; i++, j++) {
        while (j < n_ops && (qrt_model_op(m, j)->kind == QRT_OP_INPUT || qrt_model_op(m, j)->kind == QRT_OP_OUTPUT)) j++;
        const qat_int_op *a = &im.ops[i];
        if (j == n_ops) {
            snprintf(msg, n, "the file has %d op(s), the checkpoint %d", i, im.n_ops);
            why = msg;
            break;
        }
        const qrt_op *b = qrt_model_op(m, j);
        if (b->kind != KIND[a->kind]) {
            snprintf(msg, n, "op %d (layer %s) differs in kind", i + 1, a->name);
            why = msg;
        } else if (a->kind == QAT_INT_OP_CONV2D || a->kind == QAT_INT_OP_LINEAR) {
            size_t nw = 1, nb = 1;
            for (int d = 0; d < a->w_ndim; d++) nw *= (size_t)a->w_shape[d];
            for (int d = 0; d < b->weight->ndim; d++) nb *= (size_t)b->weight->shape[d];
            /* packed weights (wbits <= 4) are U8 of shape (ceil(n / 2)) */
            const bool packed = b->weight->dtype == QRT_DTYPE_U8;
            if (packed ? nb != (nw + 1) / 2 : nw != nb || b->weight->ndim != a->w_ndim) {
                snprintf(msg, n, "layer %s: weight shape differs", a->name);
                why = msg;
            } else if (memcmp(a->weight, b->weight->s8, nw) != 0 ||
                       memcmp(a->bias, b->bias->s32, (size_t)a->w_shape[0] * sizeof(int32_t)) != 0) {
                snprintf(msg, n, "layer %s: the weights or biases differ (another checkpoint of the same model?)",
                         a->name);
                why = msg;
            }
        }
    }
    while (!why && j < n_ops && (qrt_model_op(m, j)->kind == QRT_OP_INPUT || qrt_model_op(m, j)->kind == QRT_OP_OUTPUT)) j++;
    if (!why && j != n_ops) {
        snprintf(msg, n, "the file has more ops than the checkpoint's %d", im.n_ops);
        why = msg;
    }
    qat_int_model_free(&im);
    return why;
}

/* Evaluates the loaded int8 model h (closed here), named `path` in the output; with
 * `compare`, a fake-quant checkpoint beside it. */
static int int8_eval(int8_model *hp, const char *path, bool lowered, const char *data, const char *format,
                     const char *compare, int sim, bool json, cli_int8_result *res) {
    qat_error err = {0};
    int8_model h = *hp;
    if (!data) data = h.data ? h.data : QAT_FASHION_MNIST_DIR;
    const qrt_value *in = qrt_model_input(&h.m);
    qat_dataset test = {0};
    int rc = 0;
    qat_opened cm = {0};
    int K = qrt_model_n_outputs(&h.m);
    int8_t *logits = malloc((size_t)K);
    if (!logits || qat_dataset_open(&test, data, format, QAT_SPLIT_TEST, 3, in->shape, &err)) {
        rc = cli_fail("eval", err.msg[0] ? err.msg : "out of memory");
        goto done;
    }
    if (test.kind != QAT_DATASET_KIND_IMAGES || test.c != in->shape[0] || test.h != in->shape[1] ||
        test.w != in->shape[2]) {
        rc = cli_fail("eval", "the data's images do not fit the model's input");
        goto done;
    }
    if (test.n_classes > K) {
        rc = cli_fail("eval", "the data has more classes than the model has outputs");
        goto done;
    }
    /* --compare: the fake-quant checkpoint this file was exported from, on the same images. */
    int *fq_pred = NULL;
    double fq_acc = -1;
    if (compare) {
        if (qat_model_open(&cm, compare, 0, &err) || !cm.m->quant) {
            rc = cli_fail("eval", cm.m ? "--compare needs the quantized checkpoint that was exported" : err.msg);
            goto done;
        }
        if (sim >= 0) cm.m->quant->spec.sim = (qat_sim)sim;
        char why[256], msg[1024];
        if (int8_corresponds(&h.m, cm.m, why, sizeof why)) {
            snprintf(msg, sizeof msg, "--compare %s: not the checkpoint %s was exported from: %s", compare, path, why);
            rc = cli_fail("eval", msg);
            goto done;
        }
        qat_loader_config lc = qat_loader_config_default();
        lc.batch_size = 256;
        lc.shuffle = false;
        qat_loader_config_normalize(&lc, &cm.norm);
        qat_loader l;
        fq_pred = malloc((size_t)test.n * sizeof(int));
        if (!fq_pred || qat_loader_init(&l, &test, &lc, &err)) {
            rc = cli_fail("eval", err.msg);
            goto done;
        }
        qat_tape t;
        qat_tape_init(&t, 0);
        t.training = t.grad_enabled = false;
        qat_batch b;
        int correct = 0;
        while (qat_loader_next(&l, &b)) {
            qat_tape_reset(&t);
            qat_tensor *z = qat_model_forward(cm.m, &t, qat_tape_input(&t, b.ndim, b.shape, b.x));
            if (!z) break;
            int C = (int)(z->n / (size_t)b.n);
            for (int i = 0; i < b.n; i++) {
                int best = 0;
                for (int k = 1; k < C; k++)
                    if (z->data[i * C + k] > z->data[i * C + best]) best = k;
                fq_pred[b.idx[i]] = best;
                correct += best == b.y[i];
            }
        }
        fq_acc = (double)correct / test.n;
        qat_tape_free(&t);
        qat_loader_free(&l);
    }
    /* Every image on the runtime, on the pool's thread count (--threads; results do not
     * depend on it). */
    qrt_batch runner;
    const size_t arenas_len = qrt_batch_mem_size(&h.m, qat_num_threads());
    int *pred = malloc((size_t)test.n * sizeof(int));
    void *arenas = malloc(arenas_len);
    if (!pred || !arenas || qrt_batch_init(&runner, &h.m, qat_num_threads(), arenas, arenas_len)) {
        free(pred);
        free(arenas);
        rc = cli_fail("eval", "out of memory");
        goto done;
    }
    int correct = 0, agree = 0;
    double t0 = qat_now();
    qrt_batch_run(&runner, test.pixels, test.n, pred, NULL);
    double secs = qat_now() - t0, acc;
    for (int i = 0; i < test.n; i++) {
        correct += pred[i] == test.labels[i];
        if (fq_pred) agree += pred[i] == fq_pred[i];
    }
    acc = (double)correct / test.n;
    int threads = runner.threads;
    qrt_batch_free(&runner);
    free(arenas);
    free(pred);
    if (res) {
        res->accuracy = acc;
        res->images_per_s = test.n / secs;
        res->agreement = fq_pred ? (double)agree / test.n : -1;
    } else if (json) {
        printf("{\"command\": \"eval\", \"model\": \"%s\", \"int8\": true, \"lowered_from_checkpoint\": %s, "
               "\"samples\": %d, \"test_accuracy\": %.6f, \"images_per_s\": %.1f, \"threads\": %d, \"kernels\": \"%s\"",
               path, lowered ? "true" : "false", test.n, acc, test.n / secs, threads, qrt_isa_str(h.m.isa));
        if (fq_pred)
            printf(", \"fake_quant_accuracy\": %.6f, \"top1_agreement\": %.6f", fq_acc, (double)agree / test.n);
        printf("}\n");
    } else {
        printf("%s%s on %s: integer-only accuracy %.2f%% (%d samples), %.0f images/s (%d thread%s, %s kernels)\n",
               path, lowered ? " (its int8 model, as qat export writes it)" : "", data, 100 * acc, test.n,
               test.n / secs, threads, threads > 1 ? "s" : "", qrt_isa_str(h.m.isa));
        if (fq_pred)
            printf("%s%s: %.2f%%; top-1 agreement %.2f%%\n", lowered ? "its float simulation (--fake-quant)" : "fake-quant ",
                   lowered ? "" : compare, 100 * fq_acc, 100.0 * agree / test.n);
    }
    free(fq_pred);
done:
    qat_opened_free(&cm);
    free(logits);
    qat_dataset_free(&test);
    int8_close(&h);
    return rc;
}

int cli_int8_eval(const char *path, const char *data, const char *format, const char *compare, int sim, bool json,
                  cli_int8_result *res) {
    qat_error err = {0};
    int8_model h;
    if (int8_open(&h, path, &err)) return cli_fail("eval", err.msg);
    return int8_eval(&h, path, false, data, format, compare, sim, json, res);
}

int cli_int8_eval_checkpoint(const char *ckpt, const char *data, const char *format, int sim, bool json,
                             bool *no_int8, cli_int8_result *res) {
    qat_error err = {0};
    int8_model h;
    *no_int8 = false;
    qat_status s = int8_from_checkpoint(&h, ckpt, no_int8, &err);
    if (*no_int8) {
        if (!json) fprintf(stderr, "qat eval: %s: %s; evaluating its float simulation (fake quant)\n", ckpt, err.msg);
        return 0;
    }
    if (s) return cli_fail("eval", err.msg);
    return int8_eval(&h, ckpt, true, data, format, ckpt, sim, json, res);
}

/* ---- predict ---- */

/* The i-th name of a comma-separated list into out, or the number. */
static void nth_name(const char *list, int i, char *out, size_t n) {
    const char *p = list;
    for (int k = 0; p && k < i; k++) {
        p = strchr(p, ',');
        if (p) p++;
    }
    if (p) snprintf(out, n, "%.*s", (int)strcspn(p, ","), p);
    else snprintf(out, n, "%d", i);
}

int cli_int8_predict(const char *path, char **images, int n_images, int top, bool json) {
    qat_error err = {0};
    int8_model h;
    if (int8_open(&h, path, &err)) return cli_fail("predict", err.msg);
    const qrt_value *in = qrt_model_input(&h.m), *out = qrt_model_output(&h.m);
    int C = in->shape[0], H = in->shape[1], W = in->shape[2], K = qrt_model_n_outputs(&h.m);
    if (K < 1) K = 1;
    double s = out->s ? strtod(out->s, NULL) : 1.0; /* the logits' scale, for probabilities */
    uint8_t *pix = malloc((size_t)C * H * W);
    int8_t *logits = malloc((size_t)K);
    bool *used = malloc((size_t)K);
    int rc = 0;
    for (int i = 0; pix && logits && used && i < n_images; i++) {
        qat_error_clear(&err);
        if (qat_image_load(pix, images[i], C, H, W, &err)) {
            fprintf(stderr, "qat predict: %s\n", err.msg);
            rc = 1;
            continue;
        }
        int am;
        qrt_run(&h.m, pix, h.arena, logits, &am);
        double mx = logits[am], sum = 0;
        for (int k = 0; k < K; k++) sum += exp(s * (logits[k] - mx));
        memset(used, 0, (size_t)K);
        int shown = top < K ? top : K;
        if (json) printf("{\"image\": \"%s\", \"int8_logits\": [", images[i]);
        for (int k = 0; json && k < K; k++) printf("%s%d", k ? ", " : "", logits[k]);
        if (json) printf("], \"top\": [");
        else printf("%s:", images[i]);
        for (int r = 0; r < shown; r++) {
            int best = -1;
            for (int k = 0; k < K; k++)
                if (!used[k] && (best < 0 || logits[k] > logits[best])) best = k;
            used[best] = true;
            char name[64];
            nth_name(h.class_names, best, name, sizeof name);
            double p = exp(s * (logits[best] - mx)) / sum;
            if (json) printf("%s{\"class\": %d, \"name\": \"%s\", \"probability\": %.6f}", r ? ", " : "", best, name, p);
            else printf("  %d %s %.1f%%", best, name, 100 * p);
        }
        printf(json ? "]}\n" : "\n");
    }
    free(pix);
    free(logits);
    free(used);
    int8_close(&h);
    return rc;
}

/* ---- inspect ---- */

/* One conv or linear op's requantization, worked through on its numbers (the tutorial's
 * step, docs/tutorial.md): per output channel M0, shift and the multiplier they stand for,
 * the weight scale that implies, and one accumulator taken through the integer rule. */
static void inspect_requant(const qrt_model *m, int i) {
    const qrt_op *op = qrt_model_op(m, i);
    const qrt_value *vin = qrt_model_value(m, op->in[0]), *vout = qrt_model_value(m, op->out);
    const double s_in = vin->s ? strtod(vin->s, NULL) : 0, s_out = vout->s ? strtod(vout->s, NULL) : 0;
    printf("\nop %d (%s): acc[c] = bias[c] + sum (q_in - z_in) w[c]  (int32), then\n"
           "  q_out = clamp(MultiplyByQuantizedMultiplier(acc, M0[c], shift[c]) + z_out, %d, %d)\n"
           "  with M0 * 2^(shift - 31) = m[c] = s_in s_w[c] / s_out; s_in %.9g (z_in %d), s_out %.9g (z_out %d)\n",
           i, qrt_op_kind_str(op->kind), op->act_min, op->act_max, s_in, op->z_in, s_out, op->z_out);
    printf("  %-4s %11s %6s %14s %14s %9s\n", "c", "M0", "shift", "m", "s_w = m s_out/s_in", "bias");
    const int C = (int)op->mult->shape[0];
    for (int c = 0; c < C && c < 4; c++) {
        const int32_t M0 = op->mult->s32[c], sh = op->shift->s32[c];
        const double mm = ldexp((double)M0, sh - 31);
        printf("  %-4d %11d %6d %14.9g %18.9g %9d\n", c, (int)M0, (int)sh, mm, s_in > 0 ? mm * s_out / s_in : 0,
               (int)op->bias->s32[c]);
    }
    if (C > 4) printf("  ... %d channels in all\n", C);
    const int32_t acc = 1000, M0 = op->mult->s32[0], sh = op->shift->s32[0];
    const int32_t r = qrt_multiply_by_quantized_multiplier(acc, M0, sh);
    int32_t q = r + op->z_out;
    q = q < op->act_min ? op->act_min : q > op->act_max ? op->act_max : q;
    printf("  e.g. acc = %d on channel 0: MultiplyByQuantizedMultiplier = %d (the real product %.4f), "
           "q_out = %d, worth %.6g\n",
           (int)acc, (int)r, acc * ldexp((double)M0, sh - 31), (int)q, s_out * (q - op->z_out));
}

int cli_int8_inspect(const char *path, int op_detail) {
    qat_error err = {0};
    int8_model h;
    if (int8_open(&h, path, &err)) return cli_fail("inspect", err.msg);
    if (op_detail >= qrt_model_n_ops(&h.m) ||
        (op_detail >= 0 && qrt_model_op(&h.m, op_detail)->kind != QRT_OP_CONV2D &&
         qrt_model_op(&h.m, op_detail)->kind != QRT_OP_LINEAR)) {
        int8_close(&h);
        char msg[160];
        snprintf(msg, sizeof msg, "--op %d: not a conv2d or linear op of this model (see the table without --op)", op_detail);
        return cli_fail_in("inspect", path, msg);
    }
    printf("int8 model: %s (%zu bytes; inference arena %zu bytes)\n", path, h.m.file_len, qrt_arena_size(&h.m));
    printf("%-4s %-15s %-14s %-6s %5s %5s %11s  %s\n", "op", "kind", "output", "wbits", "z_in", "z_out",
           "clamp", "scale");
    size_t weights = 0;
    for (int i = 0; i < qrt_model_n_ops(&h.m); i++) {
        const qrt_op *op = qrt_model_op(&h.m, i);
        char shape[32] = "", clamp[24] = "", wb[8] = "";
        if (op->out >= 0) {
            const qrt_value *v = qrt_model_value(&h.m, op->out);
            if (v->ndim == 3) snprintf(shape, sizeof shape, "%d,%d,%d", v->shape[0], v->shape[1], v->shape[2]);
            else snprintf(shape, sizeof shape, "%d", v->shape[0]);
        }
        bool mac = op->kind == QRT_OP_CONV2D || op->kind == QRT_OP_LINEAR;
        if (mac || op->kind == QRT_OP_ADD) snprintf(clamp, sizeof clamp, "[%d, %d]", op->act_min, op->act_max);
        if (mac) {
            snprintf(wb, sizeof wb, "%d", op->wbits);
            weights += op->weight->nbytes;
        }
        const bool lut = op->kind == QRT_OP_LUT;
        char zin[12] = "", zout[12] = "", kind[32];
        if (mac || lut) snprintf(zin, sizeof zin, "%d", op->z_in);
        if (mac || lut || op->kind == QRT_OP_ADD || op->kind == QRT_OP_INPUT)
            snprintf(zout, sizeof zout, "%d", op->z_out);
        /* a table says which function it tabulates: "lut sigmoid" */
        snprintf(kind, sizeof kind, "%s%s%s", qrt_op_kind_str(op->kind), lut ? " " : "", lut ? op->fn : "");
        printf("%-4d %-15s %-14s %-6s %5s %5s %11s  %s\n", i, kind, shape, wb, zin, zout, clamp,
               op->s ? op->s : "");
    }
    printf("weights %zu bytes; %d outputs\n", weights, qrt_model_n_outputs(&h.m));
    if (h.class_names) printf("classes: %s\n", h.class_names);
    if (op_detail >= 0) inspect_requant(&h.m, op_detail);
    int8_close(&h);
    return 0;
}

/* qat calibrate, and the quantization steps `qat train --quant` shares with it:
 * preparing a model from a spec string and calibrating it on training samples. */
#include <cblas.h>
#include <string.h>

#include "autograd/parallel.h"
#include "autograd/comm.h"
#include "common.h"
#include "export/int8.h"
#include "export/onnx.h"
#include "io/file_check.h"
#include "quant/quant.h"
#include "train/progress.h"
#include "train/calibrate.h"
#include "train/trainer.h"

/* ---- qat calibrate ---- */

typedef struct ptq_result {
    double acc_fp32, loss_fp32, acc_q, loss_q, seconds;
    char spec[2048]; /* the spec used, auto= resolved */
} ptq_result;

/* The whole PTQ job; `table` (may be NULL) receives the per-layer quantization table. */
static qat_status ptq_run(const char *from, const char *spec_text, int samples, int test_samples, const char *data,
                          const char *format, long seed, const char *out, FILE *table, ptq_result *res,
                          qat_error *err) {
    qat_opened cm;
    qat_status s = qat_model_open(&cm, from, 0, err);
    if (s) return s;
    if (!cm.from_checkpoint || cm.m->quant) {
        qat_opened_free(&cm);
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "%s: --from needs a float checkpoint (from qat train without --quant)", from);
    }
    const char *v = qat_checkpoint_extra(&cm.ckpt, "data");
    if (!data) data = v ? v : QAT_FASHION_MNIST_DIR;

    qat_dataset train = {0}, test = {0};
    qat_loader ltrain = {0}, ltest = {0};
    qat_loader_config lc = qat_loader_config_default();
    lc.batch_size = 256;
    lc.seed = (uint64_t)seed;
    qat_loader_config_normalize(&lc, &cm.norm);
    qat_loader_config tc = lc;
    tc.shuffle = false;
    qat_tape t;
    qat_tape_init(&t, 0);
    qat_st_kv *extra = NULL;
    double t0;
    char *resolved = res->spec; /* the spec, auto= resolved (cli_auto_spec) */
    const size_t resolved_len = sizeof res->spec;
    if ((s = cli_open_data(&train, data, format, QAT_SPLIT_TRAIN, cm.m, err)) ||
        (s = cli_open_data(&test, data, format, QAT_SPLIT_TEST, cm.m, err)))
        goto done;
    if (test_samples > 0 && test_samples < test.n) test.n = test_samples; /* the first ones */
    if ((s = qat_loader_init(&ltrain, &train, &lc, err)) ||
        (s = qat_loader_init(&ltest, &test, &tc, err)) ||
        (s = qat_evaluate(cm.m, &t, &ltest, &res->loss_fp32, &res->acc_fp32, err)) ||
        (s = cli_auto_spec(from, spec_text, &ltrain, &ltest, samples, table == NULL, resolved, resolved_len, err)) ||
        (s = qat_model_quantize(cm.m, resolved, cm.have_norm ? &cm.norm : NULL, err)))
        goto done;
    t0 = qat_now();
    if ((s = qat_calibrate(cm.m, &ltrain, samples, err))) goto done;
    res->seconds = qat_now() - t0;
    if ((s = qat_evaluate(cm.m, &t, &ltest, &res->loss_q, &res->acc_q, err))) goto done;
    /* The source's metadata (normalisation, data, classes...), plus the spec. */
    extra = calloc(cm.ckpt.n_extra + 2, sizeof *extra);
    if (!extra) {
        s = qat_error_set(err, QAT_STATUS_NOMEM, "out of memory");
        goto done;
    }
    size_t ne = 0;
    char ssamples[32];
    snprintf(ssamples, sizeof ssamples, "%d", samples);
    for (size_t i = 0; i < cm.ckpt.n_extra; i++)
        if (strcmp(cm.ckpt.extra[i].key, "quant") && strcmp(cm.ckpt.extra[i].key, "quant.calibration_samples"))
            extra[ne++] = cm.ckpt.extra[i];
    extra[ne++] = (qat_st_kv){"quant", resolved};
    extra[ne++] = (qat_st_kv){"quant.calibration_samples", ssamples};
    qat_checkpoint_meta meta = {.model = cm.text, .epoch = cm.ckpt.epoch, .step = cm.ckpt.step,
                                .rng = cm.ckpt.rng, .extra = extra, .n_extra = ne};
    /* data-parallel (mpirun): every process holds the same model; the first writes it */
    if (qat_comm_get()->rank == 0 && (s = qat_checkpoint_save(out, cm.m, NULL, &meta, err))) goto done;
    if (table) qat_quant_print(cm.m, table);
done:
    free(extra);
    qat_tape_free(&t);
    qat_loader_free(&ltrain);
    qat_loader_free(&ltest);
    qat_dataset_free(&train);
    qat_dataset_free(&test);
    qat_opened_free(&cm);
    return s;
}

qat_status cli_ptq(const char *from, const char *spec, int samples, const char *out, double *acc_fp32,
                   double *acc_quant, double *seconds, qat_error *err) {
    ptq_result r = {0};
    qat_status s = ptq_run(from, spec, samples, 0, NULL, NULL, 0, out, NULL, &r, err);
    *acc_fp32 = r.acc_fp32;
    *acc_quant = r.acc_q;
    *seconds = r.seconds;
    return s;
}

int cmd_calibrate(int argc, char **argv) {
    const char *from = NULL, *spec = "w8a8", *observer = NULL, *data = NULL, *format = NULL;
    const char *out = "qat-ptq.safetensors";
    int samples = 2048, threads = 0, test_samples = 0;
    long seed = 0;
    bool bias_correction = false, json = false, quiet = false;
    qat_opt opts[] = {
        {"from", QAT_OPT_STRING, &from, "FILE", "the float checkpoint to quantize (required)"},
        {"quant", QAT_OPT_STRING, &spec, "SPEC", "quantization spec, e.g. w8a8, w4a8,group=32 (quant/quant.h)"},
        {"observer", QAT_OPT_STRING, &observer, "K", "minmax, ema, percentile, kl or mse (overrides the spec's)"},
        {"samples", QAT_OPT_INT, &samples, "N", "calibration samples from the training set"},
        {"test-samples", QAT_OPT_INT, &test_samples, "N", "evaluate on the first N test samples (0: all)"},
        {"bias-correction", QAT_OPT_FLAG, &bias_correction, NULL, "correct each layer's bias for the weight rounding"},
        {"data", QAT_OPT_STRING, &data, "PATH", "data set (default: the checkpoint's)"},
        {"format", QAT_OPT_STRING, &format, "F", "idx, cifar10, folder or csv (default: detected)"},
        {"seed", QAT_OPT_LONG, &seed, "N", "which training samples calibrate (shuffle seed)"},
        {"threads", QAT_OPT_INT, &threads, "N", "threads (0: QAT_NUM_THREADS, else all CPUs)"},
        {"out", QAT_OPT_STRING, &out, "FILE", "the quantized checkpoint"},
        {"json", QAT_OPT_FLAG, &json, NULL, "print the metrics as one JSON object"},
        {"quiet", QAT_OPT_FLAG, &quiet, NULL, "no per-layer table"},
        {0},
    };
    qat_error err = {0};
    int n = qat_args_parse(argc, argv, opts, NULL, 0, &err);
    if (n == -2) {
        qat_args_help(stdout, "qat calibrate --from FP32.safetensors [options]",
                      "Post-training quantization: calibrates activation ranges on training samples, "
                      "evaluates the fake-quant model on the test set and writes a quantized "
                      "checkpoint (qat eval, inspect and train --resume read it).\n"
                      "SPEC: w<bits>a<bits> then options: per-tensor, per-channel, group=G, pact, lsq, "
                      "observer=K, momentum=X, percentile=P, freeze-bn=N, freeze-observer=N, "
                      "pact-decay=X, all, bias-correction, sim=float|fixed|exact (how the forward requantizes; "
                      "exact, the default, computes the runtime's integers).",
                      opts);
        return 0;
    }
    if (n < 0) return cli_fail("calibrate", err.msg);
    if (!from) return cli_fail("calibrate", "--from FILE is required (a float checkpoint from qat train)");
    if (qat_file_check_output(out, &err)) return cli_fail("calibrate", err.msg);
    if (samples < 1) return cli_fail("calibrate", "--samples must be at least 1");
    if (test_samples < 0) return cli_fail("calibrate", "--test-samples must be >= 0");
    if (threads > 0) qat_set_num_threads(threads);
    /* The spec, with --observer and --bias-correction folded in, in its canonical form. */
    qat_quant_spec qs;
    char spec_text[2048];
    if (qat_quant_spec_parse(&qs, spec, &err)) return cli_fail("calibrate", err.msg);
    if (observer && !qat_observer_kind_from_str(observer, &qs.observer.kind))
        return cli_fail("calibrate", "--observer: expected minmax, ema, percentile, kl or mse");
    qs.bias_correction = qs.bias_correction || bias_correction;
    qat_quant_spec_format(&qs, spec_text, sizeof spec_text);
    ptq_result r = {0};
    if (ptq_run(from, spec_text, samples, test_samples, data, format, seed, out, json || quiet ? NULL : stdout, &r, &err))
        return cli_fail("calibrate", err.msg);
    if (json)
        printf("{\"command\": \"calibrate\", \"quant\": \"%s\", \"samples\": %d, \"fp32_accuracy\": %.6f, "
               "\"quant_accuracy\": %.6f, \"fp32_loss\": %.6f, \"quant_loss\": %.6f, "
               "\"calibration_seconds\": %.3f, \"checkpoint\": \"%s\"}\n",
               r.spec, samples, r.acc_fp32, r.acc_q, r.loss_fp32, r.loss_q, r.seconds, out);
    else
        printf("%s: fp32 accuracy %.2f%%; %s after calibration on %d samples (%.1f s): %.2f%%; "
               "checkpoint %s\n",
               from, 100 * r.acc_fp32, r.spec, samples, r.seconds, 100 * r.acc_q, out);
    return 0;
}

/* ---- qat export ---- */

int cmd_export(int argc, char **argv) {
    const char *out = NULL;
    const char *format = "int8";
    const char *form = "qoperator";
    bool json = false;
    /* --format c */
    const char *name = "qat_model", *data = NULL, *data_format = NULL;
    int images = 0;
    qat_opt opts[] = {
        {"out", QAT_OPT_STRING, &out, "FILE",
         "the file to write (default model.int8.safetensors, or model.onnx; --format c: a directory, default the --name)"},
        {"format", QAT_OPT_STRING, &format, "F",
         "int8 (qat's integer model file, the default), onnx (int8 ONNX for ONNX Runtime from a quantized "
         "checkpoint, float ONNX from a float one; docs/onnx.md) or c (C source for firmware, docs/mcu.md)"},
        {"onnx-form", QAT_OPT_STRING, &form, "F",
         "the int8 ONNX form: qoperator (QLinearConv, QGemm, ...; the default) or qdq (Quantize/DequantizeLinear "
         "around float ops) or exact (the spec's integer arithmetic in integer ONNX ops: the runtime's logits bit for bit, slower)"},
        {"name", QAT_OPT_STRING, &name, "ID", "--format c: the files' and symbols' name (default qat_model)"},
        {"images", QAT_OPT_INT, &images, "N", "--format c: also embed the first N test images (<name>_images.c)"},
        {"data", QAT_OPT_STRING, &data, "PATH", "--format c: the images' data set (default: the checkpoint's)"},
        {"data-format", QAT_OPT_STRING, &data_format, "F", "--format c: idx, cifar10 or folder (default: detected)"},
        {"json", QAT_OPT_FLAG, &json, NULL, "print the sizes as one JSON object"},
        {0},
    };
    char *pos[1];
    qat_error err = {0};
    int n = qat_args_parse(argc, argv, opts, pos, 1, &err);
    if (n == -2 || n == 0) {
        qat_args_help(n == -2 ? stdout : stderr, "qat export CHECKPOINT [--out FILE] [--format int8|onnx|c]",
                      "Writes a quantized checkpoint (from qat calibrate or qat train --quant) as an "
                      "integer-only model for the int8 runtime (docs/int8-format.md): int8 or packed "
                      "4-bit weights, int32 biases, fixed-point multipliers, zero points. With --format onnx, "
                      "an ONNX model ONNX Runtime runs in int8 (uint8 pixels in, float logits out), or, from a "
                      "float checkpoint, a float ONNX model (docs/onnx.md). --format c "
                      "writes it as C source for firmware into the directory --out (default: the "
                      "--name): <name>.h states the arena and model memory sizes (docs/mcu.md).",
                      opts);
        return n == -2 ? 0 : 2;
    }
    if (n < 0) return cli_fail("export", err.msg);
    const bool onnx = !strcmp(format, "onnx"), c_source = !strcmp(format, "c");
    if (!onnx && !c_source && strcmp(format, "int8")) {
        char msg[256];
        snprintf(msg, sizeof msg, "unknown --format '%s' (int8, onnx, c)", format);
        return cli_fail("export", msg);
    }
    qat_onnx_form oform = QAT_ONNX_FORM_COUNT;
    for (int f = 0; f < QAT_ONNX_FORM_COUNT; f++)
        if (!strcmp(form, qat_onnx_form_str((qat_onnx_form)f))) oform = (qat_onnx_form)f;
    if (oform == QAT_ONNX_FORM_COUNT) {
        char msg[256];
        snprintf(msg, sizeof msg, "unknown --onnx-form '%s' (qoperator, qdq, exact)", form);
        return cli_fail("export", msg);
    }
    if (!out) out = onnx ? "model.onnx" : c_source ? name : "model.int8.safetensors";
    if (!c_source && qat_file_check_output(out, &err)) return cli_fail("export", err.msg);
    qat_opened cm;
    if (qat_model_open(&cm, pos[0], 0, &err)) return cli_fail("export", err.msg);
    if (!cm.m->quant && !onnx) {
        qat_opened_free(&cm);
        return cli_fail("export", "needs a quantized checkpoint (qat calibrate or qat train --quant)");
    }
    /* For people and tools: where it came from, the class names, the normalisation. */
    qat_st_kv meta[8];
    size_t nm = 0;
    meta[nm++] = (qat_st_kv){"source", pos[0]};
    const char *keys[] = {"quant", "class_names", "normalize_mean", "normalize_std", "data", "classes"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const char *v = qat_checkpoint_extra(&cm.ckpt, keys[i]);
        if (v) meta[nm++] = (qat_st_kv){keys[i], v};
    }
    /* The float model's weights: the layers' parameters (the state's first entries;
     * the quantization's own parameters and buffers come after them). */
    size_t fp32 = 0;
    for (int i = 0; i < cm.m->n_layer_state; i++)
        if (cm.m->state[i]->grad) fp32 += 4 * cm.m->state[i]->n;
    int rc = 0;
    if (onnx) {
        qat_onnx_report rep = {0};
        qat_status st;
        char what[32];
        snprintf(what, sizeof what, "%s%s", cm.m->quant ? "int8-" : "float32",
                 cm.m->quant ? qat_onnx_form_str(oform) : "");
        if (cm.m->quant) {
            qat_int_model im;
            st = qat_lower(cm.m, &im, &err);
            if (!st) st = qat_onnx_write_int(&im, out, oform, meta, nm, &rep, &err);
            qat_int_model_free(&im);
        } else {
            st = qat_onnx_write_float(cm.m, cm.have_norm ? &cm.norm : NULL, out, meta, nm, &rep, &err);
        }
        if (st) {
            /* lowering's messages name the layer; say which checkpoint too (a write error
             * names the output already) */
            rc = strstr(err.msg, out) ? cli_fail("export", err.msg) : cli_fail_in("export", pos[0], err.msg);
        } else if (json)
            printf("{\"command\": \"export\", \"model\": \"%s\", \"format\": \"onnx\", \"onnx_form\": \"%s\", "
                   "\"nodes\": %d, \"file_bytes\": %zu, \"fp32_weight_bytes\": %zu}\n",
                   out, what, rep.n_nodes, rep.file_bytes, fp32);
        else
            printf("%s: ONNX (%s), %d nodes, %zu bytes; the fp32 weights are %zu bytes\n", out, what, rep.n_nodes,
                   rep.file_bytes, fp32);
        qat_opened_free(&cm);
        return rc;
    }
    qat_export_report rep;
    if (c_source) {
        rc = cli_export_c(&cm, out, name, images, data, data_format, meta, nm, json);
    } else if (qat_export_int8(cm.m, out, meta, nm, &rep, &err)) {
        rc = strstr(err.msg, out) ? cli_fail("export", err.msg) : cli_fail_in("export", pos[0], err.msg);
    } else {
        if (json)
            printf("{\"command\": \"export\", \"model\": \"%s\", \"ops\": %d, \"file_bytes\": %zu, "
                   "\"weight_bytes\": %zu, \"fp32_weight_bytes\": %zu, \"ratio\": %.4f}\n",
                   out, rep.n_ops, rep.file_bytes, rep.weight_bytes, fp32, (double)rep.file_bytes / (double)fp32);
        else
            printf("%s: %d ops, %zu bytes (weights %zu, biases, multipliers and tables %zu); the fp32 weights are %zu "
                   "bytes: %.3fx\n",
                   out, rep.n_ops, rep.file_bytes, rep.weight_bytes, rep.other_bytes, fp32,
                   (double)rep.file_bytes / (double)fp32);
    }
    qat_opened_free(&cm);
    return rc;
}

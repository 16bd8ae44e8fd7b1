/* qat import: a model trained elsewhere as a qat float checkpoint that every command
 * reads (eval, calibrate, train --from/--resume, export after quantization), with no
 * training epoch first.
 *
 *   qat import model.onnx --out model.st                   (train/onnx_import.h)
 *   qat import weights.safetensors --model net.model --out model.st
 *                                         (a state_dict; names mapped by order and shape)
 *
 * The checkpoint records the data normalisation the model expects, x = (p/255 - mean) /
 * std: --mean/--std, by default Fashion-MNIST's (0.2860, 0.3530), qat's default data. */
#include <string.h>

#include "common.h"
#include "io/file_check.h"
#include "layers/model_file.h"
#include "train/onnx_import.h"

static const char *FASHION_CLASSES =
    "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot";

int cmd_import(int argc, char **argv) {
    const char *out = "qat-import.safetensors", *model = NULL, *mean = NULL, *std = NULL;
    const char *data = QAT_FASHION_MNIST_DIR;
    bool quiet = false;
    qat_opt opts[] = {
        {"out", QAT_OPT_STRING, &out, "FILE", "the float checkpoint to write"},
        {"model", QAT_OPT_STRING, &model, "SPEC", "safetensors weights: the model they belong to (cnn, mlp or a model file)"},
        {"mean", QAT_OPT_STRING, &mean, "M[,M,M]", "normalisation mean in x/255 units (default: Fashion-MNIST's 0.2860)"},
        {"std", QAT_OPT_STRING, &std, "S[,S,S]", "normalisation std (default: Fashion-MNIST's 0.3530)"},
        {"data", QAT_OPT_STRING, &data, "PATH", "the data set the model is for, recorded for eval and calibrate"},
        {"quiet", QAT_OPT_FLAG, &quiet, NULL, "print only the result"},
        {0},
    };
    char *pos[1];
    qat_error err = {0};
    int n = qat_args_parse(argc, argv, opts, pos, 1, &err);
    if (n == -2 || n == 0) {
        qat_args_help(n == -2 ? stdout : stderr,
                      "qat import MODEL.onnx [--out FILE]\n       qat import WEIGHTS.safetensors --model SPEC [--out FILE]",
                      "Writes a model trained elsewhere as a qat float checkpoint: a float ONNX model as "
                      "torch.onnx.export writes it (docs/onnx-import.md lists the ops), or a PyTorch state_dict "
                      "in safetensors with the qat model it belongs to (names that are not qat's, like "
                      "conv1.weight or bn1.running_mean, are mapped by order and shape). Prints the mapping of "
                      "tensor names. The checkpoint records the input normalisation (--mean/--std; default "
                      "Fashion-MNIST's) and can be evaluated, calibrated, fine-tuned (qat train --from) at once.",
                      opts);
        return n == -2 ? 0 : 2;
    }
    if (n < 0) return cli_fail("import", err.msg);
    if (std && !mean) return cli_fail("import", "--std goes with --mean");
    if (qat_file_check_output(out, &err)) return cli_fail("import", err.msg);
    const char *src = pos[0];
    bool onnx = qat_onnx_path(src);
    if (onnx && model) return cli_fail("import", "an ONNX file brings its own model; drop --model");
    if (!onnx && !model)
        return cli_fail("import", "give an .onnx model, or safetensors weights with the model they belong to (--model)");

    qat_opened cm = {0};
    FILE *log = quiet ? NULL : stdout;
    if (onnx) {
        if (log) fprintf(log, "%s: ONNX tensor -> qat tensor\n", src);
        if (qat_onnx_import(src, &cm.m, log, &err)) return cli_fail("import", err.msg);
        if (!(cm.text = qat_model_to_text(cm.m))) {
            qat_opened_free(&cm);
            return cli_fail("import", "out of memory");
        }
    } else {
        if (qat_model_open(&cm, model, 0, &err)) return cli_fail("import", err.msg);
        if (cm.from_checkpoint) {
            qat_opened_free(&cm);
            return cli_fail("import", "--model takes a model (cnn, mlp or a model file), not a checkpoint");
        }
        if (log) fprintf(log, "%s: file tensor -> qat tensor\n", src);
        qat_import_report rep;
        if (qat_checkpoint_import_mapped(cm.m, src, log, &rep, &err)) {
            qat_opened_free(&cm);
            return cli_fail("import", err.msg);
        }
    }
    qat_model *m = cm.m;
    /* The normalisation: one value per input channel, as qat train records it. */
    const int channels = m->in_ndim == 3 ? m->in_shape[0] : 1;
    qat_normalization norm = qat_normalization_identity();
    norm.mean[0] = norm.mean[1] = norm.mean[2] = QAT_FASHION_MNIST_MEAN;
    norm.std[0] = norm.std[1] = norm.std[2] = QAT_FASHION_MNIST_STD;
    char smean[64], sstd[64], sclasses[16];
    int rc = 0;
    if (mean && (qat_normalization_parse(&norm, mean, std, &err) ||
                 (norm.channels != 1 && norm.channels != channels &&
                  qat_error_set(&err, QAT_STATUS_INVALID_ARG, "--mean/--std give %d values for a model of %d input channels",
                                norm.channels, channels)))) {
        rc = cli_fail("import", err.msg);
        goto done;
    }
    if (!mean && (channels != 1 || strcmp(data, QAT_FASHION_MNIST_DIR) != 0))
        fprintf(stderr, "qat import: no --mean/--std: recording Fashion-MNIST's normalisation (mean %.4f, std %.4f); "
                        "give the one the model was trained with\n",
                (double)QAT_FASHION_MNIST_MEAN, (double)QAT_FASHION_MNIST_STD);
    qat_normalization_format(&norm, channels, smean, sstd, sizeof smean);
    snprintf(sclasses, sizeof sclasses, "%d", cli_model_outputs(m));
    qat_st_kv extra[7] = {{"normalize_mean", smean}, {"normalize_std", sstd}, {"seed", "0"},
                          {"data", data}, {"classes", sclasses}, {"imported_from", src}};
    size_t n_extra = 6;
    if (strcmp(data, QAT_FASHION_MNIST_DIR) == 0) extra[n_extra++] = (qat_st_kv){"class_names", FASHION_CLASSES};
    qat_checkpoint_meta meta = {.model = cm.text, .extra = extra, .n_extra = n_extra};
    qat_rng_init(&meta.rng, 0);
    if (qat_checkpoint_save(out, m, NULL, &meta, &err)) {
        rc = cli_fail("import", err.msg);
        goto done;
    }
    if (!quiet) qat_model_print(m, stdout);
    printf("%s: %zu parameters from %s, input normalisation mean %s std %s; checkpoint %s\n", out, m->n_params, src,
           smean, sstd, out);
done:
    qat_opened_free(&cm);
    return rc;
}

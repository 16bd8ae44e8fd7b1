/* common.h - what the qat subcommands share: loading a model from a name, a model file
 * or a checkpoint, and reporting errors. Only the CLI calls exit(). */
#ifndef QAT_CLI_COMMON_H
#define QAT_CLI_COMMON_H

#include "args.h"
#include "layers/model.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "train/checkpoint.h"

/* A model and where it came from. `text` is its description (model-file text). */
typedef struct cli_model {
    qat_model *m;
    char *text;
    qat_checkpoint ckpt; /* loaded when the source was a checkpoint */
    bool from_checkpoint;
} cli_model;

/* `spec`: "cnn", "mlp", a model file, or a checkpoint (.safetensors, detected by
 * content). A checkpoint's weights are restored; otherwise the model is initialised
 * from `seed`. */
qat_status cli_model_open(cli_model *cm, const char *spec, uint64_t seed, qat_error *err);
void cli_model_close(cli_model *cm);

/* Parses up to n comma-separated floats ("0.49,0.48,0.45") into out; NULL or missing
 * values repeat the first. */
void cli_parse_floats(const char *s, float *out, int n);

/* Loads one split of a data set: format "idx", "cifar10", "csv", "folder", or NULL to
 * detect it from what `path` holds. */
qat_status cli_load_split(qat_dataset *ds, const char *path, const char *format, qat_split split,
                          const qat_model *m, qat_error *err);
/* Checks that the data fit the model: sample shape and number of classes. */
qat_status cli_check_fit(const qat_dataset *ds, const qat_model *m, const char *path, qat_error *err);

/* Quantization (cli/quant.c). Prepares cm's model with `spec` (quant/quant.h), the input
 * mapping taken from the normalisation lists ("0.286" or "0.49,0.48,0.45"). */
qat_status cli_quant_prepare(qat_model *m, const char *spec, const char *mean, const char *std,
                             qat_error *err);
/* Calibrates a prepared model on the first `samples` samples of `l` (in its epoch-0
 * order), then, if the spec asks, applies bias correction on the same samples. */
qat_status cli_quant_calibrate(qat_model *m, qat_loader *l, int samples, qat_error *err);

/* PTQ of a float checkpoint `from` with `spec` on `samples` training samples, written to
 * `out`; returns the float and quantized test accuracies and the calibration time. */
qat_status cli_ptq(const char *from, const char *spec, int samples, const char *out, double *acc_fp32,
                   double *acc_quant, double *seconds, qat_error *err);

/* The recipes `qat demo` runs, and the defaults of `qat train --quant` (measured: see
 * README, "Quantization"). */
#define QAT_DEMO_PTQ_SPEC "w8a8"
#define QAT_DEMO_QAT_SPEC "w8a8"
#define QAT_DEFAULT_EPOCHS 1
#define QAT_DEFAULT_LR 0.01f

/* int8 model files (cli/int8.c): is `path` one, and eval / predict / inspect on one. */
bool cli_is_int8(const char *path);
typedef struct cli_int8_result {
    double accuracy, images_per_s, agreement; /* agreement: -1 without a comparison */
} cli_int8_result;
/* With `res`, the results are returned instead of printed. */
int cli_int8_eval(const char *path, const char *data, const char *format, const char *compare, bool json,
                  cli_int8_result *res);
int cli_int8_predict(const char *path, char **images, int n_images, int top, bool json);
int cli_int8_inspect(const char *path);

/* Prints "qat <cmd>: <msg>" to stderr and returns 1 (the process exit status). */
int cli_fail(const char *cmd, const char *msg);

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_export(int argc, char **argv);

#endif

/* common.h - what the qat subcommands share: reporting errors, data checked against a
 * model, the recipes. The work itself is the library's (train/open.h opens models and
 * checkpoints, data/ reads data sets, train/ trains and calibrates, export/ writes). Only
 * the CLI calls exit() and reads the environment. */
#ifndef QAT_CLI_COMMON_H
#define QAT_CLI_COMMON_H

#include "args.h"
#include "layers/model.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "train/checkpoint.h"
#include "train/open.h"

/* The number of classes a model outputs: the length of its last layer's output vector. */
int cli_model_outputs(const qat_model *m);
/* One split of the data at `path` (format NULL: detected), checked against the model's
 * input and outputs. */
qat_status cli_open_data(qat_dataset *ds, const char *path, const char *format, qat_split split,
                         const qat_model *m, qat_error *err);

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
/* At 2 bits QAT from a float checkpoint distils from it by default (docs/quant.md,
 * "Low-bit recipes": LSQ 89.87% alone, 90.33% with T 2 and alpha 0.5, float 91.51%). */
#define QAT_DEFAULT_DISTILL_BITS 2
#define QAT_DEFAULT_DISTILL_T 2.0f

/* int8 model files (cli/int8.c): is `path` one, and eval / predict / inspect on one. */
bool cli_is_int8(const char *path);
typedef struct cli_int8_result {
    double accuracy, images_per_s, agreement; /* agreement: -1 without a comparison */
} cli_int8_result;
/* With `res`, the results are returned instead of printed. sim >= 0: the compared
 * checkpoint's simulation (qat_sim) replaces its own (qat eval --sim). */
int cli_int8_eval(const char *path, const char *data, const char *format, const char *compare, int sim, bool json,
                  cli_int8_result *res);
/* qat eval of a quantized checkpoint: its int8 model, as qat export would write it, run by
 * the runtime (in memory), beside its float simulation. A model without an integer form
 * sets *no_int8 (and says why on stderr unless json) and returns 0, evaluating nothing. */
int cli_int8_eval_checkpoint(const char *ckpt, const char *data, const char *format, int sim, bool json,
                             bool *no_int8, cli_int8_result *res);
qat_status cli_int8_predictions(const qat_model *m, const qat_dataset *images, int *pred, qat_error *err);
int cli_int8_predict(const char *path, char **images, int n_images, int top, bool json);
int cli_int8_inspect(const char *path, int op_detail);

/* Prints "qat <cmd>: <msg>" to stderr and returns 1 (the process exit status). */
int cli_fail(const char *cmd, const char *msg);
/* cli_fail with the file the message is about named first, unless it names it already. */
int cli_fail_in(const char *cmd, const char *path, const char *msg);

/* qat export --format c (cli/export_c.c): the opened quantized checkpoint as C source in
 * `dir` (<name>.{h,c}, <name>.int8) and its first `images` test images from `data`
 * (<name>_images.{h,c}); `meta` as for the int8 file. */
int cli_export_c(const qat_opened *cm, const char *dir, const char *name, int images, const char *data,
                 const char *format, const qat_st_kv *meta, size_t n_meta, bool json);

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_calibrate(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_sensitivity(int argc, char **argv);
/* A spec with auto=BYTES resolved for the float checkpoint ckpt (measured on the loaders),
 * else the spec in canonical form, into out. */
qat_status cli_auto_spec(const char *ckpt, const char *spec_text, qat_loader *train, qat_loader *test, int samples,
                         bool quiet, char *out, size_t len, qat_error *err);
int cmd_import(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_report(int argc, char **argv);
#define QAT_REPORT_SENS_SAMPLES 1000 /* test samples per sensitivity measurement */
#define QAT_REPORT_CALIB 512         /* calibration samples of each sensitivity PTQ */
/* qat report's work (cli/report.c): the report of checkpoint `ckpt` into `out`; float_ckpt
 * (or NULL): the float model it came from, for the sensitivity section; test_samples: the
 * first so many test samples (0: all); sens_samples: test samples per sensitivity
 * measurement (0: none). */
int cli_report(const char *ckpt, const char *float_ckpt, const char *data, const char *format, const char *out,
               int test_samples, int sens_samples, bool quiet);

#endif

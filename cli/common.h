/* common.h - what the qat subcommands share: loading a model from a name, a model file
 * or a checkpoint, and reporting errors. Only the CLI calls exit(). */
#ifndef QAT_CLI_COMMON_H
#define QAT_CLI_COMMON_H

#include "args.h"
#include "layers/model.h"
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

/* Prints "qat <cmd>: <msg>" to stderr and returns 1 (the process exit status). */
int cli_fail(const char *cmd, const char *msg);

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_demo(int argc, char **argv);

#endif

/* qat inspect MODEL: layers, output shapes, parameters, MACs per layer and sizes of a
 * model file, a built-in model or a checkpoint (with its metadata). */
#include <string.h>

#include "common.h"
#include "quant/quant.h"

int cmd_inspect(int argc, char **argv) {
    int op = -1;
    qat_opt opts[] = {{"op", QAT_OPT_INT, &op, "N", "int8 model: work op N's requantization through (M0, shift)"},
                      {0}};
    char *pos[1];
    qat_error err = {0};
    int n = qat_args_parse(argc, argv, opts, pos, 1, &err);
    if (n == -2 || n == 0) {
        qat_args_help(n == -2 ? stdout : stderr, "qat inspect MODEL",
                      "Shows a model's layers, output shapes, parameters, multiply-accumulates "
                      "and sizes.\nMODEL is cnn, mlp, a model file (examples/*.model), a "
                      "checkpoint (quantized ones show bits, scales, zero points, PACT alphas) or an "
                      "int8 model from qat export (its ops, zero points, clamps; --op N: one conv or linear op's "
                      "multipliers and shifts, worked through).",
                      opts);
        return n == -2 ? 0 : 2;
    }
    if (n < 0) return cli_fail("inspect", err.msg);
    if (cli_is_int8(pos[0])) return cli_int8_inspect(pos[0], op);
    if (op >= 0) return cli_fail_in("inspect", pos[0], "--op is for int8 models (qat export's files)");
    qat_opened cm;
    if (qat_model_open(&cm, pos[0], 0, &err) != QAT_STATUS_OK) return cli_fail("inspect", err.msg);
    printf("model: %s\n", pos[0]);
    qat_model_print(cm.m, stdout);
    printf("fp32 weights: %.1f KiB (%zu parameters), batch-norm statistics: %zu values\n",
           cm.m->n_params * 4.0 / 1024, cm.m->n_params, cm.m->n_buffers);
    if (cm.m->quant) qat_quant_print(cm.m, stdout);
    if (cm.from_checkpoint) {
        const qat_checkpoint *c = &cm.ckpt;
        printf("checkpoint: epoch %ld, step %ld", c->epoch, c->step);
        if (c->has_optim)
            printf(", optimizer %s (lr %g) at step %ld", qat_optim_kind_str(c->optim_cfg.kind),
                   c->optim_cfg.lr, c->optim_step);
        printf("\n");
        for (size_t i = 0; i < c->n_extra; i++) printf("  %s: %s\n", c->extra[i].key, c->extra[i].value);
    }
    qat_opened_free(&cm);
    return 0;
}

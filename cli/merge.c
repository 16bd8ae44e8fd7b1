/* qat merge: folds a LoRA checkpoint's adapters into its weights (layers/lora.h) and
 * writes the result as a plain float checkpoint, which then evaluates, calibrates, trains
 * with --quant and exports like any other. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "io/file_check.h"
#include "layers/lora.h"
#include "layers/model_file.h"
#include "train/checkpoint.h"

/* The largest |difference| between the two models' outputs on `n` pseudo-random inputs
 * (a check that the merged model computes what the adapted one did). */
static double max_output_diff(qat_model *a, qat_model *b, int n) {
    int shape[4] = {n, 0, 0, 0};
    size_t per = 1;
    for (int i = 0; i < a->in_ndim; i++) shape[i + 1] = a->in_shape[i], per *= (size_t)a->in_shape[i];
    float *x = malloc((size_t)n * per * sizeof(float));
    if (!x) return INFINITY;
    qat_rng r;
    qat_rng_init(&r, 7);
    for (size_t i = 0; i < (size_t)n * per; i++) x[i] = qat_rng_normal(&r);
    qat_tape ta, tb;
    qat_tape_init(&ta, 0);
    qat_tape_init(&tb, 0);
    ta.training = tb.training = ta.grad_enabled = tb.grad_enabled = false;
    qat_tensor *ya = qat_model_forward(a, &ta, qat_tape_input(&ta, a->in_ndim + 1, shape, x));
    qat_tensor *yb = qat_model_forward(b, &tb, qat_tape_input(&tb, b->in_ndim + 1, shape, x));
    double d = ya && yb && ya->n == yb->n ? 0 : INFINITY;
    for (size_t i = 0; ya && yb && i < ya->n && i < yb->n; i++) d = fmax(d, fabs((double)ya->data[i] - yb->data[i]));
    qat_tape_free(&ta);
    qat_tape_free(&tb);
    free(x);
    return d;
}

int cmd_merge(int argc, char **argv) {
    const char *out = NULL;
    qat_opt opts[] = {
        {"out", QAT_OPT_STRING, &out, "FILE", "the float checkpoint to write"},
        {0},
    };
    char *pos[1];
    qat_error err = {0};
    int n = qat_args_parse(argc, argv, opts, pos, 1, &err);
    if (n == -2 || n == 0) {
        qat_args_help(n == -2 ? stdout : stderr, "qat merge LORA.ckpt --out FILE",
                      "Folds the low-rank adapters of a checkpoint trained with qat train --lora into its "
                      "weights (W + alpha/r B A) and writes a float checkpoint without adapters: the same "
                      "model, ready for qat eval, calibrate, train --quant and export.",
                      opts);
        return n == -2 ? 0 : 2;
    }
    if (n < 0) return cli_fail("merge", err.msg);
    if (!out) return cli_fail("merge", "give --out FILE for the merged checkpoint");
    if (qat_file_check_output(out, &err)) return cli_fail("merge", err.msg);
    qat_opened cm = {0};
    qat_model *f = NULL;
    int rc = 0;
    if (qat_model_open(&cm, pos[0], 0, &err)) return cli_fail("merge", err.msg);
    if (!cm.from_checkpoint || !cm.m->lora) {
        rc = cli_fail_in("merge", pos[0], "not a checkpoint with low-rank adapters (qat train --from F --lora r=R)");
        goto done;
    }
    qat_rng rng;
    qat_rng_init(&rng, 0);
    if (qat_model_parse(cm.text, pos[0], &f, &err) || qat_model_finalize(f, &rng)) {
        rc = cli_fail("merge", err.msg[0] ? err.msg : f->err.msg);
        goto done;
    }
    size_t adapters = 0;
    qat_lora_counts(cm.m, &adapters, NULL, NULL);
    qat_lora_merge(cm.m);
    /* Every tensor of the plain model from the adapted one, by name. */
    for (int i = 0; i < f->n_state; i++) {
        qat_tensor *src = qat_model_state_find(cm.m, f->state[i]->name);
        if (!src || src->n != f->state[i]->n) {
            rc = cli_fail("merge", "the adapted model lacks a tensor of its own model text (corrupt checkpoint?)");
            goto done;
        }
        memcpy(f->state[i]->data, src->data, src->n * sizeof(float));
    }
    const double diff = max_output_diff(cm.m, f, 8);
    /* Its metadata but the adapters and the optimizer's. */
    qat_st_kv *extra = calloc(cm.ckpt.n_extra + 1, sizeof *extra);
    if (!extra) {
        rc = cli_fail("merge", "out of memory");
        goto done;
    }
    size_t ne = 0;
    for (size_t i = 0; i < cm.ckpt.n_extra; i++)
        if (strcmp(cm.ckpt.extra[i].key, "lora") != 0) extra[ne++] = cm.ckpt.extra[i];
    extra[ne++] = (qat_st_kv){"merged_from", pos[0]};
    qat_checkpoint_meta meta = {.model = cm.text, .epoch = cm.ckpt.epoch, .step = cm.ckpt.step, .rng = cm.ckpt.rng,
                                .extra = extra, .n_extra = ne};
    if (qat_checkpoint_save(out, f, NULL, &meta, &err)) rc = cli_fail("merge", err.msg);
    else
        printf("%s: %zu adapter parameters folded into %zu; outputs differ from the adapted model's by at most %.3g "
               "on random inputs; checkpoint %s\n",
               pos[0], adapters, f->n_params, diff, out);
    free(extra);
done:
    qat_model_free(f);
    qat_opened_free(&cm);
    return rc;
}

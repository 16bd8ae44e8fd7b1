#include "common.h"

#include <string.h>

#include "layers/model_file.h"
#include "quant/quant.h"

/* Missing values repeat the first one, so "0.5" fills every channel. */
void cli_parse_floats(const char *s, float *out, int n) {
    for (int i = 0; i < n; i++) out[i] = out[0];
    for (int i = 0; i < n && s && *s; i++) {
        out[i] = strtof(s, (char **)&s);
        if (*s == ',') s++;
    }
}

int cli_fail(const char *cmd, const char *msg) {
    fprintf(stderr, "qat %s: %s\n", cmd, msg);
    return 1;
}

/* A safetensors file starts with an 8-byte little-endian header length followed by '{'. */
static bool looks_like_safetensors(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    unsigned char b[9];
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    return n == 9 && b[8] == '{';
}

static const char *builtin_text(const char *name) {
    if (strcmp(name, "cnn") == 0)
        return "input 1 28 28\nconv2d out=32 kernel=3 pad=1\nbatchnorm\nrelu\nmaxpool kernel=2\n"
               "conv2d out=64 kernel=3 pad=1\nbatchnorm\nrelu\nmaxpool kernel=2\nflatten\n"
               "linear out=128\nrelu\nlinear out=10\n";
    if (strcmp(name, "mlp") == 0)
        return "input 1 28 28\nflatten\nlinear out=256\nrelu\nlinear out=128\nrelu\nlinear out=10\n";
    return NULL;
}

qat_status cli_model_open(cli_model *cm, const char *spec, uint64_t seed, qat_error *err) {
    memset(cm, 0, sizeof *cm);
    qat_status s;
    const char *text = builtin_text(spec);
    if (text) {
        s = qat_model_parse(text, spec, &cm->m, err);
        if (s == QAT_STATUS_OK) cm->text = strdup(text);
    } else if (looks_like_safetensors(spec)) {
        /* A valid safetensors file that is not a qat checkpoint (PyTorch weights, say)
         * has no model description: point to --import instead of the loader's message. */
        qat_st_file raw;
        qat_error probe = {0};
        if (qat_safetensors_read(&raw, spec, &probe) == QAT_STATUS_OK) {
            const char *format = qat_safetensors_meta(&raw, "format");
            bool ours = format && strcmp(format, QAT_CHECKPOINT_FORMAT) == 0;
            qat_safetensors_free(&raw);
            if (!ours)
                return qat_error_set(err, QAT_STATUS_FORMAT,
                                     "%s: safetensors weights without a qat model description; to "
                                     "start from them, give the model and import the weights: "
                                     "qat train --model FILE --import %s",
                                     spec, spec);
        }
        s = qat_checkpoint_load(&cm->ckpt, spec, err);
        if (s != QAT_STATUS_OK) return s;
        cm->from_checkpoint = true;
        s = qat_model_parse(cm->ckpt.model, spec, &cm->m, err);
        if (s == QAT_STATUS_OK) cm->text = strdup(cm->ckpt.model);
    } else {
        s = qat_model_load_file(spec, &cm->m, err);
        if (s == QAT_STATUS_OK) cm->text = qat_model_to_text(cm->m);
    }
    if (s != QAT_STATUS_OK) {
        cli_model_close(cm);
        return s;
    }
    qat_rng rng;
    qat_rng_init(&rng, seed);
    s = qat_model_finalize(cm->m, &rng);
    if (s != QAT_STATUS_OK) {
        s = qat_error_set(err, s, "%s: %s", spec, cm->m->err.msg);
        cli_model_close(cm);
        return s;
    }
    /* A quantized checkpoint: the same quantization first, so that its parameters and
     * buffers exist to be restored. */
    const char *quant = cm->from_checkpoint ? qat_checkpoint_extra(&cm->ckpt, "quant") : NULL;
    if (quant) {
        qat_error e = {0};
        s = cli_quant_prepare(cm->m, quant, qat_checkpoint_extra(&cm->ckpt, "normalize_mean"),
                              qat_checkpoint_extra(&cm->ckpt, "normalize_std"), &e);
        if (s != QAT_STATUS_OK) {
            s = qat_error_set(err, s, "%s: quantization '%s': %s", spec, quant, e.msg);
            cli_model_close(cm);
            return s;
        }
    }
    if (cm->from_checkpoint) {
        s = qat_checkpoint_restore(&cm->ckpt, cm->m, NULL, err);
        qat_quant_refresh(cm->m);
        if (s != QAT_STATUS_OK) {
            cli_model_close(cm);
            return s;
        }
    }
    if (!cm->text) {
        cli_model_close(cm);
        return qat_error_set(err, QAT_STATUS_NOMEM, "out of memory");
    }
    return QAT_STATUS_OK;
}

void cli_model_close(cli_model *cm) {
    qat_model_free(cm->m);
    free(cm->text);
    if (cm->from_checkpoint) qat_checkpoint_free(&cm->ckpt);
    memset(cm, 0, sizeof *cm);
}

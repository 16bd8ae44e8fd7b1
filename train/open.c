/* open.c - a model from a name, a model file or a checkpoint (open.h). */
#include "open.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/file_check.h"
#include "layers/model_file.h"
#include "train/qlora.h"
#include "quant/quant.h"
#include "train/onnx_import.h"

qat_status qat_model_quantize(qat_model *m, const char *spec_text, const qat_normalization *norm,
                              qat_error *err) {
    qat_quant_spec spec;
    qat_status s = qat_quant_spec_parse(&spec, spec_text, err);
    if (s) return s;
    /* The spec's input mapping needs one mean and one std for uint8 image inputs. */
    qat_quant_input in = {0};
    if (norm && m->in_ndim == 3) {
        in.have = qat_normalization_uniform(norm, m->in_shape[0]);
        in.mean = norm->mean[0];
        in.std = norm->std[0];
    }
    return qat_quant_prepare(m, &spec, &in, err);
}

/* Whether the comma-separated list holds the token exactly. */
static bool has_token(const char *list, const char *token) {
    const size_t n = strlen(token);
    for (const char *p = list; (p = strstr(p, token)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0')) return true;
    return false;
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

/* The checkpoint's model text parsed, its normalisation read. */
static qat_status open_checkpoint(qat_opened *o, const char *spec, qat_error *err) {
    /* A valid safetensors file that is not a qat checkpoint (PyTorch weights, say) has no
     * model description: point to importing instead of the loader's message. */
    qat_st_file raw;
    if (qat_safetensors_read(&raw, spec, NULL) == QAT_STATUS_OK) {
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
    qat_status s = qat_checkpoint_load(&o->ckpt, spec, err);
    if (s) return s;
    o->from_checkpoint = true;
    const char *mean = qat_checkpoint_extra(&o->ckpt, "normalize_mean");
    if (mean) {
        qat_error e = {0};
        if (qat_normalization_parse(&o->norm, mean, qat_checkpoint_extra(&o->ckpt, "normalize_std"), &e))
            return qat_error_set(err, QAT_STATUS_FORMAT, "%s: %s", spec, e.msg);
        o->have_norm = true;
    }
    s = qat_model_parse(o->ckpt.model, spec, &o->m, err);
    if (!s && !(o->text = strdup(o->ckpt.model)))
        s = qat_error_set(err, QAT_STATUS_NOMEM, "out of memory");
    return s;
}

qat_status qat_model_open(qat_opened *o, const char *spec, uint64_t seed, qat_error *err) {
    QAT_ASSERT(o != NULL && spec != NULL);
    memset(o, 0, sizeof *o);
    o->norm = qat_normalization_identity();
    qat_status s;
    const char *text = qat_model_builtin_text(spec);
    if (!text && (s = qat_file_check_input(spec, err))) return s;
    if (!text && qat_onnx_path(spec)) {
        /* An ONNX model: built and filled with its weights (not initialised from seed). */
        s = qat_onnx_import(spec, &o->m, NULL, err);
        if (!s && !(o->text = qat_model_to_text(o->m))) s = qat_error_set(err, QAT_STATUS_NOMEM, "out of memory");
        if (s) qat_opened_free(o);
        return s;
    }
    if (text) {
        s = qat_model_parse(text, spec, &o->m, err);
        if (!s && !(o->text = strdup(text))) s = qat_error_set(err, QAT_STATUS_NOMEM, "out of memory");
    } else if (looks_like_safetensors(spec)) {
        s = open_checkpoint(o, spec, err);
    } else {
        s = qat_model_load_file(spec, &o->m, err);
        if (!s && !(o->text = qat_model_to_text(o->m)))
            s = qat_error_set(err, QAT_STATUS_NOMEM, "out of memory");
    }
    if (!s) {
        qat_rng rng;
        qat_rng_init(&rng, seed);
        if (qat_model_finalize(o->m, &rng)) s = qat_error_set(err, o->m->err.status, "%s: %s", spec, o->m->err.msg);
    }
    /* A quantized checkpoint: the same quantization first, so that its parameters and
     * buffers exist to be restored. */
    const char *quant = !s && o->from_checkpoint ? qat_checkpoint_extra(&o->ckpt, "quant") : NULL;
    if (quant) {
        /* A checkpoint written before "sim=" existed trained with the float simulation,
         * and resumes and evaluates with it (quant/quant.h); its activation method was
         * the range method unless it says pact or lsq (2 bits now default to lsq). */
        char qtext[2100];
        const bool legacy = !strstr(quant, "sim=");
        snprintf(qtext, sizeof qtext, "%s%s%s", quant, legacy ? ",sim=float" : "",
                 legacy && !has_token(quant, "pact") && !has_token(quant, "lsq") ? ",range" : "");
        qat_error e = {0};
        if ((s = qat_model_quantize(o->m, qtext, o->have_norm ? &o->norm : NULL, &e)))
            qat_error_set(err, s, "%s: quantization '%s': %s", spec, quant, e.msg);
    }
    /* A checkpoint trained with low-rank adapters: the same adapters first (layers/lora.h). */
    const char *lora = !s && o->from_checkpoint ? qat_checkpoint_extra(&o->ckpt, "lora") : NULL;
    if (lora) {
        qat_rng rng;
        qat_rng_init(&rng, seed);
        qat_error e = {0};
        if ((s = qat_lora_setup(o->m, lora, false, &rng, &e)))
            qat_error_set(err, s, "%s: adapters '%s': %s", spec, lora, e.msg);
    }
    if (!s && o->from_checkpoint) {
        s = qat_checkpoint_restore(&o->ckpt, o->m, NULL, err);
        qat_quant_refresh(o->m);
    }
    if (s) qat_opened_free(o);
    return s;
}

void qat_opened_free(qat_opened *o) {
    if (!o) return;
    qat_model_free(o->m);
    free(o->text);
    if (o->from_checkpoint) qat_checkpoint_free(&o->ckpt);
    memset(o, 0, sizeof *o);
}

/* sensitivity.c - per-layer width sensitivity and the mixed-precision choice (sensitivity.h). */
#include "sensitivity.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant/mixed.h"
#include "quant/quant.h"
#include "train/calibrate.h"
#include "train/open.h"
#include "train/trainer.h"

qat_status qat_ptq_accuracy(const char *ckpt, const char *spec, qat_loader *train, qat_loader *test, int samples,
                            double *accuracy, qat_error *err) {
    qat_opened o;
    qat_status s = qat_model_open(&o, ckpt, 0, err);
    if (s) return s;
    if (!o.from_checkpoint || o.m->quant) {
        qat_opened_free(&o);
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: not a float checkpoint", ckpt);
    }
    qat_tape t;
    qat_tape_init(&t, 0);
    double loss;
    if (!(s = qat_model_quantize(o.m, spec, o.have_norm ? &o.norm : NULL, err)) &&
        !(s = qat_calibrate(o.m, train, samples, err)))
        s = qat_evaluate(o.m, &t, test, &loss, accuracy, err);
    qat_tape_free(&t);
    qat_opened_free(&o);
    return s;
}

qat_status qat_sensitivity_measure(qat_sensitivity *s, const char *ckpt, const char *base, const int *bits,
                                   int n_bits, qat_loader *train, qat_loader *test, int samples,
                                   qat_sens_progress progress, void *user, qat_error *err) {
    memset(s, 0, sizeof *s);
    if (n_bits < 1 || n_bits > QAT_SENS_MAX_BITS)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "sensitivity: 1 to %d widths", QAT_SENS_MAX_BITS);
    qat_quant_spec qs;
    qat_status st = qat_quant_spec_parse(&qs, base, err);
    if (st) return st;
    if (qs.auto_bytes) return qat_error_set(err, QAT_STATUS_INVALID_ARG, "sensitivity: the base spec has auto=");
    qat_quant_spec_format(&qs, s->base, sizeof s->base);
    s->n_bits = n_bits;
    memcpy(s->bits, bits, (size_t)n_bits * sizeof *bits);
    /* the layers and their widths under the base spec */
    qat_opened o;
    if ((st = qat_model_open(&o, ckpt, 0, err))) return st;
    if (!o.from_checkpoint || o.m->quant) {
        qat_opened_free(&o);
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: not a float checkpoint", ckpt);
    }
    if (!(st = qat_model_quantize(o.m, s->base, o.have_norm ? &o.norm : NULL, err)))
        for (int k = 0; k < o.m->quant->n_units; k++) {
            const qat_layer_quant *u = &o.m->quant->units[k];
            if (!u->layer || qat_layer_role_of(u->layer) != QAT_LAYER_ROLE_WEIGHTED) continue;
            if (s->n_layers == QAT_SENS_MAX_LAYERS) {
                st = qat_error_set(err, QAT_STATUS_INVALID_ARG, "sensitivity: more than %d layers", QAT_SENS_MAX_LAYERS);
                break;
            }
            const int l = s->n_layers++;
            snprintf(s->layer[l], sizeof s->layer[l], "%s", u->layer->name);
            s->weights[l] = u->layer->weight.n;
            s->base_bits[l] = u->wbits;
        }
    qat_opened_free(&o);
    if (st) return st;
    if ((st = qat_ptq_accuracy(ckpt, s->base, train, test, samples, &s->base_accuracy, err))) return st;
    for (int l = 0; l < s->n_layers; l++)
        for (int k = 0; k < n_bits; k++) {
            if (bits[k] == s->base_bits[l]) {
                s->accuracy[l][k] = s->base_accuracy;
                continue;
            }
            char spec[sizeof s->base + QAT_NAME_LEN + 16];
            snprintf(spec, sizeof spec, "%s,w@%s=%d", s->base, s->layer[l], bits[k]);
            if ((st = qat_ptq_accuracy(ckpt, spec, train, test, samples, &s->accuracy[l][k], err))) return st;
            if (progress) progress(user, s->layer[l], bits[k], s->accuracy[l][k]);
        }
    return QAT_STATUS_OK;
}

qat_status qat_sensitivity_choose(const qat_sensitivity *s, size_t budget, char *spec, size_t len, size_t *bytes,
                                  double *predicted, qat_error *err) {
    double cost[QAT_SENS_MAX_LAYERS * QAT_SENS_MAX_BITS];
    int choice[QAT_SENS_MAX_LAYERS];
    for (int l = 0; l < s->n_layers; l++)
        for (int k = 0; k < s->n_bits; k++) cost[l * s->n_bits + k] = s->base_accuracy - s->accuracy[l][k];
    if (!qat_mixed_choose(s->n_layers, s->weights, s->n_bits, s->bits, cost, budget, choice))
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "mixed precision: %zu weight bytes are fewer than every layer at its narrowest width "
                             "takes (or out of memory)",
                             budget);
    size_t n = (size_t)snprintf(spec, len, "%s", s->base);
    *bytes = 0;
    *predicted = s->base_accuracy;
    for (int l = 0; l < s->n_layers; l++) {
        const int b = s->bits[choice[l]];
        *bytes += qat_weight_bytes(s->weights[l], b);
        *predicted += s->accuracy[l][choice[l]] - s->base_accuracy;
        if (b != s->base_bits[l] && n < len) n += (size_t)snprintf(spec + n, len - n, ",w@%s=%d", s->layer[l], b);
    }
    if (n >= len) return qat_error_set(err, QAT_STATUS_INVALID_ARG, "mixed precision: the chosen spec is too long");
    return QAT_STATUS_OK;
}

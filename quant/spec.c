/* spec.c - the quantization spec string of quant.h: "w4a4,pact,freeze-bn=2000". */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
#include "q4.h"

qat_quant_spec qat_quant_spec_default(void) {
    return (qat_quant_spec){.wbits = 8,
                            .abits = 8,
                            .wgran = QAT_GRANULARITY_CHANNEL,
                            .act = QAT_ACT_METHOD_OBSERVER,
                            .observer = {.kind = QAT_OBSERVER_MINMAX},
                            .momentum = 0.01f,
                            .freeze_bn = -1,
                            .freeze_observer = -1,
                            .sim = QAT_SIM_EXACT};
}

static const char *const SIM_NAMES[] = {[QAT_SIM_FLOAT] = "float", [QAT_SIM_FIXED] = "fixed",
                                        [QAT_SIM_EXACT] = "exact"};
_Static_assert(sizeof SIM_NAMES / sizeof SIM_NAMES[0] == QAT_SIM_COUNT, "one name per simulation");

const char *qat_sim_str(qat_sim s) { return (unsigned)s < QAT_SIM_COUNT ? SIM_NAMES[s] : "unknown"; }

static bool parse_sim(const char *v, qat_sim *out) {
    for (int k = 0; k < QAT_SIM_COUNT; k++)
        if (!strcmp(v, SIM_NAMES[k])) {
            *out = (qat_sim)k;
            return true;
        }
    return false;
}

/* Calibration observer by activation bits, chosen by measurement (README, "Quantization"):
 * min/max keeps int8 within 0.05 points of float, while below 8 bits the MSE range is far
 * better (DW-CNN w4a4 PTQ: 84.6% against 66.4% with min/max). */
static qat_observer_kind default_observer(int abits) {
    return abits < 8 ? QAT_OBSERVER_MSE : QAT_OBSERVER_MINMAX;
}

/* The activation (and weight) method by activation bits, chosen by measurement
 * (docs/quant.md, "Low-bit recipes"): at 2 bits LSQ's learned steps, for weights and
 * activations, beat PACT by 1.2 points on the reference CNN; above, min/max or MSE
 * ranges (and pact or lsq when asked). */
static qat_act_method default_method(int abits) { return abits <= 2 ? QAT_ACT_METHOD_LSQ : QAT_ACT_METHOD_OBSERVER; }

static bool parse_long(const char *v, long lo, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo) return false;
    *out = x;
    return true;
}

static bool parse_float(const char *v, float lo, float hi, float *out) {
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (errno || end == v || *end || !(x >= lo && x <= hi)) return false;
    *out = x;
    return true;
}

qat_status qat_quant_spec_parse(qat_quant_spec *s, const char *text, qat_error *err) {
    *s = qat_quant_spec_default();
    char buf[2048];
    if (!text || strlen(text) >= sizeof buf)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "quant spec: missing or too long");
    strcpy(buf, text);
    char *save = NULL;
    char *tok = strtok_r(buf, ",", &save);
    int wb = 0, ab = 0, used = 0;
    if (!tok || sscanf(tok, "w%da%d%n", &wb, &ab, &used) != 2 || tok[used] != '\0')
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "quant spec '%s': must start with w<bits>a<bits>, e.g. w8a8 or w4a4",
                             text);
    if (wb < 2 || wb > 8 || ab < 2 || ab > 8)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "quant spec '%s': bits must be 2..8 (got w%d a%d)", text, wb, ab);
    s->wbits = wb;
    s->abits = ab;
    s->observer.kind = default_observer(ab);
    s->act = default_method(ab);
    s->weight_lsq = s->act == QAT_ACT_METHOD_LSQ;
    bool explicit_act = false;
    while ((tok = strtok_r(NULL, ",", &save))) {
        char *v = strchr(tok, '=');
        if (v) *v++ = '\0';
        bool ok = true;
        if (!strcmp(tok, "per-tensor") && !v) s->wgran = QAT_GRANULARITY_TENSOR;
        else if (!strcmp(tok, "per-channel") && !v) s->wgran = QAT_GRANULARITY_CHANNEL;
        else if (!strcmp(tok, "group") && v) {
            long g = 0;
            ok = parse_long(v, 1, &g) && g <= 1 << 20;
            s->wgran = QAT_GRANULARITY_GROUP;
            s->group = (int)g;
        } else if ((!strcmp(tok, "pact") || !strcmp(tok, "lsq") || !strcmp(tok, "range")) && !v) {
            s->act = tok[0] == 'p' ? QAT_ACT_METHOD_PACT : tok[0] == 'l' ? QAT_ACT_METHOD_LSQ : QAT_ACT_METHOD_OBSERVER;
            s->weight_lsq = s->act == QAT_ACT_METHOD_LSQ;
            explicit_act = true;
        } else if (!strcmp(tok, "observer") && v) ok = qat_observer_kind_from_str(v, &s->observer.kind);
        else if (!strcmp(tok, "momentum") && v) ok = parse_float(v, 1e-6f, 1.0f, &s->momentum);
        else if (!strcmp(tok, "percentile") && v) ok = parse_float(v, 1e-3f, 100.0f, &s->observer.percentile);
        else if (!strcmp(tok, "freeze-bn") && v) ok = parse_long(v, -1, &s->freeze_bn);
        else if (!strcmp(tok, "freeze-observer") && v) ok = parse_long(v, -1, &s->freeze_observer);
        else if (!strcmp(tok, "pact-decay") && v) ok = parse_float(v, 0.0f, 1e3f, &s->pact_decay);
        else if (!strcmp(tok, "all") && !v) s->all_layers = true;
        else if (!strcmp(tok, "nf4") && !v) s->nf4 = true;
        else if (!strcmp(tok, "dq") && !v) s->dq = true;
        else if (!strcmp(tok, "bias-correction") && !v) s->bias_correction = true;
        else if (!strcmp(tok, "smooth")) {
            s->smooth = true;
            s->smooth_alpha = 0.5f; /* the paper's default */
            if (v && !strcmp(v, "auto")) s->smooth_alpha = -1.0f;
            else if (v) ok = parse_float(v, 0.0f, 1.0f, &s->smooth_alpha);
        } else if (!strcmp(tok, "token") && !v) s->token = true;
        else if (!strcmp(tok, "sim") && v) ok = parse_sim(v, &s->sim);
        else if (!strcmp(tok, "auto") && v) ok = parse_long(v, 1, &s->auto_bytes);
        else if (!strncmp(tok, "w@", 2) && tok[2] && v) {
            long b = 0;
            ok = parse_long(v, 2, &b) && b <= 8 && strlen(tok + 2) < QAT_NAME_LEN;
            for (int k = 0; ok && k < s->n_layer_bits; k++) ok = strcmp(s->layer_bits[k].layer, tok + 2) != 0;
            if (ok && s->n_layer_bits == QAT_MAX_LAYER_BITS)
                return qat_error_set(err, QAT_STATUS_INVALID_ARG, "quant spec '%s': more than %d w@ layers", text,
                                     QAT_MAX_LAYER_BITS);
            if (ok) {
                qat_layer_bits *lb = &s->layer_bits[s->n_layer_bits++];
                snprintf(lb->layer, sizeof lb->layer, "%s", tok + 2);
                lb->wbits = (int)b;
            }
        }
        else
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "quant spec '%s': unknown option '%s%s%s' (options: per-tensor, "
                                 "per-channel, group=G, pact, lsq, range, observer=K, momentum=X, "
                                 "percentile=P, freeze-bn=N, freeze-observer=N, pact-decay=X, all, "
                                 "bias-correction, sim=float|fixed|exact, w@LAYER=B, auto=BYTES, nf4, dq, "
                                 "smooth[=ALPHA|auto], token)",
                                 text, tok, v ? "=" : "", v ? v : "");
        if (!ok)
            return qat_error_set(err, QAT_STATUS_INVALID_ARG, "quant spec '%s': bad value '%s' for %s",
                                 text, v ? v : "", tok);
    }
    /* NF4 and double quantization: 4-bit weights per group (quant/q4.h), group 64 unless
     * given; the integer runtime has neither, so such a model is simulated, not exported. */
    if ((s->nf4 || s->dq) && s->wbits != 4)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "quant spec '%s': nf4 and dq are 4-bit weight formats (w4)", text);
    if ((s->nf4 || s->dq) && s->wgran != QAT_GRANULARITY_GROUP) {
        if (s->wgran == QAT_GRANULARITY_TENSOR)
            return qat_error_set(err, QAT_STATUS_INVALID_ARG, "quant spec '%s': nf4 and dq work per group, not per-tensor", text);
        s->wgran = QAT_GRANULARITY_GROUP;
        s->group = QAT_Q4_GROUP;
    }
    if (s->weight_lsq && s->wgran == QAT_GRANULARITY_GROUP && !explicit_act) { /* the 2-bit default */
        s->act = QAT_ACT_METHOD_OBSERVER;
        s->weight_lsq = false;
    }
    if (s->weight_lsq && s->wgran == QAT_GRANULARITY_GROUP)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "quant spec '%s': lsq learns per-tensor or per-channel weight steps, not "
                             "per-group",
                             text);
    return QAT_STATUS_OK;
}

void qat_quant_spec_format(const qat_quant_spec *s, char *buf, size_t len) {
    const qat_quant_spec d = qat_quant_spec_default();
    size_t n = (size_t)snprintf(buf, len, "w%da%d", s->wbits, s->abits);
#define APPEND(...) \
    if (n < len) n += (size_t)snprintf(buf + n, len - n, __VA_ARGS__)
    if (s->wgran == QAT_GRANULARITY_TENSOR) APPEND(",per-tensor");
    if (s->wgran == QAT_GRANULARITY_GROUP) APPEND(",group=%d", s->group);
    if (s->act != default_method(s->abits))
        APPEND(",%s", s->act == QAT_ACT_METHOD_PACT ? "pact" : s->act == QAT_ACT_METHOD_LSQ ? "lsq" : "range");
    if (s->observer.kind != default_observer(s->abits)) APPEND(",observer=%s", qat_observer_kind_str(s->observer.kind));
    if (s->momentum != d.momentum) APPEND(",momentum=%.9g", (double)s->momentum);
    if (s->observer.percentile > 0) APPEND(",percentile=%.9g", (double)s->observer.percentile);
    if (s->freeze_bn != d.freeze_bn) APPEND(",freeze-bn=%ld", s->freeze_bn);
    if (s->freeze_observer != d.freeze_observer) APPEND(",freeze-observer=%ld", s->freeze_observer);
    if (s->pact_decay > 0) APPEND(",pact-decay=%.9g", (double)s->pact_decay);
    if (s->all_layers) APPEND(",all");
    if (s->nf4) APPEND(",nf4");
    if (s->dq) APPEND(",dq");
    if (s->bias_correction) APPEND(",bias-correction");
    if (s->smooth) {
        if (s->smooth_alpha < 0) {
            APPEND(",smooth=auto");
        } else {
            APPEND(",smooth=%.9g", (double)s->smooth_alpha);
        }
    }
    if (s->token) APPEND(",token");
    /* Always: a checkpoint's string without it predates sim= and trained with sim=float
     * (train/open.c). */
    APPEND(",sim=%s", qat_sim_str(s->sim));
    for (int k = 0; k < s->n_layer_bits; k++) APPEND(",w@%s=%d", s->layer_bits[k].layer, s->layer_bits[k].wbits);
    if (s->auto_bytes) APPEND(",auto=%ld", s->auto_bytes);
#undef APPEND
}

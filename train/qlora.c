/* qlora.c - LoRA's frozen base in 4 bits (qlora.h). */
#include "train/qlora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const SUFFIX[4] = {".q4", ".q4_absmax", ".q4_scale", ".q4_mean"};

qat_status qat_lora_text_parse(const char *text, qat_lora_spec *s, bool *four_bit, qat_q4_format *f,
                               qat_error *err) {
    *four_bit = false;
    char buf[128];
    if (!text || strlen(text) >= sizeof buf)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "--lora: missing or too long");
    strcpy(buf, text);
    char *b = strstr(buf, "base=");
    if (b && (b == buf || b[-1] == ',')) {
        char *end = strchr(b, ',');
        char name[16] = "";
        snprintf(name, sizeof name, "%.*s", end ? (int)(end - b - 5) : (int)strlen(b + 5), b + 5);
        if (strcmp(name, "fp32") != 0) {
            if (!qat_q4_format_parse(name, f))
                return qat_error_set(err, QAT_STATUS_INVALID_ARG, "--lora %s: base '%s': expected nf4, int4 or fp32",
                                     text, name);
            *four_bit = true;
        }
        /* cut the token out */
        if (end) memmove(b, end + 1, strlen(end + 1) + 1);
        else if (b > buf) b[-1] = '\0';
        else b[0] = '\0';
    }
    return qat_lora_spec_parse(s, buf, err);
}

const qat_lora_base *qat_lora_base_of(const qat_model *m) { return m->lora ? m->lora->base : NULL; }

void qat_lora_text_format(const qat_model *m, char *buf, size_t len) {
    if (!m->lora) {
        if (len) buf[0] = '\0';
        return;
    }
    char spec[64];
    qat_lora_spec_format(&m->lora->spec, spec, sizeof spec);
    const qat_lora_base *b = qat_lora_base_of(m);
    snprintf(buf, len, "%s%s%s", spec, b ? ",base=" : "", b ? qat_q4_format_str(b->format) : "");
}

static void base_free(void *p) {
    qat_lora_base *b = p;
    if (!b) return;
    for (int i = 0; b->q && i < b->n; i++) qat_q4_free(&b->q[i]);
    free(b->q);
    free(b->w);
    free(b);
}

int qat_lora_base_find(const qat_lora_base *b, const qat_tensor *x) {
    for (int i = 0; b && i < b->n; i++)
        if (b->w[i] == x) return i;
    return -1;
}

void qat_lora_base_bytes(const qat_lora_base *b, size_t *four_bit, size_t *f32) {
    size_t q = 0, f = 0;
    for (int i = 0; b && i < b->n; i++) {
        q += (b->q[i].n + 1) / 2 + b->q[i].n_groups + 4 * b->q[i].n_scales + 4;
        f += 4 * b->w[i]->n;
    }
    *four_bit = q;
    *f32 = f;
}

qat_status qat_lora_setup(qat_model *m, const char *text, bool quantize, qat_rng *rng, qat_error *err) {
    qat_lora_spec s;
    bool four_bit;
    qat_q4_format f = QAT_Q4_NF4;
    qat_status st = qat_lora_text_parse(text, &s, &four_bit, &f, err);
    if (st || (st = qat_lora_attach(m, &s, rng, err)) || !four_bit) return st;
    qat_lora_base *b = calloc(1, sizeof *b);
    if (!b) return qat_error_set(err, QAT_STATUS_NOMEM, "LoRA base: out of memory");
    m->lora->base = b;
    m->lora->base_free = base_free;
    b->format = f;
    for (int i = 0; i < m->n_param_tensors; i++) b->n += m->param_tensors[i]->frozen;
    b->w = calloc((size_t)b->n, sizeof *b->w);
    b->q = calloc((size_t)b->n, sizeof *b->q);
    if (!b->w || !b->q) return qat_error_set(err, QAT_STATUS_NOMEM, "LoRA base: out of memory");
    int k = 0;
    for (int i = 0; i < m->n_param_tensors; i++)
        if (m->param_tensors[i]->frozen) b->w[k++] = m->param_tensors[i];
    for (int i = 0; quantize && i < b->n; i++) {
        qat_error e = {0};
        if ((st = qat_q4_quantize(&b->q[i], b->w[i]->data, b->w[i]->n, f, QAT_Q4_GROUP, true, &e)))
            return qat_error_set(err, st, "LoRA base %s: %s", b->w[i]->name, e.msg);
        qat_q4_dequantize(&b->q[i], b->w[i]->data);
    }
    return QAT_STATUS_OK;
}

void qat_lora_base_tensors(const qat_lora_base *b, int i, qat_st_tensor out[4], char names[4][QAT_NAME_LEN + 32]) {
    const qat_q4 *q = &b->q[i];
    for (int k = 0; k < 4; k++) snprintf(names[k], sizeof names[k], "%s%s", b->w[i]->name, SUFFIX[k]);
    out[0] = (qat_st_tensor){.name = names[0], .dtype = QAT_ST_DTYPE_U8, .ndim = 1, .shape = {(int64_t)((q->n + 1) / 2)},
                             .data = q->codes};
    out[1] = (qat_st_tensor){.name = names[1], .dtype = QAT_ST_DTYPE_U8, .ndim = 1, .shape = {(int64_t)q->n_groups},
                             .data = q->absmax_codes};
    out[2] = (qat_st_tensor){.name = names[2], .dtype = QAT_ST_DTYPE_F32, .ndim = 1, .shape = {(int64_t)q->n_scales},
                             .data = q->absmax_scale};
    out[3] = (qat_st_tensor){.name = names[3], .dtype = QAT_ST_DTYPE_F32, .ndim = 1, .shape = {1}, .data = &q->absmax_mean};
}

qat_status qat_lora_base_read(qat_lora_base *b, int i, const qat_st_file *f, bool fill, bool *used,
                              qat_error *err) {
    const qat_tensor *x = b->w[i];
    const size_t n = x->n, ng = (n + QAT_Q4_GROUP - 1) / QAT_Q4_GROUP;
    const size_t ns = (ng + QAT_Q4_DQ_BLOCK - 1) / QAT_Q4_DQ_BLOCK;
    const size_t want[4] = {(n + 1) / 2, ng, ns, 1};
    const qat_st_dtype dt[4] = {QAT_ST_DTYPE_U8, QAT_ST_DTYPE_U8, QAT_ST_DTYPE_F32, QAT_ST_DTYPE_F32};
    const qat_st_tensor *t[4];
    for (int k = 0; k < 4; k++) {
        char name[QAT_NAME_LEN + 32];
        snprintf(name, sizeof name, "%s%s", x->name, SUFFIX[k]);
        t[k] = qat_safetensors_find(f, name);
        if (!t[k])
            return qat_error_set(err, QAT_STATUS_FORMAT, "%s: lacks '%s' (the %s base weight %s)", f->path, name,
                                 qat_q4_format_str(b->format), x->name);
        if (t[k]->dtype != dt[k] || t[k]->ndim != 1 || t[k]->numel != want[k])
            return qat_error_set(err, QAT_STATUS_FORMAT, "%s: '%s' holds %zu %s values; %s of %zu weights needs %zu %s",
                                 f->path, name, t[k]->numel, qat_st_dtype_str(t[k]->dtype), x->name, n, want[k],
                                 qat_st_dtype_str(dt[k]));
        if (used) used[t[k] - f->tensors] = true;
    }
    /* The values: finite, non-negative block scales, a finite mean, the odd count's last
     * high nibble 0, and no int4 code -8 (the format is symmetric). */
    const uint8_t *codes = t[0]->data;
    float v;
    bool ok = true;
    memcpy(&v, t[3]->data, sizeof v);
    ok = isfinite(v);
    for (size_t s = 0; ok && s < ns; s++) {
        memcpy(&v, (const char *)t[2]->data + s * sizeof(float), sizeof v);
        ok = isfinite(v) && v >= 0;
    }
    if (ok && n % 2) ok = (codes[n / 2] >> 4) == 0;
    for (size_t j = 0; ok && b->format == QAT_Q4_INT4 && j < n; j++) ok = ((codes[j / 2] >> (j % 2 ? 4 : 0)) & 15) != 8;
    if (!ok)
        return qat_error_set(err, QAT_STATUS_FORMAT,
                             "%s: the %s form of %s is corrupt (a non-finite or negative constant, or a code the "
                             "format does not use)",
                             f->path, qat_q4_format_str(b->format), x->name);
    if (!fill) return QAT_STATUS_OK;
    qat_q4 *q = &b->q[i];
    qat_q4_free(q);
    *q = (qat_q4){.format = b->format, .n = n, .group = QAT_Q4_GROUP, .dq = true, .n_groups = ng, .n_scales = ns};
    q->codes = malloc(want[0]);
    q->absmax_codes = malloc(ng);
    q->absmax_scale = malloc(ns * sizeof(float));
    if (!q->codes || !q->absmax_codes || !q->absmax_scale) {
        qat_q4_free(q);
        return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", f->path);
    }
    memcpy(q->codes, t[0]->data, want[0]);
    memcpy(q->absmax_codes, t[1]->data, ng);
    memcpy(q->absmax_scale, t[2]->data, ns * sizeof(float));
    memcpy(&q->absmax_mean, t[3]->data, sizeof(float));
    qat_q4_dequantize(q, b->w[i]->data);
    return QAT_STATUS_OK;
}

/* optim.c - the optimizer object: the table of kinds, defaults, config checks, the
 * config as key/values, the state layout, init/free, and the step that dispatches to
 * the kind's update. Everything here is a loop over or a lookup in the kinds table;
 * what each kind does is in its own file (sgd.c, adam.c; optim/kind.h). The formulas
 * are in optim.h.
 */
#include "optim/optim.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim/blockwise.h"
#include "optim/kind.h"

/* One descriptor per kind, indexed by qat_optim_kind. */
static const qat_optim_desc *const kinds[] = {
    [QAT_OPTIM_SGD] = &qat_optim_desc_sgd,
    [QAT_OPTIM_ADAM] = &qat_optim_desc_adam,
    [QAT_OPTIM_ADAMW] = &qat_optim_desc_adamw,
    [QAT_OPTIM_SGD8] = &qat_optim_desc_sgd8,
    [QAT_OPTIM_ADAM8] = &qat_optim_desc_adam8,
    [QAT_OPTIM_ADAMW8] = &qat_optim_desc_adamw8,
};
_Static_assert(sizeof kinds / sizeof kinds[0] == QAT_OPTIM_COUNT,
               "optim.c: one descriptor per qat_optim_kind");

static bool kind_valid(qat_optim_kind k) { return (int)k >= 0 && (int)k < QAT_OPTIM_COUNT; }

/* The descriptor of a kind the caller guarantees (asserted). */
static const qat_optim_desc *desc_of(qat_optim_kind k) {
    QAT_ASSERT(kind_valid(k));
    QAT_ASSERT(kinds[k] != NULL);
    return kinds[k];
}

qat_optim_config qat_optim_config_default(qat_optim_kind kind) {
    const qat_optim_desc *d = desc_of(kind);
    /* Every field, whatever the kind: PyTorch's default in the optimizer that uses it. */
    qat_optim_config c = {
        .kind = kind,
        .lr = 1e-3,
        .momentum = 0.0,
        .dampening = 0.0,
        .nesterov = false,
        .weight_decay = 0.0,
        .beta1 = 0.9,
        .beta2 = 0.999,
        .eps = 1e-8,
    };
    if (d->defaults) d->defaults(&c);
    return c;
}

const char *qat_optim_kind_str(qat_optim_kind kind) {
    return kind_valid(kind) ? kinds[kind]->name : "unknown";
}

/* ASCII case-insensitive equality (not strcasecmp: no locale). */
static bool equal_nocase(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        unsigned char x = (unsigned char)*a, y = (unsigned char)*b;
        if (x >= 'A' && x <= 'Z') x = (unsigned char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = (unsigned char)(y - 'A' + 'a');
        if (x != y) return false;
    }
    return *a == *b;
}

bool qat_optim_kind_parse(const char *name, qat_optim_kind *kind) {
    QAT_ASSERT(name != NULL && kind != NULL);
    for (int k = 0; k < QAT_OPTIM_COUNT; k++)
        if (equal_nocase(name, kinds[k]->name)) {
            *kind = (qat_optim_kind)k;
            return true;
        }
    return false;
}

size_t qat_optim_kind_names(char *buf, size_t size) {
    QAT_ASSERT(buf != NULL || size == 0);
    size_t len = 0;
    if (size > 0) buf[0] = '\0';
    for (int k = 0; k < QAT_OPTIM_COUNT; k++) {
        const char *sep = k == 0 ? "" : k == QAT_OPTIM_COUNT - 1 ? " or " : ", ";
        const size_t at = len < size ? len : size; /* where the text continues */
        int w = snprintf(size > at ? buf + at : NULL, size > at ? size - at : 0, "%s%s", sep,
                         kinds[k]->name);
        QAT_ASSERT(w >= 0);
        len += (size_t)w;
    }
    return len;
}

/* ---- config checks ------------------------------------------------------------------ */

qat_status qat_optim_check_nonneg(const qat_optim_config *cfg, const char *field, double v,
                                  qat_error *err) {
    if (v >= 0.0 && isfinite(v)) return QAT_STATUS_OK;
    return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                         "optim %s: %s = %g is invalid; it must be finite and >= 0",
                         qat_optim_kind_str(cfg->kind), field, v);
}

qat_status qat_optim_check_positive(const qat_optim_config *cfg, const char *field, double v,
                                    qat_error *err) {
    if (v > 0.0 && isfinite(v)) return QAT_STATUS_OK;
    return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                         "optim %s: %s = %g is invalid; it must be finite and > 0",
                         qat_optim_kind_str(cfg->kind), field, v);
}

qat_status qat_optim_check_unit(const qat_optim_config *cfg, const char *field, double v,
                                bool hi_open, qat_error *err) {
    if (v >= 0.0 && (hi_open ? v < 1.0 : v <= 1.0)) return QAT_STATUS_OK;
    return qat_error_set(err, QAT_STATUS_INVALID_ARG, "optim %s: %s = %g is outside [0, 1%c",
                         qat_optim_kind_str(cfg->kind), field, v, hi_open ? ')' : ']');
}

qat_status qat_optim_config_check(const qat_optim_config *cfg, qat_error *err) {
    QAT_ASSERT(cfg != NULL);
    if (!kind_valid(cfg->kind)) {
        char names[64];
        qat_optim_kind_names(names, sizeof names);
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "optim: kind = %d is not an optimizer (the kinds are %s)",
                             (int)cfg->kind, names);
    }
    /* Every kind has lr, the rate qat_optim_step takes. */
    qat_status s = qat_optim_check_nonneg(cfg, "lr", cfg->lr, err);
    if (s != QAT_STATUS_OK) return s;
    return desc_of(cfg->kind)->check(cfg, err);
}

/* ---- the config as key/values ------------------------------------------------------- */

const qat_optim_field *qat_optim_fields(qat_optim_kind kind, int *n) {
    QAT_ASSERT(n != NULL);
    const qat_optim_desc *d = desc_of(kind);
    QAT_ASSERT(d->n_fields <= QAT_OPTIM_MAX_FIELDS);
    *n = d->n_fields;
    return d->fields;
}

const qat_optim_field *qat_optim_field_find(qat_optim_kind kind, const char *name) {
    QAT_ASSERT(name != NULL);
    const qat_optim_desc *d = desc_of(kind);
    for (int i = 0; i < d->n_fields; i++)
        if (strcmp(d->fields[i].name, name) == 0) return &d->fields[i];
    return NULL;
}

double qat_optim_field_get(const qat_optim_config *cfg, const qat_optim_field *f) {
    QAT_ASSERT(cfg != NULL && f != NULL && f->offset < sizeof *cfg);
    const char *at = (const char *)cfg + f->offset;
    switch (f->type) {
    case QAT_OPTIM_VALUE_NUMBER: return *(const double *)at;
    case QAT_OPTIM_VALUE_BOOL: return *(const bool *)at ? 1.0 : 0.0;
    case QAT_OPTIM_VALUE_COUNT: break;
    }
    QAT_ASSERT(!"qat_optim_field_get: the field's type is not a qat_optim_value");
    return 0.0;
}

void qat_optim_field_set(qat_optim_config *cfg, const qat_optim_field *f, double v) {
    QAT_ASSERT(cfg != NULL && f != NULL && f->offset < sizeof *cfg);
    char *at = (char *)cfg + f->offset;
    switch (f->type) {
    case QAT_OPTIM_VALUE_NUMBER: *(double *)at = v; return;
    case QAT_OPTIM_VALUE_BOOL: *(bool *)at = v != 0.0; return;
    case QAT_OPTIM_VALUE_COUNT: break;
    }
    QAT_ASSERT(!"qat_optim_field_set: the field's type is not a qat_optim_value");
}

/* ---- state -------------------------------------------------------------------------- */

int qat_optim_state_layout(const qat_optim_config *cfg, size_t n, qat_optim_state_tensor *out) {
    QAT_ASSERT(cfg != NULL && out != NULL);
    const int k = desc_of(cfg->kind)->layout(cfg, n, (n + QAT_BLOCKQ_SIZE - 1) / QAT_BLOCKQ_SIZE, out);
    QAT_ASSERT(k >= 0 && k <= QAT_OPTIM_MAX_STATE);
    for (int i = 0; i < k; i++) {
        QAT_ASSERT(out[i].name != NULL && (int)out[i].dtype >= 0 &&
                   (int)out[i].dtype < QAT_ST_DTYPE_COUNT);
        out[i].data = NULL;
    }
    return k;
}

qat_status qat_optim_init(qat_optim *o, const qat_optim_config *cfg, size_t n, qat_error *err) {
    QAT_ASSERT(o != NULL);
    if (n == 0) {
        memset(o, 0, sizeof *o);
        qat_status s = qat_optim_config_check(cfg, err);
        if (s != QAT_STATUS_OK) return s;
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "optim %s: no parameters to optimize (n = 0)",
                             qat_optim_kind_str(cfg->kind));
    }
    return qat_optim_init_tensors(o, cfg, &n, 1, err);
}

qat_status qat_optim_init_tensors(qat_optim *o, const qat_optim_config *cfg, const size_t *lengths,
                                  int n_lengths, qat_error *err) {
    QAT_ASSERT(o != NULL && cfg != NULL && (lengths != NULL || n_lengths == 0));
    memset(o, 0, sizeof *o);
    qat_status s = qat_optim_config_check(cfg, err);
    if (s != QAT_STATUS_OK) return s;
    const char *name = qat_optim_kind_str(cfg->kind);
    size_t n = 0, nb = 0;
    for (int i = 0; i < n_lengths; i++) {
        if (lengths[i] == 0 || lengths[i] > SIZE_MAX / 2 - n)
            return qat_error_set(err, QAT_STATUS_INVALID_ARG, "optim %s: tensor %d has %zu parameters", name, i,
                                 lengths[i]);
        n += lengths[i];
        nb += (lengths[i] + QAT_BLOCKQ_SIZE - 1) / QAT_BLOCKQ_SIZE;
    }
    if (n == 0)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "optim %s: no parameters to optimize (n = 0)", name);
    qat_optim_state_tensor t[QAT_OPTIM_MAX_STATE];
    const int k = desc_of(cfg->kind)->layout(cfg, n, nb, t);
    QAT_ASSERT(k >= 0 && k <= QAT_OPTIM_MAX_STATE);

    /* One allocation, the tensors in layout order, each starting at a multiple of its
     * element size (calloc's block is aligned for any type). */
    size_t offset[QAT_OPTIM_MAX_STATE], total = 0;
    for (int i = 0; i < k; i++) {
        const size_t es = qat_st_dtype_size(t[i].dtype);
        const size_t pad = (es - total % es) % es;
        if (pad > SIZE_MAX - total || t[i].numel > (SIZE_MAX - total - pad) / es)
            return qat_error_set(err, QAT_STATUS_NOMEM,
                                 "optim %s: state for n = %zu is too large", name, n);
        offset[i] = total + pad;
        total = offset[i] + t[i].numel * es;
    }
    void *mem = NULL;
    size_t *blocks = malloc((nb + 1) * sizeof *blocks);
    if (total > 0) mem = calloc(total, 1);
    if (!blocks || (total > 0 && !mem)) {
        free(blocks);
        free(mem);
        return qat_error_set(err, QAT_STATUS_NOMEM,
                             "optim %s: cannot allocate %zu bytes of state for n = %zu",
                             name, total, n);
    }
    size_t b = 0, at = 0;
    for (int i = 0; i < n_lengths; at += lengths[i], i++)
        for (size_t j = 0; j < lengths[i]; j += QAT_BLOCKQ_SIZE) blocks[b++] = at + j;
    QAT_ASSERT(b == nb && at == n);
    blocks[nb] = n;
    o->cfg = *cfg;
    o->n = n;
    o->step = 0;
    for (int i = 0; i < k; i++) {
        o->tensors[i] = t[i];
        o->tensors[i].data = mem ? (char *)mem + offset[i] : NULL;
    }
    o->n_tensors = k;
    o->mem = mem;
    o->mem_bytes = total;
    o->n_blocks = nb;
    o->blocks = blocks;
    return QAT_STATUS_OK;
}

void qat_optim_free(qat_optim *o) {
    if (!o) return;
    free(o->mem);
    free(o->blocks);
    memset(o, 0, sizeof *o);
}

void qat_optim_step(qat_optim *o, float *params, const float *grads, float lr) {
    QAT_ASSERT(o != NULL && params != NULL && grads != NULL);
    QAT_ASSERT(lr >= 0.0f && isfinite(lr));
    desc_of(o->cfg.kind)->update(o, params, grads, lr);
    o->step++;
}

/* int8.c - the integer model as qat's int8 file (int8.h, docs/int8-format.md). */
#include "int8.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/strbuf.h"

/* The tensors of one conv2d/linear op, in the file's order: weight, bias, mult, shift. */
enum { PER_OP = 4 };

/* Weights of 4 bits or fewer, two per byte: two's complement nibbles, weight 2i in the
 * low nibble of byte i, weight 2i+1 in the high one; an odd count leaves the last high
 * nibble 0 (int8-spec.md, "Below 8 bits"). */
static uint8_t *pack_nibbles(const int8_t *w, size_t n) {
    uint8_t *p = calloc((n + 1) / 2 ? (n + 1) / 2 : 1, 1);
    if (!p) return NULL;
    for (size_t i = 0; i < n; i++) p[i / 2] |= (uint8_t)((w[i] & 0xF) << (i % 2 ? 4 : 0));
    return p;
}

static void emit_shape(qat_strbuf *g, const qat_int_value *v) {
    if (v->ndim == 1) qat_strbuf_printf(g, " shape=%d", v->shape[0]);
    else qat_strbuf_printf(g, " shape=%d,%d,%d", v->shape[0], v->shape[1], v->shape[2]);
}

/* One graph line per op (docs/int8-format.md, "Graph"). */
static void emit_op(qat_strbuf *g, const qat_int_model *im, const qat_int_op *op) {
    const qat_int_value *in = &im->values[op->in[0]], *out = &im->values[op->out];
    const char *kind = qat_int_op_kind_str(op->kind);
    switch (op->kind) {
    case QAT_INT_OP_CONV2D:
    case QAT_INT_OP_LINEAR:
        qat_strbuf_printf(g, "%s in=%d out=%d", kind, op->in[0], op->out);
        emit_shape(g, out);
        if (op->kind == QAT_INT_OP_CONV2D)
            qat_strbuf_printf(g, " k=%d stride=%d pad=%d groups=%d", op->kernel, op->stride, op->pad,
                              op->groups);
        qat_strbuf_printf(g,
                          " weight=%s.weight bias=%s.bias mult=%s.mult shift=%s.shift wbits=%d z_in=%d "
                          "z_out=%d act_min=%d act_max=%d s=%.9g\n",
                          op->name, op->name, op->name, op->name, op->wbits, in->zero_point,
                          out->zero_point, op->act_min, op->act_max, (double)out->scale);
        return;
    case QAT_INT_OP_ADD: {
        const qat_int_value *b = &im->values[op->in[1]];
        qat_strbuf_printf(g, "add in=%d,%d out=%d", op->in[0], op->in[1], op->out);
        emit_shape(g, out);
        qat_strbuf_printf(g,
                          " z_a=%d z_b=%d z_out=%d mult_a=%d shift_a=%d mult_b=%d shift_b=%d "
                          "mult_out=%d shift_out=%d act_min=%d act_max=%d s=%.9g\n",
                          in->zero_point, b->zero_point, out->zero_point, op->mult_a, op->shift_a,
                          op->mult_b, op->shift_b, op->mult_out, op->shift_out, op->act_min,
                          op->act_max, (double)out->scale);
        return;
    }
    case QAT_INT_OP_LUT:
        qat_strbuf_printf(g, "lut in=%d out=%d", op->in[0], op->out);
        emit_shape(g, out);
        qat_strbuf_printf(g, " table=%s.table fn=%s", op->name, qat_lut_fn_str(op->lut_fn));
        if (op->lut_fn == QAT_LUT_LEAKY_RELU) qat_strbuf_printf(g, " alpha=%.9g", (double)op->lut_alpha);
        qat_strbuf_printf(g, " z_in=%d z_out=%d s=%.9g\n", in->zero_point, out->zero_point,
                          (double)out->scale);
        return;
    case QAT_INT_OP_MAXPOOL:
    case QAT_INT_OP_AVGPOOL:
    case QAT_INT_OP_GLOBAL_AVGPOOL:
    case QAT_INT_OP_FLATTEN:
        qat_strbuf_printf(g, "%s in=%d out=%d", kind, op->in[0], op->out);
        emit_shape(g, out);
        if (op->kind == QAT_INT_OP_MAXPOOL || op->kind == QAT_INT_OP_AVGPOOL)
            qat_strbuf_printf(g, " k=%d stride=%d pad=%d", op->kernel, op->stride, op->pad);
        qat_strbuf_puts(g, "\n");
        return;
    case QAT_INT_OP_COUNT: break;
    }
    QAT_ASSERT(!"emit_op: not an op kind");
}

/* The file for `im`, written to `path`, or (out set) encoded into *out (*len bytes), with
 * `path` naming it in messages. */
static qat_status int8_emit(const qat_int_model *im, const char *path, const qat_st_kv *meta, size_t n_meta,
                            qat_export_report *rep, uint8_t **out, size_t *len, qat_error *err) {
    QAT_ASSERT(im != NULL && path != NULL && (meta != NULL || n_meta == 0));
    qat_export_report local;
    if (!rep) rep = &local;
    memset(rep, 0, sizeof *rep);
    qat_status st = QAT_STATUS_OK;
    qat_strbuf g = {0};
    const size_t cap = (size_t)im->n_ops * PER_OP;
    qat_st_tensor *ts = calloc(cap ? cap : 1, sizeof *ts);
    char (*names)[QAT_NAME_LEN + 16] = calloc(cap ? cap : 1, sizeof *names);
    uint8_t **packed = calloc(im->n_ops ? (size_t)im->n_ops : 1, sizeof *packed);
    qat_st_kv *kv = calloc(n_meta + 3, sizeof *kv);
    if (!ts || !names || !packed || !kv) {
        st = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
        goto done;
    }
    const qat_int_value *in = &im->values[0];
    qat_strbuf_printf(&g, "input out=0");
    emit_shape(&g, in);
    qat_strbuf_printf(&g, " s=%.9g z=%d\n", (double)in->scale, in->zero_point);
    size_t nt = 0;
    for (int i = 0; i < im->n_ops; i++) {
        const qat_int_op *op = &im->ops[i];
        emit_op(&g, im, op);
        if (op->kind == QAT_INT_OP_LUT) { /* the 256 entries, indexed by q_in + 128 */
            snprintf(names[nt], sizeof names[nt], "%s.table", op->name);
            ts[nt] = (qat_st_tensor){.name = names[nt], .dtype = QAT_ST_DTYPE_I8, .ndim = 1,
                                     .shape = {256}, .data = op->table};
            rep->other_bytes += 256;
            nt++;
            continue;
        }
        if (op->kind != QAT_INT_OP_CONV2D && op->kind != QAT_INT_OP_LINEAR) continue;
        size_t n = 1;
        for (int d = 0; d < op->w_ndim; d++) n *= (size_t)op->w_shape[d];
        const int64_t C = op->w_shape[0];
        qat_st_tensor *w = &ts[nt];
        snprintf(names[nt], sizeof names[nt], "%s.weight", op->name);
        if (op->wbits <= 4) {
            if (!(packed[i] = pack_nibbles(op->weight, n))) {
                st = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
                goto done;
            }
            *w = (qat_st_tensor){.name = names[nt], .dtype = QAT_ST_DTYPE_U8, .ndim = 1,
                                 .shape = {(int64_t)((n + 1) / 2)}, .data = packed[i]};
            rep->weight_bytes += (n + 1) / 2;
        } else {
            *w = (qat_st_tensor){.name = names[nt], .dtype = QAT_ST_DTYPE_I8, .ndim = op->w_ndim,
                                 .data = op->weight};
            memcpy(w->shape, op->w_shape, (size_t)op->w_ndim * sizeof *op->w_shape);
            rep->weight_bytes += n;
        }
        nt++;
        const char *what[3] = {"bias", "mult", "shift"};
        const int32_t *data[3] = {op->bias, op->mult, op->shift};
        for (int k = 0; k < 3; k++, nt++) {
            snprintf(names[nt], sizeof names[nt], "%s.%s", op->name, what[k]);
            ts[nt] = (qat_st_tensor){.name = names[nt], .dtype = QAT_ST_DTYPE_I32, .ndim = 1,
                                     .shape = {C}, .data = data[k]};
            rep->other_bytes += (size_t)C * 4;
        }
    }
    qat_strbuf_printf(&g, "output in=%d\n", im->output);
    if (g.oom) {
        st = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
        goto done;
    }
    char ver[16];
    snprintf(ver, sizeof ver, "%d", QAT_INT8_VERSION);
    kv[0] = (qat_st_kv){"format", QAT_INT8_FORMAT};
    kv[1] = (qat_st_kv){"format_version", ver};
    kv[2] = (qat_st_kv){"graph", g.p};
    size_t nk = 3;
    for (size_t i = 0; i < n_meta; i++)
        if (strcmp(meta[i].key, "format") && strcmp(meta[i].key, "format_version") &&
            strcmp(meta[i].key, "graph"))
            kv[nk++] = meta[i];
    if (out) {
        st = qat_safetensors_encode(path, ts, nt, kv, nk, out, len, err);
        if (!st) rep->file_bytes = *len;
    } else {
        st = qat_safetensors_write(path, ts, nt, kv, nk, err);
        struct stat sb;
        if (!st) rep->file_bytes = stat(path, &sb) == 0 ? (size_t)sb.st_size : 0;
    }
    if (!st) rep->n_ops = im->n_ops;
done:
    for (int i = 0; packed && i < im->n_ops; i++) free(packed[i]);
    free(packed);
    free(ts);
    free(names);
    free(kv);
    free(g.p);
    return st;
}

qat_status qat_int8_write(const qat_int_model *im, const char *path, const qat_st_kv *meta, size_t n_meta,
                          qat_export_report *rep, qat_error *err) {
    return int8_emit(im, path, meta, n_meta, rep, NULL, NULL, err);
}

qat_status qat_int8_encode(const qat_int_model *im, const char *name, const qat_st_kv *meta, size_t n_meta,
                           uint8_t **out, size_t *len, qat_export_report *rep, qat_error *err) {
    QAT_ASSERT(out != NULL && len != NULL);
    return int8_emit(im, name, meta, n_meta, rep, out, len, err);
}

qat_status qat_export_int8(const qat_model *m, const char *path, const qat_st_kv *meta,
                           size_t n_meta, qat_export_report *rep, qat_error *err) {
    qat_int_model im;
    qat_status st = qat_lower(m, &im, err);
    if (!st) st = qat_int8_write(&im, path, meta, n_meta, rep, err);
    qat_int_model_free(&im);
    return st;
}

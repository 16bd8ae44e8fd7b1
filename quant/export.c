/* export.c - the integer model file (export.h, docs/int8-format.md). */
#include "export.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "fake_quant.h"

void qat_quantize_multiplier(double m, int32_t *M0, int *shift) {
    /* int8-spec.md, "Fixed-point multiplier": frexp(m) = f * 2^e, f in [0.5, 1);
     * M0 = round(f * 2^31), which can round up to 2^31 (f just below 1): then halve it
     * and bump the exponent, so M0 stays in [2^30, 2^31). */
    if (!(m > 0.0) || !isfinite(m)) {
        *M0 = 0;
        *shift = 0;
        return;
    }
    int e;
    double f = frexp(m, &e);
    int64_t q = (int64_t)llround(f * 2147483648.0);
    if (q == (int64_t)1 << 31) {
        q /= 2;
        e += 1;
    }
    if (e < -31) { /* the output is the zero point */
        q = 0;
        e = 0;
    }
    *M0 = (int32_t)q;
    *shift = e;
}

/* ---- the writer's state ---- */

typedef struct tensor_slot {
    char name[QAT_NAME_LEN + 16];
    qat_st_dtype dtype;
    int ndim;
    int64_t shape[4];
    void *data;
} tensor_slot;

typedef struct ex {
    const qat_model *m;
    const qat_quant *q;
    char *graph;
    size_t glen, gcap;
    tensor_slot *t;
    int nt, ct;
    int next_value, n_ops;
    qat_export_report *rep;
    qat_error *err;
    qat_status st;
} ex;

/* A value of the integer graph: its number, per-sample shape and quantization. */
typedef struct val {
    int id, ndim, shape[3];
    float s;
    int32_t z;
} val;

static void fail(ex *e, qat_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(ex *e, qat_status s, const char *fmt, ...) {
    if (e->st) return;
    va_list ap;
    va_start(ap, fmt);
    char msg[480];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    e->st = qat_error_set(e->err, s, "export: %s", msg);
}

static void emit(ex *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(ex *e, const char *fmt, ...) {
    if (e->st) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(e->graph + e->glen, e->gcap - e->glen, fmt, ap);
        va_end(ap);
        if (n >= 0 && e->glen + (size_t)n < e->gcap) {
            e->glen += (size_t)n;
            return;
        }
        size_t cap = e->gcap * 2 + (size_t)(n > 0 ? n : 0) + 256;
        char *g = realloc(e->graph, cap);
        if (!g) {
            fail(e, QAT_STATUS_NOMEM, "out of memory");
            return;
        }
        e->graph = g;
        e->gcap = cap;
    }
}

static void emit_shape(ex *e, const val *v) {
    if (v->ndim == 1) emit(e, " shape=%d", v->shape[0]);
    else emit(e, " shape=%d,%d,%d", v->shape[0], v->shape[1], v->shape[2]);
}

/* A new tensor of n elements of `size` bytes, zeroed; owned by e. */
static void *add_tensor(ex *e, const char *layer, const char *what, qat_st_dtype dtype, int ndim,
                        const int64_t *shape) {
    if (e->st) return NULL;
    if (e->nt == e->ct) {
        int c = e->ct ? 2 * e->ct : 16;
        tensor_slot *t = realloc(e->t, (size_t)c * sizeof *t);
        if (!t) {
            fail(e, QAT_STATUS_NOMEM, "out of memory");
            return NULL;
        }
        e->t = t;
        e->ct = c;
    }
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (size_t)shape[d];
    tensor_slot *s = &e->t[e->nt];
    memset(s, 0, sizeof *s);
    s->data = calloc(n ? n : 1, qat_st_dtype_size(dtype));
    if (!s->data) {
        fail(e, QAT_STATUS_NOMEM, "out of memory");
        return NULL;
    }
    snprintf(s->name, sizeof s->name, "%s.%s", layer, what);
    s->dtype = dtype;
    s->ndim = ndim;
    memcpy(s->shape, shape, (size_t)ndim * sizeof *shape);
    e->nt++;
    size_t bytes = n * qat_st_dtype_size(dtype);
    if (!strcmp(what, "weight")) e->rep->weight_bytes += bytes;
    else e->rep->other_bytes += bytes;
    return s->data;
}

static val new_val(ex *e, const qat_layer *l, float s, int32_t z) {
    val v = {e->next_value++, l->out_ndim, {0}, s, z};
    memcpy(v.shape, l->out_shape, sizeof v.shape);
    return v;
}

/* The clamp of a quantization point: its integer range, narrowed by a fused ReLU (real 0
 * is the zero point), ReLU6 (6) or PACT (alpha). int8-spec.md, "Conv2d / Linear". */
static void act_clamp(const qat_qpoint *p, int *lo, int *hi) { qat_qpoint_clamp(p, lo, hi); }

/* ---- conv / linear units ---- */

static val export_unit(ex *e, const qat_layer_quant *u, val in) {
    const qat_layer *l = u->layer;
    const qat_qpoint *p = &u->out;
    val out = new_val(e, l, p->scale, p->zp);
    if (e->st) return out;
    if (u->wgroup > 0) {
        fail(e, QAT_STATUS_INVALID_ARG,
             "layer %s: per-group weight scales (group=%d) have no integer form in the runtime, which "
             "uses one scale per output channel; quantize with per-channel weights",
             l->name, u->wgroup);
        return out;
    }
    const int C = l->weight.shape[0];
    const size_t n = l->weight.n, K = n / (size_t)C;
    const int qmax = qat_qmax_weight(u->wbits);
    float *wf = qat_quant_folded_weights(u), *bf = malloc((size_t)C * sizeof(float));
    int64_t wshape[4];
    for (int d = 0; d < l->weight.ndim; d++) wshape[d] = l->weight.shape[d];
    bool packed = u->wbits <= 4;
    int64_t pshape[1] = {(int64_t)((n + 1) / 2)};
    void *w = packed ? add_tensor(e, l->name, "weight", QAT_ST_DTYPE_U8, 1, pshape)
                     : add_tensor(e, l->name, "weight", QAT_ST_DTYPE_I8, l->weight.ndim, wshape);
    int64_t cshape[1] = {C};
    int32_t *bias = add_tensor(e, l->name, "bias", QAT_ST_DTYPE_I32, 1, cshape);
    int32_t *mult = add_tensor(e, l->name, "mult", QAT_ST_DTYPE_I32, 1, cshape);
    int32_t *shift = add_tensor(e, l->name, "shift", QAT_ST_DTYPE_I32, 1, cshape);
    if (!wf || !bf) fail(e, QAT_STATUS_NOMEM, "out of memory");
    if (e->st) goto done;
    qat_quant_folded_bias(u, bf);
    for (int c = 0; c < C; c++) {
        const float sw = u->wscale[u->wrows == 1 ? 0 : c];
        int32_t wmax = 0;
        for (size_t k = 0; k < K; k++) {
            size_t i = (size_t)c * K + k;
            if (!isfinite(wf[i])) {
                fail(e, QAT_STATUS_NUMERIC, "layer %s: weight %zu is %g", l->name, i, (double)wf[i]);
                goto done;
            }
            int32_t q = qat_quantize(wf[i], sw, 0, -qmax, qmax);
            wmax = abs(q) > wmax ? abs(q) : wmax;
            if (packed) ((uint8_t *)w)[i / 2] |= (uint8_t)((q & 0xF) << (i % 2 ? 4 : 0));
            else ((int8_t *)w)[i] = (int8_t)q;
        }
        /* The bias on the grid s_in * s_w[c], as the fake-quant forward rounds it. */
        const float sb = in.s * sw;
        double qb = (double)roundf(bf[c] / sb);
        if (!isfinite(qb) || fabs(qb) > 2147483647.0) {
            fail(e, QAT_STATUS_NUMERIC, "layer %s: channel %d's bias %g does not fit int32 at scale %g",
                 l->name, c, (double)bf[c], (double)sb);
            goto done;
        }
        bias[c] = (int32_t)qb;
        /* int8-spec.md: refuse what could overflow the int32 accumulator. */
        double bound = (double)K * 255.0 * wmax + fabs(qb);
        if (bound > 2147483647.0) {
            fail(e, QAT_STATUS_NUMERIC,
                 "layer %s: the accumulator of channel %d could overflow int32 (%zu inputs x 255 x "
                 "max|w| %d + |bias| %.0f = %.0f)",
                 l->name, c, K, wmax, fabs(qb), bound);
            goto done;
        }
        int sh;
        qat_quantize_multiplier((double)sb / (double)p->scale, &mult[c], &sh);
        shift[c] = sh;
    }
    int amin, amax;
    act_clamp(p, &amin, &amax);
    if (l->kind == QAT_LAYER_CONV2D)
        emit(e, "conv2d in=%d out=%d", in.id, out.id);
    else
        emit(e, "linear in=%d out=%d", in.id, out.id);
    emit_shape(e, &out);
    if (l->kind == QAT_LAYER_CONV2D)
        emit(e, " k=%d stride=%d pad=%d groups=%d", l->cfg.conv.kernel, l->cfg.conv.stride, l->cfg.conv.pad,
             l->cfg.conv.groups);
    emit(e, " weight=%s.weight bias=%s.bias mult=%s.mult shift=%s.shift wbits=%d z_in=%d z_out=%d "
            "act_min=%d act_max=%d s=%.9g\n",
         l->name, l->name, l->name, l->name, u->wbits, in.z, out.z, amin, amax, (double)out.s);
    e->n_ops++;
done:
    free(wf);
    free(bf);
    return out;
}

/* ---- the walk ---- */

static val export_seq(ex *e, const qat_seq *s, val in);

static val export_residual(ex *e, const qat_layer *l, val in) {
    const qat_layer_quant *u = l->quant;
    val a = export_seq(e, &l->body, in);
    val b = l->shortcut.n ? export_seq(e, &l->shortcut, in) : in;
    const qat_qpoint *p = &u->out;
    val out = new_val(e, l, p->scale, p->zp);
    /* TFLite's ADD: both inputs to a common scale 2 max(s_a, s_b) with 20 bits of headroom,
     * then to the output scale (int8-spec.md, "Other ops"). */
    double twice = 2.0 * fmax(a.s, b.s);
    int32_t ma, mb, mo;
    int sa, sb, so;
    qat_quantize_multiplier(a.s / twice, &ma, &sa);
    qat_quantize_multiplier(b.s / twice, &mb, &sb);
    qat_quantize_multiplier(twice / ((double)(1 << 20) * p->scale), &mo, &so);
    int amin, amax;
    act_clamp(p, &amin, &amax);
    emit(e, "add in=%d,%d out=%d", a.id, b.id, out.id);
    emit_shape(e, &out);
    emit(e, " z_a=%d z_b=%d z_out=%d mult_a=%d shift_a=%d mult_b=%d shift_b=%d mult_out=%d shift_out=%d "
            "act_min=%d act_max=%d s=%.9g\n",
         a.z, b.z, out.z, ma, sa, mb, sb, mo, so, amin, amax, (double)out.s);
    e->n_ops++;
    return out;
}

static val export_seq(ex *e, const qat_seq *s, val in) {
    val v = in;
    for (int i = 0; i < s->n && !e->st; i++) {
        const qat_layer *l = &s->layers[i];
        switch (l->kind) {
        case QAT_LAYER_LINEAR:
        case QAT_LAYER_CONV2D:
            v = export_unit(e, l->quant, v);
            i += l->quant->n_fused;
            break;
        case QAT_LAYER_RESIDUAL:
            v = export_residual(e, l, v);
            i += l->quant->n_fused;
            break;
        case QAT_LAYER_MAXPOOL:
        case QAT_LAYER_AVGPOOL:
        case QAT_LAYER_GLOBAL_AVGPOOL:
        case QAT_LAYER_FLATTEN: {
            val out = new_val(e, l, v.s, v.z);
            const char *op = l->kind == QAT_LAYER_MAXPOOL   ? "maxpool"
                             : l->kind == QAT_LAYER_AVGPOOL ? "avgpool"
                             : l->kind == QAT_LAYER_FLATTEN ? "flatten"
                                                            : "global_avgpool";
            emit(e, "%s in=%d out=%d", op, v.id, out.id);
            emit_shape(e, &out);
            if (l->kind == QAT_LAYER_MAXPOOL || l->kind == QAT_LAYER_AVGPOOL)
                emit(e, " k=%d stride=%d pad=%d", l->cfg.pool.kernel, l->cfg.pool.stride, l->cfg.pool.pad);
            emit(e, "\n");
            e->n_ops++;
            v = out;
            break;
        }
        case QAT_LAYER_DROPOUT: break; /* the identity at inference */
        default:
            fail(e, QAT_STATUS_INVALID_ARG,
                 "layer %s (%s): the int8 runtime has no such op here (it runs conv2d and linear with "
                 "their batch norm and ReLU/ReLU6 fused, pools, residual adds and flatten)",
                 l->name, qat_layer_kind_str(l->kind));
        }
    }
    return v;
}

qat_status qat_export(const qat_model *m, const char *path, const qat_st_kv *meta, size_t n_meta,
                      qat_export_report *rep, qat_error *err) {
    QAT_ASSERT(m != NULL && path != NULL && rep != NULL);
    memset(rep, 0, sizeof *rep);
    const qat_quant *q = m->quant;
    if (!q)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "export: the model is not quantized (qat calibrate or qat train --quant first)");
    if (q->input.method != QAT_ACT_METHOD_FIXED || m->in_ndim != 3)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "export: the runtime takes uint8 images with one normalisation mean and "
                             "std; this model's input has none");
    qat_quant_refresh((qat_model *)m);
    ex e = {.m = m, .q = q, .rep = rep, .err = err};
    val in = {e.next_value++, 3, {m->in_shape[0], m->in_shape[1], m->in_shape[2]}, q->input.scale, q->input.zp};
    emit(&e, "input out=%d", in.id);
    emit_shape(&e, &in);
    emit(&e, " s=%.9g z=%d\n", (double)in.s, in.z);
    val out = export_seq(&e, &m->root, in);
    emit(&e, "output in=%d\n", out.id);
    if (!e.st && (out.ndim != 1))
        fail(&e, QAT_STATUS_INVALID_ARG, "the model's output is not a vector of logits");
    if (!e.st) {
        qat_st_tensor *ts = calloc((size_t)e.nt + 1, sizeof *ts);
        qat_st_kv *kv = calloc(n_meta + 3, sizeof *kv);
        if (!ts || !kv) fail(&e, QAT_STATUS_NOMEM, "out of memory");
        else {
            for (int i = 0; i < e.nt; i++) {
                ts[i].name = e.t[i].name;
                ts[i].dtype = e.t[i].dtype;
                ts[i].ndim = e.t[i].ndim;
                memcpy(ts[i].shape, e.t[i].shape, sizeof e.t[i].shape);
                ts[i].data = e.t[i].data;
            }
            char ver[16];
            snprintf(ver, sizeof ver, "%d", QAT_INT8_VERSION);
            kv[0] = (qat_st_kv){"format", QAT_INT8_FORMAT};
            kv[1] = (qat_st_kv){"format_version", ver};
            kv[2] = (qat_st_kv){"graph", e.graph};
            size_t nk = 3;
            for (size_t i = 0; i < n_meta; i++)
                if (strcmp(meta[i].key, "format") && strcmp(meta[i].key, "format_version") && strcmp(meta[i].key, "graph"))
                    kv[nk++] = meta[i];
            e.st = qat_safetensors_write(path, ts, (size_t)e.nt, kv, nk, err);
        }
        free(ts);
        free(kv);
    }
    if (!e.st) {
        FILE *f = fopen(path, "rb");
        if (f) {
            fseek(f, 0, SEEK_END);
            rep->file_bytes = (size_t)ftell(f);
            fclose(f);
        }
        rep->n_ops = e.n_ops;
    }
    for (int i = 0; i < e.nt; i++) free(e.t[i].data);
    free(e.t);
    free(e.graph);
    return e.st;
}

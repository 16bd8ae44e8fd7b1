/* smooth.c - SmoothQuant for linear layers and per-row dynamic fake quantization
 * (smooth.h). */
#include "smooth.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/comm.h"
#include "fake_quant.h"

/* ---- the paper's formulas ---- */

void qat_smooth_factors(float *s, const float *xmax, const float *w, int rows, int d, float alpha) {
    for (int j = 0; j < d; j++) {
        double wm = 0;
        for (int i = 0; i < rows; i++) {
            double a = fabs((double)w[(size_t)i * (size_t)d + (size_t)j]);
            wm = a > wm ? a : wm;
        }
        if (!(xmax[j] > 0.0f)) { /* a channel that never fired: left alone (smooth.h) */
            s[j] = 1.0f;
            continue;
        }
        wm = wm > 1e-5 ? wm : 1e-5;
        double v = pow((double)xmax[j], (double)alpha) / pow(wm, 1.0 - (double)alpha);
        s[j] = (float)(v > 1e-5 ? v : 1e-5);
    }
}

void qat_fq_row_qparams(float *scale, int32_t *zp, const float *x, int rows, size_t cols, int qmin, int qmax) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float lo = 0.0f, hi = 0.0f;
        for (size_t k = 0; k < cols; k++) {
            lo = xr[k] < lo ? xr[k] : lo;
            hi = xr[k] > hi ? xr[k] : hi;
        }
        qat_qparams_from_range(lo, hi, qmin, qmax, false, &scale[r], &zp[r]);
    }
}

void qat_fq_rows_dynamic(float *out, const float *x, int rows, size_t cols, int qmin, int qmax, float *scale,
                         int32_t *zp) {
    qat_fq_row_qparams(scale, zp, x, rows, cols, qmin, qmax);
    qat_fake_quant_forward(out, x, scale, zp, rows, cols, 0, qmin, qmax);
}

/* ---- where it applies ---- */

static bool passes_through(qat_layer_kind k) {
    return k == QAT_LAYER_RELU || k == QAT_LAYER_DROPOUT || k == QAT_LAYER_FLATTEN;
}

const qat_layer *qat_smooth_input_layer(const qat_model *m) {
    const qat_seq *s = &m->root;
    int i = 0;
    while (i < s->n && passes_through(s->layers[i].kind)) i++;
    return i < s->n && s->layers[i].kind == QAT_LAYER_LINEAR && !s->layers[i].lora ? &s->layers[i] : NULL;
}

qat_status qat_smooth_begin(qat_smooth *sm, qat_model *m, qat_error *err) {
    memset(sm, 0, sizeof *sm);
    const qat_quant *q = m->quant;
    QAT_ASSERT(q != NULL);
    qat_seq *s = &m->root;
    sm->sites = calloc((size_t)s->n + 1, sizeof *sm->sites);
    if (!sm->sites) return qat_error_set(err, QAT_STATUS_NOMEM, "smooth: out of memory");
    for (int i = 0; i < s->n; i++) {
        qat_layer *l = &s->layers[i];
        if (l->kind != QAT_LAYER_LINEAR || l->lora || !l->quant) continue;
        int j = i - 1;
        bool relu6 = false;
        while (j >= 0 && passes_through(s->layers[j].kind)) j--;
        for (int k = j + 1; k < i; k++) relu6 |= s->layers[k].kind == QAT_LAYER_RELU6;
        qat_layer *prev = NULL;
        if (j < 0) {
            if (!q->in_smooth.data) continue; /* uint8 images: the input mapping is fixed */
        } else {
            prev = &s->layers[j];
            if (prev->kind != QAT_LAYER_LINEAR || prev->lora || relu6 || prev->cfg.linear.out != l->cfg.linear.in)
                continue;
        }
        qat_smooth_site *st = &sm->sites[sm->n++];
        st->layer = l;
        st->prev = prev;
        st->d = l->cfg.linear.in;
        st->xmax = calloc((size_t)st->d, sizeof(float));
        if (!st->xmax) return qat_error_set(err, QAT_STATUS_NOMEM, "smooth: out of memory");
        if (q->spec.smooth_alpha < 0) {
            st->rows = malloc((size_t)QAT_SMOOTH_ROWS * (size_t)st->d * sizeof(float));
            if (!st->rows) return qat_error_set(err, QAT_STATUS_NOMEM, "smooth: out of memory");
        }
    }
    return QAT_STATUS_OK;
}

static void seen(const qat_layer *l, const qat_tensor *x, void *user) {
    qat_smooth *sm = user;
    for (int k = 0; k < sm->n; k++) {
        qat_smooth_site *st = &sm->sites[k];
        if (st->layer != l) continue;
        const int n = x->shape[0];
        const size_t d = (size_t)st->d;
        QAT_ASSERT(x->n == (size_t)n * d);
        for (int r = 0; r < n; r++) {
            const float *xr = x->data + (size_t)r * d;
            for (size_t j = 0; j < d; j++) {
                float a = fabsf(xr[j]);
                /* NaN sticks, for qat_smooth_end to refuse */
                if (a > st->xmax[j] || isnan(a)) st->xmax[j] = isnan(st->xmax[j]) ? st->xmax[j] : a;
            }
            if (st->rows && st->n_rows < QAT_SMOOTH_ROWS) memcpy(st->rows + (size_t)st->n_rows++ * d, xr, d * sizeof(float));
        }
    }
}

qat_status qat_smooth_observe(qat_smooth *sm, qat_model *m, qat_tape *t, qat_tensor *x, qat_error *err) {
    if (!sm->n) return QAT_STATUS_OK;
    if (!qat_model_forward_float(m, t, x, seen, sm)) return qat_error_set(err, t->err.status, "%s", t->err.msg);
    return QAT_STATUS_OK;
}

/* ---- choosing alpha ---- */

/* mean over rows and outputs of (Q(X / s) Q(W s)^T - X W^T)^2 (smooth.h); s NULL: 1. */
static double layer_error(const qat_smooth_site *st, const float *s, int abits, bool token, int wbits,
                          bool per_channel, float *xs, float *ws, float *wscale, int32_t *wzp, float *rscale,
                          int32_t *rzp) {
    const int n = st->n_rows, d = st->d, c = st->layer->cfg.linear.out;
    const float *x = st->rows, *w = st->layer->weight.data;
    for (int r = 0; r < n; r++)
        for (int j = 0; j < d; j++) xs[(size_t)r * d + j] = s ? x[(size_t)r * d + j] / s[j] : x[(size_t)r * d + j];
    for (int i = 0; i < c; i++)
        for (int j = 0; j < d; j++) ws[(size_t)i * d + j] = s ? w[(size_t)i * d + j] * s[j] : w[(size_t)i * d + j];
    const int qmin = qat_qmin_act(abits), qmax = qat_qmax_act(abits);
    if (token) {
        qat_fq_rows_dynamic(xs, xs, n, (size_t)d, qmin, qmax, rscale, rzp);
    } else {
        float lo = 0, hi = 0, sc;
        int32_t z;
        for (size_t k = 0; k < (size_t)n * d; k++) {
            lo = xs[k] < lo ? xs[k] : lo;
            hi = xs[k] > hi ? xs[k] : hi;
        }
        qat_comm_minmax(&lo, &hi); /* data-parallel: the range of every process's rows */
        qat_qparams_from_range(lo, hi, qmin, qmax, false, &sc, &z);
        qat_fake_quant_forward(xs, xs, &sc, &z, 1, (size_t)n * d, 0, qmin, qmax);
    }
    const int wq = qat_qmax_weight(wbits), wrows = per_channel ? c : 1;
    qat_fq_weight_scales(wscale, wzp, ws, wrows, (size_t)c * d / (size_t)wrows, 0, wq);
    qat_fake_quant_forward(ws, ws, wscale, wzp, wrows, (size_t)c * d / (size_t)wrows, 0, -wq, wq);
    double e = 0;
    for (int r = 0; r < n; r++)
        for (int i = 0; i < c; i++) {
            double y = 0, yq = 0;
            const float *xr = x + (size_t)r * d, *xq = xs + (size_t)r * d;
            const float *wr = w + (size_t)i * d, *wqr = ws + (size_t)i * d;
            for (int j = 0; j < d; j++) {
                y += (double)xr[j] * wr[j];
                yq += (double)xq[j] * wqr[j];
            }
            e += (yq - y) * (yq - y);
        }
    double v[2] = {e, (double)n * c}; /* data-parallel: over every process's rows */
    qat_comm_sum_f64(v, 2);
    return v[1] > 0 ? v[0] / v[1] : 0;
}

static qat_status choose_alpha(qat_smooth_site *st, const qat_quant *q, qat_error *err) {
    const int d = st->d, c = st->layer->cfg.linear.out, n = st->n_rows;
    const qat_layer_quant *u = st->layer->quant;
    const qat_qpoint *in = st->prev ? &st->prev->quant->out : &q->input;
    const int abits = in->bits;
    const bool token = in->dynamic, per_channel = u->wrows > 1;
    float *xs = malloc((size_t)n * d * sizeof(float)), *ws = malloc((size_t)c * d * sizeof(float));
    float *wscale = malloc((size_t)c * sizeof(float)), *rscale = malloc((size_t)(n ? n : 1) * sizeof(float));
    float *s = malloc((size_t)d * sizeof(float));
    int32_t *wzp = malloc((size_t)c * sizeof(int32_t)), *rzp = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    qat_status r = QAT_STATUS_OK;
    if (!xs || !ws || !wscale || !rscale || !s || !wzp || !rzp) {
        r = qat_error_set(err, QAT_STATUS_NOMEM, "smooth: out of memory");
    } else {
        st->err_none = layer_error(st, NULL, abits, token, u->wbits, per_channel, xs, ws, wscale, wzp, rscale, rzp);
        st->alpha = -1.0f;
        st->err_best = st->err_none;
        for (int k = 0; k <= 10; k++) {
            const float a = (float)k / 10.0f;
            qat_smooth_factors(s, st->xmax, st->layer->weight.data, c, d, a);
            double e = layer_error(st, s, abits, token, u->wbits, per_channel, xs, ws, wscale, wzp, rscale, rzp);
            if (e < st->err_best) {
                st->err_best = e;
                st->alpha = a;
            }
        }
    }
    free(xs), free(ws), free(wscale), free(rscale), free(s), free(wzp), free(rzp);
    return r;
}

/* ---- folding ---- */

static void fold(qat_smooth_site *st, qat_quant *q, const float *s) {
    const int d = st->d, c = st->layer->cfg.linear.out;
    float *w = st->layer->weight.data;
    for (int i = 0; i < c; i++)
        for (int j = 0; j < d; j++) w[(size_t)i * d + j] *= s[j];
    if (st->prev) {
        const int k_in = st->prev->cfg.linear.in;
        float *pw = st->prev->weight.data, *pb = st->prev->bias.data;
        for (int j = 0; j < d; j++) {
            for (int k = 0; k < k_in; k++) pw[(size_t)j * k_in + k] /= s[j];
            if (pb) pb[j] /= s[j];
        }
    } else {
        QAT_ASSERT(q->in_smooth.n == (size_t)d);
        for (int j = 0; j < d; j++) q->in_smooth.data[j] *= s[j];
    }
}

qat_status qat_smooth_end(qat_smooth *sm, qat_model *m, qat_error *err) {
    qat_quant *q = m->quant;
    for (int k = 0; k < sm->n; k++) {
        qat_smooth_site *st = &sm->sites[k];
        /* data-parallel: the maxima over every process's share (exact) */
        if (qat_comm_max(st->xmax, (size_t)st->d))
            return qat_error_set(err, QAT_STATUS_IO, "smooth: the maxima across processes failed");
        for (int j = 0; j < st->d; j++)
            if (!isfinite(st->xmax[j]))
                return qat_error_set(err, QAT_STATUS_NUMERIC,
                                     "smooth: layer %s: input feature %d is not finite on the calibration data",
                                     st->layer->name, j);
        st->alpha = q->spec.smooth_alpha;
        if (st->alpha < 0) {
            qat_status r = choose_alpha(st, q, err);
            if (r) return r;
            if (st->alpha < 0) continue; /* nothing beat the layer as it is */
        }
        float *s = malloc((size_t)st->d * sizeof(float));
        if (!s) return qat_error_set(err, QAT_STATUS_NOMEM, "smooth: out of memory");
        qat_smooth_factors(s, st->xmax, st->layer->weight.data, st->layer->cfg.linear.out, st->d, st->alpha);
        fold(st, q, s);
        free(s);
    }
    return QAT_STATUS_OK;
}

void qat_smooth_free(qat_smooth *sm) {
    for (int k = 0; k < sm->n; k++) {
        free(sm->sites[k].xmax);
        free(sm->sites[k].rows);
    }
    free(sm->sites);
    memset(sm, 0, sizeof *sm);
}

/* q4.c - int4 and NF4 weights per group, with double quantization (q4.h). */
#include "quant/q4.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/tape.h"
#include "optim/blockwise.h"

static const char *const NAMES[QAT_Q4_FORMAT_COUNT] = {"int4", "nf4"};

const char *qat_q4_format_str(qat_q4_format f) {
    return (unsigned)f < QAT_Q4_FORMAT_COUNT ? NAMES[f] : "unknown";
}

bool qat_q4_format_parse(const char *s, qat_q4_format *f) {
    for (int i = 0; s && i < QAT_Q4_FORMAT_COUNT; i++)
        if (strcmp(s, NAMES[i]) == 0) {
            *f = (qat_q4_format)i;
            return true;
        }
    return false;
}

static float levels[QAT_Q4_FORMAT_COUNT][16];
static pthread_once_t levels_once = PTHREAD_ONCE_INIT;

/* The standard normal's quantile: the x with Phi(x) = p, for p in [1/2, 1), by bisection
 * on Phi(x) = erfc(-x / sqrt 2) / 2 until the interval cannot shrink. */
static double normal_quantile(double p) {
    double lo = 0.0, hi = 40.0;
    for (;;) {
        double mid = lo + (hi - lo) / 2;
        if (mid <= lo || mid >= hi) break;
        if (0.5 * erfc(-mid / sqrt(2.0)) < p) lo = mid;
        else hi = mid;
    }
    return lo;
}

static void build_levels(void) {
    for (int k = 0; k < 16; k++) levels[QAT_Q4_INT4][k] = (float)((k - 8) / 7.0);
    const double o = (1.0 - 1.0 / 30 + 1.0 - 1.0 / 32) / 2;
    const double top = normal_quantile(o);
    double v[16];
    int n = 0;
    for (int k = 0; k <= 6; k++) v[n++] = -normal_quantile(o + (0.5 - o) * k / 7) / top;
    v[n++] = 0.0;
    for (int k = 7; k >= 0; k--) v[n++] = normal_quantile(o + (0.5 - o) * k / 8) / top;
    for (int k = 0; k < 16; k++) levels[QAT_Q4_NF4][k] = (float)v[k];
}

const float *qat_q4_levels(qat_q4_format f) {
    QAT_ASSERT((unsigned)f < QAT_Q4_FORMAT_COUNT);
    pthread_once(&levels_once, build_levels);
    return levels[f];
}

/* Index of the level nearest t (int4: among -7/7 .. 7/7), a tie to the one nearer 0. */
static int nearest(const float *lv, int first, float t) {
    int best = first;
    float bd = fabsf(lv[first] - t);
    for (int k = first + 1; k < 16; k++) {
        float d = fabsf(lv[k] - t);
        if (d < bd || (d == bd && fabsf(lv[k]) < fabsf(lv[best]))) best = k, bd = d;
    }
    return best;
}

void qat_q4_free(qat_q4 *q) {
    if (!q) return;
    free(q->codes);
    free(q->absmax);
    free(q->absmax_codes);
    free(q->absmax_scale);
    memset(q, 0, sizeof *q);
}

/* The level index of x in a group whose constant (absolute maximum) is a. */
static int level_of(const float *lv, qat_q4_format f, float x, float a) {
    return a > 0.0f ? nearest(lv, f == QAT_Q4_INT4 ? 1 : 0, x / a) : (f == QAT_Q4_INT4 ? 8 : 7);
}

static void group_absmax(const float *x, size_t n, int group, float *a) {
    for (size_t g = 0, i0 = 0; i0 < n; g++, i0 += (size_t)group) {
        const size_t i1 = QAT_MIN(n, i0 + (size_t)group);
        float m = 0.0f;
        for (size_t i = i0; i < i1; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
        a[g] = m;
    }
}

/* Double quantization of ng constants: their mean (in double, then float), and A_g - mean
 * block-wise in 8 bits (codes[ng], scales[ceil(ng / 256)]); centred: ng floats of scratch. */
static float dq_constants(const float *a, size_t ng, float *centred, uint8_t *codes, float *scales) {
    double s = 0;
    for (size_t g = 0; g < ng; g++) s += a[g];
    const float mean = (float)(s / (double)ng);
    for (size_t g = 0; g < ng; g++) centred[g] = a[g] - mean;
    qat_blockq_quantize(codes, scales, centred, ng, QAT_Q4_DQ_BLOCK, qat_dynamic_map(true));
    return mean;
}

qat_status qat_q4_quantize(qat_q4 *q, const float *x, size_t n, qat_q4_format format, int group,
                           bool dq, qat_error *err) {
    QAT_ASSERT(q && x);
    memset(q, 0, sizeof *q);
    if ((unsigned)format >= QAT_Q4_FORMAT_COUNT || n < 1 || group < 1 || group > QAT_Q4_MAX_GROUP)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "4-bit weights: format %d, %zu weights, group %d (1..%d expected)",
                             (int)format, n, group, QAT_Q4_MAX_GROUP);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "4-bit weights: weight %zu is %g; only finite weights can be quantized", i,
                                 (double)x[i]);
    const size_t ng = (n + (size_t)group - 1) / (size_t)group;
    q->format = format;
    q->n = n;
    q->group = group;
    q->dq = dq;
    q->n_groups = ng;
    q->codes = calloc((n + 1) / 2, 1);
    q->absmax = malloc(ng * sizeof(float));
    if (!q->codes || !q->absmax) {
        qat_q4_free(q);
        return qat_error_set(err, QAT_STATUS_NOMEM, "4-bit weights: out of memory for %zu weights", n);
    }
    const float *lv = qat_q4_levels(format);
    group_absmax(x, n, group, q->absmax);
    for (size_t i = 0; i < n; i++) {
        const int k = level_of(lv, format, x[i], q->absmax[i / (size_t)group]);
        const uint8_t nib = (uint8_t)(format == QAT_Q4_INT4 ? (k - 8) & 15 : k);
        q->codes[i / 2] |= (uint8_t)(i % 2 ? nib << 4 : nib);
    }
    if (!dq) return QAT_STATUS_OK;
    q->n_scales = qat_blockq_count(ng, QAT_Q4_DQ_BLOCK);
    q->absmax_codes = malloc(ng);
    q->absmax_scale = malloc(q->n_scales * sizeof(float));
    float *centred = malloc(ng * sizeof(float));
    if (!q->absmax_codes || !q->absmax_scale || !centred) {
        free(centred);
        qat_q4_free(q);
        return qat_error_set(err, QAT_STATUS_NOMEM, "4-bit weights: out of memory for %zu weights", n);
    }
    q->absmax_mean = dq_constants(q->absmax, ng, centred, q->absmax_codes, q->absmax_scale);
    free(centred);
    free(q->absmax);
    q->absmax = NULL;
    return QAT_STATUS_OK;
}

size_t qat_q4_roundtrip_scratch(size_t n, int group) {
    const size_t ng = (n + (size_t)group - 1) / (size_t)group;
    return 2 * ng * sizeof(float) + qat_blockq_count(ng, QAT_Q4_DQ_BLOCK) * sizeof(float) + ng;
}

void qat_q4_roundtrip(const float *x, size_t n, qat_q4_format format, int group, bool dq, float *out, void *scratch) {
    QAT_ASSERT(n >= 1 && group >= 1 && (unsigned)format < QAT_Q4_FORMAT_COUNT);
    const size_t ng = (n + (size_t)group - 1) / (size_t)group, ns = qat_blockq_count(ng, QAT_Q4_DQ_BLOCK);
    float *a = scratch, *c = a + ng, *scales = c + ng;
    uint8_t *codes = (uint8_t *)(scales + ns);
    const float *lv = qat_q4_levels(format), *map = qat_dynamic_map(true);
    group_absmax(x, n, group, a);
    const float mean = dq ? dq_constants(a, ng, c, codes, scales) : 0.0f;
    for (size_t g = 0; g < ng; g++) c[g] = dq ? map[codes[g]] * scales[g / QAT_Q4_DQ_BLOCK] + mean : a[g];
    for (size_t i = 0; i < n; i++) {
        const size_t g = i / (size_t)group;
        out[i] = lv[level_of(lv, format, x[i], a[g])] * c[g];
    }
}

/* Group g's constant as dequantization uses it. */
static float constant(const qat_q4 *q, size_t g) {
    if (!q->dq) return q->absmax[g];
    return qat_dynamic_map(true)[q->absmax_codes[g]] * q->absmax_scale[g / QAT_Q4_DQ_BLOCK] + q->absmax_mean;
}

void qat_q4_constants(const qat_q4 *q, float *absmax) {
    for (size_t g = 0; g < q->n_groups; g++) absmax[g] = constant(q, g);
}

int qat_q4_code(const qat_q4 *q, size_t i) {
    QAT_ASSERT(i < q->n);
    int nib = (q->codes[i / 2] >> (i % 2 ? 4 : 0)) & 15;
    return q->format == QAT_Q4_INT4 && nib >= 8 ? nib - 16 : nib;
}

void qat_q4_dequantize(const qat_q4 *q, float *x) {
    const float *lv = qat_q4_levels(q->format);
    const int off = q->format == QAT_Q4_INT4 ? 8 : 0;
    for (size_t g = 0; g < q->n_groups; g++) {
        const float a = constant(q, g);
        const size_t i0 = g * (size_t)q->group, i1 = QAT_MIN(q->n, i0 + (size_t)q->group);
        for (size_t i = i0; i < i1; i++) x[i] = lv[qat_q4_code(q, i) + off] * a;
    }
}

double qat_q4_bits(const qat_q4 *q) {
    double bits = 4.0 * (double)q->n;
    bits += q->dq ? 8.0 * (double)q->n_groups + 32.0 * (double)q->n_scales + 32.0 : 32.0 * (double)q->n_groups;
    return bits / (double)q->n;
}

typedef struct q4_fake_ctx {
    qat_tensor *x, *y;
} q4_fake_ctx;

/* The straight-through estimator: the rounding's gradient taken as 1. */
static void q4_fake_backward(qat_tape *t, void *p) {
    (void)t;
    q4_fake_ctx *c = p;
    if (c->x->grad)
        for (size_t i = 0; i < c->x->n; i++) c->x->grad[i] += c->y->grad[i];
}

qat_tensor *qat_q4_fake(qat_tape *t, qat_tensor *x, qat_q4_format format, int group, bool dq) {
    if (!x) return NULL;
    qat_tensor *y = qat_tape_tensor(t, x->ndim, x->shape, x->grad != NULL);
    void *scratch = y ? qat_tape_alloc(t, qat_q4_roundtrip_scratch(x->n, group)) : NULL;
    if (!scratch) return NULL;
    qat_q4_roundtrip(x->data, x->n, format, group, dq, y->data, scratch);
    if (qat_tape_needs_grad(t, x, NULL, NULL)) {
        q4_fake_ctx *c = qat_tape_record(t, q4_fake_backward, sizeof *c, "q4_fake");
        if (!c) return NULL;
        *c = (q4_fake_ctx){x, y};
    }
    return y;
}

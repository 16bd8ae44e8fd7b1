#include "conv2d.h"

#include <cblas.h>
#include <string.h>

bool qat_conv2d_shape_init(qat_conv2d_shape *s) {
    if (s->groups < 1 || s->stride < 1 || s->pad < 0 || s->KH < 1 || s->KW < 1) return false;
    if (s->C % s->groups || s->OC % s->groups) return false;
    if (s->H + 2 * s->pad < s->KH || s->W + 2 * s->pad < s->KW) return false;
    s->OH = (s->H + 2 * s->pad - s->KH) / s->stride + 1;
    s->OW = (s->W + 2 * s->pad - s->KW) / s->stride + 1;
    return true;
}

/* A 1x1 convolution with stride 1 and no padding needs no im2col: the input plane of
 * a group already is the column matrix (C/g, H*W). */
static bool is_pointwise(const qat_conv2d_shape *s) {
    return s->KH == 1 && s->KW == 1 && s->stride == 1 && s->pad == 0;
}

size_t qat_conv2d_scratch_floats(const qat_conv2d_shape *s) {
    if (is_pointwise(s)) return 0;
    return (size_t)(s->C / s->groups) * s->KH * s->KW * s->OH * s->OW;
}

/* x: the Cg channels of one group of one image, (Cg, H, W).
 * col (Cg*KH*KW, OH*OW): row (c, i, j) holds x[c][oy*stride - pad + i][ox*stride - pad + j]
 * for every output position (oy, ox), zero where that falls in the padding. */
static void im2col(float *col, const float *x, int Cg, const qat_conv2d_shape *s) {
    const int OHW = s->OH * s->OW;
    for (int c = 0; c < Cg; c++)
        for (int i = 0; i < s->KH; i++)
            for (int j = 0; j < s->KW; j++) {
                float *row = col + ((size_t)(c * s->KH + i) * s->KW + j) * OHW;
                const float *plane = x + (size_t)c * s->H * s->W;
                for (int oy = 0; oy < s->OH; oy++) {
                    int iy = oy * s->stride - s->pad + i;
                    float *r = row + oy * s->OW;
                    if (iy < 0 || iy >= s->H) {
                        memset(r, 0, (size_t)s->OW * sizeof(float));
                        continue;
                    }
                    const float *line = plane + (size_t)iy * s->W;
                    for (int ox = 0; ox < s->OW; ox++) {
                        int ix = ox * s->stride - s->pad + j;
                        r[ox] = (ix >= 0 && ix < s->W) ? line[ix] : 0.0f;
                    }
                }
            }
}

/* The adjoint of im2col: dx[c][iy][ix] += every col entry that was copied from there. */
static void col2im(float *dx, const float *col, int Cg, const qat_conv2d_shape *s) {
    const int OHW = s->OH * s->OW;
    for (int c = 0; c < Cg; c++)
        for (int i = 0; i < s->KH; i++)
            for (int j = 0; j < s->KW; j++) {
                const float *row = col + ((size_t)(c * s->KH + i) * s->KW + j) * OHW;
                float *plane = dx + (size_t)c * s->H * s->W;
                for (int oy = 0; oy < s->OH; oy++) {
                    int iy = oy * s->stride - s->pad + i;
                    if (iy < 0 || iy >= s->H) continue;
                    float *line = plane + (size_t)iy * s->W;
                    const float *r = row + oy * s->OW;
                    for (int ox = 0; ox < s->OW; ox++) {
                        int ix = ox * s->stride - s->pad + j;
                        if (ix >= 0 && ix < s->W) line[ix] += r[ox];
                    }
                }
            }
}

/* inp (N, C, H, W), weight (OC, C/g, KH, KW), bias (OC) or NULL, out (N, OC, OH, OW) */
void qat_conv2d_forward(float *out, float *scratch, const float *inp, const float *weight,
                        const float *bias, const qat_conv2d_shape *s) {
    const int G = s->groups, Cg = s->C / G, OCg = s->OC / G;
    const int K = Cg * s->KH * s->KW, OHW = s->OH * s->OW;
    for (int n = 0; n < s->N; n++) {
        const float *x = inp + (size_t)n * s->C * s->H * s->W;
        float *y = out + (size_t)n * s->OC * OHW;
        for (int g = 0; g < G; g++) {
            const float *xg = x + (size_t)g * Cg * s->H * s->W;
            const float *col = xg;
            if (!is_pointwise(s)) {
                im2col(scratch, xg, Cg, s);
                col = scratch;
            }
            /* y_g (OCg, OHW) = W_g (OCg, K) * col (K, OHW) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OCg, OHW, K, 1.0f,
                        weight + (size_t)g * OCg * K, K, col, OHW, 0.0f,
                        y + (size_t)g * OCg * OHW, OHW);
        }
        if (bias)
            for (int o = 0; o < s->OC; o++) {
                float *yo = y + (size_t)o * OHW;
                for (int i = 0; i < OHW; i++) yo[i] += bias[o];
            }
    }
}

void qat_conv2d_backward(float *dinp, float *dweight, float *dbias, float *scratch,
                         const float *dout, const float *inp, const float *weight,
                         const qat_conv2d_shape *s) {
    const int G = s->groups, Cg = s->C / G, OCg = s->OC / G;
    const int K = Cg * s->KH * s->KW, OHW = s->OH * s->OW;
    const bool pw = is_pointwise(s);
    for (int n = 0; n < s->N; n++) {
        const float *x = inp + (size_t)n * s->C * s->H * s->W;
        const float *dy = dout + (size_t)n * s->OC * OHW;
        if (dbias)
            for (int o = 0; o < s->OC; o++) {
                const float *d = dy + (size_t)o * OHW;
                float acc = 0.0f;
                for (int i = 0; i < OHW; i++) acc += d[i];
                dbias[o] += acc;
            }
        for (int g = 0; g < G; g++) {
            const float *xg = x + (size_t)g * Cg * s->H * s->W;
            const float *dyg = dy + (size_t)g * OCg * OHW;
            const float *wg = weight + (size_t)g * OCg * K;
            if (dweight) {
                const float *col = xg;
                if (!pw) {
                    im2col(scratch, xg, Cg, s);
                    col = scratch;
                }
                /* dW_g (OCg, K) += dy_g (OCg, OHW) * col^T (OHW, K) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OCg, K, OHW, 1.0f, dyg, OHW,
                            col, OHW, 1.0f, dweight + (size_t)g * OCg * K, K);
            }
            if (dinp) {
                float *dxg = dinp + ((size_t)n * s->C + (size_t)g * Cg) * s->H * s->W;
                /* dcol (K, OHW) = W_g^T (K, OCg) * dy_g (OCg, OHW); pointwise: dcol is dx. */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, OHW, OCg, 1.0f, wg, K, dyg,
                            OHW, pw ? 1.0f : 0.0f, pw ? dxg : scratch, OHW);
                if (!pw) col2im(dxg, scratch, Cg, s);
            }
        }
    }
}

void qat_conv2d_forward_ref(float *out, const float *inp, const float *weight,
                            const float *bias, const qat_conv2d_shape *s) {
    const int Cg = s->C / s->groups, OCg = s->OC / s->groups;
    for (int n = 0; n < s->N; n++)
        for (int o = 0; o < s->OC; o++) {
            int g = o / OCg;
            for (int oy = 0; oy < s->OH; oy++)
                for (int ox = 0; ox < s->OW; ox++) {
                    double acc = bias ? bias[o] : 0.0;
                    for (int c = 0; c < Cg; c++)
                        for (int i = 0; i < s->KH; i++)
                            for (int j = 0; j < s->KW; j++) {
                                int iy = oy * s->stride - s->pad + i;
                                int ix = ox * s->stride - s->pad + j;
                                if (iy < 0 || iy >= s->H || ix < 0 || ix >= s->W) continue;
                                float xv = inp[(((size_t)n * s->C + g * Cg + c) * s->H + iy) * s->W + ix];
                                float wv = weight[(((size_t)o * Cg + c) * s->KH + i) * s->KW + j];
                                acc += (double)xv * wv;
                            }
                    out[(((size_t)n * s->OC + o) * s->OH + oy) * s->OW + ox] = (float)acc;
                }
        }
}

typedef struct conv_ctx {
    qat_tensor *x, *w, *b, *y;
    qat_conv2d_shape s;
    float *scratch;
} conv_ctx;

static void conv_backward(qat_tape *t, void *p) {
    conv_ctx *c = p;
    qat_conv2d_backward(c->x->grad, c->w->grad, c->b ? c->b->grad : NULL, c->scratch, c->y->grad,
                        c->x->data, c->w->data, &c->s);
}

qat_tensor *qat_conv2d(qat_tape *t, qat_tensor *x, qat_tensor *weight, qat_tensor *bias,
                       int stride, int pad, int groups) {
    if (!x || !weight) return NULL;
    char sx[64], sw[64];
    if (x->ndim != 4 || weight->ndim != 4)
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "conv2d: input %s and weight %s must both be 4-D "
                             "((N, C, H, W) and (OC, C/groups, KH, KW))",
                             qat_tensor_shape_str(x, sx, sizeof sx),
                             qat_tensor_shape_str(weight, sw, sizeof sw));
    qat_conv2d_shape s = {.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3],
                          .OC = weight->shape[0], .KH = weight->shape[2], .KW = weight->shape[3],
                          .stride = stride, .pad = pad, .groups = groups};
    if (groups < 1 || s.C % groups || s.OC % groups || weight->shape[1] != s.C / groups)
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "conv2d: input %s with groups=%d does not match weight %s "
                             "(need C and OC divisible by groups and weight dim 1 = C/groups)",
                             qat_tensor_shape_str(x, sx, sizeof sx), groups,
                             qat_tensor_shape_str(weight, sw, sizeof sw));
    if (!qat_conv2d_shape_init(&s))
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "conv2d: kernel %dx%d with stride %d, padding %d does not fit "
                             "input %s",
                             s.KH, s.KW, stride, pad, qat_tensor_shape_str(x, sx, sizeof sx));
    if (bias && (bias->ndim != 1 || bias->shape[0] != s.OC))
        return qat_tape_fail(t, QAT_STATUS_SHAPE, "conv2d: bias %s does not match %d outputs",
                             qat_tensor_shape_str(bias, sx, sizeof sx), s.OC);
    bool grad = qat_tape_needs_grad(t, x, weight, bias);
    qat_tensor *y = qat_tape_tensor(t, 4, (int[]){s.N, s.OC, s.OH, s.OW}, grad);
    if (!y) return NULL;
    size_t ns = qat_conv2d_scratch_floats(&s);
    float *scratch = ns ? qat_tape_alloc(t, ns * sizeof(float)) : NULL;
    if (ns && !scratch) return NULL;
    qat_conv2d_forward(y->data, scratch, x->data, weight->data, bias ? bias->data : NULL, &s);
    if (grad) {
        conv_ctx *c = qat_tape_record(t, conv_backward, sizeof *c, "conv2d");
        if (!c) return NULL;
        *c = (conv_ctx){x, weight, bias, y, s, scratch};
    }
    return y;
}

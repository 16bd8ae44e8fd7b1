#include "conv2d.h"

#include <cblas.h>
#include <string.h>

#include "autograd/parallel.h"

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

/* One input and one output channel per group (groups == C == OC): a direct loop beats a
 * GEMM with one row. */
static bool is_depthwise(const qat_conv2d_shape *s) {
    return s->groups == s->C && s->groups == s->OC;
}

/* Backward sums the weight gradient over images in QAT_CONV2D_CHUNKS fixed chunks of
 * consecutive images (partial sums added in chunk order), so the result depends on the
 * batch only, not on how many threads share the chunks. */
static size_t n_chunks(const qat_conv2d_shape *s) {
    return (size_t)QAT_MIN(s->N, QAT_CONV2D_CHUNKS);
}

static size_t col_floats(const qat_conv2d_shape *s) {
    if (is_pointwise(s) || is_depthwise(s)) return 0;
    return (size_t)(s->C / s->groups) * s->KH * s->KW * s->OH * s->OW;
}

static size_t weight_floats(const qat_conv2d_shape *s) {
    return (size_t)s->OC * (s->C / s->groups) * s->KH * s->KW;
}

size_t qat_conv2d_scratch_floats(const qat_conv2d_shape *s) {
    size_t cols = col_floats(s) * (size_t)qat_num_threads();
    size_t partials = is_depthwise(s) ? 0 : n_chunks(s) * (weight_floats(s) + (size_t)s->OC);
    /* Rounded up so the partial sums start on a cache line. */
    return ((cols + 15) & ~(size_t)15) + partials;
}

/* The valid output range [*lo, *hi) of a row of im2col: the ox whose input column
 * ox * stride - pad + j falls inside [0, W). */
static void valid_cols(int *lo, int *hi, int j, const qat_conv2d_shape *s) {
    int a = s->pad - j; /* ox * stride >= a */
    int l = a <= 0 ? 0 : (a + s->stride - 1) / s->stride;
    int b = s->W + s->pad - j; /* ox * stride < b */
    int h = b <= 0 ? 0 : (b + s->stride - 1) / s->stride;
    *lo = QAT_MIN(l, s->OW);
    *hi = QAT_MAX(*lo, QAT_MIN(h, s->OW));
}

/* dst[0..n) = src[0..n), inline: im2col copies rows of OW floats (14 in the reference
 * CNN's second conv), thousands per image, where a call to memcpy costs more than the
 * copy. im2col's attribute keeps gcc from turning the loops back into that call. */
static inline void copy_floats(float *restrict dst, const float *restrict src, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) dst[i + k] = src[i + k];
    for (; i < n; i++) dst[i] = src[i];
}

/* A "same" convolution: stride 1 and an output of the input's size (2 pad = KH - 1 =
 * KW - 1, the 3x3 pad 1 of the reference CNN). Row (c, i, j) of col is then plane c
 * shifted by d = (i - pad) W + (j - pad): row[p] = x[p + d] wherever the window stays in
 * the image. The oy of rows inside the image form one range [oy0, oy1) whose values are
 * one contiguous run of the plane, copied in one go; the run wraps from the end of one
 * line into the next where the window hangs over a side, and those columns (ox outside
 * [lo, hi)) are zeroed after the copy, as are the rows outside. The run's first and last
 * read stay inside the plane (lo >= pad - j, hi <= W + pad - j). */
static bool is_same(const qat_conv2d_shape *s) {
    return s->stride == 1 && s->OH == s->H && s->OW == s->W;
}

/* The rows oy of a kernel row i that fall inside the image: [*oy0, *oy1). */
/* Keeps gcc from turning im2col's row loops back into memcpy calls (copy_floats); clang
 * has no such option and makes no such call for these loops. */
#if defined(__GNUC__) && !defined(__clang__)
#define QAT_NO_MEMCPY_CALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define QAT_NO_MEMCPY_CALLS
#endif

static void valid_rows(int *oy0, int *oy1, int i, const qat_conv2d_shape *s) {
    *oy0 = QAT_MIN(s->OH, QAT_MAX(0, s->pad - i));
    *oy1 = QAT_MAX(*oy0, QAT_MIN(s->OH, s->H + s->pad - i));
}

QAT_HOT QAT_NO_MEMCPY_CALLS
static void im2col_same(float *col, const float *x, int Cg, const qat_conv2d_shape *s) {
    const int W = s->W, OHW = s->OH * s->OW;
    for (int c = 0; c < Cg; c++)
        for (int i = 0; i < s->KH; i++)
            for (int j = 0; j < s->KW; j++) {
                float *row = col + ((size_t)(c * s->KH + i) * s->KW + j) * OHW;
                const float *plane = x + (size_t)c * s->H * W;
                int lo, hi, oy0, oy1;
                valid_cols(&lo, &hi, j, s);
                valid_rows(&oy0, &oy1, i, s);
                const int d = (i - s->pad) * W + (j - s->pad);
                for (int p = 0; p < oy0 * W; p++) row[p] = 0.0f;
                if (oy1 > oy0) {
                    const int p0 = oy0 * W + lo, p1 = (oy1 - 1) * W + hi;
                    if (p1 > p0) copy_floats(row + p0, plane + p0 + d, p1 - p0);
                    for (int oy = oy0; oy < oy1; oy++) {
                        float *r = row + oy * W;
                        for (int ox = 0; ox < lo; ox++) r[ox] = 0.0f;
                        for (int ox = hi; ox < W; ox++) r[ox] = 0.0f;
                    }
                }
                for (int p = oy1 * W; p < OHW; p++) row[p] = 0.0f;
            }
}

/* col2im of a "same" convolution (see im2col_same): the columns that im2col zeroes are
 * zeroed in col (scratch, dead after this) so that each row adds to dx as one run;
 * the added zeros change no sum. */
QAT_HOT static void col2im_same(float *dx, float *col, int Cg, const qat_conv2d_shape *s) {
    const int W = s->W, OHW = s->OH * s->OW;
    for (int c = 0; c < Cg; c++)
        for (int i = 0; i < s->KH; i++)
            for (int j = 0; j < s->KW; j++) {
                float *row = col + ((size_t)(c * s->KH + i) * s->KW + j) * OHW;
                float *plane = dx + (size_t)c * s->H * W;
                int lo, hi, oy0, oy1;
                valid_cols(&lo, &hi, j, s);
                valid_rows(&oy0, &oy1, i, s);
                if (oy1 <= oy0) continue;
                const int d = (i - s->pad) * W + (j - s->pad);
                const int p0 = oy0 * W + lo, p1 = (oy1 - 1) * W + hi;
                for (int oy = oy0; oy < oy1; oy++) {
                    float *r = row + oy * W;
                    for (int ox = 0; ox < lo; ox++) r[ox] = 0.0f;
                    for (int ox = hi; ox < W; ox++) r[ox] = 0.0f;
                }
                float *dst = plane + d;
                for (int p = p0; p < p1; p++) dst[p] += row[p];
            }
}

/* x: the Cg channels of one group of one image, (Cg, H, W).
 * col (Cg*KH*KW, OH*OW): row (c, i, j) holds x[c][oy*stride - pad + i][ox*stride - pad + j]
 * for every output position (oy, ox), zero where that falls in the padding. */
QAT_HOT QAT_NO_MEMCPY_CALLS
static void im2col(float *col, const float *x, int Cg, const qat_conv2d_shape *s) {
    const int OHW = s->OH * s->OW;
    for (int c = 0; c < Cg; c++)
        for (int i = 0; i < s->KH; i++)
            for (int j = 0; j < s->KW; j++) {
                float *row = col + ((size_t)(c * s->KH + i) * s->KW + j) * OHW;
                const float *plane = x + (size_t)c * s->H * s->W;
                int lo, hi;
                valid_cols(&lo, &hi, j, s);
                for (int oy = 0; oy < s->OH; oy++) {
                    int iy = oy * s->stride - s->pad + i;
                    float *r = row + oy * s->OW;
                    if (iy < 0 || iy >= s->H) {
                        for (int ox = 0; ox < s->OW; ox++) r[ox] = 0.0f;
                        continue;
                    }
                    const float *line = plane + (size_t)iy * s->W - s->pad + j;
                    for (int ox = 0; ox < lo; ox++) r[ox] = 0.0f;
                    if (s->stride == 1)
                        copy_floats(r + lo, line + lo, hi - lo);
                    else
                        for (int ox = lo; ox < hi; ox++) r[ox] = line[ox * s->stride];
                    for (int ox = hi; ox < s->OW; ox++) r[ox] = 0.0f;
                }
            }
}

/* The adjoint of im2col: dx[c][iy][ix] += every col entry that was copied from there. */
QAT_HOT static void col2im(float *dx, const float *col, int Cg, const qat_conv2d_shape *s) {
    const int OHW = s->OH * s->OW;
    for (int c = 0; c < Cg; c++)
        for (int i = 0; i < s->KH; i++)
            for (int j = 0; j < s->KW; j++) {
                const float *row = col + ((size_t)(c * s->KH + i) * s->KW + j) * OHW;
                float *plane = dx + (size_t)c * s->H * s->W;
                int lo, hi;
                valid_cols(&lo, &hi, j, s);
                for (int oy = 0; oy < s->OH; oy++) {
                    int iy = oy * s->stride - s->pad + i;
                    if (iy < 0 || iy >= s->H) continue;
                    float *line = plane + (size_t)iy * s->W - s->pad + j;
                    const float *r = row + oy * s->OW;
                    if (s->stride == 1)
                        for (int ox = lo; ox < hi; ox++) line[ox] += r[ox];
                    else
                        for (int ox = lo; ox < hi; ox++) line[ox * s->stride] += r[ox];
                }
            }
}

/* sum of x[0..n) over 8 float lanes (element i to lane i mod 8, lanes added pairwise):
 * a single accumulator is a chain of dependent additions; 8 of them vectorise. The order
 * is fixed, so the result is too. */
QAT_HOT static float lanes_sum(const float *x, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += x[i + k];
    for (; i < n; i++) acc[i % 8] += x[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* ---- depthwise: direct loops, one plane at a time ---- */

/* x, y: one channel's planes (H, W) and (OH, OW); w: its KH x KW kernel. */
QAT_HOT static void dw_forward_plane(float *y, const float *x, const float *w, float bias,
                             const qat_conv2d_shape *s) {
    const int OHW = s->OH * s->OW;
    for (int p = 0; p < OHW; p++) y[p] = 0.0f;
    for (int i = 0; i < s->KH; i++)
        for (int j = 0; j < s->KW; j++) {
            const float wv = w[i * s->KW + j];
            int lo, hi;
            valid_cols(&lo, &hi, j, s);
            for (int oy = 0; oy < s->OH; oy++) {
                int iy = oy * s->stride - s->pad + i;
                if (iy < 0 || iy >= s->H) continue;
                /* row[d + ox * stride], d = j - pad: the pointer stays inside the plane
                 * (x + iy W - pad + j would point before it for iy = 0, j < pad). */
                const float *row = x + (size_t)iy * s->W;
                const int d = j - s->pad;
                float *r = y + oy * s->OW;
                if (s->stride == 1)
                    for (int ox = lo; ox < hi; ox++) r[ox] += wv * row[d + ox];
                else
                    for (int ox = lo; ox < hi; ox++) r[ox] += wv * row[d + ox * s->stride];
            }
        }
    for (int p = 0; p < OHW; p++) y[p] += bias;
}

/* Accumulates one plane's contribution: dw (KH*KW) += dy . x-window, dx += w * dy. */
QAT_HOT static void dw_backward_plane(float *dx, float *dw, const float *dy, const float *x,
                              const float *w, const qat_conv2d_shape *s) {
    for (int i = 0; i < s->KH; i++)
        for (int j = 0; j < s->KW; j++) {
            const float wv = w[i * s->KW + j];
            /* dw's sum over the plane in 8 lanes by output column (see lanes_sum): column
             * lo + 8 b + k of each row goes to lane k. The last, partial block of a row adds
             * 0 to its missing lanes (the index is clamped so nothing is read out of
             * bounds), which keeps the lanes in registers. */
            float acc[8] = {0};
            int lo, hi;
            valid_cols(&lo, &hi, j, s);
            for (int oy = 0; oy < s->OH; oy++) {
                int iy = oy * s->stride - s->pad + i;
                if (iy < 0 || iy >= s->H) continue;
                /* row[d + ox * st], d = j - pad, as in dw_forward_plane */
                const size_t off = (size_t)iy * s->W;
                const int d = j - s->pad;
                const float *r = dy + oy * s->OW;
                const float *row = x + off;
                const int st = s->stride;
                if (dw) {
                    int ox = lo;
                    for (; ox + 8 <= hi; ox += 8)
                        for (int k = 0; k < 8; k++) acc[k] += r[ox + k] * row[d + (ox + k) * st];
                    if (ox < hi) {
                        const int rem = hi - ox;
                        for (int k = 0; k < 8; k++) {
                            const int o = k < rem ? ox + k : ox;
                            const float v = r[o] * row[d + o * st];
                            acc[k] += k < rem ? v : 0.0f;
                        }
                    }
                }
                if (dx) {
                    float *drow = dx + off;
                    for (int ox = lo; ox < hi; ox++) drow[d + ox * st] += wv * r[ox];
                }
            }
            if (dw)
                dw[i * s->KW + j] +=
                    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        }
}

typedef struct conv_job {
    float *out, *dinp, *dweight, *dbias, *scratch;
    const float *inp, *weight, *bias, *dout;
    const qat_conv2d_shape *s;
} conv_job;

/* Forward of images [n0, n1). */
static void forward_images(void *p, size_t n0, size_t n1) {
    const conv_job *j = p;
    const qat_conv2d_shape *s = j->s;
    const int G = s->groups, Cg = s->C / G, OCg = s->OC / G;
    const int K = Cg * s->KH * s->KW, OHW = s->OH * s->OW;
    /* depthwise and pointwise convolutions have no scratch (NULL): no offset from it */
    float *col = j->scratch ? j->scratch + col_floats(s) * (size_t)qat_parallel_thread_id() : NULL;
    for (size_t n = n0; n < n1; n++) {
        const float *x = j->inp + n * s->C * s->H * s->W;
        float *y = j->out + n * s->OC * OHW;
        if (is_depthwise(s)) {
            for (int c = 0; c < s->C; c++)
                dw_forward_plane(y + (size_t)c * OHW, x + (size_t)c * s->H * s->W,
                                 j->weight + (size_t)c * s->KH * s->KW,
                                 j->bias ? j->bias[c] : 0.0f, s);
            continue;
        }
        for (int g = 0; g < G; g++) {
            const float *xg = x + (size_t)g * Cg * s->H * s->W;
            const float *cm = xg;
            if (!is_pointwise(s)) {
                if (is_same(s)) im2col_same(col, xg, Cg, s);
                else im2col(col, xg, Cg, s);
                cm = col;
            }
            /* y_g (OCg, OHW) = W_g (OCg, K) * col (K, OHW) + y_g, y_g holding the bias:
             * the bias added by the GEMM, not by another pass over y afterwards (and
             * beta 0 would be a pass of its own too: OpenBLAS zeroes C first). */
            float *yg = y + (size_t)g * OCg * OHW;
            float beta = 0.0f;
            if (j->bias) {
                for (int o = 0; o < OCg; o++) {
                    float *yo = yg + (size_t)o * OHW, bo = j->bias[g * OCg + o];
                    for (int i = 0; i < OHW; i++) yo[i] = bo;
                }
                beta = 1.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OCg, OHW, K, 1.0f,
                        j->weight + (size_t)g * OCg * K, K, cm, OHW, beta, yg, OHW);
        }
    }
}

/* inp (N, C, H, W), weight (OC, C/g, KH, KW), bias (OC) or NULL, out (N, OC, OH, OW).
 * Images are independent: the threads share them out. */
void qat_conv2d_forward(float *out, float *scratch, const float *inp, const float *weight,
                        const float *bias, const qat_conv2d_shape *s) {
    conv_job j = {.out = out, .scratch = scratch, .inp = inp, .weight = weight, .bias = bias, .s = s};
    qat_parallel_for((size_t)s->N, 1, forward_images, &j);
}

/* Depthwise backward of channels [c0, c1): every image's plane of channel c, in image
 * order, so each weight's sum has one fixed order. */
static void dw_backward_channels(void *p, size_t c0, size_t c1) {
    const conv_job *j = p;
    const qat_conv2d_shape *s = j->s;
    const size_t HW = (size_t)s->H * s->W, OHW = (size_t)s->OH * s->OW, KK = (size_t)s->KH * s->KW;
    for (size_t c = c0; c < c1; c++) {
        float db = 0.0f;
        for (int n = 0; n < s->N; n++) {
            const size_t plane = (size_t)n * s->C + c;
            const float *dy = j->dout + plane * OHW;
            if (j->dbias) db += lanes_sum(dy, (int)OHW);
            if (j->dweight || j->dinp)
                dw_backward_plane(j->dinp ? j->dinp + plane * HW : NULL,
                                  j->dweight ? j->dweight + c * KK : NULL, dy,
                                  j->inp + plane * HW, j->weight + c * KK, s);
        }
        if (j->dbias) j->dbias[c] += db;
    }
}

/* General backward of chunk `ch`: its images' weight and bias gradients into the chunk's
 * partial sums (first image with beta 0), their input gradients straight into dinp. */
static void backward_chunk(void *p, size_t ch) {
    const conv_job *j = p;
    const qat_conv2d_shape *s = j->s;
    const int G = s->groups, Cg = s->C / G, OCg = s->OC / G;
    const int K = Cg * s->KH * s->KW, OHW = s->OH * s->OW;
    const bool pw = is_pointwise(s);
    const size_t nch = n_chunks(s), wn = weight_floats(s);
    const size_t n0 = (size_t)s->N * ch / nch, n1 = (size_t)s->N * (ch + 1) / nch;
    float *col = j->scratch + col_floats(s) * (size_t)qat_parallel_thread_id();
    size_t cols_all = (col_floats(s) * (size_t)qat_num_threads() + 15) & ~(size_t)15;
    float *pdw = j->scratch + cols_all + ch * (wn + (size_t)s->OC), *pdb = pdw + wn;
    for (size_t n = n0; n < n1; n++) {
        const float *x = j->inp + n * s->C * s->H * s->W;
        const float *dy = j->dout + n * s->OC * OHW;
        if (j->dbias)
            for (int o = 0; o < s->OC; o++) {
                float acc = lanes_sum(dy + (size_t)o * OHW, OHW);
                pdb[o] = n == n0 ? acc : pdb[o] + acc;
            }
        for (int g = 0; g < G; g++) {
            const float *xg = x + (size_t)g * Cg * s->H * s->W;
            const float *dyg = dy + (size_t)g * OCg * OHW;
            const float *wg = j->weight + (size_t)g * OCg * K;
            if (j->dweight) {
                const float *cm = xg;
                if (!pw) {
                    if (is_same(s)) im2col_same(col, xg, Cg, s);
                    else im2col(col, xg, Cg, s);
                    cm = col;
                }
                /* dW_g (OCg, K) += dy_g (OCg, OHW) * col^T (OHW, K) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OCg, K, OHW, 1.0f, dyg, OHW,
                            cm, OHW, n == n0 ? 0.0f : 1.0f, pdw + (size_t)g * OCg * K, K);
            }
            if (j->dinp) {
                float *dxg = j->dinp + (n * s->C + (size_t)g * Cg) * s->H * s->W;
                /* dcol (K, OHW) = W_g^T (K, OCg) * dy_g (OCg, OHW); pointwise: dcol is dx. */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, OHW, OCg, 1.0f, wg, K, dyg,
                            OHW, pw ? 1.0f : 0.0f, pw ? dxg : col, OHW);
                if (pw) continue;
                if (is_same(s)) col2im_same(dxg, col, Cg, s);
                else col2im(dxg, col, Cg, s);
            }
        }
    }
}

/* dweight, dbias += the chunks' partial sums, in chunk order, element by element. */
QAT_HOT static void add_partials(void *p, size_t i0, size_t i1) {
    const conv_job *j = p;
    const qat_conv2d_shape *s = j->s;
    const size_t nch = n_chunks(s), wn = weight_floats(s), stride = wn + (size_t)s->OC;
    size_t cols_all = (col_floats(s) * (size_t)qat_num_threads() + 15) & ~(size_t)15;
    const float *part = j->scratch + cols_all;
    for (size_t i = i0; i < i1; i++) {
        float *dst = i < wn ? (j->dweight ? j->dweight + i : NULL) : (j->dbias ? j->dbias + (i - wn) : NULL);
        if (!dst) continue;
        float acc = part[i];
        for (size_t c = 1; c < nch; c++) acc += part[c * stride + i];
        *dst += acc;
    }
}

void qat_conv2d_backward(float *dinp, float *dweight, float *dbias, float *scratch,
                         const float *dout, const float *inp, const float *weight,
                         const qat_conv2d_shape *s) {
    conv_job j = {.dinp = dinp, .dweight = dweight, .dbias = dbias, .scratch = scratch,
                  .inp = inp, .weight = weight, .dout = dout, .s = s};
    if (is_depthwise(s)) {
        qat_parallel_for((size_t)s->C, 1, dw_backward_channels, &j);
        return;
    }
    qat_parallel_tasks(n_chunks(s), backward_chunk, &j);
    if (dweight || dbias)
        qat_parallel_for(weight_floats(s) + (size_t)s->OC, 4096, add_partials, &j);
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

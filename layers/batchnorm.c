#include "batchnorm.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/comm.h"
#include "autograd/parallel.h"
#include "pool.h"

/* Layout: inp/out (N, C, HW); channel c of image n starts at (n C + c) HW.
 *
 * Every channel is owned by one thread (qat_parallel_for over channels), and its sums
 * run in a fixed order, so results do not depend on the thread count. Sums are in
 * double (sums of 10^5 floats drift otherwise), over LANES independent accumulators
 * (element i of a segment goes to lane i mod LANES, lanes added pairwise at the end):
 * one accumulator is a chain of dependent additions, 4 cycles each; LANES of them
 * vectorise.
 *
 * The optional pre-affine x' = x * a[c] + b[c] (a, b NULL: x' = x) is batch norm folding's
 * unscale step (quant/bnfold.h), computed on the fly so x' is never stored. */
#define LANES 8

typedef struct bn_job {
    float *out, *mean, *rstd, *running_mean, *running_var; /* forward: written */
    const float *saved_mean, *saved_rstd;                  /* backward: the forward's */
    float *dinp, *dgamma, *dbeta, *dpre_a, *dpre_b;
    const float *inp, *dout, *gamma, *beta, *pre_a, *pre_b;
    const float *rmean, *rvar; /* eval */
    float *sums;               /* synchronised (comm.h): per-channel sums across processes */
    double M_all;              /* synchronised: the values per channel over all processes */
    int N, C, HW;
    float momentum, eps;
    bool overwrite; /* backward: dinp = dx (dinp may equal dout) instead of += */
} bn_job;

static double lanes_sum(const double *acc) {
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* sum over the channel of x' (pass 1) */
QAT_HOT static double channel_sum(const bn_job *j, int c, float a, float b, bool pre) {
    double acc[LANES] = {0};
    for (int n = 0; n < j->N; n++) {
        const float *x = j->inp + ((size_t)n * j->C + c) * j->HW;
        int i = 0;
        for (; i + LANES <= j->HW; i += LANES)
            for (int k = 0; k < LANES; k++) acc[k] += pre ? x[i + k] * a + b : x[i + k];
        for (; i < j->HW; i++) acc[i % LANES] += pre ? x[i] * a + b : x[i];
    }
    return lanes_sum(acc);
}

/* sum over the channel of (x' - mu)^2 (pass 2) */
QAT_HOT static double channel_sq(const bn_job *j, int c, float a, float b, bool pre, double mu) {
    double acc[LANES] = {0};
    for (int n = 0; n < j->N; n++) {
        const float *x = j->inp + ((size_t)n * j->C + c) * j->HW;
        int i = 0;
        for (; i + LANES <= j->HW; i += LANES)
            for (int k = 0; k < LANES; k++) {
                double d = (double)(pre ? x[i + k] * a + b : x[i + k]) - mu;
                acc[k] += d * d;
            }
        for (; i < j->HW; i++) {
            double d = (double)(pre ? x[i] * a + b : x[i]) - mu;
            acc[i % LANES] += d * d;
        }
    }
    return lanes_sum(acc);
}

QAT_HOT static void forward_train_channels(void *p, size_t c0, size_t c1) {
    const bn_job *j = p;
    const size_t M = (size_t)j->N * j->HW;
    const bool pre = j->pre_a != NULL;
    for (size_t c = c0; c < c1; c++) {
        const float a = pre ? j->pre_a[c] : 1.0f, b = pre ? j->pre_b[c] : 0.0f;
        double mu = channel_sum(j, (int)c, a, b, pre) / (double)M;
        double sq = channel_sq(j, (int)c, a, b, pre, mu);
        double var = sq / (double)M;
        float rs = (float)(1.0 / sqrt(var + j->eps));
        float m = (float)mu;
        j->mean[c] = m;
        j->rstd[c] = rs;
        float g = j->gamma[c] * rs, be = j->beta[c];
        for (int n = 0; n < j->N; n++) {
            const float *x = j->inp + ((size_t)n * j->C + c) * j->HW;
            float *y = j->out + ((size_t)n * j->C + c) * j->HW;
            if (pre)
                for (int i = 0; i < j->HW; i++) y[i] = ((x[i] * a + b) - m) * g + be;
            else
                for (int i = 0; i < j->HW; i++) y[i] = (x[i] - m) * g + be;
        }
        if (j->running_mean && j->running_var) {
            double unbiased = M > 1 ? sq / (double)(M - 1) : var;
            j->running_mean[c] = (1.0f - j->momentum) * j->running_mean[c] + j->momentum * m;
            j->running_var[c] =
                (1.0f - j->momentum) * j->running_var[c] + j->momentum * (float)unbiased;
        }
    }
}

/* ---- synchronised batch norm (autograd/comm.h): the statistics of the whole batch ----
 * The same two passes, each followed by a sum across the processes: sums[c] first holds
 * the channel's sum of x', then its sum of (x' - mu)^2. */
QAT_HOT static void sync_sum_channels(void *p, size_t c0, size_t c1) {
    const bn_job *j = p;
    const bool pre = j->pre_a != NULL;
    for (size_t c = c0; c < c1; c++)
        j->sums[c] = (float)channel_sum(j, (int)c, pre ? j->pre_a[c] : 1.0f, pre ? j->pre_b[c] : 0.0f, pre);
}

QAT_HOT static void sync_sq_channels(void *p, size_t c0, size_t c1) {
    const bn_job *j = p;
    const bool pre = j->pre_a != NULL;
    for (size_t c = c0; c < c1; c++)
        j->sums[c] = (float)channel_sq(j, (int)c, pre ? j->pre_a[c] : 1.0f, pre ? j->pre_b[c] : 0.0f, pre,
                                       (double)j->mean[c]);
}

QAT_HOT static void sync_normalize_channels(void *p, size_t c0, size_t c1) {
    const bn_job *j = p;
    const bool pre = j->pre_a != NULL;
    for (size_t c = c0; c < c1; c++) {
        const float a = pre ? j->pre_a[c] : 1.0f, b = pre ? j->pre_b[c] : 0.0f;
        const double var = (double)j->sums[c] / j->M_all;
        const float rs = (float)(1.0 / sqrt(var + j->eps)), m = j->mean[c];
        j->rstd[c] = rs;
        const float g = j->gamma[c] * rs, be = j->beta[c];
        for (int n = 0; n < j->N; n++) {
            const float *x = j->inp + ((size_t)n * j->C + c) * j->HW;
            float *y = j->out + ((size_t)n * j->C + c) * j->HW;
            for (int i = 0; i < j->HW; i++) y[i] = ((pre ? x[i] * a + b : x[i]) - m) * g + be;
        }
        if (j->running_mean && j->running_var) {
            double unbiased = j->M_all > 1 ? (double)j->sums[c] / (j->M_all - 1) : var;
            j->running_mean[c] = (1.0f - j->momentum) * j->running_mean[c] + j->momentum * m;
            j->running_var[c] = (1.0f - j->momentum) * j->running_var[c] + j->momentum * (float)unbiased;
        }
    }
}

/* Channels per part: about 32K values per part at least. */
static size_t channel_grain(int N, int HW) {
    size_t per = (size_t)N * HW;
    return per >= 32768 ? 1 : (32768 + per - 1) / per;
}

void qat_batchnorm_forward_train_pre(float *out, float *mean, float *rstd, float *running_mean,
                                     float *running_var, const float *inp, const float *pre_a,
                                     const float *pre_b, const float *gamma, const float *beta,
                                     int N, int C, int HW, float momentum, float eps) {
    QAT_ASSERT((pre_a == NULL) == (pre_b == NULL));
    bn_job j = {.out = out, .mean = mean, .rstd = rstd, .running_mean = running_mean,
                .running_var = running_var, .inp = inp, .pre_a = pre_a, .pre_b = pre_b,
                .gamma = gamma, .beta = beta, .N = N, .C = C, .HW = HW, .momentum = momentum,
                .eps = eps};
    if (!qat_comm_sync_bn()) {
        qat_parallel_for((size_t)C, channel_grain(N, HW), forward_train_channels, &j);
        return;
    }
    /* synchronised: sums across the processes between the passes (a failed sum leaves
     * NaN, which the trainer's checks stop at) */
    float *sums = malloc(((size_t)C + 1) * sizeof(float));
    QAT_ASSERT(sums != NULL);
    j.sums = sums;
    qat_parallel_for((size_t)C, channel_grain(N, HW), sync_sum_channels, &j);
    sums[C] = (float)((size_t)N * HW);
    if (qat_comm_sum(sums, (size_t)C + 1))
        for (int c = 0; c <= C; c++) sums[c] = NAN;
    j.M_all = sums[C];
    for (int c = 0; c < C; c++) mean[c] = (float)((double)sums[c] / j.M_all);
    qat_parallel_for((size_t)C, channel_grain(N, HW), sync_sq_channels, &j);
    if (qat_comm_sum(sums, (size_t)C))
        for (int c = 0; c < C; c++) sums[c] = NAN;
    qat_parallel_for((size_t)C, channel_grain(N, HW), sync_normalize_channels, &j);
    free(sums);
}

void qat_batchnorm_forward_train(float *out, float *mean, float *rstd, float *running_mean,
                                 float *running_var, const float *inp, const float *gamma,
                                 const float *beta, int N, int C, int HW, float momentum,
                                 float eps) {
    qat_batchnorm_forward_train_pre(out, mean, rstd, running_mean, running_var, inp, NULL, NULL,
                                    gamma, beta, N, C, HW, momentum, eps);
}

/* Backward, pass 1 of a channel: sum dy and sum dy xhat; dgamma and dbeta take them. */
QAT_HOT static void backward_sums(const bn_job *j, size_t c, double *s_dy_out, double *s_dyx_out) {
    const bool pre = j->pre_a != NULL;
    const float a = pre ? j->pre_a[c] : 1.0f, b = pre ? j->pre_b[c] : 0.0f;
    const float m = j->saved_mean[c], rs = j->saved_rstd[c];
    double sdy[LANES] = {0}, sdyx[LANES] = {0};
    for (int n = 0; n < j->N; n++) {
        const float *x = j->inp + ((size_t)n * j->C + c) * j->HW;
        const float *dy = j->dout + ((size_t)n * j->C + c) * j->HW;
        int i = 0;
        for (; i + LANES <= j->HW; i += LANES)
            for (int k = 0; k < LANES; k++) {
                float xv = pre ? x[i + k] * a + b : x[i + k];
                sdy[k] += dy[i + k];
                sdyx[k] += (double)dy[i + k] * ((xv - m) * rs);
            }
        for (; i < j->HW; i++) {
            float xv = pre ? x[i] * a + b : x[i];
            sdy[i % LANES] += dy[i];
            sdyx[i % LANES] += (double)dy[i] * ((xv - m) * rs);
        }
    }
    const double s_dy = lanes_sum(sdy), s_dyx = lanes_sum(sdyx);
    if (j->dgamma) j->dgamma[c] += (float)s_dyx;
    if (j->dbeta) j->dbeta[c] += (float)s_dy;
    *s_dy_out = s_dy;
    *s_dyx_out = s_dyx;
}

/* Backward, pass 2 of a channel, from the channel's means of dy and dy xhat. */
QAT_HOT static void backward_apply(const bn_job *j, size_t c, double mean_dy, double mean_dyx) {
    const bool pre = j->pre_a != NULL;
    const float a = pre ? j->pre_a[c] : 1.0f, b = pre ? j->pre_b[c] : 0.0f;
    const float m = j->saved_mean[c], rs = j->saved_rstd[c];
    /* dxhat = dy gamma; dx' = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat));
     * with the pre-affine, dx = dx' a, da += sum dx' x, db += sum dx'. */
    const float g = j->gamma[c];
    const float mdy = (float)mean_dy * g, mdyx = (float)mean_dyx * g;
    double sa[LANES] = {0}, sb[LANES] = {0};
    for (int n = 0; n < j->N; n++) {
        const float *x = j->inp + ((size_t)n * j->C + c) * j->HW;
        const float *dy = j->dout + ((size_t)n * j->C + c) * j->HW;
        float *dx = j->dinp ? j->dinp + ((size_t)n * j->C + c) * j->HW : NULL;
        if (!pre) {
            if (j->overwrite)
                for (int i = 0; i < j->HW; i++) {
                    float xhat = (x[i] - m) * rs;
                    dx[i] = rs * (dy[i] * g - mdy - xhat * mdyx);
                }
            else
                for (int i = 0; i < j->HW; i++) {
                    float xhat = (x[i] - m) * rs;
                    dx[i] += rs * (dy[i] * g - mdy - xhat * mdyx);
                }
            continue;
        }
        float dxp[LANES]; /* dx' of one block of LANES values */
        for (int i0 = 0; i0 < j->HW; i0 += LANES) {
            const int len = QAT_MIN(LANES, j->HW - i0);
            for (int k = 0; k < len; k++) {
                float xhat = ((x[i0 + k] * a + b) - m) * rs;
                dxp[k] = rs * (dy[i0 + k] * g - mdy - xhat * mdyx);
                sa[k] += (double)dxp[k] * x[i0 + k];
                sb[k] += dxp[k];
            }
            if (!dx) continue;
            if (j->overwrite)
                for (int k = 0; k < len; k++) dx[i0 + k] = dxp[k] * a;
            else
                for (int k = 0; k < len; k++) dx[i0 + k] += dxp[k] * a;
        }
    }
    if (pre && j->dpre_a) j->dpre_a[c] = (float)lanes_sum(sa);
    if (pre && j->dpre_b) j->dpre_b[c] = (float)lanes_sum(sb);
}

QAT_HOT static void backward_train_channels(void *p, size_t c0, size_t c1) {
    const bn_job *j = p;
    const double M = (double)j->N * j->HW;
    for (size_t c = c0; c < c1; c++) {
        double s_dy, s_dyx;
        backward_sums(j, c, &s_dy, &s_dyx);
        if (!j->dinp && !j->dpre_a && !j->dpre_b) continue;
        backward_apply(j, c, s_dy / M, s_dyx / M);
    }
}

/* Synchronised: the sums of every process, each weighted by its share of the batch (the
 * trainer scales every gradient by that share afterwards, so a process's own terms are
 * divided by it here: the whole batch's gradient for uneven shares too). */
QAT_HOT static void sync_backward_sums(void *p, size_t c0, size_t c1) {
    const bn_job *j = p;
    const float w = qat_comm_share();
    for (size_t c = c0; c < c1; c++) {
        double s_dy, s_dyx;
        backward_sums(j, c, &s_dy, &s_dyx);
        j->sums[2 * c] = (float)(s_dy * w);
        j->sums[2 * c + 1] = (float)(s_dyx * w);
    }
}

QAT_HOT static void sync_backward_apply(void *p, size_t c0, size_t c1) {
    const bn_job *j = p;
    const double w = qat_comm_share();
    for (size_t c = c0; c < c1; c++)
        backward_apply(j, c, (double)j->sums[2 * c] / w / j->M_all, (double)j->sums[2 * c + 1] / w / j->M_all);
}

void qat_batchnorm_backward_train_pre(float *dinp, float *dpre_a, float *dpre_b, float *dgamma,
                                      float *dbeta, const float *dout, const float *inp,
                                      const float *pre_a, const float *pre_b,
                                      const float *gamma, const float *mean, const float *rstd,
                                      int N, int C, int HW, bool overwrite) {
    QAT_ASSERT((pre_a == NULL) == (pre_b == NULL));
    QAT_ASSERT(overwrite || dinp != dout || dinp == NULL);
    bn_job j = {.dinp = dinp, .dgamma = dgamma, .dbeta = dbeta, .dpre_a = dpre_a,
                .dpre_b = dpre_b, .dout = dout, .inp = inp, .pre_a = pre_a, .pre_b = pre_b,
                .gamma = gamma, .saved_mean = mean, .saved_rstd = rstd, .N = N, .C = C,
                .HW = HW, .overwrite = overwrite};
    if (!qat_comm_sync_bn()) {
        qat_parallel_for((size_t)C, channel_grain(N, HW), backward_train_channels, &j);
        return;
    }
    float *sums = malloc((2 * (size_t)C + 1) * sizeof(float));
    QAT_ASSERT(sums != NULL);
    j.sums = sums;
    qat_parallel_for((size_t)C, channel_grain(N, HW), sync_backward_sums, &j);
    sums[2 * C] = (float)((size_t)N * HW);
    if (qat_comm_sum(sums, 2 * (size_t)C + 1))
        for (int c = 0; c <= 2 * C; c++) sums[c] = NAN;
    j.M_all = sums[2 * C];
    if (dinp || dpre_a || dpre_b) qat_parallel_for((size_t)C, channel_grain(N, HW), sync_backward_apply, &j);
    free(sums);
}

void qat_batchnorm_backward_train(float *dinp, float *dgamma, float *dbeta, const float *dout,
                                  const float *inp, const float *gamma, const float *mean,
                                  const float *rstd, int N, int C, int HW) {
    qat_batchnorm_backward_train_pre(dinp, NULL, NULL, dgamma, dbeta, dout, inp, NULL, NULL, gamma,
                                     mean, rstd, N, C, HW, false);
}

QAT_HOT static void forward_eval_channels(void *p, size_t c0, size_t c1) {
    const bn_job *j = p;
    for (size_t c = c0; c < c1; c++) {
        float rs = 1.0f / sqrtf(j->rvar[c] + j->eps);
        float g = j->gamma[c] * rs, m = j->rmean[c], b = j->beta[c];
        for (int n = 0; n < j->N; n++) {
            const float *x = j->inp + ((size_t)n * j->C + c) * j->HW;
            float *y = j->out + ((size_t)n * j->C + c) * j->HW;
            for (int i = 0; i < j->HW; i++) y[i] = (x[i] - m) * g + b;
        }
    }
}

void qat_batchnorm_forward_eval(float *out, const float *inp, const float *gamma,
                                const float *beta, const float *running_mean,
                                const float *running_var, int N, int C, int HW, float eps) {
    bn_job j = {.out = out, .inp = inp, .gamma = gamma, .beta = beta, .rmean = running_mean,
                .rvar = running_var, .N = N, .C = C, .HW = HW, .eps = eps};
    qat_parallel_for((size_t)C, channel_grain(N, HW), forward_eval_channels, &j);
}

QAT_HOT static void backward_eval_channels(void *p, size_t c0, size_t c1) {
    const bn_job *j = p;
    for (size_t c = c0; c < c1; c++) {
        float rs = 1.0f / sqrtf(j->rvar[c] + j->eps);
        float m = j->rmean[c], g = j->gamma[c] * rs;
        double sdy[LANES] = {0}, sdyx[LANES] = {0};
        for (int n = 0; n < j->N; n++) {
            const float *x = j->inp + ((size_t)n * j->C + c) * j->HW;
            const float *dy = j->dout + ((size_t)n * j->C + c) * j->HW;
            float *dx = j->dinp ? j->dinp + ((size_t)n * j->C + c) * j->HW : NULL;
            for (int i = 0; i < j->HW; i++) {
                sdy[i % LANES] += dy[i];
                sdyx[i % LANES] += (double)dy[i] * ((x[i] - m) * rs);
                if (dx) dx[i] = j->overwrite ? dy[i] * g : dx[i] + dy[i] * g;
            }
        }
        if (j->dgamma) j->dgamma[c] += (float)lanes_sum(sdyx);
        if (j->dbeta) j->dbeta[c] += (float)lanes_sum(sdy);
    }
}

static void backward_eval(float *dinp, float *dgamma, float *dbeta, const float *dout,
                          const float *inp, const float *gamma, const float *running_mean,
                          const float *running_var, int N, int C, int HW, float eps,
                          bool overwrite) {
    bn_job j = {.dinp = dinp, .dgamma = dgamma, .dbeta = dbeta, .dout = dout, .inp = inp,
                .gamma = gamma, .rmean = running_mean, .rvar = running_var, .N = N, .C = C,
                .HW = HW, .eps = eps, .overwrite = overwrite};
    qat_parallel_for((size_t)C, channel_grain(N, HW), backward_eval_channels, &j);
}

void qat_batchnorm_backward_eval(float *dinp, float *dgamma, float *dbeta, const float *dout,
                                 const float *inp, const float *gamma,
                                 const float *running_mean, const float *running_var, int N,
                                 int C, int HW, float eps) {
    backward_eval(dinp, dgamma, dbeta, dout, inp, gamma, running_mean, running_var, N, C, HW, eps,
                  false);
}

typedef struct bn_ctx {
    qat_tensor *x, *gamma, *beta, *y;
    float *mean, *rstd;                       /* training: batch statistics */
    const float *running_mean, *running_var;  /* eval */
    float eps;
    int N, C, HW;
    bool training;
    bool shared; /* y->grad is x->grad: backward turns dy into dx in place */
} bn_ctx;

static void bn_backward(qat_tape *t, void *p) {
    bn_ctx *c = p;
    float *dg = c->gamma->grad, *db = c->beta->grad;
    if (c->training)
        qat_batchnorm_backward_train_pre(c->x->grad, NULL, NULL, dg, db, c->y->grad, c->x->data,
                                         NULL, NULL, c->gamma->data, c->mean, c->rstd, c->N, c->C,
                                         c->HW, c->shared);
    else
        backward_eval(c->x->grad, dg, db, c->y->grad, c->x->data, c->gamma->data,
                      c->running_mean, c->running_var, c->N, c->C, c->HW, c->eps, c->shared);
}

/* gamma and beta have C values and the running statistics exist; else the tape's error. */
static bool params_fit(qat_tape *t, const qat_tensor *x, int C, const qat_tensor *gamma, const qat_tensor *beta,
                       const float *running_mean, const float *running_var) {
    char sx[64];
    if (gamma->n != (size_t)C || beta->n != (size_t)C) {
        qat_tape_fail(t, QAT_STATUS_SHAPE, "batchnorm: input %s has %d channels but gamma/beta have %zu/%zu",
                      qat_tensor_shape_str(x, sx, sizeof sx), C, gamma->n, beta->n);
        return false;
    }
    if (!running_mean || !running_var) {
        qat_tape_fail(t, QAT_STATUS_INVALID_ARG, "batchnorm: running statistics are NULL");
        return false;
    }
    return true;
}

qat_tensor *qat_batchnorm(qat_tape *t, qat_tensor *x, qat_tensor *gamma, qat_tensor *beta,
                          float *running_mean, float *running_var, float momentum, float eps) {
    return qat_batchnorm_ex(t, x, gamma, beta, running_mean, running_var, momentum, eps, false);
}

qat_tensor *qat_batchnorm_ex(qat_tape *t, qat_tensor *x, qat_tensor *gamma, qat_tensor *beta,
                             float *running_mean, float *running_var, float momentum, float eps,
                             bool reuse_grad) {
    if (!x || !gamma || !beta) return NULL;
    char sx[64];
    if (x->ndim != 2 && x->ndim != 4)
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "batchnorm: input must be (N, C) or (N, C, H, W), got %s",
                             qat_tensor_shape_str(x, sx, sizeof sx));
    int N = x->shape[0], C = x->shape[1];
    int HW = x->ndim == 4 ? x->shape[2] * x->shape[3] : 1;
    if (!params_fit(t, x, C, gamma, beta, running_mean, running_var)) return NULL;
    if (t->training && (size_t)N * HW < 2)
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "batchnorm: training needs more than one value per channel, got "
                             "input %s",
                             qat_tensor_shape_str(x, sx, sizeof sx));
    bool grad = qat_tape_needs_grad(t, x, gamma, beta);
    /* Sharing needs x's gradient buffer, and x feeding nothing else (the caller's word). */
    bool shared = grad && reuse_grad && x->grad;
    qat_tensor *y = qat_tape_tensor(t, x->ndim, x->shape, grad && !shared);
    if (!y) return NULL;
    if (shared) y->grad = x->grad;
    float *mean = NULL, *rstd = NULL;
    if (t->training) {
        mean = qat_tape_alloc(t, (size_t)C * sizeof(float));
        rstd = qat_tape_alloc(t, (size_t)C * sizeof(float));
        if (!mean || !rstd) return NULL;
        qat_batchnorm_forward_train(y->data, mean, rstd, running_mean, running_var, x->data,
                                    gamma->data, beta->data, N, C, HW, momentum, eps);
    } else {
        qat_batchnorm_forward_eval(y->data, x->data, gamma->data, beta->data, running_mean,
                                   running_var, N, C, HW, eps);
    }
    if (grad) {
        bn_ctx *c = qat_tape_record(t, bn_backward, sizeof *c, "batchnorm");
        if (!c) return NULL;
        *c = (bn_ctx){x, gamma, beta, y, mean, rstd, running_mean, running_var, eps,
                      N, C, HW, t->training, shared};
    }
    return y;
}

/* ---- batch norm, ReLU and 2x2 max pool fused (training) ----
 *
 * Per channel: the statistics as above (forward_train_channels' two passes); then one
 * pass that normalises each 2x2 window, clamps it at 0 and keeps its maximum and where
 * it was (first maximum wins, in the order (0,0) (0,1) (1,0) (1,1), as qat_maxpool2d).
 * Neither the normalised nor the clamped tensor is stored. Backward: the gradient y'
 * of the clamped, normalised tensor is the pooled gradient at each window's argmax where
 * the value there was positive, zero elsewhere; its sums sum y', sum y' xhat run over the
 * windows alone, then dx = rstd (y' gamma - mean(y' gamma) - xhat mean(y' gamma xhat))
 * over the whole plane, y' spread into a per-thread plane of scratch first. The clamp
 * is recomputed from x with the forward's expression, so it has the forward's bits. */

typedef struct brp_job {
    float *out, *mean, *rstd, *running_mean, *running_var, *dinp, *dgamma, *dbeta, *plane;
    int32_t *argmax;
    const int32_t *cargmax;
    const float *inp, *dout, *gamma, *beta, *saved_mean, *saved_rstd;
    int N, C, H, W, OH, OW;
    float momentum, eps;
    bool overwrite;
} brp_job;

QAT_HOT static void brp_forward_channels(void *p, size_t c0, size_t c1) {
    const brp_job *j = p;
    const int HW = j->H * j->W, OHW = j->OH * j->OW;
    const size_t M = (size_t)j->N * HW;
    const bn_job bj = {.inp = j->inp, .N = j->N, .C = j->C, .HW = HW};
    float *rows = j->plane + (size_t)qat_parallel_thread_id() * 2 * j->W; /* two clamped rows */
    for (size_t c = c0; c < c1; c++) {
        double mu = channel_sum(&bj, (int)c, 1.0f, 0.0f, false) / (double)M;
        double sq = channel_sq(&bj, (int)c, 1.0f, 0.0f, false, mu);
        double var = sq / (double)M;
        float rs = (float)(1.0 / sqrt(var + j->eps));
        float m = (float)mu;
        j->mean[c] = m;
        j->rstd[c] = rs;
        const float g = j->gamma[c] * rs, be = j->beta[c];
        for (int n = 0; n < j->N; n++) {
            const size_t pl = (size_t)n * j->C + c;
            const float *x = j->inp + pl * HW;
            float *y = j->out + pl * OHW;
            int32_t *am = j->argmax + pl * OHW;
            for (int oy = 0; oy < j->OH; oy++) {
                const float *r0 = x + (size_t)2 * oy * j->W, *r1 = r0 + j->W;
                /* relu(z) = z > 0 ? z : 0, as qat_relu_forward (NaN to 0) */
                for (int i = 0; i < j->W; i++) {
                    float z0 = (r0[i] - m) * g + be, z1 = (r1[i] - m) * g + be;
                    rows[i] = z0 > 0.0f ? z0 : 0.0f;
                    rows[j->W + i] = z1 > 0.0f ? z1 : 0.0f;
                }
                qat_maxpool_2x2_row(y + oy * j->OW, am + oy * j->OW, rows, rows + j->W,
                                    2 * oy * j->W, j->W, j->OW);
            }
        }
        if (j->running_mean && j->running_var) {
            double unbiased = M > 1 ? sq / (double)(M - 1) : var;
            j->running_mean[c] = (1.0f - j->momentum) * j->running_mean[c] + j->momentum * m;
            j->running_var[c] =
                (1.0f - j->momentum) * j->running_var[c] + j->momentum * (float)unbiased;
        }
    }
}

void qat_bn_relu_maxpool_forward(float *out, int32_t *argmax, float *mean, float *rstd,
                                 float *running_mean, float *running_var, float *scratch,
                                 const float *inp, const float *gamma, const float *beta, int N,
                                 int C, int H, int W, float momentum, float eps) {
    QAT_ASSERT(H >= 2 && W >= 2);
    brp_job j = {.out = out, .plane = scratch, .argmax = argmax, .mean = mean, .rstd = rstd,
                 .running_mean = running_mean, .running_var = running_var, .inp = inp,
                 .gamma = gamma, .beta = beta, .N = N, .C = C, .H = H, .W = W, .OH = H / 2,
                 .OW = W / 2, .momentum = momentum, .eps = eps};
    qat_parallel_for((size_t)C, channel_grain(N, H * W), brp_forward_channels, &j);
}

/* c ? v : 0.0f without a branch (the condition is a coin toss per element: a branch
 * mispredicts half the time), by masking v's bits. */
static inline float keep_if(bool c, float v) {
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    b &= -(uint32_t)c;
    memcpy(&v, &b, sizeof v);
    return v;
}

QAT_HOT static void brp_backward_channels(void *p, size_t c0, size_t c1) {
    const brp_job *j = p;
    const int HW = j->H * j->W, OHW = j->OH * j->OW;
    const double M = (double)j->N * HW;
    float *dyp = j->plane + (size_t)qat_parallel_thread_id() * HW;
    for (size_t c = c0; c < c1; c++) {
        const float m = j->saved_mean[c], rs = j->saved_rstd[c];
        const float g = j->gamma[c] * rs, be = j->beta[c], gam = j->gamma[c];
        /* sum y' and sum y' xhat: y' is nonzero only at the windows' argmax */
        double sdy[LANES] = {0}, sdyx[LANES] = {0};
        for (int n = 0; n < j->N; n++) {
            const size_t pl = (size_t)n * j->C + c;
            const float *x = j->inp + pl * HW, *dy = j->dout + pl * OHW;
            const int32_t *am = j->cargmax + pl * OHW;
            int o = 0;
            for (; o + LANES <= OHW; o += LANES)
                for (int k = 0; k < LANES; k++) {
                    const float xv = x[am[o + k]];
                    const float d = keep_if((xv - m) * g + be > 0.0f, dy[o + k]);
                    sdy[k] += d;
                    sdyx[k] += (double)d * ((xv - m) * rs);
                }
            for (; o < OHW; o++) {
                const float xv = x[am[o]];
                const float d = keep_if((xv - m) * g + be > 0.0f, dy[o]);
                sdy[o % LANES] += d;
                sdyx[o % LANES] += (double)d * ((xv - m) * rs);
            }
        }
        const double s_dy = lanes_sum(sdy), s_dyx = lanes_sum(sdyx);
        if (j->dgamma) j->dgamma[c] += (float)s_dyx;
        if (j->dbeta) j->dbeta[c] += (float)s_dy;
        if (!j->dinp) continue;
        const float mdy = (float)(s_dy / M) * gam, mdyx = (float)(s_dyx / M) * gam;
        for (int n = 0; n < j->N; n++) {
            const size_t pl = (size_t)n * j->C + c;
            const float *x = j->inp + pl * HW, *dy = j->dout + pl * OHW;
            const int32_t *am = j->cargmax + pl * OHW;
            float *dx = j->dinp + pl * HW;
            if (j->overwrite) {
                /* the expression below with y' = 0 everywhere, then again at the windows'
                 * argmax (each input position is in one window at most): the same bits,
                 * without the zeroed plane of y' and its second read */
                for (int i = 0; i < HW; i++) {
                    float xhat = (x[i] - m) * rs;
                    dx[i] = rs * (0.0f * gam - mdy - xhat * mdyx);
                }
                for (int o = 0; o < OHW; o++) {
                    const int i = am[o];
                    const float xv = x[i], d = keep_if((xv - m) * g + be > 0.0f, dy[o]);
                    float xhat = (xv - m) * rs;
                    dx[i] = rs * (d * gam - mdy - xhat * mdyx);
                }
                continue;
            }
            for (int i = 0; i < HW; i++) dyp[i] = 0.0f;
            for (int o = 0; o < OHW; o++) {
                const float xv = x[am[o]];
                dyp[am[o]] = keep_if((xv - m) * g + be > 0.0f, dy[o]);
            }
            for (int i = 0; i < HW; i++) {
                float xhat = (x[i] - m) * rs;
                dx[i] += rs * (dyp[i] * gam - mdy - xhat * mdyx);
            }
        }
    }
}

size_t qat_bn_relu_maxpool_scratch_floats(int H, int W) {
    return (size_t)qat_num_threads() * H * W;
}

void qat_bn_relu_maxpool_backward(float *dinp, float *dgamma, float *dbeta, float *scratch,
                                  const float *dout, const int32_t *argmax, const float *inp,
                                  const float *gamma, const float *beta, const float *mean,
                                  const float *rstd, int N, int C, int H, int W, bool overwrite) {
    brp_job j = {.dinp = dinp, .dgamma = dgamma, .dbeta = dbeta, .plane = scratch,
                 .dout = dout, .cargmax = argmax, .inp = inp, .gamma = gamma, .beta = beta,
                 .saved_mean = mean, .saved_rstd = rstd, .N = N, .C = C, .H = H, .W = W,
                 .OH = H / 2, .OW = W / 2, .overwrite = overwrite};
    qat_parallel_for((size_t)C, channel_grain(N, H * W), brp_backward_channels, &j);
}

typedef struct brp_ctx {
    qat_tensor *x, *gamma, *beta, *y;
    float *mean, *rstd, *scratch;
    int32_t *argmax;
    bool overwrite;
} brp_ctx;

static void brp_backward(qat_tape *t, void *p) {
    brp_ctx *c = p;
    qat_bn_relu_maxpool_backward(c->x->grad, c->gamma->grad, c->beta->grad, c->scratch,
                                 c->y->grad, c->argmax, c->x->data, c->gamma->data,
                                 c->beta->data, c->mean, c->rstd, c->x->shape[0],
                                 c->x->shape[1], c->x->shape[2], c->x->shape[3], c->overwrite);
}

qat_tensor *qat_bn_relu_maxpool(qat_tape *t, qat_tensor *x, qat_tensor *gamma, qat_tensor *beta,
                                float *running_mean, float *running_var, float momentum,
                                float eps, bool priv) {
    if (!x || !gamma || !beta) return NULL;
    char sx[64];
    if (x->ndim != 4 || x->shape[2] < 2 || x->shape[3] < 2)
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "batchnorm+relu+maxpool: input must be (N, C, H, W) with H, W >= 2, "
                             "got %s",
                             qat_tensor_shape_str(x, sx, sizeof sx));
    const int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    if (!params_fit(t, x, C, gamma, beta, running_mean, running_var)) return NULL;
    QAT_ASSERT(t->training);
    bool grad = qat_tape_needs_grad(t, x, gamma, beta);
    qat_tensor *y = qat_tape_tensor(t, 4, (int[]){N, C, H / 2, W / 2}, grad);
    if (!y) return NULL;
    float *mean = qat_tape_alloc(t, (size_t)C * sizeof(float));
    float *rstd = qat_tape_alloc(t, (size_t)C * sizeof(float));
    int32_t *argmax = qat_tape_alloc(t, y->n * sizeof(int32_t));
    if (!mean || !rstd || !argmax) return NULL;
    float *scratch = qat_tape_alloc(t, qat_bn_relu_maxpool_scratch_floats(H, W) * sizeof(float));
    if (!scratch) return NULL;
    qat_bn_relu_maxpool_forward(y->data, argmax, mean, rstd, running_mean, running_var, scratch,
                                x->data, gamma->data, beta->data, N, C, H, W, momentum, eps);
    if (grad) {
        brp_ctx *c = qat_tape_record(t, brp_backward, sizeof *c, "batchnorm_relu_maxpool");
        if (!c) return NULL;
        *c = (brp_ctx){x, gamma, beta, y, mean, rstd, scratch, argmax, priv && x->grad};
    }
    return y;
}

#include "loss.h"

#include <math.h>
#include <string.h>

/* logits (B, C) -> probs (B, C), mean loss. Sums in double: a batch of thousands of
 * float log-probabilities loses digits otherwise. */
void qat_cross_entropy_forward(float *loss, float *probs, const float *logits,
                               const int32_t *labels, int B, int C) {
    double total = 0.0;
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * C;
        float *p = probs + (size_t)b * C;
        float m = z[0];
        for (int j = 1; j < C; j++) m = z[j] > m ? z[j] : m;
        double sum = 0.0;
        for (int j = 0; j < C; j++) {
            p[j] = expf(z[j] - m);
            sum += p[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < C; j++) p[j] *= inv;
        total -= (double)(z[labels[b]] - m) - log(sum);
    }
    *loss = (float)(total / B);
}

void qat_cross_entropy_backward(float *dlogits, float dloss, const float *probs,
                                const int32_t *labels, int B, int C) {
    float s = dloss / (float)B;
    for (int b = 0; b < B; b++) {
        const float *p = probs + (size_t)b * C;
        float *d = dlogits + (size_t)b * C;
        for (int j = 0; j < C; j++) d[j] += s * (p[j] - (j == labels[b] ? 1.0f : 0.0f));
    }
}

typedef struct ce_ctx {
    qat_tensor *logits, *loss;
    float *probs;
    int32_t *labels;
} ce_ctx;

static void ce_backward(qat_tape *t, void *p) {
    ce_ctx *c = p;
    qat_cross_entropy_backward(c->logits->grad, c->loss->grad[0], c->probs, c->labels,
                               c->logits->shape[0], c->logits->shape[1]);
}

qat_tensor *qat_cross_entropy(qat_tape *t, qat_tensor *logits, const int32_t *labels) {
    if (!logits) return NULL;
    if (!labels) return qat_tape_fail(t, QAT_STATUS_INVALID_ARG, "cross_entropy: labels is NULL");
    char s[64];
    if (logits->ndim != 2)
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "cross_entropy: logits must be (batch, classes), got %s",
                             qat_tensor_shape_str(logits, s, sizeof s));
    int B = logits->shape[0], C = logits->shape[1];
    for (int b = 0; b < B; b++)
        if (labels[b] < 0 || labels[b] >= C)
            return qat_tape_fail(t, QAT_STATUS_INVALID_ARG,
                                 "cross_entropy: label %d of sample %d is outside [0, %d)",
                                 (int)labels[b], b, C);
    bool grad = qat_tape_needs_grad(t, logits, NULL, NULL);
    qat_tensor *loss = qat_tape_tensor(t, 1, (int[]){1}, grad);
    float *probs = qat_tape_alloc(t, logits->n * sizeof(float));
    int32_t *lab = qat_tape_alloc(t, (size_t)B * sizeof(int32_t));
    if (!loss || !probs || !lab) return NULL;
    memcpy(lab, labels, (size_t)B * sizeof(int32_t));
    qat_cross_entropy_forward(loss->data, probs, logits->data, lab, B, C);
    if (grad) {
        ce_ctx *c = qat_tape_record(t, ce_backward, sizeof *c, "cross_entropy");
        if (!c) return NULL;
        *c = (ce_ctx){logits, loss, probs, lab};
    }
    return loss;
}

/* softmax(z / T) of one row into out; returns log sum_j exp(z_j / T - m), m the row's max
 * of z / T (so log out_j = z_j / T - m - returned value). */
static double softmax_t(float *out, const float *z, int C, float T) {
    float m = z[0] / T;
    for (int j = 1; j < C; j++) m = z[j] / T > m ? z[j] / T : m;
    double sum = 0.0;
    for (int j = 0; j < C; j++) {
        out[j] = expf(z[j] / T - m);
        sum += out[j];
    }
    const float inv = (float)(1.0 / sum);
    for (int j = 0; j < C; j++) out[j] *= inv;
    return log(sum);
}

void qat_distill_forward(float *loss, float *probs, float *q, float *p, const float *logits, const float *teacher,
                         const int32_t *labels, int B, int C, float T, float alpha) {
    float hard;
    qat_cross_entropy_forward(&hard, probs, logits, labels, B, C);
    double kl = 0.0;
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * C, *tz = teacher + (size_t)b * C;
        float *qb = q + (size_t)b * C, *pb = p + (size_t)b * C;
        const double lq = softmax_t(qb, z, C, T), lp = softmax_t(pb, tz, C, T);
        float mz = z[0] / T, mt = tz[0] / T;
        for (int j = 1; j < C; j++) {
            mz = z[j] / T > mz ? z[j] / T : mz;
            mt = tz[j] / T > mt ? tz[j] / T : mt;
        }
        for (int j = 0; j < C; j++) {
            if (pb[j] == 0.0f) continue; /* 0 log 0 = 0 */
            const double log_p = (double)(tz[j] / T - mt) - lp, log_q = (double)(z[j] / T - mz) - lq;
            kl += (double)pb[j] * (log_p - log_q);
        }
    }
    *loss = (float)((1.0 - alpha) * hard + alpha * (double)T * T * kl / B);
}

void qat_distill_backward(float *dlogits, float dloss, const float *probs, const float *q, const float *p,
                          const int32_t *labels, int B, int C, float T, float alpha) {
    if (alpha < 1.0f) qat_cross_entropy_backward(dlogits, dloss * (1.0f - alpha), probs, labels, B, C);
    const float s = dloss * alpha * T / (float)B;
    for (size_t i = 0; i < (size_t)B * C; i++) dlogits[i] += s * (q[i] - p[i]);
}

typedef struct kd_ctx {
    qat_tensor *logits, *loss;
    float *probs, *q, *p;
    int32_t *labels;
    float T, alpha;
} kd_ctx;

static void kd_backward(qat_tape *t, void *ctx) {
    kd_ctx *c = ctx;
    qat_distill_backward(c->logits->grad, c->loss->grad[0], c->probs, c->q, c->p, c->labels, c->logits->shape[0],
                         c->logits->shape[1], c->T, c->alpha);
}

qat_tensor *qat_distill_loss(qat_tape *t, qat_tensor *logits, const float *teacher, const int32_t *labels, float T,
                             float alpha) {
    if (!logits) return NULL;
    if (!teacher || !labels) return qat_tape_fail(t, QAT_STATUS_INVALID_ARG, "distill: teacher or labels is NULL");
    if (!(T > 0.0f) || !(T <= 1e3f) || !(alpha >= 0.0f && alpha <= 1.0f))
        return qat_tape_fail(t, QAT_STATUS_INVALID_ARG,
                             "distill: temperature %g must be in (0, 1000] and alpha %g in [0, 1]", (double)T,
                             (double)alpha);
    char s[64];
    if (logits->ndim != 2)
        return qat_tape_fail(t, QAT_STATUS_SHAPE, "distill: logits must be (batch, classes), got %s",
                             qat_tensor_shape_str(logits, s, sizeof s));
    const int B = logits->shape[0], C = logits->shape[1];
    for (int b = 0; b < B; b++)
        if (labels[b] < 0 || labels[b] >= C)
            return qat_tape_fail(t, QAT_STATUS_INVALID_ARG, "distill: label %d of sample %d is outside [0, %d)",
                                 (int)labels[b], b, C);
    bool grad = qat_tape_needs_grad(t, logits, NULL, NULL);
    qat_tensor *loss = qat_tape_tensor(t, 1, (int[]){1}, grad);
    float *probs = qat_tape_alloc(t, 3 * logits->n * sizeof(float));
    int32_t *lab = qat_tape_alloc(t, (size_t)B * sizeof(int32_t));
    if (!loss || !probs || !lab) return NULL;
    memcpy(lab, labels, (size_t)B * sizeof(int32_t));
    float *q = probs + logits->n, *p = q + logits->n;
    qat_distill_forward(loss->data, probs, q, p, logits->data, teacher, lab, B, C, T, alpha);
    if (grad) {
        kd_ctx *c = qat_tape_record(t, kd_backward, sizeof *c, "distill");
        if (!c) return NULL;
        *c = (kd_ctx){logits, loss, probs, q, p, lab, T, alpha};
    }
    return loss;
}

typedef struct mse_ctx {
    qat_tensor *pred, *target, *loss;
} mse_ctx;

static void mse_backward(qat_tape *t, void *p) {
    mse_ctx *c = p;
    float s = 2.0f * c->loss->grad[0] / (float)c->pred->n;
    for (size_t i = 0; i < c->pred->n; i++)
        c->pred->grad[i] += s * (c->pred->data[i] - c->target->data[i]);
}

qat_tensor *qat_mse(qat_tape *t, qat_tensor *pred, qat_tensor *target) {
    if (!pred || !target) return NULL;
    if (!qat_tensor_same_shape(pred, target)) {
        char a[64], b[64];
        return qat_tape_fail(t, QAT_STATUS_SHAPE, "mse: prediction %s and target %s differ",
                             qat_tensor_shape_str(pred, a, sizeof a),
                             qat_tensor_shape_str(target, b, sizeof b));
    }
    bool grad = qat_tape_needs_grad(t, pred, NULL, NULL);
    qat_tensor *loss = qat_tape_tensor(t, 1, (int[]){1}, grad);
    if (!loss) return NULL;
    double sum = 0.0;
    for (size_t i = 0; i < pred->n; i++) {
        double d = (double)pred->data[i] - (double)target->data[i];
        sum += d * d;
    }
    loss->data[0] = (float)(sum / (double)pred->n);
    if (grad) {
        mse_ctx *c = qat_tape_record(t, mse_backward, sizeof *c, "mse");
        if (!c) return NULL;
        *c = (mse_ctx){pred, target, loss};
    }
    return loss;
}

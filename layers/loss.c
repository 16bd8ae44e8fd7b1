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

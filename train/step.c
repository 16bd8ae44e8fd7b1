#include "step.h"

#include <math.h>
#include <string.h>

#include "layers/loss.h"

long qat_count_correct(const float *logits, const int32_t *y, int n, int C) {
    long correct = 0;
    for (int i = 0; i < n; i++) {
        const float *z = logits + (size_t)i * C;
        int best = 0;
        for (int c = 1; c < C; c++) best = z[c] > z[best] ? c : best;
        correct += best == y[i];
    }
    return correct;
}

static qat_tensor *forward_batch(qat_model *m, qat_tape *t, const qat_batch *b) {
    qat_tensor *x = qat_tape_input(t, b->ndim, b->shape, b->x);
    return qat_model_forward(m, t, x);
}

qat_status qat_train_step(qat_model *m, qat_tape *t, qat_optim *o, float lr, float clip_norm,
                          const qat_batch *b, qat_step_result *r, qat_error *err) {
    t->training = true;
    t->grad_enabled = true;
    qat_tape_reset(t);
    qat_tensor *logits = forward_batch(m, t, b);
    qat_tensor *loss = qat_cross_entropy(t, logits, b->y);
    if (!loss) return qat_error_set(err, t->err.status, "%s", t->err.msg);
    r->loss = loss->data[0];
    r->correct = qat_count_correct(logits->data, b->y, b->n, logits->shape[1]);
    if (!isfinite(r->loss))
        return qat_error_set(err, QAT_STATUS_NUMERIC,
                             "the loss became %g (diverged: try a lower learning rate or "
                             "gradient clipping)",
                             (double)r->loss);
    qat_model_zero_grad(m);
    if (qat_tape_backward(t, loss) != QAT_STATUS_OK)
        return qat_error_set(err, t->err.status, "%s", t->err.msg);
    double sq = 0.0;
    for (size_t i = 0; i < m->n_params; i++) sq += (double)m->grads[i] * m->grads[i];
    r->grad_norm = sqrt(sq);
    if (!isfinite(r->grad_norm))
        return qat_error_set(err, QAT_STATUS_NUMERIC,
                             "a gradient became non-finite (loss %g): try a lower learning rate "
                             "or gradient clipping",
                             (double)r->loss);
    if (clip_norm > 0 && r->grad_norm > clip_norm) {
        /* As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6). */
        float scale = (float)(clip_norm / (r->grad_norm + 1e-6));
        for (size_t i = 0; i < m->n_params; i++) m->grads[i] *= scale;
    }
    qat_optim_step(o, m->params, m->grads, lr);
    return QAT_STATUS_OK;
}

qat_status qat_eval_batch(qat_model *m, qat_tape *t, const qat_batch *b, double *loss_sum,
                          long *correct, qat_error *err) {
    bool was_training = t->training, was_grad = t->grad_enabled;
    t->training = false;
    t->grad_enabled = false;
    qat_tape_reset(t);
    qat_tensor *logits = forward_batch(m, t, b);
    qat_tensor *loss = qat_cross_entropy(t, logits, b->y);
    t->training = was_training;
    t->grad_enabled = was_grad;
    if (!loss) return qat_error_set(err, t->err.status, "%s", t->err.msg);
    *loss_sum += (double)loss->data[0] * b->n;
    *correct += qat_count_correct(logits->data, b->y, b->n, logits->shape[1]);
    return QAT_STATUS_OK;
}

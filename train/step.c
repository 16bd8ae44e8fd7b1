#include "step.h"

#include <math.h>
#include <string.h>

#include "autograd/comm.h"
#include "autograd/parallel.h"
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

/* The squared L2 norm in double, over fixed blocks of NORM_BLOCK gradients (each summed
 * in order, blocks added in order), so it does not depend on the thread count. */
#define NORM_BLOCK 65536
#define NORM_MAX_BLOCKS 4096

typedef struct norm_job {
    const float *g;
    size_t n;
    double *partial;
} norm_job;

static void norm_block(void *p, size_t k) {
    const norm_job *j = p;
    size_t b = k * NORM_BLOCK, e = QAT_MIN(j->n, b + NORM_BLOCK);
    double acc[4] = {0};
    size_t i = b;
    for (; i + 4 <= e; i += 4)
        for (int l = 0; l < 4; l++) acc[l] += (double)j->g[i + l] * j->g[i + l];
    for (; i < e; i++) acc[i % 4] += (double)j->g[i] * j->g[i];
    j->partial[k] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

static double grad_sq_norm(const float *g, size_t n) {
    double partial[NORM_MAX_BLOCKS];
    size_t blocks = (n + NORM_BLOCK - 1) / NORM_BLOCK, done = 0;
    double sq = 0.0;
    /* Batches of at most NORM_MAX_BLOCKS blocks keep the partial sums on the stack. */
    while (done < blocks) {
        size_t nb = QAT_MIN(blocks - done, (size_t)NORM_MAX_BLOCKS);
        norm_job j = {g + done * NORM_BLOCK, n - done * NORM_BLOCK, partial};
        qat_parallel_tasks(nb, norm_block, &j);
        for (size_t k = 0; k < nb; k++) sq += partial[k];
        done += nb;
    }
    return sq;
}

typedef struct scale_job {
    float *g;
    float s;
} scale_job;

static void scale_part(void *p, size_t b, size_t e) {
    const scale_job *j = p;
    for (size_t i = b; i < e; i++) j->g[i] *= j->s;
}

static qat_tensor *forward_batch(qat_model *m, qat_tape *t, const qat_batch *b) {
    qat_tensor *x = qat_tape_input(t, b->ndim, b->shape, b->x);
    return qat_model_forward(m, t, x);
}

qat_status qat_train_step(qat_model *m, qat_tape *t, qat_optim *o, float lr, float clip_norm,
                          const qat_batch *b, qat_step_result *r, qat_error *err) {
    return qat_train_step_distill(m, t, o, lr, clip_norm, b, NULL, r, err);
}

qat_status qat_train_step_distill(qat_model *m, qat_tape *t, qat_optim *o, float lr, float clip_norm,
                                  const qat_batch *b, const qat_distill *kd, qat_step_result *r, qat_error *err) {
    const size_t nt = qat_model_n_trainable(m);
    if (o->n != nt)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "the optimizer covers %zu parameters but the model trains %zu (of %zu): "
                             "create it after the last change to the model's parameters "
                             "(qat_quant_prepare and qat_lora_attach add some, freezing removes some)",
                             o->n, nt, m->n_params);
    const qat_comm *comm = qat_comm_get();
    qat_comm_set_share(b->global_n > 0 ? (float)b->n / (float)b->global_n : 1.0f);
    qat_tape_reset(t);
    if (b->n == 0 && comm->size > 1) { /* data-parallel, no share of this batch: the sum only */
        r->loss = 0;
        r->correct = 0;
        qat_model_zero_grad(m);
    } else {
        const qat_tensor *tl = NULL;
        if (kd) { /* the teacher first, in inference mode; its logits stay in the arena */
            t->training = false;
            t->grad_enabled = false;
            if (!(tl = forward_batch(kd->teacher, t, b))) return qat_error_set(err, t->err.status, "teacher: %s", t->err.msg);
        }
        t->training = true;
        t->grad_enabled = true;
        qat_tensor *logits = forward_batch(m, t, b);
        if (tl && logits && !qat_tensor_same_shape(tl, logits)) {
            char a[64], c[64];
            return qat_error_set(err, QAT_STATUS_SHAPE, "the teacher's outputs %s differ from the model's %s",
                                 qat_tensor_shape_str(tl, a, sizeof a), qat_tensor_shape_str(logits, c, sizeof c));
        }
        qat_tensor *loss = tl ? qat_distill_loss(t, logits, tl->data, b->y, kd->temperature, kd->alpha)
                              : qat_cross_entropy(t, logits, b->y);
        if (!loss) return qat_error_set(err, t->err.status, "%s", t->err.msg);
        r->loss = loss->data[0];
        r->correct = qat_count_correct(logits->data, b->y, b->n, logits->shape[1]);
        if (!isfinite(r->loss) && comm->size == 1)
            return qat_error_set(err, QAT_STATUS_NUMERIC,
                                 "the loss became %g (diverged: try a lower learning rate or "
                                 "gradient clipping)",
                                 (double)r->loss);
        qat_model_zero_grad(m);
        if (!isfinite(r->loss)) {
            /* data-parallel: the others are waiting in the gradient sum; a NaN gradient makes
             * every process stop at this step (the check below) */
            for (size_t i = 0; i < m->n_params; i++) m->grads[i] = NAN;
        } else if (qat_tape_backward(t, loss) != QAT_STATUS_OK) {
            return qat_error_set(err, t->err.status, "%s", t->err.msg);
        }
    }
    if (comm->size > 1) {
        /* the whole batch's mean gradient: each share weighted by its samples, summed */
        const float w = b->global_n > 0 ? (float)b->n / (float)b->global_n : 1.0f;
        if (w != 1.0f) {
            scale_job sj = {m->grads, w};
            qat_parallel_for(m->n_params, 65536, scale_part, &sj);
        }
        if (qat_comm_sum(m->grads, m->n_params))
            return qat_error_set(err, QAT_STATUS_IO, "the gradient sum across processes failed");
        if (!isfinite(r->loss))
            return qat_error_set(err, QAT_STATUS_NUMERIC, "the loss became %g (diverged: try a lower learning rate or "
                                                          "gradient clipping)", (double)r->loss);
    }
    /* Some parameters frozen: the optimizer sees the trainable ones, packed. */
    float *params = m->params, *grads = m->grads;
    if (nt != m->n_params) {
        if (m->packed_n != nt) {
            float *p = realloc(m->packed, 2 * nt * sizeof(float));
            if (!p) return qat_error_set(err, QAT_STATUS_NOMEM, "out of memory packing %zu parameters", nt);
            m->packed = p;
            m->packed_n = nt;
        }
        params = m->packed;
        grads = m->packed + nt;
        qat_model_pack(m, m->params, params);
        qat_model_pack(m, m->grads, grads);
    }
    r->grad_norm = sqrt(grad_sq_norm(grads, nt));
    if (!isfinite(r->grad_norm))
        return qat_error_set(err, QAT_STATUS_NUMERIC,
                             "a gradient became non-finite (loss %g): try a lower learning rate "
                             "or gradient clipping",
                             (double)r->loss);
    if (clip_norm > 0 && r->grad_norm > clip_norm) {
        /* As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6). */
        float scale = (float)(clip_norm / (r->grad_norm + 1e-6));
        scale_job sj = {grads, scale};
        qat_parallel_for(nt, 65536, scale_part, &sj);
    }
    qat_optim_step(o, params, grads, lr);
    if (params != m->params) qat_model_unpack(m, params, m->params);
    if (m->quant_after_step) m->quant_after_step(m);
    m->step++;
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

#include "trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/comm.h"
#include "io/strbuf.h"
#include "train/metrics.h"
#include "train/progress.h"

/* This process's share of a batch in a data-parallel run (autograd/comm.h): the
 * contiguous slice [n r / P, n (r + 1) / P) of the loader's deterministic batch, which may
 * be empty. One process: the batch itself. */
static qat_batch share(const qat_batch *b) {
    const qat_comm *c = qat_comm_get();
    qat_batch s = *b;
    s.global_n = b->n;
    if (c->size == 1) return s;
    const int lo = (int)((long)b->n * c->rank / c->size), hi = (int)((long)b->n * (c->rank + 1) / c->size);
    size_t per = 1;
    for (int k = 1; k < b->ndim; k++) per *= (size_t)b->shape[k];
    s.x = b->x + (size_t)lo * per;
    s.y = b->y + lo;
    s.idx = b->idx + lo;
    s.n = hi - lo;
    s.shape[0] = s.n;
    return s;
}

/* The totals of an epoch or an evaluation summed over the processes. */
static qat_status sum_totals(double *loss_sum, long *correct, long *n, qat_error *err) {
    if (qat_comm_get()->size == 1) return QAT_STATUS_OK;
    float v[3] = {(float)*loss_sum, (float)*correct, (float)*n};
    if (qat_comm_sum(v, 3)) return qat_error_set(err, QAT_STATUS_IO, "the sum across processes failed");
    *loss_sum = v[0];
    *correct = lroundf(v[1]);
    *n = lroundf(v[2]);
    return QAT_STATUS_OK;
}

qat_status qat_evaluate(qat_model *m, qat_tape *t, qat_loader *l, double *loss, double *acc,
                        qat_error *err) {
    qat_status s = qat_loader_seek(l, 0, 0, err);
    if (s != QAT_STATUS_OK) return s;
    double loss_sum = 0;
    long correct = 0, n = 0;
    qat_batch b;
    while (qat_loader_next(l, &b)) {
        const qat_batch sb = share(&b);
        if (sb.n > 0 && (s = qat_eval_batch(m, t, &sb, &loss_sum, &correct, err))) return s;
        n += sb.n;
    }
    if ((s = sum_totals(&loss_sum, &correct, &n, err))) return s;
    *loss = n ? loss_sum / n : 0;
    *acc = n ? (double)correct / n : 0;
    return QAT_STATUS_OK;
}

/* ---- the run's history (trainer.h) ---- */

static bool ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* The learned quantization parameters the history follows. */
static bool hist_param(const qat_tensor *x) {
    return x->name && x->n >= 1 &&
           ((x->n == 1 && (ends_with(x->name, ".pact_alpha") || ends_with(x->name, ".act_step"))) ||
            ends_with(x->name, ".weight_step"));
}

static void hist_header(qat_strbuf *h, const qat_model *m) {
    qat_strbuf_puts(h, "epoch,step,lr,train_loss,train_acc,test_loss,test_acc");
    for (int i = 0; i < m->n_state; i++)
        if (hist_param(m->state[i])) qat_strbuf_printf(h, ",%s", m->state[i]->name);
    qat_strbuf_puts(h, "\n");
}

/* The header, then the prior history's lines when its columns are these. false: out of
 * memory. */
static bool hist_begin(qat_strbuf *h, const qat_model *m, const char *prior) {
    hist_header(h, m);
    const char *nl = prior ? strchr(prior, '\n') : NULL;
    if (!h->oom && nl && (size_t)(nl - prior + 1) == h->len && !strncmp(prior, h->p, h->len))
        qat_strbuf_puts(h, nl + 1); /* the same columns: continue it */
    return !h->oom;
}

static bool hist_epoch(qat_strbuf *h, const qat_model *m, const qat_metrics *mt) {
    /* no timings: a resumed run's checkpoint must equal an uninterrupted one's, byte for byte */
    qat_strbuf_printf(h, "%d,%ld,%.9g,%.9g,%.9g,%.9g,%.9g", mt->epoch, mt->step, mt->lr, mt->train_loss,
                      mt->train_acc, mt->test_loss, mt->test_acc);
    for (int i = 0; i < m->n_state; i++) {
        const qat_tensor *x = m->state[i];
        if (!hist_param(x)) continue;
        double sum = 0;
        for (size_t k = 0; k < x->n; k++) sum += x->data[k];
        qat_strbuf_printf(h, ",%.9g", sum / (double)x->n);
    }
    qat_strbuf_puts(h, "\n");
    return !h->oom;
}

static qat_status save(const qat_train_config *cfg, qat_model *m, qat_optim *o, int epochs_done,
                       long step, const qat_rng *rng, const qat_strbuf *h, qat_error *err) {
    if (!cfg->checkpoint) return QAT_STATUS_OK;
    qat_st_kv *extra = malloc((cfg->n_extra + 1) * sizeof *extra);
    if (!extra) return qat_error_set(err, QAT_STATUS_NOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_extra; i++)
        if (strcmp(cfg->extra[i].key, QAT_HISTORY_KEY)) extra[n++] = cfg->extra[i];
    if (h->p) extra[n++] = (qat_st_kv){QAT_HISTORY_KEY, h->p};
    qat_checkpoint_meta meta = {.model = cfg->model_text, .epoch = epochs_done, .step = step,
                                .rng = *rng, .extra = extra, .n_extra = n};
    qat_status s = qat_checkpoint_save(cfg->checkpoint, m, o, &meta, err);
    free(extra);
    return s;
}

qat_status qat_train_run(qat_model *m, qat_optim *o, qat_loader *train, qat_loader *test,
                         const qat_train_config *cfg, int start_epoch, long start_step,
                         qat_rng *rng, qat_train_result *r, qat_error *err) {
    memset(r, 0, sizeof *r);
    r->test_loss = r->test_acc = -1;
    r->epochs_done = start_epoch;
    r->steps = start_step;
    qat_tape t;
    qat_tape_init(&t, 0);
    t.rng = rng;
    qat_progress p;
    qat_progress_init(&p, stderr);
    m->step = start_step; /* qat_train_step advances it */
    qat_status s = QAT_STATUS_OK;
    double total_seconds = 0;
    long total_samples = 0;
    /* data-parallel: the first process alone writes checkpoints, logs and progress */
    const bool lead = qat_comm_get()->rank == 0;
    qat_strbuf h = {0};
    if (!hist_begin(&h, m, cfg->history)) s = qat_error_set(err, QAT_STATUS_NOMEM, "out of memory");
    for (int epoch = start_epoch; epoch < cfg->epochs && s == QAT_STATUS_OK; epoch++) {
        s = qat_loader_seek(train, epoch, 0, err);
        if (s != QAT_STATUS_OK) break;
        qat_progress_begin_epoch(&p, epoch + 1, cfg->epochs, train->n_batches);
        double t0 = qat_now(), loss_sum = 0, lr = 0;
        long correct = 0, seen = 0;
        qat_batch b;
        while (qat_loader_next(train, &b)) {
            lr = qat_lr_schedule_at(&cfg->sched, (float)o->cfg.lr, m->step);
            qat_step_result sr;
            qat_error step_err = {0};
            /* synchronised batch norm needs a sample on every process: a final batch
             * smaller than the process count is skipped, by every process alike */
            if (qat_comm_sync_bn() && b.n < qat_comm_get()->size) continue;
            const qat_batch sb = share(&b);
            s = qat_train_step_distill(m, &t, o, (float)lr, cfg->clip_norm, &sb, cfg->distill, &sr, &step_err);
            if (s != QAT_STATUS_OK) {
                if (p.tty && cfg->progress) fputc('\n', stderr);
                if (s == QAT_STATUS_NUMERIC && cfg->checkpoint)
                    qat_error_set(err, s,
                                  "epoch %d, batch %d: %s; stopped without saving, %s keeps the "
                                  "last good checkpoint (epoch %d)",
                                  epoch + 1, b.index + 1, step_err.msg, cfg->checkpoint, epoch);
                else
                    qat_error_set(err, s, "epoch %d, batch %d: %s", epoch + 1, b.index + 1, step_err.msg);
                break;
            }
            loss_sum += (double)sr.loss * sb.n;
            correct += sr.correct;
            seen += sb.n;
            /* data-parallel: the bar shows the whole batch, this share's accuracy scaled
             * up (the epoch's totals below are exact) */
            if (cfg->progress && lead)
                qat_progress_update(&p, b.n, sr.loss, sb.n ? (long)llround((double)sr.correct * b.n / sb.n) : 0);
        }
        if (s != QAT_STATUS_OK) break;
        if ((s = sum_totals(&loss_sum, &correct, &seen, err))) break;
        double secs = qat_now() - t0;
        total_seconds += secs;
        total_samples += seen;
        r->train_loss = seen ? loss_sum / seen : 0;
        r->train_acc = seen ? (double)correct / seen : 0;
        r->seconds = total_seconds;
        r->samples_per_s = total_seconds > 0 ? total_samples / total_seconds : 0;
        if (test) {
            s = qat_evaluate(m, &t, test, &r->test_loss, &r->test_acc, err);
            if (s != QAT_STATUS_OK) break;
        }
        r->epochs_done = epoch + 1;
        r->steps = m->step;
        if (cfg->progress && lead) {
            char extra[96] = "";
            if (test) snprintf(extra, sizeof extra, "test loss %.4f  acc %.2f%%", r->test_loss, 100 * r->test_acc);
            qat_progress_end_epoch(&p, extra);
        }
        qat_metrics mt = {epoch + 1, m->step, lr, r->train_loss, r->train_acc, r->test_loss,
                          r->test_acc, secs, seen / secs};
        if (cfg->log && lead) {
            s = qat_metrics_append(cfg->log, &mt, err);
            if (s != QAT_STATUS_OK) break;
        }
        if (!hist_epoch(&h, m, &mt)) {
            s = qat_error_set(err, QAT_STATUS_NOMEM, "out of memory");
            break;
        }
        if (lead) s = save(cfg, m, o, epoch + 1, m->step, rng, &h, err);
    }
    free(h.p);
    qat_tape_free(&t);
    return s;
}

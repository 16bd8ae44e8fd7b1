#include "trainer.h"

#include <stdio.h>
#include <string.h>

#include "train/metrics.h"
#include "train/progress.h"

qat_status qat_evaluate(qat_model *m, qat_tape *t, qat_loader *l, double *loss, double *acc,
                        qat_error *err) {
    qat_status s = qat_loader_seek(l, 0, 0, err);
    if (s != QAT_STATUS_OK) return s;
    double loss_sum = 0;
    long correct = 0, n = 0;
    qat_batch b;
    while (qat_loader_next(l, &b)) {
        s = qat_eval_batch(m, t, &b, &loss_sum, &correct, err);
        if (s != QAT_STATUS_OK) return s;
        n += b.n;
    }
    *loss = n ? loss_sum / n : 0;
    *acc = n ? (double)correct / n : 0;
    return QAT_STATUS_OK;
}

static qat_status save(const qat_train_config *cfg, qat_model *m, qat_optim *o, int epochs_done,
                       long step, const qat_rng *rng, qat_error *err) {
    if (!cfg->checkpoint) return QAT_STATUS_OK;
    qat_checkpoint_meta meta = {.model = cfg->model_text, .epoch = epochs_done, .step = step,
                                .rng = *rng, .extra = cfg->extra, .n_extra = cfg->n_extra};
    return qat_checkpoint_save(cfg->checkpoint, m, o, &meta, err);
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
            s = qat_train_step_distill(m, &t, o, (float)lr, cfg->clip_norm, &b, cfg->distill, &sr, &step_err);
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
            loss_sum += (double)sr.loss * b.n;
            correct += sr.correct;
            seen += b.n;
            if (cfg->progress) qat_progress_update(&p, b.n, sr.loss, sr.correct);
        }
        if (s != QAT_STATUS_OK) break;
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
        if (cfg->progress) {
            char extra[96] = "";
            if (test) snprintf(extra, sizeof extra, "test loss %.4f  acc %.2f%%", r->test_loss, 100 * r->test_acc);
            qat_progress_end_epoch(&p, extra);
        }
        if (cfg->log) {
            qat_metrics mt = {epoch + 1, m->step, lr, r->train_loss, r->train_acc, r->test_loss,
                              r->test_acc, secs, seen / secs};
            s = qat_metrics_append(cfg->log, &mt, err);
            if (s != QAT_STATUS_OK) break;
        }
        s = save(cfg, m, o, epoch + 1, m->step, rng, err);
    }
    qat_tape_free(&t);
    return s;
}

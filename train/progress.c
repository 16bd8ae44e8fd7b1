#include "progress.h"

#include <time.h>
#include <unistd.h>

double qat_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void qat_progress_init(qat_progress *p, FILE *f) {
    *p = (qat_progress){.f = f, .tty = isatty(fileno(f)) != 0};
}

void qat_progress_begin_epoch(qat_progress *p, int epoch, int epochs, long batches) {
    p->epoch = epoch;
    p->epochs = epochs;
    p->batches = batches;
    p->batch = 0;
    p->samples = p->correct = 0;
    p->loss_sum = 0;
    p->t_start = qat_now();
    p->t_drawn = 0;
}

double qat_progress_seconds(const qat_progress *p) { return qat_now() - p->t_start; }

static void fmt_time(char *buf, size_t n, double s) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static void draw(qat_progress *p, double now) {
    const int width = 20;
    int filled = p->batches ? (int)(width * p->batch / p->batches) : width;
    char bar[32];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    double el = now - p->t_start;
    double rate = el > 0 ? p->samples / el : 0;
    double eta = p->batch ? el * (double)(p->batches - p->batch) / (double)p->batch : 0;
    char etas[32];
    fmt_time(etas, sizeof etas, eta);
    fprintf(p->f, "\repoch %d/%d [%s] %ld/%ld  %.0f samples/s  ETA %s  loss %.4f  acc %.1f%%\033[K",
            p->epoch, p->epochs, bar, p->batch, p->batches, rate, etas,
            p->samples ? p->loss_sum / p->samples : 0.0,
            p->samples ? 100.0 * p->correct / p->samples : 0.0);
    fflush(p->f);
    p->t_drawn = now;
}

void qat_progress_update(qat_progress *p, int batch_size, float loss, long correct) {
    p->batch++;
    p->samples += batch_size;
    p->correct += correct;
    p->loss_sum += (double)loss * batch_size;
    if (!p->tty) return;
    double now = qat_now();
    if (now - p->t_drawn >= 0.1 || p->batch == p->batches) draw(p, now);
}

void qat_progress_end_epoch(qat_progress *p, const char *extra) {
    double el = qat_progress_seconds(p);
    char ts[32];
    fmt_time(ts, sizeof ts, el);
    if (p->tty) fprintf(p->f, "\r\033[K");
    fprintf(p->f, "epoch %d/%d  %ld batches in %s  %.0f samples/s  train loss %.4f  acc %.2f%%%s%s\n",
            p->epoch, p->epochs, p->batch, ts, el > 0 ? p->samples / el : 0.0,
            p->samples ? p->loss_sum / p->samples : 0.0,
            p->samples ? 100.0 * p->correct / p->samples : 0.0, extra ? "  " : "", extra ? extra : "");
    fflush(p->f);
}

#include "metrics.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

static bool is_csv(const char *path) {
    size_t n = strlen(path);
    return n >= 4 && strcmp(path + n - 4, ".csv") == 0;
}

qat_status qat_metrics_append(const char *path, const qat_metrics *m, qat_error *err) {
    struct stat st;
    bool fresh = stat(path, &st) != 0 || st.st_size == 0;
    FILE *f = fopen(path, "a");
    if (!f) return qat_error_set(err, QAT_STATUS_IO, "%s: cannot open for appending: %s", path, strerror(errno));
    if (is_csv(path)) {
        if (fresh)
            fprintf(f, "epoch,step,lr,train_loss,train_acc,test_loss,test_acc,seconds,samples_per_s\n");
        fprintf(f, "%d,%ld,%.9g,%.6f,%.6f,%.6f,%.6f,%.3f,%.1f\n", m->epoch, m->step, m->lr,
                m->train_loss, m->train_acc, m->test_loss, m->test_acc, m->seconds, m->samples_per_s);
    } else {
        fprintf(f,
                "{\"epoch\": %d, \"step\": %ld, \"lr\": %.9g, \"train_loss\": %.6f, "
                "\"train_acc\": %.6f, \"test_loss\": %.6f, \"test_acc\": %.6f, "
                "\"seconds\": %.3f, \"samples_per_s\": %.1f}\n",
                m->epoch, m->step, m->lr, m->train_loss, m->train_acc, m->test_loss, m->test_acc,
                m->seconds, m->samples_per_s);
    }
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) return qat_error_set(err, QAT_STATUS_IO, "%s: write failed", path);
    return QAT_STATUS_OK;
}

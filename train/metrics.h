/* metrics.h - one record per epoch appended to a log file, CSV or JSON lines.
 *
 * The format follows the file name: ".csv" gives a CSV file with a header line (written
 * when the file is new or empty), anything else (".jsonl", ".json", ...) one JSON object
 * per line. Appending means a resumed run continues the same log.
 */
#ifndef QAT_METRICS_H
#define QAT_METRICS_H

#include "autograd/common.h"

typedef struct qat_metrics {
    int epoch;          /* 1-based */
    long step;          /* optimizer steps so far */
    double lr;          /* learning rate of the last step */
    double train_loss, train_acc; /* mean over the epoch; accuracy in [0, 1] */
    double test_loss, test_acc;   /* negative when not evaluated */
    double seconds;     /* training time of the epoch */
    double samples_per_s;
} qat_metrics;

qat_status qat_metrics_append(const char *path, const qat_metrics *m, qat_error *err);

#endif

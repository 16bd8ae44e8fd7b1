#include "common.h"

#include <string.h>

const char *qat_status_str(qat_status s) {
    switch (s) {
    case QAT_STATUS_OK: return "ok";
    case QAT_STATUS_INVALID_ARG: return "invalid argument";
    case QAT_STATUS_SHAPE: return "shape mismatch";
    case QAT_STATUS_NOMEM: return "out of memory";
    case QAT_STATUS_IO: return "i/o error";
    case QAT_STATUS_FORMAT: return "bad file format";
    case QAT_STATUS_NUMERIC: return "non-finite number";
    }
    return "unknown status";
}

qat_status qat_error_set(qat_error *err, qat_status s, const char *fmt, ...) {
    if (err && err->status == QAT_STATUS_OK) {
        err->status = s;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return s;
}

void qat_error_clear(qat_error *err) {
    err->status = QAT_STATUS_OK;
    err->msg[0] = '\0';
}

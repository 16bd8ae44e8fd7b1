/* comm.c - the single-process default of comm.h. */
#include "comm.h"

static const qat_comm SINGLE = {0, 1, NULL, NULL, NULL, NULL, NULL, NULL};
static const qat_comm *current = &SINGLE;

const qat_comm *qat_comm_get(void) { return current; }

void qat_comm_set(const qat_comm *c) { current = c ? c : &SINGLE; }

qat_status qat_comm_sum(float *x, size_t n) {
    return current->size > 1 && current->sum ? current->sum(x, n, current->impl) : QAT_STATUS_OK;
}

qat_status qat_comm_minmax(float *lo, float *hi) {
    return current->size > 1 && current->minmax ? current->minmax(lo, hi, current->impl) : QAT_STATUS_OK;
}

qat_status qat_comm_sum_f64(double *x, size_t n) {
    return current->size > 1 && current->sum_f64 ? current->sum_f64(x, n, current->impl) : QAT_STATUS_OK;
}

qat_status qat_comm_sum_u64(uint64_t *x, size_t n) {
    return current->size > 1 && current->sum_u64 ? current->sum_u64(x, n, current->impl) : QAT_STATUS_OK;
}

qat_status qat_comm_max(float *x, size_t n) {
    return current->size > 1 && current->max ? current->max(x, n, current->impl) : QAT_STATUS_OK;
}

static bool sync_bn;
static float share = 1.0f;

void qat_comm_set_sync_bn(bool on) { sync_bn = on; }
bool qat_comm_sync_bn(void) { return sync_bn && current->size > 1; }
void qat_comm_set_share(float w) { share = w; }
float qat_comm_share(void) { return share; }

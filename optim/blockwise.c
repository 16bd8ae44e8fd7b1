/* blockwise.c - the dynamic map and block-wise 8-bit quantization (blockwise.h). */
#include "optim/blockwise.h"

#include <pthread.h>

#include "autograd/common.h"

static float maps[2][256]; /* [0] unsigned, [1] signed */
static pthread_once_t maps_once = PTHREAD_ONCE_INIT;

/* 10^-E for E = 0..6, as decimal literals (correctly rounded, as Python's are). */
static const double POW10[7] = {1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6};

static void build_map(float *out, bool is_signed) {
    double v[256];
    int n = 0;
    for (int e = 0; e <= 6; e++) {
        const int bins = 1 << (is_signed ? 6 - e : 7 - e);
        for (int k = 0; k < bins; k++) {
            double lo = 0.1 + 0.9 * k / bins, hi = 0.1 + 0.9 * (k + 1) / bins;
            double x = POW10[e] * ((lo + hi) / 2.0);
            v[n++] = x;
            if (is_signed) v[n++] = -x;
        }
    }
    v[n++] = 0.0;
    v[n++] = 1.0;
    QAT_ASSERT(n == 256);
    /* insertion sort: 256 distinct values, once */
    for (int i = 1; i < 256; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    for (int i = 0; i < 256; i++) out[i] = (float)v[i];
}

static void build_maps(void) {
    build_map(maps[0], false);
    build_map(maps[1], true);
}

const float *qat_dynamic_map(bool is_signed) {
    pthread_once(&maps_once, build_maps);
    return maps[is_signed ? 1 : 0];
}

uint8_t qat_dynamic_code(const float *map, float x) {
    if (!(x > map[0])) return 0; /* below the first value, or NaN */
    if (x >= map[255]) return 255;
    int lo = 0, hi = 255; /* map[lo] < x < map[hi] or map[lo] == x */
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (map[mid] <= x) lo = mid;
        else hi = mid;
    }
    return (uint8_t)(x - map[lo] <= map[hi] - x ? lo : hi);
}

void qat_blockq_quantize(uint8_t *codes, float *absmax, const float *x, size_t n, size_t block,
                         const float *map) {
    QAT_ASSERT(block > 0);
    const uint8_t zero = qat_dynamic_code(map, 0.0f);
    for (size_t b = 0, i0 = 0; i0 < n; b++, i0 += block) {
        const size_t i1 = n - i0 < block ? n : i0 + block;
        float a = 0.0f;
        for (size_t i = i0; i < i1; i++) {
            float m = x[i] < 0 ? -x[i] : x[i];
            a = m > a ? m : a;
        }
        absmax[b] = a;
        for (size_t i = i0; i < i1; i++) codes[i] = a > 0.0f ? qat_dynamic_code(map, x[i] / a) : zero;
    }
}

void qat_blockq_dequantize(float *x, const uint8_t *codes, const float *absmax, size_t n,
                           size_t block, const float *map) {
    QAT_ASSERT(block > 0);
    for (size_t i = 0; i < n; i++) x[i] = map[codes[i]] * absmax[i / block];
}

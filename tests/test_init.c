/* test_init.c - parameter initialisation (layers/init.h).
 *
 *  - kaiming_uniform with a = sqrt(5) (PyTorch's default for Linear and Conv2d) stays
 *    within +-1/sqrt(fan_in) and reaches its edges; with a = 0 the bound is
 *    sqrt(6/fan_in);
 *  - on a large sample the values look uniform: mean ~0, variance ~bound^2/3, every
 *    tenth of the range about equally full;
 *  - bias_uniform stays within +-1/sqrt(fan_in); fill fills;
 *  - the same seed gives the same values, another seed other values, and successive
 *    calls continue the stream.
 */
#include <math.h>
#include <string.h>

#include "autograd/rng.h"
#include "layers/init.h"
#include "testutil.h"

enum { N_LARGE = 100000 };

/* Checks range, coverage, mean, variance and a 10-bin histogram of U(-bound, bound).
 * The float draw lo + (hi - lo) u can round up to the bound itself, so the range check
 * allows one part in 1e6. Tolerances are several standard deviations wide: the mean's sd
 * is bound / sqrt(3 N) (0.2% of bound), the variance's relative sd is 0.3%, a bin's
 * relative sd is 1%. */
static void check_uniform(const float *w, size_t n, double bound, const char *what) {
    double sum = 0, sum2 = 0, maxabs = 0;
    size_t bins[10] = {0};
    for (size_t i = 0; i < n; i++) {
        double v = w[i];
        if (!(fabs(v) <= bound * (1 + 1e-6)))
            fail_msg("%s: w[%zu] = %.9g outside +-%.9g", what, i, v, bound);
        sum += v;
        sum2 += v * v;
        maxabs = fmax(maxabs, fabs(v));
        int b = (int)((v + bound) / (2 * bound) * 10);
        bins[b < 0 ? 0 : b > 9 ? 9 : b]++;
    }
    double mean = sum / (double)n, var = sum2 / (double)n - mean * mean;
    if (maxabs < 0.999 * bound)
        fail_msg("%s: largest |w| %.6g does not reach the bound %.6g", what, maxabs, bound);
    if (fabs(mean) > 0.01 * bound) fail_msg("%s: mean %.6g, expected ~0", what, mean);
    double want_var = bound * bound / 3;
    if (fabs(var - want_var) > 0.02 * want_var)
        fail_msg("%s: variance %.6g, expected %.6g (bound^2 / 3)", what, var, want_var);
    for (int b = 0; b < 10; b++)
        if (fabs((double)bins[b] - (double)n / 10) > 0.1 * (double)n / 10)
            fail_msg("%s: bin %d of 10 holds %zu values, expected ~%zu", what, b, bins[b], n / 10);
}

static void test_kaiming_uniform_default(void **state) {
    (void)state;
    const int fan_ins[] = {75, 784, 9};
    float *w = malloc(N_LARGE * sizeof(float));
    for (int k = 0; k < 3; k++) {
        qat_rng rng;
        qat_rng_init(&rng, 42 + (uint64_t)k);
        qat_init_kaiming_uniform(w, N_LARGE, fan_ins[k], sqrtf(5.0f), &rng);
        char what[64];
        snprintf(what, sizeof what, "kaiming_uniform(a = sqrt 5, fan_in %d)", fan_ins[k]);
        check_uniform(w, N_LARGE, 1.0 / sqrt((double)fan_ins[k]), what);
    }
    free(w);
}

static void test_kaiming_uniform_a0(void **state) {
    (void)state;
    float *w = malloc(N_LARGE * sizeof(float));
    qat_rng rng;
    qat_rng_init(&rng, 7);
    qat_init_kaiming_uniform(w, N_LARGE, 50, 0.0f, &rng);
    check_uniform(w, N_LARGE, sqrt(6.0 / 50), "kaiming_uniform(a = 0, fan_in 50)");
    free(w);
}

static void test_bias_uniform(void **state) {
    (void)state;
    float *b = malloc(N_LARGE * sizeof(float));
    qat_rng rng;
    qat_rng_init(&rng, 8);
    qat_init_bias_uniform(b, N_LARGE, 20, &rng);
    check_uniform(b, N_LARGE, 1.0 / sqrt(20.0), "bias_uniform(fan_in 20)");
    free(b);
}

static void test_init_deterministic(void **state) {
    (void)state;
    enum { N = 1000 };
    float a[N], b[N], c[N], d[N];
    qat_rng r1, r2, r3;
    qat_rng_init(&r1, 123);
    qat_rng_init(&r2, 123);
    qat_rng_init(&r3, 124);
    qat_init_kaiming_uniform(a, N, 64, sqrtf(5.0f), &r1);
    qat_init_kaiming_uniform(b, N, 64, sqrtf(5.0f), &r2);
    qat_init_kaiming_uniform(c, N, 64, sqrtf(5.0f), &r3);
    assert_memory_equal(a, b, sizeof a);
    size_t same = 0;
    for (int i = 0; i < N; i++) same += a[i] == c[i];
    if (same > 5) fail_msg("seeds 123 and 124 agree on %zu of %d values", same, N);
    /* The generators advanced alike: the next draws agree too, and differ from the first. */
    qat_init_bias_uniform(a, N, 64, &r1);
    qat_init_bias_uniform(d, N, 64, &r2);
    assert_memory_equal(a, d, sizeof a);
    same = 0;
    for (int i = 0; i < N; i++) same += a[i] == b[i];
    if (same > 5) fail_msg("a second call repeated %zu of %d values of the first", same, N);
}

static void test_init_fill(void **state) {
    (void)state;
    float x[37];
    qat_init_fill(x, 37, 1.0f);
    for (int i = 0; i < 37; i++) assert_true(x[i] == 1.0f);
    qat_init_fill(x, 37, 0.0f);
    for (int i = 0; i < 37; i++) assert_true(x[i] == 0.0f);
    qat_init_fill(x, 0, 5.0f); /* n = 0 writes nothing */
    assert_true(x[0] == 0.0f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kaiming_uniform_default),
        cmocka_unit_test(test_kaiming_uniform_a0),
        cmocka_unit_test(test_bias_uniform),
        cmocka_unit_test(test_init_deterministic),
        cmocka_unit_test(test_init_fill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

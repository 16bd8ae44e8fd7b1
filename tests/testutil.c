#include "testutil.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "autograd/rng.h"

static uint32_t read_u32(FILE *f, const char *path) {
    unsigned char b[4];
    if (fread(b, 1, 4, f) != 4) fail_msg("fixture %s: truncated", path);
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

qat_fixture *fixture_load(const char *file) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", QAT_FIXTURE_DIR, file);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open fixture %s (regenerate with tests/fixtures/*.py)", path);
    if (read_u32(f, path) != QAT_FIXTURE_MAGIC) fail_msg("fixture %s: bad magic", path);
    uint32_t version = read_u32(f, path);
    if (version != QAT_FIXTURE_VERSION)
        fail_msg("fixture %s: version %u, expected %u", path, version, QAT_FIXTURE_VERSION);
    qat_fixture *fx = calloc(1, sizeof *fx);
    fx->count = (int)read_u32(f, path);
    if (fx->count < 0 || fx->count > 100000) fail_msg("fixture %s: bad count", path);
    fx->entries = calloc((size_t)fx->count, sizeof *fx->entries);
    for (int i = 0; i < fx->count; i++) {
        qat_fixture_entry *e = &fx->entries[i];
        uint32_t len = read_u32(f, path);
        if (len >= sizeof e->name) fail_msg("fixture %s: name too long", path);
        if (fread(e->name, 1, len, f) != len) fail_msg("fixture %s: truncated", path);
        e->name[len] = '\0';
        e->ndim = (int)read_u32(f, path);
        if (e->ndim < 0 || e->ndim > 8) fail_msg("fixture %s: %s has bad ndim", path, e->name);
        e->n = 1;
        for (int d = 0; d < e->ndim; d++) {
            e->shape[d] = (int)read_u32(f, path);
            e->n *= (size_t)e->shape[d];
        }
        e->data = malloc((e->n ? e->n : 1) * sizeof(float));
        if (fread(e->data, sizeof(float), e->n, f) != e->n)
            fail_msg("fixture %s: %s truncated", path, e->name);
    }
    fclose(f);
    return fx;
}

void fixture_free(qat_fixture *f) {
    if (!f) return;
    for (int i = 0; i < f->count; i++) free(f->entries[i].data);
    free(f->entries);
    free(f);
}

const qat_fixture_entry *fixture_entry(const qat_fixture *f, const char *name) {
    for (int i = 0; i < f->count; i++)
        if (strcmp(f->entries[i].name, name) == 0) return &f->entries[i];
    fail_msg("fixture has no entry '%s'", name);
    return NULL;
}

const float *fixture_get(const qat_fixture *f, const char *name, size_t n) {
    const qat_fixture_entry *e = fixture_entry(f, name);
    if (n && e->n != n) fail_msg("fixture '%s' has %zu elements, expected %zu", name, e->n, n);
    return e->data;
}

void assert_close(const float *got, const float *want, size_t n, double rtol, double atol,
                  const char *what) {
    for (size_t i = 0; i < n; i++) {
        double g = got[i], w = want[i];
        if (!(fabs(g - w) <= atol + rtol * fabs(w)))
            fail_msg("%s: first mismatch at [%zu]: got %.9g, expected %.9g (|diff| %.3g, "
                     "rtol %.1g, atol %.1g)",
                     what, i, g, w, fabs(g - w), rtol, atol);
    }
}

qat_tensor *test_tensor_new(int ndim, const int *shape) {
    qat_tensor *x = calloc(1, sizeof *x);
    qat_tensor_set_shape(x, ndim, shape);
    x->data = calloc(x->n, sizeof(float));
    x->grad = calloc(x->n, sizeof(float));
    return x;
}

void test_tensor_free(qat_tensor *x) {
    if (!x) return;
    free(x->data);
    free(x->grad);
    free(x);
}

void fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed) {
    qat_rng r;
    qat_rng_init(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = qat_rng_range(&r, lo, hi);
}

qat_tensor *test_tensor_filled(int ndim, const int *shape, float lo, float hi, uint64_t seed) {
    qat_tensor *x = test_tensor_new(ndim, shape);
    fill_uniform(x->data, x->n, lo, hi, seed);
    return x;
}

const float *fixture_field(const qat_fixture *f, const char *c, const char *field, size_t n) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", c, field);
    return fixture_get(f, name, n);
}

qat_tensor *fixture_tensor(const qat_fixture *f, const char *c, const char *field) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", c, field);
    const qat_fixture_entry *e = fixture_entry(f, name);
    if (e->ndim < 1 || e->ndim > QAT_MAX_DIMS) fail_msg("fixture '%s' has %d dims", name, e->ndim);
    qat_tensor *x = test_tensor_new(e->ndim, e->shape);
    memcpy(x->data, e->data, e->n * sizeof(float));
    return x;
}

void fixture_check(const qat_fixture *f, const char *c, const char *field, const float *got,
                   size_t n) {
    char name[128];
    snprintf(name, sizeof name, "%s.%s", c, field);
    assert_close(got, fixture_get(f, name, n), n, FIXTURE_RTOL, FIXTURE_ATOL, name);
}

void assert_shape(const qat_tensor *y, int ndim, const int *shape, const char *what) {
    if (y->ndim != ndim) fail_msg("%s: ndim %d, expected %d", what, y->ndim, ndim);
    for (int i = 0; i < ndim; i++)
        if (y->shape[i] != shape[i])
            fail_msg("%s: dim %d is %d, expected %d", what, i, y->shape[i], shape[i]);
}

static bool contains_ci(const char *s, const char *sub) {
    size_t n = strlen(sub);
    for (; *s; s++) {
        size_t i = 0;
        while (i < n && s[i] && tolower((unsigned char)s[i]) == tolower((unsigned char)sub[i]))
            i++;
        if (i == n) return true;
    }
    return false;
}

void assert_op_failed(const qat_tape *t, const qat_tensor *y, const char *ops, const char *what) {
    if (y) fail_msg("%s: expected NULL, got a tensor", what);
    if (t->err.status == QAT_STATUS_OK) fail_msg("%s: returned NULL but err.status is OK", what);
    if (t->err.msg[0] == '\0') fail_msg("%s: empty error message", what);
    char buf[128];
    snprintf(buf, sizeof buf, "%s", ops);
    char *save = NULL;
    for (char *tok = strtok_r(buf, "|", &save); tok; tok = strtok_r(NULL, "|", &save))
        if (contains_ci(t->err.msg, tok)) return;
    fail_msg("%s: message \"%s\" does not mention \"%s\"", what, t->err.msg, ops);
}

/* L = sum_i w_i y_i in double; w is a fixed function of i so every call agrees. */
static double weighted_sum(const qat_tensor *y, const float *w) {
    double s = 0;
    for (size_t i = 0; i < y->n; i++) s += (double)w[i] * (double)y->data[i];
    return s;
}

static qat_tensor *run_forward(qat_tape *t, fd_forward_fn forward, void *user, const char *what) {
    qat_tape_reset(t);
    qat_tensor *y = forward(t, user);
    if (!y) fail_msg("%s: forward failed: %s", what, t->err.msg);
    return y;
}

void fd_check(qat_tape *t, fd_forward_fn forward, void *user, qat_tensor *x, float eps,
              double rtol, double atol, size_t max_points, fd_kink_fn on_kink, const char *what) {
    QAT_ASSERT(x->grad != NULL);
    memset(x->grad, 0, x->n * sizeof(float));
    qat_tensor *y = run_forward(t, forward, user, what);
    size_t ny = y->n;
    float *w = malloc(ny * sizeof(float));
    fill_uniform(w, ny, -1.0f, 1.0f, 1234);
    if (qat_tape_backward_seeded(t, y, w) != QAT_STATUS_OK)
        fail_msg("%s: backward failed: %s", what, t->err.msg);
    float *analytic = malloc(x->n * sizeof(float));
    memcpy(analytic, x->grad, x->n * sizeof(float));

    size_t stride = 1;
    if (max_points && x->n > max_points) stride = (x->n + max_points - 1) / max_points;
    size_t checked = 0;
    for (size_t i = 0; i < x->n; i += stride) {
        if (on_kink && on_kink(user, x, i, eps)) continue;
        float orig = x->data[i];
        x->data[i] = orig + eps;
        double lp = weighted_sum(run_forward(t, forward, user, what), w);
        x->data[i] = orig - eps;
        double lm = weighted_sum(run_forward(t, forward, user, what), w);
        x->data[i] = orig;
        /* The perturbation actually applied, in float. */
        double h = ((double)(orig + eps) - (double)(orig - eps));
        double numeric = (lp - lm) / h;
        double a = analytic[i];
        if (!(fabs(a - numeric) <= atol + rtol * fabs(numeric)))
            fail_msg("%s: gradient mismatch at [%zu]: analytic %.7g, finite difference %.7g "
                     "(eps %g)",
                     what, i, a, numeric, (double)eps);
        checked++;
    }
    if (checked == 0) fail_msg("%s: no point was checked (all on kinks?)", what);
    free(analytic);
    free(w);
}

qat_tensor *test_tensor_from(int ndim, const int *shape, const float *v) {
    qat_tensor *t = test_tensor_new(ndim, shape);
    memcpy(t->data, v, t->n * sizeof(float));
    return t;
}

void assert_same(const float *got, const float *want, const float *inp, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++) {
        if (isnan(got[i]) && isnan(want[i])) continue;
        if (!(got[i] == want[i]))
            fail_msg("%s: first mismatch at [%zu] (x = %.9g): got %.9g, expected %.9g", what, i,
                     (double)inp[i], (double)got[i], (double)want[i]);
    }
}

int test_run_cli(const char *dir, const char *cli, char *out, size_t n, const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd %s && %s %s 2>&1", dir, cli, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t len = fread(out, 1, n - 1, p);
    out[len] = '\0';
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

double test_json_number(const char *json, const char *key) {
    char k[128];
    snprintf(k, sizeof k, "\"%s\": ", key);
    const char *p = strstr(json, k);
    if (!p) fail_msg("no %s in: %s", key, json);
    return strtod(p + strlen(k), NULL);
}

uint64_t rnext(trng *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int64_t rint_in(trng *r, int64_t lo, int64_t hi) {
    return lo + (int64_t)(rnext(r) % (uint64_t)(hi - lo + 1));
}

void fill_s8(trng *r, int8_t *x, size_t n, int lo, int hi) {
    for (size_t i = 0; i < n; i++) x[i] = (int8_t)rint_in(r, lo, hi);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) fail_msg("out of memory (%zu bytes)", n);
    return p;
}

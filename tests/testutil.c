#include "testutil.h"

#include <ctype.h>
#include <stdarg.h>
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

void assert_bits_equal(const float *got, const float *want, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
            fail_msg("%s [%zu]: got %.9g, expected %.9g", what, i, (double)got[i], (double)want[i]);
}

void *test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) fail_msg("cannot seek in %s", path);
    char *b = malloc((size_t)n + 1);
    if (!b) fail_msg("out of memory reading %s", path);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) fail_msg("cannot read %s", path);
    fclose(f);
    b[n] = '\0';
    if (len) *len = (size_t)n;
    return b;
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

/* ---- safetensors files built by hand ----------------------------------------------------- */

/* A shift that maps a typical accumulator of K products with weights up to maxw to tens
 * of levels (so that outputs are neither all clamped nor all zero), +-1. */
int typical_shift(trng *r, size_t K, int maxw) {
    double acc = sqrt((double)K) * 74.0 * (maxw / sqrt(3.0)) * 0.75 / 40.0;
    return -(int)lround(log2(acc > 1 ? acc : 1)) + (int)rint_in(r, -1, 1);
}

/* Random per-channel integers: weights within wbits, bias, M0, shift. */
void gen_channel_params(trng *r, int OC, size_t K, int wbits, int8_t *w, int32_t *b,
                               int32_t *m, int32_t *s) {
    int lim = (1 << (wbits - 1)) - 1;
    fill_s8(r, w, (size_t)OC * K, -lim, lim);
    for (int c = 0; c < OC; c++) {
        b[c] = (int32_t)rint_in(r, -5000, 5000);
        m[c] = (int32_t)rint_in(r, (int64_t)1 << 30, INT32_MAX);
        s[c] = typical_shift(r, K, lim);
    }
}

ttensor *tf_add(tfile *tf, const char *name, const char *dtype, int ndim, const int64_t *shape,
                       const void *data, size_t nbytes) {
    ttensor *t = &tf->t[tf->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->ndim = ndim;
    memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
    t->data = xmalloc(nbytes);
    memcpy(t->data, data, nbytes);
    t->nbytes = nbytes;
    return t;
}

void tf_free(tfile *tf) {
    for (int i = 0; i < tf->n; i++) free(tf->t[i].data);
}

void tf_add_i32(tfile *tf, const char *name, const int32_t *v, int n) {
    uint8_t *b = xmalloc((size_t)n * 4);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) b[4 * i + k] = (uint8_t)((uint32_t)v[i] >> (8 * k));
    tf_add(tf, name, "I32", 1, (int64_t[]){n}, b, (size_t)n * 4);
    free(b);
}

/* Two 4-bit two's-complement weights per byte, weight 2i in the low nibble. */
void tf_add_packed(tfile *tf, const char *name, const int8_t *w, size_t n) {
    size_t nb = (n + 1) / 2;
    uint8_t *b = xmalloc(nb);
    for (size_t i = 0; i < nb; i++) {
        uint8_t lo = (uint8_t)(w[2 * i] & 0xF), hi = 2 * i + 1 < n ? (uint8_t)(w[2 * i + 1] & 0xF) : 0;
        b[i] = (uint8_t)(lo | hi << 4);
    }
    tf_add(tf, name, "U8", 1, (int64_t[]){(int64_t)nb}, b, nb);
    free(b);
}

void gappend(tfile *tf, const char *fmt, ...) {
    size_t used = strlen(tf->graph);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tf->graph + used, sizeof tf->graph - used, fmt, ap);
    va_end(ap);
}

/* The header JSON: metadata (format, version, the graph JSON-escaped), then the tensors
 * with contiguous offsets in their order. */
char *tf_header(tfile *tf, const char *format, const char *version) {
    size_t cap = 65536, used = 0;
    char *h = xmalloc(cap);
    used += (size_t)snprintf(h + used, cap - used,
                             "{\"__metadata__\":{\"format\":\"%s\",\"format_version\":\"%s\","
                             "\"source\":\"test_runtime \\\"built by hand\\\"\",\"graph\":\"",
                             format, version);
    for (const char *p = tf->graph; *p; p++) {
        if (*p == '\n') h[used++] = '\\', h[used++] = 'n';
        else if (*p == '"' || *p == '\\') h[used++] = '\\', h[used++] = *p;
        else h[used++] = *p;
    }
    used += (size_t)snprintf(h + used, cap - used, "\"}");
    size_t off = 0;
    for (int i = 0; i < tf->n; i++) {
        ttensor *t = &tf->t[i];
        t->offset = off;
        used += (size_t)snprintf(h + used, cap - used, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name, t->dtype);
        for (int d = 0; d < t->ndim; d++)
            used += (size_t)snprintf(h + used, cap - used, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        used += (size_t)snprintf(h + used, cap - used, "],\"data_offsets\":[%zu,%zu]}", off, off + t->nbytes);
        off += t->nbytes;
    }
    snprintf(h + used, cap - used, "}");
    return h;
}

/* uint64 N | header padded with spaces to a multiple of 8 | data. */
uint8_t *pack_file(const char *header, const uint8_t *data, size_t data_len, size_t *len) {
    size_t hl = strlen(header), N = (hl + 7) / 8 * 8;
    uint8_t *f = xmalloc(8 + N + data_len);
    for (int i = 0; i < 8; i++) f[i] = (uint8_t)((uint64_t)N >> (8 * i));
    memcpy(f + 8, header, hl);
    memset(f + 8 + hl, ' ', N - hl);
    if (data_len) memcpy(f + 8 + N, data, data_len);
    *len = 8 + N + data_len;
    return f;
}

uint8_t *tf_bytes_with(tfile *tf, const char *header, size_t *len) {
    size_t total = 0;
    for (int i = 0; i < tf->n; i++) total += tf->t[i].nbytes;
    uint8_t *data = xmalloc(total);
    for (int i = 0, off = 0; i < tf->n; off += (int)tf->t[i].nbytes, i++)
        memcpy(data + off, tf->t[i].data, tf->t[i].nbytes);
    uint8_t *f = pack_file(header, data, total, len);
    free(data);
    return f;
}

/* A copy of s with the first occurrence of a replaced by b; fails the test if absent. */
char *replace1(const char *s, const char *a, const char *b) {
    const char *at = strstr(s, a);
    if (!at) fail_msg("test bug: '%s' not found in '%.200s...'", a, s);
    size_t la = strlen(a), lb = strlen(b), ls = strlen(s);
    char *r = xmalloc(ls - la + lb + 1);
    memcpy(r, s, (size_t)(at - s));
    memcpy(r + (at - s), b, lb);
    strcpy(r + (at - s) + lb, at + la);
    return r;
}


void tlayer_init(tlayer *L, trng *r, int OC, size_t K, int wbits) {
    L->OC = OC, L->K = K, L->wbits = wbits;
    L->w = xmalloc((size_t)OC * K);
    L->b = xmalloc((size_t)OC * 4), L->m = xmalloc((size_t)OC * 4), L->s = xmalloc((size_t)OC * 4);
    gen_channel_params(r, OC, K, wbits, L->w, L->b, L->m, L->s);
}

void tlayer_free(tlayer *L) { free(L->w), free(L->b), free(L->m), free(L->s); }

/* Adds <name>.weight (I8 with wshape, or packed U8), .bias, .mult, .shift. */
void tf_add_layer(tfile *tf, const char *name, const tlayer *L, bool packed, int wndim,
                         const int64_t *wshape) {
    char n[48];
    snprintf(n, sizeof n, "%s.weight", name);
    if (packed) tf_add_packed(tf, n, L->w, (size_t)L->OC * L->K);
    else tf_add(tf, n, "I8", wndim, wshape, L->w, (size_t)L->OC * L->K);
    snprintf(n, sizeof n, "%s.bias", name);
    tf_add_i32(tf, n, L->b, L->OC);
    snprintf(n, sizeof n, "%s.mult", name);
    tf_add_i32(tf, n, L->m, L->OC);
    snprintf(n, sizeof n, "%s.shift", name);
    tf_add_i32(tf, n, L->s, L->OC);
}


const qrt_add_params ADD4 = {.z_a = -100, .z_b = 7, .z_out = -20, .mult_a = ADD_A_M0,
                                    .shift_a = 0, .mult_b = ADD_B_M0, .shift_b = -1,
                                    .mult_out = ADD_OUT_M0, .shift_out = -19, .act_min = -128,
                                    .act_max = 127};
const qrt_add_params ADD13 = {.z_a = -3, .z_b = 4, .z_out = 1, .mult_a = ADD_A_M0,
                                     .shift_a = 0, .mult_b = ADD_B_M0, .shift_b = 0,
                                     .mult_out = ADD_OUT_M0, .shift_out = -20, .act_min = -128,
                                     .act_max = 127};


const qrt_conv_params P_C1 = {.C = 3, .H = 9, .W = 9, .OC = 8, .OH = 9, .OW = 9, .k = 3, .stride = 1,
                                     .pad = 1, .groups = 1, .z_in = -5, .z_out = -100, .act_min = -100, .act_max = 127};
const qrt_pool_params P_MP = {.C = 8, .H = 9, .W = 9, .OH = 5, .OW = 5, .k = 3, .stride = 2, .pad = 1, .z_in = -100};
const qrt_conv_params P_DW = {.C = 8, .H = 5, .W = 5, .OC = 8, .OH = 5, .OW = 5, .k = 3, .stride = 1,
                                     .pad = 1, .groups = 8, .z_in = -100, .z_out = 7, .act_min = 7, .act_max = 100};
const qrt_pool_params P_AP = {.C = 8, .H = 5, .W = 5, .OH = 3, .OW = 3, .k = 3, .stride = 2, .pad = 1, .z_in = -20};
const qrt_conv_params P_C2 = {.C = 3, .H = 9, .W = 9, .OC = 5, .OH = 4, .OW = 4, .k = 3, .stride = 2,
                                     .pad = 0, .groups = 1, .z_in = -5, .z_out = 0, .act_min = -128, .act_max = 127};
const qrt_conv_params P_G = {.C = 8, .H = 3, .W = 3, .OC = 6, .OH = 2, .OW = 2, .k = 3, .stride = 2,
                                    .pad = 1, .groups = 2, .z_in = -20, .z_out = 12, .act_min = -128, .act_max = 127};
const qrt_linear_params P_FC1 = {.F_in = 24, .F_out = 10, .z_in = 12, .z_out = -3, .act_min = -128, .act_max = 127};
const qrt_linear_params P_FC2 = {.F_in = 5, .F_out = 10, .z_in = 0, .z_out = 4, .act_min = -128, .act_max = 127};

static void conv_line(tfile *tf, int in, int out, const qrt_conv_params *p, const char *name, int wbits,
                      const char *s) {
    gappend(tf, "conv2d in=%d out=%d shape=%d,%d,%d k=%d stride=%d pad=%d groups=%d weight=%s.weight "
            "bias=%s.bias mult=%s.mult shift=%s.shift wbits=%d z_in=%d z_out=%d act_min=%d act_max=%d s=%s\n",
            in, out, p->OC, p->OH, p->OW, p->k, p->stride, p->pad, p->groups, name, name, name, name,
            wbits, p->z_in, p->z_out, p->act_min, p->act_max, s);
}

static void linear_line(tfile *tf, int in, int out, const qrt_linear_params *p, const char *name,
                        int wbits) {
    gappend(tf, "linear in=%d out=%d shape=%d weight=%s.weight bias=%s.bias mult=%s.mult "
            "shift=%s.shift wbits=%d z_in=%d z_out=%d act_min=%d act_max=%d s=0.1358\n",
            in, out, p->F_out, name, name, name, name, wbits, p->z_in, p->z_out, p->act_min, p->act_max);
}

static void add_line(tfile *tf, int a, int b, int out, const char *shape, const qrt_add_params *p) {
    gappend(tf, "add in=%d,%d out=%d shape=%s z_a=%d z_b=%d z_out=%d mult_a=%d shift_a=%d mult_b=%d "
            "shift_b=%d mult_out=%d shift_out=%d act_min=%d act_max=%d s=0.2\n",
            a, b, out, shape, p->z_a, p->z_b, p->z_out, p->mult_a, p->shift_a, p->mult_b,
            p->shift_b, p->mult_out, p->shift_out, p->act_min, p->act_max);
}

void tmodel_init(tmodel *tm, uint64_t seed) {
    trng r = {seed};
    memset(tm, 0, sizeof *tm);
    tlayer_init(&tm->c1, &r, 8, 27, 8);
    tlayer_init(&tm->dw, &r, 8, 9, 4);
    tlayer_init(&tm->c2, &r, 5, 27, 4);
    tlayer_init(&tm->g, &r, 6, 36, 8);
    tlayer_init(&tm->fc1, &r, 10, 24, 8);
    tlayer_init(&tm->fc2, &r, 10, 5, 3);
    /* Their inputs are far from their zero points (after ReLU and max, after the global
     * mean): two more bits of right shift keep most outputs inside the clamp. */
    for (int c = 0; c < 8; c++) tm->dw.s[c] -= 2;
    for (int c = 0; c < 10; c++) tm->fc2.s[c] -= 2;
    tfile *tf = &tm->tf;
    tf_add_layer(tf, "c1", &tm->c1, false, 4, (int64_t[]){8, 3, 3, 3});
    tf_add_layer(tf, "dw", &tm->dw, true, 0, NULL);
    tf_add_layer(tf, "c2", &tm->c2, true, 0, NULL);
    tf_add_layer(tf, "g", &tm->g, false, 4, (int64_t[]){6, 4, 3, 3});
    tf_add_layer(tf, "fc1", &tm->fc1, false, 2, (int64_t[]){10, 24});
    tf_add_layer(tf, "fc2", &tm->fc2, false, 2, (int64_t[]){10, 5});
    gappend(tf, "input out=0 shape=3,9,9 s=0.011109 z=-5\n");
    conv_line(tf, 0, 1, &P_C1, "c1", 8, "0.0373");
    gappend(tf, "maxpool in=1 out=2 shape=8,5,5 k=3 stride=2 pad=1\n");
    conv_line(tf, 2, 3, &P_DW, "dw", 4, "0.02");
    add_line(tf, 2, 3, 4, "8,5,5", &ADD4);
    gappend(tf, "avgpool in=4 out=5 shape=8,3,3 k=3 stride=2 pad=1\n");
    conv_line(tf, 0, 6, &P_C2, "c2", 4, "0.05");
    conv_line(tf, 5, 7, &P_G, "g", 8, "0.04");
    gappend(tf, "flatten in=7 out=8 shape=24\n");
    gappend(tf, "global_avgpool in=6 out=9 shape=5,1,1\n");
    linear_line(tf, 8, 10, &P_FC1, "fc1", 8);
    gappend(tf, "flatten in=9 out=11 shape=5\n");
    linear_line(tf, 11, 12, &P_FC2, "fc2", 3);
    add_line(tf, 10, 12, 13, "10", &ADD13);
    gappend(tf, "output in=13\n");
}

void tmodel_free(tmodel *tm) {
    tlayer_free(&tm->c1), tlayer_free(&tm->dw), tlayer_free(&tm->c2);
    tlayer_free(&tm->g), tlayer_free(&tm->fc1), tlayer_free(&tm->fc2);
    tf_free(&tm->tf);
}

uint8_t *tmodel_bytes(tmodel *tm, size_t *len) {
    char *h = tf_header(&tm->tf, "qat-int8", "1");
    uint8_t *f = tf_bytes_with(&tm->tf, h, len);
    free(h);
    return f;
}


/* ---- damaged safetensors headers ---------------------------------------------------------- */

/* The runtime's loader (test_runtime): JSON syntax and container rules, with the words
 * its message must contain; then the metadata a model file needs (format, version,
 * graph), which the container itself does not check. */
const runtime_bad_header runtime_bad_headers[] = {
    {"[]", 0, "expected '{'"},
    {"{\"a\":1}", 1, "tensor 'a'|must be an object"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]},}", 1, "expected a string"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}", 1, "expected ',' or '}'"},
    {"{\"a\" {\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "expected ':'"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[1.5],\"data_offsets\":[0,1]}}", 1, "not an integer"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[1e3],\"data_offsets\":[0,1]}}", 1, "not an integer"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[01],\"data_offsets\":[0,1]}}", 1, "leading zero"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1, "negative"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}} x", 1, "unexpected bytes after"},
    {"{\"a\\q\":{}}", 1, "unknown escape"},
    {"{\"a", 1, "unterminated string"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1],\"dtype\":\"I8\"}}", 1, "tensor 'a'|'dtype' appears twice"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}", 1, "tensor 'a'|unknown field 'x'"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[1]}}", 1, "tensor 'a' has no data_offsets"},
    {"{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "tensor 'a'|unknown dtype 'Q4'"},
    {"{\"a\":{\"dtype\":\"i8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "unknown dtype 'i8'"},
    {"{\"a\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,1]}}", 1, "tensor 'a'|needs 8"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[1,0]}}", 1, "end before they begin"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1, "more than 2"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1, "more than 8"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[9007199254740993],\"data_offsets\":[0,1]}}", 1, "2^53"},
    {"{\"\xff\":{}}", 1, "invalid UTF-8"},
    {"{\"\xc0\xaf\":{}}", 1, "invalid UTF-8"},        /* overlong '/' */
    {"{\"\xed\xa0\x80\":{}}", 1, "invalid UTF-8"},    /* a surrogate */
    {"{\"a\nb\":{}}", 1, "control character"},
    {"{\"a\\u0000\":{}}", 1, "NUL"},
    {"{\"a\\ud800\":{}}", 1, "surrogate"},
    {"{\"a\\udc00\":{}}", 1, "surrogate"},
    {"{\"a\\u12\":{}}", 1, "\\u escape"},
    /* Container rules that need the table. */
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]},"
     "\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2, "'a' appears twice"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[0,2]},"
     "\"b\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[1,3]}}", 3, "'a' [0, 2) and 'b' [1, 3) overlap"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]},"
     "\"b\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[2,3]}}", 3, "[1, 2) belong to no tensor|'b'"},
    {"{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 2, "[1, 2) after the last tensor"},
    /* Metadata. */
    {"{\"__metadata__\":\"x\"}", 0, "__metadata__ must be an object"},
    {"{\"__metadata__\":{\"format\":1}}", 0, "value of 'format' is not a string"},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ appears twice"},
    {"{\"__metadata__\":{\"graph\":\"\",\"graph\":\"\"}}", 0, "'graph' appears twice"},
    {"{}", 0, "no 'format'"},
    {"{\"__metadata__\":{\"format\":\"qat-checkpoint\"}}", 0, "format is 'qat-checkpoint'|qat-int8"},
    {"{\"__metadata__\":{\"format\":\"qat-int8\"}}", 0, "no 'format_version'"},
    {"{\"__metadata__\":{\"format\":\"qat-int8\",\"format_version\":\"2\"}}", 0, "format_version '2'|version 1"},
    {"{\"__metadata__\":{\"format\":\"qat-int8\",\"format_version\":\"1\"}}", 0, "no 'graph'"},
    {"{\"__metadata__\":{\"format\":\"qat-int8\",\"format_version\":\"1\",\"graph\":\"\"}}", 0, "graph is empty"},
    {"{\"__metadata__\":{\"format\":\"qat-int8\",\"format_version\":\"1\",\"graph\":\"output in=0\"}}", 0,
     "line 1|the first op must be 'input'"},
};
const size_t n_runtime_bad_headers = sizeof runtime_bad_headers / sizeof runtime_bad_headers[0];

/* The training-side reader (test_checkpoint), one file per rule of docs/checkpoint.md
 * "Validation", with the words its message must contain. */
#define E4 "\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]"

const st_bad_header st_bad_headers[] = {
    {"JSON syntax", "{\"a\":", 0, "not valid JSON"},
    {"trailing garbage", "{} x", 0, "not valid JSON"},
    {"two objects", "{}{}", 0, "not valid JSON"},
    {"array", "[1, 2]", 0, "does not start with '{'"},
    {"leading space", " {}", 0, "does not start with '{'"},
    {"invalid UTF-8", "{\"\xff\":{" E4 "}}", 4, "not valid UTF-8 (byte 2)"},
    {"overlong UTF-8", "{\"\xc0\xaf\":{" E4 "}}", 4, "not valid UTF-8"},
    {"UTF-16 surrogate", "{\"\xed\xa0\x80\":{" E4 "}}", 4, "not valid UTF-8"},
    {"raw newline in a name", "{\"a\nb\":{" E4 "}}", 4,
     "unescaped control character inside a string (byte 3)"},
    {"raw tab in metadata", "{\"__metadata__\":{\"k\":\"a\tb\"}}", 0,
     "unescaped control character"},
    {"escaped NUL in a name", "{\"a\\u0000b\":{" E4 "}}", 4,
     "escaped NUL (\\u0000) in a string (byte 3)"},
    {"entry not an object", "{\"a\":5}", 0, "tensor 'a': entry is a number, not an object"},
    {"missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing \"dtype\""},
    {"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing \"shape\""},
    {"missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing \"data_offsets\""},
    {"dtype a number", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     "\"dtype\" is a number, not a string"},
    {"unknown dtype", "{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     "unknown dtype \"F33\""},
    {"lower-case dtype", "{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     "unknown dtype \"f32\""},
    {"shape a number", "{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4,
     "\"shape\" is a number, not an array"},
    {"negative dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", 4,
     "shape[1] is not an integer >= 0"},
    {"fractional dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
     "shape[0] is not an integer >= 0"},
    {"string dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4,
     "shape[0] is not an integer >= 0"},
    {"dim beyond 2^53", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4,
     "shape[0] is not an integer >= 0"},
    {"too many dims",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
     "9 dims, more than the 8 supported"},
    {"shape overflow",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
     "\"data_offsets\":[0,0]}}",
     0, "overflows"},
    {"offsets a string", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0\"}}", 4,
     "\"data_offsets\" is not [begin, end]"},
    {"three offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8,
     "\"data_offsets\" is not [begin, end]"},
    {"negative offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
     "\"data_offsets\" is not [begin, end]"},
    {"begin > end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8,
     "data_offsets [8, 4] has begin > end"},
    {"end beyond the data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
     "end beyond the 4-byte data buffer"},
    {"byte count", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
     "hold 4 bytes but F32 (2) needs 8"},
    {"overlap",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, "tensors 'a' and 'b' overlap"},
    {"same bytes twice",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
     4, "overlap"},
    {"hole",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
     12, "hole: bytes [4, 8) belong to no tensor"},
    {"hole at the start", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
     "hole: bytes [0, 4)"},
    {"bytes after the last tensor", "{\"a\":{" E4 "}}", 8, "4 bytes after the last tensor"},
    {"data but no tensors", "{}", 3, "3 bytes after the last tensor"},
    {"metadata an array", "{\"__metadata__\":[1]}", 0, "\"__metadata__\" is an array"},
    {"metadata number value", "{\"__metadata__\":{\"epoch\":3}}", 0,
     "metadata \"epoch\" is a number; safetensors metadata values must be strings"},
    {"metadata null value", "{\"__metadata__\":{\"k\":null}}", 0, "is null"},
    {"duplicate tensor", "{\"a\":{" E4 "},\"a\":{" E4 "}}", 4,
     "tensor name 'a' appears twice"},
    {"duplicate metadata key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0,
     "metadata key 'k' appears twice"},
    {"duplicate __metadata__", "{\"__metadata__\":{},\"__metadata__\":{}}", 0,
     "\"__metadata__\" appears twice"},
    {"duplicate field", "{\"a\":{\"dtype\":\"F32\"," E4 "}}", 4, "field \"dtype\" given twice"},
    {"unknown field", "{\"a\":{" E4 ",\"foo\":1}}", 4, "unknown field \"foo\""},
};
const size_t n_st_bad_headers = sizeof st_bad_headers / sizeof st_bad_headers[0];
#undef E4

uint8_t *st_raw_bytes(uint64_t n, const char *header, size_t header_len, size_t data_len, size_t *len) {
    *len = 8 + header_len + data_len;
    uint8_t *b = xmalloc(*len);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(n >> (8 * i));
    memcpy(b + 8, header, header_len);
    for (size_t i = 0; i < data_len; i++) b[8 + header_len + i] = (uint8_t)(i % 251);
    return b;
}

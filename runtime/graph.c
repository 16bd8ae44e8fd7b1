/* graph.c - the graph text of the model file (docs/int8-format.md "The graph"): one op
 * per line, `kind key=value key=value ...`, fields separated by single spaces, lists
 * comma-separated. Each line is parsed into a qrt_op, checked against the values it
 * reads and the tensors it names ("What a loader must refuse"), and the activation arena
 * is planned from the value lifetimes.
 *
 * Overflow analysis (why a file that passes cannot overflow int32 at run time): for a
 * conv2d/linear with K products per output, |acc| <= B_c = K * 255 * max_c|w| + |bias_c|
 * (|q_in - z_in| <= 255). The spec's bound K * 255 * max|w| + max|bias| <= 2^31 - 1 keeps
 * the accumulation exact; MBQM then needs B_c * 2^max(shift_c, 0) <= 2^31 - 1. For add,
 * |(q - z) * 2^20| <= 255 * 2^20, MBQM's result is at most its (shifted) input in
 * magnitude (M0 < 2^31 and a right shift only shrinks), so the same rule applies to each
 * rescaled input, to their sum and to the final requantization.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define MAX_FIELDS 32

typedef struct field {
    const char *key, *val;
    bool used;
} field;

typedef struct gctx {
    qrt_tensor *tensors;
    int n_tensors;
    qrt_graph_mem *gm;
    size_t unpacked_used;
    qrt_op *ops;
    int n_ops;
    qrt_value *values;
    int n_values;
    qrt_error *err;
    size_t unpack_size; /* the largest K of a conv2d/linear with U8 (packed) weights */
    int line;          /* current line, 1-based */
    const char *kind;  /* current op kind as written */
    field f[MAX_FIELDS];
    int nf;
} gctx;

static const char *const KIND_NAMES[] = {
    [QRT_OP_INPUT] = "input",     [QRT_OP_CONV2D] = "conv2d",
    [QRT_OP_LINEAR] = "linear",   [QRT_OP_MAXPOOL] = "maxpool",
    [QRT_OP_AVGPOOL] = "avgpool", [QRT_OP_GLOBAL_AVGPOOL] = "global_avgpool",
    [QRT_OP_ADD] = "add",         [QRT_OP_FLATTEN] = "flatten",
    [QRT_OP_OUTPUT] = "output",   [QRT_OP_LUT] = "lut",
};
#define N_KINDS ((int)(sizeof KIND_NAMES / sizeof KIND_NAMES[0]))
QRT_STATIC_ASSERT(N_KINDS == QRT_OP_COUNT, one_name_per_op_kind);

const char *qrt_op_kind_str(qrt_op_kind k) {
    return (unsigned)k < (unsigned)N_KINDS ? KIND_NAMES[k] : "?";
}

/* "graph line <n> (<kind>): <message>" */
static qrt_status gfail(gctx *g, const char *fmt, ...) QRT_PRINTF(2, 3);
static qrt_status gfail(gctx *g, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g->kind) return qrt_fail(g->err, QRT_STATUS_GRAPH, g->line, "graph line %d (%s): %s", g->line, g->kind, msg);
    return qrt_fail(g->err, QRT_STATUS_GRAPH, g->line, "graph line %d: %s", g->line, msg);
}

/* ---- fields ------------------------------------------------------------------------ */

static field *find(gctx *g, const char *key) {
    for (int i = 0; i < g->nf; i++)
        if (!strcmp(g->f[i].key, key)) {
            g->f[i].used = true;
            return &g->f[i];
        }
    return NULL;
}

/* Strict decimal: -?[0-9]+, no sign '+', no spaces, within int64 (19 digits at most). */
static bool parse_int(const char *s, int64_t *v) {
    bool neg = *s == '-';
    if (neg) s++;
    if (!*s) return false;
    int64_t x = 0;
    int digits = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || ++digits > 18) return false;
        x = x * 10 + (*s - '0');
    }
    *v = neg ? -x : x;
    return true;
}

static qrt_status get_int(gctx *g, const char *key, int64_t lo, int64_t hi, int32_t *out) {
    field *f = find(g, key);
    int64_t v;
    if (!f) return gfail(g, "missing field '%s'", key);
    if (!parse_int(f->val, &v)) return gfail(g, "%s=%s is not an integer", key, f->val);
    if (v < lo || v > hi)
        return gfail(g, "%s=%lld is out of range [%lld, %lld]", key, (long long)v, (long long)lo,
                     (long long)hi);
    *out = (int32_t)v;
    return QRT_STATUS_OK;
}

static qrt_status get_int_list(gctx *g, const char *key, int64_t lo, int64_t hi, int32_t *v,
                               int max, int *n) {
    field *f = find(g, key);
    char item[24];
    if (!f) return gfail(g, "missing field '%s'", key);
    *n = 0;
    for (const char *p = f->val;;) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        int64_t x;
        if (*n == max) return gfail(g, "%s=%s has more than %d entries", key, f->val, max);
        if (len == 0 || len >= sizeof item) return gfail(g, "%s=%s is not a list of integers", key, f->val);
        memcpy(item, p, len);
        item[len] = '\0';
        if (!parse_int(item, &x)) return gfail(g, "%s=%s is not a list of integers", key, f->val);
        if (x < lo || x > hi)
            return gfail(g, "%s=%s: %lld is out of range [%lld, %lld]", key, f->val, (long long)x,
                         (long long)lo, (long long)hi);
        v[(*n)++] = (int32_t)x;
        if (!e) return QRT_STATUS_OK;
        p = e + 1;
    }
}

static qrt_status get_zp(gctx *g, const char *key, int32_t *out) { return get_int(g, key, -128, 127, out); }

/* M0: 0 or in [2^30, 2^31). */
static qrt_status check_m0(gctx *g, const char *what, int64_t v) {
    if (v == 0 || (v >= (int64_t)1 << 30 && v <= INT32_MAX)) return QRT_STATUS_OK;
    return gfail(g, "%s = %lld: M0 must be 0 or in [2^30, 2^31)", what, (long long)v);
}

static qrt_status check_shift(gctx *g, const char *what, int64_t v) {
    if (v >= -31 && v <= 30) return QRT_STATUS_OK;
    return gfail(g, "%s = %lld: shift is out of range [-31, 30]", what, (long long)v);
}

/* Reads field `key` as a value index: one already written. */
static qrt_status check_read(gctx *g, const char *key, int32_t v) {
    if (v < 0 || v >= g->n_values)
        return gfail(g, "%s=%d is read before it is written (values 0..%d exist so far)", key, (int)v,
                     g->n_values - 1);
    return QRT_STATUS_OK;
}

static qrt_status get_in(gctx *g, qrt_op *op) {
    int32_t in;
    TRY(get_int(g, "in", INT32_MIN, INT32_MAX, &in));
    op->in[0] = (int)in;
    op->n_in = 1;
    return check_read(g, "in", op->in[0]);
}

static void fmt_shape(char *buf, size_t n, int ndim, const int *shape) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, i ? ",%d" : "%d", shape[i]);
}

static void fmt_dims(char *buf, size_t n, int ndim, const uint64_t *shape) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, i ? ", %llu" : "%llu", (unsigned long long)shape[i]);
}

/* The `out` and `shape` fields: the next value, its declared shape (1 or 3 dims). */
static qrt_status get_out(gctx *g, qrt_op *op, qrt_value **vout) {
    int32_t out, shape[3];
    int n;
    TRY(get_int(g, "out", INT32_MIN, INT32_MAX, &out));
    if (out != g->n_values)
        return gfail(g, "out=%d, expected %d (each op writes the next value)", (int)out, g->n_values);
    TRY(get_int_list(g, "shape", 1, QRT_MAX_DIM, shape, 3, &n));
    if (n == 2) return gfail(g, "shape has 2 dimensions; a value is C,H,W or F");
    int64_t numel = 1;
    for (int i = 0; i < n; i++) { /* each step <= 2^28 * 2^24: no overflow */
        numel *= shape[i];
        if (numel > QRT_MAX_NUMEL)
            return gfail(g, "shape=%s exceeds the limit of %d elements", find(g, "shape")->val,
                         QRT_MAX_NUMEL);
    }
    qrt_value *v = &g->values[g->n_values++];
    memset(v, 0, sizeof *v);
    v->ndim = n;
    for (int i = 0; i < n; i++) v->shape[i] = shape[i];
    v->numel = (int32_t)numel;
    v->producer = g->n_ops;
    v->last_use = g->n_ops;
    v->alias = out;
    op->out = out;
    *vout = v;
    field *s = find(g, "s");
    op->s = s ? s->val : NULL;
    v->s = op->s;
    return QRT_STATUS_OK;
}

/* The declared shape must be what the op computes. */
static qrt_status check_shape(gctx *g, const qrt_value *v, int ndim, const int *want, const char *how) {
    bool ok = v->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = v->shape[i] == want[i];
    if (ok) return QRT_STATUS_OK;
    char a[48], b[48];
    fmt_shape(a, sizeof a, v->ndim, v->shape);
    fmt_shape(b, sizeof b, ndim, want);
    return gfail(g, "shape=%s, but %s gives %s", a, how, b);
}

/* A value read as C,H,W. */
static qrt_status need_chw(gctx *g, int in) {
    const qrt_value *v = &g->values[in];
    if (v->ndim == 3) return QRT_STATUS_OK;
    return gfail(g, "in=%d has shape %d; %s needs C,H,W", in, v->shape[0], g->kind);
}

/* z_in (or z_a, z_b) must be the zero point of the value read. */
static qrt_status check_z(gctx *g, const char *key, int32_t z, int in) {
    if (z == g->values[in].z) return QRT_STATUS_OK;
    return gfail(g, "%s=%d, but value %d has zero point %d", key, (int)z, in, (int)g->values[in].z);
}

static qrt_status get_clamp(gctx *g, qrt_op *op) {
    TRY(get_int(g, "act_min", -128, 127, &op->act_min));
    TRY(get_int(g, "act_max", -128, 127, &op->act_max));
    if (op->act_min > op->act_max)
        return gfail(g, "act_min=%d > act_max=%d", (int)op->act_min, (int)op->act_max);
    return QRT_STATUS_OK;
}

/* ---- tensors ----------------------------------------------------------------------- */

static qrt_tensor *lookup(gctx *g, const char *name) {
    int lo = 0, hi = g->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(g->tensors[mid].name, name);
        if (!c) return &g->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

static qrt_status get_tensor(gctx *g, const char *key, qrt_tensor **out) {
    field *f = find(g, key);
    if (!f) return gfail(g, "missing field '%s'", key);
    *out = lookup(g, f->val);
    if (!*out) return gfail(g, "%s=%s: no tensor of that name in the file", key, f->val);
    return QRT_STATUS_OK;
}

static qrt_status check_tensor(gctx *g, const char *key, const qrt_tensor *t, qrt_dtype dt,
                               int ndim, const uint64_t *shape) {
    if (t->dtype != dt)
        return gfail(g, "%s=%s is %s, expected %s", key, t->name, qrt_dtype_str(t->dtype), qrt_dtype_str(dt));
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (ok) return QRT_STATUS_OK;
    char a[96], b[96];
    fmt_dims(a, sizeof a, t->ndim, t->shape);
    fmt_dims(b, sizeof b, ndim, shape);
    return gfail(g, "%s=%s has shape (%s), expected (%s)", key, t->name, a, b);
}

/* An I32 tensor of shape (n): bias, mult, shift. */
static qrt_status get_i32(gctx *g, const char *key, uint64_t n, const qrt_tensor **out) {
    qrt_tensor *t;
    TRY(get_tensor(g, key, &t));
    TRY(check_tensor(g, key, t, QRT_DTYPE_I32, 1, &n));
    *out = t;
    return QRT_STATUS_OK;
}

/* Conv2d and linear: wbits, weight (OC, K) given as `wshape`, bias, mult, shift,
 * z_in/z_out/act_min/act_max, and the overflow bounds of the file header comment. */
static qrt_status conv_like(gctx *g, qrt_op *op, int OC, uint64_t K, int wndim, const uint64_t *wshape) {
    /* n <= 2^53 (callers check); once the weight tensor matches, n <= 2 * file size, so
     * K * 255 * 127 below cannot overflow 64 bits. */
    const uint64_t n = (uint64_t)OC * K;
    qrt_tensor *w;
    int32_t wbits;
    TRY(get_int(g, "wbits", 2, 8, &wbits));
    op->wbits = (int)wbits;
    TRY(get_tensor(g, "weight", &w));
    if (w->dtype == QRT_DTYPE_U8) {
        const uint64_t packed = (n + 1) / 2;
        if (op->wbits > 4)
            return gfail(g, "weight=%s is U8 (packed 4-bit), but wbits=%d: packing needs wbits <= 4",
                         w->name, op->wbits);
        TRY(check_tensor(g, "weight", w, QRT_DTYPE_U8, 1, &packed));
        if (QRT_UNPACK_AT_LOAD && !w->s8) {
            /* Unpack every nibble once (2 * nbytes values; the pool holds 2 * all U8 bytes):
             * weight 2i is the low nibble of byte i, 2i+1 the high one, 4-bit two's
             * complement: v >= 8 stands for v - 16. */
            int8_t *u = g->gm->unpacked + g->unpacked_used;
            if (g->unpacked_used + 2 * w->nbytes > g->gm->unpacked_cap)
                return gfail(g, "internal error: unpacked weight pool too small");
            for (size_t i = 0; i < w->nbytes; i++) {
                int lo = w->data[i] & 0xF, hi = w->data[i] >> 4;
                u[2 * i] = (int8_t)(lo >= 8 ? lo - 16 : lo);
                u[2 * i + 1] = (int8_t)(hi >= 8 ? hi - 16 : hi);
            }
            g->unpacked_used += 2 * w->nbytes;
            w->s8 = u;
        }
        if (n % 2 && qrt_nibble(w->data, n) != 0)
            return gfail(g, "weight=%s: the unused high nibble of its last byte is %d, expected 0",
                         w->name, w->data[w->nbytes - 1] >> 4);
    } else if (w->dtype == QRT_DTYPE_I8) {
        TRY(check_tensor(g, "weight", w, QRT_DTYPE_I8, wndim, wshape));
        w->s8 = (const int8_t *)w->data;
    } else {
        return gfail(g, "weight=%s is %s, expected I8 (or U8 packed, with wbits <= 4)", w->name,
                     qrt_dtype_str(w->dtype));
    }
    op->weight = w;
    if (w->dtype == QRT_DTYPE_U8 && K > g->unpack_size) g->unpack_size = (size_t)K;
    TRY(get_i32(g, "bias", (uint64_t)OC, &op->bias));
    TRY(get_i32(g, "mult", (uint64_t)OC, &op->mult));
    TRY(get_i32(g, "shift", (uint64_t)OC, &op->shift));
    TRY(get_zp(g, "z_in", &op->z_in));
    TRY(check_z(g, "z_in", op->z_in, op->in[0]));
    TRY(get_zp(g, "z_out", &op->z_out));
    TRY(get_clamp(g, op));

    const int lim = (1 << (op->wbits - 1)) - 1;
    int64_t maxw = 0, maxb = 0;
    for (int c = 0; c < OC; c++) {
        char what[160];
        int64_t mw = 0, b = op->bias->s32[c];
        for (uint64_t i = 0; i < K; i++) {
            const uint64_t at = (uint64_t)c * K + i;
            int v = w->s8 ? w->s8[at] : qrt_nibble(w->data, at);
            if (v < -lim || v > lim)
                return gfail(g, "weight=%s[%llu] = %d is outside the wbits=%d range [%d, %d]", w->name,
                             (unsigned long long)((uint64_t)c * K + i), v, op->wbits, -lim, lim);
            if ((v < 0 ? -v : v) > mw) mw = v < 0 ? -v : v;
        }
        snprintf(what, sizeof what, "mult=%s[%d]", op->mult->name, c);
        TRY(check_m0(g, what, op->mult->s32[c]));
        snprintf(what, sizeof what, "shift=%s[%d]", op->shift->name, c);
        TRY(check_shift(g, what, op->shift->s32[c]));
        if (b < 0) b = -b;
        if (mw > maxw) maxw = mw;
        if (b > maxb) maxb = b;
        /* Per channel: the requantization's x * 2^left must fit (fixedpoint.h). */
        const int left = op->shift->s32[c] > 0 ? op->shift->s32[c] : 0;
        const uint64_t Bc = K * 255u * (uint64_t)mw + (uint64_t)b;
        if (left && Bc <= INT32_MAX && (Bc << left) > INT32_MAX)
            return gfail(g, "channel %d: shift=%s[%d] = %d could overflow the requantization: the "
                         "accumulator bound %llu times 2^%d exceeds 2^31 - 1",
                         c, op->shift->name, c, left, (unsigned long long)Bc, left);
    }
    /* The spec's accumulator bound, over the whole layer as the exporter checks it. */
    const uint64_t B = K * 255u * (uint64_t)maxw + (uint64_t)maxb;
    if (B > INT32_MAX)
        return gfail(g, "accumulator bound exceeded: K*255*max|w| + max|bias| = %llu*255*%lld + %lld "
                     "= %llu > 2^31 - 1", (unsigned long long)K, (long long)maxw, (long long)maxb,
                     (unsigned long long)B);
    return QRT_STATUS_OK;
}

/* ---- ops --------------------------------------------------------------------------- */

static qrt_status op_input(gctx *g, qrt_op *op) {
    qrt_value *v;
    TRY(get_out(g, op, &v));
    TRY(get_zp(g, "z", &op->z_out));
    v->z = op->z_out;
    return QRT_STATUS_OK;
}

static qrt_status op_conv2d(gctx *g, qrt_op *op) {
    qrt_value *v;
    int32_t k, S, P, G;
    TRY(get_in(g, op));
    TRY(need_chw(g, op->in[0]));
    TRY(get_out(g, op, &v));
    TRY(get_int(g, "k", 1, QRT_MAX_KERNEL, &k));
    TRY(get_int(g, "stride", 1, QRT_MAX_KERNEL, &S));
    TRY(get_int(g, "pad", 0, QRT_MAX_KERNEL, &P));
    TRY(get_int(g, "groups", 1, QRT_MAX_DIM, &G));
    op->k = k, op->stride = S, op->pad = P, op->groups = G;
    const qrt_value *x = &g->values[op->in[0]];
    const int C = x->shape[0], H = x->shape[1], W = x->shape[2];
    if (v->ndim != 3) return gfail(g, "shape must be C,H,W for conv2d");
    const int OC = v->shape[0];
    if (C % G) return gfail(g, "groups=%d does not divide the %d input channels", (int)G, C);
    if (OC % G) return gfail(g, "groups=%d does not divide the %d output channels", (int)G, OC);
    if (H + 2 * P < k || W + 2 * P < k)
        return gfail(g, "k=%d is larger than the padded input %dx%d (pad=%d)", (int)k, H, W, (int)P);
    const int want[3] = {OC, (H + 2 * P - k) / S + 1, (W + 2 * P - k) / S + 1};
    char how[96];
    snprintf(how, sizeof how, "conv2d of %d,%d,%d with k=%d stride=%d pad=%d", C, H, W, (int)k, (int)S, (int)P);
    TRY(check_shape(g, v, 3, want, how));
    const uint64_t K = (uint64_t)(C / G) * (uint64_t)k * (uint64_t)k; /* <= 2^48 */
    const uint64_t wshape[4] = {(uint64_t)OC, (uint64_t)(C / G), (uint64_t)k, (uint64_t)k};
    if (K > ((uint64_t)1 << 53) / (uint64_t)OC)
        return gfail(g, "%d x %llu weights: too many", OC, (unsigned long long)K);
    TRY(conv_like(g, op, OC, K, 4, wshape));
    v->z = op->z_out;
    return QRT_STATUS_OK;
}

static qrt_status op_linear(gctx *g, qrt_op *op) {
    qrt_value *v;
    TRY(get_in(g, op));
    TRY(get_out(g, op, &v));
    if (v->ndim != 1) return gfail(g, "shape must be F (one dimension) for linear");
    const int F_in = g->values[op->in[0]].numel, F_out = v->shape[0];
    const uint64_t wshape[2] = {(uint64_t)F_out, (uint64_t)F_in};
    TRY(conv_like(g, op, F_out, (uint64_t)F_in, 2, wshape));
    v->z = op->z_out;
    return QRT_STATUS_OK;
}

static qrt_status op_pool(gctx *g, qrt_op *op) {
    qrt_value *v;
    int32_t k, S, P;
    TRY(get_in(g, op));
    TRY(need_chw(g, op->in[0]));
    TRY(get_out(g, op, &v));
    TRY(get_int(g, "k", 1, QRT_MAX_KERNEL, &k));
    TRY(get_int(g, "stride", 1, QRT_MAX_KERNEL, &S));
    TRY(get_int(g, "pad", 0, k / 2, &P));
    op->k = k, op->stride = S, op->pad = P;
    const qrt_value *x = &g->values[op->in[0]];
    const int C = x->shape[0], H = x->shape[1], W = x->shape[2];
    if (H + 2 * P < k || W + 2 * P < k)
        return gfail(g, "k=%d is larger than the padded input %dx%d (pad=%d)", (int)k, H, W, (int)P);
    const int want[3] = {C, (H + 2 * P - k) / S + 1, (W + 2 * P - k) / S + 1};
    char how[96];
    snprintf(how, sizeof how, "%s of %d,%d,%d with k=%d stride=%d pad=%d", g->kind, C, H, W, (int)k, (int)S, (int)P);
    TRY(check_shape(g, v, 3, want, how));
    v->z = x->z;
    if (!v->s) v->s = x->s;
    return QRT_STATUS_OK;
}

static qrt_status op_global_avgpool(gctx *g, qrt_op *op) {
    qrt_value *v;
    TRY(get_in(g, op));
    TRY(need_chw(g, op->in[0]));
    TRY(get_out(g, op, &v));
    const qrt_value *x = &g->values[op->in[0]];
    const int64_t HW = (int64_t)x->shape[1] * x->shape[2];
    if (HW * 255 > INT32_MAX) return gfail(g, "%lld positions: the int32 sum could overflow", (long long)HW);
    /* Declared C (as layers/pool.h's (N, C) output) or C,1,1: both read naturally. */
    const int want1[1] = {x->shape[0]}, want3[3] = {x->shape[0], 1, 1};
    if (v->ndim == 3) TRY(check_shape(g, v, 3, want3, "global_avgpool"));
    else TRY(check_shape(g, v, 1, want1, "global_avgpool"));
    v->z = x->z;
    if (!v->s) v->s = x->s;
    return QRT_STATUS_OK;
}

static qrt_status op_add(gctx *g, qrt_op *op) {
    qrt_value *v;
    int32_t in[2];
    int n;
    TRY(get_int_list(g, "in", INT32_MIN, INT32_MAX, in, 2, &n));
    if (n != 2) return gfail(g, "in= must name two values (in=a,b)");
    op->in[0] = (int)in[0];
    op->in[1] = (int)in[1];
    op->n_in = 2;
    TRY(check_read(g, "in", op->in[0]));
    TRY(check_read(g, "in", op->in[1]));
    TRY(get_out(g, op, &v));
    const qrt_value *a = &g->values[op->in[0]], *b = &g->values[op->in[1]];
    if (a->ndim != b->ndim || memcmp(a->shape, b->shape, sizeof a->shape)) {
        char sa[48], sb[48];
        fmt_shape(sa, sizeof sa, a->ndim, a->shape);
        fmt_shape(sb, sizeof sb, b->ndim, b->shape);
        return gfail(g, "values %d (%s) and %d (%s) differ in shape", op->in[0], sa, op->in[1], sb);
    }
    TRY(check_shape(g, v, a->ndim, a->shape, "add"));
    TRY(get_zp(g, "z_a", &op->z_a));
    TRY(check_z(g, "z_a", op->z_a, op->in[0]));
    TRY(get_zp(g, "z_b", &op->z_b));
    TRY(check_z(g, "z_b", op->z_b, op->in[1]));
    TRY(get_zp(g, "z_out", &op->z_out));
    TRY(get_int(g, "mult_a", INT32_MIN, INT32_MAX, &op->mult_a));
    TRY(check_m0(g, "mult_a", op->mult_a));
    TRY(get_int(g, "shift_a", INT32_MIN, INT32_MAX, &op->shift_a));
    TRY(check_shift(g, "shift_a", op->shift_a));
    TRY(get_int(g, "mult_b", INT32_MIN, INT32_MAX, &op->mult_b));
    TRY(check_m0(g, "mult_b", op->mult_b));
    TRY(get_int(g, "shift_b", INT32_MIN, INT32_MAX, &op->shift_b));
    TRY(check_shift(g, "shift_b", op->shift_b));
    TRY(get_int(g, "mult_out", INT32_MIN, INT32_MAX, &op->mult_out));
    TRY(check_m0(g, "mult_out", op->mult_out));
    TRY(get_int(g, "shift_out", INT32_MIN, INT32_MAX, &op->shift_out));
    TRY(check_shift(g, "shift_out", op->shift_out));
    TRY(get_clamp(g, op));
    /* Bounds: (q - z) * 2^20 * 2^left for each input, their sum, the sum * 2^left_out. */
    const uint64_t x = (uint64_t)255 << QRT_ADD_LEFT_SHIFT;
    const int la = op->shift_a > 0 ? op->shift_a : 0, lb = op->shift_b > 0 ? op->shift_b : 0;
    const int lo = op->shift_out > 0 ? op->shift_out : 0;
    const uint64_t A = x << la, B = x << lb;
    if (A > INT32_MAX || B > INT32_MAX || A + B > INT32_MAX || ((A + B) << lo) > INT32_MAX)
        return gfail(g, "shift_a=%d, shift_b=%d, shift_out=%d could overflow int32 (the inputs are "
                     "rescaled after << 20: the left shifts must stay small)", (int)op->shift_a,
                     (int)op->shift_b, (int)op->shift_out);
    v->z = op->z_out;
    return QRT_STATUS_OK;
}

static qrt_status op_flatten(gctx *g, qrt_op *op) {
    qrt_value *v;
    TRY(get_in(g, op));
    TRY(get_out(g, op, &v));
    const qrt_value *x = &g->values[op->in[0]];
    const int want[1] = {x->numel};
    TRY(check_shape(g, v, 1, want, "flatten"));
    v->z = x->z;
    if (!v->s) v->s = x->s;
    v->alias = x->alias; /* the same bytes */
    return QRT_STATUS_OK;
}

/* A lookup table (int8-spec.md, "Other ops"): q_out = table[q_in + 128]. The function's
 * name says what the table tabulates (tools may emit the real function); the runtime
 * only checks that it is one it knows. */
static qrt_status op_lut(gctx *g, qrt_op *op) {
    static const char *const FNS[] = {"sigmoid", "tanh", "hardswish", "leaky_relu"};
    static const uint64_t n256 = 256;
    qrt_value *v;
    qrt_tensor *t;
    TRY(get_in(g, op));
    TRY(get_out(g, op, &v));
    const qrt_value *x = &g->values[op->in[0]];
    TRY(check_shape(g, v, x->ndim, x->shape, "lut (elementwise)"));
    TRY(get_tensor(g, "table", &t));
    TRY(check_tensor(g, "table", t, QRT_DTYPE_I8, 1, &n256));
    t->s8 = (const int8_t *)t->data;
    op->table = t;
    field *fn = find(g, "fn");
    if (!fn) return gfail(g, "missing field 'fn'");
    size_t k = 0;
    while (k < sizeof FNS / sizeof *FNS && strcmp(fn->val, FNS[k])) k++;
    if (k == sizeof FNS / sizeof *FNS)
        return gfail(g, "fn=%s: unknown function (known: sigmoid, tanh, hardswish, leaky_relu)", fn->val);
    op->fn = FNS[k];
    field *alpha = find(g, "alpha");
    if (alpha && k != 3) return gfail(g, "alpha= is leaky_relu's slope; fn=%s has none", op->fn);
    if (!alpha && k == 3) return gfail(g, "missing field 'alpha' (fn=leaky_relu)");
    op->alpha = alpha ? alpha->val : NULL;
    TRY(get_zp(g, "z_in", &op->z_in));
    TRY(check_z(g, "z_in", op->z_in, op->in[0]));
    TRY(get_zp(g, "z_out", &op->z_out));
    v->z = op->z_out;
    return QRT_STATUS_OK;
}

static qrt_status op_output(gctx *g, qrt_op *op) {
    op->out = -1;
    return get_in(g, op);
}

/* ---- the arena --------------------------------------------------------------------- */

/* Two plans, the smaller kept (the first on a tie). A value lives from its producer to
 * its last reader; two values whose lives meet at an op (the op reads one and writes the
 * other) never share bytes, so an op never writes over what it reads. Flatten writes
 * nothing: its value shares the buffer of its source, which lives until the last reader
 * of either. Offsets and sizes are rounded up to QRT_ALIGN.
 *
 * First fit in op order: before op i, free every buffer whose last reader ran before i,
 * then place op i's output at the lowest offset where it fits between the live buffers.
 *
 * Greedy by size (TensorFlow Lite Micro's GreedyMemoryPlanner): the buffers from the
 * largest down, each at the lowest offset where it overlaps no buffer already placed that
 * it lives beside. First fit leaves a hole where a small early buffer (the input) sat
 * beside a large one, which the next buffer may not fit in: the DW-CNN's arena is 16464
 * bytes by first fit, 15680 (its bound: the largest two buffers alive together) greedily.
 *
 * Both take O(values^2) steps at most, with `live` (max_lines entries) as their list. */

static size_t buf_size(const qrt_value *v) { return qrt_align_up((size_t)v->numel); }

static bool lives_meet(const qrt_value *a, const qrt_value *b) {
    return a->producer <= b->last_use && b->producer <= a->last_use;
}

static size_t plan_first_fit(gctx *g) {
    qrt_value *V = g->values;
    int *live = g->gm->live, n_live = 0;
    size_t arena = 0;
    for (int i = 0; i < g->n_ops; i++) {
        int keep = 0;
        for (int j = 0; j < n_live; j++)
            if (V[live[j]].last_use >= i) live[keep++] = live[j];
        n_live = keep;
        int o = g->ops[i].out;
        if (o < 0 || V[o].alias != o) continue;
        size_t size = buf_size(&V[o]), at = 0;
        int pos = 0; /* live is sorted by offset: insert before the first buffer above */
        for (; pos < n_live; pos++) {
            const qrt_value *b = &V[live[pos]];
            if (b->offset >= at + size) break;
            size_t end = b->offset + buf_size(b);
            if (end > at) at = end;
        }
        V[o].offset = at;
        memmove(live + pos + 1, live + pos, (size_t)(n_live - pos) * sizeof *live);
        live[pos] = o;
        n_live++;
        if (at + size > arena) arena = at + size;
    }
    return arena;
}

static size_t plan_greedy(gctx *g) {
    qrt_value *V = g->values;
    int *list = g->gm->live, n = 0;
    size_t arena = 0;
    /* list = [placed, sorted by offset | not yet placed] */
    for (int i = 0; i < g->n_values; i++)
        if (V[i].alias == i) list[n++] = i;
    for (int k = 0; k < n; k++) {
        int best = k; /* the largest not yet placed; the earliest on a tie */
        for (int j = k + 1; j < n; j++)
            if (buf_size(&V[list[j]]) > buf_size(&V[list[best]]) ||
                (buf_size(&V[list[j]]) == buf_size(&V[list[best]]) && list[j] < list[best]))
                best = j;
        const int o = list[best];
        list[best] = list[k];
        size_t size = buf_size(&V[o]), at = 0;
        int pos = 0;
        for (; pos < k; pos++) {
            const qrt_value *b = &V[list[pos]];
            if (!lives_meet(b, &V[o])) continue;
            if (b->offset >= at + size) break;
            size_t end = b->offset + buf_size(b);
            if (end > at) at = end;
        }
        V[o].offset = at;
        /* insert among the placed by offset (after those at the same offset) */
        pos = 0;
        while (pos < k && V[list[pos]].offset <= at) pos++;
        memmove(list + pos + 1, list + pos, (size_t)(k - pos) * sizeof *list);
        list[pos] = o;
        if (at + size > arena) arena = at + size;
    }
    return arena;
}

static size_t plan_arena(gctx *g) {
    qrt_value *V = g->values;
    /* A shared buffer lives until the last reader of any of its values: the root's
     * last_use is extended to cover its flattens' readers (runtime.h says so). */
    for (int i = 0; i < g->n_values; i++)
        if (V[i].alias != i && V[i].last_use > V[V[i].alias].last_use)
            V[V[i].alias].last_use = V[i].last_use;
    const size_t first_fit = plan_first_fit(g), greedy = plan_greedy(g);
    const size_t arena = greedy < first_fit ? greedy : plan_first_fit(g);
    for (int i = 0; i < g->n_values; i++)
        if (V[i].alias != i) V[i].offset = V[V[i].alias].offset;
    return arena;
}

/* ---- lines ------------------------------------------------------------------------- */

/* Splits a line into the kind and key=value fields (NUL-terminating them in place). */
static qrt_status split_line(gctx *g, char *line, char **kind) {
    g->nf = 0;
    g->kind = NULL;
    *kind = line;
    char *p = strchr(line, ' ');
    if (p) *p++ = '\0';
    if (!**kind) return gfail(g, "empty op kind (fields are separated by single spaces)");
    g->kind = *kind;
    while (p) {
        char *tok = p;
        p = strchr(p, ' ');
        if (p) *p++ = '\0';
        if (!*tok) return gfail(g, "empty field (fields are separated by single spaces)");
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok) return gfail(g, "field '%s' is not key=value", tok);
        *eq = '\0';
        for (int i = 0; i < g->nf; i++)
            if (!strcmp(g->f[i].key, tok)) return gfail(g, "field '%s' appears twice", tok);
        if (g->nf == MAX_FIELDS) return gfail(g, "more than %d fields", MAX_FIELDS);
        g->f[g->nf++] = (field){tok, eq + 1, false};
    }
    return QRT_STATUS_OK;
}

qrt_status qrt_graph_load(qrt_model *m, qrt_tensor *tensors, int n_tensors, char *text,
                          qrt_graph_mem *gm, qrt_error *err) {
    gctx g;
    memset(&g, 0, sizeof g);
    g.tensors = tensors;
    g.n_tensors = n_tensors;
    g.gm = gm;
    g.ops = gm->ops;
    g.values = gm->values;
    g.err = err;
    bool have_output = false;
    char *next = text;
    while (next) {
        char *line = next, *kind;
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        g.line++;
        g.kind = NULL;
        if (!*line) continue; /* blank lines (the final newline) */
        if (have_output) return gfail(&g, "an op after the output line");
        if ((size_t)g.n_ops >= gm->max_lines) return gfail(&g, "internal error: op table too small");
        TRY(split_line(&g, line, &kind));
        int k = 0;
        while (k < N_KINDS && strcmp(kind, KIND_NAMES[k])) k++;
        if (k == N_KINDS)
            return gfail(&g, "unknown op '%s' (known: input, conv2d, linear, maxpool, avgpool, "
                         "global_avgpool, add, flatten, lut, output)", kind);
        if ((k == QRT_OP_INPUT) != (g.n_ops == 0))
            return gfail(&g, "%s", g.n_ops ? "a second input op" : "the first op must be 'input'");
        qrt_op *op = &g.ops[g.n_ops];
        memset(op, 0, sizeof *op);
        op->kind = (qrt_op_kind)k;
        op->line = g.line;
        op->out = -1;
        switch (op->kind) {
        case QRT_OP_INPUT: TRY(op_input(&g, op)); break;
        case QRT_OP_CONV2D: TRY(op_conv2d(&g, op)); break;
        case QRT_OP_LINEAR: TRY(op_linear(&g, op)); break;
        case QRT_OP_MAXPOOL:
        case QRT_OP_AVGPOOL: TRY(op_pool(&g, op)); break;
        case QRT_OP_GLOBAL_AVGPOOL: TRY(op_global_avgpool(&g, op)); break;
        case QRT_OP_ADD: TRY(op_add(&g, op)); break;
        case QRT_OP_FLATTEN: TRY(op_flatten(&g, op)); break;
        case QRT_OP_LUT: TRY(op_lut(&g, op)); break;
        case QRT_OP_OUTPUT: TRY(op_output(&g, op)); have_output = true; break;
        case QRT_OP_COUNT: break; /* k < N_KINDS above */
        }
        for (int i = 0; i < g.nf; i++)
            if (!g.f[i].used)
                return gfail(&g, "unknown field '%s' for %s", g.f[i].key, g.kind);
        for (int i = 0; i < op->n_in; i++) g.values[op->in[i]].last_use = g.n_ops;
        g.n_ops++;
    }
    g.kind = NULL;
    if (!g.n_ops) return qrt_fail(err, QRT_STATUS_GRAPH, 0, "the graph is empty");
    if (!have_output) return qrt_fail(err, QRT_STATUS_GRAPH, 0, "the graph has no output line");
    m->ops = g.ops;
    m->n_ops = g.n_ops;
    m->values = g.values;
    m->n_values = g.n_values;
    m->output = g.ops[g.n_ops - 1].in[0];
    m->arena_size = plan_arena(&g);
    m->unpack_size = qrt_align_up(g.unpack_size);
    return QRT_STATUS_OK;
}

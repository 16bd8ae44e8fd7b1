/* qat report: one self-contained HTML file that shows what quantization does to a model
 * (docs/report.md). Inline SVG and CSS, no script, no external resource: it opens offline
 * and prints. Sections: accuracy (float, fake quant, the int8 runtime), the confusion
 * matrix, test images where the int8 and float models disagree, the training curves and
 * the learned quantization parameters over training (the checkpoint's "history"), per
 * layer the weights and the activations of a calibration batch with the quantization grid
 * drawn on them, per-layer sensitivity, and the model's layers with parameters, MACs and
 * bytes. */
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "io/atomic_file.h"
#include "io/file_check.h"
#include "io/strbuf.h"
#include "quant/fake_quant.h"
#include "quant/quant.h"
#include "train/sensitivity.h"
#include "train/trainer.h"

/* ---- text ---- */

/* s, HTML-escaped. */
static void esc(qat_strbuf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': qat_strbuf_printf(b, "&lt;"); break;
        case '>': qat_strbuf_printf(b, "&gt;"); break;
        case '&': qat_strbuf_printf(b, "&amp;"); break;
        case '"': qat_strbuf_printf(b, "&quot;"); break;
        default: qat_strbuf_printf(b, "%c", *s);
        }
    }
}

static const char *COLORS[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

/* An SVG figure's opening: <figure class id><svg ... aria-label=title><text>title</text>. */
static void figure_open(qat_strbuf *b, const char *cls, const char *id, double W, double H, double L,
                        const char *title) {
    qat_strbuf_printf(b, "<figure class=\"%s\" id=\"%s\"><svg width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
                         "role=\"img\" aria-label=\"",
                      cls, id, W, H, W, H);
    esc(b, title);
    qat_strbuf_printf(b, "\"><text x=\"%.0f\" y=\"16\" class=\"t\">", L);
    esc(b, title);
    qat_strbuf_printf(b, "</text>");
}

/* ---- charts ---- */

typedef struct series {
    const char *name;
    const double *x, *y;
    int n;
} series;

/* A line chart of ns series; points with y < 0 are skipped when skip_negative (metrics
 * not measured). */
static void line_chart(qat_strbuf *b, const char *id, const char *title, const char *xlabel, const series *s, int ns,
                       bool skip_negative) {
    const double W = 460, H = 220, L = 56, R = 12, T = 26, B = 36;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int k = 0; k < ns; k++)
        for (int i = 0; i < s[k].n; i++) {
            if (skip_negative && s[k].y[i] < 0) continue;
            if (!isfinite(s[k].y[i])) continue;
            x0 = fmin(x0, s[k].x[i]), x1 = fmax(x1, s[k].x[i]);
            y0 = fmin(y0, s[k].y[i]), y1 = fmax(y1, s[k].y[i]);
        }
    figure_open(b, "chart", id, W, H, L, title);
    if (!(x0 <= x1)) {
        qat_strbuf_printf(b, "<text x=\"%.0f\" y=\"%.0f\">no data</text></svg></figure>\n", L, H / 2);
        return;
    }
    if (x1 == x0) x0 -= 1, x1 += 1;
    if (y1 == y0) y0 -= fabs(y0) * 0.1 + 1e-3, y1 += fabs(y1) * 0.1 + 1e-3;
    const double pad = (y1 - y0) * 0.05;
    y0 -= pad, y1 += pad;
#define PX(v) (L + ((v) - x0) / (x1 - x0) * (W - L - R))
#define PY(v) (H - B - ((v) - y0) / (y1 - y0) * (H - T - B))
    qat_strbuf_printf(b, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" class=\"frame\"/>", L, T, W - L - R, H - T - B);
    for (int k = 0; k <= 4; k++) {
        double v = y0 + (y1 - y0) * k / 4;
        qat_strbuf_printf(b, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" class=\"gridline\"/>", L, W - R, PY(v), PY(v));
        qat_strbuf_printf(b, "<text x=\"%.0f\" y=\"%.1f\" class=\"ytick\">%.4g</text>", L - 4, PY(v) + 4, v);
    }
    for (int k = 0; k <= 4; k++) {
        double v = x0 + (x1 - x0) * k / 4;
        qat_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.0f\" class=\"xtick\">%.4g</text>", PX(v), H - B + 14, v);
    }
    qat_strbuf_printf(b, "<text x=\"%.0f\" y=\"%.0f\" class=\"xtick\">", (L + W - R) / 2, H - 4);
    esc(b, xlabel);
    qat_strbuf_printf(b, "</text>");
    for (int k = 0; k < ns; k++) {
        const char *c = COLORS[k % 8];
        qat_strbuf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", c);
        for (int i = 0; i < s[k].n; i++)
            if (!(skip_negative && s[k].y[i] < 0) && isfinite(s[k].y[i]))
                qat_strbuf_printf(b, "%.1f,%.1f ", PX(s[k].x[i]), PY(s[k].y[i]));
        qat_strbuf_printf(b, "\"/>");
        for (int i = 0; i < s[k].n; i++)
            if (!(skip_negative && s[k].y[i] < 0) && isfinite(s[k].y[i]))
                qat_strbuf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>", PX(s[k].x[i]), PY(s[k].y[i]), c);
        qat_strbuf_printf(b, "<rect x=\"%.0f\" y=\"%.0f\" width=\"10\" height=\"3\" fill=\"%s\"/><text x=\"%.0f\" y=\"%.0f\" "
               "class=\"legend\">",
            W - R - 150, T + 8 + 14.0 * k, c, W - R - 136, T + 12 + 14.0 * k);
        esc(b, s[k].name);
        qat_strbuf_printf(b, "</text>");
    }
#undef PX
#undef PY
    qat_strbuf_printf(b, "</svg></figure>\n");
}

/* A quantization grid in the histogram's units: value = scale (q - zp), q in qmin..qmax. */
typedef struct grid {
    bool have;
    double scale;
    int zp, qmin, qmax;
} grid;

/* A histogram of n values (at most `stride`-subsampled), with the grid's levels, clip
 * range and zero drawn over it, and the share of values the clip cuts off. */
static void histogram(qat_strbuf *b, const char *id, const char *title, const float *x, size_t n, const grid *g,
                      const char *xlabel) {
    const double W = 460, H = 190, L = 44, R = 12, T = 26, B = 40;
    enum { BINS = 90 };
    double lo = INFINITY, hi = -INFINITY;
    size_t finite = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(x[i])) lo = fmin(lo, x[i]), hi = fmax(hi, x[i]), finite++;
    double clo = 0, chi = 0;
    if (g->have) {
        clo = g->scale * (g->qmin - g->zp);
        chi = g->scale * (g->qmax - g->zp);
        lo = fmin(lo, clo), hi = fmax(hi, chi);
    }
    figure_open(b, "hist", id, W, H, L, title);
    if (!finite) {
        qat_strbuf_printf(b, "<text x=\"%.0f\" y=\"%.0f\">no finite values</text></svg></figure>\n", L, H / 2);
        return;
    }
    if (hi == lo) lo -= 0.5, hi += 0.5;
    const double span = hi - lo;
    lo -= span * 0.02, hi += span * 0.02;
    double count[BINS] = {0}, top = 0;
    size_t clipped = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) continue;
        int k = (int)((x[i] - lo) / (hi - lo) * BINS);
        k = k < 0 ? 0 : k >= BINS ? BINS - 1 : k;
        count[k]++;
        if (g->have && (x[i] < clo - 0.5 * g->scale || x[i] > chi + 0.5 * g->scale)) clipped++;
    }
    for (int k = 0; k < BINS; k++) top = fmax(top, log1p(count[k]));
#define PX(v) (L + ((v) - lo) / (hi - lo) * (W - L - R))
    const double base = H - B, h = H - T - B, bw = (W - L - R) / BINS;
    qat_strbuf_printf(b, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" class=\"frame\"/>", L, T, W - L - R, h);
    for (int k = 0; k < BINS; k++) {
        if (!count[k]) continue;
        double bh = log1p(count[k]) / top * h;
        qat_strbuf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"bar\"/>", L + k * bw, base - bh,
            bw, bh);
    }
    if (g->have) {
        /* the levels as ticks (every one when they are at least 2 px apart) */
        const int levels = g->qmax - g->qmin + 1;
        const double px_per = g->scale / (hi - lo) * (W - L - R);
        const int every = px_per >= 2 ? 1 : (int)ceil(2 / px_per);
        qat_strbuf_printf(b, "<g class=\"level\">");
        for (int q = g->qmin; q <= g->qmax; q += every) {
            double v = g->scale * (q - g->zp);
            qat_strbuf_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.0f\" y2=\"%.0f\"/>", PX(v), PX(v), base, base + 6);
        }
        qat_strbuf_printf(b, "</g>");
        qat_strbuf_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.0f\" y2=\"%.0f\" class=\"clip\"/>", PX(clo), PX(clo), T, base);
        qat_strbuf_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.0f\" y2=\"%.0f\" class=\"clip\"/>", PX(chi), PX(chi), T, base);
        qat_strbuf_printf(b, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.0f\" y2=\"%.0f\" class=\"zero\"/>", PX(0.0), PX(0.0), T, base);
        qat_strbuf_printf(b, "<text x=\"%.0f\" y=\"%.0f\" class=\"note\">%d levels%s, scale %.4g, zero point %d; clipped %.2f%%"
               "</text>",
            L + 4, T + 12, levels, every > 1 ? " (ticks: a few)" : "", g->scale, g->zp,
            100.0 * (double)clipped / (double)finite);
    }
    for (int k = 0; k <= 4; k++) {
        double v = lo + (hi - lo) * k / 4;
        if (fabs(v) < 1e-6 * (hi - lo)) v = 0;
        qat_strbuf_printf(b, "<text x=\"%.1f\" y=\"%.0f\" class=\"xtick\">%.3g</text>", PX(v), base + 18, v);
    }
    qat_strbuf_printf(b, "<text x=\"%.0f\" y=\"%.0f\" class=\"xtick\">", (L + W - R) / 2, H - 4);
    esc(b, xlabel);
    qat_strbuf_printf(b, "</text>");
#undef PX
    qat_strbuf_printf(b, "</svg></figure>\n");
}

/* ---- the model ---- */

static const char *kind_name(const qat_layer *l) { return qat_layer_kind_str(l->kind); }

static long layer_macs(const qat_layer *l) {
    if (l->kind == QAT_LAYER_LINEAR) return (long)l->cfg.linear.in * l->cfg.linear.out;
    if (l->kind == QAT_LAYER_CONV2D)
        return (long)l->out_shape[0] * l->out_shape[1] * l->out_shape[2] * (l->cfg.conv.in / l->cfg.conv.groups) *
               l->cfg.conv.kernel * l->cfg.conv.kernel;
    return 0;
}

static void summary_rows(qat_strbuf *b, const qat_seq *s, long *tp, long *tm, double *t32, double *t8) {
    for (int i = 0; i < s->n; i++) {
        const qat_layer *l = &s->layers[i];
        long params = (long)l->weight.n + (long)l->bias.n, macs = layer_macs(l);
        double b8 = 0;
        const qat_layer_quant *u = l->quant;
        const bool weighted = qat_layer_role_of(l) == QAT_LAYER_ROLE_WEIGHTED;
        if (weighted) b8 = u ? l->weight.n * (u->wbits / 8.0) + 4.0 * l->bias.n + 8.0 * qat_layer_channels(l) : 0;
        qat_strbuf_printf(b, "<tr><td>");
        esc(b, l->name);
        qat_strbuf_printf(b, "</td><td>%s</td><td>", kind_name(l));
        for (int k = 0; k < l->out_ndim; k++) qat_strbuf_printf(b, "%s%d", k ? "&times;" : "", l->out_shape[k]);
        qat_strbuf_printf(b, "</td><td>%ld</td><td>%ld</td><td>%ld</td><td>", params, macs, params * 4);
        if (u && weighted) qat_strbuf_printf(b, "%.0f (w%d)", b8, u->wbits);
        qat_strbuf_printf(b, "</td></tr>\n");
        *tp += params, *tm += macs, *t32 += params * 4.0, *t8 += b8;
        summary_rows(b, &l->body, tp, tm, t32, t8);
        summary_rows(b, &l->shortcut, tp, tm, t32, t8);
    }
}

/* The activation point that feeds each weighted layer (the one its input was quantized
 * at), as quantization walks the model. */
#define MAX_FEED 256
typedef struct feedmap {
    const qat_layer *layer[MAX_FEED];
    const qat_qpoint *pt[MAX_FEED];
    int n;
} feedmap;

static void map_seq(const qat_seq *s, const qat_qpoint **cur, feedmap *fm) {
    for (int i = 0; i < s->n; i++) {
        const qat_layer *l = &s->layers[i];
        const qat_layer_quant *u = l->quant;
        const qat_layer_role role = qat_layer_role_of(l);
        if (role == QAT_LAYER_ROLE_WEIGHTED && fm->n < MAX_FEED) {
            fm->layer[fm->n] = l;
            fm->pt[fm->n++] = *cur;
        }
        if (role == QAT_LAYER_ROLE_BLOCK) {
            const qat_qpoint *cb = *cur, *cs = *cur;
            map_seq(&l->body, &cb, fm);
            map_seq(&l->shortcut, &cs, fm);
        }
        if (u) {
            *cur = &u->out;
            i += u->n_fused;
        }
    }
}

static const qat_qpoint *feeding(const feedmap *fm, const qat_layer *l) {
    for (int k = 0; k < fm->n; k++)
        if (fm->layer[k] == l) return fm->pt[k];
    return NULL;
}

static grid point_grid(const qat_qpoint *p) {
    grid g = {0};
    if (!p || p->dynamic) return g;
    float s;
    int32_t z;
    qat_qpoint_qparams(p, &s, &z);
    int lo, hi;
    qat_qpoint_clamp(p, &lo, &hi);
    g = (grid){true, s, z, lo, hi};
    return g;
}

/* Inputs of the weighted layers during one float forward (a calibration batch). */
#define MAX_SEEN 64
#define SEEN_CAP 200000
typedef struct seen_acts {
    const qat_layer *layer[MAX_SEEN];
    float *x[MAX_SEEN];
    size_t n[MAX_SEEN];
    int count;
} seen_acts;

static void on_layer(const qat_layer *l, const qat_tensor *x, void *user) {
    seen_acts *sa = user;
    if (qat_layer_role_of(l) != QAT_LAYER_ROLE_WEIGHTED || sa->count == MAX_SEEN) return;
    size_t n = x->n < SEEN_CAP ? x->n : SEEN_CAP, stride = x->n / n;
    float *c = malloc(n * sizeof(float));
    if (!c) return;
    for (size_t i = 0; i < n; i++) c[i] = x->data[i * stride];
    sa->layer[sa->count] = l;
    sa->x[sa->count] = c;
    sa->n[sa->count++] = n;
}

/* Predictions of the model (as it is set: fake quant on or off) for every sample of l. */
static qat_status predict_all(qat_model *m, qat_loader *l, int *pred, qat_error *err) {
    qat_tape t;
    qat_tape_init(&t, 0);
    t.training = t.grad_enabled = false;
    qat_status s = qat_loader_seek(l, 0, 0, err);
    qat_batch b;
    while (!s && qat_loader_next(l, &b)) {
        qat_tape_reset(&t);
        qat_tensor *z = qat_model_forward(m, &t, qat_tape_input(&t, b.ndim, b.shape, b.x));
        if (!z) {
            s = qat_error_set(err, t.err.status, "%s", t.err.msg);
            break;
        }
        const int C = (int)(z->n / (size_t)b.n);
        for (int i = 0; i < b.n; i++) {
            int best = 0;
            for (int k = 1; k < C; k++)
                if (z->data[i * C + k] > z->data[i * C + best]) best = k;
            pred[b.idx[i]] = best;
        }
    }
    qat_tape_free(&t);
    return s;
}

static double accuracy(const int *pred, const int32_t *labels, int n) {
    long c = 0;
    for (int i = 0; i < n; i++) c += pred[i] == labels[i];
    return n ? (double)c / n : 0;
}

/* An image as a BMP data URI (8-bit gray or 24-bit colour), for <img>. */
static void image_uri(qat_strbuf *b, const qat_dataset *ds, int idx) {
    const int w = ds->w, h = ds->h, c = ds->c, row = (w * 3 + 3) & ~3;
    const size_t size = 54 + (size_t)row * h;
    uint8_t *bmp = calloc(size, 1);
    if (!bmp) return;
    const uint32_t v[] = {(uint32_t)size, 0, 54, 40, (uint32_t)w, (uint32_t)h};
    bmp[0] = 'B', bmp[1] = 'M';
    for (int k = 0; k < 6; k++)
        for (int j = 0; j < 4; j++) bmp[2 + 4 * k + j] = (uint8_t)(v[k] >> (8 * j));
    bmp[26] = 1, bmp[28] = 24;
    const uint8_t *px = ds->pixels + (size_t)idx * ds->dim;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < 3; k++) /* BGR, bottom-up */
                bmp[54 + (size_t)(h - 1 - y) * row + 3 * x + k] = px[(size_t)(c == 3 ? 2 - k : 0) * w * h + y * w + x];
    static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    qat_strbuf_printf(b, "data:image/bmp;base64,");
    for (size_t i = 0; i < size; i += 3) {
        uint32_t t = (uint32_t)bmp[i] << 16 | (i + 1 < size ? (uint32_t)bmp[i + 1] << 8 : 0) |
                     (i + 2 < size ? bmp[i + 2] : 0);
        qat_strbuf_printf(b, "%c%c%c%c", B64[t >> 18 & 63], B64[t >> 12 & 63], i + 1 < size ? B64[t >> 6 & 63] : '=',
            i + 2 < size ? B64[t & 63] : '=');
    }
    free(bmp);
}

/* Class k's name from the comma-separated list, or its number. */
static void class_name(qat_strbuf *b, const char *names, int k) {
    const char *p = names;
    for (int i = 0; p && i < k; i++) {
        p = strchr(p, ',');
        if (p) p++;
    }
    if (!p || !*p) {
        qat_strbuf_printf(b, "%d", k);
        return;
    }
    const char *e = strchr(p, ',');
    char tmp[64];
    size_t n = e ? (size_t)(e - p) : strlen(p);
    n = n < sizeof tmp - 1 ? n : sizeof tmp - 1;
    memcpy(tmp, p, n);
    tmp[n] = '\0';
    esc(b, tmp);
}

/* ---- the history ---- */

typedef struct hist {
    int rows, cols;
    char names[48][QAT_NAME_LEN + 16];
    double *v; /* rows x cols */
} hist;

static bool parse_history(hist *h, const char *text) {
    memset(h, 0, sizeof *h);
    if (!text) return false;
    const char *nl = strchr(text, '\n');
    if (!nl) return false;
    for (const char *p = text; p < nl && h->cols < 48;) {
        const char *e = memchr(p, ',', (size_t)(nl - p));
        size_t n = (size_t)((e ? e : nl) - p);
        if (n >= sizeof h->names[0]) n = sizeof h->names[0] - 1;
        memcpy(h->names[h->cols], p, n);
        h->names[h->cols++][n] = '\0';
        p = e ? e + 1 : nl;
    }
    int lines = 0;
    for (const char *p = nl + 1; *p; p++) lines += *p == '\n';
    h->v = calloc((size_t)(lines ? lines : 1) * h->cols, sizeof(double));
    if (!h->v) return false;
    for (const char *p = nl + 1; *p && h->rows < lines;) {
        const char *e = strchr(p, '\n');
        for (int c = 0; c < h->cols; c++) {
            char *end;
            h->v[h->rows * h->cols + c] = strtod(p, &end);
            p = *end == ',' ? end + 1 : end;
        }
        h->rows++;
        p = e ? e + 1 : p + strlen(p);
    }
    return h->rows > 0;
}

static const double *hist_col(const hist *h, const char *name, double *tmp) {
    for (int c = 0; c < h->cols; c++)
        if (!strcmp(h->names[c], name)) {
            for (int r = 0; r < h->rows; r++) tmp[r] = h->v[r * h->cols + c];
            return tmp;
        }
    return NULL;
}

/* ---- the report ---- */

static const char *STYLE =
    "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1000px;color:#222;padding:0 12px}"
    "h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;margin-top:32px}h3{font-size:15px}"
    "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
    "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
    "figure{display:inline-block;margin:4px 8px 4px 0;vertical-align:top}"
    "svg text{font:11px system-ui,sans-serif;fill:#333}svg .t{font-size:12px;font-weight:600}"
    ".ytick{text-anchor:end}.xtick{text-anchor:middle}.frame{fill:none;stroke:#bbb}"
    ".gridline{stroke:#eee}.bar{fill:#6a8caf}.level line{stroke:#888;stroke-width:.6}"
    ".clip{stroke:#d62728;stroke-dasharray:4 3;stroke-width:1.5}.zero{stroke:#2ca02c;stroke-width:1.5}"
    ".note{fill:#555}.legend{font-size:11px}.pics figure{text-align:center;font-size:12px}"
    ".pics img{width:84px;height:84px;image-rendering:pixelated;border:1px solid #ccc}"
    "p.small{color:#555;font-size:12px}@media print{h2{break-before:auto}figure{break-inside:avoid}}";

typedef struct report_ctx {
    qat_opened o;
    qat_dataset test, train;
    qat_loader ltest;
    bool have_train;
} report_ctx;

int cli_report(const char *ckpt, const char *float_ckpt, const char *data, const char *format, const char *out,
               int test_samples, int sens_samples, bool quiet) {
    qat_error err = {0};
    report_ctx c;
    memset(&c, 0, sizeof c);
    qat_strbuf b = {0};
    int rc = 1;
    int *pf = NULL, *pq = NULL, *p8 = NULL;
    hist h = {0};
    seen_acts sa = {0};
    qat_status s = qat_model_open(&c.o, ckpt, 0, &err);
    if (s) return cli_fail("report", err.msg);
    if (!c.o.from_checkpoint) {
        qat_opened_free(&c.o);
        return cli_fail_in("report", ckpt, "not a checkpoint (qat report draws a trained model)");
    }
    qat_model *m = c.o.m;
    qat_quant *q = m->quant;
    const char *v = qat_checkpoint_extra(&c.o.ckpt, "data");
    if (!data) data = v ? v : QAT_FASHION_MNIST_DIR;
    const char *names = qat_checkpoint_extra(&c.o.ckpt, "class_names");
    if ((s = cli_open_data(&c.test, data, format, QAT_SPLIT_TEST, m, &err))) goto fail;
    if (test_samples > 0 && test_samples < c.test.n) c.test.n = test_samples; /* the first ones */
    qat_loader_config lc = qat_loader_config_default();
    lc.batch_size = 256;
    lc.shuffle = false;
    qat_loader_config_normalize(&lc, &c.o.norm);
    if ((s = qat_loader_init(&c.ltest, &c.test, &lc, &err))) goto fail;
    const int n = c.test.n, K = cli_model_outputs(m);
    pf = malloc((size_t)n * sizeof(int));
    pq = malloc((size_t)n * sizeof(int));
    p8 = malloc((size_t)n * sizeof(int));
    if (!pf || !pq || !p8) {
        s = qat_error_set(&err, QAT_STATUS_NOMEM, "out of memory");
        goto fail;
    }
    if (!quiet) fprintf(stderr, "qat report: evaluating %s on %d test samples\n", ckpt, n);
    /* float, fake quant, int8 */
    bool have_q = false, have_8 = false;
    char why8[512] = "";
    if (q) q->fake_quant = false;
    if ((s = predict_all(m, &c.ltest, pf, &err))) goto fail;
    if (q) {
        q->fake_quant = true;
        if ((s = predict_all(m, &c.ltest, pq, &err))) goto fail;
        have_q = true;
        qat_error e8 = {0};
        if (c.test.kind == QAT_DATASET_KIND_IMAGES && !cli_int8_predictions(m, &c.test, p8, &e8)) have_8 = true;
        else snprintf(why8, sizeof why8, "%s", e8.msg[0] ? e8.msg : "the data are not images");
    } else {
        snprintf(why8, sizeof why8, "a float checkpoint: quantize it (qat calibrate, qat train --quant) first");
    }
    const int *dep = have_8 ? p8 : have_q ? pq : pf;
    const char *dep_name = have_8 ? "int8 runtime" : have_q ? "fake quant" : "float";

    char spec[2048] = "float (not quantized)";
    if (q) qat_quant_spec_format(&q->spec, spec, sizeof spec);
    qat_strbuf_printf(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>qat report: ");
    esc(&b, ckpt);
    qat_strbuf_printf(&b, "</title><style>%s</style></head><body>\n<h1>qat report</h1>\n<p>Checkpoint <code>", STYLE);
    esc(&b, ckpt);
    qat_strbuf_printf(&b, "</code>, quantization <code>");
    esc(&b, spec);
    qat_strbuf_printf(&b, "</code>, test data <code>");
    esc(&b, data);
    qat_strbuf_printf(&b, "</code> (%d samples), %d training steps.</p>\n", n, (int)c.o.ckpt.step);

    /* accuracy */
    qat_strbuf_printf(&b, "<h2 id=\"accuracy\">Accuracy</h2>\n<table id=\"accuracy-table\"><tr><th>model</th><th>test accuracy</th>"
            "<th>agrees with float</th></tr>\n");
    qat_strbuf_printf(&b, "<tr><td>float (fp32)</td><td>%.2f%%</td><td></td></tr>\n", 100 * accuracy(pf, c.test.labels, n));
    if (have_q) {
        long agree = 0;
        for (int i = 0; i < n; i++) agree += pq[i] == pf[i];
        qat_strbuf_printf(&b, "<tr><td>fake quant (simulation)</td><td>%.2f%%</td><td>%.2f%%</td></tr>\n",
            100 * accuracy(pq, c.test.labels, n), 100.0 * agree / n);
    }
    if (have_8) {
        long agree = 0, agree_q = 0;
        for (int i = 0; i < n; i++) agree += p8[i] == pf[i], agree_q += p8[i] == pq[i];
        qat_strbuf_printf(&b, "<tr><td>int8 runtime (integer-only)</td><td>%.2f%%</td><td>%.2f%%</td></tr>\n",
            100 * accuracy(p8, c.test.labels, n), 100.0 * agree / n);
        qat_strbuf_printf(&b, "</table>\n<p class=\"small\">The int8 model is the one <code>qat export</code> writes, run by the "
                "integer runtime; it agrees with the simulation on %.2f%% of the samples.</p>\n",
            100.0 * agree_q / n);
    } else {
        qat_strbuf_printf(&b, "</table>\n<p class=\"small\">No int8 runtime number: ");
        esc(&b, why8);
        qat_strbuf_printf(&b, "</p>\n");
    }

    /* confusion matrix */
    qat_strbuf_printf(&b, "<h2 id=\"confusion\">Confusion matrix (%s)</h2>\n<table id=\"confusion-table\"><tr><th>true \\ "
            "predicted</th>",
        dep_name);
    for (int k = 0; k < K; k++) {
        qat_strbuf_printf(&b, "<th>");
        class_name(&b, names, k);
        qat_strbuf_printf(&b, "</th>");
    }
    qat_strbuf_printf(&b, "</tr>\n");
    {
        long *cm = calloc((size_t)K * K, sizeof(long)), top = 1;
        if (!cm) {
            s = qat_error_set(&err, QAT_STATUS_NOMEM, "out of memory");
            goto fail;
        }
        for (int i = 0; i < n; i++)
            if (c.test.labels[i] >= 0 && c.test.labels[i] < K && dep[i] < K) cm[c.test.labels[i] * K + dep[i]]++;
        for (int i = 0; i < K * K; i++) top = cm[i] > top ? cm[i] : top;
        for (int r = 0; r < K; r++) {
            qat_strbuf_printf(&b, "<tr><th>");
            class_name(&b, names, r);
            qat_strbuf_printf(&b, "</th>");
            for (int k = 0; k < K; k++) {
                double a = (double)cm[r * K + k] / top;
                qat_strbuf_printf(&b, "<td style=\"background:rgba(%s,%.2f)\">%ld</td>", r == k ? "44,160,44" : "214,39,40",
                    cm[r * K + k] ? 0.1 + 0.6 * sqrt(a) : 0.0, cm[r * K + k]);
            }
            qat_strbuf_printf(&b, "</tr>\n");
        }
        free(cm);
    }
    qat_strbuf_printf(&b, "</table>\n");

    /* disagreements */
    if (dep != pf) {
        qat_strbuf_printf(&b, "<h2 id=\"disagreements\">Where the %s model and the float model disagree</h2>\n", dep_name);
        int shown = 0, total = 0;
        for (int i = 0; i < n; i++) total += dep[i] != pf[i];
        qat_strbuf_printf(&b, "<p>%d of %d test samples (%.2f%%).</p>\n<div class=\"pics\">", total, n, 100.0 * total / n);
        for (int i = 0; i < n && shown < 8 && c.test.kind == QAT_DATASET_KIND_IMAGES; i++) {
            if (dep[i] == pf[i]) continue;
            qat_strbuf_printf(&b, "<figure class=\"disagree\"><img alt=\"test image %d\" src=\"", i);
            image_uri(&b, &c.test, i);
            qat_strbuf_printf(&b, "\"><figcaption>#%d, label ", i);
            class_name(&b, names, c.test.labels[i]);
            qat_strbuf_printf(&b, "<br>float: ");
            class_name(&b, names, pf[i]);
            qat_strbuf_printf(&b, "<br>%s: ", have_8 ? "int8" : "quantized");
            class_name(&b, names, dep[i]);
            qat_strbuf_printf(&b, "</figcaption></figure>");
            shown++;
        }
        qat_strbuf_printf(&b, "</div>\n");
    }

    /* training curves */
    qat_strbuf_printf(&b, "<h2 id=\"training\">Training</h2>\n");
    if (parse_history(&h, qat_checkpoint_extra(&c.o.ckpt, QAT_HISTORY_KEY))) {
        double *tmp[6];
        for (int k = 0; k < 6; k++) tmp[k] = calloc((size_t)h.rows, sizeof(double));
        if (!tmp[0] || !tmp[1] || !tmp[2] || !tmp[3] || !tmp[4] || !tmp[5]) {
            s = qat_error_set(&err, QAT_STATUS_NOMEM, "out of memory");
            goto fail;
        }
        const double *ep = hist_col(&h, "epoch", tmp[0]);
        series loss[2] = {{"train", ep, hist_col(&h, "train_loss", tmp[1]), h.rows},
                          {"test", ep, hist_col(&h, "test_loss", tmp[2]), h.rows}};
        series acc[2] = {{"train", ep, hist_col(&h, "train_acc", tmp[3]), h.rows},
                         {"test", ep, hist_col(&h, "test_acc", tmp[4]), h.rows}};
        series lr[1] = {{"learning rate (last step)", ep, hist_col(&h, "lr", tmp[5]), h.rows}};
        line_chart(&b, "loss-curve", "loss", "epoch", loss, 2, true);
        line_chart(&b, "accuracy-curve", "accuracy", "epoch", acc, 2, true);
        line_chart(&b, "lr-curve", "learning rate", "epoch", lr, 1, true);
        /* learned quantization parameters */
        if (h.cols > 7) {
            qat_strbuf_printf(&b, "<h3>Learned quantization parameters</h3>\n<p class=\"small\">PACT clips (alpha) and LSQ "
                    "steps at the end of each epoch (a weight step: the layer's mean).</p>\n");
            for (int c0 = 7; c0 < h.cols; c0 += 8) {
                series ps[8];
                double *cols[8] = {0};
                int np = 0;
                for (int cc = c0; cc < h.cols && np < 8; cc++, np++) {
                    cols[np] = calloc((size_t)h.rows, sizeof(double));
                    if (cols[np]) hist_col(&h, h.names[cc], cols[np]);
                    ps[np] = (series){h.names[cc], ep, cols[np], cols[np] ? h.rows : 0};
                }
                line_chart(&b, c0 == 7 ? "quant-params" : "quant-params-more", "PACT alphas and LSQ steps", "epoch",
                           ps, np, false);
                for (int k = 0; k < np; k++) free(cols[k]);
            }
        }
        for (int k = 0; k < 6; k++) free(tmp[k]);
    } else {
        qat_strbuf_printf(&b, "<p>This checkpoint carries no training history (it was written before qat kept one, or not by "
                "<code>qat train</code>).</p>\n");
    }

    /* layers: weights and activations */
    qat_strbuf_printf(&b, "<h2 id=\"layers\">Layers: weights and activations</h2>\n<p class=\"small\">Bars: a histogram "
            "(log count) of the values. Drawn over it when the model is quantized: the quantization levels "
            "(ticks), the clip range (red, dashed) and real zero (green). Weights are shown in units of their "
            "channel's scale (the integer grid); activations are the float model's on %d test samples, the "
            "input of each conv or linear layer, on the grid of the point that quantizes it.</p>\n",
        n < 256 ? n : 256);
    {
        qat_batch bt;
        qat_tape t;
        qat_tape_init(&t, 0);
        t.training = t.grad_enabled = false;
        if (!qat_loader_seek(&c.ltest, 0, 0, &err) && qat_loader_next(&c.ltest, &bt)) {
            qat_tensor *x = qat_tape_input(&t, bt.ndim, bt.shape, bt.x);
            if (!qat_model_forward_float(m, &t, x, on_layer, &sa)) {
                s = qat_error_set(&err, t.err.status, "%s", t.err.msg);
                qat_tape_free(&t);
                goto fail;
            }
        }
        qat_tape_free(&t);
    }
    feedmap fm = {0};
    if (q) {
        const qat_qpoint *cur = &q->input;
        map_seq(&m->root, &cur, &fm);
    }
    for (int k = 0; k < sa.count; k++) {
        const qat_layer *l = sa.layer[k];
        const qat_layer_quant *u = l->quant;
        char id[96], title[160];
        qat_strbuf_printf(&b, "<h3>Layer ");
        esc(&b, l->name);
        qat_strbuf_printf(&b, " (%s)</h3>\n", kind_name(l));
        /* weights */
        float *w = u ? qat_quant_folded_weights(u) : NULL;
        const float *wv = w ? w : l->weight.data;
        const size_t wn = l->weight.n;
        float *norm = NULL;
        grid gw = {0};
        if (u && !(q->spec.nf4 || q->spec.dq) && u->n_wscales) {
            float *sc = malloc(u->n_wscales * sizeof(float));
            norm = malloc(wn * sizeof(float));
            if (sc && norm) {
                qat_quant_weight_scales(u, sc);
                const size_t inner = wn / (size_t)u->wrows, per_row = u->n_wscales / (size_t)u->wrows;
                for (size_t i = 0; i < wn; i++) {
                    size_t r = i / inner, j = i % inner;
                    size_t si = r * per_row + (u->wgroup ? j / (size_t)u->wgroup : 0);
                    norm[i] = wv[i] / sc[si];
                }
                const int qm = qat_qmax_weight(u->wbits);
                gw = (grid){true, 1.0, 0, -qm, qm};
            }
            free(sc);
        }
        snprintf(id, sizeof id, "weights-%s", l->name);
        snprintf(title, sizeof title, "weights%s (%zu)", u && u->bn ? ", batch norm folded" : "", wn);
        histogram(&b, id, title, gw.have ? norm : wv, wn, &gw, gw.have ? "weight / scale (levels)" : "weight");
        free(norm);
        free(w);
        /* activations */
        grid ga = q ? point_grid(feeding(&fm, l)) : (grid){0};
        snprintf(id, sizeof id, "activations-%s", l->name);
        snprintf(title, sizeof title, "input activations%s", q && !ga.have ? " (per row, dynamic)" : "");
        histogram(&b, id, title, sa.x[k], sa.n[k], &ga, "value");
    }

    /* sensitivity */
    qat_strbuf_printf(&b, "<h2 id=\"sensitivity\">Per-layer sensitivity</h2>\n");
    if (!float_ckpt && !q) float_ckpt = ckpt;
    if (float_ckpt && sens_samples > 0) {
        qat_opened fo;
        if ((s = qat_model_open(&fo, float_ckpt, 0, &err))) goto fail;
        qat_loader ltr = {0}, lte = {0};
        qat_dataset sub = c.test;
        sub.n = c.test.n < sens_samples ? c.test.n : sens_samples;
        qat_loader_config fc = lc;
        qat_loader_config_normalize(&fc, &fo.norm);
        qat_opened_free(&fo);
        s = cli_open_data(&c.train, data, format, QAT_SPLIT_TRAIN, m, &err);
        if (!s) c.have_train = true;
        if (!s) s = qat_loader_init(&ltr, &c.train, &fc, &err);
        if (!s) s = qat_loader_init(&lte, &sub, &fc, &err);
        qat_sensitivity sens;
        const int bits[2] = {4, 2};
        char base[2048] = "w8a8";
        if (q && q->spec.wbits == 8 && !q->spec.token && !q->spec.smooth && !q->spec.n_layer_bits) snprintf(base, sizeof base, "%s", spec);
        if (!quiet && !s) fprintf(stderr, "qat report: sensitivity of each layer at 4 and 2 bits (%d samples)\n", sub.n);
        if (!s) s = qat_sensitivity_measure(&sens, float_ckpt, base, bits, 2, &ltr, &lte, QAT_REPORT_CALIB, NULL, NULL, &err);
        qat_loader_free(&ltr);
        qat_loader_free(&lte);
        if (s) goto fail;
        qat_strbuf_printf(&b, "<p>The accuracy each conv or linear layer costs when its weights alone go to 4 or 2 bits, the rest "
                "at <code>");
        esc(&b, sens.base);
        qat_strbuf_printf(&b, "</code> (PTQ of <code>");
        esc(&b, float_ckpt);
        qat_strbuf_printf(&b, "</code>, %d test samples; base accuracy %.2f%%).</p>\n", sub.n, 100 * sens.base_accuracy);
        const double W = 560, RH = 30, L = 90, T = 24;
        const double H = T + RH * sens.n_layers + 28;
        double worst = 0.5;
        for (int i = 0; i < sens.n_layers; i++)
            for (int j = 0; j < sens.n_bits; j++) worst = fmax(worst, 100 * (sens.base_accuracy - sens.accuracy[i][j]));
        qat_strbuf_printf(&b, "<figure class=\"chart\" id=\"sensitivity-chart\"><svg width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 "
                "%.0f %.0f\" role=\"img\" aria-label=\"sensitivity\"><text x=\"%.0f\" y=\"16\" class=\"t\">accuracy "
                "lost (points)</text>",
            W, H, W, H, L);
        for (int i = 0; i < sens.n_layers; i++) {
            double y = T + RH * i;
            qat_strbuf_printf(&b, "<text x=\"%.0f\" y=\"%.1f\" class=\"ytick\">", L - 6, y + 12);
            esc(&b, sens.layer[i]);
            qat_strbuf_printf(&b, "</text>");
            for (int j = 0; j < sens.n_bits; j++) {
                double cost = 100 * (sens.base_accuracy - sens.accuracy[i][j]), bw = fmax(0, cost) / worst * (W - L - 70);
                qat_strbuf_printf(&b, "<rect x=\"%.0f\" y=\"%.1f\" width=\"%.1f\" height=\"11\" fill=\"%s\"/><text x=\"%.1f\" "
                        "y=\"%.1f\">%.2f (%d-bit)</text>",
                    L, y + 2 + 13 * j, bw, COLORS[j], L + bw + 4, y + 11 + 13 * j, cost, sens.bits[j]);
            }
        }
        qat_strbuf_printf(&b, "</svg></figure>\n");
    } else {
        qat_strbuf_printf(&b, "<p>Not measured: the float checkpoint this model came from is not known (give it with "
                "<code>--float</code>).</p>\n");
    }

    /* model summary */
    qat_strbuf_printf(&b, "<h2 id=\"model\">Model</h2>\n<table id=\"model-table\"><tr><th>layer</th><th>kind</th><th>output</th>"
            "<th>parameters</th><th>MACs</th><th>fp32 bytes</th><th>int8 bytes</th></tr>\n");
    {
        long tp = 0, tm = 0;
        double t32 = 0, t8 = 0;
        summary_rows(&b, &m->root, &tp, &tm, &t32, &t8);
        qat_strbuf_printf(&b, "<tr><th>total</th><th></th><th></th><th>%ld</th><th>%ld</th><th>%.0f</th><th>%s", tp, tm, t32,
            q ? "" : "-");
        if (q) qat_strbuf_printf(&b, "%.0f", t8);
        qat_strbuf_printf(&b, "</th></tr>\n</table>\n<p class=\"small\">int8 bytes: weights at their bits, int32 biases and a "
                "32-bit multiplier and shift per output channel.</p>\n");
    }
    qat_strbuf_printf(&b, "<p class=\"small\">Written by qat report. Self-contained: no script, no external resource.</p>\n"
            "</body></html>\n");
    if (b.oom) {
        s = qat_error_set(&err, QAT_STATUS_NOMEM, "out of memory");
        goto fail;
    }
    const qat_chunk chunk = {b.p, b.len};
    if ((s = qat_file_write_atomic(out, &chunk, 1, &err))) goto fail;
    if (!quiet) fprintf(stderr, "qat report: wrote %s (%zu bytes)\n", out, b.len);
    rc = 0;
fail:
    if (rc) cli_fail("report", err.msg);
    for (int k = 0; k < sa.count; k++) free(sa.x[k]);
    free(h.v);
    free(pf), free(pq), free(p8);
    free(b.p);
    qat_loader_free(&c.ltest);
    qat_dataset_free(&c.test);
    if (c.have_train) qat_dataset_free(&c.train);
    qat_opened_free(&c.o);
    return rc;
}

/* Whether the file starts as a safetensors container does (an 8-byte header length, '{'). */
static bool looks_like_container(const char *path) {
    FILE *f = fopen(path, "rb");
    unsigned char b[9];
    bool yes = f && fread(b, 1, 9, f) == 9 && b[8] == '{';
    if (f) fclose(f);
    return yes;
}

/* The newest checkpoint in a directory (a safetensors container, not an int8 model). */
static bool newest_checkpoint(const char *dir, char *path, size_t len) {
    DIR *d = opendir(dir);
    if (!d) return false;
    struct dirent *e;
    double best = -1;
    char p[4096];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) || !S_ISREG(st.st_mode) || !looks_like_container(p) || cli_is_int8(p)) continue;
        double t = (double)st.st_mtim.tv_sec + 1e-9 * (double)st.st_mtim.tv_nsec;
        if (t > best) {
            best = t;
            snprintf(path, len, "%s", p);
        }
    }
    closedir(d);
    return best >= 0;
}

int cmd_report(int argc, char **argv) {
    const char *float_ckpt = NULL, *data = NULL, *format = NULL, *out = NULL;
    int samples = QAT_REPORT_SENS_SAMPLES, test_samples = 0;
    bool quiet = false;
    qat_opt opts[] = {
        {"out", QAT_OPT_STRING, &out, "FILE", "the HTML file to write (required)"},
        {"float", QAT_OPT_STRING, &float_ckpt, "CKPT", "the float checkpoint the model came from (sensitivity)"},
        {"data", QAT_OPT_STRING, &data, "PATH", "test data (default: the checkpoint's)"},
        {"format", QAT_OPT_STRING, &format, "F", "idx, cifar10, folder or csv (default: detected)"},
        {"test-samples", QAT_OPT_INT, &test_samples, "N", "evaluate on the first N test samples (0: all)"},
        {"sens-samples", QAT_OPT_INT, &samples, "N", "test samples per sensitivity measurement; 0: skip (1000)"},
        {"quiet", QAT_OPT_FLAG, &quiet, NULL, "no progress on stderr"},
        {0}};
    char *pos[1];
    qat_error err = {0};
    int np = qat_args_parse(argc, argv, opts, pos, 1, &err);
    if (np == -2 || np == 0) {
        qat_args_help(np == -2 ? stdout : stderr, "qat report CHECKPOINT|RUN_DIR --out report.html [options]",
                      "One self-contained HTML page (inline SVG, no script) showing what quantization does to "
                      "the model: accuracy of float, fake-quant and int8, the confusion matrix, the images the int8 "
                      "model gets wrong where the float one does not, training curves, weights and activations "
                      "with the quantization grid, per-layer sensitivity, layer sizes. RUN_DIR: its newest "
                      "checkpoint.",
                      opts);
        return np == -2 ? 0 : 2;
    }
    if (np < 0) return cli_fail("report", err.msg);
    if (!out) return cli_fail("report", "--out FILE is required");
    if (samples < 0 || test_samples < 0) return cli_fail("report", "--sens-samples and --test-samples must be >= 0");
    if (qat_file_check_output(out, &err)) return cli_fail("report", err.msg);
    char path[4096];
    const char *ckpt = pos[0];
    struct stat st;
    if (!stat(ckpt, &st) && S_ISDIR(st.st_mode)) {
        if (!newest_checkpoint(ckpt, path, sizeof path))
            return cli_fail_in("report", ckpt, "a directory with no checkpoint in it");
        ckpt = path;
    }
    return cli_report(ckpt, float_ckpt, data, format, out, test_samples, samples, quiet);
}

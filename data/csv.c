/* csv.c - a CSV file of numbers: one sample per line, the label first, the features
 * after it (layout and rules in dataset.h and docs/data.md).
 *
 * The whole file is read into memory (at most QAT_DATA_MAX_BYTES; plain or gzip) and
 * parsed in place: each field is cut out, trimmed and converted with strtod, which must
 * consume all of it. strtod follows the C locale's decimal point; the library never
 * calls setlocale, so that is '.' unless the program changed LC_NUMERIC.
 */
#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "dataset.h"
#include "fileio.h"

/* Field [*a, *b) with surrounding blanks removed. */
static void trim(char **a, char **b) {
    while (*a < *b && isspace((unsigned char)**a)) (*a)++;
    while (*b > *a && isspace((unsigned char)(*b)[-1])) (*b)--;
}

/* Parses field [a, b) as a whole number; false if it is not one. Writes a NUL at b. */
static bool parse_number(char *a, char *b, double *v) {
    if (a == b) return false;
    *b = '\0';
    char *end = NULL;
    *v = strtod(a, &end);
    return end == b;
}

/* Number of comma-separated columns of [line, end). */
static int count_columns(const char *line, const char *end) {
    int n = 1;
    for (const char *p = line; p < end; p++) n += *p == ',';
    return n;
}

typedef struct csv_out {
    float *features;
    int32_t *labels;
    size_t n, cap;
    int dim;
} csv_out;

static qat_status grow(csv_out *o, const char *path, qat_error *err) {
    size_t max_rows = QAT_MIN(QAT_DATA_MAX_BYTES / sizeof(float) / (size_t)o->dim,
                              (size_t)INT32_MAX);
    if (o->n >= max_rows)
        return qat_error_set(err, QAT_STATUS_FORMAT,
                             "%s: too large: more than %zu rows of %d features pass the limit "
                             "of %zu bytes (QAT_DATA_MAX_BYTES)",
                             path, o->n, o->dim, QAT_DATA_MAX_BYTES);
    size_t cap = QAT_MIN(o->cap ? 2 * o->cap : 256, max_rows);
    float *f = realloc(o->features, cap * (size_t)o->dim * sizeof(float));
    if (f) o->features = f;
    int32_t *l = realloc(o->labels, cap * sizeof(int32_t));
    if (l) o->labels = l;
    if (!f || !l) return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    o->cap = cap;
    return QAT_STATUS_OK;
}

/* One data row [line, end) of dim + 1 columns (already counted) into o. */
static qat_status parse_row(csv_out *o, char *line, char *end, const char *path, int lineno,
                            int n_classes, qat_error *err) {
    if (o->n == o->cap) {
        qat_status s = grow(o, path, err);
        if (s) return s;
    }
    float *row = o->features + o->n * (size_t)o->dim;
    char *a = line;
    for (int col = 0; col <= o->dim; col++) {
        char *b = col < o->dim ? memchr(a, ',', (size_t)(end - a)) : end;
        QAT_ASSERT(b); /* the columns were counted */
        char *next = b + 1, *fa = a, *fb = b;
        trim(&fa, &fb);
        int shown = (int)QAT_MIN(fb - fa, 40);
        double v = 0;
        if (fa == fb)
            return qat_error_set(err, QAT_STATUS_FORMAT, "%s:%d: column %d is empty", path,
                                 lineno, col + 1);
        char saved = *fb;
        if (!parse_number(fa, fb, &v)) {
            *fb = saved;
            return qat_error_set(err, QAT_STATUS_FORMAT,
                                 "%s:%d: column %d: '%.*s' is not a number", path, lineno,
                                 col + 1, shown, fa);
        }
        if (!isfinite(v) || fabs(v) > FLT_MAX)
            return qat_error_set(err, QAT_STATUS_NUMERIC,
                                 "%s:%d: column %d: '%.*s' is not a finite float (NaN, Inf "
                                 "and values beyond +-3.4e38 are not allowed)",
                                 path, lineno, col + 1, shown, fa);
        if (col == 0) {
            int limit = n_classes > 0 ? n_classes : QAT_DATA_MAX_CLASSES;
            if (v < 0 || v != floor(v))
                return qat_error_set(err, QAT_STATUS_FORMAT,
                                     "%s:%d: label '%.*s' (column 1) is not a whole number "
                                     ">= 0; the label comes first, the features after it",
                                     path, lineno, shown, fa);
            if (v >= limit)
                return qat_error_set(err, QAT_STATUS_FORMAT,
                                     "%s:%d: label %.0f is out of range: expected 0..%d (%s)",
                                     path, lineno, v, limit - 1,
                                     n_classes > 0 ? "the number of classes given"
                                                   : "QAT_DATA_MAX_CLASSES");
            o->labels[o->n] = (int32_t)v;
        } else {
            row[col - 1] = (float)v;
        }
        a = next;
    }
    o->n++;
    return QAT_STATUS_OK;
}

qat_status qat_dataset_load_csv(qat_dataset *ds, const char *path, int n_classes,
                                qat_error *err) {
    QAT_ASSERT(ds && path);
    memset(ds, 0, sizeof *ds);
    if (n_classes < 0 || n_classes > QAT_DATA_MAX_CLASSES)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "qat_dataset_load_csv: n_classes = %d, expected 0 (infer) .. %d",
                             n_classes, QAT_DATA_MAX_CLASSES);
    char *text = NULL;
    size_t len = 0;
    qat_status s = qat_data_slurp(path, QAT_DATA_MAX_BYTES, &text, &len, err);
    if (s) return s;
    csv_out o = {0};
    int cols = 0, cols_line = 0, lineno = 0;
    char *p = text, *stop = text + len;
    while (!s && p < stop) {
        char *nl = memchr(p, '\n', (size_t)(stop - p));
        char *end = nl ? nl : stop, *next = nl ? nl + 1 : stop;
        lineno++;
        if (end > p && end[-1] == '\r') end--;
        char *a = p, *b = end;
        trim(&a, &b);
        p = next;
        if (a == b) continue; /* blank line */
        int n = count_columns(a, b);
        if (cols == 0) { /* the first line: the header, or the first row */
            if (n < 2) {
                s = qat_error_set(err, QAT_STATUS_FORMAT,
                                  "%s:%d: %d column: a row needs a label and at least one "
                                  "feature",
                                  path, lineno, n);
                break;
            }
            cols = n;
            cols_line = lineno;
            o.dim = n - 1;
            char *comma = memchr(a, ',', (size_t)(b - a)), *fa = a, *fb = comma;
            trim(&fa, &fb);
            char saved = *fb;
            double v;
            bool numeric = parse_number(fa, fb, &v);
            *fb = saved;
            if (!numeric) continue; /* a header: its first field is not a number */
        } else if (n != cols) {
            s = qat_error_set(err, QAT_STATUS_FORMAT,
                              "%s:%d: %d columns, expected %d as on line %d (every row is a "
                              "label and the same number of features)",
                              path, lineno, n, cols, cols_line);
            break;
        }
        s = parse_row(&o, a, b, path, lineno, n_classes, err);
    }
    free(text);
    if (!s && o.n == 0)
        s = qat_error_set(err, QAT_STATUS_FORMAT, "%s: empty: no data rows%s", path,
                          cols ? " after the header" : "");
    if (s) {
        free(o.features);
        free(o.labels);
        return s;
    }
    int max_label = 0;
    for (size_t i = 0; i < o.n; i++) max_label = QAT_MAX(max_label, o.labels[i]);
    float *f = realloc(o.features, o.n * (size_t)o.dim * sizeof(float));
    int32_t *l = realloc(o.labels, o.n * sizeof(int32_t));
    ds->kind = QAT_DATASET_KIND_FEATURES;
    ds->n = (int)o.n;
    ds->dim = o.dim;
    ds->n_classes = n_classes > 0 ? n_classes : max_label + 1;
    ds->features = f ? f : o.features;
    ds->labels = l ? l : o.labels;
    return QAT_STATUS_OK;
}

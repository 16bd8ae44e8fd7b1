#include "model_file.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>

#include "io/strbuf.h"

/* ---- parsing ---- */

#define MAX_TOKENS 16

typedef struct line_ctx {
    const char *source;
    int line;
    qat_error *err;
} line_ctx;

static qat_status line_fail(line_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static qat_status line_fail(line_ctx *c, const char *fmt, ...) {
    char msg[QAT_ERROR_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return qat_error_set(c->err, QAT_STATUS_FORMAT, "%s:%d: %s", c->source, c->line, msg);
}

/* Parses a whole decimal int in [lo, hi]. */
static bool parse_int(const char *s, int lo, int hi, int *out) {
    if (!*s) return false;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || errno || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

typedef struct option {
    const char *key;
    const char *value;
    bool used;
} option;

typedef struct stmt {
    char *word;
    option opts[MAX_TOKENS];
    int n_opts;
    char *args[MAX_TOKENS]; /* positional (only `input` has them) */
    int n_args;
} stmt;

/* Splits a line (modified in place) into the statement word, positional arguments
 * and key=value options. */
static qat_status split(char *s, stmt *st, line_ctx *c) {
    memset(st, 0, sizeof *st);
    char *p = s;
    while (*p) {
        while (isspace((unsigned char)*p)) p++;
        if (!*p) break;
        char *tok = p;
        while (*p && !isspace((unsigned char)*p)) p++;
        if (*p) *p++ = '\0';
        if (!st->word) {
            st->word = tok;
            continue;
        }
        char *eq = strchr(tok, '=');
        if (!eq) {
            if (st->n_args == MAX_TOKENS) return line_fail(c, "too many values");
            st->args[st->n_args++] = tok;
            continue;
        }
        if (eq == tok || !eq[1]) return line_fail(c, "'%s' should be key=value", tok);
        *eq = '\0';
        for (int i = 0; i < st->n_opts; i++)
            if (strcmp(st->opts[i].key, tok) == 0) return line_fail(c, "option '%s' given twice", tok);
        if (st->n_opts == MAX_TOKENS) return line_fail(c, "too many options");
        st->opts[st->n_opts++] = (option){tok, eq + 1, false};
    }
    return QAT_STATUS_OK;
}

static const char *opt_raw(stmt *st, const char *key) {
    for (int i = 0; i < st->n_opts; i++)
        if (strcmp(st->opts[i].key, key) == 0) {
            st->opts[i].used = true;
            return st->opts[i].value;
        }
    return NULL;
}

/* An integer option in [lo, hi]; `required` or else `def`. */
static qat_status opt_int(stmt *st, line_ctx *c, const char *key, bool required, int def, int lo,
                          int hi, int *out) {
    const char *v = opt_raw(st, key);
    if (!v) {
        if (required) return line_fail(c, "%s needs %s=N", st->word, key);
        *out = def;
        return QAT_STATUS_OK;
    }
    if (!parse_int(v, lo, hi, out))
        return line_fail(c, "%s=%s: expected a whole number from %d to %d", key, v, lo, hi);
    return QAT_STATUS_OK;
}

static qat_status opt_bool(stmt *st, line_ctx *c, const char *key, bool def, bool *out) {
    const char *v = opt_raw(st, key);
    if (!v) *out = def;
    else if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0) *out = true;
    else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0) *out = false;
    else return line_fail(c, "%s=%s: expected true or false", key, v);
    return QAT_STATUS_OK;
}

static qat_status opt_float(stmt *st, line_ctx *c, const char *key, float def, float *out) {
    const char *v = opt_raw(st, key);
    if (!v) {
        *out = def;
        return QAT_STATUS_OK;
    }
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (*end || errno || !(d == d)) return line_fail(c, "%s=%s: expected a number", key, v);
    *out = (float)d;
    return QAT_STATUS_OK;
}

/* Every option must have been consumed by the layer: a typo is an error, not a
 * silently ignored setting. */
static qat_status check_unused(stmt *st, line_ctx *c) {
    for (int i = 0; i < st->n_opts; i++)
        if (!st->opts[i].used)
            return line_fail(c, "%s has no option '%s'", st->word, st->opts[i].key);
    if (st->n_args && strcmp(st->word, "input") != 0)
        return line_fail(c, "%s: unexpected value '%s' (options are key=value)", st->word, st->args[0]);
    return QAT_STATUS_OK;
}

#define TRY(x)                                                                                   \
    do {                                                                                         \
        qat_status s_ = (x);                                                                     \
        if (s_ != QAT_STATUS_OK) return s_;                                                      \
    } while (0)

/* Applies one statement to the model under construction. */
static qat_status apply(qat_model **mp, stmt *st, line_ctx *c) {
    const char *w = st->word;
    const int BIG = 1 << 20;
    if (strcmp(w, "input") == 0) {
        if (*mp) return line_fail(c, "input given twice");
        if (st->n_args != 1 && st->n_args != 3)
            return line_fail(c, "input takes C H W or a number of features");
        int shape[3];
        for (int i = 0; i < st->n_args; i++)
            if (!parse_int(st->args[i], 1, 1 << 16, &shape[i]))
                return line_fail(c, "input: '%s' is not a dimension from 1 to 65536", st->args[i]);
        TRY(check_unused(st, c));
        *mp = qat_model_new(st->n_args, shape);
        if (!*mp) return qat_error_set(c->err, QAT_STATUS_NOMEM, "out of memory");
        return QAT_STATUS_OK;
    }
    qat_model *m = *mp;
    if (!m) return line_fail(c, "the first statement must be 'input C H W' or 'input FEATURES'");
    qat_status s;
    if (strcmp(w, "conv2d") == 0) {
        int out, k, stride, pad, groups;
        bool bias;
        TRY(opt_int(st, c, "out", true, 0, 1, BIG, &out));
        TRY(opt_int(st, c, "kernel", true, 0, 1, 64, &k));
        TRY(opt_int(st, c, "stride", false, 1, 1, 64, &stride));
        TRY(opt_int(st, c, "pad", false, 0, 0, 64, &pad));
        TRY(opt_int(st, c, "groups", false, 1, 1, BIG, &groups));
        TRY(opt_bool(st, c, "bias", true, &bias));
        TRY(check_unused(st, c));
        s = qat_model_conv2d(m, out, k, stride, pad, groups, bias);
    } else if (strcmp(w, "linear") == 0) {
        int out;
        bool bias;
        TRY(opt_int(st, c, "out", true, 0, 1, BIG, &out));
        TRY(opt_bool(st, c, "bias", true, &bias));
        TRY(check_unused(st, c));
        s = qat_model_linear(m, out, bias);
    } else if (strcmp(w, "maxpool") == 0 || strcmp(w, "avgpool") == 0) {
        int k, stride, pad;
        TRY(opt_int(st, c, "kernel", true, 0, 1, 64, &k));
        TRY(opt_int(st, c, "stride", false, k, 1, 64, &stride));
        TRY(opt_int(st, c, "pad", false, 0, 0, 32, &pad));
        TRY(check_unused(st, c));
        s = w[0] == 'm' ? qat_model_maxpool(m, k, stride, pad) : qat_model_avgpool(m, k, stride, pad);
    } else if (strcmp(w, "leaky_relu") == 0) {
        float alpha = 0.01f;
        TRY(opt_float(st, c, "alpha", 0.01f, &alpha));
        TRY(check_unused(st, c));
        s = qat_model_leaky_relu(m, alpha);
    } else if (strcmp(w, "dropout") == 0) {
        float p = 0.5f;
        TRY(opt_float(st, c, "p", 0.5f, &p));
        TRY(check_unused(st, c));
        s = qat_model_dropout(m, p);
    } else {
        static const struct {
            const char *word;
            qat_status (*fn)(qat_model *);
        } simple[] = {
            {"batchnorm", qat_model_batchnorm}, {"relu", qat_model_relu},
            {"relu6", qat_model_relu6},         {"sigmoid", qat_model_sigmoid},
            {"tanh", qat_model_tanh},           {"global_avgpool", qat_model_global_avgpool},
            {"hardswish", qat_model_hardswish},
            {"flatten", qat_model_flatten},     {"residual", qat_model_residual_begin},
            {"shortcut", qat_model_residual_shortcut}, {"end", qat_model_residual_end},
        };
        size_t i = 0;
        while (i < sizeof simple / sizeof *simple && strcmp(simple[i].word, w) != 0) i++;
        if (i == sizeof simple / sizeof *simple)
            return line_fail(c,
                             "unknown layer '%s' (known: input conv2d linear batchnorm relu relu6 "
                             "sigmoid tanh hardswish leaky_relu maxpool avgpool global_avgpool flatten dropout "
                             "residual shortcut end)",
                             w);
        TRY(check_unused(st, c));
        s = simple[i].fn(m);
    }
    if (s != QAT_STATUS_OK) {
        /* The builder's message names the layer and the shapes; add the line. */
        char msg[QAT_ERROR_MSG_LEN];
        snprintf(msg, sizeof msg, "%s", m->err.msg);
        qat_error tmp = {0};
        qat_error_set(&tmp, s, "%s:%d: %s", c->source, c->line, msg);
        *c->err = tmp;
        return s;
    }
    return QAT_STATUS_OK;
}

qat_status qat_model_parse(const char *text, const char *source, qat_model **out, qat_error *err) {
    QAT_ASSERT(text && out);
    *out = NULL;
    qat_error local = {0};
    if (!err) err = &local;
    if (!source) source = "<model>";
    qat_model *m = NULL;
    line_ctx c = {source, 0, err};
    const char *p = text;
    qat_status s = QAT_STATUS_OK;
    while (*p && s == QAT_STATUS_OK) {
        c.line++;
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char buf[1024];
        if (len >= sizeof buf) {
            s = line_fail(&c, "line longer than %zu characters", sizeof buf - 1);
            break;
        }
        memcpy(buf, p, len);
        buf[len] = '\0';
        p += len + (eol ? 1 : 0);
        char *hash = strchr(buf, '#');
        if (hash) *hash = '\0';
        stmt st;
        s = split(buf, &st, &c);
        if (s == QAT_STATUS_OK && st.word) s = apply(&m, &st, &c);
    }
    if (s == QAT_STATUS_OK && !m)
        s = qat_error_set(err, QAT_STATUS_FORMAT, "%s: no 'input' statement: the file describes no model", source);
    if (s == QAT_STATUS_OK && m->depth != 1)
        s = qat_error_set(err, QAT_STATUS_FORMAT, "%s: a residual block is not closed with 'end'", source);
    if (s == QAT_STATUS_OK && m->root.n == 0)
        s = qat_error_set(err, QAT_STATUS_FORMAT, "%s: the model has no layers", source);
    if (s != QAT_STATUS_OK) {
        qat_model_free(m);
        return s;
    }
    *out = m;
    return QAT_STATUS_OK;
}

const char *qat_model_builtin_text(const char *name) {
    if (strcmp(name, "cnn") == 0)
        return "input 1 28 28\nconv2d out=32 kernel=3 pad=1\nbatchnorm\nrelu\nmaxpool kernel=2\n"
               "conv2d out=64 kernel=3 pad=1\nbatchnorm\nrelu\nmaxpool kernel=2\nflatten\n"
               "linear out=128\nrelu\nlinear out=10\n";
    if (strcmp(name, "mlp") == 0)
        return "input 1 28 28\nflatten\nlinear out=256\nrelu\nlinear out=128\nrelu\nlinear out=10\n";
    return NULL;
}

qat_status qat_model_load_file(const char *path, qat_model **out, qat_error *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return qat_error_set(err, QAT_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
    enum { LIMIT = 1 << 20 };
    char *text = malloc(LIMIT + 1);
    if (!text) {
        fclose(f);
        return qat_error_set(err, QAT_STATUS_NOMEM, "out of memory");
    }
    size_t n = fread(text, 1, LIMIT + 1, f);
    bool bad = ferror(f);
    fclose(f);
    qat_status s;
    if (bad) s = qat_error_set(err, QAT_STATUS_IO, "%s: read error", path);
    else if (n > LIMIT) s = qat_error_set(err, QAT_STATUS_FORMAT, "%s: larger than 1 MiB: not a model file", path);
    else if (memchr(text, '\0', n)) s = qat_error_set(err, QAT_STATUS_FORMAT, "%s: contains a NUL byte: not a text model file", path);
    else {
        text[n] = '\0';
        s = qat_model_parse(text, path, out, err);
    }
    free(text);
    return s;
}

/* ---- writing ---- */

static void write_seq(qat_strbuf *b, const qat_seq *s, int indent) {
    for (int i = 0; i < s->n; i++) {
        const qat_layer *l = &s->layers[i];
        qat_strbuf_printf(b, "%*s", indent, "");
        switch (l->kind) {
        case QAT_LAYER_CONV2D:
            qat_strbuf_printf(b, "conv2d out=%d kernel=%d", l->cfg.conv.out, l->cfg.conv.kernel);
            if (l->cfg.conv.stride != 1) qat_strbuf_printf(b, " stride=%d", l->cfg.conv.stride);
            if (l->cfg.conv.pad) qat_strbuf_printf(b, " pad=%d", l->cfg.conv.pad);
            if (l->cfg.conv.groups != 1) qat_strbuf_printf(b, " groups=%d", l->cfg.conv.groups);
            if (!l->cfg.conv.bias) qat_strbuf_printf(b, " bias=false");
            break;
        case QAT_LAYER_LINEAR:
            qat_strbuf_printf(b, "linear out=%d%s", l->cfg.linear.out, l->cfg.linear.bias ? "" : " bias=false");
            break;
        case QAT_LAYER_MAXPOOL:
        case QAT_LAYER_AVGPOOL:
            qat_strbuf_printf(b, "%s kernel=%d", qat_layer_kind_str(l->kind), l->cfg.pool.kernel);
            if (l->cfg.pool.stride != l->cfg.pool.kernel) qat_strbuf_printf(b, " stride=%d", l->cfg.pool.stride);
            if (l->cfg.pool.pad) qat_strbuf_printf(b, " pad=%d", l->cfg.pool.pad);
            break;
        case QAT_LAYER_DROPOUT: qat_strbuf_printf(b, "dropout p=%.9g", (double)l->cfg.dropout.p); break;
        case QAT_LAYER_LEAKY_RELU: qat_strbuf_printf(b, "leaky_relu alpha=%.9g", (double)l->cfg.leaky.alpha); break;
        case QAT_LAYER_RESIDUAL:
            qat_strbuf_printf(b, "residual\n");
            write_seq(b, &l->body, indent + 2);
            if (l->shortcut.n) {
                qat_strbuf_printf(b, "%*sshortcut\n", indent, "");
                write_seq(b, &l->shortcut, indent + 2);
            }
            qat_strbuf_printf(b, "%*send", indent, "");
            break;
        case QAT_LAYER_BATCHNORM:
        case QAT_LAYER_RELU:
        case QAT_LAYER_RELU6:
        case QAT_LAYER_SIGMOID:
        case QAT_LAYER_TANH:
        case QAT_LAYER_HARDSWISH:
        case QAT_LAYER_GLOBAL_AVGPOOL:
        case QAT_LAYER_FLATTEN:
        case QAT_LAYER_COUNT: qat_strbuf_printf(b, "%s", qat_layer_kind_str(l->kind)); break;
        }
        qat_strbuf_printf(b, "\n");
    }
}

char *qat_model_to_text(const qat_model *m) {
    qat_strbuf b = {0};
    if (m->in_ndim == 3)
        qat_strbuf_printf(&b, "input %d %d %d\n", m->in_shape[0], m->in_shape[1], m->in_shape[2]);
    else
        qat_strbuf_printf(&b, "input %d\n", m->in_shape[0]);
    write_seq(&b, &m->root, 0);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

#include "args.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <string.h>

static bool set_value(qat_opt *o, const char *v, qat_error *err);

static qat_opt *find(qat_opt *opts, const char *name, size_t len) {
    for (qat_opt *o = opts; o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0) return o;
    return NULL;
}

bool qat_args_set(qat_opt *o, const char *v, qat_error *err) {
    if (o->kind == QAT_OPT_FLAG) {
        *(bool *)o->value = strcmp(v, "true") == 0;
        o->seen = true;
        return true;
    }
    o->seen = true;
    return set_value(o, v, err);
}

void qat_args_format(const qat_opt *o, char *buf, size_t n) {
    switch (o->kind) {
    case QAT_OPT_INT: snprintf(buf, n, "%d", *(int *)o->value); break;
    case QAT_OPT_LONG: snprintf(buf, n, "%ld", *(long *)o->value); break;
    case QAT_OPT_FLOAT: snprintf(buf, n, "%.9g", (double)*(float *)o->value); break;
    case QAT_OPT_STRING: snprintf(buf, n, "%s", *(const char **)o->value ? *(const char **)o->value : ""); break;
    case QAT_OPT_FLAG: snprintf(buf, n, "%s", *(bool *)o->value ? "true" : "false"); break;
    case QAT_OPT_COUNT: break;
    }
}

static bool set_value(qat_opt *o, const char *v, qat_error *err) {
    char *end;
    errno = 0;
    switch (o->kind) {
    case QAT_OPT_INT: {
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno || x < INT_MIN || x > INT_MAX) break;
        *(int *)o->value = (int)x;
        return true;
    }
    case QAT_OPT_LONG: {
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno) break;
        *(long *)o->value = x;
        return true;
    }
    case QAT_OPT_FLOAT: {
        double x = strtod(v, &end);
        if (!*v || *end || errno || !isfinite(x)) break;
        *(float *)o->value = (float)x;
        return true;
    }
    case QAT_OPT_STRING: *(const char **)o->value = v; return true;
    case QAT_OPT_FLAG:
    case QAT_OPT_COUNT: break;
    }
    qat_error_set(err, QAT_STATUS_INVALID_ARG, "--%s %s: expected %s", o->name, v,
                  o->kind == QAT_OPT_FLOAT ? "a finite number" : "a whole number");
    return false;
}

int qat_args_parse(int argc, char **argv, qat_opt *opts, char **pos, int max_pos, qat_error *err) {
    int npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) return -2;
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (npos == max_pos) {
                qat_error_set(err, QAT_STATUS_INVALID_ARG, "unexpected argument '%s'", a);
                return -1;
            }
            pos[npos++] = argv[i];
            continue;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        qat_opt *o = find(opts, name, len);
        if (!o) {
            qat_error_set(err, QAT_STATUS_INVALID_ARG, "unknown option --%.*s (see --help)", (int)len, name);
            return -1;
        }
        o->seen = true;
        if (o->kind == QAT_OPT_FLAG) {
            if (eq) {
                qat_error_set(err, QAT_STATUS_INVALID_ARG, "--%s takes no value", o->name);
                return -1;
            }
            *(bool *)o->value = true;
            continue;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (i + 1 == argc) {
                qat_error_set(err, QAT_STATUS_INVALID_ARG, "--%s needs a value (%s)", o->name,
                              o->metavar ? o->metavar : "VALUE");
                return -1;
            }
            v = argv[++i];
        }
        if (!set_value(o, v, err)) return -1;
    }
    return npos;
}

void qat_args_help(FILE *f, const char *usage, const char *about, const qat_opt *opts) {
    fprintf(f, "usage: %s\n\n%s\n\noptions:\n", usage, about);
    for (const qat_opt *o = opts; o->name; o++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->metavar ? " " : "", o->metavar ? o->metavar : "");
        fprintf(f, "  %-24s %s", left, o->help);
        /* A help text that explains its own default ("(default: detected)", "(0: off)")
         * gets no second one. */
        bool explained = strstr(o->help, "(default") || strstr(o->help, "(0:");
        switch (explained ? QAT_OPT_FLAG : o->kind) {
        case QAT_OPT_INT: fprintf(f, " (default %d)", *(int *)o->value); break;
        case QAT_OPT_LONG: fprintf(f, " (default %ld)", *(long *)o->value); break;
        case QAT_OPT_FLOAT: fprintf(f, " (default %g)", (double)*(float *)o->value); break;
        case QAT_OPT_STRING:
            if (*(const char **)o->value) fprintf(f, " (default %s)", *(const char **)o->value);
            break;
        case QAT_OPT_FLAG:
        case QAT_OPT_COUNT: break;
        }
        fprintf(f, "\n");
    }
}

bool qat_args_seen(const qat_opt *opts, const char *name) {
    for (const qat_opt *o = opts; o->name; o++)
        if (strcmp(o->name, name) == 0) return o->seen;
    QAT_ASSERT(!"option not in the table");
    return false;
}

/* state_dict.c - weights whose names are not qat's, mapped by order and shape
 * (qat_checkpoint_import_mapped, checkpoint.h). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"

typedef enum module_kind { MOD_CONV, MOD_LINEAR, MOD_NORM, MOD_KIND_COUNT } module_kind;
static const char *const MOD_NAMES[] = {"convolution", "linear", "batch norm"};
_Static_assert(sizeof MOD_NAMES / sizeof *MOD_NAMES == MOD_KIND_COUNT, "MOD_NAMES");

#define MOD_FIELDS 4
static const char *const FIELDS[MOD_FIELDS] = {"weight", "bias", "running_mean", "running_var"};

/* One module: its name prefix and the shapes of its fields (ndim -1: absent). */
typedef struct module {
    char prefix[160];
    module_kind kind;
    int ndim[MOD_FIELDS];
    int64_t shape[MOD_FIELDS][4];
    int index[MOD_FIELDS]; /* file tensor index, or model state index */
    bool used;
    int rank; /* the grouped order: its group's place in the model */
} module;

typedef struct modlist {
    module *v;
    int n, cap;
} modlist;

static int field_of(const char *suffix) {
    for (int i = 0; i < MOD_FIELDS; i++)
        if (strcmp(suffix, FIELDS[i]) == 0) return i;
    return -1;
}

/* Adds tensor `name` (split at its last dot) to its module; false for a name that is no
 * module field (the caller reports it) or out of memory (*oom). */
static bool add(modlist *l, const char *name, int ndim, const int64_t *shape, int index, bool *oom) {
    const char *dot = strrchr(name, '.');
    if (!dot || (size_t)(dot - name) >= sizeof l->v->prefix || ndim > 4) return false;
    int f = field_of(dot + 1);
    if (f < 0) return false;
    size_t plen = (size_t)(dot - name);
    module *md = NULL;
    for (int i = 0; i < l->n && !md; i++)
        if (strlen(l->v[i].prefix) == plen && strncmp(l->v[i].prefix, name, plen) == 0) md = &l->v[i];
    if (!md) {
        if (l->n == l->cap) {
            int cap = l->cap ? 2 * l->cap : 16;
            module *p = realloc(l->v, (size_t)cap * sizeof *p);
            if (!p) {
                *oom = true;
                return false;
            }
            l->v = p;
            l->cap = cap;
        }
        md = &l->v[l->n++];
        memset(md, 0, sizeof *md);
        memcpy(md->prefix, name, plen);
        md->prefix[plen] = 0;
        for (int i = 0; i < MOD_FIELDS; i++) md->ndim[i] = -1;
    }
    if (md->ndim[f] >= 0) return false; /* twice */
    md->ndim[f] = ndim;
    for (int d = 0; d < ndim; d++) md->shape[f][d] = shape[d];
    md->index[f] = index;
    return true;
}

/* The kind from the fields; false if it is none. */
static bool classify(module *md) {
    if (md->ndim[2] >= 0 || md->ndim[3] >= 0) {
        md->kind = MOD_NORM;
        return md->ndim[0] == 1 && md->ndim[1] == 1 && md->ndim[2] == 1 && md->ndim[3] == 1;
    }
    if (md->ndim[0] == 4) md->kind = MOD_CONV;
    else if (md->ndim[0] == 2) md->kind = MOD_LINEAR;
    else return false;
    return md->ndim[1] < 0 || md->ndim[1] == 1;
}

static bool same(const module *a, const module *b) {
    if (a->kind != b->kind) return false;
    for (int f = 0; f < MOD_FIELDS; f++) {
        if (a->ndim[f] != b->ndim[f]) return false;
        for (int d = 0; d < a->ndim[f]; d++)
            if (a->shape[f][d] != b->shape[f][d]) return false;
    }
    return true;
}

/* Natural order: digit runs compare as numbers ("layer2" < "layer10"). */
static int natural_cmp(const char *a, const char *b) {
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            while (*a == '0') a++;
            while (*b == '0') b++;
            size_t na = 0, nb = 0;
            while (isdigit((unsigned char)a[na])) na++;
            while (isdigit((unsigned char)b[nb])) nb++;
            if (na != nb) return na < nb ? -1 : 1;
            int c = strncmp(a, b, na);
            if (c) return c;
            a += na;
            b += nb;
        } else {
            if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
            a++;
            b++;
        }
    }
    return *a ? 1 : *b ? -1 : 0;
}

static int module_cmp(const void *x, const void *y) {
    return natural_cmp(((const module *)x)->prefix, ((const module *)y)->prefix);
}

/* The grouped order: modules sorted by their top-level name ("stem", "b1", "layer2")
 * placed where the group's first weighted module fits the model, then naturally. */
static int grouped_cmp(const void *x, const void *y) {
    const module *a = x, *b = y;
    if (a->rank != b->rank) return a->rank < b->rank ? -1 : 1;
    return natural_cmp(a->prefix, b->prefix);
}

static size_t group_len(const char *prefix) {
    const char *dot = strchr(prefix, '.');
    return dot ? (size_t)(dot - prefix) : strlen(prefix);
}

static bool same_group(const module *a, const module *b) {
    size_t n = group_len(a->prefix);
    return n == group_len(b->prefix) && strncmp(a->prefix, b->prefix, n) == 0;
}

/* Ranks the modules of `l` (naturally sorted) by group: each weighted module of the model,
 * in order, takes the first unused file module of the same kind and shapes; a group's
 * rank is the earliest model position among its modules. False when a weighted layer
 * finds no module or a group has no weighted module (a lone batch norm cannot be
 * placed). */
static bool rank_groups(const modlist *model, modlist *l) {
    int *own = malloc((size_t)(l->n ? l->n : 1) * sizeof *own);
    if (!own) return false;
    bool ok = true;
    for (int j = 0; j < l->n; j++) own[j] = -1;
    for (int i = 0; i < model->n && ok; i++) {
        if (model->v[i].kind == MOD_NORM) continue;
        int j = 0;
        while (j < l->n && (own[j] >= 0 || !same(&model->v[i], &l->v[j]))) j++;
        if (j == l->n) ok = false;
        else own[j] = i;
    }
    for (int j = 0; j < l->n && ok; j++) {
        int r = -1;
        for (int k = 0; k < l->n; k++)
            if (own[k] >= 0 && same_group(&l->v[j], &l->v[k]) && (r < 0 || own[k] < r)) r = own[k];
        l->v[j].rank = r;
        ok = r >= 0;
    }
    free(own);
    return ok;
}

static void shape_str(char *buf, size_t len, const module *md) {
    int f = md->kind == MOD_NORM ? 2 : 0;
    qat_st_shape_str(buf, len, md->ndim[f], md->shape[f]);
}

/* Pairs model modules with file modules kind by kind, in list order; pair[i] is the file
 * module of model module i. On failure *bad is the first model module left unpaired. */
static bool pair_up(const modlist *model, const modlist *file, int *pair, int *bad) {
    for (int k = 0; k < MOD_KIND_COUNT; k++) {
        int j = 0;
        for (int i = 0; i < model->n; i++) {
            if (model->v[i].kind != (module_kind)k) continue;
            while (j < file->n && file->v[j].kind != (module_kind)k) j++;
            if (j == file->n || !same(&model->v[i], &file->v[j])) {
                *bad = i;
                return false;
            }
            pair[i] = j++;
        }
        while (j < file->n && file->v[j].kind != (module_kind)k) j++;
        if (j < file->n) { /* the file has more modules of this kind */
            *bad = -1 - j;
            return false;
        }
    }
    return true;
}

qat_status qat_checkpoint_import_mapped(qat_model *m, const char *path, FILE *log, qat_import_report *report,
                                        qat_error *err) {
    QAT_ASSERT(m != NULL && path != NULL);
    qat_import_report rep0;
    if (!report) report = &rep0;
    memset(report, 0, sizeof *report);
    qat_error e1 = {0};
    if (qat_checkpoint_import(m, path, NULL, report, &e1) == QAT_STATUS_OK) {
        if (log) fprintf(log, "  %s: the names are the model's (%d tensors)\n", path, report->n_loaded);
        return QAT_STATUS_OK;
    }
    if (e1.status != QAT_STATUS_FORMAT) return qat_error_set(err, e1.status, "%s", e1.msg);
    qat_st_file f;
    qat_status s = qat_safetensors_read(&f, path, err);
    if (s) return s;
    modlist fm = {0}, mm = {0}, sorted = {0}, grouped = {0};
    int *pair = NULL;
    float **conv = NULL;
    bool oom = false;
    for (size_t i = 0; i < f.n_tensors && !s; i++) {
        const qat_st_tensor *t = &f.tensors[i];
        const char *dot = strrchr(t->name, '.');
        if (strcmp(dot ? dot + 1 : t->name, "num_batches_tracked") == 0) {
            report->n_ignored++;
            continue;
        }
        if (!qat_st_dtype_is_float(t->dtype)) {
            s = qat_error_set(err, QAT_STATUS_FORMAT, "%s: tensor '%.80s' is %s; weights must be floating point", path,
                              t->name, qat_st_dtype_str(t->dtype));
        } else if (!add(&fm, t->name, t->ndim, t->shape, (int)i, &oom)) {
            s = oom ? qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path)
                    : qat_error_set(err, QAT_STATUS_FORMAT,
                                    "%s: tensor '%.80s' is not a module's weight, bias, running_mean or "
                                    "running_var (or appears twice); cannot map it",
                                    path, t->name);
        }
    }
    for (int i = 0; i < m->n_layer_state && !s; i++) {
        const qat_tensor *x = m->state[i];
        int64_t sh[4];
        for (int d = 0; d < x->ndim; d++) sh[d] = x->shape[d];
        if (!add(&mm, x->name, x->ndim, sh, i, &oom))
            s = qat_error_set(err, oom ? QAT_STATUS_NOMEM : QAT_STATUS_INVALID_ARG, "%s: model tensor '%s' cannot be mapped",
                              path, x->name);
    }
    for (int i = 0; i < fm.n && !s; i++)
        if (!classify(&fm.v[i]))
            s = qat_error_set(err, QAT_STATUS_FORMAT,
                              "%s: module '%.80s' is neither a convolution (4-D weight), a linear layer (2-D "
                              "weight) nor a batch norm (weight, bias, running_mean, running_var)",
                              path, fm.v[i].prefix);
    for (int i = 0; i < mm.n && !s; i++)
        if (!classify(&mm.v[i]))
            s = qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: model layer '%s' cannot be mapped", path,
                              mm.v[i].prefix);
    if (s) goto done;
    pair = malloc((size_t)(mm.n ? mm.n : 1) * sizeof *pair);
    sorted.v = malloc((size_t)(fm.n ? fm.n : 1) * sizeof *sorted.v);
    if (!pair || !sorted.v) {
        s = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
        goto done;
    }
    memcpy(sorted.v, fm.v, (size_t)fm.n * sizeof *fm.v);
    sorted.n = fm.n;
    qsort(sorted.v, (size_t)sorted.n, sizeof *sorted.v, module_cmp);
    int bad, bad2;
    const modlist *use = &fm;
    if (!pair_up(&mm, &fm, pair, &bad)) {
        use = &sorted;
        if (!pair_up(&mm, &sorted, pair, &bad)) {
            /* Third: the natural order by group, the groups where their weighted layers fit. */
            if (!grouped.v && !(grouped.v = malloc((size_t)(fm.n ? fm.n : 1) * sizeof *grouped.v))) {
                s = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
                goto done;
            }
            memcpy(grouped.v, sorted.v, (size_t)sorted.n * sizeof *sorted.v);
            grouped.n = sorted.n;
            use = &grouped;
            if (rank_groups(&mm, &grouped)) qsort(grouped.v, (size_t)grouped.n, sizeof *grouped.v, grouped_cmp);
        }
        if (use == &grouped && !pair_up(&mm, &grouped, pair, &bad2)) {
            char a[80];
            if (bad >= 0) {
                const module *md = &mm.v[bad];
                shape_str(a, sizeof a, md);
                s = qat_error_set(err, QAT_STATUS_FORMAT,
                                  "%s: does not fit the model, by name or by order and shape: no %s module of "
                                  "the file fits the model's layer %s (%s %s%s) in order (%s)",
                                  path, MOD_NAMES[md->kind], md->prefix, MOD_NAMES[md->kind], a,
                                  md->kind != MOD_NORM && md->ndim[1] < 0 ? ", no bias" : "", e1.msg);
            } else {
                const module *md = &sorted.v[-1 - bad];
                shape_str(a, sizeof a, md);
                s = qat_error_set(err, QAT_STATUS_FORMAT,
                                  "%s: does not fit the model: the file has more %s modules than the model, "
                                  "e.g. '%.80s' %s",
                                  path, MOD_NAMES[md->kind], md->prefix, a);
            }
            goto done;
        }
    }
    /* Convert everything first, then copy: the model is untouched on failure. */
    conv = calloc((size_t)m->n_layer_state, sizeof *conv);
    if (!conv) {
        s = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (int i = 0; i < mm.n && !s; i++)
        for (int fl = 0; fl < MOD_FIELDS && !s; fl++) {
            if (mm.v[i].ndim[fl] < 0) continue;
            const qat_st_tensor *t = &f.tensors[use->v[pair[i]].index[fl]];
            const qat_tensor *x = m->state[mm.v[i].index[fl]];
            float **dst = &conv[mm.v[i].index[fl]];
            if (!(*dst = malloc(qat_shape_numel(x->ndim, x->shape) * sizeof(float) + 1)))
                s = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
            else if (!qat_safetensors_fits_f32(t))
                s = qat_error_set(err, QAT_STATUS_FORMAT, "%s: tensor '%.80s' has values out of float range", path,
                                  t->name);
            else
                s = qat_safetensors_to_f32(*dst, t, err);
        }
    if (s) goto done;
    for (int i = 0; i < mm.n; i++)
        for (int fl = 0; fl < MOD_FIELDS; fl++) {
            if (mm.v[i].ndim[fl] < 0) continue;
            const qat_st_tensor *t = &f.tensors[use->v[pair[i]].index[fl]];
            qat_tensor *x = m->state[mm.v[i].index[fl]];
            memcpy(x->data, conv[mm.v[i].index[fl]], qat_shape_numel(x->ndim, x->shape) * sizeof(float));
            report->n_loaded++;
            if (log) fprintf(log, "  %-40s -> %s\n", t->name, x->name);
        }
done:
    if (conv)
        for (int i = 0; i < m->n_layer_state; i++) free(conv[i]);
    free(conv);
    free(pair);
    free(fm.v);
    free(mm.v);
    free(sorted.v);
    free(grouped.v);
    qat_safetensors_free(&f);
    return s;
}

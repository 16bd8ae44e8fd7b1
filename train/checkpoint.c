/* checkpoint.c - qat training checkpoints and weight import (checkpoint.h), on the
 * safetensors container of io/safetensors.h.
 */
#include "checkpoint.h"

#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "io/strbuf.h"

#define FMT(...) qat_error_set(err, QAT_STATUS_FORMAT, __VA_ARGS__)

/* Checkpoints written before the QAT step became the model's integer step count (issue
 * 11) kept it as a one-element F32 tensor; the "step" metadata holds the same count, so
 * the tensor is ignored on load. */
#define LEGACY_QUANT_STEP "quant.step"

/* ---- the model's tensors -------------------------------------------------------------- */

/* One model tensor a file fills: a parameter or a batch-norm buffer. */
typedef struct slot {
    char name[QAT_NAME_LEN + 32];
    float *data;
    int ndim;
    int64_t shape[QAT_MAX_DIMS];
    size_t n;
} slot;

typedef struct slot_list {
    slot *s;
    size_t n, cap;
    bool oom;
} slot_list;

static slot *slots_add(slot_list *l) {
    if (l->oom) return NULL;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 32;
        slot *s = realloc(l->s, cap * sizeof *s);
        if (!s) {
            l->oom = true;
            return NULL;
        }
        l->s = s;
        l->cap = cap;
    }
    slot *s = &l->s[l->n++];
    memset(s, 0, sizeof *s);
    return s;
}

static void slots_add_param(slot_list *l, const qat_tensor *t) {
    slot *s = slots_add(l);
    if (!s) return;
    snprintf(s->name, sizeof s->name, "%s", t->name);
    s->data = t->data;
    s->ndim = t->ndim;
    for (int d = 0; d < t->ndim; d++) s->shape[d] = t->shape[d];
    s->n = t->n;
}

/* The model's state (layers/model.h): every tensor it saves, in order. Parameters come
 * out in the model's flat order, which the optimizer state follows. */
static qat_status model_slots(slot_list *l, const qat_model *m, const char *path, qat_error *err) {
    QAT_ASSERT(m->finalized);
    memset(l, 0, sizeof *l);
    for (int i = 0; i < m->n_state; i++) slots_add_param(l, m->state[i]);
    if (l->oom) {
        free(l->s);
        memset(l, 0, sizeof *l);
        return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    }
    return QAT_STATUS_OK;
}

/* ---- matching a file against a model -------------------------------------------------- */

/* A message of bounded length that lists at most a few names per kind of problem. */
typedef struct problems {
    const char *label;
    int count;
    qat_strbuf names;
} problems;

#define PROBLEMS_SHOWN 3

static void problem_add(problems *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem_add(problems *p, const char *fmt, ...) {
    if (p->count++ >= PROBLEMS_SHOWN) return;
    char tmp[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (p->names.len) qat_strbuf_puts(&p->names, ", ");
    qat_strbuf_puts(&p->names, tmp);
}

static void problems_append(qat_strbuf *msg, const problems *p) {
    if (!p->count) return;
    qat_strbuf_printf(msg, "; %d %s (", p->count, p->label);
    qat_strbuf_puts(msg, p->names.p ? p->names.p : "");
    if (p->count > PROBLEMS_SHOWN) qat_strbuf_puts(msg, ", ...");
    qat_strbuf_puts(msg, ")");
}

static bool is_num_batches_tracked(const char *name) {
    const char *s = "num_batches_tracked";
    size_t n = strlen(name), k = strlen(s);
    return n >= k && strcmp(name + n - k, s) == 0 && (n == k || name[n - k - 1] == '.');
}

typedef struct match_opts {
    const char *prefix;     /* file name = prefix + model name */
    bool any_float;         /* F64/F16/BF16 accepted (import), else F32 only */
    bool ignore_nbt;        /* skip num_batches_tracked */
    bool ignore_optim;      /* skip optim.* (a qat checkpoint) */
    bool allow_missing, allow_unexpected;
} match_opts;

/* For every slot, the file tensor that fills it (src[i], NULL if missing); checks dtype
 * and shape; lists missing, unexpected and mismatched names in one message. */
static qat_status match_slots(const qat_st_file *f, const slot_list *sl, const match_opts *o,
                              const qat_st_tensor **src, qat_import_report *rep, qat_error *err) {
    problems missing = {"missing from the file", 0, {0}};
    problems unexpected = {"not in the model", 0, {0}};
    problems shape = {"with another shape", 0, {0}};
    problems dtype = {"with an unusable dtype", 0, {0}};
    problems range = {"with values out of float range", 0, {0}};
    bool *used = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *used);
    qat_strbuf key = {0}, msg = {0};
    qat_status st = QAT_STATUS_OK;
    if (!used) return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", f->path);
    const char *prefix = o->prefix ? o->prefix : "";
    memset(rep, 0, sizeof *rep);
    for (size_t i = 0; i < sl->n; i++) {
        const slot *s = &sl->s[i];
        key.len = 0;
        qat_strbuf_puts(&key, prefix);
        qat_strbuf_puts(&key, s->name);
        const qat_st_tensor *t = key.oom ? NULL : qat_safetensors_find(f, key.p);
        src[i] = NULL;
        if (!t) {
            if (o->allow_missing) rep->n_missing++;
            else problem_add(&missing, "%s", s->name);
            continue;
        }
        used[t - f->tensors] = true;
        bool same = t->ndim == s->ndim;
        for (int d = 0; same && d < s->ndim; d++) same = t->shape[d] == s->shape[d];
        if (!(t->dtype == QAT_ST_DTYPE_F32 || (o->any_float && qat_st_dtype_is_float(t->dtype)))) {
            problem_add(&dtype, "%s is %s", t->name, qat_st_dtype_str(t->dtype));
        } else if (!same) {
            char a[160], b[160];
            qat_st_shape_str(a, sizeof a, t->ndim, t->shape);
            qat_st_shape_str(b, sizeof b, s->ndim, s->shape);
            problem_add(&shape, "%s: file %s, model %s", s->name, a, b);
        } else if (!qat_safetensors_fits_f32(t)) {
            problem_add(&range, "%s", t->name);
        } else {
            src[i] = t;
            rep->n_loaded++;
        }
    }
    for (size_t j = 0; j < f->n_tensors; j++) {
        const char *nm = f->tensors[j].name;
        if (used[j]) continue;
        if ((o->ignore_nbt && is_num_batches_tracked(nm)) ||
            (o->ignore_optim && (strncmp(nm, "optim.", 6) == 0 || strcmp(nm, LEGACY_QUANT_STEP) == 0))) {
            rep->n_ignored++;
        } else if (o->allow_unexpected) {
            rep->n_unexpected++;
        } else {
            problem_add(&unexpected, "%s", nm);
        }
    }
    if (missing.count || unexpected.count || shape.count || dtype.count || range.count) {
        /* The usual cause of "everything missing, everything unexpected": the file's
         * names carry a prefix ("model.0.weight"). Name it, before the lists. */
        const char *first_missing = NULL;
        for (size_t i = 0; i < sl->n && !first_missing; i++)
            if (!src[i] && !o->allow_missing) first_missing = sl->s[i].name;
        for (size_t j = 0; first_missing && j < f->n_tensors; j++) {
            const char *nm = f->tensors[j].name;
            size_t a = strlen(nm), b = strlen(first_missing);
            if (!used[j] && a > b && strcmp(nm + a - b, first_missing) == 0 &&
                nm[a - b - 1] == '.') {
                qat_strbuf_printf(&msg, "; its names look prefixed with \"%.*s\" (see strip_prefix)",
                          (int)QAT_MIN(a - b, 60), nm);
                break;
            }
        }
        problems_append(&msg, &missing);
        problems_append(&msg, &unexpected);
        problems_append(&msg, &shape);
        problems_append(&msg, &dtype);
        problems_append(&msg, &range);
        st = msg.oom ? qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", f->path)
                     : FMT("%s: does not fit the model: %s", f->path, msg.p + 2);
    } else if (key.oom) {
        st = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", f->path);
    }
    free(used);
    free(key.p);
    free(msg.p);
    free(missing.names.p);
    free(unexpected.names.p);
    free(shape.names.p);
    free(dtype.names.p);
    free(range.names.p);
    return st;
}

/* ---- checkpoints: save ---------------------------------------------------------------- */

static const char *const reserved_keys[] = {"format", "format_version", "model",   "epoch",
                                            "step",   "rng_state",      "rng_inc", "optim",
                                            "optim_step"};
#define N_RESERVED (sizeof reserved_keys / sizeof *reserved_keys)

bool qat_checkpoint_key_reserved(const char *key) {
    for (size_t i = 0; i < N_RESERVED; i++)
        if (strcmp(key, reserved_keys[i]) == 0) return true;
    return false;
}

/* The optimizer fields each kind uses, as stored in the "optim" JSON. */
typedef struct optim_field {
    const char *name;
    size_t offset; /* of a double in qat_optim_config */
} optim_field;

static const optim_field sgd_fields[] = {
    {"lr", offsetof(qat_optim_config, lr)},
    {"momentum", offsetof(qat_optim_config, momentum)},
    {"dampening", offsetof(qat_optim_config, dampening)},
    {"weight_decay", offsetof(qat_optim_config, weight_decay)},
    {NULL, 0},
};
static const optim_field adam_fields[] = {
    {"lr", offsetof(qat_optim_config, lr)},
    {"beta1", offsetof(qat_optim_config, beta1)},
    {"beta2", offsetof(qat_optim_config, beta2)},
    {"eps", offsetof(qat_optim_config, eps)},
    {"weight_decay", offsetof(qat_optim_config, weight_decay)},
    {NULL, 0},
};

static const optim_field *fields_of(qat_optim_kind k) {
    return k == QAT_OPTIM_SGD ? sgd_fields : adam_fields;
}

/* {"kind":"SGD","lr":0.1,...,"nesterov":false}: cJSON prints doubles with up to 17
 * significant digits, enough to read back the same double. */
static char *optim_json(const qat_optim_config *cfg) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    bool ok = cJSON_AddStringToObject(o, "kind", qat_optim_kind_str(cfg->kind)) != NULL;
    for (const optim_field *fl = fields_of(cfg->kind); ok && fl->name; fl++)
        ok = cJSON_AddNumberToObject(o, fl->name,
                                     *(const double *)((const char *)cfg + fl->offset)) != NULL;
    if (ok && cfg->kind == QAT_OPTIM_SGD)
        ok = cJSON_AddBoolToObject(o, "nesterov", cfg->nesterov) != NULL;
    char *s = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}

/* The optimizer state tensors in file order, with their views. */
static int optim_buffers(const qat_optim *o, const char **names, float **views) {
    int k = 0;
    if (o->momentum_buffer) names[k] = "optim.momentum_buffer", views[k++] = o->momentum_buffer;
    if (o->exp_avg) names[k] = "optim.exp_avg", views[k++] = o->exp_avg;
    if (o->exp_avg_sq) names[k] = "optim.exp_avg_sq", views[k++] = o->exp_avg_sq;
    return k;
}

qat_status qat_checkpoint_save(const char *path, const qat_model *m, const qat_optim *opt,
                               const qat_checkpoint_meta *meta, qat_error *err) {
    QAT_ASSERT(path != NULL && m != NULL && meta != NULL);
    QAT_ASSERT(meta->extra != NULL || meta->n_extra == 0);
    if (!m->finalized)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: the model is not finalized", path);
    if (meta->epoch < 0 || meta->step < 0)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: epoch %ld and step %ld must be >= 0",
                             path, meta->epoch, meta->step);
    if (!(meta->rng.inc & 1))
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "%s: meta->rng is not initialised (its inc must be odd; "
                             "use qat_rng_init)",
                             path);
    for (size_t i = 0; i < meta->n_extra; i++) {
        QAT_ASSERT(meta->extra[i].key != NULL && meta->extra[i].value != NULL);
        if (qat_checkpoint_key_reserved(meta->extra[i].key))
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "%s: extra metadata key '%s' is reserved for the checkpoint "
                                 "itself; choose another name",
                                 path, meta->extra[i].key);
    }
    if (opt) {
        qat_error e2 = {0};
        if (opt->n != m->n_params || opt->step < 0 || qat_optim_config_check(&opt->cfg, &e2))
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "%s: the optimizer (n %zu, step %ld) does not fit the model "
                                 "(%zu parameters)%s%s",
                                 path, opt->n, opt->step, m->n_params, e2.status ? ": " : "",
                                 e2.msg);
    }

    slot_list sl;
    qat_status st = model_slots(&sl, m, path, err);
    if (st) return st;
    size_t nt = sl.n + 3, nm = N_RESERVED + meta->n_extra;
    qat_st_tensor *ts = calloc(nt, sizeof *ts);
    qat_st_kv *kv = calloc(nm, sizeof *kv);
    char *ojson = NULL;
    if (!ts || !kv) {
        st = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
        goto done;
    }
    size_t k = 0;
    for (size_t i = 0; i < sl.n; i++, k++) {
        ts[k] = (qat_st_tensor){.name = sl.s[i].name, .dtype = QAT_ST_DTYPE_F32,
                                .ndim = sl.s[i].ndim, .data = sl.s[i].data};
        memcpy(ts[k].shape, sl.s[i].shape, sizeof sl.s[i].shape);
    }
    char epoch[32], step[32], rs[32], ri[32], ostep[32];
    snprintf(epoch, sizeof epoch, "%ld", meta->epoch);
    snprintf(step, sizeof step, "%ld", meta->step);
    snprintf(rs, sizeof rs, "%" PRIu64, meta->rng.state);
    snprintf(ri, sizeof ri, "%" PRIu64, meta->rng.inc);
    size_t j = 0;
    kv[j++] = (qat_st_kv){"format", QAT_CHECKPOINT_FORMAT};
    kv[j++] = (qat_st_kv){"format_version", "1"};
    kv[j++] = (qat_st_kv){"model", meta->model ? meta->model : ""};
    kv[j++] = (qat_st_kv){"epoch", epoch};
    kv[j++] = (qat_st_kv){"step", step};
    kv[j++] = (qat_st_kv){"rng_state", rs};
    kv[j++] = (qat_st_kv){"rng_inc", ri};
    if (opt) {
        const char *bn[3];
        float *bv[3];
        int nb = optim_buffers(opt, bn, bv);
        for (int b = 0; b < nb; b++, k++)
            ts[k] = (qat_st_tensor){.name = bn[b], .dtype = QAT_ST_DTYPE_F32, .ndim = 1,
                                    .shape = {(int64_t)opt->n}, .data = bv[b]};
        ojson = optim_json(&opt->cfg);
        if (!ojson) {
            st = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
            goto done;
        }
        snprintf(ostep, sizeof ostep, "%ld", opt->step);
        kv[j++] = (qat_st_kv){"optim", ojson};
        kv[j++] = (qat_st_kv){"optim_step", ostep};
    }
    for (size_t i = 0; i < meta->n_extra; i++) kv[j++] = meta->extra[i];
    st = qat_safetensors_write(path, ts, k, kv, j, err);
done:
    free(sl.s);
    free(ts);
    free(kv);
    cJSON_free(ojson);
    return st;
}

/* ---- checkpoints: load ---------------------------------------------------------------- */

/* A decimal integer, digits only (no sign, space or exponent), that fits. */
static bool parse_u64(const char *s, uint64_t *v) {
    if (!*s || strlen(s) > 20) return false;
    uint64_t x = 0;
    for (; *s; s++) {
        if (!isdigit((unsigned char)*s)) return false;
        unsigned dgt = (unsigned)(*s - '0');
        if (x > (UINT64_MAX - dgt) / 10) return false;
        x = x * 10 + dgt;
    }
    *v = x;
    return true;
}

static bool parse_long(const char *s, long *v) {
    uint64_t x;
    if (!parse_u64(s, &x) || x > (uint64_t)LONG_MAX) return false;
    *v = (long)x;
    return true;
}

static qat_status need_meta(const qat_st_file *f, const char *key, const char **v, qat_error *err) {
    *v = qat_safetensors_meta(f, key);
    if (!*v) return FMT("%s: qat checkpoint metadata lacks \"%s\"", f->path, key);
    return QAT_STATUS_OK;
}

static qat_status parse_optim(const char *json, qat_optim_config *cfg, const char *path,
                              qat_error *err) {
    cJSON *root = cJSON_Parse(json);
    qat_status st = QAT_STATUS_OK;
    if (!cJSON_IsObject(root)) {
        st = FMT("%s: metadata \"optim\" is not a JSON object", path);
        goto done;
    }
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(root, "kind");
    const char *ks = cJSON_IsString(kind) ? kind->valuestring : "";
    qat_optim_kind k;
    if (strcmp(ks, "SGD") == 0) k = QAT_OPTIM_SGD;
    else if (strcmp(ks, "Adam") == 0) k = QAT_OPTIM_ADAM;
    else if (strcmp(ks, "AdamW") == 0) k = QAT_OPTIM_ADAMW;
    else {
        st = FMT("%s: optim: \"kind\" is not SGD, Adam or AdamW", path);
        goto done;
    }
    *cfg = qat_optim_config_default(k);
    const optim_field *fields = fields_of(k);
    bool seen[8] = {false}, seen_kind = false, seen_nesterov = false;
    const cJSON *c;
    cJSON_ArrayForEach(c, root) {
        bool *flag = NULL;
        int fi = -1;
        for (int i = 0; fields[i].name; i++)
            if (strcmp(c->string, fields[i].name) == 0) fi = i, flag = &seen[i];
        if (strcmp(c->string, "kind") == 0) flag = &seen_kind;
        if (k == QAT_OPTIM_SGD && strcmp(c->string, "nesterov") == 0) flag = &seen_nesterov;
        if (!flag) {
            st = FMT("%s: optim: unknown field \"%.60s\" for %s", path, c->string, ks);
            goto done;
        }
        if (*flag) {
            st = FMT("%s: optim: field \"%.60s\" given twice", path, c->string);
            goto done;
        }
        *flag = true;
        if (fi >= 0) {
            if (!cJSON_IsNumber(c)) {
                st = FMT("%s: optim: \"%s\" is %s, not a number", path, c->string, qat_st_json_kind(c));
                goto done;
            }
            *(double *)((char *)cfg + fields[fi].offset) = c->valuedouble;
        } else if (flag == &seen_nesterov) {
            if (!cJSON_IsBool(c)) {
                st = FMT("%s: optim: \"nesterov\" is %s, not a boolean", path, qat_st_json_kind(c));
                goto done;
            }
            cfg->nesterov = cJSON_IsTrue(c);
        }
    }
    for (int i = 0; fields[i].name; i++)
        if (!seen[i]) {
            st = FMT("%s: optim: missing \"%s\"", path, fields[i].name);
            goto done;
        }
    if (k == QAT_OPTIM_SGD && !seen_nesterov) {
        st = FMT("%s: optim: missing \"nesterov\"", path);
        goto done;
    }
    qat_error e2 = {0};
    if (qat_optim_config_check(cfg, &e2)) st = FMT("%s: optim: %s", path, e2.msg);
done:
    cJSON_Delete(root);
    return st;
}

/* The optimizer tensors a config has, as qat_optim_init lays them out. */
static int optim_buffer_names(const qat_optim_config *cfg, const char **names) {
    if (cfg->kind == QAT_OPTIM_SGD) {
        if (cfg->momentum == 0) return 0;
        names[0] = "optim.momentum_buffer";
        return 1;
    }
    names[0] = "optim.exp_avg";
    names[1] = "optim.exp_avg_sq";
    return 2;
}

static qat_status check_checkpoint(qat_checkpoint *c, qat_error *err) {
    const qat_st_file *f = &c->file;
    const char *path = f->path, *v;
    const char *fmt = qat_safetensors_meta(f, "format");
    if (!fmt || strcmp(fmt, QAT_CHECKPOINT_FORMAT) != 0)
        return FMT("%s: not a qat checkpoint (__metadata__ \"format\" is not \"%s\"); to load "
                   "weights from another program's safetensors file, use "
                   "qat_checkpoint_import",
                   path, QAT_CHECKPOINT_FORMAT);
    qat_status st = need_meta(f, "format_version", &v, err);
    if (st) return st;
    if (strcmp(v, "1") != 0)
        return FMT("%s: checkpoint format_version \"%.20s\"; this build reads version %d", path, v,
                   QAT_CHECKPOINT_VERSION);
    if ((st = need_meta(f, "model", &c->model, err))) return st;
    static const char *const nums[] = {"epoch", "step", "rng_state", "rng_inc"};
    uint64_t u[4];
    for (int i = 0; i < 4; i++) {
        if ((st = need_meta(f, nums[i], &v, err))) return st;
        bool ok = parse_u64(v, &u[i]) && (i >= 2 || u[i] <= (uint64_t)LONG_MAX);
        if (!ok)
            return FMT("%s: metadata \"%s\" is \"%.30s\", not a decimal integer in [0, %s]",
                       path, nums[i], v, i < 2 ? "LONG_MAX" : "2^64 - 1");
    }
    c->epoch = (long)u[0];
    c->step = (long)u[1];
    c->rng.state = u[2];
    c->rng.inc = u[3];
    if (!(c->rng.inc & 1)) return FMT("%s: metadata \"rng_inc\" must be odd", path);

    const char *oj = qat_safetensors_meta(f, "optim"), *os = qat_safetensors_meta(f, "optim_step");
    if (!oj != !os) return FMT("%s: metadata has one of \"optim\" and \"optim_step\" only", path);
    const char *want[3];
    int n_want = 0;
    if (oj) {
        c->has_optim = true;
        if ((st = parse_optim(oj, &c->optim_cfg, path, err))) return st;
        if (!parse_long(os, &c->optim_step))
            return FMT("%s: metadata \"optim_step\" is \"%.30s\", not a decimal integer >= 0", path,
                       os);
        n_want = optim_buffer_names(&c->optim_cfg, want);
    }
    int64_t len = -1;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const qat_st_tensor *t = &f->tensors[i];
        if (t->dtype != QAT_ST_DTYPE_F32)
            return FMT("%s: tensor '%.100s' is %s; a qat checkpoint holds F32 tensors only", path,
                       t->name, qat_st_dtype_str(t->dtype));
        if (strncmp(t->name, "optim.", 6) != 0) continue;
        bool known = false;
        for (int w = 0; w < n_want; w++) known |= strcmp(t->name, want[w]) == 0;
        if (!known)
            return FMT("%s: tensor '%.100s' does not belong to the saved optimizer (%s)", path,
                       t->name, oj ? "its state is different" : "none saved");
        if (t->ndim != 1 || (len >= 0 && t->shape[0] != len))
            return FMT("%s: optimizer tensor '%s' is not 1-D or not as long as the others", path,
                       t->name);
        len = t->shape[0];
    }
    for (int w = 0; w < n_want; w++)
        if (!qat_safetensors_find(f, want[w]))
            return FMT("%s: the saved %s optimizer lacks tensor '%s'", path,
                       qat_optim_kind_str(c->optim_cfg.kind), want[w]);

    size_t ne = 0;
    for (size_t i = 0; i < f->n_meta; i++) ne += !qat_checkpoint_key_reserved(f->meta[i].key);
    c->extra = calloc(ne ? ne : 1, sizeof *c->extra);
    if (!c->extra) return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < f->n_meta; i++)
        if (!qat_checkpoint_key_reserved(f->meta[i].key)) c->extra[c->n_extra++] = f->meta[i];
    return QAT_STATUS_OK;
}

qat_status qat_checkpoint_load(qat_checkpoint *c, const char *path, qat_error *err) {
    QAT_ASSERT(c != NULL && path != NULL);
    memset(c, 0, sizeof *c);
    qat_status st = qat_safetensors_read(&c->file, path, err);
    if (!st) st = check_checkpoint(c, err);
    if (st) qat_checkpoint_free(c);
    return st;
}

void qat_checkpoint_free(qat_checkpoint *c) {
    if (!c) return;
    qat_safetensors_free(&c->file);
    free(c->extra);
    memset(c, 0, sizeof *c);
}

const char *qat_checkpoint_extra(const qat_checkpoint *c, const char *key) {
    for (size_t i = 0; i < c->n_extra; i++)
        if (strcmp(c->extra[i].key, key) == 0) return c->extra[i].value;
    return NULL;
}

/* ---- checkpoints: restore, import ----------------------------------------------------- */

qat_status qat_checkpoint_restore(const qat_checkpoint *c, qat_model *m, qat_optim *opt,
                                  qat_error *err) {
    QAT_ASSERT(c != NULL && m != NULL && c->file.path != NULL);
    const char *path = c->file.path;
    if (!m->finalized)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: the model is not finalized", path);
    slot_list sl;
    qat_status st = model_slots(&sl, m, path, err);
    if (st) return st;
    const qat_st_tensor **src = calloc(sl.n ? sl.n : 1, sizeof *src);
    if (!src) {
        free(sl.s);
        return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    }
    match_opts mo = {.ignore_optim = true};
    qat_import_report rep;
    st = match_slots(&c->file, &sl, &mo, src, &rep, err);

    /* The optimizer: same kind, same size, the same state buffers. */
    const char *bn[3];
    float *bv[3];
    int nb = 0;
    if (!st && opt) {
        nb = optim_buffers(opt, bn, bv);
        if (!c->has_optim) {
            st = FMT("%s: holds no optimizer state; pass NULL as the optimizer or start it fresh",
                     path);
        } else if (opt->cfg.kind != c->optim_cfg.kind) {
            st = FMT("%s: the saved optimizer is %s, the one given is %s", path,
                     qat_optim_kind_str(c->optim_cfg.kind), qat_optim_kind_str(opt->cfg.kind));
        } else if (opt->n != m->n_params) {
            st = qat_error_set(err, QAT_STATUS_INVALID_ARG,
                               "%s: the optimizer has %zu parameters, the model %zu", path, opt->n,
                               m->n_params);
        } else {
            const char *want[3];
            int n_want = optim_buffer_names(&c->optim_cfg, want);
            if (n_want != nb)
                st = FMT("%s: the saved optimizer has %d state buffers, the one given %d "
                         "(momentum 0 versus non-zero?)",
                         path, n_want, nb);
            for (int b = 0; !st && b < nb; b++) {
                const qat_st_tensor *t = qat_safetensors_find(&c->file, bn[b]);
                if (!t)
                    st = FMT("%s: lacks optimizer tensor '%s'", path, bn[b]);
                else if ((size_t)t->shape[0] != opt->n)
                    st = FMT("%s: optimizer tensor '%s' has %" PRId64 " elements, the model %zu "
                             "parameters",
                             path, bn[b], t->shape[0], opt->n);
            }
        }
    }
    if (!st) {
        for (size_t i = 0; i < sl.n; i++) memcpy(sl.s[i].data, src[i]->data, sl.s[i].n * 4);
        for (int b = 0; b < nb; b++)
            memcpy(bv[b], qat_safetensors_find(&c->file, bn[b])->data, opt->n * sizeof(float));
        if (opt) opt->step = c->optim_step;
        m->step = c->step;
    }
    free(src);
    free(sl.s);
    return st;
}

qat_status qat_checkpoint_import(qat_model *m, const char *path, const qat_import_options *opts,
                                 qat_import_report *report, qat_error *err) {
    QAT_ASSERT(m != NULL && path != NULL);
    if (!m->finalized)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: the model is not finalized", path);
    qat_import_options none = {0};
    if (!opts) opts = &none;
    qat_st_file f;
    qat_status st = qat_safetensors_read(&f, path, err);
    if (st) return st;
    slot_list sl;
    if ((st = model_slots(&sl, m, path, err))) {
        qat_safetensors_free(&f);
        return st;
    }
    const qat_st_tensor **src = calloc(sl.n ? sl.n : 1, sizeof *src);
    qat_import_report rep;
    if (!src) {
        st = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    } else {
        const char *fmt = qat_safetensors_meta(&f, "format");
        match_opts mo = {.prefix = opts->strip_prefix,
                         .any_float = true,
                         .ignore_nbt = true,
                         .ignore_optim = fmt && strcmp(fmt, QAT_CHECKPOINT_FORMAT) == 0,
                         .allow_missing = opts->allow_missing,
                         .allow_unexpected = opts->allow_unexpected};
        st = match_slots(&f, &sl, &mo, src, &rep, err);
    }
    /* match_slots checked dtypes and ranges, so the conversions cannot fail. */
    for (size_t i = 0; !st && i < sl.n; i++)
        if (src[i]) {
            qat_status cs = qat_safetensors_to_f32(sl.s[i].data, src[i], err);
            QAT_ASSERT(cs == QAT_STATUS_OK);
        }
    if (!st && report) *report = rep;
    free(src);
    free(sl.s);
    qat_safetensors_free(&f);
    return st;
}

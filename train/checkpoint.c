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
#include "train/qlora.h"

#define FMT(...) qat_error_set(err, QAT_STATUS_FORMAT, __VA_ARGS__)

/* Checkpoints written before the QAT step became the model's integer step count (issue
 * 11) kept it as a one-element F32 tensor; the "step" metadata holds the same count, so
 * the tensor is ignored on load. */
#define LEGACY_QUANT_STEP "quant.step"

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

/* Whether every state tensor that found no file tensor (src[i] NULL) is in the file,
 * unused, under the name pfx[0, len) + its name. */
static bool prefix_explains(const qat_model *m, const qat_st_tensor **src, const qat_st_file *f, const bool *used,
                            const char *pfx, size_t len) {
    for (int i = 0; i < m->n_state; i++) {
        if (src[i]) continue;
        const char *s = m->state[i]->name;
        bool found = false;
        for (size_t j = 0; j < f->n_tensors && !found; j++) {
            const char *nm = f->tensors[j].name;
            found = !used[j] && strncmp(nm, pfx, len) == 0 && strcmp(nm + len, s) == 0;
        }
        if (!found) return false;
    }
    return true;
}

/* For every tensor of the model's state, the file tensor that fills it (src[i], NULL if
 * missing); checks dtype and shape; lists missing, unexpected and mismatched names in one
 * message. */
static qat_status match_state(const qat_st_file *f, const qat_model *m, const match_opts *o,
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
    const qat_lora_base *base = qat_lora_base_of(m);
    for (int i = 0; i < m->n_state; i++) {
        const qat_tensor *s = m->state[i];
        /* A frozen LoRA base weight held in 4 bits: its four tensors (train/qlora.h). */
        const int bi = qat_lora_base_find(base, s);
        if (bi >= 0) {
            qat_error e = {0};
            src[i] = NULL;
            if (qat_lora_base_read((qat_lora_base *)base, bi, f, false, used, &e)) problem_add(&dtype, "%s", e.msg);
            else rep->n_loaded++;
            continue;
        }
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
            qat_tensor_shape_str(s, b, sizeof b);
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
         * names carry a prefix ("model.0.weight"). Name it, before the lists, but only
         * when the prefix explains every missing name: in a checkpoint of another model
         * one name can end like a missing one by chance ("4.body.0.weight"). */
        const char *first_missing = NULL;
        for (int i = 0; i < m->n_state && !first_missing; i++)
            if (!src[i] && !o->allow_missing) first_missing = m->state[i]->name;
        for (size_t j = 0; first_missing && j < f->n_tensors; j++) {
            const char *nm = f->tensors[j].name;
            size_t a = strlen(nm), b = strlen(first_missing);
            if (!used[j] && a > b && strcmp(nm + a - b, first_missing) == 0 && nm[a - b - 1] == '.' &&
                prefix_explains(m, src, f, used, nm, a - b)) {
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

/* The optimizer's state tensors are stored as "optim.<name>". */
#define OPTIM_PREFIX "optim."

/* {"kind":"SGD","lr":0.1,...,"nesterov":false}: the kind's name, then its config fields in
 * the order of its field table (optim.h). cJSON prints doubles with up to 17 significant
 * digits, enough to read back the same double. */
static char *optim_json(const qat_optim_config *cfg) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    bool ok = cJSON_AddStringToObject(o, "kind", qat_optim_kind_str(cfg->kind)) != NULL;
    int nf;
    const qat_optim_field *fields = qat_optim_fields(cfg->kind, &nf);
    for (int i = 0; ok && i < nf; i++) {
        double v = qat_optim_field_get(cfg, &fields[i]);
        switch (fields[i].type) {
        case QAT_OPTIM_VALUE_NUMBER: ok = cJSON_AddNumberToObject(o, fields[i].name, v) != NULL; break;
        case QAT_OPTIM_VALUE_BOOL: ok = cJSON_AddBoolToObject(o, fields[i].name, v != 0) != NULL; break;
        case QAT_OPTIM_VALUE_COUNT: ok = false; break;
        }
    }
    char *s = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
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
        if (opt->n != qat_model_n_trainable(m) || opt->step < 0 || qat_optim_config_check(&opt->cfg, &e2))
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "%s: the optimizer (n %zu, step %ld) does not fit the model "
                                 "(%zu trainable parameters)%s%s",
                                 path, opt->n, opt->step, qat_model_n_trainable(m), e2.status ? ": " : "",
                                 e2.msg);
    }

    /* The model's state, then the optimizer's: two loops over self-describing lists. */
    const int n_opt = opt ? opt->n_tensors : 0;
    const qat_lora_base *base = qat_lora_base_of(m);
    const int n_base = base ? base->n : 0; /* each weight as 4 tensors (train/qlora.h) */
    size_t nt = (size_t)m->n_state + (size_t)n_opt + 3 * (size_t)n_base, nm = N_RESERVED + meta->n_extra;
    qat_st_tensor *ts = calloc(nt ? nt : 1, sizeof *ts);
    char (*bnames)[4][QAT_NAME_LEN + 32] = calloc(n_base ? (size_t)n_base : 1, sizeof *bnames);
    qat_st_kv *kv = calloc(nm, sizeof *kv);
    char (*onames)[64] = calloc(n_opt ? (size_t)n_opt : 1, sizeof *onames);
    char *ojson = NULL;
    qat_status st = QAT_STATUS_OK;
    if (!ts || !kv || !onames || !bnames) {
        st = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
        goto done;
    }
    size_t k = 0;
    for (int i = 0; i < m->n_state; i++, k++) {
        const qat_tensor *x = m->state[i];
        const int bi = qat_lora_base_find(base, x);
        if (bi >= 0) {
            qat_lora_base_tensors(base, bi, &ts[k], bnames[bi]);
            k += 3;
            continue;
        }
        ts[k] = (qat_st_tensor){.name = x->name, .dtype = QAT_ST_DTYPE_F32, .ndim = x->ndim,
                                .data = x->data};
        for (int d = 0; d < x->ndim; d++) ts[k].shape[d] = x->shape[d];
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
        for (int b = 0; b < n_opt; b++, k++) {
            const qat_optim_state_tensor *x = &opt->tensors[b];
            snprintf(onames[b], sizeof onames[b], OPTIM_PREFIX "%s", x->name);
            ts[k] = (qat_st_tensor){.name = onames[b], .dtype = x->dtype, .ndim = 1,
                                    .shape = {(int64_t)x->numel}, .data = x->data};
        }
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
    free(ts);
    free(kv);
    free(onames);
    free(bnames);
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

/* The "optim" metadata: {"kind": K, one member per field of K's table} (optim.h). */
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
    if (!qat_optim_kind_parse(ks, &k)) {
        char names[128];
        qat_optim_kind_names(names, sizeof names);
        st = FMT("%s: optim: \"kind\" is not %s", path, names);
        goto done;
    }
    *cfg = qat_optim_config_default(k);
    int nf;
    const qat_optim_field *fields = qat_optim_fields(k, &nf);
    bool seen[QAT_OPTIM_MAX_FIELDS] = {false}, seen_kind = false;
    QAT_ASSERT(nf <= QAT_OPTIM_MAX_FIELDS);
    const cJSON *c;
    cJSON_ArrayForEach(c, root) {
        const qat_optim_field *fl = qat_optim_field_find(k, c->string);
        bool *flag = fl ? &seen[fl - fields] : strcmp(c->string, "kind") == 0 ? &seen_kind : NULL;
        if (!flag) {
            st = FMT("%s: optim: unknown field \"%.60s\" for %s", path, c->string, ks);
            goto done;
        }
        if (*flag) {
            st = FMT("%s: optim: field \"%.60s\" given twice", path, c->string);
            goto done;
        }
        *flag = true;
        if (!fl) continue;
        bool typed = false;
        switch (fl->type) {
        case QAT_OPTIM_VALUE_NUMBER: typed = cJSON_IsNumber(c); break;
        case QAT_OPTIM_VALUE_BOOL: typed = cJSON_IsBool(c); break;
        case QAT_OPTIM_VALUE_COUNT: break;
        }
        if (!typed) {
            st = FMT("%s: optim: \"%s\" is %s, not a %s", path, c->string, qat_st_json_kind(c),
                     fl->type == QAT_OPTIM_VALUE_BOOL ? "boolean" : "number");
            goto done;
        }
        qat_optim_field_set(cfg, fl, cJSON_IsBool(c) ? (cJSON_IsTrue(c) ? 1.0 : 0.0) : c->valuedouble);
    }
    for (int i = 0; i < nf; i++)
        if (!seen[i]) {
            st = FMT("%s: optim: missing \"%s\"", path, fields[i].name);
            goto done;
        }
    qat_error e2 = {0};
    if (qat_optim_config_check(cfg, &e2)) st = FMT("%s: optim: %s", path, e2.msg);
done:
    cJSON_Delete(root);
    return st;
}

/* The file's optimizer tensors against the saved config's layout (optim.h): the same
 * names and dtypes, 1-D. Their lengths depend on the model, which restore checks. */
static qat_status check_optim_tensors(const qat_checkpoint *c, qat_error *err) {
    const qat_st_file *f = &c->file;
    qat_optim_state_tensor want[QAT_OPTIM_MAX_STATE];
    int n_want = c->has_optim ? qat_optim_state_layout(&c->optim_cfg, 1, want) : 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const qat_st_tensor *t = &f->tensors[i];
        if (strncmp(t->name, OPTIM_PREFIX, strlen(OPTIM_PREFIX)) != 0) {
            const size_t ln = strlen(t->name);
            const bool four_bit = (ln > 3 && strcmp(t->name + ln - 3, ".q4") == 0) ||
                                  (ln > 10 && strcmp(t->name + ln - 10, ".q4_absmax") == 0);
            if (t->dtype != QAT_ST_DTYPE_F32 && !(four_bit && t->dtype == QAT_ST_DTYPE_U8))
                return FMT("%s: tensor '%.100s' is %s; a qat checkpoint holds the model's state as "
                           "F32 tensors (U8 for the codes of a 4-bit LoRA base)",
                           f->path, t->name, qat_st_dtype_str(t->dtype));
            continue;
        }
        const char *nm = t->name + strlen(OPTIM_PREFIX);
        int w = 0;
        while (w < n_want && strcmp(nm, want[w].name) != 0) w++;
        if (w == n_want)
            return FMT("%s: tensor '%.100s' does not belong to the saved optimizer (%s)", f->path,
                       t->name, c->has_optim ? "its state is different" : "none saved");
        if (t->dtype != want[w].dtype || t->ndim != 1)
            return FMT("%s: optimizer tensor '%s' is %s with %d dims; the saved %s keeps it as 1-D %s",
                       f->path, t->name, qat_st_dtype_str(t->dtype), t->ndim,
                       qat_optim_kind_str(c->optim_cfg.kind), qat_st_dtype_str(want[w].dtype));
    }
    for (int w = 0; w < n_want; w++) {
        char name[64];
        snprintf(name, sizeof name, OPTIM_PREFIX "%s", want[w].name);
        if (!qat_safetensors_find(f, name))
            return FMT("%s: the saved %s optimizer lacks tensor '%s'", f->path,
                       qat_optim_kind_str(c->optim_cfg.kind), name);
    }
    return QAT_STATUS_OK;
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
    if (oj) {
        c->has_optim = true;
        if ((st = parse_optim(oj, &c->optim_cfg, path, err))) return st;
        if (!parse_long(os, &c->optim_step))
            return FMT("%s: metadata \"optim_step\" is \"%.30s\", not a decimal integer >= 0", path,
                       os);
    }
    if ((st = check_optim_tensors(c, err))) return st;

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

/* For each of the optimizer's state tensors, the file tensor that fills it: the same kind
 * of optimizer, sized for the model, with the same tensors (name, dtype, length). */
static qat_status match_optim(const qat_checkpoint *c, const qat_model *m, const qat_optim *opt,
                              const qat_st_tensor **src, qat_error *err) {
    const char *path = c->file.path;
    if (!c->has_optim)
        return FMT("%s: holds no optimizer state; pass NULL as the optimizer or start it fresh", path);
    if (opt->cfg.kind != c->optim_cfg.kind)
        return FMT("%s: the saved optimizer is %s, the one given is %s", path,
                   qat_optim_kind_str(c->optim_cfg.kind), qat_optim_kind_str(opt->cfg.kind));
    if (opt->n != qat_model_n_trainable(m))
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "%s: the optimizer has %zu parameters, the model trains %zu", path, opt->n,
                             qat_model_n_trainable(m));
    qat_optim_state_tensor want[QAT_OPTIM_MAX_STATE];
    int n_want = qat_optim_state_layout(&c->optim_cfg, opt->n, want);
    if (n_want != opt->n_tensors)
        return FMT("%s: the saved optimizer has %d state tensors, the one given %d (momentum 0 "
                   "versus non-zero?)",
                   path, n_want, opt->n_tensors);
    for (int b = 0; b < opt->n_tensors; b++) {
        const qat_optim_state_tensor *x = &opt->tensors[b];
        char name[64];
        snprintf(name, sizeof name, OPTIM_PREFIX "%s", x->name);
        const qat_st_tensor *t = qat_safetensors_find(&c->file, name);
        if (!t) return FMT("%s: lacks optimizer tensor '%s'", path, name);
        if (t->dtype != x->dtype || t->ndim != 1 || t->numel != x->numel)
            return FMT("%s: optimizer tensor '%s' holds %zu %s elements; the optimizer of this model "
                       "keeps %zu %s",
                       path, name, t->numel, qat_st_dtype_str(t->dtype), x->numel,
                       qat_st_dtype_str(x->dtype));
        src[b] = t;
    }
    return QAT_STATUS_OK;
}

qat_status qat_checkpoint_restore(const qat_checkpoint *c, qat_model *m, qat_optim *opt,
                                  qat_error *err) {
    QAT_ASSERT(c != NULL && m != NULL && c->file.path != NULL);
    const char *path = c->file.path;
    if (!m->finalized)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: the model is not finalized", path);
    const qat_st_tensor **src = calloc(m->n_state ? (size_t)m->n_state : 1, sizeof *src);
    const qat_st_tensor *osrc[QAT_OPTIM_MAX_STATE];
    if (!src) return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    match_opts mo = {.ignore_optim = true};
    qat_import_report rep;
    qat_status st = match_state(&c->file, m, &mo, src, &rep, err);
    if (!st && opt) st = match_optim(c, m, opt, osrc, err);
    /* Everything was checked: copy. */
    if (!st) {
        qat_lora_base *base = (qat_lora_base *)qat_lora_base_of(m);
        for (int i = 0; i < m->n_state && !st; i++) {
            const int bi = qat_lora_base_find(base, m->state[i]);
            if (bi >= 0) st = qat_lora_base_read(base, bi, &c->file, true, NULL, err);
            else memcpy(m->state[i]->data, src[i]->data, src[i]->nbytes);
        }
        for (int b = 0; opt && b < opt->n_tensors; b++)
            memcpy(opt->tensors[b].data, osrc[b]->data, osrc[b]->nbytes);
        if (opt) opt->step = c->optim_step;
        m->step = c->step;
    }
    free(src);
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
    const qat_st_tensor **src = calloc(m->n_state ? (size_t)m->n_state : 1, sizeof *src);
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
        st = match_state(&f, m, &mo, src, &rep, err);
    }
    /* match_state checked dtypes and ranges, so the conversions cannot fail. */
    for (int i = 0; !st && i < m->n_state; i++)
        if (src[i]) {
            qat_status cs = qat_safetensors_to_f32(m->state[i]->data, src[i], err);
            QAT_ASSERT(cs == QAT_STATUS_OK);
        }
    if (!st && report) *report = rep;
    free(src);
    qat_safetensors_free(&f);
    return st;
}

/* safetensors.c - the container of the model file (docs/int8-format.md "Container",
 * docs/checkpoint.md "Validation"):
 *
 *     uint64 N (little-endian) | N bytes of JSON header | data buffer
 *
 * The header is one object: "__metadata__" (an object of strings) and one entry per
 * tensor, {"dtype": D, "shape": [...], "data_offsets": [begin, end]}. This file walks
 * that fixed structure with json.c's reader and checks every rule that needs no table;
 * container.c checks coverage and duplicate names and keys once the table is stored. It
 * runs twice per load: once to measure (counts and byte totals for the memory), once to
 * store the entries (tensors, and metadata keys and values, decoded into a pool).
 */
#include <string.h>

#include "internal.h"

static const struct {
    const char *name;
    qrt_dtype dtype;
    int size;
} DTYPES[] = {
    {"BOOL", QRT_DTYPE_BOOL, 1}, {"U8", QRT_DTYPE_U8, 1},         {"I8", QRT_DTYPE_I8, 1},
    {"F8_E5M2", QRT_DTYPE_F8_E5M2, 1}, {"F8_E4M3", QRT_DTYPE_F8_E4M3, 1},
    {"I16", QRT_DTYPE_I16, 2},   {"U16", QRT_DTYPE_U16, 2},       {"F16", QRT_DTYPE_F16, 2},
    {"BF16", QRT_DTYPE_BF16, 2}, {"I32", QRT_DTYPE_I32, 4},       {"U32", QRT_DTYPE_U32, 4},
    {"F32", QRT_DTYPE_F32, 4},   {"I64", QRT_DTYPE_I64, 8},       {"U64", QRT_DTYPE_U64, 8},
    {"F64", QRT_DTYPE_F64, 8},
};
#define N_DTYPES (sizeof DTYPES / sizeof DTYPES[0])
QRT_STATIC_ASSERT(N_DTYPES == QRT_DTYPE_COUNT, one_entry_per_dtype);

const char *qrt_dtype_str(qrt_dtype d) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (DTYPES[i].dtype == d) return DTYPES[i].name;
    return "?";
}

int qrt_dtype_size(qrt_dtype d) {
    for (size_t i = 0; i < N_DTYPES; i++)
        if (DTYPES[i].dtype == d) return DTYPES[i].size;
    return 0;
}

static uint64_t le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* "[a, b, ...]": at most max unsigned integers, each in [0, 2^53], written without a
 * sign (-0 included: the reference reads these as usize, which refuses it). */
static qrt_status int_array(qrt_json *j, const char *tensor, const char *field, int64_t *v,
                            int max, int *n) {
    qrt_status st;
    *n = 0;
    if ((st = qrt_json_expect(j, '[', "'['"))) return st;
    qrt_json_ws(j);
    if (qrt_json_peek(j, ']')) {
        j->p++;
        return QRT_STATUS_OK;
    }
    for (;;) {
        qrt_json_ws(j);
        if (*n == max)
            return qrt_json_fail(j, "tensor '%s': %s has more than %d entries", tensor, field, max);
        if (qrt_json_peek(j, '-')) return qrt_json_fail(j, "tensor '%s': %s has a negative entry", tensor, field);
        if ((st = qrt_json_int(j, &v[*n]))) return st;
        (*n)++;
        qrt_json_ws(j);
        if (qrt_json_peek(j, ']')) {
            j->p++;
            return QRT_STATUS_OK;
        }
        if ((st = qrt_json_expect(j, ',', "',' or ']'"))) return st;
    }
}

/* One tensor entry, after its name and ':'. t may be NULL (measuring). */
static qrt_status tensor_entry(qrt_json *j, const char *name, qrt_header_scan *s, qrt_tensor *t) {
    qrt_status st;
    int have_dtype = 0, have_shape = 0, have_offsets = 0, ndim = 0, noff = 0, esize = 0;
    qrt_dtype dtype = QRT_DTYPE_U8;
    int64_t shape[QRT_MAX_DIMS], off[2];
    if (!qrt_json_peek(j, '{'))
        return qrt_json_fail(j, "tensor '%s': the entry must be an object", name);
    j->p++;
    qrt_json_ws(j);
    if (qrt_json_peek(j, '}')) return qrt_json_fail(j, "tensor '%s': empty entry", name);
    for (;;) {
        char key[32], val[32];
        size_t klen, vlen;
        qrt_json_ws(j);
        const uint8_t *kpos = j->p;
        if ((st = qrt_json_string(j, key, sizeof key, &klen, NULL))) return st;
        qrt_json_ws(j);
        if ((st = qrt_json_expect(j, ':', "':'"))) return st;
        qrt_json_ws(j);
        int *seen = !strcmp(key, "dtype")          ? &have_dtype
                    : !strcmp(key, "shape")        ? &have_shape
                    : !strcmp(key, "data_offsets") ? &have_offsets
                                                   : NULL;
        if (!seen || klen >= sizeof key) {
            j->p = kpos;
            return qrt_json_fail(j, "tensor '%s': unknown field '%s' (an entry has dtype, shape, "
                                 "data_offsets)", name, key);
        }
        if (*seen) {
            j->p = kpos;
            return qrt_json_fail(j, "tensor '%s': field '%s' appears twice", name, key);
        }
        *seen = 1;
        if (seen == &have_dtype) {
            const uint8_t *vpos = j->p;
            if (!qrt_json_peek(j, '"')) return qrt_json_fail(j, "tensor '%s': dtype must be a string", name);
            if ((st = qrt_json_string(j, val, sizeof val, &vlen, NULL))) return st;
            size_t i = 0;
            while (i < N_DTYPES && (vlen >= sizeof val || strcmp(val, DTYPES[i].name))) i++;
            if (i == N_DTYPES) {
                j->p = vpos;
                return qrt_json_fail(j, "tensor '%s': unknown dtype '%s'", name, val);
            }
            dtype = DTYPES[i].dtype;
            esize = DTYPES[i].size;
        } else if (seen == &have_shape) {
            if ((st = int_array(j, name, "shape", shape, QRT_MAX_DIMS, &ndim))) return st;
        } else {
            if ((st = int_array(j, name, "data_offsets", off, 2, &noff))) return st;
            if (noff != 2)
                return qrt_json_fail(j, "tensor '%s': data_offsets must be [begin, end]", name);
        }
        qrt_json_ws(j);
        if (qrt_json_peek(j, '}')) {
            j->p++;
            break;
        }
        if ((st = qrt_json_expect(j, ',', "',' or '}'"))) return st;
    }
    if (!have_dtype || !have_shape || !have_offsets)
        return qrt_json_fail(j, "tensor '%s' has no %s", name,
                             !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");
    /* numel, the product of the dims in their order, then times the element size, in
     * 64-bit unsigned arithmetic, refusing overflow as the reference implementation does
     * (its checked usize products): [2^53, 0] is an empty tensor, [2^40, 2^40, 0] is
     * refused although it would be empty (docs/checkpoint.md "Validation"). */
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] != 0 && numel > UINT64_MAX / (uint64_t)shape[i])
            return qrt_json_fail(j, "tensor '%s': the element count of its shape overflows", name);
        numel *= (uint64_t)shape[i];
    }
    if (numel > UINT64_MAX / (uint64_t)esize)
        return qrt_json_fail(j, "tensor '%s': the byte size of its shape overflows", name);
    const uint64_t nbytes = numel * (uint64_t)esize;
    if (off[1] < off[0])
        return qrt_json_fail(j, "tensor '%s': data_offsets [%lld, %lld] end before they begin", name,
                             (long long)off[0], (long long)off[1]);
    if ((uint64_t)off[1] > s->data_len)
        return qrt_json_fail(j, "tensor '%s': data_offsets [%lld, %lld] reach past the end of the "
                             "%zu-byte data buffer (truncated file?)", name, (long long)off[0],
                             (long long)off[1], s->data_len);
    if ((uint64_t)(off[1] - off[0]) != nbytes)
        return qrt_json_fail(j, "tensor '%s': data_offsets [%lld, %lld] hold %lld bytes, but %s "
                             "of that shape needs %llu", name, (long long)off[0], (long long)off[1],
                             (long long)(off[1] - off[0]), qrt_dtype_str(dtype),
                             (unsigned long long)nbytes);
    s->n_tensors++;
    if (dtype == QRT_DTYPE_I32) s->i32_bytes += nbytes;
    if (dtype == QRT_DTYPE_U8) s->u8_bytes += nbytes;
    if (t) {
        t->dtype = dtype;
        t->ndim = ndim;
        for (int i = 0; i < ndim; i++) t->shape[i] = (uint64_t)shape[i];
        t->begin = (size_t)off[0];
        t->nbytes = (size_t)nbytes;
        t->data = s->data + t->begin;
        t->s32 = NULL;
        t->s8 = NULL;
    }
    return QRT_STATUS_OK;
}

/* Decodes the string at j's cursor (validated already) into the pool; returns it. */
static const char *pool_string(qrt_json *j, qrt_pool *pool) {
    char *at = pool->p + pool->used;
    size_t n = 0;
    qrt_json_string(j, at, pool->cap - pool->used, &n, NULL);
    pool->used += n + 1;
    return at;
}

/* The __metadata__ object, after its ':'. Its values must be strings; every entry is
 * counted (and with meta != NULL stored, key and value decoded into the pool); the first
 * format, format_version and graph are located for the measuring pass. Duplicate keys
 * are found once the entries are stored (container.c). */
static qrt_status metadata(qrt_json *j, qrt_header_scan *s, qrt_meta *meta, qrt_pool *pool) {
    qrt_status st;
    if (!qrt_json_peek(j, '{')) return qrt_json_fail(j, "__metadata__ must be an object");
    j->p++;
    qrt_json_ws(j);
    if (qrt_json_peek(j, '}')) {
        j->p++;
        return QRT_STATUS_OK;
    }
    for (;;) {
        char key[64];
        size_t klen;
        qrt_json_ws(j);
        const uint8_t *kpos = j->p;
        if ((st = qrt_json_string(j, key, sizeof key, &klen, NULL))) return st;
        qrt_json_ws(j);
        if ((st = qrt_json_expect(j, ':', "':'"))) return st;
        qrt_json_ws(j);
        if (!qrt_json_peek(j, '"'))
            return qrt_json_fail(j, "__metadata__ value of '%s' is not a string", key);
        const uint8_t **slot = klen >= sizeof key                ? NULL
                               : !strcmp(key, "format")         ? &s->format
                               : !strcmp(key, "format_version") ? &s->format_version
                               : !strcmp(key, "graph")          ? &s->graph
                                                                 : NULL;
        const uint8_t *vpos = j->p;
        if (slot && !*slot) *slot = vpos;
        size_t nl = 0;
        if ((st = qrt_json_string(j, NULL, 0, NULL, &nl))) return st;
        if (slot == &s->graph && *slot == vpos) s->graph_lines = nl + 1;
        if (meta) {
            const uint8_t *after = j->p;
            qrt_meta *e = &meta[s->n_meta];
            j->p = kpos;
            e->key = pool_string(j, pool);
            j->p = vpos;
            e->value = pool_string(j, pool);
            j->p = after;
        }
        s->n_meta++;
        qrt_json_ws(j);
        if (qrt_json_peek(j, '}')) {
            j->p++;
            return QRT_STATUS_OK;
        }
        if ((st = qrt_json_expect(j, ',', "',' or '}'"))) return st;
    }
}

qrt_status qrt_st_parse(const uint8_t *file, size_t len, qrt_header_scan *s, qrt_tensor *tensors,
                        qrt_meta *meta, char *names, size_t names_cap, qrt_error *err) {
    qrt_status st;
    memset(s, 0, sizeof *s);
    if (len < 8)
        return qrt_fail(err, QRT_STATUS_FORMAT, 0, "file of %zu bytes is truncated: shorter than "
                        "the 8-byte header length", len);
    uint64_t N = le64(file);
    if (N > QRT_MAX_HEADER)
        return qrt_fail(err, QRT_STATUS_FORMAT, 0, "header length %llu exceeds the limit of %u "
                        "bytes (oversized, or not a model file)", (unsigned long long)N, QRT_MAX_HEADER);
    if (N > len - 8)
        return qrt_fail(err, QRT_STATUS_FORMAT, 0, "header length %llu exceeds the %zu bytes after "
                        "it (truncated file?)", (unsigned long long)N, len - 8);
    if (N < 2)
        return qrt_fail(err, QRT_STATUS_FORMAT, 0, "header length %llu is too short for a JSON "
                        "object", (unsigned long long)N);
    s->header_len = (size_t)N;
    s->data = file + 8 + N;
    s->data_len = len - 8 - (size_t)N;
    qrt_json j = {file + 8, file + 8, file + 8 + N, err};
    /* The first byte must be '{', no whitespace before it (docs/checkpoint.md
     * "Validation"; the reference implementation's InvalidHeaderStart). */
    if ((st = qrt_json_expect(&j, '{', "'{' as the header's first byte (the header is one JSON "
                              "object)")))
        return st;
    qrt_json_ws(&j);
    bool have_meta = false;
    qrt_pool pool = {names, names_cap, 0};
    if (qrt_json_peek(&j, '}')) j.p++;
    else
        for (;;) {
            char key[128];
            size_t klen;
            qrt_json_ws(&j);
            const uint8_t *kpos = j.p;
            if ((st = qrt_json_string(&j, key, sizeof key, &klen, NULL))) return st;
            qrt_json_ws(&j);
            if ((st = qrt_json_expect(&j, ':', "':'"))) return st;
            qrt_json_ws(&j);
            if (klen == 12 && !strcmp(key, "__metadata__")) {
                if (have_meta) {
                    j.p = kpos;
                    return qrt_json_fail(&j, "__metadata__ appears twice");
                }
                have_meta = true;
                if ((st = metadata(&j, s, tensors ? meta : NULL, &pool))) return st;
            } else {
                qrt_tensor *t = tensors ? &tensors[s->n_tensors] : NULL;
                if (t) {
                    /* Decode the full name into the pool (header_len + 1 bytes hold every
                     * name, metadata key and value: each decodes to at most its quoted
                     * length minus 2, plus a NUL). */
                    const uint8_t *after = j.p;
                    j.p = kpos;
                    t->name = pool_string(&j, &pool);
                    j.p = after;
                }
                if ((st = tensor_entry(&j, key, s, t))) return st;
            }
            qrt_json_ws(&j);
            if (qrt_json_peek(&j, '}')) {
                j.p++;
                break;
            }
            if ((st = qrt_json_expect(&j, ',', "',' or '}'"))) return st;
        }
    qrt_json_ws(&j);
    if (j.p != j.end)
        return qrt_json_fail(&j, "unexpected bytes after the header object (only whitespace may "
                             "pad it)");
    s->strings_used = pool.used;
    return QRT_STATUS_OK;
}

/* safetensors.c - the safetensors container: dtypes, writer, validating reader, conversion
 * to float (safetensors.h).
 *
 * Format: Hugging Face safetensors (github.com/huggingface/safetensors, README "Format"
 * and safetensors/src/tensor.rs for the validation the reference reader performs). The
 * layout and the validation rules are in io/safetensors.h and docs/checkpoint.md.
 */
#include "safetensors.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "atomic_file.h"
#include "strbuf.h"

/* safetensors data is little-endian and both directions copy tensors as they lie in
 * memory; a big-endian port would have to byte-swap each element by its dtype size. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "io/safetensors.c assumes a little-endian host"
#endif

/* Offsets and dims are JSON numbers, which cJSON holds as double: integers up to 2^53
 * are exact, beyond that they are refused rather than silently rounded. */
#define JSON_MAX_INT 9007199254740992.0

/* ---- dtypes --------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} dtype_table[] = {
    [QAT_ST_DTYPE_BOOL] = {"BOOL", 1},       [QAT_ST_DTYPE_U8] = {"U8", 1},
    [QAT_ST_DTYPE_I8] = {"I8", 1},           [QAT_ST_DTYPE_F8_E5M2] = {"F8_E5M2", 1},
    [QAT_ST_DTYPE_F8_E4M3] = {"F8_E4M3", 1}, [QAT_ST_DTYPE_I16] = {"I16", 2},
    [QAT_ST_DTYPE_U16] = {"U16", 2},         [QAT_ST_DTYPE_F16] = {"F16", 2},
    [QAT_ST_DTYPE_BF16] = {"BF16", 2},       [QAT_ST_DTYPE_I32] = {"I32", 4},
    [QAT_ST_DTYPE_U32] = {"U32", 4},         [QAT_ST_DTYPE_F32] = {"F32", 4},
    [QAT_ST_DTYPE_I64] = {"I64", 8},         [QAT_ST_DTYPE_U64] = {"U64", 8},
    [QAT_ST_DTYPE_F64] = {"F64", 8},
};
_Static_assert(sizeof dtype_table / sizeof dtype_table[0] == QAT_ST_DTYPE_COUNT, "one entry per dtype");

static bool dtype_valid(qat_st_dtype d) { return (unsigned)d < QAT_ST_DTYPE_COUNT; }

const char *qat_st_dtype_str(qat_st_dtype d) {
    return dtype_valid(d) ? dtype_table[d].name : "unknown";
}

size_t qat_st_dtype_size(qat_st_dtype d) {
    QAT_ASSERT(dtype_valid(d));
    return dtype_table[d].size;
}

bool qat_st_dtype_from_str(const char *s, qat_st_dtype *d) {
    for (int i = 0; i < QAT_ST_DTYPE_COUNT; i++)
        if (strcmp(s, dtype_table[i].name) == 0) {
            *d = (qat_st_dtype)i;
            return true;
        }
    return false;
}


/* ---- small helpers ------------------------------------------------------------------ */

/* Index of the first byte that is not part of valid UTF-8 (RFC 3629: no overlong forms,
 * no surrogates, nothing above U+10FFFF), or SIZE_MAX if all of s[0..n) is valid. */
static size_t utf8_invalid_at(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
        else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
        else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
        else return i;
        if (n - i < len) return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return i;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return SIZE_MAX;
}

static bool utf8_valid(const char *s) {
    return utf8_invalid_at((const unsigned char *)s, strlen(s)) == SIZE_MAX;
}

/* numel and nbytes of a shape, false on overflow (checked in dim order, as the
 * reference implementation does, so [2^40, 2^40, 0] is refused even though it is empty). */
static bool shape_bytes(int ndim, const int64_t *shape, size_t elsize, size_t *numel,
                        size_t *nbytes) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        uint64_t d = (uint64_t)shape[i];
        if (d > SIZE_MAX || (d != 0 && n > SIZE_MAX / d)) return false;
        n *= (size_t)d;
    }
    if (n > SIZE_MAX / elsize) return false;
    *numel = n;
    *nbytes = n * elsize;
    return true;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first name that occurs twice in names[0..n) (sorted in place), or NULL. */
static const char *first_duplicate(const char **names, size_t n) {
    qsort(names, n, sizeof *names, cmp_str_ptr);
    for (size_t i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

/* "(4, 1, 3, 3)", "()" for a scalar. */
void qat_st_shape_str(char *buf, size_t len, int ndim, const int64_t *shape) {
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "(");
    for (int i = 0; i < ndim && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (o < len) snprintf(buf + o, len - o, ")");
}

/* ---- writing -------------------------------------------------------------------------- */

typedef struct ordered {
    size_t size, idx;
} ordered;

/* Decreasing element size, then the caller's order (qsort is not stable; the index
 * makes the order total). */
static int cmp_ordered(const void *a, const void *b) {
    const ordered *x = a, *y = b;
    if (x->size != y->size) return x->size > y->size ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Where the file's pieces go: a file written atomically, or one buffer in memory. */
typedef struct st_sink {
    uint8_t **out; /* NULL: write to the path */
    size_t *len;
} st_sink;

static qat_status sink_put(const char *path, const qat_chunk *chunks, size_t n, const st_sink *sink,
                           qat_error *err) {
    if (!sink->out) return qat_file_write_atomic(path, chunks, n, err);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) total += chunks[i].len;
    uint8_t *b = malloc(total ? total : 1);
    if (!b) return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (chunks[i].len) memcpy(b + at, chunks[i].data, chunks[i].len);
        at += chunks[i].len;
    }
    *sink->out = b;
    *sink->len = total;
    return QAT_STATUS_OK;
}

static qat_status st_emit(const char *path, const qat_st_tensor *tensors, size_t n_tensors, const qat_st_kv *meta,
                          size_t n_meta, const st_sink *sink, qat_error *err) {
    QAT_ASSERT(path != NULL && (tensors != NULL || n_tensors == 0));
    QAT_ASSERT(meta != NULL || n_meta == 0);
    qat_st_tensor *ts = NULL;
    ordered *order = NULL;
    const char **names = NULL;
    qat_chunk *chunks = NULL;
    qat_strbuf h = {0};
    qat_status st = QAT_STATUS_OK;

    size_t nn = QAT_MAX(n_tensors, n_meta);
    ts = malloc((n_tensors ? n_tensors : 1) * sizeof *ts);
    order = malloc((n_tensors ? n_tensors : 1) * sizeof *order);
    names = malloc((nn ? nn : 1) * sizeof *names);
    if (!ts || !order || !names) {
        st = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
        goto done;
    }

    /* Check the arguments; compute sizes into a private copy of the tensor list. */
    for (size_t i = 0; i < n_tensors; i++) {
        const qat_st_tensor *t = &tensors[i];
        QAT_ASSERT(t->name != NULL);
        ts[i] = *t;
        if (!utf8_valid(t->name) || strcmp(t->name, "__metadata__") == 0) {
            st = qat_error_set(err, QAT_STATUS_INVALID_ARG,
                               "%s: tensor name '%.100s' is not valid UTF-8 or is reserved",
                               path, t->name);
            goto done;
        }
        if (!dtype_valid(t->dtype) || t->ndim < 0 || t->ndim > QAT_ST_MAX_DIMS) {
            st = qat_error_set(err, QAT_STATUS_INVALID_ARG,
                               "%s: tensor '%.100s': bad dtype %d or ndim %d (0..%d)", path,
                               t->name, (int)t->dtype, t->ndim, QAT_ST_MAX_DIMS);
            goto done;
        }
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] < 0 || (double)t->shape[d] > JSON_MAX_INT) {
                st = qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                   "%s: tensor '%.100s': dim %d is %" PRId64, path, t->name, d,
                                   t->shape[d]);
                goto done;
            }
        if (!shape_bytes(t->ndim, t->shape, qat_st_dtype_size(t->dtype), &ts[i].numel,
                         &ts[i].nbytes)) {
            st = qat_error_set(err, QAT_STATUS_INVALID_ARG,
                               "%s: tensor '%.100s': its size overflows", path, t->name);
            goto done;
        }
        QAT_ASSERT(t->data != NULL || ts[i].nbytes == 0);
        order[i] = (ordered){qat_st_dtype_size(t->dtype), i};
        names[i] = t->name;
    }
    const char *dup = first_duplicate(names, n_tensors);
    if (dup) {
        st = qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: two tensors are named '%.100s'",
                           path, dup);
        goto done;
    }
    for (size_t i = 0; i < n_meta; i++) {
        QAT_ASSERT(meta[i].key != NULL && meta[i].value != NULL);
        if (!utf8_valid(meta[i].key) || !utf8_valid(meta[i].value)) {
            st = qat_error_set(err, QAT_STATUS_INVALID_ARG,
                               "%s: metadata '%.100s' is not valid UTF-8", path, meta[i].key);
            goto done;
        }
        names[i] = meta[i].key;
    }
    dup = first_duplicate(names, n_meta);
    if (dup) {
        st = qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: metadata key '%.100s' given twice",
                           path, dup);
        goto done;
    }

    /* The header, in data order. */
    qsort(order, n_tensors, sizeof *order, cmp_ordered);
    qat_strbuf_puts(&h, "{");
    if (n_meta) {
        qat_strbuf_puts(&h, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i) qat_strbuf_puts(&h, ",");
            qat_strbuf_json_string(&h, meta[i].key);
            qat_strbuf_puts(&h, ":");
            qat_strbuf_json_string(&h, meta[i].value);
        }
        qat_strbuf_puts(&h, "}");
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n_tensors; i++) {
        const qat_st_tensor *t = &ts[order[i].idx];
        if (n_meta || i) qat_strbuf_puts(&h, ",");
        qat_strbuf_json_string(&h, t->name);
        qat_strbuf_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", qat_st_dtype_str(t->dtype));
        for (int d = 0; d < t->ndim; d++) qat_strbuf_printf(&h, "%s%" PRId64, d ? "," : "", t->shape[d]);
        if ((double)off + (double)t->nbytes > JSON_MAX_INT) {
            st = qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: more than 2^53 bytes of data",
                               path);
            goto done;
        }
        qat_strbuf_printf(&h, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + t->nbytes);
        off += t->nbytes;
    }
    qat_strbuf_puts(&h, "}");
    /* Pad with spaces so that 8 + N, the start of the data buffer, is a multiple of 8. */
    while (!h.oom && h.len % 8) qat_strbuf_puts(&h, " ");
    if (h.oom) {
        st = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory for the header", path);
        goto done;
    }
    if (h.len > QAT_ST_MAX_HEADER) {
        st = qat_error_set(err, QAT_STATUS_INVALID_ARG,
                           "%s: the header would be %zu bytes, over the %u-byte limit", path,
                           h.len, QAT_ST_MAX_HEADER);
        goto done;
    }
    /* The file: the header length (8 bytes, little-endian like the host), the header,
     * then the tensors in data order. */
    uint64_t hlen = h.len;
    chunks = malloc((n_tensors + 2) * sizeof *chunks);
    if (!chunks) {
        st = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
        goto done;
    }
    chunks[0] = (qat_chunk){&hlen, 8};
    chunks[1] = (qat_chunk){h.p, h.len};
    for (size_t i = 0; i < n_tensors; i++)
        chunks[i + 2] = (qat_chunk){ts[order[i].idx].data, ts[order[i].idx].nbytes};
    st = sink_put(path, chunks, n_tensors + 2, sink, err);
done:
    free(h.p);
    free(ts);
    free(order);
    free(names);
    free(chunks);
    return st;
}

qat_status qat_safetensors_write(const char *path, const qat_st_tensor *tensors, size_t n_tensors,
                                 const qat_st_kv *meta, size_t n_meta, qat_error *err) {
    const st_sink file = {0};
    return st_emit(path, tensors, n_tensors, meta, n_meta, &file, err);
}

qat_status qat_safetensors_encode(const char *name, const qat_st_tensor *tensors, size_t n_tensors,
                                  const qat_st_kv *meta, size_t n_meta, uint8_t **out, size_t *len, qat_error *err) {
    QAT_ASSERT(out != NULL && len != NULL);
    *out = NULL;
    *len = 0;
    const st_sink mem = {out, len};
    return st_emit(name, tensors, n_tensors, meta, n_meta, &mem, err);
}

/* ---- reading -------------------------------------------------------------------------- */

const char *qat_st_json_kind(const struct cJSON *j) {
    if (cJSON_IsString(j)) return "a string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsObject(j)) return "an object";
    if (cJSON_IsBool(j)) return "a boolean";
    if (cJSON_IsNull(j)) return "null";
    return "invalid";
}

/* A JSON number that is an integer in [0, 2^53]. */
static bool json_uint(const cJSON *j, uint64_t *v) {
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!(d >= 0 && d <= JSON_MAX_INT) || d != floor(d)) return false;
    *v = (uint64_t)d;
    return true;
}

typedef struct span {
    uint64_t begin, end;
    size_t idx;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

#define FMT(...) qat_error_set(err, QAT_STATUS_FORMAT, __VA_ARGS__)

static int cmp_tensor_name(const void *a, const void *b) {
    const qat_st_tensor *x = *(const qat_st_tensor *const *)a;
    const qat_st_tensor *y = *(const qat_st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

static int cmp_kv_key(const void *a, const void *b) {
    return strcmp((*(const qat_st_kv *const *)a)->key, (*(const qat_st_kv *const *)b)->key);
}

/* What cJSON would accept but JSON (RFC 8259) and the reference reader (serde_json) do
 * not, found in the header text before cJSON parses it (docs/checkpoint.md, "Validation"):
 *  - in strings: a raw control character (< 0x20), which RFC 8259 section 7 requires
 *    escaped (Python's json refuses it); an escape other than \" \\ \/ \b \f \n \r \t
 *    and \u with four hex digits (cJSON reads "\u00G0" as U+0000 and cuts the string
 *    there); the escape \u0000, at which cJSON would silently cut the string short (so
 *    "a\u0000b" would become "a");
 *  - outside strings: a control character other than JSON's whitespace (tab, LF, CR):
 *    cJSON skips every byte <= 0x20 between tokens.
 * Returns the problem and its byte offset in *at, or NULL.
 *
 * Numbers are checked here too, as text, because cJSON keeps only their double value:
 * 2.0, 2e0, -0, 02 and 2^53 + 1 (which rounds to 2^53) would all pass an "integral
 * double" test. num_ok (may be NULL) gets, for each number token in document order,
 * whether it is a plain unsigned integer (digits, no leading zero) of at most 2^53, as
 * the reference reader (usize fields) and the runtime's reader require; *n_num their
 * count. mark_numbers then hands the verdicts to the parsed tree. */
static const char *lex_header(const char *s, size_t n, size_t *at, unsigned char *num_ok, size_t *n_num) {
    bool in = false;
    *n_num = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        *at = i;
        if (!in) {
            if (c == '"') {
                in = true;
            } else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
                return "a control character outside a string";
            } else if (c == '-' || (c >= '0' && c <= '9')) {
                size_t e = i;
                while (e < n && s[e] && strchr("0123456789+-.eE", s[e])) e++;
                bool ok = s[i] != '-' && !(s[i] == '0' && e - i > 1);
                uint64_t v = 0;
                for (size_t k = i; ok && k < e; k++) {
                    ok = s[k] >= '0' && s[k] <= '9' && v <= ((uint64_t)1 << 53) / 10;
                    if (ok) v = v * 10 + (uint64_t)(s[k] - '0');
                }
                if (num_ok) num_ok[*n_num] = ok && v <= ((uint64_t)1 << 53);
                (*n_num)++;
                i = e - 1;
            }
        } else if (c == '\\') {
            const char e = i + 1 < n ? s[i + 1] : '\0';
            if (e == 'u') {
                for (int k = 2; k < 6; k++)
                    if (i + (size_t)k >= n || !isxdigit((unsigned char)s[i + k]))
                        return "a \\u escape without four hex digits in a string";
                if (memcmp(s + i + 2, "0000", 4) == 0) return "an escaped NUL (\\u0000) in a string";
                i += 5;
            } else if (e && strchr("\"\\/bfnrt", e)) {
                i++;
            } else {
                return "an unknown escape in a string";
            }
        } else if (c == '"') {
            in = false;
        } else if (c < 0x20) {
            return "an unescaped control character inside a string";
        }
    }
    return NULL;
}

/* Walks the tree in document order (cJSON keeps every member, duplicates too, in order)
 * and makes each number that lex_header found malformed NaN, which json_uint refuses with
 * the message of its field. Returns the count of numbers seen. */
static size_t mark_numbers(cJSON *j, const unsigned char *num_ok, size_t n_num, size_t k) {
    for (; j; j = j->next) {
        if (cJSON_IsNumber(j)) {
            if (k >= n_num || !num_ok[k]) j->valuedouble = NAN;
            k++;
        }
        k = mark_numbers(j->child, num_ok, n_num, k);
    }
    return k;
}

/* One tensor entry of the header into t (name, dtype, shape, sizes) and its offsets. */
static qat_status parse_entry(const cJSON *e, qat_st_tensor *t, span *sp, uint64_t data_len,
                              const char *path, qat_error *err) {
    const char *nm = e->string;
    t->name = nm;
    if (!cJSON_IsObject(e))
        return FMT("%s: tensor '%.100s': entry is %s, not an object {dtype, shape, data_offsets}",
                   path, nm, qat_st_json_kind(e));
    const cJSON *fd = NULL, *fs = NULL, *fo = NULL, *c;
    cJSON_ArrayForEach(c, e) {
        const cJSON **slot = strcmp(c->string, "dtype") == 0          ? &fd
                             : strcmp(c->string, "shape") == 0        ? &fs
                             : strcmp(c->string, "data_offsets") == 0 ? &fo
                                                                      : NULL;
        if (!slot)
            return FMT("%s: tensor '%.100s': unknown field \"%.60s\" (expected dtype, shape, "
                       "data_offsets)",
                       path, nm, c->string);
        if (*slot) return FMT("%s: tensor '%.100s': field \"%s\" given twice", path, nm, c->string);
        *slot = c;
    }
    if (!fd || !fs || !fo)
        return FMT("%s: tensor '%.100s': missing \"%s\"", path, nm,
                   !fd ? "dtype" : !fs ? "shape" : "data_offsets");
    if (!cJSON_IsString(fd))
        return FMT("%s: tensor '%.100s': \"dtype\" is %s, not a string", path, nm, qat_st_json_kind(fd));
    if (!qat_st_dtype_from_str(fd->valuestring, &t->dtype))
        return FMT("%s: tensor '%.100s': unknown dtype \"%.20s\" (known: BOOL, U8, I8, F8_E5M2, "
                   "F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64)",
                   path, nm, fd->valuestring);
    if (!cJSON_IsArray(fs))
        return FMT("%s: tensor '%.100s': \"shape\" is %s, not an array", path, nm, qat_st_json_kind(fs));
    int ndim = cJSON_GetArraySize(fs);
    if (ndim > QAT_ST_MAX_DIMS)
        return FMT("%s: tensor '%.100s': %d dims, more than the %d supported", path, nm, ndim,
                   QAT_ST_MAX_DIMS);
    t->ndim = ndim;
    int d = 0;
    cJSON_ArrayForEach(c, fs) {
        uint64_t v;
        if (!json_uint(c, &v))
            return FMT("%s: tensor '%.100s': shape[%d] is not an integer >= 0", path, nm, d);
        t->shape[d++] = (int64_t)v;
    }
    if (!shape_bytes(ndim, t->shape, qat_st_dtype_size(t->dtype), &t->numel, &t->nbytes)) {
        char s[200];
        qat_st_shape_str(s, sizeof s, t->ndim, t->shape);
        return FMT("%s: tensor '%.100s': the byte size of %s %s overflows", path, nm,
                   qat_st_dtype_str(t->dtype), s);
    }
    uint64_t b, en;
    if (!cJSON_IsArray(fo) || cJSON_GetArraySize(fo) != 2 || !json_uint(fo->child, &b) ||
        !json_uint(fo->child->next, &en))
        return FMT("%s: tensor '%.100s': \"data_offsets\" is not [begin, end], two integers >= 0",
                   path, nm);
    if (b > en)
        return FMT("%s: tensor '%.100s': data_offsets [%" PRIu64 ", %" PRIu64 "] has begin > end",
                   path, nm, b, en);
    if (en > data_len)
        return FMT("%s: tensor '%.100s': data_offsets [%" PRIu64 ", %" PRIu64
                   "] end beyond the %" PRIu64 "-byte data buffer (truncated file?)",
                   path, nm, b, en, data_len);
    if (en - b != t->nbytes) {
        char s[160];
        qat_st_shape_str(s, sizeof s, t->ndim, t->shape);
        return FMT("%s: tensor '%.100s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                   " bytes but %s %s needs %zu",
                   path, nm, b, en, en - b, qat_st_dtype_str(t->dtype), s, t->nbytes);
    }
    sp->begin = b;
    sp->end = en;
    return QAT_STATUS_OK;
}

/* Validates the header text and fills f's tensors and metadata (data_buf already read). */
static qat_status parse_header(qat_st_file *f, char *hdr, size_t n, const char *path,
                               qat_error *err) {
    for (size_t i = 0; i < n; i++)
        if (hdr[i] == '\0') return FMT("%s: header contains a NUL byte at offset %zu", path, i);
    size_t bad = utf8_invalid_at((const unsigned char *)hdr, n);
    if (bad != SIZE_MAX) return FMT("%s: header is not valid UTF-8 (byte %zu)", path, bad);
    if (hdr[0] != '{')
        return FMT("%s: header does not start with '{' (not a safetensors file?)", path);
    size_t n_num;
    const char *why = lex_header(hdr, n, &bad, NULL, &n_num);
    if (why) return FMT("%s: header has %s (byte %zu)", path, why, bad);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(hdr, &end, true);
    if (!root)
        return FMT("%s: header is not valid JSON (error near byte %zu of %zu)", path,
                   end ? (size_t)(end - hdr) : 0, n);
    f->json = root;
    if (!cJSON_IsObject(root)) return FMT("%s: header is not a JSON object", path);
    unsigned char *num_ok = malloc(n_num ? n_num : 1);
    if (!num_ok) return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    lex_header(hdr, n, &bad, num_ok, &n_num);
    const size_t seen = mark_numbers(root->child, num_ok, n_num, 0);
    free(num_ok);
    if (seen != n_num) /* cannot happen for a header cJSON parsed; refuse rather than guess */
        return FMT("%s: header has %zu numbers, but %zu were parsed", path, n_num, seen);

    const cJSON *c, *meta = NULL;
    size_t nt = 0;
    cJSON_ArrayForEach(c, root) {
        if (strcmp(c->string, "__metadata__") == 0) {
            if (meta) return FMT("%s: \"__metadata__\" appears twice", path);
            meta = c;
        } else {
            nt++;
        }
    }
    size_t nm = 0;
    if (meta) {
        if (!cJSON_IsObject(meta))
            return FMT("%s: \"__metadata__\" is %s, not an object", path, qat_st_json_kind(meta));
        cJSON_ArrayForEach(c, meta) {
            if (!cJSON_IsString(c))
                return FMT("%s: metadata \"%.100s\" is %s; safetensors metadata values must be "
                           "strings",
                           path, c->string, qat_st_json_kind(c));
            nm++;
        }
    }
    qat_st_tensor *ts = calloc(nt ? nt : 1, sizeof *ts);
    span *sp = calloc(nt ? nt : 1, sizeof *sp);
    const char **names = malloc(QAT_MAX(QAT_MAX(nt, nm), 1) * sizeof *names);
    f->tensors = calloc(nt ? nt : 1, sizeof *f->tensors);
    f->by_name = malloc((nt ? nt : 1) * sizeof *f->by_name);
    f->meta = calloc(nm ? nm : 1, sizeof *f->meta);
    f->meta_by_key = malloc((nm ? nm : 1) * sizeof *f->meta_by_key);
    qat_status st = QAT_STATUS_OK;
    if (!ts || !sp || !names || !f->tensors || !f->by_name || !f->meta || !f->meta_by_key) {
        st = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory for %zu tensors", path, nt);
        goto done;
    }
    size_t i = 0;
    cJSON_ArrayForEach(c, root) {
        if (c == meta) continue;
        st = parse_entry(c, &ts[i], &sp[i], f->data_len, path, err);
        if (st) goto done;
        sp[i].idx = i;
        names[i] = ts[i].name;
        i++;
    }
    /* cJSON keeps every member of an object, so a repeated key shows up twice here. */
    const char *dup = first_duplicate(names, nt);
    if (dup) {
        st = FMT("%s: tensor name '%.100s' appears twice in the header", path, dup);
        goto done;
    }
    i = 0;
    for (c = meta ? meta->child : NULL; c; c = c->next) {
        f->meta[i] = (qat_st_kv){c->string, c->valuestring};
        names[i++] = c->string;
    }
    dup = first_duplicate(names, nm);
    if (dup) {
        st = FMT("%s: metadata key '%.100s' appears twice", path, dup);
        goto done;
    }
    /* The spec: tensors cover the data buffer in full, without overlap or holes. */
    qsort(sp, nt, sizeof *sp, cmp_span);
    uint64_t pos = 0;
    const char *prev = NULL;
    for (i = 0; i < nt; i++) {
        const qat_st_tensor *t = &ts[sp[i].idx];
        if (sp[i].begin > pos) {
            st = FMT("%s: the data buffer has a hole: bytes [%" PRIu64 ", %" PRIu64
                     ") belong to no tensor",
                     path, pos, sp[i].begin);
            goto done;
        }
        if (sp[i].begin < pos) {
            st = FMT("%s: tensors '%.100s' and '%.100s' overlap in the data buffer (at byte "
                     "%" PRIu64 ")",
                     path, prev ? prev : "?", t->name, sp[i].begin);
            goto done;
        }
        pos = sp[i].end;
        if (sp[i].end > sp[i].begin) prev = t->name;
    }
    if (pos != f->data_len) {
        st = FMT("%s: the data buffer has %" PRIu64 " bytes after the last tensor (at byte %" PRIu64
                 "), which belong to no tensor",
                 path, (uint64_t)f->data_len - pos, pos);
        goto done;
    }
    for (i = 0; i < nt; i++) {
        f->tensors[i] = ts[sp[i].idx];
        f->tensors[i].data = (const char *)f->data_buf + sp[i].begin;
    }
    f->n_tensors = nt;
    f->n_meta = nm;
    /* Sorted pointer arrays for the lookups (names are distinct, checked above). */
    for (i = 0; i < nt; i++) f->by_name[i] = &f->tensors[i];
    for (i = 0; i < nm; i++) f->meta_by_key[i] = &f->meta[i];
    qsort(f->by_name, nt, sizeof *f->by_name, cmp_tensor_name);
    qsort(f->meta_by_key, nm, sizeof *f->meta_by_key, cmp_kv_key);
done:
    free(ts);
    free(sp);
    free(names);
    return st;
}

qat_status qat_safetensors_read(qat_st_file *f, const char *path, qat_error *err) {
    QAT_ASSERT(f != NULL && path != NULL);
    memset(f, 0, sizeof *f);
    char *hdr = NULL;
    qat_status st = QAT_STATUS_OK;
    FILE *fp = fopen(path, "rb");
    if (!fp) return qat_error_set(err, QAT_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = qat_error_set(err, QAT_STATUS_IO, "%s: not a regular file", path);
        goto done;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size == 0) {
        st = FMT("%s: the file is empty; a safetensors file starts with an 8-byte header length",
                 path);
        goto done;
    }
    if (size < 8) {
        st = FMT("%s: the file is only %" PRIu64 " bytes, shorter than the 8-byte header length",
                 path, size);
        goto done;
    }
    uint64_t n;
    if (fread(&n, 8, 1, fp) != 1) {
        st = qat_error_set(err, QAT_STATUS_IO, "%s: read error", path);
        goto done;
    }
    if (n > QAT_ST_MAX_HEADER) {
        st = FMT("%s: header length %" PRIu64 " is over the %u-byte limit (not a safetensors "
                 "file?)",
                 path, n, QAT_ST_MAX_HEADER);
        goto done;
    }
    if (n > size - 8) {
        st = FMT("%s: header length %" PRIu64 " exceeds the %" PRIu64
                 " bytes that follow it (truncated file?)",
                 path, n, size - 8);
        goto done;
    }
    if (n < 2) {
        st = FMT("%s: header length %" PRIu64 " is too short for a JSON object", path, n);
        goto done;
    }
    f->header_len = (size_t)n;
    f->data_len = (size_t)(size - 8 - n);
    hdr = malloc((size_t)n + 1);
    f->data_buf = malloc(f->data_len ? f->data_len : 1);
    f->path = strdup(path);
    if (!hdr || !f->data_buf || !f->path) {
        st = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory for %" PRIu64 " bytes", path,
                           size);
        goto done;
    }
    if (fread(hdr, 1, (size_t)n, fp) != (size_t)n ||
        fread(f->data_buf, 1, f->data_len, fp) != f->data_len) {
        st = ferror(fp) ? qat_error_set(err, QAT_STATUS_IO, "%s: read error: %s", path,
                                        strerror(errno))
                        : FMT("%s: the file ended early (changed while being read?)", path);
        goto done;
    }
    hdr[n] = '\0';
    st = parse_header(f, hdr, (size_t)n, path, err);
done:
    fclose(fp);
    free(hdr);
    if (st) qat_safetensors_free(f);
    return st;
}

void qat_safetensors_free(qat_st_file *f) {
    if (!f) return;
    free(f->path);
    free(f->tensors);
    free(f->meta);
    free(f->data_buf);
    free(f->by_name);
    free(f->meta_by_key);
    cJSON_Delete(f->json);
    memset(f, 0, sizeof *f);
}

const qat_st_tensor *qat_safetensors_find(const qat_st_file *f, const char *name) {
    size_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const qat_st_tensor *t = f->by_name[mid];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const char *qat_safetensors_meta(const qat_st_file *f, const char *key) {
    size_t lo = 0, hi = f->n_meta;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const qat_st_kv *kv = f->meta_by_key[mid];
        int c = strcmp(key, kv->key);
        if (c == 0) return kv->value;
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

/* ---- conversion to float -------------------------------------------------------------- */

/* IEEE binary16 to binary32, exact: sign, 5-bit exponent (bias 15), 10-bit mantissa.
 * Normal: rebias the exponent by 127 - 15 = 112 and shift the mantissa up 13 bits.
 * Subnormal (exponent 0): the value is mantissa * 2^-24, exact in float. Exponent 31:
 * infinity (mantissa 0) or NaN (payload kept). */
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1Fu, man = h & 0x3FFu, bits;
    if (e == 0) {
        float v = (float)man * 0x1p-24f;
        memcpy(&bits, &v, 4);
        bits |= sign;
    } else if (e == 31) {
        bits = sign | 0x7F800000u | man << 13;
    } else {
        bits = sign | (e + 112) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Index of the first finite F64 element outside float's range, or SIZE_MAX. Converting
 * such a value would be undefined in C (6.3.1.5) and is certainly not what the user
 * meant, so it is refused rather than turned into infinity. */
static size_t f64_out_of_range(const qat_st_tensor *t) {
    const unsigned char *p = t->data;
    for (size_t i = 0; i < t->numel; i++) {
        double v;
        memcpy(&v, p + 8 * i, 8);
        if (isfinite(v) && fabs(v) > FLT_MAX) return i;
    }
    return SIZE_MAX;
}

bool qat_st_dtype_is_float(qat_st_dtype d) {
    return d == QAT_ST_DTYPE_F32 || d == QAT_ST_DTYPE_F64 || d == QAT_ST_DTYPE_F16 ||
           d == QAT_ST_DTYPE_BF16;
}

bool qat_safetensors_fits_f32(const qat_st_tensor *t) {
    return qat_st_dtype_is_float(t->dtype) &&
           (t->dtype != QAT_ST_DTYPE_F64 || f64_out_of_range(t) == SIZE_MAX);
}

qat_status qat_safetensors_to_f32(float *out, const qat_st_tensor *t, qat_error *err) {
    QAT_ASSERT(out != NULL && t != NULL);
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case QAT_ST_DTYPE_F32:
        if (t->numel) memcpy(out, p, t->numel * 4);
        return QAT_STATUS_OK;
    case QAT_ST_DTYPE_F64: {
        size_t bad = f64_out_of_range(t);
        if (bad != SIZE_MAX) {
            double v;
            memcpy(&v, p + 8 * bad, 8);
            return FMT("tensor '%.100s': element %zu (%g) does not fit in a float", t->name, bad,
                       v);
        }
        for (size_t i = 0; i < t->numel; i++) {
            double v;
            memcpy(&v, p + 8 * i, 8);
            out[i] = (float)v;
        }
        return QAT_STATUS_OK;
    }
    case QAT_ST_DTYPE_F16:
        for (size_t i = 0; i < t->numel; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = half_to_float(h);
        }
        return QAT_STATUS_OK;
    case QAT_ST_DTYPE_BF16: /* the upper half of a float32 */
        for (size_t i = 0; i < t->numel; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&out[i], &bits, 4);
        }
        return QAT_STATUS_OK;
    case QAT_ST_DTYPE_BOOL:
    case QAT_ST_DTYPE_U8:
    case QAT_ST_DTYPE_I8:
    case QAT_ST_DTYPE_F8_E5M2:
    case QAT_ST_DTYPE_F8_E4M3:
    case QAT_ST_DTYPE_I16:
    case QAT_ST_DTYPE_U16:
    case QAT_ST_DTYPE_I32:
    case QAT_ST_DTYPE_U32:
    case QAT_ST_DTYPE_I64:
    case QAT_ST_DTYPE_U64:
    case QAT_ST_DTYPE_COUNT: break;
    }
    return FMT("tensor '%.100s' is %s; only F32, F64, F16 and BF16 convert to float", t->name,
               qat_st_dtype_str(t->dtype));
}

/* checkpoint.c - safetensors reader/writer, qat training checkpoints, weight import.
 *
 * Format: Hugging Face safetensors (github.com/huggingface/safetensors, README "Format"
 * and safetensors/src/tensor.rs for the validation the reference reader performs). The
 * layout, the names and the validation rules are in train/checkpoint.h and
 * docs/checkpoint.md.
 */
#include "checkpoint.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cjson/cJSON.h>

/* safetensors data is little-endian and both directions copy tensors as they lie in
 * memory; a big-endian port would have to byte-swap each element by its dtype size. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "train/checkpoint.c assumes a little-endian host"
#endif

/* Offsets and dims are JSON numbers, which cJSON holds as double: integers up to 2^53
 * are exact, beyond that they are refused rather than silently rounded. */
#define JSON_MAX_INT 9007199254740992.0

/* ---- dtypes --------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} dtype_table[QAT_ST_DTYPE_COUNT] = {
    [QAT_ST_DTYPE_BOOL] = {"BOOL", 1},       [QAT_ST_DTYPE_U8] = {"U8", 1},
    [QAT_ST_DTYPE_I8] = {"I8", 1},           [QAT_ST_DTYPE_F8_E5M2] = {"F8_E5M2", 1},
    [QAT_ST_DTYPE_F8_E4M3] = {"F8_E4M3", 1}, [QAT_ST_DTYPE_I16] = {"I16", 2},
    [QAT_ST_DTYPE_U16] = {"U16", 2},         [QAT_ST_DTYPE_F16] = {"F16", 2},
    [QAT_ST_DTYPE_BF16] = {"BF16", 2},       [QAT_ST_DTYPE_I32] = {"I32", 4},
    [QAT_ST_DTYPE_U32] = {"U32", 4},         [QAT_ST_DTYPE_F32] = {"F32", 4},
    [QAT_ST_DTYPE_I64] = {"I64", 8},         [QAT_ST_DTYPE_U64] = {"U64", 8},
    [QAT_ST_DTYPE_F64] = {"F64", 8},
};

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

/* A growable string; `oom` sticks after the first failed allocation. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_putn(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_puts(sbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    QAT_ASSERT(n >= 0 && (size_t)n < sizeof tmp); /* only used for numbers */
    sb_putn(b, tmp, (size_t)n);
}

/* A JSON string literal (RFC 8259 section 7): quote, backslash and control characters
 * escaped; other bytes (valid UTF-8, checked by the caller) copied. */
static void sb_json_string(sbuf *b, const char *s) {
    sb_putn(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': sb_puts(b, "\\\""); break;
        case '\\': sb_puts(b, "\\\\"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\r': sb_puts(b, "\\r"); break;
        case '\t': sb_puts(b, "\\t"); break;
        case '\b': sb_puts(b, "\\b"); break;
        case '\f': sb_puts(b, "\\f"); break;
        default:
            if (*p < 0x20) sb_printf(b, "\\u%04x", *p);
            else sb_putn(b, (const char *)p, 1);
        }
    }
    sb_putn(b, "\"", 1);
}

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
static void shape_str64(char *buf, size_t len, int ndim, const int64_t *shape) {
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

/* "dir" and "base" of a path: "a/b/c" -> "a/b", "c"; "c" -> ".", "c"; "/c" -> "/", "c". */
static char *path_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

static const char *path_base(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Parses "<digits>" at s up to `stop` (a char or '\0'), into *v; returns the position
 * after the digits, or NULL. */
static const char *parse_digits(const char *s, char stop, long *v) {
    if (!isdigit((unsigned char)*s)) return NULL;
    long x = 0;
    for (; isdigit((unsigned char)*s); s++) {
        if (x > 100000000L) return NULL; /* no pid or counter is that long */
        x = x * 10 + (*s - '0');
    }
    if (*s != stop) return NULL;
    *v = x;
    return s;
}

/* Deletes "<base>.tmp-<pid>-<k>" files in dir whose writer process no longer exists:
 * kill(pid, 0) failing with ESRCH. A live process (or one we may not signal, EPERM) keeps
 * its file, so a save in progress is never disturbed on this machine. Best effort: any
 * failure here is ignored, since the checkpoint itself is already safely in place. */
static void sweep_stale_temps(const char *dir, const char *base) {
    DIR *d = opendir(dir);
    if (!d) return;
    size_t bl = strlen(base);
    pid_t self = getpid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        if (strncmp(nm, base, bl) != 0 || strncmp(nm + bl, ".tmp-", 5) != 0) continue;
        long pid, k;
        const char *p = parse_digits(nm + bl + 5, '-', &pid);
        if (!p || !parse_digits(p + 1, '\0', &k)) continue;
        if (pid <= 0 || (pid_t)pid == self) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        size_t len = strlen(dir) + strlen(nm) + 2;
        char *full = malloc(len);
        if (!full) break;
        snprintf(full, len, "%s/%s", dir, nm);
        unlink(full);
        free(full);
    }
    closedir(d);
}

/* Writes header and tensor bytes to a temporary file next to `path`, makes it durable
 * and renames it over `path`:
 *  1. open "<path>.tmp-<pid>-<k>" with O_EXCL (k counts up past names that exist, so
 *     this process never writes into a file someone else created);
 *  2. fwrite everything, fflush, fsync: the bytes are on disk before the name points
 *     at them;
 *  3. rename(2) over `path`: atomic in POSIX, so a reader (or a crash) sees the old
 *     file or the new one;
 *  4. fsync the directory, so the rename itself survives a power cut.
 * A kill between 1 and 3 leaves the temporary file; sweep_stale_temps removes it later. */
static qat_status write_atomic(const char *path, const sbuf *header, const qat_st_tensor *tensors,
                               const ordered *order, size_t n, qat_error *err) {
    size_t tlen = strlen(path) + 48;
    char *tmp = malloc(tlen);
    char *dir = path_dir(path);
    if (!tmp || !dir) {
        free(tmp);
        free(dir);
        return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    }
    qat_status st = QAT_STATUS_OK;
    int fd = -1;
    for (int k = 0; k < 1000 && fd < 0; k++) {
        snprintf(tmp, tlen, "%s.tmp-%ld-%d", path, (long)getpid(), k);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        st = qat_error_set(err, QAT_STATUS_IO, "%s: cannot create the temporary file %s: %s",
                           path, tmp, strerror(errno));
        goto done;
    }
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        st = qat_error_set(err, QAT_STATUS_IO, "%s: fdopen: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    uint64_t hlen = header->len; /* little-endian host: the bytes are already LE */
    bool ok = fwrite(&hlen, 8, 1, fp) == 1 && fwrite(header->p, 1, header->len, fp) == header->len;
    for (size_t i = 0; ok && i < n; i++) {
        const qat_st_tensor *t = &tensors[order[i].idx];
        size_t nb = t->nbytes;
        ok = nb == 0 || fwrite(t->data, 1, nb, fp) == nb;
    }
    const char *stage = "write";
    if (ok && fflush(fp) != 0) ok = false, stage = "flush";
    if (ok && fsync(fileno(fp)) != 0) ok = false, stage = "fsync";
    int saved = errno;
    if (fclose(fp) != 0 && ok) ok = false, stage = "close", saved = errno;
    if (!ok) {
        unlink(tmp);
        st = qat_error_set(err, QAT_STATUS_IO, "%s: %s of the temporary file %s failed: %s", path,
                           stage, tmp, strerror(saved));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        st = qat_error_set(err, QAT_STATUS_IO, "%s: cannot rename %s over it: %s", path, tmp,
                           strerror(saved));
        goto done;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        /* Some file systems cannot sync a directory (EINVAL); the file is complete
         * either way, so only a real I/O error is reported. */
        if (fsync(dfd) != 0 && errno != EINVAL)
            st = qat_error_set(err, QAT_STATUS_IO, "%s: fsync of the directory %s failed: %s",
                               path, dir, strerror(errno));
        close(dfd);
    }
    sweep_stale_temps(dir, path_base(path));
done:
    free(tmp);
    free(dir);
    return st;
}

qat_status qat_safetensors_write(const char *path, const qat_st_tensor *tensors, size_t n_tensors,
                                 const qat_st_kv *meta, size_t n_meta, qat_error *err) {
    QAT_ASSERT(path != NULL && (tensors != NULL || n_tensors == 0));
    QAT_ASSERT(meta != NULL || n_meta == 0);
    qat_st_tensor *ts = NULL;
    ordered *order = NULL;
    const char **names = NULL;
    sbuf h = {0};
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
    sb_puts(&h, "{");
    if (n_meta) {
        sb_puts(&h, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i) sb_puts(&h, ",");
            sb_json_string(&h, meta[i].key);
            sb_puts(&h, ":");
            sb_json_string(&h, meta[i].value);
        }
        sb_puts(&h, "}");
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n_tensors; i++) {
        const qat_st_tensor *t = &ts[order[i].idx];
        if (n_meta || i) sb_puts(&h, ",");
        sb_json_string(&h, t->name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", qat_st_dtype_str(t->dtype));
        for (int d = 0; d < t->ndim; d++) sb_printf(&h, "%s%" PRId64, d ? "," : "", t->shape[d]);
        if ((double)off + (double)t->nbytes > JSON_MAX_INT) {
            st = qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: more than 2^53 bytes of data",
                               path);
            goto done;
        }
        sb_printf(&h, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + t->nbytes);
        off += t->nbytes;
    }
    sb_puts(&h, "}");
    /* Pad with spaces so that 8 + N, the start of the data buffer, is a multiple of 8. */
    while (!h.oom && h.len % 8) sb_puts(&h, " ");
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
    st = write_atomic(path, &h, ts, order, n_tensors, err);
done:
    free(h.p);
    free(ts);
    free(order);
    free(names);
    return st;
}

/* ---- reading -------------------------------------------------------------------------- */

static const char *json_kind(const cJSON *j) {
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

/* Strings cJSON would accept but should not: a raw control character (< 0x20), which
 * RFC 8259 section 7 requires escaped (Python's json refuses it), and the escape \u0000,
 * at which cJSON would silently cut the string short (so "a\u0000b" would become "a").
 * Returns the problem and its byte offset in *at, or NULL. Outside strings cJSON itself
 * rejects everything but whitespace. */
static const char *bad_json_string(const char *s, size_t n, size_t *at) {
    bool in = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        *at = i;
        if (!in) {
            in = c == '"';
        } else if (c == '\\') {
            if (n - i >= 6 && s[i + 1] == 'u' && memcmp(s + i + 2, "0000", 4) == 0)
                return "an escaped NUL (\\u0000) in a string";
            i++; /* skip the escaped character, whatever it is */
        } else if (c == '"') {
            in = false;
        } else if (c < 0x20) {
            return "an unescaped control character inside a string";
        }
    }
    return NULL;
}

/* One tensor entry of the header into t (name, dtype, shape, sizes) and its offsets. */
static qat_status parse_entry(const cJSON *e, qat_st_tensor *t, span *sp, uint64_t data_len,
                              const char *path, qat_error *err) {
    const char *nm = e->string;
    t->name = nm;
    if (!cJSON_IsObject(e))
        return FMT("%s: tensor '%.100s': entry is %s, not an object {dtype, shape, data_offsets}",
                   path, nm, json_kind(e));
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
        return FMT("%s: tensor '%.100s': \"dtype\" is %s, not a string", path, nm, json_kind(fd));
    if (!qat_st_dtype_from_str(fd->valuestring, &t->dtype))
        return FMT("%s: tensor '%.100s': unknown dtype \"%.20s\" (known: BOOL, U8, I8, F8_E5M2, "
                   "F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64)",
                   path, nm, fd->valuestring);
    if (!cJSON_IsArray(fs))
        return FMT("%s: tensor '%.100s': \"shape\" is %s, not an array", path, nm, json_kind(fs));
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
        shape_str64(s, sizeof s, t->ndim, t->shape);
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
        shape_str64(s, sizeof s, t->ndim, t->shape);
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
    const char *why = bad_json_string(hdr, n, &bad);
    if (why) return FMT("%s: header has %s (byte %zu)", path, why, bad);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(hdr, &end, true);
    if (!root)
        return FMT("%s: header is not valid JSON (error near byte %zu of %zu)", path,
                   end ? (size_t)(end - hdr) : 0, n);
    f->json = root;
    if (!cJSON_IsObject(root)) return FMT("%s: header is not a JSON object", path);

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
            return FMT("%s: \"__metadata__\" is %s, not an object", path, json_kind(meta));
        cJSON_ArrayForEach(c, meta) {
            if (!cJSON_IsString(c))
                return FMT("%s: metadata \"%.100s\" is %s; safetensors metadata values must be "
                           "strings",
                           path, c->string, json_kind(c));
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

static bool dtype_is_float(qat_st_dtype d) {
    return d == QAT_ST_DTYPE_F32 || d == QAT_ST_DTYPE_F64 || d == QAT_ST_DTYPE_F16 ||
           d == QAT_ST_DTYPE_BF16;
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
    default:
        return FMT("tensor '%.100s' is %s; only F32, F64, F16 and BF16 convert to float", t->name,
                   qat_st_dtype_str(t->dtype));
    }
}

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

static void slots_add_buffer(slot_list *l, const char *layer, const char *what, float *data,
                             int c) {
    slot *s = slots_add(l);
    if (!s) return;
    snprintf(s->name, sizeof s->name, "%s.%s", layer, what);
    s->data = data;
    s->ndim = 1;
    s->shape[0] = c;
    s->n = (size_t)c;
}

/* PyTorch's state_dict order: per layer weight, bias, running_mean, running_var; a
 * residual block's body, then its shortcut. Parameters come out in the model's flat
 * order (the order finalize assigned them), which the optimizer state follows. */
static void slots_walk(slot_list *l, const qat_seq *s) {
    for (int i = 0; i < s->n; i++) {
        const qat_layer *ly = &s->layers[i];
        switch (ly->kind) {
        case QAT_LAYER_LINEAR:
        case QAT_LAYER_CONV2D:
            slots_add_param(l, &ly->weight);
            if (ly->bias.data) slots_add_param(l, &ly->bias);
            break;
        case QAT_LAYER_BATCHNORM:
            slots_add_param(l, &ly->weight);
            slots_add_param(l, &ly->bias);
            slots_add_buffer(l, ly->name, "running_mean", ly->running_mean, ly->cfg.bn.channels);
            slots_add_buffer(l, ly->name, "running_var", ly->running_var, ly->cfg.bn.channels);
            break;
        case QAT_LAYER_RESIDUAL:
            slots_walk(l, &ly->body);
            slots_walk(l, &ly->shortcut);
            break;
        default: break;
        }
    }
}

static qat_status model_slots(slot_list *l, const qat_model *m, const char *path, qat_error *err) {
    QAT_ASSERT(m->finalized);
    memset(l, 0, sizeof *l);
    slots_walk(l, &m->root);
    for (int i = 0; i < m->n_extra_tensors; i++) slots_add_param(l, m->extra_tensors[i]);
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
    sbuf names;
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
    if (p->names.len) sb_puts(&p->names, ", ");
    sb_puts(&p->names, tmp);
}

static void problems_append(sbuf *msg, const problems *p) {
    if (!p->count) return;
    sb_printf(msg, "; %d %s (", p->count, p->label);
    sb_puts(msg, p->names.p ? p->names.p : "");
    if (p->count > PROBLEMS_SHOWN) sb_puts(msg, ", ...");
    sb_puts(msg, ")");
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
    sbuf key = {0}, msg = {0};
    qat_status st = QAT_STATUS_OK;
    if (!used) return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", f->path);
    const char *prefix = o->prefix ? o->prefix : "";
    memset(rep, 0, sizeof *rep);
    for (size_t i = 0; i < sl->n; i++) {
        const slot *s = &sl->s[i];
        key.len = 0;
        sb_puts(&key, prefix);
        sb_puts(&key, s->name);
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
        if (!(t->dtype == QAT_ST_DTYPE_F32 || (o->any_float && dtype_is_float(t->dtype)))) {
            problem_add(&dtype, "%s is %s", t->name, qat_st_dtype_str(t->dtype));
        } else if (!same) {
            char a[160], b[160];
            shape_str64(a, sizeof a, t->ndim, t->shape);
            shape_str64(b, sizeof b, s->ndim, s->shape);
            problem_add(&shape, "%s: file %s, model %s", s->name, a, b);
        } else if (t->dtype == QAT_ST_DTYPE_F64 && f64_out_of_range(t) != SIZE_MAX) {
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
            (o->ignore_optim && strncmp(nm, "optim.", 6) == 0)) {
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
                sb_printf(&msg, "; its names look prefixed with \"%.*s\" (see strip_prefix)",
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
                st = FMT("%s: optim: \"%s\" is %s, not a number", path, c->string, json_kind(c));
                goto done;
            }
            *(double *)((char *)cfg + fields[fi].offset) = c->valuedouble;
        } else if (flag == &seen_nesterov) {
            if (!cJSON_IsBool(c)) {
                st = FMT("%s: optim: \"nesterov\" is %s, not a boolean", path, json_kind(c));
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

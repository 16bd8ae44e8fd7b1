/* c_source.c - the integer model and test images as C source (c_source.h, docs/mcu.md). */
#include "c_source.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "io/atomic_file.h"
#include "io/strbuf.h"

#define MAX_NAME 72 /* qat export takes --name up to 64 and adds "_images" */

bool qat_c_identifier_ok(const char *name) {
    if (!name || !*name || strlen(name) > MAX_NAME) return false;
    /* A letter first: names beginning with '_' are the implementation's. Not the
     * runtime's prefix: <NAME>_H would be one of its include guards. */
    if (!isalpha((unsigned char)name[0]) || strncasecmp(name, "qrt_", 4) == 0) return false;
    for (const char *p = name; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_')) return false;
    return true;
}

static void upper(char *dst, const char *src) {
    size_t i = 0;
    for (; src[i]; i++) dst[i] = (char)toupper((unsigned char)src[i]);
    dst[i] = '\0';
}

/* A C string literal: printable ASCII as is (quote and backslash escaped), every other
 * byte as a three-digit octal escape (which never runs into a following digit). */
static void c_string(qat_strbuf *b, const char *s, size_t n) {
    qat_strbuf_puts(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') qat_strbuf_printf(b, "\\%c", c);
        else if (c >= 0x20 && c < 0x7F && c != '?') qat_strbuf_printf(b, "%c", c); /* '?': no trigraphs */
        else qat_strbuf_printf(b, "\\%03o", c);
    }
    qat_strbuf_puts(b, "\"");
}

/* A comment line's text: printable ASCII only ('?' for the rest), no end of comment. */
static void comment_text(qat_strbuf *b, const char *s) {
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        qat_strbuf_printf(b, "%c", c >= 0x20 && c < 0x7F ? c : '?');
        if (c == '*' && s[1] == '/') qat_strbuf_puts(b, " "); /* "* /" */
    }
}

/* Bytes as `0x..,` rows of 16. */
static void byte_rows(qat_strbuf *b, const uint8_t *p, size_t n) {
    static const char hex[] = "0123456789abcdef";
    char row[16 * 6 + 8];
    for (size_t i = 0; i < n; i += 16) {
        size_t k = 0;
        row[k++] = ' ';
        row[k++] = ' ';
        row[k++] = ' ';
        row[k++] = ' ';
        for (size_t j = i; j < n && j < i + 16; j++) {
            row[k++] = '0';
            row[k++] = 'x';
            row[k++] = hex[p[j] >> 4];
            row[k++] = hex[p[j] & 15];
            row[k++] = ',';
            if (j + 1 < n && j + 1 < i + 16) row[k++] = ' ';
        }
        row[k++] = '\n';
        qat_strbuf_putn(b, row, k);
    }
}

static qat_status write_text(const char *dir, const char *name, const char *ext, const qat_strbuf *b,
                             qat_error *err) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s.%s", dir, name, ext) >= (int)sizeof path)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: the output directory's path is too long", dir);
    if (b->oom) return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    qat_chunk c = {b->p, b->len};
    return qat_file_write_atomic(path, &c, 1, err);
}

static qat_status check_name(const char *name, qat_error *err) {
    if (qat_c_identifier_ok(name)) return QAT_STATUS_OK;
    return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                         "'%.80s' cannot name C source files and symbols: a C identifier of at most "
                         "%d characters is needed ([A-Za-z][A-Za-z0-9_]*, not beginning with qrt_)", name ? name : "", MAX_NAME);
}

/* The guard comment every generated file opens with. */
static void banner(qat_strbuf *b, const char *file, const char *what, const qat_c_model_info *info) {
    qat_strbuf_printf(b, "/* %s - %s, written by `qat export --format c`", file, what);
    if (info && info->source) {
        qat_strbuf_puts(b, "\n * from ");
        comment_text(b, info->source);
        if (info->quant) {
            qat_strbuf_puts(b, " (");
            comment_text(b, info->quant);
            qat_strbuf_puts(b, ")");
        }
    }
    qat_strbuf_puts(b, ". Do not edit: export again. */\n");
}

qat_status qat_c_source_write(const char *dir, const char *name, const uint8_t *file, size_t len,
                              const qat_c_model_info *info, qat_error *err) {
    QAT_ASSERT(dir != NULL && file != NULL && info != NULL);
    if (check_name(name, err)) return err ? err->status : QAT_STATUS_INVALID_ARG;
    if (len == 0 || info->n_classes < 1 || info->in_c < 1 || info->in_h < 1 || info->in_w < 1)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s/%s: an empty model", dir, name);
    char N[MAX_NAME + 1], fname[MAX_NAME + 8];
    upper(N, name);
    qat_strbuf h = {0}, c = {0};

    /* The header. */
    snprintf(fname, sizeof fname, "%s.h", name);
    banner(&h, fname, "an integer-only model for runtime/ (docs/mcu.md)", info);
    qat_strbuf_printf(&h,
                      "#ifndef %s_H\n#define %s_H\n\n#include \"runtime/runtime.h\"\n\n"
                      "/* The model file's bytes (qat's int8 format, docs/int8-format.md). */\n"
                      "#define %s_BYTES %zuu\n"
                      "/* Activation arena for qrt_run: qrt_arena_size() of a build without SIMD\n"
                      " * kernels (qrt_arena_size_portable()). */\n"
                      "#define %s_ARENA_SIZE %zuu\n"
                      "/* Model memory for qrt_model_load: qrt_model_mem_size() of a build without SIMD\n"
                      " * kernels, as a constant expression of the file's counts (tensors, metadata,\n"
                      " * header bytes, graph lines, I32 bytes). */\n"
                      "#define %s_MEM_SIZE QRT_MODEL_MEM_SIZE_PORTABLE(%zu, %zu, %zu, %zu, %zu)\n"
                      "/* The input: raw uint8 pixels, (C, H, W) row-major. */\n"
                      "#define %s_INPUT_C %d\n#define %s_INPUT_H %d\n#define %s_INPUT_W %d\n"
                      "#define %s_INPUT_SIZE %d\n"
                      "/* Logits (int8), one per class. */\n"
                      "#define %s_N_CLASSES %d\n\n"
                      "extern const unsigned char %s_data[%s_BYTES];\n"
                      "extern const char *const %s_class_names[%s_N_CLASSES];\n\n#endif\n",
                      N, N, N, len, N, info->arena_bytes, N, info->n_tensors, info->n_meta,
                      info->header_len, info->graph_lines, info->i32_bytes, N,
                      info->in_c, N, info->in_h, N, info->in_w, N, info->in_c * info->in_h * info->in_w,
                      N, info->n_classes, name, N, name, N);

    /* The source: the bytes, then the class names. */
    snprintf(fname, sizeof fname, "%s.c", name);
    banner(&c, fname, "the model's bytes and class names", info);
    qat_strbuf_printf(&c,
                      "#include \"%s.h\"\n\n"
                      "#if defined(__GNUC__) || defined(__clang__)\n"
                      "#define %s_ALIGNED_ __attribute__((aligned(16)))\n#else\n#define %s_ALIGNED_\n#endif\n\n"
                      "const unsigned char %s_data[%s_BYTES] %s_ALIGNED_ = {\n",
                      name, N, N, name, N, N);
    byte_rows(&c, file, len);
    qat_strbuf_printf(&c, "};\n\nconst char *const %s_class_names[%s_N_CLASSES] = {\n", name, N);
    /* The names if the list has one per class, else the class numbers. */
    int count = 0;
    if (info->class_names && *info->class_names) {
        count = 1;
        for (const char *p = info->class_names; *p; p++) count += *p == ',';
    }
    const char *p = info->class_names;
    for (int k = 0; k < info->n_classes; k++) {
        qat_strbuf_puts(&c, "    ");
        if (count == info->n_classes) {
            const char *e = strchr(p, ',');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            c_string(&c, p, n);
            p = e ? e + 1 : p + n;
        } else {
            qat_strbuf_printf(&c, "\"%d\"", k);
        }
        qat_strbuf_puts(&c, ",\n");
    }
    qat_strbuf_puts(&c, "};\n");

    qat_status st = write_text(dir, name, "h", &h, err);
    if (!st) st = write_text(dir, name, "c", &c, err);
    free(h.p);
    free(c.p);
    return st;
}

qat_status qat_c_images_write(const char *dir, const char *name, const uint8_t *pixels,
                              const int32_t *labels, int n, int dim, qat_error *err) {
    QAT_ASSERT(dir != NULL && pixels != NULL && labels != NULL);
    if (check_name(name, err)) return err ? err->status : QAT_STATUS_INVALID_ARG;
    if (n < 1 || dim < 1) return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s/%s: no images", dir, name);
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] > 65535)
            return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s/%s: label %d of image %d is outside "
                                 "[0, 65535]", dir, name, (int)labels[i], i);
    char N[MAX_NAME + 1], fname[MAX_NAME + 8];
    upper(N, name);
    qat_strbuf h = {0}, c = {0};
    snprintf(fname, sizeof fname, "%s.h", name);
    banner(&h, fname, "test images for the firmware", NULL);
    qat_strbuf_printf(&h,
                      "#ifndef %s_H\n#define %s_H\n\n"
                      "#define %s_N %d\n#define %s_DIM %d\n\n"
                      "/* Raw uint8 pixels, (C, H, W) row-major, as qrt_run reads them. */\n"
                      "extern const unsigned char %s[%s_N][%s_DIM];\n"
                      "extern const unsigned short %s_labels[%s_N];\n\n#endif\n",
                      N, N, N, n, N, dim, name, N, N, name, N);
    snprintf(fname, sizeof fname, "%s.c", name);
    banner(&c, fname, "test images for the firmware", NULL);
    qat_strbuf_printf(&c, "#include \"%s.h\"\n\nconst unsigned char %s[%s_N][%s_DIM] = {\n", name, name, N, N);
    for (int i = 0; i < n; i++) {
        qat_strbuf_printf(&c, "  { /* %d: label %d */\n", i, (int)labels[i]);
        byte_rows(&c, pixels + (size_t)i * (size_t)dim, (size_t)dim);
        qat_strbuf_puts(&c, "  },\n");
    }
    qat_strbuf_printf(&c, "};\n\nconst unsigned short %s_labels[%s_N] = {", name, N);
    for (int i = 0; i < n; i++) qat_strbuf_printf(&c, "%s%d,", i % 20 ? " " : "\n    ", (int)labels[i]);
    qat_strbuf_puts(&c, "\n};\n");
    qat_status st = write_text(dir, name, "h", &h, err);
    if (!st) st = write_text(dir, name, "c", &c, err);
    free(h.p);
    free(c.p);
    return st;
}

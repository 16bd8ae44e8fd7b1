/* export_c.c - `qat export --format c`: the model as C source for firmware (docs/mcu.md).
 * The int8 file is written first (DIR/<name>.int8, the same bytes the C array holds, so
 * that the host runtime can run exactly what the firmware runs), loaded with runtime/ to
 * validate it and measure the arena and model memory, then written as C source
 * (export/c_source.h); with --images N, the first N test images too. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common.h"
#include "export/c_source.h"
#include "export/int8.h"
#include "runtime/runtime.h"

static qat_status read_all(const char *path, uint8_t **buf, size_t *len, qat_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return qat_error_set(err, QAT_STATUS_IO, "%s: cannot open", path);
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n <= 0 || fseek(f, 0, SEEK_SET)) {
        fclose(f);
        return qat_error_set(err, QAT_STATUS_IO, "%s: cannot read", path);
    }
    *buf = malloc((size_t)n);
    if (!*buf || fread(*buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(*buf);
        *buf = NULL;
        return qat_error_set(err, QAT_STATUS_IO, "%s: cannot read", path);
    }
    fclose(f);
    *len = (size_t)n;
    return QAT_STATUS_OK;
}

/* The counts QRT_MODEL_MEM_SIZE_PORTABLE takes, from the container (runtime.h). */
static void counts(const qrt_container *c, qat_c_model_info *info) {
    info->n_tensors = c->n_tensors;
    info->n_meta = c->n_meta;
    info->header_len = c->header_len;
    info->i32_bytes = 0;
    for (size_t i = 0; i < c->n_tensors; i++)
        if (c->tensors[i].dtype == QRT_DTYPE_I32) info->i32_bytes += c->tensors[i].nbytes;
    const char *g = qrt_container_meta(c, "graph");
    info->graph_lines = 1;
    for (; g && *g; g++) info->graph_lines += *g == '\n';
}

int cli_export_c(const qat_opened *cm, const char *dir, const char *name, int images, const char *data,
                 const char *format, const qat_st_kv *meta, size_t n_meta, bool json) {
    qat_error err = {0};
    char int8_path[4096];
    if (!qat_c_identifier_ok(name) || strlen(name) > 64)
        return cli_fail("export", "--name must be a C identifier of at most 64 characters "
                                  "([A-Za-z][A-Za-z0-9_]*, not beginning with qrt_, the runtime's prefix): "
                                  "it names the files and the symbols");
    if (images < 0) return cli_fail("export", "--images must be 0 or more");
    /* The images' data set is opened before anything is written: a bad --data leaves no
     * directory and no file. */
    qat_dataset test = {0};
    if (images > 0) {
        if (!data) data = qat_checkpoint_extra(&cm->ckpt, "data");
        if (!data) data = QAT_FASHION_MNIST_DIR;
        if (cli_open_data(&test, data, format, QAT_SPLIT_TEST, cm->m, &err)) return cli_fail("export", err.msg);
        if (test.kind != QAT_DATASET_KIND_IMAGES) {
            qat_dataset_free(&test);
            return cli_fail("export", "--images needs an image data set");
        }
    }
    if (mkdir(dir, 0777) && errno != EEXIST) {
        snprintf(int8_path, sizeof int8_path, "%s: cannot create the directory (%s)", dir, strerror(errno));
        qat_dataset_free(&test);
        return cli_fail("export", int8_path);
    }
    struct stat sb;
    if (stat(dir, &sb) || !S_ISDIR(sb.st_mode)) {
        snprintf(int8_path, sizeof int8_path, "%s: not a directory (--format c writes a directory)", dir);
        qat_dataset_free(&test);
        return cli_fail("export", int8_path);
    }
    if (snprintf(int8_path, sizeof int8_path, "%s/%s.int8", dir, name) >= (int)sizeof int8_path) {
        qat_dataset_free(&test);
        return cli_fail("export", "--out: the path is too long");
    }
    const char *source = n_meta && !strcmp(meta[0].key, "source") ? meta[0].value : NULL;
    qat_export_report rep;
    if (qat_export_int8(cm->m, int8_path, meta, n_meta, &rep, &err)) {
        qat_dataset_free(&test);
        return strstr(err.msg, int8_path) || !source ? cli_fail("export", err.msg) : cli_fail_in("export", source, err.msg);
    }

    uint8_t *file = NULL, *mem = NULL, *cmem = NULL;
    size_t len = 0;
    int rc = 0;
    if (read_all(int8_path, &file, &len, &err)) {
        rc = cli_fail("export", err.msg);
        goto done;
    }
    /* Load it as the firmware will: validates it and measures the memory. */
    size_t ms = qrt_model_mem_size(file, len), cs = qrt_container_mem_size(file, len);
    mem = malloc(ms ? ms : 1);
    cmem = malloc(cs ? cs : 1);
    qrt_model m;
    qrt_container c;
    qrt_error re = {0};
    if (!mem || !cmem || qrt_model_load(&m, file, len, mem, ms, &re) ||
        qrt_container_load(&c, file, len, cmem, cs, &re)) {
        char msg[sizeof int8_path + sizeof re.msg + 8];
        snprintf(msg, sizeof msg, "%s: %s", int8_path, re.msg[0] ? re.msg : "out of memory");
        rc = cli_fail("export", msg);
        goto done;
    }
    const qrt_value *in = qrt_model_input(&m);
    qat_c_model_info info = {
        .arena_bytes = qrt_arena_size_portable(&m), /* no SIMD scratch on the target */
        /* a 1-D input (F) is stated as (F, 1, 1) */
        .in_c = in->shape[0], .in_h = in->ndim == 3 ? in->shape[1] : 1, .in_w = in->ndim == 3 ? in->shape[2] : 1,
        .n_classes = qrt_model_n_outputs(&m),
        .class_names = qrt_container_meta(&c, "class_names"),
        .source = qrt_container_meta(&c, "source"),
        .quant = qrt_container_meta(&c, "quant"),
    };
    counts(&c, &info);
    if (qat_c_source_write(dir, name, file, len, &info, &err)) {
        rc = cli_fail("export", err.msg);
        goto done;
    }
    if (images > 0) {
        if (images > test.n) images = test.n;
        char iname[80];
        snprintf(iname, sizeof iname, "%s_images", name);
        if (qat_c_images_write(dir, iname, test.pixels, test.labels, images, test.dim, &err)) {
            rc = cli_fail("export", err.msg);
            goto done;
        }
    }
    if (json)
        printf("{\"command\": \"export\", \"format\": \"c\", \"dir\": \"%s\", \"name\": \"%s\", \"ops\": %d, "
               "\"model_bytes\": %zu, \"weight_bytes\": %zu, \"arena_bytes\": %zu, \"images\": %d}\n",
               dir, name, rep.n_ops, len, rep.weight_bytes, info.arena_bytes, images);
    else
        printf("%s/%s.{h,c}: %d ops, a %zu-byte model array (weights %zu), activation arena %zu bytes; "
               "%d test images%s%s%s\n",
               dir, name, rep.n_ops, len, rep.weight_bytes, info.arena_bytes, images,
               images > 0 ? " in " : "", images > 0 ? name : "", images > 0 ? "_images.{h,c}" : "");
done:
    qat_dataset_free(&test);
    free(file);
    free(mem);
    free(cmem);
    return rc;
}

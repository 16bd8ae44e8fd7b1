/* folder.c - an image-classification folder (torchvision's ImageFolder layout):
 *
 *     dir/cat/0001.png  dir/cat/0002.jpg  ...  dir/dog/x.bmp  ...
 *
 * Classes are the sub-folder names sorted bytewise, so label i is the same on every
 * machine and every run; files are taken in sorted order within a class. Every image is
 * decoded and converted by qat_image_load (data/image.h).
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "dataset.h"
#include "image.h"

typedef struct name_list {
    char **names;
    int n, cap;
} name_list;

static void names_free(name_list *l) {
    for (int i = 0; i < l->n; i++) free(l->names[i]);
    free(l->names);
    l->names = NULL;
    l->n = l->cap = 0;
}

static bool names_push(name_list *l, const char *name) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **bigger = realloc(l->names, sizeof(char *) * (size_t)cap);
        if (!bigger) return false;
        l->names = bigger;
        l->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy) return false;
    l->names[l->n++] = copy;
    return true;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "a/b" in a new string; NULL if out of memory. */
static char *path_join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 2);
    if (!p) return NULL;
    memcpy(p, a, la);
    p[la] = '/';
    memcpy(p + la + 1, b, lb + 1);
    return p;
}

/* The non-hidden entries of dir, sorted. want_dirs: keep only sub-folders (the class
 * level; plain files there are ignored); otherwise every entry must be a regular file
 * (a class folder holds images only). */
static qat_status list_dir(const char *dir, bool want_dirs, name_list *out, qat_error *err) {
    DIR *d = opendir(dir);
    if (!d)
        return qat_error_set(err, QAT_STATUS_IO, "%s: cannot open folder: %s", dir,
                             strerror(errno));
    qat_status s = QAT_STATUS_OK;
    struct dirent *e;
    while (!s && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue; /* ".", "..", hidden files */
        char *full = path_join(dir, e->d_name);
        struct stat st;
        if (!full) {
            s = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", dir);
        } else if (stat(full, &st) != 0) {
            s = qat_error_set(err, QAT_STATUS_IO, "%s: cannot stat: %s", full, strerror(errno));
        } else if (want_dirs) {
            if (S_ISDIR(st.st_mode) && !names_push(out, e->d_name))
                s = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", dir);
        } else if (!S_ISREG(st.st_mode)) {
            s = qat_error_set(err, QAT_STATUS_FORMAT,
                              "%s: not an image file (a class folder holds only images; "
                              "nested folders are not supported)",
                              full);
        } else if (!names_push(out, e->d_name)) {
            s = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", dir);
        }
        free(full);
    }
    closedir(d);
    if (s) {
        names_free(out);
        return s;
    }
    if (out->n > 1) qsort(out->names, (size_t)out->n, sizeof(char *), cmp_names);
    return QAT_STATUS_OK;
}

qat_status qat_dataset_load_folder(qat_dataset *ds, const char *dir, int channels,
                                   int height, int width, qat_error *err) {
    QAT_ASSERT(ds && dir);
    memset(ds, 0, sizeof *ds);
    if ((channels != 1 && channels != 3) || height < 1 || width < 1 ||
        height > QAT_DATA_MAX_IMAGE_SIDE || width > QAT_DATA_MAX_IMAGE_SIDE)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "qat_dataset_load_folder: channels %d, size %dx%d: expected 1 "
                             "or 3 channels and 1..%d pixels per side",
                             channels, height, width, QAT_DATA_MAX_IMAGE_SIDE);
    name_list classes = {0};
    qat_status s = list_dir(dir, true, &classes, err);
    if (s) return s;
    if (classes.n == 0) {
        names_free(&classes);
        return qat_error_set(err, QAT_STATUS_FORMAT,
                             "%s: no classes: expected one sub-folder per class holding its "
                             "images (%s/<class>/<image>.png)",
                             dir, dir);
    }
    if (classes.n > QAT_DATA_MAX_CLASSES) {
        names_free(&classes);
        return qat_error_set(err, QAT_STATUS_FORMAT,
                             "%s: %d class folders, over the limit of %d (QAT_DATA_MAX_CLASSES)",
                             dir, classes.n, QAT_DATA_MAX_CLASSES);
    }
    /* Pass 1: every class folder's file list, so the total size is known and checked
     * before anything is decoded. */
    name_list *files = calloc((size_t)classes.n, sizeof *files);
    char **class_dirs = calloc((size_t)classes.n, sizeof *class_dirs);
    size_t dim = (size_t)channels * (size_t)height * (size_t)width, total = 0;
    if (!files || !class_dirs) s = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", dir);
    for (int k = 0; !s && k < classes.n; k++) {
        class_dirs[k] = path_join(dir, classes.names[k]);
        if (!class_dirs[k]) {
            s = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", dir);
            break;
        }
        s = list_dir(class_dirs[k], false, &files[k], err);
        if (!s && files[k].n == 0)
            s = qat_error_set(err, QAT_STATUS_FORMAT,
                              "%s: empty class '%s': the folder holds no images (remove it or "
                              "add images)",
                              class_dirs[k], classes.names[k]);
        total += s ? 0 : (size_t)files[k].n;
    }
    if (!s && (total > (size_t)INT32_MAX || total > QAT_DATA_MAX_BYTES / dim))
        s = qat_error_set(err, QAT_STATUS_FORMAT,
                          "%s: too large: %zu images of %zu bytes pass the limit of %zu bytes "
                          "(QAT_DATA_MAX_BYTES)",
                          dir, total, dim, QAT_DATA_MAX_BYTES);
    uint8_t *pixels = NULL;
    int32_t *labels = NULL;
    if (!s) {
        pixels = malloc(total * dim);
        labels = malloc(sizeof(int32_t) * total);
        if (!pixels || !labels) s = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", dir);
    }
    /* Pass 2: decode. */
    size_t i = 0;
    for (int k = 0; !s && k < classes.n; k++)
        for (int f = 0; !s && f < files[k].n; f++, i++) {
            char *path = path_join(class_dirs[k], files[k].names[f]);
            if (!path) {
                s = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", dir);
                break;
            }
            s = qat_image_load(pixels + i * dim, path, channels, height, width, err);
            labels[i] = k;
            free(path);
        }
    for (int k = 0; files && class_dirs && k < classes.n; k++) {
        names_free(&files[k]);
        free(class_dirs[k]);
    }
    free(files);
    free(class_dirs);
    if (s) {
        free(pixels);
        free(labels);
        names_free(&classes);
        return s;
    }
    ds->kind = QAT_DATASET_KIND_IMAGES;
    ds->n = (int)total;
    ds->c = channels;
    ds->h = height;
    ds->w = width;
    ds->dim = (int)dim;
    ds->n_classes = classes.n;
    ds->pixels = pixels;
    ds->labels = labels;
    ds->class_names = classes.names; /* ownership moves to the dataset */
    return QAT_STATUS_OK;
}

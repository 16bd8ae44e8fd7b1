/* container.c - the safetensors container checked whole (runtime.h, "the container
 * alone"): safetensors.c parses the header and checks every rule that needs no table;
 * here the table is stored and the rules that need it are checked: the tensors cover
 * the data buffer without holes or overlaps, no tensor name and no metadata key appears
 * twice. qrt_container_load is these checks alone; qrt_model_load runs the same
 * qrt_container_fill on its first block of model memory, then reads the model.
 *
 * Container memory, each block aligned to QRT_ALIGN:
 *   tensors   n_tensors qrt_tensor
 *   meta      n_meta qrt_meta
 *   strings   header_len + 1 bytes: the decoded tensor names, metadata keys and values
 *             (each decodes to at most its quoted JSON length minus 2, plus a NUL, so
 *             they all fit)
 */
#include <string.h>

#include "internal.h"

/* ---- sorting without libc's qsort (stdlib.h is kept out of the float-free library) --- */

typedef int (*cmp_fn)(const void *, const void *);

static void swap_bytes(unsigned char *a, unsigned char *b, size_t size) {
    for (size_t i = 0; i < size; i++) {
        unsigned char t = a[i];
        a[i] = b[i];
        b[i] = t;
    }
}

static void sift_down(unsigned char *base, size_t i, size_t n, size_t size, cmp_fn cmp) {
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) return;
        if (c + 1 < n && cmp(base + c * size, base + (c + 1) * size) < 0) c++;
        if (cmp(base + i * size, base + c * size) >= 0) return;
        swap_bytes(base + i * size, base + c * size, size);
        i = c;
    }
}

/* Heapsort: O(n log n) on any header, in place, no allocation. */
static void heap_sort(void *base_, size_t n, size_t size, cmp_fn cmp) {
    unsigned char *base = base_;
    for (size_t i = n / 2; i-- > 0;) sift_down(base, i, n, size, cmp);
    for (size_t e = n; e-- > 1;) {
        swap_bytes(base, base + e * size, size);
        sift_down(base, 0, e, size, cmp);
    }
}

static int by_offset(const void *a_, const void *b_) {
    const qrt_tensor *a = a_, *b = b_;
    if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
    return a->nbytes < b->nbytes ? -1 : a->nbytes > b->nbytes;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const qrt_tensor *)a)->name, ((const qrt_tensor *)b)->name);
}

static int by_key(const void *a, const void *b) {
    return strcmp(((const qrt_meta *)a)->key, ((const qrt_meta *)b)->key);
}

/* ---- checks that need the table ---------------------------------------------------- */

/* Sorted by offset, the tensors must tile the data buffer exactly (an empty tensor may
 * sit at any offset a tensor begins or ends at, not inside one). */
static qrt_status check_coverage(qrt_tensor *t, size_t n, size_t data_len, qrt_error *err) {
    heap_sort(t, n, sizeof *t, by_offset);
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i].begin < pos)
            return qrt_fail(err, QRT_STATUS_FORMAT, 0, "tensors '%s' [%zu, %zu) and '%s' [%zu, %zu) "
                            "overlap", t[i - 1].name, t[i - 1].begin, t[i - 1].begin + t[i - 1].nbytes,
                            t[i].name, t[i].begin, t[i].begin + t[i].nbytes);
        if (t[i].begin > pos)
            return qrt_fail(err, QRT_STATUS_FORMAT, 0, "data buffer bytes [%zu, %zu) belong to no "
                            "tensor (a hole before '%s')", pos, t[i].begin, t[i].name);
        pos = t[i].begin + t[i].nbytes;
    }
    if (pos != data_len)
        return qrt_fail(err, QRT_STATUS_FORMAT, 0, "data buffer bytes [%zu, %zu) after the last "
                        "tensor belong to no tensor", pos, data_len);
    return QRT_STATUS_OK;
}

static qrt_status check_names(qrt_tensor *t, size_t n, qrt_error *err) {
    heap_sort(t, n, sizeof *t, by_name);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(t[i - 1].name, t[i].name))
            return qrt_fail(err, QRT_STATUS_FORMAT, 0, "tensor name '%s' appears twice in the header",
                            t[i].name);
    return QRT_STATUS_OK;
}

/* No key twice in __metadata__ (docs/checkpoint.md "Validation": no key twice at any
 * level; a JSON object's later value would silently win in most readers). */
static qrt_status check_keys(qrt_meta *m, size_t n, qrt_error *err) {
    heap_sort(m, n, sizeof *m, by_key);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(m[i - 1].key, m[i].key))
            return qrt_fail(err, QRT_STATUS_FORMAT, 0, "__metadata__ key '%s' appears twice", m[i].key);
    return QRT_STATUS_OK;
}

/* ---- layout, fill, load ------------------------------------------------------------ */

enum { BLOCK_TENSORS, BLOCK_META, BLOCK_STRINGS, N_BLOCKS };

static uint64_t align_up64(uint64_t n) { return (n + QRT_ALIGN - 1) / QRT_ALIGN * QRT_ALIGN; }

static void blocks(const qrt_header_scan *s, uint64_t size[N_BLOCKS]) {
    size[BLOCK_TENSORS] = (uint64_t)s->n_tensors * sizeof(qrt_tensor);
    size[BLOCK_META] = (uint64_t)s->n_meta * sizeof(qrt_meta);
    size[BLOCK_STRINGS] = (uint64_t)s->header_len + 1;
}

uint64_t qrt_container_bytes(const qrt_header_scan *s) {
    uint64_t size[N_BLOCKS], total = 0;
    blocks(s, size);
    for (int i = 0; i < N_BLOCKS; i++) total += align_up64(size[i]);
    return total;
}

qrt_status qrt_container_fill(qrt_container *c, qrt_container_mem *cm, const uint8_t *file,
                              size_t len, const qrt_header_scan *s, uint8_t *mem, qrt_error *err) {
    uint64_t size[N_BLOCKS];
    blocks(s, size);
    cm->tensors = (qrt_tensor *)(void *)mem;
    cm->meta = (qrt_meta *)(void *)(mem + align_up64(size[BLOCK_TENSORS]));
    cm->strings = (char *)(mem + align_up64(size[BLOCK_TENSORS]) + align_up64(size[BLOCK_META]));
    cm->strings_cap = (size_t)size[BLOCK_STRINGS];
    qrt_header_scan st;
    TRY(qrt_st_parse(file, len, &st, cm->tensors, cm->meta, cm->strings, cm->strings_cap, err));
    cm->strings_used = st.strings_used;
    TRY(check_coverage(cm->tensors, st.n_tensors, st.data_len, err));
    TRY(check_names(cm->tensors, st.n_tensors, err));
    TRY(check_keys(cm->meta, st.n_meta, err));
    *c = (qrt_container){
        .tensors = cm->tensors, .n_tensors = st.n_tensors, .meta = cm->meta, .n_meta = st.n_meta,
        .header_len = st.header_len, .data = st.data, .data_len = st.data_len,
    };
    return QRT_STATUS_OK;
}

size_t qrt_container_mem_size(const uint8_t *file, size_t len) {
    qrt_header_scan s;
    if (!file || qrt_st_parse(file, len, &s, NULL, NULL, NULL, 0, NULL) != QRT_STATUS_OK) return 0;
    const uint64_t total = qrt_container_bytes(&s) + QRT_ALIGN - 1;
    return total > SIZE_MAX ? SIZE_MAX : (size_t)total;
}

qrt_status qrt_container_load(qrt_container *c, const uint8_t *file, size_t len, void *mem,
                              size_t mem_len, qrt_error *err) {
    qrt_error local;
    if (!err) err = &local;
    memset(err, 0, sizeof *err);
    if (!c) return qrt_fail(err, QRT_STATUS_INVALID_ARG, 0, "qrt_container_load: the container is NULL");
    memset(c, 0, sizeof *c);
    if (!file) return qrt_fail(err, QRT_STATUS_INVALID_ARG, 0, "qrt_container_load: the file is NULL");
    qrt_header_scan s;
    TRY(qrt_st_parse(file, len, &s, NULL, NULL, NULL, 0, err));
    const uint64_t need = qrt_container_bytes(&s) + QRT_ALIGN - 1;
    if (!mem || mem_len < need)
        return qrt_fail(err, QRT_STATUS_NO_MEMORY, 0, "container memory of %zu bytes is too small: "
                        "this file needs %llu (qrt_container_mem_size)", mem ? mem_len : 0,
                        (unsigned long long)need);
    uint8_t *base = (uint8_t *)mem + ((QRT_ALIGN - (uintptr_t)mem % QRT_ALIGN) % QRT_ALIGN);
    qrt_container_mem cm;
    qrt_status st = qrt_container_fill(c, &cm, file, len, &s, base, err);
    if (st != QRT_STATUS_OK) memset(c, 0, sizeof *c);
    return st;
}

const qrt_tensor *qrt_container_tensor(const qrt_container *c, const char *name) {
    if (!c || !name) return NULL;
    size_t lo = 0, hi = c->n_tensors;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        const int r = strcmp(c->tensors[mid].name, name);
        if (!r) return &c->tensors[mid];
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *qrt_container_meta(const qrt_container *c, const char *key) {
    if (!c || !key) return NULL;
    size_t lo = 0, hi = c->n_meta;
    while (lo < hi) {
        const size_t mid = lo + (hi - lo) / 2;
        const int r = strcmp(c->meta[mid].key, key);
        if (!r) return c->meta[mid].value;
        if (r < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

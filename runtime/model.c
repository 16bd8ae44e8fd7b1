/* model.c - qrt_model_load and qrt_model_mem_size: the container is parsed once to
 * measure (safetensors.c fills a qrt_header_scan with counts and byte totals, from which
 * the model-memory layout below follows), then checked whole and stored by the code of
 * qrt_container_load (container.c: the tables, coverage, duplicate names and keys) in the
 * first block. Then: int32 tensors converted to native order, the metadata (format,
 * version), the graph (its decoded text is the container's "graph" value) loaded by
 * graph.c. Container errors thus come first, then metadata, then graph errors; a
 * too-small memory is reported once the header parses.
 *
 * Model memory, in this order, each block aligned to QRT_ALIGN:
 *   container qrt_container_bytes: the tensor table, the metadata table, the decoded
 *             names, keys and values (container.c)
 *   ops       graph_lines qrt_op      (a line holds at most one op)
 *   values    graph_lines qrt_value   (an op writes at most one value)
 *   live      graph_lines int         (the arena planner's list)
 *   int32     i32_bytes               (every I32 tensor as native int32)
 *   unpacked  2 * u8_bytes            (U8 packed weights, one int8 per nibble; SIMD
 *                                     builds only, 0 otherwise: internal.h)
 *   simd      the SIMD packed forms of conv2d/linear (simd.c sizes them from the graph
 *             text; 0 without SIMD kernels, so the portable layout is unchanged)
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "simd_impl.h"

qrt_status qrt_fail(qrt_error *err, qrt_status st, int line, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = st;
        err->line = line;
    }
    return st;
}

const char *qrt_status_str(qrt_status s) {
    switch (s) {
    case QRT_STATUS_OK: return "ok";
    case QRT_STATUS_INVALID_ARG: return "invalid argument";
    case QRT_STATUS_FORMAT: return "bad model file";
    case QRT_STATUS_GRAPH: return "bad model graph";
    case QRT_STATUS_NO_MEMORY: return "model memory too small";
    }
    return "unknown status";
}

/* ---- memory layout ----------------------------------------------------------------- */

/* QRT_MODEL_MEM_SIZE_PORTABLE (runtime.h) spells this layout out with 16-byte blocks. */
QRT_STATIC_ASSERT(QRT_ALIGN == 16, mem_size_macro_rounds_to_qrt_align);

enum { BLOCK_CONTAINER, BLOCK_OPS, BLOCK_VALUES, BLOCK_LIVE, BLOCK_I32, BLOCK_UNPACKED,
       BLOCK_SIMD, N_BLOCKS };

/* Block sizes and their aligned total (plus QRT_ALIGN - 1 to align the caller's base);
 * computed in 64 bits and saturated at SIZE_MAX, which no caller can provide. */
static size_t layout(const qrt_header_scan *s, uint64_t size[N_BLOCKS]) {
    uint64_t lines = s->graph_lines < QRT_MAX_LINES ? s->graph_lines : QRT_MAX_LINES;
    size[BLOCK_CONTAINER] = qrt_container_bytes(s);
    size[BLOCK_OPS] = lines * sizeof(qrt_op);
    size[BLOCK_VALUES] = lines * sizeof(qrt_value);
    size[BLOCK_LIVE] = lines * sizeof(int);
    size[BLOCK_I32] = s->i32_bytes;
    size[BLOCK_UNPACKED] = QRT_UNPACK_AT_LOAD ? 2 * s->u8_bytes : 0; /* internal.h */
    size[BLOCK_SIMD] = qrt_simd_mem_bound(s->graph, s->data);
    uint64_t total = QRT_ALIGN - 1;
    for (int i = 0; i < N_BLOCKS; i++) total += (size[i] + QRT_ALIGN - 1) / QRT_ALIGN * QRT_ALIGN;
    return total > SIZE_MAX ? SIZE_MAX : (size_t)total;
}

size_t qrt_model_mem_size(const uint8_t *file, size_t len) {
    qrt_header_scan s;
    uint64_t size[N_BLOCKS];
    if (!file || qrt_st_parse(file, len, &s, NULL, NULL, NULL, 0, NULL) != QRT_STATUS_OK) return 0;
    return layout(&s, size);
}

/* ---- the metadata a model file needs ------------------------------------------------ */

static qrt_status check_metadata(const qrt_header_scan *s, const qrt_container *c, qrt_error *err) {
    const char *format = qrt_container_meta(c, "format"), *version = qrt_container_meta(c, "format_version");
    if (!format)
        return qrt_fail(err, QRT_STATUS_FORMAT, 0, "__metadata__ has no 'format' (not a qat int8 "
                        "model file; `qat export` writes them)");
    if (strcmp(format, "qat-int8"))
        return qrt_fail(err, QRT_STATUS_FORMAT, 0, "format is '%.40s', expected 'qat-int8' (not an int8 "
                        "model file; `qat export` writes them)", format);
    if (!version) return qrt_fail(err, QRT_STATUS_FORMAT, 0, "__metadata__ has no 'format_version'");
    if (strcmp(version, "1"))
        return qrt_fail(err, QRT_STATUS_FORMAT, 0, "format_version '%.40s' is not supported (this "
                        "runtime reads version 1)", version);
    if (!qrt_container_meta(c, "graph")) return qrt_fail(err, QRT_STATUS_FORMAT, 0, "__metadata__ has no 'graph'");
    if (s->graph_lines > QRT_MAX_LINES)
        return qrt_fail(err, QRT_STATUS_GRAPH, 0, "the graph has %zu lines, more than the limit of %d",
                        s->graph_lines, QRT_MAX_LINES);
    return QRT_STATUS_OK;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- SIMD packing ------------------------------------------------------------------ */

/* The SIMD block: the per-op table of packed forms, then the packed forms. Packs each
 * conv2d/linear into it (in graph order, while it fits: the block
 * is sized from the same shapes, so all fit unless the graph is beyond what the size
 * scan remembers; an op left unpacked runs the portable kernel) and sizes the scratch. */
static void pack_ops(qrt_model *m, uint8_t *mem, size_t cap) {
    size_t used = qrt_round_up((size_t)m->n_ops * sizeof(void *), QRT_SIMD_ALIGN), scratch = 0;
    m->isa = qrt_isa_best();
    if (used > cap) return; /* no SIMD kernels in this build (cap 0) */
    const void **packed = (const void **)(void *)mem;
    m->packed = packed;
    for (int i = 0; i < m->n_ops; i++) {
        const qrt_op *op = &m->ops[i];
        packed[i] = NULL;
        const qrt_value *x = op->n_in ? &m->values[op->in[0]] : NULL, *y = op->out >= 0 ? &m->values[op->out] : NULL;
        size_t need = 0, sc = 0;
        if (op->kind == QRT_OP_CONV2D) {
            const qrt_conv_params p = {
                .C = x->shape[0], .H = x->shape[1], .W = x->shape[2],
                .OC = y->shape[0], .OH = y->shape[1], .OW = y->shape[2],
                .k = op->k, .stride = op->stride, .pad = op->pad, .groups = op->groups,
                .z_in = op->z_in, .z_out = op->z_out, .act_min = op->act_min, .act_max = op->act_max,
            };
            need = qrt_round_up(qrt_conv2d_pack_size(&p), QRT_SIMD_ALIGN);
            if (need && used + need <= cap) {
                packed[i] = qrt_conv2d_pack(mem + used, op->weight->s8, op->bias->s32, op->mult->s32,
                                             op->shift->s32, &p);
                sc = qrt_conv2d_scratch_size(&p);
            }
        } else if (op->kind == QRT_OP_LINEAR) {
            const qrt_linear_params p = {
                .F_in = x->numel, .F_out = y->numel, .z_in = op->z_in, .z_out = op->z_out,
                .act_min = op->act_min, .act_max = op->act_max,
            };
            need = qrt_round_up(qrt_linear_pack_size(&p), QRT_SIMD_ALIGN);
            if (need && used + need <= cap) {
                packed[i] = qrt_linear_pack(mem + used, op->weight->s8, op->bias->s32, op->mult->s32,
                                             op->shift->s32, &p);
                sc = qrt_linear_scratch_size(&p);
            }
        }
        if (packed[i]) used += need;
        if (sc > scratch) scratch = sc;
    }
    /* the depthwise + pointwise pairs qrt_run fuses on AVX2 */
    for (int i = 0; i + 1 < m->n_ops; i++) {
        qrt_conv_params p_dw, p_pw;
        if (qrt_dw_pw_pair(m, i, &p_dw, &p_pw)) {
            const size_t sc = qrt_conv2d_dw_pw_scratch_size(&p_dw, &p_pw);
            if (sc > scratch) scratch = sc;
        }
    }
    m->scratch_size = scratch;
}

/* ---- load -------------------------------------------------------------------------- */

static qrt_status load(qrt_model *m, const uint8_t *file, size_t len, void *mem, size_t mem_len,
                       qrt_error *err) {
    qrt_header_scan s;
    uint64_t size[N_BLOCKS];
    uint8_t *block[N_BLOCKS];
    TRY(qrt_st_parse(file, len, &s, NULL, NULL, NULL, 0, err));
    const size_t need = layout(&s, size);
    if (!mem || mem_len < need)
        return qrt_fail(err, QRT_STATUS_NO_MEMORY, 0, "model memory of %zu bytes is too small: this "
                        "file needs %zu (qrt_model_mem_size)", mem ? mem_len : 0, need);
    uint8_t *p = (uint8_t *)mem + ((QRT_ALIGN - (uintptr_t)mem % QRT_ALIGN) % QRT_ALIGN);
    for (int i = 0; i < N_BLOCKS; i++) {
        block[i] = p;
        p += (size[i] + QRT_ALIGN - 1) / QRT_ALIGN * QRT_ALIGN;
    }
    /* The container, checked whole: the same code as qrt_container_load. */
    qrt_container c;
    qrt_container_mem cm;
    TRY(qrt_container_fill(&c, &cm, file, len, &s, block[BLOCK_CONTAINER], err));
    qrt_tensor *tensors = cm.tensors;
    const size_t n = c.n_tensors;

    /* Native int32 copies (the file is little-endian and may be unaligned). */
    int32_t *i32 = (int32_t *)(void *)block[BLOCK_I32];
    for (size_t i = 0; i < n; i++) {
        if (tensors[i].dtype != QRT_DTYPE_I32) continue;
        size_t count = tensors[i].nbytes / 4;
        for (size_t k = 0; k < count; k++) i32[k] = (int32_t)le32(tensors[i].data + 4 * k);
        tensors[i].s32 = i32;
        i32 += count;
    }
    TRY(check_metadata(&s, &c, err));

    /* The graph text: the decoded "graph" value in the container's pool, which this
     * memory owns (graph.c cuts it into fields in place). */
    char *text = cm.strings + (qrt_container_meta(&c, "graph") - cm.strings);

    qrt_graph_mem gm = {
        .ops = (qrt_op *)(void *)block[BLOCK_OPS],
        .values = (qrt_value *)(void *)block[BLOCK_VALUES],
        .live = (int *)(void *)block[BLOCK_LIVE],
        .max_lines = (size_t)(size[BLOCK_OPS] / sizeof(qrt_op)),
        .unpacked = (int8_t *)block[BLOCK_UNPACKED],
        .unpacked_cap = (size_t)size[BLOCK_UNPACKED],
    };
    TRY(qrt_graph_load(m, tensors, (int)n, text, &gm, err));
    pack_ops(m, block[BLOCK_SIMD], (size_t)size[BLOCK_SIMD]);
    m->file = file;
    m->file_len = len;
    m->tensors = tensors;
    m->n_tensors = (int)n;
    return QRT_STATUS_OK;
}

qrt_status qrt_model_load(qrt_model *m, const uint8_t *file, size_t len, void *mem, size_t mem_len,
                          qrt_error *err) {
    qrt_error local;
    if (!err) err = &local;
    memset(err, 0, sizeof *err);
    if (!m) return qrt_fail(err, QRT_STATUS_INVALID_ARG, 0, "qrt_model_load: the model is NULL");
    memset(m, 0, sizeof *m);
    if (!file) return qrt_fail(err, QRT_STATUS_INVALID_ARG, 0, "qrt_model_load: the file is NULL");
    qrt_status st = load(m, file, len, mem, mem_len, err);
    if (st != QRT_STATUS_OK) memset(m, 0, sizeof *m);
    return st;
}

/* ---- accessors --------------------------------------------------------------------- */

qrt_isa qrt_model_set_isa(qrt_model *m, qrt_isa isa) {
    if (!m || !m->ops) return QRT_ISA_PORTABLE;
    m->isa = qrt_isa_resolve(isa);
    return m->isa;
}

/* The scratch starts at the first QRT_SIMD_ALIGN boundary after the activations (run.c),
 * whatever the arena's alignment: hence the slack. */
size_t qrt_arena_size(const qrt_model *m) {
    if (!m) return 0;
    if (!QRT_UNPACK_AT_LOAD) return qrt_arena_size_portable(m);
    return m->scratch_size ? m->arena_size + QRT_SIMD_ALIGN + m->scratch_size : m->arena_size;
}

size_t qrt_arena_size_portable(const qrt_model *m) { return m ? m->arena_size + m->unpack_size : 0; }

const qrt_value *qrt_model_input(const qrt_model *m) { return m && m->n_values ? &m->values[0] : NULL; }

const qrt_value *qrt_model_output(const qrt_model *m) {
    return m && m->n_values ? &m->values[m->output] : NULL;
}

int qrt_model_n_outputs(const qrt_model *m) { return m && m->n_values ? m->values[m->output].numel : 0; }

int qrt_model_n_ops(const qrt_model *m) { return m ? m->n_ops : 0; }

const qrt_op *qrt_model_op(const qrt_model *m, int i) {
    return m && i >= 0 && i < m->n_ops ? &m->ops[i] : NULL;
}

const qrt_value *qrt_model_value(const qrt_model *m, int i) {
    return m && i >= 0 && i < m->n_values ? &m->values[i] : NULL;
}

const void *qrt_model_op_packed(const qrt_model *m, int i) {
    return m && m->packed && i >= 0 && i < m->n_ops ? m->packed[i] : NULL;
}

const qrt_tensor *qrt_model_tensor(const qrt_model *m, const char *name) {
    if (!m || !name) return NULL;
    int lo = 0, hi = m->n_tensors - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(m->tensors[mid].name, name);
        if (!c) return &m->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

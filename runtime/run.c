/* run.c - qrt_run: the ops in graph order, each value at its planned arena offset.
 * Everything was validated at load time (runtime.h), so nothing here can fail or
 * overflow; there is no allocation and no floating point. With SIMD kernels (simd.h) a
 * packed conv2d/linear and the pools and elementwise ops go through the _isa entry
 * points, whose portable case is the plain kernel: every path gives the same bytes. */
#include <string.h>

#include "internal.h"
#include "simd_impl.h"

/* A 2x2 stride-2 max pool (pad 0) that alone reads the output of a dense or grouped
 * conv (SIMD packed): the two run as one kernel. The fused kernel reads all of the conv's
 * input into its scratch before it writes the pool's output, so the arena plan (which
 * may give the pool's output the bytes of the conv's input) stays safe. */
static bool fusable_pool(const qrt_model *m, const qrt_op *conv, const qrt_op *pool) {
    const qrt_packed_conv *pk = m->packed[conv - m->ops];
    return pool->kind == QRT_OP_MAXPOOL && pool->in[0] == conv->out && pool->k == 2 &&
           pool->stride == 2 && pool->pad == 0 && !pk->depthwise &&
           m->values[conv->out].last_use == pool - m->ops;
}

qrt_conv_params qrt_op_conv_params(const qrt_model *m, const qrt_op *op) {
    const qrt_value *x = &m->values[op->in[0]], *y = &m->values[op->out];
    return (qrt_conv_params){
        .C = x->shape[0], .H = x->shape[1], .W = x->shape[2],
        .OC = y->shape[0], .OH = y->shape[1], .OW = y->shape[2],
        .k = op->k, .stride = op->stride, .pad = op->pad, .groups = op->groups,
        .z_in = op->z_in, .z_out = op->z_out, .act_min = op->act_min, .act_max = op->act_max,
    };
}

/* The fused kernel reads all of the depthwise's input into its scratch before it writes
 * the pointwise's output, so the arena plan stays safe here too. */
bool qrt_dw_pw_pair(const qrt_model *m, int i, qrt_conv_params *p_dw, qrt_conv_params *p_pw) {
    if (!m->packed || i + 1 >= m->n_ops) return false;
    const qrt_op *a = &m->ops[i], *b = &m->ops[i + 1];
    if (a->kind != QRT_OP_CONV2D || b->kind != QRT_OP_CONV2D || !m->packed[i] || !m->packed[i + 1] ||
        b->in[0] != a->out || m->values[a->out].last_use != i + 1)
        return false;
    *p_dw = qrt_op_conv_params(m, a);
    *p_pw = qrt_op_conv_params(m, b);
    return qrt_conv2d_dw_pw_ok(p_dw, p_pw);
}

/* On AVX2, the fused pair at i hands its output to the fused pair at i + 2 as HWC rows
 * (the pointwise's GEMM layout, which the next depthwise needs padded, not (C, H, W)):
 * the pair at i + 2 reads that value and nothing else does. The value's arena bytes hold
 * the HWC form then; no other op sees them. */
static bool hwc_link(const qrt_model *m, qrt_isa isa, int i) {
    qrt_conv_params a, b;
    if (isa != QRT_ISA_AVX2 || i < 0 || !qrt_dw_pw_pair(m, i, &a, &b) || !qrt_dw_pw_pair(m, i + 2, &a, &b))
        return false;
    const int v = m->ops[i + 1].out;
    return m->ops[i + 2].in[0] == v && m->values[v].last_use == i + 2;
}

/* Packed 4-bit weights (a build without SIMD kernels, internal.h): each output channel's
 * K weights are unpacked into wbuf (the arena after the activations, unpack_size bytes)
 * and the int8 kernel runs on that channel alone, its group's input channels seen as a
 * dense conv; the same sums in the same order as on unpacked weights. */
static void unpack_channel(int8_t *wbuf, const uint8_t *packed, uint64_t first, size_t K) {
    for (size_t i = 0; i < K; i++) wbuf[i] = (int8_t)qrt_nibble(packed, first + i);
}

static void conv2d_packed(int8_t *out, const int8_t *in, const qrt_op *op, const qrt_conv_params *p,
                          int8_t *wbuf) {
    const int Cg = p->C / p->groups, OCg = p->OC / p->groups;
    const size_t K = (size_t)Cg * p->k * p->k, plane = (size_t)p->H * p->W, oplane = (size_t)p->OH * p->OW;
    qrt_conv_params q = *p;
    q.C = Cg;
    q.OC = 1;
    q.groups = 1;
    for (int oc = 0; oc < p->OC; oc++) {
        unpack_channel(wbuf, op->weight->data, (uint64_t)oc * K, K);
        qrt_conv2d_s8(out + (size_t)oc * oplane, in + (size_t)(oc / OCg) * Cg * plane, wbuf,
                      op->bias->s32 + oc, op->mult->s32 + oc, op->shift->s32 + oc, &q);
    }
}

static void linear_packed(int8_t *out, const int8_t *in, const qrt_op *op, const qrt_linear_params *p,
                          int8_t *wbuf) {
    qrt_linear_params q = *p;
    q.F_out = 1;
    for (int o = 0; o < p->F_out; o++) {
        unpack_channel(wbuf, op->weight->data, (uint64_t)o * (size_t)p->F_in, (size_t)p->F_in);
        qrt_linear_s8(out + o, in, wbuf, op->bias->s32 + o, op->mult->s32 + o, op->shift->s32 + o, &q);
    }
}

/* Op i of one image: A its activations, scratch the SIMD kernels' (aligned; NULL if the
 * model has none), wbuf the room to unpack 4-bit weights (builds without SIMD kernels).
 * Returns the next op to run (i + 2 after a conv fused with its max pool, or a depthwise
 * with the pointwise after it). */
static int run_op(const qrt_model *m, qrt_isa isa, int i, const uint8_t *pixels, int8_t *A, void *scratch,
                  int8_t *wbuf, int8_t *logits, int *argmax) {
    const qrt_value *V = m->values;
    const qrt_op *op = &m->ops[i];
    const qrt_value *x = op->n_in ? &V[op->in[0]] : NULL, *y = op->out >= 0 ? &V[op->out] : NULL;
    const void *packed = m->packed ? m->packed[i] : NULL;
    switch (op->kind) {
    case QRT_OP_INPUT:
        qrt_input_u8_isa(isa, A + y->offset, pixels, (size_t)y->numel);
        break;
    case QRT_OP_CONV2D: {
        const qrt_conv_params p = qrt_op_conv_params(m, op);
        const qrt_op *next = i + 1 < m->n_ops ? &m->ops[i + 1] : NULL;
        qrt_conv_params p_dw, p_pw;
        if (isa == QRT_ISA_AVX2 && qrt_dw_pw_pair(m, i, &p_dw, &p_pw)) {
            /* depthwise + pointwise in one kernel: the depthwise output stays in the
             * scratch, in the kernels' layout */
            qrt_conv2d_dw_pw_layout(isa, A + V[next->out].offset, A + x->offset, packed, &p_dw, m->packed[i + 1],
                                    &p_pw, scratch, hwc_link(m, isa, i - 2), hwc_link(m, isa, i));
            i++;
        } else if (packed && isa != QRT_ISA_PORTABLE && next && fusable_pool(m, op, next)) {
            /* conv + 2x2 max pool in one kernel (simd.h): the conv output, read by the
             * pool alone, is never written; the pool's output is. */
            qrt_conv2d_maxpool_s8_isa(isa, A + V[next->out].offset, A + x->offset, packed, &p, scratch);
            i++;
        } else if (packed && isa != QRT_ISA_PORTABLE)
            qrt_conv2d_s8_isa(isa, A + y->offset, A + x->offset, packed, &p, scratch);
        else if (!op->weight->s8)
            conv2d_packed(A + y->offset, A + x->offset, op, &p, wbuf);
        else
            qrt_conv2d_s8(A + y->offset, A + x->offset, op->weight->s8, op->bias->s32,
                          op->mult->s32, op->shift->s32, &p);
        break;
    }
    case QRT_OP_LINEAR: {
        const qrt_linear_params p = {
            .F_in = x->numel, .F_out = y->numel, .z_in = op->z_in, .z_out = op->z_out,
            .act_min = op->act_min, .act_max = op->act_max,
        };
        if (packed && isa != QRT_ISA_PORTABLE)
            qrt_linear_s8_isa(isa, A + y->offset, A + x->offset, packed, &p, scratch);
        else if (!op->weight->s8)
            linear_packed(A + y->offset, A + x->offset, op, &p, wbuf);
        else
            qrt_linear_s8(A + y->offset, A + x->offset, op->weight->s8, op->bias->s32,
                          op->mult->s32, op->shift->s32, &p);
        break;
    }
    case QRT_OP_MAXPOOL:
    case QRT_OP_AVGPOOL: {
        const qrt_pool_params p = {
            .C = x->shape[0], .H = x->shape[1], .W = x->shape[2],
            .OH = y->shape[1], .OW = y->shape[2],
            .k = op->k, .stride = op->stride, .pad = op->pad, .z_in = x->z,
        };
        if (op->kind == QRT_OP_MAXPOOL) qrt_maxpool_s8_isa(isa, A + y->offset, A + x->offset, &p);
        else qrt_avgpool_s8_isa(isa, A + y->offset, A + x->offset, &p);
        break;
    }
    case QRT_OP_GLOBAL_AVGPOOL: /* centred on the input's zero point, which y keeps */
        qrt_global_avgpool_s8_isa(isa, A + y->offset, A + x->offset, x->shape[0],
                                  x->shape[1] * x->shape[2], x->z);
        break;
    case QRT_OP_ADD: {
        const qrt_add_params p = {
            .z_a = op->z_a, .z_b = op->z_b, .z_out = op->z_out,
            .mult_a = op->mult_a, .shift_a = op->shift_a,
            .mult_b = op->mult_b, .shift_b = op->shift_b,
            .mult_out = op->mult_out, .shift_out = op->shift_out,
            .act_min = op->act_min, .act_max = op->act_max,
        };
        qrt_add_s8_isa(isa, A + y->offset, A + x->offset, A + V[op->in[1]].offset, (size_t)y->numel, &p);
        break;
    }
    case QRT_OP_FLATTEN: /* the same bytes: the planner gave y x's offset */
        break;
    case QRT_OP_LUT:
        qrt_lut_s8_isa(isa, A + y->offset, A + x->offset, op->table->s8, (size_t)y->numel);
        break;
    case QRT_OP_OUTPUT:
        if (logits) memcpy(logits, A + x->offset, (size_t)x->numel);
        if (argmax) *argmax = qrt_argmax_s8(A + x->offset, x->numel);
        break;
    case QRT_OP_COUNT: break; /* the loader admits no such op */
    }
    return i + 1;
}

qrt_status qrt_run(const qrt_model *m, const uint8_t *pixels, void *arena, int8_t *logits,
                   int *argmax) {
    if (!m) return QRT_STATUS_INVALID_ARG;
    return qrt_run_isa(m, m->isa, pixels, arena, logits, argmax);
}

qrt_status qrt_run_isa(const qrt_model *m, qrt_isa isa, const uint8_t *pixels, void *arena,
                       int8_t *logits, int *argmax) {
    if (!m || !m->ops || !pixels || !arena) return QRT_STATUS_INVALID_ARG;
    int8_t *A = arena;
    /* The kernels' scratch: after the activations, aligned (qrt_arena_size has the slack). */
    void *scratch = m->scratch_size ? qrt_align_ptr(A + m->arena_size) : NULL;
    for (int i = 0; i < m->n_ops;) i = run_op(m, isa, i, pixels, A, scratch, A + m->arena_size, logits, argmax);
    return QRT_STATUS_OK;
}

/* ---- a batch of images in one thread ------------------------------------------------
 *
 * Image s has its own copy of the activations (the single-image plan) at
 * base + s * stride; one shared region after them holds the SIMD scratch (and the 4-bit
 * unpacking room). Ops run image after image within each stretch of ops between two
 * batched linears, so a conv chain keeps one image's activations in cache as qrt_run
 * does; a packed linear on a SIMD path runs once over all n images (a GEMM: each weight
 * loaded once per tile of images instead of once per image). Every kernel computes each
 * image alone, so the bytes are qrt_run's. */

static size_t batch_stride(const qrt_model *m) { return qrt_round_up(m->arena_size ? m->arena_size : 1, QRT_SIMD_ALIGN); }

/* The shared region: the largest single-image scratch, the batch linears' and the
 * unpacking room. */
static size_t batch_shared(const qrt_model *m, int n) {
    size_t need = m->scratch_size > m->unpack_size ? m->scratch_size : m->unpack_size;
    for (int i = 0; m->packed && i < m->n_ops; i++) {
        const qrt_op *op = &m->ops[i];
        if (op->kind != QRT_OP_LINEAR || !m->packed[i]) continue;
        const qrt_linear_params p = {.F_in = m->values[op->in[0]].numel, .F_out = m->values[op->out].numel};
        const size_t sc = qrt_linear_batch_scratch_size(&p, n);
        if (sc > need) need = sc;
    }
    return need;
}

size_t qrt_arena_size_batch(const qrt_model *m, int n) {
    if (!m || !m->ops) return 0;
    if (n < 1) n = 1;
    return QRT_SIMD_ALIGN + (size_t)n * batch_stride(m) + batch_shared(m, n);
}

static bool batched(const qrt_model *m, qrt_isa isa, int i) {
    return m->ops[i].kind == QRT_OP_LINEAR && m->packed && m->packed[i] && isa != QRT_ISA_PORTABLE;
}

qrt_status qrt_run_batch(const qrt_model *m, const uint8_t *pixels, int n, void *arena, int8_t *logits,
                         int *argmax) {
    if (!m) return QRT_STATUS_INVALID_ARG;
    return qrt_run_batch_isa(m, m->isa, pixels, n, arena, logits, argmax);
}

qrt_status qrt_run_batch_isa(const qrt_model *m, qrt_isa isa, const uint8_t *pixels, int n, void *arena,
                             int8_t *logits, int *argmax) {
    if (!m || !m->ops || !pixels || !arena) return QRT_STATUS_INVALID_ARG;
    if (n <= 0) return QRT_STATUS_OK;
    isa = qrt_isa_resolve(isa);
    const size_t stride = batch_stride(m), per = (size_t)m->values[0].numel;
    const size_t K = (size_t)qrt_model_n_outputs(m);
    int8_t *base = qrt_align_ptr(arena);
    int8_t *shared = base + (size_t)n * stride; /* aligned: stride is a multiple of 64 */
    void *scratch = batch_shared(m, n) ? shared : NULL;
    for (int i = 0; i < m->n_ops;) {
        if (batched(m, isa, i)) {
            const qrt_op *op = &m->ops[i];
            const qrt_value *x = &m->values[op->in[0]], *y = &m->values[op->out];
            const qrt_linear_params p = {
                .F_in = x->numel, .F_out = y->numel, .z_in = op->z_in, .z_out = op->z_out,
                .act_min = op->act_min, .act_max = op->act_max,
            };
            qrt_linear_batch_s8_isa(isa, base + y->offset, stride, base + x->offset, stride, n, m->packed[i], &p,
                                    scratch);
            i++;
            continue;
        }
        int end = i + 1;
        while (end < m->n_ops && !batched(m, isa, end)) end++;
        for (int s = 0; s < n; s++)
            for (int j = i; j < end;)
                j = run_op(m, isa, j, pixels + (size_t)s * per, base + (size_t)s * stride, scratch, shared,
                           logits ? logits + (size_t)s * K : NULL, argmax ? argmax + s : NULL);
        i = end;
    }
    return QRT_STATUS_OK;
}

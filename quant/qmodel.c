/* qmodel.c - preparing a model for quantization and its fake-quant forward (quant.h). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "autograd/comm.h"
#include "autograd/parallel.h"
#include "bnfold.h"
#include "exact.h"
#include "fake_quant.h"
#include "q4.h"
#include "smooth.h"
#include "layers/activation.h"
#include "layers/batchnorm.h"
#include "layers/conv2d.h"
#include "layers/elementwise.h"
#include "layers/linear.h"
#include "lower.h"
#include "lsq.h"
#include "pact.h"
#include "quant.h"

/* ---- helpers ---- */

static bool has_role(const qat_layer *l, qat_layer_role r) { return qat_layer_role_of(l) == r; }
static int levels(const qat_qpoint *p) { return p->qmax - p->qmin; }
static bool nonneg(const qat_qpoint *p) { return p->act != NULL; }

static int count_layers(const qat_seq *s) {
    int n = s->n;
    for (int i = 0; i < s->n; i++) n += count_layers(&s->layers[i].body) + count_layers(&s->layers[i].shortcut);
    return n;
}

static void set_vec(qat_tensor *x, float *data, int n, char *name, size_t name_len, const char *layer,
                    const char *what) {
    qat_tensor_set_shape(x, 1, (int[]){n});
    x->data = data;
    x->grad = NULL;
    snprintf(name, name_len, "%s.%s", layer, what);
    x->name = name;
}

/* ---- prepare ---- */

typedef struct prep {
    qat_model *m;
    qat_quant *q;
    int k;             /* next free unit */
    bool seen_weights; /* the first weight layer was already met */
    qat_qpoint *cur;   /* the point that quantized the current activation */
    qat_error *err;
    int layer_bits_used; /* w@ overrides that met their layer */
} prep;

static qat_status point_init(prep *st, qat_qpoint *p, const char *layer, qat_act_method method, int bits,
                             qat_layer *act) {
    if (method == QAT_ACT_METHOD_PACT && !act) method = QAT_ACT_METHOD_OBSERVER;
    p->method = method;
    p->bits = bits;
    p->qmin = qat_qmin_act(bits);
    p->qmax = qat_qmax_act(bits);
    p->act = act;
    p->scale = 1.0f;
    p->zp = 0;
    if (method == QAT_ACT_METHOD_SAME || method == QAT_ACT_METHOD_FIXED) return QAT_STATUS_OK;
    float *r = calloc(2, sizeof(float));
    if (!r) return qat_error_set(st->err, QAT_STATUS_NOMEM, "quant: out of memory");
    set_vec(&p->range, r, 2, p->range_name, sizeof p->range_name, layer, "act_range");
    if (qat_model_add_buffer(st->m, &p->range)) goto oom;
    if (method == QAT_ACT_METHOD_PACT || method == QAT_ACT_METHOD_LSQ) {
        qat_tensor_set_shape(&p->param, 1, (int[]){1});
        snprintf(p->param_name, sizeof p->param_name, "%s.%s", layer,
                 method == QAT_ACT_METHOD_PACT ? "pact_alpha" : "act_step");
        p->param.name = p->param_name;
        if (qat_model_add_param(st->m, &p->param)) goto oom;
        p->param.data[0] = 1.0f; /* until calibration or a checkpoint sets it */
    }
    return QAT_STATUS_OK;
oom:
    return qat_error_set(st->err, QAT_STATUS_NOMEM, "quant: %s", st->m->err.msg);
}

/* A weighted layer named `name` in s (blocks included), or NULL. */
static const qat_layer *find_weighted(const qat_seq *s, const char *name) {
    for (int i = 0; i < s->n; i++) {
        const qat_layer *l = &s->layers[i], *f;
        if (qat_layer_role_of(l) == QAT_LAYER_ROLE_WEIGHTED && !strcmp(l->name, name)) return l;
        if ((f = find_weighted(&l->body, name)) || (f = find_weighted(&l->shortcut, name))) return f;
    }
    return NULL;
}

static qat_status prep_unit(prep *st, qat_seq *s, int i, bool last) {
    qat_layer *l = &s->layers[i];
    qat_layer_quant *u = &st->q->units[st->k++];
    const qat_quant_spec *sp = &st->q->spec;
    l->quant = u;
    u->layer = l;
    /* "token": the point that feeds a linear layer quantizes each row with its own range */
    if (sp->token && l->kind == QAT_LAYER_LINEAR && st->cur && st->cur->method == QAT_ACT_METHOD_OBSERVER)
        st->cur->dynamic = true;
    int C = qat_layer_channels(l);
    int j = i + 1;
    if (j < s->n && has_role(&s->layers[j], QAT_LAYER_ROLE_NORM) && qat_layer_channels(&s->layers[j]) == C)
        u->bn = &s->layers[j++];
    qat_layer *act = NULL;
    if (j < s->n && has_role(&s->layers[j], QAT_LAYER_ROLE_CLAMP)) act = &s->layers[j++];
    u->n_fused = j - i - 1;
    last = last && j == s->n;
    bool ends_at_8 = !sp->all_layers;
    u->wbits = ends_at_8 && !st->seen_weights ? 8 : sp->wbits;
    st->seen_weights = true;
    for (int k = 0; k < sp->n_layer_bits; k++)
        if (!strcmp(sp->layer_bits[k].layer, l->name)) {
            u->wbits = sp->layer_bits[k].wbits;
            st->layer_bits_used++;
        }
    size_t inner = l->weight.n / (size_t)C;
    u->wrows = sp->wgran == QAT_GRANULARITY_TENSOR ? 1 : C;
    u->wgroup = sp->wgran == QAT_GRANULARITY_GROUP ? sp->group : 0;
    u->n_wscales = qat_fq_n_scales(u->wrows, u->wrows == 1 ? l->weight.n : inner, u->wgroup);
    u->wscale = calloc(u->n_wscales, sizeof(float));
    u->wzp = calloc(u->n_wscales, sizeof(int32_t));
    if (!u->wscale || !u->wzp) return qat_error_set(st->err, QAT_STATUS_NOMEM, "quant: out of memory");
    for (size_t c = 0; c < u->n_wscales; c++) u->wscale[c] = 1.0f;
    if (sp->weight_lsq) {
        qat_tensor_set_shape(&u->wstep, 1, (int[]){(int)u->n_wscales});
        snprintf(u->wstep_name, sizeof u->wstep_name, "%s.weight_step", l->name);
        u->wstep.name = u->wstep_name;
        if (qat_model_add_param(st->m, &u->wstep))
            return qat_error_set(st->err, QAT_STATUS_NOMEM, "quant: %s", st->m->err.msg);
        /* The paper's initialisation, 2 mean|w| / sqrt(Qp), on the folded weights
         * (qat_quant_calibrate_end redoes it with the statistics of that moment). */
        for (size_t c = 0; c < u->n_wscales; c++) u->wstep.data[c] = 1.0f;
    }
    if (sp->bias_correction) {
        float *bc = calloc((size_t)C, sizeof(float));
        u->bc_sum = calloc((size_t)C, sizeof(double));
        if (!bc || !u->bc_sum) {
            free(bc);
            return qat_error_set(st->err, QAT_STATUS_NOMEM, "quant: out of memory");
        }
        set_vec(&u->bias_corr, bc, C, u->bc_name, sizeof u->bc_name, l->name, "bias_correction");
        if (qat_model_add_buffer(st->m, &u->bias_corr))
            return qat_error_set(st->err, QAT_STATUS_NOMEM, "quant: %s", st->m->err.msg);
    }
    /* The logits (the model's last output) stay 8-bit, with an observer. */
    bool logits = last && ends_at_8;
    qat_status r = point_init(st, &u->out, l->name, logits ? QAT_ACT_METHOD_OBSERVER : sp->act,
                              logits ? 8 : sp->abits, act);
    st->cur = &u->out;
    return r;
}

static qat_status prep_seq(prep *st, qat_seq *s, bool root) {
    const qat_quant_spec *sp = &st->q->spec;
    for (int i = 0; i < s->n; i++) {
        qat_layer *l = &s->layers[i];
        qat_status r = QAT_STATUS_OK;
        const qat_layer_role role = qat_layer_role_of(l);
        if (role == QAT_LAYER_ROLE_WEIGHTED) {
            r = prep_unit(st, s, i, root);
            i += l->quant ? l->quant->n_fused : 0;
        } else if (role == QAT_LAYER_ROLE_BLOCK) {
            qat_layer_quant *u = &st->q->units[st->k++];
            l->quant = u;
            u->layer = l;
            qat_qpoint *in = st->cur;
            if ((r = prep_seq(st, &l->body, false))) return r;
            st->cur = in;
            if ((r = prep_seq(st, &l->shortcut, false))) return r;
            qat_layer *act = NULL;
            if (i + 1 < s->n && has_role(&s->layers[i + 1], QAT_LAYER_ROLE_CLAMP)) act = &s->layers[i + 1];
            u->n_fused = act != NULL;
            bool logits = root && i + u->n_fused == s->n - 1 && !sp->all_layers;
            r = point_init(st, &u->out, l->name, logits ? QAT_ACT_METHOD_OBSERVER : sp->act,
                           logits ? 8 : sp->abits, act);
            st->cur = &u->out;
            i += u->n_fused;
        } else if (role == QAT_LAYER_ROLE_AVERAGE) {
            qat_layer_quant *u = &st->q->units[st->k++];
            l->quant = u;
            u->layer = l;
            r = point_init(st, &u->out, l->name, QAT_ACT_METHOD_SAME, 8, NULL);
            u->out.same = st->cur;
            st->cur = &u->out;
        } else if (role == QAT_LAYER_ROLE_NORM || role == QAT_LAYER_ROLE_NONLINEAR) {
            qat_layer_quant *u = &st->q->units[st->k++];
            l->quant = u;
            u->layer = l;
            bool logits = root && i == s->n - 1 && !sp->all_layers;
            const int bits = logits ? 8 : sp->abits;
            float lo, hi;
            if (role == QAT_LAYER_ROLE_NONLINEAR && qat_layer_fixed_range(l, &lo, &hi)) {
                /* int8-spec.md, "Other ops": sigmoid and tanh have fixed output parameters
                 * (TFLite's): the range split into 2^b steps, s = (hi - lo) / 2^b, with lo
                 * on qmin. At 8 bits: sigmoid s = 1/256, z = -128; tanh s = 1/128, z = 0
                 * (the top of the range, 1, falls just outside and clamps to qmax). */
                r = point_init(st, &u->out, l->name, QAT_ACT_METHOD_FIXED, bits, NULL);
                u->out.scale = (hi - lo) / (float)(1 << bits);
                u->out.zp = u->out.qmin - (int32_t)lroundf(lo / u->out.scale);
                /* "<layer>.act_range" stays in the state, holding the function's range,
                 * so that checkpoints keep their layout (those written when these points
                 * were observed load unchanged); the fixed parameters never read it. */
                float *rg = r ? NULL : calloc(2, sizeof(float));
                if (!r && !rg) r = qat_error_set(st->err, QAT_STATUS_NOMEM, "quant: out of memory");
                if (rg) {
                    rg[0] = lo, rg[1] = hi;
                    set_vec(&u->out.range, rg, 2, u->out.range_name, sizeof u->out.range_name, l->name,
                            "act_range");
                    if (qat_model_add_buffer(st->m, &u->out.range))
                        r = qat_error_set(st->err, QAT_STATUS_NOMEM, "quant: %s", st->m->err.msg);
                }
            } else {
                /* A batch norm alone: observed. Hard-swish, leaky ReLU: observed or learned
                 * like any activation point (PACT has no clip to learn here: observer). */
                qat_act_method method = role == QAT_LAYER_ROLE_NONLINEAR && !logits ? sp->act
                                                                                    : QAT_ACT_METHOD_OBSERVER;
                r = point_init(st, &u->out, l->name, method, bits, NULL);
            }
            st->cur = &u->out;
        }
        /* CLAMP on quantized values and SELECT layers need no point of their own. */
        if (r) return r;
    }
    return QAT_STATUS_OK;
}

static void point_free(qat_qpoint *p) {
    free(p->range.data);
    if (p->obs) qat_observer_free(p->obs);
    free(p->obs);
    p->obs = NULL;
}

static void quant_free(qat_model *m) {
    qat_quant *q = m->quant;
    if (!q) return;
    for (int i = 0; i < q->n_units; i++) {
        qat_layer_quant *u = &q->units[i];
        if (u->layer) u->layer->quant = NULL;
        free(u->wscale);
        free(u->wzp);
        free(u->bias_corr.data);
        free(u->bc_sum);
        point_free(&u->out);
    }
    point_free(&q->input);
    free(q->in_smooth.data);
    free(q->units);
    free(q);
    m->quant = NULL;
}

static qat_tensor *quant_forward(qat_model *m, qat_tape *t, qat_tensor *x);

/* LSQ's steps are plain parameters, and an optimizer step can take one to 0 or below
 * (seen: a 4-bit weight step of a CNN at lr 0.01 went to -1.4e-4 in the first epoch). As
 * PyTorch's _LearnableFakeQuantize clamps its scale to float eps, every step is projected
 * back to at least QAT_LSQ_MIN_STEP after each optimizer step; its gradient then grows it
 * again. A NaN stays NaN, for the trainer's check. */
static void clamp_steps(qat_tensor *s) {
    for (size_t i = 0; s->data && i < s->n; i++)
        if (s->data[i] < QAT_LSQ_MIN_STEP) s->data[i] = QAT_LSQ_MIN_STEP;
}

static void quant_after_step(qat_model *m) {
    qat_quant *q = m->quant;
    if (q->input.method == QAT_ACT_METHOD_LSQ) clamp_steps(&q->input.param);
    for (int k = 0; k < q->n_units; k++) {
        qat_layer_quant *u = &q->units[k];
        if (u->out.method == QAT_ACT_METHOD_LSQ) clamp_steps(&u->out.param);
        clamp_steps(&u->wstep);
    }
}

qat_status qat_quant_prepare(qat_model *m, const qat_quant_spec *spec, const qat_quant_input *in,
                             qat_error *err) {
    QAT_ASSERT(m != NULL && spec != NULL);
    if (!m->finalized) return qat_error_set(err, QAT_STATUS_INVALID_ARG, "quant: the model is not finalized");
    if (m->quant) return qat_error_set(err, QAT_STATUS_INVALID_ARG, "quant: the model is already quantized");
    if (spec->auto_bytes)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "quant: auto=%ld is chosen from measurements first (qat train, qat calibrate, "
                             "qat sensitivity --budget; train/sensitivity.h)",
                             spec->auto_bytes);
    qat_quant *q = calloc(1, sizeof *q);
    int n = count_layers(&m->root);
    if (q) q->units = calloc((size_t)n, sizeof *q->units);
    if (!q || !q->units) {
        free(q);
        return qat_error_set(err, QAT_STATUS_NOMEM, "quant: out of memory");
    }
    q->n_units = n;
    q->spec = *spec;
    q->fake_quant = true;
    m->quant = q;
    m->quant_free = quant_free;
    m->quant_forward = quant_forward;
    m->quant_after_step = quant_after_step;
    prep st = {m, q, 0, false, &q->input, err};
    qat_status r;
    if (in && in->have) {
        /* The spec's input mapping: raw pixels p become q = p - 128 with
         * s = 1/(255 std), z = round(255 mean) - 128. */
        r = point_init(&st, &q->input, "input", QAT_ACT_METHOD_FIXED, 8, NULL);
        /* z must be an int8 (a mean of pixels lies in [0, 1] of x / 255), and is computed in
         * float first: a huge mean converted to int32 would be undefined behaviour (found by
         * fuzz_checkpoint, tests/fuzz/crashes/checkpoint/input_mean_huge.safetensors). */
        const float zf = roundf(255.0f * in->mean) - 128.0f;
        if (!(in->std > 0.0f) || !isfinite(in->std) || !(zf >= -128.0f && zf <= 127.0f))
            r = qat_error_set(err, QAT_STATUS_INVALID_ARG,
                              "quant: input normalisation mean %g std %g (of x / 255): the integer input needs "
                              "a mean in [0, 1] (zero point round(255 mean) - 128 in [-128, 127]) and a positive, "
                              "finite std",
                              (double)in->mean, (double)in->std);
        q->input.scale = r ? 1.0f : 1.0f / (255.0f * in->std);
        q->input.zp = r ? 0 : (int32_t)zf;
        q->in_mean = in->mean;
        q->in_std = in->std;
    } else {
        r = point_init(&st, &q->input, "input", QAT_ACT_METHOD_OBSERVER, 8, NULL);
    }
    if (!r && spec->smooth && q->input.method != QAT_ACT_METHOD_FIXED && qat_smooth_input_layer(m)) {
        /* SmoothQuant's divisor of the input (smooth.h), 1 until qat_smooth_end */
        int d = 1;
        for (int k = 0; k < m->in_ndim; k++) d *= m->in_shape[k];
        float *sv = malloc((size_t)d * sizeof(float));
        if (!sv) {
            r = qat_error_set(err, QAT_STATUS_NOMEM, "quant: out of memory");
        } else {
            for (int k = 0; k < d; k++) sv[k] = 1.0f;
            set_vec(&q->in_smooth, sv, d, q->in_smooth_name, sizeof q->in_smooth_name, "input", "smooth");
            if (qat_model_add_buffer(m, &q->in_smooth)) r = qat_error_set(err, QAT_STATUS_NOMEM, "quant: %s", m->err.msg);
        }
    }
    if (!r) r = prep_seq(&st, &m->root, true);
    if (!r && st.layer_bits_used != spec->n_layer_bits) {
        /* name the first override that met no conv or linear layer */
        for (int k = 0; k < spec->n_layer_bits && !r; k++) {
            if (!find_weighted(&m->root, spec->layer_bits[k].layer))
                r = qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                  "quant spec: w@%s: the model has no conv or linear layer of that name",
                                  spec->layer_bits[k].layer);
        }
    }
    if (r) {
        quant_free(m);
        m->quant_forward = NULL;
        m->quant_free = NULL;
        m->quant_after_step = NULL;
    }
    return r;
}

/* ---- scales ---- */

/* A point's scale and zero point from its range or learned parameter; qmin/qmax
 * follow a SAME point's source. */
static void point_qparams(const qat_qpoint *p, float *scale, int32_t *zp, int *qmin, int *qmax) {
    *qmin = p->qmin;
    *qmax = p->qmax;
    switch (p->method) {
    case QAT_ACT_METHOD_OBSERVER:
        qat_qparams_from_range(p->range.data[0], p->range.data[1], p->qmin, p->qmax, false, scale, zp);
        return;
    case QAT_ACT_METHOD_PACT:
        /* [0, alpha] on 2^b levels: q = qmin .. qmax, real 0 at qmin. */
        *scale = p->param.data[0] / (float)levels(p);
        *zp = p->qmin;
        return;
    case QAT_ACT_METHOD_LSQ:
        /* LSQ's integers are [0, 2^b - 1] after a ReLU, [qmin, qmax] otherwise; in the
         * int8 frame the unsigned ones sit at q + qmin. */
        *scale = p->param.data[0];
        *zp = nonneg(p) ? p->qmin : 0;
        return;
    case QAT_ACT_METHOD_SAME:
        point_qparams(p->same, scale, zp, qmin, qmax);
        return;
    case QAT_ACT_METHOD_FIXED: /* set once, by qat_quant_prepare */
        *scale = p->scale;
        *zp = p->zp;
        return;
    case QAT_ACT_METHOD_COUNT: break;
    }
    QAT_ASSERT(!"point_qparams: not a method");
}

static void point_refresh(qat_qpoint *p) {
    point_qparams(p, &p->scale, &p->zp, &p->qmin, &p->qmax);
}

void qat_qpoint_qparams(const qat_qpoint *p, float *scale, int32_t *zero_point) {
    int qmin, qmax;
    point_qparams(p, scale, zero_point, &qmin, &qmax);
}

void qat_qpoint_clamp(const qat_qpoint *p, int *lo, int *hi) {
    float scale;
    int32_t zp;
    point_qparams(p, &scale, &zp, lo, hi);
    if (!p->act) return;
    *lo = zp > *lo ? zp : *lo;
    float top = p->method == QAT_ACT_METHOD_PACT ? p->param.data[0] : qat_layer_clamp_max(p->act);
    if (isfinite(top)) {
        float c = (float)zp + roundf(top / scale);
        if (c < (float)*hi) *hi = (int)c;
    }
}

bool qat_quant_weight_scales(const qat_layer_quant *u, float *scale) {
    if (u->wstep.data) {
        memcpy(scale, u->wstep.data, u->n_wscales * sizeof(float));
        return true;
    }
    float *wf = qat_quant_folded_weights(u);
    int32_t *zp = malloc(u->n_wscales * sizeof(int32_t));
    if (wf && zp)
        qat_fq_weight_scales(scale, zp, wf, u->wrows, u->layer->weight.n / (size_t)u->wrows, u->wgroup,
                             qat_qmax_weight(u->wbits));
    bool ok = wf && zp;
    free(wf);
    free(zp);
    return ok;
}

void qat_quant_refresh(qat_model *m) {
    qat_quant *q = m->quant;
    if (!q) return;
    point_refresh(&q->input);
    for (int i = 0; i < q->n_units; i++) {
        qat_layer_quant *u = &q->units[i];
        if (!u->layer) continue;
        point_refresh(&u->out);
        if (u->wscale) qat_quant_weight_scales(u, u->wscale);
    }
}

/* ---- forward ---- */

typedef struct fwd {
    qat_quant *q;
    qat_tape *t;
    bool update_ranges; /* QAT training before the observers freeze */
    bool bn_frozen;
} fwd;

/* EMA of the batch's min and max (PyTorch's MovingAverageMinMaxObserver). The batch's
 * extremes are found by the threads in parts and combined; min and max do not depend on
 * how the values are split. */
typedef struct minmax_job {
    const float *x;
    float lo[QAT_PARALLEL_MAX_THREADS], hi[QAT_PARALLEL_MAX_THREADS];
} minmax_job;

QAT_HOT static void minmax_part(void *p, size_t b, size_t e) {
    minmax_job *j = p;
    float lo = INFINITY, hi = -INFINITY;
    for (size_t i = b; i < e; i++) {
        lo = j->x[i] < lo ? j->x[i] : lo;
        hi = j->x[i] > hi ? j->x[i] : hi;
    }
    int k = qat_parallel_thread_id();
    j->lo[k] = lo;
    j->hi[k] = hi;
}

static void ema_update(qat_qpoint *p, const float *x, size_t n, float c) {
    minmax_job j = {.x = x};
    for (int k = 0; k < QAT_PARALLEL_MAX_THREADS; k++) {
        j.lo[k] = INFINITY;
        j.hi[k] = -INFINITY;
    }
    qat_parallel_for(n, 32768, minmax_part, &j);
    float lo = INFINITY, hi = -INFINITY;
    for (int k = 0; k < QAT_PARALLEL_MAX_THREADS; k++) {
        lo = j.lo[k] < lo ? j.lo[k] : lo;
        hi = j.hi[k] > hi ? j.hi[k] : hi;
    }
    /* data-parallel (autograd/comm.h): the range of the whole batch, so that every
     * process keeps the same observers; before the NaN check, which all then take alike */
    if (qat_comm_minmax(&lo, &hi)) lo = hi = NAN;
    if (!isfinite(lo) || !isfinite(hi)) return; /* a NaN batch: the loss check stops the run */
    p->range.data[0] += c * (lo - p->range.data[0]);
    p->range.data[1] += c * (hi - p->range.data[1]);
}

/* x: the values before the point's fused activation. priv: x is a fresh output that feeds
 * only this point, so the activation may work in place and fake quantization may reuse
 * x's gradient buffer (layers/activation.h, quant/fake_quant.h). */
static qat_tensor *point_apply(fwd *f, qat_qpoint *p, qat_tensor *x, bool priv) {
    qat_quant *q = f->q;
    qat_tape *t = f->t;
    if (!x) return NULL;
    if (p->method == QAT_ACT_METHOD_PACT && q->fake_quant) {
        qat_tensor *y = qat_pact(t, x, &p->param, p->bits, q->spec.pact_decay);
        point_refresh(p);
        return y;
    }
    if (p->act) x = qat_layer_forward(p->act, t, x, priv);
    if (!x) return NULL;
    if (q->observing && p->obs) {
        if (p->obs->cfg.kind == QAT_OBSERVER_EMA && qat_comm_get()->size > 1) {
            /* an EMA's average depends on the batch order: fed each whole batch's extremes
             * across the processes (observer.h) */
            float ex[2] = {INFINITY, -INFINITY};
            for (size_t i = 0; i < x->n; i++)
                if (isfinite(x->data[i])) ex[0] = fminf(ex[0], x->data[i]), ex[1] = fmaxf(ex[1], x->data[i]);
            qat_comm_minmax(&ex[0], &ex[1]);
            qat_observer_update(p->obs, ex, isfinite(ex[0]) ? 2 : 0);
        } else {
            qat_observer_update(p->obs, x->data, x->n);
        }
    }
    if (!q->fake_quant) return x;
    switch (p->method) {
    case QAT_ACT_METHOD_LSQ: {
        int qmin = nonneg(p) ? 0 : p->qmin, qmax = nonneg(p) ? levels(p) : p->qmax;
        size_t per_sample = x->n / (size_t)x->shape[0];
        qat_tensor *y = qat_lsq(t, x, &p->param, qmin, qmax, qat_lsq_grad_scale(per_sample, qmax));
        point_refresh(p);
        return y;
    }
    case QAT_ACT_METHOD_OBSERVER:
        if (f->update_ranges) ema_update(p, x->data, x->n, q->spec.momentum);
        break;
    case QAT_ACT_METHOD_PACT:  /* PACT with fake quant off: calibration, handled above */
    case QAT_ACT_METHOD_FIXED: /* the input: its fixed scale and zero point */
    case QAT_ACT_METHOD_SAME:  /* qat_fake_quant_avgpool takes the pools; another SAME point
                                  keeps its source's parameters */
    case QAT_ACT_METHOD_COUNT: break;
    }
    point_refresh(p);
    if (p->dynamic) { /* "token": every row on its own range, now (smooth.h) */
        const int rows = x->shape[0];
        float *sc = qat_tape_alloc(t, (size_t)rows * sizeof(float));
        int32_t *zp = qat_tape_alloc(t, (size_t)rows * sizeof(int32_t));
        if (!sc || !zp) return NULL;
        qat_fq_row_qparams(sc, zp, x->data, rows, x->n / (size_t)rows, p->qmin, p->qmax);
        return qat_fake_quant_ex(t, x, sc, zp, rows, 0, p->qmin, p->qmax, priv);
    }
    return qat_fake_quant_ex(t, x, &p->scale, &p->zp, 1, 0, p->qmin, p->qmax, priv);
}

static qat_tensor *weight_quant(fwd *f, qat_layer_quant *u, qat_tensor *wf) {
    const qat_quant_spec *sp = &f->q->spec;
    if ((sp->nf4 || sp->dq) && u->wbits == 4) /* quant/q4.h: groups over the flat weight */
        return qat_q4_fake(f->t, wf, sp->nf4 ? QAT_Q4_NF4 : QAT_Q4_INT4, u->wgroup, sp->dq);
    int qmax = qat_qmax_weight(u->wbits);
    if (u->wstep.data) {
        size_t per = wf->n / u->n_wscales;
        qat_tensor *y = qat_lsq(f->t, wf, &u->wstep, -qmax, qmax, qat_lsq_grad_scale(per, qmax));
        memcpy(u->wscale, u->wstep.data, u->n_wscales * sizeof(float));
        return y;
    }
    size_t inner = wf->n / (size_t)u->wrows;
    qat_fq_weight_scales(u->wscale, u->wzp, wf->data, u->wrows, inner, u->wgroup, qmax);
    return qat_fake_quant(f->t, wf, u->wscale, u->wzp, u->wrows, u->wgroup, -qmax, qmax);
}

/* The int32 bias grid: scale s_in * s_w[c], zero point 0 (spec, "Affine mapping"). */
static qat_tensor *bias_quant(fwd *f, qat_layer_quant *u, qat_tensor *b, const qat_qpoint *in) {
    int C = (int)b->n;
    float *s = qat_tape_alloc(f->t, (size_t)C * sizeof(float));
    int32_t *z = qat_tape_alloc(f->t, (size_t)C * sizeof(int32_t));
    if (!s || !z) return NULL;
    for (int c = 0; c < C; c++) {
        s[c] = in->scale * u->wscale[u->wrows == 1 ? 0 : c];
        z[c] = 0;
    }
    return qat_fake_quant(f->t, b, s, z, C, 0, -INT32_MAX, INT32_MAX);
}

/* x + v, v a constant per-channel vector (C), gradient passing straight to x. */
typedef struct addc_ctx {
    qat_tensor *x, *y;
} addc_ctx;
static void addc_backward(qat_tape *t, void *p) {
    addc_ctx *c = p;
    if (c->x->grad)
        for (size_t i = 0; i < c->x->n; i++) c->x->grad[i] += c->y->grad[i];
}
static qat_tensor *add_const(qat_tape *t, qat_tensor *x, const float *v) {
    if (!x) return NULL;
    bool grad = qat_tape_needs_grad(t, x, NULL, NULL);
    qat_tensor *y = qat_tape_tensor(t, x->ndim, x->shape, grad);
    if (!y) return NULL;
    for (size_t i = 0; i < x->n; i++) y->data[i] = x->data[i] + v[i];
    if (grad) {
        addc_ctx *c = qat_tape_record(t, addc_backward, sizeof *c, "add_const");
        if (!c) return NULL;
        *c = (addc_ctx){x, y};
    }
    return y;
}

/* Accumulates, per output channel, the mean of (float output - quantized output). */
static void bias_correction_accumulate(qat_layer_quant *u, const qat_tensor *yf, const qat_tensor *yq) {
    int N = yf->shape[0], C = yf->shape[1];
    size_t S = yf->n / ((size_t)N * C);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const float *a = yf->data + ((size_t)n * C + c) * S, *b = yq->data + ((size_t)n * C + c) * S;
            double d = 0;
            for (size_t s = 0; s < S; s++) d += (double)a[s] - b[s];
            u->bc_sum[c] += d / (double)S;
        }
    u->bc_count += N;
}

/* Whether this forward replaces requantized values with the integer model's (exact.h):
 * with fake quant on, outside calibration and bias correction, unless sim=float. */
static bool sim_on(const fwd *f) {
    const qat_quant *q = f->q;
    return q->fake_quant && !q->observing && !q->bias_correcting && q->spec.sim != QAT_SIM_FLOAT;
}

static qat_tensor *unit_forward(fwd *f, qat_layer_quant *u, qat_tensor *x, const qat_qpoint *in) {
    qat_tape *t = f->t;
    qat_quant *q = f->q;
    qat_layer *l = u->layer, *bn = u->bn;
    qat_tensor *w = &l->weight, *b = l->bias.data ? &l->bias : NULL;
    qat_tensor *gamma = bn ? &bn->weight : NULL, *beta = bn ? &bn->bias : NULL;
    float eps = bn ? bn->cfg.bn.eps : 0.0f;
    qat_tensor *wf = bn ? qat_bnfold_weight(t, w, gamma, bn->running_var.data, eps) : w;
    qat_tensor *wq = q->fake_quant ? weight_quant(f, u, wf) : wf;
    qat_tensor *y, *bf = NULL;
    bool folded = false; /* the integer model's form: BN folded with running statistics */
    if (bn && t->training && !f->bn_frozen) {
        /* Before the freeze: batch statistics, as float training (bnfold.h). */
        y = qat_layer_forward_with(l, t, x, wq, NULL);
        y = qat_bnfold_batchnorm(t, y, gamma, beta, bn->running_mean.data, bn->running_var.data,
                                 bn->cfg.bn.momentum, eps, b, true);
    } else {
        folded = true;
        bf = bn ? qat_bnfold_bias(t, b, gamma, beta, bn->running_mean.data, bn->running_var.data, eps) : b;
        if (bf && u->bias_corr.data) bf = add_const(t, bf, u->bias_corr.data);
        qat_tensor *bq = bf;
        /* a bias on the grid s_in s_w, unless s_in changes from row to row ("token") */
        if (bf && q->fake_quant && u->wgroup == 0 && !in->dynamic) bq = bias_quant(f, u, bf, in);
        y = qat_layer_forward_with(l, t, x, wq, bq);
        if (q->bias_correcting && u->bc_sum && y && x) {
            bool g = t->grad_enabled;
            t->grad_enabled = false;
            qat_tensor *yf = qat_layer_forward_with(l, t, x, wf, bf);
            t->grad_enabled = g;
            if (yf) bias_correction_accumulate(u, yf, y);
        }
    }
    qat_tensor *out = point_apply(f, &u->out, y, true);
    if (folded && out && wf && sim_on(f) && u->wgroup == 0 && !in->dynamic && !u->out.dynamic) {
        int lo, hi;
        qat_qpoint_clamp(&u->out, &lo, &hi);
        const qat_exact_unit_args a = {l, x, in->scale, wf->data, u->wscale, u->wrows, u->wbits,
                                       bf ? bf->data : NULL, u->out.scale, u->out.zp, lo, hi};
        qat_exact_unit(t, q->spec.sim, &a, out);
    }
    return out;
}

/* A lookup-table layer's output from the table the lowering makes (exact.h). */
static void exact_lut(const qat_layer *l, const qat_qpoint *p, const qat_tensor *x, const qat_qpoint *in,
                      qat_tensor *y) {
    qat_lut_fn fn;
    float alpha;
    if (!qat_lut_fn_of(l, &fn, &alpha) || !(in->scale > 0.0f) || !(p->scale > 0.0f)) return;
    int lo, hi;
    qat_qpoint_clamp(p, &lo, &hi);
    int8_t table[256];
    qat_lut_make(table, fn, alpha, in->scale, in->zp, p->scale, p->zp, lo, hi);
    qat_exact_lut(x, in->scale, in->zp, table, p->scale, p->zp, y);
}

static qat_tensor *seq_forward(fwd *f, qat_seq *s, qat_tensor *x, const qat_qpoint **cur) {
    for (int i = 0; i < s->n && x; i++) {
        qat_layer *l = &s->layers[i];
        qat_layer_quant *u = l->quant;
        const qat_layer_role role = qat_layer_role_of(l);
        if (role == QAT_LAYER_ROLE_WEIGHTED) {
            x = unit_forward(f, u, x, *cur);
            *cur = &u->out;
            i += u->n_fused;
        } else if (role == QAT_LAYER_ROLE_BLOCK) {
            const qat_qpoint *cb = *cur, *cs = *cur;
            qat_tensor *body = seq_forward(f, &l->body, x, &cb);
            qat_tensor *sc = l->shortcut.n ? seq_forward(f, &l->shortcut, x, &cs) : x;
            x = point_apply(f, &u->out, qat_add(f->t, body, sc), true);
            if (x && sim_on(f)) {
                int lo, hi;
                qat_qpoint_clamp(&u->out, &lo, &hi);
                qat_exact_add(f->q->spec.sim, body, cb->scale, sc, cs->scale, u->out.scale, u->out.zp, lo, hi, x);
            }
            *cur = &u->out;
            i += u->n_fused;
        } else if (role == QAT_LAYER_ROLE_AVERAGE && f->q->fake_quant) {
            /* The requantization of the integer kernel, from the integers of the input
             * (fake_quant.h): exact at ties, where rounding the float average is not. */
            qat_tensor *y = qat_layer_forward(l, f->t, x, false);
            int kh, kw, stride, pad;
            qat_layer_average_window(l, &kh, &kw, &stride, &pad);
            point_refresh(&u->out);
            x = qat_fake_quant_avgpool(f->t, y, x, u->out.scale, kh, kw, stride, pad);
            *cur = &u->out;
        } else {
            qat_tensor *xin = x;
            x = qat_layer_forward(l, f->t, x, false);
            if (u) {
                x = point_apply(f, &u->out, x, false);
                if (x && sim_on(f) && role == QAT_LAYER_ROLE_NONLINEAR) exact_lut(l, &u->out, xin, *cur, x);
                *cur = &u->out;
            }
        }
    }
    return x;
}

/* x / v, v a constant per-sample vector (one value per input of a sample): SmoothQuant's
 * input divisor. The gradient is divided likewise. */
typedef struct divf_ctx {
    qat_tensor *x, *y;
    const float *v;
} divf_ctx;
static void divf_backward(qat_tape *t, void *p) {
    divf_ctx *c = p;
    const size_t d = c->x->n / (size_t)c->x->shape[0];
    if (c->x->grad)
        for (size_t i = 0; i < c->x->n; i++) c->x->grad[i] += c->y->grad[i] / c->v[i % d];
}
static qat_tensor *div_features(qat_tape *t, qat_tensor *x, const float *v) {
    if (!x) return NULL;
    bool grad = qat_tape_needs_grad(t, x, NULL, NULL);
    qat_tensor *y = qat_tape_tensor(t, x->ndim, x->shape, grad);
    if (!y) return NULL;
    const size_t d = x->n / (size_t)x->shape[0];
    for (size_t i = 0; i < x->n; i++) y->data[i] = x->data[i] / v[i % d];
    if (grad) {
        divf_ctx *c = qat_tape_record(t, divf_backward, sizeof *c, "smooth_input");
        if (!c) return NULL;
        *c = (divf_ctx){x, y, v};
    }
    return y;
}

static qat_tensor *quant_forward(qat_model *m, qat_tape *t, qat_tensor *x) {
    qat_quant *q = m->quant;
    const qat_quant_spec *sp = &q->spec;
    bool qat_step = t->training && q->fake_quant && !q->observing;
    const long step = m->step; /* the trainer's count; forward never changes it */
    fwd f = {q, t, qat_step && (sp->freeze_observer < 0 || step < sp->freeze_observer),
             sp->freeze_bn >= 0 && step >= sp->freeze_bn};
    const qat_qpoint *cur = &q->input;
    if (q->in_smooth.data) x = div_features(t, x, q->in_smooth.data);
    qat_tensor *xin = x;
    x = point_apply(&f, &q->input, x, false);
    if (x && sim_on(&f) && q->input.method == QAT_ACT_METHOD_FIXED)
        qat_exact_input(xin, q->in_mean, q->in_std, q->input.scale, q->input.zp, x);
    return seq_forward(&f, &m->root, x, &cur);
}

/* ---- calibration ---- */

static qat_status point_observe(qat_qpoint *p, const qat_observer_config *cfg, qat_error *err) {
    if (p->method == QAT_ACT_METHOD_SAME || p->method == QAT_ACT_METHOD_FIXED) return QAT_STATUS_OK;
    p->obs = calloc(1, sizeof *p->obs);
    if (!p->obs) return qat_error_set(err, QAT_STATUS_NOMEM, "quant: out of memory");
    qat_status r = qat_observer_init(p->obs, cfg, err);
    if (r) {
        free(p->obs);
        p->obs = NULL;
    }
    return r;
}

qat_status qat_quant_calibrate_begin(qat_model *m, qat_error *err) {
    qat_quant *q = m->quant;
    if (!q) return qat_error_set(err, QAT_STATUS_INVALID_ARG, "calibrate: the model is not quantized");
    qat_status r = point_observe(&q->input, &q->spec.observer, err);
    for (int i = 0; !r && i < q->n_units; i++)
        if (q->units[i].layer) r = point_observe(&q->units[i].out, &q->spec.observer, err);
    q->observing = true;
    q->fake_quant = false;
    return r;
}

/* Sets a point's range, PACT alpha or LSQ step from its observer. */
static qat_status point_calibrated(qat_qpoint *p, const char *where, qat_error *err) {
    if (!p->obs) return QAT_STATUS_OK;
    /* data-parallel: the observer of every process's share together (observer.h) */
    if (qat_observer_merge_across(p->obs))
        return qat_error_set(err, QAT_STATUS_IO, "calibrate: %s: merging the observers across processes failed", where);
    float lo, hi;
    qat_observer_range(p->obs, p->qmin, p->qmax, false, &lo, &hi);
    bool seen = p->obs->seen;
    qat_observer_free(p->obs);
    free(p->obs);
    p->obs = NULL;
    if (!seen)
        return qat_error_set(err, QAT_STATUS_NUMERIC,
                             "calibrate: %s saw no finite values (too few samples, or NaN activations)",
                             where);
    p->range.data[0] = lo;
    p->range.data[1] = hi;
    if (p->method == QAT_ACT_METHOD_PACT) p->param.data[0] = hi > 0.0f ? hi : 1.0f;
    if (p->method == QAT_ACT_METHOD_LSQ) {
        float s;
        int32_t z;
        qat_qparams_from_range(lo, hi, p->qmin, p->qmax, false, &s, &z);
        p->param.data[0] = s;
    }
    point_refresh(p);
    return QAT_STATUS_OK;
}

/* The weights as the integer model will hold them: folded with the running statistics. */
float *qat_quant_folded_weights(const qat_layer_quant *u) {
    const qat_layer *l = u->layer, *bn = u->bn;
    size_t n = l->weight.n;
    float *wf = malloc(n * sizeof(float));
    if (!wf) return NULL;
    int C = l->weight.shape[0];
    size_t K = n / (size_t)C;
    for (int c = 0; c < C; c++) {
        float s = bn ? bn->weight.data[c] / sqrtf(bn->running_var.data[c] + bn->cfg.bn.eps) : 1.0f;
        for (size_t k = 0; k < K; k++) wf[(size_t)c * K + k] = l->weight.data[(size_t)c * K + k] * s;
    }
    return wf;
}

void qat_quant_folded_bias(const qat_layer_quant *u, float *out) {
    const qat_layer *l = u->layer, *bn = u->bn;
    int C = l->weight.shape[0];
    for (int c = 0; c < C; c++) {
        float b = l->bias.data ? l->bias.data[c] : 0.0f;
        if (bn) b = bn->bias.data[c] + (b - bn->running_mean.data[c]) * (bn->weight.data[c] / sqrtf(bn->running_var.data[c] + bn->cfg.bn.eps));
        out[c] = b + (u->bias_corr.data ? u->bias_corr.data[c] : 0.0f);
    }
}

/* LSQ weight steps: 2 mean|w| / sqrt(Qp) (Esser et al.), from the folded weights. */
static void init_weight_steps(qat_layer_quant *u) {
    float *wf = qat_quant_folded_weights(u);
    if (!wf) return;
    qat_lsq_init_scale(u->wstep.data, wf, (int)u->n_wscales, u->layer->weight.n / u->n_wscales,
                       qat_qmax_weight(u->wbits));
    free(wf);
}

qat_status qat_quant_calibrate_end(qat_model *m, qat_error *err) {
    qat_quant *q = m->quant;
    if (!q) return qat_error_set(err, QAT_STATUS_INVALID_ARG, "calibrate: the model is not quantized");
    qat_status r = point_calibrated(&q->input, "the input", err);
    for (int i = 0; i < q->n_units; i++) {
        qat_layer_quant *u = &q->units[i];
        if (!u->layer) continue;
        char where[QAT_NAME_LEN + 16];
        snprintf(where, sizeof where, "layer %s", u->layer->name);
        qat_status s = point_calibrated(&u->out, where, err);
        if (!r) r = s;
        if (u->wstep.data) init_weight_steps(u);
    }
    q->observing = false;
    q->fake_quant = true;
    qat_quant_refresh(m);
    return r;
}

void qat_quant_bias_correction_begin(qat_model *m) {
    qat_quant *q = m->quant;
    if (!q) return;
    for (int i = 0; i < q->n_units; i++) {
        qat_layer_quant *u = &q->units[i];
        if (!u->bc_sum) continue;
        memset(u->bc_sum, 0, u->bias_corr.n * sizeof(double));
        u->bc_count = 0;
    }
    q->bias_correcting = true;
}

void qat_quant_bias_correction_end(qat_model *m) {
    qat_quant *q = m->quant;
    if (!q) return;
    for (int i = 0; i < q->n_units; i++) {
        qat_layer_quant *u = &q->units[i];
        if (!u->bc_sum) continue;
        /* data-parallel: every process's share (one process: no-op) */
        if (qat_comm_sum_f64(u->bc_sum, u->bias_corr.n) || qat_comm_sum_f64(&u->bc_count, 1)) u->bc_count = 0;
        if (u->bc_count <= 0) continue;
        for (size_t c = 0; c < u->bias_corr.n; c++) u->bias_corr.data[c] += (float)(u->bc_sum[c] / u->bc_count);
    }
    q->bias_correcting = false;
}

/* ---- inspect ---- */

static const char *method_str(qat_act_method k) {
    switch (k) {
    case QAT_ACT_METHOD_OBSERVER: return "range";
    case QAT_ACT_METHOD_PACT: return "pact";
    case QAT_ACT_METHOD_LSQ: return "lsq";
    case QAT_ACT_METHOD_FIXED: return "fixed";
    case QAT_ACT_METHOD_SAME: return "same";
    case QAT_ACT_METHOD_COUNT: break;
    }
    return "?";
}

static void print_point(const qat_qpoint *p, FILE *f) {
    fprintf(f, "a%d %-5s scale %-11.5g zp %4d", p->bits, method_str(p->method), (double)p->scale, p->zp);
    if (p->method == QAT_ACT_METHOD_PACT) fprintf(f, "  alpha %.4g", (double)p->param.data[0]);
    else if (p->method == QAT_ACT_METHOD_OBSERVER)
        fprintf(f, "  range [%.4g, %.4g]", (double)p->range.data[0], (double)p->range.data[1]);
}

void qat_quant_print(const qat_model *m, FILE *f) {
    const qat_quant *q = m->quant;
    if (!q) return;
    char spec[256];
    qat_quant_spec_format(&q->spec, spec, sizeof spec);
    fprintf(f, "quantization: %s, %ld training steps taken\n", spec, m->step);
    fprintf(f, "%-12s %-16s %-26s %s\n", "layer", "fused", "weights", "output");
    fprintf(f, "%-12s %-16s %-26s ", "input", "", "");
    print_point(&q->input, f);
    fputc('\n', f);
    for (int i = 0; i < q->n_units; i++) {
        const qat_layer_quant *u = &q->units[i];
        if (!u->layer) continue;
        char fused[32], wdesc[64] = "";
        snprintf(fused, sizeof fused, "%s%s%s%s", qat_layer_kind_str(u->layer->kind), u->bn ? "+bn" : "",
                 u->out.act ? "+" : "", u->out.act ? qat_layer_kind_str(u->out.act->kind) : "");
        if (u->wscale) {
            float lo = INFINITY, hi = 0;
            for (size_t c = 0; c < u->n_wscales; c++) {
                lo = u->wscale[c] < lo ? u->wscale[c] : lo;
                hi = u->wscale[c] > hi ? u->wscale[c] : hi;
            }
            snprintf(wdesc, sizeof wdesc, "w%d x%zu %s%.3g..%.3g", u->wbits, u->n_wscales,
                     u->wstep.data ? "lsq " : "", (double)lo, (double)hi);
        }
        fprintf(f, "%-12s %-16s %-26s ", u->layer->name, fused, wdesc);
        print_point(&u->out, f);
        fputc('\n', f);
    }
}

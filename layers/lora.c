/* lora.c - low-rank adapters (lora.h). */
#include "layers/lora.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layers/init.h"

qat_status qat_lora_spec_parse(qat_lora_spec *s, const char *text, qat_error *err) {
    QAT_ASSERT(s != NULL);
    *s = (qat_lora_spec){0};
    if (!text || !*text)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "--lora: empty; expected r=R[,alpha=A], e.g. r=8,alpha=16");
    char buf[128];
    if (strlen(text) >= sizeof buf)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "--lora '%.40s...': too long", text);
    strcpy(buf, text);
    bool have_alpha = false;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *end = NULL;
        if (strncmp(tok, "r=", 2) == 0) {
            long r = strtol(tok + 2, &end, 10);
            if (end == tok + 2 || *end || r < 1 || r > QAT_LORA_MAX_RANK)
                return qat_error_set(err, QAT_STATUS_INVALID_ARG, "--lora %s: rank '%s' is not an integer in 1..%d",
                                     text, tok + 2, QAT_LORA_MAX_RANK);
            s->rank = (int)r;
        } else if (strncmp(tok, "alpha=", 6) == 0) {
            float a = strtof(tok + 6, &end);
            if (end == tok + 6 || *end || !(a > 0) || !isfinite(a))
                return qat_error_set(err, QAT_STATUS_INVALID_ARG, "--lora %s: alpha '%s' is not a finite number > 0",
                                     text, tok + 6);
            s->alpha = a;
            have_alpha = true;
        } else {
            return qat_error_set(err, QAT_STATUS_INVALID_ARG, "--lora %s: unknown '%s'; expected r=R[,alpha=A]", text, tok);
        }
    }
    if (s->rank == 0)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "--lora %s: no rank; expected r=R[,alpha=A]", text);
    if (!have_alpha) s->alpha = 2.0f * (float)s->rank;
    return QAT_STATUS_OK;
}

void qat_lora_spec_format(const qat_lora_spec *s, char *buf, size_t len) {
    snprintf(buf, len, "r=%d,alpha=%.9g", s->rank, (double)s->alpha);
}

static bool adaptable(const qat_layer *l) {
    return l->kind == QAT_LAYER_LINEAR || (l->kind == QAT_LAYER_CONV2D && l->cfg.conv.groups == 1);
}

/* Every layer of s (recursively), in graph order. */
static int walk(qat_seq *s, qat_layer **out, int n) {
    for (int i = 0; i < s->n; i++) {
        qat_layer *l = &s->layers[i];
        if (l->kind == QAT_LAYER_RESIDUAL) {
            n = walk(&l->body, out, n);
            n = walk(&l->shortcut, out, n);
        } else {
            if (out) out[n] = l;
            n++;
        }
    }
    return n;
}

void qat_lora_free(qat_model *m) {
    if (!m || !m->lora) return;
    for (int i = 0; i < m->lora->n; i++) m->lora->adapters[i].layer->lora = NULL;
    if (m->lora->base_free) m->lora->base_free(m->lora->base);
    free(m->lora->adapters);
    free(m->lora);
    m->lora = NULL;
}

qat_status qat_lora_attach(qat_model *m, const qat_lora_spec *s, qat_rng *rng, qat_error *err) {
    QAT_ASSERT(m && s && rng);
    if (!m->finalized) return qat_error_set(err, QAT_STATUS_INVALID_ARG, "LoRA: the model is not finalized");
    if (m->lora) return qat_error_set(err, QAT_STATUS_INVALID_ARG, "LoRA: the model already has adapters");
    if (m->quant)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "LoRA: the model is quantized; adapters train a float model (merge them, then quantize)");
    if (s->rank < 1 || s->rank > QAT_LORA_MAX_RANK || !(s->alpha > 0) || !isfinite(s->alpha))
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "LoRA: rank %d, alpha %g", s->rank, (double)s->alpha);
    const int nl = walk(&m->root, NULL, 0);
    qat_layer **layers = malloc((size_t)nl * sizeof *layers);
    qat_lora *lo = calloc(1, sizeof *lo);
    if (!layers || !lo) {
        free(layers);
        free(lo);
        return qat_error_set(err, QAT_STATUS_NOMEM, "LoRA: out of memory");
    }
    walk(&m->root, layers, 0);
    int na = 0;
    for (int i = 0; i < nl; i++) na += adaptable(layers[i]);
    if (na == 0) {
        free(layers);
        free(lo);
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "LoRA: the model has no linear layer or ungrouped convolution to adapt");
    }
    lo->adapters = calloc((size_t)na, sizeof *lo->adapters);
    if (!lo->adapters) {
        free(layers);
        free(lo);
        return qat_error_set(err, QAT_STATUS_NOMEM, "LoRA: out of memory");
    }
    lo->spec = *s;
    lo->scale = s->alpha / (float)s->rank;
    m->lora = lo;
    qat_status st = QAT_STATUS_OK;
    for (int i = 0; i < nl && !st; i++) {
        qat_layer *l = layers[i];
        if (l->kind != QAT_LAYER_LINEAR && l->kind != QAT_LAYER_CONV2D) continue;
        qat_model_set_frozen(m, &l->weight, true);
        if (!adaptable(l)) continue;
        qat_lora_adapter *a = &lo->adapters[lo->n++];
        a->layer = l;
        a->out = l->weight.shape[0];
        a->k = (int)(l->weight.n / (size_t)a->out);
        a->scale = lo->scale;
        snprintf(a->a_name, sizeof a->a_name, "%s.lora_A", l->name);
        snprintf(a->b_name, sizeof a->b_name, "%s.lora_B", l->name);
        qat_tensor_set_shape(&a->A, 2, (int[]){s->rank, a->k});
        qat_tensor_set_shape(&a->B, 2, (int[]){a->out, s->rank});
        a->A.name = a->a_name;
        a->B.name = a->b_name;
        if ((st = qat_model_add_param(m, &a->A)) || (st = qat_model_add_param(m, &a->B))) {
            st = qat_error_set(err, st, "%s", m->err.msg);
            break;
        }
        l->lora = a;
    }
    free(layers);
    if (st) return st;
    /* Initialise after every add (each add moves the flat arrays): A as a layer's weight,
     * B zero (qat_model_add_param zeroes it). */
    for (int i = 0; i < lo->n; i++)
        qat_init_kaiming_uniform(lo->adapters[i].A.data, lo->adapters[i].A.n, lo->adapters[i].k, sqrtf(5.0f), rng);
    return QAT_STATUS_OK;
}

typedef struct lora_ctx {
    qat_tensor *w, *a, *b, *y;
    int out, k, r;
    float scale;
} lora_ctx;

/* y = W + s B A: dW += dy (unless frozen), dA += s B^T dy, dB += s dy A^T. */
static void lora_backward(qat_tape *t, void *p) {
    (void)t;
    lora_ctx *c = p;
    const float *dy = c->y->grad;
    if (!c->w->frozen && c->w->grad)
        for (size_t i = 0; i < c->w->n; i++) c->w->grad[i] += dy[i];
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, c->r, c->k, c->out, c->scale, c->b->data, c->r, dy, c->k,
                1.0f, c->a->grad, c->k);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c->out, c->r, c->k, c->scale, dy, c->k, c->a->data, c->k,
                1.0f, c->b->grad, c->r);
}

qat_tensor *qat_lora_layer_weight(qat_tape *t, qat_layer *l) {
    qat_lora_adapter *a = l->lora;
    if (!a) return &l->weight;
    qat_tensor *y = qat_tape_tensor(t, l->weight.ndim, l->weight.shape, true);
    if (!y) return NULL;
    const float scale = a->scale;
    memcpy(y->data, l->weight.data, l->weight.n * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, a->out, a->k, a->A.shape[0], scale, a->B.data,
                a->A.shape[0], a->A.data, a->k, 1.0f, y->data, a->k);
    if (qat_tape_needs_grad(t, &l->weight, &a->A, &a->B)) {
        lora_ctx *c = qat_tape_record(t, lora_backward, sizeof *c, "lora");
        if (!c) return NULL;
        *c = (lora_ctx){.w = &l->weight, .a = &a->A, .b = &a->B, .y = y, .out = a->out, .k = a->k,
                        .r = a->A.shape[0], .scale = scale};
    }
    return y;
}

void qat_lora_merge(qat_model *m) {
    if (!m->lora) return;
    for (int i = 0; i < m->lora->n; i++) {
        qat_lora_adapter *a = &m->lora->adapters[i];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, a->out, a->k, a->A.shape[0], m->lora->scale, a->B.data,
                    a->A.shape[0], a->A.data, a->k, 1.0f, a->layer->weight.data, a->k);
        memset(a->B.data, 0, a->B.n * sizeof(float));
    }
}

void qat_lora_counts(const qat_model *m, size_t *adapter, size_t *trainable, size_t *frozen) {
    size_t ad = 0;
    for (int i = 0; m->lora && i < m->lora->n; i++) ad += m->lora->adapters[i].A.n + m->lora->adapters[i].B.n;
    const size_t tr = qat_model_n_trainable(m);
    if (adapter) *adapter = ad;
    if (trainable) *trainable = tr;
    if (frozen) *frozen = m->n_params - tr;
}

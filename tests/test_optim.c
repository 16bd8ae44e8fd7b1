/* test_optim.c - optimizers and learning-rate schedules (optim/).
 *
 *  - Three successive steps of SGD (plain, momentum, Nesterov + weight decay, dampening),
 *    Adam (with and without L2 decay) and AdamW (two decays, a changing lr) against
 *    torch.optim in tests/fixtures/optim.bin (written by gen_optim.py): every parameter
 *    after every step to |diff| <= 1e-6 + 1e-6 |expected|.
 *  - Small cases worked by hand (the first Adam step is lr * sign(g); momentum sums).
 *  - Saving an optimizer as a checkpoint does (kind name, config fields as key/values,
 *    step, state tensors by name) and restoring it into a fresh optimizer continues
 *    bit-identically.
 *  - Self-description: kind names and qat_optim_kind_parse; the field tables (names,
 *    order, types, offsets, get/set); the state layout equals what qat_optim_init
 *    builds (names, dtypes, sizes, placement) for every kind.
 *  - Bad configs are refused with a message naming the field.
 *  - Schedules: hand-computed values and PyTorch's StepLR, CosineAnnealingLR, LinearLR
 *    and SequentialLR(LinearLR, ...) sequences.
 */
#include "testutil.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim.h"
#include "optim/schedule.h"

#define NPARAM 150 /* gen_optim.py: (10, 14) weight + (10,) bias */
#define NSTEPS 3
#define NSCHED 20

/* Mirrors CONFIGS in tests/fixtures/gen_optim.py (the per-step lr comes from the
 * fixture). */
typedef struct optim_case {
    const char *name;
    qat_optim_config cfg;
} optim_case;

static optim_case make_case(const char *name, qat_optim_kind kind, double lr) {
    optim_case c = {name, qat_optim_config_default(kind)};
    c.cfg.lr = lr;
    return c;
}

static int optim_cases(optim_case *out) {
    int k = 0;
    out[k++] = make_case("sgd", QAT_OPTIM_SGD, 0.1);
    out[k] = make_case("sgd_momentum", QAT_OPTIM_SGD, 0.1);
    out[k++].cfg.momentum = 0.9;
    out[k] = make_case("sgd_nesterov_wd", QAT_OPTIM_SGD, 0.1);
    out[k].cfg.momentum = 0.9;
    out[k].cfg.nesterov = true;
    out[k++].cfg.weight_decay = 0.01;
    out[k] = make_case("sgd_dampening", QAT_OPTIM_SGD, 0.1);
    out[k].cfg.momentum = 0.9;
    out[k++].cfg.dampening = 0.1;
    out[k++] = make_case("adam", QAT_OPTIM_ADAM, 1e-3);
    out[k] = make_case("adam_wd", QAT_OPTIM_ADAM, 1e-3);
    out[k++].cfg.weight_decay = 0.01;
    out[k] = make_case("adam_betas", QAT_OPTIM_ADAM, 0.05);
    out[k].cfg.beta1 = 0.8;
    out[k].cfg.beta2 = 0.95;
    out[k].cfg.eps = 1e-6;
    out[k++].cfg.weight_decay = 0.05;
    out[k] = make_case("adamw", QAT_OPTIM_ADAMW, 1e-3);
    out[k++].cfg.weight_decay = 0.01;
    out[k] = make_case("adamw_wd0.1", QAT_OPTIM_ADAMW, 1e-3);
    out[k++].cfg.weight_decay = 0.1;
    out[k] = make_case("adamw_lrsched", QAT_OPTIM_ADAMW, 0.02);
    out[k++].cfg.weight_decay = 0.1;
    return k;
}

static void init_ok(qat_optim *o, const qat_optim_config *cfg, size_t n) {
    qat_error err = {0};
    if (qat_optim_init(o, cfg, n, &err) != QAT_STATUS_OK)
        fail_msg("qat_optim_init(%s) failed: %s", qat_optim_kind_str(cfg->kind), err.msg);
}

/* ---- against PyTorch ---------------------------------------------------------------- */

static void test_steps_match_pytorch(void **state) {
    (void)state;
    qat_fixture *fx = fixture_load("optim.bin");
    optim_case cases[16];
    int ncases = optim_cases(cases);
    const float *params0 = fixture_get(fx, "params0", NPARAM);
    const float *grads[NSTEPS];
    for (int k = 0; k < NSTEPS; k++) {
        char key[32];
        snprintf(key, sizeof key, "grad%d", k + 1);
        grads[k] = fixture_get(fx, key, NPARAM);
    }
    float params[NPARAM];
    for (int c = 0; c < ncases; c++) {
        char key[160], what[200];
        snprintf(key, sizeof key, "%s/lr", cases[c].name);
        const float *lrs = fixture_get(fx, key, NSTEPS);
        qat_optim o;
        init_ok(&o, &cases[c].cfg, NPARAM);
        memcpy(params, params0, sizeof params);
        double max_diff = 0;
        for (int k = 0; k < NSTEPS; k++) {
            qat_optim_step(&o, params, grads[k], lrs[k]);
            assert_int_equal(o.step, k + 1);
            snprintf(key, sizeof key, "%s/step%d", cases[c].name, k + 1);
            const float *want = fixture_get(fx, key, NPARAM);
            snprintf(what, sizeof what, "%s, params after step %d vs PyTorch", cases[c].name,
                     k + 1);
            assert_close(params, want, NPARAM, 1e-6, 1e-6, what);
            for (int i = 0; i < NPARAM; i++)
                max_diff = fmax(max_diff, fabs((double)params[i] - (double)want[i]));
        }
        print_message("  %-16s max |qat - torch| over %d steps: %.3g\n", cases[c].name, NSTEPS,
                      max_diff);
        qat_optim_free(&o);
    }
    fixture_free(fx);
}

/* ---- small cases by hand ------------------------------------------------------------ */

/* Step 1 of Adam: m = (1-b1) g, v = (1-b2) g^2, so after bias correction the update is
 * lr * g / (|g| + eps): lr * sign(g), and 0 where g = 0. With |g| = eps it is lr / 2;
 * eps added to the uncorrected sqrt(v) instead (TensorFlow's placement) would give
 * lr * 0.0316 / 1.0316 there. */
static void test_adam_first_step_is_lr_sign(void **state) {
    (void)state;
    qat_optim_config cfg = qat_optim_config_default(QAT_OPTIM_ADAM);
    float p[6] = {0, 1, -1, 0.5f, 2, 0};
    const float g[6] = {1, -2, 0, 1e-3f, 30, 1e-8f};
    const float want[6] = {-0.01f, 1.01f, -1, 0.49f, 1.99f, -0.005f};
    qat_optim o;
    init_ok(&o, &cfg, 6);
    qat_optim_step(&o, p, g, 0.01f);
    assert_close(p, want, 6, 0, 1e-6, "adam step 1 = lr * g / (|g| + eps)");
    assert_true(p[2] == -1.0f); /* exactly unchanged where g = 0 */
    qat_optim_free(&o);
}

/* With g = 1 every step and lr = 1: buf_1 = 1, buf_t = mu buf + (1 - damp). */
static void test_sgd_momentum_by_hand(void **state) {
    (void)state;
    const float g[1] = {1};
    struct {
        double momentum, dampening;
        bool nesterov;
        float want[3];
    } cases[] = {
        /* buf 1, 1.9, 2.71: p -1, -2.9, -5.61 */
        {0.9, 0.0, false, {-1.0f, -2.9f, -5.61f}},
        /* buf 1, 0.9 + 0.5 = 1.4, 1.26 + 0.5 = 1.76: p -1, -2.4, -4.16 */
        {0.9, 0.5, false, {-1.0f, -2.4f, -4.16f}},
        /* buf 1, 1.9, 2.71; d = 1 + 0.9 buf = 1.9, 2.71, 3.439: p -1.9, -4.61, -8.049 */
        {0.9, 0.0, true, {-1.9f, -4.61f, -8.049f}},
        /* no momentum: p -1, -2, -3 */
        {0.0, 0.0, false, {-1.0f, -2.0f, -3.0f}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        qat_optim_config cfg = qat_optim_config_default(QAT_OPTIM_SGD);
        cfg.momentum = cases[c].momentum;
        cfg.dampening = cases[c].dampening;
        cfg.nesterov = cases[c].nesterov;
        qat_optim o;
        init_ok(&o, &cfg, 1);
        float p[1] = {0}, got[3];
        for (int k = 0; k < 3; k++) {
            qat_optim_step(&o, p, g, 1.0f);
            got[k] = p[0];
        }
        char what[96];
        snprintf(what, sizeof what, "SGD momentum %g dampening %g nesterov %d, p after steps",
                 cases[c].momentum, cases[c].dampening, cases[c].nesterov);
        assert_close(got, cases[c].want, 3, 0, 1e-6, what);
        qat_optim_free(&o);
    }
}

/* AdamW with zero gradients only decays: p *= 1 - lr wd each step; Adam's L2 decay
 * instead enters through the gradient and so is normalised away (update ~ lr). */
static void test_adamw_decay_is_decoupled(void **state) {
    (void)state;
    const float g[2] = {0, 0};
    qat_optim_config cfg = qat_optim_config_default(QAT_OPTIM_ADAMW);
    cfg.weight_decay = 0.5;
    qat_optim o;
    init_ok(&o, &cfg, 2);
    float p[2] = {1, -4};
    qat_optim_step(&o, p, g, 0.1f);
    qat_optim_step(&o, p, g, 0.1f);
    const float want[2] = {0.9025f, -3.61f}; /* (1 - 0.05)^2 */
    assert_close(p, want, 2, 1e-7, 0, "AdamW decay with zero gradients");
    qat_optim_free(&o);

    cfg.kind = QAT_OPTIM_ADAM;
    init_ok(&o, &cfg, 2);
    float q[2] = {1, -4};
    qat_optim_step(&o, q, g, 0.1f);
    const float want_adam[2] = {0.9f, -3.9f}; /* g = wd p, step 1 moves by lr sign(p) */
    assert_close(q, want_adam, 2, 0, 1e-6, "Adam L2 decay with zero gradients");
    qat_optim_free(&o);
}

/* ---- state round trip --------------------------------------------------------------- */

/* What a checkpoint holds, saved and restored as a checkpoint does, knowing no kind:
 * through the kind's name, its field table and its tensor list only. */
typedef struct saved_optim {
    char kind[16];
    int n_fields;
    char field_name[8][24];
    double field_value[8];
    long step;
    int n_tensors;
    qat_optim_state_tensor tensors[QAT_OPTIM_MAX_STATE]; /* data: malloc'ed copies */
} saved_optim;

static void save_optim(saved_optim *sv, const qat_optim *o) {
    memset(sv, 0, sizeof *sv);
    snprintf(sv->kind, sizeof sv->kind, "%s", qat_optim_kind_str(o->cfg.kind));
    const qat_optim_field *f = qat_optim_fields(o->cfg.kind, &sv->n_fields);
    assert_in_range(sv->n_fields, 1, 8);
    for (int i = 0; i < sv->n_fields; i++) {
        snprintf(sv->field_name[i], sizeof sv->field_name[i], "%s", f[i].name);
        sv->field_value[i] = qat_optim_field_get(&o->cfg, &f[i]);
    }
    sv->step = o->step;
    sv->n_tensors = o->n_tensors;
    for (int i = 0; i < o->n_tensors; i++) {
        const qat_optim_state_tensor *t = &o->tensors[i];
        const size_t bytes = t->numel * qat_st_dtype_size(t->dtype);
        sv->tensors[i] = *t;
        sv->tensors[i].data = malloc(bytes);
        assert_non_null(sv->tensors[i].data);
        memcpy(sv->tensors[i].data, t->data, bytes);
    }
}

/* A fresh optimizer from sv for n parameters; the file's tensors must be exactly the
 * ones the config lays out (checked before the optimizer exists, as a reader does). */
static void restore_optim(qat_optim *o, const saved_optim *sv, size_t n) {
    qat_optim_kind kind;
    assert_true(qat_optim_kind_parse(sv->kind, &kind));
    qat_optim_config cfg = qat_optim_config_default(kind);
    for (int i = 0; i < sv->n_fields; i++) {
        const qat_optim_field *f = qat_optim_field_find(kind, sv->field_name[i]);
        if (!f) fail_msg("%s has no field \"%s\"", sv->kind, sv->field_name[i]);
        qat_optim_field_set(&cfg, f, sv->field_value[i]);
    }
    qat_optim_state_tensor want[QAT_OPTIM_MAX_STATE];
    const int k = qat_optim_state_layout(&cfg, n, want);
    assert_int_equal(k, sv->n_tensors);
    for (int i = 0; i < k; i++) {
        assert_string_equal(want[i].name, sv->tensors[i].name);
        assert_int_equal(want[i].dtype, sv->tensors[i].dtype);
        assert_int_equal(want[i].numel, sv->tensors[i].numel);
    }
    init_ok(o, &cfg, n);
    o->step = sv->step;
    for (int i = 0; i < o->n_tensors; i++)
        memcpy(o->tensors[i].data, sv->tensors[i].data,
               o->tensors[i].numel * qat_st_dtype_size(o->tensors[i].dtype));
}

static void saved_optim_free(saved_optim *sv) {
    for (int i = 0; i < sv->n_tensors; i++) free(sv->tensors[i].data);
    memset(sv, 0, sizeof *sv);
}

/* Run A: 5 steps uninterrupted. Run B: 2 steps, then saved as a checkpoint would save it
 * (save_optim) and restored into a fresh optimizer C (restore_optim), which takes the
 * other 3 steps from B's parameters. C must end bit-identical to A: parameters and every
 * state tensor. */
static void test_state_roundtrip_bit_identical(void **state) {
    (void)state;
    enum { N = 97, T = 5, T_SAVE = 2 };
    float grads[T][N], p0[N];
    fill_uniform(p0, N, -1, 1, 7);
    for (int k = 0; k < T; k++) fill_uniform(grads[k], N, -2, 2, 100 + (uint64_t)k);

    qat_optim_config cfgs[6];
    cfgs[0] = qat_optim_config_default(QAT_OPTIM_SGD);
    cfgs[0].momentum = 0.9;
    cfgs[0].nesterov = true;
    cfgs[0].weight_decay = 1e-3;
    cfgs[1] = qat_optim_config_default(QAT_OPTIM_SGD);
    cfgs[1].momentum = 0.8;
    cfgs[1].dampening = 0.2;
    cfgs[2] = qat_optim_config_default(QAT_OPTIM_ADAM);
    cfgs[2].weight_decay = 1e-2;
    cfgs[3] = qat_optim_config_default(QAT_OPTIM_ADAMW);
    cfgs[4] = qat_optim_config_default(QAT_OPTIM_SGD); /* no state at all */
    cfgs[4].weight_decay = 1e-2;
    cfgs[5] = qat_optim_config_default(QAT_OPTIM_ADAMW);
    cfgs[5].beta1 = 0.85;
    cfgs[5].beta2 = 0.99;
    cfgs[5].eps = 1e-7;
    cfgs[5].weight_decay = 0.1;
    const size_t want_state[6] = {N, N, 2 * N, 2 * N, 0, 2 * N};

    for (int c = 0; c < 6; c++) {
        const float lr = 0.03f;
        qat_optim a, b, r;
        float pa[N], pb[N];
        memcpy(pa, p0, sizeof pa);
        memcpy(pb, p0, sizeof pb);
        init_ok(&a, &cfgs[c], N);
        for (int k = 0; k < T; k++) qat_optim_step(&a, pa, grads[k], lr);

        init_ok(&b, &cfgs[c], N);
        assert_int_equal(b.mem_bytes, want_state[c] * sizeof(float));
        for (int k = 0; k < T_SAVE; k++) qat_optim_step(&b, pb, grads[k], lr);
        saved_optim sv;
        save_optim(&sv, &b);
        qat_optim_free(&b);

        restore_optim(&r, &sv, N);
        saved_optim_free(&sv);
        assert_int_equal(r.mem_bytes, want_state[c] * sizeof(float));
        for (int k = T_SAVE; k < T; k++) qat_optim_step(&r, pb, grads[k], lr);

        assert_int_equal(r.step, a.step);
        if (memcmp(pa, pb, sizeof pa) != 0) {
            for (int i = 0; i < N; i++)
                if (memcmp(&pa[i], &pb[i], sizeof(float)) != 0)
                    fail_msg("%s config %d: resumed params differ at [%d]: got %.9g, "
                             "uninterrupted %.9g",
                             qat_optim_kind_str(cfgs[c].kind), c, i, pb[i], pa[i]);
        }
        assert_int_equal(r.n_tensors, a.n_tensors);
        for (int i = 0; i < a.n_tensors; i++)
            if (memcmp(a.tensors[i].data, r.tensors[i].data,
                       a.tensors[i].numel * qat_st_dtype_size(a.tensors[i].dtype)) != 0)
                fail_msg("%s config %d: resumed %s differs from the uninterrupted run",
                         qat_optim_kind_str(cfgs[c].kind), c, a.tensors[i].name);
        qat_optim_free(&a);
        qat_optim_free(&r);
    }
}

static void test_state_layout(void **state) {
    (void)state;
    qat_optim o;
    qat_optim_config cfg = qat_optim_config_default(QAT_OPTIM_SGD);
    init_ok(&o, &cfg, 10);
    assert_int_equal(o.n_tensors, 0);
    assert_null(o.mem);
    qat_optim_free(&o);

    cfg.momentum = 0.5;
    init_ok(&o, &cfg, 10);
    assert_int_equal(o.n_tensors, 1);
    assert_string_equal(o.tensors[0].name, "momentum_buffer");
    assert_int_equal(o.tensors[0].numel, 10);
    assert_ptr_equal(o.tensors[0].data, o.mem);
    qat_optim_free(&o);

    cfg = qat_optim_config_default(QAT_OPTIM_ADAM);
    init_ok(&o, &cfg, 10);
    assert_int_equal(o.n_tensors, 2);
    assert_string_equal(o.tensors[0].name, "exp_avg");
    assert_string_equal(o.tensors[1].name, "exp_avg_sq");
    assert_ptr_equal(o.tensors[1].data, (float *)o.tensors[0].data + 10);
    assert_int_equal(o.step, 0);
    for (int t = 0; t < 2; t++)
        for (size_t i = 0; i < 10; i++) assert_true(((const float *)o.tensors[t].data)[i] == 0.0f);
    qat_optim_free(&o);
    assert_null(o.mem);
    qat_optim_free(&o); /* freeing twice is harmless */
}

/* qat_optim_state_layout is what a checkpoint reader checks a file against before an
 * optimizer exists; it must be exactly what qat_optim_init builds. Also checks the
 * expected lists by name, and the placement of the data in the one allocation. */
static void test_layout_matches_init(void **state) {
    (void)state;
    typedef struct layout_case {
        const char *what;
        qat_optim_config cfg;
        int n_tensors;
        const char *names[QAT_OPTIM_MAX_STATE];
        bool eight_bit; /* U8 codes (n) and F32 block maxima, alternating */
    } layout_case;
    layout_case cases[9] = {
        {"SGD", qat_optim_config_default(QAT_OPTIM_SGD), 0, {NULL}},
        {"SGD momentum", qat_optim_config_default(QAT_OPTIM_SGD), 1, {"momentum_buffer"}},
        {"SGD nesterov", qat_optim_config_default(QAT_OPTIM_SGD), 1, {"momentum_buffer"}},
        {"SGD wd", qat_optim_config_default(QAT_OPTIM_SGD), 0, {NULL}},
        {"Adam", qat_optim_config_default(QAT_OPTIM_ADAM), 2, {"exp_avg", "exp_avg_sq"}},
        {"AdamW", qat_optim_config_default(QAT_OPTIM_ADAMW), 2, {"exp_avg", "exp_avg_sq"}},
        {"SGD8", qat_optim_config_default(QAT_OPTIM_SGD8), 2, {"state1", "absmax1"}, true},
        {"Adam8", qat_optim_config_default(QAT_OPTIM_ADAM8), 4,
         {"state1", "absmax1", "state2", "absmax2"}, true},
        {"AdamW8", qat_optim_config_default(QAT_OPTIM_ADAMW8), 4,
         {"state1", "absmax1", "state2", "absmax2"}, true},
    };
    cases[1].cfg.momentum = 0.9;
    cases[2].cfg.momentum = 0.5;
    cases[2].cfg.nesterov = true;
    cases[3].cfg.weight_decay = 0.1;
    bool kind_seen[QAT_OPTIM_COUNT] = {false};
    const size_t sizes[] = {1, 10, 97, 40000};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        kind_seen[cases[c].cfg.kind] = true;
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const size_t n = sizes[si];
            qat_optim_state_tensor lay[QAT_OPTIM_MAX_STATE];
            for (int i = 0; i < QAT_OPTIM_MAX_STATE; i++)
                lay[i] = (qat_optim_state_tensor){.data = &lay[i]}; /* must come back NULL */
            const int k = qat_optim_state_layout(&cases[c].cfg, n, lay);
            if (k != cases[c].n_tensors)
                fail_msg("%s, n = %zu: layout has %d tensors, expected %d", cases[c].what, n, k,
                         cases[c].n_tensors);
            qat_optim o;
            init_ok(&o, &cases[c].cfg, n);
            assert_int_equal(o.n_tensors, k);
            size_t bytes = 0;
            for (int i = 0; i < k; i++) {
                const qat_optim_state_tensor *t = &o.tensors[i];
                assert_string_equal(lay[i].name, cases[c].names[i]);
                assert_string_equal(t->name, lay[i].name);
                const bool codes = cases[c].eight_bit && i % 2 == 0;
                const bool maxima = cases[c].eight_bit && i % 2 == 1;
                assert_int_equal(lay[i].dtype, codes ? QAT_ST_DTYPE_U8 : QAT_ST_DTYPE_F32);
                assert_int_equal(t->dtype, lay[i].dtype);
                assert_int_equal(lay[i].numel, maxima ? (n + 2047) / 2048 : n);
                assert_int_equal(t->numel, lay[i].numel);
                assert_null(lay[i].data);
                /* Inside the allocation, aligned, in order, not overlapping, zeroed. */
                const size_t es = qat_st_dtype_size(t->dtype);
                const char *at = t->data, *mem = o.mem;
                assert_non_null(at);
                assert_true(at >= mem + bytes);
                assert_int_equal((size_t)(at - mem) % es, 0);
                bytes = (size_t)(at - mem) + t->numel * es;
                assert_true(bytes <= o.mem_bytes);
                for (size_t j = 0; j < t->numel * es; j++)
                    if (at[j] != 0) fail_msg("%s: %s byte %zu is not zero", cases[c].what,
                                             t->name, j);
            }
            assert_int_equal(bytes, o.mem_bytes);
            if (k == 0) assert_null(o.mem);
            qat_optim_free(&o);
        }
    }
    for (int k = 0; k < QAT_OPTIM_COUNT; k++)
        if (!kind_seen[k]) fail_msg("no layout case for %s", qat_optim_kind_str(k));
}

static void test_kind_names(void **state) {
    (void)state;
    const char *const want[] = {"SGD", "Adam", "AdamW", "SGD8", "Adam8", "AdamW8"};
    assert_int_equal(QAT_OPTIM_COUNT, 6);
    for (int k = 0; k < QAT_OPTIM_COUNT; k++) {
        assert_string_equal(qat_optim_kind_str((qat_optim_kind)k), want[k]);
        /* The stored name, lower case and upper case all parse back. */
        char lower[16], upper[16];
        size_t i = 0;
        for (; want[k][i]; i++) {
            lower[i] = (char)tolower((unsigned char)want[k][i]);
            upper[i] = (char)toupper((unsigned char)want[k][i]);
        }
        lower[i] = upper[i] = '\0';
        const char *spellings[] = {want[k], lower, upper};
        for (int j = 0; j < 3; j++) {
            qat_optim_kind got = (qat_optim_kind)-1;
            if (!qat_optim_kind_parse(spellings[j], &got) || got != (qat_optim_kind)k)
                fail_msg("qat_optim_kind_parse(\"%s\") did not give %s", spellings[j], want[k]);
        }
    }
    qat_optim_kind got = QAT_OPTIM_ADAM;
    assert_true(qat_optim_kind_parse("aDaMw", &got) && got == QAT_OPTIM_ADAMW);
    const char *const bad[] = {"", "sg", "sgdm", "adam ", " adam", "adamw8bit", "Adam 8",
                               "adam16", "lion", "unknown", "SGD\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        got = QAT_OPTIM_ADAM;
        if (qat_optim_kind_parse(bad[i], &got)) fail_msg("\"%s\" parsed as a kind", bad[i]);
        assert_int_equal(got, QAT_OPTIM_ADAM); /* untouched */
    }
    assert_string_equal(qat_optim_kind_str(QAT_OPTIM_COUNT), "unknown");
    assert_string_equal(qat_optim_kind_str((qat_optim_kind)-1), "unknown");

    char buf[64];
    const char *list = "SGD, Adam, AdamW, SGD8, Adam8 or AdamW8";
    assert_int_equal(qat_optim_kind_names(buf, sizeof buf), strlen(list));
    assert_string_equal(buf, list);
    for (size_t size = 0; size <= strlen(list) + 1; size++) {
        memset(buf, 'x', sizeof buf);
        assert_int_equal(qat_optim_kind_names(size ? buf : NULL, size), strlen(list));
        if (size == 0) continue;
        assert_int_equal(strlen(buf), size - 1); /* truncated, always terminated */
        assert_memory_equal(buf, list, size - 1);
        assert_true(buf[size] == 'x'); /* nothing written past size */
    }
}

typedef struct want_field {
    const char *name;
    qat_optim_value type;
    size_t offset;
} want_field;

#define NUM(f) {#f, QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, f)}
#define BOOL(f) {#f, QAT_OPTIM_VALUE_BOOL, offsetof(qat_optim_config, f)}

/* The tables, in the order of the "optim" JSON that checkpoints already on disk have. */
static void test_field_tables(void **state) {
    (void)state;
    static const want_field sgd[] = {NUM(lr), NUM(momentum), NUM(dampening),
                                      NUM(weight_decay), BOOL(nesterov)};
    static const want_field adam[] = {NUM(lr), NUM(beta1), NUM(beta2), NUM(eps),
                                       NUM(weight_decay)};
    const struct {
        qat_optim_kind kind;
        const want_field *f;
        int n;
    } kinds[] = {
        {QAT_OPTIM_SGD, sgd, 5},
        {QAT_OPTIM_ADAM, adam, 5},
        {QAT_OPTIM_ADAMW, adam, 5},
        {QAT_OPTIM_SGD8, sgd, 5},
        {QAT_OPTIM_ADAM8, adam, 5},
        {QAT_OPTIM_ADAMW8, adam, 5},
    };
    assert_int_equal(sizeof kinds / sizeof kinds[0], QAT_OPTIM_COUNT);
    static const char *const all_names[] = {"lr",   "momentum", "dampening", "weight_decay",
                                            "nesterov", "beta1", "beta2", "eps"};
    for (int k = 0; k < QAT_OPTIM_COUNT; k++) {
        const qat_optim_kind kind = kinds[k].kind;
        assert_int_equal(kind, k);
        const char *kn = qat_optim_kind_str(kind);
        int n = -1;
        const qat_optim_field *f = qat_optim_fields(kind, &n);
        if (n != kinds[k].n) fail_msg("%s: %d fields, expected %d", kn, n, kinds[k].n);
        for (int i = 0; i < n; i++) {
            if (strcmp(f[i].name, kinds[k].f[i].name) != 0)
                fail_msg("%s field %d is \"%s\", expected \"%s\"", kn, i, f[i].name,
                         kinds[k].f[i].name);
            assert_int_equal(f[i].type, kinds[k].f[i].type);
            assert_int_equal(f[i].offset, kinds[k].f[i].offset);
            assert_ptr_equal(qat_optim_field_find(kind, f[i].name), &f[i]);
        }
        /* Names the kind does not use, wrong case, near misses. */
        for (size_t j = 0; j < sizeof all_names / sizeof all_names[0]; j++) {
            bool used = false;
            for (int i = 0; i < n; i++) used = used || strcmp(f[i].name, all_names[j]) == 0;
            if (!used) assert_null(qat_optim_field_find(kind, all_names[j]));
        }
        assert_null(qat_optim_field_find(kind, "LR"));
        assert_null(qat_optim_field_find(kind, "lr "));
        assert_null(qat_optim_field_find(kind, "kind"));
        assert_null(qat_optim_field_find(kind, ""));

        /* get/set: each field set to its own value reads back, lands in its member and
         * changes no other member. */
        const qat_optim_config base = qat_optim_config_default(kind);
        for (int i = 0; i < n; i++) {
            qat_optim_config c = base;
            const double v = f[i].type == QAT_OPTIM_VALUE_BOOL ? 1.0 : 0.0625 * (i + 1);
            assert_true(qat_optim_field_get(&c, &f[i]) != v);
            qat_optim_field_set(&c, &f[i], v);
            if (qat_optim_field_get(&c, &f[i]) != v)
                fail_msg("%s.%s: set %g, got %g", kn, f[i].name, v,
                         qat_optim_field_get(&c, &f[i]));
            qat_optim_config expect = base;
            if (f[i].type == QAT_OPTIM_VALUE_BOOL)
                *(bool *)((char *)&expect + f[i].offset) = true;
            else
                *(double *)((char *)&expect + f[i].offset) = v;
            assert_int_equal(c.kind, expect.kind);
            assert_true(c.lr == expect.lr && c.momentum == expect.momentum &&
                        c.dampening == expect.dampening && c.nesterov == expect.nesterov &&
                        c.weight_decay == expect.weight_decay && c.beta1 == expect.beta1 &&
                        c.beta2 == expect.beta2 && c.eps == expect.eps);
            if (f[i].type == QAT_OPTIM_VALUE_BOOL) {
                qat_optim_field_set(&c, &f[i], 0.0);
                assert_true(qat_optim_field_get(&c, &f[i]) == 0.0);
                qat_optim_field_set(&c, &f[i], -2.5); /* any nonzero is true */
                assert_true(qat_optim_field_get(&c, &f[i]) == 1.0);
            }
        }
        /* A config through its key/values into a default one comes back equal on every
         * field the kind uses, as in a checkpoint. */
        qat_optim_config a = base;
        a.lr = 0.0123;
        a.weight_decay = 3e-4;
        if (kind == QAT_OPTIM_SGD) {
            a.momentum = 0.875;
            a.nesterov = true;
        } else {
            a.beta1 = 0.8;
            a.beta2 = 0.95;
            a.eps = 1e-6;
        }
        qat_error err = {0};
        assert_int_equal(qat_optim_config_check(&a, &err), QAT_STATUS_OK);
        qat_optim_config b = qat_optim_config_default(kind);
        for (int i = 0; i < n; i++) qat_optim_field_set(&b, &f[i], qat_optim_field_get(&a, &f[i]));
        for (int i = 0; i < n; i++)
            if (qat_optim_field_get(&b, &f[i]) != qat_optim_field_get(&a, &f[i]))
                fail_msg("%s.%s did not survive the round trip", kn, f[i].name);
        assert_int_equal(b.kind, kind);
        assert_int_equal(qat_optim_config_check(&b, &err), QAT_STATUS_OK);
        assert_string_equal(f[0].name, "lr"); /* every kind's first field */
    }
}

#undef NUM
#undef BOOL

/* ---- configs ------------------------------------------------------------------------ */

static void test_config_defaults(void **state) {
    (void)state;
    qat_optim_config s = qat_optim_config_default(QAT_OPTIM_SGD);
    qat_optim_config a = qat_optim_config_default(QAT_OPTIM_ADAM);
    qat_optim_config w = qat_optim_config_default(QAT_OPTIM_ADAMW);
    assert_int_equal(s.kind, QAT_OPTIM_SGD);
    assert_true(s.momentum == 0 && s.dampening == 0 && !s.nesterov && s.weight_decay == 0);
    assert_int_equal(a.kind, QAT_OPTIM_ADAM);
    assert_true(a.beta1 == 0.9 && a.beta2 == 0.999 && a.eps == 1e-8 && a.weight_decay == 0);
    assert_true(a.lr == 1e-3);
    assert_int_equal(w.kind, QAT_OPTIM_ADAMW);
    assert_true(w.beta1 == 0.9 && w.beta2 == 0.999 && w.eps == 1e-8 && w.weight_decay == 0.01);
    qat_error err = {0};
    assert_int_equal(qat_optim_config_check(&s, &err), QAT_STATUS_OK);
    assert_int_equal(qat_optim_config_check(&a, &err), QAT_STATUS_OK);
    assert_int_equal(qat_optim_config_check(&w, &err), QAT_STATUS_OK);
}

typedef struct bad_config {
    qat_optim_kind kind;
    const char *field; /* the message must contain this */
    void (*spoil)(qat_optim_config *c);
} bad_config;

static void neg_lr(qat_optim_config *c) { c->lr = -0.1; }
static void nan_lr(qat_optim_config *c) { c->lr = NAN; }
static void neg_wd(qat_optim_config *c) { c->weight_decay = -1e-4; }
static void mom_one(qat_optim_config *c) { c->momentum = 1.0; }
static void mom_neg(qat_optim_config *c) { c->momentum = -0.5; }
static void damp_big(qat_optim_config *c) { c->dampening = 1.5; }
static void nesterov_no_mom(qat_optim_config *c) { c->nesterov = true; }
static void nesterov_damp(qat_optim_config *c) {
    c->nesterov = true;
    c->momentum = 0.9;
    c->dampening = 0.1;
}
static void beta1_one(qat_optim_config *c) { c->beta1 = 1.0; }
static void beta2_neg(qat_optim_config *c) { c->beta2 = -0.1; }
static void eps_zero(qat_optim_config *c) { c->eps = 0.0; }
static void eps_neg(qat_optim_config *c) { c->eps = -1e-8; }
static void bad_kind(qat_optim_config *c) { c->kind = (qat_optim_kind)42; }

static void test_bad_configs_refused(void **state) {
    (void)state;
    const bad_config cases[] = {
        {QAT_OPTIM_SGD, "lr = -0.1", neg_lr},
        {QAT_OPTIM_ADAM, "lr = nan", nan_lr},
        {QAT_OPTIM_SGD, "weight_decay = -0.0001", neg_wd},
        {QAT_OPTIM_ADAMW, "weight_decay = -0.0001", neg_wd},
        {QAT_OPTIM_SGD, "momentum = 1", mom_one},
        {QAT_OPTIM_SGD, "momentum = -0.5", mom_neg},
        {QAT_OPTIM_SGD, "dampening = 1.5", damp_big},
        {QAT_OPTIM_SGD, "nesterov needs momentum", nesterov_no_mom},
        {QAT_OPTIM_SGD, "dampening = 0.1", nesterov_damp},
        {QAT_OPTIM_ADAM, "beta1 = 1", beta1_one},
        {QAT_OPTIM_ADAMW, "beta2 = -0.1", beta2_neg},
        {QAT_OPTIM_ADAM, "eps = 0", eps_zero},
        {QAT_OPTIM_ADAMW, "eps = -1e-08", eps_neg},
        {QAT_OPTIM_SGD, "kind = 42", bad_kind},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qat_optim_config cfg = qat_optim_config_default(cases[i].kind);
        cases[i].spoil(&cfg);
        qat_error err = {0};
        qat_optim o;
        qat_status s = qat_optim_init(&o, &cfg, 8, &err);
        if (s != QAT_STATUS_INVALID_ARG)
            fail_msg("case %zu (%s): status %s, expected invalid argument", i, cases[i].field,
                     qat_status_str(s));
        if (!strstr(err.msg, cases[i].field))
            fail_msg("case %zu: message \"%s\" does not mention \"%s\"", i, err.msg,
                     cases[i].field);
        assert_null(o.mem);
        qat_optim_free(&o);
    }

    /* Fields the kind does not use are not checked: Adam ignores momentum. */
    qat_optim_config cfg = qat_optim_config_default(QAT_OPTIM_ADAM);
    cfg.momentum = 7;
    qat_error err = {0};
    assert_int_equal(qat_optim_config_check(&cfg, &err), QAT_STATUS_OK);

    /* No parameters. */
    qat_optim o;
    cfg = qat_optim_config_default(QAT_OPTIM_SGD);
    assert_int_equal(qat_optim_init(&o, &cfg, 0, &err), QAT_STATUS_INVALID_ARG);
    assert_non_null(strstr(err.msg, "n = 0"));
}

/* ---- schedules ---------------------------------------------------------------------- */

static void check_schedule(const qat_lr_schedule *s, float base, const long *steps,
                           const float *want, int n, const char *what) {
    qat_error err = {0};
    if (qat_lr_schedule_check(s, &err) != QAT_STATUS_OK) fail_msg("%s: %s", what, err.msg);
    float got[32];
    QAT_ASSERT(n <= 32);
    for (int i = 0; i < n; i++) got[i] = qat_lr_schedule_at(s, base, steps[i]);
    assert_close(got, want, (size_t)n, 1e-6, 1e-9, what);
}

static void test_schedules_by_hand(void **state) {
    (void)state;
    qat_lr_schedule constant = {0};
    const long st[] = {0, 1, 1000000};
    const float wc[] = {0.3f, 0.3f, 0.3f};
    check_schedule(&constant, 0.3f, st, wc, 3, "constant");

    qat_lr_schedule step = {.kind = QAT_LR_STEP, .step_size = 3, .gamma = 0.5};
    const long ss[] = {0, 2, 3, 5, 6, 9, 30};
    const float ws[] = {1, 1, 0.5f, 0.5f, 0.25f, 0.125f, 1.0f / 1024};
    check_schedule(&step, 1.0f, ss, ws, 7, "step(3, 0.5)");

    /* cos(pi t/10): t = 0, 5, 10 -> 1, 0, -1; periodic past t_max, as PyTorch. */
    qat_lr_schedule cosine = {.kind = QAT_LR_COSINE, .t_max = 10, .eta_min = 0.1};
    const long sc[] = {0, 5, 10, 15, 20, 2};
    const float wcos[] = {1.0f, 0.55f, 0.1f, 0.55f, 1.0f,
                          (float)(0.1 + 0.9 * (1 + cos(3.14159265358979323846 * 0.2)) / 2)};
    check_schedule(&cosine, 1.0f, sc, wcos, 6, "cosine(10, 0.1)");

    /* Warm-up over 4 steps from 0.25: 0.25, 0.4375, 0.625, 0.8125, then the main
     * schedule from u = 0 (t_max counts the steps after warm-up). */
    qat_lr_schedule wcosine = {.kind = QAT_LR_COSINE, .t_max = 10, .eta_min = 0.0,
                               .warmup_steps = 4, .warmup_start_factor = 0.25};
    const long sw[] = {0, 1, 2, 3, 4, 9, 14};
    const float ww[] = {0.5f, 0.875f, 1.25f, 1.625f, 2.0f, 1.0f, 0.0f};
    check_schedule(&wcosine, 2.0f, sw, ww, 7, "warm-up 4 from 0.25, then cosine(10)");

    qat_lr_schedule wstep = {.kind = QAT_LR_STEP, .step_size = 2, .gamma = 0.1,
                             .warmup_steps = 2, .warmup_start_factor = 0.0};
    const long sws[] = {0, 1, 2, 3, 4, 6};
    const float wws[] = {0.0f, 0.5f, 1.0f, 1.0f, 0.1f, 0.01f};
    check_schedule(&wstep, 1.0f, sws, wws, 6, "warm-up 2 from 0, then step(2, 0.1)");
}

static void test_schedules_match_pytorch(void **state) {
    (void)state;
    qat_fixture *fx = fixture_load("optim.bin");
    const float base = 0.1f; /* gen_optim.py BASE_LR */
    struct {
        const char *name;
        qat_lr_schedule s;
    } cases[] = {
        {"step", {.kind = QAT_LR_STEP, .step_size = 3, .gamma = 0.5}},
        {"cosine", {.kind = QAT_LR_COSINE, .t_max = 8, .eta_min = 1e-3}},
        {"linear_warmup", {.kind = QAT_LR_CONSTANT, .warmup_steps = 5,
                           .warmup_start_factor = 0.25}},
        {"warmup_cosine", {.kind = QAT_LR_COSINE, .t_max = 12, .eta_min = 0.0,
                           .warmup_steps = 4, .warmup_start_factor = 0.1}},
        {"warmup_step", {.kind = QAT_LR_STEP, .step_size = 4, .gamma = 0.1, .warmup_steps = 3,
                         .warmup_start_factor = 0.5}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char key[64], what[128];
        snprintf(key, sizeof key, "sched/%s", cases[c].name);
        const float *want = fixture_get(fx, key, NSCHED);
        qat_error err = {0};
        if (qat_lr_schedule_check(&cases[c].s, &err) != QAT_STATUS_OK)
            fail_msg("%s: %s", cases[c].name, err.msg);
        float got[NSCHED];
        for (long t = 0; t < NSCHED; t++) got[t] = qat_lr_schedule_at(&cases[c].s, base, t);
        snprintf(what, sizeof what, "schedule %s, lr at steps 0..%d vs PyTorch", cases[c].name,
                 NSCHED - 1);
        assert_close(got, want, NSCHED, 1e-6, 1e-9, what);
    }
    fixture_free(fx);
}

static void test_bad_schedules_refused(void **state) {
    (void)state;
    struct {
        qat_lr_schedule s;
        const char *field;
    } cases[] = {
        {{.kind = QAT_LR_STEP, .step_size = 0, .gamma = 0.5}, "step_size = 0"},
        {{.kind = QAT_LR_STEP, .step_size = 5, .gamma = 0.0}, "gamma = 0"},
        {{.kind = QAT_LR_STEP, .step_size = 5, .gamma = -2}, "gamma = -2"},
        {{.kind = QAT_LR_COSINE, .t_max = 0}, "t_max = 0"},
        {{.kind = QAT_LR_COSINE, .t_max = -3}, "t_max = -3"},
        {{.kind = QAT_LR_COSINE, .t_max = 10, .eta_min = -1e-3}, "eta_min = -0.001"},
        {{.kind = QAT_LR_CONSTANT, .warmup_steps = -1}, "warmup_steps = -1"},
        {{.kind = QAT_LR_CONSTANT, .warmup_steps = 5, .warmup_start_factor = 1.5},
         "warmup_start_factor = 1.5"},
        {{.kind = (qat_lr_kind)9}, "kind = 9"},
        {{.kind = QAT_LR_COUNT}, "kind = 3"},
        {{.kind = (qat_lr_kind)-1}, "kind = -1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qat_error err = {0};
        qat_status s = qat_lr_schedule_check(&cases[i].s, &err);
        if (s != QAT_STATUS_INVALID_ARG)
            fail_msg("case %zu (%s): status %s, expected invalid argument", i, cases[i].field,
                     qat_status_str(s));
        if (!strstr(err.msg, cases[i].field))
            fail_msg("case %zu: message \"%s\" does not mention \"%s\"", i, err.msg,
                     cases[i].field);
    }
    assert_string_equal(qat_lr_kind_str(QAT_LR_COUNT), "unknown");
    /* Unused fields are not checked; no warm-up ignores the start factor. */
    qat_lr_schedule ok = {.kind = QAT_LR_CONSTANT, .t_max = -1, .gamma = -1,
                          .warmup_start_factor = 7};
    qat_error err = {0};
    assert_int_equal(qat_lr_schedule_check(&ok, &err), QAT_STATUS_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steps_match_pytorch),
        cmocka_unit_test(test_adam_first_step_is_lr_sign),
        cmocka_unit_test(test_sgd_momentum_by_hand),
        cmocka_unit_test(test_adamw_decay_is_decoupled),
        cmocka_unit_test(test_state_roundtrip_bit_identical),
        cmocka_unit_test(test_state_layout),
        cmocka_unit_test(test_layout_matches_init),
        cmocka_unit_test(test_kind_names),
        cmocka_unit_test(test_field_tables),
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_bad_configs_refused),
        cmocka_unit_test(test_schedules_by_hand),
        cmocka_unit_test(test_schedules_match_pytorch),
        cmocka_unit_test(test_bad_schedules_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

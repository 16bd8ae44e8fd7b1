/* test_optim8.c - block-wise 8-bit quantization (optim/blockwise.h) and the 8-bit
 * optimizers SGD8, Adam8, AdamW8 (optim/optim8.c).
 *
 *  - The signed and unsigned dynamic maps equal tests/fixtures/optim8.bin, which
 *    gen_optim8.py writes by decoding each bit pattern of the paper's code (a second
 *    implementation), to the bit; their shape (ascending, 0 and 1, the signed map's
 *    symmetry, 10^-6 .. 1 in decades).
 *  - Quantizing a vector over 9 decades, on map points and between them, with zero and
 *    short blocks: codes and block maxima equal the fixture's brute-force nearest search;
 *    dequantizing gives map[code] * absmax; nearest, ties to the lower code, edge values.
 *  - Four steps of each kind (momentum, Nesterov + weight decay, Adam with L2 and other
 *    betas, AdamW with a changing lr) over 3 blocks: parameters after steps 1 and 4 and
 *    the final codes and maxima equal the fixture's, to the bit.
 *  - With exact state (every value a map point times its block maximum, m within the
 *    bound exact Adam keeps) a step equals the 32-bit kind's, to the bit: the update is the
 *    same arithmetic. Blocks restart at every tensor; the bound on m keeps a v rounded to
 *    zero from turning the step into m / eps.
 *  - The thread count changes nothing; state memory is 2 bytes per parameter (Adam8)
 *    plus 4 per 2048; a saved and restored optimizer continues bit-identically.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "autograd/parallel.h"
#include "optim/blockwise.h"
#include "optim/optim.h"

#define N 4200 /* gen_optim8.py */
#define NSTEPS 4

static qat_fixture *fx;

static int setup(void **state) {
    (void)state;
    fx = fixture_load("optim8.bin");
    return fx ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    fixture_free(fx);
    return 0;
}

static void same_codes(const uint8_t *got, const float *want, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if ((float)got[i] != want[i]) fail_msg("%s [%zu]: code %d, expected %g", what, i, got[i], (double)want[i]);
}

static void test_maps(void **state) {
    (void)state;
    const float *s = qat_dynamic_map(true), *u = qat_dynamic_map(false);
    assert_bits_equal(s, fixture_get(fx, "map_signed", 256), 256, "signed map");
    assert_bits_equal(u, fixture_get(fx, "map_unsigned", 256), 256, "unsigned map");
    for (int i = 1; i < 256; i++) {
        assert_true(s[i - 1] < s[i]);
        assert_true(u[i - 1] < u[i]);
    }
    assert_true(u[0] == 0.0f && u[255] == 1.0f && s[255] == 1.0f);
    assert_true(s[qat_dynamic_code(s, 0.0f)] == 0.0f);
    /* signed: 127 negatives mirror the positives below 1 */
    for (int i = 0; i < 127; i++) assert_true(s[i] == -s[254 - i]);
    /* smallest nonzero magnitudes: the one 10^-6 value, 0.55e-6, and 2 bins unsigned */
    assert_true(fabsf(s[128] - 0.55e-6f) < 1e-12f);
    assert_true(fabsf(u[1] - 0.325e-6f) < 1e-12f && fabsf(u[2] - 0.775e-6f) < 1e-12f);
    /* the largest below 1: midpoint of the last of 64 (signed) or 128 (unsigned) bins */
    assert_true(s[254] == (float)(1.0 - 0.9 / 128) && u[254] == (float)(1.0 - 0.9 / 256));
    assert_ptr_equal(qat_dynamic_map(true), s); /* one static table */
}

static void test_codes(void **state) {
    (void)state;
    const float *s = qat_dynamic_map(true), *u = qat_dynamic_map(false);
    for (int i = 0; i < 256; i++) {
        assert_int_equal(qat_dynamic_code(s, s[i]), i);
        assert_int_equal(qat_dynamic_code(u, u[i]), i);
    }
    assert_int_equal(qat_dynamic_code(s, -1.0f), 0);
    assert_int_equal(qat_dynamic_code(s, -5.0f), 0);
    assert_int_equal(qat_dynamic_code(s, 7.0f), 255);
    assert_int_equal(qat_dynamic_code(u, -0.5f), 0);
    assert_int_equal(qat_dynamic_code(s, NAN), 0);
    /* between two map values: the nearer; a tie to the lower (values chosen exact) */
    for (int i = 0; i < 255; i++) {
        float lo = u[i], hi = u[i + 1];
        float near_lo = lo + (hi - lo) * 0.25f, near_hi = lo + (hi - lo) * 0.75f;
        assert_int_equal(qat_dynamic_code(u, near_lo), i);
        assert_int_equal(qat_dynamic_code(u, near_hi), i + 1);
        float mid = lo + (hi - lo) * 0.5f;
        if (mid - lo == hi - mid) assert_int_equal(qat_dynamic_code(u, mid), i);
    }
}

static void test_blockwise_matches_reference(void **state) {
    (void)state;
    const float *x = fixture_get(fx, "q/x", N);
    const size_t nb = qat_blockq_count(N, QAT_BLOCKQ_SIZE);
    assert_int_equal(nb, 3);
    uint8_t codes[N];
    float absmax[3], back[N], ax[N];
    for (int sg = 0; sg < 2; sg++) {
        const float *map = qat_dynamic_map(sg == 1);
        const float *in = x;
        if (!sg) {
            for (size_t i = 0; i < N; i++) ax[i] = fabsf(x[i]);
            in = ax;
        }
        qat_blockq_quantize(codes, absmax, in, N, QAT_BLOCKQ_SIZE, map);
        same_codes(codes, fixture_get(fx, sg ? "q/signed_codes" : "q/unsigned_codes", N), N,
                   sg ? "signed codes" : "unsigned codes");
        assert_bits_equal(absmax, fixture_get(fx, sg ? "q/signed_absmax" : "q/unsigned_absmax", 3), 3,
                  sg ? "signed absmax" : "unsigned absmax");
        qat_blockq_dequantize(back, codes, absmax, N, QAT_BLOCKQ_SIZE, map);
        for (size_t i = 0; i < N; i++) {
            assert_true(back[i] == map[codes[i]] * absmax[i / QAT_BLOCKQ_SIZE]);
            /* nearest: within half the gap to the neighbouring map value on either side */
            const float a = absmax[i / QAT_BLOCKQ_SIZE];
            const int c = codes[i];
            const float gap = QAT_MAX(c > 0 ? map[c] - map[c - 1] : 0.0f, c < 255 ? map[c + 1] - map[c] : 0.0f);
            if (a > 0 && fabsf(in[i] / a - map[c]) > 0.5f * gap * 1.0001f)
                fail_msg("value %zu: %g came back %g (block max %g)", i, (double)in[i], (double)back[i],
                         (double)a);
        }
    }
    /* The negative block maximum -1.5 comes back as the map's lowest value times 1.5. */
    assert_true(x[17] == -1.5f && back[17] == qat_dynamic_map(true)[0] * 1.5f);
    /* A block of zeros: absmax 0, every value 0. */
    float zeros[100] = {0};
    qat_blockq_quantize(codes, absmax, zeros, 100, QAT_BLOCKQ_SIZE, qat_dynamic_map(true));
    assert_true(absmax[0] == 0.0f);
    qat_blockq_dequantize(back, codes, absmax, 100, QAT_BLOCKQ_SIZE, qat_dynamic_map(true));
    for (int i = 0; i < 100; i++) assert_true(back[i] == 0.0f);
}

/* Mirrors CONFIGS in gen_optim8.py. */
typedef struct case8 {
    const char *name;
    qat_optim_config cfg;
} case8;

static int cases8(case8 *out) {
    int k = 0;
    out[k] = (case8){"sgd8", qat_optim_config_default(QAT_OPTIM_SGD8)};
    out[k++].cfg.momentum = 0.9;
    out[k] = (case8){"sgd8_nesterov_wd", qat_optim_config_default(QAT_OPTIM_SGD8)};
    out[k].cfg.momentum = 0.9;
    out[k].cfg.nesterov = true;
    out[k++].cfg.weight_decay = 0.01;
    out[k] = (case8){"adam8_l2_betas", qat_optim_config_default(QAT_OPTIM_ADAM8)};
    out[k].cfg.beta1 = 0.8;
    out[k].cfg.beta2 = 0.95;
    out[k].cfg.eps = 1e-6;
    out[k++].cfg.weight_decay = 0.05;
    out[k] = (case8){"adamw8", qat_optim_config_default(QAT_OPTIM_ADAMW8)};
    out[k++].cfg.weight_decay = 0.1;
    return k;
}

static void init_ok(qat_optim *o, const qat_optim_config *cfg, size_t n) {
    qat_error err = {0};
    if (qat_optim_init(o, cfg, n, &err)) fail_msg("init %s: %s", qat_optim_kind_str(cfg->kind), err.msg);
}

/* Runs a case's 4 steps on `threads` threads; params into p. */
static void run_case(const case8 *c, float *p, qat_optim *o, int threads) {
    char name[64];
    const float *lr = fixture_get(fx, (snprintf(name, sizeof name, "%s/lr", c->name), name), NSTEPS);
    memcpy(p, fixture_get(fx, "params0", N), N * sizeof(float));
    qat_set_num_threads(threads);
    init_ok(o, &c->cfg, N);
    for (int t = 0; t < NSTEPS; t++) {
        snprintf(name, sizeof name, "grad%d", t + 1);
        qat_optim_step(o, p, fixture_get(fx, name, N), lr[t]);
        if (t == 0 || t == NSTEPS - 1) {
            char what[64];
            snprintf(what, sizeof what, "%s/step%d", c->name, t + 1);
            assert_bits_equal(p, fixture_get(fx, what, N), N, what);
        }
    }
    qat_set_num_threads(0);
}

static void test_steps_match_reference(void **state) {
    (void)state;
    case8 cs[8];
    const int nc = cases8(cs);
    static float p[N], p2[N];
    for (int c = 0; c < nc; c++) {
        qat_optim o, o2;
        run_case(&cs[c], p, &o, 1);
        for (int i = 0; i < o.n_tensors; i++) {
            char name[64];
            snprintf(name, sizeof name, "%s/%s", cs[c].name, o.tensors[i].name);
            if (o.tensors[i].dtype == QAT_ST_DTYPE_U8)
                same_codes(o.tensors[i].data, fixture_get(fx, name, N), N, name);
            else
                assert_bits_equal(o.tensors[i].data, fixture_get(fx, name, 3), 3, name);
        }
        /* two threads: the same bits */
        run_case(&cs[c], p2, &o2, 2);
        assert_memory_equal(p, p2, sizeof p);
        assert_memory_equal(o.mem, o2.mem, o.mem_bytes);
        qat_optim_free(&o);
        qat_optim_free(&o2);
    }
}

/* State whose every value is a map point times its block's maximum survives the round
 * trip exactly, so the step is the 32-bit kind's: prove it against SGD and AdamW. */
static void test_exact_state_is_the_32bit_step(void **state) {
    (void)state;
    enum { M = 3000 };
    static float p8[M], p32[M], g[M], m[M], v[M];
    fill_uniform(p8, M, -1, 1, 1);
    memcpy(p32, p8, sizeof p8);
    fill_uniform(g, M, -0.01f, 0.01f, 2);
    const float *s = qat_dynamic_map(true), *u = qat_dynamic_map(false);
    /* v from the map's upper half, so that |m| stays within the bound exact Adam keeps
     * (|m| <= 7.27 sqrt(v) at the default betas; optim8.c holds m to it) */
    for (int i = 0; i < M; i++) {
        m[i] = s[(i * 37) % 256] * 0.25f;
        v[i] = u[128 + (i * 11) % 128] * 0.5f;
    }
    m[5] = 0.25f, m[2050] = 0.25f; /* each block's maximum is exactly its scale */
    v[6] = 0.5f, v[2051] = 0.5f;
    for (int kind = 0; kind < 2; kind++) {
        qat_optim_config c8 = qat_optim_config_default(kind ? QAT_OPTIM_ADAMW8 : QAT_OPTIM_SGD8);
        qat_optim_config c32 = qat_optim_config_default(kind ? QAT_OPTIM_ADAMW : QAT_OPTIM_SGD);
        c32.momentum = c8.momentum;
        qat_optim o8, o32;
        init_ok(&o8, &c8, M);
        init_ok(&o32, &c32, M);
        o8.step = o32.step = 5; /* not the first step: the state is read */
        qat_blockq_quantize(o8.tensors[0].data, o8.tensors[1].data, m, M, QAT_BLOCKQ_SIZE, s);
        memcpy(o32.tensors[0].data, m, sizeof m);
        if (kind) {
            qat_blockq_quantize(o8.tensors[2].data, o8.tensors[3].data, v, M, QAT_BLOCKQ_SIZE, u);
            memcpy(o32.tensors[1].data, v, sizeof v);
        }
        qat_optim_step(&o8, p8, g, 0.01f);
        qat_optim_step(&o32, p32, g, 0.01f);
        assert_bits_equal(p8, p32, M, kind ? "AdamW8 vs AdamW" : "SGD8 vs SGD");
        qat_optim_free(&o8);
        qat_optim_free(&o32);
    }
}

static void test_memory_and_roundtrip(void **state) {
    (void)state;
    const size_t n = 421834; /* the reference CNN */
    qat_optim o;
    const qat_optim_config a8 = qat_optim_config_default(QAT_OPTIM_ADAM8);
    const qat_optim_config a32 = qat_optim_config_default(QAT_OPTIM_ADAM);
    qat_optim o32;
    init_ok(&o, &a8, n);
    init_ok(&o32, &a32, n);
    const size_t blocks = (n + 2047) / 2048;
    assert_true(o.mem_bytes >= 2 * n + 2 * 4 * blocks && o.mem_bytes <= 2 * n + 2 * 4 * blocks + 8);
    assert_int_equal(o32.mem_bytes, 8 * n);
    printf("state of Adam over %zu parameters: %zu bytes in 32 bits, %zu in 8 bits (%.3f bits per parameter)\n",
           n, o32.mem_bytes, o.mem_bytes, 8.0 * (double)o.mem_bytes / (double)n);
    qat_optim_free(&o);
    qat_optim_free(&o32);

    /* 5 steps straight, or 2, the state copied out and into a fresh optimizer (what a
     * checkpoint stores: kind, fields, step and the tensors), then 3: the same bits. */
    enum { M = 5000, T = 5, T_SAVE = 2 };
    static float pa[M], pb[M], grads[T][M];
    fill_uniform(pa, M, -1, 1, 3);
    memcpy(pb, pa, sizeof pa);
    for (int t = 0; t < T; t++) fill_uniform(grads[t], M, -0.1f, 0.1f, 10 + (uint64_t)t);
    const qat_optim_kind kinds[] = {QAT_OPTIM_SGD8, QAT_OPTIM_ADAM8, QAT_OPTIM_ADAMW8};
    for (int k = 0; k < 3; k++) {
        qat_optim_config c = qat_optim_config_default(kinds[k]);
        qat_optim a, b, r;
        fill_uniform(pa, M, -1, 1, 3);
        memcpy(pb, pa, sizeof pa);
        init_ok(&a, &c, M);
        init_ok(&b, &c, M);
        for (int t = 0; t < T; t++) qat_optim_step(&a, pa, grads[t], 0.01f);
        for (int t = 0; t < T_SAVE; t++) qat_optim_step(&b, pb, grads[t], 0.01f);
        init_ok(&r, &c, M);
        assert_int_equal(r.mem_bytes, b.mem_bytes);
        memcpy(r.mem, b.mem, b.mem_bytes);
        r.step = b.step;
        qat_optim_free(&b);
        for (int t = T_SAVE; t < T; t++) qat_optim_step(&r, pb, grads[t], 0.01f);
        assert_memory_equal(pa, pb, sizeof pa);
        assert_memory_equal(a.mem, r.mem, a.mem_bytes);
        qat_optim_free(&a);
        qat_optim_free(&r);
    }
}

/* Blocks restart at every tensor: one optimizer over three tensors equals three, one per
 * tensor, to the bit. */
static void test_blocks_per_tensor(void **state) {
    (void)state;
    const size_t len[3] = {100, 3000, 50};
    enum { M = 3150 };
    static float p[M], q[M], g[M];
    fill_uniform(p, M, -1, 1, 40);
    memcpy(q, p, sizeof p);
    qat_optim o, parts[3];
    const qat_optim_config c = qat_optim_config_default(QAT_OPTIM_ADAMW8);
    qat_error err = {0};
    assert_int_equal(qat_optim_init_tensors(&o, &c, len, 3, &err), QAT_STATUS_OK);
    assert_int_equal(o.n_blocks, 4);
    const size_t want[5] = {0, 100, 2148, 3100, 3150};
    for (int b = 0; b < 5; b++) assert_int_equal(o.blocks[b], want[b]);
    assert_int_equal(o.tensors[1].numel, 4);
    for (int k = 0; k < 3; k++) init_ok(&parts[k], &c, len[k]);
    for (int t = 0; t < 3; t++) {
        fill_uniform(g, M, -0.1f, 0.1f, 50 + (uint64_t)t);
        for (int i = 0; i < 100; i++) g[i] *= 100.0f; /* a tensor of large gradients */
        qat_optim_step(&o, p, g, 0.01f);
        for (size_t k = 0, at = 0; k < 3; at += len[k], k++) qat_optim_step(&parts[k], q + at, g + at, 0.01f);
    }
    assert_memory_equal(p, q, sizeof p);
    qat_optim_free(&o);
    for (int k = 0; k < 3; k++) qat_optim_free(&parts[k]);
    size_t zero = 0;
    assert_int_equal(qat_optim_init_tensors(&o, &c, &zero, 1, &err), QAT_STATUS_INVALID_ARG);
}

/* The bound on m: with v rounded to zero in a block whose other values are large and m
 * not, the step stays an ordinary Adam step (without the bound it was m / eps). */
static void test_first_moment_bound(void **state) {
    (void)state;
    enum { M = 64 };
    static float p[M], g[M];
    const qat_optim_config c = qat_optim_config_default(QAT_OPTIM_ADAM8);
    qat_optim o;
    init_ok(&o, &c, M);
    /* state: m[0] = 1e-3 of the block's largest m, v[0] = 0 after quantization */
    float m[M], v[M];
    for (int i = 0; i < M; i++) m[i] = 1.0f, v[i] = 1.0f;
    m[0] = 1e-3f;
    v[0] = 1e-9f; /* below the unsigned map's range: rounds to 0 */
    qat_blockq_quantize(o.tensors[0].data, o.tensors[1].data, m, M, QAT_BLOCKQ_SIZE, qat_dynamic_map(true));
    qat_blockq_quantize(o.tensors[2].data, o.tensors[3].data, v, M, QAT_BLOCKQ_SIZE, qat_dynamic_map(false));
    assert_true(qat_dynamic_map(false)[((uint8_t *)o.tensors[2].data)[0]] == 0.0f);
    o.step = 10;
    for (int i = 0; i < M; i++) p[i] = 0.0f, g[i] = 0.0f;
    qat_optim_step(&o, p, g, 1e-3f);
    /* with m held to 0, m' = 0.9 * 0 and the step is 0, not 1e-3 * 0.9e-3 / 1e-8 = 90 */
    assert_true(fabsf(p[0]) < 1e-6f);
    qat_optim_free(&o);
}

static void test_bad_configs(void **state) {
    (void)state;
    qat_optim o;
    qat_error err = {0};
    qat_optim_config c = qat_optim_config_default(QAT_OPTIM_SGD8);
    assert_true(c.momentum == 0.9);
    c.momentum = 0.0;
    assert_int_equal(qat_optim_init(&o, &c, 10, &err), QAT_STATUS_INVALID_ARG);
    assert_non_null(strstr(err.msg, "momentum = 0"));
    c = qat_optim_config_default(QAT_OPTIM_ADAM8);
    c.beta2 = 1.0;
    err = (qat_error){0};
    assert_int_equal(qat_optim_init(&o, &c, 10, &err), QAT_STATUS_INVALID_ARG);
    if (!strstr(err.msg, "beta2")) fail_msg("message: %s", err.msg);
    assert_non_null(strstr(err.msg, "Adam8"));
    assert_true(qat_optim_config_default(QAT_OPTIM_ADAMW8).weight_decay == 1e-2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_maps),
        cmocka_unit_test(test_codes),
        cmocka_unit_test(test_blockwise_matches_reference),
        cmocka_unit_test(test_steps_match_reference),
        cmocka_unit_test(test_exact_state_is_the_32bit_step),
        cmocka_unit_test(test_memory_and_roundtrip),
        cmocka_unit_test(test_blocks_per_tensor),
        cmocka_unit_test(test_first_moment_bound),
        cmocka_unit_test(test_bad_configs),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

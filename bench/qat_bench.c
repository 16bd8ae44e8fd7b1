/* qat_bench.c - the benchmark suite: qat and PyTorch side by side, as ratios.
 *
 *     qat_bench [--rounds N] [--seconds S] [--threads T] [--models cnn,mlp,dwcnn]
 *               [--no-torch] [--python PATH]
 *
 * For each model of examples/ (the reference CNN, the MLP, the DW-CNN) it measures
 *   - samples/s of an fp32 training step and of a QAT w8a8 training step (batch 64:
 *     forward, cross entropy, backward, SGD momentum);
 *   - inference samples/s at batch 256, fp32 (qat_model_forward) and int8 (the exported
 *     model on runtime/, images split across the threads);
 *   - batch-1 latency, fp32 and int8 (median);
 *   - the peak resident memory of each process;
 * and the same for PyTorch (bench/pytorch_bench.py, Debian's python3-torch, eager QAT,
 * int8 on the onednn and qnnpack engines). Every measurement runs in a fresh process (so
 * peak memory is its own), and the rounds alternate qat and PyTorch so that the drift of
 * a noisy machine hits both; the table gives medians over the rounds and the ratios.
 * It also measures the machine's sgemm peak (1024^3, with each OpenBLAS kernel set that
 * matters here) and reports what fraction of it the training step reaches.
 *
 * Internally `qat_bench --one MODEL WHAT THREADS SECONDS` makes one measurement and
 * prints it as one JSON line, in the format of pytorch_bench.py. Never run by ctest.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "autograd/parallel.h"
#include "blas.h"
#include "layers/loss.h"
#include "layers/model.h"
#include "layers/model_file.h"
#include "optim/optim.h"
#include "export/int8.h"
#include "quant/quant.h"
#include "runtime/batch.h"
#include "runtime/runtime.h"
#include "runtime/simd.h"

enum { TRAIN_BATCH = 64, INFER_BATCH = 256 };

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *what, const char *msg) {
    fprintf(stderr, "qat_bench: %s: %s\n", what, msg);
    exit(1);
}

/* The int8 path: QRT_ISA if set (as for the qat command; the library reads no
 * environment), else the best this CPU has; lowered to what the CPU has. */
static qrt_isa bench_isa(void) {
    const char *e = getenv("QRT_ISA");
    qrt_isa isa = qrt_isa_best();
    if (e && *e && !qrt_isa_parse(e, &isa)) die("QRT_ISA", "use portable, avx2 or avx512vnni");
    return qrt_isa_resolve(isa);
}

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- one measurement (--one) ------------------------------------------------------ */

static qat_model *load_model(const char *name, qat_rng *rng) {
    char path[4096];
    snprintf(path, sizeof path, "%s/examples/%s.model", QAT_SOURCE_DIR, name);
    qat_model *m = NULL;
    qat_error err = {0};
    if (qat_model_load_file(path, &m, &err) || qat_model_finalize(m, rng)) die(path, err.msg);
    return m;
}

/* Random inputs, normalised like Fashion-MNIST pixels would be. */
static float *random_inputs(qat_rng *rng, size_t n) {
    float *x = malloc(n * sizeof(float));
    if (!x) die("inputs", "out of memory");
    for (size_t i = 0; i < n; i++) x[i] = ((float)qat_rng_below(rng, 256) / 255.0f - 0.286f) / 0.353f;
    return x;
}

static size_t sample_numel(const qat_model *m) {
    size_t n = 1;
    for (int i = 0; i < m->in_ndim; i++) n *= (size_t)m->in_shape[i];
    return n;
}

static qat_tensor *input(qat_tape *t, const qat_model *m, int n, const float *x) {
    int shape[4] = {n, m->in_shape[0], m->in_shape[1], m->in_shape[2]};
    return qat_tape_input(t, 1 + m->in_ndim, shape, x);
}

/* Quantizes m (w8a8, the default spec) and calibrates it on x (n samples). */
static void quantize(qat_model *m, const float *x, int n) {
    qat_quant_spec spec = qat_quant_spec_default();
    qat_quant_input in = {true, 0.286f, 0.353f};
    qat_error err = {0};
    if (qat_quant_prepare(m, &spec, &in, &err) || qat_quant_calibrate_begin(m, &err))
        die("quantize", err.msg);
    qat_tape t;
    qat_tape_init(&t, 0);
    t.training = t.grad_enabled = false;
    if (!qat_model_forward(m, &t, input(&t, m, n, x))) die("calibrate", t.err.msg);
    qat_tape_free(&t);
    if (qat_quant_calibrate_end(m, &err)) die("calibrate", err.msg);
}

static double measure_train(qat_model *m, bool qat, double seconds, qat_rng *rng) {
    int D = (int)sample_numel(m);
    float *x = random_inputs(rng, (size_t)TRAIN_BATCH * D);
    int32_t y[TRAIN_BATCH];
    for (int i = 0; i < TRAIN_BATCH; i++) y[i] = (int32_t)qat_rng_below(rng, 10);
    if (qat) quantize(m, x, TRAIN_BATCH);
    qat_optim_config cfg = qat_optim_config_default(QAT_OPTIM_SGD);
    cfg.momentum = 0.9;
    qat_optim opt;
    if (qat_optim_init(&opt, &cfg, m->n_params, NULL)) die("optimizer", "out of memory");
    qat_tape t;
    qat_tape_init(&t, 0);
    long steps = 0;
    double t0 = 0;
    for (;;) {
        if (steps == 3) t0 = now(); /* after the warm-up: first-step allocations, caches */
        if (steps > 3 && now() - t0 >= seconds) break;
        qat_tape_reset(&t);
        qat_tensor *loss = qat_cross_entropy(&t, qat_model_forward(m, &t, input(&t, m, TRAIN_BATCH, x)), y);
        qat_model_zero_grad(m);
        if (qat_tape_backward(&t, loss)) die("train", t.err.msg);
        qat_optim_step(&opt, m->params, m->grads, 0.01f);
        steps++;
    }
    double rate = (double)(steps - 3) * TRAIN_BATCH / (now() - t0);
    qat_tape_free(&t);
    qat_optim_free(&opt);
    free(x);
    return rate;
}

/* Median latency in microseconds (batch == 1) or samples/s (batch > 1) of fn. */
typedef void (*infer_fn)(void *ctx, int batch);

static double measure_infer(infer_fn fn, void *ctx, int batch, double seconds) {
    for (int i = 0; i < (batch == 1 ? 20 : 2); i++) fn(ctx, batch); /* warm-up */
    size_t cap = 1 << 16, n = 0;
    double *times = malloc(cap * sizeof(double));
    double t0 = now();
    long calls = 0;
    while (now() - t0 < seconds) {
        double a = now();
        fn(ctx, batch);
        if (n < cap) times[n++] = now() - a;
        calls++;
    }
    double total = now() - t0, r;
    if (batch == 1) {
        qsort(times, n, sizeof(double), cmp_double);
        r = 1e6 * times[n / 2];
    } else {
        r = (double)calls * batch / total;
    }
    free(times);
    return r;
}

typedef struct fp32_ctx {
    qat_model *m;
    qat_tape t;
    const float *x;
} fp32_ctx;

static void fp32_infer(void *p, int batch) {
    fp32_ctx *c = p;
    qat_tape_reset(&c->t);
    if (!qat_model_forward(c->m, &c->t, input(&c->t, c->m, batch, c->x))) die("infer", c->t.err.msg);
}

typedef struct int8_ctx {
    qrt_model m;
    qrt_batch b;
    uint8_t *pixels;
    int *labels;
} int8_ctx;

static void int8_infer(void *p, int batch) {
    int8_ctx *c = p;
    qrt_batch_run(&c->b, c->pixels, batch, c->labels, NULL);
}

/* Exports m (quantized and calibrated) to a temporary file and loads it into c. */
static void int8_load(int8_ctx *c, const qat_model *m, int threads) {
    char path[] = "/tmp/qat_bench_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) die("mkstemp", strerror(errno));
    close(fd);
    qat_error err = {0};
    qat_export_report rep;
    if (qat_export_int8(m, path, NULL, 0, &rep, &err)) die("export", err.msg);
    FILE *f = fopen(path, "rb");
    if (!f) die(path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *file = malloc((size_t)len);
    if (!file || fread(file, 1, (size_t)len, f) != (size_t)len) die(path, "cannot read");
    fclose(f);
    remove(path);
    size_t ms = qrt_model_mem_size(file, (size_t)len);
    void *mem = malloc(ms ? ms : 1);
    qrt_error re;
    if (!mem || qrt_model_load(&c->m, file, (size_t)len, mem, ms, &re)) die("load", re.msg);
    qrt_model_set_isa(&c->m, bench_isa());
    /* The model keeps pointers into file and mem, the batch into its arenas, for the life
     * of the process. */
    if (threads < 1) threads = qat_num_threads(); /* --one by hand with 0: the pool's count */
    const size_t bs = qrt_batch_mem_size(&c->m, threads);
    void *arenas = malloc(bs);
    if (!arenas || qrt_batch_init(&c->b, &c->m, threads, arenas, bs)) die("batch", "out of memory");
}

/* The int8 conv kernel's peak: a 1x1 conv with C = OC = 512 over a 32x32 plane (a
 * 512 x 1024 x 512 matrix product), on the runtime's best path, on every thread at once
 * (weights shared, outputs and scratch per thread). GOP/s, 2 ops per multiply-add. */
typedef struct peak_ctx {
    const qrt_conv_params *p;
    const void *packed;
    const int8_t *in;
    double seconds;
    long calls;
} peak_ctx;

static void *peak_thread(void *arg) {
    peak_ctx *c = arg;
    int8_t *out = malloc((size_t)c->p->OC * c->p->OH * c->p->OW);
    void *scratch = malloc(qrt_conv2d_scratch_size(c->p) + 1);
    const qrt_isa isa = bench_isa();
    double t0 = now();
    while (now() - t0 < c->seconds) {
        qrt_conv2d_s8_isa(isa, out, c->in, c->packed, c->p, scratch);
        c->calls++;
    }
    free(out);
    free(scratch);
    return NULL;
}

static double peak_int8(int threads, double seconds) {
    static const qrt_conv_params p = {.C = 512, .H = 32, .W = 32, .OC = 512, .OH = 32, .OW = 32,
                                      .k = 1, .stride = 1, .pad = 0, .groups = 1, .z_in = -3,
                                      .z_out = 5, .act_min = -128, .act_max = 127};
    const size_t nin = (size_t)512 * 32 * 32;
    int8_t *in = malloc(nin), *w = malloc(512 * 512);
    int32_t b[512], mult[512], shift[512];
    qat_rng rng;
    qat_rng_init(&rng, 3);
    for (size_t i = 0; i < nin; i++) in[i] = (int8_t)((int)qat_rng_below(&rng, 256) - 128);
    for (size_t i = 0; i < 512 * 512; i++) w[i] = (int8_t)((int)qat_rng_below(&rng, 128) - 64);
    for (int c = 0; c < 512; c++) b[c] = 100 * c, mult[c] = 1500000000, shift[c] = -14;
    size_t psz = qrt_conv2d_pack_size(&p);
    void *pmem = malloc(psz ? psz : 1);
    const void *packed = qrt_conv2d_pack(pmem, w, b, mult, shift, &p);
    if (!packed) return NAN; /* no SIMD kernels in this build */
    peak_ctx c[QRT_BATCH_MAX_THREADS];
    pthread_t tid[QRT_BATCH_MAX_THREADS];
    if (threads > QRT_BATCH_MAX_THREADS) threads = QRT_BATCH_MAX_THREADS;
    for (int t = 0; t < threads; t++) c[t] = (peak_ctx){&p, packed, in, seconds, 0};
    double t0 = now();
    for (int t = 1; t < threads; t++) pthread_create(&tid[t], NULL, peak_thread, &c[t]);
    peak_thread(&c[0]);
    long calls = c[0].calls;
    for (int t = 1; t < threads; t++) pthread_join(tid[t], NULL), calls += c[t].calls;
    double r = 2.0 * 512 * 512 * 1024 * (double)calls / (now() - t0) / 1e9;
    free(in), free(w), free(pmem);
    return r;
}

static double measure(const char *name, const char *what, int threads, double seconds) {
    qat_rng rng;
    qat_rng_init(&rng, 7);
    qat_model *m = strncmp(what, "peak-", 5) ? load_model(name, &rng) : NULL;
    double r;
    if (!strcmp(what, "train-fp32") || !strcmp(what, "train-qat")) {
        r = measure_train(m, !strcmp(what, "train-qat"), seconds, &rng);
    } else if (!strcmp(what, "infer-fp32") || !strcmp(what, "lat-fp32")) {
        int batch = what[0] == 'i' ? INFER_BATCH : 1;
        fp32_ctx c = {.m = m, .x = random_inputs(&rng, (size_t)batch * sample_numel(m))};
        qat_tape_init(&c.t, 0);
        c.t.training = c.t.grad_enabled = false;
        r = measure_infer(fp32_infer, &c, batch, seconds);
        qat_tape_free(&c.t);
    } else if (!strcmp(what, "infer-int8") || !strcmp(what, "lat-int8")) {
        int batch = what[0] == 'i' ? INFER_BATCH : 1;
        float *x = random_inputs(&rng, (size_t)TRAIN_BATCH * sample_numel(m));
        quantize(m, x, TRAIN_BATCH);
        free(x);
        int8_ctx c;
        int8_load(&c, m, batch == 1 ? 1 : threads);
        size_t per = (size_t)qrt_model_input(&c.m)->numel;
        c.pixels = malloc(per * INFER_BATCH);
        c.labels = malloc(sizeof(int) * INFER_BATCH);
        for (size_t i = 0; i < per * INFER_BATCH; i++) c.pixels[i] = (uint8_t)qat_rng_below(&rng, 256);
        r = measure_infer(int8_infer, &c, batch, seconds);
    } else if (!strcmp(what, "peak-sgemm")) {
        enum { N = 1024 };
        float *a = malloc(sizeof(float) * N * N * 3);
        for (int i = 0; i < N * N * 3; i++) a[i] = (float)(i % 7) - 3.0f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1, a, N, a + N * N, N, 0,
                    a + 2 * N * N, N);
        double t0 = now();
        long calls = 0;
        while (now() - t0 < seconds) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1, a, N, a + N * N, N, 0,
                        a + 2 * N * N, N);
            calls++;
        }
        r = 2.0 * N * N * N * calls / (now() - t0) / 1e9;
    } else if (!strcmp(what, "peak-int8")) {
        r = peak_int8(threads, seconds);
    } else {
        die("--one", "unknown measurement");
    }
    return r;
}

/* ---- the suite ----------------------------------------------------------------------- */

enum { W_TRAIN_FP32, W_TRAIN_QAT, W_INFER_FP32, W_INFER_INT8, W_LAT_FP32, W_LAT_INT8, NW };
static const char *what_name[NW] = {"train-fp32", "train-qat", "infer-fp32",
                                    "infer-int8", "lat-fp32",  "lat-int8"};
/* PyTorch's int8 comes from two engines; the table compares with the faster one. */
enum { T_ONEDNN, T_QNNPACK, NT };
static const char *torch_engine[NT] = {"onednn", "qnnpack"};

enum { MAX_ROUNDS = 15 };

typedef struct samples {
    double v[MAX_ROUNDS], rss[MAX_ROUNDS];
    int n;
} samples;

static double median(const samples *s, bool rss) {
    if (!s->n) return NAN;
    double v[MAX_ROUNDS];
    memcpy(v, rss ? s->rss : s->v, sizeof(double) * (size_t)s->n);
    qsort(v, (size_t)s->n, sizeof(double), cmp_double);
    return s->n % 2 ? v[s->n / 2] : 0.5 * (v[s->n / 2 - 1] + v[s->n / 2]);
}

/* Runs cmd (a shell command line) and parses the JSON line it prints. */
static bool run_child(const char *cmd, double *value, double *rss) {
    FILE *p = popen(cmd, "r");
    if (!p) return false;
    char line[1024];
    bool ok = false;
    while (fgets(line, sizeof line, p)) {
        const char *v = strstr(line, "\"per_s\":");
        if (!v) v = strstr(line, "\"us\":");
        const char *r = strstr(line, "\"rss_mib\":");
        if (v && r) {
            *value = strtod(strchr(v, ':') + 1, NULL);
            *rss = strtod(strchr(r, ':') + 1, NULL);
            ok = true;
        }
    }
    return pclose(p) == 0 && ok;
}

static void record(samples *s, const char *cmd) {
    double v, rss;
    if (s->n < MAX_ROUNDS && run_child(cmd, &v, &rss)) {
        s->v[s->n] = v;
        s->rss[s->n] = rss;
        s->n++;
    } else {
        fprintf(stderr, "qat_bench: failed: %s\n", cmd);
    }
}

static size_t model_macs(const char *name) {
    qat_rng rng;
    qat_rng_init(&rng, 7);
    qat_model *m = load_model(name, &rng);
    size_t macs = 0;
    for (int i = 0; i < m->root.n; i++) macs += qat_layer_macs(&m->root.layers[i]);
    qat_model_free(m);
    return macs;
}

static void fmt_num(char *buf, size_t n, double v) {
    if (isnan(v)) snprintf(buf, n, "-");
    else if (v >= 100) snprintf(buf, n, "%.0f", v);
    else snprintf(buf, n, "%.1f", v);
}

/* One row: ours, PyTorch's, the ratio (better = higher), the target, and a verdict. */
static void row(const char *label, double ours, double theirs, bool lower_is_better,
                double target, const char *unit_note) {
    char a[32], b[32], c[32] = "-", d[48] = "";
    fmt_num(a, sizeof a, ours);
    fmt_num(b, sizeof b, theirs);
    double ratio = lower_is_better ? theirs / ours : ours / theirs;
    if (!isnan(ratio)) snprintf(c, sizeof c, "%.2fx", ratio);
    if (target > 0 && !isnan(ratio))
        snprintf(d, sizeof d, ">= %.2fx %s", target, ratio >= target ? "yes" : "NO");
    printf("  %-34s %10s %10s %8s   %s%s\n", label, a, b, c, d, unit_note);
}

int main(int argc, char **argv) {
    cli_blas_select_core(argv);
    (void)bench_isa(); /* a mistyped QRT_ISA stops here, not in a measurement */
    if (argc == 6 && !strcmp(argv[1], "--one")) {
        int threads = atoi(argv[4]);
        if (threads > 0) qat_set_num_threads(threads); /* the pool; OpenBLAS runs inside it */
        if (threads > 0 && !strcmp(argv[3], "peak-sgemm")) openblas_set_num_threads(threads);
        double v = measure(argv[2], argv[3], threads, atof(argv[5]));
        bool lat = !strncmp(argv[3], "lat-", 4);
        printf("{\"model\": \"%s\", \"what\": \"%s\", \"%s\": %.3f, \"rss_mib\": %.2f, \"core\": \"%s\"}\n",
               argv[2], argv[3], lat ? "us" : "per_s", v, peak_rss_mib(), cli_blas_core());
        return 0;
    }
    int rounds = 3, threads = 2;
    double seconds = 2.0;
    bool torch = true;
    const char *models = "cnn,mlp,dwcnn", *python = "/usr/bin/python3";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--rounds") && v) rounds = atoi(argv[++i]);
        else if (!strcmp(a, "--seconds") && v) seconds = atof(argv[++i]);
        else if (!strcmp(a, "--threads") && v) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--models") && v) models = argv[++i];
        else if (!strcmp(a, "--python") && v) python = argv[++i];
        else if (!strcmp(a, "--no-torch")) torch = false;
        else {
            fprintf(stderr,
                    "usage: qat_bench [--rounds N (1-%d)] [--seconds S] [--threads T] "
                    "[--models cnn,mlp,dwcnn] [--no-torch] [--python PATH]\n",
                    MAX_ROUNDS);
            return strcmp(a, "--help") ? 2 : 0;
        }
    }
    if (rounds < 1 || rounds > MAX_ROUNDS || seconds <= 0 || threads < 1) {
        fprintf(stderr, "qat_bench: need 1 <= rounds <= %d, seconds > 0, threads >= 1\n", MAX_ROUNDS);
        return 2;
    }
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) die("/proc/self/exe", "cannot find this program");
    self[sl] = 0;
    char script[4096], cmd[8192];
    snprintf(script, sizeof script, "%s/bench/pytorch_bench.py", QAT_SOURCE_DIR);
    if (torch) {
        snprintf(cmd, sizeof cmd, "%s -c 'import torch' >/dev/null 2>&1", python);
        if (system(cmd) != 0) {
            printf("note: PyTorch not found (%s -c 'import torch' failed): qat's side only.\n", python);
            torch = false;
        }
    }

    char list[256];
    snprintf(list, sizeof list, "%s", models);
    const char *names[8];
    int nm = 0;
    for (char *s = strtok(list, ","); s && nm < 8; s = strtok(NULL, ",")) {
        char path[4096];
        snprintf(path, sizeof path, "%s/examples/%s.model", QAT_SOURCE_DIR, s);
        if (access(path, R_OK) != 0) {
            fprintf(stderr, "qat_bench: --models: no model file %s\n", path);
            return 2;
        }
        names[nm++] = s;
    }

    static samples ours[8][NW], theirs[8][NW][NT], peak[3], peak8;
    /* OpenBLAS kernel sets compared side by side on this CPU: what it detects, and the
     * two that matter on AVX-512 machines. */
    const char *cores[3] = {"", "Haswell", "SkylakeX"};
    for (int r = 0; r < rounds; r++) {
        fprintf(stderr, "qat_bench: round %d of %d\n", r + 1, rounds);
        for (int c = 0; c < 3; c++) {
            snprintf(cmd, sizeof cmd, "%s%s%s '%s' --one - peak-sgemm %d %g", c ? "OPENBLAS_CORETYPE=" : "",
                     cores[c], c ? " " : "", self, threads, seconds / 2);
            record(&peak[c], cmd);
        }
        snprintf(cmd, sizeof cmd, "'%s' --one - peak-int8 %d %g", self, threads, seconds / 2);
        record(&peak8, cmd);
        for (int k = 0; k < nm; k++)
            for (int w = 0; w < NW; w++) {
                snprintf(cmd, sizeof cmd, "'%s' --one %s %s %d %g", self, names[k], what_name[w], threads,
                         seconds);
                record(&ours[k][w], cmd);
                if (!torch) continue;
                for (int e = 0; e < NT; e++) {
                    if (e > 0 && w != W_INFER_INT8 && w != W_LAT_INT8) break;
                    const char *tw = what_name[w];
                    char twbuf[64];
                    if (w == W_INFER_INT8 || w == W_LAT_INT8) {
                        snprintf(twbuf, sizeof twbuf, "%s-%s", tw, torch_engine[e]);
                        tw = twbuf;
                    }
                    snprintf(cmd, sizeof cmd, "%s '%s' %s %s %d %g 2>/dev/null", python, script, names[k], tw,
                             threads, seconds);
                    record(&theirs[k][w][e], cmd);
                }
            }
    }

    char host[256] = "?";
    gethostname(host, sizeof host);
    printf("\nqat_bench: %d rounds of %.1f s per measurement, %d threads, medians; ratios are "
           "qat / PyTorch (higher is better for qat)\n",
           rounds, seconds, threads);
    printf("OpenBLAS kernels: %s; sgemm 1024^3 peak: %.0f GFLOP/s (Haswell kernels %.0f, SkylakeX %.0f)\n",
           cli_blas_core(), median(&peak[0], false), median(&peak[1], false), median(&peak[2], false));
    double sgemm_peak = median(&peak[0], false), int8_peak = median(&peak8, false);
    printf("int8 runtime path: %s; its conv kernel's peak (1x1, 512 x 1024 x 512): %.0f GOP/s\n",
           qrt_isa_str(bench_isa()), int8_peak);
    for (int k = 0; k < nm; k++) {
        size_t macs = model_macs(names[k]);
        printf("\n%s (%.2f M MACs per sample)%34s %10s %8s\n", names[k], (double)macs / 1e6, "qat",
               torch ? "PyTorch" : "", torch ? "ratio" : "");
        double o[NW], t[NW];
        for (int w = 0; w < NW; w++) {
            o[w] = median(&ours[k][w], false);
            t[w] = median(&theirs[k][w][0], false);
        }
        /* int8: PyTorch's better engine */
        int best_e = 0, best_l = 0;
        for (int e = 1; e < NT; e++) {
            if (median(&theirs[k][W_INFER_INT8][e], false) > median(&theirs[k][W_INFER_INT8][best_e], false))
                best_e = e;
            if (median(&theirs[k][W_LAT_INT8][e], false) < median(&theirs[k][W_LAT_INT8][best_l], false))
                best_l = e;
        }
        t[W_INFER_INT8] = median(&theirs[k][W_INFER_INT8][best_e], false);
        t[W_LAT_INT8] = median(&theirs[k][W_LAT_INT8][best_l], false);
        char lab[96];
        /* Issue 6's targets: training and memory for the reference CNN, int8 for all. */
        bool cnn = !strcmp(names[k], "cnn");
        row("train fp32, batch 64 (samples/s)", o[W_TRAIN_FP32], t[W_TRAIN_FP32], false, cnn ? 1.5 : 0, "");
        row("train QAT w8a8, batch 64", o[W_TRAIN_QAT], t[W_TRAIN_QAT], false, cnn ? 2.0 : 0, "");
        double qr = o[W_TRAIN_FP32] / o[W_TRAIN_QAT];
        char tr[32] = "-", ti[32] = "-";
        if (torch) {
            snprintf(tr, sizeof tr, "%.2fx", t[W_TRAIN_FP32] / t[W_TRAIN_QAT]);
            snprintf(ti, sizeof ti, "%.2fx", t[W_INFER_INT8] / t[W_INFER_FP32]);
        }
        printf("  %-34s %9.2fx %10s %8s   %s\n", "  QAT time / fp32 time", qr, tr, "",
               cnn ? (qr <= 1.25 ? "<= 1.25x yes" : "<= 1.25x NO") : "");
        row("infer fp32, batch 256 (samples/s)", o[W_INFER_FP32], t[W_INFER_FP32], false, 0, "");
        snprintf(lab, sizeof lab, torch ? "infer int8, batch 256 [%s]" : "infer int8, batch 256", torch_engine[best_e]);
        row(lab, o[W_INFER_INT8], t[W_INFER_INT8], false, 1.2, "");
        printf("  %-34s %9.2fx %10s %8s   >= 2x %s\n", "  int8 / fp32 inference", o[W_INFER_INT8] / o[W_INFER_FP32],
               ti, "", o[W_INFER_INT8] / o[W_INFER_FP32] >= 2 ? "yes" : "NO");
        row("latency fp32, batch 1 (us)", o[W_LAT_FP32], t[W_LAT_FP32], true, 0, "");
        snprintf(lab, sizeof lab, torch ? "latency int8, batch 1 (us) [%s]" : "latency int8, batch 1 (us)",
                 torch_engine[best_l]);
        row(lab, o[W_LAT_INT8], t[W_LAT_INT8], true, 1.0, "");
        if (torch) {
            char e0[32], e1[32];
            fmt_num(e0, sizeof e0, median(&theirs[k][W_INFER_INT8][T_ONEDNN], false));
            fmt_num(e1, sizeof e1, median(&theirs[k][W_INFER_INT8][T_QNNPACK], false));
            printf("  %-34s %10s %10s onednn, %s qnnpack\n", "  PyTorch int8 engines (samples/s)", "", e0, e1);
        }
        double mo = median(&ours[k][W_TRAIN_FP32], true), mt = median(&theirs[k][W_TRAIN_FP32][0], true);
        double qo = median(&ours[k][W_TRAIN_QAT], true), qt = median(&theirs[k][W_TRAIN_QAT][0], true);
        char smt[32], sqt[32], sit[32];
        fmt_num(smt, sizeof smt, mt);
        fmt_num(sqt, sizeof sqt, qt);
        fmt_num(sit, sizeof sit, median(&theirs[k][W_INFER_INT8][best_e], true));
        printf("  %-34s %10.1f %10s %8s   %s\n", "peak RSS, train fp32 (MiB)", mo, smt, "",
               cnn ? (mo <= 64 ? "<= 64 MiB yes" : "<= 64 MiB NO") : "");
        printf("  %-34s %10.1f %10s\n", "peak RSS, train QAT (MiB)", qo, sqt);
        printf("  %-34s %10.1f %10s\n", "peak RSS, infer int8 (MiB)", median(&ours[k][W_INFER_INT8], true), sit);
        /* A training step is about 3 forward passes of MACs (forward, input gradient,
         * weight gradient); inference is one. */
        double gf = 6.0 * (double)macs * o[W_TRAIN_FP32] / 1e9;
        printf("  %-34s %10.1f GFLOP/s, %.0f%% of the sgemm peak\n", "train fp32 arithmetic", gf,
               100 * gf / sgemm_peak);
        double go = 2.0 * (double)macs * o[W_INFER_INT8] / 1e9;
        printf("  %-34s %10.1f GOP/s, %.0f%% of the int8 kernel's peak\n", "infer int8 arithmetic", go,
               100 * go / int8_peak);
    }
    printf("\nmachine: %s, %ld online CPUs; command: %s", host, sysconf(_SC_NPROCESSORS_ONLN), argv[0]);
    for (int i = 1; i < argc; i++) printf(" %s", argv[i]);
    printf("\n");
    return 0;
}

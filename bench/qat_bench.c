/* qat_bench.c - the benchmark suite: qat against its peers, side by side in one run.
 *
 *     qat_bench [--rounds N] [--seconds S] [--models cnn,mlp,dwcnn] [--model-dir DIR]
 *               [--load-limit F] [--no-torch] [--no-ort] [--python PATH] [--node PATH]
 *
 * Everything runs in long-lived processes: qat in this one, PyTorch in one
 * `pytorch_bench.py serve` child and ONNX Runtime in one `ort_serve.js` child, both
 * driven over pipes (one command per line, one JSON line back). After every item has
 * been built and warmed up, each of N rounds measures, for each item, qat and then every
 * peer back to back for S seconds each, so that the drift of a shared machine hits both.
 * Each measurement gives the per-call median (batch / median call time, or the median
 * latency) and the sustained rate (calls * batch / wall time, stalls included); the
 * report gives the medians of both over the rounds, the best peer of each item and the
 * ratio qat / peer (higher is better for qat; for latencies peer / qat).
 *
 * Items: CNN fp32 and QAT w8a8 training steps at batch 64; int8 inference at batch 256
 * and batch-1 latency of the CNN, the MLP and the DW-CNN (examples/{cnn,mlp,dwcnn}.model). The int8
 * models are exported once by bench/fair_models.sh into --model-dir (default
 * fair-models/ beside this program): qat's runtime runs MODEL.int8, ONNX Runtime the
 * ONNX export of the same quantized checkpoint (MODEL.onnx) and of its float checkpoint
 * (MODEL.fp32.onnx). PyTorch builds the same networks (pytorch_bench.py) and runs them in
 * eager mode and traced + frozen, NCHW and channels_last, int8 on onednn and qnnpack.
 *
 * Load: every round reads /proc/stat (steal included) and the CPU time of this process,
 * of the children it has waited for and of the peers (/proc/PID/stat); what is left is
 * other processes' use of the CPUs. A round is busy if others used more than --load-limit
 * (default 0.10) of one CPU on average over it; if more than a third of the rounds are
 * busy the report gives the numbers but no ratios.
 *
 * Also: the sgemm peak (1024^3, OpenBLAS's detected kernels, 2 threads) and the int8
 * kernel's peak, each in a child (`qat_bench --one - peak-sgemm|peak-int8 T S`); the peak
 * resident memory of a child doing CNN training steps at batch 64 (`qat_bench
 * --rss-child fp32|qat STEPS`). Never run by ctest.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
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
#include "quant/quant.h"
#include "runtime/batch.h"
#include "runtime/runtime.h"
#include "runtime/simd.h"
#include "bench_util.h"

enum { TRAIN_BATCH = 64, INFER_BATCH = 256, THREADS = 2 };

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

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of v[0..n) (sorts v); NAN if n == 0. */
static double median_of(double *v, size_t n) {
    if (!n) return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- qat's side --------------------------------------------------------------------- */

static qat_model *load_model(const char *src_dir, const char *name, qat_rng *rng) {
    char path[4096];
    snprintf(path, sizeof path, "%s/examples/%s.model", src_dir, name);
    qat_model *m = NULL;
    qat_error err = {0};
    if (qat_model_load_file(path, &m, &err) || qat_model_finalize(m, rng)) die(path, err.msg);
    return m;
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

/* Pixels normalised as `qat train` normalises Fashion-MNIST. */
static float *normalise(const uint8_t *px, size_t n) {
    float *x = malloc(n * sizeof(float));
    if (!x) die("inputs", "out of memory");
    for (size_t i = 0; i < n; i++) x[i] = ((float)px[i] / 255.0f - 0.286f) / 0.353f;
    return x;
}

/* Quantizes m (w8a8, the default spec) and calibrates it on x (n samples). */
static void quantize(qat_model *m, const float *x, int n) {
    qat_quant_spec spec = qat_quant_spec_default();
    /* The float simulation, as PyTorch's QAT computes: the same work on both sides (the
     * default sim=exact adds an integer GEMM per folded unit; docs/quant.md). */
    spec.sim = QAT_SIM_FLOAT;
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

/* A training step as `qat train` takes it: forward, cross entropy, backward, SGD with
 * momentum, batch 64 (bench/bench_train.c's step). */
typedef struct train_ctx {
    qat_model *m;
    qat_optim opt;
    qat_tape t;
    float *x;
    int32_t y[TRAIN_BATCH];
} train_ctx;

static void train_init(train_ctx *c, const char *src_dir, const char *name, bool qat, const uint8_t *px) {
    qat_rng rng;
    qat_rng_init(&rng, 7);
    c->m = load_model(src_dir, name, &rng);
    c->x = normalise(px, (size_t)TRAIN_BATCH * sample_numel(c->m));
    for (int i = 0; i < TRAIN_BATCH; i++) c->y[i] = (int32_t)qat_rng_below(&rng, 10);
    if (qat) quantize(c->m, c->x, TRAIN_BATCH);
    qat_optim_config cfg = qat_optim_config_default(QAT_OPTIM_SGD);
    cfg.momentum = 0.9;
    if (qat_optim_init(&c->opt, &cfg, c->m->n_params, NULL)) die("optimizer", "out of memory");
    qat_tape_init(&c->t, 0);
}

static void train_step(void *p) {
    train_ctx *c = p;
    qat_tape_reset(&c->t);
    qat_tensor *loss = qat_cross_entropy(&c->t, qat_model_forward(c->m, &c->t, input(&c->t, c->m, TRAIN_BATCH, c->x)), c->y);
    qat_model_zero_grad(c->m);
    if (qat_tape_backward(&c->t, loss)) die("train", c->t.err.msg);
    qat_optim_step(&c->opt, c->m->params, c->m->grads, 0.01f);
}

/* The int8 runtime on an exported file: batch 256 on THREADS threads (qrt_batch_run),
 * or one image on the calling thread (qrt_run), as bench/bench_qrt_file.c runs it. */
typedef struct int8_ctx {
    qrt_model m;
    qrt_batch b;
    void *arena;
    const uint8_t *pixels;
    int labels[INFER_BATCH];
    int batch;
} int8_ctx;

static void int8_init(int8_ctx *c, const char *path, const uint8_t *px, int batch) {
    size_t len;
    uint8_t *file = bench_read_file(path, &len); /* kept: the model points into it */
    if (!file) die(path, "cannot read");
    size_t ms = qrt_model_mem_size(file, len);
    void *mem = malloc(ms ? ms : 1);
    qrt_error re;
    if (!mem || qrt_model_load(&c->m, file, len, mem, ms, &re)) die(path, re.msg);
    qrt_model_set_isa(&c->m, bench_isa());
    c->pixels = px;
    c->batch = batch;
    c->arena = malloc(qrt_arena_size(&c->m));
    const size_t bs = qrt_batch_mem_size(&c->m, THREADS);
    void *arenas = malloc(bs);
    if (!c->arena || !arenas || qrt_batch_init(&c->b, &c->m, THREADS, arenas, bs)) die("batch", "out of memory");
}

static void int8_call(void *p) {
    int8_ctx *c = p;
    if (c->batch == 1) qrt_run(&c->m, c->pixels, c->arena, NULL, c->labels);
    else qrt_batch_run(&c->b, c->pixels, c->batch, c->labels, NULL);
}

/* ---- the machine's peaks (--one) and the memory child (--rss-child) ------------------ */

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

static double peak_sgemm(double seconds) {
    enum { N = 1024 };
    float *a = malloc(sizeof(float) * N * N * 3);
    if (!a) die("sgemm", "out of memory");
    for (int i = 0; i < N * N * 3; i++) a[i] = (float)(i % 7) - 3.0f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1, a, N, a + N * N, N, 0, a + 2 * N * N, N);
    double t0 = now();
    long calls = 0;
    while (now() - t0 < seconds) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, N, N, 1, a, N, a + N * N, N, 0, a + 2 * N * N,
                    N);
        calls++;
    }
    double r = 2.0 * N * N * N * calls / (now() - t0) / 1e9;
    free(a);
    return r;
}

/* ---- peers: long-lived children over pipes ------------------------------------------ */

typedef struct peer {
    const char *name;
    pid_t pid;
    FILE *to, *from;
    bool alive;
} peer;

/* Starts argv[0] with stdin and stdout on pipes; env: NAME, VALUE, NAME, VALUE, ...,
 * NULL, set in the child only. Reads the greeting line. */
static bool peer_start(peer *p, const char *name, char *const argv[], const char *const env[]) {
    int in[2], out[2];
    *p = (peer){.name = name};
    if (pipe(in) || pipe(out)) return false;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return false;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        for (int i = 0; env && env[i]; i += 2) setenv(env[i], env[i + 1], 1);
        execv(argv[0], argv);
        fprintf(stderr, "qat_bench: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(in[0]), close(out[1]);
    p->pid = pid;
    p->to = fdopen(in[1], "w");
    p->from = fdopen(out[0], "r");
    char line[4096];
    p->alive = p->to && p->from && fgets(line, sizeof line, p->from) && strstr(line, "\"ok\"");
    if (p->alive) fprintf(stderr, "qat_bench: %s: %s", name, line);
    return p->alive;
}

static void peer_stop(peer *p) {
    if (!p->pid) return;
    if (p->alive) fprintf(p->to, "quit\n"), fflush(p->to);
    if (p->to) fclose(p->to);
    if (p->from) fclose(p->from);
    waitpid(p->pid, NULL, 0); /* its CPU time then counts in this process's cutime */
    p->pid = 0;
    p->alive = false;
}

/* Sends one command line and reads the answer into line; false if the peer is gone or
 * answered with an error. */
static bool peer_ask(peer *p, const char *cmd, char *line, size_t n) {
    if (!p->alive) return false;
    if (fprintf(p->to, "%s\n", cmd) < 0 || fflush(p->to) || !fgets(line, (int)n, p->from)) {
        fprintf(stderr, "qat_bench: %s stopped answering (%s)\n", p->name, cmd);
        p->alive = false;
        return false;
    }
    if (strstr(line, "\"error\"")) {
        fprintf(stderr, "qat_bench: %s: %s: %s", p->name, cmd, line);
        return false;
    }
    return true;
}

static double json_num(const char *line, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *s = strstr(line, k);
    return s ? strtod(s + strlen(k), NULL) : NAN;
}

/* ---- CPU accounting ------------------------------------------------------------------ */

/* Ticks (1/sysconf(_SC_CLK_TCK) s) the CPUs spent busy (user, nice, system, irq,
 * softirq and steal; guest time is inside user), from the first line of /proc/stat. */
static double cpu_busy_ticks(double *steal) {
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                     &v[6], &v[7]) != 8)
        die("/proc/stat", "cannot read");
    fclose(f);
    *steal = (double)v[7];
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]);
}

/* utime + stime (+ cutime + cstime: children waited for) of a process, in ticks. */
static double proc_ticks(pid_t pid) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, pid ? "/proc/%d/stat" : "/proc/self/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *s = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!s) return 0;
    /* After ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime cutime cstime. */
    unsigned long long ut, st;
    long long cut, cst;
    if (sscanf(s + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld", &ut, &st, &cut, &cst) != 4)
        return 0;
    return (double)(ut + st) + (double)(cut + cst);
}

typedef struct cpu_mark {
    double t, busy, steal, own;
} cpu_mark;

static cpu_mark cpu_mark_now(const peer *peers, int np) {
    cpu_mark m;
    m.t = now();
    m.busy = cpu_busy_ticks(&m.steal);
    m.own = proc_ticks(0);
    for (int i = 0; i < np; i++)
        if (peers[i].pid) m.own += proc_ticks(peers[i].pid);
    return m;
}

/* ---- items --------------------------------------------------------------------------- */

enum { MAX_ROUNDS = 31, MAX_PEER_ITEMS = 12, MAX_ITEMS = 12, P_TORCH = 0, P_ORT = 1, NPEER = 2 };

/* One measurement over the rounds: per-call medians and sustained rates (samples/s), or
 * median and mean latencies (us). */
typedef struct series {
    double med[MAX_ROUNDS], sus[MAX_ROUNDS];
    int n;
} series;

typedef struct peer_item {
    int peer;
    char id[96], prep[512], label[64];
    bool fp32, ok;
    series s;
} peer_item;

typedef struct item {
    char label[64];
    bool latency;     /* batch 1: microseconds, lower is better */
    double target;    /* issue 13's ratio target vs the best int8 (or QAT) peer; 0: none */
    const char *goal; /* how the target reads */
    void (*call)(void *);
    void *ctx;
    int batch;
    series qat;
    peer_item p[MAX_PEER_ITEMS];
    int np;
} item;

static double *times_buf;
enum { MAX_CALLS = 1 << 21 };

static void series_add(series *s, double med, double sus) {
    if (s->n < MAX_ROUNDS) s->med[s->n] = med, s->sus[s->n] = sus, s->n++;
}

/* Per-call median and sustained value of `calls` calls in `wall` seconds, batch b. */
static void series_add_run(series *s, bool latency, int batch, double median_s, long calls, double wall) {
    if (latency) series_add(s, 1e6 * median_s, 1e6 * wall / (double)calls);
    else series_add(s, batch / median_s, (double)calls * batch / wall);
}

static void measure_qat(item *it, double seconds) {
    size_t n = 0;
    double t0 = now(), e;
    do {
        double a = now();
        it->call(it->ctx);
        e = now();
        if (n < MAX_CALLS) times_buf[n++] = e - a;
    } while (e - t0 < seconds);
    double wall = now() - t0;
    series_add_run(&it->qat, it->latency, it->batch, median_of(times_buf, n), (long)n, wall);
}

static void measure_peer(peer *peers, item *it, peer_item *pi, double seconds) {
    char cmd[256], line[4096];
    if (!pi->ok) return;
    snprintf(cmd, sizeof cmd, "run %s %g", pi->id, seconds);
    if (!peer_ask(&peers[pi->peer], cmd, line, sizeof line)) {
        pi->ok = false;
        return;
    }
    series_add_run(&pi->s, it->latency, it->batch, json_num(line, "median_s"), (long)json_num(line, "calls"),
                   json_num(line, "wall_s"));
}

static double series_med(const series *s, bool sustained) {
    double v[MAX_ROUNDS];
    memcpy(v, sustained ? s->sus : s->med, sizeof(double) * (size_t)s->n);
    return median_of(v, (size_t)s->n);
}

static void add_torch(item *it, const char *label, bool fp32, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add_torch(item *it, const char *label, bool fp32, const char *fmt, ...) {
    if (it->np == MAX_PEER_ITEMS) die("items", "too many peers");
    peer_item *pi = &it->p[it->np++];
    char id[sizeof pi->id];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(id, sizeof id, fmt, ap);
    va_end(ap);
    snprintf(pi->id, sizeof pi->id, "%s", id);
    pi->peer = P_TORCH;
    pi->fp32 = fp32;
    snprintf(pi->prep, sizeof pi->prep, "prep %s", id);
    snprintf(pi->label, sizeof pi->label, "%s", label);
}

/* PyTorch eager and frozen, in NCHW and (nl == 2) channels_last: "torch onednn eager"
 * ... for int8 (engine "onednn"), "torch fp32 eager" ... for fp32. */
static void add_torch_pair(item *it, int nl, const char *engine, bool fp32, const char *m) {
    const char *kind = fp32 ? "fp32" : "int8", *eager = fp32 ? "eager" : "onednn",
               *frozen = fp32 ? "frozen" : "onednn-frozen";
    for (int l = 0; l < nl; l++) {
        const char *ls = l ? "cl" : "nchw", *ln = l ? " channels_last" : "";
        char lab[64];
        snprintf(lab, sizeof lab, "torch %s eager%s", engine, ln);
        add_torch(it, lab, fp32, "%s:%s:%s:%s:%d", kind, m, eager, ls, it->batch);
        snprintf(lab, sizeof lab, "torch %s frozen%s", engine, ln);
        add_torch(it, lab, fp32, "%s:%s:%s:%s:%d", kind, m, frozen, ls, it->batch);
    }
}

static void add_ort(item *it, const char *label, bool fp32, const char *path, const char *id) {
    if (it->np == MAX_PEER_ITEMS) die("items", "too many peers");
    peer_item *pi = &it->p[it->np++];
    snprintf(pi->id, sizeof pi->id, "%s", id);
    pi->peer = P_ORT;
    pi->fp32 = fp32;
    snprintf(pi->prep, sizeof pi->prep, "prep %s %s %d", id, path, it->batch);
    snprintf(pi->label, sizeof pi->label, "%s", label);
}

/* The best peer of `it` (fp32: any precision, else int8 / same-precision peers only) by
 * per-call median; -1 if none measured. */
static int best_peer(const item *it, bool any_precision) {
    int best = -1;
    double bv = 0;
    for (int i = 0; i < it->np; i++) {
        const peer_item *pi = &it->p[i];
        if (!pi->s.n || (pi->fp32 && !any_precision)) continue;
        double v = series_med(&pi->s, false);
        if (best < 0 || (it->latency ? v < bv : v > bv)) best = i, bv = v;
    }
    return best;
}

static void fmt_num(char *buf, size_t n, double v) {
    if (isnan(v)) {
        snprintf(buf, n, "-");
        return;
    }
    if (v < 100) {
        snprintf(buf, n, "%.1f", v);
        return;
    }
    /* thousands separated by commas, as the docs write them */
    char raw[32];
    snprintf(raw, sizeof raw, "%.0f", v);
    size_t len = strlen(raw), o = 0;
    for (size_t i = 0; i < len && o + 2 < n; i++) {
        if (i && (len - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = raw[i];
    }
    buf[o] = 0;
}

static double ratio_of(const item *it, double q, double p) { return it->latency ? p / q : q / p; }

/* ---- main ---------------------------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f, "usage: qat_bench [--rounds N (1-%d)] [--seconds S] [--models cnn,mlp,dwcnn] [--model-dir DIR]\n"
               "                 [--load-limit F] [--no-torch] [--no-ort] [--python PATH] [--node PATH]\n",
            MAX_ROUNDS);
}

static const char *model_title(const char *m) {
    return !strcmp(m, "cnn") ? "CNN" : !strcmp(m, "mlp") ? "MLP" : !strcmp(m, "dwcnn") ? "DW-CNN" : m;
}

int main(int argc, char **argv) {
    cli_blas_select_core(argv);
    (void)bench_isa(); /* a mistyped QRT_ISA stops here, not in a measurement */
    if (argc == 6 && !strcmp(argv[1], "--one")) {
        int threads = atoi(argv[4]);
        double seconds = atof(argv[5]), v;
        if (!strcmp(argv[3], "peak-sgemm")) openblas_set_num_threads(threads), v = peak_sgemm(seconds);
        else if (!strcmp(argv[3], "peak-int8")) v = peak_int8(threads, seconds);
        else die("--one", "peak-sgemm or peak-int8");
        printf("{\"what\": \"%s\", \"per_s\": %.3f, \"core\": \"%s\"}\n", argv[3], v, cli_blas_core());
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "--rss-child")) {
        /* CNN training steps at batch 64 on THREADS threads, as `qat train` takes them
         * (without the data set, which `qat train` also holds: 55 MB for Fashion-MNIST). */
        qat_set_num_threads(THREADS);
        uint8_t *px = calloc((size_t)TRAIN_BATCH * 784, 1);
        for (size_t i = 0; i < (size_t)TRAIN_BATCH * 784; i++) px[i] = (uint8_t)(i * 37 % 251);
        train_ctx c;
        train_init(&c, QAT_SOURCE_DIR, "cnn", !strcmp(argv[2], "qat"), px);
        for (int s = atoi(argv[3]); s > 0; s--) train_step(&c);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("{\"rss_mib\": %.2f}\n", (double)ru.ru_maxrss / 1024.0);
        return 0;
    }
    int rounds = 5;
    double seconds = 1.0, load_limit = 0.10;
    bool torch = true, ort = true;
    const char *models = "cnn,mlp,dwcnn", *python = "/usr/bin/python3", *node = "/usr/bin/node";
    const char *model_dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--rounds") && v) rounds = atoi(argv[++i]);
        else if (!strcmp(a, "--seconds") && v) seconds = atof(argv[++i]);
        else if (!strcmp(a, "--models") && v) models = argv[++i];
        else if (!strcmp(a, "--model-dir") && v) model_dir = argv[++i];
        else if (!strcmp(a, "--load-limit") && v) load_limit = atof(argv[++i]);
        else if (!strcmp(a, "--python") && v) python = argv[++i];
        else if (!strcmp(a, "--node") && v) node = argv[++i];
        else if (!strcmp(a, "--no-torch")) torch = false;
        else if (!strcmp(a, "--no-ort")) ort = false;
        else {
            usage(strcmp(a, "--help") ? stderr : stdout);
            return strcmp(a, "--help") ? 2 : 0;
        }
    }
    if (rounds < 1 || rounds > MAX_ROUNDS || seconds <= 0 || load_limit < 0) {
        usage(stderr);
        return 2;
    }
    char self[1024], bin_dir[1024], dir_buf[1100], cmd[8192], line[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) die("/proc/self/exe", "cannot find this program");
    self[sl] = 0;
    snprintf(bin_dir, sizeof bin_dir, "%s", self);
    *strrchr(bin_dir, '/') = 0; /* build/bench */
    if (!model_dir) snprintf(dir_buf, sizeof dir_buf, "%s/fair-models", bin_dir), model_dir = dir_buf;

    if (strlen(model_dir) > 1024) die("--model-dir", "path too long");
    char list[256];
    snprintf(list, sizeof list, "%s", models);
    const char *names[3];
    int nm = 0;
    for (char *s = strtok(list, ","); s; s = strtok(NULL, ",")) {
        if (nm == 3 || (strcmp(s, "cnn") && strcmp(s, "mlp") && strcmp(s, "dwcnn"))) {
            fprintf(stderr, "qat_bench: --models: cnn, mlp and/or dwcnn\n");
            return 2;
        }
        names[nm++] = s;
    }

    /* The exported models, made once. */
    for (int k = 0; k < nm; k++) {
        char p1[1200], p2[1200], p3[1200];
        snprintf(p1, sizeof p1, "%s/%s.int8", model_dir, names[k]);
        snprintf(p2, sizeof p2, "%s/%s.onnx", model_dir, names[k]);
        snprintf(p3, sizeof p3, "%s/%s.fp32.onnx", model_dir, names[k]);
        if (access(p1, R_OK) || access(p2, R_OK) || access(p3, R_OK)) {
            snprintf(cmd, sizeof cmd, "'%s/bench/fair_models.sh' '%s/../qat' '%s' %s", QAT_SOURCE_DIR, bin_dir,
                     model_dir, names[k]);
            fprintf(stderr, "qat_bench: making the models: %s\n", cmd);
            if (system(cmd) != 0) die("fair_models.sh", "failed (is the qat command built?)");
        }
    }
    /* The first 256 test images of Fashion-MNIST, raw uint8, for every side. */
    char images[] = "/tmp/qat_bench_images_XXXXXX";
    int fd = mkstemp(images);
    if (fd < 0) die("mkstemp", strerror(errno));
    close(fd);
    snprintf(cmd, sizeof cmd,
             "d=/usr/share/datasets/fashion-mnist; if [ -f $d/t10k-images-idx3-ubyte ]; then "
             "tail -c +17 $d/t10k-images-idx3-ubyte; else zcat $d/t10k-images-idx3-ubyte.gz | tail -c +17; fi "
             "| head -c %d > '%s'",
             INFER_BATCH * 784, images);
    size_t n_img = 0;
    uint8_t *px = system(cmd) == 0 ? bench_read_file(images, &n_img) : NULL;
    if (!px || n_img < (size_t)INFER_BATCH * 784) die("/usr/share/datasets/fashion-mnist", "cannot read the test images");

    /* What the environment says, before anything is measured. */
    printf("qat_bench: %d rounds, %.2f s per measurement, %d threads on every side\n", rounds, seconds, THREADS);
    printf("environment:");
    extern char **environ;
    int shown = 0;
    for (char **e = environ; *e; e++)
        if (!strncmp(*e, "OPENBLAS_", 9) || !strncmp(*e, "OMP_", 4) || !strncmp(*e, "MALLOC_", 7) ||
            !strncmp(*e, "QAT_", 4) || !strncmp(*e, "QRT_", 4))
            printf(" %s", *e), shown++;
    printf("%s\n", shown ? "" : " no OPENBLAS_*, OMP_*, MALLOC_*, QAT_* or QRT_* variable set");
    printf("OpenBLAS kernels: %s; int8 runtime path: %s\n", cli_blas_core(), qrt_isa_str(bench_isa()));

    /* The machine's peaks and qat's training memory, in children, before the rounds. */
    double sg[3], i8[3], rss[2] = {NAN, NAN};
    for (int r = 0; r < 3; r++) {
        snprintf(cmd, sizeof cmd, "'%s' --one - peak-sgemm %d %g", self, THREADS, seconds);
        FILE *p = popen(cmd, "r");
        sg[r] = p && fgets(line, sizeof line, p) ? json_num(line, "per_s") : NAN;
        if (p) pclose(p);
        snprintf(cmd, sizeof cmd, "'%s' --one - peak-int8 %d %g", self, THREADS, seconds);
        p = popen(cmd, "r");
        i8[r] = p && fgets(line, sizeof line, p) ? json_num(line, "per_s") : NAN;
        if (p) pclose(p);
    }
    for (int q = 0; q < 2; q++) {
        snprintf(cmd, sizeof cmd, "'%s' --rss-child %s 100", self, q ? "qat" : "fp32");
        FILE *p = popen(cmd, "r");
        if (p && fgets(line, sizeof line, p)) rss[q] = json_num(line, "rss_mib");
        if (p) pclose(p);
    }
    const double sgemm_peak = median_of(sg, 3), int8_peak = median_of(i8, 3);

    /* Peers. */
    peer peers[NPEER] = {{0}};
    if (torch) {
        char script[4096], th[8];
        snprintf(script, sizeof script, "%s/bench/pytorch_bench.py", QAT_SOURCE_DIR);
        snprintf(th, sizeof th, "%d", THREADS);
        char *const av[] = {(char *)python, script, "serve", th, NULL};
        /* glibc keeps freed memory instead of trimming and re-faulting it every step;
         * OpenBLAS's threads do not run beside torch's OpenMP threads. */
        static const char *const env[] = {"MALLOC_MMAP_THRESHOLD_", "1073741824", "MALLOC_TRIM_THRESHOLD_",
                                          "1073741824", "OPENBLAS_NUM_THREADS", "1", NULL};
        if (!peer_start(&peers[P_TORCH], "PyTorch", av, env)) {
            printf("note: PyTorch peer did not start (%s %s): no PyTorch numbers\n", python, script);
            peer_stop(&peers[P_TORCH]);
        }
    }
    if (ort) {
        char script[4096], mods[4096], th[8];
        snprintf(script, sizeof script, "%s/bench/ort_serve.js", QAT_SOURCE_DIR);
        snprintf(mods, sizeof mods, "%s/.deps/node_modules", QAT_SOURCE_DIR);
        snprintf(th, sizeof th, "%d", THREADS);
        char *const av[] = {(char *)node, script, mods, images, th, NULL};
        if (!peer_start(&peers[P_ORT], "ONNX Runtime", av, NULL)) {
            printf("note: ONNX Runtime peer did not start (%s %s): no ONNX Runtime numbers\n", node, script);
            peer_stop(&peers[P_ORT]);
        }
    }

    /* Items. */
    qat_set_num_threads(THREADS);
    static item items[MAX_ITEMS];
    int ni = 0;
    static train_ctx tc[2];
    static int8_ctx ic[2][3];
    bool have_cnn = false;
    for (int k = 0; k < nm; k++) have_cnn |= !strcmp(names[k], "cnn");
    if (have_cnn)
        for (int q = 0; q < 2; q++) {
            item *it = &items[ni++];
            snprintf(it->label, sizeof it->label, "CNN %s training, b64 (samples/s)", q ? "QAT w8a8" : "fp32");
            it->batch = TRAIN_BATCH;
            it->target = q ? 2.4 : 1.5;
            it->goal = q ? ">= 2.4x torch eager QAT" : ">= 1.5x";
            train_init(&tc[q], QAT_SOURCE_DIR, "cnn", q, px);
            it->call = train_step;
            it->ctx = &tc[q];
            for (int l = 0; l < 2; l++)
                add_torch(it, l ? "torch eager channels_last" : "torch eager NCHW", false, "train-%s:cnn:eager:%s:64",
                          q ? "qat" : "fp32", l ? "cl" : "nchw");
        }
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < nm; k++) {
            const char *m = names[k];
            const bool conv = strcmp(m, "mlp") != 0, lat = b == 1;
            item *it = &items[ni++];
            it->batch = lat ? 1 : INFER_BATCH;
            it->latency = lat;
            snprintf(it->label, sizeof it->label, lat ? "%s int8 latency, b1 (us)" : "%s int8 inference, b256 (img/s)",
                     model_title(m));
            it->target = lat ? 1.0 : !strcmp(m, "cnn") ? 2.0 : 1.2;
            it->goal = lat ? "keep ahead" : !strcmp(m, "cnn") ? "keep >= 2x" : ">= 1.2x";
            char path[4096], id[64];
            snprintf(path, sizeof path, "%s/%s.int8", model_dir, m);
            int8_init(&ic[b][k], path, px, it->batch);
            it->call = int8_call;
            it->ctx = &ic[b][k];
            const int nl = conv && !lat ? 2 : 1;
            add_torch_pair(it, nl, "onednn", false, m);
            add_torch(it, "torch qnnpack eager", false, "int8:%s:qnnpack:nchw:%d", m, it->batch);
            snprintf(path, sizeof path, "%s/%s.onnx", model_dir, m);
            snprintf(id, sizeof id, "%s-int8-%d", m, it->batch);
            add_ort(it, "ORT int8 (qat's export)", false, path, id);
            add_torch_pair(it, nl, "fp32", true, m);
            snprintf(path, sizeof path, "%s/%s.fp32.onnx", model_dir, m);
            snprintf(id, sizeof id, "%s-fp32-%d", m, it->batch);
            add_ort(it, "ORT fp32 (qat's export)", true, path, id);
        }
    /* Build and warm up everything before the first round. */
    for (int i = 0; i < ni; i++) {
        for (int w = 0; w < 5; w++) items[i].call(items[i].ctx);
        for (int j = 0; j < items[i].np; j++) {
            peer_item *pi = &items[i].p[j];
            pi->ok = peer_ask(&peers[pi->peer], pi->prep, line, sizeof line);
        }
    }

    times_buf = malloc(sizeof(double) * MAX_CALLS);
    if (!times_buf) die("times", "out of memory");
    double others[MAX_ROUNDS], steal[MAX_ROUNDS];
    int busy = 0;
    for (int r = 0; r < rounds; r++) {
        cpu_mark a = cpu_mark_now(peers, NPEER);
        for (int i = 0; i < ni; i++) {
            measure_qat(&items[i], seconds);
            for (int j = 0; j < items[i].np; j++) measure_peer(peers, &items[i], &items[i].p[j], seconds);
        }
        cpu_mark b = cpu_mark_now(peers, NPEER);
        const double tck = (double)sysconf(_SC_CLK_TCK), wall = b.t - a.t;
        others[r] = ((b.busy - a.busy) - (b.own - a.own)) / tck / wall;
        steal[r] = (b.steal - a.steal) / tck / wall;
        busy += others[r] > load_limit;
        fprintf(stderr, "qat_bench: round %d of %d: %.0f s, others used %.0f%% of one CPU (steal %.0f%%)\n", r + 1,
                rounds, wall, 100 * others[r], 100 * steal[r]);
    }
    double prss[NPEER] = {NAN, NAN};
    for (int p = 0; p < NPEER; p++) {
        if (peer_ask(&peers[p], "rss", line, sizeof line)) prss[p] = json_num(line, "rss_mib");
        peer_stop(&peers[p]);
    }
    remove(images);

    /* ---- the report ---- */
    const bool quiet = busy * 3 <= rounds;
    printf("\nload of other processes per round (%% of one CPU; steal in brackets):");
    for (int r = 0; r < rounds; r++) printf(" %.0f (%.0f)", 100 * others[r], 100 * steal[r]);
    printf("\n%d of %d rounds busy (others above %.0f%% of one CPU); rule: ratios only if at most a third of the "
           "rounds are busy: %s\n",
           busy, rounds, 100 * load_limit, quiet ? "met" : "NOT met");
    if (!quiet)
        printf("THE MACHINE WAS BUSY: ratios withheld; the numbers below are not a fair comparison. Rerun when it "
               "is quiet.\n");
    printf("\nmedians over the rounds; 'call' = per-call median, 'sust' = sustained (calls x batch / wall time)\n");
    printf("%-36s %9s %9s   %-28s %9s %9s  %7s %7s  %s\n", "item", "qat call", "qat sust", "best peer", "call", "sust",
           "ratio", "r sust", "target");
    for (int i = 0; i < ni; i++) {
        item *it = &items[i];
        double q = series_med(&it->qat, false), qs = series_med(&it->qat, true);
        char a[32], b[32], c[32], d[32], e[32] = "-", f[32] = "-", g[64] = "";
        fmt_num(a, sizeof a, q);
        fmt_num(b, sizeof b, qs);
        for (int any = 0; any < 2; any++) {
            int bp = best_peer(it, any);
            if (any && (bp < 0 || !it->p[bp].fp32)) break; /* the best peer is int8 anyway */
            double p = bp >= 0 ? series_med(&it->p[bp].s, false) : NAN, ps = bp >= 0 ? series_med(&it->p[bp].s, true) : NAN;
            fmt_num(c, sizeof c, p);
            fmt_num(d, sizeof d, ps);
            if (quiet && bp >= 0) {
                double rt = ratio_of(it, q, p);
                snprintf(e, sizeof e, "%.2fx", rt);
                snprintf(f, sizeof f, "%.2fx", ratio_of(it, qs, ps));
                if (!any) snprintf(g, sizeof g, "%s: %s", it->goal, rt >= it->target ? "met" : "NOT met");
                else snprintf(g, sizeof g, "(any precision)");
            } else if (!quiet) {
                snprintf(g, sizeof g, "%s", any ? "(any precision)" : it->goal);
            }
            printf("%-36s %9s %9s   %-28s %9s %9s  %7s %7s  %s\n", any ? "" : it->label, any ? "" : a, any ? "" : b,
                   bp >= 0 ? it->p[bp].label : "-", c, d, e, f, g);
        }
    }
    printf("\nevery peer (call / sust):\n");
    for (int i = 0; i < ni; i++) {
        printf("  %s\n", items[i].label);
        for (int j = 0; j < items[i].np; j++) {
            char c[32], d[32];
            fmt_num(c, sizeof c, series_med(&items[i].p[j].s, false));
            fmt_num(d, sizeof d, series_med(&items[i].p[j].s, true));
            printf("    %-34s %9s %9s%s\n", items[i].p[j].label, c, d, items[i].p[j].s.n ? "" : "  (failed)");
        }
    }
    printf("\nper round, per-call (qat, then the best peer of the summary; the rounds' load above):\n");
    for (int i = 0; i < ni; i++) {
        int bp = best_peer(&items[i], false);
        printf("  %-36s qat", items[i].label);
        char v[32];
        for (int r = 0; r < items[i].qat.n; r++) fmt_num(v, sizeof v, items[i].qat.med[r]), printf(" %s", v);
        if (bp >= 0) {
            printf("; %s", items[i].p[bp].label);
            for (int r = 0; r < items[i].p[bp].s.n; r++) fmt_num(v, sizeof v, items[i].p[bp].s.med[r]), printf(" %s", v);
        }
        printf("\n");
    }
    printf("\nsgemm 1024^3 (OpenBLAS %s, %d threads): %.0f GFLOP/s; int8 conv kernel peak (%s, 1x1 512x1024x512): "
           "%.0f GOP/s\n",
           cli_blas_core(), THREADS, sgemm_peak, qrt_isa_str(bench_isa()), int8_peak);
    if (have_cnn) {
        qat_rng rng;
        qat_rng_init(&rng, 7);
        qat_model *m = load_model(QAT_SOURCE_DIR, "cnn", &rng);
        size_t macs = 0;
        for (int l = 0; l < m->root.n; l++) macs += qat_layer_macs(&m->root.layers[l]);
        qat_model_free(m);
        /* A training step is about 3 forward passes of multiply-adds (forward, input
         * gradient, weight gradient): 6 FLOP per MAC per sample. */
        for (int q = 0; q < 2; q++) {
            double gf = 6.0 * (double)macs * series_med(&items[q].qat, false) / 1e9;
            printf("CNN %s training: %.1f GFLOP/s, %.0f%% of the sgemm peak (%.2f M MACs per sample)\n",
                   q ? "QAT" : "fp32", gf, 100 * gf / sgemm_peak, (double)macs / 1e6);
        }
        int ci = 2;
        while (strncmp(items[ci].label, "CNN int8 inference", 18)) ci++;
        double go = 2.0 * (double)macs * series_med(&items[ci].qat, false) / 1e9;
        printf("CNN int8 inference: %.1f GOP/s, %.0f%% of the int8 kernel's peak\n", go, 100 * go / int8_peak);
    }
    printf("peak RSS of a child doing CNN training steps at batch 64 (no data set): fp32 %.1f MiB (bound <= 64 "
           "MiB: %s), QAT %.1f MiB\n",
           rss[0], rss[0] <= 64 ? "met" : "NOT met", rss[1]);
    printf("peak RSS of the peers (each holds all its items at once): PyTorch %.0f MiB, ONNX Runtime (node) %.0f MiB\n",
           prss[0], prss[1]);
    char host[256] = "?";
    gethostname(host, sizeof host);
    printf("machine: %s, %ld online CPUs; command:", host, sysconf(_SC_NPROCESSORS_ONLN));
    for (int i = 0; i < argc; i++) printf(" %s", argv[i]);
    printf("\n");
    return 0;
}

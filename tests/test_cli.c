/* test_cli.c - the qat command end to end, on small CSV data made here: train with
 * --json, stop with --until and --resume to a byte-identical checkpoint, eval, inspect,
 * --help everywhere, PTQ and QAT with quantized checkpoints (eval, inspect, exact resume),
 * checkpoints of an earlier format resumed to the bits that format's build produced, and
 * clear errors for bad input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "testutil.h"

static char dir[64];

static void path(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

/* Runs `qat ARGS` with the output captured; returns the exit status. */
static int qat(char *out, size_t n, const char *args) { return test_run_cli(dir, QAT_CLI_PATH, out, n, args); }

static void write_csv(const char *name, int n, uint64_t seed) {
    char p[256];
    path(p, sizeof p, name);
    FILE *f = fopen(p, "w");
    qat_rng r;
    qat_rng_init(&r, seed);
    fprintf(f, "label,f0,f1,f2,f3,f4,f5\n");
    for (int i = 0; i < n; i++) {
        int y = i % 3;
        fprintf(f, "%d", y);
        for (int d = 0; d < 6; d++) fprintf(f, ",%.4f", (d % 3 == y ? 2.0f : 0.0f) + qat_rng_normal(&r));
        fprintf(f, "\n");
    }
    fclose(f);
}

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/qat_test_cli_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    write_csv("train.csv", 240, 1);
    write_csv("test.csv", 60, 2);
    char p[256];
    path(p, sizeof p, "mlp.model");
    FILE *f = fopen(p, "w");
    fputs("# a small MLP for 6 features\ninput 6\nlinear out=16\nrelu\nlinear out=3\n", f);
    fclose(f);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *TRAIN = "train --model mlp.model --data train.csv --test-data test.csv --batch 16 --seed 3 --quiet";

static bool same_file(const char *a, const char *b) {
    char pa[256], pb[256];
    path(pa, sizeof pa, a);
    path(pb, sizeof pb, b);
    FILE *fa = fopen(pa, "rb"), *fb = fopen(pb, "rb");
    if (!fa || !fb) fail_msg("missing %s or %s", pa, pb);
    int ca, cb;
    do {
        ca = fgetc(fa);
        cb = fgetc(fb);
    } while (ca == cb && ca != EOF);
    fclose(fa);
    fclose(fb);
    return ca == cb;
}

static void test_train_json_resume_eval_inspect(void **state) {
    (void)state;
    static char out[1 << 16];
    char args[512];
    snprintf(args, sizeof args, "%s --epochs 3 --out a.safetensors --json --log log.csv", TRAIN);
    if (qat(out, sizeof out, args) != 0) fail_msg("train failed: %s", out);
    const char *acc = strstr(out, "\"test_accuracy\": ");
    if (!acc || !strstr(out, "\"epochs\": 3")) fail_msg("no JSON metrics: %s", out);
    double a = strtod(acc + strlen("\"test_accuracy\": "), NULL);
    if (!(a > 0.8)) fail_msg("did not learn: test accuracy %g", a);

    snprintf(args, sizeof args, "%s --epochs 3 --until 1 --out b.safetensors", TRAIN);
    if (qat(out, sizeof out, args) != 0) fail_msg("train --until failed: %s", out);
    if (qat(out, sizeof out, "train --resume b.safetensors --epochs 3 --quiet") != 0)
        fail_msg("resume failed: %s", out);
    if (!same_file("a.safetensors", "b.safetensors"))
        fail_msg("3 epochs and 1 + resume 2 give different checkpoints");

    if (qat(out, sizeof out, "eval b.safetensors --data test.csv --json") != 0) fail_msg("eval failed: %s", out);
    const char *e = strstr(out, "\"test_accuracy\": ");
    assert_non_null(e);
    assert_true(strtod(e + strlen("\"test_accuracy\": "), NULL) == a);

    if (qat(out, sizeof out, "inspect b.safetensors") != 0) fail_msg("inspect failed: %s", out);
    assert_non_null(strstr(out, "checkpoint: epoch 3"));
    assert_non_null(strstr(out, "linear"));
}


/* The 8-bit optimizers: they learn, their state is stored as U8 codes and F32 block
 * maxima, and a stopped run resumes to the uninterrupted run's bytes. */
static void test_optim8_resume(void **state) {
    (void)state;
    static char out[1 << 16];
    char args[512];
    const char *const kinds[] = {"sgd8", "adamw8"};
    for (int k = 0; k < 2; k++) {
        const char *lr = k ? "0.01" : "0.05";
        snprintf(args, sizeof args, "%s --optim %s --lr %s --epochs 3 --out o8a.safetensors --json", TRAIN, kinds[k], lr);
        if (qat(out, sizeof out, args) != 0) fail_msg("train --optim %s failed: %s", kinds[k], out);
        if (!(test_json_number(out, "test_accuracy") > 0.8)) fail_msg("%s did not learn: %s", kinds[k], out);
        snprintf(args, sizeof args, "%s --optim %s --lr %s --epochs 3 --until 1 --out o8b.safetensors", TRAIN, kinds[k], lr);
        if (qat(out, sizeof out, args) != 0) fail_msg("train --until failed: %s", out);
        if (qat(out, sizeof out, "train --resume o8b.safetensors --epochs 3 --quiet") != 0)
            fail_msg("resume failed: %s", out);
        if (!same_file("o8a.safetensors", "o8b.safetensors"))
            fail_msg("--optim %s: 3 epochs and 1 + resume 2 give different checkpoints", kinds[k]);
        if (qat(out, sizeof out, "inspect o8b.safetensors") != 0) fail_msg("inspect failed: %s", out);
        if (!strstr(out, k ? "AdamW8" : "SGD8")) fail_msg("inspect does not name the optimizer: %s", out);
    }
}

/* LoRA: adapters on a float checkpoint, trained on a subset of the classes; only they,
 * biases and norms train; a stopped run resumes to the same bytes; qat merge folds them
 * in and the merged checkpoint evaluates to the same accuracy. */
static void test_lora_merge(void **state) {
    (void)state;
    static char out[1 << 16];
    char args[512];
    snprintf(args, sizeof args, "%s --epochs 2 --classes 0-1 --out lbase.safetensors", TRAIN);
    if (qat(out, sizeof out, args) != 0) fail_msg("base training failed: %s", out);
    const char *L = "train --from lbase.safetensors --data train.csv --test-data test.csv --batch 16 --seed 3 "
                    "--classes 2 --lora r=2 --lr 0.05 --epochs 8";
    snprintf(args, sizeof args, "%s --out la.safetensors --json", L);
    if (qat(out, sizeof out, args) != 0) fail_msg("train --lora failed: %s", out);
    if (!strstr(out, "LoRA r=2,alpha=4:") || !strstr(out, "frozen")) fail_msg("no LoRA summary: %s", out);
    const double acc = test_json_number(out, "test_accuracy");
    if (!(acc > 0.9)) fail_msg("the adapters did not learn class 2: %s", out);
    snprintf(args, sizeof args, "%s --until 1 --out lb.safetensors --quiet", L);
    if (qat(out, sizeof out, args) != 0) fail_msg("train --lora --until failed: %s", out);
    if (qat(out, sizeof out, "train --resume lb.safetensors --quiet") != 0) fail_msg("resume failed: %s", out);
    if (!same_file("la.safetensors", "lb.safetensors")) fail_msg("LoRA: 8 epochs and 1 + resume 7 differ");
    if (qat(out, sizeof out, "merge la.safetensors --out lm.safetensors") != 0) fail_msg("merge failed: %s", out);
    if (!strstr(out, "at most 0 ")) fail_msg("merged outputs differ: %s", out);
    if (qat(out, sizeof out, "eval la.safetensors --data test.csv --json") != 0) fail_msg("eval failed: %s", out);
    const double a1 = test_json_number(out, "test_accuracy");
    if (qat(out, sizeof out, "eval lm.safetensors --data test.csv --json") != 0) fail_msg("eval failed: %s", out);
    if (test_json_number(out, "test_accuracy") != a1) fail_msg("merged accuracy differs: %s", out);
    /* the merged checkpoint has no adapters and quantizes like any float checkpoint */
    if (qat(out, sizeof out, "inspect lm.safetensors") != 0 || strstr(out, "lora")) fail_msg("inspect: %s", out);
    if (qat(out, sizeof out, "calibrate --from lm.safetensors --data train.csv --samples 32 --out lq.safetensors") != 0)
        fail_msg("calibrate of the merged model failed: %s", out);
    /* the base in NF4: a checkpoint of about a quarter of the F32 base's bytes, resumed to the same bytes, merged */
    snprintf(args, sizeof args, "%s --base nf4 --out na.safetensors", L);
    if (qat(out, sizeof out, args) != 0 || !strstr(out, "base in nf4")) fail_msg("train --base nf4 failed: %s", out);
    snprintf(args, sizeof args, "%s --base nf4 --until 2 --out nb.safetensors --quiet", L);
    if (qat(out, sizeof out, args) != 0) fail_msg("train --base nf4 --until failed: %s", out);
    if (qat(out, sizeof out, "train --resume nb.safetensors --quiet") != 0) fail_msg("resume nf4 failed: %s", out);
    if (!same_file("na.safetensors", "nb.safetensors")) fail_msg("NF4 base: 8 epochs and 2 + resume 6 differ");
    if (qat(out, sizeof out, "merge na.safetensors --out nm.safetensors") != 0) fail_msg("merge nf4 failed: %s", out);
    if (qat(out, sizeof out, "train --from lbase.safetensors --data train.csv --lora r=2 --base fp4") == 0 ||
        !strstr(out, "nf4, int4 or fp32"))
        fail_msg("--base fp4 accepted: %s", out);
    /* refusals */
    if (qat(out, sizeof out, "merge lbase.safetensors --out x.safetensors") == 0 || !strstr(out, "adapters"))
        fail_msg("merge of a checkpoint without adapters: %s", out);
    if (qat(out, sizeof out, "train --from lbase.safetensors --data train.csv --lora r=2 --quant w8a8") == 0)
        fail_msg("--lora with --quant accepted: %s", out);
    snprintf(args, sizeof args, "%s --classes 7", TRAIN);
    if (qat(out, sizeof out, args) == 0 || !strstr(out, "--classes")) fail_msg("--classes 7 of 3 accepted: %s", out);
}

/* PTQ and QAT from a float checkpoint; quantized checkpoints evaluate, inspect and resume
 * byte-identically. */
static void test_quantization(void **state) {
    (void)state;
    static char out[1 << 16];
    char args[512];
    snprintf(args, sizeof args, "%s --epochs 3 --out f.safetensors", TRAIN);
    if (qat(out, sizeof out, args) != 0) fail_msg("train failed: %s", out);
    if (qat(out, sizeof out, "calibrate --from f.safetensors --data train.csv --samples 64 --out p.safetensors --json") != 0)
        fail_msg("calibrate failed: %s", out);
    double f = test_json_number(out, "fp32_accuracy"), q = test_json_number(out, "quant_accuracy");
    if (!(q > f - 0.1)) fail_msg("w8a8 PTQ lost too much: %g -> %g", f, q);
    if (qat(out, sizeof out, "eval p.safetensors --data test.csv --json") != 0) fail_msg("eval of PTQ failed: %s", out);
    if (test_json_number(out, "test_accuracy") != q) fail_msg("eval of the PTQ checkpoint differs: %s", out);
    if (qat(out, sizeof out, "inspect p.safetensors") != 0) fail_msg("inspect failed: %s", out);
    if (!strstr(out, "quantization: w8a8") || !strstr(out, "linear+relu")) fail_msg("no quantization table: %s", out);

    const char *QAT = "train --from f.safetensors --data train.csv --test-data test.csv --batch 16 --quiet "
                      "--quant w4a4,pact --calib-samples 64 --epochs 2";
    snprintf(args, sizeof args, "%s --out q.safetensors --json", QAT);
    if (qat(out, sizeof out, args) != 0) fail_msg("QAT failed: %s", out);
    double a = test_json_number(out, "test_accuracy");
    if (!(a > 0.7)) fail_msg("QAT w4a4 did not keep accuracy: %g", a);
    snprintf(args, sizeof args, "%s --until 1 --out r.safetensors", QAT);
    if (qat(out, sizeof out, args) != 0) fail_msg("QAT --until failed: %s", out);
    if (qat(out, sizeof out, "train --resume r.safetensors --quiet") != 0) fail_msg("QAT resume failed: %s", out);
    if (!same_file("q.safetensors", "r.safetensors")) fail_msg("QAT 2 epochs and 1 + resume 1 differ");
    if (qat(out, sizeof out, "inspect q.safetensors") != 0 || !strstr(out, "pact") || !strstr(out, "alpha"))
        fail_msg("inspect of a PACT checkpoint: %s", out);

    /* Mixed precision: the sensitivity table, a budget that forces the first layer (96
     * weights, 8 bits by default) down to 4 bits (96 / 2 + 48 / 2 = 72 bytes), and auto= */
    if (qat(out, sizeof out,
            "sensitivity f.safetensors --data train.csv --quant w4a4 --bits 2,4,8 --samples 64 --budget 72 --json") != 0)
        fail_msg("sensitivity failed: %s", out);
    if (!strstr(out, "\"layer\": \"0\"") || !strstr(out, "\"layer\": \"2\"") || !strstr(out, "w@0=") ||
        !(test_json_number(out, "weight_bytes") <= 72) || test_json_number(out, "base_weight_bytes") != 120)
        fail_msg("sensitivity: %s", out);
    if (qat(out, sizeof out, "sensitivity f.safetensors --data train.csv --bits 2,4 --samples 64 --budget 10") == 0 ||
        !strstr(out, "weight bytes"))
        fail_msg("sensitivity took a budget below every layer at its narrowest: %s", out);
    if (qat(out, sizeof out,
            "calibrate --from f.safetensors --data train.csv --quant w4a4,auto=72 --samples 64 --out a.safetensors") != 0)
        fail_msg("calibrate auto= failed: %s", out);
    if (qat(out, sizeof out, "inspect a.safetensors") != 0 || !strstr(out, "w@0=") || strstr(out, "auto="))
        fail_msg("the auto= checkpoint does not hold its resolved widths: %s", out);
}

/* Every tensor of `want` (but the legacy "quant.step", see checkpoint.c) equals the one of
 * the same name in `got`, byte for byte, and `got` has no other tensor. */
static void assert_same_tensors(const char *got_path, const char *want_path) {
    qat_st_file got, want;
    qat_error err = {0};
    if (qat_safetensors_read(&got, got_path, &err) || qat_safetensors_read(&want, want_path, &err))
        fail_msg("%s", err.msg);
    size_t compared = 0;
    for (size_t i = 0; i < want.n_tensors; i++) {
        const qat_st_tensor *w = &want.tensors[i];
        if (!strcmp(w->name, "quant.step")) continue;
        const qat_st_tensor *g = qat_safetensors_find(&got, w->name);
        if (!g) fail_msg("%s: no tensor %s", got_path, w->name);
        if (g->dtype != w->dtype || g->nbytes != w->nbytes || memcmp(g->data, w->data, w->nbytes))
            fail_msg("%s: tensor %s differs from %s", got_path, w->name, want_path);
        compared++;
    }
    if (compared != got.n_tensors) fail_msg("%s has %zu tensors, %s %zu", got_path, got.n_tensors, want_path, compared);
    assert_string_equal(qat_safetensors_meta(&got, "step"), qat_safetensors_meta(&want, "step"));
    assert_string_equal(qat_safetensors_meta(&got, "optim_step"), qat_safetensors_meta(&want, "optim_step"));
    qat_safetensors_free(&got);
    qat_safetensors_free(&want);
}

/* Checkpoints written before issue 11 (tests/fixtures/legacy/README.md: the old float
 * QAT step tensor, the old optimizer code) load, and resume to the very bits the old
 * build produced; a legacy quantized checkpoint still evaluates and exports. */
static void test_legacy_checkpoints(void **state) {
    (void)state;
    static char out[1 << 16];
    const char *runs[] = {"fp32_adam", "qat_sgd"};
    /* The fixtures' float bits came from OpenBLAS's Haswell kernels (the README's machine);
     * a CPU with AVX-512 would pick SkylakeX kernels, which sum in another order. Pin the
     * kernels the fixtures were made with, where the CPU can run them. */
    bool pinned = false;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    pinned = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    const char *was = getenv("OPENBLAS_CORETYPE");
    char saved[64] = "";
    if (was) snprintf(saved, sizeof saved, "%s", was);
    if (pinned) setenv("OPENBLAS_CORETYPE", "Haswell", 1);
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        char cmd[1024], got[256], want[256];
        path(got, sizeof got, runs[i]);
        strcat(got, ".safetensors");
        snprintf(cmd, sizeof cmd, "cp %s/legacy/%s_e1.safetensors %s", QAT_FIXTURE_DIR, runs[i], got);
        assert_int_equal(system(cmd), 0);
        snprintf(cmd, sizeof cmd, "train --resume %s.safetensors --threads 2 --quiet", runs[i]);
        if (qat(out, sizeof out, cmd) != 0) fail_msg("resuming the legacy %s checkpoint failed: %s", runs[i], out);
        snprintf(want, sizeof want, "%s/legacy/%s_e2.safetensors", QAT_FIXTURE_DIR, runs[i]);
        if (pinned)
            assert_same_tensors(got, want);
        else
            print_message("legacy %s: no AVX2 here, resumed without comparing bits\n", runs[i]);
    }
    if (was)
        setenv("OPENBLAS_CORETYPE", saved, 1);
    else
        unsetenv("OPENBLAS_CORETYPE");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "eval %s/legacy/qat_sgd_e1.safetensors --json", QAT_FIXTURE_DIR);
    if (qat(out, sizeof out, cmd) != 0) fail_msg("eval of a legacy QAT checkpoint failed: %s", out);
    snprintf(cmd, sizeof cmd, "export %s/legacy/qat_sgd_e1.safetensors --out legacy.int8", QAT_FIXTURE_DIR);
    if (qat(out, sizeof out, cmd) != 0) fail_msg("export of a legacy QAT checkpoint failed: %s", out);
}

static void test_help_everywhere(void **state) {
    (void)state;
    static char out[1 << 14];
    const char *cmds[] = {"--help",         "train --help",   "eval --help",     "predict --help",
                          "inspect --help", "demo --help",    "calibrate --help", "import --help"};
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++) {
        if (qat(out, sizeof out, cmds[i]) != 0) fail_msg("qat %s: nonzero exit: %s", cmds[i], out);
        assert_non_null(strstr(out, "usage"));
    }
}

static void expect_fail(const char *args, const char *needle) {
    static char out[1 << 14];
    int rc = qat(out, sizeof out, args);
    if (rc == 0) fail_msg("qat %s succeeded", args);
    if (!strstr(out, needle)) fail_msg("qat %s: message does not mention '%s': %s", args, needle, out);
}

static void test_errors(void **state) {
    (void)state;
    char p[256];
    path(p, sizeof p, "ragged.csv");
    FILE *f = fopen(p, "w");
    fputs("0,1,2,3,4,5,6\n1,1,2\n", f);
    fclose(f);
    expect_fail("frobnicate", "unknown command");
    expect_fail("train --epochs", "needs a value");
    expect_fail("train --epochs two", "--epochs two");
    expect_fail("train --bogus 1", "unknown option --bogus");
    expect_fail("train --model nothere.model", "nothere.model");
    expect_fail("train --model mlp.model --data ragged.csv --test-data test.csv", "ragged.csv:2");
    expect_fail("train --model cnn --data train.csv --test-data test.csv", "do not fit");
    expect_fail("train --model mlp.model --data train.csv --test-data test.csv --optim lion", "--optim");
    expect_fail("eval mlp.model", "needs a checkpoint");
    expect_fail("inspect missing.safetensors", "missing.safetensors");
    expect_fail("calibrate --data train.csv", "--from");
    expect_fail("calibrate --from mlp.model", "float checkpoint");
    expect_fail("train --model mlp.model --data train.csv --test-data test.csv --quant w9a9", "bits must be 2..8");
    expect_fail("train --model mlp.model --data train.csv --test-data test.csv --quant w8a8,frob", "unknown option 'frob'");
    /* Mistyped environment variables are errors, not silent fallbacks. */
    setenv("QAT_NUM_THREADS", "two", 1);
    expect_fail("inspect mlp.model", "QAT_NUM_THREADS='two'");
    unsetenv("QAT_NUM_THREADS");
    setenv("QRT_ISA", "avx512", 1);
    expect_fail("inspect mlp.model", "QRT_ISA='avx512'");
    unsetenv("QRT_ISA");
}

/* Issue 14's defects at the command line: paths that are not what they should be are
 * named for what they are, before any work; output lost to a full device fails. */
static void test_bad_paths_and_lost_output(void **state) {
    (void)state;
    static char out[1 << 14];
    char p[256], args[512];
    path(p, sizeof p, "empty.safetensors");
    fclose(fopen(p, "w"));
    expect_fail("eval empty.safetensors", "empty file (0 bytes)");
    path(p, sizeof p, "adir.safetensors");
    assert_int_equal(mkdir(p, 0755), 0);
    expect_fail("eval adir.safetensors", "adir.safetensors: is a directory");
    expect_fail("train --from adir.safetensors --quant w8a8", "is a directory");
    /* --out into a directory that does not exist, onto a directory, onto a FIFO: refused
     * before the first epoch (no progress line), the FIFO left a FIFO. */
    snprintf(args, sizeof args, "%s --epochs 1 --out no/such/dir/x.st", TRAIN);
    expect_fail(args, "no/such/dir/x.st: cannot create a file in its directory");
    snprintf(args, sizeof args, "train --model mlp.model --data train.csv --test-data test.csv --epochs 1 --out adir.safetensors");
    if (qat(out, sizeof out, args) == 0 || !strstr(out, "exists and is a directory") || strstr(out, "epoch"))
        fail_msg("--out onto a directory, not refused before training: %s", out);
    path(p, sizeof p, "fifo.st");
    assert_int_equal(mkfifo(p, 0644), 0);
    snprintf(args, sizeof args, "%s --epochs 1 --out fifo.st", TRAIN);
    expect_fail(args, "exists and is a FIFO");
    struct stat st;
    assert_int_equal(lstat(p, &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
    /* stdout on a full device: exit status 1 and a message (it was 0, output lost). */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cd %s && %s inspect mlp.model > /dev/full 2> full.err", dir, QAT_CLI_PATH);
    int rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    path(p, sizeof p, "full.err");
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    fclose(f);
    if (!strstr(out, "writing the standard output failed")) fail_msg("no message for lost output: %s", out);
}

/* qat import: an ONNX model (tests/fixtures/onnx/mlp6.onnx, 6 features, 3 classes) is a
 * float checkpoint at once: evaluated, calibrated, exported and run without a training
 * epoch; qat train --import takes it too; an unsupported op names the node. */
static void test_import(void **state) {
    (void)state;
    static char out[1 << 16];
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "import %s/onnx/mlp6.onnx --data train.csv --out imp.safetensors", QAT_FIXTURE_DIR);
    if (qat(out, sizeof out, cmd) != 0) fail_msg("import failed: %s", out);
    if (!strstr(out, "-> 0.weight") || !strstr(out, "-> 2.bias")) fail_msg("no mapping printed: %s", out);
    if (qat(out, sizeof out, "eval imp.safetensors --data test.csv --json") != 0) fail_msg("eval: %s", out);
    double acc = test_json_number(out, "test_accuracy");
    assert_true(acc >= 0.0 && acc <= 1.0);
    if (qat(out, sizeof out, "calibrate --from imp.safetensors --data train.csv --samples 64 --out imp_q.safetensors --quiet") != 0)
        fail_msg("calibrate: %s", out);
    /* Export needs uint8 images: a CNN on Fashion-MNIST (qat's default data). */
    snprintf(cmd, sizeof cmd, "import %s/onnx/fmnist_tiny.onnx --out tiny.safetensors --quiet", QAT_FIXTURE_DIR);
    if (qat(out, sizeof out, cmd) != 0) fail_msg("import: %s", out);
    if (qat(out, sizeof out, "calibrate --from tiny.safetensors --samples 256 --out tiny_q.safetensors --quiet") != 0)
        fail_msg("calibrate: %s", out);
    if (qat(out, sizeof out, "export tiny_q.safetensors --out tiny.int8.safetensors") != 0) fail_msg("export: %s", out);
    if (qat(out, sizeof out, "eval tiny.int8.safetensors --json") != 0) fail_msg("int8 eval: %s", out);
    snprintf(cmd, sizeof cmd,
             "train --import %s/onnx/mlp6.onnx --data train.csv --test-data test.csv --epochs 1 --batch 16 --quiet "
             "--out imp_t.safetensors",
             QAT_FIXTURE_DIR);
    if (qat(out, sizeof out, cmd) != 0) fail_msg("train --import: %s", out);
    if (qat(out, sizeof out, "train --from imp.safetensors --data train.csv --test-data test.csv --quant w8a8 "
                             "--batch 16 --quiet --out imp_qat.safetensors") != 0)
        fail_msg("train --from an imported checkpoint: %s", out);
    snprintf(cmd, sizeof cmd, "import %s/onnx/unsupported.onnx --out x.safetensors", QAT_FIXTURE_DIR);
    assert_int_equal(qat(out, sizeof out, cmd), 1);
    if (!strstr(out, "'/Elu' (Elu)") || !strstr(out, "not supported")) fail_msg("message: %s", out);
    snprintf(cmd, sizeof cmd, "import %s/onnx/state_dict.safetensors --out x.safetensors", QAT_FIXTURE_DIR);
    assert_int_equal(qat(out, sizeof out, cmd), 1);
    if (!strstr(out, "--model")) fail_msg("message: %s", out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_json_resume_eval_inspect),
        cmocka_unit_test(test_optim8_resume),
        cmocka_unit_test(test_lora_merge),
        cmocka_unit_test(test_quantization),
        cmocka_unit_test(test_legacy_checkpoints),
        cmocka_unit_test(test_help_everywhere),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_bad_paths_and_lost_output),
        cmocka_unit_test(test_import),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

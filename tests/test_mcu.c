/* test_mcu.c - `qat export --format c` and the Cortex-M firmware of examples/mcu, judged
 * by qemu: a small CNN that uses every integer op of the runtime (dense, depthwise, 1x1
 * and strided convs, max and average pools, a residual add, a lookup table (hard-swish),
 * global average pooling, linear) is trained for one epoch, calibrated at w8a8 and w4a8, exported as C source
 * with 100 test images, built with arm-none-eabi-gcc for the MPS2 AN385 (Cortex-M3; w4
 * also for the AN505, Cortex-M33) and run under qemu-system-arm. Every image's label, prediction and int8 logits printed by
 * the firmware must equal the host runtime's on the same int8 file, and the firmware must
 * hold that file's bytes (FNV-1a) and find the model memory and arena sizes the header
 * states. The cross compiler and qemu are required: missing, the test fails (run
 * scripts/bootstrap.sh); it never skips. Also: the export's refusals of bad input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/dataset.h"
#include "runtime/runtime.h"
#include "testutil.h"

#define N_IMAGES 100

static char dir[64];
static bool trained;

static const char *SMALL_MODEL =
    "# every integer op of the runtime\n"
    "input 1 28 28\n"
    "conv2d out=8 kernel=3 pad=1\nbatchnorm\nrelu\nmaxpool kernel=2\n"
    "residual\n"
    "  conv2d out=8 kernel=3 pad=1 groups=8\n  batchnorm\n  relu\n"
    "  conv2d out=8 kernel=1\n  batchnorm\n"
    "end\n"
    "relu\navgpool kernel=2\n"
    "conv2d out=16 kernel=3 stride=2 pad=1\nhardswish\n"
    "global_avgpool\nlinear out=10\n";

static int qat(char *out, size_t n, const char *args) { return test_run_cli(dir, QAT_CLI_PATH, out, n, args); }

static void qat_ok(const char *args) {
    static char out[1 << 16];
    int rc = qat(out, sizeof out, args);
    if (rc != 0) fail_msg("qat %s: exit %d\n%s", args, rc, out);
}

/* Runs a shell command in dir with its output into dir/<log>; returns its exit status. */
static int sh(const char *cmd, const char *log) {
    char full[8192];
    snprintf(full, sizeof full, "cd %s && (%s) > %s 2>&1", dir, cmd, log);
    int st = system(full);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* dir/name, whole and NUL-terminated. */
static char *slurp(const char *name, size_t *len) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return test_read_file(p, len);
}

static void require_tool(const char *tool, const char *package) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s > /dev/null 2>&1", tool);
    if (system(cmd) != 0)
        fail_msg("%s is missing (Debian package %s): run scripts/bootstrap.sh; this test needs it "
                 "and does not skip", tool, package);
}

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/qat_test_mcu_XXXXXX");
    if (!mkdtemp(dir)) return -1;
    char p[128];
    snprintf(p, sizeof p, "%s/small.model", dir);
    FILE *f = fopen(p, "w");
    if (!f) return -1;
    fputs(SMALL_MODEL, f);
    fclose(f);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* One epoch of the small CNN (once per run). */
static void train_once(void) {
    if (trained) return;
    qat_ok("train --model small.model --epochs 1 --seed 1 --out small.st --quiet");
    trained = true;
}

static uint32_t fnv1a(const uint8_t *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

/* The arena plan of the loaded model: values alive together never share bytes, every
 * value fits, and the arena is the bound of the chain: the largest sum of the buffers
 * alive at one op (graph.c's greedy plan reaches it on these models; first fit did not). */
static void check_arena_plan(const qrt_model *m) {
    size_t bound = 0;
    for (int op = 0; op < m->n_ops; op++) {
        size_t live = 0;
        for (int i = 0; i < m->n_values; i++) {
            const qrt_value *a = &m->values[i];
            if (a->alias == i && a->producer <= op && op <= a->last_use) live += ((size_t)a->numel + 15) / 16 * 16;
        }
        if (live > bound) bound = live;
    }
    for (int i = 0; i < m->n_values; i++) {
        const qrt_value *a = &m->values[i];
        if (a->offset + (size_t)a->numel > m->arena_size) fail_msg("value %d exceeds the arena", i);
        if (a->alias != i) continue;
        for (int j = 0; j < i; j++) {
            const qrt_value *b = &m->values[j];
            if (b->alias != j) continue;
            bool together = a->producer <= b->last_use && b->producer <= a->last_use;
            bool overlap = a->offset < b->offset + (size_t)b->numel && b->offset < a->offset + (size_t)a->numel;
            if (together && overlap) fail_msg("values %d and %d are alive together and overlap", j, i);
        }
    }
    if (m->arena_size != bound) fail_msg("arena %zu bytes, the bound is %zu", m->arena_size, bound);
}

/* Exports `ckpt` as C source into <sub>/, builds the firmware for `board` (an385: the
 * Cortex-M3, an505: the Cortex-M33), runs it in qemu and compares every image with the
 * host runtime on <sub>/qat_model.int8. */
static void firmware_matches_host(const char *ckpt, const char *sub, const char *board) {
    require_tool("arm-none-eabi-gcc", "gcc-arm-none-eabi");
    require_tool("qemu-system-arm", "qemu-system-arm");
    require_tool("make", "make");
    char cmd[4096], log[64], name[128];
    snprintf(cmd, sizeof cmd, "export %s --format c --out %s --images %d", ckpt, sub, N_IMAGES);
    qat_ok(cmd);
    /* newlib's rdimon must be there too: the build fails clearly without it. */
    snprintf(log, sizeof log, "%s-%s-build.log", sub, board);
    /* -Werror: the runtime must compile cleanly for the Cortex-M too (int32_t is long there). */
    snprintf(cmd, sizeof cmd, "make -C %s/examples/mcu MODEL_DIR=%s/%s BUILD=%s/%s-%s-fw BOARD=%s WERROR=-Werror",
             QAT_SOURCE_DIR, dir, sub, dir, sub, board, board);
    if (sh(cmd, log)) {
        char *b = slurp(log, NULL);
        fail_msg("the firmware does not build (gcc-arm-none-eabi and libnewlib-arm-none-eabi: run "
                 "scripts/bootstrap.sh):\n%s", b);
    }
    snprintf(log, sizeof log, "%s-%s-qemu.log", sub, board);
    snprintf(cmd, sizeof cmd,
             "timeout 120 qemu-system-arm -machine mps2-%s -nographic -monitor none -serial none "
             "-semihosting-config enable=on,target=native -icount shift=0 -kernel %s-%s-fw/firmware.elf",
             board, sub, board);
    int rc = sh(cmd, log);
    char *out = slurp(log, NULL);
    if (rc != 0 || !strstr(out, "\ndone\n")) fail_msg("qemu exited with %d:\n%s", rc, out);

    /* The host runtime on the same file and the same images. */
    snprintf(name, sizeof name, "%s/qat_model.int8", sub);
    size_t len;
    uint8_t *file = (uint8_t *)slurp(name, &len);
    size_t ms = qrt_model_mem_size(file, len);
    void *mem = malloc(ms);
    qrt_model m;
    qrt_error err;
    assert_non_null(mem);
    if (qrt_model_load(&m, file, len, mem, ms, &err)) fail_msg("%s: %s", name, err.msg);
    void *arena = malloc(qrt_arena_size(&m));
    assert_non_null(arena);
    const int K = qrt_model_n_outputs(&m);
    assert_int_equal(K, 10);
    qat_dataset test;
    qat_error qe = {0};
    if (qat_dataset_load_mnist(&test, QAT_FASHION_MNIST_DIR, QAT_SPLIT_TEST, &qe)) fail_msg("%s", qe.msg);

    const char *p = strstr(out, "model ");
    unsigned bytes, mem_used, mem_size, arena_used, arena_size;
    unsigned long hash;
    if (!p || sscanf(p, "model %u bytes fnv1a %lx mem %u/%u arena %u/%u", &bytes, &hash, &mem_used, &mem_size,
                     &arena_used, &arena_size) != 6)
        fail_msg("no model line in the firmware's output:\n%s", out);
    assert_int_equal(bytes, len);
    assert_int_equal(hash, fnv1a(file, len));
    assert_int_equal(mem_used, mem_size);
    assert_int_equal(arena_used, arena_size);
    /* The arena is the same on both targets; the header said so too. */
    assert_int_equal(arena_size, qrt_arena_size_portable(&m));

    check_arena_plan(&m);

    int checked = 0, agree = 0;
    for (int i = 0; i < N_IMAGES; i++) {
        char key[32];
        snprintf(key, sizeof key, "\nimage %d ", i);
        const char *q = strstr(out, key);
        if (!q) fail_msg("image %d missing from the firmware's output:\n%s", i, out);
        int idx, label, pred, n = 0, fw[10];
        if (sscanf(q + 1, "image %d label %d pred %d logits%n", &idx, &label, &pred, &n) != 3 || !n)
            fail_msg("bad line for image %d", i);
        q += 1 + n;
        for (int k = 0; k < K; k++) {
            char *e;
            fw[k] = (int)strtol(q, &e, 10);
            if (e == q) fail_msg("image %d: logit %d missing", i, k);
            q = e;
        }
        int8_t host[10];
        int host_pred;
        assert_int_equal(qrt_run(&m, test.pixels + (size_t)i * (size_t)test.dim, arena, host, &host_pred),
                         QRT_STATUS_OK);
        if (label != test.labels[i]) fail_msg("image %d: the firmware's label %d, the data set's %d", i, label,
                                              test.labels[i]);
        if (pred != host_pred) fail_msg("image %d: the firmware predicts %d, the host runtime %d", i, pred, host_pred);
        for (int k = 0; k < K; k++)
            if (fw[k] != host[k])
                fail_msg("image %d: logit %d is %d on the Cortex-M3, %d on the host", i, k, fw[k], host[k]);
        checked++;
        agree += pred == label;
    }
    assert_int_equal(checked, N_IMAGES);
    const char *summary = strstr(out, "correct ");
    print_message("%s on %s: %d images identical to the host runtime (%d correct); %.*s\n", sub, board, checked, agree,
                  summary ? (int)strcspn(summary, "\n") : 0, summary ? summary : "");
    qat_dataset_free(&test);
    free(arena);
    free(mem);
    free(file);
    free(out);
}

static void test_firmware_w8(void **state) {
    (void)state;
    train_once();
    qat_ok("calibrate --from small.st --quant w8a8 --samples 256 --out s8.st --quiet");
    firmware_matches_host("s8.st", "w8", "an385");
}

static void test_firmware_w4(void **state) {
    (void)state;
    train_once();
    qat_ok("calibrate --from small.st --quant w4a8 --samples 256 --out s4.st --quiet");
    firmware_matches_host("s4.st", "w4", "an385");
    firmware_matches_host("s4.st", "w4", "an505");
}

/* The header states the sizes; the source is the int8 file's bytes. */
static void test_export_c_files(void **state) {
    (void)state;
    train_once();
    qat_ok("calibrate --from small.st --quant w8a8 --samples 256 --out s8h.st --quiet");
    qat_ok("export s8h.st --format c --out hdr --name my_net");
    char *h = slurp("hdr/my_net.h", NULL), *c = slurp("hdr/my_net.c", NULL);
    assert_non_null(strstr(h, "#define MY_NET_ARENA_SIZE "));
    assert_non_null(strstr(h, "#define MY_NET_MEM_SIZE QRT_MODEL_MEM_SIZE_PORTABLE("));
    assert_non_null(strstr(h, "#define MY_NET_INPUT_SIZE 784\n"));
    assert_non_null(strstr(h, "#define MY_NET_N_CLASSES 10\n"));
    assert_non_null(strstr(h, "extern const unsigned char my_net_data[MY_NET_BYTES];"));
    assert_non_null(strstr(c, "\"T-shirt/top\",\n"));
    assert_non_null(strstr(c, "\"Ankle boot\",\n"));
    /* The array holds the file's bytes, in order. */
    size_t len;
    uint8_t *file = (uint8_t *)slurp("hdr/my_net.int8", &len);
    const char *p = strstr(c, "my_net_data[MY_NET_BYTES] MY_NET_ALIGNED_ = {");
    assert_non_null(p);
    p = strchr(p, '{') + 1;
    for (size_t i = 0; i < len; i++) {
        char *e;
        unsigned long v = strtoul(p, &e, 16);
        if (e == p || v != file[i]) fail_msg("byte %zu of the array differs from the file", i);
        p = e + 1; /* the comma */
    }
    assert_non_null(strstr(p, "};"));
    /* No images without --images. */
    struct stat sb;
    char path[128];
    snprintf(path, sizeof path, "%s/hdr/my_net_images.c", dir);
    assert_int_not_equal(stat(path, &sb), 0);
    free(file);
    free(h);
    free(c);
}

static void test_export_c_refusals(void **state) {
    (void)state;
    static char out[1 << 16];
    train_once();
    qat_ok("calibrate --from small.st --quant w8a8 --samples 64 --out s8r.st --quiet");
    /* A name that is not a C identifier (and would be a path). */
    assert_int_not_equal(qat(out, sizeof out, "export s8r.st --format c --out bad --name ../evil"), 0);
    assert_non_null(strstr(out, "--name must be a C identifier"));
    assert_int_not_equal(qat(out, sizeof out, "export s8r.st --format c --out bad --name 9lives"), 0);
    /* Names the implementation or the runtime own: _x, and QRT_RUNTIME (its header's guard
     * would be runtime.h's own, QRT_RUNTIME_H, and the header would not compile). */
    assert_int_not_equal(qat(out, sizeof out, "export s8r.st --format c --out bad --name _x"), 0);
    assert_int_not_equal(qat(out, sizeof out, "export s8r.st --format c --out bad --name QRT_RUNTIME"), 0);
    assert_non_null(strstr(out, "not beginning with qrt_"));
    /* --out names a file, not a directory. */
    assert_int_not_equal(qat(out, sizeof out, "export s8r.st --format c --out small.model"), 0);
    assert_non_null(strstr(out, "small.model: not a directory"));
    assert_int_not_equal(qat(out, sizeof out, "export s8r.st --format c --out d --images -1"), 0);
    assert_non_null(strstr(out, "--images"));
    /* A float checkpoint, an unknown format. */
    assert_int_not_equal(qat(out, sizeof out, "export small.st --format c --out d"), 0);
    assert_non_null(strstr(out, "needs a quantized checkpoint"));
    assert_int_not_equal(qat(out, sizeof out, "export s8r.st --format cpp --out d"), 0);
    assert_non_null(strstr(out, "unknown --format 'cpp' (int8, onnx, c)"));
    /* Images from data that do not fit the model: a CSV file of features. */
    char p[128];
    snprintf(p, sizeof p, "%s/feat.csv", dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs("label,a,b\n0,1,2\n1,3,4\n", f);
    fclose(f);
    assert_int_not_equal(qat(out, sizeof out, "export s8r.st --format c --out d2 --images 5 --data feat.csv"), 0);
    assert_non_null(strstr(out, "feat.csv"));
    /* A data set that is not there: refused before anything is written. */
    assert_int_not_equal(qat(out, sizeof out, "export s8r.st --format c --out d3 --images 5 --data nowhere"), 0);
    assert_non_null(strstr(out, "nowhere"));
    snprintf(p, sizeof p, "%s/d3", dir);
    struct stat sb;
    if (stat(p, &sb) == 0) fail_msg("a refused export left %s behind", p);
    snprintf(p, sizeof p, "%s/bad", dir);
    if (stat(p, &sb) == 0) fail_msg("a refused export left %s behind", p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_export_c_refusals),
        cmocka_unit_test(test_export_c_files),
        cmocka_unit_test(test_firmware_w8),
        cmocka_unit_test(test_firmware_w4),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

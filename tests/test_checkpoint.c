/* test_checkpoint.c - safetensors reading and writing, qat checkpoints, weight import.
 *
 *  - the writer: every dtype, alignment, header padding, metadata escaping, bad
 *    arguments;
 *  - the reader: one hand-crafted file per validation rule, each refused with a message
 *    that names the file and the problem;
 *  - checkpoints: a round trip of model, buffers, optimizer state and metadata compared
 *    bit for bit; every kind of mismatch refused with the model left untouched;
 *  - atomicity: a child process saving in a loop is SIGKILLed 20 times at random
 *    moments; the file must load and be one whole checkpoint each time;
 *  - import: PyTorch's state_dict of a small conv/batch-norm/linear network
 *    (tests/fixtures/gen_checkpoint.py) gives PyTorch's eval-mode output.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "layers/model.h"
#include "optim/optim.h"
#include "testutil.h"
#include "train/checkpoint.h"

/* ---- scratch directory and file helpers ------------------------------------------------- */

/* The optimizer's whole state as one float array: every state tensor of today's kinds is
 * F32, and qat_optim_init lays them out one after the other. */
static float *ostate(const qat_optim *o) {
    for (int i = 0; i < o->n_tensors; i++) assert_int_equal(o->tensors[i].dtype, QAT_ST_DTYPE_F32);
    return o->mem;
}
static size_t ostate_n(const qat_optim *o) { return o->mem_bytes / sizeof(float); }

static char g_dir[256]; /* per-program scratch directory, made by the group setup */

static int group_setup(void **state) {
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/qat-test-checkpoint-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
            char p[600];
            snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
            if (unlink(p) != 0) rmdir(p); /* a directory left by a failed test */
        }
        closedir(d);
    }
    rmdir(g_dir);
    return 0;
}

/* A path in the scratch directory (static buffer rotation: up to 4 live at once). */
static const char *tpath(const char *name) {
    static char bufs[4][1024];
    static int k;
    char *b = bufs[k++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", g_dir, name);
    return b;
}

static void write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot write %s: %s", path, strerror(errno));
    if (n && fwrite(bytes, 1, n, f) != n) fail_msg("short write to %s", path);
    fclose(f);
}

/* A safetensors file by hand: the 8-byte length `n` (normally the header's length),
 * the header bytes, then data_len bytes of data (0, 1, 2, ... mod 251). */
static void write_raw(const char *path, uint64_t n, const char *header, size_t header_len,
                      size_t data_len) {
    size_t total = 8 + header_len + data_len;
    unsigned char *b = malloc(total);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(n >> (8 * i));
    memcpy(b + 8, header, header_len);
    for (size_t i = 0; i < data_len; i++) b[8 + header_len + i] = (unsigned char)(i % 251);
    write_bytes(path, b, total);
    free(b);
}

static void write_st(const char *path, const char *header, size_t data_len) {
    write_raw(path, strlen(header), header, strlen(header), data_len);
}

static bool file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Number of "<base>.tmp-*" files in the scratch directory. */
static int count_temps(const char *base) {
    DIR *d = opendir(g_dir);
    assert_non_null(d);
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s.tmp-", base);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

/* The call failed with `want`, and its message names the file and contains `needle`. */
static void assert_failed(qat_status got, const qat_error *err, qat_status want, const char *path,
                          const char *needle, const char *what) {
    if (got != want || err->status != want)
        fail_msg("%s: status %s (recorded %s), expected %s; message: %s", what, qat_status_str(got),
                 qat_status_str(err->status), qat_status_str(want), err->msg);
    if (path && !strstr(err->msg, path))
        fail_msg("%s: the message does not name the file %s: %s", what, path, err->msg);
    if (needle && !strstr(err->msg, needle))
        fail_msg("%s: the message lacks \"%s\": %s", what, needle, err->msg);
}

static void expect_read_fails(const char *path, qat_status want, const char *needle,
                              const char *what) {
    qat_st_file f;
    qat_error err = {0};
    qat_status st = qat_safetensors_read(&f, path, &err);
    assert_failed(st, &err, want, path, needle, what);
    assert_null(f.tensors); /* left zeroed */
    qat_safetensors_free(&f);
}

/* ---- models ------------------------------------------------------------------------------ */

/* The network of gen_checkpoint.py: input (1, 8, 8). */
static qat_model *small_cnn(uint64_t seed) {
    qat_rng rng;
    qat_rng_init(&rng, seed);
    qat_model *m = qat_model_new(3, (int[]){1, 8, 8});
    qat_model_conv2d(m, 4, 3, 1, 1, 1, true);
    qat_model_batchnorm(m);
    qat_model_relu(m);
    qat_model_maxpool(m, 2, 2, 0);
    qat_model_flatten(m);
    qat_model_linear(m, 16, true);
    qat_model_relu(m);
    qat_model_linear(m, 10, true);
    if (qat_model_finalize(m, &rng) != QAT_STATUS_OK) fail_msg("finalize: %s", m->err.msg);
    return m;
}

/* A residual network with batch norm inside the block and a shortcut conv, so names like
 * "3.body.1.running_mean" and "3.shortcut.0.weight" occur. `width` changes the shapes. */
static qat_model *residual_net(uint64_t seed, int width, bool extra_layer) {
    qat_rng rng;
    qat_rng_init(&rng, seed);
    qat_model *m = qat_model_new(3, (int[]){1, 8, 8});
    qat_model_conv2d(m, width, 3, 1, 1, 1, true);
    qat_model_batchnorm(m);
    qat_model_relu(m);
    qat_model_residual_begin(m);
    qat_model_conv2d(m, width, 3, 1, 1, 1, false);
    qat_model_batchnorm(m);
    qat_model_relu(m);
    qat_model_conv2d(m, width, 3, 1, 1, 1, true);
    qat_model_residual_shortcut(m);
    qat_model_conv2d(m, width, 1, 1, 0, 1, true);
    qat_model_residual_end(m);
    qat_model_flatten(m);
    qat_model_linear(m, 10, true);
    if (extra_layer) {
        qat_model_relu(m);
        qat_model_linear(m, 10, true);
    }
    if (qat_model_finalize(m, &rng) != QAT_STATUS_OK) fail_msg("finalize: %s", m->err.msg);
    return m;
}

static qat_model *linear_net(int in, int hidden, int out, uint64_t seed) {
    qat_rng rng;
    qat_rng_init(&rng, seed);
    qat_model *m = qat_model_new(1, (int[]){in});
    qat_model_linear(m, hidden, true);
    qat_model_relu(m);
    qat_model_linear(m, out, true);
    if (qat_model_finalize(m, &rng) != QAT_STATUS_OK) fail_msg("finalize: %s", m->err.msg);
    return m;
}

static qat_optim make_optim(qat_optim_kind kind, double momentum, size_t n) {
    qat_optim_config cfg = qat_optim_config_default(kind);
    cfg.lr = 3e-4;
    cfg.weight_decay = 0.0123;
    cfg.momentum = momentum;
    qat_optim o;
    qat_error err = {0};
    if (qat_optim_init(&o, &cfg, n, &err) != QAT_STATUS_OK) fail_msg("optim: %s", err.msg);
    return o;
}

static qat_checkpoint_meta default_meta(void) {
    qat_checkpoint_meta meta = {.model = "model text\n", .epoch = 1, .step = 2};
    qat_rng_init(&meta.rng, 5);
    return meta;
}

static void save_or_fail(const char *path, const qat_model *m, const qat_optim *o,
                         const qat_checkpoint_meta *meta) {
    qat_error err = {0};
    if (qat_checkpoint_save(path, m, o, meta, &err) != QAT_STATUS_OK) fail_msg("save: %s", err.msg);
}

/* ---- dtypes and the writer --------------------------------------------------------------- */

static void test_dtypes(void **state) {
    (void)state;
    static const char *names[] = {"BOOL", "U8",  "I8",  "F8_E5M2", "F8_E4M3", "I16", "U16", "F16",
                                  "BF16", "I32", "U32", "F32",     "I64",     "U64", "F64"};
    static const size_t sizes[] = {1, 1, 1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8};
    assert_int_equal(QAT_ST_DTYPE_COUNT, 15);
    for (int i = 0; i < QAT_ST_DTYPE_COUNT; i++) {
        qat_st_dtype d;
        assert_string_equal(qat_st_dtype_str((qat_st_dtype)i), names[i]);
        assert_int_equal(qat_st_dtype_size((qat_st_dtype)i), sizes[i]);
        assert_true(qat_st_dtype_from_str(names[i], &d));
        assert_int_equal(d, i);
    }
    qat_st_dtype d;
    assert_false(qat_st_dtype_from_str("f32", &d));
    assert_false(qat_st_dtype_from_str("F4", &d));
    assert_string_equal(qat_st_dtype_str(QAT_ST_DTYPE_COUNT), "unknown");
}

/* Tensors of every width, a scalar, an empty tensor and odd byte counts: everything
 * reads back, each tensor aligned for its dtype, and the header is padded to 8. */
static void test_write_read_all_dtypes(void **state) {
    (void)state;
    const char *path = tpath("dtypes.safetensors");
    float f32[6] = {1, -2, 3.5f, 0, -0.0f, 1e-30f};
    int8_t i8[5] = {-128, -1, 0, 1, 127};
    uint8_t u8[3] = {0, 128, 255};
    int32_t i32[4] = {INT32_MIN, -1, 1, INT32_MAX};
    int64_t i64 = INT64_MIN + 3;
    double f64[2] = {0.1, -1e300};
    uint16_t f16[3] = {0x3C00, 0xC000, 0x0001};
    uint8_t b[1] = {1};
    qat_st_tensor ts[] = {
        {.name = "i8", .dtype = QAT_ST_DTYPE_I8, .ndim = 1, .shape = {5}, .data = i8},
        {.name = "f32", .dtype = QAT_ST_DTYPE_F32, .ndim = 2, .shape = {2, 3}, .data = f32},
        {.name = "u8", .dtype = QAT_ST_DTYPE_U8, .ndim = 1, .shape = {3}, .data = u8},
        {.name = "f16", .dtype = QAT_ST_DTYPE_F16, .ndim = 1, .shape = {3}, .data = f16},
        {.name = "i32", .dtype = QAT_ST_DTYPE_I32, .ndim = 2, .shape = {2, 2}, .data = i32},
        {.name = "scalar", .dtype = QAT_ST_DTYPE_I64, .ndim = 0, .data = &i64},
        {.name = "empty", .dtype = QAT_ST_DTYPE_F32, .ndim = 2, .shape = {0, 4}, .data = NULL},
        {.name = "f64", .dtype = QAT_ST_DTYPE_F64, .ndim = 1, .shape = {2}, .data = f64},
        {.name = "bool", .dtype = QAT_ST_DTYPE_BOOL, .ndim = 1, .shape = {1}, .data = b},
        {.name = "na\"me\\ \xc2\xb5", .dtype = QAT_ST_DTYPE_U8, .ndim = 1, .shape = {1}, .data = b},
    };
    size_t nt = sizeof ts / sizeof *ts;
    qat_st_kv meta[] = {
        {"note", "quote \" backslash \\ newline \n tab \t ctrl \x01 micro \xc2\xb5"},
        {"empty", ""}};
    qat_error err = {0};
    assert_int_equal(qat_safetensors_write(path, ts, nt, meta, 2, &err), QAT_STATUS_OK);
    assert_int_equal(count_temps("dtypes.safetensors"), 0);

    qat_st_file f;
    if (qat_safetensors_read(&f, path, &err)) fail_msg("read: %s", err.msg);
    assert_int_equal(f.n_tensors, nt);
    assert_int_equal(f.header_len % 8, 0);
    assert_string_equal(f.path, path);
    /* Data order: 8-byte types, then 4, 2, 1, each group in the order given. */
    const char *order[] = {"scalar", "f64", "f32", "i32", "empty", "f16",
                           "i8",     "u8",  "bool", "na\"me\\ \xc2\xb5"};
    for (size_t i = 0; i < nt; i++) assert_string_equal(f.tensors[i].name, order[i]);
    for (size_t i = 0; i < nt; i++) {
        const qat_st_tensor *t = qat_safetensors_find(&f, ts[i].name);
        assert_non_null(t);
        assert_int_equal(t->dtype, ts[i].dtype);
        assert_int_equal(t->ndim, ts[i].ndim);
        for (int d = 0; d < t->ndim; d++) assert_int_equal(t->shape[d], ts[i].shape[d]);
        size_t numel = 1;
        for (int d = 0; d < ts[i].ndim; d++) numel *= (size_t)ts[i].shape[d];
        assert_int_equal(t->numel, numel);
        assert_int_equal(t->nbytes, numel * qat_st_dtype_size(t->dtype));
        if (t->nbytes) assert_memory_equal(t->data, ts[i].data, t->nbytes);
        assert_int_equal((uintptr_t)t->data % qat_st_dtype_size(t->dtype), 0);
    }
    assert_null(qat_safetensors_find(&f, "F32"));
    assert_null(qat_safetensors_find(&f, ""));
    assert_int_equal(f.n_meta, 2);
    assert_string_equal(qat_safetensors_meta(&f, "note"), meta[0].value);
    assert_string_equal(qat_safetensors_meta(&f, "empty"), "");
    assert_null(qat_safetensors_meta(&f, "format"));
    qat_safetensors_free(&f);

    /* The raw bytes: N little-endian, JSON (with __metadata__ first), spaces to a multiple
     * of 8, then the data. */
    FILE *fp = fopen(path, "rb");
    unsigned char len8[8];
    assert_int_equal(fread(len8, 1, 8, fp), 8);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)len8[i] << (8 * i);
    char *hdr = calloc(n + 1, 1);
    assert_int_equal(fread(hdr, 1, n, fp), n);
    fclose(fp);
    assert_int_equal(n % 8, 0);
    assert_memory_equal(hdr, "{\"__metadata__\":{", 17);
    size_t end = n;
    while (end > 0 && hdr[end - 1] == ' ') end--;
    assert_true(n - end < 8);
    assert_int_equal(hdr[end - 1], '}');
    cJSON *j = cJSON_Parse(hdr);
    assert_non_null(j);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "f32");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(e, "dtype")->valuestring, "F32");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    assert_int_equal(cJSON_GetArrayItem(off, 0)->valueint, 16 + 8); /* after scalar, f64 */
    assert_int_equal(cJSON_GetArrayItem(off, 1)->valueint, 16 + 8 + 24);
    cJSON_Delete(j);
    free(hdr);
}

static void test_write_rejects_bad_arguments(void **state) {
    (void)state;
    const char *path = tpath("bad_args.safetensors");
    float x[2] = {1, 2};
    qat_st_tensor good = {.name = "a", .dtype = QAT_ST_DTYPE_F32, .ndim = 1, .shape = {2},
                          .data = x};
    struct {
        qat_st_tensor t[2];
        size_t nt;
        qat_st_kv kv[2];
        size_t nkv;
        const char *needle;
    } cases[] = {
        {{good, good}, 2, {{0}}, 0, "two tensors are named 'a'"},
        {{{.name = "__metadata__", .ndim = 1, .shape = {2}, .data = x}}, 1, {{0}}, 0, "reserved"},
        {{{.name = "bad\xff", .ndim = 1, .shape = {2}, .data = x}}, 1, {{0}}, 0, "UTF-8"},
        {{{.name = "neg", .ndim = 1, .shape = {-2}, .data = x}}, 1, {{0}}, 0, "dim 0 is -2"},
        {{{.name = "deep", .ndim = 9, .data = x}}, 1, {{0}}, 0, "ndim 9"},
        {{{.name = "big", .ndim = 3, .shape = {1LL << 40, 1LL << 40, 1LL << 40}, .data = x}},
         1, {{0}}, 0, "overflows"},
        {{good}, 1, {{"k", "v"}, {"k", "w"}}, 2, "metadata key 'k' given twice"},
        {{good}, 1, {{"k", "\xc0\xaf"}}, 1, "not valid UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        qat_error err = {0};
        qat_status st =
            qat_safetensors_write(path, cases[i].t, cases[i].nt, cases[i].kv, cases[i].nkv, &err);
        char what[64];
        snprintf(what, sizeof what, "bad write case %zu", i);
        assert_failed(st, &err, QAT_STATUS_INVALID_ARG, path, cases[i].needle, what);
        assert_false(file_exists(path));
    }
    assert_int_equal(count_temps("bad_args.safetensors"), 0);

    /* A directory that does not exist: an I/O error naming the file. */
    const char *nodir = tpath("no/such/dir/x.safetensors");
    qat_error err = {0};
    assert_failed(qat_safetensors_write(nodir, &good, 1, NULL, 0, &err), &err, QAT_STATUS_IO, nodir,
                  "cannot create the temporary file", "missing directory");
    /* The target is a directory: refused before anything is written (issue 14). */
    const char *dirpath = tpath("a_directory");
    assert_int_equal(mkdir(dirpath, 0755), 0);
    qat_error_clear(&err);
    assert_failed(qat_safetensors_write(dirpath, &good, 1, NULL, 0, &err), &err, QAT_STATUS_IO,
                  dirpath, "exists and is a directory", "target is a directory");
    assert_int_equal(count_temps("a_directory"), 0);
    rmdir(dirpath);
    /* A FIFO (or a device: /dev/null as root) is refused and stays what it was; before,
     * the rename replaced it with a regular file. */
    const char *fifo = tpath("a_fifo");
    assert_int_equal(mkfifo(fifo, 0644), 0);
    qat_error_clear(&err);
    assert_failed(qat_safetensors_write(fifo, &good, 1, NULL, 0, &err), &err, QAT_STATUS_IO, fifo,
                  "exists and is a FIFO", "target is a FIFO");
    struct stat st;
    assert_int_equal(lstat(fifo, &st), 0);
    assert_true(S_ISFIFO(st.st_mode));
    assert_int_equal(count_temps("a_fifo"), 0);
    unlink(fifo);
    /* A rewritten file keeps its permission bits (it came back 0644 from 0600). */
    const char *priv = tpath("private.safetensors");
    qat_error_clear(&err);
    if (qat_safetensors_write(priv, &good, 1, NULL, 0, &err)) fail_msg("write: %s", err.msg);
    assert_int_equal(chmod(priv, 0600), 0);
    if (qat_safetensors_write(priv, &good, 1, NULL, 0, &err)) fail_msg("rewrite: %s", err.msg);
    assert_int_equal(stat(priv, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(chmod(priv, 0640), 0);
    if (qat_safetensors_write(priv, &good, 1, NULL, 0, &err)) fail_msg("rewrite: %s", err.msg);
    assert_int_equal(stat(priv, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0640);
}

/* ---- the reader's validation ------------------------------------------------------------- */

static void test_read_rejects_bad_lengths(void **state) {
    (void)state;
    const char *path = tpath("len.safetensors");
    write_bytes(path, "", 0);
    expect_read_fails(path, QAT_STATUS_FORMAT, "empty", "empty file");
    write_bytes(path, "\x02\0\0\0\0", 5);
    expect_read_fails(path, QAT_STATUS_FORMAT, "only 5 bytes", "5-byte file");
    write_raw(path, 40, "{}", 2, 0);
    expect_read_fails(path, QAT_STATUS_FORMAT, "header length 40 exceeds the 2 bytes",
                      "header longer than the file");
    write_raw(path, 200000000, "{}      ", 8, 0);
    expect_read_fails(path, QAT_STATUS_FORMAT, "over the 100000000-byte limit",
                      "header over the limit");
    write_raw(path, UINT64_MAX, "{}      ", 8, 0);
    expect_read_fails(path, QAT_STATUS_FORMAT, "limit", "header length 2^64 - 1");
    write_raw(path, 1, "{", 1, 0);
    expect_read_fails(path, QAT_STATUS_FORMAT, "too short", "1-byte header");
    write_raw(path, 0, "", 0, 0);
    expect_read_fails(path, QAT_STATUS_FORMAT, "too short", "0-byte header");
    write_raw(path, 8, "{}\0     ", 8, 0);
    expect_read_fails(path, QAT_STATUS_FORMAT, "NUL byte at offset 2", "NUL in the header");

    /* A real file cut short at every interesting place. */
    float x[4] = {1, 2, 3, 4};
    qat_st_tensor t = {.name = "x", .dtype = QAT_ST_DTYPE_F32, .ndim = 1, .shape = {4}, .data = x};
    qat_error err = {0};
    assert_int_equal(qat_safetensors_write(path, &t, 1, NULL, 0, &err), QAT_STATUS_OK);
    struct stat sb;
    stat(path, &sb);
    size_t size = (size_t)sb.st_size;
    unsigned char *bytes = malloc(size);
    FILE *fp = fopen(path, "rb");
    assert_int_equal(fread(bytes, 1, size, fp), size);
    fclose(fp);
    const char *cut = tpath("cut.safetensors");
    write_bytes(cut, bytes, size - 1);
    expect_read_fails(cut, QAT_STATUS_FORMAT, "truncated file?", "cut in the data");
    write_bytes(cut, bytes, size - 16);
    expect_read_fails(cut, QAT_STATUS_FORMAT, "beyond the 0-byte data buffer", "data cut off");
    write_bytes(cut, bytes, 20);
    expect_read_fails(cut, QAT_STATUS_FORMAT, "exceeds the 12 bytes", "cut in the header");
    write_bytes(cut, bytes, 7);
    expect_read_fails(cut, QAT_STATUS_FORMAT, "only 7 bytes", "cut in the length");
    free(bytes);

    const char *missing = tpath("does_not_exist.safetensors");
    expect_read_fails(missing, QAT_STATUS_IO, "cannot open", "missing file");
    expect_read_fails(g_dir, QAT_STATUS_IO, "not a regular file", "a directory");
}

/* The damaged headers are shared with test_container (tests/testutil.c, st_bad_headers). */

static void test_read_rejects_bad_headers(void **state) {
    (void)state;
    const char *path = tpath("hdr.safetensors");
    for (size_t i = 0; i < n_st_bad_headers; i++) {
        const st_bad_header *c = &st_bad_headers[i];
        write_st(path, c->header, c->data_len);
        expect_read_fails(path, QAT_STATUS_FORMAT, c->needle, c->what);
    }
}

/* What the reader must accept: unpadded headers, no metadata, scalars, empty tensors,
 * zero-size tensors sharing an offset, whitespace after the JSON, unaligned tensors. */
static void test_read_accepts_valid_files(void **state) {
    (void)state;
    const char *path = tpath("ok.safetensors");
    qat_error err = {0};
    qat_st_file f;
    write_st(path, "{}", 0);
    assert_int_equal(qat_safetensors_read(&f, path, &err), QAT_STATUS_OK);
    assert_int_equal(f.n_tensors, 0);
    assert_int_equal(f.n_meta, 0);
    qat_safetensors_free(&f);

    write_st(path,
             "{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
             "\"b\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]},"
             "\"z\":{\"dtype\":\"I64\",\"shape\":[3,0],\"data_offsets\":[1,1]},"
             "\"a\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[1,5]},"
             "\"__metadata__\":{\"k\":\"v\"}}  \n ",
             5);
    if (qat_safetensors_read(&f, path, &err)) fail_msg("read: %s", err.msg);
    assert_int_equal(f.n_tensors, 4);
    assert_string_equal(f.tensors[3].name, "a"); /* ordered by offset */
    const qat_st_tensor *a = qat_safetensors_find(&f, "a");
    assert_int_equal(a->numel, 1);
    assert_int_equal((const unsigned char *)a->data - (const unsigned char *)f.tensors[0].data, 1);
    const qat_st_tensor *s = qat_safetensors_find(&f, "b");
    assert_int_equal(s->ndim, 0);
    assert_int_equal(s->numel, 1);
    assert_int_equal(qat_safetensors_find(&f, "z")->numel, 0);
    assert_string_equal(qat_safetensors_meta(&f, "k"), "v");
    /* "a" sits at offset 1, unaligned: to_f32 copies it all the same. */
    float v;
    assert_int_equal(qat_safetensors_to_f32(&v, a, &err), QAT_STATUS_OK);
    unsigned char want[4] = {1, 2, 3, 4};
    assert_memory_equal(&v, want, 4);
    qat_safetensors_free(&f);
    qat_safetensors_free(&f); /* freeing twice is harmless */
}

/* ---- conversion to float ----------------------------------------------------------------- */

static void test_to_f32(void **state) {
    (void)state;
    float out[8];
    qat_error err = {0};
    /* F16: 1, -2, 0.5, smallest subnormal 2^-24, largest subnormal, 65504, -0, inf. */
    uint16_t h[8] = {0x3C00, 0xC000, 0x3800, 0x0001, 0x03FF, 0x7BFF, 0x8000, 0x7C00};
    float hw[8] = {1, -2, 0.5f, 0x1p-24f, 1023 * 0x1p-24f, 65504, -0.0f, INFINITY};
    qat_st_tensor t = {.name = "h", .dtype = QAT_ST_DTYPE_F16, .ndim = 1, .shape = {8},
                       .numel = 8, .nbytes = 16, .data = h};
    assert_int_equal(qat_safetensors_to_f32(out, &t, &err), QAT_STATUS_OK);
    assert_memory_equal(out, hw, sizeof hw);
    uint16_t hnan = 0x7E00;
    t.data = &hnan;
    t.numel = 1;
    assert_int_equal(qat_safetensors_to_f32(out, &t, &err), QAT_STATUS_OK);
    assert_true(isnan(out[0]));

    /* BF16: the top half of a float. */
    uint16_t bf[3] = {0x3F80, 0xC0A0, 0x0001};
    float bw[3] = {1, -5, 0x1p-133f};
    t = (qat_st_tensor){.name = "bf", .dtype = QAT_ST_DTYPE_BF16, .numel = 3, .data = bf};
    assert_int_equal(qat_safetensors_to_f32(out, &t, &err), QAT_STATUS_OK);
    assert_memory_equal(out, bw, sizeof bw);

    /* F64: rounded to nearest; a finite value beyond float's range is refused. */
    double d[3] = {0.1, -1e-50, 3.4e38};
    t = (qat_st_tensor){.name = "d", .dtype = QAT_ST_DTYPE_F64, .numel = 3, .data = d};
    assert_int_equal(qat_safetensors_to_f32(out, &t, &err), QAT_STATUS_OK);
    assert_true(out[0] == 0.1f && out[1] == -0.0f && out[2] == 3.4e38f);
    double big[2] = {1, 1e39};
    t.data = big;
    t.numel = 2;
    assert_failed(qat_safetensors_to_f32(out, &t, &err), &err, QAT_STATUS_FORMAT, NULL,
                  "element 1 (1e+39) does not fit in a float", "F64 overflow");

    int32_t i[1] = {1};
    t = (qat_st_tensor){.name = "i", .dtype = QAT_ST_DTYPE_I32, .numel = 1, .data = i};
    qat_error_clear(&err);
    assert_failed(qat_safetensors_to_f32(out, &t, &err), &err, QAT_STATUS_FORMAT, NULL,
                  "'i' is I32", "I32 to float");
}

/* ---- checkpoints ------------------------------------------------------------------------- */

static void fill_model(qat_model *m, uint64_t seed) {
    fill_uniform(m->params, m->n_params, -1, 1, seed);
    fill_uniform(m->buffers, m->n_buffers, 0.1f, 2, seed + 1);
}

/* Save model + Adam + metadata; load; restore into a model and optimizer built from
 * other seeds; everything must be bit-identical. */
static void test_round_trip(void **state) {
    (void)state;
    const char *path = tpath("round_trip.safetensors");
    qat_model *m = residual_net(1, 4, false);
    fill_model(m, 10);
    qat_optim o = make_optim(QAT_OPTIM_ADAMW, 0, m->n_params);
    o.cfg.beta1 = 0.8;
    o.cfg.eps = 1.5e-7;
    fill_uniform(ostate(&o), ostate_n(&o), 0, 1, 11);
    o.step = 1234567;
    qat_st_kv extra[] = {{"mean", "0.2860"}, {"std", "0.3530"}, {"dataset", "fashion-mnist"},
                         {"metrics", "{\"val_acc\": 0.91}"}};
    const char *desc = "input 1 28 28\nconv 32 3 pad=1 # comment with \"quotes\" and \\ and µ\n";
    qat_checkpoint_meta meta = {.model = desc, .epoch = 12, .step = 34567, .extra = extra,
                                .n_extra = 4};
    qat_rng_init(&meta.rng, 99);
    for (int i = 0; i < 3; i++) qat_rng_u32(&meta.rng);
    meta.rng.state = UINT64_MAX - 2; /* all 64 bits survive */
    save_or_fail(path, m, &o, &meta);

    qat_checkpoint c;
    qat_error err = {0};
    if (qat_checkpoint_load(&c, path, &err)) fail_msg("load: %s", err.msg);
    assert_string_equal(c.model, desc);
    assert_int_equal(c.epoch, 12);
    assert_int_equal(c.step, 34567);
    assert_true(c.rng.state == meta.rng.state && c.rng.inc == meta.rng.inc);
    assert_true(c.has_optim);
    assert_int_equal(c.optim_step, 1234567);
    assert_int_equal(c.optim_cfg.kind, QAT_OPTIM_ADAMW);
    assert_true(c.optim_cfg.lr == o.cfg.lr && c.optim_cfg.beta1 == o.cfg.beta1 &&
                c.optim_cfg.beta2 == o.cfg.beta2 && c.optim_cfg.eps == o.cfg.eps &&
                c.optim_cfg.weight_decay == o.cfg.weight_decay);
    assert_int_equal(c.n_extra, 4);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(c.extra[i].key, extra[i].key); /* in the order given */
        assert_string_equal(qat_checkpoint_extra(&c, extra[i].key), extra[i].value);
    }
    assert_null(qat_checkpoint_extra(&c, "epoch")); /* reserved keys are not extras */
    /* The layout of docs/checkpoint.md. */
    const qat_st_file *f = &c.file;
    assert_string_equal(qat_safetensors_meta(f, "format"), "qat-checkpoint");
    assert_string_equal(qat_safetensors_meta(f, "format_version"), "1");
    assert_string_equal(qat_safetensors_meta(f, "epoch"), "12");
    assert_string_equal(qat_safetensors_meta(f, "rng_state"), "18446744073709551613");
    assert_string_equal(f->tensors[0].name, "0.weight");
    const char *names[] = {"1.running_mean", "3.body.1.running_var", "3.shortcut.0.weight",
                           "3.body.0.weight", "5.bias", "optim.exp_avg", "optim.exp_avg_sq"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        assert_non_null(qat_safetensors_find(f, names[i]));
    assert_null(qat_safetensors_find(f, "3.body.0.bias")); /* that conv has no bias */
    assert_int_equal(qat_safetensors_find(f, "optim.exp_avg")->shape[0], (int64_t)m->n_params);

    qat_model *m2 = residual_net(2, 4, false);
    qat_optim_config cfg2 = c.optim_cfg;
    qat_optim o2;
    assert_int_equal(qat_optim_init(&o2, &cfg2, m2->n_params, NULL), QAT_STATUS_OK);
    if (qat_checkpoint_restore(&c, m2, &o2, &err)) fail_msg("restore: %s", err.msg);
    assert_memory_equal(m2->params, m->params, m->n_params * sizeof(float));
    assert_memory_equal(m2->buffers, m->buffers, m->n_buffers * sizeof(float));
    assert_int_equal(ostate_n(&o2), ostate_n(&o));
    assert_memory_equal(ostate(&o2), ostate(&o), ostate_n(&o) * sizeof(float));
    assert_int_equal(o2.step, o.step);
    qat_checkpoint_free(&c);
    qat_checkpoint_free(&c);

    /* Saving the restored state gives the same file, byte for byte. */
    const char *path2 = tpath("round_trip2.safetensors");
    save_or_fail(path2, m2, &o2, &meta);
    FILE *a = fopen(path, "rb"), *b = fopen(path2, "rb");
    int ca, cb;
    do {
        ca = fgetc(a);
        cb = fgetc(b);
        assert_int_equal(ca, cb);
    } while (ca != EOF);
    fclose(a);
    fclose(b);
    qat_optim_free(&o2);
    qat_optim_free(&o);
    qat_model_free(m2);
    qat_model_free(m);
}

/* SGD with and without momentum, and no optimizer at all. */
static void test_round_trip_sgd_and_no_optimizer(void **state) {
    (void)state;
    const char *path = tpath("sgd.safetensors");
    qat_model *m = linear_net(6, 5, 3, 1);
    qat_checkpoint_meta meta = default_meta();
    qat_error err = {0};
    qat_checkpoint c;
    for (int variant = 0; variant < 2; variant++) {
        double mom = variant ? 0.0 : 0.9;
        qat_optim o = make_optim(QAT_OPTIM_SGD, mom, m->n_params);
        o.cfg.nesterov = variant == 0;
        o.cfg.dampening = 0;
        if (o.mem) fill_uniform(ostate(&o), ostate_n(&o), -1, 1, 3);
        o.step = 5;
        save_or_fail(path, m, &o, &meta);
        if (qat_checkpoint_load(&c, path, &err)) fail_msg("load: %s", err.msg);
        assert_true(c.has_optim);
        assert_int_equal(c.optim_cfg.kind, QAT_OPTIM_SGD);
        assert_true(c.optim_cfg.momentum == mom && c.optim_cfg.nesterov == (variant == 0));
        assert_int_equal(qat_safetensors_find(&c.file, "optim.momentum_buffer") != NULL, mom != 0);
        qat_optim o2 = make_optim(QAT_OPTIM_SGD, mom, m->n_params);
        if (qat_checkpoint_restore(&c, m, &o2, &err)) fail_msg("restore: %s", err.msg);
        assert_int_equal(o2.step, 5);
        if (o.mem) assert_memory_equal(ostate(&o2), ostate(&o), ostate_n(&o) * sizeof(float));
        qat_optim_free(&o2);
        qat_checkpoint_free(&c);
        qat_optim_free(&o);
    }

    /* No optimizer: no "optim" metadata, no optim.* tensors; restoring into an optimizer
     * is refused, restoring the model alone works. */
    meta.model = NULL;
    save_or_fail(path, m, NULL, &meta);
    if (qat_checkpoint_load(&c, path, &err)) fail_msg("load: %s", err.msg);
    assert_false(c.has_optim);
    assert_string_equal(c.model, "");
    assert_null(qat_safetensors_meta(&c.file, "optim"));
    assert_int_equal(c.file.n_tensors, 4);
    qat_optim o = make_optim(QAT_OPTIM_SGD, 0.9, m->n_params);
    assert_failed(qat_checkpoint_restore(&c, m, &o, &err), &err, QAT_STATUS_FORMAT, path,
                  "holds no optimizer state", "restore optimizer from none");
    qat_error_clear(&err);
    assert_int_equal(qat_checkpoint_restore(&c, m, NULL, &err), QAT_STATUS_OK);
    qat_checkpoint_free(&c);
    qat_optim_free(&o);
    qat_model_free(m);
}

static void test_restore_mismatches(void **state) {
    (void)state;
    const char *path = tpath("mismatch.safetensors");
    qat_model *m = residual_net(1, 4, false);
    qat_optim o = make_optim(QAT_OPTIM_ADAM, 0, m->n_params);
    qat_checkpoint_meta meta = default_meta();
    save_or_fail(path, m, &o, &meta);
    qat_checkpoint c;
    qat_error err = {0};
    if (qat_checkpoint_load(&c, path, &err)) fail_msg("load: %s", err.msg);

    struct {
        qat_model *m;
        const char *needle;
    } cases[] = {
        {residual_net(2, 6, false), "with another shape (0.weight: file (4, 1, 3, 3), model (6, 1, "
                                    "3, 3)"},
        {residual_net(2, 4, true), "2 missing from the file (7.weight, 7.bias)"},
        /* A different model entirely: several kinds of problem in one message. */
        {linear_net(64, 4, 10, 2), "2 missing from the file (2.weight, 2.bias); 15 not in the "
                                   "model (1.weight, 1.bias, 1.running_mean, ...); 1 with "
                                   "another shape (0.weight: file (4, 1, 3, 3), model (4, 64))"},
        {small_cnn(2), "not in the model (3.body.0.weight"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        qat_model *x = cases[i].m;
        float *before = malloc(x->n_params * sizeof(float));
        memcpy(before, x->params, x->n_params * sizeof(float));
        qat_error_clear(&err);
        char what[64];
        snprintf(what, sizeof what, "mismatch case %zu", i);
        assert_failed(qat_checkpoint_restore(&c, x, NULL, &err), &err, QAT_STATUS_FORMAT, path,
                      cases[i].needle, what);
        assert_memory_equal(x->params, before, x->n_params * sizeof(float)); /* untouched */
        free(before);
        qat_model_free(x);
    }

    /* Optimizer mismatches; the model must stay as it was too. */
    qat_model *m2 = residual_net(3, 4, false);
    float *before = malloc(m2->n_params * sizeof(float));
    memcpy(before, m2->params, m2->n_params * sizeof(float));
    qat_optim sgd = make_optim(QAT_OPTIM_SGD, 0.9, m2->n_params);
    qat_optim adamw = make_optim(QAT_OPTIM_ADAMW, 0, m2->n_params);
    qat_optim small = make_optim(QAT_OPTIM_ADAM, 0, 10);
    qat_error_clear(&err);
    assert_failed(qat_checkpoint_restore(&c, m2, &sgd, &err), &err, QAT_STATUS_FORMAT, path,
                  "the saved optimizer is Adam, the one given is SGD", "optimizer kind");
    qat_error_clear(&err);
    assert_failed(qat_checkpoint_restore(&c, m2, &adamw, &err), &err, QAT_STATUS_FORMAT, path,
                  "is Adam, the one given is AdamW", "Adam vs AdamW");
    qat_error_clear(&err);
    assert_failed(qat_checkpoint_restore(&c, m2, &small, &err), &err, QAT_STATUS_INVALID_ARG, path,
                  "the optimizer has 10 parameters", "optimizer size");
    assert_memory_equal(m2->params, before, m2->n_params * sizeof(float));
    assert_int_equal(sgd.step, 0);
    free(before);
    qat_optim_free(&sgd);
    qat_optim_free(&adamw);
    qat_optim_free(&small);
    qat_model_free(m2);
    qat_checkpoint_free(&c);

    /* SGD saved with momentum, restored into one without (no state buffer). */
    qat_optim mom = make_optim(QAT_OPTIM_SGD, 0.9, m->n_params);
    save_or_fail(path, m, &mom, &meta);
    if (qat_checkpoint_load(&c, path, &err)) fail_msg("load: %s", err.msg);
    qat_optim plain = make_optim(QAT_OPTIM_SGD, 0, m->n_params);
    qat_error_clear(&err);
    assert_failed(qat_checkpoint_restore(&c, m, &plain, &err), &err, QAT_STATUS_FORMAT, path,
                  "1 state tensors, the one given 0", "momentum vs none");
    qat_checkpoint_free(&c);
    qat_optim_free(&mom);
    qat_optim_free(&plain);
    qat_optim_free(&o);
    qat_model_free(m);
}

static void test_save_rejects_bad_meta(void **state) {
    (void)state;
    const char *path = tpath("bad_meta.safetensors");
    qat_model *m = linear_net(4, 3, 2, 1);
    qat_optim o = make_optim(QAT_OPTIM_ADAM, 0, m->n_params);
    qat_optim wrong = make_optim(QAT_OPTIM_ADAM, 0, 7);
    qat_error err = {0};
    qat_checkpoint_meta meta = default_meta();
    qat_st_kv reserved[] = {{"epoch", "3"}};
    meta.extra = reserved;
    meta.n_extra = 1;
    assert_failed(qat_checkpoint_save(path, m, &o, &meta, &err), &err, QAT_STATUS_INVALID_ARG, path,
                  "extra metadata key 'epoch' is reserved", "reserved key");
    qat_st_kv dup[] = {{"a", "1"}, {"a", "2"}};
    meta.extra = dup;
    meta.n_extra = 2;
    qat_error_clear(&err);
    assert_failed(qat_checkpoint_save(path, m, &o, &meta, &err), &err, QAT_STATUS_INVALID_ARG, path,
                  "'a' given twice", "duplicate extra key");
    meta = default_meta();
    meta.epoch = -1;
    qat_error_clear(&err);
    assert_failed(qat_checkpoint_save(path, m, &o, &meta, &err), &err, QAT_STATUS_INVALID_ARG, path,
                  ">= 0", "negative epoch");
    meta = default_meta();
    meta.rng = (qat_rng){0, 0};
    qat_error_clear(&err);
    assert_failed(qat_checkpoint_save(path, m, &o, &meta, &err), &err, QAT_STATUS_INVALID_ARG, path,
                  "not initialised", "zero rng");
    meta = default_meta();
    qat_error_clear(&err);
    assert_failed(qat_checkpoint_save(path, m, &wrong, &meta, &err), &err, QAT_STATUS_INVALID_ARG,
                  path, "does not fit the model", "optimizer of another size");
    assert_false(file_exists(path));
    assert_true(qat_checkpoint_key_reserved("optim_step"));
    assert_false(qat_checkpoint_key_reserved("optim.exp_avg"));
    qat_optim_free(&o);
    qat_optim_free(&wrong);
    qat_model_free(m);
}

/* Rewrites checkpoint `src` to `dst` with metadata `key` set to `value` (NULL: removed),
 * tensor `drop` removed and `add` (if not NULL) added. */
static void rewrite(const char *src, const char *dst, const char *key, const char *value,
                    const char *drop, const qat_st_tensor *add) {
    qat_st_file f;
    qat_error err = {0};
    if (qat_safetensors_read(&f, src, &err)) fail_msg("read: %s", err.msg);
    qat_st_tensor *ts = calloc(f.n_tensors + 1, sizeof *ts);
    qat_st_kv *kv = calloc(f.n_meta + 1, sizeof *kv);
    size_t nt = 0, nk = 0;
    for (size_t i = 0; i < f.n_tensors; i++)
        if (!drop || strcmp(f.tensors[i].name, drop) != 0) ts[nt++] = f.tensors[i];
    if (add) ts[nt++] = *add;
    bool done = false;
    for (size_t i = 0; i < f.n_meta; i++) {
        if (key && strcmp(f.meta[i].key, key) == 0) {
            done = true;
            if (value) kv[nk++] = (qat_st_kv){key, value};
        } else {
            kv[nk++] = f.meta[i];
        }
    }
    if (key && value && !done) kv[nk++] = (qat_st_kv){key, value};
    if (qat_safetensors_write(dst, ts, nt, kv, nk, &err)) fail_msg("write: %s", err.msg);
    free(ts);
    free(kv);
    qat_safetensors_free(&f);
}

static void test_load_rejects_bad_checkpoints(void **state) {
    (void)state;
    const char *good = tpath("good.safetensors"), *bad = tpath("bad.safetensors");
    qat_model *m = linear_net(4, 3, 2, 1);
    qat_optim o = make_optim(QAT_OPTIM_ADAM, 0, m->n_params);
    qat_checkpoint_meta meta = default_meta();
    save_or_fail(good, m, &o, &meta);
    qat_checkpoint c;
    qat_error err = {0};
    if (qat_checkpoint_load(&c, good, &err)) fail_msg("load: %s", err.msg);
    qat_checkpoint_free(&c);

    float x[3] = {0};
    int8_t q[3] = {0};
    qat_st_tensor extra_optim = {.name = "optim.momentum_buffer", .dtype = QAT_ST_DTYPE_F32,
                                 .ndim = 1, .shape = {3}, .data = x};
    qat_st_tensor int8 = {.name = "0.weight_q", .dtype = QAT_ST_DTYPE_I8, .ndim = 1, .shape = {3},
                          .data = q};
    struct {
        const char *key, *value, *drop;
        const qat_st_tensor *add;
        const char *needle;
    } cases[] = {
        {"format", NULL, NULL, NULL, "not a qat checkpoint"},
        {"format", "pt", NULL, NULL, "use qat_checkpoint_import"},
        {"format_version", "2", NULL, NULL, "format_version \"2\"; this build reads version 1"},
        {"format_version", NULL, NULL, NULL, "lacks \"format_version\""},
        {"model", NULL, NULL, NULL, "lacks \"model\""},
        {"epoch", "12x", NULL, NULL, "\"epoch\" is \"12x\", not a decimal integer"},
        {"epoch", "-1", NULL, NULL, "\"epoch\" is \"-1\""},
        {"step", " 3", NULL, NULL, "\"step\" is \" 3\""},
        {"step", "99999999999999999999", NULL, NULL, "\"step\""},
        {"rng_state", "18446744073709551616", NULL, NULL, "\"rng_state\""},
        {"rng_inc", "4", NULL, NULL, "\"rng_inc\" must be odd"},
        {"rng_inc", NULL, NULL, NULL, "lacks \"rng_inc\""},
        {"optim_step", NULL, NULL, NULL, "one of \"optim\" and \"optim_step\" only"},
        {"optim_step", "1.5", NULL, NULL, "\"optim_step\" is \"1.5\""},
        {"optim", "[]", NULL, NULL, "\"optim\" is not a JSON object"},
        {"optim", "{\"kind\":\"RMSprop\"}", NULL, NULL, "\"kind\" is not SGD, Adam, AdamW, SGD8, Adam8 or AdamW8"},
        {"optim", "{\"kind\":\"Adam\",\"lr\":0.1,\"beta1\":0.9,\"beta2\":0.999,\"eps\":1e-8}", NULL,
         NULL, "optim: missing \"weight_decay\""},
        {"optim",
         "{\"kind\":\"Adam\",\"lr\":0.1,\"beta1\":0.9,\"beta2\":0.999,\"eps\":1e-8,"
         "\"weight_decay\":0,\"momentum\":0.9}",
         NULL, NULL, "unknown field \"momentum\" for Adam"},
        {"optim",
         "{\"kind\":\"Adam\",\"lr\":\"0.1\",\"beta1\":0.9,\"beta2\":0.999,\"eps\":1e-8,"
         "\"weight_decay\":0}",
         NULL, NULL, "\"lr\" is a string, not a number"},
        {"optim",
         "{\"kind\":\"Adam\",\"lr\":-1,\"beta1\":0.9,\"beta2\":0.999,\"eps\":1e-8,"
         "\"weight_decay\":0}",
         NULL, NULL, "optim: "},
        {"optim",
         "{\"kind\":\"Adam\",\"lr\":1,\"lr\":1,\"beta1\":0.9,\"beta2\":0.999,\"eps\":1e-8,"
         "\"weight_decay\":0}",
         NULL, NULL, "\"lr\" given twice"},
        {"optim",
         "{\"kind\":\"SGD\",\"lr\":0.1,\"momentum\":0,\"dampening\":0,\"weight_decay\":0}", NULL,
         NULL, "missing \"nesterov\""},
        {NULL, NULL, "optim.exp_avg_sq", NULL, "lacks tensor 'optim.exp_avg_sq'"},
        {NULL, NULL, NULL, &extra_optim, "'optim.momentum_buffer' does not belong"},
        {NULL, NULL, NULL, &int8, "'0.weight_q' is I8; a qat checkpoint holds the model's state as F32 tensors"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        rewrite(good, bad, cases[i].key, cases[i].value, cases[i].drop, cases[i].add);
        qat_error_clear(&err);
        char what[64];
        snprintf(what, sizeof what, "bad checkpoint case %zu", i);
        qat_status st = qat_checkpoint_load(&c, bad, &err);
        assert_failed(st, &err, QAT_STATUS_FORMAT, bad, cases[i].needle, what);
        assert_null(c.model); /* left zeroed */
        qat_checkpoint_free(&c);
    }
    /* Bad safetensors are reported by the checkpoint loader just the same. */
    write_bytes(bad, "abc", 3);
    qat_error_clear(&err);
    assert_failed(qat_checkpoint_load(&c, bad, &err), &err, QAT_STATUS_FORMAT, bad, "only 3 bytes",
                  "short file");
    qat_optim_free(&o);
    qat_model_free(m);
}

/* ---- atomic writes ----------------------------------------------------------------------- */

/* The value of parameter i (and of the state) in the checkpoint of "version" e; exact in
 * float for e < 2^14, so a file mixing two versions cannot pass the check. */
static float version_value(long e, size_t i) {
    return (float)(e % 16384) + (float)(i % 97) * 0.125f;
}

static void fill_version(qat_model *m, qat_optim *o, long e) {
    for (size_t i = 0; i < m->n_params; i++) m->params[i] = version_value(e, i);
    for (size_t i = 0; i < ostate_n(o); i++) ostate(o)[i] = version_value(e, i) + 1;
    o->step = e;
}

/* The checkpoint at path loads, and every value belongs to the version its epoch names. */
static long check_version(const char *path, qat_model *m, qat_optim *o) {
    qat_checkpoint c;
    qat_error err = {0};
    if (qat_checkpoint_load(&c, path, &err)) fail_msg("after a kill: %s", err.msg);
    if (qat_checkpoint_restore(&c, m, o, &err)) fail_msg("after a kill: %s", err.msg);
    long e = c.epoch;
    assert_int_equal(o->step, e);
    assert_int_equal(c.step, 2 * e);
    for (size_t i = 0; i < m->n_params; i++)
        if (m->params[i] != version_value(e, i))
            fail_msg("after a kill: param %zu is %g, version %ld has %g", i, m->params[i], e,
                     version_value(e, i));
    for (size_t i = 0; i < ostate_n(o); i++)
        if (ostate(o)[i] != version_value(e, i) + 1)
            fail_msg("after a kill: optimizer state %zu does not belong to version %ld", i, e);
    qat_checkpoint_free(&c);
    return e;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A child saves a ~4.9 MB checkpoint (model + Adam state) in a loop, each version with
 * different contents; the parent SIGKILLs it after a random delay of up to 5 save times
 * (at most 150 ms, so a slow disk does not make the test slow), 20 times (more, with a
 * longer delay, while no save has completed): kills land
 * while filling, writing, syncing and renaming. After each kill the file must load and
 * hold one whole version. */
static void test_kill_during_save(void **state) {
    (void)state;
    const char *path = tpath("kill.safetensors");
    qat_model *m = linear_net(784, 512, 10, 1);
    qat_optim o = make_optim(QAT_OPTIM_ADAM, 0, m->n_params);
    qat_checkpoint_meta meta = default_meta();
    fill_version(m, &o, 0);
    meta.epoch = 0;
    meta.step = 0;
    double t0 = now_s();
    save_or_fail(path, m, &o, &meta);
    double t_save = now_s() - t0;
    qat_rng rng;
    qat_rng_init(&rng, 2024);
    long last = check_version(path, m, &o);
    int changes = 0;
    /* The first save's time is a guess for the child's: under load (the sanitizer build,
     * other tests beside this one) a save can take many times longer. While no save
     * has completed, the window grows, and trials go on (to 100 at most). */
    double window = QAT_MIN(5 * t_save, 0.15);
    for (int trial = 0; trial < 20 || (changes == 0 && trial < 100); trial++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            for (long e = 1000L * (trial + 1);; e++) {
                fill_version(m, &o, e);
                meta.epoch = e;
                meta.step = 2 * e;
                if (qat_checkpoint_save(path, m, &o, &meta, NULL) != QAT_STATUS_OK) _exit(3);
            }
        }
        double delay = qat_rng_uniform(&rng) * window;
        struct timespec ts = {(time_t)delay, (long)((delay - floor(delay)) * 1e9)};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status)) fail_msg("the writer exited with status %d", WEXITSTATUS(status));
        long e = check_version(path, m, &o);
        changes += e != last;
        if (changes == 0) window = QAT_MIN(window * 1.5, 2.0);
        last = e;
    }
    /* The writer got some saves through (else this test would show nothing). */
    if (changes == 0) fail_msg("no save completed in 100 trials (the first save took %.3f s)", t_save);
    /* Killed saves may have left temporary files; the next save removes them (their
     * writers are gone), and never touches one of a live writer. */
    int stale = count_temps("kill.safetensors");
    save_or_fail(path, m, &o, &meta);
    assert_int_equal(count_temps("kill.safetensors"), 0);
    print_message("kill test: %d of 20 kills saw a new version, %d stale temporary files swept, "
                  "save %.1f ms\n",
                  changes, stale, 1e3 * t_save);
    qat_optim_free(&o);
    qat_model_free(m);
}

/* The sweep removes exactly the temporary files of this path whose writer is gone. */
static void test_stale_temp_sweep(void **state) {
    (void)state;
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    assert_int_equal(waitpid(dead, NULL, 0), dead);
    char name[300];
    const char *keep[3], *gone;
    snprintf(name, sizeof name, "sweep.safetensors.tmp-%ld-0", (long)dead);
    gone = strdup(tpath(name));
    snprintf(name, sizeof name, "sweep.safetensors.tmp-%ld-0", (long)getpid()); /* ours */
    keep[0] = strdup(tpath(name));
    snprintf(name, sizeof name, "other.safetensors.tmp-%ld-0", (long)dead); /* another file */
    keep[1] = strdup(tpath(name));
    keep[2] = strdup(tpath("sweep.safetensors.tmp-x1-0")); /* not our pattern */
    write_bytes(gone, "x", 1);
    for (int i = 0; i < 3; i++) write_bytes(keep[i], "x", 1);
    qat_model *m = linear_net(3, 2, 1, 1);
    qat_checkpoint_meta meta = default_meta();
    save_or_fail(tpath("sweep.safetensors"), m, NULL, &meta);
    assert_false(file_exists(gone));
    for (int i = 0; i < 3; i++) {
        assert_true(file_exists(keep[i]));
        unlink(keep[i]);
        free((void *)keep[i]);
    }
    free((void *)gone);
    qat_model_free(m);
}

/* ---- import ------------------------------------------------------------------------------ */

/* PyTorch's state_dict (with num_batches_tracked, I64 scalars) into the same network built
 * with qat; eval-mode outputs must match PyTorch's. */
static void test_import_pytorch(void **state) {
    (void)state;
    const char *weights = QAT_FIXTURE_DIR "/torch_small.safetensors";
    qat_st_file io;
    qat_error err = {0};
    if (qat_safetensors_read(&io, QAT_FIXTURE_DIR "/torch_small_io.safetensors", &err))
        fail_msg("%s (regenerate with tests/fixtures/gen_checkpoint.py)", err.msg);
    const qat_st_tensor *tx = qat_safetensors_find(&io, "x"), *ty = qat_safetensors_find(&io, "y");
    assert_true(tx && ty && tx->numel == 4 * 64 && ty->numel == 40);
    float x[256], want[40];
    assert_int_equal(qat_safetensors_to_f32(x, tx, &err), QAT_STATUS_OK);
    assert_int_equal(qat_safetensors_to_f32(want, ty, &err), QAT_STATUS_OK);

    qat_model *m = small_cnn(5);
    qat_import_report rep;
    if (qat_checkpoint_import(m, weights, NULL, &rep, &err)) fail_msg("import: %s", err.msg);
    assert_int_equal(rep.n_loaded, 10);
    assert_int_equal(rep.n_ignored, 1); /* 1.num_batches_tracked */
    assert_int_equal(rep.n_missing + rep.n_unexpected, 0);
    size_t n;
    float *rv = qat_model_buffer(m, "1.running_var", &n);
    assert_true(rv && n == 4 && rv[0] != 1.0f); /* PyTorch's statistics, not the init */

    qat_tape t;
    qat_tape_init(&t, 0);
    t.training = false;
    t.grad_enabled = false;
    qat_tensor *y = qat_model_forward(m, &t, qat_tape_input(&t, 4, (int[]){4, 1, 8, 8}, x));
    if (!y) fail_msg("forward: %s", t.err.msg);
    assert_close(y->data, want, 40, FIXTURE_RTOL, FIXTURE_ATOL, "eval output vs PyTorch");
    qat_tape_free(&t);

    /* The same weights through a qat checkpoint give the same output. */
    const char *path = tpath("from_torch.safetensors");
    qat_checkpoint_meta meta = default_meta();
    save_or_fail(path, m, NULL, &meta);
    qat_model *m2 = small_cnn(6);
    qat_checkpoint c;
    if (qat_checkpoint_load(&c, path, &err) || qat_checkpoint_restore(&c, m2, NULL, &err))
        fail_msg("%s", err.msg);
    assert_memory_equal(m2->params, m->params, m->n_params * sizeof(float));
    assert_memory_equal(m2->buffers, m->buffers, m->n_buffers * sizeof(float));
    qat_checkpoint_free(&c);
    qat_model_free(m2);
    qat_model_free(m);
    qat_safetensors_free(&io);
}

/* Writes model `src`'s tensors to path as `dtype` (F32 or F64), names prefixed. */
static void write_state_dict(const char *path, const qat_model *src, const char *prefix,
                             qat_st_dtype dtype, const char *skip, bool add_extra) {
    qat_st_tensor ts[64];
    char names[64][96];
    double *d64[64] = {0};
    int64_t nbt = 7;
    float junk[2] = {0};
    size_t k = 0;
    for (int i = 0; i < src->n_param_tensors; i++) {
        const qat_tensor *p = src->param_tensors[i];
        if (skip && strcmp(p->name, skip) == 0) continue;
        snprintf(names[k], sizeof names[k], "%s%s", prefix, p->name);
        ts[k] = (qat_st_tensor){.name = names[k], .dtype = dtype, .ndim = p->ndim, .data = p->data};
        for (int dd = 0; dd < p->ndim; dd++) ts[k].shape[dd] = p->shape[dd];
        if (dtype == QAT_ST_DTYPE_F64) {
            d64[k] = malloc(p->n * sizeof(double));
            for (size_t j = 0; j < p->n; j++) d64[k][j] = p->data[j];
            ts[k].data = d64[k];
        }
        k++;
    }
    snprintf(names[k], sizeof names[k], "%s1.num_batches_tracked", prefix);
    ts[k] = (qat_st_tensor){.name = names[k], .dtype = QAT_ST_DTYPE_I64, .ndim = 0, .data = &nbt};
    k++;
    /* The running statistics, always F32. */
    for (int i = 0; i < src->n_state; i++) {
        const qat_tensor *b = src->state[i];
        if (b->grad) continue; /* a parameter, above */
        snprintf(names[k], sizeof names[k], "%s%s", prefix, b->name);
        ts[k] = (qat_st_tensor){.name = names[k], .dtype = QAT_ST_DTYPE_F32, .ndim = 1,
                                .shape = {(int64_t)b->n}, .data = b->data};
        k++;
    }
    if (add_extra)
        ts[k++] = (qat_st_tensor){.name = "head.fc.weight", .dtype = QAT_ST_DTYPE_F32, .ndim = 1,
                                  .shape = {2}, .data = junk};
    qat_error err = {0};
    if (qat_safetensors_write(path, ts, k, NULL, 0, &err)) fail_msg("write: %s", err.msg);
    for (size_t i = 0; i < k; i++) free(d64[i]);
}

/* A checkpoint of another model: one of its names ends like a missing one by chance
 * ("4.body.0.weight" and "0.weight"), which is no prefix; the message must not say it is
 * (issue 14) and names the first missing and the first unexpected tensor. */
static void test_import_other_model_no_prefix_hint(void **state) {
    (void)state;
    const char *path = tpath("other.safetensors");
    qat_model *dst = small_cnn(2);
    float w[3] = {1, 2, 3};
    qat_st_tensor ts[2] = {
        {.name = "4.body.0.weight", .dtype = QAT_ST_DTYPE_F32, .ndim = 1, .shape = {3}, .data = w},
        {.name = "head.weight", .dtype = QAT_ST_DTYPE_F32, .ndim = 1, .shape = {3}, .data = w},
    };
    qat_error err = {0};
    if (qat_safetensors_write(path, ts, 2, NULL, 0, &err)) fail_msg("write: %s", err.msg);
    qat_import_report rep;
    assert_failed(qat_checkpoint_import(dst, path, NULL, &rep, &err), &err, QAT_STATUS_FORMAT, path,
                  "does not fit the model: 10 missing from the file (0.weight, 0.bias, 1.weight, ...)",
                  "another model");
    assert_null(strstr(err.msg, "prefixed"));
    assert_non_null(strstr(err.msg, "2 not in the model (4.body.0.weight, head.weight)"));
    qat_model_free(dst);
}

static void test_import_options_and_errors(void **state) {
    (void)state;
    const char *path = tpath("import.safetensors");
    qat_model *src = small_cnn(1);
    fill_model(src, 42);
    qat_model *dst = small_cnn(2);
    float *before = malloc(dst->n_params * sizeof(float));
    memcpy(before, dst->params, dst->n_params * sizeof(float));
    qat_error err = {0};
    qat_import_report rep;

    /* "model." prefix, F64 weights, an unexpected tensor: strict import lists it and
     * changes nothing; with the options it loads everything, converting F64. */
    write_state_dict(path, src, "model.", QAT_ST_DTYPE_F64, NULL, true);
    assert_failed(qat_checkpoint_import(dst, path, NULL, &rep, &err), &err, QAT_STATUS_FORMAT, path,
                  "does not fit the model: its names look prefixed with \"model.\" (see "
                  "strip_prefix); 10 missing from the file (0.weight, 0.bias, 1.weight, ...)",
                  "prefix, strict");
    assert_non_null(strstr(err.msg, "11 not in the model (model.0.weight, "));
    assert_memory_equal(dst->params, before, dst->n_params * sizeof(float));
    qat_import_options opts = {.strip_prefix = "model."};
    qat_error_clear(&err);
    assert_failed(qat_checkpoint_import(dst, path, &opts, &rep, &err), &err, QAT_STATUS_FORMAT,
                  path, "1 not in the model (head.fc.weight)", "unexpected tensor");
    assert_memory_equal(dst->params, before, dst->n_params * sizeof(float));
    opts.allow_unexpected = true;
    qat_error_clear(&err);
    if (qat_checkpoint_import(dst, path, &opts, &rep, &err)) fail_msg("import: %s", err.msg);
    assert_int_equal(rep.n_loaded, 10);
    assert_int_equal(rep.n_unexpected, 1);
    assert_int_equal(rep.n_ignored, 1);
    assert_memory_equal(dst->params, src->params, src->n_params * sizeof(float)); /* exact */
    assert_memory_equal(dst->buffers, src->buffers, src->n_buffers * sizeof(float));

    /* A tensor missing from the file: refused, or skipped with allow_missing. */
    qat_model *dst2 = small_cnn(3);
    float bias7[10];
    memcpy(bias7, qat_model_param(dst2, "7.bias")->data, sizeof bias7);
    write_state_dict(path, src, "", QAT_ST_DTYPE_F32, "7.bias", false);
    qat_error_clear(&err);
    assert_failed(qat_checkpoint_import(dst2, path, NULL, NULL, &err), &err, QAT_STATUS_FORMAT,
                  path, "1 missing from the file (7.bias)", "missing tensor");
    opts = (qat_import_options){.allow_missing = true};
    qat_error_clear(&err);
    if (qat_checkpoint_import(dst2, path, &opts, &rep, &err)) fail_msg("import: %s", err.msg);
    assert_int_equal(rep.n_missing, 1);
    assert_memory_equal(qat_model_param(dst2, "7.bias")->data, bias7, sizeof bias7);
    assert_memory_equal(qat_model_param(dst2, "5.weight")->data,
                        qat_model_param(src, "5.weight")->data, 16 * 64 * sizeof(float));

    /* Shape and dtype mismatches. */
    float w[4 * 9] = {0};
    int32_t wi[10] = {0};
    qat_st_tensor bad[] = {
        {.name = "0.weight", .dtype = QAT_ST_DTYPE_F32, .ndim = 2, .shape = {4, 9}, .data = w},
        {.name = "7.bias", .dtype = QAT_ST_DTYPE_I32, .ndim = 1, .shape = {10}, .data = wi},
    };
    assert_int_equal(qat_safetensors_write(path, bad, 2, NULL, 0, &err), QAT_STATUS_OK);
    opts = (qat_import_options){.allow_missing = true};
    qat_error_clear(&err);
    assert_failed(qat_checkpoint_import(dst2, path, &opts, NULL, &err), &err, QAT_STATUS_FORMAT,
                  path, "1 with another shape (0.weight: file (4, 9), model (4, 1, 3, 3))",
                  "shape mismatch");
    assert_non_null(strstr(err.msg, "1 with an unusable dtype (7.bias is I32)"));
    /* An F64 value beyond float's range. */
    double huge[10] = {1e300};
    qat_st_tensor h = {.name = "7.bias", .dtype = QAT_ST_DTYPE_F64, .ndim = 1, .shape = {10},
                       .data = huge};
    assert_int_equal(qat_safetensors_write(path, &h, 1, NULL, 0, &err), QAT_STATUS_OK);
    qat_error_clear(&err);
    assert_failed(qat_checkpoint_import(dst2, path, &opts, NULL, &err), &err, QAT_STATUS_FORMAT,
                  path, "out of float range (7.bias)", "F64 out of range");
    assert_memory_equal(qat_model_param(dst2, "7.bias")->data, bias7, sizeof bias7);
    /* F16 weights widen exactly. */
    uint16_t h16[10] = {0x3C00, 0xC000, 0x3800, 0, 0, 0, 0, 0, 0, 0x3555};
    qat_st_tensor t16 = {.name = "7.bias", .dtype = QAT_ST_DTYPE_F16, .ndim = 1, .shape = {10},
                         .data = h16};
    assert_int_equal(qat_safetensors_write(path, &t16, 1, NULL, 0, &err), QAT_STATUS_OK);
    if (qat_checkpoint_import(dst2, path, &opts, &rep, &err)) fail_msg("import: %s", err.msg);
    const float *b7 = qat_model_param(dst2, "7.bias")->data;
    assert_true(b7[0] == 1.0f && b7[1] == -2.0f && b7[2] == 0.5f && b7[9] == 0x1.554p-2f);
    /* Not a safetensors file at all. */
    write_bytes(path, "PK\3\4 this is a zip file", 24);
    qat_error_clear(&err);
    assert_failed(qat_checkpoint_import(dst2, path, NULL, NULL, &err), &err, QAT_STATUS_FORMAT,
                  path, "header length", "zip file");

    /* A qat checkpoint imports too; its optimizer state is ignored. */
    qat_optim o = make_optim(QAT_OPTIM_ADAM, 0, src->n_params);
    qat_checkpoint_meta meta = default_meta();
    save_or_fail(path, src, &o, &meta);
    qat_model *dst3 = small_cnn(4);
    qat_error_clear(&err);
    if (qat_checkpoint_import(dst3, path, NULL, &rep, &err)) fail_msg("import: %s", err.msg);
    assert_int_equal(rep.n_ignored, 2);
    assert_memory_equal(dst3->params, src->params, src->n_params * sizeof(float));
    qat_optim_free(&o);
    qat_model_free(dst3);
    qat_model_free(dst2);
    qat_model_free(dst);
    qat_model_free(src);
    free(before);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtypes),
        cmocka_unit_test(test_write_read_all_dtypes),
        cmocka_unit_test(test_write_rejects_bad_arguments),
        cmocka_unit_test(test_read_rejects_bad_lengths),
        cmocka_unit_test(test_read_rejects_bad_headers),
        cmocka_unit_test(test_read_accepts_valid_files),
        cmocka_unit_test(test_to_f32),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_round_trip_sgd_and_no_optimizer),
        cmocka_unit_test(test_restore_mismatches),
        cmocka_unit_test(test_save_rejects_bad_meta),
        cmocka_unit_test(test_load_rejects_bad_checkpoints),
        cmocka_unit_test(test_kill_during_save),
        cmocka_unit_test(test_stale_temp_sweep),
        cmocka_unit_test(test_import_pytorch),
        cmocka_unit_test(test_import_options_and_errors),
        cmocka_unit_test(test_import_other_model_no_prefix_hint),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

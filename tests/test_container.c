/* test_container.c - the two safetensors readers fed the same files: the training side's
 * qat_safetensors_read (io/safetensors.h: cJSON, allocating, from a file) and the
 * runtime's qrt_container_load (runtime/runtime.h: its own JSON walker, no allocation,
 * from memory; exactly the container checks of qrt_model_load). For every file both must
 * accept or both refuse, and on a file both accept they must give the same tensors (name,
 * dtype, shape, bytes) and the same metadata (keys and values).
 *
 * The corpus:
 *  - the damaged files the readers' own tests build (testutil.c: test_checkpoint's bad
 *    headers and lengths, test_runtime's bad containers, header lengths, every truncation
 *    of its model file);
 *  - real files written by qat_safetensors_write: every dtype, scalars, empty tensors,
 *    odd byte counts, names and metadata with escapes and non-ASCII, no metadata, no
 *    tensors; an int8 model file; hand-written valid headers (unpadded, unaligned,
 *    whitespace, escapes);
 *  - seeded random mutations of those (several thousand): bit flips, byte changes,
 *    insertions and deletions, truncations, stale header lengths, data lengths, and
 *    header rewrites aimed at the rules: numbers written 2.0, 2e0, -0, +2, 02, 1e400,
 *    2^53 + 1; whitespace (and control characters) before '{', after '}' and between
 *    tokens; duplicate metadata keys; \u0000, lone surrogates, overlong and other invalid
 *    UTF-8; unknown escapes; a byte-order mark.
 * A disagreement prints the file's header (escaped), both verdicts and both messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#include "io/safetensors.h"
#include "runtime/runtime.h"

static char g_dir[64];
static char g_path[128];

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/qat_test_container_XXXXXX");
    if (!mkdtemp(g_dir)) return -1;
    snprintf(g_path, sizeof g_path, "%s/f.safetensors", g_dir);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    unlink(g_path);
    return rmdir(g_dir);
}

/* ---- the comparison ------------------------------------------------------------------ */

typedef struct tally {
    int files, accepted, refused, disagreements;
} tally;

/* The header of a file, printable: at most 300 bytes, non-printing bytes as \xNN. */
static void show_header(char *out, size_t cap, const uint8_t *b, size_t len) {
    size_t o = 0, n = 0;
    if (len >= 8)
        for (int i = 0; i < 8; i++) n |= (size_t)b[i] << (8 * i);
    const size_t hl = len < 8 ? 0 : n < len - 8 ? n : len - 8;
    o += (size_t)snprintf(out, cap, "[%zu bytes, N=%zu] ", len, n);
    for (size_t i = 0; i < hl && i < 300 && o + 8 < cap; i++) {
        const uint8_t c = b[8 + i];
        if (c >= 0x20 && c < 0x7f) out[o++] = (char)c;
        else o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    }
    out[o < cap ? o : cap - 1] = '\0';
}

static bool same_tensors(const qat_st_file *f, const qrt_container *c, char *why, size_t cap) {
    if (f->n_tensors != c->n_tensors) {
        snprintf(why, cap, "%zu tensors (training) vs %zu (runtime)", f->n_tensors, c->n_tensors);
        return false;
    }
    for (size_t i = 0; i < c->n_tensors; i++) {
        const qrt_tensor *r = &c->tensors[i];
        const qat_st_tensor *t = qat_safetensors_find(f, r->name);
        if (!t) {
            snprintf(why, cap, "tensor '%.80s' only in the runtime's table", r->name);
            return false;
        }
        bool same = !strcmp(qat_st_dtype_str(t->dtype), qrt_dtype_str(r->dtype)) && t->ndim == r->ndim &&
                    t->nbytes == r->nbytes && (!t->nbytes || !memcmp(t->data, r->data, t->nbytes));
        for (int d = 0; same && d < r->ndim; d++) same = (uint64_t)t->shape[d] == r->shape[d];
        if (!same) {
            snprintf(why, cap, "tensor '%.80s': %s ndim %d %zu bytes (training) vs %s ndim %d %zu bytes (runtime)",
                     r->name, qat_st_dtype_str(t->dtype), t->ndim, t->nbytes, qrt_dtype_str(r->dtype), r->ndim,
                     r->nbytes);
            return false;
        }
    }
    if (f->n_meta != c->n_meta) {
        snprintf(why, cap, "%zu metadata entries (training) vs %zu (runtime)", f->n_meta, c->n_meta);
        return false;
    }
    for (size_t i = 0; i < c->n_meta; i++) {
        const char *v = qat_safetensors_meta(f, c->meta[i].key);
        if (!v || strcmp(v, c->meta[i].value)) {
            snprintf(why, cap, "metadata '%.60s': '%.60s' (training) vs '%.60s' (runtime)", c->meta[i].key,
                     v ? v : "(absent)", c->meta[i].value);
            return false;
        }
    }
    return true;
}

/* Both readers on one file; a disagreement is printed and counted. Returns whether both
 * accepted it. */
static bool compare(const uint8_t *b, size_t len, const char *what, tally *t) {
    FILE *fp = fopen(g_path, "wb");
    if (!fp || (len && fwrite(b, 1, len, fp) != len) || fclose(fp)) fail_msg("cannot write %s", g_path);
    qat_st_file f;
    qat_error e1 = {0};
    const qat_status s1 = qat_safetensors_read(&f, g_path, &e1);
    if (s1 != QAT_STATUS_OK && s1 != QAT_STATUS_FORMAT)
        fail_msg("%s: the training reader says %s: %s", what, qat_status_str(s1), e1.msg);

    const size_t need = qrt_container_mem_size(b, len);
    void *mem = need ? xmalloc(need) : NULL;
    qrt_container c;
    qrt_error e2;
    const qrt_status s2 = qrt_container_load(&c, b, len, mem, need, &e2);
    if (s2 != QRT_STATUS_OK && s2 != QRT_STATUS_FORMAT)
        fail_msg("%s: the runtime's reader says %s: %s", what, qrt_status_str(s2), e2.msg);
    if (s2 == QRT_STATUS_OK && !need) fail_msg("%s: qrt_container_mem_size 0 for a file that loads", what);

    t->files++;
    char why[400] = "";
    bool agree = (s1 == QAT_STATUS_OK) == (s2 == QRT_STATUS_OK);
    if (!agree) snprintf(why, sizeof why, "training %s, runtime %s", s1 ? "refuses" : "accepts", s2 ? "refuses" : "accepts");
    else if (s1 == QAT_STATUS_OK) agree = same_tensors(&f, &c, why, sizeof why);
    if (!agree) {
        char h[1400];
        show_header(h, sizeof h, b, len);
        t->disagreements++;
        if (t->disagreements <= 12)
            print_message("DISAGREE %s: %s\n  file: %s\n  training: %s\n  runtime: %s\n", what, why, h,
                          s1 ? e1.msg : "ok", s2 ? e2.msg : "ok");
    }
    const bool ok = s1 == QAT_STATUS_OK && s2 == QRT_STATUS_OK;
    if (ok) t->accepted++;
    else t->refused++;
    if (s1 == QAT_STATUS_OK) qat_safetensors_free(&f);
    free(mem);
    return ok;
}

static void expect_agreement(const tally *t, const char *what) {
    print_message("%s: %d files, %d accepted by both, %d refused by both, %d disagreements\n", what, t->files,
                  t->accepted, t->refused - t->disagreements, t->disagreements);
    if (t->disagreements) fail_msg("%s: the readers disagree on %d of %d files", what, t->disagreements, t->files);
}

/* ---- the base files ------------------------------------------------------------------ */

typedef struct blob {
    uint8_t *b;
    size_t len;
} blob;

static blob read_back(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) fail_msg("cannot read %s", path);
    fseek(fp, 0, SEEK_END);
    const long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    blob r = {xmalloc((size_t)n), (size_t)n};
    if (fread(r.b, 1, (size_t)n, fp) != (size_t)n) fail_msg("short read of %s", path);
    fclose(fp);
    return r;
}

/* A file of qat_safetensors_write, in memory. */
static blob written(const qat_st_tensor *ts, size_t nt, const qat_st_kv *kv, size_t nkv) {
    char p[160];
    snprintf(p, sizeof p, "%s/w.safetensors", g_dir);
    qat_error err = {0};
    if (qat_safetensors_write(p, ts, nt, kv, nkv, &err)) fail_msg("write: %s", err.msg);
    blob r = read_back(p);
    unlink(p);
    return r;
}

static blob from_header(const char *header, size_t data_len) {
    blob r;
    r.b = st_raw_bytes(strlen(header), header, strlen(header), data_len, &r.len);
    return r;
}

enum { MAX_BASES = 32 };

typedef struct corpus {
    blob base[MAX_BASES];
    const char *name[MAX_BASES];
    int n;
} corpus;

static void add_base(corpus *c, const char *name, blob b) {
    if (c->n == MAX_BASES) fail_msg("test bug: too many base files");
    c->name[c->n] = name;
    c->base[c->n++] = b;
}

/* Valid files: every reader must accept them (checked), and they seed the mutations. */
static void make_bases(corpus *c) {
    float f32[6] = {1, -2, 3.5f, 0, -0.0f, 1e-30f};
    int8_t i8[5] = {-128, -1, 0, 1, 127};
    uint8_t u8[3] = {0, 128, 255}, b1[1] = {1}, f8[2] = {0x3c, 0x80};
    int16_t i16[3] = {-32768, 7, 32767};
    uint16_t u16[2] = {0, 65535}, f16[3] = {0x3C00, 0xC000, 0x0001}, bf16[2] = {0x3f80, 0xff80};
    int32_t i32[4] = {INT32_MIN, -1, 1, INT32_MAX};
    uint32_t u32[1] = {4000000000u};
    int64_t i64 = INT64_MIN + 3;
    uint64_t u64[2] = {0, UINT64_MAX};
    double f64[2] = {0.1, -1e300};
    const qat_st_tensor all[] = {
        {.name = "i8", .dtype = QAT_ST_DTYPE_I8, .ndim = 1, .shape = {5}, .data = i8},
        {.name = "f32", .dtype = QAT_ST_DTYPE_F32, .ndim = 2, .shape = {2, 3}, .data = f32},
        {.name = "u8", .dtype = QAT_ST_DTYPE_U8, .ndim = 1, .shape = {3}, .data = u8},
        {.name = "f16", .dtype = QAT_ST_DTYPE_F16, .ndim = 1, .shape = {3}, .data = f16},
        {.name = "bf16", .dtype = QAT_ST_DTYPE_BF16, .ndim = 2, .shape = {1, 2}, .data = bf16},
        {.name = "i16", .dtype = QAT_ST_DTYPE_I16, .ndim = 1, .shape = {3}, .data = i16},
        {.name = "u16", .dtype = QAT_ST_DTYPE_U16, .ndim = 1, .shape = {2}, .data = u16},
        {.name = "i32", .dtype = QAT_ST_DTYPE_I32, .ndim = 2, .shape = {2, 2}, .data = i32},
        {.name = "u32", .dtype = QAT_ST_DTYPE_U32, .ndim = 0, .data = u32},
        {.name = "scalar", .dtype = QAT_ST_DTYPE_I64, .ndim = 0, .data = &i64},
        {.name = "u64", .dtype = QAT_ST_DTYPE_U64, .ndim = 1, .shape = {2}, .data = u64},
        {.name = "empty", .dtype = QAT_ST_DTYPE_F32, .ndim = 2, .shape = {0, 4}, .data = NULL},
        {.name = "empty8", .dtype = QAT_ST_DTYPE_F64, .ndim = 3, .shape = {3, 0, 2}, .data = NULL},
        {.name = "f64", .dtype = QAT_ST_DTYPE_F64, .ndim = 1, .shape = {2}, .data = f64},
        {.name = "bool", .dtype = QAT_ST_DTYPE_BOOL, .ndim = 1, .shape = {1}, .data = b1},
        {.name = "e5m2", .dtype = QAT_ST_DTYPE_F8_E5M2, .ndim = 1, .shape = {2}, .data = f8},
        {.name = "e4m3", .dtype = QAT_ST_DTYPE_F8_E4M3, .ndim = 8, .shape = {1, 1, 1, 1, 1, 1, 1, 2}, .data = f8},
        {.name = "na\"me\\ \xc2\xb5 \xf0\x9f\x98\x80 /\n", .dtype = QAT_ST_DTYPE_U8, .ndim = 1, .shape = {1}, .data = b1},
        {.name = "", .dtype = QAT_ST_DTYPE_I8, .ndim = 1, .shape = {2}, .data = i8},
    };
    const qat_st_kv meta[] = {
        {"note", "quote \" backslash \\ newline \n tab \t ctrl \x01 \x1f micro \xc2\xb5 \xe2\x82\xac"},
        {"empty", ""},
        {"format", "qat-checkpoint"},
        {"", "an empty key"},
        {"\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf"},
    };
    add_base(c, "all dtypes + metadata", written(all, sizeof all / sizeof *all, meta, sizeof meta / sizeof *meta));
    add_base(c, "all dtypes, no metadata", written(all, sizeof all / sizeof *all, NULL, 0));
    add_base(c, "metadata only", written(NULL, 0, meta, 2));
    add_base(c, "nothing", written(NULL, 0, NULL, 0));
    add_base(c, "one scalar", written(&all[9], 1, NULL, 0));
    add_base(c, "one empty tensor", written(&all[11], 1, meta + 1, 1));
    tmodel tm;
    tmodel_init(&tm, 49);
    blob m;
    m.b = tmodel_bytes(&tm, &m.len);
    tmodel_free(&tm);
    add_base(c, "int8 model", m);
    /* Hand-written valid headers (test_checkpoint's accepted files and more). */
    add_base(c, "unpadded, unaligned, whitespace",
             from_header("{\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                         "\"b\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]},"
                         "\"z\":{\"dtype\":\"I64\",\"shape\":[3,0],\"data_offsets\":[1,1]},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[1,5]},"
                         "\"__metadata__\":{\"k\":\"v\"}}  \n ", 5));
    add_base(c, "whitespace everywhere",
             from_header("{ \"__metadata__\" :\t{ \"k\" : \"v\" , \"l\":\"w\" } ,\r\n \"a\" : { \"shape\" : [ 2 , 1 ] , "
                         "\"data_offsets\" : [ 0 , 4 ] , \"dtype\" : \"I16\" } }\t\r\n", 4));
    add_base(c, "escapes",
             from_header("{\"\\u0061\\/\\\"\\\\\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\":{\"d\\u0074ype\":\"\\u0046\\u0033\\u0032\","
                         "\"shape\":[1],\"data_offsets\":[0,4]},\"__metadata__\":{\"\\u006b\":\"\\u20ac\\uffff\"}}", 4));
    add_base(c, "big numbers",
             from_header("{\"a\":{\"dtype\":\"U8\",\"shape\":[9007199254740992,0],\"data_offsets\":[0,0]},"
                         "\"b\":{\"dtype\":\"U8\",\"shape\":[0,1,2,3,4,5,6,7],\"data_offsets\":[0,0]},"
                         "\"c\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}", 3));
    tally t = {0};
    for (int i = 0; i < c->n; i++)
        if (!compare(c->base[i].b, c->base[i].len, c->name[i], &t)) fail_msg("base file '%s' was refused", c->name[i]);
    expect_agreement(&t, "valid files");
}

static void free_bases(corpus *c) {
    for (int i = 0; i < c->n; i++) free(c->base[i].b);
}

/* ---- qrt_container_load itself ------------------------------------------------------- */

static void test_container_api(void **state) {
    (void)state;
    tmodel tm;
    tmodel_init(&tm, 50);
    size_t len;
    uint8_t *f = tmodel_bytes(&tm, &len);
    const size_t need = qrt_container_mem_size(f, len);
    uint8_t *mem = xmalloc(need + 1);
    qrt_container c;
    qrt_error err;
    if (qrt_container_load(&c, f, len, mem + 1, need, &err) != QRT_STATUS_OK) fail_msg("unaligned memory: %s", err.msg);
    if (c.n_tensors != (size_t)tm.tf.n || c.n_meta != 4 || c.data_len != len - 8 - c.header_len)
        fail_msg("%zu tensors, %zu metadata entries, %zu data bytes", c.n_tensors, c.n_meta, c.data_len);
    for (size_t i = 1; i < c.n_tensors; i++)
        if (strcmp(c.tensors[i - 1].name, c.tensors[i].name) >= 0) fail_msg("tensors not sorted by name");
    for (int i = 0; i < tm.tf.n; i++) {
        const qrt_tensor *t = qrt_container_tensor(&c, tm.tf.t[i].name);
        if (!t || strcmp(qrt_dtype_str(t->dtype), tm.tf.t[i].dtype) || t->nbytes != tm.tf.t[i].nbytes ||
            memcmp(t->data, tm.tf.t[i].data, t->nbytes) || t->s32 || t->s8)
            fail_msg("tensor %s", tm.tf.t[i].name);
    }
    const char *g = qrt_container_meta(&c, "graph");
    if (!g || strcmp(g, tm.tf.graph) || strcmp(qrt_container_meta(&c, "source"), "test_runtime \"built by hand\"") ||
        qrt_container_meta(&c, "nope") || qrt_container_tensor(&c, "nope") || qrt_container_meta(NULL, "graph"))
        fail_msg("metadata lookups");
    if (qrt_container_load(&c, f, len, mem, need - 16, &err) != QRT_STATUS_NO_MEMORY || c.n_tensors ||
        !strstr(err.msg, "qrt_container_mem_size"))
        fail_msg("short memory: %s", err.msg);
    if (qrt_container_load(&c, f, len, NULL, 0, NULL) != QRT_STATUS_NO_MEMORY) fail_msg("no memory");
    if (qrt_container_load(NULL, f, len, mem, need, &err) != QRT_STATUS_INVALID_ARG ||
        qrt_container_load(&c, NULL, len, mem, need, &err) != QRT_STATUS_INVALID_ARG)
        fail_msg("NULL arguments");
    if (qrt_container_mem_size(f, 7) != 0 || qrt_container_load(&c, f, 7, mem, need, &err) != QRT_STATUS_FORMAT ||
        !strstr(err.msg, "truncated"))
        fail_msg("a 7-byte file: %s", err.msg);
    /* A checkpoint-like file (no graph, F32 tensors) is a container, not a model. */
    float x[2] = {1, 2};
    const qat_st_tensor xt = {.name = "w", .dtype = QAT_ST_DTYPE_F32, .ndim = 1, .shape = {2}, .data = x};
    blob w = written(&xt, 1, NULL, 0);
    uint8_t *mem2 = xmalloc(qrt_container_mem_size(w.b, w.len));
    if (qrt_container_load(&c, w.b, w.len, mem2, qrt_container_mem_size(w.b, w.len), &err) != QRT_STATUS_OK ||
        c.n_meta || c.n_tensors != 1 || c.tensors[0].dtype != QRT_DTYPE_F32)
        fail_msg("a checkpoint-like file: %s", err.msg);
    free(mem2), free(w.b), free(mem), free(f);
    tmodel_free(&tm);
}

/* ---- the readers' own damaged files --------------------------------------------------- */

static void test_known_damage(void **state) {
    (void)state;
    tally t = {0};
    char what[400];
    /* test_checkpoint's bad headers (data 0, 1, 2, ... mod 251) and test_runtime's (zeros). */
    for (size_t i = 0; i < n_st_bad_headers; i++) {
        blob b = from_header(st_bad_headers[i].header, st_bad_headers[i].data_len);
        snprintf(what, sizeof what, "test_checkpoint bad header '%s'", st_bad_headers[i].what);
        compare(b.b, b.len, what, &t);
        free(b.b);
    }
    const uint8_t zeros[8] = {0};
    for (size_t i = 0; i < n_runtime_bad_headers; i++) {
        blob b;
        b.b = pack_file(runtime_bad_headers[i].header, zeros, runtime_bad_headers[i].data, &b.len);
        snprintf(what, sizeof what, "test_runtime bad container %.200s", runtime_bad_headers[i].header);
        compare(b.b, b.len, what, &t);
        free(b.b);
    }
    /* Lengths: test_checkpoint's and test_runtime's cases. */
    static const struct { uint64_t n; const char *h; size_t hl, file_len; } L[] = {
        {0, "", 0, 0},   {2, "\0\0\0", 3, 5},  {40, "{}", 2, 0},     {200000000, "{}      ", 8, 0},
        {UINT64_MAX, "{}      ", 8, 0}, {1, "{", 1, 0}, {0, "", 0, 0}, {8, "{}\0     ", 8, 0},
        {1000, "{}", 2, 100}, {(uint64_t)1 << 40, "{}", 2, 100}, {100000001, "{}", 2, 100},
        {1, "{}", 2, 100}, {0, "{}", 2, 100}, {2, "{}", 2, 0}, {100000000, "{}", 2, 100},
    };
    for (size_t i = 0; i < sizeof L / sizeof L[0]; i++) {
        size_t len;
        uint8_t *b = st_raw_bytes(L[i].n, L[i].h, L[i].hl, 0, &len);
        size_t use = i == 0 ? 0 : i == 1 ? 5 : len;
        if (L[i].file_len > len) { /* pad with spaces, as test_runtime does */
            b = realloc(b, L[i].file_len);
            memset(b + len, ' ', L[i].file_len - len);
            use = L[i].file_len;
        }
        snprintf(what, sizeof what, "length case %zu (N=%llu, %zu bytes)", i, (unsigned long long)L[i].n, use);
        compare(b, use, what, &t);
        free(b);
    }
    /* Every truncation of the runtime's model file and of a written checkpoint-like file,
     * and one byte too many. */
    tmodel tm;
    tmodel_init(&tm, 45);
    blob m;
    m.b = tmodel_bytes(&tm, &m.len);
    tmodel_free(&tm);
    float x[4] = {1, 2, 3, 4};
    const qat_st_tensor xt = {.name = "x", .dtype = QAT_ST_DTYPE_F32, .ndim = 1, .shape = {4}, .data = x};
    const qat_st_kv kv = {"k", "v"};
    blob w = written(&xt, 1, &kv, 1);
    const blob both[2] = {m, w};
    for (int k = 0; k < 2; k++) {
        for (size_t cut = 0; cut <= both[k].len; cut++) {
            snprintf(what, sizeof what, "%s cut at %zu of %zu", k ? "written file" : "model file", cut, both[k].len);
            compare(both[k].b, cut, what, &t);
        }
        uint8_t *g = xmalloc(both[k].len + 1);
        memcpy(g, both[k].b, both[k].len);
        g[both[k].len] = 0;
        compare(g, both[k].len + 1, "one extra byte", &t);
        free(g);
    }
    free(m.b), free(w.b);
    expect_agreement(&t, "the readers' damaged files");
}

/* ---- the rules that had to be pinned down (docs/checkpoint.md "Validation") ----------- */

/* Files on which the readers disagreed before, or which both got wrong against the
 * reference implementation (serde_json reading usize): the verdict is fixed here, so the
 * two cannot drift apart together. */
static void test_pinned_rules(void **state) {
    (void)state;
#define T(shape, off) "{\"a\":{\"dtype\":\"U8\",\"shape\":[" shape "],\"data_offsets\":[" off "]}}"
    static const struct { const char *header; size_t data; bool accept; const char *why; } P[] = {
        {" " T("2", "0,2"), 2, false, "a space before '{' (the reference's InvalidHeaderStart)"},
        {"\n" T("2", "0,2"), 2, false, "a newline before '{'"},
        {"\xef\xbb\xbf" T("2", "0,2"), 2, false, "a byte-order mark before '{'"},
        {T("2", "0,2") " \t\r\n ", 2, true, "JSON whitespace after '}'"},
        {T("2", "0,2") "\x0c", 2, false, "a form feed after '}' (not JSON whitespace)"},
        {T("2", "0,2") "\x0b", 2, false, "a vertical tab after '}'"},
        {"{\"a\":\x01{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, false, "a control character between tokens"},
        {"{ \"a\" :\t{ \"dtype\" :\r\"U8\" ,\n\"shape\" : [ 2 ] , \"data_offsets\" : [ 0 , 2 ] } }", 2, true, "JSON whitespace between tokens"},
        {T("2.0", "0,2"), 2, false, "a dimension written 2.0"},
        {T("2e0", "0,2"), 2, false, "a dimension written 2e0"},
        {T("2", "0,2E0"), 2, false, "an offset written 2E0"},
        {T("2", "0,2."), 2, false, "an offset written 2."},
        {T("0", "-0,0"), 0, false, "an offset written -0 (serde_json reads it as a float)"},
        {T("-0", "0,0"), 0, false, "a dimension written -0"},
        {T("+2", "0,2"), 2, false, "a dimension written +2"},
        {T("02", "0,2"), 2, false, "a dimension with a leading zero"},
        {T("0,1e400", "0,0"), 0, false, "a dimension 1e400"},
        {T("0,9007199254740993", "0,0"), 0, false, "a dimension 2^53 + 1 (a double would round it to 2^53)"},
        {T("0,9007199254740992", "0,0"), 0, true, "a dimension 2^53 next to a 0"},
        {T("0,18446744073709551616", "0,0"), 0, false, "a dimension 2^64"},
        {T("1073741824,1073741824,0", "0,0"), 0, true, "dims whose product passes 2^53 before a 0"},
        {"{\"a\":{\"dtype\":\"I64\",\"shape\":[9007199254740992,0],\"data_offsets\":[0,0]}}", 0, true,
         "2^53 elements of 8 bytes before a 0"},
        {T("1099511627776,1099511627776,0", "0,0"), 0, false,
         "dims whose product overflows 64 bits before a 0 (the reference's ValidationOverflow)"},
        {"{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, false, "a metadata key twice"},
        {"{\"__metadata__\":{\"k\":\"1\",\"\\u006b\":\"1\"}}", 0, false, "a metadata key twice, once escaped"},
        {"{\"__metadata__\":{\"format\":\"a\",\"format\":\"a\"}}", 0, false, "'format' twice"},
        {"{\"__metadata__\":{\"k\":\"1\",\"K\":\"2\",\"k2\":\"3\"}}", 0, true, "metadata keys that differ"},
        {"{\"__metadata__\":{\"k\":\"a\\u00G0b\"}}", 0, false, "a \\u escape with a non-hex digit"},
        {"{\"__metadata__\":{\"k\":\"a\\u00\"}}", 0, false, "a \\u escape cut short"},
        {"{\"__metadata__\":{\"k\":\"a\\u0000b\"}}", 0, false, "\\u0000"},
        {"{\"__metadata__\":{\"k\":\"a\\q\"}}", 0, false, "an unknown escape"},
        {"{\"__metadata__\":{\"k\":\"\\ud800\"}}", 0, false, "a lone high surrogate"},
        {"{\"__metadata__\":{\"k\":\"\\udc00\"}}", 0, false, "a lone low surrogate"},
        {"{\"__metadata__\":{\"k\":\"\\ud83d\\ude00 \\u00e9 \\/\"}}", 0, true, "a surrogate pair and other escapes"},
        {"{\"__metadata__\":{\"k\":\"\xc0\xaf\"}}", 0, false, "overlong UTF-8"},
        {"{\"__metadata__\":{\"k\":\"\xed\xa0\x80\"}}", 0, false, "a UTF-8 encoded surrogate"},
        {"{\"__metadata__\":{\"k\":\"\xf4\x90\x80\x80\"}}", 0, false, "UTF-8 above U+10FFFF"},
        {"{\"__metadata__\":{\"k\":\"\xf4\x8f\xbf\xbf\x7f\"}}", 0, true, "U+10FFFF and DEL"},
        {"{}", 0, true, "no tensors, no metadata"},
    };
#undef T
    tally t = {0};
    for (size_t i = 0; i < sizeof P / sizeof P[0]; i++) {
        const size_t hl = strlen(P[i].header);
        size_t len;
        uint8_t *b = st_raw_bytes(hl, P[i].header, hl, P[i].data, &len);
        const int before = t.accepted;
        compare(b, len, P[i].why, &t);
        const bool accepted = t.accepted > before;
        if (accepted != P[i].accept && !t.disagreements)
            fail_msg("%s: both readers %s the file, the rule says they must %s it", P[i].why,
                     accepted ? "accept" : "refuse", P[i].accept ? "accept" : "refuse");
        free(b);
    }
    expect_agreement(&t, "pinned rules");
}

/* ---- random mutations ------------------------------------------------------------------ */

/* A file being mutated: header and data apart, reassembled with N = the header's length
 * (or a stale N). */
typedef struct mfile {
    uint8_t h[1 << 16];
    size_t hl;
    uint8_t d[1 << 16];
    size_t dl;
} mfile;

static void split(mfile *f, const blob *b) {
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)b->b[i] << (8 * i);
    if (n > b->len - 8 || n > sizeof f->h || b->len - 8 - n > sizeof f->d) fail_msg("test bug: base file too large");
    f->hl = (size_t)n;
    memcpy(f->h, b->b + 8, f->hl);
    f->dl = b->len - 8 - f->hl;
    memcpy(f->d, b->b + 8 + f->hl, f->dl);
}

static void insert(mfile *f, size_t at, const char *s, size_t n) {
    if (f->hl + n > sizeof f->h) return;
    memmove(f->h + at + n, f->h + at, f->hl - at);
    memcpy(f->h + at, s, n);
    f->hl += n;
}

static void erase(mfile *f, size_t at, size_t n) {
    if (at + n > f->hl) n = f->hl - at;
    memmove(f->h + at, f->h + at + n, f->hl - at - n);
    f->hl -= n;
}

/* Whether header byte i is inside a JSON string (a rough scan: quotes and escapes). */
static void string_map(const mfile *f, bool *in) {
    bool s = false;
    for (size_t i = 0; i < f->hl; i++) {
        in[i] = s;
        if (s && f->h[i] == '\\') {
            if (i + 1 < f->hl) in[i + 1] = true;
            i++;
        } else if (f->h[i] == '"') {
            s = !s;
            in[i] = true;
        }
    }
}

static const char *const WS[] = {" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x01", "\x1f", "\xc2\xa0", "\xef\xbb\xbf"};
static const char *const ANY[] = {" ",       "\t",     "\x0c",      ".0",     "e0",       "E+1",   "-",
                                  "0",       "1",      "\\u0000",   "\\ud800", "\\udc00",  "\xc0\xaf",
                                  "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf5", "\xff",
                                  ",",       ":",      "\"",        "\\",     "null",     "true",  "{}",
                                  "[]",      "1e400",  "9007199254740993", "[0,0]", "\"dtype\":\"U8\","};
static const char *const IN_STRING[] = {"\\u0000", "\\u0001", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
                                        "\xed\xbf\xbf", "\xf4\x90\x80\x80", "\xc2", "\\ud800", "\\udc00",
                                        "\\ud800\\u0041", "\\ud83d\\ude00", "\\/", "\\u00e9", "\xc3\xa9",
                                        "\x01", "\t", "\x7f", "\\q", "\\U0041", "\\u00G0", "\\x41", "\\'"};

#define PICK(r, a) (a)[rint_in(r, 0, (int64_t)(sizeof(a) / sizeof((a)[0])) - 1)]

/* Replaces a number token outside strings with a variant of it. */
static bool mutate_number(trng *r, mfile *f) {
    bool *in = xmalloc(f->hl + 1);
    string_map(f, in);
    size_t starts[512], n = 0;
    for (size_t i = 0; i < f->hl && n < 512; i++)
        if (!in[i] && f->h[i] >= '0' && f->h[i] <= '9' && (i == 0 || !(f->h[i - 1] >= '0' && f->h[i - 1] <= '9')))
            starts[n++] = i;
    free(in);
    if (!n) return false;
    const size_t at = starts[rint_in(r, 0, (int64_t)n - 1)];
    size_t end = at;
    while (end < f->hl && f->h[end] >= '0' && f->h[end] <= '9') end++;
    char tok[32], v[64];
    const size_t tl = end - at < sizeof tok - 1 ? end - at : sizeof tok - 1;
    memcpy(tok, f->h + at, tl);
    tok[tl] = '\0';
    switch (rint_in(r, 0, 13)) {
    case 0: snprintf(v, sizeof v, "%s.0", tok); break;
    case 1: snprintf(v, sizeof v, "%se0", tok); break;
    case 2: snprintf(v, sizeof v, "%sE+0", tok); break;
    case 3: snprintf(v, sizeof v, "-%s", tok); break;
    case 4: snprintf(v, sizeof v, "-0"); break;
    case 5: snprintf(v, sizeof v, "+%s", tok); break;
    case 6: snprintf(v, sizeof v, "0%s", tok); break;
    case 7: snprintf(v, sizeof v, "1e400"); break;
    case 8: snprintf(v, sizeof v, "%s", rnext(r) & 1 ? "9007199254740993" : "9007199254740992"); break;
    case 9: snprintf(v, sizeof v, "%s.", tok); break;
    case 10: snprintf(v, sizeof v, "%s%s", PICK(r, WS), tok); break;
    case 11: snprintf(v, sizeof v, "%s%s", tok, PICK(r, WS)); break;
    case 12: snprintf(v, sizeof v, "%s.5", tok); break;
    default: snprintf(v, sizeof v, "18446744073709551617"); break;
    }
    erase(f, at, end - at);
    insert(f, at, v, strlen(v));
    return true;
}

/* Inserts a duplicate metadata key (or a duplicate pair where there is no metadata). */
static void duplicate_key(trng *r, mfile *f) {
    const char *m = "\"__metadata__\":{";
    uint8_t *at = NULL;
    for (size_t i = 0; i + strlen(m) <= f->hl; i++)
        if (!memcmp(f->h + i, m, strlen(m))) at = f->h + i + strlen(m);
    if (!at) {
        const char *pair = rnext(r) & 1 ? "\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}," : "\"__metadata__\":{\"a\":\"1\",\"b\":\"2\"},";
        for (size_t i = 0; i < f->hl; i++)
            if (f->h[i] == '{') {
                insert(f, i + 1, pair, strlen(pair));
                return;
            }
        return;
    }
    /* copy the first key of the metadata (up to its closing quote) with a new value */
    const size_t k0 = (size_t)(at - f->h);
    char ins[256];
    if (f->h[k0] == '"') {
        size_t k1 = k0 + 1;
        while (k1 < f->hl && f->h[k1] != '"') k1 += f->h[k1] == '\\' ? 2 : 1;
        if (k1 < f->hl && k1 - k0 < 200) {
            const int n = snprintf(ins, sizeof ins, "%.*s\":\"dup\",", (int)(k1 - k0), (const char *)f->h + k0);
            insert(f, k0, ins, (size_t)n);
            return;
        }
    }
    insert(f, k0, "\"x\":\"1\",\"x\":\"1\",", 16);
}

static void mutate(trng *r, mfile *f, uint64_t *n_override) {
    *n_override = UINT64_MAX;
    const int kind = (int)rint_in(r, 0, 13);
    const size_t at = f->hl ? (size_t)rint_in(r, 0, (int64_t)f->hl - 1) : 0;
    switch (kind) {
    case 0: /* a bit */
        if (f->hl) f->h[at] ^= (uint8_t)(1u << rint_in(r, 0, 7));
        break;
    case 1: /* a byte */
        if (f->hl) f->h[at] = (uint8_t)rnext(r);
        break;
    case 2: { /* insert a snippet anywhere */
        const char *s = PICK(r, ANY);
        insert(f, at, s, strlen(s));
        break;
    }
    case 3: /* delete a few bytes */
        erase(f, at, (size_t)rint_in(r, 1, 4));
        break;
    case 4:
    case 5: /* a number */
        if (!mutate_number(r, f) && f->hl) f->h[at] ^= 1;
        break;
    case 6: { /* whitespace or a control character before '{' */
        const char *s = PICK(r, WS);
        insert(f, 0, s, strlen(s));
        break;
    }
    case 7: { /* ... after the last '}' */
        size_t end = f->hl;
        while (end > 0 && f->h[end - 1] != '}') end--;
        const char *s = PICK(r, WS);
        insert(f, end, s, strlen(s));
        break;
    }
    case 8: { /* ... between two tokens (at a ',' or ':' outside strings) */
        bool *in = xmalloc(f->hl + 1);
        string_map(f, in);
        for (int tries = 0; tries < 50; tries++) {
            const size_t i = (size_t)rint_in(r, 0, (int64_t)(f->hl ? f->hl - 1 : 0));
            if (f->hl && !in[i] && (f->h[i] == ',' || f->h[i] == ':' || f->h[i] == '[' || f->h[i] == '{')) {
                const char *s = PICK(r, WS);
                free(in);
                insert(f, i + 1, s, strlen(s));
                return;
            }
        }
        free(in);
        break;
    }
    case 9: /* a duplicate metadata key */
        duplicate_key(r, f);
        break;
    case 10: { /* inside a string: escapes, NUL, invalid UTF-8, control characters */
        bool *in = xmalloc(f->hl + 1);
        string_map(f, in);
        for (int tries = 0; tries < 50; tries++) {
            const size_t i = (size_t)rint_in(r, 0, (int64_t)(f->hl ? f->hl - 1 : 0));
            if (f->hl && f->h[i] == '"' && i + 1 < f->hl && in[i + 1] && f->h[i + 1] != '"') {
                const char *s = PICK(r, IN_STRING);
                free(in);
                insert(f, i + 1, s, strlen(s));
                return;
            }
        }
        free(in);
        break;
    }
    case 11: /* a stale header length */
        *n_override = (uint64_t)f->hl + (uint64_t)rint_in(r, -9, 9);
        break;
    case 12: /* the data buffer a little longer or shorter */
        if (rnext(r) & 1 && f->dl < sizeof f->d) f->d[f->dl++] = (uint8_t)rnext(r);
        else if (f->dl) f->dl -= (size_t)rint_in(r, 1, f->dl < 4 ? (int64_t)f->dl : 4);
        break;
    default: { /* a dtype or key spelt differently */
        static const char *const from[] = {"\"F32\"", "\"I8\"", "\"U8\"", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\""};
        static const char *const to[] = {"\"f32\"", "\"I4\"", "\"U8 \"", "\"Dtype\"", "\"shapes\"", "\"data_offset\"", "\"__metadata\""};
        const int k = (int)rint_in(r, 0, 6);
        for (size_t i = 0; i + strlen(from[k]) <= f->hl; i++)
            if (!memcmp(f->h + i, from[k], strlen(from[k]))) {
                erase(f, i, strlen(from[k]));
                insert(f, i, to[k], strlen(to[k]));
                break;
            }
        break;
    }
    }
}

static uint8_t *assemble(const mfile *f, uint64_t n_override, size_t *len) {
    const uint64_t N = n_override != UINT64_MAX ? n_override : f->hl;
    *len = 8 + f->hl + f->dl;
    uint8_t *b = xmalloc(*len);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(N >> (8 * i));
    memcpy(b + 8, f->h, f->hl);
    memcpy(b + 8 + f->hl, f->d, f->dl);
    return b;
}

static void test_random_mutations(void **state) {
    (void)state;
    corpus c = {0};
    make_bases(&c);
    tally t = {0};
    trng r = {20240611};
    mfile *f = xmalloc(sizeof *f);
    for (int it = 0; it < 6000; it++) {
        const int base = (int)rint_in(&r, 0, c.n - 1);
        split(f, &c.base[base]);
        uint64_t n_override = UINT64_MAX;
        for (int k = (int)rint_in(&r, 1, it % 4 ? 1 : 3); k > 0; k--) {
            uint64_t no;
            mutate(&r, f, &no);
            if (no != UINT64_MAX) n_override = no;
        }
        size_t len;
        uint8_t *b = assemble(f, n_override, &len);
        if (it % 10 == 9) len = (size_t)rint_in(&r, 0, (int64_t)len); /* and cut */
        char what[128];
        snprintf(what, sizeof what, "mutation %d of '%s'", it, c.name[base]);
        compare(b, len, what, &t);
        free(b);
    }
    free(f);
    free_bases(&c);
    if (t.accepted < t.files / 20) fail_msg("weak test: only %d of %d mutated files were accepted", t.accepted, t.files);
    expect_agreement(&t, "random mutations");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_container_api),
        cmocka_unit_test(test_pinned_rules),
        cmocka_unit_test(test_known_damage),
        cmocka_unit_test(test_random_mutations),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

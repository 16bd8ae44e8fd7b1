/* onnx_agree.c - how closely ONNX Runtime running a qat ONNX export follows qat, on the
 * whole Fashion-MNIST test set (docs/onnx.md, "Acceptance"):
 *
 *   onnx_agree MODEL.int8 MODEL.onnx     int8: ORT on the ONNX file against qat's
 *                                        integer runtime on the qat-int8 file of the
 *                                        same checkpoint
 *   onnx_agree --float CKPT MODEL.onnx   float: ORT against qat's float forward
 *
 * Runs ORT through tests/ort_run.js (node, onnxruntime-node in .deps/node_modules) and
 * prints one JSON line: both accuracies, top-1 agreement, and the largest logit
 * difference (int8: in steps of the output scale, the logits' own unit; float: absolute).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/dataset.h"
#include "runtime/runtime.h"
#include "train/open.h"
#include "bench_util.h"

static int die(const char *what, const char *msg) {
    fprintf(stderr, "onnx_agree: %s: %s\n", what, msg);
    return 1;
}

static int argmax(const float *x, int k) {
    int b = 0;
    for (int j = 1; j < k; j++)
        if (x[j] > x[b]) b = j;
    return b;
}

int main(int argc, char **argv) {
    const bool fl = argc == 4 && !strcmp(argv[1], "--float");
    if (argc != 3 && !fl) {
        fprintf(stderr, "usage: onnx_agree MODEL.int8 MODEL.onnx | onnx_agree --float CKPT MODEL.onnx\n");
        return 2;
    }
    const char *qpath = argv[fl ? 2 : 1], *onnx = argv[fl ? 3 : 2];
    qat_dataset ds = {0};
    qat_error err = {0};
    if (qat_dataset_load_mnist(&ds, QAT_FASHION_MNIST_DIR, QAT_SPLIT_TEST, &err)) return die("data", err.msg);
    const int N = ds.n, per = ds.dim;
    char img[] = "/tmp/qat_onnx_agree_XXXXXX", out[64];
    int fd = mkstemp(img);
    if (fd < 0 || write(fd, ds.pixels, (size_t)N * per) != (ssize_t)((size_t)N * per)) return die(img, "cannot write");
    close(fd);
    snprintf(out, sizeof out, "%s.logits", img);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "node '%s/tests/ort_run.js' '%s/.deps/node_modules' '%s' %s %d %d %d %d %s >&2",
             QAT_SOURCE_DIR, QAT_SOURCE_DIR, onnx, img, N, ds.c, ds.h, ds.w, out);
    if (system(cmd) != 0) {
        unlink(img);
        return die(onnx, "ONNX Runtime failed (node and onnxruntime-node: run scripts/bootstrap.sh)");
    }
    size_t len;
    float *l = (float *)bench_read_file(out, &len);
    unlink(img);
    unlink(out);
    if (!l || len % ((size_t)N * sizeof(float))) return die(out, "unreadable logits");
    const int K = (int)(len / ((size_t)N * sizeof(float)));
    float *ref = malloc(sizeof(float) * (size_t)N * K);
    double unit = 1; /* int8: the output scale */
    if (!fl) {
        uint8_t *file = bench_read_file(qpath, &len);
        if (!file) return die(qpath, "cannot read");
        size_t ms = qrt_model_mem_size(file, len);
        void *mem = malloc(ms ? ms : 1);
        qrt_model m;
        qrt_error re;
        if (qrt_model_load(&m, file, len, mem, ms, &re)) return die(qpath, re.msg);
        if (qrt_model_n_outputs(&m) != K) return die(qpath, "not the ONNX model's number of classes");
        const qrt_value *o = qrt_model_output(&m);
        unit = strtod(o->s, NULL); /* "s=" text of the output value */
        if (!(unit > 0)) return die(qpath, "the output has no scale");
        void *arena = malloc(qrt_arena_size(&m));
        int8_t q[1024];
        for (int i = 0; i < N; i++) {
            qrt_run(&m, ds.pixels + (size_t)i * per, arena, q, NULL);
            for (int j = 0; j < K; j++) ref[(size_t)i * K + j] = (float)(unit * (q[j] - o->z));
        }
        free(arena);
        free(mem);
        free(file);
    } else {
        qat_opened o;
        if (qat_model_open(&o, qpath, 0, &err)) return die(qpath, err.msg);
        qat_tape t;
        qat_tape_init(&t, 0);
        t.training = t.grad_enabled = false;
        enum { B = 500 };
        float *x = malloc(sizeof(float) * B * (size_t)per);
        for (int i0 = 0; i0 < N; i0 += B) {
            int n = N - i0 < B ? N - i0 : B;
            qat_tape_reset(&t);
            for (int i = 0; i < n; i++)
                for (int c = 0; c < ds.c; c++)
                    for (int k = 0; k < ds.h * ds.w; k++) {
                        size_t at = (size_t)i * per + (size_t)c * ds.h * ds.w + k;
                        x[at] = (float)(((double)ds.pixels[(size_t)i0 * per + at] / 255.0 - (double)o.norm.mean[c]) /
                                        (double)o.norm.std[c]);
                    }
            qat_tensor *y = qat_model_forward(o.m, &t, qat_tape_input(&t, 4, (int[]){n, ds.c, ds.h, ds.w}, x));
            if (!y) return die(qpath, t.err.msg);
            memcpy(ref + (size_t)i0 * K, y->data, sizeof(float) * (size_t)n * K);
        }
        free(x);
        qat_tape_free(&t);
        qat_opened_free(&o);
    }
    int agree = 0, hit_ort = 0, hit_ref = 0;
    double worst = 0;
    for (int i = 0; i < N; i++) {
        const float *a = l + (size_t)i * K, *b = ref + (size_t)i * K;
        int pa = argmax(a, K), pb = argmax(b, K);
        agree += pa == pb;
        hit_ort += pa == ds.labels[i];
        hit_ref += pb == ds.labels[i];
        for (int j = 0; j < K; j++) worst = fmax(worst, fabs((double)a[j] - (double)b[j]) / unit);
    }
    printf("{\"onnx\": \"%s\", \"reference\": \"%s\", \"kind\": \"%s\", \"images\": %d, \"ort_accuracy\": %.4f, "
           "\"qat_accuracy\": %.4f, \"top1_agreement\": %.4f, \"max_logit_diff\": %.4g, \"max_logit_diff_unit\": "
           "\"%s\"}\n",
           onnx, qpath, fl ? "float" : "int8", N, (double)hit_ort / N, (double)hit_ref / N, (double)agree / N, worst,
           fl ? "absolute" : "output-scale steps");
    free(l);
    free(ref);
    qat_dataset_free(&ds);
    return 0;
}

/* qat sensitivity: each conv/linear layer's accuracy cost at each weight width, one layer
 * at a time, and with --budget the best mix within a weight-byte budget
 * (train/sensitivity.h, quant/mixed.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/parallel.h"
#include "common.h"
#include "quant/quant.h"
#include "quant/mixed.h"
#include "train/sensitivity.h"

static void progress(void *user, const char *layer, int bits, double accuracy) {
    (void)user;
    fprintf(stderr, "  layer %s at %d bits: %.2f%%\n", layer, bits, 100 * accuracy);
}

static int parse_bits(const char *text, int *bits, int cap) {
    int n = 0;
    const char *p = text;
    while (*p) {
        char *end;
        long b = strtol(p, &end, 10);
        if (end == p || b < 2 || b > 8 || n == cap) return -1;
        for (int k = 0; k < n; k++)
            if (bits[k] == b) return -1;
        bits[n++] = (int)b;
        if (*end == ',') end++;
        else if (*end) return -1;
        p = end;
    }
    return n;
}

qat_status cli_auto_spec(const char *ckpt, const char *spec_text, qat_loader *train, qat_loader *test, int samples,
                         bool quiet, char *out, size_t len, qat_error *err) {
    qat_quant_spec qs;
    qat_status s = qat_quant_spec_parse(&qs, spec_text, err);
    if (s) return s;
    if (!qs.auto_bytes) {
        qat_quant_spec_format(&qs, out, len);
        return QAT_STATUS_OK;
    }
    const size_t budget = (size_t)qs.auto_bytes;
    qs.auto_bytes = 0;
    char base[2048];
    qat_quant_spec_format(&qs, base, sizeof base);
    const int bits[] = {2, 3, 4, 8};
    qat_sensitivity *S = malloc(sizeof *S);
    if (!S) return qat_error_set(err, QAT_STATUS_NOMEM, "out of memory");
    if (!quiet) fprintf(stderr, "auto=%zu: measuring each layer at 2, 3, 4 and 8 bits (PTQ of %s)\n", budget, base);
    size_t bytes = 0;
    double predicted = 0;
    if (!(s = qat_sensitivity_measure(S, ckpt, base, bits, 4, train, test, samples, quiet ? NULL : progress, NULL, err)) &&
        !(s = qat_sensitivity_choose(S, budget, out, len, &bytes, &predicted, err)) && !quiet)
        fprintf(stderr, "auto=%zu: %s (%zu weight bytes; PTQ predicted %.2f%%)\n", budget, out, bytes, 100 * predicted);
    free(S);
    return s;
}

int cmd_sensitivity(int argc, char **argv) {
    const char *base = "w4a4", *bits_text = "2,3,4,8", *data = NULL, *format = NULL;
    int samples = 2048, threads = 0;
    long budget = 0;
    bool json = false;
    qat_opt opts[] = {
        {"quant", QAT_OPT_STRING, &base, "SPEC", "the base spec every other layer keeps (default w4a4)"},
        {"bits", QAT_OPT_STRING, &bits_text, "LIST", "weight widths to try per layer (default 2,3,4,8)"},
        {"samples", QAT_OPT_INT, &samples, "N", "calibration samples per measurement"},
        {"budget", QAT_OPT_LONG, &budget, "BYTES",
         "also choose each layer's width within this many weight bytes of the int8 file, and measure the mix"},
        {"data", QAT_OPT_STRING, &data, "PATH", "data (default: the checkpoint's data set)"},
        {"format", QAT_OPT_STRING, &format, "F", "idx, cifar10, folder or csv (default: detected)"},
        {"threads", QAT_OPT_INT, &threads, "N", "threads (0: QAT_NUM_THREADS, else all CPUs)"},
        {"json", QAT_OPT_FLAG, &json, NULL, "print the table as one JSON object"},
        {0},
    };
    char *pos[1];
    qat_error err = {0};
    int n = qat_args_parse(argc, argv, opts, pos, 1, &err);
    if (n == -2 || n == 0) {
        qat_args_help(n == -2 ? stdout : stderr, "qat sensitivity FP32.safetensors [options]",
                      "Measures what each conv and linear layer costs at each weight width: post-training "
                      "quantization with that one layer's weights at b bits (w@LAYER=b) and every other "
                      "layer at the base spec, test accuracy against the base's. With --budget, chooses the "
                      "widths that lose least within that many weight bytes (2, 3 and 4 bits take half a byte "
                      "per weight in the int8 file, 5 to 8 bits a byte) and measures the chosen spec, which "
                      "qat train --quant and qat calibrate take as printed; their spec option auto=BYTES does "
                      "all of this itself.",
                      opts);
        return n == -2 ? 0 : 2;
    }
    if (n < 0) return cli_fail("sensitivity", err.msg);
    int bits[QAT_SENS_MAX_BITS];
    const int nb = parse_bits(bits_text, bits, QAT_SENS_MAX_BITS);
    if (nb < 1) return cli_fail("sensitivity", "--bits: a comma-separated list of distinct widths 2..8");
    if (samples < 1) return cli_fail("sensitivity", "--samples must be at least 1");
    if (budget < 0) return cli_fail("sensitivity", "--budget must be positive");
    if (threads > 0) qat_set_num_threads(threads);
    qat_opened cm;
    if (qat_model_open(&cm, pos[0], 0, &err)) return cli_fail("sensitivity", err.msg);
    if (!cm.from_checkpoint || cm.m->quant) {
        qat_opened_free(&cm);
        return cli_fail("sensitivity", "needs a float checkpoint (from qat train without --quant)");
    }
    const char *v = qat_checkpoint_extra(&cm.ckpt, "data");
    if (!data) data = v ? v : QAT_FASHION_MNIST_DIR;
    qat_dataset train = {0}, test = {0};
    qat_loader ltrain = {0}, ltest = {0};
    qat_loader_config lc = qat_loader_config_default();
    lc.batch_size = 256;
    qat_loader_config_normalize(&lc, &cm.norm);
    qat_loader_config tc = lc;
    tc.shuffle = false;
    qat_sensitivity *S = malloc(sizeof *S);
    int rc = 0;
    if (!S) {
        rc = cli_fail("sensitivity", "out of memory");
        goto done;
    }
    if (cli_open_data(&train, data, format, QAT_SPLIT_TRAIN, cm.m, &err) ||
        cli_open_data(&test, data, format, QAT_SPLIT_TEST, cm.m, &err) || qat_loader_init(&ltrain, &train, &lc, &err) ||
        qat_loader_init(&ltest, &test, &tc, &err) ||
        qat_sensitivity_measure(S, pos[0], base, bits, nb, &ltrain, &ltest, samples, json ? NULL : progress, NULL, &err)) {
        rc = cli_fail("sensitivity", err.msg);
        goto done;
    }
    if (json) {
        printf("{\"command\": \"sensitivity\", \"checkpoint\": \"%s\", \"base\": \"%s\", \"base_accuracy\": %.6f, "
               "\"layers\": [",
               pos[0], S->base, S->base_accuracy);
        for (int l = 0; l < S->n_layers; l++) {
            printf("%s{\"layer\": \"%s\", \"weights\": %zu, \"base_bits\": %d, \"accuracy\": {", l ? ", " : "",
                   S->layer[l], S->weights[l], S->base_bits[l]);
            for (int k = 0; k < nb; k++) printf("%s\"%d\": %.6f", k ? ", " : "", bits[k], S->accuracy[l][k]);
            printf("}}");
        }
        printf("]");
    } else {
        printf("%s, PTQ %s on %d samples: %.2f%%\n", pos[0], S->base, samples, 100 * S->base_accuracy);
        printf("%-14s %9s %5s", "layer", "weights", "base");
        for (int k = 0; k < nb; k++) printf("  %d bits", bits[k]);
        printf("   (accuracy change, points)\n");
        for (int l = 0; l < S->n_layers; l++) {
            printf("%-14s %9zu %5d", S->layer[l], S->weights[l], S->base_bits[l]);
            for (int k = 0; k < nb; k++) printf(" %+7.2f", 100 * (S->accuracy[l][k] - S->base_accuracy));
            printf("\n");
        }
    }
    if (budget > 0) {
        char spec[2048];
        size_t bytes = 0, base_bytes = 0;
        double predicted = 0, measured = 0;
        for (int l = 0; l < S->n_layers; l++) base_bytes += qat_weight_bytes(S->weights[l], S->base_bits[l]);
        if (qat_sensitivity_choose(S, (size_t)budget, spec, sizeof spec, &bytes, &predicted, &err) ||
            qat_ptq_accuracy(pos[0], spec, &ltrain, &ltest, samples, &measured, &err)) {
            rc = cli_fail("sensitivity", err.msg);
            goto done;
        }
        if (json)
            printf(", \"budget\": %ld, \"choice\": \"%s\", \"weight_bytes\": %zu, \"base_weight_bytes\": %zu, "
                   "\"predicted_accuracy\": %.6f, \"ptq_accuracy\": %.6f",
                   budget, spec, bytes, base_bytes, predicted, measured);
        else
            printf("within %ld weight bytes: %s (%zu bytes; the base takes %zu): PTQ %.2f%% (the table predicts "
                   "%.2f%%)\n",
                   budget, spec, bytes, base_bytes, 100 * measured, 100 * predicted);
    }
    if (json) printf("}\n");
done:
    free(S);
    qat_loader_free(&ltrain);
    qat_loader_free(&ltest);
    qat_dataset_free(&train);
    qat_dataset_free(&test);
    qat_opened_free(&cm);
    return rc;
}

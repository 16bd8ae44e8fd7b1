/* qat train / eval / demo: data set selection, the training recipe, checkpoints.
 *
 * The default recipe is the one that reaches PyTorch's accuracy on Fashion-MNIST: SGD
 * with momentum 0.9, lr 0.05 with per-step cosine decay to 0, batch 64, no weight decay,
 * no augmentation, inputs (x/255 - 0.2860)/0.3530. */
#include <cblas.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "autograd/parallel.h"
#include "autograd/comm.h"
#include "common.h"
#include "export/int8.h"
#include "io/file_check.h"
#include "train/qlora.h"
#include "quant/quant.h"
#include "data/loader.h"
#include "train/progress.h"
#include "train/calibrate.h"
#include "train/trainer.h"
#include "train/onnx_import.h"

static const char *FASHION_CLASSES =
    "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot";

/* ---- train ---- */

/* The options that make up a training recipe. They are stored in checkpoints as
 * "train.<name>", and a resumed run takes each one it is not given again from there,
 * so `qat train --resume FILE` continues the same run without repeating its flags. */
static const char *const RECIPE[] = {"data", "test-data", "format", "epochs", "batch", "optim",
                                     "lr", "momentum", "nesterov", "weight-decay", "schedule",
                                     "eta-min", "step-size", "gamma", "warmup", "clip-grad",
                                     "crop", "flip", "mean", "std", "distill", "distill-alpha", "classes",
                                     "train-samples", "test-samples", "sync-bn"};
#define N_RECIPE (sizeof RECIPE / sizeof *RECIPE)

typedef struct train_args {
    const char *model, *data, *test_data, *format, *out, *resume, *log, *import, *optim, *schedule, *lora, *classes, *base;
    const char *report; /* --report DIR */
    bool sync_bn;       /* --sync-bn */
    const char *mean, *std, *from, *quant;
    int epochs, until, batch, threads, warmup, step_size, crop, calib_samples, train_samples, test_samples;
    long seed;
    float lr, momentum, weight_decay, gamma, clip, eta_min, distill, distill_alpha;
    bool nesterov, flip, json, quiet;
} train_args;

static void train_defaults(train_args *a) {
    *a = (train_args){.model = "cnn", .data = QAT_FASHION_MNIST_DIR, .out = "qat-checkpoint.safetensors",
                      .optim = "sgd", .schedule = "cosine", .epochs = 3, .batch = 64,
                      .lr = 0.05f, .momentum = 0.9f, .gamma = 0.1f, .calib_samples = 2048,
                      .distill_alpha = 0.5f};
}

static void print_json(const char *what, const qat_train_result *r, const char *ckpt) {
    printf("{\"command\": \"%s\", \"epochs\": %d, \"steps\": %ld, \"train_loss\": %.6f, "
           "\"train_accuracy\": %.6f, \"test_loss\": %.6f, \"test_accuracy\": %.6f, "
           "\"seconds\": %.3f, \"samples_per_s\": %.1f, \"checkpoint\": \"%s\"}\n",
           what, r->epochs_done, r->steps, r->train_loss, r->train_acc, r->test_loss, r->test_acc,
           r->seconds, r->samples_per_s, ckpt ? ckpt : "");
}

/* --classes: "0-4", "5,6,7,8,9", "0-2,7": flags in keep[0..n) (labels of n classes). */
static qat_status parse_classes(const char *text, bool *keep, int n, qat_error *err) {
    for (int i = 0; i < n; i++) keep[i] = false;
    const char *p = text;
    bool any = false;
    while (*p) {
        char *end;
        long lo = strtol(p, &end, 10), hi = lo;
        if (end == p) break;
        p = end;
        if (*p == '-') {
            hi = strtol(p + 1, &end, 10);
            if (end == p + 1) break;
            p = end;
        }
        if (lo < 0 || hi < lo || hi >= n)
            return qat_error_set(err, QAT_STATUS_INVALID_ARG, "--classes %s: %ld-%ld is not within the data's labels 0..%d",
                                 text, lo, hi, n - 1);
        for (long c = lo; c <= hi; c++) keep[c] = true;
        any = true;
        if (*p == ',') p++;
        else if (*p) break;
    }
    if (*p || !any)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "--classes %s: expected labels and ranges, e.g. 0-4 or 5,6,7", text);
    return QAT_STATUS_OK;
}

/* Runs a whole training job; with `res` set, it returns the result instead of printing it. */
static int run_train(train_args *a, const qat_opt *opts, const char *cmd, qat_train_result *res) {
    qat_error err = {0};
    if (a->threads > 0) qat_set_num_threads(a->threads);
    qat_opened cm;
    const char *spec = a->resume ? a->resume : a->from ? a->from : a->model;
    /* Where the checkpoint goes is checked before any training (io/file_check.h). */
    const char *target = a->out ? a->out : a->resume;
    if (target && qat_file_check_output(target, &err)) return cli_fail(cmd, err.msg);
    char report_path[4096] = "";
    if (a->report) { /* --report DIR: made now (one level), checked like --out */
        struct stat rs;
        if (stat(a->report, &rs) && mkdir(a->report, 0777) && errno != EEXIST) { /* EEXIST: another process of mpirun made it */
            snprintf(report_path, sizeof report_path, "%s: cannot create the directory (--report): %s", a->report,
                     strerror(errno));
            return cli_fail(cmd, report_path);
        }
        snprintf(report_path, sizeof report_path, "%s/report.html", a->report);
        if (qat_file_check_output(report_path, &err)) return cli_fail(cmd, err.msg);
    }
    if (!target && a->report) return cli_fail(cmd, "--report needs --out (the report draws the checkpoint)");
    if (qat_model_open(&cm, spec, (uint64_t)a->seed, &err)) return cli_fail(cmd, err.msg);
    qat_model *m = cm.m;
    if (a->from && (!cm.from_checkpoint || m->quant)) {
        qat_opened_free(&cm);
        return cli_fail(cmd, "--from needs a float checkpoint (from qat train without --quant); "
                             "to continue a quantized run use --resume");
    }
    int start_epoch = 0;
    long start_step = 0;
    qat_rng rng;
    qat_rng_init(&rng, (uint64_t)a->seed ^ 0x9e3779b97f4a7c15ULL);
    /* The normalisation: a checkpoint's own (--from, --resume), else --mean/--std, else
     * Fashion-MNIST's for the default data, else the training set's statistics. */
    qat_normalization norm = qat_normalization_identity();
    norm.mean[0] = norm.mean[1] = norm.mean[2] = QAT_FASHION_MNIST_MEAN;
    norm.std[0] = norm.std[1] = norm.std[2] = QAT_FASHION_MNIST_STD;
    bool have_norm = false;
    if ((a->from || a->resume) && cm.have_norm) {
        norm = cm.norm;
        have_norm = true;
    }
    if (a->resume) {
        start_epoch = (int)cm.ckpt.epoch;
        start_step = cm.ckpt.step;
        rng = cm.ckpt.rng;
        const char *v;
        if ((v = qat_checkpoint_extra(&cm.ckpt, "seed"))) a->seed = strtol(v, NULL, 10);
    }
    if (a->import) {
        /* PyTorch weights: by name, else by order and shape (the mapping printed). */
        qat_import_report rep;
        if (qat_checkpoint_import_mapped(m, a->import, a->quiet ? NULL : stderr, &rep, &err)) {
            qat_opened_free(&cm);
            return cli_fail(cmd, err.msg);
        }
        fprintf(stderr, "imported %d tensors from %s\n", rep.n_loaded, a->import);
    }

    qat_dataset train = {0}, test = {0};
    const char *test_path = a->test_data ? a->test_data : a->data;
    if (cli_open_data(&train, a->data, a->format, QAT_SPLIT_TRAIN, m, &err) ||
        cli_open_data(&test, test_path, a->format, QAT_SPLIT_TEST, m, &err)) {
        qat_dataset_free(&train);
        qat_opened_free(&cm);
        return cli_fail(cmd, err.msg);
    }
    if (a->classes) {
        bool keep[QAT_DATA_MAX_CLASSES];
        const int nc = QAT_MAX(train.n_classes, test.n_classes);
        if (parse_classes(a->classes, keep, nc, &err) || qat_dataset_keep_classes(&train, keep, a->data, &err) ||
            qat_dataset_keep_classes(&test, keep, test_path, &err)) {
            qat_dataset_free(&train);
            qat_dataset_free(&test);
            qat_opened_free(&cm);
            return cli_fail(cmd, err.msg);
        }
    }
    if (a->train_samples < 0 || a->test_samples < 0) {
        qat_dataset_free(&train);
        qat_dataset_free(&test);
        qat_opened_free(&cm);
        return cli_fail(cmd, "--train-samples and --test-samples must be >= 0");
    }
    if (a->train_samples > 0 && a->train_samples < train.n) train.n = a->train_samples;
    if (a->test_samples > 0 && a->test_samples < test.n) test.n = a->test_samples;
    const int channels = train.kind == QAT_DATASET_KIND_IMAGES ? train.c : 1;
    if (a->mean) {
        if (qat_normalization_parse(&norm, a->mean, a->std, &err) ||
            (norm.channels != 1 && norm.channels != channels &&
             qat_error_set(&err, QAT_STATUS_INVALID_ARG, "--mean/--std give %d values for data of %d channels",
                           norm.channels, channels))) {
            qat_dataset_free(&train);
            qat_dataset_free(&test);
            qat_opened_free(&cm);
            return cli_fail(cmd, err.msg);
        }
    } else if (!have_norm && strcmp(a->data, QAT_FASHION_MNIST_DIR) != 0 &&
               train.kind == QAT_DATASET_KIND_IMAGES) {
        qat_dataset_channel_stats(&train, norm.mean, norm.std, &err);
    }
    /* Normalisation as one value per channel of the data, comma-separated: the text the
     * checkpoint stores, and the values everything below uses, so that a model opened from
     * the checkpoint later sees the very same floats. */
    char smean[64] = "", sstd[64] = "", sseed[32], sclasses[16];
    qat_normalization_format(&norm, channels, smean, sstd, sizeof smean);
    if (qat_normalization_parse(&norm, smean, sstd, &err)) {
        qat_dataset_free(&train);
        qat_dataset_free(&test);
        qat_opened_free(&cm);
        return cli_fail(cmd, err.msg);
    }

    qat_loader_config lc = qat_loader_config_default();
    lc.batch_size = a->batch;
    lc.seed = (uint64_t)a->seed;
    lc.crop_padding = a->crop;
    lc.hflip = a->flip;
    qat_loader_config_normalize(&lc, &norm);
    qat_loader_config tc = lc;
    tc.shuffle = false;
    tc.crop_padding = 0;
    tc.hflip = false;
    /* Evaluation shares the training step's tape: batches no larger than the training's
     * keep its arena at the training step's size (a batch of 256 would quadruple it). */
    tc.batch_size = a->batch < 256 ? a->batch : 256;
    qat_loader ltrain = {0}, ltest = {0};
    int rc = 0;
    qat_optim opt = {0};
    qat_opened teacher = {0}; /* --distill */
    qat_distill kd = {0};
    if (qat_loader_init(&ltrain, &train, &lc, &err) || qat_loader_init(&ltest, &test, &tc, &err)) {
        rc = cli_fail(cmd, err.msg);
        goto done;
    }

    /* Quantization-aware training: quantize, calibrate the ranges, then train. */
    char quant_text[2048] = "";
    if (a->quant) {
        qat_quant_spec qs;
        if (qat_quant_spec_parse(&qs, a->quant, &err) ||
            (qs.auto_bytes && !a->from &&
             qat_error_set(&err, QAT_STATUS_INVALID_ARG, "--quant auto=BYTES measures a float checkpoint: give --from")) ||
            (qs.auto_bytes ? cli_auto_spec(a->from, a->quant, &ltrain, &ltest, a->calib_samples, a->quiet, quant_text,
                                           sizeof quant_text, &err)
                           : (qat_quant_spec_format(&qs, quant_text, sizeof quant_text), QAT_STATUS_OK)) ||
            qat_model_quantize(m, quant_text, &norm, &err) || qat_calibrate(m, &ltrain, a->calib_samples, &err)) {
            rc = cli_fail(cmd, err.msg);
            goto done;
        }
    } else if (m->quant) {
        qat_quant_spec_format(&m->quant->spec, quant_text, sizeof quant_text);
    }

    /* Low-rank adapters over the frozen weights (layers/lora.h), initialised from their own
     * generator so that the training run's stream is the same with or without them. */
    char lora_text[96] = "";
    if (a->lora) {
        qat_rng lrng;
        qat_rng_init(&lrng, (uint64_t)a->seed ^ 0x4c6f5241ULL);
        snprintf(lora_text, sizeof lora_text, "%s%s%s", a->lora, a->base ? ",base=" : "", a->base ? a->base : "");
        if (qat_lora_setup(m, lora_text, true, &lrng, &err)) {
            rc = cli_fail(cmd, err.msg);
            goto done;
        }
    }
    qat_lora_text_format(m, lora_text, sizeof lora_text);

    /* The optimizer from its name; each flag sets the config field of that name where
     * the kind has one (optim.h's field tables); a weight decay of 0 keeps the kind's
     * default (AdamW's 0.01). */
    qat_optim_kind okind;
    if (!qat_optim_kind_parse(a->optim, &okind)) {
        char names[128], msg[200];
        qat_optim_kind_names(names, sizeof names);
        snprintf(msg, sizeof msg, "--optim %s: expected %s", a->optim, names);
        rc = cli_fail(cmd, msg);
        goto done;
    }
    qat_optim_config oc = qat_optim_config_default(okind);
    const struct {
        const char *field;
        double value;
        bool set;
    } flags[] = {{"lr", a->lr, true},
                 {"momentum", a->momentum, true},
                 {"nesterov", a->nesterov, true},
                 {"weight_decay", a->weight_decay, a->weight_decay > 0}};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++) {
        const qat_optim_field *f = qat_optim_field_find(okind, flags[i].field);
        if (f && flags[i].set) qat_optim_field_set(&oc, f, flags[i].value);
    }
    /* One length per trainable tensor: the 8-bit optimizers quantize each on its own. */
    size_t *lengths = malloc((size_t)m->n_param_tensors * sizeof *lengths);
    const int n_lengths = lengths ? qat_model_trainable_lengths(m, lengths) : 0;
    if (!lengths || qat_optim_init_tensors(&opt, &oc, lengths, n_lengths, &err)) {
        free(lengths);
        rc = cli_fail(cmd, lengths ? err.msg : "out of memory");
        goto done;
    }
    free(lengths);
    if (a->resume && cm.ckpt.has_optim && qat_checkpoint_restore(&cm.ckpt, m, &opt, &err)) {
        rc = cli_fail(cmd, err.msg);
        goto done;
    }

    long total = (long)ltrain.n_batches * a->epochs;
    qat_lr_schedule sched = {.warmup_steps = a->warmup, .warmup_start_factor = 0.0};
    if (strcmp(a->schedule, "cosine") == 0) {
        sched.kind = QAT_LR_COSINE;
        sched.t_max = total - a->warmup;
        sched.eta_min = a->eta_min;
    } else if (strcmp(a->schedule, "step") == 0) {
        sched.kind = QAT_LR_STEP;
        sched.step_size = a->step_size > 0 ? a->step_size : ltrain.n_batches;
        sched.gamma = a->gamma;
    } else if (strcmp(a->schedule, "constant") == 0) {
        sched.kind = QAT_LR_CONSTANT;
    } else {
        rc = cli_fail(cmd, "--schedule: expected cosine, step or constant");
        goto done;
    }
    if (qat_lr_schedule_check(&sched, &err)) {
        rc = cli_fail(cmd, err.msg);
        goto done;
    }

    snprintf(sseed, sizeof sseed, "%ld", a->seed);
    snprintf(sclasses, sizeof sclasses, "%d", train.n_classes);
    qat_st_kv extra[9 + N_RECIPE] = {{"normalize_mean", smean}, {"normalize_std", sstd}, {"seed", sseed},
                                     {"data", a->data}, {"classes", sclasses}};
    size_t n_extra = 5;
    char keys[N_RECIPE][32], values[N_RECIPE][256];
    for (size_t i = 0; opts && i < N_RECIPE; i++) {
        const qat_opt *o = opts;
        while (o->name && strcmp(o->name, RECIPE[i]) != 0) o++;
        if (!o->name) continue;
        snprintf(keys[i], sizeof keys[i], "train.%s", RECIPE[i]);
        qat_args_format(o, values[i], sizeof values[i]);
        extra[n_extra++] = (qat_st_kv){keys[i], values[i]};
    }
    if (strcmp(a->data, QAT_FASHION_MNIST_DIR) == 0) extra[n_extra++] = (qat_st_kv){"class_names", FASHION_CLASSES};
    if (quant_text[0]) extra[n_extra++] = (qat_st_kv){"quant", quant_text};
    if (lora_text[0]) extra[n_extra++] = (qat_st_kv){"lora", lora_text};
    /* Distillation: the teacher is the float checkpoint QAT starts from; a resumed run
     * reopens the one its checkpoint names. */
    if (a->distill != 0.0f) {
        const char *tpath = a->from ? a->from : a->resume ? qat_checkpoint_extra(&cm.ckpt, "distill.teacher") : NULL;
        char msg[600];
        if (!(a->distill > 0.0f && a->distill <= 1000.0f) || !(a->distill_alpha >= 0.0f && a->distill_alpha <= 1.0f)) {
            rc = cli_fail(cmd, "--distill T must be in (0, 1000] and --distill-alpha in [0, 1]");
            goto done;
        }
        if (!tpath) {
            rc = cli_fail(cmd, "--distill needs a teacher: the float checkpoint given by --from");
            goto done;
        }
        if (qat_model_open(&teacher, tpath, 0, &err) || !teacher.from_checkpoint || teacher.m->quant) {
            snprintf(msg, sizeof msg, "--distill: the teacher %s: %s", tpath,
                     err.msg[0] ? err.msg : "not a float checkpoint");
            rc = cli_fail(cmd, msg);
            goto done;
        }
        kd = (qat_distill){teacher.m, a->distill, a->distill_alpha};
        extra[n_extra++] = (qat_st_kv){"distill.teacher", tpath};
    }
    const char *ckpt = a->out;
    if (a->resume && !a->out) ckpt = a->resume;
    qat_comm_set_sync_bn(a->sync_bn); /* after a resume restored the recipe */
    qat_train_config tcfg = {.epochs = a->until > 0 && a->until < a->epochs ? a->until : a->epochs,
                             .sched = sched, .clip_norm = a->clip, .checkpoint = ckpt,
                             .log = a->log, .progress = !a->quiet, .model_text = cm.text,
                             .extra = extra, .n_extra = n_extra, .distill = kd.teacher ? &kd : NULL,
                             .history = a->resume ? qat_checkpoint_extra(&cm.ckpt, QAT_HISTORY_KEY) : NULL};
    if (!a->quiet) {
        fprintf(stderr, "training %s on %s: %d train / %d test samples, %zu parameters, %s lr %g %s, "
                        "batch %d, epochs %d..%d of %d\n",
                a->resume ? a->resume : a->from ? a->from : a->model, a->data, train.n, test.n, m->n_params,
                qat_optim_kind_str(oc.kind), (double)a->lr, a->schedule, a->batch, start_epoch + 1,
                tcfg.epochs, a->epochs);
    }
    if (!a->quiet && m->lora) {
        size_t ad, tr, fr;
        qat_lora_counts(m, &ad, &tr, &fr);
        fprintf(stderr, "LoRA %s: %zu parameters train (%zu in adapters, the rest biases and batch norm), %zu frozen\n",
                lora_text, tr, ad, fr);
        const qat_lora_base *lb = qat_lora_base_of(m);
        if (lb) {
            size_t q4, f32;
            qat_lora_base_bytes(lb, &q4, &f32);
            fprintf(stderr, "the frozen base in %s with double-quantized constants: %zu bytes (F32: %zu), %.3f bits per weight\n",
                    qat_q4_format_str(lb->format), q4, f32, 8.0 * (double)q4 / (double)(f32 / 4));
        }
    }
    qat_train_result r;
    if (qat_train_run(m, &opt, &ltrain, &ltest, &tcfg, start_epoch, start_step, &rng, &r, &err)) {
        rc = cli_fail(cmd, err.msg);
        goto done;
    }
    if (res) *res = r;
    else if (a->json) print_json(cmd, &r, ckpt);
    else
        printf("test accuracy %.2f%%, test loss %.4f after %d epochs (%.1f s, %.0f samples/s); "
               "checkpoint %s\n",
               100 * r.test_acc, r.test_loss, r.epochs_done, r.seconds, r.samples_per_s, ckpt);
    if (a->report && qat_comm_get()->rank == 0) {
        /* the float model it came from, for the sensitivity section: --from when this run quantized it */
        const char *fl = m->quant && a->from && a->quant ? a->from : NULL;
        /* the first process alone, as one process: no collective may wait for the others */
        const qat_comm *world = qat_comm_get();
        qat_comm_set(NULL);
        rc = cli_report(ckpt, fl, a->test_data ? a->test_data : a->data, a->format, report_path, a->test_samples,
                        QAT_REPORT_SENS_SAMPLES, a->quiet);
        qat_comm_set(world);
        if (rc) goto done;
        if (!a->json && !res) printf("report %s\n", report_path);
    }
done:
    if (teacher.m) qat_opened_free(&teacher);
    qat_optim_free(&opt);
    qat_loader_free(&ltrain);
    qat_loader_free(&ltest);
    qat_dataset_free(&train);
    qat_dataset_free(&test);
    qat_opened_free(&cm);
    return rc;
}

#define N_TRAIN_OPTS 43

static void train_opts(train_args *a, qat_opt *o) {
    qat_opt opts[] = {
        {"model", QAT_OPT_STRING, &a->model, "SPEC", "cnn, mlp or a model file"},
        {"data", QAT_OPT_STRING, &a->data, "PATH", "training data: IDX dir, CIFAR-10 dir, image folder or .csv"},
        {"test-data", QAT_OPT_STRING, &a->test_data, "PATH", "test data (default: the test split of --data)"},
        {"format", QAT_OPT_STRING, &a->format, "F", "idx, cifar10, folder or csv (default: detected)"},
        {"epochs", QAT_OPT_INT, &a->epochs, "N", "epochs in total (sets the schedule's length)"},
        {"until", QAT_OPT_INT, &a->until, "N", "stop after epoch N of --epochs, to resume later (0: run all)"},
        {"batch", QAT_OPT_INT, &a->batch, "N", "batch size"},
        {"optim", QAT_OPT_STRING, &a->optim, "NAME", "sgd, adam, adamw, or their 8-bit-state forms sgd8, adam8, adamw8"},
        {"lr", QAT_OPT_FLOAT, &a->lr, "X", "base learning rate"},
        {"momentum", QAT_OPT_FLOAT, &a->momentum, "X", "SGD momentum"},
        {"nesterov", QAT_OPT_FLAG, &a->nesterov, NULL, "Nesterov momentum"},
        {"weight-decay", QAT_OPT_FLOAT, &a->weight_decay, "X", "weight decay (AdamW: decoupled)"},
        {"schedule", QAT_OPT_STRING, &a->schedule, "S", "cosine, step or constant (per step)"},
        {"eta-min", QAT_OPT_FLOAT, &a->eta_min, "X", "cosine: final learning rate"},
        {"step-size", QAT_OPT_INT, &a->step_size, "N", "step schedule: steps between decays (default: an epoch)"},
        {"gamma", QAT_OPT_FLOAT, &a->gamma, "X", "step schedule: decay factor"},
        {"warmup", QAT_OPT_INT, &a->warmup, "N", "linear warm-up steps"},
        {"clip-grad", QAT_OPT_FLOAT, &a->clip, "X", "clip the global gradient norm (0: off)"},
        {"crop", QAT_OPT_INT, &a->crop, "P", "augmentation: random crop after padding by P"},
        {"flip", QAT_OPT_FLAG, &a->flip, NULL, "augmentation: random horizontal flip"},
        {"mean", QAT_OPT_STRING, &a->mean, "M[,M,M]", "normalisation mean in x/255 units"},
        {"std", QAT_OPT_STRING, &a->std, "S[,S,S]", "normalisation std"},
        {"seed", QAT_OPT_LONG, &a->seed, "N", "seed of init, order, augmentation, dropout"},
        {"threads", QAT_OPT_INT, &a->threads, "N", "threads (0: QAT_NUM_THREADS, else all CPUs)"},
        {"out", QAT_OPT_STRING, &a->out, "FILE", "checkpoint written after every epoch"},
        {"resume", QAT_OPT_STRING, &a->resume, "FILE", "continue from a checkpoint"},
        {"from", QAT_OPT_STRING, &a->from, "FILE", "start from a float checkpoint (its model and weights)"},
        {"quant", QAT_OPT_STRING, &a->quant, "SPEC", "quantization-aware training: w8a8, w4a4,pact, ... (see qat calibrate --help); with --from, lr 0.01 and 1 epoch unless given"},
        {"lora", QAT_OPT_STRING, &a->lora, "r=R[,alpha=A]",
         "with --from: train low-rank adapters on every linear and conv layer over the frozen weights (layers/lora.h; alpha defaults to 2R; AdamW at lr 1e-2 unless given); qat merge folds them in"},
        {"base", QAT_OPT_STRING, &a->base, "FORMAT", "--lora: the frozen weights in nf4 or int4 (groups of 64, double-quantized constants; QLoRA) or fp32 (default)"},
        {"classes", QAT_OPT_STRING, &a->classes, "LIST", "train and test on these labels only: 0-4, or 5,6,7,8,9"},
        {"train-samples", QAT_OPT_INT, &a->train_samples, "N", "train on the first N training samples only (after --classes; 0: all)"},
        {"test-samples", QAT_OPT_INT, &a->test_samples, "N", "evaluate on the first N test samples only (0: all)"},
        {"calib-samples", QAT_OPT_INT, &a->calib_samples, "N", "--quant: samples that calibrate the ranges first"},
        {"distill", QAT_OPT_FLOAT, &a->distill, "T",
         "--from with --quant: distil from the float checkpoint at temperature T (0: off; default 2 at 2 bits, else off; layers/loss.h)"},
        {"distill-alpha", QAT_OPT_FLOAT, &a->distill_alpha, "A", "--distill: weight of the teacher's soft targets (1 - A on the labels)"},
        {"import", QAT_OPT_STRING, &a->import, "FILE", "start from a float ONNX model (its graph and weights; no --model), or from float weights in a safetensors file (PyTorch names, or mapped by order and shape)"},
        {"log", QAT_OPT_STRING, &a->log, "FILE", "append metrics per epoch (.csv or JSON lines)"},
        {"report", QAT_OPT_STRING, &a->report, "DIR", "write DIR/report.html after training (qat report)"},
        {"sync-bn", QAT_OPT_FLAG, &a->sync_bn, NULL, "mpirun: batch-norm statistics over the whole batch, across the processes"},
        {"json", QAT_OPT_FLAG, &a->json, NULL, "print the final metrics as one JSON object"},
        {"quiet", QAT_OPT_FLAG, &a->quiet, NULL, "no progress output"},
        {0},
    };
    _Static_assert(sizeof opts / sizeof *opts == N_TRAIN_OPTS, "N_TRAIN_OPTS");
    memcpy(o, opts, sizeof opts);
}

int cmd_train(int argc, char **argv) {
    train_args a;
    train_defaults(&a);
    qat_opt opts[N_TRAIN_OPTS] = {{0}};
    train_opts(&a, opts);
    qat_error err = {0};
    int n = qat_args_parse(argc, argv, opts, NULL, 0, &err);
    if (n == -2) {
        qat_args_help(stdout, "qat train [options]",
                      "Trains a model and writes a checkpoint after every epoch.", opts);
        return 0;
    }
    if (n < 0) return cli_fail("train", err.msg);
    if (a.epochs < 1 || a.batch < 1) return cli_fail("train", "--epochs and --batch must be at least 1");
    if ((a.resume || a.from) && qat_args_seen(opts, "model"))
        return cli_fail("train", "--resume and --from take the model from the checkpoint; drop --model");
    /* QAT fine-tunes: its own defaults (README, "Quantization"), unless given. */
    if (a.quant && a.from && !qat_args_seen(opts, "lr")) a.lr = QAT_DEFAULT_LR;
    if (a.quant && a.from && !qat_args_seen(opts, "epochs")) a.epochs = QAT_DEFAULT_EPOCHS;
    if (a.quant && a.from && !qat_args_seen(opts, "distill")) {
        qat_quant_spec qs;
        qat_error e = {0};
        if (qat_quant_spec_parse(&qs, a.quant, &e) == QAT_STATUS_OK && qs.abits <= QAT_DEFAULT_DISTILL_BITS &&
            qs.wbits <= QAT_DEFAULT_DISTILL_BITS)
            a.distill = QAT_DEFAULT_DISTILL_T;
    }
    if (a.resume && (a.from || a.quant || a.lora))
        return cli_fail("train", "--resume continues a run as it was; drop --from, --quant and --lora");
    /* data-parallel (mpirun): the first process speaks for all */
    if (qat_comm_get()->rank != 0) a.quiet = true;
    /* Adapters: AdamW (the LoRA paper's optimizer) at 1e-2, ten times full fine-tuning's rate
     * (docs/memory.md measures it), unless given. */
    if (a.lora && !qat_args_seen(opts, "optim")) a.optim = "adamw";
    if (a.lora && !qat_args_seen(opts, "lr")) a.lr = 1e-2f;
    if (a.base && !a.lora) return cli_fail("train", "--base goes with --lora");
    if (a.lora && (!a.from || a.quant))
        return cli_fail("train", "--lora adapts a float checkpoint: give --from, and no --quant (merge, then quantize)");
    if (a.resume && qat_args_seen(opts, "model"))
        return cli_fail("train", "--resume takes the model from the checkpoint; drop --model");
    if (a.resume && !qat_args_seen(opts, "out")) a.out = NULL; /* continue in the same file */
    if (a.import && qat_onnx_path(a.import)) {
        /* An ONNX model is the model and its weights (train/onnx_import.h). */
        if (qat_args_seen(opts, "model") || a.resume || a.from)
            return cli_fail("train", "--import MODEL.onnx brings its own model and weights; drop --model, --from and --resume");
        a.model = a.import;
        a.import = NULL;
        if (!qat_args_seen(opts, "mean") && strcmp(a.data, QAT_FASHION_MNIST_DIR) != 0)
            fprintf(stderr, "qat train: --import %s without --mean/--std: the inputs are normalised with the "
                            "data's own statistics, which may not be what the model was trained with\n",
                    a.model);
    }
    if (a.resume) {
        /* Options not given again come from the checkpoint's recipe. */
        qat_checkpoint ck;
        if (qat_checkpoint_load(&ck, a.resume, &err)) return cli_fail("train", err.msg);
        static char stored[N_RECIPE][256];
        for (size_t i = 0; i < N_RECIPE; i++) {
            char key[40];
            snprintf(key, sizeof key, "train.%s", RECIPE[i]);
            const char *v = qat_checkpoint_extra(&ck, key);
            qat_opt *o = opts;
            while (o->name && strcmp(o->name, RECIPE[i]) != 0) o++;
            if (!v || !o->name || o->seen) continue;
            if (o->kind == QAT_OPT_STRING && !v[0]) continue; /* was unset */
            snprintf(stored[i], sizeof stored[i], "%s", v);
            if (!qat_args_set(o, stored[i], &err)) {
                qat_checkpoint_free(&ck);
                return cli_fail("train", err.msg);
            }
        }
        qat_checkpoint_free(&ck);
    }
    return run_train(&a, opts, "train", NULL);
}

static bool dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static double file_mib(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size / 1048576.0 : 0;
}

/* The demo: the reference CNN in float, then int8 by calibration alone (PTQ) and by
 * quantization-aware fine-tuning (QAT), side by side. */
int cmd_demo(int argc, char **argv) {
    train_args a;
    train_defaults(&a);
    const char *dir = ".";
    bool json = false;
    int threads = 0, epochs = 3;
    const char *data = QAT_FASHION_MNIST_DIR;
    qat_opt opts[] = {
        {"data", QAT_OPT_STRING, &data, "DIR", "Fashion-MNIST (or MNIST) IDX directory"},
        {"epochs", QAT_OPT_INT, &epochs, "N", "float training epochs"},
        {"dir", QAT_OPT_STRING, &dir, "DIR", "where the checkpoints go"},
        {"threads", QAT_OPT_INT, &threads, "N", "threads (0: QAT_NUM_THREADS, else all CPUs)"},
        {"json", QAT_OPT_FLAG, &json, NULL, "print the results as one JSON object"},
        {0},
    };
    qat_error err = {0};
    int n = qat_args_parse(argc, argv, opts, NULL, 0, &err);
    if (n == -2) {
        qat_args_help(stdout, "qat demo [options]",
                      "Trains the reference CNN on Fashion-MNIST with the default recipe, quantizes it "
                      "to int8 by calibration (PTQ) and by quantization-aware training (QAT), and "
                      "exports the QAT model to an integer-only int8 file, runs it with the int8 runtime "
                      "on the test set, and prints the accuracies side by side.",
                      opts);
        return 0;
    }
    if (n < 0) return cli_fail("demo", err.msg);
    if (epochs < 1) return cli_fail("demo", "--epochs must be at least 1");
    /* Create --dir now (one level, like mkdir) rather than fail after the training. */
    if (!dir_exists(dir) && mkdir(dir, 0777) != 0) {
        char msg[1200];
        snprintf(msg, sizeof msg, "%s: cannot create the directory (--dir): %s", dir, strerror(errno));
        return cli_fail("demo", msg);
    }
    char fp32[1024], ptq[1024], qat[1024], int8[1024];
    snprintf(fp32, sizeof fp32, "%s/qat-demo-fp32.safetensors", dir);
    snprintf(ptq, sizeof ptq, "%s/qat-demo-ptq.safetensors", dir);
    snprintf(qat, sizeof qat, "%s/qat-demo-qat.safetensors", dir);
    snprintf(int8, sizeof int8, "%s/qat-demo-int8.safetensors", dir);
    double t0 = qat_now();

    /* 1. float training */
    a.data = data;
    a.epochs = epochs;
    a.threads = threads;
    a.out = fp32;
    qat_train_result rf, rq;
    fprintf(stderr, "qat demo 1/4: float training, %d epochs\n", epochs);
    int rc = run_train(&a, NULL, "demo", &rf);
    if (rc) return rc;
    /* 2. post-training quantization */
    fprintf(stderr, "qat demo 2/4: post-training quantization (w8a8, per-channel weights)\n");
    double ptq_fp32, ptq_acc, ptq_s;
    if (cli_ptq(fp32, QAT_DEMO_PTQ_SPEC, 2048, ptq, &ptq_fp32, &ptq_acc, &ptq_s, &err))
        return cli_fail("demo", err.msg);
    /* 3. quantization-aware fine-tuning from the float checkpoint */
    train_defaults(&a);
    a.data = data;
    a.threads = threads;
    a.from = fp32;
    a.quant = QAT_DEMO_QAT_SPEC;
    a.epochs = QAT_DEFAULT_EPOCHS;
    a.lr = QAT_DEFAULT_LR;
    a.out = qat;
    fprintf(stderr, "qat demo 3/4: quantization-aware training (w8a8), %d epoch\n", a.epochs);
    if ((rc = run_train(&a, NULL, "demo", &rq))) return rc;
    /* 4. export, and the integer-only model on the test set */
    fprintf(stderr, "qat demo 4/4: export to int8 and integer-only evaluation\n");
    cli_int8_result ri;
    {
        qat_opened cm;
        qat_export_report rep;
        if (qat_model_open(&cm, qat, 0, &err)) return cli_fail("demo", err.msg);
        qat_st_kv meta[2] = {{"source", qat}, {"class_names", FASHION_CLASSES}};
        qat_status st = qat_export_int8(cm.m, int8, meta, 2, &rep, &err);
        qat_opened_free(&cm);
        if (st) return cli_fail("demo", err.msg);
    }
    if ((rc = cli_int8_eval(int8, data, NULL, qat, -1, false, &ri))) return rc;
    /* 5. the report of the QAT model (docs/report.md) */
    char report[1100];
    snprintf(report, sizeof report, "%s/qat-demo-report.html", dir);
    fprintf(stderr, "qat demo: the report\n");
    if ((rc = cli_report(qat, fp32, data, NULL, report, 0, QAT_REPORT_SENS_SAMPLES, true))) return rc;
    double total = qat_now() - t0;
    if (json) {
        printf("{\"command\": \"demo\", \"fp32_accuracy\": %.6f, \"ptq_accuracy\": %.6f, "
               "\"qat_accuracy\": %.6f, \"int8_accuracy\": %.6f, \"int8_top1_agreement\": %.6f, "
               "\"fp32_seconds_per_epoch\": %.3f, \"qat_seconds_per_epoch\": %.3f, "
               "\"fp32_bytes\": %.0f, \"int8_bytes\": %.0f, \"report\": \"%s\", \"seconds\": %.3f}\n",
               rf.test_acc, ptq_acc, rq.test_acc, ri.accuracy, ri.agreement, rf.seconds / rf.epochs_done,
               rq.seconds / rq.epochs_done, file_mib(fp32) * 1048576, file_mib(int8) * 1048576, report, total);
        return 0;
    }
    printf("\nqat demo: reference CNN on Fashion-MNIST (test set, 10,000 images)\n");
    printf("  %-34s %9s %12s  %s\n", "", "accuracy", "time", "checkpoint");
    printf("  %-34s %8.2f%% %10.1f s  %s (%.2f MiB)\n", "fp32, trained", 100 * rf.test_acc, rf.seconds, fp32,
           file_mib(fp32));
    printf("  %-34s %8.2f%% %10.1f s  %s\n", "int8 PTQ (" QAT_DEMO_PTQ_SPEC ", 2048 samples)", 100 * ptq_acc,
           ptq_s, ptq);
    printf("  %-34s %8.2f%% %10.1f s  %s\n", "int8 QAT (" QAT_DEMO_QAT_SPEC ", 1 epoch)", 100 * rq.test_acc,
           rq.seconds, qat);
    printf("  %-34s %8.2f%% %10.0f/s  %s (%.2f MiB)\n", "int8 integer-only runtime", 100 * ri.accuracy,
           ri.images_per_s, int8, file_mib(int8));
    printf("  the int8 runtime agrees with QAT's fake quantization on %.2f%% of the test images\n",
           100 * ri.agreement);
    printf("  fp32 training %.0f samples/s, QAT %.0f samples/s; the whole demo took %.0f s\n", rf.samples_per_s,
           rq.samples_per_s, total);
    printf("  report (open it in a browser): %s\n", report);
    return 0;
}

/* ---- eval ---- */

int cmd_eval(int argc, char **argv) {
    const char *data = NULL, *format = NULL, *compare = NULL, *sim_text = NULL;
    int batch = 256, threads = 0, sim = -1;
    bool json = false, fake_quant = false;
    qat_opt opts[] = {
        {"data", QAT_OPT_STRING, &data, "PATH", "test data (default: the checkpoint's data set)"},
        {"fake-quant", QAT_OPT_FLAG, &fake_quant, NULL,
         "quantized checkpoint: evaluate its float simulation alone (default: its int8 model, as exported, beside it)"},
        {"compare", QAT_OPT_STRING, &compare, "CKPT", "int8 model: also run this fake-quant checkpoint and report top-1 agreement"},
        {"sim", QAT_OPT_STRING, &sim_text, "S",
         "quantized checkpoint: simulate with float, fixed or exact instead of its own sim= (quant/quant.h)"},
        {"format", QAT_OPT_STRING, &format, "F", "idx, cifar10, folder or csv (default: detected)"},
        {"batch", QAT_OPT_INT, &batch, "N", "batch size"},
        {"threads", QAT_OPT_INT, &threads, "N", "threads (0: QAT_NUM_THREADS, else all CPUs)"},
        {"json", QAT_OPT_FLAG, &json, NULL, "print the metrics as one JSON object"},
        {0},
    };
    char *pos[1];
    qat_error err = {0};
    int n = qat_args_parse(argc, argv, opts, pos, 1, &err);
    if (n == -2 || n == 0) {
        qat_args_help(n == -2 ? stdout : stderr, "qat eval CHECKPOINT|INT8_MODEL [options]",
                      "Accuracy and loss of a checkpoint on the test split of its data set, or the "
                      "integer-only accuracy and speed of an int8 model from qat export, run by runtime/. "
                      "A quantized checkpoint is evaluated as the model it deploys: its int8 model, lowered "
                      "as qat export does and run by the runtime, with its float simulation (fake quant) "
                      "and their top-1 agreement beside it; --fake-quant evaluates the simulation alone "
                      "(also what a model without an integer form gets, with a note).",
                      opts);
        return n == -2 ? 0 : 2;
    }
    if (n < 0) return cli_fail("eval", err.msg);
    if (sim_text) {
        for (int k = 0; k < QAT_SIM_COUNT; k++)
            if (!strcmp(sim_text, qat_sim_str((qat_sim)k))) sim = k;
        if (sim < 0) return cli_fail("eval", "--sim must be float, fixed or exact");
    }
    if (threads > 0) qat_set_num_threads(threads);
    if (cli_is_int8(pos[0])) {
        if (sim >= 0 && !compare) return cli_fail("eval", "--sim goes with a quantized checkpoint (or --compare)");
        return cli_int8_eval(pos[0], data, format, compare, sim, json, NULL);
    }
    if (compare) return cli_fail("eval", "--compare goes with an int8 model from qat export");
    if (batch < 1) return cli_fail("eval", "--batch must be at least 1");
    qat_opened cm;
    if (qat_model_open(&cm, pos[0], 0, &err)) return cli_fail("eval", err.msg);
    if (!cm.from_checkpoint) {
        qat_opened_free(&cm);
        return cli_fail("eval", "needs a checkpoint (qat train writes one)");
    }
    if (sim >= 0 && !cm.m->quant) {
        qat_opened_free(&cm);
        return cli_fail("eval", "--sim goes with a quantized checkpoint; this one is float");
    }
    if (sim >= 0) cm.m->quant->spec.sim = (qat_sim)sim;
    if (cm.m->quant && !fake_quant) {
        bool no_int8;
        int rc = cli_int8_eval_checkpoint(pos[0], data, format, sim, json, &no_int8, NULL);
        if (!no_int8) {
            qat_opened_free(&cm);
            return rc;
        }
    }
    const char *v = qat_checkpoint_extra(&cm.ckpt, "data");
    if (!data) data = v ? v : QAT_FASHION_MNIST_DIR;
    qat_dataset test = {0};
    qat_loader l = {0};
    int rc = 0;
    qat_loader_config lc = qat_loader_config_default();
    lc.batch_size = batch;
    lc.shuffle = false;
    qat_loader_config_normalize(&lc, &cm.norm);
    if (cli_open_data(&test, data, format, QAT_SPLIT_TEST, cm.m, &err) || qat_loader_init(&l, &test, &lc, &err)) {
        rc = cli_fail("eval", err.msg);
    } else {
        qat_tape t;
        qat_tape_init(&t, 0);
        double loss, acc, t0 = qat_now();
        if (qat_evaluate(cm.m, &t, &l, &loss, &acc, &err)) {
            rc = cli_fail("eval", err.msg);
        } else {
            double secs = qat_now() - t0;
            if (json)
                printf("{\"command\": \"eval\", \"checkpoint\": \"%s\", \"samples\": %d, "
                       "\"test_loss\": %.6f, \"test_accuracy\": %.6f, \"seconds\": %.3f}\n",
                       pos[0], test.n, loss, acc, secs);
            else
                printf("%s on %s: accuracy %.2f%% (%d samples), loss %.4f, %.0f samples/s\n", pos[0],
                       data, 100 * acc, test.n, loss, test.n / secs);
        }
        qat_tape_free(&t);
    }
    qat_loader_free(&l);
    qat_dataset_free(&test);
    qat_opened_free(&cm);
    return rc;
}

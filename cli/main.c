/* qat - the command-line tool: train, calibrate, eval, predict, inspect, export, import, demo. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "autograd/parallel.h"
#include "blas.h"
#include "common.h"
#include "train/mpi.h"
#include "runtime/simd.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"train", cmd_train, "train a model (default: the reference CNN on Fashion-MNIST)"},
    {"eval", cmd_eval, "accuracy and loss of a checkpoint on a test set"},
    {"predict", cmd_predict, "classify image files with a checkpoint"},
    {"inspect", cmd_inspect, "layers, shapes, parameters and MACs of a model or checkpoint"},
    {"calibrate", cmd_calibrate, "post-training quantization of a float checkpoint"},
    {"export", cmd_export, "write a quantized checkpoint as an integer-only model"},
    {"sensitivity", cmd_sensitivity, "each layer's accuracy cost at each weight width; mixed precision"},
    {"import", cmd_import, "a float ONNX model or PyTorch weights as a qat checkpoint"},
    {"merge", cmd_merge, "fold a checkpoint's low-rank adapters into its weights"},
    {"report", cmd_report, "an HTML report of what quantization does to a model"},
    {"demo", cmd_demo, "train the reference CNN on Fashion-MNIST and summarise"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: qat COMMAND [options]   (qat COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
}

/* The environment variables that choose threads and the int8 kernels. The library reads
 * no environment (it takes settings as arguments), so the command maps them:
 *   QAT_NUM_THREADS=N  -> qat_set_num_threads(N) here, before any subcommand; a
 *                         subcommand's --threads N (N > 0) calls it again and wins;
 *   QRT_ISA=path       -> qrt_model_set_isa on every int8 model the command loads
 *                         (cli/int8.c reads it there, after this check).
 * A typo is an error the user sees, not a silent fallback. Returns false after printing
 * the problem. */
static bool env_ok(void) {
    const char *t = getenv("QAT_NUM_THREADS");
    if (t && *t) {
        char *end;
        long n = strtol(t, &end, 10);
        if (*end || n < 1 || n > 1024) {
            fprintf(stderr, "qat: QAT_NUM_THREADS='%s': need a whole number of threads >= 1\n", t);
            return false;
        }
        qat_set_num_threads((int)n);
    }
    const char *isa = getenv("QRT_ISA");
    qrt_isa parsed;
    if (isa && *isa && !qrt_isa_parse(isa, &parsed)) {
        fprintf(stderr, "qat: QRT_ISA='%s': use portable, avx2 or avx512vnni\n", isa);
        return false;
    }
    return true;
}

/* Output lost to a full disk or a closed pipe must not pass for success: stdout is
 * flushed and checked before exiting, and a failure there makes the exit status 1. */
static int finish(int rc) {
    errno = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "qat: writing the standard output failed: %s\n", errno ? strerror(errno) : "write error");
        return rc ? rc : 1;
    }
    return rc;
}

int main(int argc, char **argv) {
    cli_blas_select_core(argv);
    if (!env_ok()) return 2;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return finish(0);
    }
    if (qat_mpi_launched()) { /* mpirun -np N qat train (docs/scaling.md) */
        const bool train = strcmp(argv[1], "train") == 0, calibrate = strcmp(argv[1], "calibrate") == 0;
        if (!train && !calibrate) {
            fprintf(stderr,
                    "qat %s: under mpirun only qat train and qat calibrate run (data-parallel); run qat %s as one "
                    "process\n",
                    argv[1], argv[1]);
            return 2;
        }
        qat_error err = {0};
        if (qat_mpi_init(&argc, &argv, &err)) {
            fprintf(stderr, "qat %s: %s\n", argv[1], err.msg);
            return 2;
        }
        const qat_comm *c = qat_comm_get();
        /* The processes on this machine share its CPUs: each takes its part of them unless
         * QAT_NUM_THREADS or --threads says otherwise (never several threads per core). */
        const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
        const long cpus = sysconf(_SC_NPROCESSORS_ONLN), per = local && atoi(local) > 0 ? cpus / atoi(local) : cpus;
        if (!getenv("QAT_NUM_THREADS") && local) qat_set_num_threads(per > 1 ? (int)per : 1);
        if (c->rank == 0 && c->size > 1)
            fprintf(stderr, "qat %s: data-parallel over %d processes (MPI): each takes its share of every batch\n",
                    argv[1], c->size);
        if (c->rank != 0 && !freopen("/dev/null", "w", stdout)) return 2; /* the first process prints */
        int rc = finish(train ? cmd_train(argc - 2, argv + 2) : cmd_calibrate(argc - 2, argv + 2));
        if (rc && c->size > 1) {
            /* the others may wait in a collective for this process: stop them all */
            fprintf(stderr, "qat %s: process %d of %d failed; stopping the run (the last checkpoint stays)\n",
                    argv[1], c->rank, c->size);
            qat_mpi_abort(rc);
        }
        qat_mpi_finalize();
        return rc;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return finish(commands[i].fn(argc - 2, argv + 2));
    fprintf(stderr, "qat: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}

/* args.h - command-line options from a table, with --help generated from it.
 *
 *     int epochs = 3; const char *data = NULL; bool json = false;
 *     qat_opt opts[] = {
 *         {"epochs", QAT_OPT_INT, &epochs, "N", "training epochs"},
 *         {"data", QAT_OPT_STRING, &data, "DIR", "data directory"},
 *         {"json", QAT_OPT_FLAG, &json, NULL, "print the final metrics as JSON"},
 *         {0},
 *     };
 *     int npos = qat_args_parse(argc, argv, opts, positional, max_positional, &err);
 *
 * Options are --name VALUE or --name=VALUE; numbers are checked whole ("3x" is an
 * error, not 3). Everything else is positional.
 */
#ifndef QAT_ARGS_H
#define QAT_ARGS_H

#include <stdbool.h>
#include <stdio.h>

#include "autograd/common.h"

typedef enum qat_opt_kind {
    QAT_OPT_INT,    /* int */
    QAT_OPT_LONG,   /* long */
    QAT_OPT_FLOAT,  /* float */
    QAT_OPT_STRING, /* const char * */
    QAT_OPT_FLAG,   /* bool, no value */
    QAT_OPT_COUNT
} qat_opt_kind;

typedef struct qat_opt {
    const char *name;
    qat_opt_kind kind;
    void *value;
    const char *metavar;
    const char *help;
    bool seen; /* set by the parser */
} qat_opt;

/* Returns the number of positional arguments stored in pos (at most max_pos), or -1
 * with err set. "--help"/"-h" returns -2. */
int qat_args_parse(int argc, char **argv, qat_opt *opts, char **pos, int max_pos, qat_error *err);
/* Sets an option from text as if given on the command line (marks it seen). */
bool qat_args_set(qat_opt *o, const char *value, qat_error *err);
/* The option's current value as text ("0.05", "true", "data/dir"); "" for a NULL string. */
void qat_args_format(const qat_opt *o, char *buf, size_t n);
/* Was the option given on the command line? (The name must be in the table.) */
bool qat_args_seen(const qat_opt *opts, const char *name);
/* Prints "usage" then one line per option with its default value. */
void qat_args_help(FILE *f, const char *usage, const char *about, const qat_opt *opts);

#endif

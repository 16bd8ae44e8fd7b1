#include "common.h"

#include <string.h>

int cli_fail(const char *cmd, const char *msg) {
    fprintf(stderr, "qat %s: %s\n", cmd, msg);
    return 1;
}

int cli_fail_in(const char *cmd, const char *path, const char *msg) {
    if (strstr(msg, path)) return cli_fail(cmd, msg);
    fprintf(stderr, "qat %s: %s: %s\n", cmd, path, msg);
    return 1;
}

int cli_model_outputs(const qat_model *m) {
    const qat_layer *last = &m->root.layers[m->root.n - 1];
    return last->out_ndim == 1 ? last->out_shape[0] : 0;
}

qat_status cli_open_data(qat_dataset *ds, const char *path, const char *format, qat_split split,
                         const qat_model *m, qat_error *err) {
    qat_status s = qat_dataset_open(ds, path, format, split, m->in_ndim, m->in_shape, err);
    if (!s) s = qat_dataset_check_fit(ds, m->in_ndim, m->in_shape, cli_model_outputs(m), path, err);
    if (s) qat_dataset_free(ds);
    return s;
}

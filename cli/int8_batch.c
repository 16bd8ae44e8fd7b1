/* int8_batch.c - an int8 model over many images on several threads (int8_batch.h). */
#include "int8_batch.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

int cli_int8_runner_init(cli_int8_runner *r, const qrt_model *m, int threads) {
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    if (threads > CLI_INT8_MAX_THREADS) threads = CLI_INT8_MAX_THREADS;
    *r = (cli_int8_runner){.m = m, .threads = threads};
    size_t bytes = qrt_arena_size(m);
    for (int i = 0; i < threads; i++)
        if (!(r->arenas[i] = malloc(bytes ? bytes : 1))) {
            cli_int8_runner_free(r);
            return -1;
        }
    return 0;
}

void cli_int8_runner_free(cli_int8_runner *r) {
    for (int i = 0; i < CLI_INT8_MAX_THREADS; i++) free(r->arenas[i]);
    *r = (cli_int8_runner){0};
}

typedef struct slice {
    const qrt_model *m;
    void *arena;
    const uint8_t *pixels;
    int begin, end;
    int *labels;
    int8_t *logits;
} slice;

static void *run_slice(void *p) {
    const slice *s = p;
    size_t per = (size_t)qrt_model_input(s->m)->numel, K = (size_t)qrt_model_n_outputs(s->m);
    for (int i = s->begin; i < s->end; i++) {
        int label;
        /* The model was validated at load and the arena sized for it: qrt_run cannot fail. */
        qrt_run(s->m, s->pixels + (size_t)i * per, s->arena, s->logits ? s->logits + (size_t)i * K : NULL,
                &label);
        if (s->labels) s->labels[i] = label;
    }
    return NULL;
}

void cli_int8_runner_run(cli_int8_runner *r, const uint8_t *pixels, int n, int *labels,
                         int8_t *logits) {
    int T = r->threads < n ? r->threads : (n > 0 ? n : 1);
    slice s[CLI_INT8_MAX_THREADS];
    pthread_t tid[CLI_INT8_MAX_THREADS];
    bool started[CLI_INT8_MAX_THREADS] = {0};
    for (int t = 0; t < T; t++)
        s[t] = (slice){r->m, r->arenas[t], pixels, (int)((long)n * t / T), (int)((long)n * (t + 1) / T),
                       labels, logits};
    /* Slice 0 runs on the calling thread; a thread that cannot start runs here too. */
    for (int t = 1; t < T; t++) started[t] = pthread_create(&tid[t], NULL, run_slice, &s[t]) == 0;
    run_slice(&s[0]);
    for (int t = 1; t < T; t++) {
        if (started[t]) pthread_join(tid[t], NULL);
        else run_slice(&s[t]);
    }
}

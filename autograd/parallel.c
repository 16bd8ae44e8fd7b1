#include "parallel.h"

#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#include "common.h"

typedef struct job {
    qat_range_fn range; /* exactly one of range, task */
    qat_task_fn task;
    void *ctx;
    size_t n, parts; /* range: n elements in `parts` parts; task: n tasks */
    int threads;
} job;

/* The pool. Workers 1..started-1 exist; `gen` counts jobs so a worker knows a new one
 * arrived; `pending` counts workers still busy with the current one. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    pthread_mutex_t callers; /* one job at a time from unrelated threads */
    pthread_t th[QAT_PARALLEL_MAX_THREADS];
    int started;  /* threads running, counting the caller (0: not started) */
    int nthreads; /* configured count, 0 until configured */
    unsigned long gen, base_gen; /* base_gen: gen when the workers were created */
    int pending;
    bool stop;
    job j;
} P = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .start = PTHREAD_COND_INITIALIZER,
       .done = PTHREAD_COND_INITIALIZER,
       .callers = PTHREAD_MUTEX_INITIALIZER};

/* Mirrors of P.gen and P.pending that threads may read without the lock, to spin on
 * briefly before sleeping: waking a sleeping thread costs tens of microseconds (a futex
 * call, and on a VM an idle virtual CPU to wake), as long as a small job itself. The spin
 * is bounded, so a pool with no work sleeps; while it spins it only polls. */
static _Atomic unsigned long A_gen;
static _Atomic int A_pending;
enum { SPIN_POLLS = 4000 }; /* about 50-100 us of polling */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Polls until *a != v (gen) or *a <= 0 (pending) or the budget runs out. */
static void spin_gen(unsigned long seen) {
    for (int i = 0; i < SPIN_POLLS && atomic_load_explicit(&A_gen, memory_order_acquire) == seen; i++)
        cpu_relax();
}
static void spin_pending(void) {
    for (int i = 0; i < SPIN_POLLS && atomic_load_explicit(&A_pending, memory_order_acquire) > 0; i++)
        cpu_relax();
}

static _Thread_local int tl_id;
static _Thread_local bool tl_in_job;

int qat_parallel_thread_id(void) { return tl_in_job ? tl_id : 0; }

static int clamp_threads(long n) {
    if (n < 1) return 1;
    return n > QAT_PARALLEL_MAX_THREADS ? QAT_PARALLEL_MAX_THREADS : (int)n;
}

/* The count before any qat_set_num_threads: the machine's online CPUs. (The environment is
 * the program's business: the CLI maps QAT_NUM_THREADS to qat_set_num_threads.) */
int qat_num_threads(void) {
    pthread_mutex_lock(&P.mu);
    if (!P.nthreads) {
        P.nthreads = clamp_threads(sysconf(_SC_NPROCESSORS_ONLN));
        /* GEMMs run inside the pool's parts: OpenBLAS must not start its own threads. */
        openblas_set_num_threads(1);
    }
    int n = P.nthreads;
    pthread_mutex_unlock(&P.mu);
    return n;
}

/* Part k of job j, run by thread k. */
static void run_part(const job *j, int k) {
    if (j->range) {
        if ((size_t)k >= j->parts) return;
        size_t b = j->n * (size_t)k / j->parts, e = j->n * ((size_t)k + 1) / j->parts;
        if (b < e) j->range(j->ctx, b, e);
    } else {
        for (size_t i = (size_t)k; i < j->n; i += (size_t)j->threads) j->task(j->ctx, i);
    }
}

static void *worker(void *arg) {
    int id = (int)(size_t)arg;
    pthread_mutex_lock(&P.mu);
    /* Not P.gen: a job posted before this thread first takes the lock is still its. */
    unsigned long seen = P.base_gen;
    for (;;) {
        if (!P.stop && P.gen == seen) {
            pthread_mutex_unlock(&P.mu);
            spin_gen(seen);
            pthread_mutex_lock(&P.mu);
        }
        while (!P.stop && P.gen == seen) pthread_cond_wait(&P.start, &P.mu);
        if (P.stop) break;
        seen = P.gen;
        job j = P.j;
        pthread_mutex_unlock(&P.mu);
        tl_id = id;
        tl_in_job = true;
        if (id < j.threads) run_part(&j, id);
        tl_in_job = false;
        pthread_mutex_lock(&P.mu);
        atomic_store_explicit(&A_pending, P.pending - 1, memory_order_release);
        if (--P.pending == 0) pthread_cond_signal(&P.done);
    }
    pthread_mutex_unlock(&P.mu);
    return NULL;
}

/* Starts the workers for the configured count (caller holds P.callers, not P.mu). */
static void shutdown_locked(void);

static void ensure_started(int T) {
    if (P.started == T) return;
    shutdown_locked();
    pthread_mutex_lock(&P.mu);
    P.stop = false;
    P.base_gen = P.gen;
    int ok = 1;
    for (int i = 1; i < T; i++) {
        if (pthread_create(&P.th[i], NULL, worker, (void *)(size_t)i) != 0) break;
        ok++;
    }
    /* If the system refuses threads, run with those we got. */
    P.started = ok;
    pthread_mutex_unlock(&P.mu);
}

static void run_job(job j) {
    int T = qat_num_threads();
    if (tl_in_job || T == 1) { /* nested, or nothing to share: the caller does it all */
        j.threads = 1;
        if (j.range) {
            if (j.n) j.range(j.ctx, 0, j.n);
        } else {
            for (size_t i = 0; i < j.n; i++) j.task(j.ctx, i);
        }
        return;
    }
    pthread_mutex_lock(&P.callers);
    ensure_started(T);
    T = P.started;
    j.threads = T;
    if (j.range && j.parts > (size_t)T) j.parts = (size_t)T;
    pthread_mutex_lock(&P.mu);
    P.j = j;
    P.pending = T - 1;
    atomic_store_explicit(&A_pending, T - 1, memory_order_release);
    P.gen++;
    atomic_store_explicit(&A_gen, P.gen, memory_order_release);
    pthread_cond_broadcast(&P.start);
    pthread_mutex_unlock(&P.mu);
    tl_id = 0;
    tl_in_job = true;
    run_part(&j, 0);
    tl_in_job = false;
    spin_pending();
    pthread_mutex_lock(&P.mu);
    while (P.pending > 0) pthread_cond_wait(&P.done, &P.mu);
    pthread_mutex_unlock(&P.mu);
    pthread_mutex_unlock(&P.callers);
}

void qat_parallel_for(size_t n, size_t grain, qat_range_fn kernel, void *ctx) {
    if (n == 0) return;
    if (grain < 1) grain = 1;
    size_t parts = n / grain;
    if (parts < 2 || tl_in_job) {
        if (!tl_in_job) (void)qat_num_threads();
        kernel(ctx, 0, n);
        return;
    }
    run_job((job){.range = kernel, .ctx = ctx, .n = n, .parts = parts});
}

void qat_parallel_tasks(size_t n_tasks, qat_task_fn task, void *ctx) {
    if (n_tasks == 0) return;
    if (n_tasks == 1 || tl_in_job) {
        for (size_t i = 0; i < n_tasks; i++) task(ctx, i);
        return;
    }
    run_job((job){.task = task, .ctx = ctx, .n = n_tasks});
}

/* Caller holds P.callers. */
static void shutdown_locked(void) {
    pthread_mutex_lock(&P.mu);
    int started = P.started;
    P.stop = true;
    pthread_cond_broadcast(&P.start);
    pthread_mutex_unlock(&P.mu);
    for (int i = 1; i < started; i++) pthread_join(P.th[i], NULL);
    pthread_mutex_lock(&P.mu);
    P.started = 0;
    P.stop = false;
    pthread_mutex_unlock(&P.mu);
}

void qat_parallel_shutdown(void) {
    QAT_ASSERT(!tl_in_job);
    pthread_mutex_lock(&P.callers);
    shutdown_locked();
    pthread_mutex_unlock(&P.callers);
}

void qat_set_num_threads(int n) {
    QAT_ASSERT(!tl_in_job);
    pthread_mutex_lock(&P.callers);
    pthread_mutex_lock(&P.mu);
    P.nthreads = clamp_threads(n);
    pthread_mutex_unlock(&P.mu);
    openblas_set_num_threads(1);
    pthread_mutex_unlock(&P.callers);
}

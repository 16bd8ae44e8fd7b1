/* tape.h - reverse-mode automatic differentiation on a per-step tape.
 *
 * The idea (micrograd, in C): every op, when it runs forward, appends a node to the tape
 * holding what its backward needs (its inputs, saved intermediates) and a backward
 * function. The forward pass visits ops in an order where each op comes after the ops
 * that produced its inputs, so walking the tape in reverse is a valid topological order
 * for the backward pass: when a node's backward runs, every consumer of its output has
 * already added its contribution to the output's gradient.
 *
 *     qat_tape t;
 *     qat_tape_init(&t, 0);
 *     for (each step) {
 *         qat_tape_reset(&t);                     // drop last step's tensors and nodes
 *         qat_tensor *x = qat_tape_input(&t, 2, (int[]){B, 784}, batch);
 *         qat_tensor *loss = qat_cross_entropy(&t, qat_model_forward(m, &t, x), labels);
 *         if (!loss) { fprintf(stderr, "%s\n", t.err.msg); break; }
 *         qat_model_zero_grad(m);
 *         qat_tape_backward(&t, loss);            // parameter gradients are now in m
 *         ...optimizer step...
 *     }
 *
 * Gradients accumulate (+=) so a tensor that feeds two consumers (a residual connection)
 * receives the sum of both. Parameter gradients accumulate across backward calls until
 * the caller zeroes them; step-tensor gradients are zeroed when the tensor is created.
 *
 * Inference mode: with grad_enabled = false no node is recorded and no gradient memory
 * is allocated; with training = false batch norm uses its running statistics and
 * dropout is the identity.
 *
 * Errors: an op given shapes that do not fit records a message in t->err and returns
 * NULL; an op given a NULL input returns NULL without a new message, so a chain of ops
 * reports the first failure, once.
 */
#ifndef QAT_TAPE_H
#define QAT_TAPE_H

#include <stdbool.h>

#include "arena.h"
#include "common.h"
#include "rng.h"
#include "tensor.h"

typedef struct qat_tape qat_tape;
/* `ctx` is the op's saved state, allocated by qat_tape_record. */
typedef void (*qat_backward_fn)(qat_tape *t, void *ctx);

typedef struct qat_node {
    qat_backward_fn backward;
    struct qat_node *prev;
    const char *op; /* for messages and debugging */
} qat_node;

struct qat_tape {
    qat_arena arena; /* every step tensor, gradient, saved state and node */
    qat_node *last;
    size_t n_nodes;
    bool grad_enabled;
    bool training;
    qat_rng *rng; /* used by dropout in training; may be NULL otherwise */
    qat_error err;
};

/* block_size: the arena's minimum block; 0 picks 16 MiB. grad_enabled and training
 * start true. */
void qat_tape_init(qat_tape *t, size_t block_size);
/* Forget every node and step tensor; clear the error. Keeps the arena's blocks. */
void qat_tape_reset(qat_tape *t);
void qat_tape_free(qat_tape *t);

/* A new step tensor (data uninitialised; grad zeroed when with_grad and grad_enabled).
 * NULL (with t->err set) if memory runs out. */
qat_tensor *qat_tape_tensor(qat_tape *t, int ndim, const int *shape, bool with_grad);
/* A step tensor holding a copy of `data`, without gradient: a batch of inputs. */
qat_tensor *qat_tape_input(qat_tape *t, int ndim, const int *shape, const float *data);
/* A tensor sharing data and grad with `x` under another shape of the same size (no
 * node needed: gradients flow through the shared buffer). NULL on size mismatch. */
qat_tensor *qat_tape_view(qat_tape *t, qat_tensor *x, int ndim, const int *shape);
/* Scratch memory for an op, freed at reset. NULL (with t->err set) if memory runs out. */
void *qat_tape_alloc(qat_tape *t, size_t bytes);

/* Should an op whose inputs are `a`, `b`, `c` (any may be NULL) record a node? */
bool qat_tape_needs_grad(const qat_tape *t, const qat_tensor *a, const qat_tensor *b,
                         const qat_tensor *c);
/* Appends a node and returns its zeroed context of ctx_bytes (NULL if out of memory). */
void *qat_tape_record(qat_tape *t, qat_backward_fn fn, size_t ctx_bytes, const char *op);

/* Seeds d(loss)/d(loss) = 1 and runs every node's backward, last to first.
 * loss must be a one-element tensor with a gradient. Returns the status (t->err). */
qat_status qat_tape_backward(qat_tape *t, qat_tensor *loss);
/* The general form: adds `dy` (y->n elements) to y's gradient and runs every node's
 * backward. Used for vector-Jacobian products and by the gradient tests. */
qat_status qat_tape_backward_seeded(qat_tape *t, qat_tensor *y, const float *dy);

/* Records a shape error "op: what" and returns NULL: `return qat_tape_fail(t, ...)`. */
qat_tensor *qat_tape_fail(qat_tape *t, qat_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif

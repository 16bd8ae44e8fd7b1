/* main.c - firmware that classifies embedded test images with qat's integer runtime on a
 * Cortex-M (docs/mcu.md). The model and the images are C source written by
 *
 *     qat export Q.safetensors --format c --out DIR --images N
 *
 * (DIR/qat_model.{h,c}, DIR/qat_model_images.{h,c}); runtime/ is compiled as it is, with
 * its portable kernels. No file system and no allocation: the model memory and the
 * activation arena are static buffers of the sizes the generated header states.
 *
 * Output, over semihosting (one line each):
 *     board <name> timer <hz> Hz, <n> instructions per tick under qemu -icount shift=0
 *     model <bytes> bytes fnv1a <hex> mem <used>/<QAT_MODEL_MEM_SIZE> arena <used>/<QAT_MODEL_ARENA_SIZE>
 *     image <i> label <y> pred <k> logits <l0> ... <l(K-1)> ticks <t>
 *     ... one line per image ...
 *     correct <c>/<n> ticks <total> stack <used>/<size> heap <used>/<size>
 *     done
 * `ticks` are timer ticks (board.h): under qemu with -icount shift=0, 40 instructions
 * each on the AN385, 50 on the AN505. The program exits qemu with status 0, or 1 after an error line. */
#include <stdio.h>
#include <string.h>

#include "board.h"
#include "qat_model.h"
#include "qat_model_images.h"
#include "runtime/runtime.h"

extern void initialise_monitor_handles(void); /* newlib's rdimon: stdio over semihosting */

#if QAT_MODEL_IMAGES_DIM != QAT_MODEL_INPUT_SIZE
#error "the embedded images do not fit the model's input"
#endif

/* Zero-sized arrays are not C: a model whose arena is empty still gets a byte. */
static unsigned char model_mem[QAT_MODEL_MEM_SIZE] __attribute__((aligned(16)));
static unsigned char arena[QAT_MODEL_ARENA_SIZE + 1] __attribute__((aligned(16)));
static int8_t logits[QAT_MODEL_N_CLASSES];

/* FNV-1a, 32 bits: lets a test check that the firmware holds the bytes of the int8 file. */
static uint32_t fnv1a(const unsigned char *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}

int main(void) {
    initialise_monitor_handles();
    printf("board %s timer %lu Hz, %lu instructions per tick under qemu -icount shift=0\n", BOARD_NAME,
           (unsigned long)BOARD_TIMER_HZ, (unsigned long)BOARD_INSNS_PER_TICK);
    qrt_model m;
    qrt_error err;
    const size_t need = qrt_model_mem_size(qat_model_data, QAT_MODEL_BYTES);
    if (need != sizeof model_mem) {
        printf("error: qrt_model_mem_size() is %u, the header states %u\n", (unsigned)need,
               (unsigned)sizeof model_mem);
        return 1;
    }
    if (qrt_model_load(&m, qat_model_data, QAT_MODEL_BYTES, model_mem, sizeof model_mem, &err) !=
        QRT_STATUS_OK) {
        printf("error: the model does not load: %s\n", err.msg);
        return 1;
    }
    if (qrt_arena_size(&m) != QAT_MODEL_ARENA_SIZE || qrt_model_n_outputs(&m) != QAT_MODEL_N_CLASSES) {
        printf("error: qrt_arena_size() is %u and %d outputs, the header states %u and %d\n",
               (unsigned)qrt_arena_size(&m), qrt_model_n_outputs(&m), (unsigned)QAT_MODEL_ARENA_SIZE,
               QAT_MODEL_N_CLASSES);
        return 1;
    }
    printf("model %u bytes fnv1a %08lx mem %u/%u arena %u/%u\n", (unsigned)QAT_MODEL_BYTES,
           (unsigned long)fnv1a(qat_model_data, QAT_MODEL_BYTES), (unsigned)need,
           (unsigned)sizeof model_mem, (unsigned)qrt_arena_size(&m), (unsigned)QAT_MODEL_ARENA_SIZE);

    int correct = 0;
    uint32_t total = 0;
    board_timer_start();
    for (int i = 0; i < QAT_MODEL_IMAGES_N; i++) {
        int pred = -1;
        const uint32_t t0 = board_ticks();
        qrt_status st = qrt_run(&m, qat_model_images[i], arena, logits, &pred);
        const uint32_t t = board_ticks() - t0;
        if (st != QRT_STATUS_OK) {
            printf("error: qrt_run on image %d: %s\n", i, qrt_status_str(st));
            return 1;
        }
        total += t;
        correct += pred == qat_model_images_labels[i];
        printf("image %d label %d pred %d logits", i, qat_model_images_labels[i], pred);
        for (int k = 0; k < QAT_MODEL_N_CLASSES; k++) printf(" %d", logits[k]);
        printf(" ticks %lu\n", (unsigned long)t);
    }
    printf("correct %d/%d ticks %lu stack %u/%u heap %u/%u\n", correct, QAT_MODEL_IMAGES_N,
           (unsigned long)total, (unsigned)board_stack_used(), (unsigned)board_stack_size(),
           (unsigned)board_heap_used(), (unsigned)board_heap_size());
    /* Painted at reset: a stack used to its last bytes may have overflowed into the heap. */
    if (board_stack_used() + 256 > board_stack_size()) {
        printf("error: the stack is nearly or wholly used: build with a larger STACK_SIZE\n");
        return 1;
    }
    printf("done\n");
    return 0;
}

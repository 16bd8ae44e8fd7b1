/* fuzz_runtime.c - the int8 runtime's loader (runtime/), and every model it accepts run
 * on every kernel path. Promises: an accepted model runs without error on one image,
 * and the portable, AVX2 and AVX-512 VNNI paths (those the CPU has) give the same logits
 * byte for byte. The input is the file bytes in memory, as firmware would hold them. */
#include "fuzz_util.h"

#include "runtime/runtime.h"
#include "runtime/simd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t mem_len = qrt_model_mem_size(data, size);
    if (mem_len == 0 || mem_len > (64u << 20)) return 0;
    void *mem = malloc(mem_len);
    if (!mem) return 0;
    qrt_model m;
    if (qrt_model_load(&m, data, size, mem, mem_len, NULL) != QRT_STATUS_OK) {
        free(mem);
        return 0;
    }
    const qrt_value *in = qrt_model_input(&m);
    size_t arena_len = qrt_arena_size(&m), n_in = (size_t)in->numel;
    int k = qrt_model_n_outputs(&m);
    if (arena_len > (64u << 20) || n_in > (16u << 20)) {
        free(mem);
        return 0;
    }
    uint8_t *pixels = malloc(n_in ? n_in : 1);
    void *arena = malloc(arena_len ? arena_len : 1);
    int8_t *ref = malloc((size_t)k + 1), *got = malloc((size_t)k + 1);
    if (pixels && arena && ref && got) {
        for (size_t i = 0; i < n_in; i++) pixels[i] = (uint8_t)(i * 37 + size); /* any image */
        int top_ref = -1;
        qrt_status s = qrt_run_isa(&m, QRT_ISA_PORTABLE, pixels, arena, ref, &top_ref);
        FUZZ_CHECK(s == QRT_STATUS_OK, "an accepted model failed to run (status %d)", (int)s);
        for (int isa = QRT_ISA_PORTABLE + 1; isa < QRT_ISA_COUNT; isa++) {
            int top = -1;
            s = qrt_run_isa(&m, (qrt_isa)isa, pixels, arena, got, &top);
            FUZZ_CHECK(s == QRT_STATUS_OK, "path %s failed (status %d)", qrt_isa_str((qrt_isa)isa), (int)s);
            FUZZ_CHECK(memcmp(ref, got, (size_t)k) == 0 && top == top_ref, "path %s differs from portable",
                       qrt_isa_str((qrt_isa)isa));
        }
    }
    free(pixels);
    free(arena);
    free(ref);
    free(got);
    free(mem);
    return 0;
}

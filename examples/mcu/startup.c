/* startup.c - the Cortex-M start-up code of the firmware: the vector table (initial
 * stack pointer, reset handler, the fault handlers), the reset handler (copies .data from
 * flash, zeroes .bss, paints the stack and the heap to measure their use, calls main, exits) and the
 * semihosting calls that end qemu with a status.
 *
 * Semihosting (Arm's "Semihosting for AArch32 and AArch64"): BKPT 0xAB with the
 * operation in r0 and its argument in r1. qemu-system-arm answers them with
 * -semihosting-config enable=on,target=native. */
#include <stdint.h>

#include "board.h"

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end;
extern uint32_t __stack_limit, __stack_top, __heap_start, __heap_end;
extern int main(void);

#define SYS_EXIT 0x18
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u
#define ADP_STOPPED_RUNTIME_ERROR 0x20023u

static uint32_t semihost(uint32_t op, const void *arg) {
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void board_exit(int status) {
    /* On AArch32 SYS_EXIT takes the reason itself: application exit is status 0 for
     * qemu, a run-time error status 1. */
    semihost(SYS_EXIT, (const void *)(uintptr_t)(status == 0 ? ADP_STOPPED_APPLICATION_EXIT
                                                              : ADP_STOPPED_RUNTIME_ERROR));
    for (;;) {
    }
}

#define STACK_PAINT 0xC5C5C5C5u

size_t board_stack_used(void) {
    const uint32_t *p = &__stack_limit;
    while (p < &__stack_top && *p == STACK_PAINT) p++;
    return (size_t)((const uint8_t *)&__stack_top - (const uint8_t *)p);
}

size_t board_stack_size(void) {
    return (size_t)((const uint8_t *)&__stack_top - (const uint8_t *)&__stack_limit);
}

size_t board_heap_used(void) {
    const uint32_t *p = &__heap_end;
    while (p > &__heap_start && p[-1] == STACK_PAINT) p--;
    return (size_t)((const uint8_t *)p - (const uint8_t *)&__heap_start);
}

size_t board_heap_size(void) {
    return (size_t)((const uint8_t *)&__heap_end - (const uint8_t *)&__heap_start);
}

void Reset_Handler(void) {
    uint32_t *src = &__data_load, *dst = &__data_start;
    while (dst < &__data_end) *dst++ = *src++;
    for (dst = &__bss_start; dst < &__bss_end; dst++) *dst = 0;
    /* Paint the stack below the current frame, so that board_stack_used() can tell how
     * deep it went. */
    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = &__stack_limit; p < sp - 16; p++) *p = STACK_PAINT;
    for (uint32_t *p = &__heap_start; p < &__heap_end; p++) *p = STACK_PAINT;
    board_exit(main());
}

static void Fault_Handler(void) {
    static const char msg[] = "fault: hard fault, memory or usage fault (the stack too small?)\n";
    semihost(0x04 /* SYS_WRITE0 */, msg);
    board_exit(1);
}

static void Default_Handler(void) { board_exit(2); }

/* The vector table: the core reads the initial SP from word 0 and the reset handler
 * from word 1 (VTOR = 0 at reset). */
__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(uintptr_t)&__stack_top,
    Reset_Handler,
    Default_Handler, /* NMI */
    Fault_Handler,   /* HardFault */
    Fault_Handler,   /* MemManage */
    Fault_Handler,   /* BusFault */
    Fault_Handler,   /* UsageFault */
    Fault_Handler,   /* SecureFault (Armv8-M; reserved on the M3) */
    0, 0, 0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMon */
    0,
    Default_Handler, /* PendSV */
    Default_Handler, /* SysTick */
};

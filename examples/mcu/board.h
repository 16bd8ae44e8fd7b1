/* board.h - what the firmware needs of the board (startup.c, timer in main.c): the MPS2
 * AN385 (Cortex-M3), or with BOARD_AN505 defined the MPS2+ AN505 (Cortex-M33), as
 * qemu-system-arm models them. */
#ifndef BOARD_H
#define BOARD_H

#include <stddef.h>
#include <stdint.h>

/* Ends the program (and qemu) through semihosting SYS_EXIT: qemu exits with status 0
 * when status is 0, else with 1. */
void board_exit(int status) __attribute__((noreturn));

/* Bytes of the stack ever written (painted at reset), and the stack's size. */
size_t board_stack_used(void);
size_t board_stack_size(void);
/* Bytes of the heap (newlib's stdio buffers) ever written up to its highest, and its size. */
size_t board_heap_used(void);
size_t board_heap_size(void);

/* CMSDK APB timer 0, a 32-bit down counter at the peripheral clock: on the AN385 at
 * 0x40000000 and 25 MHz, on the AN505 at 0x50000000 (its Secure alias) and 20 MHz. Under
 * qemu with -icount shift=0 one instruction takes 1 ns of virtual time, so one tick is
 * BOARD_INSNS_PER_TICK instructions (checked on a loop of known length: docs/mcu.md). */
#if defined(BOARD_AN505)
#define BOARD_NAME "mps2-an505 (Cortex-M33)"
#define BOARD_TIMER_HZ 20000000u
#define BOARD_TIMER0 ((volatile uint32_t *)0x50000000u)
#else
#define BOARD_NAME "mps2-an385 (Cortex-M3)"
#define BOARD_TIMER_HZ 25000000u
#define BOARD_TIMER0 ((volatile uint32_t *)0x40000000u)
#endif
#define BOARD_INSNS_PER_TICK (1000000000u / BOARD_TIMER_HZ)

static inline void board_timer_start(void) {
    BOARD_TIMER0[0] = 0;           /* CTRL: stop */
    BOARD_TIMER0[2] = 0xFFFFFFFFu; /* RELOAD */
    BOARD_TIMER0[1] = 0xFFFFFFFFu; /* VALUE */
    BOARD_TIMER0[0] = 1;           /* CTRL: enable */
}

/* Ticks since board_timer_start (wraps after 2^32). */
static inline uint32_t board_ticks(void) { return 0xFFFFFFFFu - BOARD_TIMER0[1]; }

#endif

/*
 * simavr harness: the real firmware ELF on a simulated ATmega2560 at 16 MHz.
 *
 *   simavr_harness build/arduino_mega.elf [bootloader.hex]
 *
 * With a bootloader (Debian's arduino-core-avr ships the Mega's real one,
 * bootloaders/stk500v2/stk500boot_v2_mega2560.hex) the board is as it leaves
 * the factory: every reset starts the bootloader (BOOTRST), which hands over
 * to the sketch, or stays in programming mode if bytes arrive in its first second.
 *
 * UART0 is a pty (printed as "@PORT <path>"). The test drives the board over
 * stdin, one command per line, and reads "@"-prefixed lines on stdout (simavr
 * prints banners of its own; ignore anything else):
 *   start            release the MCU (it is held until the host has the port)
 *   eye              photo-eye: one beam break, 10 ms low on D2 (NPN sensor), queued
 *                    behind earlier ones with 10 ms of clear beam between
 *   enc N            N quadrature steps forward on D18/D19, 200 us apart
 *   reset ext|wdt    reset the MCU with MCUSR = EXTRF or WDRF
 *   hang             the sketch hangs with interrupts on (the PC spins in place), as a
 *                    firmware bug would: only the real watchdog gets the board back
 *   time             print "@TIME <us>"
 *   quit
 * Output: "@SERVO <us> <width_us>" whenever the servo pulse width (D5) changes by
 *         more than 10 us, "@EYE <us>" at each beam break,
 *         "@ENC_START <us>" when a run of encoder steps begins,
 *         "@FAULT <us> 0|1" when the fault output changes, "@READY",
 *         "@PULSE <us> <width_us>" for every servo frame whose width is not the
 *         1000 us rest (each frame of a reject, for pulse-width jitter).
 * EEPROM: simavr stores a byte at once; the harness keeps EECR.EEPE set for 3.4 ms
 * of simulated time after each write starts, as the ATmega2560 does (datasheet:
 * 3.4 ms per byte), so firmware that waits on the EEPROM is as slow here as on a board.
 * Simulated time is paced to the wall clock, so a host talking to the pty sees
 * a Mega running in real time; all timestamps are simulated microseconds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "avr_ioport.h"
#include "sim_avr.h"
#include "sim_elf.h"
#include "sim_hex.h"
#include "uart_pty.h"

#define MCUSR_ADDR 0x54
#define EECR_ADDR 0x3F /* data-space address of EECR */
#define EEPE 1
#define EEPROM_WRITE_US 3400
#define EXTRF 1
#define WDRF 3
#define HANG_AT 0x30000 /* unused flash, far from the sketch and the bootloader (0x3E000) */

static avr_t *avr;
static avr_irq_t *eye_pin, *enc_a, *enc_b;
static avr_cycle_count_t rise_cycle;
static int rise_seen;
static int last_width = -1;
static int eye_queued;          /* beam breaks asked for and not yet made */
static int eye_low;             /* the line is pulled low now */
static avr_cycle_count_t eye_next_at;
static int enc_steps_left;
static avr_cycle_count_t next_enc_at;
static int enc_phase;
static avr_cycle_count_t eeprom_busy_until;

static unsigned long long sim_us(void) { return (unsigned long long)(avr->cycle / 16); }

static void servo_edge(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq; (void)param;
    if (value) {
        rise_cycle = avr->cycle;
        rise_seen = 1;
        return;
    }
    if (!rise_seen)
        return; /* a fall we never saw rise (reset): not a pulse */
    rise_seen = 0;
    int width = (int)((avr->cycle - rise_cycle + 8) / 16);
    if (abs(width - 1000) > 10) {
        printf("@PULSE %llu %d\n", (unsigned long long)(rise_cycle / 16), width);
        fflush(stdout);
    }
    if (last_width < 0 || abs(width - last_width) > 10) {
        printf("@SERVO %llu %d\n", (unsigned long long)(rise_cycle / 16), width);
        fflush(stdout);
        last_width = width;
    }
}

static void fault_edge(struct avr_irq_t *irq, uint32_t value, void *param)
{
    (void)irq; (void)param;
    printf("@FAULT %llu %u\n", sim_us(), value ? 1 : 0);
    fflush(stdout);
}

/* Chained after simavr's own EECR handler, which writes the byte at once. */
static void eecr_write(avr_t *mcu, avr_io_addr_t addr, uint8_t value, void *param)
{
    (void)addr; (void)param;
    if (value & (1 << EEPE))
        eeprom_busy_until = mcu->cycle + 16ULL * EEPROM_WRITE_US;
}

static uint8_t eecr_read(avr_t *mcu, avr_io_addr_t addr, void *param)
{
    (void)param;
    uint8_t value = mcu->data[addr];
    if (mcu->cycle < eeprom_busy_until)
        value |= 1 << EEPE;
    else
        value &= (uint8_t)~(1 << EEPE);
    return value;
}

/* Put the bootloader's image in flash and make every reset start there. */
static int load_bootloader(const char *path)
{
    ihex_chunk_p chunks = NULL;
    int count = read_ihex_chunks(path, &chunks);
    if (count <= 0) {
        fprintf(stderr, "%s: cannot read the bootloader hex\n", path);
        return -1;
    }
    for (int i = 0; i < count; i++) {
        if (chunks[i].baseaddr + chunks[i].size > avr->flashend + 1) {
            fprintf(stderr, "%s: chunk at 0x%x does not fit in flash\n", path, chunks[i].baseaddr);
            return -1;
        }
        memcpy(avr->flash + chunks[i].baseaddr, chunks[i].data, chunks[i].size);
    }
    avr->reset_pc = chunks[0].baseaddr; /* BOOTRST: the reset vector is the boot section */
    avr->pc = avr->reset_pc;
    free_ihex_chunks(chunks);
    return 0;
}

static void reset_mcu(int cause_bit)
{
    avr_reset(avr);
    avr->data[MCUSR_ADDR] = (uint8_t)(1 << cause_bit);
    last_width = -1;
    rise_seen = 0;
}

static double wall_us(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1e6 + (now.tv_nsec - start->tv_nsec) / 1e3;
}

/* Forward is A leading B: AB = 00 -> 10 -> 11 -> 01 -> 00 (A = D18, B = D19). */
static void encoder_step(void)
{
    static const uint8_t seq[4] = {0, 2, 3, 1};
    enc_phase = (enc_phase + 1) & 3;
    avr_raise_irq(enc_a, (seq[enc_phase] >> 1) & 1);
    avr_raise_irq(enc_b, seq[enc_phase] & 1);
}

static int handle_command(char *line, int *running)
{
    if (!strcmp(line, "start")) {
        reset_mcu(EXTRF); /* released from reset as by DTR when the host opened the port */
        *running = 1;
    } else if (!strcmp(line, "eye")) {
        eye_queued++;
    } else if (!strncmp(line, "enc ", 4)) {
        if (!enc_steps_left) {
            next_enc_at = avr->cycle;
            printf("@ENC_START %llu\n", sim_us());
            fflush(stdout);
        }
        enc_steps_left += atoi(line + 4);
    } else if (!strcmp(line, "reset ext")) {
        reset_mcu(EXTRF);
    } else if (!strcmp(line, "reset wdt")) {
        reset_mcu(WDRF);
    } else if (!strcmp(line, "hang")) {
        avr->flash[HANG_AT] = 0xFF; /* rjmp .-2 (0xCFFF): a loop on itself */
        avr->flash[HANG_AT + 1] = 0xCF;
        avr->pc = HANG_AT;
        avr->sreg[S_I] = 1;
    } else if (!strcmp(line, "time")) {
        printf("@TIME %llu\n", sim_us());
        fflush(stdout);
    } else if (!strcmp(line, "quit")) {
        return 0;
    } else if (line[0]) {
        printf("@ERROR unknown command '%s'\n", line);
        fflush(stdout);
    }
    return 1;
}

/* Read whatever is on stdin without blocking; run complete lines. */
static int poll_stdin(int *running)
{
    static char buf[256];
    static size_t len;
    ssize_t n = read(STDIN_FILENO, buf + len, sizeof buf - 1 - len);
    if (n == 0)
        return 0; /* the test went away */
    if (n < 0)
        return errno == EAGAIN ? 1 : 0;
    len += (size_t)n;
    char *nl;
    while ((nl = memchr(buf, '\n', len))) {
        *nl = 0;
        if (!handle_command(buf, running))
            return 0;
        len -= (size_t)(nl + 1 - buf);
        memmove(buf, nl + 1, len);
    }
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s firmware.elf [bootloader.hex]\n", argv[0]);
        return 2;
    }
    elf_firmware_t firmware;
    memset(&firmware, 0, sizeof firmware);
    if (elf_read_firmware(argv[1], &firmware)) {
        fprintf(stderr, "%s: cannot read the ELF\n", argv[1]);
        return 1;
    }
    strcpy(firmware.mmcu, "atmega2560"); /* the ELF has no .mmcu section */
    firmware.frequency = 16000000;
    avr = avr_make_mcu_by_name("atmega2560");
    avr_init(avr);
    avr_load_firmware(avr, &firmware);
    avr->frequency = 16000000;
    if (argc == 3 && load_bootloader(argv[2]))
        return 1;

    uart_pty_t uart;
    uart_pty_init(avr, &uart);
    uart_pty_connect(&uart, '0');

    avr_register_io_write(avr, EECR_ADDR, eecr_write, NULL);
    avr_register_io_read(avr, EECR_ADDR, eecr_read, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('E'), 3), servo_edge, NULL);
    avr_irq_register_notify(avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('H'), 4), fault_edge, NULL);
    eye_pin = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('E'), 4);
    enc_a = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 3);
    enc_b = avr_io_getirq(avr, AVR_IOCTL_IOPORT_GETIRQ('D'), 2);
    avr_raise_irq(eye_pin, 1); /* beam clear */
    avr_raise_irq(enc_a, 0);
    avr_raise_irq(enc_b, 0);

    fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);
    printf("@PORT %s\n@READY\n", uart.port[0].slavename);
    fflush(stdout);

    int running = 0;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    avr_cycle_count_t sim_start = 0;
    for (;;) {
        if (!running) {
            if (!poll_stdin(&running))
                break;
            usleep(1000);
            clock_gettime(CLOCK_MONOTONIC, &start);
            sim_start = avr->cycle;
            continue;
        }
        avr_cycle_count_t slice_end = avr->cycle + 1600; /* 100 us of simulated time */
        while (avr->cycle < slice_end) {
            int state = avr_run(avr);
            if (state == cpu_Done || state == cpu_Crashed) {
                printf("@CRASHED %d at %llu\n", state, sim_us());
                fflush(stdout);
                return 1;
            }
        }
        /* Each "eye" is its own beam break: 10 ms low, then at least 10 ms clear. */
        if (avr->cycle >= eye_next_at) {
            if (eye_low) {
                avr_raise_irq(eye_pin, 1);
                eye_low = 0;
                eye_next_at = avr->cycle + 16 * 10000;
            } else if (eye_queued) {
                avr_raise_irq(eye_pin, 0);
                printf("@EYE %llu\n", sim_us());
                fflush(stdout);
                eye_low = 1;
                eye_queued--;
                eye_next_at = avr->cycle + 16 * 10000;
            }
        }
        if (enc_steps_left && avr->cycle >= next_enc_at) {
            encoder_step();
            enc_steps_left--;
            next_enc_at = avr->cycle + 16 * 200;
        }
        if (!poll_stdin(&running))
            break;
        double ahead_us = (double)(avr->cycle - sim_start) / 16.0 - wall_us(&start);
        if (ahead_us > 500)
            usleep((useconds_t)ahead_us);
    }
    uart_pty_stop(&uart);
    return 0;
}

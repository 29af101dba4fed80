/* Mega 2560 hardware layer; see board.h for the pin map. */
#include "board.h"

#include <Arduino.h>
#include <avr/eeprom.h>
#include <avr/interrupt.h>
#include <avr/wdt.h>
#include <util/atomic.h>

#define PHOTO_EYE_DEBOUNCE_US 5000UL
#define WATCHDOG_MS 75 /* a stalled loop: 60 ms to the interrupt, then 15 ms to the reset */
#define WATCHDOG_MARK 0x57444F47UL /* "WDOG" */
/* Beam breaks latched but not yet taken by the loop. The loop runs every pass
 * (under 1 ms); if it stalls, the watchdog resets the board after WATCHDOG_MS,
 * in which the debounce lets at most WATCHDOG_MS / 5 ms + 1 = 16 beam breaks
 * through. 32 entries (with room for a watchdog oscillator up to 25% slow) so
 * the ring cannot overflow while the board runs: no part is ever left without an
 * ID. The overflow count stays as a last defence and is reported if it happens. */
#define TRIGGER_RING 32 /* power of two */
static_assert(TRIGGER_RING - 1 >= (WATCHDOG_MS * 5 / 4) / (PHOTO_EYE_DEBOUNCE_US / 1000) + 1,
              "the trigger ring must hold every beam break the watchdog allows");
#define SERVO_FRAME_TICKS 40000U /* 20 ms at 0.5 us per tick (16 MHz / 8) */
#define SERVO_REST_TICKS 2000U   /* 1000 us until the core sets the configured rest */
#define KEEP_FREE_SLOTS 8         /* parts between photo-eye and gate whose fire time is kept free */
#define KEEP_FREE_BEFORE_US 1100UL /* the line is low from this long before a fire time (the
                                     core asks up to 1 ms early: whole milliseconds) ... */
#define KEEP_FREE_AFTER_US 700UL   /* ... to this long after it (a loop pass may be late) */
#define EEPROM_MAGIC 0x5A17

/* .noinit: .init4 zeroes .bss after .init3 has saved the reset cause here. */
static uint8_t saved_mcusr __attribute__((section(".noinit")));
/* Written by the watchdog interrupt just before the watchdog resets the board. The
 * Mega's bootloader clears MCUSR before the sketch runs, so WDRF is lost on a board
 * as shipped; RAM survives a reset, and a mark and its complement cannot both be
 * right by chance after power-on (2^-64). */
static uint32_t watchdog_mark __attribute__((section(".noinit")));
static uint32_t watchdog_mark_check __attribute__((section(".noinit")));
static bool saved_watchdog_mark __attribute__((section(".noinit")));
static volatile int32_t encoder_count;
static volatile uint8_t encoder_state;
typedef struct {
    uint32_t micros;
    uint32_t encoder;
} latch_t;
static volatile latch_t triggers[TRIGGER_RING];
static volatile uint8_t trigger_head, trigger_tail;
static volatile uint8_t triggers_lost; /* beam breaks with no room in the ring */
static volatile uint32_t last_edge_us;
static volatile uint16_t pending_ticks; /* a width waiting for the pulse on the wire to end */
static volatile uint16_t frame_ticks = SERVO_REST_TICKS; /* the width of the frame running */
static volatile bool frame_commanded; /* a frame started for a new width, until its pulse ends */
static uint32_t keep_free_us[KEEP_FREE_SLOTS]; /* fire times (micros()) to keep the line free at */
static uint8_t keep_free_count;
static uint32_t clock_ms;      /* the core's clock: whole ms since boot (main loop only) */
static uint32_t clock_base_us; /* micros() at the start of millisecond clock_ms */

/* Runs before main(): keep the reset cause, then stop a watchdog left running
 * by the reset itself (it stays enabled after a watchdog reset). */
void early_reset_cause(void) __attribute__((naked, used, section(".init3")));
void early_reset_cause(void)
{
    saved_mcusr = MCUSR;
    MCUSR = 0;
    wdt_disable();
    saved_watchdog_mark = watchdog_mark == WATCHDOG_MARK && watchdog_mark_check == ~WATCHDOG_MARK;
    watchdog_mark = 0;
    watchdog_mark_check = 0;
}

uint8_t board_reset_cause(void)
{
    if ((saved_mcusr & _BV(WDRF)) || saved_watchdog_mark) return RESET_WATCHDOG;
    if (saved_mcusr & _BV(BORF)) return RESET_BROWN_OUT;
    if (saved_mcusr & _BV(EXTRF)) return RESET_EXTERNAL;
    if (saved_mcusr & _BV(PORF)) return RESET_POWER_ON;
    return RESET_UNKNOWN;
}

void board_init(void)
{
    /* Outputs first, servo line low and fault off, before anything can fire. */
    PORTE &= (uint8_t)~_BV(PE3);
    DDRE |= _BV(PE3);
    DDRB |= _BV(PB7);
    PORTH &= (uint8_t)~_BV(PH4);
    DDRH |= _BV(PH4);

    /* Inputs with pull-ups: photo-eye D2 (PE4), encoder D18 (PD3) and D19 (PD2). */
    DDRE &= (uint8_t)~_BV(PE4);
    PORTE |= _BV(PE4);
    DDRD &= (uint8_t)~(_BV(PD3) | _BV(PD2));
    PORTD |= _BV(PD3) | _BV(PD2);
    encoder_state = (uint8_t)(((PIND >> PD3) & 1) << 1 | ((PIND >> PD2) & 1));

    /* INT4 falling edge (NPN photo-eye pulls low when the beam is broken);
     * INT3 and INT2 on any edge. */
    EICRB = (EICRB & (uint8_t)~(_BV(ISC41) | _BV(ISC40))) | _BV(ISC41);
    EICRA = (EICRA & (uint8_t)~(_BV(ISC31) | _BV(ISC30) | _BV(ISC21) | _BV(ISC20)))
            | _BV(ISC30) | _BV(ISC20);
    EIFR = _BV(INTF4) | _BV(INTF3) | _BV(INTF2);
    EIMSK |= _BV(INT4) | _BV(INT3) | _BV(INT2);

    /* Timer3, fast PWM with TOP = ICR3 (mode 14), clk/8: 20 ms servo frames. The
     * timer itself sets OC3A (D5) at BOTTOM and clears it at OCR3A, so no interrupt
     * latency reaches the pulse width. OCR3A is double-buffered (taken at BOTTOM): a
     * new width never cuts or stretches a pulse already on the wire. Nothing else
     * writes port E after this (simavr, unlike the chip, lets a PORT write override
     * a compare output; a pin on port B would be cut by the status LED). */
    OCR3A = SERVO_REST_TICKS - 1;
    ICR3 = SERVO_FRAME_TICKS - 1;
    TCNT3 = SERVO_FRAME_TICKS - 1 - 8; /* the first frame starts at BOTTOM, 4 us in */
    TCCR3A = _BV(COM3A1) | _BV(WGM31);
    TCCR3B = _BV(WGM33) | _BV(WGM32) | _BV(CS31);
    TIMSK3 = _BV(OCIE3A);

    /* Interrupt first (WDT_vect marks the cause), then the reset: see WATCHDOG_MS. */
    wdt_enable(WDTO_60MS);
    WDTCSR |= _BV(WDIE);
}

/* Counted from micros() (4 us steps) rather than millis(), which advances in
 * 1.024 ms steps and skips a value every 42: a fire scheduled in whole
 * milliseconds is then due within 1 ms of the true beam break plus offset. */
uint32_t board_millis(void)
{
    uint32_t now_us = micros();
    while (now_us - clock_base_us >= 1000UL) {
        clock_base_us += 1000UL;
        clock_ms++;
    }
    return clock_ms;
}

/* The millisecond of the core's clock that contains instant `at_us`, which may lie
 * before the current millisecond (a beam break waiting in the ring). */
static uint32_t clock_ms_at(uint32_t at_us)
{
    int32_t rel_us = (int32_t)(at_us - clock_base_us);
    if (rel_us >= 0)
        return clock_ms + (uint32_t)rel_us / 1000UL;
    return clock_ms - ((uint32_t)(-rel_us) + 999UL) / 1000UL;
}

uint32_t board_encoder(void)
{
    int32_t count;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { count = encoder_count; }
    return (uint32_t)count;
}

bool board_next_trigger(trigger_t *trigger)
{
    bool have = false;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE)
    {
        if (trigger_tail != trigger_head) {
            trigger->micros = triggers[trigger_tail].micros;
            trigger->encoder = triggers[trigger_tail].encoder;
            trigger_tail = (uint8_t)((trigger_tail + 1) & (TRIGGER_RING - 1));
            have = true;
        }
    }
    if (have) {
        board_millis(); /* the clock up to date before converting */
        trigger->millis = clock_ms_at(trigger->micros);
    }
    return have;
}

uint8_t board_take_lost_triggers(void)
{
    uint8_t lost;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE)
    {
        lost = triggers_lost;
        triggers_lost = 0;
    }
    return lost;
}

/* A new width starts a new 20 ms frame at once, or at the part's exact fire time
 * if that is less than a millisecond away, so a fire is on the wire within
 * microseconds of its due time instead of up to one frame (20 ms) later. A pulse
 * already on the line is never cut or stretched: the new width waits for its end
 * (the compare A interrupt). OCR3A is written only while the line is low: the chip
 * double-buffers it, simavr does not, and both then start the same frame. */
static uint32_t wait_for_fire_time_us(void);

static void start_frame(uint16_t ticks, uint16_t in_ticks)
{
    TCNT3 = SERVO_FRAME_TICKS - 1 - in_ticks; /* TOP, then BOTTOM: the line goes high */
    OCR3A = ticks - 1; /* high from BOTTOM through the match: OCR3A + 1 ticks */
    frame_ticks = ticks;
    frame_commanded = true;
}

void board_servo_us(uint16_t width_us)
{
    uint16_t ticks = (uint16_t)(width_us * 2U);
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE)
    {
        if (TCNT3 < frame_ticks) /* the pulse is on the wire (PINE would say so on the
                                    chip, but simavr does not show a compare output there) */
            pending_ticks = ticks == frame_ticks ? 0 : ticks;
        else if (ticks != frame_ticks) { /* the same width again (a CONFIGURE) is not a new frame */
            uint32_t wait_us = wait_for_fire_time_us();
            start_frame(ticks, wait_us ? (uint16_t)(2U * wait_us) : 8U); /* or in 4 us */
        }
    }
}

void board_servo_keep_free_at(const trigger_t *trigger, uint32_t gate_ms)
{
    uint32_t due_us = trigger->micros + (uint32_t)((int32_t)(gate_ms - trigger->millis) * 1000L);
    if (keep_free_count == KEEP_FREE_SLOTS) { /* more parts in flight than slots: drop the oldest */
        for (uint8_t i = 1; i < KEEP_FREE_SLOTS; i++)
            keep_free_us[i - 1] = keep_free_us[i];
        keep_free_count--;
    }
    keep_free_us[keep_free_count++] = due_us;
}

/* How long until a remembered fire time that falls within the next millisecond,
 * or 0. The core counts whole milliseconds and so asks for a fire up to 1 ms
 * before the part is truly at the gate; the frame then starts at that time. */
static uint32_t wait_for_fire_time_us(void)
{
    uint32_t now_us = micros(), wait_us = 0;
    for (uint8_t i = 0; i < keep_free_count; i++) {
        int32_t ahead_us = (int32_t)(keep_free_us[i] - now_us);
        if (ahead_us > 4 && ahead_us <= 1000 && (wait_us == 0 || (uint32_t)ahead_us < wait_us))
            wait_us = (uint32_t)ahead_us;
    }
    return wait_us;
}

/* A frame boundary (rest pulse start) that would put the line high at a fire time
 * is delayed to just after it, by moving the counter back while the line is low.
 * Delaying the rest frames by a millisecond or two is harmless to a servo; the fire
 * itself then starts a new frame at once (board_servo_us). */
void board_poll_servo_line(void)
{
    uint32_t now_us = micros();
    uint8_t kept = 0;
    for (uint8_t i = 0; i < keep_free_count; i++) /* forget fire times that have passed */
        if ((int32_t)(keep_free_us[i] + KEEP_FREE_AFTER_US - now_us) >= 0)
            keep_free_us[kept++] = keep_free_us[i];
    keep_free_count = kept;
    if (!keep_free_count)
        return;
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE)
    {
        uint16_t tcnt = TCNT3;
        const uint16_t top = SERVO_FRAME_TICKS - 1;
        const uint16_t lowest = frame_ticks + 16; /* well past the compare: never re-enter the pulse */
        if (tcnt <= lowest || tcnt >= top - 16) /* pulse on the wire, or the frame ends now */
            return;
        if (frame_commanded) /* a fire (or its end) starts now or at its exact time: never move it */
            return;
        uint32_t boundary_us = now_us + (uint32_t)(top - tcnt) / 2U;
        uint32_t high_us = (uint32_t)frame_ticks / 2U + KEEP_FREE_BEFORE_US;
        for (uint8_t i = 0; i < keep_free_count; i++) {
            uint32_t due_us = keep_free_us[i];
            bool covers = (int32_t)(boundary_us + high_us - due_us) > 0 &&
                          (int32_t)(due_us + KEEP_FREE_AFTER_US - boundary_us) > 0;
            if (!covers)
                continue;
            uint32_t delay_ticks = 2U * (due_us + KEEP_FREE_AFTER_US - boundary_us);
            uint16_t room = (uint16_t)(tcnt - lowest);
            tcnt = (uint16_t)(tcnt - (delay_ticks < room ? delay_ticks : room));
            TCNT3 = tcnt; /* not enough room now: the next pass moves it further */
            boundary_us = now_us + (uint32_t)(top - tcnt) / 2U;
        }
    }
}

void board_fault_output(bool on)
{
    if (on) PORTH |= _BV(PH4);
    else PORTH &= (uint8_t)~_BV(PH4);
}

void board_status_led(bool on)
{
    if (on) PORTB |= _BV(PB7);
    else PORTB &= (uint8_t)~_BV(PB7);
}

typedef struct {
    uint16_t magic;
    gate_config_t config;
    uint16_t crc;
} stored_config_t;

static stored_config_t EEMEM stored;

bool board_load_config(gate_config_t *config)
{
    stored_config_t copy;
    eeprom_read_block(&copy, &stored, sizeof copy);
    if (copy.magic != EEPROM_MAGIC)
        return false;
    if (crc16_ccitt_false((const uint8_t *)&copy.config, sizeof copy.config) != copy.crc)
        return false;
    *config = copy.config;
    return true;
}

/* Saving never blocks: a byte of EEPROM takes 3.4 ms to write, a whole record
 * (about 21 bytes) up to 76 ms, and a command handler that waited that long
 * would fire pulses late. The record is copied here and board_poll_eeprom()
 * writes one byte each time the EEPROM is ready. A reset in the middle leaves
 * a record whose CRC fails: the next boot uses safe defaults and waits for
 * the PC's CONFIGURE, which every handshake sends anyway. */
static stored_config_t saving;
static uint8_t saving_next = sizeof(stored_config_t); /* == size: nothing to write */

void board_save_config(const gate_config_t *config)
{
    saving.magic = EEPROM_MAGIC;
    saving.config = *config;
    saving.crc = crc16_ccitt_false((const uint8_t *)&saving.config, sizeof saving.config);
    saving_next = 0; /* a save in progress starts again with the newer record */
}

void board_poll_eeprom(void)
{
    if (saving_next >= sizeof saving || !eeprom_is_ready())
        return;
    uint8_t *address = (uint8_t *)&stored + saving_next;
    uint8_t value = ((const uint8_t *)&saving)[saving_next];
    /* eeprom_update_byte only starts a write when the byte differs; EEPROM is ready,
     * so it does not wait. Interrupts off for the 4-cycle EEMPE/EEPE sequence. */
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE) { eeprom_update_byte(address, value); }
    saving_next++;
}

void board_watchdog_kick(void) { wdt_reset(); }

/* ---------------------------------------------------------------- ISRs */

ISR(WDT_vect) /* the loop stopped kicking for 60 ms: mark why, then reset in 15 ms */
{
    watchdog_mark = WATCHDOG_MARK;
    watchdog_mark_check = ~WATCHDOG_MARK;
    wdt_enable(WDTO_15MS); /* clears WDIE: the next timeout resets */
    for (;;) {
    }
}

ISR(INT4_vect) /* photo-eye: latch time and position, debounced */
{
    uint32_t now_us = micros();
    if (now_us - last_edge_us < PHOTO_EYE_DEBOUNCE_US)
        return;
    last_edge_us = now_us;
    uint8_t next = (uint8_t)((trigger_head + 1) & (TRIGGER_RING - 1));
    if (next == trigger_tail) { /* cannot happen (see TRIGGER_RING); if it does, say so */
        if (triggers_lost < 0xFF)
            triggers_lost++;
        return;
    }
    triggers[trigger_head].micros = now_us;
    triggers[trigger_head].encoder = (uint32_t)encoder_count;
    trigger_head = next;
}

/* Quadrature: index = previous AB << 2 | current AB -> step. */
static const int8_t QUADRATURE[16] = {0, -1, 1, 0, 1, 0, 0, -1, -1, 0, 0, 1, 0, 1, -1, 0};

static inline void encoder_edge(void)
{
    uint8_t now = (uint8_t)(((PIND >> PD3) & 1) << 1 | ((PIND >> PD2) & 1));
    encoder_count += QUADRATURE[(encoder_state << 2) | now];
    encoder_state = now;
}

ISR(INT3_vect) { encoder_edge(); }
ISR(INT2_vect) { encoder_edge(); }

ISR(TIMER3_COMPA_vect) /* the pulse has ended (in hardware): start a waiting width */
{
    frame_commanded = false;
    if (pending_ticks) {
        start_frame(pending_ticks, 40); /* in 20 us */
        pending_ticks = 0;
    }
}

/* Mega 2560 hardware layer; see board.h for the pin map. */
#include "board.h"

#include <Arduino.h>
#include <avr/eeprom.h>
#include <avr/interrupt.h>
#include <avr/wdt.h>
#include <util/atomic.h>

#define PHOTO_EYE_DEBOUNCE_US 5000UL
#define TRIGGER_RING 8 /* power of two */
#define SERVO_FRAME_TICKS 40000U /* 20 ms at 0.5 us per tick (16 MHz / 8) */
#define EEPROM_MAGIC 0x5A17

/* .noinit: .init4 zeroes .bss after .init3 has saved the reset cause here. */
static uint8_t saved_mcusr __attribute__((section(".noinit")));
static volatile int32_t encoder_count;
static volatile uint8_t encoder_state;
static volatile trigger_t triggers[TRIGGER_RING];
static volatile uint8_t trigger_head, trigger_tail;
static volatile uint8_t triggers_lost; /* beam breaks with no room in the ring */
static volatile uint32_t last_edge_us;
static volatile uint16_t servo_ticks = 2000; /* 1000 us until configured */
static volatile bool frame_restart_pending;

/* Runs before main(): keep the reset cause, then stop a watchdog left running
 * by the reset itself (it stays enabled after a watchdog reset). */
void early_reset_cause(void) __attribute__((naked, used, section(".init3")));
void early_reset_cause(void)
{
    saved_mcusr = MCUSR;
    MCUSR = 0;
    wdt_disable();
}

uint8_t board_reset_cause(void)
{
    if (saved_mcusr & _BV(WDRF)) return RESET_WATCHDOG;
    if (saved_mcusr & _BV(BORF)) return RESET_BROWN_OUT;
    if (saved_mcusr & _BV(EXTRF)) return RESET_EXTERNAL;
    if (saved_mcusr & _BV(PORF)) return RESET_POWER_ON;
    return RESET_UNKNOWN;
}

void board_init(void)
{
    /* Outputs first, servo line low and fault off, before anything can fire. */
    DDRH |= _BV(PH6) | _BV(PH4);
    PORTH &= (uint8_t)~(_BV(PH6) | _BV(PH4));
    DDRB |= _BV(PB7);

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

    /* Timer1, CTC with TOP = OCR1A (mode 4), clk/8: a 20 ms servo frame. The pulse
     * starts at compare A (frame end/start) and ends at compare B. */
    TCCR1A = 0;
    TCCR1B = _BV(WGM12) | _BV(CS11);
    OCR1A = SERVO_FRAME_TICKS - 1;
    OCR1B = servo_ticks;
    TIMSK1 = _BV(OCIE1A) | _BV(OCIE1B);

    wdt_enable(WDTO_120MS);
}

uint32_t board_millis(void) { return millis(); }

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
            trigger->millis = triggers[trigger_tail].millis;
            trigger->encoder = triggers[trigger_tail].encoder;
            trigger_tail = (uint8_t)((trigger_tail + 1) & (TRIGGER_RING - 1));
            have = true;
        }
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

/* A new width starts a new 20 ms frame at once, so a fire is on the wire within
 * microseconds of its due time instead of up to one frame (20 ms) later. A pulse
 * already on the line is never cut or stretched: the new frame follows its end.
 * The frame is cut short by moving TOP (OCR1A), never by writing TCNT1. */
void board_servo_us(uint16_t width_us)
{
    ATOMIC_BLOCK(ATOMIC_RESTORESTATE)
    {
        servo_ticks = (uint16_t)(width_us * 2U);
        if (PORTH & _BV(PH6))
            frame_restart_pending = true;
        else
            OCR1A = TCNT1 + 8; /* CTC: the frame ends (and the next starts) in 4 us */
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

ISR(INT4_vect) /* photo-eye: latch time and position, debounced */
{
    uint32_t now_us = micros();
    if (now_us - last_edge_us < PHOTO_EYE_DEBOUNCE_US)
        return;
    last_edge_us = now_us;
    uint8_t next = (uint8_t)((trigger_head + 1) & (TRIGGER_RING - 1));
    if (next == trigger_tail) { /* main loop stalled for 8 parts: say so, never silently */
        if (triggers_lost < 0xFF)
            triggers_lost++;
        return;
    }
    triggers[trigger_head].millis = millis();
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

ISR(TIMER1_COMPA_vect) /* frame start: servo line high, schedule its fall */
{
    PORTH |= _BV(PH6);
    OCR1B = servo_ticks;
    OCR1A = SERVO_FRAME_TICKS - 1;
}

ISR(TIMER1_COMPB_vect) /* end of the pulse */
{
    PORTH &= (uint8_t)~_BV(PH6);
    if (frame_restart_pending) {
        frame_restart_pending = false;
        OCR1A = TCNT1 + 40; /* next frame, with the new width, in 20 us */
    }
}

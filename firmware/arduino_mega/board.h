/*
 * The Mega 2560 board: pins, timers, interrupts, EEPROM and the watchdog.
 * Everything hardware-specific is here; station_core.c never touches a register.
 *
 * Pins (Arduino numbering / AVR port):
 *   D2  PE4 INT4   photo-eye, rising edge = beam broken (input, pull-up)
 *   D18 PD3 INT3   encoder A (any edge)
 *   D19 PD2 INT2   encoder B (any edge)
 *   D5  PE3 OC3A   reject servo signal (Timer3 hardware PWM, 50 Hz frame)
 *   D7  PH4        fault output (alarm lamp / relay), high = fault
 *   D13 PB7        status LED
 */
#ifndef BOARD_H
#define BOARD_H

#include <stdbool.h>
#include <stdint.h>

#include "station_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint32_t millis; /* of board_millis()'s clock: the millisecond the beam broke in */
    uint32_t encoder;
    uint32_t micros; /* the same instant, exactly (micros()) */
} trigger_t;

void board_init(void);
uint8_t board_reset_cause(void);
uint32_t board_millis(void);
uint32_t board_encoder(void);
bool board_next_trigger(trigger_t *trigger);
/* Beam breaks since the last call that found the trigger ring full (0..255), and clear. */
uint8_t board_take_lost_triggers(void);
void board_servo_us(uint16_t width_us);
/* A fire may fall due when this part reaches the gate, at gate_ms of board_millis()
 * (core_gate_time_ms): no rest pulse may be on the servo line then (a pulse on the
 * wire is never cut, so a fire would wait for its end), and a fire asked for up to
 * 1 ms early starts at the part's exact time. Remembers a few parts. */
void board_servo_keep_free_at(const trigger_t *trigger, uint32_t gate_ms);
/* Moves the next servo frame past any remembered fire time it would cover; call every loop. */
void board_poll_servo_line(void);
void board_fault_output(bool on);
void board_status_led(bool on);
bool board_load_config(gate_config_t *config);
/* Writes at most one byte of a pending board_save_config; call every loop. */
void board_poll_eeprom(void);
void board_save_config(const gate_config_t *config);
void board_watchdog_kick(void);

#ifdef __cplusplus
}
#endif
#endif

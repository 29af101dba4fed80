/*
 * Reject-station controller for the Arduino Mega 2560.
 *
 * The Mega owns real time: it latches every part at the photo-eye, keeps the
 * part FIFO, fires the reject servo at the gate and fails safe (rejects)
 * when the PC is late or silent. The PC owns judgement: it sends VERDICTs.
 * The wire format is PROTOCOL.md beside this file. Logic: station_core.c;
 * hardware: board.cpp. Build: `make` here, or open this folder in the IDE.
 */
#include "board.h"
#include "station_core.h"

#define RX_BYTES_PER_PASS 8
#define TX_BYTES_PER_PASS 8

static core_t core;
/* Bytes waiting for the UART (frames are at most 38). 256 bytes with uint8_t
 * indices: they wrap by themselves, with no modulo (a signed % on the AVR was a
 * division per byte, and an ACK cost 250 us). */
static uint8_t tx_ring[256];
static uint8_t tx_head, tx_tail;
static uint32_t tx_frames_dropped; /* whole frames; for a debugger or a future STATUS */

/* A frame goes into the ring whole or not at all: a frame cut short would reach
 * the PC as a CRC error and hide which reply was lost. A dropped reply is sent
 * again when the PC retransmits its command, a dropped event when the event
 * queue resends it; a dropped heartbeat is followed by the next. */
static void serial_write(const uint8_t *bytes, uint8_t len)
{
    uint8_t used = (uint8_t)(tx_head - tx_tail);
    if (len > 255 - used) {
        tx_frames_dropped++;
        return;
    }
    for (uint8_t i = 0; i < len; i++)
        tx_ring[tx_head++] = bytes[i];
}

/* At most TX_BYTES_PER_PASS: HardwareSerial takes a few microseconds a byte (see loop()). */
static void serial_pump(void)
{
    int room = Serial.availableForWrite();
    if (room > TX_BYTES_PER_PASS)
        room = TX_BYTES_PER_PASS;
    while (room-- > 0 && tx_tail != tx_head) {
        Serial.write(tx_ring[tx_tail++]);
    }
}

void setup()
{
    board_init(); /* servo at rest and fault off before anything else */
    Serial.begin(115200);
    gate_config_t saved;
    core_hal_t hal = {serial_write, board_servo_us, board_fault_output, board_save_config};
    bool have_saved = board_load_config(&saved);
    core_init(&core, &hal, board_millis(), board_reset_cause(), have_saved ? &saved : 0);
}

/* The order matters for timing: the gate runs first, right after the clock is
 * read, so a fire that fell due goes out before this pass parses or sends
 * anything. Bytes are taken and sent a few per pass for the same reason (a pass
 * that answers a command takes a few hundred microseconds); eight bytes a pass
 * still drains the line (11.5 bytes a ms) many times over. */
void loop()
{
    board_watchdog_kick();
    uint32_t now = board_millis();
    trigger_t trigger;
    while (board_next_trigger(&trigger)) {
        core_photo_eye(&core, trigger.millis, trigger.encoder);
        uint32_t gate_ms;
        if (core_gate_time_ms(&core, trigger.millis, &gate_ms))
            board_servo_keep_free_at(&trigger, gate_ms);
    }
    uint8_t lost = board_take_lost_triggers();
    if (lost)
        core_photo_eye_lost(&core, lost, now);
    core_tick(&core, now, board_encoder());
    board_poll_servo_line();
    for (uint8_t n = 0; n < RX_BYTES_PER_PASS && Serial.available() > 0; n++)
        core_receive(&core, (uint8_t)Serial.read(), now);
    serial_pump();
    board_poll_eeprom();
    board_status_led(core.fault ? (now / 100) & 1 : (now / 500) & 1);
}

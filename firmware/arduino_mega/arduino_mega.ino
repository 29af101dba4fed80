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

#define TX_RING 256 /* bytes waiting for the UART; frames are at most 38 */

static core_t core;
static uint8_t tx_ring[TX_RING];
static uint16_t tx_head, tx_tail;
static uint32_t tx_frames_dropped; /* whole frames; for a debugger or a future STATUS */

/* A frame goes into the ring whole or not at all: a frame cut short would reach
 * the PC as a CRC error and hide which reply was lost. A dropped reply is sent
 * again when the PC retransmits its command, a dropped event when the event
 * queue resends it; a dropped heartbeat is followed by the next. */
static void serial_write(const uint8_t *bytes, uint8_t len)
{
    uint16_t used = (uint16_t)((tx_head + TX_RING - tx_tail) % TX_RING);
    if (len > TX_RING - 1 - used) {
        tx_frames_dropped++;
        return;
    }
    for (uint8_t i = 0; i < len; i++) {
        tx_ring[tx_head] = bytes[i];
        tx_head = (uint16_t)((tx_head + 1) % TX_RING);
    }
}

static void serial_pump(void)
{
    int room = Serial.availableForWrite();
    while (room-- > 0 && tx_tail != tx_head) {
        Serial.write(tx_ring[tx_tail]);
        tx_tail = (uint16_t)((tx_tail + 1) % TX_RING);
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

void loop()
{
    board_watchdog_kick();
    uint32_t now = board_millis();
    while (Serial.available() > 0)
        core_receive(&core, (uint8_t)Serial.read(), now);
    trigger_t trigger;
    while (board_next_trigger(&trigger))
        core_photo_eye(&core, trigger.millis, trigger.encoder);
    uint8_t lost = board_take_lost_triggers();
    if (lost)
        core_photo_eye_lost(&core, lost, now);
    core_tick(&core, now, board_encoder());
    serial_pump();
    board_poll_eeprom();
    board_status_led(core.fault ? (now / 100) & 1 : (now / 500) & 1);
}

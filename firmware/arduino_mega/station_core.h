/*
 * The reject-station logic, free of hardware: framing, CRC, messages, part FIFO,
 * gate scheduling, fail-safe rules and the event queue (PROTOCOL.md).
 *
 * It compiles for the ATmega2560 and for the host (unit tests), and mirrors
 * station/sim/mega_core.py rule for rule; the same conformance tests run
 * against both. No heap, no blocking: every input carries the time.
 */
#ifndef STATION_CORE_H
#define STATION_CORE_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "protocol.h" /* generated: message types, payload layout, enums, safe limits */

#define MAX_BODY (2 + MAX_PAYLOAD + 2)
#define MAX_WIRE (MAX_BODY + 2)

/* Frame decoding results (names as in PROTOCOL.md / protocol_vectors.json). */
enum frame_status {
    FRAME_OK = 0, FRAME_COBS, FRAME_SHORT, FRAME_CRC, FRAME_UNKNOWN_TYPE, FRAME_BAD_LENGTH,
    FRAME_OVERSIZED
};

typedef struct {
    uint8_t mode;
    uint32_t gate_offset;
    uint16_t decision_lead;
    uint16_t servo_rest_us;
    uint16_t servo_reject_us;
    uint16_t reject_pulse_ms;
    uint16_t heartbeat_timeout_ms;
    uint32_t calibration_crc;
} gate_config_t;

typedef struct {
    uint32_t part_id;
    uint8_t mode;
    uint32_t decide_at;
    uint32_t fire_at;
    int8_t verdict;      /* -1 none, 0 pass, 1 reject */
    bool decided;
    bool fire;
    uint8_t reason;
} pending_part_t;

typedef struct {
    uint8_t seq;
    uint8_t len;
    uint8_t wire[MAX_WIRE];
    bool sent;
    uint32_t sent_at;
} queued_event_t;

typedef struct {
    uint32_t parts, fired, passed, failsafe;
    uint16_t frame_errors;
} counters_t;

/* What the core needs from the board; the AVR and host test builds fill these in. */
typedef struct {
    void (*write)(const uint8_t *bytes, uint8_t len);
    void (*servo_us)(uint16_t width_us);
    void (*fault_output)(bool on);
    void (*save_config)(const gate_config_t *config);
} core_hal_t;

typedef struct {
    core_hal_t hal;
    gate_config_t config;
    bool configured;
    uint8_t reset_cause;
    uint8_t fault;
    uint8_t pending_fault_report;
    uint32_t pending_fault_detail;
    counters_t counters;
    pending_part_t fifo[FIFO_SIZE];
    uint8_t fifo_count; /* parts in arrival order; one leaves when it falls due */
    uint32_t next_part_id;
    uint32_t boot_ms;
    uint32_t encoder; /* last count seen by core_tick, for STATUS */
    bool servo_out;
    uint32_t servo_until;
    uint8_t test_fires_left;
    uint16_t test_fire_width;
    uint32_t next_test_fire_at;
    uint8_t rx[MAX_WIRE];
    uint8_t rx_len;
    bool rx_discarding;
    bool host_present;
    uint32_t last_heard;
    uint32_t last_heartbeat_out;
    uint8_t last_host_seq;
    uint8_t last_reply[MAX_WIRE];
    uint8_t last_reply_len;
    uint8_t event_seq;
    queued_event_t events[EVENT_QUEUE_SIZE];
    uint8_t events_head, events_count;
    uint32_t events_dropped;
} core_t;

/* ---- framing (pure functions, used by the core and by the tests) ---- */
uint16_t crc16_ccitt_false(const uint8_t *data, uint8_t len);
uint16_t crc16_ccitt_false_update(uint16_t crc, uint8_t byte);
/* Encode seq+type+payload into wire (COBS + 0x00); returns the wire length. */
uint8_t frame_encode(uint8_t seq, uint8_t type, const uint8_t *payload, uint8_t len,
                     uint8_t *wire);
/* Decode one frame (without its 0x00). On FRAME_OK, fills seq/type/payload/len. */
uint8_t frame_decode(const uint8_t *encoded, uint8_t len, uint8_t *seq, uint8_t *type,
                     uint8_t *payload, uint8_t *payload_len);
bool config_is_safe(const gate_config_t *config);
void config_defaults(gate_config_t *config);

/* ---- the Mega ---- */
void core_init(core_t *core, const core_hal_t *hal, uint32_t now_ms, uint8_t reset_cause,
               const gate_config_t *eeprom_config);
void core_receive(core_t *core, uint8_t byte, uint32_t now_ms);
uint32_t core_photo_eye(core_t *core, uint32_t latched_ms, uint32_t latched_encoder);
void core_tick(core_t *core, uint32_t now_ms, uint32_t encoder);
/* Beam breaks the board could not latch (its trigger ring was full): they have no
 * part ID and no gate action, so the core latches PHOTO_EYE_OVERFLOW (detail: count). */
void core_photo_eye_lost(core_t *core, uint8_t count, uint32_t now_ms);
/* When a part latched at latched_ms reaches the gate, if the gate is timed
 * (milliseconds mode): the board keeps the servo line free of a rest pulse then,
 * so that a fire never waits for one. False in encoder mode (a position, not a time). */
bool core_gate_time_ms(const core_t *core, uint32_t latched_ms, uint32_t *due_ms);

#ifdef __cplusplus
}
#endif
#endif

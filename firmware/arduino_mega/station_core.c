/* The reject-station logic; see station_core.h and PROTOCOL.md. */
#include "station_core.h"

#include <string.h>

/* ---------------------------------------------------------------- framing */

/* Byte at a time (x = the byte's effect on the top 8 bits; the polynomial's terms
 * x^12, x^5 and 1 become the shifts), not bit at a time: on the Mega a reply's CRC
 * went from about 7 us to about 1 us a byte, and a loop pass that answers a frame
 * no longer holds up a fire that falls due meanwhile. test_core.c checks it equal
 * to the bitwise definition for every (crc, byte) pair. */
uint16_t crc16_ccitt_false_update(uint16_t crc, uint8_t byte)
{
    uint8_t x = (uint8_t)((crc >> 8) ^ byte);
    x ^= (uint8_t)(x >> 4);
    return (uint16_t)((crc << 8) ^ ((uint16_t)x << 12) ^ ((uint16_t)x << 5) ^ x);
}

uint16_t crc16_ccitt_false(const uint8_t *data, uint8_t len)
{
    uint16_t crc = 0xFFFF;
    for (uint8_t i = 0; i < len; i++)
        crc = crc16_ccitt_false_update(crc, data[i]);
    return crc;
}

uint8_t frame_encode(uint8_t seq, uint8_t type, const uint8_t *payload, uint8_t len,
                     uint8_t *wire)
{
    uint8_t body[MAX_BODY];
    uint8_t n = 0;
    body[n++] = seq;
    body[n++] = type;
    memcpy(body + n, payload, len);
    n += len;
    uint16_t crc = crc16_ccitt_false(body, n);
    body[n++] = (uint8_t)(crc >> 8);
    body[n++] = (uint8_t)crc;
    /* COBS: each code byte counts the bytes up to the next zero (or 254 without one). */
    uint8_t out = 1, code_at = 0, code = 1;
    for (uint8_t i = 0; i < n; i++) {
        if (body[i] == 0) {
            wire[code_at] = code;
            code_at = out++;
            code = 1;
        } else {
            wire[out++] = body[i];
            if (++code == 0xFF) {
                wire[code_at] = code;
                code_at = out++;
                code = 1;
            }
        }
    }
    wire[code_at] = code;
    wire[out++] = 0;
    return out;
}

uint8_t frame_decode(const uint8_t *encoded, uint8_t len, uint8_t *seq, uint8_t *type,
                     uint8_t *payload, uint8_t *payload_len)
{
    uint8_t body[MAX_WIRE];
    uint8_t n = 0, i = 0;
    if (len > MAX_WIRE - 1)
        return FRAME_OVERSIZED;
    while (i < len) {
        uint8_t code = encoded[i++];
        if (code == 0 || i + code - 1 > len)
            return FRAME_COBS;
        for (uint8_t k = 1; k < code; k++)
            body[n++] = encoded[i++];
        if (code < 0xFF && i < len)
            body[n++] = 0;
    }
    if (n < 4)
        return FRAME_SHORT;
    uint16_t crc = (uint16_t)((body[n - 2] << 8) | body[n - 1]);
    if (crc16_ccitt_false(body, (uint8_t)(n - 2)) != crc)
        return FRAME_CRC;
    *seq = body[0];
    *type = body[1];
    int8_t expected = payload_size(body[1]);
    if (expected < 0)
        return FRAME_UNKNOWN_TYPE;
    if (n - 4 != expected)
        return FRAME_BAD_LENGTH;
    memcpy(payload, body + 2, (size_t)(n - 4));
    *payload_len = (uint8_t)(n - 4);
    return FRAME_OK;
}

/* little-endian field helpers */
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint8_t *put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); return p + 2; }
static uint8_t *put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
    return p + 4;
}

/* ---------------------------------------------------------- configuration */

void config_defaults(gate_config_t *c)
{
    c->mode = MODE_MILLISECONDS;
    c->gate_offset = 1500;
    c->decision_lead = 100;
    c->servo_rest_us = 1000;
    c->servo_reject_us = 2000;
    c->reject_pulse_ms = 150;
    c->heartbeat_timeout_ms = 1000;
    c->calibration_crc = 0;
}

static bool within(uint32_t value, uint32_t low, uint32_t high) { return value >= low && value <= high; }

bool config_is_safe(const gate_config_t *c)
{
    if (!within(c->servo_rest_us, SERVO_US_MIN, SERVO_US_MAX)) return false;
    if (!within(c->servo_reject_us, SERVO_US_MIN, SERVO_US_MAX)) return false;
    if (!within(c->reject_pulse_ms, REJECT_PULSE_MS_MIN, REJECT_PULSE_MS_MAX)) return false;
    if (!within(c->heartbeat_timeout_ms, HEARTBEAT_TIMEOUT_MS_MIN, HEARTBEAT_TIMEOUT_MS_MAX))
        return false;
    if (c->mode == MODE_ENCODER_COUNTS) {
        if (!within(c->gate_offset, GATE_OFFSET_COUNTS_MIN, GATE_OFFSET_COUNTS_MAX)) return false;
    } else if (c->mode == MODE_MILLISECONDS) {
        if (!within(c->gate_offset, GATE_OFFSET_MS_MIN, GATE_OFFSET_MS_MAX)) return false;
    } else {
        return false;
    }
    return c->decision_lead < c->gate_offset;
}

/* ---------------------------------------------------------- output helpers */

static uint32_t millis_since_boot(const core_t *core, uint32_t now_ms) { return now_ms - core->boot_ms; }

static void send_now(core_t *core, uint8_t type, const uint8_t *payload, uint8_t len)
{
    uint8_t wire[MAX_WIRE];
    uint8_t n = frame_encode(0, type, payload, len, wire);
    core->hal.write(wire, n);
}

static void reply(core_t *core, uint8_t type, const uint8_t *payload, uint8_t len)
{
    core->last_reply_len = frame_encode(0, type, payload, len, core->last_reply);
    core->hal.write(core->last_reply, core->last_reply_len);
}

static void queue_event(core_t *core, uint8_t type, const uint8_t *payload, uint8_t len)
{
    if (!core->host_present)
        return; /* nobody to tell; counters and the gate still act */
    if (core->events_count >= EVENT_QUEUE_SIZE) {
        core->events_head = (uint8_t)((core->events_head + 1) % EVENT_QUEUE_SIZE);
        core->events_count--;
        core->events_dropped++;
        if (core->fault == FAULT_NONE)
            core->fault = FAULT_EVENT_QUEUE_OVERFLOW;
    }
    core->event_seq = (uint8_t)(core->event_seq % 255 + 1);
    queued_event_t *e = &core->events[(core->events_head + core->events_count) % EVENT_QUEUE_SIZE];
    e->seq = core->event_seq;
    e->len = frame_encode(e->seq, type, payload, len, e->wire);
    e->sent = false;
    core->events_count++;
}

static void queue_gate(core_t *core, uint32_t part_id, bool fired, uint8_t reason, uint32_t now_ms)
{
    uint8_t p[PAYLOAD_GATE], *w = p;
    w = put32(w, part_id);
    *w++ = fired ? 1 : 0;
    *w++ = reason;
    put32(w, millis_since_boot(core, now_ms));
    queue_event(core, MSG_GATE, p, sizeof p);
}

static void latch_fault(core_t *core, uint8_t code, uint32_t detail)
{
    if (core->fault == FAULT_NONE || code == FAULT_HEARTBEAT_LOST)
        core->fault = code;
    core->hal.fault_output(true);
    uint8_t payload[PAYLOAD_FAULT_EVENT];
    payload[0] = code;
    put32(payload + 1, detail);
    queue_event(core, MSG_FAULT_EVENT, payload, sizeof payload);
}

static void send_identify(core_t *core, uint8_t acked_seq, bool as_reply)
{
    uint8_t p[PAYLOAD_IDENTIFY], *w = p;
    *w++ = acked_seq;
    memcpy(w, FIRMWARE_NAME, 8);
    w += 8;
    *w++ = FW_VERSION_MAJOR;
    *w++ = FW_VERSION_MINOR;
    *w++ = FW_VERSION_PATCH;
    *w++ = PROTOCOL_VERSION;
    w = put32(w, core->config.calibration_crc);
    *w++ = core->reset_cause;
    *w++ = core->configured ? 1 : 0;
    if (as_reply)
        reply(core, MSG_IDENTIFY, p, sizeof p);
    else
        send_now(core, MSG_IDENTIFY, p, sizeof p);
}

static void send_ack(core_t *core, uint8_t seq, uint8_t error)
{
    uint8_t p[PAYLOAD_ACK] = {seq, error};
    reply(core, MSG_ACK, p, sizeof p);
}

/* ------------------------------------------------------------------- FIFO */

static pending_part_t *fifo_at(core_t *core, uint8_t i)
{
    return &core->fifo[i];
}

static void decide(pending_part_t *part, bool fire, uint8_t reason)
{
    part->decided = true;
    part->fire = fire;
    part->reason = reason;
}

static uint32_t position(uint8_t mode, uint32_t now_ms, uint32_t encoder)
{
    return mode == MODE_ENCODER_COUNTS ? encoder : now_ms;
}

static bool reached(uint32_t pos, uint32_t due) { return (int32_t)(pos - due) >= 0; }

static pending_part_t *fifo_push(core_t *core)
{
    pending_part_t *part = fifo_at(core, core->fifo_count);
    core->fifo_count++;
    memset(part, 0, sizeof *part);
    part->verdict = -1;
    return part;
}

/* Remove entry i, keeping the others in order (at most FIFO_SIZE - 1 copies). */
static void fifo_remove(core_t *core, uint8_t i)
{
    for (; i + 1 < core->fifo_count; i++)
        *fifo_at(core, i) = *fifo_at(core, i + 1);
    core->fifo_count--;
}

static void start_pulse(core_t *core, uint32_t now_ms, uint16_t width_us);

/* ----------------------------------------------------------------- inputs */

void core_init(core_t *core, const core_hal_t *hal, uint32_t now_ms, uint8_t reset_cause,
               const gate_config_t *eeprom_config)
{
    memset(core, 0, sizeof *core);
    core->hal = *hal;
    if (eeprom_config && config_is_safe(eeprom_config)) {
        core->config = *eeprom_config;
        core->configured = true;
    } else {
        config_defaults(&core->config);
    }
    core->reset_cause = reset_cause;
    core->pending_fault_report = reset_cause == RESET_WATCHDOG ? FAULT_WATCHDOG_RESET : FAULT_NONE;
    core->pending_fault_detail = reset_cause;
    core->next_part_id = 1;
    core->boot_ms = now_ms;
    core->last_heard = now_ms;
    /* The first heartbeat goes out on the first tick, right after the announcement: a
       host that missed the announcement sees millis() go back within a millisecond. */
    core->last_heartbeat_out = now_ms - HEARTBEAT_PERIOD_MS;
    core->hal.servo_us(core->config.servo_rest_us);
    core->hal.fault_output(false);
    send_identify(core, 0, false); /* boot announcement */
}

uint32_t core_photo_eye(core_t *core, uint32_t latched_ms, uint32_t latched_encoder)
{
    uint32_t part_id = core->next_part_id++;
    core->counters.parts++;
    const gate_config_t *cfg = &core->config;
    uint32_t trigger = position(cfg->mode, latched_ms, latched_encoder);
    pending_part_t candidate;
    memset(&candidate, 0, sizeof candidate);
    candidate.part_id = part_id;
    candidate.mode = cfg->mode;
    candidate.decide_at = trigger + cfg->gate_offset - cfg->decision_lead;
    candidate.fire_at = trigger + cfg->gate_offset;
    candidate.verdict = -1;
    if (core->fault == FAULT_HEARTBEAT_LOST)
        decide(&candidate, true, REASON_LINK_LOST);
    bool fifo_full = core->fifo_count >= FIFO_SIZE;
    if (!fifo_full)
        *fifo_push(core) = candidate;
    uint8_t p[PAYLOAD_PART], *w = p;
    w = put32(w, part_id);
    w = put32(w, latched_encoder);
    put32(w, millis_since_boot(core, latched_ms));
    queue_event(core, MSG_PART, p, sizeof p);
    if (fifo_full) {
        /* No room to track it to the gate: the gate opens now and stays open for a
         * pulse, the alarm latches, and the part is reported as fail-safe. */
        latch_fault(core, FAULT_FIFO_OVERFLOW, part_id);
        start_pulse(core, latched_ms, core->config.servo_reject_us);
        core->counters.fired++;
        core->counters.failsafe++;
        queue_gate(core, part_id, true, REASON_FIFO_FULL, latched_ms);
    }
    return part_id;
}

static uint8_t handle_verdict(core_t *core, const uint8_t *p)
{
    uint32_t part_id = get32(p + AT_VERDICT_PART_ID);
    uint8_t verdict = p[AT_VERDICT_VERDICT];
    if (verdict > 1)
        return ERR_BAD_VALUE;
    for (uint8_t i = 0; i < core->fifo_count; i++) {
        pending_part_t *part = fifo_at(core, i);
        if (part->part_id == part_id) {
            if (part->decided)
                return ERR_LATE;
            if (part->verdict < 0)
                part->verdict = (int8_t)verdict;
            return ERR_OK;
        }
    }
    if (part_id > 0 && part_id < core->next_part_id)
        return ERR_LATE;
    return ERR_UNKNOWN_PART;
}

static uint8_t handle_configure(core_t *core, const uint8_t *p)
{
    gate_config_t c;
    c.mode = p[AT_CONFIGURE_MODE];
    c.gate_offset = get32(p + AT_CONFIGURE_GATE_OFFSET);
    c.decision_lead = get16(p + AT_CONFIGURE_DECISION_LEAD);
    c.servo_rest_us = get16(p + AT_CONFIGURE_SERVO_REST_US);
    c.servo_reject_us = get16(p + AT_CONFIGURE_SERVO_REJECT_US);
    c.reject_pulse_ms = get16(p + AT_CONFIGURE_REJECT_PULSE_MS);
    c.heartbeat_timeout_ms = get16(p + AT_CONFIGURE_HEARTBEAT_TIMEOUT_MS);
    c.calibration_crc = get32(p + AT_CONFIGURE_CALIBRATION_CRC);
    if (!config_is_safe(&c))
        return ERR_BAD_VALUE;
    core->config = c;
    core->configured = true;
    if (!core->servo_out)
        core->hal.servo_us(c.servo_rest_us);
    core->hal.save_config(&c);
    return ERR_OK;
}

static uint8_t execute(core_t *core, uint8_t type, const uint8_t *p, uint32_t now_ms)
{
    switch (type) {
    case MSG_CONFIGURE:
        return handle_configure(core, p);
    case MSG_VERDICT:
        return handle_verdict(core, p);
    case MSG_RESET_FAULT:
        core->fault = FAULT_NONE;
        core->hal.fault_output(false);
        return ERR_OK;
    case MSG_VISION_REJECT: {
        if (!core->configured)
            return ERR_NOT_CONFIGURED;
        if (core->fifo_count >= FIFO_SIZE)
            return ERR_BUSY;
        pending_part_t *part = fifo_push(core);
        part->part_id = get32(p + AT_VISION_REJECT_PART_ID) | VISION_ID_BIT;
        part->mode = MODE_MILLISECONDS;
        part->decide_at = part->fire_at = now_ms + get16(p + AT_VISION_REJECT_DELAY_MS);
        decide(part, true, REASON_VISION);
        return ERR_OK;
    }
    case MSG_TEST_FIRE: {
        if (!core->configured)
            return ERR_NOT_CONFIGURED;
        if (core->fault)
            return ERR_FAULTED;
        uint8_t count = p[AT_TEST_FIRE_COUNT];
        uint16_t width = get16(p + AT_TEST_FIRE_PULSE_US);
        if (!within(count, TEST_FIRE_COUNT_MIN, TEST_FIRE_COUNT_MAX)
            || (width && !within(width, SERVO_US_MIN, SERVO_US_MAX)))
            return ERR_BAD_VALUE;
        core->test_fires_left = count;
        core->test_fire_width = width ? width : core->config.servo_reject_us;
        core->next_test_fire_at = now_ms;
        return ERR_OK;
    }
    default:
        return ERR_UNKNOWN_TYPE;
    }
}

static void send_status(core_t *core, uint8_t seq, uint32_t now_ms, uint32_t encoder)
{
    uint8_t p[PAYLOAD_STATUS], *w = p;
    *w++ = seq;
    w = put32(w, millis_since_boot(core, now_ms));
    w = put32(w, encoder);
    w = put32(w, core->counters.parts);
    w = put32(w, core->counters.fired);
    w = put32(w, core->counters.passed);
    w = put32(w, core->counters.failsafe);
    w = put16(w, core->counters.frame_errors);
    *w++ = core->fifo_count;
    *w++ = core->fault;
    reply(core, MSG_STATUS, p, sizeof p);
}

static void handle_frame(core_t *core, uint8_t seq, uint8_t type, const uint8_t *p, uint32_t now_ms)
{
    if (type == MSG_ACK_EVENT) {
        if (core->events_count && core->events[core->events_head].seq == p[AT_ACK_EVENT_ACKED_SEQ]) {
            core->events_head = (uint8_t)((core->events_head + 1) % EVENT_QUEUE_SIZE);
            core->events_count--;
        }
        return;
    }
    if (type == MSG_HOST_HEARTBEAT || type >= 0x80)
        return;
    if (type == MSG_HELLO) {
        core->host_present = true; /* queued events now reach the new session */
        core->last_host_seq = seq;
        send_identify(core, seq, true);
        if (core->pending_fault_report) {
            latch_fault(core, core->pending_fault_report, core->pending_fault_detail);
            core->pending_fault_report = FAULT_NONE;
        }
        return;
    }
    if (seq == core->last_host_seq) { /* a retransmission: answer again, act once */
        core->hal.write(core->last_reply, core->last_reply_len);
        return;
    }
    core->last_host_seq = seq;
    if (type == MSG_GET_STATUS)
        send_status(core, seq, now_ms, core->encoder);
    else
        send_ack(core, seq, execute(core, type, p, now_ms));
}

static void frame_complete(core_t *core, uint32_t now_ms)
{
    uint8_t seq, type, payload[MAX_PAYLOAD], len;
    uint8_t status = frame_decode(core->rx, core->rx_len, &seq, &type, payload, &len);
    if (status != FRAME_OK) {
        if (core->counters.frame_errors < 0xFFFF)
            core->counters.frame_errors++;
        /* Not through reply(): the cached answer to the last good command must
         * survive, or its retransmission would get this error under the wrong seq. */
        uint8_t error[PAYLOAD_ACK] = {seq, status == FRAME_UNKNOWN_TYPE ? ERR_UNKNOWN_TYPE : ERR_BAD_LENGTH};
        if (status == FRAME_UNKNOWN_TYPE || status == FRAME_BAD_LENGTH)
            send_now(core, MSG_ACK, error, sizeof error);
        return;
    }
    core->last_heard = now_ms;
    handle_frame(core, seq, type, payload, now_ms);
}

void core_receive(core_t *core, uint8_t byte, uint32_t now_ms)
{
    if (byte == 0) {
        if (!core->rx_discarding && core->rx_len)
            frame_complete(core, now_ms);
        core->rx_discarding = false;
        core->rx_len = 0;
    } else if (core->rx_discarding) {
        return;
    } else if (core->rx_len >= MAX_WIRE - 1) {
        if (core->counters.frame_errors < 0xFFFF)
            core->counters.frame_errors++; /* oversized */
        core->rx_len = 0;
        core->rx_discarding = true;
    } else {
        core->rx[core->rx_len++] = byte;
    }
}

/* ------------------------------------------------------------ time-driven */

static void start_pulse(core_t *core, uint32_t now_ms, uint16_t width_us)
{
    core->servo_until = now_ms + core->config.reject_pulse_ms;
    core->servo_out = true;
    core->hal.servo_us(width_us);
}

static void check_heartbeat(core_t *core, uint32_t now_ms)
{
    if (!core->host_present || core->fault == FAULT_HEARTBEAT_LOST)
        return;
    uint32_t silent = now_ms - core->last_heard;
    if (silent <= core->config.heartbeat_timeout_ms)
        return;
    latch_fault(core, FAULT_HEARTBEAT_LOST, silent);
    for (uint8_t i = 0; i < core->fifo_count; i++) {
        pending_part_t *part = fifo_at(core, i);
        if (!part->fire)
            decide(part, true, REASON_LINK_LOST);
    }
}

static void run_gate(core_t *core, uint32_t now_ms, uint32_t encoder)
{
    for (uint8_t i = 0; i < core->fifo_count; i++) {
        pending_part_t *part = fifo_at(core, i);
        if (!part->decided && reached(position(part->mode, now_ms, encoder), part->decide_at)) {
            if (part->verdict < 0)
                decide(part, true, REASON_NO_VERDICT);
            else
                decide(part, part->verdict == 1, REASON_VERDICT);
        }
    }
    /* Fire in the order parts fall due, not the order they came in: a VISION_REJECT
     * re-arming a forgotten part can be due before a photo-eye part queued earlier. */
    uint8_t i = 0;
    while (i < core->fifo_count) {
        pending_part_t *part = fifo_at(core, i);
        if (!reached(position(part->mode, now_ms, encoder), part->fire_at)) {
            i++;
            continue;
        }
        if (part->fire) {
            start_pulse(core, now_ms, core->config.servo_reject_us);
            core->counters.fired++;
            if (part->reason != REASON_VERDICT)
                core->counters.failsafe++;
        } else {
            core->counters.passed++;
        }
        uint32_t part_id = part->part_id;
        bool fired = part->fire;
        uint8_t reason = part->reason;
        fifo_remove(core, i);
        queue_gate(core, part_id, fired, reason, now_ms);
    }
}

static void run_servo(core_t *core, uint32_t now_ms)
{
    if (core->test_fires_left && !core->servo_out && reached(now_ms, core->next_test_fire_at)) {
        core->test_fires_left--;
        core->next_test_fire_at = now_ms + 2UL * core->config.reject_pulse_ms;
        start_pulse(core, now_ms, core->test_fire_width);
        queue_gate(core, 0, true, REASON_TEST, now_ms);
    }
    if (core->servo_out && reached(now_ms, core->servo_until)) {
        core->servo_out = false;
        core->hal.servo_us(core->config.servo_rest_us);
    }
}

static void run_events(core_t *core, uint32_t now_ms)
{
    if (!core->events_count || !core->host_present)
        return;
    queued_event_t *head = &core->events[core->events_head];
    if (!head->sent || now_ms - head->sent_at >= RETRANSMIT_MS) {
        head->sent = true;
        head->sent_at = now_ms;
        core->hal.write(head->wire, head->len);
    }
}

void core_photo_eye_lost(core_t *core, uint8_t count, uint32_t now_ms)
{
    (void)now_ms;
    latch_fault(core, FAULT_PHOTO_EYE_OVERFLOW, count);
}

bool core_gate_time_ms(const core_t *core, uint32_t latched_ms, uint32_t *due_ms)
{
    if (core->config.mode != MODE_MILLISECONDS)
        return false;
    *due_ms = latched_ms + core->config.gate_offset;
    return true;
}

void core_tick(core_t *core, uint32_t now_ms, uint32_t encoder)
{
    core->encoder = encoder;
    check_heartbeat(core, now_ms);
    run_gate(core, now_ms, encoder);
    run_servo(core, now_ms);
    run_events(core, now_ms);
    if (now_ms - core->last_heartbeat_out >= HEARTBEAT_PERIOD_MS) {
        core->last_heartbeat_out = now_ms;
        uint8_t p[PAYLOAD_MEGA_HEARTBEAT], *w = p;
        w = put32(w, millis_since_boot(core, now_ms));
        *w++ = core->fault;
        *w++ = core->fifo_count;
        send_now(core, MSG_MEGA_HEARTBEAT, p, sizeof p);
    }
}

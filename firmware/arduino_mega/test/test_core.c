/* Host unit tests of station_core.c: the shared vectors, and the gate rules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "station_core.h"
#include "vectors.h"

static int failures, checks;
#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        checks++;                                                            \
        if (!(cond)) {                                                       \
            failures++;                                                      \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                      \
            printf(__VA_ARGS__);                                             \
            printf("\n");                                                    \
        }                                                                    \
    } while (0)

/* ---- a fake board that records what the core did ---- */
static uint8_t out[8192];
static size_t out_len;
static uint16_t servo_now;
static int servo_changes;
static int fault_on;
static void fake_write(const uint8_t *b, uint8_t n) { memcpy(out + out_len, b, n); out_len += n; }
static void fake_servo(uint16_t us) { if (us != servo_now) servo_changes++; servo_now = us; }
static void fake_fault(bool on) { fault_on = on; }
static void fake_save(const gate_config_t *c) { (void)c; }
static const core_hal_t HAL = {fake_write, fake_servo, fake_fault, fake_save};

static void send(core_t *core, uint8_t seq, uint8_t type, const uint8_t *p, uint8_t n, uint32_t t)
{
    uint8_t wire[MAX_WIRE];
    uint8_t len = frame_encode(seq, type, p, n, wire);
    for (uint8_t i = 0; i < len; i++)
        core_receive(core, wire[i], t);
}

/* Count GATE frames in the output with the given action/reason (decoding every frame). */
static int count_gates(uint8_t action, uint8_t reason)
{
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; i < out_len; i++) {
        if (out[i] != 0)
            continue;
        uint8_t seq, type, p[MAX_PAYLOAD], len;
        if (frame_decode(out + start, (uint8_t)(i - start), &seq, &type, p, &len) == FRAME_OK &&
            type == MSG_GATE && p[4] == action && p[5] == reason)
            n++;
        start = i + 1;
    }
    return n;
}

static void test_vectors(void)
{
    for (size_t i = 0; i < sizeof VALID / sizeof VALID[0]; i++) {
        const valid_vector_t *v = &VALID[i];
        uint8_t seq, type, p[MAX_PAYLOAD], len, wire[MAX_WIRE];
        uint8_t st = frame_decode(v->wire, (uint8_t)(v->len - 1), &seq, &type, p, &len);
        CHECK(st == FRAME_OK, "%s: status %d", v->name, st);
        CHECK(seq == v->seq && type == v->type, "%s: seq/type", v->name);
        uint8_t n = frame_encode(seq, type, p, len, wire);
        CHECK(n == v->len && memcmp(wire, v->wire, n) == 0, "%s: re-encoding differs", v->name);
    }
    for (size_t i = 0; i < sizeof CORRUPT / sizeof CORRUPT[0]; i++) {
        const corrupt_vector_t *v = &CORRUPT[i];
        uint8_t seq = 0, type, p[MAX_PAYLOAD], len;
        uint8_t st = frame_decode(v->wire, (uint8_t)(v->len - 1), &seq, &type, p, &len);
        CHECK(st == v->error, "%s: status %d, expected %d", v->name, st, v->error);
        if (v->seq >= 0)
            CHECK(seq == v->seq, "%s: seq %d", v->name, seq);
    }
    CHECK(crc16_ccitt_false((const uint8_t *)"123456789", 9) == 0x29B1, "CRC check value");
}

/* The byte-at-a-time CRC against its definition (shift a bit at a time), everywhere. */
static void test_crc_update_equals_bitwise_definition(void)
{
    uint32_t differ = 0;
    for (uint32_t crc = 0; crc <= 0xFFFF; crc++)
        for (uint32_t byte = 0; byte <= 0xFF; byte++) {
            uint16_t bitwise = (uint16_t)(crc ^ (byte << 8));
            for (int bit = 0; bit < 8; bit++)
                bitwise = (bitwise & 0x8000) ? (uint16_t)((bitwise << 1) ^ 0x1021)
                                             : (uint16_t)(bitwise << 1);
            if (crc16_ccitt_false_update((uint16_t)crc, (uint8_t)byte) != bitwise)
                differ++;
        }
    CHECK(differ == 0, "byte-wise CRC differs from the bitwise one for %lu (crc, byte) pairs",
          (unsigned long)differ);
}

static void configure(core_t *core, uint32_t t)
{
    uint8_t hello = 1;
    send(core, 1, MSG_HELLO, &hello, 1, t);
    /* ms mode, offset 300, lead 50, rest 1000, reject 2000, pulse 80, hb 500, crc 7 */
    uint8_t c[19] = {1, 0x2c, 0x01, 0, 0, 50, 0, 0xe8, 0x03, 0xd0, 0x07, 80, 0, 0xf4, 0x01, 7, 0, 0, 0};
    send(core, 2, MSG_CONFIGURE, c, sizeof c, t);
}

static void verdict(core_t *core, uint8_t seq, uint32_t part, uint8_t v, uint32_t t)
{
    uint8_t p[5] = {(uint8_t)part, (uint8_t)(part >> 8), (uint8_t)(part >> 16), (uint8_t)(part >> 24), v};
    send(core, seq, MSG_VERDICT, p, 5, t);
}

/* Acknowledge every reliable event written since the last call, as a host does. */
static size_t acked_upto;
static void ack_events(core_t *core, uint32_t t)
{
    size_t start = acked_upto;
    size_t end = out_len;
    for (size_t i = start; i < end; i++) {
        if (out[i] != 0)
            continue;
        uint8_t seq, type, p[MAX_PAYLOAD], len;
        if (frame_decode(out + start, (uint8_t)(i - start), &seq, &type, p, &len) == FRAME_OK &&
            type >= MSG_PART && type != MSG_MEGA_HEARTBEAT)
            send(core, 0, MSG_ACK_EVENT, &seq, 1, t);
        start = i + 1;
    }
    acked_upto = start;
}

static void run(core_t *core, uint32_t from, uint32_t to, bool host_alive)
{
    for (uint32_t t = from; t <= to; t++) {
        if (host_alive && t % 100 == 0) { /* the host's heartbeat */
            uint8_t hb[4] = {0};
            send(core, 0, MSG_HOST_HEARTBEAT, hb, 4, t);
        }
        core_tick(core, t, 0);
        if (host_alive)
            ack_events(core, t);
    }
}

static void test_gate_rules(void)
{
    core_t core;
    out_len = 0;
    servo_changes = 0;
    acked_upto = 0;
    core_init(&core, &HAL, 0, RESET_EXTERNAL, NULL);
    configure(&core, 1);
    CHECK(core.configured && core.config.gate_offset == 300, "configure applied");
    uint32_t reject = core_photo_eye(&core, 10, 0);
    uint32_t pass = core_photo_eye(&core, 20, 0);
    uint32_t silent = core_photo_eye(&core, 30, 0);
    verdict(&core, 3, reject, 1, 40);
    verdict(&core, 4, pass, 0, 41);
    verdict(&core, 5, reject, 0, 42); /* a second verdict for a part is ignored */
    verdict(&core, 5, reject, 0, 43); /* and a retransmission acts once */
    run(&core, 44, 600, true);
    CHECK(count_gates(1, REASON_VERDICT) == 1, "reject fired once");
    CHECK(count_gates(0, REASON_VERDICT) == 1, "pass passed");
    CHECK(count_gates(1, REASON_NO_VERDICT) == 1, "no verdict -> fail-safe reject");
    CHECK(core.counters.fired == 2 && core.counters.passed == 1 && core.counters.failsafe == 1,
          "counters fired %lu passed %lu failsafe %lu", (unsigned long)core.counters.fired,
          (unsigned long)core.counters.passed, (unsigned long)core.counters.failsafe);
    CHECK(servo_now == 1000, "servo back at rest");
    (void)silent;

    /* heartbeat loss: pending and new parts are rejected, the fault output goes on.
     * A 1200 ms gate keeps the part upstream until the 500 ms silence is noticed. */
    uint8_t slow[19] = {1, 0xb0, 0x04, 0, 0, 100, 0, 0xe8, 0x03, 0xd0, 0x07, 80, 0, 0xf4, 0x01, 7, 0, 0, 0};
    send(&core, 9, MSG_CONFIGURE, slow, sizeof slow, 690);
    CHECK(core.config.gate_offset == 1200, "reconfigured");
    uint32_t pending = core_photo_eye(&core, 700, 0);
    verdict(&core, 6, pending, 0, 701); /* a pass must not survive link loss */
    run(&core, 702, 1299, false); /* the host goes quiet */
    CHECK(core.fault == FAULT_HEARTBEAT_LOST && fault_on, "heartbeat loss latched");
    core_photo_eye(&core, 1300, 0);
    run(&core, 1300, 3000, true); /* back: queued events flow, the fault stays latched */
    CHECK(count_gates(1, REASON_LINK_LOST) == 2, "pending and new part rejected on link loss");
    CHECK(core.fault == FAULT_HEARTBEAT_LOST, "fault stays latched until RESET_FAULT");
}

static void test_unsafe_configure_is_refused(void)
{
    core_t core;
    out_len = 0;
    core_init(&core, &HAL, 0, RESET_POWER_ON, NULL);
    uint8_t c[19] = {1, 0x2c, 0x01, 0, 0, 50, 0, 0xe8, 0x03, 0xd0, 0x07, 0x88, 0x13, 0xf4, 0x01, 7, 0, 0, 0};
    send(&core, 2, MSG_CONFIGURE, c, sizeof c, 1); /* reject_pulse_ms 5000 */
    CHECK(!core.configured, "unsafe configuration refused");
}

static void test_random_bytes_never_fire(void)
{
    core_t core;
    srand(1);
    int frames = 0;
    for (int round = 0; round < 2000; round++) {
        out_len = 0;
        servo_changes = 0;
        core_init(&core, &HAL, 0, RESET_POWER_ON, NULL);
        servo_changes = 0;
        for (int i = 0; i < 200; i++)
            core_receive(&core, (uint8_t)(rand() % 4 == 0 ? 0 : rand()), 1);
        frames++;
        for (uint32_t t = 1; t < 400; t += 7)
            core_tick(&core, t, 0);
        CHECK(servo_changes == 0, "random bytes moved the servo (round %d)", round);
    }
    printf("fuzz: %d random streams of 200 bytes, no actuation\n", frames);
}

int main(void)
{
    test_vectors();
    test_crc_update_equals_bitwise_definition();
    test_gate_rules();
    test_unsafe_configure_is_refused();
    test_random_bytes_never_fire();
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}

/*
 * What the Python tests need to drive station_core.c in-process (ctypes) and
 * compare it with its Python twin: the size of core_t, and its state as flat
 * numbers. Host builds only; never linked into the sketch.
 */
#include <stddef.h>

#include "station_core.h"

size_t shim_core_size(void) { return sizeof(core_t); }

/* fault, fifo_count, servo_out, configured, events_count, events_dropped, parts, fired,
 * passed, failsafe, frame_errors, test_fires_left, next_part_id */
#define SHIM_STATE_LEN 13

unsigned shim_state_len(void) { return SHIM_STATE_LEN; }

void shim_state(const core_t *core, uint32_t *out)
{
    const uint32_t state[SHIM_STATE_LEN] = {
        core->fault, core->fifo_count, core->servo_out, core->configured, core->events_count,
        core->events_dropped, core->counters.parts, core->counters.fired, core->counters.passed,
        core->counters.failsafe, core->counters.frame_errors, core->test_fires_left,
        core->next_part_id,
    };
    for (unsigned i = 0; i < SHIM_STATE_LEN; i++)
        out[i] = state[i];
}

/* The configuration in force (CONFIGURE, EEPROM or the safe defaults). */
void shim_config(const core_t *core, gate_config_t *out) { *out = core->config; }

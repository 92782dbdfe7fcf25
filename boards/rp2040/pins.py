# Default pin map of the Raspberry Pi Pico (RP2040), one connector.
# Overridable key by key with the config key "pins" (boards/README.md has the
# table and the wiring assumptions). Functions, not module dicts, so every
# caller gets its own copy and nothing mutable lives at module level.
#
#   GP15  cp_pwm     pilot PWM to the +-12 V stage (high = +12 V), PWM7 B
#   GP26  cp_adc     pilot feedback (ADC0)
#   GP27  pp_adc     proximity pilot (ADC1), 1 k pull-up to 3V3
#   GP28  ntc_adc    enclosure NTC 10 k B3950, 10 k from 3V3 (ADC2)
#   GP14  relay      contactor coil driver, high = on
#   GP13  aux        contactor mirror contact to GND (closed = low)
#   GP12  rcd        residual current monitor trip output, low = tripped
#   GP11  rcd_reset  residual current monitor test/reset, high pulse
#   GP10  ground     PE monitor output, high = earth present
#   GP9   lock       connector lock driver, high = locked
#   GP8   lock_fb    lock feedback switch to GND (locked = low)
#   ct_adc: none. The Pico brings out three ADC inputs (GP29 reads VSYS/3),
#   all taken above, so the default meter reports failure and the firmware
#   will not charge (PowerMeterFailure). With a tethered cable set
#   "cable_a" and {"pp_adc": null, "ct_adc": 27} to meter instead.


def defaults():
    return {
        "cp_pwm": [15], "cp_adc": [26], "pp_adc": [27], "relay": [14], "aux": [13],
        "rcd": [12], "rcd_reset": [11], "ground": [10], "ct_adc": [None],
        "lock": [9], "lock_fb": [8],
        "ntc_adc": 28, "boot_skip": None, "demo_pin": None,
        "demo": False, "cp_invert": False,
        "relay_on": 1, "aux_closed": 0, "rcd_trip": 0, "rcd_reset_on": 1, "ground_ok": 1,
        "lock_on": 1, "lock_closed": 0,
        "rcd_pulse_ms": 100,
        # The Pico's ADC reference is its filtered 3V3 rail.
        "vref_mv": 3300, "adc_mv": 3300,
        # Pilot -12..+12 V -> 0.213..3.141 V: gain 8.197, offset 13.75 V.
        "cp_r1": 100000, "cp_r2": 33000, "cp_r3": 24000,
        "pp_pullup": 1000,
        "ntc_series": 10000, "ntc_r0": 10000, "ntc_t0": 25, "ntc_beta": 3950,
        # SCT-013-000 (2000 turns) into 22 ohm: 96 A RMS fits around 1.65 V.
        "ct_turns": 2000, "ct_burden": 22, "ct_floor_ma": 300,
        "cp_periods": 2, "cp_bursts": 5,
    }


def pwm_group(pin):
    # GPn and GPn+16 drive the same PWM slice channel: slice (n >> 1) & 7,
    # channel n & 1. Two pilots there would be one signal.
    return ((pin >> 1) & 7) * 2 + (pin & 1)


def caps():
    return {
        "board": "Raspberry Pi Pico",
        "out": tuple(range(0, 23)) + (26, 27, 28),
        "in": tuple(range(0, 23)) + (26, 27, 28),
        "adc": (26, 27, 28),
        "notes": (
            (23, "SMPS power-save control on the Pico"), (24, "VBUS sense on the Pico"),
            (25, "on-board LED on the Pico"), (29, "reads VSYS/3 on the Pico"),
        ),
        "pwm_group": pwm_group,
        "pwm_note": "GPn and GPn+16 are the same RP2040 PWM slice channel",
    }

# Default pin map of the ESP32 DevKitC (ESP32-WROOM-32), one connector.
# Overridable key by key with the config key "pins" (boards/README.md has the
# table and the wiring assumptions). Functions, not module dicts, so every
# caller gets its own copy and nothing mutable lives at module level.
#
#   GPIO25  cp_pwm     pilot PWM to the +-12 V stage (high = +12 V)
#   GPIO36  cp_adc     pilot feedback (SENSOR_VP, ADC1_CH0)
#   GPIO39  pp_adc     proximity pilot (SENSOR_VN, ADC1_CH3), 1 k pull-up to 3V3
#   GPIO34  ct_adc     current transformer (ADC1_CH6), 15 ohm burden on a bias
#   GPIO35  ntc_adc    enclosure NTC 10 k B3950, 10 k from 3V3 (ADC1_CH7)
#   GPIO26  relay      contactor coil driver, high = on
#   GPIO27  aux        contactor mirror contact to GND (closed = low)
#   GPIO33  rcd        residual current monitor trip output, low = tripped
#   GPIO32  rcd_reset  residual current monitor test/reset, high pulse
#   GPIO13  ground     PE monitor output, high = earth present
#   GPIO4   lock       connector lock driver, high = locked
#   GPIO18  lock_fb    lock feedback switch to GND (locked = low)
#   GPIO0   boot_skip  the DevKitC's BOOT button (press within 1 s of reset)
#
# Only ADC1 (GPIO32-39) is usable: ADC2 stops working while WiFi is on.


def defaults():
    return {
        "cp_pwm": [25], "cp_adc": [36], "pp_adc": [39], "relay": [26], "aux": [27],
        "rcd": [33], "rcd_reset": [32], "ground": [13], "ct_adc": [34],
        "lock": [4], "lock_fb": [18],
        "ntc_adc": 35, "boot_skip": 0, "demo_pin": None,
        "demo": False, "cp_invert": False,
        "relay_on": 1, "aux_closed": 0, "rcd_trip": 0, "rcd_reset_on": 1, "ground_ok": 1,
        "lock_on": 1, "lock_closed": 0,
        "rcd_pulse_ms": 100,
        # read_uv() is calibrated, so adc_mv is unused on the ESP32; vref_mv is
        # the 3V3 rail that R3, the PP pull-up and the NTC divider hang from.
        "vref_mv": 3300, "adc_mv": 3300,
        # Pilot -12..+12 V -> 0.375..2.375 V, inside the 150..2450 mV range of
        # the 11 dB attenuator: gain 1 + R1/R2 + R1/R3 = 12, offset 16.5 V.
        "cp_r1": 120000, "cp_r2": 20000, "cp_r3": 24000,
        "pp_pullup": 1000,
        "ntc_series": 10000, "ntc_r0": 10000, "ntc_t0": 25, "ntc_beta": 3950,
        # SCT-013-000 (100 A : 50 mA = 2000 turns) into 15 ohm: 76 A RMS
        # still fits the ADC's linear range around a ~1.25 V bias.
        "ct_turns": 2000, "ct_burden": 15, "ct_floor_ma": 300,
        "cp_periods": 2, "cp_bursts": 5,
    }


def caps():
    # Which GPIOs may do what on the DevKitC, and why the others may not.
    return {
        "board": "ESP32 DevKitC",
        # Quiet at boot (no strapping role, no boot-time PWM or log output).
        "out": (4, 13, 16, 17, 18, 19, 21, 22, 23, 25, 26, 27, 32, 33),
        # Inputs need internal pulls, which GPIO34-39 do not have.
        "in": (0, 4, 13, 14, 16, 17, 18, 19, 21, 22, 23, 25, 26, 27, 32, 33),
        "adc": (32, 33, 34, 35, 36, 39),
        "notes": (
            (0, "BOOT button, strapping pin"), (1, "UART0 TX, the REPL"), (2, "strapping pin"),
            (3, "UART0 RX, the REPL"), (4, "ADC2, unusable while WiFi is on"),
            (5, "strapping pin, PWM during boot"),
            (6, "SPI flash"), (7, "SPI flash"), (8, "SPI flash"), (9, "SPI flash"),
            (10, "SPI flash"), (11, "SPI flash"),
            (12, "strapping pin (flash voltage): high at reset stops the boot"),
            (13, "ADC2, unusable while WiFi is on"), (14, "PWM during boot; ADC2"),
            (15, "strapping pin, boot log output; ADC2"),
            (25, "ADC2, unusable while WiFi is on"), (26, "ADC2, unusable while WiFi is on"),
            (27, "ADC2, unusable while WiFi is on"),
            (34, "input only, no pull resistors"), (35, "input only, no pull resistors"),
            (36, "input only, no pull resistors"), (37, "not on the WROOM module"),
            (38, "not on the WROOM module"), (39, "input only, no pull resistors"),
        ),
        "pwm_group": None,  # every PWM gets its own LEDC channel
    }

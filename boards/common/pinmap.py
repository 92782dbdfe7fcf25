# Pin map: a board's wiring and analog front-end constants in one dict.
#
# Defaults come from boards/<board>/pins.py; the config key "pins" overrides
# single keys. Everything is checked here, before any pin is touched, and each
# error names its key ("pins.relay[0]: GPIO 34 cannot be an output ..."), so a
# wrong override never drives a pin that is wired to something else. Pure
# Python (no machine): the host tests run it on the Unix port.
from micropython import const

CONN = const(0)  # a list with one pin per connector (a bare number = [number])
ONE = const(1)  # a single pin
BOOL = const(2)
LEVEL = const(3)  # 0 or 1: the input/output level that means "active"
INT = const(4)
NUM = const(5)

MAX_CONNECTORS = const(4)

# (key, kind, capability or range, required, help). Capabilities: "out",
# "in" (digital input with internal pulls), "adc".
SPEC = (
    ("cp_pwm", CONN, "out", True, "control pilot PWM output (1 kHz, to the +-12 V stage)"),
    ("cp_adc", CONN, "adc", True, "control pilot feedback through the R1/R2/R3 network"),
    ("pp_adc", CONN, "adc", False, "proximity pilot, pp_pullup to vref_mv (null: tethered cable)"),
    ("relay", CONN, "out", True, "contactor coil driver"),
    ("aux", CONN, "in", False, "contactor aux (mirror) contact (null: none, no weld detection)"),
    ("rcd", CONN, "in", False, "residual current monitor trip output (null: none fitted)"),
    ("rcd_reset", CONN, "out", False, "residual current monitor test/reset input"),
    ("ground", CONN, "in", False, "protective earth monitor output (null: assume present)"),
    ("ct_adc", CONN, "adc", False, "current transformer on a vref/2 bias (null: no meter)"),
    ("lock", CONN, "out", False, "connector lock actuator, level-driven (null: none fitted)"),
    ("lock_fb", CONN, "in", False, "connector lock feedback switch (null: assume it follows)"),
    ("ntc_adc", ONE, "adc", True, "enclosure NTC, ntc_series from vref_mv"),
    ("boot_skip", ONE, "in", False, "low in the first second after reset: skip the firmware"),
    ("demo_pin", ONE, "in", False, "jumper to GND: bench demo mode"),
    ("demo", BOOL, None, True, "bench demo mode: simulated plant instead of the hardware"),
    ("cp_invert", BOOL, None, True, "the pilot stage inverts (PWM pin high = -12 V)"),
    ("relay_on", LEVEL, None, True, "relay output level that energises the coil"),
    ("aux_closed", LEVEL, None, True, "aux input level when the contacts are closed"),
    ("rcd_trip", LEVEL, None, True, "rcd input level when tripped"),
    ("rcd_reset_on", LEVEL, None, True, "rcd_reset output level during the reset pulse"),
    ("ground_ok", LEVEL, None, True, "ground input level when PE is present"),
    ("lock_on", LEVEL, None, True, "lock output level that locks"),
    ("lock_closed", LEVEL, None, True, "lock_fb input level when locked"),
    ("rcd_pulse_ms", INT, (10, 2000), True, "length of the RCD reset pulse (ms)"),
    ("vref_mv", INT, (1000, 5000), True, "rail of R3, the PP pull-up and the NTC series resistor (mV)"),
    ("adc_mv", INT, (1000, 5000), True, "ADC input at read_u16() = 65535 (mV; RP2040)"),
    ("cp_r1", NUM, (1000, 10000000), True, "pilot line to ADC node (ohm)"),
    ("cp_r2", NUM, (1000, 10000000), True, "ADC node to GND (ohm)"),
    ("cp_r3", NUM, (1000, 10000000), True, "ADC node to vref_mv (ohm)"),
    ("pp_pullup", NUM, (100, 100000), True, "PP pull-up to vref_mv (ohm)"),
    ("ntc_series", NUM, (100, 1000000), True, "NTC series resistor (ohm)"),
    ("ntc_r0", NUM, (100, 1000000), True, "NTC resistance at ntc_t0 (ohm)"),
    ("ntc_t0", NUM, (-50, 150), True, "NTC reference temperature (C)"),
    ("ntc_beta", NUM, (1000, 10000), True, "NTC Beta (K)"),
    ("ct_turns", NUM, (1, 100000), True, "CT turns ratio (primary A per secondary A)"),
    ("ct_burden", NUM, (0.1, 100000), True, "CT burden resistor (ohm)"),
    ("ct_floor_ma", INT, (0, 5000), True, "CT readings below this are noise: 0 (mA)"),
    ("cp_periods", INT, (1, 10), True, "PWM periods sampled per pilot burst"),
    ("cp_bursts", INT, (1, 16), True, "pilot bursts averaged (cp_periods * cp_bursts ~ 10)"),
)

_CAP_NAMES = (("out", "an output"), ("in", "a digital input"), ("adc", "an ADC input"))


class PinError(Exception):
    pass


def ranges(pins):
    # (0, 1, 2, 5, 7, 8) -> "0-2, 5, 7-8": readable lists of usable pins.
    out = []
    start = prev = None
    for p in sorted(pins):
        if start is None:
            start = prev = p
        elif p == prev + 1:
            prev = p
        else:
            out.append(str(start) if start == prev else "%d-%d" % (start, prev))
            start = prev = p
    if start is not None:
        out.append(str(start) if start == prev else "%d-%d" % (start, prev))
    return ", ".join(out)


def _isint(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _note(caps, pin):
    for p, why in caps.get("notes", ()):
        if p == pin:
            return why
    return None


def _check_pin(label, pin, cap, caps, errors):
    if not _isint(pin):
        errors.append("%s: must be a GPIO number or null, got %r" % (label, pin))
        return False
    if pin in caps[cap]:
        return True
    why = _note(caps, pin)
    errors.append("%s: GPIO %d cannot be %s on %s%s (%s: %s)" % (
        label, pin, [n for c, n in _CAP_NAMES if c == cap][0], caps["board"], (": " + why) if why else "",
        cap, ranges(caps[cap])))
    return False


def validate(defaults, overrides, caps):
    # -> (pin map, [error lines]). The map has every key; per-connector keys
    # are lists of equal length (the number of connectors). Any error means
    # the map must not drive hardware.
    errors = []
    m = dict(defaults)
    known = [s[0] for s in SPEC]
    for k in known:
        if k not in m:
            errors.append("pins.%s: missing from the board's defaults" % k)
            m[k] = None
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict):
        errors.append("pins: must be an object, got %r" % (overrides,))
        overrides = {}
    for k in overrides:
        if k in known:
            m[k] = overrides[k]
        else:
            errors.append("pins.%s: unknown key (the keys are in boards/README.md)" % k)
    # The pilot outputs say how many connectors the board has.
    n = m["cp_pwm"]
    n = len(n) if isinstance(n, list) else (1 if _isint(n) else 0)
    if not 1 <= n <= MAX_CONNECTORS:
        errors.append("pins.cp_pwm: need 1..%d pilot outputs, got %r" % (MAX_CONNECTORS, m["cp_pwm"]))
        n = 1
    used = {}
    for key, kind, arg, req, _ in SPEC:
        v = m[key]
        label = "pins." + key
        if kind == CONN:
            if not isinstance(v, list):
                v = [v] * n if v is None else [v]  # a bare value: one connector
            if isinstance(v, list) and v and all(p is None for p in v):
                v = [None] * n  # "none fitted" fits any number of connectors
            if not isinstance(v, list) or len(v) != n:
                errors.append("%s: must list %d pin(s), one per connector (as pins.cp_pwm), got %r"
                              % (label, n, m[key]))
                m[key] = [None] * n
                continue
            v = list(v)
            m[key] = v
            for i, p in enumerate(v):
                _pin(label + ("[%d]" % i), p, arg, req, caps, used, errors)
        elif kind == ONE:
            _pin(label, v, arg, req, caps, used, errors)
        elif kind == BOOL:
            if not isinstance(v, bool):
                errors.append("%s: must be true or false, got %r" % (label, v))
        elif kind == LEVEL:
            if v not in (0, 1) or isinstance(v, bool):
                errors.append("%s: must be 0 or 1, got %r" % (label, v))
        else:
            lo, hi = arg
            ok = _isint(v) if kind == INT else (isinstance(v, (int, float)) and not isinstance(v, bool))
            if not ok or not lo <= v <= hi:
                errors.append("%s: must be %s %s..%s, got %r" % (
                    label, "an integer" if kind == INT else "a number", lo, hi, v))
    group = caps.get("pwm_group")
    if group:
        seen = {}
        for i, p in enumerate(m["cp_pwm"]):
            if _isint(p) and p in caps["out"]:
                g = group(p)
                if g in seen:
                    errors.append("pins.cp_pwm[%d]: GPIO %d shares its PWM output with GPIO %d (%s)"
                                  % (i, p, seen[g], caps.get("pwm_note", "same PWM channel")))
                seen[g] = p
    return m, errors


def _pin(label, p, cap, req, caps, used, errors):
    if p is None:
        if req:
            errors.append("%s: required, got null" % label)
        return
    if not _check_pin(label, p, cap, caps, errors):
        return
    if p in used:
        errors.append("%s: GPIO %d is already %s" % (label, p, used[p]))
    else:
        used[p] = label


def check(defaults, overrides, caps):
    # validate() that raises PinError with every error line.
    m, errors = validate(defaults, overrides, caps)
    if errors:
        raise PinError("; ".join(errors))
    return m


def demo_requested(overrides):
    # Demo mode needs no pins, so it is read even when the pin map is bad.
    return isinstance(overrides, dict) and overrides.get("demo") is True


def describe(m):
    # Short text of the wiring for the boot log.
    parts = []
    for key, kind, _, _, _ in SPEC:
        v = m.get(key)
        if (kind == ONE and v is not None) or (kind == CONN and isinstance(v, list)
                                               and any(p is not None for p in v)):
            parts.append("%s=%s" % (key, v))
    return " ".join(parts)

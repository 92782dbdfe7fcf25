# IEC 61851-1 control pilot: level bands, filtering, diode check, duty <-> current.
from firmware.core.clock import ticks_diff  # ticks wrap at 2^30 as on the boards
from micropython import const

# Pilot states as small ints (cheap to compare in the control loop).
A = const(0)  # no vehicle, +12 V
B = const(1)  # vehicle connected, +9 V
C = const(2)  # requesting energy, +6 V
D = const(3)  # requesting, ventilation needed, +3 V
E = const(4)  # pilot shorted, 0 V
F = const(5)  # -12 V seen: EVSE not available (or a pilot wiring fault)
INVALID = const(6)  # between bands
NAMES = "ABCDEF?"

# Output levels for the PWM driver, in per mille of high time.
DC_HIGH = const(1000)  # steady +12 V: state X1 (A1/B1/C1), no current offered
DC_LOW = const(0)  # steady -12 V: state F

# Bands of +-1.1 V around the nominal levels (Yeti), in mV of the pilot's high
# half. They are wider than J1772 Table A1 so resistor and ADC tolerance do not
# make a good EV flicker; a level between bands is INVALID.
_BAND = const(1100)
_LEVELS = (12000, 9000, 6000, 3000, 0)

# Diode check: with PWM running the low half must be near -12 V. An EV without
# its diode pulls the low half to minus its high level, so above -10 V fails.
DIODE_MAX_LO = const(-10000)

# Debounce (ms) before a new level is accepted: unplug (A) fast, as OpenEVSE
# does, so C->A/B opens well within 100 ms; others a little longer.
DEBOUNCE = (20, 30, 30, 30, 30, 30, 200)
DIODE_FAILS = const(3)  # consecutive bad low halves before a diode fault


def classify(hi_mv):
    for i in range(5):
        lvl = _LEVELS[i]
        if lvl - _BAND <= hi_mv <= lvl + _BAND:
            return i
    if hi_mv <= -12000 + _BAND:
        return F
    return INVALID


def duty_for(ma):
    # Per mille duty for an offered current in mA; 0 when below 6 A (pause).
    if ma < 6000:
        return 0
    if ma <= 51000:
        return ma // 60
    if ma > 80000:
        ma = 80000
    return ma // 250 + 640


def current_for(duty):
    # The current in mA that a duty (per mille) offers; 0 if none.
    if 80 <= duty < 100:
        return 6000
    if 100 <= duty <= 850:
        return duty * 60
    if 850 < duty <= 960:
        return (duty - 640) * 250
    if 960 < duty <= 970:
        return 80000
    return 0


class Pilot:
    # Filtered pilot state of one connector. update() is called every control
    # tick with the averaged high and low halves measured by the board.
    def __init__(self):
        self.state = A
        self.raw = A
        self.since = 0  # when `state` was accepted
        self._cand = A
        self._cand_since = 0
        self.hi_mv = 12000
        self.lo_mv = 12000
        self.diode_ok = False  # a good low half seen since PWM started
        self.diode_fault = False
        self._bad_lo = 0

    def update(self, now, hi_mv, lo_mv, pwm_on, driving_f):
        self.hi_mv = hi_mv
        self.lo_mv = lo_mv
        if driving_f:
            # We hold the line at -12 V; nothing about the EV can be read.
            self._cand_since = now
            return self.state
        raw = classify(hi_mv)
        self.raw = raw
        if raw != self._cand:
            self._cand = raw
            self._cand_since = now
        if raw != self.state and ticks_diff(now, self._cand_since) >= DEBOUNCE[raw]:
            self.state = raw
            self.since = now
        if pwm_on and self.state in (B, C, D) and raw == self.state:
            if lo_mv > DIODE_MAX_LO:
                self._bad_lo += 1
                if self._bad_lo >= DIODE_FAILS:
                    self.diode_fault = True
                    self.diode_ok = False
            else:
                self._bad_lo = 0
                self.diode_ok = True
        elif not pwm_on:
            self._bad_lo = 0
            self.diode_ok = False
        return self.state

    def counting(self):
        # A diode check is between its first bad reading and its verdict.
        return self._bad_lo > 0

    def clear_diode(self):
        self.diode_fault = False
        self._bad_lo = 0
        self.diode_ok = False

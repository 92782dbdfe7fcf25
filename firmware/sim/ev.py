# Simulated EV: what it puts on the pilot (resistances, diode), how it reacts
# to the duty cycle, and the current it draws.
#
# The bench sets the EV's will (plug, request energy or not, demand); the EV
# then behaves like a well-mannered car: it opens S2 (C->B) stop_ms after the
# PWM goes away, closes it again respond_ms after PWM returns, follows the
# offered current (ramping), and stops requesting when its battery is full.
# The default EV has a battery (BATTERY_WH, arriving at START_SOC_PCT): above
# TAPER_PCT it draws less and less (down to TAPER_MIN of its demand, as a
# car's charger does near full), and when full it opens S2 (C -> B), so a
# session's energy ends by itself. capacity_wh = 0 gives an endless battery.
# Misbehaviour for tests: obey=False stays in C without PWM; greedy=True draws
# its demand whatever the duty says.

from firmware.core.clock import ticks_diff  # ms ticks wrap at 2^30 (boards' period) on every port

LEVEL_MV = {"A": 12000, "B": 9000, "C": 6000, "D": 3000, "E": 0}
BATTERY_WH = 60000
START_SOC_PCT = 30
TAPER_PCT = 80
TAPER_MIN = 0.1


def duty_current_ma(duty):
    # What an EV reads from a duty (per mille), IEC 61851-1 Annex A. Kept apart
    # from firmware.evse.pilot on purpose: the EV is another device, and two
    # implementations of the table check each other in every charging test.
    if 80 <= duty < 100:
        return 6000
    if 100 <= duty <= 850:
        return duty * 60
    if 850 < duty <= 960:
        return (duty - 640) * 250
    if 960 < duty <= 970:
        return 80000
    return 0


class EV:
    def __init__(self):
        self.plugged = False
        self.want = False  # asks for energy (S2 closed when it may)
        self.vent = False  # needs ventilation: D instead of C
        self.diode = True
        self.short = False  # pilot shorted to PE (state E)
        self.s2 = False
        self.demand_ma = 32000
        self.max_ma = 32000  # on-board charger limit
        self.respond_ms = 200
        self.stop_ms = 1000
        self.obey = True
        self.greedy = False
        self.ramp_up = 10000  # mA per s
        self.ramp_down = 30000
        self.draw_ma = 0.0
        self.capacity_wh = BATTERY_WH  # 0 = endless battery
        self.soc_wh = BATTERY_WH * START_SOC_PCT / 100
        self.soc_pct = START_SOC_PCT  # what the EV reports (None: no battery model)
        self._pwm_since = None
        self._nopwm_since = None

    def state(self):
        if not self.plugged:
            return "A"
        if self.short:
            return "E"
        if self.s2:
            return "D" if self.vent else "C"
        return "B"

    def pilot_mv(self, duty, noise):
        # (high half, low half) in mV for the EVSE's output duty (per mille).
        if duty <= 0:
            return -12000 + noise, -12000 + noise
        hi = LEVEL_MV[self.state()] + noise
        if duty >= 1000:
            return hi, hi
        if self.short:
            return noise, noise
        if not self.plugged or self.diode:
            return hi, -12000 + noise
        return hi, -hi

    def set_want(self, want, vent=False):
        self.want = want
        self.vent = vent
        self.s2 = want and self.plugged

    def next_event_ms(self, now):
        # ms until the EV changes state by itself; -1 if never (without input).
        if not self.plugged:
            return -1
        if self._pwm_since is not None and self.want and not self.s2:
            return max(0, self.respond_ms - ticks_diff(now, self._pwm_since))
        if self._nopwm_since is not None and self.s2 and self.obey:
            return max(0, self.stop_ms - ticks_diff(now, self._nopwm_since))
        if self.draw_ma > 0 and self._ramping:
            return 0
        return -1

    def step(self, now, dt_ms, duty, powered, volts_x_phases):
        pwm = 0 < duty < 1000
        if pwm:
            self._nopwm_since = None
            if self._pwm_since is None:
                self._pwm_since = now
        else:
            self._pwm_since = None
            if self._nopwm_since is None:
                self._nopwm_since = now
        if self.plugged and not self.short:
            if self.want and not self.s2 and pwm and ticks_diff(now, self._pwm_since) >= self.respond_ms:
                self.s2 = True
            elif self.s2 and not pwm and self.obey and ticks_diff(now, self._nopwm_since) >= self.stop_ms:
                self.s2 = False
        else:
            self.s2 = self.s2 and self.plugged
        target = 0
        if powered and self.s2 and not self.short:
            allowed = duty_current_ma(duty) if pwm else (self.draw_ma if not self.obey else 0)
            target = min(self.demand_ma, self.max_ma)
            cap = self.capacity_wh
            if cap and self.soc_wh > cap * TAPER_PCT / 100:
                # Near full the car takes less: linear down to TAPER_MIN at 100 %.
                f = (cap - self.soc_wh) / (cap * (100 - TAPER_PCT) / 100)
                target = target * (f if f > TAPER_MIN else TAPER_MIN)
            if not self.greedy:
                target = min(target, allowed)
        if not powered:
            self.draw_ma = 0.0
        elif self.draw_ma < target:
            self.draw_ma = min(float(target), self.draw_ma + self.ramp_up * dt_ms / 1000)
        elif self.draw_ma > target:
            self.draw_ma = max(float(target), self.draw_ma - self.ramp_down * dt_ms / 1000)
        self._ramping = self.draw_ma != target
        if self.capacity_wh and self.draw_ma > 0:
            self.soc_wh += self.draw_ma * volts_x_phases / 1e6 * dt_ms / 3600000
            if self.soc_wh >= self.capacity_wh:
                self.soc_wh = float(self.capacity_wh)
                self.want = False  # full: stop requesting
                self.s2 = False
            self.recount()
        return self.draw_ma

    def recount(self):
        # soc_pct from the battery (after a step, or the bench changed it).
        cap = self.capacity_wh
        if cap:
            if self.soc_wh > cap:
                self.soc_wh = float(cap)
            self.soc_pct = int(self.soc_wh * 100 / cap)
        else:
            self.soc_pct = None

    def arrive(self):
        # A new car takes the place (after an unplug): the same model, its
        # battery at the starting state of charge.
        if self.capacity_wh:
            self.soc_wh = self.capacity_wh * START_SOC_PCT / 100
            self.soc_pct = START_SOC_PCT

    _ramping = False

    def to_dict(self):
        return {k: getattr(self, k) for k in _SAVED}

    def load(self, d):
        for k in _SAVED:
            if k in d:
                setattr(self, k, d[k])
        self.recount()


_SAVED = ("plugged", "want", "vent", "diode", "short", "s2", "demand_ma", "max_ma", "respond_ms",
          "stop_ms", "obey", "greedy", "capacity_wh", "soc_wh")

# Analog front-end arithmetic: ADC readings -> pilot volts, PP ohms, NTC
# temperature, CT current, energy. Pure Python, no machine, so the host tests
# run it on the Unix port. Everything called from sample() is integer-only
# (no float boxing, hence no allocation); floats appear only in init-time
# constants and in the once-a-second slow path (NTC, CT RMS).
#
# Pilot front end (per connector): the +-12 V pilot line feeds the ADC node
# through R1; R2 goes from the node to GND, R3 from the node to the vref_mv
# rail. Superposition gives
#     adc = (Vp/R1 + Vref/R3) / (1/R1 + 1/R2 + 1/R3)
# hence
#     Vp = adc * (1 + R1/R2 + R1/R3) - Vref * R1/R3  =  adc * gain - offset
# ESP32 default 120k/20k/24k: gain 12, offset 16.5 V, -12..+12 V -> 0.375..2.375 V
# (inside the 150..2450 mV calibrated range of the 11 dB attenuator).
# RP2040 default 100k/33k/24k: gain 8.197, offset 13.75 V, -> 0.213..3.141 V.
import math
import time
from micropython import const
from firmware.core.clock import us_diff  # ticks_us stamps: the port's own period

_Q = const(10)  # pilot gain fixed point: gain_q = round(gain * 1024)
PP_OPEN = const(100000)  # PP reading of an open circuit (no cable, or a broken one), ohm


def raw_to_mv(raw, num, den):
    # ADC reading in the port's unit -> mV at the pin. ESP32 reads calibrated
    # microvolts (num 1, den 1000); RP2040 reads u16 (num adc_mv, den 65535).
    return raw * num // den


def mv_to_raw(mv, num, den):
    return mv * den // num


def divider(r1, r2, r3, vref_mv):
    # (gain_q, offset_mv) of the pilot network, computed once at init.
    gain = 1 + r1 / r2 + r1 / r3
    return int(gain * (1 << _Q) + 0.5), int(vref_mv * r1 / r3 + 0.5)


def pilot_mv(adc_mv, gain_q, offset_mv):
    # Integer-only: safe to call from sample(). adc_mv <= 5000 and gain_q <
    # 2**17 keep the product a small int on 32-bit ports.
    return ((adc_mv * gain_q + (1 << (_Q - 1))) >> _Q) - offset_mv


def adc_mv_for_pilot(pilot_mv_, r1, r2, r3, vref_mv):
    # The inverse (for docs, calibration and tests): what the ADC pin sees.
    g1, g2, g3 = 1 / r1, 1 / r2, 1 / r3
    return (pilot_mv_ * g1 + vref_mv * g3) / (g1 + g2 + g3)


def duty_u16(duty_pm, invert=False):
    # Pilot per mille (1000 = steady +12 V, 0 = steady -12 V) -> PWM duty_u16.
    # 0 and 65535 are the steady levels (on some ESP32 builds 65535 leaves a
    # ~15 ns sliver per period, which no pilot stage passes): no mode switch.
    if duty_pm < 0:
        duty_pm = 0
    elif duty_pm > 1000:
        duty_pm = 1000
    u = (duty_pm * 65535 + 500) // 1000
    return 65535 - u if invert else u


def pp_ohm(adc_mv, pullup, vref_mv):
    # Proximity pilot: pull-up `pullup` ohm to vref_mv, the cable's resistor to
    # PE. R = pullup * V / (Vref - V), capped at PP_OPEN. An open PP is never
    # reported as -1 ("no PP circuit"): a plugged cable with a broken resistor
    # must read out of range (a fault), not as "no cable limit".
    if adc_mv >= vref_mv:
        return PP_OPEN
    if adc_mv <= 0:
        return 0
    r = pullup * adc_mv // (vref_mv - adc_mv)
    return PP_OPEN if r > PP_OPEN else r


def ntc_dc(adc_mv, vref_mv, series, r0, beta, t0_c=25):
    # NTC from the ADC node to GND, `series` ohm from vref_mv to the node.
    # Beta equation: 1/T = 1/T0 + ln(R/R0)/B (kelvin). Returns 0.1 C units,
    # None when the reading says open (near the rail), short (near 0 V) or a
    # temperature no enclosure has.
    lim = vref_mv // 100
    if adc_mv <= lim or adc_mv >= vref_mv - lim:
        return None
    r = series * adc_mv / (vref_mv - adc_mv)
    t = 1 / (1 / (t0_c + 273.15) + math.log(r / r0) / beta) - 273.15
    if t < -40 or t > 150:
        return None
    return int(round(t * 10))


def ct_ma(rms_mv, burden, turns):
    # CT with burden resistor: secondary = V/R_burden, primary = that * turns.
    return int(rms_mv * turns / burden + 0.5)


def energy_step(acc_mj, power_w, dt_ms):
    # Integrate W * ms (= mJ) and carry whole Wh (3.6e6 mJ) out. Integer, so
    # no rounding drifts over a long session. Returns (whole Wh, new acc).
    acc_mj += power_w * dt_ms
    wh = acc_mj // 3600000
    return wh, acc_mj - wh * 3600000


_MAINS_US = const(20000)  # the mains period the CT phase is tracked against (50 Hz)
_STEPS = const(200)  # phase steps per mains period (0.1 ms at 50 Hz)
_ONE = const(128)  # fixed-point 1.0 of the phase table
_QSH = const(4)  # burst mean squares enter the fit /16: its sums stay small ints
# cos(2 pi k / _STEPS) * _ONE; a tuple, built once at import.
_COS = tuple(round(math.cos(2 * math.pi * k / _STEPS) * _ONE) for k in range(_STEPS))


class Rms:
    # RMS of an AC signal riding on a DC bias, gathered from short bursts
    # (each ~1 ms: nearly one point of the mains cycle).
    # The bursts come from a cooperative task, and on a board that task only
    # gets the CPU between control ticks: the ticks run on a 10 ms grid, half
    # a 50 Hz cycle, so the bursts fall into the same part of every cycle
    # (the phases inside a tick are never seen). A plain mean of the bursts'
    # squares is then biased by the phase the grid happens to have against
    # the mains (measured in the RP2040 emulator: 13.3..14.7 A for 16 A).
    # So each burst is placed on the 50 Hz cycle (from its ticks_us stamp),
    # and once a window close() and step() fit the bursts' mean and mean square with the mains
    # harmonics (1, cos/sin of the phase and of twice the phase, least
    # squares): the fit's constant terms are the cycle averages, whatever part
    # of the cycle the bursts covered. Bursts without a stamp, too few phases
    # for a sound fit, or a square that does not swing as a 50 Hz sine's does
    # (a 60 Hz grid, where the 10 ms grid drifts over the cycle anyway) fall
    # back to the plain mean. Per burst only small ints are summed (the
    # normal equations in fixed point); floats only in close() and step().
    def __init__(self, bias_mv):
        self.bias = bias_mv
        self.s = 0  # sum of (x - bias)
        self.q = 0  # sum over bursts of mean (x - bias)^2
        self.n = 0  # samples
        self.b = 0  # bursts
        self.c = 1  # samples per burst (the last burst's count)
        self.f = [_ONE, 0, 0, 0, 0]  # the burst's harmonics, fixed point
        self.nm = [0] * 15  # normal matrix, upper triangle, row by row
        self.rs = [0] * 5  # sum of f * burst sum of (x - bias)
        self.rq = [0] * 5  # sum of f * (burst mean square >> _QSH)
        self.ph = 0  # phase of the last stamped burst, us into the mains period
        self.t = None  # its ticks_us stamp
        self._m = [[0.0] * 7 for _ in range(5)]  # the fit's equations, set aside at close()
        self._x = [[0.0] * 5, [0.0] * 5]
        self._i = 7  # fit progress: 0..4 elimination, 5 back substitution, 6 plain, 7 done
        self._w = 0
        self._plain = None
        self.rms = None

    def burst(self, read, num, den, count, t_us=None):
        # t_us: time.ticks_us() at the burst's start, or None (phase unknown).
        off = self.bias
        s = 0
        q = 0
        for _ in range(count):
            x = read() * num // den - off
            s += x
            q += x * x
        q //= count
        self.s += s
        self.q += q
        self.n += count
        self.b += 1
        self.c = count
        if t_us is None:
            return
        # The phase moves on by the time since the last burst (wrap-safe,
        # whatever the period of the port's ticks_us).
        if self.t is not None:
            self.ph = (self.ph + us_diff(t_us, self.t)) % _MAINS_US
        self.t = t_us
        k = self.ph * _STEPS // _MAINS_US
        k2 = 2 * k % _STEPS
        f = self.f
        f[1] = _COS[k]
        f[2] = _COS[(k + 3 * _STEPS // 4) % _STEPS]  # sin a = cos(a - 90 deg)
        f[3] = _COS[k2]
        f[4] = _COS[(k2 + 3 * _STEPS // 4) % _STEPS]
        q >>= _QSH
        nm = self.nm
        i = 0
        for a in range(5):
            fa = f[a]
            self.rs[a] += fa * s
            self.rq[a] += fa * q
            for b in range(a, 5):
                nm[i] += fa * f[b]
                i += 1

    def close(self):
        # Ends the window. False: nothing measured (rms None). True: the
        # window's sums are set aside and step() finishes it in slices (each
        # well under a ms on an RP2040; the whole fit would block ~3.5 ms).
        # The next window's bursts may come in between.
        self.rms = None
        if not self.b:
            return False
        mean = self.s / self.n
        self._plain = (mean, self.q / self.b)
        # The bias moves at the window's edge, so one window's sums share it;
        # the fit takes any remaining offset out itself.
        self.bias += int(mean)
        self._i = 6  # no fit: straight to the plain mean
        nm = self.nm
        w = nm[0]
        if self.b >= 8 and w >= 8 * _ONE * _ONE:
            m = self._m
            i = 0
            for a in range(5):
                for b in range(a, 5):
                    m[a][b] = m[b][a] = float(nm[i])
                    i += 1
                m[a][5] = self.rs[a] / self.c
                m[a][6] = float(self.rq[a] << _QSH)
            self._w = w
            self._i = 0
        self.s = self.q = self.n = self.b = 0
        for i in range(15):
            nm[i] = 0
        for i in range(5):
            self.rs[i] = self.rq[i] = 0
        return True

    def step(self):
        # One slice of the fit; True once self.rms holds the window's RMS in
        # mV (float). Elimination with partial pivoting, one column a call; a
        # small pivot means the covered phases cannot tell the harmonics
        # apart: the plain mean.
        i = self._i
        m = self._m
        if i < 5:
            p = i
            for r in range(i + 1, 5):
                if abs(m[r][i]) > abs(m[p][i]):
                    p = r
            m[i], m[p] = m[p], m[i]
            if abs(m[i][i]) < self._w * 0.02:
                self._i = 6
            else:
                for r in range(i + 1, 5):
                    g = m[r][i] / m[i][i]
                    if g:
                        for j in range(i + 1, 7):
                            m[r][j] -= g * m[i][j]
                self._i = i + 1
            return False
        mean, sq = self._plain
        if i == 5:
            # Back substitution, both right-hand sides: the coefficients
            # (constant, cos, sin, cos 2, sin 2) in units of 1/_ONE.
            x = self._x
            for c in range(2):
                xc = x[c]
                for i in range(4, -1, -1):
                    v = m[i][5 + c]
                    for j in range(i + 1, 5):
                        v -= m[i][j] * xc[j]
                    xc[i] = v / m[i][i]
            fm = x[0][0] * _ONE
            fq = x[1][0] * _ONE
            # A sine's square swings by its own mean square at twice the
            # mains frequency. Far less swing: the phases are not those of
            # 50 Hz (a 60 Hz grid): the fit only adds noise, the plain mean
            # is right.
            if math.sqrt(x[1][3] ** 2 + x[1][4] ** 2) * _ONE >= 0.5 * (fq - fm * fm):
                mean, sq = fm, fq
        ms = sq - mean * mean
        self.rms = math.sqrt(ms) if ms > 0 else 0.0
        self._i = 7
        return True

    def take(self):
        # -> RMS in mV (float) of the AC part since the last take, or None:
        # close() and all of step() at once (host tools, tests).
        if self.close():
            while not self.step():
                pass
        return self.rms

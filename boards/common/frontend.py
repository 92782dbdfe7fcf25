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
from micropython import const

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


class Rms:
    # RMS of an AC signal riding on a DC bias, gathered from short bursts.
    # Bursts are taken at a period that is not a multiple of the mains period,
    # so their phases spread over the cycle and the mean square converges.
    # Per burst only small ints are summed; the bias is tracked from the mean.
    def __init__(self, bias_mv):
        self.bias = bias_mv
        self.s = 0  # sum of (x - bias)
        self.q = 0  # sum over bursts of mean (x - bias)^2
        self.n = 0  # samples
        self.b = 0  # bursts

    def burst(self, read, num, den, count):
        off = self.bias
        s = 0
        q = 0
        for _ in range(count):
            x = read() * num // den - off
            s += x
            q += x * x
        self.s += s
        self.q += q // count
        self.n += count
        self.b += 1

    def take(self):
        # -> RMS in mV (float) of the AC part since the last take, or None.
        if not self.b:
            return None
        mean = self.s / self.n
        ms = self.q / self.b - mean * mean
        self.bias += int(mean)
        self.s = self.q = self.n = self.b = 0
        return math.sqrt(ms) if ms > 0 else 0.0

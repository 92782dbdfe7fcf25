"""Real-hardware boards (boards/esp32, boards/rp2040) on the Unix port.

machine.PWM/ADC/WDT do not exist on the Unix port, so the board code takes
every machine object from a port object. Here:
- the pure front-end arithmetic (boards/common/frontend.py) and the pin-map
  checks (boards/common/pinmap.py) run on MicroPython and are compared with
  the same physics computed independently in CPython;
- the driver (boards/common/hal.py) and the board (boards/common/board.py) run
  against a fake port whose ADC "sees" a pilot waveform through the default
  ESP32 front end.
"""
import json
import math
import os
import subprocess
import time

import pytest

from fwproc import ROOT, micropython
from mp import run_mp

# Default front ends (boards/esp32/pins.py, boards/rp2040/pins.py).
ESP32_NET = (120000, 20000, 24000, 3300)
RP2040_NET = (100000, 33000, 24000, 3300)


def mp_json(code, **kw):
    """Run code on MicroPython; it must print one JSON line last."""
    p = run_mp(code, **kw)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def node_mv(vp_mv, r1, r2, r3, vref_mv):
    # Nodal analysis of the pilot network: (Vp - V)/R1 + (Vref - V)/R3 = V/R2.
    return (vp_mv / r1 + vref_mv / r3) / (1 / r1 + 1 / r2 + 1 / r3)


# --- pure arithmetic -----------------------------------------------------------


@pytest.mark.parametrize("net", [ESP32_NET, RP2040_NET], ids=["esp32", "rp2040"])
def test_pilot_mv_from_adc_matches_the_network(net):
    levels = [-12600, -12000, -6000, 0, 3000, 6000, 9000, 12000, 12600]
    adc = [int(round(node_mv(v, *net))) for v in levels]
    got = mp_json("""
import json
from boards.common import frontend as fe
g, o = fe.divider(%d, %d, %d, %d)
print(json.dumps([fe.pilot_mv(a, g, o) for a in %r]))
""" % (net + (adc,)))
    r1, r2, r3, vref = net
    gain = 1 + r1 / r2 + r1 / r3
    for v, a, mv in zip(levels, adc, got):
        # Exactly what the 1 mV ADC reading means, within Q10 rounding...
        assert abs(mv - (a * gain - vref * r1 / r3)) <= 2, (v, a, mv)
        # ...and the pilot level itself within one ADC step (gain mV).
        assert abs(mv - v) <= gain, (v, mv)
    # The whole +-12.6 V swing lands inside the ADC's range; on the ESP32
    # inside the calibrated 150..2450 mV of the 11 dB attenuator.
    lo, hi = (150, 2450) if net == ESP32_NET else (0, 3300)
    assert lo < adc[0] and adc[-1] < hi


def test_adc_units_and_inverse():
    got = mp_json("""
import json
from boards.common import frontend as fe
print(json.dumps([fe.raw_to_mv(65535, 3300, 65535), fe.raw_to_mv(32768, 3300, 65535),
                  fe.raw_to_mv(1234567, 1, 1000), fe.mv_to_raw(1650, 3300, 65535),
                  fe.adc_mv_for_pilot(6000, 120000, 20000, 24000, 3300)]))
""")
    assert got[0] == 3300
    assert got[1] == 32768 * 3300 // 65535
    assert got[2] == 1234
    assert got[3] == 1650 * 65535 // 3300
    assert got[4] == pytest.approx(node_mv(6000, *ESP32_NET))


def test_duty_u16():
    got = mp_json("""
import json
from boards.common import frontend as fe
print(json.dumps([fe.duty_u16(d, inv) for inv in (False, True) for d in (-5, 0, 100, 533, 960, 1000, 1200)]))
""")
    want = [0, 0, 6554, 34930, 62914, 65535, 65535]
    assert got[:7] == want
    assert got[7:] == [65535 - u for u in want]


def beta_dc(adc_mv, vref=3300, series=10000, r0=10000, beta=3950, t0=25):
    r = series * adc_mv / (vref - adc_mv)
    return (1 / (1 / (t0 + 273.15) + math.log(r / r0) / beta) - 273.15) * 10


def test_ntc_beta_equation():
    adcs = [200, 480, 900, 1300, 1650, 2100, 2600, 3100, 3200]
    got = mp_json("""
import json
from boards.common import frontend as fe
print(json.dumps([fe.ntc_dc(a, 3300, 10000, 10000, 3950, 25) for a in %r]
                 + [fe.ntc_dc(a, 3300, 10000, 10000, 3950, 25) for a in (0, 20, 3290, 3300)]))
""" % (adcs,))
    for a, dc in zip(adcs, got):
        want = beta_dc(a)
        if -400 <= want <= 1500:
            assert abs(dc - want) <= 1, (a, dc, want)
        else:
            assert dc is None, (a, dc, want)  # no enclosure is that hot or cold
    assert got[4] == 250  # R = R0 at the midpoint: 25.0 C
    assert got[-4:] == [None, None, None, None]  # short, short, open, open


def test_pp_ohm_for_the_iec_cable_resistors():
    ohms = [100, 220, 680, 1500, 2700, 4500]
    adc = [int(3300 * r / (r + 1000)) for r in ohms]  # 1 k pull-up to 3.3 V
    got = mp_json("""
import json
from boards.common import frontend as fe
print(json.dumps([fe.pp_ohm(a, 1000, 3300) for a in %r] + [fe.pp_ohm(a, 1000, 3300) for a in (0, 3250, 3300, 3400)]))
""" % (adc,))
    for r, a, got_r in zip(ohms, adc, got):
        assert abs(got_r - 1000 * a / (3300 - a)) <= 1
        assert abs(got_r - r) <= r * 0.01 + 2
    # Shorted reads 0; open (no cable, or a broken resistor) reads 100 kohm,
    # never -1, so a plugged cable without PP is a fault, not "no limit".
    assert got[-4] == 0
    assert got[-3] == 1000 * 3250 // 50
    assert got[-2:] == [100000, 100000]


def test_ct_current_energy_and_rms():
    got = mp_json("""
import json, math
from boards.common import frontend as fe
class Sine:
    def __init__(self, bias, rms):
        self.bias = bias; self.amp = rms * math.sqrt(2); self.k = 0
    def read(self):
        self.k += 1
        return int((self.bias + self.amp * math.sin(self.k * 0.1234567)) * 1000)
r = fe.Rms(1650)
s = Sine(1250, 352)
for _ in range(40):
    r.burst(s.read, 1, 1000, 32)
first = r.take()
bias = r.bias
for _ in range(40):
    r.burst(s.read, 1, 1000, 32)
second = r.take()
acc = 0; wh = 0
for _ in range(3600):
    w, acc = fe.energy_step(acc, 7360, 1000)
    wh += w
print(json.dumps([fe.ct_ma(352, 22, 2000), fe.ct_ma(0.0, 15, 2000), first, bias, second, wh, acc,
                  r.take()]))
""")
    assert got[0] == 32000  # 352 mV / 22 ohm = 16 mA * 2000 turns
    assert got[1] == 0
    # The first window still had the wrong bias guess (1650 for 1250 mV) and
    # removes it from the variance; the bias is then tracked.
    assert got[2] == pytest.approx(352, rel=0.03)
    assert abs(got[3] - 1250) <= 5
    assert got[4] == pytest.approx(352, rel=0.03)
    assert got[5] == 7360 and got[6] == 0  # 7.36 kW for an hour, to the Wh
    assert got[7] is None  # nothing measured since the last take



def test_ct_rms_does_not_depend_on_the_phases_the_slow_task_reaches():
    # On a board the meter's bursts only run between control ticks: on the
    # 10 ms grid, i.e. in the same part of every half cycle of 50 Hz. Here
    # they only ever start in the last 6 ms of each 10 ms, with the grid at
    # eight phases against the mains; 16 A RMS must read 16 A (+-2 %) at
    # every one. A 60 Hz current (the grid drifts over its cycle) still
    # reads right, through the plain mean.
    got = mp_json("""
import json, math
from boards.common import frontend as fe
class Mains:
    def __init__(self, rms, hz, phase):
        self.amp = rms * math.sqrt(2); self.w = 2 * math.pi * hz / 1e6; self.ph = phase; self.us = 0
    def read(self):
        self.us += 20  # 32 samples: a 0.64 ms burst
        return int((1650 + self.amp * math.sin(self.w * self.us + self.ph)) * 1000)
def window(hz, phase):
    r = fe.Rms(1650)
    m = Mains(176, hz, phase)
    out = []
    for _ in range(3):
        for k in range(40):
            m.us += 23000 + 1000 * (k % 5)
            g = m.us % 10000
            if g < 4000:
                m.us += 4000 - g  # queued behind the control tick
            r.burst(m.read, 1, 1000, 32, m.us)
        out.append(r.take())
    return out
print(json.dumps([window(50, p * math.pi / 8) for p in range(8)] + [window(60, 0.3)]))
""")
    for ph, rms in enumerate(got):
        for mv in rms[1:]:  # the first window also learns the bias
            assert mv == pytest.approx(176, rel=0.02), (ph, rms)


# --- pin maps ------------------------------------------------------------------

PINMAP = """
import json
from boards.common import pinmap
from boards.%s import pins
m, e = pinmap.validate(pins.defaults(), %s, pins.caps())
print(json.dumps({"errors": e, "map": m}))
"""


@pytest.mark.parametrize("board", ["esp32", "rp2040"])
def test_default_pin_maps_are_valid(board):
    got = mp_json(PINMAP % (board, "None"))
    assert got["errors"] == []
    m = got["map"]
    assert len(m["cp_pwm"]) == 1
    pins = [p for k, v in m.items() if k in ("cp_pwm", "cp_adc", "pp_adc", "relay", "aux", "rcd",
                                             "rcd_reset", "ground", "ct_adc", "lock", "lock_fb")
            for p in v if p is not None] + [m["ntc_adc"]]
    assert len(pins) == len(set(pins)), "a pin used twice"


def errors_for(board, overrides):
    return mp_json(PINMAP % (board, repr(overrides)))["errors"]


def test_pin_errors_name_the_key():
    e = errors_for("esp32", {"relay": 34, "ntc_adc": 25, "cp_adc": [13], "bogus": 1})
    assert any(x.startswith("pins.relay[0]: GPIO 34 cannot be an output") and "input only" in x for x in e), e
    assert any(x.startswith("pins.ntc_adc: GPIO 25 cannot be an ADC input") and "ADC2" in x for x in e), e
    assert any(x.startswith("pins.ground[0]: GPIO 13 is already pins.cp_adc") or
               x.startswith("pins.cp_adc[0]: GPIO 13 cannot be an ADC input") for x in e), e
    assert any(x.startswith("pins.bogus: unknown key") for x in e), e
    e = errors_for("esp32", {"aux": 26})
    assert e == ["pins.aux[0]: GPIO 26 is already pins.relay[0]"], e
    e = errors_for("esp32", {"relay": 6})
    assert len(e) == 1 and "SPI flash" in e[0]
    e = errors_for("esp32", {"relay": True, "relay_on": 2, "cp_r1": -5, "demo": "yes", "rcd_pulse_ms": 1.5})
    for key in ("pins.relay[0]", "pins.relay_on", "pins.cp_r1", "pins.demo", "pins.rcd_pulse_ms"):
        assert any(x.startswith(key + ":") for x in e), (key, e)
    e = errors_for("esp32", {"cp_pwm": [25, 23]})
    assert any(x.startswith("pins.relay: must list 2 pin(s)") for x in e), e
    assert errors_for("esp32", []) == ["pins: must be an object, got []"]


def test_pin_overrides_that_fit():
    # Pico with a tethered cable: PP input free for a CT.
    assert errors_for("rp2040", {"pp_adc": None, "ct_adc": 27}) == []
    # Two connectors on the Pico (no PP, no CT, one NTC): "none" lists expand.
    two = {"cp_pwm": [15, 17], "cp_adc": [26, 27], "pp_adc": None, "relay": [14, 16],
           "aux": [13, 18], "rcd": [12, 19], "rcd_reset": [11, 20], "ground": [10, 21],
           "lock": [9, 22], "lock_fb": [8, 7]}
    got = mp_json(PINMAP % ("rp2040", repr(two)))
    assert got["errors"] == []
    assert got["map"]["ct_adc"] == [None, None] and got["map"]["pp_adc"] == [None, None]


def test_rp2040_pilots_must_not_share_a_pwm_channel():
    e = errors_for("rp2040", {"cp_pwm": [15, 31 - 0], "cp_adc": [26, 27]})
    assert any("GPIO 31 cannot be an output" in x for x in e)
    e = errors_for("rp2040", {"cp_pwm": [0, 16], "cp_adc": [26, 27], "pp_adc": None, "relay": [14, 1],
                              "aux": None, "rcd": None, "rcd_reset": None, "ground": None,
                              "lock": None, "lock_fb": None})
    assert e == ["pins.cp_pwm[1]: GPIO 16 shares its PWM output with GPIO 0 "
                 "(GPn and GPn+16 are the same RP2040 PWM slice channel)"], e


# --- the driver and the board against a fake port ------------------------------

FAKES = r'''
import math
from boards.common import frontend as fe
from boards.esp32 import pins as ep


class FakePin:
    def __init__(self, n, v=0):
        self.n = n
        self.v = v
        self.handler = None

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v


class FakePwm:
    def __init__(self, d):
        self.d = d

    def duty_u16(self, d):
        self.d = d


class Wave:
    # The pilot line through the ESP32 default network, read as microvolts;
    # each read is 7 us later on the 1000 us PWM period (not a divisor, so
    # the sample phases spread as they do on a real board).
    def __init__(self, pwm, step_us=7):
        self.pwm = pwm
        self.t = 0
        self.step = step_us
        self.raw_f = self.raw(-12000)
        self.set(12000, 12000)

    def raw(self, mv):
        return int(round(fe.adc_mv_for_pilot(mv, 120000, 20000, 24000, 3300) * 1000))

    def set(self, hi, lo):
        self.raw_hi = self.raw(hi)
        self.raw_lo = self.raw(lo)

    def read(self):
        self.t += self.step
        d = self.pwm.d
        if d == 0:
            return self.raw_f
        if (self.t % 1000) * 65535 < d * 1000:
            return self.raw_hi
        return self.raw_lo


class Const:
    def __init__(self, mv):
        self.uv = int(mv * 1000)

    def read(self):
        return self.uv


class Sine:
    def __init__(self, bias_mv, rms_mv):
        self.bias = bias_mv
        self.amp = rms_mv * math.sqrt(2)
        self.k = 0

    def read(self):
        self.k += 1
        return int((self.bias + self.amp * math.sin(self.k * 0.1234567)) * 1000)


class FakeWdt:
    def __init__(self, ms):
        self.ms = ms
        self.fed = 0

    def feed(self):
        self.fed += 1


class FakePort:
    NAME = "fake ESP32"
    TARGET = "esp32"
    WDT_MS = 1000
    BOOT_WINDOW_MS = 0

    def slots(self, store, log=None, **kw):
        from firmware.ota.slots import Slots
        return Slots(store, self.root + "/slots", log=log, **kw)

    def serial(self):
        return "FAKE0001"

    def link(self, clock, log, cfg):
        # The real port's: network.WLAN when a `network` module is there
        # (a fake one in tests), else "no network".
        from boards.common.port import MachinePort
        return MachinePort.link(self, clock, log, cfg)

    def __init__(self, root="/tmp", ct_rms_mv=0):
        self.root = root
        self.ct_rms_mv = ct_rms_mv
        self.pins = {}
        self.pwms = {}
        self.waves = []
        self.adcs = {}
        self.dog = None

    def defaults(self):
        return ep.defaults()

    def caps(self):
        return ep.caps()

    def output(self, pin, value):
        p = FakePin(pin, value)
        self.pins[pin] = p
        return p

    def input(self, pin, pull=None):
        p = FakePin(pin, 1 if pull == "up" else 0)
        self.pins[pin] = p
        return p

    def irq(self, pin, level, handler):
        pin.handler = handler

    def pwm(self, pin, freq, d):
        w = FakePwm(d)
        self.pwms[pin] = w
        return w

    def adc(self, pin, adc_mv):
        d = ep.defaults()
        if pin in d["cp_adc"]:
            r = Wave(self.pwms[d["cp_pwm"][d["cp_adc"].index(pin)]])
            self.waves.append(r)
        elif pin in d["ct_adc"]:
            r = Sine(1250, self.ct_rms_mv)
        elif pin in d["pp_adc"]:
            r = Const(3300 * 220 / 1220)  # a 32 A cable
        else:
            r = Const(1650)  # NTC at 25 C
        self.adcs[pin] = r
        return r.read, 1, 1000

    def wdt(self, ms):
        self.dog = FakeWdt(ms)
        return self.dog

    def reset(self):
        print("RESET fed=%d" % (self.dog.fed if self.dog else -1))
        raise SystemExit(0)

    def skip_pressed(self):
        return False

    def store_root(self):
        return self.root
'''

HAL = r"""
import json, time, micropython
from fakes import FakePort
from boards.common import pinmap, hal

R = {}


def snap(hw, now):
    # sample() twice with the heap locked: any allocation raises.
    micropython.heap_lock()
    try:
        hw.sample(now)
        hw.sample(now)
        err = None
    except MemoryError as e:
        err = e
    micropython.heap_unlock()
    return [hw.cp_hi[0], hw.cp_lo[0], err is None]


def main():
    port = FakePort(ct_rms_mv=176)  # 176 mV / 15 ohm * 2000 = 23.47 A
    pins = pinmap.check(port.defaults(), None, port.caps())
    hw = hal.PinHardware(port, pins, 230, 3)
    wave = port.waves[0]
    R["boot"] = [port.pins[26].v, port.pwms[25].d, port.pins[4].v]  # coil off, pilot F, unlocked
    now = time.ticks_ms()
    R["F"] = snap(hw, now)
    hw.pilot(0, 1000)
    R["A"] = snap(hw, now)
    wave.set(9000, 9000)
    R["B1"] = snap(hw, now)
    hw.pilot(0, 533)
    wave.set(9000, -12000)
    R["B2"] = snap(hw, now)
    wave.set(6000, -12000)
    R["C2"] = snap(hw, now)
    wave.set(6000, -6000)
    R["nodiode"] = snap(hw, now)
    wave.set(6000, -12000)
    hw.pilot(0, 100)
    R["C10"] = snap(hw, now)
    hw.pilot(0, 960)
    R["C96"] = snap(hw, now)
    wave.set(0, 0)
    R["E"] = snap(hw, now)
    R["pp"] = hw.pp_ohm[0]
    # RCD: the IRQ handler only sets a byte (run it with the heap locked).
    rcd = port.pins[33]
    micropython.heap_lock()
    rcd.handler(rcd)
    micropython.heap_unlock()
    hw.sample(now)
    R["rcd_irq"] = hw.rcd[0]
    hw.sample(now)
    R["rcd_latched"] = hw.rcd[0]
    hw.rcd_reset(0)
    R["rcd_reset"] = [hw.rcd[0], port.pins[32].v]
    rcd.handler(rcd)  # the reset pulse itself may toggle the output
    hw.sample(time.ticks_ms())
    R["rcd_masked"] = hw.rcd[0]
    time.sleep_ms(pins["rcd_pulse_ms"] + 10)
    hw.sample(time.ticks_ms())
    R["rcd_after"] = [hw.rcd[0], port.pins[32].v]
    rcd.v = 0  # the monitor's output held at the trip level
    hw.sample(time.ticks_ms())
    R["rcd_level"] = hw.rcd[0]
    # Coil, aux mirror contact (to GND when closed), ground, lock.
    hw.contactor(0, True)
    port.pins[27].v = 0
    port.pins[13].v = 1
    hw.lock(0, True)
    port.pins[18].v = 0
    hw.sample(time.ticks_ms())
    R["closed"] = [port.pins[26].v, hw.aux[0], hw.ground_ok[0], port.pins[4].v, hw.locked[0]]
    hw.safe(time.ticks_ms())
    R["safe"] = [port.pins[26].v, port.pwms[25].d, port.pins[4].v]
    # Slow path: CT bursts every 23 ms; a window closes each second.
    t = time.ticks_ms()
    for k in range(1, 3 * 44):
        hw.slow(time.ticks_add(t, k * 23))
    now = time.ticks_add(t, 3 * 44 * 23)
    hw.sample(now)
    R["meter"] = [hw.current_ma[0], hw.power_w[0], hw.meter_wh[0], hw.voltage_mv[0], hw.temp_dc]
    hw.sample(time.ticks_add(now, 6000))  # the slow task went silent
    R["stale"] = [hw.meter_wh[0], hw.temp_dc]
    print(json.dumps(R))


main()
"""


def test_driver_on_a_fake_port(tmp_path):
    (tmp_path / "fakes.py").write_text(FAKES)
    r = mp_json("sys.path.insert(0, %r)\n" % str(tmp_path) + HAL)
    assert r["boot"] == [0, 0, 0]
    tol = 20  # 1 mV ADC steps times the front end's gain of 12
    for state, hi, lo in (("F", -12000, -12000), ("A", 12000, 12000), ("B1", 9000, 9000),
                          ("B2", 9000, -12000), ("C2", 6000, -12000), ("nodiode", 6000, -6000),
                          ("C10", 6000, -12000), ("C96", 6000, -12000), ("E", 0, 0)):
        got_hi, got_lo, no_alloc = r[state]
        assert abs(got_hi - hi) <= tol and abs(got_lo - lo) <= tol, (state, r[state])
        assert no_alloc, "sample() allocated in state " + state
    assert abs(r["pp"] - 220) <= 3
    assert r["rcd_irq"] and r["rcd_latched"]
    assert r["rcd_reset"] == [False, 1]  # cleared at once, reset line pulsed
    assert r["rcd_masked"] is False  # what the monitor says during the pulse is dropped
    assert r["rcd_after"] == [False, 0]  # pulse over, line released
    assert r["rcd_level"] is True  # a trip that persists is seen again
    assert r["closed"] == [1, True, True, 1, True]
    assert r["safe"] == [0, 0, 1]  # coil off, pilot F; the lock is left to the connector
    ma, w, wh, v_mv, temp = r["meter"]
    want_ma = 176 / 15 * 2000
    assert ma == pytest.approx(want_ma, rel=0.03)
    assert w == ma * 230 * 3 // 1000
    assert wh == int(w * 2 / 3600) or wh == int(w * 3 / 3600)  # 2-3 whole windows integrated
    assert v_mv == 230000
    assert temp == 250
    assert r["stale"] == [None, None]  # no fresh readings: meter and sensor failed


BOARD = r"""
import sys
sys.path.insert(0, %r)
sys.path.insert(0, %r)
from fakes import FakePort
from boards.common.board import main
main(FakePort(%r))
"""


def run_board(tmp_path, store, lines, settle=1.0):
    """Boot the shared board code on a fake port, type at its bench REPL."""
    (tmp_path / "fakes.py").write_text(FAKES)
    p = subprocess.Popen([micropython(), "-c", BOARD % (ROOT, str(tmp_path), str(store))],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        time.sleep(settle)
        for line, wait in lines:
            p.stdin.write(line.encode() + b"\n")
            p.stdin.flush()
            time.sleep(wait)
        p.stdin.close()
        out = p.stdout.read().decode()
        p.wait(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    return out


def test_board_demo_mode_charges_and_reboots(tmp_path):
    store = tmp_path / "flash"
    store.mkdir()
    (store / "config.json").write_text(json.dumps({"pins": {"demo": True}}))
    out = run_board(tmp_path, store, [("plug(32)", 0.3), ("ev('C')", 1.5), ("status()", 0.3), ("reboot()", 1)])
    assert "demo mode" in out
    assert "Charging" in out and "contactor closed" in out, out
    assert "plant:" in out
    assert "RESET fed=" in out and "RESET fed=0" not in out, out  # the hardware watchdog was fed
    assert (store / "plant.json").exists()  # the simulated world survives an orderly reboot
    out = run_board(tmp_path, store, [("status()", 0.3)])
    assert "simulated plant restored" in out
    assert not (store / "plant.json").exists()


def test_board_hardware_mode_then_maintenance(tmp_path):
    store = tmp_path / "flash"
    store.mkdir()
    out = run_board(tmp_path, store, [("status()", 0.3), ("hw.info()['pilot_burst']", 0.3), ("maintenance()", 1)])
    assert "hardware mode" in out
    assert "Available" in out and "pilot A (+12.0 V" in out, out
    assert "RESET" in out
    assert (store / "maintenance").exists()
    # The next boot stops before the charger and the watchdog: plain REPL.
    out = run_board(tmp_path, store, [], settle=0.5)
    assert "maintenance boot" in out and "RESET" not in out
    assert not (store / "maintenance").exists()


def test_board_refuses_a_bad_pin_map(tmp_path):
    store = tmp_path / "flash"
    store.mkdir()
    (store / "config.json").write_text(json.dumps({"pins": {"relay": 34}}))
    out = run_board(tmp_path, store, [], settle=0.5)
    assert "pins.relay[0]: GPIO 34 cannot be an output" in out
    assert "charger stopped: the pin map has errors" in out and "plain REPL" in out
    assert "RESET" not in out

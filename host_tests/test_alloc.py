"""The control tick must not allocate: no GC pause can start from the safety loop.

Every state a connector can be in is driven on the simulated plant by
tools/bench/mp_alloc.py (the same driver `make bench` reports from); 1,000
control ticks in it must allocate 0 bytes. The board HAL's sample() (the part
of the tick a real board adds) is measured the same way on the fake port of
test_board_math.py.
"""
import json
import os
import subprocess

import pytest

from fwproc import ROOT, micropython
from mp import run_mp
from test_board_math import FAKES, run_board

MP_ALLOC = os.path.join(ROOT, "tools", "bench", "mp_alloc.py")

# Each state with what a technician would see in it: the faults active and
# the connector's status (mp_alloc.py checks both and reports "ok").
STATES = ["idle", "charging", "weld", "switch", "switch_aux_dropped", "diode", "pilot_f", "pilot_invalid",
          "pilot_short_e", "rcd_hard", "rcd_retry_wait", "ground", "overcurrent", "overcurrent_opening",
          "meter", "cable_pp", "lock", "temp_sensor", "overtemp", "derated", "evse_stopping", "evse_stopped",
          # The whole control task on a board's real clock: asyncio and the
          # Periodic loop around the tick (its sleep between runs included).
          "control_task_loop"]


@pytest.fixture(scope="module")
def per_state(tmp_path_factory):
    d = tmp_path_factory.mktemp("alloc")
    p = subprocess.run([micropython(), MP_ALLOC, "--dir", str(d / "run"), "--ticks", "1000"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    res = {}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            res[r["state"]] = r
    return res


@pytest.mark.parametrize("state", STATES)
def test_control_tick_allocates_nothing(per_state, state):
    r = per_state.get(state)
    assert r is not None, "mp_alloc.py measured no state %r" % state
    assert "error" not in r, r
    assert r["tick_errors"] == 0, r
    # The state is the one named (faults and status), else 0 proves nothing.
    assert r["ok"], "state not reached: %s" % r
    assert r["alloc"] == 0, "%s: %d bytes per %d ticks" % (state, r["alloc"], r["ticks"])


def test_states_that_hold_the_contacts_closed_are_measured_closed(per_state):
    # The stop and the overcurrent stop measure the ticks before the opening.
    for state in ("charging", "derated", "evse_stopping", "overcurrent_opening"):
        assert per_state[state]["contactor"] is True, per_state[state]
    for state in ("weld", "diode", "pilot_f", "rcd_hard", "evse_stopped"):
        assert per_state[state]["contactor"] is False, per_state[state]


def test_demo_mode_plant_runs_outside_the_control_tick(per_state):
    # A dev board in demo mode steps the simulated plant in its own task: the
    # control tick, with the plant running and the EV charging, allocates
    # nothing; the plant's step is measured apart (make bench reports it).
    r = per_state["demo_plant_task"]
    assert "error" not in r and r["tick_errors"] == 0, r
    assert r["ok"] and r["contactor"] is True, r
    assert r["alloc"] == 0, "control tick in demo mode: %d bytes per %d ticks" % (r["alloc"], r["ticks"])
    assert r["plant_us_per_tick"] > 0


def test_dev_board_in_demo_mode_steps_the_plant_in_its_own_task(tmp_path):
    store = tmp_path / "flash"
    store.mkdir()
    (store / "config.json").write_text(json.dumps({"pins": {"demo": True}}))
    out = run_board(tmp_path, store, [("plug(32)", 0.3), ("ev('C')", 1.5),
                                      ("print('STEP', hw.stepping, hw.step_us > 0, hw.step_us_max)", 0.3),
                                      ("status()", 0.3)])
    assert "Charging" in out, out
    line = [l for l in out.splitlines() if "STEP " in l and "print" not in l]
    assert line, out
    # sample() no longer steps the plant; its task does, and is timed.
    assert line[-1].split()[-3:-1] == ["False", "True"], line


HAL = r"""
import gc, time, micropython
from fakes import FakePort
from boards.common import pinmap, hal

port = FakePort(ct_rms_mv=176)
pins = pinmap.check(port.defaults(), None, port.caps())
hw = hal.PinHardware(port, pins, 230, 3)
wave = port.waves[0]
now = time.ticks_ms()
for k in range(1, 100):  # the slow task ran: the meter and the NTC have readings
    hw.slow(time.ticks_add(now, k * 23))
now = time.ticks_add(now, 100 * 23)
rcd = port.pins[33]


def measure(name, n=200, at=None):
    t = now if at is None else at
    hw.sample(t)  # first reading of a new input may settle the averaging ring
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    for _ in range(n):
        hw.sample(t)
    a = gc.mem_alloc() - a0
    gc.enable()
    micropython.heap_lock()  # and with the heap locked: any allocation raises
    try:
        hw.sample(t)
        err = ""
    except MemoryError as e:
        err = repr(e)
    micropython.heap_unlock()
    print("HAL %s %d %s %d %d %s" % (name, a, err or "-", hw.cp_hi[0], hw.cp_lo[0], hw.meter_wh[0]))


measure("F")                     # pilot at -12 V (boot, fault)
hw.pilot(0, 1000)
measure("A")
wave.set(9000, 9000)
measure("B1")
hw.pilot(0, 533)
wave.set(9000, -12000)
measure("B2")
wave.set(6000, -12000)
measure("C2")
hw.contactor(0, True)
port.pins[27].v = 0              # aux closed
hw.lock(0, True)
port.pins[18].v = 0              # lock feedback: locked
measure("charging")
wave.set(6000, -6000)
measure("no_diode")
wave.set(0, 0)
measure("E")
wave.set(7500, 7500)
measure("invalid")
rcd.handler(rcd)                 # RCD tripped: latched
measure("rcd_tripped")
hw.rcd_reset(0)
measure("rcd_reset_pulse", 10)
port.pins[13].v = 0              # no protective earth
measure("no_ground")
hw.contactor(0, False)           # coil off, aux still closed: a weld
measure("weld")
measure("meter_stale", at=time.ticks_add(now, 6000))
print("DONE")
"""


def test_board_hal_sample_allocates_nothing(tmp_path):
    (tmp_path / "fakes.py").write_text(FAKES)
    p = run_mp("sys.path.insert(0, %r)\n" % str(tmp_path) + HAL)
    assert p.returncode == 0 and "DONE" in p.stdout, p.stdout + p.stderr
    rows = [l.split() for l in p.stdout.splitlines() if l.startswith("HAL ")]
    assert len(rows) == 14, rows
    for _, name, alloc, err, hi, lo, wh in rows:
        assert alloc == "0" and err == "-", "sample() allocated in state %s: %s B, %s" % (name, alloc, err)
    got = {r[1]: r for r in rows}
    assert abs(int(got["charging"][4]) - 6000) <= 20  # the states are the ones named
    assert abs(int(got["no_diode"][5]) + 6000) <= 20
    assert got["meter_stale"][6] == "None" and got["charging"][6] != "None"

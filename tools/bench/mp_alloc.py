# Benchmark and test driver (MicroPython Unix port): heap allocated by the
# control tick, per 1,000 ticks, in each state a connector can be in.
#
#   micropython tools/bench/mp_alloc.py [--dir DIR] [--ticks N] [--only a,b]
#
# For each state: a fresh station with two connectors on the simulated
# plant is driven into the state with the plant running (connector 1 is the
# one under test, connector 2 stays idle), then the inputs are frozen (a
# board's sample() only copies readings into preallocated lists; the HAL's is
# checked separately) and N control ticks run with the GC off; the growth of
# gc.mem_alloc() is what the ticks allocated. One "RESULT {json}" line per
# state, with the faults and status reached so a caller can check the state
# is the one named.
#
# Last, "demo_plant_task": a dev board in demo mode, where the plant's physics
# runs in its own task; the control tick measured with the plant running, and
# the plant's step timed and measured on its own.
import sys

_parts = __file__.split("/")
sys.path.insert(0, "/".join(_parts[:-3]) or ("." if len(_parts) == 3 else ".."))

import gc
import json
import os
import time
from firmware.core.clock import SimClock
from firmware.core.log import Log
from firmware.core.store import Store
from firmware.core import config
from firmware.sim.plant import Plant
from firmware.sim.hw import SimHardware
from firmware.station import Station

PERIOD = 10


def frozen(now):
    pass  # stands in for hw.sample: the readings stay as the plant left them


class Rig:
    def __init__(self, d, sets=()):
        os.mkdir(d)
        self.clock = SimClock("step")
        cfg, errors = config.load(Store(d), ["connectors=2"] + list(sets))
        assert not errors, errors
        self.plant = Plant(2)
        self.hw = SimHardware(self.plant)
        self.st = Station(self.hw, self.clock, Store(d), cfg, Log(self.clock))
        self.o = self.plant.outlets[0]
        self.c = self.st.connectors[0]

    def run(self, ms):
        # Plant and firmware together, one control period at a time. The
        # clock's ticks need not start at 0 (nor stay below the wrap).
        for _ in range(ms // PERIOD):
            self.clock._now += PERIOD
            now = self.clock.ticks_ms()
            if not getattr(self.hw, "stepping", True):
                self.hw.step(now)  # demo mode: the plant's own task
            self.st.tick(now)

    def plug(self, amps=32, want=True):
        o = self.o
        o.pp_ohm = {13: 1500, 20: 680, 32: 220, 63: 100}.get(amps, amps)
        o.ev.plugged = True
        o.ev.set_want(want)

    def charge(self, ms=4000):
        self.plug()
        self.run(ms)
        assert self.c.contactor.cmd, "contactor did not close"

    def measure(self, ticks):
        hw, st, clock = self.hw, self.st, self.clock
        hw.sample = frozen
        gc.collect()
        gc.disable()
        a0 = gc.mem_alloc()
        for _ in range(ticks):
            clock._now += PERIOD
            st.tick(clock.ticks_ms())
        a = gc.mem_alloc() - a0
        gc.enable()
        del hw.sample
        return a


# --- the states -------------------------------------------------------------
# Each runs past the state's one-off events (the fault's log line, the pilot F
# hold, the lock release UNLOCK_FAULT_MS into a fault), so what is measured is
# the state itself.
SETTLE = 6000


def s_idle(r):
    r.run(1000)


def s_charging(r):
    r.charge()


def s_weld(r):
    r.charge()
    r.o.contactor.welded = True
    r.o.ev.set_want(False)  # the EV stops; the contactor opens and does not
    r.run(2000 + SETTLE)


def s_switch(r):
    r.o.contactor.stuck_open = True  # the contacts never close
    r.plug()
    r.run(3000 + SETTLE)


def overriding(r, fn):
    # The plant runs; fn then changes what the board read (an input the
    # plant cannot produce). Frozen afterwards as in every state.
    real = r.hw.sample

    def sample(now):
        real(now)
        fn(r.hw)
    r.hw.sample = sample


def aux_open(hw):
    hw.aux[0] = False


def s_switch_dropped(r):
    r.charge()
    overriding(r, aux_open)  # the aux opens by itself while the coil is held
    r.run(SETTLE)


def s_diode(r):
    r.o.ev.diode = False
    r.plug()
    r.run(2000 + SETTLE)


def s_pilot_f(r):
    r.charge()
    r.o.pilot_f = True
    r.run(SETTLE)


def set_invalid(hw):
    hw.cp_hi[0] = hw.cp_lo[0] = 7500  # between B (9 V) and C (6 V)


def s_pilot_invalid(r):
    r.charge()
    overriding(r, set_invalid)
    r.run(SETTLE)


def s_pilot_short(r):
    r.charge()
    r.o.ev.short = True
    r.run(SETTLE)


def s_rcd_hard(r):
    r.plug()
    r.run(1500)
    r.o.residual_ma = 40  # trips within HARD_WINDOW_MS of closing: no retry
    r.run(SETTLE)


def s_rcd_retry_wait(r):
    r.charge(6000)
    r.o.residual_ma = 40
    r.run(200)
    r.o.residual_ma = 0  # the retry comes rcd_retry_s after the trip
    r.run(SETTLE)


def s_ground(r):
    r.charge()
    r.o.ground_ok = False
    r.run(SETTLE)


def s_overcurrent(r):
    r.o.ev.greedy = True
    r.o.ev.demand_ma = r.o.ev.max_ma = 40000
    r.charge()
    r.run(8000 + SETTLE)


def s_overcurrent_opening(r):
    # Between the overcurrent fault and the forced opening OC_OPEN_MS later,
    # with the EV still drawing too much: the cause holds every tick.
    r.o.ev.greedy = True
    r.o.ev.demand_ma = r.o.ev.max_ma = 40000
    r.charge()
    for _ in range(1000):
        r.run(PERIOD)
        if r.c.faults.has("overcurrent"):
            break


def s_meter(r):
    r.charge()
    r.o.meter.ok = False
    r.run(2000 + SETTLE)


def s_cable(r):
    r.plug(5000)  # PP 5 kohm: outside every band
    r.run(SETTLE)


def s_lock(r):
    r.o.lock_jammed = True
    r.plug()
    r.run(2000 + SETTLE)


def s_temp_sensor(r):
    r.charge()
    r.plant.thermal.sensor_ok = False
    r.run(2000 + SETTLE)


def s_overtemp(r):
    r.charge()
    r.plant.thermal.set(90)
    r.run(2000 + SETTLE)


def s_derated(r):
    r.charge()
    r.plant.thermal.set(66)
    r.run(1000)


def s_stopping(r):
    r.o.ev.obey = False  # the EV ignores PWM off: the stop waits for stop_force_ms
    r.charge()
    r.c.stop("Local")
    r.run(100)


def s_evse_stop(r):
    r.charge()
    r.c.stop("Local")
    r.run(SETTLE)


# name -> (setup, fault codes that must be active, status, ticks measured at most)
STATES = (
    ("idle", s_idle, (), "Available", 0),
    ("charging", s_charging, (), "Charging", 0),
    ("weld", s_weld, ("weld",), "Faulted", 0),
    ("switch", s_switch, ("switch",), "Faulted", 0),
    ("switch_aux_dropped", s_switch_dropped, ("switch",), "Faulted", 0),
    ("diode", s_diode, ("diode",), "Faulted", 0),
    ("pilot_f", s_pilot_f, ("pilot",), "Faulted", 0),
    ("pilot_invalid", s_pilot_invalid, ("pilot",), "Faulted", 0),
    ("pilot_short_e", s_pilot_short, ("pilot_short",), "Faulted", 0),
    ("rcd_hard", s_rcd_hard, ("rcd",), "Faulted", 0),
    ("rcd_retry_wait", s_rcd_retry_wait, ("rcd",), "Faulted", 0),
    ("ground", s_ground, ("ground",), "Faulted", 0),
    ("overcurrent", s_overcurrent, ("overcurrent",), "Faulted", 0),
    ("overcurrent_opening", s_overcurrent_opening, ("overcurrent",), "Faulted", 80),
    ("meter", s_meter, ("meter",), "Faulted", 0),
    ("cable_pp", s_cable, ("cable",), "Faulted", 0),
    ("lock", s_lock, ("lock",), "Faulted", 0),
    ("temp_sensor", s_temp_sensor, ("temp_sensor",), "Faulted", 0),
    ("overtemp", s_overtemp, ("overtemp",), "Faulted", 0),
    ("derated", s_derated, ("hot",), "Charging", 0),
    # PWM off, contacts closed until the EV opens S2 or stop_force_ms (6 s).
    ("evse_stopping", s_stopping, (), "SuspendedEVSE", 500),
    ("evse_stopped", s_evse_stop, (), "Finishing", 0),
)


def demo_figures(d, ticks):
    # A dev board in demo mode (boards/common/board.py): the plant steps in
    # its own task (SimHardware.run_plant) and sample() only hands over what
    # it left. Here the two alternate as the tasks would, with the plant
    # running (no frozen inputs) while the EV charges: the control tick's
    # allocation, and the time and allocation of one plant step.
    r = Rig(d)
    r.hw.stepping = False
    r.charge()
    hw, st, clock = r.hw, r.st, r.clock
    tick_alloc = step_alloc = step_us = step_max = 0
    gc.collect()
    for k in range(ticks):
        clock._now += PERIOD
        now = clock.ticks_ms()
        gc.disable()
        a0 = gc.mem_alloc()
        t0 = time.ticks_us()
        hw.step(now)
        us = time.ticks_diff(time.ticks_us(), t0)
        a1 = gc.mem_alloc()
        st.tick(now)
        a2 = gc.mem_alloc()
        gc.enable()
        step_alloc += a1 - a0
        tick_alloc += a2 - a1
        step_us += us
        if us > step_max:
            step_max = us
        if k % 100 == 99:
            gc.collect()  # outside the measured calls: the steps' garbage
    # The pause the plant's garbage costs now and then: one full collection
    # of this heap (the station, the plant, the interpreter's own objects).
    t0 = time.ticks_us()
    gc.collect()
    gc_us = time.ticks_diff(time.ticks_us(), t0)
    c = r.c
    return {"state": "demo_plant_task", "gc_us": gc_us, "heap_used": gc.mem_alloc(), "ticks": ticks, "alloc": tick_alloc, "plant_alloc": step_alloc,
            "plant_us_per_tick": step_us / ticks, "plant_us_max": step_max, "status": c.status_name(),
            "contactor": c.contactor.cmd, "ok": c.status_name() == "Charging", "tick_errors": st.tick_errors,
            "faults": sorted(c.faults.active)}


def loop_figures(d, ms=1000):
    # The whole control task as a board runs it: asyncio, the Periodic loop
    # on the real clock (lateness record, the sleep between runs) around the
    # station's tick, charging with frozen inputs, for `ms` of real time.
    import asyncio
    from firmware.core.clock import RealClock
    from firmware.core.sched import Periodic
    r = Rig(d)
    r.charge()
    r.hw.sample = frozen
    clock = r.clock
    st = r.st

    def tick(_real_now):
        clock._now += PERIOD
        return st.tick(clock.ticks_ms())

    async def run():
        p = Periodic(RealClock(), PERIOD, tick)
        t = asyncio.create_task(p.run())
        await asyncio.sleep_ms(200)
        gc.collect()
        gc.disable()
        n0 = p.late.count
        a0 = gc.mem_alloc()
        await asyncio.sleep_ms(ms)
        a = gc.mem_alloc() - a0
        n = p.late.count - n0
        gc.enable()
        t.cancel()
        return a, n

    a, n = asyncio.run(run())
    c = r.c
    return {"state": "control_task_loop", "ticks": 1000, "measured": n, "alloc": a * 1000 // max(1, n),
            "status": c.status_name(), "contactor": c.contactor.cmd, "ok": n > 0 and c.contactor.cmd,
            "tick_errors": st.tick_errors, "faults": sorted(c.faults.active)}


def main():
    d = "/tmp/mp_alloc_%d" % time.ticks_ms()
    ticks = 1000
    only = None
    it = iter(sys.argv[1:])
    for a in it:
        if a == "--dir":
            d = next(it)
        elif a == "--ticks":
            ticks = int(next(it))
        elif a == "--only":
            only = next(it).split(",")
        else:
            print("usage: mp_alloc.py [--dir DIR] [--ticks N] [--only a,b]")
            sys.exit(2)
    try:
        os.mkdir(d)
    except OSError:
        pass
    for name, setup, codes, status, most in STATES:
        if only and name not in only:
            continue
        res = {"state": name, "ticks": ticks}
        try:
            r = Rig("%s/%s" % (d, name))
            setup(r)
            n = min(ticks, most) if most else ticks
            a = r.measure(n)
            res["alloc"] = a * ticks // n  # per `ticks` ticks
            res["measured"] = n
            c = r.c
            res["faults"] = sorted(c.faults.active)
            res["status"] = c.status_name()
            res["contactor"] = c.contactor.cmd
            res["want_faults"] = list(codes)
            res["want_status"] = status
            res["ok"] = all(k in c.faults.active for k in codes) and res["status"] == status
            res["tick_errors"] = r.st.tick_errors
            if "internal" in c.faults.active:
                res["internal"] = c.faults.active["internal"].cause
        except Exception as e:
            res["error"] = repr(e)
        print("RESULT " + json.dumps(res))
    for name, fn, args in (("control_task_loop", loop_figures, ("%s/loop" % d,)),
                           ("demo_plant_task", demo_figures, ("%s/demo" % d, ticks))):
        if not only or name in only:
            try:
                res = fn(*args)
            except Exception as e:
                res = {"state": name, "error": repr(e)}
            print("RESULT " + json.dumps(res))


main()

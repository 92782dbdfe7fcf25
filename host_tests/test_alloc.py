"""The control tick must not allocate: no GC pause can start from the safety loop."""
from mp import run_mp

SCRIPT = r"""
import gc
from firmware.core.clock import SimClock
from firmware.core.log import Log
from firmware.core.store import Store
from firmware.core import config
from firmware.sim.plant import Plant
from firmware.sim.hw import SimHardware
from firmware.station import Station
clock = SimClock("step")
store = Store(TMP)
cfg, e = config.load(store, ["connectors=2"])
plant = Plant(2)
hw = SimHardware(plant)
st = Station(hw, clock, store, cfg, Log(clock))
o = plant.outlets[0]; o.pp_ohm = 220; o.ev.plugged = True; o.ev.set_want(True)
now = 0
for i in range(400):        # plug in and let the contactor close
    now += 10; clock._now = now; st.tick(now)
assert st.connectors[0].contactor.cmd
hw.sample = lambda now: None  # a board's sample() only copies readings; time the firmware alone
gc.collect(); gc.disable()
a0 = gc.mem_alloc()
for i in range(1000):
    now += 10; clock._now = now; st.tick(now)
print("ALLOC", gc.mem_alloc() - a0)
"""


def test_control_tick_allocates_nothing_while_charging(tmp_path):
    p = run_mp("TMP = %r\n" % str(tmp_path) + SCRIPT)
    assert p.returncode == 0, p.stdout + p.stderr
    line = [l for l in p.stdout.splitlines() if l.startswith("ALLOC")][-1]
    assert line == "ALLOC 0", line

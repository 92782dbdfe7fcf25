"""A charger is an object: several run in one process without sharing state."""
import os

from fwproc import ROOT
from mp import run_mp

FLEET = r"""
import asyncio, json
from firmware.core.clock import SimClock
from firmware.core.log import Log
from firmware.core.store import Store
from firmware.core import config
from firmware.sim.plant import Plant
from firmware.sim.hw import SimHardware
from firmware.station import Station

clock = SimClock("step")
stations = []
for n in range(3):
    store = Store("%s/cp%d" % (TMP, n))
    cfg, errors = config.load(store, ["id=CP%d" % n, "max_current_a=%d" % (16 + 8 * n)])
    assert not errors, errors
    plant = Plant(1, seed=n + 1)
    st = Station(SimHardware(plant), clock, store, cfg, Log(clock))
    st.plant = plant
    st.start()
    stations.append(st)

async def main():
    await clock.advance(100)
    for n, st in enumerate(stations[:2]):   # the third stays idle
        ev = st.plant.outlets[0].ev
        st.plant.outlets[0].pp_ohm = 220
        ev.plugged = True
        ev.set_want(True)
        st.hw.changed()
    await clock.advance(3000)
    stations[1].plant.thermal.set(69)  # only this one is hot
    stations[1].hw.changed()
    await clock.advance(600000)
    out = []
    for st in stations:
        c = st.connectors[0]
        out.append([st.cfg["id"], c.contactor.cmd, c.offered_ma, c.energy.wh, st.derate.percent()])
    print(json.dumps(out))

asyncio.run(main())
"""


def test_three_stations_in_one_loop(tmp_path):
    p = run_mp("TMP = %r\n" % str(tmp_path) + FLEET)
    assert p.returncode == 0, p.stdout + p.stderr
    import json
    out = json.loads(p.stdout.strip().splitlines()[-1])
    (a, b, c) = out
    assert a[:3] == ["CP0", True, 16000]       # its own limit
    assert b[0] == "CP1" and b[1] and b[4] == 25 and b[2] == 6000  # 25 % of its 24 A
    assert c == ["CP2", False, 0, 0, 100]       # untouched by the others
    assert a[3] > 0 and b[3] > 0 and a[3] != b[3]


def _firmware_modules():
    # Every module under firmware/ (so a new one cannot slip past), plus the
    # board code that runs on the Unix port.
    out = []
    for base, dirs, files in os.walk(os.path.join(ROOT, "firmware")):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
        rel = os.path.relpath(base, ROOT).replace(os.sep, ".")
        for f in sorted(files):
            if f.endswith(".py") and f != "manifest.py":
                out.append(rel if f == "__init__.py" else rel + "." + f[:-3])
    return out + ["boards.unix.board", "boards.unix.control", "boards.common.loader"]


MODULES = _firmware_modules()

CHECK = r"""
def frozen(v, depth=0):
    if v is None or isinstance(v, (bool, int, float, str, bytes)):
        return True
    if isinstance(v, tuple):
        return all(frozen(x) for x in v)
    if isinstance(v, dict):   # constant tables: every value must be immutable
        return all(frozen(k) and frozen(x) for k, x in v.items())
    return False
bad = []
for name in MODS:
    m = __import__(name, None, None, ["x"])
    for k in dir(m):
        if k.startswith("__"):
            continue
        v = getattr(m, k)
        t = type(v)
        if t.__name__ in ("function", "closure", "bound_method", "module", "type", "generator"):
            continue
        if isinstance(v, type):
            continue
        if not frozen(v):
            bad.append("%s.%s: %s" % (name, k, t.__name__))
print("BAD", bad)
"""


def test_no_module_level_mutable_state():
    p = run_mp("MODS = %r\n" % MODULES + CHECK)
    assert p.returncode == 0, p.stderr
    line = [l for l in p.stdout.splitlines() if l.startswith("BAD")][-1]
    assert line == "BAD []", line

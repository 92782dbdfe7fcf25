# The simulated plant of one charger: per connector an EV, a contactor, an
# RCD, a PE check and a meter; one thermal mass for the enclosure. step(now)
# advances the physics to `now` (ms); commands come from the bench.

from firmware.core.clock import ticks_add, ticks_diff  # ms ticks wrap at 2^30 (boards' period) on every port
import json
import os
from firmware.sim.ev import EV
from firmware.sim.contactor import SimContactor
from firmware.sim.meter import SimMeter
from firmware.sim.thermal import Thermal
from firmware.core.rng import Rng
from firmware.core.store import depth_ok

# Cable rating (A) -> PP resistor (ohm), IEC 62196.
PP_OHM = {13: 1500, 20: 680, 32: 220, 63: 100, 70: 100}
RCD_AC_MA = 30
MAX_STATE_BYTES = 16384  # plant.json read back at most this big (a 4-outlet one is under 2 kB)
LOCK_MS = 50  # the lock motor's travel time


def _num(x):
    # 45.0 -> "45", 72.01000000000001 -> "72", 16.5 -> "16.5": for the banner.
    r = round(x, 1)
    return "%d" % r if r == int(r) else "%.1f" % r


class Outlet:
    def __init__(self, rng, voltage_mv, phases):
        self.ev = EV()
        self.contactor = SimContactor(rng)
        self.meter = SimMeter(voltage_mv, phases)
        self.duty = 1000
        self.pp_ohm = -1  # no cable
        self.pp_open = False  # injected: broken PP resistor, reads as open
        self.residual_ma = 0
        self.rcd_tripped = False
        self.ground_ok = True
        self.pilot_f = False  # pilot wire pulled to -12 V (wiring fault)
        self.lock_cmd = False
        self.locked = False
        self.lock_jammed = False  # injected: the actuator does not move
        self._lock_at = None
        self.hi = 12000
        self.lo = 12000


class Plant:
    def __init__(self, connectors=1, seed=1, voltage_mv=230000, phases=3, path=None):
        self.rng = Rng(seed)
        self.outlets = [Outlet(self.rng, voltage_mv, phases) for _ in range(connectors)]
        self.thermal = Thermal()
        self.tamper = False  # the enclosure's tamper switch: True = opened
        self.now = None
        self.wall = 0  # epoch seconds the plant was last saved at (sim board)
        self.path = path
        self.noise_mv = 100
        self.trace = []  # (ms, connector, what, value): a bench scope
        self.trace_max = 400

    def mark(self, i, what, value, at=None):
        if self.now is None:
            return
        t = self.trace
        t.append((self.now if at is None else at, i + 1, what, value))
        if len(t) > self.trace_max:
            del t[0]

    def step(self, now):
        if self.now is None:
            self.now = now
        dt = ticks_diff(now, self.now)
        self.now = now
        amps = 0.0
        outlets = self.outlets
        for i in range(len(outlets)):  # (enumerate would allocate every step)
            o = outlets[i]
            if o._lock_at is not None and ticks_diff(now, o._lock_at) >= 0:
                o._lock_at = None
                if not o.lock_jammed and o.locked != o.lock_cmd:
                    o.locked = o.lock_cmd
                    self.mark(i, "locked", o.locked)
            moved = o.contactor.step(now)
            if moved is not None:
                self.mark(i, "contacts", o.contactor.closed, moved)
            ev = o.ev
            before = ev.state()
            m = o.meter
            draw = ev.step(now, dt, o.duty, o.contactor.closed, m.voltage_mv * m.phases)
            if ev.state() != before:
                self.mark(i, "ev", ev.state())
            if m.ok:
                m.step(dt, draw)
            if draw:
                amps += draw / 1000
            if o.residual_ma > RCD_AC_MA and not o.rcd_tripped:
                o.rcd_tripped = True
                self.mark(i, "rcd", True)
            n = self.rng.range(-self.noise_mv, self.noise_mv) if self.noise_mv else 0
            if o.pilot_f:
                o.hi = o.lo = -12000 + n
            else:
                o.hi, o.lo = ev.pilot_mv(o.duty, n)
        self.thermal.step(dt, amps)

    def quiet_ms(self, now):
        q = 1 << 30
        for o in self.outlets:
            t = o.ev.next_event_ms(now)
            if 0 <= t < q:
                q = t
            t = o.contactor.next_event_ms(now)
            if 0 <= t < q:
                q = t
            if o._lock_at is not None and ticks_diff(o._lock_at, now) < q:
                q = max(0, ticks_diff(o._lock_at, now))
        return q

    def set_duty(self, i, duty):
        o = self.outlets[i]
        if duty != o.duty:
            o.duty = duty
            self.mark(i, "duty", duty)

    def set_coil(self, i, on):
        o = self.outlets[i]
        if on != o.contactor.coil:
            o.contactor.command(on, self.now or 0)
            self.mark(i, "coil", on)

    def set_lock(self, i, on):
        o = self.outlets[i]
        if on != o.lock_cmd:
            o.lock_cmd = on
            o._lock_at = ticks_add(self.now or 0, LOCK_MS)

    def power_lost(self):
        for i, o in enumerate(self.outlets):
            was = o.contactor.closed
            o.contactor.power_lost()
            if was and not o.contactor.closed:
                self.mark(i, "contacts", False)  # the scope sees them fall with the supply
            o.duty = 0
            o.rcd_tripped = False

    def summary(self):
        # What the bench shows of the world beside the firmware's own view.
        return {"temp_c": round(self.thermal.temp, 2), "ambient_c": self.thermal.ambient,
                "ev": [o.ev.state() for o in self.outlets],
                "contacts": [o.contactor.closed for o in self.outlets],
                "draw_ma": [int(o.ev.draw_ma) for o in self.outlets],
                "meter_wh": [round(o.meter.wh, 3) for o in self.outlets],
                "soc_pct": [o.ev.soc_pct for o in self.outlets],
                "now": self.now}

    def reset(self):
        # The bench's plant_reset(): the world outside as on a first start (no
        # EV, a new default one waiting, 25 C, nothing injected), while the
        # charger's own hardware keeps what it holds: the meter registers
        # (they never run backward), the lock's position and a latched RCD.
        for i in range(len(self.outlets)):
            o = self.outlets[i]
            o.ev = EV()
            o.pp_ohm = -1
            o.pp_open = False
            o.residual_ma = 0
            o.ground_ok = True
            o.pilot_f = False
            o.lock_jammed = False
            o.meter.ok = True
            k = o.contactor
            k.welded = False
            k.stuck_open = False
            if k.closed and not k.coil:
                k.closed = False  # contacts held only by a weld fall open
                self.mark(i, "contacts", False)
        self.thermal = Thermal()
        self.tamper = False

    def changes(self):
        # What a restored plant holds that a fresh one does not, in words
        # (the banner says it, so a hot day or a plugged EV is no surprise).
        fresh = Thermal()
        out = []
        t = self.thermal
        if t.ambient != fresh.ambient:
            out.append("ambient %s C" % _num(t.ambient))
        if abs(t.temp - t.ambient) >= 1 and abs(t.temp - fresh.temp) >= 1:
            out.append("charger at %s C" % _num(t.temp))
        if not t.sensor_ok:
            out.append("temperature sensor failed")
        if self.tamper:
            out.append("enclosure open")
        new = EV()
        for i in range(len(self.outlets)):
            o = self.outlets[i]
            ev = o.ev
            what = []
            if ev.plugged:
                what.append("EV plugged in" + (" asking for energy" if ev.want else ""))
            if ev.demand_ma != new.demand_ma:
                what.append("demand %s A" % _num(ev.demand_ma / 1000))
            if ev.capacity_wh != new.capacity_wh:
                what.append("battery %s" % ("endless" if not ev.capacity_wh else "%d kWh" % (ev.capacity_wh // 1000)))
            if ev.capacity_wh and ev.soc_pct != new.soc_pct:
                what.append("SoC %d %%" % ev.soc_pct)
            for k in ("obey", "greedy", "diode", "short", "vent"):
                if getattr(ev, k) != getattr(new, k):
                    what.append("%s=%s" % (k, getattr(ev, k)))
            for name, on in (("weld", o.contactor.welded), ("stuck_open", o.contactor.stuck_open),
                             ("rcd", o.residual_ma > RCD_AC_MA), ("ground", not o.ground_ok),
                             ("pilot_f", o.pilot_f), ("meter", not o.meter.ok), ("lock", o.lock_jammed),
                             ("pp", o.pp_open)):
                if on:
                    what.append("fault %s" % name)
            if what:
                out.append("connector %d: %s" % (i + 1, ", ".join(what)))
        return out

    # --- persistence: the world outside the charger outlives its power ------
    def to_dict(self):
        return {
            "wall": self.wall,
            "tamper": self.tamper,
            "thermal": self.thermal.to_dict(),
            "outlets": [{"ev": o.ev.to_dict(), "pp_ohm": o.pp_ohm, "pp_open": o.pp_open, "residual_ma": o.residual_ma,
                         "ground_ok": o.ground_ok, "pilot_f": o.pilot_f, "meter_wh": o.meter.wh,
                         "meter_ok": o.meter.ok, "welded": o.contactor.welded,
                         "stuck_open": o.contactor.stuck_open, "locked": o.locked,
                         "lock_jammed": o.lock_jammed,
                         "closed": o.contactor.closed} for o in self.outlets],
        }

    def load(self, d):
        self.wall = d.get("wall", 0)
        self.tamper = d.get("tamper", False)  # an opened enclosure stays open unpowered
        self.thermal.load(d.get("thermal", {}))
        for o, od in zip(self.outlets, d.get("outlets", [])):
            o.ev.load(od.get("ev", {}))
            o.pp_ohm = od.get("pp_ohm", -1)
            o.pp_open = od.get("pp_open", False)
            o.residual_ma = od.get("residual_ma", 0)
            o.ground_ok = od.get("ground_ok", True)
            o.pilot_f = od.get("pilot_f", False)
            o.meter.wh = float(od.get("meter_wh", 0.0))
            o.meter.ok = od.get("meter_ok", True)
            o.contactor.welded = od.get("welded", False)
            o.contactor.stuck_open = od.get("stuck_open", False)
            o.locked = o.lock_cmd = od.get("locked", False)  # a lock keeps its position unpowered
            o.lock_jammed = od.get("lock_jammed", False)
            # Power was off: only welded contacts can still be closed.
            o.contactor.closed = bool(od.get("closed")) and o.contactor.welded
            o.duty = 1000

    def save(self):
        if not self.path:
            return
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(self.to_dict()))
        os.rename(tmp, self.path)

    def restore(self):
        if not self.path:
            return False
        # What flash holds may be anything: bounded in size and nesting before
        # it is parsed; a bad file is a fresh plant, never a failed boot.
        try:
            size = os.stat(self.path)[6]
            if size > MAX_STATE_BYTES:
                return False
            with open(self.path, "rb") as f:
                raw = f.read(size)
            if not depth_ok(raw):
                return False
            self.load(json.loads(raw.decode()))
            return True
        except (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError):
            return False

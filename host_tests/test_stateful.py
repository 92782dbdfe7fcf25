"""Random plant events against the charger's safety rules (hypothesis, stateful).

One firmware process per example (simulated time, step mode). Hypothesis picks
a sequence of bench events: plug / unplug, EV pilot state, diode, demand,
temperature, limits, stop, tokens, injected faults, EV manners, reboot, power
cut, and time steps from a few ms to minutes. After every step the test reads
the status and the plant's trace (the bench scope: coil, contacts, duty, EV,
lock, RCD events with their simulated time) and checks:

(a) The coil is never on while a reason to be open has lasted longer than its
    budget, and never switched on while such a reason holds. The model keeps,
    per reason, the simulated time it started ("failing since"):

      reason                                          source       budget
      pilot not C (D not allowed: ventilation off),    plant        100 ms
        pilot F/E, unplugged
      no EV diode while PWM runs                       plant        100 ms
      residual current (RCD)                           plant        100 ms
      no earth, from 1 s after the contacts closed     plant        100 ms
      connector not locked (socket outlet)             plant        100 ms
      PWM off (EVSE-initiated stop)                    trace        6 s + tick
      meter not answering, temperature sensor failed,  plant        6 s + tick
        temperature >= 71 C, external limit < 6 A
      not authorized, not available                    status       6 s + tick
      active fault, from its "since" tick:             status
        opens-at-once faults (rcd, ground, diode, pilot,            100 ms
        pilot_short, weld, switch, lock, cable, watchdog, internal)
        overcurrent                                                 1 s + tick
        meter, overtemp, temp_sensor                                6 s + tick

    Reasons known only from a status sample (authorized, temperature) start
    at the sample, never earlier, so the model can only under-report. A coil
    close is checked against every reason but the earth (checked only after
    closing, by design); the pilot and diode get 50 ms to pass the filter.
(b) offered_ma <= min(32 A, cable rating, the default derate curve at the
    plant's temperature, the external limit).
(c) energy_wh never decreases, across reboot and power cut too.
(d) Close conditions: the coil is switched on only after the contacts were
    seen open with the coil off since the last opening (or the restart);
    contacts closed with the coil off at power-up (reboot or power cut) are a
    weld fault at the first status: a weld is never forgotten.
(e) Cable rating: a known cable limit never exceeds the plugged cable's
    rating (a plug-in through E or F included), and nothing is offered while
    it is unknown.
(f) Lock: every release (the scope's `locked` False less the motor's 50 ms)
    comes at least 100 ms after the contacts were seen open with the coil off.
Plus: contacts closed with the coil off for over 1.1 s means a weld fault is
reported, and the status agrees with the trace about the coil.

The machine runs with one and with two connectors (TwoConnectors): every
connector rule takes a connector number, the model keeps one Side per
connector, and the checks run for each. Simulated times are unwrapped from
the boards' 2^30 ms tick counter into one model time line that also goes on
across power cuts (where the charger's clock starts again).

Rules: each bench event is a rule; `charge` plugs in and asks for energy so
enough examples charge; `disturb` (only while the coil is on) fires one event,
maybe a second one a moment later, picked from groups (slow faults that stop
the EVSE way, EVSE-initiated stops, pilot events, faults that open at once,
other) so that pairs across groups are not rare. Time steps: 1-99 ms, 0.1-3 s,
3-12 s, and 30 s / 65 s / 310 s (derate interval, meter save, RCD retry).

Examples and steps: STATEFUL_EXAMPLES (default 70; 40 with two connectors),
STATEFUL_STEPS (default 25); with CI set each run must reach 1,000 steps.
A failure prints the shrunk sequence. What the search found is also kept as
fixed examples at the end of this file.
"""
import os
import shutil
import tempfile

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, note, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from fwproc import FirmwareProcess

TICK = 10  # control period (ms)
FAST = 100  # open within this: pilot, E, F, diode, RCD, ground, weld/switch, lock
EVSE_STOP = 6000 + TICK  # EVSE-initiated stop: force open 6 s after PWM off
OC_OPEN = 1000 + TICK  # overcurrent: open 1 s after PWM off
PILOT_DETECT = 50  # the pilot filter may take this long before a close sees a change
GROUND_MS = 1000  # earth checked this long after closing
AUX_MS = 1000  # a contactor still closed this long after opening is welded
SHUTDOWN_C = 71
MAX_MA = 32000
CABLES = (13, 20, 32, 63, 70)
CABLE_MA = {13: 13000, 20: 20000, 32: 32000, 63: 63000, 70: 63000}  # 63 and 70 A share the 100 ohm PP
AT_ONCE = {"rcd", "ground", "diode", "pilot_short", "pilot", "weld", "switch", "lock", "cable", "watchdog",
           "internal"}
PLANT_FAULTS = ("weld", "rcd", "ground", "meter", "pilot_short", "pilot_f", "lock", "temp_sensor",
                "stuck_open", "pp")
FW_PREFIX = "fw:"  # reasons read from the status (authorized, available, faults)
UNLOCK_MARGIN = 100  # the lock is released this long after the contacts read open
LOCK_TRAVEL = 50  # the simulated lock motor: the scope's `locked` comes this long after the command
PERIOD = 1 << 30  # the boards' ticks_ms period
START_S = 30  # a loaded CI machine may start the Unix port slowly: not a finding of the search
CONN = st.integers(1, 2)  # connector number; folded onto connector 1 with one connector


def tdiff(a, b):
    # a - b on the wrapping tick counter.
    return ((a - b + PERIOD // 2) % PERIOD) - PERIOD // 2

STATS = {"examples": 0, "steps": 0, "closes": 0, "steps_closed": 0, "reasons": {}}


def budget(reason):
    if reason in ("pilot", "diode", "rcd", "ground", "unlocked"):
        return FAST
    if reason.startswith(FW_PREFIX + "fault:"):
        code = reason.split(":", 2)[2]
        if code in AT_ONCE:
            return FAST
        if code == "overcurrent":
            return OC_OPEN
    return EVSE_STOP  # pwm_off, meter, sensor, hot, limit, unauthorized, unavailable, slow faults


def close_allowance(reason):
    # How long a reason may already hold when the coil closes; None: not checked.
    if reason == "ground":
        return None
    if reason in ("pilot", "diode"):
        return PILOT_DETECT
    return 0


def derate_ma(temp_c):
    # The default curve without hysteresis: the most the charger may offer.
    pct = 0 if temp_c >= 71 else 25 if temp_c >= 68 else 50 if temp_c >= 65 else 100
    return MAX_MA * pct // 100


class Side:
    # The model of one connector: what the bench did to its outlet, what the
    # plant did (from the trace and the status), and its reasons to be open.
    def __init__(self):
        # what the bench did to the plant
        self.plugged = False
        self.unplugged_at = -10 ** 9
        self.cable = 32
        self.pilot_f = False
        self.diode = True
        self.residual = False
        self.ground_ok = True
        self.ground_lost_at = 0
        self.meter_ok = True
        self.ext_limit = None
        # what the plant did, from the trace and the status
        self.ev_state = "A"
        self.duty = 1000
        self.contacts = False
        self.contacts_at = 0
        self.locked = False
        self.coil = False
        self.coil_at = 0
        # the model
        self.reasons = {}  # reason -> since (ms)
        self.aux_alone_since = None  # contacts closed with the coil off
        self.energy = 0
        self.proven_open = False  # contacts seen open with the coil off since the last close / restart
        self.open_at = None  # since when the coil is off and the contacts open
        self.just_booted = True  # the next sample is the first after a restart


PER_SIDE = frozenset(Side().__dict__)


class ChargerMachine(RuleBasedStateMachine):
    N = 1  # connectors

    def __init__(self):
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="stateful-")
        self.fw = None
        self.sides = [Side() for _ in range(self.N)]
        self.cur = self.sides[0]  # the side the per-connector names below refer to
        self.sensor_ok = True
        self.temp_c = 25.0
        self.t = 0  # model time (ms) of the last sample: unwrapped, and going on across power cuts
        self.raw = None  # the charger's tick at that sample; None: restarted since
        self.ring = []  # the plant's trace as last read
        self.violations = []
        STATS["examples"] += 1

    # Per-connector model state lives in the current Side: the rules and
    # checks below read and write it as self.<name>.
    def __getattr__(self, name):
        if name in PER_SIDE:
            return getattr(self.__dict__["cur"], name)
        raise AttributeError(name)

    def __setattr__(self, name, value):
        if name in PER_SIDE:
            setattr(self.cur, name, value)
        else:
            object.__setattr__(self, name, value)

    def pick(self, c):
        # Rules name a connector 1..2; with one connector it is always 1.
        k = min(c, self.N)
        self.cur = self.sides[k - 1]
        return k

    def teardown(self):
        if self.fw:
            self.fw.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- the firmware --------------------------------------------------------
    def cmd(self, op, expect_ok=True, **args):
        if op not in ("temp", "ambient", "reboot", "status"):
            args["c"] = self.sides.index(self.cur) + 1
        r = self.fw.request(dict(op=op, **args))
        if expect_ok is not None:
            assert r.get("ok") is expect_ok, (op, args, r)
        return r

    def new_events(self):
        # The plant's trace is a ring of the last 400 events without sequence
        # numbers, and contact moves are stamped with the instant they
        # happened (a little before the tick that saw them), so it is not
        # sorted by time: take the whole ring and skip the overlap with the
        # last one.
        ring = [tuple(e) for e in self.fw.trace(0)]
        old = self.ring
        new = ring
        for d in range(len(old) + 1):
            k = len(old) - d
            if ring[:k] == old[d:]:
                new = ring[k:]
                break
        assert not (old and len(new) == len(ring) and len(ring) >= 400), \
            "trace ring overflowed; shorten the time steps"
        self.ring = ring
        return new

    # --- reasons to be open --------------------------------------------------
    def plant_reasons(self):
        r = {}
        if self.ev_state != "C" or self.pilot_f:
            r["pilot"] = None
        pwm = 0 < self.duty < 1000
        if not pwm:
            r["pwm_off"] = None
        if pwm and not self.diode and self.ev_state in "BCD" and not self.pilot_f:
            r["diode"] = None
        if self.residual:
            r["rcd"] = None
        if not self.ground_ok and self.coil and self.contacts:
            r["ground"] = max(self.ground_lost_at, max(self.contacts_at, self.coil_at) + GROUND_MS)
        if not self.locked:
            r["unlocked"] = None
        if not self.meter_ok:
            r["meter"] = None
        if not self.sensor_ok:
            r["sensor"] = None
        if self.temp_c >= SHUTDOWN_C + 0.05:
            r["hot"] = None
        if self.ext_limit is not None and int(self.ext_limit * 1000) < 6000:
            r["limit"] = None
        return r

    def violate(self, msg):
        self.violations.append(msg)

    def end(self, reason, x):
        since = self.reasons.pop(reason)
        if self.coil and x - since > budget(reason):
            self.violate("coil on at %d ms while %s since %d ms (budget %d ms)" % (x, reason, since, budget(reason)))

    def recompute(self, x):
        # Plant reasons after a change at time x.
        now = self.plant_reasons()
        for k in [k for k in self.reasons if not k.startswith(FW_PREFIX)]:
            if k not in now:
                self.end(k, x)
        for k, since in now.items():
            if k not in self.reasons:
                self.reasons[k] = x if since is None else since
                STATS["reasons"][k] = STATS["reasons"].get(k, 0) + 1
        if self.contacts and not self.coil:
            if self.aux_alone_since is None:
                self.aux_alone_since = x
        else:
            self.aux_alone_since = None
        if not self.contacts and not self.coil:
            self.proven_open = True
            if self.open_at is None:
                self.open_at = x
        else:
            self.open_at = None

    def over_budget(self, x):
        if self.coil:
            for k, since in self.reasons.items():
                if x - since > budget(k):
                    self.violate("coil on at %d ms while %s since %d ms (budget %d ms)" % (x, k, since, budget(k)))

    def event(self, e):
        x, _, what, val = e
        if what == "coil":
            if val:
                STATS["closes"] += 1
                if not self.proven_open:
                    self.violate("coil closed at %d ms before the contacts were seen open since the last "
                                 "opening or restart" % x)
                self.proven_open = False
                for k, since in self.reasons.items():
                    allow = close_allowance(k)
                    if allow is not None and x - since > allow:
                        self.violate("coil closed at %d ms while %s since %d ms" % (x, k, since))
            else:
                self.over_budget(x)
            self.coil = val
            self.coil_at = x
        elif what == "duty":
            self.duty = val
        elif what == "ev":
            self.ev_state = val
        elif what == "contacts":
            self.contacts = val
            if val:
                self.contacts_at = x
        elif what == "locked":
            if not val:
                STATS["unlocks"] = STATS.get("unlocks", 0) + 1
                cmd = x - LOCK_TRAVEL
                if self.coil or self.contacts or self.open_at is None or cmd - self.open_at < UNLOCK_MARGIN:
                    self.violate("lock released (commanded at %d ms) with the contacts %s" % (
                        cmd, "not open" if self.open_at is None else "open only since %d ms" % self.open_at))
            self.locked = val
        self.recompute(x)

    def firmware_reasons(self, c, t1):
        r = {}
        if not c["authorized"]:
            r[FW_PREFIX + "unauthorized"] = t1
        if not c["available"]:
            r[FW_PREFIX + "unavailable"] = t1
        for f in c["faults"]:
            if f["severity"] != "derate":
                r[FW_PREFIX + "fault:" + f["code"]] = f["since"]
        return r

    # --- one step: after each action -------------------------------------------
    def after(self, action):
        t_prev = self.t
        events = self.new_events()
        s = self.fw.status()
        raw1 = s["t"]
        t1 = t_prev if self.raw is None else t_prev + tdiff(raw1, self.raw)
        self.t, self.raw = t1, raw1

        def model(x):  # a charger tick on the model's time line
            return t1 + tdiff(x, raw1)

        events = [(model(e[0]),) + tuple(e[1:]) for e in events]
        self.temp_c = s["plant"]["temp_c"]
        cur = self.cur
        for k, side in enumerate(self.sides):
            self.cur = side
            self.after_side(action, k, s, [e for e in events if e[1] == k + 1], t_prev, t1, model)
        self.cur = cur
        STATS["steps"] += 1
        op = action.split("(")[0].split(" ")[0]
        STATS.setdefault("actions", {})[op] = STATS.setdefault("actions", {}).get(op, 0) + 1
        if any(sd.coil for sd in self.sides):
            STATS["steps_closed"] += 1

    def after_side(self, action, k, s, events, t_prev, t1, model):
        self.recompute(t_prev)  # the bench changed the plant at t_prev
        c = s["connectors"][k]
        for f in c["faults"]:
            f["since"] = model(f["since"])
        # Firmware reasons: gone ones ended at t_prev at the latest (the
        # conservative choice); new ones start at their fault tick or now.
        fr = self.firmware_reasons(c, t1)
        for r in [r for r in self.reasons if r.startswith(FW_PREFIX)]:
            if r not in fr or (":" in r[len(FW_PREFIX):] and fr[r] != self.reasons[r]):
                del self.reasons[r]  # gone, or cleared and raised again
        timeline = [(e[0], 0, e) for e in events]
        for r, since in fr.items():
            if r not in self.reasons:
                timeline.append((max(since, t_prev), 1, (r, since)))
                STATS["reasons"][r] = STATS["reasons"].get(r, 0) + 1
        timeline.sort(key=lambda x: (x[0], x[1]))
        for x, kind, p in timeline:
            if kind == 0:
                self.event(p)
            else:
                self.reasons[p[0]] = p[1]
        # Resync with the sample (reboot and power loss move the plant without
        # trace events); anything that differs changed by t1 at the latest.
        p = s["plant"]
        self.ev_state = p["ev"][k]
        self.contacts = p["contacts"][k]
        self.duty = c["duty_pm"]
        self.locked = bool(c["locked"])
        self.recompute(t1)
        self.over_budget(t1)
        codes = [f["code"] for f in c["faults"]]

        # Same-tick facts of the status.
        if c["contactor"] != self.coil:
            self.violate("status contactor %s but the trace says coil %s" % (c["contactor"], self.coil))
        if c["contactor"]:
            if c["pilot"] != "C":
                self.violate("contactor closed with the firmware's pilot in %s" % c["pilot"])
            bad = [x for x in codes if x in AT_ONCE]
            if bad:
                self.violate("contactor closed with open-at-once faults %s" % bad)
        if self.aux_alone_since is not None and t1 - self.aux_alone_since > AUX_MS + FAST:
            if "weld" not in codes:
                self.violate("contacts closed with the coil off since %d ms, no weld fault at %d ms"
                             % (self.aux_alone_since, t1))
        # (d) a weld is never forgotten: closed contacts at power-up are one at once
        if self.just_booted:
            self.just_booted = False
            if self.contacts and not self.coil:
                STATS["weld_boots"] = STATS.get("weld_boots", 0) + 1
            if self.contacts and not self.coil and "weld" not in codes:
                self.violate("contacts closed with the coil off at power-up and no weld fault")
        # (b) offered current
        bound = min(MAX_MA, CABLE_MA[self.cable], derate_ma(self.temp_c - 0.1))
        if self.ext_limit is not None:
            bound = min(bound, int(self.ext_limit * 1000))
        if c["offered_ma"] > bound:
            self.violate("offered %d mA > bound %d mA (cable %d A, %.2f C, limit %s)"
                         % (c["offered_ma"], bound, self.cable, self.temp_c, self.ext_limit))
        # (e) the cable's limit: never above the plugged cable, nothing offered while unknown
        lim = c["limits"]["cable"]
        if lim is None or lim == "unknown":  # a socket's cable: "no limit" cannot be
            if c["offered_ma"] or c["pwm"]:
                self.violate("offered %d mA (PWM %s) with the cable rating unknown" % (c["offered_ma"], c["pwm"]))
        elif self.plugged and lim > CABLE_MA[self.cable]:
            self.violate("cable limit %d mA on a %d A cable" % (lim, self.cable))
        # (c) energy register
        wh = c["energy_wh"]
        if wh is not None:
            if wh < self.energy:
                self.violate("energy_wh went from %d to %d Wh" % (self.energy, wh))
            self.energy = max(self.energy, wh)

        if self.violations:
            msg = "connector %d after %s at %d ms: %s\nreasons %s\nstatus %s\ntrace %s" % (
                k + 1, action, t1, "; ".join(self.violations), self.reasons,
                {x: c[x] for x in ("pilot", "duty_pm", "offered_ma", "contactor", "aux", "locked",
                                   "authorized", "faults", "energy_wh", "limits")},
                events[-12:])
            raise AssertionError(msg)
        note("%s -> c%d t=%d pilot=%s duty=%d coil=%s faults=%s" % (
            action, k + 1, t1, c["pilot"], c["duty_pm"], self.coil, codes))

    # --- rules -----------------------------------------------------------------
    @initialize(charge=st.booleans(), cable=st.sampled_from(CABLES), c=CONN)
    def boot(self, charge, cable, c):
        self.fw = FirmwareProcess(self.dir, connectors=self.N).start(timeout=START_S)
        self.after("boot")
        if charge:
            self.pick(c)
            self.cmd("plug", amps=cable)
            self.plugged, self.cable = True, cable
            self.cmd("ev", state="C")
            self.after("plug(%d) ev(C)" % cable)
            self.fw.advance(1000)
            self.after("advance(1000)")

    def can_plug(self):
        # A cable cannot be swapped faster than the pilot filter sees A.
        return not self.plugged and self.t - self.unplugged_at >= 100

    def do_plug(self, amps):
        self.cmd("plug", amps=amps)
        self.plugged, self.cable = True, amps
        self.after("plug(%d)" % amps)

    def do_unplug(self, how):
        if how == "A":
            self.cmd("ev", state="A")
        else:
            self.cmd("unplug")
        if self.plugged:
            self.unplugged_at = self.t
        self.plugged = False
        self.after("unplug (%s)" % how)

    def do_ev(self, state):
        if state == "A":
            return self.do_unplug("A")
        if state == "F":
            self.cmd("ev", state="F")
            self.pilot_f = True
        elif state in ("diode", "nodiode"):
            self.cmd("ev", state=state)
            self.diode = state == "diode"
        else:
            self.cmd("ev", expect_ok=self.plugged, state=state)
            if self.plugged:
                self.pilot_f = False
        self.after("ev(%s)" % state)

    def do_fault(self, name, on):
        self.cmd("fault" if on else "clear", name=name)
        if name == "rcd":
            self.residual = on
        elif name == "ground":
            if on and self.ground_ok:
                self.ground_lost_at = self.t
            self.ground_ok = not on
        elif name == "meter":
            self.meter_ok = not on
        elif name == "temp_sensor":
            self.sensor_ok = not on
        elif name == "pilot_f":
            self.pilot_f = on
        elif name == "diode":
            self.diode = not on
        self.after("%s(%s)" % ("fault" if on else "clear", name))

    def do_limit(self, amps):
        self.cmd("limit", amps=amps)
        self.ext_limit = amps
        self.after("limit(%r)" % amps)

    def do_session(self, op):
        if op == "stop":
            self.cmd("stop")
        elif op.startswith("token"):
            self.cmd("token", tag=op.split()[1])
        else:
            self.cmd("available", on=op == "available")
        self.after(op)

    def do_simple(self, op, **args):
        self.cmd(op, **args)
        self.after("%s(%s)" % (op, args))

    @rule(amps=st.sampled_from(CABLES), c=CONN)
    def plug(self, amps, c):
        self.pick(c)
        if self.can_plug():
            self.do_plug(amps)

    @rule(how=st.sampled_from(["unplug", "A"]), c=CONN)
    def unplug(self, how, c):
        self.pick(c)
        self.do_unplug(how)

    @rule(state=st.sampled_from(["B", "C", "D", "E", "F", "diode", "nodiode"]), c=CONN)
    def ev(self, state, c):
        self.pick(c)
        self.do_ev(state)

    @rule(cable=st.sampled_from(CABLES), via=st.sampled_from(["E", "F"]), ms=st.sampled_from([50, 400, 1000]),
          c=CONN)
    def plug_through(self, cable, via, ms, c):
        # A plug-in whose pilot passes through E (shorted) or F (-12 V) before
        # B/C: the cable rating must be read all the same.
        self.pick(c)
        if self.can_plug():
            self.do_plug(cable)
        if not self.plugged:
            return
        STATS["plug_through"] = STATS.get("plug_through", 0) + 1
        self.do_ev(via)
        self.fw.advance(ms)
        self.after("advance(%d)" % ms)
        self.do_ev("C")
        self.fw.advance(300)
        self.after("advance(300)")
        self.do_session("token CARD1")
        self.fw.advance(3000)
        self.after("advance(3000)")

    @rule(cable=st.sampled_from(CABLES), ms=st.sampled_from([600, 1500, 4000]), c=CONN)
    def charge(self, cable, ms, c):
        # Plug in (if the cable may be plugged) and ask for energy: keeps
        # enough of the examples charging for the other rules to matter.
        self.pick(c)
        if self.can_plug():
            self.cmd("plug", amps=cable)
            self.plugged, self.cable = True, cable
        if self.plugged:
            self.cmd("ev", state="C")
            self.pilot_f = False
        self.after("charge: plug(%d) ev(C)" % cable)
        self.fw.advance(ms)
        self.after("advance(%d)" % ms)

    # While the coil is on, something goes wrong (the cases the budgets are
    # for), and maybe a second thing a moment later. Grouped so that a pair
    # from two groups (a fault that holds F, then an unplug) is not rare.
    SLOW = [("fault", "meter"), ("fault", "temp_sensor"), ("temp", 72), ("overcurrent", None)]
    EVSE = [("session", "stop"), ("session", "unavailable"), ("session", "token FREEVEND"), ("limit", 5),
            ("evopt", "disobey")]
    PILOT = [("ev", x) for x in ("A", "B", "D", "E", "F", "nodiode")]
    QUICK = [("fault", n) for n in ("rcd", "ground", "weld", "lock", "stuck_open", "pilot_short", "pilot_f",
                                    "diode")]
    OTHER = [("temp", 66), ("temp", 69), ("ambient", 60), ("limit", 10), ("restart", "reboot"),
             ("restart", "powercut")]
    EVENT = st.one_of(*[st.sampled_from(g) for g in (SLOW, EVSE, PILOT, QUICK, OTHER)])

    def do_event(self, what):
        op, x = what
        if op == "fault":
            self.do_fault(x, True)
        elif op == "ev":
            self.do_ev(x)
        elif op == "session":
            self.do_session(x)
        elif op == "limit":
            self.do_limit(x)
        elif op in ("temp", "ambient"):
            self.do_simple(op, celsius=x)
        elif op == "evopt":
            self.do_simple(op, obey=False)
        elif op == "overcurrent":  # an EV that draws 32 A whatever it is offered
            self.do_simple("evopt", greedy=True)
            self.do_simple("demand", amps=32)
            self.do_limit(10)
        else:
            self.restart(x)

    @precondition(lambda self: any(sd.coil for sd in self.sides))
    @rule(first=EVENT, then=st.none() | EVENT, gap=st.sampled_from([0, 20, 60, 150, 400]), c=CONN)
    def disturb(self, first, then, gap, c):
        self.pick(c)
        if not self.coil:
            self.cur = [sd for sd in self.sides if sd.coil][0]
        self.do_event(first)
        if then is not None:
            if gap:
                self.fw.advance(gap)
                self.after("advance(%d)" % gap)
            self.do_event(then)

    @precondition(lambda self: any(sd.coil for sd in self.sides))
    @rule(then=st.sampled_from([None, "B", "A"]), gap=st.sampled_from([0, 30, 100, 600, 1050]),
          how=st.sampled_from(["powercut", "reboot"]), c=CONN)
    def weld_then_restart(self, then, gap, how, c):
        # The contacts weld while charging; the EV may stop or leave; power
        # goes (or the charger reboots) before, while or after the aux check.
        self.pick(c)
        if not self.coil:
            self.cur = [sd for sd in self.sides if sd.coil][0]
        self.do_fault("weld", True)
        if then:
            self.do_ev(then)
        if gap:
            self.fw.advance(gap)
            self.after("advance(%d)" % gap)
        self.restart(how)

    @rule(amps=st.sampled_from([0, 6, 10, 16, 32, 40, 80]) | st.floats(0, 80), c=CONN)
    def demand(self, amps, c):
        self.pick(c)
        self.do_simple("demand", amps=amps)

    @rule(op=st.sampled_from(["temp", "ambient"]),
          celsius=st.sampled_from([-20, 25, 45, 55, 60, 64, 65, 66, 68, 69, 70, 70.9, 71, 72, 80]))
    def thermal(self, op, celsius):
        self.do_simple(op, celsius=celsius)

    @rule(amps=st.none() | st.sampled_from([0, 3, 5.9, 6, 10, 13, 16, 31.5, 50, 80]), c=CONN)
    def limit(self, amps, c):
        self.pick(c)
        self.do_limit(amps)

    @rule(op=st.sampled_from(["stop", "token FREEVEND", "token CARD1", "unavailable", "available"]), c=CONN)
    def session(self, op, c):
        self.pick(c)
        self.do_session(op)

    @rule(name=st.sampled_from(PLANT_FAULTS + ("diode",)), on=st.booleans(), c=CONN)
    def fault(self, name, on, c):
        self.pick(c)
        self.do_fault(name, on)

    @rule(obey=st.none() | st.booleans(), greedy=st.none() | st.booleans(), c=CONN)
    def evopt(self, obey, greedy, c):
        self.pick(c)
        self.do_simple("evopt", obey=obey, greedy=greedy)

    @rule(code=st.sampled_from([None, "weld"]), c=CONN)
    def service(self, code, c):
        self.pick(c)
        self.cmd("service", expect_ok=None, code=code)
        self.after("service(%s)" % code)

    @rule(how=st.sampled_from(["reboot", "powercut"]))
    def restart_rule(self, how):
        self.restart(how)

    def restart(self, how):
        for sd in self.sides:
            sd.ext_limit = None  # limits from above live in RAM
            sd.just_booted = True
            sd.proven_open = False  # the new firmware must see the contacts open itself
        if how == "reboot":
            self.cmd("reboot")
            self.after("reboot")
            return
        self.fw.powercut()
        # The plant keeps the world; the coil drops; the charger's clock
        # starts again (the model's time line goes on from self.t).
        for sd in self.sides:
            sd.coil = False
            sd.duty = 1000
            sd.reasons = {}
            sd.aux_alone_since = None
            sd.open_at = None
            sd.unplugged_at = -10 ** 9 if sd.plugged else self.t
        self.raw = None
        self.ring = []
        self.fw.start(timeout=START_S)
        self.after("powercut + start")

    @rule(ms=st.integers(1, 99))
    def advance_tiny(self, ms):
        self.fw.advance(ms)
        self.after("advance(%d)" % ms)

    @rule(ms=st.integers(100, 3000))
    def advance_short(self, ms):
        self.fw.advance(ms)
        self.after("advance(%d)" % ms)

    @rule(ms=st.integers(3000, 12000))
    def advance_medium(self, ms):
        self.fw.advance(ms)
        self.after("advance(%d)" % ms)

    @rule(ms=st.sampled_from([30_000, 65_000, 310_000]))
    def advance_long(self, ms):
        self.fw.advance(ms)
        self.after("advance(%d)" % ms)


class TwoConnectors(ChargerMachine):
    N = 2


def _settings(examples):
    return settings(
        max_examples=int(os.environ.get("STATEFUL_EXAMPLES", examples)),
        stateful_step_count=int(os.environ.get("STATEFUL_STEPS", "25")),
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


MIN_CI_STEPS = 1000  # each connector count, in CI


@pytest.mark.parametrize("machine,examples", [(ChargerMachine, 70), (TwoConnectors, 40)],
                         ids=["1-connector", "2-connectors"])
def test_charger_safety_invariants(capsys, machine, examples):
    for k in ("examples", "steps", "closes", "steps_closed", "unlocks", "weld_boots", "plug_through"):
        STATS[k] = 0
    STATS["reasons"] = {}
    STATS["actions"] = {}
    try:
        run_state_machine_as_test(machine, settings=_settings(examples))
    finally:
        with capsys.disabled():
            print("\nstateful (%d connector(s)): %%(examples)d examples, %%(steps)d steps, %%(closes)d coil closes, "
                  "%%(steps_closed)d steps with a coil on, %%(unlocks)d lock releases, %%(weld_boots)d boots "
                  "with welded contacts, %%(plug_through)d plug-ins through E/F" % machine.N % STATS)
            print("stateful: reasons seen %s" % dict(sorted(STATS["reasons"].items())))
            print("stateful: actions %s" % dict(sorted(STATS.get("actions", {}).items())))
    if os.environ.get("CI") and "STATEFUL_EXAMPLES" not in os.environ:
        # The fixed CI search must keep reaching the new rules' cases.
        assert STATS["steps"] >= MIN_CI_STEPS, STATS["steps"]
        assert STATS["weld_boots"] and STATS["plug_through"] and STATS["unlocks"], STATS


# --- what the search above found, as fixed examples ---------------------------------------
# A random search finds these only now and then; here they are every run.

def _coil_off_after(fw, t):
    ev = [e for e in fw.trace(t) if e[2] == "coil"]
    assert ev and ev[0][3] is False, ev
    return ev[0][0]


@pytest.mark.parametrize("cause", ["meter", "temp_sensor", "overtemp"])
@pytest.mark.parametrize("ev", ["A", "B"])
@pytest.mark.parametrize("delay", [0, 50, 250])
def test_pilot_is_watched_while_a_slow_fault_stops_the_session(fw, cause, ev, delay):
    # A fault that stops the session the EVSE way (PWM off, force open at 6 s)
    # must not blind the pilot: the EV leaving C still opens within 100 ms.
    fw.charging(32)
    fw.advance(5000)
    if cause == "overtemp":
        fw.cmd("temp", celsius=75)
    else:
        fw.cmd("fault", name=cause)
    if delay:
        fw.advance(delay)
    assert fw.conn()["contactor"]
    t = fw.now()
    fw.cmd("ev", state=ev)
    fw.advance(400)
    t_off = _coil_off_after(fw, t)
    assert t_off - t <= FAST, "coil opened %d ms after the EV went to %s" % (t_off - t, ev)


def test_diode_lost_mid_session_opens_within_100_ms(fw):
    fw.charging(32)
    fw.advance(30_000)  # steady: the loop sleeps up to a second in simulated time
    t = fw.now()
    fw.cmd("fault", name="diode")
    fw.advance(3000)
    assert _coil_off_after(fw, t) - t <= FAST


def test_energy_register_never_goes_back_after_a_power_cut_with_the_meter_down(fw):
    fw.charging(32)
    fw.advance(20_000)  # less than meter_save_s: the register is not saved yet
    wh = fw.conn()["energy_wh"]
    assert wh > 0
    fw.cmd("fault", name="meter")
    fw.powercut()
    fw.start()
    c = fw.conn()
    assert c["energy_wh"] is None or c["energy_wh"] >= wh, (wh, c["energy_wh"])
    fw.advance(10_000)
    c = fw.conn()
    assert c["energy_wh"] is None or c["energy_wh"] >= wh, (wh, c["energy_wh"])
    fw.cmd("clear", name="meter")
    fw.advance(1000)
    assert fw.conn()["energy_wh"] >= wh

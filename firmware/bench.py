# Bench commands: what a technician types at the REPL (plug(32), ev("C"),
# status(), ...) and what the Unix control channel accepts as JSON
# ({"op": "plug", "amps": 32}). One table describes both, so they cannot drift.
#
# Each command takes its arguments by position at the REPL or by name in
# JSON; the argument spec gives type and range, and a bad value gets an error
# that names it. Plant commands need a simulated plant; on real hardware they
# answer with an error.
from firmware.evse import pilot as cp

FAULTS = ("weld", "rcd", "ground", "meter", "pilot_short", "pilot_f", "temp_sensor", "stuck_open", "diode", "lock", "pp")
CABLES = (13, 20, 32, 63, 70)
LEVELS = ("debug", "info", "warn", "error")

# op: (help, ((arg, kind, default, lo, hi_or_choices), ...))
# kinds: int, num, str, bool, choice, opt_num (number or None)
CONN = ("c", "int", 1, 1, 4)
COMMANDS = {
    "help": ("list the commands", ()),
    "status": ("the charger's state in one block (c: that connector only)", (("c", "opt_int", None, 1, 4),)),
    "plug": ("plug an EV in with a cable of this rating (A)", (("amps", "choice", 32, None, CABLES), CONN,)),
    "unplug": ("unplug the EV", (CONN,)),
    "ev": ("EV pilot state: A (unplug), B, C, D, E (short), F (pilot at -12 V), diode / nodiode",
           (("state", "choice", None, None, ("A", "B", "C", "D", "E", "F", "diode", "nodiode")), CONN,)),
    "demand": ("current the EV wants to draw (A)", (("amps", "num", None, 0, 80), CONN,)),
    "evopt": ("EV manners: obey (stops without PWM), greedy (ignores duty), stop_ms, battery_wh, soc_pct",
              (("obey", "opt_bool", None, None, None), ("greedy", "opt_bool", None, None, None),
               ("stop_ms", "opt_int", None, 0, 60000), ("battery_wh", "opt_int", None, 0, 200000),
               ("soc_pct", "opt_num", None, 0, 100), CONN,)),
    "temp": ("set the charger's temperature (C) and hold it there", (("celsius", "num", None, -40, 150),)),
    "ambient": ("set the ambient temperature (C); the charger heats with current", (("celsius", "num", None, -40, 80),)),
    "fault": ("inject a fault: " + ", ".join(FAULTS), (("name", "choice", None, None, FAULTS), CONN,)),
    "clear": ("remove an injected fault from the plant", (("name", "choice", None, None, FAULTS), CONN,)),
    "token": ("present an RFID token (starts, or stops its own session)", (("tag", "str", None, 1, 20), CONN,)),
    "stop": ("stop charging from the charger's side", (CONN,)),
    "limit": ("external current limit (A), None to remove", (("amps", "opt_num", None, 0, 80), CONN,)),
    "available": ("make the connector available (True) or not", (("on", "bool", True, None, None), CONN,)),
    "service": ("service command: clear latched faults (e.g. weld) whose cause is gone",
                (("code", "opt_str", None, 1, 20), CONN,)),
    "advance": ("advance simulated time (ms)", (("ms", "int", None, 0, 7 * 86400000),)),
    "log": ("recent log entries (c: that connector's and the charger's)",
            (("n", "int", 20, 1, 500), ("since", "int", 0, 0, 1 << 30), ("c", "opt_int", None, 1, 4),)),
    "trace": ("the plant's recent switching events (a bench scope)",
              (("since", "int", 0, 0, 1 << 40), ("c", "opt_int", None, 1, 4),)),
    "stall": ("test: stall the control task for ms", (("ms", "int", None, 1, 60000),)),
    "hog": ("test: hold heap until only kb KiB are free (None releases it)", (("kb", "opt_int", None, 0, 1 << 20),)),
    "seclog": ("recent security-log lines (who/when/what); clear=True empties it, which is recorded",
               (("n", "int", 20, 1, 500), ("clear", "bool", False, None, None),)),
    "tamper": ("open (True) or close the enclosure: the tamper switch", (("opened", "bool", True, None, None),)),
    "wifi": ("network: state, address, signal; wifi('ssid', 'passphrase') joins that network and saves it",
             (("ssid", "opt_str", None, 1, 32), ("passphrase", "opt_str", None, 0, 63),)),
    "reboot": ("reboot the firmware (contactor opens)", ()),
    "powercut": ("cut the power at once, as a pulled plug would", ()),
    "loglevel": ("console log from this level up: debug, info, warn, error (log() keeps every entry)",
                 (("level", "choice", "info", None, LEVELS),)),
    "mute": ("silence the console log (True) or bring it back (False); log() keeps every entry",
             (("on", "bool", True, None, None),)),
    "plant_reset": ("the simulated world as on a first start: no EV (the next is a new default one), 25 C, "
                    "no injected faults; the charger's meters keep their registers", ()),
}


class BenchError(Exception):
    pass


def check_args(op, args):
    # Validate a JSON request's arguments; returns a kwargs dict.
    spec = COMMANDS.get(op)
    if spec is None:
        raise BenchError("unknown op %r; see help" % (op,))
    names = [a[0] for a in spec[1]]
    for k in args:
        if k not in names:
            raise BenchError("%s: unknown argument %r" % (op, k))
    out = {}
    for name, kind, default, lo, hi in spec[1]:
        if name not in args:
            if default is None and not kind.startswith("opt_"):
                raise BenchError("%s: missing argument %r" % (op, name))
            out[name] = default
            continue
        v = args[name]
        if kind.startswith("opt_"):
            if v is None:
                out[name] = None
                continue
            kind = kind[4:]
        ok = True
        isnum = isinstance(v, (int, float)) and not isinstance(v, bool)
        if kind == "int":
            ok = isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi
        elif kind == "num":
            ok = isnum and lo <= v <= hi
        elif kind == "str":
            ok = isinstance(v, str) and lo <= len(v) <= hi
        elif kind == "bool":
            ok = isinstance(v, bool)
        elif kind == "choice":
            ok = v in hi and type(v) is type(hi[0])
        if not ok:
            want = ("one of %s" % (hi,)) if kind == "choice" else (
                "%s %s..%s" % (kind, lo, hi) if lo is not None else kind)
            raise BenchError("%s: %s must be %s, got %r" % (op, name, want, v))
        out[name] = v
    return out


class Bench:
    # board: the running board (boards/unix or a dev board); it provides
    # station, plant (or None), and reboot()/powercut()/advance().
    def __init__(self, board):
        self.board = board
        self.resetting = False
        self._hog = None  # heap held by hog()

    def _conn(self, c):
        conns = self.board.station.connectors
        if not 1 <= c <= len(conns):
            raise BenchError("connector %d does not exist (1..%d)" % (c, len(conns)))
        return conns[c - 1]

    def _outlet(self, c):
        plant = self.board.plant
        if plant is None:
            raise BenchError("this board has no simulated plant")
        self._conn(c)
        return plant.outlets[c - 1]

    def _changed(self):
        self.board.hw.changed()

    # --- commands (names match COMMANDS) ------------------------------------
    def help(self):
        return {"commands": {op: (h, [a[0] for a in spec]) for op, (h, spec) in COMMANDS.items()}}

    def status(self, c=None):
        # Times the bench shows ("t", a fault's "since", the log's and the
        # trace's stamps) are ms on the board's running clock, from power-up:
        # they do not wrap, so differences between them are plain
        # subtractions. "ticks" is the raw tick count the firmware works with
        # (it wraps every 2^30 ms, as on the boards).
        s = self.board.status()
        if c is not None:
            self._conn(c)
            s["connectors"] = [x for x in s["connectors"] if x["connector"] == c]
        ms = self.board.clock.elapsed_ms
        s["ticks"] = s["t"]
        s["t"] = ms(s["t"])
        for c in s["connectors"]:
            for f in c["faults"]:
                f["since"] = ms(f["since"])
            for k in ("session", "last_session"):
                x = c.get(k)
                if x and "start" in x:
                    c[k] = x = dict(x)  # a copy: the connector keeps its own
                    x["start"] = ms(x["start"])
        p = s.get("plant")
        if p and p.get("now") is not None:
            p["now"] = ms(p["now"])
        if p is not None and self.board.plant is not None:
            p["injected"] = [self.injected(i + 1) for i in range(len(self.board.plant.outlets))]
        return s

    def injected(self, c):
        # The faults injected into the plant at this outlet (fault(...)), for
        # status(): what the charger is up against, not what it has detected.
        o = self.board.plant.outlets[c - 1]
        on = {"weld": o.contactor.welded, "stuck_open": o.contactor.stuck_open, "rcd": o.residual_ma > 0,
              "ground": not o.ground_ok, "meter": not o.meter.ok, "pilot_short": o.ev.short,
              "pilot_f": o.pilot_f, "temp_sensor": not self.board.plant.thermal.sensor_ok,
              "diode": not o.ev.diode, "lock": o.lock_jammed, "pp": o.pp_open}
        return [f for f in FAULTS if on.get(f)]

    def plug(self, amps=32, c=1):
        from firmware.sim.plant import PP_OHM
        o = self._outlet(c)
        o.pp_ohm = PP_OHM[amps]
        o.ev.plugged = True
        o.ev.s2 = False
        self._changed()
        return {}

    def unplug(self, c=1):
        o = self._outlet(c)
        o.ev.plugged = False
        o.ev.s2 = False
        o.ev.arrive()  # that car drove off: the next plug() is a new one at the starting charge
        o.pp_ohm = -1
        self._changed()
        return {}

    def ev(self, state, c=1):
        o = self._outlet(c)
        ev = o.ev
        if state == "A":
            return self.unplug(c)
        if state in ("diode", "nodiode"):
            ev.diode = state == "diode"
        elif state == "F":
            o.pilot_f = True
        else:
            if not ev.plugged:
                raise BenchError("ev: plug an EV in first")
            o.pilot_f = False
            ev.short = state == "E"
            if state != "E":
                ev.set_want(state in ("C", "D"), state == "D")
        self._changed()
        return {}

    def demand(self, amps, c=1):
        self._outlet(c).ev.demand_ma = int(amps * 1000)
        self._changed()
        return {}

    def evopt(self, obey=None, greedy=None, stop_ms=None, battery_wh=None, soc_pct=None, c=1):
        ev = self._outlet(c).ev
        if obey is not None:
            ev.obey = obey
        if greedy is not None:
            ev.greedy = greedy
        if stop_ms is not None:
            ev.stop_ms = stop_ms
        if battery_wh is not None:
            ev.capacity_wh = battery_wh
        if soc_pct is not None:
            ev.soc_wh = ev.capacity_wh * soc_pct / 100
        ev.recount()
        self._changed()
        return {"ev": ev.to_dict()}

    def temp(self, celsius):
        self._plant().thermal.set(celsius)
        self._changed()
        return {}

    def ambient(self, celsius):
        self._plant().thermal.ambient = float(celsius)
        self._changed()
        return {}

    def _plant(self):
        if self.board.plant is None:
            raise BenchError("this board has no simulated plant")
        return self.board.plant

    def _inject(self, name, c, on):
        o = self._outlet(c)
        if name == "weld":
            o.contactor.welded = on
            if not on and not o.contactor.coil and o.contactor.closed:
                p = self._plant()
                p.step(self.board.clock.ticks_ms())  # stamped now, not at the plant's last step
                o.contactor.closed = False  # the technician frees the contacts
                p.mark(c - 1, "contacts", False)
        elif name == "stuck_open":
            o.contactor.stuck_open = on
        elif name == "rcd":
            o.residual_ma = 40 if on else 0
        elif name == "ground":
            o.ground_ok = not on
        elif name == "meter":
            o.meter.ok = not on
        elif name == "pilot_short":
            o.ev.short = on
        elif name == "pilot_f":
            o.pilot_f = on
        elif name == "temp_sensor":
            self._plant().thermal.sensor_ok = not on
        elif name == "diode":
            o.ev.diode = not on
        elif name == "lock":
            o.lock_jammed = on
        elif name == "pp":
            o.pp_open = on  # the cable's PP resistor is broken
        self._changed()
        return {}

    def fault(self, name, c=1):
        return self._inject(name, c, True)

    def clear(self, name, c=1):
        r = self._inject(name, c, False)
        if name == "weld" and self.board.plant is not None:
            # The technician's new contactor: its contacts are open now, so
            # service("weld") on the same line sees the aux open.
            self.board.hw.step(self.board.clock.ticks_ms())
        return r

    def token(self, tag, c=1):
        conn = self._conn(c)
        ocpp = self.board.station.ocpp
        if ocpp is not None:
            # The back office decides; the outcome shows in status() and log().
            self.board.station.spawn(ocpp.present_token(c, tag), "token")
            return {"result": "presented to the CSMS"}
        if conn.session is not None and conn.session["id_tag"] == tag:
            conn.stop("Local")
            return {"result": "stopping"}
        if conn.session is not None:
            return {"result": "busy"}
        if conn.pilot.state == cp.A:
            return {"result": "no EV plugged in"}
        ok = conn.authorize(tag)
        self._changed()
        return {"result": "accepted" if ok else "refused"}

    def stop(self, c=1):
        ok = self._conn(c).stop("Local")
        self._changed()
        return {"result": "stopping" if ok else "no session"}

    def limit(self, amps=None, c=1):
        self._conn(c).set_limit("external", None if amps is None else int(amps * 1000))
        self._changed()
        return {}

    def available(self, on=True, c=1):
        self._conn(c).set_available(on)
        self._changed()
        return {}

    def service(self, code=None, c=1):
        # The firmware's rule, the same at the bench as over OCPP or on
        # hardware: a latched fault clears only once its cause is gone (a
        # weld: the aux contact reads open). At the simulated bench the
        # repair is its own step: clear("weld") replaces the contactor.
        conn = self._conn(c)
        done = conn.clear_latched(code)
        self._changed()
        if not done:
            raise BenchError("service: nothing cleared (no such latched fault, or its cause is still there: "
                             "at the simulated bench clear(\"weld\") replaces a welded contactor first)")
        return {"cleared": done}

    def advance(self, ms):
        raise BenchError("advance: only over the control channel with simulated time")

    def log(self, n=20, since=0, c=None):
        log = self.board.station.log
        es = log.entries(max(since, log.seq - n))
        if c is not None:
            self._conn(c)
            other = ["conn%d" % (i + 1) for i in range(len(self.board.station.connectors)) if i + 1 != c]
            es = [e for e in es if e[4] not in other]
        ms = self.board.clock.elapsed_ms  # see status()
        return {"seq": log.seq, "entries": [{"seq": e[0], "t": ms(e[1]), "time": e[2], "level": e[3],
                                             "src": e[4], "msg": e[5]} for e in es]}

    def trace(self, since=0, c=None):
        p = self._plant()
        clock = self.board.clock
        p.step(clock.ticks_ms())
        ms = clock.elapsed_ms  # see status()
        ev = [[ms(e[0])] + list(e[1:]) for e in p.trace]
        if c is not None:
            self._conn(c)
        return {"now": ms(p.now), "events": [e for e in ev if e[0] >= since and (c is None or e[1] == c)]}

    def stall(self, ms):
        self.board.station.control.stall_ms = ms
        self._changed()
        return {}

    def _security(self):
        # The OCPP client's security log, or one on the store (free vend).
        st = self.board.station
        if st.ocpp is not None:
            return st.ocpp.security
        from firmware.core.seclog import SecLog
        return SecLog(st.store, st.clock)

    def seclog(self, n=20, clear=False):
        sec = self._security()
        if clear:
            if hasattr(sec, "clear_log"):
                sec.clear_log("bench")  # also a SecurityLogWasCleared event for the CSMS
            else:
                sec.clear("bench")
        log = sec.seclog if hasattr(sec, "seclog") else sec
        return {"lines": log.tail(n)}

    def tamper(self, opened=True):
        self._plant().tamper = opened
        self._changed()
        return {}

    def plant_reset(self):
        p = self._plant()
        p.step(self.board.clock.ticks_ms())  # what happened so far stays on the trace
        p.reset()
        p.save()  # a power cut now must not bring the old world back
        self._changed()
        return {"result": "plant reset: no EV, 25 C, no injected faults"}

    def hog(self, kb=None):
        import gc
        self._hog = None
        gc.collect()
        held = 0
        if kb is not None:
            for size in (2048, 128):  # big blocks first, then the fragments between them
                try:
                    while gc.mem_free() > kb * 1024 + 2 * size:
                        self._hog = (self._hog, bytearray(size))  # a chain: no list to regrow
                        held += size
                except MemoryError:
                    pass
        return {"free": gc.mem_free(), "held": held}

    def wifi(self, ssid=None, passphrase=None):
        # The board's network interface (firmware/net/link.py); the
        # passphrase is shown as "set", never as itself.
        net = self.board.net
        if ssid is not None:
            try:
                net.configure(ssid, passphrase or "")
            except ValueError as e:
                raise BenchError("wifi: %s" % e)
            store = self.board.store
            raw = store.read("config.json", {}, plain=True, check=lambda r: isinstance(r, dict))
            raw["wifi_ssid"] = ssid
            raw["wifi_pass"] = passphrase or ""
            store.write("config.json", raw)  # the next boot joins it too
            self.board.station.log.info("net", "wifi set to %s by the bench" % ssid)
        return net.info()

    def reboot(self):
        self.resetting = True  # an exit from here is the reset itself, not a stray exit()
        st = self.board.station
        if st is not None and st.ocpp is not None:
            st.ocpp.security.before_reboot("bench", "bench reboot()")
        self.board.reboot()
        self.resetting = False
        return {}

    def powercut(self):
        self.resetting = True
        self.board.powercut()
        self.resetting = False
        return {}

    def loglevel(self, level="info"):
        from firmware.core import log as log_mod
        lv = (log_mod.DEBUG, log_mod.INFO, log_mod.WARN, log_mod.ERROR)[LEVELS.index(level)]
        log = self.board.log
        log.echo_level = lv
        if lv < log.level:
            log.level = lv  # debug lines are only made when asked for
        return {"level": level}

    def mute(self, on=True):
        from firmware.core import log as log_mod
        self.board.log.echo_level = 100 if on else log_mod.INFO
        return {"muted": on}

    # --- entry points ----------------------------------------------------------
    def call(self, op, args):
        # For the control channel: validated kwargs in, dict out.
        kw = check_args(op, args)
        return getattr(self, op)(**kw)

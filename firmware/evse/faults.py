# Fault codes, their severity and OCPP 1.6 error code, and the set of active
# faults of one connector.
#
# Severity:
#   DERATE      informational; charging goes on at a lower current
#   RECOVERABLE blocks charging; clears by itself when the cause is gone
#               (or by the retry policy); some also clear on unplug
#   LATCHED     blocks charging; persisted, survives reboot, cleared only by a
#               service command once the cause is gone. Saved (atomic record)
#               in the tick that raised it, not by the periodic store task: a
#               power cut a moment later must not forget it.
# Every blocking fault opens the contactor, holds the pilot at F for at least
# HOLD_F_MS, then returns to B1/C1 (+12 V, no PWM).
from firmware.core.clock import ticks_add, ticks_diff  # ticks wrap at 2^30 as on the boards
from micropython import const
from firmware.core.store import is_num, list_of
from firmware.core.errtext import errtext  # an exception in words for a log line

DERATE = const(0)
RECOVERABLE = const(1)
LATCHED = const(2)
SEVERITY = ("derate", "recoverable", "latched")

HOLD_F_MS = const(300)
HARD_WINDOW_MS = const(2000)  # a fault this soon after closing is hard (OpenEVSE)

# code: (severity, OCPP ChargePointErrorCode, opens at once?, clears on unplug?)
# "at once" faults open the contactor the same tick; the others stop the
# session the EVSE way (PWM off, EV stops, force open at stop_force_ms).
TABLE = {
    "rcd": (RECOVERABLE, "GroundFailure", True, True),
    "ground": (RECOVERABLE, "GroundFailure", True, True),
    "diode": (RECOVERABLE, "GroundFailure", True, True),
    "pilot_short": (RECOVERABLE, "EVCommunicationError", True, False),
    "pilot": (RECOVERABLE, "EVCommunicationError", True, False),
    "overcurrent": (RECOVERABLE, "OverCurrentFailure", False, True),
    "weld": (LATCHED, "PowerSwitchFailure", True, False),
    "switch": (RECOVERABLE, "PowerSwitchFailure", True, True),
    "meter": (RECOVERABLE, "PowerMeterFailure", False, False),
    "lock": (RECOVERABLE, "ConnectorLockFailure", True, True),
    "cable": (RECOVERABLE, "OtherError", True, True),  # PP out of range; vendor code "PP"
    "overtemp": (RECOVERABLE, "HighTemperature", False, False),
    "temp_sensor": (RECOVERABLE, "OtherError", False, False),
    # Derating is information, not an error: a CSMS must not read a charging
    # connector as faulted. Shutdown (overtemp) is the HighTemperature error.
    "hot": (DERATE, "NoError", False, False),
    "watchdog": (RECOVERABLE, "InternalError", True, False),
    "internal": (RECOVERABLE, "InternalError", True, False),
}


class Fault:
    def __init__(self, code, now, wall, cause, hard=False):
        self.code = code
        self.since = now
        self.wall = wall
        self.cause = cause
        self.hard = hard  # no automatic retry; unplug or service clears

    def info(self):
        sev, ocpp = TABLE[self.code][0], TABLE[self.code][1]
        return {"code": self.code, "severity": SEVERITY[sev], "ocpp": ocpp,
                "cause": self.cause, "since": self.since, "time": self.wall, "hard": self.hard}


def _latched_ok(rec):
    # The latched-faults record: [{"code": str, "time": number, "cause": str}, ...]
    return list_of(rec, lambda r: isinstance(r["code"], str) and (r.get("time") is None or is_num(r["time"]))
                   and isinstance(r.get("cause", ""), str))


class Faults:
    def __init__(self, clock, log, name, store=None):
        self.clock = clock
        self.log = log
        self.name = name
        self.store = store
        self.active = {}
        self.hold_until = None  # pilot F until this tick
        self.changed = False  # set on every raise/clear; the station persists latched ones
        self.unsaved = False  # a latched fault raised and not yet saved (the connector saves it this tick)
        # Summaries the control loop asks for every tick, recomputed only when
        # a fault comes or goes, so a tick allocates nothing.
        self._blocking = False
        self._open_now = False
        self._since = None
        self._load()
        self._recount()

    def _recount(self):
        self._blocking = self._open_now = False
        self._since = None
        for f in self.active.values():
            sev, _, at_once, _ = TABLE[f.code]
            if sev != DERATE:
                self._blocking = True
                if self._since is None or ticks_diff(f.since, self._since) < 0:
                    self._since = f.since
            if at_once:
                self._open_now = True

    def _key(self):
        return "latched%s.json" % self.name

    def _load(self):
        if not self.store:
            return
        rec = self.store.read(self._key(), [], check=_latched_ok)
        if not isinstance(rec, list):
            return
        now = self.clock.ticks_ms()
        for r in rec:
            try:
                code = r["code"]
                if code in TABLE and TABLE[code][0] == LATCHED:
                    self.active[code] = Fault(code, now, r.get("time", 0), r.get("cause", "") + " (latched before reboot)", True)
                    self.hold_until = ticks_add(now, HOLD_F_MS)
            except (KeyError, TypeError, AttributeError):
                pass

    def latched_records(self):
        return [f.info() for f in self.active.values() if TABLE[f.code][0] == LATCHED]

    def raise_(self, code, cause, now, hard=False, args=None):
        # True when newly raised. The control loop calls this every tick while
        # a cause lasts: a fault already active costs a dict lookup and no
        # allocation. `cause` may be a format and `args` its values (one value,
        # or a tuple): it is formatted only when the fault is new.
        f = self.active.get(code)
        if f is not None:
            if hard and not f.hard:
                f.hard = True
                self.changed = True
            return False
        if args is not None:
            cause = cause % args
        self.active[code] = Fault(code, now, self.clock.wall(), cause, hard)
        self._recount()
        sev = TABLE[code][0]
        if sev != DERATE:
            self.hold_until = ticks_add(now, HOLD_F_MS)
            self.log.error("conn%s" % self.name, "fault %s (%s, %s%s): %s" % (
                code, SEVERITY[sev], TABLE[code][1], ", hard" if hard else "", cause))
        else:
            self.log.warn("conn%s" % self.name, "%s: %s" % (code, cause))
        self.changed = True
        if sev == LATCHED:
            self.unsaved = True
        return True

    def save_latched(self):
        # Write the latched faults now (store.write: new file, then rename).
        # A failed write is logged and left to the store task to retry.
        self.unsaved = False
        if not self.store:
            return
        try:
            self.store.write(self._key(), self.latched_records())
        except OSError as e:
            self.log.error("conn%s" % self.name, "saving latched faults failed: %s" % errtext(e))

    def clear(self, code, why):
        f = self.active.pop(code, None)
        if f is not None:
            self._recount()
            self.log.info("conn%s" % self.name, "cleared %s: %s" % (code, why))
            self.changed = True
            if TABLE[code][0] == LATCHED:
                self.save_latched()  # a service command, outside the control tick
        return f is not None

    def has(self, code):
        return code in self.active

    def blocking(self):
        return self._blocking

    def blocking_since(self):
        # When the oldest blocking fault began, or None.
        return self._since

    def open_now(self):
        return self._open_now

    def holding_f(self, now):
        if self.hold_until is None:
            return False
        if ticks_diff(now, self.hold_until) < 0:
            return True
        self.hold_until = None
        return False

    def unplugged(self):
        for code in list(self.active):
            if TABLE[code][3]:
                self.clear(code, "EV unplugged")

    def ocpp_error(self):
        # The most severe active fault's error code, for StatusNotification.
        best, rank = "NoError", -1
        for f in self.active.values():
            sev = TABLE[f.code][0]
            if sev > rank:
                best, rank = TABLE[f.code][1], sev
        return best

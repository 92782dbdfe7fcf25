# Energy register: a Wh count that only ever rises and survives reboot.
#
# The board's meter reports its own register (a real meter keeps it in its
# own memory; the simulated one in the plant). We add up positive steps of it,
# so a meter that is replaced or restarts from zero never makes the charger's
# register go back. The register is saved by the station's store task, never
# from the control loop. Each save carries the wall-clock time ("wall"): the
# last time the charger is known to have had power. A transaction that a
# power cut ended is stopped at that time (firmware/ocpp/client.py); it is at
# most meter_save_s + 1 s older than the cut while a session runs.
from firmware.core.store import is_int


def _register_ok(r):
    wh, last = r.get("wh", 0), r.get("meter")
    wall = r.get("wall")
    return (is_int(wh) and wh >= 0 and (last is None or is_int(last))
            and (wall is None or isinstance(wall, (int, float))))


class EnergyRegister:
    def __init__(self, store, name):
        self.store = store
        self.key = "energy%s.json" % name
        rec = store.read(self.key, None, check=_register_ok) if store else None
        self.wh = 0
        self.last_meter = None  # last meter register seen, Wh
        self.saved_wall = None  # wall time of the save read at boot (power known on)
        if isinstance(rec, dict):
            wh, last = rec.get("wh"), rec.get("meter")
            if isinstance(wh, int) and wh >= 0:
                self.wh = wh
            if isinstance(last, int):
                self.last_meter = last
            w = rec.get("wall")
            if isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0:
                self.saved_wall = w
        self.saved_wh = self.wh
        self.saved_meter = self.last_meter
        self.power_w = 0
        self.current_ma = 0
        self.voltage_mv = 0
        self.ok = True
        # Until the meter has answered once since boot, the saved register may
        # lag what was shown before a power cut: report it as unknown.
        self.read_since_boot = False
        self.lost = False  # the meter just stopped answering: save what we have

    def update(self, meter_wh, power_w, current_ma, voltage_mv):
        # meter_wh None means the meter did not answer.
        if meter_wh is None:
            if self.ok:
                self.lost = True
            self.ok = False
            return
        self.ok = True
        self.read_since_boot = True
        self.power_w = power_w
        self.current_ma = current_ma
        self.voltage_mv = voltage_mv
        last = self.last_meter
        if last is not None and meter_wh > last:
            self.wh += meter_wh - last
        self.last_meter = meter_wh  # a drop means a new or reset meter: keep counting from here

    def dirty(self):
        return self.wh != self.saved_wh

    def baseline_unsaved(self):
        # The first reading after boot (or after a meter swap) must be saved
        # soon: with it, a meter that keeps its own register lets the next
        # boot count everything drawn while we were off or not yet saved.
        return self.last_meter is not None and self.saved_meter is None or (
            self.last_meter is not None and self.last_meter < (self.saved_meter or 0))

    def save(self, wall=None):
        self.lost = False
        rec = {"wh": self.wh, "meter": self.last_meter}
        if wall is not None:
            rec["wall"] = wall
        self.store.write(self.key, rec)
        self.saved_wh = self.wh
        self.saved_meter = self.last_meter

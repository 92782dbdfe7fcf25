# The charging station: owns its connectors, the derate, the store and the
# tasks. Nothing lives at module level, so a fleet process can run many
# stations in one asyncio loop and tests can build a fresh one.
#
# Tasks: control (fixed period, safety), watchdog, store (persistence and log
# flush, bounded slices). Later layers (OCPP) attach through `listeners` and
# the connectors' commands.
import asyncio
import time
from micropython import const
from firmware.core.store import is_int
from firmware.core.sched import Periodic, Watchdog, Slice, WORK_SLICE_MS
from firmware.evse.connector import Connector, SLOW_MS
from firmware.evse.derate import Derate
from firmware.version import VERSION

STORE_MS = const(1000)
STORE_SLICE_MS = const(5)  # yield to the loop after this much flash work


def _boot_ok(r):
    n = r.get("boots", 0)
    return is_int(n) and n >= 0


class Station:
    def __init__(self, hw, clock, store, cfg, log, slot="A"):
        self.hw = hw
        self.clock = clock
        self.store = store
        self.cfg = cfg
        self.log = log
        self.slot = slot
        self.version = VERSION
        self.booted_at = clock.ticks_ms()
        self.boots = self._count_boot()
        hw.sample(self.booted_at)  # read the inputs before anything decides on them
        n = min(cfg["connectors"], hw.connectors)
        self.connectors = [Connector(i, hw, cfg, clock, log, store) for i in range(n)]
        self.derate = Derate(cfg["derate"])
        self.max_ma = int(cfg["max_current_a"] * 1000)
        self.temp_dc = None
        self.sensor_failed = False
        self.control = Periodic(clock, cfg["period_ms"], self.tick)
        self.watchdog = Watchdog(clock, log, hw_wdt=hw.wdt)
        self.watchdog.watch(self.control)
        self.watchdog.on_stall = self.safe
        # The slices every long job (firmware update, large records) runs in;
        # its counters are the station's "long_work" status. A simulated clock
        # yields at every unit: CPU time does not exist in simulated time, and
        # a scenario then sees each yield point whatever the host's speed.
        self.work = Slice(0 if clock.tickless else WORK_SLICE_MS)
        hw.on_change = self.control.wake
        for c in self.connectors:
            c.wake = self.control.wake
        self._tasks = []
        self.ocpp = None  # the OCPP client, when one is attached (firmware/ocpp/client.py)
        self.reboot = None  # the board's reboot, for OCPP Reset
        self.updater = None  # the board's firmware.ota.update.Updater, if it has slots
        self.boot_info = {}  # the boot loader's word: slot, report, trial, rolled_back
        self.on_confirmed = []  # run when a trial image is confirmed healthy
        self.running = False
        self._saved_at = self.booted_at
        self.tick_errors = 0
        log.info("station", "boot %d: firmware %s slot %s, %d connector(s), id %s"
                 % (self.boots, VERSION, slot, n, cfg["id"]))

    def _count_boot(self):
        rec = self.store.read("boot.json", {}, check=_boot_ok)
        n = rec.get("boots", 0) + 1
        self.store.write("boot.json", {"boots": n})
        return n

    # --- control loop --------------------------------------------------------
    def tick(self, now):
        try:
            return self._tick(now)
        except Exception as e:  # a bug must not leave the relay closed
            self.tick_errors += 1
            self.hw.safe(now)
            for c in self.connectors:
                c.contactor.force_open()
                c.faults.raise_("internal", "control tick raised %r" % e, now)
            return None

    def _tick(self, now):
        hw = self.hw
        hw.sample(now)
        self._thermal(now, hw.temp_dc)
        quiet = SLOW_MS
        for c in self.connectors:
            i = c.idx
            c.energy.update(hw.meter_wh[i], hw.power_w[i], hw.current_ma[i], hw.voltage_mv[i])
            q = c.tick(now)
            if q < quiet:
                quiet = q
        q = hw.quiet_ms(now)
        return q if q < quiet else quiet

    def _thermal(self, now, t):
        self.temp_dc = t
        d = self.derate
        if t is None:
            if not self.sensor_failed:
                self.sensor_failed = True
                for c in self.connectors:
                    c.faults.raise_("temp_sensor", "temperature sensor not answering", now)
            return
        if self.sensor_failed:
            self.sensor_failed = False
            for c in self.connectors:
                c.faults.clear("temp_sensor", "sensor answering again")
        if not d.update(now, t):
            return
        pct = d.percent()
        lim = None if pct == 100 else self.max_ma * pct // 100
        for c in self.connectors:
            c.set_limit("derate", lim)
            # Causes are formatted only for a fault that comes or goes (or a
            # derate step that changes the shown one), never to be dropped.
            if d.hot:
                if not c.faults.has("overtemp"):
                    c.faults.raise_("overtemp", "%d.%d C >= shutdown %s C", now, False,
                                    (t // 10, t % 10, d.shutdown_dc // 10))
            elif c.faults.has("overtemp"):
                c.faults.clear("overtemp", "cooled to %d.%d C" % (t // 10, t % 10))
            if 0 < pct < 100:
                cause = "%d.%d C: derated to %d%%" % (t // 10, t % 10, pct)
                if not c.faults.raise_("hot", cause, now):
                    c.faults.active["hot"].cause = cause
            elif c.faults.has("hot"):
                c.faults.clear("hot", "temperature below the derate points" if pct else "shut down")
        self.log.warn("derate", "%d.%d C: offering %d%% of %d A" % (t // 10, t % 10, pct, self.max_ma // 1000))

    def safe(self):
        # Called by the watchdog when the control task stalls: open everything
        # without waiting for the control loop. It re-asserts itself next tick.
        now = self.clock.ticks_ms()
        self.hw.safe(now)
        for c in self.connectors:
            c.contactor.force_open()
            c.out = 0
            c.faults.raise_("watchdog", "control task stalled", now)

    # --- persistence (never from the control loop) --------------------------
    def _persist(self, c, due):
        e = c.energy
        if (e.dirty() and (due or c.session is None or e.lost)) or e.baseline_unsaved():
            e.save()
        if c.faults.changed:
            c.faults.changed = False
            rec = c.faults.latched_records()
            if rec or self.store.read(c.faults._key(), None) is not None:
                self.store.write(c.faults._key(), rec)

    def _due(self, force):
        now = self.clock.ticks_ms()
        if force or self.clock.ticks_diff(now, self._saved_at) >= self.cfg["meter_save_s"] * 1000:
            self._saved_at = now
            return True
        return False

    def persist(self, force=False):
        due = self._due(force)
        for c in self.connectors:
            self._persist(c, due)
        self.log.flush(self.store)

    async def store_task(self):
        sl = Slice(STORE_SLICE_MS)
        while True:
            await self.clock.sleep_ms(STORE_MS)
            try:
                due = self._due(False)
                for c in self.connectors:
                    self._persist(c, due)
                    await sl.check()
                self.log.flush(self.store)
            except OSError as e:
                self.log.error("store", "write failed: %r" % e)
            # Clear the watchdog fault once the control loop runs again.
            if not self.watchdog.stalled:
                for c in self.connectors:
                    c.faults.clear("watchdog", "control task running again")

    # --- life cycle ----------------------------------------------------------
    def health(self):
        """None when the charger runs as it should, else why not (a trial
        image is confirmed only when healthy)."""
        if not self.running:
            return "stopped"
        if self.watchdog.stalled:
            return "control task stalled"
        if self.tick_errors:
            return "control tick raised %d times" % self.tick_errors
        if not self.control.late.count:
            return "control loop not running yet"
        return None

    def start(self):
        self.running = True
        self._tasks = [asyncio.create_task(self.control.run()),
                       asyncio.create_task(self.watchdog.run()),
                       asyncio.create_task(self.store_task())]
        if self.ocpp:
            self._tasks.append(asyncio.create_task(self.ocpp.run()))

    def stop(self):
        # Orderly shutdown (reboot): open, save, cancel tasks.
        self.running = False
        self.hw.safe(self.clock.ticks_ms())
        if self.ocpp:
            self.ocpp.stopped = True  # also ends its task when it is the one rebooting us
        for t in self._tasks:
            try:
                t.cancel()
            except RuntimeError:
                pass  # the task that was running when Ctrl-C hit; the loop is gone anyway
        self._tasks = []
        try:
            self.persist(force=True)
            self.store.flush_pending()  # records a task was writing in slices
        except OSError:
            pass

    def status(self):
        now = self.clock.ticks_ms()
        d = self.derate
        t = self.temp_dc
        return {
            "id": self.cfg["id"],
            "t": now,
            "time": self.clock.wall(),
            "uptime_ms": self.clock.ticks_diff(now, self.booted_at),
            "boots": self.boots,
            "version": self.version,
            "slot": self.slot,
            "temp_c": None if t is None else t / 10,
            "derate_pct": d.percent(),
            "derate_level": d.level,
            "lateness": self.control.late.summary(),
            "watchdog": self.watchdog.stalled or "ok",
            "long_work": {"units": self.work.units, "yields": self.work.yields, "longest": self.work.longest},
            "ocpp": self.ocpp.status() if self.ocpp else (
                "not configured (free vend)" if self.cfg["free_vend"] else "not configured"),
            "connectors": [c.status() for c in self.connectors],
        }

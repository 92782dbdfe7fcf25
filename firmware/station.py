# The charging station: owns its connectors, the derate, the store and the
# tasks. Nothing lives at module level, so a fleet process can run many
# stations in one asyncio loop and tests can build a fresh one.
#
# Tasks: control (fixed period, safety), watchdog, store (persistence and log
# flush, bounded slices). Later layers (OCPP) attach through `listeners` and
# the connectors' commands. Every task is started with spawn() (its group is
# cancelled by stop(); a task that dies of an exception is logged and counted).
#
# Stopping. stop(reason) is the orderly end of a run (reboot, Reset, Ctrl-C):
# outputs safe, open OCPP transactions ended with that reason (queued and
# written before it returns), the WebSocket closed with a close frame, the
# records saved, and a small record (SHUTDOWN) written last. The next boot
# reads it: present, the run before ended in order (last_stop); absent, it
# ended with a power cut or a crash.
import asyncio
import time
from micropython import const
from firmware.core.store import is_int
from firmware.core.sched import Periodic, Watchdog, Slice, Tasks, WORK_SLICE_MS
from firmware.evse.connector import Connector, SLOW_MS
from firmware.evse.derate import Derate
from firmware.version import VERSION
from firmware.core.errtext import errtext  # an exception in words for a log line

STORE_MS = const(1000)
STORE_SLICE_MS = const(5)  # yield to the loop after this much flash work
SHUTDOWN = "shutdown.json"  # {"reason":, "wall":} of an orderly stop, taken at the next boot


def _boot_ok(r):
    n = r.get("boots", 0)
    return is_int(n) and n >= 0


def _shutdown_ok(r):
    return isinstance(r, dict) and isinstance(r.get("reason"), str)


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
        self.last_stop = self._take_shutdown()
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
        self.tasks = Tasks(log)
        self.internal_errors = 0  # bugs caught and logged (internal_error())
        self.ocpp = None  # the OCPP client, when one is attached (firmware/ocpp/client.py)
        self.reboot = None  # the board's reboot, for OCPP Reset
        self.updater = None  # the board's firmware.ota.update.Updater, if it has slots
        self.boot_info = {}  # the boot loader's word: slot, report, trial, rolled_back
        self.on_confirmed = []  # run when a trial image is confirmed healthy
        self.running = False
        self.stopped = False  # stop() ran
        self._saved_at = self.booted_at
        self.tick_errors = 0
        log.info("station", "boot %d: firmware %s slot %s, %d connector(s), id %s"
                 % (self.boots, VERSION, slot, n, cfg["id"]))
        if self.boots > 1:
            ls = self.last_stop
            if ls is None:
                log.warn("station", "the previous run ended without an orderly stop (power cut or crash)")
            else:
                log.info("station", "the previous run ended in order: %s" % ls["reason"])

    def _count_boot(self):
        rec = self.store.read("boot.json", {}, check=_boot_ok)
        n = rec.get("boots", 0) + 1
        self.store.write("boot.json", {"boots": n})
        return n

    def _take_shutdown(self):
        rec = self.store.read(SHUTDOWN, None, check=_shutdown_ok)
        if rec is not None:
            self.store.remove(SHUTDOWN)  # a later power cut must not look orderly
        if isinstance(rec, dict) and isinstance(rec.get("reason"), str):
            return rec
        return None

    # --- tasks and errors -------------------------------------------------------
    def spawn(self, coro, name="task"):
        # The one way to start a task (firmware/core/sched.py Tasks).
        return self.tasks.spawn(coro, name)

    def internal_error(self, src, what):
        # A bug caught where it happened: logged, counted, shown by status().
        self.internal_errors += 1
        self.log.error(src, "internal error: %s" % what)

    # --- control loop --------------------------------------------------------
    def tick(self, now):
        try:
            return self._tick(now)
        except Exception as e:  # a bug must not leave the relay closed
            self.tick_errors += 1
            self.hw.safe(now)
            for c in self.connectors:
                c.contactor.force_open(now)
                c.faults.raise_("internal", "control tick raised %s" % errtext(e), now)
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
            c.contactor.force_open(now)
            c.out = 0
            c.faults.raise_("watchdog", "control task stalled", now)

    # --- persistence (never from the control loop) --------------------------
    def _persist(self, c, due):
        e = c.energy
        # While a session runs the register is saved every meter_save_s even
        # without new energy: its time stamp is when the charger last knew it
        # had power, which a StopTransaction after a power cut reports.
        if (e.dirty() and (due or c.session is None or e.lost)) or e.baseline_unsaved() or (
                due and c.session is not None):
            e.save(self.clock.wall())
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
                self.log.error("store", "write failed: %s" % errtext(e))
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
        self.spawn(self.control.run(), "control")
        self.spawn(self.watchdog.run(), "watchdog")
        self.spawn(self.store_task(), "store")
        if self.ocpp:
            self.spawn(self.ocpp.run(), "ocpp")

    def stop(self, reason="Reboot", who="charger", why=None):
        # Orderly stop (see the top of this file). reason: the OCPP
        # StopTransaction reason of open transactions (Reboot, HardReset,
        # SoftReset, Local); who/why go to the security log. Synchronous, so
        # it also works after Ctrl-C has ended the event loop.
        if self.stopped:
            return  # once: Ctrl-C after a reboot() must not end anything twice
        self.stopped = True
        self.running = False
        self.hw.safe(self.clock.ticks_ms())
        if self.ocpp:
            try:
                # a pending Reset's reason wins; also ends its task when it is the one rebooting us
                reason = self.ocpp.shutdown(reason, who, why or reason) or reason
            except Exception as e:  # the rest of the stop must still happen
                self.internal_error("station", "OCPP shutdown raised %s" % errtext(e))
        self.tasks.cancel_all()
        try:
            self.persist(force=True)
            self.store.flush_pending()  # records a task was writing in slices
        except OSError as e:
            self.log.error("store", "write failed at stop: %s" % errtext(e))
        try:
            self.store.write(SHUTDOWN, {"reason": reason, "wall": self.clock.wall()})
        except OSError as e:
            self.log.error("store", "shutdown record not written: %s" % errtext(e))

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
            # how the run before this one ended: the orderly stop's reason, or
            # None after a power cut or crash (or on the first boot)
            "last_stop": self.last_stop["reason"] if self.last_stop else None,
            "version": self.version,
            "slot": self.slot,
            "temp_c": None if t is None else t / 10,
            "derate_pct": d.percent(),
            "derate_level": d.level,
            "lateness": self.control.late.summary(),
            "watchdog": self.watchdog.stalled or "ok",
            "long_work": {"units": self.work.units, "yields": self.work.yields, "longest": self.work.longest},
            "errors": self.error_counts(),
            "ocpp": self.ocpp.status() if self.ocpp else (
                "not configured (free vend)" if self.cfg["free_vend"] else "not configured"),
            "connectors": [c.status() for c in self.connectors],
        }

    def error_counts(self):
        # Failures that were caught rather than crashing the charger: each
        # one is in the log; these say how many to look for.
        sec = self.ocpp.security.seclog if self.ocpp else None
        return {"internal": self.internal_errors + self.tick_errors,
                "task_deaths": self.tasks.deaths,
                "seclog_write_failures": sec.write_failures if sec else 0}

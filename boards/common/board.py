# A real dev board (ESP32, RP2040) running the charger: config from the
# store, the pin map, the hardware (real pins, or the simulated plant in bench
# demo mode), the station, the bench REPL and the hardware watchdog.
#
# The port object (boards/<board>/port.py) is the only thing that differs
# between boards; everything here is shared. Boot order:
#   1. a "maintenance" flag file left by maintenance(): stop here (plain REPL)
#   2. config.json from the store, the pin map checked; outputs parked safe
#   3. boot window (1 s): boot_skip pin low, a board button or Ctrl-C stops here
#   4. hardware; the station from the image the boot record names (an
#      installed update's slot, or this factory image: boards/common/loader.py);
#      slow (meter/NTC) task, hardware watchdog, bench REPL
# Stopping at 1 or 3 leaves the plain MicroPython REPL without a watchdog,
# which is what mpremote needs to copy files.
import asyncio
import os
import sys
import time
from firmware.core.clock import RealClock
from firmware.core.log import Log
from firmware.core.store import Store
from firmware.core.sched import Tasks
from firmware.core.config import ConfigError
from firmware import app
from firmware import repl as repl_mod
from firmware.version import VERSION as FACTORY_VERSION
from boards.common import pinmap
from boards.common.pinmap import PinError
from boards.common import hal
from boards.common import loader
from firmware.core.errtext import errtext  # an exception in words for a log line

MAINT_FILE = "maintenance"
PLANT_FILE = "plant.json"


class BoardWdt:
    # The interface's `wdt`: feed() drives machine.WDT once start() ran.
    # Built before the station (which keeps a reference) but started only
    # when everything runs, since machine.WDT cannot be stopped again.
    def __init__(self, port):
        self.port = port
        self._wdt = None
        self.timeout_ms = 0

    def start(self, timeout_ms):
        if self._wdt is None:
            self._wdt = self.port.wdt(timeout_ms)
            self.timeout_ms = timeout_ms

    def feed(self):
        w = self._wdt
        if w is not None:
            w.feed()

    def running(self):
        return self._wdt is not None


class DevBoard:
    # Also the bench's board: station, plant (None on real hardware), hw,
    # status(), reboot(), powercut().
    def __init__(self, port):
        self.port = port
        self.name = port.NAME
        self.clock = RealClock()
        self.root = port.store_root()
        self.log = Log(self.clock, echo=print)
        self.store = Store(self.root, self.log)
        self.wdt = BoardWdt(port)
        self.bench = app.bench(self)
        self.cfg = None
        self.pins = None  # the checked pin map, None when it has errors
        self.pin_errors = []
        self.mode = None  # "hardware" or "demo"
        self.hw = None
        self.plant = None
        self.station = None
        self.slots = port.slots(self.store, self.log, factory_version=FACTORY_VERSION)
        self.loader = loader.Loader(self.slots)
        self.trial = None
        self.target = port.TARGET
        self.serial = port.serial()  # BootNotification's chargePointSerialNumber
        self.net = None  # the network interface, from the port once the config is read
        self.tasks = Tasks(self.log)  # the board's own tasks (they outlive a station)

    def _path(self, name):
        return self.root.rstrip("/") + "/" + name

    def _take_flag(self, name):
        try:
            os.remove(self._path(name))
            return True
        except OSError:
            return False

    # --- boot --------------------------------------------------------------------
    def load_config(self):
        # Config and pin map; parks the outputs when the map is good. Raises
        # ConfigError when the charger must not start (bad id).
        cfg = self.cfg = app.load_config(self.store, self.log)
        raw = cfg["pins"]
        pins, self.pin_errors = pinmap.validate(self.port.defaults(), raw, self.port.caps())
        demo = pinmap.demo_requested(raw)
        if not self.pin_errors:
            self.pins = pins
            hal.park(self.port, pins)
            if not demo and pins["demo_pin"] is not None:
                demo = self.port.input(pins["demo_pin"], "up").value() == 0
        self.mode = "demo" if demo else "hardware"

    async def skip_window(self):
        # True when the technician asks to skip the firmware at boot.
        p = self.pins["boot_skip"] if self.pins else None
        pin = self.port.input(p, "up") if p is not None else None
        clock = self.clock
        t0 = clock.ticks_ms()
        while clock.ticks_diff(clock.ticks_ms(), t0) < self.port.BOOT_WINDOW_MS:
            if (pin is not None and pin.value() == 0) or self.port.skip_pressed():
                return True
            await asyncio.sleep_ms(20)  # Ctrl-C arrives here as KeyboardInterrupt
        return False

    def boot(self):
        cfg = self.cfg
        log = self.log
        if self.mode == "demo":
            from firmware.sim.plant import Plant
            from firmware.sim.hw import SimHardware
            for e in self.pin_errors:
                log.warn("pins", e + " (not used in demo mode)")
            self.plant = Plant(cfg["connectors"], seed=1, voltage_mv=cfg["voltage_v"] * 1000,
                               phases=cfg["phases"], path=self._path(PLANT_FILE))
            # Only an orderly reboot leaves the world outside on flash; take
            # it once, so a later power cut starts from a fresh world.
            if self.plant.restore():
                self._take_flag(PLANT_FILE)
                log.info("board", "simulated plant restored after reboot")
            self.hw = SimHardware(self.plant)
        else:
            if self.pin_errors:
                for e in self.pin_errors:
                    log.error("pins", e)
                raise PinError("; ".join(self.pin_errors))
            self.hw = hal.PinHardware(self.port, self.pins, cfg["voltage_v"], cfg["phases"])
            log.info("board", "pins: " + pinmap.describe(self.pins))
            us = self.hw.us_per_sample
            log.info("board", "pilot burst %d samples, one every %d us" % (self.hw._nbuf, us))
            if us >= 40:
                # A low half shorter than one sample can be missed entirely,
                # and then the diode check fails: keep the duty below it.
                log.warn("board", "pilot samples are %d us apart: duties above %d.%d %% hide its "
                         "low half (diode check fails); keep max_current_a at or below %d A"
                         % (us, (1000 - us) // 10, (1000 - us) % 10, app.max_visible_amps(us)))
            self._warn_unfitted(cfg)
            if cfg["connectors"] > self.hw.connectors:
                log.warn("board", "config asks for %d connectors, the pin map wires %d"
                         % (cfg["connectors"], self.hw.connectors))
        self.hw.wdt = self.wdt
        self.net = self.port.link(self.clock, log, cfg)
        log.info("board", "%s, %s mode, store %s" % (self.name, self.mode, self.root))
        self.station = self.loader.boot(self._start)
        return self.station

    def _start(self, slot, report, failures):
        # Runs with `firmware` read from the chosen image; the charger is put
        # together by its composition root (firmware/app.py), as on every board.
        from firmware import app
        st = app.build(self, self.cfg, self.log, slot, report, failures)
        self.trial = app.start(self, st, self.cfg)
        return st

    def _warn_unfitted(self, cfg):
        # Optional inputs that are not wired weaken protection: say which.
        socket = not cfg["cable_a"]
        for key, what, when in (
                ("pp_adc", "config cable_a is 0, so no cable rating limits the current", socket),
                ("aux", "no weld detection", True),
                ("rcd", "no residual current monitor; an external RCD must protect", True),
                ("ground", "no protective earth check", True),
                ("ct_adc", "no meter: PowerMeterFailure, the connector will not charge", True),
                ("lock", "no lock actuator", socket),
                ("lock_fb", "no lock feedback; assumed locked when commanded", socket)):
            for i, p in enumerate(self.pins[key]):
                if p is None and when:
                    self.log.warn("board", "connector %d: pins.%s not fitted: %s" % (i + 1, key, what))

    async def run(self):
        if self._take_flag(MAINT_FILE):
            print("maintenance boot: charger not started, no watchdog; plain REPL for mpremote. "
                  "Reset to start the charger.")
            return
        self.load_config()
        if await self.skip_window():
            self.stopped("boot_skip held")
            return
        self.boot()
        if self.plant is None:
            self.tasks.spawn(self.hw.run_slow(self.clock, self.log), "slow inputs")
        else:
            # Demo mode: the plant's physics in its own task, not in the control tick.
            self.hw.stepping = False
            self.tasks.spawn(self.hw.run_plant(self.clock, self.cfg["period_ms"]), "plant")
        self.tasks.spawn(self.net.run(), "network")  # joins and rejoins; the charger never waits on it
        self.wdt.start(self.port.WDT_MS)
        ns = repl_mod.namespace(self.bench)
        ns["board"] = self
        ns["hw"] = self.hw
        ns["maintenance"] = self.maintenance
        print("%s %s mode: bench REPL, help() lists the commands; maintenance() or Ctrl-D "
              "reboots without the charger (for mpremote)" % (self.name, self.mode))
        try:
            # The UART: we echo, Ctrl-C drops the line; Ctrl-C Ctrl-A is mpremote.
            if await repl_mod.repl(ns, raw=True) == repl_mod.HANDOVER:
                self.handover()
                return
        except Exception as e:
            # No console must not mean no charger: keep running without it.
            self.log.error("board", "bench REPL failed: %s; charger runs on" % errtext(e))
            while True:
                await asyncio.sleep(3600)
        self.maintenance()  # Ctrl-D at the bench prompt

    def stopped(self, why, reason="Other"):
        # The charger is not (or no longer) running: outputs safe, say so.
        # reason: the OCPP stop reason for open transactions (Ctrl-C: Local).
        if self.hw is not None:
            self.hw.safe()
        if self.station is not None:
            try:  # an orderly stop: transactions end (Local), the link closes, the store says so
                self.station.stop(reason, "bench" if reason == "Local" else "charger", why)
            except Exception as e:  # outputs are safe already
                self.log.error("board", "stop: %s" % errtext(e))
        msg = "charger stopped: %s" % why
        if self.wdt.running():
            msg += "; the watchdog resets the board within %d ms" % self.wdt.timeout_ms
        else:
            msg += "; plain REPL"
        print(msg)

    # --- what the bench needs ----------------------------------------------------
    def status(self):
        s = self.station.status()
        s["board"] = self.name
        s["mode"] = self.mode
        p = self.plant
        if p is not None:
            s["plant"] = p.summary()
            s["plant"]["step_us"] = self.hw.step_us  # the physics' own task: last step, longest
            s["plant"]["step_us_max"] = self.hw.step_us_max
        else:
            s["hw"] = self.hw.info()
        if self.net is not None:
            s["net"] = self.net.info()
        return s

    def reboot(self):
        # Orderly: contactors open, the firmware saves what it holds, then a
        # hard reset. In demo mode the simulated world is kept for the next boot.
        self.log.warn("board", "reboot requested")
        self.station.stop("Reboot")
        if self.plant is not None:
            self.plant.power_lost()
            try:
                self.plant.save()
            except OSError:
                pass
        self.port.reset()

    def powercut(self):
        # As a pulled plug: nothing saved (the simulated world is lost too).
        self.port.reset()

    def handover(self):
        # mpremote asked for the raw REPL (firmware/repl.py). Why this is safe:
        # - hw.safe() runs first, synchronously, with no await and no I/O
        #   before it (the REPL returns without printing): coils off
        #   (contactors open), pilot at F. The EV sees F and stops drawing.
        #   Then station.stop() cancels the tasks and saves the records.
        # - After it no charger code runs: the control task is cancelled and
        #   the outputs stay at the safe levels it set.
        # - machine.WDT cannot be stopped once started (ESP32, RP2040), and
        #   nothing would feed it under mpremote, so it would reset the board
        #   in the middle of a file copy. Instead we reboot at once into the
        #   maintenance boot: no charger, no watchdog, the plain MicroPython
        #   REPL, which is what mpremote's raw REPL needs. The flag is taken
        #   at that boot, so the next reset starts the charger again.
        #   mpremote's own first attempt times out during that reboot; run
        #   the command again (tools/flash_bundle.py retries by itself).
        # - Without a running watchdog (not started yet) we simply leave the
        #   charger program: main() returns and MicroPython's REPL takes over.
        if self.hw is not None:
            self.hw.safe()  # first: before any print, save or file write
        if self.station is not None:
            try:
                self.station.stop()
            except Exception as e:  # outputs are safe already; still hand over
                self.log.error("board", "stop before hand-over: %s" % errtext(e))
        self.log.warn("board", "console handed over to mpremote: charger stopped")
        if self.wdt.running():
            print("charger stopped for mpremote; rebooting into the plain REPL (maintenance), "
                  "run the mpremote command again")
            with open(self._path(MAINT_FILE), "w") as f:
                f.write("1")
            self.port.reset()
            return
        print("charger stopped for mpremote; plain REPL")

    def maintenance(self):
        # Reboot into the plain REPL (no charger, no watchdog) once.
        self.log.warn("board", "maintenance reboot")
        if self.station is not None:
            self.station.stop()
        with open(self._path(MAINT_FILE), "w") as f:
            f.write("1")
        self.port.reset()


def main(port):
    board = DevBoard(port)
    try:
        asyncio.run(board.run())
    except KeyboardInterrupt:
        board.stopped("Ctrl-C", "Local")
    except ConfigError as e:
        board.stopped("config: %s" % e)
    except PinError:
        board.stopped("the pin map has errors (logged above)")
    except Exception as e:
        sys.print_exception(e)
        board.stopped("firmware raised %s" % errtext(e))
    return board

# The Unix board: the simulated plant as hardware, a directory as flash, the
# control channel, and reboot / power-cut as the process sees them.
#
# <dir>/flash   the firmware's store (what survives on a board's flash)
# <dir>/flash/slots/A, B   installed firmware images (.mpy), see firmware/ota/slots.py
# <dir>/plant.json   the world outside the charger (EV, meter, temperature),
#               which does not forget when the charger loses power
#
# This board is also the boot loader: the repository's source tree is its
# factory image, and an update installed into a slot is what `import
# firmware...` reads after the next boot (boards/common/loader.py). The board
# itself (clock, flash, simulated hardware) stays as it was started.
import os
import sys
from firmware.core.clock import RealClock, SimClock
from firmware.core.store import Store
from firmware.core.sched import Tasks
from firmware.sim.plant import Plant
from firmware.sim.hw import SimHardware
from firmware.ota.slots import Slots, FACTORY
from firmware.net.link import HostLink
from firmware.version import VERSION as FACTORY_VERSION
from firmware.bench import BenchError, check_args
from boards.common import loader

WDT_MS = 5000  # the simulated hardware watchdog's timeout
TARGET = "unix"  # the hardware target this board takes from an update bundle


class SimWdt:
    # Stands in for machine.WDT: fed by the station's watchdog only while every
    # critical task is alive; when it starves, the board resets, as a real
    # one would, after the software watchdog has already opened everything.
    def __init__(self, board, timeout_ms=WDT_MS):
        self.board = board
        self.timeout = timeout_ms
        self.fed = board.clock.ticks_ms()
        self.resets = 0

    def feed(self):
        self.fed = self.board.clock.ticks_ms()

    async def run(self):
        clock = self.board.clock
        while True:
            await clock.sleep_ms(1000)
            if clock.ticks_diff(clock.ticks_ms(), self.fed) > self.timeout:
                self.resets += 1
                self.board.log.error("board", "hardware watchdog expired: reset")
                self.fed = clock.ticks_ms()
                self.board.reboot()


class UnixBoard:
    def __init__(self, opts, out=None):
        self.opts = opts
        self.out = out or sys.stdout
        mode = opts["time"]
        self.clock = RealClock() if mode == "real" else SimClock(mode)
        d = opts["dir"]
        self.dir = d
        self.store = Store(d + "/flash")
        self.store.on_cut = self.powercut
        self.plant = Plant(opts["connectors_hw"], seed=opts["seed"], path=d + "/plant.json")
        restored = self.plant.restore()
        if restored and self.clock.simulated and self.plant.wall:
            self.clock.set_wall(self.plant.wall)
        if restored:
            # The world outside outlives the charger: say when it is not a fresh one.
            what = self.plant.changes()
            self.out.write("plant: restored from %s%s; plant_reset() starts afresh\n"
                           % (self.plant.path, (" (" + "; ".join(what) + ")") if what else ""))
        self.hw = SimHardware(self.plant)
        self.hw.wdt = SimWdt(self)  # its task starts with the board's loop (main.run)
        self.slots = Slots(self.store, d + "/flash/slots", factory_version=FACTORY_VERSION)
        self.loader = loader.Loader(self.slots, lambda line: self.out.write(line + "\n"))
        self.bench = None
        self.station = None
        self.log = None
        self.trial = None
        self.target = TARGET
        self.serial = None  # BootNotification's serial: "SIM-" + the charger id
        self.net = HostLink(self.clock)  # the host's network
        # --working-tree: the source tree runs, whatever slot the boot record
        # names, until this run changes the record (an update installed here
        # boots as on a board). None: the boot record decides.
        self.tree_record = self.slots.record()[0] if opts.get("working_tree") else None
        self.tasks = Tasks()  # the board's own tasks (simulated clock and watchdog): they outlive a station

    def boot(self):
        # The boot loader: choose the image, import the charger from it, start.
        if self.tree_record is not None and self.slots.record()[0] == self.tree_record:
            self.loader.image = loader.activate(None, self.loader.image)
            return self._start(FACTORY, "working tree (installed slots not booted)", [])
        self.tree_record = None
        return self.loader.boot(self._start)

    def _start(self, slot, report, failures):
        # Runs with `firmware` read from the chosen image; the charger is put
        # together by its composition root (firmware/app.py).
        from firmware.core.log import Log
        from firmware import app
        echo = (lambda line: self.out.write(line + "\n")) if self.opts["echo_log"] else None
        self.log = Log(self.clock, echo=echo)
        self.store.attach_log(self.log)
        self.tasks.log = self.log
        self.slots.log = self.log
        self.bench = app.bench(self)
        cfg = app.load_config(self.store, self.log, self.opts["set"])
        st = app.build(self, cfg, self.log, slot, report, failures,
                       working_tree=self.tree_record is not None)
        if self.tree_record is None and slot != FACTORY:
            self.out.write("image: slot %s (firmware %s), not the working tree\n" % (slot, st.version))
        self.trial = app.start(self, st, cfg)
        return st

    def status(self):
        s = self.station.status()
        p = self.plant
        p.step(self.clock.ticks_ms())  # the world moves on even while the firmware is stuck
        s["plant"] = p.summary()
        s["time_mode"] = self.opts["time"]
        s["net"] = self.net.info()
        return s

    async def advance(self, req):
        ms = check_args("advance", req)["ms"]
        if not self.clock.simulated or self.clock.mode != "step":
            raise BenchError("advance: only with --time step")
        await self.clock.advance(ms)
        return {"t": self.clock.elapsed_ms()}  # the bench's time line (Bench.status)

    def cut_after(self, req):
        # Test hook: {"n": K} cuts the power at the K-th write boundary from
        # now (store records, download flushes, installed files); n=0 disarms.
        # Replies with the boundaries passed so far, so a sweep can count them.
        n = req.get("n", 0)
        if not isinstance(n, int) or n < 0:
            raise BenchError("cut_after: n must be an int >= 0")
        return {"boundaries": self.store.arm_cut(n)}

    def reboot(self):
        # A soft reboot: the coil drops, the firmware ends its transactions
        # (reason Reboot), closes its link and saves what it holds, and comes
        # up again from its store; the plant (the world) stays.
        self.log.warn("board", "reboot requested")
        self.station.stop("Reboot")
        if self.station.ocpp and self.station.ocpp.ws:
            self.station.ocpp.ws.abort("reboot")  # stop() closed it with a close frame; if that failed, drop it
        self.plant.power_lost()
        self.boot()

    def shutdown(self):
        # Orderly stop of the whole board (Ctrl-C): coils off, save, and the
        # plant remembers the contacts as open.
        self.hw.safe()
        if self.station:
            self.station.stop("Local", "bench", "Ctrl-C")  # the operator ended it at the charger
        self.plant.power_lost()
        self.plant.wall = self.clock.wall()
        self.plant.save()

    def powercut(self):
        # The supply is gone: no flush, no goodbye. The world outside is kept.
        self.plant.power_lost()
        self.plant.wall = self.clock.wall()
        self.plant.save()
        try:
            self.out.flush()
        except AttributeError:
            pass
        os.system("kill -9 $PPID")
        raise SystemExit(137)  # only reached if kill is not there

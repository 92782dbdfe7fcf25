# Benchmark (MicroPython Unix port): heap use of the station alone.
#
#   micropython [-X heapsize=N] tools/bench/mp_heap.py --dir DIR
#
# Builds the Unix board in-process with SimClock in step mode (simulated plant,
# store in DIR/flash; no control channel, no REPL, log not echoed), boots the
# station and runs plug, EV C, charge, derate at 66 C and 69 C, cool to 25 C,
# stop, unplug, moving time with SimClock.advance(). Checks the contactor and
# the offered current on the way. Prints one line "RESULT {json}":
#   ok, error, heap (bytes), and for base (before the firmware's imports),
#   boot and scenario: live = gc.mem_alloc() right after gc.collect(),
#   max_live = the largest such figure over the scenario's checkpoints,
#   mem_peak / mem_total / mem_current = micropython.mem_peak() etc. Those
#   count m_malloc bytes minus explicit m_free; memory the GC reclaims is not
#   subtracted, so mem_peak is an upper bound of allocation volume, not of
#   live heap.
import sys

_parts = __file__.split("/")
sys.path.insert(0, "/".join(_parts[:-3]) or ("." if len(_parts) == 3 else ".."))

import gc
import micropython
import json


def figures():
    gc.collect()
    return {"live": gc.mem_alloc(), "free": gc.mem_free(), "mem_peak": micropython.mem_peak(),
            "mem_total": micropython.mem_total(), "mem_current": micropython.mem_current()}


BASE = figures()

import asyncio  # noqa: E402
from boards.unix.board import UnixBoard  # noqa: E402
# What the board's boot loader imports from the (factory) image at boot, so
# that "imports" holds all the code and the rest is the station's data.
import firmware.station, firmware.core.log, firmware.core.config, firmware.bench, firmware.ota.update  # noqa: E402,E401,F401

IMPORTS = figures()


def start_board_tasks(board):
    # What boards/unix/main.py starts beside the station (the simulated
    # hardware watchdog, where the board has one); no control channel, no REPL.
    wdt = getattr(board.hw, "wdt", None)
    if wdt is not None and hasattr(wdt, "run"):
        asyncio.create_task(wdt.run())


class Failed(Exception):
    pass


class Scenario:
    def __init__(self, directory):
        self.dir = directory
        self.max_live = 0
        self.checkpoints = 0

    def check(self, cond, what):
        gc.collect()
        a = gc.mem_alloc()
        self.checkpoints += 1
        if a > self.max_live:
            self.max_live = a
        if not cond:
            raise Failed(what)

    def conn(self):
        return self.board.station.connectors[0].status()

    async def until(self, pred, what, step=100, limit=120000):
        t = 0
        while t <= limit:
            c = self.conn()
            if pred(c):
                self.check(True, what)
                return c
            await self.clock.advance(step)
            t += step
        raise Failed("%s: not within %d ms; %s" % (what, limit, self.conn()))

    async def run(self):
        opts = {"dir": self.dir, "time": "step", "connectors_hw": 1, "set": [], "seed": 1,
                "repl": False, "echo_log": False}
        board = self.board = UnixBoard(opts)
        self.clock = clock = board.clock
        board.boot()
        start_board_tasks(board)
        board.ready = True
        b = board.bench
        await clock.advance(1000)
        res = {"boot": figures()}
        self.max_live = res["boot"]["live"]
        c = self.conn()
        self.check(c["status"] == "Available" and not c["contactor"], "idle at boot: %s" % c)
        b.plug(32)
        b.ev("C")
        c = await self.until(lambda c: c["contactor"] and c["aux"], "contactor closes")
        self.check(c["status"] == "Charging" and c["offered_ma"] == 32000, "charging at 32 A: %s" % c)
        await clock.advance(60000)
        c = self.conn()
        self.check(c["contactor"] and c["energy_wh"] > 0, "energy flows: %s" % c)
        b.temp(66)
        c = await self.until(lambda c: c["offered_ma"] == 16000, "derate to 50% at 66 C", 50, 5000)
        self.check(c["contactor"], "contactor stays closed at 50%%: %s" % c)
        b.temp(69)
        c = await self.until(lambda c: c["offered_ma"] == 8000, "derate to 25% at 69 C", 50, 5000)
        self.check(c["contactor"], "contactor stays closed at 25%%: %s" % c)
        await clock.advance(10000)
        b.temp(25)
        c = await self.until(lambda c: c["offered_ma"] == 32000, "back to 32 A at 25 C", 1000, 120000)
        self.check(c["contactor"] and c["status"] == "Charging", "charging again: %s" % c)
        b.stop()
        await self.until(lambda c: not c["contactor"] and not c["aux"], "contactor opens on stop", 100, 10000)
        b.unplug()
        c = await self.until(lambda c: c["status"] == "Available", "available after unplug", 100, 5000)
        self.check(not c["contactor"] and not c["aux"], "contactor open after unplug: %s" % c)
        ls = c["last_session"] or {}
        self.check(ls.get("reason") == "Local" and ls.get("wh", 0) > 0, "last session: %s" % ls)
        st = board.station
        self.check(st.watchdog.stalled is None and st.tick_errors == 0,
                   "watchdog %s, tick errors %d" % (st.watchdog.stalled, st.tick_errors))
        log = st.log
        errs = [e for e in log.entries(0) if e[3] >= 40]
        self.check(not errs, "errors in the log: %s" % errs[:3])
        await clock.advance(2000)  # let the store task flush
        res["scenario"] = figures()
        res["scenario"]["max_live"] = self.max_live
        res["checkpoints"] = self.checkpoints
        res["sim_ms"] = clock.elapsed_ms()
        res["store_writes"] = board.store.writes
        st.stop()
        return res


def main():
    d = None
    argv = sys.argv[1:]
    if len(argv) == 2 and argv[0] == "--dir":
        d = argv[1]
    if not d:
        print("usage: mp_heap.py --dir DIR")
        sys.exit(2)
    out = {"ok": False, "heap": BASE["live"] + BASE["free"], "base": BASE, "imports": IMPORTS}
    try:
        res = asyncio.run(Scenario(d).run())
        out.update(res)
        out["ok"] = True
    except MemoryError as e:
        out["error"] = "MemoryError: %s" % e
    except Failed as e:
        out["error"] = "scenario: %s" % e
    except Exception as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
    try:
        print("RESULT " + json.dumps(out))
    except MemoryError:
        print('RESULT {"ok": false, "error": "MemoryError printing the result"}')


main()

# Scheduler pieces on top of asyncio.
#
# Periodic: runs a function on a fixed period and records how late each run
# started (a fixed histogram, no allocation per run). The control loop is one.
# Watchdog: each critical task checks in; the watchdog feeds the board's
# hardware watchdog only while all of them are alive, and calls on_stall once
# when one is not, so the board can go to a safe state.
# Slice: lets long work (JSON, file writes) yield after a bounded time.
# Slice.run drives long work written as a generator (firmware/core/work.py).
# Tasks: the one way the firmware starts a task (spawn); see the class.
import asyncio
import time
from micropython import const
from firmware.core.clock import ticks_diff, ticks_ms  # ticks wrap at 2^30 as on the boards
from firmware.core.errtext import errtext  # an exception in words for a log line

_BUCKETS = const(101)  # lateness histogram: 0..99 ms, and 100+ ms
# Long work (firmware update, large records) holds the CPU at most this long
# before the loop gets control: well inside the control loop's 10 ms period.
WORK_SLICE_MS = const(2)


class Lateness:
    def __init__(self):
        self.hist = [0] * _BUCKETS
        self.count = 0
        self.max = 0

    def add(self, ms):
        if ms < 0:
            ms = 0
        self.hist[ms if ms < _BUCKETS - 1 else _BUCKETS - 1] += 1
        self.count += 1
        if ms > self.max:
            self.max = ms

    def percentile(self, p):
        if not self.count:
            return 0
        want = (self.count * p + 99) // 100
        acc = 0
        for i, n in enumerate(self.hist):
            acc += n
            if acc >= want:
                return i
        return _BUCKETS - 1

    def reset(self):
        for i in range(_BUCKETS):
            self.hist[i] = 0
        self.count = 0
        self.max = 0

    def summary(self):
        return {"n": self.count, "p50": self.percentile(50), "p99": self.percentile(99), "max": self.max}


class Periodic:
    # fn(now) returns the ms until it must run again at the latest, or None
    # for the normal period. Only tickless (simulated) clocks honour values
    # above the period; a real board always runs at the fixed period.
    def __init__(self, clock, period_ms, fn, name="control"):
        self.clock = clock
        self.period = period_ms
        self.fn = fn
        self.name = name
        self.late = Lateness()
        self.sleeper = clock.sleeper()
        self.due = clock.ticks_ms()  # when the next run should start
        self.stall_ms = 0  # test hook: stall the loop once, as a hung task would

    def wake(self):
        self.sleeper.wake()

    async def run(self):
        clock = self.clock
        tdiff = clock.ticks_diff
        tadd = clock.ticks_add
        due = clock.ticks_ms()
        while True:
            now = clock.ticks_ms()
            late = tdiff(now, due)
            if late >= 0:
                self.late.add(late)
            nxt = self.fn(now)
            if self.stall_ms:
                ms, self.stall_ms = self.stall_ms, 0
                await clock.sleep_ms(ms)
            step = self.period
            if clock.tickless and nxt is not None and nxt > step:
                step = nxt
            # Keep the period's phase while on time; re-anchor when woken early
            # (tickless) or when more than a period late.
            due = tadd(due if 0 <= late < self.period else now, step)
            self.due = due
            wait = tdiff(due, clock.ticks_ms())
            await self.sleeper.sleep_ms(wait if wait > 0 else 0)


class Watchdog:
    # Critical tasks are Periodic objects (or anything with a `due` tick).
    def __init__(self, clock, log, grace_ms=250, check_ms=50, hw_wdt=None):
        self.clock = clock
        self.log = log
        self.grace = grace_ms
        # A tickless (simulated) clock has no CPU to guard between events;
        # checking once a simulated second keeps a day's run cheap.
        self.check = 1000 if clock.tickless else check_ms
        self.tasks = []
        self.hw_wdt = hw_wdt  # object with feed(), or None
        self.on_stall = None
        self.stalled = None  # name of the stalled task, once seen

    def watch(self, periodic):
        self.tasks.append(periodic)

    def alive(self, now):
        for t in self.tasks:
            if self.clock.ticks_diff(now, t.due) > self.grace:
                return t
        return None

    async def run(self):
        clock = self.clock
        while True:
            now = clock.ticks_ms()
            bad = self.alive(now)
            if bad is None:
                if self.stalled:
                    self.log.warn("watchdog", "%s running again" % self.stalled)
                    self.stalled = None
                if self.hw_wdt:
                    self.hw_wdt.feed()
            elif not self.stalled:
                self.stalled = bad.name
                self.log.error("watchdog", "%s task stalled %d ms past due; safe state"
                               % (bad.name, clock.ticks_diff(now, bad.due)))
                if self.on_stall:
                    self.on_stall()
            await clock.sleep_ms(self.check)


class Slice:
    # async-for friendly budget: `await sl.check()` yields once the caller has
    # held the CPU for budget_ms of real time (CPU time is real even when the
    # charger's clock is simulated). budget_ms 0 yields at every check: tests
    # use it to see each yield point, independent of the machine's speed.
    # units / yields / longest: work units checked, times the loop got
    # control, and the most units done between two yields (what tests and
    # the status report read).
    def __init__(self, budget_ms=5):
        self.budget = budget_ms
        self.t0 = ticks_ms()
        self.units = 0
        self.yields = 0
        self.longest = 0
        self._run = 0

    async def check(self):
        self.units += 1
        self._run += 1
        if ticks_diff(ticks_ms(), self.t0) >= self.budget:
            if self._run > self.longest:
                self.longest = self._run
            self._run = 0
            self.yields += 1
            await asyncio.sleep_ms(0)
            self.t0 = ticks_ms()

    async def run(self, work):
        # Drive a work generator (firmware/core/work.py); returns its value.
        # A cancelled task closes the generator, so its files close too.
        try:
            while True:
                next(work)
                await self.check()
        except StopIteration as e:
            return e.value
        finally:
            work.close()


class Tasks:
    # Every task the firmware starts goes through spawn(): a bare
    # asyncio.create_task drops the task, so an exception in it vanishes and
    # nothing can cancel it. Here the task is kept until it ends, an
    # exception that ends it is logged and counted (deaths, shown by the
    # station's status()), and cancel_all() ends them all when the station
    # stops. The station owns one group; the board keeps one for the tasks
    # that outlive a station (simulated clock and watchdog).
    def __init__(self, log=None):
        self.log = log
        self.live = []
        self.deaths = 0  # tasks ended by an exception
        self.last_death = None  # "name: exception" of the latest one

    def spawn(self, coro, name="task"):
        live = self.live
        i = 0
        while i < len(live):  # forget tasks that have ended (cancelled before they ran)
            if live[i].done():
                live.pop(i)
            else:
                i += 1
        t = asyncio.create_task(self._guard(coro, name))
        live.append(t)
        return t

    async def _guard(self, coro, name):
        try:
            return await coro
        except Exception as e:  # CancelledError is a BaseException: it passes
            self.deaths += 1
            self.last_death = "%s: %s" % (name, errtext(e))
            if self.log is not None:
                self.log.error("task", "%s died: %s" % (name, errtext(e)))
        finally:
            try:
                self.live.remove(asyncio.current_task())
            except ValueError:
                pass

    def cancel_all(self):
        # The calling task (a Reset ends the station from its OCPP task) is
        # not cancelled: it ends itself once it sees the station stopped.
        try:
            cur = asyncio.current_task()
        except RuntimeError:  # no loop running (Ctrl-C ended it)
            cur = None
        keep = []
        for t in self.live:
            if t is cur:
                keep.append(t)
                continue
            try:
                t.cancel()
            except RuntimeError:
                pass  # the task that was running when Ctrl-C hit; the loop is gone anyway
        self.live = keep

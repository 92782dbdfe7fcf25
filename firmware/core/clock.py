# Clocks. One clock object is handed to everything that needs time.
#
# RealClock: the board's monotonic ms ticks, asyncio sleeps.
# SimClock: virtual ms that only move when told to (step mode), as fast as
# the tasks allow (jump mode) or at a multiple of real time (rate mode).
# Tasks sleep through a Sleeper so a simulated plant can wake the control
# task early when an input changes (tickless idle, simulation only).
#
# Wall time (epoch seconds, for logs and OCPP timestamps) is kept apart from the
# monotonic ticks and can be set from outside (CSMS, command line).
#
# Ticks wrap. ESP32 and RP2040 ms ticks run modulo 2^30 (12.4 days), so a
# tick value is only ever compared through ticks_diff (signed, valid while
# the two stamps lie within 2^29 ms of each other) and moved on with
# ticks_add; never with -, + or <. Both clocks present ticks with that same
# period on every port: the Unix port's own ticks_ms has a far longer one,
# which would hide a naive comparison. ticks_diff/ticks_add are module-level
# functions (hot paths import them) and methods of both clocks; the module's
# ticks_ms() is the port's real time with that period.
import asyncio
import sys
import time
from heapq import heappush, heappop
from micropython import const

HOLD_MS = 5000  # longest real wait for a held exchange before simulated time moves anyway
TICKS_MASK = const(0x3FFFFFFF)  # the boards' tick period is TICKS_MASK + 1 = 2^30 ms
_TICKS_HALF = const(0x20000000)
# The simulated clock starts 10 minutes before a wrap, so every simulated run
# (and every test) crosses one early on.
SIM_TICKS0 = const(0x3FFFFFFF - 600000 + 1)
# A wall clock before 2020-01-01 has not been set: a board's RTC after power-up
# (on ESP32 counting from 2000) until the CSMS or the host gives the time.
WALL_KNOWN_MIN = const(1577836800)

if time.ticks_add(0, -1) == TICKS_MASK:
    # The port's ticks already wrap at 2^30 (ESP32, RP2040): use them as they are.
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
    ticks_ms = time.ticks_ms
else:
    def ticks_diff(a, b):
        # Signed a - b modulo 2^30, as time.ticks_diff on the boards.
        return ((a - b + _TICKS_HALF) & TICKS_MASK) - _TICKS_HALF

    def ticks_add(t, delta):
        return (t + delta) & TICKS_MASK

    def ticks_ms():
        # The port's ms ticks with the boards' period (real time, also under a
        # SimClock: for measuring how long work really takes).
        return time.ticks_ms() & TICKS_MASK



def us_diff(a_us, b_us):
    # a - b for two time.ticks_us() stamps (the port's own period on both,
    # so wrap-safe): for timing and phase, never for control decisions.
    return time.ticks_diff(a_us, b_us)


def us_since(t0_us):
    # Microseconds since a time.ticks_us() stamp (the port's own period on
    # both ends, so wrap-safe): for timing work, never for control decisions.
    return time.ticks_diff(time.ticks_us(), t0_us)

class _RealSleeper:
    def sleep_ms(self, ms):
        # Not `async def`: a coroutine object per call would be garbage every
        # control period. asyncio.sleep_ms hands back a preallocated awaitable.
        return asyncio.sleep_ms(ms)

    def wake(self):
        pass  # real boards poll at a fixed period; nothing to cut short


class RealClock:
    simulated = False
    tickless = False
    ticks_diff = staticmethod(ticks_diff)
    ticks_add = staticmethod(ticks_add)

    def hold(self):
        pass  # see SimClock.hold

    def release(self):
        pass

    def __init__(self, epoch=None):
        self._wall_ofs = 0
        # The wall clock is known once set (CSMS, host), or from the start on
        # the Unix port (the host's clock). A board's RTC after power-up runs
        # from a made-up date (2000 on ESP32, 2021 on RP2040).
        self._wall_known = sys.platform in ("linux", "darwin")
        self._t0 = time.ticks_ms()  # the port's own ticks: on Unix they do not wrap in practice
        if epoch is not None:
            self.set_wall(epoch)

    def ticks_ms(self):
        return ticks_ms()

    def elapsed_ms(self, t=None):
        # Tick t (default now) as ms since this clock started (the board's
        # power-up): a timeline that does not wrap, for the bench and the
        # control channel. Exact while t is within 2^29 ms of now; on a board
        # (whose own ticks wrap) also only for the first 2^29 ms of uptime.
        now = time.ticks_ms()
        e = time.ticks_diff(now, self._t0)
        return e if t is None else e + ticks_diff(t, now & TICKS_MASK)

    def sleeper(self):
        return _RealSleeper()

    def sleep_ms(self, ms):
        return asyncio.sleep_ms(ms)  # no coroutine object per call (see _RealSleeper)

    def wall(self):
        return time.time() + self._wall_ofs

    def set_wall(self, epoch):
        self._wall_ofs = int(epoch) - time.time()
        self._wall_known = True

    def wall_ms(self):
        # Epoch ms, or None while the wall clock is not known (for log stamps).
        w = self.wall()
        if not self._wall_known or w < WALL_KNOWN_MIN:
            return None
        ns = getattr(time, "time_ns", None)
        return w * 1000 if ns is None else ns() // 1000000 + self._wall_ofs * 1000


class _SimSleeper:
    def __init__(self, clock):
        self._clock = clock
        self._ev = asyncio.Event()
        self._seq = -1  # sequence number of the timer this sleeper waits on

    async def sleep_ms(self, ms):
        c = self._clock
        c._seq += 1
        self._seq = c._seq
        self._ev.clear()
        heappush(c._timers, (c._now + max(0, ms), self._seq, self))
        await self._ev.wait()

    def wake(self):
        self._seq = -1  # any timer still queued for us is now stale
        self._ev.set()


class SimClock:
    simulated = True
    tickless = True
    ticks_diff = staticmethod(ticks_diff)
    ticks_add = staticmethod(ticks_add)

    # mode: "step" (advance() only), "jump" (next timer as soon as all idle),
    # or a number: virtual ms per real ms.
    # _now counts virtual ms since the start and never wraps: the timer heap
    # is ordered by it. Tasks only see ticks_ms(), which wraps as a board's.
    def __init__(self, mode="step", epoch=1767225600):
        self._now = 0
        self._seq = 0
        self._timers = []
        self._wall0 = int(epoch)
        self.mode = mode
        self._holds = 0  # network exchanges in flight (see hold)

    def ticks_ms(self):
        return (SIM_TICKS0 + self._now) & TICKS_MASK

    def elapsed_ms(self, t=None):
        # Tick t (default now) as virtual ms since the start: see RealClock.
        return self._now if t is None else self._now + ticks_diff(t, self.ticks_ms())

    def sleeper(self):
        return _SimSleeper(self)

    async def sleep_ms(self, ms):
        await _SimSleeper(self).sleep_ms(ms)

    def wall(self):
        return self._wall0 + self._now // 1000

    def set_wall(self, epoch):
        self._wall0 = int(epoch) - self._now // 1000

    def wall_ms(self):
        # Epoch ms, or None while the wall clock is not known (see RealClock).
        if self.wall() < WALL_KNOWN_MIN:
            return None
        return self._wall0 * 1000 + self._now

    def hold(self):
        # A task waits on a real peer (a CSMS reply, a connect): simulated time
        # must not run past its timeouts meanwhile. settle() waits, in real
        # time and at most HOLD_MS, until every hold is released.
        self._holds += 1

    def release(self):
        if self._holds > 0:
            self._holds -= 1

    async def settle(self):
        # Let every task that is ready run until all wait on a timer or on I/O
        # (and no task holds time for a peer's answer).
        q = asyncio.core._task_queue
        t0 = time.ticks_ms()
        while True:
            await asyncio.sleep_ms(0)
            t = q.peek()
            if t is None or time.ticks_diff(t.ph_key, time.ticks_ms()) > 0:
                if self._holds == 0 or time.ticks_diff(time.ticks_ms(), t0) > HOLD_MS:
                    return
                await asyncio.sleep_ms(1)

    def _fire_next(self, limit):
        # Fire every timer due at the earliest due time <= limit; False if none.
        timers = self._timers
        while timers:
            due, seq, sl = timers[0]
            if due > limit:
                return False
            heappop(timers)
            if sl._seq == seq:  # skip stale timers of sleepers woken early
                self._now = due
                sl._seq = -1
                sl._ev.set()
                while timers and timers[0][0] == due:
                    _, seq, sl = heappop(timers)
                    if sl._seq == seq:
                        sl._seq = -1
                        sl._ev.set()
                return True
        return False

    async def advance(self, ms):
        # Run the simulation forward by ms virtual milliseconds.
        target = self._now + ms
        await self.settle()
        while self._fire_next(target):
            await self.settle()
        self._now = target
        await self.settle()

    async def run(self):
        # Drive time in jump or rate mode; in step mode only advance() moves it.
        if self.mode == "step":
            return
        rate = None if self.mode == "jump" else float(self.mode)
        real0 = time.ticks_ms()
        virt0 = self._now
        while True:
            if rate is None:
                await self.settle()
                if not self._fire_next(self._now + 3600000):
                    await asyncio.sleep_ms(1)
            else:
                await asyncio.sleep_ms(2)
                target = virt0 + int(time.ticks_diff(time.ticks_ms(), real0) * rate)
                while self._fire_next(target):
                    await self.settle()
                if target > self._now:
                    self._now = target

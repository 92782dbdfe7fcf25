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
import asyncio
import time
from heapq import heappush, heappop

HOLD_MS = 5000  # longest real wait for a held exchange before simulated time moves anyway

ticks_diff = time.ticks_diff
ticks_add = time.ticks_add


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

    def hold(self):
        pass  # see SimClock.hold

    def release(self):
        pass

    def __init__(self, epoch=None):
        self._wall_ofs = 0
        if epoch is not None:
            self.set_wall(epoch)

    def ticks_ms(self):
        return time.ticks_ms()

    def sleeper(self):
        return _RealSleeper()

    def sleep_ms(self, ms):
        return asyncio.sleep_ms(ms)  # no coroutine object per call (see _RealSleeper)

    def wall(self):
        return time.time() + self._wall_ofs

    def set_wall(self, epoch):
        self._wall_ofs = int(epoch) - time.time()


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

    # mode: "step" (advance() only), "jump" (next timer as soon as all idle),
    # or a number: virtual ms per real ms.
    def __init__(self, mode="step", epoch=1767225600):
        self._now = 0
        self._seq = 0
        self._timers = []
        self._wall0 = int(epoch)
        self.mode = mode
        self._holds = 0  # network exchanges in flight (see hold)

    def ticks_ms(self):
        return self._now

    def sleeper(self):
        return _SimSleeper(self)

    async def sleep_ms(self, ms):
        await _SimSleeper(self).sleep_ms(ms)

    def wall(self):
        return self._wall0 + self._now // 1000

    def set_wall(self, epoch):
        self._wall0 = int(epoch) - self._now // 1000

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

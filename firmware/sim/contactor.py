# Simulated contactor: the contacts follow the coil after 100-110 ms; the aux
# contact mirrors the contacts. Injected faults: welded (contacts stay closed
# once closed) and stuck_open (they never close).

from firmware.core.clock import ticks_add, ticks_diff  # ms ticks wrap at 2^30 (boards' period) on every port


class SimContactor:
    def __init__(self, rng):
        self.rng = rng
        self.coil = False
        self.closed = False
        self.welded = False
        self.stuck_open = False
        self._switch_at = None

    def command(self, on, now):
        if on != self.coil:
            self.coil = on
            self._switch_at = ticks_add(now, self.rng.range(100, 110))

    def step(self, now):
        # Returns when the contacts moved, or None.
        at = self._switch_at
        if at is not None and ticks_diff(now, at) >= 0:
            self._switch_at = None
            was = self.closed
            if self.coil:
                self.closed = not self.stuck_open
            elif not self.welded:
                self.closed = False
            if self.closed != was:
                return at
        return None

    def next_event_ms(self, now):
        return -1 if self._switch_at is None else max(0, ticks_diff(self._switch_at, now))

    def power_lost(self):
        # The coil drops with the supply; welded contacts stay where they are.
        self.coil = False
        self._switch_at = None
        if not self.welded:
            self.closed = False

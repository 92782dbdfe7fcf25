# Reconnect delays: exponential growth, capped, with random jitter so a
# fleet of chargers cut off together does not reconnect in lock step.
# Keep the cap at or below the CSMS's heartbeat interval (set_cap): a longer
# wait after a short outage makes the charger look dead for longer than the
# outage itself (2.5 min offline once took 90 s more to come back).
#
#   bo = Backoff()
#   while True:
#       try:
#           ws = await connect(url, ...)
#       except WsError:
#           await clock.sleep_ms(bo.next_ms())
#           continue
#       bo.reset()   # after a connection that worked (e.g. boot accepted)
#       ...
import os


class Backoff:
    # The n-th delay (from 0) is d = min(cap_ms, base_ms * factor**n) minus a
    # random part of up to jitter * d: uniform in [(1 - jitter) * d, d].
    # rng: object whose next() returns a 31-bit int, like firmware.core.rng.Rng,
    # for reproducible runs; default os.urandom.
    def __init__(self, base_ms=1000, cap_ms=300000, factor=2, jitter=0.5, rng=None):
        if base_ms <= 0 or cap_ms < base_ms or factor < 1 or not 0 <= jitter <= 1:
            raise ValueError("bad backoff parameters")
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self.factor = factor
        self.jitter = jitter
        self._rng = rng
        self.attempts = 0
        self._d = base_ms

    def _frac(self):
        # uniform in [0, 1) with 16 bits of resolution
        if self._rng is not None:
            # top 16 of 31 bits: an LCG's low bits repeat with a short period
            r = (self._rng.next() >> 15) & 0xFFFF
        else:
            b = os.urandom(2)
            r = (b[0] << 8) | b[1]
        return r / 65536

    def next_ms(self):
        d = self._d
        # grow for next time, stopping at the cap (no overflow, no float drift)
        self._d = min(self.cap_ms, int(d * self.factor))
        self.attempts += 1
        return int(d - d * self.jitter * self._frac())

    def set_cap(self, cap_ms):
        # The cap may follow something that changes (the OCPP client keeps it
        # at or below the heartbeat interval): a lower cap applies at once.
        self.cap_ms = max(self.base_ms, int(cap_ms))
        if self._d > self.cap_ms:
            self._d = self.cap_ms

    def reset(self):
        self.attempts = 0
        self._d = self.base_ms

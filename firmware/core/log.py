# Event log: a fixed ring in RAM that the control loop can add to without
# touching flash, and a flush task that appends the new entries to the store.
# Entries carry monotonic ticks and wall time so a technician can line up
# what happened with the scope or with the CSMS.
from micropython import const

DEBUG = const(10)
INFO = const(20)
WARN = const(30)
ERROR = const(40)
_NAMES = {DEBUG: "D", INFO: "I", WARN: "W", ERROR: "E"}


class Log:
    def __init__(self, clock, size=128, echo=None, level=INFO):
        self.clock = clock
        self.size = size
        self._ring = [None] * size
        self.seq = 0  # number of entries ever added
        self._flushed = 0
        self.echo = echo  # callable(str) or None: print to console as well
        # The console's own threshold (the bench's loglevel() / mute()): the
        # ring and the store still get every entry at self.level. The REPL's
        # line editor wraps echo to print a line above the one being typed.
        self.echo_level = DEBUG
        self.level = level
        self.dropped = 0

    def add(self, level, src, msg):
        if level < self.level:
            return
        e = (self.seq, self.clock.ticks_ms(), self.clock.wall(), level, src, msg)
        self._ring[self.seq % self.size] = e
        self.seq += 1
        if self.echo and level >= self.echo_level:
            self.echo(self.format(e))

    def debug(self, src, msg):
        self.add(DEBUG, src, msg)

    def info(self, src, msg):
        self.add(INFO, src, msg)

    def warn(self, src, msg):
        self.add(WARN, src, msg)

    def error(self, src, msg):
        self.add(ERROR, src, msg)

    @staticmethod
    def format(e):
        return "%d %d.%03d %s %s: %s" % (e[2], e[1] // 1000, e[1] % 1000, _NAMES.get(e[3], "?"), e[4], e[5])

    def entries(self, since=0):
        # Entries with seq >= since that are still in the ring, oldest first.
        first = max(since, self.seq - self.size, 0)
        return [self._ring[i % self.size] for i in range(first, self.seq)]

    def flush(self, store, name="log.txt", max_bytes=32768):
        # Called from a low-priority task, never from the control loop.
        if self._flushed < self.seq - self.size:
            self.dropped += self.seq - self.size - self._flushed
            self._flushed = self.seq - self.size
        if self._flushed == self.seq:
            return 0
        lines = [self.format(e) + "\n" for e in self.entries(self._flushed)]
        store.append(name, "".join(lines), max_bytes)
        n = self.seq - self._flushed
        self._flushed = self.seq
        return n

# Event log: a fixed ring in RAM that the control loop can add to without
# touching flash, and a flush task that appends the new entries to the store.
# Entries carry monotonic ticks and wall time so a technician can line up
# what happened with the scope or with the CSMS.
#
# add() only stores a tuple in the ring (and echoes when asked); lines are
# formatted when they are echoed or flushed, never per control tick. A line:
#   2026-12-02T14:48:24.123Z I conn1: contactor closed ...   (wall clock known, UTC)
#   +273.412s I conn1: contactor closed ...                   (not yet: uptime)
# With json set (config key log_json), one JSON object a line instead:
#   {"time": "2026-12-02T14:48:24.123Z", "uptime_ms": 273412, "level": "info", "src": "conn1", "msg": "..."}
# ("time" is null while the wall clock is not known).
import json
from micropython import const
from firmware.core import timefmt

DEBUG = const(10)
INFO = const(20)
WARN = const(30)
ERROR = const(40)
_NAMES = {DEBUG: "D", INFO: "I", WARN: "W", ERROR: "E"}
_WORDS = {DEBUG: "debug", INFO: "info", WARN: "warn", ERROR: "error"}


def iso_ms(ms):
    # Epoch ms -> "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC), by hand (timefmt): the
    # ports differ in their epoch and not all have gmtime.
    return timefmt.format_ms(ms)


class Log:
    def __init__(self, clock, size=128, echo=None, level=INFO, json=False):
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
        self.json = json  # JSON lines (for machines) instead of text lines
        self.dropped = 0

    def add(self, level, src, msg):
        if level < self.level:
            return
        c = self.clock
        # (seq, ticks, wall s, level, src, msg, wall ms or None if not known)
        e = (self.seq, c.ticks_ms(), c.wall(), level, src, msg, c.wall_ms())
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

    def format(self, e):
        # One line for the console and log.txt (see the top of this file).
        up = self.clock.elapsed_ms(e[1])
        if self.json:
            # By hand: the keys in this order on every port (MicroPython's dicts have none).
            return '{"time": %s, "uptime_ms": %d, "level": "%s", "src": %s, "msg": %s}' % (
                "null" if e[6] is None else '"%s"' % iso_ms(e[6]), up, _WORDS.get(e[3], "?"),
                json.dumps(e[4]), json.dumps(e[5]))
        t = "+%d.%03ds" % (up // 1000, up % 1000) if e[6] is None else iso_ms(e[6])
        return "%s %s %s: %s" % (t, _NAMES.get(e[3], "?"), e[4], e[5])

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

# The security log (audit trail): who did what to the charger, and when.
#
# One line per entry, "<ISO time> <who> <what>\n", who being CSMS, bench,
# usb or charger. Appended to the store (Store.append) and rotated to one
# older file, so it stays bounded (2 x MAX_BYTES) and survives reboots; a
# power cut can lose at most the line being written. Callers never pass
# secrets; as a second line of defence, strings registered with hide() are
# masked before anything reaches flash.
#
# A line that cannot be written (flash full or failing) does not stop the
# caller (the event still goes to the CSMS), but it is not lost silently:
# write_failures counts them (the station's status() shows it) and the
# charger's log says so, once per failure streak and with the line's text.
import os
from firmware.core import timefmt

NAME = "seclog.txt"
MAX_BYTES = 8192  # per file; the rotated one doubles what is kept
MAX_WHAT = 300  # an entry is one line of bounded length
WHO = ("CSMS", "bench", "usb", "charger")
MAX_LINE = 400  # a line as read back: time, who and MAX_WHAT, with room


class SecLog:
    def __init__(self, store, clock, name=NAME, max_bytes=MAX_BYTES, log=None):
        self.store = store
        self.log = log if log is not None else getattr(store, "log", None)
        self.clock = clock
        self.name = name
        self.max_bytes = max_bytes
        self.secrets = []  # values that must never be written (hide())
        self.written = 0
        self.write_failures = 0
        self._failing = False  # in a streak of failed writes (logged once)

    def hide(self, secret):
        if secret and secret not in self.secrets:
            self.secrets.append(secret)

    def clean(self, text):
        text = str(text).replace("\r", " ").replace("\n", " ")
        for s in self.secrets:
            if s in text:
                text = text.replace(s, "(secret)")
        return text[:MAX_WHAT]

    def add(self, who, what):
        if who not in WHO:
            who = "charger"  # a bad caller must not break the line format
        line = "%s %s %s\n" % (timefmt.format(self.clock.wall()), who, self.clean(what))
        try:
            self.store.append(self.name, line, self.max_bytes)
            self.written += 1
            if self._failing:
                self._failing = False
                self._say("warn", "security log writable again after %d failed line(s)" % self.write_failures)
        except OSError as e:
            self.write_failures += 1
            if not self._failing:
                self._failing = True
                self._say("error", "security log line not written (%r): %s" % (e, line[:-1]))
        return line

    def _say(self, level, msg):
        log = self.log
        if log is not None:
            getattr(log, level)("seclog", msg)

    def _files(self):
        p = self.store.path(self.name)
        return (p + ".1", p)  # oldest first

    def _each(self, since, until):
        # Lines (without the newline) whose time is inside [since, until].
        # A file far over its rotation bound was not written by us: it is set
        # aside (logged, renamed to .bad) rather than read into RAM; a line is
        # read at most MAX_LINE long, and one that is not text is skipped.
        bound = self.max_bytes + MAX_LINE
        for p in self._files():
            try:
                if os.stat(p)[6] > bound:
                    self.store.set_aside(p, p[p.rfind("/") + 1:], "over the %d-byte bound" % bound)
                    continue
                f = open(p, "rb")
            except OSError:
                continue
            with f:
                while True:
                    raw = f.readline(MAX_LINE)
                    if not raw:
                        break
                    try:
                        line = raw.decode()
                    except ValueError:  # UnicodeError: not text
                        continue
                    if not line.endswith("\n"):
                        continue  # the torn last line of a power cut, or an overlong one
                    t = timefmt.parse(line[:20])
                    if t is None:
                        continue
                    if (since is not None and t < since) or (until is not None and t > until):
                        continue
                    yield line[:-1]

    def lines(self, since=None, until=None):
        # since / until: epoch seconds or None (open end).
        return list(self._each(since, until))

    def tail(self, n):
        out = self.lines()
        return out[-n:] if n else []

    def export(self, path, since=None, until=None):
        # Write the entries of the window to path, line by line (never the
        # whole log in RAM). Returns the number of lines.
        n = 0
        with open(path, "w") as f:
            for line in self._each(since, until):
                f.write(line + "\n")
                n += 1
        return n

    def clear(self, who):
        # Empties the log; the first entry afterwards says who cleared it.
        self.store.remove(self.name + ".1")
        self.store.remove(self.name)
        return self.add(who, "SecurityLogWasCleared")

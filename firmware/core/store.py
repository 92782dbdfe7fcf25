# Persistent store: small JSON records in one directory, written atomically.
#
# A record is "<json>\n<crc32 hex>\n". write() puts it in <name>.tmp, flushes,
# fsyncs where the port has it, and renames over <name>; rename is atomic on
# POSIX and littlefs. read() validates the CRC and falls back to a complete
# .tmp left by a cut between write and rename.
#
# Boot must never die on a record, whatever flash holds: read() bounds the
# size before reading, checks the nesting depth with a flat scan before
# json.loads (no recursion, no unbounded parser stack), then the CRC, then
# the record's shape through the caller's check. A record that fails any of
# these is logged by name, renamed to <name>.bad (kept for the technician,
# never deleted; only the latest bad copy is kept) and the caller's default
# is used.
import json
import os
from binascii import crc32
from micropython import const

MAX_BYTES = const(16384)  # a record's default size bound; big records (queues, lists) pass their own
MAX_DEPTH = const(16)  # nesting depth bound of any record; the deepest real one is about 7

try:
    _fsync = os.fsync
except AttributeError:
    _fsync = None


def _join(a, b):
    return b if a in ("", ".") else (a.rstrip("/") + "/" + b)


def _makedirs(path):
    cur = ""
    for part in path.split("/"):
        if not part:
            cur = "/" if cur == "" else cur
            continue
        cur = part if cur in ("",) else (cur.rstrip("/") + "/" + part)
        try:
            os.mkdir(cur)
        except OSError:
            pass


def depth_ok(buf, limit=MAX_DEPTH):
    # True if the JSON text in buf (bytes) nests [ and { at most limit deep.
    # A flat scan, so a 50,000-deep record costs time, not stack or heap.
    # Strings are skipped with find(), so brackets inside them do not count.
    if buf.count(b"[") + buf.count(b"{") <= limit:
        return True  # cannot nest deeper than it has brackets
    depth = 0
    i = 0
    n = len(buf)
    while i < n:
        c = buf[i]
        if c == 34:  # '"': jump to the closing quote (one with an even run of backslashes before it)
            j = i
            while True:
                j = buf.find(b'"', j + 1)
                if j < 0:
                    return True  # unterminated: json.loads refuses it
                k = j - 1
                while buf[k] == 92:
                    k -= 1
                if (j - 1 - k) % 2 == 0:
                    break
            i = j
        elif c == 91 or c == 123:
            depth += 1
            if depth > limit:
                return False
        elif c == 93 or c == 125:
            depth -= 1
        i += 1
    return True


def is_int(x):
    # An integer that is not a bool (JSON true is not a count).
    return isinstance(x, int) and not isinstance(x, bool)


def is_num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def dict_of(x, value_ok, key_ok=None):
    # For record checks: x is a dict whose values (and keys) all pass.
    if not isinstance(x, dict):
        return False
    for k, v in x.items():
        if not value_ok(v) or (key_ok and not key_ok(k)):
            return False
    return True


def list_of(x, item_ok):
    if not isinstance(x, list):
        return False
    for v in x:
        if not item_ok(v):
            return False
    return True


class BadRecord(Exception):
    pass


class Store:
    def __init__(self, root, log=None):
        self.root = root
        self.log = log
        self.writes = 0  # counted so tests and benchmarks can see the I/O
        self.cut_at = 0  # >0: simulate power loss at that write boundary (Unix)
        self.on_cut = None  # what power loss means on this board (Unix: kill the process)
        self._boundary = 0
        # name -> flush(): records a task is writing in slices (write_work);
        # reading one, or flush_pending() at an orderly stop, writes it now.
        self.pending = {}
        self.aside = {}  # record name -> why it was set aside at this run's read (cleared when rewritten)
        self._unlogged = []  # set-aside lines from before a log was attached (the boot loader's reads)
        _makedirs(root)

    def path(self, name):
        return _join(self.root, name)

    def arm_cut(self, n):
        # Test hook (Unix): lose power at the n-th write boundary from now.
        # Returns the boundaries passed so far.
        self.cut_at = self._boundary + n if n > 0 else 0
        return self._boundary

    def boundary(self):
        # Writers outside the store (a download, an install's files) mark
        # their own write boundaries, so power cuts can be injected there too.
        self._cut()

    def _cut(self):
        # Each step of a write is a boundary where power may fail.
        self._boundary += 1
        if self.cut_at and self._boundary >= self.cut_at:
            if self.on_cut:
                self.on_cut()
            raise PowerCut()

    def write(self, name, obj):
        self.write_file(self.path(name), obj)
        if self.aside:
            self.aside.pop(name, None)

    def write_file(self, p, obj):
        # A record at an explicit path (outside the store's directory, e.g. a
        # firmware slot), with the same atomicity and power-cut boundaries.
        data = json.dumps(obj)
        tmp = p + ".tmp"
        self._cut()
        with open(tmp, "w") as f:
            f.write(data)
            self._cut()
            f.write("\n%08x\n" % (crc32(data.encode()) & 0xFFFFFFFF))
            f.flush()
            if _fsync:
                _fsync(f.fileno())
        self._cut()
        try:
            os.rename(tmp, p)
        except OSError:
            # FAT will not rename over an existing file; read() falls back to
            # the complete .tmp if we are cut between these two steps.
            os.remove(p)
            os.rename(tmp, p)
        self.writes += 1

    def write_work(self, name, pieces):
        # The same record as write(), its JSON text given as an iterator of
        # str pieces: a generator (firmware/core/work.py) that yields after
        # each piece written, for records too large to encode in one go. Same
        # atomicity, CRC and power-cut boundaries as write_file.
        p = self.path(name)
        tmp = p + ".tmp"
        self._cut()
        crc = 0
        with open(tmp, "w") as f:
            for piece in pieces:
                f.write(piece)
                crc = crc32(piece.encode(), crc)
                yield
            self._cut()
            f.write("\n%08x\n" % (crc & 0xFFFFFFFF))
            f.flush()
            if _fsync:
                _fsync(f.fileno())
        self._cut()
        try:
            os.rename(tmp, p)
        except OSError:
            os.remove(p)
            os.rename(tmp, p)
        self.writes += 1
        if self.aside:
            self.aside.pop(name, None)

    def flush_pending(self):
        for name in list(self.pending):
            self.pending.pop(name)()

    def _load(self, p, plain, check, max_bytes):
        # -> the record, or None when there is no file; raises BadRecord(why).
        try:
            size = os.stat(p)[6]
        except OSError:
            return None
        if size > max_bytes:
            raise BadRecord("%d bytes, over the %d-byte bound" % (size, max_bytes))
        try:
            with open(p, "rb") as f:
                raw = f.read(size)  # read(n) allocates n at once: the file's size, not the bound
        except OSError:
            return None
        if not raw.strip():
            raise BadRecord("empty")
        if not depth_ok(raw):
            raise BadRecord("nested deeper than %d levels" % MAX_DEPTH)
        data = None
        body = raw.rstrip(b"\n")
        nl = body.rfind(b"\n")
        crc = body[nl + 1:] if nl >= 0 else b""
        if len(crc) == 8:
            try:
                want = int(crc, 16)
            except ValueError:
                want = None
            if want is not None:
                if want != crc32(body[:nl]) & 0xFFFFFFFF:
                    raise BadRecord("CRC mismatch")
                data = body[:nl]
        if data is None:
            if not plain:
                raise BadRecord("no CRC line (truncated or not a record)")
            data = raw  # hand-written JSON (a technician's config.json) has no CRC line
        try:
            obj = json.loads(data.decode())
        except (ValueError, MemoryError):  # UnicodeError is a ValueError
            raise BadRecord("not JSON")
        try:
            ok = check(obj)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError):
            ok = False
        if not ok:
            raise BadRecord("wrong type or shape")
        return obj

    def read(self, name, default=None, plain=False, check=None, max_bytes=MAX_BYTES):
        """The record `name`, or `default` when it is missing or bad.

        check(obj) -> bool says whether the decoded record has the shape its
        owner can use (it may also raise TypeError/KeyError/...); without
        one, the record must have the default's type. Never raises on what
        the file holds."""
        f = self.pending.pop(name, None)
        if f is not None:
            f()  # a record still being written in slices: its latest state first
        return self.read_file(self.path(name), default, plain, check, max_bytes, name)

    def read_file(self, p, default=None, plain=False, check=None, max_bytes=MAX_BYTES, name=None):
        if check is None:
            check = (lambda o: True) if default is None else (lambda o: isinstance(o, type(default)))
        try:
            obj = self._load(p, plain, check, max_bytes)
        except BadRecord as e:
            self.set_aside(p, name or p, str(e))
            obj = None
        if obj is None:
            # A cut between write and rename (FAT: between remove and rename)
            # leaves a complete .tmp; a torn one is left for the next write.
            try:
                obj = self._load(p + ".tmp", False, check, max_bytes)
            except BadRecord:
                obj = None
            if obj is None:
                return default
        return obj

    def set_aside(self, p, name, why):
        # Rename a bad file at path p to p.bad and log it under name.
        self.aside[name] = why
        try:
            try:
                os.remove(p + ".bad")  # FAT will not rename over a file; keep the latest bad copy
            except OSError:
                pass
            os.rename(p, p + ".bad")
            where = "set aside as %s.bad" % name
        except OSError as e:
            where = "could not be set aside (%s)" % e
        line = "record %s is bad (%s); %s, defaults used" % (name, why, where)
        if self.log:
            self.log.error("store", line)
        elif len(self._unlogged) < 8:
            self._unlogged.append(line)

    def attach_log(self, log):
        # The log starts after the boot loader has read its records: what
        # was set aside before is logged now.
        self.log = log
        for line in self._unlogged:
            log.error("store", line)
        self._unlogged = []

    def remove(self, name):
        for p in (self.path(name), self.path(name) + ".tmp"):
            try:
                os.remove(p)
            except OSError:
                pass

    def append(self, name, line, max_bytes):
        # Append-only text file rotated to <name>.1 when it passes max_bytes;
        # for logs, where losing the tail on a cut is acceptable.
        p = self.path(name)
        try:
            size = os.stat(p)[6]
        except OSError:
            size = 0
        if size + len(line) > max_bytes:
            try:
                os.rename(p, p + ".1")
            except OSError:
                pass
        with open(p, "a") as f:
            f.write(line)


class PowerCut(Exception):
    # Raised by a store armed with cut_at when the board has no on_cut that
    # ends the process (as the Unix board's does).
    pass

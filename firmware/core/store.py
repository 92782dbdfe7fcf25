# Persistent store: small JSON records in one directory, written atomically.
#
# A record is "<json>\n<crc32 hex>\n". write() puts it in <name>.tmp, flushes,
# fsyncs where the port has it, and renames over <name>; rename is atomic on
# POSIX and littlefs. read() validates the CRC and falls back to a complete
# .tmp left by a cut between write and rename, so a torn or corrupt record is
# reported (None + log) and never crashes boot.
import json
import os
from binascii import crc32

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

    def flush_pending(self):
        for name in list(self.pending):
            self.pending.pop(name)()

    def _load(self, p, plain=False):
        try:
            with open(p) as f:
                text = f.read()
        except OSError:
            return None, False
        except (UnicodeError, ValueError):
            return None, True  # not even text: corrupt
        try:
            data, crc = text.rstrip("\n").rsplit("\n", 1)
            if len(crc) != 8:
                raise ValueError("no crc")
            if int(crc, 16) != crc32(data.encode()) & 0xFFFFFFFF:
                return None, True
            return json.loads(data), True
        except (ValueError, TypeError):
            pass
        if plain:
            # Hand-written JSON (a technician's config.json) has no CRC line.
            try:
                return json.loads(text), True
            except ValueError:
                pass
        return None, True

    def read(self, name, default=None, plain=False):
        f = self.pending.pop(name, None)
        if f is not None:
            f()  # a record still being written in slices: its latest state first
        return self.read_file(self.path(name), default, plain)

    def read_file(self, p, default=None, plain=False):
        name = p
        obj, seen = self._load(p, plain)
        if obj is None:
            tmp, tseen = self._load(p + ".tmp")
            if tmp is not None:
                return tmp
            if seen and self.log:
                self.log.error("store", "record %s is corrupt; using default" % name)
            return default
        return obj

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

# The control channel: newline-delimited JSON over TCP on 127.0.0.1.
# One request object per line, one reply per line; replies carry "ok" and,
# when false, "error". A malformed line gets an error reply and nothing else
# happens. Lines are read in bounded chunks so a client cannot make the
# firmware buffer without end. Whatever a line holds (binary, deep nesting,
# an id that cannot be echoed), it gets exactly one reply line: nesting is
# bounded before parsing, and a reply that cannot be encoded is replaced by
# an error reply that can.
import asyncio
import json
from firmware.bench import BenchError
from firmware.core.store import depth_ok
from firmware.core.errtext import errtext  # an exception in words for a log line

MAX_LINE = 4096
MAX_DEPTH = 8  # the deepest real request is 2 levels (an object holding a list)


class _LineReader:
    # MicroPython has no async generators: readline() returns a complete line
    # (bytes, possibly empty), TOO_LONG once for a line over MAX_LINE, or None
    # at end of stream.
    TOO_LONG = object()

    def __init__(self, reader):
        self.reader = reader
        self.buf = b""
        self.skipping = False

    async def readline(self):
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, self.buf = self.buf[:nl], self.buf[nl + 1:]
                if self.skipping:
                    self.skipping = False
                    continue
                if len(line) > MAX_LINE:
                    return self.TOO_LONG
                return line
            if len(self.buf) > MAX_LINE:
                self.buf = b""
                if not self.skipping:
                    self.skipping = True
                    return self.TOO_LONG
            chunk = await self.reader.read(512)
            if not chunk:
                return None
            self.buf += chunk


class ControlChannel:
    def __init__(self, board, port):
        self.board = board
        self.port = port
        self.server = None
        self.requests = 0
        self.errors = 0

    async def start(self):
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)

    async def _client(self, reader, writer):
        try:
            lines = _LineReader(reader)
            while True:
                line = await lines.readline()
                if line is None:
                    break
                reply = await self.handle(None if line is _LineReader.TOO_LONG else line)
                writer.write(self.encode(reply))
                await writer.drain()
        except OSError:
            pass
        finally:
            try:
                writer.close()
                await writer.wait_closed()
            except OSError:
                pass

    def encode(self, reply):
        # The reply line; never raises. A reply json cannot write (an echoed
        # id or a value it cannot encode) becomes an error reply it can.
        try:
            return json.dumps(reply).encode() + b"\n"
        except Exception as e:  # RecursionError, TypeError, MemoryError, ...
            self.errors += 1
            r = {"ok": False, "error": "reply could not be encoded: %s" % type(e).__name__}
            rid = reply.get("id") if isinstance(reply, dict) else None
            if rid is None or isinstance(rid, (str, int, float, bool)):
                try:
                    return json.dumps(dict(r, id=rid) if rid is not None else r).encode() + b"\n"
                except Exception:
                    pass
            return json.dumps(r).encode() + b"\n"

    async def handle(self, line):
        self.requests += 1
        rid = None
        try:
            if line is None:
                raise BenchError("line longer than %d bytes" % MAX_LINE)
            line = line.strip()
            if not line:
                raise BenchError("empty line")
            if not depth_ok(line, MAX_DEPTH):
                raise BenchError("nested deeper than %d levels" % MAX_DEPTH)
            try:
                req = json.loads(line)
            except ValueError:
                raise BenchError("not JSON")
            if not isinstance(req, dict):
                raise BenchError("request must be a JSON object")
            op = req.pop("op", None)
            rid = req.pop("id", None)
            if not isinstance(op, str):
                raise BenchError("request needs an \"op\" string")
            if op == "advance":
                r = await self.board.advance(req)
            elif op == "cut_after":
                r = self.board.cut_after(req)
            else:
                r = self.board.bench.call(op, req)
            reply = {"ok": True}
            if r:
                reply.update(r)
        except BenchError as e:
            self.errors += 1
            reply = {"ok": False, "error": str(e)}
        except Exception as e:  # never let a request take the firmware down
            self.errors += 1
            self.board.log.error("control", "request failed: %s" % errtext(e))
            reply = {"ok": False, "error": "internal error: %s" % errtext(e)}
        if rid is not None:
            reply["id"] = rid
        return reply

# OCPP-J RPC: CALL [2, id, action, payload], CALLRESULT [3, id, payload],
# CALLERROR [4, id, code, description, details] over a message transport
# (firmware/net/ws.py's WebSocket: send(str), recv() -> str).
#
# Toward the CSMS at most one CALL is outstanding (a lock); its answer is
# matched by id and validated against the 1.6 schema. What the CSMS sends is
# validated strictly before a handler sees it, and every CALL gets exactly
# one answer: a handler's result, or the CallError that says what was wrong.
# Frames that are not JSON, or not an OCPP array at all, cannot be answered
# (there is no id to answer): they are dropped and counted, like the
# python-ocpp CSMS does; `on_invalid` hears of them (security event
# InvalidMessages when they repeat).
#
# A CALL whose unique id repeats one we answered recently (OCPP-J: ids are
# never reused) is not executed again: it gets a SecurityError CallError and
# `on_replay` hears of it (security event AttemptedReplayAttacks).
import asyncio
import json
import os
import time
from binascii import hexlify
from firmware.ocpp import validate
from firmware.core.sched import Tasks
from firmware.ocpp.schema16 import ACTIONS, REQUESTS, RESPONSES
from firmware.core.errtext import errtext  # an exception in words for a log line

CALL = 2
RESULT = 3
ERROR = 4
MAX_ID = 36
MAX_BACKLOG = 4
REPLAY_KEEP = 32  # unique ids of CSMS CALLs we answered, remembered ...
REPLAY_MS = 900000  # ... for this long: a CALL that repeats one is a replay


class CallError(Exception):
    def __init__(self, code, description="", details=None):
        super().__init__(code, description)
        self.code = code
        self.description = description
        self.details = details if isinstance(details, dict) else {}


class RpcTimeout(Exception):
    pass


class NotConnected(Exception):
    pass


class Rpc:
    def __init__(self, clock, log, timeout_ms=30000):
        self.clock = clock
        self.log = log
        self.timeout_ms = timeout_ms
        self.handlers = {}  # action -> async fn(payload) -> result dict
        self.ws = None
        self.on_invalid = None  # fn(count, why), for the security log
        self.on_message = None  # fn(direction, text), for traces and tests
        self.on_detach = None  # fn(), when the link is gone
        self.on_replay = None  # fn(uid, action): a CALL reused an answered id
        self.on_memory = None  # fn(where): a handler ran out of memory
        self.on_bug = None  # fn(what): a handler raised (counted as an internal error)
        self.replays = 0
        self._answered = []  # [(uid, ticks)] of CSMS CALLs answered, oldest first
        self.quiet = False  # boot Rejected: the CSMS's CALLs get no answer
        self.invalid = 0  # frames we could not answer
        self.errors_sent = 0
        self.calls = 0
        self._lock = asyncio.Lock()
        self._pending = None  # id of our outstanding CALL
        self._reply = None
        self._reply_ev = asyncio.Event()
        self._prefix = hexlify(os.urandom(4)).decode()
        self._calls = []  # CALLs from the CSMS waiting for their answer, oldest first
        self._room = asyncio.Event()
        self._worker = None
        self._seq = 0
        self.tasks = Tasks(log)  # the client puts the station's group here

    # --- the connection ------------------------------------------------------
    def attach(self, ws):
        self.ws = ws

    def detach(self):
        self.ws = None
        if self.on_detach:
            self.on_detach()
        if self._pending is not None:
            self._reply = NotConnected("connection lost")
            self._reply_ev.set()

    async def _send(self, frame):
        text = json.dumps(frame)
        if self.on_message:
            self.on_message("out", text)
        ws = self.ws
        if ws is None:
            raise NotConnected("not connected")
        await ws.send(text)

    # --- our CALLs -----------------------------------------------------------
    def _new_id(self):
        self._seq += 1
        return "%s-%d" % (self._prefix, self._seq)

    async def call(self, action, payload, timeout_ms=None):
        # The CSMS's result payload, or raises CallError / RpcTimeout /
        # NotConnected. A result that breaks the schema raises CallError too.
        async with self._lock:
            if self.ws is None:
                raise NotConnected("not connected")
            uid = self._new_id()
            self._pending = uid
            self._reply = None
            self._reply_ev.clear()
            self.calls += 1
            self.clock.hold()
            timer = self.tasks.spawn(self._timeout(uid, timeout_ms or self.timeout_ms), "rpc timer")
            try:
                await self._send([CALL, uid, action, payload])
                await self._reply_ev.wait()
            finally:
                self.clock.release()
                timer.cancel()
                self._pending = None
            r = self._reply
            if isinstance(r, Exception):
                raise r
            kind, body = r
            if kind == ERROR:
                raise CallError(*body)
            node = RESPONSES.get(action)
            if node is not None:
                e = validate.payload(node, body)
                if e:
                    self.log.warn("ocpp", "%s result rejected: %s" % (action, e[1]))
                    raise CallError(e[0], "CSMS result: " + e[1])
            return body

    async def _timeout(self, uid, ms):
        await self.clock.sleep_ms(ms)
        if self._pending == uid:
            self._reply = RpcTimeout("no answer to %s within %d ms" % (uid, ms))
            self._reply_ev.set()

    # --- what the CSMS sends -------------------------------------------------
    async def run(self, ws):
        # Read frames until the connection ends (the caller reconnects).
        self.attach(ws)
        try:
            while True:
                text = await ws.recv()
                await self.handle(text)
        except Exception as e:  # the link ended (WsClosed, OSError): the client reconnects
            self.log.info("ocpp", "reader ended: %s" % errtext(e))
        finally:
            self.detach()

    def _drop(self, why):
        self.invalid += 1
        self.log.warn("ocpp", "dropped frame: %s" % why)
        if self.on_invalid:
            self.on_invalid(self.invalid, why)

    async def handle(self, text):
        if self.on_message:
            self.on_message("in", text if isinstance(text, str) else repr(text))
        if not isinstance(text, str):
            return self._drop("binary frame")
        try:
            msg = json.loads(text)
        except ValueError:
            return self._drop("not JSON")
        if not isinstance(msg, list) or len(msg) < 3 or msg[0] not in (CALL, RESULT, ERROR) \
                or isinstance(msg[0], bool):
            return self._drop("not an OCPP-J message")
        uid = msg[1]
        if not isinstance(uid, str) or not 0 < len(uid) <= MAX_ID:
            return self._drop("bad unique id")
        kind = msg[0]
        if kind == CALL:
            if self.quiet:
                self.log.warn("ocpp", "boot rejected: CALL %s not answered" % uid)
                return
            # One worker answers CALLs in arrival order, so the reader goes on
            # reading (our own CALL's answer may be next) while a handler
            # waits; the backlog is bounded, so a CSMS that floods us is
            # slowed to our pace instead of filling the heap.
            while len(self._calls) >= MAX_BACKLOG:
                self._room.clear()
                await self._room.wait()
            self._calls.append((uid, msg))
            if self._worker is None or self._worker.done():
                self._worker = self.tasks.spawn(self._answer_calls(), "rpc answers")
            return
        if uid != self._pending:
            self.log.warn("ocpp", "answer to unknown id %s ignored" % uid)
            return
        if kind == RESULT:
            if len(msg) != 3:
                self._reply = CallError("FormationViolation", "CALLRESULT must have 3 elements")
            else:
                self._reply = (RESULT, msg[2])
        else:
            code = msg[2] if isinstance(msg[2], str) else "GenericError"
            desc = msg[3] if len(msg) > 3 and isinstance(msg[3], str) else ""
            self._reply = (ERROR, (code, desc, msg[4] if len(msg) > 4 else None))
        self._reply_ev.set()

    async def _answer_calls(self):
        while self._calls:
            uid, msg = self._calls[0]
            try:
                await self._on_call(uid, msg)
                self._remember(uid)  # answered: a resend after a lost answer is no replay
            except Exception as e:  # the link went while answering
                self.log.info("ocpp", "answer to %s not sent: %s" % (uid, errtext(e)))
            self._calls.pop(0)
            self._room.set()

    def _remember(self, uid):
        now = self.clock.ticks_ms()
        a = self._answered
        while a and (len(a) >= REPLAY_KEEP or self.clock.ticks_diff(now, a[0][1]) > REPLAY_MS):
            a.pop(0)
        a.append((uid, now))

    def _replayed(self, uid):
        now = self.clock.ticks_ms()
        for u, t in self._answered:
            if u == uid and self.clock.ticks_diff(now, t) <= REPLAY_MS:
                return True
        return False

    async def _error(self, uid, code, desc):
        self.errors_sent += 1
        self.log.warn("ocpp", "CallError %s to %s: %s" % (code, uid, desc))
        await self._send([ERROR, uid, code, desc, {}])

    async def _on_call(self, uid, msg):
        if len(msg) != 4 or not isinstance(msg[2], str):
            return await self._error(uid, "FormationViolation", "CALL must be [2, id, action, payload]")
        action, payload = msg[2], msg[3]
        if self._replayed(uid):
            self.replays += 1
            if self.on_replay:
                self.on_replay(uid, action[:40])
            return await self._error(uid, "SecurityError", "unique id %s was already used" % uid)
        if action not in ACTIONS:
            return await self._error(uid, "NotImplemented", "unknown action %s" % action[:40])
        fn = self.handlers.get(action)
        node = REQUESTS.get(action)
        if fn is None or node is None:
            return await self._error(uid, "NotSupported", "%s is not supported" % action)
        e = validate.payload(node, payload)
        if e:
            return await self._error(uid, e[0], e[1])
        try:
            result = await fn(payload)
        except CallError as ce:
            return await self._error(uid, ce.code, ce.description)
        except MemoryError:
            if self.on_memory:
                self.on_memory(action)
            return await self._error(uid, "InternalError", "%s: out of memory" % action)
        except Exception as ex:  # a handler bug answers InternalError, never a crash
            if self.on_bug:
                self.on_bug("%s handler raised %s" % (action, errtext(ex)))
            else:
                self.log.error("ocpp", "%s handler failed: %s" % (action, errtext(ex)))
            return await self._error(uid, "InternalError", "%s failed" % action)
        await self._send([RESULT, uid, result])

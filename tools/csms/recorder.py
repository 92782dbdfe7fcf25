"""Every frame in both directions and every connection event, in order.

The recorder is shared by the asyncio loop that runs the CSMS (which appends)
and by test threads (which query and wait), so everything here is guarded by
one lock. Waiters: a threading.Condition for blocking callers, and asyncio
futures (resolved on their own loop) for coroutines.
"""

import asyncio
import datetime
import json
import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("tools.csms.msg")

# Frame types (OCPP-J message type ids 2, 3, 4) and what is not a valid frame.
CALL, CALLRESULT, CALLERROR = "CALL", "CALLRESULT", "CALLERROR"
INVALID = "INVALID"  # received or sent text that is not an OCPP-J frame
FRAME_TYPES = (CALL, CALLRESULT, CALLERROR, INVALID)
TYPE_IDS = {2: CALL, 3: CALLRESULT, 4: CALLERROR}

# Connection events, kept in the same sequence as frames.
CONNECT, DISCONNECT, REFUSED = "CONNECT", "DISCONNECT", "REFUSED"
OFFLINE, ONLINE = "OFFLINE", "ONLINE"  # the CSMS itself went away / came back (cp "*")

IN, OUT = "in", "out"  # in: charge point -> CSMS, out: CSMS -> charge point


@dataclass
class Message:
    seq: int
    time: float  # wall clock, time.time()
    cp: str
    direction: str | None  # IN / OUT; None for connection events
    type: str  # CALL / CALLRESULT / CALLERROR / INVALID, or CONNECT / DISCONNECT / REFUSED
    action: str | None = None
    unique_id: str | None = None
    payload: object = None  # CALL/CALLRESULT payload; event details for events
    error_code: str | None = None
    error_description: str | None = None
    error_details: object = None
    raw: str | None = None  # the frame as it went over the wire
    raw_send: bool = False  # sent with send_raw (not produced by the CSMS itself)

    @property
    def is_event(self):
        return self.type not in FRAME_TYPES

    @property
    def iso(self):
        return datetime.datetime.fromtimestamp(self.time, datetime.timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")

    def to_dict(self):
        d = {"seq": self.seq, "time": self.time, "iso": self.iso, "cp": self.cp,
             "direction": self.direction, "type": self.type, "action": self.action,
             "unique_id": self.unique_id, "payload": self.payload}
        if self.type == CALLERROR:
            d["error"] = {"code": self.error_code, "description": self.error_description,
                          "details": self.error_details}
        if self.type == INVALID or self.raw_send:
            d["raw"] = self.raw
        return d

    def line(self, max_payload=400):
        """One readable line: time (ISO-8601 UTC, ms, as the firmware's log), cp,
        direction, action, compact payload."""
        t = self.iso
        if self.is_event:
            return "%s %s ** %s %s" % (t, self.cp, self.type, _compact(self.payload, max_payload))
        arrow = "<-" if self.direction == IN else "->"
        raw = " (raw)" if self.raw_send else ""
        if self.type == INVALID:
            return "%s %s %s INVALID%s %s" % (t, self.cp, arrow, raw, _clip(repr(self.raw), max_payload))
        name = self.action or "?"
        if self.type == CALL:
            text = "%s.req %s" % (name, _compact(self.payload, max_payload))
        elif self.type == CALLRESULT:
            text = "%s.conf %s" % (name, _compact(self.payload, max_payload))
        else:
            text = "%s.error %s %s %s" % (name, self.error_code, json.dumps(self.error_description),
                                          _compact(self.error_details, max_payload))
        return "%s %s %s %s%s" % (t, self.cp, arrow, text, raw)


def _clip(s, n):
    return s if n is None or len(s) <= n else s[: max(n - 3, 0)] + "..."


def _compact(obj, n):
    try:
        s = json.dumps(obj, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        s = repr(obj)
    return _clip(s, n)


def parse_frame(raw):
    """Split an OCPP-J frame as far as it goes. Never raises.

    Returns (type, unique_id, action, payload, error_code, error_description,
    error_details); type INVALID when it is not a well-formed frame."""
    try:
        msg = json.loads(raw)
    except (ValueError, TypeError, UnicodeDecodeError):
        return INVALID, None, None, None, None, None, None
    if not isinstance(msg, list) or not msg or type(msg[0]) is not int or msg[0] not in TYPE_IDS:
        return INVALID, None, None, msg, None, None, None
    kind = TYPE_IDS[msg[0]]
    uid = msg[1] if len(msg) > 1 and isinstance(msg[1], str) else None
    if kind == CALL and len(msg) == 4 and isinstance(msg[2], str):
        return CALL, uid, msg[2], msg[3], None, None, None
    if kind == CALLRESULT and len(msg) == 3:
        return CALLRESULT, uid, None, msg[2], None, None, None
    if kind == CALLERROR and len(msg) == 5:
        return CALLERROR, uid, None, None, msg[2], msg[3], msg[4]
    return INVALID, uid, None, msg, None, None, None


def make_filter(cp=None, action=None, direction=None, type=None, unique_id=None, after=None,
                predicate=None, events=False):
    return dict(cp=cp, action=action, direction=direction, type=type, unique_id=unique_id,
                after=after, predicate=predicate, events=events)


def _match(m, cp, action, direction, type, unique_id, after, predicate, events):
    if events != m.is_event:
        return False
    if after is not None and m.seq <= after:
        return False
    if cp is not None and m.cp != cp:
        return False
    if action is not None and m.action != action:
        return False
    if direction is not None and m.direction != direction:
        return False
    if type is not None and m.type != type:
        return False
    if unique_id is not None and m.unique_id != unique_id:
        return False
    if predicate is not None:
        try:
            return bool(predicate(m))
        except Exception:
            return False
    return True


class Recorder:
    def __init__(self, max_payload_log=400, keep=None):
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._items = []
        self._seq = 0
        self._async_waiters = []  # (filter kwargs, future)
        self._listeners = []
        self.max_payload_log = max_payload_log
        self.keep = keep  # drop the oldest tenth when more items than this

    # ---- appending (CSMS loop) ----

    def add(self, cp, direction, type, **kw):
        with self._lock:
            self._seq += 1
            m = Message(self._seq, time.time(), cp, direction, type, **kw)
            self._items.append(m)
            if self.keep and len(self._items) > self.keep:
                del self._items[: max(len(self._items) - self.keep, self.keep // 10)]
            self._cond.notify_all()
            waiters, self._async_waiters = self._async_waiters, []
            for flt, fut in waiters:
                if fut.done():
                    continue
                if _match(m, **flt):
                    try:
                        fut.get_loop().call_soon_threadsafe(_resolve, fut, m)
                    except RuntimeError:  # that loop is closed
                        pass
                else:
                    self._async_waiters.append((flt, fut))
            listeners = list(self._listeners)
        if log.isEnabledFor(logging.INFO):
            log.info("%s", m.line(self.max_payload_log))
        for fn in listeners:
            try:
                fn(m)
            except Exception:
                log.exception("message listener failed")
        return m

    def frame(self, cp, direction, raw, action=None, raw_send=False):
        """Record one websocket frame; `action` names the CALL a result answers."""
        text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw
        kind, uid, act, payload, code, desc, details = parse_frame(raw)
        return self.add(cp, direction, kind, action=act or action, unique_id=uid, payload=payload,
                        error_code=code, error_description=desc, error_details=details,
                        raw=text, raw_send=raw_send)

    def event(self, cp, type, **details):
        return self.add(cp, None, type, payload=details)

    def subscribe(self, fn):
        """Call fn(message) for each new frame or event (on the CSMS loop)."""
        with self._lock:
            self._listeners.append(fn)

    def unsubscribe(self, fn):
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    # ---- queries (any thread) ----

    def mark(self):
        """The last sequence number; pass it as `after=` to wait for newer items."""
        with self._lock:
            return self._seq

    def messages(self, cp=None, action=None, direction=None, type=None, unique_id=None,
                 after=None, predicate=None):
        """Recorded frames matching every given filter, oldest first."""
        flt = make_filter(cp, action, direction, type, unique_id, after, predicate)
        with self._lock:
            return [m for m in self._items if _match(m, **flt)]

    def events(self, cp=None, type=None, after=None):
        """Connection events (CONNECT, DISCONNECT, REFUSED), oldest first."""
        flt = make_filter(cp=cp, type=type, after=after, events=True)
        with self._lock:
            return [m for m in self._items if _match(m, **flt)]

    def clear(self):
        with self._lock:
            self._items.clear()

    def wait_sync(self, timeout, **kw):
        """Block until a matching item exists (recorded earlier, or later); return it.
        Filters as in messages(); events=True waits for a connection event."""
        flt = make_filter(**kw)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self._items:
                    if _match(m, **flt):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no message matching %s within %ss" % (_describe(flt), timeout))
                self._cond.wait(left)

    async def wait_async(self, timeout, **kw):
        flt = make_filter(**kw)
        fut = asyncio.get_running_loop().create_future()
        with self._lock:
            for m in self._items:
                if _match(m, **flt):
                    return m
            self._async_waiters.append((flt, fut))
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise TimeoutError("no message matching %s within %ss" % (_describe(flt), timeout)) from None


def _resolve(fut, m):
    if not fut.done():
        fut.set_result(m)


def _describe(flt):
    return ", ".join("%s=%r" % (k, v) for k, v in flt.items()
                     if v is not None and k not in ("events",)) or "anything"

"""One connected charge point, seen from the CSMS: an `ocpp.v16.ChargePoint`.

Incoming CALLs go through the `ocpp` package's routing (`@on` handlers, JSON
schema validation of the request and of our answer, CallErrors for bad
payloads and unknown actions). Each CALL is handled in its own task, so an
answer that is delayed or never sent does not hold up the connection;
CALLRESULT/CALLERROR frames are matched to our own CALLs by unique id.
Every frame in and out is recorded. On top of the package's schema check,
date-time fields are checked too (strict_datetime, on by default): the
package's validator skips "format".
"""

import asyncio
import contextvars
import copy
import dataclasses
import json
import logging
import uuid

from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict, \
    snake_to_camel_case
from ocpp.messages import Call, CallResult, validate_payload
from ocpp.routing import on
from ocpp.v16 import ChargePoint as V16ChargePoint
from ocpp.v16 import call as v16_call
from ocpp.v16 import call_result as v16_call_result
from ocpp.v16.enums import Action

from .backoffice import CSMS_ACTIONS, NoAnswer
from .recorder import CALL, CALLERROR, CALLRESULT, IN, OUT, parse_frame
from .strict import check_datetimes

log = logging.getLogger("tools.csms")
ocpp_log = logging.getLogger("tools.csms.ocpp")

_current_call = contextvars.ContextVar("current_call")

class CallErrorReceived(Exception):
    """The charge point answered a CSMS CALL with a CALLERROR."""

    def __init__(self, code, description, details, message=None):
        super().__init__("%s: %s %s" % (code, description, details))
        self.code = code
        self.description = description
        self.details = details
        self.message = message  # the recorded Message


class NotConnected(LookupError):
    """No charge point with this id is connected."""


def build_call(action, payload):
    """(action, camelCase payload dict) from a dict or an ocpp.v16.call dataclass.

    A dict's keys are checked against the fields of the ocpp.v16.call class of
    that action, and it is sent as given; the JSON schema check comes later."""
    dataclass = dataclasses.is_dataclass(payload) and not isinstance(payload, type)
    if dataclass:
        action = action or type(payload).__name__
    if action not in CSMS_ACTIONS:
        raise ValueError("%r is not a CSMS-initiated OCPP 1.6 action (one of %s)"
                         % (action, ", ".join(CSMS_ACTIONS)))
    if dataclass:
        return action, snake_to_camel_case(remove_nones(serialize_as_dict(payload)))
    payload = {} if payload is None else payload
    if not isinstance(payload, dict):
        raise TypeError("payload must be a dict")
    fields = {f.name for f in dataclasses.fields(getattr(v16_call, action))}
    unknown = [k for k in payload if next(iter(camel_to_snake_case({k: 0}))) not in fields]
    if unknown:
        raise ValueError("%s has no field %s" % (action, ", ".join(map(str, unknown))))
    return action, payload


class CsmsChargePoint(V16ChargePoint):
    def __init__(self, cp_id, connection, csms):
        super().__init__(cp_id, connection, response_timeout=csms.call_timeout, logger=ocpp_log)
        self.csms = csms
        self.backoffice = csms.backoffice
        self.recorder = csms.recorder
        self._pending = {}  # unique id of our CALL -> (action, future)
        self._incoming = {}  # unique id of their CALL -> action, until answered
        self._tasks = set()
        self._call_lock = asyncio.Lock()

    # ---- receiving ----

    async def start(self):
        """Receive until the connection closes; never raises for a bad frame."""
        try:
            async for raw in self._connection:
                try:
                    self._on_frame(raw)
                except Exception:
                    log.exception("%s: failed to handle frame %r", self.id, raw[:200])
        finally:
            self._shutdown()

    def _on_frame(self, raw):
        kind, uid, action, payload, code, desc, details = parse_frame(raw)
        if kind in (CALLRESULT, CALLERROR):
            pending = self._pending.get(uid)
            msg = self.recorder.frame(self.id, IN, raw, action=pending[0] if pending else None)
            if pending and not pending[1].done():
                pending[1].set_result(msg)
            return
        self.recorder.frame(self.id, IN, raw)
        if kind == CALL and isinstance(uid, str):
            self._incoming[uid] = action
        # CALLs (and whatever else the ocpp package makes of a frame) are
        # routed in their own task: a delayed answer must not block the link.
        task = asyncio.get_running_loop().create_task(self._route(raw))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _route(self, raw):
        try:
            await self.route_message(raw)
        except (asyncio.CancelledError, NoAnswer):
            pass
        except Exception as e:  # e.g. the connection closed while answering
            log.debug("%s: routing %r ended with %r", self.id, raw[:200], e)

    async def _handle_call(self, msg):
        _current_call.set(msg)
        try:
            await super()._handle_call(msg)
        finally:
            if isinstance(msg.unique_id, str):
                self._incoming.pop(msg.unique_id, None)

    async def _answer(self, action):
        """The @on handlers' common body: ask the back office, build the result."""
        msg = _current_call.get()
        if self.csms.strict_datetime:
            check_datetimes(action, msg.payload)
        try:
            payload = await self.backoffice.answer(self.id, action, copy.deepcopy(msg.payload))
        except NoAnswer as e:  # silence, or a frame of the test's making
            frame = e.frame(msg.unique_id)
            if frame is not None:
                await self.send_raw(frame)
            raise
        return getattr(v16_call_result, action)(**camel_to_snake_case(payload))

    def _shutdown(self):
        for task in list(self._tasks):
            task.cancel()
        for action, fut in self._pending.values():
            if not fut.done():
                fut.set_exception(NotConnected("%s disconnected before answering %s"
                                               % (self.id, action)))

    # ---- sending ----

    async def _send(self, message):
        uid = None
        try:
            uid = json.loads(message)[1]
        except Exception:
            pass
        action = self._incoming.get(uid) if isinstance(uid, str) else None
        self.recorder.frame(self.id, OUT, message, action=action)
        await self._connection.send(message)

    async def send_raw(self, frames):
        """Send text (or bytes: a binary frame) exactly as given; record it."""
        if isinstance(frames, (str, bytes, bytearray)):
            frames = [frames]
        for raw in frames:
            kind, uid, action, *_ = parse_frame(raw)
            if kind == CALL and isinstance(uid, str):
                fut = asyncio.get_running_loop().create_future()
                self._pending[uid] = (action, fut)
                fut.add_done_callback(lambda f, u=uid: self._forget(u, f))
                fut.get_loop().call_later(self.csms.call_timeout, self._forget, uid, fut)
            self.recorder.frame(self.id, OUT, raw, action=self._incoming.get(uid), raw_send=True)
            await self._connection.send(raw)

    def _forget(self, uid, fut):
        if self._pending.get(uid, (None, None))[1] is fut:
            del self._pending[uid]
        if not fut.done():
            fut.cancel()
        elif not fut.cancelled():
            fut.exception()  # mark retrieved

    async def call_action(self, action, payload=None, timeout=None, validate=True):
        """Send a CALL, wait for its answer: the result payload dict.

        Raises CallErrorReceived for a CALLERROR, TimeoutError without an
        answer in time, NotConnected if the link drops, and an ocpp
        exception when validate is on and the payload or the answer does not
        match the 1.6 schema."""
        action, payload = build_call(action, payload)
        timeout = self.csms.call_timeout if timeout is None else timeout
        uid = str(uuid.uuid4())
        frame = Call(uid, action, payload).to_json()
        if validate:  # on a copy: the validator may turn floats into Decimals
            await validate_payload(Call(uid, action, copy.deepcopy(payload)), "1.6")
            if self.csms.strict_datetime:
                check_datetimes(action, payload)
        async with self._call_lock:  # one outstanding CALL per direction
            fut = asyncio.get_running_loop().create_future()
            self._pending[uid] = (action, fut)
            try:
                await self._send(frame)
                msg = await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise TimeoutError("%s: no answer to %s within %ss" % (self.id, action, timeout)) \
                    from None
            finally:
                self._pending.pop(uid, None)
        if msg.type == CALLERROR:
            raise CallErrorReceived(msg.error_code, msg.error_description, msg.error_details, msg)
        if validate:
            await validate_payload(CallResult(uid, copy.deepcopy(msg.payload), action), "1.6")
            if self.csms.strict_datetime:
                check_datetimes(action, msg.payload, response=True)
        return msg.payload

    # ---- the charge point initiated actions ----

    @on(Action.authorize)
    async def on_authorize(self, **kw):
        return await self._answer("Authorize")

    @on(Action.boot_notification)
    async def on_boot_notification(self, **kw):
        return await self._answer("BootNotification")

    @on(Action.data_transfer)
    async def on_data_transfer(self, **kw):
        return await self._answer("DataTransfer")

    @on(Action.diagnostics_status_notification)
    async def on_diagnostics_status_notification(self, **kw):
        return await self._answer("DiagnosticsStatusNotification")

    @on(Action.firmware_status_notification)
    async def on_firmware_status_notification(self, **kw):
        return await self._answer("FirmwareStatusNotification")

    @on(Action.heartbeat)
    async def on_heartbeat(self, **kw):
        return await self._answer("Heartbeat")

    @on(Action.meter_values)
    async def on_meter_values(self, **kw):
        return await self._answer("MeterValues")

    @on(Action.start_transaction)
    async def on_start_transaction(self, **kw):
        return await self._answer("StartTransaction")

    @on(Action.status_notification)
    async def on_status_notification(self, **kw):
        return await self._answer("StatusNotification")

    @on(Action.stop_transaction)
    async def on_stop_transaction(self, **kw):
        return await self._answer("StopTransaction")

    @on(Action.log_status_notification)
    async def on_log_status_notification(self, **kw):
        return await self._answer("LogStatusNotification")

    @on(Action.security_event_notification)
    async def on_security_event_notification(self, **kw):
        return await self._answer("SecurityEventNotification")

    @on(Action.sign_certificate)
    async def on_sign_certificate(self, **kw):
        return await self._answer("SignCertificate")

    @on(Action.signed_firmware_status_notification)
    async def on_signed_firmware_status_notification(self, **kw):
        return await self._answer("SignedFirmwareStatusNotification")

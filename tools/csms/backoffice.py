"""What the CSMS answers to a charge point, and what it knows about them.

`BackOffice` holds the configurable behaviour (boot status and intervals, the
idTag lists, DataTransfer and SignCertificate answers), the per-action
overrides a test installs, and the state built from what charge points
report (boot, connector statuses, transactions). Answers are plain camelCase
payload dicts; the OCPP layer (chargepoint.py) validates and sends them.
"""

import asyncio
import datetime
import inspect
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from ocpp.exceptions import OCPPError

log = logging.getLogger("tools.csms")

# Charge point -> CSMS actions of OCPP 1.6J, with the security extension.
CP_ACTIONS = (
    "Authorize", "BootNotification", "DataTransfer", "DiagnosticsStatusNotification",
    "FirmwareStatusNotification", "Heartbeat", "MeterValues", "StartTransaction",
    "StatusNotification", "StopTransaction",
    "LogStatusNotification", "SecurityEventNotification", "SignCertificate",
    "SignedFirmwareStatusNotification",
)

# CSMS -> charge point actions (core and every feature profile, security extension).
CSMS_ACTIONS = (
    "CancelReservation", "ChangeAvailability", "ChangeConfiguration", "ClearCache",
    "ClearChargingProfile", "DataTransfer", "GetCompositeSchedule", "GetConfiguration",
    "GetDiagnostics", "GetLocalListVersion", "RemoteStartTransaction", "RemoteStopTransaction",
    "ReserveNow", "Reset", "SendLocalList", "SetChargingProfile", "TriggerMessage",
    "UnlockConnector", "UpdateFirmware",
    "CertificateSigned", "DeleteCertificate", "ExtendedTriggerMessage",
    "GetInstalledCertificateIds", "GetLog", "InstallCertificate", "SignedUpdateFirmware",
)

ID_TAG_STATUSES = ("Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx")


def now_iso():
    """UTC now as OCPP wants it: 2025-01-02T03:04:05.678Z."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


class Reply:
    """A scripted answer to one charge point CALL.

    Reply({"status": "Rejected", "interval": 5})  answer this payload
    Reply(delay=3)                                 the normal answer, 3 s late
    Reply(error="InternalError", description="x")  a CALLERROR with this code
    Reply(never=True) / NO_REPLY                   no answer at all
    Reply({"interval": "x"}, validate=False)       a CALLRESULT with this payload,
                                                   not checked against the schema
    Reply(raw='[3,"nope",{}]')                     this frame instead of an answer;
    Reply(raw=lambda uid: ...)                     or built from the CALL's unique id
    """

    def __init__(self, payload=None, *, delay=0.0, error=None, description="", details=None,
                 never=False, validate=True, raw=None):
        self.payload = payload
        self.delay = delay
        self.error = error
        self.description = description
        self.details = details
        self.never = never
        self.validate = validate
        self.raw = raw

    def __repr__(self):
        return "Reply(%r, delay=%r, error=%r, never=%r, validate=%r, raw=%r)" % (
            self.payload, self.delay, self.error, self.never, self.validate, self.raw)


NO_REPLY = Reply(never=True)


def call_error(code, description="", details=None):
    """An OCPPError whose CALLERROR carries exactly this code (any string)."""
    for cls in _ocpp_errors():
        if cls.code == code:
            return cls(description=description, details=details or {})
    cls = type("CallError_" + str(code), (OCPPError,), {"code": code, "default_description": ""})
    return cls(description=description, details=details or {})


def _ocpp_errors():
    todo, seen = [OCPPError], []
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen and hasattr(sub, "code"):
                seen.append(sub)
                todo.append(sub)
    return seen


class NoAnswer(BaseException):
    """Raised inside the answer path: the `ocpp` package must not answer.

    A BaseException so that the package's handler wrapper (which turns any
    Exception into a CALLERROR) lets it through. `frame(unique_id)` gives the
    text to send instead, or None for silence."""

    def __init__(self, raw=None, payload=None):
        super().__init__("no answer")
        self.raw = raw
        self.payload = payload

    def frame(self, unique_id):
        if self.raw is not None:
            return self.raw(unique_id) if callable(self.raw) else self.raw
        if self.payload is not None:
            return json.dumps([3, unique_id, self.payload], separators=(",", ":"))
        return None


@dataclass
class ChargePointInfo:
    id: str
    connected: bool = False
    remote: str | None = None
    path: str | None = None
    subprotocol: str | None = None
    tls_peer: object = None
    connected_since: float | None = None
    connections: int = 0
    last_seen: float | None = None
    boot: dict | None = None
    boot_status: str | None = None
    last_heartbeat: float | None = None
    connectors: dict = field(default_factory=dict)  # connectorId -> last StatusNotification

    def to_dict(self):
        return {"id": self.id, "connected": self.connected, "remote": self.remote,
                "path": self.path, "subprotocol": self.subprotocol, "tls_peer": self.tls_peer,
                "connected_since": self.connected_since, "connections": self.connections,
                "last_seen": self.last_seen, "boot": self.boot, "boot_status": self.boot_status,
                "last_heartbeat": self.last_heartbeat,
                "connectors": {str(k): v for k, v in sorted(self.connectors.items())}}


class BackOffice:
    def __init__(self, boot_status="Accepted", heartbeat_interval=300, boot_retry_interval=10,
                 default_id_tag_status="Accepted", id_tags=None, data_transfer_status="Accepted",
                 sign_certificate_status="Accepted", first_transaction_id=1, counters_path=None):
        # Behaviour; plain attributes, change them any time (from any thread).
        self.boot_status = boot_status  # Accepted / Pending / Rejected
        self.heartbeat_interval = heartbeat_interval  # BootNotification interval when Accepted
        self.boot_retry_interval = boot_retry_interval  # interval when Pending / Rejected
        self.default_id_tag_status = default_id_tag_status  # for idTags not in id_tags
        self.data_transfer_status = data_transfer_status
        self.sign_certificate_status = sign_certificate_status
        self._lock = threading.RLock()
        self._id_tags = {}
        for tag, info in (id_tags or {}).items():
            if isinstance(info, str):
                self.set_id_tag(tag, info)
            else:
                self.set_id_tag(tag, **info)
        self._next_tx = first_transaction_id
        # counters_path: a JSON file that keeps the next transaction id across
        # runs, so ids in one data directory (and its csms.log) never repeat.
        self._counters_path = counters_path
        if counters_path:
            try:
                with open(counters_path) as f:
                    self._next_tx = max(self._next_tx, int(json.load(f)["next_transaction_id"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass
        self._transactions = {}  # id -> dict, in start order
        self._overrides = {}  # action -> [entry], newest first
        self._cps = {}  # id -> ChargePointInfo

    # ---- idTags ----

    def set_id_tag(self, id_tag, status="Accepted", parent_id_tag=None, expiry_date=None):
        """Answer this idTag with this IdTagInfo in Authorize/StartTransaction/StopTransaction."""
        if status not in ID_TAG_STATUSES:
            raise ValueError("idTag status must be one of %s" % (ID_TAG_STATUSES,))
        info = {"status": status}
        if parent_id_tag is not None:
            info["parentIdTag"] = parent_id_tag
        if expiry_date is not None:
            info["expiryDate"] = expiry_date
        with self._lock:
            self._id_tags[id_tag] = info

    def remove_id_tag(self, id_tag):
        with self._lock:
            self._id_tags.pop(id_tag, None)

    def id_tag_info(self, id_tag):
        with self._lock:
            info = self._id_tags.get(id_tag)
            return dict(info) if info else {"status": self.default_id_tag_status}

    # ---- overrides ----

    def override(self, action, response, cp=None, times=None):
        """Answer `action` (from `cp`, or any charge point) with `response`.

        response: a payload dict, a Reply, NO_REPLY, an OCPPError, or a callable
        fn(cp_id, payload) returning any of those (or an awaitable of them);
        None from a callable means "the normal answer". `times`: only the next
        n CALLs, then the override is removed. The newest override wins."""
        entry = {"response": response, "cp": cp, "times": times}
        with self._lock:
            self._overrides.setdefault(action, []).insert(0, entry)
        return entry

    def clear_overrides(self, action=None, cp=None):
        with self._lock:
            for act in [action] if action else list(self._overrides):
                self._overrides[act] = [e for e in self._overrides.get(act, [])
                                        if cp is not None and e["cp"] != cp]

    def _take_override(self, cp_id, action):
        with self._lock:
            entries = self._overrides.get(action, [])
            for e in entries:
                if e["cp"] is None or e["cp"] == cp_id:
                    if e["times"] is not None:
                        e["times"] -= 1
                        if e["times"] <= 0:
                            entries.remove(e)
                    return e
        return None

    # ---- state ----

    def info(self, cp_id):
        with self._lock:
            if cp_id not in self._cps:
                self._cps[cp_id] = ChargePointInfo(cp_id)
            return self._cps[cp_id]

    def chargepoints(self):
        with self._lock:
            return [cp.to_dict() for cp in self._cps.values()]

    def transactions(self, cp=None):
        """Transactions as the CSMS saw them: start data, and `stop` once stopped."""
        with self._lock:
            return [dict(t) for t in self._transactions.values() if cp is None or t["cp"] == cp]

    def transaction(self, transaction_id):
        with self._lock:
            t = self._transactions.get(transaction_id)
            return dict(t) if t else None

    # ---- answering ----

    async def answer(self, cp_id, action, payload):
        """The payload dict to answer a CALL with; raises OCPPError for a
        CALLERROR and NoAnswer for no answer (or a frame sent as is)."""
        payload = payload if isinstance(payload, dict) else {}
        entry = self._take_override(cp_id, action)
        result = None
        if entry is not None:
            result = entry["response"]
            if callable(result) and not isinstance(result, (Reply, dict)):
                result = result(cp_id, payload)
                if inspect.isawaitable(result):
                    result = await result
        if isinstance(result, Reply):
            if result.delay:
                await asyncio.sleep(result.delay)
            if result.never:
                raise NoAnswer()
            if result.raw is not None:
                raise NoAnswer(raw=result.raw)
            if not result.validate:
                payload_out = result.payload
                if payload_out is None:
                    payload_out = self.default_answer(cp_id, action, payload)
                raise NoAnswer(payload=payload_out)
            if result.error:
                raise call_error(result.error, result.description, result.details)
            result = result.payload
        if isinstance(result, OCPPError):
            raise result
        if result is None:
            result = self.default_answer(cp_id, action, payload)
        elif action in ("BootNotification", "Heartbeat") and isinstance(result, dict):
            result = dict(result)
            result.setdefault("currentTime", now_iso())
        self._observe(cp_id, action, payload, result)
        return result

    def _save_counters(self):
        # Called with the lock held; write-new + rename, so a kill never leaves half a file.
        if not self._counters_path:
            return
        tmp = self._counters_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"next_transaction_id": self._next_tx}, f)
        os.replace(tmp, self._counters_path)

    def default_answer(self, cp_id, action, payload):
        if action == "BootNotification":
            status = self.boot_status
            interval = self.heartbeat_interval if status == "Accepted" else self.boot_retry_interval
            return {"status": status, "currentTime": now_iso(), "interval": int(interval)}
        if action == "Heartbeat":
            return {"currentTime": now_iso()}
        if action == "Authorize":
            return {"idTagInfo": self.id_tag_info(payload.get("idTag"))}
        if action == "StartTransaction":
            with self._lock:
                tid = self._next_tx
                self._next_tx += 1
                self._save_counters()
            return {"transactionId": tid, "idTagInfo": self.id_tag_info(payload.get("idTag"))}
        if action == "StopTransaction":
            if "idTag" in payload:
                return {"idTagInfo": self.id_tag_info(payload["idTag"])}
            return {}
        if action == "DataTransfer":
            return {"status": self.data_transfer_status}
        if action == "SignCertificate":
            return {"status": self.sign_certificate_status}
        return {}  # the notifications and MeterValues: empty confirmations

    def _observe(self, cp_id, action, payload, result):
        """Update the state from a CALL and the answer given to it."""
        now = time.time()
        with self._lock:
            cp = self.info(cp_id)
            cp.last_seen = now
            if action == "BootNotification":
                cp.boot = payload
                cp.boot_status = result.get("status")
            elif action == "Heartbeat":
                cp.last_heartbeat = now
            elif action == "StatusNotification":
                cp.connectors[payload.get("connectorId")] = dict(payload, received=now)
            elif action == "StartTransaction" and isinstance(result.get("transactionId"), int):
                tid = result["transactionId"]
                if tid >= self._next_tx:
                    self._next_tx = tid + 1
                    self._save_counters()
                self._transactions[tid] = {
                    "id": tid, "cp": cp_id, "connector_id": payload.get("connectorId"),
                    "id_tag": payload.get("idTag"), "meter_start": payload.get("meterStart"),
                    "timestamp": payload.get("timestamp"),
                    "reservation_id": payload.get("reservationId"),
                    "status": result.get("idTagInfo", {}).get("status"), "stop": None}
            elif action == "StopTransaction":
                tid = payload.get("transactionId")
                t = self._transactions.get(tid)
                if t is None:  # a stop for a transaction this CSMS never started
                    t = self._transactions[tid] = {"id": tid, "cp": cp_id, "connector_id": None,
                                                   "id_tag": None, "meter_start": None,
                                                   "timestamp": None, "reservation_id": None,
                                                   "status": None, "stop": None}
                t["stop"] = {"meter_stop": payload.get("meterStop"),
                             "timestamp": payload.get("timestamp"),
                             "reason": payload.get("reason"), "id_tag": payload.get("idTag"),
                             "transaction_data": payload.get("transactionData")}

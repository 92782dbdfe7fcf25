# OCPP 1.6 security extensions: security events, the security log (audit
# trail), GetLog / LogStatusNotification and ExtendedTriggerMessage.
#
#   cl.security.event(kind, tech_info=None, who="charger")
#       a SecurityEventNotification of `kind` (docs/reference.md lists them), always
#       written to the security log first.
#   cl.security.audit(who, what)
#       a security-log line only (who: "CSMS", "bench", "usb", "charger").
#
# Delivery. Critical kinds go into a persistent queue of their own (a TxQueue
# record, "ocpp_secq.json"), so neither an offline period nor a power cut
# loses them; not the transaction queue, which goes out before the statuses
# after a boot, where OCPP wants the statuses first (TC_001). Non-critical
# kinds wait in a small RAM list (RAM_MAX, oldest dropped first): raised
# while offline they go out after the next accepted BootNotification, but a
# power cut loses them; their security-log line stays, so GetLog still tells
# the CSMS. One sender task drains both once the charger is registered and
# has reported its connectors' statuses, critical ones first.
# LogStatusNotification travels in the persistent queue too.
#
# The same task watches free heap (MemoryExhaustion) and the enclosure's
# tamper switch (TamperDetectionActivated), off the control loop.
#
# Boot kind. A marker record says whether the previous run ended in an
# orderly reboot (Reset, firmware update, bench): the firmware's reboots go
# through station.reboot, which we wrap to set it, and the bench's reboot()
# sets it itself. Without it the last run ended by a power cut (or a crash):
# StartupOfTheDevice.
import gc
import time
from firmware.core import timefmt
from firmware.ocpp.queue import TxQueue
from firmware.ocpp.rpc import CallError, RpcTimeout, NotConnected
from firmware.ocpp import handlers as core_handlers
from firmware.core.seclog import SecLog
from firmware.net.http import upload, HttpError
from firmware.net.ws import WsError

CRITICAL = ("FirmwareUpdated", "StartupOfTheDevice", "ResetOrReboot", "SettingSystemTime",
            "SecurityLogWasCleared", "MemoryExhaustion", "TamperDetectionActivated")
BOOT = "sec_boot.json"  # {"clean": bool, "who":, "why":} of the run that ended
RESET = "ocpp_reset.json"  # written by the Reset handler
QUEUE = "ocpp_secq.json"
QUEUE_MAX = 50  # critical events kept for the CSMS (a flood drops the oldest)
RAM_MAX = 20  # non-critical events kept while offline
ATTEMPTS = 3  # a CSMS that refuses a notification this often will not take it
POLL_MS = 500
MEM_CHECK_MS = 10000
MEM_LOW = 16384  # bytes of free heap below which the charger is short of memory
LOG_FILE = "getlog-%d.tmp"


# The Reset marker: {"reason": "HardReset" | "SoftReset"}
def _reset_ok(r):
    return isinstance(r.get("reason", ""), str)


class Security:
    def __init__(self, cl):
        self.cl = cl
        self.seclog = SecLog(cl.store, cl.clock, log=cl.log)
        self.queue = TxQueue(cl.store, cl.log, QUEUE, cl.tasks)
        self.ram = []  # non-critical SecurityEventNotification payloads
        self.dropped = 0
        self.mem_low = False
        self.tampered = False
        self.log_status = "Idle"  # the GetLog upload's LogStatusNotification status
        self.log_request = None
        self._log_task = None
        self._task = None
        self._rebooting = False
        # Read before the client's start-up removes the Reset marker.
        self._last = cl.store.read(BOOT, None, check=lambda r: isinstance(r["clean"], bool))
        reset = cl.store.read(RESET, None, check=_reset_ok)
        self._reset = reset.get("reason") if reset else None
        cl.store.write(BOOT, {"clean": False})  # until an orderly reboot says otherwise
        st = cl.station
        orig = st.reboot
        if orig is not None:
            def reboot():
                self.before_reboot("charger", "reboot requested by the firmware")
                orig()
            st.reboot = reboot

    # --- the security log ------------------------------------------------------
    def _hide_secrets(self):
        # The AuthorizationKey and Basic password never reach the log, even if
        # a caller slipped and passed one in.
        k = self.cl.keys.values.get("AuthorizationKey")
        if k and len(k) >= 8:
            self.seclog.hide(k)
        b = self.cl.opts.get("basic")
        if b and b[1] and len(b[1]) >= 8:
            self.seclog.hide(b[1])

    def audit(self, who, what):
        self._hide_secrets()
        self.seclog.add(who, what)

    def lines(self, since=None, until=None):
        return self.seclog.lines(since, until)

    def clear_log(self, who):
        self._hide_secrets()
        self.seclog.clear(who)
        self._notify("SecurityLogWasCleared", "cleared by " + who)

    # --- events ------------------------------------------------------------------
    def event(self, kind, tech_info=None, who="charger"):
        self._hide_secrets()
        tech = self.seclog.clean(tech_info)[:255] if tech_info else None
        self.seclog.add(who, kind + (" " + tech if tech else ""))
        self._notify(kind, tech)

    def _notify(self, kind, tech):
        cl = self.cl
        p = {"type": kind, "timestamp": timefmt.format(cl.clock.wall())}
        if tech:
            p["techInfo"] = tech
        cl.log.warn("security", "%s %s" % (kind, tech or ""))
        if kind in CRITICAL:
            self._push("SecurityEventNotification", p)
        else:
            if len(self.ram) >= RAM_MAX:
                self.ram.pop(0)
                self.dropped += 1
                cl.log.warn("security", "%d security events pending: oldest non-critical one dropped" % RAM_MAX)
            self.ram.append(p)

    def _push(self, action, payload):
        if self.cl.stopped:
            return  # rebooting: the next client owns the queue record now
        q = self.queue
        while len(q) >= QUEUE_MAX:
            seq, act = q.head()[0], q.head()[1]
            q.pop(seq)
            self.dropped += 1
            self.cl.log.warn("security", "queue full: oldest %s dropped" % act)
        q.push(action, payload)

    # --- boot and reboot -----------------------------------------------------------
    def before_reboot(self, who, why):
        # An orderly reboot: the next boot reports ResetOrReboot, not a power-on.
        if self._rebooting:
            return
        self._rebooting = True
        reset = self.cl.store.read(RESET, None, check=_reset_ok)
        if reset and reset.get("reason"):
            who, why = "CSMS", "Reset (%s)" % reset["reason"]
        self.cl.store.write(BOOT, {"clean": True, "who": who, "why": why})
        self.audit(who, "reboot: %s" % why)

    def after_boot(self):
        last = self._last
        if last is not None and last.get("clean"):
            who = last.get("who") if last.get("who") in ("CSMS", "bench", "usb", "charger") else "charger"
            self.event("ResetOrReboot", str(last.get("why") or "reboot"), who)
        else:
            self.event("StartupOfTheDevice", "power-on" if last is None else
                       "power-on after the previous run ended without an orderly shutdown (power cut)")
        self.cl.store.remove(RESET)  # consumed: a later power cut is not this reset
        self._task = self.cl.tasks.spawn(self._run(), "security events")

    # --- the sender and the monitors ---------------------------------------------------
    def _ready(self):
        cl = self.cl
        return (cl.registered and cl.rpc.ws is not None
                and len(cl.reported) > len(cl.station.connectors))

    async def _run(self):
        cl = self.cl
        next_mem = cl.clock.ticks_ms()
        while not cl.stopped:
            now = cl.clock.ticks_ms()
            if cl.clock.ticks_diff(now, next_mem) >= 0:
                next_mem = cl.clock.ticks_add(now, MEM_CHECK_MS)
                self._check_memory()
            self._check_tamper()
            if self._ready():
                try:
                    await self._send()
                except Exception as e:  # the sender must outlive any one failure; a bug, counted
                    cl._internal_error("sending security events raised %r" % e)
            await cl.clock.sleep_ms(POLL_MS)

    async def _send(self):
        cl = self.cl
        q = self.queue
        while len(q) and self._ready() and not cl.stopped:
            seq, action, payload, _, _ = q.head()
            try:
                await cl.rpc.call(action, payload)
            except CallError as e:
                if q.attempt(seq) < ATTEMPTS:
                    return  # again at the next poll
                cl.log.error("security", "%s given up: %s" % (action, e.code))
            except (RpcTimeout, NotConnected, WsError, OSError):
                return  # the link is going: again once it is back
            q.pop(seq)
        while self.ram and self._ready() and not cl.stopped:
            try:
                await cl.rpc.call("SecurityEventNotification", self.ram[0])
            except CallError as e:
                cl.log.warn("security", "SecurityEventNotification refused: %s" % e.code)
            except (RpcTimeout, NotConnected, WsError, OSError):
                return
            self.ram.pop(0)

    def _check_memory(self):
        free = gc.mem_free()
        if free < MEM_LOW:
            gc.collect()  # garbage is not a shortage: only collect when it looks like one
            free = gc.mem_free()
        if free < MEM_LOW and not self.mem_low:
            self.mem_low = True
            self.event("MemoryExhaustion", "free heap %d bytes, below %d" % (free, MEM_LOW))
        elif free >= 2 * MEM_LOW:
            self.mem_low = False  # re-armed once there is clearly room again

    def memory_error(self, where):
        # A MemoryError was caught (an RPC handler): free what we can, report it.
        gc.collect()
        if not self.mem_low:
            self.mem_low = True
            self.event("MemoryExhaustion", "out of memory in %s" % where)

    def _check_tamper(self):
        on = bool(getattr(self.cl.station.hw, "tamper", False))
        if on and not self.tampered:
            self.event("TamperDetectionActivated", "enclosure opened")
        elif self.tampered and not on:
            self.audit("charger", "enclosure closed")
        self.tampered = on

    def replay(self, uid, action):
        self.event("AttemptedReplayAttacks", "CALL %s repeats unique id %s, already answered" % (action, uid[:36]))

    # --- GetLog ----------------------------------------------------------------------
    def get_log(self, p):
        cl = self.cl
        kind = p["logType"]
        rid = p["requestId"]
        where = p["log"]
        loc = where["remoteLocation"]
        if not (loc.startswith("http://") or loc.startswith("https://")):
            self.audit("CSMS", "GetLog %s %d refused: only http(s) uploads (%s)" % (kind, rid, loc[:60]))
            return {"status": "Rejected"}
        status = "Accepted"
        if self._log_task is not None and not self._log_task.done():
            # The whitepaper: a new request cancels the upload in progress.
            self._log_task.cancel()
            status = "AcceptedCanceled"
            self.audit("charger", "GetLog %s canceled by a new request" % self.log_request)
        stamp = timefmt.format(cl.clock.wall()).replace(":", "").replace("-", "")
        if kind == "SecurityLog":
            name = "securitylog-%s-%s.log" % (cl.opts["id"], stamp)
        else:
            name = "diagnostics-%s-%s.tar" % (cl.opts["id"], stamp)
        self.audit("CSMS", "GetLog %s requestId %d to %s" % (kind, rid, loc[:120]))
        self.log_request = rid
        self.log_status = "Idle"
        self._log_task = self.cl.tasks.spawn(self._upload(
            kind, rid, loc, name, timefmt.parse(where.get("oldestTimestamp") or ""),
            timefmt.parse(where.get("latestTimestamp") or ""), p.get("retries", 0), p.get("retryInterval", 60)))
        return {"status": status, "filename": name}

    def _log_notify(self, rid, status):
        self.log_status = status
        self.cl.log.info("ocpp", "LogStatusNotification %s (request %d)" % (status, rid))
        self._push("LogStatusNotification", {"status": status, "requestId": rid})

    async def _upload(self, kind, rid, loc, name, since, until, retries, interval):
        cl = self.cl
        tmp = LOG_FILE % rid
        path = cl.store.path(tmp)
        try:
            try:
                if kind == "SecurityLog":
                    self.seclog.export(path, since, until)
                else:
                    cl.fw._archive(path)  # what GetDiagnostics uploads (no time window)
            except OSError as e:
                cl.log.error("ocpp", "GetLog %s: cannot build the file: %r" % (kind, e))
                self._log_notify(rid, "UploadFailure")
                return
            for attempt in range(max(0, retries) + 1):
                if cl.stopped:
                    return  # rebooted meanwhile: this request ends here
                self._log_notify(rid, "Uploading")
                try:
                    await upload(loc, path, name, ca=cl.opts.get("ca"))
                    self._log_notify(rid, "Uploaded")
                    self.audit("charger", "GetLog %s uploaded as %s" % (kind, name))
                    return
                except (HttpError, OSError) as e:
                    cl.log.warn("ocpp", "GetLog upload attempt %d failed: %s" % (attempt + 1, e))
                    if attempt < retries:
                        await cl.clock.sleep_ms(max(1, interval) * 1000)
            self._log_notify(rid, "UploadFailure")
            self.audit("charger", "GetLog %s upload failed after %d attempts" % (kind, max(0, retries) + 1))
        finally:
            cl.store.remove(tmp)
            if self.log_request == rid:
                self.log_status = "Idle"

    def log_status_payload(self):
        # ExtendedTriggerMessage: requestId only while an upload runs.
        if self._log_task is not None and not self._log_task.done() and self.log_request is not None:
            return {"status": self.log_status if self.log_status != "Idle" else "Uploading",
                    "requestId": self.log_request}
        return {"status": "Idle"}

    # --- ExtendedTriggerMessage ----------------------------------------------------
    async def extended_trigger(self, p):
        cl = self.cl
        what = p["requestedMessage"]
        cid = p.get("connectorId")
        if cid is not None and (cid < 0 or cid > len(cl.station.connectors)):
            return {"status": "Rejected"}
        if what in ("BootNotification", "Heartbeat", "MeterValues", "StatusNotification"):
            return {"status": core_handlers.trigger_core(cl, what, cid)}
        if what == "LogStatusNotification":
            cl.tasks.spawn(cl._try("LogStatusNotification", self.log_status_payload()), "trigger")
        elif what == "FirmwareStatusNotification":
            fn = getattr(cl.fw, "signed_status", None)
            payload = fn() if fn is not None else None
            cl.tasks.spawn(cl._try("SignedFirmwareStatusNotification", payload or {"status": "Idle"}), "trigger")
        elif what == "SignChargePointCertificate":
            fn = getattr(cl.certs, "request_signing", None)
            if fn is None:
                return {"status": "NotImplemented"}
            r = fn()
            if r is not True and r is not False and r is not None:
                r = await r  # an async request_signing
            if not r:
                return {"status": "Rejected"}
        else:
            return {"status": "NotImplemented"}
        cl.wake.set()
        return {"status": "Accepted"}


def install(cl):
    sec = cl.security
    h = cl.rpc.handlers

    async def get_log(p):
        return sec.get_log(p)

    h["GetLog"] = get_log
    h["ExtendedTriggerMessage"] = sec.extended_trigger
    cl.rpc.on_replay = sec.replay
    cl.rpc.on_memory = sec.memory_error

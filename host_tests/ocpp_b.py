"""Helpers for the OCPP tests that run the firmware against the dev CSMS
(test_ocpp_core_b.py, test_ocpp_offline.py, test_ocpp_hostile.py).

The firmware runs in simulated step time: it moves only with fw.advance().
Network exchanges happen in real time meanwhile (a held RPC call makes
advance() wait for the CSMS's answer). A CALL from the CSMS whose handler
sleeps on the charger's clock (UnlockConnector) needs time to move while we
wait for its answer: call() runs it in a thread and advances meanwhile.
"""
import threading
import time

from ocpp_helpers import pump as _pump, until  # noqa: F401  (until: used by the tests through this module)

CP = "SIM0001"


def csms_set(csms):
    return "csms_url=ws://127.0.0.1:%d" % csms.port


def pump(fw, ms, step=500):
    """Advance ms of simulated time in steps of 500 ms."""
    _pump(fw, ms, step)


def calls(csms, action, after=None, cp=CP):
    """Payloads of the CALLs the charger sent with this action, oldest first."""
    return [m.payload for m in csms.messages(cp=cp, action=action, direction="in", type="CALL",
                                             after=after)]


def results(csms, action, after=None, cp=CP):
    """The CSMS's CALLRESULT payloads to the charger's CALLs of this action."""
    return [m.payload for m in csms.messages(cp=cp, action=action, direction="out",
                                             type="CALLRESULT", after=after)]


def tx_calls(csms, after=None, cp=CP):
    """The transaction messages the charger sent, in order: (action, payload, answer)."""
    msgs = csms.messages(cp=cp, after=after)
    answers = {m.unique_id: m.payload for m in msgs
               if m.direction == "out" and m.type == "CALLRESULT"}
    return [(m.action, m.payload, answers.get(m.unique_id)) for m in msgs
            if m.direction == "in" and m.type == "CALL"
            and m.action in ("StartTransaction", "StopTransaction", "MeterValues")]


def statuses(csms, cid, after=None, cp=CP):
    """Statuses the charger reported for connector cid, oldest first."""
    return [p["status"] for p in calls(csms, "StatusNotification", after, cp) if p["connectorId"] == cid]


def status_notes(csms, cid, after=None, cp=CP):
    return [p for p in calls(csms, "StatusNotification", after, cp) if p["connectorId"] == cid]


def last_status(csms, cid, after=None):
    s = statuses(csms, cid, after)
    return s[-1] if s else None


def wait_status(fw, csms, cid, status, after=None, limit_ms=30000):
    """Advance until the charger has reported `status` (a str or a tuple) for cid."""
    want = (status,) if isinstance(status, str) else tuple(status)
    return until(fw, lambda: last_status(csms, cid, after) in want, limit_ms,
                 what="StatusNotification %s for connector %d (got %s)" % (
                     want, cid, statuses(csms, cid, after)))


def boot(csms, make_fw, sets=(), **kw):
    """A charger registered at the CSMS, connector 0 and 1 reported Available."""
    fw = make_fw(sets=[csms_set(csms)] + list(sets), **kw)
    csms.wait_for_sync("BootNotification", cp=CP, timeout=15)
    wait_status(fw, csms, 1, "Available")
    return fw


def call(fw, csms, action, payload, step=100, limit_ms=30000, timeout=20):
    """A CSMS CALL answered while simulated time moves; the result payload
    (raises what call_sync raises)."""
    box = {}

    def run():
        try:
            box["r"] = csms.call_sync(CP, action, payload, timeout=timeout)
        except BaseException as e:  # handed to the test thread
            box["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    waited = 0
    while t.is_alive():
        time.sleep(0.005)
        if not t.is_alive():
            break
        if waited < limit_ms:
            fw.advance(step)
            waited += step
        else:
            time.sleep(0.02)
    t.join()
    if "e" in box:
        raise box["e"]
    return box["r"]


def configure(fw, csms, **keys):
    """ChangeConfiguration for each key; each must be Accepted."""
    for k, v in keys.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        r = call(fw, csms, "ChangeConfiguration", {"key": k, "value": str(v)})
        assert r == {"status": "Accepted"}, (k, v, r)


def get_config(fw, csms, *names):
    r = call(fw, csms, "GetConfiguration", {"key": list(names)} if names else {})
    return {e["key"]: e for e in r.get("configurationKey", [])}, r.get("unknownKey", [])


def start_charging(fw, csms, tag="CARD1", c=1, after=None, amps=32):
    """Plug in, EV asks for energy, present the tag; returns the CSMS's
    transactionId once the StartTransaction was confirmed and the charger
    reports Charging."""
    mark = csms.mark() if after is None else after
    fw.cmd("plug", amps=amps, c=c)
    fw.cmd("ev", state="C", c=c)
    fw.cmd("token", tag=tag, c=c)
    until(fw, lambda: results(csms, "StartTransaction", mark), what="StartTransaction confirmed")
    wait_status(fw, csms, c, "Charging", mark)
    return results(csms, "StartTransaction", mark)[-1]["transactionId"]


def connected(csms):
    return csms.connected(CP)


def wait_connected(fw, csms, limit_ms=300000, step=1000):
    """Advance until the charger is connected and registered again."""
    mark = csms.mark()
    until(fw, lambda: connected(csms) and fw.status()["ocpp"]["state"] == "accepted", limit_ms, step,
          what="reconnect")
    return mark


def drain(fw, csms, limit_ms=300000, step=1000):
    """Advance until the charger is online with nothing left in its queue."""
    until(fw, lambda: connected(csms) and fw.status()["ocpp"]["state"] == "accepted"
          and fw.status()["ocpp"]["queued"] == 0, limit_ms, step, what="queue drained")


def go_offline(fw, csms):
    """The CSMS goes away (connections dropped, new ones refused)."""
    csms.go_offline_sync()
    csms.wait_disconnected_sync(CP)


def meter_of(mv_payload, measurand="Energy.Active.Import.Register"):
    """The Wh values of one MeterValues payload (or transactionData list)."""
    out = []
    items = mv_payload["meterValue"] if isinstance(mv_payload, dict) else mv_payload
    for item in items:
        for sv in item["sampledValue"]:
            if sv.get("measurand", "Energy.Active.Import.Register") == measurand:
                out.append(float(sv["value"]))
    return out

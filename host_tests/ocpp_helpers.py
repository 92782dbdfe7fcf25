"""Shared set-up for the OCPP tests: a charger booted against the dev CSMS."""
import datetime
import time

CP = "SIM0001"


def online_pair(make_csms, make_fw, sets=(), **csms_opts):
    """A dev CSMS and a charger pointed at it, booted and Available."""
    csms_opts.setdefault("ping_interval", None)
    csms = make_csms(**csms_opts)
    fw = make_fw(sets=["csms_url=ws://127.0.0.1:%d" % csms.port] + list(sets))
    fw.advance(100)
    csms.wait_for_sync("BootNotification", cp=CP, timeout=10)
    fw.advance(2000)
    return csms, fw


def iso_in(fw, seconds):
    """An RFC 3339 time `seconds` after the charger's own clock."""
    t = fw.status()["time"] + seconds
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def reserve(csms, fw, connector, tag, rid, seconds=3600, parent=None):
    p = {"connectorId": connector, "expiryDate": iso_in(fw, seconds), "idTag": tag, "reservationId": rid}
    if parent:
        p["parentIdTag"] = parent
    return csms.call_sync(CP, "ReserveNow", p)["status"]


def last_status(csms, connector):
    ms = [m for m in csms.messages(cp=CP, action="StatusNotification", direction="in")
          if m.payload["connectorId"] == connector]
    return ms[-1].payload["status"] if ms else None


def wait_status(csms, fw, connector, status, limit_ms=10_000):
    """Advance the charger until the CSMS has heard this status for the connector."""
    t = 0
    while t <= limit_ms:
        if last_status(csms, connector) == status:
            return
        fw.advance(500)
        t += 500
        time.sleep(0.01)
    raise AssertionError("connector %d never reported %s (last %s)" % (connector, status, last_status(csms, connector)))


def pump(fw, ms, step=250):
    """Advance ms of simulated time in steps, so the client loop runs."""
    done = 0
    while done < ms:
        n = min(step, ms - done)
        fw.advance(n)
        done += n


def until(fw, pred, limit_ms=60000, step=250, what="condition"):
    """Advance until pred() is true (checked before each step); its value.
    Each step also gives the network a moment of real time (answers to the
    CSMS's CALLs travel in real time, not on the charger's clock)."""
    t = 0
    while True:
        r = pred()
        if r:
            return r
        if t >= limit_ms:
            raise AssertionError("%s not met within %d ms of simulated time" % (what, limit_ms))
        fw.advance(step)
        time.sleep(0.002)
        t += step

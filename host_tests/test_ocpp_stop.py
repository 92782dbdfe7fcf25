"""How the charger stops and what a strict CSMS sees (issue 8, items 10-13).

- An orderly stop (bench reboot(), a CSMS Reset, Ctrl-C) is not a power cut:
  the WebSocket ends with a close frame (1001), the transaction ends with the
  stop's reason, and the next boot knows the run ended in order.
- A stop after a power cut carries the time the power failed, not the
  restart time.
- TriggerMessage answers Idle when nothing is in progress; no transaction
  status reaches the CSMS before its StartTransaction; the reconnect backoff
  stays at or below the heartbeat interval.
- Failures are counted and shown: internal errors, task deaths, security-log
  write failures.

All against the dev CSMS (tools/csms), the firmware on the Unix port in
simulated step time.
"""
import json
import os
import re
import signal
import time
from datetime import datetime, timezone

from fwproc import ROOT
from mp import run_mp
from ocpp_helpers import CP, pump, until

TAG = "CARD1"
TX_STATUSES = ("Charging", "SuspendedEV", "SuspendedEVSE")


# --- helpers -------------------------------------------------------------------------

def start(make_csms, make_fw, sets=(), **csms_kw):
    csms_kw.setdefault("ping_interval", None)
    csms = make_csms(**csms_kw)
    fw = make_fw(sets=["csms_url=ws://127.0.0.1:%d" % csms.port] + list(sets))
    until(fw, lambda: len(status_calls(csms)) >= 2, what="boot and first statuses")
    pump(fw, 500)
    return csms, fw


def calls(csms, action=None, after=None):
    return csms.messages(cp=CP, action=action, direction="in", type="CALL", after=after)


def status_calls(csms, cid=None, after=None):
    return [m for m in calls(csms, "StatusNotification", after)
            if cid is None or m.payload["connectorId"] == cid]


def statuses(csms, cid, after=None):
    return [m.payload["status"] for m in status_calls(csms, cid, after)]


def charging(fw, csms):
    mark = csms.mark()
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    pump(fw, 500)
    fw.cmd("token", tag=TAG)
    until(fw, lambda: fw.conn()["status"] == "Charging" and "Charging" in statuses(csms, 1, mark),
          what="Charging")
    until(fw, lambda: csms.messages(cp=CP, action="StartTransaction", direction="out", type="CALLRESULT",
                                    after=mark), what="StartTransaction answered")
    return calls(csms, "StartTransaction", mark)[-1]


def disconnects(csms, after=None):
    return [e.payload for e in csms.events(cp=CP, type="DISCONNECT", after=after)]


def wait_disconnect(csms, mark, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = disconnects(csms, mark)
        if d:
            return d[0]
        time.sleep(0.02)
    raise AssertionError("the charger never disconnected")


def security_kinds(csms, after=None):
    return [m.payload["type"] for m in calls(csms, "SecurityEventNotification", after)]


def epoch(stamp):
    return datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()


def csms_call(fw, csms, action, payload, timeout=20.0):
    import threading
    box = {}

    def go():
        try:
            box["r"] = csms.call_sync(CP, action, payload, timeout=timeout)
        except Exception as e:  # noqa: BLE001 - handed to the test thread
            box["e"] = e

    th = threading.Thread(target=go, daemon=True)
    th.start()
    deadline = time.monotonic() + timeout
    while th.is_alive() and time.monotonic() < deadline:
        fw.advance(100)
        th.join(0.05)
    if "e" in box:
        raise box["e"]
    return box["r"]


# --- 10. an orderly stop is not a power cut --------------------------------------------

def test_bench_reboot_ends_the_transaction_as_reboot_with_a_close_frame(make_csms, make_fw):
    csms, fw = start(make_csms, make_fw)
    st = charging(fw, csms)
    pump(fw, 30_000, 1000)
    mark = csms.mark()
    fw.reboot()
    gone = wait_disconnect(csms, mark)
    assert gone["code"] in (1000, 1001), gone  # a close frame, not a lost link (1006)
    until(fw, lambda: calls(csms, "StopTransaction", mark), what="StopTransaction")
    (stop,) = calls(csms, "StopTransaction", mark)
    assert stop.payload["reason"] == "Reboot", stop.payload
    assert stop.payload["transactionId"] == csms.messages(
        cp=CP, action="StartTransaction", direction="out", type="CALLRESULT")[-1].payload["transactionId"]
    assert stop.payload["meterStop"] >= st.payload["meterStart"]
    # the next boot knows: a reboot, not a power-on after a power cut
    until(fw, lambda: security_kinds(csms, mark), what="boot security event")
    assert "StartupOfTheDevice" not in security_kinds(csms, mark)
    assert "ResetOrReboot" in security_kinds(csms, mark)
    assert fw.status()["last_stop"] == "Reboot"
    assert not any("without an orderly stop" in e["msg"] for e in fw.log())


def test_hard_reset_closes_the_websocket_with_a_close_frame(make_csms, make_fw):
    csms, fw = start(make_csms, make_fw)
    charging(fw, csms)
    mark = csms.mark()
    assert csms_call(fw, csms, "Reset", {"type": "Hard"}) == {"status": "Accepted"}
    gone = wait_disconnect(csms, mark)
    assert gone["code"] in (1000, 1001), gone
    until(fw, lambda: calls(csms, "StopTransaction", mark), what="StopTransaction")
    (stop,) = calls(csms, "StopTransaction", mark)
    assert stop.payload["reason"] == "HardReset"
    # the stop went out before the charger went away (it was online)
    assert stop.seq < csms.events(cp=CP, type="DISCONNECT", after=mark)[0].seq
    until(fw, lambda: "ResetOrReboot" in security_kinds(csms, mark), what="ResetOrReboot")
    assert fw.status()["last_stop"] == "HardReset"


def test_ctrl_c_ends_the_transaction_as_local_and_says_so(make_csms, make_fw):
    csms, fw = start(make_csms, make_fw)
    charging(fw, csms)
    pump(fw, 10_000, 1000)
    mark = csms.mark()
    fw.proc.send_signal(signal.SIGINT)
    assert fw.proc.wait(timeout=10) == 0
    gone = wait_disconnect(csms, mark)
    assert gone["code"] in (1000, 1001), gone
    fw.close()
    fw.start()
    until(fw, lambda: calls(csms, "StopTransaction", mark), what="StopTransaction after the restart")
    (stop,) = calls(csms, "StopTransaction", mark)
    assert stop.payload["reason"] == "Local", stop.payload
    assert fw.status()["last_stop"] == "Local"
    until(fw, lambda: security_kinds(csms, mark), what="boot security event")
    assert "StartupOfTheDevice" not in security_kinds(csms, mark)


def test_a_power_cut_is_still_a_power_cut(make_csms, make_fw):
    csms, fw = start(make_csms, make_fw)
    charging(fw, csms)
    mark = csms.mark()
    fw.powercut()
    gone = wait_disconnect(csms, mark)
    assert gone["code"] == 1006
    fw.start()
    until(fw, lambda: calls(csms, "StopTransaction", mark), what="StopTransaction")
    assert calls(csms, "StopTransaction", mark)[0].payload["reason"] == "PowerLoss"
    assert fw.status()["last_stop"] is None
    until(fw, lambda: "StartupOfTheDevice" in security_kinds(csms, mark), what="StartupOfTheDevice")


# --- 11. a stop after a power cut carries the time the power failed --------------------------

def test_power_loss_stop_carries_the_time_the_power_failed(make_csms, make_fw):
    csms, fw = start(make_csms, make_fw)
    charging(fw, csms)
    pump(fw, 150_000, 1000)
    cut_at = fw.status()["time"]
    mark = csms.mark()
    fw.powercut()
    # ten minutes without power: the world's clock moves on meanwhile
    p = os.path.join(fw.dir, "plant.json")
    with open(p) as f:
        plant = json.load(f)
    plant["wall"] = plant["wall"] + 600
    with open(p, "w") as f:
        json.dump(plant, f)
    fw.start()  # (the charger's clock then follows the CSMS's again at BootNotification)
    until(fw, lambda: calls(csms, "StopTransaction", mark), what="StopTransaction")
    stop = calls(csms, "StopTransaction", mark)[0].payload
    assert stop["reason"] == "PowerLoss"
    t = epoch(stop["timestamp"])
    # the README's bound: at most meter_save_s (60) + 1 s before the cut
    assert cut_at - 61 <= t <= cut_at, (t, cut_at)


# --- 12. OCPP details against a strict CSMS ---------------------------------------------------

def test_trigger_message_says_idle_after_a_failed_upload_and_download(make_csms, make_fw):
    csms, fw = start(make_csms, make_fw, http_port=0)
    csms.files.upload_status = 500
    csms_call(fw, csms, "GetDiagnostics", {"location": csms.upload_url("")})
    until(fw, lambda: [m.payload["status"] for m in calls(csms, "DiagnosticsStatusNotification")][-1:]
          == ["UploadFailed"], what="UploadFailed")
    csms_call(fw, csms, "UpdateFirmware", {"location": csms.file_url("missing.bin"),
                                           "retrieveDate": "2000-01-01T00:00:00Z"})
    until(fw, lambda: [m.payload["status"] for m in calls(csms, "FirmwareStatusNotification")][-1:]
          == ["DownloadFailed"], what="DownloadFailed", limit_ms=120_000)
    mark = csms.mark()
    for what in ("DiagnosticsStatusNotification", "FirmwareStatusNotification"):
        assert csms_call(fw, csms, "TriggerMessage", {"requestedMessage": what}) == {"status": "Accepted"}
        until(fw, lambda: calls(csms, what, mark), what=what)
        assert [m.payload["status"] for m in calls(csms, what, mark)] == ["Idle"], what


def _check_no_tx_status_without_tx(csms):
    # Walk the CSMS's record in order: a transaction status for a connector
    # is allowed only between the answer to its StartTransaction and its
    # StopTransaction.
    open_tx = {}  # connector -> transaction id
    starts = {}  # unique id of a StartTransaction CALL -> connector
    bad = []
    for m in csms.messages(cp=CP):
        if m.type == "CALL" and m.direction == "in" and m.action == "StartTransaction":
            starts[m.unique_id] = m.payload["connectorId"]
        elif m.type == "CALLRESULT" and m.direction == "out" and m.unique_id in starts:
            open_tx[starts.pop(m.unique_id)] = m.payload["transactionId"]
        elif m.type == "CALL" and m.direction == "in" and m.action == "StopTransaction":
            for k, v in list(open_tx.items()):
                if v == m.payload["transactionId"]:
                    del open_tx[k]
        elif m.type == "CALL" and m.direction == "in" and m.action == "StatusNotification":
            p = m.payload
            if p["status"] in TX_STATUSES and p["connectorId"] not in open_tx:
                bad.append(p["status"])
    assert bad == [], "transaction statuses with no transaction open: %s" % bad


def test_no_transaction_status_before_start_transaction_when_the_lock_jams(make_csms, make_fw):
    csms, fw = start(make_csms, make_fw)
    fw.cmd("fault", name="lock")
    mark = csms.mark()
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="B")
    pump(fw, 1000)
    fw.cmd("token", tag=TAG)
    until(fw, lambda: statuses(csms, 1, mark)[-1:] == ["Faulted"], what="Faulted")
    pump(fw, 3000)
    assert calls(csms, "StartTransaction", mark) == []
    _check_no_tx_status_without_tx(csms)


def test_no_transaction_status_before_start_transaction_in_a_session(make_csms, make_fw):
    # EV not asking for energy yet (B), then asking (C), then pausing: every
    # transaction status comes after the StartTransaction's answer.
    csms, fw = start(make_csms, make_fw)
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="B")
    pump(fw, 1000)
    fw.cmd("token", tag=TAG)
    until(fw, lambda: calls(csms, "StartTransaction"), what="StartTransaction")
    pump(fw, 3000)
    fw.cmd("ev", state="C")
    until(fw, lambda: statuses(csms, 1)[-1:] == ["Charging"], what="Charging")
    fw.cmd("ev", state="B")
    until(fw, lambda: statuses(csms, 1)[-1:] == ["SuspendedEV"], what="SuspendedEV")
    _check_no_tx_status_without_tx(csms)


def test_reconnect_wait_stays_below_the_heartbeat_interval(make_csms, make_fw):
    csms, fw = start(make_csms, make_fw, heartbeat_interval=30)
    since = fw.cmd("log", n=1)["seq"]  # log entries from here on
    mark = csms.mark()
    csms.go_offline_sync()
    csms.wait_disconnected_sync(CP)
    pump(fw, 150_000, 1000)  # a 2.5-minute outage
    csms.go_online_sync()
    back = fw.now()
    until(fw, lambda: fw.status()["ocpp"]["state"] == "accepted", limit_ms=120_000, step=500,
          what="reconnect")
    took = fw.now() - back
    waits = [int(x) for e in fw.log(since=since, n=500) for x in re.findall(r"retry in (\d+) ms", e["msg"])]
    assert waits and max(waits) <= 30_000, waits
    assert took <= 31_000, "reconnected %d ms after the CSMS came back" % took
    assert csms.events(cp=CP, type="CONNECT", after=mark)


# --- 13. failures are seen, not swallowed ------------------------------------------------------

def test_status_counts_security_log_write_failures(make_csms, make_fw, tmp_path):
    csms = make_csms(ping_interval=None)
    fw = make_fw(sets=["csms_url=ws://127.0.0.1:%d" % csms.port])
    fw.close()
    # the security log's file cannot be written (a directory in its place)
    flash = os.path.join(fw.dir, "flash")
    for name in ("seclog.txt", "seclog.txt.1"):
        p = os.path.join(flash, name)
        if os.path.isfile(p):
            os.remove(p)
        os.makedirs(p, exist_ok=True)
    fw.start()
    until(fw, lambda: "StartupOfTheDevice" in security_kinds(csms) or "ResetOrReboot" in security_kinds(csms),
          what="boot security event")
    e = fw.status()["errors"]
    assert e["seclog_write_failures"] >= 1, e
    assert any("security log line not written" in x["msg"] for x in fw.log())
    assert e["internal"] == 0 and e["task_deaths"] == 0, e


def test_status_shows_the_failure_counts_at_the_repl(make_fw):
    fw = make_fw(repl=True)
    fw.proc.stdin.write(b"status()\n")
    fw.proc.stdin.flush()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "task death" not in fw.console():
        time.sleep(0.05)
    line = [x for x in fw.console().splitlines() if "task death" in x]
    assert line and "0 internal" in line[0] and "0 security-log write failure" in line[0], fw.console()[-1500:]
    assert fw.status()["errors"] == {"internal": 0, "task_deaths": 0, "seclog_write_failures": 0}


def test_spawned_tasks_are_kept_counted_and_cancelled():
    code = r"""
import asyncio
from firmware.core.sched import Tasks

class Log:
    def __init__(self):
        self.lines = []
    def error(self, src, msg):
        self.lines.append(msg)

async def boom():
    await asyncio.sleep_ms(1)
    raise ValueError("bug")

async def forever():
    while True:
        await asyncio.sleep_ms(10)

async def main():
    log = Log()
    ts = Tasks(log)
    ts.spawn(boom(), "boom")
    t = ts.spawn(forever(), "forever")
    assert len(ts.live) == 2
    await asyncio.sleep_ms(20)
    assert ts.deaths == 1, ts.deaths
    assert log.lines and "boom" in log.lines[0] and "ValueError" in log.lines[0], log.lines
    assert ts.live == [t]
    ts.cancel_all()
    await asyncio.sleep_ms(20)
    assert t.done() and ts.live == [] and ts.deaths == 1
    print("OK")

asyncio.run(main())
"""
    p = run_mp(code)
    assert p.returncode == 0 and "OK" in p.stdout, p.stdout + p.stderr


def test_no_task_is_started_outside_the_spawn_helper():
    # Every task goes through firmware.core.sched.Tasks.spawn (kept, counted,
    # cancelled with the station): no bare create_task anywhere else.
    bare = []
    for top in ("firmware", "boards"):
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(d, f)
                rel = os.path.relpath(path, ROOT)
                if rel == os.path.join("firmware", "core", "sched.py"):
                    continue
                with open(path) as fh:
                    for i, line in enumerate(fh, 1):
                        if "create_task(" in line and not line.lstrip().startswith("#"):
                            bare.append("%s:%d" % (rel, i))
    assert bare == [], bare


def test_certificate_store_has_no_silent_except():
    with open(os.path.join(ROOT, "firmware", "ocpp", "certs.py")) as f:
        text = f.read()
    assert not re.search(r"except Exception:\s*\n\s*(pass|continue)\b", text)


CONNECT_BUG = r"""
import asyncio, json
from firmware.core.clock import SimClock
from firmware.core.log import Log
from firmware.core.store import Store
from firmware.core import config
from firmware.sim.plant import Plant
from firmware.sim.hw import SimHardware
from firmware.station import Station
from firmware.ocpp.client import OcppClient

clock = SimClock("step")
store = Store(TMP)
cfg, errors = config.load(store, ["id=CP1", "csms_url=ws://127.0.0.1:9/"])
st = Station(SimHardware(Plant(1)), clock, store, cfg, Log(clock))
tries = []

async def connect(url, **kw):
    # the first attempt meets a bug (not the network), the others a refused port
    tries.append(url)
    if len(tries) == 1:
        raise TypeError("a bug in the link set-up")
    raise OSError(111)

OcppClient(st, {"url": "ws://127.0.0.1:9/CP1", "id": "CP1"}, connect)
st.start()

async def main():
    await clock.advance(10000)
    e = st.status()["errors"]
    msgs = [x[5] for x in st.log.entries()]
    print(json.dumps({"tries": len(tries), "errors": e,
                      "internal": [m for m in msgs if "internal error" in m],
                      "retries": [m for m in msgs if "connect failed" in m]}))

asyncio.run(main())
"""


def test_a_bug_in_connecting_is_an_internal_error_not_a_network_retry(tmp_path):
    p = run_mp("TMP = %r\n" % str(tmp_path) + CONNECT_BUG)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["tries"] >= 3, out  # still retried
    assert out["errors"]["internal"] == 1, out
    assert len(out["internal"]) == 1 and "TypeError" in out["internal"][0], out
    assert out["retries"] and not any("TypeError" in m for m in out["retries"]), out

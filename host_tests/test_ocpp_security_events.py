"""OCPP 1.6 security extensions: security events, the security log, GetLog
(TC_079) and ExtendedTriggerMessage, against the dev CSMS (which checks every
message against the official schemas), in simulated time.

What a back-office operator sees: each security event arrives as a valid
SecurityEventNotification (critical ones even after the charger was offline
or lost power); GetLog uploads the security log's who/when/what lines; a
secret never lands in a log."""
import datetime
import io
import os
import re
import tarfile
import time

import pytest

from ocpp_helpers import CP, online_pair, pump, until
from test_ocpp_rpc import RPC_PIPE
from tools.csms.chargepoint import NotConnected

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (CSMS|bench|usb|charger) \S.*$")
CRITICAL = {"FirmwareUpdated", "StartupOfTheDevice", "ResetOrReboot", "SettingSystemTime",
            "SecurityLogWasCleared", "MemoryExhaustion", "TamperDetectionActivated"}


@pytest.fixture
def online(make_csms, make_fw):
    return online_pair(make_csms, make_fw)


def events(csms, kind=None, after=None):
    """The SecurityEventNotification CALLs the charger sent (Messages)."""
    return [m for m in csms.messages(cp=CP, action="SecurityEventNotification", direction="in", type="CALL",
                                     after=after) if kind is None or m.payload["type"] == kind]


def answered(csms, m):
    """The CSMS took the CALL: a CALLRESULT (the schema check passed)."""
    return [r for r in csms.messages(cp=CP, unique_id=m.unique_id, direction="out") if r.type == "CALLRESULT"]


def wait_event(csms, fw, kind, after=None, limit_ms=30000):
    ms = until(fw, lambda: [m for m in events(csms, kind, after) if answered(csms, m)], limit_ms,
               what="SecurityEventNotification %s" % kind)
    p = ms[-1].payload
    assert set(p) <= {"type", "timestamp", "techInfo"} and len(p.get("techInfo", "")) <= 255, p
    return p


def log_statuses(csms, after=None):
    return [(m.payload["status"], m.payload.get("requestId"))
            for m in csms.messages(cp=CP, action="LogStatusNotification", direction="in", type="CALL", after=after)]


def run_until_log_status(csms, fw, last, after=None, limit_ms=120_000):
    return until(fw, lambda: log_statuses(csms, after) if log_statuses(csms, after)
                 and log_statuses(csms, after)[-1][0] == last else None, limit_ms, step=500,
                 what="LogStatusNotification %s" % last)


def seclog(fw, n=500):
    return fw.cmd("seclog", n=n)["lines"]


def flash(fw, name):
    p = os.path.join(fw.dir, "flash", name)
    if not os.path.exists(p):
        return b""
    with open(p, "rb") as f:
        return f.read()


# --------------------------------------------------------------- TC_079 GetLog

def test_tc_079_get_security_log(online):
    csms, fw = online
    wait_event(csms, fw, "StartupOfTheDevice")
    mark = csms.mark()
    r = csms.call_sync(CP, "GetLog", {"logType": "SecurityLog", "requestId": 79,
                                      "log": {"remoteLocation": csms.upload_url("")}})
    assert r["status"] == "Accepted" and r["filename"]
    seen = run_until_log_status(csms, fw, "Uploaded", mark)
    assert seen == [("Uploading", 79), ("Uploaded", 79)]
    up = csms.files.wait_for_upload(r["filename"], timeout=10)
    with open(up["path"]) as f:
        lines = f.read().splitlines()
    assert lines and all(LINE.match(x) for x in lines), lines
    assert any(" charger StartupOfTheDevice" in x for x in lines), lines
    assert any(" CSMS GetLog SecurityLog requestId 79" in x for x in lines), lines  # the request itself is audited


def test_get_log_honours_the_time_window(online):
    csms, fw = online
    wait_event(csms, fw, "StartupOfTheDevice")
    later = "2100-01-01T00:00:00Z"
    r = csms.call_sync(CP, "GetLog", {"logType": "SecurityLog", "requestId": 1,
                                      "log": {"remoteLocation": csms.upload_url(""), "oldestTimestamp": later}})
    run_until_log_status(csms, fw, "Uploaded")
    up = csms.files.wait_for_upload(r["filename"], timeout=10)
    assert up["size"] == 0  # nothing in the log is that new
    mark = csms.mark()
    r = csms.call_sync(CP, "GetLog", {"logType": "SecurityLog", "requestId": 2,
                                      "log": {"remoteLocation": csms.upload_url(""),
                                              "oldestTimestamp": "2000-01-01T00:00:00Z", "latestTimestamp": later}})
    seen = run_until_log_status(csms, fw, "Uploaded", mark)
    assert seen == [("Uploading", 2), ("Uploaded", 2)]
    up = csms.files.wait_for_upload(r["filename"], timeout=10)
    with open(up["path"]) as f:
        assert "StartupOfTheDevice" in f.read()


def test_get_diagnostics_log_uploads_the_diagnostics_archive(online):
    csms, fw = online
    r = csms.call_sync(CP, "GetLog", {"logType": "DiagnosticsLog", "requestId": 5,
                                      "log": {"remoteLocation": csms.upload_url("")}})
    assert r["status"] == "Accepted" and r["filename"].endswith(".tar")
    assert run_until_log_status(csms, fw, "Uploaded") == [("Uploading", 5), ("Uploaded", 5)]
    up = csms.files.wait_for_upload(r["filename"], timeout=10)
    with open(up["path"], "rb") as f:
        with tarfile.open(fileobj=io.BytesIO(f.read())) as t:
            assert {"log.txt", "status.json", "config.json"} <= set(t.getnames())


def test_get_log_upload_failure_after_retries(online):
    csms, fw = online
    csms.files.upload_status = 500
    r = csms.call_sync(CP, "GetLog", {"logType": "SecurityLog", "requestId": 9, "retries": 2, "retryInterval": 10,
                                      "log": {"remoteLocation": csms.upload_url("")}})
    assert r["status"] == "Accepted"
    seen = run_until_log_status(csms, fw, "UploadFailure")
    assert seen == [("Uploading", 9)] * 3 + [("UploadFailure", 9)]


def test_a_second_get_log_cancels_the_first(online):
    csms, fw = online
    csms.files.upload_status = 500
    r1 = csms.call_sync(CP, "GetLog", {"logType": "SecurityLog", "requestId": 1, "retries": 5, "retryInterval": 600,
                                       "log": {"remoteLocation": csms.upload_url("")}})
    assert r1["status"] == "Accepted"
    until(fw, lambda: ("Uploading", 1) in log_statuses(csms), what="first upload under way")
    csms.files.upload_status = None
    r2 = csms.call_sync(CP, "GetLog", {"logType": "SecurityLog", "requestId": 2,
                                       "log": {"remoteLocation": csms.upload_url("")}})
    assert r2["status"] == "AcceptedCanceled"
    run_until_log_status(csms, fw, "Uploaded")
    pump(fw, 1_300_000, 10_000)  # well past the first request's retry interval
    seen = log_statuses(csms)
    assert seen == [("Uploading", 1), ("Uploading", 2), ("Uploaded", 2)], seen


def test_get_log_to_a_location_that_is_not_http_is_rejected(online):
    csms, fw = online
    r = csms.call_sync(CP, "GetLog", {"logType": "SecurityLog", "requestId": 3,
                                      "log": {"remoteLocation": "ftp://example.invalid/logs/"}})
    assert r == {"status": "Rejected"}


# --------------------------------------------------------------- the events themselves

def test_startup_after_power_on_and_reset_or_reboot_after_a_reset(online):
    csms, fw = online
    p = wait_event(csms, fw, "StartupOfTheDevice")
    assert events(csms, "ResetOrReboot") == []
    mark = csms.mark()
    assert csms.call_sync(CP, "Reset", {"type": "Soft"}) == {"status": "Accepted"}
    p = wait_event(csms, fw, "ResetOrReboot", mark)
    assert "Reset" in p.get("techInfo", "")
    assert events(csms, "StartupOfTheDevice", mark) == []
    # a reboot from the bench is a reboot too
    mark = csms.mark()
    fw.reboot()
    wait_event(csms, fw, "ResetOrReboot", mark)
    # a power cut is not: the next boot is a power-on
    mark = csms.mark()
    fw.powercut()
    fw.start()
    wait_event(csms, fw, "StartupOfTheDevice", mark)
    assert events(csms, "ResetOrReboot", mark) == []
    assert any(" CSMS reboot: Reset (SoftReset)" in x for x in seclog(fw))


def test_clock_set_by_the_csms_is_a_setting_system_time_event(online):
    csms, fw = online
    # The simulated clock starts on 2026-01-01; the CSMS's BootNotification
    # answer carries the real time, so the charger set its clock.
    p = wait_event(csms, fw, "SettingSystemTime")
    assert "clock set" in p["techInfo"]
    assert any(" CSMS SettingSystemTime" in x for x in seclog(fw))


def test_tamper_switch_raises_tamper_detection(online):
    csms, fw = online
    mark = csms.mark()
    fw.cmd("tamper", opened=True)
    p = wait_event(csms, fw, "TamperDetectionActivated", mark)
    assert "enclosure" in p["techInfo"]
    fw.cmd("tamper", opened=False)
    until(fw, lambda: any("enclosure closed" in x for x in seclog(fw)), what="enclosure closed logged")
    assert len(events(csms, "TamperDetectionActivated", mark)) == 1


def test_low_memory_raises_memory_exhaustion(online):
    csms, fw = online
    mark = csms.mark()
    try:
        fw.cmd("hog", kb=10)
        until(fw, lambda: any("MemoryExhaustion" in x for x in seclog(fw, 5)), limit_ms=15000,
              what="MemoryExhaustion logged")
    finally:
        fw.cmd("hog", kb=None)
    p = wait_event(csms, fw, "MemoryExhaustion", mark)
    assert "free heap" in p["techInfo"]


def test_invalid_messages_reach_the_csms(online):
    csms, fw = online
    mark = csms.mark()
    csms.send_raw_sync(CP, ["garbage %d" % i for i in range(10)])
    p = wait_event(csms, fw, "InvalidMessages", mark)
    assert "10 unanswerable frames" in p["techInfo"]


def test_a_replayed_call_id_raises_attempted_replay_attacks(online):
    csms, fw = online
    mark = csms.mark()
    frame = '[2,"replay-1","ChangeConfiguration",{"key":"HeartbeatInterval","value":"123"}]'
    csms.send_raw_sync(CP, frame)
    until(fw, lambda: [m for m in csms.messages(cp=CP, unique_id="replay-1", direction="in")], what="first answer")
    csms.send_raw_sync(CP, frame)
    answers = until(fw, lambda: (lambda a: a if len(a) == 2 else None)(
        csms.messages(cp=CP, unique_id="replay-1", direction="in")), what="second answer")
    assert answers[0].type == "CALLRESULT" and answers[0].payload == {"status": "Accepted"}
    assert answers[1].type == "CALLERROR" and answers[1].error_code == "SecurityError"
    p = wait_event(csms, fw, "AttemptedReplayAttacks", mark)
    assert "replay-1" in p["techInfo"]
    # a fresh id is served as usual
    assert csms.call_sync(CP, "GetConfiguration", {"key": ["HeartbeatInterval"]})["configurationKey"][0]["value"] \
        == "123"


def test_security_log_cleared_from_the_bench_is_reported(online):
    csms, fw = online
    wait_event(csms, fw, "StartupOfTheDevice")
    mark = csms.mark()
    lines = fw.cmd("seclog", clear=True)["lines"]
    assert len(lines) == 1 and " bench SecurityLogWasCleared" in lines[0]
    p = wait_event(csms, fw, "SecurityLogWasCleared", mark)
    assert "bench" in p["techInfo"]


# --------------------------------------------------------------- delivery

def test_critical_event_raised_offline_is_delivered_after_reconnect(online):
    csms, fw = online
    wait_event(csms, fw, "StartupOfTheDevice")
    csms.go_offline_sync()
    until(fw, lambda: fw.status()["ocpp"]["state"] != "accepted", what="offline")
    mark = csms.mark()
    fw.cmd("tamper", opened=True)
    until(fw, lambda: any("TamperDetectionActivated" in x for x in seclog(fw, 5)), what="tamper logged")
    csms.go_online_sync()
    wait_event(csms, fw, "TamperDetectionActivated", mark, limit_ms=300_000)


def test_critical_event_raised_offline_survives_a_power_cut(online):
    csms, fw = online
    wait_event(csms, fw, "StartupOfTheDevice")
    csms.go_offline_sync()
    until(fw, lambda: fw.status()["ocpp"]["state"] != "accepted", what="offline")
    mark = csms.mark()
    fw.cmd("tamper", opened=True)
    until(fw, lambda: any("TamperDetectionActivated" in x for x in seclog(fw, 5)), what="tamper logged")
    raised_at = fw.status()["time"]
    fw.cmd("tamper", opened=False)  # closed again: the next boot has nothing new to report
    until(fw, lambda: any("enclosure closed" in x for x in seclog(fw, 5)), what="closed logged")
    fw.powercut()
    csms.go_online_sync()
    fw.start()
    wait_event(csms, fw, "StartupOfTheDevice", mark)
    p = wait_event(csms, fw, "TamperDetectionActivated", mark)
    assert len(events(csms, "TamperDetectionActivated", mark)) == 1
    t = datetime.datetime.strptime(p["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    assert abs(t.timestamp() - raised_at) <= 2  # the event from before the cut, with its own time


def real_wait(pred, timeout=10, what="condition"):
    """Wait in real time, simulated time standing still (nothing the charger
    schedules on its own clock can run meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        r = pred()
        if r:
            return r
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_non_critical_event_waits_in_ram_for_the_next_boot_and_a_power_cut_loses_it(online):
    # Documented choice: a non-critical event raised while the link is down
    # is kept in RAM and sent after the next accepted BootNotification; a
    # power cut loses the notification, not its security-log line.
    csms, fw = online
    wait_event(csms, fw, "StartupOfTheDevice")
    frame = '[2,"dup-1","GetLocalListVersion",{}]'
    csms.send_raw_sync(CP, frame)
    until(fw, lambda: csms.messages(cp=CP, unique_id="dup-1", direction="in"), what="first answer")
    mark = csms.mark()
    # A replay: its event is raised at once, and the link goes before
    # simulated time lets the sender run.
    csms.send_raw_sync(CP, frame)
    real_wait(lambda: csms.messages(cp=CP, unique_id="dup-1", direction="in", after=mark), what="replay refused")
    csms.go_offline_sync()
    until(fw, lambda: fw.status()["ocpp"]["state"] != "accepted", what="offline")
    assert events(csms, "AttemptedReplayAttacks") == []
    csms.go_online_sync()
    wait_event(csms, fw, "AttemptedReplayAttacks", mark, limit_ms=300_000)
    # again, but the power goes while offline
    mark = csms.mark()
    csms.send_raw_sync(CP, frame)
    real_wait(lambda: sum("AttemptedReplayAttacks" in x for x in seclog(fw)) == 2, what="second replay logged")
    csms.go_offline_sync()
    fw.powercut()
    csms.go_online_sync()
    fw.start()
    wait_event(csms, fw, "StartupOfTheDevice", mark)
    pump(fw, 5000)
    assert events(csms, "AttemptedReplayAttacks", mark) == []
    assert sum("AttemptedReplayAttacks" in x for x in seclog(fw)) == 2


# --------------------------------------------------------------- the log itself

def test_security_log_survives_reboot_and_stays_bounded_under_a_flood(online):
    csms, fw = online
    wait_event(csms, fw, "StartupOfTheDevice")
    csms.send_raw_sync(CP, ["junk %d" % i for i in range(2500)])  # 250 InvalidMessages events
    until(fw, lambda: any("2500 unanswerable" in x for x in seclog(fw, 3)), limit_ms=120_000,
          what="the whole flood logged")
    cur, old = flash(fw, "seclog.txt"), flash(fw, "seclog.txt.1")
    assert old and len(cur) <= 8192 and len(old) <= 8192  # rotated, never more than two files
    lines = seclog(fw)
    assert all(LINE.match(x) for x in lines)
    assert not any("StartupOfTheDevice" in x for x in lines)  # the oldest rotated out
    fw.reboot()
    after = seclog(fw)
    assert set(lines[-20:]) <= set(after), "the log survives a reboot"
    assert any(x.endswith(" bench ResetOrReboot bench reboot()") for x in after if x not in lines)


def test_no_secret_in_the_security_log_or_the_log(online):
    csms, fw = online
    secret = "S3cret-Auth-Key-0123456789"
    r = csms.call_sync(CP, "ChangeConfiguration", {"key": "AuthorizationKey", "value": secret})
    assert r["status"] in ("Accepted", "RebootRequired")
    fw.cmd("tamper", opened=True)
    pump(fw, 1000)
    fw.cmd("tamper", opened=False)
    pump(fw, 3000)
    # The charger may reconnect to use the new key: ask again once it is back.
    for _ in range(3):
        until(fw, lambda: fw.status()["ocpp"]["state"] == "accepted" and csms.connected(CP), what="online")
        try:
            r = csms.call_sync(CP, "GetLog", {"logType": "SecurityLog", "requestId": 4,
                                              "log": {"remoteLocation": csms.upload_url("")}})
            break
        except NotConnected:
            pump(fw, 3000)
    run_until_log_status(csms, fw, "Uploaded")
    up = csms.files.wait_for_upload(r["filename"], timeout=10)
    fw.cmd("log", n=500)
    pump(fw, 2000)  # the RAM log reaches flash
    blobs = [open(up["path"], "rb").read(), flash(fw, "seclog.txt"), flash(fw, "seclog.txt.1"),
             flash(fw, "log.txt"), flash(fw, "log.txt.1")]
    blobs.append("\n".join(e["msg"] for e in fw.log()).encode())
    for b in blobs:
        assert secret.encode() not in b
    assert any(b"TamperDetectionActivated" in b for b in blobs)


# --------------------------------------------------------------- ExtendedTriggerMessage

@pytest.mark.parametrize("requested, action", [
    ("BootNotification", "BootNotification"),
    ("Heartbeat", "Heartbeat"),
    ("MeterValues", "MeterValues"),
    ("StatusNotification", "StatusNotification"),
    ("LogStatusNotification", "LogStatusNotification"),
    ("FirmwareStatusNotification", "SignedFirmwareStatusNotification"),
])
def test_extended_trigger_message(online, requested, action):
    csms, fw = online
    mark = csms.mark()
    r = csms.call_sync(CP, "ExtendedTriggerMessage", {"requestedMessage": requested})
    assert r == {"status": "Accepted"}
    m = until(fw, lambda: csms.messages(cp=CP, action=action, direction="in", type="CALL", after=mark),
              what=action)[0]
    until(fw, lambda: answered(csms, m), what="%s answered (valid payload)" % action)
    if action in ("LogStatusNotification", "SignedFirmwareStatusNotification"):
        assert m.payload["status"] == "Idle"  # nothing under way


def test_extended_trigger_log_status_during_an_upload_names_the_request(online):
    csms, fw = online
    csms.files.upload_status = 500
    csms.call_sync(CP, "GetLog", {"logType": "SecurityLog", "requestId": 77, "retries": 3, "retryInterval": 600,
                                  "log": {"remoteLocation": csms.upload_url("")}})
    until(fw, lambda: ("Uploading", 77) in log_statuses(csms), what="upload under way")
    mark = csms.mark()
    assert csms.call_sync(CP, "ExtendedTriggerMessage", {"requestedMessage": "LogStatusNotification"}) == \
        {"status": "Accepted"}
    m = until(fw, lambda: csms.messages(cp=CP, action="LogStatusNotification", direction="in", after=mark),
              what="triggered LogStatusNotification")[0]
    assert m.payload == {"status": "Uploading", "requestId": 77}


def test_extended_trigger_sign_certificate_and_bad_connector(online):
    csms, fw = online
    r = csms.call_sync(CP, "ExtendedTriggerMessage", {"requestedMessage": "SignChargePointCertificate"})
    assert r["status"] in ("Accepted", "Rejected", "NotImplemented")
    if r["status"] == "Accepted":
        until(fw, lambda: csms.messages(cp=CP, action="SignCertificate", direction="in"), what="SignCertificate")
    r = csms.call_sync(CP, "ExtendedTriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 9})
    assert r == {"status": "Rejected"}


# --------------------------------------------------------------- units on the Unix port

OOM = RPC_PIPE + r"""
heard = []
rpc.on_memory = heard.append
async def hungry(p): return {"status": "Accepted", "big": bytearray(1 << 40)}
rpc.handlers["ClearCache"] = hungry

async def main():
    p = Pipe()
    asyncio.create_task(rpc.run(p))
    p.inq.append('[2,"m1","ClearCache",{}]'); p.ev.set()
    await asyncio.sleep_ms(20)
    print(json.dumps({"out": p.out, "heard": heard}))
asyncio.run(main())
"""


def test_out_of_memory_in_a_handler_answers_internal_error_and_is_reported():
    from mp import run_mp
    p = run_mp(OOM)
    assert p.returncode == 0, p.stdout + p.stderr
    import json
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["out"][0][:3] == [4, "m1", "InternalError"]
    assert r["heard"] == ["ClearCache"]  # -> MemoryExhaustion (Security.memory_error)


SECLOG = r"""
import json
from firmware.core.store import Store
from firmware.core.seclog import SecLog
class Clock:
    t = 1795255200
    def wall(self): return self.t
clock = Clock()
store = Store(TMP)
log = SecLog(store, clock, max_bytes=1000)
log.hide("TopSecretKey-1234567890")
for i in range(100):
    clock.t += 60
    log.add("CSMS" if i % 2 else "nobody", "event %d key TopSecretKey-1234567890\nsecond line" % i)
with open(store.path("seclog.txt"), "a") as f:
    f.write("2026-11-21T10:00:00Z charger torn")  # a power cut mid-line
lines = log.lines()
window = log.lines(1795255200 + 60 * 95, 1795255200 + 60 * 97)
log.clear("usb")
print(json.dumps({"lines": lines, "window": window, "after": log.lines()}))
"""


def test_security_log_is_bounded_line_oriented_and_never_holds_a_secret(tmp_path):
    from mp import run_mp
    import json
    p = run_mp("TMP = %r\n" % str(tmp_path) + SECLOG)
    assert p.returncode == 0, p.stdout + p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    lines = r["lines"]
    assert 10 < len(lines) < 40  # two files of 1000 bytes: only the newest survive
    assert lines[-1].endswith("event 99 key (secret) second line")
    assert all(LINE.match(x) for x in lines)
    assert not any("TopSecretKey" in x or "torn" in x for x in lines)
    assert {x.split()[1] for x in lines} == {"CSMS", "charger"}  # an unknown "who" becomes charger
    assert [x.split()[3] for x in r["window"]] == ["94", "95", "96"]
    assert len(r["after"]) == 1 and r["after"][0].split()[1:] == ["usb", "SecurityLogWasCleared"]
    assert not os.path.exists(tmp_path / "seclog.txt.1")

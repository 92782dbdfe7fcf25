"""A hostile CSMS: what it sends is malformed, wrongly typed, oversized,
unknown, too much, or nothing at all. Each gets the reaction OCPP-J
specifies, the charger never crashes, and its safety is untouched: the
charging session goes on and the control loop stays on time.

Frames go out as given with the dev CSMS's send_raw; scripted answers to the
charger's CALLs with override (Reply(validate=False), NO_REPLY).
"""
import json
import time

import pytest

from fwproc import FirmwareProcess
from ocpp_b import CP, boot, call, calls, csms_set, pump, results, start_charging, until
from tools.csms import NO_REPLY, Reply

MAX_FRAME = 65536  # the firmware's WebSocket frame limit (firmware/net/ws.py)


def raw_answer(fw, csms, uid, limit_ms=5000):
    """The charger's answer (a Message) to our raw CALL with this unique id."""
    return until(fw, lambda: next(iter(csms.messages(cp=CP, unique_id=uid, direction="in")), None), limit_ms,
                 100, what="answer to %s" % uid)


def still_serving(fw, csms):
    """A well-formed CALL is still answered after whatever came before."""
    r = call(fw, csms, "GetConfiguration", {"key": ["HeartbeatInterval"]})
    assert r["configurationKey"][0]["key"] == "HeartbeatInterval"


def wait_registered_real(fw, timeout=15):
    """Real time: until the charger has its BootNotification accepted (a card
    presented before that would be judged offline)."""
    deadline = time.monotonic() + timeout
    while fw.status()["ocpp"]["state"] != "accepted":
        assert time.monotonic() < deadline, fw.status()["ocpp"]
        time.sleep(0.02)


def assert_charging(fw):
    st = fw.conn()
    assert st["contactor"] and st["session"] is not None and st["status"] == "Charging", st


# ---------------------------------------------------------------- frames we cannot answer

@pytest.mark.parametrize("frame", [
    '{"broken',                         # not JSON
    '[2,"u1","Reset",{"type":"Soft"}',  # not JSON: cut short
    '{"an":"object"}',                  # JSON, not an OCPP-J array
    '[]', '[2]', '"text"', '42',         # arrays too short, scalars
    '[7,"u2",{}]',                      # no such message type
    '[2,7,"Reset",{"type":"Soft"}]',    # unique id not a string
])
def test_frames_that_cannot_be_answered_are_dropped(csms, make_fw, frame):
    fw = boot(csms, make_fw)
    start_charging(fw, csms)
    mark = csms.mark()
    csms.send_raw_sync(CP, [frame] * 3)
    pump(fw, 2000)
    time.sleep(0.3)  # answers would travel in real time
    # no answer (there is no id to answer), no reconnect, nothing else
    assert [m for m in csms.messages(cp=CP, after=mark, direction="in")
            if m.type in ("CALLRESULT", "CALLERROR", "INVALID")] == []
    assert csms.events(cp=CP, type="DISCONNECT", after=mark) == []
    still_serving(fw, csms)
    assert_charging(fw)
    # counted in the log as dropped frames
    assert sum("dropped frame" in e["msg"] for e in fw.log()) >= 3


def test_repeated_invalid_frames_are_reported(csms, make_fw):
    # InvalidMessages: a flood of garbage is logged as an error (security log),
    # not only one warning per frame.
    fw = boot(csms, make_fw)
    csms.send_raw_sync(CP, ["garbage %d" % i for i in range(30)])
    pump(fw, 1000)
    time.sleep(0.2)
    pump(fw, 100)
    assert any(e["level"] >= 40 and "could not be answered" in e["msg"] for e in fw.log()), \
        "repeated invalid frames are an error (security event InvalidMessages)"
    pump(fw, 2000)
    events = [m.payload for m in csms.messages(cp=CP, action="SecurityEventNotification", direction="in")
              if m.payload["type"] == "InvalidMessages"]
    assert len(events) == 3, events  # one per 10
    still_serving(fw, csms)


# ---------------------------------------------------------------- CALLs with the wrong content

@pytest.mark.parametrize("frame, code", [
    ('[2,"w1","ChangeAvailability",{"connectorId":"1","type":"Operative"}]', "TypeConstraintViolation"),
    ('[2,"w2","UnlockConnector",{"connectorId":1.5}]', "TypeConstraintViolation"),
    ('[2,"w3","ChangeConfiguration",{"key":"HeartbeatInterval","value":60}]', "TypeConstraintViolation"),
    ('[2,"w4","RemoteStartTransaction",{"idTag":["T1"]}]', "TypeConstraintViolation"),
    ('[2,"w5","GetConfiguration",{"key":"HeartbeatInterval"}]', "TypeConstraintViolation"),
    ('[2,"m1","ChangeAvailability",{"connectorId":1}]', "OccurenceConstraintViolation"),
    ('[2,"m2","Reset",{}]', "OccurenceConstraintViolation"),
    ('[2,"m3","RemoteStopTransaction",{}]', "OccurenceConstraintViolation"),
    ('[2,"m4","ChangeConfiguration",{"key":"HeartbeatInterval"}]', "OccurenceConstraintViolation"),
    ('[2,"n1","FlyToTheMoon",{}]', "NotImplemented"),
    ('[2,"n2","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]', None),  # ours, not theirs
    ('[2,"e1","Reset",{"type":"Sideways"}]', "PropertyConstraintViolation"),
    ('[2,"e2","Reset",{"type":"Soft","when":"now"}]', "FormationViolation"),
    ('[2,"e3","Reset",[1,2]]', "FormationViolation"),
])
def test_bad_calls_get_the_specified_call_error(csms, make_fw, frame, code):
    fw = boot(csms, make_fw)
    start_charging(fw, csms)
    uid = json.loads(frame)[1]
    csms.send_raw_sync(CP, frame)
    m = raw_answer(fw, csms, uid)
    assert m.type == "CALLERROR", m.line()
    if code is None:  # a charge point action sent to the charge point: some CallError
        assert m.error_code in ("NotImplemented", "NotSupported", "ProtocolError"), m.line()
    else:
        assert m.error_code == code, m.line()
    assert m.error_details == {} or isinstance(m.error_details, dict)
    # the bad CALL changed nothing: no reset, no stop, still charging
    pump(fw, 2000)
    assert calls(csms, "StopTransaction") == []
    assert_charging(fw)
    still_serving(fw, csms)


def test_one_answer_per_call_and_a_replayed_id_is_refused(csms, make_fw):
    fw = boot(csms, make_fw)
    mark = csms.mark()
    csms.send_raw_sync(CP, ['[3,"nobody",{}]', '[4,"nobody","GenericError","",{}]',
                            '[2,"d1","GetConfiguration",{"key":["HeartbeatInterval"]}]',
                            '[2,"d1","GetConfiguration",{"key":["HeartbeatInterval"]}]'])
    until(fw, lambda: len([m for m in csms.messages(cp=CP, after=mark, direction="in") if m.unique_id == "d1"]) >= 2,
          5000, 100, what="two answers to d1")
    time.sleep(0.2)
    answers = [m for m in csms.messages(cp=CP, after=mark, direction="in") if m.unique_id == "d1"]
    # A message id is used once: the same id again is not executed again but
    # refused, and reported as a replay attempt.
    assert [m.type for m in answers] == ["CALLRESULT", "CALLERROR"]
    assert answers[1].error_code == "SecurityError"
    until(fw, lambda: any(m.payload["type"] == "AttemptedReplayAttacks" for m in csms.messages(
        cp=CP, action="SecurityEventNotification", direction="in")), 5000, 100, what="AttemptedReplayAttacks")
    assert [m for m in csms.messages(cp=CP, after=mark, direction="in") if m.unique_id == "nobody"] == []
    still_serving(fw, csms)


# ---------------------------------------------------------------- oversized

def test_oversized_frame_closes_with_1009_and_reconnects(csms, make_fw):
    fw = boot(csms, make_fw)
    start_charging(fw, csms)
    mark = csms.mark()
    big = '[2,"big","DataTransfer",{"vendorId":"x","data":"%s"}]' % ("A" * (MAX_FRAME + 100))
    csms.send_raw_sync(CP, big)
    until(fw, lambda: csms.events(cp=CP, type="DISCONNECT", after=mark), 10000, 100, what="disconnect")
    d = csms.events(cp=CP, type="DISCONNECT", after=mark)[0]
    assert d.payload["code"] == 1009, d.line()
    assert [m for m in csms.messages(cp=CP, after=mark, direction="in") if m.unique_id == "big"] == []
    # it comes back by itself, registers again, and the transaction goes on
    until(fw, lambda: calls(csms, "BootNotification", mark), 150000, 1000, what="reconnect")
    pump(fw, 2000)
    assert_charging(fw)
    assert calls(csms, "StopTransaction") == []
    still_serving(fw, csms)
    # a frame just under the limit is fine
    ok = '[2,"ok","DataTransfer",{"vendorId":"x","data":"%s"}]' % ("B" * (MAX_FRAME - 200))
    csms.send_raw_sync(CP, ok)
    assert raw_answer(fw, csms, "ok").type == "CALLRESULT"


# ---------------------------------------------------------------- a flood of CALLs

def test_flood_of_calls_answered_in_order_while_charging(csms, make_fw):
    fw = boot(csms, make_fw)
    tx = start_charging(fw, csms)
    frames = []
    for i in range(200):
        if i % 3 == 0:
            frames.append('[2,"f%d","GetConfiguration",{}]' % i)
        elif i % 3 == 1:
            frames.append('[2,"f%d","DataTransfer",{"vendorId":"flood","data":"%d"}]' % (i, i))
        else:
            frames.append('[2,"f%d","GetConfiguration",{"key":["MeterValueSampleInterval"]}]' % i)
    e0 = fw.conn()["energy_wh"]
    mark = csms.mark()
    csms.send_raw_sync(CP, frames)
    until(fw, lambda: len([m for m in csms.messages(cp=CP, after=mark, direction="in")
                           if m.unique_id and m.unique_id.startswith("f")]) >= 200, 30000, 200,
          what="200 answers")
    answers = [m for m in csms.messages(cp=CP, after=mark, direction="in") if m.unique_id and m.unique_id.startswith("f")]
    assert [m.unique_id for m in answers] == ["f%d" % i for i in range(200)], "one answer each, in order"
    assert all(m.type == "CALLRESULT" for m in answers)
    pump(fw, 5000)
    assert_charging(fw)
    assert fw.conn()["energy_wh"] > e0
    assert calls(csms, "StopTransaction") == []
    stop = fw.cmd("token", tag="CARD1")
    assert stop["ok"]
    until(fw, lambda: calls(csms, "StopTransaction"), what="StopTransaction")
    assert calls(csms, "StopTransaction")[0]["transactionId"] == tx


def test_flood_keeps_control_loop_on_time_real_time(make_csms, tmp_path):
    """Real time: the control loop's lateness while floods of 200 CALLs
    arrive every 100 ms for 2.5 s, and the session goes on."""
    csms = make_csms(ping_interval=None)
    fw = FirmwareProcess(tmp_path / "rt", sets=[csms_set(csms)], time_mode="real")
    fw.start()
    try:
        csms.wait_for_sync("BootNotification", cp=CP, timeout=15)
        wait_registered_real(fw)
        fw.cmd("plug", amps=32)
        fw.cmd("ev", state="C")
        fw.cmd("token", tag="CARD1")
        deadline = time.monotonic() + 10
        while not fw.conn()["contactor"]:
            assert time.monotonic() < deadline, fw.conn()
            time.sleep(0.05)
        time.sleep(1.0)
        before = fw.status()["lateness"]
        frames = ['[2,"g%d","GetConfiguration",{}]' % i for i in range(200)]
        mark = csms.mark()
        sent = 0
        t_end = time.monotonic() + 2.5
        samples = []
        while time.monotonic() < t_end:  # a batch of 200 every 100 ms
            t_batch = time.monotonic()
            csms.send_raw_sync(CP, [f.replace('"g', '"g%d-' % sent, 1) for f in frames])
            sent += len(frames)
            st = fw.conn()
            samples.append((st["contactor"], st["session"] is not None))
            time.sleep(max(0.0, 0.1 - (time.monotonic() - t_batch)))
        deadline = time.monotonic() + 20
        while len([m for m in csms.messages(cp=CP, after=mark, direction="in") if m.type == "CALLRESULT"]) < sent:
            assert time.monotonic() < deadline, "not every CALL answered"
            time.sleep(0.05)
        after = fw.status()
        late = after["lateness"]
        assert all(c and s for c, s in samples), "charging all through the flood"
        assert after["connectors"][0]["contactor"] and after["watchdog"] == "ok"
        assert late["n"] > before["n"] + 100
        # the control loop's budget: a 10 ms period, and a contactor must
        # open within 100 ms of a pilot change, so no run may ever be that late
        assert late["p99"] <= 20, late
        assert late["max"] < 100, late
        print("\nflood of %d CALLs: lateness %s (before %s)" % (sent, late, before))
    finally:
        fw.close()


# ---------------------------------------------------------------- a CSMS that never answers

RPC_TIMEOUT_S = 30  # firmware/ocpp/rpc.py


def test_csms_never_answers_rpc_times_out_and_messages_stay_queued(make_csms, tmp_path):
    """Real time (about 35 s): a held CALL stops simulated time from running
    past the RPC timeout (SimClock.hold), so only real time shows it."""
    csms = make_csms(ping_interval=None)
    fw = FirmwareProcess(tmp_path / "x", sets=[csms_set(csms)], time_mode="real")
    fw.start()
    try:
        csms.wait_for_sync("BootNotification", cp=CP, timeout=15)
        wait_registered_real(fw)
        fw.cmd("plug", amps=32)
        fw.cmd("ev", state="C")
        fw.cmd("token", tag="CARD1")
        csms.wait_for_sync("StartTransaction", cp=CP, timeout=10)
        time.sleep(1.0)
        assert fw.conn()["contactor"]
        csms.override("StopTransaction", NO_REPLY, times=1)
        mark = csms.mark()
        fw.cmd("token", tag="CARD1")  # stop: this StopTransaction is never answered
        first = csms.wait_for_sync("StopTransaction", cp=CP, after=mark, timeout=10)
        t_first = time.monotonic()
        time.sleep(2.0)
        st = fw.status()
        assert st["ocpp"]["queued"] >= 1, "kept until confirmed"
        assert not st["connectors"][0]["contactor"], "the charger's side of the stop does not wait for the CSMS"
        # no answer within the RPC timeout: the charger gives up waiting and
        # sends it again (on this link or the next); it never drops it
        again = csms.wait_for_sync("StopTransaction", cp=CP, after=first.seq, timeout=RPC_TIMEOUT_S + 20)
        waited = time.monotonic() - t_first
        assert again.payload == first.payload
        assert waited >= RPC_TIMEOUT_S - 1, "sent again after %.1f s, before the RPC timeout" % waited
        deadline = time.monotonic() + 10
        while fw.status()["ocpp"]["queued"]:
            assert time.monotonic() < deadline, fw.status()["ocpp"]
            time.sleep(0.1)
        assert len(results(csms, "StopTransaction")) == 1  # confirmed once, nothing lost, nothing extra
        assert fw.status()["watchdog"] == "ok"
        print("\nunanswered StopTransaction sent again after %.1f s" % waited)
    finally:
        fw.close()


# ---------------------------------------------------------------- answers of the wrong shape

def test_callresult_with_wrong_types_for_start_transaction(csms, make_fw):
    # A StartTransaction answered with a transactionId that is not an
    # integer: the charger refuses the answer (schema), keeps the message and
    # sends it again after TransactionMessageRetryInterval; not lost.
    fw = boot(csms, make_fw)
    assert call(fw, csms, "ChangeConfiguration", {"key": "TransactionMessageRetryInterval", "value": "5"}) == \
        {"status": "Accepted"}
    mark = csms.mark()
    csms.override("StartTransaction", Reply({"transactionId": "seven", "idTagInfo": {"status": "Accepted"}},
                                            validate=False), times=1)
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.cmd("token", tag="CARD1")
    until(fw, lambda: len(calls(csms, "StartTransaction", mark)) >= 2, 60000, 500, what="StartTransaction again")
    first, second = calls(csms, "StartTransaction", mark)[:2]
    assert first == second
    until(fw, lambda: fw.status()["ocpp"]["queued"] == 0, 30000, 500, what="queue drained")
    good = [r for r in results(csms, "StartTransaction", mark) if isinstance(r.get("transactionId"), int)]
    assert len(good) == 1
    assert_charging(fw)
    assert fw.status()["ocpp"]["txs"] == {"1": good[0]["transactionId"]}


def test_callresult_with_wrong_types_for_meter_values(csms, make_fw):
    # A MeterValues answer that is not even an object: sent again, not lost.
    fw = boot(csms, make_fw)
    assert call(fw, csms, "ChangeConfiguration", {"key": "TransactionMessageRetryInterval", "value": "5"}) == \
        {"status": "Accepted"}
    assert call(fw, csms, "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "30"}) == \
        {"status": "Accepted"}
    start_charging(fw, csms)
    mark = csms.mark()
    csms.override("MeterValues", Reply(raw=lambda uid: '[3,"%s",[1,2,3]]' % uid), times=1)
    until(fw, lambda: len(calls(csms, "MeterValues", mark)) >= 2, 60000, 500, what="MeterValues again")
    mvs = calls(csms, "MeterValues", mark)
    assert mvs[0] == mvs[1]
    assert_charging(fw)
    assert calls(csms, "StopTransaction") == []


def test_callresult_with_wrong_types_for_heartbeat_keeps_the_link(csms, make_fw):
    # A Heartbeat answered with a number for currentTime is a failed
    # heartbeat, not a reason to drop the link and boot again.
    fw = boot(csms, make_fw)
    assert call(fw, csms, "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "10"}) == {"status": "Accepted"}
    start_charging(fw, csms)
    mark = csms.mark()
    csms.override("Heartbeat", Reply(raw=lambda uid: '[3,"%s",{"currentTime":5}]' % uid), times=1)
    pump(fw, 60000, 1000)
    time.sleep(0.1)
    assert csms.events(cp=CP, type="DISCONNECT", after=mark) == [], "the link was dropped"
    assert calls(csms, "BootNotification", mark) == []
    assert len(calls(csms, "Heartbeat", mark)) >= 5, "heartbeats go on at the configured interval"
    assert_charging(fw)


def test_call_error_for_a_notification_keeps_the_link(csms, make_fw):
    # A CSMS that answers StatusNotification with a CALLERROR (some do, for a
    # status they do not like): the charger must not drop the link and boot
    # again, which it would then do forever (every boot reports the statuses).
    fw = boot(csms, make_fw)
    start_charging(fw, csms)
    mark = csms.mark()
    csms.override("StatusNotification", Reply(error="InternalError", description="not today"))
    fw.cmd("ev", state="B")  # SuspendedEV: a status to report
    pump(fw, 30000, 1000)
    time.sleep(0.1)
    boots = len(calls(csms, "BootNotification", mark))
    disconnects = len(csms.events(cp=CP, type="DISCONNECT", after=mark))
    csms.clear_overrides()
    assert boots == 0 and disconnects == 0, "%d boots, %d disconnects in 30 s" % (boots, disconnects)
    fw.cmd("ev", state="C")
    pump(fw, 5000)
    assert fw.conn()["contactor"]

"""Tests of the dev CSMS itself (tools/csms), driven by CPython OCPP 1.6 clients
made with the same `ocpp` package over `websockets`.

The CSMS runs in its own thread (the `csms` fixture); each test runs its
charge point side with asyncio.run() and reaches the CSMS through the *_sync
wrappers (in a worker thread when the client must keep serving meanwhile).
"""

import asyncio
import base64
import contextlib
import dataclasses
import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import websockets
from ocpp.charge_point import camel_to_snake_case
from ocpp.exceptions import InternalError, OCPPError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from csms_fixture import csms, make_csms  # noqa: F401  (fixtures)
from tools.csms import (CSMS_ACTIONS, CP_ACTIONS, NO_REPLY, CallErrorReceived, CsmsServer,
                        NotConnected, Reply)
from tools.csms.chargepoint import build_call

ROOT = Path(__file__).resolve().parents[1]
TS = "2025-06-01T12:00:00Z"


# ---------------------------------------------------------------- a charge point

class Client(ChargePoint):
    """A CPython charge point that answers a few CSMS actions."""

    @on("Reset")
    def on_reset(self, type, **kw):
        return call_result.Reset(status="Accepted" if type == "Soft" else "Rejected")

    @on("RemoteStartTransaction")
    def on_remote_start(self, id_tag, **kw):
        return call_result.RemoteStartTransaction(status="Accepted")

    @on("ChangeConfiguration")
    async def on_change_configuration(self, key, value, **kw):
        if key == "Slow":
            await asyncio.sleep(1)
        return call_result.ChangeConfiguration(status="Accepted")


@contextlib.asynccontextmanager
async def connect(csms, cp_id="CP1", timeout=5, **kw):
    kw.setdefault("subprotocols", ["ocpp1.6"])
    async with websockets.connect(csms.url(cp_id), open_timeout=5, **kw) as ws:
        cp = Client(cp_id, ws, response_timeout=timeout)
        task = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def run(coro):
    return asyncio.run(coro)


async def boot(cp):
    return await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))


def make_call(action, payload):
    """An ocpp.v16.call dataclass; fields the package wrongly requires are None."""
    cls = getattr(call, action)
    kw = {f.name: None for f in dataclasses.fields(cls)}
    kw.update(camel_to_snake_case(payload))
    return cls(**kw)


# Valid CALL payloads of every charge point initiated action.
CP_SAMPLES = {
    "Authorize": {"idTag": "T1"},
    "BootNotification": {"chargePointVendor": "V", "chargePointModel": "M"},
    "DataTransfer": {"vendorId": "dev", "messageId": "m", "data": "d"},
    "DiagnosticsStatusNotification": {"status": "Uploaded"},
    "FirmwareStatusNotification": {"status": "Downloaded"},
    "Heartbeat": {},
    "MeterValues": {"connectorId": 1, "transactionId": 1, "meterValue": [
        {"timestamp": TS, "sampledValue": [{"value": "1234", "measurand":
                                            "Energy.Active.Import.Register", "unit": "Wh"}]}]},
    "StartTransaction": {"connectorId": 1, "idTag": "T1", "meterStart": 0, "timestamp": TS},
    "StatusNotification": {"connectorId": 1, "errorCode": "NoError", "status": "Preparing"},
    "StopTransaction": {"meterStop": 1234, "timestamp": TS, "transactionId": 1, "idTag": "T1",
                        "reason": "Local"},
    "LogStatusNotification": {"status": "Uploaded", "requestId": 1},
    "SecurityEventNotification": {"type": "StartupOfTheDevice", "timestamp": TS},
    "SignCertificate": {"csr": "-----BEGIN CERTIFICATE REQUEST-----\nx\n"
                               "-----END CERTIFICATE REQUEST-----"},
    "SignedFirmwareStatusNotification": {"status": "Downloading", "requestId": 1},
}

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
HASH = {"hashAlgorithm": "SHA256", "issuerNameHash": "aa", "issuerKeyHash": "bb",
        "serialNumber": "01"}
SCHEDULE = {"duration": 3600, "chargingRateUnit": "A", "startSchedule": TS,
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0, "numberPhases": 3}]}

# (request, answer) of every CSMS initiated action.
CSMS_SAMPLES = {
    "CancelReservation": ({"reservationId": 1}, {"status": "Accepted"}),
    "ChangeAvailability": ({"connectorId": 1, "type": "Inoperative"}, {"status": "Scheduled"}),
    "ChangeConfiguration": ({"key": "HeartbeatInterval", "value": "60"}, {"status": "Accepted"}),
    "ClearCache": ({}, {"status": "Accepted"}),
    "ClearChargingProfile": ({"id": 1}, {"status": "Accepted"}),
    "DataTransfer": ({"vendorId": "dev", "data": "x"}, {"status": "Accepted", "data": "y"}),
    "GetCompositeSchedule": ({"connectorId": 1, "duration": 3600, "chargingRateUnit": "A"},
                             {"status": "Accepted", "connectorId": 1, "scheduleStart": TS,
                              "chargingSchedule": SCHEDULE}),
    "GetConfiguration": ({"key": ["HeartbeatInterval", "Nope"]},
                         {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False,
                                                "value": "60"}], "unknownKey": ["Nope"]}),
    "GetDiagnostics": ({"location": "http://127.0.0.1/upload/"}, {"fileName": "diag.tar"}),
    "GetLocalListVersion": ({}, {"listVersion": 3}),
    "RemoteStartTransaction": ({"idTag": "T1", "connectorId": 1, "chargingProfile": {
        "chargingProfileId": 2, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Relative", "chargingSchedule": SCHEDULE}},
        {"status": "Accepted"}),
    "RemoteStopTransaction": ({"transactionId": 1}, {"status": "Rejected"}),
    "ReserveNow": ({"connectorId": 1, "expiryDate": TS, "idTag": "T1", "reservationId": 1},
                   {"status": "Accepted"}),
    "Reset": ({"type": "Hard"}, {"status": "Accepted"}),
    "SendLocalList": ({"listVersion": 4, "updateType": "Full", "localAuthorizationList": [
        {"idTag": "T1", "idTagInfo": {"status": "Accepted"}}]}, {"status": "Accepted"}),
    "SetChargingProfile": ({"connectorId": 0, "csChargingProfiles": {
        "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "ChargePointMaxProfile",
        "chargingProfileKind": "Absolute", "chargingSchedule": SCHEDULE}}, {"status": "Accepted"}),
    "TriggerMessage": ({"requestedMessage": "Heartbeat"}, {"status": "Accepted"}),
    "UnlockConnector": ({"connectorId": 1}, {"status": "Unlocked"}),
    "UpdateFirmware": ({"location": "http://127.0.0.1/firmware/fw.bin", "retrieveDate": TS,
                        "retries": 2}, {}),
    "CertificateSigned": ({"certificateChain": PEM}, {"status": "Accepted"}),
    "DeleteCertificate": ({"certificateHashData": HASH}, {"status": "Accepted"}),
    "ExtendedTriggerMessage": ({"requestedMessage": "StatusNotification", "connectorId": 1},
                               {"status": "Accepted"}),
    "GetInstalledCertificateIds": ({"certificateType": "CentralSystemRootCertificate"},
                                   {"status": "Accepted", "certificateHashData": [HASH]}),
    "GetLog": ({"logType": "SecurityLog", "requestId": 1,
                "log": {"remoteLocation": "http://127.0.0.1/upload/"}},
               {"status": "Accepted", "filename": "security.log"}),
    "InstallCertificate": ({"certificateType": "ManufacturerRootCertificate",
                            "certificate": PEM}, {"status": "Accepted"}),
    "SignedUpdateFirmware": ({"requestId": 1, "retries": 1, "firmware": {
        "location": "http://127.0.0.1/firmware/fw.bin", "retrieveDateTime": TS,
        "signingCertificate": PEM, "signature": "c2ln"}}, {"status": "Accepted"}),
}


# ---------------------------------------------------------------- boot and answers

def test_boot_accepted_is_answered_and_remembered(csms):
    async def scenario():
        async with connect(csms) as cp:
            return await boot(cp)

    r = run(scenario())
    assert r.status == "Accepted" and r.interval == 300 and r.current_time.endswith("Z")
    info = csms.chargepoint("CP1")
    assert info["boot_status"] == "Accepted" and info["boot"]["chargePointVendor"] == "V"
    assert info["connections"] == 1


@pytest.mark.parametrize("status, interval", [("Pending", 7), ("Rejected", 7)])
def test_boot_pending_and_rejected_use_the_retry_interval(make_csms, status, interval):
    csms = make_csms(boot_status=status, boot_retry_interval=interval)

    async def scenario():
        async with connect(csms) as cp:
            first = await boot(cp)
            csms.configure(boot_status="Accepted", heartbeat_interval=60)
            return first, await boot(cp)

    first, second = run(scenario())
    assert (first.status, first.interval) == (status, interval)
    assert (second.status, second.interval) == ("Accepted", 60)


def test_every_charge_point_action_gets_a_schema_valid_answer(csms):
    async def scenario():
        async with connect(csms) as cp:
            out = {}
            for action, payload in CP_SAMPLES.items():
                req = make_call(action, payload)
                out[action] = await cp.call(req, suppress=False)  # validates the answer
            return out

    answers = run(scenario())
    assert set(answers) == set(CP_ACTIONS)
    assert answers["StartTransaction"].transaction_id == 1
    assert answers["SignCertificate"].status == "Accepted"
    assert answers["DataTransfer"].status == "Accepted"
    assert [m.action for m in csms.messages(direction="in")] == list(CP_SAMPLES)
    assert all(m.type == "CALLRESULT" for m in csms.messages(direction="out"))
    assert csms.chargepoint("CP1")["connectors"]["1"]["status"] == "Preparing"


def test_id_tags_and_transactions(make_csms):
    csms = make_csms(default_id_tag_status="Invalid",
                     id_tags={"GOOD": "Accepted", "KID": {"status": "Accepted",
                                                          "parent_id_tag": "FAMILY"}})
    csms.set_id_tag("BLOCK", "Blocked")
    csms.set_id_tag("OLD", "Expired", expiry_date="2020-01-01T00:00:00Z")

    async def scenario():
        async with connect(csms) as cp:
            auth = {}
            for tag in ("GOOD", "KID", "BLOCK", "OLD", "WHO"):
                auth[tag] = (await cp.call(call.Authorize(id_tag=tag))).id_tag_info
            t1 = await cp.call(call.StartTransaction(1, "GOOD", 100, TS))
            t2 = await cp.call(call.StartTransaction(2, "KID", 200, TS))
            stop = await cp.call(call.StopTransaction(1500, TS, t1.transaction_id, id_tag="GOOD",
                                                      reason="Local"))
            return auth, t1, t2, stop

    auth, t1, t2, stop = run(scenario())
    assert auth["GOOD"] == {"status": "Accepted"}
    assert auth["KID"] == {"status": "Accepted", "parent_id_tag": "FAMILY"}  # ocpp: snake_case
    assert auth["BLOCK"]["status"] == "Blocked"
    assert auth["OLD"] == {"status": "Expired", "expiry_date": "2020-01-01T00:00:00Z"}
    sent = csms.messages(action="Authorize", direction="out")[1]
    assert sent.payload == {"idTagInfo": {"status": "Accepted", "parentIdTag": "FAMILY"}}
    assert auth["WHO"]["status"] == "Invalid"
    assert (t1.transaction_id, t2.transaction_id) == (1, 2)
    assert stop.id_tag_info == {"status": "Accepted"}
    txs = {t["id"]: t for t in csms.transactions()}
    assert txs[1]["stop"]["meter_stop"] == 1500 and txs[1]["stop"]["reason"] == "Local"
    assert txs[2]["stop"] is None and txs[2]["connector_id"] == 2 and txs[2]["meter_start"] == 200


def test_overrides_script_delay_error_and_silence(csms):
    seen = []

    def start_tx(cp_id, payload):
        seen.append((cp_id, payload["idTag"]))
        if payload["idTag"] == "ODD":
            return {"transactionId": 777, "idTagInfo": {"status": "ConcurrentTx"}}
        return None  # the normal answer

    csms.override("BootNotification", {"status": "Rejected", "interval": 3}, times=1)
    csms.override("StartTransaction", start_tx)
    csms.override("DataTransfer", Reply(error="InternalError", description="scripted"))
    csms.override("Authorize", Reply(delay=0.5))
    csms.override("MeterValues", NO_REPLY, cp="CP1")

    async def scenario():
        async with connect(csms, timeout=1) as cp:
            b1, b2 = await boot(cp), await boot(cp)
            odd = await cp.call(call.StartTransaction(1, "ODD", 0, TS))
            normal = await cp.call(call.StartTransaction(1, "EVEN", 0, TS))
            with pytest.raises(InternalError):
                await cp.call(call.DataTransfer(vendor_id="x"), suppress=False)
            t0 = time.monotonic()
            await cp.call(call.Authorize(id_tag="T"))
            delay = time.monotonic() - t0
            with pytest.raises(asyncio.TimeoutError):
                await cp.call(make_call("MeterValues", CP_SAMPLES["MeterValues"]))
            hb = await cp.call(call.Heartbeat())  # the silence holds nothing up
            return b1, b2, odd, normal, delay, hb

    b1, b2, odd, normal, delay, hb = run(scenario())
    assert (b1.status, b1.interval) == ("Rejected", 3) and b1.current_time  # filled in
    assert b2.status == "Accepted"  # times=1 used up
    assert odd.transaction_id == 777 and odd.id_tag_info["status"] == "ConcurrentTx"
    assert normal.transaction_id == 778  # the counter follows scripted ids
    assert seen == [("CP1", "ODD"), ("CP1", "EVEN")]
    assert 0.45 <= delay < 3
    assert hb.current_time
    err = csms.messages(action="DataTransfer", direction="out")[0]
    assert (err.type, err.error_code, err.error_description) == ("CALLERROR", "InternalError",
                                                                 "scripted")
    assert csms.messages(action="MeterValues", direction="out") == []


def test_date_times_are_checked_both_ways(csms):
    async def scenario():
        async with connect(csms) as cp:
            errors = []
            for ts in ("yesterday", "2025-06-01T12:00:00", "2025-13-01T12:00:00Z"):
                with pytest.raises(OCPPError) as e:
                    await cp.call(call.StartTransaction(1, "T1", 0, ts), suppress=False)
                errors.append(e.value.code)
            ok = await cp.call(call.StartTransaction(1, "T1", 0, "2025-06-01T14:00:00.5+02:00"))
            with pytest.raises(OCPPError):  # and what the CSMS sends
                await asyncio.to_thread(csms.call_sync, "CP1", "ReserveNow", {
                    "connectorId": 1, "expiryDate": "tomorrow", "idTag": "T", "reservationId": 1})
            return errors, ok

    errors, ok = run(scenario())
    assert errors == ["FormatViolation"] * 3
    assert ok.transaction_id == 1
    assert csms.messages(action="ReserveNow") == []


def test_unchecked_and_raw_answers_for_hostile_tests(csms):
    """What a strict charge point must reject: answers that break the schema."""
    csms.override("BootNotification", Reply({"status": "Accepted", "interval": "soon",
                                             "currentTime": TS}, validate=False), times=1)
    csms.override("Heartbeat", Reply(raw=lambda uid: '[3,"%s",{"currentTime":5}' % uid), times=1)
    csms.override("Authorize", Reply(raw='[4,"other-id","GenericError","",{}]'), times=1)

    async def scenario():
        async with websockets.connect(csms.url("CP1"), subprotocols=["ocpp1.6"]) as ws:
            got = []
            for uid, action, payload in [("b", "BootNotification", CP_SAMPLES["BootNotification"]),
                                         ("h", "Heartbeat", {}), ("a", "Authorize", {"idTag": "T"}),
                                         ("h2", "Heartbeat", {})]:
                await ws.send(json.dumps([2, uid, action, payload]))
                got.append(await asyncio.wait_for(ws.recv(), 5))
            return got

    boot_, hb, auth, hb2 = run(scenario())
    assert json.loads(boot_) == [3, "b", {"status": "Accepted", "interval": "soon",
                                          "currentTime": TS}]
    assert hb == '[3,"h",{"currentTime":5}'  # not even JSON
    assert auth == '[4,"other-id","GenericError","",{}]'
    assert json.loads(hb2)[0] == 3  # times=1: back to normal
    out = csms.messages(direction="out")
    assert [m.raw_send for m in out] == [True, True, True, False]
    assert out[0].action == "BootNotification" and out[1].type == "INVALID"


def test_async_api_on_the_callers_loop(tmp_path):
    async def scenario():
        async with CsmsServer(port=0, data_dir=tmp_path) as csms:
            async with connect(csms) as cp:
                waiter = asyncio.create_task(csms.wait_for("Heartbeat", cp="CP1", timeout=5))
                await cp.call(call.Heartbeat())
                m = await waiter
                res = await csms.call("CP1", "Reset", {"type": "Soft"})
                await csms.send_raw("CP1", '[2,"r1","Reset",{"type":"Hard"}]')
                raw = await csms.wait_for(unique_id="r1", timeout=5)
                with pytest.raises(RuntimeError):  # *_sync on the CSMS's own loop
                    csms.call_sync("CP1", "Reset", {"type": "Soft"})
                await csms.go_offline()
                await asyncio.wait_for(cp._connection.wait_closed(), 5)
                await csms.go_online()
            return m, res, raw

    m, res, raw = run(scenario())
    assert m.action == "Heartbeat" and res == {"status": "Accepted"}
    assert raw.type == "CALLRESULT" and raw.payload == {"status": "Rejected"}


# ---------------------------------------------------------------- recording

def test_messages_are_recorded_in_order_with_everything(csms):
    mark = csms.mark()

    async def scenario():
        async with connect(csms) as cp:
            await boot(cp)
            await cp.call(call.StatusNotification(0, "NoError", "Available"))
            await asyncio.to_thread(csms.call_sync, "CP1", "Reset", {"type": "Soft"})
            await cp.call(call.Heartbeat())

    t0 = time.time()
    run(scenario())
    msgs = csms.messages(cp="CP1", after=mark)
    got = [(m.direction, m.type, m.action) for m in msgs]
    assert got == [("in", "CALL", "BootNotification"), ("out", "CALLRESULT", "BootNotification"),
                   ("in", "CALL", "StatusNotification"),
                   ("out", "CALLRESULT", "StatusNotification"),
                   ("out", "CALL", "Reset"), ("in", "CALLRESULT", "Reset"),
                   ("in", "CALL", "Heartbeat"), ("out", "CALLRESULT", "Heartbeat")]
    assert [m.seq for m in msgs] == sorted(m.seq for m in msgs)
    assert all(t0 - 1 < m.time < time.time() + 1 for m in msgs)
    assert msgs[0].unique_id == msgs[1].unique_id and msgs[4].unique_id == msgs[5].unique_id
    assert msgs[4].payload == {"type": "Soft"} and msgs[5].payload == {"status": "Accepted"}
    assert msgs[0].to_dict()["iso"].endswith("Z") and "BootNotification.req" in msgs[0].line()
    assert csms.messages(action="StatusNotification", direction="in")[0].payload["status"] == \
        "Available"
    # waiting: history counts, after= only newer, a timeout raises
    assert csms.wait_for_sync("Heartbeat", cp="CP1").seq == msgs[6].seq
    with pytest.raises(TimeoutError):
        csms.wait_for_sync("Heartbeat", cp="CP1", after=msgs[6].seq, timeout=0.2)
    csms.wait_disconnected_sync("CP1")
    kinds = [e.type for e in csms.events(cp="CP1")]
    assert kinds == ["CONNECT", "DISCONNECT"]


def test_wait_for_sees_a_message_that_arrives_later(csms):
    async def scenario():
        async with connect(csms) as cp:
            await asyncio.sleep(0.3)
            await cp.call(call.Heartbeat())
            await asyncio.sleep(0.2)

    async def both():
        waiter = asyncio.to_thread(csms.wait_for_sync, "Heartbeat", cp="CP1", timeout=5)
        m, _ = await asyncio.gather(waiter, scenario())
        return m

    m = run(both())
    assert m.action == "Heartbeat" and m.direction == "in"


# ---------------------------------------------------------------- CSMS-initiated calls

def test_csms_call_result_error_timeout_and_checks(csms):
    async def scenario():
        async with connect(csms) as cp:
            await boot(cp)
            res = await asyncio.to_thread(csms.call_sync, "CP1", "RemoteStartTransaction",
                                          {"idTag": "T1", "connectorId": 1})
            # the client has no ClearCache handler: a CALLERROR
            with pytest.raises(CallErrorReceived) as err:
                await asyncio.to_thread(csms.call_sync, "CP1", "ClearCache", {})
            with pytest.raises(TimeoutError):
                await asyncio.to_thread(csms.call_sync, "CP1", "ChangeConfiguration",
                                        {"key": "Slow", "value": "1"}, timeout=0.3)
            # an ocpp.v16.call dataclass does too
            res2 = await asyncio.to_thread(csms.call_sync, "CP1", call.Reset(type="Hard"))
            return res, err.value, res2

    res, err, res2 = run(scenario())
    assert res == {"status": "Accepted"} and res2 == {"status": "Rejected"}
    assert err.code == "NotImplemented" and err.message.type == "CALLERROR"
    with pytest.raises(ValueError):  # not a CSMS action / unknown field
        build_call("BootNotification", {})
    with pytest.raises(ValueError):
        build_call("Reset", {"type": "Soft", "when": "now"})
    with pytest.raises(NotConnected):
        csms.call_sync("CP1", "Reset", {"type": "Soft"})


def test_schema_is_checked_before_sending(csms):
    async def scenario():
        async with connect(csms) as cp:
            with pytest.raises(OCPPError):
                await asyncio.to_thread(csms.call_sync, "CP1", "Reset", {"type": "Sideways"})
            n = len(csms.messages(direction="out"))
            # validate=False lets a bad payload through; the client's own
            # validation answers with a CALLERROR
            with pytest.raises(CallErrorReceived) as err:
                await asyncio.to_thread(csms.call_sync, "CP1", "Reset", {"type": "Sideways"},
                                        validate=False)
            return n, err.value

    n, err = run(scenario())
    assert n == 0
    assert err.code in ("FormatViolation", "FormationViolation", "PropertyConstraintViolation")


def test_every_csms_action_round_trips_with_schema_checks(csms):
    """A raw charge point answers each CSMS action with a valid confirmation."""
    answers = {a: resp for a, (_, resp) in CSMS_SAMPLES.items()}

    async def raw_cp(ws):
        async for frame in ws:
            msg = json.loads(frame)
            if msg[0] == 2:
                await ws.send(json.dumps([3, msg[1], answers[msg[2]]]))

    async def scenario():
        async with websockets.connect(csms.url("RAW1"), subprotocols=["ocpp1.6"]) as ws:
            task = asyncio.create_task(raw_cp(ws))
            results = {}
            for action, (req, _) in CSMS_SAMPLES.items():
                results[action] = await asyncio.to_thread(csms.call_sync, "RAW1", action, req)
            task.cancel()
            return results

    results = run(scenario())
    assert set(results) == set(CSMS_ACTIONS)
    for action, (_, resp) in CSMS_SAMPLES.items():
        assert results[action] == resp, action
    sent = csms.messages(cp="RAW1", direction="out", action="SetChargingProfile")[0]
    assert sent.payload["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0][
        "limit"] == 16.0


# ---------------------------------------------------------------- connections

def test_basic_auth_accepts_the_right_password_and_refuses_others(make_csms):
    csms = make_csms(passwords={"CP1": "s3cret:pw"})

    def auth(user, pw):
        return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode())
                .decode()}

    async def status(cp_id, headers):
        try:
            async with connect(csms, cp_id, additional_headers=headers) as cp:
                await boot(cp)
                return 101
        except InvalidStatus as e:
            return e.response.status_code

    assert run(status("CP1", auth("CP1", "s3cret:pw"))) == 101
    assert run(status("CP1", auth("CP1", "wrong"))) == 401
    assert run(status("CP1", auth("CP2", "s3cret:pw"))) == 401  # user must be the id
    assert run(status("CP1", {})) == 401
    assert run(status("CP9", {})) == 101  # no password set for CP9
    csms.auth_required = True
    assert run(status("CP9", {})) == 401
    csms.set_password("CP9", "x")
    assert run(status("CP9", auth("CP9", "x"))) == 101
    refused = csms.events(type="REFUSED")
    assert [e.cp for e in refused] == ["CP1", "CP1", "CP1", "CP9"]
    assert refused[0].payload["reason"] == "bad credentials"
    assert refused[2].payload["reason"] == "no credentials"


@pytest.mark.parametrize("offered", [["ocpp2.0.1"], None])
def test_connection_without_ocpp16_is_closed(csms, offered):
    async def scenario():
        async with websockets.connect(csms.url("CP1"), subprotocols=offered) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return ws.subprotocol, closed.value.rcvd.code

    subprotocol, code = run(scenario())
    assert subprotocol is None and code == 1002
    assert csms.events(cp="CP1")[-1].type == "REFUSED"
    assert not csms.connected("CP1")


def test_a_new_connection_replaces_the_old_one(csms):
    async def scenario():
        async with connect(csms) as first:
            await boot(first)
            async with connect(csms) as second:
                await boot(second)
                await asyncio.sleep(0.1)
                return first._connection.state.name, csms.chargepoint("CP1")["connections"]

    state, conns = run(scenario())
    assert state == "CLOSED" and conns == 2


def test_offline_drops_and_refuses_then_online_accepts(csms):
    async def scenario():
        async with connect(csms) as cp:
            await boot(cp)
            await asyncio.to_thread(csms.go_offline_sync)
            await asyncio.wait_for(cp._connection.wait_closed(), 5)
        with pytest.raises(OSError):  # connection refused
            async with connect(csms):
                pass
        await asyncio.to_thread(csms.go_online_sync)
        async with connect(csms) as cp:
            hb = await cp.call(call.Heartbeat())
        await asyncio.to_thread(csms.wait_disconnected_sync, "CP1")
        # reject mode: the handshake gets a 503; timed offline comes back alone
        await asyncio.to_thread(csms.go_offline_sync, 0.5, "reject")
        with pytest.raises(InvalidStatus) as rejected:
            async with connect(csms):
                pass
        await asyncio.sleep(0.8)
        async with connect(csms) as cp:
            await boot(cp)
        await asyncio.to_thread(csms.wait_disconnected_sync, "CP1")
        return hb, rejected.value.response.status_code

    hb, code = run(scenario())
    assert hb.current_time and code == 503
    kinds = [(e.cp, e.type) for e in csms.events()]
    assert kinds == [("CP1", "CONNECT"), ("*", "OFFLINE"), ("CP1", "DISCONNECT"), ("*", "ONLINE"),
                     ("CP1", "CONNECT"), ("CP1", "DISCONNECT"), ("*", "OFFLINE"),
                     ("CP1", "REFUSED"), ("*", "ONLINE"), ("CP1", "CONNECT"),
                     ("CP1", "DISCONNECT")]
    assert not csms.offline


# ---------------------------------------------------------------- hostile frames

def test_raw_frames_go_out_as_given_and_answers_are_matched(csms):
    async def scenario():
        async with connect(csms) as cp:
            await boot(cp)
            frames = ["this is not json", '[2,"u1","Reset",{"type":5}]',
                      '[2,"u2","FlyToTheMoon",{}]', '{"not":"a list"}']
            await asyncio.to_thread(csms.send_raw_sync, "CP1", frames)
            flood = ['[2,"f%d","Reset",{"type":"Soft"}]' % i for i in range(50)]
            await asyncio.to_thread(csms.send_raw_sync, "CP1", flood)
            bad = await asyncio.to_thread(csms.wait_for_sync, unique_id="u1", timeout=5)
            unknown = await asyncio.to_thread(csms.wait_for_sync, unique_id="u2", timeout=5)
            last = await asyncio.to_thread(csms.wait_for_sync, unique_id="f49", timeout=5)
            return bad, unknown, last

    bad, unknown, last = run(scenario())
    assert bad.type == "CALLERROR" and bad.action == "Reset"
    assert bad.error_code in ("TypeConstraintViolation", "FormatViolation")
    assert unknown.type == "CALLERROR" and unknown.error_code == "NotSupported"
    assert last.type == "CALLRESULT" and last.action == "Reset"
    out = csms.messages(direction="out", predicate=lambda m: m.raw_send)
    assert out[0].type == "INVALID" and out[0].raw == "this is not json"
    assert len(out) == 54


def test_a_misbehaving_charge_point_does_not_hurt_the_csms(make_csms):
    csms = make_csms(max_size=4096)

    async def scenario():
        async with websockets.connect(csms.url("BAD"), subprotocols=["ocpp1.6"]) as ws:
            for frame in ["garbage", "[]", "[2]", '[2,"a","FlyToTheMoon",{}]',
                          '[2,"b","BootNotification",{"chargePointVendor":5}]',
                          '[2,"c","BootNotification",{"chargePointVendor":"V"}]',
                          '[2,"d","Reset",{"type":"Soft"}]', '[3,"nobody",{}]',
                          '[4,"nobody","X","y",{}]', b"\x00\xffbinary",
                          '[2,["weird"],"Heartbeat",{}]', '[7,"x",{}]']:
                await ws.send(frame)
            await ws.send('[2,"hb","Heartbeat",{}]')
            answers = {}
            while "hb" not in answers:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                answers[msg[1] if isinstance(msg[1], str) else "list"] = msg
            await ws.send("x" * 10000)  # oversized: the CSMS closes with 1009
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        async with connect(csms, "GOOD") as cp:  # still serving
            hb = await cp.call(call.Heartbeat())
        return answers, closed.value.sent.code if closed.value.sent else None, hb

    answers, code, hb = run(scenario())
    assert answers["a"][2] == "NotSupported"
    assert answers["b"][0] == 4 and answers["c"][0] == 4  # wrong type, missing field
    assert answers["d"][2] == "NotImplemented"  # a CSMS action sent by a charge point
    assert answers["hb"][0] == 3
    assert code == 1009
    assert hb.current_time
    assert any(m.type == "INVALID" for m in csms.messages(cp="BAD", direction="in"))


# ---------------------------------------------------------------- files over HTTP

def _http(csms, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", csms.http_port, timeout=5)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), data


def test_firmware_download_with_ranges(csms):
    data = bytes(range(256)) * 40  # 10240 bytes
    csms.files.add_firmware("fw-1.2.bin", data)
    assert csms.file_url("fw-1.2.bin").endswith("/firmware/fw-1.2.bin")
    status, h, body = _http(csms, "GET", "/firmware/fw-1.2.bin")
    assert status == 200 and body == data and h["Accept-Ranges"] == "bytes"
    status, h, body = _http(csms, "GET", "/firmware/fw-1.2.bin", headers={"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200] and h["Content-Range"] == "bytes 100-199/10240"
    status, h, body = _http(csms, "GET", "/firmware/fw-1.2.bin", headers={"Range": "bytes=10000-"})
    assert status == 206 and body == data[10000:]
    status, h, body = _http(csms, "GET", "/firmware/fw-1.2.bin", headers={"Range": "bytes=-10"})
    assert status == 206 and body == data[-10:]
    status, h, _ = _http(csms, "GET", "/firmware/fw-1.2.bin", headers={"Range": "bytes=20000-"})
    assert status == 416 and h["Content-Range"] == "bytes */10240"
    status, h, body = _http(csms, "HEAD", "/firmware/fw-1.2.bin")
    assert status == 200 and h["Content-Length"] == "10240" and body == b""
    assert _http(csms, "GET", "/firmware/nope.bin")[0] == 404
    assert _http(csms, "GET", "/firmware/../csms_fixture.py")[0] == 404
    # a download cut short, then resumed from where it stopped
    csms.files.drop_after = 4000
    conn = http.client.HTTPConnection("127.0.0.1", csms.http_port, timeout=5)
    conn.request("GET", "/firmware/fw-1.2.bin")
    r = conn.getresponse()
    with pytest.raises(http.client.IncompleteRead) as cut:
        r.read()
    got = cut.value.partial
    csms.files.drop_after = None
    status, _, rest = _http(csms, "GET", "/firmware/fw-1.2.bin",
                            headers={"Range": "bytes=%d-" % len(got)})
    assert status == 206 and got + rest == data
    csms.files.download_status = 503
    assert _http(csms, "GET", "/firmware/fw-1.2.bin")[0] == 503
    c = csms.files.counters
    assert c["range_requests"] == 4 and c["not_found"] == 2 and c["dropped"] == 1
    assert c["downloads_complete"] >= 5


def test_uploads_put_post_and_multipart(csms):
    assert _http(csms, "PUT", "/upload/diag-1.tar", b"\x00\x01tar")[0] == 201
    assert _http(csms, "POST", "/upload/raw.log", b"log line\n",
                 {"Content-Type": "text/plain"})[0] == 200
    boundary = "----xyz"
    content = b"\r\n--not-the-boundary\r\n\xff binary \r\n"
    body = (("--%s\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
             "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"diag 2.tar.gz\"\r\n"
             "Content-Type: application/gzip\r\n\r\n" % (boundary, boundary)).encode()
            + content + ("\r\n--%s--\r\n" % boundary).encode())
    status, _, resp = _http(csms, "POST", "/upload/", body,
                            {"Content-Type": "multipart/form-data; boundary=" + boundary})
    assert status == 200 and json.loads(resp)["stored"] == "diag_2.tar.gz"
    up = csms.files.upload_dir
    assert (up / "diag-1.tar").read_bytes() == b"\x00\x01tar"
    assert (up / "raw.log").read_bytes() == b"log line\n"
    assert (up / "diag_2.tar.gz").read_bytes() == content
    assert csms.files.wait_for_upload("diag_2.tar.gz", timeout=1)["size"] == len(content)
    csms.files.upload_status = 500
    assert _http(csms, "PUT", "/upload/x", b"x")[0] == 500
    c = csms.files.counters
    assert c["uploads"] == 3 and c["upload_requests"] == 4
    assert c["upload_bytes"] == 5 + 9 + len(content)
    # curl-style Expect: 100-continue and chunked bodies work too
    conn = http.client.HTTPConnection("127.0.0.1", csms.http_port, timeout=5)
    csms.files.upload_status = None
    conn.request("PUT", "/upload/chunked.bin", body=iter([b"ab", b"cd"]),
                 headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
    assert conn.getresponse().status == 201
    assert (up / "chunked.bin").read_bytes() == b"abcd"


# ---------------------------------------------------------------- admin

def _api(csms, method, path, obj=None):
    body = None if obj is None else json.dumps(obj).encode()
    status, _, data = _http(csms, method, "/api" + path, body,
                            {"Content-Type": "application/json"})
    return status, json.loads(data)


def test_admin_http_api(csms):
    async def scenario():
        async with connect(csms) as cp:
            await boot(cp)
            ok = await asyncio.to_thread(_api, csms, "POST", "/call/CP1/Reset", {"type": "Soft"})
            err = await asyncio.to_thread(_api, csms, "POST", "/call/CP1/ClearCache", {})
            bad = await asyncio.to_thread(_api, csms, "POST", "/call/CP1/Reset", {"type": 1})
            cps = await asyncio.to_thread(_api, csms, "GET", "/chargepoints")
            return ok, err, bad, cps

    ok, err, bad, cps = run(scenario())
    assert ok == (200, {"ok": True, "result": {"status": "Accepted"}})
    assert err[0] == 200 and err[1]["error"]["code"] == "NotImplemented"
    assert bad[0] == 400 and not bad[1]["ok"]
    assert cps[1]["chargepoints"][0]["id"] == "CP1" and cps[1]["chargepoints"][0]["connected"]
    assert _api(csms, "POST", "/call/CP1/Reset", {"type": "Soft"})[0] == 404  # gone
    status, msgs = _api(csms, "GET", "/messages?cp=CP1&action=Reset")
    # the schema-invalid Reset never went out
    assert status == 200 and [m["type"] for m in msgs["messages"]] == ["CALL", "CALLRESULT"]
    assert _api(csms, "POST", "/config", {"boot_status": "Pending"})[0] == 200
    assert csms.backoffice.boot_status == "Pending"
    assert _api(csms, "POST", "/config", {"nonsense": 1})[0] == 400
    assert _api(csms, "GET", "/nope")[0] == 404
    assert "actions" in _api(csms, "GET", "")[1]
    status, _, _ = _http(csms, "POST", "/api/call/CP1/Reset", b"{not json")
    assert status == 400


# ---------------------------------------------------------------- TLS

def test_tls_with_and_without_client_certificates(make_csms, tmp_path):
    from tools.csms.tls import make_test_pki
    pki = make_test_pki(tmp_path / "pki", clients=("CP1",))
    plain = make_csms(tls_cert=pki["server_cert"], tls_key=pki["server_key"], http_tls=True)
    mutual = make_csms(tls_cert=pki["server_cert"], tls_key=pki["server_key"],
                       tls_client_ca=pki["ca"])
    assert plain.url("CP1").startswith("wss://")

    def client_ctx(cert=None):
        ctx = ssl.create_default_context(cafile=pki["ca"])
        if cert:
            ctx.load_cert_chain(*cert)
        return ctx

    async def scenario():
        async with connect(plain, ssl=client_ctx()) as cp:
            r1 = await boot(cp)
        # without a client certificate: TLS 1.3 reports it after the handshake
        with pytest.raises((ssl.SSLError, OSError, ConnectionClosed, InvalidMessage)):
            async with connect(mutual, ssl=client_ctx()) as cp:
                await boot(cp)
        async with connect(mutual, ssl=client_ctx(pki["clients"]["CP1"])) as cp:
            r2 = await boot(cp)
        with pytest.raises(ssl.SSLError):  # a client that doesn't trust the CA
            async with connect(plain, ssl=ssl.create_default_context()):
                pass
        return r1, r2

    r1, r2 = run(scenario())
    assert r1.status == r2.status == "Accepted"
    assert mutual.chargepoint("CP1")["tls_peer"]["commonName"] == "CP1"
    plain.files.add_firmware("f.bin", b"tls")
    with urllib.request.urlopen(plain.file_url("f.bin"), context=client_ctx()) as r:
        assert r.read() == b"tls"


# ---------------------------------------------------------------- command line

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_command_line_back_office(tmp_path):
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.csms", "--port", "0", "--http-port", "0", "--stdin",
         "--data-dir", str(tmp_path / "data"), "--ready-file", str(ready),
         "--password", "CP1=pw", "--id-tag", "BAD=Blocked"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        deadline = time.monotonic() + 20
        while not (ready.exists() and ready.stat().st_size) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        ports = json.loads(ready.read_text())

        class Remote:  # just enough of CsmsServer for connect() and _api()
            http_port = ports["http_port"]

            @staticmethod
            def url(cp_id):
                return "ws://127.0.0.1:%d/%s" % (ports["port"], cp_id)

        hdr = {"Authorization": "Basic " + base64.b64encode(b"CP1:pw").decode()}

        async def scenario():
            async with connect(Remote, additional_headers=hdr) as cp:
                await boot(cp)
                auth = await cp.call(call.Authorize(id_tag="BAD"))
                res = await asyncio.to_thread(_api, Remote, "POST", "/call/CP1/Reset",
                                              {"type": "Soft"})
                proc.stdin.write('call CP1 Reset {"type":"Hard"}\ncps\n')
                proc.stdin.flush()
                await asyncio.sleep(1.0)
                return auth, res

        auth, res = run(scenario())
        assert auth.id_tag_info["status"] == "Blocked"
        assert res == (200, {"ok": True, "result": {"status": "Accepted"}})
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "CP1 <- BootNotification.req" in out
    assert "CP1 -> Reset.req {\"type\":\"Soft\"}" in out
    assert '{"ok": true, "result": {"status": "Rejected"}}' in out  # the stdin call
    assert "CP1 connected boot=Accepted V/M" in out


def test_command_line_runs_without_a_terminal(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.csms", "--port", str(port), "--http-port", "-1",
         "--data-dir", str(tmp_path / "data"), "--quiet"],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read()
                time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None  # stdin at EOF does not end it
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "dev CSMS: OCPP 1.6J on ws://127.0.0.1:%d/<chargePointId>" % port in out


# ---------------------------------------------------------------- the back-office engineer's first hour

def test_transaction_ids_continue_across_runs_in_one_data_dir(tmp_path):
    # Ids restart at 1 in every run would repeat in the same csms.log.
    async def one_session(csms):
        async with connect(csms) as cp:
            return (await cp.call(call.StartTransaction(1, "T1", 0, TS))).transaction_id

    got = []
    for _ in range(2):
        csms = CsmsServer(port=0, http_port=0, data_dir=tmp_path / "csms").start()
        try:
            got.append(run(one_session(csms)))
            got.append(run(one_session(csms)))
        finally:
            csms.stop()
    assert got == [1, 2, 3, 4]
    # a fresh data directory starts again at 1
    csms = CsmsServer(port=0, http_port=0, data_dir=tmp_path / "other").start()
    try:
        assert run(one_session(csms)) == 1
    finally:
        csms.stop()


def test_the_http_root_is_an_index_of_the_admin_api(csms):
    status, h, body = _http(csms, "GET", "/")
    assert status == 200 and h["Content-Type"].startswith("text/plain")
    page = body.decode()
    base = "http://127.0.0.1:%d" % csms.http_port
    for route in ("/api/chargepoints", "/api/messages", "/api/call/<cp>/<Action>", "/api/config"):
        assert route in page
    # examples with this server's address, that work as written
    assert "curl -X POST -d '{\"type\":\"Soft\"}' %s/api/call/" % base in page
    assert "curl %s/api/chargepoints" % base in page
    assert _http(csms, "GET", "/api/chargepoints")[0] == 200


def test_a_second_upload_of_the_same_name_keeps_both(csms):
    assert _http(csms, "PUT", "/upload/diag.tar.gz", b"first")[0] == 201
    status, _, resp = _http(csms, "PUT", "/upload/diag.tar.gz", b"second")
    answer = json.loads(resp)
    assert status == 201 and answer["stored"] == "diag-2.tar.gz"
    assert "kept both" in answer["note"]
    up = csms.files.upload_dir
    assert (up / "diag.tar.gz").read_bytes() == b"first"
    assert (up / "diag-2.tar.gz").read_bytes() == b"second"
    assert csms.files.uploads[-1]["renamed_from"] == "diag.tar.gz"

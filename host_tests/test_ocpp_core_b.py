"""OCA compliance test cases (OCPP 1.6 charge point, OCTT) for unlock,
configuration, power failure, connection loss, offline transactions, faults
and availability: the firmware on the Unix port against the dev CSMS, which
checks every message against the official schemas.

Each test is named after its test case (test_tc_<number>_...); the table in
host_tests/COMPLIANCE.md maps them. Where the firmware
does not (yet) behave as OCPP 1.6 says, the test asserts what the
specification asks for.
"""
import pytest

from ocpp_b import (CP, boot, call, calls, configure, drain, get_config, go_offline, last_status,
                    meter_of, pump, results, start_charging, status_notes, statuses, tx_calls, until,
                    wait_connected, wait_status)


def stop_by_token(fw, csms, tag="CARD1", mark=None):
    fw.cmd("token", tag=tag)
    until(fw, lambda: calls(csms, "StopTransaction", mark), what="StopTransaction")
    return calls(csms, "StopTransaction", mark)[-1]


# ---------------------------------------------------------------- unlock connector

def test_tc_017_1_unlock_connector_no_session_not_fixed_cable(csms, make_fw):
    fw = boot(csms, make_fw)
    assert call(fw, csms, "UnlockConnector", {"connectorId": 1}) == {"status": "Unlocked"}
    # an EV plugged in without a transaction: nothing holds the lock either
    fw.cmd("plug", amps=32)
    pump(fw, 1000)
    assert call(fw, csms, "UnlockConnector", {"connectorId": 1}) == {"status": "Unlocked"}
    assert fw.conn()["locked"] is False
    assert calls(csms, "StopTransaction") == []


def test_tc_017_2_unlock_connector_no_session_fixed_cable(csms, make_fw):
    fw = boot(csms, make_fw, sets=["cable_a=32"])
    assert call(fw, csms, "UnlockConnector", {"connectorId": 1}) == {"status": "NotSupported"}


def test_tc_018_1_unlock_connector_with_session_not_fixed_cable(csms, make_fw):
    fw = boot(csms, make_fw)
    tx = start_charging(fw, csms)
    assert fw.conn()["locked"] is True
    mark = csms.mark()
    assert call(fw, csms, "UnlockConnector", {"connectorId": 1}, timeout=10) == {"status": "Unlocked"}
    until(fw, lambda: calls(csms, "StopTransaction", mark), what="StopTransaction")
    stop = calls(csms, "StopTransaction", mark)[0]
    assert stop["reason"] == "UnlockCommand" and stop["transactionId"] == tx
    wait_status(fw, csms, 1, "Finishing", mark)
    st = fw.conn()
    assert st["locked"] is False and not st["contactor"]
    fw.cmd("unplug")
    wait_status(fw, csms, 1, "Available", mark)


def test_tc_018_2_unlock_connector_with_session_fixed_cable(csms, make_fw):
    fw = boot(csms, make_fw, sets=["cable_a=32"])
    start_charging(fw, csms)
    mark = csms.mark()
    assert call(fw, csms, "UnlockConnector", {"connectorId": 1}) == {"status": "NotSupported"}
    pump(fw, 5000)
    assert calls(csms, "StopTransaction", mark) == []
    assert fw.conn()["status"] == "Charging" and fw.conn()["contactor"]


def test_tc_030_unlock_connector_unlock_failure(csms, make_fw):
    fw = boot(csms, make_fw)
    tx = start_charging(fw, csms)
    fw.cmd("fault", name="lock")  # the actuator jams in the locked position
    mark = csms.mark()
    assert call(fw, csms, "UnlockConnector", {"connectorId": 1}, timeout=10) == {"status": "UnlockFailed"}
    # the transaction is finished first, whatever the lock does
    until(fw, lambda: calls(csms, "StopTransaction", mark), what="StopTransaction")
    stop = calls(csms, "StopTransaction", mark)[0]
    assert stop["reason"] == "UnlockCommand" and stop["transactionId"] == tx
    assert not fw.conn()["contactor"]


def test_tc_031_unlock_connector_unknown_connector(csms, make_fw):
    fw = boot(csms, make_fw)
    assert call(fw, csms, "UnlockConnector", {"connectorId": 2}) == {"status": "NotSupported"}
    assert call(fw, csms, "UnlockConnector", {"connectorId": 99}) == {"status": "NotSupported"}


# ---------------------------------------------------------------- configuration

# OCPP 1.6 section 9: the keys a charge point must report for each feature
# profile it supports, with their accessibility (R, RW, or either).
REQUIRED_KEYS = {
    "Core": {
        "AuthorizeRemoteTxRequests": None, "ClockAlignedDataInterval": "RW",
        "ConnectionTimeOut": "RW", "ConnectorPhaseRotation": "RW", "GetConfigurationMaxKeys": "R",
        "HeartbeatInterval": "RW", "LocalAuthorizeOffline": "RW", "LocalPreAuthorize": "RW",
        "MeterValuesAlignedData": "RW", "MeterValuesSampledData": "RW",
        "MeterValueSampleInterval": "RW", "NumberOfConnectors": "R", "ResetRetries": "RW",
        "StopTransactionOnEVSideDisconnect": "RW", "StopTransactionOnInvalidId": "RW",
        "StopTxnAlignedData": "RW", "StopTxnSampledData": "RW", "SupportedFeatureProfiles": "R",
        "TransactionMessageAttempts": "RW", "TransactionMessageRetryInterval": "RW",
        "UnlockConnectorOnEVSideDisconnect": "RW"},
    "LocalAuthListManagement": {"LocalAuthListEnabled": "RW", "LocalAuthListMaxLength": "R",
                                "SendLocalListMaxLength": "R"},
    "SmartCharging": {"ChargeProfileMaxStackLevel": "R", "ChargingScheduleAllowedChargingRateUnit": "R",
                      "ChargingScheduleMaxPeriods": "R", "MaxChargingProfilesInstalled": "R"},
    "Reservation": {},
    "FirmwareManagement": {},
    "RemoteTrigger": {},
}


def test_tc_019_retrieve_configuration(csms, make_fw):
    fw = boot(csms, make_fw)
    # all keys
    everything, unknown = get_config(fw, csms)
    assert unknown == []
    profiles = everything["SupportedFeatureProfiles"]["value"].split(",")
    assert "Core" in profiles
    missing, wrong = [], []
    for p in profiles:
        for k, acc in REQUIRED_KEYS.get(p, {}).items():
            e = everything.get(k)
            if e is None:
                missing.append("%s (%s)" % (k, p))
            elif acc is not None and e["readonly"] != (acc == "R"):
                wrong.append(k)
    assert not missing, "required keys of supported profiles not reported: %s" % missing
    assert not wrong, "wrong readonly flag: %s" % wrong
    assert everything["NumberOfConnectors"]["value"] == "1"
    assert "AuthorizationKey" not in everything  # write-only secret
    assert all(len(e.get("value", "")) <= 500 for e in everything.values())
    # named keys, one of them unknown
    some, unknown = get_config(fw, csms, "HeartbeatInterval", "MeterValueSampleInterval", "NoSuchKey")
    assert set(some) == {"HeartbeatInterval", "MeterValueSampleInterval"}
    assert some["HeartbeatInterval"] == everything["HeartbeatInterval"]
    assert unknown == ["NoSuchKey"]


def test_tc_021_change_configuration(csms, make_fw):
    fw = boot(csms, make_fw)
    assert call(fw, csms, "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "10"}) == \
        {"status": "Accepted"}
    assert get_config(fw, csms, "MeterValueSampleInterval")[0]["MeterValueSampleInterval"]["value"] == "10"
    # the new value takes effect: a sample every 10 s of a transaction
    tx = start_charging(fw, csms)
    mark = csms.mark()
    pump(fw, 35000, 1000)
    mv = calls(csms, "MeterValues", mark)
    assert 3 <= len(mv) <= 4 and all(m["transactionId"] == tx for m in mv)
    assert call(fw, csms, "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "20"}) == \
        {"status": "Accepted"}
    mark = csms.mark()
    pump(fw, 45000, 1000)
    assert len(calls(csms, "Heartbeat", mark)) >= 2
    # read-only, unknown, bad values, reboot required
    assert call(fw, csms, "ChangeConfiguration", {"key": "NumberOfConnectors", "value": "2"}) == \
        {"status": "Rejected"}
    assert call(fw, csms, "ChangeConfiguration", {"key": "NoSuchKey", "value": "1"}) == \
        {"status": "NotSupported"}
    for bad in ("ten", "-5", "", "1.5"):
        assert call(fw, csms, "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": bad}) == \
            {"status": "Rejected"}, bad
    assert call(fw, csms, "ChangeConfiguration", {"key": "WebSocketPingInterval", "value": "30"}) == \
        {"status": "RebootRequired"}
    # values persist over a power cut
    fw.powercut()
    mark = csms.mark()
    fw.start()
    until(fw, lambda: calls(csms, "BootNotification", mark), what="boot after power cut")
    keys, _ = get_config(fw, csms, "MeterValueSampleInterval", "HeartbeatInterval", "WebSocketPingInterval",
                         "NumberOfConnectors")
    assert keys["MeterValueSampleInterval"]["value"] == "10"
    assert keys["WebSocketPingInterval"]["value"] == "30"
    assert keys["NumberOfConnectors"]["value"] == "1"


def test_tc_040_1_configuration_key_not_supported(csms, make_fw):
    fw = boot(csms, make_fw)
    assert call(fw, csms, "ChangeConfiguration", {"key": "Testing", "value": "true"}) == \
        {"status": "NotSupported"}
    known, unknown = get_config(fw, csms, "Testing")
    assert known == {} and unknown == ["Testing"]


@pytest.mark.parametrize("key, value", [
    ("MeterValuesSampledData", "Energy.Active.Import.Register,Bogus.Measurand"),
    ("MeterValuesAlignedData", "Frequency.Of.Nothing"),
    ("StopTxnSampledData", "Energy.Active.Import.Register,,Nope"),
    ("MeterValuesSampledData", ",".join(["Energy.Active.Import.Register"] * 8)),  # over MaxLength 7
    ("MeterValueSampleInterval", "-1"),
    ("HeartbeatInterval", "abc"),
    ("AllowOfflineTxForUnknownId", "maybe"),
    ("ConnectionTimeOut", "0"),
])
def test_tc_040_2_configuration_key_invalid_value(csms, make_fw, key, value):
    fw = boot(csms, make_fw)
    before = get_config(fw, csms, key)[0][key]["value"]
    assert call(fw, csms, "ChangeConfiguration", {"key": key, "value": value}) == {"status": "Rejected"}
    assert get_config(fw, csms, key)[0][key]["value"] == before


# ---------------------------------------------------------------- power failure

def _power_cut_while_charging(csms, make_fw, unplug_during_outage):
    fw = boot(csms, make_fw)
    tx = start_charging(fw, csms)
    pump(fw, 120000, 1000)  # two minutes of charging: 700+ Wh
    s = fw.status()
    st = s["connectors"][0]
    assert st["contactor"] and st["session"]
    # what the meter counted up to the cut (the register the firmware shows
    # may be a control tick behind it)
    wh = int(s["plant"]["meter_wh"][0])
    assert wh > 500 and wh >= st["energy_wh"]
    fw.powercut()
    if unplug_during_outage:
        # the plant outlives the firmware; the EV leaves while the power is off
        import json
        import os
        p = os.path.join(fw.dir, "plant.json")
        with open(p) as f:
            plant = json.load(f)
        plant_outlet = plant["outlets"][0]
        plant_outlet["ev"]["plugged"] = False
        plant_outlet["ev"]["s2"] = False
        plant_outlet["pp_ohm"] = -1
        with open(p, "w") as f:
            json.dump(plant, f)
    mark = csms.mark()
    fw.start()
    until(fw, lambda: calls(csms, "StopTransaction", mark), what="StopTransaction after boot")
    # the CSMS's own record changes once it has answered, not when the CALL lands
    until(fw, lambda: results(csms, "StopTransaction", mark), what="StopTransaction answered")
    stop = calls(csms, "StopTransaction", mark)[0]
    assert stop["reason"] == "PowerLoss"
    assert stop["transactionId"] == tx
    assert stop["meterStop"] == wh, (stop["meterStop"], wh)
    assert calls(csms, "BootNotification", mark), "boots and registers again"
    assert [t for t in csms.transactions() if t["stop"] is None] == []
    return fw, mark, tx, wh


def test_tc_032_1_power_failure_stops_transaction_ev_still_plugged(csms, make_fw):
    fw, mark, tx, wh = _power_cut_while_charging(csms, make_fw, unplug_during_outage=False)
    # 1.6: the transaction ended with the power; the EV still asking for
    # energy gets none until someone authorizes a new transaction.
    pump(fw, 10000)
    st = fw.conn()
    assert not st["contactor"] and st["session"] is None
    notes = status_notes(csms, 1, mark)
    assert notes and notes[0]["status"] in ("Finishing", "Preparing"), notes
    assert "Charging" not in [n["status"] for n in notes]
    assert {n["status"] for n in status_notes(csms, 0, mark)} == {"Available"}
    # a new card starts a new transaction from the meter as it stands
    m2 = csms.mark()
    fw.cmd("token", tag="CARD2")
    until(fw, lambda: calls(csms, "StartTransaction", m2), what="new StartTransaction")
    start = calls(csms, "StartTransaction", m2)[0]
    assert start["meterStart"] == wh and start["idTag"] == "CARD2"
    assert results(csms, "StartTransaction", m2)[0]["transactionId"] != tx


def test_tc_032_2_power_failure_ev_unplugged_during_outage(csms, make_fw):
    fw, mark, tx, wh = _power_cut_while_charging(csms, make_fw, unplug_during_outage=True)
    wait_status(fw, csms, 1, "Available", mark)
    assert "Charging" not in statuses(csms, 1, mark)
    assert fw.conn()["locked"] is False
    assert len(calls(csms, "StopTransaction", mark)) == 1  # stopped once


def test_tc_034_power_failure_with_unavailable_status(csms, make_fw):
    fw = boot(csms, make_fw)
    mark = csms.mark()
    assert call(fw, csms, "ChangeAvailability", {"connectorId": 0, "type": "Inoperative"}) == \
        {"status": "Accepted"}
    wait_status(fw, csms, 0, "Unavailable", mark)
    wait_status(fw, csms, 1, "Unavailable", mark)
    fw.powercut()
    mark = csms.mark()
    fw.start()
    until(fw, lambda: len(statuses(csms, 0, mark)) and len(statuses(csms, 1, mark)), what="statuses after boot")
    assert statuses(csms, 0, mark) == ["Unavailable"]
    assert statuses(csms, 1, mark) == ["Unavailable"]
    # still inoperative: no transaction starts
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.cmd("token", tag="CARD1")
    pump(fw, 5000)
    assert calls(csms, "StartTransaction", mark) == [] and not fw.conn()["contactor"]
    assert call(fw, csms, "ChangeAvailability", {"connectorId": 0, "type": "Operative"}) == \
        {"status": "Accepted"}
    wait_status(fw, csms, 1, ("Preparing", "Available"), mark)


# ---------------------------------------------------------------- connection loss, offline

def _check_tx_sequence(seq, tx):
    """One transaction's messages as the CSMS got them: meter values in time
    order and monotonic, all with the CSMS's id, the stop last."""
    assert all(p.get("transactionId", tx) == tx for a, p, _ in seq if a != "StartTransaction"), seq
    assert all(p.get("transactionId", 1) > 0 for a, p, _ in seq), "a local transaction id reached the CSMS"
    stops = [p for a, p, _ in seq if a == "StopTransaction"]
    assert len(stops) == 1 and seq[-1][0] == "StopTransaction"
    energy = [v for a, p, _ in seq if a == "MeterValues" for v in meter_of(p)]
    assert energy == sorted(energy)
    stamps = [p["meterValue"][0]["timestamp"] for a, p, _ in seq if a == "MeterValues"]
    assert stamps == sorted(stamps)
    assert not energy or energy[-1] <= stops[0]["meterStop"]
    return stops[0]


def test_tc_036_connection_loss_during_transaction(csms, make_fw):
    fw = boot(csms, make_fw)
    configure(fw, csms, MeterValueSampleInterval=10)
    tx = start_charging(fw, csms)
    go_offline(fw, csms)
    e0 = fw.conn()["energy_wh"]
    pump(fw, 60000, 1000)
    st = fw.conn()
    assert st["contactor"] and st["session"] and st["energy_wh"] > e0  # the session goes on
    queued = fw.status()["ocpp"]["queued"]
    assert queued >= 5, "meter values are queued while offline"
    stop_mark = csms.mark()
    fw.cmd("token", tag="CARD1")  # the driver stops while the CSMS is away
    pump(fw, 5000)
    assert not fw.conn()["contactor"]
    meter_stop = fw.conn()["energy_wh"]
    csms.go_online_sync()
    mark = wait_connected(fw, csms)
    drain(fw, csms)
    seq = tx_calls(csms, stop_mark)
    stop = _check_tx_sequence(seq, tx)
    assert stop["reason"] == "Local" and stop["meterStop"] == meter_stop
    assert len([1 for a, _, _ in seq if a == "MeterValues"]) >= queued
    # queued messages before the statuses they explain
    first_status = next(i for i, m in enumerate(csms.messages(cp=CP, after=mark, direction="in"))
                        if m.action == "StatusNotification" and m.payload["connectorId"] == 1)
    first_stop = next(i for i, m in enumerate(csms.messages(cp=CP, after=mark, direction="in"))
                      if m.action == "StopTransaction")
    assert first_stop < first_status


def _cache_tag(fw, csms, tag):
    """Charge once online with tag, so the authorization cache knows it."""
    mark = csms.mark()
    start_charging(fw, csms, tag=tag)
    stop_by_token(fw, csms, tag, mark)
    fw.cmd("unplug")
    wait_status(fw, csms, 1, "Available", mark)


def _offline_start(fw, csms, tag):
    go_offline(fw, csms)
    pump(fw, 10000, 1000)  # the charger has had time to notice
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.cmd("token", tag=tag)
    pump(fw, 5000)


def test_tc_037_1_offline_start_transaction_valid_id_tag(csms, make_fw):
    fw = boot(csms, make_fw)
    configure(fw, csms, MeterValueSampleInterval=30)
    _cache_tag(fw, csms, "CARD1")
    _offline_start(fw, csms, "CARD1")
    st = fw.conn()
    assert st["contactor"] and st["session"]["id_tag"] == "CARD1", "cached id charges offline"
    pump(fw, 65000, 1000)
    online = csms.mark()
    csms.go_online_sync()
    wait_connected(fw, csms)
    until(fw, lambda: results(csms, "StartTransaction", online), limit_ms=30000, what="StartTransaction")
    start = calls(csms, "StartTransaction", online)[0]
    tx = results(csms, "StartTransaction", online)[0]["transactionId"]
    assert start["idTag"] == "CARD1"
    wait_status(fw, csms, 1, "Charging", online)
    # the queued meter values went out after the start, with the CSMS's id
    pump(fw, 5000)
    seq = tx_calls(csms, online)
    assert seq[0][0] == "StartTransaction"
    mvs = [p for a, p, _ in seq if a == "MeterValues"]
    assert len(mvs) >= 2 and all(p["transactionId"] == tx for p in mvs)
    stop = stop_by_token(fw, csms, "CARD1", online)
    assert stop["transactionId"] == tx and stop["reason"] == "Local"


def test_tc_037_1_local_authorize_offline_false_refuses_cached_id(csms, make_fw):
    fw = boot(csms, make_fw)
    _cache_tag(fw, csms, "CARD1")
    configure(fw, csms, LocalAuthorizeOffline=False)
    _offline_start(fw, csms, "CARD1")
    assert fw.conn()["session"] is None and not fw.conn()["contactor"]
    csms.go_online_sync()
    mark = wait_connected(fw, csms)
    pump(fw, 5000)
    assert calls(csms, "StartTransaction", mark) == []


def test_tc_037_2_offline_start_unknown_id_stop_on_invalid_id(csms, make_fw):
    fw = boot(csms, make_fw)
    configure(fw, csms, AllowOfflineTxForUnknownId=True, StopTransactionOnInvalidId=True)
    csms.set_id_tag("STRANGER", "Invalid")
    _offline_start(fw, csms, "STRANGER")
    st = fw.conn()
    assert st["contactor"] and st["session"]["id_tag"] == "STRANGER", \
        "AllowOfflineTxForUnknownId: an unknown id charges offline"
    pump(fw, 30000, 1000)
    online = csms.mark()
    csms.go_online_sync()
    wait_connected(fw, csms)
    until(fw, lambda: calls(csms, "StopTransaction", online), limit_ms=60000, what="StopTransaction")
    seq = tx_calls(csms, online)
    assert seq[0][0] == "StartTransaction" and seq[0][2]["idTagInfo"]["status"] == "Invalid"
    tx = seq[0][2]["transactionId"]
    stop = _check_tx_sequence(seq, tx)
    assert stop["reason"] == "DeAuthorized"
    assert not fw.conn()["contactor"]


def test_tc_037_2_offline_unknown_id_refused_without_allow_offline_tx(csms, make_fw):
    fw = boot(csms, make_fw)
    configure(fw, csms, AllowOfflineTxForUnknownId=False)
    _offline_start(fw, csms, "STRANGER")
    assert fw.conn()["session"] is None and not fw.conn()["contactor"]
    csms.go_online_sync()
    mark = wait_connected(fw, csms)
    pump(fw, 5000)
    assert calls(csms, "StartTransaction", mark) == []


def test_tc_037_3_offline_start_unknown_id_keep_transaction_on_invalid_id(csms, make_fw):
    fw = boot(csms, make_fw)
    configure(fw, csms, AllowOfflineTxForUnknownId=True, StopTransactionOnInvalidId=False)
    csms.set_id_tag("STRANGER", "Invalid")
    _offline_start(fw, csms, "STRANGER")
    assert fw.conn()["contactor"]
    online = csms.mark()
    csms.go_online_sync()
    wait_connected(fw, csms)
    until(fw, lambda: results(csms, "StartTransaction", online), limit_ms=30000, what="StartTransaction")
    assert results(csms, "StartTransaction", online)[0]["idTagInfo"]["status"] == "Invalid"
    pump(fw, 10000)
    # 1.6 (StartTransaction): with StopTransactionOnInvalidId false the
    # transaction goes on, but the charger only stops the energy delivery.
    assert calls(csms, "StopTransaction", online) == []
    st = fw.conn()
    assert st["session"] is not None
    assert not st["contactor"] and st["status"] == "SuspendedEVSE", st
    assert last_status(csms, 1, online) == "SuspendedEVSE"


def test_tc_038_offline_stop_transaction(csms, make_fw):
    fw = boot(csms, make_fw)
    tx = start_charging(fw, csms)
    pump(fw, 20000, 1000)
    go_offline(fw, csms)
    pump(fw, 10000, 1000)
    fw.cmd("token", tag="CARD1")
    pump(fw, 5000)
    assert not fw.conn()["contactor"] and fw.conn()["session"] is None
    meter_stop = fw.conn()["energy_wh"]
    online = csms.mark()
    csms.go_online_sync()
    wait_connected(fw, csms)
    until(fw, lambda: calls(csms, "StopTransaction", online), limit_ms=30000, what="StopTransaction")
    stop = calls(csms, "StopTransaction", online)[0]
    assert stop["transactionId"] == tx and stop.get("reason", "Local") == "Local"
    assert stop["meterStop"] == meter_stop
    wait_status(fw, csms, 1, "Finishing", online)


def test_tc_039_offline_transaction(csms, make_fw):
    fw = boot(csms, make_fw)
    configure(fw, csms, MeterValueSampleInterval=20)
    _cache_tag(fw, csms, "CARD1")
    _offline_start(fw, csms, "CARD1")
    assert fw.conn()["contactor"]
    pump(fw, 90000, 1000)
    fw.cmd("token", tag="CARD1")
    pump(fw, 5000)
    meter_stop = fw.conn()["energy_wh"]
    fw.cmd("unplug")
    pump(fw, 2000)
    online = csms.mark()
    csms.go_online_sync()
    wait_connected(fw, csms)
    drain(fw, csms)
    seq = tx_calls(csms, online)
    assert [a for a, _, _ in seq][0] == "StartTransaction"
    assert seq[0][2]["idTagInfo"]["status"] == "Accepted"
    tx = seq[0][2]["transactionId"]
    stop = _check_tx_sequence(seq, tx)
    assert stop.get("reason", "Local") == "Local" and stop["meterStop"] == meter_stop
    assert seq[0][1]["meterStart"] <= stop["meterStop"]
    assert len([1 for a, _, _ in seq if a == "MeterValues"]) >= 4
    assert [t["stop"] is not None for t in csms.transactions()] == [True, True]


# ---------------------------------------------------------------- faults

@pytest.mark.parametrize("fault, code", [("ground", "GroundFailure"), ("weld", "PowerSwitchFailure"),
                                         ("rcd", "GroundFailure")])
def test_tc_041_fault_behaviour(csms, make_fw, fault, code):
    fw = boot(csms, make_fw)
    start_charging(fw, csms)
    mark = csms.mark()
    fw.cmd("fault", name=fault)
    if fault == "weld":
        fw.cmd("ev", state="B")  # the EV stops; the contacts stay welded
    pump(fw, 3000, 100)
    until(fw, lambda: [n for n in status_notes(csms, 1, mark) if n["status"] == "Faulted"],
          what="Faulted")
    faulted = [n for n in status_notes(csms, 1, mark) if n["status"] == "Faulted"][0]
    assert faulted["errorCode"] == code
    assert all(n["errorCode"] == "NoError" for n in status_notes(csms, 0, mark))
    # the cause goes away (and the technician's service for a latched fault)
    fw.cmd("clear", name=fault)
    if fault == "weld":
        pump(fw, 500)
        fw.cmd("service", code="weld")
        fw.cmd("ev", state="C")
    else:
        fw.cmd("unplug")  # ground and RCD faults clear when the EV is unplugged
    back = csms.mark()
    wait_status(fw, csms, 1, ("Available", "Preparing", "Finishing", "SuspendedEV", "Charging"), back)
    assert all(n["errorCode"] == "NoError" for n in status_notes(csms, 1, back))
    # whatever happened to the transaction, it was stopped once (or goes on)
    assert len(calls(csms, "StopTransaction")) <= 1


# ---------------------------------------------------------------- ChangeAvailability

def test_change_availability_inoperative_during_transaction_is_scheduled(csms, make_fw):
    fw = boot(csms, make_fw)
    tx = start_charging(fw, csms)
    mark = csms.mark()
    assert call(fw, csms, "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"}) == \
        {"status": "Scheduled"}
    pump(fw, 10000, 1000)
    assert fw.conn()["contactor"], "the transaction is not interrupted"
    assert "Unavailable" not in statuses(csms, 1, mark)
    stop = stop_by_token(fw, csms, "CARD1", mark)
    assert stop["transactionId"] == tx
    wait_status(fw, csms, 1, "Unavailable", mark)
    # a new session cannot start
    m2 = csms.mark()
    fw.cmd("token", tag="CARD1")
    pump(fw, 5000)
    assert calls(csms, "StartTransaction", m2) == []
    assert call(fw, csms, "ChangeAvailability", {"connectorId": 1, "type": "Operative"}) == \
        {"status": "Accepted"}
    wait_status(fw, csms, 1, ("Preparing", "Finishing"), m2)


def test_change_availability_connector_zero(csms, make_fw):
    fw = boot(csms, make_fw)
    mark = csms.mark()
    assert call(fw, csms, "ChangeAvailability", {"connectorId": 0, "type": "Inoperative"}) == \
        {"status": "Accepted"}
    wait_status(fw, csms, 0, "Unavailable", mark)
    wait_status(fw, csms, 1, "Unavailable", mark)
    assert call(fw, csms, "ChangeAvailability", {"connectorId": 0, "type": "Inoperative"}) == \
        {"status": "Accepted"}  # already so: still Accepted
    assert call(fw, csms, "ChangeAvailability", {"connectorId": 3, "type": "Inoperative"}) == \
        {"status": "Rejected"}
    m2 = csms.mark()
    assert call(fw, csms, "ChangeAvailability", {"connectorId": 0, "type": "Operative"}) == \
        {"status": "Accepted"}
    wait_status(fw, csms, 0, "Available", m2)
    wait_status(fw, csms, 1, "Available", m2)
    # with a transaction running, connector 0 Inoperative is scheduled
    tx = start_charging(fw, csms)
    m3 = csms.mark()
    assert call(fw, csms, "ChangeAvailability", {"connectorId": 0, "type": "Inoperative"}) == \
        {"status": "Scheduled"}
    assert fw.conn()["contactor"]
    stop = stop_by_token(fw, csms, "CARD1", m3)
    assert stop["transactionId"] == tx
    wait_status(fw, csms, 1, "Unavailable", m3)
    wait_status(fw, csms, 0, "Unavailable", m3)


def test_change_availability_persists_over_reboot(csms, make_fw):
    fw = boot(csms, make_fw)
    assert call(fw, csms, "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"}) == \
        {"status": "Accepted"}
    mark = csms.mark()
    call(fw, csms, "Reset", {"type": "Soft"})
    until(fw, lambda: calls(csms, "BootNotification", mark), what="boot after reset")
    until(fw, lambda: statuses(csms, 1, mark), what="status after reset")
    assert statuses(csms, 1, mark)[0] == "Unavailable"

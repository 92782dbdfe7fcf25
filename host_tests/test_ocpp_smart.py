"""OCA compliance, Smart Charging profile (OCPP 1.6J): charging profiles
become a current limit that reaches the pilot duty (what the EV is offered)."""
import pytest

from ocpp_helpers import CP, iso_in, online_pair


@pytest.fixture
def online(make_csms, make_fw):
    return online_pair(make_csms, make_fw)


def profile(pid, purpose, periods, stack=0, kind="Absolute", unit="A", start=None, **extra):
    sch = {"chargingRateUnit": unit,
           "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods]}
    if start is not None:
        sch["startSchedule"] = start
    p = {"chargingProfileId": pid, "stackLevel": stack, "chargingProfilePurpose": purpose,
         "chargingProfileKind": kind, "chargingSchedule": sch}
    p.update(extra)
    return p


def set_profile(csms, cid, p):
    return csms.call_sync(CP, "SetChargingProfile", {"connectorId": cid, "csChargingProfiles": p})["status"]


def charging(csms, fw, tag="CARD1"):
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.cmd("token", tag=tag)
    fw.advance(3000)
    assert fw.conn()["status"] == "Charging"
    return csms.wait_for_sync("StartTransaction", cp=CP, timeout=5)


def offered(fw, settle=2000):
    fw.advance(settle)
    c = fw.conn()
    return c["offered_ma"], c["duty_pm"]


def test_tc_056_tx_default_profile_limits_the_next_transaction(online):
    csms, fw = online
    assert set_profile(csms, 0, profile(1, "TxDefaultProfile", [(0, 10)], start=iso_in(fw, -60))) == "Accepted"
    charging(csms, fw)
    assert offered(fw) == (10000, 166)  # 10 A -> 16.6 % duty


def test_tc_057_tx_profile_on_the_running_transaction(online):
    csms, fw = online
    charging(csms, fw)
    conf = csms.wait_for_sync("StartTransaction", cp=CP, direction="out", timeout=5)
    p = profile(2, "TxProfile", [(0, 8)], kind="Relative", transactionId=conf.payload["transactionId"])
    assert set_profile(csms, 1, p) == "Accepted"
    assert offered(fw) == (8000, 133)


def test_tc_058_1_tx_profile_without_a_transaction_is_rejected(online):
    csms, fw = online
    assert set_profile(csms, 1, profile(3, "TxProfile", [(0, 8)], kind="Relative")) == "Rejected"


def test_tc_058_2_tx_profile_for_another_transaction_is_rejected(online):
    csms, fw = online
    charging(csms, fw)
    p = profile(4, "TxProfile", [(0, 8)], kind="Relative", transactionId=424242)
    assert set_profile(csms, 1, p) == "Rejected"
    assert offered(fw)[0] == 32000


def test_tc_059_remote_start_with_a_charging_profile(online):
    csms, fw = online
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.advance(1000)
    r = csms.call_sync(CP, "RemoteStartTransaction", {
        "connectorId": 1, "idTag": "REMOTE1",
        "chargingProfile": profile(5, "TxProfile", [(0, 12)], kind="Relative")})
    assert r["status"] == "Accepted"
    fw.advance(4000)
    assert fw.conn()["status"] == "Charging"
    assert offered(fw)[0] == 12000


def test_tc_060_remote_start_with_a_non_tx_profile_is_rejected(online):
    csms, fw = online
    r = csms.call_sync(CP, "RemoteStartTransaction", {
        "connectorId": 1, "idTag": "REMOTE1",
        "chargingProfile": profile(6, "TxDefaultProfile", [(0, 12)], kind="Relative")})
    assert r["status"] == "Rejected"


def test_tc_066_get_composite_schedule(online):
    csms, fw = online
    assert set_profile(csms, 0, profile(7, "TxDefaultProfile", [(0, 16), (600, 10), (1200, 20)],
                                        start=iso_in(fw, 0))) == "Accepted"
    r = csms.call_sync(CP, "GetCompositeSchedule", {"connectorId": 1, "duration": 1800, "chargingRateUnit": "A"})
    assert r["status"] == "Accepted"
    periods = [(x["startPeriod"], x["limit"]) for x in r["chargingSchedule"]["chargingSchedulePeriod"]]
    # startSchedule is the charger's own "now" (second resolution), so starts may shift by one
    assert [lim for _, lim in periods] == [16.0, 10.0, 20.0]
    assert abs(periods[1][0] - 600) <= 1 and abs(periods[2][0] - 1200) <= 1
    none = csms.call_sync(CP, "GetCompositeSchedule", {"connectorId": 5, "duration": 60})
    assert none["status"] == "Rejected"


def test_tc_067_clear_charging_profile(online):
    csms, fw = online
    assert set_profile(csms, 0, profile(8, "TxDefaultProfile", [(0, 10)], start=iso_in(fw, -60))) == "Accepted"
    charging(csms, fw)
    assert offered(fw)[0] == 10000
    assert csms.call_sync(CP, "ClearChargingProfile", {"id": 8})["status"] == "Accepted"
    assert offered(fw)[0] == 32000
    assert csms.call_sync(CP, "ClearChargingProfile", {"id": 8})["status"] == "Unknown"


def test_tc_072_stacking_higher_level_wins_while_it_applies(online):
    csms, fw = online
    now = iso_in(fw, 0)
    assert set_profile(csms, 0, profile(9, "TxDefaultProfile", [(0, 20)], stack=0, start=now)) == "Accepted"
    # Stack 1 for the first 10 minutes only (duration), then level 0 again.
    p = profile(10, "TxDefaultProfile", [(0, 6)], stack=1, start=now)
    p["chargingSchedule"]["duration"] = 600
    assert set_profile(csms, 0, p) == "Accepted"
    charging(csms, fw)
    assert offered(fw)[0] == 6000
    fw.advance(600_000)
    assert offered(fw)[0] == 20000


def test_tc_082_tx_default_profile_during_a_transaction(online):
    csms, fw = online
    charging(csms, fw)
    assert set_profile(csms, 1, profile(11, "TxDefaultProfile", [(0, 13)], start=iso_in(fw, -1))) == "Accepted"
    assert offered(fw)[0] == 13000


def test_power_limits_convert_with_the_phases(online):
    csms, fw = online
    # 6900 W on 3 phases at 230 V = 10 A per phase; on 1 phase 30 A.
    assert set_profile(csms, 0, profile(12, "ChargePointMaxProfile", [(0, 6900)], unit="W",
                                        start=iso_in(fw, -60))) == "Accepted"
    charging(csms, fw)
    assert offered(fw)[0] == 10000


def test_recurring_daily_profile_and_below_6a_pauses(online):
    csms, fw = online
    charging(csms, fw)
    start = iso_in(fw, -10)
    assert set_profile(csms, 0, profile(13, "ChargePointMaxProfile", [(0, 0), (3600, 32)], kind="Recurring",
                                        recurrencyKind="Daily", start=start)) == "Accepted"
    fw.advance(2000)
    c = fw.conn()
    assert c["duty_pm"] == 1000 and c["status"] == "SuspendedEVSE"  # 0 A: no PWM, the EVSE paused
    fw.advance(3600_000)
    assert offered(fw)[0] == 32000
    fw.advance(86400_000 - 3600_000)  # the next day starts at 0 A again
    assert fw.conn()["duty_pm"] == 1000


def test_profiles_survive_reboot(online):
    csms, fw = online
    assert set_profile(csms, 0, profile(14, "TxDefaultProfile", [(0, 9)], start=iso_in(fw, -60))) == "Accepted"
    mark = csms.mark()
    fw.reboot()
    fw.advance(100)
    csms.wait_for_sync("BootNotification", cp=CP, timeout=10, after=mark)
    fw.advance(2000)
    charging(csms, fw)
    assert offered(fw)[0] == 9000


def test_power_limit_on_a_single_phase_charger(make_csms, make_fw):
    # 6900 W on the one phase a 1-phase charger has: 30 A, whatever numberPhases says.
    csms, fw = online_pair(make_csms, make_fw, sets=["phases=1"])
    assert set_profile(csms, 0, profile(15, "ChargePointMaxProfile", [(0, 6900)], unit="W",
                                        start=iso_in(fw, -60))) == "Accepted"
    charging(csms, fw)
    assert offered(fw)[0] == 30000

"""OCA compliance, Local Authorization List Management (OCPP 1.6J): the CSMS
sends a versioned list of idTags; the charger answers with it by itself when
it may (LocalPreAuthorize) or must (offline, LocalAuthorizeOffline)."""
import pytest

from ocpp_helpers import CP, online_pair


@pytest.fixture
def online(make_csms, make_fw):
    return online_pair(make_csms, make_fw)


def send_list(csms, version, entries, kind="Full"):
    p = {"listVersion": version, "updateType": kind}
    if entries is not None:
        p["localAuthorizationList"] = entries
    return csms.call_sync(CP, "SendLocalList", p)["status"]


def tag(t, status="Accepted", parent=None):
    info = {"status": status}
    if parent:
        info["parentIdTag"] = parent
    return {"idTag": t, "idTagInfo": info}


def test_tc_042_1_local_list_version_without_a_list(online):
    csms, fw = online
    assert csms.call_sync(CP, "GetLocalListVersion", {})["listVersion"] == 0


def test_tc_042_2_local_list_version_after_an_update(online):
    csms, fw = online
    assert send_list(csms, 7, [tag("LL1")]) == "Accepted"
    assert csms.call_sync(CP, "GetLocalListVersion", {})["listVersion"] == 7


def test_tc_043_send_local_list_full_replaces_and_empty_clears(online):
    csms, fw = online
    assert send_list(csms, 1, [tag("A"), tag("B")]) == "Accepted"
    assert send_list(csms, 2, [tag("C")]) == "Accepted"
    assert fw.cmd("status")  # still running
    # A full update with no list clears it.
    assert send_list(csms, 3, None) == "Accepted"
    assert csms.call_sync(CP, "GetLocalListVersion", {})["listVersion"] == 3


def test_tc_043_1_differential_adds_updates_and_removes(online):
    csms, fw = online
    assert send_list(csms, 1, [tag("A"), tag("B")]) == "Accepted"
    assert send_list(csms, 2, [tag("C"), {"idTag": "A"}, tag("B", "Blocked")], "Differential") == "Accepted"
    csms.go_offline_sync()  # decide by the list alone
    fw.advance(2000)
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.cmd("token", tag="B")  # now blocked
    fw.advance(3000)
    assert fw.conn()["session"] is None
    fw.cmd("token", tag="C")  # added by the difference
    fw.advance(3000)
    assert fw.conn()["status"] == "Charging" and fw.conn()["session"]["id_tag"] == "C"


def test_tc_043_2_differential_with_an_old_version_is_a_mismatch(online):
    csms, fw = online
    assert send_list(csms, 5, [tag("A")]) == "Accepted"
    assert send_list(csms, 5, [tag("B")], "Differential") == "VersionMismatch"
    assert send_list(csms, 4, [tag("B")], "Differential") == "VersionMismatch"
    assert csms.call_sync(CP, "GetLocalListVersion", {})["listVersion"] == 5


def test_tc_043_3_too_many_entries_fail_and_change_nothing(online):
    csms, fw = online
    assert send_list(csms, 1, [tag("A")]) == "Accepted"
    too_many = [tag("T%d" % i) for i in range(101)]  # SendLocalListMaxLength is 100
    assert send_list(csms, 2, too_many) == "Failed"
    assert csms.call_sync(CP, "GetLocalListVersion", {})["listVersion"] == 1


def test_tc_008_local_list_authorizes_without_asking_the_csms(online):
    csms, fw = online
    assert csms.call_sync(CP, "ChangeConfiguration", {"key": "LocalPreAuthorize", "value": "true"})["status"] \
        == "Accepted"
    assert send_list(csms, 1, [tag("LOCAL1")]) == "Accepted"
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.cmd("token", tag="LOCAL1")
    fw.advance(3000)
    assert fw.conn()["status"] == "Charging"
    assert not csms.messages(cp=CP, action="Authorize")  # the list answered
    start = csms.wait_for_sync("StartTransaction", cp=CP, timeout=5)
    assert start.payload["idTag"] == "LOCAL1"


def test_local_list_survives_reboot(online):
    csms, fw = online
    assert send_list(csms, 9, [tag("KEEP")]) == "Accepted"
    mark = csms.mark()
    fw.reboot()
    fw.advance(100)
    csms.wait_for_sync("BootNotification", cp=CP, timeout=10, after=mark)
    fw.advance(2000)
    assert csms.call_sync(CP, "GetLocalListVersion", {})["listVersion"] == 9

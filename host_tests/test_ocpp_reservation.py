"""OCA compliance, Reservation profile (OCPP 1.6J): ReserveNow holds a
connector (or any one, connectorId 0) for an idTag until it is used, cancelled
or expires; the holder's StartTransaction carries the reservationId."""
import pytest

from ocpp_helpers import CP, online_pair, reserve, wait_status

@pytest.fixture
def online(make_csms, make_fw):
    return online_pair(make_csms, make_fw)

def plug_and_tap(fw, tag):
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.cmd("token", tag=tag)
    fw.advance(3000)

def test_tc_046_1_reserved_connector_local_start_by_the_holder(online):
    csms, fw = online
    assert reserve(csms, fw, 1, "HOLDER", rid=11) == "Accepted"
    wait_status(csms, fw, 1, "Reserved")
    plug_and_tap(fw, "HOLDER")
    assert fw.conn()["status"] == "Charging"
    start = csms.wait_for_sync("StartTransaction", cp=CP, timeout=5)
    assert start.payload["reservationId"] == 11
    assert csms.call_sync(CP, "CancelReservation", {"reservationId": 11})["status"] == "Rejected"  # used up

def test_tc_046_2_reserved_connector_refuses_another_idtag(online):
    csms, fw = online
    assert reserve(csms, fw, 1, "HOLDER", rid=12) == "Accepted"
    plug_and_tap(fw, "STRANGER")
    assert fw.conn()["session"] is None
    assert not csms.messages(cp=CP, action="StartTransaction")
    r = csms.call_sync(CP, "RemoteStartTransaction", {"connectorId": 1, "idTag": "STRANGER"})
    assert r["status"] == "Rejected"

def test_tc_047_reservation_expires(online):
    csms, fw = online
    assert reserve(csms, fw, 1, "HOLDER", rid=13, seconds=30) == "Accepted"
    wait_status(csms, fw, 1, "Reserved")
    fw.advance(35_000)
    wait_status(csms, fw, 1, "Available")
    plug_and_tap(fw, "STRANGER")
    assert fw.conn()["status"] == "Charging"

def weld(fw):
    """Charge once with a contactor that welds: a latched PowerSwitchFailure."""
    fw.cmd("fault", name="weld")
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.cmd("token", tag="X")
    fw.advance(2000)
    fw.cmd("ev", state="B")
    fw.advance(3000)
    assert fw.conn()["status"] == "Faulted"


def test_tc_048_1_reserve_a_faulted_connector(online):
    csms, fw = online
    weld(fw)
    assert reserve(csms, fw, 1, "HOLDER", rid=14) == "Faulted"

def test_tc_048_2_reserve_an_occupied_connector(online):
    csms, fw = online
    plug_and_tap(fw, "FIRST")
    assert reserve(csms, fw, 1, "HOLDER", rid=15) == "Occupied"

def test_tc_048_3_reserve_an_unavailable_connector(online):
    csms, fw = online
    assert csms.call_sync(CP, "ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})["status"] == "Accepted"
    fw.advance(1000)
    assert reserve(csms, fw, 1, "HOLDER", rid=16) == "Unavailable"

def test_tc_048_4_reserve_with_a_past_expiry_or_unknown_connector_is_rejected(online):
    csms, fw = online
    assert reserve(csms, fw, 1, "HOLDER", rid=17, seconds=-60) == "Rejected"
    assert reserve(csms, fw, 9, "HOLDER", rid=18) == "Rejected"

def test_tc_049_reserve_connector_zero(online):
    csms, fw = online
    assert reserve(csms, fw, 0, "HOLDER", rid=19) == "Accepted"
    wait_status(csms, fw, 1, "Reserved")  # the only connector is the last free one
    plug_and_tap(fw, "STRANGER")
    assert fw.conn()["session"] is None
    fw.cmd("token", tag="HOLDER")
    fw.advance(3000)
    assert fw.conn()["status"] == "Charging"
    assert csms.wait_for_sync("StartTransaction", cp=CP, timeout=5).payload["reservationId"] == 19

def test_reservation_with_the_same_id_replaces_it(online):
    csms, fw = online
    assert reserve(csms, fw, 1, "OLD", rid=20) == "Accepted"
    assert reserve(csms, fw, 1, "NEW", rid=20) == "Accepted"
    plug_and_tap(fw, "OLD")
    assert fw.conn()["session"] is None
    fw.cmd("token", tag="NEW")
    fw.advance(3000)
    assert fw.conn()["status"] == "Charging"

def test_second_reservation_on_a_reserved_connector_is_occupied(online):
    csms, fw = online
    assert reserve(csms, fw, 1, "A", rid=21) == "Accepted"
    assert reserve(csms, fw, 1, "B", rid=22) == "Occupied"

def test_tc_050_1_reserve_the_charge_point_when_faulted(online):
    csms, fw = online
    weld(fw)
    assert reserve(csms, fw, 0, "HOLDER", rid=30) == "Faulted"


def test_tc_050_2_reserve_the_charge_point_when_occupied(online):
    csms, fw = online
    plug_and_tap(fw, "FIRST")
    assert reserve(csms, fw, 0, "HOLDER", rid=31) == "Occupied"


def test_tc_050_3_reserve_the_charge_point_when_unavailable(online):
    csms, fw = online
    assert csms.call_sync(CP, "ChangeAvailability", {"connectorId": 0, "type": "Inoperative"})["status"] == "Accepted"
    fw.advance(1000)
    assert reserve(csms, fw, 0, "HOLDER", rid=32) == "Unavailable"


def test_tc_050_4_reserve_the_charge_point_rejected(online):
    csms, fw = online
    assert reserve(csms, fw, 0, "HOLDER", rid=33, seconds=-1) == "Rejected"


def test_tc_051_cancel_reservation(online):
    csms, fw = online
    assert reserve(csms, fw, 1, "HOLDER", rid=23) == "Accepted"
    wait_status(csms, fw, 1, "Reserved")
    assert csms.call_sync(CP, "CancelReservation", {"reservationId": 23})["status"] == "Accepted"
    wait_status(csms, fw, 1, "Available")

def test_tc_052_cancel_an_unknown_reservation_is_rejected(online):
    csms, fw = online
    assert csms.call_sync(CP, "CancelReservation", {"reservationId": 999})["status"] == "Rejected"

def test_tc_053_reserved_for_a_parent_idtag(online):
    csms, fw = online
    csms.set_id_tag("CHILD", "Accepted", parent_id_tag="FAMILY")
    assert reserve(csms, fw, 1, "HOLDER", rid=24, parent="FAMILY") == "Accepted"
    plug_and_tap(fw, "CHILD")
    assert fw.conn()["status"] == "Charging"
    assert csms.wait_for_sync("StartTransaction", cp=CP, timeout=5).payload["reservationId"] == 24

def test_reservation_survives_reboot(online):
    csms, fw = online
    assert reserve(csms, fw, 1, "HOLDER", rid=25) == "Accepted"
    mark = csms.mark()
    fw.reboot()
    fw.advance(100)
    csms.wait_for_sync("BootNotification", cp=CP, timeout=10, after=mark)
    wait_status(csms, fw, 1, "Reserved")

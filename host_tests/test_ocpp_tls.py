"""OCPP over wss:// against the dev CSMS with a test CA (real TLS), with and
without HTTP Basic auth (security profiles 1 and 2 as far as the transport
goes; the security extension's key handling is the next step)."""
import pytest

from ocpp_helpers import CP
from tools.csms.tls import make_test_pki


@pytest.fixture
def pki(tmp_path):
    return make_test_pki(tmp_path / "pki", clients=())


def wss_fw(make_fw, csms, ca, extra=()):
    return make_fw(sets=["csms_url=wss://localhost:%d" % csms.port, "csms_ca=" + ca] + list(extra))


def test_session_over_wss_with_basic_auth(make_csms, make_fw, pki):
    csms = make_csms(ping_interval=None, tls_cert=pki["server_cert"], tls_key=pki["server_key"],
                     passwords={CP: "correct-horse-battery"}, auth_required=True)
    fw = wss_fw(make_fw, csms, pki["ca"], ["auth_key=correct-horse-battery"])
    fw.advance(100)
    boot = csms.wait_for_sync("BootNotification", cp=CP, timeout=20)
    assert boot.payload["chargePointModel"]
    fw.advance(2000)
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.cmd("token", tag="CARD1")
    fw.advance(3000)
    assert fw.conn()["status"] == "Charging"
    csms.wait_for_sync("StartTransaction", cp=CP, timeout=20)
    fw.cmd("unplug")
    fw.advance(2000)
    stop = csms.wait_for_sync("StopTransaction", cp=CP, timeout=20)
    assert stop.payload["reason"] == "EVDisconnected"


def test_wrong_ca_is_refused(make_csms, make_fw, pki, tmp_path):
    other = make_test_pki(tmp_path / "other", ca_name="Somebody else", clients=())
    csms = make_csms(ping_interval=None, tls_cert=pki["server_cert"], tls_key=pki["server_key"])
    fw = wss_fw(make_fw, csms, other["ca"])
    for _ in range(20):
        fw.advance(500)
    assert not csms.messages(cp=CP, action="BootNotification")
    assert fw.status()["ocpp"]["state"] in ("offline", "connecting")
    assert any("not correctly signed" in e["msg"] or "TLS" in e["msg"] or "certificate" in e["msg"]
               for e in fw.log()), [e["msg"] for e in fw.log()][-5:]


def test_wrong_password_is_refused_with_401(make_csms, make_fw, pki):
    csms = make_csms(ping_interval=None, tls_cert=pki["server_cert"], tls_key=pki["server_key"],
                     passwords={CP: "correct-horse-battery"}, auth_required=True)
    fw = wss_fw(make_fw, csms, pki["ca"], ["auth_key=wrong-password-0000"])
    for _ in range(20):
        fw.advance(500)
    assert not csms.messages(cp=CP, action="BootNotification")
    assert any("401" in e["msg"] for e in fw.log()), [e["msg"] for e in fw.log()][-5:]

"""One composition root (firmware/app.py): the ESP32/RP2040 board code builds
the same charger as the Unix board, OCPP client included.

The shared board code (boards/common/board.py, what boards/esp32/main.py and
boards/rp2040/main.py run) boots on the Unix port against the fake ESP32 port
of test_board_math, in bench demo mode, on WiFi (the fake `network` module
of test_link), with csms_url set: it must connect to
the dev CSMS, boot with the board's own serial number, report its connector,
and take a session from the CSMS.
"""
import json
import subprocess
import time

from fwproc import ROOT, micropython
from test_board_math import BOARD, FAKES
from test_link import SECRET, fake_network


def test_dev_board_attaches_ocpp_when_csms_url_is_set(tmp_path, csms):
    (tmp_path / "fakes.py").write_text(FAKES)
    fake_network(tmp_path)
    store = tmp_path / "flash"
    store.mkdir()
    (store / "config.json").write_text(json.dumps({"pins": {"demo": True}, "id": "BOARD01",
                                                   "csms_url": csms.url(), "wifi_ssid": "depot",
                                                   "wifi_pass": SECRET}))
    p = subprocess.Popen([micropython(), "-c", BOARD % (ROOT, str(tmp_path), str(store))],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        boot = csms.wait_for_sync("BootNotification", cp="BOARD01", timeout=30)
        assert boot.payload["chargePointSerialNumber"] == "FAKE0001"  # the port's, not "SIM-..."
        csms.wait_for_sync("StatusNotification", cp="BOARD01", timeout=10,
                           predicate=lambda m: m.payload["connectorId"] == 1)
        mark = csms.mark()
        for line in ("plug(32)", "ev('C')"):
            p.stdin.write(line.encode() + b"\n")
            p.stdin.flush()
            time.sleep(0.3)
        r = csms.call_sync("BOARD01", "RemoteStartTransaction", {"connectorId": 1, "idTag": "BENCH1"})
        assert r["status"] == "Accepted"
        start = csms.wait_for_sync("StartTransaction", cp="BOARD01", timeout=15, after=mark)
        assert start.payload["idTag"] == "BENCH1"
        csms.wait_for_sync("StatusNotification", cp="BOARD01", timeout=10, after=mark,
                           predicate=lambda m: m.payload["status"] == "Charging")
    finally:
        p.kill()
        out = p.communicate(timeout=20)[0].decode()
    assert "demo mode" in out, out

"""The network interface on the boards (firmware/net/link.py), on the Unix port
against a fake `network` module: association failure, a wrong passphrase,
link loss and its return, the passphrase never shown; and on the ESP32/Pico W
board code, link loss while charging: the charger keeps charging, OCPP drops
the dead connection, queues, and reconnects when the link is back.

The fake module (FAKE_NETWORK) is MicroPython's network.WLAN as far as the
link uses it. The world around it (which access points exist with which
passphrase, whether the radio reaches them, whether association hangs) is a
JSON file the test rewrites while the firmware runs.
"""
import json
import subprocess
import time

from fwproc import ROOT, micropython
from test_board_math import BOARD, FAKES, mp_json

FAKE_NETWORK = r'''
import json
import time

STA_IF = 0
STAT_IDLE = 0
STAT_CONNECTING = 1
STAT_WRONG_PASSWORD = -3
STAT_NO_AP_FOUND = -2
STAT_CONNECT_FAIL = -1
STAT_GOT_IP = 3
WORLD = %r  # the file with {"aps": {ssid: passphrase}, "reach": bool, "hang": bool, "rssi": n}
ASSOC_MS = 100


def world():
    with open(WORLD) as f:
        return json.loads(f.read())


class WLAN:
    def __init__(self, interface):
        self._st = STAT_IDLE
        self._on = False
        self.joins = []

    def active(self, on=None):
        if on is not None:
            self._on = on
        return self._on

    def connect(self, ssid, key):
        assert self._on, "connect before active(True)"
        self.joins.append(ssid)
        self._ssid = ssid
        self._key = key
        self._t0 = time.ticks_ms()
        self._st = STAT_CONNECTING

    def _update(self):
        w = world()
        if self._st == STAT_CONNECTING and time.ticks_diff(time.ticks_ms(), self._t0) >= ASSOC_MS:
            if not w["reach"] or self._ssid not in w["aps"]:
                self._st = STAT_NO_AP_FOUND
            elif w["hang"]:
                pass  # association never completes
            elif w["aps"][self._ssid] != self._key:
                self._st = STAT_WRONG_PASSWORD
            else:
                self._st = STAT_GOT_IP
        elif self._st == STAT_GOT_IP and not w["reach"]:
            self._st = STAT_IDLE  # out of range: the link is gone

    def status(self, param=None):
        if param == "rssi":
            return world()["rssi"]
        self._update()
        return self._st

    def isconnected(self):
        self._update()
        return self._st == STAT_GOT_IP

    def ifconfig(self):
        return (world().get("ip", "192.168.4.23"), "255.255.255.0", "192.168.4.1", "192.168.4.1")

    def disconnect(self):
        self._st = STAT_IDLE
'''

SECRET = "s3cret-passphrase"


def write_world(path, **kw):
    w = {"aps": {"depot": SECRET}, "reach": True, "hang": False, "rssi": -61}
    w.update(kw)
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(w))
    import os
    os.replace(tmp, str(path))


def fake_network(tmp_path, **kw):
    world = tmp_path / "world.json"
    write_world(world, **kw)
    (tmp_path / "network.py").write_text(FAKE_NETWORK % str(world))
    return world


LINK = r"""
import sys, json, asyncio
sys.path.insert(0, %r)
sys.path.insert(0, %r)
import network
from firmware.core.clock import RealClock
from firmware.core.log import Log
from firmware.core.rng import Rng
from firmware.net.link import WlanLink

lines = []
clock = RealClock()
log = Log(clock, echo=lines.append)
out = {}

def world(**kw):
    w = {"aps": {"depot": %r}, "reach": True, "hang": False, "rssi": -61}
    w.update(kw)
    with open(network.WORLD, "w") as f:
        f.write(json.dumps(w))

async def main():
    link = WlanLink(clock, log, network, "depot", %r, rng=Rng(3), connect_ms=500, base_ms=100, cap_ms=400)
    changes = []
    link.on_change.append(changes.append)
    task = asyncio.create_task(link.run())
    # 1. association hangs: each try times out, backs off, tries again
    world(hang=True)
    await asyncio.sleep_ms(1600)
    out["hang"] = [link.up, link.state, link.tries, link.next_try_ms is not None or link.state == "connecting"]
    # 2. a wrong passphrase on the access point's side
    world(aps={"depot": "another-one"})
    await asyncio.sleep_ms(1200)
    out["wrong"] = [link.up, link.state, link.tries]
    out["wrong_info"] = link.info()
    # 3. the access point is fixed: up, with address and signal
    world()
    ok = await link.wait_up(3000)
    out["up"] = [ok, link.state, link.address, link.signal(), link.tries, link.joins]
    # 4. out of range while up: down, retries, and back when in range
    world(reach=False)
    await asyncio.sleep_ms(1500)
    out["lost"] = [link.up, link.state, link.address, link.signal()]
    world()
    out["back"] = [await link.wait_up(3000), link.joins, list(changes)]
    # 5. credentials from the bench
    try:
        link.configure("depot", "short")
    except ValueError as e:
        out["bad_pass"] = str(e)
    link.configure("depot", %r)
    out["rejoin"] = [await link.wait_up(3000), link.joins]
    # 6. DHCP renews: the same address changes nothing, another one is a
    #    down and up for the link's users (their sockets are dead)
    n = len(changes)
    await asyncio.sleep_ms(1500)
    out["renew_same"] = [link.up, link.address, len(changes) - n]
    world(ip="192.168.4.77")
    await asyncio.sleep_ms(1500)
    out["renew_new"] = [link.up, link.address, changes[n:], link.joins]
    task.cancel()
    out["log"] = lines

asyncio.run(main())
print(json.dumps(out))
"""


def test_wlan_link_joins_backs_off_and_rejoins(tmp_path):
    fake_network(tmp_path)
    r = mp_json(LINK % (ROOT, str(tmp_path), SECRET, SECRET, SECRET))
    up, state, tries, waiting = r["hang"]
    assert not up and state in ("failed", "connecting") and tries >= 2 and waiting, r["hang"]
    assert any("join failed (timeout)" in ln for ln in r["log"])
    up, state, tries = r["wrong"]
    assert not up and state in ("wrong_password", "connecting"), r["wrong"]
    assert any("join failed (wrong_password)" in ln for ln in r["log"])
    assert r["wrong_info"]["passphrase"] == "set" and r["wrong_info"]["ssid"] == "depot"
    ok, state, address, rssi, tries, joins = r["up"]
    assert ok and state == "up" and address == "192.168.4.23" and rssi == -61 and joins == 1
    assert r["lost"] == [False, r["lost"][1], None, None] and r["lost"][1] != "up"
    ok, joins, changes = r["back"]
    assert ok and joins == 2 and changes == [True, False, True]
    assert "8..63" in r["bad_pass"]
    assert r["rejoin"][0] and r["rejoin"][1] == 3
    assert r["renew_same"] == [True, "192.168.4.23", 0]
    assert r["renew_new"] == [True, "192.168.4.77", [False, True], 3]  # no new join: only the address changed
    assert any("address changed from 192.168.4.23 to 192.168.4.77" in ln for ln in r["log"])
    assert not [ln for ln in r["log"] if SECRET in ln], "the passphrase reached the log"


def test_wlan_backoff_has_jitter_and_a_cap():
    # The waits between joins grow to the cap, each with its own random part,
    # so chargers that lost one access point do not rejoin in step.
    r = mp_json(r"""
import sys, json
sys.path.insert(0, %r)
from firmware.net.backoff import Backoff
from firmware.core.rng import Rng
from firmware.net.link import BASE_MS, CAP_MS
a = Backoff(base_ms=BASE_MS, cap_ms=CAP_MS, rng=Rng(1))
b = Backoff(base_ms=BASE_MS, cap_ms=CAP_MS, rng=Rng(2))
print(json.dumps([[a.next_ms() for _ in range(10)], [b.next_ms() for _ in range(10)], BASE_MS, CAP_MS]))
""" % ROOT)
    a, b, base, cap = r
    assert a != b
    assert all(base // 2 <= x <= cap for x in a + b)
    assert max(a[6:]) > cap // 2 and a[0] <= base


def test_a_board_without_radio_says_so(tmp_path):
    # No `network` module (a Pico without W): the board says it has no network.
    (tmp_path / "fakes.py").write_text(FAKES)
    store = tmp_path / "flash"
    store.mkdir()
    (store / "config.json").write_text(json.dumps({"pins": {"demo": True}}))
    p = subprocess.Popen([micropython(), "-c", BOARD % (ROOT, str(tmp_path), str(store))],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        time.sleep(1.5)
        p.stdin.write(b"wifi()\n")
        p.stdin.flush()
        time.sleep(0.5)
    finally:
        p.kill()
        out = p.communicate(timeout=20)[0].decode()
    assert "this board has no network: free vend or local authorisation only" in out, out
    assert "'state': 'none'" in out, out


def test_link_loss_while_charging(tmp_path, csms):
    # The board code of the ESP32 / Pico W (fake port, demo mode, fake WLAN):
    # the link goes while a transaction runs. The charger keeps charging, the
    # dead connection is dropped at once, the stop made during the outage is
    # queued, and it reaches the CSMS after the link and the connection return.
    world = fake_network(tmp_path)
    (tmp_path / "fakes.py").write_text(FAKES)
    store = tmp_path / "flash"
    store.mkdir()
    (store / "config.json").write_text(json.dumps({"pins": {"demo": True}, "id": "WIFI01", "csms_url": csms.url(),
                                                   "wifi_ssid": "depot", "wifi_pass": SECRET}))
    p = subprocess.Popen([micropython(), "-c", BOARD % (ROOT, str(tmp_path), str(store))],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)

    def type_(line, wait=0.3):
        p.stdin.write(line.encode() + b"\n")
        p.stdin.flush()
        time.sleep(wait)

    try:
        csms.wait_for_sync("BootNotification", cp="WIFI01", timeout=30)
        type_("plug(32)")
        type_("ev('C')")
        assert csms.call_sync("WIFI01", "RemoteStartTransaction", {"connectorId": 1, "idTag": "BENCH1"})["status"] \
            == "Accepted"
        csms.wait_for_sync("StartTransaction", cp="WIFI01", timeout=15)
        tx = csms.wait_for_sync("StartTransaction", cp="WIFI01", direction="out", type="CALLRESULT",
                                timeout=10).payload["transactionId"]
        csms.wait_for_sync("StatusNotification", cp="WIFI01", timeout=10,
                           predicate=lambda m: m.payload["status"] == "Charging")
        mark = csms.mark()
        write_world(world, reach=False)
        csms.wait_disconnected_sync("WIFI01", timeout=10)  # dropped at once, not after a ping timeout
        time.sleep(2)
        type_("print('OUTAGE')")
        type_("status()")
        type_("wifi()")
        type_("stop()", 1.0)  # the technician ends the session during the outage
        write_world(world)
        csms.wait_connected_sync("WIFI01", timeout=30)
        stop = csms.wait_for_sync("StopTransaction", cp="WIFI01", timeout=30, after=mark)
        assert stop.payload["transactionId"] == tx
        # A DHCP renewal with another address: the connection is made anew.
        write_world(world, ip="192.168.4.77")
        csms.wait_disconnected_sync("WIFI01", timeout=10)
        csms.wait_connected_sync("WIFI01", timeout=30)
    finally:
        p.kill()
        out = p.communicate(timeout=20)[0].decode()
    during = out[out.rindex("OUTAGE"):]
    assert "Charging" in during and "contactor closed" in during, during  # the link does not stop charging
    assert "ocpp offline" in during or "ocpp connecting" in during, during
    assert "'kind': 'wlan'" in during and "'passphrase': 'set'" in during, during
    assert SECRET not in out


def test_unix_board_uses_the_host_network(fw):
    # The same interface on the Unix board: the host's network, always up,
    # in status() and wifi(); it has no credentials to set.
    r = fw.cmd("wifi")
    assert r["kind"] == "host" and r["state"] == "up", r
    assert fw.status()["net"]["kind"] == "host"
    r = fw.request({"op": "wifi", "ssid": "depot", "passphrase": SECRET})
    assert r["ok"] is False and "no credentials" in r["error"], r
    assert SECRET not in r["error"]

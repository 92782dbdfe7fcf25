"""The first hour at the bench (issue 12): log lines a person and a machine can
read, a simulated world that can be reset and says when it was restored, an
EV whose battery fills (and says how full it is in MeterValues), and a
control-channel client that runs on any system.
"""
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone

from fwproc import ROOT
from mp import run_mp
from ocpp_helpers import until
from test_ocpp_core_a import CP, calls, charging, configure, start

# 2026-12-02T14:48:24.123Z I conn1: ...   (the wall clock is known)
STAMPED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) ([DIWE]) (\S+): (.*)$")
# +273.412s I conn1: ...                  (not yet: uptime)
UPTIME = re.compile(r"^\+(\d+)\.(\d{3})s ([DIWE]) (\S+): (.*)$")
REPR = re.compile(r"\w+\((['\"]|\d|\))")  # NotConnected('connection lost',), OSError(104,)


def _log_lines(text):
    # The console carries other lines too (banner, control channel): the log's are "<stamp> <L> <src>: ".
    return [ln for ln in text.splitlines() if re.match(r"^\S+ [DIWE] \S+: ", ln)]


def _epoch_ms(stamp):
    return round(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def _log_txt(fw):
    with open(os.path.join(fw.dir, "flash", "log.txt")) as f:
        return f.read()


# --- log lines ---------------------------------------------------------------------
def test_log_lines_carry_utc_time_with_milliseconds(fw):
    t0 = fw.status()["time"]  # the charger's wall clock (epoch s), known under the simulator
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.advance(1234)
    lines = _log_lines(fw.console())
    assert lines, fw.console()
    for ln in lines:
        assert STAMPED.match(ln), ln
    # The stamp is the wall time of the event, to the ms: the contactor closes
    # close_delay_ms (500) after the EV asked, both on the simulated clock.
    asked = [ln for ln in lines if "pilot A -> C" in ln or "pilot B -> C" in ln][-1]
    closed = [ln for ln in lines if "contactor closed" in ln][-1]
    ms_asked, ms_closed = (_epoch_ms(STAMPED.match(x).group(1)) for x in (asked, closed))
    assert 500 <= ms_closed - ms_asked <= 520, (asked, closed)
    assert abs(ms_asked - t0 * 1000) < 2000, (asked, t0)
    # log.txt on the store holds the same lines.
    fw.advance(3000)  # the store task flushes the log
    stored = _log_lines(_log_txt(fw))
    assert closed in stored, stored


def test_before_the_wall_clock_is_known_lines_carry_uptime():
    # A board's RTC after power-up (before the CSMS gives the time) runs from a
    # made-up date: the line says how long since power-up instead, marked "+...s".
    p = run_mp(
        "from firmware.core.clock import SimClock\n"
        "from firmware.core.log import Log\n"
        "c = SimClock('step', epoch=0)\n"
        "log = Log(c, echo=print)\n"
        "c._now = 273412\n"
        "log.info('conn1', 'up a while')\n"
        "c.set_wall(1796200584)\n"
        "log.info('ocpp', 'time from the CSMS')\n")
    assert p.returncode == 0, p.stdout + p.stderr
    first, second = p.stdout.splitlines()
    assert first == "+273.412s I conn1: up a while", first
    assert second == "2026-12-02T08:36:24.412Z I ocpp: time from the CSMS", second


def test_json_lines_log_for_machines(make_fw):
    fw = make_fw(sets=["log_json=true"])
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.advance(4000)
    out = [ln for ln in fw.console().splitlines() if ln.startswith("{")]
    stored = _log_txt(fw).splitlines()
    for lines in (out, stored):
        assert len(lines) >= 4, fw.console()
        recs = [json.loads(ln) for ln in lines]
        for r in recs:
            assert list(r) == ["time", "uptime_ms", "level", "src", "msg"], r
            assert r["level"] in ("debug", "info", "warn", "error")
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", r["time"]), r
        closed = [r for r in recs if r["msg"].startswith("contactor closed")]
        assert closed and closed[0]["src"] == "conn1" and closed[0]["level"] == "info", recs
    # No text lines besides: the config error list is empty, so every log line is JSON.
    assert not _log_lines(fw.console()), fw.console()


def test_a_lost_connection_is_logged_in_words(make_csms, make_fw):
    csms, fw = start(make_csms, make_fw)
    csms.drop_sync(CP)
    until(fw, lambda: any("connection ended" in e["msg"] or "reader ended" in e["msg"] for e in fw.log()),
          what="the charger notices the lost connection")
    msgs = [e["msg"] for e in fw.log() if e["src"] == "ocpp"]
    assert [m for m in msgs if "ended" in m], msgs
    for m in msgs:
        assert not REPR.search(m), m
    # The console shows the same words.
    assert [ln for ln in fw.console().splitlines() if "connection ended: " in ln or "reader ended: " in ln]


def test_csms_log_lines_carry_the_same_utc_stamps(tmp_path, make_fw):
    # The dev CSMS as make sim starts it: its stdout is csms.log.
    ready = tmp_path / "ready.json"
    log_path = tmp_path / "csms.log"
    with open(log_path, "w") as out:
        p = subprocess.Popen([sys.executable, "-m", "tools.csms", "--port", "0", "--http-port", "0", "--no-stdin",
                              "--data-dir", str(tmp_path / "csms"), "--ready-file", str(ready)],
                             cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        port = json.loads(ready.read_text())["port"]
        fw = make_fw(sets=["csms_url=ws://127.0.0.1:%d" % port])
        while "BootNotification.conf" not in log_path.read_text() and time.monotonic() < deadline:
            fw.advance(100)
            time.sleep(0.05)
    finally:
        p.terminate()
        p.wait(10)
    lines = [ln for ln in log_path.read_text().splitlines() if ln.strip()]
    # The start-up banner (where it listens, the admin API) first, then the log.
    while lines and (lines[0].startswith("dev CSMS") or lines[0].startswith(" ")):
        lines.pop(0)
    assert any("BootNotification.req" in ln for ln in lines), lines
    now = time.time()
    for ln in lines:
        m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) ", ln)
        assert m, ln
        assert abs(_epoch_ms(m.group(1)) / 1000 - now) < 120, ln  # UTC, not local time


# --- the plant ---------------------------------------------------------------------
def test_a_restored_plant_is_named_in_the_banner_and_plant_reset_starts_afresh(make_fw):
    fw = make_fw()
    assert "plant: restored" not in fw.console()  # a first start: a fresh plant
    fw.cmd("ambient", celsius=45)
    fw.cmd("plug", amps=32)
    fw.cmd("demand", amps=16)
    fw.advance(1000)
    fw.powercut()
    fw.start()
    banner = fw.console()
    assert re.search(r"^plant: restored from .*plant\.json \(ambient 45 C; connector 1: EV plugged in, "
                     r"demand 16 A\); plant_reset\(\) starts afresh$", banner, re.M), banner
    assert fw.status()["plant"]["ambient_c"] == 45
    r = fw.cmd("plant_reset")
    assert "plant reset" in r["result"]
    fw.advance(2000)
    s = fw.status()
    c = s["connectors"][0]
    assert s["plant"]["ambient_c"] == 25 and s["plant"]["ev"] == ["A"] and c["pilot"] == "A", s
    assert c["energy_wh"] >= 0  # the register stays (never runs backward)
    fw.powercut()
    fw.start()
    banner = fw.console()
    assert re.search(r"^plant: restored from .*plant\.json; plant_reset\(\) starts afresh$", banner, re.M), banner
    assert fw.status()["plant"]["ambient_c"] == 25


def test_plant_reset_frees_a_welded_contactor_and_unplugs(fw):
    fw.charging(32)
    fw.cmd("fault", name="weld")
    fw.cmd("ev", state="B")
    fw.advance(3000)
    assert fw.status()["plant"]["contacts"] == [True]  # welded shut
    fw.cmd("plant_reset")
    fw.advance(1000)
    s = fw.status()
    assert s["plant"]["contacts"] == [False] and s["plant"]["ev"] == ["A"], s


def test_the_default_ev_has_a_battery_that_fills(fw):
    fw.charging(32)
    s = fw.status()
    assert s["plant"]["soc_pct"] == [30], s["plant"]
    # Near full (above 80 %) it draws less than offered; full, it stops asking.
    fw.cmd("evopt", soc_pct=90)
    fw.advance(5000)
    c = fw.conn()
    assert c["status"] == "Charging" and 0 < c["current_ma"] < 0.6 * c["offered_ma"], c
    fw.until(lambda s: s["connectors"][0]["status"] == "SuspendedEV", step=60_000, limit=4 * 3600_000)
    s = fw.status()
    assert s["plant"]["soc_pct"] == [100] and s["plant"]["ev"] == ["B"] and not s["connectors"][0]["contactor"], s
    wh = s["connectors"][0]["energy_wh"]
    fw.advance(3600_000)
    assert fw.conn()["energy_wh"] == wh, "a full car takes no more energy"
    # A session from 30 % puts about 42 kWh into the 60 kWh car, not 198 kWh.
    fw.cmd("unplug")
    fw.advance(2000)
    start_wh = fw.conn()["energy_wh"]
    fw.charging(32)
    assert fw.status()["plant"]["soc_pct"] == [30]  # the next car, at its starting charge
    fw.until(lambda s: s["connectors"][0]["status"] == "SuspendedEV", step=300_000, limit=8 * 3600_000)
    got = fw.conn()["energy_wh"] - start_wh
    assert 41_000 <= got <= 43_000, got


def test_battery_ends_the_charge_and_meter_values_carry_soc(make_csms, make_fw):
    csms, fw = start(make_csms, make_fw)
    configure(fw, csms, MeterValueSampleInterval=60, ClockAlignedDataInterval=0,
              MeterValuesSampledData="Energy.Active.Import.Register,SoC")
    fw.cmd("evopt", soc_pct=96)
    mark = csms.mark()
    charging(fw, csms)
    until(fw, lambda: fw.conn()["status"] == "SuspendedEV", limit_ms=2 * 3600_000, step=30_000,
          what="the battery is full")
    until(fw, lambda: len(calls(csms, "StatusNotification", mark)) and
          calls(csms, "StatusNotification", mark)[-1].payload["status"] == "SuspendedEV", limit_ms=10_000,
          what="SuspendedEV reported")
    socs = []
    for m in calls(csms, "MeterValues", mark):
        for mv in m.payload["meterValue"]:
            for sv in mv["sampledValue"]:
                if sv.get("measurand") == "SoC":
                    assert sv["unit"] == "Percent" and sv["location"] == "EV", sv
                    socs.append(int(sv["value"]))
    assert len(socs) >= 5 and socs == sorted(socs), socs
    assert socs[0] >= 96 and socs[-1] >= 99, socs


# --- tools/ctl.py ------------------------------------------------------------------
def _ctl(fw, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "ctl.py"), "--port", str(fw.port)]
                          + list(args), capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_ctl_sends_one_request_and_prints_the_reply(fw):
    p = _ctl(fw, "plug", "32")
    assert p.returncode == 0 and json.loads(p.stdout) == {"ok": True}, p.stdout + p.stderr
    p = _ctl(fw, "ev", "C")
    assert p.returncode == 0, p.stderr
    p = _ctl(fw, "advance", "ms=3000")
    assert p.returncode == 0 and json.loads(p.stdout)["t"] >= 3000, p.stdout + p.stderr
    p = _ctl(fw, "status")
    c = json.loads(p.stdout)["connectors"][0]
    assert c["contactor"] and c["pilot"] == "C", c
    p = _ctl(fw, '{"op": "evopt", "soc_pct": 50}')
    assert p.returncode == 0 and json.loads(p.stdout)["ev"]["soc_wh"] == 30000, p.stdout
    # A refusal: exit status 1 and the charger's error.
    p = _ctl(fw, "plug", "33")
    assert p.returncode == 1 and "amps must be one of" in p.stderr, p.stdout + p.stderr
    p = _ctl(fw, "plgu")
    assert p.returncode == 1 and "unknown op" in p.stderr, p.stderr


def test_ctl_without_a_simulator_says_so(tmp_path):
    from fwproc import free_port
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "ctl.py"), "--port", str(free_port()), "status"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "no simulator on 127.0.0.1:" in p.stderr and "Traceback" not in p.stderr, p.stderr

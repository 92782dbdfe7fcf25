"""Tick wrap (issue 8, item 5).

ESP32 and RP2040 ms ticks wrap every 2^30 ms (12.4 days). The firmware's
clocks (firmware/core/clock.py) present that period on the Unix port too, and
the simulated clock starts WRAP_AT_MS before a wrap, so every test crosses one.
These tests put what measures time right across it: the OCPP heartbeat, a
transaction with its meter values and statuses, the trial confirmation of a
new image, the weld check after opening and the hardware watchdog.

Times from the bench ("t", the log's and the trace's stamps, a fault's
"since") are ms on the board's running clock and do not wrap; status "ticks"
is the raw tick count the firmware works with.
"""
from ocpp_b import boot, calls, configure, pump, results, start_charging, statuses, until
from ocpp_helpers import CP
from ota_helpers import advance_until, fw_sets, kit, signed_request, signed_statuses, slot_of  # noqa: F401
from scope import charge, fault, first, scope

TICKS_PERIOD = 1 << 30
WRAP_AT_MS = 600_000  # board time of the first wrap: the simulated clock starts 10 min before it
AUX_MS = 1000  # the weld check: contacts still closed this long after the coil was released
WDT_MS = 5000  # the simulated hardware watchdog


def stop_by_token(fw, csms, tag="CARD1", mark=None):
    fw.cmd("token", tag=tag)
    until(fw, lambda: calls(csms, "StopTransaction", mark), what="StopTransaction")
    return calls(csms, "StopTransaction", mark)[-1]


def go_to(fw, t, step=5000):
    """Advance (in steps, so the OCPP client and the CSMS keep talking) to board time t."""
    pump(fw, t - fw.now(), step)
    s = fw.status()
    assert s["t"] == t
    # The firmware's own ticks: TICKS_PERIOD - WRAP_AT_MS at power-up, wrapped at WRAP_AT_MS.
    assert s["ticks"] == (TICKS_PERIOD - WRAP_AT_MS + t) % TICKS_PERIOD, s["ticks"]


def test_the_ticks_wrap_as_on_a_board(fw):
    s = fw.status()
    assert s["ticks"] == TICKS_PERIOD - WRAP_AT_MS + s["t"]
    fw.charging(32)
    go_to(fw, WRAP_AT_MS + 1234)
    s = fw.status()
    assert s["t"] == WRAP_AT_MS + 1234 and s["ticks"] == 1234, s
    assert s["uptime_ms"] == s["t"]
    c = s["connectors"][0]
    assert c["contactor"] and c["status"] == "Charging" and c["faults"] == [], c
    assert s["watchdog"] == "ok" and s["lateness"]["max"] < 100, s


def test_heartbeats_go_on_across_the_wrap(make_csms, make_fw):
    csms = make_csms(ping_interval=None, heartbeat_interval=60)
    fw = boot(csms, make_fw)
    go_to(fw, WRAP_AT_MS - 30_000)
    assert calls(csms, "Heartbeat"), "no heartbeat before the wrap"
    go_to(fw, WRAP_AT_MS + 1000)
    mark = csms.mark()
    go_to(fw, WRAP_AT_MS + 1000 + 5 * 60_000)
    n = len(calls(csms, "Heartbeat", mark))
    assert 4 <= n <= 6, "%d heartbeats in the 5 minutes after the wrap (interval 60 s)" % n


def test_a_transaction_across_the_wrap(csms, make_fw):
    fw = boot(csms, make_fw)
    configure(fw, csms, MeterValueSampleInterval=30)
    go_to(fw, WRAP_AT_MS - 90_000)
    t_start = fw.now()
    start_charging(fw, csms)
    start = results(csms, "StartTransaction")[-1]
    assert start["idTagInfo"]["status"] == "Accepted"
    go_to(fw, WRAP_AT_MS + 1000, step=1000)
    mark = csms.mark()
    go_to(fw, WRAP_AT_MS + 181_000, step=1000)
    # Still charging, never opened, meter values every 30 s after the wrap.
    c = fw.conn()
    assert c["contactor"] and c["status"] == "Charging" and c["faults"] == [], c
    assert not scope(fw, t_start, "coil", False), fw.trace(t_start)
    mv = calls(csms, "MeterValues", mark)
    assert 5 <= len(mv) <= 7, mv
    # Stopped after the wrap: the StopTransaction and the statuses that follow reach the CSMS.
    stop = stop_by_token(fw, csms, mark=mark)
    assert stop["reason"] == "Local" and stop["meterStop"] > 0
    fw.cmd("unplug")
    until(fw, lambda: statuses(csms, 1, mark)[-1:] == ["Available"], what="Available after the wrap")
    assert "Finishing" in statuses(csms, 1, mark), statuses(csms, 1, mark)
    ls = fw.conn()["last_session"]
    assert ls["reason"] == "Local" and ls["start"] < WRAP_AT_MS and ls["wh"] > 0, ls


def test_the_weld_check_across_the_wrap(fw):
    charge(fw)
    go_to(fw, WRAP_AT_MS - AUX_MS // 2)
    fw.cmd("fault", name="weld")
    fw.cmd("ev", state="B")  # the EV stops; the coil is released just before the wrap
    fw.advance(AUX_MS + 1000)
    t_off = first(fw, WRAP_AT_MS - AUX_MS, "coil", False)
    assert t_off < WRAP_AT_MS
    st = fw.conn()
    w = fault(st, "weld")
    assert w and w["severity"] == "latched" and st["error_code"] == "PowerSwitchFailure", st
    assert WRAP_AT_MS < w["since"] <= t_off + AUX_MS + 20, (w, t_off)
    # It stays open with the EV asking again.
    fw.cmd("ev", state="C")
    fw.advance(5000)
    assert not scope(fw, t_off, "coil", True), fw.trace(t_off)
    assert fault(fw.conn(), "weld")


def test_the_hardware_watchdog_across_the_wrap(fw):
    fw.charging(32)
    go_to(fw, WRAP_AT_MS - 2000)
    fw.cmd("stall", ms=30_000)
    fw.advance(WDT_MS + 4000)  # unfed since about the wrap - 1.5 s
    s = fw.status()
    assert s["boots"] == 2, s
    assert "hardware watchdog expired" in fw.console()


def test_a_trial_image_confirms_across_the_wrap(make_csms, make_fw, kit):  # noqa: F811
    csms = make_csms(ping_interval=None, http_port=0)
    fw = make_fw(sets=fw_sets(kit, csms))  # ota_confirm_s=30
    fw.advance(100)
    csms.wait_for_sync("BootNotification", cp=CP, timeout=10)
    go_to(fw, WRAP_AT_MS - 15_000)  # the trial boot follows within a second; 30 s to confirm
    csms.files.add_firmware("good.bin", kit.files["good"]["bundle"].read_bytes())
    r = signed_request(csms, fw, csms.file_url("good.bin"), kit.files["good"], request_id=5)
    assert r["status"] == "Accepted"
    done = lambda: signed_statuses(csms, 5)[-1:] in (["Installed"], ["InstallationFailed"])  # noqa: E731
    assert advance_until(fw, done, limit_ms=900_000), signed_statuses(csms, 5)
    assert signed_statuses(csms, 5)[-1] == "Installed"
    assert slot_of(fw) == ("A", "0.2.0")
    log = fw.log()
    (t_trial,) = [e["t"] for e in log if "trial boot of" in e["msg"]]
    (t_ok,) = [e["t"] for e in log if "confirmed in slot" in e["msg"]]
    assert t_trial < WRAP_AT_MS < t_ok, (t_trial, t_ok)
    # Confirmed: another reboot stays on it.
    fw.reboot()
    fw.advance(5000)
    assert slot_of(fw) == ("A", "0.2.0")


def test_tick_arithmetic_goes_through_the_clock():
    # Only firmware/core/clock.py touches the port's own ticks: everything
    # else uses the clock's ticks_ms/ticks_diff/ticks_add (or the module
    # functions of that name), so no tick is compared with another period's.
    # And no tick read is subtracted from or compared with - or <.
    import os
    import re
    from fwproc import ROOT
    port = re.compile(r"\btime\.ticks_(ms|diff|add)\b|from time import[^\n]*\bticks_")
    naive = re.compile(r"ticks_ms\(\)\s*(-|<|>)|(-|<|>)\s*[\w.]*ticks_ms\(\)")
    bad = []
    for top in ("firmware", "boards"):
        for base, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                p = os.path.join(base, f)
                rel = os.path.relpath(p, ROOT)
                if not f.endswith(".py") or rel == os.path.join("firmware", "core", "clock.py"):
                    continue
                for n, line in enumerate(open(p), 1):
                    code = line.split("#")[0]
                    if port.search(code) or naive.search(code):
                        bad.append("%s:%d: %s" % (rel, n, line.strip()))
    assert not bad, "\n".join(bad)

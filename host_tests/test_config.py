"""Configuration: --set overrides, <dir>/flash/config.json, --config FILE and
command-line options (firmware/core/config.py, boards/unix/main.py).

A bad value is reported with its key and replaced by a safe default; the
firmware runs. A bad charge point id refuses start (exit 2, a clear message,
no traceback); so does a bad command-line option (usage, exit 2).
"""
import json
import os
import re
import subprocess

import pytest

from fwproc import ROOT, FirmwareProcess, micropython
from mp import run_mp

MAIN = os.path.join(ROOT, "boards", "unix", "main.py")


def run_main(tmp_path, args, timeout=10):
    """Run main.py with args, expecting it to exit by itself; (rc, output)."""
    cmd = [micropython(), MAIN, "--dir", str(tmp_path / "sim"), "--time", "step", "--no-repl"] + list(args)
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired as e:  # it started and ran on (killed by run)
        return None, (e.output or b"").decode("utf-8", "replace") + "\n[still running after %s s]" % timeout
    return p.returncode, p.stdout.decode("utf-8", "replace")


def config_errors(fw):
    return [e["msg"] for e in fw.log() if e["src"] == "config" or e["src"] == "store"]


def start(tmp_path, sets=(), name="fw"):
    return FirmwareProcess(tmp_path / name, sets=sets).start()


@pytest.fixture
def fws():
    started = []
    yield started
    for fw in started:
        fw.close()


# --- a bad value: an error naming the key, a safe default, the firmware runs ----------
BAD_SETS = [
    # A garbled current limit falls back to the least a charger offers (6 A),
    # not to the default: the circuit may be smaller than 32 A.
    ("max_current_a=200", "max_current_a", "using 6"),
    ("max_current_a=true", "max_current_a", "using 6"),
    ("phases=2", "phases", "using 3"),
    ("phases=4", "phases", "using 3"),
    ("voltage_v=9000", "voltage_v", "using 230"),
    ("derate.points=[[70,50],[60,25]]", "derate.points", "using [[65, 50], [68, 25]]"),
    ("derate.points=[[65,150]]", "derate.points", "using [[65, 50], [68, 25]]"),
    ("derate.shutdown_c=hot", "derate.shutdown_c", "using 71"),
    ("derate.shutdown_c=60", "derate", "using defaults"),  # below the derate points
    ("derate.bogus=3", "derate.bogus", "ignored"),
    ("derate=5", "derate", "defaults"),
    ("ventilation=1", "ventilation", "using False"),
    ("free_vend=yes", "free_vend", "using True"),
    ("close_delay_ms=-5", "close_delay_ms", "using 500"),
    ("stop_force_ms=100000", "stop_force_ms", "using 6000"),
    ("period_ms=0", "period_ms", "using 10"),
    # Garbled RCD settings: the longest wait and no retry (the safe choice).
    ("rcd_retries=2.5", "rcd_retries", "using 0"),
    ("rcd_retry_s=soon", "rcd_retry_s", "using 3600"),
    ("log_level=5", "log_level", "using 20"),
    ("pins=3", "pins", "ignored"),
    ("foo=1", "foo", "unknown key"),
    ("cable_a=-1", "cable_a", "using 0"),
    ("connectors=x", "connectors", "using 1"),
    ("nokey", "nokey", "key=value"),
]


@pytest.mark.parametrize("assignment,key,default", BAD_SETS, ids=[b[0] for b in BAD_SETS])
def test_bad_set_value_is_reported_by_key_and_the_default_used(tmp_path, fws, assignment, key, default):
    fw = start(tmp_path, [assignment])
    fws.append(fw)
    lines = [x for x in fw.console().splitlines() if " E config: " in x]
    named = [x for x in lines if re.search(r"\b%s\b" % re.escape(key), x)]
    assert named, (key, lines)
    assert any(default in x for x in named), (default, named)
    assert "Traceback" not in fw.console()
    # The same lines are in the log a technician reads (log op / log.txt).
    assert any(key in m for m in config_errors(fw))
    fw.advance(2000)
    with open(os.path.join(fw.dir, "flash", "log.txt")) as f:
        assert key in f.read()
    # And the charger charges with the safe values.
    st = fw.charging(32)
    want = 6000 if key == "max_current_a" else 32000
    assert st["offered_ma"] == want and st["limits"]["config"] == want, st


# --- a bad value never fails open (issue 8, item 9) -------------------------------------
# A CSMS that nothing listens on: the charger is configured for a back office
# and must not give energy away while it cannot reach it.
NO_CSMS = "csms_url=ws://127.0.0.1:9/ocpp"


def assert_no_energy_without_authorization(fw):
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.advance(5000)
    c = fw.conn()
    assert not c["contactor"] and c["offered_ma"] == 0, c


@pytest.mark.parametrize("value", ["yes", "1", "on", "[true]"])
def test_bad_free_vend_with_a_csms_is_off(tmp_path, fws, value):
    fw = start(tmp_path, [NO_CSMS, "free_vend=" + value])
    fws.append(fw)
    named = [x for x in fw.console().splitlines() if " E config: " in x and "free_vend" in x]
    assert named and all("using False" in x for x in named), named
    assert_no_energy_without_authorization(fw)


def test_garbled_csms_url_still_means_no_free_vend(tmp_path, fws):
    # The URL is unusable, but an installer meant a back office: free vend
    # stays off rather than falling back to "no CSMS, so free".
    # (In config.json: the Unix port's micropython dies on some command-line
    # arguments over about 250 bytes, before any firmware code runs.)
    flash = tmp_path / "fw" / "flash"
    flash.mkdir(parents=True)
    (flash / "config.json").write_text(json.dumps({"csms_url": "ws://" + "x" * 600}))
    fw = start(tmp_path)
    fws.append(fw)
    assert any("csms_url" in m for m in config_errors(fw))
    assert_no_energy_without_authorization(fw)


def test_explicit_free_vend_with_a_csms_is_honoured(tmp_path, fws):
    fw = start(tmp_path, [NO_CSMS, "free_vend=true"])
    fws.append(fw)
    assert not config_errors(fw), config_errors(fw)
    assert fw.charging(32)["offered_ma"] == 32000


UNKNOWN = [
    ("--set", "max_curent_a=16", "max_curent_a", "max_current_a"),
    ("--set", "ventilaton=true", "ventilaton", "ventilation"),
    ("--set", "freevend=false", "freevend", "free_vend"),
    ("--set", "derate.shutdown=60", "shutdown", "shutdown_c"),
    ("file", {"max_current": 16}, "max_current", "max_current_a"),
    ("file", {"csms-url": "ws://x"}, "csms-url", "csms_url"),
    ("file", {"derate": {"hysteresis": 2}}, "hysteresis", "hysteresis_c"),
]


@pytest.mark.parametrize("where,what,key,near", UNKNOWN, ids=[u[2] for u in UNKNOWN])
def test_unknown_key_names_the_nearest_known_key(tmp_path, fws, where, what, key, near):
    if where == "file":
        flash = tmp_path / "fw" / "flash"
        flash.mkdir(parents=True)
        (flash / "config.json").write_text(json.dumps(what))
        fw = start(tmp_path)
    else:
        fw = start(tmp_path, [what])
    fws.append(fw)
    lines = [x for x in fw.console().splitlines() if " E config: " in x and key in x]
    assert lines, fw.console()
    assert any(re.search(r"\b%s\b" % re.escape(near), x) for x in lines), lines
    assert "Traceback" not in fw.console()


def test_every_key_is_in_the_readme_table_with_its_fallback():
    # The README table says what each key falls back to on a bad value.
    p = run_mp("from firmware.core.config import SCHEMA\nprint(' '.join(sorted(SCHEMA)))")
    assert p.returncode == 0, p.stderr
    keys = p.stdout.split()
    assert "free_vend" in keys
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    table = readme[readme.index("| key |"):]
    table = table[:table.index("\n\n")]
    header = table.splitlines()[0]
    assert "bad value" in header, header
    for key in keys:
        assert re.search(r"`%s`" % key, table), key


def test_bool_errors_read_as_true_or_false(tmp_path, fws):
    # "must be bool 0..0" tells a technician nothing.
    fw = start(tmp_path, ["ventilation=1", "free_vend=2"])
    fws.append(fw)
    for line in [x for x in fw.console().splitlines() if " E config: " in x]:
        assert "0..0" not in line, line


def test_defaults_behave_after_bad_derate_and_ventilation(tmp_path, fws):
    fw = start(tmp_path, ["derate.points=[[70,50],[60,25]]", "derate.shutdown_c=hot", "ventilation=1"])
    fws.append(fw)
    fw.charging(32)
    fw.cmd("temp", celsius=66)  # the default curve: half current at 65 C
    c = fw.conn()
    assert fw.status()["derate_pct"] == 50 and c["offered_ma"] == 16000, c
    fw.cmd("temp", celsius=71.5)  # the default shutdown at 71 C
    fw.advance(7000)
    c = fw.conn()
    assert fw.status()["derate_pct"] == 0 and not c["contactor"], c
    assert "overtemp" in [f["code"] for f in c["faults"]]
    fw.cmd("temp", celsius=25)
    fw.cmd("unplug")
    fw.advance(1000)
    # Ventilation stays off: an EV asking in D gets no energy.
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="D")
    fw.advance(3000)
    c = fw.conn()
    assert not c["contactor"] and c["pilot"] == "D", c


@pytest.mark.parametrize("value", ["16A", "16000", "5", "-16"])
def test_bad_max_current_never_raises_the_current(tmp_path, fws, value):
    # An installer who meant 16 A for a 16 A circuit and wrote "16A" (or mA)
    # must not get 32 A: for the current limit, the safe fallback is the
    # least current (6 A), not the most, or no charging at all.
    fw = start(tmp_path, ["max_current_a=" + value])
    fws.append(fw)
    assert any("max_current_a" in m for m in config_errors(fw))
    fw.cmd("plug", amps=32)
    fw.cmd("ev", state="C")
    fw.advance(3000)
    c = fw.conn()
    assert c["offered_ma"] <= 6000 and c["limits"]["config"] <= 6000, c


# --- the charge point id ------------------------------------------------------------
BAD_IDS = ["id=bad id!", 'id="bad id!"', "id=", "id=" + "x" * 49, "id=[1]", "id=a/b", 'id="semi;colon"']


@pytest.mark.parametrize("assignment", BAD_IDS)
def test_bad_id_refuses_to_start(tmp_path, assignment):
    rc, out = run_main(tmp_path, ["--port", "0", "--set", assignment])
    assert rc == 2, out
    assert "Traceback" not in out, out
    assert re.search(r"\bid\b", out) and "refusing to start" in out, out


def test_bad_id_in_config_json_refuses_to_start(tmp_path):
    flash = tmp_path / "sim" / "flash"
    flash.mkdir(parents=True)
    (flash / "config.json").write_text('{"id": "bad id!"}')
    rc, out = run_main(tmp_path, ["--port", "0"])
    assert rc == 2 and "refusing to start" in out and "bad id!" in out, out
    assert "Traceback" not in out


def test_digits_only_id_from_the_command_line(tmp_path, fws):
    # Charge point ids are often serial numbers; letters and digits are
    # allowed, so --set id=0042 means the id "0042", not the number 42.
    fw = start(tmp_path, ["id=0042"])
    fws.append(fw)
    assert fw.status()["id"] == "0042"


def test_good_id(tmp_path, fws):
    fw = start(tmp_path, ["id=CP-7_a.b:c"])
    fws.append(fw)
    assert fw.status()["id"] == "CP-7_a.b:c"


# --- config.json in the store -----------------------------------------------------------
def test_plain_config_json_in_flash_is_read(tmp_path, fws):
    flash = tmp_path / "fw" / "flash"
    flash.mkdir(parents=True)
    (flash / "config.json").write_text(json.dumps(
        {"id": "CP-7", "max_current_a": 16, "derate": {"shutdown_c": 75, "resume_c": 70}}, indent=2))
    fw = start(tmp_path)
    fws.append(fw)
    assert not config_errors(fw), config_errors(fw)
    s = fw.status()
    assert s["id"] == "CP-7" and s["connectors"][0]["limits"]["config"] == 16000
    st = fw.charging(32)
    assert st["offered_ma"] == 16000
    fw.cmd("temp", celsius=72)  # above the default 71, below the configured 75
    fw.advance(1000)
    assert fw.status()["derate_pct"] == 25 and fw.conn()["contactor"]
    fw.close()
    # A --set override wins over the file.
    fw2 = FirmwareProcess(tmp_path / "fw", sets=["max_current_a=20"]).start()
    fws.append(fw2)
    assert fw2.conn()["limits"]["config"] == 20000 and fw2.status()["id"] == "CP-7"


CORRUPT = [
    b"\x00\xffgarbage{{{",
    b'{"max_current_a": 1',
    b"",
    b"[1, 2]",
    b'"just a string"',
    b'{"max_current_a": 16}\n0badc0de\n',  # looks like a store record with a wrong CRC
]


@pytest.mark.parametrize("data", CORRUPT, ids=["binary", "truncated", "empty", "list", "string", "bad-crc"])
def test_corrupt_config_json_gives_an_error_and_defaults(tmp_path, fws, data):
    flash = tmp_path / "fw" / "flash"
    flash.mkdir(parents=True)
    (flash / "config.json").write_bytes(data)
    fw = start(tmp_path)
    fws.append(fw)
    console = fw.console()
    assert "Traceback" not in console
    errs = config_errors(fw)
    assert any("config" in m for m in errs), errs
    s = fw.status()
    assert s["id"] == "SIM0001" and s["connectors"][0]["limits"]["config"] == 32000
    assert fw.charging(32)["offered_ma"] == 32000


def test_config_file_option(tmp_path, fws):
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"id": "CP-9", "max_current_a": 10}')
    rc, out = run_main(tmp_path, ["--port", "0", "--config", str(tmp_path / "missing.json")])
    assert rc == 2 and "missing.json" in out and "Traceback" not in out, out
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    rc, out = run_main(tmp_path, ["--port", "0", "--config", str(bad)])
    assert rc == 2 and "bad.json" in out and "Traceback" not in out, out


# --- command-line options -------------------------------------------------------------
BAD_OPTIONS = [
    ["--port", "abc"],
    ["--port"],
    ["--port", "70000"],
    ["--port", "-1"],
    ["--time", "0"],
    ["--time", "-1"],
    ["--time", "fast"],
    ["--time", "nan"],
    ["--time", "inf"],
    ["--connectors", "9"],
    ["--connectors", "0"],
    ["--connectors", "x"],
    ["--seed", "x"],
    ["--dir"],
    ["--set"],
    ["--config"],
    ["--bogus"],
    ["positional"],
]


@pytest.mark.parametrize("args", BAD_OPTIONS, ids=[" ".join(a) for a in BAD_OPTIONS])
def test_bad_option_gives_usage_and_exit_2(tmp_path, args):
    rc, out = run_main(tmp_path, args if args[0] == "--port" else ["--port", "0"] + args, timeout=3)
    assert rc == 2, (rc, out)
    assert "usage:" in out and args[0] in out, out
    assert "Traceback" not in out, out


def test_help_option(tmp_path):
    rc, out = run_main(tmp_path, ["--help"])
    assert rc == 0 and out.startswith("usage:"), out


def test_port_in_use(tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        rc, out = run_main(tmp_path, ["--port", str(port)])
    finally:
        s.close()
    assert rc == 2 and "port %d" % port in out and "Traceback" not in out, out

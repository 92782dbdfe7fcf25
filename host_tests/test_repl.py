"""The bench REPL on the console (README.md "At the bench": plug(32), ev("C"), status(),
help() as plain functions), driven through the firmware's stdin.

The REPL runs as a task beside the charger: a command that fails prints an
error and the charger goes on; Ctrl-C (a \\x03 on the input) drops the line;
SIGINT ends the firmware with the contactors open and the plant saved.
"""
import json
import os
import re
import signal
import time

import pytest

from fwproc import FirmwareProcess

PROMPT = ">>> "
# Every bench command a technician can call (bench.COMMANDS but advance, which
# only the control channel has in step mode).
COMMANDS = ["available", "ambient", "clear", "demand", "ev", "evopt", "fault", "help", "limit", "log", "plug",
            "powercut", "reboot", "service", "stall", "status", "stop", "temp", "token", "trace", "unplug"]


class Repl:
    def __init__(self, fw):
        self.fw = fw
        self.wait(lambda text: PROMPT in text)

    def wait(self, pred, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.fw.console()
            if pred(text):
                return text
            assert self.fw.proc.poll() is None, "firmware ended:\n" + text[-2000:]
            time.sleep(0.01)
        raise AssertionError("console did not show it in %s s:\n%s" % (timeout, self.fw.console()[-2000:]))

    def send(self, data):
        self.fw.proc.stdin.write(data.encode("utf-8") if isinstance(data, str) else data)
        self.fw.proc.stdin.flush()

    def run(self, line):
        """Type a line; return what the console printed until the next prompt."""
        before = self.fw.console()
        n = before.count(PROMPT)
        self.send(line + "\n")
        text = self.wait(lambda t: t.count(PROMPT) > n)
        out = text[len(before):]
        return out[:out.rfind(PROMPT)]


@pytest.fixture
def repl(make_fw):
    fw = make_fw(repl=True)
    return Repl(fw)


def charge(repl):
    repl.run("plug(32)")
    repl.run('ev("C")')
    repl.fw.advance(3000)
    c = repl.fw.conn()
    assert c["contactor"] and c["status"] == "Charging", c


def assert_still_charging(fw):
    assert fw.proc.poll() is None, fw.console()[-2000:]
    t = fw.advance(1000)
    c = fw.conn()
    assert c["contactor"] and c["status"] == "Charging" and fw.now() == t, c


# --- help and status ---------------------------------------------------------------
def test_help_lists_the_commands(repl):
    out = repl.run("help()")
    for op in COMMANDS:
        assert re.search(r"^\s+%s\(" % op, out, re.M), (op, out)
    assert re.search(r"^\s+plug\(amps, c\)\s+plug an EV in", out, re.M), out


def test_every_command_listed_by_help_is_defined(repl):
    # What help() lists a technician can call: at worst it explains why not.
    listed = re.findall(r"^\s+(\w+)\(", repl.run("help()"), re.M)
    assert listed
    for op in listed:
        out = repl.run(op)  # the bare name: the function object, or a NameError
        assert "NameError" not in out, (op, out)


def test_status_block(repl):
    charge(repl)
    out = repl.run("status()")
    fw = repl.fw
    checks = [
        r"SIM0001\s+firmware 0\.\d+\.\d+ \(slot [ABF]\)",  # firmware version and the image it runs from
        r"boot #1",
        r"up 0:00:03",  # uptime
        r"temperature \d+\.\d C\s+derate 100%",  # temperature and derate
        r"watchdog ok",
        r"connector 1\s+Charging\s+pilot C \(\+[56]\.\d V / -1[12]\.\d V\)",  # pilot state and volts
        r"PWM 53\.3% = 32\.0 A",  # duty and amps
        r"limit 32\.0 A \(config\)",
        r"contactor closed \(aux closed\)",
        r"energy \d+\.\d{3} kWh\s+\d+\.\d\d kW\s+\d+\.\d A",
        r"session FREEVEND",
        r"faults: none",
    ]
    for pat in checks:
        assert re.search(pat, out), (pat, out)
    # A fault shows in the block with its severity and OCPP code.
    repl.run('fault("meter")')
    out = repl.run("status()")
    assert re.search(r"fault meter \(recoverable, PowerMeterFailure\)", out), out
    fw.advance(7000)
    out = repl.run("status()")
    assert "contactor open" in out and "PWM off (+12 V)" in out, out


def test_commands_drive_the_plant(repl):
    fw = repl.fw
    repl.run("plug(20)")
    assert fw.status()["plant"]["ev"] == ["B"]
    repl.run("ev('C')")
    fw.advance(3000)
    c = fw.conn()
    assert c["contactor"] and c["limits"]["cable"] == 20000
    repl.run("limit(10)")
    assert fw.conn()["offered_ma"] == 10000
    repl.run("temp(66)")
    assert fw.status()["derate_pct"] == 50
    out = repl.run("log(3)")
    assert "derate" in out, out
    repl.run("unplug()")
    fw.advance(200)
    assert not fw.conn()["contactor"]


# --- errors --------------------------------------------------------------------------
CRASHES = [
    ("1/0", r"error: ZeroDivisionError"),
    ("foo()", r"error: NameError"),
    ("plug(99)", r"error: plug: amps must be one of"),
    ("plug(32, 2)", r"error: .*connector 2 does not exist"),
    ("plug(32, 5)", r"error: plug: c must be int 1\.\.4"),
    ("ev()", r"error: ev: missing argument 'state'"),
    ("ev('C', 1, 2)", r"error: ev takes at most 2 arguments"),
    ("ev(state='C', colour=1)", r"error: ev: unknown argument 'colour'"),
    ("temp('hot')", r"error: temp: celsius must be"),
    ("demand(-5)", r"error: demand: amps must be"),
    ("plug(", r"error: SyntaxError"),
    ("[1, 2][5]", r"error: IndexError"),
    ("bench.nosuch()", r"error: AttributeError"),
    ("import nosuchmodule", r"error: ImportError"),
    ("def f(): return 1/0\nf()", r"error: ZeroDivisionError"),
]


@pytest.mark.parametrize("line,pattern", CRASHES, ids=[c[0].split("\n")[-1] for c in CRASHES])
def test_failing_command_prints_an_error_and_the_charger_goes_on(repl, line, pattern):
    charge(repl)
    out = ""
    for part in line.split("\n"):
        out += repl.run(part)
    assert re.search(pattern, out), (pattern, out)
    assert "Traceback" not in out
    assert_still_charging(repl.fw)
    # The REPL itself still works.
    assert "contactor closed" in repl.run("status()")


def test_ctrl_c_drops_the_line_and_the_charger_goes_on(repl):
    charge(repl)
    fw = repl.fw
    n = fw.console().count(PROMPT)
    repl.send('unplug()\x03')  # Ctrl-C before Enter: the line is dropped
    text = repl.wait(lambda t: t.count(PROMPT) > n)
    assert "^C" in text[-200:], text[-200:]
    repl.run("")  # the Enter that follows runs nothing
    assert fw.status()["plant"]["ev"] == ["C"]
    assert_still_charging(fw)
    n = fw.console().count(PROMPT)
    repl.send("\x03\x03")
    repl.wait(lambda t: t.count(PROMPT) >= n + 2)  # both dropped lines answered before the next command
    out = repl.run("status()")
    assert "contactor closed" in out, out
    # Half a line, Ctrl-C, then a whole one: only the whole one runs.
    repl.send('fault("rc\x03')
    repl.run('limit(16)')
    c = fw.conn()
    assert c["offered_ma"] == 16000 and c["faults"] == [], c
    assert_still_charging(fw)


def test_exception_after_a_command_never_leaves_the_contactor_closed(repl):
    charge(repl)
    fw = repl.fw
    t = fw.now()
    out = repl.run('ev("B"); 1/0')
    assert "error: ZeroDivisionError" in out, out
    fw.advance(100)
    assert not fw.conn()["contactor"]
    coil = [e for e in fw.trace(t) if e[2] == "coil"]
    assert coil and coil[0][3] is False and coil[0][0] - t <= 100, coil
    # Again with a fault that opens at once.
    repl.run('ev("C")')
    fw.advance(3000)
    assert fw.conn()["contactor"]
    t = fw.now()
    out = repl.run('fault("rcd"); raise ValueError("boom")')
    assert "error: ValueError: boom" in out, out
    fw.advance(100)
    c = fw.conn()
    assert not c["contactor"] and "rcd" in [f["code"] for f in c["faults"]], c


def test_repl_command_that_breaks_the_control_loop_leaves_it_safe(repl):
    # A technician's typo that makes every control tick raise: the tick's
    # guard opens the contactor and raises an internal fault.
    charge(repl)
    fw = repl.fw
    t = fw.now()
    repl.run("bench.board.station.derate.update = lambda now, temp: 1/0")
    fw.advance(1100)  # the next tick comes within a second (tickless)
    c = fw.conn()
    assert not c["contactor"], c
    assert "internal" in [f["code"] for f in c["faults"]], c
    assert [e for e in fw.trace(t) if e[2] == "coil"][0][3] is False
    fw.advance(5000)
    assert not fw.conn()["contactor"]
    assert fw.proc.poll() is None


@pytest.mark.parametrize("line", ["raise SystemExit", "import sys; sys.exit(3)", "exit()"])
def test_exit_at_the_repl_does_not_stop_the_charger(repl, line):
    # The REPL is a bench tool beside the charger: "a command that raises
    # prints its error; the charger is not touched". SystemExit is no
    # exception to that: ending the firmware from the REPL would stop the
    # control loop with the coil driven (on a board) and skip the shutdown.
    charge(repl)
    fw = repl.fw
    n = fw.console().count(PROMPT)
    repl.send(line + "\n")
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and fw.proc.poll() is None and fw.console().count(PROMPT) <= n:
        time.sleep(0.01)
    assert fw.proc.poll() is None, "firmware ended (rc %s) on %r:\n%s" % (
        fw.proc.returncode, line, fw.console()[-600:])
    assert_still_charging(fw)


def test_keyboard_interrupt_raised_by_a_command_is_safe(repl):
    # Either the charger goes on, or it ends the Ctrl-C way: contactors open.
    charge(repl)
    fw = repl.fw
    repl.send("raise KeyboardInterrupt\n")
    time.sleep(0.5)
    if fw.proc.poll() is None:
        assert_still_charging(fw)
    else:
        assert "contactors open" in fw.console()[-300:]
        plant = json.load(open(os.path.join(fw.dir, "plant.json")))
        assert plant["outlets"][0]["closed"] is False


# --- SIGINT (Ctrl-C on a terminal) -------------------------------------------------------
@pytest.mark.parametrize("with_repl", [True, False], ids=["repl", "no-repl"])
def test_sigint_while_charging_opens_the_contactors(make_fw, with_repl):
    fw = make_fw(repl=with_repl)
    fw.charging(32)
    fw.advance(120_000)
    wh = fw.conn()["energy_wh"]
    assert wh > 0
    fw.proc.send_signal(signal.SIGINT)
    rc = fw.proc.wait(timeout=10)
    console = fw.console()
    tail = [x for x in console.splitlines() if x.strip()][-3:]
    assert any("contactors open" in x for x in tail), tail
    assert "Traceback" not in console, console[-2000:]
    assert rc == 0, rc
    plant = json.load(open(os.path.join(fw.dir, "plant.json")))
    o = plant["outlets"][0]
    assert o["closed"] is False, o
    assert o["ev"]["plugged"] is True  # the world is kept: the EV is still there
    # Power back: the register kept its energy and the EV charges again.
    fw.close()
    fw.start()
    c = fw.conn()
    assert not c["contactor"] and c["energy_wh"] >= wh, c
    fw.advance(2000)
    assert fw.conn()["contactor"]


# --- answers in words (README "At the bench") ------------------------------------------
NOISE = re.compile(r"\d\.\d{5,}")  # float noise: 72.01000000000001


def test_commands_answer_in_words(repl):
    said = {
        "plug(32)": "plugged in, 32 A cable",
        "demand(16)": "the EV draws at most 16 A",
        "limit(10)": "external limit 10 A",
        "limit(None)": "external limit removed",
        "available(False)": "unavailable",
        "available(True)": "available",
        'fault("weld")': 'weld injected: nothing yet: the contacts stick the next time the contactor closes',
        'clear("weld")': "weld removed from the plant",
        'ev("C")': "EV in C: asks for energy; the contactor closes after 500 ms of stable C",
        "unplug()": "unplugged",
        "ambient(30)": "ambient 30 C: the charger heats with current",
        "temp(40)": "charger held at 40 C",
    }
    for line, answer in said.items():
        out = repl.run(line)
        assert answer in out, (line, answer, out)
        assert "{" not in out, (line, out)  # a sentence, not a dict


def test_trace_evopt_and_seclog_are_readable_blocks(repl):
    charge(repl)
    out = repl.run("trace()")
    assert re.search(r"^\s+ms\s+conn\s+what\s+value$", out, re.M), out
    assert re.search(r"^\s+\d+\s+1\s+coil\s+True$", out, re.M), out
    assert "[[" not in out and "'events'" not in out, out
    out = repl.run("evopt(obey=False)")
    assert out.startswith("EV:") and re.search(r"^  obey\s+False$", out, re.M), out
    assert "{" not in out, out
    out = repl.run("seclog()")
    assert "'lines'" not in out and "[" not in out.split("\n")[0], out
    assert out.strip(), out


def test_help_of_one_command_nearest_command_and_exit(repl):
    out = repl.run("help(plug)")
    assert out.startswith("plug(amps=32, c=1)"), out
    assert re.search(r"amps\s+one of 13, 20, 32, 63, 70 \(default 32\)", out), out
    assert re.search(r"c\s+connector number, 1\.\.4 \(default 1\)", out), out
    assert "the state she wants" not in repl.run('help("ev")')
    assert re.search(r"state\s+one of 'A', 'B'", repl.run('help("ev")'))
    for line in ("plgu", "plgu(32)"):
        out = repl.run(line)
        assert re.search(r"error: NameError: .*plgu.*; plug\?", out), out
    out = repl.run("exit()")
    assert "Ctrl-C twice" in out and "maintenance()" in out, out
    assert "watch(c)" in repl.run("help()")


def test_status_shows_injected_faults_without_float_noise(repl):
    charge(repl)
    repl.run("ambient(45)")
    repl.fw.advance(60_000)  # the charger warms: temperatures with many decimals
    repl.run('fault("lock")')
    out = repl.run("status()")
    assert "injected faults: lock" in out, out
    plant = [x for x in out.splitlines() if x.startswith("plant:")][0]
    assert "ambient_c=45 " in plant and re.search(r"temp_c=\d+(\.\d{1,2})?\b", plant), plant
    assert not NOISE.search(out), out
    repl.run('clear("lock")')
    assert "injected faults: none" in repl.run("status()")


def test_status_of_a_charger_without_a_meter_reading(repl):
    # A board without a meter reports energy_wh None: the block says so.
    charge(repl)
    out = repl.run("import firmware.repl as R; s = bench.status(); s['connectors'][0]['energy_wh'] = None; "
                   "s['connectors'][0]['session']['wh'] = None; print(R.format_status(s))")
    assert "error:" not in out, out
    assert "energy -- (no meter reading)" in out and "session FREEVEND  --" in out, out


def test_service_weld_works_as_the_readme_writes_it(repl):
    charge(repl)
    fw = repl.fw
    out = repl.run('fault("weld"); ev("B")')
    assert "the contacts stick when the contactor opens" in out, out
    fw.advance(2000)
    assert "weld" in [f["code"] for f in fw.conn()["faults"]]
    out = repl.run('service("weld")')  # the contacts are still welded: refused
    assert "cleared: weld" not in out and "nothing cleared" in out, out
    assert "weld" in [f["code"] for f in fw.conn()["faults"]]
    out = repl.run('clear("weld"); service("weld")')  # the contactor replaced, then the latch cleared
    assert "cleared: weld" in out, out
    fw.advance(200)
    c = fw.conn()
    assert c["faults"] == [] and not c["contactor"] and not c["aux"], c
    assert "injected faults: none" in repl.run("status()")
    repl.run('ev("C")')
    fw.advance(3000)
    assert fw.conn()["contactor"]  # the new contactor works


def test_watch_prints_a_line_a_second_until_enter(repl):
    charge(repl)
    fw = repl.fw
    n = fw.console().count(PROMPT)
    repl.send("watch()\n")
    text = repl.wait(lambda t: len(re.findall(r"^\d+:\d\d:\d\d  c1 Charging pilot C 32\.0 A offered closed",
                                              t, re.M)) >= 2, timeout=5)
    assert "Enter stops" in text
    repl.send("\n")
    repl.wait(lambda t: t.count(PROMPT) > n, timeout=5)
    time.sleep(1.5)
    after = fw.console()
    assert after.rstrip().endswith(PROMPT.strip()), after[-300:]  # no more lines once stopped
    assert "contactor closed" in repl.run("status()")


def test_loglevel_and_mute_tame_the_console_not_the_log(repl):
    fw = repl.fw
    assert "console log muted" in repl.run("mute()")
    before = fw.console()
    repl.run("plug(32)")
    fw.advance(500)
    assert "pilot A -> B" not in fw.console()[len(before):]
    assert "pilot A -> B" in repl.run("log(10)")  # the log keeps it
    assert "warn and above" in repl.run('loglevel("warn")')
    before = fw.console()
    repl.run("unplug()")
    fw.advance(500)
    assert "pilot B -> A" not in fw.console()[len(before):]
    repl.run('loglevel("info")')
    before = fw.console()
    repl.run("plug(32)")
    fw.advance(500)
    assert "pilot A -> B" in fw.console()[len(before):]
    assert "error" in repl.run('loglevel("loud")')


def test_ctrl_d_says_the_console_stays(repl):
    fw = repl.fw
    n = fw.console().count(PROMPT)
    repl.send("\x04")
    text = repl.wait(lambda t: t.count(PROMPT) > n)
    assert "Ctrl-D: the bench stays" in text[-300:]
    assert "plugged in" in repl.run("plug(32)")


def test_connector_number_last_where_it_makes_sense(make_fw):
    r = Repl(make_fw(repl=True, connectors=2))
    fw = r.fw
    assert "plugged in, 32 A cable (connector 2)" in r.run("plug(32, 2)")
    fw.advance(500)
    out = r.run("status(2)")
    assert "connector 2" in out and "connector 1 " not in out, out
    assert "connector 1 " in r.run("status(1)")
    out = r.run("log(50, 0, 2)")
    assert "conn2:" in out and "conn1:" not in out, out
    r.run("plug(20, 1)")
    fw.advance(500)
    out = r.run("trace(0, 2)")
    assert re.search(r"^\s+\d+\s+2\s", out, re.M) and not re.search(r"^\s+\d+\s+1\s", out, re.M), out
    # The whole charger's commands take no connector: a clear error.
    for line, pat in (("temp(30, 2)", "temp takes at most 1 arguments"),
                      ("ambient(30, 2)", "ambient takes at most 1 arguments"),
                      ("reboot(2)", "reboot takes at most 0 arguments")):
        assert pat in r.run(line), line
    assert "connector 3 does not exist" in r.run("status(3)")

"""The bench as a technician meets it: `make sim` in a terminal (a
pseudo-terminal here), every example of README.md "At the bench" typed at the
prompt with the answer the README documents, and the line editor a
MicroPython user expects: Up recalls the last line, Tab completes commands,
their argument names and choices, Ctrl-A/E/K/U and the cursor keys edit, a
log line that arrives while a line is typed is printed above it and the line
is drawn again, the first Ctrl-C drops the line and a second within 1 s ends
the simulator (contactors open, the terminal as it was)."""
import json
import os
import re
import socket
import subprocess
import termios
import time

import pytest

from fwproc import ROOT
from test_sim import Term, free_port, term  # noqa: F401  (term: the fixture that cleans up)

README = os.path.join(ROOT, "README.md")


class MakeSim(Term):
    """`make sim` itself, options through SIM_ARGS as the README gives them."""

    def __init__(self, d, sim_args):
        import pty
        self.master, slave = pty.openpty()
        e = dict(os.environ)
        e["SIM_ARGS"] = sim_args
        # The venv is there already (the suite runs in it): make must not rebuild it.
        self.proc = subprocess.Popen(["make", "--no-print-directory", "-s", "-o", ".venv/.installed", "sim",
                                      "SIM_DIR=%s" % d], cwd=ROOT, stdin=slave, stdout=slave, stderr=slave,
                                     env=e, start_new_session=True)
        os.close(slave)
        self.out = ""


def readme_bench_lines():
    # The ">>> " lines of the README's first bench block, with their comments.
    text = open(README).read()
    block = text[text.index("## At the bench"):]
    block = block[block.index("```\n") + 4:]
    block = block[:block.index("```")]
    out = []
    for line in block.splitlines():
        if line.startswith(">>> "):
            cmd, _, comment = line[4:].partition("#")
            out.append((cmd.strip(), comment.strip()))
    return out


def ctl(port, req):
    # One request on the control channel (what a bench tool would send).
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            assert chunk, "control channel closed"
            buf += chunk
    return json.loads(buf)


class Bench:
    def __init__(self, t, port):
        self.t = t
        self.port = port

    def prompts(self):
        # Fresh prompts only: one that is drawn again under a log line starts with "\r".
        return self.t.out.count("\n>>> ")

    def typed(self, text, wait_prompt=True, timeout=20):
        """Type text (ending in \\r for Enter); return what the terminal showed
        until the next prompt after it."""
        n0 = len(self.t.out)
        p = self.prompts()
        self.t.type(text)
        if wait_prompt:
            self.t.wait_for(lambda o: o.count("\n>>> ") > p, timeout)
            time.sleep(0.05)
            self.t.read()
        else:
            time.sleep(0.3)
            self.t.read()
        return self.t.out[n0:]

    def conn(self):
        r = ctl(self.port, {"op": "status"})
        assert r["ok"], r
        return r["connectors"][0]

    def until(self, pred, timeout=15, what=""):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.conn()
            if pred(c):
                return c
            time.sleep(0.1)
            self.t.read()
        raise AssertionError("%s: %s\n%s" % (what, self.conn(), self.t.out[-2000:]))


def plain(text):
    # What the eye sees of the lines: escape sequences and CR gone.
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).replace("\r", "")


@pytest.fixture
def bench(tmp_path, term):  # noqa: F811
    port = free_port()
    t = MakeSim(tmp_path / "sim", "--port %d --csms-port %d" % (port, free_port(pair=True)))
    yield Bench(t, port), t
    t.close()


def test_readme_bench_examples_answer_as_documented(bench):
    b, t = bench
    t.wait_for("\n>>> ", 60)
    lines = readme_bench_lines()
    cmds = [c for c, _ in lines]
    # The test walks exactly the README's examples: neither may drift.
    assert cmds == ['help()', 'plug(32)', 'token("CARD1")', 'ev("C")', 'status()', 'fault("weld"); ev("B")',
                    'clear("weld"); service("weld")', 'ambient(45)', 'temp(72)', 'powercut()'], cmds
    said = dict(lines)
    # The charger must be on the back office before a card can be presented.
    t.wait_for("boot accepted", 30)

    out = plain(b.typed("help()\r"))
    assert re.search(r"^\s+plug\(amps, c\)\s+plug an EV in", out, re.M), out
    assert "help(plug) explains one command" in out

    for cmd in ("plug(32)", 'token("CARD1")', 'ev("C")'):
        out = plain(b.typed(cmd + "\r"))
        answer = said[cmd].split(" (")[0]  # the README's comment is the answer (a note in brackets aside)
        assert answer in out, (cmd, answer, out)
    assert said["plug(32)"] == "plugged in, 32 A cable"
    b.until(lambda c: c["contactor"] and c["aux"] and c["status"] == "Charging", what="charging after the card and ev('C')")

    out = plain(b.typed("status()\r"))
    for pat in (r"connector 1\s+Charging\s+pilot C", r"contactor closed \(aux closed\)", r"energy \d+\.\d{3} kWh",
                r"injected faults: none", r"^plant: .*temp_c=\d+(\.\d{1,2})?\b"):
        assert re.search(pat, out, re.M), (pat, out)
    assert not re.search(r"\d\.\d{5,}", out), out  # no float noise (72.01000000000001)

    out = plain(b.typed('fault("weld"); ev("B")\r'))
    assert "weld injected: the contacts stick when the contactor opens" in out, out
    b.until(lambda c: "weld" in [f["code"] for f in c["faults"]], what="weld latched")
    out = plain(b.typed("status()\r"))
    assert "fault weld (latched, PowerSwitchFailure)" in out and "injected faults: weld" in out, out

    out = plain(b.typed('clear("weld"); service("weld")\r'))
    answer = said['clear("weld"); service("weld")'].split(" (")[0]
    assert answer in out, out
    c = b.conn()
    assert c["faults"] == [] and not c["contactor"], c
    assert "injected faults: none" in plain(b.typed("status()\r"))

    out = plain(b.typed("ambient(45)\r"))
    assert "ambient 45 C: the charger heats with current" in out, out
    out = plain(b.typed("temp(72)\r"))
    assert "charger held at 72 C" in out, out
    b.until(lambda c: "overtemp" in [f["code"] for f in c["faults"]], what="thermal shutdown at 72 C")

    # History before the power cut (it lives in RAM): Up recalls the last line.
    out = b.typed("\x1b[A\r")
    assert "charger held at 72 C" in plain(out), out
    assert "\r>>> temp(72)" in out, out  # the recalled line drawn at the prompt

    b.typed("powercut()\r", wait_prompt=False)
    t.wait_for("[power restored]", 30)
    t.wait_for(lambda o: "\n>>> " in o[o.index("[power restored]"):], 60)
    # Ctrl-C twice ends make sim, the contactors opened first.
    b.typed("\x03", wait_prompt=True)
    t.type("\x03")
    assert t.wait_exit() == 0
    assert "interrupted: contactors open, firmware stopped" in t.out[-300:], t.out[-600:]


def test_line_editing_tab_history_and_a_log_line_while_typing(bench):
    b, t = bench
    t.wait_for("\n>>> ", 60)
    t.wait_for("boot accepted", 30)
    time.sleep(0.5)
    t.read()

    # A log line arrives mid-typing: printed above, the prompt and the typed text drawn again.
    b.typed("hel", wait_prompt=False)
    n0 = len(t.out)
    assert ctl(b.port, {"op": "plug", "amps": 20})["ok"]
    t.wait_for(lambda o: "pilot A -> B" in o[n0:], 10)
    t.wait_for(lambda o: o.endswith(">>> hel\x1b[K"), 10)
    shown = t.out[n0:]
    assert re.search(r"\r\x1b\[K[^\r\n]*pilot A -> B\r\n\r>>> hel\x1b\[K", shown), repr(shown)
    out = plain(b.typed("p()\r"))  # the line goes on where it was: help()
    assert "plug(amps, c)" in out, out

    # Tab: a command name, an argument name, a choice.
    out = b.typed("stat\t", wait_prompt=False)
    assert out.endswith("status("), repr(out)
    out = plain(b.typed(")\r"))
    assert "connector 1  Preparing" in out, out
    out = b.typed("evopt(ob\t", wait_prompt=False)
    assert out.endswith("obey="), repr(out)
    out = b.typed('\x15fault("w\t', wait_prompt=False)  # Ctrl-U dropped what was there
    assert out.endswith('weld'), repr(out)
    out = b.typed('\x15fault("pilot_\t', wait_prompt=False)  # two choices: listed, the line drawn again
    assert plain(out).endswith('pilot_short  pilot_f\n>>> fault("pilot_'), repr(out)
    out = b.typed("s\t", wait_prompt=False)
    assert out.endswith("short"), repr(out)
    b.typed("\x15\r")

    # Cursor keys and Ctrl-A/E/K: fix a typo at the start, drop a tail.
    out = plain(b.typed('lug(32)\x01p\x05; ev("X")' + "\x1b[D" * 9 + "\x0b\r"))
    assert "plugged in, 32 A cable" in out and "error" not in out, out
    # Home/End keys (ESC [ H / ESC [ F) and Backspace.
    out = plain(b.typed('demand(1)\x1b[H\x1b[F\x7f\x7f16)\r'))
    assert "the EV draws at most 16 A" in out, out

    # Up, Up: two lines back; Down returns to the newer one.
    out = b.typed("\x1b[A\x1b[A\x1b[B", wait_prompt=False)
    assert out.endswith("\r>>> demand(16)\x1b[K"), repr(out)
    b.typed("\x15\r")

    # Ctrl-C mid-line drops it, the charger runs on; Ctrl-D says why it stays.
    out = plain(b.typed('unplug()\x03'))
    assert "^C" in out and "Ctrl-C again within 1 s ends the simulator" in out, out
    time.sleep(1.2)
    assert b.conn()["pilot"] == "B"
    out = plain(b.typed("\x04"))
    assert "Ctrl-D: the bench stays" in out, out
    assert t.proc.poll() is None

    # The second Ctrl-C within 1 s: the simulator ends in order and the
    # terminal is given back in line mode with echo.
    t.type("\x03")
    time.sleep(0.2)
    t.type("\x03")
    assert t.wait_exit() == 0
    assert "interrupted: contactors open, firmware stopped" in t.out[-300:], t.out[-600:]
    lflag = termios.tcgetattr(t.master)[3]
    assert lflag & termios.ICANON and lflag & termios.ECHO and lflag & termios.ISIG
